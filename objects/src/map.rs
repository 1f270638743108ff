//! [`ReplicatedMap`]: a sorted map replicated through its stream.

use std::borrow::Borrow;

use imbl::OrdMap;
use smr::{key_hash, Address, Codec, Error, Handle, Object, StateMachine, Txn};

pub use ops::MapOp;

mod ops {
    // rkyv's derive generates resolver types whose fields carry no docs;
    // every item written here is documented by hand.
    #![allow(missing_docs)]

    use rkyv::{Archive, Deserialize, Serialize};

    /// An update of a [`ReplicatedMap`](super::ReplicatedMap).
    #[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub enum MapOp<K, V> {
        /// Sets `key` to `value`, replacing any earlier value.
        Insert {
            /// The key.
            key: K,
            /// Its new value.
            value: V,
        },
        /// Removes `key` (a no-op if absent).
        Remove {
            /// The key.
            key: K,
        },
        /// Removes every key.
        Clear,
    }
}

/// The conflict key of a map's every key: written by [`MapOp::Clear`]
/// (and by an op whose key cannot be hashed), read by every transactional
/// read of one key, so a read of any key conflicts with a later clear.
pub const ALL_KEYS: u64 = 1;

/// The conflict key of one key of a map: [`key_hash`] of it, or
/// [`ALL_KEYS`] if it cannot be archived (a coarser, still correct key).
pub fn map_key<K: Codec>(key: &K) -> u64 {
    key_hash(key).unwrap_or(ALL_KEYS)
}

/// The state of a [`ReplicatedMap`]: a persistent sorted map, so a copy of
/// it (a snapshot) costs O(1) and shares structure with the view.
#[derive(Debug, Clone)]
pub struct MapState<K: Ord + Clone, V: Clone> {
    entries: OrdMap<K, V>,
}

impl<K: Ord + Clone, V: Clone> Default for MapState<K, V> {
    fn default() -> Self {
        MapState {
            entries: OrdMap::new(),
        }
    }
}

impl<K: Ord + Clone, V: Clone> MapState<K, V> {
    /// The map's entries.
    pub fn entries(&self) -> &OrdMap<K, V> {
        &self.entries
    }
}

impl<K, V> StateMachine for MapState<K, V>
where
    K: Ord + Clone + Codec + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    MapOp<K, V>: Codec + Send,
{
    type Op = MapOp<K, V>;
    const TYPE: &'static str = "corfu.map";

    /// `insert` and `remove` write their key's [`map_key`]; `clear`
    /// writes [`ALL_KEYS`].
    fn write_keys(op: &MapOp<K, V>) -> Vec<u64> {
        match op {
            MapOp::Insert { key, .. } | MapOp::Remove { key } => vec![map_key(key)],
            MapOp::Clear => vec![ALL_KEYS],
        }
    }

    fn apply(&mut self, op: MapOp<K, V>, _address: Address) {
        match op {
            MapOp::Insert { key, value } => {
                self.entries.insert(key, value);
            }
            MapOp::Remove { key } => {
                self.entries.remove(&key);
            }
            MapOp::Clear => self.entries.clear(),
        }
    }
}

/// A map from `K` to `V` replicated through the shared log. Keys are
/// sorted (`K: Ord`); keys and values are any types rkyv can archive.
///
/// Writes (`insert`, `remove`, `clear`) append one entry and return its
/// address; they do not wait for the local view. Reads sync the view to
/// the stream's tail first, so they see every write acknowledged before
/// they began, in any runtime (linearizable).
///
/// In a transaction ([`smr::Runtime::transaction`]) use the `tx_` methods:
/// [`tx_get`](Self::tx_get) and [`tx_contains_key`](Self::tx_contains_key)
/// read one key (a conflict only with writes of that key or a clear),
/// [`tx_snapshot`](Self::tx_snapshot) reads the whole map (a conflict with
/// any write), and [`tx_insert`](Self::tx_insert),
/// [`tx_remove`](Self::tx_remove) and [`tx_clear`](Self::tx_clear) buffer
/// writes.
pub struct ReplicatedMap<K, V>
where
    MapState<K, V>: StateMachine,
    K: Ord + Clone,
    V: Clone,
{
    handle: Handle<MapState<K, V>>,
}

impl<K, V> Clone for ReplicatedMap<K, V>
where
    MapState<K, V>: StateMachine,
    K: Ord + Clone,
    V: Clone,
{
    fn clone(&self) -> Self {
        ReplicatedMap {
            handle: self.handle.clone(),
        }
    }
}

impl<K, V> std::fmt::Debug for ReplicatedMap<K, V>
where
    MapState<K, V>: StateMachine,
    K: Ord + Clone,
    V: Clone,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicatedMap")
            .field("object", &self.handle.name())
            .finish()
    }
}

impl<K, V> Object for ReplicatedMap<K, V>
where
    MapState<K, V>: StateMachine,
    K: Ord + Clone,
    V: Clone,
{
    type State = MapState<K, V>;

    fn from_handle(handle: Handle<MapState<K, V>>) -> Self {
        ReplicatedMap { handle }
    }
}

impl<K, V> ReplicatedMap<K, V>
where
    MapState<K, V>: StateMachine<Op = MapOp<K, V>>,
    K: Ord + Clone,
    V: Clone,
{
    /// The runtime handle behind the map.
    pub fn handle(&self) -> &Handle<MapState<K, V>> {
        &self.handle
    }

    /// Sets `key` to `value`.
    pub async fn insert(&self, key: K, value: V) -> Result<Address, Error> {
        self.handle.update(MapOp::Insert { key, value }).await
    }

    /// Removes `key` (an entry is appended even if the key is absent).
    pub async fn remove(&self, key: K) -> Result<Address, Error> {
        self.handle.update(MapOp::Remove { key }).await
    }

    /// Removes every key.
    pub async fn clear(&self) -> Result<Address, Error> {
        self.handle.update(MapOp::Clear).await
    }

    /// The value of `key`.
    pub async fn get<Q>(&self, key: &Q) -> Result<Option<V>, Error>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.handle.query(|map| map.entries.get(key).cloned()).await
    }

    /// Whether `key` is present.
    pub async fn contains_key<Q>(&self, key: &Q) -> Result<bool, Error>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.handle.query(|map| map.entries.contains_key(key)).await
    }

    /// The number of keys.
    pub async fn len(&self) -> Result<usize, Error> {
        self.handle.query(|map| map.entries.len()).await
    }

    /// Whether the map has no key.
    pub async fn is_empty(&self) -> Result<bool, Error> {
        self.handle.query(|map| map.entries.is_empty()).await
    }

    /// The whole map as of now: an O(1) copy sharing structure with the
    /// view, to iterate (in key order) or keep without holding the view.
    pub async fn snapshot(&self) -> Result<OrdMap<K, V>, Error> {
        self.handle.query(|map| map.entries.clone()).await
    }

    /// Runs `read` on the map as of now (for range scans and other reads
    /// without a copy). It runs under the view's read lock: keep it short.
    pub async fn query<R>(&self, read: impl FnOnce(&OrdMap<K, V>) -> R) -> Result<R, Error> {
        self.handle.query(|map| read(&map.entries)).await
    }

    /// In transaction `tx`: the value of `key` as of the snapshot (with
    /// the transaction's own writes). Reads the key's conflict key and
    /// [`ALL_KEYS`].
    pub async fn tx_get(&self, tx: &Txn, key: &K) -> Result<Option<V>, Error>
    where
        K: Codec,
    {
        tx.read_keys(&self.handle, &[map_key(key), ALL_KEYS], |map| {
            map.entries.get(key).cloned()
        })
        .await
    }

    /// In transaction `tx`: whether `key` is present as of the snapshot.
    /// Reads the same conflict keys as [`tx_get`](Self::tx_get).
    pub async fn tx_contains_key(&self, tx: &Txn, key: &K) -> Result<bool, Error>
    where
        K: Codec,
    {
        tx.read_keys(&self.handle, &[map_key(key), ALL_KEYS], |map| {
            map.entries.contains_key(key)
        })
        .await
    }

    /// In transaction `tx`: the whole map as of the snapshot (an O(1)
    /// copy). Reads the whole object: any later write of the map makes
    /// the commit abort.
    pub async fn tx_snapshot(&self, tx: &Txn) -> Result<OrdMap<K, V>, Error> {
        tx.read(&self.handle, |map| map.entries.clone()).await
    }

    /// In transaction `tx`: sets `key` to `value` when it commits.
    pub fn tx_insert(&self, tx: &Txn, key: K, value: V) -> Result<(), Error> {
        tx.update(&self.handle, MapOp::Insert { key, value })
    }

    /// In transaction `tx`: removes `key` when it commits.
    pub fn tx_remove(&self, tx: &Txn, key: K) -> Result<(), Error> {
        tx.update(&self.handle, MapOp::Remove { key })
    }

    /// In transaction `tx`: removes every key when it commits.
    pub fn tx_clear(&self, tx: &Txn) -> Result<(), Error> {
        tx.update(&self.handle, MapOp::Clear)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smr::{MemoryLog, Runtime};

    type Accounts = ReplicatedMap<String, u64>;

    #[tokio::test]
    async fn operations_are_seen_by_every_runtime() {
        let log = MemoryLog::new();
        let a: Accounts = Runtime::new(log.clone()).open("accounts").unwrap();
        let b: Accounts = Runtime::new(log.clone()).open("accounts").unwrap();
        assert!(a.is_empty().await.unwrap());

        a.insert("alice".into(), 10).await.unwrap();
        b.insert("bob".into(), 20).await.unwrap();
        a.insert("alice".into(), 11).await.unwrap();
        assert_eq!(b.get("alice").await.unwrap(), Some(11));
        assert_eq!(a.get("bob").await.unwrap(), Some(20));
        assert_eq!(a.get("carol").await.unwrap(), None);
        assert!(b.contains_key("alice").await.unwrap());
        assert_eq!(b.len().await.unwrap(), 2);

        b.remove("alice".into()).await.unwrap();
        b.remove("nobody".into()).await.unwrap();
        assert!(!a.contains_key("alice").await.unwrap());
        let snapshot = a.snapshot().await.unwrap();
        assert_eq!(
            snapshot.into_iter().collect::<Vec<_>>(),
            vec![("bob".to_string(), 20)]
        );
        let total = a.query(|m| m.values().sum::<u64>()).await.unwrap();
        assert_eq!(total, 20);

        a.clear().await.unwrap();
        assert!(b.is_empty().await.unwrap());
    }

    #[tokio::test]
    async fn a_snapshot_is_unaffected_by_later_updates() {
        let rt = Runtime::new(MemoryLog::new());
        let m: ReplicatedMap<u32, Vec<u8>> = rt.open("blobs").unwrap();
        m.insert(1, vec![1]).await.unwrap();
        let before = m.snapshot().await.unwrap();
        m.insert(2, vec![2]).await.unwrap();
        m.remove(1).await.unwrap();
        assert_eq!(before.get(&1), Some(&vec![1]));
        assert_eq!(before.len(), 1);
        assert_eq!(
            m.snapshot().await.unwrap().into_iter().collect::<Vec<_>>(),
            vec![(2, vec![2])]
        );
    }

    /// Runs one transaction that reads `read` (by key, or the whole map
    /// if `None`) in `m`; between its snapshot and its commit, `meddle`
    /// writes through `other`, on the first attempt only. Returns how many
    /// attempts it took.
    async fn attempts_with_meddling(
        rt: &Runtime,
        m: &Accounts,
        other: &Accounts,
        read: Option<&str>,
        meddle: MapOp<String, u64>,
    ) -> u32 {
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let (attempts_ref, meddle) = (&attempts, &meddle);
        let read = read.map(str::to_string);
        let read = &read;
        rt.transaction(|tx| async move {
            let n = attempts_ref.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let seen = match read {
                Some(key) => m.tx_get(&tx, key).await?.unwrap_or(0),
                None => m.tx_snapshot(&tx).await?.values().sum(),
            };
            if n == 0 {
                other.handle().update(meddle.clone()).await?;
            }
            m.tx_insert(&tx, "seen".into(), seen)?;
            Ok(())
        })
        .await
        .unwrap();
        attempts.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[tokio::test]
    async fn transactions_conflict_per_key_and_with_clear() {
        let log = MemoryLog::new();
        let rt = Runtime::new(log.clone());
        let m: Accounts = rt.open("accounts").unwrap();
        let other: Accounts = Runtime::new(log.clone()).open("accounts").unwrap();
        let insert = |key: &str| MapOp::Insert {
            key: key.to_string(),
            value: 5,
        };
        // Another key written after the snapshot: no conflict.
        assert_eq!(
            attempts_with_meddling(&rt, &m, &other, Some("a"), insert("b")).await,
            1
        );
        // The key read: conflict.
        assert_eq!(
            attempts_with_meddling(&rt, &m, &other, Some("a"), insert("a")).await,
            2
        );
        assert_eq!(m.get("seen").await.unwrap(), Some(5), "the retry saw it");
        assert_eq!(
            attempts_with_meddling(
                &rt,
                &m,
                &other,
                Some("a"),
                MapOp::Remove { key: "a".into() }
            )
            .await,
            2
        );
        // A clear writes every key.
        m.insert("a".into(), 1).await.unwrap();
        assert_eq!(
            attempts_with_meddling(&rt, &m, &other, Some("a"), MapOp::Clear).await,
            2
        );
        assert_eq!(m.get("seen").await.unwrap(), Some(0));
        // A whole-map read conflicts with a write of any key.
        assert_eq!(
            attempts_with_meddling(&rt, &m, &other, None, insert("zz")).await,
            2
        );
        assert_eq!(m.get("seen").await.unwrap(), Some(5));
    }

    #[tokio::test]
    async fn transactional_writes_commit_together_and_are_read_back() {
        let log = MemoryLog::new();
        let rt = Runtime::new(log.clone());
        let m: Accounts = rt.open("m").unwrap();
        let n: Accounts = rt.open("n").unwrap();
        m.insert("gone".into(), 1).await.unwrap();
        let (m_ref, n_ref) = (&m, &n);
        let inside = rt
            .transaction(|tx| async move {
                m_ref.tx_insert(&tx, "x".into(), 1)?;
                m_ref.tx_remove(&tx, "gone".into())?;
                n_ref.tx_clear(&tx)?;
                n_ref.tx_insert(&tx, "y".into(), 2)?;
                Ok((
                    m_ref.tx_get(&tx, &"x".to_string()).await?,
                    m_ref.tx_contains_key(&tx, &"gone".to_string()).await?,
                    n_ref.tx_snapshot(&tx).await?.len(),
                ))
            })
            .await
            .unwrap();
        assert_eq!(inside, (Some(1), false, 1));
        let there: Accounts = Runtime::new(log.clone()).open("m").unwrap();
        assert_eq!(
            there
                .snapshot()
                .await
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            vec![("x".to_string(), 1)]
        );
        assert_eq!(n.get("y").await.unwrap(), Some(2));
    }

    #[test]
    fn write_keys_name_the_key_or_every_key() {
        type S = MapState<String, u64>;
        let a = map_key(&"a".to_string());
        assert_ne!(a, map_key(&"b".to_string()));
        assert_eq!(
            S::write_keys(&MapOp::Insert {
                key: "a".into(),
                value: 1
            }),
            vec![a]
        );
        assert_eq!(S::write_keys(&MapOp::Remove { key: "a".into() }), vec![a]);
        assert_eq!(S::write_keys(&MapOp::Clear), vec![ALL_KEYS]);
    }

    #[tokio::test]
    async fn the_same_name_cannot_be_a_map_of_other_types() {
        let rt = Runtime::new(MemoryLog::new());
        let _: ReplicatedMap<String, u64> = rt.open("m").unwrap();
        assert!(matches!(
            rt.open::<ReplicatedMap<String, String>>("m"),
            Err(Error::TypeMismatch { .. })
        ));
    }
}
