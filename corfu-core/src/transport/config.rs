//! Transport limits and windows, shared by nodes and clients.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::wire::frame::FRAME_BYTES_MAX_DEFAULT;

/// Limits and QUIC windows of the transport. Every field has a default
/// sized for pipelining many small requests on loopback or a LAN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportConfig {
    /// Largest frame accepted or sent, in bytes.
    pub frame_bytes_max: u32,
    /// A request not answered within this time fails with `Timeout`.
    pub request_timeout_ms: u64,
    /// Connecting (QUIC + TLS handshake) must finish within this time.
    pub connect_timeout_ms: u64,
    /// Requests a client may have outstanding on one connection; further
    /// callers wait for a slot.
    pub requests_in_flight_max: u32,
    /// Long-lived bidirectional streams a client opens per connection;
    /// requests are spread over them.
    pub streams_per_connection: u16,
    /// Requests a server works on concurrently per stream; beyond it the
    /// server stops reading that stream (backpressure).
    pub server_stream_requests_in_flight_max: u32,
    /// Bytes written to a stream in one call, at most (write batching; a
    /// single larger frame is written alone).
    pub write_batch_bytes_max: u32,
    /// Bytes of encoded requests a client holds per stream that QUIC has
    /// not taken yet (queued, or being written). A call that would exceed
    /// it waits for room, within its timeout, then fails with
    /// `OutboxFull` (not sent); a request alone is always taken. Requests
    /// whose callers gave up before they were written are dropped, not
    /// sent late; a stream whose peer takes none of its bytes for
    /// `request_timeout_ms` is dropped with its connection.
    pub outbox_bytes_max: u32,
    /// QUIC per-stream receive window, in bytes.
    pub stream_receive_window_bytes: u32,
    /// QUIC connection receive window, in bytes.
    pub receive_window_bytes: u32,
    /// QUIC connection send window, in bytes.
    pub send_window_bytes: u32,
    /// Idle connections close after this time.
    pub idle_timeout_ms: u64,
    /// Keep-alive interval (keeps idle connections open, detects dead
    /// peers).
    pub keep_alive_ms: u64,
    /// Bidirectional streams a peer may open concurrently on a connection.
    pub max_concurrent_streams: u32,
    /// The local address outgoing connections are made from (an ephemeral
    /// port on it); `None` (the default): chosen by the operating system.
    /// Set it where the source address matters: a host with several
    /// addresses whose firewall rules name them, or tests that cut links
    /// between processes on loopback by address.
    pub local_ip: Option<IpAddr>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            request_timeout_ms: 5_000,
            connect_timeout_ms: 3_000,
            requests_in_flight_max: 4096,
            streams_per_connection: 2,
            server_stream_requests_in_flight_max: 4096,
            write_batch_bytes_max: 256 * 1024,
            outbox_bytes_max: 8 << 20,
            stream_receive_window_bytes: 8 << 20,
            receive_window_bytes: 32 << 20,
            send_window_bytes: 32 << 20,
            idle_timeout_ms: 10_000,
            keep_alive_ms: 2_000,
            max_concurrent_streams: 256,
            local_ip: None,
        }
    }
}

impl TransportConfig {
    /// Checks ranges; the error is one line naming the offending field.
    pub fn validate(&self) -> Result<(), String> {
        fn positive(name: &str, v: u64) -> Result<(), String> {
            if v == 0 {
                Err(format!("field `transport.{name}`: must be greater than 0"))
            } else {
                Ok(())
            }
        }
        positive("request_timeout_ms", self.request_timeout_ms)?;
        positive("connect_timeout_ms", self.connect_timeout_ms)?;
        positive("requests_in_flight_max", self.requests_in_flight_max.into())?;
        positive("streams_per_connection", self.streams_per_connection.into())?;
        positive(
            "server_stream_requests_in_flight_max",
            self.server_stream_requests_in_flight_max.into(),
        )?;
        positive("idle_timeout_ms", self.idle_timeout_ms)?;
        positive("keep_alive_ms", self.keep_alive_ms)?;
        if self.frame_bytes_max < 1024 {
            return Err("field `transport.frame_bytes_max`: must be at least 1024".into());
        }
        if self.write_batch_bytes_max < 1024 {
            return Err("field `transport.write_batch_bytes_max`: must be at least 1024".into());
        }
        if self.outbox_bytes_max < 1024 {
            return Err("field `transport.outbox_bytes_max`: must be at least 1024".into());
        }
        if self.stream_receive_window_bytes < self.frame_bytes_max.min(1 << 20) {
            return Err(
                "field `transport.stream_receive_window_bytes`: must be at least min(frame_bytes_max, 1 MiB)"
                    .into(),
            );
        }
        if self.receive_window_bytes < self.stream_receive_window_bytes {
            return Err(
                "field `transport.receive_window_bytes`: must be at least stream_receive_window_bytes"
                    .into(),
            );
        }
        if self.keep_alive_ms >= self.idle_timeout_ms {
            return Err(
                "field `transport.keep_alive_ms`: must be less than idle_timeout_ms".into(),
            );
        }
        if u32::from(self.streams_per_connection) > self.max_concurrent_streams {
            return Err(
                "field `transport.streams_per_connection`: must not exceed max_concurrent_streams"
                    .into(),
            );
        }
        Ok(())
    }

    /// The address a client endpoint binds: `local_ip` (or the unspecified
    /// IPv4 address), port 0.
    pub fn client_bind(&self) -> SocketAddr {
        SocketAddr::new(self.local_ip.unwrap_or(IpAddr::from([0, 0, 0, 0])), 0)
    }

    /// The request timeout as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The quinn transport configuration these settings describe.
    pub fn quinn(&self) -> quinn::TransportConfig {
        let mut t = quinn::TransportConfig::default();
        t.max_concurrent_bidi_streams(self.max_concurrent_streams.into())
            .max_concurrent_uni_streams(0u32.into())
            .stream_receive_window(self.stream_receive_window_bytes.into())
            .receive_window(self.receive_window_bytes.into())
            .send_window(self.send_window_bytes.into())
            .keep_alive_interval(Some(Duration::from_millis(self.keep_alive_ms)));
        // The idle timeout is validated to fit quinn's varint range.
        if let Ok(idle) = quinn::IdleTimeout::try_from(Duration::from_millis(self.idle_timeout_ms))
        {
            t.max_idle_timeout(Some(idle));
        }
        t
    }
}
