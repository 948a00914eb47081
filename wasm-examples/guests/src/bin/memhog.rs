//! Allocates and touches memory 1 MiB at a time, forever or up to `argv[1]` MiB. Every chunk
//! must come zeroed (the allocator takes fresh pages from `memory.grow` and trusts them to be
//! zero): a chunk holding anything else means the memory still held an earlier guest's bytes,
//! and memhog says so and exits with 3.
fn main() {
    let limit: Option<usize> = std::env::args().nth(1).and_then(|a| a.parse().ok());
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        if let Some(l) = limit {
            if chunks.len() >= l {
                println!("memhog: reached {l} MiB, done");
                return;
            }
        }
        let mut chunk = vec![0u8; 1 << 20];
        if let Some(at) = std::hint::black_box(&chunk).iter().position(|&b| b != 0) {
            println!("memhog: chunk {} is not zero at byte {at}", chunks.len());
            std::process::exit(3);
        }
        // Touch every page so the memory is really used.
        for i in (0..chunk.len()).step_by(4096) {
            chunk[i] = (i & 0xff) as u8 | 1;
        }
        chunks.push(std::hint::black_box(chunk));
        println!("memhog: {} MiB", chunks.len());
    }
}
