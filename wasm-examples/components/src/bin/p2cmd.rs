//! `p2cmd [exit-code] [path...]`: prints its argv and `$GREETING`, writes and reads back a file
//! in its sandbox, tries to write `$P2CMD_WRITE` if set, prints each `path` it is given (`cat <path>: <content>`), then exits with
//! `exit-code` (default 0, at most 255) through `wasi:cli/exit#exit-with-code`.
use std::fs;

// Bindings of `wit/exit.wit`, committed (see `regenerate-bindings`).
#[path = "../exit.rs"]
mod exit;
use exit::wasi;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    println!("p2cmd: argv={}", args.join(" "));
    match std::env::var("GREETING") {
        Ok(v) => println!("p2cmd: GREETING={v}"),
        Err(_) => println!("p2cmd: GREETING unset"),
    }
    let wrote = fs::write("/p2cmd-out.txt", "written by p2cmd\n")
        .and_then(|()| fs::read_to_string("/p2cmd-out.txt"));
    match wrote {
        Ok(s) => println!("p2cmd: read back {:?}", s.trim_end()),
        Err(e) => println!("p2cmd: sandbox write failed: {e}"),
    }
    if let Ok(path) = std::env::var("P2CMD_WRITE") {
        match fs::write(&path, "written by p2cmd\n") {
            Ok(()) => println!("write {path}: ALLOWED"),
            Err(e) => println!("write {path}: denied ({e})"),
        }
    }
    for path in args.iter().skip(2) {
        match fs::read_to_string(path) {
            Ok(s) => println!("cat {path}: {}", s.trim_end()),
            Err(e) => println!("cat {path}: error ({e})"),
        }
    }
    eprintln!("p2cmd: done");
    let code: u8 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(0);
    // `std::process::exit(code)` would report any non-zero code as 1 (`wasi:cli/exit#exit`).
    wasi::cli::exit::exit_with_code(code);
    unreachable!("exit-with-code returned");
}
