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
}

/// Binds a QUIC server endpoint.
pub fn bind_server(
    addr: SocketAddr,
    crypto: quinn::crypto::rustls::QuicServerConfig,
    config: &TransportConfig,
) -> Result<quinn::Endpoint, TransportError> {
    config.validate().map_err(TransportError::Endpoint)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(config.quinn()));
    quinn::Endpoint::server(server, addr)
        .map_err(|e| TransportError::Endpoint(format!("cannot listen on {addr}: {e}")))
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

async fn serve_connection(incoming: quinn::Incoming, service: Arc<dyn Service>, config: Arc<TransportConfig>) {
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
                tokio::spawn(serve_stream(send, recv, service.clone(), config.clone(), remote));
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
    let mut decoder = FrameDecoder::new(config.frame_bytes_max);
    let mut encoder = FrameEncoder::new();
    let mut out = Vec::with_capacity(64 * 1024);
    let mut in_flight = FuturesUnordered::new();
    let mut reading = true;
    let service = &*service;
    let dispatch = |frame: RequestFrame| async move {
        ResponseFrame {
            request_id: frame.header.request_id,
            body: service.handle(frame.header, frame.body).await,
        }
    };
    loop {
        // Start what is buffered, up to the in-flight bound.
        while in_flight.len() < in_flight_max {
            match decoder.next_frame::<RequestFrame>() {
                Ok(Some(frame)) => in_flight.push(dispatch(frame)),
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(%remote, error = %e, "malformed request frame; closing the stream");
                    let _ = recv.stop(FRAME_ERROR_CODE.into());
                    let _ = send.reset(FRAME_ERROR_CODE.into());
                    return;
                }
            }
        }
        tokio::select! {
            biased;
            Some(first) = in_flight.next(), if !in_flight.is_empty() => {
                out.clear();
                let mut next = Some(first);
                while let Some(response) = next.take() {
                    let mark = out.len();
                    if let Err(e) = encoder.encode(&response, config.frame_bytes_max, &mut out) {
                        out.truncate(mark);
                        let answer = ResponseFrame {
                            request_id: response.request_id,
                            body: Response::error(
                                crate::wire::ServerErrorKind::Internal,
                                format!("answer cannot be sent: {e}"),
                            ),
                        };
                        // A short error always fits.
                        let _ = encoder.encode(&answer, config.frame_bytes_max, &mut out);
                    }
                    if out.len() < batch_max {
                        next = in_flight.next().now_or_never().flatten();
                    }
                }
                if let Err(e) = send.write_all(&out).await {
                    tracing::debug!(%remote, error = %e, "stream closed while answering");
                    return;
                }
            }
            chunk = recv.read_chunk(usize::MAX, true), if reading && in_flight.len() < in_flight_max => {
                match chunk {
                    Ok(Some(chunk)) => decoder.extend(&chunk.bytes),
                    Ok(None) => {
                        reading = false;
                        if let Err(e) = decoder.finish() {
                            tracing::warn!(%remote, error = %e, "request stream ended inside a frame");
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
