//! Example and misbehaving guests for Tessera, built for `wasm32-wasip1`.
//!
//! `build.rs` compiles the `guests/` package (a separate cargo workspace) and
//! generates one pair of constants per guest: `NAME` (the module's bytes) and
//! `NAME_PATH` (the absolute path of the `.wasm` file), plus [`ALL`] and
//! [`ALL_PATHS`] (sorted by name), and the [`foreach_guest!`] macro that makes a guest without a
//! test fail the build of the crate that holds the tests. Guests:
//!
//! - `hello`: greets, echoes its args, writes a stderr line; exits `$EXIT_CODE`.
//! - `pi`: `pi <seed> <samples>` Monte Carlo estimate, one line of output.
//! - `memhog`: allocates 1 MiB chunks forever (or up to `argv[1]` MiB).
//! - `spinner`: busy loop, or `spinner sleep` to sleep in a loop.
//! - `trap`: prints a line, then executes `unreachable`.
//! - `files`: reads/writes/lists its sandbox and tries to escape it.
//! - `flood`: writes `argv[1]` (default 100000) 64-byte lines to stdout and stderr.
//! - `burn`: CPU-bound hashing over a small table, forever or `argv[1]` rounds.
//! - `stackoverflow`: unbounded recursion.
//! - `diskfill`: writes 1 MiB chunks to `/fill.bin`, forever or up to `argv[1]` MiB.
//! - `escape`: tries to leave its sandbox through `..`, absolute paths and symlinks.
//! - `sha256`: `sha256 <KiB> <rounds>`, SHA-256 over a generated buffer.
//! - `json`: `json <records> <rounds>`, generates and parses a JSON document.
//! - `sockets`: calls the (denied) WASI socket functions and prints each errno.
//! - `datasets`: reads the read-only data set at `/data/<argv[1]>` and tries to change or leave it.

#![warn(missing_docs)]

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

/// WASI 0.2 command components (`wasi:cli/run`), built from `components/` for `wasm32-wasip2`:
/// per component `NAME` (bytes) and `NAME_PATH`, [`components::ALL`] and
/// [`components::ALL_PATHS`], and the [`foreach_component!`] macro. Components:
///
/// - `p2cmd`: `p2cmd [exit-code] [path...]` prints argv and `$GREETING`, writes and reads back
///   a sandbox file, tries to write `$P2CMD_WRITE` if set, prints each path's content, exits
///   with `exit-code` (through `wasi:cli/exit#exit-with-code`).
/// - `p2memhog`: allocates 1 MiB chunks forever (or up to `argv[1]` MiB).
/// - `p2spin`: `loop {}`, or `p2spin sleep` to sleep in a loop.
/// - `p2net`: `p2net <addr>` tries a TCP connection, a name lookup and a UDP bind.
/// - `p2fail`: returns an error from `main` (`wasi:cli/run` fails).
pub mod components {
    include!(concat!(env!("OUT_DIR"), "/components.rs"));
}

/// Example framework executors: WASI 0.2 components of the `tessera:executor` world
/// (`wit/executor/world.wit`), built for `wasm32-wasip2` from `executors/` over the guest SDK in
/// `executor-sdk/`. `NAME_EXECUTOR_PATH` per executor, [`executors::ALL_EXECUTOR_PATHS`], and
/// [`foreach_executor!`]. Executors:
///
/// - `kvexec`: loads a table once (a data set's `kv.txt` or a generated one) and answers
///   query tasks from memory; also waits, allocates, floods, traps on request (see its file).
/// - `badexec`: returns an error from its run loop at once.
pub mod executors {
    include!(concat!(env!("OUT_DIR"), "/executors.rs"));
}

/// Multi-threaded guests (WASI threads), built from `threads/` for `wasm32-wasip1-threads`:
/// per guest `NAME` (bytes) and `NAME_PATH`, [`threads::ALL`], [`threads::ALL_PATHS`] and the
/// [`foreach_thread_guest!`] macro. Guests:
///
/// - `mtspin`: `mtspin <threads> <rounds>` spins `threads` threads over a fixed arithmetic loop
///   and prints each one's result; `mtspin trap|exit|bomb|sleep` for a spawned thread that traps,
///   calls `proc_exit(7)`, a thread bomb, and sleeping threads.
pub mod threads {
    include!(concat!(env!("OUT_DIR"), "/threads.rs"));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bindings `regenerate-bindings` committed. Each records on its first line the sha256
    /// of the WIT it was generated from and that WIT's path, so the script is the one list of
    /// which WIT goes where.
    const COMMITTED_BINDINGS: [&str; 2] =
        ["executor-sdk/src/bindings.rs", "components/src/exit.rs"];

    /// A WIT change without regenerated bindings would build guests against the old world.
    #[test]
    fn committed_bindings_match_their_wit() {
        use sha2::Digest as _;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for bindings in COMMITTED_BINDINGS {
            let text = std::fs::read_to_string(dir.join(bindings)).unwrap();
            // `// wit sha256: <hex> (<path of the WIT>)`
            let (recorded, wit) = text
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("// wit sha256: "))
                .and_then(|l| l.split_once(" ("))
                .and_then(|(digest, rest)| Some((digest, rest.strip_suffix(')')?)))
                .unwrap_or_else(|| panic!("{bindings} does not start with its WIT's sha256"));
            let wit_digest =
                hex::encode(sha2::Sha256::digest(std::fs::read(dir.join(wit)).unwrap()));
            assert_eq!(
                recorded, wit_digest,
                "{wit} changed since {bindings} was generated: run wasm-examples/regenerate-bindings"
            );
        }
    }

    #[test]
    fn every_executor_is_a_component() {
        let names: Vec<&str> = executors::ALL_EXECUTOR_PATHS
            .iter()
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(names, ["badexec", "kvexec"]);
        for (name, path) in executors::ALL_EXECUTOR_PATHS {
            let bytes = std::fs::read(path).unwrap();
            // Component-model binaries have layer 1 in the version field.
            assert!(
                bytes.starts_with(b"\0asm\x0d\0\x01\0"),
                "{name} is not a component"
            );
        }
        assert!(executors::KVEXEC_EXECUTOR_PATH.ends_with("kvexec.wasm"));
    }

    #[test]
    fn every_guest_is_a_wasm_module() {
        let expected = [
            "arith",
            "bulkmem",
            "burn",
            "datasets",
            "diskfill",
            "escape",
            "files",
            "flood",
            "hello",
            "json",
            "kvquery",
            "memhog",
            "pi",
            "readblock",
            "sha256",
            "sockets",
            "spinner",
            "stackoverflow",
            "ticker",
            "trap",
        ];
        let names: Vec<&str> = ALL.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, expected);
        for ((name, bytes), (pname, path)) in ALL.iter().zip(ALL_PATHS) {
            assert_eq!(name, pname);
            assert!(
                bytes.starts_with(b"\0asm\x01\0\0\0"),
                "{name} is not a core wasm module"
            );
            assert!(std::path::Path::new(path).is_absolute(), "{path}");
            assert_eq!(&std::fs::read(path).unwrap(), bytes, "{name}");
        }
        for bytes in [
            HELLO,
            PI,
            MEMHOG,
            SPINNER,
            TRAP,
            FILES,
            FLOOD,
            BURN,
            STACKOVERFLOW,
            DISKFILL,
            ESCAPE,
            SHA256,
            JSON,
        ] {
            assert!(bytes.len() > 8);
        }
        let names: Vec<&str> = components::ALL.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["p2cmd", "p2fail", "p2memhog", "p2net", "p2spin"]);
        for (name, bytes) in components::ALL {
            // A component's preamble: layer 1, version 0x0d.
            assert!(
                bytes.starts_with(b"\0asm\x0d\0\x01\0"),
                "{name} is not a component"
            );
        }
        for path in [
            HELLO_PATH,
            PI_PATH,
            MEMHOG_PATH,
            SPINNER_PATH,
            TRAP_PATH,
            FILES_PATH,
            FLOOD_PATH,
            BURN_PATH,
            STACKOVERFLOW_PATH,
            DISKFILL_PATH,
            ESCAPE_PATH,
            SHA256_PATH,
            JSON_PATH,
        ] {
            assert!(path.ends_with(".wasm"));
        }
    }
}
