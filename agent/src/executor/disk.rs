//! Sandbox disk use: a walk that never follows symlinks.

use std::path::{Path, PathBuf};

/// Bytes used under `root`: for every file, directory and symlink (never
/// followed), the larger of its apparent size and its allocated blocks, so
/// that neither sparse files nor many small files hide their footprint.
/// Entries that vanish during the walk are skipped.
pub(crate) fn usage(root: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack: Vec<PathBuf> = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            // `DirEntry::metadata` does not traverse symlinks.
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            total = total.saturating_add(footprint(&meta));
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    total
}

#[cfg(unix)]
fn footprint(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.len().max(meta.blocks().saturating_mul(512))
}

#[cfg(not(unix))]
fn footprint(meta: &std::fs::Metadata) -> u64 {
    meta.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_files_and_never_follows_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("sandbox");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f"), vec![1u8; 100_000]).unwrap();
        let outside = dir.path().join("big");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("g"), vec![1u8; 10_000_000]).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(&outside, root.join("out")).unwrap();
        let used = usage(&root);
        assert!((100_000..1_000_000).contains(&used), "{used}");
        assert_eq!(usage(&dir.path().join("missing")), 0);
    }
}
