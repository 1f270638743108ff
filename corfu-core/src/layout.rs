//! The layout (CORFU's "projection"): which log units hold which addresses
//! in one epoch.
//!
//! A layout lists segments `[start, end)`; a segment holds stripes; a stripe
//! is a chain of log units (head first, tail last). Address `a` of a
//! segment with `n` stripes lives on stripe `a % n` (stripe and mirror).

use rkyv::{Archive, Deserialize, Serialize};

use crate::types::{Address, ClusterId, Epoch};

/// A node's address as it appears in a layout: its id and where it listens.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeAddr {
    /// The node's configured id.
    pub node_id: String,
    /// `host:port` of its QUIC endpoint.
    pub addr: String,
}

/// A chain of log units that mirror each other (head first, tail last).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Stripe {
    /// The chain, head first.
    pub chain: Vec<NodeAddr>,
}

/// A range of addresses and the stripes that store it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// First address of the segment.
    pub start: Address,
    /// One past the last address; `None` for the open last segment.
    pub end: Option<Address>,
    /// The stripes; address `a` lives on stripe `a % stripes.len()`.
    pub stripes: Vec<Stripe>,
}

/// The configuration of the cluster in one epoch.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The cluster this layout belongs to.
    pub cluster_id: ClusterId,
    /// The layout's version.
    pub epoch: Epoch,
    /// The Paxos acceptors of the layout service.
    pub layout_servers: Vec<NodeAddr>,
    /// Sequencers, the active one first.
    pub sequencers: Vec<NodeAddr>,
    /// Segments in address order.
    pub segments: Vec<Segment>,
}
