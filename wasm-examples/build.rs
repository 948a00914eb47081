//! Builds the three crates of wasm programs in this package, each with its own inner
//! `cargo build`, and generates the Rust code `src/lib.rs` includes from `$OUT_DIR`:
//!
//! - `guests/` for `wasm32-wasip1` -> `guests.rs`: per guest `NAME` (the module's bytes) and
//!   `NAME_PATH`, `ALL`, `ALL_PATHS` and `foreach_guest!`;
//! - `executors/` (over `executor-sdk/` and `../wit/executor`) for `wasm32-wasip2` ->
//!   `executors.rs`: per executor `NAME_EXECUTOR_PATH`, `ALL_EXECUTOR_PATHS` and
//!   `foreach_executor!`;
//! - `components/` for `wasm32-wasip2` -> `components.rs`: per component `NAME` and
//!   `NAME_PATH`, `ALL`, `ALL_PATHS` and `foreach_component!`.
//!
//! Each crate is its own cargo workspace for a wasm target, so it cannot be an ordinary
//! dependency of the host build. A [`GuestCrate`] describes one of them and [`build`] is the
//! single pipeline they all go through: check the target is installed, run cargo with the outer
//! build's configuration scrubbed, declare the inputs, generate the code. The programs are the
//! files of `<crate>/src/bin`, sorted: adding one there is all it takes to build it. The
//! `foreach_*!` macros are wasmtime's test-programs trick: a test crate calls e.g.
//! `foreach_guest!(assert_guest_tested)`, so a program without a test there fails its build.

use std::collections::HashMap;
use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One crate of wasm programs: where it is, what it is built for, and what code is generated
/// for it. Everything that differs between the crates is here, so they cannot drift apart.
struct GuestCrate {
    /// The crate's directory (a workspace of its own), relative to this package. Its target
    /// directory is `<outer target dir>/wasm-guests/<target>` (see [`guest_target_dir`]),
    /// shared with the other crates built for the same target.
    dir: &'static str,
    /// The Rust target it is built for.
    target: &'static str,
    /// The file generated in `$OUT_DIR`, which `src/lib.rs` includes.
    out_file: &'static str,
    /// The generated `#[macro_export]` macro that calls `$mac!(name)` once per program.
    macro_name: &'static str,
    /// Inserted in every generated constant name: `NAME{infix}_PATH`, `ALL{infix}_PATHS`, and
    /// with [`include_bytes`](Self::include_bytes) `NAME{infix}` and `ALL{infix}`.
    infix: &'static str,
    /// Whether the programs' bytes are generated too (`NAME`, `ALL`, through `include_bytes!`),
    /// or only their paths.
    include_bytes: bool,
    /// Inputs outside `dir` whose changes must rebuild the crate, relative to this package.
    extra_inputs: &'static [&'static str],
    /// What one program of the crate is called in error messages and in the docs of the
    /// generated lists and macro.
    label: &'static str,
    /// What one program of the crate is, in the docs of its generated constants.
    kind: &'static str,
}

/// The crates, in build order. The generated names are the public API of this package (the
/// agent's, the cli's and the end-to-end tests use them), so changing a field here changes it.
const CRATES: [GuestCrate; 3] = [
    // WASI preview 1 modules, the bulk of the test programs.
    GuestCrate {
        dir: "guests",
        target: "wasm32-wasip1",
        out_file: "guests.rs",
        macro_name: "foreach_guest",
        infix: "",
        include_bytes: true,
        extra_inputs: &[],
        label: "guest",
        kind: "guest module",
    },
    // Framework executors: components of the `tessera:executor` world, used by path only.
    GuestCrate {
        dir: "executors",
        target: "wasm32-wasip2",
        out_file: "executors.rs",
        macro_name: "foreach_executor",
        infix: "_EXECUTOR",
        include_bytes: false,
        extra_inputs: &[
            "executor-sdk/Cargo.toml",
            "executor-sdk/src",
            "../wit/executor",
        ],
        label: "executor",
        kind: "executor component",
    },
    // WASI 0.2 command components (`wasi:cli/run`).
    GuestCrate {
        dir: "components",
        target: "wasm32-wasip2",
        out_file: "components.rs",
        macro_name: "foreach_component",
        infix: "",
        include_bytes: true,
        extra_inputs: &[],
        label: "component",
        kind: "component",
    },
];

// Multi-threaded guests (WASI threads: `wasi::thread-spawn` and a shared memory), built apart
// from `CRATES` so that their block merges cleanly: `threads.rs` -> `threads::NAME`,
// `threads::NAME_PATH`, `threads::ALL{,_PATHS}` and `foreach_thread_guest!`.
const THREAD_GUESTS: GuestCrate = GuestCrate {
    dir: "threads",
    target: "wasm32-wasip1-threads",
    out_file: "threads.rs",
    macro_name: "foreach_thread_guest",
    infix: "",
    include_bytes: true,
    extra_inputs: &[],
    label: "thread_guest",
    kind: "multi-threaded guest module",
};

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    println!("cargo:rerun-if-changed=build.rs");
    let sysroot = sysroot();
    check_names_unique(&manifest_dir);
    for krate in &CRATES {
        build(krate, &manifest_dir, &out_dir, sysroot.as_deref());
    }
    build(&THREAD_GUESTS, &manifest_dir, &out_dir, sysroot.as_deref());
}

/// Crates built for the same target share a directory of artifacts, so two programs of the
/// same name would overwrite each other: refuse that with the names.
fn check_names_unique(manifest_dir: &Path) {
    let mut owner: HashMap<(&str, String), &str> = HashMap::new();
    for krate in CRATES.iter().chain([&THREAD_GUESTS]) {
        for name in program_names(&manifest_dir.join(krate.dir).join("src/bin")) {
            if let Some(other) = owner.insert((krate.target, name.clone()), krate.dir) {
                panic!(
                    "`{name}` is a program of both `{other}` and `{}`, which are built for `{}` \
                     into one directory: rename one",
                    krate.dir, krate.target
                );
            }
        }
    }
}

/// The whole pipeline for one crate: declares its inputs, checks its target is installed,
/// builds it, checks every program came out, and writes its generated file.
fn build(krate: &GuestCrate, manifest_dir: &Path, out_dir: &Path, sysroot: Option<&Path>) {
    let crate_dir = manifest_dir.join(krate.dir);
    // Per target, not per crate: crates built for one target share their dependencies' builds
    // (the two wasm32-wasip2 crates, wit-bindgen's runtime), as long as their features agree.
    let target_dir = guest_target_dir(out_dir).join(krate.target);
    // A directory is scanned recursively by cargo, so `src` covers every program in
    // `src/bin`, including ones added or removed later.
    let own_inputs = [crate_dir.join("Cargo.toml"), crate_dir.join("src")];
    let extra_inputs = krate.extra_inputs.iter().map(|p| manifest_dir.join(p));
    for input in own_inputs.into_iter().chain(extra_inputs) {
        println!("cargo:rerun-if-changed={}", input.display());
    }
    let names = program_names(&crate_dir.join("src/bin"));

    if let Some(sysroot) = sysroot {
        check_target_installed(krate, &crate_dir, sysroot);
    }
    cargo_build(krate, &crate_dir, &target_dir);

    let release_dir = target_dir.join(krate.target).join("release");
    let programs: Vec<(String, String)> = names
        .into_iter()
        .map(|name| {
            let wasm = release_dir.join(format!("{name}.wasm"));
            assert!(
                wasm.is_file(),
                "{} `{name}` was not produced at {}",
                krate.label,
                wasm.display()
            );
            let path = wasm.to_str().expect("non-UTF-8 OUT_DIR is not supported");
            (name, path.to_owned())
        })
        .collect();
    let out_file = out_dir.join(krate.out_file);
    std::fs::write(&out_file, generate(krate, &programs))
        .unwrap_or_else(|e| panic!("writing {}: {e}", out_file.display()));
}

/// The programs of a crate are the files of its `src/bin`, sorted, so there is no hand list to
/// drift (and, through the `foreach_*!` macro, each new one is asked for its test).
fn program_names(bin_dir: &Path) -> Vec<String> {
    let read_error = |e: std::io::Error| format!("reading {}: {e}", bin_dir.display());
    let mut names: Vec<String> = std::fs::read_dir(bin_dir)
        .unwrap_or_else(|e| panic!("{}", read_error(e)))
        .map(|e| e.unwrap_or_else(|e| panic!("{}", read_error(e))).path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .map(|p| {
            p.file_stem()
                .and_then(|s| s.to_str())
                .expect("UTF-8 program name")
                .to_owned()
        })
        .collect();
    names.sort();
    names
}

/// The sysroot of the rustc this build uses, or `None` when it cannot be asked (then a missing
/// target is left for the inner cargo to report).
fn sysroot() -> Option<PathBuf> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
}

/// Fails with the fix when the crate's target has no standard library installed, which the
/// inner cargo would otherwise report deep in its output as "can't find crate for `std`".
fn check_target_installed(krate: &GuestCrate, crate_dir: &Path, sysroot: &Path) {
    let target = krate.target;
    assert!(
        sysroot.join("lib/rustlib").join(target).is_dir(),
        "the `{target}` Rust target is not installed (needed to build the {}s in {}): \
         run `rustup target add {target}`",
        krate.label,
        crate_dir.display()
    );
}

/// Where the inner builds keep their artifacts: `wasm-guests/` in the outer build's target
/// directory (the nearest ancestor of `$OUT_DIR` holding cargo's `CACHEDIR.TAG`), not in
/// `$OUT_DIR` itself. Every run of this script shares it: `cargo clippy` and `cargo test`
/// run the script in different `$OUT_DIR`s (clippy's wrapper changes the package's hash), and
/// with per-run directories CI compiled every guest, wit-bindgen included, twice. The inner
/// cargo's own lock serialises concurrent runs; a wasm-only tree cannot clash with host
/// artifacts.
fn guest_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map_or_else(
            || out_dir.to_path_buf(),
            |target| target.join("wasm-guests"),
        )
}

/// `cargo build --release --target <target>` of the crate into its own target directory, with
/// the variables [`leaks_into_inner_build`] names removed from its environment.
fn cargo_build(krate: &GuestCrate, crate_dir: &Path, target_dir: &Path) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--target", krate.target])
        .arg("--manifest-path")
        .arg(crate_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    for (key, _) in env::vars_os() {
        if key.to_str().is_some_and(leaks_into_inner_build) {
            cmd.env_remove(&key);
        }
    }
    let status = cmd.status().unwrap_or_else(|e| {
        panic!(
            "failed to run cargo to build the {}s in {}: {e}",
            krate.label,
            crate_dir.display()
        )
    });
    assert!(
        status.success(),
        "building the {}s in {} for `{}` failed ({status}); cargo's errors are above",
        krate.label,
        crate_dir.display(),
        krate.target
    );
}

/// Whether an environment variable of the outer build must not reach the inner cargo, because
/// it configures the host build and would break or change the wasm one (wasmtime's
/// `crates/test-programs/artifacts/build.rs` removes the same, by name; prefixes here also
/// catch the variants, such as `CARGO_BUILD_RUSTFLAGS` or `CARGO_PROFILE_RELEASE_DEBUG`).
fn leaks_into_inner_build(key: &str) -> bool {
    // Compiler flags meant for the host (e.g. `-C target-cpu=native`, coverage).
    key.starts_with("CARGO_ENCODED_RUSTFLAGS")
        || key == "RUSTFLAGS"
        || key.starts_with("CARGO_BUILD_")
        // The outer target directory and profiles: the inner build has its own, and its
        // crates' `[profile.release]`.
        || key == "CARGO_TARGET_DIR"
        || key.starts_with("CARGO_PROFILE_")
        // The outer cargo's jobserver (`CARGO_MAKEFLAGS`, `MAKEFLAGS`, `MFLAGS`).
        || key.ends_with("MAKEFLAGS")
        || key == "MFLAGS"
        // Wrappers such as sccache, or clippy-driver under `cargo clippy`, which would lint the
        // guests with the host's `-D warnings`.
        || key.starts_with("RUSTC_")
        // The state of the outer build's own crate.
        || key == "CARGO_INCREMENTAL"
        || key == "CARGO_PRIMARY_PACKAGE"
        // Coverage instrumentation (cargo-llvm-cov) and `cargo fix`.
        || key.starts_with("CARGO_LLVM_COV")
        || key == "LLVM_PROFILE_FILE"
        || key == "__CARGO_FIX_YOLO"
}

/// The generated file of a crate, from its `(name, absolute path of the .wasm file)` pairs.
fn generate(krate: &GuestCrate, programs: &[(String, String)]) -> String {
    let GuestCrate {
        dir,
        macro_name,
        infix,
        label,
        kind,
        ..
    } = krate;
    let mut code = String::from("// @generated by wasm-examples/build.rs\n");
    for (name, path) in programs {
        let upper = name.to_uppercase();
        let source = format!("(see `{dir}/src/bin/{name}.rs`)");
        if krate.include_bytes {
            writeln!(
                code,
                "/// The `{name}` {kind} {source}.\n\
                 pub const {upper}{infix}: &[u8] = include_bytes!({path:?});\n\
                 /// Absolute path of the built `{name}` {kind}.\n\
                 pub const {upper}{infix}_PATH: &str = {path:?};"
            )
        } else {
            writeln!(
                code,
                "/// Absolute path of the built `{name}` {kind} {source}.\n\
                 pub const {upper}{infix}_PATH: &str = {path:?};"
            )
        }
        .unwrap();
    }

    writeln!(
        code,
        "/// Calls `$mac!(name)` once per {label}: `{macro_name}!(assert_{label}_tested)` in a test\n\
         /// module fails to compile unless every {label} has a test there.\n\
         #[macro_export]\nmacro_rules! {macro_name} {{\n    ($mac:ident) => {{"
    )
    .unwrap();
    for (name, _) in programs {
        writeln!(code, "        $mac!({name});").unwrap();
    }
    code.push_str("    };\n}\n");

    let mut list = |doc: &str, decl: &str, suffix: &str| {
        writeln!(code, "/// Every {label} as `(name, {doc})`.\n{decl} = &[").unwrap();
        for (name, _) in programs {
            let upper = name.to_uppercase();
            writeln!(code, "    ({name:?}, {upper}{infix}{suffix}),").unwrap();
        }
        code.push_str("];\n");
    };
    if krate.include_bytes {
        list(
            "wasm bytes",
            &format!("pub const ALL{infix}: &[(&str, &[u8])]"),
            "",
        );
    }
    list(
        "absolute path of the .wasm file",
        &format!("pub const ALL{infix}_PATHS: &[(&str, &str)]"),
        "_PATH",
    );
    code
}
