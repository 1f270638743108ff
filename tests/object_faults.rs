//! Object-level fault suite (issue 14): replicated objects used by
//! long-lived clients through node failures of real `corfu node`
//! processes.
//!
//! Every scenario starts a fresh cluster of three `corfu node` processes on
//! loopback, configured by this file (not by `corfu local init`): every
//! node hosts the layout server, sequencer and log unit roles, the layout
//! lists all three as sequencers (n1 active) and one chain n1 -> n2 -> n3,
//! log units sync every write (`sync = "always"`), and every node runs its
//! failure detector with `failure_timeout_ms = 500`. Three long-lived
//! runtimes (`smr::Runtime` over their own `LogClient`) are created before
//! the fault: A and B run the workloads through it, and an *observer*
//! stays idle except for a few reads before and after the fault (an idle
//! client still holding the old layout is where stale reads show).
//!
//! Workloads, concurrently (per runtime A and B):
//! - **counter**: 3 tasks of fetch-and-add (`add_and_get(1)`), 1 task of
//!   linearizable reads. Every acknowledged add returns a distinct value;
//!   every read is at least the highest value an add acknowledged before
//!   the read began returned, and at most the number of adds invoked
//!   before it returned; the final value is at least the acknowledged adds
//!   and at most the attempted ones.
//! - **bank**: 3 tasks of transfers between 5 accounts, one transaction
//!   each (read both balances, refuse an overdraft, write both), 1 auditor
//!   reading every balance in read-only transactions. Each transfer also
//!   writes its id into a ledger map and adds 1 to a commit counter in the
//!   same transaction, so the log itself says which transfers of unknown
//!   outcome (a commit that returned a log error) took effect. Every audit
//!   (and the final state): total conserved, no negative balance,
//!   balances = opening balances + the transfers in the ledger of the same
//!   snapshot, commit counter = ledger size, and every transfer
//!   acknowledged before the audit began is in its ledger. Finally every
//!   acknowledged transfer is in the ledger, and nothing refused or
//!   aborted is.
//! - **map**: 3 tasks of random insert (unique values) / remove / get on 4
//!   keys, recorded with invocation and response times and checked by the
//!   Wing-Gong checker of `support::linearizability` (a failed call has an
//!   unknown outcome).
//!
//! After the load every long-lived runtime and a **fresh client** (new
//! `LogClient` and `Runtime`) read the final state (counter, bank, map);
//! these reads are part of the histories above and must all agree (see
//! below).
//!
//! Faults, one test each: SIGKILL of n1 (chain head and active
//! sequencer); SIGSTOP of n1 until the detectors removed it (at least
//! 1.5 s) while B acknowledges more writes, then SIGCONT and explicit
//! counter reads from A, B and the observer; SIGKILL of n2 (middle);
//! SIGKILL of n3 (tail); `Change::Seal` reconfigurations every 150 ms.
//!
//! Each scenario prints one summary line (`object_faults[...]`): operations
//! attempted, acknowledged, of unknown outcome, lost (acknowledged but
//! missing at the end), duplicated (two acknowledged adds with one value,
//! or an update applied twice), stale (a linearizable read missing an
//! acknowledged write), phantom (an update in the log that was refused,
//! aborted or never attempted), inconsistent (an audit breaking the bank
//! invariant or whose parts disagree, or a map history that is not
//! linearizable other than by a stale read), and the time from the fault
//! to the first acknowledged update invoked after it. The counts are of
//! violations found: a view that skipped one counter entry makes every
//! later add of its runtime collide with another runtime's, so one skip
//! can count hundreds of duplicates. The test fails if any count is not
//! zero, if the clients' final states differ, if an invariant breaks, or
//! if a liveness bound trips: the detectors must remove the node, and an
//! update must be acknowledged, within 20 s of the fault (reported as
//! `LIVENESS`). No other timing is asserted.
//!
//! After the load stops the log is quiet, so the final states must be
//! equal; only if some call failed (an update of unknown outcome may
//! still land late) are they read a second time, 1 s later, before being
//! compared (the first reads still count in the histories).
//!
//! `soak_every_fault_repeatedly` (ignored) runs every scenario 3 times
//! with 15 s of load after each fault:
//! `cargo test --release --test object_faults -- --ignored --nocapture`.
//!
//! The tests take turns (a lock): three node processes and 22 client tasks
//! are enough load for this machine.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corfu::cluster::Shape;
use corfu::core::client::{LogClient, LogClientOptions};
use corfu::core::client_config::ClientConfig;
use corfu::core::layout::Layout;
use corfu::core::reconfig::{Change, Reconfigurer};
use corfu::core::transport::tls::{self, ClientTlsConfig, ClusterCa};
use corfu::core::transport::TransportConfig;
use corfu::core::types::ClusterId;
use corfu::objects::{ReplicatedCounter, ReplicatedMap};
use corfu::smr::{Error, Runtime};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::linearizability::{self as lin, Call, Clock, Operation};
use support::{spawn_node_process, NodeProcess};

/// Nodes of every scenario's cluster.
const NODES: usize = 3;
/// The detectors' failure timeout.
const FAILURE_TIMEOUT_MS: u64 = 500;
/// How often the detectors probe.
const PROBE_INTERVAL_MS: u64 = 100;
/// Liveness bound: the detectors remove a failed node, and an update is
/// acknowledged again, within this long after the fault.
const LIVENESS_SECS: u64 = 20;
/// How long one client operation may keep retrying before it fails (an
/// unknown outcome for an update).
const OPERATION_TIMEOUT_MS: u64 = 10_000;
/// How long a SIGSTOP lasts at the least (it lasts until the detectors
/// removed the node and B acknowledged more writes).
const STOP_MIN: Duration = Duration::from_millis(1_500);
/// Updates B must acknowledge while n1 is stopped, after its removal.
const ACKS_WHILE_STOPPED: usize = 20;
/// Interval between two seals of the seal scenario.
const SEAL_INTERVAL: Duration = Duration::from_millis(150);
/// Fewest seals the seal scenario must complete to have tested anything.
const SEALS_MIN: usize = 5;

const COUNTER_ADDERS: usize = 3;
const COUNTER_READERS: usize = 1;
const TRANSFERERS: usize = 3;
const AUDITORS: usize = 1;
const MAP_TASKS: usize = 3;
const ACCOUNTS: usize = 5;
const OPENING_BALANCE: i64 = 1_000;
const MAP_KEYS: u32 = 4;
/// Violations of one kind printed in a failure message (all are counted).
const VIOLATIONS_SHOWN_PER_KIND: usize = 4;

/// One scenario at a time (see the module docs).
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------
// The cluster
// ---------------------------------------------------------------------

struct Cluster {
    /// Declared first, so dropped (killed) before the directory goes.
    nodes: Vec<NodeProcess>,
    config: ClientConfig,
    first: Layout,
    _dir: tempfile::TempDir,
}

/// Three nodes with every role, a shared CA, detectors on; bootstrapped
/// with one chain n1 -> n2 -> n3 and sequencers n1, n2, n3.
async fn start_cluster() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cluster_id = ClusterId::random();
    let ca = ClusterCa::generate("object-faults").unwrap();
    let ca_pem = root.join("ca.pem");
    ca.write(&ca_pem, &root.join("ca.key")).unwrap();
    let mut nodes = Vec::new();
    for k in 1..=NODES {
        let id = format!("n{k}");
        let node_dir = root.join(&id);
        std::fs::create_dir_all(node_dir.join("data")).unwrap();
        let issued = ca
            .issue(&id, &tls::node_names(&id, [127, 0, 0, 1].into(), &[]))
            .unwrap();
        let (cert, key) = (node_dir.join("node.pem"), node_dir.join("node.key"));
        issued.write(&cert, &key).unwrap();
        let path = node_dir.join("node.toml");
        std::fs::write(
            &path,
            node_toml(&id, cluster_id, &node_dir, &ca_pem, &cert, &key),
        )
        .unwrap();
        nodes.push(spawn_node_process(&path));
    }
    let mut config = ClientConfig {
        cluster_id,
        layout_servers: nodes.iter().map(|n| n.addr.clone()).collect(),
        tls: ClientTlsConfig {
            ca_cert: ca_pem,
            cert: None,
            key: None,
        },
        transport: TransportConfig::default(),
        client: LogClientOptions::default(),
    };
    let first = tokio::time::timeout(
        Duration::from_secs(20),
        corfu::cluster::bootstrap(&config, Shape::new(1, 3)),
    )
    .await
    .expect("bootstrap within 20 s")
    .expect("bootstrap");
    assert_eq!(chain_ids(&first), ["n1", "n2", "n3"], "{first:?}");
    let sequencers: Vec<&str> = first
        .sequencers
        .iter()
        .map(|n| n.node_id.as_str())
        .collect();
    assert_eq!(sequencers, ["n1", "n2", "n3"], "{first:?}");
    // As tests/fault_kill.rs: a client gives up on an unanswered request
    // after 300 ms and retries (re-reading the layout), so a dead peer
    // stalls it about as long as the detectors take.
    config.transport.request_timeout_ms = 300;
    config.transport.connect_timeout_ms = 300;
    config.client = LogClientOptions {
        hole_fill_timeout_ms: 50,
        operation_timeout_ms: OPERATION_TIMEOUT_MS,
        ..LogClientOptions::default()
    };
    Cluster {
        nodes,
        config,
        first,
        _dir: dir,
    }
}

fn node_toml(
    id: &str,
    cluster_id: ClusterId,
    node_dir: &Path,
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> String {
    format!(
        "node_id = \"{id}\"\n\
         listen = \"127.0.0.1:0\"\n\
         data_dir = \"{data}\"\n\
         cluster_id = \"{cluster_id}\"\n\
         roles = [\"layout_server\", \"sequencer\", \"log_unit\"]\n\
         \n\
         [tls]\n\
         ca_cert = \"{ca}\"\n\
         cert = \"{cert}\"\n\
         key = \"{key}\"\n\
         \n\
         [log_unit]\n\
         sync = \"always\"\n\
         \n\
         [failure_detector]\n\
         enabled = true\n\
         failure_timeout_ms = {FAILURE_TIMEOUT_MS}\n\
         probe_interval_ms = {PROBE_INTERVAL_MS}\n",
        data = node_dir.join("data").display(),
        ca = ca.display(),
        cert = cert.display(),
        key = key.display(),
    )
}

fn chain_ids(layout: &Layout) -> Vec<String> {
    layout
        .open_segment()
        .map(|open| {
            open.stripes
                .iter()
                .flat_map(|s| &s.chain)
                .map(|n| n.node_id.clone())
                .collect()
        })
        .unwrap_or_default()
}

fn describe_layout(layout: &Layout) -> String {
    format!(
        "epoch {}, chain {}, sequencer {}",
        layout.epoch,
        chain_ids(layout).join(" -> "),
        layout
            .active_sequencer()
            .map_or("none", |n| n.node_id.as_str())
    )
}

/// Strips ANSI escape sequences (the nodes log in colour).
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

/// The nodes' warnings, errors and reconfiguration lines, for a failure
/// report.
fn node_log_excerpt(nodes: &[NodeProcess]) -> String {
    let mut out = String::new();
    for (i, node) in nodes.iter().enumerate() {
        let lines = node.stderr.lock().unwrap().clone();
        let picked: Vec<String> = lines
            .iter()
            .map(|l| plain(l))
            .filter(|l| {
                l.contains("WARN")
                    || l.contains("ERROR")
                    || l.contains("removed")
                    || l.contains("stalled")
            })
            .collect();
        let skip = picked.len().saturating_sub(20);
        for line in &picked[skip..] {
            out.push_str(&format!("  [n{}] {line}\n", i + 1));
        }
    }
    out
}

// ---------------------------------------------------------------------
// What a run records
// ---------------------------------------------------------------------

/// An `add_and_get(1)`: the value it returned if acknowledged.
#[derive(Debug, Clone)]
struct Add {
    runtime: usize,
    invoke_ns: u64,
    response_ns: u64,
    value: Option<i64>,
}

/// A linearizable read of the counter.
#[derive(Debug, Clone)]
struct CounterRead {
    who: String,
    invoke_ns: u64,
    response_ns: u64,
    value: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TransferOutcome {
    /// The commit was acknowledged.
    Committed,
    /// Insufficient funds: the transaction wrote nothing.
    Refused,
    /// Every attempt was refused by the log: nothing of it is in the log.
    Aborted,
    /// A log error: it may or may not have committed.
    Unknown,
}

#[derive(Debug, Clone)]
struct Transfer {
    id: u64,
    from: usize,
    to: usize,
    amount: i64,
    response_ns: u64,
    outcome: TransferOutcome,
}

/// One consistent snapshot of the bank (a read-only transaction).
#[derive(Debug, Clone, PartialEq, Eq)]
struct BankState {
    balances: BTreeMap<String, i64>,
    ledger: BTreeMap<u64, i64>,
    commits: i64,
}

#[derive(Debug, Clone)]
struct Audit {
    who: String,
    invoke_ns: u64,
    state: Option<BankState>,
}

/// Everything a scenario's clients did.
struct Run {
    clock: Clock,
    stop: AtomicBool,
    adds: Mutex<Vec<Add>>,
    counter_reads: Mutex<Vec<CounterRead>>,
    transfers: Mutex<Vec<Transfer>>,
    audits: Mutex<Vec<Audit>>,
    map_ops: Mutex<Vec<Operation<u32, u64>>>,
    /// (runtime, invoke_ns, response_ns) of every acknowledged update.
    updates: Mutex<Vec<(usize, u64, u64)>>,
    /// Distinct error messages (the first few) and how many errors in all.
    errors: Mutex<(Vec<String>, usize)>,
}

/// Distinct error messages kept for the report.
const ERRORS_KEPT_MAX: usize = 6;

impl Run {
    fn new() -> Run {
        Run {
            clock: Clock::new(),
            stop: AtomicBool::new(false),
            adds: Mutex::default(),
            counter_reads: Mutex::default(),
            transfers: Mutex::default(),
            audits: Mutex::default(),
            map_ops: Mutex::default(),
            updates: Mutex::default(),
            errors: Mutex::default(),
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn now(&self) -> u64 {
        self.clock.now_ns()
    }

    fn error(&self, what: &str, e: &Error) {
        let mut errors = self.errors.lock().unwrap();
        errors.1 += 1;
        let text = format!("{what}: {e}");
        // Numbers (addresses, epochs) vary; keep one message per shape.
        let shape: String = text.chars().filter(|c| !c.is_ascii_digit()).collect();
        if errors.0.len() < ERRORS_KEPT_MAX
            && !errors.0.iter().any(|t| {
                t.chars()
                    .filter(|c| !c.is_ascii_digit())
                    .collect::<String>()
                    == shape
            })
        {
            errors.0.push(text);
        }
    }

    fn acked_update(&self, runtime: usize, invoke_ns: u64, response_ns: u64) {
        self.updates
            .lock()
            .unwrap()
            .push((runtime, invoke_ns, response_ns));
    }

    /// Acknowledged updates of `runtime` (any, if `None`) invoked at or
    /// after `since_ns`.
    fn acked_since(&self, runtime: Option<usize>, since_ns: u64) -> usize {
        self.updates
            .lock()
            .unwrap()
            .iter()
            .filter(|(r, invoke, _)| *invoke >= since_ns && runtime.is_none_or(|x| x == *r))
            .count()
    }

    /// The first acknowledgement of an update invoked at or after
    /// `since_ns`.
    fn first_ack_since(&self, since_ns: u64) -> Option<u64> {
        self.updates
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, invoke, _)| *invoke >= since_ns)
            .map(|(_, _, response)| *response)
            .min()
    }
}

// ---------------------------------------------------------------------
// Objects and workloads
// ---------------------------------------------------------------------

#[derive(Clone)]
struct Objects {
    counter: ReplicatedCounter,
    bank: ReplicatedMap<String, i64>,
    ledger: ReplicatedMap<u64, i64>,
    commits: ReplicatedCounter,
    map: ReplicatedMap<u32, u64>,
}

impl Objects {
    fn open(rt: &Runtime) -> Objects {
        Objects {
            counter: rt.open("counter").unwrap(),
            bank: rt.open("bank").unwrap(),
            ledger: rt.open("bank-ledger").unwrap(),
            commits: rt.open("bank-commits").unwrap(),
            map: rt.open("kv").unwrap(),
        }
    }
}

fn account(i: usize) -> String {
    format!("acct-{i}")
}

fn opening_balances() -> BTreeMap<String, i64> {
    (0..ACCOUNTS)
        .map(|i| (account(i), OPENING_BALANCE))
        .collect()
}

/// Opens every account in one transaction (before any fault).
async fn open_accounts(rt: &Runtime, objects: &Objects) {
    let bank = &objects.bank;
    rt.transaction(|tx| async move {
        for i in 0..ACCOUNTS {
            bank.tx_insert(&tx, account(i), OPENING_BALANCE)?;
        }
        Ok(())
    })
    .await
    .expect("opening the accounts");
}

/// Moves `amount` from `from` to `to`, recording transfer `id` in the
/// ledger and counting the commit, all in one transaction. `Ok(false)`:
/// refused for insufficient funds, nothing written.
async fn transfer(
    rt: &Runtime,
    objects: &Objects,
    id: u64,
    from: &String,
    to: &String,
    amount: i64,
) -> Result<bool, Error> {
    rt.transaction(|tx| async move {
        let a = objects.bank.tx_get(&tx, from).await?.unwrap_or(0);
        let b = objects.bank.tx_get(&tx, to).await?.unwrap_or(0);
        if a < amount {
            return Ok(false);
        }
        objects.bank.tx_insert(&tx, from.clone(), a - amount)?;
        objects.bank.tx_insert(&tx, to.clone(), b + amount)?;
        objects.ledger.tx_insert(&tx, id, amount)?;
        objects.commits.tx_add(&tx, 1)?;
        Ok(true)
    })
    .await
}

/// Reads the whole bank in one read-only transaction.
async fn read_bank(rt: &Runtime, objects: &Objects) -> Result<BankState, Error> {
    rt.transaction(|tx| async move {
        let balances = objects.bank.tx_snapshot(&tx).await?;
        let ledger = objects.ledger.tx_snapshot(&tx).await?;
        let commits = objects.commits.tx_get(&tx).await?;
        Ok(BankState {
            balances: balances.into_iter().collect(),
            ledger: ledger.into_iter().collect(),
            commits,
        })
    })
    .await
}

async fn counter_adder(run: Arc<Run>, runtime: usize, objects: Objects) {
    while !run.stopped() {
        let invoke_ns = run.now();
        let result = objects.counter.add_and_get(1).await;
        let response_ns = run.now();
        if let Err(e) = &result {
            run.error("counter add", e);
        } else {
            run.acked_update(runtime, invoke_ns, response_ns);
        }
        run.adds.lock().unwrap().push(Add {
            runtime,
            invoke_ns,
            response_ns,
            value: result.ok(),
        });
    }
}

/// One linearizable counter read, recorded.
async fn read_counter(run: &Run, who: &str, counter: &ReplicatedCounter) -> Option<i64> {
    let invoke_ns = run.now();
    let result = counter.get().await;
    let response_ns = run.now();
    if let Err(e) = &result {
        run.error("counter read", e);
    }
    let value = result.ok();
    run.counter_reads.lock().unwrap().push(CounterRead {
        who: who.to_string(),
        invoke_ns,
        response_ns,
        value,
    });
    value
}

async fn counter_reader(run: Arc<Run>, who: String, objects: Objects) {
    while !run.stopped() {
        read_counter(&run, &who, &objects.counter).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn transferer(run: Arc<Run>, runtime: usize, task: usize, rt: Runtime, objects: Objects) {
    let mut rng = StdRng::seed_from_u64(rand::random());
    let mut i: u64 = 0;
    while !run.stopped() {
        i += 1;
        let id = ((runtime as u64) << 48) | ((task as u64) << 32) | i;
        let from = rng.random_range(0..ACCOUNTS);
        let to = (from + rng.random_range(1..ACCOUNTS)) % ACCOUNTS;
        let amount = rng.random_range(1..=OPENING_BALANCE / 2);
        let (from_name, to_name) = (account(from), account(to));
        let invoke_ns = run.now();
        let result = transfer(&rt, &objects, id, &from_name, &to_name, amount).await;
        let response_ns = run.now();
        let outcome = match &result {
            Ok(true) => TransferOutcome::Committed,
            Ok(false) => TransferOutcome::Refused,
            Err(Error::Aborted { .. }) => TransferOutcome::Aborted,
            Err(e) => {
                run.error("transfer", e);
                TransferOutcome::Unknown
            }
        };
        if outcome == TransferOutcome::Committed {
            run.acked_update(runtime, invoke_ns, response_ns);
        }
        run.transfers.lock().unwrap().push(Transfer {
            id,
            from,
            to,
            amount,
            response_ns,
            outcome,
        });
    }
}

/// One audit, recorded.
async fn audit(run: &Run, who: &str, rt: &Runtime, objects: &Objects) -> Option<BankState> {
    let invoke_ns = run.now();
    let result = read_bank(rt, objects).await;
    if let Err(e) = &result {
        run.error("audit", e);
    }
    let state = result.ok();
    run.audits.lock().unwrap().push(Audit {
        who: who.to_string(),
        invoke_ns,
        state: state.clone(),
    });
    state
}

async fn auditor(run: Arc<Run>, who: String, rt: Runtime, objects: Objects) {
    while !run.stopped() {
        audit(&run, &who, &rt, &objects).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A value no other map operation of the run writes.
fn unique_value(client: usize, i: u64) -> u64 {
    ((client as u64) << 40) | i
}

async fn map_worker(run: Arc<Run>, runtime: usize, client: usize, objects: Objects) {
    let mut rng = StdRng::seed_from_u64(rand::random());
    let mut i: u64 = 0;
    while !run.stopped() {
        i += 1;
        let key = rng.random_range(0..MAP_KEYS);
        let invoke_ns = run.now();
        let (call, result) = match rng.random_range(0..10) {
            0..=3 => match objects.map.get(&key).await {
                Ok(seen) => (Call::Get(seen), Ok(())),
                Err(e) => (Call::Get(None), Err(e)),
            },
            4..=7 => {
                let value = unique_value(client, i);
                let r = objects.map.insert(key, value).await.map(|_| ());
                (Call::Put(value), r)
            }
            _ => (Call::Remove, objects.map.remove(key).await.map(|_| ())),
        };
        let response_ns = run.now();
        match &result {
            Ok(()) if !matches!(call, Call::Get(_)) => {
                run.acked_update(runtime, invoke_ns, response_ns)
            }
            Ok(()) => {}
            Err(e) => run.error("map", e),
        }
        run.map_ops.lock().unwrap().push(Operation {
            client,
            key,
            call,
            invoke_ns,
            response_ns: result.is_ok().then_some(response_ns),
        });
    }
}

/// Client numbers of the final map reads (after the workers').
const FINAL_MAP_CLIENT: usize = 1_000;

/// A linearizable read of the whole map, recorded as one `Get` per key
/// (each linearized at the snapshot's point, within the call).
async fn read_map(
    run: &Run,
    client: usize,
    map: &ReplicatedMap<u32, u64>,
) -> Option<BTreeMap<u32, u64>> {
    let invoke_ns = run.now();
    let result = map.snapshot().await;
    let response_ns = run.now();
    match result {
        Ok(snapshot) => {
            let snapshot: BTreeMap<u32, u64> = snapshot.into_iter().collect();
            let mut ops = run.map_ops.lock().unwrap();
            for key in 0..MAP_KEYS {
                ops.push(Operation {
                    client,
                    key,
                    call: Call::Get(snapshot.get(&key).copied()),
                    invoke_ns,
                    response_ns: Some(response_ns),
                });
            }
            Some(snapshot)
        }
        Err(e) => {
            run.error("map snapshot", &e);
            None
        }
    }
}

/// The workloads of runtimes A (0) and B (1).
fn spawn_workloads(
    run: &Arc<Run>,
    runtimes: &[Runtime],
    objects: &[Objects],
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (r, (rt, objects)) in runtimes.iter().zip(objects).enumerate() {
        let name = runtime_name(r);
        for _ in 0..COUNTER_ADDERS {
            tasks.push(tokio::spawn(counter_adder(run.clone(), r, objects.clone())));
        }
        for _ in 0..COUNTER_READERS {
            tasks.push(tokio::spawn(counter_reader(
                run.clone(),
                name.to_string(),
                objects.clone(),
            )));
        }
        for t in 0..TRANSFERERS {
            tasks.push(tokio::spawn(transferer(
                run.clone(),
                r,
                t,
                rt.clone(),
                objects.clone(),
            )));
        }
        for _ in 0..AUDITORS {
            tasks.push(tokio::spawn(auditor(
                run.clone(),
                name.to_string(),
                rt.clone(),
                objects.clone(),
            )));
        }
        for t in 0..MAP_TASKS {
            tasks.push(tokio::spawn(map_worker(
                run.clone(),
                r,
                r * MAP_TASKS + t,
                objects.clone(),
            )));
        }
    }
    tasks
}

fn runtime_name(r: usize) -> &'static str {
    ["A", "B", "observer"][r]
}

/// The observer's reads (counter, bank, map), recorded like the others.
async fn observer_reads(run: &Run, label: &str, rt: &Runtime, objects: &Objects) {
    let who = format!("observer {label}");
    read_counter(run, &who, &objects.counter).await;
    audit(run, &who, rt, objects).await;
    read_map(run, FINAL_MAP_CLIENT - 1, &objects.map).await;
}

// ---------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// SIGKILL n1: the chain head and the active sequencer.
    KillHeadAndSequencer,
    /// SIGSTOP n1 until the detectors removed it, then SIGCONT.
    PauseSequencer,
    /// SIGKILL n2: the middle of the chain.
    KillMiddle,
    /// SIGKILL n3: the chain tail.
    KillTail,
    /// `Change::Seal` every 150 ms.
    SealLoop,
}

impl Fault {
    fn describe(self) -> &'static str {
        match self {
            Fault::KillHeadAndSequencer => "SIGKILL n1 (chain head + active sequencer)",
            Fault::PauseSequencer => {
                "SIGSTOP n1 (chain head + active sequencer), SIGCONT after removal"
            }
            Fault::KillMiddle => "SIGKILL n2 (middle of the chain)",
            Fault::KillTail => "SIGKILL n3 (chain tail)",
            Fault::SealLoop => "Change::Seal every 150 ms",
        }
    }
}

/// How long the load runs around the fault.
#[derive(Debug, Clone, Copy)]
struct Load {
    /// Before the fault.
    before: Duration,
    /// After the first update acknowledged after the fault.
    after: Duration,
    /// How long the seal loop runs.
    seals: Duration,
}

const LOAD: Load = Load {
    before: Duration::from_millis(1_000),
    after: Duration::from_millis(2_500),
    seals: Duration::from_millis(4_000),
};

const SOAK: Load = Load {
    before: Duration::from_millis(2_000),
    after: Duration::from_millis(15_000),
    seals: Duration::from_millis(15_000),
};

/// Waits up to `secs` for `cond`, polling every 5 ms.
async fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

/// Awaits `fut` for at most `secs`.
async fn bounded<F: Future>(secs: u64, fut: F) -> Option<F::Output> {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .ok()
}

/// Polls the committed layout until `gone` is neither in the open chain
/// nor the active sequencer.
async fn wait_removed(config: &ClientConfig, gone: &str) -> Result<Layout, String> {
    let endpoint = config.endpoint().unwrap();
    let engine = Reconfigurer::new(endpoint.clone(), config.layout_servers.clone());
    let mut last = None;
    let found = bounded(LIVENESS_SECS, async {
        loop {
            if let Ok(layout) = engine.current().await {
                let seq = layout.active_sequencer().map(|n| n.node_id.clone());
                if !chain_ids(&layout).iter().any(|n| n == gone) && seq.as_deref() != Some(gone) {
                    return layout;
                }
                last = Some(layout);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    endpoint.close();
    found.ok_or_else(|| {
        format!(
            "LIVENESS: {gone} still in the layout {LIVENESS_SECS} s after the fault (last seen: {})",
            last.as_ref().map_or("none".into(), describe_layout)
        )
    })
}

/// A seal: when it started and ended, and the epoch it made.
type Seal = (u64, u64, Result<u64, String>);

/// Seals every `SEAL_INTERVAL` until `stop` is set.
async fn seal_loop(run: Arc<Run>, config: ClientConfig, stop: Arc<AtomicBool>) -> Vec<Seal> {
    let endpoint = config.endpoint().unwrap();
    let engine = Reconfigurer::new(endpoint.clone(), config.layout_servers.clone());
    let mut seals = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let start = run.now();
        let result = match bounded(10, engine.reconfigure(&Change::Seal)).await {
            Some(Ok(done)) => Ok(done.layout.epoch),
            Some(Err(e)) => Err(e.to_string()),
            None => Err("no answer within 10 s".to_string()),
        };
        seals.push((start, run.now(), result));
        tokio::time::sleep(SEAL_INTERVAL).await;
    }
    endpoint.close();
    seals
}

// ---------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------

#[derive(Debug, Default)]
struct Tally {
    attempted: usize,
    acked: usize,
    unknown: usize,
    lost: usize,
    duplicated: usize,
    stale: usize,
    phantom: usize,
    inconsistent: usize,
    violations: Vec<String>,
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// The counter's checks; `fresh` is the final value a fresh client read.
/// Returns a summary fragment.
fn check_counter(run: &Run, fresh: Option<i64>, t: &mut Tally) -> String {
    let adds = run.adds.lock().unwrap().clone();
    let reads = run.counter_reads.lock().unwrap().clone();
    let mut acked: Vec<&Add> = adds.iter().filter(|a| a.value.is_some()).collect();
    t.attempted += adds.len() + reads.len();
    t.acked += acked.len() + reads.iter().filter(|r| r.value.is_some()).count();
    t.unknown += adds.len() - acked.len();

    // Distinct values.
    let mut values: Vec<(i64, &Add)> = acked.iter().map(|a| (a.value.unwrap(), *a)).collect();
    values.sort_by_key(|(v, _)| *v);
    for pair in values.windows(2) {
        if pair[0].0 == pair[1].0 {
            t.duplicated += 1;
            t.violations.push(format!(
                "counter: two acknowledged adds returned {} (runtime {} answered at {:.1} ms, runtime {} at {:.1} ms)",
                pair[0].0,
                runtime_name(pair[0].1.runtime),
                ms(pair[0].1.response_ns),
                runtime_name(pair[1].1.runtime),
                ms(pair[1].1.response_ns)
            ));
        }
    }
    if let Some((v, a)) = values.iter().find(|(v, _)| *v < 1) {
        t.phantom += 1;
        t.violations.push(format!(
            "counter: impossible value: an add by runtime {} returned {v}, below 1",
            runtime_name(a.runtime)
        ));
    }

    // Every read: at least what was acknowledged before it began, at most
    // what was invoked before it returned.
    acked.sort_by_key(|a| a.response_ns);
    let mut prefix_max = Vec::with_capacity(acked.len());
    let mut highest = i64::MIN;
    for a in &acked {
        highest = highest.max(a.value.unwrap());
        prefix_max.push(highest);
    }
    let mut invokes: Vec<u64> = adds.iter().map(|a| a.invoke_ns).collect();
    invokes.sort_unstable();
    for r in &reads {
        let Some(value) = r.value else { continue };
        let before = acked.partition_point(|a| a.response_ns < r.invoke_ns);
        if before > 0 && value < prefix_max[before - 1] {
            t.stale += 1;
            t.violations.push(format!(
                "counter: stale read: {} (invoked at {:.1} ms) saw {value}, but {before} adds were acknowledged before it began, the highest returning {}",
                r.who,
                ms(r.invoke_ns),
                prefix_max[before - 1]
            ));
        }
        let invoked = invokes.partition_point(|&i| i < r.response_ns) as i64;
        if value > invoked {
            t.duplicated += 1;
            t.violations.push(format!(
                "counter: read above the adds invoked: {} (answered at {:.1} ms) saw {value}, but only {invoked} adds had been invoked",
                r.who,
                ms(r.response_ns)
            ));
        }
    }

    // The final value.
    if let Some(f) = fresh {
        let above = values.iter().filter(|(v, _)| *v > f).count();
        let lost = (acked.len() as i64 - f).max(0) as usize;
        let lost = lost.max(above);
        if lost > 0 {
            t.lost += lost;
            t.violations.push(format!(
                "counter: lost adds: the fresh client reads {f}, but {} adds were acknowledged ({above} of them returned more than {f})",
                acked.len()
            ));
        }
        if f > adds.len() as i64 {
            t.duplicated += (f - adds.len() as i64) as usize;
            t.violations.push(format!(
                "counter: final above the adds attempted: the fresh client reads {f}, but only {} adds were attempted",
                adds.len()
            ));
        }
    }
    format!(
        "counter: {} adds ({} acked, final {}), {} reads",
        adds.len(),
        acked.len(),
        fresh.map_or("unknown".into(), |f| f.to_string()),
        reads.len()
    )
}

/// The bank's checks; `fresh` is the final state a fresh client read.
fn check_bank(run: &Run, fresh: Option<&BankState>, t: &mut Tally) -> String {
    let transfers = run.transfers.lock().unwrap().clone();
    let audits = run.audits.lock().unwrap().clone();
    let by_id: HashMap<u64, &Transfer> = transfers.iter().map(|tr| (tr.id, tr)).collect();
    let count = |o: TransferOutcome| transfers.iter().filter(|tr| tr.outcome == o).count();
    let unknown = count(TransferOutcome::Unknown);
    t.attempted += transfers.len() + audits.len();
    t.acked += transfers.len() - unknown + audits.iter().filter(|a| a.state.is_some()).count();
    t.unknown += unknown;
    let mut committed: Vec<&Transfer> = transfers
        .iter()
        .filter(|tr| tr.outcome == TransferOutcome::Committed)
        .collect();
    committed.sort_by_key(|tr| tr.response_ns);
    let total = OPENING_BALANCE * ACCOUNTS as i64;
    let mut phantoms = BTreeSet::new();
    let mut broken_invariant = 0;
    for a in &audits {
        let Some(state) = &a.state else { continue };
        let sum: i64 = state.balances.values().sum();
        if state.balances.len() != ACCOUNTS
            || sum != total
            || state.balances.values().any(|b| *b < 0)
        {
            broken_invariant += 1;
            t.violations.push(format!(
                "bank: invariant broken: audit by {} (invoked at {:.1} ms): {} accounts, total {sum} (expected {total}): {:?}",
                a.who,
                ms(a.invoke_ns),
                state.balances.len(),
                state.balances
            ));
        }
        // The balances are the opening ones plus the ledger's transfers.
        let mut expected = opening_balances();
        for (id, amount) in &state.ledger {
            match by_id.get(id) {
                Some(tr) if tr.amount == *amount => {
                    if matches!(
                        tr.outcome,
                        TransferOutcome::Refused | TransferOutcome::Aborted
                    ) && phantoms.insert(*id)
                    {
                        t.violations.push(format!(
                            "bank: phantom transfer: {id:#x} is in the ledger (audit by {}) but was reported {:?}",
                            a.who, tr.outcome
                        ));
                    }
                    *expected.get_mut(&account(tr.from)).unwrap() -= tr.amount;
                    *expected.get_mut(&account(tr.to)).unwrap() += tr.amount;
                }
                _ => {
                    if phantoms.insert(*id) {
                        t.violations.push(format!(
                            "bank: phantom transfer: the ledger (audit by {}) holds {id:#x} of {amount}, which was never attempted",
                            a.who
                        ));
                    }
                }
            }
        }
        if expected != state.balances || state.commits != state.ledger.len() as i64 {
            if state.commits > state.ledger.len() as i64 {
                t.duplicated += 1;
            } else {
                t.inconsistent += 1;
            }
            t.violations.push(format!(
                "bank: inconsistent audit: by {} (invoked at {:.1} ms), not one consistent state: balances {:?}, but the opening ones plus the {} transfers in its ledger make {:?}; commit counter {}",
                a.who,
                ms(a.invoke_ns),
                state.balances,
                state.ledger.len(),
                expected,
                state.commits
            ));
        }
        // Everything acknowledged before the audit began is in it.
        let before = committed.partition_point(|tr| tr.response_ns < a.invoke_ns);
        let missing: Vec<u64> = committed[..before]
            .iter()
            .filter(|tr| !state.ledger.contains_key(&tr.id))
            .map(|tr| tr.id)
            .collect();
        if !missing.is_empty() {
            t.stale += 1;
            t.violations.push(format!(
                "bank: stale audit: by {} (invoked at {:.1} ms): {} of the {before} transfers acknowledged before it began are missing from its ledger (first {:#x})",
                a.who,
                ms(a.invoke_ns),
                missing.len(),
                missing[0]
            ));
        }
    }
    t.phantom += phantoms.len();
    if broken_invariant > 0 {
        t.inconsistent += broken_invariant;
    }
    if let Some(state) = fresh {
        let lost: Vec<u64> = committed
            .iter()
            .filter(|tr| !state.ledger.contains_key(&tr.id))
            .map(|tr| tr.id)
            .collect();
        if !lost.is_empty() {
            t.lost += lost.len();
            t.violations.push(format!(
                "bank: lost transfers: {} acknowledged transfers are missing from the fresh client's final ledger (first {:#x})",
                lost.len(),
                lost[0]
            ));
        }
    }
    format!(
        "bank: {} transfers ({} committed, {} refused, {} aborted, {unknown} unknown; {} in the final ledger), {} audits",
        transfers.len(),
        committed.len(),
        count(TransferOutcome::Refused),
        count(TransferOutcome::Aborted),
        fresh.map_or("?".into(), |s| s.ledger.len().to_string()),
        audits.len()
    )
}

/// The map history's check.
fn check_map(run: &Run, t: &mut Tally) -> String {
    let history = run.map_ops.lock().unwrap().clone();
    let failed = history.iter().filter(|op| op.response_ns.is_none()).count();
    t.attempted += history.len();
    t.acked += history.len() - failed;
    t.unknown += history
        .iter()
        .filter(|op| op.response_ns.is_none() && !matches!(op.call, Call::Get(_)))
        .count();
    match lin::check(&history) {
        Ok(checked) => format!(
            "map: {} ops ({failed} failed), linearizable ({} search nodes)",
            history.len(),
            checked.nodes
        ),
        Err(v) => {
            if matches!(v.stuck.call, Call::Get(_)) && !v.undecided {
                t.stale += 1;
            } else {
                t.inconsistent += 1;
            }
            t.violations.push(format!("map: not linearizable: {v}"));
            format!(
                "map: {} ops ({failed} failed), NOT linearizable",
                history.len()
            )
        }
    }
}

// ---------------------------------------------------------------------
// A scenario
// ---------------------------------------------------------------------

/// The final state as one client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Final {
    counter: Option<i64>,
    bank: Option<BankState>,
    map: Option<BTreeMap<u32, u64>>,
}

async fn read_final(run: &Run, who: &str, client: usize, rt: &Runtime, objects: &Objects) -> Final {
    let who = format!("{who} (final)");
    Final {
        counter: read_counter(run, &who, &objects.counter).await,
        bank: audit(run, &who, rt, objects).await,
        map: read_map(run, client, &objects.map).await,
    }
}

/// How long one client may take to read the final state.
const FINAL_READ_SECS: u64 = 15;

/// Reads the final state from every long-lived runtime and `fresh`, all
/// at once (the log is quiet by now); a client that cannot within
/// `FINAL_READ_SECS` reads nothing.
async fn read_finals(
    run: &Run,
    round: usize,
    runtimes: &[Runtime],
    objects: &[Objects],
    fresh: Option<(&Runtime, &Objects)>,
) -> Vec<(String, Final)> {
    let mut readers: Vec<(String, usize, &Runtime, &Objects)> = runtimes
        .iter()
        .zip(objects)
        .enumerate()
        .map(|(r, (rt, o))| {
            let client = FINAL_MAP_CLIENT + 10 * round + r;
            (runtime_name(r).to_string(), client, rt, o)
        })
        .collect();
    if let Some((rt, o)) = fresh {
        let client = FINAL_MAP_CLIENT + 10 * round + 9;
        readers.push(("fresh".to_string(), client, rt, o));
    }
    futures_util::future::join_all(readers.into_iter().map(|(who, client, rt, o)| async move {
        let read = bounded(FINAL_READ_SECS, read_final(run, &who, client, rt, o)).await;
        let read = read.unwrap_or(Final {
            counter: None,
            bank: None,
            map: None,
        });
        (who, read)
    }))
    .await
}

/// What a scenario found.
struct Report {
    summary: String,
    tally: Tally,
    node_logs: String,
}

async fn run_scenario(fault: Fault, load: Load) -> Report {
    let mut cluster = start_cluster().await;
    let run = Arc::new(Run::new());
    let mut clients = Vec::new();
    let mut runtimes = Vec::new();
    for _ in 0..3 {
        let client = LogClient::connect(&cluster.config).await.unwrap();
        runtimes.push(Runtime::new(client.clone()));
        clients.push(client);
    }
    let objects: Vec<Objects> = runtimes.iter().map(Objects::open).collect();
    open_accounts(&runtimes[0], &objects[0]).await;
    // The observer reads once before the fault (so it holds the first
    // layout and warm views), then idles.
    observer_reads(&run, "before the fault", &runtimes[2], &objects[2]).await;
    let tasks = spawn_workloads(&run, &runtimes[..2], &objects[..2]);

    let mut violations = Vec::new();
    let mut notes = Vec::new();
    tokio::time::sleep(load.before).await;
    if !wait_for(LIVENESS_SECS, || {
        run.acked_since(Some(0), 0) > 0 && run.acked_since(Some(1), 0) > 0
    })
    .await
    {
        violations.push(format!(
            "LIVENESS: runtimes A and B did not both acknowledge an update within {LIVENESS_SECS} s before any fault"
        ));
    }

    // When the fault took effect: set again right after the signal, since
    // `signal` runs `kill` as a child process, which takes milliseconds.
    let mut fault_ns = run.now();
    let mut layout_after: Option<Layout> = None;
    let mut seals: Vec<Seal> = Vec::new();
    let faulted: Result<(), String> = async {
        if !violations.is_empty() {
            return Err("no fault injected: the cluster made no progress".into());
        }
        match fault {
            Fault::KillHeadAndSequencer | Fault::KillMiddle | Fault::KillTail => {
                let k = match fault {
                    Fault::KillHeadAndSequencer => 1,
                    Fault::KillMiddle => 2,
                    _ => 3,
                };
                cluster.nodes[k - 1].child.kill().unwrap();
                fault_ns = run.now();
                let layout = wait_removed(&cluster.config, &format!("n{k}")).await?;
                notes.push(format!(
                    "n{k} removed {:.0} ms after the kill",
                    ms(run.now() - fault_ns)
                ));
                layout_after = Some(layout);
            }
            Fault::PauseSequencer => {
                cluster.nodes[0].signal("STOP");
                fault_ns = run.now();
                let removed = wait_removed(&cluster.config, "n1").await;
                let removed_ns = run.now();
                let acked_b = removed.is_ok()
                    && wait_for(LIVENESS_SECS, || {
                        run.acked_since(Some(1), removed_ns) >= ACKS_WHILE_STOPPED
                    })
                    .await;
                let stopped_for = Duration::from_nanos(run.now() - fault_ns);
                tokio::time::sleep(STOP_MIN.saturating_sub(stopped_for)).await;
                cluster.nodes[0].signal("CONT");
                let cont_ns = run.now();
                layout_after = Some(removed?);
                if !acked_b {
                    return Err(format!(
                        "LIVENESS: B did not acknowledge {ACKS_WHILE_STOPPED} updates within {LIVENESS_SECS} s of n1's removal"
                    ));
                }
                notes.push(format!(
                    "n1 removed {:.0} ms after SIGSTOP, SIGCONT after {:.0} ms ({} updates acknowledged by B after the removal)",
                    ms(removed_ns - fault_ns),
                    ms(cont_ns - fault_ns),
                    run.acked_since(Some(1), removed_ns)
                ));
                // Right after SIGCONT: each long-lived runtime reads the
                // counter; each must see every add acknowledged before its
                // read began (checked with every other read below, and
                // printed here).
                let epochs = |clients: &[LogClient]| {
                    clients
                        .iter()
                        .enumerate()
                        .map(|(i, c)| format!("{} {}", runtime_name(i), c.layout().epoch))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let epochs_before = epochs(&clients);
                let reads = futures_util::future::join3(
                    read_counter(&run, "A after SIGCONT", &objects[0].counter),
                    read_counter(&run, "B after SIGCONT", &objects[1].counter),
                    read_counter(&run, "observer after SIGCONT", &objects[2].counter),
                )
                .await;
                notes.push(format!(
                    "the clients' layout epochs before these reads: {epochs_before}; after: {}",
                    epochs(&clients)
                ));
                let recorded = run.counter_reads.lock().unwrap().clone();
                let adds = run.adds.lock().unwrap().clone();
                for (who, value) in [
                    ("A after SIGCONT", reads.0),
                    ("B after SIGCONT", reads.1),
                    ("observer after SIGCONT", reads.2),
                ] {
                    let read = recorded.iter().rev().find(|r| r.who == who).unwrap();
                    let before: Vec<i64> = adds
                        .iter()
                        .filter(|a| a.response_ns < read.invoke_ns)
                        .filter_map(|a| a.value)
                        .collect();
                    notes.push(format!(
                        "{who}: counter {} ({} adds acknowledged before the read began, highest value {})",
                        value.map_or("read failed".into(), |v| v.to_string()),
                        before.len(),
                        before.iter().max().copied().unwrap_or(0)
                    ));
                }
            }
            Fault::SealLoop => {
                let stop = Arc::new(AtomicBool::new(false));
                let task = tokio::spawn(seal_loop(run.clone(), cluster.config.clone(), stop.clone()));
                tokio::time::sleep(load.seals).await;
                stop.store(true, Ordering::SeqCst);
                seals = bounded(30, task)
                    .await
                    .ok_or_else(|| "the seal loop did not stop within 30 s".to_string())?
                    .unwrap();
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = faulted {
        violations.push(e);
    }

    // The cluster serves again, within the liveness bound.
    let since = match fault {
        Fault::SealLoop => seals.iter().map(|s| s.0).max().unwrap_or(fault_ns),
        _ => fault_ns,
    };
    let mut first_ack_ms = None;
    if violations.is_empty() {
        if wait_for(LIVENESS_SECS, || run.first_ack_since(since).is_some()).await {
            first_ack_ms = run.first_ack_since(fault_ns).map(|r| ms(r - fault_ns));
            observer_reads(&run, "after the fault", &runtimes[2], &objects[2]).await;
            tokio::time::sleep(load.after).await;
        } else {
            violations.push(format!(
                "LIVENESS: no update invoked after the fault was acknowledged within {LIVENESS_SECS} s"
            ));
        }
    }

    // Stop the load.
    run.stop.store(true, Ordering::SeqCst);
    let stop_secs = OPERATION_TIMEOUT_MS / 1000 * 3 + 10;
    let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
    let joined = bounded(stop_secs, futures_util::future::join_all(tasks)).await;
    match joined {
        Some(results) => {
            for r in results {
                if let Err(e) = r {
                    violations.push(format!("a workload task panicked: {e}"));
                }
            }
        }
        None => {
            violations.push(format!(
                "LIVENESS: the workload tasks did not stop within {stop_secs} s"
            ));
            // Nothing may write while the final state is read.
            for task in &aborts {
                task.abort();
            }
        }
    }

    // The final state, from every long-lived runtime and a fresh client.
    let fresh = match bounded(LIVENESS_SECS, LogClient::connect(&cluster.config)).await {
        Some(Ok(client)) => Some(client),
        Some(Err(e)) => {
            violations.push(format!("a fresh client cannot connect: {e}"));
            None
        }
        None => {
            violations.push(format!(
                "LIVENESS: a fresh client did not connect within {LIVENESS_SECS} s"
            ));
            None
        }
    };
    let fresh_rt = fresh.as_ref().map(|c| Runtime::new(c.clone()));
    let fresh_objects = fresh_rt.as_ref().map(Objects::open);
    let fresh_pair = fresh_rt.as_ref().zip(fresh_objects.as_ref());
    let mut finals = read_finals(&run, 0, &runtimes, &objects, fresh_pair).await;
    let disagree = |finals: &[(String, Final)]| finals.iter().any(|(_, f)| f != &finals[0].1);
    if disagree(&finals) && run.errors.lock().unwrap().1 > 0 {
        // Calls failed: their outcome is unknown, and an update that
        // failed may still land late (a write completed by a reader).
        // Read everything again once the log is quiet.
        notes.push(
            "the final reads disagreed with calls of unknown outcome; read again after 1 s".into(),
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        finals = read_finals(&run, 1, &runtimes, &objects, fresh_pair).await;
    }
    for (who, f) in &finals {
        if f.counter.is_none() || f.bank.is_none() || f.map.is_none() {
            violations.push(format!(
                "{who} could not read the final state (an error, or no answer within {FINAL_READ_SECS} s): {f:?}"
            ));
        }
    }
    if disagree(&finals) {
        let mut text = String::from("the clients disagree on the final state:");
        for (who, f) in &finals {
            text.push_str(&format!(
                "\n    {who}: counter {:?}, ledger of {:?} transfers, commit counter {:?}, balances {:?}, map {:?}",
                f.counter,
                f.bank.as_ref().map(|b| b.ledger.len()),
                f.bank.as_ref().map(|b| b.commits),
                f.bank.as_ref().map(|b| &b.balances),
                f.map
            ));
        }
        violations.push(text);
    }
    let fresh_final = finals
        .iter()
        .find(|(w, _)| w == "fresh")
        .map(|(_, f)| f.clone());

    // The checks.
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
    tally.violations.splice(0..0, violations);

    let mut extra = String::new();
    if fault == Fault::SealLoop {
        let done: Vec<u64> = seals
            .iter()
            .filter_map(|s| s.2.as_ref().ok().copied())
            .collect();
        let failed: Vec<&String> = seals.iter().filter_map(|s| s.2.as_ref().err()).collect();
        let mut gaps: Vec<f64> = seals
            .iter()
            .filter(|s| s.2.is_ok())
            .filter_map(|s| run.first_ack_since(s.0).map(|r| ms(r.saturating_sub(s.0))))
            .collect();
        gaps.sort_by(f64::total_cmp);
        extra = format!(
            "; seals: {} done (epochs {}..{}), {} failed{}; seal start -> first acked update: median {:.0} ms, max {:.0} ms",
            done.len(),
            done.first().copied().unwrap_or(0),
            done.last().copied().unwrap_or(0),
            failed.len(),
            failed.first().map_or(String::new(), |e| format!(" (first: {e})")),
            gaps.get(gaps.len() / 2).copied().unwrap_or(f64::NAN),
            gaps.last().copied().unwrap_or(f64::NAN),
        );
        if done.len() < SEALS_MIN {
            tally.violations.push(format!(
                "only {} seals completed (at least {SEALS_MIN} needed to test anything); failures: {failed:?}",
                done.len()
            ));
        }
    }
    let layout = match bounded(
        10,
        Reconfigurer::new(
            cluster.config.endpoint().unwrap(),
            cluster.config.layout_servers.clone(),
        )
        .current(),
    )
    .await
    {
        Some(Ok(l)) => describe_layout(&l),
        _ => layout_after
            .as_ref()
            .map_or("unknown".into(), describe_layout),
    };
    let errors = run.errors.lock().unwrap().clone();
    let summary = format!(
        "object_faults[{}]: ops attempted {}, acknowledged {}, unknown outcome {}, lost {}, duplicated {}, stale {}, phantom {}, inconsistent {}; fault -> first acknowledged update {}; {counter}; {bank}; {map}{extra}; layout at the end: {layout} (from {}); {}{}",
        fault.describe(),
        tally.attempted,
        tally.acked,
        tally.unknown,
        tally.lost,
        tally.duplicated,
        tally.stale,
        tally.phantom,
        tally.inconsistent,
        first_ack_ms.map_or("none".into(), |m| format!("{m:.0} ms")),
        describe_layout(&cluster.first),
        if notes.is_empty() { String::new() } else { format!("{}; ", notes.join("; ")) },
        if errors.1 == 0 {
            "no call failed".to_string()
        } else {
            format!("{} calls failed, e.g. {:?}", errors.1, errors.0)
        },
    );
    let node_logs = if tally.violations.is_empty() {
        String::new()
    } else {
        node_log_excerpt(&cluster.nodes)
    };
    for client in clients.iter().chain(fresh.iter()) {
        client.close();
    }
    Report {
        summary,
        tally,
        node_logs,
    }
}

/// The kind of a violation, for grouping: its words up to the first
/// one holding a digit or a quote (at most five).
fn violation_kind(text: &str) -> String {
    text.split_whitespace()
        .take_while(|w| {
            !w.chars()
                .any(|c| c.is_ascii_digit() || c == '"' || c == '(')
        })
        .take(5)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The violations grouped by kind: how many of each, and the first few.
fn grouped(violations: &[String]) -> String {
    let mut kinds: Vec<(String, Vec<&String>)> = Vec::new();
    for v in violations {
        let kind = violation_kind(v);
        match kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, list)) => list.push(v),
            None => kinds.push((kind, vec![v])),
        }
    }
    let mut out = String::new();
    for (kind, list) in &kinds {
        out.push_str(&format!("  {} x \"{kind} ...\":\n", list.len()));
        for v in list.iter().take(VIOLATIONS_SHOWN_PER_KIND) {
            out.push_str(&format!("    - {v}\n"));
        }
        if list.len() > VIOLATIONS_SHOWN_PER_KIND {
            out.push_str(&format!(
                "    ... and {} more\n",
                list.len() - VIOLATIONS_SHOWN_PER_KIND
            ));
        }
    }
    out
}

/// Runs `fault` once and prints its summary; the failure report if any
/// check failed.
async fn scenario(fault: Fault, load: Load) -> Result<(), String> {
    let _turn = TURN.lock().await;
    let started = std::time::Instant::now();
    let report = run_scenario(fault, load).await;
    eprintln!(
        "{} [{:.1} s]",
        report.summary,
        started.elapsed().as_secs_f64()
    );
    let t = &report.tally;
    let counts = (t.lost, t.duplicated, t.stale, t.phantom, t.inconsistent);
    if t.violations.is_empty() && counts == (0, 0, 0, 0, 0) {
        return Ok(());
    }
    Err(format!(
        "{}: {} violations (lost {}, duplicated {}, stale {}, phantom {}, inconsistent {}):\n{}node logs (warnings, errors, removals):\n{}",
        fault.describe(),
        t.violations.len(),
        t.lost,
        t.duplicated,
        t.stale,
        t.phantom,
        t.inconsistent,
        grouped(&t.violations),
        report.node_logs
    ))
}

/// Runs `fault` once and fails the test on any violation.
async fn check_scenario(fault: Fault) {
    if let Err(report) = scenario(fault, LOAD).await {
        panic!("{report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_head_and_active_sequencer_loses_nothing() {
    check_scenario(Fault::KillHeadAndSequencer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_of_the_active_sequencer_serves_no_stale_reads_after_sigcont() {
    check_scenario(Fault::PauseSequencer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_middle_chain_member_loses_nothing() {
    check_scenario(Fault::KillMiddle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_chain_tail_loses_nothing() {
    check_scenario(Fault::KillTail).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seal_reconfigurations_in_a_loop_change_no_result() {
    check_scenario(Fault::SealLoop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: every fault 3 times with 15 s of load (about 5 minutes)"]
async fn soak_every_fault_repeatedly() {
    // Every run goes on after a failure; the test fails at the end,
    // listing every failed run.
    let mut failed = Vec::new();
    let mut runs = 0;
    for _ in 0..3 {
        for fault in [
            Fault::KillHeadAndSequencer,
            Fault::PauseSequencer,
            Fault::KillMiddle,
            Fault::KillTail,
            Fault::SealLoop,
        ] {
            runs += 1;
            if let Err(report) = scenario(fault, SOAK).await {
                eprintln!("{report}");
                failed.push(fault.describe());
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {runs} runs failed: {failed:?}",
        failed.len()
    );
}
