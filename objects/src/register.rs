//! [`ReplicatedRegister`]: one value, with a compare-and-set whose outcome
//! is decided by log order.
//!
//! A register is read and written as a whole: every write names only the
//! whole-object conflict key, and a transactional read
//! ([`ReplicatedRegister::tx_get`]) reads it.

use std::sync::Arc;

use smr::{Address, Codec, Error, Handle, Object, StateMachine, Txn};

pub use ops::RegisterOp;

mod ops {
    // rkyv's derive generates resolver types whose fields carry no docs;
    // every item written here is documented by hand.
    #![allow(missing_docs)]

    use rkyv::{Archive, Deserialize, Serialize};

    /// An update of a [`ReplicatedRegister`](super::ReplicatedRegister).
    #[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub enum RegisterOp<T> {
        /// Sets the value to `value`.
        Set {
            /// The new value.
            value: T,
        },
        /// Sets the value to `new` if it is `expected` (`None`: never set)
        /// when the op is applied at its place in the log; otherwise does
        /// nothing.
        CompareAndSet {
            /// The value the op requires.
            expected: Option<T>,
            /// The value it sets.
            new: T,
        },
    }
}

/// The state of a [`ReplicatedRegister`]: the value, shared behind an
/// `Arc` so a copy of the state (a transaction's snapshot) costs O(1)
/// whatever the value's size.
#[derive(Debug)]
pub struct RegisterState<T> {
    value: Option<Arc<T>>,
}

impl<T> Default for RegisterState<T> {
    fn default() -> Self {
        RegisterState { value: None }
    }
}

impl<T> Clone for RegisterState<T> {
    fn clone(&self) -> Self {
        RegisterState {
            value: self.value.clone(),
        }
    }
}

impl<T> RegisterState<T> {
    /// The value, or `None` if the register was never set.
    pub fn value(&self) -> Option<&T> {
        self.value.as_deref()
    }
}

impl<T> StateMachine for RegisterState<T>
where
    T: PartialEq + Send + Sync + 'static,
    RegisterOp<T>: Codec + Send,
{
    type Op = RegisterOp<T>;
    const TYPE: &'static str = "corfu.register";

    fn apply(&mut self, op: RegisterOp<T>, _address: Address) {
        match op {
            RegisterOp::Set { value } => self.value = Some(Arc::new(value)),
            RegisterOp::CompareAndSet { expected, new } => {
                if self.value.as_deref() == expected.as_ref() {
                    self.value = Some(Arc::new(new));
                }
            }
        }
    }
}

/// A register holding one `T` (any type rkyv can archive), replicated
/// through the shared log; it starts unset.
///
/// [`set`](Self::set) is a blind write: one append.
/// [`compare_and_set`](Self::compare_and_set) appends the op, plays the
/// stream up to it and reports whether it took effect there: of two
/// processes racing to set the register from the same value, exactly one
/// wins, the same in every view. [`get`](Self::get) is linearizable.
pub struct ReplicatedRegister<T>
where
    RegisterState<T>: StateMachine,
{
    handle: Handle<RegisterState<T>>,
}

impl<T> Clone for ReplicatedRegister<T>
where
    RegisterState<T>: StateMachine,
{
    fn clone(&self) -> Self {
        ReplicatedRegister {
            handle: self.handle.clone(),
        }
    }
}

impl<T> std::fmt::Debug for ReplicatedRegister<T>
where
    RegisterState<T>: StateMachine,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicatedRegister")
            .field("object", &self.handle.name())
            .finish()
    }
}

impl<T> Object for ReplicatedRegister<T>
where
    RegisterState<T>: StateMachine,
{
    type State = RegisterState<T>;

    fn from_handle(handle: Handle<RegisterState<T>>) -> Self {
        ReplicatedRegister { handle }
    }
}

impl<T> ReplicatedRegister<T>
where
    RegisterState<T>: StateMachine<Op = RegisterOp<T>>,
    T: Clone + PartialEq + Send + Sync + 'static,
{
    /// The runtime handle behind the register.
    pub fn handle(&self) -> &Handle<RegisterState<T>> {
        &self.handle
    }

    /// The value, or `None` if the register was never set.
    pub async fn get(&self) -> Result<Option<T>, Error> {
        self.handle.query(|r| r.value().cloned()).await
    }

    /// Sets the value; returns the op's address.
    pub async fn set(&self, value: T) -> Result<Address, Error> {
        self.handle.update(RegisterOp::Set { value }).await
    }

    /// Sets the value to `new` if it is `expected` (`None`: the register
    /// was never set) at the op's place in the log; returns whether it
    /// did.
    ///
    /// The outcome is read from the value the op found, not the value
    /// after it: when the value already is `new` (but not `expected`), the
    /// state after a failed attempt would look like a success.
    pub async fn compare_and_set(&self, expected: Option<T>, new: T) -> Result<bool, Error> {
        let op = RegisterOp::CompareAndSet {
            expected: expected.clone(),
            new,
        };
        let (_, matched) = self
            .handle
            .update_and_read_prior(op, move |r: &RegisterState<T>| {
                r.value() == expected.as_ref()
            })
            .await?;
        Ok(matched)
    }

    /// In transaction `tx`: the value as of the snapshot (with the
    /// transaction's own writes). Reads the whole register: any later write
    /// of it makes the commit abort.
    pub async fn tx_get(&self, tx: &Txn) -> Result<Option<T>, Error> {
        tx.read(&self.handle, |r| r.value().cloned()).await
    }

    /// In transaction `tx`: sets the value when it commits. A write only:
    /// it never makes the commit abort.
    pub fn tx_set(&self, tx: &Txn, value: T) -> Result<(), Error> {
        tx.update(&self.handle, RegisterOp::Set { value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smr::{MemoryLog, Runtime};

    type Leader = ReplicatedRegister<String>;

    #[tokio::test]
    async fn set_and_get_in_every_runtime() {
        let log = MemoryLog::new();
        let a: Leader = Runtime::new(log.clone()).open("leader").unwrap();
        let b: Leader = Runtime::new(log.clone()).open("leader").unwrap();
        assert_eq!(a.get().await.unwrap(), None);
        a.set("n1".into()).await.unwrap();
        assert_eq!(b.get().await.unwrap().as_deref(), Some("n1"));
        b.set("n2".into()).await.unwrap();
        assert_eq!(a.get().await.unwrap().as_deref(), Some("n2"));
    }

    #[tokio::test]
    async fn compare_and_set_is_decided_at_the_ops_place_in_the_log() {
        let log = MemoryLog::new();
        let a: Leader = Runtime::new(log.clone()).open("leader").unwrap();
        let b: Leader = Runtime::new(log.clone()).open("leader").unwrap();
        // Both expect "never set"; the first in the log wins.
        assert!(a.compare_and_set(None, "a".into()).await.unwrap());
        assert!(!b.compare_and_set(None, "b".into()).await.unwrap());
        assert_eq!(b.get().await.unwrap().as_deref(), Some("a"));
        // b never read the register; its op still lands after a's.
        assert!(b
            .compare_and_set(Some("a".into()), "b".into())
            .await
            .unwrap());
        assert!(!a
            .compare_and_set(Some("a".into()), "c".into())
            .await
            .unwrap());
        // The value already is `new`, but not `expected`: not applied.
        assert!(!a
            .compare_and_set(Some("x".into()), "b".into())
            .await
            .unwrap());
        assert_eq!(a.get().await.unwrap().as_deref(), Some("b"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn of_racing_compare_and_sets_from_one_value_exactly_one_wins() {
        let log = MemoryLog::new();
        let runtimes = [Runtime::new(log.clone()), Runtime::new(log.clone())];
        let r: ReplicatedRegister<u64> = runtimes[0].open("epoch").unwrap();
        r.set(0).await.unwrap();
        for round in 0..10u64 {
            let mut tasks = Vec::new();
            for task in 0..6u64 {
                let r: ReplicatedRegister<u64> =
                    runtimes[(task % 2) as usize].open("epoch").unwrap();
                tasks.push(tokio::spawn(async move {
                    let won = r
                        .compare_and_set(Some(round * 100), (round + 1) * 100 + task)
                        .await
                        .unwrap();
                    (task, won)
                }));
            }
            let mut winners = Vec::new();
            for t in tasks {
                let (task, won) = t.await.unwrap();
                if won {
                    winners.push(task);
                }
            }
            assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
            let expected = (round + 1) * 100 + winners[0];
            for rt in &runtimes {
                let r: ReplicatedRegister<u64> = rt.open("epoch").unwrap();
                assert_eq!(r.get().await.unwrap(), Some(expected));
            }
            // The next round starts from a round number.
            r.set((round + 1) * 100).await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_transaction_that_read_the_register_aborts_on_a_later_write() {
        let log = MemoryLog::new();
        let rt = Runtime::new(log.clone());
        let r: Leader = rt.open("leader").unwrap();
        let copy: Leader = rt.open("copy").unwrap();
        let other: Leader = Runtime::new(log.clone()).open("leader").unwrap();
        r.set("v1".into()).await.unwrap();
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let (r_ref, copy_ref, other_ref, attempts_ref) = (&r, &copy, &other, &attempts);
        let (seen, own) = rt
            .transaction(|tx| async move {
                let n = attempts_ref.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let seen = r_ref.tx_get(&tx).await?.unwrap_or_default();
                if n == 0 {
                    other_ref.set("v2".into()).await?;
                }
                copy_ref.tx_set(&tx, seen.clone())?;
                r_ref.tx_set(&tx, format!("{seen}+"))?;
                let own = r_ref.tx_get(&tx).await?;
                Ok((seen, own))
            })
            .await
            .unwrap();
        assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(seen, "v2", "the retry read the later write");
        assert_eq!(own.as_deref(), Some("v2+"), "reads see the own write");
        assert_eq!(copy.get().await.unwrap().as_deref(), Some("v2"));
        assert_eq!(other.get().await.unwrap().as_deref(), Some("v2+"));
    }
}
