//! The object workloads of the fault tests (`object_faults`, `nemesis`):
//! what a run records, the workloads of counter, bank (with its ledger),
//! map and queue on long-lived `smr` runtimes, and their checks (moved
//! here from `tests/object_faults.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corfu::objects::{ReplicatedCounter, ReplicatedMap, ReplicatedQueue};
use corfu::smr::{Error, Runtime};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::linearizability::{self as lin, Call, Clock, Operation};

pub const COUNTER_ADDERS: usize = 3;
pub const COUNTER_READERS: usize = 1;
pub const TRANSFERERS: usize = 3;
pub const AUDITORS: usize = 1;
pub const MAP_TASKS: usize = 3;
pub const ACCOUNTS: usize = 5;
pub const OPENING_BALANCE: i64 = 1_000;
pub const MAP_KEYS: u32 = 4;

/// Violations of one kind printed in a failure message (all are counted).
pub const VIOLATIONS_SHOWN_PER_KIND: usize = 4;

// ---------------------------------------------------------------------
// What a run records
// ---------------------------------------------------------------------

/// An `add_and_get(1)`: the value it returned if acknowledged.
#[derive(Debug, Clone)]
pub struct Add {
    pub runtime: usize,
    pub invoke_ns: u64,
    pub response_ns: u64,
    pub value: Option<i64>,
}

/// A linearizable read of the counter.
#[derive(Debug, Clone)]
pub struct CounterRead {
    pub who: String,
    pub invoke_ns: u64,
    pub response_ns: u64,
    pub value: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferOutcome {
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
pub struct Transfer {
    pub id: u64,
    pub from: usize,
    pub to: usize,
    pub amount: i64,
    pub response_ns: u64,
    pub outcome: TransferOutcome,
}

/// One consistent snapshot of the bank (a read-only transaction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankState {
    pub balances: BTreeMap<String, i64>,
    pub ledger: BTreeMap<u64, i64>,
    pub commits: i64,
}

#[derive(Debug, Clone)]
pub struct Audit {
    pub who: String,
    pub invoke_ns: u64,
    pub state: Option<BankState>,
}

/// Everything a scenario's clients did.
pub struct Run {
    pub clock: Clock,
    pub stop: AtomicBool,
    pub adds: Mutex<Vec<Add>>,
    pub counter_reads: Mutex<Vec<CounterRead>>,
    pub transfers: Mutex<Vec<Transfer>>,
    pub audits: Mutex<Vec<Audit>>,
    pub map_ops: Mutex<Vec<Operation<u32, u64>>>,
    /// (runtime, invoke_ns, response_ns) of every acknowledged update.
    pub updates: Mutex<Vec<(usize, u64, u64)>>,
    /// Distinct error messages (the first few) and how many errors in all.
    pub errors: Mutex<(Vec<String>, usize)>,
    /// Every queue push: the item and whether it was acknowledged.
    pub queue_pushes: Mutex<Vec<(u64, bool)>>,
    /// Every queue pop: what it took (`Some(None)`: the queue was empty),
    /// `None` if it failed (an unknown outcome: it may have taken an item).
    pub queue_pops: Mutex<Vec<Option<Option<u64>>>>,
}

/// Distinct error messages kept for the report.
pub const ERRORS_KEPT_MAX: usize = 6;

impl Run {
    pub fn new() -> Run {
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
            queue_pushes: Mutex::default(),
            queue_pops: Mutex::default(),
        }
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    pub fn now(&self) -> u64 {
        self.clock.now_ns()
    }

    pub fn error(&self, what: &str, e: &Error) {
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

    pub fn acked_update(&self, runtime: usize, invoke_ns: u64, response_ns: u64) {
        self.updates
            .lock()
            .unwrap()
            .push((runtime, invoke_ns, response_ns));
    }

    /// Acknowledged updates of `runtime` (any, if `None`) invoked at or
    /// after `since_ns`.
    pub fn acked_since(&self, runtime: Option<usize>, since_ns: u64) -> usize {
        self.updates
            .lock()
            .unwrap()
            .iter()
            .filter(|(r, invoke, _)| *invoke >= since_ns && runtime.is_none_or(|x| x == *r))
            .count()
    }

    /// The first acknowledgement of an update invoked at or after
    /// `since_ns`.
    pub fn first_ack_since(&self, since_ns: u64) -> Option<u64> {
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
pub struct Objects {
    pub counter: ReplicatedCounter,
    pub bank: ReplicatedMap<String, i64>,
    pub ledger: ReplicatedMap<u64, i64>,
    pub commits: ReplicatedCounter,
    pub map: ReplicatedMap<u32, u64>,
}

impl Objects {
    pub fn open(rt: &Runtime) -> Objects {
        Objects {
            counter: rt.open("counter").unwrap(),
            bank: rt.open("bank").unwrap(),
            ledger: rt.open("bank-ledger").unwrap(),
            commits: rt.open("bank-commits").unwrap(),
            map: rt.open("kv").unwrap(),
        }
    }
}

pub fn account(i: usize) -> String {
    format!("acct-{i}")
}

pub fn opening_balances() -> BTreeMap<String, i64> {
    (0..ACCOUNTS)
        .map(|i| (account(i), OPENING_BALANCE))
        .collect()
}

/// Opens every account in one transaction (before any fault).
pub async fn open_accounts(rt: &Runtime, objects: &Objects) {
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
pub async fn transfer(
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
pub async fn read_bank(rt: &Runtime, objects: &Objects) -> Result<BankState, Error> {
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

pub async fn counter_adder(run: Arc<Run>, runtime: usize, objects: Objects) {
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
pub async fn read_counter(run: &Run, who: &str, counter: &ReplicatedCounter) -> Option<i64> {
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

pub async fn counter_reader(run: Arc<Run>, who: String, objects: Objects) {
    while !run.stopped() {
        read_counter(&run, &who, &objects.counter).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub async fn transferer(run: Arc<Run>, runtime: usize, task: usize, rt: Runtime, objects: Objects) {
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
pub async fn audit(run: &Run, who: &str, rt: &Runtime, objects: &Objects) -> Option<BankState> {
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

pub async fn auditor(run: Arc<Run>, who: String, rt: Runtime, objects: Objects) {
    while !run.stopped() {
        audit(&run, &who, &rt, &objects).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A value no other map operation of the run writes.
pub fn unique_value(client: usize, i: u64) -> u64 {
    ((client as u64) << 40) | i
}

pub async fn map_worker(run: Arc<Run>, runtime: usize, client: usize, objects: Objects) {
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
pub const FINAL_MAP_CLIENT: usize = 1_000;

/// A linearizable read of the whole map, recorded as one `Get` per key
/// (each linearized at the snapshot's point, within the call).
pub async fn read_map(
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
pub fn spawn_workloads(
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

pub fn runtime_name(r: usize) -> &'static str {
    ["A", "B", "observer"][r]
}

/// The observer's reads (counter, bank, map), recorded like the others.
pub async fn observer_reads(run: &Run, label: &str, rt: &Runtime, objects: &Objects) {
    let who = format!("observer {label}");
    let started = std::time::Instant::now();
    read_counter(run, &who, &objects.counter).await;
    let counter = started.elapsed();
    audit(run, &who, rt, objects).await;
    let bank = started.elapsed();
    read_map(run, FINAL_MAP_CLIENT - 1, &objects.map).await;
    let map = started.elapsed();
    if map > Duration::from_secs(2) {
        eprintln!(
            "{who}: slow reads: counter {} ms, bank {} ms, map {} ms",
            counter.as_millis(),
            (bank - counter).as_millis(),
            (map - bank).as_millis()
        );
    }
}

/// Waits up to `secs` for `cond`, polling every 5 ms.
pub async fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
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
pub async fn bounded<F: Future>(secs: u64, fut: F) -> Option<F::Output> {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .ok()
}

// ---------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------

#[derive(Debug, Default)]
pub struct Tally {
    pub attempted: usize,
    pub acked: usize,
    pub unknown: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub stale: usize,
    pub phantom: usize,
    pub inconsistent: usize,
    pub violations: Vec<String>,
}

pub fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// The counter's checks; `fresh` is the final value a fresh client read.
/// Returns a summary fragment.
pub fn check_counter(run: &Run, fresh: Option<i64>, t: &mut Tally) -> String {
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
pub fn check_bank(run: &Run, fresh: Option<&BankState>, t: &mut Tally) -> String {
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
pub fn check_map(run: &Run, t: &mut Tally) -> String {
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

/// The final state as one client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Final {
    pub counter: Option<i64>,
    pub bank: Option<BankState>,
    pub map: Option<BTreeMap<u32, u64>>,
}

pub async fn read_final(
    run: &Run,
    who: &str,
    client: usize,
    rt: &Runtime,
    objects: &Objects,
) -> Final {
    let who = format!("{who} (final)");
    Final {
        counter: read_counter(run, &who, &objects.counter).await,
        bank: audit(run, &who, rt, objects).await,
        map: read_map(run, client, &objects.map).await,
    }
}

/// How long one client may take to read the final state.
pub const FINAL_READ_SECS: u64 = 15;

/// Reads the final state from every long-lived runtime and `fresh`, all
/// at once (the log is quiet by now); a client that cannot within
/// `FINAL_READ_SECS` reads nothing.
pub async fn read_finals(
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

/// The kind of a violation, for grouping: its words up to the first
/// one holding a digit or a quote (at most five).
pub fn violation_kind(text: &str) -> String {
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
pub fn grouped(violations: &[String]) -> String {
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

// ---------------------------------------------------------------------
// The queue
// ---------------------------------------------------------------------

/// The queue of the queue workload.
pub fn open_queue(rt: &Runtime) -> ReplicatedQueue<u64> {
    rt.open("queue").unwrap()
}

/// Pushes items no other push of the run writes, one at a time.
pub async fn queue_pusher(run: Arc<Run>, runtime: usize, task: usize, queue: ReplicatedQueue<u64>) {
    let mut i: u64 = 0;
    while !run.stopped() {
        i += 1;
        let item = ((runtime as u64) << 48) | ((task as u64) << 32) | i;
        let invoke_ns = run.now();
        let result = queue.push(item).await;
        let response_ns = run.now();
        match &result {
            Ok(_) => run.acked_update(runtime, invoke_ns, response_ns),
            Err(e) => run.error("queue push", e),
        }
        run.queue_pushes
            .lock()
            .unwrap()
            .push((item, result.is_ok()));
    }
}

/// Pops, one at a time (pausing a little on an empty queue).
pub async fn queue_popper(run: Arc<Run>, runtime: usize, queue: ReplicatedQueue<u64>) {
    while !run.stopped() {
        let invoke_ns = run.now();
        let result = queue.pop().await;
        let response_ns = run.now();
        match &result {
            Ok(_) => run.acked_update(runtime, invoke_ns, response_ns),
            Err(e) => run.error("queue pop", e),
        }
        let empty = matches!(result, Ok(None));
        run.queue_pops.lock().unwrap().push(result.ok());
        if empty {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The queue's exactly-once check; `remaining` is what a fresh client
/// reads in the queue at the end. Every item taken by an acknowledged pop
/// was pushed and is taken once, and is not still in the queue; every
/// acknowledged push was taken or is still there, except for as many
/// items as pops failed (an unknown outcome: such a pop may have taken
/// one); nothing is in the queue that was not pushed, or twice.
pub fn check_queue(run: &Run, remaining: Option<&[u64]>, t: &mut Tally) -> String {
    let pushes = run.queue_pushes.lock().unwrap().clone();
    let pops = run.queue_pops.lock().unwrap().clone();
    let failed_pushes = pushes.iter().filter(|(_, acked)| !acked).count();
    let failed_pops = pops.iter().filter(|p| p.is_none()).count();
    t.attempted += pushes.len() + pops.len();
    t.acked += pushes.len() - failed_pushes + pops.len() - failed_pops;
    t.unknown += failed_pushes + failed_pops;
    let pushed: HashMap<u64, bool> = pushes.iter().copied().collect();
    let mut taken: HashMap<u64, usize> = HashMap::new();
    for item in pops.iter().flatten().flatten() {
        *taken.entry(*item).or_default() += 1;
    }
    for (item, n) in &taken {
        if *n > 1 {
            t.duplicated += n - 1;
            t.violations
                .push(format!("queue: item {item:#x} was popped {n} times"));
        }
        if !pushed.contains_key(item) {
            t.phantom += 1;
            t.violations
                .push(format!("queue: item {item:#x} was popped but never pushed"));
        }
    }
    let mut left = BTreeSet::new();
    if let Some(remaining) = remaining {
        for item in remaining {
            if !left.insert(*item) {
                t.duplicated += 1;
                t.violations
                    .push(format!("queue: item {item:#x} is in the final queue twice"));
            }
            if taken.contains_key(item) {
                t.duplicated += 1;
                t.violations.push(format!(
                    "queue: item {item:#x} was popped and is still in the final queue"
                ));
            }
            if !pushed.contains_key(item) {
                t.phantom += 1;
                t.violations.push(format!(
                    "queue: item {item:#x} is in the final queue but was never pushed"
                ));
            }
        }
        let missing: Vec<u64> = pushes
            .iter()
            .filter(|(item, acked)| *acked && !taken.contains_key(item) && !left.contains(item))
            .map(|(item, _)| *item)
            .collect();
        if missing.len() > failed_pops {
            t.lost += missing.len() - failed_pops;
            t.violations.push(format!(
                "queue: lost items: {} acknowledged pushes were neither popped nor left in the final queue, and only {failed_pops} pops failed (first {:#x})",
                missing.len(),
                missing[0]
            ));
        }
    }
    format!(
        "queue: {} pushes ({failed_pushes} failed), {} pops ({} took an item, {failed_pops} failed), {} left",
        pushes.len(),
        pops.len(),
        pops.iter().flatten().flatten().count(),
        remaining.map_or("?".into(), |r| r.len().to_string())
    )
}
