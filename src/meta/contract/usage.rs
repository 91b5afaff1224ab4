//! Contract cases for [`crate::meta::UsageStore`]: the counters follow every record change in
//! its own transaction (insert, confirm, re-upload, delete, variants), never count directories,
//! count shared bytes per file, and the limits round-trip.

use super::{file, inst, session, stored};
use crate::meta::usage::{Counters, QuotaLimits, QuotaScope, UtcDay};
use crate::meta::{FileExtras, MetaStore, SessionKind, VariantKey, VariantRecord, DIRECTORY_MIME};
use crate::types::{AccountId, Sha256};

const DAY: UtcDay = UtcDay(0);

fn counters(m: &dyn MetaStore, i: crate::types::InstanceId, who: Option<&str>) -> Counters {
    let a = who.map(|w| AccountId(w.into()));
    m.usage(i, a.as_ref(), DAY).unwrap().counters
}

fn c(bytes: u64, files: u64, variant_bytes: u64) -> Counters {
    Counters {
        bytes,
        files,
        variant_bytes,
    }
}

/// Inserts, deletes and directories move the account's and the instance's counters; two files
/// with the same bytes count twice (dedup is invisible to usage); a trashed file still counts.
pub fn usage_follows_inserts_and_deletes(m: &dyn MetaStore) {
    let i = inst(m, "a.test");
    let other = inst(m, "b.test");
    let a = file(i, "alice", "/", "a.txt", 1);
    let b = file(i, "alice", "/", "b.txt", 1);
    let mut big = file(i, "bob", "/", "c.txt", 2);
    big.size = 1000;
    let mut dir = file(i, "alice", "/", "d", 0);
    dir.mime = DIRECTORY_MIME.into();
    dir.size = 0;
    m.insert_files(&[(a.clone(), None), (b.clone(), None), (dir.clone(), None)])
        .unwrap();
    m.insert_files(&[(big.clone(), None)]).unwrap();
    assert_eq!(
        counters(m, i, Some("alice")),
        c(6, 2, 0),
        "shared bytes count per file"
    );
    assert_eq!(counters(m, i, Some("bob")), c(1000, 1, 0));
    assert_eq!(counters(m, i, None), c(1006, 3, 0));
    assert_eq!(
        counters(m, other, None),
        c(0, 0, 0),
        "other instances untouched"
    );
    // Created on day 0 (`created: 1`): that day's upload counter has the bytes.
    let today = m.usage(i, Some(&AccountId("alice".into())), DAY).unwrap();
    assert_eq!(today.uploaded_today, 6);
    assert_eq!(m.usage(i, None, DAY).unwrap().uploaded_today, 1006);
    assert_eq!(
        m.usage(i, None, UtcDay(1)).unwrap().uploaded_today,
        0,
        "another day starts at zero"
    );

    let mut trashed = a.clone();
    trashed.trashed = Some(5);
    m.update_file(&trashed).unwrap();
    assert_eq!(
        counters(m, i, Some("alice")),
        c(6, 2, 0),
        "trash still counts"
    );

    m.delete_file(a.id).unwrap().expect("deleted");
    assert!(m.delete_file(a.id).unwrap().is_none());
    assert_eq!(
        counters(m, i, Some("alice")),
        c(3, 1, 0),
        "a second delete changes nothing"
    );
    m.delete_file(dir.id).unwrap().expect("deleted");
    m.delete_file(b.id).unwrap().expect("deleted");
    assert_eq!(counters(m, i, Some("alice")), c(0, 0, 0));
    assert_eq!(counters(m, i, None), c(1000, 1, 0));
    assert_eq!(
        m.usage(i, None, DAY).unwrap().uploaded_today,
        1006,
        "deleting does not give back the day's uploads"
    );

    // Accounts listed in order, paged, without the instance total.
    m.insert_files(&[(file(i, "carol", "/", "x.txt", 3), None)])
        .unwrap();
    let page = m.usage_page(i, None, 1, DAY).unwrap();
    assert!(page.has_more);
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].0, AccountId("bob".into()));
    let next = m.usage_page(i, Some(&page.items[0].0), 10, DAY).unwrap();
    assert!(!next.has_more);
    let names: Vec<_> = next.items.iter().map(|(a, _)| a.0.clone()).collect();
    assert_eq!(
        names,
        vec!["carol".to_string()],
        "alice went to zero and is gone"
    );
    assert_eq!(next.items[0].1.counters, c(3, 1, 0));
}

/// A confirmed session counts its file; a re-upload counts the new size in place of the old
/// and its bytes in the day of the re-upload.
pub fn usage_follows_confirms_and_reuploads(m: &dyn MetaStore) {
    let i = inst(m, "a.test");
    let s = session(i, "alice", SessionKind::PresignedPut, 100);
    m.create_session(&s, 10).unwrap();
    m.complete_session(s.id, &stored(5), 1000).unwrap();
    assert_eq!(
        counters(m, i, Some("alice")),
        c(0, 0, 0),
        "uploaded bytes are not a file yet"
    );
    let f = file(i, "alice", "/d", "a.txt", 5);
    m.confirm_session(s.id, &f, None, &FileExtras::default())
        .unwrap();
    assert_eq!(counters(m, i, Some("alice")), c(3, 1, 0));
    // Confirming again answers the same File and counts nothing more.
    m.confirm_session(s.id, &f, None, &FileExtras::default())
        .unwrap();
    assert_eq!(counters(m, i, Some("alice")), c(3, 1, 0));

    let mut bigger = stored(6);
    bigger.size = 50;
    let day2 = 2 * 86_400_000;
    m.replace_content(f.id, &bigger, false, day2)
        .unwrap()
        .expect("replaced");
    assert_eq!(counters(m, i, Some("alice")), c(50, 1, 0));
    assert_eq!(counters(m, i, None), c(50, 1, 0));
    let a = AccountId("alice".into());
    assert_eq!(m.usage(i, Some(&a), UtcDay(2)).unwrap().uploaded_today, 50);
    assert_eq!(m.usage(i, Some(&a), DAY).unwrap().uploaded_today, 3);
    m.delete_file(f.id).unwrap().expect("deleted");
    assert_eq!(counters(m, i, Some("alice")), c(0, 0, 0));
}

/// A variant counts in the usage of the account it is charged to, once per key, and leaves it
/// when its source's variants go.
pub fn usage_counts_variants(m: &dyn MetaStore) {
    let i = inst(m, "a.test");
    let source = Sha256([1; 32]);
    let v = |params: &str, blob: u8, size: u64| VariantRecord {
        key: VariantKey::new(&source, params),
        source,
        sha: Sha256([blob; 32]),
        size,
        mime: "image/webp".into(),
        width: 10,
        height: 10,
        created: 1,
        charged_to: Some((i, AccountId("alice".into()))),
    };
    m.put_variant(&v("w=64", 7, 40)).unwrap();
    m.put_variant(&v("w=64", 8, 99)).unwrap(); // the same key again: nothing more
    m.put_variant(&v("w=128", 9, 60)).unwrap();
    assert_eq!(counters(m, i, Some("alice")), c(0, 0, 100));
    assert_eq!(counters(m, i, None), c(0, 0, 100));
    assert_eq!(m.usage(i, None, DAY).unwrap().counters.stored(), 100);
    m.delete_variants_of(&source).unwrap();
    assert_eq!(counters(m, i, Some("alice")), c(0, 0, 0));
    assert_eq!(counters(m, i, None), c(0, 0, 0));
}

/// Limits round-trip per scope; all unlimited removes them; fsck can read and rewrite every
/// counter.
pub fn quota_limits_round_trip(m: &dyn MetaStore) {
    let i = inst(m, "a.test");
    let alice = QuotaScope::Account(AccountId("alice".into()));
    assert_eq!(m.quota_limits(i, &QuotaScope::Instance).unwrap(), None);
    let l = QuotaLimits {
        max_bytes: Some(10),
        max_files: None,
        max_upload_bytes_per_day: Some(0),
    };
    m.put_quota_limits(i, &QuotaScope::Instance, &l).unwrap();
    m.put_quota_limits(
        i,
        &alice,
        &QuotaLimits {
            max_files: Some(2),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(m.quota_limits(i, &QuotaScope::Instance).unwrap(), Some(l));
    assert_eq!(
        m.quota_limits(i, &QuotaScope::AccountDefault).unwrap(),
        None
    );
    assert_eq!(
        m.quota_limits(i, &alice).unwrap().and_then(|l| l.max_files),
        Some(2)
    );
    m.put_quota_limits(i, &alice, &QuotaLimits::default())
        .unwrap();
    assert_eq!(m.quota_limits(i, &alice).unwrap(), None);

    m.insert_files(&[(file(i, "alice", "/", "a.txt", 1), None)])
        .unwrap();
    let all = m.all_counters().unwrap();
    assert_eq!(all.len(), 2, "the account and the instance: {all:?}");
    let a = AccountId("alice".into());
    m.set_counters(i, Some(&a), &c(7, 7, 7)).unwrap();
    assert_eq!(counters(m, i, Some("alice")), c(7, 7, 7));
    m.set_counters(i, Some(&a), &Counters::default()).unwrap();
    assert_eq!(m.all_counters().unwrap().len(), 1);
    // Counters never show up as blob reference counts.
    assert!(m
        .all_blob_refs()
        .unwrap()
        .iter()
        .all(|(sha, _)| *sha == Sha256([1; 32])));
}
