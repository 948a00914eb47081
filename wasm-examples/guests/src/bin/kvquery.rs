//! The one-shot counterpart of the `kvexec` executor: builds the same generated table of
//! 200,000 entries, answers one `get:<key>` (its first argument), and exits. Run as a task per
//! query, it pays the table's construction every time; the executor pays it once.
use std::collections::HashMap;

/// Entries of the generated table (as `kvexec`'s).
const GENERATED: u64 = 200_000;

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

fn main() {
    let query = std::env::args().nth(1).unwrap_or_default();
    let table: HashMap<String, String> = (0..GENERATED)
        .map(|i| (format!("k{i}"), format!("{:016x}", mix(i))))
        .collect();
    match query.strip_prefix("get:").and_then(|k| table.get(k)) {
        Some(v) => println!("{v}"),
        None => {
            eprintln!("kvquery: no answer to {query:?}");
            std::process::exit(1);
        }
    }
}
