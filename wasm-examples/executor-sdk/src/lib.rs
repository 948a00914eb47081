//! Guest SDK for Tessera framework executors (WASI 0.2 components of the
//! `tessera:executor@0.1.0` world, see `wit/executor/world.wit` in the repository).
//!
//! An executor is a long-lived guest running many tasks of its framework on one agent. This
//! crate hides the world's run loop behind the [`Executor`] trait: implement it for a type that
//! holds the executor's state, and export it with [`export_executor!`]. The loop asks the host
//! for the next event, waiting at most as long as the last [`Executor::tick`] asked for, so an
//! executor can keep several tasks live and do their work in slices while staying responsive
//! to kills and messages.
//!
//! ```ignore
//! use tessera_executor_sdk::{export_executor, Context, Executor, Task, TaskState};
//!
//! #[derive(Default)]
//! struct Echo;
//!
//! impl Executor for Echo {
//!     fn launch(&mut self, ctx: &mut Context, task: Task) {
//!         let reply = String::from_utf8_lossy(&task.data).into_owned();
//!         let _ = ctx.update(&task.id, TaskState::Finished, &reply);
//!     }
//!     fn kill(&mut self, ctx: &mut Context, task_id: &str) {
//!         let _ = ctx.update(task_id, TaskState::Killed, "killed");
//!     }
//!     fn message(&mut self, ctx: &mut Context, data: Vec<u8>) {
//!         let _ = ctx.send_message(&data);
//!     }
//! }
//!
//! export_executor!(Echo);
//! ```
//!
//! Build the executor as a binary (with an empty `main`) or a `cdylib` for `wasm32-wasip2`.

use std::time::Duration;

/// The generated bindings of the world; used by [`export_executor!`].
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/executor",
        world: "executor",
        pub_export_macro: true,
        export_macro_name: "__export_executor_world",
        default_bindings_module: "tessera_executor_sdk::bindings",
    });
}

use bindings::tessera::executor::host;
use bindings::tessera::executor::types;

/// A task launched into the executor (see the WIT `task` record).
pub type Task = types::Task;

/// The states an executor reports for its tasks.
pub type TaskState = types::TaskState;

/// Largest message or update text the host accepts (64 KiB).
pub const MAX_MESSAGE: usize = 64 * 1024;

/// The calls an executor makes to the agent, handed to every [`Executor`] callback.
#[derive(Debug, Default)]
pub struct Context {
    shutdown: bool,
}

impl Context {
    /// Reports a task's state; the message goes to the scheduler with it. Fails for tasks the
    /// host does not know (never launched here, or already terminal) and for messages over
    /// [`MAX_MESSAGE`].
    pub fn update(&mut self, task_id: &str, state: TaskState, message: &str) -> Result<(), String> {
        host::update(task_id, state, message)
    }

    /// Sends bytes to the executor's scheduler. Fails over [`MAX_MESSAGE`].
    pub fn send_message(&mut self, data: &[u8]) -> Result<(), String> {
        host::send_message(data)
    }

    /// Ends the run loop after the current callback (as if a shutdown had come).
    pub fn exit(&mut self) {
        self.shutdown = true;
    }
}

/// A framework executor: its state lives in `self` between tasks.
pub trait Executor {
    /// A task was launched into the executor.
    fn launch(&mut self, ctx: &mut Context, task: Task);

    /// The scheduler asked to kill a task: report it `Killed` (or let the agent stop the
    /// whole executor after the kill grace).
    fn kill(&mut self, ctx: &mut Context, task_id: &str);

    /// Bytes from the scheduler.
    fn message(&mut self, ctx: &mut Context, data: Vec<u8>);

    /// The agent asked the executor to stop; the run loop returns right after.
    fn shutdown(&mut self, ctx: &mut Context) {
        let _ = ctx;
    }

    /// Called after every event and whenever the last returned wait ran out: do a slice of
    /// the live tasks' work. Returns how long to wait for events before the next call
    /// (`None`: until an event comes; `Some(ZERO)`: just poll for events).
    fn tick(&mut self, ctx: &mut Context) -> Option<Duration> {
        let _ = ctx;
        None
    }
}

/// Drives `executor` until a shutdown event (or [`Context::exit`]); the body of the world's
/// `run` export, called by [`export_executor!`].
pub fn run<E: Executor>(mut executor: E) -> Result<(), String> {
    let mut ctx = Context::default();
    let mut wait: Option<Duration> = executor.tick(&mut ctx);
    while !ctx.shutdown {
        let timeout = wait.map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX));
        match host::next_event(timeout) {
            Some(types::Event::Launch(task)) => executor.launch(&mut ctx, task),
            Some(types::Event::Kill(id)) => executor.kill(&mut ctx, &id),
            Some(types::Event::Message(data)) => executor.message(&mut ctx, data),
            Some(types::Event::Shutdown) => {
                executor.shutdown(&mut ctx);
                return Ok(());
            }
            None => {}
        }
        if !ctx.shutdown {
            wait = executor.tick(&mut ctx);
        }
    }
    Ok(())
}

/// Exports an [`Executor`] type (which must implement `Default`) as the component's `run`.
#[macro_export]
macro_rules! export_executor {
    ($ty:ty) => {
        struct __TesseraExecutorRun;
        impl $crate::bindings::Guest for __TesseraExecutorRun {
            fn run() -> ::core::result::Result<(), ::std::string::String> {
                $crate::run(<$ty as ::core::default::Default>::default())
            }
        }
        $crate::bindings::__export_executor_world!(__TesseraExecutorRun with_types_in $crate::bindings);
    };
}
