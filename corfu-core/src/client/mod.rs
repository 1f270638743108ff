//! The log client (CORFU §3): appends and reads the shared log by talking to
//! the sequencer and the log units directly, as the current layout maps
//! them.
//!
//! Rules:
//! - **Stripe and mirror.** Address `a` lives on the chain of its
//!   segment's stripe `a % stripes` ([`Layout::chain_of`]).
//! - **Chain order.** An append takes a token from the sequencer, then
//!   writes the entry to the chain head first and the tail last; it is
//!   acknowledged only when the tail has it. The head decides an address's
//!   value (write-once), everything downstream copies the head. If the head
//!   holds something else (a hole filler was faster), the append takes a
//!   new token and tries again, at most `append_retries_max` times.
//! - **Reads go to the tail**, so a read sees only acknowledged (or
//!   completed) entries.
//! - **Hole filling.** A reader that finds an address below the tail
//!   unwritten waits `hole_fill_timeout_ms`, then completes it: if the
//!   head holds a value it copies it down the chain, otherwise it fills
//!   junk down the chain ([`HoleFillPolicy`]).
//! - **Epochs.** Every request carries the client's layout epoch; a
//!   `WrongEpoch` answer makes the client fetch the newer layout from the
//!   layout servers and retry. Transient failures (unreachable nodes,
//!   timeouts, an unbootstrapped sequencer) are retried with back-off for
//!   at most `operation_timeout_ms`.
//! - **Retried writes stay write-once.** After a write whose outcome is
//!   unknown (timeout, lost connection, a newer epoch after the head
//!   accepted it) the client writes the same entry at the same address
//!   again; the head then answers `Overwritten` with the client's own
//!   entry, which counts as success. An entry is taken to a new address only
//!   once its old address is known to hold something else, so an
//!   acknowledged value sits at exactly one address.
//! - **Batching.** Concurrent appends are queued and sent as batches: one
//!   token request per set of streams and one write per chain member and
//!   stripe. A batch is sent as soon as a batch slot is free; while all
//!   `batches_in_flight_max` slots are busy the queue grows into the next,
//!   larger batch. A lone append, with nothing in flight, skips the queue.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use corfu_core::client::LogClient;
//! use corfu_core::client_config::ClientConfig;
//! use corfu_core::types::StreamId;
//! use corfu_core::wire::logunit::ReadOutcome;
//!
//! let config = ClientConfig::load("/tmp/corfu-demo/cluster.toml".as_ref())?;
//! let log = LogClient::connect(&config).await?;
//! let orders = StreamId::from_name("orders");
//! let address = log.append(b"order 1".to_vec(), &[orders]).await?;
//! assert!(matches!(log.read(address).await?, ReadOutcome::Data(_)));
//! for (address, entry) in log.read_stream(orders, 0, log.tail().await?).await? {
//!     println!("{address}: {} bytes", entry.payload.len());
//! }
//! # Ok(()) }
//! ```

mod append;
mod error;
mod options;
mod reach;
pub(crate) mod repair;
mod tails;

pub use error::ClientError;
pub use options::{HoleFillPolicy, LogClientOptions};
#[doc(hidden)]
pub use tails::set_tail_lead_hook;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures_util::stream::{self, StreamExt};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::client_config::{ClientConfig, ClientSetupError};
use crate::layout::Layout;
use crate::layout_service::proposer::fetch_layout;
use crate::transport::{ClientEndpoint, Peer, TransportError};
use crate::types::{Address, Epoch, StreamId};
use crate::wire::logunit::{
    AppendId, Entry, Existing, LogUnitRequest, LogUnitResponse, ReadOutcome,
};
use crate::wire::sequencer::{SequencerRequest, SequencerResponse, TxnCondition};
use crate::wire::{Request, Response, ServerErrorKind};
use append::{Job, PendingAppend};
use error::Attempt;

/// A client of one cluster's shared log. Cheap to clone; clones share the
/// connections, the layout and the append queue.
#[derive(Clone)]
pub struct LogClient {
    inner: Arc<Inner>,
    queue: mpsc::Sender<PendingAppend>,
}

impl std::fmt::Debug for LogClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogClient")
            .field("epoch", &self.inner.routes.load().layout.epoch)
            .finish()
    }
}

/// A client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The configuration or TLS material is unusable.
    #[error(transparent)]
    Setup(#[from] ClientSetupError),
    /// The options are out of range.
    #[error("client options: {0}")]
    Options(String),
    /// No layout could be fetched.
    #[error(transparent)]
    Cluster(#[from] ClientError),
}

pub(crate) struct Inner {
    endpoint: ClientEndpoint,
    layout_servers: Vec<String>,
    options: LogClientOptions,
    routes: ArcSwap<Routes>,
    /// One layout fetch at a time.
    refresh: tokio::sync::Mutex<()>,
    /// Batches being written.
    batch_slots: Arc<Semaphore>,
    /// A lower bound of the log's tail, learnt from the sequencer.
    known_tail: AtomicU64,
    /// Tail queries being combined.
    tail_rounds: tails::TailRounds,
    /// This client, for work continued on tasks.
    me: tails::SelfRef,
    /// Chosen at random at connect: the client part of every append's
    /// identity.
    client_id: u64,
    /// Appends numbered so far (the sequence part of the identity).
    appends: AtomicU64,
    /// Nodes this client cannot reach (see [`reach`]).
    reach: Arc<reach::Reach>,
    /// Stream addresses found below the sequencer's complete index.
    walks: std::sync::Mutex<Walks>,
}

/// Stream addresses found by following backpointers below the point from
/// which the sequencer's index is complete, per stream: a stream read in
/// chunks (a view catching up) walks down once, not once per chunk. What a
/// walk finds never changes (the log is write-once), so an entry is valid
/// as long as it is keyed by the same starting address.
#[derive(Default)]
struct Walks {
    by_stream: std::collections::HashMap<StreamId, Walked>,
}

/// One walk: every address of the stream in `[low, start)`, ascending.
struct Walked {
    start: Address,
    low: Address,
    found: Vec<Address>,
}

/// Streams whose walks are kept (all are dropped when more come).
const WALKS_STREAMS_MAX: usize = 64;
/// Addresses kept in all (8 MiB): a larger walk is not kept, and one that
/// would not fit drops the others.
const WALK_ADDRESSES_MAX: usize = 1 << 20;

impl Walks {
    /// The addresses of `stream` in `[from, start)`, if a walk from
    /// `start` went at least as low as `from`.
    fn get(&self, stream: StreamId, start: Address, from: Address) -> Option<Vec<Address>> {
        let walked = self.by_stream.get(&stream)?;
        if walked.start != start || walked.low > from {
            return None;
        }
        let at = walked.found.partition_point(|a| *a < from);
        Some(walked.found[at..].to_vec())
    }

    fn put(&mut self, stream: StreamId, start: Address, low: Address, mut found: Vec<Address>) {
        if found.len() > WALK_ADDRESSES_MAX {
            return;
        }
        self.by_stream.remove(&stream);
        let held: usize = self.by_stream.values().map(|w| w.found.len()).sum();
        if self.by_stream.len() >= WALKS_STREAMS_MAX || held + found.len() > WALK_ADDRESSES_MAX {
            self.by_stream.clear();
        }
        found.sort_unstable();
        found.dedup();
        self.by_stream.insert(stream, Walked { start, low, found });
    }
}

impl Inner {
    /// The identity of a new append.
    fn next_append_id(&self) -> AppendId {
        AppendId {
            client: self.client_id,
            seq: self.appends.fetch_add(1, Ordering::Relaxed) + 1,
        }
    }
}

/// The peers of one layout, resolved once per epoch.
pub(crate) struct Routes {
    layout: Arc<Layout>,
    /// Per segment, per stripe, the chain (head first).
    chains: Vec<Vec<Vec<Peer>>>,
    sequencer: Option<Peer>,
}

/// Identifies one chain of one layout: (segment index, stripe index).
type ChainKey = (usize, usize);

impl Routes {
    fn new(endpoint: &ClientEndpoint, layout: Layout) -> Routes {
        let chains = layout
            .segments
            .iter()
            .map(|segment| {
                segment
                    .stripes
                    .iter()
                    .map(|stripe| {
                        stripe
                            .chain
                            .iter()
                            .map(|n| endpoint.peer(&n.addr))
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let sequencer = layout.active_sequencer().map(|n| endpoint.peer(&n.addr));
        Routes {
            layout: Arc::new(layout),
            chains,
            sequencer,
        }
    }

    fn epoch(&self) -> Epoch {
        self.layout.epoch
    }

    /// The chain holding `address` and its key.
    fn chain(&self, address: Address) -> Result<(ChainKey, &[Peer]), ClientError> {
        let segments = &self.layout.segments;
        let after = segments.partition_point(|s| s.start <= address);
        let found = after.checked_sub(1).and_then(|i| {
            let segment = &segments[i];
            if segment.end.is_some_and(|end| address >= end) || segment.stripes.is_empty() {
                return None;
            }
            let stripe = (address % segment.stripes.len() as u64) as usize;
            Some((i, stripe))
        });
        match found {
            Some((i, stripe)) if !self.chains[i][stripe].is_empty() => {
                Ok(((i, stripe), &self.chains[i][stripe]))
            }
            _ => Err(ClientError::InvalidArgument(format!(
                "no segment of the layout of epoch {} holds address {address}",
                self.layout.epoch
            ))),
        }
    }

    fn sequencer(&self) -> Result<&Peer, Attempt> {
        self.sequencer.as_ref().ok_or_else(|| {
            Attempt::Fatal(ClientError::Unavailable(format!(
                "the layout of epoch {} names no sequencer",
                self.layout.epoch
            )))
        })
    }
}

/// Sorts the answer of one call into a usable response or a retry reason.
/// How long a call may wait for its answer before the client starts
/// asking the layout servers whether the cluster moved on without the node.
pub(crate) const STALL_POLL_AFTER: Duration = Duration::from_millis(50);

/// How often a stalled call asks again.
pub(crate) const STALL_POLL_EVERY: Duration = Duration::from_millis(50);

fn classify(peer: &Peer, answer: Result<Response, TransportError>) -> Result<Response, Attempt> {
    match answer {
        Ok(Response::WrongEpoch { current }) => Err(Attempt::Stale(current)),
        Ok(Response::Error(error)) => match error.kind {
            ServerErrorKind::Unavailable => {
                Err(Attempt::Transient(format!("{}: {}", peer.addr(), error)))
            }
            _ => Err(Attempt::Fatal(ClientError::Refused {
                addr: peer.addr().to_string(),
                error,
            })),
        },
        Ok(response) => Ok(response),
        Err(e) => Err(e.into()),
    }
}

fn unexpected(peer: &Peer, answer: &Response) -> ClientError {
    ClientError::Unexpected {
        addr: peer.addr().to_string(),
        answer: format!("{answer:?}"),
    }
}

impl Inner {
    /// Runs `op` against the current layout until it succeeds, fails for
    /// good or the operation timeout passes; refreshes the layout on
    /// `WrongEpoch` and after transient failures.
    async fn retrying<T, F, Fut>(&self, mut op: F) -> Result<T, ClientError>
    where
        F: FnMut(Arc<Routes>) -> Fut,
        Fut: Future<Output = Result<T, Attempt>>,
    {
        let deadline = Instant::now() + self.options.operation_timeout();
        let mut pause = Duration::from_millis(2);
        loop {
            let routes = self.routes.load_full();
            match op(routes).await {
                Ok(value) => return Ok(value),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Stale(epoch)) => self.refresh(epoch, deadline).await?,
                Err(Attempt::Transient(why)) => {
                    self.backoff(&mut pause, deadline, why).await?;
                }
            }
        }
    }

    /// Sleeps before a retry (doubling up to 200 ms), or fails if the
    /// deadline would pass. A node that stays unreachable may have been
    /// replaced, so the layout is refetched as well.
    async fn backoff(
        &self,
        pause: &mut Duration,
        deadline: Instant,
        why: String,
    ) -> Result<(), ClientError> {
        if Instant::now() + *pause > deadline {
            return Err(ClientError::Unavailable(why));
        }
        tokio::time::sleep(*pause).await;
        self.remove_unreachable();
        if *pause >= Duration::from_millis(50) {
            let current = self.routes.load().epoch();
            // Best effort: a failure here shows up in the next attempt.
            let _ = self.refresh(current + 1, Instant::now()).await;
        }
        *pause = (*pause * 2).min(Duration::from_millis(200));
        Ok(())
    }

    /// Makes the layout at least `min_epoch`, fetching it from the layout
    /// servers (waiting while a reconfiguration is committing it) until
    /// `deadline`. With a deadline in the past it tries once.
    async fn refresh(&self, min_epoch: Epoch, deadline: Instant) -> Result<(), ClientError> {
        let _one_at_a_time = self.refresh.lock().await;
        loop {
            let current = self.routes.load().epoch();
            if current >= min_epoch {
                return Ok(());
            }
            let why = match fetch_layout(&self.endpoint, &self.layout_servers).await {
                Ok(layout) if layout.epoch > current => {
                    tracing::debug!(epoch = layout.epoch, "installing a newer layout");
                    self.routes
                        .store(Arc::new(Routes::new(&self.endpoint, layout)));
                    continue;
                }
                Ok(layout) => format!(
                    "nodes are at epoch {min_epoch} but the layout servers have committed only epoch {}",
                    layout.epoch
                ),
                Err(e) => e.to_string(),
            };
            if Instant::now() + Duration::from_millis(20) > deadline {
                return Err(ClientError::Unavailable(why));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Calls `peer` at `routes`' epoch, watching the layout while the
    /// answer is slow: a node that died does not answer until the request
    /// times out, but the cluster may have moved on without it long before
    /// (the failure detector removed it). From [`STALL_POLL_AFTER`] on,
    /// every [`STALL_POLL_EVERY`], the client asks the layout servers; once
    /// a newer layout is committed it installs it and abandons the call as
    /// transient (a write it carried may have landed: callers treat it as
    /// an unknown outcome).
    pub(crate) async fn call_watching(
        &self,
        routes: &Routes,
        peer: &Peer,
        request: Request,
    ) -> Result<Response, Attempt> {
        let call = peer.call(routes.epoch(), request);
        tokio::pin!(call);
        let mut wait = STALL_POLL_AFTER;
        loop {
            tokio::select! {
                answer = &mut call => return self.judged(peer, answer),
                () = tokio::time::sleep(wait) => {}
            }
            wait = STALL_POLL_EVERY;
            tokio::select! {
                answer = &mut call => return self.judged(peer, answer),
                moved = self.moved_on(routes.epoch()) => {
                    if let Some(epoch) = moved {
                        return Err(Attempt::Transient(format!(
                            "{} was slow to answer and the layout moved on to epoch {epoch}",
                            peer.addr()
                        )));
                    }
                }
            }
        }
    }

    /// Classifies an answer of `peer`, keeping the evidence of whether
    /// this client reaches it ([`reach`]).
    fn judged(
        &self,
        peer: &Peer,
        answer: Result<Response, TransportError>,
    ) -> Result<Response, Attempt> {
        match &answer {
            Ok(_) => self.reach.answered(peer.addr()),
            // Congestion on this side is no evidence against the peer.
            Err(TransportError::OutboxFull { .. }) => {}
            Err(_) => self.reach.failed(peer.addr(), Instant::now()),
        }
        classify(peer, answer)
    }

    /// Removes the nodes of the current layout this client has not reached
    /// for `client.remove_unreachable_after_ms` (see [`reach`]), in the
    /// background, one removal at a time.
    fn remove_unreachable(&self) {
        let after = self.options.remove_unreachable_after();
        if after.is_zero() {
            return;
        }
        let due = self.reach.due(Instant::now(), after);
        if due.is_empty() {
            return;
        }
        let routes = self.routes.load_full();
        let layout = &routes.layout;
        let mut nodes: Vec<String> = layout
            .all_log_units()
            .into_iter()
            .chain(layout.sequencers.iter())
            .filter(|n| due.contains(&n.addr))
            .map(|n| n.node_id.clone())
            .collect();
        nodes.sort();
        nodes.dedup();
        if nodes.is_empty() || !self.reach.start_removal() {
            return;
        }
        tracing::warn!(
            nodes = %nodes.join(","), epoch = layout.epoch,
            unreachable_ms = after.as_millis() as u64,
            "client: removing nodes it cannot reach"
        );
        let engine =
            crate::reconfig::Reconfigurer::new(self.endpoint.clone(), self.layout_servers.clone())
                .only_up_to_epoch(layout.epoch)
                .keep_removed_that_answer();
        let reach = self.reach.clone();
        tokio::spawn(async move {
            let change = crate::reconfig::Change::RemoveNodes(nodes.clone());
            match engine.reconfigure(&change).await {
                Ok(done) => tracing::warn!(
                    nodes = %nodes.join(","), epoch = done.layout.epoch, won = done.won,
                    "client: removal of unreachable nodes done"
                ),
                Err(e) => tracing::warn!(
                    nodes = %nodes.join(","), error = %e,
                    "client: removal of unreachable nodes failed"
                ),
            }
            reach.forget(&due);
            reach.end_removal();
        });
    }

    /// The epoch in force if it is newer than `epoch` (installing it if
    /// the layout servers have committed one), else `None`.
    async fn moved_on(&self, epoch: Epoch) -> Option<Epoch> {
        let current = self.routes.load().epoch();
        if current > epoch {
            return Some(current);
        }
        // One try, no waiting: a failure just means "not yet".
        let _ = self.refresh(epoch + 1, Instant::now()).await;
        let current = self.routes.load().epoch();
        (current > epoch).then_some(current)
    }

    async fn sequencer_call(
        &self,
        routes: &Routes,
        request: SequencerRequest,
    ) -> Result<SequencerResponse, Attempt> {
        let peer = routes.sequencer()?;
        let answer = self
            .call_watching(routes, peer, Request::Sequencer(request))
            .await;
        match answer? {
            Response::Sequencer(response) => Ok(response),
            other => Err(Attempt::Fatal(unexpected(peer, &other))),
        }
    }

    async fn log_unit_call(
        &self,
        routes: &Routes,
        peer: &Peer,
        request: LogUnitRequest,
    ) -> Result<LogUnitResponse, Attempt> {
        let answer = self
            .call_watching(routes, peer, Request::LogUnit(request))
            .await;
        match answer? {
            Response::LogUnit(response) => Ok(response),
            other => Err(Attempt::Fatal(unexpected(peer, &other))),
        }
    }

    /// Reads `addresses` (ascending) from their chains' tails as they are
    /// (no hole filling): one request sequence per chain tail, the chains
    /// in parallel; the answer is in address order.
    async fn read_on(
        &self,
        routes: &Routes,
        addresses: &[Address],
    ) -> Result<Vec<(Address, ReadOutcome)>, Attempt> {
        let mut groups: Vec<(ChainKey, Vec<Address>)> = Vec::new();
        let mut out = Vec::with_capacity(addresses.len());
        for &address in addresses {
            if routes.layout.is_void(address) {
                // Never written and never will be: junk, without asking.
                out.push((address, ReadOutcome::Junk));
                continue;
            }
            let (key, _) = routes.chain(address)?;
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, group)) => group.push(address),
                None => groups.push((key, vec![address])),
            }
        }
        let reads = groups.iter().map(|(key, group)| {
            let peer = routes.chains[key.0][key.1]
                .last()
                .expect("chains are not empty");
            self.read_group(routes, peer, group)
        });
        let voids = out.len();
        for part in futures_util::future::join_all(reads).await {
            out.extend(part?);
        }
        if groups.len() > 1 || voids > 0 {
            out.sort_by_key(|(address, _)| *address);
        }
        Ok(out)
    }

    /// Reads `group` (ascending, one chain) from `peer`: a range request
    /// for a contiguous run, a batch request otherwise, continued while the
    /// unit answers only a prefix (its own batch limit).
    async fn read_group(
        &self,
        routes: &Routes,
        peer: &Peer,
        group: &[Address],
    ) -> Result<Vec<(Address, ReadOutcome)>, Attempt> {
        let mut out = Vec::with_capacity(group.len());
        let mut pending = group;
        while !pending.is_empty() {
            let contiguous = pending[pending.len() - 1] - pending[0] + 1 == pending.len() as u64;
            let request = if pending.len() == 1 {
                LogUnitRequest::Read {
                    address: pending[0],
                }
            } else if contiguous {
                LogUnitRequest::ReadRange {
                    from: pending[0],
                    to: pending[pending.len() - 1] + 1,
                }
            } else {
                LogUnitRequest::ReadBatch(pending.to_vec())
            };
            let answer = match self.log_unit_call(routes, peer, request).await {
                // The unit's copy of the first address is corrupt (a batch
                // read ends before a corrupt copy): read repair.
                Err(why) if repair::is_corrupt(&why) => {
                    out.push((pending[0], self.repair(routes, pending[0], false).await?));
                    pending = &pending[1..];
                    continue;
                }
                answer => answer?,
            };
            match answer {
                LogUnitResponse::Read(outcome) => {
                    out.push((pending[0], outcome));
                    pending = &pending[1..];
                }
                LogUnitResponse::Reads(reads) if !reads.is_empty() => {
                    let answered = reads.len().min(pending.len());
                    if reads[..answered]
                        .iter()
                        .zip(pending)
                        .any(|((a, _), b)| a != b)
                    {
                        return Err(Attempt::Fatal(unexpected(
                            peer,
                            &Response::LogUnit(LogUnitResponse::Reads(reads)),
                        )));
                    }
                    out.extend(reads.into_iter().take(answered));
                    pending = &pending[answered..];
                }
                other => return Err(Attempt::Fatal(unexpected(peer, &Response::LogUnit(other)))),
            }
        }
        Ok(out)
    }

    /// Reads one part of a larger read, retrying it as a whole.
    async fn read_part(
        &self,
        part: Vec<Address>,
    ) -> Result<Vec<(Address, ReadOutcome)>, ClientError> {
        let part = &part;
        self.retrying(|routes| async move { self.read_on(&routes, part).await })
            .await
    }

    /// Reads `addresses` (ascending), in parallel chunks, then resolves the
    /// holes below the tail by the hole fill policy.
    async fn read_addresses(
        &self,
        addresses: &[Address],
    ) -> Result<Vec<(Address, ReadOutcome)>, ClientError> {
        let chunk = self.options.read_batch_max as usize;
        // Owned parts: a closure over borrowed chunks would make this
        // future unusable with `tokio::spawn` (a higher-ranked lifetime).
        let parts: Vec<Vec<Address>> = addresses.chunks(chunk).map(<[_]>::to_vec).collect();
        let reads = stream::iter(parts)
            .map(|part| self.read_part(part))
            .buffered(self.options.reads_in_flight_max as usize);
        let mut out: Vec<(Address, ReadOutcome)> = Vec::with_capacity(addresses.len());
        let mut reads = std::pin::pin!(reads);
        while let Some(part) = reads.next().await {
            out.extend(part?);
        }
        let mut holes: Vec<usize> = out
            .iter()
            .enumerate()
            .filter(|(_, (_, o))| matches!(o, ReadOutcome::Unwritten))
            .map(|(i, _)| i)
            .collect();
        if holes.is_empty() || self.options.hole_fill == HoleFillPolicy::Never {
            return Ok(out);
        }
        // Addresses at or above the tail were never granted: they stay
        // unwritten. One tail query covers them all.
        let last_hole = out[holes[holes.len() - 1]].0;
        if last_hole >= self.known_tail.load(Ordering::Relaxed) {
            self.tails(Vec::new()).await?;
        }
        let tail = self.known_tail.load(Ordering::Relaxed);
        holes.retain(|&i| out[i].0 < tail);
        if !holes.is_empty() {
            let filled: Vec<Result<(usize, ReadOutcome), ClientError>> = stream::iter(holes)
                .map(|i| {
                    let address = out[i].0;
                    async move { Ok((i, self.resolve_hole(address).await?)) }
                })
                .buffer_unordered(self.options.reads_in_flight_max as usize)
                .collect()
                .await;
            for result in filled {
                let (i, outcome) = result?;
                out[i].1 = outcome;
            }
        }
        Ok(out)
    }

    /// True if `address` was granted by the sequencer.
    async fn below_tail(&self, address: Address) -> Result<bool, ClientError> {
        if address < self.known_tail.load(Ordering::Relaxed) {
            return Ok(true);
        }
        Ok(address < self.tails(Vec::new()).await?.0)
    }

    /// An address read unwritten: waits for its writer or completes it, by
    /// the policy. Addresses at or above the tail were never granted and
    /// stay unwritten.
    async fn resolve_hole(&self, address: Address) -> Result<ReadOutcome, ClientError> {
        let policy = self.options.hole_fill;
        if policy == HoleFillPolicy::Never || !self.below_tail(address).await? {
            return Ok(ReadOutcome::Unwritten);
        }
        if policy == HoleFillPolicy::WaitThenFill {
            let deadline = Instant::now() + self.options.hole_fill_timeout();
            let mut pause = Duration::from_micros(200);
            loop {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                tokio::time::sleep(pause.min(deadline - now)).await;
                pause = (pause * 2).min(Duration::from_millis(2));
                let outcome = self.read_one(address).await?;
                if outcome != ReadOutcome::Unwritten {
                    return Ok(outcome);
                }
            }
            tracing::debug!(address, "filling a hole");
        }
        self.fill(address).await
    }

    async fn read_one(&self, address: Address) -> Result<ReadOutcome, ClientError> {
        let mut read = self
            .retrying(|routes| async move { self.read_on(&routes, &[address]).await })
            .await?;
        Ok(read.pop().map(|(_, o)| o).unwrap_or(ReadOutcome::Unwritten))
    }

    /// Completes `address`: copies the head's value down the chain, or
    /// junks the address on every member if the head holds nothing.
    async fn fill(&self, address: Address) -> Result<ReadOutcome, ClientError> {
        self.retrying(|routes| async move { self.fill_once(&routes, address).await })
            .await
    }

    async fn fill_once(&self, routes: &Routes, address: Address) -> Result<ReadOutcome, Attempt> {
        if routes.layout.is_void(address) {
            return Ok(ReadOutcome::Junk);
        }
        self.fill_chain(routes, address).await
    }
}

fn existing_outcome(existing: Existing) -> ReadOutcome {
    match existing {
        Existing::Data(entry) => ReadOutcome::Data(entry),
        Existing::Junk => ReadOutcome::Junk,
    }
}

impl LogClient {
    /// Connects to the cluster a client config names and fetches its
    /// layout. The `[client]` table of the config sets the options.
    pub async fn connect(config: &ClientConfig) -> Result<LogClient, ConnectError> {
        LogClient::connect_with(
            config.endpoint()?,
            config.layout_servers.clone(),
            config.client.clone(),
        )
        .await
    }

    /// Connects over an existing endpoint to the cluster whose layout
    /// servers are `layout_servers`.
    pub async fn connect_with(
        endpoint: ClientEndpoint,
        layout_servers: Vec<String>,
        options: LogClientOptions,
    ) -> Result<LogClient, ConnectError> {
        options.validate().map_err(ConnectError::Options)?;
        options
            .check_frame(endpoint.config().frame_bytes_max)
            .map_err(ConnectError::Options)?;
        let layout = fetch_layout(&endpoint, &layout_servers)
            .await
            .map_err(|e| ClientError::Unavailable(e.to_string()))?;
        let routes = Routes::new(&endpoint, layout);
        let (queue, rx) = mpsc::channel(options.append_queue_max as usize);
        let inner = Arc::new_cyclic(|me| Inner {
            endpoint,
            layout_servers,
            batch_slots: Arc::new(Semaphore::new(options.batches_in_flight_max as usize)),
            options,
            routes: ArcSwap::from_pointee(routes),
            refresh: tokio::sync::Mutex::new(()),
            known_tail: AtomicU64::new(0),
            tail_rounds: tails::TailRounds::default(),
            me: me.clone(),
            client_id: rand::random(),
            appends: AtomicU64::new(0),
            reach: Arc::default(),
            walks: std::sync::Mutex::default(),
        });
        tokio::spawn(append::run_batcher(inner.clone(), rx));
        Ok(LogClient { inner, queue })
    }

    /// The layout the client currently uses.
    pub fn layout(&self) -> Arc<Layout> {
        self.inner.routes.load().layout.clone()
    }

    /// The client's options.
    pub fn options(&self) -> &LogClientOptions {
        &self.inner.options
    }

    /// Fetches the layout from the layout servers if a newer one is
    /// committed, and returns the layout in use.
    pub async fn refresh_layout(&self) -> Result<Arc<Layout>, ClientError> {
        let current = self.inner.routes.load().epoch();
        match self.inner.refresh(current + 1, Instant::now()).await {
            Ok(()) | Err(ClientError::Unavailable(_)) => Ok(self.layout()),
            Err(e) => Err(e),
        }
    }

    /// Appends `payload` to the log as a member of `streams`; returns its
    /// address once the entry is on every member of its chain.
    pub async fn append(
        &self,
        payload: Vec<u8>,
        streams: &[StreamId],
    ) -> Result<Address, ClientError> {
        let job = Job::new(
            self.inner.next_append_id(),
            payload,
            streams,
            self.inner.options.entry_bytes_max,
        )?;
        self.append_job(job).await
    }

    /// Appends one job through the batching queue (or straight away when
    /// nothing is queued or in flight).
    async fn append_job(&self, job: Job) -> Result<Address, ClientError> {
        let inner = &self.inner;
        // The short path: nothing queued and nothing in flight.
        let slots = inner.options.batches_in_flight_max as usize;
        if self.queue.capacity() == self.queue.max_capacity()
            && inner.batch_slots.available_permits() == slots
        {
            if let Ok(_slot) = inner.batch_slots.clone().try_acquire_owned() {
                let mut results = inner.append_jobs(vec![job]).await;
                return results.pop().unwrap_or(Err(ClientError::Closed));
            }
        }
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(PendingAppend { job, reply })
            .await
            .map_err(|_| ClientError::Closed)?;
        answer.await.unwrap_or(Err(ClientError::Closed))
    }

    /// Appends `payload` to `streams` with a conditional token (Tango/vCorfu
    /// transactions resolved at the sequencer): it is written only if no
    /// key of `condition.read_set` was written (by another conditional
    /// append) after `condition.snapshot` (the last address the
    /// transaction has seen); its `write_set` keys are recorded
    /// at its address. Otherwise [`ClientError::Aborted`] and nothing is in
    /// the log.
    ///
    /// Commits go through the batching queue like [`LogClient::append`]:
    /// the commits of one batch share one sequencer request (each judged on
    /// its own, in order) and one write per chain member. A commit whose
    /// granted address a hole filler took is judged again with a new token
    /// (nothing of it was in the log), at most `append_retries_max` times.
    ///
    /// A condition with an empty read set cannot fail: such a *keyed
    /// append* (every write of a replicated object outside a transaction)
    /// is batched with plain appends of its streams, its keys recorded at
    /// the last address of its batch's token (a few addresses late at
    /// most, which can only abort a transaction that might have
    /// committed).
    pub async fn append_conditional(
        &self,
        payload: Vec<u8>,
        streams: &[StreamId],
        condition: &TxnCondition,
    ) -> Result<Address, ClientError> {
        let job = Job::new(
            self.inner.next_append_id(),
            payload,
            streams,
            self.inner.options.entry_bytes_max,
        )?;
        let job = if condition.read_set.is_empty() {
            job.with_keys(&condition.write_set)
        } else {
            job.committing(condition)
        };
        self.append_job(job).await
    }

    /// Appends several entries in one batch (split by the batch limits);
    /// the results are in input order.
    pub async fn append_batch(
        &self,
        entries: Vec<(Vec<u8>, Vec<StreamId>)>,
    ) -> Vec<Result<Address, ClientError>> {
        let max = self.inner.options.entry_bytes_max;
        let mut results: Vec<Option<Result<Address, ClientError>>> = Vec::new();
        let mut jobs = Vec::new();
        let mut slots = Vec::new();
        for (payload, streams) in entries {
            match Job::new(self.inner.next_append_id(), payload, &streams, max) {
                Ok(job) => {
                    slots.push(results.len());
                    results.push(None);
                    jobs.push(job);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let batches = append::split_batches(jobs, &self.inner.options);
        let done: Vec<Vec<Result<Address, ClientError>>> = stream::iter(batches)
            .map(|batch| self.inner.append_jobs(batch))
            .buffered(self.inner.options.batches_in_flight_max as usize)
            .collect()
            .await;
        for (slot, result) in slots.into_iter().zip(done.into_iter().flatten()) {
            results[slot] = Some(result);
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(ClientError::Closed)))
            .collect()
    }

    /// Reads one address from its chain's tail. An unwritten address below
    /// the tail is waited for or completed by the hole fill policy; one at
    /// or above the tail answers `Unwritten`.
    pub async fn read(&self, address: Address) -> Result<ReadOutcome, ClientError> {
        match self.inner.read_one(address).await? {
            ReadOutcome::Unwritten => self.inner.resolve_hole(address).await,
            outcome => Ok(outcome),
        }
    }

    /// Reads every address in `[from, to)`, in order, as [`LogClient::read`]
    /// would (holes below the tail resolved by the policy). Addresses the
    /// layout declares void (never written, see [`crate::layout::Void`])
    /// are left out of the answer: after a sequencer failover they can be
    /// many.
    pub async fn read_range(
        &self,
        from: Address,
        to: Address,
    ) -> Result<Vec<(Address, ReadOutcome)>, ClientError> {
        if to < from {
            return Err(ClientError::InvalidArgument(format!(
                "range [{from}, {to}) is reversed"
            )));
        }
        let mut layout = self.layout();
        if to >= layout.grants.bound {
            // Granted by a later epoch's sequencer, past a void this layout
            // may not know yet (too large to read address by address).
            // Smaller voids of a newer layout are found by the reads
            // themselves: the units fence this epoch, and the refreshed
            // layout answers junk for them.
            layout = self.refresh_layout().await?;
        }
        let addresses: Vec<Address> = layout
            .unvoided(from, to)
            .into_iter()
            .flat_map(|(a, b)| a..b)
            .collect();
        self.inner.read_addresses(&addresses).await
    }

    /// The log's tail: the next address the sequencer will grant. Every
    /// address below it was granted (and is written, or will be written or
    /// filled).
    pub async fn tail(&self) -> Result<Address, ClientError> {
        Ok(self.inner.tails(Vec::new()).await?.0)
    }

    /// The last address granted to `stream`, if any.
    pub async fn stream_tail(&self, stream: StreamId) -> Result<Option<Address>, ClientError> {
        let (_, streams) = self.inner.tails(vec![stream]).await?;
        Ok(streams
            .into_iter()
            .find(|(s, _)| *s == stream)
            .and_then(|(_, tail)| tail))
    }

    /// The entries of `stream` in `[from, to)`, in address order, touching
    /// only the stream's addresses; junk (an append that never completed)
    /// is skipped.
    ///
    /// The addresses come from the sequencer's stream index. Below the
    /// point from which that index is complete (a sequencer that restarted
    /// knows only the stream tails recovered at its bootstrap), the stream
    /// is followed through the entries' backpointers; where a backpointer
    /// chain is broken by junk, the range below it is scanned entry by
    /// entry.
    pub async fn read_stream(
        &self,
        stream: StreamId,
        from: Address,
        to: Address,
    ) -> Result<Vec<(Address, Entry)>, ClientError> {
        if to < from {
            return Err(ClientError::InvalidArgument(format!(
                "range [{from}, {to}) is reversed"
            )));
        }
        if to == from {
            return Ok(Vec::new());
        }
        let (mut addresses, complete_from) = self.stream_addresses(stream, from, to).await?;
        if from < complete_from {
            let start = match addresses.first() {
                Some(&first) => Some(first),
                None => self
                    .stream_addresses(stream, to, Address::MAX)
                    .await?
                    .0
                    .first()
                    .copied(),
            };
            if let Some(start) = start {
                let cached = self.inner.walks.lock().unwrap().get(stream, start, from);
                let below = match cached {
                    Some(below) => below,
                    None => {
                        let below = self.stream_below(stream, from, start).await?;
                        let mut walks = self.inner.walks.lock().unwrap();
                        walks.put(stream, start, from, below.clone());
                        below
                    }
                };
                tracing::debug!(
                    %stream, from, to, complete_from, start,
                    indexed = addresses.len(), below = below.len(),
                    lowest = below.iter().min().copied(),
                    "stream read below the complete index"
                );
                addresses.extend(below.into_iter().filter(|a| *a < to));
            }
        }
        addresses.sort_unstable();
        addresses.dedup();
        let mut out = Vec::with_capacity(addresses.len());
        for (address, outcome) in self.inner.read_addresses(&addresses).await? {
            match outcome {
                ReadOutcome::Data(entry) => {
                    if entry.streams.iter().any(|h| h.stream == stream) {
                        out.push((address, entry));
                    }
                }
                ReadOutcome::Junk => {}
                ReadOutcome::Unwritten => return Err(ClientError::Unwritten { address }),
                ReadOutcome::Trimmed => return Err(ClientError::Trimmed { address }),
            }
        }
        Ok(out)
    }

    /// The sequencer's index of `stream` in `[from, to)` (continued while
    /// answers are cut), and the address from which the index is complete.
    async fn stream_addresses(
        &self,
        stream: StreamId,
        from: Address,
        to: Address,
    ) -> Result<(Vec<Address>, Address), ClientError> {
        let inner = &self.inner;
        let mut addresses = Vec::new();
        let mut complete_from = 0;
        let mut cursor = from;
        while cursor < to {
            let (part, complete) = inner
                .retrying(|routes| async move {
                    let request = SequencerRequest::StreamAddresses {
                        stream,
                        from: cursor,
                        to,
                    };
                    match inner.sequencer_call(&routes, request).await? {
                        SequencerResponse::Addresses {
                            addresses,
                            complete_from,
                        } => Ok((addresses, complete_from)),
                        other => Err(Attempt::Fatal(ClientError::Unexpected {
                            addr: "sequencer".into(),
                            answer: format!("{other:?}"),
                        })),
                    }
                })
                .await?;
            complete_from = complete_from.max(complete);
            let done = match part.last() {
                Some(&last) if last >= cursor && last < to && to != Address::MAX => {
                    cursor = last + 1;
                    false
                }
                _ => true,
            };
            addresses.extend(part.into_iter().filter(|a| (from..to).contains(a)));
            if done {
                break;
            }
        }
        Ok((addresses, complete_from))
    }

    /// The addresses of `stream` in `[from, start)`, found by following
    /// backpointers down from `start` (an address of the stream); where
    /// the chain meets junk or a hole, the rest of the range is scanned.
    async fn stream_below(
        &self,
        stream: StreamId,
        from: Address,
        start: Address,
    ) -> Result<Vec<Address>, ClientError> {
        let mut found = Vec::new();
        let mut current = start;
        loop {
            let backpointer = match self.read(current).await? {
                ReadOutcome::Unwritten => return Err(ClientError::Unwritten { address: current }),
                ReadOutcome::Data(entry) => entry
                    .streams
                    .iter()
                    .find(|h| h.stream == stream)
                    .map(|h| h.backpointer),
                _ => None,
            };
            match backpointer {
                // The stream's previous entry.
                Some(Some(previous)) if previous >= from && previous < current => {
                    found.push(previous);
                    current = previous;
                }
                // The stream begins here, or continues below the range.
                Some(_) => return Ok(found),
                // No backpointer to follow: scan what is left.
                None => {
                    tracing::debug!(current, from, "stream backpointers broken; scanning");
                    for (address, outcome) in self.read_range(from, current).await? {
                        match outcome {
                            ReadOutcome::Data(entry) => {
                                if entry.streams.iter().any(|h| h.stream == stream) {
                                    found.push(address);
                                }
                            }
                            // A hole left open (`HoleFillPolicy::Never`):
                            // what it will hold is unknown, and a walk is
                            // kept once it succeeds.
                            ReadOutcome::Unwritten => {
                                return Err(ClientError::Unwritten { address })
                            }
                            ReadOutcome::Junk | ReadOutcome::Trimmed => {}
                        }
                    }
                    return Ok(found);
                }
            }
        }
    }

    /// Completes `address` now: copies the head's value down its chain, or
    /// junks it if the head holds nothing. Returns what the address holds.
    pub async fn fill(&self, address: Address) -> Result<ReadOutcome, ClientError> {
        self.inner.fill(address).await
    }

    /// Trims the log below `address` on every log unit of the layout;
    /// returns the lowest trim mark the units reported.
    pub async fn prefix_trim(&self, address: Address) -> Result<Address, ClientError> {
        let inner = &self.inner;
        inner
            .retrying(|routes| async move {
                let mut mark = Address::MAX;
                for unit in routes.layout.all_log_units() {
                    let peer = inner.endpoint.peer(&unit.addr);
                    match inner
                        .log_unit_call(&routes, &peer, LogUnitRequest::PrefixTrim { address })
                        .await?
                    {
                        LogUnitResponse::Trimmed { trim_mark } => mark = mark.min(trim_mark),
                        other => {
                            return Err(Attempt::Fatal(unexpected(
                                &peer,
                                &Response::LogUnit(other),
                            )))
                        }
                    }
                }
                Ok(mark)
            })
            .await
    }

    /// Closes the client's connections; pending operations fail.
    pub fn close(&self) {
        self.inner.endpoint.close();
    }
}

/// Compile-time check: every operation's future can be handed to
/// `tokio::spawn` (a future holding a borrow across an `await` in a
/// higher-ranked closure would not be `Send + 'static` here).
#[allow(dead_code)]
fn operations_are_spawnable(c: LogClient) {
    fn spawnable<F: Future + Send + 'static>(_: F) {}
    let s = StreamId(1);
    let d = c.clone();
    spawnable(async move { d.append(vec![1], &[s]).await });
    let d = c.clone();
    spawnable(async move { d.append_batch(vec![(vec![1], vec![s])]).await });
    let d = c.clone();
    spawnable(async move { d.read(0).await });
    let d = c.clone();
    spawnable(async move { d.read_range(0, 10).await });
    let d = c.clone();
    spawnable(async move { d.read_stream(s, 0, 10).await });
    let d = c.clone();
    spawnable(async move { d.fill(0).await });
    let d = c.clone();
    spawnable(async move { d.tail().await });
    let d = c.clone();
    spawnable(async move { d.stream_tail(s).await });
    let d = c.clone();
    let condition = TxnCondition {
        snapshot: 0,
        read_set: vec![],
        write_set: vec![],
    };
    spawnable(async move { d.append_conditional(vec![1], &[s], &condition).await });
    spawnable(async move { c.prefix_trim(0).await });
}
