// The oracle of the `resources` fuzz target, shared by the target and the corpus replay in
// `cargo test` (both `include!` this file, so they check the same thing).
use proto::resources::{format_cpus, format_size, parse_cpus, parse_resource_spec, parse_size};

/// Operator-supplied text: `--resources` specs, sizes and cpu counts. Parsers must never panic, and what they accept must format and parse back to the
/// same value.
pub fn resources(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_resource_spec(text);
    if let Ok(bytes) = parse_size(text) {
        assert_eq!(parse_size(&format_size(bytes)), Ok(bytes), "{text:?}");
    }
    if let Ok(milli) = parse_cpus(text) {
        assert_eq!(parse_cpus(&format_cpus(milli)), Ok(milli), "{text:?}");
    }
}
