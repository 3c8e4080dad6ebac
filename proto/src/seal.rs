//! The authentication envelope every backbone datagram travels in (CCN data, probes,
//! connection-table sync, the CLB↔backend tunnel), as a zero-copy `Packet<T>` view and a
//! `Repr`, the smoltcp way. The tag covers every byte before it — header and payload, so
//! the CCN header's POP id and every other field inside are authenticated. Computing and
//! checking the tag is `anyedge_ccn::auth`'s job: this module only knows where things are.
//!
//! Version 3: the tag is AES-256-GCM's, the header as associated data and the payload as
//! the text (its ciphertext is not sent: the payload travels clear), with the nonce salt ‖
//! kind ‖ sequence number; the salt is a random number the sender draws when it starts.
//! Version 2 tagged with ChaCha20-Poly1305, the whole envelope as associated data;
//! version 1 (HMAC-SHA256) had no salt.
//!
//! ```text
//!  0               1               2               3
//! +-------+-------+---------------+-------------------------------+
//! |version| kind  |            salt (sender's, per start)         |
//! +-------+-------+-----------------------------------------------+
//! |                        sender node id                         |
//! +---------------------------------------------------------------+
//! |                       receiver node id                        |
//! +---------------------------------------------------------------+
//! |                  sequence number (64 bits)                    |
//! +---------------------------------------------------------------+
//! |                          payload ...                          |
//! +---------------------------------------------------------------+
//! |           tag (128 bits, AES-256-GCM over all above)          |
//! +---------------------------------------------------------------+
//! ```

use crate::{Error, Result};

pub const VERSION: u8 = 3;

mod field {
    use std::ops::Range;
    pub const VER_KIND: usize = 0;
    pub const SALT: Range<usize> = 1..4;
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
const _: () = assert!(VERSION < 16 && (Kind::Backend as u8) < 16, "version and kind share one byte");
const _: () = assert!(field::SEQ.end == HEADER_LEN, "the sequence number ends the header");

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
        let kind = Kind::ALL.into_iter().find(|k| *k as u8 == v);
        debug_assert!(kind.is_none_or(|k| k as u8 == v));
        kind
    }

    /// Its position in per-kind tables.
    pub fn index(self) -> usize {
        let i = self as usize - 1;
        debug_assert!(i < Kind::ALL.len() && Kind::ALL[i] == self, "kinds are numbered from 1 in ALL's order");
        i
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

    /// The sender's salt (24 bits).
    pub fn salt(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::SALT];
        u32::from_be_bytes([0, b[0], b[1], b[2]])
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
        debug_assert!(b.len() >= OVERHEAD, "new_checked");
        &b[..b.len() - TAG_LEN]
    }

    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        debug_assert!(b.len() >= OVERHEAD, "new_checked");
        &b[HEADER_LEN..b.len() - TAG_LEN]
    }

    pub fn tag(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        debug_assert!(b.len() >= OVERHEAD, "new_checked");
        &b[b.len() - TAG_LEN..]
    }
}

/// The meaning of an envelope's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub kind: Kind,
    /// The sender's salt: only the low 24 bits travel.
    pub salt: u32,
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
        let kind = Kind::from_u8(packet.kind_raw()).ok_or(Error::Malformed("envelope kind"))?;
        let repr =
            Repr { kind, salt: packet.salt(), sender: packet.sender(), receiver: packet.receiver(), seq: packet.seq() };
        debug_assert!(repr.salt < 1 << 24, "24 bits of salt travel");
        Ok(repr)
    }

    /// A buffer with this header, `payload`, and a zeroed tag for the sealer to fill.
    pub fn emit(&self, payload: &[u8]) -> Vec<u8> {
        self.emit_parts(&[], payload)
    }

    /// The same for a payload of `head` then `body` (a small header of the caller's and
    /// the packet behind it), each copied once into a buffer that is never zeroed first:
    /// on a super-packet the zeroing was a pass over 64 KB of its own.
    pub fn emit_parts(&self, head: &[u8], body: &[u8]) -> Vec<u8> {
        let mut b = Vec::with_capacity(OVERHEAD + head.len() + body.len());
        b.push((VERSION << 4) | self.kind as u8);
        b.extend_from_slice(&self.salt.to_be_bytes()[1..]);
        b.extend_from_slice(&self.sender.to_be_bytes());
        b.extend_from_slice(&self.receiver.to_be_bytes());
        b.extend_from_slice(&self.seq.to_be_bytes());
        debug_assert_eq!(b.len(), HEADER_LEN);
        b.extend_from_slice(head);
        b.extend_from_slice(body);
        b.extend_from_slice(&[0; TAG_LEN]);
        debug_assert_eq!(b.len(), OVERHEAD + head.len() + body.len());
        debug_assert_eq!(
            Repr::parse(&Packet::new_unchecked(&b)).ok().map(|r| (r.kind, r.seq)),
            Some((self.kind, self.seq))
        );
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_then_parse_round_trips_and_finds_the_payload() {
        let repr =
            Repr { kind: Kind::Sync, salt: 0xab_cdef, sender: 0x1000_0003, receiver: 0x2000_1002, seq: 1 << 60 | 5 };
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
        let mut bytes = Repr { kind: Kind::Data, salt: 0, sender: 1, receiver: 2, seq: 3 }.emit(&[]);
        bytes[0] = 0x3f;
        assert!(Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()).is_err(), "kind 15");
        bytes[0] = 0x11;
        assert!(Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()).is_err(), "version 1 (HMAC, no salt)");
        bytes[0] = 0x21;
        assert!(Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()).is_err(), "version 2 (Poly1305)");
        bytes[0] = 0x41;
        assert!(Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()).is_err(), "version 4");
        bytes[0] = 0x31;
        assert!(Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()).is_ok(), "version 3, kind 1");
    }
}
