//! Writes 1 MiB chunks to `/fill.bin` forever, or up to `argv[1]` MiB.
use std::io::Write;

fn main() {
    let limit: Option<u64> = std::env::args().nth(1).and_then(|a| a.parse().ok());
    let mut f = std::fs::File::create("/fill.bin").expect("create /fill.bin");
    let chunk = vec![0xA5u8; 1 << 20];
    let mut n = 0u64;
    loop {
        if limit == Some(n) {
            println!("diskfill: wrote {n} MiB, done");
            return;
        }
        f.write_all(&chunk).expect("write");
        n += 1;
        if n % 16 == 0 {
            println!("diskfill: {n} MiB");
        }
    }
}
