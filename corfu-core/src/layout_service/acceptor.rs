//! The Paxos acceptor of one layout server (the CORFU "Paxos
//! configurator", CORFU §3.4): one single-decree Paxos instance per epoch.
//!
//! Rules, per epoch `e` above the committed epoch:
//! - `Prepare(e, r)`: if `r` is below the rank promised for `e`, reject with
//!   the promised rank; otherwise promise `r` and answer the proposal
//!   accepted for `e`, if any (the proposer must adopt it).
//! - `Propose(e, r, L)`: if `r` is below the rank promised for `e`, reject;
//!   otherwise accept `(r, L)` (and promise `r`).
//! - `Commit(L)`: record `L` as committed if its epoch is above the
//!   committed one, and forget the Paxos state of epochs up to it.
//! - Any request for an epoch at or below the committed epoch is answered
//!   `AlreadyCommitted` with the committed layout, so a late proposer learns
//!   the outcome instead of deciding again.
//!
//! The state must be durable before an answer leaves (a promise forgotten
//! in a crash could let two layouts be chosen for one epoch); the driver
//! persists [`Acceptor::snapshot`] whenever [`Outcome::changed`] is set.

use std::collections::BTreeMap;

use rkyv::{Archive, Deserialize, Serialize};

use crate::layout::Layout;
use crate::types::Epoch;
use crate::wire::layout::{LayoutRequest, LayoutResponse, Rank};
use crate::wire::{Response, ServerErrorKind};

/// The durable state of an acceptor.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct AcceptorState {
    /// The highest committed layout.
    pub committed: Option<Layout>,
    /// Per epoch above the committed one, the highest rank promised.
    pub promised: Vec<(Epoch, Rank)>,
    /// Per epoch above the committed one, the accepted proposal.
    pub accepted: Vec<(Epoch, Rank, Layout)>,
}

/// An answer and whether the state changed (and must be persisted first).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// What to answer.
    pub response: Response,
    /// The state changed: persist it before answering.
    pub changed: bool,
}

/// The acceptor: pure rules over [`AcceptorState`].
#[derive(Debug, Clone, Default)]
pub struct Acceptor {
    committed: Option<Layout>,
    promised: BTreeMap<Epoch, Rank>,
    accepted: BTreeMap<Epoch, (Rank, Layout)>,
}

impl Acceptor {
    /// An acceptor resuming from persisted state.
    pub fn from_state(state: AcceptorState) -> Acceptor {
        Acceptor {
            committed: state.committed,
            promised: state.promised.into_iter().collect(),
            accepted: state
                .accepted
                .into_iter()
                .map(|(e, r, l)| (e, (r, l)))
                .collect(),
        }
    }

    /// The state to persist.
    pub fn snapshot(&self) -> AcceptorState {
        AcceptorState {
            committed: self.committed.clone(),
            promised: self.promised.iter().map(|(e, r)| (*e, *r)).collect(),
            accepted: self
                .accepted
                .iter()
                .map(|(e, (r, l))| (*e, *r, l.clone()))
                .collect(),
        }
    }

    /// The highest committed layout.
    pub fn committed(&self) -> Option<&Layout> {
        self.committed.as_ref()
    }

    fn committed_epoch(&self) -> Option<Epoch> {
        self.committed.as_ref().map(|l| l.epoch)
    }

    fn already_committed(&self, epoch: Epoch) -> Option<Outcome> {
        let committed = self.committed.as_ref()?;
        (epoch <= committed.epoch).then(|| Outcome {
            response: Response::Layout(LayoutResponse::AlreadyCommitted {
                layout: Box::new(committed.clone()),
            }),
            changed: false,
        })
    }

    fn answer(response: LayoutResponse, changed: bool) -> Outcome {
        Outcome {
            response: Response::Layout(response),
            changed,
        }
    }

    /// Applies one request.
    pub fn handle(&mut self, request: LayoutRequest) -> Outcome {
        match request {
            LayoutRequest::GetLayout => Self::answer(
                LayoutResponse::Layout(self.committed.clone().map(Box::new)),
                false,
            ),
            LayoutRequest::Epochs => {
                let committed = self.committed_epoch().unwrap_or(0);
                let seen = [
                    Some(committed),
                    self.promised.keys().next_back().copied(),
                    self.accepted.keys().next_back().copied(),
                ]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(0);
                Self::answer(LayoutResponse::Epochs { committed, seen }, false)
            }
            LayoutRequest::Prepare { epoch, rank } => {
                if let Some(done) = self.already_committed(epoch) {
                    return done;
                }
                match self.promised.get(&epoch) {
                    Some(promised) if *promised > rank => Self::answer(
                        LayoutResponse::Rejected {
                            promised: *promised,
                        },
                        false,
                    ),
                    current => {
                        let changed = current != Some(&rank);
                        self.promised.insert(epoch, rank);
                        let accepted = self
                            .accepted
                            .get(&epoch)
                            .map(|(r, l)| (*r, Box::new(l.clone())));
                        Self::answer(LayoutResponse::Promise { accepted }, changed)
                    }
                }
            }
            LayoutRequest::Propose {
                epoch,
                rank,
                layout,
            } => {
                if let Some(done) = self.already_committed(epoch) {
                    return done;
                }
                if layout.epoch != epoch {
                    return Outcome {
                        response: Response::error(
                            ServerErrorKind::InvalidRequest,
                            format!(
                                "proposal for epoch {epoch} carries a layout of epoch {}",
                                layout.epoch
                            ),
                        ),
                        changed: false,
                    };
                }
                if let Some(promised) = self.promised.get(&epoch) {
                    if *promised > rank {
                        return Self::answer(
                            LayoutResponse::Rejected {
                                promised: *promised,
                            },
                            false,
                        );
                    }
                }
                let changed = self.accepted.get(&epoch) != Some(&(rank, (*layout).clone()))
                    || self.promised.get(&epoch) != Some(&rank);
                self.promised.insert(epoch, rank);
                self.accepted.insert(epoch, (rank, *layout));
                Self::answer(LayoutResponse::Accepted, changed)
            }
            LayoutRequest::Commit { layout } => {
                match self.committed_epoch() {
                    Some(e) if e > layout.epoch => {
                        return Self::answer(LayoutResponse::Committed, false);
                    }
                    Some(e) if e == layout.epoch => {
                        if self.committed.as_ref() != Some(&*layout) {
                            // Two layouts for one epoch: a broken proposer.
                            // Keep the first; never overwrite a decision.
                            return Outcome {
                                response: Response::error(
                                    ServerErrorKind::InvalidRequest,
                                    format!("epoch {e} is already committed with another layout"),
                                ),
                                changed: false,
                            };
                        }
                        return Self::answer(LayoutResponse::Committed, false);
                    }
                    _ => {}
                }
                let epoch = layout.epoch;
                self.committed = Some(*layout);
                self.promised.retain(|e, _| *e > epoch);
                self.accepted.retain(|e, _| *e > epoch);
                Self::answer(LayoutResponse::Committed, true)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{NodeAddr, Segment, Stripe};
    use crate::types::ClusterId;

    pub(crate) fn layout(epoch: Epoch, tag: &str) -> Layout {
        let node = |id: &str, port: u16| NodeAddr {
            node_id: id.to_string(),
            addr: format!("127.0.0.1:{port}"),
        };
        Layout {
            cluster_id: ClusterId(9),
            epoch,
            layout_servers: vec![node("a", 1)],
            sequencers: vec![node(tag, 2)],
            segments: vec![Segment {
                start: 0,
                end: None,
                stripes: vec![Stripe {
                    chain: vec![node("a", 1)],
                }],
            }],
            grants: crate::layout::Grants::from(0),
            voids: vec![],
        }
    }

    fn rank(number: u64, proposer: u64) -> Rank {
        Rank { number, proposer }
    }

    fn prepare(a: &mut Acceptor, epoch: Epoch, r: Rank) -> LayoutResponse {
        match a.handle(LayoutRequest::Prepare { epoch, rank: r }).response {
            Response::Layout(l) => l,
            other => panic!("{other:?}"),
        }
    }

    fn propose(a: &mut Acceptor, epoch: Epoch, r: Rank, l: Layout) -> LayoutResponse {
        match a
            .handle(LayoutRequest::Propose {
                epoch,
                rank: r,
                layout: Box::new(l),
            })
            .response
        {
            Response::Layout(l) => l,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rule_prepare_promises_and_rejects_lower_ranks() {
        let mut a = Acceptor::default();
        assert_eq!(
            prepare(&mut a, 1, rank(2, 1)),
            LayoutResponse::Promise { accepted: None }
        );
        assert_eq!(
            prepare(&mut a, 1, rank(1, 9)),
            LayoutResponse::Rejected {
                promised: rank(2, 1)
            }
        );
        // Ranks order by number, then proposer id.
        assert_eq!(
            prepare(&mut a, 1, rank(2, 2)),
            LayoutResponse::Promise { accepted: None }
        );
        // Epochs are independent instances.
        assert_eq!(
            prepare(&mut a, 2, rank(1, 1)),
            LayoutResponse::Promise { accepted: None }
        );
    }

    #[test]
    fn rule_propose_needs_the_promised_rank_and_is_reported_to_later_prepares() {
        let mut a = Acceptor::default();
        prepare(&mut a, 1, rank(3, 1));
        assert_eq!(
            propose(&mut a, 1, rank(2, 1), layout(1, "x")),
            LayoutResponse::Rejected {
                promised: rank(3, 1)
            }
        );
        assert_eq!(
            propose(&mut a, 1, rank(3, 1), layout(1, "x")),
            LayoutResponse::Accepted
        );
        assert_eq!(
            prepare(&mut a, 1, rank(4, 2)),
            LayoutResponse::Promise {
                accepted: Some((rank(3, 1), Box::new(layout(1, "x"))))
            }
        );
    }

    #[test]
    fn rule_commit_is_final_and_answers_late_proposers() {
        let mut a = Acceptor::default();
        assert!(
            a.handle(LayoutRequest::Commit {
                layout: Box::new(layout(1, "x"))
            })
            .changed
        );
        let late = prepare(&mut a, 1, rank(9, 9));
        assert_eq!(
            late,
            LayoutResponse::AlreadyCommitted {
                layout: Box::new(layout(1, "x"))
            }
        );
        // Another layout for a committed epoch is refused, the first kept.
        assert!(matches!(
            a.handle(LayoutRequest::Commit {
                layout: Box::new(layout(1, "y"))
            })
            .response,
            Response::Error(_)
        ));
        assert_eq!(a.committed(), Some(&layout(1, "x")));
        // Committing again is idempotent and changes nothing.
        assert!(
            !a.handle(LayoutRequest::Commit {
                layout: Box::new(layout(1, "x"))
            })
            .changed
        );
    }

    #[test]
    fn rule_state_survives_a_snapshot_round_trip() {
        let mut a = Acceptor::default();
        prepare(&mut a, 2, rank(5, 1));
        propose(&mut a, 3, rank(1, 1), layout(3, "z"));
        a.handle(LayoutRequest::Commit {
            layout: Box::new(layout(1, "x")),
        });
        let bytes = crate::wire::frame::encode_frame(&a.snapshot(), 1 << 20).unwrap();
        let mut dec = crate::wire::FrameDecoder::new(1 << 20);
        dec.extend(&bytes);
        let restored = Acceptor::from_state(dec.next_frame::<AcceptorState>().unwrap().unwrap());
        let mut b = restored;
        assert_eq!(
            prepare(&mut b, 2, rank(4, 1)),
            LayoutResponse::Rejected {
                promised: rank(5, 1)
            },
            "a restarted acceptor keeps its promises"
        );
    }
}
