//! # corfu-core: the shared log
//!
//! The bottom of the pipeline `corfu-core -> smr -> objects`. This crate
//! holds the CORFU shared log: a log striped and mirrored over write-once
//! log units, a global sequencer handing out positions, and a Paxos layout
//! service that decides each epoch's configuration. It knows nothing about
//! objects or transactions beyond opaque payloads, stream ids and the
//! sequencer's conflict check.
//!
//! Modules:
//! - [`types`]: the vocabulary (addresses, epochs, streams, clusters, roles);
//! - [`wire`]: rkyv messages of every role and their framing;
//! - [`transport`]: QUIC (quinn) with TLS, pipelined requests over
//!   long-lived streams;
//! - [`layout`]: the layout (segments, stripes, chains) of an epoch;
//! - [`client`]: the log client (chain replication, hole filling,
//!   batching, streams);
//! - [`node`]: one process hosting the roles its config names;
//! - [`reconfig`]: sealing and moving the cluster to its next layout;
//! - [`state_transfer`]: copying older segments to a log unit that joins
//!   a chain;
//! - [`detector`]: the optional failure detector that removes unreachable
//!   nodes through [`reconfig`].
//!
//! Protocol cores are pure (they take a request, and `now` where time
//! matters, and return a response); drivers own sockets, files and timers.
//!
//! ```
//! use corfu_core::wire::{encode_frame_default, FrameDecoder, Header, Request, RequestFrame, PROTOCOL_VERSION};
//! use corfu_core::types::ClusterId;
//!
//! let frame = RequestFrame {
//!     header: Header { protocol_version: PROTOCOL_VERSION, cluster_id: ClusterId::ANY, epoch: 0, request_id: 1 },
//!     body: Request::Ping,
//! };
//! let bytes = encode_frame_default(&frame).unwrap();
//! let mut decoder = FrameDecoder::new(1 << 20);
//! decoder.extend(&bytes);
//! assert_eq!(decoder.next_frame::<RequestFrame>().unwrap(), Some(frame));
//! ```

#![warn(missing_docs)]

pub mod client;
pub mod client_config;
pub mod detector;
pub mod layout;
pub mod layout_service;
pub mod logunit;
pub mod node;
pub mod reconfig;
#[cfg(test)]
mod reconfig_model;
pub mod sequencer;
pub mod state_transfer;
pub mod transport;
pub mod types;
pub mod wire;
