//! An executor that fails at once: its run loop returns an error before taking any event.

struct Bad;

impl tessera_executor_sdk::bindings::Guest for Bad {
    fn run() -> Result<(), String> {
        eprintln!("badexec: starting");
        Err("badexec refuses to run".into())
    }
}

tessera_executor_sdk::bindings::__export_executor_world!(Bad with_types_in tessera_executor_sdk::bindings);

fn main() {}
