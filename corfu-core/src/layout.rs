//! The layout (CORFU's "projection"): which log units hold which addresses
//! in one epoch.
//!
//! A layout lists segments `[start, end)`; a segment holds stripes; a stripe
//! is a chain of log units (head first, tail last). Address `a` of a
//! segment with `n` stripes lives on stripe `a % n` (stripe and mirror,
//! CORFU §3.1).
//!
//! The pure functions here answer where an address lives
//! ([`Layout::segment_of`], [`Layout::stripe_of`], [`Layout::chain_of`])
//! and whether a layout may be used ([`Layout::validate`]) or may follow
//! another ([`Layout::validate_successor`]). Segments are contiguous: the
//! first may start anywhere (addresses below it were trimmed), each next
//! one starts where the previous ends, and only the last is open-ended, so
//! every address at or above the first start has exactly one home.
//!
//! Two more parts keep the address space **monotone across sequencers**
//! (an address is granted at most once in the life of the cluster):
//! - [`Grants`]: the active sequencer of an epoch grants only addresses in
//!   `[start, bound)`. A reconfiguration that learns how far the sealed
//!   sequencer got starts the next one there; one that cannot (the
//!   sequencer is dead, paused or cut off) starts it at `bound`, which the
//!   old one could never reach.
//! - [`Void`] ranges: addresses that were never written and never will be
//!   (granted by a sequencer that was then replaced, or never granted at
//!   all). A read of a void address is junk without asking any log unit,
//!   and range reads skip voids, so a jump of the sequencer costs nothing.

use std::collections::{HashMap, HashSet};

use rkyv::{Archive, Deserialize, Serialize};

use crate::node::config::validate_node_id;
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

/// How many addresses one layout reserves for its active sequencer:
/// `Grants::bound = Grants::start + GRANTS_RESERVED`. A sequencer that dies
/// costs a jump of at most this much (a void range, free to skip); 2^40
/// addresses last 12 days at a million appends a second, and every
/// reconfiguration reserves them anew.
pub const GRANTS_RESERVED: Address = 1 << 40;

/// The addresses the active sequencer of an epoch may grant: `[start,
/// bound)`. Every address a sequencer of an earlier epoch granted is below
/// `start` (see the module docs), so no address is granted twice.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grants {
    /// The first address the epoch's sequencer grants (its bootstrap's
    /// next address).
    pub start: Address,
    /// The sequencer grants nothing at or above this address.
    pub bound: Address,
}

impl Grants {
    /// `[start, start + GRANTS_RESERVED)` (saturating).
    pub fn from(start: Address) -> Grants {
        Grants {
            start,
            bound: start.saturating_add(GRANTS_RESERVED),
        }
    }
}

/// Addresses `[start, end)` that hold nothing and never will: reads answer
/// junk without I/O, range reads skip them, writes there are refused.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Void {
    /// The first void address.
    pub start: Address,
    /// One past the last void address.
    pub end: Address,
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
    /// What this epoch's active sequencer may grant.
    pub grants: Grants,
    /// Void address ranges, sorted and disjoint (see [`Void`]).
    pub voids: Vec<Void>,
}

/// A layout that breaks one of the rules of [`Layout::validate`] or
/// [`Layout::validate_successor`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// The cluster id is the wildcard, which names no cluster.
    #[error("the cluster id is the reserved all-zero id")]
    AnyClusterId,
    /// The epoch is 0; layout epochs start at 1 (0 is a fresh role's epoch).
    #[error("epoch 0 is reserved: layouts start at epoch 1")]
    EpochZero,
    /// No layout server is listed, so no one can decide the next layout.
    #[error("no layout server is listed")]
    NoLayoutServers,
    /// No sequencer is listed, so no one can grant tokens.
    #[error("no sequencer is listed")]
    NoSequencers,
    /// A node is listed twice among the layout servers or the sequencers.
    #[error("node {node_id:?} is listed twice among the {list}")]
    DuplicateNode {
        /// `"layout_servers"` or `"sequencers"`.
        list: &'static str,
        /// The node listed twice.
        node_id: String,
    },
    /// No segment is listed, so no address has a home.
    #[error("no segment is listed")]
    NoSegments,
    /// A segment starts before the previous one ends.
    #[error("segment {segment} starts at {start}, inside segment {} which ends at {previous_end}", segment - 1)]
    SegmentsOverlap {
        /// Index of the segment.
        segment: usize,
        /// Its start.
        start: Address,
        /// End of the previous segment.
        previous_end: Address,
    },
    /// A segment starts after the previous one ends, leaving addresses
    /// without a home.
    #[error("segment {segment} starts at {start}, leaving a gap after segment {} which ends at {previous_end}", segment - 1)]
    SegmentGap {
        /// Index of the segment.
        segment: usize,
        /// Its start.
        start: Address,
        /// End of the previous segment.
        previous_end: Address,
    },
    /// A segment other than the last is open-ended.
    #[error("segment {segment} is open-ended but is not the last segment")]
    OpenSegmentNotLast {
        /// Index of the segment.
        segment: usize,
    },
    /// The last segment is closed, so addresses past it have no home.
    #[error("the last segment ({segment}) is closed at {end}; it must be open-ended")]
    LastSegmentClosed {
        /// Index of the segment.
        segment: usize,
        /// Its end.
        end: Address,
    },
    /// A closed segment holds no address (`end <= start`).
    #[error("segment {segment} is empty: [{start}, {end})")]
    EmptySegment {
        /// Index of the segment.
        segment: usize,
        /// Its start.
        start: Address,
        /// Its end.
        end: Address,
    },
    /// A segment has no stripe.
    #[error("segment {segment} has no stripe")]
    NoStripes {
        /// Index of the segment.
        segment: usize,
    },
    /// A stripe's chain has no log unit.
    #[error("segment {segment}, stripe {stripe}: the chain is empty")]
    EmptyChain {
        /// Index of the segment.
        segment: usize,
        /// Index of the stripe in the segment.
        stripe: usize,
    },
    /// A log unit appears twice in one chain (it would count as two
    /// replicas while being one).
    #[error("segment {segment}, stripe {stripe}: node {node_id:?} is twice in the chain")]
    DuplicateInChain {
        /// Index of the segment.
        segment: usize,
        /// Index of the stripe in the segment.
        stripe: usize,
        /// The node listed twice.
        node_id: String,
    },
    /// A node id is not a valid node id.
    #[error("node id {node_id:?}: {reason}")]
    InvalidNodeId {
        /// The node id.
        node_id: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A node's address is not `host:port` with a non-zero port.
    #[error("node {node_id:?}: address {addr:?} is not host:port")]
    InvalidNodeAddr {
        /// The node id.
        node_id: String,
        /// The address.
        addr: String,
    },
    /// One node id appears with two addresses, or one address with two
    /// node ids.
    #[error("node {node_id:?} at {addr:?} conflicts with {other:?} elsewhere in the layout")]
    InconsistentNode {
        /// The node id.
        node_id: String,
        /// Its address here.
        addr: String,
        /// The other `node_id@addr` seen with the same id or address.
        other: String,
    },
    /// A successor layout names another cluster.
    #[error("the next layout belongs to cluster {next}, not {current}")]
    ClusterChanged {
        /// This layout's cluster.
        current: ClusterId,
        /// The next layout's cluster.
        next: ClusterId,
    },
    /// A successor layout's epoch is not above this one's.
    #[error("the next layout's epoch {next} is not above the current epoch {current}")]
    EpochNotIncreasing {
        /// This layout's epoch.
        current: Epoch,
        /// The next layout's epoch.
        next: Epoch,
    },
    /// The grant range is empty or reversed.
    #[error("the sequencer's grant range [{start}, {bound}) is empty")]
    EmptyGrants {
        /// Its start.
        start: Address,
        /// Its bound.
        bound: Address,
    },
    /// A void range is empty, or not above the previous one.
    #[error("void range {index} [{start}, {end}) is empty or not above the previous one")]
    BadVoid {
        /// Index of the range.
        index: usize,
        /// Its start.
        start: Address,
        /// Its end.
        end: Address,
    },
    /// A successor's grants start below the current ones: addresses could
    /// be granted twice.
    #[error("the next layout's grants start at {next}, below the current start {current}")]
    GrantsBackwards {
        /// This layout's grant start.
        current: Address,
        /// The next layout's grant start.
        next: Address,
    },
    /// A new segment would start below the open segment's start, which
    /// would move addresses that may already be written.
    #[error("a new segment cannot start at {start}, below the open segment's start {open_start}")]
    NewSegmentBelowOpen {
        /// The requested start.
        start: Address,
        /// Where the open segment starts.
        open_start: Address,
    },
}

impl Layout {
    /// Whether `address` lies in a void range (see [`Void`]).
    pub fn is_void(&self, address: Address) -> bool {
        self.void_end(address).is_some()
    }

    /// The end of the void range holding `address`, if one does.
    pub fn void_end(&self, address: Address) -> Option<Address> {
        let after = self.voids.partition_point(|v| v.start <= address);
        let void = self.voids.get(after.checked_sub(1)?)?;
        (address < void.end).then_some(void.end)
    }

    /// The parts of `[from, to)` outside every void range, in order.
    pub fn unvoided(&self, from: Address, to: Address) -> Vec<(Address, Address)> {
        let mut out = Vec::new();
        let mut cursor = from;
        let first = self.voids.partition_point(|v| v.end <= from);
        for void in &self.voids[first..] {
            if cursor >= to || void.start >= to {
                break;
            }
            if void.start > cursor {
                out.push((cursor, void.start));
            }
            cursor = cursor.max(void.end);
        }
        if cursor < to {
            out.push((cursor, to));
        }
        out
    }

    /// Declares `[start, end)` void (nothing if empty), merging with
    /// adjacent or overlapping void ranges.
    pub fn add_void(&mut self, start: Address, end: Address) {
        if end <= start {
            return;
        }
        let mut voids = std::mem::take(&mut self.voids);
        voids.push(Void { start, end });
        voids.sort_by_key(|v| v.start);
        let mut merged: Vec<Void> = Vec::with_capacity(voids.len());
        for v in voids {
            match merged.last_mut() {
                Some(last) if v.start <= last.end => last.end = last.end.max(v.end),
                _ => merged.push(v),
            }
        }
        self.voids = merged;
    }

    /// The segment that holds `address`, if any (none below the first
    /// segment, that is below the trim point, or in an invalid layout).
    pub fn segment_of(&self, address: Address) -> Option<&Segment> {
        // Segments are sorted (validate), so the candidate is the last one
        // starting at or before `address`.
        let after = self.segments.partition_point(|s| s.start <= address);
        let segment = self.segments.get(after.checked_sub(1)?)?;
        match segment.end {
            Some(end) if address >= end => None,
            _ => Some(segment),
        }
    }

    /// The segment, stripe index and stripe that hold `address`: stripe
    /// `address % n` of a segment with `n` stripes (CORFU §3.1, stripe and
    /// mirror).
    pub fn stripe_of(&self, address: Address) -> Option<(&Segment, usize, &Stripe)> {
        let segment = self.segment_of(address)?;
        let count = u64::try_from(segment.stripes.len()).ok()?;
        let index = usize::try_from(address.checked_rem(count)?).ok()?;
        Some((segment, index, segment.stripes.get(index)?))
    }

    /// The chain (head first) that holds `address`.
    pub fn chain_of(&self, address: Address) -> Option<&[NodeAddr]> {
        self.stripe_of(address)
            .map(|(_, _, stripe)| stripe.chain.as_slice())
    }

    /// The open-ended last segment, where new appends land.
    pub fn open_segment(&self) -> Option<&Segment> {
        self.segments.last().filter(|s| s.end.is_none())
    }

    /// The active sequencer (the first listed).
    pub fn active_sequencer(&self) -> Option<&NodeAddr> {
        self.sequencers.first()
    }

    /// Every log unit of every chain, each once, in order of first
    /// appearance: the units a reconfiguration must seal.
    pub fn all_log_units(&self) -> Vec<&NodeAddr> {
        let mut seen = HashSet::new();
        self.segments
            .iter()
            .flat_map(|s| &s.stripes)
            .flat_map(|s| &s.chain)
            .filter(|n| seen.insert(*n))
            .collect()
    }

    /// The layout of the next epoch with the open segment closed at `start`
    /// and a new open segment from `start` on `stripes` (a membership
    /// change: CORFU §3.4, the new projection starts above the sealed
    /// tail). If `start` equals the open segment's start, that segment held
    /// no address yet and is replaced instead of left empty. The result is
    /// checked with [`Layout::validate_successor`].
    pub fn with_new_segment(
        &self,
        start: Address,
        stripes: Vec<Stripe>,
    ) -> Result<Layout, LayoutError> {
        let mut next = self.clone();
        next.epoch = self.epoch.saturating_add(1);
        let open = next.segments.last_mut().filter(|s| s.end.is_none());
        match open {
            Some(open) if start < open.start => {
                return Err(LayoutError::NewSegmentBelowOpen {
                    start,
                    open_start: open.start,
                })
            }
            Some(open) if start == open.start => {
                next.segments.pop();
            }
            Some(open) => open.end = Some(start),
            None => {}
        }
        next.segments.push(Segment {
            start,
            end: None,
            stripes,
        });
        self.validate_successor(&next)?;
        Ok(next)
    }

    /// Merges every run of adjacent segments whose stripes are identical
    /// (same number, same chains in the same order) into one segment from
    /// the first one's start to the last one's end. No address changes its
    /// chain: `a % n` over identical stripes picks the same chain in either
    /// segment. Used once a unit added by state transfer has joined the
    /// older segments' chains, so the layout does not keep one segment per
    /// reconfiguration forever.
    pub fn merge_identical_segments(&mut self) {
        let mut merged: Vec<Segment> = Vec::with_capacity(self.segments.len());
        for segment in self.segments.drain(..) {
            match merged.last_mut() {
                Some(previous)
                    if previous.stripes == segment.stripes
                        && previous.end == Some(segment.start) =>
                {
                    previous.end = segment.end;
                }
                _ => merged.push(segment),
            }
        }
        self.segments = merged;
    }

    /// Whether `node_id` is a member of any chain of any segment.
    pub fn is_log_unit(&self, node_id: &str) -> bool {
        self.segments
            .iter()
            .flat_map(|s| &s.stripes)
            .flat_map(|s| &s.chain)
            .any(|n| n.node_id == node_id)
    }

    /// Checks the layout's rules: a real cluster id, epoch at least 1, at
    /// least one layout server and one sequencer (each listed once),
    /// segments contiguous from the first one's start (which may be any
    /// address, after a trim), only the last open-ended, every closed one
    /// non-empty, every segment striped over non-empty chains without
    /// repeated nodes, and every node with a valid id and a `host:port`
    /// address used consistently across the layout.
    pub fn validate(&self) -> Result<(), LayoutError> {
        if self.cluster_id == ClusterId::ANY {
            return Err(LayoutError::AnyClusterId);
        }
        if self.epoch == 0 {
            return Err(LayoutError::EpochZero);
        }
        if self.layout_servers.is_empty() {
            return Err(LayoutError::NoLayoutServers);
        }
        if self.sequencers.is_empty() {
            return Err(LayoutError::NoSequencers);
        }
        // A repeated layout server would count twice towards a Paxos
        // majority.
        no_duplicates("layout_servers", &self.layout_servers)?;
        no_duplicates("sequencers", &self.sequencers)?;
        if self.grants.bound <= self.grants.start {
            return Err(LayoutError::EmptyGrants {
                start: self.grants.start,
                bound: self.grants.bound,
            });
        }
        let mut previous_end = None;
        for (index, void) in self.voids.iter().enumerate() {
            if void.end <= void.start || previous_end.is_some_and(|end| void.start <= end) {
                return Err(LayoutError::BadVoid {
                    index,
                    start: void.start,
                    end: void.end,
                });
            }
            previous_end = Some(void.end);
        }
        self.validate_segments()?;
        self.validate_nodes()
    }

    fn validate_segments(&self) -> Result<(), LayoutError> {
        let last = match self.segments.len().checked_sub(1) {
            Some(last) => last,
            None => return Err(LayoutError::NoSegments),
        };
        let mut previous_end: Option<Address> = None;
        for (index, segment) in self.segments.iter().enumerate() {
            if let Some(previous_end) = previous_end {
                if segment.start < previous_end {
                    return Err(LayoutError::SegmentsOverlap {
                        segment: index,
                        start: segment.start,
                        previous_end,
                    });
                }
                if segment.start > previous_end {
                    return Err(LayoutError::SegmentGap {
                        segment: index,
                        start: segment.start,
                        previous_end,
                    });
                }
            }
            match segment.end {
                None if index != last => {
                    return Err(LayoutError::OpenSegmentNotLast { segment: index })
                }
                None => {}
                // Tokens are unbounded, so every address above the first
                // segment's start needs a home.
                Some(end) if index == last => {
                    return Err(LayoutError::LastSegmentClosed {
                        segment: index,
                        end,
                    })
                }
                Some(end) if end <= segment.start => {
                    return Err(LayoutError::EmptySegment {
                        segment: index,
                        start: segment.start,
                        end,
                    })
                }
                Some(_) => {}
            }
            previous_end = segment.end;
            if segment.stripes.is_empty() {
                return Err(LayoutError::NoStripes { segment: index });
            }
            for (stripe_index, stripe) in segment.stripes.iter().enumerate() {
                if stripe.chain.is_empty() {
                    return Err(LayoutError::EmptyChain {
                        segment: index,
                        stripe: stripe_index,
                    });
                }
                for (position, node) in stripe.chain.iter().enumerate() {
                    if stripe.chain[..position]
                        .iter()
                        .any(|earlier| earlier.node_id == node.node_id)
                    {
                        return Err(LayoutError::DuplicateInChain {
                            segment: index,
                            stripe: stripe_index,
                            node_id: node.node_id.clone(),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    fn validate_nodes(&self) -> Result<(), LayoutError> {
        let chains = self
            .segments
            .iter()
            .flat_map(|s| &s.stripes)
            .flat_map(|s| &s.chain);
        let mut by_id: HashMap<&str, &NodeAddr> = HashMap::new();
        let mut by_addr: HashMap<&str, &NodeAddr> = HashMap::new();
        for node in self
            .layout_servers
            .iter()
            .chain(&self.sequencers)
            .chain(chains)
        {
            validate_node_id(&node.node_id).map_err(|reason| LayoutError::InvalidNodeId {
                node_id: node.node_id.clone(),
                reason,
            })?;
            if !is_host_port(&node.addr) {
                return Err(LayoutError::InvalidNodeAddr {
                    node_id: node.node_id.clone(),
                    addr: node.addr.clone(),
                });
            }
            // A node has one endpoint and an endpoint one node; anything
            // else means two entries disagree about who lives where.
            for seen in [
                *by_id.entry(&node.node_id).or_insert(node),
                *by_addr.entry(&node.addr).or_insert(node),
            ] {
                if seen != node {
                    return Err(LayoutError::InconsistentNode {
                        node_id: node.node_id.clone(),
                        addr: node.addr.clone(),
                        other: format!("{}@{}", seen.node_id, seen.addr),
                    });
                }
            }
        }
        Ok(())
    }

    /// Checks that `next` may follow this layout: same cluster, higher
    /// epoch, and valid on its own.
    pub fn validate_successor(&self, next: &Layout) -> Result<(), LayoutError> {
        if next.cluster_id != self.cluster_id {
            return Err(LayoutError::ClusterChanged {
                current: self.cluster_id,
                next: next.cluster_id,
            });
        }
        if next.epoch <= self.epoch {
            return Err(LayoutError::EpochNotIncreasing {
                current: self.epoch,
                next: next.epoch,
            });
        }
        if next.grants.start < self.grants.start {
            return Err(LayoutError::GrantsBackwards {
                current: self.grants.start,
                next: next.grants.start,
            });
        }
        next.validate()
    }
}

fn no_duplicates(list: &'static str, nodes: &[NodeAddr]) -> Result<(), LayoutError> {
    for (position, node) in nodes.iter().enumerate() {
        if nodes[..position].iter().any(|n| n.node_id == node.node_id) {
            return Err(LayoutError::DuplicateNode {
                list,
                node_id: node.node_id.clone(),
            });
        }
    }
    Ok(())
}

/// Whether `addr` is `host:port` (`[v6]:port` for IPv6) with a non-zero
/// port: a layout names where a node listens, and port 0 listens nowhere.
fn is_host_port(addr: &str) -> bool {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return false;
    };
    if !matches!(port.parse::<u16>(), Ok(p) if p != 0) {
        return false;
    }
    let host = match host.strip_prefix('[') {
        Some(rest) => match rest.strip_suffix(']') {
            Some(v6) => return v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => return false,
        },
        None => host,
    };
    !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(i: u16) -> NodeAddr {
        NodeAddr {
            node_id: format!("n{i}"),
            addr: format!("127.0.0.1:{}", 7000 + i),
        }
    }

    fn stripe(ids: &[u16]) -> Stripe {
        Stripe {
            chain: ids.iter().map(|i| node(*i)).collect(),
        }
    }

    /// Epoch 3: [10, 100) on 2 stripes of 2, [100, ..) on 3 stripes of 1.
    fn layout() -> Layout {
        Layout {
            cluster_id: ClusterId(0xc0ffee),
            epoch: 3,
            layout_servers: vec![node(1), node(2), node(3)],
            sequencers: vec![node(1), node(2)],
            segments: vec![
                Segment {
                    start: 10,
                    end: Some(100),
                    stripes: vec![stripe(&[1, 2]), stripe(&[3, 4])],
                },
                Segment {
                    start: 100,
                    end: None,
                    stripes: vec![stripe(&[1]), stripe(&[2]), stripe(&[3])],
                },
            ],
            grants: crate::layout::Grants::from(0),
            voids: vec![],
        }
    }

    fn invalid(change: impl FnOnce(&mut Layout)) -> LayoutError {
        let mut l = layout();
        change(&mut l);
        match l.validate() {
            Err(e) => e,
            Ok(()) => panic!("layout should be invalid: {l:?}"),
        }
    }

    #[test]
    fn the_reference_layout_is_valid() {
        assert_eq!(layout().validate(), Ok(()));
    }

    #[test]
    fn address_maps_to_its_segment_and_none_outside() {
        let l = layout();
        assert_eq!(l.segment_of(9), None, "below the first segment (trimmed)");
        assert_eq!(l.segment_of(10).map(|s| s.start), Some(10));
        assert_eq!(l.segment_of(99).map(|s| s.start), Some(10));
        assert_eq!(l.segment_of(100).map(|s| s.start), Some(100));
        assert_eq!(l.segment_of(u64::MAX).map(|s| s.start), Some(100));
    }

    #[test]
    fn address_lives_on_stripe_address_mod_stripe_count() {
        let l = layout();
        for a in 10..300u64 {
            let (segment, index, stripe) = l.stripe_of(a).unwrap();
            let n = segment.stripes.len() as u64;
            assert_eq!(index as u64, a % n, "address {a}");
            assert_eq!(stripe, &segment.stripes[index]);
            assert_eq!(l.chain_of(a), Some(stripe.chain.as_slice()));
        }
        assert_eq!(l.chain_of(11), Some(&[node(3), node(4)][..]));
        assert_eq!(l.chain_of(101), Some(&[node(3)][..]), "101 % 3 = 2");
        assert_eq!(l.stripe_of(5), None);
        assert_eq!(l.chain_of(5), None);
    }

    #[test]
    fn lookups_never_panic_on_a_layout_without_stripes() {
        let mut l = layout();
        l.segments[1].stripes.clear();
        assert!(l.segment_of(150).is_some());
        assert_eq!(l.stripe_of(150), None);
        assert_eq!(l.chain_of(150), None);
    }

    #[test]
    fn all_log_units_lists_each_chain_member_once() {
        let l = layout();
        let units = l.all_log_units();
        assert_eq!(units, vec![&node(1), &node(2), &node(3), &node(4)]);
    }

    #[test]
    fn open_segment_and_active_sequencer() {
        let l = layout();
        assert_eq!(l.open_segment().map(|s| s.start), Some(100));
        assert_eq!(l.active_sequencer(), Some(&node(1)));
    }

    #[test]
    fn rule_cluster_id_is_not_any() {
        assert_eq!(
            invalid(|l| l.cluster_id = ClusterId::ANY),
            LayoutError::AnyClusterId
        );
    }

    #[test]
    fn rule_epoch_is_at_least_one() {
        assert_eq!(invalid(|l| l.epoch = 0), LayoutError::EpochZero);
    }

    #[test]
    fn rule_at_least_one_layout_server_and_sequencer() {
        assert_eq!(
            invalid(|l| l.layout_servers.clear()),
            LayoutError::NoLayoutServers
        );
        assert_eq!(invalid(|l| l.sequencers.clear()), LayoutError::NoSequencers);
    }

    #[test]
    fn rule_layout_servers_and_sequencers_listed_once() {
        assert_eq!(
            invalid(|l| l.layout_servers.push(node(2))),
            LayoutError::DuplicateNode {
                list: "layout_servers",
                node_id: "n2".into()
            }
        );
        assert_eq!(
            invalid(|l| l.sequencers.push(node(1))),
            LayoutError::DuplicateNode {
                list: "sequencers",
                node_id: "n1".into()
            }
        );
    }

    #[test]
    fn rule_at_least_one_segment() {
        assert_eq!(invalid(|l| l.segments.clear()), LayoutError::NoSegments);
    }

    #[test]
    fn rule_first_segment_may_start_anywhere() {
        let mut l = layout();
        l.segments.remove(0);
        assert_eq!(l.validate(), Ok(()), "starting at 100 after a trim");
        l.segments[0].start = 0;
        assert_eq!(l.validate(), Ok(()));
    }

    #[test]
    fn rule_segments_do_not_overlap() {
        assert_eq!(
            invalid(|l| l.segments[1].start = 99),
            LayoutError::SegmentsOverlap {
                segment: 1,
                start: 99,
                previous_end: 100
            }
        );
        // A segment entirely below the previous one (out of order) too.
        assert_eq!(
            invalid(|l| l.segments[1].start = 0),
            LayoutError::SegmentsOverlap {
                segment: 1,
                start: 0,
                previous_end: 100
            }
        );
    }

    #[test]
    fn rule_segments_are_contiguous() {
        assert_eq!(
            invalid(|l| l.segments[1].start = 101),
            LayoutError::SegmentGap {
                segment: 1,
                start: 101,
                previous_end: 100
            }
        );
    }

    #[test]
    fn rule_only_the_last_segment_is_open_ended() {
        assert_eq!(
            invalid(|l| l.segments[0].end = None),
            LayoutError::OpenSegmentNotLast { segment: 0 }
        );
        assert_eq!(
            invalid(|l| l.segments[1].end = Some(200)),
            LayoutError::LastSegmentClosed {
                segment: 1,
                end: 200
            }
        );
    }

    #[test]
    fn rule_closed_segments_are_not_empty() {
        assert_eq!(
            invalid(|l| {
                l.segments[0].end = Some(10);
                l.segments[1].start = 10;
            }),
            LayoutError::EmptySegment {
                segment: 0,
                start: 10,
                end: 10
            }
        );
    }

    #[test]
    fn rule_every_segment_has_a_stripe() {
        assert_eq!(
            invalid(|l| l.segments[0].stripes.clear()),
            LayoutError::NoStripes { segment: 0 }
        );
    }

    #[test]
    fn rule_every_chain_is_non_empty() {
        assert_eq!(
            invalid(|l| l.segments[1].stripes[2].chain.clear()),
            LayoutError::EmptyChain {
                segment: 1,
                stripe: 2
            }
        );
    }

    #[test]
    fn rule_no_node_twice_in_one_chain() {
        assert_eq!(
            invalid(|l| l.segments[0].stripes[1] = stripe(&[3, 4, 3])),
            LayoutError::DuplicateInChain {
                segment: 0,
                stripe: 1,
                node_id: "n3".into()
            }
        );
        // The same node on two stripes is fine (it stores both).
        let mut l = layout();
        l.segments[0].stripes[1] = stripe(&[1, 2]);
        assert_eq!(l.validate(), Ok(()));
    }

    #[test]
    fn rule_node_ids_are_valid() {
        let e = invalid(|l| l.segments[0].stripes[0].chain[0].node_id = "n 1".into());
        assert!(matches!(e, LayoutError::InvalidNodeId { node_id, .. } if node_id == "n 1"));
        let e = invalid(|l| l.sequencers[0].node_id = String::new());
        assert!(matches!(e, LayoutError::InvalidNodeId { .. }));
    }

    #[test]
    fn rule_addresses_are_host_port() {
        for bad in [
            "nohost",
            ":7000",
            "h:notaport",
            "h:0",
            "h:70000",
            "h h:7000",
            "::1:7000",
            "[::1:7000",
            "[zz]:7000",
        ] {
            let e = invalid(|l| l.layout_servers[2].addr = bad.into());
            assert_eq!(
                e,
                LayoutError::InvalidNodeAddr {
                    node_id: "n3".into(),
                    addr: bad.into()
                },
                "{bad}"
            );
        }
        for good in ["node-3.example:80", "[::1]:7003", "10.0.0.3:7003"] {
            assert!(is_host_port(good), "{good}");
        }
    }

    #[test]
    fn rule_a_node_has_one_address_and_an_address_one_node() {
        let e = invalid(|l| l.segments[1].stripes[0].chain[0].addr = "127.0.0.1:9999".into());
        assert!(matches!(e, LayoutError::InconsistentNode { node_id, .. } if node_id == "n1"));
        let e = invalid(|l| l.segments[1].stripes[0].chain[0].node_id = "n9".into());
        assert!(matches!(e, LayoutError::InconsistentNode { node_id, .. } if node_id == "n9"));
    }

    #[test]
    fn rule_successor_keeps_the_cluster_and_raises_the_epoch() {
        let l = layout();
        let mut next = layout();
        next.epoch = 4;
        assert_eq!(l.validate_successor(&next), Ok(()));
        next.cluster_id = ClusterId(7);
        assert_eq!(
            l.validate_successor(&next),
            Err(LayoutError::ClusterChanged {
                current: l.cluster_id,
                next: ClusterId(7)
            })
        );
        for epoch in [2, 3] {
            let mut next = layout();
            next.epoch = epoch;
            assert_eq!(
                l.validate_successor(&next),
                Err(LayoutError::EpochNotIncreasing {
                    current: 3,
                    next: epoch
                })
            );
        }
    }

    #[test]
    fn rule_successor_must_be_valid() {
        let mut next = layout();
        next.epoch = 4;
        next.segments[0].stripes.clear();
        assert_eq!(
            layout().validate_successor(&next),
            Err(LayoutError::NoStripes { segment: 0 })
        );
    }

    #[test]
    fn new_segment_closes_the_open_one_at_its_start() {
        let l = layout();
        let next = l.with_new_segment(250, vec![stripe(&[4, 5])]).unwrap();
        assert_eq!(next.epoch, 4);
        assert_eq!(next.segments.len(), 3);
        assert_eq!(next.segments[1].end, Some(250));
        assert_eq!(next.chain_of(249), Some(&[node(1)][..]), "249 % 3 = 0");
        assert_eq!(next.chain_of(250), Some(&[node(4), node(5)][..]));
        assert_eq!(next.open_segment().map(|s| s.start), Some(250));
        // Addresses below the new segment keep their chains.
        for a in 10..250 {
            assert_eq!(next.chain_of(a), l.chain_of(a), "address {a}");
        }
    }

    #[test]
    fn new_segment_at_the_open_start_replaces_the_unused_open_segment() {
        let next = layout().with_new_segment(100, vec![stripe(&[5])]).unwrap();
        assert_eq!(next.segments.len(), 2);
        assert_eq!(next.chain_of(100), Some(&[node(5)][..]));
    }

    #[test]
    fn new_segment_never_moves_written_addresses() {
        assert_eq!(
            layout().with_new_segment(99, vec![stripe(&[5])]),
            Err(LayoutError::NewSegmentBelowOpen {
                start: 99,
                open_start: 100
            })
        );
        assert_eq!(
            layout().with_new_segment(300, vec![]),
            Err(LayoutError::NoStripes { segment: 2 })
        );
    }

    #[test]
    fn merging_identical_segments_moves_no_address() {
        let mut l = layout();
        // [10, 100) 2 stripes, [100, 150) and [150, 220) and [220, ..) the
        // same 3 stripes, then a different one would stay apart.
        l = l
            .with_new_segment(150, l.segments[1].stripes.clone())
            .unwrap();
        l = l
            .with_new_segment(220, l.segments[2].stripes.clone())
            .unwrap();
        assert_eq!(l.segments.len(), 4);
        let before = l.clone();
        l.merge_identical_segments();
        assert_eq!(l.validate(), Ok(()));
        assert_eq!(l.segments.len(), 2);
        assert_eq!(l.segments[1].start, 100);
        assert_eq!(l.segments[1].end, None);
        for a in 0..400 {
            assert_eq!(l.chain_of(a), before.chain_of(a), "address {a}");
        }
        // Different stripes (or the same chains in another order) stay apart.
        let mut l = layout();
        l = l
            .with_new_segment(150, vec![stripe(&[2]), stripe(&[1]), stripe(&[3])])
            .unwrap();
        l.merge_identical_segments();
        assert_eq!(l.segments.len(), 3);
    }

    #[test]
    fn log_unit_membership() {
        let l = layout();
        assert!(l.is_log_unit("n4"));
        assert!(!l.is_log_unit("n5"));
    }

    #[test]
    fn errors_print_one_line() {
        let e = invalid(|l| l.segments[1].start = 101);
        let text = e.to_string();
        assert!(text.contains("gap") && !text.contains('\n'), "{text}");
    }
}
