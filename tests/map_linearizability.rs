//! Map operations are linearizable under concurrency from several
//! runtimes (issue #7, item 9), checked against a sequential model (a
//! register per key) by the Wing-Gong search of
//! [`support::linearizability`].
//!
//! Three runtimes, each with its own log client (as three processes would
//! be), run a dozen tasks over a small key space of one
//! [`ReplicatedMap<u32, u64>`]: random inserts (every value unique, so a
//! read names the write it saw), removes and gets, each recorded with its
//! invocation and response on one monotonic clock. A second test does
//! read-modify-write increments in transactions, plus plain and
//! transactional reads, and checks that history too. A call that fails is
//! recorded as "may or may not have taken effect".
//!
//! The checker's own tests (hand-made histories that must pass or fail,
//! and large random linearizable ones) come first: a checker that cannot
//! fail would make the cluster tests prove nothing.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use corfu::core::client::LogClient;
use corfu::local::{LocalCluster, LocalOptions};
use corfu::objects::ReplicatedMap;
use corfu::smr::{Error, Runtime};
use rand::{Rng, SeedableRng};
use support::linearizability::{self as lin, Call, Clock, Operation};
use support::within;

const RUNTIMES: usize = 3;
const TASKS_PER_RUNTIME: usize = 4;
const OPS_PER_TASK: usize = 150;
const KEYS: u32 = 4;
/// Increments contend on fewer keys, so transactions conflict.
const COUNTER_KEYS: u32 = 2;
const TX_TASKS_PER_RUNTIME: usize = 3;
const TX_OPS_PER_TASK: usize = 60;
/// Calls allowed to fail (unknown outcome) per hundred, so a run where
/// most calls failed cannot pass on a history with nothing in it.
const FAILED_CALLS_PERCENT_MAX: usize = 10;

type History = Vec<Operation<u32, u64>>;

/// A value no other operation of the run writes.
fn unique_value(client: usize, i: usize) -> u64 {
    ((client as u64) << 32) | i as u64
}

/// One task: `OPS_PER_TASK` random operations on `map`, recorded.
async fn map_worker(client: usize, map: ReplicatedMap<u32, u64>, clock: Clock) -> (History, usize) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
    let mut history = Vec::with_capacity(OPS_PER_TASK);
    let mut failed = 0;
    for i in 0..OPS_PER_TASK {
        let key = rng.random_range(0..KEYS);
        let invoke_ns = clock.now_ns();
        let (call, ok) = match rng.random_range(0..10) {
            0..=3 => match map.get(&key).await {
                Ok(seen) => (Call::Get(seen), true),
                // A failed read tells nothing: the checker drops it.
                Err(_) => (Call::Get(None), false),
            },
            4..=7 => {
                let value = unique_value(client, i);
                (Call::Put(value), map.insert(key, value).await.is_ok())
            }
            _ => (Call::Remove, map.remove(key).await.is_ok()),
        };
        let response_ns = clock.now_ns();
        failed += usize::from(!ok);
        history.push(Operation {
            client,
            key,
            call,
            invoke_ns,
            response_ns: ok.then_some(response_ns),
        });
    }
    (history, failed)
}

async fn start_cluster(dir: &tempfile::TempDir) -> (LocalCluster, Vec<Runtime>) {
    let cluster = LocalCluster::start(&dir.path().join("cluster"), 3, LocalOptions::default())
        .await
        .unwrap();
    let config = cluster.client_config();
    let mut runtimes = Vec::new();
    for _ in 0..RUNTIMES {
        runtimes.push(Runtime::new(LogClient::connect(&config).await.unwrap()));
    }
    (cluster, runtimes)
}

/// Joins the tasks, checks the failed-call bound and the history, and
/// prints what was checked.
async fn check_tasks(what: &str, tasks: Vec<tokio::task::JoinHandle<(History, usize)>>) {
    let started = Instant::now();
    let (history, failed) = within(120, what, async {
        let mut history = Vec::new();
        let mut failed = 0;
        for task in tasks {
            let (h, f) = task.await.unwrap();
            history.extend(h);
            failed += f;
        }
        (history, failed)
    })
    .await;
    let ran_ms = started.elapsed().as_millis();
    assert!(
        failed * 100 <= history.len() * FAILED_CALLS_PERCENT_MAX,
        "{what}: {failed} of {} calls failed",
        history.len()
    );
    let started = Instant::now();
    let checked = lin::check(&history).unwrap_or_else(|v| panic!("{what}: {v}"));
    eprintln!(
        "{what}: {} operations ({failed} failed) ran in {ran_ms} ms; \
         checked {} over {} keys, {} search nodes, in {} ms",
        history.len(),
        checked.ops,
        checked.keys,
        checked.nodes,
        started.elapsed().as_millis()
    );
    assert!(checked.ops > history.len() / 2, "{what}: {checked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_map_operations_from_three_runtimes_are_linearizable() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, runtimes) = start_cluster(&dir).await;
    let clock = Clock::new();
    let mut tasks = Vec::new();
    for (r, rt) in runtimes.iter().enumerate() {
        let map: ReplicatedMap<u32, u64> = rt.open("kv").unwrap();
        for t in 0..TASKS_PER_RUNTIME {
            let client = r * TASKS_PER_RUNTIME + t;
            tasks.push(tokio::spawn(map_worker(client, map.clone(), clock)));
        }
    }
    check_tasks("map", tasks).await;
    cluster.shutdown().await;
}

/// One task: increments of a counter key in transactions (read `n`,
/// write `n + 1`), reads with `get`, and reads in read-only transactions.
async fn tx_worker(
    client: usize,
    rt: Runtime,
    map: ReplicatedMap<u32, u64>,
    clock: Clock,
) -> (History, usize) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
    let mut history = Vec::with_capacity(TX_OPS_PER_TASK);
    let mut failed = 0;
    for _ in 0..TX_OPS_PER_TASK {
        let key = rng.random_range(0..COUNTER_KEYS);
        let invoke_ns = clock.now_ns();
        let (call, outcome) = match rng.random_range(0..4) {
            0 | 1 => {
                // The read and write of the last run of the body: the
                // attempt whose commit may have taken effect if the
                // commit's outcome is unknown.
                let last = Arc::new(Mutex::new(None));
                let result = rt
                    .transaction(|tx| {
                        let (map, last) = (&map, last.clone());
                        async move {
                            let read = map.tx_get(&tx, &key).await?;
                            let write = read.unwrap_or(0) + 1;
                            map.tx_insert(&tx, key, write)?;
                            *last.lock().unwrap() = Some((read, write));
                            Ok((read, write))
                        }
                    })
                    .await;
                match result {
                    Ok((read, write)) => (
                        Call::Rmw {
                            read,
                            write: Some(write),
                        },
                        Some(true),
                    ),
                    // Refused every time: nothing of it is in the log.
                    Err(Error::Aborted { .. }) => continue,
                    Err(_) => match *last.lock().unwrap() {
                        Some((read, write)) => (
                            Call::Rmw {
                                read,
                                write: Some(write),
                            },
                            Some(false),
                        ),
                        // The body never ran to its write: no commit.
                        None => (Call::Get(None), None),
                    },
                }
            }
            2 => match map.get(&key).await {
                Ok(seen) => (Call::Get(seen), Some(true)),
                Err(_) => (Call::Get(None), None),
            },
            _ => match rt
                .transaction(|tx| {
                    let map = &map;
                    async move { map.tx_get(&tx, &key).await }
                })
                .await
            {
                Ok(seen) => (Call::Get(seen), Some(true)),
                Err(_) => (Call::Get(None), None),
            },
        };
        let response_ns = clock.now_ns();
        let Some(answered) = outcome else {
            // A failed read, or a transaction that wrote nothing.
            failed += 1;
            continue;
        };
        failed += usize::from(!answered);
        history.push(Operation {
            client,
            key,
            call,
            invoke_ns,
            response_ns: answered.then_some(response_ns),
        });
    }
    (history, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_increments_and_reads_are_linearizable() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, runtimes) = start_cluster(&dir).await;
    let clock = Clock::new();
    let mut tasks = Vec::new();
    for (r, rt) in runtimes.iter().enumerate() {
        let map: ReplicatedMap<u32, u64> = rt.open("counters").unwrap();
        for t in 0..TX_TASKS_PER_RUNTIME {
            let client = r * TX_TASKS_PER_RUNTIME + t;
            tasks.push(tokio::spawn(tx_worker(
                client,
                rt.clone(),
                map.clone(),
                clock,
            )));
        }
    }
    check_tasks("transactions", tasks).await;
    for rt in &runtimes {
        eprintln!("{:?}", rt.transaction_stats());
    }
    cluster.shutdown().await;
}

// The checker itself.

mod checker {
    use super::lin::*;
    use std::collections::BTreeMap;

    fn op(client: usize, key: u32, call: Call<u64>, invoke: u64, ret: u64) -> Operation<u32, u64> {
        Operation {
            client,
            key,
            call,
            invoke_ns: invoke,
            response_ns: Some(ret),
        }
    }

    fn unknown(client: usize, key: u32, call: Call<u64>, invoke: u64) -> Operation<u32, u64> {
        Operation {
            client,
            key,
            call,
            invoke_ns: invoke,
            response_ns: None,
        }
    }

    use Call::{Get, Put, Remove, Rmw};

    #[test]
    fn a_sequential_history_passes() {
        let h = vec![
            op(0, 1, Get(None), 0, 1),
            op(0, 1, Put(10), 2, 3),
            op(1, 1, Get(Some(10)), 4, 5),
            op(1, 1, Remove, 6, 7),
            op(0, 1, Get(None), 8, 9),
            op(
                0,
                1,
                Rmw {
                    read: None,
                    write: Some(1),
                },
                10,
                11,
            ),
            op(
                0,
                1,
                Rmw {
                    read: Some(1),
                    write: Some(2),
                },
                12,
                13,
            ),
            op(1, 1, Get(Some(2)), 14, 15),
        ];
        let checked = check(&h).unwrap();
        assert_eq!((checked.ops, checked.keys), (8, 1));
    }

    #[test]
    fn overlapping_operations_may_take_either_order() {
        // The put and both reads overlap: one read before it, one after,
        // in the reverse of their invocation order.
        let h = vec![
            op(0, 1, Put(10), 0, 100),
            op(1, 1, Get(Some(10)), 10, 20),
            op(2, 1, Get(None), 30, 40),
        ];
        // Get(None) at 30..40 after Get(Some(10)) answered at 20: not
        // linearizable (the register never goes back to empty).
        assert!(check(&h).is_err());
        let h = vec![
            op(0, 1, Put(10), 0, 100),
            op(1, 1, Get(None), 10, 20),
            op(3, 1, Put(11), 5, 35),
            op(4, 1, Get(Some(11)), 36, 50),
            op(4, 1, Get(Some(10)), 51, 60),
        ];
        // None, put 11, get 11, put 10, get 10.
        check(&h).unwrap();
    }

    #[test]
    fn a_stale_read_after_a_completed_put_fails() {
        let h = vec![
            op(0, 7, Put(1), 0, 10),
            op(0, 7, Put(2), 20, 30),
            op(1, 7, Get(Some(1)), 40, 50),
        ];
        let v = check(&h).unwrap_err();
        assert_eq!(v.key, 7);
        assert!(!v.undecided);
        assert_eq!(v.stuck.call, Get(Some(1)));
        assert_eq!(v.prefix_len, 2);
        assert_eq!(v.state, Some(2));
        let report = v.to_string();
        assert!(report.contains("key 7: not linearizable"), "{report}");
    }

    #[test]
    fn a_read_after_a_completed_remove_seeing_the_value_fails() {
        let h = vec![
            op(0, 7, Put(1), 0, 10),
            op(0, 7, Remove, 20, 30),
            op(1, 7, Get(Some(1)), 40, 50),
        ];
        assert!(check(&h).is_err());
    }

    #[test]
    fn a_read_of_a_value_never_written_fails() {
        let h = vec![op(0, 1, Put(1), 0, 10), op(1, 1, Get(Some(99)), 5, 50)];
        let v = check(&h).unwrap_err();
        assert_eq!(v.stuck.call, Get(Some(99)));
    }

    #[test]
    fn reads_in_an_order_contradicting_real_time_fail() {
        // Put 1 was answered before put 2 was invoked; a read saw 2, and
        // a read invoked after it was answered saw 1 again.
        let h = vec![
            op(0, 1, Put(1), 0, 10),
            op(0, 1, Put(2), 20, 100),
            op(1, 1, Get(Some(2)), 30, 40),
            op(2, 1, Get(Some(1)), 50, 60),
        ];
        let v = check(&h).unwrap_err();
        assert_eq!(v.stuck.call, Get(Some(1)));
        // Overlapping, the two reads could be in either order.
        let mut overlapping = h.clone();
        overlapping[3].invoke_ns = 35;
        check(&overlapping).unwrap();

        // Both puts overlap both reads, but the first read (answered
        // before the second began) saw 2 and the second saw 1: the puts
        // would have to take effect in both orders.
        let h = vec![
            op(0, 1, Put(1), 0, 100),
            op(1, 1, Put(2), 0, 100),
            op(2, 1, Get(Some(2)), 10, 20),
            op(2, 1, Get(Some(1)), 30, 40),
            op(3, 1, Get(Some(2)), 50, 60),
        ];
        let v = check(&h).unwrap_err();
        assert_eq!(v.key, 1);
        // Without the last read it is linearizable: 2, then 1.
        check(&h[..4]).unwrap();
    }

    #[test]
    fn a_lost_increment_fails() {
        // Two read-modify-writes both read 0: one of them must have read
        // the other's write.
        let h = vec![
            op(
                0,
                1,
                Rmw {
                    read: None,
                    write: Some(1),
                },
                0,
                10,
            ),
            op(
                1,
                1,
                Rmw {
                    read: None,
                    write: Some(1),
                },
                5,
                15,
            ),
        ];
        assert!(check(&h).is_err());
    }

    #[test]
    fn keys_are_checked_apart() {
        // Each key alone is linearizable; key 2's violation is reported
        // even though key 1 is fine.
        let h = vec![
            op(0, 1, Put(1), 0, 10),
            op(0, 2, Put(2), 0, 10),
            op(1, 1, Get(Some(1)), 20, 30),
            op(1, 2, Get(None), 20, 30),
        ];
        let v = check(&h).unwrap_err();
        assert_eq!(v.key, 2);
        check(&h[..3]).unwrap();
    }

    #[test]
    fn an_unknown_outcome_may_or_may_not_take_effect() {
        // A put that failed, seen by one read.
        let seen = vec![
            unknown(0, 1, Put(5), 0),
            op(1, 1, Get(Some(5)), 10, 20),
            op(1, 1, Get(Some(5)), 30, 40),
        ];
        check(&seen).unwrap();
        // ... or never seen.
        let unseen = vec![
            unknown(0, 1, Put(5), 0),
            op(1, 1, Get(None), 10, 20),
            op(1, 1, Get(None), 30, 40),
        ];
        check(&unseen).unwrap();
        // But it takes effect once: seen, then gone, then seen again fails.
        let flicker = vec![
            op(2, 1, Put(4), 0, 5),
            unknown(0, 1, Put(5), 6),
            op(1, 1, Get(Some(5)), 10, 20),
            op(2, 1, Put(6), 25, 28),
            op(1, 1, Get(Some(5)), 30, 40),
        ];
        assert!(check(&flicker).is_err());
        // Not before it was invoked.
        let early = vec![op(1, 1, Get(Some(5)), 0, 10), unknown(0, 1, Put(5), 20)];
        assert!(check(&early).is_err());
        // An unknown read tells nothing.
        let read = vec![unknown(0, 1, Get(Some(77)), 0)];
        assert_eq!(check(&read).unwrap().ops, 0);
    }

    /// A random history that is linearizable by construction: operations
    /// take effect one after another at distinct instants, and each is
    /// invoked a random time before its instant and answered a random time
    /// after, so up to dozens overlap.
    fn random_linearizable(ops: usize, keys: u32, seed: u64) -> Vec<Operation<u32, u64>> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut registers: BTreeMap<u32, u64> = BTreeMap::new();
        let mut history = Vec::with_capacity(ops);
        for n in 0..ops as u64 {
            let at = 1_000 + 100 * n;
            let key = rng.random_range(0..keys);
            let call = match rng.random_range(0..10) {
                0..=3 => Get(registers.get(&key).copied()),
                4..=6 => {
                    // Far from every value an increment writes.
                    let value = (n + 1) * 1_000_000;
                    registers.insert(key, value);
                    Put(value)
                }
                7 => {
                    registers.remove(&key);
                    Remove
                }
                _ => {
                    let read = registers.get(&key).copied();
                    let write = read.unwrap_or(0) + 1;
                    registers.insert(key, write);
                    Rmw {
                        read,
                        write: Some(write),
                    }
                }
            };
            let invoke = at - rng.random_range(0..1_000);
            let ret = at + rng.random_range(0..1_000);
            history.push(op((n % 12) as usize, key, call, invoke, ret));
        }
        history
    }

    #[test]
    fn thousands_of_overlapping_operations_are_checked() {
        for seed in 0..4 {
            let h = random_linearizable(4_000, 4, seed);
            let checked = check(&h).unwrap();
            assert_eq!((checked.ops, checked.keys), (4_000, 4));
            // Mostly one node per operation: the memo keeps it linear.
            assert!(checked.nodes < 40 * 4_000, "{checked:?}");
        }
    }

    #[test]
    fn a_random_history_with_one_read_altered_fails() {
        let mut h = random_linearizable(2_000, 4, 9);
        // Make a late read claim a value written (unique) long before and
        // since overwritten on its key.
        let (at, key) = h
            .iter()
            .enumerate()
            .rev()
            .find_map(|(i, o)| matches!(o.call, Get(Some(_))).then_some((i, o.key)))
            .unwrap();
        let old = h
            .iter()
            .find_map(|o| match o.call {
                Put(v) if o.key == key && o.response_ns.unwrap() + 5_000 < h[at].invoke_ns => {
                    Some(v)
                }
                _ => None,
            })
            .unwrap();
        h[at].call = Get(Some(old));
        let v = check(&h).unwrap_err();
        assert_eq!(v.key, key);
        assert!(!v.undecided);
    }
}
