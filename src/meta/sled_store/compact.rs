//! The compact binary form of a [`FileRecord`], kept as the value of the instance index so a
//! scan over an instance reads one sequential tree and decodes a few fixed-width fields and
//! length-prefixed strings instead of looking every record up and parsing its JSON (profiled:
//! the lookup and the JSON parse were most of a filtered scan's time).
//!
//! Layout (all integers big-endian): version byte; id, instance (16 bytes each); created,
//! updated, size (u64); sha256 (32 bytes); a flag byte saying which optional fields follow;
//! trashed (u64), width, height (u32) when flagged; then the strings created_by, name,
//! directory, mime and (when flagged) extension, each as a u32 length and its UTF-8 bytes.
//! The JSON record in `files` stays the source of truth: fsck compares the two.

use crate::meta::FileRecord;
use crate::types::{AccountId, FileId, InstanceId, Sha256};

const VERSION: u8 = 1;

const TRASHED: u8 = 1;
const WIDTH: u8 = 1 << 1;
const HEIGHT: u8 = 1 << 2;
const EXTENSION: u8 = 1 << 3;
const STARED: u8 = 1 << 4;
const STARED_TRUE: u8 = 1 << 5;
const SHARABLE: u8 = 1 << 6;
const SHARABLE_TRUE: u8 = 1 << 7;

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Names, paths and accounts are far below 4 GiB (the request limits bound them).
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Encodes `f`.
pub(super) fn encode(f: &FileRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        128 + f.created_by.0.len() + f.name.len() + f.directory.len() + f.mime.len(),
    );
    out.push(VERSION);
    out.extend_from_slice(&f.id.to_bytes());
    out.extend_from_slice(&f.instance.to_bytes());
    out.extend_from_slice(&f.created.to_be_bytes());
    out.extend_from_slice(&f.updated.to_be_bytes());
    out.extend_from_slice(&f.size.to_be_bytes());
    out.extend_from_slice(&f.sha256.0);
    let mut flags = 0u8;
    let mut bit = |on: bool, b: u8| {
        if on {
            flags |= b;
        }
    };
    bit(f.trashed.is_some(), TRASHED);
    bit(f.width.is_some(), WIDTH);
    bit(f.height.is_some(), HEIGHT);
    bit(f.extension.is_some(), EXTENSION);
    bit(f.is_stared.is_some(), STARED);
    bit(f.is_stared == Some(true), STARED_TRUE);
    bit(f.is_sharable.is_some(), SHARABLE);
    bit(f.is_sharable == Some(true), SHARABLE_TRUE);
    out.push(flags);
    if let Some(t) = f.trashed {
        out.extend_from_slice(&t.to_be_bytes());
    }
    if let Some(w) = f.width {
        out.extend_from_slice(&w.to_be_bytes());
    }
    if let Some(h) = f.height {
        out.extend_from_slice(&h.to_be_bytes());
    }
    put_str(&mut out, &f.created_by.0);
    put_str(&mut out, &f.name);
    put_str(&mut out, &f.directory);
    put_str(&mut out, &f.mime);
    if let Some(e) = &f.extension {
        put_str(&mut out, e);
    }
    out
}

/// A cursor over an encoded record; every read checks the length.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_at_checked(N)?;
        self.0 = rest;
        head.try_into().ok()
    }

    fn u64(&mut self) -> Option<u64> {
        self.bytes().map(u64::from_be_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.bytes().map(u32::from_be_bytes)
    }

    fn string(&mut self) -> Option<String> {
        let len = self.u32()? as usize;
        let (head, rest) = self.0.split_at_checked(len)?;
        self.0 = rest;
        String::from_utf8(head.to_vec()).ok()
    }
}

/// Where the size sits in an encoded record: after the version byte, id, instance, created and
/// updated.
const SIZE_AT: usize = 1 + 16 + 16 + 8 + 8;

/// The size field of an encoded record, read without decoding the rest (a scan filtering on
/// size skips most records this way, without their string allocations); `None` where
/// [`decode`] would refuse the version or the record is too short to hold it.
pub(super) fn size_of(v: &[u8]) -> Option<u64> {
    if v.first() != Some(&VERSION) {
        return None;
    }
    let b = v.get(SIZE_AT..SIZE_AT + 8)?;
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

/// Decodes what [`encode`] wrote; `None` for anything else (an empty value of an older layout,
/// a damaged one): the caller reads the JSON record instead.
pub(super) fn decode(v: &[u8]) -> Option<FileRecord> {
    let mut r = Reader(v);
    if r.bytes::<1>()? != [VERSION] {
        return None;
    }
    let id = FileId::from_bytes(r.bytes()?);
    let instance = InstanceId::from_bytes(r.bytes()?);
    let created = r.u64()?;
    let updated = r.u64()?;
    let size = r.u64()?;
    let sha256 = Sha256(r.bytes()?);
    let [flags] = r.bytes::<1>()?;
    let has = |b: u8| flags & b != 0;
    let trashed = if has(TRASHED) { Some(r.u64()?) } else { None };
    let width = if has(WIDTH) { Some(r.u32()?) } else { None };
    let height = if has(HEIGHT) { Some(r.u32()?) } else { None };
    let created_by = AccountId(r.string()?);
    let name = r.string()?;
    let directory = r.string()?;
    let mime = r.string()?;
    let extension = if has(EXTENSION) {
        Some(r.string()?)
    } else {
        None
    };
    if !r.0.is_empty() {
        return None;
    }
    Some(FileRecord {
        id,
        instance,
        created_by,
        created,
        updated,
        trashed,
        name,
        directory,
        extension,
        mime,
        size,
        sha256,
        width,
        height,
        is_stared: has(STARED).then_some(has(STARED_TRUE)),
        is_sharable: has(SHARABLE).then_some(has(SHARABLE_TRUE)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_field_and_refuses_damage() {
        let mut f = crate::meta::contract::file(InstanceId::new(), "alice", "/a b", "ü.txt", 42);
        assert_eq!(decode(&encode(&f)), Some(f.clone()));
        f.size = 4_990_123;
        assert_eq!(size_of(&encode(&f)), Some(4_990_123));
        f.trashed = Some(7);
        f.width = Some(640);
        f.height = Some(480);
        f.extension = None;
        f.is_stared = Some(false);
        f.is_sharable = Some(true);
        assert_eq!(decode(&encode(&f)), Some(f.clone()));
        f.is_stared = Some(true);
        f.is_sharable = None;
        let bytes = encode(&f);
        assert_eq!(decode(&bytes), Some(f));
        // Truncated, extended, empty or of another version: refused, never a panic.
        for n in 0..bytes.len() {
            assert_eq!(decode(&bytes[..n]), None, "{n}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer), None);
        assert_eq!(size_of(&bytes[..SIZE_AT + 7]), None);
        let mut other = bytes;
        other[0] = 9;
        assert_eq!(decode(&other), None);
        assert_eq!(size_of(&other), None);
    }
}
