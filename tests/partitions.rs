//! Network partitions between real processes (issue 16, item 3).
//!
//! Five `corfu node` processes on loopback (one chain of three, n1 -> n2
//! -> n3, every node a layout server with its failure detector on, 300 ms
//! failure timeout), each making its connections from an address of its
//! own (`transport.local_ip`), and the test's clients from another, so
//! `support::net` can cut links between chosen processes with nftables
//! (needs root and `nft`). During each partition appenders record a
//! history and a long-lived client asks for the log tail in a loop; after
//! the heal: every append was acknowledged, the history check passes (no
//! loss, no duplicate, real-time order), the replicas agree, and no tail
//! answer missed an append acknowledged before the query was sent (no
//! stale read from the isolated side).

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corfu::core::client::LogClient;
use corfu::core::client_config::ClientConfig;
use corfu::core::reconfig::Reconfigurer;
use corfu::core::types::Address;
use support::cluster::*;
use support::net::{Host, Net};
use support::within;

/// One test at a time: five node processes each, and timing.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A cluster whose processes connect from `127.0.x.*`.
async fn cluster(sequencers: &[usize], x: u8) -> Cluster {
    start_cluster_with(Setup {
        sequencers,
        client_auth: false,
        detectors: true,
        layout_servers: &[1, 2, 3, 4, 5],
        // Nodes give up on an unreachable peer as soon as clients do.
        node_connect_timeout_ms: Some(300),
        local_ips: Some(x),
    })
    .await
}

/// A long-lived client asking for the tail in a loop, recording when each
/// query was sent and what it answered.
struct TailWatch {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<(Instant, Address)>>,
}

impl TailWatch {
    async fn start(config: &ClientConfig) -> TailWatch {
        let client = LogClient::connect(config).await.unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let done = stop.clone();
        let task = tokio::spawn(async move {
            let mut answers = Vec::new();
            while !done.load(Ordering::SeqCst) {
                let sent = Instant::now();
                if let Ok(tail) = client.tail().await {
                    answers.push((sent, tail));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            answers
        });
        TailWatch { stop, task }
    }

    /// Stops the queries; panics if one answered a tail at or below an
    /// address acknowledged before it was sent. Returns how many answered.
    async fn check(self, acks: &Mutex<Vec<(Instant, Address)>>) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let answers = within(30, "the tail queries stop", self.task)
            .await
            .unwrap();
        let mut acks = acks.lock().unwrap().clone();
        acks.sort();
        // The highest address acknowledged by each time.
        let mut highest = Vec::with_capacity(acks.len());
        let mut max = None;
        for (at, address) in &acks {
            max = max.max(Some(*address));
            highest.push((*at, max.unwrap()));
        }
        for (sent, tail) in &answers {
            let before = highest.partition_point(|(at, _)| at < sent);
            if before > 0 {
                let (_, acked) = highest[before - 1];
                assert!(
                    *tail > acked,
                    "stale read: a tail query sent after address {acked} was acknowledged answered {tail}"
                );
            }
        }
        answers.len()
    }
}

/// The epoch the layout servers have committed.
async fn epoch(config: &ClientConfig) -> u64 {
    let engine = Reconfigurer::new(config.endpoint().unwrap(), config.layout_servers.clone());
    within(15, "the committed layout", engine.current())
        .await
        .unwrap()
        .epoch
}

fn hosts(cluster: &Cluster, ks: &[usize]) -> Vec<Host> {
    ks.iter().map(|k| cluster.host(*k)).collect()
}

/// n1 (head of the chain and active sequencer) loses its links to the
/// other nodes, while clients still reach it: its lease cannot be renewed,
/// the detectors remove it and n4 takes over as sequencer. Clients that
/// still know epoch 1 can reach n1: its tail answers must stop before n4
/// grants anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_active_sequencer_cut_off_from_the_layout_servers_is_replaced() {
    let _turn = TURN.lock().await;
    let cluster = cluster(&[1, 4], 11).await;
    let net = Net::new();
    let load = Load::start(&cluster.config).await;
    let tails = TailWatch::start(&cluster.config).await;
    load.resume(300, "appends before the partition").await;
    let cut_at = Instant::now();
    net.split(&hosts(&cluster, &[1]), &hosts(&cluster, &[2, 3, 4, 5]));
    let (layout, seen_at) = removed(&cluster.config, "n1").await;
    assert_eq!(layout.sequencers[0].node_id, "n4", "{layout:?}");
    let new_start = layout.open_segment().unwrap().start;
    load.resume(300, "appends after the failover").await;
    let first = load.first_ack_from(cut_at, new_start).unwrap();
    eprintln!(
        "n1 cut off from the other nodes: layout without n1 after {:?}, first append of epoch {} after {:?}",
        seen_at - cut_at,
        layout.epoch,
        first - cut_at
    );
    net.heal();
    load.resume(300, "appends after the heal").await;
    let answered = tails.check(&load.acks).await;
    eprintln!("{answered} tail queries, none stale");
    let last = load.finish(&cluster.config).await;
    assert!(!chain_ids(&last).contains(&"n1".to_string()), "{last:?}");
}

/// The head of the chain, also the active sequencer, is cut off from
/// everyone, nodes and clients, while appends are under way: appends it
/// took but could not pass on are never acknowledged, the detectors remove
/// it, n4 takes over, appends go on on n2 -> n3, and after the heal the
/// process (alive all along, its lease lapsed) serves nothing stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_head_cut_off_mid_append_is_removed_and_nothing_is_lost() {
    let _turn = TURN.lock().await;
    let cluster = cluster(&[1, 4], 12).await;
    let net = Net::new();
    let load = Load::start(&cluster.config).await;
    let tails = TailWatch::start(&cluster.config).await;
    load.resume(300, "appends before the partition").await;
    let cut_at = Instant::now();
    let mut everyone = hosts(&cluster, &[2, 3, 4, 5]);
    everyone.push(cluster.client_host());
    net.split(&hosts(&cluster, &[1]), &everyone);
    let (layout, seen_at) = removed(&cluster.config, "n1").await;
    assert_eq!(chain_ids(&layout), ["n2", "n3"]);
    load.resume(300, "appends after the removal").await;
    eprintln!(
        "n1 (head) cut off: layout without n1 after {:?}",
        seen_at - cut_at
    );
    net.heal();
    load.resume(300, "appends after the heal").await;
    tails.check(&load.acks).await;
    load.finish(&cluster.config).await;
}

/// Two of the five layout servers (n4, n5: neither a log unit of the chain
/// nor the sequencer) are cut off from the rest and from the clients:
/// their detectors see every other node unreachable but cannot decide a
/// layout without a majority, nothing stalls on the majority side, and
/// after the heal the membership is the one of before. (Before the
/// detectors kept removed nodes that answer the seal, the minority's
/// removal retrying at the heal took n2 and n3 out of the chain, alive.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_minority_of_layout_servers_cut_off_decides_nothing() {
    let _turn = TURN.lock().await;
    let cluster = cluster(&[1], 13).await;
    let net = Net::new();
    let load = Load::start(&cluster.config).await;
    let tails = TailWatch::start(&cluster.config).await;
    load.resume(300, "appends before the partition").await;
    let mut majority = hosts(&cluster, &[1, 2, 3]);
    majority.push(cluster.client_host());
    net.split(&hosts(&cluster, &[4, 5]), &majority);
    // Ten failure timeouts: the minority's detectors try and fail.
    load.resume(300, "appends during the partition").await;
    tokio::time::sleep(Duration::from_millis(10 * FAILURE_TIMEOUT_MS)).await;
    load.resume(300, "appends later in the partition").await;
    assert_eq!(epoch(&cluster.config).await, 1);
    net.heal();
    load.resume(300, "appends after the heal").await;
    tails.check(&load.acks).await;
    // Two failure timeouts more: a detector acting late on what it saw
    // from the minority would have reconfigured by now.
    tokio::time::sleep(Duration::from_millis(2 * FAILURE_TIMEOUT_MS)).await;
    let last = load.finish(&cluster.config).await;
    // The minority's detectors knew they were cut off (they could not
    // read the layout from a majority): nothing they saw from there is
    // acted on after the heal, not even as a seal.
    assert_eq!(last.epoch, 1, "{last:?}");
    assert_eq!(chain_ids(&last), ["n1", "n2", "n3"], "{last:?}");
    assert_eq!(last.sequencers, cluster.first.sequencers, "{last:?}");
}

/// Nemesis seed 1299945345426960725 (`REGRESSION_ISOLATE`): n5, a layout
/// server and standby sequencer, cut off from every other process for
/// 1.7 s. Its detector suspected every node it could not hear, and the
/// removal it was retrying at the heal ran against live nodes: seen once
/// taking n1 and n2 out of the chain, and reconfiguring (a new epoch, the
/// active sequencer moved) nearly every time. An isolated node changes
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_isolated_standby_changes_nothing() {
    let _turn = TURN.lock().await;
    let cluster = cluster(&[1, 2, 3, 4, 5], 15).await;
    let net = Net::new();
    let load = Load::start(&cluster.config).await;
    load.resume(300, "appends before the partition").await;
    for round in 0..3 {
        let mut others = hosts(&cluster, &[1, 2, 3, 4]);
        others.push(cluster.client_host());
        net.split(&hosts(&cluster, &[5]), &others);
        load.resume(300, "appends while n5 is cut off").await;
        tokio::time::sleep(Duration::from_millis(1_700)).await;
        net.heal();
        load.resume(300, "appends after the heal").await;
        tokio::time::sleep(Duration::from_millis(3 * FAILURE_TIMEOUT_MS)).await;
        let now = epoch(&cluster.config).await;
        assert_eq!(
            now, 1,
            "round {round}: the isolation reconfigured the cluster"
        );
    }
    let last = load.finish(&cluster.config).await;
    assert_eq!(last.epoch, 1, "{last:?}");
    assert_eq!(chain_ids(&last), ["n1", "n2", "n3"], "{last:?}");
    assert_eq!(last.sequencers, cluster.first.sequencers, "{last:?}");
}

/// The middle of the chain is cut off from the clients only (asymmetric:
/// the nodes, detectors included, still reach it), so the detectors see
/// nothing wrong while every write to it times out. The clients remove it
/// themselves after `client.remove_unreachable_after_ms` (3 s by default).
/// Before they did, appends stalled for good (none within 15 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chain_member_cut_off_from_the_clients_only() {
    let _turn = TURN.lock().await;
    let cluster = cluster(&[1, 4], 14).await;
    let net = Net::new();
    let load = Load::start(&cluster.config).await;
    let tails = TailWatch::start(&cluster.config).await;
    load.resume(300, "appends before the partition").await;
    let cut_at = Instant::now();
    net.cut(&cluster.host(2), &cluster.client_host());
    let (layout, seen_at) = removed(&cluster.config, "n2").await;
    assert_eq!(chain_ids(&layout), ["n1", "n3"]);
    let new_start = layout.open_segment().unwrap().start;
    load.resume(300, "appends after the removal").await;
    eprintln!(
        "n2 cut off from the clients: removed after {:?}, first append of epoch {} after {:?}",
        seen_at - cut_at,
        layout.epoch,
        load.first_ack_from(cut_at, new_start).unwrap() - cut_at
    );
    net.heal();
    load.resume(300, "appends after the heal").await;
    tails.check(&load.acks).await;
    let last = load.finish(&cluster.config).await;
    assert!(!chain_ids(&last).contains(&"n2".to_string()), "{last:?}");
}
