//! Writes `argv[1]` lines (default 100000) of 64 bytes to stdout and stderr.
use std::io::Write;

fn main() {
    let lines: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let line = [b'x'; 63];
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    for _ in 0..lines {
        let _ = out.write_all(&line);
        let _ = out.write_all(b"\n");
        let _ = err.write_all(&line);
        let _ = err.write_all(b"\n");
    }
    let _ = out.write_all(b"flood: done\n");
    let _ = out.flush();
}
