//! QUIC transport (quinn 0.11, TLS 1.3 with rustls).
//!
//! One connection per peer; each connection carries a few long-lived
//! bidirectional streams, and requests are pipelined on them with request
//! ids, answered out of order. A client bounds its in-flight requests per
//! connection and the bytes of requests waiting to be written per stream,
//! times each request out (dropping it unsent if it was not written yet),
//! drops a connection whose peer stopped reading, and reconnects after the
//! peer restarts. A server works on many requests of a stream concurrently, up
//! to a bound, and stops reading the stream beyond it.
//!
//! A stream that delivers a malformed frame is closed with
//! [`FRAME_ERROR_CODE`]; the connection, its other streams and the node
//! carry on.

mod client;
pub mod config;
mod server;
pub mod tls;

pub(crate) use client::split_host_port;
pub use client::{ClientEndpoint, Peer, SWEEP_INTERVAL};
pub use config::TransportConfig;
pub use server::{bind_server, bind_server_with_reset_key, serve, Service};

use crate::wire::FrameError;

/// Stream reset code sent when a peer sent a malformed frame.
pub const FRAME_ERROR_CODE: u32 = 1;
/// Connection close code of a node shutting down.
pub const SHUTDOWN_CODE: u32 = 2;
/// Stream reset and connection close code of a client that gives up on a
/// stream: the stream failed, or the peer stopped reading it.
pub const STALLED_CODE: u32 = 3;

/// A request could not be delivered or answered. Corfu outcomes are not
/// transport errors: they arrive as [`crate::wire::Response`] values.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// The peer's address could not be resolved.
    #[error("{addr}: cannot resolve address: {reason}")]
    Resolve {
        /// The peer's address as configured.
        addr: String,
        /// Why.
        reason: String,
    },
    /// No connection could be established (peer down, unreachable, timeout).
    #[error("{addr}: cannot connect: {reason}")]
    Connect {
        /// The peer.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The TLS handshake was refused (wrong CA, missing client certificate,
    /// protocol mismatch).
    #[error("{addr}: TLS handshake refused: {reason}")]
    Tls {
        /// The peer.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The connection or stream broke while the request was outstanding;
    /// the request may or may not have been served.
    #[error("{addr}: connection lost: {reason}")]
    ConnectionLost {
        /// The peer.
        addr: String,
        /// Why.
        reason: String,
    },
    /// No answer arrived within the request timeout; the request may or may
    /// not have been served.
    #[error("{addr}: no answer within {timeout_ms} ms")]
    Timeout {
        /// The peer.
        addr: String,
        /// The timeout that expired.
        timeout_ms: u64,
    },
    /// The peer sent a frame this side could not decode; the stream was
    /// closed.
    #[error("{addr}: malformed frame from peer: {source}")]
    Frame {
        /// The peer.
        addr: String,
        /// The decoding failure.
        source: FrameError,
    },
    /// The request was not sent: the encoded requests already waiting for
    /// this peer filled `outbox_bytes_max` for the call's whole timeout
    /// (the peer does not keep up).
    #[error(
        "{addr}: request not sent: {held_bytes} bytes of requests already wait for this peer \
         (outbox_bytes_max {limit_bytes}) and no room was made within the timeout; \
         the peer is not keeping up"
    )]
    OutboxFull {
        /// The peer.
        addr: String,
        /// Bytes held for the peer when the call gave up.
        held_bytes: u64,
        /// The configured limit (per stream).
        limit_bytes: u64,
    },
    /// The request could not be encoded (for example it exceeds
    /// `frame_bytes_max`).
    #[error("cannot send request: {0}")]
    Encode(FrameError),
    /// The local endpoint could not be created or is closed.
    #[error("endpoint: {0}")]
    Endpoint(String),
}

impl TransportError {
    /// True if the request certainly did not reach the peer, so it is safe
    /// to retry even when it is not idempotent.
    pub fn not_sent(&self) -> bool {
        matches!(
            self,
            TransportError::Resolve { .. }
                | TransportError::Connect { .. }
                | TransportError::Tls { .. }
                | TransportError::OutboxFull { .. }
                | TransportError::Encode(_)
                | TransportError::Endpoint(_)
        )
    }
}

/// Describes why a connection ended, in words a user can act on.
pub(crate) fn describe_connection_error(e: &quinn::ConnectionError) -> (bool, String) {
    match e {
        quinn::ConnectionError::ConnectionClosed(close) => {
            let code = u64::from(close.error_code);
            if (0x100..0x200).contains(&code) {
                let alert = (code - 0x100) as u8;
                let reason = match alert {
                    116 => "the node requires a client certificate issued by the cluster CA (set tls.cert and tls.key)".to_string(),
                    42 | 48 => "the peer rejected the certificate: it is not issued by the cluster CA".to_string(),
                    120 => "no common application protocol (the peer speaks another corfu protocol version)".to_string(),
                    _ => format!("TLS alert {alert}: {close}"),
                };
                (true, reason)
            } else {
                (false, format!("aborted by peer: {close}"))
            }
        }
        quinn::ConnectionError::TransportError(t) => {
            let code = u64::from(t.code);
            if (0x100..0x200).contains(&code) {
                (true, t.to_string())
            } else {
                (false, t.to_string())
            }
        }
        quinn::ConnectionError::ApplicationClosed(close) => {
            if close.error_code == SHUTDOWN_CODE.into() {
                (false, "the node is shutting down".to_string())
            } else {
                (false, format!("closed by peer: {close}"))
            }
        }
        quinn::ConnectionError::Reset => (false, "reset by peer (it restarted)".to_string()),
        quinn::ConnectionError::TimedOut => (false, "peer unreachable (idle timeout)".to_string()),
        other => (false, other.to_string()),
    }
}
