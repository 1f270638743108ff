//! # corfu: a shared log with replicated objects
//!
//! The facade of the workspace. It re-exports the three crates of the
//! pipeline `corfu-core -> smr -> objects` and builds the `corfu` binary
//! (node, CLI, benchmarks, quickstart).
//!
//! - [`core`] (`corfu-core`): the CORFU shared log: wire protocol, QUIC
//!   transport, log units, sequencer, layout service, client, node;
//! - [`smr`]: the Tango runtime that plays the log into object views;
//! - [`objects`]: replicated maps, counters, queues and more.
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! use corfu::core::node::{self, NodeConfig};
//! let config = NodeConfig::load(std::path::Path::new("node.toml"))?;
//! let node = node::start(config).await?;
//! println!("serving on {}", node.local_addr());
//! node.shutdown().await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub use corfu_core as core;
pub use objects;
pub use smr;

pub mod bench;
pub mod cluster;
pub mod embedded;
pub mod layout_cli;
pub mod local;
pub mod log_cli;
pub mod object_cli;
pub mod quickstart;
pub mod stats;
