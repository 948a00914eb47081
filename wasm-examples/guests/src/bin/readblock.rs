//! Reads input blocks: `readblock PATH...` prints, for each file, a line
//! `PATH: BYTES bytes, LINES lines, fnv1a HASH` followed by its first line
//! (`first: ...`), so that a scheduler can check which data a task saw (e.g.
//! `/data/NAME/part-0`, a data set of its agent). Exits 1 after the others
//! if a file cannot be read.
use std::fs;

fn main() {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() {
        eprintln!("usage: readblock PATH...");
        std::process::exit(2);
    }
    let mut failed = false;
    for path in paths {
        match fs::read(&path) {
            Ok(bytes) => {
                let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
                for b in &bytes {
                    hash ^= u64::from(*b);
                    hash = hash.wrapping_mul(0x0100_0000_01b3);
                }
                let lines = bytes.iter().filter(|b| **b == b'\n').count();
                println!("{path}: {} bytes, {lines} lines, fnv1a {hash:016x}", bytes.len());
                let text = String::from_utf8_lossy(&bytes);
                println!("first: {}", text.lines().next().unwrap_or(""));
            }
            Err(e) => {
                println!("{path}: error {e}");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
