//! The address index of the file store: address -> packed record location.
//!
//! Addresses on one log unit are dense, or dense with a stride (a unit of
//! one stripe out of `n` holds every `n`-th address). A hash map would pay
//! about 35 bytes per entry (16-byte slots at under 50% load after a
//! resize); this index pays about 8: addresses are grouped in chunks of
//! 1024, and each chunk keeps a 1024-bit presence bitmap and the locations
//! of the present addresses in address order (rank = popcount of the bits
//! below). Entries mostly arrive in address order, so inserts append.

use std::collections::HashMap;

const CHUNK_BITS: u32 = 10;
const CHUNK: u64 = 1 << CHUNK_BITS;
const WORDS: usize = (CHUNK / 64) as usize;

#[derive(Debug, Default, Clone)]
struct Chunk {
    bits: [u64; WORDS],
    locs: Vec<u64>,
}

impl Chunk {
    fn rank(&self, slot: usize) -> usize {
        let word = slot / 64;
        let below: u32 = self.bits[..word].iter().map(|w| w.count_ones()).sum();
        let mask = (1u64 << (slot % 64)) - 1;
        (below + (self.bits[word] & mask).count_ones()) as usize
    }

    fn has(&self, slot: usize) -> bool {
        self.bits[slot / 64] & (1 << (slot % 64)) != 0
    }
}

/// A map from address to a `u64` location, about 8 bytes per entry.
#[derive(Debug, Default, Clone)]
pub struct AddressIndex {
    chunks: HashMap<u64, Chunk, foldhash::fast::RandomState>,
    len: usize,
}

fn split(address: u64) -> (u64, usize) {
    (address >> CHUNK_BITS, (address & (CHUNK - 1)) as usize)
}

impl AddressIndex {
    /// An empty index.
    pub fn new() -> AddressIndex {
        AddressIndex::default()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The location of `address`.
    pub fn get(&self, address: u64) -> Option<u64> {
        let (chunk, slot) = split(address);
        let c = self.chunks.get(&chunk)?;
        c.has(slot).then(|| c.locs[c.rank(slot)])
    }

    /// True if `address` is held.
    pub fn contains(&self, address: u64) -> bool {
        let (chunk, slot) = split(address);
        self.chunks.get(&chunk).is_some_and(|c| c.has(slot))
    }

    /// Inserts `address -> loc` unless `address` is held; returns whether it
    /// was inserted.
    pub fn insert(&mut self, address: u64, loc: u64) -> bool {
        let (chunk, slot) = split(address);
        let c = self.chunks.entry(chunk).or_default();
        if c.has(slot) {
            return false;
        }
        let at = c.rank(slot);
        if c.locs.len() == c.locs.capacity() {
            // Grow by a quarter, not double: chunks stay nearly full.
            c.locs.reserve_exact((c.locs.len() / 4).max(4));
        }
        c.locs.insert(at, loc);
        c.bits[slot / 64] |= 1 << (slot % 64);
        self.len += 1;
        true
    }

    /// Removes `address`; returns its location.
    pub fn remove(&mut self, address: u64) -> Option<u64> {
        let (chunk, slot) = split(address);
        let c = self.chunks.get_mut(&chunk)?;
        if !c.has(slot) {
            return None;
        }
        let loc = c.locs.remove(c.rank(slot));
        c.bits[slot / 64] &= !(1 << (slot % 64));
        self.len -= 1;
        if c.locs.is_empty() {
            self.chunks.remove(&chunk);
        }
        Some(loc)
    }

    /// Removes every address below `mark`.
    pub fn remove_below(&mut self, mark: u64) {
        let (mark_chunk, mark_slot) = split(mark);
        let mut removed = 0;
        self.chunks.retain(|id, c| {
            if *id < mark_chunk {
                removed += c.locs.len();
                false
            } else {
                true
            }
        });
        if let Some(c) = self.chunks.get_mut(&mark_chunk) {
            let n = c.rank(mark_slot);
            c.locs.drain(..n);
            for slot in 0..mark_slot {
                c.bits[slot / 64] &= !(1 << (slot % 64));
            }
            removed += n;
            if c.locs.is_empty() {
                self.chunks.remove(&mark_chunk);
            }
        }
        self.len -= removed;
    }

    /// Bytes of memory the index holds (chunks, their location vectors and
    /// the chunk map's slots).
    pub fn memory_bytes(&self) -> usize {
        let map_slots = (self.chunks.capacity() * 8 / 7).next_power_of_two();
        let slot = std::mem::size_of::<(u64, Chunk)>() + 1;
        map_slots * slot
            + self
                .chunks
                .values()
                .map(|c| c.locs.capacity() * 8)
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn dense_and_strided_memory_is_small() {
        for stride in [1u64, 3] {
            let mut index = AddressIndex::new();
            for i in 0..1_000_000u64 {
                assert!(index.insert(i * stride, i + 1));
            }
            let per_entry = index.memory_bytes() as f64 / index.len() as f64;
            assert!(
                per_entry < 12.0,
                "stride {stride}: {per_entry:.1} bytes per entry"
            );
            assert_eq!(index.get(999_999 * stride), Some(1_000_000));
        }
    }

    proptest! {
        /// The index behaves like a map (against `BTreeMap`).
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec((0u8..4, 0u64..5000, any::<u64>()), 1..400)) {
            let mut index = AddressIndex::new();
            let mut model: BTreeMap<u64, u64> = BTreeMap::new();
            for (op, address, loc) in ops {
                match op {
                    0 | 1 => {
                        let fresh = !model.contains_key(&address);
                        prop_assert_eq!(index.insert(address, loc), fresh);
                        model.entry(address).or_insert(loc);
                    }
                    2 => prop_assert_eq!(index.remove(address), model.remove(&address)),
                    _ => {
                        index.remove_below(address);
                        model.retain(|a, _| *a >= address);
                    }
                }
                prop_assert_eq!(index.len(), model.len());
            }
            for a in 0..5000 {
                prop_assert_eq!(index.get(a), model.get(&a).copied());
                prop_assert_eq!(index.contains(a), model.contains_key(&a));
            }
        }
    }
}
