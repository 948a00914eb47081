//! Replays the committed fuzz corpus of the `codec` target (`fuzz/corpus/codec`) through its
//! oracle: the live reader's decoder fed in pieces agrees with `proto::frame::parse`.

extern crate tessera_net as net;

include!("../../fuzz/oracles/replay.rs");

mod codec_oracle {
    include!("../../fuzz/oracles/codec.rs");
}

#[test]
fn the_codec_corpus_holds() {
    replay("codec", codec_oracle::codec);
}
