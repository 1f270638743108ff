//! The payload of an entry in an object's stream.
//!
//! ```text
//! update:        [ 1 ][ op archive ]
//! tagged update: [ 2 ][ runtime id: u128 LE ][ sequence: u64 LE ][ op archive ]
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

use crate::codec::{Codec, CodecError};

/// First byte of an untagged update.
const KIND_UPDATE: u8 = 1;
/// First byte of a tagged update.
const KIND_UPDATE_TAGGED: u8 = 2;
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
pub(crate) fn decode_update<O: Codec>(payload: &[u8]) -> Result<(Option<Tag>, O), String> {
    let update = parse(payload)?;
    let op = O::decode(update.op).map_err(|e| format!("not an op of this type: {e}"))?;
    Ok((update.tag, op))
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
}
