//! `tessera examples`: the example guests built into the binary (from `wasm-examples`), listed
//! with what each does, and written out as `.wasm` files with `--out`, so a newcomer has
//! something to `tessera run` without finding cargo's hashed build directories.

use anyhow::Context;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `tessera examples`.
#[derive(Args, Debug)]
pub struct ExamplesArgs {
    /// Write every example as `NAME.wasm` into this directory (created if missing).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// One line on what each example guest does; a guest missing here is listed without one (a
/// unit test keeps the table complete).
const DESCRIPTIONS: &[(&str, &str)] = &[
    (
        "arith",
        "arithmetic in registers, no memory traffic: `arith UNITS` (2^20 steps each)",
    ),
    (
        "bulkmem",
        "bulk memory copies and fills over a buffer: `bulkmem UNITS [MIB]`",
    ),
    (
        "burn",
        "CPU-bound work with a realistic instruction mix: `burn ROUNDS`",
    ),
    (
        "datasets",
        "reads the read-only data set mounted at /data/NAME: `datasets NAME`",
    ),
    (
        "diskfill",
        "writes 1 MiB chunks to /fill.bin forever, or up to argv[1] MiB",
    ),
    (
        "escape",
        "tries to reach files outside its sandbox (and fails)",
    ),
    (
        "files",
        "exercises the sandbox: reads, writes, lists, tries to escape",
    ),
    (
        "flood",
        "writes argv[1] lines (default 100000) to stdout and stderr",
    ),
    (
        "hello",
        "prints a greeting and its arguments; exits with $EXIT_CODE if set",
    ),
    ("json", "JSON parsing: `json RECORDS ROUNDS`"),
    (
        "kvquery",
        "builds a generated key-value table and answers queries on it",
    ),
    (
        "memhog",
        "allocates memory 1 MiB at a time, forever or up to argv[1] MiB",
    ),
    ("pi", "Monte Carlo estimate of pi: `pi SEED SAMPLES`"),
    ("readblock", "reads input blocks: `readblock PATH...`"),
    (
        "sha256",
        "SHA-256 over a generated buffer: `sha256 KIB ROUNDS`",
    ),
    (
        "sockets",
        "calls WASI's socket functions, which are denied, and prints each errno",
    ),
    (
        "spinner",
        "never finishes: spins on the CPU, or with `sleep` sleeps in a loop",
    ),
    (
        "stackoverflow",
        "recurses without bound until the wasm stack overflows",
    ),
    (
        "ticker",
        "prints `tick N` every [MS] ms, [COUNT] times (10, 100): output to follow with `tessera logs -f`",
    ),
    (
        "trap",
        "prints a line, then executes `unreachable` (a trap)",
    ),
];

/// The one-line description of a guest, or "" for one the table does not know.
fn description(name: &str) -> &'static str {
    DESCRIPTIONS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("", |(_, d)| d)
}

/// Lists the examples on stdout and writes them out with `--out`.
pub fn execute(a: ExamplesArgs) -> anyhow::Result<i32> {
    let width = wasm_examples::ALL
        .iter()
        .map(|(n, _)| n.len())
        .max()
        .unwrap_or(0);
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    for (name, bytes) in wasm_examples::ALL {
        println!("{name:width$}  {}", description(name));
        if let Some(dir) = &a.out {
            let path = dir.join(format!("{name}.wasm"));
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    if let Some(dir) = &a.out {
        eprintln!(
            "wrote {} modules to {}; try: tessera run {}",
            wasm_examples::ALL.len(),
            dir.display(),
            dir.join("hello.wasm").display()
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_has_a_description() {
        for (name, _) in wasm_examples::ALL {
            assert!(!description(name).is_empty(), "{name} has no description");
        }
    }
}
