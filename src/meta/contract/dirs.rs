//! Contract cases of [`crate::meta::DirectoryStore`]: subtrees, all-or-nothing rewrites,
//! stars.

use super::{file, inst, scan};
use crate::error::Error;
use crate::meta::{FileScope, MetaStore};
use crate::types::AccountId;

/// The subtree of `/a` is what lies below it: not `/a` itself, not the sibling `/ab`.
pub fn subtree_is_exactly_what_lies_below(m: &dyn MetaStore) {
    let i = inst(m, "a.test");
    let dir_a = file(i, "alice", "/", "a", 1);
    let x = file(i, "alice", "/a", "x.txt", 2);
    let y = file(i, "bob", "/a/b", "y.txt", 3);
    let z = file(i, "alice", "/ab", "z.txt", 4);
    let other = file(crate::types::InstanceId::new(), "alice", "/a", "o.txt", 5);
    let all = [&dir_a, &x, &y, &z, &other];
    m.insert_files(&all.iter().map(|f| ((*f).clone(), None)).collect::<Vec<_>>())
        .unwrap();
    let mut got: Vec<_> = m.scan_subtree(i, "/a").map(|f| f.unwrap().id).collect();
    got.sort();
    let mut want = vec![x.id, y.id];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(
        m.scan_subtree(i, "/").count(),
        4,
        "the root's subtree is the instance"
    );
    assert_eq!(m.scan_subtree(i, "/a/b/y.txt").count(), 0);
}

/// A rewrite moves every index entry of every record, or (when one record is stale) none.
pub fn replace_moves_every_index_or_none(m: &dyn MetaStore) {
    let i = inst(m, "a.test");
    let a = file(i, "alice", "/src", "a.txt", 1);
    let b = file(i, "alice", "/src/sub", "b.txt", 2);
    m.insert_files(&[(a.clone(), None), (b.clone(), None)])
        .unwrap();
    let mut a2 = a.clone();
    a2.directory = "/dst".into();
    a2.name = "renamed.txt".into();
    let mut b2 = b.clone();
    b2.directory = "/dst/sub".into();
    // A stale `old`: nothing at all is written.
    let mut stale = b.clone();
    stale.size += 1;
    let e = m
        .replace_files(&[(a.clone(), a2.clone()), (stale, b2.clone())])
        .unwrap_err();
    assert!(matches!(e, Error::Conflict(_)), "{e:?}");
    assert_eq!(m.file(a.id).unwrap().unwrap(), a);
    assert_eq!(scan(m, i, FileScope::Directory("/src"), None), vec![a.id]);
    // The whole batch.
    m.replace_files(&[(a.clone(), a2.clone()), (b.clone(), b2.clone())])
        .unwrap();
    assert_eq!(m.file(a.id).unwrap().unwrap(), a2);
    assert_eq!(m.file(b.id).unwrap().unwrap(), b2);
    assert!(scan(m, i, FileScope::Directory("/src"), None).is_empty());
    assert!(scan(m, i, FileScope::Directory("/src/sub"), None).is_empty());
    assert!(scan(m, i, FileScope::Path("/src/a.txt"), None).is_empty());
    assert_eq!(scan(m, i, FileScope::Directory("/dst"), None), vec![a.id]);
    assert_eq!(
        scan(m, i, FileScope::Path("/dst/renamed.txt"), None),
        vec![a.id]
    );
    assert_eq!(
        scan(m, i, FileScope::Path("/dst/sub/b.txt"), None),
        vec![b.id]
    );
    let owner = AccountId("alice".into());
    assert_eq!(scan(m, i, FileScope::Owner(&owner), None).len(), 2);
    assert_eq!(scan(m, i, FileScope::All, None).len(), 2);
    assert_eq!(m.scan_subtree(i, "/dst").count(), 2);
    assert_eq!(m.scan_subtree(i, "/src").count(), 0);
    // Refcounts are untouched by a rewrite.
    assert_eq!(m.blob_refs(&a.sha256).unwrap(), 1);
    // Identity, owner and content never change in a rewrite.
    let mut c = a2.clone();
    c.created_by = AccountId("mallory".into());
    assert!(m.replace_files(&[(a2.clone(), c)]).is_err());
    // A deleted record cannot be rewritten back into existence.
    m.delete_file(b.id).unwrap();
    let e = m.replace_files(&[(b2.clone(), b2.clone())]).unwrap_err();
    assert!(matches!(e, Error::Conflict(_)), "{e:?}");
    assert!(m.file(b.id).unwrap().is_none());
}

/// Stars are each account's own.
pub fn stars_are_per_account(m: &dyn MetaStore) {
    let i = inst(m, "a.test");
    let f = file(i, "alice", "/", "s.txt", 1);
    m.insert_files(&[(f.clone(), None)]).unwrap();
    let (alice, bob) = (AccountId("alice".into()), AccountId("bob".into()));
    assert!(!m.starred(i, &alice, f.id).unwrap());
    m.set_star(i, &bob, f.id, true).unwrap();
    assert!(m.starred(i, &bob, f.id).unwrap());
    assert!(!m.starred(i, &alice, f.id).unwrap());
    m.set_star(i, &bob, f.id, true).unwrap();
    m.set_star(i, &bob, f.id, false).unwrap();
    assert!(!m.starred(i, &bob, f.id).unwrap());
}
