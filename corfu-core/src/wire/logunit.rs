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

/// Bytes one outcome adds to a `Reads` answer, or one entry to a write
/// request, besides its payload and its stream headers, at most: the
/// address, the enum tags, the entry's id and vector headers, and the
/// padding that aligns them (checked against real encodings in the tests).
pub const OUTCOME_WIRE_BYTES: usize = 128;

/// Bytes one stream header takes in an archive: a 16-byte stream id
/// (16-aligned) and an optional backpointer. A record stores it in 24.
pub const STREAM_HEADER_WIRE_BYTES: usize = 32;

/// Bytes of a frame besides the outcomes or entries it carries, at most:
/// the request header or request id, the enum tags, the vector's header
/// and alignment. Read answers are budgeted to `frame_bytes_max` minus
/// this, and a frame must hold the largest entry plus this.
pub const FRAME_ENVELOPE_BYTES: usize = 1024;

/// Bytes an outcome carrying an entry of `payload` bytes in `streams`
/// streams adds to a `Reads` answer, at most (an upper bound of the
/// archive's size, which is what counts against `frame_bytes_max`).
pub const fn outcome_wire_bytes(payload: usize, streams: usize) -> usize {
    OUTCOME_WIRE_BYTES + STREAM_HEADER_WIRE_BYTES * streams + payload
}

impl Entry {
    /// Bytes the entry adds to a `Reads` answer or a write request, at
    /// most (see [`outcome_wire_bytes`]).
    pub fn wire_bytes(&self) -> usize {
        outcome_wire_bytes(self.payload.len(), self.streams.len())
    }
}

impl ReadOutcome {
    /// Bytes the outcome adds to a `Reads` answer, at most: log units stop
    /// adding outcomes to an answer by this measure.
    pub fn wire_bytes(&self) -> usize {
        match self {
            ReadOutcome::Data(entry) => entry.wire_bytes(),
            _ => OUTCOME_WIRE_BYTES,
        }
    }
}

/// The most bytes one entry can take in a frame when its record body (the
/// quantity `entry_bytes_max` limits, see
/// [`crate::logunit::record::body_len`]) is at most `body_bytes_max`:
/// every stream header it could hold costs 8 bytes more in an archive than
/// in a record.
pub fn entry_wire_bytes_max(body_bytes_max: u32) -> u64 {
    use crate::logunit::record::{body_len, STREAM_HEADER_BYTES};
    // Address, kind and stream count; an entry without an id leaves the
    // most bytes to payload and headers.
    let rest = u64::from(body_bytes_max).saturating_sub(body_len(0, 0, false) as u64);
    let streams = (rest / STREAM_HEADER_BYTES as u64).min(u64::from(u16::MAX));
    OUTCOME_WIRE_BYTES as u64
        + rest
        + (STREAM_HEADER_WIRE_BYTES - STREAM_HEADER_BYTES) as u64 * streams
}

/// Checks that an entry of the largest record body `entry_bytes_max`
/// allows fits a frame of `frame_bytes_max` with its envelope; the error
/// names both fields as `entry_field` and `frame_field` call them.
pub fn check_entry_fits_frame(
    entry_bytes_max: u32,
    frame_bytes_max: u32,
    entry_field: &str,
    frame_field: &str,
) -> Result<(), String> {
    let need = entry_wire_bytes_max(entry_bytes_max) + FRAME_ENVELOPE_BYTES as u64;
    if need > u64::from(frame_bytes_max) {
        return Err(format!(
            "field `{entry_field}`: an entry of {entry_bytes_max} bytes takes up to {need} bytes \
             in a frame, more than `{frame_field}` ({frame_bytes_max}) allows; raise \
             `{frame_field}` to at least {need} or lower `{entry_field}`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ClusterId;
    use crate::wire::frame::encode_frame;
    use crate::wire::{Header, Request, RequestFrame, Response, ResponseFrame, PROTOCOL_VERSION};

    fn entry(payload: usize, streams: usize, id: bool) -> Entry {
        Entry {
            id: id.then_some(AppendId { client: 9, seq: 3 }),
            streams: (0..streams)
                .map(|i| StreamHeader {
                    stream: StreamId(i as u128 * 7919),
                    backpointer: (i % 2 == 0).then_some(i as u64),
                })
                .collect(),
            payload: vec![0x5A; payload],
        }
    }

    /// Bytes counted against `frame_bytes_max`: the archive, without the
    /// length prefix.
    fn archive_len<T: crate::wire::frame::WireMessage>(value: &T) -> usize {
        encode_frame(value, u32::MAX).unwrap().len() - crate::wire::frame::LENGTH_PREFIX_BYTES
    }

    fn answer(outcomes: Vec<(Address, ReadOutcome)>) -> ResponseFrame {
        ResponseFrame {
            request_id: u64::MAX,
            body: Response::LogUnit(LogUnitResponse::Reads(outcomes)),
        }
    }

    fn write_request(entries: Vec<Entry>) -> RequestFrame {
        RequestFrame {
            header: Header {
                protocol_version: PROTOCOL_VERSION,
                cluster_id: ClusterId(u128::MAX),
                epoch: u64::MAX,
                request_id: u64::MAX,
            },
            body: Request::LogUnit(LogUnitRequest::WriteBatch(
                entries
                    .into_iter()
                    .enumerate()
                    .map(|(i, entry)| AddressedEntry {
                        address: u64::MAX - i as u64,
                        entry,
                    })
                    .collect(),
            )),
        }
    }

    /// The budget's figures are upper bounds of real archives: a read
    /// answer (or a write request) whose outcomes' `wire_bytes` add up to
    /// `b` encodes in at most `b + FRAME_ENVELOPE_BYTES` bytes, for every
    /// shape of entry (payload sizes off alignment, streams, ids, junk and
    /// holes mixed in).
    #[test]
    fn wire_bytes_bound_real_encodings() {
        let shapes = [
            (0, 0, false),
            (1, 0, true),
            (7, 1, true),
            (13, 3, false),
            (1000, 0, true),
            (1001, 64, true),
            (65_537, 2, false),
        ];
        for n in 1..=shapes.len() {
            let mut outcomes = Vec::new();
            let mut entries = Vec::new();
            for (k, &(payload, streams, id)) in shapes.iter().take(n).enumerate() {
                let e = entry(payload, streams, id);
                outcomes.push((u64::MAX - k as u64, ReadOutcome::Data(e.clone())));
                outcomes.push((k as u64, ReadOutcome::Junk));
                outcomes.push((k as u64, ReadOutcome::Unwritten));
                entries.push(e);
            }
            let bound: usize = outcomes.iter().map(|(_, o)| o.wire_bytes()).sum();
            let len = archive_len(&answer(outcomes));
            assert!(
                len <= bound + FRAME_ENVELOPE_BYTES,
                "{n} shapes: {len} > {bound}"
            );
            let bound: usize = entries.iter().map(Entry::wire_bytes).sum();
            let len = archive_len(&write_request(entries));
            assert!(
                len <= bound + FRAME_ENVELOPE_BYTES,
                "{n} entries: {len} > {bound}"
            );
        }
        // Many small outcomes: the per-outcome figure covers each.
        let many: Vec<(Address, ReadOutcome)> = (0..4096)
            .map(|a| (a, ReadOutcome::Data(entry((a % 9) as usize, 1, true))))
            .collect();
        let bound: usize = many.iter().map(|(_, o)| o.wire_bytes()).sum();
        assert!(archive_len(&answer(many)) <= bound + FRAME_ENVELOPE_BYTES);
    }

    /// `entry_wire_bytes_max` bounds every entry whose record body fits the
    /// limit, including the one with as many stream headers as fit.
    #[test]
    fn the_largest_entry_of_a_body_limit_is_bounded() {
        use crate::logunit::record::body_len;
        for body_max in [27u32, 100, 4096, 70_000] {
            let bound = entry_wire_bytes_max(body_max);
            for id in [false, true] {
                let fixed = body_len(0, 0, id);
                let rest = body_max as usize - fixed.min(body_max as usize);
                for streams in [0, 1, rest / 48, rest / 24] {
                    if 24 * streams > rest {
                        continue;
                    }
                    let payload = rest - 24 * streams;
                    let e = entry(payload, streams, id);
                    assert_eq!(body_len(payload, streams, id), body_max as usize);
                    assert!(e.wire_bytes() as u64 <= bound, "{body_max} {streams} {id}");
                    let frame = archive_len(&write_request(vec![e.clone()]));
                    let read = archive_len(&answer(vec![(1, ReadOutcome::Data(e))]));
                    let need = bound + FRAME_ENVELOPE_BYTES as u64;
                    assert!(frame as u64 <= need && read as u64 <= need);
                }
            }
        }
        // The defaults fit with room: 8 MiB entries in 16 MiB frames.
        check_entry_fits_frame(8 << 20, 16 << 20, "e", "f").unwrap();
        let e = check_entry_fits_frame(8 << 20, 8 << 20, "e", "f").unwrap_err();
        assert!(e.contains("raise `f` to at least"), "{e}");
    }
}
