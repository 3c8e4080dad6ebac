//! The liveness probe (carried in UDP on the health port between POPs and CLB nodes, and
//! from the internet edge to POPs), as a zero-copy `Packet<T>` view and a `Repr` with
//! parse/emit. A node answers a request by echoing it with the answer flag set; the prober
//! matches the answer by the peer index and sequence number it put in.
//!
//! ```text
//!  0               1               2               3
//! +---------------+---------------+---------------+---------------+
//! |      'A'      |      'E'      |    version    |     flags     |
//! +---------------+---------------+---------------+---------------+
//! |          peer index           |           reserved            |
//! +---------------+---------------+---------------+---------------+
//! |                        sequence number                        |
//! |                           (64 bits)                           |
//! +---------------------------------------------------------------+
//! ```
//! flags bit 0 set: an answer.

use crate::{Error, Result};

pub const VERSION: u8 = 1;
const MAGIC: [u8; 2] = *b"AE";

mod field {
    use std::ops::Range;
    pub const MAGIC: Range<usize> = 0..2;
    pub const VERSION: usize = 2;
    pub const FLAGS: usize = 3;
    pub const PEER: Range<usize> = 4..6;
    pub const RESERVED: Range<usize> = 6..8;
    pub const SEQ: Range<usize> = 8..16;
}

/// Length of a probe in bytes (it has no payload).
pub const LEN: usize = field::SEQ.end;

/// A read/write view over a buffer holding a probe.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps `buffer` after checking that it holds exactly one probe.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let len = buffer.as_ref().len();
        if len < LEN {
            return Err(Error::Truncated);
        }
        if len > LEN {
            return Err(Error::Malformed("probe length"));
        }
        Ok(Packet { buffer })
    }

    pub fn magic(&self) -> [u8; 2] {
        let b = &self.buffer.as_ref()[field::MAGIC];
        [b[0], b[1]]
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }

    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    pub fn peer(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::PEER];
        u16::from_be_bytes([b[0], b[1]])
    }

    pub fn reserved(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::RESERVED];
        u16::from_be_bytes([b[0], b[1]])
    }

    pub fn seq(&self) -> u64 {
        let b = &self.buffer.as_ref()[field::SEQ];
        u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_flags(&mut self, flags: u8) {
        debug_assert!(flags & !1 == 0, "one flag is defined: answer");
        self.buffer.as_mut()[field::FLAGS] = flags;
    }
}

/// What a probe says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// An answer (echoed back), not a request.
    pub answer: bool,
    /// The prober's index of the peer it probed.
    pub peer: u16,
    pub seq: u64,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr> {
        if packet.buffer.as_ref().len() != LEN {
            return Err(Error::Truncated);
        }
        if packet.magic() != MAGIC {
            return Err(Error::Malformed("probe magic"));
        }
        if packet.version() != VERSION {
            return Err(Error::Malformed("probe version"));
        }
        if packet.flags() & !1 != 0 || packet.reserved() != 0 {
            return Err(Error::Malformed("probe flags"));
        }
        let repr = Repr { answer: packet.flags() & 1 == 1, peer: packet.peer(), seq: packet.seq() };
        debug_assert_eq!(repr.emit().as_slice(), packet.buffer.as_ref(), "a probe has one encoding");
        Ok(repr)
    }

    pub fn emit(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[field::MAGIC].copy_from_slice(&MAGIC);
        b[field::VERSION] = VERSION;
        b[field::FLAGS] = u8::from(self.answer);
        b[field::PEER].copy_from_slice(&self.peer.to_be_bytes());
        b[field::SEQ].copy_from_slice(&self.seq.to_be_bytes());
        debug_assert_eq!(field::SEQ.end, LEN, "the sequence number ends the probe");
        b
    }
}

/// The answer to a probe request: the same probe with the answer flag set. Anything that
/// is not a well-formed request gets no answer.
pub fn answer(request: &[u8]) -> Result<[u8; LEN]> {
    let repr = Repr::parse(&Packet::new_checked(request)?)?;
    if repr.answer {
        return Err(Error::Malformed("probe is already an answer"));
    }
    let answer = Repr { answer: true, ..repr }.emit();
    debug_assert_eq!(answer[..field::FLAGS], request[..field::FLAGS], "an answer is its request with the flag set");
    Ok(answer)
}

/// The (peer, seq) an answer names.
pub fn parse_answer(bytes: &[u8]) -> Result<(u16, u64)> {
    let repr = Repr::parse(&Packet::new_checked(bytes)?)?;
    if !repr.answer {
        return Err(Error::Malformed("probe is a request, not an answer"));
    }
    debug_assert!(repr.answer);
    Ok((repr.peer, repr.seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_answered_and_the_answer_names_its_probe() {
        let request = Repr { answer: false, peer: 3, seq: 77 }.emit();
        let answer = answer(&request).unwrap();
        assert_eq!(parse_answer(&answer), Ok((3, 77)));
        assert!(parse_answer(&request).is_err(), "a request is not an answer");
        assert!(super::answer(&answer).is_err(), "answers are not answered (no ping-pong)");
    }

    #[test]
    fn short_long_and_foreign_bytes_are_errors() {
        let request = Repr { answer: false, peer: 3, seq: 77 }.emit();
        for len in 0..LEN {
            assert_eq!(answer(&request[..len]), Err(Error::Truncated));
        }
        let mut long = request.to_vec();
        long.push(0);
        assert!(answer(&long).is_err());
        assert!(answer(b"anyedge-router-!").is_err());
        let mut bad = request;
        bad[3] = 2;
        assert_eq!(answer(&bad), Err(Error::Malformed("probe flags")));
    }
}
