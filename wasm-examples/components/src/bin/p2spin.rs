//! Never finishes: spins on the CPU (`loop {}`), or with `sleep` sleeps in a loop.
fn main() {
    let sleep = std::env::args().nth(1).as_deref() == Some("sleep");
    println!("p2spin: started (sleep={sleep})");
    if sleep {
        loop {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}
