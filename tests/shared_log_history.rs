//! The shared log under concurrent appenders, checked as a history: many
//! tasks on several clients append unique values (single appends and
//! batches, some to streams) while a reader tails the log, filling holes
//! after 50, 5 or 1 ms (the short waits keep it right behind the writers;
//! races it wins are forced in `shared_log_holes`). Then the whole log is
//! read and checked by `support::history` (every acknowledged append
//! readable at its address, one value per address and one address per
//! value, no unwritten address below the tail, real-time order, nothing
//! invented), every member of every chain is compared with raw reads, and
//! every read the tailing reader made is still what the log holds (reads
//! are stable).
//!
//! Layouts: one chain of 3, three stripes of one unit, two stripes of
//! chains of 2. The checker itself is tested on hand-made histories, one
//! per kind of violation. The last test reproduces a bug: an append whose
//! token predates an epoch change writes its old address in the new epoch.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use corfu::cluster::Shape;
use corfu::core::client::{LogClient, LogClientOptions};
use corfu::core::types::{Address, StreamId};
use corfu::core::wire::logunit::{Entry, ReadOutcome, StreamHeader};
use corfu::local::{LocalCluster, LocalOptions};
use support::history::{
    assert_stable, check_ops, check_replicas, tail_reader, History, Op, Outcome,
};
use support::within;

/// Tasks appending at once, spread over `CLIENTS` clients.
const TASKS: usize = 24;
const CLIENTS: usize = 3;
/// Appends (single or batch) per task.
const ROUNDS: usize = 200;

fn stream_sets() -> Vec<Vec<StreamId>> {
    let (a, b, c) = (
        StreamId::from_name("history-a"),
        StreamId::from_name("history-b"),
        StreamId::from_name("history-c"),
    );
    vec![vec![], vec![a], vec![b], vec![a, b], vec![c], vec![c, a, b]]
}

async fn run_history(nodes: usize, shape: Shape, label: &str, reader_fill_ms: u64) {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let cluster = support::local_cluster(&dir, nodes, shape).await;
    let mut config = cluster.client_config();
    config.client = LogClientOptions {
        hole_fill_timeout_ms: 50,
        ..LogClientOptions::default()
    };
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(LogClient::connect(&config).await.unwrap());
    }
    let history = Arc::new(History::new());
    let stop = Arc::new(AtomicBool::new(false));
    let reader = LogClient::connect_with(
        config.endpoint().unwrap(),
        config.layout_servers.clone(),
        LogClientOptions {
            hole_fill_timeout_ms: reader_fill_ms,
            ..LogClientOptions::default()
        },
    )
    .await
    .unwrap();

    let sets = stream_sets();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let client = clients[t % CLIENTS].clone();
        let history = history.clone();
        let sets = sets.clone();
        let label = label.to_string();
        tasks.push(tokio::spawn(async move {
            for i in 0..ROUNDS {
                let streams = &sets[(t * 7 + i) % sets.len()];
                if (t + i) % 5 == 0 {
                    // A batch of 1 to 8 entries, with varied stream sets.
                    let entries = (0..1 + (t + i) % 8)
                        .map(|k| {
                            (
                                format!("{label}/t{t}/i{i}/b{k}").into_bytes(),
                                sets[(t + i + k) % sets.len()].clone(),
                            )
                        })
                        .collect();
                    for r in history.append_batch(&client, entries).await {
                        r.unwrap_or_else(|e| panic!("task {t}: append_batch: {e}"));
                    }
                } else {
                    let value = format!("{label}/t{t}/i{i}").into_bytes();
                    history
                        .append(&client, value, streams)
                        .await
                        .unwrap_or_else(|e| panic!("task {t}: append: {e}"));
                }
            }
        }));
    }
    // The reader runs in this task: `LogClient::read_range`'s future is not
    // accepted by `tokio::spawn` ("implementation of `FnOnce` is not general
    // enough", from the closure in `Inner::read_addresses`).
    let writers = async {
        for task in tasks {
            task.await.unwrap();
        }
        let appended = started.elapsed();
        stop.store(true, Ordering::SeqCst);
        appended
    };
    let (appended, observed) = tokio::join!(
        within(60, "the appenders", writers),
        within(60, "the tailing reader", tail_reader(reader, stop.clone()))
    );

    // The final read uses a fresh client: nothing it knows comes from the run.
    let checker = LogClient::connect(&config).await.unwrap();
    let (report, log) = within(60, "the history check", history.check_log(&checker)).await;
    let attempted = history.ops().len();
    assert_eq!(
        report.acked, attempted,
        "{label}: every append was acknowledged: {report}"
    );
    assert_eq!(
        report.data, report.acked,
        "{label}: the log holds exactly the acknowledged values: {report}"
    );
    assert_eq!(
        report.tail as usize,
        report.data + report.junk,
        "{label}: {report}"
    );

    // Reads are stable: what the tailing reader saw is what the log holds.
    assert_stable(label, &observed, &log);

    // Every member of every chain holds what the tail answered.
    let endpoint = config.endpoint().unwrap();
    let compared = check_replicas(&endpoint, cluster.layout(), report.tail, Some(&log)).await;
    eprintln!(
        "{label}: {report}; the tailing reader saw {} addresses; {compared} replica pairs compared; \
         appends took {appended:?}, all {:?}",
        observed.len(),
        started.elapsed()
    );
    endpoint.close();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_chain_of_three_keeps_a_linearizable_history() {
    run_history(3, Shape::default(), "chain3", 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_stripes_of_one_keep_a_linearizable_history() {
    run_history(3, Shape::new(3, 1), "stripes3", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stripes_of_chains_of_two_keep_a_linearizable_history() {
    run_history(4, Shape::new(2, 2), "stripes2x2", 5).await;
}

// ---------------------------------------------------------------------
// The checker itself must catch each kind of violation.
// ---------------------------------------------------------------------

fn op(
    value: &str,
    streams: &[StreamId],
    invoke: u64,
    response: Option<u64>,
    outcome: Outcome,
) -> Op {
    Op {
        value: value.as_bytes().to_vec(),
        streams: streams.to_vec(),
        invoke,
        response,
        outcome,
    }
}

fn data(address: Address, value: &str, streams: &[StreamId]) -> (Address, ReadOutcome) {
    (
        address,
        ReadOutcome::Data(Entry {
            id: None,
            streams: streams
                .iter()
                .map(|&stream| StreamHeader {
                    stream,
                    backpointer: None,
                })
                .collect(),
            payload: value.as_bytes().to_vec(),
        }),
    )
}

#[test]
fn the_checker_accepts_a_good_history_and_catches_each_violation() {
    let s = StreamId::from_name("s");
    // A acked at 0 before B began; B acked at 2; C crashed (pending) but its
    // head write was completed at 1; D failed and is absent; 3 is junk.
    let ops = vec![
        op("A", &[s], 0, Some(1), Outcome::Acked(0)),
        op("B", &[], 2, Some(5), Outcome::Acked(2)),
        op("C", &[s], 3, None, Outcome::Pending),
        op(
            "D",
            &[],
            4,
            Some(6),
            Outcome::Failed("retries exhausted".into()),
        ),
    ];
    let good = vec![
        data(0, "A", &[s]),
        data(1, "C", &[s]),
        data(2, "B", &[]),
        (3, ReadOutcome::Junk),
    ];
    let report = check_ops(&ops, &good).expect("a good history passes");
    assert_eq!(
        (
            report.acked,
            report.failed,
            report.pending,
            report.pending_present,
            report.junk
        ),
        (2, 1, 1, 1, 1)
    );

    let must_fail =
        |what: &str, ops: &[Op], log: &[(Address, ReadOutcome)], needle: &str| match check_ops(
            ops, log,
        ) {
            Ok(r) => panic!("{what}: the checker passed ({r})"),
            Err(e) => assert!(e.contains(needle), "{what}: {e}"),
        };
    // (a) an acknowledged value missing (junk at its address).
    let mut log = good.clone();
    log[2] = (2, ReadOutcome::Junk);
    must_fail("lost ack", &ops, &log, "(a)");
    // (a) an acknowledged value at another address.
    let mut moved = ops.clone();
    moved[1].outcome = Outcome::Acked(3);
    must_fail("moved ack", &moved, &good, "(a)");
    // (b) a value at two addresses.
    let mut log = good.clone();
    log[3] = data(3, "C", &[s]);
    must_fail("duplicate", &ops, &log, "(b)");
    // (b) two acknowledgements at one address.
    let mut twice = ops.clone();
    twice[3].outcome = Outcome::Acked(0);
    must_fail("shared address", &twice, &good, "(b)");
    // (c) an unwritten address below the tail.
    let mut log = good.clone();
    log[3] = (3, ReadOutcome::Unwritten);
    must_fail("hole", &ops, &log, "(c)");
    // (d) A finished before B began, but B sits below A.
    let swapped_ops = vec![
        op("A", &[], 0, Some(1), Outcome::Acked(1)),
        op("B", &[], 2, Some(3), Outcome::Acked(0)),
    ];
    let swapped = vec![data(0, "B", &[]), data(1, "A", &[])];
    must_fail("real time", &swapped_ops, &swapped, "(d)");
    // ... which is fine if they overlapped.
    let overlapping = vec![
        op("A", &[], 0, Some(3), Outcome::Acked(1)),
        op("B", &[], 1, Some(2), Outcome::Acked(0)),
    ];
    check_ops(&overlapping, &swapped).expect("concurrent appends may land in any order");
    // (d) also binds a failed append that is in the log.
    let failed_first = vec![
        op("A", &[], 0, Some(1), Outcome::Failed("timeout".into())),
        op("B", &[], 2, Some(3), Outcome::Acked(0)),
    ];
    must_fail("real time, failed", &failed_first, &swapped, "(d)");
    // (e) an invented value, and a value with the wrong streams.
    let mut log = good.clone();
    log[3] = data(3, "Z", &[]);
    must_fail("invented", &ops, &log, "(e)");
    let mut log = good.clone();
    log[2] = data(2, "B", &[s]);
    must_fail("wrong streams", &ops, &log, "(e)");
}

// ---------------------------------------------------------------------
// Real-time order across an epoch change.
// ---------------------------------------------------------------------

/// A reconfiguration (DESIGN.md §4, "Layout service") seals the log units
/// and the sequencer at epoch 2, has the layout servers decide the epoch-2
/// layout, and bootstraps the sequencer from the tails the units report.
/// An append whose token came from the epoch-1 sequencer but whose head
/// write was refused by the seal has written nothing anywhere: its address
/// is not in the reported tails, so the new sequencer may grant it (or an
/// address below it) again. Such an append must take a new token in the
/// new epoch; if it writes its old address instead, an append that begins
/// after it was acknowledged can land below it (breaking real-time order)
/// and the stream index of the new sequencer never learns its address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_whose_token_predates_an_epoch_change_keeps_real_time_order() {
    use corfu::core::layout_service::proposer::Proposer;
    use corfu::core::wire::logunit::{LogUnitRequest, LogUnitResponse};
    use corfu::core::wire::sequencer::{SequencerRequest, SequencerResponse};
    use corfu::core::wire::{Request, Response};
    use support::history::Raw;

    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(&dir.path().join("cluster"), 3, LocalOptions::default())
        .await
        .unwrap();
    let mut config = cluster.client_config();
    config.client.hole_fill_timeout_ms = 50;
    let endpoint = config.endpoint().unwrap();
    let layout1 = cluster.layout().clone();
    let raw = Raw::new(endpoint.clone(), layout1.clone());
    let history = Arc::new(History::new());
    let first = LogClient::connect(&config).await.unwrap();
    let second = LogClient::connect(&config).await.unwrap();
    let s = StreamId::from_name("epoch-change");
    for i in 0..4 {
        history
            .append(&second, format!("before-{i}").into_bytes(), &[s])
            .await
            .unwrap();
    }
    // A crashed writer's token: a hole just below the next append.
    let abandoned = raw.token(1, &[], |_| Vec::new()).await[0].0;
    let sequencer = layout1.active_sequencer().unwrap().addr.clone();
    let units: Vec<String> = layout1
        .all_log_units()
        .iter()
        .map(|n| n.addr.clone())
        .collect();
    let seal_unit = |unit: String| {
        let raw = &raw;
        async move {
            match raw
                .call(&unit, Request::LogUnit(LogUnitRequest::Seal { epoch: 2 }))
                .await
            {
                Response::LogUnit(LogUnitResponse::Tails(_)) => {}
                other => panic!("seal {unit}: {other:?}"),
            }
        }
    };

    // The reconfiguration has sealed the chain's head when A appends: A's
    // token comes from the epoch-1 sequencer, its head write is refused.
    let head = raw.chain(abandoned + 1)[0].clone();
    seal_unit(head.clone()).await;
    let a = {
        let history = history.clone();
        let first = first.clone();
        tokio::spawn(async move { history.append(&first, b"A".to_vec(), &[s]).await })
    };
    // Wait until A holds its token.
    within(10, "A's token", async {
        loop {
            let request = Request::Sequencer(SequencerRequest::Tail { streams: vec![] });
            match raw.call(&sequencer, request).await {
                Response::Sequencer(SequencerResponse::Tail { next, .. })
                    if next > abandoned + 1 =>
                {
                    break
                }
                Response::Sequencer(SequencerResponse::Tail { .. }) => {}
                other => panic!("sequencer tail: {other:?}"),
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    })
    .await;
    // The reconfiguration completes: every unit and the sequencer sealed,
    // epoch 2 decided (same segments), the sequencer bootstrapped from the
    // units' tails.
    for unit in units.into_iter().filter(|u| *u != head) {
        seal_unit(unit).await;
    }
    let granted = match raw
        .call(
            &sequencer,
            Request::Sequencer(SequencerRequest::Seal { epoch: 2 }),
        )
        .await
    {
        Response::Sequencer(SequencerResponse::Sealed {
            served: Some((1, next)),
            ..
        }) => next,
        other => panic!("seal the sequencer: {other:?}"),
    };
    let mut layout2 = layout1.clone();
    layout2.epoch = 2;
    // Epoch 2's sequencer starts above everything epoch 1's granted.
    layout2.grants = corfu::core::layout::Grants::from(granted);
    let proposer = Proposer::new(
        endpoint.clone(),
        config.layout_servers.clone(),
        rand::random(),
    );
    let layout2 = proposer.propose(layout2).await.unwrap();
    assert_eq!(layout2.epoch, 2);
    corfu::cluster::bootstrap_sequencer(&endpoint, &layout2)
        .await
        .unwrap();

    let a_address = within(30, "A", a).await.unwrap().unwrap();
    // B begins after A was acknowledged.
    let b_address = history.append(&second, b"B".to_vec(), &[s]).await.unwrap();

    let tail = second.tail().await.unwrap();
    let log = second.read_range(0, tail).await.unwrap();
    let stream: Vec<Address> = second
        .read_stream(s, 0, tail)
        .await
        .unwrap()
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    let facts = format!(
        "abandoned token {abandoned}; A acknowledged at {a_address}; B (began after A's \
         acknowledgement) at {b_address}; tail {tail}; stream addresses {stream:?}"
    );
    eprintln!("epoch change: {facts}");
    assert!(
        a_address < b_address,
        "real-time order broken across the epoch change: {facts}"
    );
    assert!(
        stream.contains(&a_address) && stream.contains(&b_address),
        "read_stream misses an acknowledged entry: {facts}"
    );
    if let Err(violations) = history.check(&log) {
        panic!("history check failed: {violations}");
    }
    endpoint.close();
    cluster.shutdown().await;
}
