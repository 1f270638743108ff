//! [`ReplicatedCounter`]: a 64-bit counter with increments and
//! compare-and-set whose outcomes are decided by log order.

use smr::{Address, Error, Handle, Object, StateMachine, Txn};

pub use ops::CounterOp;

mod ops {
    // rkyv's derive generates resolver types whose fields carry no docs;
    // every item written here is documented by hand.
    #![allow(missing_docs)]

    use rkyv::{Archive, Deserialize, Serialize};

    /// An update of a [`ReplicatedCounter`](super::ReplicatedCounter).
    #[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub enum CounterOp {
        /// Adds `delta` (wrapping on overflow, the same in every view).
        Add {
            /// The increment (negative to decrement).
            delta: i64,
        },
        /// Sets the value to `new` if it is `expected` when the op is
        /// applied at its place in the log; otherwise does nothing.
        CompareAndSet {
            /// The value the op requires.
            expected: i64,
            /// The value it sets.
            new: i64,
        },
    }
}

/// The state of a [`ReplicatedCounter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterState {
    value: i64,
}

impl CounterState {
    /// The counter's value.
    pub fn value(&self) -> i64 {
        self.value
    }
}

impl StateMachine for CounterState {
    type Op = CounterOp;
    const TYPE: &'static str = "corfu.counter";

    fn apply(&mut self, op: CounterOp, _address: Address) {
        match op {
            CounterOp::Add { delta } => self.value = self.value.wrapping_add(delta),
            CounterOp::CompareAndSet { expected, new } => {
                if self.value == expected {
                    self.value = new;
                }
            }
        }
    }
}

/// A signed 64-bit counter replicated through the shared log; it starts at
/// 0.
///
/// [`add`](Self::add) is a blind write: one append. Operations with an
/// outcome ([`add_and_get`](Self::add_and_get),
/// [`compare_and_set`](Self::compare_and_set)) append the op, play the
/// stream up to it and report what it did there: the outcome follows the
/// log order, the same in every runtime, not the order in which callers
/// sent their ops.
#[derive(Clone)]
pub struct ReplicatedCounter {
    handle: Handle<CounterState>,
}

impl std::fmt::Debug for ReplicatedCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicatedCounter")
            .field("object", &self.handle.name())
            .finish()
    }
}

impl Object for ReplicatedCounter {
    type State = CounterState;

    fn from_handle(handle: Handle<CounterState>) -> Self {
        ReplicatedCounter { handle }
    }
}

impl ReplicatedCounter {
    /// The runtime handle behind the counter.
    pub fn handle(&self) -> &Handle<CounterState> {
        &self.handle
    }

    /// The value (linearizable).
    pub async fn get(&self) -> Result<i64, Error> {
        self.handle.query(|c| c.value).await
    }

    /// Adds `delta` (wrapping on overflow); returns the op's address.
    pub async fn add(&self, delta: i64) -> Result<Address, Error> {
        self.handle.update(CounterOp::Add { delta }).await
    }

    /// Adds `delta` and returns the value right after this increment, in
    /// log order (fetch-and-add: concurrent callers get distinct values).
    pub async fn add_and_get(&self, delta: i64) -> Result<i64, Error> {
        let (_, value) = self
            .handle
            .update_and_read_prior(CounterOp::Add { delta }, move |c| {
                c.value.wrapping_add(delta)
            })
            .await?;
        Ok(value)
    }

    /// Sets the value to `new` if it is `expected` at the op's place in the
    /// log; returns whether it did.
    ///
    /// The outcome is read from the state the op found, not the state
    /// after it: when the value already is `new` (but not `expected`), the
    /// state after a failed attempt would look like a success.
    pub async fn compare_and_set(&self, expected: i64, new: i64) -> Result<bool, Error> {
        let (_, found) = self
            .handle
            .update_and_read_prior(CounterOp::CompareAndSet { expected, new }, |c| c.value)
            .await?;
        Ok(found == expected)
    }

    /// In transaction `tx`: the value as of the snapshot (with the
    /// transaction's own writes).
    pub async fn tx_get(&self, tx: &Txn) -> Result<i64, Error> {
        tx.read(&self.handle, |c| c.value).await
    }

    /// In transaction `tx`: adds `delta` when it commits.
    pub fn tx_add(&self, tx: &Txn, delta: i64) -> Result<(), Error> {
        tx.update(&self.handle, CounterOp::Add { delta })
    }

    /// In transaction `tx`: sets the value to `value` when it commits.
    /// This reads the counter (as [`tx_get`](Self::tx_get) does, so the
    /// commit aborts if another write of the counter came after the
    /// snapshot) and writes a compare-and-set from the value read, which
    /// the conflict check guarantees to take effect.
    pub async fn tx_set(&self, tx: &Txn, value: i64) -> Result<(), Error> {
        let current = self.tx_get(tx).await?;
        tx.update(
            &self.handle,
            CounterOp::CompareAndSet {
                expected: current,
                new: value,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smr::{MemoryLog, Runtime};

    #[tokio::test]
    async fn add_get_and_wrapping() {
        let rt = Runtime::new(MemoryLog::new());
        let c: ReplicatedCounter = rt.open("hits").unwrap();
        assert_eq!(c.get().await.unwrap(), 0);
        c.add(5).await.unwrap();
        c.add(-7).await.unwrap();
        assert_eq!(c.get().await.unwrap(), -2);
        assert_eq!(c.add_and_get(3).await.unwrap(), 1);
        c.add(i64::MAX).await.unwrap();
        c.add(1).await.unwrap();
        assert_eq!(c.get().await.unwrap(), i64::MIN.wrapping_add(1));
    }

    #[tokio::test]
    async fn compare_and_set_is_decided_at_the_ops_place_in_the_log() {
        let log = MemoryLog::new();
        let a: ReplicatedCounter = Runtime::new(log.clone()).open("cas").unwrap();
        let b: ReplicatedCounter = Runtime::new(log.clone()).open("cas").unwrap();
        assert!(a.compare_and_set(0, 1).await.unwrap());
        // b never read the counter; its op still lands after a's.
        assert!(!b.compare_and_set(0, 1).await.unwrap());
        assert!(b.compare_and_set(1, 2).await.unwrap());
        // The value already is `new`, but not `expected`: not applied.
        assert!(!a.compare_and_set(7, 2).await.unwrap());
        assert_eq!(a.get().await.unwrap(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_compare_and_set_loses_no_increment() {
        let log = MemoryLog::new();
        let runtimes = [Runtime::new(log.clone()), Runtime::new(log.clone())];
        let mut tasks = Vec::new();
        for task in 0..8 {
            let c: ReplicatedCounter = runtimes[task % 2].open("shared").unwrap();
            tasks.push(tokio::spawn(async move {
                let (mut won, mut lost) = (0i64, 0);
                while won < 20 {
                    let seen = c.get().await.unwrap();
                    if c.compare_and_set(seen, seen + 1).await.unwrap() {
                        won += 1;
                    } else {
                        lost += 1;
                    }
                }
                (won, lost)
            }));
        }
        let mut won = 0;
        for task in tasks {
            won += task.await.unwrap().0;
        }
        for rt in &runtimes {
            let c: ReplicatedCounter = rt.open("shared").unwrap();
            // Every reported success is one increment, and no other op ran.
            assert_eq!(c.get().await.unwrap(), won);
        }
        assert_eq!(won, 160);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn transactional_increments_lose_nothing() {
        let log = MemoryLog::new();
        let runtimes = [Runtime::new(log.clone()), Runtime::new(log.clone())];
        let mut tasks = Vec::new();
        for task in 0..6 {
            let rt = runtimes[task % 2].clone();
            tasks.push(tokio::spawn(async move {
                let c: ReplicatedCounter = rt.open("n").unwrap();
                let shadow: ReplicatedCounter = rt.open("shadow").unwrap();
                let mut done = 0i64;
                for _ in 0..15 {
                    let (c, shadow) = (&c, &shadow);
                    let result = rt
                        .transaction(|tx| async move {
                            let v = c.tx_get(&tx).await?;
                            c.tx_set(&tx, v + 1).await?;
                            shadow.tx_add(&tx, 1)?;
                            Ok(())
                        })
                        .await;
                    match result {
                        Ok(()) => done += 1,
                        Err(Error::Aborted { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                done
            }));
        }
        let mut done = 0;
        for task in tasks {
            done += task.await.unwrap();
        }
        assert!(done > 0);
        for rt in &runtimes {
            let c: ReplicatedCounter = rt.open("n").unwrap();
            let shadow: ReplicatedCounter = rt.open("shadow").unwrap();
            // A read-modify-write through tx_set loses no increment, and
            // both counters moved together.
            assert_eq!(c.get().await.unwrap(), done);
            assert_eq!(shadow.get().await.unwrap(), done);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn fetch_and_add_hands_out_distinct_values() {
        let log = MemoryLog::new();
        let runtimes = [Runtime::new(log.clone()), Runtime::new(log.clone())];
        let mut tasks = Vec::new();
        for task in 0..6 {
            let c: ReplicatedCounter = runtimes[task % 2].open("tickets").unwrap();
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                for _ in 0..30 {
                    mine.push(c.add_and_get(1).await.unwrap());
                }
                mine
            }));
        }
        let mut tickets = Vec::new();
        for task in tasks {
            tickets.extend(task.await.unwrap());
        }
        tickets.sort_unstable();
        assert_eq!(tickets, (1..=180).collect::<Vec<i64>>());
    }
}
