//! CPU-bound work with a realistic instruction mix (integer hashing over a
//! small table): `burn` runs forever, `burn <rounds>` runs that many rounds
//! of 65536 steps and prints a checksum.
fn main() {
    let rounds: Option<u64> = std::env::args().nth(1).and_then(|a| a.parse().ok());
    let mut table = [0u64; 256];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut done: u64 = 0;
    loop {
        if rounds == Some(done) {
            let sum = table.iter().fold(0u64, |a, b| a ^ b);
            println!("burn: rounds={done} checksum={sum:016x}");
            return;
        }
        for _ in 0..65536 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x & 0xff) as usize;
            table[i] = table[i].wrapping_add(x).rotate_left(5);
        }
        std::hint::black_box(&mut table);
        done += 1;
    }
}
