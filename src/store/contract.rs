//! The contract every [`BlobStore`] backend must pass, written against `&dyn BlobStore` only (no
//! paths, no backend internals), as Garage runs one `test_suite(db)` on every KV adapter. A new
//! backend is done when [`run_all`] passes on it: call it from a `#[tokio::test]` with a
//! multi-threaded runtime on a fresh, empty store.
//!
//! Failures panic with the case's name, like any test assertion.

use super::{write_bytes, BlobStore, BlobWriter, ByteStream, PartDigests, PartInfo, PartStore};
use crate::types::Sha256;
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::Digest;

/// Test bytes: `len` bytes from a cheap generator seeded by `seed`.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha_of(bytes: &[u8]) -> Sha256 {
    Sha256(sha2::Sha256::digest(bytes).into())
}

/// Writes `data` in chunks of `chunk` bytes (several chunks per call), finishes and commits.
fn store_bytes(store: &dyn BlobStore, data: &[u8], chunk: usize) -> Sha256 {
    let mut w = store.writer().expect("writer");
    let chunks: Vec<Bytes> = data
        .chunks(chunk.max(1))
        .map(Bytes::copy_from_slice)
        .collect();
    // Feed in two calls, so a backend that keeps state between calls is exercised.
    let half = chunks.len() / 2;
    w.write(&mut chunks[..half].iter().cloned()).expect("write");
    w.write(&mut chunks[half..].iter().cloned()).expect("write");
    let staged = w.finish().expect("finish");
    assert_eq!(staged.size(), data.len() as u64, "staged size");
    let sha = staged.sha();
    assert_eq!(sha, sha_of(data), "staged sha256");
    staged.commit().expect("commit");
    sha
}

async fn collect(stream: ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stream = stream;
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.expect("stream chunk"));
    }
    out
}

async fn read_all(store: &dyn BlobStore, sha: &Sha256) -> Vec<u8> {
    let stream = store
        .read(sha, 0, u64::MAX)
        .expect("read")
        .expect("blob exists");
    collect(stream).await
}

fn listed(store: &dyn BlobStore, sha: &Sha256) -> Option<usize> {
    let m = store.maintenance()?;
    Some(
        m.list()
            .expect("list")
            .iter()
            .filter(|b| b.sha == *sha)
            .count(),
    )
}

/// Written bytes become visible under their hash only once committed.
pub async fn write_finish_commit(store: &dyn BlobStore) {
    let data = pattern(100_000, 1);
    let mut w = store.writer().expect("writer");
    write_bytes(w.as_mut(), Bytes::copy_from_slice(&data[..10])).expect("write");
    write_bytes(w.as_mut(), Bytes::copy_from_slice(&data[10..])).expect("write");
    let staged = w.finish().expect("finish");
    let sha = staged.sha();
    assert_eq!(sha, sha_of(&data));
    assert_eq!(staged.size(), data.len() as u64);
    assert!(
        store.open(&sha).expect("open").is_none(),
        "visible before commit"
    );
    staged.commit().expect("commit");
    let h = store
        .open(&sha)
        .expect("open")
        .expect("visible after commit");
    assert_eq!(h.len(), data.len() as u64);
    assert_eq!(read_all(store, &sha).await, data);
    assert_eq!(listed(store, &sha).unwrap_or(1), 1, "listed once");
}

/// A writer dropped before finish leaves nothing behind.
pub async fn drop_writer_leaves_nothing(store: &dyn BlobStore) {
    let data = pattern(70_000, 2);
    let mut w = store.writer().expect("writer");
    write_bytes(w.as_mut(), Bytes::from(data.clone())).expect("write");
    drop(w);
    assert!(store.open(&sha_of(&data)).expect("open").is_none());
    assert_eq!(listed(store, &sha_of(&data)).unwrap_or(0), 0);
}

/// A staged blob dropped without commit leaves nothing behind.
pub async fn drop_staged_leaves_nothing(store: &dyn BlobStore) {
    let data = pattern(5000, 3);
    let mut w = store.writer().expect("writer");
    write_bytes(w.as_mut(), Bytes::from(data.clone())).expect("write");
    let staged = w.finish().expect("finish");
    drop(staged);
    assert!(store.open(&sha_of(&data)).expect("open").is_none());
    assert_eq!(listed(store, &sha_of(&data)).unwrap_or(0), 0);
}

/// The same bytes committed twice are stored once and read back intact.
pub async fn dedup(store: &dyn BlobStore) {
    let data = pattern(12_345, 4);
    let a = store_bytes(store, &data, 1000);
    let b = store_bytes(store, &data, 4096);
    assert_eq!(a, b);
    assert_eq!(listed(store, &a).unwrap_or(1), 1, "stored once");
    assert_eq!(read_all(store, &a).await, data);
}

/// The empty blob: hash of nothing, length 0, every range empty.
pub async fn empty_blob(store: &dyn BlobStore) {
    let w = store.writer().expect("writer");
    let staged = w.finish().expect("finish");
    assert_eq!(staged.size(), 0);
    let sha = staged.sha();
    assert_eq!(sha, sha_of(b""));
    staged.commit().expect("commit");
    let mut h = store.open(&sha).expect("open").expect("exists");
    assert_eq!(h.len(), 0);
    let mut buf = [0u8; 4];
    assert_eq!(h.read_at(0, &mut buf).expect("read_at"), 0);
    for (from, len) in [(0, 0), (0, 1), (0, u64::MAX), (1, 1)] {
        let s = store.read(&sha, from, len).expect("read").expect("exists");
        assert!(collect(s).await.is_empty(), "range {from}+{len} of empty");
    }
}

/// Ranged streams at every boundary: first byte, second, last, the end, past the end, lengths
/// of 0, 1, exact, over-long; across the backend's read-chunk size (a few MiB).
pub async fn ranged_reads(store: &dyn BlobStore) {
    let n: u64 = (3 << 20) + 17;
    let data = pattern(n as usize, 5);
    let sha = store_bytes(store, &data, 256 * 1024);
    let froms = [0, 1, 2, (1 << 20) - 1, 1 << 20, n - 1, n, n + 1, u64::MAX];
    let lens = [0, 1, 2, 1 << 20, n - 1, n, n + 1, u64::MAX];
    for from in froms {
        for len in lens {
            let s = store.read(&sha, from, len).expect("read").expect("exists");
            let got = collect(s).await;
            let start = from.min(n) as usize;
            let end = from.saturating_add(len).min(n) as usize;
            assert_eq!(got.len(), end - start, "range {from}+{len}: length");
            assert!(got == data[start..end], "range {from}+{len}: bytes");
        }
    }
}

/// Blocking positional reads at the boundaries.
pub async fn read_at_boundaries(store: &dyn BlobStore) {
    let data = pattern(10_000, 6);
    let sha = store_bytes(store, &data, 999);
    let mut h = store.open(&sha).expect("open").expect("exists");
    let mut buf = vec![0u8; 20_000];
    for pos in [0u64, 1, 9_999, 10_000, 10_001, u64::MAX] {
        let got = h.read_at(pos, &mut buf).expect("read_at");
        let start = pos.min(10_000) as usize;
        assert_eq!(got, 10_000 - start, "read_at {pos}");
        assert!(buf[..got] == data[start..], "read_at {pos}: bytes");
    }
    let got = h.read_at(5, &mut buf[..3]).expect("read_at");
    assert_eq!(&buf[..got], &data[5..8]);
}

/// A blob that does not exist: `None`, and removing it is not an error.
pub async fn missing_blob(store: &dyn BlobStore) {
    let sha = sha_of(b"never stored in this store");
    assert!(store.open(&sha).expect("open").is_none());
    assert!(store.read(&sha, 0, 10).expect("read").is_none());
    store.remove(&sha).expect("removing a missing blob");
}

/// Removed blobs are gone; removing twice is fine.
pub async fn remove(store: &dyn BlobStore) {
    let data = pattern(3000, 7);
    let sha = store_bytes(store, &data, 3000);
    store.remove(&sha).expect("remove");
    assert!(store.open(&sha).expect("open").is_none());
    store.remove(&sha).expect("remove again");
    assert_eq!(listed(store, &sha).unwrap_or(0), 0);
}

/// Large blobs (past any parallel-hashing threshold), fed in uneven chunks, hash right.
pub async fn large_blob(store: &dyn BlobStore) {
    let data = pattern((9 << 20) + 4321, 8);
    let sha = store_bytes(store, &data, 70_001);
    assert_eq!(read_all(store, &sha).await, data);
}

/// Many writers committing the same bytes at once all succeed, and the blob is intact.
pub async fn concurrent_identical_commits(store: &dyn BlobStore) {
    let data = pattern(2 << 20, 9);
    let shas: Vec<Sha256> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let data = &data;
                s.spawn(move || store_bytes(store, data, 100_000 + i))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("writer thread"))
            .collect()
    });
    assert!(shas.iter().all(|s| *s == sha_of(&data)));
    assert_eq!(listed(store, &shas[0]).unwrap_or(1), 1, "stored once");
    assert_eq!(read_all(store, &shas[0]).await, data);
}

/// Two writers fed in turns (as two uploads in flight are) keep their bytes apart.
pub async fn interleaved_writers(store: &dyn BlobStore) {
    let a = pattern(300_000, 10);
    let b = pattern(200_000, 11);
    let mut wa: Box<dyn BlobWriter> = store.writer().expect("writer");
    let mut wb: Box<dyn BlobWriter> = store.writer().expect("writer");
    let (mut ca, mut cb) = (a.chunks(50_000), b.chunks(50_000));
    loop {
        let (x, y) = (ca.next(), cb.next());
        if x.is_none() && y.is_none() {
            break;
        }
        if let Some(x) = x {
            write_bytes(wa.as_mut(), Bytes::copy_from_slice(x)).expect("write a");
        }
        if let Some(y) = y {
            write_bytes(wb.as_mut(), Bytes::copy_from_slice(y)).expect("write b");
        }
    }
    let (sa, sb) = (wa.finish().expect("finish"), wb.finish().expect("finish"));
    assert_eq!((sa.sha(), sb.sha()), (sha_of(&a), sha_of(&b)));
    sb.commit().expect("commit");
    sa.commit().expect("commit");
    assert_eq!(read_all(store, &sha_of(&a)).await, a);
    assert_eq!(read_all(store, &sha_of(&b)).await, b);
}

/// Writes part `number` of `session` in one call.
fn put_part(parts: &dyn PartStore, session: &str, number: u32, data: &[u8]) -> PartInfo {
    let mut w = parts
        .part_writer(session, number, PartDigests::WithMd5)
        .expect("part writer");
    let chunks: Vec<Bytes> = data.chunks(65_536).map(Bytes::copy_from_slice).collect();
    w.write(&mut chunks.into_iter()).expect("write part");
    let info = w.finish().expect("finish part");
    assert_eq!(info.number, number);
    assert_eq!(info.size, data.len() as u64);
    assert_eq!(info.sha, sha_of(data), "part sha256");
    assert_eq!(info.md5, Some(md5_of(data)), "part md5 (S3's ETag)");
    info
}

fn md5_of(data: &[u8]) -> super::Md5 {
    use md5::Digest;
    super::Md5(md5::Md5::digest(data).into())
}

/// Parts of one number finished at the same time (two retries racing): exactly one stays, whole,
/// and it is one of the two.
pub async fn parts_same_number_race(store: &dyn BlobStore) {
    let Some(parts) = store.parts() else {
        return;
    };
    for round in 0..20u64 {
        let (a, b) = (pattern(70_000, round), pattern(50_000, round + 100));
        let mut wa = parts
            .part_writer("session-race", 1, PartDigests::WithMd5)
            .expect("part writer");
        let mut wb = parts
            .part_writer("session-race", 1, PartDigests::WithMd5)
            .expect("part writer");
        wa.write(&mut std::iter::once(Bytes::from(a.clone())))
            .expect("write");
        wb.write(&mut std::iter::once(Bytes::from(b.clone())))
            .expect("write");
        std::thread::scope(|s| {
            let ta = s.spawn(move || wa.finish().expect("finish a"));
            let tb = s.spawn(move || wb.finish().expect("finish b"));
            let _ = (ta.join(), tb.join());
        });
        let listed = parts.list_parts("session-race").expect("list");
        assert_eq!(listed.len(), 1, "round {round}: {listed:?}");
        let p = &listed[0];
        assert!(
            (p.sha, p.size) == (sha_of(&a), a.len() as u64)
                || (p.sha, p.size) == (sha_of(&b), b.len() as u64),
            "round {round}: a part that is neither try"
        );
    }
    parts.drop_session("session-race").expect("drop");
}

/// Parts written out of order and replaced are listed by number, assemble into one blob in the
/// order asked for, and go with their session.
pub async fn parts_assemble(store: &dyn BlobStore) {
    let Some(parts) = store.parts() else {
        return;
    };
    let (p1, p2, p3) = (pattern(300_000, 20), pattern(5, 21), pattern(1 << 20, 22));
    put_part(parts, "session-a", 3, &p3);
    put_part(parts, "session-a", 1, &p1);
    put_part(parts, "session-a", 2, &pattern(77, 23));
    put_part(parts, "session-a", 2, &p2); // a retried part replaces the first try
    let listed: Vec<(u32, u64)> = parts
        .list_parts("session-a")
        .expect("list")
        .iter()
        .map(|p| (p.number, p.size))
        .collect();
    assert_eq!(listed, vec![(1, 300_000), (2, 5), (3, 1 << 20)]);
    let whole = [p1.as_slice(), &p2, &p3].concat();
    let staged = parts.assemble("session-a", &[1, 2, 3]).expect("assemble");
    assert_eq!(
        (staged.sha(), staged.size()),
        (sha_of(&whole), whole.len() as u64)
    );
    assert!(store.open(&sha_of(&whole)).expect("open").is_none());
    staged.commit().expect("commit");
    assert_eq!(read_all(store, &sha_of(&whole)).await, whole);
    // One part alone is a blob of its own bytes (local: staged by a link, not a copy), and
    // stays whole after its session goes.
    let single = parts
        .assemble("session-a", &[3])
        .expect("assemble one part");
    assert_eq!(
        (single.sha(), single.size()),
        (sha_of(&p3), p3.len() as u64)
    );
    single.commit().expect("commit one part");
    // Another session is untouched by this one.
    put_part(parts, "session-b", 1, &p2);
    parts.drop_session("session-a").expect("drop");
    assert!(parts.list_parts("session-a").expect("list").is_empty());
    assert_eq!(parts.list_parts("session-b").expect("list").len(), 1);
    parts.drop_session("session-a").expect("dropping twice");
    parts.drop_session("session-b").expect("drop");
    // The assembled blobs outlive the session.
    assert_eq!(read_all(store, &sha_of(&whole)).await, whole);
    assert_eq!(read_all(store, &sha_of(&p3)).await, p3);
}

/// Assembling a part that was never stored fails; hostile session names are refused; a part
/// writer dropped before finish stores nothing.
pub async fn parts_failures(store: &dyn BlobStore) {
    let Some(parts) = store.parts() else {
        return;
    };
    put_part(parts, "session-c", 1, b"one");
    assert!(
        parts.assemble("session-c", &[1, 2]).is_err(),
        "part 2 missing"
    );
    assert!(parts.assemble("never-started", &[1]).is_err());
    assert!(parts.list_parts("never-started").expect("list").is_empty());
    for bad in ["", "../x", "a/b", ".", "..", "a.b"] {
        assert!(
            parts.part_writer(bad, 1, PartDigests::WithMd5).is_err(),
            "session name {bad:?}"
        );
    }
    let mut w = parts
        .part_writer("session-c", 2, PartDigests::WithMd5)
        .expect("part writer");
    w.write(&mut std::iter::once(Bytes::from_static(b"two")))
        .expect("write");
    drop(w);
    let numbers: Vec<u32> = parts
        .list_parts("session-c")
        .expect("list")
        .iter()
        .map(|p| p.number)
        .collect();
    assert_eq!(numbers, vec![1]);
    parts.drop_session("session-c").expect("drop");
}

/// Runs every case on `store` (fresh and empty); returns the number of cases run (the part
/// cases only count when the store has parts).
pub async fn run_all(store: &dyn BlobStore) -> usize {
    write_finish_commit(store).await;
    drop_writer_leaves_nothing(store).await;
    drop_staged_leaves_nothing(store).await;
    dedup(store).await;
    empty_blob(store).await;
    ranged_reads(store).await;
    read_at_boundaries(store).await;
    missing_blob(store).await;
    remove(store).await;
    large_blob(store).await;
    concurrent_identical_commits(store).await;
    interleaved_writers(store).await;
    parts_assemble(store).await;
    parts_failures(store).await;
    parts_same_number_race(store).await;
    if store.parts().is_some() {
        15
    } else {
        12
    }
}
