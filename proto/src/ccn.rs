//! The CCN encapsulation header (GUE-style, carried in UDP between POPs and CLB nodes),
//! as a zero-copy `Packet<T>` view and a `Repr` with parse/emit, the smoltcp way.
//!
//! ```text
//!  0               1               2               3
//! +-------+-------+---------------+-------------------------------+
//! |version| flags | next header   |            POP id             |
//! +-------+-------+---------------+-------------------------------+
//! |                          flow hash                            |
//! +---------------------------------------------------------------+
//! |        payload length         |   hop limit   |   reserved    |
//! +---------------------------------------------------------------+
//! |     segment size (option)     |      reserved (option)        |
//! +---------------------------------------------------------------+
//! |                  inner IPv4 / IPv6 packet ...                 |
//! ```
//! flags bit 0 set: the packet flows from the region back to the POP (a reply).
//! flags bit 1 set: the inner packet is a TCP super-packet, as a TUN device with offloads
//! reads it (many segments' payload behind one header); the option word after the header
//! carries the payload bytes of each segment it is cut into where it leaves the backbone
//! (what the kernel calls `gso_size`). Without the bit there is no option word.

use crate::{Error, Result};

pub const VERSION: u8 = 1;
/// Inner packet is IPv4 (the IANA protocol number, as GUE uses).
pub const NEXT_IPV4: u8 = 4;
/// Inner packet is IPv6.
pub const NEXT_IPV6: u8 = 41;

mod field {
    use std::ops::Range;
    pub const VER_FLAGS: usize = 0;
    pub const NEXT_HEADER: usize = 1;
    pub const POP_ID: Range<usize> = 2..4;
    pub const FLOW_HASH: Range<usize> = 4..8;
    pub const PAYLOAD_LEN: Range<usize> = 8..10;
    pub const HOP_LIMIT: usize = 10;
    pub const RESERVED: usize = 11;
    pub const PAYLOAD_START: usize = 12;
    pub const SEGMENT: Range<usize> = 12..14;
    pub const OPTION_RESERVED: Range<usize> = 14..16;
}

/// Flag bit: the packet flows from the region back to the POP.
const FLAG_TO_POP: u8 = 0x1;
/// Flag bit: a segment-size option word follows the header.
const FLAG_SEGMENTED: u8 = 0x2;
/// Length of the segment-size option word.
pub const OPTION_LEN: usize = field::OPTION_RESERVED.end - field::SEGMENT.start;

/// Length of the header in bytes.
pub const HEADER_LEN: usize = field::PAYLOAD_START;
const _: () =
    assert!(field::RESERVED + 1 == HEADER_LEN && HEADER_LEN.is_multiple_of(4), "the header is whole 32-bit words");

/// Which way an encapsulated packet travels over the backbone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// POP to region: a client's packet.
    ToRegion,
    /// Region to POP: a reply on its way back to the client.
    ToPop,
}

/// A read/write view over a buffer holding a CCN header and its payload.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps `buffer` after checking that every accessor stays in bounds.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Ok when the buffer holds the header, its option word when its flags say there is
    /// one, and the payload length it declares.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < self.header_len() + self.payload_len() as usize {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Bytes before the inner packet: the header, and the option word of a super-packet.
    /// Safe on a short buffer.
    pub fn header_len(&self) -> usize {
        match self.buffer.as_ref().first() {
            Some(b) if b & FLAG_SEGMENTED != 0 => HEADER_LEN + OPTION_LEN,
            _ => HEADER_LEN,
        }
    }

    /// A super-packet's segment size (0 when the header has no option word).
    pub fn segment(&self) -> u16 {
        if self.flags() & FLAG_SEGMENTED == 0 {
            return 0;
        }
        let b = &self.buffer.as_ref()[field::SEGMENT];
        u16::from_be_bytes([b[0], b[1]])
    }

    fn option_reserved(&self) -> u16 {
        if self.flags() & FLAG_SEGMENTED == 0 {
            return 0;
        }
        let b = &self.buffer.as_ref()[field::OPTION_RESERVED];
        u16::from_be_bytes([b[0], b[1]])
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_FLAGS] >> 4
    }

    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::VER_FLAGS] & 0x0f
    }

    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    pub fn pop_id(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::POP_ID];
        u16::from_be_bytes([b[0], b[1]])
    }

    pub fn flow_hash(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::FLOW_HASH];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Declared payload length; safe to call on a short buffer (returns 0 then).
    pub fn payload_len(&self) -> u16 {
        match self.buffer.as_ref().get(field::PAYLOAD_LEN) {
            Some(b) => u16::from_be_bytes([b[0], b[1]]),
            None => 0,
        }
    }

    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    pub fn payload(&self) -> &[u8] {
        let start = self.header_len();
        &self.buffer.as_ref()[start..start + self.payload_len() as usize]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_version_flags(&mut self, version: u8, flags: u8) {
        debug_assert!(version < 16 && flags < 16, "version and flags are 4 bits each");
        self.buffer.as_mut()[field::VER_FLAGS] = (version << 4) | (flags & 0x0f);
    }

    pub fn set_next_header(&mut self, value: u8) {
        self.buffer.as_mut()[field::NEXT_HEADER] = value;
    }

    pub fn set_pop_id(&mut self, value: u16) {
        self.buffer.as_mut()[field::POP_ID].copy_from_slice(&value.to_be_bytes());
    }

    pub fn set_flow_hash(&mut self, value: u32) {
        self.buffer.as_mut()[field::FLOW_HASH].copy_from_slice(&value.to_be_bytes());
    }

    pub fn set_payload_len(&mut self, value: u16) {
        debug_assert!(self.buffer.as_ref().len() >= self.header_len() + usize::from(value), "the buffer holds it");
        self.buffer.as_mut()[field::PAYLOAD_LEN].copy_from_slice(&value.to_be_bytes());
    }

    pub fn set_hop_limit(&mut self, value: u8) {
        debug_assert!(value > 0, "a packet with no hops left is never sent");
        self.buffer.as_mut()[field::HOP_LIMIT] = value;
        self.buffer.as_mut()[field::RESERVED] = 0;
    }

    /// Writes the option word (the flags must say it is there: set them first).
    pub fn set_segment(&mut self, value: u16) {
        debug_assert!(self.flags() & FLAG_SEGMENTED != 0 && value > 0, "a super-packet's option word");
        self.buffer.as_mut()[field::SEGMENT].copy_from_slice(&value.to_be_bytes());
        self.buffer.as_mut()[field::OPTION_RESERVED].copy_from_slice(&[0, 0]);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        let end = start + self.payload_len() as usize;
        &mut self.buffer.as_mut()[start..end]
    }
}

/// The meaning of a CCN header, independent of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub direction: Direction,
    pub next_header: u8,
    pub pop_id: u16,
    pub flow_hash: u32,
    pub payload_len: u16,
    pub hop_limit: u8,
    /// The payload bytes of each segment a TCP super-packet is cut into where it leaves
    /// (0: an ordinary packet, and no option word on the wire).
    pub segment: u16,
}

/// Hop limit a POP or CLB puts on a packet it encapsulates.
pub const DEFAULT_HOP_LIMIT: u8 = 16;

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr> {
        packet.check_len()?;
        if packet.version() != VERSION {
            return Err(Error::Malformed("CCN version"));
        }
        if packet.flags() & !(FLAG_TO_POP | FLAG_SEGMENTED) != 0 {
            return Err(Error::Malformed("CCN flags"));
        }
        if packet.flags() & FLAG_SEGMENTED != 0 && packet.segment() == 0 {
            return Err(Error::Malformed("CCN segment size (zero)"));
        }
        if packet.option_reserved() != 0 {
            return Err(Error::Malformed("CCN option (reserved bits set)"));
        }
        let next_header = packet.next_header();
        if next_header != NEXT_IPV4 && next_header != NEXT_IPV6 {
            return Err(Error::Unsupported("CCN next header"));
        }
        if packet.hop_limit() == 0 {
            return Err(Error::Malformed("CCN hop limit (zero)"));
        }
        let direction = if packet.flags() & FLAG_TO_POP == 0 { Direction::ToRegion } else { Direction::ToPop };
        debug_assert!(packet.buffer.as_ref().len() >= packet.header_len() + usize::from(packet.payload_len()));
        Ok(Repr {
            direction,
            next_header,
            pop_id: packet.pop_id(),
            flow_hash: packet.flow_hash(),
            payload_len: packet.payload_len(),
            hop_limit: packet.hop_limit(),
            segment: packet.segment(),
        })
    }

    /// Bytes before the inner packet: the header, and a super-packet's option word.
    pub const fn header_len(&self) -> usize {
        if self.segment > 0 { HEADER_LEN + OPTION_LEN } else { HEADER_LEN }
    }

    pub const fn buffer_len(&self) -> usize {
        self.header_len() + self.payload_len as usize
    }

    /// The same header for a super-packet cut into segments of `segment` payload bytes
    /// where it leaves (0: an ordinary packet).
    pub const fn with_segment(self, segment: u16) -> Repr {
        Repr { segment, ..self }
    }

    /// Writes the header; the payload is the caller's to fill.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        self.write_fields(packet);
        debug_assert_eq!(Repr::parse(packet).ok(), Some(*self), "what is written parses back the same");
    }

    /// The header alone (its first [`Repr::header_len`] bytes), for a sealer that puts it
    /// and the inner packet straight into an envelope.
    pub fn header(&self) -> ([u8; HEADER_LEN + OPTION_LEN], usize) {
        let mut h = [0u8; HEADER_LEN + OPTION_LEN];
        let len = self.header_len();
        // The length field names a payload this buffer does not hold: written by hand.
        Repr { payload_len: 0, ..*self }.write_fields(&mut Packet::new_unchecked(&mut h[..len]));
        h[field::PAYLOAD_LEN].copy_from_slice(&self.payload_len.to_be_bytes());
        (h, len)
    }

    fn write_fields<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        let direction = match self.direction {
            Direction::ToRegion => 0,
            Direction::ToPop => FLAG_TO_POP,
        };
        let segmented = if self.segment > 0 { FLAG_SEGMENTED } else { 0 };
        packet.set_version_flags(VERSION, direction | segmented);
        if self.segment > 0 {
            packet.set_segment(self.segment);
        }
        packet.set_next_header(self.next_header);
        packet.set_pop_id(self.pop_id);
        packet.set_flow_hash(self.flow_hash);
        packet.set_payload_len(self.payload_len);
        packet.set_hop_limit(self.hop_limit);
    }

    /// The header that carries `inner` (an IPv4 or IPv6 packet).
    pub fn around(direction: Direction, pop_id: u16, flow_hash: u32, inner: &[u8]) -> Result<Repr> {
        let next_header = match inner.first().map(|b| b >> 4) {
            Some(4) => NEXT_IPV4,
            Some(6) => NEXT_IPV6,
            _ => return Err(Error::Unsupported("inner IP version")),
        };
        let payload_len = u16::try_from(inner.len()).map_err(|_| Error::Malformed("inner length"))?;
        debug_assert_eq!(usize::from(payload_len), inner.len());
        Ok(Repr { direction, next_header, pop_id, flow_hash, payload_len, hop_limit: DEFAULT_HOP_LIMIT, segment: 0 })
    }

    /// Writes header and `inner` into `buffer` of [`Repr::buffer_len`] bytes (the
    /// envelope's payload when sealing, so the packet is copied once).
    pub fn emit_with(&self, buffer: &mut [u8], inner: &[u8]) {
        assert_eq!(buffer.len(), self.buffer_len(), "the caller sized the buffer by buffer_len");
        debug_assert_eq!(inner.len(), usize::from(self.payload_len));
        let mut packet = Packet::new_unchecked(buffer);
        self.emit(&mut packet);
        packet.payload_mut().copy_from_slice(inner);
    }
}

/// Encapsulates an inner IP packet: a new buffer holding header and payload.
pub fn encapsulate(direction: Direction, pop_id: u16, flow_hash: u32, inner: &[u8]) -> Result<Vec<u8>> {
    let repr = Repr::around(direction, pop_id, flow_hash, inner)?;
    let mut buffer = vec![0u8; repr.buffer_len()];
    repr.emit_with(&mut buffer, inner);
    debug_assert_eq!(buffer.len(), HEADER_LEN + inner.len());
    Ok(buffer)
}

/// Parses an encapsulated packet: the header's meaning and the inner packet's bytes.
pub fn decapsulate(bytes: &[u8]) -> Result<(Repr, &[u8])> {
    let packet = Packet::new_checked(bytes)?;
    let repr = Repr::parse(&packet)?;
    let (start, end) = (repr.header_len(), repr.buffer_len());
    debug_assert!(end <= bytes.len(), "new_checked keeps the declared payload in the buffer");
    Ok((repr, &bytes[start..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sealer that puts the header and the packet into an envelope itself writes the
    /// bytes `emit_with` would, with the segment option word and without.
    #[test]
    fn the_header_alone_is_the_first_bytes_of_the_whole() {
        let inner = [0x45u8, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
        for segment in [0, 1_372] {
            let repr = Repr::around(Direction::ToRegion, 9, 0x0102_0304, &inner).unwrap().with_segment(segment);
            let mut whole = vec![0u8; repr.buffer_len()];
            repr.emit_with(&mut whole, &inner);
            let (header, len) = repr.header();
            assert_eq!(len, repr.header_len());
            assert_eq!([&header[..len], &inner[..]].concat(), whole, "segment {segment}");
            assert_eq!(decapsulate(&whole).unwrap().0, repr);
        }
    }

    #[test]
    fn emit_then_parse_round_trips() {
        let inner = [0x45u8, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
        let bytes = encapsulate(Direction::ToPop, 7, 0xdead_beef, &inner).unwrap();
        let (repr, payload) = decapsulate(&bytes).unwrap();
        assert_eq!(repr.direction, Direction::ToPop);
        assert_eq!(repr.pop_id, 7);
        assert_eq!(repr.flow_hash, 0xdead_beef);
        assert_eq!(repr.next_header, NEXT_IPV4);
        assert_eq!(payload, &inner);
    }

    #[test]
    fn truncated_header_is_an_error_not_a_panic() {
        for len in 0..HEADER_LEN {
            assert_eq!(decapsulate(&vec![0x10; len]), Err(Error::Truncated));
        }
    }

    #[test]
    fn payload_longer_than_buffer_is_truncated() {
        let inner = [0x45u8; 20];
        let mut bytes = encapsulate(Direction::ToRegion, 1, 1, &inner).unwrap();
        bytes.truncate(bytes.len() - 1);
        assert_eq!(decapsulate(&bytes), Err(Error::Truncated));
    }

    /// A super-packet's header carries its segment size in an option word; an ordinary
    /// packet's has none (its bytes are what they were before super-packets), and a
    /// segmented flag with a zero size or reserved bits set is refused, as is an option
    /// word cut short.
    #[test]
    fn a_super_packets_segment_size_rides_in_an_option_word_only_it_has() {
        let inner = [0x45u8; 40];
        let plain = encapsulate(Direction::ToRegion, 3, 9, &inner).unwrap();
        assert_eq!(plain.len(), HEADER_LEN + inner.len());
        let repr = Repr::around(Direction::ToPop, 3, 9, &inner).unwrap().with_segment(1_448);
        let mut bytes = vec![0u8; repr.buffer_len()];
        repr.emit_with(&mut bytes, &inner);
        assert_eq!(bytes.len(), HEADER_LEN + OPTION_LEN + inner.len());
        assert_eq!(
            &bytes[1..],
            &{
                let mut b = plain.clone();
                b.splice(12..12, [5, 0xa8, 0, 0]);
                b
            }[1..]
        );
        let (back, payload) = decapsulate(&bytes).unwrap();
        assert_eq!((back.segment, back.direction, payload), (1_448, Direction::ToPop, &inner[..]));
        let mut zero = bytes.clone();
        zero[12..14].copy_from_slice(&[0, 0]);
        assert_eq!(decapsulate(&zero), Err(Error::Malformed("CCN segment size (zero)")));
        let mut reserved = bytes.clone();
        reserved[15] = 1;
        assert_eq!(decapsulate(&reserved), Err(Error::Malformed("CCN option (reserved bits set)")));
        assert_eq!(decapsulate(&bytes[..HEADER_LEN + 2]), Err(Error::Truncated));
        let mut flags = plain.clone();
        flags[0] |= 0x4;
        assert_eq!(decapsulate(&flags), Err(Error::Malformed("CCN flags")));
    }

    #[test]
    fn unknown_version_is_malformed() {
        let mut bytes = encapsulate(Direction::ToRegion, 1, 1, &[0x45u8; 20]).unwrap();
        bytes[0] = 0x20;
        assert_eq!(decapsulate(&bytes), Err(Error::Malformed("CCN version")));
    }
}
