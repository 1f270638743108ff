//! The client side: a QUIC endpoint and one multiplexed connection per peer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::{mpsc, oneshot, Semaphore};

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

    /// Like [`Peer::call`] with an explicit timeout.
    pub async fn call_timeout(
        &self,
        epoch: Epoch,
        body: Request,
        timeout: Duration,
    ) -> Result<Response, TransportError> {
        match tokio::time::timeout(timeout, self.call_inner(epoch, body)).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Timeout {
                addr: self.inner.addr.clone(),
                timeout_ms: timeout.as_millis() as u64,
            }),
        }
    }

    async fn call_inner(&self, epoch: Epoch, body: Request) -> Result<Response, TransportError> {
        let inner = &*self.inner;
        // The semaphore is never closed, so acquire cannot fail.
        let _permit = inner
            .in_flight
            .acquire()
            .await
            .map_err(|_| TransportError::Endpoint("peer closed".into()))?;
        let conn = self.connection().await?;
        let request_id = inner.next_request_id.fetch_add(1, Ordering::Relaxed);
        let stream = conn.pick();
        let rx = stream.pending.register(request_id)?;
        let _guard = PendingGuard {
            pending: &stream.pending,
            request_id,
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
        if stream.tx.send(frame).await.is_err() {
            return Err(stream.pending.failure().unwrap_or_else(|| self.lost("stream closed")));
        }
        match rx.await {
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
            let (tx, rx) = mpsc::channel(inner.config.requests_in_flight_max as usize);
            tokio::spawn(write_loop(
                send,
                rx,
                pending.clone(),
                inner.config.clone(),
                addr.clone(),
            ));
            tokio::spawn(read_loop(
                recv,
                pending.clone(),
                inner.config.frame_bytes_max,
                addr.clone(),
            ));
            streams.push(StreamHandle { tx, pending });
        }
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
    quinn: quinn::Connection,
    streams: Box<[StreamHandle]>,
    next: AtomicUsize,
}

impl Conn {
    fn alive(&self) -> bool {
        self.quinn.close_reason().is_none() && self.streams.iter().all(|s| !s.pending.is_failed())
    }

    fn pick(&self) -> &StreamHandle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.streams.len();
        &self.streams[i]
    }
}

struct StreamHandle {
    tx: mpsc::Sender<RequestFrame>,
    pending: Arc<Pending>,
}

type Reply = oneshot::Sender<Result<Response, TransportError>>;

/// Requests sent on one stream and not yet answered.
#[derive(Default)]
struct Pending {
    state: Mutex<PendingState>,
}

#[derive(Default)]
struct PendingState {
    waiting: HashMap<u64, Reply>,
    failed: Option<TransportError>,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, PendingState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn register(&self, request_id: u64) -> Result<oneshot::Receiver<Result<Response, TransportError>>, TransportError> {
        let mut state = self.lock();
        if let Some(e) = &state.failed {
            return Err(e.clone());
        }
        let (tx, rx) = oneshot::channel();
        state.waiting.insert(request_id, tx);
        Ok(rx)
    }

    fn complete(&self, request_id: u64, result: Result<Response, TransportError>) {
        let reply = self.lock().waiting.remove(&request_id);
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
    }

    fn remove(&self, request_id: u64) {
        self.lock().waiting.remove(&request_id);
    }

    /// Fails every waiting request and every later registration.
    fn fail(&self, error: TransportError) {
        let waiting = {
            let mut state = self.lock();
            if state.failed.is_none() {
                state.failed = Some(error.clone());
            }
            std::mem::take(&mut state.waiting)
        };
        for (_, reply) in waiting {
            let _ = reply.send(Err(error.clone()));
        }
    }

    fn failure(&self) -> Option<TransportError> {
        self.lock().failed.clone()
    }

    fn is_failed(&self) -> bool {
        self.lock().failed.is_some()
    }
}

/// Forgets a request whose caller gave up (timeout or cancellation).
struct PendingGuard<'a> {
    pending: &'a Pending,
    request_id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.pending.remove(self.request_id);
    }
}

async fn write_loop(
    mut send: quinn::SendStream,
    mut rx: mpsc::Receiver<RequestFrame>,
    pending: Arc<Pending>,
    config: Arc<TransportConfig>,
    addr: String,
) {
    let mut encoder = FrameEncoder::new();
    let mut buf = Vec::with_capacity(64 * 1024);
    let batch_max = config.write_batch_bytes_max as usize;
    while let Some(first) = rx.recv().await {
        buf.clear();
        let mut next = Some(first);
        while let Some(frame) = next.take() {
            let mark = buf.len();
            if let Err(e) = encoder.encode(&frame, config.frame_bytes_max, &mut buf) {
                buf.truncate(mark);
                pending.complete(frame.header.request_id, Err(TransportError::Encode(e)));
            }
            if buf.len() < batch_max {
                next = rx.try_recv().ok();
            }
        }
        if buf.is_empty() {
            continue;
        }
        if let Err(e) = send.write_all(&buf).await {
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
            break;
        }
    }
    let _ = send.finish();
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
