//! Replicated objects over a real 3-node cluster (QUIC on loopback): two
//! runtimes, each with its own log client, as two processes would be.
//! Many tasks in both update a map and three counters concurrently, and
//! check as they go that
//! - every query begun after an update's acknowledgment sees it, in the
//!   *other* runtime (linearizability spot checks: a map key, a removal,
//!   a lower bound on a counter);
//! - outcomes decided by log order are consistent across runtimes:
//!   fetch-and-add hands out each value once, and compare-and-set
//!   increments lose nothing (the final value is the number of reported
//!   successes).
//!
//! Finally both runtimes hold identical states, equal to the model built
//! from the acknowledged operations.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corfu::core::client::LogClient;
use corfu::local::{LocalCluster, LocalOptions};
use corfu::objects::{ReplicatedCounter, ReplicatedMap};
use corfu::smr::Runtime;

const TASKS_PER_RUNTIME: usize = 8;
const ROUNDS: usize = 16;
/// Attempts one compare-and-set increment may take under contention.
const CAS_ATTEMPTS_MAX: usize = 500;

async fn within<F: Future>(secs: u64, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: did not finish within {secs} s"),
    }
}

/// One task's record: what it left in the map, its fetch-and-add values,
/// and its successful compare-and-set increments.
struct Done {
    map: BTreeMap<String, u64>,
    tickets: Vec<i64>,
    cas_wins: i64,
}

/// The objects of one runtime, and the same objects seen by the other.
#[derive(Clone)]
struct Side {
    map: ReplicatedMap<String, u64>,
    hits: ReplicatedCounter,
    tickets: ReplicatedCounter,
    version: ReplicatedCounter,
}

impl Side {
    fn open(rt: &Runtime) -> Side {
        Side {
            map: rt.open("kv").unwrap(),
            hits: rt.open("hits").unwrap(),
            tickets: rt.open("tickets").unwrap(),
            version: rt.open("version").unwrap(),
        }
    }
}

async fn worker(r: usize, t: usize, mine: Side, other: Side, acked_hits: Arc<AtomicI64>) -> Done {
    let mut done = Done {
        map: BTreeMap::new(),
        tickets: Vec::new(),
        cas_wins: 0,
    };
    for i in 0..ROUNDS {
        let key = format!("r{r}-t{t}-i{i}");
        let value = (r * 10_000 + t * 100 + i) as u64;
        mine.map.insert(key.clone(), value).await.unwrap();
        done.map.insert(key.clone(), value);
        assert_eq!(
            other.map.get(&key).await.unwrap(),
            Some(value),
            "{key}: a get begun after the insert was acknowledged missed it"
        );
        if i % 4 == 3 {
            let old = format!("r{r}-t{t}-i{}", i - 2);
            // Half the removals go through the other runtime.
            let remover = if i % 8 == 3 { &mine } else { &other };
            remover.map.remove(old.clone()).await.unwrap();
            done.map.remove(&old);
            assert!(
                !mine.map.contains_key(&old).await.unwrap(),
                "{old}: still present after its acknowledged removal"
            );
        }

        mine.hits.add(1).await.unwrap();
        // Every add counted here was acknowledged before the query below.
        let acked = acked_hits.fetch_add(1, Ordering::SeqCst) + 1;
        let seen = other.hits.get().await.unwrap();
        assert!(
            seen >= acked,
            "hits: saw {seen} after {acked} acknowledged adds"
        );

        let ticketing = if i % 2 == 0 { &mine } else { &other };
        done.tickets
            .push(ticketing.tickets.add_and_get(1).await.unwrap());

        let casing = if i % 2 == 1 { &mine } else { &other };
        let mut attempts = 0;
        loop {
            attempts += 1;
            assert!(attempts <= CAS_ATTEMPTS_MAX, "version: no CAS succeeded");
            let current = casing.version.get().await.unwrap();
            if casing
                .version
                .compare_and_set(current, current + 1)
                .await
                .unwrap()
            {
                done.cas_wins += 1;
                break;
            }
        }
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_over_the_log_are_linearizable_and_converge() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(&dir.path().join("cluster"), 3, LocalOptions::default())
        .await
        .unwrap();
    let config = cluster.client_config();
    let runtimes = [
        Runtime::new(LogClient::connect(&config).await.unwrap()),
        Runtime::new(LogClient::connect(&config).await.unwrap()),
    ];
    let sides = [Side::open(&runtimes[0]), Side::open(&runtimes[1])];
    let acked_hits = Arc::new(AtomicI64::new(0));

    let mut tasks = Vec::new();
    for r in 0..2 {
        for t in 0..TASKS_PER_RUNTIME {
            tasks.push(tokio::spawn(worker(
                r,
                t,
                sides[r].clone(),
                sides[1 - r].clone(),
                acked_hits.clone(),
            )));
        }
    }
    let done: Vec<Done> = within(180, "workers", async {
        let mut done = Vec::new();
        for task in tasks {
            done.push(task.await.unwrap());
        }
        done
    })
    .await;

    let mut model = BTreeMap::new();
    let mut tickets = Vec::new();
    let mut cas_wins = 0;
    for d in done {
        model.extend(d.map);
        tickets.extend(d.tickets);
        cas_wins += d.cas_wins;
    }
    let updates = (2 * TASKS_PER_RUNTIME * ROUNDS) as i64;
    tickets.sort_unstable();
    assert_eq!(
        tickets,
        (1..=updates).collect::<Vec<_>>(),
        "fetch-and-add handed out every value exactly once"
    );
    assert_eq!(cas_wins, updates);

    let mut states = Vec::new();
    for side in &sides {
        let map: BTreeMap<String, u64> = within(30, "snapshot", side.map.snapshot())
            .await
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(map.len(), side.map.len().await.unwrap());
        states.push((
            map,
            side.hits.get().await.unwrap(),
            side.tickets.get().await.unwrap(),
            side.version.get().await.unwrap(),
        ));
    }
    assert_eq!(states[0], states[1], "both runtimes hold the same states");
    assert_eq!(states[0], (model, updates, updates, cas_wins));

    cluster.shutdown().await;
}
