//! Failure detection (issue 6, item 6): a node that hosts a layout server
//! pings the log units and the active sequencer of the committed layout and
//! removes a peer that stayed unreachable for `failure_timeout_ms`, through
//! the reconfiguration engine ([`Reconfigurer`]).
//!
//! Config (`node.toml`, off by default):
//!
//! ```toml
//! [failure_detector]
//! enabled = true
//! failure_timeout_ms = 1000   # unreachable this long (no answer in between) => removed
//! probe_interval_ms = 100     # how often peers are pinged and the layout re-read
//! ```
//!
//! Rules:
//! - **Where it runs.** Only on nodes hosting the `layout_server` role, and
//!   it only probes and reacts while the node is listed as a layout server
//!   of the committed layout. Other nodes do not run it (a warning at
//!   start says so if it is enabled there). Every listed layout server may
//!   run one: racing reconfigurations are safe (see [`crate::reconfig`]).
//! - **How it learns addresses.** It reads the committed layout from its own
//!   node's layout server first (over QUIC to its own address), then from
//!   every layout server that layout lists, so an acceptor that missed a
//!   decision does not hold it back. It re-reads the layout every probe
//!   interval, so peers leave the watch list as soon as anyone removed them.
//! - **Probes.** `Ping` to every log unit of every segment and to the active
//!   sequencer (not to itself), at most one probe in flight per peer, each
//!   bounded by half the failure timeout. Any answer counts as alive.
//! - **Damping.** A peer is suspected only after at least
//!   [`FAILED_PROBES_MIN`] consecutive failed probes spanning
//!   `failure_timeout_ms` (from the send time of the first of them); one
//!   answer in between clears the evidence. A detector that was itself
//!   stalled (a paused process, a starved runtime) for longer than the
//!   failure timeout forgets its evidence and ignores the answers of probes
//!   sent before the stall: a resumed node does not accuse the peers it
//!   could not hear while it was stopped. Likewise a detector whose layout
//!   read (each probe interval) reaches no majority of the layout servers
//!   starts nothing; if that lasts a whole failure timeout, it is cut off
//!   itself (or the cluster cannot reconfigure anyway): it forgets its
//!   evidence and stops the reconfiguration it has in flight, so nothing
//!   it saw from a minority side is acted on once the partition heals. A removal that did not go through
//!   is retried at most once per failure timeout. A node being removed
//!   that acknowledges the removal's seal is kept
//!   ([`Reconfigurer::keep_removed_that_answer`]): a detector cut off in a
//!   minority keeps retrying its removals (it cannot reach a majority of
//!   layout servers), and when the partition heals the retry in flight
//!   would otherwise remove the nodes it could not hear, alive all along.
//! - **A sequencer that answers but does not serve** (it restarted and lost
//!   its soft state, a whole cluster came back from a power loss, or the
//!   bootstrap of its epoch never arrived: its engine died after deciding)
//!   is not a dead node, so no removal helps. The detector also asks the
//!   active sequencer for its `Status`; one that answered without serving
//!   the layout's epoch in every probe for `failure_timeout_ms` gets a
//!   `Seal` reconfiguration, which starts it past everything its earlier
//!   incarnation could have granted. Unanswered status probes count for
//!   nothing here (the pings judge reachability).
//! - **Limits.** A peer whose removal would empty a chain or leave no
//!   sequencer is not removed; the detector warns once (until the peer
//!   answers again). One reconfiguration at a time per detector.
//!
//! [`ProbeBook`] is the pure bookkeeping (who is suspected when, given probe
//! results and `now`); [`spawn`] is the driver (clock, sockets, engine).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::task::{JoinHandle, JoinSet};

use crate::layout::Layout;
use crate::layout_service::proposer::fetch_layout_counted;
use crate::reconfig::{plan, Change, ReconfigError, Reconfigured, Reconfigurer};
use crate::transport::{ClientEndpoint, Peer};
use crate::types::Epoch;
use crate::wire::logunit::LogUnitRequest;
use crate::wire::sequencer::{SequencerRequest, SequencerResponse};
use crate::wire::{Request, Response, ServerErrorKind};

/// The `[failure_detector]` table of a node config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorConfig {
    /// Whether the node runs the detector (only nodes hosting the
    /// `layout_server` role do).
    pub enabled: bool,
    /// How long a peer must stay unreachable (every probe failing) before
    /// it is removed from the layout.
    pub failure_timeout_ms: u64,
    /// How often peers are probed and the layout is re-read.
    pub probe_interval_ms: u64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            enabled: false,
            failure_timeout_ms: 1000,
            probe_interval_ms: 100,
        }
    }
}

impl DetectorConfig {
    /// Checks ranges; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(20..=3_600_000).contains(&self.failure_timeout_ms) {
            return Err(format!(
                "field `failure_detector.failure_timeout_ms`: must be 20 to 3600000, not {}",
                self.failure_timeout_ms
            ));
        }
        if self.probe_interval_ms == 0 || self.probe_interval_ms > self.failure_timeout_ms / 2 {
            return Err(format!(
                "field `failure_detector.probe_interval_ms`: must be 1 to half of failure_timeout_ms ({}), not {}",
                self.failure_timeout_ms / 2,
                self.probe_interval_ms
            ));
        }
        Ok(())
    }

    /// The failure timeout.
    pub fn failure_timeout(&self) -> Duration {
        Duration::from_millis(self.failure_timeout_ms)
    }

    /// The probe interval.
    pub fn probe_interval(&self) -> Duration {
        Duration::from_millis(self.probe_interval_ms)
    }

    /// How long one probe waits for its answer: half the failure timeout.
    pub fn probe_timeout(&self) -> Duration {
        self.failure_timeout() / 2
    }
}

/// Failed probes in a row, at the least, before a peer is suspected.
pub const FAILED_PROBES_MIN: u32 = 2;

#[derive(Debug, Clone, Default)]
struct PeerRecord {
    /// Send time of the first failed probe since the last answer.
    failing_since: Option<Instant>,
    /// Failed probes since the last answer.
    failures: u32,
    in_flight: bool,
    /// When a removal was last started.
    reacted_at: Option<Instant>,
    warned: bool,
}

/// The probe bookkeeping of one detector: pure, `now` is always given.
#[derive(Debug, Clone)]
pub struct ProbeBook {
    failure_timeout: Duration,
    peers: BTreeMap<String, PeerRecord>,
    last_tick: Option<Instant>,
    /// Answers to probes sent before this are ignored (set after a stall).
    evidence_since: Option<Instant>,
}

impl ProbeBook {
    /// An empty book suspecting peers unreachable for `failure_timeout`.
    pub fn new(failure_timeout: Duration) -> ProbeBook {
        ProbeBook {
            failure_timeout,
            peers: BTreeMap::new(),
            last_tick: None,
            evidence_since: None,
        }
    }

    /// Watches exactly `peers` from now on: new ones start without
    /// evidence, the ones not listed are forgotten.
    pub fn watch<I: IntoIterator<Item = String>>(&mut self, peers: I) {
        let mut next = BTreeMap::new();
        for peer in peers {
            let record = self.peers.remove(&peer).unwrap_or_default();
            next.insert(peer, record);
        }
        self.peers = next;
    }

    /// The peers watched.
    pub fn watched(&self) -> impl Iterator<Item = &str> {
        self.peers.keys().map(String::as_str)
    }

    /// The detector runs at `now`. If it did not run for longer than the
    /// failure timeout (it was paused or starved), its evidence is stale:
    /// it is forgotten, and answers to probes sent before `now` are
    /// ignored. Returns whether that happened.
    pub fn tick(&mut self, now: Instant) -> bool {
        let stalled = self
            .last_tick
            .is_some_and(|last| now.saturating_duration_since(last) > self.failure_timeout);
        self.last_tick = Some(now);
        if stalled {
            self.forget(now);
        }
        stalled
    }

    /// Forgets the evidence gathered so far and ignores answers to probes
    /// sent before `now`: for a detector that finds itself cut off (it
    /// could not read the layout from a majority of layout servers), whose
    /// failed probes say more about its own links than about its peers.
    pub fn forget(&mut self, now: Instant) {
        self.evidence_since = Some(now);
        for record in self.peers.values_mut() {
            record.failing_since = None;
            record.failures = 0;
        }
    }

    /// The watched peers without a probe in flight, now marked in flight.
    pub fn to_probe(&mut self) -> Vec<String> {
        self.peers
            .iter_mut()
            .filter(|(_, r)| !r.in_flight)
            .map(|(peer, r)| {
                r.in_flight = true;
                peer.clone()
            })
            .collect()
    }

    /// The result of a probe of `peer` sent at `sent`: `answered` if the
    /// peer answered anything.
    pub fn record(&mut self, peer: &str, sent: Instant, answered: bool) {
        let stale = self.evidence_since.is_some_and(|since| sent < since);
        let Some(record) = self.peers.get_mut(peer) else {
            return;
        };
        record.in_flight = false;
        if stale {
            return;
        }
        if answered {
            *record = PeerRecord::default();
        } else {
            record.failures += 1;
            record.failing_since.get_or_insert(sent);
        }
    }

    /// How long `peer` has been unreachable as of `now` (from the send time
    /// of the first failed probe since its last answer), if it has.
    pub fn unreachable_for(&self, peer: &str, now: Instant) -> Option<Duration> {
        let since = self.peers.get(peer)?.failing_since?;
        Some(now.saturating_duration_since(since))
    }

    /// The peers suspected at `now`: at least [`FAILED_PROBES_MIN`] failed
    /// probes in a row spanning the failure timeout.
    pub fn suspects(&self, now: Instant) -> Vec<String> {
        self.peers
            .iter()
            .filter(|(peer, r)| {
                r.failures >= FAILED_PROBES_MIN
                    && self
                        .unreachable_for(peer, now)
                        .is_some_and(|d| d >= self.failure_timeout)
            })
            .map(|(peer, _)| peer.clone())
            .collect()
    }

    /// The suspects whose removal was not started within the last failure
    /// timeout.
    pub fn due(&self, now: Instant) -> Vec<String> {
        self.suspects(now)
            .into_iter()
            .filter(|peer| {
                self.peers[peer]
                    .reacted_at
                    .is_none_or(|at| now.saturating_duration_since(at) >= self.failure_timeout)
            })
            .collect()
    }

    /// A removal of `peer` started at `now`.
    pub fn reacted(&mut self, peer: &str, now: Instant) {
        if let Some(record) = self.peers.get_mut(peer) {
            record.reacted_at = Some(now);
        }
    }

    /// True the first time it is asked about `peer` since the peer last
    /// answered (to warn once about a peer that cannot be removed).
    pub fn warn_once(&mut self, peer: &str) -> bool {
        match self.peers.get_mut(peer) {
            Some(record) if !record.warned => {
                record.warned = true;
                true
            }
            _ => false,
        }
    }
}

/// The node ids the detector of `me` watches in `layout`: every log unit
/// and the active sequencer, except `me`; none if `me` is not a layout
/// server of `layout`.
pub fn peers_to_watch(layout: &Layout, me: &str) -> BTreeMap<String, String> {
    if !layout.layout_servers.iter().any(|n| n.node_id == me) {
        return BTreeMap::new();
    }
    layout
        .all_log_units()
        .into_iter()
        .chain(layout.active_sequencer())
        .filter(|n| n.node_id != me)
        .map(|n| (n.node_id.clone(), n.addr.clone()))
        .collect()
}

/// What one probe of a peer found.
#[derive(Debug, Clone, Copy)]
struct Probed {
    /// The peer answered, and (a log unit) is serving.
    answered: bool,
    /// For a log unit: the committed epoch it was probed at.
    unit_epoch: Option<Epoch>,
    /// The log unit answered that it is sealed past that epoch.
    sealed_ahead: bool,
}

/// Probes a peer: a log unit with a read of an address nobody writes at
/// the committed epoch `unit_epoch` (a unit that answers `Unavailable`,
/// fail-stopped or not in that epoch, serves nothing and counts as not
/// answering; one sealed past the epoch is noted), any other node with a
/// ping.
async fn probe(target: &Peer, unit_epoch: Option<Epoch>, timeout: Duration) -> Probed {
    let Some(epoch) = unit_epoch else {
        let answered = target.call_timeout(0, Request::Ping, timeout).await.is_ok();
        return Probed {
            answered,
            unit_epoch,
            sealed_ahead: false,
        };
    };
    let request = Request::LogUnit(LogUnitRequest::Read { address: u64::MAX });
    let (answered, sealed_ahead) = match target.call_timeout(epoch, request, timeout).await {
        Ok(Response::WrongEpoch { current }) => (true, current > epoch),
        Ok(Response::Error(e)) if e.kind == ServerErrorKind::Unavailable => (false, false),
        Ok(_) => (true, false),
        Err(_) => (false, false),
    };
    Probed {
        answered,
        unit_epoch,
        sealed_ahead,
    }
}

/// Why `node` cannot be removed from `layout` (the last unit of a chain,
/// the only sequencer), if it cannot.
pub fn removal_refused(layout: &Layout, node: &str) -> Option<String> {
    removals_refused(layout, &[node.to_string()])
}

/// Why removing all of `nodes` in one reconfiguration is impossible
/// (the last units of a stripe, every sequencer), or `None`.
pub fn removals_refused(layout: &Layout, nodes: &[String]) -> Option<String> {
    let start = layout.open_segment().map_or(0, |s| s.start);
    plan(layout, &Change::RemoveNodes(nodes.to_vec()), start)
        .err()
        .map(|e| e.to_string())
}

/// Starts the detector of node `node_id`, whose own endpoint is at
/// `own_addr` (its layout server is asked first), talking to peers through
/// `endpoint`. Abort the handle to stop it (probes and a reconfiguration in
/// progress are aborted with it).
pub fn spawn(
    config: DetectorConfig,
    node_id: String,
    own_addr: String,
    endpoint: ClientEndpoint,
) -> JoinHandle<()> {
    tokio::spawn(run(config, node_id, own_addr, endpoint))
}

async fn run(config: DetectorConfig, me: String, own_addr: String, endpoint: ClientEndpoint) {
    tracing::info!(
        node = %me,
        failure_timeout_ms = config.failure_timeout_ms,
        probe_interval_ms = config.probe_interval_ms,
        "failure detector running"
    );
    let timeout = config.failure_timeout();
    let probe_timeout = config.probe_timeout();
    let mut book = ProbeBook::new(timeout);
    let mut servers = vec![own_addr];
    let mut layout: Option<Layout> = None;
    let mut addrs: BTreeMap<String, String> = BTreeMap::new();
    let mut probes: JoinSet<(String, Instant, Probed)> = JoinSet::new();
    // Log units sealed past the committed epoch (a reconfiguration that
    // sealed them and stopped before deciding), keyed `node@epoch`.
    let mut ahead = ProbeBook::new(timeout);
    // The active sequencer of the current layout, keyed `node@epoch` so a
    // new epoch starts from no evidence: does it serve?
    let mut serving = ProbeBook::new(timeout);
    let mut status_probes: JoinSet<(String, Instant, bool)> = JoinSet::new();
    let mut reactions: JoinSet<(String, Result<Reconfigured, ReconfigError>)> = JoinSet::new();
    // Since when every layout read reached no majority.
    let mut cut_off_since: Option<Instant> = None;
    let mut interval = tokio::time::interval(config.probe_interval());
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            Some(done) = probes.join_next() => {
                if let Ok((peer, sent, probed)) = done {
                    book.record(&peer, sent, probed.answered);
                    if let Some(epoch) = probed.unit_epoch {
                        let key = format!("{peer}@{epoch}");
                        ahead.record(&key, sent, !probed.sealed_ahead);
                    }
                }
                continue;
            }
            Some(done) = status_probes.join_next() => {
                if let Ok((key, sent, fine)) = done {
                    serving.record(&key, sent, fine);
                }
                continue;
            }
            Some(done) = reactions.join_next() => {
                match done {
                    // A seal restarting a sequencer or finishing a half-done
                    // reconfiguration (its key is `node@epoch`).
                    Ok((key, Ok(r))) if key.contains('@') => tracing::warn!(
                        node = %me, reason = %key, epoch = r.layout.epoch, won = r.won,
                        "failure detector: sealed; the new epoch serves"
                    ),
                    Ok((peer, Ok(r))) if r.won => tracing::warn!(
                        node = %me, removed = %peer, epoch = r.layout.epoch,
                        elapsed_ms = r.elapsed.as_millis() as u64,
                        "failure detector: removed an unreachable node"
                    ),
                    Ok((peer, Ok(r))) => tracing::info!(
                        node = %me, removed = %peer, epoch = r.layout.epoch,
                        "failure detector: another reconfiguration removed the node"
                    ),
                    Ok((peer, Err(e @ ReconfigError::Outdated { .. }))) => tracing::info!(
                        node = %me, peer = %peer, error = %e,
                        "failure detector: the layout moved on; the removal is dropped"
                    ),
                    Ok((peer, Err(e))) => tracing::warn!(
                        node = %me, peer = %peer, error = %e,
                        "failure detector: removing an unreachable node failed (will retry)"
                    ),
                    Err(_) => {}
                }
                continue;
            }
        }
        let now = Instant::now();
        if book.tick(now) {
            tracing::warn!(node = %me, "failure detector was stalled; forgetting its evidence");
        }
        serving.tick(now);
        ahead.tick(now);
        let asked = servers.len();
        let fetched =
            tokio::time::timeout(probe_timeout, fetch_layout_counted(&endpoint, &servers));
        let mut majority = false;
        match fetched.await {
            Ok(Ok((fresh, reached))) => {
                majority = reached > asked / 2;
                if layout.as_ref().is_none_or(|l| fresh.epoch >= l.epoch) {
                    servers = fresh
                        .layout_servers
                        .iter()
                        .map(|n| n.addr.clone())
                        .collect();
                    addrs = peers_to_watch(&fresh, &me);
                    book.watch(addrs.keys().cloned());
                    layout = Some(fresh);
                }
            }
            Ok(Err(e)) => tracing::debug!(node = %me, error = %e, "failure detector: no layout"),
            Err(_) => tracing::debug!(node = %me, "failure detector: layout read timed out"),
        }
        if majority {
            cut_off_since = None;
        } else {
            // Cut off from a majority of layout servers (or them down, or
            // slow): nothing is started this tick. Cut off for a whole
            // failure timeout, this node is the isolated one or no layout
            // can be decided: what the probes saw may be its own isolation,
            // so the evidence is forgotten and the reconfiguration in flight
            // stopped, so none runs on once the links come back against
            // nodes alive all along. (One slow read forgets nothing.)
            let since = *cut_off_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= timeout {
                book.forget(now);
                ahead.forget(now);
                serving.forget(now);
                if !reactions.is_empty() {
                    tracing::info!(node = %me, "failure detector: cut off from a majority of layout servers; stopping its reconfiguration");
                    reactions.abort_all();
                }
            }
        }
        let Some(current) = &layout else { continue };
        ahead.watch(
            addrs
                .keys()
                .filter(|peer| current.is_log_unit(peer))
                .map(|peer| format!("{peer}@{}", current.epoch)),
        );
        for peer in book.to_probe() {
            let Some(addr) = addrs.get(&peer) else {
                continue;
            };
            let target = endpoint.peer(addr);
            let unit_epoch = current.is_log_unit(&peer).then_some(current.epoch);
            probes.spawn(async move {
                let sent = Instant::now();
                let probed = probe(&target, unit_epoch, probe_timeout).await;
                (peer, sent, probed)
            });
        }
        let active = current
            .active_sequencer()
            .map(|s| (format!("{}@{}", s.node_id, current.epoch), s.addr.clone()));
        serving.watch(active.iter().map(|(key, _)| key.clone()));
        if let Some((key, addr)) = &active {
            if !serving.to_probe().is_empty() {
                let (key, target, epoch) = (key.clone(), endpoint.peer(addr), current.epoch);
                status_probes.spawn(async move {
                    let sent = Instant::now();
                    let request = Request::Sequencer(SequencerRequest::Status);
                    let fine = match target.call_timeout(epoch, request, probe_timeout).await {
                        Ok(Response::Sequencer(SequencerResponse::Status {
                            epoch: at,
                            serving,
                        })) => serving && at == epoch,
                        // Not answering is the pings' business; anything
                        // else (an old node without `Status`) is no
                        // evidence either.
                        _ => true,
                    };
                    (key, sent, fine)
                });
            }
        }
        if !reactions.is_empty() || cut_off_since.is_some() {
            continue;
        }
        let now = Instant::now();
        // Every node found unreachable goes in one removal: two dead
        // members of a chain removed one at a time would each wait for the
        // other's seal, and neither removal could finish.
        let mut gone: Vec<String> = Vec::new();
        for peer in book.due(now) {
            let mut with = gone.clone();
            with.push(peer.clone());
            if let Some(why) = removals_refused(current, &with) {
                if book.warn_once(&peer) {
                    tracing::warn!(node = %me, peer = %peer, reason = %why,
                        "failure detector: an unreachable node cannot be removed");
                }
                continue;
            }
            tracing::warn!(
                node = %me, peer = %peer, epoch = current.epoch,
                unreachable_ms = book.unreachable_for(&peer, now).unwrap_or_default().as_millis() as u64,
                "failure detector: removing an unreachable node"
            );
            book.reacted(&peer, now);
            gone = with;
        }
        if !gone.is_empty() {
            // Bound to the epoch the evidence is about: once the layout
            // moves on (the nodes removed by another detector, perhaps
            // added back since), this removal stops. A removal goes before
            // a seal: it seals the next epoch too (finishing a half-done
            // seal), while a seal would wait for the unreachable units.
            let engine = Reconfigurer::new(endpoint.clone(), servers.clone())
                .only_up_to_epoch(current.epoch)
                .keep_removed_that_answer();
            let change = if gone.len() == 1 {
                Change::RemoveNode(gone[0].clone())
            } else {
                Change::RemoveNodes(gone.clone())
            };
            reactions.spawn(async move {
                let result = engine.reconfigure(&change).await;
                (gone.join(","), result)
            });
            continue;
        }
        let now = Instant::now();
        let sealed_ahead = ahead.due(now).into_iter().next();
        if let Some(key) = &sealed_ahead {
            tracing::warn!(
                node = %me, unit = %key, epoch = current.epoch,
                "failure detector: a log unit is sealed past the committed epoch (a reconfiguration stopped half-way); sealing to finish it"
            );
            ahead.reacted(key, now);
        }
        if let Some(key) = sealed_ahead.or_else(|| serving.due(now).into_iter().next()) {
            if serving.due(now).contains(&key) {
                tracing::warn!(
                    node = %me, sequencer = %key, epoch = current.epoch,
                    "failure detector: the active sequencer answers but does not serve; sealing to restart it"
                );
                serving.reacted(&key, now);
            }
            let engine = Reconfigurer::new(endpoint.clone(), servers.clone())
                .only_up_to_epoch(current.epoch);
            reactions.spawn(async move {
                let result = engine.reconfigure(&Change::Seal).await;
                (key, result)
            });
            continue;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{NodeAddr, Segment, Stripe};
    use crate::types::ClusterId;

    const T: Duration = Duration::from_millis(300);

    fn ms(base: Instant, n: u64) -> Instant {
        base + Duration::from_millis(n)
    }

    fn book(peers: &[&str]) -> ProbeBook {
        let mut b = ProbeBook::new(T);
        b.watch(peers.iter().map(|p| p.to_string()));
        b
    }

    #[test]
    fn a_peer_failing_for_the_timeout_is_suspected() {
        let t0 = Instant::now();
        let mut b = book(&["a", "b"]);
        assert_eq!(b.to_probe(), ["a", "b"]);
        assert!(b.to_probe().is_empty(), "one probe in flight per peer");
        b.record("a", ms(t0, 0), false);
        b.record("b", ms(t0, 0), true);
        assert!(
            b.suspects(ms(t0, 1000)).is_empty(),
            "one failure is not enough"
        );
        b.to_probe();
        b.record("a", ms(t0, 150), false);
        assert!(
            b.suspects(ms(t0, 299)).is_empty(),
            "not unreachable long enough"
        );
        assert_eq!(b.suspects(ms(t0, 300)), ["a"]);
        assert_eq!(
            b.unreachable_for("a", ms(t0, 310)),
            Some(Duration::from_millis(310))
        );
        assert_eq!(b.unreachable_for("b", ms(t0, 310)), None);
    }

    #[test]
    fn one_answer_clears_the_evidence() {
        let t0 = Instant::now();
        let mut b = book(&["a"]);
        for (i, answered) in [false, false, true, false, false].into_iter().enumerate() {
            b.to_probe();
            b.record("a", ms(t0, 100 * i as u64), answered);
        }
        // Failing since 300 ms (after the answer at 200 ms), not since 0.
        assert!(b.suspects(ms(t0, 500)).is_empty());
        assert_eq!(b.suspects(ms(t0, 600)), ["a"]);
    }

    #[test]
    fn a_stalled_detector_forgets_and_ignores_old_probes() {
        let t0 = Instant::now();
        let mut b = book(&["a"]);
        assert!(!b.tick(ms(t0, 0)));
        b.to_probe();
        b.record("a", ms(t0, 0), false);
        b.to_probe();
        assert!(!b.tick(ms(t0, 100)));
        // Paused for 10 s: the probe sent at 100 ms times out on resume.
        assert!(b.tick(ms(t0, 10_100)));
        b.record("a", ms(t0, 100), false);
        assert!(b.suspects(ms(t0, 10_200)).is_empty());
        assert_eq!(b.unreachable_for("a", ms(t0, 10_200)), None);
        // Fresh evidence after the stall counts again.
        assert_eq!(
            b.to_probe(),
            ["a"],
            "the stale probe is no longer in flight"
        );
        b.record("a", ms(t0, 10_150), false);
        b.to_probe();
        b.record("a", ms(t0, 10_300), false);
        assert_eq!(b.suspects(ms(t0, 10_450)), ["a"]);
    }

    #[test]
    fn a_cut_off_detector_forgets_what_it_saw() {
        let t0 = Instant::now();
        let mut b = book(&["a"]);
        for i in 0..5 {
            b.to_probe();
            b.record("a", ms(t0, 100 * i), false);
        }
        assert_eq!(b.suspects(ms(t0, 500)), ["a"]);
        // Its layout read reached no majority at 500 ms: it was cut off.
        b.forget(ms(t0, 500));
        assert!(b.suspects(ms(t0, 500)).is_empty());
        // A probe sent during the partition fails after the heal: ignored.
        b.record("a", ms(t0, 450), false);
        assert!(b.suspects(ms(t0, 1_000)).is_empty());
        // Failures after it count from scratch.
        for i in 6..8 {
            b.to_probe();
            b.record("a", ms(t0, 100 * i), false);
        }
        assert!(
            b.suspects(ms(t0, 800)).is_empty(),
            "not for the timeout yet"
        );
        assert_eq!(b.suspects(ms(t0, 900)), ["a"]);
    }

    #[test]
    fn removals_are_retried_once_per_timeout_and_warnings_given_once() {
        let t0 = Instant::now();
        let mut b = book(&["a"]);
        for i in 0..3 {
            b.to_probe();
            b.record("a", ms(t0, 100 * i), false);
        }
        assert_eq!(b.due(ms(t0, 300)), ["a"]);
        b.reacted("a", ms(t0, 300));
        assert!(b.due(ms(t0, 599)).is_empty());
        assert_eq!(b.due(ms(t0, 600)), ["a"]);
        assert!(b.warn_once("a"));
        assert!(!b.warn_once("a"));
        b.to_probe();
        b.record("a", ms(t0, 700), true);
        assert!(b.due(ms(t0, 2000)).is_empty());
        assert!(b.warn_once("a"), "warned again after the peer came back");
    }

    #[test]
    fn watching_forgets_removed_peers_and_keeps_the_others() {
        let t0 = Instant::now();
        let mut b = book(&["a", "b"]);
        b.to_probe();
        b.record("a", ms(t0, 0), false);
        b.record("b", ms(t0, 0), false);
        assert_eq!(b.to_probe(), ["a", "b"]);
        b.watch(["b".to_string(), "c".to_string()]);
        assert_eq!(b.watched().collect::<Vec<_>>(), ["b", "c"]);
        assert!(b.unreachable_for("b", ms(t0, 10)).is_some());
        assert_eq!(b.to_probe(), ["c"], "b still has a probe in flight");
        b.record("a", ms(t0, 5), false); // forgotten: ignored
        assert!(b.unreachable_for("a", ms(t0, 10)).is_none());
    }

    fn node(i: u16) -> NodeAddr {
        NodeAddr {
            node_id: format!("n{i}"),
            addr: format!("127.0.0.1:{}", 7000 + i),
        }
    }

    fn layout(chain: &[u16], sequencers: &[u16]) -> Layout {
        Layout {
            cluster_id: ClusterId(7),
            epoch: 3,
            layout_servers: vec![node(1), node(2), node(3)],
            sequencers: sequencers.iter().map(|&i| node(i)).collect(),
            segments: vec![Segment {
                start: 0,
                end: None,
                stripes: vec![Stripe {
                    chain: chain.iter().map(|&i| node(i)).collect(),
                }],
            }],
            grants: crate::layout::Grants::from(0),
            voids: vec![],
        }
    }

    #[test]
    fn layout_servers_watch_units_and_the_active_sequencer() {
        let l = layout(&[1, 2, 4], &[5, 2]);
        let watched: Vec<_> = peers_to_watch(&l, "n2").into_keys().collect();
        assert_eq!(watched, ["n1", "n4", "n5"]);
        assert!(
            peers_to_watch(&l, "n4").is_empty(),
            "n4 is no layout server"
        );
    }

    #[test]
    fn the_last_chain_member_and_the_only_sequencer_are_not_removed() {
        let l = layout(&[1, 2], &[1, 2]);
        assert_eq!(removal_refused(&l, "n2"), None);
        let last = layout(&[1], &[1, 2]);
        assert!(removal_refused(&last, "n1")
            .unwrap()
            .contains("last log unit"));
        let only = layout(&[1, 2], &[2]);
        assert!(removal_refused(&only, "n2")
            .unwrap()
            .contains("only sequencer"));
    }

    #[test]
    fn several_nodes_are_removed_together_unless_that_empties_a_chain() {
        let l = layout(&[1, 2, 3], &[1, 4]);
        let two = ["n2".to_string(), "n3".to_string()];
        assert_eq!(removals_refused(&l, &two), None);
        let next = plan(&l, &Change::RemoveNodes(two.to_vec()), 10).unwrap();
        assert_eq!(next.open_segment().unwrap().stripes[0].chain, [node(1)]);
        assert_eq!(next.open_segment().unwrap().start, 10);
        // The head and the active sequencer with a middle member.
        let next = plan(&l, &Change::RemoveNodes(vec!["n1".into(), "n2".into()]), 10).unwrap();
        assert_eq!(next.open_segment().unwrap().stripes[0].chain, [node(3)]);
        assert_eq!(next.sequencers, [node(4)]);
        // Nodes already gone are skipped, as long as one is left to remove.
        assert!(plan(&l, &Change::RemoveNodes(vec!["n9".into(), "n3".into()]), 10).is_ok());
        assert!(plan(&l, &Change::RemoveNodes(vec!["n9".into()]), 10).is_err());
        let all = ["n1".to_string(), "n2".to_string(), "n3".to_string()];
        assert!(removals_refused(&l, &all)
            .unwrap()
            .contains("are every log unit"));
        let sequencers = ["n1".to_string(), "n4".to_string()];
        assert!(removals_refused(&l, &sequencers)
            .unwrap()
            .contains("every sequencer"));
    }

    #[test]
    fn config_defaults_and_validation() {
        let d = DetectorConfig::default();
        assert!(!d.enabled);
        assert!(d.validate().is_ok());
        let bad = DetectorConfig {
            probe_interval_ms: 600,
            ..d.clone()
        };
        assert!(bad.validate().unwrap_err().contains("probe_interval_ms"));
        let bad = DetectorConfig {
            failure_timeout_ms: 0,
            ..d
        };
        assert!(bad.validate().unwrap_err().contains("failure_timeout_ms"));
    }
}
