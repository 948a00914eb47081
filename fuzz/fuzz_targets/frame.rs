//! Fuzz target: see `oracles/frame.rs` for what it checks.
#![no_main]

mod oracle {
    include!("../oracles/frame.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| oracle::frame(data));
