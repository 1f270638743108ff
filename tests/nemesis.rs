//! A nemesis run (issue 16, item 4): an object workload against five real
//! `corfu node` processes while a seeded schedule injects faults, then a
//! heal and every check.
//!
//! The cluster is `support::cluster`'s: five nodes on loopback, one chain
//! of three (n1 -> n2 -> n3), every node a layout server, a log unit and a
//! sequencer (n1 active), detectors on (300 ms failure timeout), each
//! process connecting from an address of its own so `support::net` can cut
//! links (needs root and `nft`).
//!
//! The workload, all through long-lived clients: `support::objects`'
//! counter, bank (with its ledger) and map on runtimes A and B (the
//! observer runtime idles between reads before and after the schedule),
//! a queue (one pusher and one popper per runtime), and two log appenders
//! recording a `support::history` history.
//!
//! The schedule draws, from a seeded RNG and the layout in force, one
//! fault at a time among:
//! - **kill**: SIGKILL one node, restart it 0.3-1.5 s later on its data
//!   directory;
//! - **pause**: SIGSTOP one node, SIGCONT 0.2-2 s later;
//! - **isolate**: cut one node off from every other process (nodes and
//!   clients) for 0.5-3 s;
//! - **client-cut**: cut one chain member off from the clients only, for
//!   0.5-3 s;
//! - **minority-cut**: cut two layout servers off from the rest (nodes and
//!   clients) for 0.5-3 s;
//! - **double-kill**: SIGKILL two nodes at once, restart both 0.3-1.5 s
//!   later.
//!
//! Never more than the cluster survives: the nodes a fault takes leave at
//! least one chain member and one sequencer of the layout in force (the
//! layout servers keep a majority: three of five, at the worst). After
//! each fault, once healed: any of n1, n2, n3 no longer in the chain is
//! added back (`corfu layout add-node`), the test waits until the workload
//! acknowledges an operation invoked after that (the cluster serves again;
//! 30 s at most, or the run stops with a LIVENESS anomaly), then lets the
//! load run 0.3-1.5 s before the next fault. Per fault kind it records
//! how many ran and the longest unavailability: from the injection until
//! the first acknowledgement of an update invoked after it.
//!
//! After the schedule: heal, restart whatever exited, add back, wait for
//! 50 more appends, stop the workload, and check: the log history (lost,
//! doubled, holes, real-time order) and the replicas; the counter, bank
//! and map checks of `support::objects`; the queue's exactly-once check;
//! and every long-lived runtime's and a fresh client's final state of
//! every object, which must be equal. The summary line `nemesis[...]`
//! gives operations, acknowledged, faults by kind, anomalies and the
//! longest unavailability per kind.
//!
//! The seed comes from `CORFU_NEMESIS_SEED` (random otherwise), is printed
//! at the start, with every panic, and reproduces the schedule (the
//! faults drawn also depend on the layout in force, which the same faults
//! make the same).
//!
//! `cargo test --release --test nemesis` runs a short schedule (40 s of
//! faults of every kind, chain members included; `CORFU_NEMESIS_SECS`
//! overrides it); `-- --ignored --nocapture a_long` a long one (10
//! minutes). The regression seeds found so far are ignored tests too.
//! Set `CORFU_NEMESIS_TRACE` to a tracing filter for the test's own
//! clients (`RUST_LOG` reaches the node processes); on failure the nodes'
//! logs are written to a temporary directory, named in the output.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use corfu::core::client::LogClient;
use corfu::core::client_config::ClientConfig;
use corfu::core::layout::Layout;
use corfu::core::reconfig::Reconfigurer;
use corfu::core::types::StreamId;
use corfu::core::wire::logunit::ReadOutcome;
use corfu::objects::ReplicatedQueue;
use corfu::smr::Runtime;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::cluster::{chain_ids, start_cluster_with, Cluster, Setup};
use support::history::{check_replicas, read_log, History, Outcome};
use support::net::{Host, Net};
use support::objects::*;
use support::{corfu_command, NodeProcess};

/// One run at a time: five node processes and 30 client tasks.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The nodes of the chain at the start, kept in it by adding them back.
const CHAIN: [usize; 3] = [1, 2, 3];
/// How long the cluster may take to serve again after a fault is healed.
const SERVE_AGAIN_SECS: u64 = 30;
/// The `runtime` of the log appenders' acknowledgements in `Run::updates`.
const APPENDERS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Kill,
    Pause,
    Isolate,
    ClientCut,
    MinorityCut,
    DoubleKill,
}

const EVERY_KIND: [Kind; 6] = [
    Kind::Kill,
    Kind::Pause,
    Kind::Isolate,
    Kind::ClientCut,
    Kind::MinorityCut,
    Kind::DoubleKill,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::Pause => "pause",
            Kind::Isolate => "isolate",
            Kind::ClientCut => "client-cut",
            Kind::MinorityCut => "minority-cut",
            Kind::DoubleKill => "double-kill",
        }
    }
}

/// One fault of the schedule.
#[derive(Debug, Clone)]
struct Fault {
    kind: Kind,
    /// The 1-based nodes it takes.
    nodes: Vec<usize>,
    /// How long until it is healed (restart, SIGCONT, links back).
    hold: Duration,
}

impl Fault {
    fn describe(&self) -> String {
        let nodes: Vec<String> = self.nodes.iter().map(|k| format!("n{k}")).collect();
        format!(
            "{} {} for {} ms",
            self.kind.name(),
            nodes.join("+"),
            self.hold.as_millis()
        )
    }
}

/// A schedule: how long faults are injected, and which kinds.
struct Schedule {
    name: &'static str,
    faults_for: Duration,
    kinds: &'static [Kind],
    /// Whether faults may take chain members out of the chain (and so
    /// need `corfu layout add-node` to put them back). Without, only n4
    /// and n5 (layout servers and standby sequencers) are killed, paused
    /// or cut off, and a chain member is cut off from the clients for at
    /// most 2.5 s (the clients remove it after 3 s).
    chain_faults: bool,
    /// `Setup::local_ips`.
    x: u8,
}

/// The CI schedule: every kind of fault, chain members included, for
/// 40 s (about 50-60 s in all with the checks).
const SHORT: Schedule = Schedule {
    name: "short",
    faults_for: Duration::from_secs(40),
    kinds: &EVERY_KIND,
    chain_faults: true,
    x: 31,
};

/// Every kind of fault, chain members spared, for 40 s (the schedule
/// [`REGRESSION_ISOLATE`] was found with).
const SHORT_WITHOUT_CHAIN_FAULTS: Schedule = Schedule {
    name: "short-without-chain-faults",
    faults_for: Duration::from_secs(40),
    kinds: &EVERY_KIND,
    chain_faults: false,
    x: 34,
};

/// A seed whose schedule without chain faults isolated n5 (neither chain
/// member nor active sequencer) for 1.7 s at epoch 2: after the heal the
/// layout was epoch 6 with n1 and n2 out of the chain. n5's detector,
/// cut off, kept retrying a removal of the nodes it could not hear; the
/// retry in flight at the heal sealed the live n1 and n2 with 200 ms to
/// answer while the others' seals, retransmitted after the heal, got
/// 500 ms. Fixed (the detector forgets what it saw while it could not
/// read the layout from a majority; nodes being removed get the others'
/// timeout); deterministic test: `partitions`'
/// `an_isolated_standby_changes_nothing`. Seen once.
const REGRESSION_ISOLATE: u64 = 1299945345426960725;

const LONG: Schedule = Schedule {
    name: "long",
    faults_for: Duration::from_secs(600),
    kinds: &EVERY_KIND,
    chain_faults: true,
    x: 32,
};

/// A seed whose schedule, with chain faults, killed n2 (middle; added back
/// as the tail, epoch 4), then isolated n2 (now the tail) for 2.8 s: it
/// was removed, and `corfu layout add-node n2` then failed five times in
/// a row with `state transfer to n2 failed: state transfer: n3 answered
/// Reads([(3584, ...`: the part to copy held a void, whose addresses the
/// batch left out while still reading it as one range. Fixed;
/// deterministic test: `state_transfer`'s
/// `a_part_with_a_void_inside_is_transferred`. Twice out of two runs.
const REGRESSION_ADD_NODE: u64 = 12207526767398135396;

fn node_number(id: &str) -> usize {
    id.trim_start_matches('n').parse().unwrap()
}

/// The chain members and the sequencers of `layout`, as node numbers.
fn members(layout: &Layout) -> (Vec<usize>, Vec<usize>) {
    let chain = chain_ids(layout).iter().map(|n| node_number(n)).collect();
    let seqs = layout
        .sequencers
        .iter()
        .map(|n| node_number(&n.node_id))
        .collect();
    (chain, seqs)
}

fn describe_layout(layout: &Layout) -> String {
    let (chain, seqs) = members(layout);
    let list = |v: &[usize]| {
        v.iter()
            .map(|k| format!("n{k}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        "epoch {} chain [{}] sequencers [{}]",
        layout.epoch,
        list(&chain),
        list(&seqs)
    )
}

/// Draws the next fault: a kind among `kinds`, then nodes that leave a
/// chain member and a sequencer of `layout` untouched.
fn plan(rng: &mut StdRng, schedule: &Schedule, layout: &Layout) -> Fault {
    let kinds = schedule.kinds;
    let (chain, seqs) = members(layout);
    let survivable = |s: &[usize]| {
        chain.iter().any(|c| !s.contains(c))
            && seqs.iter().any(|q| !s.contains(q))
            && (schedule.chain_faults || !s.iter().any(|k| chain.contains(k)))
    };
    loop {
        let kind = kinds[rng.random_range(0..kinds.len())];
        let candidates: Vec<Vec<usize>> = match kind {
            Kind::Kill | Kind::Pause | Kind::Isolate => (1..=5).map(|k| vec![k]).collect(),
            Kind::ClientCut if chain.len() < 2 => continue,
            Kind::ClientCut => {
                return Fault {
                    kind,
                    nodes: vec![chain[rng.random_range(0..chain.len())]],
                    hold: Duration::from_millis(if schedule.chain_faults {
                        rng.random_range(500..=3_000)
                    } else {
                        rng.random_range(500..=2_500)
                    }),
                };
            }
            Kind::MinorityCut | Kind::DoubleKill => (1..=5)
                .flat_map(|a| (a + 1..=5).map(move |b| vec![a, b]))
                .collect(),
        };
        let candidates: Vec<Vec<usize>> =
            candidates.into_iter().filter(|s| survivable(s)).collect();
        if candidates.is_empty() {
            continue;
        }
        let nodes = candidates[rng.random_range(0..candidates.len())].clone();
        let ms = match kind {
            Kind::Kill | Kind::DoubleKill => rng.random_range(300..=1_500),
            Kind::Pause => rng.random_range(200..=2_000),
            _ => rng.random_range(500..=3_000),
        };
        return Fault {
            kind,
            nodes,
            hold: Duration::from_millis(ms),
        };
    }
}

fn hosts(cluster: &Cluster, ks: &[usize]) -> Vec<Host> {
    ks.iter().map(|k| cluster.host(*k)).collect()
}

/// Injects `fault` and heals it after its hold; returns when (on the
/// run's clock) it took effect.
async fn inject(cluster: &mut Cluster, net: &Net, run: &Run, fault: &Fault) -> u64 {
    let at;
    match fault.kind {
        Kind::Kill | Kind::DoubleKill => {
            for k in &fault.nodes {
                cluster.nodes[k - 1].child.kill().unwrap();
            }
            at = run.now();
            tokio::time::sleep(fault.hold).await;
            for k in &fault.nodes {
                cluster.restart(*k);
            }
        }
        Kind::Pause => {
            let k = fault.nodes[0];
            cluster.nodes[k - 1].signal("STOP");
            at = run.now();
            tokio::time::sleep(fault.hold).await;
            cluster.nodes[k - 1].signal("CONT");
        }
        Kind::Isolate | Kind::MinorityCut => {
            let others: Vec<usize> = (1..=5).filter(|k| !fault.nodes.contains(k)).collect();
            let mut everyone = hosts(cluster, &others);
            everyone.push(cluster.client_host());
            net.split(&hosts(cluster, &fault.nodes), &everyone);
            at = run.now();
            tokio::time::sleep(fault.hold).await;
            net.heal();
        }
        Kind::ClientCut => {
            net.cut(&cluster.host(fault.nodes[0]), &cluster.client_host());
            at = run.now();
            tokio::time::sleep(fault.hold).await;
            net.heal();
        }
    }
    at
}

/// The committed layout (`None` if the layout servers do not answer
/// within 10 s).
async fn current(engine: &Reconfigurer) -> Option<Layout> {
    bounded(10, engine.current()).await.and_then(Result::ok)
}

/// The refusal of a node that kept a write the log resolved otherwise
/// (the head of a chain killed mid-append, typically): its log directory
/// must be emptied before it can be added again (`corfu layout add-node`'s
/// documented procedure; open in issue 16: the state transfer could
/// replace such a copy itself).
const DIVERGED: &str = "before adding it again";

/// `corfu layout add-node nK`, tried up to five times. A node refused for
/// a write it kept that the log does not hold ([`DIVERGED`]) is stopped,
/// its log directory emptied (its layout server's state kept) and the
/// node started again, as the error tells an operator to do (counted in
/// `wiped`).
async fn add_back(cluster: &mut Cluster, k: usize, wiped: &mut usize) -> Result<String, String> {
    let mut last = String::new();
    for attempt in 0..5 {
        if last.contains(DIVERGED) {
            let config =
                corfu::core::node::config::NodeConfig::load(&cluster.node_configs[k - 1]).unwrap();
            let _ = cluster.nodes[k - 1].child.kill();
            let _ = cluster.nodes[k - 1].child.wait();
            std::fs::remove_dir_all(config.data_dir.join("log")).unwrap();
            cluster.restart(k);
            *wiped += 1;
            eprintln!("nemesis: n{k} kept a write the log resolved otherwise; its log directory was emptied");
        }
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let config_path = cluster.cluster_toml.clone();
        let out = bounded(
            90,
            tokio::task::spawn_blocking(move || {
                corfu_command()
                    .args([
                        "layout",
                        "add-node",
                        &format!("n{k}"),
                        "--json",
                        "--cluster",
                    ])
                    .arg(&config_path)
                    .output()
                    .unwrap()
            }),
        )
        .await;
        let Some(out) = out else {
            last = "no answer within 90 s".into();
            continue;
        };
        let out = out.unwrap();
        if out.status.success() {
            let done: serde_json::Value =
                serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
            return Ok(format!(
                "n{k} back in {:.0} ms",
                done["elapsed_ms"].as_f64().unwrap_or(f64::NAN)
            ));
        }
        last = String::from_utf8_lossy(&out.stderr).trim().to_string();
    }
    Err(format!("add-node n{k} failed 5 times, last: {last}"))
}

/// Restarts every node whose process exited (a crash is an anomaly) and
/// adds back every node of [`CHAIN`] missing from the chain. Returns
/// what it did.
async fn repair(
    cluster: &mut Cluster,
    engine: &Reconfigurer,
    anomalies: &mut Vec<String>,
    wiped: &mut usize,
) -> Vec<String> {
    let mut done = Vec::new();
    for k in 1..=5 {
        if let Ok(Some(status)) = cluster.nodes[k - 1].child.try_wait() {
            let tail = tail_of_stderr(&cluster.nodes[k - 1]);
            anomalies.push(format!(
                "node n{k} exited on its own ({status}); its last lines: {tail}"
            ));
            cluster.restart(k);
            done.push(format!("n{k} restarted after it exited"));
        }
    }
    // Removals in flight at the heal land first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let Some(layout) = current(engine).await else {
        anomalies.push("LIVENESS: the layout servers did not answer within 10 s".into());
        return done;
    };
    let (chain, _) = members(&layout);
    for k in CHAIN {
        if !chain.contains(&k) {
            match add_back(cluster, k, wiped).await {
                Ok(what) => done.push(what),
                Err(e) => anomalies.push(format!("LIVENESS: {e}")),
            }
        }
    }
    done
}

fn tail_of_stderr(node: &NodeProcess) -> String {
    let lines = node.stderr.lock().unwrap().clone();
    let skip = lines.len().saturating_sub(5);
    lines[skip..]
        .iter()
        .map(|l| support::cluster::plain(l))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// A log appender recording `history`, pausing 2 ms between appends.
async fn appender(run: Arc<Run>, history: Arc<History>, client: LogClient, t: usize) {
    let stream = StreamId::from_name("nemesis");
    let mut i = 0;
    while !run.stopped() {
        let value = format!("t{t}-{i}").into_bytes();
        let streams: &[StreamId] = if i % 2 == 0 { &[stream] } else { &[] };
        let invoke_ns = run.now();
        if history.append(&client, value, streams).await.is_ok() {
            run.acked_update(APPENDERS, invoke_ns, run.now());
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Appends acknowledged so far.
fn appends_acked(run: &Run) -> usize {
    run.acked_since(Some(APPENDERS), 0)
}

/// Per fault kind: how many ran and the longest unavailability (ms).
type Figures = BTreeMap<Kind, (usize, f64)>;

/// Every runtime's and the fresh client's queue, at the end.
async fn read_queues(queues: &[(String, ReplicatedQueue<u64>)]) -> Vec<(String, Option<Vec<u64>>)> {
    futures_util::future::join_all(queues.iter().map(|(who, q)| async move {
        let items = bounded(FINAL_READ_SECS, q.snapshot())
            .await
            .and_then(Result::ok)
            .map(|v| v.into_iter().collect());
        (who.clone(), items)
    }))
    .await
}

fn seed() -> u64 {
    match std::env::var("CORFU_NEMESIS_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("CORFU_NEMESIS_SEED={s:?}: not a u64")),
        Err(_) => rand::random(),
    }
}

/// Prints the seed with every panic (of any thread) from now on.
fn announce_seed(schedule: &'static str, seed: u64) {
    eprintln!(
        "nemesis[{schedule}]: seed {seed} (CORFU_NEMESIS_SEED={seed} reproduces the schedule)"
    );
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        eprintln!(
            "nemesis[{schedule}] panicked; seed {seed}: rerun with CORFU_NEMESIS_SEED={seed}"
        );
        default(info);
    }));
}

async fn nemesis(schedule: &Schedule, seed: u64) {
    let _turn = TURN.lock().await;
    if let Ok(filter) = std::env::var("CORFU_NEMESIS_TRACE") {
        // The test's own clients' traces (the nodes take `RUST_LOG`).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    announce_seed(schedule.name, seed);
    let started = std::time::Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cluster = start_cluster_with(Setup {
        sequencers: &[1, 2, 3, 4, 5],
        client_auth: false,
        detectors: true,
        layout_servers: &[1, 2, 3, 4, 5],
        node_connect_timeout_ms: Some(300),
        local_ips: Some(schedule.x),
    })
    .await;
    let net = Net::new();
    let config: ClientConfig = cluster.config.clone();
    let engine = Reconfigurer::new(config.endpoint().unwrap(), config.layout_servers.clone());

    // The workload.
    let run = Arc::new(Run::new());
    let mut clients = Vec::new();
    let mut runtimes = Vec::new();
    for _ in 0..3 {
        let client = LogClient::connect(&config).await.unwrap();
        runtimes.push(Runtime::new(client.clone()));
        clients.push(client);
    }
    let objects: Vec<Objects> = runtimes.iter().map(Objects::open).collect();
    let queues: Vec<ReplicatedQueue<u64>> = runtimes.iter().map(open_queue).collect();
    open_accounts(&runtimes[0], &objects[0]).await;
    observer_reads(&run, "before the faults", &runtimes[2], &objects[2]).await;
    let mut tasks = spawn_workloads(&run, &runtimes[..2], &objects[..2]);
    for (r, queue) in queues.iter().take(2).enumerate() {
        tasks.push(tokio::spawn(queue_pusher(run.clone(), r, 0, queue.clone())));
        tasks.push(tokio::spawn(queue_popper(run.clone(), r, queue.clone())));
    }
    let history = Arc::new(History::new());
    let log_client = LogClient::connect(&config).await.unwrap();
    for t in 0..2 {
        tasks.push(tokio::spawn(appender(
            run.clone(),
            history.clone(),
            log_client.clone(),
            t,
        )));
    }
    clients.push(log_client);

    let mut anomalies: Vec<String> = Vec::new();
    // Nodes whose log directory had to be emptied to add them back.
    let mut wiped = 0;
    if !wait_for(SERVE_AGAIN_SECS, || {
        run.acked_since(Some(0), 0) > 0
            && run.acked_since(Some(1), 0) > 0
            && appends_acked(&run) > 0
    })
    .await
    {
        anomalies.push("LIVENESS: the workload acknowledged nothing before any fault".into());
    }

    // The schedule.
    let mut figures = Figures::new();
    let faults_for = std::env::var("CORFU_NEMESIS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(schedule.faults_for, Duration::from_secs);
    let faults_until = std::time::Instant::now() + faults_for;
    let mut n = 0;
    while anomalies.is_empty() && std::time::Instant::now() < faults_until {
        let Some(layout) = current(&engine).await else {
            anomalies.push("LIVENESS: the layout servers did not answer within 10 s".into());
            break;
        };
        n += 1;
        let fault = plan(&mut rng, schedule, &layout);
        let at = inject(&mut cluster, &net, &run, &fault).await;
        let repaired = repair(&mut cluster, &engine, &mut anomalies, &mut wiped).await;
        let ready = run.now();
        let served = wait_for(SERVE_AGAIN_SECS, || run.first_ack_since(ready).is_some()).await;
        let after = current(&engine).await;
        let unavailable = run.first_ack_since(at).map(|r| ms(r - at));
        eprintln!(
            "nemesis: fault #{n} at {:.1} s: {} (from {}); unavailable {}; then {}{}",
            ms(at) / 1e3,
            fault.describe(),
            describe_layout(&layout),
            unavailable.map_or("until the end".into(), |u| format!("{u:.0} ms")),
            after.as_ref().map_or("no layout".into(), describe_layout),
            if repaired.is_empty() {
                String::new()
            } else {
                format!("; {}", repaired.join(", "))
            }
        );
        if !served {
            anomalies.push(format!(
                "LIVENESS: nothing acknowledged within {SERVE_AGAIN_SECS} s after fault #{n} ({}) was healed",
                fault.describe()
            ));
        }
        // The observer reads after every fault: a client idle through the
        // fault (holding an old layout) is where stale reads show, and
        // one idle through the whole schedule takes minutes to catch up.
        observer_reads(
            &run,
            &format!("after fault #{n}"),
            &runtimes[2],
            &objects[2],
        )
        .await;
        let entry = figures.entry(fault.kind).or_insert((0, 0.0));
        entry.0 += 1;
        entry.1 = entry.1.max(unavailable.unwrap_or(f64::INFINITY));
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..=1_500))).await;
    }

    // Heal everything and wait for appends.
    eprintln!(
        "nemesis: schedule done at {:.1} s",
        started.elapsed().as_secs_f64()
    );
    net.heal();
    let repaired = repair(&mut cluster, &engine, &mut anomalies, &mut wiped).await;
    if !repaired.is_empty() {
        eprintln!("nemesis: at the end: {}", repaired.join(", "));
    }
    let from = appends_acked(&run);
    if !wait_for(SERVE_AGAIN_SECS, || appends_acked(&run) >= from + 50).await {
        anomalies.push(format!(
            "LIVENESS: fewer than 50 appends acknowledged within {SERVE_AGAIN_SECS} s after the heal"
        ));
    }
    observer_reads(&run, "after the faults", &runtimes[2], &objects[2]).await;

    // Stop the workload.
    eprintln!(
        "nemesis: healed, appends flow, observer read at {:.1} s",
        started.elapsed().as_secs_f64()
    );
    run.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
    match bounded(70, futures_util::future::join_all(tasks)).await {
        Some(results) => {
            for r in results {
                if let Err(e) = r {
                    anomalies.push(format!("a workload task panicked: {e}"));
                }
            }
        }
        None => {
            anomalies.push("LIVENESS: the workload did not stop within 70 s".into());
            for task in &aborts {
                task.abort();
            }
        }
    }

    // The log: history and replicas.
    eprintln!(
        "nemesis: workload stopped at {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let reader = LogClient::connect(&config).await.unwrap();
    let log = bounded(120, read_log(&reader))
        .await
        .expect("reading the whole log within 120 s");
    let ops = history.ops();
    let appends = ops.len();
    let appends_ok = ops
        .iter()
        .filter(|op| matches!(op.outcome, Outcome::Acked(_)))
        .count();
    // The log also holds the objects' entries (each in a stream of its
    // own): the history is checked against the appenders' entries (no
    // stream, or the `nemesis` stream), junk and unwritten addresses.
    let ours = StreamId::from_name("nemesis");
    let appenders_log: Vec<_> = log
        .iter()
        .filter(|(_, outcome)| match outcome {
            // (Address 0 holds the bootstrap's empty entry.)
            ReadOutcome::Data(entry) => {
                !entry.payload.is_empty()
                    && (entry.streams.is_empty() || entry.streams.iter().any(|h| h.stream == ours))
            }
            _ => true,
        })
        .cloned()
        .collect();
    let log_report = match history.check(&appenders_log) {
        Ok(report) => report.to_string(),
        Err(violations) => {
            anomalies.push(format!("log history: {violations}"));
            "FAILED".into()
        }
    };
    let layout = reader.refresh_layout().await.unwrap();
    check_replicas(
        &config.endpoint().unwrap(),
        &layout,
        log.last().map_or(0, |(a, _)| a + 1),
        Some(&log),
    )
    .await;

    // The final states: every long-lived runtime and a fresh client.
    eprintln!(
        "nemesis: log and replicas checked at {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let fresh = LogClient::connect(&config).await.unwrap();
    let fresh_rt = Runtime::new(fresh.clone());
    let fresh_objects = Objects::open(&fresh_rt);
    let mut named_queues: Vec<(String, ReplicatedQueue<u64>)> = queues
        .iter()
        .enumerate()
        .map(|(r, q)| (runtime_name(r).to_string(), q.clone()))
        .collect();
    named_queues.push(("fresh".into(), open_queue(&fresh_rt)));
    // The fresh client replays the whole log (about 100 000 entries in
    // the short schedule) before the final reads, which are bounded.
    let replay_started = std::time::Instant::now();
    let replayed = bounded(180, async {
        fresh_objects.counter.get().await.is_ok()
            && read_bank(&fresh_rt, &fresh_objects).await.is_ok()
            && fresh_objects.map.snapshot().await.is_ok()
    })
    .await;
    if replayed != Some(true) {
        anomalies.push(format!(
            "the fresh client could not replay the log: {replayed:?}"
        ));
    }
    eprintln!(
        "nemesis: the fresh client replayed the log in {:.1} s",
        replay_started.elapsed().as_secs_f64()
    );
    let mut finals = read_finals(
        &run,
        0,
        &runtimes,
        &objects,
        Some((&fresh_rt, &fresh_objects)),
    )
    .await;
    let mut final_queues = read_queues(&named_queues).await;
    let disagree = |finals: &[(String, Final)], queues: &[(String, Option<Vec<u64>>)]| {
        finals.iter().any(|(_, f)| f != &finals[0].1)
            || queues.iter().any(|(_, q)| q != &queues[0].1)
    };
    if disagree(&finals, &final_queues) && run.errors.lock().unwrap().1 > 0 {
        // An update of unknown outcome may still land late: read again
        // once the log is quiet (the first reads still count).
        tokio::time::sleep(Duration::from_secs(1)).await;
        finals = read_finals(
            &run,
            1,
            &runtimes,
            &objects,
            Some((&fresh_rt, &fresh_objects)),
        )
        .await;
        final_queues = read_queues(&named_queues).await;
    }
    for (who, f) in &finals {
        if f.counter.is_none() || f.bank.is_none() || f.map.is_none() {
            anomalies.push(format!("{who} could not read the final state: {f:?}"));
        }
    }
    for (who, q) in &final_queues {
        if q.is_none() {
            anomalies.push(format!("{who} could not read the final queue"));
        }
    }
    if disagree(&finals, &final_queues) {
        let mut text = String::from("the clients disagree on the final state:");
        for ((who, f), (_, q)) in finals.iter().zip(&final_queues) {
            text.push_str(&format!(
                "\n    {who}: counter {:?}, ledger of {:?}, balances {:?}, map {:?}, queue of {:?}",
                f.counter,
                f.bank.as_ref().map(|b| b.ledger.len()),
                f.bank.as_ref().map(|b| &b.balances),
                f.map,
                q.as_ref().map(Vec::len)
            ));
        }
        anomalies.push(text);
    }
    let fresh_final = finals
        .iter()
        .find(|(w, _)| w == "fresh")
        .map(|(_, f)| f.clone());
    let fresh_queue = final_queues
        .iter()
        .find(|(w, _)| w == "fresh")
        .and_then(|(_, q)| q.clone());

    // The objects' checks.
    eprintln!(
        "nemesis: final states read at {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut tally = Tally::default();
    let counter = check_counter(
        &run,
        fresh_final.as_ref().and_then(|f| f.counter),
        &mut tally,
    );
    let bank = check_bank(
        &run,
        fresh_final.as_ref().and_then(|f| f.bank.as_ref()),
        &mut tally,
    );
    let map = check_map(&run, &mut tally);
    let queue = check_queue(&run, fresh_queue.as_deref(), &mut tally);
    tally.violations.splice(0..0, anomalies);
    for client in clients.iter().chain([&fresh, &reader]) {
        client.close();
    }

    let faults: Vec<String> = figures
        .iter()
        .map(|(kind, (count, worst))| {
            format!(
                "{} {count} (longest unavailability {worst:.0} ms)",
                kind.name()
            )
        })
        .collect();
    let counts = (
        tally.lost,
        tally.duplicated,
        tally.stale,
        tally.phantom,
        tally.inconsistent,
    );
    let anomalies = tally.violations.len();
    eprintln!(
        "nemesis[{}] seed {seed}: {:.1} s; ops {} ({} acknowledged, {} unknown outcome); log appends {appends} ({appends_ok} acknowledged); \
         faults {}: {}; log directories emptied to add a node back {wiped}; anomalies {anomalies} (lost {}, duplicated {}, stale {}, phantom {}, inconsistent {}); \
         log: {log_report}; {counter}; {bank}; {map}; {queue}; layout at the end: {}",
        schedule.name,
        started.elapsed().as_secs_f64(),
        tally.attempted + appends,
        tally.acked + appends_ok,
        tally.unknown + (appends - appends_ok),
        n,
        faults.join(", "),
        counts.0,
        counts.1,
        counts.2,
        counts.3,
        counts.4,
        describe_layout(&layout),
    );
    if !(tally.violations.is_empty() && counts == (0, 0, 0, 0, 0)) {
        let dir = std::env::temp_dir().join(format!("nemesis-{}-{seed}", schedule.name));
        eprintln!(
            "nemesis: the nodes' logs are in {}",
            cluster.write_logs(&dir).display()
        );
    }
    assert!(
        tally.violations.is_empty() && counts == (0, 0, 0, 0, 0),
        "nemesis[{}] seed {seed} (CORFU_NEMESIS_SEED={seed} reproduces it): {anomalies} anomalies:\n{}",
        schedule.name,
        grouped(&tally.violations)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_nemesis_schedule_finds_no_anomaly() {
    nemesis(&SHORT, seed()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a long nemesis schedule: 10 minutes of faults"]
async fn a_long_nemesis_schedule_finds_no_anomaly() {
    nemesis(&LONG, seed()).await;
}

/// The seed [`REGRESSION_ADD_NODE`] (about a minute).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a regression seed: run with --ignored"]
async fn regression_add_node_state_transfer_fails_after_a_second_removal() {
    nemesis(&SHORT, REGRESSION_ADD_NODE).await;
}

/// The seed [`REGRESSION_ISOLATE`] (about a minute).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a regression seed: run with --ignored"]
async fn regression_isolating_a_standby_removes_live_chain_members() {
    nemesis(&SHORT_WITHOUT_CHAIN_FAULTS, REGRESSION_ISOLATE).await;
}
