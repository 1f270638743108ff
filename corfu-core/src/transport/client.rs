//! The client side: a QUIC endpoint and one multiplexed connection per peer.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use dashmap::DashMap;
use tokio::sync::{oneshot, Notify, Semaphore};

use super::config::TransportConfig;
use super::{describe_connection_error, TransportError, FRAME_ERROR_CODE, STALLED_CODE};
use crate::types::{ClusterId, Epoch};
use crate::wire::frame::{FrameDecoder, FrameEncoder};
use crate::wire::FrameError;

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
    /// Creates an endpoint on an ephemeral local port (of
    /// `config.local_ip`, if set). `cluster_id` is put
    /// in every request header ([`ClusterId::ANY`] only works for `Ping`
    /// and `Info`).
    pub fn new(
        crypto: quinn::crypto::rustls::QuicClientConfig,
        config: TransportConfig,
        cluster_id: ClusterId,
    ) -> Result<ClientEndpoint, TransportError> {
        config.validate().map_err(TransportError::Endpoint)?;
        let bind = config.client_bind();
        let mut endpoint = quinn::Endpoint::client(bind)
            .map_err(|e| TransportError::Endpoint(format!("binding {bind}: {e}")))?;
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
        let mut frame = RequestFrame {
            header: Header {
                protocol_version: PROTOCOL_VERSION,
                cluster_id: inner.cluster_id,
                epoch,
                request_id: 0,
            },
            body,
        };
        let config = &inner.config;
        let limit = config.outbox_bytes_max as usize;
        let send = |frame: &mut RequestFrame| {
            stream.send(frame, deadline, timeout, config.frame_bytes_max, limit)
        };
        let (request_id, rx) = match send(&mut frame)? {
            Some(sent) => sent,
            // The outbox is full: wait for room, within the timeout.
            None => loop {
                let room = stream.room.notified();
                tokio::pin!(room);
                room.as_mut().enable();
                if let Some(sent) = send(&mut frame)? {
                    break sent;
                }
                if tokio::time::timeout_at(deadline.into(), room)
                    .await
                    .is_err()
                {
                    return Err(TransportError::OutboxFull {
                        addr: inner.addr.clone(),
                        held_bytes: stream.outbox_bytes() as u64,
                        limit_bytes: limit as u64,
                    });
                }
            },
        };
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

    /// Bytes of encoded requests held for this peer and not yet taken by
    /// QUIC (queued, or in the writer's hands), over the live connection's
    /// streams; at most `outbox_bytes_max` per stream (see
    /// [`TransportConfig::outbox_bytes_max`]). For tests and monitoring;
    /// takes each stream's lock once.
    pub fn outbox_bytes(&self) -> u64 {
        let conn = self.inner.conn.load();
        conn.as_ref()
            .map(|c| c.streams.iter().map(|s| s.outbox_bytes() as u64).sum())
            .unwrap_or(0)
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
        let heard = Arc::new(Heard::new());
        for _ in 0..inner.config.streams_per_connection {
            let (send, recv) = connection
                .open_bi()
                .await
                .map_err(|e| connect_error(&addr, &e))?;
            let stream = Arc::new(StreamShared::new(addr.clone(), heard.clone()));
            tokio::spawn(write_loop(
                send,
                stream.clone(),
                connection.clone(),
                inner.config.write_batch_bytes_max as usize,
                inner.config.request_timeout(),
            ));
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
    /// When any stream of the connection last received bytes.
    heard: Arc<Heard>,
    state: Mutex<StreamState>,
    /// Wakes the writer when the outbox becomes non-empty, is closed, or
    /// the stream fails.
    writable: Notify,
    /// Wakes the callers waiting for room in the outbox (all of them).
    room: Notify,
    failed: AtomicBool,
}

#[derive(Default)]
struct StreamState {
    next_request_id: u64,
    waiting: IdMap<Waiting>,
    /// No waiting request has a deadline before this (a lower bound).
    next_deadline: Option<Instant>,
    failed: Option<TransportError>,
    outbox: Outbox,
    encoder: FrameEncoder,
    closed: bool,
}

/// The encoded requests of one stream that QUIC has not taken yet, in
/// order, counted against `outbox_bytes_max`.
///
/// Frames lie back to back in one buffer (no allocation per request). A
/// frame whose caller gave up (timed out, or dropped its call) before the
/// writer took it is marked dead and never sent; its bytes still count
/// until the writer passes them or a compaction reclaims them, which
/// happens once dead bytes make up half of what is queued (so each byte is
/// moved at most about once, and at least half the limit is always usable).
#[derive(Default)]
struct Outbox {
    /// Frames; the bytes before `head` were taken by the writer.
    buf: Vec<u8>,
    head: usize,
    /// One per frame in `buf[head..]`, in request-id order.
    frames: VecDeque<Queued>,
    /// Bytes of dead frames in `buf[head..]`.
    dead: usize,
    /// Bytes the writer took that QUIC has not accepted yet.
    writing: usize,
}

#[derive(Clone, Copy)]
struct Queued {
    request_id: u64,
    len: usize,
    dead: bool,
}

impl Outbox {
    /// Bytes held for the peer: queued (dead frames included until
    /// reclaimed) and in the writer's hands.
    fn held(&self) -> usize {
        self.buf.len() - self.head + self.writing
    }

    /// Encodes `frame` at the end. `Ok(false)` (nothing queued) if it
    /// would take the bytes held past `limit`; a frame alone is always
    /// taken, so one larger than the limit waits for an empty outbox.
    fn push(
        &mut self,
        encoder: &mut FrameEncoder,
        frame: &RequestFrame,
        frame_bytes_max: u32,
        limit: usize,
    ) -> Result<bool, FrameError> {
        let mark = self.buf.len();
        encoder.encode(frame, frame_bytes_max, &mut self.buf)?;
        let len = self.buf.len() - mark;
        let held = self.held();
        if held > limit && held > len {
            self.buf.truncate(mark);
            return Ok(false);
        }
        self.frames.push_back(Queued {
            request_id: frame.header.request_id,
            len,
            dead: false,
        });
        Ok(true)
    }

    /// Marks the frame of `request_id` dead if the writer has not taken it
    /// yet; true if it did.
    fn remove(&mut self, request_id: u64) -> bool {
        let Ok(i) = self
            .frames
            .binary_search_by_key(&request_id, |q| q.request_id)
        else {
            return false;
        };
        let queued = &mut self.frames[i];
        if queued.dead {
            return false;
        }
        queued.dead = true;
        self.dead += queued.len;
        if self.dead * 2 >= self.buf.len() - self.head {
            self.compact();
        }
        true
    }

    /// Moves the live frames to the front of the buffer, dropping the dead.
    fn compact(&mut self) {
        let mut from = self.head;
        let mut to = 0;
        for queued in &self.frames {
            if !queued.dead {
                self.buf.copy_within(from..from + queued.len, to);
                to += queued.len;
            }
            from += queued.len;
        }
        self.buf.truncate(to);
        self.head = 0;
        self.frames.retain(|q| !q.dead);
        self.dead = 0;
    }

    /// Moves whole live frames, in order, into `out` (empty on entry):
    /// at least one, then as many as fit in `max` bytes. They count as
    /// being written until [`Outbox::written`] is told.
    fn take(&mut self, out: &mut Vec<u8>, max: usize) {
        while let Some(&queued) = self.frames.front() {
            if !queued.dead && !out.is_empty() && out.len() + queued.len > max {
                break;
            }
            self.frames.pop_front();
            let end = self.head + queued.len;
            if queued.dead {
                self.dead -= queued.len;
            } else {
                out.extend_from_slice(&self.buf[self.head..end]);
            }
            self.head = end;
        }
        if self.frames.is_empty() {
            self.buf.clear();
            self.head = 0;
            if self.buf.capacity() > 4 << 20 {
                self.buf = Vec::with_capacity(64 * 1024);
            }
        } else if self.head * 2 >= self.buf.len() {
            self.buf.drain(..self.head);
            self.head = 0;
        }
        self.writing += out.len();
    }

    /// QUIC accepted `n` bytes of what the writer took.
    fn written(&mut self, n: usize) {
        self.writing = self.writing.saturating_sub(n);
    }

    /// Drops everything (the stream failed).
    fn clear(&mut self) {
        *self = Outbox::default();
    }
}

/// When the streams of one connection last received bytes, shared by them:
/// a peer is silent only if nothing arrived on any of its streams (one
/// stream waiting for a slow answer while the other streams are answered
/// is not silence).
struct Heard {
    /// When the connection was opened; `last_ns` counts from here.
    opened: Instant,
    /// When a reader last received bytes, in ns since `opened`.
    last_ns: AtomicU64,
}

impl Heard {
    fn new() -> Heard {
        Heard {
            opened: Instant::now(),
            last_ns: AtomicU64::new(0),
        }
    }

    fn now(&self) {
        let ns = self.opened.elapsed().as_nanos() as u64;
        self.last_ns.fetch_max(ns, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.opened + Duration::from_nanos(self.last_ns.load(Ordering::Relaxed))
    }
}

impl StreamShared {
    fn new(addr: String, heard: Arc<Heard>) -> StreamShared {
        StreamShared {
            addr,
            heard,
            state: Mutex::new(StreamState::default()),
            writable: Notify::new(),
            room: Notify::new(),
            failed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StreamState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Assigns a request id, encodes the request into the outbox and
    /// registers the caller; `None` if the outbox has no room for it (see
    /// [`Outbox::push`]).
    #[allow(clippy::type_complexity)]
    fn send(
        &self,
        frame: &mut RequestFrame,
        deadline: Instant,
        timeout: Duration,
        frame_bytes_max: u32,
        limit: usize,
    ) -> Result<Option<(u64, oneshot::Receiver<Result<Response, TransportError>>)>, TransportError>
    {
        let (request_id, was_empty) = {
            let mut guard = self.lock();
            let state = &mut *guard;
            if let Some(e) = &state.failed {
                return Err(e.clone());
            }
            state.next_request_id += 1;
            frame.header.request_id = state.next_request_id;
            let was_empty = state.outbox.frames.is_empty();
            let queued = state
                .outbox
                .push(&mut state.encoder, frame, frame_bytes_max, limit)
                .map_err(TransportError::Encode)?;
            if !queued {
                return Ok(None);
            }
            let (reply, rx) = oneshot::channel();
            state.waiting.insert(
                frame.header.request_id,
                Waiting {
                    deadline,
                    timeout,
                    reply,
                },
            );
            if state.next_deadline.is_none_or(|d| deadline < d) {
                state.next_deadline = Some(deadline);
            }
            ((frame.header.request_id, rx), was_empty)
        };
        if was_empty {
            self.writable.notify_one();
        }
        Ok(Some(request_id))
    }

    /// Bytes of encoded requests held for the peer (see [`Outbox::held`]).
    fn outbox_bytes(&self) -> usize {
        self.lock().outbox.held()
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

    /// Forgets a request whose caller gave up; if it was not written
    /// yet, it never will be.
    fn forget(&self, request_id: u64) {
        let unsent = {
            let mut state = self.lock();
            state.waiting.remove(&request_id);
            state.outbox.remove(request_id)
        };
        if unsent {
            self.room.notify_waiters();
        }
    }

    fn received(&self) {
        self.heard.now();
    }

    /// Fails the requests whose deadline has passed (those not written yet
    /// are dropped from the outbox, never sent). If nothing at all has
    /// arrived on the connection since such a request was sent, the peer is
    /// presumed gone (crashed, partitioned) and the whole stream fails, so
    /// the next request reconnects instead of waiting for QUIC's idle
    /// timeout.
    fn expire(&self, now: Instant) {
        let (expired, unsent): (Vec<Waiting>, bool) = {
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
            let mut unsent = false;
            for id in &ids {
                unsent |= state.outbox.remove(*id);
            }
            state.next_deadline = state.waiting.values().map(|w| w.deadline).min();
            (expired, unsent)
        };
        if unsent {
            self.room.notify_waiters();
        }
        let last_received = self.heard.last();
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
            state.outbox.clear();
            self.failed.store(true, Ordering::Release);
            std::mem::take(&mut state.waiting)
        };
        // The writer stops; callers waiting for room see the failure.
        self.writable.notify_one();
        self.room.notify_waiters();
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

/// Writes the stream's outbox, `batch_max` bytes at a time (whole
/// frames). Stops when the stream is closed or fails. If QUIC takes none
/// of a batch's bytes for `stall` (the peer stopped reading the stream:
/// its flow-control window stays full), the stream fails and the whole
/// connection is closed, so the next request reconnects and the callers
/// learn why at once instead of at their timeouts.
async fn write_loop(
    mut send: quinn::SendStream,
    stream: Arc<StreamShared>,
    connection: quinn::Connection,
    batch_max: usize,
    stall: Duration,
) {
    let addr = &stream.addr;
    let mut batch = Vec::with_capacity(64 * 1024);
    loop {
        let closed = {
            let mut state = stream.lock();
            state.outbox.take(&mut batch, batch_max);
            state.closed
        };
        if stream.is_failed() {
            let _ = send.reset(STALLED_CODE.into());
            return;
        }
        if batch.is_empty() {
            if closed {
                let _ = send.finish();
                return;
            }
            stream.writable.notified().await;
            // Let the other runnable tasks queue their requests first, so
            // one write carries many frames under load; when idle this
            // costs one trip through the scheduler.
            tokio::task::yield_now().await;
            continue;
        }
        let mut at = 0;
        while at < batch.len() {
            let stalled = tokio::time::sleep(stall);
            tokio::pin!(stalled);
            let written = loop {
                tokio::select! {
                    biased;
                    written = send.write(&batch[at..]) => break Some(written),
                    // A new request, or the stream failed: look again.
                    () = stream.writable.notified() => {
                        if stream.is_failed() {
                            let _ = send.reset(STALLED_CODE.into());
                            return;
                        }
                    }
                    () = &mut stalled => break None,
                }
            };
            match written {
                Some(Ok(n)) => {
                    at += n;
                    stream.lock().outbox.written(n);
                    stream.room.notify_waiters();
                }
                Some(Err(e)) => {
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
                None => {
                    let held = stream.outbox_bytes();
                    tracing::warn!(peer = %addr, held_bytes = held, "the peer is not reading its requests; dropping the connection");
                    stream.fail(TransportError::ConnectionLost {
                        addr: addr.clone(),
                        reason: format!(
                            "the peer is not reading: it took none of our requests for {} ms \
                             ({held} bytes waiting); dropped the connection",
                            stall.as_millis()
                        ),
                    });
                    connection.close(STALLED_CODE.into(), b"the peer is not reading");
                    return;
                }
            }
        }
        batch.clear();
        if batch.capacity() > 4 << 20 {
            batch = Vec::with_capacity(64 * 1024);
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
    use super::{split_host_port, Outbox};
    use crate::wire::frame::{FrameDecoder, FrameEncoder};
    use crate::wire::{Header, Request, RequestFrame};

    fn ping(request_id: u64) -> RequestFrame {
        RequestFrame {
            header: Header {
                protocol_version: crate::wire::PROTOCOL_VERSION,
                cluster_id: crate::types::ClusterId(1),
                epoch: 0,
                request_id,
            },
            body: Request::Ping,
        }
    }

    fn ids(bytes: &[u8]) -> Vec<u64> {
        let mut decoder = FrameDecoder::new(1 << 20);
        decoder.extend(bytes);
        let mut ids = Vec::new();
        while let Some(frame) = decoder.next_frame::<RequestFrame>().unwrap() {
            ids.push(frame.header.request_id);
        }
        ids
    }

    #[test]
    fn outbox_limits_bytes_and_never_sends_removed_frames() {
        let mut encoder = FrameEncoder::new();
        let mut outbox = Outbox::default();
        assert!(outbox.push(&mut encoder, &ping(1), 1 << 20, 1).unwrap());
        let frame = outbox.held();
        // A frame alone is taken even above the limit; a second is not.
        assert!(!outbox.push(&mut encoder, &ping(2), 1 << 20, frame).unwrap());
        assert_eq!(outbox.held(), frame);
        let limit = 10 * frame;
        for id in 3..=10 {
            assert!(outbox
                .push(&mut encoder, &ping(id), 1 << 20, limit)
                .unwrap());
        }
        assert_eq!(outbox.held(), 9 * frame);
        // Removed before the writer takes them: never written.
        assert!(outbox.remove(4));
        assert!(!outbox.remove(4));
        assert!(!outbox.remove(2), "2 was never queued");
        assert!(outbox.remove(1));
        let mut batch = Vec::new();
        outbox.take(&mut batch, 3 * frame);
        assert_eq!(ids(&batch), vec![3, 5, 6]);
        assert!(!outbox.remove(5), "taken by the writer");
        // Bytes being written count until QUIC accepts them.
        assert_eq!(outbox.held(), 8 * frame - frame);
        outbox.written(batch.len());
        // Removing most of the rest compacts the queue.
        for id in [7, 8, 9] {
            assert!(outbox.remove(id));
        }
        assert_eq!(outbox.held(), frame);
        batch.clear();
        outbox.take(&mut batch, limit);
        assert_eq!(ids(&batch), vec![10]);
        outbox.written(batch.len());
        assert_eq!(outbox.held(), 0);
    }

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
