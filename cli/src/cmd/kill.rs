//! `tessera kill TASK`: asks the master to kill a task, as its framework's principal (the
//! certificate given) or as an operator. The task ends with TASK_KILLED once its agent has
//! stopped it; `tessera tasks` shows it.

use crate::api::{Api, ApiArgs};
use clap::Args;
use hyper::StatusCode;

/// Exit code when the certificate's principal may not kill the task (sysexits' EX_NOPERM).
pub const NOT_ALLOWED: i32 = 77;

/// `tessera kill`.
#[derive(Args, Debug)]
pub struct KillArgs {
    /// The task's id.
    task: String,
    /// Its framework's id, when several frameworks have a task of that id.
    #[arg(long)]
    framework: Option<String>,
    #[command(flatten)]
    api: ApiArgs,
    /// Print the master's answer as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(serde::Deserialize, serde::Serialize)]
struct Killed {
    framework_id: String,
    task_id: String,
}

/// Runs `tessera kill`: exit 0 once the kill is on its way, 77 when not allowed, 1 otherwise.
pub async fn execute(a: KillArgs) -> anyhow::Result<i32> {
    let api = Api::new(&a.api)?;
    let mut path = format!("/tasks/{}/kill", encode(&a.task));
    if let Some(f) = &a.framework {
        path.push_str(&format!("?framework={}", encode(f)));
    }
    let answer = api.post(&path).await?;
    if answer.status == StatusCode::FORBIDDEN {
        eprintln!("tessera: {}", answer.error());
        return Ok(NOT_ALLOWED);
    }
    let killed: Killed = answer.json()?;
    if a.json {
        println!("{}", serde_json::to_string(&killed)?);
    } else {
        println!(
            "kill requested: task {} of framework {}",
            killed.task_id, killed.framework_id
        );
    }
    Ok(0)
}

/// Percent-encodes what a path segment or query value may not hold as is.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
