//! Replays the committed fuzz corpus of the `config` target (`fuzz/corpus/config`) through its
//! oracle: the master's configuration parser never panics.

extern crate tessera_master as master;

include!("../../fuzz/oracles/replay.rs");

mod config_oracle {
    include!("../../fuzz/oracles/config.rs");
}

#[test]
fn the_config_corpus_holds() {
    replay("config", config_oracle::config);
}
