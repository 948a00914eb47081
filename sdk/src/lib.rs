//! The Tessera scheduler SDK: how a framework talks to the master.
//!
//! A [`Scheduler`] dials the master over QUIC with mutual TLS, subscribes its framework, and
//! then yields [`Event`]s (offers, rescinds, task status updates, errors) while its methods make
//! the calls of Mesos's v1 scheduler API (accept, decline, kill, acknowledge, revive, suppress,
//! reconcile, teardown) and upload modules and files.
//!
//! ```text
//!  your code ──calls──▶ Scheduler ──▶ background task ──calls, handle_*──▶ SchedulerCore
//!  your code ◀─events── Scheduler ◀── background task ◀──poll_event─────── (sans-IO, pure)
//!                                       │        ▲    ◀──poll_transmit──────┘
//!                              messages ▼        │ messages
//!                                QUIC control stream ⇄ master   (+ blob streams for uploads)
//! ```
//!
//! The protocol lives in [`SchedulerCore`], a deterministic state machine with no I/O: it
//! subscribes on every new link under the same framework id (the master keeps the framework
//! for its `failover_timeout_ms`), queues calls made while the link is down and sends them,
//! once each and in order, after re-subscription; drops duplicate status updates (the cluster
//! delivers them at least once) and, unless [`SchedulerOptions::auto_acknowledge`] is off,
//! acknowledges each update for you. The background task behind [`Scheduler`] only dials,
//! redials with backoff, moves messages between the link and the core, and uploads blobs. The
//! core can be driven without async at all, as the deterministic tests do.
//!
//! # Layout
//! - [`core`]: [`SchedulerCore`] and the [`Event`]s it surfaces; its calling contract.
//! - [`delay`]: delay scheduling for data locality (decline non-local offers for a short wait).
//! - `dedup`: the bounded window of recent updates used to drop duplicates.
//! - `driver`: [`Scheduler`], [`SchedulerOptions`], [`SdkError`], [`Uploader`] and the background task.
//! - [`TaskBuilder`] is `proto::task_builder::TaskBuilder`, re-exported here.
//!
//! # Example
//! ```no_run
//! # async fn example(opts: tessera_sdk::SchedulerOptions, wasm: Vec<u8>) -> Result<(), tessera_sdk::SdkError> {
//! use tessera_sdk::{Event, Scheduler, TaskBuilder};
//! use proto::{Filters, Resources};
//! let mut sched = Scheduler::connect(opts).await?;
//! let module = sched.upload_module(&wasm).await?;
//! while let Some(event) = sched.next_event().await {
//!     match event {
//!         Event::Offers(offers) => {
//!             for offer in offers {
//!                 let task = TaskBuilder::new("hello-1", module)
//!                     .resources(Resources::new(500, 64 << 20, 0))
//!                     .build(&offer);
//!                 sched.accept(vec![offer.id.clone()], vec![task], Filters::default())?;
//!             }
//!         }
//!         Event::Update(status) if status.state.is_terminal() => break,
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod core;
mod dedup;
pub mod delay;
mod driver;

pub use self::core::{Event, SchedulerCore};
pub use driver::{Scheduler, SchedulerOptions, SdkError, Uploader};
pub use proto::task_builder::TaskBuilder;
