//! The runtime's rules, checked against [`MemoryLog`] (and a probe around
//! it that counts, gates and breaks log calls).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use corfu_core::client::ClientError;
use rkyv::{Archive, Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::*;

/// Records every op it applies, with its address.
#[derive(Default, Debug)]
struct Recorder {
    applied: Vec<(Address, u64)>,
    /// Applications whose address was not above the previous one.
    out_of_order: usize,
}

impl StateMachine for Recorder {
    type Op = u64;
    const TYPE: &'static str = "test.recorder";

    fn apply(&mut self, op: u64, address: Address) {
        if self
            .applied
            .last()
            .is_some_and(|(last, _)| *last >= address)
        {
            self.out_of_order += 1;
        }
        self.applied.push((address, op));
    }
}

/// Another state type, to open a name with the wrong one.
#[derive(Default)]
struct Text(String);

#[derive(Archive, Serialize, Deserialize)]
struct Append(String);

impl StateMachine for Text {
    type Op = Append;
    const TYPE: &'static str = "test.text";

    fn apply(&mut self, op: Append, _: Address) {
        self.0.push_str(&op.0);
    }
}

/// A [`MemoryLog`] whose calls can be counted, held at a gate or failed.
#[derive(Clone, Default)]
struct Probe(Arc<ProbeInner>);

#[derive(Default)]
struct ProbeInner {
    log: MemoryLog,
    /// Stream reads started, and the ranges they asked for.
    reads: Mutex<Vec<(StreamId, Address, Address)>>,
    /// If set, stream reads of this stream wait for a permit.
    gated: Mutex<Option<(StreamId, Arc<Semaphore>)>>,
    /// If set, appends wait for a permit.
    append_gate: Mutex<Option<Arc<Semaphore>>>,
    appends_started: AtomicUsize,
    /// Stream reads to fail before serving again.
    failing_reads: AtomicUsize,
    /// The next stream read returns its first entry twice.
    duplicate_once: AtomicBool,
}

impl Probe {
    fn reads(&self) -> Vec<(StreamId, Address, Address)> {
        self.0.reads.lock().unwrap().clone()
    }

    fn gate_reads(&self, stream: StreamId) -> Arc<Semaphore> {
        let gate = Arc::new(Semaphore::new(0));
        *self.0.gated.lock().unwrap() = Some((stream, gate.clone()));
        gate
    }

    fn gate_appends(&self) -> Arc<Semaphore> {
        let gate = Arc::new(Semaphore::new(0));
        *self.0.append_gate.lock().unwrap() = Some(gate.clone());
        gate
    }
}

#[async_trait]
impl SharedLog for Probe {
    async fn append(&self, payload: Vec<u8>, streams: &[StreamId]) -> Result<Address, ClientError> {
        self.0.appends_started.fetch_add(1, Ordering::SeqCst);
        let gate = self.0.append_gate.lock().unwrap().clone();
        if let Some(gate) = gate {
            let _permit = gate.acquire().await.map_err(|_| ClientError::Closed)?;
        }
        self.0.log.append(payload, streams).await
    }

    async fn append_conditional(
        &self,
        payload: Vec<u8>,
        streams: &[StreamId],
        condition: &corfu_core::wire::sequencer::TxnCondition,
    ) -> Result<Address, ClientError> {
        // Updates are conditional appends: they pass the same gate.
        self.0.appends_started.fetch_add(1, Ordering::SeqCst);
        let gate = self.0.append_gate.lock().unwrap().clone();
        if let Some(gate) = gate {
            let _permit = gate.acquire().await.map_err(|_| ClientError::Closed)?;
        }
        self.0
            .log
            .append_conditional(payload, streams, condition)
            .await
    }

    async fn tail(&self) -> Result<Address, ClientError> {
        self.0.log.tail().await
    }

    async fn stream_tail(&self, stream: StreamId) -> Result<Option<Address>, ClientError> {
        self.0.log.stream_tail(stream).await
    }

    async fn read_stream(
        &self,
        stream: StreamId,
        from: Address,
        to: Address,
    ) -> Result<Vec<(Address, Vec<u8>)>, ClientError> {
        self.0.reads.lock().unwrap().push((stream, from, to));
        let gate = self.0.gated.lock().unwrap().clone();
        if let Some((gated, gate)) = gate {
            if gated == stream {
                let _permit = gate.acquire().await.map_err(|_| ClientError::Closed)?;
            }
        }
        let failing = self.0.failing_reads.load(Ordering::SeqCst);
        if failing > 0 {
            self.0.failing_reads.store(failing - 1, Ordering::SeqCst);
            return Err(ClientError::Unavailable("injected".into()));
        }
        let mut entries = self.0.log.read_stream(stream, from, to).await?;
        if self.0.duplicate_once.swap(false, Ordering::SeqCst) {
            if let Some(first) = entries.first().cloned() {
                entries.insert(0, first);
            }
        }
        Ok(entries)
    }
}

/// Yields until `done` holds (bounded: the test fails instead of hanging).
async fn until(mut done: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition not reached");
}

#[tokio::test]
async fn two_runtimes_see_each_others_updates() {
    let log = MemoryLog::new();
    let a: Handle<Recorder> = Runtime::new(log.clone()).open("shared").unwrap();
    let b: Handle<Recorder> = Runtime::new(log.clone()).open("shared").unwrap();
    assert_eq!(a.stream(), StreamId::from_name("shared"));

    let first = a.update(1).await.unwrap();
    assert_eq!(b.query(|r| r.applied.clone()).await.unwrap(), [(first, 1)]);
    let second = b.update(2).await.unwrap();
    let third = a.update(3).await.unwrap();
    let expected = vec![(first, 1), (second, 2), (third, 3)];
    assert_eq!(a.query(|r| r.applied.clone()).await.unwrap(), expected);
    assert_eq!(b.query(|r| r.applied.clone()).await.unwrap(), expected);
}

#[tokio::test]
async fn a_new_object_is_empty_and_other_streams_do_not_leak_in() {
    let log = MemoryLog::new();
    let rt = Runtime::new(log.clone());
    let x: Handle<Recorder> = rt.open("x").unwrap();
    let y: Handle<Recorder> = rt.open("y").unwrap();
    assert!(x.query(|r| r.applied.is_empty()).await.unwrap());
    x.update(7).await.unwrap();
    // An entry of both streams belongs to both objects.
    let both = log
        .append(
            crate::record::encode_update(crate::record::ObjectType::of::<Recorder>(), &8u64, None)
                .unwrap(),
            &[x.stream(), y.stream()],
        )
        .await
        .unwrap();
    assert_eq!(y.query(|r| r.applied.clone()).await.unwrap(), [(both, 8)]);
    assert_eq!(x.query(|r| r.applied.len()).await.unwrap(), 2);
}

#[tokio::test]
async fn handles_of_one_object_share_one_view() {
    let probe = Probe::default();
    let rt = Runtime::new(probe.clone());
    let one: Handle<Recorder> = rt.open("counter").unwrap();
    let two: Handle<Recorder> = rt.clone().open("counter").unwrap();
    assert!(std::ptr::eq(one.view(), two.view()));

    for op in 0..5 {
        one.update(op).await.unwrap();
    }
    assert_eq!(one.query(|r| r.applied.len()).await.unwrap(), 5);
    let reads = probe.reads().len();
    // The other handle finds the entries applied: no read, no second apply.
    assert_eq!(two.query(|r| r.applied.len()).await.unwrap(), 5);
    assert_eq!(probe.reads().len(), reads);
}

#[tokio::test]
async fn opening_a_name_with_another_type_is_an_error() {
    let rt = Runtime::new(MemoryLog::new());
    let _recorder: Handle<Recorder> = rt.open("thing").unwrap();
    let error = rt.open::<Handle<Text>>("thing").unwrap_err();
    match &error {
        Error::TypeMismatch {
            object,
            opened_as,
            requested,
        } => {
            assert_eq!(object, "thing");
            assert!(opened_as.ends_with("Recorder"), "{opened_as}");
            assert!(requested.ends_with("Text"), "{requested}");
        }
        other => panic!("expected a type mismatch, got {other:?}"),
    }
    assert!(error.to_string().contains("\"thing\" is open as"));
    // Another runtime has its own registry.
    let other = Runtime::new(MemoryLog::new());
    assert!(other.open::<Handle<Text>>("thing").is_ok());
}

#[tokio::test]
async fn undecodable_entries_stop_the_view_with_a_clear_error() {
    let log = MemoryLog::new();
    let rt = Runtime::new(log.clone());
    let text: Handle<Text> = rt.open("notes").unwrap();
    let fine: Handle<Text> = rt.open("other-notes").unwrap();
    text.update(Append("a".into())).await.unwrap();
    assert_eq!(text.query(|t| t.0.clone()).await.unwrap(), "a");

    // Raw bytes, as `corfu log append` could write them.
    let bad = log
        .append(b"\x01not an archive".to_vec(), &[text.stream()])
        .await
        .unwrap();
    text.update(Append("b".into())).await.unwrap();
    fine.update(Append("ok".into())).await.unwrap();

    for _ in 0..2 {
        match text.query(|t| t.0.clone()).await.unwrap_err() {
            Error::Undecodable {
                object,
                address,
                reason,
            } => {
                assert_eq!(object, "notes");
                assert_eq!(address, bad);
                assert!(
                    reason.contains("before entries named their object type"),
                    "{reason}"
                );
            }
            other => panic!("expected an undecodable entry, got {other:?}"),
        }
    }
    let message = text.query(|_| ()).await.unwrap_err().to_string();
    assert!(
        message.contains("\"notes\"") && message.contains(&format!("address {bad}")),
        "{message}"
    );
    // Other objects of the runtime carry on.
    assert_eq!(fine.query(|t| t.0.clone()).await.unwrap(), "ok");

    // An entry of an unknown kind is reported as such.
    let rt = Runtime::new(log.clone());
    let later: Handle<Recorder> = rt.open("later").unwrap();
    let unknown = log.append(vec![9, 9, 9], &[later.stream()]).await.unwrap();
    match later.query(|_| ()).await.unwrap_err() {
        Error::Undecodable {
            address, reason, ..
        } => {
            assert_eq!(address, unknown);
            assert!(reason.contains("unknown entry kind 9"), "{reason}");
        }
        other => panic!("expected an undecodable entry, got {other:?}"),
    }
}

#[tokio::test]
async fn junk_in_a_stream_is_skipped() {
    let log = MemoryLog::new();
    let rt = Runtime::new(log.clone());
    let h: Handle<Recorder> = rt.open("holes").unwrap();
    let first = h.update(1).await.unwrap();
    log.fill_junk(&[h.stream()]);
    // The stream's tail is junk: the view moves past it.
    assert_eq!(h.query(|r| r.applied.clone()).await.unwrap(), [(first, 1)]);
    let second = h.update(2).await.unwrap();
    log.fill_junk(&[h.stream()]);
    assert_eq!(
        h.query(|r| r.applied.clone()).await.unwrap(),
        [(first, 1), (second, 2)]
    );
}

#[tokio::test]
async fn playback_reads_in_bounded_batches() {
    let probe = Probe::default();
    let options = RuntimeOptions {
        transaction_retries: TRANSACTION_RETRIES_DEFAULT,
        playback_batch_addresses: 3,
    };
    let writer = Runtime::new(probe.clone());
    let w: Handle<Recorder> = writer.open("long").unwrap();
    let noise: Handle<Recorder> = writer.open("noise").unwrap();
    let mut expected = Vec::new();
    for op in 0..10 {
        expected.push((w.update(op).await.unwrap(), op));
        noise.update(op).await.unwrap();
    }
    let reader = Runtime::with_options(probe.clone(), options.clone());
    assert_eq!(reader.options(), &options);
    let r: Handle<Recorder> = reader.open("long").unwrap();
    assert_eq!(r.query(|r| r.applied.clone()).await.unwrap(), expected);

    let reads: Vec<_> = probe
        .reads()
        .into_iter()
        .filter(|(s, _, _)| *s == r.stream())
        .collect();
    // The stream spans addresses 0..=18: seven reads of at most 3 addresses
    // each, contiguous.
    assert_eq!(reads.len(), 7, "{reads:?}");
    let mut next = 0;
    for (_, from, to) in reads {
        assert_eq!(from, next);
        assert!(to > from && to - from <= 3, "[{from}, {to})");
        next = to;
    }
    assert_eq!(next, 19);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_queries_apply_each_entry_once_in_order() {
    let log = MemoryLog::new();
    let local = Runtime::new(log.clone());
    let remote = Runtime::new(log.clone());
    let mut tasks = Vec::new();
    for task in 0..16u64 {
        let rt = if task % 2 == 0 { &local } else { &remote };
        let h: Handle<Recorder> = rt.open("busy").unwrap();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for round in 0..50u64 {
                let op = task * 1000 + round;
                let address = h.update(op).await.unwrap();
                mine.push((address, op));
                // Every query sees this task's own acknowledged updates.
                let seen = h
                    .query(move |r| r.applied.iter().any(|(a, _)| *a == address))
                    .await
                    .unwrap();
                assert!(seen, "task {task}: the update at {address} is missing");
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_unstable();
    for rt in [&local, &remote] {
        let h: Handle<Recorder> = rt.open("busy").unwrap();
        let (applied, out_of_order) = h
            .query(|r| (r.applied.clone(), r.out_of_order))
            .await
            .unwrap();
        assert_eq!(out_of_order, 0);
        assert_eq!(
            applied, all,
            "each acknowledged update applied once, in order"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_query_waiting_behind_a_sync_reuses_it_and_other_objects_do_not_wait() {
    let probe = Probe::default();
    let rt = Runtime::new(probe.clone());
    let slow: Handle<Recorder> = rt.open("slow").unwrap();
    let fast: Handle<Recorder> = rt.open("fast").unwrap();
    for op in 0..3 {
        slow.update(op).await.unwrap();
    }
    fast.update(9).await.unwrap();
    let gate = probe.gate_reads(slow.stream());

    let first = tokio::spawn({
        let slow = slow.clone();
        async move { slow.query(|r| r.applied.len()).await }
    });
    until(|| probe.reads().len() == 1).await;
    let second = tokio::spawn({
        let slow = slow.clone();
        async move { slow.query(|r| r.applied.len()).await }
    });
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(!first.is_finished() && !second.is_finished());
    // The first sync holds the view's playback, not its state: another
    // object, and the slow object's state, stay readable meanwhile.
    assert_eq!(fast.query(|r| r.applied.len()).await.unwrap(), 1);
    assert_eq!(slow.view().read(|r| r.applied.len()).unwrap(), 0);

    gate.add_permits(10);
    assert_eq!(first.await.unwrap().unwrap(), 3);
    assert_eq!(second.await.unwrap().unwrap(), 3);
    let slow_reads = probe
        .reads()
        .into_iter()
        .filter(|(s, _, _)| *s == slow.stream())
        .count();
    assert_eq!(slow_reads, 1, "the second query waited for the first sync");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outcomes_follow_log_order() {
    let log = MemoryLog::new();
    let runtimes = [Runtime::new(log.clone()), Runtime::new(log.clone())];
    let mut tasks = Vec::new();
    for task in 0..8u64 {
        let h: Handle<Recorder> = runtimes[task as usize % 2].open("ordered").unwrap();
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for round in 0..25 {
                // How many updates the op found applied before it.
                outcomes.push(
                    h.update_and_read_prior(task * 100 + round, |r| r.applied.len())
                        .await
                        .unwrap(),
                );
            }
            outcomes
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.extend(task.await.unwrap());
    }
    for rt in &runtimes {
        let h: Handle<Recorder> = rt.open("ordered").unwrap();
        assert_eq!(h.view().waiter_count(), 0);
    }
    outcomes.sort_unstable();
    // The n-th update in log order found exactly n updates before it.
    let found: Vec<usize> = outcomes.iter().map(|(_, prior)| *prior).collect();
    assert_eq!(found, (0..200).collect::<Vec<_>>());
}

#[tokio::test(flavor = "current_thread")]
async fn a_cancelled_update_leaves_no_waiter_behind() {
    let probe = Probe::default();
    let rt = Runtime::new(probe.clone());
    let h: Handle<Recorder> = rt.open("cancel").unwrap();
    let gate = probe.gate_appends();
    let pending = tokio::spawn({
        let h = h.clone();
        async move { h.update_and_read_prior(1, |r| r.applied.len()).await }
    });
    until(|| probe.0.appends_started.load(Ordering::SeqCst) == 1).await;
    assert_eq!(h.view().waiter_count(), 1);
    pending.abort();
    assert!(pending.await.unwrap_err().is_cancelled());
    assert_eq!(h.view().waiter_count(), 0);

    gate.add_permits(10);
    let (address, prior) = h
        .update_and_read_prior(2, |r| r.applied.len())
        .await
        .unwrap();
    assert_eq!((address, prior), (0, 0));
    assert_eq!(h.view().waiter_count(), 0);
}

#[tokio::test]
async fn log_failures_are_reported_and_leave_the_view_usable() {
    let probe = Probe::default();
    let rt = Runtime::new(probe.clone());
    let h: Handle<Recorder> = rt.open("flaky").unwrap();
    let first = h.update(1).await.unwrap();
    probe.0.failing_reads.store(1, Ordering::SeqCst);
    match h.query(|_| ()).await.unwrap_err() {
        Error::Log { object, source } => {
            assert_eq!(object, "flaky");
            assert!(matches!(source, ClientError::Unavailable(_)));
        }
        other => panic!("expected a log error, got {other:?}"),
    }
    assert_eq!(h.query(|r| r.applied.clone()).await.unwrap(), [(first, 1)]);

    // A stream read that returns an entry twice is refused, not applied twice.
    let second = h.update(2).await.unwrap();
    probe.0.duplicate_once.store(true, Ordering::SeqCst);
    assert!(matches!(
        h.query(|_| ()).await.unwrap_err(),
        Error::LogContract { .. }
    ));
    assert_eq!(
        h.query(|r| r.applied.clone()).await.unwrap(),
        [(first, 1), (second, 2)]
    );
}

#[tokio::test]
async fn a_stopped_view_fails_waiting_updates_cleanly() {
    let log = MemoryLog::new();
    let rt = Runtime::new(log.clone());
    let h: Handle<Recorder> = rt.open("stopped").unwrap();
    log.append(vec![1, 0xFF], &[h.stream()]).await.unwrap();
    let outcome = tokio::time::timeout(
        Duration::from_secs(5),
        h.update_and_read_prior(5, |r| r.applied.len()),
    )
    .await
    .unwrap();
    assert!(matches!(
        outcome,
        Err(Error::Undecodable { address: 0, .. })
    ));
    assert_eq!(h.view().waiter_count(), 0);
}
