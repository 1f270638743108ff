//! Messages of the layout server role: a Paxos acceptor per epoch (the
//! CORFU "Paxos configurator").

// rkyv's derive generates resolver enums whose struct-variant fields carry
// no docs; every item written here is documented by hand.
#![allow(missing_docs)]

use rkyv::{Archive, Deserialize, Serialize};

use crate::layout::Layout;
use crate::types::Epoch;

/// A Paxos proposal rank, ordered by `(number, proposer)`.
#[derive(
    Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub struct Rank {
    /// The round number.
    pub number: u64,
    /// Breaks ties between proposers.
    pub proposer: u64,
}

/// A request to a layout server.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum LayoutRequest {
    /// Phase 1: promise to ignore ranks below `rank` for `epoch`.
    Prepare {
        /// The epoch being decided.
        epoch: Epoch,
        /// The proposer's rank.
        rank: Rank,
    },
    /// Phase 2: accept `layout` for `epoch` at `rank`.
    Propose {
        /// The epoch being decided.
        epoch: Epoch,
        /// The proposer's rank.
        rank: Rank,
        /// The proposed layout (its epoch is `epoch`).
        layout: Box<Layout>,
    },
    /// The layout was chosen: record it as committed.
    Commit {
        /// The chosen layout.
        layout: Box<Layout>,
    },
    /// Answer the highest committed layout.
    GetLayout,
    /// Answer the highest epochs this server has seen (for a sequencer's
    /// lease: see `sequencer::lease`). Changes nothing.
    Epochs,
}

impl LayoutRequest {
    /// Short name of the request kind, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            LayoutRequest::Prepare { .. } => "layout.prepare",
            LayoutRequest::Propose { .. } => "layout.propose",
            LayoutRequest::Commit { .. } => "layout.commit",
            LayoutRequest::GetLayout => "layout.get",
            LayoutRequest::Epochs => "layout.epochs",
        }
    }
}

/// An answer from a layout server.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum LayoutResponse {
    /// Phase 1 promise, with the layout already accepted for the epoch.
    Promise {
        /// The highest-ranked accepted proposal for the epoch, if any.
        accepted: Option<(Rank, Box<Layout>)>,
    },
    /// Phase 2 accepted.
    Accepted,
    /// A higher rank was promised for the epoch.
    Rejected {
        /// The promised rank.
        promised: Rank,
    },
    /// The epoch is already committed (with this layout).
    AlreadyCommitted {
        /// The committed layout.
        layout: Box<Layout>,
    },
    /// Commit recorded.
    Committed,
    /// The highest committed layout, if the service was bootstrapped.
    Layout(Option<Box<Layout>>),
    /// Answer to `Epochs`.
    Epochs {
        /// The committed epoch (0 before the bootstrap).
        committed: Epoch,
        /// The highest epoch with a promise, an accepted proposal or a
        /// commit on this server.
        seen: Epoch,
    },
}
