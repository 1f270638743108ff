//! The client transport's outbox (encoded requests not yet taken by QUIC)
//! has a byte limit (`TransportConfig::outbox_bytes_max`), whatever the
//! peer does:
//! - a peer that answers slowly, with callers that time out and retry,
//!   never makes the outbox exceed the limit; requests whose callers gave
//!   up before they were written are dropped, not sent late (before: 11 MB
//!   queued against a 256 KiB limit, all of it to be sent late);
//! - a peer that stops reading altogether is dropped with a clear error
//!   once nothing could be written to it for `request_timeout_ms`, instead
//!   of holding the callers (and their bytes) for their whole timeouts.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corfu::core::transport::{Service, TransportConfig, TransportError};
use corfu::core::wire::logunit::{AddressedEntry, Entry, LogUnitRequest};
use corfu::core::wire::{Header, Request, Response};
use support::{within, TestServer};

/// The outbox limit the client is given.
const LIMIT: u64 = 256 * 1024;
/// The client's write batch.
const BATCH: u64 = 64 * 1024;

/// A write of `bytes` payload bytes.
fn write(address: u64, bytes: usize) -> Request {
    Request::LogUnit(LogUnitRequest::Write(AddressedEntry {
        address,
        entry: Entry {
            id: None,
            streams: Vec::new(),
            payload: vec![7; bytes],
        },
    }))
}

/// Answers each request after `delay` (never, if `None`); counts requests.
struct Slow {
    delay: Option<Duration>,
    seen: AtomicUsize,
}

#[async_trait::async_trait]
impl Service for Slow {
    async fn handle(&self, _header: Header, _body: Request) -> Response {
        self.seen.fetch_add(1, Ordering::SeqCst);
        match self.delay {
            Some(delay) => tokio::time::sleep(delay).await,
            None => std::future::pending().await,
        }
        Response::Pong
    }
}

/// A server that works on two requests of a stream at a time and gives
/// each stream a 64 KiB window: it reads little ahead of what it serves.
fn narrow_server() -> TransportConfig {
    TransportConfig {
        frame_bytes_max: 64 * 1024,
        server_stream_requests_in_flight_max: 2,
        stream_receive_window_bytes: 64 * 1024,
        receive_window_bytes: 64 * 1024,
        ..TransportConfig::default()
    }
}

fn client_config() -> TransportConfig {
    TransportConfig {
        frame_bytes_max: 64 * 1024,
        streams_per_connection: 1,
        write_batch_bytes_max: BATCH as u32,
        outbox_bytes_max: LIMIT as u32,
        ..TransportConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_peer_never_makes_the_outbox_exceed_its_limit() {
    let slow = Arc::new(Slow {
        delay: Some(Duration::from_millis(20)),
        seen: AtomicUsize::new(0),
    });
    let server = TestServer::start(slow.clone(), narrow_server());
    let client = server.client(client_config());
    let peer = client.peer(&server.addr.to_string());
    assert_eq!(peer.call(0, Request::Ping).await.unwrap(), Response::Pong);

    // 64 callers send 4 KiB writes with a 30 ms timeout and retry at once,
    // for 1.5 s; the peer serves about 100 requests a second.
    let run = Duration::from_millis(1_500);
    let started = Instant::now();
    let (answered, timed_out, not_sent) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let mut callers = Vec::new();
    for t in 0..64u64 {
        let peer = peer.clone();
        let (answered, timed_out, not_sent) =
            (answered.clone(), timed_out.clone(), not_sent.clone());
        callers.push(tokio::spawn(async move {
            let mut i = 0;
            while started.elapsed() < run {
                i += 1;
                let request = write(t * 1_000_000 + i, 4096);
                match peer
                    .call_timeout(0, request, Duration::from_millis(30))
                    .await
                {
                    Ok(answer) => {
                        assert_eq!(answer, Response::Pong);
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(TransportError::Timeout { .. }) => {
                        timed_out.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e @ TransportError::OutboxFull { .. }) => {
                        assert!(e.not_sent(), "{e}");
                        not_sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => panic!("caller {t}: unexpected error: {e}"),
                }
            }
        }));
    }
    let mut max = 0;
    while started.elapsed() < run {
        max = max.max(peer.outbox_bytes());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for caller in callers {
        within(20, "a caller", caller).await.unwrap();
    }
    let (answered, timed_out, not_sent) = (
        answered.load(Ordering::Relaxed),
        timed_out.load(Ordering::Relaxed),
        not_sent.load(Ordering::Relaxed),
    );
    let seen = slow.seen.load(Ordering::SeqCst);
    println!(
        "largest outbox {max} bytes (limit {LIMIT}); {answered} answered, {timed_out} timed \
         out, {not_sent} not sent (outbox full); the peer saw {seen} requests"
    );
    assert!(
        timed_out + not_sent > 100,
        "the peer was not slow enough to show anything"
    );
    assert!(
        max <= LIMIT,
        "the outbox held {max} bytes, more than its limit of {LIMIT}"
    );
    // Every caller has given up or been answered: what was not written yet
    // was dropped, not kept to be sent late. Only the batch the writer is
    // handing to QUIC may remain.
    let left = peer.outbox_bytes();
    println!("{left} bytes left once every caller was done");
    assert!(
        left <= BATCH,
        "{left} bytes are still queued for callers that gave up"
    );
    // Still usable.
    assert_eq!(
        within(10, "a ping", peer.call(0, Request::Ping))
            .await
            .unwrap(),
        Response::Pong
    );
    client.close();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_that_stops_reading_is_dropped_with_a_clear_error() {
    // The server takes two requests, never answers them, and so never
    // reads its stream again.
    let stuck = Arc::new(Slow {
        delay: None,
        seen: AtomicUsize::new(0),
    });
    let server = TestServer::start(stuck.clone(), narrow_server());
    let client = server.client(TransportConfig {
        request_timeout_ms: 300,
        ..client_config()
    });
    let peer = client.peer(&server.addr.to_string());
    // Callers with long timeouts: 200 writes of 4 KiB (800 KiB), more than
    // the server's window and the outbox together.
    let callers: Vec<_> = (0..200u64)
        .map(|i| {
            let peer = peer.clone();
            tokio::spawn(async move {
                peer.call_timeout(0, write(i, 4096), Duration::from_secs(60))
                    .await
            })
        })
        .collect();
    let mut lost = 0;
    let mut full = 0;
    for caller in callers {
        match within(30, "a caller", caller).await.unwrap() {
            Err(TransportError::ConnectionLost { reason, .. }) => {
                assert!(reason.contains("not reading"), "{reason}");
                lost += 1;
            }
            Err(TransportError::OutboxFull { .. }) => full += 1,
            other => panic!("expected the connection to be dropped, got {other:?}"),
        }
    }
    println!("{lost} callers saw the connection dropped, {full} found the outbox full");
    assert!(lost > 0);
    assert!(peer.outbox_bytes() == 0, "{}", peer.outbox_bytes());
    client.close();
    server.stop().await;
}
