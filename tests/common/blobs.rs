//! What the store left on disk: one walker for blob files, temp files and every path.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Every file and directory under `root`, recursively, as full paths (sorted). A missing
/// `root` has none.
pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Every path in a data dir, relative to it.
pub fn data_paths(data: &Path) -> Vec<PathBuf> {
    walk(data)
        .into_iter()
        .filter_map(|p| p.strip_prefix(data).ok().map(Path::to_path_buf))
        .collect()
}

/// The blob files in a data dir's content-addressed store.
pub fn blob_files(data: &Path) -> Vec<PathBuf> {
    walk(&data.join("blobs").join("sha256"))
        .into_iter()
        .filter(|p| !p.is_dir())
        .collect()
}

/// The blob files in the data dir, by name (their SHA-256).
pub fn blob_names(data: &Path) -> BTreeSet<String> {
    blob_files(data)
        .iter()
        .filter_map(|p| p.file_name())
        .map(|n| n.to_string_lossy().to_string())
        .collect()
}

/// Temp files in a data dir's temp dir.
pub fn temp_files(data: &Path) -> usize {
    std::fs::read_dir(data.join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0)
}
