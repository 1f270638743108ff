//! Settings of a [`super::LogClient`]: the `[client]` table of a client
//! config.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a reader does when it finds an address below the tail unwritten
/// (CORFU §3.3: the writer may have crashed between taking the token and
/// writing, and a hole would block every reader behind it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HoleFillPolicy {
    /// Wait up to `hole_fill_timeout_ms` for the writer, then complete the
    /// address: copy the head's value down the chain, or junk it.
    #[default]
    WaitThenFill,
    /// Complete the address at once (for readers that know the writer is
    /// gone).
    Immediately,
    /// Never fill: reads answer `Unwritten` and stream reads stop with
    /// an error at the hole.
    Never,
}

/// Settings of a log client. Every queue and batch is bounded here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogClientOptions {
    /// What readers do about holes.
    pub hole_fill: HoleFillPolicy,
    /// How long a reader waits for an unwritten address below the tail
    /// before filling it (`wait_then_fill`).
    pub hole_fill_timeout_ms: u64,
    /// How long one operation may keep retrying transient failures
    /// (unreachable nodes, a layout change, an unbootstrapped sequencer)
    /// before it fails.
    pub operation_timeout_ms: u64,
    /// How many times an append may lose its address (to a hole filler)
    /// and take a new token before it fails.
    pub append_retries_max: u32,
    /// Appends waiting to be batched; `append` waits when the queue is full.
    pub append_queue_max: u32,
    /// Entries in one batch (one token request per stream set, one write
    /// per chain member and stripe).
    pub batch_entries_max: u32,
    /// Payload bytes in one batch (an entry larger than this goes alone).
    pub batch_bytes_max: u32,
    /// Batches being written at once; while all are busy, new appends
    /// queue up and form the next, larger batch.
    pub batches_in_flight_max: u32,
    /// Largest entry accepted by `append`, measured as the log units
    /// measure their own `entry_bytes_max`: the record body, that is the
    /// payload plus 27 bytes plus 24 per stream
    /// ([`crate::logunit::record::body_len`]). With the same value on both
    /// sides (the default, 8 MiB), every entry the client accepts is
    /// accepted by the units; a client allowing more than its units gets
    /// their refusal. It must fit a frame (`transport.frame_bytes_max`).
    pub entry_bytes_max: u32,
    /// Addresses asked of a log unit in one read request.
    pub read_batch_max: u32,
    /// Read requests outstanding at once within one range or stream read.
    pub reads_in_flight_max: u32,
    /// A log unit or sequencer this client's calls have failed to reach
    /// (timeouts, lost connections) for this long, with no answer in
    /// between, is removed by the client itself (a node that answers the
    /// client's seal is kept). For partitions the failure detectors cannot
    /// see: a chain member cut off from the clients but not from the
    /// layout servers. Longer than the detectors' timeout, so that they
    /// act first on what they can see. 0: never.
    pub remove_unreachable_after_ms: u64,
}

impl Default for LogClientOptions {
    fn default() -> Self {
        LogClientOptions {
            hole_fill: HoleFillPolicy::WaitThenFill,
            hole_fill_timeout_ms: 300,
            operation_timeout_ms: 15_000,
            append_retries_max: 8,
            append_queue_max: 65_536,
            batch_entries_max: 1024,
            batch_bytes_max: 4 << 20,
            batches_in_flight_max: 2,
            entry_bytes_max: 8 << 20,
            read_batch_max: 1024,
            reads_in_flight_max: 8,
            remove_unreachable_after_ms: 3_000,
        }
    }
}

impl LogClientOptions {
    /// Checks ranges; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("operation_timeout_ms", self.operation_timeout_ms),
            ("append_retries_max", u64::from(self.append_retries_max)),
            ("append_queue_max", u64::from(self.append_queue_max)),
            ("batch_entries_max", u64::from(self.batch_entries_max)),
            ("batch_bytes_max", u64::from(self.batch_bytes_max)),
            (
                "batches_in_flight_max",
                u64::from(self.batches_in_flight_max),
            ),
            ("entry_bytes_max", u64::from(self.entry_bytes_max)),
            ("read_batch_max", u64::from(self.read_batch_max)),
            ("reads_in_flight_max", u64::from(self.reads_in_flight_max)),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("field `client.{name}`: must be positive"));
            }
        }
        let empty = crate::logunit::record::body_len(0, 0, true);
        if (self.entry_bytes_max as usize) < empty {
            return Err(format!(
                "field `client.entry_bytes_max`: at least {empty} (the record of an empty entry)"
            ));
        }
        if self.batch_entries_max > 65_536 {
            return Err("field `client.batch_entries_max`: at most 65536".into());
        }
        if self.append_queue_max > 1 << 24 {
            return Err("field `client.append_queue_max`: at most 16777216".into());
        }
        if self.batches_in_flight_max > 1024 || self.reads_in_flight_max > 1024 {
            return Err("fields `client.*_in_flight_max`: at most 1024".into());
        }
        Ok(())
    }

    /// Checks that the largest entry `entry_bytes_max` allows fits frames
    /// of `frame_bytes_max` (the transport's); the error names both fields.
    pub fn check_frame(&self, frame_bytes_max: u32) -> Result<(), String> {
        crate::wire::logunit::check_entry_fits_frame(
            self.entry_bytes_max,
            frame_bytes_max,
            "client.entry_bytes_max",
            "transport.frame_bytes_max",
        )
    }

    pub(crate) fn hole_fill_timeout(&self) -> Duration {
        Duration::from_millis(self.hole_fill_timeout_ms)
    }

    pub(crate) fn operation_timeout(&self) -> Duration {
        Duration::from_millis(self.operation_timeout_ms)
    }

    /// `remove_unreachable_after_ms` as a duration (zero: never).
    pub fn remove_unreachable_after(&self) -> Duration {
        Duration::from_millis(self.remove_unreachable_after_ms)
    }
}
