//! [`ReplicatedQueue`]: a FIFO queue whose pops are ops in the log, so
//! each pushed item is taken by exactly one pop, whichever process pops.
//!
//! A pop does not read the head and then remove it (two processes could
//! read the same head); it appends a `Pop` op, and the item it takes is
//! the head of the queue **at the op's place in the log**, the same in
//! every view (Tango §3; the outcome is learned with
//! [`Handle::update_and_read_prior`]). Two pops are two entries at two
//! addresses: the first takes the head, the second the item after it.
//!
//! ## Conflict keys
//!
//! A push changes only the back of the queue and a pop only the front, so
//! they write different keys: a push writes [`QUEUE_TAIL`], a pop
//! [`QUEUE_HEAD`] (and both, like every write, the whole object). A
//! transactional pop ([`ReplicatedQueue::tx_pop`]) reads:
//!
//! - [`QUEUE_HEAD`] alone if the item it takes was in the queue at the
//!   transaction's snapshot. Pushes that land after the snapshot go behind
//!   that item, so they cannot change what the pop takes; another pop can,
//!   and makes the commit abort.
//! - [`QUEUE_HEAD`] and [`QUEUE_TAIL`] otherwise: the queue was empty at
//!   the snapshot (the answer "empty" is wrong once anything is pushed), or
//!   the item is one the transaction pushed itself, which at commit would
//!   queue behind any push made after the snapshot.
//!
//! To tell the two apart the state keeps each item's push address: items
//! in the snapshot were pushed at or below it, the transaction's own
//! pushes are applied to its copy at the address after it.

use imbl::Vector;
use smr::{Address, Codec, Error, Handle, Object, StateMachine, Txn};

pub use ops::QueueOp;

mod ops {
    // rkyv's derive generates resolver types whose fields carry no docs;
    // every item written here is documented by hand.
    #![allow(missing_docs)]

    use rkyv::{Archive, Deserialize, Serialize};

    /// An update of a [`ReplicatedQueue`](super::ReplicatedQueue).
    #[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub enum QueueOp<T> {
        /// Puts `item` at the back.
        Push {
            /// The item.
            item: T,
        },
        /// Removes the front item, if there is one (a no-op on an empty
        /// queue).
        Pop,
    }
}

/// The conflict key of a queue's front: written by every pop, read by
/// every transactional pop and peek.
pub const QUEUE_HEAD: u64 = 1;

/// The conflict key of a queue's back: written by every push, read by a
/// transactional pop or peek that found the queue empty or took an item
/// the transaction pushed itself.
pub const QUEUE_TAIL: u64 = 2;

/// The state of a [`ReplicatedQueue`]: persistent vectors, so a copy of
/// it (a snapshot) costs O(1) and shares structure with the view.
#[derive(Debug, Clone)]
pub struct QueueState<T: Clone> {
    /// The items, front first.
    items: Vector<T>,
    /// `pushed_at[i]` is the address of the push of `items[i]`; the two
    /// change together in `apply`, nowhere else.
    pushed_at: Vector<Address>,
}

impl<T: Clone> Default for QueueState<T> {
    fn default() -> Self {
        QueueState {
            items: Vector::new(),
            pushed_at: Vector::new(),
        }
    }
}

impl<T: Clone> QueueState<T> {
    /// The items, front first.
    pub fn items(&self) -> &Vector<T> {
        &self.items
    }

    /// The front item and the address it was pushed at.
    fn front(&self) -> Option<(Address, T)> {
        Some((*self.pushed_at.front()?, self.items.front()?.clone()))
    }
}

impl<T> StateMachine for QueueState<T>
where
    T: Clone + Send + Sync + 'static,
    QueueOp<T>: Codec + Send,
{
    type Op = QueueOp<T>;
    const TYPE: &'static str = "corfu.queue";

    /// A push writes [`QUEUE_TAIL`], a pop [`QUEUE_HEAD`].
    fn write_keys(op: &QueueOp<T>) -> Vec<u64> {
        match op {
            QueueOp::Push { .. } => vec![QUEUE_TAIL],
            QueueOp::Pop => vec![QUEUE_HEAD],
        }
    }

    fn apply(&mut self, op: QueueOp<T>, address: Address) {
        match op {
            QueueOp::Push { item } => {
                self.items.push_back(item);
                self.pushed_at.push_back(address);
            }
            QueueOp::Pop => {
                self.items.pop_front();
                self.pushed_at.pop_front();
            }
        }
    }
}

/// A FIFO queue of `T` replicated through the shared log; items are any
/// type rkyv can archive.
///
/// [`push`](Self::push) appends one entry and returns its address.
/// [`pop`](Self::pop) appends a pop op and reports the item the op took at
/// its place in the log: across every process, each pushed item is taken
/// by at most one pop, and a pop that finds the queue non-empty always
/// takes one (see the module docs). Reads (`peek`, `len`, `snapshot`) are
/// linearizable.
///
/// In a transaction use [`tx_push`](Self::tx_push),
/// [`tx_pop`](Self::tx_pop), [`tx_peek`](Self::tx_peek) and
/// [`tx_len`](Self::tx_len); the module docs say which keys they read.
pub struct ReplicatedQueue<T>
where
    QueueState<T>: StateMachine,
    T: Clone,
{
    handle: Handle<QueueState<T>>,
}

impl<T> Clone for ReplicatedQueue<T>
where
    QueueState<T>: StateMachine,
    T: Clone,
{
    fn clone(&self) -> Self {
        ReplicatedQueue {
            handle: self.handle.clone(),
        }
    }
}

impl<T> std::fmt::Debug for ReplicatedQueue<T>
where
    QueueState<T>: StateMachine,
    T: Clone,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicatedQueue")
            .field("object", &self.handle.name())
            .finish()
    }
}

impl<T> Object for ReplicatedQueue<T>
where
    QueueState<T>: StateMachine,
    T: Clone,
{
    type State = QueueState<T>;

    fn from_handle(handle: Handle<QueueState<T>>) -> Self {
        ReplicatedQueue { handle }
    }
}

impl<T> ReplicatedQueue<T>
where
    QueueState<T>: StateMachine<Op = QueueOp<T>>,
    T: Clone + Send + 'static,
{
    /// The runtime handle behind the queue.
    pub fn handle(&self) -> &Handle<QueueState<T>> {
        &self.handle
    }

    /// Puts `item` at the back; returns the push's address.
    pub async fn push(&self, item: T) -> Result<Address, Error> {
        self.handle.update(QueueOp::Push { item }).await
    }

    /// Takes the front item: the one at the front of the queue at this
    /// op's place in the log, or `None` if the queue was empty there (the
    /// op then changes nothing). No other pop, in any process, takes the
    /// same item.
    ///
    /// An error after the op was appended (a log error while playing up to
    /// it) leaves it unknown which item it took, as with any write whose
    /// acknowledgment is lost.
    pub async fn pop(&self) -> Result<Option<T>, Error> {
        let (_, taken) = self
            .handle
            .update_and_read_prior(QueueOp::Pop, |q: &QueueState<T>| q.items.front().cloned())
            .await?;
        Ok(taken)
    }

    /// The front item, without taking it.
    pub async fn peek(&self) -> Result<Option<T>, Error> {
        self.handle.query(|q| q.items.front().cloned()).await
    }

    /// The number of items.
    pub async fn len(&self) -> Result<usize, Error> {
        self.handle.query(|q| q.items.len()).await
    }

    /// Whether the queue has no item.
    pub async fn is_empty(&self) -> Result<bool, Error> {
        self.handle.query(|q| q.items.is_empty()).await
    }

    /// The whole queue as of now, front first: an O(1) copy sharing
    /// structure with the view.
    pub async fn snapshot(&self) -> Result<Vector<T>, Error> {
        self.handle.query(|q| q.items.clone()).await
    }

    /// In transaction `tx`: puts `item` at the back when it commits. A
    /// write only: it never makes the commit abort.
    pub fn tx_push(&self, tx: &Txn, item: T) -> Result<(), Error> {
        tx.update(&self.handle, QueueOp::Push { item })
    }

    /// In transaction `tx`: takes the front item (as of the snapshot, after
    /// the transaction's own pushes and pops) when it commits, and returns
    /// it; `None`, and nothing written, if the queue is empty.
    ///
    /// The commit aborts if another pop landed after the snapshot, and
    /// also if a push did when the queue was empty at the snapshot or the
    /// item is one this transaction pushed (see the module docs): at its
    /// place in the log the op takes exactly the item returned here.
    pub async fn tx_pop(&self, tx: &Txn) -> Result<Option<T>, Error> {
        let front = self.tx_front(tx).await?;
        if front.is_some() {
            tx.update(&self.handle, QueueOp::Pop)?;
        }
        Ok(front)
    }

    /// In transaction `tx`: the front item as of the snapshot (after the
    /// transaction's own writes), without taking it. Reads the keys
    /// [`tx_pop`](Self::tx_pop) reads.
    pub async fn tx_peek(&self, tx: &Txn) -> Result<Option<T>, Error> {
        self.tx_front(tx).await
    }

    /// In transaction `tx`: the number of items as of the snapshot. Reads
    /// the whole queue: any push or pop after the snapshot makes the
    /// commit abort.
    pub async fn tx_len(&self, tx: &Txn) -> Result<usize, Error> {
        tx.read(&self.handle, |q| q.items.len()).await
    }

    /// The front item in `tx`, with the read keys of the module docs.
    async fn tx_front(&self, tx: &Txn) -> Result<Option<T>, Error> {
        let front = tx
            .read_keys(&self.handle, &[QUEUE_HEAD], QueueState::front)
            .await?;
        match front {
            Some((pushed_at, item)) if pushed_at <= tx.snapshot() => Ok(Some(item)),
            other => {
                // Empty at the snapshot, or the item is our own push: a
                // push by anyone else after the snapshot changes the answer.
                tx.read_keys(&self.handle, &[QUEUE_TAIL], |_| ()).await?;
                Ok(other.map(|(_, item)| item))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smr::{MemoryLog, Runtime};
    use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
    use std::sync::Arc;

    type Jobs = ReplicatedQueue<String>;

    #[tokio::test]
    async fn items_come_out_in_push_order_in_every_runtime() {
        let log = MemoryLog::new();
        let a: Jobs = Runtime::new(log.clone()).open("jobs").unwrap();
        let b: Jobs = Runtime::new(log.clone()).open("jobs").unwrap();
        assert!(a.is_empty().await.unwrap());
        assert_eq!(a.pop().await.unwrap(), None);
        assert_eq!(b.peek().await.unwrap(), None);

        let first = a.push("one".into()).await.unwrap();
        let second = b.push("two".into()).await.unwrap();
        assert!(second > first);
        a.push("three".into()).await.unwrap();
        assert_eq!(b.len().await.unwrap(), 3);
        assert_eq!(b.peek().await.unwrap().as_deref(), Some("one"));
        let before = a.snapshot().await.unwrap();

        assert_eq!(b.pop().await.unwrap().as_deref(), Some("one"));
        assert_eq!(a.pop().await.unwrap().as_deref(), Some("two"));
        assert_eq!(a.peek().await.unwrap().as_deref(), Some("three"));
        assert_eq!(b.len().await.unwrap(), 1);
        // The snapshot taken before the pops is unaffected by them.
        assert_eq!(
            before.iter().map(String::as_str).collect::<Vec<_>>(),
            vec!["one", "two", "three"]
        );
        assert_eq!(b.pop().await.unwrap().as_deref(), Some("three"));
        assert_eq!(a.pop().await.unwrap(), None);
        assert!(b.is_empty().await.unwrap());
        // A pop of an empty queue changed nothing: the next push is first.
        b.push("four".into()).await.unwrap();
        assert_eq!(a.pop().await.unwrap().as_deref(), Some("four"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_pops_take_every_pushed_item_exactly_once() {
        const PRODUCERS: usize = 4;
        const CONSUMERS: usize = 6;
        const ITEMS_PER_PRODUCER: usize = 40;
        const TOTAL: usize = PRODUCERS * ITEMS_PER_PRODUCER;

        let log = MemoryLog::new();
        let runtimes = [Runtime::new(log.clone()), Runtime::new(log.clone())];
        let taken = Arc::new(AtomicUsize::new(0));
        let mut producers = Vec::new();
        for p in 0..PRODUCERS {
            let q: ReplicatedQueue<u64> = runtimes[p % 2].open("work").unwrap();
            producers.push(tokio::spawn(async move {
                for i in 0..ITEMS_PER_PRODUCER {
                    q.push((p * 1000 + i) as u64).await.unwrap();
                }
            }));
        }
        let mut consumers = Vec::new();
        for c in 0..CONSUMERS {
            let q: ReplicatedQueue<u64> = runtimes[c % 2].open("work").unwrap();
            let taken = taken.clone();
            consumers.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                // Pops race with the pushes and with each other; a pop of
                // an empty queue is simply tried again.
                while taken.load(Ordering::SeqCst) < TOTAL {
                    match q.pop().await.unwrap() {
                        Some(item) => {
                            taken.fetch_add(1, Ordering::SeqCst);
                            mine.push(item);
                        }
                        None => tokio::task::yield_now().await,
                    }
                }
                mine
            }));
        }
        for p in producers {
            p.await.unwrap();
        }
        let mut popped = Vec::new();
        let mut busy_consumers = 0;
        for c in consumers {
            let mine = c.await.unwrap();
            busy_consumers += usize::from(!mine.is_empty());
            popped.extend(mine);
        }
        popped.sort_unstable();
        let mut pushed: Vec<u64> = (0..PRODUCERS)
            .flat_map(|p| (0..ITEMS_PER_PRODUCER).map(move |i| (p * 1000 + i) as u64))
            .collect();
        pushed.sort_unstable();
        // No duplicate and nothing lost.
        assert_eq!(popped, pushed);
        assert!(busy_consumers > 1, "the pops did not run concurrently");
        for rt in &runtimes {
            let q: ReplicatedQueue<u64> = rt.open("work").unwrap();
            assert!(q.is_empty().await.unwrap());
            assert_eq!(q.pop().await.unwrap(), None);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn transactional_moves_between_queues_lose_and_duplicate_nothing() {
        const ITEMS: u64 = 60;
        let log = MemoryLog::new();
        let runtimes = [Runtime::new(log.clone()), Runtime::new(log.clone())];
        let inbox: ReplicatedQueue<u64> = runtimes[0].open("inbox").unwrap();
        for i in 0..ITEMS {
            inbox.push(i).await.unwrap();
        }
        let mut tasks = Vec::new();
        for task in 0..6 {
            let rt = runtimes[task % 2].clone();
            tasks.push(tokio::spawn(async move {
                let inbox: ReplicatedQueue<u64> = rt.open("inbox").unwrap();
                let done: ReplicatedQueue<u64> = rt.open("done").unwrap();
                let mut moved = Vec::new();
                loop {
                    let (inbox, done) = (&inbox, &done);
                    let result = rt
                        .transaction(|tx| async move {
                            let Some(item) = inbox.tx_pop(&tx).await? else {
                                return Ok(None);
                            };
                            done.tx_push(&tx, item)?;
                            Ok(Some(item))
                        })
                        .await;
                    match result {
                        Ok(Some(item)) => moved.push(item),
                        Ok(None) => return moved,
                        Err(Error::Aborted { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            }));
        }
        let mut moved = Vec::new();
        for task in tasks {
            moved.extend(task.await.unwrap());
        }
        moved.sort_unstable();
        assert_eq!(moved, (0..ITEMS).collect::<Vec<_>>());
        for rt in &runtimes {
            let inbox: ReplicatedQueue<u64> = rt.open("inbox").unwrap();
            let done: ReplicatedQueue<u64> = rt.open("done").unwrap();
            assert!(inbox.is_empty().await.unwrap());
            let mut arrived: Vec<u64> = done.snapshot().await.unwrap().into_iter().collect();
            arrived.sort_unstable();
            assert_eq!(arrived, moved);
        }
    }

    /// Runs one transaction on `q` (in `rt`) that pushes `own` (if any),
    /// then pops, and stores what it popped in the queue "popped"; between
    /// its snapshot and its commit, `meddle` is appended through `other`,
    /// on the first attempt only. Returns how many attempts it took and
    /// what it popped.
    async fn pop_with_meddling(
        rt: &Runtime,
        q: &Jobs,
        other: &Jobs,
        own: Option<&str>,
        meddle: QueueOp<String>,
    ) -> (u32, Option<String>) {
        let popped: Jobs = rt.open("popped").unwrap();
        let attempts = AtomicU32::new(0);
        let (attempts_ref, meddle, popped) = (&attempts, &meddle, &popped);
        let own = own.map(str::to_string);
        let own = &own;
        let taken = rt
            .transaction(|tx| async move {
                let n = attempts_ref.fetch_add(1, Ordering::SeqCst);
                if let Some(item) = own {
                    q.tx_push(&tx, item.clone())?;
                }
                let taken = q.tx_pop(&tx).await?;
                if n == 0 {
                    other.handle().update(meddle.clone()).await?;
                }
                popped.tx_push(&tx, taken.clone().unwrap_or_default())?;
                Ok(taken)
            })
            .await
            .unwrap();
        (attempts.load(Ordering::SeqCst), taken)
    }

    #[tokio::test]
    async fn transactional_pops_conflict_with_what_changes_their_item() {
        let log = MemoryLog::new();
        let rt = Runtime::new(log.clone());
        let q: Jobs = rt.open("q").unwrap();
        let other: Jobs = Runtime::new(log.clone()).open("q").unwrap();
        let push = |item: &str| QueueOp::Push { item: item.into() };

        // The item was there at the snapshot: a later push goes behind it.
        q.push("a".into()).await.unwrap();
        assert_eq!(
            pop_with_meddling(&rt, &q, &other, None, push("b")).await,
            (1, Some("a".into()))
        );
        // A later pop takes "b" first: the retry takes "c".
        q.push("c".into()).await.unwrap();
        assert_eq!(
            pop_with_meddling(&rt, &q, &other, None, QueueOp::Pop).await,
            (2, Some("c".into()))
        );
        // Empty at the snapshot: a push after it changes the answer.
        assert!(q.is_empty().await.unwrap());
        assert_eq!(
            pop_with_meddling(&rt, &q, &other, None, push("d")).await,
            (2, Some("d".into()))
        );
        // The item is the transaction's own push: a push by another after
        // the snapshot would be in front of it at commit.
        assert_eq!(
            pop_with_meddling(&rt, &q, &other, Some("mine"), push("e")).await,
            (2, Some("e".into()))
        );
        // The retry pushed "mine" behind "e" and took "e".
        assert_eq!(
            q.snapshot().await.unwrap().into_iter().collect::<Vec<_>>(),
            vec!["mine".to_string()]
        );
        let popped: Jobs = rt.open("popped").unwrap();
        assert_eq!(
            popped
                .snapshot()
                .await
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            vec!["a", "c", "d", "e"]
        );
    }

    #[tokio::test]
    async fn transactions_read_their_own_pushes_and_pops() {
        let rt = Runtime::new(MemoryLog::new());
        let q: Jobs = rt.open("q").unwrap();
        q.push("x".into()).await.unwrap();
        let q_ref = &q;
        let seen = rt
            .transaction(|tx| async move {
                q_ref.tx_push(&tx, "y".into())?;
                let len = q_ref.tx_len(&tx).await?;
                let first = q_ref.tx_pop(&tx).await?;
                let peeked = q_ref.tx_peek(&tx).await?;
                let second = q_ref.tx_pop(&tx).await?;
                let none = q_ref.tx_pop(&tx).await?;
                Ok((len, first, peeked, second, none))
            })
            .await
            .unwrap();
        assert_eq!(
            seen,
            (
                2,
                Some("x".to_string()),
                Some("y".to_string()),
                Some("y".to_string()),
                None
            )
        );
        assert!(q.is_empty().await.unwrap());
    }

    #[test]
    fn pushes_and_pops_write_different_keys() {
        type S = QueueState<String>;
        assert_eq!(
            S::write_keys(&QueueOp::Push { item: "a".into() }),
            vec![QUEUE_TAIL]
        );
        assert_eq!(S::write_keys(&QueueOp::Pop), vec![QUEUE_HEAD]);
        assert_ne!(QUEUE_HEAD, smr::WHOLE_OBJECT);
        assert_ne!(QUEUE_TAIL, smr::WHOLE_OBJECT);
    }
}
