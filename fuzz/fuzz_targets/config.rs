//! Fuzz target: see `oracles/config.rs` for what it checks.
#![no_main]

mod oracle {
    include!("../oracles/config.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| oracle::config(data));
