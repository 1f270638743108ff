//! The log unit: one write-once 64-bit address space (CORFU §3, "storage
//! units").
//!
//! - [`record`]: the on-disk record format (pure functions);
//! - [`store`]: the [`LogStore`] trait and its conformance suite;
//! - [`memory`]: the in-memory store;
//! - [`file`](mod@file): the durable store of segment files;
//! - [`service`]: the role served by a node.
//!
//! Whatever the sequencer or clients do, an address once written or filled
//! never changes: that is what makes the shared log safe.

pub mod file;
pub mod index;
pub mod memory;
pub mod record;
pub mod service;
pub mod store;

pub use file::{FileStore, LogUnitConfig, SyncPolicy};
pub use memory::MemoryStore;
pub use record::Stored;
pub use service::{LogUnitLimits, LogUnitService};
pub use store::{LogStore, Put, ReadBudget, StoreError, Ticket};
