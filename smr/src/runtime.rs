//! The runtime: opens objects by name and hands out handles to their views.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use corfu_core::client::ClientError;
use corfu_core::types::{Address, StreamId};
use corfu_core::wire::sequencer::{ConflictKey, TxnCondition};

use crate::error::Error;
use crate::log::SharedLog;
use crate::object::{Object, StateMachine};
use crate::record::{self, ObjectType, Tag};
use crate::view::{Snapshots, View};

/// Default of [`RuntimeOptions::playback_batch_addresses`].
pub const PLAYBACK_BATCH_ADDRESSES_DEFAULT: u64 = 4096;

/// Default of [`RuntimeOptions::transaction_retries`].
pub const TRANSACTION_RETRIES_DEFAULT: u32 = 10;

/// Tuning of a [`Runtime`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// The widest address range one playback read covers (0 is taken as
    /// 1). It bounds the entries held in memory at once while a view
    /// catches up: a range holds at most this many entries of the stream.
    pub playback_batch_addresses: u64,
    /// How many times [`Runtime::transaction`] runs a transaction again
    /// after the log refused its commit, before it gives up with
    /// [`Error::Aborted`]. Also how many times an update
    /// ([`Handle::update`]) is appended again if the log refuses it, which
    /// happens only when its address was lost to a hole filler.
    pub transaction_retries: u32,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            playback_batch_addresses: PLAYBACK_BATCH_ADDRESSES_DEFAULT,
            transaction_retries: TRANSACTION_RETRIES_DEFAULT,
        }
    }
}

/// The Tango runtime of one process: opens replicated objects by name over
/// a shared log, keeps one view per object, and plays each object's stream
/// into its view. Cheap to clone; clones share the views.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<RuntimeInner>,
}

pub(crate) struct RuntimeInner {
    pub(crate) log: Arc<dyn SharedLog>,
    /// Random, so tagged updates of different runtimes never collide.
    id: u128,
    /// Sequence numbers of tagged updates.
    next_seq: AtomicU64,
    pub(crate) options: RuntimeOptions,
    /// The open views, by object name.
    views: Mutex<HashMap<String, Registered>>,
    /// Transaction counts.
    pub(crate) stats: crate::txn::StatsCounters,
    /// The snapshots of live transaction attempts, shared with the views.
    pub(crate) snapshots: Arc<Snapshots>,
}

struct Registered {
    /// The state type the object was opened with.
    type_name: &'static str,
    /// An `Arc<View<T>>`; downcasting checks the state type.
    view: Arc<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let views = self
            .inner
            .views
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("Runtime")
            .field("id", &format_args!("{:032x}", self.inner.id))
            .field("objects", &views.keys().collect::<Vec<_>>())
            .field("options", &self.inner.options)
            .finish()
    }
}

impl Runtime {
    /// A runtime over `log` with the default options.
    pub fn new(log: impl SharedLog) -> Runtime {
        Runtime::with_options(log, RuntimeOptions::default())
    }

    /// A runtime over `log`.
    pub fn with_options(log: impl SharedLog, options: RuntimeOptions) -> Runtime {
        Runtime {
            inner: Arc::new(RuntimeInner {
                log: Arc::new(log),
                id: rand::random(),
                next_seq: AtomicU64::new(0),
                stats: Default::default(),
                snapshots: Arc::default(),
                options,
                views: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The runtime's options.
    pub fn options(&self) -> &RuntimeOptions {
        &self.inner.options
    }

    /// Opens the object `name`: its stream is `StreamId::from_name(name)`.
    /// The first open in this runtime creates the view (empty; it is
    /// played forward by the first query); later opens share it, however
    /// many handles exist. Opening a name already open with another state
    /// type is [`Error::TypeMismatch`]. A stream holding entries of another
    /// object type ([`StateMachine::TYPE`](crate::StateMachine::TYPE)) is
    /// found by the first query or write: [`Error::WrongType`], nothing
    /// applied or written. A type name that cannot be written (empty, or
    /// over 255 bytes) is [`Error::Encode`].
    ///
    /// `O` is the handle type: `Handle<T>` for a state machine `T`, or a
    /// ready-made object type wrapping one.
    pub fn open<O: Object>(&self, name: &str) -> Result<O, Error> {
        let view = self.view::<O::State>(name)?;
        Ok(O::from_handle(Handle {
            runtime: self.inner.clone(),
            view,
        }))
    }

    fn view<T: StateMachine>(&self, name: &str) -> Result<Arc<View<T>>, Error> {
        let mut views = self
            .inner
            .views
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        ObjectType::of::<T>()
            .check()
            .map_err(|reason| Error::Encode {
                object: name.to_string(),
                reason,
            })?;
        if let Some(registered) = views.get(name) {
            let requested = std::any::type_name::<T>();
            return registered.view.clone().downcast::<View<T>>().map_err(|_| {
                Error::TypeMismatch {
                    object: name.to_string(),
                    opened_as: registered.type_name,
                    requested,
                }
            });
        }
        let view = Arc::new(View::<T>::new(
            Arc::from(name),
            self.inner.id,
            self.inner.options.playback_batch_addresses,
            self.inner.snapshots.clone(),
        ));
        views.insert(
            name.to_string(),
            Registered {
                type_name: std::any::type_name::<T>(),
                view: view.clone(),
            },
        );
        Ok(view)
    }
}

/// A handle of one object's view in one runtime. Cheap to clone; every
/// handle of an object in a runtime shares one view.
pub struct Handle<T: StateMachine> {
    pub(crate) runtime: Arc<RuntimeInner>,
    pub(crate) view: Arc<View<T>>,
}

impl<T: StateMachine> Clone for Handle<T> {
    fn clone(&self) -> Self {
        Handle {
            runtime: self.runtime.clone(),
            view: self.view.clone(),
        }
    }
}

impl<T: StateMachine> std::fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("object", &self.view.name)
            .field("stream", &self.view.stream)
            .field("state", &std::any::type_name::<T>())
            .finish()
    }
}

impl<T: StateMachine> Handle<T> {
    /// The object's name.
    pub fn name(&self) -> &str {
        &self.view.name
    }

    /// The object's stream.
    pub fn stream(&self) -> StreamId {
        self.view.stream
    }

    /// Appends `op` to the object's stream; returns its address once the
    /// log has acknowledged it. Every query that begins after this returns,
    /// in any runtime, sees the op applied. The local view is not touched
    /// (the next query plays the op).
    ///
    /// The append is conditional with an empty read set: it never
    /// conflicts, but it records the op's conflict keys
    /// ([`StateMachine::write_keys`] and
    /// [`WHOLE_OBJECT`](crate::WHOLE_OBJECT)) in the log, so transactions
    /// that read what it changes see the write (see the crate docs,
    /// "Transactions"). Should the log refuse it (its address lost to a
    /// hole filler; nothing of it is in the log then), it is appended
    /// again, up to [`RuntimeOptions::transaction_retries`] times, then
    /// [`Error::Aborted`].
    ///
    /// The first write through this object's view (unless it has already
    /// played an entry of its stream) reads the stream's last entry first
    /// and refuses to write if it is of another object type
    /// ([`Error::WrongType`]): a `corfu set remove` on a queue's name
    /// must not put a set op in the queue's stream.
    pub async fn update(&self, op: T::Op) -> Result<Address, Error> {
        let condition = self.blind_condition(&op);
        let payload = record::encode_update(ObjectType::of::<T>(), &op, None)
            .map_err(|e| self.encode_error(e))?;
        self.view.check_writable(self.runtime.log.as_ref()).await?;
        self.append_blind(payload, &condition).await
    }

    /// The condition of a write outside a transaction: no read set, so no
    /// conflict; a snapshot that no floor exceeds; the op's write keys.
    fn blind_condition(&self, op: &T::Op) -> TxnCondition {
        TxnCondition {
            snapshot: Address::MAX,
            read_set: Vec::new(),
            write_set: conflict_keys(self.view.stream, T::write_keys(op)),
        }
    }

    /// Appends a write outside a transaction. The log refuses it only if
    /// its granted address was lost to a hole filler (nothing of it is in
    /// the log then), so it is appended again.
    async fn append_blind(
        &self,
        payload: Vec<u8>,
        condition: &TxnCondition,
    ) -> Result<Address, Error> {
        let mut refusals = 0;
        loop {
            match self
                .runtime
                .log
                .append_conditional(payload.clone(), &[self.view.stream], condition)
                .await
            {
                Ok(address) => return Ok(address),
                Err(ClientError::Aborted { conflict, address })
                    if refusals < self.runtime.options.transaction_retries =>
                {
                    refusals += 1;
                    tracing::debug!(object = %self.view.name, ?conflict, address, "update refused; appending again");
                }
                Err(ClientError::Aborted { conflict, address }) => {
                    return Err(Error::Aborted {
                        attempts: refusals + 1,
                        conflict,
                        address,
                    })
                }
                Err(e) => return Err(self.view.log_error(e)),
            }
        }
    }

    /// Runs `read` on the object's state once the view has applied every
    /// update acknowledged before this call began (in any runtime):
    /// asks the log for the stream's tail, plays the stream up to it, then
    /// reads. Linearizable.
    ///
    /// `read` runs under the view's read lock, which playback of this
    /// object waits for: keep it short and copy out what you need.
    pub async fn query<R>(&self, read: impl FnOnce(&T) -> R) -> Result<R, Error> {
        let tail = self
            .runtime
            .log
            .stream_tail(self.view.stream)
            .await
            .map_err(|e| self.view.log_error(e))?;
        let target = tail.map_or(0, |t| t.saturating_add(1));
        self.view.sync_to(self.runtime.log.as_ref(), target).await?;
        self.view.read(read)
    }

    /// Appends `op`, then plays the stream up to it and returns its address
    /// and what `read` saw of the state **right before `op` was applied**
    /// at its place in the log: every entry of the stream below the op's
    /// address applied, none above.
    ///
    /// This is how an update reports an outcome that only the log order
    /// decides: together with the op (apply is deterministic) the state the
    /// op found says whether a compare-and-set took effect, what value an
    /// increment produced, which element a pop removed. The state after the
    /// op would not always say it (a compare-and-set that failed because
    /// the value already was the new one leaves the same state as one that
    /// succeeded).
    ///
    /// Works whichever other runtimes and handles play the stream
    /// meanwhile: the entry carries a tag naming this runtime and call, and
    /// the view runs `read` when it applies that entry.
    pub async fn update_and_read_prior<R: Send + 'static>(
        &self,
        op: T::Op,
        read: impl FnOnce(&T) -> R + Send + 'static,
    ) -> Result<(Address, R), Error> {
        let seq = self.runtime.next_seq.fetch_add(1, Ordering::Relaxed);
        let tag = Tag {
            runtime: self.runtime.id,
            seq,
        };
        let condition = self.blind_condition(&op);
        let payload = record::encode_update(ObjectType::of::<T>(), &op, Some(tag))
            .map_err(|e| self.encode_error(e))?;
        self.view.check_writable(self.runtime.log.as_ref()).await?;
        let (sender, mut receiver) = tokio::sync::oneshot::channel();
        // Registered before the append: the entry may be played (by another
        // query of this view) before `append` even returns.
        self.view.add_waiter(
            seq,
            Box::new(move |state: &T| {
                // The receiver is gone only if this call was cancelled.
                let _ = sender.send(read(state));
            }),
        );
        let _waiting = Deregister {
            view: &self.view,
            seq,
        };
        let address = self.append_blind(payload, &condition).await?;
        self.view
            .sync_to(self.runtime.log.as_ref(), address.saturating_add(1))
            .await?;
        match receiver.try_recv() {
            Ok(seen) => Ok((address, seen)),
            Err(_) => Err(Error::LogContract {
                object: self.view.name.to_string(),
                detail: format!(
                    "the update appended at address {address} was not among the stream's \
                     entries when the view played past it"
                ),
            }),
        }
    }

    pub(crate) fn encode_error(&self, e: crate::codec::CodecError) -> Error {
        Error::Encode {
            object: self.view.name.to_string(),
            reason: e.0,
        }
    }

    #[cfg(test)]
    pub(crate) fn view(&self) -> &View<T> {
        &self.view
    }
}

/// The conflict keys of one write of the object of `stream`: `keys` and
/// the whole-object key, each once.
pub(crate) fn conflict_keys(stream: StreamId, keys: Vec<u64>) -> Vec<ConflictKey> {
    let mut hashes = keys;
    hashes.push(crate::keys::WHOLE_OBJECT);
    hashes.sort_unstable();
    hashes.dedup();
    hashes
        .into_iter()
        .map(|key_hash| ConflictKey { stream, key_hash })
        .collect()
}

/// Removes a waiter whose call ended (returned, failed or was cancelled)
/// before its entry was played, so abandoned waiters do not pile up.
struct Deregister<'a, T: StateMachine> {
    view: &'a View<T>,
    seq: u64,
}

impl<T: StateMachine> Drop for Deregister<'_, T> {
    fn drop(&mut self) {
        drop(self.view.take_waiter(self.seq));
    }
}
