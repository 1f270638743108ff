//! What a log client operation can fail with.

use crate::transport::TransportError;
use crate::types::{Address, Epoch};
use crate::wire::sequencer::ConflictKey;
use crate::wire::ServerError;

/// A log client operation failed. Corfu outcomes that are answers (junk,
/// unwritten, trimmed) are values, not errors, except where an operation
/// cannot give a meaningful answer without them.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// No layout could be obtained, or the cluster stayed unreachable for
    /// the whole operation timeout; the message carries the last failure.
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    /// A node refused the request for good (invalid request, wrong
    /// cluster, role not hosted, internal failure).
    #[error("{addr} refused: {error}")]
    Refused {
        /// The node.
        addr: String,
        /// Its answer.
        error: ServerError,
    },
    /// The entry exceeds `entry_bytes_max`.
    #[error("entry of {bytes} bytes exceeds the limit of {max} bytes")]
    EntryTooLarge {
        /// The entry's size: its payload plus 27 bytes plus 24 per stream
        /// (the log units' record body, which the limit is about).
        bytes: usize,
        /// The limit.
        max: u32,
    },
    /// Arguments that cannot be served (a reversed range, no layout for an
    /// address).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The address lies below the log's trim mark.
    #[error("address {address} is trimmed")]
    Trimmed {
        /// The address.
        address: Address,
    },
    /// The append lost its address to hole fillers this many times.
    #[error("append lost its address {attempts} times (hole fillers were faster); giving up")]
    AppendRetriesExhausted {
        /// Tokens taken.
        attempts: u32,
    },
    /// A stream read met an address that is still unwritten and the hole
    /// fill policy is `never`.
    #[error("address {address} is unwritten (hole filling is off)")]
    Unwritten {
        /// The hole.
        address: Address,
    },
    /// Members of one chain hold different values for one address: the
    /// chain invariant is broken (a bug or outside interference).
    #[error("chain diverged at address {address}: {detail}")]
    ChainDiverged {
        /// The address.
        address: Address,
        /// What was found.
        detail: String,
    },
    /// A node answered something the protocol does not allow here.
    #[error("{addr}: unexpected answer: {answer}")]
    Unexpected {
        /// The node.
        addr: String,
        /// The answer, debug-printed.
        answer: String,
    },
    /// A conditional append (a transaction's commit) was refused: a key of
    /// its read set was written after its snapshot (`conflict`), or the
    /// granted address was lost to a hole filler (`conflict` is `None`).
    /// Nothing of it is in the log.
    #[error("aborted: {}", match conflict { Some(k) => format!("key {:#x} of stream {} was written at {address}, after the snapshot", k.key_hash, k.stream), None => format!("its address {address} was taken before the write") })]
    Aborted {
        /// The conflicting key, if the sequencer named one.
        conflict: Option<ConflictKey>,
        /// Where the conflicting write (or the lost address) is.
        address: Address,
    },
    /// A transaction's commit named more conflict keys (read and write
    /// sets together) than the sequencer accepts (`txn_keys_max`). Nothing
    /// is in the log, and retrying the same transaction cannot help.
    #[error("too many keys: the transaction names {keys} conflict keys, more than the sequencer's txn_keys_max ({max}); nothing was appended")]
    TooManyKeys {
        /// Keys the commit named.
        keys: u64,
        /// The sequencer's limit.
        max: u32,
    },
    /// No member of the address's chain holds a readable copy: every copy
    /// failed its checksum (a one-unit chain whose record is corrupt).
    #[error("address {address}: no member of its chain holds a readable copy ({detail})")]
    Corrupt {
        /// The address.
        address: Address,
        /// What the members answered.
        detail: String,
    },
    /// The client was shut down.
    #[error("the log client is closed")]
    Closed,
}

impl ClientError {
    /// A short stable name of the error's kind, for programs (`--json`).
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::Unavailable(_) => "unavailable",
            ClientError::Refused { .. } => "refused",
            ClientError::EntryTooLarge { .. } => "entry_too_large",
            ClientError::InvalidArgument(_) => "invalid_argument",
            ClientError::Trimmed { .. } => "trimmed",
            ClientError::AppendRetriesExhausted { .. } => "append_retries_exhausted",
            ClientError::Unwritten { .. } => "unwritten",
            ClientError::ChainDiverged { .. } => "chain_diverged",
            ClientError::Unexpected { .. } => "unexpected_answer",
            ClientError::Aborted { .. } => "aborted",
            ClientError::TooManyKeys { .. } => "too_many_keys",
            ClientError::Corrupt { .. } => "corrupt",
            ClientError::Closed => "closed",
        }
    }
}

/// The outcome of one attempt inside a retry loop.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// A node is at a newer epoch: refresh the layout and retry.
    Stale(Epoch),
    /// Worth retrying after a pause (unreachable node, timeout, an
    /// `Unavailable` answer).
    Transient(String),
    /// Retrying cannot help.
    Fatal(ClientError),
}

impl From<ClientError> for Attempt {
    fn from(e: ClientError) -> Attempt {
        Attempt::Fatal(e)
    }
}

impl From<TransportError> for Attempt {
    fn from(e: TransportError) -> Attempt {
        Attempt::Transient(e.to_string())
    }
}
