//! The log unit role as a [`Service`]: maps wire requests onto a
//! [`LogStore`], and acknowledges writes only once they are durable.
//!
//! Reads, tails and writes that need no sync are answered at once
//! ([`Service::handle_now`]); writes under `sync = always` wait for their
//! group commit; seals and trims, which write the meta file with `fsync`,
//! run on the blocking pool.
//!
//! Epochs (CORFU §3.4): a request below the unit's sealed epoch answers
//! `WrongEpoch` (the client is fenced); a request above it answers an
//! `Unavailable` error, because the unit was not sealed into that epoch and
//! may hold stale data (see [`BOOTSTRAP_EPOCH`] for the one exception).
//! Seals themselves are always served.
//!
//! Corrupt copies (see [`LogStore::repair`]): a read of an address whose
//! copy is corrupt answers a `Corrupt` error (a batch read answers the
//! addresses before it), a write or fill of it `WriteOutcome::Corrupt` for
//! that address alone, and `Repair` writes the chain's value over it.
//!
//! Fail-stop: once the store has stopped (a sync failed, see [`LogStore`]),
//! every request is answered `Unavailable` with the store's message, before
//! anything else is looked at; so are the writes that were waiting for the
//! failed sync. `Unavailable` is the honest answer to them: the entry is
//! appended and may or may not be on disk, and a client treats the answer
//! as an unknown outcome (it retries the same entry at the same address),
//! never as a definite failure.

use std::sync::Arc;

use super::record::Stored;
use super::store::{LogStore, Put, StoreError};
use crate::transport::Service;
use crate::types::{Address, Epoch};
use crate::wire::logunit::{
    AddressedEntry, Existing, LogUnitRequest, LogUnitResponse, ReadOutcome, WriteOutcome,
    FRAME_ENVELOPE_BYTES,
};
use crate::wire::{Header, Request, Response, ServerErrorKind};

/// The epoch of the first layout, which a cluster bootstrap installs
/// without sealing the log units: a never-sealed unit (epoch 0) serves it.
pub const BOOTSTRAP_EPOCH: Epoch = 1;

/// Limits of the role, beyond the store's own.
#[derive(Debug, Clone, Copy)]
pub struct LogUnitLimits {
    /// Addresses answered by one range or batch read at most.
    pub read_batch_max: u32,
    /// Bytes of outcomes ([`ReadOutcome::wire_bytes`]) in one range or
    /// batch read answer at most; the first address is answered whatever
    /// its size. [`LogUnitLimits::read_bytes_max_for`] derives it from the
    /// transport's frame limit.
    pub read_bytes_max: usize,
    /// Whether writes must wait for a sync before they are acknowledged.
    pub wait_for_sync: bool,
}

impl LogUnitLimits {
    /// The read budget that keeps every read answer within frames of
    /// `frame_bytes_max`: the frame limit less the envelope
    /// ([`FRAME_ENVELOPE_BYTES`]).
    pub fn read_bytes_max_for(frame_bytes_max: u32) -> usize {
        (frame_bytes_max as usize).saturating_sub(FRAME_ENVELOPE_BYTES)
    }
}

/// The log unit role over a store.
pub struct LogUnitService<S: LogStore> {
    store: Arc<S>,
    limits: LogUnitLimits,
}

impl<S: LogStore> LogUnitService<S> {
    /// A role serving `store`.
    pub fn new(store: Arc<S>, limits: LogUnitLimits) -> LogUnitService<S> {
        LogUnitService { store, limits }
    }

    /// The store.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// The answer to a request of `epoch` if the unit must not serve it:
    /// `WrongEpoch` below the sealed epoch (a fenced client), and an
    /// `Unavailable` error above it. A unit learns that it belongs to an
    /// epoch only by being sealed at it (every reconfiguration seals every
    /// unit of the next layout before deciding it), so a request of a
    /// later epoch means the unit missed that reconfiguration: it may be a
    /// unit back from a failure, holding stale data, that must not serve
    /// reads or take writes until a reconfiguration (and state transfer)
    /// brings it in. The one exception is [`BOOTSTRAP_EPOCH`]: the first
    /// layout is installed without a seal, so a never-sealed unit serves it.
    /// `Unavailable` makes a client back off and refetch the layout.
    fn stale(&self, epoch: Epoch) -> Option<Response> {
        let current = self.store.epoch();
        if epoch < current {
            return Some(Response::WrongEpoch { current });
        }
        let joined = current.max(BOOTSTRAP_EPOCH);
        (epoch > joined).then(|| {
            Response::error(
                ServerErrorKind::Unavailable,
                format!(
                    "log unit not sealed at epoch {epoch} (its epoch is {current}): it has not \
                     joined that epoch and may hold stale data"
                ),
            )
        })
    }

    /// The answer to every request once the store has fail-stopped.
    /// Whatever the error, `Unavailable`: the unit cannot tell what it holds,
    /// so nothing it says may be taken as a definite answer.
    fn stopped(&self) -> Option<Response> {
        self.store
            .health()
            .err()
            .map(|e| Response::error(ServerErrorKind::Unavailable, e.to_string()))
    }

    fn read(&self, address: Address) -> Result<ReadOutcome, Response> {
        self.store.get(address).map_err(store_error)
    }

    /// Answers a prefix of `addresses`: at most `read_batch_max` of them
    /// and `read_bytes_max` bytes of outcomes (at least the first); the
    /// reader continues after it. Records past the budget are not read.
    fn reads(&self, addresses: impl Iterator<Item = Address>) -> Response {
        let addresses: Vec<Address> = addresses
            .take(self.limits.read_batch_max as usize)
            .collect();
        match self
            .store
            .get_prefix(&addresses, self.limits.read_bytes_max)
        {
            Ok(outcomes) => Response::LogUnit(LogUnitResponse::Reads(
                addresses.into_iter().zip(outcomes).collect(),
            )),
            Err(e) => store_error(e),
        }
    }

    /// Serves a write, write batch, fill or repair: whether it was a single
    /// write, each outcome, and the ticket to wait for.
    fn write(
        &self,
        epoch: Epoch,
        req: LogUnitRequest,
    ) -> Result<(bool, Vec<WriteOutcome>, u64), Response> {
        let puts = if let LogUnitRequest::Repair { address, value } = req {
            let value = match value {
                Existing::Data(entry) => Stored::Data(entry),
                Existing::Junk => Stored::Junk,
            };
            vec![self
                .store
                .repair(epoch, address, &value)
                .map_err(store_error)?]
        } else {
            let (single, items) = write_items(req);
            let puts = self.store.put_batch(epoch, &items).map_err(store_error)?;
            let (outcomes, ticket) = Self::outcomes(puts)?;
            return Ok((single, outcomes, ticket));
        };
        let (outcomes, ticket) = Self::outcomes(puts)?;
        Ok((true, outcomes, ticket))
    }

    /// The answers to the store's outcomes, and the ticket to wait for.
    fn outcomes(puts: Vec<Put>) -> Result<(Vec<WriteOutcome>, u64), Response> {
        let mut ticket = 0;
        let mut outcomes = Vec::with_capacity(puts.len());
        for put in puts {
            outcomes.push(match put {
                Put::Written(t) => {
                    ticket = ticket.max(t);
                    WriteOutcome::Ok
                }
                Put::Exists(Stored::Data(e)) => WriteOutcome::Overwritten(Existing::Data(e)),
                Put::Exists(Stored::Junk) => WriteOutcome::Overwritten(Existing::Junk),
                Put::Trimmed => WriteOutcome::Trimmed,
                Put::Corrupt => WriteOutcome::Corrupt,
                Put::WrongEpoch(current) => return Err(Response::WrongEpoch { current }),
            });
        }
        Ok((outcomes, ticket))
    }

    async fn durable(&self, ticket: u64) -> Result<(), Response> {
        if ticket > 0 {
            let mut durable = self.store.durable();
            if durable.wait_for(|d| *d >= ticket).await.is_err() {
                return Err(Response::error(
                    ServerErrorKind::Unavailable,
                    "the store is shutting down",
                ));
            }
        }
        // The entries are appended and indexed: if the sync failed they may
        // or may not be on disk, so the answer must be an unknown outcome.
        self.stopped().map_or(Ok(()), Err)
    }

    fn write_response(single: bool, outcomes: Vec<WriteOutcome>) -> Response {
        if single {
            match outcomes.into_iter().next() {
                Some(o) => Response::LogUnit(LogUnitResponse::Write(o)),
                None => Response::error(ServerErrorKind::Internal, "no outcome"),
            }
        } else {
            Response::LogUnit(LogUnitResponse::WriteBatch(outcomes))
        }
    }

    /// Answers requests that need no waiting; gives back the others.
    #[allow(clippy::result_large_err)]
    fn answer_now(&self, epoch: Epoch, req: LogUnitRequest) -> Result<Response, LogUnitRequest> {
        // First, and for every kind of request (seals and trims too): a
        // stopped unit must not serve its unsynced state.
        if let Some(stopped) = self.stopped() {
            return Ok(stopped);
        }
        let is_write = matches!(
            req,
            LogUnitRequest::Write(_)
                | LogUnitRequest::WriteBatch(_)
                | LogUnitRequest::Fill { .. }
                | LogUnitRequest::Repair { .. }
        );
        if (is_write && self.limits.wait_for_sync)
            || matches!(
                req,
                LogUnitRequest::Seal { .. } | LogUnitRequest::PrefixTrim { .. }
            )
        {
            return Err(req);
        }
        if let Some(stale) = self.stale(epoch) {
            return Ok(stale);
        }
        Ok(match req {
            LogUnitRequest::Read { address } => match self.read(address) {
                Ok(outcome) => Response::LogUnit(LogUnitResponse::Read(outcome)),
                Err(answer) => answer,
            },
            LogUnitRequest::ReadRange { from, to } => {
                if to < from {
                    return Ok(Response::error(
                        ServerErrorKind::InvalidRequest,
                        format!("read range [{from}, {to}) is reversed"),
                    ));
                }
                self.reads(from..to)
            }
            LogUnitRequest::ReadBatch(addresses) => {
                if addresses.len() > self.limits.read_batch_max as usize {
                    return Ok(Response::error(
                        ServerErrorKind::InvalidRequest,
                        format!(
                            "batch of {} reads exceeds read_batch_max ({})",
                            addresses.len(),
                            self.limits.read_batch_max
                        ),
                    ));
                }
                self.reads(addresses.into_iter())
            }
            LogUnitRequest::Tail => Response::LogUnit(LogUnitResponse::Tails(self.store.tails())),
            write => match self.write(epoch, write) {
                Ok((single, outcomes, _)) => Self::write_response(single, outcomes),
                Err(answer) => answer,
            },
        })
    }
}

/// The items of a write request, and whether it was a single write.
fn write_items(req: LogUnitRequest) -> (bool, Vec<(Address, Stored)>) {
    let item = |ae: AddressedEntry| (ae.address, Stored::Data(ae.entry));
    match req {
        LogUnitRequest::Write(ae) => (true, vec![item(ae)]),
        LogUnitRequest::WriteBatch(batch) => (false, batch.into_iter().map(item).collect()),
        LogUnitRequest::Fill { address } => (true, vec![(address, Stored::Junk)]),
        _ => (false, Vec::new()),
    }
}

fn store_error(e: StoreError) -> Response {
    let kind = match e {
        StoreError::Invalid(_) => ServerErrorKind::InvalidRequest,
        // The store stopped between the health check and the call: an
        // unknown outcome, like every answer of a stopped unit.
        StoreError::Stopped(_) => ServerErrorKind::Unavailable,
        // A copy that failed its checksum: the client reads a good member
        // and repairs this one.
        StoreError::Corrupt { .. } => ServerErrorKind::Corrupt,
        _ => ServerErrorKind::Internal,
    };
    Response::error(kind, e.to_string())
}

#[async_trait::async_trait]
impl<S: LogStore> Service for LogUnitService<S> {
    async fn handle(&self, header: Header, body: Request) -> Response {
        let Request::LogUnit(req) = body else {
            return Response::error(ServerErrorKind::Internal, "not a log unit request");
        };
        let epoch = header.epoch;
        let req = match self.answer_now(epoch, req) {
            Ok(answer) => return answer,
            Err(req) => req,
        };
        match req {
            LogUnitRequest::Seal { epoch: new_epoch } => {
                let store = self.store.clone();
                match tokio::task::spawn_blocking(move || store.seal(new_epoch)).await {
                    Ok(Ok(Ok(tails))) => Response::LogUnit(LogUnitResponse::Tails(tails)),
                    Ok(Ok(Err(current))) => Response::WrongEpoch { current },
                    Ok(Err(e)) => store_error(e),
                    Err(e) => Response::error(ServerErrorKind::Internal, format!("seal task: {e}")),
                }
            }
            LogUnitRequest::PrefixTrim { address } => {
                if let Some(stale) = self.stale(epoch) {
                    return stale;
                }
                let store = self.store.clone();
                match tokio::task::spawn_blocking(move || store.prefix_trim(address)).await {
                    Ok(Ok(trim_mark)) => Response::LogUnit(LogUnitResponse::Trimmed { trim_mark }),
                    Ok(Err(e)) => store_error(e),
                    Err(e) => Response::error(ServerErrorKind::Internal, format!("trim task: {e}")),
                }
            }
            write => {
                if let Some(stale) = self.stale(epoch) {
                    return stale;
                }
                let (single, outcomes, ticket) = match self.write(epoch, write) {
                    Ok(written) => written,
                    Err(answer) => return answer,
                };
                if let Err(answer) = self.durable(ticket).await {
                    return answer;
                }
                Self::write_response(single, outcomes)
            }
        }
    }

    #[allow(clippy::result_large_err)]
    fn handle_now(&self, header: &Header, body: Request) -> Result<Response, Request> {
        match body {
            Request::LogUnit(req) => self.answer_now(header.epoch, req).map_err(Request::LogUnit),
            other => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logunit::{FileStore, LogUnitConfig, MemoryStore};
    use crate::types::ClusterId;
    use crate::wire::logunit::Entry;
    use crate::wire::PROTOCOL_VERSION;
    use std::time::Duration;

    fn service() -> LogUnitService<MemoryStore> {
        LogUnitService::new(
            Arc::new(MemoryStore::new()),
            LogUnitLimits {
                read_batch_max: 16,
                read_bytes_max: 1 << 20,
                wait_for_sync: false,
            },
        )
    }

    fn header(epoch: Epoch) -> Header {
        Header {
            protocol_version: PROTOCOL_VERSION,
            cluster_id: ClusterId(7),
            epoch,
            request_id: 1,
        }
    }

    async fn call<S: LogStore>(
        s: &LogUnitService<S>,
        epoch: Epoch,
        req: LogUnitRequest,
    ) -> Response {
        s.handle(header(epoch), Request::LogUnit(req)).await
    }

    fn write(address: Address) -> LogUnitRequest {
        LogUnitRequest::Write(AddressedEntry {
            address,
            entry: Entry {
                id: None,
                streams: vec![],
                payload: b"x".to_vec(),
            },
        })
    }

    fn unavailable(answer: &Response) -> bool {
        matches!(answer, Response::Error(e) if e.kind == ServerErrorKind::Unavailable
            && e.message.contains("not sealed at epoch"))
    }

    #[tokio::test]
    async fn a_never_sealed_unit_serves_only_the_bootstrap_epoch() {
        let s = service();
        let ok = Response::LogUnit(LogUnitResponse::Write(WriteOutcome::Ok));
        assert_eq!(call(&s, 0, write(1)).await, ok);
        assert_eq!(call(&s, BOOTSTRAP_EPOCH, write(2)).await, ok);
        // Epoch 2 was decided by a reconfiguration that did not seal this
        // unit: it may be stale, so it serves neither reads nor writes.
        assert!(unavailable(&call(&s, 2, write(3)).await));
        assert!(unavailable(
            &call(&s, 2, LogUnitRequest::Read { address: 1 }).await
        ));
        assert!(unavailable(&call(&s, 2, LogUnitRequest::Tail).await));
    }

    #[tokio::test]
    async fn a_sealed_unit_serves_its_epoch_only() {
        let s = service();
        assert!(matches!(
            call(&s, 4, LogUnitRequest::Seal { epoch: 4 }).await,
            Response::LogUnit(LogUnitResponse::Tails(_))
        ));
        assert_eq!(
            call(&s, 3, LogUnitRequest::Read { address: 1 }).await,
            Response::WrongEpoch { current: 4 }
        );
        assert_eq!(
            call(&s, 4, LogUnitRequest::Read { address: 1 }).await,
            Response::LogUnit(LogUnitResponse::Read(ReadOutcome::Unwritten))
        );
        for req in [
            LogUnitRequest::Read { address: 1 },
            LogUnitRequest::ReadRange { from: 0, to: 4 },
            LogUnitRequest::Fill { address: 1 },
            write(1),
            LogUnitRequest::PrefixTrim { address: 1 },
        ] {
            let answer = call(&s, 5, req.clone()).await;
            assert!(unavailable(&answer), "{req:?}: {answer:?}");
        }
        assert_eq!(s.store().get(1).unwrap(), ReadOutcome::Unwritten);
        // Sealing into the next epoch is what lets the unit serve it.
        assert!(matches!(
            call(&s, 5, LogUnitRequest::Seal { epoch: 5 }).await,
            Response::LogUnit(LogUnitResponse::Tails(_))
        ));
        assert_eq!(
            call(&s, 5, write(1)).await,
            Response::LogUnit(LogUnitResponse::Write(WriteOutcome::Ok))
        );
    }

    fn big(address: Address, byte: u8, len: usize) -> LogUnitRequest {
        LogUnitRequest::Write(AddressedEntry {
            address,
            entry: Entry {
                id: None,
                streams: vec![],
                payload: vec![byte; len],
            },
        })
    }

    fn answered(answer: &Response) -> Vec<Address> {
        match answer {
            Response::LogUnit(LogUnitResponse::Reads(reads)) => {
                reads.iter().map(|(a, _)| *a).collect()
            }
            other => panic!("not a read answer: {other:?}"),
        }
    }

    /// A range or batch read answers the prefix of its addresses that fits
    /// the byte budget (at least one address), and does not read the
    /// records past it: a corrupt record just past the budget does not
    /// fail the read (it fails the next one, which starts there).
    #[tokio::test]
    async fn reads_answer_a_prefix_within_their_byte_budget() {
        const MIB: usize = 1 << 20;
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path(), LogUnitConfig::default()).unwrap();
        let s = LogUnitService::new(
            Arc::new(store),
            LogUnitLimits {
                read_batch_max: 16,
                read_bytes_max: 5 * MIB,
                wait_for_sync: false,
            },
        );
        let ok = Response::LogUnit(LogUnitResponse::Write(WriteOutcome::Ok));
        for a in 0..4u64 {
            assert_eq!(call(&s, 1, big(a, a as u8, 2 * MIB)).await, ok);
        }
        assert_eq!(call(&s, 1, LogUnitRequest::Fill { address: 4 }).await, ok);
        assert_eq!(call(&s, 1, write(5)).await, ok);
        // Corrupt the last payload byte of address 2.
        let segment = dir.path().join("seg-00000001.log");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&segment)
            .unwrap();
        let end_of_2 = 3
            * (super::super::record::encoded_len(&Stored::Data(Entry {
                id: None,
                streams: vec![],
                payload: vec![0; 2 * MIB],
            })) as u64);
        std::os::unix::fs::FileExt::write_at(&file, &[0xEE], end_of_2 - 1).unwrap();

        let range = |from, to| LogUnitRequest::ReadRange { from, to };
        assert_eq!(answered(&call(&s, 1, range(0, 6)).await), vec![0, 1]);
        assert_eq!(
            answered(&call(&s, 1, LogUnitRequest::ReadBatch(vec![3, 0, 2, 1])).await),
            vec![3, 0]
        );
        // The first address is answered whatever its size.
        let s_small = LogUnitService::new(
            s.store().clone(),
            LogUnitLimits {
                read_bytes_max: 100,
                ..s.limits
            },
        );
        assert_eq!(answered(&call(&s_small, 1, range(3, 6)).await), vec![3]);
        // Junk and small entries after a big one fit with it.
        assert_eq!(answered(&call(&s, 1, range(3, 6)).await), vec![3, 4, 5]);
        let reads = call(&s, 1, range(0, 2)).await;
        let Response::LogUnit(LogUnitResponse::Reads(reads)) = reads else {
            panic!("{reads:?}");
        };
        for (a, outcome) in reads {
            assert!(
                matches!(&outcome, ReadOutcome::Data(e) if e.payload == vec![a as u8; 2 * MIB]),
                "address {a}"
            );
        }
        // The corrupt record is only met by a read that starts there.
        let answer = call(&s, 1, range(2, 4)).await;
        assert!(
            matches!(&answer, Response::Error(e) if e.message.contains("corrupt")),
            "{answer:?}"
        );
    }

    #[tokio::test]
    async fn a_corrupt_copy_is_answered_as_such_and_takes_a_repair() {
        let s = service();
        let ok = Response::LogUnit(LogUnitResponse::Write(WriteOutcome::Ok));
        for a in 0..4 {
            assert_eq!(call(&s, 1, write(a)).await, ok);
        }
        s.store().corrupt(2);
        let corrupt = |answer: &Response| {
            matches!(answer, Response::Error(e) if e.kind == ServerErrorKind::Corrupt
                && e.message.contains("address 2"))
        };
        let read = call(&s, 1, LogUnitRequest::Read { address: 2 }).await;
        assert!(corrupt(&read), "{read:?}");
        // A batch read answers up to the corrupt copy, or fails on it.
        let range = call(&s, 1, LogUnitRequest::ReadRange { from: 0, to: 4 }).await;
        let Response::LogUnit(LogUnitResponse::Reads(reads)) = range else {
            panic!("{range:?}");
        };
        assert_eq!(
            reads.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
            vec![0, 1]
        );
        let batch = call(&s, 1, LogUnitRequest::ReadBatch(vec![2, 3])).await;
        assert!(corrupt(&batch), "{batch:?}");
        // Writes and fills fail there only.
        let entry = Entry {
            id: None,
            streams: vec![],
            payload: b"x".to_vec(),
        };
        let batch = LogUnitRequest::WriteBatch(
            [2, 5]
                .into_iter()
                .map(|address| AddressedEntry {
                    address,
                    entry: entry.clone(),
                })
                .collect(),
        );
        assert_eq!(
            call(&s, 1, batch).await,
            Response::LogUnit(LogUnitResponse::WriteBatch(vec![
                WriteOutcome::Corrupt,
                WriteOutcome::Ok
            ]))
        );
        assert_eq!(
            call(&s, 1, LogUnitRequest::Fill { address: 2 }).await,
            Response::LogUnit(LogUnitResponse::Write(WriteOutcome::Corrupt))
        );
        // A repair replaces only a corrupt copy.
        let repair = |address| LogUnitRequest::Repair {
            address,
            value: Existing::Data(entry.clone()),
        };
        let refused = call(&s, 1, repair(9)).await;
        assert!(
            matches!(&refused, Response::Error(e) if e.kind == ServerErrorKind::InvalidRequest),
            "{refused:?}"
        );
        assert_eq!(call(&s, 1, repair(2)).await, ok);
        assert_eq!(
            call(&s, 1, LogUnitRequest::Read { address: 2 }).await,
            Response::LogUnit(LogUnitResponse::Read(ReadOutcome::Data(entry.clone())))
        );
        assert_eq!(
            call(&s, 1, repair(2)).await,
            Response::LogUnit(LogUnitResponse::Write(WriteOutcome::Overwritten(
                Existing::Data(entry)
            )))
        );
    }

    /// The answer of a unit that fail-stopped: `Unavailable` (which a
    /// client treats as an unknown outcome), naming the failed sync.
    fn stopped(answer: &Response) -> bool {
        matches!(answer, Response::Error(e) if e.kind == ServerErrorKind::Unavailable
            && e.message.contains("log unit stopped after a failed fdatasync of")
            && e.message.contains("restart the node"))
    }

    /// Every request a stopped unit can get, the seal last (on a unit that
    /// still served it, it would fence the others).
    fn every_request() -> Vec<LogUnitRequest> {
        vec![
            LogUnitRequest::Read { address: 2 },
            LogUnitRequest::Read { address: 1 },
            LogUnitRequest::ReadRange { from: 0, to: 4 },
            LogUnitRequest::ReadBatch(vec![1, 2]),
            LogUnitRequest::Tail,
            write(3),
            LogUnitRequest::WriteBatch(vec![AddressedEntry {
                address: 4,
                entry: Entry {
                    id: None,
                    streams: vec![],
                    payload: b"y".to_vec(),
                },
            }]),
            LogUnitRequest::Fill { address: 5 },
            LogUnitRequest::PrefixTrim { address: 1 },
            LogUnitRequest::Seal { epoch: 2 },
        ]
    }

    #[tokio::test]
    async fn a_failed_sync_stops_the_unit() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path(), LogUnitConfig::default()).unwrap();
        let s = LogUnitService::new(
            Arc::new(store),
            LogUnitLimits {
                read_batch_max: 16,
                read_bytes_max: 1 << 20,
                wait_for_sync: true,
            },
        );
        let ok = Response::LogUnit(LogUnitResponse::Write(WriteOutcome::Ok));
        assert_eq!(call(&s, 1, write(1)).await, ok);

        s.store().fail_syncs();
        // The write waiting on the failed sync is appended and indexed: only
        // an unknown outcome is honest, never a definite refusal.
        let answer = tokio::time::timeout(Duration::from_secs(10), call(&s, 1, write(2)))
            .await
            .expect("the write is answered");
        assert!(stopped(&answer), "the waiting write: {answer:?}");
        for req in every_request() {
            // Answered at once, without reaching the store...
            let now = s.handle_now(&header(1), Request::LogUnit(req.clone()));
            assert!(
                matches!(&now, Ok(answer) if stopped(answer)),
                "{req:?} at once: {now:?}"
            );
            // ... and the same through the full path.
            let answer = call(&s, 1, req.clone()).await;
            assert!(stopped(&answer), "{req:?}: {answer:?}");
        }
        assert_eq!(s.store().epoch(), 0, "the seal was refused");
    }
}
