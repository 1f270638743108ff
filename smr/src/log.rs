//! What the runtime needs from the shared log, as a trait, with the real
//! log client as one implementation and [`MemoryLog`](crate::MemoryLog) as
//! its in-memory twin.
//!
//! The trait is object safe (through `async-trait`): a [`Runtime`] holds an
//! `Arc<dyn SharedLog>`, so `Runtime` and `Handle<T>` carry no log type
//! parameter and a service can keep handles in its state without being
//! generic over the log. The price is one boxed future per log call, which
//! is noise next to a network round trip.
//!
//! [`Runtime`]: crate::Runtime

use async_trait::async_trait;
use corfu_core::client::{ClientError, LogClient};
use corfu_core::types::{Address, StreamId};
use corfu_core::wire::sequencer::TxnCondition;

/// The operations of the shared log that replicated objects use. Every
/// implementation keeps the log's guarantees:
///
/// - an acknowledged append is at exactly one address, and every later
///   [`stream_tail`](SharedLog::stream_tail) of its streams is at or
///   above it;
/// - [`read_stream`](SharedLog::read_stream) returns every entry of the
///   stream in the range, each once, in address order, and waits for (or
///   completes) entries that were granted but are not written yet;
/// - a value at an address never changes (write-once).
#[async_trait]
pub trait SharedLog: Send + Sync + 'static {
    /// Appends `payload` as a member of `streams`; returns its address once
    /// the entry is durable and readable.
    async fn append(&self, payload: Vec<u8>, streams: &[StreamId]) -> Result<Address, ClientError>;

    /// Appends `payload` as a member of `streams` only if `condition`
    /// holds (a conditional token, Tango §4): `condition.snapshot` is at
    /// or above the log's transaction floor and no key of
    /// `condition.read_set` was written by a conditional append at an
    /// address above `condition.snapshot`. When granted, every key of
    /// `condition.write_set` is recorded as written at the returned
    /// address. Otherwise the answer is [`ClientError::Aborted`] and
    /// nothing is in the log.
    async fn append_conditional(
        &self,
        payload: Vec<u8>,
        streams: &[StreamId],
        condition: &TxnCondition,
    ) -> Result<Address, ClientError>;

    /// The log's tail: the next address to be granted. Every address below
    /// it was granted.
    async fn tail(&self) -> Result<Address, ClientError>;

    /// The last address granted to `stream`, if any (it may hold junk if
    /// its writer never completed it).
    async fn stream_tail(&self, stream: StreamId) -> Result<Option<Address>, ClientError>;

    /// The payloads of the entries of `stream` in `[from, to)`, in address
    /// order; junk is skipped.
    async fn read_stream(
        &self,
        stream: StreamId,
        from: Address,
        to: Address,
    ) -> Result<Vec<(Address, Vec<u8>)>, ClientError>;

    /// If `address` lies in a range the log declares void (never written,
    /// never to be: after a sequencer failover, see
    /// [`corfu_core::layout::Void`]), the end of that range. Playback
    /// steps over voids at once instead of reading them range by range
    /// (one can span 2^40 addresses). No I/O.
    fn void_end(&self, _address: Address) -> Option<Address> {
        None
    }
}

#[async_trait]
impl SharedLog for LogClient {
    async fn append(&self, payload: Vec<u8>, streams: &[StreamId]) -> Result<Address, ClientError> {
        LogClient::append(self, payload, streams).await
    }

    async fn append_conditional(
        &self,
        payload: Vec<u8>,
        streams: &[StreamId],
        condition: &TxnCondition,
    ) -> Result<Address, ClientError> {
        LogClient::append_conditional(self, payload, streams, condition).await
    }

    async fn tail(&self) -> Result<Address, ClientError> {
        LogClient::tail(self).await
    }

    async fn stream_tail(&self, stream: StreamId) -> Result<Option<Address>, ClientError> {
        LogClient::stream_tail(self, stream).await
    }

    async fn read_stream(
        &self,
        stream: StreamId,
        from: Address,
        to: Address,
    ) -> Result<Vec<(Address, Vec<u8>)>, ClientError> {
        Ok(LogClient::read_stream(self, stream, from, to)
            .await?
            .into_iter()
            .map(|(address, entry)| (address, entry.payload))
            .collect())
    }

    fn void_end(&self, address: Address) -> Option<Address> {
        self.layout().void_end(address)
    }
}
