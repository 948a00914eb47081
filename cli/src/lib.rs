//! The library behind the `tessera` command: one module per subcommand, each holding its clap
//! arguments beside the logic that uses them. The clusters it starts or simulates (`tessera
//! dev`, `tessera run` without `--master`, `tessera sim`) come from `tessera-cluster`; nothing
//! depends on this crate.
//!
//! # Layout
//! - [`cmd::master`]: `tessera master`; [`cmd::master::config`] reads its `--config` file
//!   (allocator, roles' weights and quotas).
//! - [`cmd::agent`]: `tessera agent`.
//! - [`cmd::cert`]: `tessera cert ca|issue`.
//! - [`cmd::dev`]: `tessera dev`, the seed's worked example and a pi job, as a trace.
//! - [`cmd::examples`]: `tessera examples`, the example guests built in, listed and written out.
//! - [`cmd::run`]: `tessera run`, one task, like `mesos-execute`.
//! - [`cmd::runtime`]: `tessera runtime` (hidden), the process an agent's guests run in.
//! - [`cmd::sim`]: `tessera sim`, its workload ([`cmd::sim::workload`]) and report
//!   ([`cmd::sim::report`]).
//! - [`tls`]: the `--ca`/`--cert`/`--key` arguments shared by deployed peers.
//! - [`cmd::inspect`]: `tessera agents|frameworks|tasks`; [`cmd::kill`]: `tessera kill`;
//!   [`cmd::top`]: `tessera top`; [`table`]: their aligned tables.
//! - [`api`]: the client of the master's operator HTTP surface (the operator commands).

#![warn(missing_docs)]

pub mod api;
pub mod cmd;
pub mod table;
pub mod tls;
