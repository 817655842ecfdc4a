//! Link authentication: CRC32 only, or keyed BLAKE3 tags with key ids for rotation.
//!
//! Without a key, a datagram's check is a CRC32: it catches corruption, not forgery. With keys, every
//! datagram carries a 16-byte tag `BLAKE3-keyed(key, bytes 0..40 || payload)` truncated to 16 bytes, and
//! untagged datagrams are refused. Several keys may be accepted at once (the overlap window of a key
//! rotation); the sender tags with one of them.

use crate::error::DropReason;
use crate::header::TAG_LEN;

/// A 32-byte link key and the id that names it on the wire.
#[derive(Clone)]
pub struct LinkKey {
    pub id: u8,
    pub key: [u8; 32],
}

impl core::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never print key material, not even in debug logs.
        f.debug_struct("LinkKey").field("id", &self.id).finish_non_exhaustive()
    }
}

/// How datagrams are checked and tagged on a link.
///
/// Invariant: when `keys` is non-empty, `send_key` names one of them.
#[derive(Clone, Debug, Default)]
pub struct LinkAuth {
    keys: Vec<LinkKey>,
    send_key: Option<u8>,
}

impl LinkAuth {
    /// CRC32 only: no key configured.
    pub fn none() -> LinkAuth {
        LinkAuth::default()
    }

    /// Keyed tags. `send_key` must be the id of one of `keys`; ids must be distinct.
    pub fn keyed(keys: Vec<LinkKey>, send_key: u8) -> Result<LinkAuth, AuthConfigError> {
        if !keys.iter().any(|k| k.id == send_key) {
            return Err(AuthConfigError::UnknownSendKey { id: send_key });
        }
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].iter().any(|k| k.id == key.id) {
                return Err(AuthConfigError::DuplicateKeyId { id: key.id });
            }
        }
        Ok(LinkAuth { keys, send_key: Some(send_key) })
    }

    pub fn requires_tag(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The key id a sender puts in its datagrams, `None` for CRC32.
    pub fn send_key_id(&self) -> Option<u8> {
        self.send_key
    }

    fn key(&self, id: u8) -> Option<&LinkKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    pub(crate) fn tag(&self, key_id: u8, fixed: &[u8], payload: &[u8]) -> [u8; TAG_LEN] {
        let mut out = [0u8; TAG_LEN];
        if let Some(key) = self.key(key_id) {
            let mut hasher = blake3::Hasher::new_keyed(&key.key);
            hasher.update(fixed);
            hasher.update(payload);
            out.copy_from_slice(&hasher.finalize().as_bytes()[..TAG_LEN]);
        }
        out
    }

    pub(crate) fn verify(&self, key_id: u8, fixed: &[u8], payload: &[u8], tag: &[u8]) -> Result<(), DropReason> {
        if self.key(key_id).is_none() {
            return Err(DropReason::UnknownKey);
        }
        let expected = self.tag(key_id, fixed, payload);
        // Constant-time comparison: a forger learns nothing from timing.
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], tag)) {
            return Err(DropReason::BadTag);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthConfigError {
    #[error("send key id {id} is not among the configured link keys")]
    UnknownSendKey { id: u8 },
    #[error("link key id {id} is configured twice")]
    DuplicateKeyId { id: u8 },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::{write_datagram, Kind, Packet, Repr};

    fn repr(key_id: Option<u8>) -> Repr {
        Repr {
            kind: Kind::Beacon,
            session: 1,
            epoch: 1,
            channel: 0,
            block_seq: 0,
            esi: 0,
            block_len: 0,
            payload_len: 4,
            key_id,
            stamped: false,
        }
    }

    fn parse(buf: &[u8], auth: &LinkAuth) -> Result<Repr, DropReason> {
        Packet::new_checked(buf).and_then(|p| Repr::parse(&p, auth))
    }

    #[test]
    fn tagged_datagram_needs_the_right_key() {
        let old = LinkKey { id: 1, key: [1; 32] };
        let new = LinkKey { id: 2, key: [2; 32] };
        let sender = LinkAuth::keyed(vec![new.clone()], 2).expect("valid");
        let mut buf = Vec::new();
        write_datagram(&repr(Some(2)), b"beac", &sender, &mut buf);

        let overlap = LinkAuth::keyed(vec![old.clone(), new], 1).expect("valid");
        assert!(parse(&buf, &overlap).is_ok(), "both keys are accepted during rotation");
        let only_old = LinkAuth::keyed(vec![old], 1).expect("valid");
        assert_eq!(parse(&buf, &only_old), Err(DropReason::UnknownKey));
        let wrong = LinkAuth::keyed(vec![LinkKey { id: 2, key: [9; 32] }], 2).expect("valid");
        assert_eq!(parse(&buf, &wrong), Err(DropReason::BadTag));
    }

    #[test]
    fn keyed_link_refuses_crc_datagrams() {
        let mut buf = Vec::new();
        write_datagram(&repr(None), b"beac", &LinkAuth::none(), &mut buf);
        let keyed = LinkAuth::keyed(vec![LinkKey { id: 1, key: [1; 32] }], 1).expect("valid");
        assert_eq!(parse(&buf, &keyed), Err(DropReason::MissingTag));
    }

    #[test]
    fn bad_key_configuration_is_refused() {
        assert_eq!(LinkAuth::keyed(vec![], 1).err(), Some(AuthConfigError::UnknownSendKey { id: 1 }));
        let k = LinkKey { id: 3, key: [0; 32] };
        assert_eq!(LinkAuth::keyed(vec![k.clone(), k], 3).err(), Some(AuthConfigError::DuplicateKeyId { id: 3 }));
    }
}
