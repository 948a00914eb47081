// Replays a committed corpus in `cargo test`: included by the corpus tests of the crates whose
// parsers are fuzzed (each sits one level below the workspace root, beside `fuzz/`).

/// Runs `oracle` on every file of `fuzz/corpus/<target>`; the corpus must not be empty.
pub fn replay(target: &str, oracle: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("the corpus is committed") {
        oracle(&std::fs::read(entry.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n > 0, "empty corpus in {}", dir.display());
}
