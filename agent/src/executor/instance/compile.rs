//! Executor components linked against WASI 0.2 and the `tessera:executor` host interface, once
//! per digest. Compilation itself is the executor's module cache's (`executor::cache`: tokio's
//! blocking pool, in memory and on disk), shared with one-shot tasks.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use wasmtime::component::{HasSelf, Linker};
use wasmtime::Engine;

use super::bindings::{Executor as ExecutorWorld, ExecutorPre};
use super::host::InstanceState;
use crate::executor::cache::{Compiled, ModuleCache};
use crate::executor::ExecError;

/// Linked executor components by digest.
pub(crate) struct Components {
    /// WASI 0.2 plus the host interface, resolved once per component.
    linker: Linker<InstanceState>,
    /// Components linked so far.
    ready: Mutex<HashMap<String, ExecutorPre<InstanceState>>>,
}

impl Components {
    /// An empty table for `engine`'s components.
    pub(crate) fn new(engine: &Engine) -> Result<Self, ExecError> {
        let mut linker = Linker::new(engine);
        let err = |e: wasmtime::Error| ExecError::Engine(format!("executor linker: {e:#}"));
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(err)?;
        ExecutorWorld::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(err)?;
        Ok(Components {
            linker,
            ready: Mutex::new(HashMap::new()),
        })
    }

    /// The linked component of `digest`, compiled by `modules` from `wasm_path` on first use.
    /// Errors are clear messages for the instance's `StartFailed`.
    pub(crate) async fn prepared(
        &self,
        modules: &Arc<ModuleCache>,
        digest: &str,
        wasm_path: &Path,
    ) -> Result<ExecutorPre<InstanceState>, String> {
        if let Some(p) = self.lock().get(digest) {
            return Ok(p.clone());
        }
        let component = match modules
            .compiled(digest, wasm_path)
            .await
            .map_err(|e| e.to_string())?
        {
            Compiled::Component(c) => c,
            Compiled::Module(_) => {
                return Err(format!(
                    "executor {digest} is a core WebAssembly module, not a component: an \
                     executor must be a WASI 0.2 component of the tessera:executor world"
                ))
            }
        };
        let pre = self.linker.instantiate_pre(&component).map_err(|e| {
            format!("executor {digest} has imports the agent does not provide: {e:#}")
        })?;
        let pre = ExecutorPre::new(pre).map_err(|e| {
            format!("executor {digest} does not export the tessera:executor world's `run`: {e:#}")
        })?;
        Ok(self.lock().entry(digest.to_owned()).or_insert(pre).clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ExecutorPre<InstanceState>>> {
        self.ready.lock().unwrap_or_else(|e| e.into_inner())
    }
}
