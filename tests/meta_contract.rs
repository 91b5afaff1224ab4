//! The metadata contract suite (src/meta/contract.rs) on the sled backend, each case on a fresh
//! store in its own temp dir.

use depot::meta::{contract, SledMeta};

#[test]
fn sled_meets_the_metadata_contract() {
    let mut dirs = Vec::new();
    let ran = contract::run_all(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SledMeta::open(dir.path()).expect("open sled");
        dirs.push(dir);
        store
    });
    assert_eq!(ran, contract::cases().len());
    assert!(ran >= 16, "every case ran ({ran})");
}
