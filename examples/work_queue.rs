//! A work queue on the shared log: producers push jobs, competing
//! consumers in two runtimes pop them, and every job is taken exactly
//! once.
//!
//! The queue is one `ReplicatedQueue<(u32, u64)>` (a job is its producer
//! and its sequence number). A pop does not read the front and then remove
//! it, which would let two consumers take the same job: it appends a `Pop`
//! op, and the job it takes is the front of the queue at the op's place in
//! the log, the same in every runtime. Producers and consumers are spread
//! over two runtimes, each with its own log client (as two processes would
//! be). With `--transactional`, a consumer pops and counts the job as
//! processed in one transaction (`tx_pop` and a counter's `tx_add`): both
//! happen, or neither.
//!
//! The invariant, checked by the program itself: the jobs popped are
//! exactly the jobs pushed, none twice and none missing; each consumer saw
//! each producer's jobs in the order they were pushed (the queue is FIFO
//! in log order); the queue is empty in both runtimes at the end; with
//! `--transactional`, the processed counter equals the number of jobs. It
//! prints `invariant held` and exits 0, or names what broke and exits 1.
//!
//! ```sh
//! cargo run --release --example work_queue                 # a 3-node cluster embedded in the process
//! cargo run --release --example work_queue -- --jobs 5000 --producers 4 --consumers 8
//! cargo run --release --example work_queue -- --transactional
//! cargo run --release --example work_queue -- --cluster /tmp/corfu-demo/cluster.toml   # `corfu local up`
//! cargo run --release --example work_queue -- --help
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;

use corfu::core::client::LogClient;
use corfu::embedded::ClusterOrEmbedded;
use corfu::objects::{ReplicatedCounter, ReplicatedQueue};
use corfu::smr::{Error, Runtime};

/// A job: its producer (numbered from 1) and its sequence number there.
type Job = (u32, u64);

type Jobs = ReplicatedQueue<Job>;

/// How long a consumer waits after finding the queue empty before it
/// pops again (each pop of an empty queue still appends an op).
const EMPTY_QUEUE_BACKOFF_MS: u64 = 2;

/// How many violations of the invariant are printed (all are counted).
const VIOLATIONS_SHOWN_MAX: usize = 5;

/// Producers push jobs on a replicated queue, competing consumers in two
/// runtimes pop them; exits 1 unless every job was taken exactly once.
#[derive(Parser, Debug)]
#[command(name = "work_queue")]
struct Args {
    /// Client config (cluster.toml) of a running cluster; without it a
    /// 3-node cluster is started inside this process, in a temporary
    /// directory.
    #[arg(long, value_name = "FILE")]
    cluster: Option<PathBuf>,
    /// Jobs to push, in all.
    #[arg(long, default_value_t = 400)]
    jobs: u64,
    /// Producer tasks, alternating between the two runtimes.
    #[arg(long, default_value_t = 2)]
    producers: u32,
    /// Consumer tasks, alternating between the two runtimes.
    #[arg(long, default_value_t = 4)]
    consumers: u32,
    /// Pop each job and count it as processed in one transaction.
    #[arg(long)]
    transactional: bool,
}

/// Object names of one run.
struct Names {
    queue: String,
    processed: String,
}

/// Pushes jobs `(producer, 0..count)` one after another: each push is
/// acknowledged before the next is sent, so they are in this order in the
/// log.
async fn produce(queue: Jobs, producer: u32, count: u64) -> Result<(), Error> {
    for seq in 0..count {
        queue.push((producer, seq)).await?;
    }
    Ok(())
}

/// What one consumer did.
#[derive(Default)]
struct Consumed {
    /// The jobs it took, in the order it took them.
    jobs: Vec<Job>,
    /// Pops that found the queue empty.
    empty: u64,
    /// Transactional pops given up after every attempt conflicted (the
    /// consumer then tries again).
    gave_up: u64,
}

/// Pops until the queue is empty after every producer finished.
async fn consume(
    rt: Runtime,
    names: Arc<Names>,
    transactional: bool,
    producers_done: Arc<AtomicBool>,
) -> Result<Consumed, Error> {
    let queue: Jobs = rt.open(&names.queue)?;
    let processed: ReplicatedCounter = rt.open(&names.processed)?;
    let (queue, processed) = (&queue, &processed);
    let mut consumed = Consumed::default();
    loop {
        // Read before the pop: if every push was acknowledged before the
        // pop began, a pop that finds the queue empty proves it is
        // drained for good.
        let drained_if_empty = producers_done.load(Ordering::SeqCst);
        let taken = if transactional {
            let popped = rt
                .transaction(|tx| async move {
                    let job = queue.tx_pop(&tx).await?;
                    if job.is_some() {
                        processed.tx_add(&tx, 1)?;
                    }
                    Ok(job)
                })
                .await;
            match popped {
                Ok(job) => job,
                Err(Error::Aborted { .. }) => {
                    consumed.gave_up += 1;
                    continue;
                }
                Err(e) => return Err(e),
            }
        } else {
            queue.pop().await?
        };
        match taken {
            Some(job) => consumed.jobs.push(job),
            None => {
                consumed.empty += 1;
                if drained_if_empty {
                    return Ok(consumed);
                }
                tokio::time::sleep(Duration::from_millis(EMPTY_QUEUE_BACKOFF_MS)).await;
            }
        }
    }
}

/// How many jobs producer `p` pushes: `jobs` shared out, the first ones
/// taking the remainder.
fn share(jobs: u64, producers: u32, p: u32) -> u64 {
    jobs / u64::from(producers) + u64::from(u64::from(p) < jobs % u64::from(producers))
}

/// What is wrong with the jobs the consumers took, if anything.
fn check_exactly_once(args: &Args, consumers: &[Consumed]) -> Vec<String> {
    let mut broken = Vec::new();
    let mut times_taken: BTreeMap<Job, u32> = BTreeMap::new();
    for (c, consumed) in consumers.iter().enumerate() {
        let mut last_of: BTreeMap<u32, u64> = BTreeMap::new();
        for &(producer, seq) in &consumed.jobs {
            *times_taken.entry((producer, seq)).or_default() += 1;
            if let Some(before) = last_of.insert(producer, seq) {
                if before >= seq {
                    broken.push(format!(
                        "consumer {} took job {seq} of producer {producer} after job {before}",
                        c + 1
                    ));
                }
            }
        }
    }
    for p in 0..args.producers {
        for seq in 0..share(args.jobs, args.producers, p) {
            let job = (p + 1, seq);
            match times_taken.remove(&job) {
                Some(1) => {}
                Some(n) => broken.push(format!("job {job:?} was taken {n} times")),
                None => broken.push(format!("job {job:?} was never taken")),
            }
        }
    }
    for (job, n) in times_taken {
        broken.push(format!("job {job:?} was never pushed, yet taken {n} times"));
    }
    broken
}

async fn run(args: &Args, log: &ClusterOrEmbedded) -> anyhow::Result<Vec<String>> {
    let (runtimes, clients): (Vec<Runtime>, Vec<LogClient>) =
        vec![log.runtime().await?, log.runtime().await?]
            .into_iter()
            .unzip();
    // Names of their own, so runs against a long-lived cluster start
    // afresh.
    let run_id = format!("{:08x}", rand::random::<u32>());
    let names = Arc::new(Names {
        queue: format!("jobs-{run_id}"),
        processed: format!("jobs-{run_id}-processed"),
    });
    println!(
        "queue {:?}: {} producers and {} consumers over 2 runtimes, {} jobs{}",
        names.queue,
        args.producers,
        args.consumers,
        args.jobs,
        if args.transactional {
            "; each pop and its count in one transaction"
        } else {
            ""
        }
    );

    let started = Instant::now();
    let producers_done = Arc::new(AtomicBool::new(false));
    let mut consumers = Vec::new();
    for c in 0..args.consumers {
        let rt = runtimes[c as usize % 2].clone();
        consumers.push(tokio::spawn(consume(
            rt,
            names.clone(),
            args.transactional,
            producers_done.clone(),
        )));
    }
    let mut producers = Vec::new();
    for p in 0..args.producers {
        let queue: Jobs = runtimes[p as usize % 2].open(&names.queue)?;
        producers.push(tokio::spawn(produce(
            queue,
            p + 1,
            share(args.jobs, args.producers, p),
        )));
    }
    for (p, producer) in producers.into_iter().enumerate() {
        producer.await.context("a producer panicked")??;
        println!(
            "producer {} (runtime {}): pushed {} jobs",
            p + 1,
            p % 2 + 1,
            share(args.jobs, args.producers, p as u32)
        );
    }
    producers_done.store(true, Ordering::SeqCst);
    let mut consumed = Vec::new();
    for (c, consumer) in consumers.into_iter().enumerate() {
        let done = consumer.await.context("a consumer panicked")??;
        println!(
            "consumer {} (runtime {}): took {} jobs; {} pops found the queue empty{}",
            c + 1,
            c % 2 + 1,
            done.jobs.len(),
            done.empty,
            if args.transactional {
                format!(
                    ", gave up {} transactions after every attempt conflicted",
                    done.gave_up
                )
            } else {
                String::new()
            }
        );
        consumed.push(done);
    }
    let elapsed = started.elapsed();
    let taken: usize = consumed.iter().map(|c| c.jobs.len()).sum();
    println!(
        "took {taken} jobs of {} in {:.2} s ({:.0} jobs/s)",
        args.jobs,
        elapsed.as_secs_f64(),
        taken as f64 / elapsed.as_secs_f64()
    );

    let mut broken = check_exactly_once(args, &consumed);
    for (r, rt) in runtimes.iter().enumerate() {
        let left = rt.open::<Jobs>(&names.queue)?.len().await?;
        if left != 0 {
            broken.push(format!(
                "runtime {} sees {left} jobs left in the queue",
                r + 1
            ));
        }
        if args.transactional {
            let processed = rt
                .open::<ReplicatedCounter>(&names.processed)?
                .get()
                .await?;
            println!(
                "runtime {}: queue empty: {}, processed counter {processed}",
                r + 1,
                left == 0
            );
            if processed != args.jobs as i64 {
                broken.push(format!(
                    "runtime {} counts {processed} jobs processed, expected {}",
                    r + 1,
                    args.jobs
                ));
            }
        } else {
            println!("runtime {}: queue empty: {}", r + 1, left == 0);
        }
    }
    if broken.is_empty() {
        println!(
            "checked: no job taken twice, none missing, each producer's jobs taken in push order"
        );
    }
    for client in &clients {
        client.close();
    }
    Ok(broken)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();
    anyhow::ensure!(args.producers >= 1, "--producers must be at least 1");
    anyhow::ensure!(args.consumers >= 1, "--consumers must be at least 1");

    let log = ClusterOrEmbedded::open(args.cluster.as_deref()).await?;
    let outcome = run(&args, &log).await;
    log.shutdown().await;
    let broken = outcome?;
    if broken.is_empty() {
        println!("invariant held: every job was consumed exactly once");
        Ok(())
    } else {
        for b in broken.iter().take(VIOLATIONS_SHOWN_MAX) {
            eprintln!("invariant broken: {b}");
        }
        if broken.len() > VIOLATIONS_SHOWN_MAX {
            eprintln!(
                "invariant broken: ... and {} more",
                broken.len() - VIOLATIONS_SHOWN_MAX
            );
        }
        std::process::exit(1);
    }
}
