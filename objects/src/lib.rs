//! # objects: replicated data structures
//!
//! The top of the pipeline `corfu-core -> smr -> objects`: ready-made
//! replicated objects to embed in services. Each is a deterministic state
//! machine (an [`smr::StateMachine`]) whose updates are the entries of its
//! own stream in the shared log, with a typed handle offering methods in
//! the object's own terms. Open them with [`smr::Runtime::open`]:
//!
//! - [`ReplicatedMap<K, V>`]: `insert`, `remove`, `clear`, `get`,
//!   `contains_key`, `len`, `snapshot` (an O(1) persistent copy to
//!   iterate), `query`;
//! - [`ReplicatedCounter`]: `add`, `get`, `add_and_get` (fetch-and-add)
//!   and `compare_and_set`, whose outcomes are decided by log order;
//! - [`ReplicatedQueue<T>`]: `push`, `pop`, `peek`, `len`, `snapshot`; a
//!   pop is an op in the log and takes the item at the front **at its
//!   place in the log**, so each pushed item is popped at most once,
//!   whichever processes pop;
//! - [`ReplicatedRegister<T>`]: `set`, `get` and `compare_and_set`
//!   (decided by log order);
//! - [`ReplicatedSet<T>`]: `insert`, `remove`, `clear`, `contains`, `len`,
//!   `snapshot` (an O(1) persistent copy to iterate), `query`.
//!
//! Writes append one entry and return its address. Reads are linearizable:
//! they see every write acknowledged before they began, in any process.
//! Keys and values are any types that derive rkyv's `Archive`,
//! `Serialize` and `Deserialize`.
//!
//! ```
//! use objects::{ReplicatedCounter, ReplicatedMap, ReplicatedQueue};
//! use smr::{MemoryLog, Runtime};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), smr::Error> {
//! // Two runtimes sharing one log, like two processes sharing a cluster.
//! let log = MemoryLog::new();
//! let (here, there) = (Runtime::new(log.clone()), Runtime::new(log));
//!
//! let accounts: ReplicatedMap<String, u64> = here.open("accounts")?;
//! accounts.insert("alice".into(), 10).await?;
//! let seen: ReplicatedMap<String, u64> = there.open("accounts")?;
//! assert_eq!(seen.get("alice").await?, Some(10));
//!
//! let version: ReplicatedCounter = there.open("version")?;
//! assert!(version.compare_and_set(0, 1).await?);
//! let stale: ReplicatedCounter = here.open("version")?;
//! assert!(!stale.compare_and_set(0, 1).await?); // log order decides
//!
//! let jobs: ReplicatedQueue<String> = here.open("jobs")?;
//! jobs.push("build".into()).await?;
//! let worker: ReplicatedQueue<String> = there.open("jobs")?;
//! assert_eq!(worker.pop().await?.as_deref(), Some("build"));
//! assert_eq!(jobs.pop().await?, None); // taken once, by one pop
//! # Ok(()) }
//! ```
//!
//! All of them take part in transactions ([`smr::Runtime::transaction`])
//! through their `tx_` methods. A map's reads of one key and a set's reads
//! of one element conflict only with writes of that key or element (or a
//! `clear`); a counter and a register are read and written as a whole; a
//! queue's pushes and pops write different keys, so a transactional pop
//! of an item that was already queued does not conflict with later pushes
//! (the [`queue`] module docs give the rule).
//!
//! ```
//! use objects::{ReplicatedCounter, ReplicatedMap};
//! use smr::{MemoryLog, Runtime};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), smr::Error> {
//! let rt = Runtime::new(MemoryLog::new());
//! let stock: ReplicatedMap<String, u64> = rt.open("stock")?;
//! let sold: ReplicatedCounter = rt.open("sold")?;
//! stock.insert("apples".into(), 3).await?;
//!
//! // Sell an apple if there is one: the stock and the count change together.
//! let (stock_ref, sold_ref) = (&stock, &sold);
//! let key = "apples".to_string();
//! let key = &key;
//! let done = rt
//!     .transaction(|tx| async move {
//!         let left = stock_ref.tx_get(&tx, key).await?.unwrap_or(0);
//!         if left == 0 {
//!             return Ok(false);
//!         }
//!         stock_ref.tx_insert(&tx, key.clone(), left - 1)?;
//!         sold_ref.tx_add(&tx, 1)?;
//!         Ok(true)
//!     })
//!     .await?;
//! assert!(done);
//! assert_eq!(stock.get("apples").await?, Some(2));
//! assert_eq!(sold.get().await?, 1);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod counter;
pub mod map;
pub mod queue;
pub mod register;
pub mod set;

pub use counter::ReplicatedCounter;
pub use map::ReplicatedMap;
pub use queue::ReplicatedQueue;
pub use register::ReplicatedRegister;
pub use set::ReplicatedSet;
