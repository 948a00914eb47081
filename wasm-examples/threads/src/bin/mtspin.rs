//! `mtspin <threads> <rounds>`: spawns `threads` threads (default 4), each hashing `rounds`
//! rounds (default 20,000,000) of a fixed arithmetic loop, joins them and prints one line per
//! thread (`thread <i>: <result>`) and `done <threads>`. The results depend only on `i` and
//! `rounds`, so the output is checkable.
//!
//! `mtspin trap`: a spawned thread executes `unreachable` while the main thread waits for it.
//! `mtspin exit`: a spawned thread calls `proc_exit(7)` while the main thread waits for it.
//! `mtspin bomb`: spawns threads that each wait until the spawning is over, until a spawn fails;
//! prints how many started.
//! `mtspin sleep`: four threads sleeping in a loop, forever.

use std::time::Duration;

fn work(seed: u64, rounds: u64) -> u64 {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in 0..rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = x.wrapping_add(i);
    }
    x
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("trap") => {
            println!("main: spawning a thread that traps");
            let h = std::thread::spawn(|| {
                std::thread::sleep(Duration::from_millis(20));
                core::arch::wasm32::unreachable()
            });
            let _ = h.join();
            println!("main: unreachable: the join returned");
        }
        Some("exit") => {
            let h = std::thread::spawn(|| {
                std::thread::sleep(Duration::from_millis(20));
                std::process::exit(7)
            });
            let _ = h.join();
            println!("main: unreachable: the join returned");
        }
        Some("bomb") => {
            // Every thread lives until the spawning is over, however slow it is (a fixed sleep
            // let the first threads end on a loaded machine, and more than the cap started).
            static OVER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            let mut started = 0u32;
            let mut handles = Vec::new();
            loop {
                match std::thread::Builder::new().stack_size(64 * 1024).spawn(|| {
                    while !OVER.load(std::sync::atomic::Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }) {
                    Ok(h) => {
                        started += 1;
                        handles.push(h);
                    }
                    Err(e) => {
                        println!("spawn failed after {started} threads: {e}");
                        break;
                    }
                }
                if started >= 10_000 {
                    println!("no limit: {started} threads");
                    break;
                }
            }
            OVER.store(true, std::sync::atomic::Ordering::SeqCst);
            for h in handles {
                let _ = h.join();
            }
            println!("bomb done {started}");
        }
        Some("sleep") => {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    std::thread::spawn(|| loop {
                        std::thread::sleep(Duration::from_millis(5));
                    })
                })
                .collect();
            for h in hs {
                let _ = h.join();
            }
        }
        _ => {
            let threads: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(4);
            let rounds: u64 = args
                .get(2)
                .and_then(|s| s.parse().ok())
                .unwrap_or(20_000_000);
            let handles: Vec<_> = (0..threads)
                .map(|i| std::thread::spawn(move || work(i, rounds)))
                .collect();
            for (i, h) in handles.into_iter().enumerate() {
                println!("thread {i}: {}", h.join().unwrap());
            }
            println!("done {threads}");
        }
    }
}
