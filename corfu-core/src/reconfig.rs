//! Reconfiguration (CORFU §3.4, DESIGN §4 "Layout service"): seal the
//! current epoch, compute the next layout from the tails the seal returned,
//! decide it through the Paxos layout service, and bootstrap the new
//! epoch's sequencer at the layout's grant range.
//!
//! [`plan`] is the pure rule: the next layout for a [`Change`] given the
//! current layout and the recovered tail. [`Reconfigurer`] is the driver.
//!
//! Rules:
//! - **Seal first.** Every log unit of the current layout (except a node
//!   being removed) must acknowledge `Seal(e + 1)`; from then on it refuses
//!   writes of epoch `e`, so the tails it reports bound every write that
//!   can still be acknowledged in `e`. Sequencers are sealed as well, and
//!   answer with their incarnation and how far they granted in `e`; a
//!   sequencer that missed the seal can only hand out tokens of epoch `e`,
//!   whose writes the sealed units refuse, and its tails stop being served
//!   when its lease runs out.
//! - **No address is granted twice.** The next sequencer starts at
//!   `max(T, K)` when the sealed active sequencer reported its next address
//!   `K` for `e`, otherwise at `max(T, bound of e's grants)`; `[T, start)`
//!   becomes a void range (junk without I/O). The new active sequencer is
//!   one that answered the seal, bootstrapped as that incarnation, once.
//!   See ARCHITECTURE.md, "Sequencer" and "Reconfiguration".
//! - **The tail.** `T` is one past the highest address any sealed unit
//!   holds (and at least every trim mark and the open segment's start).
//!   Every acknowledged entry is on every member of its chain, so any one
//!   surviving member per chain is enough to know it.
//! - **Removing a node** takes it out of every chain of every segment (the
//!   survivors hold every acknowledged entry; an entry that only the removed
//!   node held was never acknowledged and readers will complete or junk its
//!   address) and out of the sequencer list; the open segment is closed at
//!   `T` and a new one opens there on the surviving chains. Layout servers
//!   stay as they are: the Paxos acceptor set changes only by an explicit
//!   decision, never as a side effect.
//! - **Adding a chain member** ([`Change::AddNode`], CORFU §3.4 and
//!   CorfuDB's state transfer) takes two epochs around a state transfer.
//!   Epoch `e + 1` closes the open segment at `T` and opens a new one from
//!   `T` in which the unit is the new tail of the shortest chain; the unit
//!   is sealed first (before any member), and its own tail counts towards
//!   `T`, so it holds nothing at or above `T` (a unit back from a failure
//!   may hold writes that were never acknowledged). The
//!   [`crate::state_transfer`] then copies the closed segments of that
//!   chain to it, and epoch `e + 2` ([`plan_join`]) makes it a member of
//!   those chains too and merges adjacent identical segments. If the unit
//!   turns out to hold a value the log does not, it is removed again.
//!   Running the change again after an interruption resumes it (a unit in
//!   the open segment that still lacks older parts of its chain).
//! - **Adding a stripe** (`stripe: true`) opens a new segment from `T` with
//!   one more stripe whose chain is the unit alone: the log's throughput
//!   grows with the stripes, nothing needs transferring, and the new chain
//!   reaches the others' length by adding further units as chain members
//!   (they join the shortest chain). The unit must hold no data.
//! - **Racing engines are safe.** Sealing is idempotent and Paxos decides
//!   one layout per epoch. Only the engine whose own proposal was decided
//!   (committed by a majority) bootstraps the sequencer; an engine whose
//!   proposal lost adopts the decided layout and leaves the bootstrap to
//!   the winner. A decided epoch whose sequencer never got its bootstrap is
//!   repaired by the next reconfiguration (the detectors seal a sequencer
//!   that answers but does not serve).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use crate::layout::{Grants, Layout, LayoutError, NodeAddr, Stripe};
use crate::layout_service::proposer::{fetch_layout_counted, ProposeError, Proposer};
use crate::sequencer::lease;
use crate::state_transfer::{
    parts_to_transfer, ChainPart, StateTransfer, TransferError, TransferReport,
};
use crate::transport::{ClientEndpoint, TransportError};
use crate::types::{Address, ClusterId, Epoch, Role, StreamId};
use crate::wire::logunit::{LogUnitRequest, LogUnitResponse, Tails};
use crate::wire::sequencer::{SequencerRequest, SequencerResponse};
use crate::wire::{Request, Response, ServerErrorKind};

/// What a reconfiguration changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new epoch with the same membership: fences every client of the
    /// current epoch and re-bootstraps the sequencer.
    Seal,
    /// Remove the node with this id from every chain and from the
    /// sequencer list. Removing the active sequencer is the sequencer
    /// failover: the next one listed takes over, bootstrapped from the
    /// sealed tails.
    RemoveNode(String),
    /// Remove several nodes in one reconfiguration (overlapping failures):
    /// none of them is waited for by the seal, so two dead members of a
    /// chain do not wait for each other. Nodes already gone from the layout
    /// are skipped; at least one must still be in it.
    RemoveNodes(Vec<String>),
    /// Add the log unit `node`. As a chain member (`stripe: false`) it
    /// joins the shortest chain of the open segment (as its tail), receives
    /// the older segments of that chain by state transfer, and then joins
    /// their chains as well (see the module rules). With `stripe: true` a
    /// new segment gets one more stripe whose chain is the unit alone.
    AddNode {
        /// The unit's id and address.
        node: NodeAddr,
        /// Add a stripe instead of joining a chain.
        stripe: bool,
    },
}

impl Change {
    /// The nodes the change removes (none for other changes).
    pub fn removed(&self) -> Vec<&str> {
        match self {
            Change::RemoveNode(node) => vec![node.as_str()],
            Change::RemoveNodes(nodes) => nodes.iter().map(String::as_str).collect(),
            Change::Seal | Change::AddNode { .. } => Vec::new(),
        }
    }
}

/// A reconfiguration could not be completed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReconfigError {
    /// The change cannot apply to this layout.
    #[error("cannot reconfigure: {0}")]
    Invalid(String),
    /// A log unit that stays in the layout did not acknowledge the seal.
    #[error("log unit {node} did not acknowledge the seal of epoch {epoch}: {reason} (remove it instead?)")]
    SealFailed {
        /// The unit's node id.
        node: String,
        /// The epoch being sealed.
        epoch: Epoch,
        /// Why.
        reason: String,
    },
    /// A node to add is unreachable, of another cluster, or no log unit.
    #[error("cannot add node {node} at {addr}: {reason}")]
    NodeRefused {
        /// The node's id.
        node: String,
        /// Its address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The state transfer to an added unit failed.
    #[error("state transfer to {node} failed: {error}; {}", if *removed_again {
        "the node was removed from the layout again"
    } else {
        "the node stays in the open segment (run add-node again to finish)"
    })]
    Transfer {
        /// The unit.
        node: String,
        /// What went wrong (boxed: it is large, and rare).
        error: Box<TransferError>,
        /// Whether the unit was taken out of the layout again (it holds
        /// values the log does not).
        removed_again: bool,
    },
    /// The layout service could not decide.
    #[error(transparent)]
    Layout(#[from] ProposeError),
    /// The new layout is invalid.
    #[error("the new layout is invalid: {0}")]
    Plan(#[from] LayoutError),
    /// The layout moved past the epoch this engine was bound to (see
    /// [`Reconfigurer::only_up_to_epoch`]): whatever prompted the change
    /// may no longer hold, so nothing was done.
    #[error("the layout is at epoch {current}, past epoch {bound} this change was meant for; nothing done")]
    Outdated {
        /// The highest epoch the engine may act on.
        bound: Epoch,
        /// The epoch now committed.
        current: Epoch,
    },
    /// The layout was decided but its sequencer could not be bootstrapped;
    /// appends wait until a later reconfiguration (a detector's seal, or
    /// one run by hand) starts the next epoch's sequencer.
    #[error(
        "epoch {epoch} is decided but its sequencer {node} could not be bootstrapped: {reason}"
    )]
    Bootstrap {
        /// The decided epoch.
        epoch: Epoch,
        /// The sequencer's node id.
        node: String,
        /// Why.
        reason: String,
    },
}

/// What a completed reconfiguration did.
#[derive(Debug, Clone)]
pub struct Reconfigured {
    /// The layout now in force.
    pub layout: Layout,
    /// The recovered tail (the sequencer's next address).
    pub tail: Address,
    /// Whether the decided layout is the one this engine proposed (two
    /// engines making the same change from the same seal propose the same
    /// layout); false if another reconfiguration had already done the
    /// change.
    pub won: bool,
    /// Time from the start of the seal to the bootstrapped sequencer (for
    /// an added chain member: from the first seal to the end).
    pub elapsed: Duration,
    /// For [`Change::AddNode`]: what each step did.
    pub added: Option<Added>,
}

/// The steps of adding a log unit.
#[derive(Debug, Clone, Default)]
pub struct Added {
    /// The epoch that put the unit in the open segment and how long that
    /// reconfiguration took (seal to bootstrapped sequencer); `None` if an
    /// earlier, interrupted run had done it.
    pub joined_open: Option<(Epoch, Duration)>,
    /// The state transfer (empty for a stripe).
    pub transfer: TransferReport,
    /// The epoch that made the unit a member of the older segments' chains
    /// and how long that reconfiguration took; `None` if there were none.
    pub joined_older: Option<(Epoch, Duration)>,
}

/// The next address and the per-stream tails from the tails log units
/// reported: one past the highest address any unit holds (and not below any
/// trim mark), and each stream's highest address on any unit.
pub fn merge_tails<'a>(
    tails: impl IntoIterator<Item = &'a Tails>,
) -> (Address, Vec<(StreamId, Address)>) {
    let mut next: Address = 0;
    let mut streams: BTreeMap<StreamId, Address> = BTreeMap::new();
    for t in tails {
        if let Some(global) = t.global {
            next = next.max(global.saturating_add(1));
        }
        next = next.max(t.trim_mark);
        for &(stream, tail) in &t.streams {
            let known = streams.entry(stream).or_insert(tail);
            *known = (*known).max(tail);
        }
    }
    (next, streams.into_iter().collect())
}

/// The layout of epoch `current.epoch + 1` for `change`, given the
/// recovered tail `tail` (see the module rules).
pub fn plan(current: &Layout, change: &Change, tail: Address) -> Result<Layout, ReconfigError> {
    let mut next = current.clone();
    match change {
        Change::Seal => {
            next.epoch = current.epoch.saturating_add(1);
            current.validate_successor(&next)?;
        }
        Change::RemoveNode(_) | Change::RemoveNodes(_) => {
            let mut gone: Vec<&str> = change
                .removed()
                .into_iter()
                .filter(|node| mentions(current, node))
                .collect();
            gone.sort_unstable();
            gone.dedup();
            if gone.is_empty() {
                let names = change.removed().join(", ");
                return Err(ReconfigError::Invalid(format!(
                    "node {names} is neither a log unit nor a sequencer of epoch {}",
                    current.epoch
                )));
            }
            let names = gone.join(", ");
            let is = |n: &NodeAddr| gone.contains(&n.node_id.as_str());
            for segment in &mut next.segments {
                for (index, stripe) in segment.stripes.iter_mut().enumerate() {
                    stripe.chain.retain(|n| !is(n));
                    if stripe.chain.is_empty() {
                        let whom = if gone.len() == 1 {
                            format!("node {names} is the last log unit")
                        } else {
                            format!("nodes {names} are every log unit")
                        };
                        return Err(ReconfigError::Invalid(format!(
                            "{whom} of stripe {index} of the segment from {}: removing them would lose that stripe",
                            segment.start
                        )));
                    }
                }
            }
            next.sequencers.retain(|n| !is(n));
            if next.sequencers.is_empty() {
                return Err(ReconfigError::Invalid(if gone.len() == 1 {
                    format!("node {names} is the only sequencer")
                } else {
                    format!("nodes {names} are every sequencer")
                }));
            }
            let open_start = next.open_segment().map_or(0, |s| s.start);
            let stripes: Vec<Stripe> = next
                .open_segment()
                .map(|s| s.stripes.clone())
                .unwrap_or_default();
            next = next.with_new_segment(tail.max(open_start), stripes)?;
            current.validate_successor(&next)?;
        }
        Change::AddNode { node, stripe } => {
            let open = current.open_segment().ok_or_else(|| {
                ReconfigError::Invalid(format!(
                    "the layout of epoch {} has no open segment",
                    current.epoch
                ))
            })?;
            if let Some(index) = open
                .stripes
                .iter()
                .position(|s| s.chain.iter().any(|n| n.node_id == node.node_id))
            {
                return Err(ReconfigError::Invalid(format!(
                    "node {} is already a log unit of the open segment (stripe {index})",
                    node.node_id
                )));
            }
            let mut stripes = open.stripes.clone();
            if *stripe {
                stripes.push(Stripe {
                    chain: vec![node.clone()],
                });
            } else {
                // The least replicated chain; the first of equals. The unit
                // becomes its tail (CORFU's chains, like chain replication,
                // grow at the tail); it holds every address of the new
                // segment from the segment's start.
                let shortest = (0..stripes.len())
                    .min_by_key(|&i| (stripes[i].chain.len(), i))
                    .ok_or_else(|| {
                        ReconfigError::Invalid("the open segment has no stripe".into())
                    })?;
                stripes[shortest].chain.push(node.clone());
            }
            next = current.with_new_segment(tail.max(open.start), stripes)?;
        }
    }
    Ok(next)
}

/// The layout of epoch `current.epoch + 1` in which `node`, already in the
/// open segment, also joins (as tail) the chains of `parts`, which the
/// state transfer has copied to it; adjacent segments with identical
/// stripes then merge ([`Layout::merge_identical_segments`]). Fails if
/// `node` left the open segment or a part's segment changed meanwhile.
pub fn plan_join(
    current: &Layout,
    node: &NodeAddr,
    parts: &[ChainPart],
) -> Result<Layout, ReconfigError> {
    let in_open = current.open_segment().is_some_and(|open| {
        open.stripes
            .iter()
            .any(|s| s.chain.iter().any(|n| n.node_id == node.node_id))
    });
    if !in_open {
        return Err(ReconfigError::Invalid(format!(
            "node {} left the open segment during the state transfer (epoch {})",
            node.node_id, current.epoch
        )));
    }
    let mut next = current.clone();
    next.epoch = current.epoch.saturating_add(1);
    for part in parts {
        let segment = next
            .segments
            .iter_mut()
            .find(|s| {
                s.start == part.segment_start
                    && s.end == Some(part.segment_end)
                    && s.stripes.len() == part.stripes
            })
            .ok_or_else(|| {
                ReconfigError::Invalid(format!(
                    "segment [{}, {}) changed during the state transfer to {}; add the node again",
                    part.segment_start, part.segment_end, node.node_id
                ))
            })?;
        let chain = &mut segment.stripes[part.stripe].chain;
        if !chain.iter().any(|n| n.node_id == node.node_id) {
            chain.push(node.clone());
        }
    }
    next.merge_identical_segments();
    current.validate_successor(&next)?;
    Ok(next)
}

/// Attempts of one [`Reconfigurer::reconfigure`] call when other
/// reconfigurations keep deciding first.
pub const ATTEMPTS_MAX: u32 = 4;

/// Whether `node` is a log unit or sequencer of `layout`.
fn mentions(layout: &Layout, node: &str) -> bool {
    layout
        .segments
        .iter()
        .flat_map(|s| &s.stripes)
        .flat_map(|s| &s.chain)
        .chain(&layout.sequencers)
        .any(|n| n.node_id == node)
}

/// One layout change the engine makes.
#[derive(Clone, Copy)]
enum Step<'a> {
    /// A change as asked (for [`Change::AddNode`]: its first epoch).
    Change(&'a Change),
    /// The second epoch of adding a chain member: `node` joins the chains
    /// of `parts`, which the state transfer copied to it.
    Join {
        node: &'a NodeAddr,
        parts: &'a [ChainPart],
    },
}

impl Step<'_> {
    /// Whether `current` already has this change in force (another engine,
    /// or an earlier attempt of this one, made it); an error if the change
    /// cannot apply at all.
    fn done_in(&self, current: &Layout, attempt: u32) -> Result<bool, ReconfigError> {
        match *self {
            Step::Change(Change::Seal) => Ok(false),
            Step::Change(change @ (Change::RemoveNode(_) | Change::RemoveNodes(_))) => {
                let nodes = change.removed();
                let present = nodes.iter().any(|node| mentions(current, node));
                let known = attempt > 0
                    || nodes
                        .iter()
                        .any(|node| current.layout_servers.iter().any(|n| n.node_id == *node));
                if !present && !known {
                    return Err(ReconfigError::Invalid(format!(
                        "node {} is not in the layout of epoch {} (already removed, or never a member)",
                        nodes.join(", "),
                        current.epoch
                    )));
                }
                Ok(!present)
            }
            Step::Change(Change::AddNode { node, .. }) => {
                Ok(current.open_segment().is_some_and(|open| {
                    open.stripes
                        .iter()
                        .any(|s| s.chain.iter().any(|n| n.node_id == node.node_id))
                }))
            }
            Step::Join { node, parts } => {
                // plan_join reports a unit that left the open segment.
                Ok(parts.iter().all(|part| {
                    current.segments.iter().any(|s| {
                        s.start <= part.segment_start
                            && s.end.is_none_or(|end| end >= part.segment_end)
                            && s.stripes.len() == part.stripes
                            && s.stripes[part.stripe]
                                .chain
                                .iter()
                                .any(|n| n.node_id == node.node_id)
                    })
                }))
            }
        }
    }
}

/// Runs reconfigurations against one cluster.
#[derive(Debug, Clone)]
pub struct Reconfigurer {
    endpoint: ClientEndpoint,
    layout_servers: Vec<String>,
    seal_timeout: Duration,
    epoch_bound: Option<Epoch>,
    keep_answering: bool,
    hold_after_seal: bool,
}

impl Reconfigurer {
    /// An engine for the cluster whose layout servers are
    /// `layout_servers`. A log unit that does not answer a seal within
    /// 500 ms counts as not answering.
    pub fn new(endpoint: ClientEndpoint, layout_servers: Vec<String>) -> Reconfigurer {
        Reconfigurer {
            endpoint,
            layout_servers,
            seal_timeout: Duration::from_millis(500),
            epoch_bound: None,
            keep_answering: false,
            hold_after_seal: false,
        }
    }

    /// Test hook (the `corfu` CLI sets it when `CORFU_TEST_HOLD_AFTER_SEAL`
    /// is set): once the seal of the units and sequencers succeeded and
    /// before anything is proposed, print `sealed epoch N; holding
    /// (CORFU_TEST_HOLD_AFTER_SEAL)` to stderr and wait forever, so a test
    /// can kill a reconfiguring process between its seal and its proposal.
    #[doc(hidden)]
    pub fn hold_after_seal(mut self) -> Reconfigurer {
        self.hold_after_seal = true;
        self
    }

    /// A node being removed that acknowledges the seal is kept after all
    /// (as a sealed member, its tails counted in `T`): the evidence against
    /// it is stale. For removals of nodes suspected unreachable (the
    /// failure detector's), whose suspicion may be older than a healed
    /// partition: the removal can be retrying for seconds while it waits
    /// for a majority of layout servers, and once the links come back it
    /// would otherwise take out nodes that are alive. An answer is waited
    /// for until the other seals are in, and at most as long again (at
    /// least [`SEAL_GRACE_GONE`], at most [`SEAL_TIMEOUT_GONE`]); a removal
    /// left with no node to remove becomes a [`Change::Seal`].
    pub fn keep_removed_that_answer(mut self) -> Reconfigurer {
        self.keep_answering = true;
        self
    }

    /// Binds the engine to layouts up to `epoch`: a change not already
    /// made fails with [`ReconfigError::Outdated`], doing nothing, once
    /// the committed layout is newer (also between its own retries). The
    /// failure detector binds its removals to the epoch its evidence is
    /// about, so a removal still retrying cannot take out a node that was
    /// added back meanwhile.
    pub fn only_up_to_epoch(mut self, epoch: Epoch) -> Reconfigurer {
        self.epoch_bound = Some(epoch);
        self
    }

    /// The highest committed layout. Fails if the engine's layout servers
    /// (a client config's list) name a server the layout does not list:
    /// the config belongs to another cluster or is out of date.
    pub async fn current(&self) -> Result<Layout, ReconfigError> {
        Ok(self.current_counted().await?.0)
    }

    /// [`Reconfigurer::current`], and how many layout servers answered.
    async fn current_counted(&self) -> Result<(Layout, usize), ReconfigError> {
        let (layout, reached) = fetch_layout_counted(&self.endpoint, &self.layout_servers).await?;
        if let Some(stray) = self
            .layout_servers
            .iter()
            .find(|a| !layout.layout_servers.iter().any(|n| &n.addr == *a))
        {
            return Err(ReconfigError::Invalid(format!(
                "the configuration names layout server {stray}, which the layout of epoch {} does not list ({}); fix the cluster config",
                layout.epoch,
                layout
                    .layout_servers
                    .iter()
                    .map(|n| format!("{}@{}", n.node_id, n.addr))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok((layout, reached))
    }

    /// Seals the current epoch, decides the next layout for `change`, and
    /// bootstraps its sequencer. If another reconfiguration decides the
    /// epoch first, starts over from the layout it decided (at most
    /// [`ATTEMPTS_MAX`] times). Removing a node that another
    /// reconfiguration removed meanwhile (or that is still a layout server
    /// but no longer a log unit or sequencer) succeeds without a new epoch;
    /// a node the layout does not name at all is an error. Adding a node
    /// runs the whole sequence of the module rules (two epochs around a
    /// state transfer for a chain member).
    pub async fn reconfigure(&self, change: &Change) -> Result<Reconfigured, ReconfigError> {
        match change {
            Change::AddNode { node, stripe } => self.add_node(node, *stripe).await,
            _ => self.step(Step::Change(change)).await,
        }
    }

    /// Adds `node` (see [`Change::AddNode`] and the module rules).
    async fn add_node(&self, node: &NodeAddr, stripe: bool) -> Result<Reconfigured, ReconfigError> {
        let started = Instant::now();
        let current = self.current().await?;
        let in_open = current.open_segment().is_some_and(|open| {
            open.stripes
                .iter()
                .any(|s| s.chain.iter().any(|n| n.node_id == node.node_id))
        });
        // An interrupted add: the unit is in the open segment but still
        // lacks older parts of its chain.
        let resume = in_open && !stripe && !parts_to_transfer(&current, &node.node_id).is_empty();
        if resume {
            if let Some(listed) = current
                .all_log_units()
                .into_iter()
                .find(|n| n.node_id == node.node_id && n.addr != node.addr)
            {
                return Err(ReconfigError::Invalid(format!(
                    "node {} is in the layout of epoch {} at {}, not {}",
                    node.node_id, current.epoch, listed.addr, node.addr
                )));
            }
        }
        let change = Change::AddNode {
            node: node.clone(),
            stripe,
        };
        if !resume {
            // Everything that can be refused is refused before any seal:
            // a unit sealed into an epoch that is never decided would
            // stall every client.
            let open_start = current.open_segment().map_or(0, |s| s.start);
            plan(&current, &change, open_start)?;
        }
        self.check_node(node, current.cluster_id).await?;
        let mut added = Added::default();
        let mut layout = current;
        let mut tail = 0;
        let mut won = false;
        if !resume {
            let first = self.step(Step::Change(&change)).await?;
            added.joined_open = Some((first.layout.epoch, first.elapsed));
            tracing::info!(
                node = %node.node_id,
                epoch = first.layout.epoch,
                segment_start = first.layout.open_segment().map_or(0, |s| s.start),
                elapsed_ms = first.elapsed.as_secs_f64() * 1e3,
                stripe,
                "added a log unit to the open segment"
            );
            (layout, tail, won) = (first.layout, first.tail, first.won);
        }
        let parts = if stripe {
            Vec::new()
        } else {
            parts_to_transfer(&layout, &node.node_id)
        };
        if !parts.is_empty() {
            let transfer = StateTransfer::new(
                self.endpoint.clone(),
                self.layout_servers.clone(),
                node.clone(),
            );
            added.transfer = match transfer.run(layout.clone(), &parts).await {
                Ok(report) => report,
                Err(error) => {
                    // A unit holding values the log does not must not
                    // stay where its values could be read.
                    let removed_again = matches!(error, TransferError::Diverged { .. })
                        && self
                            .step(Step::Change(&Change::RemoveNode(node.node_id.clone())))
                            .await
                            .is_ok();
                    return Err(ReconfigError::Transfer {
                        node: node.node_id.clone(),
                        error: Box::new(error),
                        removed_again,
                    });
                }
            };
            let second = self
                .step(Step::Join {
                    node,
                    parts: &parts,
                })
                .await?;
            added.joined_older = Some((second.layout.epoch, second.elapsed));
            tracing::info!(
                node = %node.node_id,
                epoch = second.layout.epoch,
                segments = second.layout.segments.len(),
                elapsed_ms = second.elapsed.as_secs_f64() * 1e3,
                "the added log unit joined the older segments' chains"
            );
            (layout, tail, won) = (second.layout, second.tail, won || second.won);
        }
        Ok(Reconfigured {
            layout,
            tail,
            won,
            elapsed: started.elapsed(),
            added: Some(added),
        })
    }

    /// Asks the node to add who it is: it must answer, be `node.node_id`
    /// of cluster `cluster`, and host a log unit.
    async fn check_node(&self, node: &NodeAddr, cluster: ClusterId) -> Result<(), ReconfigError> {
        let refused = |reason: String| ReconfigError::NodeRefused {
            node: node.node_id.clone(),
            addr: node.addr.clone(),
            reason,
        };
        let answer = self
            .endpoint
            .peer(&node.addr)
            .call_timeout(0, Request::Info, self.seal_timeout * 4)
            .await;
        let info = match answer {
            Ok(Response::Info(info)) => info,
            Ok(Response::Error(e)) if e.kind == ServerErrorKind::WrongCluster => {
                return Err(refused(format!(
                    "it belongs to another cluster ({})",
                    e.message
                )))
            }
            Ok(Response::Error(e)) => return Err(refused(format!("it refused Info: {e}"))),
            Ok(other) => return Err(refused(format!("it answered Info with {other:?}"))),
            // Each cluster has its own CA: a node of another cluster fails
            // the handshake before it can say who it is.
            Err(e @ TransportError::Tls { .. }) => {
                return Err(refused(format!(
                    "it is not trusted by this cluster's CA (a node of another cluster?): {e}"
                )))
            }
            Err(e) => return Err(refused(format!("it is unreachable: {e}"))),
        };
        if info.cluster_id != cluster {
            return Err(refused(format!(
                "it belongs to cluster {}, not {cluster}",
                info.cluster_id
            )));
        }
        if info.node_id != node.node_id {
            return Err(refused(format!("the node there is {}", info.node_id)));
        }
        if !info.roles.contains(&Role::LogUnit) {
            return Err(refused("it does not host the log_unit role".into()));
        }
        Ok(())
    }

    /// One layout change: seal, plan, decide, bootstrap; started over when
    /// another reconfiguration decides first.
    async fn step(&self, step: Step<'_>) -> Result<Reconfigured, ReconfigError> {
        let started = Instant::now();
        for attempt in 0..ATTEMPTS_MAX {
            let (current, reached) = self.current_counted().await?;
            if step.done_in(&current, attempt)? {
                // Someone made the change already. Its engine bootstraps the
                // sequencer; a bootstrap from here could not be told apart
                // from one after a restart of the sequencer, which may have
                // granted addresses in that epoch (see the sequencer's
                // rules), so a sequencer left unbootstrapped waits for the
                // next reconfiguration.
                return Ok(Reconfigured {
                    layout: current.clone(),
                    tail: current.grants.start,
                    won: false,
                    elapsed: started.elapsed(),
                    added: None,
                });
            }
            if let Some(bound) = self.epoch_bound.filter(|b| current.epoch > *b) {
                return Err(ReconfigError::Outdated {
                    bound,
                    current: current.epoch,
                });
            }
            // Without a majority of layout servers no layout can be decided:
            // sealing would only stop the units serving the current epoch.
            // Counted among the layout's servers (the config may list only
            // some of them).
            let needed = current.layout_servers.len() / 2 + 1;
            let mut reached = reached;
            if reached < needed || self.layout_servers.len() != current.layout_servers.len() {
                let all: Vec<String> = current
                    .layout_servers
                    .iter()
                    .map(|n| n.addr.clone())
                    .collect();
                reached = match fetch_layout_counted(&self.endpoint, &all).await {
                    Ok((_, n)) => n,
                    Err(_) => 0,
                };
            }
            if reached < needed {
                return Err(ReconfigError::Layout(ProposeError::NoMajority {
                    reached,
                    needed,
                    total: current.layout_servers.len(),
                    errors: "checked before sealing: nothing was sealed".into(),
                }));
            }
            let epoch = current.epoch.saturating_add(1);
            // A change `plan` refuses is refused before any seal: units
            // sealed into an epoch no layout is decided for would stall
            // every client (found by the model in `reconfig_model`).
            if let Step::Change(
                change @ (Change::Seal | Change::RemoveNode(_) | Change::RemoveNodes(_)),
            ) = step
            {
                let open_start = current.open_segment().map_or(0, |s| s.start);
                plan(&current, change, open_start)?;
            }
            // A joining unit is sealed first, alone: if it cannot be,
            // nothing else is sealed yet. Its tail (and trim mark) raise
            // `T` so that it holds nothing in the new segment; its stream
            // tails do not count, they may be stale.
            let mut floor = 0;
            if let Step::Change(Change::AddNode { node, stripe }) = step {
                let tails = self.seal_unit(node, epoch).await?;
                if let (true, Some(global)) = (*stripe, tails.global) {
                    return Err(ReconfigError::NodeRefused {
                        node: node.node_id.clone(),
                        addr: node.addr.clone(),
                        reason: format!(
                            "it holds addresses up to {global} from an earlier membership; add it \
                             as a chain member (the state transfer checks them) or empty the log directory `log` of its \
                             data directory (keep `layout`)"
                        ),
                    });
                }
                floor = merge_tails([&tails]).0;
            }
            let excused = match step {
                Step::Change(change) => change.removed(),
                Step::Join { .. } => Vec::new(),
            };
            let sealed = self.seal(&current, epoch, &excused).await?;
            if self.hold_after_seal {
                eprintln!("sealed epoch {epoch}; holding (CORFU_TEST_HOLD_AFTER_SEAL)");
                std::future::pending::<()>().await;
            }
            let (tail, stream_tails) = merge_tails(&sealed.tails);
            let tail = tail.max(floor);
            let mut proposal = match step {
                Step::Change(change) if !sealed.kept.is_empty() => {
                    let still: Vec<String> = change
                        .removed()
                        .into_iter()
                        .filter(|n| !sealed.kept.iter().any(|k| k == n))
                        .map(str::to_string)
                        .collect();
                    let change = if still.is_empty() {
                        Change::Seal
                    } else {
                        Change::RemoveNodes(still)
                    };
                    plan(&current, &change, tail)?
                }
                Step::Change(change) => plan(&current, change, tail)?,
                Step::Join { node, parts } => plan_join(&current, node, parts)?,
            };
            // Where the next sequencer starts: above everything the sealed
            // one granted if it told us how far it got, else at the bound
            // it could never pass. Addresses between the tail and there
            // were never written (the units are sealed) and never will be.
            let old_active = current.active_sequencer().map(|s| s.node_id.as_str());
            let known_next = old_active
                .and_then(|id| sealed.sequencers.get(id))
                .and_then(|answer| answer.served)
                .filter(|(served, _)| *served == current.epoch)
                .map(|(_, next)| next);
            // Any sequencer of an earlier epoch may still hold a lease
            // unless the current one is known to have served this epoch
            // (its own bootstrap waited out the ones before it).
            let lease_unknown = known_next.is_none();
            let start = tail.max(known_next.unwrap_or(current.grants.bound));
            proposal.add_void(tail, start);
            proposal.grants = Grants::from(start);
            // The active sequencer must be one that answered the seal (it is
            // bootstrapped as that incarnation): if the first listed did not,
            // the first listed that did takes over, the others keeping their
            // order. Otherwise two silent sequencers would make every
            // removal fail after sealing the units (each waiting for the
            // other's answer), and the cluster would never serve again.
            if let Some(answered) = proposal
                .sequencers
                .iter()
                .position(|s| sealed.sequencers.contains_key(&s.node_id))
            {
                let chosen = proposal.sequencers.remove(answered);
                proposal.sequencers.insert(0, chosen);
            }
            current.validate_successor(&proposal)?;
            let active = proposal.active_sequencer().cloned().ok_or_else(|| {
                ReconfigError::Invalid("the new layout names no sequencer".into())
            })?;
            let Some(incarnation) = sealed
                .sequencers
                .get(&active.node_id)
                .map(|a| a.incarnation)
            else {
                // Deciding a layout whose sequencer cannot be bootstrapped
                // would stall every client until the next reconfiguration.
                return Err(ReconfigError::SealFailed {
                    node: active.node_id.clone(),
                    epoch,
                    reason: "its sequencer did not answer the seal".into(),
                });
            };
            // Unique per engine and attempt: Paxos needs distinct proposer
            // ids. The acceptors of epoch `e` decide `e + 1`: majorities are
            // counted over the servers the committed layout names, never
            // over a client config's list (a subset would give majorities
            // that do not intersect).
            let proposer = Proposer::new(
                self.endpoint.clone(),
                current
                    .layout_servers
                    .iter()
                    .map(|n| n.addr.clone())
                    .collect(),
                rand::random(),
            );
            match proposer.decide(proposal.clone()).await {
                Ok(decided) if decided.layout == proposal && decided.ours => {
                    if lease_unknown {
                        // The old sequencer may still be serving tails to
                        // clients of the old epoch until its lease runs out;
                        // nothing of the new epoch may be acknowledged
                        // before that (see `sequencer::lease`).
                        let until = decided.promised_at + lease::reconfiguration_wait();
                        tokio::time::sleep_until(until.into()).await;
                    }
                    self.bootstrap(&proposal, incarnation, stream_tails).await?;
                    return Ok(Reconfigured {
                        layout: proposal,
                        tail: start,
                        won: true,
                        elapsed: started.elapsed(),
                        added: None,
                    });
                }
                // Another engine decided this very layout: it bootstraps.
                Ok(decided) if decided.layout == proposal => {
                    return Ok(Reconfigured {
                        layout: proposal,
                        tail: start,
                        won: false,
                        elapsed: started.elapsed(),
                        added: None,
                    });
                }
                // Another engine's layout was decided for this epoch (it
                // bootstraps its sequencer), or ours was stale: start over.
                Ok(_) | Err(ProposeError::Superseded { .. }) => {
                    tracing::info!(
                        epoch,
                        "another reconfiguration decided first; starting over"
                    )
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ReconfigError::Invalid(format!(
            "other reconfigurations decided first {ATTEMPTS_MAX} times in a row; giving up"
        )))
    }

    /// Seals one unit at `epoch` (it must acknowledge); its tails.
    async fn seal_unit(&self, unit: &NodeAddr, epoch: Epoch) -> Result<Tails, ReconfigError> {
        let answer = self
            .endpoint
            .peer(&unit.addr)
            .call_timeout(
                epoch,
                Request::LogUnit(LogUnitRequest::Seal { epoch }),
                self.seal_timeout,
            )
            .await;
        let reason = match answer {
            Ok(Response::LogUnit(LogUnitResponse::Tails(t))) => return Ok(t),
            Ok(Response::WrongEpoch { current }) => {
                format!("it is sealed at epoch {current} already")
            }
            Ok(other) => format!("it answered {other:?}"),
            Err(e) => e.to_string(),
        };
        Err(ReconfigError::SealFailed {
            node: unit.node_id.clone(),
            epoch,
            reason,
        })
    }

    /// Seals every log unit of `layout` at `epoch` (all must acknowledge,
    /// except `excused`) and, best effort, its sequencers; returns the
    /// units' tails and the answers of the sequencers that answered.
    async fn seal(
        &self,
        layout: &Layout,
        epoch: Epoch,
        excused: &[&str],
    ) -> Result<Sealed, ReconfigError> {
        let (gone, units): (Vec<_>, Vec<_>) = layout
            .all_log_units()
            .into_iter()
            .partition(|u| excused.contains(&u.node_id.as_str()));
        // Nodes being removed are sealed too, but not waited for: they are
        // usually dead, and what only they hold was never acknowledged.
        let started = Instant::now();
        let mut gone_seals = Vec::new();
        for unit in gone {
            let peer = self.endpoint.peer(&unit.addr);
            // Short: a late seal could otherwise reach the node restarted on
            // its address and seal it into an epoch it is not part of. A
            // node that may be kept gets the time the others get: its
            // answer decides whether it stays.
            let timeout = if self.keep_answering {
                self.seal_timeout
            } else {
                SEAL_TIMEOUT_GONE
            };
            let id = unit.node_id.clone();
            gone_seals.push(tokio::spawn(async move {
                let request = Request::LogUnit(LogUnitRequest::Seal { epoch });
                match peer.call_timeout(epoch, request, timeout).await {
                    Ok(Response::LogUnit(LogUnitResponse::Tails(t))) => Some((id, t)),
                    _ => None,
                }
            }));
        }
        let seals = units.iter().map(|unit| self.seal_unit(unit, epoch));
        let sequencers = layout.sequencers.iter().map(|s| async move {
            let request = Request::Sequencer(SequencerRequest::Seal { epoch });
            let peer = self.endpoint.peer(&s.addr);
            if excused.contains(&s.node_id.as_str()) {
                // Fenced if alive, but counted as silent: it is going.
                tokio::spawn(async move {
                    let _ = peer.call_timeout(epoch, request, SEAL_TIMEOUT_GONE).await;
                });
                return None;
            }
            match peer.call_timeout(epoch, request, self.seal_timeout).await {
                Ok(Response::Sequencer(SequencerResponse::Sealed {
                    incarnation,
                    served,
                })) => Some((
                    s.node_id.clone(),
                    SequencerSeal {
                        incarnation,
                        served,
                    },
                )),
                answer => {
                    tracing::info!(sequencer = %s.node_id, ?answer, "sequencer not sealed");
                    None
                }
            }
        });
        let (answers, sequencers) = tokio::join!(join_all(seals), join_all(sequencers));
        let mut tails: Vec<Tails> = answers.into_iter().collect::<Result<_, _>>()?;
        let mut kept = Vec::new();
        if self.keep_answering && !gone_seals.is_empty() {
            // As long again as the others took (a link just healed answers
            // late, after retransmissions, for the kept and the removed
            // alike), within bounds.
            let grace = started.elapsed().clamp(SEAL_GRACE_GONE, SEAL_TIMEOUT_GONE);
            let deadline = tokio::time::Instant::now() + grace;
            for seal in gone_seals {
                if let Ok(Ok(Some((id, t)))) = tokio::time::timeout_at(deadline, seal).await {
                    tracing::info!(node = %id, epoch, "a node being removed acknowledged the seal; it is kept");
                    tails.push(t);
                    kept.push(id);
                }
            }
        }
        Ok(Sealed {
            tails,
            sequencers: sequencers.into_iter().flatten().collect(),
            kept,
        })
    }

    /// Bootstraps the active sequencer of `layout` (which this engine
    /// decided) at its grant range, as the incarnation that answered the
    /// seal.
    async fn bootstrap(
        &self,
        layout: &Layout,
        incarnation: u64,
        stream_tails: Vec<(StreamId, Address)>,
    ) -> Result<(), ReconfigError> {
        let failed = |node: &str, reason: String| ReconfigError::Bootstrap {
            epoch: layout.epoch,
            node: node.to_string(),
            reason,
        };
        let sequencer = layout
            .active_sequencer()
            .ok_or_else(|| failed("(none)", "the layout names no sequencer".into()))?;
        let request = Request::Sequencer(SequencerRequest::Bootstrap {
            epoch: layout.epoch,
            incarnation,
            next: layout.grants.start,
            bound: layout.grants.bound,
            stream_tails,
            layout_servers: layout
                .layout_servers
                .iter()
                .map(|n| n.addr.clone())
                .collect(),
        });
        match self
            .endpoint
            .peer(&sequencer.addr)
            .call(layout.epoch, request)
            .await
        {
            Ok(Response::Sequencer(SequencerResponse::Done)) => Ok(()),
            // A later reconfiguration sealed it already: the layout moved on
            // (this one's change is in force under it), and that
            // reconfiguration bootstraps its own epoch.
            Ok(Response::WrongEpoch { current }) if current > layout.epoch => Ok(()),
            Ok(other) => Err(failed(&sequencer.node_id, format!("it answered {other:?}"))),
            Err(e) => Err(failed(&sequencer.node_id, e.to_string())),
        }
    }
}

/// How long a seal of a node being removed is waited for (in the
/// background: nobody waits for it).
const SEAL_TIMEOUT_GONE: Duration = Duration::from_millis(200);

/// With [`Reconfigurer::keep_removed_that_answer`], the least time the
/// seal of a node being removed is waited for once the other seals are in.
const SEAL_GRACE_GONE: Duration = Duration::from_millis(20);

/// What a sequencer answered to a seal.
#[derive(Debug, Clone, Copy)]
struct SequencerSeal {
    incarnation: u64,
    served: Option<(Epoch, Address)>,
}

/// What sealing one epoch's nodes returned.
struct Sealed {
    /// The log units' tails.
    tails: Vec<Tails>,
    /// By node id, the sequencers that answered.
    sequencers: std::collections::HashMap<String, SequencerSeal>,
    /// Nodes being removed that acknowledged the seal, with
    /// [`Reconfigurer::keep_removed_that_answer`]: they stay.
    kept: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Segment;
    use crate::types::ClusterId;

    fn node(i: u16) -> NodeAddr {
        NodeAddr {
            node_id: format!("n{i}"),
            addr: format!("127.0.0.1:{}", 7000 + i),
        }
    }

    fn layout() -> Layout {
        Layout {
            cluster_id: ClusterId(7),
            epoch: 1,
            layout_servers: vec![node(1), node(2), node(3)],
            sequencers: vec![node(1), node(2)],
            segments: vec![Segment {
                start: 0,
                end: None,
                stripes: vec![Stripe {
                    chain: vec![node(1), node(2), node(3)],
                }],
            }],
            grants: crate::layout::Grants::from(0),
            voids: vec![],
        }
    }

    #[test]
    fn removing_a_node_closes_the_open_segment_at_the_tail() {
        let next = plan(&layout(), &Change::RemoveNode("n2".into()), 40).unwrap();
        assert_eq!(next.epoch, 2);
        assert_eq!(next.segments.len(), 2);
        assert_eq!(next.segments[0].end, Some(40));
        assert_eq!(next.segments[1].start, 40);
        for segment in &next.segments {
            assert_eq!(segment.stripes[0].chain, vec![node(1), node(3)]);
        }
        assert_eq!(next.sequencers, vec![node(1)]);
        assert_eq!(next.layout_servers, layout().layout_servers);
    }

    #[test]
    fn removing_the_active_sequencer_hands_over_to_the_next() {
        let next = plan(&layout(), &Change::RemoveNode("n1".into()), 0).unwrap();
        assert_eq!(next.active_sequencer(), Some(&node(2)));
        // Nothing was written: the empty open segment is replaced.
        assert_eq!(next.segments.len(), 1);
        assert_eq!(next.segments[0].stripes[0].chain, vec![node(2), node(3)]);
    }

    #[test]
    fn refusals_name_the_problem() {
        let unknown = plan(&layout(), &Change::RemoveNode("n9".into()), 5).unwrap_err();
        assert!(unknown.to_string().contains("n9"), "{unknown}");
        let mut one = layout();
        one.segments[0].stripes[0].chain = vec![node(1)];
        let last = plan(&one, &Change::RemoveNode("n1".into()), 5).unwrap_err();
        assert!(last.to_string().contains("last log unit"), "{last}");
        let mut single = layout();
        single.sequencers = vec![node(1)];
        let only = plan(&single, &Change::RemoveNode("n1".into()), 5).unwrap_err();
        assert!(only.to_string().contains("only sequencer"), "{only}");
    }

    #[test]
    fn a_seal_keeps_membership() {
        let sealed = plan(&layout(), &Change::Seal, 9).unwrap();
        assert_eq!(sealed.epoch, 2);
        assert_eq!(sealed.segments, layout().segments);
        assert_eq!(sealed.sequencers, layout().sequencers);
    }

    fn ids(chain: &[NodeAddr]) -> Vec<&str> {
        chain.iter().map(|n| n.node_id.as_str()).collect()
    }

    fn add(i: u16, stripe: bool) -> Change {
        Change::AddNode {
            node: node(i),
            stripe,
        }
    }

    #[test]
    fn an_added_chain_member_joins_the_shortest_chain_from_the_tail_on() {
        let removed = plan(&layout(), &Change::RemoveNode("n2".into()), 40).unwrap();
        let added = plan(&removed, &add(2, false), 70).unwrap();
        assert_eq!(added.epoch, 3);
        assert_eq!(added.segments.len(), 3);
        assert_eq!(added.segments[1].end, Some(70));
        let open = added.open_segment().unwrap();
        assert_eq!(open.start, 70);
        assert_eq!(ids(&open.stripes[0].chain), ["n1", "n3", "n2"]);
        for segment in &added.segments[..2] {
            assert_eq!(ids(&segment.stripes[0].chain), ["n1", "n3"]);
        }
        assert_eq!(added.sequencers, removed.sequencers);
        // Of several stripes, the least replicated one (the first of equals).
        let mut two = layout();
        two.segments[0].stripes = vec![
            Stripe {
                chain: vec![node(1), node(2)],
            },
            Stripe {
                chain: vec![node(3)],
            },
        ];
        let next = plan(&two, &add(4, false), 10).unwrap();
        let open = next.open_segment().unwrap();
        assert_eq!(ids(&open.stripes[1].chain), ["n3", "n4"]);
        assert_eq!(ids(&open.stripes[0].chain), ["n1", "n2"]);
    }

    #[test]
    fn an_added_stripe_is_a_new_segment_with_one_more_chain() {
        let next = plan(&layout(), &add(4, true), 25).unwrap();
        assert_eq!(next.segments.len(), 2);
        let open = next.open_segment().unwrap();
        assert_eq!(open.start, 25);
        assert_eq!(open.stripes.len(), 2);
        assert_eq!(ids(&open.stripes[1].chain), ["n4"]);
        // Addresses below the tail keep their chain.
        for a in 0..25 {
            assert_eq!(next.chain_of(a), layout().chain_of(a));
        }
    }

    #[test]
    fn adding_refuses_members_and_conflicting_addresses() {
        let again = plan(&layout(), &add(2, false), 5).unwrap_err();
        assert!(again.to_string().contains("already a log unit"), "{again}");
        let moved = Change::AddNode {
            node: NodeAddr {
                node_id: "n2".into(),
                addr: "127.0.0.1:9999".into(),
            },
            stripe: false,
        };
        let removed = plan(&layout(), &Change::RemoveNode("n2".into()), 5).unwrap();
        // n2 is still a layout server at its old address.
        let conflict = plan(&removed, &moved, 9).unwrap_err();
        assert!(conflict.to_string().contains("conflicts"), "{conflict}");
    }

    #[test]
    fn joining_the_older_chains_merges_the_segments() {
        let removed = plan(&layout(), &Change::RemoveNode("n2".into()), 40).unwrap();
        let added = plan(&removed, &add(2, false), 70).unwrap();
        let parts = parts_to_transfer(&added, "n2");
        assert_eq!(parts.len(), 2);
        let joined = plan_join(&added, &node(2), &parts).unwrap();
        assert_eq!(joined.epoch, 4);
        assert_eq!(joined.segments.len(), 1);
        assert_eq!(joined.segments[0].start, 0);
        assert_eq!(joined.segments[0].end, None);
        assert_eq!(
            ids(&joined.segments[0].stripes[0].chain),
            ["n1", "n3", "n2"]
        );
        // The unit must still be in the open segment, and the parts'
        // segments unchanged.
        let gone = plan(&added, &Change::RemoveNode("n2".into()), 80).unwrap();
        let e = plan_join(&gone, &node(2), &parts).unwrap_err();
        assert!(e.to_string().contains("left the open segment"), "{e}");
        let mut other = added.clone();
        other.segments[0].end = Some(30);
        other.segments[1].start = 30;
        let e = plan_join(&other, &node(2), &parts).unwrap_err();
        assert!(
            e.to_string().contains("changed during the state transfer"),
            "{e}"
        );
    }

    #[test]
    fn a_join_already_in_force_is_done() {
        let removed = plan(&layout(), &Change::RemoveNode("n2".into()), 40).unwrap();
        let added = plan(&removed, &add(2, false), 70).unwrap();
        let parts = parts_to_transfer(&added, "n2");
        let step = Step::Join {
            node: &node(2),
            parts: &parts,
        };
        assert!(!step.done_in(&added, 0).unwrap());
        let joined = plan_join(&added, &node(2), &parts).unwrap();
        assert!(step.done_in(&joined, 0).unwrap());
        let again = add(2, false);
        assert!(Step::Change(&again).done_in(&added, 1).unwrap());
        assert!(!Step::Change(&again).done_in(&removed, 0).unwrap());
    }

    #[test]
    fn tails_merge_to_one_past_the_highest_address() {
        let a = Tails {
            global: Some(9),
            streams: vec![(StreamId(1), 9), (StreamId(2), 4)],
            trim_mark: 0,
        };
        let b = Tails {
            global: Some(7),
            streams: vec![(StreamId(2), 7)],
            trim_mark: 12,
        };
        assert_eq!(
            merge_tails([&a, &b]),
            (12, vec![(StreamId(1), 9), (StreamId(2), 7)])
        );
        assert_eq!(merge_tails([]), (0, vec![]));
    }
}
