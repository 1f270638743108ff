//! The server side: accept connections and streams, decode requests, hand
//! them to a [`Service`], write the answers back.
//!
//! Each stream is served by one task that reads, dispatches and writes:
//! requests of a stream run concurrently (up to
//! `server_stream_requests_in_flight_max`), and answers that are ready
//! together leave in one write.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;

use super::config::TransportConfig;
use super::{describe_connection_error, TransportError, FRAME_ERROR_CODE, SHUTDOWN_CODE};
use crate::wire::frame::{FrameDecoder, FrameEncoder};
use crate::wire::{Header, Request, RequestFrame, Response, ResponseFrame};

/// What a node does with requests. Implementations check the header
/// (cluster, version, epoch) and dispatch to roles.
#[async_trait::async_trait]
pub trait Service: Send + Sync + 'static {
    /// Answers one request.
    async fn handle(&self, header: Header, body: Request) -> Response;

    /// Answers at once, without allocating a future, when the answer needs
    /// no waiting (in-memory reads, tokens, errors); otherwise gives the
    /// request back and the server calls [`Service::handle`]. The default
    /// always defers.
    // The request is handed back by value, not copied: a large `Err` is
    // only a move.
    #[allow(clippy::result_large_err)]
    fn handle_now(&self, header: &Header, body: Request) -> Result<Response, Request> {
        let _ = header;
        Err(body)
    }
}

/// Binds a QUIC server endpoint with a random stateless-reset key.
pub fn bind_server(
    addr: SocketAddr,
    crypto: quinn::crypto::rustls::QuicServerConfig,
    config: &TransportConfig,
) -> Result<quinn::Endpoint, TransportError> {
    bind_server_with_reset_key(addr, crypto, config, &rand::random::<[u8; 32]>())
}

/// Binds a QUIC server endpoint whose stateless-reset key is `reset_key`.
/// A node keeps the key in its data directory, so after a crash and restart
/// its resets are recognised by clients still holding connections to the
/// previous process: they drop them at once and reconnect, instead of
/// waiting for the idle timeout.
pub fn bind_server_with_reset_key(
    addr: SocketAddr,
    crypto: quinn::crypto::rustls::QuicServerConfig,
    config: &TransportConfig,
    reset_key: &[u8],
) -> Result<quinn::Endpoint, TransportError> {
    config.validate().map_err(TransportError::Endpoint)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(config.quinn()));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, reset_key);
    let endpoint_config = quinn::EndpointConfig::new(Arc::new(key));
    let listen_err =
        |e: std::io::Error| TransportError::Endpoint(format!("cannot listen on {addr}: {e}"));
    let socket = std::net::UdpSocket::bind(addr).map_err(listen_err)?;
    quinn::Endpoint::new(
        endpoint_config,
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(listen_err)
}

/// Serves `service` on `endpoint` until `shutdown` resolves, then closes
/// every connection and waits (briefly) for the close to be sent.
pub async fn serve(
    endpoint: quinn::Endpoint,
    service: Arc<dyn Service>,
    config: Arc<TransportConfig>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                tokio::spawn(serve_connection(incoming, service.clone(), config.clone()));
            }
        }
    }
    endpoint.close(SHUTDOWN_CODE.into(), b"node shutting down");
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), endpoint.wait_idle()).await;
}

async fn serve_connection(
    incoming: quinn::Incoming,
    service: Arc<dyn Service>,
    config: Arc<TransportConfig>,
) {
    let remote = incoming.remote_address();
    let connection = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            let (tls, reason) = describe_connection_error(&e);
            if tls {
                tracing::warn!(%remote, %reason, "refused a client in the TLS handshake");
            } else {
                tracing::debug!(%remote, %reason, "handshake failed");
            }
            return;
        }
    };
    tracing::debug!(%remote, "connection accepted");
    loop {
        match connection.accept_bi().await {
            Ok((send, recv)) => {
                tokio::spawn(serve_stream(
                    send,
                    recv,
                    service.clone(),
                    config.clone(),
                    remote,
                ));
            }
            Err(e) => {
                tracing::debug!(%remote, reason = %describe_connection_error(&e).1, "connection ended");
                return;
            }
        }
    }
}

async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    service: Arc<dyn Service>,
    config: Arc<TransportConfig>,
    remote: SocketAddr,
) {
    let in_flight_max = config.server_stream_requests_in_flight_max as usize;
    let batch_max = config.write_batch_bytes_max as usize;
    let frame_bytes_max = config.frame_bytes_max;
    let mut decoder = FrameDecoder::new(frame_bytes_max);
    let mut encoder = FrameEncoder::new();
    let mut out = Vec::with_capacity(64 * 1024);
    let mut in_flight = FuturesUnordered::new();
    let mut reading = true;
    let service = &*service;
    loop {
        // Start what is buffered, up to the in-flight bound. Requests that
        // complete at once (most do) are answered without being queued.
        while in_flight.len() < in_flight_max && out.len() < batch_max {
            match decoder.next_frame::<RequestFrame>() {
                Ok(Some(frame)) => {
                    let request_id = frame.header.request_id;
                    let mut answer = service.handle(frame.header, frame.body);
                    match (&mut answer).now_or_never() {
                        Some(body) => encode_answer(
                            &mut encoder,
                            ResponseFrame { request_id, body },
                            frame_bytes_max,
                            &mut out,
                        ),
                        None => in_flight.push(async move {
                            ResponseFrame {
                                request_id,
                                body: answer.await,
                            }
                        }),
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(%remote, error = %e, "malformed request frame; closing the stream");
                    let _ = recv.stop(FRAME_ERROR_CODE.into());
                    let _ = send.reset(FRAME_ERROR_CODE.into());
                    return;
                }
            }
        }
        // Collect the answers that are ready, then write them in one go.
        while out.len() < batch_max {
            match in_flight.next().now_or_never() {
                Some(Some(response)) => {
                    encode_answer(&mut encoder, response, frame_bytes_max, &mut out)
                }
                _ => break,
            }
        }
        if !out.is_empty() {
            if let Err(e) = send.write_all(&out).await {
                tracing::debug!(%remote, error = %e, "stream closed while answering");
                return;
            }
            out.clear();
            if out.capacity() > 4 << 20 {
                out = Vec::with_capacity(64 * 1024);
            }
            continue;
        }
        tokio::select! {
            Some(response) = in_flight.next(), if !in_flight.is_empty() => {
                encode_answer(&mut encoder, response, frame_bytes_max, &mut out);
            }
            chunk = recv.read_chunk(usize::MAX, true), if reading && in_flight.len() < in_flight_max => {
                match chunk {
                    Ok(Some(chunk)) => decoder.extend(&chunk.bytes),
                    Ok(None) => {
                        reading = false;
                        if let Err(e) = decoder.finish() {
                            // The last request was cut: tell the sender the
                            // stream was malformed instead of finishing it.
                            tracing::warn!(%remote, error = %e, "request stream ended inside a frame; closing the stream");
                            let _ = send.reset(FRAME_ERROR_CODE.into());
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(%remote, error = %e, "request stream closed");
                        return;
                    }
                }
            }
            else => break,
        }
    }
    let _ = send.finish();
}

/// Appends an answer to `out`; an answer too large to send is replaced by an
/// error answer, so the caller learns why instead of timing out.
fn encode_answer(
    encoder: &mut FrameEncoder,
    response: ResponseFrame,
    frame_bytes_max: u32,
    out: &mut Vec<u8>,
) {
    let mark = out.len();
    if let Err(e) = encoder.encode(&response, frame_bytes_max, out) {
        out.truncate(mark);
        let answer = ResponseFrame {
            request_id: response.request_id,
            body: Response::error(
                crate::wire::ServerErrorKind::Internal,
                format!("answer cannot be sent: {e}"),
            ),
        };
        // A short error always fits.
        let _ = encoder.encode(&answer, frame_bytes_max, out);
    }
}
