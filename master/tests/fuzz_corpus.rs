//! Replays the committed fuzz corpus of the `config` target (`fuzz/corpus/config`) through its
//! oracle: the master's configuration parser never panics.

extern crate tessera_master as master;

mod config_oracle {
    include!("../../fuzz/oracles/config.rs");
}

#[test]
fn the_config_corpus_holds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/config");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("the corpus is committed") {
        config_oracle::config(&std::fs::read(entry.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n > 0, "empty corpus in {}", dir.display());
}
