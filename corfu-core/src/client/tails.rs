//! Tail queries, combined: every linearizable read starts with a tail
//! query, so concurrent queries share sequencer round trips.
//!
//! A caller registers its streams and waits. If fewer than
//! [`ROUNDS_IN_FLIGHT_MAX`] rounds are running, the caller runs one itself:
//! it takes every registered caller (up to the sequencer's limit of streams
//! per query), sends one `Tail` for the union of their streams and answers
//! each with its part. Callers that register while the rounds' requests are
//! out are answered by a later round, whose request is sent after they
//! registered: a tail a caller receives was read after the caller began,
//! which is what linearizable reads need (rounds may overlap: each only
//! answers callers that registered before its request was sent). When a
//! round ends with callers waiting, the next round runs on a task of its
//! own, so no caller serves others for long; that task first lets the
//! callers just answered register again, so they join it rather than wait
//! a whole round for the next one.
//!
//! A round outlives the caller that runs it: if that caller gives up (its
//! future is dropped, say by a timeout around a query or a transaction)
//! while the round's request is out, the other callers the round took are
//! handed back to the front of the queue and a task runs the next round
//! for them; they are never failed for another caller's cancellation.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, OnceLock};

use tokio::sync::oneshot;

use super::error::{Attempt, ClientError};
use super::Inner;
use crate::types::{Address, StreamId};
use crate::wire::sequencer::{SequencerRequest, SequencerResponse};

/// The answer to one caller: the next address and its streams' tails.
pub(crate) type TailAnswer = (Address, Vec<(StreamId, Option<Address>)>);

type Waiter = (
    Vec<StreamId>,
    oneshot::Sender<Result<TailAnswer, ClientError>>,
);

/// Streams one `Tail` request names at most (the sequencer's default
/// `tail_streams_max`).
const ROUND_STREAMS_MAX: usize = 1024;

/// Callers waiting for a tail round, and how many rounds are running.
#[derive(Default)]
pub(crate) struct TailRounds {
    state: Mutex<RoundState>,
}

#[derive(Default)]
struct RoundState {
    waiting: Vec<Waiter>,
    /// Rounds running (at most [`ROUNDS_IN_FLIGHT_MAX`]).
    running: usize,
}

/// Rounds whose requests may be out at once.
const ROUNDS_IN_FLIGHT_MAX: usize = 2;

impl TailRounds {
    fn lock(&self) -> std::sync::MutexGuard<'_, RoundState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    /// The sequencer's next address and the tails of `streams`, read after
    /// this call began (see the module docs).
    pub(crate) async fn tails(&self, streams: Vec<StreamId>) -> Result<TailAnswer, ClientError> {
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut state = self.tail_rounds.lock();
            state.waiting.push((streams, tx));
            let lead = state.running < ROUNDS_IN_FLIGHT_MAX;
            if lead {
                state.running += 1;
            }
            lead
        };
        if lead {
            if let Some(hook) = LEAD_HOOK.get() {
                hook();
            }
            // If this caller gives up while its round is out, the round
            // hands the callers it took back and continues on a task.
            let mut round = Round::new(self);
            self.tail_round(&mut round.taken).await;
        }
        rx.await.unwrap_or(Err(ClientError::Closed))
    }

    /// Called when a round ends: if callers are waiting, runs the next
    /// rounds on a task; otherwise counts the round as stopped.
    fn continue_rounds(&self) {
        let more = {
            let mut state = self.tail_rounds.lock();
            let more = !state.waiting.is_empty();
            if !more {
                state.running -= 1;
            }
            more
        };
        if more {
            if let Some(inner) = self.me.upgrade() {
                tokio::spawn(async move {
                    // Hands its callers back and continues the rounds if
                    // the task is dropped during a round.
                    let mut round = Round::new(&inner);
                    loop {
                        // Let the callers just answered register again
                        // first, so they join this round.
                        tokio::task::yield_now().await;
                        inner.tail_round(&mut round.taken).await;
                        let mut state = inner.tail_rounds.lock();
                        if state.waiting.is_empty() {
                            state.running -= 1;
                            round.running = false;
                            return;
                        }
                    }
                });
            } else {
                // The client is gone: fail the waiters.
                let waiting = std::mem::take(&mut self.tail_rounds.lock().waiting);
                for (_, tx) in waiting {
                    let _ = tx.send(Err(ClientError::Closed));
                }
            }
        }
    }

    /// One round: takes the waiting callers whose streams fit in one
    /// request into `round`, asks the sequencer and answers them (emptying
    /// `round`). If the round is dropped while its request is out, the
    /// callers are still in `round` (see [`Round`]).
    async fn tail_round(&self, round: &mut Vec<Waiter>) {
        *round = {
            let mut state = self.tail_rounds.lock();
            let mut union = BTreeSet::new();
            let mut taken = 0;
            for (streams, _) in &state.waiting {
                union.extend(streams.iter().copied());
                if union.len() > ROUND_STREAMS_MAX && taken > 0 {
                    // This caller waits for the next round.
                    break;
                }
                taken += 1;
            }
            state.waiting.drain(..taken).collect()
        };
        if round.is_empty() {
            return;
        }
        let union: Vec<StreamId> = round
            .iter()
            .flat_map(|(s, _)| s.iter().copied())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let answer = self.tail_request(union).await;
        if let Ok((next, _)) = &answer {
            self.known_tail.fetch_max(*next, Ordering::Relaxed);
        }
        for (streams, tx) in round.drain(..) {
            let part = answer.clone().map(|(next, tails)| {
                let mine = streams
                    .iter()
                    .map(|s| {
                        let tail = tails.iter().find(|(t, _)| t == s).and_then(|(_, a)| *a);
                        (*s, tail)
                    })
                    .collect();
                (next, mine)
            });
            // The caller may have given up; nothing to do then.
            let _ = tx.send(part);
        }
    }

    async fn tail_request(&self, streams: Vec<StreamId>) -> Result<TailAnswer, ClientError> {
        self.retrying(|routes| {
            let streams = streams.clone();
            async move {
                match self
                    .sequencer_call(&routes, SequencerRequest::Tail { streams })
                    .await?
                {
                    SequencerResponse::Tail { next, streams } => Ok((next, streams)),
                    other => Err(Attempt::Fatal(ClientError::Unexpected {
                        addr: "sequencer".into(),
                        answer: format!("{other:?}"),
                    })),
                }
            }
        })
        .await
    }
}

/// A running round, owned by the caller or task that runs it. When
/// dropped (the round's future was dropped: its caller gave up, or its
/// task was cancelled), the callers it took but did not answer are handed
/// back to the front of the queue, so they are answered by a later round
/// rather than failed; then, if it still counts as running, the round ends
/// (the rounds continue on a task or stop).
struct Round<'a> {
    inner: &'a Inner,
    /// Callers taken and not yet answered.
    taken: Vec<Waiter>,
    /// Counted in `RoundState::running` until the drop.
    running: bool,
}

impl<'a> Round<'a> {
    fn new(inner: &'a Inner) -> Round<'a> {
        Round {
            inner,
            taken: Vec::new(),
            running: true,
        }
    }
}

impl Drop for Round<'_> {
    fn drop(&mut self) {
        if !self.taken.is_empty() {
            let mut state = self.inner.tail_rounds.lock();
            // Callers that gave up (the leader itself, perhaps) are dropped.
            let back = self.taken.drain(..).filter(|(_, tx)| !tx.is_closed());
            state.waiting.splice(0..0, back);
        }
        if !self.running {
            return;
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            self.inner.continue_rounds();
        } else {
            // No runtime to continue on: stop; the next caller starts over
            // (and takes the callers handed back).
            self.inner.tail_rounds.lock().running -= 1;
        }
    }
}

/// Called by every caller that leads a tail round, between registering and
/// taking the round's callers (tests only; see [`set_tail_lead_hook`]).
static LEAD_HOOK: OnceLock<fn()> = OnceLock::new();

/// Test hook: `hook` runs in every caller that leads a tail round, after it
/// registered and before its round takes the registered callers, so a test
/// can let another caller register in between (and join that round). Set
/// at most once per process; returns false if a hook was already set.
#[doc(hidden)]
pub fn set_tail_lead_hook(hook: fn()) -> bool {
    LEAD_HOOK.set(hook).is_ok()
}

/// The client's self-reference, for continuing rounds on a task.
pub(crate) type SelfRef = std::sync::Weak<Inner>;
