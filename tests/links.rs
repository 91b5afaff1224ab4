//! Signed download links over real HTTP: made by whoever may read the file, used without a
//! token, ended by revocation, by deleting the file, or by expiry.

mod common;
use common::*;
use serde_json::json;

fn make_link(s: &Server, t: &str, id: &str, expires_in: &str) -> reqwest::blocking::Response {
    s.client
        .post(s.url(&format!("/files/{id}/links")))
        .header("Authorization", t)
        .json(&json!({"expiresIn": expires_in}))
        .send()
        .unwrap()
}

#[test]
fn link_downloads_without_a_token_until_revoked() {
    let s = Server::start();
    let t = s.token("ann", INSTANCE, false);
    let data = b"quarterly report".to_vec();
    let f = s.upload_one(&t, "report.txt", &data);
    let id = f["hypi"]["id"].as_str().unwrap();
    let r = make_link(&s, &t, id, "1h");
    assert_eq!(r.status(), 201);
    let link: Value = r.json().unwrap();
    let url = link["url"].as_str().unwrap();
    // Without a token, without a grant, without the instance's anonymous switch.
    let r = s.client.get(url).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().unwrap().as_ref(), data.as_slice());
    // The plain download still needs a token.
    assert_eq!(
        s.get(f["url"]["path"].as_str().unwrap(), None).status(),
        401
    );

    // Someone who may not read the file cannot make a link to it.
    let eve = s.token("eve", INSTANCE, false);
    assert_eq!(json_error(make_link(&s, &eve, id, "1h")).0, 404);
    // Nor revoke one.
    let del = |who: &str| {
        s.client
            .delete(s.url(&format!(
                "/files/{id}/links/{}",
                link["id"].as_str().unwrap()
            )))
            .header("Authorization", who)
            .send()
            .unwrap()
    };
    assert_eq!(del(&eve).status(), 404);
    assert_eq!(del(&t).status(), 204);
    assert_eq!(s.client.get(url).send().unwrap().status(), 404);
    // Bad durations are refused.
    assert_eq!(json_error(make_link(&s, &t, id, "soon")).0, 400);
    assert_eq!(json_error(make_link(&s, &t, id, "9999d")).0, 400);
}

#[test]
fn deleting_the_file_ends_its_links_and_links_expire() {
    let s = Server::start();
    let t = s.token("ann", INSTANCE, false);
    let f = s.upload_one(&t, "a.txt", b"aaa");
    let id = f["hypi"]["id"].as_str().unwrap();
    // Over GraphQL too.
    let v = s.graphql(
        Some(&t),
        &format!(r#"mutation {{ createFileLink(fileId: {id:?}, expiresIn: "1h") {{ id url expiresAt }} }}"#),
    );
    let url = v["data"]["createFileLink"]["url"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string();
    let short: Value = make_link(&s, &t, id, "1s").json().unwrap();
    assert_eq!(s.client.get(&url).send().unwrap().status(), 200);

    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (st, code, _) = json_error(s.client.get(short["url"].as_str().unwrap()).send().unwrap());
    assert_eq!((st, code.as_str()), (410, "EXPIRED"));

    let r = s
        .client
        .delete(s.url(&format!("/files/{id}")))
        .header("Authorization", &t)
        .send()
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(s.client.get(&url).send().unwrap().status(), 404);
    // A tampered link never reaches the file.
    let bad = url.replace("sig=", "sig=ab");
    assert_eq!(json_error(s.client.get(&bad).send().unwrap()).0, 403);
}

#[test]
fn a_link_ends_no_later_than_its_makers_grant_and_never_names_a_directory() {
    let s = Server::start();
    let ann = s.token("ann", INSTANCE, false);
    let bob = s.token("bob", INSTANCE, false);
    let f = s.upload_one(&ann, "plan.txt", b"the plan");
    let id = f["hypi"]["id"].as_str().unwrap();
    // Bob may read it for about a day.
    let end = depot::types::rfc3339(depot::types::now_millis() + 86_400_000);
    let grant = json!({"resource": id, "resourceType": "File", "operationType": "Query",
        "operation": "*", "permissionType": "RBP", "approved": true, "endDate": end,
        "members": [{"hypi": {"id": "bob"}}]});
    assert!(s.post_rights(&ann, &grant).status().is_success());
    // Within his grant: fine. Past it: refused, nothing made.
    assert_eq!(make_link(&s, &bob, id, "1h").status(), 201);
    let (st, code, msg) = json_error(make_link(&s, &bob, id, "7d"));
    assert_eq!((st, code.as_str()), (400, "BAD_REQUEST"), "{msg}");
    assert!(msg.contains("end of your access"), "{msg}");
    // The owner has no such horizon.
    assert_eq!(make_link(&s, &ann, id, "7d").status(), 201);
    // A directory has no bytes: no link to it (the root is readable by every account).
    assert_eq!(s.upload(&ann, "/upload/docs", &[("a.txt", b"a")]).0, 200);
    let q = r#"{ find(type: File, arcql: "isDirectory = 'true' AND path = '/docs'", first: 1) { edges { cursor } } }"#;
    let v = s.graphql(Some(&ann), q);
    let dir_id = v["data"]["find"]["edges"][0]["cursor"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string();
    let (st, _, msg) = json_error(make_link(&s, &ann, &dir_id, "1h"));
    assert_eq!(st, 400, "{msg}");
}
