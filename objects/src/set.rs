//! [`ReplicatedSet`]: a sorted set replicated through its stream.
//!
//! Conflict keys are per element, as a map's are per key (the same
//! [`map_key`] hashes and the same [`ALL_KEYS`] for `clear`): a
//! transaction that asked whether `x` is a member conflicts only with
//! later inserts and removals of `x`, and with a clear.

use std::borrow::Borrow;

use imbl::OrdSet;
use smr::{Address, Codec, Error, Handle, Object, StateMachine, Txn};

use crate::map::{map_key, ALL_KEYS};

pub use ops::SetOp;

mod ops {
    // rkyv's derive generates resolver types whose fields carry no docs;
    // every item written here is documented by hand.
    #![allow(missing_docs)]

    use rkyv::{Archive, Deserialize, Serialize};

    /// An update of a [`ReplicatedSet`](super::ReplicatedSet).
    #[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub enum SetOp<T> {
        /// Adds `item` (a no-op if present).
        Insert {
            /// The element.
            item: T,
        },
        /// Removes `item` (a no-op if absent).
        Remove {
            /// The element.
            item: T,
        },
        /// Removes every element.
        Clear,
    }
}

/// The state of a [`ReplicatedSet`]: a persistent sorted set, so a copy of
/// it (a snapshot) costs O(1) and shares structure with the view.
#[derive(Debug, Clone)]
pub struct SetState<T: Ord + Clone> {
    items: OrdSet<T>,
}

impl<T: Ord + Clone> Default for SetState<T> {
    fn default() -> Self {
        SetState {
            items: OrdSet::new(),
        }
    }
}

impl<T: Ord + Clone> SetState<T> {
    /// The set's elements.
    pub fn items(&self) -> &OrdSet<T> {
        &self.items
    }
}

impl<T> StateMachine for SetState<T>
where
    T: Ord + Clone + Codec + Send + Sync + 'static,
    SetOp<T>: Codec + Send,
{
    type Op = SetOp<T>;
    const TYPE: &'static str = "corfu.set";

    /// `insert` and `remove` write their element's [`map_key`]; `clear`
    /// writes [`ALL_KEYS`].
    fn write_keys(op: &SetOp<T>) -> Vec<u64> {
        match op {
            SetOp::Insert { item } | SetOp::Remove { item } => vec![map_key(item)],
            SetOp::Clear => vec![ALL_KEYS],
        }
    }

    fn apply(&mut self, op: SetOp<T>, _address: Address) {
        match op {
            SetOp::Insert { item } => {
                self.items.insert(item);
            }
            SetOp::Remove { item } => {
                self.items.remove(&item);
            }
            SetOp::Clear => self.items.clear(),
        }
    }
}

/// A set of `T` replicated through the shared log. Elements are sorted
/// (`T: Ord`) and are any type rkyv can archive.
///
/// Writes (`insert`, `remove`, `clear`) append one entry and return its
/// address. Reads are linearizable. In a transaction,
/// [`tx_contains`](Self::tx_contains) reads one element (a conflict only
/// with writes of that element or a clear), [`tx_snapshot`](Self::tx_snapshot)
/// and [`tx_len`](Self::tx_len) read the whole set, and
/// [`tx_insert`](Self::tx_insert), [`tx_remove`](Self::tx_remove) and
/// [`tx_clear`](Self::tx_clear) buffer writes.
pub struct ReplicatedSet<T>
where
    SetState<T>: StateMachine,
    T: Ord + Clone,
{
    handle: Handle<SetState<T>>,
}

impl<T> Clone for ReplicatedSet<T>
where
    SetState<T>: StateMachine,
    T: Ord + Clone,
{
    fn clone(&self) -> Self {
        ReplicatedSet {
            handle: self.handle.clone(),
        }
    }
}

impl<T> std::fmt::Debug for ReplicatedSet<T>
where
    SetState<T>: StateMachine,
    T: Ord + Clone,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicatedSet")
            .field("object", &self.handle.name())
            .finish()
    }
}

impl<T> Object for ReplicatedSet<T>
where
    SetState<T>: StateMachine,
    T: Ord + Clone,
{
    type State = SetState<T>;

    fn from_handle(handle: Handle<SetState<T>>) -> Self {
        ReplicatedSet { handle }
    }
}

impl<T> ReplicatedSet<T>
where
    SetState<T>: StateMachine<Op = SetOp<T>>,
    T: Ord + Clone,
{
    /// The runtime handle behind the set.
    pub fn handle(&self) -> &Handle<SetState<T>> {
        &self.handle
    }

    /// Adds `item` (an entry is appended even if it is present).
    pub async fn insert(&self, item: T) -> Result<Address, Error> {
        self.handle.update(SetOp::Insert { item }).await
    }

    /// Removes `item` (an entry is appended even if it is absent).
    pub async fn remove(&self, item: T) -> Result<Address, Error> {
        self.handle.update(SetOp::Remove { item }).await
    }

    /// Removes every element.
    pub async fn clear(&self) -> Result<Address, Error> {
        self.handle.update(SetOp::Clear).await
    }

    /// Whether `item` is a member.
    pub async fn contains<Q>(&self, item: &Q) -> Result<bool, Error>
    where
        T: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.handle.query(|s| s.items.contains(item)).await
    }

    /// The number of elements.
    pub async fn len(&self) -> Result<usize, Error> {
        self.handle.query(|s| s.items.len()).await
    }

    /// Whether the set has no element.
    pub async fn is_empty(&self) -> Result<bool, Error> {
        self.handle.query(|s| s.items.is_empty()).await
    }

    /// The whole set as of now: an O(1) copy sharing structure with the
    /// view, to iterate (in order) or keep without holding the view.
    pub async fn snapshot(&self) -> Result<OrdSet<T>, Error> {
        self.handle.query(|s| s.items.clone()).await
    }

    /// Runs `read` on the set as of now (for range scans and other reads
    /// without a copy). It runs under the view's read lock: keep it short.
    pub async fn query<R>(&self, read: impl FnOnce(&OrdSet<T>) -> R) -> Result<R, Error> {
        self.handle.query(|s| read(&s.items)).await
    }

    /// In transaction `tx`: whether `item` is a member as of the snapshot
    /// (with the transaction's own writes). Reads the element's conflict
    /// key and [`ALL_KEYS`].
    pub async fn tx_contains(&self, tx: &Txn, item: &T) -> Result<bool, Error>
    where
        T: Codec,
    {
        tx.read_keys(&self.handle, &[map_key(item), ALL_KEYS], |s| {
            s.items.contains(item)
        })
        .await
    }

    /// In transaction `tx`: the number of elements as of the snapshot.
    /// Reads the whole set: any later write of it makes the commit abort.
    pub async fn tx_len(&self, tx: &Txn) -> Result<usize, Error> {
        tx.read(&self.handle, |s| s.items.len()).await
    }

    /// In transaction `tx`: the whole set as of the snapshot (an O(1)
    /// copy). Reads the whole set: any later write of it makes the commit
    /// abort.
    pub async fn tx_snapshot(&self, tx: &Txn) -> Result<OrdSet<T>, Error> {
        tx.read(&self.handle, |s| s.items.clone()).await
    }

    /// In transaction `tx`: adds `item` when it commits.
    pub fn tx_insert(&self, tx: &Txn, item: T) -> Result<(), Error> {
        tx.update(&self.handle, SetOp::Insert { item })
    }

    /// In transaction `tx`: removes `item` when it commits.
    pub fn tx_remove(&self, tx: &Txn, item: T) -> Result<(), Error> {
        tx.update(&self.handle, SetOp::Remove { item })
    }

    /// In transaction `tx`: removes every element when it commits.
    pub fn tx_clear(&self, tx: &Txn) -> Result<(), Error> {
        tx.update(&self.handle, SetOp::Clear)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smr::{MemoryLog, Runtime};
    use std::sync::atomic::{AtomicU32, Ordering};

    type Tags = ReplicatedSet<String>;

    #[tokio::test]
    async fn operations_are_seen_by_every_runtime() {
        let log = MemoryLog::new();
        let a: Tags = Runtime::new(log.clone()).open("tags").unwrap();
        let b: Tags = Runtime::new(log.clone()).open("tags").unwrap();
        assert!(a.is_empty().await.unwrap());
        a.insert("red".into()).await.unwrap();
        b.insert("blue".into()).await.unwrap();
        a.insert("red".into()).await.unwrap();
        assert!(b.contains("red").await.unwrap());
        assert!(!b.contains("green").await.unwrap());
        assert_eq!(b.len().await.unwrap(), 2);
        let before = b.snapshot().await.unwrap();

        b.remove("red".into()).await.unwrap();
        b.remove("absent".into()).await.unwrap();
        assert!(!a.contains("red").await.unwrap());
        assert_eq!(
            a.snapshot().await.unwrap().into_iter().collect::<Vec<_>>(),
            vec!["blue".to_string()]
        );
        // Sorted, and unaffected by the later removal.
        assert_eq!(
            before.iter().map(String::as_str).collect::<Vec<_>>(),
            vec!["blue", "red"]
        );
        let long = a.query(|s| s.iter().filter(|t| t.len() > 3).count()).await;
        assert_eq!(long.unwrap(), 1);
        a.clear().await.unwrap();
        assert!(b.is_empty().await.unwrap());
    }

    /// Runs one transaction that reads `read` (one element, or the whole
    /// set if `None`) in `s` and records it in the set "log"; between its
    /// snapshot and its commit, `meddle` is appended through `other`, on the
    /// first attempt only. Returns how many attempts it took.
    async fn attempts_with_meddling(
        rt: &Runtime,
        s: &Tags,
        other: &Tags,
        read: Option<&str>,
        meddle: SetOp<String>,
    ) -> u32 {
        let log: Tags = rt.open("log").unwrap();
        let attempts = AtomicU32::new(0);
        let (attempts_ref, meddle, log) = (&attempts, &meddle, &log);
        let read = read.map(str::to_string);
        let read = &read;
        rt.transaction(|tx| async move {
            let n = attempts_ref.fetch_add(1, Ordering::SeqCst);
            let seen = match read {
                Some(item) => s.tx_contains(&tx, item).await?.to_string(),
                None => s.tx_len(&tx).await?.to_string(),
            };
            if n == 0 {
                other.handle().update(meddle.clone()).await?;
            }
            log.tx_insert(&tx, seen)?;
            Ok(())
        })
        .await
        .unwrap();
        attempts.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn transactions_conflict_per_element_and_with_clear() {
        let log = MemoryLog::new();
        let rt = Runtime::new(log.clone());
        let s: Tags = rt.open("tags").unwrap();
        let other: Tags = Runtime::new(log.clone()).open("tags").unwrap();
        let insert = |item: &str| SetOp::Insert { item: item.into() };
        // Another element written after the snapshot: no conflict.
        assert_eq!(
            attempts_with_meddling(&rt, &s, &other, Some("a"), insert("b")).await,
            1
        );
        // The element read: conflict, and the retry sees it.
        assert_eq!(
            attempts_with_meddling(&rt, &s, &other, Some("a"), insert("a")).await,
            2
        );
        let recorded: Tags = rt.open("log").unwrap();
        assert!(recorded.contains("true").await.unwrap());
        assert_eq!(
            attempts_with_meddling(
                &rt,
                &s,
                &other,
                Some("a"),
                SetOp::Remove { item: "a".into() }
            )
            .await,
            2
        );
        // A clear writes every element.
        assert_eq!(
            attempts_with_meddling(&rt, &s, &other, Some("z"), SetOp::Clear).await,
            2
        );
        // A whole-set read conflicts with a write of any element.
        assert_eq!(
            attempts_with_meddling(&rt, &s, &other, None, insert("zz")).await,
            2
        );
        assert!(recorded.contains("1").await.unwrap(), "the retry saw zz");
    }

    #[tokio::test]
    async fn transactional_writes_commit_together_and_are_read_back() {
        let log = MemoryLog::new();
        let rt = Runtime::new(log.clone());
        let s: Tags = rt.open("s").unwrap();
        let t: Tags = rt.open("t").unwrap();
        s.insert("gone".into()).await.unwrap();
        t.insert("old".into()).await.unwrap();
        let (s_ref, t_ref) = (&s, &t);
        let inside = rt
            .transaction(|tx| async move {
                s_ref.tx_insert(&tx, "x".into())?;
                s_ref.tx_remove(&tx, "gone".into())?;
                t_ref.tx_clear(&tx)?;
                t_ref.tx_insert(&tx, "y".into())?;
                Ok((
                    s_ref.tx_contains(&tx, &"x".to_string()).await?,
                    s_ref.tx_contains(&tx, &"gone".to_string()).await?,
                    t_ref.tx_snapshot(&tx).await?,
                ))
            })
            .await
            .unwrap();
        assert!(inside.0);
        assert!(!inside.1);
        assert_eq!(inside.2.into_iter().collect::<Vec<_>>(), vec!["y"]);
        let there: Tags = Runtime::new(log.clone()).open("s").unwrap();
        assert_eq!(
            there
                .snapshot()
                .await
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            vec!["x"]
        );
        assert_eq!(
            t.snapshot().await.unwrap().into_iter().collect::<Vec<_>>(),
            vec!["y"]
        );
    }

    #[test]
    fn write_keys_name_the_element_or_every_element() {
        type S = SetState<String>;
        let a = map_key(&"a".to_string());
        assert_ne!(a, map_key(&"b".to_string()));
        assert_eq!(S::write_keys(&SetOp::Insert { item: "a".into() }), vec![a]);
        assert_eq!(S::write_keys(&SetOp::Remove { item: "a".into() }), vec![a]);
        assert_eq!(S::write_keys(&SetOp::Clear), vec![ALL_KEYS]);
    }
}
