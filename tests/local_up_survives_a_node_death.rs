//! `corfu local up` with real processes on loopback: when one node process
//! dies (SIGKILL), `local up` reports it and keeps the other nodes running;
//! the README tour's sequence then works as written: `layout show`,
//! `layout remove-node n2`, an append on the shorter chain, `corfu local
//! restart n2`, `layout add-node n2`, `layout seal`. Also: every node of
//! the default cluster is a sequencer, a second `local up` on the same
//! directory is refused, `local restart` refuses a running or unknown node
//! and answers clearly when no `local up` runs, and `local init
//! --sequencers` is bounded.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The longest any single step may take before the test declares it hung
/// (a guard against hanging forever, not a timing assertion).
const STEP_LIMIT: Duration = Duration::from_secs(30);

fn corfu() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_corfu"));
    cmd.env("NO_COLOR", "1");
    cmd
}

/// What one run of a CLI command gave.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self, what: &str) -> Run {
        assert!(
            self.ok,
            "{what} failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Failed with one `error:` line on stderr containing `needle`.
    fn refused(self, what: &str, needle: &str) -> Run {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert!(
            !self.ok
                && lines.len() == 1
                && lines[0].starts_with("error: ")
                && lines[0].contains(needle),
            "{what}: expected one error line with {needle:?}; ok={}\nstdout:\n{}\nstderr:\n{}",
            self.ok,
            self.stdout,
            self.stderr
        );
        self
    }

    fn says(&self, needle: &str, what: &str) {
        assert!(
            self.stdout.contains(needle),
            "{what}: {needle:?} missing in:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
    }
}

/// Runs `corfu ARGS` to completion, failing the test if it hangs.
fn run(args: &[&str]) -> Run {
    let mut cmd = corfu();
    cmd.args(args).stdin(Stdio::null());
    let (tx, rx) = mpsc::channel::<std::io::Result<Output>>();
    std::thread::spawn(move || {
        let _ = tx.send(cmd.output());
    });
    let out = rx
        .recv_timeout(STEP_LIMIT)
        .unwrap_or_else(|_| panic!("corfu {args:?} did not finish within {STEP_LIMIT:?}"))
        .expect("running corfu");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A base port with `count` consecutive free UDP ports on loopback.
fn free_ports(count: u16) -> u16 {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64;
    for i in 0..100u64 {
        let base =
            20_000 + ((seed.wrapping_mul(2_654_435_761).wrapping_add(i * 7_919)) % 40_000) as u16;
        let held: Result<Vec<UdpSocket>, _> = (0..count)
            .map(|k| UdpSocket::bind(("127.0.0.1", base + k)))
            .collect();
        if held.is_ok() {
            return base;
        }
    }
    panic!("no {count} consecutive free UDP ports on 127.0.0.1");
}

/// A `corfu local up` running in the background, its stdout read line by
/// line. Dropping it stops it (SIGTERM, then SIGKILL).
struct LocalUp {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl LocalUp {
    fn start(args: &[&str]) -> LocalUp {
        let mut child = corfu()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting corfu local up");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LocalUp {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `needle` and returns it.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + STEP_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "local up printed no line with {needle:?} ({e}); so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().expect("checking local up").is_none()
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: plain syscall on our own, not yet reaped, child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
    }

    /// SIGTERM, then its exit status (SIGKILL if it hangs).
    fn stop(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + STEP_LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for local up") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("local up did not stop within {STEP_LIMIT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LocalUp {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.stop();
        }
    }
}

/// The pid `local up` printed for `node` (`  n2 on ADDR (pid P), log ...`).
fn pid_of(line: &str) -> i32 {
    let start = line.find("(pid ").expect("a pid") + 5;
    let end = start + line[start..].find(')').expect("a closing parenthesis");
    line[start..end].parse().expect("a numeric pid")
}

fn s(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

#[test]
fn local_up_keeps_the_cluster_running_when_a_node_dies_and_restarts_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let dir = s(&dir).to_string();
    let port = free_ports(3).to_string();
    let mut up = LocalUp::start(&[
        "local",
        "up",
        "--nodes",
        "3",
        "--dir",
        &dir,
        "--base-port",
        &port,
        "--sync",
        "never",
    ]);
    let n1 = up.wait_for("  n1 on ");
    let n2 = up.wait_for("  n2 on ");
    let n3 = up.wait_for("  n3 on ");
    let (n1_addr, n3_addr) = (
        n1.split_whitespace().nth(2).unwrap().to_string(),
        n3.split_whitespace().nth(2).unwrap().to_string(),
    );
    // Every node hosts a sequencer, n1's active.
    up.wait_for("sequencers:     n1 n2 n3 (active first)");
    up.wait_for("Ctrl-C (or SIGTERM) stops the cluster.");
    let cluster = format!("{dir}/cluster.toml");
    let c = cluster.as_str();
    run(&["log", "append", "--cluster", c, "hello"])
        .ok("first append")
        .says("appended 0 hello", "first append");

    // A second supervisor of the same nodes is refused before it starts any.
    run(&["local", "up", "--dir", &dir])
        .refused("second local up", "another `corfu local up` is running on");

    // SIGKILL n2: local up reports it and keeps running.
    let n2_pid = pid_of(&n2);
    // SAFETY: plain syscall; the pid is a child of `local up`, still
    // running (local up reaps it only after this).
    assert_eq!(unsafe { libc::kill(n2_pid, libc::SIGKILL) }, 0);
    let died = up.wait_for("node n2 (pid ");
    assert!(
        died.contains(&format!(
            "node n2 (pid {n2_pid}) died (signal: 9 (SIGKILL))"
        )) && died.contains("the other nodes keep running")
            && died.contains(&format!("corfu local restart n2 --dir {dir}")),
        "{died}"
    );
    assert!(up.running(), "local up stopped when n2 died");

    // The others answer; the README tour goes on as written.
    for addr in [&n1_addr, &n3_addr] {
        run(&["ping", "--cluster", c, "--addr", addr, "--count", "1"])
            .ok("ping a surviving node")
            .says("pong from", "ping");
    }
    run(&["layout", "show", "--cluster", c])
        .ok("layout show")
        .says("stripe 0: n1 -> n2 -> n3", "layout show");
    let removed = run(&["layout", "remove-node", "--cluster", c, "n2"]).ok("remove-node n2");
    removed.says("epoch 2 in force", "remove-node");
    removed.says("stripe 0: n1 -> n3", "remove-node");
    removed.says("sequencers:     n1 n3 (active first)", "remove-node");
    run(&["log", "append", "--cluster", c, "still-here"])
        .ok("append on n1 -> n3")
        .says("still-here", "append on n1 -> n3");

    // Restart n2 through the running local up.
    let restarted = run(&["local", "restart", "n2", "--dir", &dir]).ok("local restart n2");
    restarted.says("restarted n2 (pid ", "local restart");
    restarted.says(
        &format!("note: it is no log unit of epoch 2: `corfu layout add-node --cluster {c} n2` adds it back"),
        "local restart",
    );
    up.wait_for("restarted n2 (pid ");
    run(&["local", "restart", "n2", "--dir", &dir])
        .refused("restart a running node", "node n2 is already running (pid ");
    run(&["local", "restart", "n9", "--dir", &dir])
        .refused("restart an unknown node", "no node n9 in");

    let added = run(&["layout", "add-node", "--cluster", c, "n2"]).ok("add-node n2");
    added.says("state transfer:", "add-node");
    added.says("stripe 0: n1 -> n3 -> n2", "add-node");
    run(&["layout", "seal", "--cluster", c]).ok("layout seal");
    run(&["log", "append", "--cluster", c, "back"])
        .ok("append on n1 -> n3 -> n2")
        .says("back", "append after add-node");
    let read = run(&["log", "read", "--cluster", c, "0", "--to", "3"]).ok("read back");
    read.says("0 data hello", "read back");
    read.says("1 data still-here", "read back");
    read.says("2 data back", "read back");
    assert!(up.running(), "local up stopped");

    // Ctrl-C's equivalent stops every node, the restarted one too.
    let status = up.stop();
    assert!(status.success(), "local up exited with {status}");
    up.wait_for("stopped 3 node(s)");
    assert!(!Path::new(&dir).join("local-up.sock").exists());
    run(&["local", "restart", "n2", "--dir", &dir]).refused(
        "restart without local up",
        "no `corfu local up` is running on",
    );
}

#[test]
fn local_init_sequencers_are_bounded_by_the_nodes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    for bad in ["0", "4"] {
        run(&[
            "local",
            "init",
            "--nodes",
            "3",
            "--sequencers",
            bad,
            "--dir",
            s(&dir),
        ])
        .refused(
            "--sequencers out of range",
            &format!("--sequencers must be between 1 and the number of nodes (3), not {bad}"),
        );
        assert!(!dir.exists(), "nothing written");
    }
    run(&[
        "local",
        "init",
        "--nodes",
        "3",
        "--sequencers",
        "2",
        "--dir",
        s(&dir),
    ])
    .ok("--sequencers 2");
    for (k, hosts) in [(1, true), (2, true), (3, false)] {
        let text = std::fs::read_to_string(dir.join(format!("n{k}/node.toml"))).unwrap();
        assert_eq!(text.contains("\"sequencer\""), hosts, "n{k}: {text}");
    }
    // `local up` on it checks the count like --nodes.
    run(&["local", "up", "--dir", s(&dir), "--sequencers", "3"]).refused(
        "local up --sequencers against another count",
        "holds a cluster with 2 sequencer node(s), not 3",
    );
}
