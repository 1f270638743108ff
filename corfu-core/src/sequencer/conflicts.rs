//! The conflict table of conditional tokens (Tango §4; vCorfu and CorfuDB
//! resolve transactions at the sequencer the same way): for each conflict
//! key, the last address at which a committed transaction wrote it. A
//! transaction with snapshot `s` may commit only if no key of its read set
//! was written at an address above `s`.
//!
//! The table is bounded. When it is full, the key written longest ago (the
//! lowest address, since addresses are recorded in increasing order) is
//! forgotten and the floor rises to that address. A snapshot below the
//! floor aborts without looking at keys: the forgotten key might have been
//! written after it. A snapshot at or above the floor is judged exactly,
//! because every forgotten write lies at or below it. So eviction can cause
//! extra aborts, never a wrong commit.
//!
//! Keys are compared as opaque values: `(stream, 0)` ("the whole object")
//! conflicts only with `(stream, 0)`. A transaction that reads a whole
//! object names `(stream, 0)` in its read set, and every writer of that
//! object must name `(stream, 0)` in its write set besides its own keys.

use std::collections::{HashMap, VecDeque};

use crate::types::Address;
use crate::wire::sequencer::ConflictKey;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Why a conditional token is refused: the key (none for the floor) and
/// the address that conflicts.
pub(crate) type Conflict = (Option<ConflictKey>, Address);

/// Last write address per conflict key, bounded, with a floor.
#[derive(Debug)]
pub(crate) struct ConflictTable {
    last_write: FastMap<ConflictKey, Address>,
    /// `(address, key)` in recording order, which is address order. An
    /// entry is stale once its key was written again later; stale entries
    /// are skipped on eviction and dropped by compaction.
    order: VecDeque<(Address, ConflictKey)>,
    keys_max: usize,
    floor: Address,
}

impl ConflictTable {
    /// An empty table remembering at most `keys_max` keys (at least 1),
    /// whose floor starts at `floor`.
    pub(crate) fn new(keys_max: usize, floor: Address) -> ConflictTable {
        ConflictTable {
            last_write: FastMap::default(),
            order: VecDeque::new(),
            keys_max: keys_max.max(1),
            floor,
        }
    }

    /// Snapshots below the floor abort.
    pub(crate) fn floor(&self) -> Address {
        self.floor
    }

    /// Number of keys remembered.
    pub(crate) fn len(&self) -> usize {
        self.last_write.len()
    }

    /// `Ok` if a transaction that read `read_set` at `snapshot` may commit;
    /// otherwise the floor or the first conflicting key of the read set.
    pub(crate) fn check(
        &self,
        snapshot: Address,
        read_set: &[ConflictKey],
    ) -> Result<(), Conflict> {
        if snapshot < self.floor {
            return Err((None, self.floor));
        }
        for key in read_set {
            if let Some(&written) = self.last_write.get(key) {
                if written > snapshot {
                    return Err((Some(*key), written));
                }
            }
        }
        Ok(())
    }

    /// Records `keys` as written at `address`, which is at least every
    /// address recorded before (grants only move forward).
    pub(crate) fn record(&mut self, address: Address, keys: &[ConflictKey]) {
        debug_assert!(
            self.order.back().is_none_or(|(last, _)| *last <= address),
            "conflict writes are recorded in address order"
        );
        for key in keys {
            // A key repeated in one write set is queued once, so the queue
            // holds at most one live entry per key.
            if self.last_write.insert(*key, address) != Some(address) {
                self.order.push_back((address, *key));
            }
        }
        while self.last_write.len() > self.keys_max {
            let Some((address, key)) = self.order.pop_front() else {
                break;
            };
            if self.last_write.get(&key) == Some(&address) {
                self.last_write.remove(&key);
                self.floor = self.floor.max(address);
            }
        }
        // Stale entries are dropped once they outnumber live ones, so the
        // queue stays within twice the table (amortized O(1) per write).
        if self.order.len() > 2 * self.keys_max {
            let last_write = &self.last_write;
            self.order
                .retain(|(address, key)| last_write.get(key) == Some(address));
        }
    }

    /// Forgets every key and sets the floor to `floor` (bootstrap: nothing
    /// below it is known).
    pub(crate) fn reset(&mut self, floor: Address) {
        self.last_write.clear();
        self.order.clear();
        self.floor = floor;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::StreamId;

    fn key(k: u64) -> ConflictKey {
        ConflictKey {
            stream: StreamId(1),
            key_hash: k,
        }
    }

    #[test]
    fn read_key_written_after_snapshot_conflicts() {
        let mut t = ConflictTable::new(10, 0);
        t.record(5, &[key(1)]);
        assert_eq!(t.check(4, &[key(1)]), Err((Some(key(1)), 5)));
        assert_eq!(t.check(5, &[key(1)]), Ok(()), "written at the snapshot");
        assert_eq!(t.check(4, &[key(2)]), Ok(()), "another key");
    }

    #[test]
    fn whole_object_key_is_opaque() {
        let mut t = ConflictTable::new(10, 0);
        t.record(5, &[key(7)]);
        assert_eq!(t.check(0, &[key(0)]), Ok(()), "(s, 0) is not a wildcard");
        t.record(6, &[key(0)]);
        assert_eq!(t.check(0, &[key(0)]), Err((Some(key(0)), 6)));
    }

    #[test]
    fn eviction_forgets_the_oldest_key_and_raises_the_floor() {
        let mut t = ConflictTable::new(2, 0);
        t.record(3, &[key(1)]);
        t.record(4, &[key(2)]);
        t.record(4, &[key(1)]); // key 1 rewritten: its entry at 3 is stale
        t.record(9, &[key(3)]);
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.floor(),
            4,
            "key 2 (or 1) at 4 was evicted, not the stale 3"
        );
        assert_eq!(t.check(3, &[]), Err((None, 4)));
        assert_eq!(t.check(8, &[key(3)]), Err((Some(key(3)), 9)));
    }

    #[test]
    fn queue_stays_bounded_under_rewrites() {
        let mut t = ConflictTable::new(4, 0);
        for a in 0..10_000u64 {
            t.record(a, &[key(a % 3), key(a % 3)]);
            assert!(t.order.len() <= 2 * 4 + 2, "queue {}", t.order.len());
        }
        assert_eq!(t.floor(), 0, "three keys fit: nothing evicted");
        assert_eq!(t.len(), 3);
    }
}
