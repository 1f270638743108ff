//! The on-disk record of a log unit segment file, as pure functions.
//!
//! ```text
//! offset  size  field
//!      0     4  magic "CRF1" (0x31465243 little-endian)
//!      4     4  body length in bytes (little-endian)
//!      8     4  crc32c of the body
//!     12     8  body: address
//!     20     1        kind (1 = data, 2 = junk, 3 = data with an append id;
//!                           plus 0x10 in a repair record, see below)
//!     21     2        number of stream headers n
//!     23    16        kind 3 only: append id, client (8) then seq (8)
//!      .  24*n        stream headers: stream id (16), backpointer (8; u64::MAX = none)
//!      .     .        payload (the rest of the body)
//! ```
//!
//! Kind 1 is still read (entries without an id, as earlier versions wrote
//! every entry) and written for entries that carry no id.
//!
//! A *repair record* ([`encode_repair`]: the kind with [`REPAIR_FLAG`]
//! set) holds the chain's value written over a copy the unit found
//! corrupt; recovery takes it over any earlier record of its address (see
//! `FileStore`). Records without the flag are read as before.
//!
//! The checksum covers the whole body, so a torn or flipped record is never
//! taken for data.

use crate::types::{Address, StreamId};
use crate::wire::logunit::{AppendId, Entry, StreamHeader};

/// Marks the start of every record.
pub const MAGIC: u32 = u32::from_le_bytes(*b"CRF1");
/// Bytes before the body: magic, length, checksum.
pub const HEADER_BYTES: usize = 12;
/// Smallest body: address, kind, stream count.
pub const BODY_BYTES_MIN: usize = 11;
/// Bytes of one stream header in a record.
pub const STREAM_HEADER_BYTES: usize = 24;
const KIND_DATA: u8 = 1;
const KIND_JUNK: u8 = 2;
const KIND_DATA_WITH_ID: u8 = 3;
/// Set in the kind byte of a repair record.
pub const REPAIR_FLAG: u8 = 0x10;
const APPEND_ID_BYTES: usize = 16;

/// What an address holds on a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// A data entry.
    Data(Entry),
    /// Junk written by a fill.
    Junk,
}

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its address.
    pub address: Address,
    /// What it holds.
    pub value: Stored,
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Fewer bytes than the record needs (a torn tail, or read more).
    #[error("incomplete record: {have} of {need} bytes")]
    Incomplete {
        /// Bytes available.
        have: usize,
        /// Bytes needed (as far as known).
        need: usize,
    },
    /// The magic number is wrong: not a record boundary.
    #[error("bad magic {0:#010x}")]
    BadMagic(u32),
    /// The length field is impossible.
    #[error("bad body length {0}")]
    BadLength(u32),
    /// The checksum does not match the body.
    #[error("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    BadChecksum {
        /// From the header.
        stored: u32,
        /// Over the body.
        computed: u32,
        /// The address field as read. Not to be trusted: the field may be
        /// the damaged part (see [`corrected_address`]).
        address_hint: Option<Address>,
    },
    /// The checksum matches but the body is inconsistent.
    #[error("malformed body: {0}")]
    Malformed(&'static str),
}

/// Bytes of the body of a data record holding `payload` bytes in
/// `streams` streams, with an append id or not: the quantity a log unit's
/// `entry_bytes_max` limits (and a client's, which checks it before
/// sending).
pub const fn body_len(payload: usize, streams: usize, with_id: bool) -> usize {
    BODY_BYTES_MIN
        + if with_id { APPEND_ID_BYTES } else { 0 }
        + streams * STREAM_HEADER_BYTES
        + payload
}

/// Bytes the record of `value` takes.
pub fn encoded_len(value: &Stored) -> usize {
    HEADER_BYTES
        + match value {
            Stored::Data(e) => body_len(e.payload.len(), e.streams.len(), e.id.is_some()),
            Stored::Junk => BODY_BYTES_MIN,
        }
}

/// Appends the record of `value` at `address` to `out`. Entries with more
/// than `u16::MAX` streams or bodies over `u32::MAX` bytes are refused by
/// the caller's limits long before; they would be a bug here.
pub fn encode(address: Address, value: &Stored, out: &mut Vec<u8>) {
    encode_kind(address, value, 0, out);
}

/// Appends the repair record of `value` at `address` to `out`: a record
/// that replaces an earlier record of the address at recovery.
pub fn encode_repair(address: Address, value: &Stored, out: &mut Vec<u8>) {
    encode_kind(address, value, REPAIR_FLAG, out);
}

fn encode_kind(address: Address, value: &Stored, flags: u8, out: &mut Vec<u8>) {
    let start = out.len();
    out.reserve(encoded_len(value));
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&[0; 8]); // length and checksum, filled below
    out.extend_from_slice(&address.to_le_bytes());
    match value {
        Stored::Junk => {
            out.push(KIND_JUNK | flags);
            out.extend_from_slice(&0u16.to_le_bytes());
        }
        Stored::Data(entry) => {
            out.push(
                flags
                    | if entry.id.is_some() {
                        KIND_DATA_WITH_ID
                    } else {
                        KIND_DATA
                    },
            );
            let n = u16::try_from(entry.streams.len()).expect("stream count checked by the unit");
            out.extend_from_slice(&n.to_le_bytes());
            if let Some(id) = entry.id {
                out.extend_from_slice(&id.client.to_le_bytes());
                out.extend_from_slice(&id.seq.to_le_bytes());
            }
            for h in &entry.streams {
                out.extend_from_slice(&h.stream.0.to_le_bytes());
                out.extend_from_slice(&h.backpointer.unwrap_or(u64::MAX).to_le_bytes());
            }
            out.extend_from_slice(&entry.payload);
        }
    }
    let body_len = out.len() - start - HEADER_BYTES;
    let len = u32::try_from(body_len).expect("entry size checked by the unit");
    let crc = crc32c::crc32c(&out[start + HEADER_BYTES..]);
    out[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Reads the header at the start of `bytes`: the total record length.
pub fn record_len(bytes: &[u8], body_bytes_max: u32) -> Result<usize, RecordError> {
    if bytes.len() < HEADER_BYTES {
        return Err(RecordError::Incomplete {
            have: bytes.len(),
            need: HEADER_BYTES,
        });
    }
    let magic = u32_at(bytes, 0);
    if magic != MAGIC {
        return Err(RecordError::BadMagic(magic));
    }
    let len = u32_at(bytes, 4);
    if (len as usize) < BODY_BYTES_MIN || len > body_bytes_max {
        return Err(RecordError::BadLength(len));
    }
    Ok(HEADER_BYTES + len as usize)
}

/// What the record starting `bytes` adds to a read answer
/// ([`crate::wire::logunit::ReadOutcome::wire_bytes`]), from its header and
/// first body bytes alone, before the rest is read: `None` if `bytes` is
/// too short to tell. The checksum is not checked, so the figure is only a
/// hint; the record is checked when it is decoded.
pub fn peek_wire_bytes(bytes: &[u8]) -> Option<usize> {
    use crate::wire::logunit::{outcome_wire_bytes, OUTCOME_WIRE_BYTES};
    let body = bytes.get(HEADER_BYTES..HEADER_BYTES + BODY_BYTES_MIN)?;
    let len = u32_at(bytes, 4) as usize;
    let n = u16::from_le_bytes([body[9], body[10]]) as usize;
    Some(match body[8] & !REPAIR_FLAG {
        kind @ (KIND_DATA | KIND_DATA_WITH_ID) => outcome_wire_bytes(
            len.saturating_sub(headers_start(kind) + n * STREAM_HEADER_BYTES),
            n,
        ),
        _ => OUTCOME_WIRE_BYTES,
    })
}

/// The body of the record at the start of `bytes`, after checking its
/// header and checksum, and the record's total length.
fn checked_body(bytes: &[u8], body_bytes_max: u32) -> Result<(&[u8], usize), RecordError> {
    let total = record_len(bytes, body_bytes_max)?;
    if bytes.len() < total {
        return Err(RecordError::Incomplete {
            have: bytes.len(),
            need: total,
        });
    }
    let body = &bytes[HEADER_BYTES..total];
    let stored = u32_at(bytes, 8);
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(RecordError::BadChecksum {
            stored,
            computed,
            address_hint: Some(u64_at(body, 0)),
        });
    }
    Ok((body, total))
}

/// The address field of the record at the start of `bytes` as it reads,
/// whatever the checksum says (`None` if the bytes are too short). Only
/// as trustworthy as the checksum that covers it.
pub fn address_field(bytes: &[u8]) -> Option<Address> {
    bytes
        .get(HEADER_BYTES..HEADER_BYTES + 8)
        .map(|field| u64_at(field, 0))
}

/// The address of a whole record whose checksum fails, if the damage is
/// confined to its address field: the one address, differing from the
/// stored field in one byte, that makes the checksum hold (and the record
/// decode). Such a record is intact but for that field, so the address is
/// as trustworthy as any checked record's. `None` if the record is not
/// whole, if its checksum holds, or if no address or more than one does
/// (then the damage lies elsewhere, and the address field cannot be
/// trusted either).
///
/// Cheap whatever the record's size: the checksum is linear, so the effect
/// of changing the address field is computed from 64 precomputed values,
/// without checksumming the body again per candidate.
pub fn corrected_address(bytes: &[u8], body_bytes_max: u32) -> Option<Address> {
    let total = record_len(bytes, body_bytes_max).ok()?;
    let body = bytes.get(HEADER_BYTES..total)?;
    let stored = u32_at(bytes, 8);
    let computed = crc32c::crc32c(body);
    if stored == computed {
        return None;
    }
    // crc(body ^ (d || 0^n)) = crc(body) ^ shift_n(crc(d) ^ crc(0^8)), for
    // an 8-byte change d of the address field followed by n body bytes.
    let rest = body.len() - 8;
    let zero = crc32c::crc32c(&[0u8; 8]);
    let mut bit_effect = [0u32; 64];
    for (j, effect) in bit_effect.iter_mut().enumerate() {
        let d = (1u64 << j).to_le_bytes();
        *effect = crc32c::crc32c_combine(crc32c::crc32c(&d) ^ zero, 0, rest);
    }
    let wanted = stored ^ computed;
    let field = u64_at(body, 0);
    let mut found = None;
    for byte in 0..8 {
        for value in 1u64..=255 {
            let mut effect = 0;
            for k in 0..8 {
                if value & (1 << k) != 0 {
                    effect ^= bit_effect[byte * 8 + k];
                }
            }
            if effect == wanted {
                if found.is_some() {
                    return None;
                }
                found = Some(field ^ (value << (8 * byte)));
            }
        }
    }
    let address = found?;
    let mut fixed = bytes[..total].to_vec();
    fixed[HEADER_BYTES..HEADER_BYTES + 8].copy_from_slice(&address.to_le_bytes());
    scan(&fixed, body_bytes_max, |_| {}).ok()?;
    Some(address)
}

/// Where the stream headers of a data record of `kind` start in its body.
fn headers_start(kind: u8) -> usize {
    if kind == KIND_DATA_WITH_ID {
        BODY_BYTES_MIN + APPEND_ID_BYTES
    } else {
        BODY_BYTES_MIN
    }
}

/// Decodes the record at the start of `bytes`; returns it and its length.
pub fn decode(bytes: &[u8], body_bytes_max: u32) -> Result<(Record, usize), RecordError> {
    let (body, total) = checked_body(bytes, body_bytes_max)?;
    let address = u64_at(body, 0);
    let kind = body[8] & !REPAIR_FLAG;
    let n = u16::from_le_bytes([body[9], body[10]]) as usize;
    let value = match kind {
        KIND_JUNK => {
            if n != 0 || body.len() != BODY_BYTES_MIN {
                return Err(RecordError::Malformed("junk record with contents"));
            }
            Stored::Junk
        }
        KIND_DATA | KIND_DATA_WITH_ID => {
            let headers_start = headers_start(kind);
            let headers_end = headers_start + n * STREAM_HEADER_BYTES;
            if body.len() < headers_end {
                return Err(RecordError::Malformed("stream headers exceed the body"));
            }
            let id = (kind == KIND_DATA_WITH_ID).then(|| AppendId {
                client: u64_at(body, BODY_BYTES_MIN),
                seq: u64_at(body, BODY_BYTES_MIN + 8),
            });
            let mut streams = Vec::with_capacity(n);
            for i in 0..n {
                let at = headers_start + i * STREAM_HEADER_BYTES;
                let mut id = [0u8; 16];
                id.copy_from_slice(&body[at..at + 16]);
                let bp = u64_at(body, at + 16);
                streams.push(StreamHeader {
                    stream: StreamId(u128::from_le_bytes(id)),
                    backpointer: (bp != u64::MAX).then_some(bp),
                });
            }
            Stored::Data(Entry {
                id,
                streams,
                payload: body[headers_end..].to_vec(),
            })
        }
        _ => return Err(RecordError::Malformed("unknown kind")),
    };
    Ok((Record { address, value }, total))
}

/// What [`scan`] tells about a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    /// Its address.
    pub address: Address,
    /// Whether it holds junk.
    pub junk: bool,
    /// Whether it is a repair record ([`encode_repair`]).
    pub repair: bool,
    /// Its total length in bytes.
    pub len: usize,
}

/// The parts of a record needed to rebuild an index, read without
/// allocating: its address, whether it is junk or a repair, its streams,
/// its length. The checksum is verified.
pub fn scan(
    bytes: &[u8],
    body_bytes_max: u32,
    mut on_stream: impl FnMut(StreamId),
) -> Result<Scanned, RecordError> {
    let (body, total) = checked_body(bytes, body_bytes_max)?;
    let address = u64_at(body, 0);
    let n = u16::from_le_bytes([body[9], body[10]]) as usize;
    let repair = body[8] & REPAIR_FLAG != 0;
    let scanned = |junk| Scanned {
        address,
        junk,
        repair,
        len: total,
    };
    match body[8] & !REPAIR_FLAG {
        KIND_JUNK => Ok(scanned(true)),
        kind @ (KIND_DATA | KIND_DATA_WITH_ID) => {
            let headers_start = headers_start(kind);
            if body.len() < headers_start + n * STREAM_HEADER_BYTES {
                return Err(RecordError::Malformed("stream headers exceed the body"));
            }
            for i in 0..n {
                let at = headers_start + i * STREAM_HEADER_BYTES;
                let mut id = [0u8; 16];
                id.copy_from_slice(&body[at..at + 16]);
                on_stream(StreamId(u128::from_le_bytes(id)));
            }
            Ok(scanned(false))
        }
        _ => Err(RecordError::Malformed("unknown kind")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data(payload: &[u8], streams: &[(u128, Option<u64>)]) -> Stored {
        Stored::Data(Entry {
            id: None,
            streams: streams
                .iter()
                .map(|(s, bp)| StreamHeader {
                    stream: StreamId(*s),
                    backpointer: *bp,
                })
                .collect(),
            payload: payload.to_vec(),
        })
    }

    fn with_id(value: Stored, client: u64, seq: u64) -> Stored {
        match value {
            Stored::Data(mut e) => {
                e.id = Some(AppendId { client, seq });
                Stored::Data(e)
            }
            Stored::Junk => Stored::Junk,
        }
    }

    /// A read answer's budget is checked from a record's first bytes,
    /// before the record is read whole: the figure must be the decoded
    /// outcome's.
    #[test]
    fn a_records_header_tells_its_size_in_a_read_answer() {
        use crate::wire::logunit::ReadOutcome;
        for value in [
            Stored::Junk,
            data(b"", &[]),
            data(&[9; 5000], &[(1, None), (2, Some(3))]),
            with_id(data(&[1; 70], &[(5, Some(1))]), 3, 4),
            with_id(data(b"", &[]), 1, 1),
        ] {
            let mut bytes = Vec::new();
            encode(11, &value, &mut bytes);
            assert_eq!(encoded_len(&value), bytes.len());
            let outcome = match value {
                Stored::Data(e) => ReadOutcome::Data(e),
                Stored::Junk => ReadOutcome::Junk,
            };
            let head = &bytes[..HEADER_BYTES + BODY_BYTES_MIN];
            assert_eq!(peek_wire_bytes(head), Some(outcome.wire_bytes()));
            assert_eq!(peek_wire_bytes(&head[..head.len() - 1]), None);
        }
    }

    #[test]
    fn records_round_trip() {
        for (addr, value) in [
            (0, Stored::Junk),
            (7, data(b"", &[])),
            (
                u64::MAX - 1,
                data(b"hello", &[(1, None), (u128::MAX, Some(3))]),
            ),
            (3, with_id(data(b"", &[]), 1, 1)),
            (
                9,
                with_id(
                    data(b"payload", &[(5, Some(2)), (6, None)]),
                    u64::MAX,
                    u64::MAX,
                ),
            ),
        ] {
            let mut buf = Vec::new();
            encode(addr, &value, &mut buf);
            assert_eq!(buf.len(), encoded_len(&value));
            let (rec, used) = decode(&buf, 1 << 20).unwrap();
            assert_eq!(used, buf.len());
            let mut scanned = Vec::new();
            let s = scan(&buf, 1 << 20, |s| scanned.push(s)).unwrap();
            assert_eq!(
                (s.address, s.junk, s.repair, s.len),
                (addr, value == Stored::Junk, false, buf.len())
            );
            let streams: Vec<StreamId> = match &value {
                Stored::Data(e) => e.streams.iter().map(|h| h.stream).collect(),
                Stored::Junk => Vec::new(),
            };
            assert_eq!(scanned, streams);
            assert_eq!(
                rec,
                Record {
                    address: addr,
                    value
                }
            );
        }
    }

    #[test]
    fn repair_records_read_as_their_value_and_say_so() {
        for value in [
            Stored::Junk,
            data(b"repaired", &[(4, Some(2))]),
            with_id(data(b"x", &[]), 9, 10),
        ] {
            let mut plain = Vec::new();
            encode(77, &value, &mut plain);
            let mut buf = Vec::new();
            encode_repair(77, &value, &mut buf);
            assert_eq!(buf.len(), plain.len());
            assert_ne!(buf, plain);
            let (rec, used) = decode(&buf, 1 << 20).unwrap();
            assert_eq!((rec.address, &rec.value, used), (77, &value, buf.len()));
            let s = scan(&buf, 1 << 20, |_| {}).unwrap();
            assert_eq!(
                (s.address, s.junk, s.repair),
                (77, value == Stored::Junk, true)
            );
            assert!(!scan(&plain, 1 << 20, |_| {}).unwrap().repair);
            let head = &buf[..HEADER_BYTES + BODY_BYTES_MIN];
            assert_eq!(peek_wire_bytes(head), peek_wire_bytes(&plain));
        }
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let mut buf = Vec::new();
        encode(42, &data(b"payload bytes", &[(9, Some(1))]), &mut buf);
        encode(
            43,
            &with_id(data(b"more", &[(9, Some(42))]), 7, 8),
            &mut buf,
        );
        for i in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[i] ^= 1 << bit;
                let first = decode(&bad, 1 << 20);
                let both = first.and_then(|(_, used)| decode(&bad[used..], 1 << 20));
                assert!(
                    both.is_err(),
                    "flip of bit {bit} of byte {i} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn a_damaged_address_field_is_corrected_and_nothing_else_is() {
        let big = vec![7u8; 100_000];
        for value in [
            data(b"payload bytes", &[(9, Some(1))]),
            with_id(data(&big, &[(3, None)]), 5, 6),
            Stored::Junk,
        ] {
            let mut buf = Vec::new();
            encode(4242, &value, &mut buf);
            assert_eq!(corrected_address(&buf, 1 << 20), None, "intact");
            // Any change of one byte of the address field is undone.
            for byte in 0..8 {
                for flip in [1u8, 0x80, 0xff, 0x5a] {
                    let mut bad = buf.clone();
                    bad[HEADER_BYTES + byte] ^= flip;
                    assert!(decode(&bad, 1 << 20).is_err());
                    assert_eq!(
                        corrected_address(&bad, 1 << 20),
                        Some(4242),
                        "byte {byte} ^ {flip:#x}"
                    );
                }
            }
            // Damage elsewhere leaves the address unknown.
            let step = (buf.len() / 64).max(1);
            for at in (HEADER_BYTES + 8..buf.len()).step_by(step) {
                let mut bad = buf.clone();
                bad[at] ^= 0x10;
                assert_eq!(corrected_address(&bad, 1 << 20), None, "byte {at}");
            }
            // So does damage to the address field and elsewhere.
            let mut bad = buf.clone();
            bad[HEADER_BYTES] ^= 1;
            bad[buf.len() - 1] ^= 1;
            if bad.len() > HEADER_BYTES + 9 {
                assert_eq!(corrected_address(&bad, 1 << 20), None);
            }
        }
    }

    #[test]
    fn every_truncation_is_incomplete() {
        let mut buf = Vec::new();
        encode(42, &data(b"payload", &[]), &mut buf);
        for cut in 0..buf.len() {
            assert!(matches!(
                decode(&buf[..cut], 1 << 20),
                Err(RecordError::Incomplete { .. })
            ));
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes, 1 << 20);
        }
    }
}
