//! Streams over a striped log: concurrent appenders (single appends and
//! batches) write entries belonging to several streams at once, across
//! stripes, while crashed writers leave tokens of some streams unwritten
//! (holes inside the streams, filled as junk by the readers). Then, for
//! every stream S:
//! - `read_stream(S, 0, tail)` returns exactly S's acknowledged entries, in
//!   address order, with their values and stream sets (junk skipped), and
//!   so does any sub-range;
//! - `stream_tail(S)` is the last address granted to S (a junk address if
//!   a crashed writer took it);
//! - each entry's backpointer for S is the previous address granted to S
//!   (possibly junk), and the sequencer lists exactly S's granted
//!   addresses;
//! - the whole log passes the history check.
//!
//! The last test reproduces a bug: after the sequencer restarts, a stream
//! read misses the stream's entries below the bootstrap point.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use corfu::cluster::Shape;
use corfu::core::client::{HoleFillPolicy, LogClient, LogClientOptions};
use corfu::core::types::{Address, StreamId};
use corfu::local::{LocalCluster, LocalOptions};
use support::history::{check_replicas, History, Outcome, Raw};
use support::within;

const TASKS: usize = 12;
const ROUNDS: usize = 50;

async fn run_streams(nodes: usize, shape: Shape, label: &'static str) {
    let dir = tempfile::tempdir().unwrap();
    let cluster = support::local_cluster(&dir, nodes, shape).await;
    let stripes = cluster.layout().segments[0].stripes.len();
    assert!(stripes >= 2, "{label}: the layout has {stripes} stripe(s)");
    let mut config = cluster.client_config();
    config.client = LogClientOptions {
        hole_fill: HoleFillPolicy::WaitThenFill,
        hole_fill_timeout_ms: 50,
        ..LogClientOptions::default()
    };
    let raw = Arc::new(Raw::new(
        config.endpoint().unwrap(),
        cluster.layout().clone(),
    ));

    let s: Vec<StreamId> = (0..4)
        .map(|k| StreamId::from_name(&format!("{label}-s{k}")))
        .collect();
    let sets: Vec<Vec<StreamId>> = vec![
        vec![],
        vec![s[0]],
        vec![s[1]],
        vec![s[0], s[1]],
        vec![s[2]],
        vec![s[3], s[1], s[2]],
        vec![s[3]],
        vec![s[0], s[3]],
    ];

    let history = Arc::new(History::new());
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(LogClient::connect(&config).await.unwrap());
    }
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let client = clients[t % clients.len()].clone();
        let history = history.clone();
        let sets = sets.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..ROUNDS {
                if (t + i) % 4 == 0 {
                    let entries = (0..1 + (t + i) % 6)
                        .map(|k| {
                            (
                                format!("{label}/t{t}/i{i}/b{k}").into_bytes(),
                                sets[(t * 3 + i + k) % sets.len()].clone(),
                            )
                        })
                        .collect();
                    for r in history.append_batch(&client, entries).await {
                        r.unwrap_or_else(|e| panic!("task {t}: append_batch: {e}"));
                    }
                } else {
                    let value = format!("{label}/t{t}/i{i}").into_bytes();
                    history
                        .append(&client, value, &sets[(t * 5 + i) % sets.len()])
                        .await
                        .unwrap_or_else(|e| panic!("task {t}: append: {e}"));
                }
            }
        }));
    }
    // Crashed writers: tokens of stream sets that nobody writes, taken
    // between appends of this task so that they spread over the run.
    let crasher = {
        let raw = raw.clone();
        let sets = sets.clone();
        let client = clients[0].clone();
        let history = history.clone();
        tokio::spawn(async move {
            let mut abandoned: Vec<(Address, Vec<StreamId>)> = Vec::new();
            for c in 0..2 * ROUNDS {
                let set = &sets[1 + c % (sets.len() - 1)];
                if c % 2 == 1 {
                    let value = format!("{label}/crasher/{c}").into_bytes();
                    history.append(&client, value, set).await.unwrap();
                    continue;
                }
                let count = 1 + (c / 2 % 2) as u32;
                for (address, _) in raw.token(count, set, |_| Vec::new()).await {
                    abandoned.push((address, set.clone()));
                }
            }
            abandoned
        })
    };
    let mut abandoned = within(60, "writers", async {
        for task in tasks {
            task.await.unwrap();
        }
        crasher.await.unwrap()
    })
    .await;
    // The last grant of s0 is abandoned too: its stream tail is junk.
    for (address, _) in raw.token(1, &[s[0]], |_| Vec::new()).await {
        abandoned.push((address, vec![s[0]]));
    }

    let reader = LogClient::connect(&config).await.unwrap();
    let tail = reader.tail().await.unwrap();
    let ops = history.ops();
    // Every address granted to each stream: acknowledged and abandoned.
    let mut granted: BTreeMap<StreamId, BTreeSet<Address>> = BTreeMap::new();
    for op in &ops {
        let Outcome::Acked(address) = op.outcome else {
            panic!("{label}: an append was not acknowledged: {op:?}");
        };
        for stream in &op.streams {
            granted.entry(*stream).or_default().insert(address);
        }
    }
    for (address, streams) in &abandoned {
        for stream in streams {
            granted.entry(*stream).or_default().insert(*address);
        }
    }

    for (k, &stream) in s.iter().enumerate() {
        let name = format!("{label}-s{k}");
        let grants = &granted[&stream];
        let entries = within(30, "read_stream", reader.read_stream(stream, 0, tail))
            .await
            .unwrap_or_else(|e| panic!("{name}: read_stream: {e}"));
        // Exactly the acknowledged entries of the stream, in address order.
        let mut expected: Vec<(Address, &[u8], &[StreamId])> = ops
            .iter()
            .filter(|op| op.streams.contains(&stream))
            .map(|op| match op.outcome {
                Outcome::Acked(a) => (a, op.value.as_slice(), op.streams.as_slice()),
                _ => unreachable!(),
            })
            .collect();
        expected.sort_unstable_by_key(|e| e.0);
        let got: Vec<Address> = entries.iter().map(|(a, _)| *a).collect();
        let want: Vec<Address> = expected.iter().map(|e| e.0).collect();
        assert_eq!(got, want, "{name}: the stream's addresses");
        for ((address, entry), (_, value, streams)) in entries.iter().zip(&expected) {
            assert_eq!(entry.payload, *value, "{name}: the value at {address}");
            let mut members: Vec<StreamId> = entry.streams.iter().map(|h| h.stream).collect();
            members.sort_unstable();
            assert_eq!(
                members, *streams,
                "{name}: the streams of the entry at {address}"
            );
            // The backpointer: the previous address granted to the stream.
            let header = entry.streams.iter().find(|h| h.stream == stream).unwrap();
            let previous = grants.range(..address).next_back().copied();
            assert_eq!(
                header.backpointer, previous,
                "{name}: the backpointer of the entry at {address}"
            );
        }
        // The stream tail is the last grant, junk or not.
        let last = grants.last().copied();
        assert_eq!(
            reader.stream_tail(stream).await.unwrap(),
            last,
            "{name}: stream tail"
        );
        // The sequencer lists exactly the stream's grants.
        let listed = raw.stream_addresses(stream, 0, tail).await;
        assert_eq!(
            listed,
            grants.iter().copied().collect::<Vec<_>>(),
            "{name}: the sequencer's addresses"
        );
        // Any window reads as the matching part of the whole stream.
        for (from, to) in [
            (tail / 3, 2 * tail / 3),
            (0, 1),
            (want[want.len() / 2], tail),
        ] {
            let window = reader.read_stream(stream, from, to).await.unwrap();
            let part: Vec<_> = entries
                .iter()
                .filter(|(a, _)| (from..to).contains(a))
                .cloned()
                .collect();
            assert_eq!(window, part, "{name}: read_stream({from}, {to})");
        }
        let junk = grants.len() - entries.len();
        eprintln!(
            "{name}: {} entries, {junk} abandoned grants skipped, tail {last:?}",
            entries.len()
        );
    }
    assert!(
        abandoned
            .iter()
            .any(|(a, _)| Some(*a) == granted[&s[0]].last().copied()),
        "s0 ends with an abandoned grant"
    );

    // A stream nobody wrote.
    let unused = StreamId::from_name(&format!("{label}-unused"));
    assert_eq!(reader.stream_tail(unused).await.unwrap(), None);
    assert!(reader
        .read_stream(unused, 0, tail)
        .await
        .unwrap()
        .is_empty());

    let (report, log) = within(60, "history check", history.check_log(&reader)).await;
    assert_eq!(report.junk, abandoned.len(), "{label}: {report}");
    assert_eq!(report.acked, ops.len(), "{label}: {report}");
    check_replicas(&raw.endpoint, cluster.layout(), report.tail, Some(&log)).await;
    raw.endpoint.close();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_three_stripes_of_one() {
    run_streams(3, Shape::new(3, 1), "stripes3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_two_stripes_of_chains_of_two() {
    run_streams(4, Shape::new(2, 2), "stripes2x2").await;
}

/// After the sequencer restarts (losing its soft state) and is bootstrapped
/// again from the log units' tails, a stream read over the whole log still
/// returns every entry of the stream: below the bootstrap point the
/// sequencer's index knows only the recovered tail, so a reader must follow
/// the backpointers there (DESIGN.md §4 "Streams", the sequencer module's
/// "Bootstrap" rule).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_whole_after_the_sequencer_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let shape = Shape::new(3, 1);
    let mut cluster = LocalCluster::start(
        &dir.path().join("cluster"),
        3,
        LocalOptions {
            shape,
            ..LocalOptions::default()
        },
    )
    .await
    .unwrap();
    let mut config = cluster.client_config();
    config.client.hole_fill_timeout_ms = 50;
    let client = LogClient::connect(&config).await.unwrap();
    let (s, t) = (
        StreamId::from_name("restart-s"),
        StreamId::from_name("restart-t"),
    );
    let mut expected = Vec::new();
    for i in 0..6 {
        let value = format!("before-{i}");
        let address = client
            .append(value.clone().into_bytes(), &[s])
            .await
            .unwrap();
        expected.push((address, value));
        client
            .append(format!("other-{i}").into_bytes(), &[t])
            .await
            .unwrap();
    }
    let last_before = expected.last().unwrap().0;

    // Node n1 hosts the active sequencer (and a log unit).
    cluster.stop_node(0).await.unwrap();
    cluster.restart_node(0).await.unwrap();
    cluster.bootstrap(shape).await.unwrap();

    for i in 0..3 {
        let value = format!("after-{i}");
        let address = within(
            30,
            "append after the restart",
            client.append(value.clone().into_bytes(), &[s]),
        )
        .await
        .unwrap();
        expected.push((address, value));
    }
    let first_after = expected[6].0;
    let tail = client.tail().await.unwrap();
    assert_eq!(
        client.stream_tail(s).await.unwrap(),
        Some(expected.last().unwrap().0)
    );
    // The first entry after the restart points back to the last one before.
    match client.read(first_after).await.unwrap() {
        corfu::core::wire::logunit::ReadOutcome::Data(entry) => {
            assert_eq!(entry.streams[0].backpointer, Some(last_before));
        }
        other => panic!("address {first_after}: {other:?}"),
    }
    let stream: Vec<(Address, String)> = client
        .read_stream(s, 0, tail)
        .await
        .unwrap()
        .into_iter()
        .map(|(a, e)| (a, String::from_utf8(e.payload).unwrap()))
        .collect();
    assert_eq!(
        stream, expected,
        "read_stream after a sequencer restart must return the entries below the bootstrap too"
    );
    // Read in chunks (as a view catching up does), by a client that walks
    // the backpointers once and keeps what it found: every chunk, whether
    // answered by the walk or from what it kept, holds the same entries.
    for width in [1, 2, 3, 5] {
        let reader = LogClient::connect(&config).await.unwrap();
        let mut chunked = Vec::new();
        let mut from = 0;
        // Chunks up to the bootstrap point (past it, a void of 2^40
        // addresses), then the rest at once.
        while from < tail {
            let to = if from > last_before {
                tail
            } else {
                from + width
            };
            for (a, e) in reader.read_stream(s, from, to).await.unwrap() {
                chunked.push((a, String::from_utf8(e.payload).unwrap()));
            }
            from = to;
        }
        assert_eq!(chunked, expected, "chunks of {width}");
        // Starting in the middle of what the walk found.
        let middle = expected[2].0;
        let part = reader.read_stream(s, middle, tail).await.unwrap();
        assert_eq!(part.len(), expected.len() - 2, "from {middle}");
    }
    cluster.shutdown().await;
}
