//! Tail queries are combined into rounds (`corfu-core/src/client/tails.rs`):
//! one caller's round answers every caller registered in it. A caller that
//! gives up (its future dropped by a timeout around the query) must not take
//! the others' answers with it: no caller that waits for its answer may get
//! `ClientError::Closed` from a client that is still open.
//!
//! The first test builds the interleaving deterministically: one in-process
//! server plays a one-node cluster whose sequencer holds the first `Tail`
//! request; a test hook stops caller A after it registered and before its
//! round took anyone, so caller B's round takes A too; B is cancelled while
//! its request is held. Before the fix A got `Closed`. The second test is
//! the stress test on a real in-process cluster.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corfu::cluster::Shape;
use corfu::core::client::{set_tail_lead_hook, ClientError, LogClient, LogClientOptions};
use corfu::core::layout::{Grants, Layout, NodeAddr, Segment, Stripe};
use corfu::core::transport::Service;
use corfu::core::types::{ClusterId, StreamId};
use corfu::core::wire::layout::{LayoutRequest, LayoutResponse};
use corfu::core::wire::sequencer::{SequencerRequest, SequencerResponse};
use corfu::core::wire::{Header, Request, Response, ServerErrorKind};
use support::{fast_failing_transport, within, TestServer};
use tokio::sync::Notify;

/// The tests share the process-wide hook: one runs at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Set by a test: the next caller to lead a round tells `.0` and waits for
/// `.1` before its round takes the registered callers.
static GATE: Mutex<Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>> = Mutex::new(None);

fn lead_hook() {
    let gate = GATE.lock().unwrap().take();
    if let Some((entered, release)) = gate {
        let _ = entered.send(());
        let _ = release.recv_timeout(Duration::from_secs(20));
    }
}

/// A one-node cluster's layout and sequencer; the first `Tail` is held
/// until released.
#[derive(Default)]
struct HoldingSequencer {
    layout: Mutex<Option<Layout>>,
    first_tail_taken: AtomicBool,
    /// Told when the first `Tail` arrives.
    held: Notify,
    /// Waited for before the held `Tail` is answered.
    release: Notify,
}

#[async_trait::async_trait]
impl Service for HoldingSequencer {
    async fn handle(&self, _header: Header, body: Request) -> Response {
        match body {
            Request::Layout(LayoutRequest::GetLayout) => Response::Layout(LayoutResponse::Layout(
                self.layout.lock().unwrap().clone().map(Box::new),
            )),
            Request::Sequencer(SequencerRequest::Tail { streams }) => {
                if !self.first_tail_taken.swap(true, Ordering::SeqCst) {
                    self.held.notify_one();
                    self.release.notified().await;
                }
                Response::Sequencer(SequencerResponse::Tail {
                    next: 7,
                    streams: streams.into_iter().map(|s| (s, None)).collect(),
                })
            }
            other => Response::error(
                ServerErrorKind::Unsupported,
                format!("the test node does not answer {}", other.kind()),
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_round_whose_leader_is_cancelled_still_answers_its_other_callers() {
    let _one = ONE_AT_A_TIME.lock().await;
    set_tail_lead_hook(lead_hook);
    let node = Arc::new(HoldingSequencer::default());
    let server = TestServer::start(node.clone(), fast_failing_transport());
    let me = NodeAddr {
        node_id: "n1".into(),
        addr: server.addr.to_string(),
    };
    let layout = Layout {
        cluster_id: ClusterId(42),
        epoch: 1,
        layout_servers: vec![me.clone()],
        sequencers: vec![me.clone()],
        segments: vec![Segment {
            start: 0,
            end: None,
            stripes: vec![Stripe {
                chain: vec![me.clone()],
            }],
        }],
        grants: Grants::from(0),
        voids: Vec::new(),
    };
    layout.validate().unwrap();
    *node.layout.lock().unwrap() = Some(layout);
    let client = LogClient::connect_with(
        server.client(fast_failing_transport()),
        vec![server.addr.to_string()],
        LogClientOptions::default(),
    )
    .await
    .unwrap();

    // A registers and leads a round, and is stopped (its worker thread
    // blocked in the hook) before the round takes anyone.
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    *GATE.lock().unwrap() = Some((entered_tx, release_rx));
    let a = tokio::spawn({
        let client = client.clone();
        async move { client.tail().await }
    });
    tokio::task::spawn_blocking(move || entered.recv_timeout(Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("A leads a round");
    // B leads the second round, which takes A and B; its request is held.
    let b = tokio::spawn({
        let client = client.clone();
        async move { client.tail().await }
    });
    within(10, "B's Tail reaches the sequencer", node.held.notified()).await;
    // B gives up while its round is out.
    b.abort();
    assert!(b.await.unwrap_err().is_cancelled());
    // A goes on.
    release.send(()).unwrap();
    let answer = within(10, "A's tail query", a).await.unwrap();
    node.release.notify_one();
    assert_eq!(
        answer.expect("A is answered although the round's leader gave up"),
        7
    );
    // The rounds are not stuck.
    assert_eq!(within(10, "a later query", client.tail()).await.unwrap(), 7);
    drop(client);
    server.stop().await;
}

/// Tasks that wait for their tail queries.
const PATIENT: usize = 16;
/// Tasks that wrap each query in a 5 µs timeout.
const IMPATIENT: usize = 16;
/// Queries each task makes.
const QUERIES: usize = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelled_tail_queries_do_not_fail_the_others() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let cluster = support::local_cluster(&dir, 1, Shape::new(1, 1)).await;
    let config = cluster.client_config();
    let client = LogClient::connect(&config).await.unwrap();
    let streams: Vec<StreamId> = (0..4)
        .map(|k| StreamId::from_name(&format!("tails-s{k}")))
        .collect();
    // Something to read: a tail above 0 and a stream tail for each stream.
    for s in &streams {
        client.append(b"x".to_vec(), &[*s]).await.unwrap();
    }

    let cancelled = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..PATIENT + IMPATIENT {
        let client = client.clone();
        let streams = streams.clone();
        let cancelled = cancelled.clone();
        tasks.push(tokio::spawn(async move {
            let mut closed = 0;
            for i in 0..QUERIES {
                let stream = streams[(t + i) % streams.len()];
                let result = if t < PATIENT {
                    if i % 2 == 0 {
                        Some(client.tail().await.map(|_| ()))
                    } else {
                        Some(client.stream_tail(stream).await.map(|_| ()))
                    }
                } else {
                    let wait = Duration::from_micros(5);
                    let answer = if i % 2 == 0 {
                        tokio::time::timeout(wait, async { client.tail().await.map(|_| ()) }).await
                    } else {
                        tokio::time::timeout(wait, async {
                            client.stream_tail(stream).await.map(|_| ())
                        })
                        .await
                    };
                    match answer {
                        Ok(result) => Some(result),
                        Err(_) => {
                            cancelled.fetch_add(1, Ordering::Relaxed);
                            None
                        }
                    }
                };
                match result {
                    None | Some(Ok(())) => {}
                    Some(Err(ClientError::Closed)) => closed += 1,
                    Some(Err(e)) => panic!("task {t}, query {i}: {e}"),
                }
            }
            closed
        }));
    }
    let mut closed = 0;
    for task in tasks {
        closed += within(120, "tail queries", task).await.unwrap();
    }
    let cancelled = cancelled.load(Ordering::Relaxed);
    eprintln!("{cancelled} queries cancelled, {closed} answered Closed");
    assert!(
        cancelled > 0,
        "no query was cancelled: the test shows nothing"
    );
    assert_eq!(
        closed, 0,
        "{closed} tail queries got Closed from an open client ({cancelled} others were cancelled)"
    );
    // Still serving, and the rounds are not stuck.
    within(10, "a last tail query", client.tail())
        .await
        .unwrap();
    drop(client);
    cluster.shutdown().await;
}
