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

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

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
            // Ends the round (continues or stops the rounds) even if this
            // caller gives up while its round is out.
            let _round = RoundGuard(self);
            self.tail_round().await;
        }
        rx.await.unwrap_or(Err(ClientError::Closed))
    }

    /// Called when a caller's round ends: if callers are waiting, runs the
    /// next rounds on a task; otherwise counts the round as stopped.
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
                    loop {
                        // Let the callers just answered register again
                        // first, so they join this round.
                        tokio::task::yield_now().await;
                        inner.tail_round().await;
                        let mut state = inner.tail_rounds.lock();
                        if state.waiting.is_empty() {
                            state.running -= 1;
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

    /// One round: the waiting callers whose streams fit in one request.
    async fn tail_round(&self) {
        let round: Vec<Waiter> = {
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
        for (streams, tx) in round {
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

/// Ends a caller's round when dropped (after the round, or when the
/// caller gave up during it), so a cancelled caller never leaves its round
/// counted as running.
struct RoundGuard<'a>(&'a Inner);

impl Drop for RoundGuard<'_> {
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_ok() {
            self.0.continue_rounds();
        } else {
            // No runtime to continue on: stop; the next caller starts over.
            self.0.tail_rounds.lock().running -= 1;
        }
    }
}

/// The client's self-reference, for continuing rounds on a task.
pub(crate) type SelfRef = std::sync::Weak<Inner>;
