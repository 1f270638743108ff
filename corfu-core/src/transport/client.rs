//! The client side: a QUIC endpoint and one multiplexed connection per peer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::{oneshot, Semaphore};

use super::config::TransportConfig;
use super::{describe_connection_error, TransportError, FRAME_ERROR_CODE};
use crate::types::{ClusterId, Epoch};
use crate::wire::frame::{FrameDecoder, FrameEncoder};

use crate::wire::{Header, Request, RequestFrame, Response, ResponseFrame, PROTOCOL_VERSION};

/// A client QUIC endpoint with the cluster's TLS configuration. It keeps one
/// [`Peer`] (one connection) per peer address.
#[derive(Clone)]
pub struct ClientEndpoint {
    inner: Arc<EndpointInner>,
}

struct EndpointInner {
    endpoint: quinn::Endpoint,
    config: Arc<TransportConfig>,
    cluster_id: ClusterId,
    peers: DashMap<String, Peer>,
}

impl std::fmt::Debug for ClientEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientEndpoint")
            .field("cluster_id", &self.inner.cluster_id)
            .finish_non_exhaustive()
    }
}

impl ClientEndpoint {
    /// Creates an endpoint on an ephemeral local port. `cluster_id` is put
    /// in every request header ([`ClusterId::ANY`] only works for `Ping`
    /// and `Info`).
    pub fn new(
        crypto: quinn::crypto::rustls::QuicClientConfig,
        config: TransportConfig,
        cluster_id: ClusterId,
    ) -> Result<ClientEndpoint, TransportError> {
        config.validate().map_err(TransportError::Endpoint)?;
        let bind: SocketAddr = ([0, 0, 0, 0], 0).into();
        let mut endpoint =
            quinn::Endpoint::client(bind).map_err(|e| TransportError::Endpoint(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(Arc::new(config.quinn()));
        endpoint.set_default_client_config(client);
        Ok(ClientEndpoint {
            inner: Arc::new(EndpointInner {
                endpoint,
                config: Arc::new(config),
                cluster_id,
                peers: DashMap::new(),
            }),
        })
    }

    /// The peer at `addr` (`host:port`), sharing one connection with every
    /// other user of this endpoint. Connecting happens on first use.
    pub fn peer(&self, addr: &str) -> Peer {
        if let Some(p) = self.inner.peers.get(addr) {
            return p.clone();
        }
        self.inner
            .peers
            .entry(addr.to_string())
            .or_insert_with(|| Peer::new(addr, self.inner.endpoint.clone(), self.inner.config.clone(), self.inner.cluster_id))
            .clone()
    }

    /// The cluster id put in request headers.
    pub fn cluster_id(&self) -> ClusterId {
        self.inner.cluster_id
    }

    /// The transport settings.
    pub fn config(&self) -> &TransportConfig {
        &self.inner.config
    }

    /// Closes every connection.
    pub fn close(&self) {
        self.inner.endpoint.close(0u32.into(), b"client closed");
    }
}

/// One peer: a lazily (re)established connection over which requests are
/// pipelined. Cheap to clone.
#[derive(Clone)]
pub struct Peer {
    inner: Arc<PeerInner>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").field("addr", &self.inner.addr).finish()
    }
}

struct PeerInner {
    addr: String,
    endpoint: quinn::Endpoint,
    config: Arc<TransportConfig>,
    cluster_id: ClusterId,
    conn: Mutex<Option<Arc<Conn>>>,
    connecting: tokio::sync::Mutex<Option<(Instant, TransportError)>>,
    in_flight: Semaphore,
    next_request_id: AtomicU64,
}

/// After a failed connection attempt, callers within this time get the same
/// error instead of each waiting for its own attempt.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);

impl Peer {
    fn new(addr: &str, endpoint: quinn::Endpoint, config: Arc<TransportConfig>, cluster_id: ClusterId) -> Peer {
        let permits = config.requests_in_flight_max as usize;
        Peer {
            inner: Arc::new(PeerInner {
                addr: addr.to_string(),
                endpoint,
                config,
                cluster_id,
                conn: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(None),
                in_flight: Semaphore::new(permits),
                next_request_id: AtomicU64::new(1),
            }),
        }
    }

    /// The peer's address as given.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// Sends `body` with the given epoch and waits for the answer, within
    /// the configured request timeout.
    pub async fn call(&self, epoch: Epoch, body: Request) -> Result<Response, TransportError> {
        self.call_timeout(epoch, body, self.inner.config.request_timeout()).await
    }

    /// Like [`Peer::call`] with an explicit timeout. The timeout covers
    /// waiting for an in-flight slot, connecting, and the answer; answers
    /// are timed out by a per-connection sweeper, to within
    /// [`SWEEP_INTERVAL`].
    pub async fn call_timeout(
        &self,
        epoch: Epoch,
        body: Request,
        timeout: Duration,
    ) -> Result<Response, TransportError> {
        let inner = &*self.inner;
        let deadline = Instant::now() + timeout;
        let timed_out = || TransportError::Timeout {
            addr: inner.addr.clone(),
            timeout_ms: timeout.as_millis() as u64,
        };
        let _permit = match inner.in_flight.try_acquire() {
            Ok(permit) => permit,
            Err(_) => match tokio::time::timeout_at(deadline.into(), inner.in_flight.acquire()).await {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) => return Err(TransportError::Endpoint("peer closed".into())),
                Err(_) => return Err(timed_out()),
            },
        };
        let conn = match self.current() {
            Some(conn) => conn,
            None => match tokio::time::timeout_at(deadline.into(), self.connection()).await {
                Ok(conn) => conn?,
                Err(_) => return Err(timed_out()),
            },
        };
        let request_id = inner.next_request_id.fetch_add(1, Ordering::Relaxed);
        let stream = conn.pick();
        let rx = stream.pending.register(request_id, deadline, timeout)?;
        let mut guard = PendingGuard {
            pending: &stream.pending,
            request_id,
            armed: true,
        };
        let frame = RequestFrame {
            header: Header {
                protocol_version: PROTOCOL_VERSION,
                cluster_id: inner.cluster_id,
                epoch,
                request_id,
            },
            body,
        };
        stream
            .outbox
            .push(&frame, inner.config.frame_bytes_max)
            .map_err(TransportError::Encode)?;
        let result = rx.await;
        // Whoever completed the request already removed it.
        guard.armed = false;
        match result {
            Ok(result) => result,
            Err(_) => Err(stream.pending.failure().unwrap_or_else(|| self.lost("stream closed"))),
        }
    }

    fn lost(&self, reason: &str) -> TransportError {
        TransportError::ConnectionLost {
            addr: self.inner.addr.clone(),
            reason: reason.to_string(),
        }
    }

    fn current(&self) -> Option<Arc<Conn>> {
        let guard = self.inner.conn.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().filter(|c| c.alive()).cloned()
    }

    /// The live connection, establishing one if there is none (one attempt
    /// at a time; failures are shared with callers arriving within
    /// [`RECONNECT_BACKOFF`]).
    async fn connection(&self) -> Result<Arc<Conn>, TransportError> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let mut last_failure = self.inner.connecting.lock().await;
        if let Some(c) = self.current() {
            return Ok(c);
        }
        if let Some((at, err)) = last_failure.as_ref() {
            if at.elapsed() < RECONNECT_BACKOFF {
                return Err(err.clone());
            }
        }
        match self.connect().await {
            Ok(conn) => {
                *last_failure = None;
                let conn = Arc::new(conn);
                *self.inner.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.clone());
                Ok(conn)
            }
            Err(e) => {
                *last_failure = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    async fn connect(&self) -> Result<Conn, TransportError> {
        let inner = &*self.inner;
        let addr = inner.addr.clone();
        let (host, _) = split_host_port(&addr).ok_or_else(|| TransportError::Resolve {
            addr: addr.clone(),
            reason: "expected host:port".into(),
        })?;
        let socket = tokio::net::lookup_host(&addr)
            .await
            .map_err(|e| TransportError::Resolve {
                addr: addr.clone(),
                reason: e.to_string(),
            })?
            .next()
            .ok_or_else(|| TransportError::Resolve {
                addr: addr.clone(),
                reason: "no address found".into(),
            })?;
        let connecting = inner
            .endpoint
            .connect(socket, host)
            .map_err(|e| TransportError::Connect {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
        let timeout = Duration::from_millis(inner.config.connect_timeout_ms);
        let connection = match tokio::time::timeout(timeout, connecting).await {
            Err(_) => {
                return Err(TransportError::Connect {
                    addr,
                    reason: format!("no handshake within {} ms", inner.config.connect_timeout_ms),
                })
            }
            Ok(Err(e)) => return Err(connect_error(&addr, &e)),
            Ok(Ok(c)) => c,
        };
        let mut streams = Vec::with_capacity(inner.config.streams_per_connection.into());
        for _ in 0..inner.config.streams_per_connection {
            let (send, recv) = connection
                .open_bi()
                .await
                .map_err(|e| connect_error(&addr, &e))?;
            let pending = Arc::new(Pending::default());
            let outbox = Arc::new(Outbox::default());
            tokio::spawn(write_loop(send, outbox.clone(), pending.clone(), addr.clone()));
            tokio::spawn(read_loop(
                recv,
                pending.clone(),
                inner.config.frame_bytes_max,
                addr.clone(),
            ));
            streams.push(StreamHandle { outbox, pending });
        }
        tokio::spawn(sweep_loop(
            streams.iter().map(|s| s.pending.clone()).collect(),
            addr.clone(),
        ));
        tracing::debug!(peer = %addr, "connected");
        Ok(Conn {
            quinn: connection,
            streams: streams.into_boxed_slice(),
            next: AtomicUsize::new(0),
        })
    }
}

fn connect_error(addr: &str, e: &quinn::ConnectionError) -> TransportError {
    let (tls, reason) = describe_connection_error(e);
    if tls {
        TransportError::Tls {
            addr: addr.to_string(),
            reason,
        }
    } else {
        TransportError::Connect {
            addr: addr.to_string(),
            reason,
        }
    }
}

fn lost_error(addr: &str, e: &quinn::ConnectionError) -> TransportError {
    let (tls, reason) = describe_connection_error(e);
    if tls {
        TransportError::Tls {
            addr: addr.to_string(),
            reason,
        }
    } else {
        TransportError::ConnectionLost {
            addr: addr.to_string(),
            reason,
        }
    }
}

/// Splits `host:port` (with `[v6]:port` support) into host and port.
pub(crate) fn split_host_port(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    Some((host, port))
}

struct Conn {
    #[allow(dead_code)] // keeps the connection open while streams are idle
    quinn: quinn::Connection,
    streams: Box<[StreamHandle]>,
    next: AtomicUsize,
}

impl Conn {
    /// Cheap: a stream's reader or writer marks it failed as soon as the
    /// connection or the stream breaks, so no quinn lock is taken here.
    fn alive(&self) -> bool {
        self.streams.iter().all(|s| !s.pending.is_failed())
    }

    fn pick(&self) -> &StreamHandle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.streams.len();
        &self.streams[i]
    }
}

struct StreamHandle {
    outbox: Arc<Outbox>,
    pending: Arc<Pending>,
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        // The connection is being replaced or dropped: let the writer finish
        // the stream, which ends the reader once the peer has answered.
        self.outbox.close();
    }
}

/// Encoded requests waiting for the stream's writer. Callers encode into
/// the buffer directly; the writer takes everything queued in one write.
#[derive(Default)]
struct Outbox {
    state: Mutex<OutboxState>,
    notify: tokio::sync::Notify,
}

#[derive(Default)]
struct OutboxState {
    buf: Vec<u8>,
    encoder: FrameEncoder,
    closed: bool,
}

impl Outbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, OutboxState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, frame: &RequestFrame, frame_bytes_max: u32) -> Result<(), crate::wire::FrameError> {
        let was_empty = {
            let mut state = self.lock();
            let state = &mut *state;
            let was_empty = state.buf.is_empty();
            state.encoder.encode(frame, frame_bytes_max, &mut state.buf)?;
            was_empty
        };
        if was_empty {
            self.notify.notify_one();
        }
        Ok(())
    }

    fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_one();
    }
}

/// How often a connection's sweeper looks for requests past their deadline.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(10);

type Reply = oneshot::Sender<Result<Response, TransportError>>;

/// A multiplicative hash for sequential request ids (cheaper than SipHash;
/// ids are not attacker-chosen: this side assigns them).
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8 | u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IdMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<IdHasher>>;

/// Requests sent on one stream and not yet answered.
#[derive(Default)]
struct Pending {
    state: Mutex<PendingState>,
    failed: AtomicBool,
}

struct Waiting {
    deadline: Instant,
    timeout: Duration,
    reply: Reply,
}

#[derive(Default)]
struct PendingState {
    waiting: IdMap<Waiting>,
    /// No waiting request has a deadline before this (a lower bound).
    next_deadline: Option<Instant>,
    failed: Option<TransportError>,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, PendingState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn register(
        &self,
        request_id: u64,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<oneshot::Receiver<Result<Response, TransportError>>, TransportError> {
        let mut state = self.lock();
        if let Some(e) = &state.failed {
            return Err(e.clone());
        }
        let (reply, rx) = oneshot::channel();
        state.waiting.insert(
            request_id,
            Waiting {
                deadline,
                timeout,
                reply,
            },
        );
        if state.next_deadline.is_none_or(|d| deadline < d) {
            state.next_deadline = Some(deadline);
        }
        Ok(rx)
    }

    fn complete(&self, request_id: u64, result: Result<Response, TransportError>) {
        let waiting = self.lock().waiting.remove(&request_id);
        if let Some(w) = waiting {
            let _ = w.reply.send(result);
        }
    }

    fn remove(&self, request_id: u64) {
        self.lock().waiting.remove(&request_id);
    }

    /// Fails the requests whose deadline has passed.
    fn expire(&self, now: Instant, addr: &str) {
        let expired: Vec<Waiting> = {
            let mut state = self.lock();
            if state.next_deadline.is_none_or(|d| now < d) {
                return;
            }
            let ids: Vec<u64> = state
                .waiting
                .iter()
                .filter(|(_, w)| w.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            let expired = ids.iter().filter_map(|id| state.waiting.remove(id)).collect();
            state.next_deadline = state.waiting.values().map(|w| w.deadline).min();
            expired
        };
        for w in expired {
            let _ = w.reply.send(Err(TransportError::Timeout {
                addr: addr.to_string(),
                timeout_ms: w.timeout.as_millis() as u64,
            }));
        }
    }

    /// Fails every waiting request and every later registration.
    fn fail(&self, error: TransportError) {
        let waiting = {
            let mut state = self.lock();
            if state.failed.is_none() {
                state.failed = Some(error.clone());
            }
            self.failed.store(true, Ordering::Release);
            std::mem::take(&mut state.waiting)
        };
        for (_, w) in waiting {
            let _ = w.reply.send(Err(error.clone()));
        }
    }

    fn failure(&self) -> Option<TransportError> {
        self.lock().failed.clone()
    }

    fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }
}

/// Forgets a request whose caller gave up (cancellation or encode error).
struct PendingGuard<'a> {
    pending: &'a Pending,
    request_id: u64,
    armed: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.pending.remove(self.request_id);
        }
    }
}

async fn sweep_loop(pendings: Vec<Arc<Pending>>, addr: String) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if pendings.iter().all(|p| p.is_failed()) {
            return;
        }
        let now = Instant::now();
        for p in &pendings {
            p.expire(now, &addr);
        }
    }
}

async fn write_loop(mut send: quinn::SendStream, outbox: Arc<Outbox>, pending: Arc<Pending>, addr: String) {
    let mut spare = Vec::with_capacity(64 * 1024);
    loop {
        outbox.notify.notified().await;
        // Let the other runnable tasks queue their requests first, so one
        // write carries many frames under load; when idle this costs one
        // trip through the scheduler.
        tokio::task::yield_now().await;
        let closed = {
            let mut state = outbox.lock();
            std::mem::swap(&mut state.buf, &mut spare);
            state.closed
        };
        if !spare.is_empty() {
            if let Err(e) = send.write_all(&spare).await {
                let err = match e {
                    quinn::WriteError::ConnectionLost(c) => lost_error(&addr, &c),
                    quinn::WriteError::Stopped(code) if code == FRAME_ERROR_CODE.into() => {
                        TransportError::ConnectionLost {
                            addr: addr.clone(),
                            reason: "the peer rejected a malformed frame and closed the stream".into(),
                        }
                    }
                    other => TransportError::ConnectionLost {
                        addr: addr.clone(),
                        reason: other.to_string(),
                    },
                };
                pending.fail(err);
                return;
            }
            spare.clear();
            if spare.capacity() > 4 << 20 {
                spare = Vec::with_capacity(64 * 1024);
            }
        }
        if closed {
            let _ = send.finish();
            return;
        }
    }
}

async fn read_loop(
    mut recv: quinn::RecvStream,
    pending: Arc<Pending>,
    frame_bytes_max: u32,
    addr: String,
) {
    let mut decoder = FrameDecoder::new(frame_bytes_max);
    let error = loop {
        match recv.read_chunk(usize::MAX, true).await {
            Ok(Some(chunk)) => {
                decoder.extend(&chunk.bytes);
                loop {
                    match decoder.next_frame::<ResponseFrame>() {
                        Ok(Some(frame)) => pending.complete(frame.request_id, Ok(frame.body)),
                        Ok(None) => break,
                        Err(source) => {
                            tracing::warn!(peer = %addr, error = %source, "malformed response frame; closing the stream");
                            let _ = recv.stop(FRAME_ERROR_CODE.into());
                            pending.fail(TransportError::Frame {
                                addr: addr.clone(),
                                source,
                            });
                            return;
                        }
                    }
                }
            }
            Ok(None) => {
                break TransportError::ConnectionLost {
                    addr: addr.clone(),
                    reason: "the peer finished the stream".into(),
                }
            }
            Err(quinn::ReadError::ConnectionLost(e)) => break lost_error(&addr, &e),
            Err(quinn::ReadError::Reset(code)) if code == FRAME_ERROR_CODE.into() => {
                break TransportError::ConnectionLost {
                    addr: addr.clone(),
                    reason: "the peer rejected a malformed frame and closed the stream".into(),
                }
            }
            Err(e) => {
                break TransportError::ConnectionLost {
                    addr: addr.clone(),
                    reason: e.to_string(),
                }
            }
        }
    };
    pending.fail(error);
}

#[cfg(test)]
mod tests {
    use super::split_host_port;

    #[test]
    fn host_port_parsing() {
        assert_eq!(split_host_port("127.0.0.1:7000"), Some(("127.0.0.1", 7000)));
        assert_eq!(split_host_port("[::1]:7000"), Some(("::1", 7000)));
        assert_eq!(split_host_port("node-1.example:80"), Some(("node-1.example", 80)));
        assert_eq!(split_host_port("nohost"), None);
        assert_eq!(split_host_port(":80"), None);
        assert_eq!(split_host_port("h:notaport"), None);
    }
}
