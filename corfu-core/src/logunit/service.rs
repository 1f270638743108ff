//! The log unit role as a [`Service`]: maps wire requests onto a
//! [`LogStore`], and acknowledges writes only once they are durable.
//!
//! Reads, tails and writes that need no sync are answered at once
//! ([`Service::handle_now`]); writes under `sync = always` wait for their
//! group commit; seals and trims, which write the meta file with `fsync`,
//! run on the blocking pool.

use std::sync::Arc;

use super::record::Stored;
use super::store::{LogStore, Put, StoreError};
use crate::transport::Service;
use crate::types::{Address, Epoch};
use crate::wire::logunit::{
    AddressedEntry, Existing, LogUnitRequest, LogUnitResponse, ReadOutcome, WriteOutcome,
};
use crate::wire::{Header, Request, Response, ServerErrorKind};

/// Limits of the role, beyond the store's own.
#[derive(Debug, Clone, Copy)]
pub struct LogUnitLimits {
    /// Addresses answered by one range or batch read at most.
    pub read_batch_max: u32,
    /// Whether writes must wait for a sync before they are acknowledged.
    pub wait_for_sync: bool,
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

    fn stale(&self, epoch: Epoch) -> Option<Response> {
        let current = self.store.epoch();
        (epoch < current).then_some(Response::WrongEpoch { current })
    }

    fn read(&self, address: Address) -> Result<ReadOutcome, Response> {
        self.store.get(address).map_err(store_error)
    }

    fn reads(&self, addresses: impl Iterator<Item = Address>) -> Response {
        let addresses: Vec<Address> = addresses
            .take(self.limits.read_batch_max as usize)
            .collect();
        match self.store.get_many(&addresses) {
            Ok(outcomes) => Response::LogUnit(LogUnitResponse::Reads(
                addresses.into_iter().zip(outcomes).collect(),
            )),
            Err(e) => store_error(e),
        }
    }

    /// Writes, returning each outcome and the ticket to wait for.
    fn write(
        &self,
        epoch: Epoch,
        items: Vec<(Address, Stored)>,
    ) -> Result<(Vec<WriteOutcome>, u64), Response> {
        let puts = self.store.put_batch(epoch, &items).map_err(store_error)?;
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
        self.store.health().map_err(store_error)
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
        let is_write = matches!(
            req,
            LogUnitRequest::Write(_) | LogUnitRequest::WriteBatch(_) | LogUnitRequest::Fill { .. }
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
            write => {
                let (single, items) = write_items(write);
                match self.write(epoch, items) {
                    Ok((outcomes, _)) => Self::write_response(single, outcomes),
                    Err(answer) => answer,
                }
            }
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
                let (single, items) = write_items(write);
                let (outcomes, ticket) = match self.write(epoch, items) {
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
