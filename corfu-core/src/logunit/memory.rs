//! The in-memory [`LogStore`]: the same rules as the file store, nothing
//! durable. For tests and simulation; [`MemoryStore::stop`] simulates the
//! fail-stop of a durable store whose sync failed, and
//! [`MemoryStore::corrupt`] a copy that failed its checksum.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use tokio::sync::watch;

use super::record::Stored;
use super::store::{LogStore, Put, StoreError, Ticket};
use crate::types::{Address, Epoch, StreamId};
use crate::wire::logunit::{ReadOutcome, Tails};

/// A volatile store.
#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<State>,
    durable: watch::Sender<Ticket>,
}

#[derive(Debug, Default)]
struct State {
    epoch: Epoch,
    trim_mark: Address,
    entries: HashMap<Address, Stored>,
    global: Option<Address>,
    streams: HashMap<StreamId, Address>,
    /// Set by [`MemoryStore::stop`]: the message every call answers.
    stopped: Option<String>,
    /// Addresses whose copy is corrupt ([`MemoryStore::corrupt`]).
    corrupt: HashSet<Address>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            state: Mutex::new(State::default()),
            durable: watch::channel(0).0,
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Fail-stops the store as a durable store does when a sync fails:
    /// from now on every call answers [`StoreError::Stopped`] (naming
    /// `reason`) and waiters of the durable sequence wake up.
    pub fn stop(&self, reason: &str) {
        let mut state = self.lock();
        if state.stopped.is_none() {
            state.stopped = Some(format!("log unit stopped: {reason}; restart the node"));
        }
        self.durable.send_replace(Ticket::MAX);
    }

    /// Simulates a copy of `address` that failed its checksum, as a
    /// durable store finds one: the address answers
    /// [`StoreError::Corrupt`] to reads and [`Put::Corrupt`] to writes
    /// until it is repaired ([`LogStore::repair`]).
    pub fn corrupt(&self, address: Address) {
        let mut state = self.lock();
        state.entries.remove(&address);
        state.corrupt.insert(address);
    }

    /// Simulates a copy of `address` the unit lost without knowing it (a
    /// durable store that restarted and found a corrupt record whose
    /// address it cannot tell, or a copy that was marked corrupt only in
    /// memory): the address reads `Unwritten` and takes writes again.
    pub fn forget(&self, address: Address) {
        let mut state = self.lock();
        state.entries.remove(&address);
        state.corrupt.remove(&address);
    }

    /// The state, unless the store has stopped.
    fn serving(&self) -> Result<std::sync::MutexGuard<'_, State>, StoreError> {
        let state = self.lock();
        match &state.stopped {
            Some(message) => Err(StoreError::Stopped(message.clone())),
            None => Ok(state),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    fn put(&mut self, epoch: Epoch, address: Address, value: &Stored) -> Put {
        if epoch < self.epoch {
            return Put::WrongEpoch(self.epoch);
        }
        if address < self.trim_mark {
            return Put::Trimmed;
        }
        if self.corrupt.contains(&address) {
            return Put::Corrupt;
        }
        if let Some(existing) = self.entries.get(&address) {
            return Put::Exists(existing.clone());
        }
        self.global = Some(self.global.map_or(address, |g| g.max(address)));
        if let Stored::Data(entry) = value {
            for h in &entry.streams {
                let tail = self.streams.entry(h.stream).or_insert(address);
                *tail = (*tail).max(address);
            }
        }
        self.entries.insert(address, value.clone());
        Put::Written(0)
    }

    fn tails(&self) -> Tails {
        Tails {
            global: self.global,
            streams: self.streams.iter().map(|(s, a)| (*s, *a)).collect(),
            trim_mark: self.trim_mark,
        }
    }
}

impl LogStore for MemoryStore {
    fn put(&self, epoch: Epoch, address: Address, value: &Stored) -> Result<Put, StoreError> {
        Ok(self.serving()?.put(epoch, address, value))
    }

    fn put_batch(&self, epoch: Epoch, items: &[(Address, Stored)]) -> Result<Vec<Put>, StoreError> {
        let mut state = self.serving()?;
        Ok(items.iter().map(|(a, v)| state.put(epoch, *a, v)).collect())
    }

    fn repair(&self, epoch: Epoch, address: Address, value: &Stored) -> Result<Put, StoreError> {
        let mut state = self.serving()?;
        if epoch < state.epoch {
            return Ok(Put::WrongEpoch(state.epoch));
        }
        if address < state.trim_mark {
            return Ok(Put::Trimmed);
        }
        if state.corrupt.remove(&address) {
            return Ok(state.put(epoch, address, value));
        }
        match state.entries.get(&address) {
            Some(existing) => Ok(Put::Exists(existing.clone())),
            None => Err(not_corrupt(address)),
        }
    }

    fn get(&self, address: Address) -> Result<ReadOutcome, StoreError> {
        let state = self.serving()?;
        if address < state.trim_mark {
            return Ok(ReadOutcome::Trimmed);
        }
        if state.corrupt.contains(&address) {
            return Err(StoreError::Corrupt {
                address,
                reason: "simulated corruption".into(),
            });
        }
        Ok(match state.entries.get(&address) {
            None => ReadOutcome::Unwritten,
            Some(Stored::Junk) => ReadOutcome::Junk,
            Some(Stored::Data(e)) => ReadOutcome::Data(e.clone()),
        })
    }

    fn epoch(&self) -> Epoch {
        self.lock().epoch
    }

    fn seal(&self, epoch: Epoch) -> Result<Result<Tails, Epoch>, StoreError> {
        let mut state = self.serving()?;
        if epoch < state.epoch {
            return Ok(Err(state.epoch));
        }
        state.epoch = epoch;
        Ok(Ok(state.tails()))
    }

    fn tails(&self) -> Tails {
        self.lock().tails()
    }

    fn prefix_trim(&self, mark: Address) -> Result<Address, StoreError> {
        let mut state = self.serving()?;
        if mark > state.trim_mark {
            state.trim_mark = mark;
            state.entries.retain(|a, _| *a >= mark);
            state.corrupt.retain(|a| *a >= mark);
        }
        Ok(state.trim_mark)
    }

    fn durable(&self) -> watch::Receiver<Ticket> {
        self.durable.subscribe()
    }

    fn health(&self) -> Result<(), StoreError> {
        self.serving().map(drop)
    }
}

/// The refusal of a repair of an address the store holds no corrupt copy
/// of.
pub(crate) fn not_corrupt(address: Address) -> StoreError {
    StoreError::Invalid(format!(
        "address {address} holds no corrupt copy on this unit: a repair only replaces a corrupt copy"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_conforms() {
        super::super::store::conformance::run(&MemoryStore::new, None);
    }

    #[test]
    fn memory_store_repairs_corrupt_copies() {
        super::super::store::conformance::corrupt_and_repair(MemoryStore::new(), &|s, a| {
            s.corrupt(a)
        });
    }

    #[test]
    fn memory_store_fail_stops() {
        super::super::store::conformance::fail_stop(MemoryStore::new(), &|s| {
            s.stop("simulated sync failure")
        });
    }
}
