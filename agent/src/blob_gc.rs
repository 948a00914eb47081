//! Collection of the agent's fetched blobs (`blobs/`) and compiled modules (`cache/`) by size.
//!
//! Both grow with every distinct module and file the agent ever ran, and nothing else removes
//! them. The agent keeps them under a cap ([`AgentOptions::cache_size`](crate::driver::AgentOptions::cache_size)):
//! - a blob and the compiled modules of the same digest are one *entry* (compiled code without
//!   its module is useless after a restart, and a module is recompiled if its code is gone);
//! - an entry's last use is the newest modification time of its files: the fetcher touches a
//!   blob each time a task or executor uses it;
//! - while the entries' total is over the cap, the least recently used entry that no live task
//!   or executor uses is removed; entries in use are never removed, even over the cap;
//! - files being written (a fetch's or a compilation's temporary files) are not entries; those
//!   whose writer died (a process killed mid-fetch or mid-compile) are removed once older than
//!   [`STALE_TEMPORARY`] ([`remove_stale_temporaries`]).
//!
//! [`plan`] decides (pure, unit-tested); [`scan`] and [`remove`] are the I/O, run by the
//! driver: the scan off its loop, the plan and the removals on it, against the core's
//! current [`in-use set`](crate::core::Agent::blobs_in_use), so that no task can start using
//! an entry between the decision and the removal.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::workdir::WorkDir;

/// One file of `blobs/` or `cache/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedFile {
    /// The hex digest of the module or file it holds (or was compiled from).
    pub digest: String,
    /// The file.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Its modification time: when it was last used.
    pub used: SystemTime,
}

/// What a collection found and removed, for the log and for tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Collected {
    /// Bytes of every entry before.
    pub total_bytes: u64,
    /// Bytes removed.
    pub removed_bytes: u64,
    /// Digests removed.
    pub removed: Vec<String>,
}

/// The files to remove so that the entries total at most `cap` bytes, least recently used
/// entry first, never an entry whose digest is in `in_use` (those stay even over the cap).
pub fn plan<'a>(
    files: &'a [CachedFile],
    in_use: &BTreeSet<String>,
    cap: u64,
) -> Vec<&'a CachedFile> {
    let mut entries: BTreeMap<&str, (u64, SystemTime, Vec<&CachedFile>)> = BTreeMap::new();
    let mut total = 0u64;
    for f in files {
        let e = entries
            .entry(f.digest.as_str())
            .or_insert((0, SystemTime::UNIX_EPOCH, Vec::new()));
        e.0 += f.bytes;
        e.1 = e.1.max(f.used);
        e.2.push(f);
        total += f.bytes;
    }
    let mut candidates: Vec<(SystemTime, &str, u64, Vec<&CachedFile>)> = entries
        .into_iter()
        .filter(|(d, _)| !in_use.contains(*d))
        .map(|(d, (bytes, used, fs))| (used, d, bytes, fs))
        .collect();
    // Oldest first; the digest breaks ties, so the plan is deterministic.
    candidates.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let mut out = Vec::new();
    for (_, _, bytes, fs) in candidates {
        if total <= cap {
            break;
        }
        total -= bytes;
        out.extend(fs);
    }
    out
}

/// The entries' files: `blobs/<64 hex digits>` and `cache/<64 hex digits>.<engine>.cwasm`.
/// Anything else (temporary files, stray names) is left out; unreadable directories count as
/// empty (the work directory is created at start; `cache/` by the executor on first use).
pub fn scan(work_dir: &WorkDir) -> Vec<CachedFile> {
    let mut out = Vec::new();
    let cache = work_dir.cache();
    for (dir, is_cache) in [(work_dir.blobs(), false), (cache.path().to_owned(), true)] {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in rd.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let digest = if is_cache {
                match name.strip_suffix(".cwasm").and_then(|n| n.split_once('.')) {
                    Some((d, _engine)) => d,
                    None => continue,
                }
            } else {
                name
            };
            if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            out.push(CachedFile {
                digest: digest.to_owned(),
                path: entry.path(),
                bytes: meta.len(),
                used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
    }
    out
}

/// Removes the planned files (a file already gone is not an error; others are logged and
/// left). Returns what was removed.
pub fn remove(files: &[CachedFile], planned: &[&CachedFile]) -> Collected {
    let mut c = Collected {
        total_bytes: files.iter().map(|f| f.bytes).sum(),
        ..Collected::default()
    };
    for f in planned {
        match std::fs::remove_file(&f.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %f.path.display(), error = %e, "cannot remove a cached file");
                continue;
            }
        }
        c.removed_bytes += f.bytes;
        if c.removed.last() != Some(&f.digest) {
            c.removed.push(f.digest.clone());
        }
    }
    c
}

/// How long a temporary file of `blobs/` or `cache/` may go unmodified before it is taken for
/// one whose writer died, at least ([`stale_after`]). Their writers remove them, unless killed;
/// files being written are far younger: a fetch writes as it receives, and a compile writes its
/// code when it ends and its `.err` file when it starts, within its wall-time limit.
pub const STALE_TEMPORARY: Duration = Duration::from_secs(3600);

/// How long a temporary file may go unmodified before it is taken for a dead writer's, with
/// the agent's `compiler`: [`STALE_TEMPORARY`], or longer than a compile may last (its
/// wall-time limit and a minute), so that a running compile's `.err` file, written when it
/// starts, is never taken for a dead one's (`--compile-cpu-limit` has no upper bound).
pub fn stale_after(compiler: Option<&crate::executor::CompilerCommand>) -> Duration {
    compiler.map_or(STALE_TEMPORARY, |c| {
        STALE_TEMPORARY.max(c.wall_limit() + Duration::from_secs(60))
    })
}

/// Whether `name` is a temporary file's, not an entry's: a fetch's `<digest>.part-<pid>-<n>`,
/// a compile's `<digest>.<engine>.cwasm.tmp<unique>` and its `.err`.
fn is_temporary(name: &str) -> bool {
    name.contains(".part-") || name.contains(".cwasm.tmp")
}

/// Removes the temporary files of `blobs/` and `cache/` last modified more than `older_than`
/// before `now`, left behind by a writer that died; returns how many were removed.
pub fn remove_stale_temporaries(
    work_dir: &WorkDir,
    now: SystemTime,
    older_than: Duration,
) -> usize {
    let mut removed = 0;
    for dir in [work_dir.blobs(), work_dir.cache().path().to_owned()] {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in rd.flatten() {
            if !entry.file_name().to_str().is_some_and(is_temporary) {
                continue;
            }
            let Ok(modified) = entry.metadata().and_then(|m| m.modified()) else {
                continue;
            };
            if now.duration_since(modified).unwrap_or_default() <= older_than {
                continue;
            }
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove a temporary file")
                }
            }
        }
    }
    removed
}

/// Marks a blob used now (its modification time), so the collection keeps recently used ones.
/// Best effort: a failure only makes the blob look older.
pub fn touch(path: &Path) {
    let r = std::fs::File::open(path).and_then(|f| f.set_modified(SystemTime::now()));
    if let Err(e) = r {
        tracing::debug!(path = %path.display(), error = %e, "cannot mark a blob used");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        c.to_string().repeat(64)
    }

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
    }

    fn file(c: char, name: &str, bytes: u64, used: u64) -> CachedFile {
        CachedFile {
            digest: d(c),
            path: PathBuf::from(name),
            bytes,
            used: at(used),
        }
    }

    fn names(p: Vec<&CachedFile>) -> Vec<&str> {
        p.into_iter().map(|f| f.path.to_str().unwrap()).collect()
    }

    #[test]
    fn under_the_cap_nothing_is_removed() {
        let files = [file('a', "a", 10, 1), file('b', "b", 10, 2)];
        assert!(plan(&files, &BTreeSet::new(), 20).is_empty());
    }

    #[test]
    fn the_least_recently_used_entries_go_first_with_their_compiled_modules() {
        let files = [
            file('a', "blob-a", 10, 5),
            file('a', "cwasm-a", 30, 1),
            file('b', "blob-b", 10, 3),
            file('c', "blob-c", 10, 4),
            file('c', "cwasm-c", 20, 4),
        ];
        // b (used at 3) is oldest, then c (4), then a (5: its blob was used last, whatever
        // its compiled module's time).
        assert_eq!(names(plan(&files, &BTreeSet::new(), 70)), vec!["blob-b"]);
        assert_eq!(
            names(plan(&files, &BTreeSet::new(), 50)),
            vec!["blob-b", "blob-c", "cwasm-c"]
        );
        assert_eq!(plan(&files, &BTreeSet::new(), 0).len(), 5);
    }

    #[test]
    fn entries_in_use_are_never_removed_even_over_the_cap() {
        let files = [
            file('a', "a", 100, 1),
            file('b', "b", 10, 2),
            file('c', "c", 10, 3),
        ];
        let in_use = BTreeSet::from([d('a')]);
        assert_eq!(names(plan(&files, &in_use, 50)), vec!["b", "c"]);
        let all = BTreeSet::from([d('a'), d('b'), d('c')]);
        assert!(plan(&files, &all, 0).is_empty());
    }

    #[test]
    fn ties_are_broken_by_digest() {
        let files = [file('b', "b", 10, 1), file('a', "a", 10, 1)];
        assert_eq!(names(plan(&files, &BTreeSet::new(), 10)), vec!["a"]);
    }

    /// Real files: a scan finds blobs and compiled modules (not temporary or stray files), and
    /// a collection under a cap removes the least recently used entry not in use.
    #[test]
    fn a_collection_of_real_files_keeps_the_cap_and_what_is_in_use() {
        let tmp = tempfile::tempdir().unwrap();
        let w = WorkDir::new(tmp.path());
        w.create().unwrap();
        std::fs::create_dir_all(w.cache().path()).unwrap();
        let write = |path: PathBuf, bytes: usize, used: u64| {
            std::fs::write(&path, vec![0u8; bytes]).unwrap();
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(at(used))
                .unwrap();
            path
        };
        let old = write(w.blob(&d('a')), 1000, 1);
        let old_code = write(w.cache().entry(&d('a'), "e1"), 3000, 1);
        let busy = write(w.blob(&d('b')), 1000, 0);
        let recent = write(w.blob(&d('c')), 1000, 5);
        let fetching = write(w.blobs().join(format!("{}.part", d('e'))), 500, 0);
        let compiling = write(w.cache().temp_entry(&d('c'), "e1", "x"), 500, 0);
        let stray = write(w.blobs().join("notes"), 500, 0);
        let files = scan(&w);
        assert_eq!(files.len(), 4, "{files:?}");
        assert_eq!(files.iter().map(|f| f.bytes).sum::<u64>(), 6000);
        // Under a cap of 3000: the oldest entry not in use (a, blob and code) goes.
        let in_use = BTreeSet::from([d('b')]);
        let c = remove(&files, &plan(&files, &in_use, 3000));
        assert_eq!(c.removed, vec![d('a')]);
        assert_eq!((c.total_bytes, c.removed_bytes), (6000, 4000));
        for p in [&old, &old_code] {
            assert!(!p.exists(), "{} removed", p.display());
        }
        for p in [&busy, &recent, &fetching, &compiling, &stray] {
            assert!(p.exists(), "{} kept", p.display());
        }
        // Once b is not in use, it is the least recently used (c was just touched): under a
        // cap of 1000, b goes and c stays.
        touch(&recent);
        let files = scan(&w);
        let c = remove(&files, &plan(&files, &BTreeSet::new(), 1000));
        assert_eq!(c.removed, vec![d('b')]);
        assert!(recent.exists() && !busy.exists());
    }

    /// Real files: temporary files of a dead writer go once older than the bound; younger
    /// ones (being written), entries and stray files stay.
    #[test]
    fn temporary_files_of_a_dead_writer_are_removed_once_stale() {
        let tmp = tempfile::tempdir().unwrap();
        let w = WorkDir::new(tmp.path());
        w.create().unwrap();
        std::fs::create_dir_all(w.cache().path()).unwrap();
        let write = |path: PathBuf, used: u64| {
            std::fs::write(&path, b"x").unwrap();
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(at(used))
                .unwrap();
            path
        };
        let compiling = w.cache().temp_entry(&d('c'), "e1", "7-1");
        let mut err = compiling.clone().into_os_string();
        err.push(".err");
        let stale = [
            write(w.blobs().join(format!("{}.part-7-1", d('a'))), 0),
            write(compiling, 0),
            write(PathBuf::from(err), 0),
        ];
        let kept = [
            write(w.blobs().join(format!("{}.part-7-2", d('b'))), 3000),
            write(w.cache().temp_entry(&d('d'), "e1", "7-2"), 3000),
            write(w.blob(&d('e')), 0),
            write(w.cache().entry(&d('e'), "e1"), 0),
            write(w.blobs().join("notes"), 0),
        ];
        let now = at(3700);
        assert_eq!(remove_stale_temporaries(&w, now, STALE_TEMPORARY), 3);
        for p in &stale {
            assert!(!p.exists(), "{} removed", p.display());
        }
        for p in &kept {
            assert!(p.exists(), "{} kept", p.display());
        }
        assert_eq!(remove_stale_temporaries(&w, now, STALE_TEMPORARY), 0);
    }

    /// A compile's temporary files are never taken for a dead writer's while it may still
    /// run: past an hour from a CPU-time limit of 15 minutes on (a wall limit of an hour).
    #[test]
    fn temporaries_outlive_the_longest_compile() {
        let cmd = |minutes: u64| crate::executor::CompilerCommand {
            program: "/bin/tessera".into(),
            args: vec!["compile".into()],
            cpu_limit: Duration::from_secs(minutes * 60),
            memory_limit: 1 << 30,
        };
        assert_eq!(stale_after(None), STALE_TEMPORARY);
        assert_eq!(stale_after(Some(&cmd(5))), STALE_TEMPORARY);
        assert_eq!(stale_after(Some(&cmd(15))), Duration::from_secs(3660));
        assert_eq!(
            stale_after(Some(&cmd(60))),
            Duration::from_secs(4 * 3600 + 60)
        );
    }
}
