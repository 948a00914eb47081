//! Prints a line, then executes the wasm `unreachable` instruction.
fn main() {
    println!("trap: about to execute unreachable");
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}
