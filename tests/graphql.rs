//! The GraphQL API: the seed pages' documents verbatim, ArcQL, paging, trash, access filtering.

mod common;
use common::*;
use serde_json::json;

fn gql(s: &Server, token: Option<&str>, query: &str) -> Value {
    s.graphql(token, query)
}

fn ids(v: &Value) -> Vec<String> {
    v["data"]["find"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("no edges: {v}"))
        .iter()
        .map(|e| e["cursor"].as_str().unwrap().to_string())
        .collect()
}

fn find(s: &Server, token: &str, arcql: &str) -> Vec<String> {
    let q = format!("{{ find(type: File, arcql: {arcql:?}) {{ edges {{ cursor }} }} }}");
    ids(&gql(s, Some(token), &q))
}

const SEED_FIND: &str = r#"{
find(type: File, arcql: "*") {
edges {
node {
... on File {
hypi {
id
}
name
directory
path
isDirectory
status
status
url {
path #Path to download file
}
type
size
extension
isStared
isSharable
content
}
}
cursor
}
}
}"#;

const SEED_GRANT: &str = r#"mutation {
upsert(
values: {
AccessRight: [
{
resource: "RESOURCE"
resourceType: "File"
operationType: "Query"
operation: "*"
permissionType: RBP
approved: true
members: { hypi: { id: "anonymous" } }
}
]
}
) {
id
}
}"#;

// The legacy page's mutation, with the `resource` line its extraction lost restored.
const SEED_LEGACY_GRANT: &str = r#"mutation {
  upsert(
    values: {
      Permission: [
        {
          name: "Grant access to anonymous user"
          decisionStrategy: Unanimous
          type: "File"
          resource: "RESOURCE"
          scopes: ["*"]
          operationType: Query
          operations: ["find"]
          #includeAllAccounts: true, #wildcard so all accounts can access
          policies: [
            {
              hypi: { impl: "AccountPolicy" }
              name: "Grant user anonymous access to my file"
              logic: Positive
              accounts: [{ hypi: { id: "anonymous" } }]
            }
          ]
        }
      ]
    }
  ) {
    id
  }
}"#;

#[test]
fn seed_documents_run_verbatim_and_grant_anonymous_download() {
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    let admin = s.token("root", INSTANCE, true);
    let f = s.upload_one(&alice, "logo.png", &png_3x2());
    let id = f["hypi"]["id"].as_str().unwrap();
    let res = gql(&s, Some(&alice), SEED_FIND);
    assert!(res["errors"].is_null(), "{res}");
    let edge = &res["data"]["find"]["edges"][0];
    assert_eq!(edge["cursor"], id);
    let node = &edge["node"];
    assert_eq!(node["hypi"]["id"], id);
    assert_eq!(node["name"], "logo.png");
    assert_eq!(node["directory"], "/");
    assert_eq!(node["path"], "/logo.png");
    assert_eq!(node["isDirectory"], false);
    assert_eq!(node["status"], "UPLOADED");
    assert_eq!(node["url"]["path"], f["url"]["path"]);
    assert_eq!(node["type"], "image/png");
    assert_eq!(node["size"], f["size"]);
    assert_eq!(node["extension"], "png");
    // isStared is the caller's own mark (not starred yet); an image has no text content.
    assert_eq!(node["isStared"], false);
    assert!(node["isSharable"].is_null() && node["content"].is_null());

    let path = f["url"]["path"].as_str().unwrap();
    assert_eq!(s.get(path, None).status(), 401);
    let res = gql(&s, Some(&alice), &SEED_GRANT.replace("RESOURCE", id));
    assert!(res["errors"].is_null(), "{res}");
    assert_eq!(res["data"]["upsert"][0]["id"].as_str().unwrap().len(), 26);
    assert_eq!(s.set_anonymous(&admin, true), 200);
    assert_eq!(
        s.get(path, None).status(),
        200,
        "anonymous download after the GraphQL grant"
    );

    // The legacy Permission form has the same effect on another file.
    let g = s.upload_one(&alice, "legacy.txt", b"legacy");
    assert_eq!(
        s.get(g["url"]["path"].as_str().unwrap(), None).status(),
        401
    );
    let res = gql(
        &s,
        Some(&alice),
        &SEED_LEGACY_GRANT.replace("RESOURCE", g["hypi"]["id"].as_str().unwrap()),
    );
    assert!(res["errors"].is_null(), "{res}");
    assert_eq!(
        s.get(g["url"]["path"].as_str().unwrap(), None).status(),
        200
    );

    // Anonymous callers see through find only what is granted to them.
    let anon = gql(
        &s,
        None,
        "{ find(type: File, arcql: \"*\") { edges { cursor } } }",
    );
    assert!(anon["errors"].is_null(), "{anon}");
}

#[test]
fn arcql_operators() {
    let s = Server::start();
    let t = s.token("alice", INSTANCE, false);
    let mut id = std::collections::HashMap::new();
    for (dir, name, size) in [
        ("/docs", "alpha report.txt", 10usize),
        ("/docs", "beta.txt", 20),
        ("/img", "gamma.png", 30),
        ("/img/raw", "delta.bin", 40),
    ] {
        let (st, res) = s.upload(
            &t,
            &format!("/upload{dir}"),
            &[(name, &bytes(size, size as u64))],
        );
        assert_eq!(st, 200);
        id.insert(name, res[name]["hypi"]["id"].as_str().unwrap().to_string());
    }
    let names = |v: Vec<String>| {
        let mut out: Vec<&str> = v
            .iter()
            .map(|i| *id.iter().find(|(_, x)| *x == i).unwrap().0)
            .collect();
        out.sort();
        out
    };
    let cases: &[(&str, &[&str])] = &[
        (
            "*",
            &["alpha report.txt", "beta.txt", "delta.bin", "gamma.png"],
        ),
        ("directory = '/docs'", &["alpha report.txt", "beta.txt"]),
        ("path = '/img/gamma.png'", &["gamma.png"]),
        (
            "name != 'beta.txt'",
            &["alpha report.txt", "delta.bin", "gamma.png"],
        ),
        ("size < 20", &["alpha report.txt"]),
        ("size <= 20", &["alpha report.txt", "beta.txt"]),
        ("size > 30", &["delta.bin"]),
        ("size >= 30", &["delta.bin", "gamma.png"]),
        ("name ~ 'REPORT'", &["alpha report.txt"]),
        ("directory ^ '/img'", &["delta.bin", "gamma.png"]),
        ("name * '?eta.*'", &["beta.txt"]),
        ("size IN [20, 40]", &["beta.txt", "delta.bin", "gamma.png"]),
        ("size IN (20, 40)", &["gamma.png"]),
        ("name IN ['b', 'e']", &["beta.txt", "delta.bin"]),
        ("EXIST width", &[]),
        (
            "NOT EXIST width",
            &["alpha report.txt", "beta.txt", "delta.bin", "gamma.png"],
        ),
        (
            "EXIST extension AND extension = 'txt'",
            &["alpha report.txt", "beta.txt"],
        ),
        ("size = 10 OR size = 40", &["alpha report.txt", "delta.bin"]),
        (
            "(size = 10 OR size = 40) AND directory = '/docs'",
            &["alpha report.txt"],
        ),
        (
            "size = 10 OR size = 40 AND directory = '/docs'",
            &["alpha report.txt"],
        ),
        (&format!("hypi.id = '{}'", id["beta.txt"]), &["beta.txt"]),
        (
            "hypi.createdBy = 'alice'",
            &["alpha report.txt", "beta.txt", "delta.bin", "gamma.png"],
        ),
        ("hypi.id = 'nonexistent'", &[]),
    ];
    for (q, want) in cases {
        assert_eq!(names(find(&s, &t, q)), *want, "{q}");
    }
    // SORT: several keys, both directions.
    let sorted = find(&s, &t, "* SORT size DESC");
    assert_eq!(
        sorted,
        vec![
            id["delta.bin"].clone(),
            id["gamma.png"].clone(),
            id["beta.txt"].clone(),
            id["alpha report.txt"].clone()
        ]
    );
    let sorted = find(&s, &t, "size > 0 SORT directory ASC, size DESC");
    assert_eq!(
        sorted,
        vec![
            id["beta.txt"].clone(),
            id["alpha report.txt"].clone(),
            id["gamma.png"].clone(),
            id["delta.bin"].clone()
        ]
    );
}

#[test]
fn bad_queries_are_bad_request_errors_with_a_position() {
    let s = Server::start();
    let t = s.token("alice", INSTANCE, false);
    for (q, pos) in [
        ("name = ", Some(7)),
        ("name = 'x' AND", Some(14)),
        ("size IN [1, 2)", None),
        ("((((", None),
        ("name == 'x'", None),
        ("'x'", Some(0)),
    ] {
        let res = gql(
            &s,
            Some(&t),
            &format!("{{ find(type: File, arcql: {q:?}) {{ edges {{ cursor }} }} }}"),
        );
        let err = &res["errors"][0];
        assert_eq!(err["extensions"]["code"], "BAD_REQUEST", "{q}: {res}");
        assert!(err["extensions"]["position"].is_u64(), "{q}: {res}");
        if let Some(p) = pos {
            assert_eq!(err["extensions"]["position"], p, "{q}: {res}");
        }
    }
    let res = gql(
        &s,
        Some(&t),
        "{ find(type: File, arcql: \"nosuchfield = 'x'\") { edges { cursor } } }",
    );
    assert_eq!(res["errors"][0]["extensions"]["code"], "BAD_REQUEST");
    let res = gql(
        &s,
        Some(&t),
        "{ find(type: File, arcql: \"*\", first: -1) { edges { cursor } } }",
    );
    assert_eq!(res["errors"][0]["extensions"]["code"], "BAD_REQUEST");
    let res = gql(
        &s,
        Some(&t),
        "{ find(type: File, arcql: \"*\", after: \"nope\") { edges { cursor } } }",
    );
    assert_eq!(res["errors"][0]["extensions"]["code"], "BAD_REQUEST");
    let res = gql(&s, Some(&t), "{ nosuchquery }");
    assert!(res["errors"].is_array());
    // A mutation without a token is refused with the REST code; a bad token is HTTP 401.
    let res = gql(&s, None, "mutation { trash(type: File, arcql: \"*\") }");
    assert_eq!(res["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    let r = s
        .client
        .post(s.url("/graphql"))
        .header("Authorization", "bad")
        .json(&json!({"query": "{ __typename }"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = s
        .client
        .post(s.url("/graphql"))
        .header("Content-Type", "application/json")
        .body("{nope")
        .send()
        .unwrap();
    assert!(r.status().is_client_error());
}

#[test]
fn pagination_across_pages_forwards_and_backwards() {
    let s = Server::start_with(&[("DEPOT_MAX_PAGE_SIZE", "4")]);
    let t = s.token("alice", INSTANCE, false);
    let mut all = vec![];
    for i in 0..10 {
        all.push(
            s.upload_one(&t, &format!("{i}.txt"), b"x")["hypi"]["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let page = |args: &str| {
        gql(&s, Some(&t), &format!("{{ find(type: File, arcql: \"*\"{args}) {{ edges {{ cursor }} pageInfo {{ hasNextPage hasPreviousPage startCursor endCursor }} }} }}"))
    };
    let mut seen = vec![];
    let mut after = String::new();
    loop {
        let args = if after.is_empty() {
            ", first: 3".to_string()
        } else {
            format!(", first: 3, after: {after:?}")
        };
        let res = page(&args);
        seen.extend(ids(&res));
        let info = &res["data"]["find"]["pageInfo"];
        if !info["hasNextPage"].as_bool().unwrap() {
            break;
        }
        after = info["endCursor"].as_str().unwrap().to_string();
    }
    // In id order: creation order, except for ids made within one millisecond.
    all.sort();
    assert_eq!(seen, all);
    // Capped: first: 100 gives the configured maximum.
    assert_eq!(ids(&page(", first: 100")).len(), 4);
    assert_eq!(ids(&page("")).len(), 4, "default page is the cap");
    // Backwards.
    let res = page(&format!(", last: 2, before: {:?}", all[5]));
    assert_eq!(ids(&res), all[3..5].to_vec());
    assert_eq!(res["data"]["find"]["pageInfo"]["hasPreviousPage"], true);
    assert_eq!(res["data"]["find"]["pageInfo"]["hasNextPage"], true);
    let res = page(", last: 2");
    assert_eq!(ids(&res), all[8..10].to_vec());
}

#[test]
fn trash_untrash_delete_and_get() {
    let s = Server::start();
    let t = s.token("alice", INSTANCE, false);
    let bob = s.token("bob", INSTANCE, false);
    let a = s.upload_one(&t, "a.txt", b"a");
    let b = s.upload_one(&t, "b.txt", b"b");
    let aid = a["hypi"]["id"].as_str().unwrap();
    let res = gql(
        &s,
        Some(&t),
        "mutation { trash(type: File, arcql: \"name = 'a.txt'\") }",
    );
    assert_eq!(res["data"]["trash"], 1, "{res}");
    assert_eq!(
        find(&s, &t, "*"),
        vec![b["hypi"]["id"].as_str().unwrap().to_string()]
    );
    let res = gql(&s, Some(&t), "{ find(type: File, arcql: \"*\", includeTrashed: true) { edges { node { ... on File { name hypi { trashed } } } } } }");
    let edges = res["data"]["find"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 2);
    assert!(edges[0]["node"]["hypi"]["trashed"].is_string());
    assert_eq!(
        s.get(a["url"]["path"].as_str().unwrap(), Some(&t)).status(),
        404,
        "trashed files do not download"
    );
    assert_eq!(
        gql(
            &s,
            Some(&bob),
            "mutation { untrash(type: File, arcql: \"*\") }"
        )["data"]["untrash"],
        0
    );
    assert_eq!(
        gql(
            &s,
            Some(&t),
            "mutation { untrash(type: File, arcql: \"*\") }"
        )["data"]["untrash"],
        1
    );
    assert_eq!(
        s.get(a["url"]["path"].as_str().unwrap(), Some(&t)).status(),
        200
    );

    let get = |tok: &str, ty: &str, id: &str| {
        gql(&s, Some(tok), &format!("{{ get(type: {ty}, id: {id:?}) {{ ... on File {{ name }} ... on Image {{ width file {{ name }} }} }} }}"))
    };
    assert_eq!(get(&t, "File", aid)["data"]["get"]["name"], "a.txt");
    assert!(
        get(&bob, "File", aid)["data"]["get"].is_null(),
        "another account cannot get it"
    );
    assert!(get(&t, "File", "01F35ZCSYBHTQ4JBWZ1KFXTDZR")["data"]["get"].is_null());
    let img = s.upload_one(&t, "i.png", &png_3x2());
    let res = get(&t, "Image", img["hypi"]["id"].as_str().unwrap());
    assert_eq!(res["data"]["get"]["width"], 3, "{res}");
    assert_eq!(res["data"]["get"]["file"]["name"], "i.png");

    assert_eq!(
        gql(
            &s,
            Some(&bob),
            "mutation { delete(type: File, arcql: \"*\") }"
        )["data"]["delete"],
        0
    );
    let res = gql(
        &s,
        Some(&t),
        "mutation { delete(type: File, arcql: \"name = 'a.txt'\") }",
    );
    assert_eq!(res["data"]["delete"], 1);
    assert_eq!(
        s.get(a["url"]["path"].as_str().unwrap(), Some(&t)).status(),
        404
    );
}

#[test]
fn access_filtering_never_shows_other_accounts_files() {
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    let bob = s.token("bob", INSTANCE, false);
    let admin = s.token("root", INSTANCE, true);
    let other_instance = s.token("alice", "other.test", true);
    let a = s.upload_one(&alice, "a.txt", b"a")["hypi"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = s.upload_one(&bob, "b.txt", b"b")["hypi"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(find(&s, &alice, "*"), vec![a.clone()]);
    assert_eq!(find(&s, &bob, "*"), vec![b.clone()]);
    assert_eq!(
        find(&s, &bob, &format!("hypi.id = '{a}'")),
        Vec::<String>::new()
    );
    assert_eq!(find(&s, &bob, "path = '/a.txt'"), Vec::<String>::new());
    assert_eq!(find(&s, &admin, "*"), vec![a.clone(), b.clone()]);
    let q = "{ find(type: File, arcql: \"*\") { edges { cursor } } }";
    let r = s
        .client
        .post(s.url("/graphql"))
        .header("Authorization", &other_instance)
        .header("hypi-domain", "other.test")
        .json(&json!({"query": q}))
        .send()
        .unwrap();
    assert_eq!(ids(&r.json().unwrap()), Vec::<String>::new());
    // Bob may not grant on alice's file; alice grants bob, and he sees it.
    let grant = |tok: &str, member: &str| {
        gql(
            &s,
            Some(tok),
            &format!(
                r#"mutation {{ upsert(values: {{ AccessRight: [{{ resource: "{a}", resourceType: "File", operationType: "Query", operation: "*", permissionType: RBP, approved: true, members: [{{ hypi: {{ id: "{member}" }} }}] }}] }}) {{ id }} }}"#
            ),
        )
    };
    let res = grant(&bob, "bob");
    assert_eq!(res["errors"][0]["extensions"]["code"], "NOT_FOUND", "{res}");
    let res = grant(&alice, "bob");
    assert!(res["errors"].is_null(), "{res}");
    let right = res["data"]["upsert"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(find(&s, &bob, "*"), vec![a.clone(), b.clone()]);
    // AccessRights are visible to their grantor, not to their member.
    let rights = |tok: &str| {
        ids(&gql(
            &s,
            Some(tok),
            "{ find(type: AccessRight, arcql: \"*\") { edges { cursor } } }",
        ))
    };
    assert_eq!(rights(&alice), vec![right.clone()]);
    assert_eq!(rights(&bob), Vec::<String>::new());
    let res = gql(
        &s,
        Some(&alice),
        &format!("mutation {{ delete(type: AccessRight, arcql: \"hypi.id = '{right}'\") }}"),
    );
    assert_eq!(res["data"]["delete"], 1);
    assert_eq!(find(&s, &bob, "*"), vec![b]);
}

/// Posts a GraphQL query with explicit headers (no token, or a domain of our choosing).
fn gql_with(s: &Server, headers: &[(&str, &str)], query: &str) -> Value {
    let mut req = s
        .client
        .post(s.url("/graphql"))
        .json(&json!({"query": query}));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().expect("POST /graphql");
    assert_eq!(res.status(), 200);
    res.json().expect("GraphQL answers JSON")
}

/// Issue 10 item 4: aliased `find`s with a ~4 KB wildcard each are priced before they run and
/// refused with a clear code, quickly (40 aliases took 9.5 s of CPU before).
#[test]
fn costly_request_is_refused_before_it_runs() {
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    let long = "n".repeat(200);
    for i in 0..5 {
        let (status, body) = s.upload(
            &alice,
            &format!("/upload/{}/{}", "d".repeat(200), i),
            &[(&format!("{long}{i}.txt"), b"x")],
        );
        assert_eq!(status, 200, "{body}");
    }
    let pattern = format!("*{}", "?".repeat(3990));
    let alias = |i: usize| {
        format!("a{i}: find(type: File, arcql: \"path * '{pattern}'\") {{ edges {{ cursor }} }}")
    };
    let many: Vec<String> = (0..40).map(alias).collect();
    let started = std::time::Instant::now();
    let res = gql(&s, Some(&alice), &format!("{{ {} }}", many.join(" ")));
    let took = started.elapsed();
    assert_eq!(
        res["errors"][0]["extensions"]["code"],
        "QUERY_TOO_COSTLY",
        "{}",
        &res.to_string()[..300.min(res.to_string().len())]
    );
    assert!(res["data"].is_null(), "nothing ran");
    assert!(
        res["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("limit"),
        "{res}"
    );
    // Generous bound: the refusal happens before any record is read.
    assert!(took.as_secs() < 5, "refusal took {took:?}");

    // One such find is within the limit and, with a linear matcher, answers at once.
    let started = std::time::Instant::now();
    let res = gql(&s, Some(&alice), &format!("{{ {} }}", alias(0)));
    assert!(res["errors"].is_null(), "{res}");
    assert_eq!(
        ids(&res["data"]["a0"].clone().pipe_find()),
        Vec::<String>::new()
    );
    assert!(started.elapsed().as_secs() < 5);

    // The price scales with the page: the same selection at first: 1 is cheap enough to
    // alias 40 times.
    let cheap: Vec<String> = (0..40)
        .map(|i| format!("a{i}: find(type: File, arcql: \"name * '*1.txt'\", first: 1) {{ edges {{ cursor }} }}"))
        .collect();
    let res = gql(&s, Some(&alice), &format!("{{ {} }}", cheap.join(" ")));
    assert!(res["errors"].is_null(), "{res}");
    assert_eq!(ids(&res["data"]["a39"].clone().pipe_find()).len(), 1);

    // But every walk has a fixed price: a thousand `first: 1` aliases are refused too.
    let swarm: Vec<String> = (0..1000)
        .map(|i| format!("a{i}: find(type: File, arcql: \"*\", first: 1) {{ edges {{ cursor }} }}"))
        .collect();
    let res = gql(&s, Some(&alice), &format!("{{ {} }}", swarm.join(" ")));
    assert_eq!(res["errors"][0]["extensions"]["code"], "QUERY_TOO_COSTLY");
}

/// Lets `ids` read an aliased `find`.
trait PipeFind {
    fn pipe_find(self) -> Value;
}

impl PipeFind for Value {
    fn pipe_find(self) -> Value {
        json!({"data": {"find": self}})
    }
}

/// Issue 10 item 4: a request past its time budget stops with a clear code instead of
/// burning CPU to the end.
#[test]
fn time_budget_stops_a_long_request() {
    let s = Server::start_with(&[("DEPOT_GRAPHQL_TIME_BUDGET_MS", "1")]);
    let alice = s.token("alice", INSTANCE, false);
    for i in 0..30 {
        s.upload_one(&alice, &format!("f{i}.txt"), b"x");
    }
    let pattern = format!("*{}*", "a?".repeat(1000));
    let many: Vec<String> = (0..8)
        .map(|i| format!("a{i}: find(type: File, arcql: \"name * '{pattern}'\", first: 1) {{ edges {{ cursor }} }}"))
        .collect();
    let res = gql(&s, Some(&alice), &format!("{{ {} }}", many.join(" ")));
    let errors = res["errors"].as_array().unwrap_or_else(|| panic!("{res}"));
    assert!(!errors.is_empty());
    for e in errors {
        assert_eq!(e["extensions"]["code"], "REQUEST_TIMEOUT", "{e}");
        assert!(
            e["message"].as_str().unwrap().contains("time budget"),
            "{e}"
        );
    }
    // A server with the default budget answers the same request.
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    s.upload_one(&alice, "f.txt", b"x");
    let res = gql(&s, Some(&alice), &format!("{{ {} }}", many.join(" ")));
    assert!(res["errors"].is_null(), "{res}");
}

/// Issue 10 item 7: a grant shares files, not their trash. Trashed files are visible to their
/// owner and admins only, also with includeTrashed.
#[test]
fn grantee_does_not_see_trashed_files() {
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    let bob = s.token("bob", INSTANCE, false);
    let admin = s.token("root", INSTANCE, true);
    let a = s.upload_one(&alice, "a.txt", b"a")["hypi"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = s.upload_one(&alice, "b.txt", b"b")["hypi"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Alice shares everything of hers with bob.
    let res = gql(
        &s,
        Some(&alice),
        r#"mutation { upsert(values: { AccessRight: [{ resource: "*", resourceType: "File", operationType: "Query", operation: "*", permissionType: RBP, approved: true, members: [{ hypi: { id: "bob" } }] }] }) { id } }"#,
    );
    assert!(res["errors"].is_null(), "{res}");
    assert_eq!(find(&s, &bob, "*"), vec![a.clone(), b.clone()]);
    let res = gql(
        &s,
        Some(&alice),
        "mutation { trash(type: File, arcql: \"name = 'a.txt'\") }",
    );
    assert_eq!(res["data"]["trash"], 1, "{res}");
    let trashed = |tok: &str| {
        ids(&gql(
            &s,
            Some(tok),
            "{ find(type: File, arcql: \"*\", includeTrashed: true) { edges { cursor node { ... on File { name hypi { trashed } } } } } }",
        ))
    };
    assert_eq!(trashed(&bob), vec![b.clone()], "bob sees no trash");
    assert_eq!(trashed(&alice), vec![a.clone(), b.clone()]);
    assert_eq!(trashed(&admin), vec![a.clone(), b.clone()]);
    // Nor by id, nor by get.
    assert_eq!(
        find(&s, &bob, &format!("hypi.id = '{a}'")),
        Vec::<String>::new()
    );
    let res = gql(
        &s,
        Some(&bob),
        &format!("{{ get(type: File, id: \"{a}\") {{ ... on File {{ name }} }} }}"),
    );
    assert!(res["data"]["get"].is_null(), "{res}");
    // And bob cannot untrash it.
    let res = gql(
        &s,
        Some(&bob),
        "mutation { untrash(type: File, arcql: \"*\") }",
    );
    assert_eq!(res["data"]["untrash"], 0, "{res}");
}

/// Issue 9 §4: an anonymous `find` acts in the instance its `hypi-domain` header names, as
/// downloads do, without a configured default instance.
#[test]
fn anonymous_find_honours_hypi_domain() {
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    let admin = s.token("root", INSTANCE, true);
    let shared = s.upload_one(&alice, "shared.txt", b"s")["hypi"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.upload_one(&alice, "private.txt", b"p");
    let res = gql(&s, Some(&alice), &SEED_GRANT.replace("RESOURCE", &shared));
    assert!(res["errors"].is_null(), "{res}");
    let q = "{ find(type: File, arcql: \"*\") { edges { cursor } } }";
    // Switch off: the anonymous grant does not count yet.
    assert_eq!(
        ids(&gql_with(&s, &[("hypi-domain", INSTANCE)], q)),
        Vec::<String>::new()
    );
    assert_eq!(s.set_anonymous(&admin, true), 200);
    assert_eq!(
        ids(&gql_with(&s, &[("hypi-domain", INSTANCE)], q)),
        vec![shared.clone()]
    );
    // Upper case, as a browser may send it.
    assert_eq!(
        ids(&gql_with(&s, &[("hypi-domain", "ACME.test")], q)),
        vec![shared]
    );
    // No domain and no default instance: nothing; another domain: nothing.
    assert_eq!(ids(&gql_with(&s, &[], q)), Vec::<String>::new());
    assert_eq!(
        ids(&gql_with(&s, &[("hypi-domain", "other.test")], q)),
        Vec::<String>::new()
    );
    // Grants themselves are never listed to anonymous callers.
    let res = gql_with(
        &s,
        &[("hypi-domain", INSTANCE)],
        "{ find(type: AccessRight, arcql: \"*\") { edges { cursor } } }",
    );
    assert_eq!(ids(&res), Vec::<String>::new());
}

/// Issue 9 §4: AccessRight cursors are right ids; paging through grants works forwards and a
/// file id is no cursor for a grant walk past it.
#[test]
fn access_right_cursors_page_through_grants() {
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    let mut rights = Vec::new();
    for i in 0..3 {
        let f = s.upload_one(&alice, &format!("g{i}.txt"), b"g")["hypi"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let res = gql(&s, Some(&alice), &SEED_GRANT.replace("RESOURCE", &f));
        assert!(res["errors"].is_null(), "{res}");
        rights.push(res["data"]["upsert"][0]["id"].as_str().unwrap().to_string());
    }
    rights.sort();
    let page = |args: &str| {
        gql(
            &s,
            Some(&alice),
            &format!("{{ find(type: AccessRight, arcql: \"*\"{args}) {{ edges {{ cursor }} pageInfo {{ hasNextPage endCursor }} }} }}"),
        )
    };
    let p1 = page(", first: 2");
    assert_eq!(ids(&p1), rights[..2].to_vec());
    assert_eq!(p1["data"]["find"]["pageInfo"]["hasNextPage"], true);
    let after = p1["data"]["find"]["pageInfo"]["endCursor"]
        .as_str()
        .unwrap();
    let p2 = page(&format!(", first: 2, after: {after:?}"));
    assert_eq!(ids(&p2), rights[2..].to_vec());
    assert_eq!(p2["data"]["find"]["pageInfo"]["hasNextPage"], false);
    let res = page(", after: \"not-a-cursor\"");
    assert_eq!(
        res["errors"][0]["extensions"]["code"], "BAD_REQUEST",
        "{res}"
    );
}

/// Issue 9 §3: one paging rule. Sizes default to 25, must be at least 1, and are clamped to
/// the surface's maximum (GraphQL `max_page_size`, REST 1000) with `hasNextPage` telling the
/// rest.
#[test]
fn one_paging_rule_for_rest_and_graphql() {
    let s = Server::start_with(&[("DEPOT_MAX_PAGE_SIZE", "2")]);
    let alice = s.token("alice", INSTANCE, false);
    for i in 0..3 {
        s.upload_one(&alice, &format!("p{i}.txt"), b"p");
    }
    // Clamped, not refused.
    let rest: Value = s.get("/files?first=5000", Some(&alice)).json().unwrap();
    assert_eq!(rest["edges"].as_array().unwrap().len(), 3);
    let res = gql(
        &s,
        Some(&alice),
        "{ find(type: File, arcql: \"*\", first: 5000) { edges { cursor } pageInfo { hasNextPage } } }",
    );
    assert_eq!(ids(&res).len(), 2);
    assert_eq!(res["data"]["find"]["pageInfo"]["hasNextPage"], true);
    // Zero and below: a clear 400 on both.
    for first in ["0", "-1"] {
        let r = s.get(&format!("/files?first={first}"), Some(&alice));
        assert_eq!(r.status(), 400);
        let body: Value = r.json().unwrap();
        assert_eq!(body["error"]["code"], "BAD_REQUEST", "{body}");
        let res = gql(
            &s,
            Some(&alice),
            &format!(
                "{{ find(type: File, arcql: \"*\", first: {first}) {{ edges {{ cursor }} }} }}"
            ),
        );
        assert_eq!(
            res["errors"][0]["extensions"]["code"], "BAD_REQUEST",
            "{res}"
        );
        assert!(res["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("first"));
    }
}
