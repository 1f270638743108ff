//! [`ReplicatedMap`]: a sorted map replicated through its stream.

use std::borrow::Borrow;

use imbl::OrdMap;
use smr::{Address, Codec, Error, Handle, Object, StateMachine};

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
    K: Ord + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    MapOp<K, V>: Codec + Send,
{
    type Op = MapOp<K, V>;

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
