//! # smr: the Tango runtime (state machine replication over the shared log)
//!
//! The middle of the pipeline `corfu-core -> smr -> objects`. This crate
//! will hold the runtime that plays the shared log back into in-memory
//! views (Tango, SOSP 2013):
//!
//! - `Runtime`: opens objects by name, one stream per object, one view per
//!   object per process, played forward from the object's stream;
//! - the `StateMachine` trait: an object is a deterministic state machine
//!   with an rkyv-serialized update type and an `apply` upcall;
//! - linearizable queries: sync the view to the stream's tail, then read;
//! - multi-object transactions resolved by the sequencer's conditional
//!   tokens;
//! - checkpoints, so the log's prefix can be trimmed.
//!
//! It is empty until the object-layer issue lands; today it only names the
//! log it is built on:
//!
//! ```
//! assert_eq!(smr::LOG_PROTOCOL_VERSION, corfu_core::wire::PROTOCOL_VERSION);
//! ```

#![warn(missing_docs)]

/// The wire protocol version of the shared log this runtime speaks.
pub const LOG_PROTOCOL_VERSION: u16 = corfu_core::wire::PROTOCOL_VERSION;
