//! The embedded default run by `corfu` with no arguments.
//!
//! It starts a 3-node cluster of `corfu node` processes on loopback (QUIC
//! with TLS 1.3, certificates from a CA it generates, every node a layout
//! server, a log unit and a sequencer, running its failure detector; n1
//! the active sequencer, one replication chain n1 -> n2 -> n3), then:
//!
//! 1. two clients, *alice* and *bob* (each its own connection and runtime,
//!    as two processes would be), open a queue, a map and a counter; alice
//!    pushes the orders;
//! 2. both ship orders concurrently, each shipment one transaction over
//!    the three objects: pop an order, record who shipped it in the map,
//!    count it;
//! 3. part way through, the node hosting the active sequencer and the
//!    chain's head (n1, read from the committed layout) is killed with
//!    SIGKILL: the hardest single failure, since every transaction needs
//!    both. The other nodes' failure detectors remove it (a new epoch,
//!    chain n2 -> n3, n2's sequencer bootstrapped and active) and the
//!    clients, whose sequencer died under them, carry on through that
//!    reconfiguration;
//! 4. the result is checked: every order shipped exactly once, counter and
//!    map agree, the queue is empty; a third client replays the log from
//!    the start to the same state; an append after the failover reads
//!    back; a client of another cluster is refused.
//!
//! It prints a few lines on what happened (progress bars on a terminal)
//! and returns an error if any check fails.

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use objects::{ReplicatedCounter, ReplicatedMap, ReplicatedQueue};
use smr::{Error as SmrError, Runtime};

use corfu_core::client::LogClient;
use corfu_core::client_config::ClientConfig;
use corfu_core::detector::DetectorConfig;
use corfu_core::layout::Layout;
use corfu_core::logunit::SyncPolicy;
use corfu_core::transport::tls;
use corfu_core::transport::{ClientEndpoint, TransportConfig};
use corfu_core::types::{ClusterId, StreamId};
use corfu_core::wire::logunit::ReadOutcome;
use corfu_core::wire::{LogUnitRequest, Request, Response};

use crate::cluster::{self, Shape};
use crate::local::{self, InitOptions, NodeProcess};

/// Nodes of the quickstart's cluster.
const NODES: usize = 3;
/// The nodes' failure detector: a node unreachable this long is removed.
const FAILURE_TIMEOUT_MS: u64 = 500;
/// How often the detectors probe.
const PROBE_INTERVAL_MS: u64 = 100;
/// Orders alice pushes.
const ORDERS: u64 = 600;
/// The kill comes once this many orders are shipped.
const KILL_AFTER: u64 = ORDERS / 4;
/// The longest the whole run may take before it is declared stuck.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// Transactions in a row whose outcome a shipper may fail to learn (a
/// node dying under it) before it gives up.
const UNKNOWN_OUTCOMES_MAX: u32 = 50;

/// Options of the quickstart.
#[derive(Debug, Clone, Default)]
pub struct QuickstartOptions {
    /// Where to keep the cluster (configs, certificates, data, node logs);
    /// a temporary directory, removed at the end, if `None`.
    pub dir: Option<PathBuf>,
    /// The `corfu` binary to run the nodes with; the running executable if
    /// `None` (right when `corfu` itself runs the quickstart).
    pub exe: Option<PathBuf>,
}

/// The objects of one client.
struct Shop {
    orders: ReplicatedQueue<u64>,
    shipped: ReplicatedMap<u64, String>,
    count: ReplicatedCounter,
}

impl Shop {
    fn open(rt: &Runtime) -> Result<Shop, SmrError> {
        Ok(Shop {
            orders: rt.open("quickstart/orders")?,
            shipped: rt.open("quickstart/shipped")?,
            count: rt.open("quickstart/shipped-count")?,
        })
    }
}

/// What one shipper did.
#[derive(Debug, Default)]
struct Shipped {
    /// Transactions committed that shipped an order.
    commits: u64,
    /// Transactions whose every attempt conflicted (tried again).
    gave_up: u64,
    /// Transactions whose outcome was unknown (a node failed under them);
    /// the order is then either shipped or still queued, never half done.
    unknown: u64,
}

/// Progress shared by the shippers and the conductor.
#[derive(Default)]
struct Progress {
    shipped: AtomicU64,
    /// When each shipment committed, in commit order per shipper.
    commit_times: Mutex<Vec<Instant>>,
}

/// Ships orders until the queue is empty (alice pushed every order before
/// the shippers started, so an empty queue means done).
async fn ship(
    rt: Runtime,
    who: &'static str,
    progress: Arc<Progress>,
    bar: ProgressBar,
) -> anyhow::Result<Shipped> {
    let shop = Shop::open(&rt)?;
    let shop = &shop;
    let mut done = Shipped::default();
    let mut unknown_in_a_row = 0;
    loop {
        let outcome = rt
            .transaction(|tx| async move {
                let order = shop.orders.tx_pop(&tx).await?;
                if let Some(order) = order {
                    shop.shipped.tx_insert(&tx, order, who.to_string())?;
                    shop.count.tx_add(&tx, 1)?;
                }
                Ok(order)
            })
            .await;
        match outcome {
            Ok(Some(_)) => {
                unknown_in_a_row = 0;
                done.commits += 1;
                progress
                    .commit_times
                    .lock()
                    .expect("commit times")
                    .push(Instant::now());
                let n = progress.shipped.fetch_add(1, Ordering::Relaxed) + 1;
                bar.set_position(n);
            }
            Ok(None) => return Ok(done),
            Err(SmrError::Aborted { .. }) => done.gave_up += 1,
            Err(e @ SmrError::Log { .. }) => {
                done.unknown += 1;
                unknown_in_a_row += 1;
                if unknown_in_a_row > UNKNOWN_OUTCOMES_MAX {
                    return Err(anyhow::Error::new(e).context(format!(
                        "{who}: {UNKNOWN_OUTCOMES_MAX} transactions in a row failed"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("{who} shipping"))),
        }
    }
}

/// A spinner (or, with a length, a bar) on stderr; hidden when stderr is
/// not a terminal.
fn progress_bar(len: Option<u64>, message: &str) -> ProgressBar {
    let bar = match len {
        Some(len) => ProgressBar::new(len).with_style(
            ProgressStyle::with_template("  {msg} [{bar:30}] {pos}/{len}")
                .expect("a valid template")
                .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("  {spinner} {msg}").expect("a valid template"),
        ),
    };
    bar.set_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// A base port with `count` consecutive free UDP ports on loopback.
fn free_ports(count: usize) -> anyhow::Result<u16> {
    for _ in 0..50 {
        let base: u16 = rand::random_range(20_000..60_000);
        let held: Result<Vec<UdpSocket>, _> = (0..count)
            .map(|i| UdpSocket::bind(("127.0.0.1", base + i as u16)))
            .collect();
        if held.is_ok() {
            return Ok(base);
        }
    }
    anyhow::bail!("found no {count} consecutive free UDP ports on 127.0.0.1 in 50 tries")
}

/// The chains of a layout's open segment, as `n1 -> n3`.
fn chains(layout: &Layout) -> String {
    layout
        .segments
        .last()
        .map(|s| {
            s.stripes
                .iter()
                .map(|st| {
                    st.chain
                        .iter()
                        .map(|n| n.node_id.as_str())
                        .collect::<Vec<_>>()
                        .join(" -> ")
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// The node killed part way through: the one hosting both the active
/// sequencer and the head of a chain of `layout`'s open segment (n1 in the
/// default layout), as `(node id, index in the config order of ids)`.
/// Read from the committed layout so the choice stays right if the
/// bootstrap's layout changes; an error if no node holds both roles.
fn victim_of(layout: &Layout, ids: &[String]) -> anyhow::Result<(String, usize)> {
    let sequencer = layout
        .active_sequencer()
        .context("the layout names no sequencer")?;
    let heads_a_chain = layout.segments.last().is_some_and(|s| {
        s.stripes.iter().any(|st| {
            st.chain
                .first()
                .is_some_and(|h| h.node_id == sequencer.node_id)
        })
    });
    anyhow::ensure!(
        heads_a_chain,
        "the active sequencer {} heads no chain ({}): the quickstart kills a node hosting both",
        sequencer.node_id,
        chains(layout)
    );
    let index = ids
        .iter()
        .position(|id| *id == sequencer.node_id)
        .with_context(|| {
            format!(
                "the active sequencer {} is not one of the nodes started",
                sequencer.node_id
            )
        })?;
    Ok((sequencer.node_id.clone(), index))
}

/// Whether `node` still has a role in `layout` that matters here: a unit
/// of a chain of its open segment or a listed sequencer.
fn still_serves(layout: &Layout, node: &str) -> bool {
    let in_chain = layout.segments.last().is_some_and(|s| {
        s.stripes
            .iter()
            .any(|st| st.chain.iter().any(|n| n.node_id == node))
    });
    in_chain || layout.sequencers.iter().any(|n| n.node_id == node)
}

/// The node ids of `layout`'s sequencers, the active one first.
fn sequencers(layout: &Layout) -> String {
    layout
        .sequencers
        .iter()
        .map(|n| n.node_id.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The longest gap between consecutive commits from the last one before
/// `at` on (from `at` itself if none came before). Not just the gap
/// spanning `at`: a batch written to the head before a kill of the head
/// still commits just after it, and the real pause comes later.
fn longest_pause_since(times: &mut [Instant], at: Instant) -> Duration {
    times.sort();
    let first_after = times.partition_point(|t| *t <= at);
    let mut previous = first_after.checked_sub(1).map_or(at, |i| times[i]);
    let mut longest = Duration::ZERO;
    for t in &times[first_after..] {
        longest = longest.max(*t - previous);
        previous = *t;
    }
    longest
}

/// Runs the quickstart, printing what happens; returns an error if any step
/// does not behave as it should.
pub async fn run(opts: QuickstartOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    let temp;
    let dir = match &opts.dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::tempdir().context("creating a temporary directory")?;
            temp.path().join("cluster")
        }
    };
    let exe = match opts.exe {
        Some(exe) => exe,
        None => std::env::current_exe().context("locating the corfu executable")?,
    };
    println!(
        "corfu quickstart: a 3-node cluster, two clients, replicated objects, one node killed"
    );

    let mut procs = Vec::new();
    let outcome = tokio::time::timeout(RUN_TIMEOUT, run_on(&dir, &exe, &mut procs)).await;
    local::stop_all(&mut procs, Duration::from_secs(5)).await;
    match outcome {
        Ok(Ok(())) => {
            println!(
                "done in {:.1} s; the nodes are stopped{}",
                started.elapsed().as_secs_f64(),
                match &opts.dir {
                    Some(d) => format!(" (their data and logs are in {})", d.display()),
                    None => String::new(),
                }
            );
            Ok(())
        }
        Ok(Err(e)) => Err(e.context(format!(
            "the quickstart failed; node logs are in {}/nK/node.log{}",
            dir.display(),
            if opts.dir.is_none() {
                " (a temporary directory, now removed: pass --dir to keep it)"
            } else {
                ""
            }
        ))),
        Err(_) => anyhow::bail!(
            "the quickstart did not finish within {} s; node logs are in {}/nK/node.log",
            RUN_TIMEOUT.as_secs(),
            dir.display()
        ),
    }
}

async fn run_on(
    dir: &std::path::Path,
    exe: &std::path::Path,
    procs: &mut Vec<NodeProcess>,
) -> anyhow::Result<()> {
    // 1. The cluster.
    let bar = progress_bar(None, "starting 3 node processes");
    let report = local::init(&InitOptions {
        nodes: NODES,
        base_port: free_ports(NODES)?,
        sync: SyncPolicy::Always,
        failure_detector: Some(DetectorConfig {
            enabled: true,
            failure_timeout_ms: FAILURE_TIMEOUT_MS,
            probe_interval_ms: PROBE_INTERVAL_MS,
        }),
        ..InitOptions::new(dir)
    })?;
    for node in &report.nodes {
        procs.push(local::spawn_node(
            exe,
            &node.config,
            &node.node_id,
            node.addr.to_string(),
            &report.dir,
        )?);
    }
    let config = ClientConfig::load(&report.cluster_config)?;
    let endpoint = config.endpoint().context("client endpoint")?;
    for proc in procs.iter_mut() {
        local::wait_ready(&endpoint, proc, Duration::from_secs(20)).await?;
    }
    let first = cluster::bootstrap_with(&endpoint, &config, Shape::default()).await?;
    bar.finish_and_clear();
    let addrs: Vec<String> = report.nodes.iter().map(|n| n.addr.to_string()).collect();
    let ids: Vec<String> = report.nodes.iter().map(|n| n.node_id.clone()).collect();
    let (victim_id, victim) = victim_of(&first, &ids)?;
    println!(
        "  cluster: nodes {} as processes on {} (QUIC, TLS 1.3), epoch {}, chain {}, sequencers {} ({} active); data in {}",
        ids.join(" "),
        addrs.join(" "),
        first.epoch,
        chains(&first),
        sequencers(&first),
        victim_id,
        report.dir.display()
    );

    // 2. Two clients and their objects; alice pushes the orders.
    let alice_log = LogClient::connect(&config).await?;
    let bob_log = LogClient::connect(&config).await?;
    let alice = Runtime::new(alice_log.clone());
    let bob = Runtime::new(bob_log.clone());
    let bar = progress_bar(Some(ORDERS), "alice pushes orders");
    {
        let shop = Shop::open(&alice)?;
        let pushed = AtomicU64::new(0);
        let (shop, pushed, bar) = (&shop, &pushed, &bar);
        futures_util::future::try_join_all((0..ORDERS).map(|order| async move {
            shop.orders.push(order).await?;
            bar.set_position(pushed.fetch_add(1, Ordering::Relaxed) + 1);
            Ok::<_, SmrError>(())
        }))
        .await?;
    }
    bar.finish_and_clear();
    println!(
        "  objects: alice and bob (two clients, two connections) opened a queue, a map and a counter; alice pushed {ORDERS} orders"
    );

    // 3. Both ship; the active sequencer's node, also the chain head, is
    // killed part way.
    println!(
        "  transactions: alice and bob ship concurrently; a shipment pops an order, records it in the map and counts it, in one transaction"
    );
    let progress = Arc::new(Progress::default());
    let bar = progress_bar(Some(ORDERS), "alice and bob ship orders");
    let shippers = [("alice", alice.clone()), ("bob", bob.clone())]
        .map(|(who, rt)| tokio::spawn(ship(rt, who, progress.clone(), bar.clone())));
    while progress.shipped.load(Ordering::Relaxed) < KILL_AFTER
        && shippers.iter().all(|s| !s.is_finished())
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let proc = &mut procs[victim];
    let pid = proc.child.id().unwrap_or(0);
    proc.child
        .start_kill()
        .with_context(|| format!("killing {victim_id}"))?;
    let killed_at = Instant::now();
    let shipped_at_kill = progress.shipped.load(Ordering::Relaxed);
    let _ = proc.child.wait().await;
    bar.suspend(|| {
        println!(
            "  kill: {victim_id} (pid {pid}), the active sequencer and head of chain {}, killed with SIGKILL after {shipped_at_kill} orders shipped",
            chains(&first)
        );
    });
    // Watch the layout until the detectors have removed the victim from
    // the chain and the sequencers.
    let after = loop {
        let layout = alice_log.refresh_layout().await?;
        if layout.epoch > first.epoch && !still_serves(&layout, &victim_id) {
            break layout;
        }
        anyhow::ensure!(
            killed_at.elapsed() < Duration::from_secs(30),
            "{victim_id} was not removed from the layout within 30 s of its kill"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let removed_in = killed_at.elapsed();
    let next_sequencer = after
        .active_sequencer()
        .map(|n| n.node_id.clone())
        .context("the layout after the failover names no sequencer")?;
    bar.suspend(|| {
        println!(
            "  failover: the failure detectors removed {victim_id} {} ms after the kill (timeout {FAILURE_TIMEOUT_MS} ms): epoch {}, chain {}, sequencer on {next_sequencer}",
            removed_in.as_millis(),
            after.epoch,
            chains(&after),
        )
    });
    let mut shipped: BTreeMap<&str, Shipped> = BTreeMap::new();
    for (who, shipper) in ["alice", "bob"].into_iter().zip(shippers) {
        shipped.insert(who, shipper.await.context("a shipper panicked")??);
    }
    bar.finish_and_clear();
    let mut times = std::mem::take(&mut *progress.commit_times.lock().expect("commit times"));
    let pause = longest_pause_since(&mut times, killed_at);
    let shipped_after = progress.shipped.load(Ordering::Relaxed) - shipped_at_kill;
    println!(
        "  carried on: {shipped_after} orders shipped after the kill; the longest pause in shipments since the kill was {} ms",
        pause.as_millis()
    );

    // 4. Checks.
    let shop = Shop::open(&bob)?;
    let map = shop.shipped.snapshot().await?;
    let count = shop.count.get().await?;
    let left = shop.orders.len().await?;
    let missing: Vec<u64> = (0..ORDERS).filter(|o| !map.contains_key(o)).collect();
    anyhow::ensure!(
        missing.is_empty() && map.len() as u64 == ORDERS,
        "the map holds {} orders, missing {missing:?}",
        map.len()
    );
    anyhow::ensure!(
        count == ORDERS as i64,
        "the counter says {count}, the map {}",
        map.len()
    );
    anyhow::ensure!(left == 0, "{left} orders are still queued");
    let mut by: BTreeMap<&str, u64> = BTreeMap::new();
    for who in map.values() {
        *by.entry(who.as_str()).or_default() += 1;
    }
    for (who, done) in &shipped {
        anyhow::ensure!(
            by.get(who).copied().unwrap_or(0) >= done.commits,
            "{who} committed {} shipments but the map credits {} to it",
            done.commits,
            by.get(who).copied().unwrap_or(0)
        );
    }
    let stats = [alice.transaction_stats(), bob.transaction_stats()];
    let conflicts: u64 = stats.iter().map(|s| s.aborts).sum();
    let unknown: u64 = shipped.values().map(|s| s.unknown).sum();
    println!(
        "  result: all {ORDERS} orders shipped exactly once (alice {}, bob {}); counter {count}, queue empty; {conflicts} conflicting attempts retried{}",
        by.get("alice").copied().unwrap_or(0),
        by.get("bob").copied().unwrap_or(0),
        if unknown > 0 {
            format!(", {unknown} transactions with an unknown outcome during the failover tried again")
        } else {
            String::new()
        }
    );

    // A third client plays the log back from the start.
    let carol_log = LogClient::connect(&config).await?;
    let carol = Runtime::new(carol_log.clone());
    let replay = Instant::now();
    let shop = Shop::open(&carol)?;
    let (map2, count2, left2) = (
        shop.shipped.snapshot().await?,
        shop.count.get().await?,
        shop.orders.len().await?,
    );
    anyhow::ensure!(
        map2 == map && count2 == count && left2 == 0,
        "a new client rebuilt a different state: {} orders in the map, counter {count2}, {left2} queued",
        map2.len()
    );
    let tail = carol_log.tail().await?;
    let hello = b"hello after the failover".to_vec();
    let address = carol_log
        .append(
            hello.clone(),
            &[StreamId::from_name("quickstart/greetings")],
        )
        .await?;
    let ReadOutcome::Data(entry) = carol_log.read(address).await? else {
        anyhow::bail!("the append at {address} does not read back");
    };
    anyhow::ensure!(
        entry.payload == hello,
        "address {address} reads back other data"
    );
    println!(
        "  replay: a third client rebuilt the same objects from the log (tail {tail}{}) in {} ms; an append after the failover landed at address {address} and read back from chain {}",
        if carol_log.layout().voids.is_empty() {
            String::new()
        } else {
            // The new sequencer started past everything the dead one could
            // have granted: the addresses between were never written.
            ", past the addresses the dead sequencer had reserved".to_string()
        },
        replay.elapsed().as_millis(),
        chains(&carol_log.layout())
    );

    // A client of another cluster is refused.
    let roots = tls::load_certs(&config.tls.ca_cert)?;
    let stranger = ClientEndpoint::new(
        tls::client_crypto(&roots, None)?,
        TransportConfig::default(),
        ClusterId::random(),
    )?;
    // Asked of a node still running (the victim is dead).
    let survivor = &report.nodes[if victim == 0 { 1 } else { 0 }];
    match stranger
        .peer(&survivor.addr.to_string())
        .call(0, Request::LogUnit(LogUnitRequest::Tail))
        .await?
    {
        Response::Error(e) => println!("  security: a client of another cluster is refused: {e}"),
        other => anyhow::bail!("a client of another cluster got {other:?}"),
    }
    stranger.close();
    for log in [alice_log, bob_log, carol_log] {
        log.close();
    }
    endpoint.close();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_pause_is_measured_from_the_last_commit_before_the_kill() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // Commits at 0 and 10, the kill at 12, a straggler at 13, then
        // nothing until 800: the pause is 787 ms, not the 3 ms around 12.
        let mut times = vec![ms(800), ms(0), ms(13), ms(10), ms(805)];
        assert_eq!(
            longest_pause_since(&mut times, ms(12)),
            Duration::from_millis(787)
        );
        // No commit before the kill: measured from the kill.
        let mut times = vec![ms(50), ms(60)];
        assert_eq!(
            longest_pause_since(&mut times, ms(20)),
            Duration::from_millis(30)
        );
        assert_eq!(longest_pause_since(&mut [], ms(20)), Duration::ZERO);
    }
}
