// The oracle of the `meter` fuzz target, shared by the target and the corpus replay in
// `cargo test` (both `include!` this file, with `meter` the agent's metering pass,
// `agent/src/executor/meter.rs`).
use meter::{rewrite, Placement};

/// What the executor's engine accepts (wasmtime 48 with its `gc` and `threads` features):
/// WebAssembly 3.0, threads included.
fn features() -> wasmparser::WasmFeatures {
    wasmparser::WasmFeatures::WASM3 | wasmparser::WasmFeatures::GC_TYPES
}

/// A tenant's module is untrusted bytes that the agent validates and then rewrites to meter
/// it: the pass never panics, whatever it is given, and what it makes of a valid module is
/// valid. The first byte chooses the input: odd, the rest as they are; even, a module
/// wasm-smith builds from the rest (valid, of every proposal the engine takes), so that the
/// fuzzer's time goes into the pass rather than into the parser's first checks.
pub fn meter(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let wasm = if mode % 2 == 1 {
        rest.to_vec()
    } else {
        let config = wasm_smith::Config {
            max_funcs: 20,
            max_instructions: 500,
            ..wasm_smith::Config::default()
        };
        match wasm_smith::Module::new(config, &mut arbitrary::Unstructured::new(rest)) {
            Ok(m) => m.to_bytes(),
            Err(_) => return,
        }
    };
    let valid = wasmparser::Validator::new_with_features(features())
        .validate_all(&wasm)
        .is_ok();
    for p in [
        Placement::CountedRuns,
        Placement::BackEdgesSaved,
        Placement::BackEdges,
        Placement::Headers,
    ] {
        let Ok(out) = rewrite(&wasm, p) else { continue };
        if valid {
            if let Err(e) = wasmparser::Validator::new_with_features(features()).validate_all(&out)
            {
                panic!("{p:?} made an invalid module of a valid one: {e}");
            }
        }
    }
}
