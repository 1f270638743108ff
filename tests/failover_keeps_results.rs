//! A reconfiguration never changes a result (issue 14, item 1): addresses
//! the sealed sequencer granted are never granted again, so views, snapshots
//! and tails learnt before a seal stay true after it.
//!
//! Each test builds the interleaving deterministically on an in-process
//! cluster: tokens are taken from the sequencer directly and never written
//! (an append in flight at the seal), so the sequencer's next address `K`
//! is above the tail `T` the sealed log units report; then a `Seal`
//! reconfiguration runs at a chosen point. Before the fix the new sequencer
//! restarted at `T` and granted `[T, K)` again:
//! - a view synced past `T` skipped the entries regranted below its
//!   position (`a_view_past_the_sealed_tail_sees_updates_after_a_seal`);
//! - two transactions that read the same key before the seal both
//!   committed after it, one update lost
//!   (`transactions_that_read_before_a_seal_cannot_both_commit`);
//! - a reader that knew the old tail junk-filled addresses that were about
//!   to be granted again, so appends could not land
//!   (`a_reader_that_knew_the_old_tail_does_not_block_appends`).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use corfu::cluster::Shape;
use corfu::core::client::{HoleFillPolicy, LogClient, LogClientOptions};
use corfu::core::client_config::ClientConfig;
use corfu::core::reconfig::{Change, Reconfigurer};
use corfu::core::types::{Address, StreamId};
use corfu::core::wire::logunit::ReadOutcome;
use corfu::core::wire::sequencer::{SequencerRequest, SequencerResponse};
use corfu::core::wire::{Request, Response};
use corfu::objects::ReplicatedCounter;
use corfu::smr::Runtime;
use support::{local_cluster, within};
use tokio::sync::{Barrier, Notify};

/// Takes `count` addresses from the active sequencer for a stream nobody
/// reads, and never writes them: appends in flight when the seal comes.
/// Returns the sequencer's next address after the grant.
async fn tokens_in_flight(config: &ClientConfig, count: u32) -> Address {
    let log = LogClient::connect(config).await.unwrap();
    let layout = log.layout();
    let sequencer = layout.active_sequencer().unwrap();
    let endpoint = config.endpoint().unwrap();
    let request = Request::Sequencer(SequencerRequest::Token {
        count,
        streams: vec![StreamId::from_name("in flight")],
        condition: None,
    });
    match endpoint
        .peer(&sequencer.addr)
        .call(layout.epoch, request)
        .await
        .unwrap()
    {
        Response::Sequencer(SequencerResponse::Token { start, count, .. }) => {
            start + u64::from(count)
        }
        other => panic!("token: {other:?}"),
    }
}

async fn seal(config: &ClientConfig) {
    let engine = Reconfigurer::new(config.endpoint().unwrap(), config.layout_servers.clone());
    let done = within(20, "seal", engine.reconfigure(&Change::Seal))
        .await
        .unwrap();
    println!(
        "sealed: epoch {}, the new sequencer starts at {}",
        done.layout.epoch, done.tail
    );
}

async fn runtime(config: &ClientConfig) -> Runtime {
    Runtime::new(LogClient::connect(config).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_past_the_sealed_tail_sees_updates_after_a_seal() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = local_cluster(&dir, 3, Shape::new(1, 3)).await;
    let config = cluster.client_config();
    let here = runtime(&config).await;
    let there = runtime(&config).await;
    let mine: ReplicatedCounter = here.open("counter").unwrap();
    let theirs: ReplicatedCounter = there.open("counter").unwrap();
    theirs.add(1).await.unwrap();

    // Another stream's appends are in flight: the sequencer is past the
    // tail the units hold.
    let granted = tokens_in_flight(&config, 50).await;
    // A read-only transaction reads the counter at the log's tail: the
    // view is played up to `granted`, past the sealed tail.
    let seen = here
        .transaction(|tx| {
            let mine = mine.clone();
            async move { mine.tx_get(&tx).await }
        })
        .await
        .unwrap();
    assert_eq!(seen, 1);

    seal(&config).await;
    // Another runtime updates the counter after the seal.
    let at = theirs.add(10).await.unwrap();
    println!(
        "the update after the seal landed at {at} (the old sequencer had granted up to {granted})"
    );
    // The view that was past the old tail must see it.
    assert_eq!(
        mine.get().await.unwrap(),
        11,
        "an update after the seal was skipped"
    );
    // And its own update's outcome is known (it is not skipped either).
    assert_eq!(mine.add_and_get(100).await.unwrap(), 111);
    assert_eq!(theirs.get().await.unwrap(), 111);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_that_read_before_a_seal_cannot_both_commit() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = local_cluster(&dir, 3, Shape::new(1, 3)).await;
    let config = cluster.client_config();
    let runtimes = [runtime(&config).await, runtime(&config).await];
    let counters: Vec<ReplicatedCounter> = runtimes
        .iter()
        .map(|rt| rt.open("balance").unwrap())
        .collect();
    counters[0].add(100).await.unwrap();
    tokens_in_flight(&config, 50).await;

    // Both transactions read the balance, then wait until both have read
    // and the seal is done; then each writes what it read plus one.
    let read_both = Arc::new(Barrier::new(3));
    let sealed = Arc::new(Notify::new());
    let attempts = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (rt, counter) in runtimes.iter().zip(&counters) {
        let (rt, counter) = (rt.clone(), counter.clone());
        let (read_both, sealed, attempts) = (read_both.clone(), sealed.clone(), attempts.clone());
        tasks.push(tokio::spawn(async move {
            rt.transaction(|tx| {
                let (counter, read_both, sealed, attempts) = (
                    counter.clone(),
                    read_both.clone(),
                    sealed.clone(),
                    attempts.clone(),
                );
                async move {
                    let balance = counter.tx_get(&tx).await?;
                    if attempts.fetch_add(1, Ordering::SeqCst) < 2 {
                        // The first two attempts (one each) meet here.
                        let notified = sealed.notified();
                        read_both.wait().await;
                        notified.await;
                    }
                    counter.tx_set(&tx, balance + 1).await?;
                    Ok(balance)
                }
            })
            .await
        }));
    }
    read_both.wait().await;
    seal(&config).await;
    sealed.notify_waiters();
    let mut committed = 0;
    for task in tasks {
        if within(30, "transaction", task).await.unwrap().is_ok() {
            committed += 1;
        }
    }
    let fresh: ReplicatedCounter = runtime(&config).await.open("balance").unwrap();
    let balance = fresh.get().await.unwrap();
    println!(
        "{committed} transactions committed in {} attempts; balance {balance}",
        attempts.load(Ordering::SeqCst)
    );
    assert_eq!(
        balance,
        100 + committed,
        "each committed increment must count (a lost update otherwise)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_knew_the_old_tail_does_not_block_appends() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = local_cluster(&dir, 3, Shape::new(1, 3)).await;
    let mut config = cluster.client_config();
    let writer = LogClient::connect(&config).await.unwrap();
    let stream = StreamId::from_name("appends");
    let before = writer.append(b"before".to_vec(), &[stream]).await.unwrap();
    let granted = tokens_in_flight(&config, 20).await;
    // A reader that completes holes at once learns the tail before the
    // seal.
    config.client = LogClientOptions {
        hole_fill: HoleFillPolicy::Immediately,
        ..LogClientOptions::default()
    };
    let reader = LogClient::connect(&config).await.unwrap();
    assert_eq!(reader.tail().await.unwrap(), granted);

    seal(&config).await;
    // It reads the addresses below the tail it knows: after the seal they
    // are holes that will never be written.
    for address in before + 1..granted {
        let outcome = reader.read(address).await.unwrap();
        assert_eq!(outcome, ReadOutcome::Junk, "address {address}");
    }
    // Appends still land, each once, and read back.
    for i in 0..5u8 {
        let address = writer.append(vec![i], &[stream]).await.unwrap();
        assert!(
            address >= granted,
            "address {address} was granted before the seal (up to {granted})"
        );
        match reader.read(address).await.unwrap() {
            ReadOutcome::Data(entry) => assert_eq!(entry.payload, vec![i]),
            other => panic!("address {address}: {other:?}"),
        }
    }
}

/// Item 3: Paxos majorities are counted over the layout servers the
/// committed layout names, not over a client config's list. An engine
/// configured with one of three layout servers used to decide epochs on
/// that server alone (a "majority" of one), so the other servers never
/// learnt them and another such engine could decide another layout for
/// the same epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorums_come_from_the_layout_not_the_config() {
    use corfu::core::layout_service::proposer::fetch_layout;

    let dir = tempfile::tempdir().unwrap();
    let cluster = local_cluster(&dir, 3, Shape::new(1, 3)).await;
    let config = cluster.client_config();
    let endpoint = config.endpoint().unwrap();
    let servers = config.layout_servers.clone();
    assert_eq!(servers.len(), 3);
    let engine = Reconfigurer::new(endpoint.clone(), vec![servers[0].clone()]);
    let done = within(20, "seal", engine.reconfigure(&Change::Seal))
        .await
        .unwrap();
    // Every other layout server learns the decision (a majority of the
    // three at once, the rest in the background).
    for server in &servers[1..] {
        within(10, "the decision reaches every layout server", async {
            loop {
                let layout = fetch_layout(&endpoint, std::slice::from_ref(server))
                    .await
                    .unwrap();
                if layout.epoch >= done.layout.epoch {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await;
    }
    // A config naming a server the layout does not list is refused.
    let mut stray = servers.clone();
    stray.push("127.0.0.1:9".into());
    let refused = Reconfigurer::new(endpoint.clone(), stray)
        .reconfigure(&Change::Seal)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("127.0.0.1:9"), "{refused}");
}
