//! The examples of the object layer (bank, work_queue, service) run,
//! check their own invariants and say so: each is run as a program with
//! small parameters, on the 3-node cluster it embeds, and must exit 0
//! with the lines that report its invariant held. The bank run without transactions must exit 1: the
//! check the examples make can fail.
//!
//! `cargo test` builds the examples into `target/<profile>/examples/`,
//! next to the `deps/` directory holding this test; a run that selects
//! only this test (`cargo test --test examples_run`) does not, so build
//! them first (`cargo build --release --examples`).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one example may run before it is killed and the test fails
/// (a bound against hangs, not a performance check: the runs take a few
/// seconds).
const EXAMPLE_RUN_TIMEOUT_S: u64 = 180;

/// The built example `name`.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lies in target/<profile>/deps");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.is_file(),
        "example {name:?} is not built at {}: run the whole `cargo test`, or build the examples \
         first (`cargo build --release --examples`)",
        path.display()
    );
    path
}

/// What a run printed and how it ended.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn describe(&self) -> String {
        format!(
            "exit code {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    fn assert_prints(&self, lines: &[&str]) {
        for line in lines {
            assert!(
                self.stdout.contains(line),
                "the output lacks {line:?}:\n{}",
                self.describe()
            );
        }
    }
}

/// Runs example `name` with `args`, killing it if it outlives
/// [`EXAMPLE_RUN_TIMEOUT_S`].
fn run(name: &str, args: &[&str]) -> Run {
    let mut child = Command::new(example(name))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting example {name}: {e}"));
    // Drain both pipes while waiting, so a chatty run cannot block on a
    // full pipe.
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(EXAMPLE_RUN_TIMEOUT_S);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the example") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let run = Run {
        code: status.and_then(|s| s.code()),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    };
    assert!(
        status.is_some(),
        "example {name} {args:?} did not finish within {EXAMPLE_RUN_TIMEOUT_S} s:\n{}",
        run.describe()
    );
    run
}

#[test]
fn bank_transfers_keep_the_total() {
    let run = run(
        "bank",
        &["--accounts", "5", "--tasks", "2", "--duration-ms", "1000"],
    );
    assert_eq!(run.code, Some(0), "{}", run.describe());
    run.assert_prints(&[
        "opened 5 accounts of 1000",
        "committed",
        "audits: ",
        "; 0 broken",
        "invariant held",
    ]);
}

#[test]
fn bank_without_transactions_is_caught_breaking_the_total() {
    // Plain reads and writes: audits see transfers half done, and
    // concurrent transfers of one account overwrite each other.
    let run = run(
        "bank",
        &[
            "--accounts",
            "3",
            "--tasks",
            "2",
            "--duration-ms",
            "1000",
            "--without-transactions",
        ],
    );
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert!(
        run.stderr.contains("invariant broken"),
        "{}",
        run.describe()
    );
    assert!(!run.stdout.contains("invariant held"), "{}", run.describe());
}

#[test]
fn service_answers_its_own_requests() {
    let run = run("service", &["--self-test"]);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    run.assert_prints(&[
        "PUT /kv/greeting hello -> 200",
        "GET /kv/greeting -> 200 hello",
        "DELETE /kv/greeting -> 404",
        "GET /counter/visits -> 200 {\"value\":5}",
        "another runtime sees",
        "self-test passed",
    ]);
}

#[test]
fn work_queue_consumers_take_every_job_once() {
    let run = run(
        "work_queue",
        &["--jobs", "120", "--producers", "2", "--consumers", "4"],
    );
    assert_eq!(run.code, Some(0), "{}", run.describe());
    run.assert_prints(&[
        "producer 2 (runtime 2): pushed 60 jobs",
        "consumer 4 (runtime 2): took",
        "took 120 jobs of 120",
        "runtime 1: queue empty: true",
        "runtime 2: queue empty: true",
        "no job taken twice, none missing",
        "invariant held",
    ]);
}

#[test]
fn work_queue_pops_and_counts_in_one_transaction() {
    let run = run(
        "work_queue",
        &["--jobs", "60", "--consumers", "3", "--transactional"],
    );
    assert_eq!(run.code, Some(0), "{}", run.describe());
    run.assert_prints(&[
        "took 60 jobs of 60",
        "runtime 1: queue empty: true, processed counter 60",
        "runtime 2: queue empty: true, processed counter 60",
        "invariant held",
    ]);
}
