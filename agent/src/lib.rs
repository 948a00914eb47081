//! The Tessera agent: runs tasks as WASI modules in wasmtime, each inside the share of the
//! agent's resources it was offered, and reports their states to the master.
//!
//! The agent is a sans-IO [`core`] (the task life cycle and the reliable status-update queue)
//! wrapped by a thin async [`driver`]. The core never touches a socket, a file, wasmtime or the
//! clock; the driver feeds it events with the time and carries out the actions it returns. The
//! [`executor`] runs guests and knows nothing of the protocol: [`launch`] is the one module
//! that translates between the two, and [`fetch`] the one that writes blobs into the
//! [`workdir`] layout.
//!
//! ```text
//!          control stream (QUIC, mTLS)
//!  master ◀───────────────────────────▶ driver ──Event, now──▶ core::Agent
//!    │                                   │  ▲ ◀──────Action──────┘
//!    │ blob streams                      │  │
//!    ▼                                   │  │   Send     ─▶ the control stream
//!  fetch::Fetcher ◀──── Prepare ─────────┤  │   Prepare  ─▶ fetcher, then executor.prepare
//!    └─▶ workdir: blobs/, task dirs      │  │   Launch   ─▶ launch::spec ─▶ executor.launch
//!                                        │  │   Kill     ─▶ the task's KillHandle
//!  executor ◀──── TaskSpec ──── Launch ──┤  │   Executor ─▶ Start: fetcher, then
//!    └──ExecEvent──▶ launch::event_of ───│──┤               executor.start_instance;
//!                                        │  │               the rest: its InstanceHandle
//!  instance ◀── InstanceSpec/Task ───────┘  │
//!    └──InstanceEvent──▶ launch::executor_event   (Event::Executor: started, task updates,
//!                                                  messages, exited)
//! ```
//!
//! A task either runs alone (a WASI command, one guest per task) or inside its framework's
//! *executor*: a long-lived component instance that the first task naming it starts and later
//! ones reuse, whose envelope grows and shrinks with its live tasks (see [`core::executors`]).
//!
//! # Layout
//! - [`core`]: the sans-IO state machine (task life cycle, reliable status updates, resource
//!   accounting, executor instances in `core::executors`); its calling contract (time never goes backwards, drain the actions after
//!   every input, delivery of status updates) is documented under [Contract](core#contract).
//! - [`driver`]: the loop: dial and redial the master, feed the core, persist its checkpoint,
//!   carry out its actions through the fetcher and the runtime; recovery at start, stop modes.
//! - [`blob_gc`]: keeps `blobs/` and `cache/` under a size cap, least recently used first.
//! - [`checkpoint`]: the checkpoint file (versioned, written atomically) a restarted agent
//!   recovers from.
//! - [`fetch`]: the blob fetcher, sole writer of `blobs/`, of task directories' files and of
//!   executor directories.
//! - `flight`: one fetch or compile per blob or module at a time, shared by the burst of
//!   preparations that asked for it.
//! - [`launch`]: where the protocol meets the executor (`TaskInfo` → `TaskSpec`, executor
//!   outcomes → core outcomes and reasons; `ExecutorInfo` → `InstanceSpec`, instance events →
//!   core executor events).
//! - [`metrics`]: the agent's Prometheus metrics (`tessera_agent_*`), served on its loopback
//!   `/metrics` and relayed by the master.
//! - [`output_read`]: reads a range of a task's stdout/stderr for the master's output queries
//!   (the core decides what, in `core::query`).
//! - [`executor`]: wasmtime engine, module cache, task runs, sandbox, limits, CPU pacing.
//! - [`runtime`]: where guests run: in the agent's process, or in a runtime process that
//!   outlives the agent and is reattached over a Unix socket.
//! - [`workdir`]: the on-disk layout (`blobs/`, `cache/`, `frameworks/<fid>/tasks/<tid>/`,
//!   `frameworks/<fid>/executors/<eid>/`).

#![warn(missing_docs)]

pub mod blob_gc;
pub mod checkpoint;
pub mod core;
pub mod driver;
pub mod executor;
pub mod fetch;
mod flight;
pub mod launch;
pub mod metrics;
pub mod output_read;
pub mod runtime;
pub mod workdir;
