//! Messages of the log unit role: write-once storage of one 64-bit address
//! space (CORFU §3, "storage units").

// rkyv's derive generates resolver enums whose struct-variant fields carry
// no docs; every item written here is documented by hand.
#![allow(missing_docs)]

use rkyv::{Archive, Deserialize, Serialize};

use crate::types::{Address, Epoch, StreamId};

/// Membership of an entry in one stream, with the stream's previous address.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamHeader {
    /// The stream the entry belongs to.
    pub stream: StreamId,
    /// The stream's previous entry, if any (Tango backpointer): lets a reader
    /// rebuild the stream from the log alone.
    pub backpointer: Option<Address>,
}

/// Who appended an entry: a client's random id and the append's number
/// within that client. A writer that finds data at its address decides by
/// this identity whether the data is its own, never by the bytes alone:
/// two appends of identical bytes are still two appends.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AppendId {
    /// Chosen at random by each client when it connects.
    pub client: u64,
    /// Counts the client's appends from 1.
    pub seq: u64,
}

/// A data entry: its identity, its streams and an opaque payload.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The append that wrote it; `None` for entries written without one
    /// (by tools, tests and records of earlier versions).
    pub id: Option<AppendId>,
    /// The streams the entry belongs to (possibly none).
    pub streams: Vec<StreamHeader>,
    /// The application's bytes; the log never looks inside.
    pub payload: Vec<u8>,
}

/// An entry to be written at an address.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AddressedEntry {
    /// Where to write.
    pub address: Address,
    /// What to write.
    pub entry: Entry,
}

/// What an address holds, as a read answers it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The address holds data.
    Data(Entry),
    /// The address was filled with junk (a hole completed by a reader).
    Junk,
    /// Nothing has been written at the address yet.
    Unwritten,
    /// The address lies below the unit's trim mark.
    Trimmed,
}

/// What was already at an address when a write or fill lost.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Existing {
    /// Data (possibly the same bytes, written by the winner of a race).
    Data(Entry),
    /// Junk from a fill.
    Junk,
}

/// The outcome of a write or fill.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The address now holds what was written.
    Ok,
    /// The address was already written; it keeps what it held (write-once).
    Overwritten(Existing),
    /// The address lies below the trim mark; nothing was written.
    Trimmed,
    /// The unit's copy of the address is corrupt (see
    /// `ServerErrorKind::Corrupt`): it cannot tell whether the address is
    /// written, so it wrote nothing. Only a `Repair` with the chain's value
    /// replaces the copy.
    Corrupt,
}

/// Tails reported by a unit when it is sealed or asked.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Tails {
    /// The highest address written or filled on this unit, if any.
    pub global: Option<Address>,
    /// Per stream, the highest address of that stream stored on this unit.
    pub streams: Vec<(StreamId, Address)>,
    /// The unit's trim mark: addresses below it answer `Trimmed`.
    pub trim_mark: Address,
}

/// A request to a log unit. The header's epoch must equal the unit's sealed
/// epoch: below it the unit answers `WrongEpoch`; above it (an epoch the
/// unit was never sealed into, so it may hold stale data) an `Unavailable`
/// error. A never-sealed unit serves epoch 1, the bootstrap's. `Seal` is
/// served whatever the header's epoch.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum LogUnitRequest {
    /// Write one entry at one address.
    Write(AddressedEntry),
    /// Write several entries; each succeeds or fails on its own.
    WriteBatch(Vec<AddressedEntry>),
    /// Read one address.
    Read {
        /// The address.
        address: Address,
    },
    /// Read every address in `[from, to)`.
    ReadRange {
        /// First address.
        from: Address,
        /// One past the last address.
        to: Address,
    },
    /// Read a list of addresses.
    ReadBatch(Vec<Address>),
    /// Mark an address as junk if it is still unwritten.
    Fill {
        /// The address.
        address: Address,
    },
    /// Reject every request of an epoch lower than `epoch` from now on, and
    /// answer with the unit's tails.
    Seal {
        /// The new epoch.
        epoch: Epoch,
    },
    /// Answer the unit's tails without sealing.
    Tail,
    /// Discard every address below `address`.
    PrefixTrim {
        /// The new trim mark.
        address: Address,
    },
    /// Replace the unit's corrupt copy of `address` with `value`, the value
    /// a good member of its chain holds (read repair). Answered like a
    /// write: `Ok` once durable, `Overwritten` if the address holds a good
    /// copy already (a repair raced this one), `Trimmed`; an
    /// `InvalidRequest` error if the unit holds no corrupt copy of it (it
    /// never overwrites a good copy or decides an unwritten address).
    Repair {
        /// The address.
        address: Address,
        /// The chain's value for it.
        value: Existing,
    },
}

impl LogUnitRequest {
    /// Short name of the request kind, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            LogUnitRequest::Write(_) => "log_unit.write",
            LogUnitRequest::WriteBatch(_) => "log_unit.write_batch",
            LogUnitRequest::Read { .. } => "log_unit.read",
            LogUnitRequest::ReadRange { .. } => "log_unit.read_range",
            LogUnitRequest::ReadBatch(_) => "log_unit.read_batch",
            LogUnitRequest::Fill { .. } => "log_unit.fill",
            LogUnitRequest::Seal { .. } => "log_unit.seal",
            LogUnitRequest::Tail => "log_unit.tail",
            LogUnitRequest::PrefixTrim { .. } => "log_unit.prefix_trim",
            LogUnitRequest::Repair { .. } => "log_unit.repair",
        }
    }
}

/// An answer from a log unit.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum LogUnitResponse {
    /// Outcome of `Write` or `Fill`.
    Write(WriteOutcome),
    /// Outcomes of `WriteBatch`, in request order.
    WriteBatch(Vec<WriteOutcome>),
    /// Outcome of `Read`.
    Read(ReadOutcome),
    /// Outcomes of `ReadRange` and `ReadBatch`, one per address, in order.
    Reads(Vec<(Address, ReadOutcome)>),
    /// Answer to `Seal` and `Tail`.
    Tails(Tails),
    /// Answer to `PrefixTrim`: the unit's trim mark now.
    Trimmed {
        /// The trim mark after the request.
        trim_mark: Address,
    },
}
