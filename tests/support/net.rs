//! Network partitions between processes on loopback, with nftables.
//!
//! Every process is a [`Host`]: the address its outgoing connections come
//! from (`transport.local_ip`) and, for a node, the port its server listens
//! on (at `127.0.0.1`). [`Net::cut`] drops, in the input hook (silently,
//! as a lost packet, never an error to the sender), every packet between
//! two hosts in both directions: requests from one's client address to the
//! other's server port and the server's answers back. Rules live in an
//! `inet` table of their own, named after the process and a counter, which
//! [`Net::heal`] flushes and dropping the [`Net`] deletes.
//!
//! Needs root and the `nft` tool (`apt-get install nftables`; `.ci/run`
//! installs it). Without them [`Net::new`] panics saying so.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One process as the packet filter sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    /// The address its outgoing connections come from.
    pub ip: Ipv4Addr,
    /// The port its server listens on (at 127.0.0.1), for a node.
    pub port: Option<u16>,
}

/// A table of packet-drop rules on loopback.
pub struct Net {
    table: String,
}

fn nft(args: &str) -> Result<(), String> {
    let out = Command::new("nft")
        .args(args.split_whitespace())
        .output()
        .map_err(|e| format!("running nft (apt-get install nftables): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft {args}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Net {
    /// A new, empty table (nothing is cut).
    pub fn new() -> Net {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let table = format!(
            "corfu_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        nft(&format!("add table inet {table}")).unwrap_or_else(|e| panic!("{e}"));
        nft(&format!(
            "add chain inet {table} input {{ type filter hook input priority 0 ; policy accept ; }}"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        Net { table }
    }

    fn drop_rule(&self, rule: &str) {
        nft(&format!("add rule inet {} input {rule} drop", self.table))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Drops every packet between `a` and `b`, both ways.
    pub fn cut(&self, a: &Host, b: &Host) {
        for (from, to) in [(a, b), (b, a)] {
            if let Some(port) = to.port {
                // `from`'s requests to `to`'s server, and the answers.
                self.drop_rule(&format!("ip saddr {} udp dport {port}", from.ip));
                self.drop_rule(&format!("udp sport {port} ip daddr {}", from.ip));
            }
        }
    }

    /// Cuts every link between a host of `side` and a host of `others`.
    pub fn split(&self, side: &[Host], others: &[Host]) {
        for a in side {
            for b in others {
                self.cut(a, b);
            }
        }
    }

    /// Removes every rule: every link works again.
    pub fn heal(&self) {
        nft(&format!("flush chain inet {} input", self.table)).unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Default for Net {
    fn default() -> Self {
        Net::new()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if let Err(e) = nft(&format!("delete table inet {}", self.table)) {
            eprintln!("{e}");
        }
    }
}
