//! `tessera logs TASK [--stderr] [--follow] [--framework ID]`: prints a task's output, read
//! from its agent through the master's `GET /tasks/{id}/output/{stream}` (offset + length, as
//! Mesos's `/files/read`). With `--follow` it keeps polling every [`POLL`], the offset
//! advancing by what was printed, until the task has ended and everything is printed; a
//! moment's trouble reaching the agent (502, 503, 504) is waited out for a while
//! ([`MAX_RETRIES`] polls in a row) rather than ending the follow.
//!
//! Errors are one line: `not allowed: …` (403), `no task …` (404), else the master's words.

use crate::api::{Api, ApiArgs};
use crate::cmd::kill::encode;
use anyhow::bail;
use clap::Args;
use hyper::StatusCode;
use std::io::Write;
use std::time::Duration;

/// How often `--follow` asks for more.
pub const POLL: Duration = Duration::from_millis(300);

/// Consecutive transient failures (agent gone or slow, master busy) `--follow` rides out.
pub const MAX_RETRIES: u32 = 100;

/// Most bytes asked for at once (the master caps reads at 512 KiB).
const CHUNK: u64 = 512 * 1024;

/// `tessera logs`.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The task's id.
    task: String,
    /// Print its standard error instead of its standard output.
    #[arg(long)]
    stderr: bool,
    /// Keep printing what the task writes until it ends.
    #[arg(short, long)]
    follow: bool,
    /// Its framework's id, when several frameworks have a task of that id.
    #[arg(long)]
    framework: Option<String>,
    #[command(flatten)]
    api: ApiArgs,
}

/// Which output of which task, read through the master.
#[derive(Clone, Debug)]
pub struct OutputSource {
    /// The task.
    pub task: String,
    /// Its framework, when known.
    pub framework: Option<String>,
    /// `stdout` or `stderr`.
    pub stream: &'static str,
}

impl OutputSource {
    fn path(&self, offset: u64) -> String {
        let mut p = format!(
            "/tasks/{}/output/{}?offset={offset}&length={CHUNK}",
            encode(&self.task),
            self.stream
        );
        if let Some(f) = &self.framework {
            p.push_str(&format!("&framework={}", encode(f)));
        }
        p
    }
}

/// Runs `tessera logs`: exit 0 once everything asked for is printed.
pub async fn execute(a: LogsArgs) -> anyhow::Result<i32> {
    let api = Api::new(&a.api)?;
    let source = OutputSource {
        task: a.task,
        framework: a.framework,
        stream: if a.stderr { "stderr" } else { "stdout" },
    };
    let mut out = std::io::stdout();
    copy_output(&api, &source, a.follow, &mut out, 0).await?;
    Ok(0)
}

/// Copies the task's output from `offset` onto `out`: what is there now, or with `follow`
/// everything until the task has ended. Returns the offset reached.
pub async fn copy_output(
    api: &Api,
    source: &OutputSource,
    follow: bool,
    out: &mut impl Write,
    mut offset: u64,
) -> anyhow::Result<u64> {
    let mut failures = 0;
    loop {
        let answer = match api.get(&source.path(offset)).await {
            Ok(a) => a,
            Err(e) if follow && failures < MAX_RETRIES => {
                failures += 1;
                tracing::debug!(error = %e, "reading output; retrying");
                tokio::time::sleep(POLL).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        match answer.status {
            StatusCode::OK => failures = 0,
            StatusCode::NOT_FOUND => bail!("{}", answer_words(&answer)),
            StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
                if follow && failures < MAX_RETRIES =>
            {
                failures += 1;
                tracing::debug!(error = %answer.error(), "reading output; retrying");
                tokio::time::sleep(POLL).await;
                continue;
            }
            _ => bail!("{}", answer.error()),
        }
        out.write_all(&answer.body)?;
        out.flush()?;
        offset += answer.body.len() as u64;
        let size: u64 = answer
            .header("x-tessera-output-size")
            .and_then(|s| s.parse().ok())
            .unwrap_or(offset);
        let ended = answer.header("x-tessera-task-ended") == Some("true");
        if offset < size && !answer.body.is_empty() {
            // More is there already.
            continue;
        }
        if !follow || ended {
            return Ok(offset);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the master knows the task (a task just accepted may not be in its books yet
/// when the first read arrives): polls while it answers 404, at most [`MAX_RETRIES`] times.
pub async fn wait_known(api: &Api, source: &OutputSource) {
    for _ in 0..MAX_RETRIES {
        match api.get(&source.path(0)).await {
            Ok(a) if a.status == StatusCode::NOT_FOUND => tokio::time::sleep(POLL).await,
            _ => return,
        }
    }
}

/// The master's words for a 404 (`no task …`).
fn answer_words(answer: &crate::api::Answer) -> String {
    let words = String::from_utf8_lossy(&answer.body).trim().to_owned();
    if words.starts_with("no task") {
        words
    } else {
        format!("no task: {words}")
    }
}
