//! The storage behind a log unit: the [`LogStore`] trait, shared by the
//! in-memory store and the file store, and the conformance suite both must
//! pass.
//!
//! Write-once and epoch fencing are enforced inside the store, under the
//! same lock as the write itself: a write admitted before a seal is part of
//! the tails the seal reports, and no write of an older epoch is admitted
//! after it (CORFU §3.4; the seal must cover every admitted write so that
//! the next layout starts above all of them).

use tokio::sync::watch;

use super::record::Stored;
use crate::types::{Address, Epoch};
use crate::wire::logunit::{ReadOutcome, Tails};

/// A durability ticket: the write is durable once the store's durable
/// sequence ([`LogStore::durable`]) reaches it. Ticket 0 is durable at once.
pub type Ticket = u64;

/// The outcome of a write or fill at the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Put {
    /// Written; acknowledge once the ticket is durable.
    Written(Ticket),
    /// The address already holds this (write-once): nothing changed.
    Exists(Stored),
    /// The address is below the trim mark: nothing written.
    Trimmed,
    /// The request's epoch is older than the store's sealed epoch.
    WrongEpoch(Epoch),
    /// The store's copy of the address is corrupt: it cannot tell whether
    /// the address is written, so it wrote nothing (see
    /// [`LogStore::repair`]).
    Corrupt,
}

/// A storage failure (not a Corfu outcome).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// The record of an address failed its checksum; it is never served.
    #[error("address {address}: stored record is corrupt ({reason})")]
    Corrupt {
        /// The address.
        address: Address,
        /// What was wrong.
        reason: String,
    },
    /// The store's files are not usable at start-up.
    #[error("{0}")]
    Recovery(String),
    /// The request cannot be stored (for example an entry over the size
    /// limit).
    #[error("{0}")]
    Invalid(String),
    /// The store cannot take the write for good (it ran out of segment
    /// ids).
    #[error("store failed: {0}")]
    Failed(String),
    /// The store fail-stopped (a sync of appended records failed): it serves
    /// nothing more until the process restarts and recovers from what is on
    /// disk. The message names the failure and says to restart the node.
    #[error("{0}")]
    Stopped(String),
}

/// The byte budget of one read answer ([`LogStore::get_prefix`]): takes
/// outcomes while they fit, and always the first.
#[derive(Debug, Clone, Copy)]
pub struct ReadBudget {
    used: usize,
    max: usize,
}

impl ReadBudget {
    /// A budget of `max` bytes.
    pub fn new(max: usize) -> ReadBudget {
        ReadBudget { used: 0, max }
    }

    /// Whether an outcome of `bytes` still fits: it does if it keeps the
    /// total within the budget, or if it is the first. Taken if it fits.
    pub fn take(&mut self, bytes: usize) -> bool {
        if self.fits(bytes) {
            self.used = self.used.saturating_add(bytes);
            true
        } else {
            false
        }
    }

    /// Whether an outcome of `bytes` would fit, without taking it.
    pub fn fits(&self, bytes: usize) -> bool {
        self.used == 0 || self.used.saturating_add(bytes) <= self.max
    }
}

/// Durable write-once storage of one address space.
///
/// **Fail-stop.** A store that can no longer tell what is durable (a sync
/// failed) stops: from then on [`LogStore::health`] and every fallible call
/// answer [`StoreError::Stopped`], and its durable sequence jumps to
/// [`Ticket::MAX`] so that writes waiting for a ticket wake up and find it
/// stopped. It never serves data again: an entry appended but never synced
/// is indexed like any other, and a reader (a hole filler) could otherwise
/// copy down the chain a value whose writer is told it failed. The calls
/// that cannot fail ([`LogStore::epoch`], [`LogStore::tails`]) are not
/// guarded; whoever serves the store checks `health` before every request.
pub trait LogStore: Send + Sync + 'static {
    /// Writes `value` at `address` unless the address is written, trimmed,
    /// or `epoch` is older than the sealed epoch. Atomic with respect to
    /// every other call.
    fn put(&self, epoch: Epoch, address: Address, value: &Stored) -> Result<Put, StoreError>;

    /// Writes several values; each succeeds or fails on its own, and the
    /// batch shares one durability ticket where it can.
    fn put_batch(&self, epoch: Epoch, items: &[(Address, Stored)]) -> Result<Vec<Put>, StoreError> {
        items
            .iter()
            .map(|(address, value)| self.put(epoch, *address, value))
            .collect()
    }

    /// Replaces the corrupt copy of `address` with `value`, the value a
    /// good member of its chain holds (read repair). Write-once still
    /// holds: only an address whose copy the store knows to be corrupt
    /// ([`StoreError::Corrupt`] on reads, [`Put::Corrupt`] on writes) is
    /// written; one holding a good copy answers [`Put::Exists`] (a repair
    /// that raced this one), and one the store holds nothing for is refused
    /// ([`StoreError::Invalid`]): a repair never decides an address.
    fn repair(&self, epoch: Epoch, address: Address, value: &Stored) -> Result<Put, StoreError>;

    /// What `address` holds. [`StoreError::Corrupt`] if the store's copy is
    /// corrupt.
    fn get(&self, address: Address) -> Result<ReadOutcome, StoreError>;

    /// What each of `addresses` holds, in order. A corrupt copy ends the
    /// answer: the outcomes before the first corrupt address are returned
    /// (fewer than asked for), and [`StoreError::Corrupt`] only if that is
    /// the first address; any other error fails the whole call. Stores
    /// override it to read neighbouring records at once.
    fn get_many(&self, addresses: &[Address]) -> Result<Vec<ReadOutcome>, StoreError> {
        self.get_prefix(addresses, usize::MAX)
    }

    /// What a prefix of `addresses` holds, in order, within a byte budget:
    /// outcomes are taken while their [`ReadOutcome::wire_bytes`] add up to
    /// at most `bytes_max`, and the first address is always answered (so
    /// a reader that continues after the prefix always progresses). A
    /// corrupt copy ends the answer as in [`LogStore::get_many`]; any other
    /// error fails the whole call. Stores override it so that records past
    /// the budget are not read.
    fn get_prefix(
        &self,
        addresses: &[Address],
        bytes_max: usize,
    ) -> Result<Vec<ReadOutcome>, StoreError> {
        let mut out = Vec::new();
        let mut budget = ReadBudget::new(bytes_max);
        for &address in addresses {
            let outcome = match self.get(address) {
                Ok(outcome) => outcome,
                Err(StoreError::Corrupt { .. }) if !out.is_empty() => break,
                Err(e) => return Err(e),
            };
            if !budget.take(outcome.wire_bytes()) {
                break;
            }
            out.push(outcome);
        }
        Ok(out)
    }

    /// The sealed epoch (0 before the first seal).
    fn epoch(&self) -> Epoch;

    /// Seals at `epoch` (durably) unless the store is sealed at a higher
    /// one; returns the tails as of the seal, or the current epoch if
    /// `epoch` is older.
    fn seal(&self, epoch: Epoch) -> Result<Result<Tails, Epoch>, StoreError>;

    /// The tails: highest address, per-stream highest addresses, trim mark.
    fn tails(&self) -> Tails;

    /// Raises the trim mark to `mark` (never lowers it), durably, and
    /// reclaims what lies below; returns the trim mark now.
    fn prefix_trim(&self, mark: Address) -> Result<Address, StoreError>;

    /// The durable sequence: tickets up to it are durable.
    fn durable(&self) -> watch::Receiver<Ticket>;

    /// [`StoreError::Stopped`] once the store has fail-stopped, and from
    /// then on for as long as it is open; checked before serving any
    /// request and after waiting for a ticket.
    fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The conformance suite every [`LogStore`] must pass. `open` builds a
/// fresh, empty store; `reopen`, if given, closes and reopens the store
/// from its files (for durable stores).
#[cfg(test)]
pub(crate) mod conformance {
    use super::*;
    use crate::types::StreamId;
    use crate::wire::logunit::{Entry, StreamHeader};
    use std::sync::Arc;

    pub fn entry(payload: &str, streams: &[(u128, Option<Address>)]) -> Stored {
        Stored::Data(Entry {
            id: None,
            streams: streams
                .iter()
                .map(|(s, bp)| StreamHeader {
                    stream: StreamId(*s),
                    backpointer: *bp,
                })
                .collect(),
            payload: payload.as_bytes().to_vec(),
        })
    }

    fn data_of(outcome: ReadOutcome) -> Stored {
        match outcome {
            ReadOutcome::Data(e) => Stored::Data(e),
            ReadOutcome::Junk => Stored::Junk,
            other => panic!("expected data or junk, got {other:?}"),
        }
    }

    /// Runs every check on stores built by `open`; `reopen` turns a store
    /// into a fresh instance over the same files (or `None` for volatile
    /// stores).
    pub fn run<S: LogStore>(open: &dyn Fn() -> S, reopen: Option<&dyn Fn(S) -> S>) {
        write_once(open());
        fill_and_junk(open());
        epochs_fence_writes(open());
        tails_track_streams(open());
        trim_hides_and_refuses(open());
        batches(open());
        many_reads_match_single_reads(open());
        prefix_reads_keep_to_their_budget(open());
        concurrent_writers_one_winner(open());
        if let Some(reopen) = reopen {
            survives_reopen(open(), reopen);
        }
    }

    fn write_once<S: LogStore>(s: S) {
        assert_eq!(s.get(5).unwrap(), ReadOutcome::Unwritten);
        assert!(matches!(
            s.put(0, 5, &entry("a", &[])).unwrap(),
            Put::Written(_)
        ));
        assert_eq!(data_of(s.get(5).unwrap()), entry("a", &[]));
        // A second write never changes the address; it learns what is there.
        assert_eq!(
            s.put(0, 5, &entry("b", &[])).unwrap(),
            Put::Exists(entry("a", &[]))
        );
        assert_eq!(
            s.put(0, 5, &Stored::Junk).unwrap(),
            Put::Exists(entry("a", &[]))
        );
        assert_eq!(data_of(s.get(5).unwrap()), entry("a", &[]));
        assert_eq!(s.get(4).unwrap(), ReadOutcome::Unwritten);
        assert_eq!(s.get(6).unwrap(), ReadOutcome::Unwritten);
    }

    fn fill_and_junk<S: LogStore>(s: S) {
        assert!(matches!(
            s.put(0, 9, &Stored::Junk).unwrap(),
            Put::Written(_)
        ));
        assert_eq!(s.get(9).unwrap(), ReadOutcome::Junk);
        assert_eq!(
            s.put(0, 9, &entry("late", &[])).unwrap(),
            Put::Exists(Stored::Junk)
        );
        assert_eq!(s.tails().global, Some(9));
    }

    fn epochs_fence_writes<S: LogStore>(s: S) {
        assert_eq!(s.epoch(), 0);
        assert!(matches!(
            s.put(0, 1, &entry("e0", &[])).unwrap(),
            Put::Written(_)
        ));
        let tails = s.seal(3).unwrap().unwrap();
        assert_eq!(tails.global, Some(1));
        assert_eq!(s.epoch(), 3);
        assert_eq!(
            s.put(2, 2, &entry("stale", &[])).unwrap(),
            Put::WrongEpoch(3)
        );
        assert_eq!(s.get(2).unwrap(), ReadOutcome::Unwritten);
        assert!(matches!(
            s.put(3, 2, &entry("e3", &[])).unwrap(),
            Put::Written(_)
        ));
        // Newer epochs are admitted (the unit may not have been sealed yet).
        assert!(matches!(
            s.put(4, 3, &entry("e4", &[])).unwrap(),
            Put::Written(_)
        ));
        assert_eq!(s.seal(2).unwrap(), Err(3), "sealing backwards is refused");
        assert_eq!(
            s.seal(3).unwrap().unwrap().global,
            Some(3),
            "seal is idempotent"
        );
        assert_eq!(s.epoch(), 3);
    }

    fn tails_track_streams<S: LogStore>(s: S) {
        assert_eq!(s.tails().global, None);
        s.put(0, 10, &entry("x", &[(1, None), (2, None)])).unwrap();
        s.put(0, 12, &entry("y", &[(1, Some(10))])).unwrap();
        s.put(0, 11, &entry("z", &[(2, Some(10))])).unwrap();
        s.put(0, 13, &Stored::Junk).unwrap();
        let mut tails = s.tails();
        tails.streams.sort();
        assert_eq!(tails.global, Some(13));
        assert_eq!(tails.streams, vec![(StreamId(1), 12), (StreamId(2), 11)]);
    }

    fn trim_hides_and_refuses<S: LogStore>(s: S) {
        for a in 0..20 {
            s.put(0, a, &entry(&format!("v{a}"), &[(7, a.checked_sub(1))]))
                .unwrap();
        }
        assert_eq!(s.prefix_trim(10).unwrap(), 10);
        assert_eq!(
            s.prefix_trim(5).unwrap(),
            10,
            "the trim mark never goes down"
        );
        for a in 0..10 {
            assert_eq!(s.get(a).unwrap(), ReadOutcome::Trimmed);
        }
        assert_eq!(data_of(s.get(10).unwrap()), entry("v10", &[(7, Some(9))]));
        assert_eq!(s.put(0, 3, &entry("again", &[])).unwrap(), Put::Trimmed);
        assert_eq!(s.tails().trim_mark, 10);
        assert_eq!(s.tails().global, Some(19));
    }

    /// `get_many` answers exactly what `get` answers, address by address,
    /// over data (small and larger than one read span), junk, holes,
    /// out-of-order addresses and trimmed ones.
    fn many_reads_match_single_reads<S: LogStore>(s: S) {
        let big = "x".repeat(3000);
        for a in [3u64, 1, 2, 7, 8, 20, 9] {
            let payload = if a == 8 { big.clone() } else { format!("v{a}") };
            s.put(0, a, &entry(&payload, &[(1, None)])).unwrap();
        }
        s.put(0, 5, &Stored::Junk).unwrap();
        s.prefix_trim(2).unwrap();
        let addresses = [0u64, 1, 2, 3, 4, 5, 6, 7, 8, 9, 20, 3, 21, 8, 2];
        let single: Vec<ReadOutcome> = addresses.iter().map(|a| s.get(*a).unwrap()).collect();
        assert_eq!(s.get_many(&addresses).unwrap(), single);
        assert_eq!(s.get_many(&[]).unwrap(), vec![]);
        assert!(matches!(single[8], ReadOutcome::Data(ref e) if e.payload.len() == 3000));
    }

    /// `get_prefix` answers what `get_many` answers, cut at the budget:
    /// the longest prefix whose outcomes' wire bytes fit, and never less
    /// than the first address, whatever its size.
    fn prefix_reads_keep_to_their_budget<S: LogStore>(s: S) {
        let sizes = [100usize, 3000, 40, 70_000, 10, 2000, 5000];
        for (a, len) in sizes.iter().enumerate() {
            s.put(0, a as Address, &entry(&"v".repeat(*len), &[(1, None)]))
                .unwrap();
        }
        s.put(0, 8, &Stored::Junk).unwrap();
        let addresses: Vec<Address> = vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 6, 0];
        let all = s.get_many(&addresses).unwrap();
        let bytes: Vec<usize> = all.iter().map(ReadOutcome::wire_bytes).collect();
        let total: usize = bytes.iter().sum();
        for max in [
            0,
            1,
            99,
            100,
            228,
            3300,
            3500,
            70_000,
            80_000,
            total - 1,
            total,
        ] {
            let prefix = s.get_prefix(&addresses, max).unwrap();
            let mut fit = 1;
            while fit < all.len() && bytes[..=fit].iter().sum::<usize>() <= max {
                fit += 1;
            }
            assert_eq!(prefix, all[..fit], "budget {max}");
        }
        assert_eq!(s.get_prefix(&addresses, usize::MAX).unwrap(), all);
        assert_eq!(s.get_prefix(&[], 10).unwrap(), vec![]);
        // The first address is answered even over the budget.
        assert_eq!(s.get_prefix(&[3, 0], 10).unwrap(), all[3..4]);
    }

    fn batches<S: LogStore>(s: S) {
        s.put(0, 101, &entry("first", &[])).unwrap();
        let items = vec![
            (100, entry("a", &[])),
            (101, entry("b", &[])),
            (102, Stored::Junk),
        ];
        let out = s.put_batch(0, &items).unwrap();
        assert!(matches!(out[0], Put::Written(_)));
        assert_eq!(out[1], Put::Exists(entry("first", &[])));
        assert!(matches!(out[2], Put::Written(_)));
        assert_eq!(data_of(s.get(100).unwrap()), entry("a", &[]));
        assert_eq!(s.get(102).unwrap(), ReadOutcome::Junk);
    }

    fn concurrent_writers_one_winner<S: LogStore>(s: S) {
        let s = Arc::new(s);
        for address in 0..50u64 {
            let handles: Vec<_> = (0..4)
                .map(|w| {
                    let s = s.clone();
                    std::thread::spawn(move || {
                        s.put(0, address, &entry(&format!("w{w}"), &[])).unwrap()
                    })
                })
                .collect();
            let outcomes: Vec<Put> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            let winners = outcomes
                .iter()
                .filter(|o| matches!(o, Put::Written(_)))
                .count();
            assert_eq!(
                winners, 1,
                "exactly one writer wins address {address}: {outcomes:?}"
            );
            let stored = data_of(s.get(address).unwrap());
            for o in &outcomes {
                if let Put::Exists(v) = o {
                    assert_eq!(v, &stored, "losers learn the winner's value");
                }
            }
        }
    }

    /// The fail-stop rule: `stop` must make `s` stop (as a failed sync
    /// does) and return once it has. From then on the store serves nothing:
    /// every fallible call answers `Stopped`, and the durable sequence has
    /// woken every waiter.
    pub fn fail_stop<S: LogStore>(s: S, stop: &dyn Fn(&S)) {
        assert!(matches!(
            s.put(0, 1, &entry("before", &[(3, None)])).unwrap(),
            Put::Written(_)
        ));
        s.health().unwrap();
        stop(&s);
        let is_stopped = |what: &str, e: Option<StoreError>| match e {
            Some(StoreError::Stopped(message)) => {
                assert!(message.contains("restart the node"), "{what}: {message}");
            }
            other => panic!("{what}: expected Stopped, got {other:?}"),
        };
        is_stopped("health", s.health().err());
        is_stopped("get of written", s.get(1).err());
        is_stopped("get of unwritten", s.get(5).err());
        is_stopped("get_many", s.get_many(&[1, 5]).err());
        is_stopped("get_prefix", s.get_prefix(&[1, 5], 1 << 20).err());
        is_stopped("put", s.put(0, 2, &entry("after", &[])).err());
        is_stopped("put_batch", s.put_batch(0, &[(3, Stored::Junk)]).err());
        is_stopped("seal", s.seal(2).err());
        is_stopped("prefix_trim", s.prefix_trim(1).err());
        assert_eq!(*s.durable().borrow(), Ticket::MAX, "waiters are woken");
        assert_eq!(s.epoch(), 0, "the refused seal changed nothing");
    }

    /// Read repair: `corrupt` damages the store's copy of an address (and
    /// returns once the store knows it, or will find out on the next
    /// read). The address then answers `Corrupt` to reads and writes (a
    /// batch fails only there), ends a batch read, and takes a repair,
    /// after which it serves the repaired value; a repair never overwrites
    /// a good copy or decides an unwritten address.
    pub fn corrupt_and_repair<S: LogStore>(s: S, corrupt: &dyn Fn(&S, Address)) {
        for a in 1..=4 {
            s.put(0, a, &entry(&format!("v{a}"), &[(3, None)])).unwrap();
        }
        corrupt(&s, 2);
        assert!(
            matches!(s.get(2), Err(StoreError::Corrupt { address: 2, .. })),
            "{:?}",
            s.get(2)
        );
        assert_eq!(data_of(s.get(3).unwrap()), entry("v3", &[(3, None)]));
        // A batch read ends before the corrupt address, or fails on it.
        assert_eq!(
            s.get_many(&[1, 2, 3]).unwrap(),
            vec![s.get(1).unwrap()],
            "answered up to the corrupt address"
        );
        assert!(matches!(
            s.get_many(&[2, 3]),
            Err(StoreError::Corrupt { address: 2, .. })
        ));
        // Writes and fills: refused there only.
        assert_eq!(s.put(0, 2, &entry("other", &[])).unwrap(), Put::Corrupt);
        assert_eq!(s.put(0, 2, &Stored::Junk).unwrap(), Put::Corrupt);
        let out = s
            .put_batch(
                0,
                &[(2, Stored::Junk), (5, entry("v5", &[])), (1, Stored::Junk)],
            )
            .unwrap();
        assert_eq!(out[0], Put::Corrupt);
        assert!(matches!(out[1], Put::Written(_)), "{out:?}");
        assert_eq!(out[2], Put::Exists(entry("v1", &[(3, None)])));
        // A repair touches only a corrupt copy.
        assert_eq!(
            s.repair(0, 3, &Stored::Junk).unwrap(),
            Put::Exists(entry("v3", &[(3, None)]))
        );
        assert!(matches!(
            s.repair(0, 9, &Stored::Junk),
            Err(StoreError::Invalid(_))
        ));
        assert_eq!(s.get(9).unwrap(), ReadOutcome::Unwritten);
        s.seal(2).unwrap().unwrap();
        assert_eq!(
            s.repair(1, 2, &entry("v2", &[(3, None)])).unwrap(),
            Put::WrongEpoch(2)
        );
        assert!(matches!(
            s.repair(2, 2, &entry("v2", &[(3, None)])).unwrap(),
            Put::Written(_)
        ));
        assert_eq!(data_of(s.get(2).unwrap()), entry("v2", &[(3, None)]));
        assert_eq!(s.get_many(&[1, 2, 3]).unwrap().len(), 3);
        // Repaired: write-once again.
        assert_eq!(
            s.repair(2, 2, &Stored::Junk).unwrap(),
            Put::Exists(entry("v2", &[(3, None)]))
        );
        assert_eq!(
            s.put(2, 2, &Stored::Junk).unwrap(),
            Put::Exists(entry("v2", &[(3, None)]))
        );
    }

    fn survives_reopen<S: LogStore>(s: S, reopen: &dyn Fn(S) -> S) {
        s.put(0, 1, &entry("one", &[(5, None)])).unwrap();
        s.put(0, 2, &Stored::Junk).unwrap();
        s.put(0, 30, &entry("thirty", &[(5, Some(1))])).unwrap();
        s.seal(4).unwrap().unwrap();
        s.prefix_trim(2).unwrap();
        let s = reopen(s);
        assert_eq!(s.epoch(), 4);
        assert_eq!(s.get(1).unwrap(), ReadOutcome::Trimmed);
        assert_eq!(s.get(2).unwrap(), ReadOutcome::Junk);
        assert_eq!(
            data_of(s.get(30).unwrap()),
            entry("thirty", &[(5, Some(1))])
        );
        let tails = s.tails();
        assert_eq!(tails.global, Some(30));
        assert_eq!(tails.trim_mark, 2);
        assert_eq!(tails.streams, vec![(StreamId(5), 30)]);
        assert_eq!(
            s.put(3, 31, &entry("stale", &[])).unwrap(),
            Put::WrongEpoch(4)
        );
        assert_eq!(
            s.put(4, 30, &entry("again", &[])).unwrap(),
            Put::Exists(entry("thirty", &[(5, Some(1))]))
        );
    }
}
