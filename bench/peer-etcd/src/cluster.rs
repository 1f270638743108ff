//! A 3-member etcd cluster on loopback, owned by this process.
//!
//! Each member is an `etcd` child process with its own data directory under
//! one temporary directory, listening on free 127.0.0.1 ports. etcd keeps
//! its default durability: every raft batch is written to the WAL with
//! `fdatasync` before it is acknowledged, on the leader and on the
//! followers, which is what corfu's log units do with `sync = always`.
//!
//! [`EtcdCluster`] is a guard: dropping it (on success, on an error, or
//! after Ctrl-C) stops every member, SIGTERM first and SIGKILL after
//! [`STOP_GRACE_MS`], and removes the data directories. Members also get
//! `PR_SET_PDEATHSIG` so that they die with this process even when it is
//! killed without running any destructor.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// How long a member has to exit after SIGTERM before it gets SIGKILL.
pub const STOP_GRACE_MS: u64 = 5_000;
/// How much of a member's log an error message quotes.
const LOG_TAIL_BYTES_MAX: u64 = 2_048;

/// One etcd member: its process and where it listens.
struct Member {
    name: String,
    client_url: String,
    log_path: PathBuf,
    child: Child,
}

/// The running cluster; stops and removes itself on drop.
pub struct EtcdCluster {
    /// Stopped in [`Drop`] before `dir` is removed.
    members: Vec<Member>,
    /// Data directories and logs of every member.
    dir: tempfile::TempDir,
}

/// Reserves `count` distinct free ports on 127.0.0.1. The listeners are
/// held until all ports are chosen so the kernel cannot hand out one twice;
/// they are closed before etcd binds, a small race that a shared machine
/// could lose (etcd then fails to start and says so).
fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))))
        .collect::<std::io::Result<Vec<_>>>()
        .context("reserving free loopback ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// The last bytes of a member's log, for error messages.
fn log_tail(path: &Path) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::from("(no log)");
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES_MAX)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

impl EtcdCluster {
    /// Starts `size` members of a new cluster with `etcd_bin`, their data
    /// under a new temporary directory in `parent` (the system's temporary
    /// directory when `None`). Returns once the processes are spawned; use
    /// [`EtcdCluster::check_running`] and a client to wait for health.
    ///
    /// Must be called on the thread that lives as long as the cluster (the
    /// main thread): `PR_SET_PDEATHSIG` fires when the spawning thread ends.
    pub fn start(etcd_bin: &Path, parent: Option<&Path>, size: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(size > 0, "a cluster needs at least one member");
        let dir = match parent {
            Some(p) => tempfile::Builder::new().prefix("peer-etcd-").tempdir_in(p),
            None => tempfile::Builder::new().prefix("peer-etcd-").tempdir(),
        }
        .context("creating the data directory")?;
        let ports = free_ports(2 * size)?;
        let names: Vec<String> = (1..=size).map(|i| format!("m{i}")).collect();
        let peer_urls: Vec<String> = (0..size)
            .map(|i| format!("http://127.0.0.1:{}", ports[2 * i + 1]))
            .collect();
        let initial_cluster = names
            .iter()
            .zip(&peer_urls)
            .map(|(n, u)| format!("{n}={u}"))
            .collect::<Vec<_>>()
            .join(",");
        // Unique per run, so members of another run can never join this one.
        let token = format!(
            "peer-etcd-{}-{}",
            std::process::id(),
            dir.path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );

        // Members are pushed as they start, so an error half-way still
        // stops the ones already running (through `Drop`).
        let mut cluster = EtcdCluster {
            members: Vec::with_capacity(size),
            dir,
        };
        for (i, name) in names.iter().enumerate() {
            let client_url = format!("http://127.0.0.1:{}", ports[2 * i]);
            let data_dir = cluster.dir.path().join(format!("{name}.etcd"));
            let log_path = cluster.dir.path().join(format!("{name}.log"));
            let log = File::create(&log_path).context("creating a member log")?;
            let log_err = log.try_clone()?;
            let mut cmd = Command::new(etcd_bin);
            cmd.arg("--name")
                .arg(name)
                .arg("--data-dir")
                .arg(&data_dir)
                .arg("--listen-client-urls")
                .arg(&client_url)
                .arg("--advertise-client-urls")
                .arg(&client_url)
                .arg("--listen-peer-urls")
                .arg(&peer_urls[i])
                .arg("--initial-advertise-peer-urls")
                .arg(&peer_urls[i])
                .arg("--initial-cluster")
                .arg(&initial_cluster)
                .arg("--initial-cluster-state")
                .arg("new")
                .arg("--initial-cluster-token")
                .arg(&token)
                .stdin(Stdio::null())
                .stdout(Stdio::from(log))
                .stderr(Stdio::from(log_err));
            // SAFETY: between fork and exec only async-signal-safe calls:
            // setpgid and prctl.
            unsafe {
                cmd.pre_exec(|| {
                    // Own process group: a Ctrl-C in the terminal reaches
                    // only us, and we stop the members in order.
                    if libc::setpgid(0, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let child = cmd
                .spawn()
                .with_context(|| format!("starting {}", etcd_bin.display()))?;
            cluster.members.push(Member {
                name: name.clone(),
                client_url,
                log_path,
                child,
            });
        }
        Ok(cluster)
    }

    /// The client URL of every member.
    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// Where the data directories are.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// An error, quoting the member's log, if any member has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        for m in &mut self.members {
            if let Some(status) = m.child.try_wait()? {
                anyhow::bail!(
                    "etcd member {} exited ({status}); end of {}:\n{}",
                    m.name,
                    m.log_path.display(),
                    log_tail(&m.log_path)
                );
            }
        }
        Ok(())
    }

    /// Stops every member: SIGTERM, then SIGKILL after the grace period.
    fn stop(&mut self) {
        for m in &self.members {
            if let Ok(pid) = libc::pid_t::try_from(m.child.id()) {
                // SAFETY: kill has no memory effects; the pid is our
                // child's, not yet reaped, so it cannot have been reused.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
        }
        let deadline = Instant::now() + Duration::from_millis(STOP_GRACE_MS);
        for m in &mut self.members {
            loop {
                match m.child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    _ => {
                        let _ = m.child.kill();
                        let _ = m.child.wait();
                        break;
                    }
                }
            }
        }
        self.members.clear();
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.stop();
        // `dir` (a TempDir) is removed after this, with nothing using it.
    }
}
