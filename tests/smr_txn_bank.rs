//! Transactions over a real 3-node cluster (QUIC on loopback): a bank of
//! accounts in one `ReplicatedMap<String, i64>`, two runtimes with their
//! own log clients (as two processes would be).
//!
//! 1. Transfers between disjoint accounts, one after another, never
//!    abort: each commits at its first attempt (an abort needs a
//!    conflict). A transfer larger than the balance is refused by the
//!    transaction and changes nothing.
//! 2. Tasks in both runtimes transfer money concurrently between
//!    overlapping accounts (read both balances, refuse if insufficient,
//!    write both), while an auditor in each runtime reads every account
//!    in a transaction: every audit sums to the initial total and sees no
//!    negative balance.
//! 3. Finally both runtimes hold the same balances, equal to the initial
//!    ones plus exactly the transfers reported committed (no lost update,
//!    no phantom one).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corfu::core::client::LogClient;
use corfu::local::{LocalCluster, LocalOptions};
use corfu::objects::ReplicatedMap;
use corfu::smr::{Error, Runtime};

const ACCOUNTS: usize = 6;
const INITIAL: i64 = 1_000;
const TASKS_PER_RUNTIME: usize = 3;
const ROUNDS: usize = 15;

type Bank = ReplicatedMap<String, i64>;

async fn within<F: Future>(secs: u64, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: did not finish within {secs} s"),
    }
}

fn account(i: usize) -> String {
    format!("acct-{i}")
}

/// Moves `amount` from `from` to `to` in one transaction; `Ok(true)` if it
/// committed, `Ok(false)` if the balance was insufficient (nothing
/// written). `attempts` counts the runs of the body.
async fn transfer(
    rt: &Runtime,
    bank: &Bank,
    from: &str,
    to: &str,
    amount: i64,
    attempts: &AtomicU32,
) -> Result<bool, Error> {
    let (from, to) = (from.to_string(), to.to_string());
    let (from, to) = (&from, &to);
    rt.transaction(|tx| async move {
        attempts.fetch_add(1, Ordering::SeqCst);
        let a = bank.tx_get(&tx, from).await?.unwrap_or(0);
        let b = bank.tx_get(&tx, to).await?.unwrap_or(0);
        if a < amount {
            return Ok(false);
        }
        bank.tx_insert(&tx, from.clone(), a - amount)?;
        bank.tx_insert(&tx, to.clone(), b + amount)?;
        Ok(true)
    })
    .await
}

/// Reads every account in one (read-only) transaction.
async fn audit(rt: &Runtime, bank: &Bank) -> BTreeMap<String, i64> {
    rt.transaction(|tx| async move { bank.tx_snapshot(&tx).await })
        .await
        .unwrap()
        .into_iter()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_keep_the_total_and_lose_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(&dir.path().join("cluster"), 3, LocalOptions::default())
        .await
        .unwrap();
    let config = cluster.client_config();
    let runtimes = [
        Runtime::new(LogClient::connect(&config).await.unwrap()),
        Runtime::new(LogClient::connect(&config).await.unwrap()),
    ];
    let bank: Bank = runtimes[0].open("bank").unwrap();
    // A transaction on an empty log (it has no address to take as its
    // snapshot yet: the runtime appends an empty entry to give it one).
    assert!(audit(&runtimes[0], &bank).await.is_empty());
    for i in 0..ACCOUNTS {
        bank.insert(account(i), INITIAL).await.unwrap();
    }
    let total = INITIAL * ACCOUNTS as i64;
    let mut model: BTreeMap<String, i64> = (0..ACCOUNTS).map(|i| (account(i), INITIAL)).collect();

    // 1. Disjoint transfers in sequence: no conflict, so no abort.
    within(60, "sequential transfers", async {
        for (n, (from, to)) in [(0, 1), (2, 3), (4, 5), (1, 0), (3, 2)]
            .into_iter()
            .enumerate()
        {
            let rt = &runtimes[n % 2];
            let bank: Bank = rt.open("bank").unwrap();
            let attempts = AtomicU32::new(0);
            let before = rt.transaction_stats();
            let done = transfer(rt, &bank, &account(from), &account(to), 10, &attempts)
                .await
                .unwrap();
            assert!(done);
            let after = rt.transaction_stats();
            assert_eq!(
                after.aborts, before.aborts,
                "transfer {n} aborted without a conflict"
            );
            assert_eq!(after.commits, before.commits + 1);
            // The body runs once, or twice if a first read from behind the
            // tail missed (a rerun, not an abort).
            assert_eq!(
                attempts.load(Ordering::SeqCst) as u64,
                1 + after.reruns - before.reruns,
                "transfer {n}"
            );
            *model.get_mut(&account(from)).unwrap() -= 10;
            *model.get_mut(&account(to)).unwrap() += 10;
        }
        let attempts = AtomicU32::new(0);
        let before = runtimes[1].transaction_stats();
        let refused = transfer(
            &runtimes[1],
            &runtimes[1].open("bank").unwrap(),
            &account(0),
            &account(1),
            1_000_000,
            &attempts,
        )
        .await
        .unwrap();
        assert!(!refused, "an overdraft was not refused");
        let after = runtimes[1].transaction_stats();
        assert_eq!(after.aborts, before.aborts);
        assert_eq!(
            attempts.load(Ordering::SeqCst) as u64,
            1 + after.reruns - before.reruns
        );
        for rt in &runtimes {
            assert_eq!(audit(rt, &rt.open("bank").unwrap()).await, model);
        }
    })
    .await;

    // 2. Concurrent transfers between overlapping accounts, and audits.
    let stop = Arc::new(AtomicBool::new(false));
    let mut auditors = Vec::new();
    for rt in &runtimes {
        let (rt, stop) = (rt.clone(), stop.clone());
        auditors.push(tokio::spawn(async move {
            let bank: Bank = rt.open("bank").unwrap();
            let mut audits = 0u32;
            loop {
                let stopping = stop.load(Ordering::SeqCst);
                let seen = audit(&rt, &bank).await;
                assert_eq!(seen.len(), ACCOUNTS);
                assert_eq!(
                    seen.values().sum::<i64>(),
                    total,
                    "audit {audits}: {seen:?}"
                );
                assert!(seen.values().all(|v| *v >= 0), "negative balance: {seen:?}");
                audits += 1;
                if stopping {
                    return audits;
                }
            }
        }));
    }
    let mut workers = Vec::new();
    for (r, rt) in runtimes.iter().enumerate() {
        for t in 0..TASKS_PER_RUNTIME {
            let rt = rt.clone();
            workers.push(tokio::spawn(async move {
                let bank: Bank = rt.open("bank").unwrap();
                let me = r * TASKS_PER_RUNTIME + t;
                let mut committed = Vec::new();
                let (mut refused, mut aborted, mut runs) = (0u32, 0u32, 0u32);
                for i in 0..ROUNDS {
                    let from = account((me + i) % ACCOUNTS);
                    let to = account((me + 2 * i + 1) % ACCOUNTS);
                    if from == to {
                        continue;
                    }
                    // Some amounts exceed what an account can hold after a
                    // few transfers out: refusals happen too.
                    let amount = 50 + ((me * 37 + i * 101) % 400) as i64;
                    let attempts = AtomicU32::new(0);
                    match transfer(&rt, &bank, &from, &to, amount, &attempts).await {
                        Ok(true) => committed.push((from, to, amount)),
                        Ok(false) => refused += 1,
                        Err(Error::Aborted { attempts: n, .. }) => {
                            // Every attempt ran the body, and at most one
                            // more run read from behind the tail (a rerun).
                            let ran = attempts.load(Ordering::SeqCst);
                            assert!(ran == n || ran == n + 1, "{n} attempts, {ran} runs");
                            aborted += 1;
                        }
                        Err(e) => panic!("transfer failed: {e}"),
                    }
                    runs += attempts.load(Ordering::SeqCst);
                }
                (committed, refused, aborted, runs)
            }));
        }
    }
    let mut committed = Vec::new();
    let (mut refused, mut aborted, mut runs) = (0, 0, 0);
    within(300, "concurrent transfers", async {
        for worker in workers {
            let (c, r, a, n) = worker.await.unwrap();
            committed.extend(c);
            refused += r;
            aborted += a;
            runs += n;
        }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let mut audits = 0;
    within(60, "auditors", async {
        for auditor in auditors {
            audits += auditor.await.unwrap();
        }
    })
    .await;
    eprintln!(
        "committed {} transfers, refused {refused}, gave up on {aborted}, \
         {runs} attempts in all; {audits} audits",
        committed.len()
    );
    assert!(
        committed.len() >= TASKS_PER_RUNTIME * 2 * ROUNDS / 2,
        "too few transfers committed: {} (aborted {aborted})",
        committed.len()
    );
    assert!(audits >= 2);

    // 3. Both runtimes agree with the model of the committed transfers.
    for (from, to, amount) in &committed {
        *model.get_mut(from).unwrap() -= amount;
        *model.get_mut(to).unwrap() += amount;
    }
    for rt in &runtimes {
        let bank: Bank = rt.open("bank").unwrap();
        let seen: BTreeMap<String, i64> = bank.snapshot().await.unwrap().into_iter().collect();
        assert_eq!(seen, model, "a lost or phantom update");
    }
    cluster.shutdown().await;
}
