//! Access rules: owners, admins, other accounts and instances, grants, anonymous reads.

mod common;
use common::*;
use serde_json::json;

fn anonymous_right(resource: &str) -> Value {
    json!({
        "resource": resource, "resourceType": "File", "operationType": "Query", "operation": "*",
        "permissionType": "RBP", "approved": true, "members": [{"hypi": {"id": "anonymous"}}]
    })
}

#[test]
fn owners_admins_others_and_other_instances() {
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    let bob = s.token("bob", INSTANCE, false);
    let admin = s.token("root", INSTANCE, true);
    let mallory = s.token("alice", "evil.test", true);
    let f = s.upload_one(&alice, "secret.txt", b"top secret");
    let path = f["url"]["path"].as_str().unwrap();
    let id = f["hypi"]["id"].as_str().unwrap();
    assert_eq!(s.get(path, Some(&alice)).status(), 200);
    assert_eq!(s.get(path, Some(&admin)).status(), 200);
    let r = s.get(path, Some(&bob));
    assert_eq!(r.status(), 404, "same answer as a missing file");
    let v: Value = r.json().unwrap();
    assert_eq!(v["error"]["code"], "NOT_FOUND");
    assert_eq!(
        s.get(path, Some(&mallory)).status(),
        404,
        "an admin of another instance, same account name"
    );
    assert_eq!(s.get(&format!("/files/{id}"), Some(&bob)).status(), 404);
    assert_eq!(s.get(&format!("/files/{id}"), Some(&mallory)).status(), 404);
    assert_eq!(s.get(&format!("/files/{id}"), Some(&alice)).status(), 200);
    // A token used with another instance's hypi-domain is refused outright.
    let r = s
        .client
        .get(s.url(path))
        .header("Authorization", &alice)
        .header("hypi-domain", "evil.test")
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    // Nobody else's listing shows the file.
    for t in [&bob, &mallory] {
        let l: Value = s.get("/files", Some(t)).json().unwrap();
        assert_eq!(l["edges"].as_array().unwrap().len(), 0);
    }
    // An admin may delete anything of the instance; another account may not.
    let del = |t: &str| {
        s.client
            .delete(s.url(&format!("/files/{id}")))
            .header("Authorization", t)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(del(&bob), 404);
    assert_eq!(del(&mallory), 404);
    assert_eq!(del(&admin), 204);
    assert_eq!(s.get(path, Some(&alice)).status(), 404);
}

#[test]
fn anonymous_reads_need_a_grant_and_the_instance_switch() {
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    let admin = s.token("root", INSTANCE, true);
    let f = s.upload_one(&alice, "logo.png", &png_3x2());
    let path = f["url"]["path"].as_str().unwrap();
    let id = f["hypi"]["id"].as_str().unwrap();
    let r = s.get(path, None);
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().unwrap()["error"]["code"],
        "UNAUTHENTICATED"
    );

    let r = s.post_rights(&alice, &anonymous_right(id));
    assert_eq!(r.status(), 201);
    let right: Value = r.json().unwrap();
    assert_eq!(right["__typename"], "AccessRight");
    assert_eq!(right["resource"], id);
    assert_eq!(right["members"], json!([{"hypi": {"id": "anonymous"}}]));
    let right_id = right["hypi"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        s.get(path, None).status(),
        401,
        "anonymous requests are off by default"
    );

    assert_eq!(
        s.set_anonymous(&alice, true),
        403,
        "only an admin switches it"
    );
    assert_eq!(s.set_anonymous(&admin, true), 200);
    let r = s.get(path, None);
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().unwrap().as_ref(), png_3x2().as_slice());
    // Anonymous callers may read, not list, delete or grant.
    assert_eq!(s.get("/files", None).status(), 401);
    assert_eq!(s.get(&format!("/files/{id}"), None).status(), 200);
    assert_eq!(
        s.client
            .delete(s.url(&format!("/files/{id}")))
            .send()
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        s.client
            .post(s.url("/access-rights"))
            .json(&anonymous_right(id))
            .send()
            .unwrap()
            .status(),
        401
    );
    // A bad token is never treated as anonymous.
    assert_eq!(s.get(path, Some("Bearer not.a.token")).status(), 401);

    // Revocation takes effect on the next request.
    let r = s
        .client
        .delete(s.url(&format!("/access-rights/{right_id}")))
        .header("Authorization", &alice)
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(s.get(path, None).status(), 401);
    // Grant again, then switch the instance off: anonymous reads stop.
    assert_eq!(s.post_rights(&alice, &anonymous_right(id)).status(), 201);
    assert_eq!(s.get(path, None).status(), 200);
    assert_eq!(s.set_anonymous(&admin, false), 200);
    assert_eq!(s.get(path, None).status(), 401);
}

#[test]
fn grants_to_accounts_everyone_and_time_windows() {
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    let bob = s.token("bob", INSTANCE, false);
    let carol = s.token("carol", INSTANCE, false);
    let f = s.upload_one(&alice, "shared.txt", b"shared");
    let g = s.upload_one(&alice, "other.txt", b"other");
    let path = f["url"]["path"].as_str().unwrap();
    let id = f["hypi"]["id"].as_str().unwrap();
    let mut to_bob = anonymous_right(id);
    to_bob["members"] = json!([{"hypi": {"id": "bob"}}]);
    assert_eq!(s.post_rights(&alice, &to_bob).status(), 201);
    assert_eq!(s.get(path, Some(&bob)).status(), 200);
    assert_eq!(s.get(path, Some(&carol)).status(), 404);
    assert_eq!(
        s.get(g["url"]["path"].as_str().unwrap(), Some(&bob))
            .status(),
        404,
        "only that file"
    );

    // "*" as member: every account; the single-object member form is accepted too.
    let mut everyone = anonymous_right(g["hypi"]["id"].as_str().unwrap());
    everyone["members"] = json!({"hypi": {"id": "*"}});
    assert_eq!(s.post_rights(&alice, &everyone).status(), 201);
    assert_eq!(
        s.get(g["url"]["path"].as_str().unwrap(), Some(&carol))
            .status(),
        200
    );

    // Not yet valid, already expired, not approved, wrong operation type: no access.
    let h = s.upload_one(&alice, "timed.txt", b"timed");
    let hid = h["hypi"]["id"].as_str().unwrap();
    for (k, v) in [
        ("startDate", json!("2999-01-01T00:00:00Z")),
        ("endDate", json!("2001-01-01T00:00:00Z")),
        ("approved", json!(false)),
        ("operationType", json!("Mutation")),
    ] {
        let mut r = anonymous_right(hid);
        r["members"] = json!([{"hypi": {"id": "carol"}}]);
        r[k] = v;
        assert_eq!(s.post_rights(&alice, &r).status(), 201, "{k}");
    }
    assert_eq!(
        s.get(h["url"]["path"].as_str().unwrap(), Some(&carol))
            .status(),
        404
    );
    let mut current = anonymous_right(hid);
    current["members"] = json!([{"hypi": {"id": "carol"}}]);
    current["startDate"] = json!("2001-01-01T00:00:00Z");
    current["endDate"] = json!("2999-01-01T00:00:00Z");
    assert_eq!(s.post_rights(&alice, &current).status(), 201);
    assert_eq!(
        s.get(h["url"]["path"].as_str().unwrap(), Some(&carol))
            .status(),
        200
    );

    // resource "*": every file of the grantor, nobody else's.
    let d = s.upload_one(&alice, "d.txt", b"d");
    let e = s.upload_one(&bob, "e.txt", b"e");
    let mut all = anonymous_right("*");
    all["members"] = json!([{"hypi": {"id": "carol"}}]);
    assert_eq!(s.post_rights(&alice, &all).status(), 201);
    assert_eq!(
        s.get(d["url"]["path"].as_str().unwrap(), Some(&carol))
            .status(),
        200
    );
    assert_eq!(
        s.get(e["url"]["path"].as_str().unwrap(), Some(&carol))
            .status(),
        404
    );
}

#[test]
fn who_may_grant_list_and_revoke() {
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    let bob = s.token("bob", INSTANCE, false);
    let admin = s.token("root", INSTANCE, true);
    let f = s.upload_one(&alice, "f.txt", b"f");
    let id = f["hypi"]["id"].as_str().unwrap();
    assert_eq!(
        s.post_rights(&bob, &anonymous_right(id)).status(),
        404,
        "bob cannot see it"
    );
    let mut to_bob = anonymous_right(id);
    to_bob["members"] = json!([{"hypi": {"id": "bob"}}]);
    assert_eq!(s.post_rights(&alice, &to_bob).status(), 201);
    assert_eq!(
        s.post_rights(&bob, &anonymous_right(id)).status(),
        403,
        "bob may read, not grant"
    );
    assert_eq!(
        s.post_rights(&admin, &anonymous_right(id)).status(),
        201,
        "admins grant on anything"
    );
    assert_eq!(
        s.post_rights(&alice, &anonymous_right("01F35ZCSYBHTQ4JBWZ1KFXTDZR"))
            .status(),
        404
    );

    // An array creates several at once.
    let r = s.post_rights(&alice, &json!([anonymous_right(id), to_bob]));
    assert_eq!(r.status(), 201);
    assert_eq!(r.json::<Value>().unwrap().as_array().unwrap().len(), 2);

    let list = |t: &str| {
        s.client
            .get(s.url(&format!("/access-rights?resource={id}")))
            .header("Authorization", t)
            .send()
            .unwrap()
    };
    let rights: Value = list(&alice).json().unwrap();
    assert_eq!(rights.as_array().unwrap().len(), 4);
    assert_eq!(list(&bob).status(), 403);
    let rid = rights[0]["hypi"]["id"].as_str().unwrap();
    let del = |t: &str, rid: &str| {
        s.client
            .delete(s.url(&format!("/access-rights/{rid}")))
            .header("Authorization", t)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(del(&bob, rid), 404);
    assert_eq!(del(&alice, rid), 204);
    assert_eq!(del(&alice, rid), 404);
    assert_eq!(del(&alice, "garbage"), 404);
    let rights: Value = list(&admin).json().unwrap();
    assert_eq!(rights.as_array().unwrap().len(), 3);
}

#[test]
fn invalid_grants_are_400() {
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    let f = s.upload_one(&alice, "f.txt", b"f");
    let id = f["hypi"]["id"].as_str().unwrap();
    let base = anonymous_right(id);
    let mut cases = vec![];
    for (k, v) in [
        ("members", json!([])),
        ("members", json!([{"hypi": {}}])),
        ("permissionType", json!("XYZ")),
        ("resourceType", json!("Account")),
        ("operationType", json!("Subscription")),
        ("startDate", json!("yesterday")),
        ("resource", json!("not-an-id")),
        ("unknownField", json!(1)),
    ] {
        let mut b = base.clone();
        b[k] = v;
        cases.push(b);
    }
    let mut missing = base.clone();
    missing.as_object_mut().unwrap().remove("resource");
    cases.push(missing);
    cases.push(json!([]));
    cases.push(json!("nope"));
    for c in &cases {
        let r = s.post_rights(&alice, c);
        assert_eq!(r.status(), 400, "{c}");
        assert_eq!(
            r.json::<Value>().unwrap()["error"]["code"],
            "BAD_REQUEST",
            "{c}"
        );
    }
    let r = s
        .client
        .post(s.url("/access-rights"))
        .header("Authorization", &alice)
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = s
        .client
        .put(s.url(&format!("/instances/{INSTANCE}")))
        .header("Authorization", &alice)
        .json(&json!({"anonymous": 1}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[test]
fn listing_is_paginated_and_filtered() {
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    let bob = s.token("bob", INSTANCE, false);
    let mut ids = vec![];
    for i in 0..5 {
        let f = s
            .upload(&alice, "/upload/docs", &[(&format!("{i}.txt"), b"x")])
            .1;
        ids.push(
            f[format!("{i}.txt")]["hypi"]["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    s.upload_one(&alice, "root.txt", b"y");
    s.upload_one(&bob, "bob.txt", b"z");
    let mut seen = vec![];
    let mut after = String::new();
    loop {
        let q = if after.is_empty() {
            "/files?directory=/docs&first=2".to_string()
        } else {
            format!("/files?directory=/docs&first=2&after={after}")
        };
        let page: Value = s.get(&q, Some(&alice)).json().unwrap();
        for e in page["edges"].as_array().unwrap() {
            assert_eq!(e["cursor"], e["node"]["hypi"]["id"]);
            seen.push(e["cursor"].as_str().unwrap().to_string());
        }
        if !page["pageInfo"]["hasNextPage"].as_bool().unwrap() {
            break;
        }
        after = page["pageInfo"]["endCursor"].as_str().unwrap().to_string();
    }
    // Listed in id order: creation order, except for ids made within one millisecond (a
    // ULID's random part orders those).
    ids.sort();
    assert_eq!(seen, ids);
    let all: Value = s.get("/files", Some(&alice)).json().unwrap();
    assert_eq!(all["edges"].as_array().unwrap().len(), 6);
    assert_eq!(s.get("/files?first=0", Some(&alice)).status(), 400);
    assert_eq!(s.get("/files?after=bogus", Some(&alice)).status(), 400);
    assert_eq!(
        s.get("/files?directory=/a/../b", Some(&alice)).status(),
        400
    );
    assert_eq!(s.get("/files?bogus=1", Some(&alice)).status(), 400);
    assert_eq!(s.get("/files/garbage", Some(&alice)).status(), 404);
}

#[test]
fn unknown_routes_and_methods_answer_json() {
    let s = Server::start();
    let r = s.get("/nope", None);
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().unwrap()["error"]["code"], "NOT_FOUND");
    let r = s.client.get(s.url("/upload/x")).send().unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(
        r.json::<Value>().unwrap()["error"]["code"],
        "METHOD_NOT_ALLOWED"
    );
}

/// Small files an owner downloaded are answered from memory afterwards: those answers must
/// follow every change at once (trash, delete, other callers, grants, wrong paths).
#[test]
fn repeat_downloads_from_memory_follow_every_change() {
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    let bob = s.token("bob", INSTANCE, false);
    let admin = s.token("root", INSTANCE, true);
    let data = bytes(20_000, 77);
    let f = s.upload_one(&alice, "hot.bin", &data);
    let path = f["url"]["path"].as_str().unwrap().to_string();
    let id = f["hypi"]["id"].as_str().unwrap().to_string();
    for _ in 0..3 {
        let r = s.get(&path, Some(&alice));
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().unwrap().as_ref(), &data[..]);
    }
    // The cached entry does not widen access or loosen the path checks.
    assert_eq!(s.get(&path, Some(&bob)).status(), 404);
    assert_eq!(s.get(&path, None).status(), 401);
    let wrong_ext = path.replace(".bin", ".png");
    assert_eq!(s.get(&wrong_ext, Some(&alice)).status(), 404);
    let no_instance = format!("/file/{id}.bin");
    assert_eq!(s.get(&no_instance, Some(&alice)).status(), 200);
    let wrong_instance = format!("/file/01F322XSV13R9VAGJXW351PVBT-{id}.bin");
    assert_eq!(s.get(&wrong_instance, Some(&alice)).status(), 404);
    // Ranges and conditionals are answered from the cached bytes too.
    let r = s
        .client
        .get(s.url(&path))
        .header("Authorization", &alice)
        .header("Range", "bytes=100-199")
        .send()
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().unwrap().as_ref(), &data[100..200]);
    let r = s
        .client
        .head(s.url(&path))
        .header("Authorization", &alice)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "20000");
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(etag, format!("\"{}\"", sha256_hex(&data)));
    let r = s
        .client
        .get(s.url(&path))
        .header("Authorization", &alice)
        .header("If-None-Match", &etag)
        .send()
        .unwrap();
    assert_eq!(r.status(), 304);

    // A grant lets bob in; its revocation shuts him out at once (cached decisions die with it).
    let mut to_bob = anonymous_right(&id);
    to_bob["members"] = json!([{"hypi": {"id": "bob"}}]);
    let right: Value = s.post_rights(&alice, &to_bob).json().unwrap();
    assert_eq!(s.get(&path, Some(&bob)).status(), 200);
    let right_id = right["hypi"]["id"].as_str().unwrap();
    let status = s
        .client
        .delete(s.url(&format!("/access-rights/{right_id}")))
        .header("Authorization", &alice)
        .header("hypi-domain", INSTANCE)
        .send()
        .unwrap()
        .status();
    assert_eq!(status, 204);
    assert_eq!(s.get(&path, Some(&bob)).status(), 404);

    // Trash hides it from the owner and the admin right away; untrash brings it back.
    let v = s.graphql(
        Some(&alice),
        "mutation { trash(type: File, arcql: \"name = 'hot.bin'\") }",
    );
    assert_eq!(v["data"]["trash"], 1, "{v}");
    assert_eq!(s.get(&path, Some(&alice)).status(), 404);
    assert_eq!(s.get(&path, Some(&admin)).status(), 404);
    let v = s.graphql(
        Some(&alice),
        "mutation { untrash(type: File, arcql: \"*\") }",
    );
    assert_eq!(v["data"]["untrash"], 1, "{v}");
    assert_eq!(s.get(&path, Some(&admin)).status(), 200);

    // Deleted: gone at once, and new bytes under a new id are served correctly.
    let status = s
        .client
        .delete(s.url(&format!("/files/{id}")))
        .header("Authorization", &alice)
        .send()
        .unwrap()
        .status();
    assert_eq!(status, 204);
    assert_eq!(s.get(&path, Some(&alice)).status(), 404);
    let g = s.upload_one(&alice, "hot.bin", &data[..10_000]);
    let r = s.get(g["url"]["path"].as_str().unwrap(), Some(&alice));
    assert_eq!(r.bytes().unwrap().as_ref(), &data[..10_000]);
}

/// A cache far smaller than the files downloaded keeps evicting; every answer stays right. With
/// the cache off, downloads work as before.
#[test]
fn a_small_or_disabled_download_cache_still_serves_the_right_bytes() {
    for budget in ["100000", "0"] {
        let s = Server::start_with(&[("DEPOT_DOWNLOAD_CACHE_BYTES", budget)]);
        let alice = s.token("alice", INSTANCE, false);
        let files: Vec<(String, Vec<u8>)> = (0..12)
            .map(|i| {
                let data = bytes(10_000 + i * 1000, i as u64);
                let f = s.upload_one(&alice, &format!("f{i}.bin"), &data);
                (f["url"]["path"].as_str().unwrap().to_string(), data)
            })
            .collect();
        for _ in 0..3 {
            for (path, data) in &files {
                let r = s.get(path, Some(&alice));
                assert_eq!(r.status(), 200);
                assert_eq!(r.bytes().unwrap().as_ref(), &data[..], "budget {budget}");
            }
        }
    }
}

/// Grantees' and anonymous callers' repeat downloads are answered from memory with a cached
/// grant decision: every change that could end the read (revocation by REST or by query, a
/// grant replaced by a narrower one, the instance switch, trash, an end date) takes effect on
/// the very next request.
#[test]
fn cached_grant_decisions_follow_every_grant_change_at_once() {
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    let bob = s.token("bob", INSTANCE, false);
    let carol = s.token("carol", INSTANCE, false);
    let admin = s.token("root", INSTANCE, true);
    let data = bytes(4096, 9);
    let f = s.upload_one(&alice, "shared.bin", &data);
    let path = f["url"]["path"].as_str().unwrap().to_string();
    let id = f["hypi"]["id"].as_str().unwrap().to_string();
    let status = |t: Option<&str>| s.get(&path, t).status();
    let warm = |t: Option<&str>, want: u16| {
        for _ in 0..3 {
            let r = s.get(&path, t);
            assert_eq!(r.status(), want);
            if want == 200 {
                assert_eq!(r.bytes().unwrap().as_ref(), &data[..]);
            }
        }
    };
    let revoke = |right: &Value| {
        let rid = right["hypi"]["id"].as_str().unwrap();
        let r = s
            .client
            .delete(s.url(&format!("/access-rights/{rid}")))
            .header("Authorization", &alice)
            .send()
            .unwrap();
        assert_eq!(r.status(), 204);
    };

    // Bob's grant, revoked over REST.
    let mut to_bob = anonymous_right(&id);
    to_bob["members"] = json!([{"hypi": {"id": "bob"}}]);
    let right: Value = s.post_rights(&alice, &to_bob).json().unwrap();
    warm(Some(bob.as_str()), 200);
    assert_eq!(
        status(Some(carol.as_str())),
        404,
        "bob's decision is bob's alone"
    );
    assert_eq!(status(None), 401);
    revoke(&right);
    assert_eq!(status(Some(bob.as_str())), 404);

    // A grant to everyone, replaced (same id) by one naming carol only: bob is out at once.
    let mut everyone = anonymous_right(&id);
    everyone["members"] = json!([{"hypi": {"id": "*"}}]);
    let right: Value = s.post_rights(&alice, &everyone).json().unwrap();
    warm(Some(bob.as_str()), 200);
    warm(Some(carol.as_str()), 200);
    let mut narrower = everyone.clone();
    narrower["hypi"] = json!({"id": right["hypi"]["id"]});
    narrower["members"] = json!([{"hypi": {"id": "carol"}}]);
    assert_eq!(s.post_rights(&alice, &narrower).status(), 201);
    assert_eq!(status(Some(bob.as_str())), 404);
    warm(Some(carol.as_str()), 200);
    // Revoked by query.
    let rid = right["hypi"]["id"].as_str().unwrap();
    let v = s.graphql(
        Some(&alice),
        &format!("mutation {{ delete(type: AccessRight, arcql: \"hypi.id = '{rid}'\") }}"),
    );
    assert_eq!(v["data"]["delete"], 1, "{v}");
    assert_eq!(status(Some(carol.as_str())), 404);

    // Anonymous: the instance switch and trash end cached reads at once.
    assert_eq!(s.set_anonymous(&admin, true), 200);
    let right: Value = s.post_rights(&alice, &anonymous_right(&id)).json().unwrap();
    warm(None, 200);
    warm(Some(bob.as_str()), 200);
    assert_eq!(s.set_anonymous(&admin, false), 200);
    assert_eq!(status(None), 401);
    assert_eq!(status(Some(bob.as_str())), 404);
    assert_eq!(s.set_anonymous(&admin, true), 200);
    warm(None, 200);
    let v = s.graphql(
        Some(&alice),
        "mutation { trash(type: File, arcql: \"name = 'shared.bin'\") }",
    );
    assert_eq!(v["data"]["trash"], 1, "{v}");
    assert_eq!(status(None), 401);
    assert_eq!(status(Some(alice.as_str())), 404);
    let v = s.graphql(
        Some(&alice),
        "mutation { untrash(type: File, arcql: \"*\") }",
    );
    assert_eq!(v["data"]["untrash"], 1, "{v}");
    warm(None, 200);
    revoke(&right);
    assert_eq!(status(None), 401);

    // A grant with an end date: the cached decision ends with it, without any other change.
    let end = depot::types::rfc3339(depot::types::now_millis() + 5000);
    let mut until = anonymous_right(&id);
    until["endDate"] = json!(end);
    assert_eq!(s.post_rights(&alice, &until).status(), 201);
    warm(None, 200);
    std::thread::sleep(std::time::Duration::from_millis(5500));
    assert_eq!(status(None), 401, "the grant ended at {end}");
}
