//! Bulk memory: `bulkmem <units> [mib]` allocates a buffer of `mib` MiB (default 16) and, per
//! unit, copies its first half over its second (`memory.copy`) and fills the first half
//! (`memory.fill`), then prints a checksum. The share-efficiency bench and test time it: a
//! guest whose work is large copies is the one that loses most when it is sliced finely.
fn main() {
    let mut args = std::env::args().skip(1);
    let units: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(16);
    let len = mib.max(2) << 20;
    let half = len / 2;
    let mut buf = vec![0u8; len];
    let mut sum: u64 = 0;
    for u in 0..units {
        buf.copy_within(..half, half);
        buf[..half].fill(u as u8);
        let b = std::hint::black_box(&mut buf);
        sum = sum.wrapping_add(u64::from(b[(u as usize * 4099) % len]));
    }
    println!("bulkmem: units={units} mib={mib} checksum={sum}");
}
