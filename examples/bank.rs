//! A bank on the shared log: money moves between accounts in transactions,
//! and the total never changes.
//!
//! The accounts are one `ReplicatedMap<String, i64>` (account -> balance).
//! Two runtimes, each with its own log client (as two processes would
//! be), run transfer tasks: a transfer is one `Runtime::transaction` that
//! reads both balances, refuses to overdraw (and then writes nothing), and
//! writes both. The sequencer refuses a commit if a balance it read was
//! written after its snapshot; the runtime then runs the transfer again
//! from a new snapshot. Meanwhile an auditor sums every balance in
//! read-only transactions (one consistent snapshot each, never aborted).
//!
//! The invariant, checked by the program itself: every audit, and the
//! final state seen by both runtimes, sums to the opening total with no
//! negative balance, and the final balances are exactly the opening ones
//! plus the transfers reported committed (no lost update, no phantom
//! one). It prints `invariant held` and exits 0, or names what broke and
//! exits 1.
//!
//! ```sh
//! cargo run --release --example bank                       # a 3-node cluster embedded in the process
//! cargo run --release --example bank -- --tasks 8 --duration-ms 10000
//! cargo run --release --example bank -- --cluster /tmp/corfu-demo/cluster.toml   # `corfu local up`
//! cargo run --release --example bank -- --help
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use corfu::core::client::LogClient;
use corfu::embedded::ClusterOrEmbedded;
use corfu::objects::ReplicatedMap;
use corfu::smr::{Error, Runtime};

/// Account name -> balance.
type Bank = ReplicatedMap<String, i64>;

/// How often the auditor prints an audit (every audit is checked).
const AUDIT_PRINT_INTERVAL_MS: u64 = 500;

/// How many violations of the invariant are printed (all are counted).
const VIOLATIONS_SHOWN_MAX: usize = 5;

/// Transfers between accounts in transactions over two runtimes, audited
/// concurrently; exits 1 if the total ever changes or a balance goes
/// negative.
#[derive(Parser, Debug)]
#[command(name = "bank")]
struct Args {
    /// Client config (cluster.toml) of a running cluster; without it a
    /// 3-node cluster is started inside this process, in a temporary
    /// directory.
    #[arg(long, value_name = "FILE")]
    cluster: Option<PathBuf>,
    /// Number of accounts (at least 2); fewer accounts, more conflicts.
    #[arg(long, default_value_t = 8)]
    accounts: usize,
    /// Opening balance of every account.
    #[arg(long, default_value_t = 1_000)]
    opening_balance: i64,
    /// Transfer tasks in each of the two runtimes.
    #[arg(long, default_value_t = 3)]
    tasks: usize,
    /// How long the transfer tasks run.
    #[arg(long, default_value_t = 3_000)]
    duration_ms: u64,
    /// Most transfers one task attempts (no limit but the duration if
    /// absent).
    #[arg(long)]
    transfers_per_task_max: Option<u64>,
    /// Seed of the random transfers (random if absent).
    #[arg(long)]
    seed: Option<u64>,
    /// Transfer with plain reads and writes instead of transactions, to
    /// watch the invariant break: audits see half-done transfers, and
    /// concurrent transfers overwrite each other's balances (exits 1).
    #[arg(long)]
    without_transactions: bool,
}

fn account(i: usize) -> String {
    format!("acct-{i:02}")
}

/// Moves `amount` from `from` to `to` in one transaction. `Ok(true)` once
/// committed, `Ok(false)` if `from` holds less than `amount` (nothing is
/// written then). `attempts` counts the runs of the body.
async fn transfer(
    rt: &Runtime,
    bank: &Bank,
    from: &String,
    to: &String,
    amount: i64,
    attempts: &AtomicU64,
) -> Result<bool, Error> {
    rt.transaction(|tx| async move {
        attempts.fetch_add(1, Ordering::Relaxed);
        let from_balance = bank.tx_get(&tx, from).await?.unwrap_or(0);
        let to_balance = bank.tx_get(&tx, to).await?.unwrap_or(0);
        if from_balance < amount {
            return Ok(false);
        }
        bank.tx_insert(&tx, from.clone(), from_balance - amount)?;
        bank.tx_insert(&tx, to.clone(), to_balance + amount)?;
        Ok(true)
    })
    .await
}

/// The wrong way, for `--without-transactions`: each read and write is
/// linearizable on its own, but nothing makes the four of them one step.
async fn transfer_without_transaction(
    bank: &Bank,
    from: &str,
    to: &str,
    amount: i64,
) -> Result<bool, Error> {
    let from_balance = bank.get(from).await?.unwrap_or(0);
    let to_balance = bank.get(to).await?.unwrap_or(0);
    if from_balance < amount {
        return Ok(false);
    }
    bank.insert(from.to_string(), from_balance - amount).await?;
    bank.insert(to.to_string(), to_balance + amount).await?;
    Ok(true)
}

/// What one transfer task did.
#[derive(Default)]
struct Tally {
    /// (from, to, amount) of every committed transfer.
    committed: Vec<(usize, usize, i64)>,
    /// Refused by the transaction: insufficient funds.
    refused: u64,
    /// Given up after every attempt conflicted.
    aborted: u64,
    /// Runs of transaction bodies, all transfers together.
    attempts: u64,
}

struct Plan {
    accounts: usize,
    amount_max: i64,
    deadline: Instant,
    transfers_max: u64,
    without_transactions: bool,
}

async fn transfer_task(
    rt: Runtime,
    bank: Bank,
    plan: Arc<Plan>,
    seed: u64,
) -> Result<Tally, Error> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tally = Tally::default();
    let mut transfers = 0;
    while Instant::now() < plan.deadline && transfers < plan.transfers_max {
        transfers += 1;
        let from = rng.random_range(0..plan.accounts);
        let to = (from + rng.random_range(1..plan.accounts)) % plan.accounts;
        let amount = rng.random_range(1..=plan.amount_max);
        let attempts = AtomicU64::new(0);
        let (from_name, to_name) = (account(from), account(to));
        let outcome = if plan.without_transactions {
            attempts.store(1, Ordering::Relaxed);
            transfer_without_transaction(&bank, &from_name, &to_name, amount).await
        } else {
            transfer(&rt, &bank, &from_name, &to_name, amount, &attempts).await
        };
        tally.attempts += attempts.load(Ordering::Relaxed);
        match outcome {
            Ok(true) => tally.committed.push((from, to, amount)),
            Ok(false) => tally.refused += 1,
            Err(Error::Aborted { .. }) => tally.aborted += 1,
            Err(e) => return Err(e),
        }
    }
    Ok(tally)
}

/// Checks one view of the bank; returns what is wrong with it, if
/// anything.
fn check(balances: &BTreeMap<String, i64>, accounts: usize, total: i64) -> Option<String> {
    let sum: i64 = balances.values().sum();
    let negative: Vec<_> = balances.iter().filter(|(_, b)| **b < 0).collect();
    if balances.len() != accounts {
        Some(format!("{} accounts, expected {accounts}", balances.len()))
    } else if sum != total {
        Some(format!("total {sum}, expected {total}"))
    } else if !negative.is_empty() {
        Some(format!("negative balances {negative:?}"))
    } else {
        None
    }
}

/// Audits until `stop` is set (and once more after): each audit reads
/// every balance in one read-only transaction. Returns how many audits
/// ran and what was wrong in any of them.
async fn auditor(
    rt: Runtime,
    bank: Bank,
    accounts: usize,
    total: i64,
    stop: Arc<AtomicBool>,
) -> Result<(u64, Vec<String>), Error> {
    let bank = &bank;
    let (mut audits, mut broken) = (0u64, Vec::new());
    let mut last_print: Option<Instant> = None;
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        let (snapshot, balances) = rt
            .transaction(|tx| async move {
                let balances = bank.tx_snapshot(&tx).await?;
                Ok((tx.snapshot(), balances))
            })
            .await?;
        let balances: BTreeMap<String, i64> = balances.into_iter().collect();
        audits += 1;
        let problem = check(&balances, accounts, total);
        let due = last_print
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(AUDIT_PRINT_INTERVAL_MS));
        let first_broken = problem.is_some() && broken.is_empty();
        if due || stopping || first_broken {
            last_print = Some(Instant::now());
            let (low, high) = (
                balances.values().min().copied().unwrap_or(0),
                balances.values().max().copied().unwrap_or(0),
            );
            println!(
                "audit {audits:>4} as of address {snapshot:>5}: total {} over {} accounts \
                 (lowest {low}, highest {high}) {}",
                balances.values().sum::<i64>(),
                balances.len(),
                problem
                    .as_deref()
                    .map_or("ok".to_string(), |p| format!("BROKEN: {p}")),
            );
        }
        if let Some(p) = problem {
            broken.push(format!("audit {audits} as of address {snapshot}: {p}"));
        }
        if stopping {
            return Ok((audits, broken));
        }
    }
}

async fn run(args: &Args, log: &ClusterOrEmbedded) -> anyhow::Result<Vec<String>> {
    let (runtimes, clients): (Vec<Runtime>, Vec<LogClient>) =
        vec![log.runtime().await?, log.runtime().await?]
            .into_iter()
            .unzip();
    // A name of its own, so runs against a long-lived cluster start afresh.
    let name = format!("bank-{:08x}", rand::random::<u32>());
    let bank: Bank = runtimes[0].open(&name)?;
    let total = args.opening_balance * args.accounts as i64;

    // Open every account in one transaction: nobody sees half a bank.
    let bank_ref = &bank;
    runtimes[0]
        .transaction(|tx| async move {
            for i in 0..args.accounts {
                bank_ref.tx_insert(&tx, account(i), args.opening_balance)?;
            }
            Ok(())
        })
        .await?;
    println!(
        "opened {} accounts of {} in map {name:?} (total {total}); {} transfer tasks in each of 2 runtimes for {} ms{}",
        args.accounts,
        args.opening_balance,
        args.tasks,
        args.duration_ms,
        if args.without_transactions {
            ", WITHOUT transactions"
        } else {
            ""
        }
    );

    let seed = args.seed.unwrap_or_else(rand::random);
    let plan = Arc::new(Plan {
        accounts: args.accounts,
        amount_max: (args.opening_balance / 2).max(1),
        deadline: Instant::now() + Duration::from_millis(args.duration_ms),
        transfers_max: args.transfers_per_task_max.unwrap_or(u64::MAX),
        without_transactions: args.without_transactions,
    });
    let stop = Arc::new(AtomicBool::new(false));
    let audit = tokio::spawn(auditor(
        runtimes[1].clone(),
        runtimes[1].open(&name)?,
        args.accounts,
        total,
        stop.clone(),
    ));
    let started = Instant::now();
    let mut workers = Vec::new();
    for (r, rt) in runtimes.iter().enumerate() {
        for t in 0..args.tasks {
            let task_seed = seed.wrapping_add((r * args.tasks + t) as u64);
            workers.push(tokio::spawn(transfer_task(
                rt.clone(),
                rt.open(&name)?,
                plan.clone(),
                task_seed,
            )));
        }
    }
    let mut tally = Tally::default();
    for worker in workers {
        let t = worker.await.context("a transfer task panicked")??;
        tally.committed.extend(t.committed);
        tally.refused += t.refused;
        tally.aborted += t.aborted;
        tally.attempts += t.attempts;
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let (audits, broken_audits) = audit.await.context("the auditor panicked")??;

    let transfers = tally.committed.len() as u64 + tally.refused + tally.aborted;
    println!(
        "transfers: {} committed, {} refused (insufficient funds), {} gave up after {} attempts; \
         {} attempts in all ({} reruns after a conflict); {:.0} transfers/s (seed {seed})",
        tally.committed.len(),
        tally.refused,
        tally.aborted,
        corfu::smr::TRANSACTION_RETRIES_DEFAULT + 1,
        tally.attempts,
        tally.attempts.saturating_sub(transfers),
        transfers as f64 / elapsed.as_secs_f64(),
    );
    println!(
        "audits: {audits}, each one consistent snapshot of every account; {} broken",
        broken_audits.len()
    );

    // Violations of the final state first, then those of the audits.
    let mut broken = Vec::new();
    // The final state: the same in both runtimes, and what the committed
    // transfers make of the opening balances.
    let mut expected: BTreeMap<String, i64> = (0..args.accounts)
        .map(|i| (account(i), args.opening_balance))
        .collect();
    for (from, to, amount) in &tally.committed {
        *expected.entry(account(*from)).or_default() -= amount;
        *expected.entry(account(*to)).or_default() += amount;
    }
    let mut views = Vec::new();
    for (r, rt) in runtimes.iter().enumerate() {
        let seen: BTreeMap<String, i64> = rt
            .open::<Bank>(&name)?
            .snapshot()
            .await?
            .into_iter()
            .collect();
        if let Some(p) = check(&seen, args.accounts, total) {
            broken.push(format!("final state in runtime {}: {p}", r + 1));
        }
        if seen != expected {
            broken.push(format!(
                "final state in runtime {} is not the opening balances plus the committed \
                 transfers: {seen:?}, expected {expected:?}",
                r + 1
            ));
        }
        views.push(seen);
    }
    let line: Vec<String> = views[0].iter().map(|(a, b)| format!("{a} {b}")).collect();
    println!(
        "final balances (runtime 1{}): {}",
        if views[0] == views[1] {
            ", the same in runtime 2"
        } else {
            "; runtime 2 differs"
        },
        line.join(", ")
    );
    if views[0] != views[1] {
        broken.push(format!(
            "the runtimes disagree: {:?} and {:?}",
            views[0], views[1]
        ));
    }
    for client in &clients {
        client.close();
    }
    broken.extend(broken_audits);
    Ok(broken)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();
    anyhow::ensure!(args.accounts >= 2, "--accounts must be at least 2");
    anyhow::ensure!(args.tasks >= 1, "--tasks must be at least 1");
    anyhow::ensure!(
        args.opening_balance >= 1,
        "--opening-balance must be at least 1"
    );
    args.opening_balance
        .checked_mul(args.accounts as i64)
        .context("--opening-balance times --accounts overflows")?;

    let log = ClusterOrEmbedded::open(args.cluster.as_deref()).await?;
    let outcome = run(&args, &log).await;
    log.shutdown().await;
    let broken = outcome?;
    if broken.is_empty() {
        println!("invariant held: every audit and the final state total the opening balance, no balance negative");
        Ok(())
    } else {
        for b in broken.iter().take(VIOLATIONS_SHOWN_MAX) {
            eprintln!("invariant broken: {b}");
        }
        if broken.len() > VIOLATIONS_SHOWN_MAX {
            eprintln!(
                "invariant broken: ... and {} more",
                broken.len() - VIOLATIONS_SHOWN_MAX
            );
        }
        std::process::exit(1);
    }
}
