//! A stream written by one kind of object is never played back, nor
//! written, as another kind (issue 15, item 3): for every ordered pair of
//! the object types, ops of the first type (a plain update and a
//! transaction) are refused by the second with an error naming the object,
//! both types and the address, and nothing is applied or appended.
//!
//! The archives of `SetOp<String>` and `QueueOp<String>` (and of other
//! pairs) are interchangeable, so without a type in every entry a set
//! listed a queue's items and a set's remove was played as a pop.

use objects::{
    ReplicatedCounter, ReplicatedMap, ReplicatedQueue, ReplicatedRegister, ReplicatedSet,
};
use smr::{Error, MemoryLog, Runtime, SharedLog};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Map,
    Counter,
    Queue,
    Register,
    Set,
}

const KINDS: [Kind; 5] = [
    Kind::Map,
    Kind::Counter,
    Kind::Queue,
    Kind::Register,
    Kind::Set,
];

type Map = ReplicatedMap<String, String>;
type Queue = ReplicatedQueue<String>;
type Register = ReplicatedRegister<String>;
type Set = ReplicatedSet<String>;

impl Kind {
    /// The type name its entries carry.
    fn type_name(self) -> &'static str {
        match self {
            Kind::Map => "corfu.map",
            Kind::Counter => "corfu.counter",
            Kind::Queue => "corfu.queue",
            Kind::Register => "corfu.register",
            Kind::Set => "corfu.set",
        }
    }

    /// One plain write of `item` (the CLI's types: strings everywhere).
    async fn write(self, rt: &Runtime, name: &str, item: &str) -> Result<(), Error> {
        let item = item.to_string();
        match self {
            Kind::Map => rt.open::<Map>(name)?.insert(item.clone(), item).await?,
            Kind::Counter => rt.open::<ReplicatedCounter>(name)?.add(1).await?,
            Kind::Queue => rt.open::<Queue>(name)?.push(item).await?,
            Kind::Register => rt.open::<Register>(name)?.set(item).await?,
            Kind::Set => rt.open::<Set>(name)?.insert(item).await?,
        };
        Ok(())
    }

    /// One transaction writing `item` without reading the object.
    async fn tx_write(self, rt: &Runtime, name: &str, item: &str) -> Result<(), Error> {
        let item = item.to_string();
        match self {
            Kind::Map => {
                let m: Map = rt.open(name)?;
                let (m, item) = (&m, &item);
                rt.transaction(|tx| async move { m.tx_insert(&tx, item.clone(), item.clone()) })
                    .await
            }
            Kind::Counter => {
                let c: ReplicatedCounter = rt.open(name)?;
                let c = &c;
                rt.transaction(|tx| async move { c.tx_add(&tx, 1) }).await
            }
            Kind::Queue => {
                let q: Queue = rt.open(name)?;
                let (q, item) = (&q, &item);
                rt.transaction(|tx| async move { q.tx_push(&tx, item.clone()) })
                    .await
            }
            Kind::Register => {
                let r: Register = rt.open(name)?;
                let (r, item) = (&r, &item);
                rt.transaction(|tx| async move { r.tx_set(&tx, item.clone()) })
                    .await
            }
            Kind::Set => {
                let s: Set = rt.open(name)?;
                let (s, item) = (&s, &item);
                rt.transaction(|tx| async move { s.tx_insert(&tx, item.clone()) })
                    .await
            }
        }
    }

    /// The whole state, as text (a linearizable read).
    async fn describe(self, rt: &Runtime, name: &str) -> Result<String, Error> {
        Ok(match self {
            Kind::Map => format!("{:?}", rt.open::<Map>(name)?.snapshot().await?),
            Kind::Counter => format!("{}", rt.open::<ReplicatedCounter>(name)?.get().await?),
            Kind::Queue => format!("{:?}", rt.open::<Queue>(name)?.snapshot().await?),
            Kind::Register => format!("{:?}", rt.open::<Register>(name)?.get().await?),
            Kind::Set => format!("{:?}", rt.open::<Set>(name)?.snapshot().await?),
        })
    }

    /// A transaction reading the object.
    async fn tx_read(self, rt: &Runtime, name: &str) -> Result<String, Error> {
        match self {
            Kind::Map => {
                let m: Map = rt.open(name)?;
                let m = &m;
                rt.transaction(|tx| async move { Ok(format!("{:?}", m.tx_snapshot(&tx).await?)) })
                    .await
            }
            Kind::Counter => {
                let c: ReplicatedCounter = rt.open(name)?;
                let c = &c;
                rt.transaction(|tx| async move { Ok(format!("{}", c.tx_get(&tx).await?)) })
                    .await
            }
            Kind::Queue => {
                let q: Queue = rt.open(name)?;
                let q = &q;
                rt.transaction(|tx| async move { Ok(format!("{:?}", q.tx_peek(&tx).await?)) })
                    .await
            }
            Kind::Register => {
                let r: Register = rt.open(name)?;
                let r = &r;
                rt.transaction(|tx| async move { Ok(format!("{:?}", r.tx_get(&tx).await?)) })
                    .await
            }
            Kind::Set => {
                let s: Set = rt.open(name)?;
                let s = &s;
                rt.transaction(|tx| async move { Ok(format!("{:?}", s.tx_snapshot(&tx).await?)) })
                    .await
            }
        }
    }
}

/// `result` failed because `opened` met an entry of `written`'s type.
fn assert_wrong_type<R: std::fmt::Debug>(
    result: Result<R, Error>,
    what: &str,
    name: &str,
    opened: Kind,
    written: Kind,
) {
    let error = match result {
        Ok(r) => panic!(
            "{what}: a {written:?}'s stream used as a {opened:?} gave {r:?} instead of an error"
        ),
        Err(e) => e.to_string(),
    };
    let expected = [
        format!("object {name:?}"),
        format!("opened as {:?} version 1", opened.type_name()),
        format!("is {:?} version 1", written.type_name()),
        "at address".to_string(),
    ];
    for part in expected {
        assert!(
            error.contains(&part),
            "{what}: {written:?} written, {opened:?} opened: {error:?} lacks {part:?}"
        );
    }
}

#[tokio::test]
async fn every_object_type_refuses_every_other_types_stream() {
    for written in KINDS {
        for opened in KINDS {
            if written == opened {
                continue;
            }
            let log = MemoryLog::new();
            let name = format!("{written:?}-then-{opened:?}");
            let name = name.as_str();
            // The stream holds a plain update and a transaction entry.
            let writer = Runtime::new(log.clone());
            written.write(&writer, name, "job-1").await.unwrap();
            written.tx_write(&writer, name, "job-2").await.unwrap();
            let state = written
                .describe(&Runtime::new(log.clone()), name)
                .await
                .unwrap();
            let tail = log.tail().await.unwrap();

            // Read as the other type: refused, and again (the view stopped).
            let reader = Runtime::new(log.clone());
            for _ in 0..2 {
                let read = opened.describe(&reader, name).await;
                assert_wrong_type(read, "query", name, opened, written);
            }
            let read = opened.tx_read(&Runtime::new(log.clone()), name).await;
            assert_wrong_type(read, "transactional read", name, opened, written);

            // Write as the other type: refused before anything is appended.
            let write = opened
                .write(&Runtime::new(log.clone()), name, "job-1")
                .await;
            assert_wrong_type(write, "update", name, opened, written);
            let write = opened
                .tx_write(&Runtime::new(log.clone()), name, "job-1")
                .await;
            assert_wrong_type(write, "transactional write", name, opened, written);
            assert_eq!(
                log.tail().await.unwrap(),
                tail,
                "{name}: something appended"
            );

            // The object itself is untouched.
            let again = written
                .describe(&Runtime::new(log.clone()), name)
                .await
                .unwrap();
            assert_eq!(again, state, "{name}");
        }
    }
}

/// The example, step by step: a queue's item is not listed by a
/// set, and a set's remove does not pop it.
#[tokio::test]
async fn a_queue_is_no_set() {
    let log = MemoryLog::new();
    let rt = Runtime::new(log.clone());
    let q2: Queue = rt.open("q2").unwrap();
    q2.push("job-1".into()).await.unwrap();

    let other = Runtime::new(log.clone());
    let as_set: Set = other.open("q2").unwrap();
    let error = as_set.snapshot().await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "object \"q2\" (stream {}) is opened as \"corfu.set\" version 1, but the entry at \
             address 0 is \"corfu.queue\" version 1: nothing of another type is applied or \
             written, and the view stops before that entry",
            smr::StreamId::from_name("q2")
        )
    );
    let remover: Set = Runtime::new(log.clone()).open("q2").unwrap();
    assert!(remover.remove("job-1".into()).await.is_err());
    assert_eq!(q2.pop().await.unwrap().as_deref(), Some("job-1"));
}
