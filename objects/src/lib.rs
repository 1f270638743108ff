//! # objects: replicated data structures
//!
//! The top of the pipeline `corfu-core -> smr -> objects`. This crate will
//! hold ready-made replicated objects built on the `smr` runtime, to embed
//! in services: `ReplicatedMap<K, V>`, `ReplicatedCounter`,
//! `ReplicatedQueue<T>`, `ReplicatedRegister<T>` and `ReplicatedSet<T>`,
//! each a deterministic state machine whose updates are entries of its own
//! stream in the shared log.
//!
//! It is empty until the object-layer issue lands:
//!
//! ```
//! assert_eq!(objects::RUNTIME_LOG_PROTOCOL_VERSION, smr::LOG_PROTOCOL_VERSION);
//! ```

#![warn(missing_docs)]

/// The log protocol version of the runtime these objects run on.
pub const RUNTIME_LOG_PROTOCOL_VERSION: u16 = smr::LOG_PROTOCOL_VERSION;
