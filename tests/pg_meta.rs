//! The real server on PostgreSQL metadata (`[meta] kind = "postgres"`, the database from
//! `scripts/services start`, each test in its own schema): uploads, downloads, grants, find,
//! directories, a restart; two nodes on one database and one S3 bucket; a database that is not
//! there. Without `DEPOT_TEST_PG_URL` each test prints `SKIPPED: ...` (or fails under
//! `DEPOT_REQUIRE_SERVICES=1`, as in CI).

mod common;
use common::*;
use serde_json::json;
use std::path::Path;

/// A password the tests check never shows in a log (the test cluster trusts every login, so
/// any password connects).
const PG_SECRET: &str = "pg-secret-never-logged-4b1d";

fn with_password(url: &str) -> String {
    url.replacen("://postgres@", &format!("://postgres:{PG_SECRET}@"), 1)
}

fn meta_env(url: &str) -> Vec<(String, String)> {
    vec![
        ("DEPOT_META_KIND".into(), "postgres".into()),
        ("DEPOT_META_URL".into(), url.to_string()),
        ("DEPOT_META_POOL_SIZE".into(), "4".into()),
    ]
}

fn start(data: &Path, env: &[(String, String)]) -> Server {
    Server::spawn(data, &env_refs(env), &[]).unwrap_or_else(|log| panic!("start: {log}"))
}

fn read_right(resource: &str, members: &[&str]) -> Value {
    let members: Vec<Value> = members.iter().map(|m| json!({"hypi": {"id": m}})).collect();
    json!({
        "resource": resource, "resourceType": "File", "operationType": "Query", "operation": "*",
        "permissionType": "RBP", "approved": true, "members": members
    })
}

/// `find(File)` ids for an ArcQL query.
fn find(s: &Server, token: &str, arcql: &str) -> Vec<String> {
    let q = format!("{{ find(type: File, arcql: {arcql:?}, first: 25) {{ edges {{ cursor }} }} }}");
    let v = s.graphql(Some(token), &q);
    v["data"]["find"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|e| e["cursor"].as_str().unwrap().to_string())
        .collect()
}

fn dir_req(s: &Server, method: reqwest::Method, path: &str, token: &str) -> (u16, Value) {
    let r = s
        .client
        .request(method, s.url(&format!("/dirs{path}")))
        .header("Authorization", token)
        .header("hypi-domain", INSTANCE)
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

fn body(s: &Server, path: &str, token: Option<&str>) -> (u16, Vec<u8>) {
    let r = s.get(path, token);
    (r.status().as_u16(), r.bytes().unwrap().to_vec())
}

fn revoke(s: &Server, token: &str, right: &str) -> u16 {
    s.client
        .delete(s.url(&format!("/access-rights/{right}")))
        .header("Authorization", token)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn a_server_on_postgres_keeps_everything_across_a_restart() {
    let Some(pg) = pg_or_skip("a_server_on_postgres_keeps_everything_across_a_restart") else {
        return;
    };
    let url = url_in_new_schema(&with_password(&pg), "e2e");
    let env = meta_env(&url);
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &env);
    let alice = s.token("alice", INSTANCE, false);
    let bob = s.token("bob", INSTANCE, false);

    // Upload, download, a directory, find.
    let (status, up) = s.upload(&alice, "/upload/docs", &[("a.txt", b"hello postgres")]);
    assert_eq!(status, 200, "{up}");
    let rec = first_record(&up);
    let id = rec["hypi"]["id"].as_str().unwrap().to_string();
    let path = rec["url"]["path"].as_str().unwrap().to_string();
    assert_eq!(
        body(&s, &path, Some(&alice)),
        (200, b"hello postgres".to_vec())
    );
    let (st, code, _) = json_error(s.get(&path, Some(&bob)));
    assert_eq!((st, code.as_str()), (404, "NOT_FOUND"), "bob has no grant");
    let (st, v) = dir_req(&s, reqwest::Method::POST, "/projects", &alice);
    assert!(st == 200 || st == 201, "{st} {v}");
    assert_eq!(find(&s, &alice, "path = '/docs/a.txt'"), vec![id.clone()]);
    assert_eq!(find(&s, &alice, "directory = '/docs'"), vec![id.clone()]);
    assert!(find(&s, &alice, "path = '/docs/none.txt'").is_empty());

    // Grants: bob reads once granted; a grant on a file that does not exist is refused.
    let r = s.post_rights(&alice, &read_right(&id, &["bob"]));
    assert_eq!(r.status(), 201);
    let granted: Value = r.json().unwrap();
    let right = granted["hypi"]["id"]
        .as_str()
        .or_else(|| granted[0]["hypi"]["id"].as_str())
        .unwrap_or_else(|| panic!("{granted}"))
        .to_string();
    assert_eq!(body(&s, &path, Some(&bob)).0, 200);
    let missing = "01HX5V3N0000000000000000AB";
    let (st, _, _) = json_error(s.post_rights(&alice, &read_right(missing, &["bob"])));
    assert_eq!(st, 404);

    // Nothing went to sled, and the password never reached the log.
    assert!(
        !dir.path().join("meta").exists(),
        "no sled store on postgres"
    );
    s.stop();

    let s = start(dir.path(), &env);
    assert_eq!(
        body(&s, &path, Some(&alice)),
        (200, b"hello postgres".to_vec())
    );
    assert_eq!(body(&s, &path, Some(&bob)).0, 200, "the grant survived");
    assert_eq!(find(&s, &alice, "path = '/docs/a.txt'"), vec![id.clone()]);
    let (st, v) = dir_req(&s, reqwest::Method::GET, "/projects", &alice);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["directory"]["path"], "/projects");
    assert_eq!(revoke(&s, &alice, &right), 204);
    assert_eq!(body(&s, &path, Some(&bob)).0, 404, "revoked");
    assert_eq!(revoke(&s, &alice, &right), 404, "revoked once");
    // Delete: the record, its blob and its grants go.
    let r = s
        .client
        .delete(s.url(&format!("/files/{id}")))
        .header("Authorization", &alice)
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(body(&s, &path, Some(&alice)).0, 404);
    assert!(find(&s, &alice, "path = '/docs/a.txt'").is_empty());
    let log = s.log.lock().unwrap().clone();
    assert!(!log.contains(PG_SECRET), "password in the log:\n{log}");
    s.stop();

    // fsck runs against the same database and finds it consistent.
    let out = std::process::Command::new(BIN)
        .args(["fsck", "--data-dir"])
        .arg(dir.path())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("clean"), "{text}");
}

#[test]
fn a_database_that_is_not_there_stops_start_up_without_leaking_the_password() {
    let Some(pg) = pg_or_skip("a_database_that_is_not_there_stops_start_up") else {
        return;
    };
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let _ = pg;
    let url = format!("postgres://postgres:{PG_SECRET}@127.0.0.1:{port}/depot");
    let dir = tempfile::tempdir().unwrap();
    let log = match Server::spawn(dir.path(), &env_refs(&meta_env(&url)), &[]) {
        Ok(_) => panic!("started without its database"),
        Err(log) => log,
    };
    assert!(log.contains("metadata"), "{log}");
    assert!(!log.contains(PG_SECRET), "password in the log:\n{log}");
    // Without a URL, postgres is refused as a configuration error.
    let log = match Server::spawn(
        dir.path(),
        &[("DEPOT_META_KIND", "postgres"), ("DEPOT_META_URL", "")],
        &[],
    ) {
        Ok(_) => panic!("started without a URL"),
        Err(log) => log,
    };
    assert!(log.contains("DEPOT_META_URL"), "{log}");
}

/// Two nodes (two data dirs) on one database and one bucket, each with its download cache: what
/// one writes, the other serves, and what one revokes, trashes, deletes or replaces, the other
/// never serves again once the call returned (also while its change feed reconnects).
#[test]
fn two_nodes_share_files_grants_and_deletes() {
    let Some(pg) = pg_or_skip("two_nodes_share_files_grants_and_deletes") else {
        return;
    };
    let Some(s3) = s3_or_skip("two_nodes_share_files_grants_and_deletes") else {
        return;
    };
    let url = url_in_new_schema(&pg, "nodes");
    let mut env = meta_env(&url);
    env.extend(s3.server_env());
    env.push((
        "DEPOT_URL_SIGNING_KEY".into(),
        "a-shared-url-signing-key-for-both-nodes-0123".into(),
    ));
    // Both nodes keep the default download cache: B must never answer what a call that
    // returned on A changed (strictly, no polling: see src/meta/pg/notify.rs).
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // One JWT secret for both nodes.
    let alice = token_for(da.path(), "alice", INSTANCE, false, &[]);
    let bob = token_for(da.path(), "bob", INSTANCE, false, &[]);
    std::fs::copy(da.path().join("jwt.secret"), db.path().join("jwt.secret")).unwrap();
    let a = start(da.path(), &env);
    let b = start(db.path(), &env);

    let rec = a.upload_one(&alice, "shared.txt", b"written on A");
    let id = rec["hypi"]["id"].as_str().unwrap().to_string();
    let path = rec["url"]["path"].as_str().unwrap().to_string();
    assert_eq!(
        body(&b, &path, Some(&alice)),
        (200, b"written on A".to_vec())
    );
    assert_eq!(body(&b, &path, Some(&bob)).0, 404);
    // Grant on B, read on A; revoke on A, refused on B.
    let r = b.post_rights(&alice, &read_right(&id, &["bob"]));
    assert_eq!(r.status(), 201);
    let granted: Value = r.json().unwrap();
    let right = granted["hypi"]["id"]
        .as_str()
        .or_else(|| granted[0]["hypi"]["id"].as_str())
        .unwrap()
        .to_string();
    assert_eq!(body(&a, &path, Some(&bob)).0, 200);
    // Twice: the second answer comes from B's cache, with bob's grant decision.
    assert_eq!(body(&b, &path, Some(&bob)).0, 200);
    assert_eq!(body(&b, &path, Some(&bob)).0, 200);
    assert_eq!(body(&b, &path, Some(&alice)).0, 200);
    assert_eq!(revoke(&a, &alice, &right), 204);
    assert_eq!(
        body(&b, &path, Some(&bob)).0,
        404,
        "revoked on A, refused on B"
    );
    assert_eq!(find(&b, &alice, "path = '/shared.txt'"), vec![id.clone()]);
    // Same content from both nodes: one reference per file, deletes on either side.
    let again = b.upload_one(&alice, "again.txt", b"written on A");
    let id2 = again["hypi"]["id"].as_str().unwrap().to_string();
    let del = |s: &Server, id: &str| {
        s.client
            .delete(s.url(&format!("/files/{id}")))
            .header("Authorization", &alice)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert!(matches!(del(&a, &id), 200 | 204));
    assert_eq!(
        body(&b, &path, Some(&alice)).0,
        404,
        "deleted on A, gone on B"
    );
    let path2 = again["url"]["path"].as_str().unwrap();
    assert_eq!(
        body(&a, path2, Some(&alice)),
        (200, b"written on A".to_vec())
    );
    assert!(matches!(del(&b, &id2), 200 | 204));
    assert_eq!(body(&a, path2, Some(&alice)).0, 404);

    // Trashed on A: B stops serving its cached copy at once.
    let t = a.upload_one(&alice, "trash.txt", b"to be trashed");
    let tpath = t["url"]["path"].as_str().unwrap().to_string();
    for _ in 0..2 {
        assert_eq!(
            body(&b, &tpath, Some(&alice)),
            (200, b"to be trashed".to_vec())
        );
    }
    let v = a.graphql(
        Some(&alice),
        "mutation { trash(type: File, arcql: \"name = 'trash.txt'\") }",
    );
    assert_eq!(v["data"]["trash"], 1, "{v}");
    assert_eq!(body(&b, &tpath, Some(&alice)).0, 404, "trashed on A");

    // Re-uploaded on A: B answers the new bytes at once.
    let r = a.upload_one(&alice, "re.txt", b"first bytes");
    let rid = r["hypi"]["id"].as_str().unwrap().to_string();
    let rpath = r["url"]["path"].as_str().unwrap().to_string();
    for _ in 0..2 {
        assert_eq!(
            body(&b, &rpath, Some(&alice)),
            (200, b"first bytes".to_vec())
        );
    }
    let put = a
        .client
        .put(a.url(&format!("/files/{rid}/content")))
        .header("Authorization", &alice)
        .header("hypi-domain", INSTANCE)
        .body(b"second bytes, longer".to_vec())
        .send()
        .unwrap();
    assert_eq!(put.status(), 200);
    assert_eq!(
        body(&b, &rpath, Some(&alice)),
        (200, b"second bytes, longer".to_vec()),
        "re-uploaded on A"
    );

    // The LISTEN connections are killed: B flushes and bypasses its cache until its feed is
    // back, so a revoke on A right after is still refused on B, and reads stay correct.
    let grant = a.post_rights(&alice, &read_right(&rid, &["bob"]));
    assert_eq!(grant.status(), 201);
    let granted: Value = grant.json().unwrap();
    let right = granted["hypi"]["id"]
        .as_str()
        .or_else(|| granted[0]["hypi"]["id"].as_str())
        .unwrap()
        .to_string();
    for _ in 0..2 {
        assert_eq!(body(&b, &rpath, Some(&bob)).0, 200);
    }
    let killed = terminate_listeners(&pg);
    assert!(killed >= 1, "no depot-listen connection to kill");
    assert_eq!(revoke(&a, &alice, &right), 204);
    assert_eq!(
        body(&b, &rpath, Some(&bob)).0,
        404,
        "revoked while B's feed was down"
    );
    assert_eq!(
        body(&b, &rpath, Some(&alice)),
        (200, b"second bytes, longer".to_vec())
    );
    // Several rounds across the reconnection: never an old answer.
    for round in 0..20 {
        let bytes = format!("round {round}");
        let put = a
            .client
            .put(a.url(&format!("/files/{rid}/content")))
            .header("Authorization", &alice)
            .header("hypi-domain", INSTANCE)
            .body(bytes.clone().into_bytes())
            .send()
            .unwrap();
        assert_eq!(put.status(), 200);
        for _ in 0..2 {
            assert_eq!(
                body(&b, &rpath, Some(&alice)),
                (200, bytes.clone().into_bytes())
            );
        }
    }
}

/// Ends every depot node's change-feed connection (`application_name = 'depot-listen'`, see
/// src/meta/pg/notify.rs) as an operator or a network fault would; returns how many.
fn terminate_listeners(url: &str) -> usize {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let rows = client
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = 'depot-listen'",
                &[],
            )
            .await
            .unwrap();
        rows.len()
    })
}
