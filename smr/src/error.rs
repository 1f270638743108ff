//! What a runtime operation can fail with.

use corfu_core::client::ClientError;
use corfu_core::types::{Address, StreamId};
use corfu_core::wire::sequencer::ConflictKey;

/// A runtime operation failed. Every variant names the object, except
/// [`Error::Aborted`], which concerns a whole transaction.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The shared log could not serve the operation (the client already
    /// retried what was worth retrying); the view is unchanged and a later
    /// call may succeed.
    #[error("object {object:?}: {source}")]
    Log {
        /// The object.
        object: String,
        /// The log client's error.
        #[source]
        source: ClientError,
    },
    /// The op could not be serialized.
    #[error("object {object:?}: cannot encode the op: {reason}")]
    Encode {
        /// The object.
        object: String,
        /// The serializer's error.
        reason: String,
    },
    /// An entry of the object's stream is not an update of this object's
    /// type. The view stops before it for good (see the crate docs,
    /// "Undecodable entries"): every later query of the object in this
    /// runtime returns this error.
    #[error(
        "object {object:?}: the entry at address {address} cannot be applied: {reason}; \
         the view stops before it"
    )]
    Undecodable {
        /// The object.
        object: String,
        /// The entry's address.
        address: Address,
        /// Why it could not be decoded.
        reason: String,
    },
    /// An entry of the object's stream is of another object type (or
    /// another encoding version of this type) than the one the object was
    /// opened as: the stream belongs to another kind of object. Nothing of
    /// the entry is applied; the view stops before it for good, like for
    /// [`Error::Undecodable`]. A write to a stream whose last entry is of
    /// another type is refused with this error too, and appends nothing.
    #[error(
        "object {object:?} (stream {stream}) is opened as {expected}, but the entry at address \
         {address} is {found}: nothing of another type is applied or written, and the view \
         stops before that entry"
    )]
    WrongType {
        /// The object.
        object: String,
        /// The object's stream.
        stream: StreamId,
        /// The entry's address.
        address: Address,
        /// The type the object was opened as (its
        /// [`StateMachine::TYPE`](crate::StateMachine::TYPE) and version).
        expected: String,
        /// The type the entry names.
        found: String,
    },
    /// The object is already open in this runtime with another state type.
    #[error("object {object:?} is open as {opened_as} in this runtime; it cannot be opened as {requested}")]
    TypeMismatch {
        /// The object.
        object: String,
        /// The type it was first opened with.
        opened_as: &'static str,
        /// The type asked for now.
        requested: &'static str,
    },
    /// An `apply` upcall (or a reader run during playback) panicked while
    /// the view was being updated; the state may be half-applied, so the
    /// view is unusable in this runtime.
    #[error("object {object:?}: a panic during playback left the view unusable")]
    Poisoned {
        /// The object.
        object: String,
    },
    /// The shared log answered something its contract rules out (for
    /// example a stream read returning an address outside the range asked
    /// for). Nothing of the answer past the offending entry was applied.
    #[error("object {object:?}: the shared log broke its contract: {detail}")]
    LogContract {
        /// The object.
        object: String,
        /// What was wrong.
        detail: String,
    },
    /// A transaction did not commit: every attempt was refused by the
    /// log because something it read was written after its snapshot (or
    /// its snapshot fell below the log's transaction floor, or its granted
    /// address was lost to a hole filler). Nothing of it is in the log.
    #[error(
        "transaction aborted after {attempts} attempts; last refusal: {}",
        match conflict {
            Some(k) => format!("key {:#x} of stream {} written at {address}", k.key_hash, k.stream),
            None => format!("snapshot below the floor or address lost ({address})"),
        }
    )]
    Aborted {
        /// How many times the transaction ran and tried to commit.
        attempts: u32,
        /// The conflicting key of the last refusal, if the log named one.
        conflict: Option<ConflictKey>,
        /// Where that key was written (or the floor, or the lost address).
        address: Address,
    },
    /// A transaction's commit named more conflict keys (keys read and
    /// written together) than the sequencer accepts (its `txn_keys_max`).
    /// A definite failure: nothing of it is in the log, and it was not
    /// retried (the same transaction would name the same keys).
    #[error("transaction not committed: too many keys ({keys} conflict keys, more than the sequencer's txn_keys_max of {max}); nothing was appended")]
    TooManyKeys {
        /// Keys the commit named.
        keys: u64,
        /// The sequencer's limit.
        max: u32,
    },
    /// A transaction was used wrongly: with a handle of another runtime,
    /// or after its body returned. Nothing was read or buffered.
    #[error("object {object:?}: {reason}")]
    Transaction {
        /// The object.
        object: String,
        /// What was wrong.
        reason: String,
    },
}
