//! Replays the committed fuzz corpus (`fuzz/corpus/{frame,resources}`) through the same oracles
//! the fuzz targets run, so every input the fuzzer ever kept is checked on each `cargo test`.

extern crate tessera_proto as proto;

include!("../../fuzz/oracles/replay.rs");

mod frame_oracle {
    include!("../../fuzz/oracles/frame.rs");
}
mod resources_oracle {
    include!("../../fuzz/oracles/resources.rs");
}

#[test]
fn the_frame_corpus_holds() {
    replay("frame", frame_oracle::frame);
}

#[test]
fn the_resources_corpus_holds() {
    replay("resources", resources_oracle::resources);
}
