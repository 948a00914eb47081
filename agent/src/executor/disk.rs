//! Sandbox disk use: a walk that never follows symlinks.

use std::path::Path;

use walkdir::WalkDir;

/// Bytes used under `root`: for every file, directory and symlink (never
/// followed), the larger of its apparent size and its allocated blocks, so
/// that neither sparse files nor many small files hide their footprint.
/// Entries that vanish during the walk, or cannot be read, are skipped.
pub(crate) fn usage(root: &Path) -> u64 {
    WalkDir::new(root)
        .min_depth(1) // the entries under `root`, not `root` itself
        .follow_links(false) // a guest's symlink must not count (or loop) outside its sandbox
        .into_iter()
        .filter_map(Result::ok)
        // Without `follow_links`, `DirEntry::metadata` does not traverse symlinks.
        .filter_map(|entry| entry.metadata().ok())
        .fold(0u64, |total, meta| total.saturating_add(footprint(&meta)))
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

    #[cfg(unix)]
    #[test]
    fn a_symlink_loop_ends_the_walk() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("sandbox");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::write(root.join("a/f"), vec![1u8; 1000]).unwrap();
        std::os::unix::fs::symlink(&root, root.join("a/loop")).unwrap();
        let used = usage(&root);
        assert!((1000..100_000).contains(&used), "{used}");
    }
}
