//! Monte Carlo estimate of pi: `pi <seed> <samples>`.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let parsed = match (args.get(1), args.get(2), args.len()) {
        (Some(s), Some(n), 3) => s.parse::<u64>().ok().zip(n.parse::<u64>().ok()),
        _ => None,
    };
    let Some((seed, samples)) = parsed else {
        eprintln!("usage: pi <seed:u64> <samples:u64>");
        std::process::exit(2);
    };
    let mut rng = SplitMix64(seed);
    let mut inside: u64 = 0;
    for _ in 0..samples {
        let x = rng.unit();
        let y = rng.unit();
        if x * x + y * y < 1.0 {
            inside += 1;
        }
    }
    let pi = if samples == 0 {
        0.0
    } else {
        4.0 * inside as f64 / samples as f64
    };
    println!("inside={inside} samples={samples} pi={pi}");
}
