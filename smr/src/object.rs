//! The object traits: what a replicated object is to the runtime.

use corfu_core::types::Address;

use crate::codec::Codec;
use crate::runtime::Handle;

/// A replicated object's state: a deterministic state machine (Tango §3).
///
/// Every runtime that opens the object starts from `Default::default()` and
/// applies the object's updates in log order, so `apply` must depend on
/// nothing but the state, the op and the address: no clock, no randomness,
/// no I/O, no iteration order of a randomly seeded hash map that could leak
/// into the state. Then every view that has applied the same prefix of the
/// stream holds the same state.
///
/// `apply` must not panic: a panic leaves the view unusable in this
/// runtime ([`Error::Poisoned`](crate::Error::Poisoned)). Reject bad input
/// by making the op a no-op instead (the rule is the same everywhere, so
/// every view rejects it alike).
pub trait StateMachine: Default + Send + Sync + 'static {
    /// An update, as written to the log (derive rkyv's `Archive`,
    /// `Serialize` and `Deserialize`).
    type Op: Codec + Send + 'static;

    /// The object type's name, written in front of every op of the object
    /// in the log (and of its part of every transaction entry), for
    /// example `"corfu.map"`: 1 to 255 bytes, the same in every program
    /// and every version that reads the object, and different from every
    /// other object type's. Playback refuses an entry of another type
    /// ([`Error::WrongType`](crate::Error::WrongType)), so ops of one type
    /// are never applied as another's, however alike their archives are.
    ///
    /// The name identifies the kind of object, not its type parameters:
    /// a `ReplicatedMap<String, u64>` and a `ReplicatedMap<String, String>`
    /// share `"corfu.map"`, and only the op archive's validation tells
    /// them apart.
    const TYPE: &'static str;

    /// The version of the op encoding, written next to [`TYPE`](Self::TYPE).
    /// Raise it when `Op` changes in a way older programs would misread;
    /// playback applies only entries of exactly this version and stops at
    /// others with [`Error::WrongType`](crate::Error::WrongType).
    const VERSION: u8 = 1;

    /// Applies `op`, the entry at `address` of the object's stream.
    /// Addresses never decrease from one call to the next; they increase
    /// strictly except between the ops of one transaction, which are all
    /// applied at the address of the transaction's entry, in the order the
    /// transaction issued them. (Inside a transaction, before it commits,
    /// its own ops are also applied to its private copy of the state, at
    /// the address right after its snapshot.)
    fn apply(&mut self, op: Self::Op, address: Address);

    /// The conflict keys `op` writes, besides
    /// [`WHOLE_OBJECT`](crate::WHOLE_OBJECT), which the runtime adds to
    /// every write. A transaction that read one of these keys (see
    /// [`Txn::read_keys`](crate::Txn::read_keys)) at a snapshot older than
    /// the op aborts.
    ///
    /// The default, no key, is right for an object read only as a whole.
    /// An object with parts (a map's keys) names the parts an op changes,
    /// so transactions reading other parts do not conflict with it; an op
    /// that changes every part (a map's `clear`) names a key that every
    /// part's read also reads. Use [`key_hash`](crate::key_hash): keys
    /// must hash alike in every process.
    fn write_keys(op: &Self::Op) -> Vec<u64> {
        let _ = op;
        Vec::new()
    }
}

/// A typed front for a replicated object, built from the runtime's handle:
/// what [`Runtime::open`](crate::Runtime::open) returns. `Handle<T>` itself
/// is one; a ready-made object (a replicated map, say) wraps a handle and
/// offers methods in the object's own terms.
pub trait Object: Sized {
    /// The state machine behind the object.
    type State: StateMachine;

    /// Wraps a handle of the object's view.
    fn from_handle(handle: Handle<Self::State>) -> Self;
}

impl<T: StateMachine> Object for Handle<T> {
    type State = T;

    fn from_handle(handle: Handle<T>) -> Self {
        handle
    }
}
