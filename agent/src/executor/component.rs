//! WASI 0.2 command components (`wasi:cli/run`): telling them from core modules, their linker,
//! linking one into a [`CommandPre`], and calling `run`.
//!
//! Everything else about a component task is shared with preview-1 modules: the store and its
//! data ([`TaskState`], whose WASI context serves both ABIs), limits, pacing and the
//! classification of the outcome live in `run.rs`; compilation and the disk cache in `cache.rs`.

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker, Type};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::bindings::{Command, CommandPre};
use wasmtime_wasi::I32Exit;

use super::run::TaskState;
use super::ExecError;

/// Name prefix of the command world's export (any 0.2.x version).
const RUN_EXPORT: &str = "wasi:cli/run@0.2.";

/// Whether `bytes` are a component (rather than a core module) in the binary format; text
/// (`.wat`) is always taken as a core module.
pub(super) fn is_component(bytes: &[u8]) -> bool {
    wasmparser::Parser::is_component(bytes)
}

/// The component linker: WASI 0.2 (async), with the same defaults as preview 1 (no sockets,
/// no name lookup, nothing inherited).
pub(super) fn linker(engine: &Engine) -> Result<Linker<TaskState>, ExecError> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(|e| ExecError::Engine(format!("WASI 0.2 linker: {e:#}")))?;
    Ok(linker)
}

/// Checks that `component` is a command (exports `wasi:cli/run`), then resolves its imports
/// and the export's type.
pub(super) fn link(
    engine: &Engine,
    linker: &Linker<TaskState>,
    digest: &str,
    component: &Component,
) -> Result<CommandPre<TaskState>, ExecError> {
    let not_command = |message: String| ExecError::NotACommand {
        digest: digest.to_owned(),
        message,
    };
    let ty = component.component_type();
    let Some((name, run)) = ty
        .exports(engine)
        .find(|(name, _)| name.starts_with(RUN_EXPORT))
    else {
        return Err(not_command(
            "component does not export `wasi:cli/run` (not a WASI 0.2 command)".into(),
        ));
    };
    if !run_type_ok(engine, run.ty) {
        return Err(not_command(format!(
            "export `{name}` must be an instance with `run: func() -> result`"
        )));
    }
    let pre = linker
        .instantiate_pre(component)
        .map_err(|e| ExecError::Link {
            digest: digest.to_owned(),
            message: format!("{e:#}"),
        })?;
    CommandPre::new(pre).map_err(|e| not_command(format!("{e:#}")))
}

/// Whether the `wasi:cli/run` export is an instance whose `run` is `func() -> result`, so that
/// a mistyped command is refused when it is prepared rather than when it is launched.
fn run_type_ok(engine: &Engine, export: ComponentItem) -> bool {
    let ComponentItem::ComponentInstance(instance) = export else {
        return false;
    };
    let Some(run) = instance.get_export(engine, "run") else {
        return false;
    };
    let ComponentItem::ComponentFunc(func) = run.ty else {
        return false;
    };
    let results: Vec<Type> = func.results().collect();
    func.params().len() == 0
        && matches!(results.as_slice(), [Type::Result(r)] if r.ok().is_none() && r.err().is_none())
}

/// Calls `wasi:cli/run`: `Ok` for success; a failed run (`Err(())`) is exit code 1, as
/// `std::process::exit(1)` (an [`I32Exit`] error, classified like preview 1's `proc_exit`).
pub(super) async fn call_run(
    command: &Command,
    store: &mut Store<TaskState>,
) -> wasmtime::Result<()> {
    match command.wasi_cli_run().call_run(store).await? {
        Ok(()) => Ok(()),
        Err(()) => Err(I32Exit(1).into()),
    }
}
