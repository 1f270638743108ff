//! One object's view in one runtime: its state, how far the object's
//! stream has been applied, and the rule that plays the stream forward.
//!
//! - **One sync at a time.** Playback happens under the view's `syncing`
//!   lock (an async mutex: it is held across the log reads). A caller that
//!   needs the view at address `t` first checks whether it already is past
//!   `t`; if not, it waits for the lock and checks again, so a caller
//!   queued behind a sync that covered its target does no work
//!   (piggybacking). Only the holder of `syncing` moves `next`, and it
//!   applies only addresses at or above it: no entry is applied twice or
//!   out of order.
//! - **The state lock is never held across an await.** Entries are read
//!   from the log without it; each batch is then applied under a short
//!   write lock. Readers of a view that is already far enough along take
//!   only the read lock and never wait for a sync in progress beyond the
//!   application of one batch.
//! - **Bounded batches.** Playback reads the stream in ranges of at most
//!   `playback_batch_addresses` addresses, so memory is bounded however far
//!   behind the view is.
//! - **States at an address, for transactions.** Once a transaction has
//!   read the view (which requires a cloneable state), every batch of
//!   playback keeps a copy of the state after it (the last
//!   [`VERSIONS_KEPT`]) and the entries applied since the oldest copy
//!   (at most [`RECENT_KEPT`]): a transaction whose snapshot the view has
//!   passed starts from the newest copy at or below its snapshot and
//!   replays the rest privately, without the view's locks, from those
//!   entries (from the log only if they do not reach back that far). A
//!   view not yet at the snapshot is synced to it (and as far as the
//!   callers queued behind want), then the state at the snapshot is copied
//!   or replayed the same way. For persistent states (`imbl`) a copy is
//!   O(1).
//! - **Never from the start of the stream.** The runtime registers the
//!   snapshot of every live transaction attempt ([`Snapshots`]), before
//!   the attempt reads the log's tail, provisionally at the highest
//!   address any view was asked to reach (so at or above every view's
//!   position, and at or below the tail the attempt will read). Pruning
//!   never drops the newest copy at or below the oldest live snapshot, so
//!   every live snapshot has a copy at or below it, and the replay from
//!   there reads only what the view applied since: nothing of the
//!   stream's history, nothing below a trimmed prefix. A view that kept no
//!   copy yet (no transaction had read it) or a snapshot lowered below the
//!   copies kept gets `None` from [`View::state_at`]; the transaction then
//!   runs again from the tail (see `txn.rs`).
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use corfu_core::types::{Address, StreamId};

use crate::error::Error;
use crate::log::SharedLog;
use crate::object::StateMachine;
use crate::record::{self, EntryError, ObjectType};

/// Called with the state right before the tagged update it waits for is
/// applied.
pub(crate) type Waiter<T> = Box<dyn FnOnce(&T) + Send>;

/// A view's check before a first write, without its state type (a
/// transaction holds one per object it writes).
#[async_trait::async_trait]
pub(crate) trait WriteCheck: Send + Sync {
    /// [`View::check_writable`].
    async fn check(&self, log: &dyn SharedLog) -> Result<(), Error>;
}

#[async_trait::async_trait]
impl<T: StateMachine> WriteCheck for View<T> {
    async fn check(&self, log: &dyn SharedLog) -> Result<(), Error> {
        self.check_writable(log).await
    }
}

/// How many copies of past states a view read by transactions keeps
/// (besides the one kept for the oldest live snapshot).
pub(crate) const VERSIONS_KEPT: usize = 64;

/// The snapshots of a runtime's live transaction attempts. Every view
/// keeps a version at or below the oldest of them (see the module docs),
/// so a live attempt never needs to replay its object's stream from the
/// start.
#[derive(Debug, Default)]
pub(crate) struct Snapshots {
    /// The highest address any view of the runtime was asked to reach: at
    /// least the position of every view.
    observed: AtomicU64,
    /// The live snapshots (each the tail an attempt reads below), counted.
    live: Mutex<BTreeMap<Address, usize>>,
}

impl Snapshots {
    fn live(&self) -> std::sync::MutexGuard<'_, BTreeMap<Address, usize>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A view is about to be played up to `target`.
    fn observe(&self, target: Address) {
        self.observed.fetch_max(target, Ordering::SeqCst);
    }

    /// The oldest live snapshot.
    fn oldest(&self) -> Option<Address> {
        self.live().keys().next().copied()
    }

    /// Registers a snapshot for an attempt about to read the log's tail:
    /// provisionally where the views are at most (every view's kept
    /// version at or below its position is kept from now on), until
    /// [`SnapshotPin::move_to`] sets the attempt's own. That tail is at
    /// least the provisional value, since every view's target was a tail
    /// read before.
    pub(crate) fn pin(self: &Arc<Self>) -> SnapshotPin {
        let mut live = self.live();
        let at = self.observed.load(Ordering::SeqCst);
        *live.entry(at).or_default() += 1;
        SnapshotPin {
            snapshots: self.clone(),
            at,
        }
    }

    fn unpin(&self, at: Address) {
        let mut live = self.live();
        if let Some(count) = live.get_mut(&at) {
            *count -= 1;
            if *count == 0 {
                live.remove(&at);
            }
        }
    }
}

/// A live snapshot, registered until dropped.
#[derive(Debug)]
pub(crate) struct SnapshotPin {
    snapshots: Arc<Snapshots>,
    at: Address,
}

impl SnapshotPin {
    /// The attempt reads below `at` now.
    pub(crate) fn move_to(&mut self, at: Address) {
        if at == self.at {
            return;
        }
        let mut live = self.snapshots.live();
        *live.entry(at).or_default() += 1;
        drop(live);
        self.snapshots.unpin(self.at);
        self.at = at;
    }
}

impl Drop for SnapshotPin {
    fn drop(&mut self) {
        self.snapshots.unpin(self.at);
    }
}

/// How many applied entries a view read by transactions keeps in memory
/// to replay a past state without reading the log again.
pub(crate) const RECENT_KEPT: usize = 4096;

pub(crate) struct View<T: StateMachine> {
    pub(crate) name: Arc<str>,
    pub(crate) stream: StreamId,
    /// The id of the runtime owning the view: tagged updates of this
    /// runtime may have waiters.
    runtime_id: u128,
    batch_addresses: u64,
    played: RwLock<Played<T>>,
    syncing: tokio::sync::Mutex<()>,
    /// The highest address any caller has asked the view to reach: the
    /// holder of `syncing` plays up to it, so callers queued behind it
    /// find their target covered instead of syncing one after another.
    wanted: AtomicU64,
    /// A background playback (for transactions that read from where the
    /// view is) is running.
    advancing: AtomicBool,
    /// By tag sequence number: callers of this runtime waiting for the
    /// state their update finds.
    waiters: Mutex<HashMap<u64, Waiter<T>>>,
    /// Set by the first transaction that reads the view: how to copy the
    /// state. Until then no versions are kept.
    cloner: OnceLock<fn(&T) -> T>,
    /// The stream is known to hold entries of this object's type: one was
    /// applied, or the last entry was checked before a first write.
    typed: AtomicBool,
    /// The runtime's live transaction snapshots.
    snapshots: Arc<Snapshots>,
}

struct Played<T> {
    state: T,
    /// Every entry of the stream below this address is applied (or was
    /// junk); none at or above it is.
    next: Address,
    /// Set when an entry could not be decoded: the view stops for good.
    failed: Option<Error>,
    /// Copies of the state after recent batches, oldest first: `(a, s)`
    /// is the state with every entry below `a` applied.
    versions: VecDeque<(Address, T)>,
    /// The entries of the stream applied at or above `recent_from`, in
    /// address order (kept once versions are).
    recent: VecDeque<(Address, Arc<[u8]>)>,
    /// Every entry of the stream in `[recent_from, next)` is in `recent`
    /// (`Address::MAX` until entries are kept).
    recent_from: Address,
}

impl<T: StateMachine> View<T> {
    pub(crate) fn new(
        name: Arc<str>,
        runtime_id: u128,
        batch_addresses: u64,
        snapshots: Arc<Snapshots>,
    ) -> View<T> {
        View {
            stream: StreamId::from_name(&name),
            name,
            runtime_id,
            batch_addresses: batch_addresses.max(1),
            played: RwLock::new(Played {
                state: T::default(),
                next: 0,
                failed: None,
                versions: VecDeque::new(),
                recent: VecDeque::new(),
                // Nothing kept yet.
                recent_from: Address::MAX,
            }),
            syncing: tokio::sync::Mutex::new(()),
            wanted: AtomicU64::new(0),
            advancing: AtomicBool::new(false),
            waiters: Mutex::new(HashMap::new()),
            cloner: OnceLock::new(),
            typed: AtomicBool::new(false),
            snapshots,
        }
    }

    /// The error for the entry at `address`, which cannot be applied.
    fn entry_error(&self, address: Address, error: EntryError) -> Error {
        match error {
            EntryError::WrongType { found } => Error::WrongType {
                object: self.name.to_string(),
                stream: self.stream,
                address,
                expected: ObjectType::of::<T>().to_string(),
                found,
            },
            EntryError::Malformed(reason) => Error::Undecodable {
                object: self.name.to_string(),
                address,
                reason,
            },
        }
    }

    /// Before the first write through this view: unless the stream is
    /// known to be of the object's type already, checks that its last
    /// entry (if any) is, so a write never adds an op of one type to
    /// another type's stream (where that type's views would stop at it).
    /// One stream tail and one read, once per view. Two first writers of
    /// different types racing on an empty stream are not caught here;
    /// playback then stops at the later type's first entry.
    pub(crate) async fn check_writable(&self, log: &dyn SharedLog) -> Result<(), Error> {
        if self.typed.load(Ordering::Acquire) {
            return Ok(());
        }
        let tail = log
            .stream_tail(self.stream)
            .await
            .map_err(|e| self.log_error(e))?;
        if let Some(last) = tail {
            // Junk (an address whose writer never completed it) reads as
            // nothing: then there is nothing to check.
            // A trimmed entry cannot be checked; the write goes ahead (a
            // checkpoint above the trim mark names the type, once there
            // are checkpoints).
            let entries = match log
                .read_stream(self.stream, last, last.saturating_add(1))
                .await
            {
                Ok(entries) => entries,
                Err(corfu_core::client::ClientError::Trimmed { .. }) => Vec::new(),
                Err(e) => return Err(self.log_error(e)),
            };
            for (address, payload) in entries {
                record::check_type(&payload, self.stream, ObjectType::of::<T>())
                    .map_err(|e| self.entry_error(address, e))?;
            }
        }
        self.typed.store(true, Ordering::Release);
        Ok(())
    }

    fn poisoned<P>(&self, _: P) -> Error {
        Error::Poisoned {
            object: self.name.to_string(),
        }
    }

    pub(crate) fn log_error(&self, source: corfu_core::client::ClientError) -> Error {
        Error::Log {
            object: self.name.to_string(),
            source,
        }
    }

    /// Runs `read` on the state as it is now.
    pub(crate) fn read<R>(&self, read: impl FnOnce(&T) -> R) -> Result<R, Error> {
        let played = self.played.read().map_err(|e| self.poisoned(e))?;
        if let Some(e) = &played.failed {
            return Err(e.clone());
        }
        Ok(read(&played.state))
    }

    /// The first address not applied yet, or the error that stopped the
    /// view.
    fn next(&self) -> Result<Address, Error> {
        let played = self.played.read().map_err(|e| self.poisoned(e))?;
        match &played.failed {
            Some(e) => Err(e.clone()),
            None => Ok(played.next),
        }
    }

    /// The first address not applied yet (every entry of the stream below
    /// it is), or the error that stopped the view.
    pub(crate) fn applied(&self) -> Result<Address, Error> {
        self.next()
    }

    /// Plays the view up to `target` in a task of its own, unless one
    /// already runs or the view is there (or there is no tokio runtime).
    /// Errors are left for the next caller that needs the view to meet.
    pub(crate) fn advance_in_background(
        self: &Arc<Self>,
        log: Arc<dyn SharedLog>,
        target: Address,
    ) {
        if self.next().map_or(true, |next| next >= target)
            || self.advancing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.advancing.store(false, Ordering::Release);
            return;
        };
        let view = self.clone();
        runtime.spawn(async move {
            if let Err(error) = view.sync_to(log.as_ref(), target).await {
                tracing::debug!(object = %view.name, %error, "background playback failed");
            }
            view.advancing.store(false, Ordering::Release);
        });
    }

    /// Plays the stream forward until every entry below `target` is
    /// applied.
    pub(crate) async fn sync_to(&self, log: &dyn SharedLog, target: Address) -> Result<(), Error> {
        if self.next()? >= target {
            return Ok(());
        }
        self.wanted.fetch_max(target, Ordering::Relaxed);
        let _syncing = self.syncing.lock().await;
        self.sync_locked(log, target).await
    }

    /// [`sync_to`](Self::sync_to) for the holder of the `syncing` lock:
    /// on success, `next` is at least `target`; the view is played up to
    /// the highest target any caller has asked for (every address below
    /// it was granted, since that caller saw a tail above it).
    async fn sync_locked(&self, log: &dyn SharedLog, target: Address) -> Result<(), Error> {
        let target = target.max(self.wanted.load(Ordering::Relaxed));
        // Before anything moves the view: a transaction registering its
        // snapshot from now on sees a bound at or above where it will be.
        self.snapshots.observe(target);
        loop {
            // Another sync may have covered the target while we waited.
            let next = self.next()?;
            if next >= target {
                return Ok(());
            }
            if let Some(end) = log.void_end(next) {
                // Nothing was ever written there: step over it at once.
                self.apply_batch(next, end.min(target), Vec::new())?;
                continue;
            }
            let to = target.min(next.saturating_add(self.batch_addresses));
            let entries = log
                .read_stream(self.stream, next, to)
                .await
                .map_err(|e| self.log_error(e))?;
            self.apply_batch(next, to, entries)?;
        }
    }

    /// Applies the entries the log returned for `[from, to)`.
    fn apply_batch(
        &self,
        from: Address,
        to: Address,
        entries: Vec<(Address, Vec<u8>)>,
    ) -> Result<(), Error> {
        let mut played = self.played.write().map_err(|e| self.poisoned(e))?;
        // Only the holder of `syncing` moves `next`, and it read `from`.
        debug_assert_eq!(played.next, from);
        let applied_any = !entries.is_empty();
        let keeping = self.cloner.get().is_some();
        if keeping && played.versions.is_empty() {
            // The first batch since a transaction read the view: the kept
            // copies and entries start here.
            played.recent.clear();
            played.recent_from = from;
            if let Some(clone) = self.cloner.get() {
                let copy = clone(&played.state);
                played.versions.push_back((from, copy));
            }
        }
        for (address, payload) in entries {
            if address < played.next || address >= to {
                return Err(Error::LogContract {
                    object: self.name.to_string(),
                    detail: format!(
                        "a read of the stream in [{from}, {to}) returned address {address} \
                         where an address in [{}, {to}) was due",
                        played.next
                    ),
                });
            }
            let decoded =
                match record::decode_entry::<T::Op>(&payload, self.stream, ObjectType::of::<T>()) {
                    Ok(decoded) => decoded,
                    Err(e) => {
                        let error = self.entry_error(address, e);
                        tracing::error!(%error, "replicated object stopped");
                        played.next = address;
                        played.failed = Some(error.clone());
                        return Err(error);
                    }
                };
            if let Some(tag) = decoded.tag.filter(|t| t.runtime == self.runtime_id) {
                if let Some(waiter) = self.take_waiter(tag.seq) {
                    waiter(&played.state);
                }
            }
            for op in decoded.ops {
                played.state.apply(op, address);
            }
            played.next = address + 1;
            if keeping {
                played.recent.push_back((address, Arc::from(payload)));
            }
        }
        played.next = to;
        if applied_any {
            self.typed.store(true, Ordering::Release);
        }
        if let Some(clone) = self.cloner.get() {
            // A batch without entries leaves the last copy valid.
            if applied_any || played.versions.is_empty() {
                let copy = clone(&played.state);
                played.versions.push_back((to, copy));
                self.prune_versions(&mut played.versions);
            }
            // Entries below the oldest copy are never replayed from here;
            // beyond the bound, the oldest go (replays then read the log).
            let oldest = played.versions.front().map_or(to, |(a, _)| *a);
            while let Some(&(address, _)) = played.recent.front() {
                if address >= oldest && played.recent.len() <= RECENT_KEPT {
                    break;
                }
                played.recent.pop_front();
                played.recent_from = played.recent_from.max(address + 1);
            }
            played.recent_from = played.recent_from.max(oldest.min(to)).min(to);
        }
        Ok(())
    }

    /// Drops kept versions beyond [`VERSIONS_KEPT`], but never the newest
    /// one at or below the oldest live snapshot (the base): that one
    /// serves every live snapshot. Without live snapshots, the oldest go;
    /// with one, those older than the base go first, then the oldest ones
    /// after it.
    fn prune_versions(&self, versions: &mut VecDeque<(Address, T)>) {
        if versions.len() <= VERSIONS_KEPT {
            return;
        }
        let base = self
            .snapshots
            .oldest()
            .and_then(|oldest| versions.iter().rposition(|(a, _)| *a <= oldest));
        match base {
            Some(base) => {
                versions.drain(..base);
                while versions.len() > VERSIONS_KEPT {
                    versions.remove(1);
                }
            }
            None => {
                while versions.len() > VERSIONS_KEPT {
                    versions.pop_front();
                }
            }
        }
    }

    /// The state with every entry of the stream below `at` applied and
    /// none at or above it, as a copy made with `clone` (see the module
    /// docs). The view itself never moves backwards: if it is not at `at`
    /// yet it is synced to `at` (or beyond, for callers queued behind);
    /// if it is past it, the copy starts from the newest kept version at or
    /// below `at` and the entries up to `at` are replayed into it
    /// privately. `None` if the view is past `at` and keeps no version at
    /// or below it (it kept none before a transaction first read it, or
    /// `at` is older than every live snapshot was): the state at `at` is
    /// never rebuilt from the start of the stream, which could be long or
    /// trimmed.
    pub(crate) async fn state_at(
        &self,
        log: &dyn SharedLog,
        at: Address,
        clone: fn(&T) -> T,
    ) -> Result<Option<T>, Error> {
        // Every caller passes `T::clone`: whichever sets it, it is the same.
        let _ = self.cloner.set(clone);
        if self.next()? < at {
            self.wanted.fetch_max(at, Ordering::Relaxed);
            let _syncing = self.syncing.lock().await;
            self.sync_locked(log, at).await?;
        }
        let (mut from, mut state, kept) = {
            let played = self.played.read().map_err(|e| self.poisoned(e))?;
            if let Some(e) = &played.failed {
                return Err(e.clone());
            }
            if played.next == at {
                return Ok(Some(clone(&played.state)));
            }
            let newest = played.versions.iter().rev().find(|(a, _)| *a <= at);
            let (from, state) = match newest {
                Some((a, s)) => (*a, clone(s)),
                None if at == 0 => return Ok(Some(T::default())),
                None => return Ok(None),
            };
            // The entries in [from, at), if the view kept them all.
            let kept: Option<Vec<(Address, Arc<[u8]>)>> =
                (played.recent_from <= from && at <= played.next).then(|| {
                    played
                        .recent
                        .iter()
                        .skip_while(|(a, _)| *a < from)
                        .take_while(|(a, _)| *a < at)
                        .cloned()
                        .collect()
                });
            (from, state, kept)
        };
        if let Some(kept) = kept {
            for (address, payload) in kept {
                self.replay(&mut state, address, &payload)?;
            }
            return Ok(Some(state));
        }
        while from < at {
            if let Some(end) = log.void_end(from) {
                from = end.min(at);
                continue;
            }
            let to = at.min(from.saturating_add(self.batch_addresses));
            let entries = log
                .read_stream(self.stream, from, to)
                .await
                .map_err(|e| self.log_error(e))?;
            for (address, payload) in entries {
                if address < from || address >= to {
                    return Err(Error::LogContract {
                        object: self.name.to_string(),
                        detail: format!(
                            "a read of the stream in [{from}, {to}) returned address {address}"
                        ),
                    });
                }
                self.replay(&mut state, address, &payload)?;
                from = address + 1;
            }
            from = to;
        }
        Ok(Some(state))
    }

    /// Applies an entry the view applied before to a private copy of a
    /// past state. It decoded then, so it decodes now; if not, the log
    /// changed under us, which is reported as such.
    fn replay(&self, state: &mut T, address: Address, payload: &[u8]) -> Result<(), Error> {
        let decoded = record::decode_entry::<T::Op>(payload, self.stream, ObjectType::of::<T>())
            .map_err(|e| self.entry_error(address, e))?;
        for op in decoded.ops {
            state.apply(op, address);
        }
        Ok(())
    }

    pub(crate) fn add_waiter(&self, seq: u64, waiter: Waiter<T>) {
        self.waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(seq, waiter);
    }

    pub(crate) fn take_waiter(&self, seq: u64) -> Option<Waiter<T>> {
        self.waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&seq)
    }

    #[cfg(test)]
    pub(crate) fn waiter_count(&self) -> usize {
        self.waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}
