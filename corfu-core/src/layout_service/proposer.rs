//! The client-side proposer of the layout service: bootstraps epoch 1 and
//! decides each next epoch's layout by Paxos over the layout servers
//! (CORFU §3.4, the "Paxos configurator").
//!
//! A round: phase 1 (`Prepare`) on a majority; if any promise carries an
//! accepted proposal, the highest-ranked one is proposed instead of ours;
//! phase 2 (`Propose`) on a majority; then `Commit` to every server. A
//! rejection (a higher rank was promised) starts a new round above it,
//! after a random back-off so racing proposers do not livelock. A server
//! that already committed the epoch ends the round with that layout, which
//! makes bootstrap idempotent: running it twice changes nothing.

use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::layout::{Layout, LayoutError};
use crate::transport::{ClientEndpoint, TransportError};
use crate::types::Epoch;
use crate::wire::layout::{LayoutRequest, LayoutResponse, Rank};
use crate::wire::{Request, Response};

/// Rounds a proposal may take before giving up on contention.
pub const ROUNDS_MAX: u32 = 16;

/// Why a layout could not be decided or fetched.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProposeError {
    /// Fewer than a majority of layout servers answered.
    #[error("layout service: only {reached} of {total} layout servers answered, {needed} needed ({errors})")]
    NoMajority {
        /// Servers that answered.
        reached: usize,
        /// Servers needed.
        needed: usize,
        /// Servers asked.
        total: usize,
        /// What the others said.
        errors: String,
    },
    /// Competing proposers kept preempting this one.
    #[error("layout service: no decision after {0} contended rounds")]
    Contended(u32),
    /// A later epoch is already committed: this proposal is stale.
    #[error("layout service: epoch {committed} is already committed (proposal was for epoch {proposed})")]
    Superseded {
        /// The epoch proposed.
        proposed: Epoch,
        /// The committed epoch found.
        committed: Epoch,
        /// The committed layout.
        layout: Box<Layout>,
    },
    /// The layout itself is invalid.
    #[error("invalid layout: {0}")]
    Invalid(#[from] LayoutError),
    /// A bootstrap must install epoch 1.
    #[error("a bootstrap installs epoch 1, not epoch {0}")]
    BootstrapEpoch(Epoch),
    /// No layout server could be reached, or none holds a layout.
    #[error("layout service: {0}")]
    Unavailable(String),
}

/// How a layout was decided (see [`Proposer::decide`]).
#[derive(Debug, Clone)]
pub struct Decision {
    /// The chosen layout.
    pub layout: Layout,
    /// Whether this proposer's own phase 2 got it accepted by a majority
    /// (rather than learning a decision another proposer had committed).
    /// Only such a proposer's seals are known to precede the decision.
    pub ours: bool,
    /// When phase 1 of the deciding round had a majority of promises (for
    /// `ours`): every acceptor of that majority had seen the epoch by then.
    pub promised_at: Instant,
}

/// Proposes layouts to a set of layout servers.
#[derive(Debug, Clone)]
pub struct Proposer {
    endpoint: ClientEndpoint,
    servers: Vec<String>,
    proposer_id: u64,
}

enum Reply {
    Promise(Option<(Rank, Box<Layout>)>),
    Accepted,
    Rejected(Rank),
    Committed(Box<Layout>),
    /// The server recorded our commit.
    Done,
    Failed(String),
}

fn classify(server: &str, answer: Result<Response, TransportError>) -> Reply {
    match answer {
        Ok(Response::Layout(LayoutResponse::Promise { accepted })) => Reply::Promise(accepted),
        Ok(Response::Layout(LayoutResponse::Accepted)) => Reply::Accepted,
        Ok(Response::Layout(LayoutResponse::Rejected { promised })) => Reply::Rejected(promised),
        Ok(Response::Layout(LayoutResponse::AlreadyCommitted { layout })) => {
            Reply::Committed(layout)
        }
        Ok(Response::Layout(LayoutResponse::Committed)) => Reply::Done,
        Ok(Response::Error(e)) => Reply::Failed(format!("{server}: {e}")),
        Ok(other) => Reply::Failed(format!("{server}: unexpected answer {other:?}")),
        Err(e) => Reply::Failed(e.to_string()),
    }
}

impl Proposer {
    /// A proposer talking to `servers` (`host:port`); `proposer_id` breaks
    /// rank ties and must differ between concurrent proposers.
    pub fn new(endpoint: ClientEndpoint, servers: Vec<String>, proposer_id: u64) -> Proposer {
        Proposer {
            endpoint,
            servers,
            proposer_id,
        }
    }

    fn majority(&self) -> usize {
        self.servers.len() / 2 + 1
    }

    /// Sends `request` to every server; returns as soon as `enough` answers
    /// satisfy `done`, or when all have answered.
    async fn ask(&self, request: LayoutRequest, stop_at: impl Fn(&[Reply]) -> bool) -> Vec<Reply> {
        let mut calls: FuturesUnordered<_> = self
            .servers
            .iter()
            .map(|server| {
                let peer = self.endpoint.peer(server);
                let request = Request::Layout(request.clone());
                async move { classify(server, peer.call(0, request).await) }
            })
            .collect();
        let mut replies = Vec::new();
        while let Some(reply) = calls.next().await {
            replies.push(reply);
            if stop_at(&replies) {
                break;
            }
        }
        replies
    }

    fn no_majority(&self, replies: &[Reply], answered: usize) -> ProposeError {
        let errors: Vec<&str> = replies
            .iter()
            .filter_map(|r| match r {
                Reply::Failed(e) => Some(e.as_str()),
                _ => None,
            })
            .collect();
        ProposeError::NoMajority {
            reached: answered,
            needed: self.majority(),
            total: self.servers.len(),
            errors: errors.join("; "),
        }
    }

    /// Decides the layout of `layout.epoch`: ours, or one another proposer
    /// got accepted first. Returns the chosen layout after committing it to
    /// every reachable server.
    pub async fn propose(&self, layout: Layout) -> Result<Layout, ProposeError> {
        Ok(self.decide(layout).await?.layout)
    }

    /// [`propose`](Self::propose), saying whether this proposer decided.
    pub async fn decide(&self, layout: Layout) -> Result<Decision, ProposeError> {
        layout.validate()?;
        let epoch = layout.epoch;
        let majority = self.majority();
        let mut number = 1;
        for round in 0..ROUNDS_MAX {
            if round > 0 {
                // Random back-off so racing proposers stop preempting each other.
                let ms = 5 + rand::random::<u64>() % (20 * u64::from(round.min(5)));
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let rank = Rank {
                number,
                proposer: self.proposer_id,
            };
            let promised = |rs: &[Reply]| {
                rs.iter().filter(|r| matches!(r, Reply::Promise(_))).count() >= majority
            };
            let replies = self
                .ask(LayoutRequest::Prepare { epoch, rank }, promised)
                .await;
            let mut promises = 0;
            let mut adopted: Option<(Rank, Box<Layout>)> = None;
            let mut answered = 0;
            for reply in &replies {
                match reply {
                    Reply::Promise(accepted) => {
                        promises += 1;
                        answered += 1;
                        if let Some((r, l)) = accepted {
                            if adopted.as_ref().is_none_or(|(best, _)| r > best) {
                                adopted = Some((*r, l.clone()));
                            }
                        }
                    }
                    Reply::Rejected(p) => {
                        answered += 1;
                        number = number.max(p.number + 1);
                    }
                    Reply::Committed(l) => return self.learnt(epoch, l.clone()).await,
                    Reply::Accepted | Reply::Done => answered += 1,
                    Reply::Failed(_) => {}
                }
            }
            if promises < majority {
                if answered >= majority {
                    continue; // preempted: try a higher rank
                }
                return Err(self.no_majority(&replies, answered));
            }
            let promised_at = Instant::now();
            let value = match adopted {
                Some((_, l)) => *l,
                None => layout.clone(),
            };
            let accepted = |rs: &[Reply]| {
                rs.iter().filter(|r| matches!(r, Reply::Accepted)).count() >= majority
            };
            let replies = self
                .ask(
                    LayoutRequest::Propose {
                        epoch,
                        rank,
                        layout: Box::new(value.clone()),
                    },
                    accepted,
                )
                .await;
            let mut accepts = 0;
            let mut answered = 0;
            for reply in &replies {
                match reply {
                    Reply::Accepted => {
                        accepts += 1;
                        answered += 1;
                    }
                    Reply::Rejected(p) => {
                        answered += 1;
                        number = number.max(p.number + 1);
                    }
                    Reply::Committed(l) => return self.learnt(epoch, l.clone()).await,
                    Reply::Promise(_) | Reply::Done => answered += 1,
                    Reply::Failed(_) => {}
                }
            }
            if accepts >= majority {
                if !self.commit(&value).await {
                    // Chosen, but not known to a majority yet: a later
                    // proposer learns it from the acceptors. Not "ours": the
                    // bootstrap rule needs the commit on a majority.
                    return Err(ProposeError::Unavailable(format!(
                        "epoch {epoch} was chosen but its commit reached no majority"
                    )));
                }
                return Ok(Decision {
                    layout: value,
                    ours: true,
                    promised_at,
                });
            }
            if answered < majority {
                return Err(self.no_majority(&replies, answered));
            }
        }
        Err(ProposeError::Contended(ROUNDS_MAX))
    }

    async fn learnt(&self, epoch: Epoch, committed: Box<Layout>) -> Result<Decision, ProposeError> {
        let layout = self.finish_committed(epoch, committed).await?;
        Ok(Decision {
            layout,
            ours: false,
            promised_at: Instant::now(),
        })
    }

    async fn finish_committed(
        &self,
        epoch: Epoch,
        committed: Box<Layout>,
    ) -> Result<Layout, ProposeError> {
        if committed.epoch == epoch {
            // Help the servers that have not heard of the decision yet.
            let _ = self.commit(&committed).await;
            Ok(*committed)
        } else {
            Err(ProposeError::Superseded {
                proposed: epoch,
                committed: committed.epoch,
                layout: committed,
            })
        }
    }

    /// Sends `Commit` to every server and returns once a majority has
    /// recorded it (or every attempt is over); the rest are committed in
    /// the background, retrying once those that could not be reached, so a
    /// dead server does not hold up a reconfiguration. Best effort beyond
    /// that: a server that misses the commit learns the decision from the
    /// next proposer, which gets `AlreadyCommitted` from the others and
    /// commits it everywhere again.
    async fn commit(&self, layout: &Layout) -> bool {
        let (majority_tx, majority_rx) = tokio::sync::oneshot::channel();
        let this = self.clone();
        let layout = layout.clone();
        tokio::spawn(async move { this.commit_everywhere(layout, majority_tx).await });
        // An error means the task ended without a majority.
        majority_rx.await.is_ok()
    }

    async fn commit_everywhere(&self, layout: Layout, majority: tokio::sync::oneshot::Sender<()>) {
        let request = LayoutRequest::Commit {
            layout: Box::new(layout.clone()),
        };
        let needed = self.majority();
        let mut majority = Some(majority);
        let mut committed = 0;
        let mut pending: Vec<&String> = self.servers.iter().collect();
        for attempt in 0..2 {
            if attempt > 0 {
                // Past the transport's reconnect back-off.
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            let mut calls: FuturesUnordered<_> = std::mem::take(&mut pending)
                .into_iter()
                .map(|server| {
                    let peer = self.endpoint.peer(server);
                    let request = Request::Layout(request.clone());
                    async move { (server, classify(server, peer.call(0, request).await)) }
                })
                .collect();
            while let Some((server, reply)) = calls.next().await {
                if let Reply::Failed(e) = reply {
                    tracing::debug!(error = %e, epoch = layout.epoch, "commit not delivered");
                    pending.push(server);
                    continue;
                }
                committed += 1;
                if committed >= needed {
                    if let Some(tx) = majority.take() {
                        let _ = tx.send(());
                    }
                }
            }
            if pending.is_empty() {
                return;
            }
        }
    }

    /// Installs epoch 1 on a fresh cluster. Idempotent: if epoch 1 is
    /// already decided, returns that layout and changes nothing.
    pub async fn bootstrap(&self, layout: Layout) -> Result<Layout, ProposeError> {
        if layout.epoch != 1 {
            return Err(ProposeError::BootstrapEpoch(layout.epoch));
        }
        match self.propose(layout).await {
            Err(ProposeError::Superseded { layout, .. }) => Ok(*layout),
            other => other,
        }
    }
}

/// How long `fetch_layout` waits for the other servers once a majority
/// has answered.
pub const FETCH_GRACE: Duration = Duration::from_millis(20);

/// The highest committed layout held by any reachable server of `servers`
/// (waiting for all of them, or for a majority and then [`FETCH_GRACE`]).
pub async fn fetch_layout(
    endpoint: &ClientEndpoint,
    servers: &[String],
) -> Result<Layout, ProposeError> {
    fetch_layout_counted(endpoint, servers)
        .await
        .map(|(layout, _)| layout)
}

/// [`fetch_layout`], also telling how many servers answered (whether the
/// caller reaches a majority of them).
pub async fn fetch_layout_counted(
    endpoint: &ClientEndpoint,
    servers: &[String],
) -> Result<(Layout, usize), ProposeError> {
    let mut calls: FuturesUnordered<_> = servers
        .iter()
        .map(|server| {
            let peer = endpoint.peer(server);
            async move {
                (
                    server,
                    peer.call(0, Request::Layout(LayoutRequest::GetLayout))
                        .await,
                )
            }
        })
        .collect();
    let mut best: Option<Layout> = None;
    let mut errors = Vec::new();
    let mut reached = 0;
    // Once a majority has answered, stragglers get a short grace period:
    // a dead server must not hold every client's refresh up for a timeout.
    let majority = servers.len() / 2 + 1;
    let mut grace: Option<tokio::time::Instant> = None;
    loop {
        let next = match grace {
            None => calls.next().await,
            Some(deadline) => match tokio::time::timeout_at(deadline, calls.next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
        };
        let Some((server, answer)) = next else { break };
        match answer {
            Ok(Response::Layout(LayoutResponse::Layout(layout))) => {
                reached += 1;
                if let Some(l) = layout {
                    if best.as_ref().is_none_or(|b| l.epoch > b.epoch) {
                        best = Some(*l);
                    }
                }
            }
            Ok(other) => errors.push(format!("{server}: unexpected answer {other:?}")),
            Err(e) => errors.push(e.to_string()),
        }
        if grace.is_none() && reached >= majority {
            grace = Some(tokio::time::Instant::now() + FETCH_GRACE);
        }
    }
    match best {
        Some(layout) => Ok((layout, reached)),
        None if reached > 0 => Err(ProposeError::Unavailable(
            "the cluster has no layout yet (run the bootstrap)".into(),
        )),
        None => Err(ProposeError::Unavailable(format!(
            "no layout server answered: {}",
            errors.join("; ")
        ))),
    }
}
