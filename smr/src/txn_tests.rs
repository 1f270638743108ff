//! Transactions, checked against [`MemoryLog`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use corfu_core::client::ClientError;
use rkyv::{Archive, Deserialize, Serialize};

use crate::*;

/// Named integer cells; an op writes one cell, whose name is its conflict
/// key.
#[derive(Default, Clone, Debug)]
struct Cells(BTreeMap<String, i64>);

#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
struct SetCell(String, i64);

impl StateMachine for Cells {
    type Op = SetCell;
    const TYPE: &'static str = "test.cells";

    fn apply(&mut self, op: SetCell, _: Address) {
        self.0.insert(op.0, op.1);
    }

    fn write_keys(op: &SetCell) -> Vec<u64> {
        vec![cell_key(&op.0)]
    }
}

fn cell_key(name: &str) -> u64 {
    key_hash(&name.to_string()).unwrap()
}

fn set(name: &str, value: i64) -> SetCell {
    SetCell(name.into(), value)
}

/// Reads one cell in a transaction, with that cell's conflict key only.
async fn get(tx: &Txn, h: &Handle<Cells>, name: &str) -> Result<i64, Error> {
    tx.read_keys(h, &[cell_key(name)], |c| {
        c.0.get(name).copied().unwrap_or(0)
    })
    .await
}

async fn cell(h: &Handle<Cells>, name: &str) -> i64 {
    h.query(|c| c.0.get(name).copied().unwrap_or(0))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_commit_is_one_entry_in_every_stream_it_writes() {
    let log = MemoryLog::new();
    let rt = Runtime::new(log.clone());
    let a: Handle<Cells> = rt.open("a").unwrap();
    let b: Handle<Cells> = rt.open("b").unwrap();
    let untouched: Handle<Cells> = rt.open("untouched").unwrap();
    a.update(set("x", 5)).await.unwrap();
    let before = log.tail().await.unwrap();

    let (a2, b2) = (&a, &b);
    let moved = rt
        .transaction(|tx| async move {
            let x = get(&tx, a2, "x").await?;
            tx.update(a2, set("x", x - 2))?;
            tx.update(b2, set("y", 2))?;
            tx.update(b2, set("z", 3))?;
            Ok(x)
        })
        .await
        .unwrap();
    assert_eq!(moved, 5);
    assert_eq!(log.tail().await.unwrap(), before + 1, "one entry");
    let in_a = log
        .read_stream(a.stream(), before, before + 1)
        .await
        .unwrap();
    let in_b = log
        .read_stream(b.stream(), before, before + 1)
        .await
        .unwrap();
    assert_eq!(in_a.len(), 1);
    assert_eq!(in_a, in_b, "the same entry in both streams");
    let in_other = log
        .read_stream(untouched.stream(), 0, before + 1)
        .await
        .unwrap();
    assert!(in_other.is_empty());

    // Another runtime plays each part into its object, in issue order.
    let there = Runtime::new(log);
    let a: Handle<Cells> = there.open("a").unwrap();
    let b: Handle<Cells> = there.open("b").unwrap();
    assert_eq!(cell(&a, "x").await, 3);
    assert_eq!(b.query(|c| c.0.clone()).await.unwrap().len(), 2);
    assert_eq!(cell(&b, "z").await, 3);
}

#[tokio::test]
async fn reads_are_as_of_the_snapshot_even_after_the_view_moved_on() {
    let log = MemoryLog::new();
    let rt = Runtime::new(log.clone());
    let other = Runtime::new(log.clone());
    let fresh: Handle<Cells> = rt.open("fresh").unwrap();
    let versioned: Handle<Cells> = rt.open("versioned").unwrap();
    let out: Handle<Cells> = rt.open("out").unwrap();
    fresh.update(set("v", 1)).await.unwrap();
    versioned.update(set("v", 1)).await.unwrap();
    // A transaction has read `versioned` before: its view keeps versions.
    let seen = rt
        .transaction(|tx| {
            let versioned = versioned.clone();
            async move { get(&tx, &versioned, "v").await }
        })
        .await
        .unwrap();
    assert_eq!(seen, 1);

    let attempts = AtomicU32::new(0);
    let (other, attempts_ref) = (&other, &attempts);
    let (fresh_ref, versioned_ref, out_ref) = (&fresh, &versioned, &out);
    let seen = rt
        .transaction(|tx| async move {
            let attempt = attempts_ref.fetch_add(1, Ordering::SeqCst);
            if attempt == 0 {
                // After the snapshot: another runtime writes both objects,
                // and this runtime's views play those writes.
                for name in ["fresh", "versioned"] {
                    let h: Handle<Cells> = other.open(name)?;
                    h.update(set("v", 2)).await?;
                }
                assert_eq!(cell(fresh_ref, "v").await, 2);
                assert_eq!(cell(versioned_ref, "v").await, 2);
            }
            // The views are past the snapshot: the one with versions is
            // read as of the snapshot from a kept version; the fresh one
            // keeps no past state, so the first attempt stops there and
            // runs again (never replaying the stream from its start).
            let v = get(&tx, versioned_ref, "v").await?;
            let f = get(&tx, fresh_ref, "v").await;
            if attempt == 0 {
                assert_eq!(v, 1, "not read as of the snapshot");
                assert!(f.is_err(), "a fresh view read at a past snapshot");
            }
            let f = f?;
            tx.update(out_ref, set("sum", f + v))?;
            Ok((f, v))
        })
        .await
        .unwrap();
    // The second attempt read the new values and committed.
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    assert_eq!(rt.transaction_stats().reruns, 1);
    assert_eq!(seen, (2, 2));
    assert_eq!(cell(&out, "sum").await, 4);
}

#[tokio::test]
async fn the_snapshot_values_are_read_when_the_view_is_ahead() {
    // The first attempt's reads, checked directly: a view read by a
    // transaction before, and a fresh one.
    let log = MemoryLog::new();
    let rt = Runtime::new(log.clone());
    let h: Handle<Cells> = rt.open("h").unwrap();
    for v in 0..5 {
        h.update(set("v", v)).await.unwrap();
    }
    let h2 = &h;
    let (before, after) = rt
        .transaction(|tx| async move {
            let before = get(&tx, h2, "v").await?;
            h2.update(set("v", 100)).await?;
            assert_eq!(cell(h2, "v").await, 100);
            // The copy is kept: a second read does not reload.
            let after = get(&tx, h2, "v").await?;
            Ok((before, after))
        })
        .await
        .unwrap();
    assert_eq!((before, after), (4, 4));

    // A view no transaction has read keeps no past states. In another
    // runtime, a snapshot is taken, then a query moves the view past it:
    // the state at the snapshot is not rebuilt from the stream's start
    // (which may be long, or trimmed). The attempt runs again (a rerun,
    // not an abort); the view keeps versions from then on, so the second
    // attempt, whose view is moved past its snapshot the same way, reads
    // as of its snapshot: the last value of the first round.
    let rt2 = Runtime::new(log.clone());
    let g: Handle<Cells> = rt2.open("h").unwrap();
    let runs = AtomicU32::new(0);
    let (g2, runs_ref) = (&g, &runs);
    let seen = rt2
        .transaction(|tx| async move {
            let run = i64::from(runs_ref.fetch_add(1, Ordering::SeqCst));
            for v in 0..3 {
                g2.update(set("v", 200 + 10 * run + v)).await?;
                let _ = cell(g2, "v").await;
            }
            get(&tx, g2, "v").await
        })
        .await
        .unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(seen, 202, "read-only: as of the second snapshot");
    assert_eq!(
        rt2.transaction_stats(),
        TransactionStats {
            commits: 0,
            aborts: 0,
            reruns: 1
        }
    );
}

#[tokio::test]
async fn a_transaction_reads_its_own_writes_and_read_only_ones_append_nothing() {
    let log = MemoryLog::new();
    let rt = Runtime::new(log.clone());
    let h: Handle<Cells> = rt.open("h").unwrap();
    let h2 = &h;
    let seen = rt
        .transaction(|tx| async move {
            // Written before the first read: applied when the copy loads.
            tx.update(h2, set("a", 1))?;
            let a = get(&tx, h2, "a").await?;
            tx.update(h2, set("a", a + 10))?;
            let a2 = get(&tx, h2, "a").await?;
            // The view itself is untouched until the commit.
            let outside = cell(h2, "a").await;
            Ok((a, a2, outside))
        })
        .await
        .unwrap();
    assert_eq!(seen, (1, 11, 0));
    assert_eq!(cell(&h, "a").await, 11);

    let tail = log.tail().await.unwrap();
    let read = rt
        .transaction(|tx| async move { get(&tx, h2, "a").await })
        .await
        .unwrap();
    assert_eq!(read, 11);
    assert_eq!(
        log.tail().await.unwrap(),
        tail,
        "read-only: nothing appended"
    );
}

#[tokio::test]
async fn only_writes_of_what_was_read_abort() {
    let log = MemoryLog::new();
    let rt = Runtime::new(log.clone());
    let writer = Runtime::new(log.clone());
    let h: Handle<Cells> = rt.open("accounts").unwrap();
    let w: Handle<Cells> = writer.open("accounts").unwrap();
    h.update(set("a", 1)).await.unwrap();
    h.update(set("b", 1)).await.unwrap();

    // A plain update of another key after the snapshot: no conflict.
    let attempts = AtomicU32::new(0);
    let (h2, w2, attempts2) = (&h, &w, &attempts);
    rt.transaction(|tx| async move {
        let n = attempts2.fetch_add(1, Ordering::SeqCst);
        let a = get(&tx, h2, "a").await?;
        if n == 0 {
            w2.update(set("b", 7)).await?;
        }
        tx.update(h2, set("a", a + 1))?;
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 1);

    // A plain update of the key read: the first attempt is refused (plain
    // updates carry their conflict keys) and the retry sees the write.
    attempts.store(0, Ordering::SeqCst);
    rt.transaction(|tx| async move {
        let n = attempts2.fetch_add(1, Ordering::SeqCst);
        let a = get(&tx, h2, "a").await?;
        if n == 0 {
            w2.update(set("a", 100)).await?;
        }
        tx.update(h2, set("a", a + 1))?;
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    assert_eq!(cell(&w, "a").await, 101, "no lost update");

    // A whole-object read conflicts with a write of any key.
    attempts.store(0, Ordering::SeqCst);
    rt.transaction(|tx| async move {
        let n = attempts2.fetch_add(1, Ordering::SeqCst);
        let total = tx.read(h2, |c| c.0.values().sum::<i64>()).await?;
        if n == 0 {
            w2.update(set("zzz", 1)).await?;
        }
        tx.update(h2, set("total", total))?;
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    assert_eq!(cell(&w, "total").await, 101 + 7 + 1);
}

#[tokio::test]
async fn retries_are_bounded_and_an_abort_appends_nothing() {
    let log = MemoryLog::new();
    let options = RuntimeOptions {
        transaction_retries: 2,
        ..RuntimeOptions::default()
    };
    let rt = Runtime::with_options(log.clone(), options);
    let h: Handle<Cells> = rt.open("h").unwrap();
    let out: Handle<Cells> = rt.open("out").unwrap();
    let attempts = AtomicU32::new(0);
    let (h2, out2, attempts2) = (&h, &out, &attempts);
    let result = rt
        .transaction(|tx| async move {
            attempts2.fetch_add(1, Ordering::SeqCst);
            let a = get(&tx, h2, "a").await?;
            h2.update(set("a", a + 1)).await?; // always a conflict
            tx.update(out2, set("x", 1))?;
            Ok(())
        })
        .await;
    match result {
        Err(Error::Aborted {
            attempts: 3,
            conflict: Some(key),
            ..
        }) => {
            assert_eq!(key.stream, h.stream());
            assert_eq!(key.key_hash, cell_key("a"));
        }
        other => panic!("expected an abort after 3 attempts, got {other:?}"),
    }
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    assert!(log
        .read_stream(out.stream(), 0, u64::MAX)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(cell(&h, "a").await, 3);
}

#[tokio::test]
async fn a_snapshot_below_the_floor_is_retried() {
    let log = MemoryLog::new();
    let rt = Runtime::new(log.clone());
    let h: Handle<Cells> = rt.open("h").unwrap();
    let attempts = AtomicU32::new(0);
    let (h2, attempts2, log2) = (&h, &attempts, &log);
    rt.transaction(|tx| async move {
        if attempts2.fetch_add(1, Ordering::SeqCst) == 0 {
            log2.raise_floor(tx.snapshot() + 1);
        }
        tx.update(h2, set("a", 1))?;
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    assert_eq!(cell(&h, "a").await, 1);
    // A floor at the tail (as after a sequencer failover) is passed too:
    // the runtime moves the tail on instead of retrying in vain.
    log.raise_floor(log.tail().await.unwrap());
    attempts.store(0, Ordering::SeqCst);
    rt.transaction(|tx| async move {
        attempts2.fetch_add(1, Ordering::SeqCst);
        let a = get(&tx, h2, "a").await?;
        tx.update(h2, set("a", a + 1))?;
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    assert_eq!(cell(&h, "a").await, 2);
    // Plain updates are never refused by the floor.
    log.raise_floor(1_000);
    h.update(set("b", 2)).await.unwrap();
    assert_eq!(cell(&h, "b").await, 2);
}

#[tokio::test]
async fn errors_and_misuse_commit_nothing() {
    let log = MemoryLog::new();
    let rt = Runtime::new(log.clone());
    let foreign = Runtime::new(log.clone());
    let h: Handle<Cells> = rt.open("h").unwrap();
    let f: Handle<Cells> = foreign.open("h").unwrap();
    let tail = log.tail().await.unwrap();

    let h2 = &h;
    let failed: Result<(), Error> = rt
        .transaction(|tx| async move {
            tx.update(h2, set("a", 1))?;
            Err(Error::Transaction {
                object: "h".into(),
                reason: "the body refused".into(),
            })
        })
        .await;
    assert!(
        matches!(failed, Err(Error::Transaction { reason, .. }) if reason == "the body refused")
    );

    let f2 = &f;
    let foreign_use = rt
        .transaction(|tx| async move { tx.update(f2, set("a", 1)) })
        .await;
    assert!(matches!(foreign_use, Err(Error::Transaction { .. })));

    let kept = std::sync::Mutex::new(None);
    let kept2 = &kept;
    rt.transaction(|tx| async move {
        *kept2.lock().unwrap() = Some(tx);
        Ok(())
    })
    .await
    .unwrap();
    let tx = kept.lock().unwrap().take().unwrap();
    assert!(matches!(
        tx.update(&h, set("a", 1)),
        Err(Error::Transaction { .. })
    ));
    assert!(matches!(
        get(&tx, &h, "a").await,
        Err(Error::Transaction { .. })
    ));

    // Only the empty entry that gives an empty log a snapshot.
    assert_eq!(log.tail().await.unwrap(), tail + 1);
    assert_eq!(cell(&h, "a").await, 0);
}

#[tokio::test]
async fn a_transaction_entry_without_the_objects_part_stops_the_view() {
    let log = MemoryLog::new();
    let rt = Runtime::new(log.clone());
    let h: Handle<Cells> = rt.open("h").unwrap();
    h.update(set("a", 1)).await.unwrap();
    // A commit naming only another stream, yet appended to this one.
    let mut op = Vec::new();
    set("a", 2).encode_into(&mut op).unwrap();
    let payload = crate::record::encode_transaction(&[(
        StreamId::from_name("other"),
        crate::record::ObjectType::of::<Cells>(),
        vec![op],
    )])
    .unwrap();
    let address = log.append(payload, &[h.stream()]).await.unwrap();
    match h.query(|c| c.0.clone()).await {
        Err(Error::Undecodable {
            address: at,
            reason,
            ..
        }) => {
            assert_eq!(at, address);
            assert!(reason.contains("no part"), "{reason}");
        }
        other => panic!("expected Undecodable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_transfers_keep_the_total() {
    const ACCOUNTS: [&str; 4] = ["a", "b", "c", "d"];
    let log = MemoryLog::new();
    let runtimes = [Runtime::new(log.clone()), Runtime::new(log.clone())];
    let setup: Handle<Cells> = runtimes[0].open("bank").unwrap();
    for name in ACCOUNTS {
        setup.update(set(name, 100)).await.unwrap();
    }
    let mut tasks = Vec::new();
    for task in 0..8usize {
        let rt = runtimes[task % 2].clone();
        tasks.push(tokio::spawn(async move {
            let bank: Handle<Cells> = rt.open("bank").unwrap();
            let mut committed = 0;
            for round in 0..20usize {
                let from = ACCOUNTS[(task + round) % 4];
                let to = ACCOUNTS[(task + round + 1) % 4];
                let bank = &bank;
                let result = rt
                    .transaction(|tx| async move {
                        let a = get(&tx, bank, from).await?;
                        let b = get(&tx, bank, to).await?;
                        if a < 7 {
                            return Ok(false);
                        }
                        tx.update(bank, set(from, a - 7))?;
                        tx.update(bank, set(to, b + 7))?;
                        Ok(true)
                    })
                    .await;
                match result {
                    Ok(true) => committed += 1,
                    Ok(false) | Err(Error::Aborted { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
                // An audit: a consistent snapshot always sums to 400.
                let total = rt
                    .transaction(
                        |tx| async move { tx.read(bank, |c| c.0.values().sum::<i64>()).await },
                    )
                    .await
                    .unwrap();
                assert_eq!(total, 400);
            }
            committed
        }));
    }
    let mut committed = 0;
    for task in tasks {
        committed += task.await.unwrap();
    }
    assert!(committed > 0);
    for rt in &runtimes {
        let bank: Handle<Cells> = rt.open("bank").unwrap();
        let balances = bank.query(|c| c.0.clone()).await.unwrap();
        assert_eq!(balances.values().sum::<i64>(), 400);
        assert!(balances.values().all(|v| *v >= 0));
    }
    // Every reported commit is one entry of the stream beyond the setup.
    let entries = log.read_stream(setup.stream(), 0, u64::MAX).await.unwrap();
    assert_eq!(entries.len(), ACCOUNTS.len() + committed);
}

#[tokio::test]
async fn updates_carry_their_conflict_keys() {
    // Checked at the log: a conditional append that read a key at a
    // snapshot before a plain update of it is refused.
    let log = MemoryLog::new();
    let rt = Runtime::new(log.clone());
    let h: Handle<Cells> = rt.open("h").unwrap();
    h.update(set("first", 1)).await.unwrap();
    let at = h.update(set("k", 1)).await.unwrap();
    let (_, _) = h.update_and_read_prior(set("j", 1), |_| ()).await.unwrap();
    let condition = |snapshot, key| corfu_core::wire::sequencer::TxnCondition {
        snapshot,
        read_set: vec![ConflictKey {
            stream: h.stream(),
            key_hash: key,
        }],
        write_set: Vec::new(),
    };
    for (key, written) in [
        (cell_key("k"), at),
        (cell_key("j"), at + 1),
        (WHOLE_OBJECT, at + 1),
    ] {
        assert!(matches!(
            log.append_conditional(Vec::new(), &[], &condition(written - 1, key)).await,
            Err(ClientError::Aborted { address, .. }) if address == written
        ));
        log.append_conditional(Vec::new(), &[], &condition(written, key))
            .await
            .unwrap();
    }
}

/// Past states of a view that transactions read, at every address the
/// view has passed: built from the kept copies and entries (or the log
/// where those do not reach back), each equal to the state with exactly the
/// entries below that address applied. Entries of another stream are
/// interleaved so the stream has gaps, and the view is synced in batches
/// of every size.
#[tokio::test]
async fn past_states_at_every_address_match_a_replay() {
    let log = MemoryLog::new();
    let rt = Runtime::new(log.clone());
    let h: Handle<Cells> = rt.open("h").unwrap();
    let noise: Handle<Cells> = rt.open("noise").unwrap();
    // A transaction reads the view first, so it keeps versions.
    rt.transaction(|tx| {
        let h = h.clone();
        async move { get(&tx, &h, "v").await }
    })
    .await
    .unwrap();
    // A live snapshot from here on: the view keeps a version at or below
    // it, however many batches follow.
    let _live = rt.inner.snapshots.pin();
    let mut writes: Vec<(Address, i64)> = Vec::new();
    for i in 0..300i64 {
        let address = h.update(set("v", i)).await.unwrap();
        writes.push((address, i));
        if i % 3 == 0 {
            noise.update(set("n", i)).await.unwrap();
        }
        if i % ((i % 7) + 1) == 0 {
            cell(&h, "v").await; // a sync: one more batch
        }
    }
    cell(&h, "v").await;
    let end = log.tail().await.unwrap();
    for at in 0..=end {
        let expected = writes
            .iter()
            .rev()
            .find(|(a, _)| *a < at)
            .map_or(0, |(_, v)| *v);
        let state = h
            .view
            .state_at(&log, at, Cells::clone)
            .await
            .unwrap()
            .expect("a version at or below a live snapshot is kept");
        assert_eq!(state.0.get("v").copied().unwrap_or(0), expected, "at {at}");
    }
}

/// The first attempt reads from where the views already are (no wait for
/// entries still being written below the tail), yet outcomes stay
/// linearizable: a read-only transaction that read from an older point is
/// run again from the tail, and a read-write one that missed a write is
/// refused by the conflict check and retried.
#[tokio::test]
async fn reads_from_behind_the_tail_never_miss_an_acknowledged_write() {
    let log = MemoryLog::new();
    let here = Runtime::new(log.clone());
    let there = Runtime::new(log.clone());
    let x: Handle<Cells> = here.open("x").unwrap();
    let y: Handle<Cells> = here.open("y").unwrap();
    x.update(set("v", 1)).await.unwrap();
    assert_eq!(cell(&x, "v").await, 1); // this view is now at the tail
                                        // Acknowledged in another runtime, not yet played here.
    let x_there: Handle<Cells> = there.open("x").unwrap();
    x_there.update(set("v", 2)).await.unwrap();

    let runs = AtomicU32::new(0);
    let (x_ref, y_ref, runs_ref) = (&x, &y, &runs);
    let seen = here
        .transaction(|tx| async move {
            runs_ref.fetch_add(1, Ordering::SeqCst);
            get(&tx, x_ref, "v").await
        })
        .await
        .unwrap();
    assert_eq!(seen, 2, "a read-only transaction saw an older state");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "read behind the tail, then again"
    );

    x_there.update(set("v", 3)).await.unwrap();
    runs.store(0, Ordering::SeqCst);
    let copied = here
        .transaction(|tx| async move {
            runs_ref.fetch_add(1, Ordering::SeqCst);
            let v = get(&tx, x_ref, "v").await?;
            tx.update(y_ref, set("copy", v))?;
            Ok(v)
        })
        .await
        .unwrap();
    assert_eq!(copied, 3);
    assert_eq!(cell(&y, "copy").await, 3);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "refused once, then committed"
    );
}

/// A [`MemoryLog`] that counts the entries its stream reads return and can
/// be trimmed: a stream read reaching below the trim mark fails, as it
/// does on a log whose prefix was trimmed.
#[derive(Clone, Default)]
struct Counting {
    log: MemoryLog,
    entries_read: Arc<AtomicU64>,
    trimmed_below: Arc<AtomicU64>,
}

impl Counting {
    fn entries_read(&self) -> u64 {
        self.entries_read.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl SharedLog for Counting {
    async fn append(&self, payload: Vec<u8>, streams: &[StreamId]) -> Result<Address, ClientError> {
        self.log.append(payload, streams).await
    }

    async fn append_conditional(
        &self,
        payload: Vec<u8>,
        streams: &[StreamId],
        condition: &corfu_core::wire::sequencer::TxnCondition,
    ) -> Result<Address, ClientError> {
        self.log
            .append_conditional(payload, streams, condition)
            .await
    }

    async fn tail(&self) -> Result<Address, ClientError> {
        self.log.tail().await
    }

    async fn stream_tail(&self, stream: StreamId) -> Result<Option<Address>, ClientError> {
        self.log.stream_tail(stream).await
    }

    async fn read_stream(
        &self,
        stream: StreamId,
        from: Address,
        to: Address,
    ) -> Result<Vec<(Address, Vec<u8>)>, ClientError> {
        if from < self.trimmed_below.load(Ordering::SeqCst) {
            return Err(ClientError::Trimmed { address: from });
        }
        let entries = self.log.read_stream(stream, from, to).await?;
        self.entries_read
            .fetch_add(entries.len() as u64, Ordering::SeqCst);
        Ok(entries)
    }
}

/// Writes `n` updates of cell "v" of `name` from a runtime of its own.
async fn history(log: &Counting, name: &str, n: i64) {
    let writer = Runtime::new(log.clone());
    let h: Handle<Cells> = writer.open(name).unwrap();
    for v in 0..n {
        h.update(set("v", v)).await.unwrap();
    }
}

/// Issue 15, item 5: the first transaction to read an object whose view a
/// query has moved past the transaction's snapshot read the whole stream
/// again from address 0 (no kept version: none is kept until a
/// transaction reads the view). Now the attempt runs again from the tail,
/// where the view is, and reads a bounded number of entries.
#[tokio::test]
async fn a_view_moved_on_by_a_query_is_not_replayed_from_zero() {
    const HISTORY: i64 = 1000;
    let log = Counting::default();
    history(&log, "h", HISTORY).await;
    let rt = Runtime::new(log.clone());
    let writer = Runtime::new(log.clone());
    let h: Handle<Cells> = rt.open("h").unwrap();
    let x: Handle<Cells> = rt.open("x").unwrap();
    let h_there: Handle<Cells> = writer.open("h").unwrap();
    assert_eq!(cell(&h, "v").await, HISTORY - 1); // the view is at the tail

    let before = log.entries_read();
    let runs = AtomicU32::new(0);
    let (h_ref, x_ref, h_there, runs_ref) = (&h, &x, &h_there, &runs);
    let seen = rt
        .transaction(|tx| async move {
            if runs_ref.fetch_add(1, Ordering::SeqCst) == 0 {
                // After the snapshot: a write, and a query moving the
                // view past the snapshot.
                h_there.update(set("v", -1)).await?;
                assert_eq!(cell(h_ref, "v").await, -1);
            }
            let v = get(&tx, h_ref, "v").await?;
            tx.update(x_ref, set("copy", v))?;
            Ok(v)
        })
        .await
        .unwrap();
    let read = log.entries_read() - before;
    assert_eq!(seen, -1);
    assert_eq!(cell(&x, "copy").await, -1);
    assert!(
        read < 10,
        "a transaction read {read} entries of a stream of {HISTORY}"
    );
}

/// Issue 15, item 5: a transaction whose object's view moved more than
/// [`crate::view::VERSIONS_KEPT`] batches past its snapshot found no kept
/// version at or below it and replayed the stream from address 0, which
/// also failed once the log's prefix was trimmed. The views now keep a
/// version at or below every live snapshot.
#[tokio::test]
async fn a_long_transaction_reads_its_snapshot_without_history_or_the_trimmed_prefix() {
    const HISTORY: i64 = 1000;
    const MOVES: i64 = 2 * crate::view::VERSIONS_KEPT as i64;
    let log = Counting::default();
    history(&log, "h", HISTORY).await;
    let rt = Runtime::new(log.clone());
    let writer = Runtime::new(log.clone());
    let h: Handle<Cells> = rt.open("h").unwrap();
    let x: Handle<Cells> = rt.open("x").unwrap();
    let h_there: Handle<Cells> = writer.open("h").unwrap();
    // A transaction has read the view: it keeps versions.
    let h_ref = &h;
    let v = rt
        .transaction(|tx| async move { get(&tx, h_ref, "v").await })
        .await
        .unwrap();
    assert_eq!(v, HISTORY - 1);
    // The writer's first write checks the stream's type; not in the test.
    h_there.update(set("v", HISTORY - 1)).await.unwrap();
    assert_eq!(cell(&h, "v").await, HISTORY - 1);

    let runs = AtomicU32::new(0);
    let (x_ref, h_there, runs_ref, log_ref) = (&x, &h_there, &runs, &log);
    let (v, read) = rt
        .transaction(|tx| async move {
            let first = runs_ref.fetch_add(1, Ordering::SeqCst) == 0;
            if first {
                // Everything below the snapshot is trimmed, and the view
                // moves on by one batch per query, many times.
                log_ref
                    .trimmed_below
                    .store(tx.snapshot() + 1, Ordering::SeqCst);
                for v in 0..MOVES {
                    h_there.update(set("v", HISTORY + v)).await?;
                    assert_eq!(cell(h_ref, "v").await, HISTORY + v);
                }
            }
            let before = log_ref.entries_read();
            let v = get(&tx, h_ref, "v").await?;
            let read = log_ref.entries_read() - before;
            tx.update(x_ref, set("copy", v))?;
            Ok((v, read))
        })
        .await
        .unwrap();
    // The first attempt read the snapshot's value (and was refused: h was
    // written after it); the retry read the new one. Neither read history.
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(v, HISTORY + MOVES - 1);
    assert_eq!(read, 0, "entries read from the log for a kept snapshot");
}

/// The first attempt's read in the test above, checked directly: the
/// value at the snapshot, from a kept version, with the view far ahead.
#[tokio::test]
async fn a_live_snapshot_keeps_its_version_however_far_the_view_moves() {
    const MOVES: i64 = 3 * crate::view::VERSIONS_KEPT as i64;
    let log = Counting::default();
    history(&log, "h", 10).await;
    let rt = Runtime::new(log.clone());
    let h: Handle<Cells> = rt.open("h").unwrap();
    let h_ref = &h;
    rt.transaction(|tx| async move { get(&tx, h_ref, "v").await })
        .await
        .unwrap();
    let writer = Runtime::new(log.clone());
    let h_there: Handle<Cells> = writer.open("h").unwrap();
    h_there.update(set("v", 9)).await.unwrap();
    assert_eq!(cell(&h, "v").await, 9);
    let (h_there, log_ref) = (&h_there, &log);
    let (seen, read) = rt
        .transaction(|tx| async move {
            log_ref
                .trimmed_below
                .store(tx.snapshot() + 1, Ordering::SeqCst);
            for v in 0..MOVES {
                h_there.update(set("v", 100 + v)).await?;
                cell(h_ref, "v").await;
            }
            let before = log_ref.entries_read();
            let seen = get(&tx, h_ref, "v").await?;
            Ok((seen, log_ref.entries_read() - before))
        })
        .await
        .unwrap();
    assert_eq!((seen, read), (9, 0));
}
