//! An in-memory shared log with the semantics of the real one, so the
//! runtime's rules are tested deterministically and without a network.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use corfu_core::client::ClientError;
use corfu_core::types::{Address, StreamId};
use corfu_core::wire::sequencer::{ConflictKey, TxnCondition};

use crate::log::SharedLog;

/// A shared log held in memory: one process, no durability, no failures
/// unless a test injects them. Clones share the log, so several runtimes
/// built on clones of one `MemoryLog` behave like processes sharing a
/// cluster.
///
/// Every call yields to the async scheduler once before it acts, like the
/// network round trip of the real client, so concurrent callers
/// interleave.
///
/// Conditional appends follow the sequencer's rule: the log keeps, per
/// conflict key, the last address a conditional append wrote it at, and
/// refuses a condition whose snapshot is below the floor
/// ([`raise_floor`](MemoryLog::raise_floor), 0 at first) or one of whose
/// read-set keys was written above the snapshot. Plain appends record no
/// keys. Unlike the sequencer, the table is never bounded.
#[derive(Clone, Default)]
pub struct MemoryLog {
    inner: Arc<Mutex<Log>>,
}

#[derive(Default)]
struct Log {
    /// Indexed by address; every address below `slots.len()` is granted.
    slots: Vec<Slot>,
    /// Per stream, its addresses in ascending order (the sequencer's
    /// stream index).
    streams: HashMap<StreamId, Vec<Address>>,
    /// Per conflict key, the last address a conditional append wrote it.
    last_write: HashMap<ConflictKey, Address>,
    /// Conditional appends with a snapshot below it abort.
    floor: Address,
}

enum Slot {
    Data(Vec<u8>),
    /// A granted address that was filled with junk.
    Junk,
}

impl std::fmt::Debug for MemoryLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let log = self.lock();
        f.debug_struct("MemoryLog")
            .field("tail", &log.slots.len())
            .field("streams", &log.streams.len())
            .finish()
    }
}

impl MemoryLog {
    /// An empty log.
    pub fn new() -> MemoryLog {
        MemoryLog::default()
    }

    /// Grants the next address to `streams` and fills it with junk, as a
    /// reader does when the writer that took the token never wrote (CORFU
    /// hole filling). The streams' tails move to it; stream reads skip it.
    pub fn fill_junk(&self, streams: &[StreamId]) -> Address {
        self.lock().grant(Slot::Junk, streams)
    }

    /// Raises the transaction floor to `floor` (never lowers it), as the
    /// sequencer does when it forgets keys or bootstraps: conditional
    /// appends whose snapshot is below it abort.
    pub fn raise_floor(&self, floor: Address) {
        let mut log = self.lock();
        log.floor = log.floor.max(floor);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        // Nothing panics while the lock is held; a poisoned lock still
        // holds a consistent log.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Log {
    fn grant(&mut self, slot: Slot, streams: &[StreamId]) -> Address {
        let address = self.slots.len() as Address;
        self.slots.push(slot);
        let mut seen = Vec::with_capacity(streams.len());
        for stream in streams {
            // An entry belongs to a stream once, however often it is named.
            if !seen.contains(stream) {
                seen.push(*stream);
                self.streams.entry(*stream).or_default().push(address);
            }
        }
        address
    }

    /// The sequencer's conditional token: checks `condition`, then grants
    /// and records the write set.
    fn grant_conditional(
        &mut self,
        payload: Vec<u8>,
        streams: &[StreamId],
        condition: &TxnCondition,
    ) -> Result<Address, ClientError> {
        if condition.snapshot < self.floor {
            return Err(ClientError::Aborted {
                conflict: None,
                address: self.floor,
            });
        }
        for key in &condition.read_set {
            if let Some(&written) = self.last_write.get(key) {
                if written > condition.snapshot {
                    return Err(ClientError::Aborted {
                        conflict: Some(*key),
                        address: written,
                    });
                }
            }
        }
        let address = self.grant(Slot::Data(payload), streams);
        for key in &condition.write_set {
            self.last_write.insert(*key, address);
        }
        Ok(address)
    }
}

#[async_trait]
impl SharedLog for MemoryLog {
    async fn append(&self, payload: Vec<u8>, streams: &[StreamId]) -> Result<Address, ClientError> {
        tokio::task::yield_now().await;
        Ok(self.lock().grant(Slot::Data(payload), streams))
    }

    async fn append_conditional(
        &self,
        payload: Vec<u8>,
        streams: &[StreamId],
        condition: &TxnCondition,
    ) -> Result<Address, ClientError> {
        tokio::task::yield_now().await;
        self.lock().grant_conditional(payload, streams, condition)
    }

    async fn tail(&self) -> Result<Address, ClientError> {
        tokio::task::yield_now().await;
        Ok(self.lock().slots.len() as Address)
    }

    async fn stream_tail(&self, stream: StreamId) -> Result<Option<Address>, ClientError> {
        tokio::task::yield_now().await;
        Ok(self
            .lock()
            .streams
            .get(&stream)
            .and_then(|addresses| addresses.last().copied()))
    }

    async fn read_stream(
        &self,
        stream: StreamId,
        from: Address,
        to: Address,
    ) -> Result<Vec<(Address, Vec<u8>)>, ClientError> {
        if to < from {
            return Err(ClientError::InvalidArgument(format!(
                "range [{from}, {to}) is reversed"
            )));
        }
        tokio::task::yield_now().await;
        let log = self.lock();
        let Some(addresses) = log.streams.get(&stream) else {
            return Ok(Vec::new());
        };
        let start = addresses.partition_point(|a| *a < from);
        let end = addresses.partition_point(|a| *a < to);
        Ok(addresses[start..end]
            .iter()
            .filter_map(|&address| match log.slots.get(address as usize) {
                Some(Slot::Data(payload)) => Some((address, payload.clone())),
                Some(Slot::Junk) | None => None,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn streams_tails_and_junk_behave_like_the_log() {
        let log = MemoryLog::new();
        let a = StreamId::from_name("a");
        let b = StreamId::from_name("b");
        assert_eq!(log.tail().await.unwrap(), 0);
        assert_eq!(log.stream_tail(a).await.unwrap(), None);

        assert_eq!(log.append(b"a0".to_vec(), &[a]).await.unwrap(), 0);
        assert_eq!(log.append(b"b1".to_vec(), &[b]).await.unwrap(), 1);
        assert_eq!(log.append(b"ab2".to_vec(), &[a, b, a]).await.unwrap(), 2);
        assert_eq!(log.fill_junk(&[a]), 3);
        assert_eq!(log.append(b"none".to_vec(), &[]).await.unwrap(), 4);

        assert_eq!(log.tail().await.unwrap(), 5);
        assert_eq!(log.stream_tail(a).await.unwrap(), Some(3));
        assert_eq!(log.stream_tail(b).await.unwrap(), Some(2));
        assert_eq!(
            log.read_stream(a, 0, 5).await.unwrap(),
            vec![(0, b"a0".to_vec()), (2, b"ab2".to_vec())]
        );
        assert_eq!(
            log.read_stream(b, 2, 3).await.unwrap(),
            vec![(2, b"ab2".to_vec())]
        );
        assert!(log.read_stream(a, 1, 2).await.unwrap().is_empty());
        assert!(log.read_stream(a, 3, 3).await.unwrap().is_empty());
        assert!(matches!(
            log.read_stream(a, 3, 2).await,
            Err(ClientError::InvalidArgument(_))
        ));
    }

    fn key(stream: StreamId, key_hash: u64) -> ConflictKey {
        ConflictKey { stream, key_hash }
    }

    fn condition(snapshot: Address, read: &[ConflictKey], write: &[ConflictKey]) -> TxnCondition {
        TxnCondition {
            snapshot,
            read_set: read.to_vec(),
            write_set: write.to_vec(),
        }
    }

    #[tokio::test]
    async fn conditional_appends_follow_the_sequencers_rule() {
        let log = MemoryLog::new();
        let s = StreamId::from_name("s");
        let (k1, k2) = (key(s, 1), key(s, 2));
        // Plain appends record no keys.
        assert_eq!(log.append(b"p".to_vec(), &[s]).await.unwrap(), 0);
        assert_eq!(
            log.append_conditional(b"w1".to_vec(), &[s], &condition(0, &[k1], &[k1]))
                .await
                .unwrap(),
            1
        );
        // k1 was written at 1: a snapshot at 1 (inclusive) commits, one at
        // 0 does not, and the abort names the key and where it was written.
        assert!(matches!(
            log.append_conditional(b"x".to_vec(), &[s], &condition(0, &[k2, k1], &[k2]))
                .await,
            Err(ClientError::Aborted { conflict: Some(k), address: 1 }) if k == k1
        ));
        assert_eq!(log.tail().await.unwrap(), 2, "an abort appends nothing");
        assert_eq!(
            log.append_conditional(b"w2".to_vec(), &[s], &condition(1, &[k1], &[k2]))
                .await
                .unwrap(),
            2
        );
        // Writing a key is not reading it: a blind write never conflicts.
        assert_eq!(
            log.append_conditional(b"w3".to_vec(), &[s], &condition(0, &[], &[k1, k2]))
                .await
                .unwrap(),
            3
        );
        log.raise_floor(3);
        assert!(matches!(
            log.append_conditional(b"y".to_vec(), &[s], &condition(2, &[], &[]))
                .await,
            Err(ClientError::Aborted {
                conflict: None,
                address: 3
            })
        ));
        log.raise_floor(1);
        assert_eq!(
            log.append_conditional(b"z".to_vec(), &[s], &condition(3, &[k1, k2], &[]))
                .await
                .unwrap(),
            4,
            "the floor never goes down, and nothing was written above 3"
        );
        assert_eq!(log.read_stream(s, 0, 5).await.unwrap().len(), 5);
    }
}
