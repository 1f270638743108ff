//! Issue 16's target "kill three layout servers of five at once: no new
//! layout can be decided (reads of the current epoch go on), and it
//! recovers when one returns", with real processes.
//!
//! Five `corfu node` processes on loopback (one chain of three, n1 -> n2
//! -> n3, every node a layout server with its failure detector on, 300 ms
//! failure timeout) and appenders recording a history. n3 (the chain's
//! tail), n4 and n5 are SIGKILLed together: every node is a layout server,
//! so any three of five include a chain member, and the tail is the one
//! whose loss stops appends. The detectors of n1 and n2 want to remove n3
//! but only two of five acceptors answer, so no layout can be decided and
//! appends stall; once n4 is started again, three acceptors answer, n3 is
//! removed, and appends go on. Meanwhile n1 and n2 serve reads of the
//! current epoch: nothing seals them while no layout can be decided.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use corfu::core::client::LogClient;
use corfu::core::layout_service::proposer::ProposeError;
use corfu::core::reconfig::{Change, ReconfigError, Reconfigurer};
use corfu::core::transport::ClientEndpoint;
use corfu::core::types::Address;
use corfu::core::wire::logunit::{LogUnitRequest, LogUnitResponse, ReadOutcome};
use corfu::core::wire::{Request, Response};
use support::cluster::*;
use support::history::Outcome;
use support::within;

/// One test at a time: five node processes each, and timing.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A cluster with n3, n4 and n5 killed, ten failure timeouts later.
struct Outage {
    cluster: Cluster,
    load: Load,
    /// An address acknowledged before the kills, and the value written.
    acked: (Address, Vec<u8>),
    killed_at: Instant,
    /// When n1 first stopped answering the acknowledged address at the
    /// committed epoch (polled for ten failure timeouts), if it did.
    reads_stopped_at: Option<Instant>,
}

/// Starts the cluster and the load, kills n3, n4 and n5 together, and
/// waits ten failure timeouts (the detectors of n1 and n2, whose layout
/// reads reach two layout servers of five, must start nothing), reading
/// the acknowledged address from n1 meanwhile.
async fn kill_three_layout_servers() -> Outage {
    let mut cluster = start_cluster(&[1], false).await;
    let load = Load::start(&cluster.config).await;
    load.resume(300, "appends before the kills").await;
    let acked = load
        .history
        .ops()
        .into_iter()
        .find_map(|op| match op.outcome {
            Outcome::Acked(address) => Some((address, op.value)),
            _ => None,
        })
        .expect("an acknowledged append");
    let killed_at = Instant::now();
    for k in [3, 4, 5] {
        cluster.nodes[k - 1].child.kill().unwrap();
    }
    let expected = format!("data {:?}", String::from_utf8_lossy(&acked.1));
    let mut reads_stopped_at = None;
    let endpoint = cluster.config.endpoint().unwrap();
    // Ten failure timeouts: time enough for the detectors to act.
    let until = killed_at + Duration::from_millis(10 * FAILURE_TIMEOUT_MS);
    while Instant::now() < until {
        if reads_stopped_at.is_none()
            && raw_read(&endpoint, &cluster, 1, cluster.first.epoch, acked.0).await != expected
        {
            reads_stopped_at = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Outage {
        cluster,
        load,
        acked,
        killed_at,
        reads_stopped_at,
    }
}

/// What node `k` (1-based) answers to a read of `address` at `epoch`.
async fn raw_read(
    endpoint: &ClientEndpoint,
    cluster: &Cluster,
    k: usize,
    epoch: u64,
    address: Address,
) -> String {
    let request = Request::LogUnit(LogUnitRequest::Read { address });
    match endpoint
        .peer(&cluster.nodes[k - 1].addr)
        .call_timeout(epoch, request, Duration::from_secs(2))
        .await
    {
        Ok(Response::LogUnit(LogUnitResponse::Read(ReadOutcome::Data(entry)))) => {
            format!("data {:?}", String::from_utf8_lossy(&entry.payload))
        }
        other => format!("{other:?}"),
    }
}

/// Three of five layout servers dead: the detectors cannot remove the dead
/// tail, nor can anyone else (the removal reaches no majority), nothing is
/// decided and no append is acknowledged; one layout server back, and the
/// removal goes through, appends go on, nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_dead_layout_servers_decide_nothing_until_one_returns() {
    let _turn = TURN.lock().await;
    let Outage {
        mut cluster,
        load,
        acked: (address, value),
        killed_at,
        reads_stopped_at,
    } = kill_three_layout_servers().await;
    let stalled = load.acked.load(Ordering::SeqCst);
    // What the survivors answer to reads of the current epoch (asserted
    // by the test below), and what a log client does.
    let endpoint = cluster.config.endpoint().unwrap();
    let n1 = raw_read(&endpoint, &cluster, 1, cluster.first.epoch, address).await;
    let n2 = raw_read(&endpoint, &cluster, 2, cluster.first.epoch, address).await;
    let reader = LogClient::connect(&cluster.config).await.unwrap();
    let client_read = tokio::time::timeout(Duration::from_secs(3), reader.read(address)).await;

    // A removal by hand fails for want of a majority of layout servers.
    let engine = Reconfigurer::new(
        cluster.config.endpoint().unwrap(),
        cluster.config.layout_servers.clone(),
    );
    let tried = Instant::now();
    let removal = within(
        30,
        "a removal with two layout servers of five",
        engine.reconfigure(&Change::RemoveNode("n3".into())),
    )
    .await;
    let removal_ms = tried.elapsed().as_millis();
    assert!(
        matches!(
            removal,
            Err(ReconfigError::Layout(ProposeError::NoMajority { .. }))
        ),
        "{removal:?}"
    );
    let layout = engine.current().await.unwrap();
    assert_eq!(layout.epoch, cluster.first.epoch, "{layout:?}");
    // No append was acknowledged meanwhile (the tail is dead, and no layout
    // without it exists).
    assert_eq!(load.acked.load(Ordering::SeqCst), stalled);
    eprintln!(
        "n3, n4, n5 SIGKILLed; \
         n1 stopped serving reads of the committed epoch {:?} after the kills; \
         read of acknowledged address {address} (value {:?}) at epoch {}: n1 answers {n1}, n2 answers {n2}; \
         a log client's read (3 s): {client_read:?}; a removal by hand failed after {} ms: {}",
        reads_stopped_at.map(|at| at - killed_at),
        String::from_utf8_lossy(&value),
        cluster.first.epoch,
        removal_ms,
        removal.unwrap_err(),
    );

    cluster.restart(4);
    let restarted_at = Instant::now();
    load.resume(300, "appends after n4 is back").await;
    let first = load
        .first_ack_from(restarted_at, 0)
        .expect("an append acknowledged after the restart");
    eprintln!(
        "n4 restarted: first append acknowledged {} ms later, 300 more {} ms later",
        (first - restarted_at).as_millis(),
        restarted_at.elapsed().as_millis()
    );
    let last = load.finish(&cluster.config).await;
    assert!(last.epoch > cluster.first.epoch, "{last:?}");
    assert_eq!(chain_ids(&last), ["n1", "n2"], "{last:?}");
}

/// The "reads of the current epoch go on" while no layout can be
/// decided: the live members of the chain still serve an acknowledged
/// address at the committed epoch.
///
/// Failed before: the detectors' removal of n3 sealed n1 and n2 at
/// epoch 2 before it found that no majority of layout servers answers
/// (`Reconfigurer::step` sealed, then proposed), so both answered reads of
/// epoch 1 with `WrongEpoch { current: 2 }` until a layout server
/// returned. Now a detector whose layout read reaches no majority starts
/// nothing, and a reconfiguration checks for a majority before it seals.
/// (A log client reads only from a chain's tail, so its reads stall while
/// the dead tail is in the layout: the raw reads here are what still
/// works.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_of_the_current_epoch_go_on_while_no_layout_can_be_decided() {
    let _turn = TURN.lock().await;
    let Outage {
        cluster,
        acked: (address, value),
        killed_at,
        reads_stopped_at,
        ..
    } = kill_three_layout_servers().await;
    let expected = format!("data {:?}", String::from_utf8_lossy(&value));
    let endpoint = cluster.config.endpoint().unwrap();
    assert_eq!(
        reads_stopped_at.map(|at| at - killed_at),
        None,
        "n1 stopped serving epoch 1 during the outage"
    );
    for k in [1, 2] {
        let answer = raw_read(&endpoint, &cluster, k, cluster.first.epoch, address).await;
        assert_eq!(answer, expected, "n{k}");
    }
}
