//! Executor components, compiled once per digest on tokio's blocking pool and linked against
//! WASI 0.2 and the `tessera:executor` host interface.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::Engine;

use super::bindings::{Executor as ExecutorWorld, ExecutorPre};
use super::host::InstanceState;
use crate::executor::ExecError;

/// Linked executor components by digest.
pub(crate) struct Components {
    /// Compiles components.
    engine: Engine,
    /// WASI 0.2 plus the host interface, resolved once per component.
    linker: Linker<InstanceState>,
    /// Components linked so far.
    ready: Mutex<HashMap<String, ExecutorPre<InstanceState>>>,
    /// Components compiled from wasm (cache misses), for tests and measurements.
    pub(crate) compiles: AtomicU64,
}

impl Components {
    /// An empty cache for `engine`'s components.
    pub(crate) fn new(engine: Engine) -> Result<Self, ExecError> {
        let mut linker = Linker::new(&engine);
        let err = |e: wasmtime::Error| ExecError::Engine(format!("executor linker: {e:#}"));
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(err)?;
        ExecutorWorld::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(err)?;
        Ok(Components {
            engine,
            linker,
            ready: Mutex::new(HashMap::new()),
            compiles: AtomicU64::new(0),
        })
    }

    /// The linked component of `digest`, compiled from `wasm_path` on first use (on tokio's
    /// blocking pool). Errors are clear messages for the instance's `StartFailed`.
    pub(crate) async fn prepared(
        self: &Arc<Self>,
        digest: &str,
        wasm_path: &Path,
    ) -> Result<ExecutorPre<InstanceState>, String> {
        if let Some(p) = self.lock().get(digest) {
            return Ok(p.clone());
        }
        let this = self.clone();
        let path = wasm_path.to_owned();
        let d = digest.to_owned();
        let pre = tokio::task::spawn_blocking(move || this.load_blocking(&d, &path))
            .await
            .map_err(|e| format!("compilation task failed: {e}"))??;
        self.lock().entry(digest.to_owned()).or_insert(pre.clone());
        Ok(pre)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ExecutorPre<InstanceState>>> {
        self.ready.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn load_blocking(
        &self,
        digest: &str,
        wasm_path: &Path,
    ) -> Result<ExecutorPre<InstanceState>, String> {
        let bytes = std::fs::read(wasm_path)
            .map_err(|e| format!("cannot read component {}: {e}", wasm_path.display()))?;
        self.compiles.fetch_add(1, Ordering::Relaxed);
        let component = Component::new(&self.engine, &bytes).map_err(|e| {
            format!("executor {digest} is not a valid WebAssembly component: {e:#}")
        })?;
        let pre = self.linker.instantiate_pre(&component).map_err(|e| {
            format!("executor {digest} has imports the agent does not provide: {e:#}")
        })?;
        ExecutorPre::new(pre).map_err(|e| {
            format!("executor {digest} does not export the tessera:executor world's `run`: {e:#}")
        })
    }
}
