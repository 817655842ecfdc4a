//! The datagram header: every datagram on a fiber starts with it.
//!
//! ```text
//!  0               4       5       6       7       8
//!  +---------------+-------+-------+-------+-------+
//!  | magic "DIOD"  |version| kind  | flags |key id |
//!  +---------------+-------+-------+-------+-------+
//!  8                                               16
//!  |                session id (u64)               |
//!  16              20              22              24
//!  |  epoch (u32)  |channel (u16)  |payload len u16|
//!  24                                              32
//!  |              block sequence (u64)             |
//!  32              36              40
//!  | payload id    | block length  | check: CRC32 (4 bytes), or a keyed
//!  | SBN=0, ESI u24| F (u32)       | BLAKE3 tag (16 bytes) when TAGGED
//!  +---------------+---------------+---------------------------------------
//!  40 + check length: payload (one RaptorQ symbol, or a beacon body)
//! ```
//!
//! All integers are big-endian. The check covers bytes `0..40` and the payload; the check field itself
//! is not covered. A datagram is exactly header plus payload: trailing bytes are an error, so a
//! truncated or padded datagram never parses.

use crate::auth::LinkAuth;
use crate::error::DropReason;

/// Byte ranges of the fixed header fields.
pub mod field {
    pub type Field = core::ops::Range<usize>;
    pub const MAGIC: Field = 0..4;
    pub const VERSION: usize = 4;
    pub const KIND: usize = 5;
    pub const FLAGS: usize = 6;
    pub const KEY_ID: usize = 7;
    pub const SESSION: Field = 8..16;
    pub const EPOCH: Field = 16..20;
    pub const CHANNEL: Field = 20..22;
    pub const PAYLOAD_LEN: Field = 22..24;
    pub const BLOCK_SEQ: Field = 24..32;
    pub const PAYLOAD_ID: Field = 32..36;
    pub const BLOCK_LEN: Field = 36..40;
    /// Start of the check field; its length depends on the TAGGED flag.
    pub const CHECK: usize = 40;
}

pub const MAGIC: [u8; 4] = *b"DIOD";
/// What a sender writes. Version 2 seals blocks with XXH3-128 where version 1 used BLAKE3
/// ([`crate::block`]); nothing else differs.
pub const VERSION: u8 = 2;
/// The older version a receiver still accepts, so a RED pair can be upgraded before its BLUE pair.
pub const LEGACY_VERSION: u8 = 1;
/// Length of the fields covered by the check (everything before it).
pub const FIXED_LEN: usize = field::CHECK;
pub const CRC_LEN: usize = 4;
pub const TAG_LEN: usize = 16;
/// Header length of an untagged (CRC32) datagram.
pub const HEADER_LEN_CRC: usize = FIXED_LEN + CRC_LEN;
/// Header length of a tagged (keyed BLAKE3) datagram.
pub const HEADER_LEN_TAGGED: usize = FIXED_LEN + TAG_LEN;
/// Flag bit: the check field is a 16-byte keyed BLAKE3 tag instead of a CRC32.
pub const FLAG_TAGGED: u8 = 0x01;
/// Flag bit: the session id is a start stamp ([`stamped_session`]): a sender started later has a
/// larger id, so a receiver can tell a replayed older session from a newer one. Senders before this
/// flag drew the id at random.
pub const FLAG_STAMPED: u8 = 0x02;
const KNOWN_FLAGS: u8 = FLAG_TAGGED | FLAG_STAMPED;

/// A session id that is a start stamp: milliseconds since the Unix epoch in the top 48 bits (enough
/// until the year 10889), 16 random bits below so two senders starting in the same millisecond differ.
pub const fn stamped_session(start_unix_ms: u64, random: u16) -> u64 {
    (start_unix_ms << 16) | random as u64
}

/// The start time, in Unix milliseconds, of a stamped session id.
pub const fn session_start_ms(session: u64) -> u64 {
    session >> 16
}
/// RaptorQ (RFC 6330) limits the encoding symbol id to 24 bits.
pub const MAX_ESI: u32 = (1 << 24) - 1;
/// RFC 6330 K'max: the most source symbols one source block may have.
pub const MAX_SOURCE_SYMBOLS: u32 = 56_403;
/// Symbols are a multiple of this many bytes.
pub const SYMBOL_ALIGNMENT: u16 = 8;

/// What a datagram carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// One RaptorQ symbol of one block.
    Symbol,
    /// A beacon (session, FEC and channel state).
    Beacon,
    /// A manifest: the files a channel has just sent (see [`crate::manifest`]).
    Manifest,
}

impl Kind {
    pub const fn to_wire(self) -> u8 {
        match self {
            Kind::Symbol => 1,
            Kind::Beacon => 2,
            Kind::Manifest => 3,
        }
    }

    pub const fn from_wire(value: u8) -> Option<Kind> {
        match value {
            1 => Some(Kind::Symbol),
            2 => Some(Kind::Beacon),
            3 => Some(Kind::Manifest),
            _ => None,
        }
    }
}

/// A read-only or mutable view of a datagram.
///
/// Invariant after [`Packet::new_checked`]: the buffer holds at least the header for its flags, and
/// exactly `header_len() + payload_len()` bytes, so no accessor can panic.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

fn be_u16(bytes: &[u8], range: field::Field) -> u16 {
    let mut out = [0u8; 2];
    out.copy_from_slice(&bytes[range]);
    u16::from_be_bytes(out)
}

fn be_u32(bytes: &[u8], range: field::Field) -> u32 {
    let mut out = [0u8; 4];
    out.copy_from_slice(&bytes[range]);
    u32::from_be_bytes(out)
}

fn be_u64(bytes: &[u8], range: field::Field) -> u64 {
    let mut out = [0u8; 8];
    out.copy_from_slice(&bytes[range]);
    u64::from_be_bytes(out)
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic on a short buffer.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after checking its length against the header and the payload length field.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, DropReason> {
        let packet = Packet::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    fn check_len(&self) -> Result<(), DropReason> {
        let bytes = self.buffer.as_ref();
        if bytes.len() < HEADER_LEN_CRC {
            return Err(DropReason::TooShort);
        }
        let header_len = self.header_len();
        if bytes.len() < header_len {
            return Err(DropReason::TooShort);
        }
        if bytes.len() != header_len + usize::from(self.payload_len()) {
            return Err(DropReason::LengthMismatch);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn magic(&self) -> [u8; 4] {
        let mut out = [0u8; 4];
        out.copy_from_slice(&self.buffer.as_ref()[field::MAGIC]);
        out
    }
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }
    pub fn kind_raw(&self) -> u8 {
        self.buffer.as_ref()[field::KIND]
    }
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }
    pub fn key_id(&self) -> u8 {
        self.buffer.as_ref()[field::KEY_ID]
    }
    pub fn session(&self) -> u64 {
        be_u64(self.buffer.as_ref(), field::SESSION)
    }
    pub fn epoch(&self) -> u32 {
        be_u32(self.buffer.as_ref(), field::EPOCH)
    }
    pub fn channel(&self) -> u16 {
        be_u16(self.buffer.as_ref(), field::CHANNEL)
    }
    pub fn payload_len(&self) -> u16 {
        be_u16(self.buffer.as_ref(), field::PAYLOAD_LEN)
    }
    pub fn block_seq(&self) -> u64 {
        be_u64(self.buffer.as_ref(), field::BLOCK_SEQ)
    }
    /// The RFC 6330 payload id: source block number (always 0 here) and 24-bit encoding symbol id.
    pub fn payload_id(&self) -> u32 {
        be_u32(self.buffer.as_ref(), field::PAYLOAD_ID)
    }
    pub fn block_len(&self) -> u32 {
        be_u32(self.buffer.as_ref(), field::BLOCK_LEN)
    }
    pub fn is_tagged(&self) -> bool {
        self.flags() & FLAG_TAGGED != 0
    }
    pub fn is_stamped(&self) -> bool {
        self.flags() & FLAG_STAMPED != 0
    }
    pub fn header_len(&self) -> usize {
        if self.is_tagged() {
            HEADER_LEN_TAGGED
        } else {
            HEADER_LEN_CRC
        }
    }
    pub fn check_field(&self) -> &[u8] {
        &self.buffer.as_ref()[field::CHECK..self.header_len()]
    }
    /// The bytes the check covers, in two parts: fixed header and payload.
    pub fn covered(&self) -> (&[u8], &[u8]) {
        let bytes = self.buffer.as_ref();
        (&bytes[..FIXED_LEN], &bytes[self.header_len()..])
    }
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn set_u16(&mut self, range: field::Field, value: u16) {
        self.buffer.as_mut()[range].copy_from_slice(&value.to_be_bytes());
    }
    fn set_u32(&mut self, range: field::Field, value: u32) {
        self.buffer.as_mut()[range].copy_from_slice(&value.to_be_bytes());
    }
    fn set_u64(&mut self, range: field::Field, value: u64) {
        self.buffer.as_mut()[range].copy_from_slice(&value.to_be_bytes());
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }
    fn check_field_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        &mut self.buffer.as_mut()[field::CHECK..end]
    }
}

/// The parsed, validated meaning of a datagram header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    pub kind: Kind,
    pub session: u64,
    pub epoch: u32,
    pub channel: u16,
    pub block_seq: u64,
    /// Encoding symbol id (24 bits). Source symbols are `0..K`, repair symbols `K..`.
    pub esi: u32,
    /// Transfer length F of the block in bytes (symbols only).
    pub block_len: u32,
    pub payload_len: u16,
    /// The key that tagged the datagram, or `None` for CRC32.
    pub key_id: Option<u8>,
    /// The session id is a start stamp ([`FLAG_STAMPED`]).
    pub stamped: bool,
}

impl Repr {
    /// The header of a control datagram (beacon or manifest): no block, no symbol.
    pub fn control(
        kind: Kind,
        channel: u16,
        session: u64,
        epoch: u32,
        stamped: bool,
        auth: &LinkAuth,
        body: &[u8],
    ) -> Repr {
        Repr {
            kind,
            session,
            epoch,
            channel,
            block_seq: 0,
            esi: 0,
            block_len: 0,
            payload_len: body.len() as u16,
            key_id: auth.send_key_id(),
            stamped,
        }
    }

    /// Parses and verifies a datagram. Checks run cheapest first, and the check field is verified
    /// before any field that routes the datagram is trusted.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>, auth: &LinkAuth) -> Result<Repr, DropReason> {
        packet.check_len()?;
        if packet.magic() != MAGIC {
            return Err(DropReason::BadMagic);
        }
        if packet.version() != VERSION && packet.version() != LEGACY_VERSION {
            return Err(DropReason::BadVersion);
        }
        if packet.flags() & !KNOWN_FLAGS != 0 {
            return Err(DropReason::UnknownFlags);
        }
        let (fixed, payload) = packet.covered();
        let key_id = if packet.is_tagged() {
            auth.verify(packet.key_id(), fixed, payload, packet.check_field())?;
            Some(packet.key_id())
        } else {
            if auth.requires_tag() {
                return Err(DropReason::MissingTag);
            }
            if packet.key_id() != 0 {
                return Err(DropReason::NonZeroReserved);
            }
            if crc32(fixed, payload).to_be_bytes() != packet.check_field() {
                return Err(DropReason::BadChecksum);
            }
            None
        };
        let kind = Kind::from_wire(packet.kind_raw()).ok_or(DropReason::UnknownKind)?;
        let repr = Repr {
            kind,
            session: packet.session(),
            epoch: packet.epoch(),
            channel: packet.channel(),
            block_seq: packet.block_seq(),
            esi: packet.payload_id() & MAX_ESI,
            block_len: packet.block_len(),
            payload_len: packet.payload_len(),
            key_id,
            stamped: packet.is_stamped(),
        };
        match kind {
            Kind::Symbol => {
                if packet.payload_id() >> 24 != 0 {
                    return Err(DropReason::BadSourceBlockNumber);
                }
                repr.check_symbol_geometry()?;
            }
            Kind::Beacon => {
                if repr.channel != 0 || repr.block_seq != 0 || packet.payload_id() != 0 || repr.block_len != 0 {
                    return Err(DropReason::NonZeroReserved);
                }
            }
            Kind::Manifest => {
                if repr.block_seq != 0 || packet.payload_id() != 0 || repr.block_len != 0 {
                    return Err(DropReason::NonZeroReserved);
                }
            }
        }
        Ok(repr)
    }

    fn check_symbol_geometry(&self) -> Result<(), DropReason> {
        let symbol_size = self.payload_len;
        if symbol_size == 0 || !symbol_size.is_multiple_of(SYMBOL_ALIGNMENT) {
            return Err(DropReason::BadSymbolSize);
        }
        if self.block_len == 0 {
            return Err(DropReason::BadBlockLength);
        }
        if self.source_symbols() > MAX_SOURCE_SYMBOLS {
            return Err(DropReason::BadBlockLength);
        }
        Ok(())
    }

    /// K: source symbols in this datagram's block (symbols only).
    pub fn source_symbols(&self) -> u32 {
        if self.payload_len == 0 {
            return 0;
        }
        self.block_len.div_ceil(u32::from(self.payload_len))
    }

    pub fn header_len(&self) -> usize {
        if self.key_id.is_some() {
            HEADER_LEN_TAGGED
        } else {
            HEADER_LEN_CRC
        }
    }

    /// Bytes needed for header and payload.
    pub fn buffer_len(&self) -> usize {
        self.header_len() + usize::from(self.payload_len)
    }

    /// Writes the header fields into `packet`, whose payload must already be in place (or be written
    /// before [`Repr::seal`]). The buffer must be exactly [`Repr::buffer_len`] bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        let bytes = packet.buffer.as_mut();
        bytes[field::MAGIC].copy_from_slice(&MAGIC);
        bytes[field::VERSION] = VERSION;
        bytes[field::KIND] = self.kind.to_wire();
        let tagged = if self.key_id.is_some() { FLAG_TAGGED } else { 0 };
        bytes[field::FLAGS] = tagged | if self.stamped { FLAG_STAMPED } else { 0 };
        bytes[field::KEY_ID] = self.key_id.unwrap_or(0);
        packet.set_u64(field::SESSION, self.session);
        packet.set_u32(field::EPOCH, self.epoch);
        packet.set_u16(field::CHANNEL, self.channel);
        packet.set_u16(field::PAYLOAD_LEN, self.payload_len);
        packet.set_u64(field::BLOCK_SEQ, self.block_seq);
        packet.set_u32(field::PAYLOAD_ID, self.esi & MAX_ESI);
        packet.set_u32(field::BLOCK_LEN, self.block_len);
    }

    /// Computes the check field over the emitted header and payload.
    pub fn seal<T: AsRef<[u8]> + AsMut<[u8]>>(packet: &mut Packet<T>, auth: &LinkAuth) {
        let check = {
            let (fixed, payload) = packet.covered();
            check_value(fixed, payload, packet.is_tagged().then(|| packet.key_id()), auth)
        };
        let field = packet.check_field_mut();
        let len = field.len();
        field.copy_from_slice(&check[..len]);
    }
}

/// The check field's value: the keyed tag when the datagram is tagged with `key_id`, else the CRC32 in
/// the first [`CRC_LEN`] bytes.
fn check_value(fixed: &[u8], payload: &[u8], key_id: Option<u8>, auth: &LinkAuth) -> [u8; TAG_LEN] {
    match key_id {
        Some(key_id) => auth.tag(key_id, fixed, payload),
        None => {
            let mut out = [0u8; TAG_LEN];
            out[..CRC_LEN].copy_from_slice(&crc32(fixed, payload).to_be_bytes());
            out
        }
    }
}

/// CRC32 of the covered header bytes and the payload. `crc32fast::Hasher::new` probes the CPU on every
/// call (about 1 % of red-rx at 1,500-byte datagrams); a hasher made once is cloned instead.
fn crc32(fixed: &[u8], payload: &[u8]) -> u32 {
    static FRESH: std::sync::OnceLock<crc32fast::Hasher> = std::sync::OnceLock::new();
    let mut hasher = FRESH.get_or_init(crc32fast::Hasher::new).clone();
    hasher.update(fixed);
    hasher.update(payload);
    hasher.finalize()
}

/// Writes a whole datagram (header, payload, check) into `out`, replacing its contents.
pub fn write_datagram(repr: &Repr, payload: &[u8], auth: &LinkAuth, out: &mut Vec<u8>) {
    write_header(repr, payload, auth, out);
    out.extend_from_slice(payload);
}

/// Writes only the header of the datagram that carries `payload`, its check computed over that
/// payload, into `out`. The datagram is this header followed by the payload, so a sender that can
/// gather the two (`hw::Gather`) sends the payload from where it is instead of copying it.
pub fn write_header(repr: &Repr, payload: &[u8], auth: &LinkAuth, out: &mut Vec<u8>) {
    debug_assert_eq!(usize::from(repr.payload_len), payload.len());
    let header_len = repr.header_len();
    out.clear();
    out.resize(header_len, 0);
    repr.emit(&mut Packet::new_unchecked(&mut out[..]));
    let check = check_value(&out[..FIXED_LEN], payload, repr.key_id, auth);
    out[field::CHECK..].copy_from_slice(&check[..header_len - field::CHECK]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn symbol_repr() -> Repr {
        Repr {
            kind: Kind::Symbol,
            session: 0x0123_4567_89ab_cdef,
            epoch: 7,
            channel: 3,
            block_seq: 42,
            esi: 5,
            block_len: 1000,
            payload_len: 16,
            key_id: None,
            stamped: false,
        }
    }

    #[test]
    fn symbol_header_round_trips() {
        let repr = symbol_repr();
        let mut buf = Vec::new();
        write_datagram(&repr, &[0xAB; 16], &LinkAuth::none(), &mut buf);
        assert_eq!(buf.len(), HEADER_LEN_CRC + 16);
        let packet = Packet::new_checked(&buf[..]).expect("valid length");
        assert_eq!(Repr::parse(&packet, &LinkAuth::none()), Ok(repr));
        assert_eq!(packet.payload(), &[0xAB; 16]);
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let mut buf = Vec::new();
        write_datagram(&symbol_repr(), &[0x5A; 16], &LinkAuth::none(), &mut buf);
        for bit in 0..buf.len() * 8 {
            let mut corrupted = buf.clone();
            corrupted[bit / 8] ^= 1 << (bit % 8);
            let parsed = Packet::new_checked(&corrupted[..]).and_then(|p| Repr::parse(&p, &LinkAuth::none()));
            assert!(parsed.is_err(), "bit {bit} flipped and still parsed");
        }
    }

    #[test]
    fn truncated_and_padded_datagrams_are_rejected() {
        let mut buf = Vec::new();
        write_datagram(&symbol_repr(), &[1; 16], &LinkAuth::none(), &mut buf);
        for len in 0..buf.len() {
            assert!(Packet::new_checked(&buf[..len]).is_err(), "length {len}");
        }
        let mut padded = buf.clone();
        padded.push(0);
        assert_eq!(Packet::new_checked(&padded[..]).err(), Some(DropReason::LengthMismatch));
    }

    #[test]
    fn symbol_geometry_is_validated() {
        let auth = LinkAuth::none();
        let mut buf = Vec::new();
        let mut bad_size = symbol_repr();
        bad_size.payload_len = 12;
        write_datagram(&bad_size, &[0; 12], &auth, &mut buf);
        let packet = Packet::new_checked(&buf[..]).expect("length is consistent");
        assert_eq!(Repr::parse(&packet, &auth), Err(DropReason::BadSymbolSize));

        let mut too_many_symbols = symbol_repr();
        too_many_symbols.block_len = 16 * (MAX_SOURCE_SYMBOLS + 1);
        write_datagram(&too_many_symbols, &[0; 16], &auth, &mut buf);
        let packet = Packet::new_checked(&buf[..]).expect("length is consistent");
        assert_eq!(Repr::parse(&packet, &auth), Err(DropReason::BadBlockLength));
    }
}
