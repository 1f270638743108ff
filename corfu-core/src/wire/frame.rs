//! Framing: a little-endian `u32` length, then an rkyv archive.
//!
//! Decoding is a pure function of the bytes received, so it is tested
//! without a network: [`FrameDecoder`] accumulates bytes, cuts complete
//! frames, copies each into an aligned buffer and validates it with
//! `rkyv::access` (bytecheck) before deserializing. Any malformed, truncated
//! or oversized input is a [`FrameError`], never a panic; the transport then
//! closes the stream the frame came on.

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Default largest accepted frame (16 MiB): large enough for batched writes
/// of big entries, small enough that a hostile length cannot exhaust memory.
pub const FRAME_BYTES_MAX_DEFAULT: u32 = 16 << 20;

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than `frame_bytes_max`.
    #[error("frame of {len} bytes exceeds frame_bytes_max ({max} bytes)")]
    TooLarge {
        /// Announced length.
        len: u64,
        /// The configured maximum.
        max: u32,
    },
    /// The length prefix is zero: no archive can be empty.
    #[error("empty frame (length prefix 0)")]
    Empty,
    /// The archive failed validation (bytecheck) or deserialization.
    #[error("malformed frame: {0}")]
    Invalid(String),
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({buffered} bytes buffered)")]
    Truncated {
        /// Bytes received of the unfinished frame (prefix included).
        buffered: usize,
    },
    /// A message could not be serialized (for example it exceeds the frame
    /// limit).
    #[error("cannot encode frame: {0}")]
    Encode(String),
}

/// A type that can travel in a frame: serializable into an archive, and
/// checkable (bytecheck) and deserializable from one.
pub trait WireMessage: Sized {
    /// Serializes `self` into `scratch` (which must be empty).
    fn to_archive(&self, scratch: AlignedVec) -> Result<AlignedVec, rancor::Error>;
    /// Validates `aligned` as an archive of `Self` and deserializes it.
    fn from_archive(aligned: &[u8]) -> Result<Self, rancor::Error>;
}

impl<T> WireMessage for T
where
    T: Archive + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + Deserialize<T, HighDeserializer<rancor::Error>>,
{
    fn to_archive(&self, scratch: AlignedVec) -> Result<AlignedVec, rancor::Error> {
        rkyv::api::high::to_bytes_in::<_, rancor::Error>(self, scratch)
    }

    fn from_archive(aligned: &[u8]) -> Result<Self, rancor::Error> {
        let archived = rkyv::access::<T::Archived, rancor::Error>(aligned)?;
        rkyv::deserialize::<T, rancor::Error>(archived)
    }
}

/// Serializes frames, reusing one aligned scratch buffer.
#[derive(Debug, Default)]
pub struct FrameEncoder {
    scratch: AlignedVec,
}

impl FrameEncoder {
    /// A new encoder.
    pub fn new() -> FrameEncoder {
        FrameEncoder::default()
    }

    /// Appends `value` as one frame (prefix and archive) to `out`.
    pub fn encode<T: WireMessage>(
        &mut self,
        value: &T,
        frame_bytes_max: u32,
        out: &mut Vec<u8>,
    ) -> Result<(), FrameError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let scratch = value
            .to_archive(scratch)
            .map_err(|e| FrameError::Encode(e.to_string()))?;
        let len = scratch.len();
        let result = if len as u64 > u64::from(frame_bytes_max) {
            Err(FrameError::Encode(
                FrameError::TooLarge {
                    len: len as u64,
                    max: frame_bytes_max,
                }
                .to_string(),
            ))
        } else {
            out.reserve(LENGTH_PREFIX_BYTES + len);
            out.extend_from_slice(&(len as u32).to_le_bytes());
            out.extend_from_slice(&scratch);
            Ok(())
        };
        // Do not keep a huge scratch buffer alive after one big message.
        if scratch.capacity() <= 1 << 20 {
            self.scratch = scratch;
        }
        result
    }
}

/// Encodes one frame into a fresh buffer (convenience for tests and tools).
pub fn encode_frame<T: WireMessage>(
    value: &T,
    frame_bytes_max: u32,
) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    FrameEncoder::new().encode(value, frame_bytes_max, &mut out)?;
    Ok(out)
}

/// Validates and deserializes one archive (without its length prefix). The
/// bytes must start at an address aligned for the archive; [`FrameDecoder`]
/// guarantees that by copying into an [`AlignedVec`].
pub fn decode_archive<T: WireMessage>(aligned: &[u8]) -> Result<T, FrameError> {
    T::from_archive(aligned).map_err(|e| FrameError::Invalid(e.to_string()))
}

/// Cuts a byte stream into frames and decodes them.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
    frame_bytes_max: u32,
    aligned: AlignedVec,
}

impl FrameDecoder {
    /// A decoder refusing frames larger than `frame_bytes_max`.
    pub fn new(frame_bytes_max: u32) -> FrameDecoder {
        FrameDecoder {
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
            frame_bytes_max,
            aligned: AlignedVec::new(),
        }
    }

    /// Adds received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Decodes the next complete frame, if one is buffered. After an error
    /// the stream is unusable: the caller must close it.
    pub fn next_frame<T: WireMessage>(&mut self) -> Result<Option<T>, FrameError> {
        let available = &self.buf[self.start..];
        let Some(prefix) = available.get(..LENGTH_PREFIX_BYTES) else {
            return Ok(None);
        };
        let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > self.frame_bytes_max {
            return Err(FrameError::TooLarge {
                len: u64::from(len),
                max: self.frame_bytes_max,
            });
        }
        let end = LENGTH_PREFIX_BYTES + len as usize;
        let Some(archive) = available.get(LENGTH_PREFIX_BYTES..end) else {
            return Ok(None);
        };
        self.aligned.clear();
        self.aligned.extend_from_slice(archive);
        self.start += end;
        let value = decode_archive::<T>(&self.aligned);
        if self.aligned.capacity() > 1 << 20 {
            self.aligned = AlignedVec::new();
        }
        value.map(Some)
    }

    /// Checks that the stream ended on a frame boundary.
    pub fn finish(&self) -> Result<(), FrameError> {
        match self.buffered() {
            0 => Ok(()),
            buffered => Err(FrameError::Truncated { buffered }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ClusterId, StreamId};
    use crate::wire::logunit::{AddressedEntry, AppendId, Entry, LogUnitRequest, StreamHeader};
    use crate::wire::{Header, Request, RequestFrame, Response, ResponseFrame, PROTOCOL_VERSION};
    use proptest::prelude::*;

    fn header(request_id: u64) -> Header {
        Header {
            protocol_version: PROTOCOL_VERSION,
            cluster_id: ClusterId(7),
            epoch: 3,
            request_id,
        }
    }

    fn sample_frames() -> Vec<RequestFrame> {
        vec![
            RequestFrame {
                header: header(1),
                body: Request::Ping,
            },
            RequestFrame {
                header: header(2),
                body: Request::LogUnit(LogUnitRequest::WriteBatch(vec![
                    AddressedEntry {
                        address: 42,
                        entry: Entry {
                            id: Some(AppendId {
                                client: 0x0123_4567_89ab_cdef,
                                seq: 7,
                            }),
                            streams: vec![StreamHeader {
                                stream: StreamId::from_name("accounts"),
                                backpointer: Some(17),
                            }],
                            payload: b"hello world".to_vec(),
                        },
                    },
                    AddressedEntry {
                        address: 43,
                        entry: Entry {
                            id: None,
                            streams: vec![],
                            payload: vec![0xAB; 300],
                        },
                    },
                ])),
            },
            RequestFrame {
                header: header(3),
                body: Request::LogUnit(LogUnitRequest::ReadRange { from: 5, to: 90 }),
            },
        ]
    }

    fn encode_all(frames: &[RequestFrame]) -> Vec<u8> {
        let mut enc = FrameEncoder::new();
        let mut out = Vec::new();
        for f in frames {
            enc.encode(f, FRAME_BYTES_MAX_DEFAULT, &mut out).unwrap();
        }
        out
    }

    /// Feeds `bytes` to a decoder in chunks of `chunk` bytes and decodes until
    /// the first error. Returns what was decoded and the error, if any.
    fn decode_all(bytes: &[u8], chunk: usize, max: u32) -> (Vec<RequestFrame>, Option<FrameError>) {
        let mut dec = FrameDecoder::new(max);
        let mut frames = Vec::new();
        for piece in bytes.chunks(chunk.max(1)) {
            dec.extend(piece);
            loop {
                match dec.next_frame::<RequestFrame>() {
                    Ok(Some(f)) => frames.push(f),
                    Ok(None) => break,
                    Err(e) => return (frames, Some(e)),
                }
            }
        }
        let end = dec.finish().err();
        (frames, end)
    }

    #[test]
    fn frames_round_trip_in_any_chunking() {
        let frames = sample_frames();
        let bytes = encode_all(&frames);
        for chunk in [1, 2, 3, 7, 64, 1000, bytes.len()] {
            let (decoded, err) = decode_all(&bytes, chunk, FRAME_BYTES_MAX_DEFAULT);
            assert_eq!(err, None, "chunk {chunk}");
            assert_eq!(decoded, frames, "chunk {chunk}");
        }
    }

    #[test]
    fn response_frames_round_trip() {
        let frame = ResponseFrame {
            request_id: 9,
            body: Response::WrongEpoch { current: 12 },
        };
        let bytes = encode_frame(&frame, FRAME_BYTES_MAX_DEFAULT).unwrap();
        let mut dec = FrameDecoder::new(FRAME_BYTES_MAX_DEFAULT);
        dec.extend(&bytes);
        assert_eq!(dec.next_frame::<ResponseFrame>().unwrap(), Some(frame));
        assert_eq!(dec.next_frame::<ResponseFrame>().unwrap(), None);
    }

    #[test]
    fn oversized_length_is_refused_before_buffering() {
        let mut dec = FrameDecoder::new(1024);
        dec.extend(&u32::MAX.to_le_bytes());
        assert_eq!(
            dec.next_frame::<RequestFrame>(),
            Err(FrameError::TooLarge {
                len: u64::from(u32::MAX),
                max: 1024
            })
        );
    }

    #[test]
    fn zero_length_is_refused() {
        let mut dec = FrameDecoder::new(1024);
        dec.extend(&[0, 0, 0, 0, 1, 2, 3]);
        assert_eq!(dec.next_frame::<RequestFrame>(), Err(FrameError::Empty));
    }

    #[test]
    fn truncated_stream_is_reported() {
        let bytes = encode_all(&sample_frames());
        let cut = &bytes[..bytes.len() - 3];
        let (decoded, err) = decode_all(cut, 16, FRAME_BYTES_MAX_DEFAULT);
        assert_eq!(decoded.len(), 2);
        assert!(matches!(err, Some(FrameError::Truncated { .. })), "{err:?}");
    }

    #[test]
    fn encoder_refuses_frames_above_the_limit() {
        let frame = RequestFrame {
            header: header(1),
            body: Request::LogUnit(LogUnitRequest::Write(AddressedEntry {
                address: 0,
                entry: Entry {
                    id: None,
                    streams: vec![],
                    payload: vec![1; 4096],
                },
            })),
        };
        assert!(matches!(
            encode_frame(&frame, 1024),
            Err(FrameError::Encode(_))
        ));
    }

    #[test]
    fn garbage_archive_is_invalid_not_a_panic() {
        let mut bytes = 8u32.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0xFF; 8]);
        let (decoded, err) = decode_all(&bytes, 100, FRAME_BYTES_MAX_DEFAULT);
        assert!(decoded.is_empty());
        assert!(matches!(err, Some(FrameError::Invalid(_))), "{err:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 5000, .. ProptestConfig::default() })]

        /// Random bytes: the decoder returns frames or an error, never panics,
        /// and never returns a frame it did not validate.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048),
                                    chunk in 1usize..300) {
            let (frames, _err) = decode_all(&bytes, chunk, 4096);
            // Every decoded frame re-encodes to a valid frame (it is a real value).
            for f in frames {
                let re = encode_frame(&f, FRAME_BYTES_MAX_DEFAULT).unwrap();
                let (again, err) = decode_all(&re, re.len(), FRAME_BYTES_MAX_DEFAULT);
                prop_assert_eq!(err, None);
                prop_assert_eq!(again, vec![f]);
            }
        }

        /// Valid frames with bytes flipped, inserted, removed or truncated.
        #[test]
        fn mutated_frames_never_panic(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..12),
            cut in any::<prop::sample::Index>(),
            do_cut in any::<bool>(),
            insert in proptest::option::of((any::<prop::sample::Index>(), proptest::collection::vec(any::<u8>(), 1..16))),
            chunk in 1usize..200,
        ) {
            let mut bytes = encode_all(&sample_frames());
            for (at, x) in &flips {
                let i = at.index(bytes.len());
                bytes[i] ^= x;
            }
            if let Some((at, extra)) = &insert {
                let i = at.index(bytes.len());
                bytes.splice(i..i, extra.iter().copied());
            }
            if do_cut {
                let n = cut.index(bytes.len());
                bytes.truncate(n);
            }
            let (frames, err) = decode_all(&bytes, chunk, FRAME_BYTES_MAX_DEFAULT);
            prop_assert!(frames.len() <= 3 + insert.iter().count());
            if flips.iter().all(|(_, x)| *x == 0) && insert.is_none() && !do_cut {
                prop_assert_eq!(err, None);
                prop_assert_eq!(frames, sample_frames());
            }
        }
    }
}
