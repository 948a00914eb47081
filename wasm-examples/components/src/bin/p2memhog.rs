//! Allocates and touches memory 1 MiB at a time, forever or up to `argv[1]` MiB.
fn main() {
    let limit: Option<usize> = std::env::args().nth(1).and_then(|a| a.parse().ok());
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        if let Some(l) = limit {
            if chunks.len() >= l {
                println!("p2memhog: reached {l} MiB, done");
                return;
            }
        }
        let mut chunk = vec![0u8; 1 << 20];
        // Touch every page so the memory is really used.
        for i in (0..chunk.len()).step_by(4096) {
            chunk[i] = (i & 0xff) as u8 | 1;
        }
        chunks.push(std::hint::black_box(chunk));
        println!("p2memhog: {} MiB", chunks.len());
    }
}
