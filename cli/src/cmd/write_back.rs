//! `tessera run --dir` in local mode: when the task ends, what the guest left in its sandbox is
//! written back to the host directory it was copied from, so the host sees the guest's writes
//! as with `wasmtime run --dir HOST::/` (at the end rather than as they happen: the guest
//! still works on its own copy, and a guest can never reach the host's files directly).
//!
//! New and changed regular files are written, directories created, and files that were copied
//! in but are gone from the sandbox removed. Symlinks the guest made are not followed or
//! copied (they could name anything on the host): each is reported and skipped.

use anyhow::Context;
use std::collections::BTreeSet;
use std::path::Path;

/// What a write-back changed on the host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Files created or changed.
    pub written: usize,
    /// Files removed (copied in, deleted by the guest).
    pub removed: usize,
    /// Symlinks and special files left out.
    pub skipped: usize,
}

/// Writes `sandbox`'s files back to `host`; `copied_in` are the sandbox-relative paths that
/// were copied from `host` before the task started.
pub fn write_back(sandbox: &Path, host: &Path, copied_in: &[String]) -> anyhow::Result<Written> {
    let mut out = Written::default();
    let mut present = BTreeSet::new();
    walk(sandbox, sandbox, host, &mut present, &mut out)
        .with_context(|| format!("writing the sandbox back to --dir {}", host.display()))?;
    for rel in copied_in {
        if !present.contains(rel) {
            let path = host.join(rel);
            match std::fs::remove_file(&path) {
                Ok(()) => out.removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
            }
        }
    }
    Ok(out)
}

fn walk(
    root: &Path,
    dir: &Path,
    host: &Path,
    present: &mut BTreeSet<String>,
    out: &mut Written,
) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let rel = path.strip_prefix(root)?;
        let target = host.join(rel);
        let ty = entry.file_type()?;
        if ty.is_dir() {
            std::fs::create_dir_all(&target)
                .with_context(|| format!("creating {}", target.display()))?;
            walk(root, &path, host, present, out)?;
        } else if ty.is_file() {
            present.insert(rel.to_string_lossy().into_owned());
            let bytes = std::fs::read(&path)?;
            if std::fs::read(&target).ok().as_deref() != Some(bytes.as_slice()) {
                std::fs::write(&target, &bytes)
                    .with_context(|| format!("writing {}", target.display()))?;
                out.written += 1;
            }
        } else {
            eprintln!(
                "tessera: --dir: not writing back {} (a symlink or special file the task made)",
                rel.display()
            );
            out.skipped += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_changed_and_deleted_files_reach_the_host_symlinks_do_not() {
        let sandbox = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        let (s, h) = (sandbox.path(), host.path());
        for p in [s, h] {
            std::fs::write(p.join("same.txt"), "same").unwrap();
            std::fs::write(p.join("gone.txt"), "x").unwrap();
        }
        std::fs::remove_file(s.join("gone.txt")).unwrap();
        std::fs::write(h.join("changed.txt"), "old").unwrap();
        std::fs::write(s.join("changed.txt"), "new").unwrap();
        std::fs::create_dir_all(s.join("sub/dir")).unwrap();
        std::fs::write(s.join("sub/dir/new.txt"), "nested").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", s.join("link")).unwrap();
        let copied: Vec<String> = ["same.txt", "gone.txt", "changed.txt"]
            .map(String::from)
            .to_vec();
        let w = write_back(s, h, &copied).unwrap();
        assert_eq!(
            w,
            Written {
                written: 2,
                removed: 1,
                skipped: 1
            }
        );
        assert_eq!(
            std::fs::read_to_string(h.join("changed.txt")).unwrap(),
            "new"
        );
        assert_eq!(
            std::fs::read_to_string(h.join("sub/dir/new.txt")).unwrap(),
            "nested"
        );
        assert!(!h.join("gone.txt").exists());
        assert!(!h.join("link").exists());
    }
}
