//! The authentication envelope every backbone datagram travels in (CCN data, probes,
//! connection-table sync, the CLB↔backend tunnel), as a zero-copy `Packet<T>` view and a
//! `Repr`, the smoltcp way. The tag covers every byte before it — header and payload, so
//! the CCN header's POP id and every other field inside are authenticated. Computing and
//! checking the tag is `anyedge_ccn::auth`'s job: this module only knows where things are.
//!
//! ```text
//!  0               1               2               3
//! +-------+-------+---------------+-------------------------------+
//! |version| kind  |               reserved (zero)                 |
//! +-------+-------+-----------------------------------------------+
//! |                        sender node id                         |
//! +---------------------------------------------------------------+
//! |                       receiver node id                        |
//! +---------------------------------------------------------------+
//! |                  sequence number (64 bits)                    |
//! +---------------------------------------------------------------+
//! |                          payload ...                          |
//! +---------------------------------------------------------------+
//! |                  tag (128 bits, HMAC-SHA256)                  |
//! +---------------------------------------------------------------+
//! ```

use crate::{Error, Result};

pub const VERSION: u8 = 1;

mod field {
    use std::ops::Range;
    pub const VER_KIND: usize = 0;
    pub const RESERVED: Range<usize> = 1..4;
    pub const SENDER: Range<usize> = 4..8;
    pub const RECEIVER: Range<usize> = 8..12;
    pub const SEQ: Range<usize> = 12..20;
    pub const PAYLOAD_START: usize = 20;
}

/// Bytes before the payload.
pub const HEADER_LEN: usize = field::PAYLOAD_START;
/// Bytes of the tag after the payload.
pub const TAG_LEN: usize = 16;
/// What sealing adds to a payload.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// What an envelope carries; each kind has its own sequence numbers and replay window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A CCN-encapsulated client packet or reply, POP ↔ CLB node.
    Data = 1,
    /// A liveness probe.
    Probe = 2,
    /// A liveness probe's answer.
    ProbeAnswer = 3,
    /// Connection-table sync between a region's CLB nodes.
    Sync = 4,
    /// An inner packet between a CLB node and a backend host.
    Backend = 5,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Data, Kind::Probe, Kind::ProbeAnswer, Kind::Sync, Kind::Backend];

    pub fn from_u8(v: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| *k as u8 == v)
    }

    /// Its position in per-kind tables.
    pub fn index(self) -> usize {
        self as usize - 1
    }
}

/// A view over a buffer holding an envelope.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps `buffer` after checking it holds a header and a tag.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        if packet.buffer.as_ref().len() < OVERHEAD {
            return Err(Error::Truncated);
        }
        Ok(packet)
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_KIND] >> 4
    }

    pub fn kind_raw(&self) -> u8 {
        self.buffer.as_ref()[field::VER_KIND] & 0x0f
    }

    pub fn reserved_is_zero(&self) -> bool {
        self.buffer.as_ref()[field::RESERVED].iter().all(|&b| b == 0)
    }

    fn u32_at(&self, r: std::ops::Range<usize>) -> u32 {
        let b = &self.buffer.as_ref()[r];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    pub fn sender(&self) -> u32 {
        self.u32_at(field::SENDER)
    }

    pub fn receiver(&self) -> u32 {
        self.u32_at(field::RECEIVER)
    }

    pub fn seq(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.buffer.as_ref()[field::SEQ]);
        u64::from_be_bytes(b)
    }

    /// Everything the tag covers: header and payload.
    pub fn covered(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[..b.len() - TAG_LEN]
    }

    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[HEADER_LEN..b.len() - TAG_LEN]
    }

    pub fn tag(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[b.len() - TAG_LEN..]
    }
}

/// The meaning of an envelope's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub kind: Kind,
    pub sender: u32,
    pub receiver: u32,
    pub seq: u64,
}

impl Repr {
    /// Reads the header (the tag is not checked here).
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr> {
        if packet.version() != VERSION {
            return Err(Error::Malformed("envelope version"));
        }
        if !packet.reserved_is_zero() {
            return Err(Error::Malformed("envelope reserved bits"));
        }
        let kind = Kind::from_u8(packet.kind_raw()).ok_or(Error::Malformed("envelope kind"))?;
        Ok(Repr { kind, sender: packet.sender(), receiver: packet.receiver(), seq: packet.seq() })
    }

    /// A buffer with this header, `payload`, and a zeroed tag for the sealer to fill.
    pub fn emit(&self, payload: &[u8]) -> Vec<u8> {
        let mut b = Vec::with_capacity(OVERHEAD + payload.len());
        b.push((VERSION << 4) | self.kind as u8);
        b.extend_from_slice(&[0; 3]);
        b.extend_from_slice(&self.sender.to_be_bytes());
        b.extend_from_slice(&self.receiver.to_be_bytes());
        b.extend_from_slice(&self.seq.to_be_bytes());
        b.extend_from_slice(payload);
        b.extend_from_slice(&[0; TAG_LEN]);
        b
    }
}

/// The flow hash of the CCN packet inside a sealed data envelope (0 if there is none):
/// what links and shapers keep one flow's packets in order by. Nothing is authenticated
/// here; it only reads where the header would be.
pub fn ccn_flow_hash(bytes: &[u8]) -> u32 {
    Packet::new_checked(bytes)
        .ok()
        .and_then(|p| crate::ccn::Packet::new_checked(p.payload()).ok().map(|c| c.flow_hash()))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_then_parse_round_trips_and_finds_the_payload() {
        let repr = Repr { kind: Kind::Sync, sender: 0x1000_0003, receiver: 0x2000_1002, seq: 1 << 60 | 5 };
        let bytes = repr.emit(b"payload");
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(Repr::parse(&packet), Ok(repr));
        assert_eq!(packet.payload(), b"payload");
        assert_eq!(packet.covered().len(), HEADER_LEN + 7);
        assert_eq!(packet.tag(), &[0; TAG_LEN]);
    }

    #[test]
    fn short_buffers_and_unknown_fields_are_errors() {
        for len in 0..OVERHEAD {
            assert_eq!(Packet::new_checked(&vec![0x11; len][..]).err(), Some(Error::Truncated));
        }
        let mut bytes = Repr { kind: Kind::Data, sender: 1, receiver: 2, seq: 3 }.emit(&[]);
        bytes[0] = 0x1f;
        assert!(Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()).is_err(), "kind 15");
        bytes[0] = 0x21;
        assert!(Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()).is_err(), "version 2");
        bytes[0] = 0x11;
        bytes[2] = 1;
        assert!(Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()).is_err(), "reserved bits");
    }
}
