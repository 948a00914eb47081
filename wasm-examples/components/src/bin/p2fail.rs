//! Returns an error from `main`, which ends the command with `wasi:cli/run` failing.
fn main() -> Result<(), String> {
    println!("p2fail: about to fail");
    Err("p2fail: failing on purpose".into())
}
