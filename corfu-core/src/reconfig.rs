//! Reconfiguration (CORFU §3.4, DESIGN §4 "Layout service"): seal the
//! current epoch, compute the next layout from the tails the seal returned,
//! decide it through the Paxos layout service, and bootstrap the new
//! epoch's sequencer from those tails.
//!
//! [`plan`] is the pure rule: the next layout for a [`Change`] given the
//! current layout and the recovered tail. [`Reconfigurer`] is the driver.
//!
//! Rules:
//! - **Seal first.** Every log unit of the current layout (except a node
//!   being removed) must acknowledge `Seal(e + 1)`; from then on it refuses
//!   writes of epoch `e`, so the tails it reports bound every write that
//!   can still be acknowledged in `e`. Sequencers are sealed as well, on a
//!   best-effort basis: a sequencer that missed the seal can only hand out
//!   tokens of epoch `e`, whose writes the sealed units refuse.
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
//! - **Racing engines are safe.** Sealing is idempotent and Paxos decides
//!   one layout per epoch. An engine whose proposal lost adopts the decided
//!   layout and still makes sure its sequencer is bootstrapped, from tails
//!   read again after the decision (a bootstrap never lowers a sequencer
//!   that already granted in that epoch).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use crate::layout::{Layout, LayoutError, NodeAddr, Stripe};
use crate::layout_service::proposer::{fetch_layout, ProposeError, Proposer};
use crate::transport::ClientEndpoint;
use crate::types::{Address, Epoch, StreamId};
use crate::wire::logunit::{LogUnitRequest, LogUnitResponse, Tails};
use crate::wire::sequencer::{SequencerRequest, SequencerResponse};
use crate::wire::{Request, Response};

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
    /// The layout service could not decide.
    #[error(transparent)]
    Layout(#[from] ProposeError),
    /// The new layout is invalid.
    #[error("the new layout is invalid: {0}")]
    Plan(#[from] LayoutError),
    /// The layout was decided but its sequencer could not be bootstrapped;
    /// appends wait until a later reconfiguration (or a retry) does it.
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
    /// Time from the start of the seal to the bootstrapped sequencer.
    pub elapsed: Duration,
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

/// The node ids a change excuses from acknowledging the seal.
fn excused(change: &Change) -> Option<&str> {
    match change {
        Change::RemoveNode(node) => Some(node),
        _ => None,
    }
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
        Change::RemoveNode(node) => {
            let is = |n: &NodeAddr| n.node_id == *node;
            let in_chains = current
                .segments
                .iter()
                .flat_map(|s| &s.stripes)
                .any(|s| s.chain.iter().any(is));
            if !in_chains && !current.sequencers.iter().any(is) {
                return Err(ReconfigError::Invalid(format!(
                    "node {node} is neither a log unit nor a sequencer of epoch {}",
                    current.epoch
                )));
            }
            for segment in &mut next.segments {
                for (index, stripe) in segment.stripes.iter_mut().enumerate() {
                    stripe.chain.retain(|n| !is(n));
                    if stripe.chain.is_empty() {
                        return Err(ReconfigError::Invalid(format!(
                            "node {node} is the last log unit of stripe {index} of the segment from {}: removing it would lose that stripe",
                            segment.start
                        )));
                    }
                }
            }
            next.sequencers.retain(|n| !is(n));
            if next.sequencers.is_empty() {
                return Err(ReconfigError::Invalid(format!(
                    "node {node} is the only sequencer"
                )));
            }
            let open_start = next.open_segment().map_or(0, |s| s.start);
            let stripes: Vec<Stripe> = next
                .open_segment()
                .map(|s| s.stripes.clone())
                .unwrap_or_default();
            next = next.with_new_segment(tail.max(open_start), stripes)?;
            current.validate_successor(&next)?;
        }
    }
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

/// Runs reconfigurations against one cluster.
#[derive(Debug, Clone)]
pub struct Reconfigurer {
    endpoint: ClientEndpoint,
    layout_servers: Vec<String>,
    seal_timeout: Duration,
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
        }
    }

    /// The highest committed layout.
    pub async fn current(&self) -> Result<Layout, ReconfigError> {
        Ok(fetch_layout(&self.endpoint, &self.layout_servers).await?)
    }

    /// Seals the current epoch, decides the next layout for `change`, and
    /// bootstraps its sequencer. If another reconfiguration decides the
    /// epoch first, starts over from the layout it decided (at most
    /// [`ATTEMPTS_MAX`] times). Removing a node that another
    /// reconfiguration removed meanwhile (or that is still a layout server
    /// but no longer a log unit or sequencer) succeeds without a new epoch;
    /// a node the layout does not name at all is an error.
    pub async fn reconfigure(&self, change: &Change) -> Result<Reconfigured, ReconfigError> {
        let started = Instant::now();
        for attempt in 0..ATTEMPTS_MAX {
            let current = self.current().await?;
            if let Change::RemoveNode(node) = change {
                let known =
                    attempt > 0 || current.layout_servers.iter().any(|n| n.node_id == *node);
                if !mentions(&current, node) && !known {
                    return Err(ReconfigError::Invalid(format!(
                        "node {node} is not in the layout of epoch {} (already removed, or never a member)",
                        current.epoch
                    )));
                }
                if !mentions(&current, node) {
                    // Someone removed it already: make sure the sequencer
                    // of that layout serves (idempotent).
                    let tails = self.seal(&current, current.epoch, None).await?;
                    let (next, stream_tails) = merge_tails(&tails);
                    self.bootstrap(&current, next, stream_tails).await?;
                    return Ok(Reconfigured {
                        layout: current,
                        tail: next,
                        won: false,
                        elapsed: started.elapsed(),
                    });
                }
            }
            let epoch = current.epoch.saturating_add(1);
            let tails = self.seal(&current, epoch, excused(change)).await?;
            let (tail, stream_tails) = merge_tails(&tails);
            let proposal = plan(&current, change, tail)?;
            // Unique per engine and attempt: Paxos needs distinct proposer ids.
            let proposer = Proposer::new(
                self.endpoint.clone(),
                self.layout_servers.clone(),
                rand::random(),
            );
            match proposer.propose(proposal.clone()).await {
                Ok(decided) if decided == proposal => {
                    self.bootstrap(&decided, tail, stream_tails).await?;
                    return Ok(Reconfigured {
                        layout: decided,
                        tail,
                        won: true,
                        elapsed: started.elapsed(),
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

    /// Seals every log unit of `layout` at `epoch` (all must acknowledge,
    /// except `excused`) and, best effort, its sequencers; returns the
    /// units' tails.
    async fn seal(
        &self,
        layout: &Layout,
        epoch: Epoch,
        excused: Option<&str>,
    ) -> Result<Vec<Tails>, ReconfigError> {
        let mut units = layout.all_log_units();
        // A node being removed is sealed too, but not waited for: it is
        // usually dead, and what only it holds was never acknowledged.
        if let Some(gone) = units
            .iter()
            .position(|u| Some(u.node_id.as_str()) == excused)
        {
            let unit = units.remove(gone);
            let peer = self.endpoint.peer(&unit.addr);
            let timeout = self.seal_timeout;
            tokio::spawn(async move {
                let request = Request::LogUnit(LogUnitRequest::Seal { epoch });
                let _ = peer.call_timeout(epoch, request, timeout).await;
            });
        }
        let seals = units.iter().map(|unit| async move {
            let answer = self
                .endpoint
                .peer(&unit.addr)
                .call_timeout(
                    epoch,
                    Request::LogUnit(LogUnitRequest::Seal { epoch }),
                    self.seal_timeout,
                )
                .await;
            (*unit, answer)
        });
        let sequencers = layout
            .sequencers
            .iter()
            .filter(|s| Some(s.node_id.as_str()) != excused)
            .map(|s| async move {
                let answer = self
                    .endpoint
                    .peer(&s.addr)
                    .call_timeout(
                        epoch,
                        Request::Sequencer(SequencerRequest::Seal { epoch }),
                        self.seal_timeout,
                    )
                    .await;
                if !matches!(answer, Ok(Response::Sequencer(SequencerResponse::Done))) {
                    tracing::info!(sequencer = %s.node_id, ?answer, "sequencer not sealed");
                }
            });
        let (answers, _) = tokio::join!(join_all(seals), join_all(sequencers));
        let mut tails = Vec::new();
        for (unit, answer) in answers {
            let reason = match answer {
                Ok(Response::LogUnit(LogUnitResponse::Tails(t))) => {
                    tails.push(t);
                    continue;
                }
                Ok(Response::WrongEpoch { current }) => {
                    format!("it is sealed at epoch {current} already")
                }
                Ok(other) => format!("it answered {other:?}"),
                Err(e) => e.to_string(),
            };
            return Err(ReconfigError::SealFailed {
                node: unit.node_id.clone(),
                epoch,
                reason,
            });
        }
        Ok(tails)
    }

    async fn bootstrap(
        &self,
        layout: &Layout,
        next: Address,
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
            next,
            stream_tails,
        });
        match self
            .endpoint
            .peer(&sequencer.addr)
            .call(layout.epoch, request)
            .await
        {
            Ok(Response::Sequencer(SequencerResponse::Done)) => Ok(()),
            Ok(other) => Err(failed(&sequencer.node_id, format!("it answered {other:?}"))),
            Err(e) => Err(failed(&sequencer.node_id, e.to_string())),
        }
    }
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
