//! Model check (stateright) of the sealing rule a reconfiguration's new
//! tail `T` rests on: log units, writers, a hole filler, readers, and one
//! reconfiguration (seal, then the next layout) racing them, with up to
//! two of the three log units crashing at any moment.
//!
//! # The rule under test
//!
//! A reconfiguration from epoch 1 to epoch 2 (see `reconfig.rs` and
//! ARCHITECTURE.md, "Reconfiguration"):
//! - seals the sequencer (which answers how far it granted, `K`) and every
//!   log unit of layout 1; every unit that stays must acknowledge, a unit
//!   being removed is sealed in the background and never waited for;
//! - `T` = one past the highest address any acknowledging unit holds
//!   ([`merge_tails`]);
//! - the next layout is [`plan`]'s (removed units leave every chain; `plan`
//!   refuses to leave a chain without a member), with `[T, max(T, K))`
//!   void and the next sequencer starting at `max(T, K)`, as
//!   `Reconfigurer::step` builds it. The model calls the real `plan`,
//!   `merge_tails`, `Layout::add_void`, `Layout::chain_of` and
//!   `Layout::is_void` to build and read layout 2.
//!
//! The rule it is an instance of: `T` covers every acknowledged write if
//! at least one member of every chain of the open segment acknowledged
//! the seal before `T` is computed from their answers, every unit serves
//! the new epoch only once sealed into it, and `[T, K)` is void. One
//! member is enough because it holds every write acknowledged on its
//! chain and, sealed, lets no more through. What a head alone holds (a
//! write in flight, a filler's junk, a call that landed late) was never
//! acknowledged; if the head's answer does not count, it may lie at or
//! above `T`, where only the void range keeps it from being read or
//! continued. Rule (e) below breaks exactly that.
//!
//! # What is modelled
//!
//! The protocol's decisions, not its I/O: every request below is one
//! atomic step against the unit's state.
//! - **Log units** u0, u1, u2: alive or crashed (stopped for good: a
//!   crashed unit answers nothing; at most [`CRASHES_MAX`]), the epoch they
//!   are sealed at, and a write-once slot per address (nothing, junk, or a
//!   writer's value). A unit serves a request of exactly its sealed epoch:
//!   older is `WrongEpoch` (the client refetches the layout), newer is
//!   `Unavailable` (the client waits); a never-sealed unit serves epoch 1.
//! - **Layouts**: layout 1 is either one chain `u0 -> u1 -> u2` or two
//!   stripes `u0 -> u1` (even addresses) and `u2` (odd ones).
//! - **Writers** w0, w1, each appending one value: take a token from the
//!   sequencer of the epoch they know (none while the sequencer is sealed
//!   and layout 2 not installed; at most [`ADDRS`] addresses in all), write
//!   it down the chain head first, and are acknowledged when the tail took
//!   it. As in `client/append.rs`: the head holding something else loses
//!   the address (a new token); a member below the head holding something
//!   else is a `ChainDiverged` error; the head holding our own value counts
//!   only if our write may have reached it. A writer of epoch 1 moves to
//!   layout 2 once it is installed (after `WrongEpoch`, or abandoning a
//!   slow call as an unknown outcome; an abandoned call may still land
//!   later, see late writes); its entry then keeps its address only if the
//!   address is not void and the new head holds the entry (the writer then
//!   continues down the new chain), else it takes a new token.
//! - **A hole filler** (`fill_once`): at a granted, non-void address
//!   whose tail answers that it holds nothing, `Fill` at the head of the
//!   layout it knows (junk if the head holds nothing, else the head's
//!   value), then that value down the chain; a member holding something
//!   else is `ChainDiverged`. It gives up on layout 1 once layout 2 is
//!   installed (and may fill again with layout 2).
//! - **Late writes**: a writer's or the filler's abandoned call, delivered
//!   at any later moment (or never) to the unit it was sent to.
//! - **Readers** read from the tail of an address's chain, with layout 1
//!   or with the installed layout 2 (a reader may hold either); a void
//!   address is junk without asking a unit. Rather than as read actions,
//!   reads are recorded after every step: each value a reader of either
//!   layout would get at each address at that moment joins the history.
//!   No read can be missed, and the state space does not multiply by the
//!   order of reads.
//! - **The reconfiguration**: starts with the set of units it removes (a
//!   subset of the crashed units, or with `suspect_live` any subset: a
//!   detector can suspect a paused unit, an operator can remove a live
//!   one) and seals the sequencer (`K` = its next address); then seals
//!   units one at a time, in any order (each answers its highest address);
//!   then installs layout 2 once the units the rule requires answered. A
//!   `plan` refusal at that point leaves the sealed units behind (as the
//!   real `Reconfigurer` does). Seals still in flight may land after the
//!   install.
//!
//! # Properties
//!
//! - always: every read of an acknowledged write's address returns that
//!   write's value (never junk, never another value), whenever the read
//!   happened;
//! - always: reads of one address never return two different values;
//! - always: once layout 2 is installed, every acknowledged write whose
//!   address was granted in epoch 1 lies below `T`;
//! - always: no client met a chain member holding something its head does
//!   not (`ChainDiverged`);
//! - sometimes (so the check is not vacuous): a write acknowledged in
//!   epoch 1 and then a reconfiguration installed; a write granted in
//!   epoch 1 continued and acknowledged in epoch 2; a reader of layout 2
//!   read a write acknowledged in epoch 1; a junk fill reached every
//!   member of a chain; on one chain, a reconfiguration removing 2 crashed
//!   units installed.
//!
//! # Weakened rules
//!
//! [`Rule`] lists the rules the check must reject, each against the layout
//! where it breaks (see `weakened_sealing_rules_are_caught`). Two of them,
//! `T` from the first unit that answers and a seal waiting for a majority,
//! are safe on one chain: every member of a chain holds every
//! acknowledged write of that chain, and a sealed member lets no more of
//! them through. They break on two stripes, where one unit says nothing
//! about the other chain (`one_sealed_member_per_chain_is_enough` and
//! `weakened_sealing_rules_are_caught`).
//!
//! # Bounds and state-space reduction
//!
//! Three addresses in all ([`ADDRS`]), two writers, one filler, one
//! reconfiguration. States are canonical: a crashed unit's contents are
//! forgotten (it never answers again), late writes that can no longer land
//! are dropped, seal answers are dropped once `T` is computed, and the two
//! writers are interchangeable (their values are renamed). Breadth first,
//! every reachable state. Removing any units (`suspect_live`) includes
//! every removal of crashed units, so it is the stronger check; the
//! weaker one runs too, because it is the detector's case and is cheap.
//! Measured (release, 2 threads, 2 cores shared with other work, load
//! about 5): the shipped rule on one chain 353,436 states (1.0 s) with
//! crashed units removed and 1,799,822 (8.4 s) with any units removed, on
//! two stripes 134,149 (0.4 s); rules (a) and (b) on one chain 838,626
//! (2.5 s) and 553,492 (1.7 s); each weakened rule's counterexample in
//! under 0.1 s.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use stateright::{Checker, HasDiscoveries, Model, Path, Property};

use crate::layout::{Grants, Layout, NodeAddr, Segment, Stripe};
use crate::reconfig::{merge_tails, plan, Change};
use crate::types::ClusterId;
use crate::wire::logunit::Tails;

/// Log units u0, u1, u2.
const UNITS: usize = 3;
/// Addresses the sequencers may grant, in all epochs.
const ADDRS: usize = 3;
/// Writers, each appending one value.
const WRITERS: usize = 2;
/// Units that may crash.
const CRASHES_MAX: usize = 2;
/// Index of the filler's late write in [`State::late`].
const FILLER: usize = WRITERS;

/// Layout 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Shape {
    /// One chain `u0 -> u1 -> u2`.
    OneChain,
    /// Two stripes: `u0 -> u1` (even addresses) and `u2` (odd ones).
    TwoStripes,
}

impl Shape {
    fn stripes(self) -> &'static [&'static [u8]] {
        match self {
            Shape::OneChain => &[&[0, 1, 2]],
            Shape::TwoStripes => &[&[0, 1], &[2]],
        }
    }
}

/// The sealing rule and its weakened variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rule {
    /// The shipped rule: every unit that stays acknowledges the seal; `T`
    /// from all of them; `plan` keeps a member in every chain.
    Shipped,
    /// (a) Layout 2 is installed as soon as one unit that stays answered
    /// the seal, `T` from the answers so far (the others' seals are still
    /// in flight).
    FirstAnswer,
    /// (b) The seal waits for a majority of the layout's units (2 of 3).
    Majority,
    /// (c) `plan` lets a removal leave a chain without a member.
    EmptyChain,
    /// (d) A sealed unit still takes writes (and fills) of older epochs.
    SealedTakesOld,
    /// (e) `T` from the tail of every chain alone (the acknowledged
    /// entries, not what a head alone holds), and the next sequencer
    /// starting at `T` (no void range).
    TailsOnlyNoVoid,
}

/// What a slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Val {
    Junk,
    /// Writer `w`'s value.
    Data(u8),
}

impl Val {
    /// The bit of this value in [`State::seen`].
    fn bit(self) -> u8 {
        match self {
            Val::Junk => 1,
            Val::Data(w) => 2 << w,
        }
    }

    fn swapped(self) -> Val {
        match self {
            Val::Junk => Val::Junk,
            Val::Data(w) => Val::Data(1 - w),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Unit {
    alive: bool,
    /// Sealed epoch (1: the bootstrap epoch, never sealed).
    epoch: u8,
    slots: [Option<Val>; ADDRS],
}

impl Unit {
    /// What it answers a seal: its highest address, if any.
    fn highest(&self) -> Option<u8> {
        (0..ADDRS as u8)
            .rev()
            .find(|&a| self.slots[a as usize].is_some())
    }
}

/// A chain, head first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Chain {
    len: u8,
    members: [u8; UNITS],
}

impl Chain {
    fn of(members: &[u8]) -> Chain {
        let mut chain = Chain {
            len: members.len() as u8,
            members: [0; UNITS],
        };
        chain.members[..members.len()].copy_from_slice(members);
        chain
    }

    fn members(&self) -> &[u8] {
        &self.members[..usize::from(self.len)]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Writer {
    /// Needs a token.
    Idle,
    /// Writing `addr` (granted in epoch `granted`) down the chain of layout
    /// `epoch`; `member` is the next one to write.
    Writing {
        addr: u8,
        granted: u8,
        epoch: u8,
        member: u8,
        maybe_written: bool,
    },
    /// Moved to layout 2 with an entry the old head may hold: keeps `addr`
    /// if it is not void and the new head holds the entry.
    Checking { addr: u8, granted: u8 },
    /// Acknowledged at `addr` (granted in epoch `granted`) in epoch `epoch`.
    Acked { addr: u8, granted: u8, epoch: u8 },
    /// Failed for good (an empty chain, or `ChainDiverged`).
    Gone,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Filler {
    Idle,
    /// Copying `val` (decided at the head) down the chain of layout
    /// `epoch`; `member` is the next one.
    Copying {
        addr: u8,
        epoch: u8,
        val: Val,
        member: u8,
    },
}

/// An abandoned call that may still reach its unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Late {
    unit: u8,
    epoch: u8,
    addr: u8,
    val: Val,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Phase {
    /// Epoch 1, nothing sealed.
    Running,
    /// The sequencer is sealed; units are being sealed.
    Sealing,
    /// Layout 2 is in force.
    Installed,
    /// `plan` refused the change after the seal: sealed units stay sealed.
    Refused,
}

/// Layout 2, compactly: each address's chain and whether it is void.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Next {
    chains: [Chain; ADDRS],
    void: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct State {
    units: [Unit; UNITS],
    writers: [Writer; WRITERS],
    filler: Filler,
    /// Late writes of the writers, then the filler's.
    late: [Option<Late>; WRITERS + 1],
    /// The sequencer's next address.
    next: u8,
    phase: Phase,
    /// Units the reconfiguration removes (bit per unit).
    removed: u8,
    /// Seal answers of units that stay: `Some(highest address held)`.
    answers: [Option<Option<u8>>; UNITS],
    /// The sealed sequencer's next address.
    k: u8,
    /// The new tail.
    t: u8,
    /// Layout 2, once installed.
    layout: Option<Next>,
    /// Per address, every value a reader could have read so far (bits of
    /// [`Val::bit`]).
    seen: [u8; ADDRS],
    diverged: bool,
}

impl State {
    fn epoch(&self) -> u8 {
        if self.phase == Phase::Installed {
            2
        } else {
            1
        }
    }

    fn crashed(&self) -> usize {
        self.units.iter().filter(|u| !u.alive).count()
    }

    fn void(&self, epoch: u8, addr: u8) -> bool {
        epoch == 2 && self.layout.is_some_and(|l| l.void & (1 << addr) != 0)
    }

    /// The two writers exchanged (values renamed).
    fn swapped(&self) -> State {
        let mut s = self.clone();
        s.writers.swap(0, 1);
        s.late.swap(0, 1);
        for late in s.late.iter_mut().flatten() {
            late.val = late.val.swapped();
        }
        for unit in &mut s.units {
            for slot in unit.slots.iter_mut().flatten() {
                *slot = slot.swapped();
            }
        }
        if let Filler::Copying { val, .. } = &mut s.filler {
            *val = val.swapped();
        }
        for bits in &mut s.seen {
            *bits = (*bits & 1) | ((*bits & 2) << 1) | ((*bits & 4) >> 1);
        }
        s
    }
}

/// How a writer of epoch 1 leaves it for layout 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Leave {
    /// Its call was answered `WrongEpoch`.
    Refused,
    /// It abandoned a slow call (unknown outcome); the call is lost.
    Abandoned,
    /// It abandoned a slow call, which stays in flight (a late write).
    AbandonedLate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Action {
    Crash(u8),
    Token(u8),
    Write(u8),
    Leave(u8, Leave),
    Check(u8),
    FillStart(u8),
    FillStep,
    /// The filler gives up on layout 1 (its call abandoned; late or not).
    FillLeave(bool),
    Land(u8),
    /// Start the reconfiguration, removing these units.
    Reconfigure(u8),
    Seal(u8),
    Install,
}

/// What a unit does with a write or fill.
enum Put {
    /// Crashed, or not serving that epoch.
    NotServed,
    Stored,
    Held(Val),
}

struct ReconfigModel {
    rule: Rule,
    shape: Shape,
    suspect_live: bool,
}

fn node(u: u8) -> NodeAddr {
    NodeAddr {
        node_id: format!("u{u}"),
        addr: format!("127.0.0.1:{}", 7000 + u16::from(u)),
    }
}

/// Layout 1 of `shape`; every node also hosts a sequencer and a layout
/// server, as in a default cluster.
fn layout_one(shape: Shape) -> Layout {
    Layout {
        cluster_id: ClusterId(7),
        epoch: 1,
        layout_servers: (0..UNITS as u8).map(node).collect(),
        sequencers: (0..UNITS as u8).map(node).collect(),
        segments: vec![Segment {
            start: 0,
            end: None,
            stripes: shape
                .stripes()
                .iter()
                .map(|chain| Stripe {
                    chain: chain.iter().copied().map(node).collect(),
                })
                .collect(),
        }],
        grants: Grants::from(0),
        voids: vec![],
    }
}

impl ReconfigModel {
    fn new(rule: Rule, shape: Shape, suspect_live: bool) -> ReconfigModel {
        ReconfigModel {
            rule,
            shape,
            suspect_live,
        }
    }

    fn chain(&self, s: &State, epoch: u8, addr: u8) -> Chain {
        match (epoch, s.layout) {
            (2, Some(next)) => next.chains[usize::from(addr)],
            _ => {
                let stripes = self.shape.stripes();
                Chain::of(stripes[usize::from(addr) % stripes.len()])
            }
        }
    }

    fn serves_write(&self, unit: &Unit, epoch: u8) -> bool {
        unit.alive
            && (unit.epoch == epoch || (self.rule == Rule::SealedTakesOld && unit.epoch > epoch))
    }

    fn put(&self, unit: &mut Unit, epoch: u8, addr: u8, val: Val) -> Put {
        if !self.serves_write(unit, epoch) {
            return Put::NotServed;
        }
        match unit.slots[usize::from(addr)] {
            None => {
                unit.slots[usize::from(addr)] = Some(val);
                Put::Stored
            }
            Some(held) => Put::Held(held),
        }
    }

    /// Layout 2 for removing `removed` with tail `t` and the next
    /// sequencer at `start`, built by the real `plan` (or by hand for the
    /// rule that lets a chain go empty, which `plan` refuses); `None` if
    /// `plan` refuses.
    fn next_layout(&self, removed: u8, t: u8, start: u8) -> Option<Next> {
        type Memo = HashMap<(Shape, bool, u8, u8, u8), Option<Next>>;
        static MEMO: OnceLock<Mutex<Memo>> = OnceLock::new();
        let empty_ok = self.rule == Rule::EmptyChain;
        let key = (self.shape, empty_ok, removed, t, start);
        let memo = MEMO.get_or_init(Default::default);
        if let Some(next) = memo.lock().unwrap().get(&key) {
            return *next;
        }
        let gone = |u: u8| removed & (1 << u) != 0;
        let next = if empty_ok {
            let stripes = self.shape.stripes();
            let mut chains = [Chain::of(&[]); ADDRS];
            for (addr, chain) in chains.iter_mut().enumerate() {
                let members: Vec<u8> = stripes[addr % stripes.len()]
                    .iter()
                    .copied()
                    .filter(|&u| !gone(u))
                    .collect();
                *chain = Chain::of(&members);
            }
            let void = (0..ADDRS as u8)
                .filter(|&a| t <= a && a < start)
                .fold(0, |bits, a| bits | 1 << a);
            Some(Next { chains, void })
        } else {
            let one = layout_one(self.shape);
            let names: Vec<String> = (0..UNITS as u8)
                .filter(|&u| gone(u))
                .map(|u| format!("u{u}"))
                .collect();
            let change = if names.is_empty() {
                Change::Seal
            } else {
                Change::RemoveNodes(names)
            };
            plan(&one, &change, u64::from(t)).ok().map(|mut two| {
                // As `Reconfigurer::step` does.
                two.add_void(u64::from(t), u64::from(start));
                two.grants = Grants::from(u64::from(start));
                one.validate_successor(&two).expect("a valid layout 2");
                let mut chains = [Chain::of(&[]); ADDRS];
                let mut void = 0;
                for (addr, chain) in chains.iter_mut().enumerate() {
                    let members: Vec<u8> = two
                        .chain_of(addr as u64)
                        .expect("every address has a chain")
                        .iter()
                        .map(|n| n.node_id[1..].parse().unwrap())
                        .collect();
                    *chain = Chain::of(&members);
                    if two.is_void(addr as u64) {
                        void |= 1 << addr;
                    }
                }
                Next { chains, void }
            })
        };
        memo.lock().unwrap().insert(key, next);
        next
    }

    /// Whether the rule lets the reconfiguration install layout 2 with
    /// these seal answers, and from which units `T` is computed.
    fn install_from(&self, s: &State) -> Option<Vec<u8>> {
        let stays = |u: u8| s.removed & (1 << u) == 0;
        let answered: Vec<u8> = (0..UNITS as u8)
            .filter(|&u| stays(u) && s.answers[usize::from(u)].is_some())
            .collect();
        let all = (0..UNITS as u8).filter(|&u| stays(u)).count();
        match self.rule {
            Rule::Shipped | Rule::EmptyChain | Rule::SealedTakesOld => {
                (answered.len() == all).then_some(answered)
            }
            Rule::FirstAnswer => (!answered.is_empty()).then_some(answered),
            Rule::Majority => (answered.len() > UNITS / 2).then_some(answered),
            Rule::TailsOnlyNoVoid => {
                if answered.len() != all {
                    return None;
                }
                // The last member of each chain that stays.
                let tails = self
                    .shape
                    .stripes()
                    .iter()
                    .filter_map(|chain| chain.iter().rev().copied().find(|&u| stays(u)))
                    .collect();
                Some(tails)
            }
        }
    }

    /// The canonical form of `s` (see the module docs): the smaller of
    /// [`Self::normal`] and its writers exchanged.
    fn canonical(&self, s: State) -> State {
        let s = self.normal(s);
        let swapped = s.swapped();
        s.min(swapped)
    }

    /// `s` without what can no longer matter: a crashed unit's contents,
    /// late writes that cannot land, seal answers once `T` is computed.
    fn normal(&self, mut s: State) -> State {
        for unit in &mut s.units {
            if !unit.alive {
                unit.epoch = 0;
                unit.slots = [None; ADDRS];
            }
        }
        for i in 0..s.late.len() {
            if let Some(late) = s.late[i] {
                let unit = &s.units[usize::from(late.unit)];
                if !self.serves_write(unit, late.epoch)
                    || unit.slots[usize::from(late.addr)].is_some()
                {
                    s.late[i] = None;
                }
            }
        }
        if s.phase != Phase::Sealing {
            s.answers = [None; UNITS];
        }
        s
    }

    fn step(&self, s: &mut State, action: Action) -> Option<()> {
        let epoch = s.epoch();
        match action {
            Action::Crash(u) => {
                if !s.units[usize::from(u)].alive || s.crashed() >= CRASHES_MAX {
                    return None;
                }
                s.units[usize::from(u)].alive = false;
            }
            Action::Token(w) => {
                if s.writers[usize::from(w)] != Writer::Idle
                    || !matches!(s.phase, Phase::Running | Phase::Installed)
                    || usize::from(s.next) >= ADDRS
                {
                    return None;
                }
                let addr = s.next;
                s.next += 1;
                s.writers[usize::from(w)] = if self.chain(s, epoch, addr).len == 0 {
                    Writer::Gone
                } else {
                    Writer::Writing {
                        addr,
                        granted: epoch,
                        epoch,
                        member: 0,
                        maybe_written: false,
                    }
                };
            }
            Action::Write(w) => {
                let Writer::Writing {
                    addr,
                    granted,
                    epoch,
                    member,
                    maybe_written,
                } = s.writers[usize::from(w)]
                else {
                    return None;
                };
                let chain = self.chain(s, epoch, addr);
                let unit = chain.members()[usize::from(member)];
                let put = self.put(&mut s.units[usize::from(unit)], epoch, addr, Val::Data(w));
                let advance = match put {
                    Put::NotServed => return None,
                    Put::Stored => true,
                    Put::Held(v) => v == Val::Data(w) && (maybe_written || member > 0),
                };
                s.writers[usize::from(w)] = if advance {
                    if member + 1 == chain.len {
                        Writer::Acked {
                            addr,
                            granted,
                            epoch,
                        }
                    } else {
                        Writer::Writing {
                            addr,
                            granted,
                            epoch,
                            member: member + 1,
                            maybe_written: true,
                        }
                    }
                } else if member == 0 {
                    // Someone else owns the address: a new token.
                    Writer::Idle
                } else {
                    s.diverged = true;
                    Writer::Gone
                };
            }
            Action::Leave(w, how) => {
                let Writer::Writing {
                    addr,
                    granted,
                    epoch: known,
                    member,
                    maybe_written,
                } = s.writers[usize::from(w)]
                else {
                    return None;
                };
                if known >= epoch {
                    return None;
                }
                let unit = self.chain(s, known, addr).members()[usize::from(member)];
                let target = s.units[usize::from(unit)];
                let maybe_written = match how {
                    Leave::Refused => {
                        if !target.alive
                            || target.epoch <= known
                            || self.serves_write(&target, known)
                        {
                            return None;
                        }
                        maybe_written
                    }
                    Leave::Abandoned => maybe_written || member == 0,
                    Leave::AbandonedLate => {
                        if !self.serves_write(&target, known)
                            || target.slots[usize::from(addr)].is_some()
                        {
                            return None;
                        }
                        s.late[usize::from(w)] = Some(Late {
                            unit,
                            epoch: known,
                            addr,
                            val: Val::Data(w),
                        });
                        maybe_written || member == 0
                    }
                };
                s.writers[usize::from(w)] = if maybe_written {
                    Writer::Checking { addr, granted }
                } else {
                    Writer::Idle
                };
            }
            Action::Check(w) => {
                let Writer::Checking { addr, granted } = s.writers[usize::from(w)] else {
                    return None;
                };
                let chain = self.chain(s, epoch, addr);
                s.writers[usize::from(w)] = if s.void(epoch, addr) {
                    Writer::Idle
                } else if chain.len == 0 {
                    Writer::Gone
                } else {
                    let head = s.units[usize::from(chain.members()[0])];
                    if !head.alive || head.epoch != epoch {
                        return None;
                    }
                    if head.slots[usize::from(addr)] == Some(Val::Data(w)) {
                        Writer::Writing {
                            addr,
                            granted,
                            epoch,
                            member: 0,
                            maybe_written: true,
                        }
                    } else {
                        Writer::Idle
                    }
                };
            }
            Action::FillStart(addr) => {
                if s.filler != Filler::Idle || addr >= s.next || s.void(epoch, addr) {
                    return None;
                }
                // A reader found the address unwritten at the tail.
                let chain = self.chain(s, epoch, addr);
                let tail = s.units[usize::from(*chain.members().last()?)];
                if !tail.alive || tail.epoch != epoch || tail.slots[usize::from(addr)].is_some() {
                    return None;
                }
                let head = chain.members()[0];
                let val = match self.put(&mut s.units[usize::from(head)], epoch, addr, Val::Junk) {
                    Put::NotServed => return None,
                    Put::Stored => Val::Junk,
                    Put::Held(v) => v,
                };
                s.filler = Filler::Copying {
                    addr,
                    epoch,
                    val,
                    member: 1,
                };
                self.fill_done(s, chain);
            }
            Action::FillStep => {
                let Filler::Copying {
                    addr,
                    epoch,
                    val,
                    member,
                } = s.filler
                else {
                    return None;
                };
                let chain = self.chain(s, epoch, addr);
                let unit = chain.members()[usize::from(member)];
                match self.put(&mut s.units[usize::from(unit)], epoch, addr, val) {
                    Put::NotServed => return None,
                    Put::Held(v) if v != val => {
                        s.diverged = true;
                        s.filler = Filler::Idle;
                    }
                    Put::Stored | Put::Held(_) => {
                        s.filler = Filler::Copying {
                            addr,
                            epoch,
                            val,
                            member: member + 1,
                        };
                        self.fill_done(s, chain);
                    }
                }
            }
            Action::FillLeave(late) => {
                let Filler::Copying {
                    addr,
                    epoch: known,
                    val,
                    member,
                } = s.filler
                else {
                    return None;
                };
                if known >= epoch {
                    return None;
                }
                if late {
                    let unit = self.chain(s, known, addr).members()[usize::from(member)];
                    let target = s.units[usize::from(unit)];
                    if !self.serves_write(&target, known)
                        || target.slots[usize::from(addr)].is_some()
                    {
                        return None;
                    }
                    s.late[FILLER] = Some(Late {
                        unit,
                        epoch: known,
                        addr,
                        val,
                    });
                }
                s.filler = Filler::Idle;
            }
            Action::Land(i) => {
                let late = s.late[usize::from(i)].take()?;
                let unit = &mut s.units[usize::from(late.unit)];
                if let Put::NotServed = self.put(unit, late.epoch, late.addr, late.val) {
                    return None;
                }
            }
            Action::Reconfigure(removed) => {
                if s.phase != Phase::Running {
                    return None;
                }
                let crashed = (0..UNITS as u8)
                    .filter(|&u| !s.units[usize::from(u)].alive)
                    .fold(0, |bits, u| bits | 1 << u);
                if !self.suspect_live && removed & !crashed != 0 {
                    return None;
                }
                s.phase = Phase::Sealing;
                s.removed = removed;
                s.k = s.next;
            }
            Action::Seal(u) => {
                if !matches!(s.phase, Phase::Sealing | Phase::Installed | Phase::Refused) {
                    return None;
                }
                let unit = &mut s.units[usize::from(u)];
                if !unit.alive || unit.epoch != 1 {
                    return None;
                }
                unit.epoch = 2;
                let highest = unit.highest();
                if s.phase == Phase::Sealing && s.removed & (1 << u) == 0 {
                    s.answers[usize::from(u)] = Some(highest);
                }
            }
            Action::Install => {
                if s.phase != Phase::Sealing {
                    return None;
                }
                let from = self.install_from(s)?;
                let tails: Vec<Tails> = from
                    .iter()
                    .map(|&u| Tails {
                        global: s.answers[usize::from(u)].expect("an answer").map(u64::from),
                        streams: vec![],
                        trim_mark: 0,
                    })
                    .collect();
                let t = merge_tails(&tails).0 as u8;
                let start = if self.rule == Rule::TailsOnlyNoVoid {
                    t
                } else {
                    t.max(s.k)
                };
                match self.next_layout(s.removed, t, start) {
                    Some(next) => {
                        s.phase = Phase::Installed;
                        s.layout = Some(next);
                        s.t = t;
                        s.next = start;
                    }
                    None => s.phase = Phase::Refused,
                }
            }
        }
        Some(())
    }

    /// What a reader holding layout `epoch` reads at `addr` now, if it
    /// gets a value (a void address is junk without asking a unit).
    fn view(&self, s: &State, epoch: u8, addr: u8) -> Option<Val> {
        if s.void(epoch, addr) {
            return Some(Val::Junk);
        }
        let chain = self.chain(s, epoch, addr);
        let tail = s.units[usize::from(*chain.members().last()?)];
        if !tail.alive || tail.epoch != epoch {
            return None;
        }
        tail.slots[usize::from(addr)]
    }

    /// Records what readers could read now, with either layout.
    fn observe(&self, s: &mut State) {
        for addr in 0..ADDRS as u8 {
            for epoch in 1..=s.epoch() {
                if let Some(val) = self.view(s, epoch, addr) {
                    s.seen[usize::from(addr)] |= val.bit();
                }
            }
        }
    }

    /// Ends the filler's copy once the chain's tail has the value.
    fn fill_done(&self, s: &mut State, chain: Chain) {
        if let Filler::Copying { member, .. } = s.filler {
            if member == chain.len {
                s.filler = Filler::Idle;
            }
        }
    }

    /// One line for a step: who did what, and what came of it.
    fn describe(&self, before: &State, action: Action, after: Option<&State>) -> String {
        let what = |v: Option<Val>| match v {
            None => "nothing".to_string(),
            Some(Val::Junk) => "junk".to_string(),
            Some(Val::Data(w)) => format!("w{w}'s value"),
        };
        let line = match action {
            Action::Crash(u) => format!("u{u} crashes"),
            Action::Token(w) => format!(
                "w{w} takes a token in epoch {}: address {}",
                before.epoch(),
                before.next
            ),
            Action::Write(w) => match before.writers[usize::from(w)] {
                Writer::Writing {
                    addr,
                    epoch,
                    member,
                    ..
                } => {
                    let unit = self.chain(before, epoch, addr).members()[usize::from(member)];
                    format!(
                        "w{w} writes address {addr} on u{unit} (epoch {epoch}; it held {})",
                        what(before.units[usize::from(unit)].slots[usize::from(addr)])
                    )
                }
                other => format!("w{w} writes ({other:?})"),
            },
            Action::Leave(w, how) => format!("w{w} moves to layout 2 ({how:?})"),
            Action::Check(w) => format!("w{w} asks whether the new head holds its entry"),
            Action::FillStart(addr) => format!(
                "the filler fills address {addr} at the head (epoch {}; the head held {})",
                before.epoch(),
                what(
                    self.chain(before, before.epoch(), addr)
                        .members()
                        .first()
                        .and_then(|&h| before.units[usize::from(h)].slots[usize::from(addr)])
                )
            ),
            Action::FillStep => format!("the filler copies down the chain ({:?})", before.filler),
            Action::FillLeave(late) => {
                format!("the filler gives up on layout 1 (its call still in flight: {late})")
            }
            Action::Land(i) => format!("a late write lands: {:?}", before.late[usize::from(i)]),
            Action::Reconfigure(removed) => format!(
                "the reconfiguration starts, removing {{{}}}, and seals the sequencer (K = {})",
                (0..UNITS)
                    .filter(|u| removed & (1 << u) != 0)
                    .map(|u| format!("u{u}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                before.next
            ),
            Action::Seal(u) => format!(
                "u{u} is sealed into epoch 2 (its highest address: {:?})",
                before.units[usize::from(u)].highest()
            ),
            Action::Install => match after {
                Some(a) if a.phase == Phase::Installed => format!(
                    "layout 2 is installed: T = {}, next token {}, chain of each address {:?}, void addresses (bits) {:03b}",
                    a.t,
                    a.next,
                    a.layout
                        .map(|l| l.chains.map(|c| c.members().to_vec()))
                        .unwrap_or_default(),
                    a.layout.map_or(0, |l| l.void)
                ),
                _ => "plan refuses the change".to_string(),
            },
        };
        line
    }

    /// A path as one line per step. The path's states are canonical, so
    /// its writers may swap names from one step to the next; the trace
    /// replays the steps on states that keep the writers' names.
    fn trace(&self, path: Path<State, Action>) -> String {
        let rename = |action: Action| match action {
            Action::Token(w) => Action::Token(1 - w),
            Action::Write(w) => Action::Write(1 - w),
            Action::Leave(w, how) => Action::Leave(1 - w, how),
            Action::Check(w) => Action::Check(1 - w),
            Action::Land(i) if usize::from(i) < WRITERS => Action::Land(1 - i),
            other => other,
        };
        let mut real = self.init_states().remove(0);
        let mut lines = Vec::new();
        for (i, (canonical, action)) in path.into_vec().into_iter().enumerate() {
            let Some(action) = action else { break };
            let action = if canonical == real {
                action
            } else {
                assert_eq!(canonical, real.swapped(), "the replay left the path");
                rename(action)
            };
            let mut after = real.clone();
            self.step(&mut after, action).expect("a step of the path");
            self.observe(&mut after);
            let after = self.normal(after);
            lines.push(format!(
                "{:2}. {}",
                i + 1,
                self.describe(&real, action, Some(&after))
            ));
            real = after;
        }
        let values = |bits: u8| {
            [(1, "junk"), (2, "w0's value"), (4, "w1's value")]
                .into_iter()
                .filter(|(bit, _)| bits & bit != 0)
                .map(|(_, name)| name)
                .collect::<Vec<_>>()
                .join(" and ")
        };
        for (w, writer) in real.writers.iter().enumerate() {
            if let Writer::Acked { addr, epoch, .. } = writer {
                lines.push(format!(
                    "    w{w} was acknowledged at address {addr} in epoch {epoch}; \
                     readers can get {} there",
                    values(real.seen[usize::from(*addr)])
                ));
            }
        }
        if real.phase == Phase::Installed {
            lines.push(format!("    T = {}", real.t));
        }
        lines.join("\n")
    }
}

impl Model for ReconfigModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let unit = Unit {
            alive: true,
            epoch: 1,
            slots: [None; ADDRS],
        };
        vec![State {
            units: [unit; UNITS],
            writers: [Writer::Idle; WRITERS],
            filler: Filler::Idle,
            late: [None; WRITERS + 1],
            next: 0,
            phase: Phase::Running,
            removed: 0,
            answers: [None; UNITS],
            k: 0,
            t: 0,
            layout: None,
            seen: [0; ADDRS],
            diverged: false,
        }]
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        for u in 0..UNITS as u8 {
            actions.push(Action::Crash(u));
            actions.push(Action::Seal(u));
        }
        for w in 0..WRITERS as u8 {
            actions.extend([
                Action::Token(w),
                Action::Write(w),
                Action::Leave(w, Leave::Refused),
                Action::Leave(w, Leave::Abandoned),
                Action::Leave(w, Leave::AbandonedLate),
                Action::Check(w),
            ]);
        }
        for i in 0..=WRITERS as u8 {
            if s.late[usize::from(i)].is_some() {
                actions.push(Action::Land(i));
            }
        }
        for addr in 0..ADDRS as u8 {
            actions.push(Action::FillStart(addr));
        }
        actions.extend([
            Action::FillStep,
            Action::FillLeave(false),
            Action::FillLeave(true),
        ]);
        if s.phase == Phase::Running {
            actions.extend((0..1u8 << UNITS).map(Action::Reconfigure));
        }
        actions.push(Action::Install);
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        self.step(&mut s, action)?;
        self.observe(&mut s);
        Some(self.canonical(s))
    }

    fn format_action(&self, action: &Action) -> String {
        format!("{action:?}")
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut properties = vec![
            Property::always(ACKED_READ, |_, s: &State| {
                s.writers
                    .iter()
                    .enumerate()
                    .all(|(w, writer)| match *writer {
                        Writer::Acked { addr, .. } => {
                            s.seen[usize::from(addr)] & !Val::Data(w as u8).bit() == 0
                        }
                        _ => true,
                    })
            }),
            Property::always(ONE_VALUE, |_, s: &State| {
                s.seen.iter().all(|bits| bits.count_ones() <= 1)
            }),
            Property::always(BELOW_T, |_, s: &State| {
                s.phase != Phase::Installed
                    || s.writers.iter().all(|w| match *w {
                        Writer::Acked {
                            addr, granted: 1, ..
                        } => addr < s.t,
                        _ => true,
                    })
            }),
            Property::always(NO_DIVERGENCE, |_, s: &State| !s.diverged),
            Property::sometimes(ACKED_THEN_RECONFIGURED, |_, s: &State| {
                s.phase == Phase::Installed
                    && s.writers
                        .iter()
                        .any(|w| matches!(w, Writer::Acked { epoch: 1, .. }))
            }),
            Property::sometimes(CONTINUED, |_, s: &State| {
                s.writers.iter().any(|w| {
                    matches!(
                        w,
                        Writer::Acked {
                            granted: 1,
                            epoch: 2,
                            ..
                        }
                    )
                })
            }),
            Property::sometimes(READ_ACROSS, |m: &ReconfigModel, s: &State| {
                s.writers.iter().enumerate().any(|(w, writer)| {
                    matches!(*writer, Writer::Acked { addr, epoch: 1, .. }
                        if s.phase == Phase::Installed
                            && m.view(s, 2, addr) == Some(Val::Data(w as u8)))
                })
            }),
            Property::sometimes(FILLED, |m: &ReconfigModel, s: &State| {
                (0..ADDRS as u8).any(|addr| {
                    let chain = m.chain(s, s.epoch(), addr);
                    chain.len > 0
                        && chain.members().iter().all(|&u| {
                            s.units[usize::from(u)].slots[usize::from(addr)] == Some(Val::Junk)
                        })
                })
            }),
        ];
        if self.shape == Shape::OneChain {
            properties.push(Property::sometimes(TWO_CRASHED, |_, s: &State| {
                let crashed = (0..UNITS as u8)
                    .filter(|&u| s.removed & (1 << u) != 0 && !s.units[usize::from(u)].alive)
                    .count();
                s.phase == Phase::Installed && crashed == 2
            }));
        }
        properties
    }
}

const ACKED_READ: &str = "every read of an acknowledged write's address returns its value";
const ONE_VALUE: &str = "a read never returns two different values for one address";
const BELOW_T: &str = "every acknowledged write granted in epoch 1 lies below T";
const NO_DIVERGENCE: &str = "no chain member holds something its head does not";
const SAFETY: [&str; 4] = [ACKED_READ, ONE_VALUE, BELOW_T, NO_DIVERGENCE];
const ACKED_THEN_RECONFIGURED: &str = "a write is acknowledged, then layout 2 is installed";
const CONTINUED: &str = "a write granted in epoch 1 is acknowledged in epoch 2";
const READ_ACROSS: &str = "a reader of layout 2 reads a write acknowledged in epoch 1";
const FILLED: &str = "a junk fill reaches every member of a chain";
const TWO_CRASHED: &str = "layout 2 is installed, removing 2 crashed units";

/// Runs the checker over every reachable state and reports the run.
fn check(model: ReconfigModel, label: &str) -> impl Checker<ReconfigModel> {
    let started = Instant::now();
    let checker = model.checker().threads(2).spawn_bfs().join();
    eprintln!(
        "{label}: {} distinct states ({} generated), depth {}, {:.1?}",
        checker.unique_state_count(),
        checker.state_count(),
        checker.max_depth(),
        started.elapsed()
    );
    checker
}

fn assert_safe(checker: &impl Checker<ReconfigModel>, model: &ReconfigModel) {
    for name in SAFETY {
        if let Some(path) = checker.discovery(name) {
            panic!("violated: {name}\n{}", model.trace(path));
        }
    }
    assert!(checker.is_done(), "the check did not run to its end");
}

#[test]
fn shipped_sealing_rule_keeps_every_acknowledged_write() {
    for (shape, suspect_live) in [
        (Shape::OneChain, false),
        (Shape::OneChain, true),
        (Shape::TwoStripes, true),
    ] {
        let label = format!("shipped rule, {shape:?}, suspect_live {suspect_live}");
        let checker = check(
            ReconfigModel::new(Rule::Shipped, shape, suspect_live),
            &label,
        );
        assert_safe(
            &checker,
            &ReconfigModel::new(Rule::Shipped, shape, suspect_live),
        );
        checker.assert_properties();
    }
}

#[test]
fn one_sealed_member_per_chain_is_enough() {
    // On one chain, T from the first member that answers, or from a
    // majority, covers every acknowledged write: each member holds all of
    // them and a sealed member stops the rest.
    for rule in [Rule::FirstAnswer, Rule::Majority] {
        let label = format!("{rule:?}, OneChain, suspect_live false");
        let model = ReconfigModel::new(rule, Shape::OneChain, false);
        let checker = check(model, &label);
        assert_safe(&checker, &ReconfigModel::new(rule, Shape::OneChain, false));
        // A majority seal cannot finish with 2 of 3 units crashed (a cost
        // in availability, not in safety).
        let expected = [
            ACKED_THEN_RECONFIGURED,
            CONTINUED,
            READ_ACROSS,
            FILLED,
            TWO_CRASHED,
        ];
        for name in expected {
            let expected = !(rule == Rule::Majority && name == TWO_CRASHED);
            assert_eq!(
                checker.discovery(name).is_some(),
                expected,
                "{rule:?}: {name}"
            );
        }
    }
}

#[test]
fn weakened_sealing_rules_are_caught() {
    for (rule, shape, suspect_live) in [
        (Rule::FirstAnswer, Shape::TwoStripes, false),
        (Rule::Majority, Shape::TwoStripes, false),
        (Rule::EmptyChain, Shape::TwoStripes, false),
        (Rule::EmptyChain, Shape::OneChain, true),
        (Rule::SealedTakesOld, Shape::OneChain, false),
        (Rule::TailsOnlyNoVoid, Shape::OneChain, false),
    ] {
        let started = Instant::now();
        let model = ReconfigModel::new(rule, shape, suspect_live);
        let checker = ReconfigModel::new(rule, shape, suspect_live)
            .checker()
            .threads(1)
            .finish_when(HasDiscoveries::AnyOf(SAFETY.into_iter().collect()))
            .spawn_bfs()
            .join();
        let (name, path) = SAFETY
            .into_iter()
            .find_map(|name| checker.discovery(name).map(|path| (name, path)))
            .unwrap_or_else(|| panic!("{rule:?} on {shape:?}: no counterexample found"));
        eprintln!(
            "{rule:?} on {shape:?} (suspect_live {suspect_live}): \"{name}\" violated, found after {} states, {:.1?}:\n{}\n",
            checker.unique_state_count(),
            started.elapsed(),
            model.trace(path)
        );
    }
}
