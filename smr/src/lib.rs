//! # smr: the Tango runtime (state machine replication over the shared log)
//!
//! The middle of the pipeline `corfu-core -> smr -> objects`. A replicated
//! object is a deterministic state machine whose updates are the entries
//! of its own stream in the shared log; every process that opens it plays
//! that stream into an in-memory view (Tango, SOSP 2013, §3).
//!
//! Main types:
//!
//! - [`StateMachine`]: an object's state, with its update type `Op`
//!   (serialized with rkyv, see [`Codec`]) and the `apply` upcall;
//! - [`Runtime`]: opens objects by name over a [`SharedLog`] and keeps one
//!   view per object;
//! - [`Handle`]: `update` (append an op), `query` (sync, then read) and
//!   `update_and_read_prior` (append, then learn what the op found);
//! - [`Txn`]: one attempt of a transaction over several objects, run by
//!   [`Runtime::transaction`];
//! - [`SharedLog`]: what the runtime needs from the log, implemented by
//!   the real [`LogClient`](corfu_core::client::LogClient) and by
//!   [`MemoryLog`], an in-memory twin for tests and examples.
//!
//! ## Rules
//!
//! - **One stream per object.** Object `name` lives in the stream
//!   `StreamId::from_name(name)`; updates are appended to it and playback
//!   reads only it (Tango §3: a view never reads other objects' entries).
//! - **One view per object per runtime.** However many handles exist, they
//!   share one state, played once. Opening a name with a second state type
//!   is an error, not a second view.
//! - **Linearizable queries.** [`Handle::query`] asks the log for the
//!   stream's tail *after* it begins, plays every entry up to that tail,
//!   then reads. An update acknowledged before the query began was granted
//!   an address at or below that tail, and stream reads wait for (or
//!   complete) granted entries, so the query sees it, whichever runtime
//!   made it. (The view may have gone further than the tail; a later state
//!   is still one the log held while the query ran.)
//! - **Apply once, in order.** One playback at a time per view; callers
//!   that need the view while another playback runs wait for it and reuse
//!   what it applied. The state lock is never held across a log read, so a
//!   reader of a view that is already far enough along does not wait for
//!   the network. Playback reads at most
//!   [`RuntimeOptions::playback_batch_addresses`] addresses at a time.
//! - **Outcomes follow log order.** An update's outcome (did a
//!   compare-and-set take effect?) is decided where the op lands in the
//!   log, not when it is sent: [`Handle::update_and_read_prior`] appends,
//!   plays the stream up to the op and reports what the op found.
//!
//! ## Entries of another type, undecodable entries
//!
//! Every op in the log names its object type: [`StateMachine::TYPE`] (such
//! as `"corfu.queue"`) and [`StateMachine::VERSION`], in a small header
//! (transactions: once per object's part). An entry of an object's stream
//! whose type differs (the name is used by another kind of object, or a
//! program with another encoding version wrote it) is reported as
//! [`Error::WrongType`], naming the object, its stream, the address and
//! both types; one that is no entry of this runtime at all (raw bytes
//! appended with `corfu log append`, an op that does not decode) as
//! [`Error::Undecodable`]. Nothing of such an entry is applied, and the
//! view **stops before it for good**: every later query of that object in this
//! runtime returns the same error, and no panic ever occurs. Skipping the
//! entry would keep the object available, but silently: if the entry was an
//! acknowledged update of a newer program version, this view would diverge
//! from the views that can decode it. A stopped view is loud and never
//! wrong. The entry stays in the write-once log, so the object is usable
//! again only by a program that decodes it (or, once checkpoints exist, a
//! checkpoint beyond it). Other objects of the runtime are unaffected.
//! Writes check too: the first write through a view that has not played
//! an entry of its stream yet reads the stream's last entry and refuses
//! ([`Error::WrongType`], nothing appended) if it is of another type.
//!
//! ## Defining an object
//!
//! ```
//! use corfu_core::types::Address;
//! use rkyv::{Archive, Deserialize, Serialize};
//! use smr::{Handle, MemoryLog, Runtime, StateMachine};
//!
//! /// The updates of a register that remembers where it was last set.
//! #[derive(Archive, Serialize, Deserialize)]
//! enum RegisterOp {
//!     Set(String),
//! }
//!
//! #[derive(Default)]
//! struct Register {
//!     value: Option<String>,
//!     set_at: Option<Address>,
//! }
//!
//! impl StateMachine for Register {
//!     type Op = RegisterOp;
//!     const TYPE: &'static str = "example.register";
//!
//!     fn apply(&mut self, op: RegisterOp, address: Address) {
//!         match op {
//!             RegisterOp::Set(value) => {
//!                 self.value = Some(value);
//!                 self.set_at = Some(address);
//!             }
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), smr::Error> {
//! // Two runtimes sharing one log, like two processes sharing a cluster
//! // (over a cluster: `Runtime::new(LogClient::connect(&config).await?)`).
//! let log = MemoryLog::new();
//! let here = Runtime::new(log.clone());
//! let there = Runtime::new(log);
//!
//! let greeting: Handle<Register> = here.open("greeting")?;
//! let address = greeting.update(RegisterOp::Set("hello".into())).await?;
//!
//! let remote: Handle<Register> = there.open("greeting")?;
//! let (value, set_at) = remote.query(|r| (r.value.clone(), r.set_at)).await?;
//! assert_eq!(value.as_deref(), Some("hello"));
//! assert_eq!(set_at, Some(address));
//! # Ok(()) }
//! ```
//!
//! ## Transactions
//!
//! [`Runtime::transaction`] runs a closure over any objects of the runtime
//! as one optimistic transaction (Tango §4, rules in detail on [`Txn`]):
//!
//! - the snapshot is the log's tail when the attempt begins
//!   ([`Txn::snapshot`] is the last address seen); every read of the
//!   attempt ([`Txn::read`], [`Txn::read_keys`]) sees each object as of
//!   exactly that address, so reads of several objects are consistent;
//!   the views keep serving other readers and playback meanwhile. (A
//!   first attempt's first read may lower the snapshot to where its
//!   object's view already is, so it need not wait for commits still in
//!   flight; the commit's conflict check keeps that safe, and a read-only
//!   attempt that did so runs again from the tail.)
//! - reads put conflict keys in the read set: the whole object
//!   ([`WHOLE_OBJECT`]) or parts of it (a hash of a map key, see
//!   [`key_hash`]); writes ([`Txn::update`]) are buffered, applied to the
//!   transaction's own copy of the object, and put
//!   [`StateMachine::write_keys`] and [`WHOLE_OBJECT`] in the write set;
//! - commit appends **one** entry (kind 3) to the stream of every object
//!   written, holding each object's ops, with a conditional token: the log
//!   refuses it if a key of the read set was written after the snapshot.
//!   Refused, nothing is in the log and the closure runs again from a new
//!   snapshot, up to [`RuntimeOptions::transaction_retries`] times, then
//!   [`Error::Aborted`]. A transaction that wrote nothing appends nothing.
//!
//! **Every write carries its conflict keys.** The log's conflict check
//! only knows keys written by conditional appends, so a transaction could
//! not see a write made by a plain append. Therefore every write through
//! the runtime is a conditional append: [`Handle::update`] and
//! [`Handle::update_and_read_prior`] use a condition with an empty read set
//! (it never aborts) and the op's write keys, whether or not the object is
//! ever used in a transaction. The rule has no exception, so no object can
//! be written in a way transactions miss; the cost is a few keys per
//! append in the sequencer's conflict table. (Entries appended to an
//! object's stream by other means, such as `corfu log append`, carry no
//! keys: transactions do not see them as conflicts.)
//!
//! ```
//! use corfu_core::types::Address;
//! use rkyv::{Archive, Deserialize, Serialize};
//! use smr::{Handle, MemoryLog, Runtime, StateMachine};
//!
//! /// A balance.
//! #[derive(Default, Clone)]
//! struct Account(i64);
//!
//! #[derive(Archive, Serialize, Deserialize)]
//! struct Set(i64);
//!
//! impl StateMachine for Account {
//!     type Op = Set;
//!     const TYPE: &'static str = "example.account";
//!
//!     fn apply(&mut self, op: Set, _: Address) {
//!         self.0 = op.0;
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), smr::Error> {
//! let rt = Runtime::new(MemoryLog::new());
//! let alice: Handle<Account> = rt.open("alice")?;
//! let bob: Handle<Account> = rt.open("bob")?;
//! alice.update(Set(10)).await?;
//!
//! // Move 7 from alice to bob, if alice has it: both or neither.
//! let (a, b) = (&alice, &bob);
//! let moved = rt
//!     .transaction(|tx| async move {
//!         let from = tx.read(a, |s| s.0).await?;
//!         let to = tx.read(b, |s| s.0).await?;
//!         if from < 7 {
//!             return Ok(false); // nothing written: nothing appended
//!         }
//!         tx.update(a, Set(from - 7))?;
//!         tx.update(b, Set(to + 7))?;
//!         Ok(true)
//!     })
//!     .await?;
//! assert!(moved);
//! assert_eq!(alice.query(|s| s.0).await?, 3);
//! assert_eq!(bob.query(|s| s.0).await?, 7);
//! # Ok(()) }
//! ```
//!
//! Not here yet: checkpoints (and with them prefix trim under live
//! objects), and playback batched across objects.

#![warn(missing_docs)]

mod codec;
mod error;
mod keys;
mod log;
mod memory;
mod object;
mod record;
mod runtime;
mod txn;
mod view;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod txn_tests;

pub use codec::{Codec, CodecError};
pub use corfu_core::types::{Address, StreamId};
pub use corfu_core::wire::sequencer::ConflictKey;
pub use error::Error;
pub use keys::{hash_bytes, key_hash, WHOLE_OBJECT};
pub use log::SharedLog;
pub use memory::MemoryLog;
pub use object::{Object, StateMachine};
pub use runtime::{
    Handle, Runtime, RuntimeOptions, PLAYBACK_BATCH_ADDRESSES_DEFAULT, TRANSACTION_RETRIES_DEFAULT,
};
pub use txn::{TransactionStats, Txn};
