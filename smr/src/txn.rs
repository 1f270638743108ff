//! Transactions over several objects (Tango §4): optimistic, with the
//! conflict check done by the log's sequencer at commit.
//!
//! - **Snapshot.** An attempt begins by reading the log's tail `t`; its
//!   snapshot is `t - 1`, the last address it has seen. Every object it
//!   reads is read as of that address exactly: every entry of the object's
//!   stream below `t` applied, none above (see `View::state_at`). Reads of
//!   several objects are therefore consistent with each other.
//! - **The first attempt reads from where the views are.** Entries below
//!   the tail may still be on their way down their chains (other commits
//!   in flight), and reading at the tail would wait for them. So the first
//!   read of a first attempt may lower the snapshot to the point its
//!   object's view has already applied (and moves the view on in the
//!   background). This costs no correctness: a commit from that snapshot
//!   is refused if anything it read was written after it, so a committed
//!   transaction read what was current at its commit; and a read-only
//!   attempt from a lowered snapshot, which has no commit to check, is run
//!   again from the tail before its result is returned. Retries always
//!   read at the tail.
//! - **No replay from the start.** An attempt's snapshot is registered
//!   with the runtime while it lives, and every view keeps a copy of its
//!   state at or below the oldest registered snapshot (see `view.rs`), so
//!   a read never rebuilds an object from the start of its stream (long,
//!   or trimmed). A view no transaction read before keeps no copies; if a
//!   query moved it past the snapshot, the read fails, and the attempt
//!   runs again from the tail (a rerun, not an abort; at most
//!   16 per call).
//! - **Read set, write set.** Each read names conflict keys of its object
//!   (the whole object, or parts of it); each buffered write names the
//!   keys its op writes ([`StateMachine::write_keys`] plus the whole-object
//!   key). Writes are buffered and applied to the transaction's private
//!   copy of the object, so the transaction reads its own writes.
//! - **Commit.** A transaction that wrote nothing appends nothing: its
//!   reads were one consistent snapshot, so it is serializable at it. One
//!   that wrote appends one transaction entry to the stream of every object
//!   it wrote, conditionally: the log grants it only if no key of the read
//!   set was written after the snapshot, and then records the write set at
//!   the entry's address. Granted, every view applies its part of the entry
//!   when it plays it; refused, nothing is in the log and the attempt is
//!   run again from a new snapshot.

use std::any::Any;
use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use corfu_core::client::ClientError;
use corfu_core::types::{Address, StreamId};
use corfu_core::wire::sequencer::{ConflictKey, TxnCondition};

use crate::codec::Codec;
use crate::error::Error;
use crate::keys::WHOLE_OBJECT;
use crate::object::StateMachine;
use crate::record::{self, ObjectType};
use crate::runtime::{conflict_keys, Handle, Runtime, RuntimeInner};
use crate::view::{SnapshotPin, WriteCheck};

/// How many times one call of [`Runtime::transaction`] runs its body again
/// because a view was past the attempt's snapshot without a version at or
/// below it (see [`Txn::read`]); beyond, the read's error is returned.
const MISSED_SNAPSHOT_RERUNS: u32 = 16;

/// One attempt of a transaction, handed to the body given to
/// [`Runtime::transaction`]: reads objects as of its snapshot and buffers
/// writes. Cheap to clone (clones are the same attempt), so the body can
/// take it by value and still use it in several places.
///
/// Once the body has returned, the attempt is over: using a kept clone is
/// [`Error::Transaction`].
#[derive(Clone)]
pub struct Txn {
    runtime: Arc<RuntimeInner>,
    state: Arc<Mutex<TxnState>>,
}

#[derive(Default)]
struct TxnState {
    /// Every entry below it is in the snapshot, none at or above it: the
    /// log's tail when the attempt began, or lower if the first read fixed
    /// it at the point its object's view had reached (see `lowerable`).
    tail: Address,
    /// Until the first read: the snapshot may be lowered to where the
    /// first object read already is, so the attempt need not wait for
    /// entries still being written below the tail.
    lowerable: bool,
    /// The snapshot was lowered below the tail the attempt began at.
    lowered: bool,
    /// The attempt's snapshot, registered with the runtime so that every
    /// view keeps a version at or below it while the attempt lives.
    pin: Option<SnapshotPin>,
    /// A read found its object's view past the snapshot with no version
    /// at or below it: the attempt runs again from the tail.
    missed: bool,
    finished: bool,
    /// Per object read or written: a `TxObject<T>`.
    objects: BTreeMap<StreamId, Box<dyn Any + Send>>,
    read_set: HashSet<ConflictKey>,
    write_set: HashSet<ConflictKey>,
    /// Per object written: its ops, encoded, in the order issued.
    writes: BTreeMap<StreamId, Written>,
}

/// What a transaction writes to one object.
struct Written {
    /// The object's type, written in its part of the commit.
    ty: ObjectType,
    /// Its ops, encoded, in the order issued.
    ops: Vec<Vec<u8>>,
    /// The view's check before a first write.
    check: Arc<dyn WriteCheck>,
}

/// What a transaction holds of one object.
struct TxObject<T: StateMachine> {
    /// The private copy of the state at the snapshot, with the
    /// transaction's own writes applied; `None` until first read.
    state: Option<T>,
    /// Writes issued before the first read, applied when the state is
    /// loaded.
    pending: Vec<T::Op>,
}

impl std::fmt::Debug for Txn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Txn")
            .field("snapshot", &self.snapshot())
            .field("objects", &state.objects.len())
            .field("read_keys", &state.read_set.len())
            .field("written_objects", &state.writes.len())
            .finish()
    }
}

impl Txn {
    fn lock(&self) -> MutexGuard<'_, TxnState> {
        // Nothing that can panic runs under the lock except `read`
        // closures; the attempt is then abandoned with the panic anyway.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The snapshot: the last address of the log this attempt has seen
    /// (inclusive). Every read of the attempt is as of this address.
    pub fn snapshot(&self) -> Address {
        self.lock().tail.saturating_sub(1)
    }

    fn check<T: StateMachine>(&self, handle: &Handle<T>, state: &TxnState) -> Result<(), Error> {
        let misuse = |reason: &str| Error::Transaction {
            object: handle.name().to_string(),
            reason: reason.to_string(),
        };
        if state.finished {
            return Err(misuse("the transaction is over (its body returned)"));
        }
        if !Arc::ptr_eq(&self.runtime, &handle.runtime) {
            return Err(misuse(
                "the handle belongs to another runtime than the transaction",
            ));
        }
        Ok(())
    }

    /// Runs `read` on the object as of the snapshot (with this
    /// transaction's own writes applied) and puts the whole object in the
    /// read set: the commit aborts if anything wrote the object after the
    /// snapshot. The state type must be cloneable; for persistent states
    /// (`imbl`) the copy the transaction keeps is O(1).
    ///
    /// The state at the snapshot is never rebuilt from the start of the
    /// object's stream. If the view has moved past the snapshot before any
    /// transaction of this runtime read it (so it kept no past state), the
    /// read fails with [`Error::Transaction`] and
    /// [`Runtime::transaction`] runs the body again from the log's tail,
    /// whatever the body did with the error (counted as a rerun).
    pub async fn read<T, R>(
        &self,
        handle: &Handle<T>,
        read: impl FnOnce(&T) -> R,
    ) -> Result<R, Error>
    where
        T: StateMachine + Clone,
    {
        self.read_keys(handle, &[WHOLE_OBJECT], read).await
    }

    /// Like [`read`](Self::read), but puts only `keys` in the read set:
    /// the parts of the object `read` looks at (for a map, a hash of the
    /// key read, plus the key its `clear` writes). The caller is
    /// responsible for naming every part `read` depends on, with the same
    /// hashes the object's [`StateMachine::write_keys`] uses.
    pub async fn read_keys<T, R>(
        &self,
        handle: &Handle<T>,
        keys: &[u64],
        read: impl FnOnce(&T) -> R,
    ) -> Result<R, Error>
    where
        T: StateMachine + Clone,
    {
        let stream = handle.view.stream;
        let (loaded, tail) = {
            let mut state = self.lock();
            self.check(handle, &state)?;
            if std::mem::take(&mut state.lowerable) {
                // The first read fixes the snapshot: where this object's
                // view already is, if that is below the tail (nothing to
                // wait for), and the view is moved on in the background.
                let applied = handle.view.applied()?;
                if applied > 0 && applied < state.tail {
                    // Registered before the view moves on: it keeps its
                    // version at `applied`.
                    if let Some(pin) = state.pin.as_mut() {
                        pin.move_to(applied);
                    }
                    handle
                        .view
                        .advance_in_background(self.runtime.log.clone(), state.tail);
                    state.tail = applied;
                    state.lowered = true;
                }
            }
            let loaded = object::<T>(&state, stream)?.is_some_and(|o| o.state.is_some());
            (loaded, state.tail)
        };
        let fresh = if loaded {
            None
        } else {
            match handle
                .view
                .state_at(self.runtime.log.as_ref(), tail, T::clone)
                .await?
            {
                Some(state) => Some(state),
                None => {
                    // The view is past the snapshot and keeps nothing at
                    // or below it (no transaction had read it before, or
                    // the snapshot was lowered below what it kept). The
                    // attempt runs again from the tail, whatever the body
                    // does with this error; the view keeps versions from
                    // now on.
                    self.lock().missed = true;
                    return Err(missed_snapshot(handle.name(), tail));
                }
            }
        };
        let mut state = self.lock();
        self.check(handle, &state)?;
        let provisional = state.tail;
        let entry = object_mut::<T>(&mut state, stream)?;
        if entry.state.is_none() {
            // Loaded by us (or, if another read of this attempt loaded it
            // meanwhile, that copy already holds the pending writes).
            if let Some(mut copy) = fresh {
                for op in entry.pending.drain(..) {
                    copy.apply(op, provisional);
                }
                entry.state = Some(copy);
            }
        }
        let Some(copy) = entry.state.as_ref() else {
            return Err(Error::Transaction {
                object: handle.name().to_string(),
                reason: "the object's state was not loaded".into(),
            });
        };
        let result = read(copy);
        state.read_set.extend(
            keys.iter()
                .map(|&key_hash| ConflictKey { stream, key_hash }),
        );
        Ok(result)
    }

    /// Buffers `op` for the object: it is appended with the transaction's
    /// commit, and applied right away to the transaction's copy of the
    /// object (if it has one), so later reads of this attempt see it. Its
    /// conflict keys ([`StateMachine::write_keys`] and the whole object)
    /// join the write set. A write alone reads nothing: it never makes the
    /// commit abort.
    pub fn update<T>(&self, handle: &Handle<T>, op: T::Op) -> Result<(), Error>
    where
        T: StateMachine,
    {
        let stream = handle.view.stream;
        let mut encoded = Vec::new();
        op.encode_into(&mut encoded)
            .map_err(|e| handle.encode_error(e))?;
        let keys = conflict_keys(stream, T::write_keys(&op));
        let mut state = self.lock();
        self.check(handle, &state)?;
        let provisional = state.tail;
        let entry = object_mut::<T>(&mut state, stream)?;
        match entry.state.as_mut() {
            Some(copy) => copy.apply(op, provisional),
            None => entry.pending.push(op),
        }
        state.write_set.extend(keys);
        state
            .writes
            .entry(stream)
            .or_insert_with(|| Written {
                ty: ObjectType::of::<T>(),
                ops: Vec::new(),
                check: handle.view.clone(),
            })
            .ops
            .push(encoded);
        Ok(())
    }
}

/// The error a read gets when its object's view keeps no state at the
/// snapshot (the attempt is then run again).
fn missed_snapshot(object: &str, tail: Address) -> Error {
    Error::Transaction {
        object: object.to_string(),
        reason: format!(
            "the object's view is past the snapshot (below {tail}) and keeps no state there; \
             the transaction runs again from the log's tail"
        ),
    }
}

fn object<T: StateMachine>(
    state: &TxnState,
    stream: StreamId,
) -> Result<Option<&TxObject<T>>, Error> {
    match state.objects.get(&stream) {
        None => Ok(None),
        Some(any) => any
            .downcast_ref::<TxObject<T>>()
            .map(Some)
            .ok_or_else(|| stream_clash(stream)),
    }
}

fn object_mut<T: StateMachine>(
    state: &mut TxnState,
    stream: StreamId,
) -> Result<&mut TxObject<T>, Error> {
    state
        .objects
        .entry(stream)
        .or_insert_with(|| {
            Box::new(TxObject::<T> {
                state: None,
                pending: Vec::new(),
            })
        })
        .downcast_mut::<TxObject<T>>()
        .ok_or_else(|| stream_clash(stream))
}

/// Two objects of one runtime with different state types share a stream
/// only if their names' 128-bit hashes collide.
fn stream_clash(stream: StreamId) -> Error {
    Error::Transaction {
        object: stream.to_string(),
        reason: "two objects of different types share this stream".into(),
    }
}

/// Counts of a runtime's transactions since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransactionStats {
    /// Transactions committed (with at least one write).
    pub commits: u64,
    /// Attempts refused because something they read was written after
    /// their snapshot (each is retried or ends in [`Error::Aborted`]).
    pub aborts: u64,
    /// Extra runs of a transaction's body after a first attempt that read
    /// from behind the tail: read-only ones (always run again from the
    /// tail) and refused ones. Not aborts.
    pub reruns: u64,
}

/// The counters behind [`TransactionStats`].
#[derive(Debug, Default)]
pub(crate) struct StatsCounters {
    pub(crate) commits: std::sync::atomic::AtomicU64,
    pub(crate) aborts: std::sync::atomic::AtomicU64,
    pub(crate) reruns: std::sync::atomic::AtomicU64,
}

impl Runtime {
    /// How many transactions this runtime committed, how many attempts
    /// were refused for a conflict, and how many extra runs reading from
    /// behind the tail cost.
    pub fn transaction_stats(&self) -> TransactionStats {
        let s = &self.inner.stats;
        TransactionStats {
            commits: s.commits.load(Ordering::Relaxed),
            aborts: s.aborts.load(Ordering::Relaxed),
            reruns: s.reruns.load(Ordering::Relaxed),
        }
    }

    /// Runs `body` as a transaction over any objects of this runtime, and
    /// commits it; returns what the body returned once the commit is
    /// granted (or at once, for a transaction that wrote nothing).
    ///
    /// `body` gets a fresh [`Txn`] per attempt and returns a future; read
    /// with [`Txn::read`] (or an object's transactional methods) and write
    /// with [`Txn::update`]. If the log refuses the commit because
    /// something the transaction read was written after its snapshot,
    /// `body` runs again from a new snapshot, up to
    /// [`RuntimeOptions::transaction_retries`](crate::RuntimeOptions::transaction_retries)
    /// times; then the result is [`Error::Aborted`]. (`body` may also run
    /// once more when a first attempt read from behind the tail and missed;
    /// see the module docs: that is not an abort, and is counted apart in
    /// [`Runtime::transaction_stats`].) Nothing of a refused
    /// attempt is in the log. `body` must therefore have no effect outside
    /// the transaction that it would be wrong to repeat.
    ///
    /// If `body` returns an error, the attempt is dropped (nothing is
    /// appended) and the error is returned, without a retry. To refuse a
    /// transaction on a business rule, return `Ok` with a value saying so,
    /// and write nothing.
    ///
    /// An error of the log during the commit ([`Error::Log`]) leaves the
    /// outcome unknown: the entry may or may not be in the log. A commit
    /// naming more keys than the sequencer's `txn_keys_max` fails with
    /// [`Error::TooManyKeys`] (nothing was appended).
    pub async fn transaction<R, F, Fut>(&self, mut body: F) -> Result<R, Error>
    where
        F: FnMut(Txn) -> Fut,
        Fut: Future<Output = Result<R, Error>>,
    {
        let log = self.inner.log.as_ref();
        let log_error = |source| Error::Log {
            object: "(transaction)".to_string(),
            source,
        };
        let attempts = self.inner.options.transaction_retries.saturating_add(1);
        let mut attempt = 0;
        // The first attempt may read from where the views already are.
        let mut lowerable = true;
        // The lowest snapshot the log will accept, as far as we know.
        let mut floor: Address = 0;
        let mut missed = 0;
        loop {
            attempt += 1;
            // Registered before the tail is read, so no view drops the
            // version this attempt will need (see `Snapshots::pin`).
            let mut pin = self.inner.snapshots.pin();
            let mut tail = log.tail().await.map_err(log_error)?;
            if tail == 0 || tail <= floor {
                // A snapshot is an address the transaction has seen, and an
                // empty log has none; and a snapshot below the log's floor
                // is refused however often it is retried (after a
                // sequencer failover the floor is the tail). Either way,
                // move the tail on with an empty entry of no stream.
                // (Without it, a conflicting write at address 0 could not
                // be told from one at the snapshot.)
                log.append(Vec::new(), &[]).await.map_err(log_error)?;
                tail = log.tail().await.map_err(log_error)?;
            }
            pin.move_to(tail);
            let txn = Txn {
                runtime: self.inner.clone(),
                state: Arc::new(Mutex::new(TxnState {
                    tail,
                    lowerable: std::mem::take(&mut lowerable),
                    pin: Some(pin),
                    ..TxnState::default()
                })),
            };
            let result = body(txn.clone()).await;
            let state = {
                let mut state = txn.lock();
                let taken = std::mem::take(&mut *state);
                state.finished = true;
                taken
            };
            if state.missed {
                missed += 1;
                if missed <= MISSED_SNAPSHOT_RERUNS {
                    // Not an abort: nothing conflicted.
                    attempt -= 1;
                    self.inner.stats.reruns.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                // Whatever the body made of the failed read, nothing of
                // this attempt is committed.
                return Err(missed_snapshot("(transaction)", state.tail));
            }
            let value = result?;
            if state.writes.is_empty() {
                if state.lowered {
                    // Read-only from a snapshot older than the attempt: it
                    // could miss a write acknowledged before the
                    // transaction began. Run it again from the tail (not a
                    // retry: nothing conflicted).
                    attempt -= 1;
                    self.inner.stats.reruns.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                return Ok(value);
            }
            for written in state.writes.values() {
                // Never put ops of one type in another type's stream.
                written.check.check(log).await?;
            }
            let streams: Vec<StreamId> = state.writes.keys().copied().collect();
            let parts: Vec<(StreamId, ObjectType, Vec<Vec<u8>>)> = state
                .writes
                .into_iter()
                .map(|(stream, written)| (stream, written.ty, written.ops))
                .collect();
            let payload = record::encode_transaction(&parts).map_err(|e| Error::Encode {
                object: "(transaction)".to_string(),
                reason: e.0,
            })?;
            let condition = TxnCondition {
                snapshot: state.tail.saturating_sub(1),
                read_set: state.read_set.into_iter().collect(),
                write_set: state.write_set.into_iter().collect(),
            };
            match log.append_conditional(payload, &streams, &condition).await {
                Ok(_) => {
                    self.inner.stats.commits.fetch_add(1, Ordering::Relaxed);
                    return Ok(value);
                }
                Err(ClientError::Aborted { conflict, address }) if state.lowered => {
                    // Read from behind the tail and something it read had
                    // changed meanwhile (perhaps before the transaction
                    // began): not a conflict of this transaction, just a
                    // guess that missed. Run again from the tail.
                    tracing::debug!(
                        ?conflict,
                        address,
                        "read from behind the tail; again from the tail"
                    );
                    attempt -= 1;
                    self.inner.stats.reruns.fetch_add(1, Ordering::Relaxed);
                }
                Err(ClientError::Aborted { conflict, address }) => {
                    tracing::debug!(attempt, ?conflict, address, "transaction aborted");
                    self.inner.stats.aborts.fetch_add(1, Ordering::Relaxed);
                    if conflict.is_none() {
                        // The floor (or an address lost to a hole filler,
                        // which is below the tail anyway).
                        floor = floor.max(address);
                    }
                    if attempt >= attempts {
                        return Err(Error::Aborted {
                            attempts: attempt,
                            conflict,
                            address,
                        });
                    }
                    tokio::task::yield_now().await;
                }
                Err(ClientError::TooManyKeys { keys, max }) => {
                    return Err(Error::TooManyKeys { keys, max })
                }
                Err(e) => return Err(log_error(e)),
            }
        }
    }
}
