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
    assert!(
        node["isStared"].is_null() && node["isSharable"].is_null() && node["content"].is_null()
    );

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
