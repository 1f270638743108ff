//! The sequencer role as a [`Service`]: the pure [`Sequencer`] behind a
//! mutex, and the lease that lets it answer tails (see [`super::lease`]).
//! Tokens, seals and bootstraps are answered at once (no I/O), so the
//! server never allocates a future for them; a tail query waits only when
//! the lease is being renewed.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Notify;

use super::lease::{LEASE, LEASE_RENEW_EVERY};
use super::Sequencer;
use crate::transport::{ClientEndpoint, Service};
use crate::types::Epoch;
use crate::wire::layout::{LayoutRequest, LayoutResponse};
use crate::wire::sequencer::{SequencerRequest, SequencerResponse};
use crate::wire::{Header, Request, Response, ServerErrorKind};

/// How long a tail query waits for a lease before it is refused.
const LEASE_WAIT_MAX: Duration = Duration::from_millis(500);

/// The sequencer role.
pub struct SequencerService {
    core: Mutex<Sequencer>,
    /// `None`: no lease is needed (a sequencer outside any cluster, for
    /// tests and benchmarks).
    lease: Option<Lease>,
}

struct Lease {
    state: Mutex<LeaseState>,
    /// Woken after every renewal round.
    renewed: Notify,
    /// Wakes the renewer early (after a bootstrap).
    wake: Notify,
}

#[derive(Debug, Default)]
struct LeaseState {
    /// The epoch the lease is for.
    epoch: Epoch,
    /// Tails may be answered before this instant.
    until: Option<Instant>,
    /// A layout server has seen this later epoch: no lease.
    outdated_by: Option<Epoch>,
}

impl SequencerService {
    /// Serves `core` without a lease: only for a sequencer that no other
    /// can replace (tests, benchmarks). A node uses
    /// [`SequencerService::leased`].
    pub fn new(core: Sequencer) -> SequencerService {
        SequencerService {
            core: Mutex::new(core),
            lease: None,
        }
    }

    /// Serves `core`, answering tails only under a lease renewed over
    /// `endpoint` with the layout servers its bootstrap names (a bootstrap
    /// naming none needs no lease). Spawns the renewer, which ends when
    /// the service is dropped.
    pub fn leased(core: Sequencer, endpoint: ClientEndpoint) -> Arc<SequencerService> {
        let service = Arc::new(SequencerService {
            core: Mutex::new(core),
            lease: Some(Lease {
                state: Mutex::new(LeaseState::default()),
                renewed: Notify::new(),
                wake: Notify::new(),
            }),
        });
        tokio::spawn(renew(Arc::downgrade(&service), endpoint));
        service
    }

    fn core(&self) -> std::sync::MutexGuard<'_, Sequencer> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers `request`; `Err(request)` if it is a tail query that must
    /// wait for the lease.
    fn answer(
        &self,
        header: &Header,
        request: SequencerRequest,
    ) -> Result<Response, SequencerRequest> {
        let is_tail = matches!(
            request,
            SequencerRequest::Tail { .. } | SequencerRequest::StreamAddresses { .. }
        );
        let is_bootstrap = matches!(request, SequencerRequest::Bootstrap { .. });
        let kept = is_tail.then(|| request.clone());
        let (response, epoch, leased) = {
            let mut core = self.core();
            let response = core.handle(header.epoch, request);
            (response, core.epoch(), !core.layout_servers().is_empty())
        };
        if is_bootstrap {
            if let Some(lease) = &self.lease {
                lease.wake.notify_one();
            }
        }
        let (Some(lease), Some(request), true) = (&self.lease, kept, leased) else {
            return Ok(response);
        };
        if !matches!(
            response,
            Response::Sequencer(
                SequencerResponse::Tail { .. } | SequencerResponse::Addresses { .. }
            )
        ) {
            return Ok(response);
        }
        // Checked after the answer was computed: a pause in between only
        // makes the check later (see the lease rules).
        let state = lease.state.lock().unwrap_or_else(|p| p.into_inner());
        match *state {
            LeaseState {
                epoch: e,
                until: Some(until),
                outdated_by: None,
            } if e == epoch && Instant::now() < until => Ok(response),
            LeaseState {
                epoch: e,
                outdated_by: Some(later),
                ..
            } if e == epoch => Ok(Response::error(
                ServerErrorKind::Unavailable,
                format!(
                    "sequencer of epoch {epoch} has no lease: the layout servers have seen epoch {later}"
                ),
            )),
            _ => Err(request),
        }
    }
}

#[async_trait::async_trait]
impl Service for SequencerService {
    async fn handle(&self, header: Header, body: Request) -> Response {
        let Request::Sequencer(mut request) = body else {
            return Response::error(ServerErrorKind::Internal, "not a sequencer request");
        };
        let deadline = Instant::now() + LEASE_WAIT_MAX;
        loop {
            request = match self.answer(&header, request) {
                Ok(response) => return response,
                Err(request) => request,
            };
            let Some(lease) = &self.lease else {
                return Response::error(ServerErrorKind::Internal, "no lease to wait for");
            };
            let renewed = lease.renewed.notified();
            tokio::pin!(renewed);
            // Registered before checking the time again, so a renewal
            // between the check above and the wait is not missed.
            renewed.as_mut().enable();
            if Instant::now() >= deadline {
                return Response::error(
                    ServerErrorKind::Unavailable,
                    format!(
                        "sequencer has no lease: a majority of the layout servers did not confirm its epoch within {} ms",
                        LEASE_WAIT_MAX.as_millis()
                    ),
                );
            }
            let _ = tokio::time::timeout_at(deadline.into(), renewed).await;
        }
    }

    #[allow(clippy::result_large_err)]
    fn handle_now(&self, header: &Header, body: Request) -> Result<Response, Request> {
        match body {
            Request::Sequencer(request) => self.answer(header, request).map_err(Request::Sequencer),
            _ => Ok(Response::error(
                ServerErrorKind::Internal,
                "not a sequencer request",
            )),
        }
    }
}

/// Renews the lease of `service` every [`LEASE_RENEW_EVERY`] (or at once
/// after a bootstrap) while it is bootstrapped with layout servers.
async fn renew(service: Weak<SequencerService>, endpoint: ClientEndpoint) {
    loop {
        let started = Instant::now();
        let Some(this) = service.upgrade() else {
            return;
        };
        let (epoch, servers) = {
            let core = this.core();
            (
                core.is_bootstrapped().then(|| core.epoch()),
                core.layout_servers().to_vec(),
            )
        };
        if let (Some(epoch), false) = (epoch, servers.is_empty()) {
            let outcome = round(&endpoint, epoch, &servers).await;
            if let Some(lease) = &this.lease {
                let mut state = lease.state.lock().unwrap_or_else(|p| p.into_inner());
                if state.epoch != epoch {
                    *state = LeaseState {
                        epoch,
                        ..LeaseState::default()
                    };
                }
                match outcome {
                    Round::Confirmed => {
                        state.until = state.until.max(Some(started + LEASE));
                        state.outdated_by = None;
                    }
                    Round::Outdated(later) => {
                        state.until = None;
                        state.outdated_by = Some(later);
                    }
                    Round::NoMajority => {}
                }
                drop(state);
                lease.renewed.notify_waiters();
            }
        }
        let Some(lease) = &this.lease else {
            return;
        };
        // Holds the service for at most one period.
        let next = started + LEASE_RENEW_EVERY;
        let _ = tokio::time::timeout_at(next.into(), lease.wake.notified()).await;
    }
}

enum Round {
    /// A majority saw nothing after the epoch.
    Confirmed,
    /// A server saw this later epoch.
    Outdated(Epoch),
    /// Too few answers.
    NoMajority,
}

/// Asks every server for the epochs it has seen, until a majority
/// confirmed `epoch` or one has seen a later epoch.
async fn round(endpoint: &ClientEndpoint, epoch: Epoch, servers: &[String]) -> Round {
    let majority = servers.len() / 2 + 1;
    let mut calls: FuturesUnordered<_> = servers
        .iter()
        .map(|server| {
            let peer = endpoint.peer(server);
            async move {
                peer.call_timeout(0, Request::Layout(LayoutRequest::Epochs), LEASE)
                    .await
            }
        })
        .collect();
    let mut confirmed = 0;
    while let Some(answer) = calls.next().await {
        if let Ok(Response::Layout(LayoutResponse::Epochs { seen, .. })) = answer {
            if seen > epoch {
                return Round::Outdated(seen);
            }
            confirmed += 1;
            if confirmed >= majority {
                return Round::Confirmed;
            }
        }
    }
    Round::NoMajority
}
