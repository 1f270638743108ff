//! A writer decides whether the data at its address is its own by the
//! append's identity, never by equal bytes (issue 14, item 1c).
//!
//! The interleaving is built deterministically on one in-process test
//! server that plays every role: a real log unit (in memory) behind a hook
//! that holds the first write, a scripted sequencer that grants address 0
//! twice (the double grant a faulty failover used to make), and a fixed
//! layout. Writer A's write to address 0 is held; writer B appends the very
//! same bytes to the same stream, is granted 0 again and writes it; then
//! A's held write is answered `Unavailable` (an unknown outcome) without
//! having landed. A asks again, finds identical bytes at 0, and used to
//! take them for its own: two acknowledged appends at one address, one of
//! them nowhere in the log. With identities A sees another append's entry
//! and retries at a new address.

mod support;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use corfu::core::client::{LogClient, LogClientOptions};
use corfu::core::layout::{Grants, Layout, NodeAddr, Segment, Stripe};
use corfu::core::logunit::{LogUnitLimits, LogUnitService, MemoryStore};
use corfu::core::transport::Service;
use corfu::core::types::{ClusterId, StreamId};
use corfu::core::wire::layout::{LayoutRequest, LayoutResponse};
use corfu::core::wire::logunit::{LogUnitRequest, ReadOutcome};
use corfu::core::wire::sequencer::{SequencerRequest, SequencerResponse};
use corfu::core::wire::{Header, Request, Response, ServerErrorKind};
use support::{fast_failing_transport, within, TestServer};
use tokio::sync::Notify;

/// Every role of a one-node cluster, with the faults the test scripts.
struct ScriptedNode {
    layout: Mutex<Option<Layout>>,
    unit: LogUnitService<MemoryStore>,
    /// Token starts to hand out, in order; then counting on from `next`.
    grants: Mutex<(VecDeque<u64>, u64)>,
    /// Set once the first write has been taken (and held).
    first_write_taken: AtomicBool,
    /// Told when the first write arrives.
    held: Notify,
    /// Waited for before the held write is answered.
    release: Notify,
}

#[async_trait::async_trait]
impl Service for ScriptedNode {
    async fn handle(&self, header: Header, body: Request) -> Response {
        match body {
            Request::Layout(LayoutRequest::GetLayout) => Response::Layout(LayoutResponse::Layout(
                self.layout.lock().unwrap().clone().map(Box::new),
            )),
            Request::Sequencer(SequencerRequest::Token { count, streams, .. }) => {
                let start = {
                    let mut grants = self.grants.lock().unwrap();
                    match grants.0.pop_front() {
                        Some(start) => start,
                        None => {
                            let start = grants.1;
                            grants.1 += u64::from(count);
                            start
                        }
                    }
                };
                Response::Sequencer(SequencerResponse::Token {
                    start,
                    count,
                    previous: streams.into_iter().map(|s| (s, None)).collect(),
                })
            }
            Request::LogUnit(LogUnitRequest::Write(_))
                if !self.first_write_taken.swap(true, Ordering::SeqCst) =>
            {
                // Held, then lost: the writer cannot tell whether it landed.
                self.held.notify_one();
                self.release.notified().await;
                Response::error(
                    ServerErrorKind::Unavailable,
                    "the write's outcome is unknown",
                )
            }
            body @ Request::LogUnit(_) => self.unit.handle(header, body).await,
            other => Response::error(
                ServerErrorKind::Unsupported,
                format!("the scripted node does not answer {}", other.kind()),
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_appends_granted_one_address_are_not_taken_for_each_other() {
    let node = Arc::new(ScriptedNode {
        layout: Mutex::new(None),
        unit: LogUnitService::new(
            Arc::new(MemoryStore::new()),
            LogUnitLimits {
                read_batch_max: 64,
                read_bytes_max: 1 << 20,
                wait_for_sync: false,
            },
        ),
        // A is granted 0, B is granted 0 again; later tokens start at 1.
        grants: Mutex::new((VecDeque::from([0, 0]), 1)),
        first_write_taken: AtomicBool::new(false),
        held: Notify::new(),
        release: Notify::new(),
    });
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
    let client = || async {
        LogClient::connect_with(
            server.client(fast_failing_transport()),
            vec![server.addr.to_string()],
            LogClientOptions::default(),
        )
        .await
        .unwrap()
    };
    let (a, b) = (client().await, client().await);
    let stream = StreamId::from_name("counter");
    let payload = b"add 1".to_vec();

    let a_append = tokio::spawn({
        let payload = payload.clone();
        async move { a.append(payload, &[stream]).await }
    });
    within(10, "A's write reaches the unit", node.held.notified()).await;
    let b_at = within(10, "B's append", b.append(payload.clone(), &[stream]))
        .await
        .unwrap();
    assert_eq!(b_at, 0, "B was granted address 0 and wrote it");
    node.release.notify_one();
    let a_at = within(10, "A's append", a_append).await.unwrap().unwrap();
    println!("A acknowledged at {a_at}, B at {b_at}");
    assert_ne!(
        a_at, b_at,
        "two appends were acknowledged at one address, so one of them is nowhere in the log"
    );
    // Both appends are in the log, each once, at the address it was
    // acknowledged at.
    for at in [a_at, b_at] {
        match b.read(at).await.unwrap() {
            ReadOutcome::Data(entry) => assert_eq!(entry.payload, payload),
            other => panic!("address {at}: {other:?}"),
        }
    }
    server.stop().await;
}
