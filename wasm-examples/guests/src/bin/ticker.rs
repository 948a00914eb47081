//! Prints `tick N` on stdout every `argv[2]` ms (default 100), `argv[1]` times (default 10),
//! a `tock N` on stderr every tenth tick, then `ticker: done` on stderr: output that grows
//! while the task runs, for reading and following it live.
fn main() {
    let mut args = std::env::args().skip(1);
    let count: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let every: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    for i in 1..=count {
        println!("tick {i}");
        if i % 10 == 0 {
            eprintln!("tock {i}");
        }
        if i < count {
            std::thread::sleep(std::time::Duration::from_millis(every));
        }
    }
    eprintln!("ticker: done");
}
