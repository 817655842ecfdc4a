//! The CARP version 2 advertisement, byte-compatible with OpenBSD's carp(4) and ucarp.
//!
//! ```text
//!  0       1       2        3        4       5        6               8
//!  +-------+-------+--------+--------+-------+--------+---------------+
//!  |ver|typ| vhid  |advskew |authlen |demote |advbase |   checksum    |
//!  +-------+-------+--------+--------+-------+--------+---------------+
//!  8                               16                              36
//!  |   counter (u64, two u32)      |  HMAC-SHA1 (20 bytes)           |
//!  +-------------------------------+---------------------------------+
//! ```
//!
//! Version 2, type 1 (advertisement), authlen 7 (counter and HMAC in 32-bit words). The checksum is the
//! Internet checksum of the 36 bytes with the checksum field zero. The HMAC is HMAC-SHA1 keyed by the
//! pair's security text (at most 19 bytes, as ucarp stores it with its terminating zero in 20), over
//! version (1 byte), type (1 byte), vhid, the virtual IPv4 address, and the counter, exactly as ucarp
//! computes it, so a ucarp node and ours authenticate each other. The `demote` byte is OpenBSD's
//! demotion counter; ucarp sends 0 and ignores it.
//!
//! Sent as IP protocol 112 to 224.0.0.18 with TTL 255; a receiver drops adverts whose TTL is not 255
//! (they crossed a router), as CARP requires.

use hmac::{Hmac, Mac};
use sha1::Sha1;

pub const LEN: usize = 36;
pub const VERSION: u8 = 2;
pub const TYPE_ADVERTISEMENT: u8 = 1;
pub const AUTHLEN: u8 = 7;
/// IP protocol number of CARP (shared with VRRP's neighbour in the registry).
pub const IP_PROTOCOL: u8 = 112;
pub const MULTICAST_GROUP: [u8; 4] = [224, 0, 0, 18];
pub const TTL: u8 = 255;
/// Longest security text ucarp accepts (its key buffer is 20 bytes with a terminating zero).
pub const MAX_KEY_LEN: usize = 19;

/// Why an advertisement was ignored. Every ignored advert is counted under one reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum AdvertError {
    #[error("advertisement is not 36 bytes")]
    Length,
    #[error("not CARP version 2")]
    Version,
    #[error("not an advertisement")]
    Type,
    #[error("authentication length is not 7")]
    AuthLen,
    #[error("checksum mismatch")]
    Checksum,
    #[error("virtual host id of another pair")]
    OtherVhid,
    #[error("TTL is not 255: the advert crossed a router")]
    Ttl,
    #[error("HMAC mismatch: wrong security text, vhid or virtual IP")]
    Hmac,
    #[error("counter already used by this sender: replay")]
    Replay,
    #[error("our own advertisement")]
    Own,
}

diode_proto::reasons!(AdvertError {
    Length => "length",
    Version => "version",
    Type => "type",
    AuthLen => "authlen",
    Checksum => "checksum",
    OtherVhid => "other_vhid",
    Ttl => "ttl",
    Hmac => "hmac",
    Replay => "replay",
    Own => "own",
});

/// The security text and what it is bound to: the pair's vhid and virtual IP.
#[derive(Clone)]
pub struct AdvertKey {
    key: Vec<u8>,
    vhid: u8,
    vip: [u8; 4],
}

impl std::fmt::Debug for AdvertKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdvertKey").field("vhid", &self.vhid).field("vip", &self.vip).finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("security text is {0} bytes; CARP (and ucarp) allow at most 19")]
    TooLong(usize),
    #[error("security text must not be empty")]
    Empty,
}

impl AdvertKey {
    pub fn new(security_text: &[u8], vhid: u8, vip: [u8; 4]) -> Result<AdvertKey, KeyError> {
        if security_text.is_empty() {
            return Err(KeyError::Empty);
        }
        if security_text.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong(security_text.len()));
        }
        Ok(AdvertKey { key: security_text.to_vec(), vhid, vip })
    }

    pub fn vhid(&self) -> u8 {
        self.vhid
    }

    fn hmac(&self, counter: u64) -> [u8; 20] {
        // HMAC pads a short key with zeros, exactly as ucarp's zero-filled 20-byte key buffer.
        let Ok(mut mac) = <Hmac<Sha1> as Mac>::new_from_slice(&self.key) else {
            return [0; 20];
        };
        mac.update(&[VERSION, TYPE_ADVERTISEMENT, self.vhid]);
        mac.update(&self.vip);
        mac.update(&counter.to_be_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// The meaning of an advertisement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advert {
    pub vhid: u8,
    pub advbase: u8,
    pub advskew: u8,
    pub demote: u8,
    pub counter: u64,
}

/// The Internet checksum (RFC 1071) of `bytes`.
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in bytes.chunks(2) {
        let word = u32::from(pair[0]) << 8 | pair.get(1).map_or(0, |b| u32::from(*b));
        sum += word;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

impl Advert {
    /// The 36 bytes of this advertisement, checksummed and authenticated with `key`.
    pub fn emit(&self, key: &AdvertKey) -> [u8; LEN] {
        let mut out = [0u8; LEN];
        out[0] = VERSION << 4 | TYPE_ADVERTISEMENT;
        out[1] = self.vhid;
        out[2] = self.advskew;
        out[3] = AUTHLEN;
        out[4] = self.demote;
        out[5] = self.advbase;
        out[8..16].copy_from_slice(&self.counter.to_be_bytes());
        out[16..36].copy_from_slice(&key.hmac(self.counter));
        let checksum = internet_checksum(&out);
        out[6..8].copy_from_slice(&checksum.to_be_bytes());
        out
    }

    /// Parses and authenticates an advertisement received with IP TTL `ttl` (`None` over the UDP
    /// transport, which has no TTL to check). Replay and own-advert checks are the caller's: they need
    /// state.
    pub fn parse(bytes: &[u8], ttl: Option<u8>, key: &AdvertKey) -> Result<Advert, AdvertError> {
        if bytes.len() != LEN {
            return Err(AdvertError::Length);
        }
        if ttl.is_some_and(|t| t != TTL) {
            return Err(AdvertError::Ttl);
        }
        if bytes[0] >> 4 != VERSION {
            return Err(AdvertError::Version);
        }
        if bytes[0] & 0x0f != TYPE_ADVERTISEMENT {
            return Err(AdvertError::Type);
        }
        if bytes[3] != AUTHLEN {
            return Err(AdvertError::AuthLen);
        }
        if internet_checksum(bytes) != 0 {
            return Err(AdvertError::Checksum);
        }
        if bytes[1] != key.vhid {
            return Err(AdvertError::OtherVhid);
        }
        let mut counter = [0u8; 8];
        counter.copy_from_slice(&bytes[8..16]);
        let counter = u64::from_be_bytes(counter);
        let expected = key.hmac(counter);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], &bytes[16..36])) {
            return Err(AdvertError::Hmac);
        }
        Ok(Advert { vhid: bytes[1], advskew: bytes[2], demote: bytes[4], advbase: bytes[5], counter })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AdvertKey {
        AdvertKey::new(b"secret", 7, [198, 18, 0, 10]).expect("valid key")
    }

    fn advert() -> Advert {
        Advert { vhid: 7, advbase: 1, advskew: 100, demote: 0, counter: 0x0102_0304_0506_0708 }
    }

    #[test]
    fn advert_round_trips_and_checksums_to_zero() {
        let bytes = advert().emit(&key());
        assert_eq!(internet_checksum(&bytes), 0);
        assert_eq!(Advert::parse(&bytes, Some(255), &key()), Ok(advert()));
        assert_eq!(Advert::parse(&bytes, None, &key()), Ok(advert()));
    }

    #[test]
    fn wrong_key_vip_vhid_or_ttl_is_refused() {
        let bytes = advert().emit(&key());
        let other_text = AdvertKey::new(b"guess", 7, [198, 18, 0, 10]).expect("valid");
        assert_eq!(Advert::parse(&bytes, Some(255), &other_text), Err(AdvertError::Hmac));
        let other_vip = AdvertKey::new(b"secret", 7, [198, 18, 0, 11]).expect("valid");
        assert_eq!(Advert::parse(&bytes, Some(255), &other_vip), Err(AdvertError::Hmac));
        let other_vhid = AdvertKey::new(b"secret", 8, [198, 18, 0, 10]).expect("valid");
        assert_eq!(Advert::parse(&bytes, Some(255), &other_vhid), Err(AdvertError::OtherVhid));
        assert_eq!(Advert::parse(&bytes, Some(254), &key()), Err(AdvertError::Ttl));
    }

    #[test]
    fn any_flipped_bit_is_refused() {
        let bytes = advert().emit(&key());
        for bit in 0..LEN * 8 {
            let mut damaged = bytes;
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(Advert::parse(&damaged, Some(255), &key()).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn security_text_follows_ucarp_limits() {
        assert_eq!(AdvertKey::new(&[b'x'; 20], 1, [0; 4]).err(), Some(KeyError::TooLong(20)));
        assert_eq!(AdvertKey::new(b"", 1, [0; 4]).err(), Some(KeyError::Empty));
        assert!(AdvertKey::new(&[b'x'; 19], 1, [0; 4]).is_ok());
    }

    #[test]
    fn hmac_matches_ucarps_construction() {
        // ucarp: SHA1(opad || SHA1(ipad || 02 01 vhid || vip || counter)) with the key zero-padded;
        // computed here by hand from the SHA-1 primitive to pin the construction.
        use sha1::Digest;
        let k = key();
        let mut pad = [0u8; 64];
        pad[..6].copy_from_slice(b"secret");
        let ipad: Vec<u8> = pad.iter().map(|b| b ^ 0x36).collect();
        let opad: Vec<u8> = pad.iter().map(|b| b ^ 0x5c).collect();
        let mut inner = Sha1::new();
        inner.update(&ipad);
        inner.update([2u8, 1, 7, 198, 18, 0, 10]);
        inner.update(0x0102_0304_0506_0708u64.to_be_bytes());
        let inner = inner.finalize();
        let mut outer = Sha1::new();
        outer.update(&opad);
        outer.update(inner);
        let expected: [u8; 20] = outer.finalize().into();
        assert_eq!(k.hmac(0x0102_0304_0506_0708), expected);
    }
}
