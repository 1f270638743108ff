//! Holes in the shared log: writers that crash between taking a token and
//! finishing the write, and readers that complete what they left.
//!
//! - Crashed writers (raw tokens never written, written to the chain head
//!   only, or to all but the tail), interleaved with normal appenders,
//!   while a reader tails the log filling holes after 50 ms: the history
//!   check passes, every half-written value is completed at its address
//!   and every member of every chain agrees.
//! - A write stopped mid-chain is completed by a reader copying the head's
//!   value down the chain; a fill stopped mid-chain is completed as junk.
//! - Hole fill policies: `never` (reads answer unwritten, stream reads
//!   fail), `immediately` (no wait), `wait_then_fill` (a writer that
//!   finishes during the wait wins; otherwise junk after the wait);
//!   addresses at or above the tail are never filled.
//! - An append whose address a filler junked first retries at a new
//!   address and is acknowledged exactly once (or gives up after
//!   `append_retries_max` tokens, leaving its value nowhere).
//! - A `corfu log append` process killed mid-run (SIGKILL) leaves holes
//!   that readers fill; skipped if the CLI has no `log append`.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corfu::cluster::Shape;
use corfu::core::client::{ClientError, HoleFillPolicy, LogClient, LogClientOptions};
use corfu::core::client_config::ClientConfig;
use corfu::core::types::{Address, StreamId};
use corfu::core::wire::logunit::{Entry, Existing, ReadOutcome, WriteOutcome};
use corfu::local::LocalCluster;
use support::history::{assert_stable, check_replicas, tail_reader, History, OpId, Outcome, Raw};
use support::within;

struct Setup {
    _dir: tempfile::TempDir,
    cluster: LocalCluster,
    config: ClientConfig,
    raw: Arc<Raw>,
}

async fn start(nodes: usize, shape: Shape) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let cluster = support::local_cluster(&dir, nodes, shape).await;
    let config = cluster.client_config();
    let raw = Arc::new(Raw::new(
        config.endpoint().unwrap(),
        cluster.layout().clone(),
    ));
    Setup {
        _dir: dir,
        cluster,
        config,
        raw,
    }
}

impl Setup {
    async fn client(&self, hole_fill: HoleFillPolicy, hole_fill_timeout_ms: u64) -> LogClient {
        let options = LogClientOptions {
            hole_fill,
            hole_fill_timeout_ms,
            ..LogClientOptions::default()
        };
        LogClient::connect_with(
            self.config.endpoint().unwrap(),
            self.config.layout_servers.clone(),
            options,
        )
        .await
        .unwrap()
    }

    async fn shutdown(self) {
        self.raw.endpoint.close();
        self.cluster.shutdown().await;
    }
}

fn data(entry: &Entry) -> ReadOutcome {
    ReadOutcome::Data(entry.clone())
}

fn single<T>(mut v: Vec<T>) -> T {
    assert_eq!(v.len(), 1, "expected exactly one item");
    v.pop().unwrap()
}

/// Appenders: `tasks` tasks doing `rounds` appends each on `clients`,
/// stream sets varying; values `{label}/t/i`. All must be acknowledged
/// unless `may_fail`.
fn spawn_appenders(
    history: &Arc<History>,
    clients: &[LogClient],
    tasks: usize,
    rounds: usize,
    label: &'static str,
    may_fail: bool,
) -> Vec<tokio::task::JoinHandle<()>> {
    let sets = [
        vec![],
        vec![StreamId::from_name("holes-a")],
        vec![
            StreamId::from_name("holes-a"),
            StreamId::from_name("holes-b"),
        ],
    ];
    (0..tasks)
        .map(|t| {
            let client = clients[t % clients.len()].clone();
            let history = history.clone();
            let sets = sets.clone();
            tokio::spawn(async move {
                for i in 0..rounds {
                    let value = format!("{label}/{t}/{i}").into_bytes();
                    let result = history.append(&client, value, &sets[(t + i) % 3]).await;
                    if !may_fail {
                        result.unwrap_or_else(|e| panic!("{label} task {t}: append {i}: {e}"));
                    }
                }
            })
        })
        .collect()
}

async fn join_all(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for task in tasks {
        task.await.unwrap();
    }
}

/// How far a crashed writer got with one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Crash {
    /// Took the token, wrote nothing.
    Nothing,
    /// Wrote the chain head only.
    Head,
    /// Wrote every member but the tail.
    AllButTail,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_writers_leave_holes_that_readers_fill() {
    let setup = start(3, Shape::default()).await;
    let history = Arc::new(History::new());
    let clients = vec![
        setup.client(HoleFillPolicy::WaitThenFill, 50).await,
        setup.client(HoleFillPolicy::WaitThenFill, 50).await,
    ];
    let appenders = spawn_appenders(&history, &clients, 8, 60, "ok", false);

    // The crashed writers: tokens of 1 to 3 addresses, each address left at
    // a different stage. Returns what each address must end up holding.
    // Between crashes it appends normally, so the crashes spread over the
    // run.
    let crasher = {
        let raw = setup.raw.clone();
        let history = history.clone();
        let client = clients[0].clone();
        tokio::spawn(async move {
            let streams = [vec![], vec![StreamId::from_name("holes-a")]];
            let mut expected: Vec<(Address, Crash, ReadOutcome)> = Vec::new();
            for c in 0..36usize {
                let value = format!("between-crashes/{c}").into_bytes();
                history
                    .append(&client, value, &streams[c % 2])
                    .await
                    .unwrap();
                let count = 1 + (c % 3) as u32;
                let set = &streams[c % 2];
                let values: Vec<Vec<u8>> = (0..count)
                    .map(|i| format!("crash/{c}/{i}").into_bytes())
                    .collect();
                // Invoked before the token is taken; never answered.
                for v in &values {
                    history.invoke(v.clone(), set);
                }
                let entries = raw.token(count, set, |i| values[i as usize].clone()).await;
                for (i, (address, entry)) in entries.into_iter().enumerate() {
                    let stage = [Crash::Nothing, Crash::Head, Crash::AllButTail][(c + i) % 3];
                    let chain = raw.chain(address);
                    let reach = match stage {
                        Crash::Nothing => 0,
                        Crash::Head => 1,
                        Crash::AllButTail => chain.len() - 1,
                    };
                    let mut holds = ReadOutcome::Junk;
                    for (k, unit) in chain[..reach].iter().enumerate() {
                        match raw.write(unit, address, &entry).await {
                            WriteOutcome::Ok => holds = data(&entry),
                            WriteOutcome::Overwritten(Existing::Data(e)) if e == entry => {
                                holds = data(&entry)
                            }
                            // A reader junked the head first (possible only
                            // if this task stalled for 50 ms): the address
                            // is junk, stop.
                            WriteOutcome::Overwritten(Existing::Junk) if k == 0 => break,
                            other => panic!("crashed writer at {address} on {unit}: {other:?}"),
                        }
                    }
                    expected.push((address, stage, holds));
                }
            }
            expected
        })
    };

    let stop = Arc::new(AtomicBool::new(false));
    let reader = setup.client(HoleFillPolicy::WaitThenFill, 50).await;
    let writers = async {
        join_all(appenders).await;
        let expected = crasher.await.unwrap();
        stop.store(true, Ordering::SeqCst);
        expected
    };
    let (expected, observed) = tokio::join!(
        within(60, "writers", writers),
        within(60, "tailing reader", tail_reader(reader, stop.clone()))
    );

    let checker = setup.client(HoleFillPolicy::WaitThenFill, 50).await;
    let (report, log) = within(60, "history check", history.check_log(&checker)).await;
    assert_stable("crashes", &observed, &log);
    let mut completed = 0;
    let mut junked = 0;
    for (address, stage, holds) in &expected {
        assert_eq!(
            support::history::at(&log, *address).unwrap(),
            holds,
            "address {address}, whose writer crashed at stage {stage:?}"
        );
        match holds {
            ReadOutcome::Data(_) => completed += 1,
            _ => junked += 1,
        }
    }
    assert_eq!(report.pending_present, completed, "{report}");
    assert!(report.junk >= junked, "{report}: {junked} holes expected");
    assert_eq!(report.failed, 0, "{report}");
    assert!(completed > 0 && junked > 0, "both kinds of crash happened");
    let compared = check_replicas(
        &setup.raw.endpoint,
        setup.cluster.layout(),
        report.tail,
        Some(&log),
    )
    .await;
    eprintln!(
        "crashes: {} crashed addresses ({completed} completed from the head, {junked} junked); \
         {compared} replica pairs agree",
        expected.len()
    );
    setup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_stopped_mid_chain_is_completed_down_the_chain() {
    let setup = start(3, Shape::default()).await;
    let raw = &setup.raw;
    let reader = setup.client(HoleFillPolicy::WaitThenFill, 50).await;
    let s = StreamId::from_name("mid-chain");

    // Head only, then all but the tail: a reader copies the head's value.
    let mut stream_entries = Vec::new();
    for reach in [1, 2] {
        let (address, entry) = single(
            raw.token(1, &[s], |_| format!("reach-{reach}").into_bytes())
                .await,
        );
        let chain = raw.chain(address);
        assert_eq!(chain.len(), 3);
        for unit in &chain[..reach] {
            assert_eq!(raw.write(unit, address, &entry).await, WriteOutcome::Ok);
        }
        let mut before = vec![data(&entry); reach];
        before.resize(3, ReadOutcome::Unwritten);
        assert_eq!(raw.read_members(address).await, before);
        let read = within(10, "read of a half-written address", reader.read(address))
            .await
            .unwrap();
        assert_eq!(read, data(&entry), "the reader completes the head's value");
        assert_eq!(
            raw.read_members(address).await,
            vec![data(&entry); 3],
            "every member of the chain holds the head's value after the read"
        );
        // The crashed writer coming back finds its own entry everywhere.
        for unit in &chain {
            assert_eq!(
                raw.write(unit, address, &entry).await,
                WriteOutcome::Overwritten(Existing::Data(entry.clone()))
            );
        }
        stream_entries.push((address, entry));
    }

    // The public `fill` completes a head-only write the same way.
    let (address, entry) = single(raw.token(1, &[s], |_| b"filled".to_vec()).await);
    let chain = raw.chain(address);
    assert_eq!(
        raw.write(&chain[0], address, &entry).await,
        WriteOutcome::Ok
    );
    assert_eq!(reader.fill(address).await.unwrap(), data(&entry));
    assert_eq!(raw.read_members(address).await, vec![data(&entry); 3]);
    stream_entries.push((address, entry));

    // A filler that junked only the head: the address is junk for good, a
    // late writer is refused and readers complete the junk.
    let (junked, late) = single(raw.token(1, &[s], |_| b"late".to_vec()).await);
    let chain = raw.chain(junked);
    assert_eq!(raw.fill(&chain[0], junked).await, WriteOutcome::Ok);
    assert_eq!(
        raw.write(&chain[0], junked, &late).await,
        WriteOutcome::Overwritten(Existing::Junk)
    );
    assert_eq!(reader.read(junked).await.unwrap(), ReadOutcome::Junk);
    assert_eq!(raw.read_members(junked).await, vec![ReadOutcome::Junk; 3]);

    // The stream holds the three completed entries (not the junk), each
    // pointing back to the previous grant of the stream.
    let tail = reader.tail().await.unwrap();
    let stream = reader.read_stream(s, 0, tail).await.unwrap();
    assert_eq!(stream, stream_entries);
    assert_eq!(reader.stream_tail(s).await.unwrap(), Some(junked));
    let mut previous = None;
    for (address, entry) in &stream {
        assert_eq!(entry.streams.len(), 1);
        assert_eq!(entry.streams[0].backpointer, previous);
        previous = Some(*address);
    }
    setup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole_fill_policies_never_immediately_and_wait_then_fill() {
    let setup = start(3, Shape::default()).await;
    let raw = &setup.raw;
    let never = setup.client(HoleFillPolicy::Never, 50).await;
    // Waits this long would fail the `within`s below: these must not wait.
    let immediately = setup.client(HoleFillPolicy::Immediately, 60_000).await;
    let patient = setup.client(HoleFillPolicy::WaitThenFill, 60_000).await;
    let brief = setup.client(HoleFillPolicy::WaitThenFill, 200).await;
    let s = StreamId::from_name("policies");

    // A hole in stream S below an acknowledged entry of S.
    let (hole, _) = single(raw.token(1, &[s], |_| b"never written".to_vec()).await);
    let after = never.append(b"after".to_vec(), &[s]).await.unwrap();
    assert_eq!(after, hole + 1);

    // `never`: the hole is reported, not filled.
    assert_eq!(never.read(hole).await.unwrap(), ReadOutcome::Unwritten);
    let range = never.read_range(hole, after + 1).await.unwrap();
    assert_eq!(range.len(), 2);
    assert_eq!(range[0], (hole, ReadOutcome::Unwritten));
    assert!(matches!(&range[1], (a, ReadOutcome::Data(e)) if *a == after && e.payload == b"after"));
    let tail = never.tail().await.unwrap();
    match never.read_stream(s, 0, tail).await {
        Err(ClientError::Unwritten { address }) => assert_eq!(address, hole),
        other => panic!("read_stream over a hole with policy never: {other:?}"),
    }
    assert_eq!(
        raw.read_members(hole).await,
        vec![ReadOutcome::Unwritten; 3]
    );

    // At or above the tail nothing was granted: every policy answers
    // unwritten at once and fills nothing.
    let beyond = tail + 3;
    for (name, client) in [
        ("never", &never),
        ("immediately", &immediately),
        ("patient", &patient),
    ] {
        let read = within(10, name, client.read(beyond)).await.unwrap();
        assert_eq!(read, ReadOutcome::Unwritten, "{name}: read beyond the tail");
        let range = within(10, name, client.read_range(tail, tail + 2))
            .await
            .unwrap();
        assert!(
            range.iter().all(|(_, o)| *o == ReadOutcome::Unwritten),
            "{name}: {range:?}"
        );
    }
    assert_eq!(
        raw.read_members(beyond).await,
        vec![ReadOutcome::Unwritten; 3]
    );
    assert_eq!(
        raw.read_members(tail).await,
        vec![ReadOutcome::Unwritten; 3]
    );

    // `immediately`: fills without waiting its (60 s) timeout.
    let read = within(10, "immediate fill", immediately.read(hole))
        .await
        .unwrap();
    assert_eq!(read, ReadOutcome::Junk);
    assert_eq!(raw.read_members(hole).await, vec![ReadOutcome::Junk; 3]);
    assert_eq!(never.read(hole).await.unwrap(), ReadOutcome::Junk);
    let stream = never.read_stream(s, 0, tail).await.unwrap();
    assert_eq!(stream.len(), 1);
    assert_eq!(stream[0].0, after);
    assert_eq!(stream[0].1.streams[0].backpointer, Some(hole));

    // `wait_then_fill`: a writer that finishes during the wait wins.
    let (late, entry) = single(
        raw.token(1, &[s], |_| b"finishes during the wait".to_vec())
            .await,
    );
    let write = async {
        // Only to let the read start first; the assertion below holds for
        // any interleaving.
        tokio::time::sleep(Duration::from_millis(100)).await;
        for unit in raw.chain(late) {
            assert_eq!(raw.write(&unit, late, &entry).await, WriteOutcome::Ok);
        }
    };
    let (read, ()) = tokio::join!(within(20, "patient read", patient.read(late)), write);
    assert_eq!(read.unwrap(), data(&entry));

    // `wait_then_fill`: a writer that never comes is junked after the wait.
    let (gone, _) = single(raw.token(1, &[], |_| b"gone".to_vec()).await);
    let began = Instant::now();
    let read = within(10, "brief read", brief.read(gone)).await.unwrap();
    let waited = began.elapsed();
    assert_eq!(read, ReadOutcome::Junk);
    assert!(
        waited >= Duration::from_millis(200),
        "filled after {waited:?}, before the 200 ms hole fill timeout"
    );
    assert_eq!(raw.read_members(gone).await, vec![ReadOutcome::Junk; 3]);

    // The patient client waits for a writer: a range read over a hole
    // whose writer finishes meanwhile returns its data too.
    let (hole2, entry2) = single(raw.token(1, &[], |_| b"range writer".to_vec()).await);
    let write = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        for unit in raw.chain(hole2) {
            assert_eq!(raw.write(&unit, hole2, &entry2).await, WriteOutcome::Ok);
        }
    };
    let (range, ()) = tokio::join!(
        within(
            20,
            "patient range read",
            patient.read_range(hole, hole2 + 1)
        ),
        write
    );
    let range = range.unwrap();
    assert_eq!(range.last().unwrap(), &(hole2, data(&entry2)));
    assert!(range.iter().all(|(_, o)| *o != ReadOutcome::Unwritten));
    setup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_that_loses_its_address_to_a_filler_retries_and_is_acknowledged_once() {
    let setup = start(3, Shape::default()).await;
    let writer = setup.client(HoleFillPolicy::WaitThenFill, 50).await;
    let filler = setup.client(HoleFillPolicy::Immediately, 50).await;
    let history = History::new();
    let s = StreamId::from_name("lost");
    let retries = writer.options().append_retries_max;
    assert_eq!(retries, 8, "the default this test is written for");

    // A filler junks the next address first (as if it had read the granted
    // address before the writer's head write arrived).
    let t = writer.tail().await.unwrap();
    assert_eq!(filler.fill(t).await.unwrap(), ReadOutcome::Junk);
    let a = history
        .append(&writer, b"lost once".to_vec(), &[s])
        .await
        .unwrap();
    assert_eq!(a, t + 1, "the append retries at the next address");
    assert_eq!(writer.read(t).await.unwrap(), ReadOutcome::Junk);
    match writer.read(a).await.unwrap() {
        ReadOutcome::Data(entry) => {
            assert_eq!(entry.payload, b"lost once");
            // The lost address was granted to the stream: the backpointer
            // names it although it is junk.
            assert_eq!(entry.streams[0].backpointer, Some(t));
        }
        other => panic!("the acknowledged append reads as {other:?}"),
    }

    // Seven lost addresses: acknowledged with the eighth token.
    let t = writer.tail().await.unwrap();
    for k in 0..u64::from(retries) - 1 {
        assert_eq!(filler.fill(t + k).await.unwrap(), ReadOutcome::Junk);
    }
    let a = history
        .append(&writer, b"lost seven times".to_vec(), &[s])
        .await
        .unwrap();
    assert_eq!(a, t + u64::from(retries) - 1);

    // Eight lost addresses: the append gives up and its value is nowhere.
    let t = writer.tail().await.unwrap();
    for k in 0..u64::from(retries) {
        assert_eq!(filler.fill(t + k).await.unwrap(), ReadOutcome::Junk);
    }
    match history
        .append(&writer, b"lost eight times".to_vec(), &[s])
        .await
    {
        Err(ClientError::AppendRetriesExhausted { attempts }) => assert_eq!(attempts, retries),
        other => panic!("an append that lost {retries} addresses: {other:?}"),
    }
    assert_eq!(writer.tail().await.unwrap(), t + u64::from(retries));

    // A batch of which two entries lose their addresses.
    let t = writer.tail().await.unwrap();
    filler.fill(t).await.unwrap();
    filler.fill(t + 2).await.unwrap();
    let entries = (0..4)
        .map(|i| (format!("batch-{i}").into_bytes(), vec![s]))
        .collect();
    let mut addresses: Vec<Address> = history
        .append_batch(&writer, entries)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert!(
        !addresses.contains(&t) && !addresses.contains(&(t + 2)),
        "{addresses:?}"
    );
    addresses.sort_unstable();
    addresses.dedup();
    assert_eq!(addresses.len(), 4);

    let (report, log) = history.check_log(&writer).await;
    assert_eq!(
        (report.acked, report.failed, report.failed_present),
        (6, 1, 0),
        "{report}"
    );
    assert_eq!(report.junk, 1 + 7 + 8 + 2, "{report}");
    // The stream skips the junk and holds each acknowledged value once.
    let stream = writer.read_stream(s, 0, report.tail).await.unwrap();
    let acked: Vec<Address> = history
        .ops()
        .iter()
        .filter_map(|op| match op.outcome {
            Outcome::Acked(a) => Some(a),
            _ => None,
        })
        .collect();
    let mut expected = acked.clone();
    expected.sort_unstable();
    assert_eq!(stream.iter().map(|(a, _)| *a).collect::<Vec<_>>(), expected);
    check_replicas(
        &setup.raw.endpoint,
        setup.cluster.layout(),
        report.tail,
        Some(&log),
    )
    .await;
    setup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_racing_fillers_are_acknowledged_exactly_once() {
    let setup = start(3, Shape::default()).await;
    let history = Arc::new(History::new());
    let clients = vec![
        setup.client(HoleFillPolicy::WaitThenFill, 50).await,
        setup.client(HoleFillPolicy::WaitThenFill, 50).await,
    ];
    // Lost addresses may exhaust an append's retries: allowed, checked below.
    let appenders = spawn_appenders(&history, &clients, 8, 80, "race", true);
    let done = Arc::new(AtomicBool::new(false));
    // A filler junking the next addresses before the appenders' tokens
    // reach them, while they are busy.
    let junker = {
        let filler = setup.client(HoleFillPolicy::Immediately, 50).await;
        let done = done.clone();
        tokio::spawn(async move {
            let mut filled = 0u64;
            for _ in 0..300 {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                let t = filler.tail().await.unwrap();
                for k in 0..2 {
                    match filler.fill(t + k).await.unwrap() {
                        ReadOutcome::Junk => filled += 1,
                        ReadOutcome::Data(_) => {}
                        other => panic!("fill at {}: {other:?}", t + k),
                    }
                }
                tokio::task::yield_now().await;
            }
            filled
        })
    };
    let stop = Arc::new(AtomicBool::new(false));
    let reader = setup.client(HoleFillPolicy::Immediately, 50).await;
    let writers = async {
        join_all(appenders).await;
        done.store(true, Ordering::SeqCst);
        let filled = junker.await.unwrap();
        stop.store(true, Ordering::SeqCst);
        filled
    };
    let (filled, observed) = tokio::join!(
        within(60, "writers", writers),
        within(60, "tailing reader", tail_reader(reader, stop.clone()))
    );
    let checker = setup.client(HoleFillPolicy::WaitThenFill, 50).await;
    let (report, log) = within(60, "history check", history.check_log(&checker)).await;
    assert_stable("race", &observed, &log);
    // An append that gave up lost every address it was granted, so its
    // value is nowhere; no other failure is expected.
    for op in history.ops() {
        if let Outcome::Failed(e) = &op.outcome {
            assert!(e.contains("lost its address"), "unexpected failure: {e}");
        }
    }
    assert_eq!(report.failed_present, 0, "{report}");
    assert!(report.junk > 0, "the fillers won some addresses: {report}");
    check_replicas(
        &setup.raw.endpoint,
        setup.cluster.layout(),
        report.tail,
        Some(&log),
    )
    .await;
    eprintln!("race: the junker filled {filled} addresses ahead of the appenders; {report}");
    setup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_append_process_leaves_holes_that_readers_fill() {
    let help = support::corfu_command()
        .args(["log", "append", "--help"])
        .output()
        .expect("run corfu");
    if !help.status.success() {
        eprintln!("skipped: this corfu binary has no `log append` command");
        return;
    }
    let setup = start(3, Shape::default()).await;
    let history = Arc::new(History::new());
    let stream = StreamId::from_name("cli-crash");
    const COUNT: usize = 20_000;
    const KILL_AFTER: usize = 400;
    // The process appends cli-0 .. cli-(COUNT-1), up to 256 at a time: each
    // is invoked (at the latest) when the process starts.
    let ids: Vec<OpId> = (0..COUNT)
        .map(|i| history.invoke(format!("cli-{i}").into_bytes(), &[stream]))
        .collect();
    let clients = vec![setup.client(HoleFillPolicy::WaitThenFill, 50).await];
    let appenders = spawn_appenders(&history, &clients, 4, 60, "beside", false);

    let mut command = tokio::process::Command::from(support::corfu_command());
    command
        .arg("log")
        .arg("append")
        .arg("--cluster")
        .arg(setup.cluster.client_config_path())
        .args([
            "--count",
            &COUNT.to_string(),
            "--prefix",
            "cli",
            "--stream",
            "cli-crash",
        ])
        .arg("--json")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("spawn corfu log append");
    let stdout = child.stdout.take().unwrap();
    let acks = within(30, "the append process's first acknowledgements", async {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut acks = 0;
        while let Some(line) = lines.next_line().await.expect("read the process's output") {
            let v: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            let value = v["value"].as_str().expect("a value");
            let i: usize = value.strip_prefix("cli-").unwrap().parse().unwrap();
            match v["address"].as_u64() {
                Some(address) => history.respond::<String>(ids[i], &Ok(address)),
                None => history.respond(ids[i], &Err(line.clone())),
            }
            acks += 1;
            if acks == KILL_AFTER {
                break;
            }
        }
        acks
    })
    .await;
    assert_eq!(acks, KILL_AFTER, "the process ended early");
    child.start_kill().expect("kill the append process");
    let status = within(10, "the killed process", child.wait())
        .await
        .unwrap();
    assert!(!status.success(), "killed: {status}");
    within(60, "appenders", join_all(appenders)).await;

    let checker = setup.client(HoleFillPolicy::WaitThenFill, 50).await;
    let (report, log) = within(60, "history check", history.check_log(&checker)).await;
    assert_eq!(report.failed, 0, "{report}");
    assert!(report.pending_present <= COUNT - KILL_AFTER);
    // Its stream holds exactly the process's values that made it into the
    // log, each once.
    let entries = checker.read_stream(stream, 0, report.tail).await.unwrap();
    let in_log = log
        .iter()
        .filter(|(_, o)| matches!(o, ReadOutcome::Data(e) if e.payload.starts_with(b"cli-")))
        .count();
    assert_eq!(entries.len(), in_log);
    assert!(in_log >= KILL_AFTER);
    check_replicas(
        &setup.raw.endpoint,
        setup.cluster.layout(),
        report.tail,
        Some(&log),
    )
    .await;
    eprintln!(
        "killed process: {} of its appends acknowledged, {} more completed by readers, {} junk",
        KILL_AFTER, report.pending_present, report.junk
    );
    setup.shutdown().await;
}

/// Review finding: with `HoleFillPolicy::Never`, a stream read below the
/// sequencer's complete index walks the backpointers, meets a hole left
/// open and scans below it; the scan skipped another hole of the stream
/// (a write that reached the chain head only), and the walk's result was
/// kept: once that write completed, the same client's stream reads kept
/// missing it. The walk now fails at the hole and keeps nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_walk_meeting_an_open_hole_keeps_nothing() {
    let mut setup = start(3, Shape::default()).await;
    let never = setup.client(HoleFillPolicy::Never, 50).await;
    let s = StreamId::from_name("open-holes");
    let a0 = never.append(b"a0".to_vec(), &[s]).await.unwrap();
    let a1 = never.append(b"a1".to_vec(), &[s]).await.unwrap();
    // b: written to the chain's head only; c: taken and never written.
    let (b, b_entry) = single(setup.raw.token(1, &[s], |_| b"b".to_vec()).await);
    let chain = setup.raw.chain(b);
    assert_eq!(
        setup.raw.write(&chain[0], b, &b_entry).await,
        WriteOutcome::Ok
    );
    let (c, _) = single(setup.raw.token(1, &[s], |_| b"c".to_vec()).await);
    let a2 = never.append(b"a2".to_vec(), &[s]).await.unwrap();
    // The sequencer's node restarts: its index knows only the tails.
    setup.cluster.stop_node(0).await.unwrap();
    setup.cluster.restart_node(0).await.unwrap();
    let layout = setup.cluster.bootstrap(Shape::default()).await.unwrap();
    let raw = Raw::new(setup.config.endpoint().unwrap(), layout);

    let tail = within(20, "the tail", never.tail()).await.unwrap();
    match within(
        20,
        "a stream read over open holes",
        never.read_stream(s, 0, tail),
    )
    .await
    {
        Err(ClientError::Unwritten { address }) => assert!(address == b || address == c),
        other => panic!("a stream read over open holes: {other:?}"),
    }
    // c is junked; b's write is completed down its chain (acknowledged).
    let filler = setup.client(HoleFillPolicy::Immediately, 50).await;
    assert_eq!(filler.fill(c).await.unwrap(), ReadOutcome::Junk);
    for unit in &chain[1..] {
        assert_eq!(raw.write(unit, b, &b_entry).await, WriteOutcome::Ok);
    }
    let read: Vec<Address> = within(20, "the stream again", never.read_stream(s, 0, tail))
        .await
        .unwrap()
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    assert_eq!(read, vec![a0, a1, b, a2]);
    setup.shutdown().await;
}
