//! The client transport against a test `Service`: requests time out
//! (without breaking the connection), in-flight requests are bounded,
//! pipelined answers that arrive out of order reach their own callers, and a
//! `Peer` reconnects to a node restarted on the same address.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corfu::core::node;
use corfu::core::transport::{Service, TransportConfig, TransportError};
use corfu::core::types::{ClusterId, Role};
use corfu::core::wire::{Header, LogUnitRequest, Request, Response};
use support::{
    client_trusting_file, node_config, spawn_node_process, within, write_node_toml, TestServer,
};

fn read(address: u64) -> Request {
    Request::LogUnit(LogUnitRequest::Read { address })
}

/// Never answers `Read { address: NEVER }`; answers `Read { address: SLOW }`
/// after 400 ms; answers everything else at once.
struct Stubborn;

const NEVER: u64 = 999;
const SLOW: u64 = 888;

#[async_trait::async_trait]
impl Service for Stubborn {
    async fn handle(&self, _header: Header, body: Request) -> Response {
        match body {
            Request::LogUnit(LogUnitRequest::Read { address: NEVER }) => {
                std::future::pending().await
            }
            Request::LogUnit(LogUnitRequest::Read { address: SLOW }) => {
                tokio::time::sleep(Duration::from_millis(400)).await;
                Response::WrongEpoch { current: SLOW }
            }
            Request::LogUnit(LogUnitRequest::Read { address }) => {
                Response::WrongEpoch { current: address }
            }
            _ => Response::Pong,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unanswered_request_times_out_and_the_connection_stays_usable() {
    let server = TestServer::start(Arc::new(Stubborn), TransportConfig::default());
    let client = server.client(TransportConfig::default());
    let peer = client.peer(&server.addr.to_string());
    assert_eq!(peer.call(0, Request::Ping).await.unwrap(), Response::Pong);

    let t = Instant::now();
    let result = within(
        10,
        "call_timeout",
        peer.call_timeout(0, read(NEVER), Duration::from_millis(200)),
    )
    .await;
    let took = t.elapsed();
    match result {
        Err(TransportError::Timeout {
            timeout_ms,
            ref addr,
        }) => {
            assert_eq!(timeout_ms, 200);
            assert_eq!(addr, &server.addr.to_string());
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        took >= Duration::from_millis(200),
        "timed out early: {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "timed out far too late: {took:?}"
    );
    let err = result.unwrap_err();
    assert!(!err.not_sent(), "a timed-out request may have been served");
    assert!(err.to_string().contains("200 ms"), "{err}");

    // The same connection serves further requests, including concurrent ones
    // next to a request that never completes.
    assert_eq!(peer.call(0, Request::Ping).await.unwrap(), Response::Pong);
    let stuck = tokio::spawn({
        let peer = peer.clone();
        async move {
            peer.call_timeout(0, read(NEVER), Duration::from_millis(300))
                .await
        }
    });
    for i in 0..20 {
        assert_eq!(
            peer.call(0, read(i)).await.unwrap(),
            Response::WrongEpoch { current: i }
        );
    }
    assert!(matches!(
        stuck.await.unwrap(),
        Err(TransportError::Timeout { .. })
    ));

    // An answer arriving after its caller gave up is dropped, not handed to
    // another caller.
    let late = peer
        .call_timeout(0, read(SLOW), Duration::from_millis(100))
        .await;
    assert!(
        matches!(late, Err(TransportError::Timeout { .. })),
        "{late:?}"
    );
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(600) {
        let i = 1_000 + t.elapsed().as_millis() as u64;
        assert_eq!(
            peer.call(0, read(i)).await.unwrap(),
            Response::WrongEpoch { current: i }
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // The configured request timeout applies to `call`.
    let short = server.client(TransportConfig {
        request_timeout_ms: 150,
        ..TransportConfig::default()
    });
    let t = Instant::now();
    let result = short
        .peer(&server.addr.to_string())
        .call(0, read(NEVER))
        .await;
    assert!(
        matches!(
            result,
            Err(TransportError::Timeout {
                timeout_ms: 150,
                ..
            })
        ),
        "{result:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(3));

    short.close();
    client.close();
    server.stop().await;
}

/// Counts handlers running at once; each sleeps 50 ms.
#[derive(Default)]
struct Counting {
    running: AtomicUsize,
    max: AtomicUsize,
    served: AtomicUsize,
}

#[async_trait::async_trait]
impl Service for Counting {
    async fn handle(&self, _header: Header, body: Request) -> Response {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.served.fetch_add(1, Ordering::SeqCst);
        match body {
            Request::LogUnit(LogUnitRequest::Read { address }) => {
                Response::WrongEpoch { current: address }
            }
            _ => Response::Pong,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_in_flight_are_bounded_per_connection() {
    let counting = Arc::new(Counting::default());
    let server = TestServer::start(counting.clone(), TransportConfig::default());
    let client = server.client(TransportConfig {
        requests_in_flight_max: 4,
        ..TransportConfig::default()
    });
    let peer = client.peer(&server.addr.to_string());
    let t = Instant::now();
    let calls: Vec<_> = (0..40u64)
        .map(|i| {
            let peer = peer.clone();
            tokio::spawn(async move { (i, peer.call(0, read(i)).await) })
        })
        .collect();
    for call in calls {
        let (i, result) = within(20, "bounded call", call).await.unwrap();
        assert_eq!(
            result.expect("every call succeeds"),
            Response::WrongEpoch { current: i }
        );
    }
    let took = t.elapsed();
    let max = counting.max.load(Ordering::SeqCst);
    assert_eq!(counting.served.load(Ordering::SeqCst), 40);
    assert!(
        max <= 4,
        "at most 4 requests in flight, the server saw {max}"
    );
    assert!(max >= 2, "the calls did run concurrently (max {max})");
    // 40 requests of 50 ms, 4 at a time: at least 10 rounds.
    assert!(
        took >= Duration::from_millis(450),
        "40 calls took only {took:?}"
    );

    // A caller waiting for a slot longer than its timeout times out.
    let tight = server.client(TransportConfig {
        requests_in_flight_max: 1,
        ..TransportConfig::default()
    });
    let tight_peer = tight.peer(&server.addr.to_string());
    let holder = tokio::spawn({
        let p = tight_peer.clone();
        async move { p.call(0, Request::Ping).await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let waited = tight_peer
        .call_timeout(0, Request::Ping, Duration::from_millis(20))
        .await;
    assert!(
        matches!(waited, Err(TransportError::Timeout { .. })),
        "{waited:?}"
    );
    assert_eq!(holder.await.unwrap().unwrap(), Response::Pong);
    // The slot is free again.
    assert_eq!(
        tight_peer.call(0, Request::Ping).await.unwrap(),
        Response::Pong
    );

    tight.close();
    client.close();
    server.stop().await;
}

/// Answers `Read { address: i }` with `WrongEpoch { current: i }` after a
/// pseudo-random delay of 0 to 7 ms, recording the order requests arrive and
/// the order they are answered.
#[derive(Default)]
struct Shuffling {
    arrived: Mutex<Vec<u64>>,
    answered: Mutex<Vec<u64>>,
}

#[async_trait::async_trait]
impl Service for Shuffling {
    async fn handle(&self, _header: Header, body: Request) -> Response {
        let Request::LogUnit(LogUnitRequest::Read { address }) = body else {
            return Response::Pong;
        };
        self.arrived.lock().unwrap().push(address);
        let delay = address.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 61;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        self.answered.lock().unwrap().push(address);
        Response::WrongEpoch { current: address }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipelined_answers_out_of_order_reach_their_callers() {
    const N: u64 = 2000;
    let shuffling = Arc::new(Shuffling::default());
    let server = TestServer::start(shuffling.clone(), TransportConfig::default());
    let client = server.client(TransportConfig::default());
    let peer = client.peer(&server.addr.to_string());
    let calls: Vec<_> = (0..N)
        .map(|i| {
            let peer = peer.clone();
            tokio::spawn(async move { (i, peer.call(0, read(i)).await) })
        })
        .collect();
    for call in calls {
        let (i, result) = within(20, "pipelined call", call).await.unwrap();
        assert_eq!(
            result.expect("call succeeds"),
            Response::WrongEpoch { current: i },
            "call {i}"
        );
    }
    let arrived = shuffling.arrived.lock().unwrap().clone();
    let answered = shuffling.answered.lock().unwrap().clone();
    assert_eq!(arrived.len() as u64, N, "the server saw every request");
    assert_eq!(answered.len() as u64, N);
    assert_eq!(
        arrived.iter().copied().collect::<HashSet<_>>().len() as u64,
        N,
        "each request arrived once"
    );
    assert_ne!(
        arrived, answered,
        "answers left in another order than requests arrived"
    );
    client.close();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peer_reconnects_after_the_node_restarts_on_the_same_address() {
    let dir = tempfile::tempdir().unwrap();
    let config = node_config(dir.path(), "n1", vec![Role::LogUnit], None);
    let node = node::start(config.clone()).await.expect("node starts");
    let addr = node.local_addr();
    let cluster: ClusterId = node.cluster_id();
    let client = client_trusting_file(
        node.ca_cert(),
        None,
        cluster,
        TransportConfig {
            connect_timeout_ms: 500,
            ..TransportConfig::default()
        },
    );
    let peer = client.peer(&addr.to_string());
    assert_eq!(peer.call(0, Request::Ping).await.unwrap(), Response::Pong);

    within(10, "node shutdown", node.shutdown()).await;

    // Down: an error, within the timeout, not a hang.
    for _ in 0..3 {
        let t = Instant::now();
        let result = within(
            10,
            "ping a stopped node",
            peer.call_timeout(0, Request::Ping, Duration::from_secs(1)),
        )
        .await;
        let err = result.expect_err("a stopped node does not answer");
        assert!(
            matches!(
                err,
                TransportError::Timeout { .. }
                    | TransportError::Connect { .. }
                    | TransportError::ConnectionLost { .. }
            ),
            "{err:?}"
        );
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }

    // Back on the same address, with the same data directory (same CA and
    // cluster id). The port may take a moment to be released.
    let mut again = config.clone();
    again.listen = addr;
    let t = Instant::now();
    let node = loop {
        match node::start(again.clone()).await {
            Ok(node) => break node,
            Err(e) if t.elapsed() < Duration::from_secs(5) => {
                eprintln!("restart not yet possible: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot restart the node on {addr}: {e}"),
        }
    };
    assert_eq!(node.local_addr(), addr);
    assert_eq!(
        node.cluster_id(),
        cluster,
        "the cluster id is kept in the data dir"
    );

    let t = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        match peer
            .call_timeout(0, Request::Ping, Duration::from_millis(500))
            .await
        {
            Ok(answer) => {
                assert_eq!(answer, Response::Pong);
                break;
            }
            Err(e) if t.elapsed() < Duration::from_secs(5) => {
                eprintln!("attempt {attempts}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the peer did not reconnect within 5 s ({attempts} attempts): {e}"),
        }
    }
    client.close();
    within(10, "node shutdown", node.shutdown()).await;
}

/// A node that crashes (SIGKILL: no CONNECTION_CLOSE sent) and restarts on
/// the same address should be reached again by the same `Peer` quickly. The
/// client's old connection only learns of the restart from the new
/// endpoint's stateless reset, which it cannot authenticate unless the node
/// keeps its reset key across restarts; otherwise it waits out the idle
/// timeout (30 s by default), and every request meanwhile times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]

async fn peer_reconnects_after_the_node_crashes_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("node.toml");
    write_node_toml(&cfg, "n1", "127.0.0.1:0", &data);
    let first = spawn_node_process(&cfg);
    let addr = first.addr.clone();
    let client = client_trusting_file(
        &data.join("tls").join("ca.pem"),
        None,
        ClusterId::ANY,
        TransportConfig {
            connect_timeout_ms: 500,
            ..TransportConfig::default()
        },
    );
    let peer = client.peer(&addr);
    assert_eq!(peer.call(0, Request::Ping).await.unwrap(), Response::Pong);

    let mut first = first;
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    drop(first);

    write_node_toml(&cfg, "n1", &addr, &data);
    let second = spawn_node_process(&cfg);
    assert_eq!(second.addr, addr);
    // The restarted node is up: a fresh client is served at once.
    let fresh = client_trusting_file(
        &data.join("tls").join("ca.pem"),
        None,
        ClusterId::ANY,
        TransportConfig::default(),
    );
    let pong = within(10, "fresh client", fresh.peer(&addr).call(0, Request::Ping)).await;
    assert_eq!(pong.unwrap(), Response::Pong);
    fresh.close();

    let t = Instant::now();
    let mut last = None;
    while t.elapsed() < Duration::from_secs(8) {
        match peer
            .call_timeout(0, Request::Ping, Duration::from_millis(500))
            .await
        {
            Ok(answer) => {
                assert_eq!(answer, Response::Pong);
                last = None;
                break;
            }
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    if let Some(e) = last {
        panic!("the peer did not reach the restarted node within 8 s: {e}");
    }
    client.close();
    drop(second);
}
