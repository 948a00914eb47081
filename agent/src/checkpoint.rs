//! The agent's checkpoint file: what a restarted agent recovers from (the core's
//! [`Checkpoint`] plus which runtime process it was attached to and how far into that
//! runtime's events it got).
//!
//! # Format
//! `TSRACKPT` (8 bytes), the format version (u32, little endian), then the [`AgentCheckpoint`]
//! in postcard. A file of another version is refused with a clear error rather than
//! misread: an agent never guesses at state that decides whether tasks are reported failed.
//!
//! # Durability
//! [`CheckpointFile::store`] writes a temporary file next to the checkpoint, fsyncs it,
//! renames it over the checkpoint and fsyncs the directory: after a crash at any point the
//! file is either the previous checkpoint or the new one, whole.

use crate::core::Checkpoint;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The first bytes of every checkpoint file.
pub const MAGIC: &[u8; 8] = b"TSRACKPT";

/// The version this build writes and reads.
pub const VERSION: u32 = 1;

/// Everything an agent writes before acting on its inputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentCheckpoint {
    /// The core's state.
    pub core: Checkpoint,
    /// The runtime process the guests ran in (its life's id): another id at the next start
    /// means it died, and the guests with it.
    pub runtime_id: String,
    /// The last runtime event whose effects `core` holds: replayed events up to it are skipped.
    pub last_seq: u64,
}

/// Why a checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file system refused.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a checkpoint.
    #[error("checkpoint {path} is not a Tessera agent checkpoint (bad header)")]
    NotACheckpoint {
        /// The file.
        path: PathBuf,
    },
    /// The file was written by another version of the agent.
    #[error(
        "checkpoint {path} has format version {found}, this agent reads version {VERSION}: \
         run the agent version that wrote it, or move the file away to start afresh (its tasks \
         are then unknown to this agent)"
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// The version it says.
        found: u32,
    },
    /// The body does not decode.
    #[error("checkpoint {path} is corrupt: {why}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The decoder's complaint.
        why: String,
    },
}

/// The checkpoint file of one agent.
#[derive(Clone, Debug)]
pub struct CheckpointFile {
    path: PathBuf,
}

impl CheckpointFile {
    /// The checkpoint at `path` (nothing is read or written yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        CheckpointFile { path: path.into() }
    }

    /// Where it lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last checkpoint, or `None` when there is none (a first start, or after a stop that
    /// killed every task).
    pub fn load(&self) -> Result<Option<AgentCheckpoint>, CheckpointError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CheckpointError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        decode(&self.path, &bytes).map(Some)
    }

    /// Writes `cp` atomically and durably; returns the file's size in bytes.
    pub fn store(&self, cp: &AgentCheckpoint) -> Result<usize, CheckpointError> {
        let bytes = encode(cp);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CheckpointError::Io { path, source }
        };
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(io(&self.path))?;
        sync_dir(self.path.parent().unwrap_or(Path::new(".")))?;
        Ok(bytes.len())
    }

    /// Removes the checkpoint (the agent stopped with nothing left to recover).
    pub fn remove(&self) -> Result<(), CheckpointError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => sync_dir(self.path.parent().unwrap_or(Path::new("."))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(CheckpointError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }
}

/// The file's bytes for `cp`.
pub fn encode(cp: &AgentCheckpoint) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    // Serialising plain data into a Vec cannot fail.
    postcard::to_io(cp, &mut out).expect("checkpoint serialises");
    out
}

/// Reads a checkpoint file's bytes (`path` names it in errors).
pub fn decode(path: &Path, bytes: &[u8]) -> Result<AgentCheckpoint, CheckpointError> {
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return Err(CheckpointError::NotACheckpoint {
            path: path.to_path_buf(),
        });
    }
    let found = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if found != VERSION {
        return Err(CheckpointError::Version {
            path: path.to_path_buf(),
            found,
        });
    }
    postcard::from_bytes(&bytes[12..]).map_err(|e| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        why: e.to_string(),
    })
}

fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| CheckpointError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::gc::GcCheckpoint;

    fn sample() -> AgentCheckpoint {
        AgentCheckpoint {
            core: Checkpoint {
                agent_id: Some("A1".into()),
                boot_id: "b".into(),
                tasks: vec![],
                executors: vec![],
                next_run: 3,
                gc: GcCheckpoint::default(),
            },
            runtime_id: "r1".into(),
            last_seq: 42,
        }
    }

    #[test]
    fn stores_loads_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let f = CheckpointFile::new(dir.path().join("checkpoint"));
        assert!(f.load().unwrap().is_none());
        let n = f.store(&sample()).unwrap();
        assert_eq!(n, std::fs::metadata(f.path()).unwrap().len() as usize);
        assert_eq!(f.load().unwrap(), Some(sample()));
        let mut next = sample();
        next.last_seq = 43;
        f.store(&next).unwrap();
        assert_eq!(f.load().unwrap().unwrap().last_seq, 43);
        assert!(!f.path().with_extension("tmp").exists());
        f.remove().unwrap();
        assert!(f.load().unwrap().is_none());
        f.remove().unwrap();
    }

    #[test]
    fn other_versions_and_garbage_are_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let f = CheckpointFile::new(dir.path().join("checkpoint"));
        let mut bytes = encode(&sample());
        bytes[8..12].copy_from_slice(&7u32.to_le_bytes());
        std::fs::write(f.path(), &bytes).unwrap();
        let e = f.load().unwrap_err();
        assert!(
            matches!(e, CheckpointError::Version { found: 7, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("version 7"));
        std::fs::write(f.path(), b"hello").unwrap();
        assert!(matches!(
            f.load().unwrap_err(),
            CheckpointError::NotACheckpoint { .. }
        ));
        let mut bytes = encode(&sample());
        bytes.truncate(bytes.len() - 3);
        std::fs::write(f.path(), &bytes).unwrap();
        assert!(matches!(
            f.load().unwrap_err(),
            CheckpointError::Corrupt { .. }
        ));
    }
}

/// The checkpoint's cost at scale, printed (run with `--ignored --nocapture`; a measurement,
/// never asserted).
#[cfg(test)]
mod measure {
    use super::*;
    use crate::core::{Agent, AgentConfig, Event};
    use proto::{AgentInfo, Message, Resources, TaskInfo};
    use std::time::{Duration, Instant};

    fn agent_with(n: usize) -> Agent {
        let now = Instant::now();
        let mut a = Agent::new(AgentConfig {
            info: AgentInfo {
                datasets: vec![],
                reservations: vec![],
                hostname: "h".into(),
                resources: Resources::new(1_000_000, 1 << 50, 0),
                attributes: vec![],
            },
            boot_id: "boot".into(),
            status_retry: Duration::from_secs(2),
            stoppable_preparation: true,
        });
        a.handle(now, Event::Connected);
        a.handle(
            now,
            Event::Message(Message::Registered {
                agent_id: "A1".into(),
            }),
        );
        for i in 0..n {
            let task = TaskInfo {
                data: Vec::new(),
                datasets: Vec::new(),
                executor: None,
                max_cpu_ms: None,
                task_id: format!("task-{i:05}").as_str().into(),
                name: format!("task-{i:05}"),
                agent_id: "A1".into(),
                resources: Resources::new(10, 32 << 20, 0),
                module: proto::Digest::of(b"module"),
                args: vec!["--rounds".into(), "1500".into()],
                env: vec![("MODE".into(), "batch".into())],
                files: vec![],
                timeout_ms: Some(60_000),
            };
            let key = ("framework-1".into(), task.task_id.clone());
            a.handle(
                now,
                Event::Message(Message::RunTask {
                    framework_id: "framework-1".into(),
                    task,
                }),
            );
            a.handle(
                now,
                Event::Prepared {
                    key: key.clone(),
                    result: Ok(()),
                },
            );
            a.handle(now, Event::Running { key });
        }
        while a.poll_action().is_some() {}
        a
    }

    #[test]
    #[ignore]
    fn checkpoint_size_and_write_time() {
        let dir = tempfile::tempdir().unwrap();
        let file = CheckpointFile::new(dir.path().join("checkpoint"));
        for n in [100, 1000] {
            let a = agent_with(n);
            let writes = 50;
            let t = Instant::now();
            let mut size = 0;
            for seq in 0..writes {
                let cp = AgentCheckpoint {
                    core: a.checkpoint(Instant::now()),
                    runtime_id: "r".into(),
                    last_seq: seq,
                };
                size = file.store(&cp).unwrap();
            }
            let per = t.elapsed() / writes as u32;
            let t = Instant::now();
            for _ in 0..writes {
                std::hint::black_box(encode(&AgentCheckpoint {
                    core: a.checkpoint(Instant::now()),
                    runtime_id: "r".into(),
                    last_seq: 0,
                }));
            }
            let encode_only = t.elapsed() / writes as u32;
            println!(
                "checkpoint with {n} running tasks (2 unacknowledged updates each): {size} bytes, \
                 {:.2} ms per durable write ({:.3} ms of it building and encoding)",
                per.as_secs_f64() * 1e3,
                encode_only.as_secs_f64() * 1e3
            );
        }
    }
}
