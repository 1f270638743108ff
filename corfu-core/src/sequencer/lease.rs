//! The sequencer's lease: why a sequencer that was replaced while it was
//! paused or cut off cannot serve stale tails.
//!
//! A linearizable read asks the sequencer for a tail and plays the log up
//! to it. A sequencer that the failure detectors removed without sealing
//! it (it did not answer) still believes it is active, and a client still
//! in the old epoch would take its tail as the truth, missing everything
//! acknowledged in the new epoch. Writes are fenced by the sealed log
//! units, but a tail is not a write.
//!
//! So a sequencer answers `Tail` and `StreamAddresses` only while it holds
//! a lease:
//! - **Renewal.** Every [`LEASE_RENEW_EVERY`] it asks the layout servers of
//!   its layout for the highest epoch they have seen (promised, accepted
//!   or committed). Once a majority answered with nothing above its epoch,
//!   the lease runs until the *send* time of that round plus [`LEASE`]. An
//!   answer above its epoch ends the lease for good: the sequencer is
//!   outdated.
//! - **Checked after the answer is computed.** The tail is read first and
//!   the lease checked after, so a pause between the two cannot let an
//!   answer read after expiry out.
//! - **The reconfiguration waits it out.** An epoch `e + 1` is promised by
//!   a majority of the layout servers before it is decided; a renewal
//!   round that saw nothing above `e` reached one of them before its
//!   promise, so it was sent before the proposer had its promises. When
//!   the old sequencer did not answer the seal, the reconfiguration
//!   bootstraps the new sequencer only [`reconfiguration_wait`] after the
//!   promises, by when every lease of the old one has expired: nothing of
//!   the new epoch can be acknowledged while the old one still answers.
//!   When it did answer the seal it is sealed, and serves nothing of the
//!   old epoch anyway.
//!
//! The rule rests on clocks of the nodes running at the same rate (not on
//! synchronised clocks); the wait carries a margin for rate drift.

use std::time::Duration;

/// How long a renewal round keeps the lease, from its send time.
pub const LEASE: Duration = Duration::from_millis(100);

/// How often the lease is renewed (several times per [`LEASE`], so a slow
/// round does not let it lapse).
pub const LEASE_RENEW_EVERY: Duration = Duration::from_millis(20);

/// How long a reconfiguration whose old sequencer did not answer the seal
/// waits after its promises before bootstrapping the new sequencer:
/// [`LEASE`] plus 5% and 2 ms for clock rate drift.
pub fn reconfiguration_wait() -> Duration {
    LEASE + LEASE / 20 + Duration::from_millis(2)
}
