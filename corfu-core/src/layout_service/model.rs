//! Model check (stateright) of the layout service's Paxos: two proposers
//! race to decide epoch 1 against three layout servers that run the real
//! [`Acceptor`] rules.
//!
//! # What is modelled
//!
//! - **Acceptors** (actors 0, 1, 2). Each keeps two copies of its state, as
//!   compact values: `memory` (the live acceptor) and `durable` (what its
//!   driver persisted). A request is served by the real code:
//!   `Acceptor::from_state(memory)`, then [`Acceptor::handle`], and the new
//!   memory is `snapshot()` (memoized: the acceptor is a pure function of
//!   its state and the request). Like the real driver, the model copies
//!   memory to `durable` only when `Outcome::changed` is set. An acceptor may
//!   **crash and restart** at any moment, any number of times (a timer that
//!   is always armed): it resumes from `durable`, so an acceptor that
//!   changed its state without asking for it to be persisted forgets that
//!   change. Messages in flight to it are lost or not: see the network.
//! - **Proposers** (actors 3 and 4), each with its own layout for epoch 1
//!   (the layouts differ in the sequencer's node id), mirroring
//!   `proposer::Proposer::propose`. Round `n` of proposer `p` has rank
//!   `(n, p)`. Phase 1 sends `Prepare` to every acceptor; on a majority of
//!   promises the proposer adopts the highest-ranked accepted layout they
//!   report, else keeps its own; phase 2 sends `Propose` to every acceptor;
//!   on a majority of `Accepted` the layout is decided and `Commit` goes to
//!   every acceptor. An `AlreadyCommitted` answer decides the committed
//!   layout, which the proposer commits everywhere too. A proposer may give
//!   up on a round at any moment (a rejection, or no progress: a timeout)
//!   and start the next one with number `max(own, highest rejected) + 1`,
//!   up to a bound on rounds (1, or [`ROUNDS`]). Answers carry the request
//!   they answer (the transport's request id), so an answer to an older
//!   round never counts for the current one.
//! - **Network**: stateright's unordered duplicating network. Messages are
//!   reordered arbitrarily and each may be delivered any number of times,
//!   or never. Never delivering a message is how loss is modelled: the
//!   properties look at actor states and history, never at the network, so
//!   a lost message cannot be told from one that stays in flight forever
//!   (stateright's explicit `Drop` action would only multiply the states).
//! - **Crashes**: the acceptor crash-restart above (the one that can lose
//!   state). A crash that stops an actor for good needs no action of its
//!   own: every state is checked, and nothing forces an actor to take its
//!   next step, so the states reachable when a proposer or an acceptor
//!   stops are already among those checked.
//!
//! # Properties
//!
//! - always: at most one layout is chosen (accepted by a majority at one
//!   rank, from the history), committed by an acceptor (live or persisted
//!   state) or decided by a proposer, for epoch 1;
//! - always: every committed or decided layout was proposed by someone;
//! - always: an acceptor's live state is its persisted state (it never
//!   changes state without asking its driver to persist the change);
//! - always: no acceptor answers an error (e.g. a conflicting commit);
//! - sometimes (so the check is not vacuous): a layout is committed; a
//!   proposer proposes a layout that it adopted from a promise; both
//!   proposers decide; with retries, a proposer decides in a later round.
//!
//! # Bounds and state-space reduction
//!
//! Breadth first, over canonical states ([`Paxos::canonical`]): the model
//! forgets which message was delivered last (stateright's duplicating
//! network records it; it has no effect on behaviour), drops answers that
//! their proposer ignores for ever (stale round, already counted, proposer
//! decided: see [`proposer_step`]), and sorts the three interchangeable
//! acceptors. Two checks: one round per proposer, every reachable state
//! (about 20,000); two rounds per proposer, every path of up to 16 steps
//! (about 240,000 states). Both take seconds in a release build on two
//! cores; the unbounded two-round space has millions of states.
//!
//! `broken_acceptor_is_caught` runs the model with acceptors that break
//! one rule each (wrappers around the real acceptor) and asserts that the
//! checker finds two layouts chosen for one epoch.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use stateright::actor::{
    model_timeout, Actor, ActorModel, ActorModelAction, ActorModelState, Envelope, Id,
    LossyNetwork, Network, Out,
};
use stateright::util::HashableHashSet;
use stateright::{Checker, HasDiscoveries, Model, Path, Property};

use super::acceptor::{Acceptor, AcceptorState};
use crate::layout::{Layout, NodeAddr, Segment, Stripe};
use crate::types::{ClusterId, Epoch};
use crate::wire::layout::{LayoutRequest, LayoutResponse, Rank};
use crate::wire::Response;

/// The epoch the proposers decide.
const EPOCH: Epoch = 1;
/// Number of acceptors (actors `0..ACCEPTORS`; proposers follow).
const ACCEPTORS: usize = 3;
/// A majority of the acceptors.
const MAJORITY: u32 = 2;
/// Number of proposers, one per known layout.
const PROPOSERS: usize = 2;
/// Rounds per proposer (the first one included) in the check with
/// retries.
const ROUNDS: u8 = 2;
/// Steps explored in the check with retries.
const RETRY_DEPTH: usize = 16;

/// A layout, by index into the layouts the model knows ([`layout_of`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Value(u8);

impl Value {
    /// A layout that no proposer proposed.
    const UNKNOWN: Value = Value(u8::MAX);
}

/// The layouts the proposers propose: they differ in the sequencer's node
/// id (`seq0`, `seq1`).
fn layouts() -> &'static [Layout] {
    static LAYOUTS: OnceLock<Vec<Layout>> = OnceLock::new();
    LAYOUTS.get_or_init(|| {
        let node = |id: String, port: u16| NodeAddr {
            node_id: id,
            addr: format!("127.0.0.1:{port}"),
        };
        (0..PROPOSERS)
            .map(|p| Layout {
                cluster_id: ClusterId(7),
                epoch: EPOCH,
                layout_servers: (0..ACCEPTORS as u16)
                    .map(|i| node(format!("ls{i}"), 7000 + i))
                    .collect(),
                sequencers: vec![node(format!("seq{p}"), 8000)],
                segments: vec![Segment {
                    start: 0,
                    end: None,
                    stripes: vec![Stripe {
                        chain: vec![node("lu0".to_string(), 9000)],
                    }],
                }],
                grants: crate::layout::Grants::from(0),
                voids: vec![],
            })
            .collect()
    })
}

fn layout_of(value: Value) -> Layout {
    layouts()[usize::from(value.0)].clone()
}

/// The value a layout stands for ([`Value::UNKNOWN`] unless it equals a
/// known layout in every field).
fn value_of(layout: &Layout) -> Value {
    layouts()
        .iter()
        .position(|l| l == layout)
        .map_or(Value::UNKNOWN, |i| Value(i as u8))
}

/// An [`AcceptorState`] with layouts as [`Value`]s: small and hashable.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Compact {
    committed: Option<Value>,
    promised: Vec<(Epoch, Rank)>,
    accepted: Vec<(Epoch, Rank, Value)>,
}

impl Compact {
    fn of(state: AcceptorState) -> Compact {
        Compact {
            committed: state.committed.as_ref().map(value_of),
            promised: state.promised,
            accepted: state
                .accepted
                .iter()
                .map(|(e, r, l)| (*e, *r, value_of(l)))
                .collect(),
        }
    }

    fn state(&self) -> AcceptorState {
        AcceptorState {
            committed: self.committed.map(layout_of),
            promised: self.promised.clone(),
            accepted: self
                .accepted
                .iter()
                .map(|(e, r, v)| (*e, *r, layout_of(*v)))
                .collect(),
        }
    }
}

/// A request to an acceptor (for epoch 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Req {
    Prepare(Rank),
    Propose(Rank, Value),
    Commit(Value),
}

impl Req {
    fn request(self) -> LayoutRequest {
        match self {
            Req::Prepare(rank) => LayoutRequest::Prepare { epoch: EPOCH, rank },
            Req::Propose(rank, v) => LayoutRequest::Propose {
                epoch: EPOCH,
                rank,
                layout: Box::new(layout_of(v)),
            },
            Req::Commit(v) => LayoutRequest::Commit {
                layout: Box::new(layout_of(v)),
            },
        }
    }
}

/// An acceptor's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Resp {
    Promise(Option<(Rank, Value)>),
    Accepted,
    Rejected(Rank),
    AlreadyCommitted(Value),
    Committed,
    /// `Response::Error`, or an answer a layout server must not give here.
    Error,
}

impl Resp {
    fn of(response: Response) -> Resp {
        match response {
            Response::Layout(LayoutResponse::Promise { accepted }) => {
                Resp::Promise(accepted.map(|(r, l)| (r, value_of(&l))))
            }
            Response::Layout(LayoutResponse::Accepted) => Resp::Accepted,
            Response::Layout(LayoutResponse::Rejected { promised }) => Resp::Rejected(promised),
            Response::Layout(LayoutResponse::AlreadyCommitted { layout }) => {
                Resp::AlreadyCommitted(value_of(&layout))
            }
            Response::Layout(LayoutResponse::Committed) => Resp::Committed,
            _ => Resp::Error,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Msg {
    Req(Req),
    /// An answer, with the request it answers.
    Reply(Req, Resp),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Timer {
    /// An acceptor crashes and restarts from its persisted state.
    Restart,
    /// A proposer gives up on its round and starts the next one.
    Retry,
}

/// How the acceptors apply the rules: the real ones, or a deliberately
/// broken wrapper around them, to show that the model catches such bugs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Rule {
    Real,
    /// Accepts a proposal whatever rank it promised.
    IgnorePromisesOnPropose,
    /// Promises without reporting the proposal it accepted.
    HideAcceptedInPromise,
    /// Its driver does not persist promises (`changed` is dropped on
    /// `Prepare`), so a restart forgets them.
    PromisesNotPersisted,
}

impl Rule {
    /// Serves `req` from `memory`: the new memory, whether to persist it,
    /// the answer. The acceptor is a pure function of its state and the
    /// request, so answers are memoized (per checker thread).
    fn serve(self, memory: &Compact, req: Req) -> (Compact, bool, Resp) {
        type Memo = HashMap<(Rule, Compact, Req), (Compact, bool, Resp)>;
        thread_local! {
            static MEMO: RefCell<Memo> = RefCell::new(HashMap::new());
        }
        let key = (self, memory.clone(), req);
        if let Some(hit) = MEMO.with(|m| m.borrow().get(&key).cloned()) {
            return hit;
        }
        let served = self.serve_now(memory, req);
        MEMO.with(|m| m.borrow_mut().insert(key, served.clone()));
        served
    }

    fn serve_now(self, memory: &Compact, req: Req) -> (Compact, bool, Resp) {
        let mut state = memory.state();
        if self == Rule::IgnorePromisesOnPropose && matches!(req, Req::Propose(..)) {
            state.promised.clear();
        }
        let mut acceptor = Acceptor::from_state(state);
        let outcome = acceptor.handle(req.request());
        let mut resp = Resp::of(outcome.response);
        let mut changed = outcome.changed;
        match self {
            Rule::HideAcceptedInPromise if matches!(resp, Resp::Promise(Some(_))) => {
                resp = Resp::Promise(None);
            }
            Rule::PromisesNotPersisted if matches!(req, Req::Prepare(_)) => changed = false,
            _ => {}
        }
        (Compact::of(acceptor.snapshot()), changed, resp)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct AcceptorNode {
    /// The live acceptor's state.
    memory: Compact,
    /// The state its driver persisted.
    durable: Compact,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Phase {
    /// Phase 1: acceptors that promised (a bit per acceptor), and the
    /// highest-ranked accepted proposal they reported.
    Preparing {
        promises: u8,
        adopted: Option<(Rank, Value)>,
    },
    /// Phase 2: the value proposed, acceptors that accepted it.
    Proposing { value: Value, accepts: u8 },
    /// The outcome.
    Decided(Value),
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct ProposerNode {
    round: u8,
    rank: Rank,
    /// Highest round number seen in a rejection.
    max_seen: u64,
    phase: Phase,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum NodeState {
    Acceptor(AcceptorNode),
    Proposer(ProposerNode),
}

#[derive(Clone)]
enum Node {
    Acceptor(Rule),
    /// A proposer of a layout, with its number of rounds.
    Proposer(Value, u8),
}

fn broadcast(o: &mut Out<Node>, req: Req) {
    for a in 0..ACCEPTORS {
        o.send(Id::from(a), Msg::Req(req));
    }
}

impl Actor for Node {
    type Msg = Msg;
    type Timer = Timer;
    type State = NodeState;

    fn name(&self) -> String {
        match self {
            Node::Acceptor(_) => "acceptor".to_string(),
            Node::Proposer(v, _) => format!("proposer of L{}", v.0),
        }
    }

    fn on_start(&self, id: Id, o: &mut Out<Self>) -> NodeState {
        match self {
            Node::Acceptor(_) => {
                o.set_timer(Timer::Restart, model_timeout());
                NodeState::Acceptor(AcceptorNode {
                    memory: Compact::default(),
                    durable: Compact::default(),
                })
            }
            Node::Proposer(_, rounds) => {
                let rank = Rank {
                    number: 1,
                    proposer: usize::from(id) as u64,
                };
                broadcast(o, Req::Prepare(rank));
                if *rounds > 1 {
                    o.set_timer(Timer::Retry, model_timeout());
                }
                NodeState::Proposer(ProposerNode {
                    round: 1,
                    rank,
                    max_seen: 0,
                    phase: Phase::Preparing {
                        promises: 0,
                        adopted: None,
                    },
                })
            }
        }
    }

    fn on_msg(&self, _id: Id, state: &mut Cow<NodeState>, src: Id, msg: Msg, o: &mut Out<Self>) {
        match (self, &**state, msg) {
            (Node::Acceptor(rule), NodeState::Acceptor(node), Msg::Req(req)) => {
                let (memory, changed, resp) = rule.serve(&node.memory, req);
                let next = AcceptorNode {
                    durable: if changed {
                        memory.clone()
                    } else {
                        node.durable.clone()
                    },
                    memory,
                };
                if next != *node {
                    *state.to_mut() = NodeState::Acceptor(next);
                }
                o.send(src, Msg::Reply(req, resp));
            }
            (Node::Proposer(own, rounds), NodeState::Proposer(p), Msg::Reply(req, resp)) => {
                let from = usize::from(src);
                if let Some(next) = proposer_step(*own, *rounds, p, from, req, resp, o) {
                    *state.to_mut() = NodeState::Proposer(next);
                }
            }
            _ => {}
        }
    }

    fn on_timeout(&self, _id: Id, state: &mut Cow<NodeState>, timer: &Timer, o: &mut Out<Self>) {
        match (self, &**state, timer) {
            (_, NodeState::Acceptor(node), Timer::Restart) => {
                o.set_timer(Timer::Restart, model_timeout());
                if node.memory != node.durable {
                    *state.to_mut() = NodeState::Acceptor(AcceptorNode {
                        memory: node.durable.clone(),
                        durable: node.durable.clone(),
                    });
                }
            }
            (Node::Proposer(_, rounds), NodeState::Proposer(p), Timer::Retry) => {
                if matches!(p.phase, Phase::Decided(_)) || p.round >= *rounds {
                    return;
                }
                let round = p.round + 1;
                let rank = Rank {
                    number: p.rank.number.max(p.max_seen) + 1,
                    proposer: p.rank.proposer,
                };
                broadcast(o, Req::Prepare(rank));
                if round < *rounds {
                    o.set_timer(Timer::Retry, model_timeout());
                }
                *state.to_mut() = NodeState::Proposer(ProposerNode {
                    round,
                    rank,
                    max_seen: p.max_seen,
                    phase: Phase::Preparing {
                        promises: 0,
                        adopted: None,
                    },
                });
            }
            _ => {}
        }
    }
}

/// A proposer's reaction to acceptor `from`'s answer `resp` to `req`: its
/// next state, or `None` if it ignores the answer. An answer ignored once
/// is ignored for ever ([`Paxos::canonical`] relies on it): ranks only grow, and
/// within a rank the phase only moves forward and bits are only set.
fn proposer_step(
    own: Value,
    rounds: u8,
    p: &ProposerNode,
    from: usize,
    req: Req,
    resp: Resp,
    o: &mut Out<Node>,
) -> Option<ProposerNode> {
    if matches!(p.phase, Phase::Decided(_)) || from >= ACCEPTORS {
        return None;
    }
    let bit = 1u8 << from;
    let mut next = p.clone();
    match (resp, p.phase) {
        (Resp::AlreadyCommitted(v), _) => {
            // Decided by someone else: help the acceptors that missed it.
            next.phase = Phase::Decided(v);
            o.cancel_timer(Timer::Retry);
            broadcast(o, Req::Commit(v));
        }
        (Resp::Rejected(promised), _) if promised.number > p.max_seen && p.round < rounds => {
            next.max_seen = promised.number;
        }
        (Resp::Promise(accepted), Phase::Preparing { promises, adopted })
            if req == Req::Prepare(p.rank) && promises & bit == 0 =>
        {
            let promises = promises | bit;
            let adopted = adopted.max(accepted);
            if promises.count_ones() >= MAJORITY {
                let value = adopted.map_or(own, |(_, v)| v);
                next.phase = Phase::Proposing { value, accepts: 0 };
                broadcast(o, Req::Propose(p.rank, value));
            } else {
                next.phase = Phase::Preparing { promises, adopted };
            }
        }
        (Resp::Accepted, Phase::Proposing { value, accepts })
            if req == Req::Propose(p.rank, value) && accepts & bit == 0 =>
        {
            let accepts = accepts | bit;
            if accepts.count_ones() >= MAJORITY {
                next.phase = Phase::Decided(value);
                o.cancel_timer(Timer::Retry);
                broadcast(o, Req::Commit(value));
            } else {
                next.phase = Phase::Proposing { value, accepts };
            }
        }
        _ => return None,
    }
    Some(next)
}

/// What happened, for the properties: the proposals sent, the accepts
/// answered, and whether an acceptor answered an error.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct History {
    proposed: BTreeSet<(Rank, Value)>,
    accepted: BTreeSet<(Rank, Value, Id)>,
    error: bool,
}

impl History {
    /// Values accepted by a majority at one rank.
    fn chosen(&self) -> BTreeSet<Value> {
        let mut votes: BTreeMap<(Rank, Value), u32> = BTreeMap::new();
        for (r, v, _) in &self.accepted {
            *votes.entry((*r, *v)).or_default() += 1;
        }
        votes
            .into_iter()
            .filter(|(_, n)| *n >= MAJORITY)
            .map(|((_, v), _)| v)
            .collect()
    }
}

fn record_msg_out(_: &(), history: &History, env: Envelope<&Msg>) -> Option<History> {
    let mut next = history.clone();
    let changed = match *env.msg {
        Msg::Req(Req::Propose(r, v)) => next.proposed.insert((r, v)),
        Msg::Reply(Req::Propose(r, v), Resp::Accepted) => next.accepted.insert((r, v, env.src)),
        Msg::Reply(_, Resp::Error) => !std::mem::replace(&mut next.error, true),
        _ => false,
    };
    changed.then_some(next)
}

type PaxosModel = ActorModel<Node, (), History>;
type PaxosState = ActorModelState<Node, History>;
type PaxosAction = ActorModelAction<Msg, Timer>;

/// The actors: acceptors following `rule`, then one proposer per layout,
/// proposer `p` (actor `ACCEPTORS + p`) with `rounds[p]` rounds.
fn nodes(rule: Rule, rounds: [u8; PROPOSERS]) -> Vec<Node> {
    (0..ACCEPTORS)
        .map(|_| Node::Acceptor(rule))
        .chain((0..PROPOSERS).map(|p| Node::Proposer(Value(p as u8), rounds[p])))
        .collect()
}

/// The actor model of the protocol, explored through canonical states (see
/// the module doc): `Paxos::next_state` is the actor model's, followed by
/// [`Paxos::canonical`].
struct Paxos {
    actors: PaxosModel,
    /// Also sort the acceptors (symmetry reduction). Off, acceptors keep
    /// their names along a path, which makes counterexamples readable.
    permute: bool,
}

impl Paxos {
    fn new(rule: Rule, rounds: [u8; PROPOSERS], permute: bool) -> Paxos {
        Paxos {
            actors: ActorModel::new((), History::default())
                .actors(nodes(rule, rounds))
                .init_network(Network::new_unordered_duplicating([]))
                .lossy_network(LossyNetwork::No)
                .record_msg_out(record_msg_out),
            permute,
        }
    }

    /// The canonical form of `s`: forgets the last message delivered, drops
    /// answers that their proposer ignores for ever, and (if `permute`)
    /// sorts the acceptors.
    fn canonical(&self, s: &PaxosState) -> PaxosState {
        // `order[new] = old`.
        let mut order: Vec<usize> = (0..ACCEPTORS).collect();
        if self.permute {
            order.sort_by(|a, b| s.actor_states[*a].cmp(&s.actor_states[*b]));
        }
        let mut new_index = [0usize; ACCEPTORS];
        for (new, old) in order.iter().enumerate() {
            new_index[*old] = new;
        }
        let map_id = |id: Id| {
            let i = usize::from(id);
            Id::from(if i < ACCEPTORS { new_index[i] } else { i })
        };
        let map_bits = |bits: u8| {
            (0..ACCEPTORS)
                .filter(|a| bits & (1 << a) != 0)
                .fold(0u8, |acc, a| acc | 1 << new_index[a])
        };
        let old = |i: usize| if i < ACCEPTORS { order[i] } else { i };
        let n = s.actor_states.len();

        let mut network = HashableHashSet::new();
        for env in s.network.iter_all() {
            let (src, dst) = (usize::from(env.src), usize::from(env.dst));
            if let (Msg::Reply(req, resp), NodeState::Proposer(p)) =
                (env.msg, &*s.actor_states[dst])
            {
                let Node::Proposer(own, rounds) = self.actors.actors[dst] else {
                    unreachable!("answers go to proposers")
                };
                if proposer_step(own, rounds, p, src, *req, *resp, &mut Out::new()).is_none() {
                    continue;
                }
            }
            network.insert(Envelope {
                src: map_id(env.src),
                dst: map_id(env.dst),
                msg: *env.msg,
            });
        }

        let actor_states = (0..n)
            .map(|i| match &*s.actor_states[old(i)] {
                NodeState::Proposer(p) if self.permute => {
                    let mut p = p.clone();
                    p.phase = match p.phase {
                        Phase::Preparing { promises, adopted } => Phase::Preparing {
                            promises: map_bits(promises),
                            adopted,
                        },
                        Phase::Proposing { value, accepts } => Phase::Proposing {
                            value,
                            accepts: map_bits(accepts),
                        },
                        decided => decided,
                    };
                    Arc::new(NodeState::Proposer(p))
                }
                _ => Arc::clone(&s.actor_states[old(i)]),
            })
            .collect();
        let mut history = s.history.clone();
        if self.permute {
            history.accepted = s
                .history
                .accepted
                .iter()
                .map(|(r, v, id)| (*r, *v, map_id(*id)))
                .collect();
        }
        PaxosState {
            actor_states,
            network: Network::UnorderedDuplicating(network, None),
            timers_set: (0..n).map(|i| s.timers_set[old(i)].clone()).collect(),
            crashed: (0..n).map(|i| s.crashed[old(i)]).collect(),
            history,
        }
    }

    fn max_rounds(&self) -> u8 {
        self.actors
            .actors
            .iter()
            .filter_map(|n| match n {
                Node::Proposer(_, rounds) => Some(*rounds),
                Node::Acceptor(_) => None,
            })
            .max()
            .unwrap_or(0)
    }
}

impl Model for Paxos {
    type State = PaxosState;
    type Action = PaxosAction;

    fn init_states(&self) -> Vec<PaxosState> {
        let states = self.actors.init_states();
        states.iter().map(|s| self.canonical(s)).collect()
    }

    fn actions(&self, state: &PaxosState, actions: &mut Vec<PaxosAction>) {
        self.actors.actions(state, actions);
    }

    fn next_state(&self, last: &PaxosState, action: PaxosAction) -> Option<PaxosState> {
        Some(self.canonical(&self.actors.next_state(last, action)?))
    }

    fn format_action(&self, action: &PaxosAction) -> String {
        self.actors.format_action(action)
    }

    fn properties(&self) -> Vec<Property<Paxos>> {
        let mut properties: Vec<Property<Paxos>> = vec![
            Property::always(ONE_LAYOUT, |_, s| outcomes(s).len() <= 1),
            Property::always(PROPOSED, |_, s: &PaxosState| {
                outcomes(s)
                    .iter()
                    .all(|v| *v != Value::UNKNOWN && s.history.proposed.iter().any(|(_, p)| p == v))
            }),
            Property::always(DURABLE, |_, s| acceptors(s).all(|a| a.memory == a.durable)),
            Property::always(NO_ERROR, |_, s: &PaxosState| !s.history.error),
            Property::sometimes(COMMITTED, |_, s| {
                acceptors(s).any(|a| a.durable.committed.is_some())
            }),
            Property::sometimes(ADOPTED, |m, s| {
                proposers(s)
                    .zip(&m.actors.actors[ACCEPTORS..])
                    .any(|(p, node)| {
                        matches!((p.phase, node),
                        (Phase::Proposing { value, .. }, Node::Proposer(own, _)) if value != *own)
                    })
            }),
            Property::sometimes(BOTH_DECIDE, |_, s| {
                proposers(s).all(|p| decided(p).is_some())
            }),
        ];
        if self.max_rounds() > 1 {
            properties.push(Property::sometimes(RETRIED, |_, s| {
                proposers(s).any(|p| p.round > 1 && decided(p).is_some())
            }));
        }
        properties
    }
}

fn acceptors(state: &PaxosState) -> impl Iterator<Item = &AcceptorNode> {
    state.actor_states.iter().filter_map(|s| match &**s {
        NodeState::Acceptor(a) => Some(a),
        NodeState::Proposer(_) => None,
    })
}

fn proposers(state: &PaxosState) -> impl Iterator<Item = &ProposerNode> {
    state.actor_states.iter().filter_map(|s| match &**s {
        NodeState::Proposer(p) => Some(p),
        NodeState::Acceptor(_) => None,
    })
}

fn decided(p: &ProposerNode) -> Option<Value> {
    match p.phase {
        Phase::Decided(v) => Some(v),
        _ => None,
    }
}

/// Every layout chosen, committed (live or persisted) or decided.
fn outcomes(state: &PaxosState) -> BTreeSet<Value> {
    let mut out = state.history.chosen();
    for a in acceptors(state) {
        out.extend(a.memory.committed);
        out.extend(a.durable.committed);
    }
    out.extend(proposers(state).filter_map(decided));
    out
}

const ONE_LAYOUT: &str = "at most one layout is chosen, committed or decided for epoch 1";
const PROPOSED: &str = "every committed or decided layout was proposed by someone";
const DURABLE: &str = "an acceptor's live state is its persisted state";
const NO_ERROR: &str = "no acceptor answers an error";
const COMMITTED: &str = "a layout is committed";
const ADOPTED: &str = "a proposer proposes a layout adopted from a promise";
const BOTH_DECIDE: &str = "both proposers decide";
const RETRIED: &str = "a proposer decides in a later round";

/// One line per step of a path, e.g. `P3 -> A0  Prepare(1.3)  => Promise(..)`:
/// a request delivered to an acceptor shows the answer it sent.
fn trace(rule: Rule, path: Path<PaxosState, PaxosAction>) -> String {
    let who = |id: Id| {
        let i = usize::from(id);
        if i < ACCEPTORS {
            format!("A{i}")
        } else {
            format!("P{i}")
        }
    };
    let rank = |r: Rank| format!("{}.{}", r.number, r.proposer);
    let req = |r: Req| match r {
        Req::Prepare(r) => format!("Prepare({})", rank(r)),
        Req::Propose(r, v) => format!("Propose({}, L{})", rank(r), v.0),
        Req::Commit(v) => format!("Commit(L{})", v.0),
    };
    let resp = |r: Resp| match r {
        Resp::Promise(None) => "Promise(nothing accepted)".to_string(),
        Resp::Promise(Some((r, v))) => format!("Promise(accepted {} L{})", rank(r), v.0),
        Resp::Rejected(r) => format!("Rejected(promised {})", rank(r)),
        Resp::AlreadyCommitted(v) => format!("AlreadyCommitted(L{})", v.0),
        other => format!("{other:?}"),
    };
    let mut lines = Vec::new();
    for (state, action) in path.into_vec() {
        let Some(action) = action else { break };
        lines.push(match action {
            ActorModelAction::Deliver { src, dst, msg } => match msg {
                Msg::Req(r) => {
                    let answer = match &*state.actor_states[usize::from(dst)] {
                        NodeState::Acceptor(a) => resp(rule.serve(&a.memory, r).2),
                        NodeState::Proposer(_) => "?".to_string(),
                    };
                    format!("{} -> {}  {}  => {}", who(src), who(dst), req(r), answer)
                }
                Msg::Reply(q, r) => {
                    format!("{} -> {}  {}  (to {})", who(src), who(dst), resp(r), req(q))
                }
            },
            ActorModelAction::Timeout(id, Timer::Restart) => {
                format!("{} crashes and restarts from its persisted state", who(id))
            }
            ActorModelAction::Timeout(id, Timer::Retry) => {
                format!("{} gives up its round and starts the next one", who(id))
            }
            other => format!("{other:?}"),
        });
    }
    lines.join("\n")
}

/// Runs the checker over `model` (breadth first, up to `depth` steps if
/// given) and reports the run on stderr.
fn check(model: Paxos, depth: Option<usize>, label: &str) -> impl Checker<Paxos> {
    let started = Instant::now();
    let mut builder = model.checker();
    builder = match depth {
        // One thread keeps the search in strict breadth-first order, so
        // every state within `depth` steps is expanded (with two, a state
        // first met along a longer path could be cut at the bound).
        Some(depth) => builder.threads(1).target_max_depth(depth),
        None => builder.threads(2),
    };
    let checker = builder.spawn_bfs().join();
    eprintln!(
        "{label}: {} distinct states ({} generated), depth {}, {:.1?}",
        checker.unique_state_count(),
        checker.state_count(),
        checker.max_depth(),
        started.elapsed()
    );
    checker
}

fn assert_safe(checker: &impl Checker<Paxos>) {
    for name in [ONE_LAYOUT, PROPOSED, DURABLE, NO_ERROR] {
        if let Some(path) = checker.discovery(name) {
            panic!("violated: {name}\n{}", trace(Rule::Real, path));
        }
    }
    assert!(checker.is_done(), "the check did not run to its end");
    checker.assert_properties();
}

#[test]
fn paxos_layout_service_chooses_one_layout_per_epoch() {
    // One round per proposer: every reachable state, at any depth.
    let checker = check(
        Paxos::new(Rule::Real, [1; PROPOSERS], true),
        None,
        "one round each",
    );
    assert_safe(&checker);
    // Two rounds per proposer (retries): every path of up to RETRY_DEPTH
    // steps.
    let model = Paxos::new(Rule::Real, [ROUNDS; PROPOSERS], true);
    let checker = check(model, Some(RETRY_DEPTH), "two rounds each");
    assert_safe(&checker);
    assert!(checker.discovery(RETRIED).is_some());
}

#[test]
fn broken_acceptor_is_caught() {
    for rule in [
        Rule::IgnorePromisesOnPropose,
        Rule::HideAcceptedInPromise,
        Rule::PromisesNotPersisted,
    ] {
        let started = Instant::now();
        let checker = Paxos::new(rule, [1; PROPOSERS], false)
            .checker()
            .threads(2)
            .finish_when(HasDiscoveries::AnyOf([ONE_LAYOUT].into()))
            .spawn_bfs()
            .join();
        let path = checker
            .discovery(ONE_LAYOUT)
            .unwrap_or_else(|| panic!("{rule:?}: two layouts chosen for one epoch not found"));
        eprintln!(
            "{rule:?}: caught after {} states, {:.1?}; counterexample:\n{}\n",
            checker.unique_state_count(),
            started.elapsed(),
            trace(rule, path)
        );
    }
}
