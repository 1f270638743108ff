//! The `[sequencer]` table of a node's configuration: the limits of the
//! sequencer role. Every request is bounded so that one client cannot make
//! the single global sequencer do unbounded work while holding its lock.

use serde::{Deserialize, Serialize};

/// Limits of the sequencer role. Every field has a default; a missing
/// `[sequencer]` table means all defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SequencerConfig {
    /// Most addresses one token request may ask for (`count`).
    pub token_count_max: u32,
    /// Most streams one token request may name; a grant touches each
    /// stream's tail and address index once per request.
    pub token_streams_max: u32,
    /// Most streams one tail query may name (a lookup each, no writes).
    pub tail_streams_max: u32,
    /// Most conflict keys (read set plus write set) one conditional token
    /// may carry.
    pub txn_keys_max: u32,
    /// Most addresses one `StreamAddresses` answer holds; a longer answer is
    /// cut to its first `stream_addresses_max` addresses and the caller
    /// continues from the last one plus 1. The default keeps the answer
    /// (8 bytes an address) at 512 KiB, far below the frame limit.
    pub stream_addresses_max: u32,
    /// Most keys the conflict table remembers (about 100 bytes each).
    /// Beyond it the key written longest ago is forgotten and the
    /// transaction floor rises to its address: snapshots below the floor
    /// abort, which is safe (never a wrong commit) but costs retries.
    pub conflict_keys_max: u32,
}

impl Default for SequencerConfig {
    fn default() -> Self {
        SequencerConfig {
            token_count_max: 4096,
            token_streams_max: 64,
            tail_streams_max: 1024,
            txn_keys_max: 4096,
            stream_addresses_max: 65_536,
            conflict_keys_max: 1 << 20,
        }
    }
}

impl SequencerConfig {
    /// Checks ranges; the error is one line naming the offending field.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("token_count_max", self.token_count_max),
            ("token_streams_max", self.token_streams_max),
            ("tail_streams_max", self.tail_streams_max),
            ("txn_keys_max", self.txn_keys_max),
            ("stream_addresses_max", self.stream_addresses_max),
            ("conflict_keys_max", self.conflict_keys_max),
        ] {
            if value == 0 {
                return Err(format!("field `sequencer.{name}`: must be greater than 0"));
            }
        }
        // A transaction whose write set alone overflows the table would
        // raise the floor to its own address and abort every concurrent
        // transaction.
        if self.conflict_keys_max < self.txn_keys_max {
            return Err(
                "field `sequencer.conflict_keys_max`: must be at least txn_keys_max".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::config::parse_toml;

    #[test]
    fn defaults_are_valid_and_missing_fields_default() {
        assert_eq!(SequencerConfig::default().validate(), Ok(()));
        let c: SequencerConfig = parse_toml("token_count_max = 10\n", "s.toml").unwrap();
        assert_eq!(c.token_count_max, 10);
        assert_eq!(c.token_streams_max, 64);
        assert_eq!(c.stream_addresses_max, 65_536);
    }

    #[test]
    fn unknown_and_zero_fields_are_named() {
        let e = parse_toml::<SequencerConfig>("token_count = 10\n", "s.toml").unwrap_err();
        assert!(e.to_string().contains("token_count"), "{e}");
        let c = SequencerConfig {
            stream_addresses_max: 0,
            ..SequencerConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .contains("`sequencer.stream_addresses_max`"));
        let c = SequencerConfig {
            conflict_keys_max: 10,
            txn_keys_max: 11,
            ..SequencerConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .contains("`sequencer.conflict_keys_max`"));
    }
}
