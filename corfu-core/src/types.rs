//! The vocabulary shared by every role: addresses, epochs, streams, clusters.

use std::fmt;
use std::str::FromStr;

use rkyv::{Archive, Deserialize, Serialize};

/// A position in the shared log (64-bit, write-once).
pub type Address = u64;

/// A layout version. Every request carries the sender's epoch; a sealed role
/// rejects lower epochs.
pub type Epoch = u64;

/// Identifies one Corfu cluster. Requests name it so a client configured for
/// one cluster can never write into another.
#[derive(
    Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default,
)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub struct ClusterId(pub u128);

impl ClusterId {
    /// The wildcard id: accepted only by `Ping` and `Info` (discovery).
    pub const ANY: ClusterId = ClusterId(0);

    /// A fresh random cluster id (never [`ClusterId::ANY`]).
    pub fn random() -> ClusterId {
        loop {
            let id = rand::random::<u128>();
            if id != 0 {
                return ClusterId(id);
            }
        }
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterId({self})")
    }
}

/// Error parsing a [`ClusterId`].
#[derive(Debug, thiserror::Error)]
#[error("a cluster id is 32 hexadecimal digits (optionally with dashes), not {0:?}")]
pub struct ParseClusterIdError(String);

impl FromStr for ClusterId {
    type Err = ParseClusterIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits: String = s.chars().filter(|c| *c != '-').collect();
        if digits.len() != 32 {
            return Err(ParseClusterIdError(s.to_string()));
        }
        u128::from_str_radix(&digits, 16)
            .map(ClusterId)
            .map_err(|_| ParseClusterIdError(s.to_string()))
    }
}

impl serde::Serialize for ClusterId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ClusterId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Identifies a stream: the sub-sequence of the log that belongs to one
/// object (Tango). An entry may belong to several streams.
#[derive(
    Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default,
)]
#[rkyv(derive(Debug, PartialEq, Eq, Hash))]
pub struct StreamId(pub u128);

impl StreamId {
    /// The stream id of a named object: a stable 128-bit hash of the name
    /// (FNV-1a), the same in every process and every version.
    pub fn from_name(name: &str) -> StreamId {
        const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
        const PRIME: u128 = 0x0000000001000000000000000000013B;
        let mut hash = OFFSET;
        for byte in name.as_bytes() {
            hash ^= u128::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
        StreamId(hash)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({self})")
    }
}

/// A role a node can host.
#[derive(
    Archive,
    Serialize,
    Deserialize,
    serde::Serialize,
    serde::Deserialize,
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A Paxos acceptor of the layout service.
    LayoutServer,
    /// The global sequencer (one active per epoch).
    Sequencer,
    /// A write-once storage unit.
    LogUnit,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::LayoutServer => "layout_server",
            Role::Sequencer => "sequencer",
            Role::LogUnit => "log_unit",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_id_round_trips_through_text() {
        let id = ClusterId::random();
        assert_ne!(id, ClusterId::ANY);
        assert_eq!(id.to_string().parse::<ClusterId>().unwrap(), id);
        assert!("xyz".parse::<ClusterId>().is_err());
        assert!("0123".parse::<ClusterId>().is_err());
    }

    #[test]
    fn stream_ids_are_stable_and_distinct() {
        // Fixed value: a stream id must never change across versions.
        assert_eq!(
            StreamId::from_name("").0,
            0x6c62272e07bb014262b821756295c58d
        );
        assert_ne!(StreamId::from_name("a"), StreamId::from_name("b"));
        assert_eq!(
            StreamId::from_name("accounts"),
            StreamId::from_name("accounts")
        );
    }
}
