//! A history checker for the shared log.
//!
//! Tests record every append they attempt in a [`History`]: its value
//! (unique bytes), its streams, a logical invocation tick and response tick
//! from one global counter (so "A was acknowledged before B began" is
//! `A.response < B.invoke`, with no wall clock), and its result. Writers
//! that crash between token and write are recorded with
//! [`History::invoke`] and never answered ([`Outcome::Pending`]).
//!
//! After the run, [`History::check`] takes the whole log `[0, tail)` as a
//! client read it (holes filled; addresses the layout declares void, never
//! written, are left out by the client and checked to be void by
//! [`read_log`]) and verifies:
//! - (a) every acknowledged append is readable at the address it was
//!   acknowledged at, with its value and streams;
//! - (b) two acknowledged appends never share an address, and no value
//!   sits at two addresses (so an unacknowledged value appears at most
//!   once);
//! - (c) no address below the tail is unwritten (each is data or junk);
//! - (d) real time: if A finished (acknowledged or failed) before B was
//!   invoked, and both are in the log, A's address is below B's (the
//!   sequencer granted A's token before B's);
//! - (e) every data entry is a value some append attempted, with that
//!   append's streams (nothing invented).
//!
//! [`check_replicas`] additionally reads every address from every member of
//! its chain with raw log-unit reads and requires all members to agree.
//! [`tail_reader`] reads the log behind its tail during a run, and
//! [`assert_stable`] checks that what it read never changed. [`Raw`] plays
//! crashed writers with raw sequencer and log-unit calls.

use std::collections::HashMap;
use std::fmt::Display;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use corfu::core::client::{ClientError, LogClient};
use corfu::core::layout::Layout;
use corfu::core::transport::ClientEndpoint;
use corfu::core::types::{Address, StreamId};
use corfu::core::wire::logunit::{
    AddressedEntry, Entry, LogUnitRequest, LogUnitResponse, ReadOutcome, StreamHeader, WriteOutcome,
};
use corfu::core::wire::sequencer::{SequencerRequest, SequencerResponse};
use corfu::core::wire::{Request, Response};

/// What became of one attempted append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No answer (yet): a crashed writer, or an aborted call.
    Pending,
    /// Acknowledged at this address.
    Acked(Address),
    /// The call returned an error (the value may or may not be in the log).
    Failed(String),
}

/// One attempted append.
#[derive(Debug, Clone)]
pub struct Op {
    /// Its payload, unique within the history.
    pub value: Vec<u8>,
    /// Its streams, sorted and without duplicates.
    pub streams: Vec<StreamId>,
    /// Tick taken before the call began.
    pub invoke: u64,
    /// Tick taken after the call returned, if it did.
    pub response: Option<u64>,
    /// The result.
    pub outcome: Outcome,
}

/// Handle of a recorded invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpId(pub usize);

/// The recorded appends of one run. Share it behind an `Arc`.
#[derive(Debug, Default)]
pub struct History {
    clock: AtomicU64,
    ops: Mutex<Vec<Op>>,
}

/// Counts of a history that passed the check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The log's tail (addresses checked: `[0, tail)`).
    pub tail: Address,
    /// Appends attempted.
    pub ops: usize,
    /// Appends acknowledged.
    pub acked: usize,
    /// Appends that returned an error.
    pub failed: usize,
    /// Appends that never returned (crashed writers).
    pub pending: usize,
    /// Failed appends whose value is in the log anyway (at one address).
    pub failed_present: usize,
    /// Pending appends whose value is in the log (at one address).
    pub pending_present: usize,
    /// Addresses holding data.
    pub data: usize,
    /// Addresses holding junk.
    pub junk: usize,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tail {}: {} appends ({} acked, {} failed of which {} in the log, {} pending of which {} in the log); {} data, {} junk",
            self.tail,
            self.ops,
            self.acked,
            self.failed,
            self.failed_present,
            self.pending,
            self.pending_present,
            self.data,
            self.junk
        )
    }
}

fn sorted_streams(streams: &[StreamId]) -> Vec<StreamId> {
    let mut s = streams.to_vec();
    s.sort_unstable();
    s.dedup();
    s
}

impl History {
    /// An empty history.
    pub fn new() -> History {
        History::default()
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    /// Records that an append of `value` to `streams` begins now.
    pub fn invoke(&self, value: Vec<u8>, streams: &[StreamId]) -> OpId {
        let mut ops = self.ops.lock().unwrap();
        // The tick is taken under the lock only to keep ids and ticks in
        // the same order; the order that matters is the tick's.
        let invoke = self.tick();
        ops.push(Op {
            value,
            streams: sorted_streams(streams),
            invoke,
            response: None,
            outcome: Outcome::Pending,
        });
        OpId(ops.len() - 1)
    }

    /// Records the answer to the append `id`, now.
    pub fn respond<E: Display>(&self, id: OpId, result: &Result<Address, E>) {
        let response = self.tick();
        let mut ops = self.ops.lock().unwrap();
        let op = &mut ops[id.0];
        assert!(op.response.is_none(), "append {id:?} answered twice");
        op.response = Some(response);
        op.outcome = match result {
            Ok(address) => Outcome::Acked(*address),
            Err(e) => Outcome::Failed(e.to_string()),
        };
    }

    /// `client.append(value, streams)`, recorded.
    pub async fn append(
        &self,
        client: &LogClient,
        value: Vec<u8>,
        streams: &[StreamId],
    ) -> Result<Address, ClientError> {
        let id = self.invoke(value.clone(), streams);
        let result = client.append(value, streams).await;
        self.respond(id, &result);
        result
    }

    /// `client.append_batch(entries)`, recorded: every entry is invoked
    /// before the call and answered after it.
    pub async fn append_batch(
        &self,
        client: &LogClient,
        entries: Vec<(Vec<u8>, Vec<StreamId>)>,
    ) -> Vec<Result<Address, ClientError>> {
        let ids: Vec<OpId> = entries
            .iter()
            .map(|(value, streams)| self.invoke(value.clone(), streams))
            .collect();
        let results = client.append_batch(entries).await;
        assert_eq!(
            results.len(),
            ids.len(),
            "append_batch answered a wrong count"
        );
        for (id, result) in ids.into_iter().zip(&results) {
            self.respond(id, result);
        }
        results
    }

    /// A copy of the recorded appends.
    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap().clone()
    }

    /// Checks the history against `log`, the outcomes of every address
    /// `[0, tail)` in order (see the module docs). Returns the counts, or
    /// every violation found (at most 20 listed) with the counts.
    pub fn check(&self, log: &[(Address, ReadOutcome)]) -> Result<Report, String> {
        check_ops(&self.ops(), log)
    }

    /// Reads the whole log through `client` (holes below the tail are
    /// resolved by its hole fill policy), checks it, prints and returns the
    /// report; panics with the violations otherwise.
    pub async fn check_log(&self, client: &LogClient) -> (Report, Vec<(Address, ReadOutcome)>) {
        let log = read_log(client).await;
        match self.check(&log) {
            Ok(report) => {
                eprintln!("history check passed: {report}");
                (report, log)
            }
            Err(violations) => panic!("history check failed: {violations}"),
        }
    }
}

/// The whole log `[0, tail)` as `client` reads it, without the addresses
/// the layout declares void (after a sequencer failover they can be 2^40);
/// panics if an address left out is not void.
pub async fn read_log(client: &LogClient) -> Vec<(Address, ReadOutcome)> {
    let tail = client.tail().await.expect("read the tail");
    let log = client
        .read_range(0, tail)
        .await
        .unwrap_or_else(|e| panic!("read [0, {tail}): {e}"));
    let layout = client.layout();
    let mut expected = 0;
    for (address, _) in log.iter().chain([&(tail, ReadOutcome::Unwritten)]) {
        let gap = layout.unvoided(expected, *address);
        assert!(
            gap.is_empty(),
            "the log read left out addresses {gap:?}, which are not void"
        );
        expected = address + 1;
    }
    log
}

/// What `log` (in address order, as [`read_log`] returns it) holds at
/// `address`, if it is there.
pub fn at(log: &[(Address, ReadOutcome)], address: Address) -> Option<&ReadOutcome> {
    log.binary_search_by_key(&address, |(a, _)| *a)
        .ok()
        .map(|i| &log[i].1)
}

/// The check of [`History::check`], on a copy of the ops.
pub fn check_ops(ops: &[Op], log: &[(Address, ReadOutcome)]) -> Result<Report, String> {
    let mut violations: Vec<String> = Vec::new();
    let mut report = Report {
        tail: log.last().map_or(0, |(a, _)| a + 1),
        ops: ops.len(),
        ..Report::default()
    };
    for op in ops {
        match op.outcome {
            Outcome::Pending => report.pending += 1,
            Outcome::Acked(_) => report.acked += 1,
            Outcome::Failed(_) => report.failed += 1,
        }
    }

    // Values must be unique, or the history cannot be checked.
    let mut by_value: HashMap<&[u8], usize> = HashMap::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        if let Some(j) = by_value.insert(&op.value, i) {
            return Err(format!(
                "test bug: appends #{j} and #{i} attempted the same value {:?}",
                String::from_utf8_lossy(&op.value)
            ));
        }
    }

    // (c), (e) and the value half of (b), from the log.
    let mut placed: Vec<Option<Address>> = vec![None; ops.len()];
    let mut previous: Option<Address> = None;
    for (i, (address, outcome)) in log.iter().enumerate() {
        // Void addresses are left out (`read_log` checks they are void);
        // everything else is in order, once.
        if previous.is_some_and(|p| *address <= p) {
            violations.push(format!(
                "the log read is not in address order: position {i} holds address {address}"
            ));
            continue;
        }
        previous = Some(*address);
        match outcome {
            ReadOutcome::Data(entry) => {
                report.data += 1;
                let Some(&op) = by_value.get(entry.payload.as_slice()) else {
                    violations.push(format!(
                        "(e) address {address} holds a value no append attempted: {:?}",
                        String::from_utf8_lossy(&entry.payload)
                    ));
                    continue;
                };
                let streams: Vec<StreamId> = entry.streams.iter().map(|h| h.stream).collect();
                if sorted_streams(&streams) != ops[op].streams
                    || streams.len() != ops[op].streams.len()
                {
                    violations.push(format!(
                        "(e) address {address} holds append #{op}'s value with streams {streams:?}, \
                         but it was appended to {:?}",
                        ops[op].streams
                    ));
                }
                match placed[op] {
                    Some(other) => violations.push(format!(
                        "(b) append #{op}'s value {:?} sits at two addresses, {other} and {address}",
                        String::from_utf8_lossy(&ops[op].value)
                    )),
                    None => placed[op] = Some(*address),
                }
            }
            ReadOutcome::Junk => report.junk += 1,
            ReadOutcome::Unwritten => violations.push(format!(
                "(c) address {address}, below the tail {}, is unwritten after the read",
                report.tail
            )),
            ReadOutcome::Trimmed => {
                violations.push(format!("address {address} is trimmed (nothing trimmed it)"))
            }
        }
    }

    // (a) and the address half of (b), from the acknowledgements.
    let mut acked_at: HashMap<Address, usize> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        match &op.outcome {
            Outcome::Acked(address) => {
                if let Some(j) = acked_at.insert(*address, i) {
                    violations.push(format!(
                        "(b) appends #{j} and #{i} were both acknowledged at address {address}"
                    ));
                }
                match placed[i] {
                    Some(found) if found == *address => {}
                    Some(found) => violations.push(format!(
                        "(a) append #{i} was acknowledged at {address} but its value is at {found}"
                    )),
                    None => {
                        let there = log
                            .get(*address as usize)
                            .map(|(_, o)| describe(o))
                            .unwrap_or_else(|| "beyond the tail".to_string());
                        violations.push(format!(
                            "(a) append #{i} ({:?}) was acknowledged at {address} but its value is \
                             nowhere in the log; the address holds {there}",
                            String::from_utf8_lossy(&op.value)
                        ));
                    }
                }
            }
            Outcome::Failed(_) if placed[i].is_some() => report.failed_present += 1,
            Outcome::Pending if placed[i].is_some() => report.pending_present += 1,
            _ => {}
        }
    }

    // (d): sort the finished, placed ops by response tick; for each placed
    // op B, every A with A.response < B.invoke must lie below B.
    let position = |i: usize| match ops[i].outcome {
        Outcome::Acked(a) => Some(a),
        _ => placed[i],
    };
    let mut finished: Vec<(u64, Address, usize)> = ops
        .iter()
        .enumerate()
        .filter_map(|(i, op)| Some((op.response?, position(i)?, i)))
        .collect();
    finished.sort_unstable();
    // prefix_max[k] = (address, op) of the highest address among finished[..=k].
    let mut prefix_max: Vec<(Address, usize)> = Vec::with_capacity(finished.len());
    for &(_, address, i) in &finished {
        let best = match prefix_max.last() {
            Some(&(a, j)) if a >= address => (a, j),
            _ => (address, i),
        };
        prefix_max.push(best);
    }
    for (b, op) in ops.iter().enumerate() {
        let Some(b_address) = position(b) else {
            continue;
        };
        let before = finished.partition_point(|&(response, _, _)| response < op.invoke);
        if before == 0 {
            continue;
        }
        let (a_address, a) = prefix_max[before - 1];
        if a_address >= b_address {
            violations.push(format!(
                "(d) append #{a} finished (tick {}) before append #{b} began (tick {}), \
                 but #{a} is at {a_address} and #{b} at {b_address}",
                ops[a].response.unwrap_or_default(),
                op.invoke
            ));
        }
    }

    if violations.is_empty() {
        Ok(report)
    } else {
        let total = violations.len();
        violations.truncate(20);
        Err(format!(
            "{total} violation(s) ({report}):\n  {}",
            violations.join("\n  ")
        ))
    }
}

fn describe(outcome: &ReadOutcome) -> String {
    match outcome {
        ReadOutcome::Data(entry) => format!("data {:?}", String::from_utf8_lossy(&entry.payload)),
        ReadOutcome::Junk => "junk".into(),
        ReadOutcome::Unwritten => "nothing".into(),
        ReadOutcome::Trimmed => "a trimmed address".into(),
    }
}

/// Reads `addresses` from one log unit with raw `ReadBatch` requests at
/// `epoch` (the unit may answer a prefix; the rest is asked again).
pub async fn raw_reads(
    endpoint: &ClientEndpoint,
    unit: &str,
    epoch: u64,
    addresses: &[Address],
) -> Vec<(Address, ReadOutcome)> {
    let peer = endpoint.peer(unit);
    let mut out = Vec::with_capacity(addresses.len());
    let mut rest = addresses;
    while !rest.is_empty() {
        let ask = &rest[..rest.len().min(512)];
        let answer = peer
            .call(
                epoch,
                Request::LogUnit(LogUnitRequest::ReadBatch(ask.to_vec())),
            )
            .await
            .unwrap_or_else(|e| panic!("raw read on {unit}: {e}"));
        let Response::LogUnit(LogUnitResponse::Reads(reads)) = answer else {
            panic!("raw read on {unit}: unexpected answer {answer:?}");
        };
        assert!(
            !reads.is_empty() && reads.len() <= ask.len(),
            "raw read on {unit}: {} answers to {} addresses",
            reads.len(),
            ask.len()
        );
        for ((a, _), b) in reads.iter().zip(ask) {
            assert_eq!(a, b, "raw read on {unit}: answers out of order");
        }
        rest = &rest[reads.len()..];
        out.extend(reads);
    }
    out
}

/// Reads every address of `[0, tail)` but the void ones from every member
/// of its chain in `layout` and requires all members to hold the same outcome, and that
/// outcome to be data or junk; also that it equals `log` (as a client read
/// it from the tail), if given. Returns the number of (address, member)
/// pairs compared.
pub async fn check_replicas(
    endpoint: &ClientEndpoint,
    layout: &Layout,
    tail: Address,
    log: Option<&[(Address, ReadOutcome)]>,
) -> usize {
    // Group the addresses by chain (as node address lists).
    let mut by_chain: Vec<(Vec<String>, Vec<Address>)> = Vec::new();
    // Void addresses hold nothing anywhere, by the layout's decree.
    let addresses = layout
        .unvoided(0, tail)
        .into_iter()
        .flat_map(|(from, to)| from..to);
    for address in addresses {
        let chain: Vec<String> = layout
            .chain_of(address)
            .unwrap_or_else(|| panic!("no chain holds address {address}"))
            .iter()
            .map(|n| n.addr.clone())
            .collect();
        match by_chain.iter_mut().find(|(c, _)| *c == chain) {
            Some((_, addresses)) => addresses.push(address),
            None => by_chain.push((chain, vec![address])),
        }
    }
    let mut compared = 0;
    let mut problems = Vec::new();
    for (chain, addresses) in &by_chain {
        let mut members = Vec::new();
        for unit in chain {
            members.push(raw_reads(endpoint, unit, layout.epoch, addresses).await);
        }
        for (k, &address) in addresses.iter().enumerate() {
            let head = &members[0][k].1;
            if !matches!(head, ReadOutcome::Data(_) | ReadOutcome::Junk) {
                problems.push(format!(
                    "address {address}: the head {} holds {}",
                    chain[0],
                    describe(head)
                ));
            }
            for (m, reads) in members.iter().enumerate().skip(1) {
                compared += 1;
                if &reads[k].1 != head {
                    problems.push(format!(
                        "address {address}: the head {} holds {} but member {m} ({}) holds {}",
                        chain[0],
                        describe(head),
                        chain[m],
                        describe(&reads[k].1)
                    ));
                }
            }
            if let Some(read) = log.and_then(|log| at(log, address)) {
                if read != head {
                    problems.push(format!(
                        "address {address}: the client read {} but the chain holds {}",
                        describe(read),
                        describe(head)
                    ));
                }
            }
        }
    }
    let total = problems.len();
    problems.truncate(20);
    assert!(
        problems.is_empty(),
        "{total} replica problem(s):\n  {}",
        problems.join("\n  ")
    );
    compared
}

/// Reads the log behind its tail through `reader` until `stop` is set and
/// it has caught up; returns every outcome it read, in address order (void
/// addresses left out). Every address below the tail must read as data or
/// junk (the reader's hole fill policy must not be `never`).
pub async fn tail_reader(reader: LogClient, stop: Arc<AtomicBool>) -> Vec<(Address, ReadOutcome)> {
    let mut seen: Vec<(Address, ReadOutcome)> = Vec::new();
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        let tail = reader.tail().await.expect("reader: tail");
        let from = seen.last().map_or(0, |(a, _)| a + 1);
        if tail > from {
            let part = reader
                .read_range(from, tail)
                .await
                .unwrap_or_else(|e| panic!("reader: read [{from}, {tail}): {e}"));
            for (address, outcome) in &part {
                assert!(
                    matches!(outcome, ReadOutcome::Data(_) | ReadOutcome::Junk),
                    "reader: address {address} below the tail {tail} read as {outcome:?} \
                     despite hole filling"
                );
            }
            seen.extend(part);
        } else if stopping {
            return seen;
        } else {
            // Polling pace only; nothing waits on it.
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }
}

/// Reads are stable: every outcome in `observed` (as [`tail_reader`]
/// returns it) is what `log` holds at that address.
pub fn assert_stable(
    what: &str,
    observed: &[(Address, ReadOutcome)],
    log: &[(Address, ReadOutcome)],
) {
    for (address, outcome) in observed {
        assert_eq!(
            Some(outcome),
            at(log, *address),
            "{what}: address {address} changed after it was read (or is beyond the log)"
        );
    }
}

/// Raw access to the cluster, bypassing the log client: to play writers
/// that crash between token and write, or in the middle of a chain.
pub struct Raw {
    /// The endpoint the calls go through.
    pub endpoint: ClientEndpoint,
    /// The layout the calls address (its epoch is sent).
    pub layout: Layout,
}

impl Raw {
    /// Raw access with `endpoint` to the cluster of `layout`.
    pub fn new(endpoint: ClientEndpoint, layout: Layout) -> Raw {
        Raw { endpoint, layout }
    }

    /// Sends `request` to the node at `addr` at the layout's epoch.
    pub async fn call(&self, addr: &str, request: Request) -> Response {
        self.endpoint
            .peer(addr)
            .call(self.layout.epoch, request)
            .await
            .unwrap_or_else(|e| panic!("raw call to {addr}: {e}"))
    }

    /// Takes `count` addresses for `streams` from the active sequencer;
    /// returns the entries a writer would write there (payloads from
    /// `payload(i)`, backpointers as the sequencer granted them).
    pub async fn token(
        &self,
        count: u32,
        streams: &[StreamId],
        mut payload: impl FnMut(u32) -> Vec<u8>,
    ) -> Vec<(Address, Entry)> {
        let sequencer = self
            .layout
            .active_sequencer()
            .expect("the layout names a sequencer")
            .addr
            .clone();
        let request = Request::Sequencer(SequencerRequest::Token {
            count,
            streams: streams.to_vec(),
            condition: None,
        });
        let (start, previous) = match self.call(&sequencer, request).await {
            Response::Sequencer(SequencerResponse::Token {
                start,
                count: granted,
                previous,
            }) if granted == count => (start, previous),
            other => panic!("raw token: unexpected answer {other:?}"),
        };
        (0..count)
            .map(|i| {
                let address = start + u64::from(i);
                let streams = streams
                    .iter()
                    .map(|&stream| StreamHeader {
                        stream,
                        backpointer: if i == 0 {
                            previous
                                .iter()
                                .find(|(s, _)| *s == stream)
                                .and_then(|(_, bp)| *bp)
                        } else {
                            Some(address - 1)
                        },
                    })
                    .collect();
                (
                    address,
                    Entry {
                        id: None,
                        streams,
                        payload: payload(i),
                    },
                )
            })
            .collect()
    }

    /// The chain of `address` (node addresses, head first).
    pub fn chain(&self, address: Address) -> Vec<String> {
        self.layout
            .chain_of(address)
            .unwrap_or_else(|| panic!("no chain holds address {address}"))
            .iter()
            .map(|n| n.addr.clone())
            .collect()
    }

    /// Writes `entry` at `address` on the unit `unit` only.
    pub async fn write(&self, unit: &str, address: Address, entry: &Entry) -> WriteOutcome {
        let request = Request::LogUnit(LogUnitRequest::Write(AddressedEntry {
            address,
            entry: entry.clone(),
        }));
        match self.call(unit, request).await {
            Response::LogUnit(LogUnitResponse::Write(outcome)) => outcome,
            other => panic!("raw write to {unit}: unexpected answer {other:?}"),
        }
    }

    /// Junks `address` on the unit `unit` only.
    pub async fn fill(&self, unit: &str, address: Address) -> WriteOutcome {
        let request = Request::LogUnit(LogUnitRequest::Fill { address });
        match self.call(unit, request).await {
            Response::LogUnit(LogUnitResponse::Write(outcome)) => outcome,
            other => panic!("raw fill on {unit}: unexpected answer {other:?}"),
        }
    }

    /// What every member of the chain of `address` holds there, head first.
    pub async fn read_members(&self, address: Address) -> Vec<ReadOutcome> {
        let mut out = Vec::new();
        for unit in self.chain(address) {
            let mut reads = raw_reads(&self.endpoint, &unit, self.layout.epoch, &[address]).await;
            out.push(reads.pop().expect("one read").1);
        }
        out
    }

    /// The addresses the sequencer lists for `stream` in `[from, to)`.
    pub async fn stream_addresses(
        &self,
        stream: StreamId,
        from: Address,
        to: Address,
    ) -> Vec<Address> {
        let sequencer = self
            .layout
            .active_sequencer()
            .expect("the layout names a sequencer")
            .addr
            .clone();
        let mut out: Vec<Address> = Vec::new();
        let mut cursor = from;
        while cursor < to {
            let request = Request::Sequencer(SequencerRequest::StreamAddresses {
                stream,
                from: cursor,
                to,
            });
            let part = match self.call(&sequencer, request).await {
                Response::Sequencer(SequencerResponse::Addresses { addresses, .. }) => addresses,
                other => panic!("raw stream addresses: unexpected answer {other:?}"),
            };
            let Some(&last) = part.last() else { break };
            assert!(
                part.windows(2).all(|w| w[0] < w[1]) && part[0] >= cursor && last < to,
                "stream addresses out of order or range: {part:?}"
            );
            out.extend(part);
            cursor = last + 1;
        }
        out
    }
}
