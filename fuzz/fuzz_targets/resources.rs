//! Fuzz target: see `oracles/resources.rs` for what it checks.
#![no_main]

mod oracle {
    include!("../oracles/resources.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| oracle::resources(data));
