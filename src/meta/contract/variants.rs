//! Contract cases for [`crate::meta::VariantStore`].

use crate::meta::{MetaStore, VariantKey, VariantRecord};
use crate::types::Sha256;

fn variant(source: u8, params: &str, blob: u8) -> VariantRecord {
    let source = Sha256([source; 32]);
    VariantRecord {
        key: VariantKey::new(&source, params),
        source,
        sha: Sha256([blob; 32]),
        size: 100 + u64::from(blob),
        mime: "image/webp".into(),
        width: 320,
        height: 240,
        created: 1,
        charged_to: None,
    }
}

/// A variant counts one reference on its blob, once per key whoever records it; it is found by
/// key and by source; removing a source's variants drops exactly their references.
pub fn variants_hold_references_and_go_with_their_source(m: &dyn MetaStore) {
    let a = variant(1, "w=320,format=webp", 11);
    assert_eq!(m.variant(&a.key).unwrap(), None);
    assert_eq!(m.put_variant(&a).unwrap(), a);
    assert_eq!(m.blob_refs(&a.sha).unwrap(), 1);
    // A second writer of the same key (another node, a lost race) gets the first record and
    // adds no reference.
    let mut again = a.clone();
    again.sha = Sha256([12; 32]);
    assert_eq!(m.put_variant(&again).unwrap(), a);
    assert_eq!(m.blob_refs(&a.sha).unwrap(), 1);
    assert_eq!(m.blob_refs(&again.sha).unwrap(), 0);
    assert_eq!(m.variant(&a.key).unwrap(), Some(a.clone()));

    // Two variants of one source sharing a blob (equal output), one of another source.
    let b = variant(1, "w=640,format=webp", 11);
    let other = variant(2, "w=320,format=webp", 13);
    m.put_variant(&b).unwrap();
    m.put_variant(&other).unwrap();
    assert_eq!(m.blob_refs(&a.sha).unwrap(), 2);
    let of1 = m.variants_of(&a.source).unwrap();
    assert_eq!(of1.len(), 2);
    assert!(of1.contains(&a) && of1.contains(&b));
    let refs = m.blob_references(&a.sha).unwrap();
    assert_eq!((refs.recorded, refs.actual), (2, 2));
    assert_eq!(m.all_variants().count(), 3);

    let gone = m.delete_variants_of(&a.source).unwrap();
    assert_eq!(gone.len(), 2);
    assert_eq!(gone.iter().filter(|(_, left)| *left == 0).count(), 1);
    assert!(gone.iter().all(|(v, _)| v.sha == a.sha));
    assert_eq!(m.blob_refs(&a.sha).unwrap(), 0);
    assert_eq!(m.variant(&a.key).unwrap(), None);
    assert!(m.variants_of(&a.source).unwrap().is_empty());
    assert!(m.delete_variants_of(&a.source).unwrap().is_empty());
    // The other source's variant is untouched.
    assert_eq!(m.variant(&other.key).unwrap(), Some(other.clone()));
    assert_eq!(m.blob_refs(&other.sha).unwrap(), 1);
    let all: Vec<_> = m.all_variants().map(|v| v.unwrap()).collect();
    assert_eq!(all, vec![other]);
}
