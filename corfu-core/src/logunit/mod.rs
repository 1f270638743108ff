//! The log unit: one write-once 64-bit address space (CORFU §3, "storage
//! units").
//!
//! - [`record`]: the on-disk record format (pure functions);
//! - [`store`]: the [`LogStore`] trait and its conformance suite;
//! - [`memory`]: the in-memory store;
//!
//! Whatever the sequencer or clients do, an address once written or filled
//! never changes: that is what makes the shared log safe.

pub mod memory;
pub mod record;
pub mod store;

pub use memory::MemoryStore;
pub use record::Stored;
pub use store::{LogStore, Put, StoreError, Ticket};
