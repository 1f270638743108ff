//! Appends: the batching queue, tokens, and chain writes (see the rules in
//! the module docs of [`super`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::sync::{mpsc, oneshot};

use super::error::{Attempt, ClientError};
use super::options::LogClientOptions;
use super::{unexpected, ChainKey, Inner, Routes};
use crate::transport::Peer;
use crate::types::{Address, Epoch, StreamId};
use crate::wire::logunit::{
    AddressedEntry, AppendId, Entry, Existing, LogUnitRequest, LogUnitResponse, ReadOutcome,
    StreamHeader, WriteOutcome,
};
use crate::wire::sequencer::{
    ConditionalToken, ConflictKey, SequencerRequest, SequencerResponse, TokenOutcome, TxnCondition,
};
use crate::wire::{Request, Response};

/// The most conflict keys one batched token carries: keyed appends whose
/// keys together exceed it take separate tokens. The sequencer's
/// `txn_keys_max` (4096 by default) must be at least this for batches to
/// be granted; a lone append with more keys is sent as it is and the
/// sequencer judges it.
pub(crate) const TOKEN_KEYS_MAX: usize = 1024;

/// One entry to append.
pub(crate) struct Job {
    /// The append's identity, stamped on its entry (kept across retries).
    id: AppendId,
    payload: Vec<u8>,
    /// Sorted, without duplicates.
    streams: Vec<StreamId>,
    /// Conflict keys recorded as written by this entry (a keyed append:
    /// a conditional append with an empty read set, which never aborts).
    /// Sorted, without duplicates.
    keys: Vec<ConflictKey>,
    /// A transaction's commit: granted only if the condition holds (its
    /// read set is not empty; see [`Job::committing`]).
    condition: Option<TxnCondition>,
}

impl Job {
    pub(crate) fn new(
        id: AppendId,
        payload: Vec<u8>,
        streams: &[StreamId],
        max: u32,
    ) -> Result<Job, ClientError> {
        let mut streams = streams.to_vec();
        streams.sort_unstable();
        streams.dedup();
        // The record body, as the log units measure it against their own
        // limit: an entry accepted here is never refused there as too
        // large (with equal limits).
        let bytes = crate::logunit::record::body_len(payload.len(), streams.len(), true);
        if bytes > max as usize {
            return Err(ClientError::EntryTooLarge { bytes, max });
        }
        Ok(Job {
            id,
            payload,
            streams,
            keys: Vec::new(),
            condition: None,
        })
    }

    /// This job is a transaction's commit: it takes a conditional token of
    /// its own (batched with other commits in one request).
    pub(crate) fn committing(mut self, condition: &TxnCondition) -> Job {
        self.condition = Some(condition.clone());
        self
    }

    /// This job also records `keys` as written at its address.
    pub(crate) fn with_keys(mut self, keys: &[ConflictKey]) -> Job {
        let mut keys = keys.to_vec();
        keys.sort_unstable_by_key(|k| (k.stream, k.key_hash));
        keys.dedup();
        self.keys = keys;
        self
    }

    fn bytes(&self) -> usize {
        let condition = self
            .condition
            .as_ref()
            .map_or(0, |c| 24 * (c.read_set.len() + c.write_set.len()));
        self.payload.len() + 32 * self.streams.len() + 16 * self.keys.len() + condition
    }
}

/// An append waiting in the queue.
pub(crate) struct PendingAppend {
    pub(crate) job: Job,
    pub(crate) reply: oneshot::Sender<Result<Address, ClientError>>,
}

/// Takes appends off the queue and sends them as batches, one per free
/// batch slot; exits when every client handle is gone.
pub(crate) async fn run_batcher(inner: Arc<Inner>, mut queue: mpsc::Receiver<PendingAppend>) {
    let entries_max = inner.options.batch_entries_max as usize;
    let bytes_max = inner.options.batch_bytes_max as usize;
    let mut carry: Option<PendingAppend> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match queue.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let Ok(slot) = inner.batch_slots.clone().acquire_owned().await else {
            return;
        };
        // Let the tasks just answered by the batch that freed this slot
        // queue their next appends first, so they join this batch instead
        // of waiting for the next free slot.
        tokio::task::yield_now().await;
        // Everything queued while waiting for the slot joins this batch.
        let mut bytes = first.job.bytes();
        let mut batch = vec![first];
        while batch.len() < entries_max {
            match queue.try_recv() {
                Ok(p) if bytes + p.job.bytes() > bytes_max => {
                    carry = Some(p);
                    break;
                }
                Ok(p) => {
                    bytes += p.job.bytes();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let inner = inner.clone();
        tokio::spawn(async move {
            let (jobs, replies): (Vec<Job>, Vec<_>) =
                batch.into_iter().map(|p| (p.job, p.reply)).unzip();
            let results = inner.append_jobs(jobs).await;
            for (reply, result) in replies.into_iter().zip(results) {
                // The caller may have given up; nothing to do then.
                let _ = reply.send(result);
            }
            // The slot is freed only after the answers are out: freed
            // before, the batcher would take the next batch before these
            // callers could append again, and each of them would wait a
            // whole extra batch for its next append.
            drop(slot);
        });
    }
}

/// Splits `jobs` into batches within the batch limits, in order.
pub(crate) fn split_batches(jobs: Vec<Job>, options: &LogClientOptions) -> Vec<Vec<Job>> {
    let mut batches = Vec::new();
    let mut batch: Vec<Job> = Vec::new();
    let mut bytes = 0;
    for job in jobs {
        let full = batch.len() >= options.batch_entries_max as usize
            || bytes + job.bytes() > options.batch_bytes_max as usize;
        if full && !batch.is_empty() {
            batches.push(std::mem::take(&mut batch));
            bytes = 0;
        }
        bytes += job.bytes();
        batch.push(job);
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    batches
}

/// An entry with its address, on its way down the chain.
struct Placed {
    job: usize,
    write: AddressedEntry,
    /// The head may hold this entry (it accepted it, or the outcome of a
    /// write to it is unknown): the head answering `Overwritten` with this
    /// very entry then means it is ours.
    maybe_written: bool,
    /// The layout epoch the address was granted (or last confirmed) in.
    epoch: Epoch,
}

/// Where one placed entry stands after a pass down its chain.
enum Step {
    /// On every member: acknowledged.
    Done,
    /// The head holds something else: take a new token.
    Lost,
    /// Try the chain again (after a layout refresh or a pause).
    Again(Placed, Attempt),
    /// Give up on this entry.
    Failed(ClientError),
}

impl Inner {
    /// Appends `jobs` (one batch); results in input order.
    pub(crate) async fn append_jobs(&self, jobs: Vec<Job>) -> Vec<Result<Address, ClientError>> {
        let deadline = Instant::now() + self.options.operation_timeout();
        let mut results: Vec<Option<Result<Address, ClientError>>> =
            (0..jobs.len()).map(|_| None).collect();
        let mut tokens_taken = vec![0u32; jobs.len()];
        let mut todo: Vec<usize> = (0..jobs.len()).collect();
        while !todo.is_empty() {
            let mut placed = Vec::with_capacity(todo.len());
            for (group, outcome) in self.take_tokens(&jobs, &todo, deadline).await {
                match outcome {
                    Ok(mut entries) => placed.append(&mut entries),
                    Err(e) => {
                        for job in group {
                            results[job] = Some(Err(e.clone()));
                        }
                    }
                }
            }
            for &job in &todo {
                tokens_taken[job] += 1;
            }
            todo.clear();
            for (job, address, outcome) in self.write_placed(placed, deadline).await {
                match outcome {
                    Ok(true) => results[job] = Some(Ok(address)),
                    Ok(false) if tokens_taken[job] >= self.options.append_retries_max => {
                        results[job] = Some(Err(ClientError::AppendRetriesExhausted {
                            attempts: tokens_taken[job],
                        }))
                    }
                    Ok(false) => todo.push(job),
                    Err(e) => results[job] = Some(Err(e)),
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(ClientError::Closed)))
            .collect()
    }

    /// Takes one token per set of streams among `todo` (and, for keyed
    /// appends, per at most [`TOKEN_KEYS_MAX`] conflict keys) and builds
    /// each entry with its address and backpointers.
    async fn take_tokens(
        &self,
        jobs: &[Job],
        todo: &[usize],
        deadline: Instant,
    ) -> Vec<(Vec<usize>, Result<Vec<Placed>, ClientError>)> {
        let mut by_streams: HashMap<&[StreamId], Vec<usize>> = HashMap::new();
        let mut commits = Vec::new();
        for &job in todo {
            if jobs[job].condition.is_some() {
                commits.push(job);
            } else {
                by_streams.entry(&jobs[job].streams).or_default().push(job);
            }
        }
        let groups = by_streams
            .into_iter()
            .flat_map(|(streams, group)| split_by_keys(jobs, group).map(move |g| (streams, g)));
        let requests = groups.map(|(streams, (group, condition))| async move {
            let placed = self
                .token_for(jobs, streams, &group, condition.as_ref(), deadline)
                .await;
            vec![(group, placed)]
        });
        let (mut out, commits) = tokio::join!(
            join_all(requests),
            self.commit_tokens(jobs, commits, deadline)
        );
        out.push(commits);
        out.into_iter().flatten().collect()
    }

    /// Takes one conditional token for each of `commits` in one request;
    /// each refused one is answered at once, each granted one placed.
    async fn commit_tokens(
        &self,
        jobs: &[Job],
        commits: Vec<usize>,
        deadline: Instant,
    ) -> Vec<(Vec<usize>, Result<Vec<Placed>, ClientError>)> {
        if commits.is_empty() {
            return Vec::new();
        }
        let tokens: Vec<ConditionalToken> = commits
            .iter()
            .filter_map(|&job| {
                let condition = jobs[job].condition.clone()?;
                Some(ConditionalToken {
                    streams: jobs[job].streams.clone(),
                    condition,
                })
            })
            .collect();
        let mut pause = Duration::from_millis(2);
        let (outcomes, epoch) = loop {
            let routes = self.routes.load_full();
            let request = SequencerRequest::Tokens {
                tokens: tokens.clone(),
            };
            let why = match self.sequencer_call(&routes, request).await {
                Ok(SequencerResponse::Tokens(outcomes)) if outcomes.len() == tokens.len() => {
                    break (outcomes, routes.epoch())
                }
                Ok(other) => {
                    let e = ClientError::Unexpected {
                        addr: "sequencer".into(),
                        answer: format!("{other:?}"),
                    };
                    return vec![(commits, Err(e))];
                }
                Err(Attempt::Fatal(e)) => return vec![(commits, Err(e))],
                Err(Attempt::Stale(epoch)) => match self.refresh(epoch, deadline).await {
                    Ok(()) => continue,
                    Err(e) => return vec![(commits, Err(e))],
                },
                Err(Attempt::Transient(why)) => why,
            };
            if let Err(e) = self.backoff(&mut pause, deadline, why).await {
                return vec![(commits, Err(e))];
            }
        };
        let mut out = Vec::with_capacity(commits.len());
        let mut granted_max = 0;
        for (job, outcome) in commits.into_iter().zip(outcomes) {
            let result = match outcome {
                TokenOutcome::Granted { address, previous } => {
                    granted_max = granted_max.max(address + 1);
                    Ok(vec![Placed {
                        job,
                        write: AddressedEntry {
                            address,
                            entry: Entry {
                                id: Some(jobs[job].id),
                                streams: jobs[job]
                                    .streams
                                    .iter()
                                    .map(|&stream| StreamHeader {
                                        stream,
                                        backpointer: previous
                                            .iter()
                                            .find(|(s, _)| *s == stream)
                                            .and_then(|(_, bp)| *bp),
                                    })
                                    .collect(),
                                payload: jobs[job].payload.clone(),
                            },
                        },
                        maybe_written: false,
                        epoch,
                    }])
                }
                TokenOutcome::Aborted { key, address } => Err(ClientError::Aborted {
                    conflict: key,
                    address,
                }),
                TokenOutcome::Refused { message } => Err(ClientError::InvalidArgument(format!(
                    "the sequencer refused the commit: {message}"
                ))),
                TokenOutcome::TooManyKeys { keys, max } => {
                    Err(ClientError::TooManyKeys { keys, max })
                }
            };
            out.push((vec![job], result));
        }
        self.known_tail
            .fetch_max(granted_max, std::sync::atomic::Ordering::Relaxed);
        out
    }

    async fn token_for(
        &self,
        jobs: &[Job],
        streams: &[StreamId],
        group: &[usize],
        condition: Option<&TxnCondition>,
        deadline: Instant,
    ) -> Result<Vec<Placed>, ClientError> {
        let count = group.len() as u32;
        let mut pause = Duration::from_millis(2);
        let (start, previous, epoch) = loop {
            let routes = self.routes.load_full();
            let request = SequencerRequest::Token {
                count,
                streams: streams.to_vec(),
                condition: condition.cloned(),
            };
            let why = match self.sequencer_call(&routes, request).await {
                Ok(SequencerResponse::Abort { key, address }) => {
                    return Err(ClientError::Aborted {
                        conflict: key,
                        address,
                    })
                }
                Ok(SequencerResponse::TooManyKeys { keys, max }) => {
                    return Err(ClientError::TooManyKeys { keys, max })
                }
                Ok(SequencerResponse::Token {
                    start,
                    count: granted,
                    previous,
                }) if granted == count => break (start, previous, routes.epoch()),
                Ok(other) => {
                    return Err(ClientError::Unexpected {
                        addr: "sequencer".into(),
                        answer: format!("{other:?}"),
                    })
                }
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Stale(epoch)) => {
                    self.refresh(epoch, deadline).await?;
                    continue;
                }
                Err(Attempt::Transient(why)) => why,
            };
            self.backoff(&mut pause, deadline, why).await?;
        };
        self.known_tail.fetch_max(
            start + u64::from(count),
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(group
            .iter()
            .enumerate()
            .map(|(i, &job)| {
                let address = start + i as u64;
                let headers = streams
                    .iter()
                    .map(|&stream| StreamHeader {
                        stream,
                        backpointer: if i == 0 {
                            previous
                                .iter()
                                .find(|(s, _)| *s == stream)
                                .and_then(|(_, bp)| *bp)
                        } else {
                            Some(address - 1)
                        },
                    })
                    .collect();
                Placed {
                    job,
                    write: AddressedEntry {
                        address,
                        entry: Entry {
                            id: Some(jobs[job].id),
                            streams: headers,
                            payload: jobs[job].payload.clone(),
                        },
                    },
                    maybe_written: false,
                    epoch,
                }
            })
            .collect())
    }

    /// Writes placed entries down their chains until each is acknowledged
    /// (`Ok(true)`), lost its address (`Ok(false)`) or failed.
    async fn write_placed(
        &self,
        mut placed: Vec<Placed>,
        deadline: Instant,
    ) -> Vec<(usize, Address, Result<bool, ClientError>)> {
        let mut out = Vec::with_capacity(placed.len());
        let mut pause = Duration::from_millis(2);
        let mut placed_again = Vec::new();
        while !placed.is_empty() {
            let routes = self.routes.load_full();
            let mut stale = None;
            let mut transient = None;
            let mut ready = Vec::with_capacity(placed.len());
            for mut p in placed.drain(..) {
                if p.epoch == routes.epoch() {
                    ready.push(p);
                    continue;
                }
                // The layout changed since the address was granted. A new
                // sequencer may grant it again (it knows only the tails
                // the sealed units reported), so the entry keeps it only if
                // the head already holds it; otherwise it takes a new token.
                if !p.maybe_written {
                    out.push((p.job, p.write.address, Ok(false)));
                    continue;
                }
                match self.head_holds(&routes, &p.write).await {
                    Ok(true) => {
                        p.epoch = routes.epoch();
                        ready.push(p);
                    }
                    Ok(false) => out.push((p.job, p.write.address, Ok(false))),
                    Err(Attempt::Fatal(e)) => out.push((p.job, p.write.address, Err(e))),
                    Err(Attempt::Stale(epoch)) => {
                        stale = stale.max(Some(epoch));
                        placed_again.push(p);
                    }
                    Err(Attempt::Transient(why)) => {
                        transient = Some(why);
                        placed_again.push(p);
                    }
                }
            }
            let mut by_chain: HashMap<ChainKey, Vec<Placed>> = HashMap::new();
            for p in ready {
                if routes.layout.is_void(p.write.address) {
                    // A grant of a replaced sequencer: the address will
                    // never hold anything; take a new token.
                    out.push((p.job, p.write.address, Ok(false)));
                    continue;
                }
                match routes.chain(p.write.address) {
                    Ok((key, _)) => by_chain.entry(key).or_default().push(p),
                    Err(e) => out.push((p.job, p.write.address, Err(e))),
                }
            }
            let passes = by_chain.into_values().map(|group| {
                let routes = &routes;
                async move {
                    let chain = routes
                        .chain(group[0].write.address)
                        .map(|(_, c)| c)
                        .unwrap_or(&[]);
                    self.write_chain(routes, chain, group).await
                }
            });
            for (p, step) in join_all(passes).await.into_iter().flatten() {
                match step {
                    Step::Done => out.push((p.0, p.1, Ok(true))),
                    Step::Lost => out.push((p.0, p.1, Ok(false))),
                    Step::Failed(e) => out.push((p.0, p.1, Err(e))),
                    Step::Again(again, why) => {
                        match why {
                            Attempt::Stale(epoch) => stale = stale.max(Some(epoch)),
                            Attempt::Transient(why) => transient = Some(why),
                            Attempt::Fatal(e) => {
                                out.push((again.job, again.write.address, Err(e)));
                                continue;
                            }
                        }
                        placed_again.push(again);
                    }
                }
            }
            placed.append(&mut placed_again);
            if placed.is_empty() {
                break;
            }
            let next = match (stale, transient) {
                (Some(epoch), _) => self.refresh(epoch, deadline).await,
                (None, Some(why)) => self.backoff(&mut pause, deadline, why).await,
                (None, None) => Ok(()),
            };
            if let Err(e) = next {
                for p in placed.drain(..) {
                    out.push((p.job, p.write.address, Err(e.clone())));
                }
            }
        }
        out
    }

    /// True if the head of `write`'s chain holds exactly this entry.
    async fn head_holds(&self, routes: &Routes, write: &AddressedEntry) -> Result<bool, Attempt> {
        if routes.layout.is_void(write.address) {
            return Ok(false);
        }
        let (_, chain) = routes.chain(write.address)?;
        let head = &chain[0];
        let request = LogUnitRequest::Read {
            address: write.address,
        };
        let answer = match self.log_unit_call(routes, head, request).await {
            // The head's copy is corrupt: the chain's value, repaired.
            Err(why) if super::repair::is_corrupt(&why) => {
                let value = self.repair(routes, write.address, true).await?;
                return Ok(value == ReadOutcome::Data(write.entry.clone()));
            }
            answer => answer?,
        };
        match answer {
            LogUnitResponse::Read(ReadOutcome::Data(entry)) => Ok(entry == write.entry),
            LogUnitResponse::Read(_) => Ok(false),
            other => Err(Attempt::Fatal(unexpected(head, &Response::LogUnit(other)))),
        }
    }

    /// One pass of a group of entries down one chain, head first.
    async fn write_chain(
        &self,
        routes: &Routes,
        chain: &[Peer],
        mut live: Vec<Placed>,
    ) -> Vec<((usize, Address), Step)> {
        let mut out = Vec::with_capacity(live.len());
        for (index, member) in chain.iter().enumerate() {
            if live.is_empty() {
                break;
            }
            let is_head = index == 0;
            let request = if live.len() == 1 {
                LogUnitRequest::Write(live[0].write.clone())
            } else {
                LogUnitRequest::WriteBatch(live.iter().map(|p| p.write.clone()).collect())
            };
            let answer = self
                .call_watching(routes, member, Request::LogUnit(request))
                .await;
            let outcomes = match answer {
                Ok(Response::LogUnit(LogUnitResponse::Write(o))) if live.len() == 1 => vec![o],
                Ok(Response::LogUnit(LogUnitResponse::WriteBatch(o))) if o.len() == live.len() => o,
                Ok(other) => {
                    let e = unexpected(member, &other);
                    out.extend(live.drain(..).map(|p| (key(&p), Step::Failed(e.clone()))));
                    break;
                }
                Err(why) => {
                    // A write that timed out or broke may have landed; one
                    // refused for its epoch did not.
                    let unknown = matches!(why, Attempt::Transient(_));
                    out.extend(live.drain(..).map(|mut p| {
                        if is_head && unknown {
                            p.maybe_written = true;
                        }
                        let why = match &why {
                            Attempt::Stale(e) => Attempt::Stale(*e),
                            Attempt::Transient(w) => Attempt::Transient(w.clone()),
                            Attempt::Fatal(e) => Attempt::Fatal(e.clone()),
                        };
                        (key(&p), Step::Again(p, why))
                    }));
                    break;
                }
            };
            let mut next = Vec::with_capacity(live.len());
            for (mut p, outcome) in live.into_iter().zip(outcomes) {
                match outcome {
                    WriteOutcome::Ok => {
                        p.maybe_written = true;
                        next.push(p);
                    }
                    WriteOutcome::Overwritten(Existing::Data(existing))
                        if existing == p.write.entry && (p.maybe_written || !is_head) =>
                    {
                        next.push(p);
                    }
                    WriteOutcome::Trimmed => out.push((key(&p), Step::Lost)),
                    // This member's copy is corrupt: the repair gives every
                    // member the chain's value. Ours: it is written (on
                    // every member by now). Another: ours is on no member,
                    // so the entry takes a new address. Nothing decided
                    // yet: write again at the same address.
                    WriteOutcome::Corrupt => {
                        match self.repair(routes, p.write.address, true).await {
                            Ok(ReadOutcome::Data(e)) if e == p.write.entry => {
                                p.maybe_written = true;
                                next.push(p);
                            }
                            Ok(ReadOutcome::Unwritten) => {
                                let why = Attempt::Transient(format!(
                                    "address {} was repaired but holds nothing yet",
                                    p.write.address
                                ));
                                out.push((key(&p), Step::Again(p, why)));
                            }
                            Ok(_) => out.push((key(&p), Step::Lost)),
                            Err(why) => out.push((key(&p), Step::Again(p, why))),
                        }
                    }
                    WriteOutcome::Overwritten(_) if is_head => out.push((key(&p), Step::Lost)),
                    // Something else below the head, where the head
                    // accepted this entry: a repair that found the head's
                    // copy corrupt may have decided the address below it
                    // (the entry had reached no further, so it was never
                    // acknowledged). The chain's value, read again (and
                    // repaired), tells: not this entry, a new address;
                    // this entry at the head, the chain diverged.
                    WriteOutcome::Overwritten(existing) => {
                        match self.head_holds(routes, &p.write).await {
                            Ok(false) => out.push((key(&p), Step::Lost)),
                            Ok(true) => {
                                let found = match existing {
                                    Existing::Data(_) => "other data",
                                    Existing::Junk => "junk",
                                };
                                let e = ClientError::ChainDiverged {
                                    address: p.write.address,
                                    detail: format!(
                                        "the head holds this entry but {} holds {found}",
                                        member.addr()
                                    ),
                                };
                                tracing::error!("{e}");
                                out.push((key(&p), Step::Failed(e)));
                            }
                            Err(why) => out.push((key(&p), Step::Again(p, why))),
                        }
                    }
                }
            }
            live = next;
        }
        out.extend(live.into_iter().map(|p| (key(&p), Step::Done)));
        out
    }
}

/// Splits one group of jobs (same streams) into groups whose conflict
/// keys together stay within [`TOKEN_KEYS_MAX`], each with the condition of
/// its token: none if no job carries keys, else an empty read set (it
/// never aborts), a snapshot no floor exceeds and the union of the keys,
/// recorded at the group's last address. Recording a key a few addresses
/// late can only make a transaction abort that might have committed,
/// never the reverse.
fn split_by_keys(
    jobs: &[Job],
    group: Vec<usize>,
) -> impl Iterator<Item = (Vec<usize>, Option<TxnCondition>)> {
    let mut out: Vec<(Vec<usize>, Vec<ConflictKey>)> = Vec::new();
    let mut current: (Vec<usize>, Vec<ConflictKey>) = (Vec::new(), Vec::new());
    for job in group {
        let keys = &jobs[job].keys;
        if !current.0.is_empty() && current.1.len() + keys.len() > TOKEN_KEYS_MAX {
            out.push(std::mem::take(&mut current));
        }
        current.0.push(job);
        current.1.extend_from_slice(keys);
    }
    out.push(current);
    out.into_iter().map(|(group, mut keys)| {
        if keys.is_empty() {
            return (group, None);
        }
        keys.sort_unstable_by_key(|k| (k.stream, k.key_hash));
        keys.dedup();
        let condition = TxnCondition {
            snapshot: Address::MAX,
            read_set: Vec::new(),
            write_set: keys,
        };
        (group, Some(condition))
    })
}

fn key(p: &Placed) -> (usize, Address) {
    (p.job, p.write.address)
}
