//! The master's content-addressed blob store: uploaded modules and task files on disk, named by
//! their sha256.
//!
//! A blob is written under a temporary name of its own (a `tempfile::NamedTempFile` in the
//! store's directory) and renamed into place once complete and checked, so a crash or a torn
//! upload never leaves a file under a digest it does not match, and concurrent uploads of the
//! same blob never share a temporary file.
//!
//! Who uploaded a blob is kept beside it, in `{digest}.owners` (one principal name a line,
//! appended and synced before the upload is answered), so a restarted master still lets a
//! principal use what it uploaded before the restart (blobs belong to their uploaders).

use proto::{BlobKind, Digest};
use std::path::{Path, PathBuf};

/// Why a blob was refused.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// Over the size limit.
    #[error("blob of {size} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Announced size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The content does not hash to the announced digest.
    #[error("content does not match its digest: announced {announced:?}, got {actual:?}")]
    DigestMismatch {
        /// What the uploader said.
        announced: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// A module that is not valid WebAssembly.
    #[error("not a valid WebAssembly module: {0}")]
    InvalidModule(String),
    /// Disk i/o.
    #[error("blob store i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Checks that `bytes` are valid WebAssembly: a core module (WASI preview 1 command) or a
/// component (WASI 0.2 command, or a framework executor), validated with the component model's
/// features. Whether it has the exports a task needs is the agent's check, when it links it.
pub fn validate_module(bytes: &[u8]) -> Result<(), BlobError> {
    wasmparser::Validator::new()
        .validate_all(bytes)
        .map(|_| ())
        .map_err(|e| BlobError::InvalidModule(e.to_string()))
}

/// Blobs on disk under one directory.
#[derive(Debug)]
pub struct BlobStore {
    dir: PathBuf,
}

impl BlobStore {
    /// Opens (creating) the store.
    pub fn open(dir: &Path) -> Result<Self, BlobError> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// Where a blob lives (whether or not it exists).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.to_hex())
    }

    /// Checks and stores an upload.
    pub fn put(&self, announced: Digest, kind: BlobKind, bytes: &[u8]) -> Result<(), BlobError> {
        let actual = Digest::of(bytes);
        if actual != announced {
            return Err(BlobError::DigestMismatch { announced, actual });
        }
        if kind == BlobKind::Module {
            validate_module(bytes)?;
        }
        let path = self.path(&announced);
        // A fresh temporary file per upload (never a shared name), so concurrent uploads of the
        // same blob cannot truncate or rename each other's half-written file; the last rename
        // wins and every one of them puts the same checked bytes in place.
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        std::io::Write::write_all(&mut tmp, bytes)?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    }

    /// Where the names of a blob's uploaders live.
    fn owners_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(format!("{}.owners", digest.to_hex()))
    }

    /// Records, durably, that `owner` uploaded `digest` (before its upload is answered).
    pub fn add_owner(&self, digest: &Digest, owner: &str) -> Result<(), BlobError> {
        if self.owners(digest)?.iter().any(|o| o == owner) {
            return Ok(());
        }
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.owners_path(digest))?;
        // One write of one line: concurrent appends by other uploaders do not interleave.
        f.write_all(format!("{owner}\n").as_bytes())?;
        f.sync_data()?;
        Ok(())
    }

    /// The principals recorded as uploaders of `digest` (none when nothing was recorded).
    pub fn owners(&self, digest: &Digest) -> Result<Vec<String>, BlobError> {
        match std::fs::read_to_string(self.owners_path(digest)) {
            Ok(text) => {
                let mut out: Vec<String> = text
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect();
                out.sort();
                out.dedup();
                Ok(out)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes a blob the core has forgotten (garbage collection); `Ok(false)` when it was
    /// not there.
    pub fn remove(&self, digest: &Digest) -> Result<bool, BlobError> {
        match std::fs::remove_file(self.owners_path(digest)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        match std::fs::remove_file(self.path(digest)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Lists the blobs already stored (after a restart), with the kind each can serve as.
    pub fn scan(&self) -> Result<Vec<(Digest, BlobKind)>, BlobError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(digest) = name.to_str().and_then(Digest::from_hex) else {
                continue;
            };
            let bytes = std::fs::read(entry.path())?;
            if Digest::of(&bytes) != digest {
                tracing::warn!(?digest, "corrupt blob removed");
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let kind = if validate_module(&bytes).is_ok() {
                BlobKind::Module
            } else {
                BlobKind::File
            };
            out.push((digest, kind));
        }
        out.sort_by_key(|(d, _)| *d);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_checks_digest_and_validates_modules() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let wasm = b"\0asm\x01\0\0\0";
        store.put(Digest::of(wasm), BlobKind::Module, wasm).unwrap();
        assert!(matches!(
            store.put(Digest::of(b"x"), BlobKind::Module, b"y"),
            Err(BlobError::DigestMismatch { .. })
        ));
        assert!(matches!(
            store.put(Digest::of(b"garbage"), BlobKind::Module, b"garbage"),
            Err(BlobError::InvalidModule(_))
        ));
        store
            .put(Digest::of(b"garbage"), BlobKind::File, b"garbage")
            .unwrap();
        let scanned = store.scan().unwrap();
        assert_eq!(scanned.len(), 2);
        assert!(scanned.contains(&(Digest::of(wasm), BlobKind::Module)));
        assert!(scanned.contains(&(Digest::of(b"garbage"), BlobKind::File)));
        // Owners are kept beside the blob, once each, and go with it.
        let g = Digest::of(b"garbage");
        assert!(store.owners(&g).unwrap().is_empty());
        store.add_owner(&g, "bob").unwrap();
        store.add_owner(&g, "alice").unwrap();
        store.add_owner(&g, "bob").unwrap();
        assert_eq!(store.owners(&g).unwrap(), ["alice", "bob"]);
        assert_eq!(store.scan().unwrap().len(), 2, "an owners file is no blob");
        assert!(store.remove(&Digest::of(b"garbage")).unwrap());
        assert!(store.owners(&g).unwrap().is_empty());
        assert!(!store.remove(&Digest::of(b"garbage")).unwrap());
        assert_eq!(
            store.scan().unwrap(),
            vec![(Digest::of(wasm), BlobKind::Module)]
        );
    }

    #[test]
    fn components_are_modules_too_and_broken_ones_are_refused() {
        // An empty component: magic, version 0x0d, layer 1.
        let component = b"\0asm\x0d\0\x01\0";
        validate_module(component).unwrap();
        // A component whose only section is cut short.
        let broken = b"\0asm\x0d\0\x01\0\x07\x05\x01";
        assert!(matches!(
            validate_module(broken),
            Err(BlobError::InvalidModule(_))
        ));
    }

    #[test]
    fn concurrent_stores_of_the_same_blob_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(BlobStore::open(dir.path()).unwrap());
        let wasm: &[u8] = b"\0asm\x01\0\0\0";
        let digest = Digest::of(wasm);
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (store, barrier) = (store.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    (0..20)
                        .map(|_| store.put(digest, BlobKind::Module, wasm))
                        .collect::<Result<Vec<()>, _>>()
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap().unwrap();
        }
        assert_eq!(std::fs::read(store.path(&digest)).unwrap(), wasm);
        // No temporary file is left behind, and the blob is scanned once.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(store.scan().unwrap(), vec![(digest, BlobKind::Module)]);
    }
}
