//! Failure detection with real processes over QUIC on loopback.
//!
//! Each test starts five `corfu node` processes from the configs `corfu
//! local init` writes (listening on port 0, every node a layout server and
//! log unit, the failure detector on with a 300 ms timeout), bootstraps one
//! chain of three log units (n1 -> n2 -> n3), runs appenders recording a
//! history, and then hurts one node: nothing calls the reconfiguration
//! engine but the nodes' own detectors. After each: the node is out of the
//! layout, appends went on, every append was acknowledged, the history
//! check passes, and the surviving replicas agree.
//!
//! The tests take turns (a lock): they measure stalls, and five node
//! processes per test are enough load for one machine.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corfu::cluster::Shape;
use corfu::core::client::{LogClient, LogClientOptions};
use corfu::core::client_config::ClientConfig;
use corfu::core::layout::Layout;
use corfu::core::logunit::SyncPolicy;
use corfu::core::reconfig::Reconfigurer;
use corfu::core::types::{Address, StreamId};
use corfu::core::wire::logunit::{AddressedEntry, Entry, LogUnitRequest};
use corfu::core::wire::{Request, Response};
use corfu::local::{init, InitOptions};
use support::history::{check_replicas, History, Outcome};
use support::{spawn_node_process, within, NodeProcess};

/// The detector's failure timeout in these tests.
const FAILURE_TIMEOUT_MS: u64 = 300;

/// One test at a time (see the module docs).
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Cluster {
    _dir: tempfile::TempDir,
    nodes: Vec<NodeProcess>,
    config: ClientConfig,
    first: Layout,
}

/// Five nodes; `sequencers` are the 1-based nodes hosting a sequencer (in
/// layout order: the first is active). Bootstrapped with one chain of
/// three.
/// With `client_auth`, nodes require client certificates from the cluster
/// CA (the detectors present their node certificates; the test client
/// borrows n5's).
async fn start_cluster(sequencers: &[usize], client_auth: bool) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let report = init(&InitOptions {
        nodes: 5,
        sync: SyncPolicy::Always,
        ..InitOptions::new(dir.path().join("cluster"))
    })
    .unwrap();
    let mut nodes = Vec::new();
    for (i, node) in report.nodes.iter().enumerate() {
        let k = i + 1;
        let text = std::fs::read_to_string(&node.config).unwrap();
        let listen = format!("listen = \"{}\"", node.addr);
        assert!(text.contains(&listen), "{text}");
        let mut text = text.replace(&listen, "listen = \"127.0.0.1:0\"");
        let roles = "roles = [\"layout_server\", \"log_unit\"";
        if sequencers.contains(&k) && !text.contains("\"sequencer\"") {
            assert!(text.contains(roles), "{text}");
            text = text.replace(
                roles,
                "roles = [\"layout_server\", \"log_unit\", \"sequencer\"",
            );
        }
        if client_auth {
            assert!(text.contains("[tls]\n"), "{text}");
            text = text.replace("[tls]\n", "[tls]\nclient_auth = true\n");
        }
        text.push_str(&format!(
            "\n[failure_detector]\nenabled = true\nfailure_timeout_ms = {FAILURE_TIMEOUT_MS}\nprobe_interval_ms = 50\n"
        ));
        std::fs::write(&node.config, text).unwrap();
        nodes.push(spawn_node_process(&node.config));
    }
    let mut config = ClientConfig::load(&report.cluster_config).unwrap();
    config.layout_servers = nodes.iter().map(|n| n.addr.clone()).collect();
    if client_auth {
        let n5 = report.nodes[4].config.parent().unwrap().join("tls");
        config.tls.cert = Some(n5.join("node.pem"));
        config.tls.key = Some(n5.join("node.key"));
        // Client certificates are really required.
        let mut anonymous = config.clone();
        anonymous.tls.cert = None;
        anonymous.tls.key = None;
        let refused = anonymous
            .endpoint()
            .unwrap()
            .peer(&nodes[0].addr)
            .call(0, Request::Ping)
            .await;
        assert!(refused.is_err(), "{refused:?}");
    }
    let first = within(
        20,
        "bootstrap",
        corfu::cluster::bootstrap(&config, Shape::new(1, 3)),
    )
    .await
    .unwrap();
    let ids: Vec<_> = first.sequencers.iter().map(|n| n.node_id.clone()).collect();
    let expected: Vec<_> = sequencers.iter().map(|k| format!("n{k}")).collect();
    assert_eq!(ids, expected);
    assert_eq!(chain_ids(&first), ["n1", "n2", "n3"]);
    // Clients give up on an unanswered request after 300 ms and retry (with
    // the layout re-read), so a dead peer stalls them about as long as the
    // detector takes.
    config.transport.request_timeout_ms = 300;
    config.transport.connect_timeout_ms = 300;
    config.client = LogClientOptions {
        hole_fill_timeout_ms: 50,
        operation_timeout_ms: 20_000,
        ..LogClientOptions::default()
    };
    Cluster {
        _dir: dir,
        nodes,
        config,
        first,
    }
}

fn chain_ids(layout: &Layout) -> Vec<String> {
    let open = layout.open_segment().expect("an open segment");
    assert_eq!(open.stripes.len(), 1);
    open.stripes[0]
        .chain
        .iter()
        .map(|n| n.node_id.clone())
        .collect()
}

/// Appenders recording a history and the time of every acknowledgement.
struct Load {
    history: Arc<History>,
    acks: Arc<Mutex<Vec<(Instant, Address)>>>,
    acked: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    async fn start(config: &ClientConfig) -> Load {
        let history = Arc::new(History::new());
        let acks = Arc::new(Mutex::new(Vec::new()));
        let acked = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let stream = StreamId::from_name("faults");
        let mut tasks = Vec::new();
        for c in 0..2 {
            let client = LogClient::connect(config).await.unwrap();
            for t in 0..4 {
                let (client, history, acks, acked, stop) = (
                    client.clone(),
                    history.clone(),
                    acks.clone(),
                    acked.clone(),
                    stop.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    let mut i = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let value = format!("c{c}-t{t}-{i}").into_bytes();
                        let streams: &[StreamId] = if i % 2 == 0 { &[stream] } else { &[] };
                        if let Ok(address) = history.append(&client, value, streams).await {
                            acks.lock().unwrap().push((Instant::now(), address));
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                        i += 1;
                    }
                }));
            }
        }
        Load {
            history,
            acks,
            acked,
            stop,
            tasks,
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

    /// The first acknowledgement at or above `address` after `since`.
    fn first_ack_from(&self, since: Instant, address: Address) -> Option<Instant> {
        self.acks
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, a)| *at >= since && *a >= address)
            .map(|(at, _)| *at)
            .min()
    }

    /// Stops the appenders, requires every append to have been
    /// acknowledged, checks the history against the whole log and the
    /// replicas of `layout` against each other.
    async fn finish(self, config: &ClientConfig) -> Layout {
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
        let reader = LogClient::connect(config).await.unwrap();
        let (report, log) = self.history.check_log(&reader).await;
        eprintln!("{report}");
        assert_eq!(report.acked, ops.len());
        let layout = reader.refresh_layout().await.unwrap();
        check_replicas(
            &config.endpoint().unwrap(),
            &layout,
            log.len() as u64,
            Some(&log),
        )
        .await;
        Layout::clone(&layout)
    }
}

/// Polls the committed layout until `gone` is in no chain of the open
/// segment; returns it and when it was first seen.
async fn removed(config: &ClientConfig, gone: &str) -> (Layout, Instant) {
    let engine = Reconfigurer::new(config.endpoint().unwrap(), config.layout_servers.clone());
    within(15, &format!("the detectors remove {gone}"), async {
        loop {
            if let Ok(layout) = engine.current().await {
                if layout.epoch > 1 && !chain_ids(&layout).iter().any(|n| n == gone) {
                    return (layout, Instant::now());
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// Strips ANSI escape sequences (the node logs in colour).
fn plain(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The `elapsed_ms` the detector that removed `gone` logged (waiting up to
/// 5 s for the line), and which node logged it.
async fn logged_reconfiguration(nodes: &[NodeProcess], gone: &str) -> (String, u64) {
    within(5, "the detector's removal log line", async {
        loop {
            for node in nodes {
                let lines = node.stderr.lock().unwrap().clone();
                for line in lines.iter().map(|l| plain(l)) {
                    if line.contains("removed an unreachable node")
                        && line.contains(&format!("removed={gone}"))
                    {
                        let field = |name: &str| {
                            line.split_whitespace()
                                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                                .map(str::to_string)
                        };
                        let ms = field("elapsed_ms").unwrap().parse().unwrap();
                        return (field("node").unwrap(), ms);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// Kills (SIGKILL) node `k` (1-based) during appends and checks that its
/// detectors remove it and appends continue; returns the final layout.
async fn kill_during_appends(
    sequencers: &[usize],
    client_auth: bool,
    k: usize,
) -> (Cluster, Layout) {
    let mut cluster = start_cluster(sequencers, client_auth).await;
    let load = Load::start(&cluster.config).await;
    load.resume(300, "appends before the kill").await;
    let gone = format!("n{k}");
    let killed_at = Instant::now();
    cluster.nodes[k - 1].child.kill().unwrap();
    let (layout, seen_at) = removed(&cluster.config, &gone).await;
    let new_start = layout.open_segment().unwrap().start;
    load.resume(300, "appends after the removal").await;
    let first = load
        .first_ack_from(killed_at, new_start)
        .expect("an append acknowledged in the new epoch");
    let (by, reconfig_ms) = logged_reconfiguration(&cluster.nodes, &gone).await;
    eprintln!(
        "SIGKILL {gone} (failure_timeout_ms = {FAILURE_TIMEOUT_MS}): removed by {by} in epoch {}, \
         new segment from {new_start}; kill -> layout seen {:?}; kill -> first append acked in the new epoch {:?}; \
         reconfiguration (seal + Paxos + sequencer bootstrap) {reconfig_ms} ms",
        layout.epoch,
        seen_at - killed_at,
        first - killed_at,
    );
    assert!(by != gone);
    let last = load.finish(&cluster.config).await;
    assert!(
        !chain_ids(&last).contains(&gone),
        "{gone} is back in {last:?}"
    );
    (cluster, last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_middle_chain_member_is_removed_and_appends_continue() {
    let _turn = TURN.lock().await;
    let (_cluster, last) = kill_during_appends(&[1], false, 2).await;
    assert_eq!(chain_ids(&last), ["n1", "n3"], "{last:?}");
    assert_eq!(last.active_sequencer().unwrap().node_id, "n1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_sequencer_and_head_fails_over_and_appends_continue() {
    // With client certificates required: the detectors authenticate with
    // their node certificates.
    let _turn = TURN.lock().await;
    let (_cluster, last) = kill_during_appends(&[1, 2], true, 1).await;
    assert_eq!(chain_ids(&last), ["n2", "n3"], "{last:?}");
    assert_eq!(last.active_sequencer().unwrap().node_id, "n2");
    assert!(!last.sequencers.iter().any(|n| n.node_id == "n1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_node_is_removed_and_fenced_when_it_resumes() {
    let _turn = TURN.lock().await;
    let cluster = start_cluster(&[1], false).await;
    let load = Load::start(&cluster.config).await;
    load.resume(300, "appends before the pause").await;
    let paused = &cluster.nodes[2];
    let stopped_at = Instant::now();
    paused.signal("STOP");
    let (moved_on, seen_at) = removed(&cluster.config, "n3").await;
    load.resume(300, "appends while n3 is paused").await;
    eprintln!(
        "SIGSTOP n3: removed in epoch {} after {:?}",
        moved_on.epoch,
        seen_at - stopped_at
    );
    paused.signal("CONT");
    // The resumed node still answers (it is alive) ...
    let endpoint = cluster.config.endpoint().unwrap();
    within(10, "the resumed node answers a ping", async {
        while endpoint
            .peer(&paused.addr)
            .call(0, Request::Ping)
            .await
            .ok()
            != Some(Response::Pong)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // ... its detector notices it was stopped and forgets what it could
    // not hear meanwhile ...
    within(10, "the resumed detector notices its stall", async {
        while !paused
            .stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| plain(l).contains("failure detector was stalled"))
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let resumed_at = Instant::now();
    // ... and appends go on while it runs for three failure timeouts (the
    // time it would need to accuse anyone: an absence, so a bounded wait).
    load.resume(300, "appends after n3 resumed").await;
    let watch = Duration::from_millis(3 * FAILURE_TIMEOUT_MS);
    tokio::time::sleep(watch.saturating_sub(resumed_at.elapsed())).await;

    // ... and a writer still at epoch 1 is fenced by the units that stayed.
    let n1 = &cluster.first.segments[0].stripes[0].chain[0];
    assert_eq!(n1.node_id, "n1");
    let stale = endpoint
        .peer(&n1.addr)
        .call(
            cluster.first.epoch,
            Request::LogUnit(LogUnitRequest::Write(AddressedEntry {
                address: 1 << 40,
                entry: Entry {
                    streams: vec![],
                    payload: b"stale".to_vec(),
                },
            })),
        )
        .await
        .unwrap();
    assert!(
        matches!(stale, Response::WrongEpoch { current } if current >= moved_on.epoch),
        "{stale:?}"
    );

    let last = load.finish(&cluster.config).await;
    // The resumed node accused nobody (its detector forgot what it could not
    // hear while stopped), and no client reads from it: it is in no chain
    // of any segment.
    assert_eq!(last.epoch, moved_on.epoch, "{last:?}");
    assert_eq!(chain_ids(&last), ["n1", "n2"]);
    assert!(!last
        .segments
        .iter()
        .flat_map(|s| &s.stripes)
        .flat_map(|s| &s.chain)
        .any(|n| n.node_id == "n3"));
}
