//! Beacons: small self-contained datagrams a sender repeats on a timer.
//!
//! A beacon replaces every handshake a one-way link cannot have. It tells the receiver which session
//! and epoch are live, the FEC parameters in force, a fingerprint of the sender's channel table (the
//! receiver raises an alarm when it differs from its own), and for each channel how many blocks have
//! been sent, so that the loss of a channel's last blocks is detected even when nothing follows them.
//!
//! ```text
//!  0  timestamp µs u64 | 8 state u8 | 9 fiber mode u8 | 10 symbol size u16
//! 12  max block symbols u16 | 14 repair (basis points) u16 | 16 interleave depth u16
//! 18  beacon interval ms u16 | 20 config fingerprint [16] | 36 channel count u16
//! 38  count x (channel u16 | blocks sent u64)
//! ```
//!
//! A beacon need not list every channel: a sender with more channels than fit in one beacon rotates
//! through them. The body must be exactly as long as its channel count says.

use crate::fec::FecParams;
use crate::wire::{Reader, WireError};

pub const FIXED_LEN: usize = 38;
pub const CHANNEL_ENTRY_LEN: usize = 10;

/// What the sender is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SenderState {
    Starting,
    Active,
    /// Finishing what it accepted before it stops or hands over.
    Draining,
    Stopping,
}

impl SenderState {
    pub const fn to_wire(self) -> u8 {
        match self {
            SenderState::Starting => 1,
            SenderState::Active => 2,
            SenderState::Draining => 3,
            SenderState::Stopping => 4,
        }
    }
    pub const fn from_wire(value: u8) -> Option<SenderState> {
        match value {
            1 => Some(SenderState::Starting),
            2 => Some(SenderState::Active),
            3 => Some(SenderState::Draining),
            4 => Some(SenderState::Stopping),
            _ => None,
        }
    }
}

/// How symbols are spread over the two fibers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FiberMode {
    /// Every symbol on both fibers (the HA cross-connect).
    Mirror,
    /// Symbols alternate between fibers; one receiver decodes both jointly.
    Stripe,
}

impl FiberMode {
    pub const fn to_wire(self) -> u8 {
        match self {
            FiberMode::Mirror => 1,
            FiberMode::Stripe => 2,
        }
    }
    pub const fn from_wire(value: u8) -> Option<FiberMode> {
        match value {
            1 => Some(FiberMode::Mirror),
            2 => Some(FiberMode::Stripe),
            _ => None,
        }
    }
}

/// A channel's progress as the sender reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelProgress {
    pub channel: u16,
    /// Blocks sent so far: sequences `0..blocks_sent` exist.
    pub blocks_sent: u64,
}

/// A parsed beacon body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Beacon {
    /// Sender wall clock in microseconds since the Unix epoch (for latency and skew display only).
    pub timestamp_us: u64,
    pub state: SenderState,
    pub fiber_mode: FiberMode,
    pub fec: FecParams,
    pub interval_ms: u16,
    pub config_fingerprint: [u8; 16],
    pub channels: Vec<ChannelProgress>,
}

impl Beacon {
    pub fn encoded_len(&self) -> usize {
        FIXED_LEN + CHANNEL_ENTRY_LEN * self.channels.len()
    }

    /// How many channel entries fit in a beacon whose body may be `max_body` bytes.
    pub fn max_channels(max_body: usize) -> usize {
        max_body.saturating_sub(FIXED_LEN) / CHANNEL_ENTRY_LEN
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp_us.to_be_bytes());
        out.push(self.state.to_wire());
        out.push(self.fiber_mode.to_wire());
        out.extend_from_slice(&self.fec.symbol_size.to_be_bytes());
        out.extend_from_slice(&self.fec.max_block_symbols.to_be_bytes());
        out.extend_from_slice(&self.fec.repair_basis_points.to_be_bytes());
        out.extend_from_slice(&self.fec.interleave_depth.to_be_bytes());
        out.extend_from_slice(&self.interval_ms.to_be_bytes());
        out.extend_from_slice(&self.config_fingerprint);
        out.extend_from_slice(&(self.channels.len() as u16).to_be_bytes());
        for entry in &self.channels {
            out.extend_from_slice(&entry.channel.to_be_bytes());
            out.extend_from_slice(&entry.blocks_sent.to_be_bytes());
        }
    }

    pub fn parse(body: &[u8]) -> Result<Beacon, WireError> {
        let mut r = Reader::new(body);
        let timestamp_us = r.u64()?;
        let state = SenderState::from_wire(r.u8()?).ok_or(WireError::BadValue { what: "sender state" })?;
        let fiber_mode = FiberMode::from_wire(r.u8()?).ok_or(WireError::BadValue { what: "fiber mode" })?;
        let fec = FecParams {
            symbol_size: r.u16()?,
            max_block_symbols: r.u16()?,
            repair_basis_points: r.u16()?,
            interleave_depth: r.u16()?,
        };
        fec.validate().map_err(|_| WireError::BadValue { what: "FEC parameters" })?;
        let interval_ms = r.u16()?;
        let config_fingerprint = r.array::<16>()?;
        let count = usize::from(r.u16()?);
        if count * CHANNEL_ENTRY_LEN != r.remaining() {
            return Err(WireError::BadCount { what: "beacon channels", count });
        }
        let mut channels = Vec::with_capacity(count);
        for _ in 0..count {
            channels.push(ChannelProgress { channel: r.u16()?, blocks_sent: r.u64()? });
        }
        r.finish()?;
        Ok(Beacon { timestamp_us, state, fiber_mode, fec, interval_ms, config_fingerprint, channels })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Beacon {
        Beacon {
            timestamp_us: 1_700_000_000_000_000,
            state: SenderState::Active,
            fiber_mode: FiberMode::Mirror,
            fec: FecParams::for_mtu(1500),
            interval_ms: 100,
            config_fingerprint: [0xC0; 16],
            channels: vec![
                ChannelProgress { channel: 1, blocks_sent: 10 },
                ChannelProgress { channel: 7, blocks_sent: 0 },
            ],
        }
    }

    #[test]
    fn beacon_round_trips() {
        let beacon = sample();
        let mut out = Vec::new();
        beacon.emit(&mut out);
        assert_eq!(out.len(), beacon.encoded_len());
        assert_eq!(Beacon::parse(&out), Ok(beacon));
    }

    #[test]
    fn beacon_with_wrong_count_or_trailing_bytes_is_refused() {
        let mut out = Vec::new();
        sample().emit(&mut out);
        out.push(0);
        assert!(Beacon::parse(&out).is_err());
        out.truncate(out.len() - 2);
        assert!(Beacon::parse(&out).is_err());
    }

    #[test]
    fn beacon_with_invalid_fec_is_refused() {
        let mut beacon = sample();
        beacon.fec.symbol_size = 12;
        let mut out = Vec::new();
        beacon.emit(&mut out);
        assert_eq!(Beacon::parse(&out), Err(WireError::BadValue { what: "FEC parameters" }));
    }
}
