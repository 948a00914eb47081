//! Replays the committed fuzz corpus of the `meter` target (`fuzz/corpus/meter`) through its
//! oracle: the metering pass never panics, and rewrites a valid module into a valid one.

include!("../../fuzz/oracles/replay.rs");

mod meter_oracle {
    use tessera_agent::executor::meter;
    include!("../../fuzz/oracles/meter.rs");
}

#[test]
fn the_meter_corpus_holds() {
    replay("meter", meter_oracle::meter);
}
