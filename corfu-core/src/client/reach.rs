//! Which nodes this client cannot reach, and the removal it asks for.
//!
//! The failure detectors run on the layout servers and judge reachability
//! from there. A node they reach but the clients do not (an asymmetric
//! partition: a chain member cut off from the clients only) would stall
//! every append for good: each write to it times out, and the detectors
//! see nothing wrong. So the client keeps its own evidence: a node whose
//! calls have failed at the transport (timeouts, lost or refused
//! connections), with no answer in between, for
//! `client.remove_unreachable_after_ms`, and recently, is removed by the
//! client itself, as CORFU's clients do, through the reconfiguration
//! engine with [`crate::reconfig::Reconfigurer::keep_removed_that_answer`]
//! (a node that answers the client's seal is kept) and bound to the
//! epoch the evidence is about. One removal at a time per client.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Transport failures per peer address since its last answer.
#[derive(Debug, Default)]
pub(crate) struct Reach {
    /// Address -> (first failure, last failure), with no answer since.
    failing: Mutex<HashMap<String, (Instant, Instant)>>,
    /// A removal asked for by this client is under way.
    removing: AtomicBool,
}

impl Reach {
    /// `addr` answered (anything, even an error): it is reachable.
    pub fn answered(&self, addr: &str) {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        if !failing.is_empty() {
            failing.remove(addr);
        }
    }

    /// A call to `addr` failed at the transport at `now`.
    pub fn failed(&self, addr: &str, now: Instant) {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        failing
            .entry(addr.to_string())
            .and_modify(|(_, last)| *last = now)
            .or_insert((now, now));
    }

    /// The addresses that have failed for at least `after` with no answer
    /// in between, the last failure within `after` of `now` (evidence that
    /// nobody refreshed is stale).
    pub fn due(&self, now: Instant, after: Duration) -> Vec<String> {
        let failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        let mut due: Vec<String> = failing
            .iter()
            .filter(|(_, (first, last))| {
                last.duration_since(*first) >= after && now.duration_since(*last) < after
            })
            .map(|(addr, _)| addr.clone())
            .collect();
        due.sort();
        due
    }

    /// Forgets the evidence against `addrs` (a removal was tried).
    pub fn forget(&self, addrs: &[String]) {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        for addr in addrs {
            failing.remove(addr);
        }
    }

    /// Takes the one removal slot; false if a removal is under way.
    pub fn start_removal(&self) -> bool {
        !self.removing.swap(true, Ordering::SeqCst)
    }

    /// Gives the removal slot back.
    pub fn end_removal(&self) {
        self.removing.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(base: Instant, n: u64) -> Instant {
        base + Duration::from_millis(n)
    }

    #[test]
    fn a_peer_failing_long_and_recently_is_due_and_an_answer_clears_it() {
        let r = Reach::default();
        let t0 = Instant::now();
        let after = Duration::from_millis(1000);
        r.failed("a", t0);
        r.failed("a", ms(t0, 999));
        assert!(r.due(ms(t0, 999), after).is_empty());
        r.failed("a", ms(t0, 1000));
        r.failed("b", ms(t0, 500));
        assert_eq!(r.due(ms(t0, 1000), after), ["a"]);
        // Stale: no failure within `after` of now.
        assert!(r.due(ms(t0, 2000), after).is_empty());
        r.failed("a", ms(t0, 2100));
        assert_eq!(r.due(ms(t0, 2100), after), ["a"]);
        r.answered("a");
        assert!(r.due(ms(t0, 2100), after).is_empty());
        r.failed("b", ms(t0, 1600));
        r.forget(&["b".to_string()]);
        assert!(r.due(ms(t0, 1600), after).is_empty());
        assert!(r.start_removal());
        assert!(!r.start_removal());
        r.end_removal();
        assert!(r.start_removal());
    }
}
