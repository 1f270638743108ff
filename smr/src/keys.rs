//! Conflict keys: what a transaction's read set and write set are made of.
//!
//! A conflict key names a part of one object: the object's stream and a
//! 64-bit hash of the part. The log's sequencer compares them as plain
//! numbers, so the hash must be the same in every process and every
//! version: [`key_hash`] is FNV-1a over the key's rkyv archive (whose
//! format the workspace pins), never a randomly seeded hasher.
//!
//! Two hashes colliding only makes two parts conflict that need not: a
//! spurious abort and retry, never a missed conflict.

use crate::codec::{Codec, CodecError};

/// The key of the whole object. The runtime adds it to the write set of
/// every write, whatever [`StateMachine::write_keys`] says, and a read of
/// the whole object ([`Txn::read`]) puts it in the read set: a whole-object
/// read conflicts with every later write of the object.
///
/// [`StateMachine::write_keys`]: crate::StateMachine::write_keys
/// [`Txn::read`]: crate::Txn::read
pub const WHOLE_OBJECT: u64 = 0;

/// FNV-1a (64 bits) of `bytes`: stable across processes, platforms and
/// versions.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
    })
}

/// The conflict key hash of `key`: [`hash_bytes`] of its rkyv archive, so
/// equal keys hash alike in every process.
pub fn key_hash<K: Codec>(key: &K) -> Result<u64, CodecError> {
    let mut bytes = Vec::new();
    key.encode_into(&mut bytes)?;
    Ok(hash_bytes(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_the_published_fnv1a_values() {
        // Reference values of FNV-1a 64: any change would split processes
        // of different versions into disagreeing conflict keys.
        assert_eq!(hash_bytes(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash_bytes(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(hash_bytes(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(
            key_hash(&"alice".to_string()).unwrap(),
            key_hash(&"alice".to_string()).unwrap()
        );
        assert_ne!(
            key_hash(&"alice".to_string()).unwrap(),
            key_hash(&"bob".to_string()).unwrap()
        );
        let mut archive = Vec::new();
        7u64.encode_into(&mut archive).unwrap();
        assert_eq!(key_hash(&7u64).unwrap(), hash_bytes(&archive));
    }
}
