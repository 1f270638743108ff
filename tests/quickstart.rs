//! The README's first command: `corfu` with no arguments runs the
//! quickstart (3 node processes, two clients' transactions, the node
//! hosting the active sequencer and the chain head killed) and exits 0;
//! with `--dir` it keeps the cluster there and refuses a directory that
//! already holds one.

use std::process::Command;
use std::sync::Mutex;

/// One quickstart at a time: each runs three node processes whose failure
/// detectors time out after 500 ms.
static TURN: Mutex<()> = Mutex::new(());

fn corfu() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_corfu"));
    cmd.env("NO_COLOR", "1");
    cmd
}

#[test]
fn corfu_without_arguments_runs_the_quickstart_through_a_node_kill() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let out = corfu().output().expect("running corfu");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    for expected in [
        "cluster: nodes n1 n2 n3 as processes",
        "chain n1 -> n2 -> n3",
        // Every node hosts a sequencer; n1's is active.
        "sequencers n1 n2 n3 (n1 active)",
        "kill: n1 (pid ",
        "the active sequencer and head of chain n1 -> n2 -> n3, killed with SIGKILL",
        "failover: the failure detectors removed n1",
        "chain n2 -> n3, sequencer on n2",
        "carried on: ",
        "result: all 600 orders shipped exactly once",
        "replay: a third client rebuilt the same objects",
        "read back from chain n2 -> n3",
        "security: a client of another cluster is refused",
        "done in",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}\nstderr:\n{stderr}"
        );
    }
    // Progress bars go to a terminal only.
    assert!(
        !stderr.contains("[="),
        "progress bars drawn without a terminal:\n{stderr}"
    );
}

#[test]
fn quickstart_keeps_its_cluster_in_dir_and_refuses_to_reuse_it() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("qs");
    let out = corfu()
        .args(["quickstart", "--dir"])
        .arg(&dir)
        .output()
        .expect("running corfu quickstart");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for k in 1..=3 {
        let log = dir.join(format!("n{k}")).join("node.log");
        assert!(log.is_file(), "{} missing", log.display());
    }
    assert!(dir.join("cluster.toml").is_file());

    let again = corfu()
        .args(["quickstart", "--dir"])
        .arg(&dir)
        .output()
        .expect("running corfu quickstart again");
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("already holds a cluster"),
        "unexpected error: {stderr}"
    );
}
