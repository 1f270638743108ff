//! The payload of an entry in an object's stream.
//!
//! ```text
//! update:        [ 4 ][ type ][ op archive ]
//! tagged update: [ 5 ][ type ][ runtime id: u128 LE ][ sequence: u64 LE ][ op archive ]
//! transaction:   [ 6 ][ parts: u32 LE ] part*
//!   part:        [ stream: u128 LE ][ type ][ ops: u32 LE ] ( [ length: u32 LE ][ op archive ] )*
//! type:          [ name length: u8 ][ name: UTF-8 ][ encoding version: u8 ]
//! ```
//!
//! The first byte says what the entry is, so later kinds (checkpoints)
//! can share an object's stream with updates, and an entry of an unknown
//! kind is reported as such instead of being misread as an op.
//!
//! **Every op names its object type** ([`StateMachine::TYPE`] and
//! [`StateMachine::VERSION`]): an update in its header, a transaction once
//! per part (a part holds the ops of one object, so of one type; parts of
//! one entry may be of different types). rkyv validation is no type check
//! (the archives of `SetOp<String>` and `QueueOp<String>` are
//! interchangeable), so playback compares the type before it decodes
//! anything, and an entry of another type or version is refused, never
//! applied. A checkpoint kind, once there is one, carries the same type
//! header. The cost is the name's length plus 2 bytes per op (11 for
//! `corfu.map`). Kinds 1 to 3 were the same entries without a type, written
//! before types were recorded; they are refused as such.
//!
//! A tagged update names the runtime that appended it and a sequence
//! number unique within that runtime: that runtime, and only it, hands the
//! state the op found to the caller waiting for it
//! ([`crate::Handle::update_and_read_prior`]). The tag never changes what
//! `apply` does.
//!
//! A transaction's commit is one entry in the stream of every object it
//! writes; it carries, per stream, the ops for that object, in the order
//! the transaction issued them. Each view applies only its own part, all
//! of it at the entry's address.

use corfu_core::types::StreamId;

use crate::codec::{Codec, CodecError};
use crate::object::StateMachine;

/// First byte of an untagged update.
const KIND_UPDATE: u8 = 4;
/// First byte of a tagged update.
const KIND_UPDATE_TAGGED: u8 = 5;
/// First byte of a transaction commit.
const KIND_TRANSACTION: u8 = 6;
/// The highest kind of the entries written before entries named their
/// object type (1 update, 2 tagged update, 3 transaction).
const KIND_UNTYPED_MAX: u8 = 3;
/// Bytes of a tag: runtime id (16) and sequence number (8).
const TAG_BYTES: usize = 24;

/// An object type as entries name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ObjectType {
    /// [`StateMachine::TYPE`].
    pub name: &'static str,
    /// [`StateMachine::VERSION`].
    pub version: u8,
}

impl ObjectType {
    /// The type of `T`'s entries.
    pub(crate) fn of<T: StateMachine>() -> ObjectType {
        ObjectType {
            name: T::TYPE,
            version: T::VERSION,
        }
    }

    /// Says why the name cannot be written, if it cannot.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.name.is_empty() || self.name.len() > usize::from(u8::MAX) {
            return Err(format!(
                "the object type name {:?} is {} bytes; it must be 1 to 255",
                self.name,
                self.name.len()
            ));
        }
        Ok(())
    }

    fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        self.check().map_err(CodecError)?;
        // Checked: the length fits a byte.
        out.push(self.name.len() as u8);
        out.extend_from_slice(self.name.as_bytes());
        out.push(self.version);
        Ok(())
    }

    /// Whether `found` names this type and version.
    fn matches(&self, found: &FoundType<'_>) -> bool {
        found.name == self.name.as_bytes() && found.version == self.version
    }
}

impl std::fmt::Display for ObjectType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} version {}", self.name, self.version)
    }
}

/// An object type as read from an entry (any bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FoundType<'a> {
    pub name: &'a [u8],
    pub version: u8,
}

impl std::fmt::Display for FoundType<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Debug quoting escapes whatever the bytes hold.
        let name = String::from_utf8_lossy(self.name);
        write!(f, "{name:?} version {}", self.version)
    }
}

/// Why an entry cannot be applied to an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EntryError {
    /// A well-formed entry of another object type (or version).
    WrongType {
        /// The type the entry names.
        found: String,
    },
    /// Not an entry this program can read.
    Malformed(String),
}

impl From<String> for EntryError {
    fn from(reason: String) -> Self {
        EntryError::Malformed(reason)
    }
}

impl From<&str> for EntryError {
    fn from(reason: &str) -> Self {
        EntryError::Malformed(reason.to_string())
    }
}

/// Who appended an update, for the caller waiting for its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tag {
    /// The appending runtime's random id.
    pub runtime: u128,
    /// Unique within that runtime.
    pub seq: u64,
}

/// The payload of an update entry of an object of type `ty` carrying `op`.
pub(crate) fn encode_update<O: Codec>(
    ty: ObjectType,
    op: &O,
    tag: Option<Tag>,
) -> Result<Vec<u8>, CodecError> {
    let mut payload = Vec::with_capacity(3 + ty.name.len() + TAG_BYTES + 64);
    match tag {
        None => {
            payload.push(KIND_UPDATE);
            ty.encode_into(&mut payload)?;
        }
        Some(tag) => {
            payload.push(KIND_UPDATE_TAGGED);
            ty.encode_into(&mut payload)?;
            payload.extend_from_slice(&tag.runtime.to_le_bytes());
            payload.extend_from_slice(&tag.seq.to_le_bytes());
        }
    }
    op.encode_into(&mut payload)?;
    Ok(payload)
}

/// The payload of a transaction commit: per stream, its object's type and
/// its ops, each already encoded. Fails only if a count or length does not
/// fit in 32 bits, or a type name cannot be written.
pub(crate) fn encode_transaction(
    parts: &[(StreamId, ObjectType, Vec<Vec<u8>>)],
) -> Result<Vec<u8>, CodecError> {
    fn len32(n: usize) -> Result<[u8; 4], CodecError> {
        u32::try_from(n)
            .map(u32::to_le_bytes)
            .map_err(|_| CodecError(format!("{n} does not fit a transaction entry")))
    }
    let mut payload = vec![KIND_TRANSACTION];
    payload.extend_from_slice(&len32(parts.len())?);
    for (stream, ty, ops) in parts {
        payload.extend_from_slice(&stream.0.to_le_bytes());
        ty.encode_into(&mut payload)?;
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
        return Err("entry is truncated".into());
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

fn take_type<'a>(bytes: &mut &'a [u8]) -> Result<FoundType<'a>, String> {
    let len = take(bytes, 1)?[0];
    let name = take(bytes, usize::from(len))?;
    let version = take(bytes, 1)?[0];
    Ok(FoundType { name, version })
}

/// An entry of a stream, parsed: the type and the still encoded ops of
/// that stream's object, and the tag of an update.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Parsed<'a> {
    pub tag: Option<Tag>,
    pub ty: FoundType<'a>,
    pub ops: Vec<&'a [u8]>,
}

/// Parses an entry of `stream` (an update or a transaction commit); says
/// why if it is neither.
pub(crate) fn parse_entry(payload: &[u8], stream: StreamId) -> Result<Parsed<'_>, String> {
    let Some((&kind, mut body)) = payload.split_first() else {
        return Err("empty payload".into());
    };
    match kind {
        KIND_UPDATE => {
            let ty = take_type(&mut body)?;
            Ok(Parsed {
                tag: None,
                ty,
                ops: vec![body],
            })
        }
        KIND_UPDATE_TAGGED => {
            let ty = take_type(&mut body)?;
            let runtime = take(&mut body, 16)?;
            let seq = take(&mut body, 8)?;
            let runtime = u128::from_le_bytes(runtime.try_into().map_err(|_| "tag".to_string())?);
            let seq = u64::from_le_bytes(seq.try_into().map_err(|_| "tag".to_string())?);
            Ok(Parsed {
                tag: Some(Tag { runtime, seq }),
                ty,
                ops: vec![body],
            })
        }
        KIND_TRANSACTION => {
            let parts = take_u32(&mut body)?;
            for _ in 0..parts {
                let id = take(&mut body, 16)?;
                let id = u128::from_le_bytes(id.try_into().map_err(|_| "stream".to_string())?);
                let ty = take_type(&mut body)?;
                let count = take_u32(&mut body)?;
                let mut ops = Vec::new();
                for _ in 0..count {
                    let len = take_u32(&mut body)?;
                    ops.push(take(&mut body, len)?);
                }
                if id == stream.0 {
                    return Ok(Parsed { tag: None, ty, ops });
                }
            }
            Err(format!("transaction entry has no part for stream {stream}"))
        }
        1..=KIND_UNTYPED_MAX => Err(format!(
            "an entry of kind {kind}, written before entries named their object type, \
             is not applied"
        )),
        kind => Err(format!(
            "unknown entry kind {kind} (written by another program or a newer version?)"
        )),
    }
}

/// Checks that an entry of `stream` is of type `expected`.
pub(crate) fn check_type(
    payload: &[u8],
    stream: StreamId,
    expected: ObjectType,
) -> Result<(), EntryError> {
    let parsed = parse_entry(payload, stream)?;
    if !expected.matches(&parsed.ty) {
        return Err(EntryError::WrongType {
            found: parsed.ty.to_string(),
        });
    }
    Ok(())
}

/// What an entry of an object's stream does to the object: the ops to
/// apply at its address, in order, and the tag of an update.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Decoded<O> {
    pub tag: Option<Tag>,
    pub ops: Vec<O>,
}

/// Parses an entry of `stream` (an update or a transaction commit), checks
/// that it is of type `expected`, and only then decodes the ops it applies
/// to that stream's object.
pub(crate) fn decode_entry<O: Codec>(
    payload: &[u8],
    stream: StreamId,
    expected: ObjectType,
) -> Result<Decoded<O>, EntryError> {
    let parsed = parse_entry(payload, stream)?;
    if !expected.matches(&parsed.ty) {
        return Err(EntryError::WrongType {
            found: parsed.ty.to_string(),
        });
    }
    let ops = parsed
        .ops
        .into_iter()
        .map(|bytes| O::decode(bytes).map_err(|e| format!("not an op of this type: {e}")))
        .collect::<Result<Vec<O>, String>>()?;
    Ok(Decoded {
        tag: parsed.tag,
        ops,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NUMBERS: ObjectType = ObjectType {
        name: "test.numbers",
        version: 1,
    };
    const WORDS: ObjectType = ObjectType {
        name: "test.words",
        version: 1,
    };

    /// Parses a payload of `NUMBERS`' stream "s" and decodes its one op.
    fn decode_update<O: Codec>(
        payload: &[u8],
        ty: ObjectType,
    ) -> Result<(Option<Tag>, O), EntryError> {
        let decoded = decode_entry::<O>(payload, StreamId::from_name("s"), ty)?;
        let [op]: [O; 1] = decoded.ops.try_into().map_err(|_| "not one op")?;
        Ok((decoded.tag, op))
    }

    fn malformed(e: EntryError) -> String {
        match e {
            EntryError::Malformed(reason) => reason,
            other => panic!("expected a malformed entry, got {other:?}"),
        }
    }

    #[test]
    fn updates_round_trip_with_and_without_a_tag() {
        let plain = encode_update(NUMBERS, &42u64, None).unwrap();
        assert_eq!(plain[0], KIND_UPDATE);
        // Kind, name length, name, version, then the archive.
        assert_eq!(plain[1] as usize, "test.numbers".len());
        assert_eq!(&plain[2..14], b"test.numbers");
        assert_eq!(plain[14], 1);
        assert_eq!(decode_update::<u64>(&plain, NUMBERS).unwrap(), (None, 42));

        let tag = Tag {
            runtime: u128::MAX - 5,
            seq: 9,
        };
        let tagged = encode_update(WORDS, &"op".to_string(), Some(tag)).unwrap();
        assert_eq!(tagged[0], KIND_UPDATE_TAGGED);
        assert_eq!(
            decode_update::<String>(&tagged, WORDS).unwrap(),
            (Some(tag), "op".to_string())
        );
    }

    #[test]
    fn entries_of_another_type_or_version_are_refused_before_decoding() {
        // The op would decode as a u64 either way: only the type tells.
        let words = encode_update(WORDS, &7u64, None).unwrap();
        assert_eq!(
            decode_update::<u64>(&words, NUMBERS).unwrap_err(),
            EntryError::WrongType {
                found: "\"test.words\" version 1".into()
            }
        );
        let newer = ObjectType {
            version: 2,
            ..NUMBERS
        };
        let v2 = encode_update(newer, &7u64, None).unwrap();
        assert_eq!(
            decode_update::<u64>(&v2, NUMBERS).unwrap_err(),
            EntryError::WrongType {
                found: "\"test.numbers\" version 2".into()
            }
        );
        assert_eq!(decode_update::<u64>(&v2, newer).unwrap(), (None, 7));
        // A name of any bytes is shown escaped, on one line.
        let mut odd = vec![KIND_UPDATE, 3, b'a', b'\n', 0xFF, 1];
        7u64.encode_into(&mut odd).unwrap();
        assert_eq!(
            decode_update::<u64>(&odd, NUMBERS).unwrap_err(),
            EntryError::WrongType {
                found: "\"a\\n\u{FFFD}\" version 1".into()
            }
        );
        // Type names that cannot be written are refused.
        let empty = ObjectType {
            name: "",
            version: 1,
        };
        assert!(encode_update(empty, &7u64, None).is_err());
        let long: &'static str = Box::leak("x".repeat(256).into_boxed_str());
        let long = ObjectType {
            name: long,
            version: 1,
        };
        assert!(long.check().unwrap_err().contains("256 bytes"));
        assert!(encode_transaction(&[(StreamId::from_name("s"), long, vec![])]).is_err());
    }

    #[test]
    fn payloads_that_are_not_entries_are_refused_with_a_reason() {
        let s = StreamId::from_name("s");
        assert_eq!(parse_entry(&[], s).unwrap_err(), "empty payload");
        assert!(parse_entry(&[9, 1, 2], s)
            .unwrap_err()
            .contains("unknown entry kind 9"));
        // The untyped entries of before: refused, and said so.
        let mut untyped = vec![1];
        7u64.encode_into(&mut untyped).unwrap();
        assert!(parse_entry(&untyped, s)
            .unwrap_err()
            .contains("before entries named their object type"));
        assert!(parse_entry(&[KIND_UPDATE_TAGGED, 1, b'a', 1, 2, 3], s)
            .unwrap_err()
            .contains("truncated"));
        assert!(parse_entry(&[KIND_UPDATE, 9, b'a'], s)
            .unwrap_err()
            .contains("truncated"));
        let plain = encode_update(NUMBERS, &42u64, None).unwrap();
        assert!(
            malformed(decode_update::<String>(&plain[..16], NUMBERS).unwrap_err())
                .contains("not an op of this type")
        );
    }

    #[test]
    fn transactions_carry_one_typed_part_per_stream() {
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
        // Two objects of different types in one entry.
        let payload =
            encode_transaction(&[(a, NUMBERS, vec![op(1), op(2)]), (b, WORDS, vec![op(3)])])
                .unwrap();
        assert_eq!(payload[0], KIND_TRANSACTION);
        assert_eq!(
            decode_entry::<u64>(&payload, a, NUMBERS).unwrap(),
            Decoded {
                tag: None,
                ops: vec![1, 2]
            }
        );
        assert_eq!(
            decode_entry::<u64>(&payload, b, WORDS).unwrap().ops,
            vec![3]
        );
        // Each part is checked against its own object's type.
        assert_eq!(
            decode_entry::<u64>(&payload, b, NUMBERS).unwrap_err(),
            EntryError::WrongType {
                found: "\"test.words\" version 1".into()
            }
        );
        assert_eq!(
            check_type(&payload, a, WORDS).unwrap_err(),
            EntryError::WrongType {
                found: "\"test.numbers\" version 1".into()
            }
        );
        assert!(check_type(&payload, a, NUMBERS).is_ok());
        assert!(
            malformed(decode_entry::<u64>(&payload, c, NUMBERS).unwrap_err())
                .contains("no part for stream")
        );
        // Every truncation fails cleanly (never a panic, never a wrong op).
        for len in 1..payload.len() {
            assert!(
                decode_entry::<u64>(&payload[..len], b, WORDS).is_err(),
                "{len}"
            );
        }
        // Updates decode through the same function.
        let update = encode_update(NUMBERS, &9u64, None).unwrap();
        assert_eq!(
            decode_entry::<u64>(&update, c, NUMBERS).unwrap().ops,
            vec![9]
        );
    }
}
