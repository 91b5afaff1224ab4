//! The file indexes of the sled store, written in the same transaction as the record on every
//! write path: owner, instance (whose values hold the record's compact form, see `compact`),
//! directory, path, and the sort index (`files_sorted`), which holds one entry per
//! [`SortField`] so `find ... SORT size DESC` walks the first page instead of sorting the
//! instance.
//!
//! Sort keys are `instance ++ field tag ++ value ++ file id`: numbers as big-endian u64,
//! times as whole seconds (ArcQL compares their RFC 3339 text, which has second precision, so
//! files in the same second are ties and keep id order), names as their bytes and a 0 (names
//! never hold NUL, so a name sorts before every longer name it starts).

use super::{compact, owner_key, text_key, with_id, SledMeta, TxResult};
use crate::error::{Error, Result};
use crate::meta::{FileOrder, FileRecord, FileStore, Records, SortField};
use crate::types::{FileId, InstanceId};
use sled::transaction::TransactionalTree;

fn tag(field: SortField) -> u8 {
    match field {
        SortField::Size => b's',
        SortField::Created => b'c',
        SortField::Updated => b'u',
        SortField::Name => b'n',
    }
}

/// `instance ++ tag`: where one field's entries of an instance start.
fn sort_prefix(instance: InstanceId, field: SortField) -> Vec<u8> {
    let mut k = instance.to_bytes().to_vec();
    k.push(tag(field));
    k
}

/// `instance ++ tag ++ value`: the entries of `f`'s value of `field` (without the id).
fn sort_group(f: &FileRecord, field: SortField) -> Vec<u8> {
    let mut k = sort_prefix(f.instance, field);
    match field {
        SortField::Size => k.extend_from_slice(&f.size.to_be_bytes()),
        SortField::Created => k.extend_from_slice(&(f.created / 1000).to_be_bytes()),
        SortField::Updated => k.extend_from_slice(&(f.updated / 1000).to_be_bytes()),
        SortField::Name => {
            k.extend_from_slice(f.name.as_bytes());
            k.push(0);
        }
    }
    k
}

/// Every index entry of a file: (tree, key, value), trees numbered as in [`FileIndexTx`].
pub(super) fn entries(f: &FileRecord) -> Vec<(usize, Vec<u8>, Vec<u8>)> {
    let id = f.id.to_bytes();
    let mut out = vec![
        (0, with_id(owner_key(f.instance, &f.created_by), id), vec![]),
        (
            1,
            with_id(f.instance.to_bytes().to_vec(), id),
            compact::encode(f),
        ),
        (2, with_id(text_key(f.instance, &f.directory), id), vec![]),
        (3, with_id(text_key(f.instance, &f.path()), id), vec![]),
    ];
    for field in SortField::ALL {
        out.push((4, with_id(sort_group(f, field), id), vec![]));
    }
    out
}

/// The file index trees inside one transaction: owner, instance, directory, path, sorted.
pub(super) struct FileIndexTx<'a>(pub [&'a TransactionalTree; 5]);

impl FileIndexTx<'_> {
    /// Adds every index entry of `f`.
    pub fn add(&self, f: &FileRecord) -> TxResult<()> {
        for (t, k, v) in entries(f) {
            self.0[t].insert(k, v)?;
        }
        Ok(())
    }

    /// Removes every index entry of `f`.
    pub fn remove(&self, f: &FileRecord) -> TxResult<()> {
        for (t, k, _) in entries(f) {
            self.0[t].remove(k)?;
        }
        Ok(())
    }

    /// Moves the entries of `old` to those of `new` (the same file after a change).
    pub fn replace(&self, old: &FileRecord, new: &FileRecord) -> TxResult<()> {
        self.remove(old)?;
        self.add(new)
    }
}

impl SledMeta {
    /// The five file index trees, in [`FileIndexTx`]'s order.
    pub(super) fn file_index_trees(&self) -> [&sled::Tree; 5] {
        [
            &self.by_owner,
            &self.by_instance,
            &self.by_dir,
            &self.by_path,
            &self.files_sorted,
        ]
    }

    /// A file of `instance` by id, from its compact form in the instance index (the JSON
    /// record when that is missing or unreadable).
    pub(super) fn file_in(&self, instance: InstanceId, id: FileId) -> Result<Option<FileRecord>> {
        let key = with_id(instance.to_bytes().to_vec(), id.to_bytes());
        match self.by_instance.get(key)?.and_then(|v| compact::decode(&v)) {
            Some(f) => Ok(Some(f)),
            None => Ok(self.file(id)?.filter(|f| f.instance == instance)),
        }
    }

    /// See [`crate::meta::FileStore::scan_sorted`].
    pub(super) fn sorted_walk<'a>(
        &'a self,
        instance: InstanceId,
        order: FileOrder,
        from: Option<&FileRecord>,
    ) -> Records<'a, FileRecord> {
        let prefix = sort_prefix(instance, order.field);
        let from = from.map(|f| (sort_group(f, order.field), f.id));
        let ids: Box<dyn Iterator<Item = Result<[u8; 16]>> + Send + 'a> = if order.descending {
            Box::new(Descending::new(&self.files_sorted, prefix, from))
        } else {
            let start = match &from {
                // Strictly after the cursor's own key.
                Some((group, id)) => {
                    let mut k = with_id(group.clone(), id.to_bytes());
                    k.push(0);
                    k
                }
                None => prefix.clone(),
            };
            Box::new(
                self.files_sorted
                    .range(start..)
                    .keys()
                    .take_while(move |k| k.as_ref().map_or(true, |k| k.starts_with(&prefix)))
                    .map(|k| tail_id(&k?)),
            )
        };
        Box::new(ids.filter_map(move |id| {
            let id = match id {
                Ok(id) => FileId::from_bytes(id),
                Err(e) => return Some(Err(e)),
            };
            // An entry whose record is gone (a delete raced the walk) is skipped.
            self.file_in(instance, id).transpose()
        }))
    }

    /// Compares every file index with the records; with `repair`, rewrites what differs.
    pub(super) fn check_indexes(&self, repair: bool) -> Result<Vec<String>> {
        let trees = self.file_index_trees();
        const NAMES: [&str; 5] = ["owner", "instance", "directory", "path", "sort"];
        let mut found = Vec::new();
        // Every record's entries are there, with the right value.
        for v in self.files.iter().values() {
            let f: FileRecord = serde_json::from_slice(&v?)?;
            for (t, k, want) in entries(&f) {
                let have = trees[t].get(&k)?;
                if have.as_deref() != Some(want.as_slice()) {
                    let what = if have.is_some() {
                        "out of date"
                    } else {
                        "missing"
                    };
                    found.push(format!("{} index entry of file {} {what}", NAMES[t], f.id));
                    if repair {
                        trees[t].insert(k, want)?;
                    }
                }
            }
        }
        // Every entry belongs to a record that has it.
        for (t, tree) in trees.iter().enumerate() {
            for k in tree.iter().keys() {
                let k = k?;
                let id = tail_id(&k).ok().map(FileId::from_bytes);
                let current = match id {
                    Some(id) => self.file(id)?,
                    None => None,
                };
                let belongs = current.as_ref().is_some_and(|f| {
                    entries(f)
                        .iter()
                        .any(|(u, key, _)| *u == t && key.as_slice() == k.as_ref())
                });
                if !belongs {
                    match id {
                        Some(id) => {
                            found.push(format!("stale {} index entry of file {id}", NAMES[t]))
                        }
                        None => found.push(format!("malformed {} index entry", NAMES[t])),
                    }
                    if repair {
                        tree.remove(k)?;
                    }
                }
            }
        }
        if repair && !found.is_empty() {
            self.flush()?;
        }
        Ok(found)
    }
}

/// The file id every index key ends with.
fn tail_id(k: &[u8]) -> Result<[u8; 16]> {
    k.len()
        .checked_sub(16)
        .and_then(|at| <[u8; 16]>::try_from(&k[at..]).ok())
        .ok_or_else(|| Error::Internal("malformed file index key".into()))
}

/// A descending walk of one field's entries in which equal values still come in id order:
/// finds the largest value below the last group read (one seek from the end), then reads that
/// group forwards. Holds one group's iterator, never a whole group in memory.
struct Descending {
    tree: sled::Tree,
    /// Entries below this key are still to come.
    upper: Vec<u8>,
    prefix: Vec<u8>,
    /// The group being read and its iterator.
    group: Option<(Vec<u8>, sled::Iter)>,
    done: bool,
}

impl Descending {
    fn new(tree: &sled::Tree, prefix: Vec<u8>, from: Option<(Vec<u8>, FileId)>) -> Self {
        let mut upper = prefix.clone();
        // The tag byte is a letter: one more is still a byte, and past every entry of the field.
        if let Some(last) = upper.last_mut() {
            *last += 1;
        }
        let group = from.map(|(group, id)| {
            let mut start = with_id(group.clone(), id.to_bytes());
            start.push(0);
            let iter = tree.range(start..);
            upper.clone_from(&group);
            (group, iter)
        });
        Descending {
            tree: tree.clone(),
            upper,
            prefix,
            group,
            done: false,
        }
    }
}

impl Iterator for Descending {
    type Item = Result<[u8; 16]>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            if let Some((group, iter)) = &mut self.group {
                match iter.next() {
                    Some(Ok((k, _))) if k.starts_with(group) && k.len() == group.len() + 16 => {
                        return Some(tail_id(&k));
                    }
                    Some(Err(e)) => {
                        self.done = true;
                        return Some(Err(e.into()));
                    }
                    // Past the group: find the next one down.
                    _ => self.group = None,
                }
            }
            let last = self
                .tree
                .range(self.prefix.clone()..self.upper.clone())
                .next_back();
            match last {
                Some(Ok((k, _))) if k.len() >= self.prefix.len() + 16 => {
                    let group = k[..k.len() - 16].to_vec();
                    let iter = self.tree.range(group.clone()..);
                    self.upper.clone_from(&group);
                    self.group = Some((group, iter));
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e.into()));
                }
                _ => {
                    self.done = true;
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::contract::file;
    use crate::meta::{
        DirectoryStore, FileScope, MaintenanceStore, StoredBytes, UploadSessionStore,
    };
    use crate::service::query::arcql::{Direction, Query, SortKey};
    use crate::types::Sha256;
    use proptest::prelude::*;

    fn store() -> (tempfile::TempDir, SledMeta) {
        let dir = tempfile::tempdir().unwrap();
        let m = SledMeta::open(dir.path()).unwrap();
        (dir, m)
    }

    /// The ArcQL path of each indexed field.
    fn path(field: SortField) -> &'static str {
        match field {
            SortField::Size => "size",
            SortField::Created => "hypi.created",
            SortField::Updated => "hypi.updated",
            SortField::Name => "name",
        }
    }

    /// What the query engine's full sort gives: the files in id order, sorted stably by the
    /// ArcQL comparison of `field`.
    fn naive(mut files: Vec<FileRecord>, order: FileOrder) -> Vec<FileId> {
        let q = Query {
            filter: None,
            sort: vec![SortKey {
                path: path(order.field).into(),
                dir: if order.descending {
                    Direction::Desc
                } else {
                    Direction::Asc
                },
            }],
        };
        files.sort_by_key(|f| f.id);
        files.sort_by(|a, b| q.compare(a, b));
        files.into_iter().map(|f| f.id).collect()
    }

    fn walked(
        m: &SledMeta,
        inst: InstanceId,
        order: FileOrder,
        from: Option<&FileRecord>,
    ) -> Vec<FileId> {
        m.sorted_walk(inst, order, from)
            .map(|f| f.unwrap().id)
            .collect()
    }

    /// Every order from the index equals the naive sort, from the start and from every record;
    /// the instance scan's compact records equal the JSON ones; fsck finds nothing.
    fn check(m: &SledMeta, inst: InstanceId) {
        let files: Vec<FileRecord> = m
            .all_files()
            .map(|f| f.unwrap())
            .filter(|f| f.instance == inst)
            .collect();
        let scanned: Vec<FileRecord> = m
            .scan_files(inst, FileScope::All, None)
            .map(|f| f.unwrap())
            .collect();
        let mut by_id = files.clone();
        by_id.sort_by_key(|f| f.id);
        assert_eq!(scanned, by_id, "compact records equal the records");
        for field in SortField::ALL {
            for descending in [false, true] {
                let order = FileOrder { field, descending };
                let want = naive(files.clone(), order);
                assert_eq!(walked(m, inst, order, None), want, "{order:?}");
                for (i, id) in want.iter().enumerate() {
                    let from = m.file(*id).unwrap().unwrap();
                    assert_eq!(
                        walked(m, inst, order, Some(&from)),
                        want[i + 1..],
                        "{order:?} after {i}"
                    );
                }
            }
        }
        assert_eq!(m.check_file_indexes(false).unwrap(), Vec::<String>::new());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert { size: u64, name: u8, created: u64 },
        Trash(usize),
        Move { at: usize, name: u8, dir: u8 },
        Reupload { at: usize, size: u64 },
        Delete(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u64..4, 0u8..4, 0u64..3).prop_map(|(size, name, created)| Op::Insert { size, name, created }),
            1 => any::<usize>().prop_map(Op::Trash),
            1 => (any::<usize>(), 0u8..4, 0u8..2).prop_map(|(at, name, dir)| Op::Move { at, name, dir }),
            1 => (any::<usize>(), 0u64..4).prop_map(|(at, size)| Op::Reupload { at, size }),
            1 => any::<usize>().prop_map(Op::Delete),
        ]
    }

    fn apply(m: &SledMeta, inst: InstanceId, op: &Op) {
        let mut files: Vec<FileRecord> = m
            .scan_files(inst, FileScope::All, None)
            .map(|f| f.unwrap())
            .collect();
        let pick = |at: usize, files: &mut Vec<FileRecord>| {
            (!files.is_empty()).then(|| files.swap_remove(at % files.len()))
        };
        // Names that share prefixes and bytes above ASCII, so name order is tested.
        let names = ["a", "ab", "b", "é"];
        match op {
            Op::Insert {
                size,
                name,
                created,
            } => {
                let mut f = file(inst, "o", "/", names[*name as usize], 1);
                f.size = *size;
                // Seconds apart and within one second, so second-precision ties are tested.
                f.created = created * 700;
                f.updated = f.created;
                m.insert_files(&[(f, None)]).unwrap();
            }
            Op::Trash(at) => {
                if let Some(mut f) = pick(*at, &mut files) {
                    f.trashed = if f.trashed.is_some() { None } else { Some(5) };
                    f.updated += 1500;
                    m.update_file(&f).unwrap();
                }
            }
            Op::Move { at, name, dir } => {
                if let Some(old) = pick(*at, &mut files) {
                    let mut new = old.clone();
                    new.name = format!("{}{}", names[*name as usize], old.id);
                    new.directory = ["/", "/x"][*dir as usize].into();
                    m.replace_files(&[(old, new)]).unwrap();
                }
            }
            Op::Reupload { at, size } => {
                if let Some(f) = pick(*at, &mut files) {
                    let bytes = StoredBytes {
                        sha: Sha256([2; 32]),
                        size: *size,
                        mime: "text/plain".into(),
                        width: None,
                        height: None,
                        parts: None,
                    };
                    m.replace_content(f.id, &bytes, false, f.updated + 2000)
                        .unwrap();
                }
            }
            Op::Delete(at) => {
                if let Some(f) = pick(*at, &mut files) {
                    m.delete_file(f.id).unwrap();
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Under any sequence of writes, the index walks equal the engine's naive sort and
        /// another instance's files never show up.
        #[test]
        fn index_walks_equal_a_naive_sort(ops in proptest::collection::vec(op(), 1..24)) {
            let (_dir, m) = store();
            let inst = InstanceId::new();
            let other = InstanceId::new();
            m.insert_files(&[(file(other, "o", "/", "a", 1), None)]).unwrap();
            for op in &ops {
                apply(&m, inst, op);
            }
            check(&m, inst);
        }
    }

    #[test]
    fn a_confirmed_session_is_in_the_indexes() {
        use crate::meta::contract::{session, stored};
        use crate::meta::{FileExtras, SessionKind};
        let (_dir, m) = store();
        let inst = InstanceId::new();
        let s = session(inst, "o", SessionKind::PresignedPut, u64::MAX);
        m.create_session(&s, 10).unwrap();
        m.complete_session(s.id, &stored(4), u64::MAX).unwrap();
        let mut f = file(inst, "o", "/d", "a.txt", 4);
        f.size = 7;
        m.confirm_session(s.id, &f, None, &FileExtras::default())
            .unwrap();
        check(&m, inst);
        let order = FileOrder {
            field: SortField::Size,
            descending: true,
        };
        assert_eq!(walked(&m, inst, order, None), [f.id]);
    }

    /// Damage of every kind is found and repaired; a store of layout 2 (no sort index,
    /// empty instance entries) gets its indexes on open.
    #[test]
    fn fsck_finds_and_repairs_drift_and_open_migrates_an_older_store() {
        let dir = tempfile::tempdir().unwrap();
        let inst = InstanceId::new();
        let mut files = Vec::new();
        for (i, size) in [3u64, 1, 3, 2].into_iter().enumerate() {
            let mut f = file(inst, "o", "/", &format!("f{i}"), 1);
            f.size = size;
            files.push(f);
        }
        {
            let m = SledMeta::open(dir.path()).unwrap();
            m.insert_files(&files.iter().map(|f| (f.clone(), None)).collect::<Vec<_>>())
                .unwrap();
            check(&m, inst);
            // Damage: a missing sort entry, a stale one, an out-of-date compact record.
            let key = with_id(
                sort_group(&files[0], SortField::Size),
                files[0].id.to_bytes(),
            );
            m.files_sorted.remove(&key).unwrap();
            let mut gone = files[1].clone();
            gone.id = FileId::new();
            m.files_sorted
                .insert(
                    with_id(sort_group(&gone, SortField::Name), gone.id.to_bytes()),
                    &[],
                )
                .unwrap();
            let mut changed = files[2].clone();
            changed.size = 99;
            m.by_instance
                .insert(
                    with_id(inst.to_bytes().to_vec(), changed.id.to_bytes()),
                    compact::encode(&changed),
                )
                .unwrap();
            let found = m.check_file_indexes(false).unwrap();
            assert_eq!(found.len(), 3, "{found:?}");
            assert_eq!(m.check_file_indexes(true).unwrap().len(), 3);
            check(&m, inst);
            // Back to layout 2: what an older depot left.
            m.files_sorted.clear().unwrap();
            for f in &files {
                m.by_instance
                    .insert(with_id(inst.to_bytes().to_vec(), f.id.to_bytes()), &[])
                    .unwrap();
            }
            m.schema
                .insert(super::super::SCHEMA_KEY, &2u64.to_be_bytes())
                .unwrap();
            // Old entries still read (through the JSON records) before the migration.
            assert_eq!(m.scan_files(inst, FileScope::All, None).count(), 4);
            m.flush().unwrap();
        }
        let m = SledMeta::open(dir.path()).unwrap();
        check(&m, inst);
        let order = FileOrder {
            field: SortField::Size,
            descending: true,
        };
        let sizes: Vec<u64> = m
            .sorted_walk(inst, order, None)
            .map(|f| f.unwrap().size)
            .collect();
        assert_eq!(sizes, [3, 3, 2, 1]);
    }
}
