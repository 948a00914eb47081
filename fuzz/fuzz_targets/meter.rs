//! Fuzz target: see `oracles/meter.rs` for what it checks.
#![no_main]

// The agent's metering pass itself, without the rest of the agent (and its wasmtime).
#[path = "../../agent/src/executor/meter.rs"]
#[allow(dead_code)]
mod meter;

mod oracle {
    use super::meter;
    include!("../oracles/meter.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| oracle::meter(data));
