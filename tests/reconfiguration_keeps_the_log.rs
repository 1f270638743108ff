//! Reconfiguration under load: appenders keep appending while chain
//! members die and are removed by the reconfiguration engine (seal, new
//! layout through Paxos, sequencer bootstrapped from the sealed tails).
//!
//! Five nodes (five layout servers, so two may die), one chain of three
//! log units (n1 -> n2 -> n3), sequencers n1, n2, n3. First the middle of
//! the chain (n2) stops and is removed; then the head, which is also the
//! active sequencer (n1), stops and is removed, so the sequencer fails over
//! to n3. After each step appends are acknowledged again; at the end the
//! whole log is checked as a history (every acknowledged append at its
//! address, no value twice, no holes, real-time order), the surviving
//! replica is compared with what clients read, and a client still at the
//! first epoch is fenced.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corfu::cluster::Shape;
use corfu::core::client::{LogClient, LogClientOptions};
use corfu::core::logunit::SyncPolicy;
use corfu::core::reconfig::{Change, Reconfigurer};
use corfu::core::types::StreamId;
use corfu::core::wire::logunit::{AddressedEntry, Entry, LogUnitRequest};
use corfu::core::wire::{Request, Response};
use corfu::local::{LocalCluster, LocalOptions};
use support::history::{check_replicas, History};
use support::within;

/// Waits until `acked` has grown by `more` (appends go on after a
/// reconfiguration), failing after 10 s.
async fn appends_resume(acked: &AtomicUsize, more: usize, what: &str) {
    let from = acked.load(Ordering::SeqCst);
    within(10, what, async {
        while acked.load(Ordering::SeqCst) < from + more {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// Five nodes (all layout servers), one chain n1 -> n2 -> n3, sequencers
/// n1, n2, n3.
async fn five_nodes(dir: &tempfile::TempDir) -> LocalCluster {
    LocalCluster::start(
        &dir.path().join("cluster"),
        5,
        LocalOptions {
            shape: Shape::new(1, 3),
            sync: SyncPolicy::Always,
            sequencers: 3,
        },
    )
    .await
    .unwrap()
}

/// Three nodes, one chain n1 -> n2 -> n3, one sequencer (n1), no syncs.
async fn three_nodes(dir: &tempfile::TempDir) -> LocalCluster {
    LocalCluster::start(
        &dir.path().join("cluster"),
        3,
        LocalOptions {
            shape: Shape::new(1, 3),
            sync: SyncPolicy::Never,
            sequencers: 1,
        },
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_survive_the_removal_of_chain_members_and_the_sequencer() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = five_nodes(&dir).await;
    let first = cluster.layout().clone();
    let mut config = cluster.client_config();
    config.client = LogClientOptions {
        hole_fill_timeout_ms: 50,
        operation_timeout_ms: 20_000,
        ..LogClientOptions::default()
    };

    let history = Arc::new(History::new());
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let stream = StreamId::from_name("reconfig");
    let mut tasks = Vec::new();
    for c in 0..2 {
        let client = LogClient::connect(&config).await.unwrap();
        for t in 0..6 {
            let (client, history, stop, acked) =
                (client.clone(), history.clone(), stop.clone(), acked.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let value = format!("c{c}-t{t}-{i}").into_bytes();
                    let streams: &[StreamId] = if i % 2 == 0 { &[stream] } else { &[] };
                    if history.append(&client, value, streams).await.is_ok() {
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    i += 1;
                }
            }));
        }
    }
    appends_resume(&acked, 200, "appends before any failure").await;

    let engine = Reconfigurer::new(config.endpoint().unwrap(), config.layout_servers.clone());

    // The middle of the chain dies and is removed.
    cluster.stop_node(1).await.unwrap();
    let done = within(
        10,
        "removing n2",
        engine.reconfigure(&Change::RemoveNode("n2".into())),
    )
    .await
    .unwrap();
    eprintln!(
        "removed n2: epoch {} in {:?}, new segment from {}",
        done.layout.epoch, done.elapsed, done.tail
    );
    assert_eq!(done.layout.epoch, 2);
    assert!(done.won);
    let open = done.layout.open_segment().unwrap();
    let ids = |chain: &[corfu::core::layout::NodeAddr]| {
        chain.iter().map(|n| n.node_id.clone()).collect::<Vec<_>>()
    };
    assert_eq!(ids(&open.stripes[0].chain), ["n1", "n3"]);
    appends_resume(&acked, 200, "appends after removing n2").await;

    // The head, also the active sequencer, dies: n3 takes over both.
    cluster.stop_node(0).await.unwrap();
    let done = within(
        10,
        "removing n1",
        engine.reconfigure(&Change::RemoveNode("n1".into())),
    )
    .await
    .unwrap();
    eprintln!(
        "removed n1: epoch {} in {:?}, new segment from {}",
        done.layout.epoch, done.elapsed, done.tail
    );
    assert_eq!(done.layout.epoch, 3);
    assert_eq!(done.layout.active_sequencer().unwrap().node_id, "n3");
    for segment in &done.layout.segments {
        assert_eq!(ids(&segment.stripes[0].chain), ["n3"]);
    }
    appends_resume(&acked, 200, "appends after removing n1").await;

    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        within(30, "appenders stop", task).await.unwrap();
    }

    // Every append was acknowledged (the client waited out each failure).
    let ops = history.ops();
    let failed: Vec<_> = ops
        .iter()
        .filter(|op| !matches!(op.outcome, support::history::Outcome::Acked(_)))
        .collect();
    assert!(
        failed.is_empty(),
        "appends failed: {:?}",
        &failed[..failed.len().min(5)]
    );

    let reader = LogClient::connect(&config).await.unwrap();
    let (report, log) = history.check_log(&reader).await;
    eprintln!("{report}");
    let layout = reader.refresh_layout().await.unwrap();
    assert_eq!(layout.epoch, 3);
    check_replicas(
        &config.endpoint().unwrap(),
        &layout,
        log.last().map_or(0, |(a, _)| a + 1),
        Some(&log),
    )
    .await;

    // The stream is whole across both reconfigurations and the failover.
    let tail = reader.tail().await.unwrap();
    let entries = reader.read_stream(stream, 0, tail).await.unwrap();
    let in_stream = log
        .iter()
        .filter(|(_, o)| {
            matches!(o, corfu::core::wire::logunit::ReadOutcome::Data(e)
                if e.streams.iter().any(|h| h.stream == stream))
        })
        .count();
    assert_eq!(entries.len(), in_stream);

    // A client still at epoch 1 is fenced by the surviving unit.
    let n3 = &first.segments[0].stripes[0].chain[2];
    let endpoint = config.endpoint().unwrap();
    let stale = endpoint
        .peer(&n3.addr)
        .call(
            first.epoch,
            Request::LogUnit(LogUnitRequest::Write(AddressedEntry {
                address: tail + 1000,
                entry: Entry {
                    id: None,
                    streams: vec![],
                    payload: b"stale".to_vec(),
                },
            })),
        )
        .await
        .unwrap();
    assert_eq!(stale, Response::WrongEpoch { current: 3 });
    cluster.shutdown().await;
}

/// Two engines racing to remove the same dead node decide one layout, one
/// epoch; an engine sealing while another removes a node ends with both
/// changes in force; appends work after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_engines_decide_one_layout_per_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = five_nodes(&dir).await;
    let config = cluster.client_config();
    let client = LogClient::connect(&config).await.unwrap();
    for i in 0..20 {
        client
            .append(format!("before-{i}").into_bytes(), &[])
            .await
            .unwrap();
    }
    let engine = |_| Reconfigurer::new(config.endpoint().unwrap(), config.layout_servers.clone());
    let (a, b) = (engine(0), engine(1));

    cluster.stop_node(1).await.unwrap();
    let remove = Change::RemoveNode("n2".into());
    let (ra, rb) = within(10, "two engines removing n2", async {
        tokio::join!(a.reconfigure(&remove), b.reconfigure(&remove))
    })
    .await;
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.layout, rb.layout, "both engines end on the same layout");
    assert_eq!(ra.layout.epoch, 2, "one reconfiguration, one epoch");
    // Both proposed the same layout (same change, same sealed tails), so
    // whichever Paxos chose, it is each engine's own proposal.
    assert!(ra.won || rb.won);

    // A seal racing the removal of the head: both take effect, in some order.
    let remove_head = Change::RemoveNode("n1".into());
    let (rs, rr) = within(10, "seal racing remove n1", async {
        tokio::join!(a.reconfigure(&Change::Seal), b.reconfigure(&remove_head))
    })
    .await;
    let (rs, rr) = (rs.unwrap(), rr.unwrap());
    let last = a.current().await.unwrap();
    assert!(last.epoch >= 4, "two decided changes: epoch {}", last.epoch);
    assert!(rs.layout.epoch >= 3 && rr.layout.epoch >= 3);
    assert!(!last.segments.iter().flat_map(|s| &s.stripes).any(|s| s
        .chain
        .iter()
        .any(|n| n.node_id == "n1" || n.node_id == "n2")));

    // Removing n2 again is a no-op (it is gone, still a layout server); a
    // node the layout never named is refused.
    let again = a
        .reconfigure(&Change::RemoveNode("n2".into()))
        .await
        .unwrap();
    assert!(!again.won);
    assert_eq!(again.layout.epoch, last.epoch);
    let unknown = a
        .reconfigure(&Change::RemoveNode("n9".into()))
        .await
        .unwrap_err();
    assert!(
        unknown.to_string().contains("not in the layout"),
        "{unknown}"
    );

    // The log carries on, and nothing acknowledged before is lost.
    let after = client.append(b"after".to_vec(), &[]).await.unwrap();
    let log = client.read_range(0, after + 1).await.unwrap();
    let values: Vec<Vec<u8>> = log
        .iter()
        .filter_map(|(_, o)| match o {
            corfu::core::wire::logunit::ReadOutcome::Data(e) => Some(e.payload.clone()),
            _ => None,
        })
        .collect();
    for i in 0..20 {
        assert!(values.contains(&format!("before-{i}").into_bytes()));
    }
    assert!(values.contains(&b"after".to_vec()));
    cluster.shutdown().await;
}

/// An engine bound to an epoch (as the failure detector binds its
/// removals to the epoch its evidence is about) does nothing once the
/// layout has moved past it, but still reports a change someone else made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_bound_to_an_epoch_does_nothing_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = three_nodes(&dir).await;
    let config = cluster.client_config();
    let engine = || Reconfigurer::new(config.endpoint().unwrap(), config.layout_servers.clone());

    // Epoch 1 -> 2 by an unbound seal.
    let sealed = engine().reconfigure(&Change::Seal).await.unwrap();
    assert_eq!(sealed.layout.epoch, 2);

    // Bound to epoch 1: refused, the layout unchanged.
    let e = engine()
        .only_up_to_epoch(1)
        .reconfigure(&Change::RemoveNode("n3".into()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            corfu::core::reconfig::ReconfigError::Outdated {
                bound: 1,
                current: 2
            }
        ),
        "{e}"
    );
    let now = engine().current().await.unwrap();
    assert_eq!(now.epoch, 2);
    assert!(now.all_log_units().iter().any(|n| n.node_id == "n3"));

    // Bound to the current epoch: done.
    let removed = engine()
        .only_up_to_epoch(2)
        .reconfigure(&Change::RemoveNode("n3".into()))
        .await
        .unwrap();
    assert_eq!(removed.layout.epoch, 3);
    assert!(removed.won);
    // Already made: reported as done even though the bound is past.
    let again = engine()
        .only_up_to_epoch(2)
        .reconfigure(&Change::RemoveNode("n3".into()))
        .await
        .unwrap();
    assert!(!again.won);
    assert_eq!(again.layout.epoch, 3);
    cluster.shutdown().await;
}

/// A removal that `plan` refuses (it would empty the chain) is refused
/// before anything is sealed: the units stay in the committed epoch and
/// clients go on at once. (The stateright model of the sealing rule found
/// that the engine sealed first: every unit was left sealed into an epoch
/// no layout would ever be decided for, and appends failed until someone
/// sealed again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_removal_seals_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = three_nodes(&dir).await;
    let config = cluster.client_config();
    let client = LogClient::connect(&config).await.unwrap();
    client.append(b"before".to_vec(), &[]).await.unwrap();
    let engine = Reconfigurer::new(config.endpoint().unwrap(), config.layout_servers.clone());
    let all = Change::RemoveNodes(vec!["n1".into(), "n2".into(), "n3".into()]);
    let e = engine.reconfigure(&all).await.unwrap_err();
    assert!(
        matches!(e, corfu::core::reconfig::ReconfigError::Invalid(_)),
        "{e}"
    );
    assert_eq!(engine.current().await.unwrap().epoch, 1);
    // The same long-lived client appends again, in epoch 1, within a
    // short operation timeout.
    let appended = tokio::time::timeout(
        Duration::from_secs(3),
        client.append(b"after".to_vec(), &[]),
    )
    .await;
    assert!(matches!(appended, Ok(Ok(_))), "{appended:?}");
}
