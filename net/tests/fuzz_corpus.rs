//! Replays the committed fuzz corpus of the `codec` target (`fuzz/corpus/codec`) through its
//! oracle: the live reader's decoder fed in pieces agrees with `proto::frame::parse`.

extern crate tessera_net as net;

mod codec_oracle {
    include!("../../fuzz/oracles/codec.rs");
}

#[test]
fn the_codec_corpus_holds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/codec");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("the corpus is committed") {
        codec_oracle::codec(&std::fs::read(entry.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n > 0, "empty corpus in {}", dir.display());
}
