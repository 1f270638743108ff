//! The global sequencer (CORFU §3.2, Tango §4): hands out log positions,
//! keeps per-stream tails and backpointers, and resolves transactions with
//! conditional tokens. Soft state: a new sequencer bootstraps from the tails
//! the log units report when sealed.
//!
//! [`Sequencer`] is the pure core of the role: it takes a request and the
//! request's epoch and returns the answer; it does no I/O and reads no
//! clock. The driver wraps it in a mutex, so every rule below holds per
//! request, atomically.
//!
//! Rules:
//! - **Tokens.** `Token { count, streams }` grants `[next, next + count)`.
//!   Every granted address belongs to every named stream. For each stream
//!   the answer carries the stream's last address before the grant; the
//!   backpointer of `start + i` (i > 0) is `start + i - 1`. Grants are
//!   unique and gap-free within one bootstrap. A token is only a hint of
//!   where to write: write-once at the log units is what keeps the log
//!   safe, so a lost or duplicated grant costs a retry or a hole, never a
//!   wrong value.
//! - **Conditional tokens** (`conflicts.rs`). With a condition `(snapshot,
//!   read set, write set)` the grant happens only if `snapshot` is at or
//!   above the floor and no read-set key was written above `snapshot`;
//!   then every write-set key is recorded as written at the last granted
//!   address. Otherwise the answer is `Abort` and nothing is granted. Plain
//!   tokens record no keys, so objects read inside transactions must be
//!   written with conditional tokens for their writes to be seen.
//! - **Tail** answers the next address and stream tails without granting
//!   (Tango's fast check). **StreamAddresses** answers a stream's addresses
//!   in `[from, to)` from a per-stream roaring bitmap, ascending, cut to
//!   `stream_addresses_max`: the caller continues from the last address
//!   plus 1.
//! - **Epochs** (CORFU §3.4). A request whose epoch is below the
//!   sequencer's gets `WrongEpoch`; one above it an `Unavailable` error
//!   (the sequencer was not bootstrapped into that epoch, so it may not
//!   know what the epoch's sequencer granted). `Seal(e)` with `e` above
//!   the current epoch moves to `e` and stops serving tokens, tails and
//!   addresses until a `Bootstrap` at `e` (CorfuDB's sequencer is "not
//!   ready" the same way). Sealing at the current epoch again changes
//!   nothing. The answer to a seal names the sequencer's incarnation
//!   (random per process start) and how far it got: the epoch it last
//!   served and its next address then, which bounds everything it ever
//!   granted in that epoch.
//! - **Grants never go backwards** (see [`crate::layout`]). A bootstrap
//!   sets `next` to the layout's grant start, which lies above everything
//!   any earlier sequencer granted, and grants stop at the layout's bound.
//!   It is accepted only from the seal it follows: the incarnation must be
//!   the one that answered that seal, sealed at the bootstrap's epoch and
//!   not bootstrapped at it yet (a repeat is a no-op). A sequencer that
//!   restarted may have granted in the epoch before it lost its state, so
//!   it serves again only after a new reconfiguration.
//! - **Bootstrap** restarts from the tails the sealed log units reported:
//!   each stream's tail, and the floor `next`, so every transaction whose
//!   snapshot precedes the reconfiguration aborts and retries; the
//!   conflict table is emptied. The per-stream address index then knows
//!   only the recovered tails: `StreamAddresses` below the bootstrap's
//!   `next` is incomplete (the answer says from where it is complete:
//!   `complete_from`) and readers fall back to backpointers there. Unless
//!   the same incarnation served the epoch just before and resumes at or
//!   above its own `next`: then nobody granted anything it does not know
//!   of, and it keeps its index (its stream tails are the recovered ones
//!   still: its own last grants may lie in the void).
//! - **Start.** [`Sequencer::new`] serves at once from address 0, at
//!   epoch 0 and any higher request epoch, without bound: right only for a
//!   brand-new, empty log outside any layout (tests, benchmarks). A
//!   sequencer of a node starts with [`Sequencer::awaiting_bootstrap`].

mod config;
mod conflicts;
pub mod lease;
mod service;

pub use config::SequencerConfig;
pub use service::SequencerService;

use std::collections::HashMap;

use roaring::RoaringTreemap;

use crate::types::{Address, Epoch, StreamId};
use crate::wire::sequencer::{
    ConditionalToken, SequencerRequest, SequencerResponse, TokenOutcome, TxnCondition,
};
use crate::wire::{Response, ServerErrorKind};
use conflicts::ConflictTable;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The sequencer role's state and rules (see the module docs).
pub struct Sequencer {
    config: SequencerConfig,
    /// The sealed epoch: requests of lower epochs are refused.
    epoch: Epoch,
    /// False between a seal that raised the epoch and the next bootstrap:
    /// the state may then miss grants of another sequencer.
    bootstrapped: bool,
    /// Serve requests of epochs above `epoch` too: only a sequencer made
    /// with [`Sequencer::new`], until its first seal.
    any_epoch: bool,
    /// Random per instance (per process start of a node): a bootstrap must
    /// name the incarnation that answered its seal.
    incarnation: u64,
    /// The epoch this instance was last bootstrapped at.
    bootstrapped_at: Option<Epoch>,
    /// The layout servers of the bootstrap's layout (for the lease).
    layout_servers: Vec<String>,
    /// The next address to grant.
    next: Address,
    /// Nothing at or above it is granted (the layout's grant bound).
    bound: Address,
    /// Per stream, the last address granted to it (or recovered).
    stream_tails: FastMap<StreamId, Address>,
    /// Per stream, every address granted to it since the last bootstrap,
    /// plus the recovered tail.
    stream_index: FastMap<StreamId, RoaringTreemap>,
    /// The stream index holds every grant from this address up (the
    /// `next` of the last bootstrap that reset the state).
    index_complete_from: Address,
    conflicts: ConflictTable,
}

impl Sequencer {
    /// A sequencer for a brand-new, empty log: epoch 0, next address 0,
    /// serving at once. `config` is used as given; the node checks it with
    /// [`SequencerConfig::validate`] when it loads its configuration.
    pub fn new(config: SequencerConfig) -> Sequencer {
        let keys_max = usize::try_from(config.conflict_keys_max).unwrap_or(usize::MAX);
        Sequencer {
            config,
            epoch: 0,
            bootstrapped: true,
            any_epoch: true,
            incarnation: rand::random(),
            bootstrapped_at: Some(0),
            layout_servers: Vec::new(),
            next: 0,
            bound: Address::MAX,
            stream_tails: FastMap::default(),
            stream_index: FastMap::default(),
            index_complete_from: 0,
            conflicts: ConflictTable::new(keys_max, 0),
        }
    }

    /// A sequencer that has lost its state (restart in a running cluster):
    /// it answers only `Seal` and `Bootstrap` until bootstrapped.
    pub fn awaiting_bootstrap(config: SequencerConfig) -> Sequencer {
        Sequencer {
            bootstrapped: false,
            any_epoch: false,
            bootstrapped_at: None,
            ..Sequencer::new(config)
        }
    }

    /// This instance's incarnation (see [`SequencerRequest::Bootstrap`]).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The layout servers named by the last bootstrap (empty for
    /// [`Sequencer::new`]): the acceptors that must confirm the lease.
    pub fn layout_servers(&self) -> &[String] {
        &self.layout_servers
    }

    /// The grant bound in force.
    pub fn bound(&self) -> Address {
        self.bound
    }

    /// The sealed epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Whether tokens, tails and addresses are served.
    pub fn is_bootstrapped(&self) -> bool {
        self.bootstrapped
    }

    /// The next address a token would get.
    pub fn next(&self) -> Address {
        self.next
    }

    /// The transaction floor: conditional tokens whose snapshot is below it
    /// abort.
    pub fn floor(&self) -> Address {
        self.conflicts.floor()
    }

    /// The limits in force.
    pub fn config(&self) -> &SequencerConfig {
        &self.config
    }

    /// Number of keys in the conflict table (at most `conflict_keys_max`).
    pub fn conflict_keys(&self) -> usize {
        self.conflicts.len()
    }

    /// Number of streams with a known tail.
    pub fn streams(&self) -> usize {
        self.stream_tails.len()
    }

    /// Serves one request sent at `epoch` (the request header's epoch).
    pub fn handle(&mut self, epoch: Epoch, request: SequencerRequest) -> Response {
        if request == SequencerRequest::Status {
            return self.status();
        }
        if epoch < self.epoch {
            return self.wrong_epoch();
        }
        let serving = matches!(
            request,
            SequencerRequest::Token { .. }
                | SequencerRequest::Tokens { .. }
                | SequencerRequest::Tail { .. }
                | SequencerRequest::StreamAddresses { .. }
        );
        if serving && epoch > self.epoch && !self.any_epoch {
            return Response::error(
                ServerErrorKind::Unavailable,
                format!(
                    "sequencer serves epoch {}, not bootstrapped at epoch {epoch}",
                    self.epoch
                ),
            );
        }
        match request {
            SequencerRequest::Token {
                count,
                streams,
                condition,
            } => self.token(count, &streams, condition.as_ref()),
            SequencerRequest::Tokens { tokens } => self.tokens(&tokens),
            SequencerRequest::Tail { streams } => self.tail(&streams),
            SequencerRequest::StreamAddresses { stream, from, to } => {
                self.stream_addresses(stream, from, to)
            }
            SequencerRequest::Seal { epoch } => self.seal(epoch),
            SequencerRequest::Status => self.status(),
            SequencerRequest::Bootstrap {
                epoch,
                incarnation,
                next,
                bound,
                stream_tails,
                layout_servers,
            } => self.bootstrap(
                epoch,
                incarnation,
                next,
                bound,
                &stream_tails,
                layout_servers,
            ),
        }
    }

    fn token(
        &mut self,
        count: u32,
        streams: &[StreamId],
        condition: Option<&TxnCondition>,
    ) -> Response {
        if !self.bootstrapped {
            return self.not_ready();
        }
        if count == 0 || count > self.config.token_count_max {
            return invalid(format!(
                "token count {count} is outside 1..={}",
                self.config.token_count_max
            ));
        }
        if let Err(message) = check_streams(streams, self.config.token_streams_max) {
            return invalid(message);
        }
        if let Some(c) = condition {
            let keys = c.read_set.len().saturating_add(c.write_set.len());
            if keys > self.config.txn_keys_max as usize {
                return Response::Sequencer(SequencerResponse::TooManyKeys {
                    keys: keys as u64,
                    max: self.config.txn_keys_max,
                });
            }
        }
        let start = self.next;
        let Some(end) = start.checked_add(u64::from(count)) else {
            return Response::error(
                ServerErrorKind::Unavailable,
                format!("address space exhausted: cannot grant {count} addresses at {start}"),
            );
        };
        if end > self.bound {
            return Response::error(
                ServerErrorKind::Unavailable,
                format!(
                    "the addresses reserved for epoch {} end at {}: a reconfiguration \
                     (`corfu layout seal`) reserves more",
                    self.epoch, self.bound
                ),
            );
        }
        let last = end - 1;
        if let Some(c) = condition {
            if let Err((key, address)) = self.conflicts.check(c.snapshot, &c.read_set) {
                return Response::Sequencer(SequencerResponse::Abort { key, address });
            }
        }

        // Everything is checked: grant.
        self.next = end;
        let previous = streams
            .iter()
            .map(|&stream| {
                self.stream_index
                    .entry(stream)
                    .or_default()
                    .insert_range(start..end);
                (stream, self.stream_tails.insert(stream, last))
            })
            .collect();
        if let Some(c) = condition {
            self.conflicts.record(last, &c.write_set);
        }
        Response::Sequencer(SequencerResponse::Token {
            start,
            count,
            previous,
        })
    }

    /// A batch of conditional tokens of one address each, judged in order:
    /// each outcome is what a lone conditional `Token` would have answered.
    fn tokens(&mut self, tokens: &[ConditionalToken]) -> Response {
        if !self.bootstrapped {
            return self.not_ready();
        }
        if tokens.is_empty() || tokens.len() > self.config.token_count_max as usize {
            return invalid(format!(
                "{} tokens in one request, outside 1..={}",
                tokens.len(),
                self.config.token_count_max
            ));
        }
        let mut outcomes = Vec::with_capacity(tokens.len());
        for t in tokens {
            let outcome = match self.token(1, &t.streams, Some(&t.condition)) {
                Response::Sequencer(SequencerResponse::Token {
                    start, previous, ..
                }) => TokenOutcome::Granted {
                    address: start,
                    previous,
                },
                Response::Sequencer(SequencerResponse::Abort { key, address }) => {
                    TokenOutcome::Aborted { key, address }
                }
                Response::Sequencer(SequencerResponse::TooManyKeys { keys, max }) => {
                    TokenOutcome::TooManyKeys { keys, max }
                }
                Response::Error(e) => TokenOutcome::Refused { message: e.message },
                other => TokenOutcome::Refused {
                    message: format!("unexpected outcome {other:?}"),
                },
            };
            outcomes.push(outcome);
        }
        Response::Sequencer(SequencerResponse::Tokens(outcomes))
    }

    fn tail(&self, streams: &[StreamId]) -> Response {
        if !self.bootstrapped {
            return self.not_ready();
        }
        if streams.len() > self.config.tail_streams_max as usize {
            return invalid(format!(
                "{} streams, more than tail_streams_max = {}",
                streams.len(),
                self.config.tail_streams_max
            ));
        }
        Response::Sequencer(SequencerResponse::Tail {
            next: self.next,
            streams: streams
                .iter()
                .map(|s| (*s, self.stream_tails.get(s).copied()))
                .collect(),
        })
    }

    fn stream_addresses(&self, stream: StreamId, from: Address, to: Address) -> Response {
        if !self.bootstrapped {
            return self.not_ready();
        }
        if to < from {
            return invalid(format!("empty range: to {to} is below from {from}"));
        }
        let addresses = match self.stream_index.get(&stream) {
            None => Vec::new(),
            Some(index) => {
                let mut iter = index.iter();
                iter.advance_to(from);
                iter.take_while(|a| *a < to)
                    .take(self.config.stream_addresses_max as usize)
                    .collect()
            }
        };
        Response::Sequencer(SequencerResponse::Addresses {
            addresses,
            complete_from: self.index_complete_from,
        })
    }

    fn seal(&mut self, epoch: Epoch) -> Response {
        if epoch < self.epoch {
            return self.wrong_epoch();
        }
        if epoch > self.epoch {
            self.epoch = epoch;
            self.bootstrapped = false;
            self.any_epoch = false;
        }
        Response::Sequencer(SequencerResponse::Sealed {
            incarnation: self.incarnation,
            served: self.bootstrapped_at.map(|e| (e, self.next)),
        })
    }

    fn bootstrap(
        &mut self,
        epoch: Epoch,
        incarnation: u64,
        next: Address,
        bound: Address,
        stream_tails: &[(StreamId, Address)],
        layout_servers: Vec<String>,
    ) -> Response {
        if epoch < self.epoch {
            return self.wrong_epoch();
        }
        if incarnation != self.incarnation {
            return Response::error(
                ServerErrorKind::Unavailable,
                format!(
                    "bootstrap for incarnation {incarnation:016x}, but this sequencer is \
                     {:016x}: it restarted after the seal (a new reconfiguration is needed)",
                    self.incarnation
                ),
            );
        }
        if epoch > self.epoch {
            return Response::error(
                ServerErrorKind::Unavailable,
                format!(
                    "bootstrap at epoch {epoch}, but the sequencer is sealed at epoch {} only",
                    self.epoch
                ),
            );
        }
        if bound <= next {
            return invalid(format!("empty grant range [{next}, {bound})"));
        }
        if let Some((stream, tail)) = stream_tails.iter().find(|(_, tail)| *tail >= next) {
            return invalid(format!(
                "stream {stream} has tail {tail}, not below the bootstrap's next address {next}"
            ));
        }
        if self.bootstrapped {
            // A repeat (or a late copy) of the bootstrap in force.
            return Response::Sequencer(SequencerResponse::Done);
        }
        // This incarnation served the epoch just before and resumes at or
        // above where it stopped: nobody else granted anything since its
        // index was complete, so the index stays complete (readers need
        // no backpointers across a reconfiguration that kept the
        // sequencer). Otherwise it knows only the recovered tails.
        let keeps_index = epoch.checked_sub(1).is_some()
            && self.bootstrapped_at == epoch.checked_sub(1)
            && next >= self.next;
        self.next = next;
        self.bound = bound;
        self.conflicts.reset(next);
        if !keeps_index {
            self.stream_index.clear();
            self.index_complete_from = next;
        }
        // The tails (the backpointers of the next grants) are the recovered
        // ones even with the index kept: a grant still in flight at the
        // seal lies in the void, and a backpointer there would send a later
        // backpointer walk to a scan.
        self.stream_tails.clear();
        for &(stream, tail) in stream_tails {
            let known = self.stream_tails.entry(stream).or_insert(tail);
            *known = (*known).max(tail);
            self.stream_index.entry(stream).or_default().insert(tail);
        }
        self.layout_servers = layout_servers;
        self.epoch = epoch;
        self.bootstrapped = true;
        self.bootstrapped_at = Some(epoch);
        Response::Sequencer(SequencerResponse::Done)
    }

    fn status(&self) -> Response {
        Response::Sequencer(SequencerResponse::Status {
            epoch: self.epoch,
            serving: self.bootstrapped,
        })
    }

    fn wrong_epoch(&self) -> Response {
        Response::WrongEpoch {
            current: self.epoch,
        }
    }

    fn not_ready(&self) -> Response {
        Response::error(
            ServerErrorKind::Unavailable,
            format!(
                "sequencer sealed at epoch {} and not bootstrapped yet",
                self.epoch
            ),
        )
    }
}

// A summary: the address index can hold millions of addresses.
impl std::fmt::Debug for Sequencer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sequencer")
            .field("epoch", &self.epoch)
            .field("bootstrapped", &self.bootstrapped)
            .field("incarnation", &format_args!("{:016x}", self.incarnation))
            .field("next", &self.next)
            .field("bound", &self.bound)
            .field("floor", &self.floor())
            .field("streams", &self.streams())
            .field("conflict_keys", &self.conflict_keys())
            .finish()
    }
}

fn invalid(message: String) -> Response {
    Response::error(ServerErrorKind::InvalidRequest, message)
}

/// At most `streams_max` streams, each once (an entry lists a stream once,
/// with one backpointer); the error is the refusal's message.
fn check_streams(streams: &[StreamId], streams_max: u32) -> Result<(), String> {
    if streams.len() > streams_max as usize {
        return Err(format!(
            "{} streams, more than token_streams_max = {streams_max}",
            streams.len()
        ));
    }
    for (i, stream) in streams.iter().enumerate() {
        if streams[..i].contains(stream) {
            return Err(format!("stream {stream} is named twice"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
