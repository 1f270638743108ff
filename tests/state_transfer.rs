//! Adding log units (DESIGN §4 "Layout service"; `corfu_core::reconfig`,
//! `corfu_core::state_transfer`) on in-process clusters while appenders
//! record a history:
//! - a removed chain member comes back: fenced while stale, then joined to
//!   the open segment, given the older segments by state transfer, and
//!   made a member of their chains (segments merged); old addresses are
//!   then read from it;
//! - holes of the older segments completed by racing readers and by the
//!   transfer end the same on every member (write-once);
//! - a stripe added for scale-out takes appends, and a further unit joins
//!   it as a chain member;
//! - bad additions are refused with one-line errors and change nothing; a
//!   unit holding a value the log does not is removed again.
//!
//! After each: the history check, and every member of every chain holds
//! the same outcome at every address.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corfu::cluster::Shape;
use corfu::core::client::{HoleFillPolicy, LogClient, LogClientOptions};
use corfu::core::client_config::ClientConfig;
use corfu::core::layout::{Layout, NodeAddr};
use corfu::core::reconfig::{Change, ReconfigError, Reconfigured, Reconfigurer};
use corfu::core::types::{Address, StreamId};
use corfu::core::wire::logunit::{
    AddressedEntry, Entry, LogUnitRequest, LogUnitResponse, ReadOutcome, WriteOutcome,
};
use corfu::core::wire::sequencer::{SequencerRequest, SequencerResponse};
use corfu::core::wire::{Request, Response, ServerErrorKind};
use corfu::local::LocalCluster;
use support::history::{check_replicas, raw_reads, History, Outcome, Raw};
use support::{damage, local_cluster, segment, within};

/// Appenders recording a history.
struct Load {
    history: Arc<History>,
    acked: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// `clients` clients with `tasks` appending tasks each; every other
    /// append also goes to a stream.
    async fn start(config: &ClientConfig, clients: usize, tasks: usize) -> Load {
        let history = Arc::new(History::new());
        let acked = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let stream = StreamId::from_name("state-transfer");
        let mut handles = Vec::new();
        for c in 0..clients {
            let client = LogClient::connect(config).await.unwrap();
            for t in 0..tasks {
                let (client, history, acked, stop) =
                    (client.clone(), history.clone(), acked.clone(), stop.clone());
                handles.push(tokio::spawn(async move {
                    let mut i = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let value = format!("c{c}-t{t}-{i}").into_bytes();
                        let streams: &[StreamId] = if i % 2 == 0 { &[stream] } else { &[] };
                        if history.append(&client, value, streams).await.is_ok() {
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                        i += 1;
                    }
                }));
            }
        }
        Load {
            history,
            acked,
            stop,
            tasks: handles,
        }
    }

    /// Waits until `more` further appends are acknowledged.
    async fn resume(&self, more: usize, what: &str) {
        let from = self.acked.load(Ordering::SeqCst);
        within(15, what, async {
            while self.acked.load(Ordering::SeqCst) < from + more {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }

    /// Stops the appenders, requires every append acknowledged, checks the
    /// history against the whole log and the replicas of the layout in
    /// force; returns the log as read and that layout.
    async fn finish(self, config: &ClientConfig) -> (Vec<(Address, ReadOutcome)>, Layout) {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            within(30, "appenders stop", task).await.unwrap();
        }
        let ops = self.history.ops();
        let failed: Vec<_> = ops
            .iter()
            .filter(|op| !matches!(op.outcome, Outcome::Acked(_)))
            .collect();
        assert!(
            failed.is_empty(),
            "appends failed: {:?}",
            &failed[..failed.len().min(5)]
        );
        finish_checks(&self.history, config).await
    }
}

/// The history check over the whole log, then the replica check.
async fn finish_checks(
    history: &History,
    config: &ClientConfig,
) -> (Vec<(Address, ReadOutcome)>, Layout) {
    let reader = LogClient::connect(config).await.unwrap();
    let (report, log) = history.check_log(&reader).await;
    eprintln!("{report}");
    let layout = Layout::clone(&reader.refresh_layout().await.unwrap());
    let compared = check_replicas(
        &config.endpoint().unwrap(),
        &layout,
        log.last().map_or(0, |(a, _)| a + 1),
        Some(&log),
    )
    .await;
    eprintln!("replica check: {compared} (address, member) pairs agree");
    (log, layout)
}

fn client_config(cluster: &LocalCluster) -> ClientConfig {
    let mut config = cluster.client_config();
    config.client = LogClientOptions {
        hole_fill_timeout_ms: 50,
        operation_timeout_ms: 20_000,
        ..LogClientOptions::default()
    };
    config
}

fn engine(config: &ClientConfig) -> Reconfigurer {
    Reconfigurer::new(config.endpoint().unwrap(), config.layout_servers.clone())
}

/// Node `i` (0-based) of `cluster` as a layout names it.
fn node(cluster: &LocalCluster, i: usize) -> NodeAddr {
    NodeAddr {
        node_id: cluster.node_id(i).unwrap().to_string(),
        addr: cluster.node_addr(i).unwrap().to_string(),
    }
}

fn add(node: NodeAddr, stripe: bool) -> Change {
    Change::AddNode { node, stripe }
}

fn ids(chain: &[NodeAddr]) -> Vec<&str> {
    chain.iter().map(|n| n.node_id.as_str()).collect()
}

/// Prints the steps of an addition (the figures the issue asks for).
fn report(what: &str, done: &Reconfigured) {
    let added = done.added.as_ref().expect("an addition reports its steps");
    let t = &added.transfer;
    eprintln!(
        "{what}: epoch {} after {:?}; joined the open segment {:?}; state transfer {} addresses \
         ({} copied, {} already held, {} junk, {} holes completed) {} bytes in {:?}; joined the \
         older chains {:?}",
        done.layout.epoch,
        done.elapsed,
        added.joined_open,
        t.addresses,
        t.copied,
        t.already_held,
        t.junk,
        t.holes_completed,
        t.bytes,
        t.elapsed,
        added.joined_older
    );
}

fn data(payload: &[u8]) -> Entry {
    Entry {
        id: None,
        streams: vec![],
        payload: payload.to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_unit_comes_back_by_state_transfer_while_appends_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = local_cluster(&dir, 5, Shape::new(1, 3)).await;
    let first = cluster.layout().clone();
    let config = client_config(&cluster);
    let engine = engine(&config);
    let load = Load::start(&config, 2, 5).await;
    load.resume(200, "appends before the removal").await;

    cluster.stop_node(1).await.unwrap();
    let removed = within(
        10,
        "removing n2",
        engine.reconfigure(&Change::RemoveNode("n2".into())),
    )
    .await
    .unwrap();
    assert_eq!(removed.layout.epoch, 2);
    load.resume(300, "appends while n2 is away").await;

    // Back with its data, which is stale: it was not sealed into epoch 2,
    // so it refuses to serve it.
    cluster.restart_node(1).await.unwrap();
    let n2 = node(&cluster, 1);
    let endpoint = config.endpoint().unwrap();
    let stale = endpoint
        .peer(&n2.addr)
        .call(2, Request::LogUnit(LogUnitRequest::Read { address: 0 }))
        .await
        .unwrap();
    assert!(
        matches!(&stale, Response::Error(e) if e.kind == ServerErrorKind::Unavailable
            && e.message.contains("not sealed at epoch 2")),
        "{stale:?}"
    );

    let done = within(
        30,
        "adding n2 back",
        engine.reconfigure(&add(n2.clone(), false)),
    )
    .await
    .unwrap();
    report("n2 added back under load", &done);
    let added = done.added.clone().unwrap();
    assert_eq!(added.joined_open.map(|(e, _)| e), Some(3));
    assert_eq!(added.joined_older.map(|(e, _)| e), Some(4));
    assert_eq!(done.layout.epoch, 4);
    assert!(
        added.transfer.copied > 0,
        "n2 lacked the appends made while it was away"
    );
    assert!(
        added.transfer.already_held > 0,
        "n2 kept what it held before it stopped"
    );
    // One segment again: every address on n1 -> n3 -> n2.
    assert_eq!(done.layout.segments.len(), 1, "{:?}", done.layout);
    assert_eq!(
        ids(&done.layout.segments[0].stripes[0].chain),
        ["n1", "n3", "n2"]
    );
    load.resume(300, "appends after n2 is back").await;

    let (log, layout) = load.finish(&config).await;
    assert_eq!(layout.epoch, 4);
    // n2 is the chains' tail: clients read every old address from it, and
    // it holds what the log holds.
    // The log as read leaves void addresses out (none was ever written).
    let addresses: Vec<Address> = log.iter().map(|(a, _)| *a).collect();
    let on_n2 = raw_reads(&endpoint, &n2.addr, layout.epoch, &addresses).await;
    assert_eq!(on_n2, log);
    // A client still at epoch 1 is fenced by the unit that came back.
    let fenced = endpoint
        .peer(&n2.addr)
        .call(
            first.epoch,
            Request::LogUnit(LogUnitRequest::Write(AddressedEntry {
                address: log.last().map_or(0, |(a, _)| a + 1) + 1000,
                entry: data(b"stale"),
            })),
        )
        .await
        .unwrap();
    assert_eq!(fenced, Response::WrongEpoch { current: 4 });
    cluster.shutdown().await;
}

/// Holes of the older segment (a writer that crashed before its head
/// write, one that crashed after it) are completed by readers racing the
/// state transfer: whoever completes an address first decides it, the
/// others copy it, and every member, the added unit included, ends with
/// the same value: the head's when it had one, junk otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holes_completed_while_the_transfer_runs_stay_write_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = local_cluster(&dir, 3, Shape::new(1, 3)).await;
    let config = client_config(&cluster);
    let engine = engine(&config);
    let history = Arc::new(History::new());
    let client = LogClient::connect(&config).await.unwrap();
    for i in 0..50 {
        history
            .append(&client, format!("before-{i}").into_bytes(), &[])
            .await
            .unwrap();
    }
    cluster.stop_node(2).await.unwrap();
    let removed = engine
        .reconfigure(&Change::RemoveNode("n3".into()))
        .await
        .unwrap();

    // Crashed writers on the chain n1 -> n2: k % 3 == 0 wrote nothing,
    // k % 3 == 1 only the head, k % 3 == 2 both members.
    let raw = Raw::new(config.endpoint().unwrap(), removed.layout.clone());
    let tokens = raw
        .token(30, &[], |k| format!("raw-{k}").into_bytes())
        .await;
    for (k, (address, entry)) in tokens.iter().enumerate() {
        history.invoke(entry.payload.clone(), &[]);
        let chain = raw.chain(*address);
        if k % 3 >= 1 {
            assert_eq!(
                raw.write(&chain[0], *address, entry).await,
                WriteOutcome::Ok
            );
        }
        if k % 3 == 2 {
            assert_eq!(
                raw.write(&chain[1], *address, entry).await,
                WriteOutcome::Ok
            );
        }
    }
    for i in 0..50 {
        history
            .append(&client, format!("after-{i}").into_bytes(), &[])
            .await
            .unwrap();
    }
    cluster.restart_node(2).await.unwrap();

    // Readers that complete holes at once, racing the transfer.
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..3 {
        let mut eager = config.clone();
        eager.client.hole_fill = HoleFillPolicy::Immediately;
        let reader = LogClient::connect(&eager).await.unwrap();
        let stop = stop.clone();
        let (from, to) = (tokens[0].0, tokens[tokens.len() - 1].0 + 1);
        readers.push(tokio::spawn(async move {
            let mut rounds = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let read = reader.read_range(from, to).await.unwrap();
                assert!(read
                    .iter()
                    .all(|(_, o)| matches!(o, ReadOutcome::Data(_) | ReadOutcome::Junk)));
                rounds += 1;
            }
            rounds
        }));
    }
    let n3 = node(&cluster, 2);
    let done = within(30, "adding n3 back", engine.reconfigure(&add(n3, false)))
        .await
        .unwrap();
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        let rounds = within(10, "readers stop", r).await.unwrap();
        eprintln!("a hole-filling reader read the range {rounds} times");
    }
    report("n3 added back among hole-filling readers", &done);
    assert_eq!(
        ids(&done.layout.segments[0].stripes[0].chain),
        ["n1", "n2", "n3"]
    );

    let raw = Raw::new(config.endpoint().unwrap(), done.layout.clone());
    for (k, (address, entry)) in tokens.iter().enumerate() {
        let members = raw.read_members(*address).await;
        let expected = if k % 3 == 0 {
            ReadOutcome::Junk
        } else {
            ReadOutcome::Data(entry.clone())
        };
        assert_eq!(members, vec![expected; 3], "address {address} (writer {k})");
    }
    finish_checks(&history, &config).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_stripe_takes_appends_and_a_further_unit_joins_its_chain() {
    let dir = tempfile::tempdir().unwrap();
    // n4 and n5 are log units outside the layout.
    let cluster = local_cluster(&dir, 5, Shape::new(1, 3)).await;
    let config = client_config(&cluster);
    let engine = engine(&config);
    let endpoint = config.endpoint().unwrap();
    let load = Load::start(&config, 2, 4).await;
    load.resume(100, "appends before the scale-out").await;

    let striped = within(
        10,
        "adding the stripe n4",
        engine.reconfigure(&add(node(&cluster, 3), true)),
    )
    .await
    .unwrap();
    report("stripe n4 added", &striped);
    assert_eq!(striped.layout.epoch, 2);
    assert_eq!(striped.added.as_ref().unwrap().transfer.addresses, 0);
    let open = striped.layout.open_segment().unwrap().clone();
    assert_eq!(open.stripes.len(), 2);
    assert_eq!(ids(&open.stripes[1].chain), ["n4"]);
    load.resume(300, "appends on two stripes").await;

    // Appends land on the new stripe: n4 holds the addresses a % 2 == 1
    // of the new segment that were acknowledged.
    let acked: Vec<Address> = load
        .history
        .ops()
        .iter()
        .filter_map(|op| match op.outcome {
            Outcome::Acked(a) if a >= open.start && a % 2 == 1 => Some(a),
            _ => None,
        })
        .collect();
    assert!(
        acked.len() > 50,
        "{} appends on the new stripe",
        acked.len()
    );
    let on_n4 = raw_reads(&endpoint, &node(&cluster, 3).addr, 2, &acked).await;
    assert!(on_n4.iter().all(|(_, o)| matches!(o, ReadOutcome::Data(_))));

    // n5 joins the least replicated chain: the new stripe's.
    let grown = within(
        30,
        "adding n5",
        engine.reconfigure(&add(node(&cluster, 4), false)),
    )
    .await
    .unwrap();
    report("n5 added to the stripe of n4", &grown);
    assert!(grown.added.as_ref().unwrap().transfer.copied > 0);
    let layout = &grown.layout;
    assert_eq!(layout.segments.len(), 2, "{layout:?}");
    assert_eq!(layout.segments[1].start, open.start);
    assert_eq!(
        ids(&layout.segments[1].stripes[0].chain),
        ["n1", "n2", "n3"]
    );
    assert_eq!(ids(&layout.segments[1].stripes[1].chain), ["n4", "n5"]);
    load.resume(300, "appends after n5 joined").await;
    load.finish(&config).await;
    cluster.shutdown().await;
}

fn one_line(e: &ReconfigError) -> String {
    let text = e.to_string();
    assert!(!text.contains('\n'), "{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_additions_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = local_cluster(&dir, 4, Shape::new(1, 3)).await;
    let mut config = client_config(&cluster);
    config.transport.connect_timeout_ms = 500;
    let engine = engine(&config);
    let client = LogClient::connect(&config).await.unwrap();
    for i in 0..20 {
        client
            .append(format!("v{i}").into_bytes(), &[])
            .await
            .unwrap();
    }

    let member = engine
        .reconfigure(&add(node(&cluster, 0), false))
        .await
        .unwrap_err();
    assert!(one_line(&member).contains("already a log unit"), "{member}");

    let free = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let nowhere = free.local_addr().unwrap().to_string();
    drop(free);
    let gone = NodeAddr {
        node_id: "n9".into(),
        addr: nowhere,
    };
    let unreachable = engine.reconfigure(&add(gone, false)).await.unwrap_err();
    assert!(
        one_line(&unreachable).contains("unreachable"),
        "{unreachable}"
    );

    let other_dir = tempfile::tempdir().unwrap();
    let other = local_cluster(&other_dir, 1, Shape::new(1, 1)).await;
    let stranger = NodeAddr {
        node_id: "n7".into(),
        addr: other.node_addr(0).unwrap().to_string(),
    };
    let foreign = engine.reconfigure(&add(stranger, false)).await.unwrap_err();
    assert!(one_line(&foreign).contains("another cluster"), "{foreign}");
    other.shutdown().await;

    // n4's address under another id, and n4 under another address.
    let misnamed = NodeAddr {
        node_id: "n7".into(),
        addr: node(&cluster, 3).addr,
    };
    let e = engine.reconfigure(&add(misnamed, false)).await.unwrap_err();
    assert!(one_line(&e).contains("conflicts"), "{e}");
    let moved = NodeAddr {
        node_id: "n4".into(),
        addr: "127.0.0.1:1".into(),
    };
    let e = engine.reconfigure(&add(moved, false)).await.unwrap_err();
    assert!(one_line(&e).contains("conflicts"), "{e}");

    // A unit holding data cannot become a stripe of its own: its data was
    // never checked against the log.
    engine
        .reconfigure(&Change::RemoveNode("n2".into()))
        .await
        .unwrap();
    let holds = engine
        .reconfigure(&add(node(&cluster, 1), true))
        .await
        .unwrap_err();
    assert!(
        one_line(&holds).contains("holds addresses up to"),
        "{holds}"
    );

    // Nothing changed: epoch 2 (the removal) is in force and appends work.
    assert_eq!(engine.current().await.unwrap().epoch, 2);
    client.append(b"still".to_vec(), &[]).await.unwrap();
    cluster.shutdown().await;
}

/// A unit that holds a value the log does not (here written to it
/// directly, as a head that died before its successors got the write
/// would) is found out by the state transfer and taken out again: its
/// value is never read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_holding_an_unacknowledged_value_is_removed_again() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = local_cluster(&dir, 3, Shape::new(1, 3)).await;
    let config = client_config(&cluster);
    let engine = engine(&config);
    let client = LogClient::connect(&config).await.unwrap();
    for i in 0..20 {
        client
            .append(format!("v{i}").into_bytes(), &[])
            .await
            .unwrap();
    }
    let removed = engine
        .reconfigure(&Change::RemoveNode("n2".into()))
        .await
        .unwrap();
    let mut later = Vec::new();
    for i in 0..20 {
        later.push(
            client
                .append(format!("w{i}").into_bytes(), &[])
                .await
                .unwrap(),
        );
    }
    // n2 (removed while alive; sealed into epoch 2 here in case the
    // removal's best-effort seal has not arrived) takes a write of its own
    // at an address the log gave to another value.
    let n2 = node(&cluster, 1);
    let endpoint = config.endpoint().unwrap();
    let sealed = endpoint
        .peer(&n2.addr)
        .call(2, Request::LogUnit(LogUnitRequest::Seal { epoch: 2 }))
        .await
        .unwrap();
    assert!(
        matches!(sealed, Response::LogUnit(LogUnitResponse::Tails(_))),
        "{sealed:?}"
    );
    let taken = later[5];
    let answer = endpoint
        .peer(&n2.addr)
        .call(
            removed.layout.epoch,
            Request::LogUnit(LogUnitRequest::Write(AddressedEntry {
                address: taken,
                entry: data(b"never acknowledged"),
            })),
        )
        .await
        .unwrap();
    assert_eq!(
        answer,
        Response::LogUnit(LogUnitResponse::Write(WriteOutcome::Ok))
    );

    let e = engine.reconfigure(&add(n2, false)).await.unwrap_err();
    let text = one_line(&e);
    assert!(
        text.contains(&format!("address {taken}"))
            && text.contains("removed from the layout again"),
        "{text}"
    );
    let layout = engine.current().await.unwrap();
    assert!(!layout.is_log_unit("n2"), "{layout:?}");
    // Readers see the log's value, and appends go on.
    match client.read(taken).await.unwrap() {
        ReadOutcome::Data(e) => assert_eq!(e.payload, b"w5"),
        other => panic!("{other:?}"),
    }
    client.append(b"after".to_vec(), &[]).await.unwrap();
    cluster.shutdown().await;
}

/// An addition interrupted after its first epoch (played here by hand:
/// seal, plan, Paxos, sequencer bootstrap) is finished by running it
/// again: the unit is in the open segment, so the state transfer and the
/// second epoch follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_addition_is_finished_by_running_it_again() {
    use corfu::core::layout_service::proposer::Proposer;
    use corfu::core::reconfig::{merge_tails, plan};

    let dir = tempfile::tempdir().unwrap();
    let cluster = local_cluster(&dir, 4, Shape::new(1, 3)).await;
    let config = client_config(&cluster);
    let engine = engine(&config);
    let history = History::new();
    let client = LogClient::connect(&config).await.unwrap();
    for i in 0..40 {
        history
            .append(&client, format!("v{i}").into_bytes(), &[])
            .await
            .unwrap();
    }
    let current = engine.current().await.unwrap();
    let n4 = node(&cluster, 3);
    let epoch = current.epoch + 1;
    let endpoint = config.endpoint().unwrap();
    let mut tails = Vec::new();
    for unit in current.all_log_units().into_iter().chain([&n4]) {
        let answer = endpoint
            .peer(&unit.addr)
            .call(epoch, Request::LogUnit(LogUnitRequest::Seal { epoch }))
            .await
            .unwrap();
        let Response::LogUnit(LogUnitResponse::Tails(t)) = answer else {
            panic!("seal {}: {answer:?}", unit.node_id);
        };
        tails.push(t);
    }
    let (tail, _) = merge_tails(&tails);
    // Epoch e+1's sequencer starts above everything epoch e's granted.
    let sequencer = current.active_sequencer().unwrap();
    let granted = match endpoint
        .peer(&sequencer.addr)
        .call(epoch, Request::Sequencer(SequencerRequest::Seal { epoch }))
        .await
        .unwrap()
    {
        Response::Sequencer(SequencerResponse::Sealed {
            served: Some((_, next)),
            ..
        }) => next,
        other => panic!("seal the sequencer: {other:?}"),
    };
    let mut first = plan(&current, &add(n4.clone(), false), tail).unwrap();
    let start = tail.max(granted);
    first.add_void(tail, start);
    first.grants = corfu::core::layout::Grants::from(start);
    let proposer = Proposer::new(
        endpoint.clone(),
        config.layout_servers.clone(),
        rand::random(),
    );
    assert_eq!(proposer.propose(first.clone()).await.unwrap(), first);
    corfu::cluster::bootstrap_sequencer(&endpoint, &first)
        .await
        .unwrap();
    for i in 0..40 {
        history
            .append(&client, format!("w{i}").into_bytes(), &[])
            .await
            .unwrap();
    }

    let done = engine.reconfigure(&add(n4.clone(), false)).await.unwrap();
    report("n4's interrupted addition finished", &done);
    let added = done.added.as_ref().unwrap();
    assert_eq!(added.joined_open, None, "the first epoch was not redone");
    assert_eq!(added.transfer.addresses, tail);
    assert_eq!(added.joined_older.map(|(e, _)| e), Some(epoch + 1));
    assert_eq!(done.layout.segments.len(), 1);
    assert_eq!(
        ids(&done.layout.segments[0].stripes[0].chain),
        ["n1", "n2", "n3", "n4"]
    );
    // Once complete, adding it again is refused.
    let again = engine.reconfigure(&add(n4, false)).await.unwrap_err();
    assert!(one_line(&again).contains("already a log unit"), "{again}");
    finish_checks(&history, &config).await;
    cluster.shutdown().await;
}

/// Review finding 5: the source chain's tail holds a corrupt copy (a
/// damaged record found at its restart). The state transfer, which reads
/// from the tail, must repair the copy from the chain (as a client's read
/// would) and go on, not fail the addition at that address for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_copy_on_the_source_chain_is_repaired_by_the_state_transfer() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = local_cluster(&dir, 3, Shape::new(1, 2)).await;
    let config = client_config(&cluster);
    let engine = engine(&config);
    let history = History::new();
    let client = LogClient::connect(&config).await.unwrap();
    let mut addresses = Vec::new();
    for i in 0..40 {
        let at = history
            .append(&client, format!("v{i}").into_bytes(), &[])
            .await
            .unwrap();
        addresses.push(at);
    }
    let layout = client.refresh_layout().await.unwrap();
    assert_eq!(ids(&layout.segments[0].stripes[0].chain), ["n1", "n2"]);
    // One record of n2, the chain's tail, damaged while it was stopped.
    let damaged = addresses[17];
    let log_dir = cluster.node_config(1).unwrap().data_dir.join("log");
    cluster.stop_node(1).await.unwrap();
    damage(&segment(&log_dir), damaged, None, 0x40);
    cluster.restart_node(1).await.unwrap();
    let n2 = node(&cluster, 1);
    let endpoint = config.endpoint().unwrap();
    let raw = endpoint
        .peer(&n2.addr)
        .call(
            layout.epoch,
            Request::LogUnit(LogUnitRequest::Read { address: damaged }),
        )
        .await
        .unwrap();
    assert!(
        matches!(&raw, Response::Error(e) if e.kind == ServerErrorKind::Corrupt),
        "n2 knows its copy is bad: {raw:?}"
    );

    let n3 = node(&cluster, 2);
    let done = within(30, "adding n3", engine.reconfigure(&add(n3.clone(), false)))
        .await
        .unwrap_or_else(|e| panic!("adding n3: {e}"));
    report("n3 added over a corrupt source copy", &done);
    assert_eq!(done.layout.segments.len(), 1, "{:?}", done.layout);
    assert_eq!(
        ids(&done.layout.segments[0].stripes[0].chain),
        ["n1", "n2", "n3"]
    );
    // Every member holds what the log holds, n2's copy repaired.
    let (log, _) = finish_checks(&history, &config).await;
    let on_n2 = raw_reads(&endpoint, &n2.addr, done.layout.epoch, &[damaged]).await;
    let in_log: Vec<_> = log.iter().filter(|(a, _)| *a == damaged).cloned().collect();
    assert_eq!(on_n2, in_log);
    cluster.shutdown().await;
}

/// Nemesis seed 12207526767398135396 (`REGRESSION_ADD_NODE`): a node
/// removed a second time could not be added back, the state transfer
/// failing for good with "n3 answered Reads([(3584, ...". The part to copy
/// held a void (addresses granted by an earlier epoch's sequencer and
/// never written, declared void at a seal): its addresses were left out
/// of the batch, but the batch was still read as one range, so the
/// source answered the void's addresses too and the answer was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_with_a_void_inside_is_transferred() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = local_cluster(&dir, 3, Shape::new(1, 3)).await;
    let config = client_config(&cluster);
    let engine = engine(&config);
    let history = History::new();
    let client = LogClient::connect(&config).await.unwrap();
    let append = |what: &'static str| {
        let (history, client) = (&history, &client);
        async move {
            for i in 0..30 {
                history
                    .append(client, format!("{what}{i}").into_bytes(), &[])
                    .await
                    .unwrap();
            }
        }
    };
    append("a").await;
    cluster.stop_node(1).await.unwrap();
    within(
        10,
        "removing n2",
        engine.reconfigure(&Change::RemoveNode("n2".into())),
    )
    .await
    .unwrap();
    append("b").await;
    // Addresses granted and never written, then a seal: a void.
    let layout = client.refresh_layout().await.unwrap();
    let sequencer = layout.active_sequencer().unwrap();
    let endpoint = config.endpoint().unwrap();
    let request = Request::Sequencer(SequencerRequest::Token {
        count: 10,
        streams: vec![],
        condition: None,
    });
    let granted = endpoint
        .peer(&sequencer.addr)
        .call(layout.epoch, request)
        .await
        .unwrap();
    assert!(
        matches!(
            granted,
            Response::Sequencer(SequencerResponse::Token { .. })
        ),
        "{granted:?}"
    );
    let sealed = within(10, "sealing", engine.reconfigure(&Change::Seal))
        .await
        .unwrap();
    assert!(!sealed.layout.voids.is_empty(), "{:?}", sealed.layout);
    append("c").await;

    cluster.restart_node(1).await.unwrap();
    let n2 = node(&cluster, 1);
    let done = within(30, "adding n2 back", engine.reconfigure(&add(n2, false)))
        .await
        .unwrap_or_else(|e| panic!("adding n2 back: {e}"));
    report("n2 added back over a void", &done);
    assert_eq!(done.layout.segments.len(), 1, "{:?}", done.layout);
    finish_checks(&history, &config).await;
    cluster.shutdown().await;
}
