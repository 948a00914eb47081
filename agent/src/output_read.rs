//! Reads a range of a task's (or executor's) stdout or stderr file for the master's
//! [`proto::AgentQuery::Output`], off the driver's loop (the core decided which directory and
//! whether the task has ended, see [`crate::core::query`]). A task without a sandbox keeps its
//! output in the runtime's memory: the driver asks the runtime first
//! ([`crate::runtime::Runtime::read_output`]) and reads the file here only when the runtime
//! does not hold it (it spilled, was written out, or the task has a sandbox).

use crate::core::GcTarget;
use crate::workdir::WorkDir;
use proto::{AgentAnswer, OutputStream};
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

/// The output file of `stream` in `dir`'s directory.
pub fn output_path(work_dir: &WorkDir, dir: &GcTarget, stream: OutputStream) -> PathBuf {
    match (dir, stream) {
        (
            GcTarget::Task {
                framework_id,
                task_id,
            },
            s,
        ) => {
            let t = work_dir.task(framework_id.as_str(), task_id.as_str());
            match s {
                OutputStream::Stdout => t.stdout(),
                OutputStream::Stderr => t.stderr(),
            }
        }
        (
            GcTarget::Executor {
                framework_id,
                executor_id,
            },
            s,
        ) => {
            let e = work_dir.executor(framework_id.as_str(), executor_id.as_str());
            match s {
                OutputStream::Stdout => e.stdout(),
                OutputStream::Stderr => e.stderr(),
            }
        }
    }
}

/// Reads at most `length` bytes at `offset` of `stream` in `dir` (blocking: call it on the
/// blocking pool). A file that is not there is [`AgentAnswer::UnknownTask`] when the task has
/// ended (collected, or never launched here) and an empty stream while it has not (the guest
/// has not started yet).
pub fn read_output(
    work_dir: &WorkDir,
    dir: &GcTarget,
    stream: OutputStream,
    offset: u64,
    length: u32,
    ended: bool,
) -> AgentAnswer {
    let path = output_path(work_dir, dir, stream);
    let length = length.min(proto::MAX_OUTPUT_READ);
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return if ended {
                AgentAnswer::UnknownTask
            } else {
                AgentAnswer::Output {
                    data: Vec::new(),
                    size: 0,
                    ended,
                }
            };
        }
        Err(e) => {
            return AgentAnswer::Failed {
                message: format!("cannot open the task's {}: {e}", stream.name()),
            }
        }
    };
    let read = (|| -> std::io::Result<(Vec<u8>, u64)> {
        let size = file.metadata()?.len();
        let mut data = Vec::new();
        if offset < size {
            file.seek(SeekFrom::Start(offset))?;
            let want = (size - offset).min(u64::from(length));
            file.take(want).read_to_end(&mut data)?;
        }
        Ok((data, size))
    })();
    match read {
        Ok((data, size)) => AgentAnswer::Output { data, size, ended },
        Err(e) => AgentAnswer::Failed {
            message: format!("cannot read the task's {}: {e}", stream.name()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ranges_caps_and_tells_a_missing_file_by_whether_the_task_ended() {
        let tmp = tempfile::tempdir().unwrap();
        let w = WorkDir::new(tmp.path());
        let dir = GcTarget::Task {
            framework_id: "f".into(),
            task_id: "t".into(),
        };
        let out = |offset, length, ended| {
            read_output(&w, &dir, OutputStream::Stdout, offset, length, ended)
        };
        assert_eq!(out(0, 10, true), AgentAnswer::UnknownTask);
        assert_eq!(
            out(0, 10, false),
            AgentAnswer::Output {
                data: vec![],
                size: 0,
                ended: false
            }
        );
        std::fs::create_dir_all(w.task("f", "t").path()).unwrap();
        std::fs::write(w.task("f", "t").stdout(), b"hello world").unwrap();
        assert_eq!(
            out(6, 3, false),
            AgentAnswer::Output {
                data: b"wor".to_vec(),
                size: 11,
                ended: false
            }
        );
        assert_eq!(
            out(20, 3, true),
            AgentAnswer::Output {
                data: vec![],
                size: 11,
                ended: true
            }
        );
        let big = vec![b'x'; proto::MAX_OUTPUT_READ as usize + 10];
        std::fs::write(w.task("f", "t").stdout(), &big).unwrap();
        match out(0, u32::MAX, true) {
            AgentAnswer::Output { data, size, .. } => {
                assert_eq!(data.len(), proto::MAX_OUTPUT_READ as usize);
                assert_eq!(size, big.len() as u64);
            }
            other => panic!("{other:?}"),
        }
    }
}
