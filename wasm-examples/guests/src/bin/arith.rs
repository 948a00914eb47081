//! Arithmetic in registers (no memory traffic): `arith <units>` runs that many units of
//! 2^20 steps of a multiply-xorshift generator and prints a checksum. The share-efficiency
//! bench and test time it: its work per CPU-second should not depend on the task's share.
fn main() {
    let units: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let (mut x, mut acc): (u64, u64) = (0x9E37_79B9_7F4A_7C15, 1);
    for _ in 0..units {
        for _ in 0..(1u32 << 20) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            acc = acc.wrapping_mul(x | 1).rotate_left(7) ^ (x >> 3);
        }
        std::hint::black_box(&mut acc);
    }
    println!("arith: units={units} checksum={acc:016x}");
}
