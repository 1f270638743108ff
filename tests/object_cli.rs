//! The object commands (`corfu map|counter|queue|register|set`), run as
//! the real binary against a 3-node cluster running inside the test:
//! writes and reads in text and `--json`, exit status 3 with a note when
//! there is nothing to print, pops from concurrent processes each taking a
//! different item, and bad inputs failing with one `error:` line.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;

use serde_json::{json, Value};
use support::{corfu_command, local_cluster, within};

/// What one run of the binary gave.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect()
    }

    /// Exit 0 with nothing on stderr.
    fn assert_ok(&self, what: &str) -> &Self {
        assert!(
            self.code == Some(0) && self.stderr.is_empty(),
            "{what}: code={:?} stdout={:?} stderr={:?}",
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Exit 3 ("nothing to print") with `note` (or nothing, if `None`) on
    /// stderr.
    fn assert_nothing(&self, what: &str, note: Option<&str>) -> &Self {
        let expected = note.map_or(String::new(), |n| format!("{n}\n"));
        assert!(
            self.code == Some(3) && self.stderr == expected,
            "{what}: code={:?} stdout={:?} stderr={:?}",
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Exit 1 with exactly one `error:` line on stderr and nothing on
    /// stdout.
    fn assert_one_error_line(&self, what: &str) -> &Self {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert!(
            self.code == Some(1)
                && lines.len() == 1
                && lines[0].starts_with("error: ")
                && self.stdout.is_empty(),
            "{what}: code={:?} stdout={:?} stderr={:?}",
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `corfu ARGS` as a child process (the in-process nodes keep running
/// on the test's runtime).
async fn corfu(args: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::from(corfu_command());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().expect("spawn corfu");
    let what = format!("corfu {}", args.join(" "));
    let out = within(20, &what, child.wait_with_output())
        .await
        .expect("wait for corfu");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// `corfu KIND OP --cluster C REST...`.
async fn object(c: &str, kind: &str, op: &str, rest: &[&str]) -> Run {
    let mut args = vec![kind, op, "--cluster", c];
    args.extend_from_slice(rest);
    corfu(&args).await
}

/// The address at the end of a text line `... at ADDR`.
fn address_of(line: &str) -> u64 {
    let (_, addr) = line.rsplit_once(" at ").expect(line);
    addr.parse().expect(line)
}

#[tokio::test(flavor = "multi_thread")]
async fn object_commands_against_a_local_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = within(
        20,
        "cluster start",
        local_cluster(&dir, 3, corfu::cluster::Shape::default()),
    )
    .await;
    let config = path_str(cluster.client_config_path()).to_string();
    let c = config.as_str();

    // Map: put, get, list, remove, in text and JSON.
    let run = object(c, "map", "put", &["users", "alice", "admin"]).await;
    run.assert_ok("map put");
    let first = address_of(run.lines()[0]);
    assert_eq!(run.lines(), vec![format!("put alice at {first}")]);
    let run = object(c, "map", "put", &["users", "bob", "two words", "--json"]).await;
    run.assert_ok("map put --json");
    let put = &run.json_lines()[0];
    assert_eq!(put["key"], "bob");
    assert_eq!(put["value"], "two words");
    assert!(put["address"].as_u64().unwrap() > first);
    let run = object(c, "map", "get", &["users", "alice"]).await;
    assert_eq!(run.assert_ok("map get").lines(), vec!["admin"]);
    let run = object(c, "map", "list", &["users"]).await;
    assert_eq!(
        run.assert_ok("map list").lines(),
        vec!["alice\tadmin", "bob\ttwo words"]
    );
    let run = object(c, "map", "remove", &["users", "alice"]).await;
    assert!(run.assert_ok("map remove").lines()[0].starts_with("removed alice at "));
    // Absent: exit 3, a note on stderr, nothing on stdout; JSON says null.
    let run = object(c, "map", "get", &["users", "alice"]).await;
    run.assert_nothing("map get absent", Some("map \"users\" has no key \"alice\""));
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    let run = object(c, "map", "get", &["users", "alice", "--json"]).await;
    run.assert_nothing("map get absent --json", None);
    assert_eq!(
        run.json_lines(),
        vec![json!({"map": "users", "key": "alice", "value": null})]
    );

    // Counter: a negative delta is a value, and add prints the new value.
    let run = object(c, "counter", "add", &["hits", "5"]).await;
    assert_eq!(run.assert_ok("counter add").lines(), vec!["5"]);
    let run = object(c, "counter", "add", &["hits", "-7"]).await;
    assert_eq!(run.assert_ok("counter add -7").lines(), vec!["-2"]);
    let run = object(c, "counter", "get", &["hits", "--json"]).await;
    assert_eq!(
        run.assert_ok("counter get").json_lines(),
        vec![json!({"counter": "hits", "value": -2})]
    );

    // Queue: FIFO, and pops from concurrent processes take distinct items.
    let items: Vec<String> = (0..6).map(|i| format!("job-{i}")).collect();
    let mut push = vec!["jobs"];
    push.extend(items.iter().map(String::as_str));
    let run = object(c, "queue", "push", &push).await;
    let addresses: Vec<u64> = run
        .assert_ok("queue push")
        .lines()
        .iter()
        .map(|l| address_of(l))
        .collect();
    assert_eq!(addresses.len(), 6);
    assert!(addresses.windows(2).all(|w| w[0] < w[1]), "{addresses:?}");
    let run = object(c, "queue", "len", &["jobs"]).await;
    assert_eq!(run.assert_ok("queue len").lines(), vec!["6"]);
    let run = object(c, "queue", "peek", &["jobs", "--json"]).await;
    assert_eq!(
        run.assert_ok("queue peek").json_lines(),
        vec![json!({"queue": "jobs", "item": "job-0"})]
    );
    let pops: Vec<_> = (0..8)
        .map(|_| {
            let config = config.clone();
            tokio::spawn(async move { object(&config, "queue", "pop", &["jobs"]).await })
        })
        .collect();
    let mut popped = Vec::new();
    let mut empty = 0;
    for pop in pops {
        let run = pop.await.unwrap();
        match run.code {
            Some(0) => popped.push(run.assert_ok("queue pop").lines()[0].to_string()),
            _ => {
                run.assert_nothing(
                    "queue pop of an empty queue",
                    Some("queue \"jobs\" is empty"),
                );
                empty += 1;
            }
        }
    }
    popped.sort();
    assert_eq!(popped, items, "every item popped exactly once");
    assert_eq!(empty, 2);
    let run = object(c, "queue", "pop", &["jobs", "--json"]).await;
    run.assert_nothing("queue pop --json", None);
    assert_eq!(
        run.json_lines(),
        vec![json!({"queue": "jobs", "item": null})]
    );

    // Register: unset, set, get.
    object(c, "register", "get", &["leader"])
        .await
        .assert_nothing("register get unset", Some("register \"leader\" is not set"));
    let run = object(c, "register", "set", &["leader", "n2"]).await;
    assert!(run.assert_ok("register set").lines()[0].starts_with("set at "));
    let run = object(c, "register", "get", &["leader"]).await;
    assert_eq!(run.assert_ok("register get").lines(), vec!["n2"]);

    // Set: add, contains, list, remove.
    for item in ["red", "blue", "red"] {
        object(c, "set", "add", &["colours", item])
            .await
            .assert_ok("set add");
    }
    let run = object(c, "set", "contains", &["colours", "red", "--json"]).await;
    assert_eq!(
        run.assert_ok("set contains").json_lines(),
        vec![json!({"set": "colours", "item": "red", "contains": true})]
    );
    object(c, "set", "remove", &["colours", "red"])
        .await
        .assert_ok("set remove");
    let run = object(c, "set", "contains", &["colours", "red"]).await;
    assert_eq!(run.assert_ok("set contains").lines(), vec!["false"]);
    let run = object(c, "set", "list", &["colours", "--json"]).await;
    let listed: BTreeSet<String> = run
        .assert_ok("set list")
        .json_lines()
        .iter()
        .map(|o| o["item"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, BTreeSet::from(["blue".to_string()]));

    // Bad inputs: one `error:` line and exit 1.
    let run = object(c, "counter", "add", &["hits", "lots"]).await;
    run.assert_one_error_line("counter add lots");
    assert!(
        run.stderr.contains("invalid DELTA \"lots\""),
        "{}",
        run.stderr
    );
    // The stream of "users" holds map ops: it cannot be played as a counter.
    let run = object(c, "counter", "get", &["users"]).await;
    run.assert_one_error_line("counter get of a map");
    assert!(
        run.stderr.contains("opened as \"corfu.counter\" version 1")
            && run.stderr.contains("is \"corfu.map\" version 1"),
        "{}",
        run.stderr
    );
    // A queue's stream is no set (issue 15, item 3): `set list` printed the
    // queue's items, and `set remove` was played by the queue as a pop.
    object(c, "queue", "push", &["q2", "job-1"])
        .await
        .assert_ok("queue push q2");
    let run = object(c, "set", "list", &["q2"]).await;
    run.assert_one_error_line("set list of a queue");
    assert!(
        run.stderr.contains("\"q2\"")
            && run.stderr.contains("opened as \"corfu.set\" version 1")
            && run.stderr.contains("is \"corfu.queue\" version 1"),
        "{}",
        run.stderr
    );
    object(c, "set", "remove", &["q2", "job-1"])
        .await
        .assert_one_error_line("set remove of a queue");
    let run = object(c, "queue", "list", &["q2"]).await;
    assert_eq!(run.assert_ok("queue list q2").lines(), vec!["job-1"]);
    let missing = dir.path().join("missing.toml");
    let run = object(path_str(&missing), "queue", "len", &["jobs"]).await;
    run.assert_one_error_line("missing config");
    assert!(run.stderr.contains("missing.toml"), "{}", run.stderr);
    // No item to push: a usage error (clap's exit status 2).
    let run = object(c, "queue", "push", &["jobs"]).await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);

    // Nothing of the failed commands reached the objects.
    let run = object(c, "counter", "get", &["hits"]).await;
    assert_eq!(run.assert_ok("counter get").lines(), vec!["-2"]);
    let run = object(c, "queue", "len", &["jobs"]).await;
    assert_eq!(run.assert_ok("queue len").lines(), vec!["0"]);

    cluster.shutdown().await;
}
