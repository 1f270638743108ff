//! State transfer (CORFU §3.4; the approach of CorfuDB's state transfer):
//! bringing a log unit that has joined a chain of the open segment up to
//! date with the older segments of that chain, so that a later layout can
//! make it a member of their chains too.
//!
//! [`parts_to_transfer`] is the pure rule of what to copy; [`StateTransfer`]
//! copies it. Rules:
//! - **What.** For every chain of the open segment that holds the unit, the
//!   same chain without the unit is looked for in every closed segment;
//!   each stripe found is one [`ChainPart`]: the addresses `a` of that
//!   segment with `a % stripes == stripe`.
//! - **From where.** Each address is read from its chain's tail, which
//!   holds only completed writes (chain order: the tail is written last).
//! - **Holes are completed, not copied.** An address the tail answers
//!   `Unwritten` is completed on its chain by the reader's rule before it is
//!   copied: the head's value is copied down the chain, or, if the head is
//!   empty too, junk is filled head first. This is safe at once (no
//!   hole-fill timeout): the segment is closed and every unit was sealed
//!   into the current epoch, so no writer of an older epoch can still write
//!   there, and a writer of the current epoch only continues an entry the
//!   head already holds, which the rule copies. The unit then receives
//!   only decided values, and once every address of a part has been
//!   examined no address of it can change any more (write-once): the
//!   second layout change needs no second pass.
//! - **Corrupt copies are repaired, as a client's would be.** A source
//!   member that answers that its copy of an address is corrupt (the tail
//!   to the read, any member while a hole is completed) sends the transfer
//!   to the client's read repair ([`crate::client::repair`], the same
//!   code): the chain's value is found on the other members and given to
//!   the corrupt ones, or, if no member holds one, the address is decided
//!   as a completing reader would; then it is copied.
//! - **Junk stays junk**; trimmed addresses are skipped.
//! - **Write-once checks the unit.** The unit may hold data from an earlier
//!   membership. Whatever it already holds must equal what the log holds
//!   (`Overwritten` with the same value is fine); a different value means
//!   it kept a write that was never acknowledged, and the transfer stops
//!   with [`TransferError::Diverged`] rather than let that value be read.
//! - **Bounded.** Batches of at most [`TRANSFER_BATCH_ADDRESSES_MAX`]
//!   addresses and of what one read answer of the source holds (the unit's
//!   byte budget, just under a frame), [`TRANSFER_WRITE_BYTES_MAX`] bytes
//!   per write, one batch at a time; transient failures are retried [`TRANSFER_RETRIES_MAX`]
//!   times with back-off (the layout is refetched: a dead source may have
//!   been removed); a newer epoch is followed as long as the unit stays in
//!   the open segment and the parts' segments are unchanged. Progress is
//!   logged every [`TRANSFER_PROGRESS_EVERY_ADDRESSES`] addresses, and once
//!   at the end.

use std::time::{Duration, Instant};

use futures_util::future::join_all;

use crate::client::repair::{self, ChainCalls, Failure};
use crate::layout::{Layout, NodeAddr, Segment};
use crate::layout_service::proposer::fetch_layout;
use crate::transport::{ClientEndpoint, TransportError};
use crate::types::{Address, Epoch};
use crate::wire::logunit::{
    AddressedEntry, Entry, Existing, LogUnitRequest, LogUnitResponse, ReadOutcome, WriteOutcome,
};
use crate::wire::{Request, Response, ServerError, ServerErrorKind};

/// Addresses read and written per batch at most.
pub const TRANSFER_BATCH_ADDRESSES_MAX: usize = 512;

/// Payload bytes per `WriteBatch` to the unit at most (well below the
/// default frame limit of 16 MiB).
pub const TRANSFER_WRITE_BYTES_MAX: usize = 4 << 20;

/// A progress line is logged each time this many more addresses are done.
pub const TRANSFER_PROGRESS_EVERY_ADDRESSES: u64 = 10_000;

/// Consecutive transient failures of one batch before the transfer gives
/// up.
pub const TRANSFER_RETRIES_MAX: u32 = 20;

/// Back-off after the first transient failure (doubling).
const RETRY_PAUSE_FIRST_MS: u64 = 10;

/// Longest back-off between retries.
const RETRY_PAUSE_MAX_MS: u64 = 500;

/// One stripe of one closed segment that the unit must receive: the
/// addresses `a` in `[segment_start, segment_end)` with
/// `a % stripes == stripe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainPart {
    /// Start of the (closed) segment.
    pub segment_start: Address,
    /// End of the segment.
    pub segment_end: Address,
    /// Number of stripes of the segment.
    pub stripes: usize,
    /// The stripe.
    pub stripe: usize,
}

impl ChainPart {
    /// How many addresses the part holds.
    pub fn len(&self) -> u64 {
        let k = self.stripes as u64;
        let first = self.first();
        if first >= self.segment_end {
            0
        } else {
            (self.segment_end - first).div_ceil(k)
        }
    }

    /// Whether the part holds no address.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The lowest address of the part (may be at or past the end).
    fn first(&self) -> Address {
        let k = self.stripes as u64;
        let r = self.segment_start % k;
        self.segment_start + (self.stripe as u64 + k - r) % k
    }

    /// The part's addresses from `from` on (from must be one of them or the
    /// first), at most `max`, without those `layout` declares void (never
    /// written; a void can span 2^40 addresses).
    fn batch(&self, layout: &Layout, from: Address, max: usize) -> Vec<Address> {
        let k = self.stripes as u64;
        let mut out = Vec::new();
        for (start, end) in layout.unvoided(from, self.segment_end) {
            // The first address of the stripe at or after `start`.
            let first = start + (self.stripe as u64 + k - start % k) % k;
            out.extend((first..end).step_by(self.stripes).take(max - out.len()));
            if out.len() >= max {
                break;
            }
        }
        out
    }

    /// The segment of `layout` this part belongs to, if it is unchanged.
    fn segment<'a>(&self, layout: &'a Layout) -> Option<&'a Segment> {
        layout.segments.iter().find(|s| {
            s.start == self.segment_start
                && s.end == Some(self.segment_end)
                && s.stripes.len() == self.stripes
        })
    }
}

/// What `node` must receive before it can join the chains of the closed
/// segments (see the module rules): for every chain of the open segment
/// that holds `node`, the closed segments' stripes whose chain is that
/// chain without `node`.
pub fn parts_to_transfer(layout: &Layout, node: &str) -> Vec<ChainPart> {
    let Some(open) = layout.open_segment() else {
        return Vec::new();
    };
    let without: Vec<Vec<&NodeAddr>> = open
        .stripes
        .iter()
        .filter(|s| s.chain.iter().any(|n| n.node_id == node))
        .map(|s| s.chain.iter().filter(|n| n.node_id != node).collect())
        .filter(|c: &Vec<&NodeAddr>| !c.is_empty())
        .collect();
    let mut parts = Vec::new();
    for segment in &layout.segments {
        let Some(end) = segment.end else { continue };
        for (stripe, s) in segment.stripes.iter().enumerate() {
            let chain: Vec<&NodeAddr> = s.chain.iter().collect();
            if without.contains(&chain) {
                parts.push(ChainPart {
                    segment_start: segment.start,
                    segment_end: end,
                    stripes: segment.stripes.len(),
                    stripe,
                });
            }
        }
    }
    parts
}

/// What a state transfer did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransferReport {
    /// Addresses examined.
    pub addresses: u64,
    /// Entries and junk written to the unit.
    pub copied: u64,
    /// Addresses the unit already held, with the log's value.
    pub already_held: u64,
    /// Addresses that are junk in the log (copied or held).
    pub junk: u64,
    /// Holes completed on their chain before being copied.
    pub holes_completed: u64,
    /// Addresses skipped because the log (or the unit) trimmed them.
    pub trimmed: u64,
    /// Payload bytes written to the unit.
    pub bytes: u64,
    /// Time from start to end.
    pub elapsed: Duration,
}

impl TransferReport {
    fn add(&mut self, other: &TransferReport) {
        self.addresses += other.addresses;
        self.copied += other.copied;
        self.already_held += other.already_held;
        self.junk += other.junk;
        self.holes_completed += other.holes_completed;
        self.trimmed += other.trimmed;
        self.bytes += other.bytes;
    }
}

/// A state transfer could not be completed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransferError {
    /// The unit holds another value than the log at an address: it kept a
    /// write from an earlier membership that was never acknowledged.
    #[error("node {node} holds {held} at address {address} where the log holds {log}: it kept a write that was never acknowledged (empty the log directory `log` of its data directory before adding it again, and keep `layout`: a layout server's promises must survive)")]
    Diverged {
        /// The unit.
        node: String,
        /// The address.
        address: Address,
        /// What the unit holds.
        held: String,
        /// What the log holds.
        log: String,
    },
    /// Completing or repairing an address found two members of a source
    /// chain disagreeing.
    #[error("address {address}: the source chain diverged: {detail}")]
    ChainDiverged {
        /// The address.
        address: Address,
        /// Who holds what.
        detail: String,
    },
    /// The layout changed in a way the transfer cannot follow.
    #[error("the layout changed during the state transfer: {0}")]
    LayoutChanged(String),
    /// A unit kept failing or refused a request.
    #[error("state transfer: {0}")]
    Failed(String),
}

/// Why one batch did not complete.
enum Again {
    /// A unit is at a newer epoch: refetch the layout and redo the batch.
    Stale(Epoch),
    /// A transient failure: back off and redo the batch.
    Transient(String),
    /// A unit refused a request (for good, unless it is the answer that its
    /// copy is corrupt, which a repair handles).
    Refused {
        /// The unit.
        node: String,
        /// Its answer.
        error: ServerError,
    },
    /// Give up.
    Fatal(TransferError),
}

impl From<TransferError> for Again {
    fn from(e: TransferError) -> Again {
        Again::Fatal(e)
    }
}

fn describe(outcome: &ReadOutcome) -> String {
    match outcome {
        ReadOutcome::Data(e) => format!("data ({} bytes)", e.payload.len()),
        ReadOutcome::Junk => "junk".into(),
        ReadOutcome::Unwritten => "nothing".into(),
        ReadOutcome::Trimmed => "a trimmed address".into(),
    }
}

fn existing(e: Existing) -> ReadOutcome {
    match e {
        Existing::Data(entry) => ReadOutcome::Data(entry),
        Existing::Junk => ReadOutcome::Junk,
    }
}

/// At most the first few of `addresses`, for an error message.
fn brief(addresses: &[Address]) -> String {
    let shown: Vec<String> = addresses.iter().take(4).map(u64::to_string).collect();
    let more = addresses.len().saturating_sub(shown.len());
    if more > 0 {
        format!("{}, ... {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

fn entry_bytes(entry: &Entry) -> usize {
    entry.payload.len() + 24 * entry.streams.len() + 16
}

/// Copies the older segments of a unit's chains to it.
#[derive(Debug, Clone)]
pub struct StateTransfer {
    endpoint: ClientEndpoint,
    layout_servers: Vec<String>,
    node: NodeAddr,
}

impl StateTransfer {
    /// A transfer to `node`, for the cluster whose layout servers are
    /// `layout_servers`.
    pub fn new(
        endpoint: ClientEndpoint,
        layout_servers: Vec<String>,
        node: NodeAddr,
    ) -> StateTransfer {
        StateTransfer {
            endpoint,
            layout_servers,
            node,
        }
    }

    /// Copies every address of `parts` to the unit, starting from
    /// `layout` (in which the unit must be in the open segment).
    pub async fn run(
        &self,
        mut layout: Layout,
        parts: &[ChainPart],
    ) -> Result<TransferReport, TransferError> {
        let started = Instant::now();
        let total: u64 = parts.iter().map(ChainPart::len).sum();
        let node = self.node.node_id.as_str();
        tracing::info!(
            node,
            epoch = layout.epoch,
            parts = parts.len(),
            addresses = total,
            "state transfer starting"
        );
        let mut report = TransferReport::default();
        let mut logged = 0;
        for part in parts {
            let mut from = part.first();
            while from < part.segment_end {
                let batch = part.batch(&layout, from, TRANSFER_BATCH_ADDRESSES_MAX);
                if batch.is_empty() {
                    break;
                }
                // A prefix of the batch, as much as one read answer held.
                let done = self.batch(&mut layout, part, &batch).await?;
                report.add(&done);
                let Some(&last) = batch.get((done.addresses as usize).max(1) - 1) else {
                    break;
                };
                from = last + part.stripes as u64;
                if report.addresses >= logged + TRANSFER_PROGRESS_EVERY_ADDRESSES {
                    logged = report.addresses;
                    tracing::info!(
                        node,
                        done = report.addresses,
                        total,
                        copied = report.copied,
                        already_held = report.already_held,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "state transfer progress"
                    );
                }
            }
        }
        report.elapsed = started.elapsed();
        tracing::info!(
            node,
            addresses = report.addresses,
            copied = report.copied,
            already_held = report.already_held,
            junk = report.junk,
            holes_completed = report.holes_completed,
            trimmed = report.trimmed,
            bytes = report.bytes,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "state transfer done"
        );
        Ok(report)
    }

    /// One batch, redone after a newer epoch or a transient failure (at
    /// most [`TRANSFER_RETRIES_MAX`] times in a row).
    async fn batch(
        &self,
        layout: &mut Layout,
        part: &ChainPart,
        addresses: &[Address],
    ) -> Result<TransferReport, TransferError> {
        let mut failures = 0;
        let mut pause = Duration::from_millis(RETRY_PAUSE_FIRST_MS);
        loop {
            let why = match self.batch_once(layout, part, addresses).await {
                Ok(report) => return Ok(report),
                Err(Again::Fatal(e)) => return Err(e),
                Err(Again::Refused { node, error }) => {
                    return Err(TransferError::Failed(format!("{node} refused: {error}")))
                }
                Err(Again::Stale(epoch)) => {
                    // Wait for the reconfiguration to commit its layout.
                    self.refresh(layout, epoch, true).await?;
                    format!("a unit is at epoch {epoch}")
                }
                Err(Again::Transient(why)) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(RETRY_PAUSE_MAX_MS));
                    // A source that stays unreachable may have been removed.
                    self.refresh(layout, layout.epoch + 1, false).await?;
                    why
                }
            };
            failures += 1;
            if failures > TRANSFER_RETRIES_MAX {
                return Err(TransferError::Failed(format!(
                    "giving up after {TRANSFER_RETRIES_MAX} retries: {why}"
                )));
            }
            tracing::debug!(node = %self.node.node_id, %why, "state transfer batch redone");
        }
    }

    /// Installs the committed layout if it is newer (asking again every
    /// 20 ms while it is below `min_epoch`, if `wait`), and checks that the
    /// unit is still in the open segment.
    async fn refresh(
        &self,
        layout: &mut Layout,
        min_epoch: Epoch,
        wait: bool,
    ) -> Result<(), TransferError> {
        let attempts = if wait { TRANSFER_RETRIES_MAX } else { 1 };
        for attempt in 0..attempts {
            if let Ok(fetched) = fetch_layout(&self.endpoint, &self.layout_servers).await {
                if fetched.epoch > layout.epoch {
                    *layout = fetched;
                }
            }
            if layout.epoch >= min_epoch || attempt + 1 == attempts {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let node = &self.node.node_id;
        let member = layout.open_segment().is_some_and(|open| {
            open.stripes
                .iter()
                .any(|s| s.chain.iter().any(|n| n.node_id == *node))
        });
        if !member {
            return Err(TransferError::LayoutChanged(format!(
                "node {node} is no longer in the open segment (epoch {})",
                layout.epoch
            )));
        }
        Ok(())
    }

    async fn call(
        &self,
        epoch: Epoch,
        unit: &NodeAddr,
        request: LogUnitRequest,
    ) -> Result<LogUnitResponse, Again> {
        let answer = self
            .endpoint
            .peer(&unit.addr)
            .call(epoch, Request::LogUnit(request))
            .await;
        match answer {
            Ok(Response::LogUnit(response)) => Ok(response),
            Ok(Response::WrongEpoch { current }) if current > epoch => Err(Again::Stale(current)),
            Ok(Response::WrongEpoch { current }) => Err(Again::Transient(format!(
                "{} is at epoch {current}, below {epoch}",
                unit.node_id
            ))),
            Ok(Response::Error(e)) if e.kind == ServerErrorKind::Unavailable => {
                Err(Again::Transient(format!("{}: {e}", unit.node_id)))
            }
            Ok(Response::Error(error)) => Err(Again::Refused {
                node: unit.node_id.clone(),
                error,
            }),
            Ok(other) => Err(Again::Fatal(TransferError::Failed(format!(
                "{} answered {other:?}",
                unit.node_id
            )))),
            Err(e @ TransportError::Tls { .. }) => {
                Err(Again::Fatal(TransferError::Failed(e.to_string())))
            }
            Err(e) => Err(Again::Transient(e.to_string())),
        }
    }

    fn unexpected(unit: &NodeAddr, answer: &LogUnitResponse) -> Again {
        Again::Fatal(TransferError::Failed(format!(
            "{} answered {answer:?}",
            unit.node_id
        )))
    }

    /// Reads a prefix of `addresses` (ascending, not empty) from `unit`:
    /// as many as it answers in one request (its batch limit and its
    /// answer's byte budget; at least one). The caller copies those and
    /// continues after them, so a batch of large entries is never held in
    /// memory at once.
    async fn read(
        &self,
        epoch: Epoch,
        unit: &NodeAddr,
        addresses: &[Address],
        contiguous: bool,
    ) -> Result<Vec<ReadOutcome>, Again> {
        let (Some(&first), Some(&last)) = (addresses.first(), addresses.last()) else {
            return Ok(Vec::new());
        };
        let request = if contiguous {
            LogUnitRequest::ReadRange {
                from: first,
                to: last + 1,
            }
        } else {
            LogUnitRequest::ReadBatch(addresses.to_vec())
        };
        match self.call(epoch, unit, request).await? {
            LogUnitResponse::Reads(reads)
                if !reads.is_empty()
                    && reads.len() <= addresses.len()
                    && reads.iter().zip(addresses).all(|((a, _), b)| a == b) =>
            {
                Ok(reads.into_iter().map(|(_, o)| o).collect())
            }
            LogUnitResponse::Reads(reads) => {
                let answered: Vec<Address> = reads.iter().map(|(a, _)| *a).collect();
                Err(Again::Fatal(TransferError::Failed(format!(
                    "{} answered a read of {} address(es) from {first} with {} outcome(s) for \
                     other addresses ({})",
                    unit.node_id,
                    addresses.len(),
                    answered.len(),
                    brief(&answered)
                ))))
            }
            other => Err(Self::unexpected(unit, &other)),
        }
    }

    /// Reads one batch from its chain's tail, completes its holes, writes
    /// it to the unit and checks what the unit already held.
    async fn batch_once(
        &self,
        layout: &Layout,
        part: &ChainPart,
        addresses: &[Address],
    ) -> Result<TransferReport, Again> {
        let epoch = layout.epoch;
        let segment = part.segment(layout).ok_or_else(|| {
            TransferError::LayoutChanged(format!(
                "segment [{}, {}) of {} stripe(s) is gone in epoch {epoch}",
                part.segment_start, part.segment_end, part.stripes
            ))
        })?;
        let chain = &segment.stripes[part.stripe].chain;
        let tail = chain
            .last()
            .ok_or_else(|| TransferError::Failed("an empty chain".into()))?;
        let source = SourceChain {
            transfer: self,
            epoch,
            chain,
        };
        // One range read only if the batch has no gap (a void inside it
        // leaves its addresses out of the batch).
        let contiguous =
            addresses.len() as u64 == addresses[addresses.len() - 1] - addresses[0] + 1;
        let mut values = match self.read(epoch, tail, addresses, contiguous).await {
            // The tail's copy of the first address is corrupt (a batch read
            // answers up to a corrupt copy): the chain's value, repaired.
            Err(why) if SourceChain::is_corrupt(&why) => {
                vec![repair::repair(&source, addresses[0], true).await?]
            }
            read => read?,
        };
        // The source answered a prefix: this round copies only that.
        let addresses = &addresses[..values.len()];
        let mut report = TransferReport {
            addresses: addresses.len() as u64,
            ..TransferReport::default()
        };
        let holes: Vec<usize> = (0..values.len())
            .filter(|&i| values[i] == ReadOutcome::Unwritten)
            .collect();
        let completed = join_all(holes.iter().map(|&i| repair::fill(&source, addresses[i]))).await;
        for (&i, outcome) in holes.iter().zip(completed) {
            values[i] = outcome?;
            report.holes_completed += 1;
        }

        // Data goes in write batches bounded by bytes; junk as fills.
        let mut batches: Vec<Vec<AddressedEntry>> = Vec::new();
        let mut batch_bytes = 0;
        let mut fills = Vec::new();
        for (&address, value) in addresses.iter().zip(&values) {
            match value {
                ReadOutcome::Data(entry) => {
                    let bytes = entry_bytes(entry);
                    if batches.is_empty() || batch_bytes + bytes > TRANSFER_WRITE_BYTES_MAX {
                        batches.push(Vec::new());
                        batch_bytes = 0;
                    }
                    batch_bytes += bytes;
                    report.bytes += entry.payload.len() as u64;
                    if let Some(b) = batches.last_mut() {
                        b.push(AddressedEntry {
                            address,
                            entry: entry.clone(),
                        });
                    }
                }
                ReadOutcome::Junk => {
                    report.junk += 1;
                    fills.push(address);
                }
                ReadOutcome::Trimmed | ReadOutcome::Unwritten => report.trimmed += 1,
            }
        }
        let mut outcomes: Vec<(Address, ReadOutcome, WriteOutcome)> = Vec::new();
        for batch in batches {
            let answer = self
                .call(epoch, &self.node, LogUnitRequest::WriteBatch(batch.clone()))
                .await?;
            match answer {
                LogUnitResponse::WriteBatch(o) if o.len() == batch.len() => {
                    outcomes.extend(
                        batch
                            .into_iter()
                            .zip(o)
                            .map(|(w, o)| (w.address, ReadOutcome::Data(w.entry), o)),
                    );
                }
                other => return Err(Self::unexpected(&self.node, &other)),
            }
        }
        let filled = join_all(
            fills
                .iter()
                .map(|&address| self.call(epoch, &self.node, LogUnitRequest::Fill { address })),
        )
        .await;
        for (&address, answer) in fills.iter().zip(filled) {
            match answer? {
                LogUnitResponse::Write(o) => outcomes.push((address, ReadOutcome::Junk, o)),
                other => return Err(Self::unexpected(&self.node, &other)),
            }
        }
        for (address, log, mut outcome) in outcomes {
            if outcome == WriteOutcome::Corrupt {
                // The unit's copy failed its checksum: the log's value
                // (decided, read from the chain) replaces it.
                let value = match &log {
                    ReadOutcome::Data(entry) => Existing::Data(entry.clone()),
                    _ => Existing::Junk,
                };
                let request = LogUnitRequest::Repair { address, value };
                outcome = match self.call(epoch, &self.node, request).await? {
                    LogUnitResponse::Write(o) if o != WriteOutcome::Corrupt => o,
                    other => return Err(Self::unexpected(&self.node, &other)),
                };
            }
            match outcome {
                WriteOutcome::Ok => report.copied += 1,
                WriteOutcome::Overwritten(held) => {
                    let held = existing(held);
                    if held != log {
                        return Err(Again::Fatal(TransferError::Diverged {
                            node: self.node.node_id.clone(),
                            address,
                            held: describe(&held),
                            log: describe(&log),
                        }));
                    }
                    report.already_held += 1;
                }
                // The unit trimmed further than the log: a trim is meant
                // for the whole log, so the address is gone for readers.
                WriteOutcome::Trimmed => report.trimmed += 1,
                // Not after a repair (its answer was checked above).
                WriteOutcome::Corrupt => {
                    let answer = LogUnitResponse::Write(WriteOutcome::Corrupt);
                    return Err(Self::unexpected(&self.node, &answer));
                }
            }
        }
        Ok(report)
    }
}

/// A chain of a closed segment the transfer copies from, for the client's
/// [`repair::fill`] and [`repair::repair`].
struct SourceChain<'a> {
    transfer: &'a StateTransfer,
    epoch: Epoch,
    chain: &'a [NodeAddr],
}

impl ChainCalls for SourceChain<'_> {
    type Error = Again;

    fn len(&self) -> usize {
        self.chain.len()
    }

    fn name(&self, member: usize) -> String {
        self.chain[member].node_id.clone()
    }

    async fn call(&self, member: usize, request: LogUnitRequest) -> Result<LogUnitResponse, Again> {
        self.transfer
            .call(self.epoch, &self.chain[member], request)
            .await
    }

    fn is_corrupt(error: &Again) -> bool {
        matches!(error, Again::Refused { error, .. } if error.kind == ServerErrorKind::Corrupt)
    }

    fn is_invalid(error: &Again) -> bool {
        matches!(error, Again::Refused { error, .. }
            if error.kind == ServerErrorKind::InvalidRequest)
    }

    fn failed(&self, failure: Failure) -> Again {
        match failure {
            Failure::AllCorrupt { address, members } => {
                Again::Fatal(TransferError::Failed(format!(
                    "address {address}: every member of its chain ({members}) answered that its \
                     copy is corrupt"
                )))
            }
            Failure::Diverged { address, detail } => {
                Again::Fatal(TransferError::ChainDiverged { address, detail })
            }
            Failure::Unexpected { member, answer } => {
                StateTransfer::unexpected(&self.chain[member], &answer)
            }
            Failure::Transient(why) => Again::Transient(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Stripe;
    use crate::types::ClusterId;

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

    fn segment(start: Address, end: Option<Address>, stripes: Vec<Stripe>) -> Segment {
        Segment {
            start,
            end,
            stripes,
        }
    }

    fn layout(segments: Vec<Segment>) -> Layout {
        Layout {
            cluster_id: ClusterId(7),
            epoch: 4,
            layout_servers: vec![node(1)],
            sequencers: vec![node(1)],
            segments,
            grants: crate::layout::Grants::from(0),
            voids: vec![],
        }
    }

    #[test]
    fn a_part_is_its_stripes_addresses() {
        let part = ChainPart {
            segment_start: 10,
            segment_end: 21,
            stripes: 3,
            stripe: 1,
        };
        // 10 % 3 = 1: 10, 13, 16, 19.
        let l = layout(vec![segment(0, None, vec![stripe(&[1])])]);
        assert_eq!(part.first(), 10);
        assert_eq!(part.len(), 4);
        assert_eq!(part.batch(&l, 10, 100), vec![10, 13, 16, 19]);
        assert_eq!(part.batch(&l, 13, 2), vec![13, 16]);
        // Void addresses are skipped, however many.
        let mut voided = l.clone();
        voided.add_void(11, 17);
        assert_eq!(part.batch(&voided, 10, 100), vec![10, 19]);
        let mut huge = l.clone();
        huge.add_void(11, u64::MAX - 1);
        assert_eq!(part.batch(&huge, 10, 100), vec![10]);
        let part = ChainPart { stripe: 0, ..part };
        assert_eq!(part.batch(&l, part.first(), 100), vec![12, 15, 18]);
        assert_eq!(part.len(), 3);
        let whole = ChainPart {
            segment_start: 0,
            segment_end: 5,
            stripes: 1,
            stripe: 0,
        };
        assert_eq!(whole.len(), 5);
        let none = ChainPart {
            segment_start: 4,
            segment_end: 5,
            stripes: 3,
            stripe: 0,
        };
        assert!(none.is_empty());
    }

    #[test]
    fn parts_are_the_closed_stripes_of_the_chain_without_the_unit() {
        let l = layout(vec![
            segment(0, Some(100), vec![stripe(&[1, 3])]),
            segment(100, Some(150), vec![stripe(&[1, 3]), stripe(&[4])]),
            segment(150, Some(200), vec![stripe(&[3, 1])]),
            segment(200, None, vec![stripe(&[1, 3, 2]), stripe(&[4])]),
        ]);
        let parts = parts_to_transfer(&l, "n2");
        assert_eq!(
            parts,
            vec![
                ChainPart {
                    segment_start: 0,
                    segment_end: 100,
                    stripes: 1,
                    stripe: 0
                },
                ChainPart {
                    segment_start: 100,
                    segment_end: 150,
                    stripes: 2,
                    stripe: 0
                },
            ],
            "the chain n3 -> n1 is another chain (another head)"
        );
        // A unit alone on its stripe, or in no chain, has nothing to receive.
        let mut alone = l.clone();
        alone.segments[3].stripes[1] = stripe(&[5]);
        assert!(parts_to_transfer(&alone, "n5").is_empty());
        assert!(parts_to_transfer(&l, "n9").is_empty());
    }
}
