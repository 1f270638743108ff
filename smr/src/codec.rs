//! How ops travel in the log: rkyv 0.8 archives, validated (bytecheck)
//! before they are deserialized, exactly as the wire protocol's frames are.
//! The archive format (endianness, alignment, pointer width) is pinned once
//! for the whole workspace in the root `Cargo.toml`.

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

/// An op could not be encoded, or bytes are not a valid archive of the
/// expected type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(pub String);

/// A value that can be written to the log and read back: implemented for
/// every type that derives rkyv's `Archive`, `Serialize` and `Deserialize`
/// (the archived type then checks its bytes with bytecheck).
pub trait Codec: Sized {
    /// Appends the archive of `self` to `out`.
    fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), CodecError>;

    /// Validates `bytes` as an archive of `Self` and deserializes it.
    /// Malformed input is an error, never a panic.
    fn decode(bytes: &[u8]) -> Result<Self, CodecError>;
}

impl<T> Codec for T
where
    T: Archive + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + Deserialize<T, HighDeserializer<rancor::Error>>,
{
    fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let archive =
            rkyv::to_bytes::<rancor::Error>(self).map_err(|e| CodecError(e.to_string()))?;
        out.extend_from_slice(&archive);
        Ok(())
    }

    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        // Log payloads carry no alignment guarantee; archives need one.
        let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        let archived = rkyv::access::<T::Archived, rancor::Error>(&aligned)
            .map_err(|e| CodecError(e.to_string()))?;
        rkyv::deserialize::<T, rancor::Error>(archived).map_err(|e| CodecError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Archive, Serialize, Deserialize, Debug, PartialEq)]
    enum Op {
        Put { key: String, value: u64 },
        Clear,
    }

    #[test]
    fn round_trips_at_any_alignment() {
        let op = Op::Put {
            key: "alice".into(),
            value: 7,
        };
        let mut bytes = vec![0xAA];
        op.encode_into(&mut bytes).unwrap();
        // Offset by one byte: decoding must not depend on the input's alignment.
        assert_eq!(Op::decode(&bytes[1..]).unwrap(), op);
        let mut clear = Vec::new();
        Op::Clear.encode_into(&mut clear).unwrap();
        assert_eq!(Op::decode(&clear).unwrap(), Op::Clear);
    }

    #[test]
    fn malformed_bytes_are_errors() {
        let mut bytes = Vec::new();
        Op::Put {
            key: "alice".into(),
            value: 7,
        }
        .encode_into(&mut bytes)
        .unwrap();
        assert!(Op::decode(&[]).is_err());
        assert!(Op::decode(&[0xFF; 3]).is_err());
        // Every truncation and every single-byte corruption either decodes
        // or fails cleanly; none panics.
        for len in 0..bytes.len() {
            let _ = Op::decode(&bytes[..len]);
        }
        for i in 0..bytes.len() {
            let mut corrupt = bytes.clone();
            corrupt[i] ^= 0xFF;
            let _ = Op::decode(&corrupt);
        }
        // Too short for the archived type.
        let mut small = Vec::new();
        7u8.encode_into(&mut small).unwrap();
        assert!(u64::decode(&small).is_err());
    }
}
