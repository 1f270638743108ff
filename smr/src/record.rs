//! The payload of an entry in an object's stream.
//!
//! ```text
//! update:        [ 1 ][ op archive ]
//! tagged update: [ 2 ][ runtime id: u128 LE ][ sequence: u64 LE ][ op archive ]
//! transaction:   [ 3 ][ parts: u32 LE ] part*
//!   part:        [ stream: u128 LE ][ ops: u32 LE ] ( [ length: u32 LE ][ op archive ] )*
//! ```
//!
//! The first byte says what the entry is, so later kinds (transaction
//! commits, checkpoints) can share an object's stream with plain updates,
//! and an entry of an unknown kind is reported as such instead of being
//! misread as an op. A tagged update names the runtime that appended it and
//! a sequence number unique within that runtime: that runtime, and only
//! it, hands the state the op found to the caller waiting for it
//! ([`crate::Handle::update_and_read_prior`]). The tag never changes what
//! `apply` does.
//!
//! A transaction's commit is one entry in the stream of every object it
//! writes; it carries, per stream, the ops for that object, in the order
//! the transaction issued them. Each view applies only its own part, all
//! of it at the entry's address.

use corfu_core::types::StreamId;

use crate::codec::{Codec, CodecError};

/// First byte of an untagged update.
const KIND_UPDATE: u8 = 1;
/// First byte of a tagged update.
const KIND_UPDATE_TAGGED: u8 = 2;
/// First byte of a transaction commit.
const KIND_TRANSACTION: u8 = 3;
/// Bytes of a tag: runtime id (16) and sequence number (8).
const TAG_BYTES: usize = 24;

/// Who appended an update, for the caller waiting for its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tag {
    /// The appending runtime's random id.
    pub runtime: u128,
    /// Unique within that runtime.
    pub seq: u64,
}

/// An update entry, parsed but with its op still encoded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Update<'a> {
    pub tag: Option<Tag>,
    pub op: &'a [u8],
}

/// The payload of an update entry carrying `op`.
pub(crate) fn encode_update<O: Codec>(op: &O, tag: Option<Tag>) -> Result<Vec<u8>, CodecError> {
    let mut payload = Vec::with_capacity(1 + TAG_BYTES + 64);
    match tag {
        None => payload.push(KIND_UPDATE),
        Some(tag) => {
            payload.push(KIND_UPDATE_TAGGED);
            payload.extend_from_slice(&tag.runtime.to_le_bytes());
            payload.extend_from_slice(&tag.seq.to_le_bytes());
        }
    }
    op.encode_into(&mut payload)?;
    Ok(payload)
}

/// Splits a payload into its tag and op bytes; says why if it is not an
/// update entry.
pub(crate) fn parse(payload: &[u8]) -> Result<Update<'_>, String> {
    match payload.split_first() {
        None => Err("empty payload".into()),
        Some((&KIND_UPDATE, op)) => Ok(Update { tag: None, op }),
        Some((&KIND_UPDATE_TAGGED, rest)) => {
            if rest.len() < TAG_BYTES {
                return Err(format!(
                    "tagged update of {} bytes is shorter than its tag",
                    payload.len()
                ));
            }
            let (tag, op) = rest.split_at(TAG_BYTES);
            let (runtime, seq) = tag.split_at(16);
            let runtime = u128::from_le_bytes(runtime.try_into().map_err(|_| "tag".to_string())?);
            let seq = u64::from_le_bytes(seq.try_into().map_err(|_| "tag".to_string())?);
            Ok(Update {
                tag: Some(Tag { runtime, seq }),
                op,
            })
        }
        Some((kind, _)) => Err(format!(
            "unknown entry kind {kind} (written by another program or a newer version?)"
        )),
    }
}

/// Parses a payload and decodes its op.
#[cfg(test)]
pub(crate) fn decode_update<O: Codec>(payload: &[u8]) -> Result<(Option<Tag>, O), String> {
    let update = parse(payload)?;
    let op = O::decode(update.op).map_err(|e| format!("not an op of this type: {e}"))?;
    Ok((update.tag, op))
}

/// The payload of a transaction commit: per stream, its ops, each already
/// encoded. Fails only if a count or length does not fit in 32 bits.
pub(crate) fn encode_transaction(
    parts: &[(StreamId, Vec<Vec<u8>>)],
) -> Result<Vec<u8>, CodecError> {
    fn len32(n: usize) -> Result<[u8; 4], CodecError> {
        u32::try_from(n)
            .map(u32::to_le_bytes)
            .map_err(|_| CodecError(format!("{n} does not fit a transaction entry")))
    }
    let mut payload = vec![KIND_TRANSACTION];
    payload.extend_from_slice(&len32(parts.len())?);
    for (stream, ops) in parts {
        payload.extend_from_slice(&stream.0.to_le_bytes());
        payload.extend_from_slice(&len32(ops.len())?);
        for op in ops {
            payload.extend_from_slice(&len32(op.len())?);
            payload.extend_from_slice(op);
        }
    }
    Ok(payload)
}

/// Takes `n` bytes off the front of `bytes`.
fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if bytes.len() < n {
        return Err("transaction entry is truncated".into());
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Ok(head)
}

fn take_u32(bytes: &mut &[u8]) -> Result<usize, String> {
    let raw = take(bytes, 4)?;
    let value = u32::from_le_bytes(raw.try_into().map_err(|_| "length".to_string())?);
    usize::try_from(value).map_err(|_| "length".to_string())
}

/// The encoded ops of `stream`'s part of a transaction entry (`body` is
/// the payload after its kind byte).
fn transaction_part(mut body: &[u8], stream: StreamId) -> Result<Vec<&[u8]>, String> {
    let parts = take_u32(&mut body)?;
    for _ in 0..parts {
        let id = take(&mut body, 16)?;
        let id = u128::from_le_bytes(id.try_into().map_err(|_| "stream".to_string())?);
        let count = take_u32(&mut body)?;
        let mut ops = Vec::new();
        for _ in 0..count {
            let len = take_u32(&mut body)?;
            ops.push(take(&mut body, len)?);
        }
        if id == stream.0 {
            return Ok(ops);
        }
    }
    Err(format!("transaction entry has no part for stream {stream}"))
}

/// What an entry of an object's stream does to the object: the ops to
/// apply at its address, in order, and the tag of an update.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Decoded<O> {
    pub tag: Option<Tag>,
    pub ops: Vec<O>,
}

/// Parses an entry of `stream` (an update or a transaction commit) and
/// decodes the ops it applies to that stream's object.
pub(crate) fn decode_entry<O: Codec>(
    payload: &[u8],
    stream: StreamId,
) -> Result<Decoded<O>, String> {
    let decode =
        |bytes: &[u8]| O::decode(bytes).map_err(|e| format!("not an op of this type: {e}"));
    match payload.split_first() {
        Some((&KIND_TRANSACTION, body)) => {
            let ops = transaction_part(body, stream)?
                .into_iter()
                .map(decode)
                .collect::<Result<Vec<O>, String>>()?;
            Ok(Decoded { tag: None, ops })
        }
        _ => {
            let update = parse(payload)?;
            Ok(Decoded {
                tag: update.tag,
                ops: vec![decode(update.op)?],
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_round_trip_with_and_without_a_tag() {
        let plain = encode_update(&42u64, None).unwrap();
        assert_eq!(plain[0], KIND_UPDATE);
        assert_eq!(decode_update::<u64>(&plain).unwrap(), (None, 42));

        let tag = Tag {
            runtime: u128::MAX - 5,
            seq: 9,
        };
        let tagged = encode_update(&"op".to_string(), Some(tag)).unwrap();
        assert_eq!(tagged[0], KIND_UPDATE_TAGGED);
        assert_eq!(
            decode_update::<String>(&tagged).unwrap(),
            (Some(tag), "op".to_string())
        );
    }

    #[test]
    fn payloads_that_are_not_updates_are_refused_with_a_reason() {
        assert_eq!(parse(&[]).unwrap_err(), "empty payload");
        assert!(parse(&[7, 1, 2])
            .unwrap_err()
            .contains("unknown entry kind 7"));
        assert!(parse(&[KIND_UPDATE_TAGGED, 1, 2, 3])
            .unwrap_err()
            .contains("shorter than its tag"));
        let plain = encode_update(&42u64, None).unwrap();
        assert!(decode_update::<String>(&plain[..2])
            .unwrap_err()
            .contains("not an op of this type"));
    }

    #[test]
    fn transactions_carry_one_part_per_stream() {
        let (a, b, c) = (
            StreamId::from_name("a"),
            StreamId::from_name("b"),
            StreamId::from_name("c"),
        );
        let op = |v: u64| {
            let mut bytes = Vec::new();
            v.encode_into(&mut bytes).unwrap();
            bytes
        };
        let payload = encode_transaction(&[(a, vec![op(1), op(2)]), (b, vec![op(3)])]).unwrap();
        assert_eq!(payload[0], KIND_TRANSACTION);
        assert_eq!(
            decode_entry::<u64>(&payload, a).unwrap(),
            Decoded {
                tag: None,
                ops: vec![1, 2]
            }
        );
        assert_eq!(decode_entry::<u64>(&payload, b).unwrap().ops, vec![3]);
        assert!(decode_entry::<u64>(&payload, c)
            .unwrap_err()
            .contains("no part for stream"));
        // Every truncation fails cleanly (never a panic, never a wrong op).
        for len in 1..payload.len() {
            assert!(decode_entry::<u64>(&payload[..len], b).is_err(), "{len}");
        }
        // Updates decode through the same function.
        let update = encode_update(&9u64, None).unwrap();
        assert_eq!(decode_entry::<u64>(&update, c).unwrap().ops, vec![9]);
    }
}
