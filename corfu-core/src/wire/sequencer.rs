//! Messages of the sequencer role: the global sequencer that hands out log
//! positions (CORFU §3.2, Tango §4, conditional tokens after vCorfu).

// rkyv's derive generates resolver enums whose struct-variant fields carry
// no docs; every item written here is documented by hand.
#![allow(missing_docs)]

use rkyv::{Archive, Deserialize, Serialize};

use crate::types::{Address, Epoch, StreamId};

/// A conflict key of a transaction: a stream and a hash of the key touched
/// within it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConflictKey {
    /// The object's stream.
    pub stream: StreamId,
    /// Hash of the key within the object (0 for the whole object).
    pub key_hash: u64,
}

/// The conditions attached to a conditional token.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TxnCondition {
    /// The address the transaction read its snapshot at.
    pub snapshot: Address,
    /// Keys the transaction read: none may have been written after
    /// `snapshot`.
    pub read_set: Vec<ConflictKey>,
    /// Keys the transaction writes: recorded as written at the granted
    /// address.
    pub write_set: Vec<ConflictKey>,
}

/// One conditional token of a [`SequencerRequest::Tokens`] batch: one
/// address for `streams`, granted if `condition` holds.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ConditionalToken {
    /// Streams the address belongs to.
    pub streams: Vec<StreamId>,
    /// The transaction's condition.
    pub condition: TxnCondition,
}

/// What became of one token of a [`SequencerRequest::Tokens`] batch.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum TokenOutcome {
    /// Granted `address`; per requested stream, its tail before.
    Granted {
        /// The granted address.
        address: Address,
        /// Per requested stream, its tail before this grant.
        previous: Vec<(StreamId, Option<Address>)>,
    },
    /// The condition does not hold (as [`SequencerResponse::Abort`]).
    Aborted {
        /// The conflicting key, if the abort is due to one key.
        key: Option<ConflictKey>,
        /// Where the conflicting write happened (or the floor).
        address: Address,
    },
    /// The token is malformed (too many streams); the message says why.
    Refused {
        /// Why.
        message: String,
    },
    /// The condition names more conflict keys (read and write sets
    /// together) than the sequencer's `txn_keys_max`: refused, nothing is
    /// granted, and retrying cannot help.
    TooManyKeys {
        /// Keys the condition named.
        keys: u64,
        /// The sequencer's limit.
        max: u32,
    },
}

/// A request to the sequencer.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum SequencerRequest {
    /// Grant `count` consecutive addresses belonging to `streams`.
    Token {
        /// Number of addresses (at least 1).
        count: u32,
        /// Streams every granted address belongs to.
        streams: Vec<StreamId>,
        /// If set, grant only if the condition holds (transaction commit).
        condition: Option<TxnCondition>,
    },
    /// Several conditional tokens of one address each, judged one after
    /// the other in order (a batch of transaction commits): each is granted
    /// or refused as a lone `Token` with its condition would be.
    Tokens {
        /// The tokens wanted, in order.
        tokens: Vec<ConditionalToken>,
    },
    /// Answer the global tail and the tails of `streams` without granting.
    Tail {
        /// Streams whose tails are wanted.
        streams: Vec<StreamId>,
    },
    /// Which addresses of `stream` lie in `[from, to)`.
    StreamAddresses {
        /// The stream.
        stream: StreamId,
        /// First address.
        from: Address,
        /// One past the last address.
        to: Address,
    },
    /// Whether the sequencer serves, and which epoch (answered whatever
    /// the request's epoch; needs no lease). The failure detectors ask it
    /// of the active sequencer: one that answers but does not serve the
    /// layout's epoch (it restarted, or its bootstrap never came) is
    /// brought back by a seal.
    Status,
    /// Fence the sequencer: reject requests of lower epochs.
    Seal {
        /// The new epoch.
        epoch: Epoch,
    },
    /// Start serving `epoch` from the given tails (after a reconfiguration).
    /// Accepted only by the sequencer incarnation `incarnation` (as its
    /// answer to `Seal` named it), sealed at `epoch` and not bootstrapped
    /// at it yet; a repeat to a sequencer already serving `epoch` changes
    /// nothing.
    Bootstrap {
        /// The epoch to serve.
        epoch: Epoch,
        /// The incarnation that answered the seal this bootstrap follows:
        /// a sequencer restarted since then (which may have granted
        /// addresses in `epoch` before it lost its state) refuses it.
        incarnation: u64,
        /// The next address to grant (the layout's grant start).
        next: Address,
        /// Grant nothing at or above this address (the layout's bound).
        bound: Address,
        /// Per stream, its last address.
        stream_tails: Vec<(StreamId, Address)>,
        /// The layout servers of `epoch`'s layout (`host:port`): the
        /// sequencer answers tails only while a majority of them confirm
        /// that no later epoch exists (its lease).
        layout_servers: Vec<String>,
    },
}

impl SequencerRequest {
    /// Short name of the request kind, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            SequencerRequest::Token { .. } => "sequencer.token",
            SequencerRequest::Tokens { .. } => "sequencer.tokens",
            SequencerRequest::Tail { .. } => "sequencer.tail",
            SequencerRequest::StreamAddresses { .. } => "sequencer.stream_addresses",
            SequencerRequest::Status => "sequencer.status",
            SequencerRequest::Seal { .. } => "sequencer.seal",
            SequencerRequest::Bootstrap { .. } => "sequencer.bootstrap",
        }
    }
}

/// An answer from the sequencer.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum SequencerResponse {
    /// Addresses `[start, start + count)` are granted. For each stream, the
    /// backpointer of `start` is the stream's previous tail; the
    /// backpointer of `start + i` (i > 0) is `start + i - 1`.
    Token {
        /// The first granted address.
        start: Address,
        /// The number of granted addresses.
        count: u32,
        /// Per requested stream, its tail before this grant.
        previous: Vec<(StreamId, Option<Address>)>,
    },
    /// A conditional token was refused: `key` was written at `address`,
    /// after the snapshot (or the snapshot is below the floor).
    Abort {
        /// The conflicting key, if the abort is due to one key.
        key: Option<ConflictKey>,
        /// Where the conflicting write happened (or the floor).
        address: Address,
    },
    /// A conditional token names more conflict keys (read and write sets
    /// together) than the sequencer's `txn_keys_max`: nothing is granted,
    /// and retrying cannot help.
    TooManyKeys {
        /// Keys the condition named.
        keys: u64,
        /// The sequencer's limit.
        max: u32,
    },
    /// Answer to `Tokens`: one outcome per token, in order.
    Tokens(Vec<TokenOutcome>),
    /// Answer to `Tail`: the next address to be granted, and per stream its
    /// last address.
    Tail {
        /// The next address the sequencer would grant.
        next: Address,
        /// Per requested stream, its last address.
        streams: Vec<(StreamId, Option<Address>)>,
    },
    /// Answer to `StreamAddresses`, ascending.
    Addresses {
        /// The stream's addresses in the range (cut to the sequencer's
        /// `stream_addresses_max`).
        addresses: Vec<Address>,
        /// The index is complete from this address up; below it, it holds
        /// only the tails recovered at the last bootstrap, and readers
        /// follow backpointers.
        complete_from: Address,
    },
    /// Answer to `Bootstrap`.
    Done,
    /// Answer to `Status`.
    Status {
        /// The epoch the sequencer is sealed or bootstrapped at.
        epoch: Epoch,
        /// Whether it serves tokens at that epoch.
        serving: bool,
    },
    /// Answer to `Seal`: who was sealed and how far it got.
    Sealed {
        /// Random per process start: tells a restarted sequencer (which
        /// lost its state) from the one that was running.
        incarnation: u64,
        /// The epoch this incarnation last served and the next address it
        /// would have granted then (nothing is granted after a seal), or
        /// `None` if it never served.
        served: Option<(Epoch, Address)>,
    },
}
