// The oracle of the `config` fuzz target, shared by the target and the corpus replay in
// `cargo test` (both `include!` this file, so they check the same thing).
use master::config::parse;

/// The master's configuration file is operator text: parsing never panics, whatever it holds.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse(text);
    }
}
