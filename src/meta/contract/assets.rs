//! Contract cases of the asset flows' session operations: a failure recorded on a session,
//! and a re-upload replacing a file's content with its blob references moved atomically.

use super::{file, inst, session, stored};
use crate::meta::{ImageRecord, MetaStore, SessionKind, StoredBytes};
use crate::types::{FileId, SessionId};

/// An error is recorded on a session (and cleared) without changing its state; an unknown
/// session is not found.
pub fn session_error_is_recorded(m: &dyn MetaStore) {
    let i = inst(m, "a.test");
    let s = session(i, "alice", SessionKind::AssetPost, 100);
    m.create_session(&s, 10).unwrap();
    m.set_session_error(s.id, Some("too big")).unwrap();
    let got = m.session(s.id).unwrap().unwrap();
    assert_eq!(got.error.as_deref(), Some("too big"));
    assert_eq!(got.state, s.state);
    m.set_session_error(s.id, None).unwrap();
    assert_eq!(m.session(s.id).unwrap().unwrap().error, None);
    assert!(m.set_session_error(SessionId::new(), Some("x")).is_err());
}

/// A re-upload keeps the record's identity and place, takes the new content, moves one blob
/// reference from the old content to the new, follows with the image record, and refuses
/// (None) a trashed or missing file.
pub fn replace_content_moves_references(m: &dyn MetaStore) {
    let i = inst(m, "a.test");
    let a = file(i, "alice", "/d", "a.txt", 1);
    let b = file(i, "alice", "/d", "b.txt", 1);
    m.insert_files(&[(a.clone(), None), (b.clone(), None)])
        .unwrap();
    assert_eq!(m.blob_refs(&a.sha256).unwrap(), 2);
    let mut png = stored(2);
    png.mime = "image/png".into();
    png.width = Some(3);
    png.height = Some(2);
    let (new, old, left) = m.replace_content(a.id, &png, true, 50).unwrap().unwrap();
    assert_eq!((old.sha256, left), (a.sha256, 1));
    assert_eq!(
        (new.id, &new.name, &new.directory),
        (a.id, &a.name, &a.directory)
    );
    assert_eq!((new.sha256, new.updated, new.width), (png.sha, 50, Some(3)));
    assert_eq!(m.file(a.id).unwrap().unwrap(), new);
    assert_eq!(m.blob_refs(&png.sha).unwrap(), 1);
    assert_eq!(m.blob_refs(&a.sha256).unwrap(), 1);
    let img: ImageRecord = m.image(a.id).unwrap().unwrap();
    assert_eq!((img.width, img.height), (3, 2));
    // Back to text: the image record goes; the last reference on the PNG goes with it.
    let text: StoredBytes = stored(1);
    let (_, _, left) = m.replace_content(a.id, &text, false, 60).unwrap().unwrap();
    assert_eq!(left, 0);
    assert_eq!(m.blob_refs(&png.sha).unwrap(), 0);
    assert_eq!(m.blob_refs(&a.sha256).unwrap(), 2);
    assert!(m.image(a.id).unwrap().is_none());
    // Missing or trashed: nothing changes.
    assert!(m
        .replace_content(FileId::new(), &png, false, 1)
        .unwrap()
        .is_none());
    let mut trashed = b.clone();
    trashed.trashed = Some(5);
    m.update_file(&trashed).unwrap();
    assert!(m.replace_content(b.id, &png, false, 1).unwrap().is_none());
    assert_eq!(m.blob_refs(&png.sha).unwrap(), 0);
}

/// A deferred size is set once: setting it again to the same value is a no-op, to another is
/// `Conflict`, and an unknown session is not found.
pub fn session_size_is_set_once(m: &dyn MetaStore) {
    let i = inst(m, "a.test");
    let mut s = session(i, "alice", SessionKind::Tus, 100);
    s.size = None;
    m.create_session(&s, 10).unwrap();
    let got = m.set_session_size(s.id, 42).unwrap();
    assert_eq!(got.size, Some(42));
    assert_eq!(m.session(s.id).unwrap().unwrap().size, Some(42));
    assert_eq!(m.set_session_size(s.id, 42).unwrap().size, Some(42));
    assert!(matches!(
        m.set_session_size(s.id, 43),
        Err(crate::error::Error::Conflict(_))
    ));
    assert_eq!(m.session(s.id).unwrap().unwrap().size, Some(42));
    assert!(matches!(
        m.set_session_size(SessionId::new(), 1),
        Err(crate::error::Error::NotFound(_))
    ));
}
