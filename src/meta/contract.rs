//! The contract every metadata backend meets, written against `&dyn MetaStore` (Garage's
//! `src/db/test.rs` runs one suite on every KV adapter the same way). Each case expects a fresh,
//! empty store; `tests/meta_contract.rs` runs them all on [`super::SledMeta`], and a new backend
//! is done when it passes them too. Cases panic on failure, as tests do.

use super::{
    AccessRight, FileExtras, FileRecord, FileScope, MetaStore, PermissionType, SessionKind,
    SessionState, StoredBytes, UploadSession,
};
use crate::error::{Error, SessionFault};
use crate::types::{AccountId, FileId, InstanceId, RightId, SessionId, Sha256};

pub mod assets;
pub mod dirs;
pub mod usage;
pub mod variants;
pub mod webhooks;

/// A contract case: a name for the report and the check.
pub type Case = (&'static str, fn(&dyn MetaStore));

/// Every case, in a stable order.
pub fn cases() -> Vec<Case> {
    vec![
        ("instances_round_trip", instances_round_trip),
        (
            "refcounts_follow_inserts_and_deletes",
            refcounts_follow_inserts_and_deletes,
        ),
        (
            "indexes_follow_update_trash_and_delete",
            indexes_follow_update_trash_and_delete,
        ),
        (
            "blob_references_count_files_and_uploaded_sessions",
            blob_references_count_files_and_uploaded_sessions,
        ),
        ("update_never_resurrects", update_never_resurrects),
        ("scan_pages_with_after", scan_pages_with_after),
        ("cursor_of_a_deleted_record", cursor_of_a_deleted_record),
        ("concurrent_refcount_changes", concurrent_refcount_changes),
        ("grant_round_trip_and_delete", grant_round_trip_and_delete),
        (
            "grant_repointing_moves_every_index",
            grant_repointing_moves_every_index,
        ),
        ("grants_go_with_their_file", grants_go_with_their_file),
        (
            "grant_on_a_missing_file_is_refused",
            grant_on_a_missing_file_is_refused,
        ),
        (
            "grant_racing_a_delete_never_outlives_the_file",
            grant_racing_a_delete_never_outlives_the_file,
        ),
        ("member_index", member_index),
        ("wildcard_grants_by_grantor", wildcard_grants_by_grantor),
        ("grant_cap_per_grantor", grant_cap_per_grantor),
        ("rights_in_lists_an_instance", rights_in_lists_an_instance),
        // Upload sessions.
        ("session_life_cycle", session_life_cycle),
        ("session_open_cap_per_kind", session_open_cap_per_kind),
        ("session_expiry_order", session_expiry_order),
        ("concurrent_session_confirms", concurrent_session_confirms),
        ("session_creation_rate", session_creation_rate),
        (
            "multipart_session_keeps_its_parts",
            multipart_session_keeps_its_parts,
        ),
        // DirectoryStore (contract/dirs.rs).
        (
            "subtree_is_exactly_what_lies_below",
            dirs::subtree_is_exactly_what_lies_below,
        ),
        (
            "replace_moves_every_index_or_none",
            dirs::replace_moves_every_index_or_none,
        ),
        ("stars_are_per_account", dirs::stars_are_per_account),
        (
            "session_error_is_recorded",
            assets::session_error_is_recorded,
        ),
        (
            "replace_content_moves_references",
            assets::replace_content_moves_references,
        ),
        ("session_size_is_set_once", assets::session_size_is_set_once),
        // Webhooks and their outbox (contract/webhooks.rs).
        (
            "outbox_is_written_with_the_change",
            webhooks::outbox_is_written_with_the_change,
        ),
        (
            "deliveries_go_in_order_and_are_logged",
            webhooks::deliveries_go_in_order_and_are_logged,
        ),
        ("webhook_cap_and_delete", webhooks::webhook_cap_and_delete),
        (
            "due_deliveries_are_claimed_once_when_shared",
            webhooks::due_deliveries_are_claimed_once_when_shared,
        ),
        (
            "variants_hold_references_and_go_with_their_source",
            variants::variants_hold_references_and_go_with_their_source,
        ),
        // UsageStore (contract/usage.rs).
        (
            "usage_follows_inserts_and_deletes",
            usage::usage_follows_inserts_and_deletes,
        ),
        (
            "usage_follows_confirms_and_reuploads",
            usage::usage_follows_confirms_and_reuploads,
        ),
        ("usage_counts_variants", usage::usage_counts_variants),
        ("quota_limits_round_trip", usage::quota_limits_round_trip),
    ]
}

/// Runs every case, each on a store from `fresh`. Returns how many ran.
pub fn run_all<S: MetaStore>(mut fresh: impl FnMut() -> S) -> usize {
    let all = cases();
    for (name, case) in &all {
        let store = fresh();
        eprintln!("meta contract: {name}");
        case(&store);
    }
    all.len()
}

fn sha(n: u8) -> Sha256 {
    Sha256([n; 32])
}

/// A file record of `owner` in `instance`, in `dir`, whose content is `sha(content)`.
pub fn file(instance: InstanceId, owner: &str, dir: &str, name: &str, content: u8) -> FileRecord {
    FileRecord {
        id: FileId::new(),
        instance,
        created_by: AccountId(owner.into()),
        created: 1,
        updated: 1,
        trashed: None,
        name: name.into(),
        directory: dir.into(),
        extension: Some("txt".into()),
        mime: "text/plain".into(),
        size: 3,
        sha256: sha(content),
        width: None,
        height: None,
        is_stared: None,
        is_sharable: None,
    }
}

/// A read grant of `grantor` on `resource` naming `members`.
pub fn right(
    instance: InstanceId,
    grantor: &str,
    admin: bool,
    resource: &str,
    members: &[&str],
) -> AccessRight {
    AccessRight {
        id: RightId::new(),
        instance,
        created_by: AccountId(grantor.into()),
        created: 1,
        updated: 1,
        resource: resource.into(),
        resource_type: "File".into(),
        fields: None,
        operation_type: "Query".into(),
        operation: "*".into(),
        start_date: None,
        end_date: None,
        permission_type: PermissionType::RBP,
        approved: true,
        members: members.iter().map(|m| m.to_string()).collect(),
        granted_by_admin: admin,
    }
}

fn ids<T>(rs: &[T], id: impl Fn(&T) -> String) -> Vec<String> {
    rs.iter().map(id).collect()
}

fn right_ids(rs: &[AccessRight]) -> Vec<String> {
    ids(rs, |r| r.id.to_string())
}

fn scan(m: &dyn MetaStore, i: InstanceId, scope: FileScope, after: Option<FileId>) -> Vec<FileId> {
    m.scan_files(i, scope, after)
        .map(|f| f.expect("scan").id)
        .collect()
}

fn put(m: &dyn MetaStore, rights: &[AccessRight]) {
    m.put_rights(rights, u64::MAX).expect("put_rights");
}

pub(crate) fn inst(m: &dyn MetaStore, domain: &str) -> InstanceId {
    m.ensure_instance(domain).expect("ensure_instance").id
}

/// ensure_instance creates once; lookups by domain and id agree; put_instance replaces.
pub fn instances_round_trip(m: &dyn MetaStore) {
    assert!(m.instance_by_domain("a.test").unwrap().is_none());
    let a = m.ensure_instance("a.test").unwrap();
    assert!(!a.anonymous_requests);
    assert_eq!(m.ensure_instance("a.test").unwrap(), a, "created once");
    assert_eq!(m.instance(a.id).unwrap().as_ref(), Some(&a));
    let mut changed = a.clone();
    changed.anonymous_requests = true;
    m.put_instance(&changed).unwrap();
    assert_eq!(m.instance_by_domain("a.test").unwrap(), Some(changed));
    assert!(m.instance(InstanceId::new()).unwrap().is_none());
}

/// Each file holds one reference on its blob; the last delete reports 0.
pub fn refcounts_follow_inserts_and_deletes(m: &dyn MetaStore) {
    let i = inst(m, "a.test");
    let a = file(i, "alice", "/", "a.txt", 1);
    let b = file(i, "bob", "/", "b.txt", 1);
    let c = file(i, "bob", "/", "c.txt", 2);
    m.insert_files(&[(a.clone(), None), (b.clone(), None)])
        .unwrap();
    m.insert_files(&[(c.clone(), None)]).unwrap();
    assert_eq!(m.blob_refs(&sha(1)).unwrap(), 2);
    assert_eq!(m.blob_refs(&sha(2)).unwrap(), 1);
    let (gone, left) = m.delete_file(a.id).unwrap().expect("deleted");
    assert_eq!((gone, left), (a.clone(), 1));
    assert!(
        m.delete_file(a.id).unwrap().is_none(),
        "second delete finds nothing"
    );
    assert_eq!(m.delete_file(b.id).unwrap().map(|x| x.1), Some(0));
    assert_eq!(m.blob_refs(&sha(1)).unwrap(), 0);
    assert_eq!(m.blob_refs(&sha(2)).unwrap(), 1);
    assert!(m.file(b.id).unwrap().is_none());
}

/// fsck's exact count of one blob: file records and uploaded (not open, not confirmed)
/// sessions, beside the recorded count, also when the two differ.
pub fn blob_references_count_files_and_uploaded_sessions(m: &dyn MetaStore) {
    let i = inst(m, "a.test");
    let none = crate::meta::BlobReferences::default();
    assert_eq!(m.blob_references(&sha(7)).unwrap(), none);
    let (a, b) = (file(i, "alice", "/", "a", 7), file(i, "bob", "/", "b", 7));
    m.insert_files(&[(a, None), (b, None), (file(i, "bob", "/", "c", 8), None)])
        .unwrap();
    let open = session(i, "alice", SessionKind::PresignedPut, 100);
    m.create_session(&open, 10).unwrap();
    let up = session(i, "alice", SessionKind::PresignedPut, 100);
    m.create_session(&up, 10).unwrap();
    m.complete_session(up.id, &stored(7), 200).unwrap();
    let want = |recorded, actual| crate::meta::BlobReferences { recorded, actual };
    assert_eq!(m.blob_references(&sha(7)).unwrap(), want(3, 3));
    assert_eq!(m.blob_references(&sha(8)).unwrap(), want(1, 1));
    // A count gone wrong is seen as such.
    m.set_blob_refs(&sha(7), 5).unwrap();
    assert_eq!(m.blob_references(&sha(7)).unwrap(), want(5, 3));
    m.delete_session(up.id).unwrap();
    assert_eq!(m.blob_references(&sha(7)).unwrap(), want(4, 2));
}

/// Every scope sees a file after insert and after an update (trash), none after delete.
pub fn indexes_follow_update_trash_and_delete(m: &dyn MetaStore) {
    let i = inst(m, "a.test");
    let f = file(i, "alice", "/docs", "a.txt", 1);
    let other = file(i, "bob", "/", "b.txt", 2);
    m.insert_files(&[(f.clone(), None), (other.clone(), None)])
        .unwrap();
    let alice = AccountId("alice".into());
    let scopes = [
        FileScope::All,
        FileScope::Owner(&alice),
        FileScope::Directory("/docs"),
        FileScope::Path("/docs/a.txt"),
    ];
    for s in scopes {
        assert!(scan(m, i, s, None).contains(&f.id), "{s:?}");
    }
    assert_eq!(scan(m, i, FileScope::Owner(&alice), None), vec![f.id]);
    let mut trashed = f.clone();
    trashed.trashed = Some(5);
    m.update_file(&trashed).unwrap();
    assert_eq!(m.file(f.id).unwrap(), Some(trashed.clone()));
    for s in scopes {
        let found: Vec<FileRecord> = m.scan_files(i, s, None).map(|r| r.unwrap()).collect();
        assert!(found.contains(&trashed), "{s:?} after trash");
    }
    m.delete_file(f.id).unwrap().expect("deleted");
    for s in scopes {
        assert!(!scan(m, i, s, None).contains(&f.id), "{s:?} after delete");
    }
    assert_eq!(scan(m, i, FileScope::All, None), vec![other.id]);
    // Another instance's scans never see these files.
    let j = inst(m, "b.test");
    assert!(scan(m, j, FileScope::All, None).is_empty());
}

/// Updating a deleted file is NotFound and writes nothing.
pub fn update_never_resurrects(m: &dyn MetaStore) {
    let i = inst(m, "a.test");
    let f = file(i, "alice", "/", "a.txt", 1);
    m.insert_files(&[(f.clone(), None)]).unwrap();
    m.delete_file(f.id).unwrap();
    assert!(matches!(m.update_file(&f), Err(Error::NotFound(_))));
    assert!(m.file(f.id).unwrap().is_none());
}

/// Pages of a scan, joined by `after`, are the whole scan in id order, without repeats.
pub fn scan_pages_with_after(m: &dyn MetaStore) {
    let i = inst(m, "a.test");
    let files: Vec<FileRecord> = (0..25)
        .map(|n| file(i, "alice", "/", &format!("{n}.txt"), 1))
        .collect();
    let rows: Vec<_> = files.iter().map(|f| (f.clone(), None)).collect();
    m.insert_files(&rows).unwrap();
    let mut want: Vec<FileId> = files.iter().map(|f| f.id).collect();
    want.sort();
    let alice = AccountId("alice".into());
    for scope in [
        FileScope::All,
        FileScope::Owner(&alice),
        FileScope::Directory("/"),
    ] {
        let mut got = Vec::new();
        let mut after = None;
        loop {
            let page: Vec<FileId> = m
                .scan_files(i, scope, after)
                .take(7)
                .map(|f| f.unwrap().id)
                .collect();
            if page.is_empty() {
                break;
            }
            after = page.last().copied();
            got.extend(page);
        }
        assert_eq!(got, want, "{scope:?}");
    }
    // After the last id, nothing.
    assert!(scan(m, i, FileScope::All, want.last().copied()).is_empty());
}

/// A cursor whose record was deleted still continues after its position.
pub fn cursor_of_a_deleted_record(m: &dyn MetaStore) {
    let i = inst(m, "a.test");
    let files: Vec<FileRecord> = (0..5)
        .map(|n| file(i, "alice", "/", &format!("{n}.txt"), n))
        .collect();
    let rows: Vec<_> = files.iter().map(|f| (f.clone(), None)).collect();
    m.insert_files(&rows).unwrap();
    let mut ids: Vec<FileId> = files.iter().map(|f| f.id).collect();
    ids.sort();
    m.delete_file(ids[2]).unwrap().expect("deleted");
    assert_eq!(scan(m, i, FileScope::All, Some(ids[2])), ids[3..].to_vec());
    // A cursor that never existed sorts by its id too.
    assert_eq!(
        scan(m, i, FileScope::All, Some(FileId::new())),
        Vec::<FileId>::new()
    );
}

/// Threads inserting and deleting files of one blob leave the exact count.
pub fn concurrent_refcount_changes(m: &dyn MetaStore) {
    let i = inst(m, "a.test");
    let keep = 20;
    std::thread::scope(|s| {
        for t in 0..4 {
            s.spawn(move || {
                for n in 0..25 {
                    let f = file(i, "alice", "/", &format!("{t}-{n}.txt"), 9);
                    m.insert_files(&[(f.clone(), None)]).unwrap();
                    if n >= keep / 4 {
                        m.delete_file(f.id).unwrap().expect("deleted");
                    }
                }
            });
        }
    });
    assert_eq!(m.blob_refs(&sha(9)).unwrap(), keep as u64);
    assert_eq!(scan(m, i, FileScope::All, None).len(), keep);
}

/// A grant is found by id and by resource; deleting it removes it everywhere.
pub fn grant_round_trip_and_delete(m: &dyn MetaStore) {
    let i = inst(m, "a.test");
    let f = file(i, "alice", "/", "a.txt", 1);
    m.insert_files(&[(f.clone(), None)]).unwrap();
    let r = right(i, "alice", false, &f.id.to_string(), &["bob"]);
    put(m, std::slice::from_ref(&r));
    assert_eq!(m.right(r.id).unwrap(), Some(r.clone()));
    assert_eq!(m.rights_on(i, &f.id.to_string()).unwrap(), vec![r.clone()]);
    assert_eq!(m.rights_naming(i, &["bob"]).unwrap(), vec![r.clone()]);
    assert_eq!(m.rights_reaching(&f).unwrap(), vec![r.clone()]);
    assert_eq!(m.grant_count(i, &AccountId("alice".into())).unwrap(), 1);
    assert!(m.delete_right(r.id).unwrap());
    assert!(
        !m.delete_right(r.id).unwrap(),
        "second delete finds nothing"
    );
    assert!(m.right(r.id).unwrap().is_none());
    assert!(m.rights_on(i, &f.id.to_string()).unwrap().is_empty());
    assert!(m.rights_naming(i, &["bob"]).unwrap().is_empty());
    assert!(m.rights_reaching(&f).unwrap().is_empty());
    assert_eq!(m.grant_count(i, &AccountId("alice".into())).unwrap(), 0);
}

/// Re-putting a grant id with another resource and members moves every index entry: the old
/// file no longer lists it, deleting the old file leaves it, the old member no longer finds it.
pub fn grant_repointing_moves_every_index(m: &dyn MetaStore) {
    let i = inst(m, "a.test");
    let f1 = file(i, "alice", "/", "1.txt", 1);
    let f2 = file(i, "alice", "/", "2.txt", 2);
    m.insert_files(&[(f1.clone(), None), (f2.clone(), None)])
        .unwrap();
    let r = right(i, "alice", false, &f1.id.to_string(), &["bob"]);
    put(m, std::slice::from_ref(&r));
    let mut moved = r.clone();
    moved.resource = f2.id.to_string();
    moved.members = vec!["carol".into()];
    put(m, std::slice::from_ref(&moved));
    assert!(m.rights_on(i, &f1.id.to_string()).unwrap().is_empty());
    assert_eq!(
        m.rights_on(i, &f2.id.to_string()).unwrap(),
        vec![moved.clone()]
    );
    assert_eq!(m.rights_in(i).unwrap(), vec![moved.clone()], "listed once");
    assert!(m.rights_naming(i, &["bob"]).unwrap().is_empty());
    assert_eq!(m.rights_naming(i, &["carol"]).unwrap(), vec![moved.clone()]);
    assert!(m.rights_reaching(&f1).unwrap().is_empty());
    assert_eq!(m.grant_count(i, &AccountId("alice".into())).unwrap(), 1);
    m.delete_file(f1.id).unwrap().expect("deleted");
    assert_eq!(
        m.right(moved.id).unwrap(),
        Some(moved.clone()),
        "survives the old file"
    );
    // Re-pointed to a wildcard: found through the grantor, not the file.
    let mut wild = moved.clone();
    wild.resource = "*".into();
    put(m, std::slice::from_ref(&wild));
    assert!(m.rights_on(i, &f2.id.to_string()).unwrap().is_empty());
    assert_eq!(m.rights_reaching(&f2).unwrap(), vec![wild]);
}

/// Deleting a file deletes its grants and every index entry of them, and nothing else.
pub fn grants_go_with_their_file(m: &dyn MetaStore) {
    let i = inst(m, "a.test");
    let f = file(i, "alice", "/", "a.txt", 1);
    let g = file(i, "alice", "/", "b.txt", 2);
    m.insert_files(&[(f.clone(), None), (g.clone(), None)])
        .unwrap();
    let on_f: Vec<AccessRight> = (0..50)
        .map(|n| {
            right(
                i,
                "alice",
                false,
                &f.id.to_string(),
                &[format!("u{n}").as_str(), "*"],
            )
        })
        .collect();
    let on_g = right(i, "alice", false, &g.id.to_string(), &["*"]);
    let wild = right(i, "alice", false, "*", &["bob"]);
    put(m, &on_f);
    put(m, &[on_g.clone(), wild.clone()]);
    assert_eq!(m.grant_count(i, &AccountId("alice".into())).unwrap(), 52);
    m.delete_file(f.id).unwrap().expect("deleted");
    for r in &on_f {
        assert!(m.right(r.id).unwrap().is_none());
    }
    assert!(m.rights_on(i, &f.id.to_string()).unwrap().is_empty());
    assert!(m.rights_naming(i, &["u7"]).unwrap().is_empty());
    assert_eq!(
        right_ids(&m.rights_naming(i, &["*"]).unwrap()),
        right_ids(std::slice::from_ref(&on_g))
    );
    assert_eq!(
        m.rights_reaching(&g).unwrap().len(),
        2,
        "g's grant and the wildcard"
    );
    assert_eq!(m.grant_count(i, &AccountId("alice".into())).unwrap(), 2);
}

/// A grant on a file id needs that file, in the grant's instance.
pub fn grant_on_a_missing_file_is_refused(m: &dyn MetaStore) {
    let i = inst(m, "a.test");
    let j = inst(m, "b.test");
    let f = file(i, "alice", "/", "a.txt", 1);
    m.insert_files(&[(f.clone(), None)]).unwrap();
    let ok = right(i, "alice", false, &f.id.to_string(), &["bob"]);
    let missing = right(i, "alice", false, &FileId::new().to_string(), &["bob"]);
    let elsewhere = right(j, "alice", false, &f.id.to_string(), &["bob"]);
    for bad in [missing, elsewhere] {
        let res = m.put_rights(&[ok.clone(), bad], u64::MAX);
        assert!(matches!(res, Err(Error::NotFound(_))), "{res:?}");
        assert!(m.right(ok.id).unwrap().is_none(), "all or nothing");
    }
    assert_eq!(m.grant_count(i, &AccountId("alice".into())).unwrap(), 0);
}

/// A grant put while its file is deleted either goes with the file or is refused: it never
/// outlives it.
pub fn grant_racing_a_delete_never_outlives_the_file(m: &dyn MetaStore) {
    let i = inst(m, "a.test");
    for round in 0..30 {
        let f = file(i, "alice", "/", &format!("{round}.txt"), 1);
        m.insert_files(&[(f.clone(), None)]).unwrap();
        let resource = f.id.to_string();
        std::thread::scope(|s| {
            let granter = s.spawn(|| {
                let mut stored = Vec::new();
                for _ in 0..20 {
                    let r = right(i, "alice", false, &resource, &["bob"]);
                    match m.put_rights(std::slice::from_ref(&r), u64::MAX) {
                        Ok(()) => stored.push(r.id),
                        Err(Error::NotFound(_)) => break,
                        Err(e) => panic!("{e}"),
                    }
                }
                stored
            });
            std::thread::yield_now();
            m.delete_file(f.id).unwrap().expect("deleted");
            for id in granter.join().unwrap() {
                assert!(
                    m.right(id).unwrap().is_none(),
                    "round {round}: grant outlived"
                );
            }
        });
        assert!(m.rights_on(i, &resource).unwrap().is_empty());
        assert!(m.rights_naming(i, &["bob"]).unwrap().is_empty());
    }
    assert_eq!(m.grant_count(i, &AccountId("alice".into())).unwrap(), 0);
}

/// `rights_naming` finds grants by any of the members asked for, each once, in id order,
/// within the instance.
pub fn member_index(m: &dyn MetaStore) {
    let i = inst(m, "a.test");
    let j = inst(m, "b.test");
    let a = right(i, "alice", false, "*", &["bob", "carol"]);
    let b = right(i, "alice", false, "*", &["*"]);
    let c = right(i, "alice", false, "*", &["anonymous"]);
    let d = right(j, "alice", false, "*", &["bob"]);
    // "bo" is a prefix of "bob": must not match.
    let e = right(i, "alice", false, "*", &["bo"]);
    put(m, &[c.clone(), b.clone(), a.clone(), d.clone(), e.clone()]);
    let mut want = vec![a.clone(), b.clone()];
    want.sort_by_key(|r| r.id);
    assert_eq!(m.rights_naming(i, &["bob", "*", "carol"]).unwrap(), want);
    assert_eq!(m.rights_naming(i, &["anonymous"]).unwrap(), vec![c]);
    assert_eq!(m.rights_naming(i, &["bo"]).unwrap(), vec![e]);
    assert_eq!(m.rights_naming(j, &["bob", "*"]).unwrap(), vec![d]);
    assert!(m.rights_naming(i, &["dave"]).unwrap().is_empty());
    assert!(m.rights_naming(i, &[]).unwrap().is_empty());
}

/// `rights_reaching` is the file's grants, its owner's wildcards and admins' wildcards; not
/// another account's wildcards, not another file's grants.
pub fn wildcard_grants_by_grantor(m: &dyn MetaStore) {
    let i = inst(m, "a.test");
    let f = file(i, "alice", "/", "a.txt", 1);
    let g = file(i, "mallory", "/", "m.txt", 2);
    m.insert_files(&[(f.clone(), None), (g.clone(), None)])
        .unwrap();
    let on_f = right(i, "bob", false, &f.id.to_string(), &["x"]);
    let on_g = right(i, "mallory", false, &g.id.to_string(), &["x"]);
    let alices = right(i, "alice", false, "*", &["x"]);
    let admins = right(i, "root", true, "*", &["x"]);
    let malloryish = right(i, "alicex", false, "*", &["x"]);
    let mallorys: Vec<AccessRight> = (0..100)
        .map(|_| right(i, "mallory", false, "*", &["*"]))
        .collect();
    put(
        m,
        &[
            on_f.clone(),
            on_g,
            alices.clone(),
            admins.clone(),
            malloryish,
        ],
    );
    put(m, &mallorys);
    let mut want = vec![on_f, alices.clone(), admins.clone()];
    want.sort_by_key(|r| r.id);
    assert_eq!(m.rights_reaching(&f).unwrap(), want);
    assert_eq!(m.rights_reaching(&g).unwrap().len(), 1 + 1 + 100);
    let by = |who: &str| m.wildcards_by(i, &AccountId(who.into())).unwrap();
    assert_eq!(by("alice"), vec![alices.clone()]);
    assert_eq!(by("root"), vec![admins.clone()]);
    assert_eq!(by("mallory").len(), 100);
    assert!(by("bob").is_empty(), "bob's grant is on a file");
    // Another instance's admin grants do not reach.
    let j = inst(m, "b.test");
    let h = file(j, "alice", "/", "a.txt", 1);
    m.insert_files(&[(h.clone(), None)]).unwrap();
    assert!(m.rights_reaching(&h).unwrap().is_empty());
    // Admin-ness is the grant's, kept when re-put.
    let mut plain = admins.clone();
    plain.granted_by_admin = false;
    put(m, std::slice::from_ref(&plain));
    assert!(!m.rights_reaching(&f).unwrap().contains(&plain));
}

/// The cap counts a grantor's grants per instance; replacing a grant does not count twice;
/// beyond the cap nothing of the batch is written.
pub fn grant_cap_per_grantor(m: &dyn MetaStore) {
    let i = inst(m, "a.test");
    let j = inst(m, "b.test");
    let alice = AccountId("alice".into());
    let first: Vec<AccessRight> = (0..3)
        .map(|_| right(i, "alice", false, "*", &["b"]))
        .collect();
    m.put_rights(&first, 3).unwrap();
    assert_eq!(m.grant_count(i, &alice).unwrap(), 3);
    let more = right(i, "alice", false, "*", &["b"]);
    let res = m.put_rights(std::slice::from_ref(&more), 3);
    assert!(matches!(res, Err(Error::TooManyRequests(_))), "{res:?}");
    assert!(m.right(more.id).unwrap().is_none());
    // Replacing an existing grant at the cap is allowed.
    let mut again = first[0].clone();
    again.members = vec!["c".into()];
    m.put_rights(&[again], 3).unwrap();
    // Other accounts and other instances have their own counts.
    m.put_rights(&[right(i, "bob", false, "*", &["b"])], 3)
        .unwrap();
    m.put_rights(&[right(j, "alice", false, "*", &["b"])], 3)
        .unwrap();
    assert!(m.delete_right(first[1].id).unwrap());
    m.put_rights(&[more], 3).unwrap();
    assert_eq!(m.grant_count(i, &alice).unwrap(), 3);
    assert_eq!(m.grant_count(j, &alice).unwrap(), 1);
}

/// `rights_in` lists an instance's grants, each once, and no other instance's.
pub fn rights_in_lists_an_instance(m: &dyn MetaStore) {
    let i = inst(m, "a.test");
    let j = inst(m, "b.test");
    let f = file(i, "alice", "/", "a.txt", 1);
    m.insert_files(&[(f.clone(), None)]).unwrap();
    let a = right(i, "alice", false, &f.id.to_string(), &["b", "c"]);
    let b = right(i, "alice", false, "*", &["b"]);
    let c = right(j, "alice", false, "*", &["b"]);
    put(m, &[a.clone(), b.clone(), c]);
    let mut got = right_ids(&m.rights_in(i).unwrap());
    got.sort();
    let mut want = right_ids(&[a, b]);
    want.sort();
    assert_eq!(got, want);
}

/// A session of `kind` owned by `owner`, expiring at `expires`.
pub fn session(
    instance: InstanceId,
    owner: &str,
    kind: SessionKind,
    expires: u64,
) -> UploadSession {
    UploadSession {
        id: SessionId::new(),
        instance,
        account: AccountId(owner.into()),
        kind,
        name: "a.txt".into(),
        mime: Some("text/plain".into()),
        size: Some(3),
        max_size: 3,
        directory: "/d".into(),
        metadata: Some(serde_json::json!({"alt": "x"})),
        state: SessionState::Open,
        created: 1,
        expires,
        bytes: None,
        file: None,
        error: None,
    }
}

pub(crate) fn stored(content: u8) -> StoredBytes {
    StoredBytes {
        sha: sha(content),
        size: 3,
        mime: "text/plain".into(),
        width: None,
        height: None,
        parts: None,
    }
}

/// Open -> Uploaded (one blob reference, single use) -> Confirmed (the File takes the reference
/// over, with its extras; confirming again answers the same File); deleting an uploaded
/// session releases its reference; deleting the File removes its extras.
pub fn session_life_cycle(m: &dyn MetaStore) {
    let i = inst(m, "a.test");
    let s = session(i, "alice", SessionKind::PresignedPut, 100);
    m.create_session(&s, 10).unwrap();
    assert_eq!(m.session(s.id).unwrap().as_ref(), Some(&s));
    let f = file(i, "alice", "/d", "a.txt", 5);
    let extras = FileExtras {
        blurhash: Some("LEHV6nWB2yk8pyo0adR*.7kCMdnj".into()),
        alt: Some("x".into()),
        metadata: s.metadata.clone(),
    };
    assert!(matches!(
        m.confirm_session(s.id, &f, None, &extras),
        Err(Error::Session(SessionFault::Incomplete, _))
    ));
    let up = m
        .complete_session(s.id, &stored(5), s.expires + 60_000)
        .unwrap();
    assert_eq!(up.state, SessionState::Uploaded);
    assert_eq!(
        up.expires,
        s.expires + 60_000,
        "the confirm window opens at upload"
    );
    assert_eq!(
        m.session(s.id).unwrap().unwrap().expires,
        s.expires + 60_000
    );
    assert_eq!(
        m.blob_refs(&sha(5)).unwrap(),
        1,
        "the session holds the blob"
    );
    assert!(
        matches!(
            m.complete_session(s.id, &stored(6), 0),
            Err(Error::Conflict(_))
        ),
        "single use"
    );
    assert_eq!(m.blob_refs(&sha(6)).unwrap(), 0);
    assert_eq!(m.confirm_session(s.id, &f, None, &extras).unwrap(), f.id);
    assert_eq!(m.blob_refs(&sha(5)).unwrap(), 1, "handed over, not added");
    let other = file(i, "alice", "/d", "a.txt", 5);
    assert_eq!(
        m.confirm_session(s.id, &other, None, &extras).unwrap(),
        f.id,
        "idempotent"
    );
    assert!(m.file(other.id).unwrap().is_none());
    assert_eq!(m.file_extras(f.id).unwrap(), Some(extras));
    assert_eq!(scan(m, i, FileScope::Directory("/d"), None), vec![f.id]);
    // Deleting a confirmed session leaves the File and its reference.
    let (gone, left) = m.delete_session(s.id).unwrap().unwrap();
    assert_eq!((gone.state, left), (SessionState::Confirmed, None));
    assert_eq!(m.blob_refs(&sha(5)).unwrap(), 1);
    assert_eq!(m.delete_file(f.id).unwrap().map(|x| x.1), Some(0));
    assert!(
        m.file_extras(f.id).unwrap().is_none(),
        "extras go with the file"
    );
    // An uploaded, unconfirmed session releases its reference when deleted.
    let t = session(i, "alice", SessionKind::TempFile, 100);
    m.create_session(&t, 10).unwrap();
    m.complete_session(t.id, &stored(7), 0).unwrap();
    let (_, left) = m.delete_session(t.id).unwrap().unwrap();
    assert_eq!(left, Some(0));
    assert_eq!(m.blob_refs(&sha(7)).unwrap(), 0);
    assert!(m.delete_session(t.id).unwrap().is_none());
    assert!(m.session(t.id).unwrap().is_none());
    assert!(matches!(
        m.complete_session(t.id, &stored(7), 0),
        Err(Error::NotFound(_))
    ));
    assert_eq!(m.all_sessions().count(), 0);
}

/// The open-session cap counts per account and kind; confirming or deleting frees a place.
pub fn session_open_cap_per_kind(m: &dyn MetaStore) {
    let i = inst(m, "a.test");
    let a = session(i, "alice", SessionKind::PresignedPut, 100);
    let b = session(i, "alice", SessionKind::PresignedPut, 100);
    m.create_session(&a, 2).unwrap();
    m.create_session(&b, 2).unwrap();
    let c = session(i, "alice", SessionKind::PresignedPut, 100);
    assert!(matches!(
        m.create_session(&c, 2),
        Err(Error::TooManyRequests(_))
    ));
    assert!(m.session(c.id).unwrap().is_none(), "nothing written");
    m.create_session(&session(i, "bob", SessionKind::PresignedPut, 100), 2)
        .unwrap();
    m.create_session(&session(i, "alice", SessionKind::DownloadLink, 100), 2)
        .unwrap();
    m.complete_session(a.id, &stored(1), 0).unwrap();
    m.confirm_session(
        a.id,
        &file(i, "alice", "/", "a", 1),
        None,
        &FileExtras::default(),
    )
    .unwrap();
    m.create_session(&c, 2).unwrap();
    m.delete_session(b.id).unwrap();
    m.create_session(&session(i, "alice", SessionKind::PresignedPut, 100), 2)
        .unwrap();
}

/// A multipart temp file's session round-trips its part layout (metadata) and, once completed,
/// the digests of the parts it was assembled from; its kind has its own open-session cap.
pub fn multipart_session_keeps_its_parts(m: &dyn MetaStore) {
    let i = inst(m, "a.test");
    let mut s = session(i, "alice", SessionKind::MultipartTempFile, 100);
    s.metadata = Some(serde_json::json!({"partCount": 3, "partSize": 5_242_880}));
    m.create_session(&s, 1).unwrap();
    // A temp file of the single-part kind is counted apart.
    m.create_session(&session(i, "alice", SessionKind::TempFile, 100), 1)
        .unwrap();
    assert!(matches!(
        m.create_session(&session(i, "alice", SessionKind::MultipartTempFile, 100), 1),
        Err(Error::TooManyRequests(_))
    ));
    assert_eq!(m.session(s.id).unwrap().as_ref(), Some(&s));
    let mut bytes = stored(9);
    bytes.parts = Some(crate::meta::CompletedParts {
        count: 3,
        md5_of_md5s: "ab".repeat(16),
        sha_of_shas: "cd".repeat(32),
    });
    let done = m.complete_session(s.id, &bytes, 0).unwrap();
    assert_eq!(done.bytes.as_ref(), Some(&bytes));
    assert_eq!(m.session(s.id).unwrap().unwrap().bytes, Some(bytes));
    assert_eq!(m.blob_refs(&sha(9)).unwrap(), 1);
    let (_, left) = m.delete_session(s.id).unwrap().unwrap();
    assert_eq!(left, Some(0));
}

/// The creation rate counts per account and minute, and a refusal counts nothing.
pub fn session_creation_rate(m: &dyn MetaStore) {
    let i = inst(m, "a.test");
    let (alice, bob) = (AccountId("alice".into()), AccountId("bob".into()));
    let minute = 1_700_000_040_000; // the start of a minute
    m.charge_session_creation(i, &alice, minute, 2).unwrap();
    m.charge_session_creation(i, &alice, minute + 59_000, 2)
        .unwrap();
    for _ in 0..2 {
        assert!(matches!(
            m.charge_session_creation(i, &alice, minute + 59_999, 2),
            Err(Error::TooManyRequests(_))
        ));
    }
    m.charge_session_creation(i, &bob, minute, 2).unwrap();
    // The next minute starts afresh.
    m.charge_session_creation(i, &alice, minute + 60_000, 2)
        .unwrap();
    m.charge_session_creation(i, &alice, minute + 60_001, 2)
        .unwrap();
    assert!(m
        .charge_session_creation(i, &alice, minute + 60_002, 2)
        .is_err());
}

/// Expired sessions come back soonest first, up to the limit, and none that has not expired.
pub fn session_expiry_order(m: &dyn MetaStore) {
    let i = inst(m, "a.test");
    let late = session(i, "a", SessionKind::TempFile, 300);
    let early = session(i, "a", SessionKind::TempFile, 100);
    let mid = session(i, "a", SessionKind::TempFile, 200);
    for s in [&late, &early, &mid] {
        m.create_session(s, 10).unwrap();
    }
    let ids = |v: Vec<UploadSession>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(ids(m.expired_sessions(99, 10).unwrap()), vec![]);
    assert_eq!(
        ids(m.expired_sessions(200, 10).unwrap()),
        vec![early.id, mid.id]
    );
    assert_eq!(ids(m.expired_sessions(1000, 1).unwrap()), vec![early.id]);
    m.delete_session(early.id).unwrap();
    assert_eq!(
        ids(m.expired_sessions(1000, 10).unwrap()),
        vec![mid.id, late.id]
    );
}

/// Confirms racing on one session make exactly one File.
pub fn concurrent_session_confirms(m: &dyn MetaStore) {
    let i = inst(m, "a.test");
    let s = session(i, "alice", SessionKind::PresignedPut, 100);
    m.create_session(&s, 10).unwrap();
    m.complete_session(s.id, &stored(3), 0).unwrap();
    let made: Vec<FileId> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..8)
            .map(|_| {
                sc.spawn(|| {
                    let f = file(i, "alice", "/d", "a.txt", 3);
                    m.confirm_session(s.id, &f, None, &FileExtras::default())
                        .unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(made.iter().all(|f| *f == made[0]));
    assert_eq!(scan(m, i, FileScope::All, None), vec![made[0]]);
    assert_eq!(m.blob_refs(&sha(3)).unwrap(), 1);
}
