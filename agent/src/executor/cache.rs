//! The module cache: wasm compiled once per digest, kept in memory both as compiled code
//! ([`Compiled`]: a core module or a component) and linked as a WASI command ([`Prepared`]), and
//! on disk as `.cwasm` files that survive agent restarts (see [`ModuleCacheDir`] for their
//! names; whether a file holds a module or a component is read from the file itself).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use wasmtime::component::Component;
use wasmtime::{Engine, InstancePre, Linker, Module, Precompiled};
use wasmtime_wasi::p2::bindings::CommandPre;

use super::compile_jobs::CompileJobs;
use super::compiler::{self, compat_hash, ChildError, CompilerCommand, Refusals, Request};
use super::meter::{self, Placement};
use super::run::TaskState;
use super::{component, ExecError, ExecutorConfig, Metering};
use crate::workdir::ModuleCacheDir;

/// Compiled code of one digest: a core module or a component (cheap to clone).
#[derive(Clone)]
pub(super) enum Compiled {
    /// A core WebAssembly module.
    Module(Module),
    /// A component of the component model.
    Component(Component),
}

impl Compiled {
    fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
        match self {
            Compiled::Module(m) => m.serialize(),
            Compiled::Component(c) => c.serialize(),
        }
    }
}

/// A WASI command ready to instantiate, of either ABI.
#[derive(Clone)]
pub(super) enum Prepared {
    /// A WASI preview-1 module, linked against preview 1, with a type-checked `_start`.
    Core(InstancePre<TaskState>),
    /// A WASI 0.2 command component, linked against WASI 0.2, exporting `wasi:cli/run`.
    Command(CommandPre<TaskState>),
}

/// Compiled modules by digest, in memory and (if configured) on disk, with hit/miss counters.
pub(super) struct ModuleCache {
    /// Compiles and deserializes components.
    engine: Engine,
    /// Compiles and deserializes core modules (the same engine with [`Metering::Fuel`]).
    module_engine: Engine,
    /// The executor's settings: its metering (with [`Metering::Rewrite`], core modules are
    /// rewritten by `meter.rs` before compiling), and a compiling child's
    /// ([`ExecutorConfig::compiler`]).
    config: ExecutorConfig,
    /// Digests whose compile used its CPU-time or memory limit, refused at once after.
    refused: Refusals,
    /// WASI preview 1, resolved once per module into its [`InstancePre`].
    linker: Linker<TaskState>,
    /// WASI 0.2, resolved once per component into its [`CommandPre`].
    component_linker: wasmtime::component::Linker<TaskState>,
    /// Modules linked so far, by digest.
    modules: Mutex<HashMap<String, Prepared>>,
    /// Compiled code by digest (also what is not a command, for other uses of components).
    compiled: Mutex<HashMap<String, Compiled>>,
    /// Compiles (or loads from the disk cache) in progress: a burst of prepares of one new
    /// module waits for one compile, stopped if every task that waits for it is killed.
    jobs: CompileJobs<Compiled>,
    /// The on-disk cache, if any (`ExecutorConfig::cache_dir`).
    dir: Option<ModuleCacheDir>,
    /// The engines' compatibility hash: part of every cache file name ([`Self::compat_name`]),
    /// and what a compiling child checks.
    compat: u64,
    /// Modules compiled from wasm (cache misses).
    pub(super) compiles: AtomicU64,
    /// Modules loaded from the on-disk cache.
    pub(super) disk_cache_hits: AtomicU64,
    /// On-disk entries found unusable and rebuilt.
    pub(super) cache_rebuilds: AtomicU64,
}

impl ModuleCache {
    /// An empty cache for `engine`'s components and `module_engine`'s modules, metered as
    /// `config.metering` says, on disk in `config.cache_dir` (created) if set.
    pub(super) fn new(
        engine: Engine,
        module_engine: Engine,
        linker: Linker<TaskState>,
        config: &ExecutorConfig,
    ) -> Result<Self, ExecError> {
        let dir = config.cache_dir.clone();
        // A rewritten module's code differs from its wasm's: a change of the pass is a change
        // of the cache's names.
        let rewrite = config.metering == Metering::Rewrite;
        let compat = compat_hash(&[&engine, &module_engine], rewrite);
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir).map_err(|source| ExecError::Io {
                path: dir.clone(),
                source,
            })?;
        }
        let component_linker = component::linker(&engine)?;
        Ok(ModuleCache {
            engine,
            module_engine,
            config: config.clone(),
            refused: Refusals::default(),
            linker,
            component_linker,
            modules: Mutex::new(HashMap::new()),
            compiled: Mutex::new(HashMap::new()),
            jobs: CompileJobs::default(),
            dir: dir.map(ModuleCacheDir::new),
            compat,
            compiles: AtomicU64::new(0),
            disk_cache_hits: AtomicU64::new(0),
            cache_rebuilds: AtomicU64::new(0),
        })
    }

    /// [`Self::compat`] as the cache's file names spell it.
    fn compat_name(&self) -> String {
        format!("{:016x}", self.compat)
    }

    fn lock_modules(&self) -> MutexGuard<'_, HashMap<String, Prepared>> {
        self.modules.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many modules are linked in memory.
    pub(super) fn len(&self) -> usize {
        self.lock_modules().len()
    }

    /// Whether `digest` is linked in memory.
    pub(super) fn contains(&self, digest: &str) -> bool {
        self.lock_modules().contains_key(digest)
    }

    /// The command of `digest`, linked: from memory, else from the disk cache, else compiled
    /// from `wasm_path` (on tokio's blocking pool).
    pub(super) async fn prepared(
        self: &Arc<Self>,
        digest: &str,
        wasm_path: &Path,
    ) -> Result<Prepared, ExecError> {
        if !valid_digest(digest) {
            return Err(ExecError::InvalidDigest(digest.to_owned()));
        }
        if let Some(p) = self.lock_modules().get(digest) {
            return Ok(p.clone());
        }
        let compiled = self.compiled(digest, wasm_path).await?;
        let prepared = self.link(digest, &compiled)?;
        self.lock_modules()
            .entry(digest.to_owned())
            .or_insert(prepared.clone());
        Ok(prepared)
    }

    /// The compiled code of `digest` (a module or a component, command or not): from memory,
    /// else from the disk cache, else compiled from `wasm_path` (on tokio's blocking pool),
    /// once for every concurrent caller, and stopped if they are all dropped before it ends.
    pub(super) async fn compiled(
        self: &Arc<Self>,
        digest: &str,
        wasm_path: &Path,
    ) -> Result<Compiled, ExecError> {
        if !valid_digest(digest) {
            return Err(ExecError::InvalidDigest(digest.to_owned()));
        }
        if let Some(c) = self.lock_compiled().get(digest) {
            return Ok(c.clone());
        }
        let this = self.clone();
        let d = digest.to_owned();
        let path = wasm_path.to_owned();
        self.jobs
            .run(digest, move |cancel| {
                // A job that ended since the lookup above left its result here.
                if let Some(c) = this.lock_compiled().get(&d) {
                    return Ok(c.clone());
                }
                let compiled = this.load_blocking(&d, &path, cancel)?;
                Ok(this.lock_compiled().entry(d).or_insert(compiled).clone())
            })
            .await
    }

    fn lock_compiled(&self) -> MutexGuard<'_, HashMap<String, Compiled>> {
        self.compiled.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loads from the disk cache, or compiles (and writes the disk cache). Blocking; gives up
    /// when `cancel` is raised, if it can (a compile in process cannot be stopped).
    fn load_blocking(
        &self,
        digest: &str,
        wasm_path: &Path,
        cancel: &AtomicBool,
    ) -> Result<Compiled, ExecError> {
        if cancel.load(Ordering::Relaxed) {
            return Err(compiler::stopped(digest));
        }
        let Some(dir) = &self.dir else {
            return self.compile(digest, wasm_path);
        };
        let cached = dir.entry(digest, &self.compat_name());
        if cached.is_file() {
            match self.deserialize(&cached) {
                Ok(compiled) => {
                    self.disk_cache_hits.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(digest, "loaded compiled code from the disk cache");
                    return Ok(compiled);
                }
                Err(e) => {
                    self.cache_rebuilds.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        path = %cached.display(),
                        "discarding unusable cached module: {e:#}"
                    )
                }
            }
        }
        if let Some(compiler) = &self.config.compiler {
            return self.compile_in_child(compiler, dir, digest, wasm_path, &cached, cancel);
        }
        let compiled = self.compile(digest, wasm_path)?;
        match compiled.serialize() {
            Ok(bytes) => {
                // Write a unique temporary file and rename it into place:
                // never modify a `.cwasm` in place, other executors may have
                // it mmapped (truncating a mapped file is a SIGBUS).
                let tmp = dir.temp_entry(digest, &self.compat_name(), &unique_suffix());
                let res =
                    std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, &cached));
                if let Err(e) = res {
                    let _ = std::fs::remove_file(&tmp);
                    tracing::warn!(path = %cached.display(), "cannot write module cache: {e}");
                }
            }
            Err(e) => tracing::warn!("cannot serialize module {digest}: {e:#}"),
        }
        Ok(compiled)
    }

    /// Compiles in a child process under `compiler`'s limits, into a temporary file of
    /// the disk cache, loads it and renames it into place as entry `cached`. There is no
    /// fallback to compiling in process: the limit is there for the modules that would take it.
    /// Stopped (its child killed) when `cancel` is raised.
    fn compile_in_child(
        &self,
        compiler: &CompilerCommand,
        dir: &ModuleCacheDir,
        digest: &str,
        wasm_path: &Path,
        cached: &Path,
        cancel: &AtomicBool,
    ) -> Result<Compiled, ExecError> {
        self.refused.check(digest)?;
        self.compiles.fetch_add(1, Ordering::Relaxed);
        let request = Request {
            config: self.config.clone(),
            threads: false,
            compat: self.compat,
            wasm: wasm_path.to_owned(),
            out: dir.temp_entry(digest, &self.compat_name(), &unique_suffix()),
        };
        compiler::compile_in_child(compiler, &request, cancel, |tmp| {
            // Loaded before it is published: other executors on this cache never see code
            // that does not load.
            let compiled = self
                .deserialize(tmp)
                .map_err(|e| ChildError::Invalid(format!("{e:#}")))?;
            if let Err(e) = std::fs::rename(tmp, cached) {
                tracing::warn!(path = %cached.display(), "cannot write module cache: {e}");
            }
            Ok(compiled)
        })
        .map_err(|e| self.refused.error(digest, e))
    }

    /// A `.cwasm` of the disk cache, as a module or a component according to its header.
    fn deserialize(&self, cached: &Path) -> wasmtime::Result<Compiled> {
        // SAFETY (both calls): the cache directory is agent-owned and trusted (see
        // `ExecutorConfig::cache_dir`), and files in it are only ever written by
        // `Module::serialize` / `Component::serialize` of an engine with the same compatibility
        // hash (it is part of the file name).
        match Engine::detect_precompiled_file(cached)? {
            Some(Precompiled::Module) => Ok(Compiled::Module(unsafe {
                Module::deserialize_file(&self.module_engine, cached)
            }?)),
            Some(Precompiled::Component) => Ok(Compiled::Component(unsafe {
                Component::deserialize_file(&self.engine, cached)
            }?)),
            None => Err(wasmtime::format_err!(
                "not a precompiled module or component"
            )),
        }
    }

    fn compile(&self, digest: &str, wasm_path: &Path) -> Result<Compiled, ExecError> {
        let bytes = std::fs::read(wasm_path).map_err(|source| ExecError::Io {
            path: wasm_path.to_owned(),
            source,
        })?;
        self.compiles.fetch_add(1, Ordering::Relaxed);
        let compile_err = |e: wasmtime::Error| ExecError::Compile {
            digest: digest.to_owned(),
            message: format!("{e:#}"),
        };
        if component::is_component(&bytes) {
            tracing::debug!(digest, "compiling component");
            Component::new(&self.engine, &bytes)
                .map(Compiled::Component)
                .map_err(compile_err)
        } else {
            tracing::debug!(digest, "compiling module");
            let bytes = module_code(&self.module_engine, self.config.metering, bytes).map_err(
                |message| ExecError::Compile {
                    digest: digest.to_owned(),
                    message,
                },
            )?;
            Module::new(&self.module_engine, &bytes)
                .map(Compiled::Module)
                .map_err(compile_err)
        }
    }

    fn link(&self, digest: &str, compiled: &Compiled) -> Result<Prepared, ExecError> {
        let module = match compiled {
            Compiled::Module(m) => m,
            Compiled::Component(c) => {
                return component::link(&self.engine, &self.component_linker, digest, c)
                    .map(Prepared::Command)
            }
        };
        let not_command = |message: String| ExecError::NotACommand {
            digest: digest.to_owned(),
            message,
        };
        match module.get_export("_start") {
            None => return Err(not_command("no exported `_start` function".into())),
            Some(wasmtime::ExternType::Func(f)) => {
                if f.params().len() != 0 || f.results().len() != 0 {
                    return Err(not_command("`_start` must have type `() -> ()`".into()));
                }
            }
            Some(_) => return Err(not_command("export `_start` is not a function".into())),
        }
        let pre = self
            .linker
            .instantiate_pre(module)
            .map_err(|e| ExecError::Link {
                digest: digest.to_owned(),
                message: format!("{e:#}"),
            })?;
        Ok(Prepared::Core(pre))
    }
}

/// A name unique to this process and call, for temporary files of the disk cache.
pub(super) fn unique_suffix() -> String {
    static TMP_SEQ: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        TMP_SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// What a core module compiles as: itself under [`Metering::Fuel`]; validated, then
/// rewritten with budget checks under [`Metering::Rewrite`]. Shared by the executor and a
/// compiling child (`compiler.rs`), whose code must be the same.
pub(super) fn module_code(
    module_engine: &Engine,
    metering: Metering,
    bytes: Vec<u8>,
) -> Result<Vec<u8>, String> {
    match metering {
        Metering::Fuel => Ok(bytes),
        Metering::Rewrite => {
            // Validated as it is, by the engine that runs it, so that a bad module's error
            // names its own offsets; the pass need not validate it again.
            Module::validate(module_engine, &bytes).map_err(|e| format!("{e:#}"))?;
            meter::rewrite_valid(&bytes, Placement::CountedRuns).map_err(|e| e.to_string())
        }
    }
}

/// Whether `digest` can name files of the module cache (no path separators, no leading dot).
pub(super) fn valid_digest(digest: &str) -> bool {
    !digest.is_empty()
        && digest.len() <= 200
        && !digest.starts_with('.')
        && digest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}
