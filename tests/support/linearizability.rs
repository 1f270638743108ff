//! A linearizability checker for key-value histories (Herlihy and Wing,
//! "Linearizability: a correctness condition for concurrent objects",
//! 1990), by the search of Wing and Gong (1993) with the memoization of
//! Lowe ("Testing for linearizability", 2017), as Porcupine does it.
//!
//! Tests record every map operation they run as an [`Operation`]: its key,
//! what it did and saw ([`Call`]), and the times it was invoked and
//! answered, read from one monotonic [`Clock`] shared by every task (so
//! "A was answered before B was invoked" is `A.ret < B.call`). A call that
//! failed or timed out may or may not have taken effect: it is recorded
//! with no response time (`ret: None`, an infinite response), and the
//! checker may linearize it anywhere after its invocation, or not at all.
//!
//! [`check`] looks for a linearization: a total order of the operations
//! that respects real time (if `A.ret < B.call`, A comes before B) and in
//! which every operation is legal for a sequential model, a register per
//! key (`put(k, v)`, `remove(k)`, `get(k) -> Option<v>`, and `rmw(k)`, a
//! read-modify-write such as a transactional increment, legal only if it
//! read the register's current value).
//!
//! - Partitioning (P-compositionality, Horn and Kroening 2015):
//!   operations on different keys commute, so a history is linearizable iff
//!   each key's sub-history is; each key is searched alone, which keeps the
//!   search small for thousands of operations.
//! - The search: depth first, it extends a linearized prefix by one
//!   operation that may go next (one invoked before every not yet
//!   linearized operation was answered), if the model accepts it, and
//!   backtracks when none can. A node is the pair (set of linearized
//!   operations as a bitset, register value); a node seen before is not
//!   searched again, since what can follow it depends on nothing else.
//! - A failure names the key, the longest linearizable prefix found, the
//!   register's value after it, and the window of operations around the
//!   first one that could not be placed.
//!
//! The search is bounded by [`SEARCH_NODES_MAX`] per key; beyond it the
//! history is reported undecided (a failure too: a test must not pass on a
//! history it did not check).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::fmt::{self, Debug};
use std::hash::Hash;
use std::time::Instant;

/// Search nodes visited per key before the checker gives up. A history
/// with thousands of operations and a dozen clients needs about one node
/// per operation; the bound only stops a pathological search.
pub const SEARCH_NODES_MAX: usize = 5_000_000;

/// Operations listed before and after the failing one in a report.
const REPORT_WINDOW_OPS: usize = 12;

/// What an operation did to its key's register, and what it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call<V> {
    /// Set the register to the value.
    Put(V),
    /// Emptied the register.
    Remove,
    /// Read the register and saw this (absent: `None`).
    Get(Option<V>),
    /// Read `read` and, in the same atomic step, wrote `write` (`None`
    /// empties the register): a transactional read-modify-write.
    Rmw {
        /// What it read.
        read: Option<V>,
        /// What it wrote.
        write: Option<V>,
    },
}

/// One operation of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation<K, V> {
    /// Who ran it (a task number), for the report only.
    pub client: usize,
    /// The key it touched.
    pub key: K,
    /// What it did and saw.
    pub call: Call<V>,
    /// When it was invoked, in [`Clock`] nanoseconds.
    pub invoke_ns: u64,
    /// When it was answered, in [`Clock`] nanoseconds; `None` if its
    /// outcome is unknown (the call failed): it may or may not have taken
    /// effect, at any time after `invoke_ns`.
    pub response_ns: Option<u64>,
}

/// A monotonic clock shared by every task of a test.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    /// A clock reading 0 now.
    pub fn new() -> Clock {
        Clock {
            start: Instant::now(),
        }
    }

    /// Nanoseconds since the clock was made.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).expect("a test shorter than 584 years")
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// Why a history is not (known to be) linearizable.
#[derive(Debug, Clone)]
pub struct Violation<K, V> {
    /// The key whose sub-history cannot be linearized.
    pub key: K,
    /// Whether the search gave up at [`SEARCH_NODES_MAX`] instead of
    /// exhausting every order.
    pub undecided: bool,
    /// How many of the key's operations the longest linearizable prefix
    /// found holds.
    pub prefix_len: usize,
    /// How many operations the key has (answered ones and unknown ones).
    pub key_ops: usize,
    /// The register's value after that prefix.
    pub state: Option<V>,
    /// The first answered operation the prefix could not reach past, and
    /// its neighbours by invocation time; `true` marks those in the prefix.
    pub window: Vec<(bool, Operation<K, V>)>,
    /// The operation in `window` that had to come next and could not.
    pub stuck: Operation<K, V>,
}

impl<K: Debug, V: Debug> fmt::Display for Violation<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.undecided {
            writeln!(
                f,
                "key {:?}: undecided, the search visited {SEARCH_NODES_MAX} nodes",
                self.key
            )?;
        } else {
            writeln!(f, "key {:?}: not linearizable", self.key)?;
        }
        writeln!(
            f,
            "  longest linearizable prefix: {} of {} operations, leaving the register at {:?}",
            self.prefix_len, self.key_ops, self.state
        )?;
        writeln!(
            f,
            "  answered before anything else could be placed, and cannot be: {}",
            describe(&self.stuck)
        )?;
        writeln!(
            f,
            "  operations around it by invocation time (* = in the prefix):"
        )?;
        for (in_prefix, op) in &self.window {
            let mark = if *in_prefix { '*' } else { ' ' };
            writeln!(f, "   {mark} {}", describe(op))?;
        }
        Ok(())
    }
}

fn describe<K: Debug, V: Debug>(op: &Operation<K, V>) -> String {
    let response = match op.response_ns {
        Some(ns) => format!("{:.3} ms", ns as f64 / 1e6),
        None => "unknown outcome".to_string(),
    };
    format!(
        "[{:.3} ms, {response}] client {} key {:?}: {:?}",
        op.invoke_ns as f64 / 1e6,
        op.client,
        op.key,
        op.call
    )
}

/// What [`check`] searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checked {
    /// Operations checked (every key).
    pub ops: usize,
    /// Keys, each searched alone.
    pub keys: usize,
    /// Search nodes visited, over every key.
    pub nodes: usize,
}

/// Checks that `history` is linearizable for a register per key, every
/// register starting empty. Unknown-outcome reads carry no information and
/// are ignored.
pub fn check<K, V>(history: &[Operation<K, V>]) -> Result<Checked, Box<Violation<K, V>>>
where
    K: Ord + Clone + Debug,
    V: Clone + Eq + Hash + Debug,
{
    let mut by_key: BTreeMap<&K, Vec<&Operation<K, V>>> = BTreeMap::new();
    for op in history {
        if let Some(ret) = op.response_ns {
            assert!(
                op.invoke_ns <= ret,
                "answered before invoked: {}",
                describe(op)
            );
        } else if matches!(op.call, Call::Get(_)) {
            continue;
        }
        by_key.entry(&op.key).or_default().push(op);
    }
    let mut checked = Checked {
        keys: by_key.len(),
        ..Checked::default()
    };
    for (key, mut ops) in by_key {
        ops.sort_by_key(|op| (op.invoke_ns, op.response_ns.unwrap_or(u64::MAX)));
        checked.ops += ops.len();
        checked.nodes += check_key(key, &ops)?;
    }
    Ok(checked)
}

/// A set of operation indices.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bitset(Box<[u64]>);

impl Bitset {
    fn new(len: usize) -> Bitset {
        Bitset(vec![0; len.div_ceil(64)].into_boxed_slice())
    }
    fn contains(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn remove(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// The register after `call`, if `call` is legal in `state`.
fn step<V: Clone + Eq>(state: &Option<V>, call: &Call<V>) -> Option<Option<V>> {
    match call {
        Call::Put(v) => Some(Some(v.clone())),
        Call::Remove => Some(None),
        Call::Get(seen) => (seen == state).then(|| state.clone()),
        Call::Rmw { read, write } => (read == state).then(|| write.clone()),
    }
}

/// One node of the search: the register after the prefix, the operations
/// that may extend it, the next of them to try, and the operation whose
/// linearization made this node (`None` at the root).
struct Frame<V> {
    state: Option<V>,
    candidates: Vec<usize>,
    next: usize,
    via: Option<usize>,
}

/// The operations that may go next after `done`: not yet linearized, and
/// invoked no later than the earliest response of those not linearized
/// (an operation answered before another was invoked must precede it).
/// `ops` is sorted by invocation, so the scan stops at the first operation
/// invoked after that response.
fn candidates<K, V>(ops: &[&Operation<K, V>], done: &Bitset, first_open: usize) -> Vec<usize> {
    let mut earliest_response = u64::MAX;
    let mut out = Vec::new();
    for (i, op) in ops.iter().enumerate().skip(first_open) {
        if done.contains(i) {
            continue;
        }
        if op.invoke_ns > earliest_response {
            break;
        }
        out.push(i);
        if let Some(ret) = op.response_ns {
            earliest_response = earliest_response.min(ret);
        }
    }
    // An operation invoked before the earliest response but listed before
    // the operation holding it was kept; one invoked after it was not
    // reached. Drop those invoked after the final earliest response.
    out.retain(|&i| ops[i].invoke_ns <= earliest_response);
    out
}

/// Searches one key's operations (sorted by invocation); returns the
/// nodes visited.
fn check_key<K, V>(key: &K, ops: &[&Operation<K, V>]) -> Result<usize, Box<Violation<K, V>>>
where
    K: Clone + Debug,
    V: Clone + Eq + Hash + Debug,
{
    let answered = ops.iter().filter(|op| op.response_ns.is_some()).count();
    let mut done = Bitset::new(ops.len());
    let mut done_answered = 0;
    // The lowest index not linearized: everything below it is, so the
    // candidate scan starts there.
    let mut first_open = 0;
    let mut seen: HashSet<(Bitset, Option<V>)> = HashSet::new();
    let mut nodes = 1;
    let mut best: (usize, Bitset, Option<V>) = (0, done.clone(), None);
    let mut stack = vec![Frame {
        state: None,
        candidates: candidates(ops, &done, first_open),
        next: 0,
        via: None,
    }];
    while done_answered < answered {
        let Some(frame) = stack.last_mut() else {
            return Err(violation(key, ops, best, false));
        };
        let Some(&i) = frame.candidates.get(frame.next) else {
            // Every extension of this prefix failed: undo its last step.
            let frame = stack.pop().expect("a frame");
            if let Some(via) = frame.via {
                done.remove(via);
                first_open = first_open.min(via);
                if ops[via].response_ns.is_some() {
                    done_answered -= 1;
                }
            }
            continue;
        };
        frame.next += 1;
        let Some(state) = step(&frame.state, &ops[i].call) else {
            continue;
        };
        done.insert(i);
        if !seen.insert((done.clone(), state.clone())) {
            done.remove(i);
            continue;
        }
        nodes += 1;
        if nodes > SEARCH_NODES_MAX {
            return Err(violation(key, ops, best, true));
        }
        if ops[i].response_ns.is_some() {
            done_answered += 1;
        }
        while first_open < ops.len() && done.contains(first_open) {
            first_open += 1;
        }
        let linearized = stack.len();
        if linearized > best.0 {
            best = (linearized, done.clone(), state.clone());
        }
        stack.push(Frame {
            candidates: candidates(ops, &done, first_open),
            state,
            next: 0,
            via: Some(i),
        });
    }
    Ok(nodes)
}

/// The report of a failed search, from its longest prefix `best`.
fn violation<K, V>(
    key: &K,
    ops: &[&Operation<K, V>],
    best: (usize, Bitset, Option<V>),
    undecided: bool,
) -> Box<Violation<K, V>>
where
    K: Clone,
    V: Clone,
{
    let (prefix_len, done, state) = best;
    // The answered operation outside the prefix with the earliest
    // response: nothing invoked after it could go next, and it could not.
    let stuck = (0..ops.len())
        .filter(|&i| !done.contains(i) && ops[i].response_ns.is_some())
        .min_by_key(|&i| ops[i].response_ns)
        .expect("a failed search leaves an answered operation out");
    let lo = stuck.saturating_sub(REPORT_WINDOW_OPS);
    let hi = (stuck + REPORT_WINDOW_OPS + 1).min(ops.len());
    Box::new(Violation {
        key: key.clone(),
        undecided,
        prefix_len,
        key_ops: ops.len(),
        state,
        window: (lo..hi)
            .map(|i| (done.contains(i), ops[i].clone()))
            .collect(),
        stuck: ops[stuck].clone(),
    })
}
