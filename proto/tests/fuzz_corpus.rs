//! Replays the committed fuzz corpus (`fuzz/corpus/{frame,resources}`) through the same oracles
//! the fuzz targets run, so every input the fuzzer ever kept is checked on each `cargo test`.

extern crate tessera_proto as proto;

mod frame_oracle {
    include!("../../fuzz/oracles/frame.rs");
}
mod resources_oracle {
    include!("../../fuzz/oracles/resources.rs");
}

/// Runs `oracle` on every file of `fuzz/corpus/<target>`; the corpus must not be empty.
fn replay(target: &str, oracle: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("the corpus is committed") {
        let path = entry.unwrap().path();
        oracle(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n > 0, "empty corpus in {}", dir.display());
}

#[test]
fn the_frame_corpus_holds() {
    replay("frame", frame_oracle::frame);
}

#[test]
fn the_resources_corpus_holds() {
    replay("resources", resources_oracle::resources);
}
