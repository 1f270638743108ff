//! The client side: a QUIC endpoint and one multiplexed connection per peer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use dashmap::DashMap;
use tokio::sync::{oneshot, Notify, Semaphore};

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
            .or_insert_with(|| {
                Peer::new(
                    addr,
                    self.inner.endpoint.clone(),
                    self.inner.config.clone(),
                    self.inner.cluster_id,
                )
            })
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
        f.debug_struct("Peer")
            .field("addr", &self.inner.addr)
            .finish()
    }
}

struct PeerInner {
    addr: String,
    endpoint: quinn::Endpoint,
    config: Arc<TransportConfig>,
    cluster_id: ClusterId,
    /// The live connection; read on every request without locking.
    conn: ArcSwapOption<Conn>,
    /// Serializes connection attempts; remembers the last failure.
    connecting: tokio::sync::Mutex<Option<(Instant, TransportError)>>,
    in_flight: Semaphore,
}

/// After a failed connection attempt, callers within this time get the same
/// error instead of each waiting for its own attempt.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);

/// How often a connection's sweeper looks for requests past their deadline.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(10);

thread_local! {
    /// Per-thread stream choice: callers on one thread share a stream, so
    /// threads rarely contend on a stream's lock.
    static STREAM_CURSOR: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}

impl Peer {
    fn new(
        addr: &str,
        endpoint: quinn::Endpoint,
        config: Arc<TransportConfig>,
        cluster_id: ClusterId,
    ) -> Peer {
        let permits = config.requests_in_flight_max as usize;
        Peer {
            inner: Arc::new(PeerInner {
                addr: addr.to_string(),
                endpoint,
                config,
                cluster_id,
                conn: ArcSwapOption::empty(),
                connecting: tokio::sync::Mutex::new(None),
                in_flight: Semaphore::new(permits),
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
        self.call_timeout(epoch, body, self.inner.config.request_timeout())
            .await
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
            Err(_) => {
                match tokio::time::timeout_at(deadline.into(), inner.in_flight.acquire()).await {
                    Ok(Ok(permit)) => permit,
                    Ok(Err(_)) => return Err(TransportError::Endpoint("peer closed".into())),
                    Err(_) => return Err(timed_out()),
                }
            }
        };
        let stream = match self.current_stream() {
            Some(stream) => stream,
            None => match tokio::time::timeout_at(deadline.into(), self.connection()).await {
                Ok(conn) => conn?.pick(),
                Err(_) => return Err(timed_out()),
            },
        };
        let header = Header {
            protocol_version: PROTOCOL_VERSION,
            cluster_id: inner.cluster_id,
            epoch,
            request_id: 0,
        };
        let (request_id, rx) = stream.send(
            header,
            body,
            deadline,
            timeout,
            inner.config.frame_bytes_max,
        )?;
        let mut guard = ForgetOnDrop {
            stream: &stream,
            request_id,
            armed: true,
        };
        let result = rx.await;
        // Whoever completed the request already removed it.
        guard.armed = false;
        match result {
            Ok(result) => result,
            Err(_) => Err(stream
                .failure()
                .unwrap_or_else(|| TransportError::ConnectionLost {
                    addr: inner.addr.clone(),
                    reason: "stream closed".into(),
                })),
        }
    }

    /// A stream of the live connection, if there is one.
    fn current_stream(&self) -> Option<Arc<StreamShared>> {
        let conn = self.inner.conn.load();
        conn.as_ref().filter(|c| c.alive()).map(|c| c.pick())
    }

    /// The live connection, establishing one if there is none (one attempt
    /// at a time; failures are shared with callers arriving within
    /// [`RECONNECT_BACKOFF`]).
    async fn connection(&self) -> Result<Arc<Conn>, TransportError> {
        let live = |conn: Option<Arc<Conn>>| conn.filter(|c| c.alive());
        if let Some(c) = live(self.inner.conn.load_full()) {
            return Ok(c);
        }
        let mut last_failure = self.inner.connecting.lock().await;
        if let Some(c) = live(self.inner.conn.load_full()) {
            return Ok(c);
        }
        if let Some((at, err)) = last_failure.as_ref() {
            if at.elapsed() < RECONNECT_BACKOFF {
                return Err(match err.clone() {
                    TransportError::Connect { addr, reason } => TransportError::Connect {
                        addr,
                        reason: format!(
                            "{reason} (a moment ago; retrying after {} ms)",
                            RECONNECT_BACKOFF.as_millis()
                        ),
                    },
                    other => other,
                });
            }
        }
        match self.connect().await {
            Ok(conn) => {
                *last_failure = None;
                let conn = Arc::new(conn);
                self.inner.conn.store(Some(conn.clone()));
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
        let connecting =
            inner
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
            let stream = Arc::new(StreamShared::new(addr.clone()));
            tokio::spawn(write_loop(send, stream.clone()));
            tokio::spawn(read_loop(
                recv,
                stream.clone(),
                inner.config.frame_bytes_max,
            ));
            streams.push(stream);
        }
        tokio::spawn(sweep_loop(streams.clone()));
        tracing::debug!(peer = %addr, "connected");
        Ok(Conn {
            _quinn: connection,
            streams: streams.into_boxed_slice(),
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
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    Some((host, port))
}

/// One established connection and its long-lived streams.
struct Conn {
    /// Keeps the connection open while its streams are idle.
    _quinn: quinn::Connection,
    streams: Box<[Arc<StreamShared>]>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Replaced or dropped: let each writer finish its stream, which ends
        // the reader once the peer has answered what was sent.
        for stream in self.streams.iter() {
            stream.close();
        }
    }
}

impl Conn {
    /// Cheap: a stream's reader or writer marks it failed as soon as the
    /// connection or the stream breaks, so no quinn lock is taken here.
    fn alive(&self) -> bool {
        self.streams.iter().all(|s| !s.is_failed())
    }

    fn pick(&self) -> Arc<StreamShared> {
        let n = self.streams.len();
        let i = STREAM_CURSOR.with(|cursor| {
            let mut i = cursor.get();
            if i == usize::MAX {
                i = rand::random::<u32>() as usize;
            }
            cursor.set(i.wrapping_add(1));
            i
        });
        self.streams[i % n].clone()
    }
}

type Reply = oneshot::Sender<Result<Response, TransportError>>;

/// A multiplicative hash for request ids (cheaper than SipHash; ids are
/// assigned by this side, not chosen by the peer).
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

struct Waiting {
    deadline: Instant,
    timeout: Duration,
    reply: Reply,
}

/// What callers, the writer, the reader and the sweeper of one stream
/// share: the requests waiting for answers and the encoded requests waiting
/// to be written, under one lock.
struct StreamShared {
    addr: String,
    /// When the stream was opened; `last_received_ns` counts from here.
    opened: Instant,
    /// When the reader last received bytes, in ns since `opened`.
    last_received_ns: AtomicU64,
    state: Mutex<StreamState>,
    /// Wakes the writer when the outbox becomes non-empty or is closed.
    writable: Notify,
    failed: AtomicBool,
}

#[derive(Default)]
struct StreamState {
    next_request_id: u64,
    waiting: IdMap<Waiting>,
    /// No waiting request has a deadline before this (a lower bound).
    next_deadline: Option<Instant>,
    failed: Option<TransportError>,
    outbox: Vec<u8>,
    encoder: FrameEncoder,
    closed: bool,
}

impl StreamShared {
    fn new(addr: String) -> StreamShared {
        StreamShared {
            addr,
            opened: Instant::now(),
            last_received_ns: AtomicU64::new(0),
            state: Mutex::new(StreamState::default()),
            writable: Notify::new(),
            failed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StreamState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Assigns a request id, encodes the request into the outbox and
    /// registers the caller.
    #[allow(clippy::type_complexity)]
    fn send(
        &self,
        mut header: Header,
        body: Request,
        deadline: Instant,
        timeout: Duration,
        frame_bytes_max: u32,
    ) -> Result<(u64, oneshot::Receiver<Result<Response, TransportError>>), TransportError> {
        let (reply, rx) = oneshot::channel();
        let (request_id, was_empty) = {
            let mut guard = self.lock();
            let state = &mut *guard;
            if let Some(e) = &state.failed {
                return Err(e.clone());
            }
            state.next_request_id += 1;
            header.request_id = state.next_request_id;
            let was_empty = state.outbox.is_empty();
            state
                .encoder
                .encode(
                    &RequestFrame { header, body },
                    frame_bytes_max,
                    &mut state.outbox,
                )
                .map_err(TransportError::Encode)?;
            state.waiting.insert(
                header.request_id,
                Waiting {
                    deadline,
                    timeout,
                    reply,
                },
            );
            if state.next_deadline.is_none_or(|d| deadline < d) {
                state.next_deadline = Some(deadline);
            }
            (header.request_id, was_empty)
        };
        if was_empty {
            self.writable.notify_one();
        }
        Ok((request_id, rx))
    }

    /// Delivers answers (one lock for a whole read).
    fn complete(&self, answers: &mut Vec<ResponseFrame>) {
        let mut replies = Vec::with_capacity(answers.len());
        {
            let mut state = self.lock();
            for answer in answers.drain(..) {
                if let Some(w) = state.waiting.remove(&answer.request_id) {
                    replies.push((w.reply, answer.body));
                }
            }
        }
        for (reply, body) in replies {
            let _ = reply.send(Ok(body));
        }
    }

    fn forget(&self, request_id: u64) {
        self.lock().waiting.remove(&request_id);
    }

    fn received(&self) {
        let ns = self.opened.elapsed().as_nanos() as u64;
        self.last_received_ns.store(ns, Ordering::Relaxed);
    }

    /// Fails the requests whose deadline has passed. If nothing at all has
    /// arrived on the stream since such a request was sent, the peer is
    /// presumed gone (crashed, partitioned) and the whole stream fails, so
    /// the next request reconnects instead of waiting for QUIC's idle
    /// timeout.
    fn expire(&self, now: Instant) {
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
            let expired = ids
                .iter()
                .filter_map(|id| state.waiting.remove(id))
                .collect();
            state.next_deadline = state.waiting.values().map(|w| w.deadline).min();
            expired
        };
        let last_received =
            self.opened + Duration::from_nanos(self.last_received_ns.load(Ordering::Relaxed));
        let silent = expired.iter().any(|w| {
            w.deadline
                .checked_sub(w.timeout)
                .is_some_and(|sent| last_received < sent)
        });
        for w in expired {
            let _ = w.reply.send(Err(TransportError::Timeout {
                addr: self.addr.clone(),
                timeout_ms: w.timeout.as_millis() as u64,
            }));
        }
        if silent {
            tracing::debug!(peer = %self.addr, "no answer and no bytes from the peer; dropping the connection");
            self.fail(TransportError::ConnectionLost {
                addr: self.addr.clone(),
                reason: "the peer sent nothing while a request timed out; reconnecting".into(),
            });
        }
    }

    /// Fails every waiting request and every later one.
    fn fail(&self, error: TransportError) {
        let waiting = {
            let mut state = self.lock();
            if state.failed.is_none() {
                state.failed = Some(error.clone());
            }
            state.outbox = Vec::new();
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

    fn close(&self) {
        self.lock().closed = true;
        self.writable.notify_one();
    }
}

/// Forgets a request whose caller gave up (its future was dropped).
struct ForgetOnDrop<'a> {
    stream: &'a StreamShared,
    request_id: u64,
    armed: bool,
}

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.stream.forget(self.request_id);
        }
    }
}

async fn sweep_loop(streams: Vec<Arc<StreamShared>>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if streams.iter().all(|s| s.is_failed()) {
            return;
        }
        let now = Instant::now();
        for s in &streams {
            s.expire(now);
        }
    }
}

async fn write_loop(mut send: quinn::SendStream, stream: Arc<StreamShared>) {
    let mut spare = Vec::with_capacity(64 * 1024);
    loop {
        stream.writable.notified().await;
        // Let the other runnable tasks queue their requests first, so one
        // write carries many frames under load; when idle this costs one
        // trip through the scheduler.
        tokio::task::yield_now().await;
        let closed = {
            let mut state = stream.lock();
            std::mem::swap(&mut state.outbox, &mut spare);
            state.closed
        };
        if !spare.is_empty() {
            if let Err(e) = send.write_all(&spare).await {
                let addr = &stream.addr;
                let err = match e {
                    quinn::WriteError::ConnectionLost(c) => lost_error(addr, &c),
                    quinn::WriteError::Stopped(code) if code == FRAME_ERROR_CODE.into() => {
                        TransportError::ConnectionLost {
                            addr: addr.clone(),
                            reason: "the peer rejected a malformed frame and closed the stream"
                                .into(),
                        }
                    }
                    other => TransportError::ConnectionLost {
                        addr: addr.clone(),
                        reason: other.to_string(),
                    },
                };
                stream.fail(err);
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

async fn read_loop(mut recv: quinn::RecvStream, stream: Arc<StreamShared>, frame_bytes_max: u32) {
    let addr = stream.addr.clone();
    let mut decoder = FrameDecoder::new(frame_bytes_max);
    let mut answers = Vec::new();
    let error = loop {
        match recv.read_chunk(usize::MAX, true).await {
            Ok(Some(chunk)) => {
                stream.received();
                decoder.extend(&chunk.bytes);
                let decoded = loop {
                    match decoder.next_frame::<ResponseFrame>() {
                        Ok(Some(frame)) => answers.push(frame),
                        Ok(None) => break Ok(()),
                        Err(e) => break Err(e),
                    }
                };
                stream.complete(&mut answers);
                if let Err(source) = decoded {
                    tracing::warn!(peer = %addr, error = %source, "malformed response frame; closing the stream");
                    let _ = recv.stop(FRAME_ERROR_CODE.into());
                    break TransportError::Frame { addr, source };
                }
            }
            Ok(None) => {
                break TransportError::ConnectionLost {
                    addr,
                    reason: "the peer finished the stream".into(),
                }
            }
            Err(quinn::ReadError::ConnectionLost(e)) => break lost_error(&addr, &e),
            Err(quinn::ReadError::Reset(code)) if code == FRAME_ERROR_CODE.into() => {
                break TransportError::ConnectionLost {
                    addr,
                    reason: "the peer rejected a malformed frame and closed the stream".into(),
                }
            }
            Err(e) => {
                break TransportError::ConnectionLost {
                    addr,
                    reason: e.to_string(),
                }
            }
        }
    };
    stream.fail(error);
}

#[cfg(test)]
mod tests {
    use super::split_host_port;

    #[test]
    fn host_port_parsing() {
        assert_eq!(split_host_port("127.0.0.1:7000"), Some(("127.0.0.1", 7000)));
        assert_eq!(split_host_port("[::1]:7000"), Some(("::1", 7000)));
        assert_eq!(
            split_host_port("node-1.example:80"),
            Some(("node-1.example", 80))
        );
        assert_eq!(split_host_port("nohost"), None);
        assert_eq!(split_host_port(":80"), None);
        assert_eq!(split_host_port("h:notaport"), None);
    }
}
