//! Fuzz target: see `oracles/codec.rs` for what it checks.
#![no_main]

mod oracle {
    include!("../oracles/codec.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| oracle::codec(data));
