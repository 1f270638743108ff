//! Issue 15, item 2: a corrupt record on one chain member is repaired from
//! a good member, reads are served meanwhile, and a damaged address field
//! never takes out an intact record.
//!
//! The store tests damage a segment file of a stopped `FileStore` and
//! reopen it. The cluster test runs three in-process nodes on one chain,
//! stops one, damages a record in its segment file, restarts it, and reads
//! the address every way a client can: `read`, `read_range`, `read_stream`
//! and `fill` answer the acknowledged value, and afterwards every member
//! holds the same copy.
//!
//! The scripted tests (review of the read repair) run a chain of three
//! in-process units over memory stores the test damages directly, with
//! one request held at a chosen unit to order a writer and a repair.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use corfu::cluster::Shape;
use corfu::core::client::{LogClient, LogClientOptions};
use corfu::core::layout::{Grants, Layout, NodeAddr, Segment, Stripe};
use corfu::core::logunit::record::HEADER_BYTES;
use corfu::core::logunit::{
    FileStore, LogStore, LogUnitConfig, LogUnitLimits, LogUnitService, MemoryStore, StoreError,
    Stored,
};
use corfu::core::reconfig::{Change, Reconfigurer};
use corfu::core::transport::Service;
use corfu::core::types::{Address, ClusterId, StreamId};
use corfu::core::wire::layout::{LayoutRequest, LayoutResponse};
use corfu::core::wire::logunit::{Entry, LogUnitRequest, ReadOutcome};
use corfu::core::wire::sequencer::{SequencerRequest, SequencerResponse};
use corfu::core::wire::{Header, Request, Response, ServerErrorKind};
use support::history::check_replicas;
use support::{
    client_trusting, damage, fast_failing_transport, local_cluster, segment, within, TestServer,
};
use tokio::sync::Notify;

fn value(address: Address) -> Vec<u8> {
    format!("value-{address}").into_bytes()
}

fn stored(address: Address) -> Stored {
    Stored::Data(Entry {
        id: None,
        streams: vec![],
        payload: value(address),
    })
}

/// A store in a fresh directory holding `value-a` at every address of
/// `0..n`, closed.
fn store_with(n: Address) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path(), LogUnitConfig::default()).unwrap();
    for a in 0..n {
        store.put(0, a, &stored(a)).unwrap();
    }
    drop(store);
    dir
}

fn is_value(read: &Result<ReadOutcome, StoreError>, address: Address) -> bool {
    matches!(read, Ok(ReadOutcome::Data(e)) if e.payload == value(address))
}

#[test]
fn a_damaged_address_field_marks_its_own_address_not_the_one_it_names() {
    let dir = store_with(10);
    // The address field of record 4 now reads 7 (4 ^ 3), an intact address.
    damage(&segment(dir.path()), 4, Some(HEADER_BYTES), 0x03);
    let store = FileStore::open(dir.path(), LogUnitConfig::default()).unwrap();
    assert_eq!(store.recovery_report().corrupt_records, 1);
    let seven = store.get(7);
    assert!(is_value(&seven, 7), "the intact address 7: {seven:?}");
    let four = store.get(4);
    assert!(
        matches!(four, Err(StoreError::Corrupt { address: 4, .. })),
        "the damaged record's own address: {four:?}"
    );
    for a in (0..10).filter(|a| *a != 4) {
        assert!(is_value(&store.get(a), a), "address {a}");
    }
}

#[test]
fn two_corrupt_records_in_a_row_are_both_counted_and_marked() {
    let dir = store_with(10);
    let file = segment(dir.path());
    damage(&file, 4, None, 0x40);
    damage(&file, 5, None, 0x40);
    let store = FileStore::open(dir.path(), LogUnitConfig::default()).unwrap();
    assert_eq!(store.recovery_report().corrupt_records, 2);
    for a in [4, 5] {
        let read = store.get(a);
        assert!(
            matches!(read, Err(StoreError::Corrupt { address, .. }) if address == a),
            "address {a}: {read:?}"
        );
    }
    for a in (0..10).filter(|a| *a != 4 && *a != 5) {
        assert!(is_value(&store.get(a), a), "address {a}");
    }
}

#[test]
fn a_write_batch_fails_only_where_the_copy_is_corrupt() {
    let dir = store_with(10);
    damage(&segment(dir.path()), 4, None, 0x40);
    let store = FileStore::open(dir.path(), LogUnitConfig::default()).unwrap();
    let out = store.put_batch(0, &[(4, Stored::Junk), (10, stored(10))]);
    assert!(out.is_ok(), "{out:?}");
    assert!(is_value(&store.get(10), 10));
    assert!(matches!(
        store.get(4),
        Err(StoreError::Corrupt { address: 4, .. })
    ));
}

/// Checks that every way of reading `addresses` answers `expected`, then
/// that every member holds the same copy.
async fn everything_reads_and_matches(
    client: &LogClient,
    stream: StreamId,
    expected: &[(Address, Vec<u8>)],
    config: &corfu::core::client_config::ClientConfig,
) {
    let tail = client.tail().await.unwrap();
    let range = within(30, "read_range", client.read_range(0, tail))
        .await
        .unwrap();
    let entries = within(30, "read_stream", client.read_stream(stream, 0, tail))
        .await
        .unwrap();
    assert_eq!(entries.len(), expected.len());
    for ((address, entry), (want, payload)) in entries.iter().zip(expected) {
        assert_eq!((address, &entry.payload), (want, payload));
    }
    for (address, payload) in expected {
        let read = within(30, "read", client.read(*address)).await.unwrap();
        assert!(
            matches!(&read, ReadOutcome::Data(e) if &e.payload == payload),
            "read {address}: {read:?}"
        );
        let filled = within(30, "fill", client.fill(*address)).await.unwrap();
        assert_eq!(filled, read, "fill {address}");
    }
    let endpoint = config.endpoint().unwrap();
    let layout = client.refresh_layout().await.unwrap();
    check_replicas(&endpoint, &layout, tail, Some(&range)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_copy_on_the_tail_middle_or_head_is_repaired_from_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = local_cluster(&dir, 3, Shape::new(1, 3)).await;
    let config = cluster.client_config();
    let client = LogClient::connect(&config).await.unwrap();
    let stream = StreamId::from_name("corrupt");
    // Distinct payloads, so a copy of the wrong address would show.
    let mut expected = Vec::new();
    for i in 0..40u64 {
        let payload = format!("entry {i}").into_bytes();
        let a = client.append(payload.clone(), &[stream]).await.unwrap();
        expected.push((a, payload));
    }
    let addr = |i: usize| expected[i].0;

    // (member index, what is damaged, the address whose copy goes bad,
    // the offset of the damaged byte in its record: `None` for the last)
    let cases: [(usize, &str, Address, Option<usize>); 4] = [
        (2, "tail, payload byte", addr(10), None),
        // The address field of the record of addr(20) then names addr(21).
        (2, "tail, address field", addr(20), Some(HEADER_BYTES)),
        (1, "middle, payload byte", addr(25), None),
        (0, "head, payload byte", addr(30), None),
    ];
    for (member, what, address, offset) in cases {
        let log_dir = cluster.node_config(member).unwrap().data_dir.join("log");
        cluster.stop_node(member).await.unwrap();
        let mask = if offset.is_some() {
            (address ^ (address + 1)) as u8
        } else {
            0x40
        };
        damage(&segment(&log_dir), address, offset, mask);
        cluster.restart_node(member).await.unwrap();
        if member == 0 {
            // The head's node hosts the sequencer, which restarts empty: a
            // seal bootstraps it again.
            let engine =
                Reconfigurer::new(config.endpoint().unwrap(), config.layout_servers.clone());
            within(30, "seal", engine.reconfigure(&Change::Seal))
                .await
                .unwrap();
            client.refresh_layout().await.unwrap();
        }
        // The restarted unit knows its copy is bad (and says so).
        let unit = cluster.node_addr(member).unwrap().to_string();
        let epoch = client.layout().epoch;
        let raw = config
            .endpoint()
            .unwrap()
            .peer(&unit)
            .call(epoch, Request::LogUnit(LogUnitRequest::Read { address }))
            .await
            .unwrap();
        assert!(
            matches!(&raw, Response::Error(e) if format!("{:?}", e.kind) == "Corrupt"),
            "{what}: {unit} answered {raw:?}"
        );
        // The first read of the address: from the tail, repaired there if
        // the tail's copy is the bad one; a fill repairs the others.
        let started = Instant::now();
        let read = within(30, "read", client.read(address)).await.unwrap();
        let read_took = started.elapsed();
        let want = &expected.iter().find(|(a, _)| *a == address).unwrap().1;
        assert!(
            matches!(&read, ReadOutcome::Data(e) if &e.payload == want),
            "{what}: read {address}: {read:?}"
        );
        let started = Instant::now();
        let filled = within(30, "fill", client.fill(address)).await.unwrap();
        let fill_took = started.elapsed();
        assert_eq!(filled, read, "{what}: fill {address}");
        println!(
            "{what}: address {address}: first read {:.2} ms, fill {:.2} ms",
            read_took.as_secs_f64() * 1e3,
            fill_took.as_secs_f64() * 1e3
        );
        everything_reads_and_matches(&client, stream, &expected, &config).await;
    }
    cluster.shutdown().await;
}

// ---------------------------------------------------------------------
// Read repair's decisions, on a scripted chain of three in-process units
// over `MemoryStore`s the tests damage directly (`corrupt`: the unit knows
// its copy is bad; `forget`: the unit lost its copy without knowing it),
// with one request of a chosen kind held at a chosen unit to order the
// calls of a writer and a repair.
// ---------------------------------------------------------------------

/// A request held once at a unit: `arrived` is told when it comes, and it
/// is served once `release` is told.
struct Hold {
    matches: fn(&LogUnitRequest) -> bool,
    arrived: Arc<Notify>,
    release: Arc<Notify>,
}

/// One unit of the scripted chain; unit 0 also answers for the layout
/// servers and the sequencer (a counter).
struct ScriptedUnit {
    store: Arc<MemoryStore>,
    unit: LogUnitService<MemoryStore>,
    layout: Mutex<Option<Layout>>,
    next: AtomicU64,
    hold: Mutex<Option<Hold>>,
}

#[async_trait::async_trait]
impl Service for ScriptedUnit {
    async fn handle(&self, header: Header, body: Request) -> Response {
        match body {
            Request::Layout(LayoutRequest::GetLayout) => Response::Layout(LayoutResponse::Layout(
                self.layout.lock().unwrap().clone().map(Box::new),
            )),
            Request::Sequencer(SequencerRequest::Token { count, streams, .. }) => {
                Response::Sequencer(SequencerResponse::Token {
                    start: self.next.fetch_add(u64::from(count), Ordering::SeqCst),
                    count,
                    previous: streams.into_iter().map(|s| (s, None)).collect(),
                })
            }
            Request::LogUnit(request) => {
                let held = {
                    let mut hold = self.hold.lock().unwrap();
                    match hold.as_ref() {
                        Some(h) if (h.matches)(&request) => hold.take(),
                        _ => None,
                    }
                };
                if let Some(h) = held {
                    h.arrived.notify_one();
                    h.release.notified().await;
                }
                self.unit.handle(header, Request::LogUnit(request)).await
            }
            other => Response::error(
                ServerErrorKind::Unsupported,
                format!("the scripted unit does not answer {}", other.kind()),
            ),
        }
    }
}

struct ScriptedChain {
    units: Vec<Arc<ScriptedUnit>>,
    servers: Vec<TestServer>,
}

impl ScriptedChain {
    /// Three units on one chain, unit 0 the head.
    fn start() -> ScriptedChain {
        let mut units = Vec::new();
        let mut servers = Vec::new();
        for _ in 0..3 {
            let store = Arc::new(MemoryStore::new());
            let unit = Arc::new(ScriptedUnit {
                unit: LogUnitService::new(
                    store.clone(),
                    LogUnitLimits {
                        read_batch_max: 64,
                        read_bytes_max: 1 << 20,
                        wait_for_sync: false,
                    },
                ),
                store,
                layout: Mutex::new(None),
                next: AtomicU64::new(0),
                hold: Mutex::new(None),
            });
            servers.push(TestServer::start(unit.clone(), fast_failing_transport()));
            units.push(unit);
        }
        let nodes: Vec<NodeAddr> = servers
            .iter()
            .enumerate()
            .map(|(i, s)| NodeAddr {
                node_id: format!("n{}", i + 1),
                addr: s.addr.to_string(),
            })
            .collect();
        let layout = Layout {
            cluster_id: ClusterId(42),
            epoch: 1,
            layout_servers: vec![nodes[0].clone()],
            sequencers: vec![nodes[0].clone()],
            segments: vec![Segment {
                start: 0,
                end: None,
                stripes: vec![Stripe {
                    chain: nodes.clone(),
                }],
            }],
            grants: Grants::from(0),
            voids: Vec::new(),
        };
        layout.validate().unwrap();
        *units[0].layout.lock().unwrap() = Some(layout);
        ScriptedChain { units, servers }
    }

    async fn client(&self) -> LogClient {
        let roots: Vec<_> = self.servers.iter().flat_map(|s| s.ca.clone()).collect();
        let endpoint = client_trusting(&roots, None, ClusterId(42), fast_failing_transport());
        LogClient::connect_with(
            endpoint,
            vec![self.servers[0].addr.to_string()],
            LogClientOptions::default(),
        )
        .await
        .unwrap()
    }

    /// Holds the next request `matches` accepts at unit `i`; returns the
    /// notifications of its arrival and of its release.
    fn hold(&self, i: usize, matches: fn(&LogUnitRequest) -> bool) -> (Arc<Notify>, Arc<Notify>) {
        let (arrived, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        *self.units[i].hold.lock().unwrap() = Some(Hold {
            matches,
            arrived: arrived.clone(),
            release: release.clone(),
        });
        (arrived, release)
    }

    /// What every unit holds at `address`.
    fn copies(&self, address: Address) -> Vec<String> {
        self.units
            .iter()
            .map(|u| match u.store.get(address) {
                Ok(ReadOutcome::Data(e)) => String::from_utf8_lossy(&e.payload).into_owned(),
                Ok(other) => format!("{other:?}"),
                Err(e) => format!("error: {e}"),
            })
            .collect()
    }

    async fn stop(self) {
        for server in self.servers {
            server.stop().await;
        }
    }
}

fn payload_of(outcome: &Result<ReadOutcome, corfu::core::client::ClientError>) -> String {
    match outcome {
        Ok(ReadOutcome::Data(e)) => String::from_utf8_lossy(&e.payload).into_owned(),
        other => format!("{other:?}"),
    }
}

/// Review finding 1: the head's copy is corrupt and the middle lost its
/// copy (it reads `Unwritten`), while the tail holds the acknowledged
/// value. The repair must find the tail's value before deciding anything:
/// a decision at the first readable member below the head (the middle)
/// would make the acknowledged address junk on two members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_head_and_a_lost_middle_copy_keep_the_acknowledged_value() {
    let chain = ScriptedChain::start();
    let client = chain.client().await;
    let a = client.append(b"A".to_vec(), &[]).await.unwrap();
    assert_eq!(chain.copies(a), ["A", "A", "A"]);
    chain.units[0].store.corrupt(a);
    chain.units[1].store.forget(a);
    let filled = within(10, "fill", client.fill(a)).await;
    assert_eq!(payload_of(&filled), "A", "fill {a}: {filled:?}");
    assert_eq!(chain.copies(a), ["A", "A", "A"], "every member holds A");
    let read = within(10, "read", client.read(a)).await;
    assert_eq!(payload_of(&read), "A");
    chain.stop().await;
}

/// Review finding 3: a writer whose entry reached the head is held before
/// the middle; the head's copy turns corrupt and a filler's repair decides
/// the address (junk, at the middle: nothing past the head was written, so
/// the entry was never acknowledged). The writer's write at the middle then
/// meets that junk: it must check the chain's value again and take a new
/// address, not fail the append.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_meets_a_repairs_junk_below_the_head_takes_a_new_address() {
    let chain = ScriptedChain::start();
    let writer = chain.client().await;
    let filler = chain.client().await;
    let (arrived, release) = chain.hold(1, |r| matches!(r, LogUnitRequest::Write(_)));
    let append = tokio::spawn(async move { writer.append(b"W".to_vec(), &[]).await });
    within(
        10,
        "the writer's write reaches the middle",
        arrived.notified(),
    )
    .await;
    let a = 0;
    assert_eq!(chain.copies(a), ["W", "Unwritten", "Unwritten"]);
    chain.units[0].store.corrupt(a);
    let filled = within(10, "fill", filler.fill(a)).await;
    assert_eq!(filled.as_ref().ok(), Some(&ReadOutcome::Junk), "{filled:?}");
    assert_eq!(chain.copies(a), ["Junk", "Junk", "Junk"]);
    release.notify_one();
    let appended = within(10, "the append", append).await.unwrap();
    let at = match appended {
        Ok(at) => at,
        Err(e) => panic!("the append failed: {e}"),
    };
    assert_ne!(at, a, "the entry moved to a new address");
    assert_eq!(chain.copies(at), ["W", "W", "W"]);
    assert_eq!(chain.copies(a), ["Junk", "Junk", "Junk"]);
    chain.stop().await;
}

/// Review finding 4: a repair reads the tail's copy as corrupt, but by the
/// time its `Repair` arrives the tail no longer has the address marked
/// corrupt (it restarted and lost the copy: `Unwritten`). The unit refuses
/// the `Repair`; the repair must fall back to the ordinary write of the
/// chain's value (write-once keeps it safe), not fail the read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_refused_because_the_copy_is_no_longer_corrupt_falls_back_to_a_write() {
    let chain = ScriptedChain::start();
    let client = chain.client().await;
    let a = client.append(b"A".to_vec(), &[]).await.unwrap();
    chain.units[2].store.corrupt(a);
    let (arrived, release) = chain.hold(2, |r| matches!(r, LogUnitRequest::Repair { .. }));
    let reader = chain.client().await;
    let read = tokio::spawn(async move { reader.read(a).await });
    within(10, "the repair reaches the tail", arrived.notified()).await;
    chain.units[2].store.forget(a);
    release.notify_one();
    let read = within(10, "read", read).await.unwrap();
    assert_eq!(payload_of(&read), "A", "read {a}: {read:?}");
    assert_eq!(chain.copies(a), ["A", "A", "A"]);
    chain.stop().await;
}
