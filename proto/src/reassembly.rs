//! IPv4 and IPv6 reassembly with bounded memory and time: where a node takes packets from a kernel
//! (a POP from its clients' TUN device, a backend host from its own), a datagram larger
//! than the path MTU arrives as fragments; the cores need the whole datagram (its ports
//! name the flow, its listener and its backend), so the node puts it back together here.
//!
//! Bounds (what a fragment flood can claim): [`DATAGRAMS_MAX`] datagrams under way,
//! [`BYTES_MAX`] bytes held across them, [`FRAGMENTS_MAX`] fragments each, each complete
//! within [`TIMEOUT_NS`] of its first fragment or dropped. A fragment that overlaps one
//! already held drops its whole datagram (overlaps are how filters are evaded, and no
//! honest sender makes them; RFC 5722 says the same for IPv6), as does one past 65,535
//! bytes. When the table is full the oldest datagram goes first.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Datagrams being reassembled at once.
pub const DATAGRAMS_MAX: usize = 256;
/// Bytes held across them (4 MiB, the kernel's `ipfrag_high_thresh` default).
pub const BYTES_MAX: usize = 4 << 20;
/// Fragments one datagram may take (a 65,535-byte datagram in 1,280-byte fragments is 52).
pub const FRAGMENTS_MAX: usize = 64;
/// Time a datagram has to complete from its first fragment.
pub const TIMEOUT_NS: u64 = 1_000_000_000;

/// The largest IPv4 datagram.
const DATAGRAM_LEN_MAX: usize = 65_535;

/// A datagram is named by its addresses, protocol and identification (RFC 791; for IPv6,
/// RFC 8200, addresses and the 32-bit identification, protocol 0).
type Key = (IpAddr, IpAddr, u8, u32);

/// IPv6's Fragment extension header's next-header value.
const IPV6_FRAGMENT: u8 = 44;

#[derive(Debug)]
struct Partial {
    started_ns: u64,
    /// The first fragment's header (options included), once it came.
    header: Option<Vec<u8>>,
    /// Payload bytes by offset.
    payload: Vec<u8>,
    /// Byte ranges of the payload held, `[start, end)`, in arrival order.
    held: Vec<(usize, usize)>,
    /// The payload's length, once the last fragment came.
    total: Option<usize>,
}

impl Partial {
    fn bytes(&self) -> usize {
        self.payload.len() + self.header.as_ref().map_or(0, Vec::len)
    }

    fn complete(&self) -> bool {
        let Some(total) = self.total else { return false };
        self.header.is_some() && self.held.iter().map(|(a, b)| b - a).sum::<usize>() == total
    }
}

/// What became of the fragments a reassembler took, for a node's status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReassemblyStats {
    /// Datagrams put back together.
    pub completed: u64,
    /// Datagrams dropped: timed out or evicted for room unfinished, overlapping, too
    /// long, or a fragment again once put together.
    pub dropped: u64,
}

/// Fragments in, whole datagrams out.
#[derive(Debug, Default)]
pub struct Reassembler {
    partial: BTreeMap<Key, Partial>,
    /// Keys in the order their first fragment came (expiry and eviction go oldest first).
    order: VecDeque<(u64, Key)>,
    bytes: usize,
    pub stats: ReassemblyStats,
}

/// Whether an IPv4 packet is a fragment (more fragments follow, or it is not the first).
pub fn is_ipv4_fragment(packet: &[u8]) -> bool {
    packet.len() >= 20 && packet[0] >> 4 == 4 && u16::from_be_bytes([packet[6], packet[7]]) & 0x3fff != 0
}

/// Extension headers that may stand before a Fragment header (RFC 8200 §4.1, §4.5: the
/// unfragmentable part): Hop-by-Hop Options, Routing, Destination Options.
const IPV6_UNFRAGMENTABLE: [u8; 3] = [0, 43, 60];
/// At most this many of them are walked before the Fragment header.
const IPV6_UNFRAGMENTABLE_MAX: usize = 4;

/// Where an IPv6 packet's Fragment header is, and where the next-header byte that names
/// it is (6 in the fixed header, or the first byte of the extension header before it):
/// after the fixed header and at most [`IPV6_UNFRAGMENTABLE_MAX`] unfragmentable
/// extension headers, each within the packet.
fn ipv6_fragment_header(packet: &[u8]) -> Option<(usize, usize)> {
    if packet.len() < 48 || packet[0] >> 4 != 6 {
        return None;
    }
    let (mut at, mut names_it) = (40, 6);
    for _ in 0..=IPV6_UNFRAGMENTABLE_MAX {
        let next = packet[names_it];
        if next == IPV6_FRAGMENT {
            return (at + 8 <= packet.len()).then_some((at, names_it));
        }
        if !IPV6_UNFRAGMENTABLE.contains(&next) || at + 2 > packet.len() {
            return None;
        }
        names_it = at;
        at += (usize::from(packet[at + 1]) + 1) * 8;
    }
    None
}

/// Whether an IPv6 packet is a fragment: a Fragment header after the fixed header and
/// the unfragmentable extension headers (Hop-by-Hop, Routing, Destination Options).
pub fn is_ipv6_fragment(packet: &[u8]) -> bool {
    ipv6_fragment_header(packet).is_some()
}

/// Whether a packet is an IPv4 or IPv6 fragment this reassembler takes.
pub fn is_fragment(packet: &[u8]) -> bool {
    is_ipv4_fragment(packet) || is_ipv6_fragment(packet)
}

impl Reassembler {
    pub fn new() -> Reassembler {
        Reassembler::default()
    }

    /// Datagrams under way now.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    /// Takes one IPv4 fragment at `now_ns`; the whole datagram when this completed it.
    /// Anything not a well-formed IPv4 fragment is ignored (`None`).
    pub fn push(&mut self, now_ns: u64, packet: &[u8]) -> Option<Vec<u8>> {
        self.expire(now_ns);
        let frag = Fragment::read(packet)?;
        let key = frag.key;
        if !self.partial.contains_key(&key) {
            self.make_room(frag.data.len() + frag.header.len());
            self.partial.insert(
                key,
                Partial { started_ns: now_ns, header: None, payload: Vec::new(), held: Vec::new(), total: None },
            );
            self.order.push_back((now_ns, key));
            self.forget_finished();
        }
        let accepted = self.add(&key, &frag);
        if !accepted {
            self.drop_partial(&key);
            return None;
        }
        if !self.partial.get(&key).is_some_and(Partial::complete) {
            return None;
        }
        let done = self.remove(&key)?;
        // A datagram whose chain, put together, leads to a Fragment header again is no
        // datagram anyone sends: dropped, so nothing downstream sees a fragment as whole.
        match whole(done).filter(|w| !is_fragment(w)) {
            Some(w) => {
                self.stats.completed += 1;
                Some(w)
            }
            None => {
                self.stats.dropped += 1;
                None
            }
        }
    }

    /// Adds a fragment to its datagram; false when the datagram must go (an overlap, too
    /// long, too many fragments, or over the byte budget).
    fn add(&mut self, key: &Key, frag: &Fragment<'_>) -> bool {
        let (start, end) = (frag.offset, frag.offset + frag.data.len());
        let Some(p) = self.partial.get_mut(key) else { return false };
        let overlaps = p.held.iter().any(|&(a, b)| start < b && a < end);
        let past_end = p.total.is_some_and(|t| end > t) || (!frag.more && p.held.iter().any(|&(_, b)| b > end));
        let second_last = !frag.more && p.total.is_some();
        if overlaps || past_end || second_last || end + 20 > DATAGRAM_LEN_MAX || p.held.len() >= FRAGMENTS_MAX {
            return false;
        }
        let before = p.bytes();
        if p.payload.len() < end {
            p.payload.resize(end, 0);
        }
        p.payload[start..end].copy_from_slice(frag.data);
        p.held.push((start, end));
        if !frag.more {
            p.total = Some(end);
        }
        if start == 0 {
            let mut header = frag.header.to_vec();
            if let Some((names_it, next)) = frag.v6_next {
                header[names_it] = next;
            }
            p.header = Some(header);
        }
        let grown = p.bytes() - before;
        self.bytes += grown;
        self.bytes <= BYTES_MAX
    }

    /// Keeps the arrival order as short as the table: entries of datagrams that completed
    /// or went are dropped once they outnumber the live ones (a fast stream of small
    /// fragmented datagrams would otherwise queue a second's worth of them).
    fn forget_finished(&mut self) {
        if self.order.len() > 2 * DATAGRAMS_MAX {
            let partial = &self.partial;
            self.order.retain(|(started, key)| partial.get(key).is_some_and(|p| p.started_ns == *started));
        }
        debug_assert!(self.order.len() <= 2 * DATAGRAMS_MAX + 1, "arrival order past its bound");
    }

    /// Drops datagrams older than [`TIMEOUT_NS`].
    fn expire(&mut self, now_ns: u64) {
        while let Some(&(started, key)) = self.order.front() {
            if now_ns.saturating_sub(started) < TIMEOUT_NS {
                break;
            }
            self.order.pop_front();
            if self.partial.get(&key).is_some_and(|p| p.started_ns == started) {
                self.drop_partial(&key);
            }
        }
    }

    /// Evicts the oldest datagrams until a new one of `bytes` fits both bounds.
    fn make_room(&mut self, bytes: usize) {
        while self.partial.len() >= DATAGRAMS_MAX || (self.bytes + bytes > BYTES_MAX && !self.partial.is_empty()) {
            let Some((started, key)) = self.order.pop_front() else { break };
            if self.partial.get(&key).is_some_and(|p| p.started_ns == started) {
                self.drop_partial(&key);
            }
        }
    }

    fn drop_partial(&mut self, key: &Key) {
        if self.remove(key).is_some() {
            self.stats.dropped += 1;
        }
    }

    fn remove(&mut self, key: &Key) -> Option<Partial> {
        let p = self.partial.remove(key)?;
        self.bytes -= p.bytes();
        debug_assert!(self.partial.len() <= DATAGRAMS_MAX && self.bytes <= BYTES_MAX + DATAGRAM_LEN_MAX);
        debug_assert!(!self.partial.is_empty() || self.bytes == 0, "bytes held without a datagram");
        Some(p)
    }
}

/// An IPv6 packet cut into fragments of at most `mtu` bytes, with identification `id`
/// (RFC 8200 §4.5): what the source of a datagram larger than the path MTU must do, since
/// IPv6 routers never fragment. A packet that fits, or is not IPv6, comes back alone.
pub fn fragment_ipv6(packet: &[u8], mtu: usize, id: u32) -> Vec<Vec<u8>> {
    let fits = packet.len() <= mtu || packet.len() < 40 || packet[0] >> 4 != 6 || is_ipv6_fragment(packet);
    let size = mtu.saturating_sub(48) / 8 * 8;
    if fits || size == 0 {
        return vec![packet.to_vec()];
    }
    let payload = &packet[40..];
    let chunks = payload.chunks(size);
    let last = chunks.len() - 1;
    chunks
        .enumerate()
        .map(|(i, chunk)| {
            let mut f = packet[..40].to_vec();
            f[4..6].copy_from_slice(&((8 + chunk.len()) as u16).to_be_bytes());
            f[6] = IPV6_FRAGMENT;
            let bits = ((i * size / 8) as u16) << 3 | u16::from(i < last);
            f.extend_from_slice(&[packet[6], 0]);
            f.extend_from_slice(&bits.to_be_bytes());
            f.extend_from_slice(&id.to_be_bytes());
            f.extend_from_slice(chunk);
            f
        })
        .collect()
}

/// The whole datagram: the first fragment's header with no fragment bits, the new total
/// length and its checksum, then the payload (IPv6: the fixed header, its next header
/// the Fragment header's, its payload length the payload's).
fn whole(p: Partial) -> Option<Vec<u8>> {
    let mut out = p.header?;
    if out.first().is_some_and(|b| b >> 4 == 6) {
        // The payload length counts the extension headers kept before the data.
        let len = u16::try_from(out.len() - 40 + p.payload.len()).ok()?;
        out[4..6].copy_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&p.payload);
        return Some(out);
    }
    out.extend_from_slice(&p.payload);
    let total = u16::try_from(out.len()).ok()?;
    out[2..4].copy_from_slice(&total.to_be_bytes());
    let dont_fragment = u16::from_be_bytes([out[6], out[7]]) & 0x4000;
    out[6..8].copy_from_slice(&dont_fragment.to_be_bytes());
    out[10..12].copy_from_slice(&[0, 0]);
    let header_len = usize::from(out[0] & 0x0f) * 4;
    let sum = checksum(&out[..header_len]);
    out[10..12].copy_from_slice(&sum.to_be_bytes());
    Some(out)
}

fn checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// One IPv4 or IPv6 fragment, read.
struct Fragment<'a> {
    key: Key,
    header: &'a [u8],
    /// Payload offset in bytes.
    offset: usize,
    more: bool,
    data: &'a [u8],
    /// IPv6: where in `header` the byte naming the Fragment header is, and the protocol
    /// after the Fragment header (the whole datagram's next header, written there).
    v6_next: Option<(usize, u8)>,
}

impl<'a> Fragment<'a> {
    fn read(packet: &'a [u8]) -> Option<Fragment<'a>> {
        if is_ipv6_fragment(packet) {
            return Fragment::read_v6(packet);
        }
        if !is_ipv4_fragment(packet) {
            return None;
        }
        let header_len = usize::from(packet[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
        if header_len < 20 || total < header_len || total > packet.len() {
            return None;
        }
        let flags = u16::from_be_bytes([packet[6], packet[7]]);
        let (more, offset) = (flags & 0x2000 != 0, usize::from(flags & 0x1fff) * 8);
        let data = &packet[header_len..total];
        // Every fragment but the last carries a multiple of 8 bytes (RFC 791).
        if (more && !data.len().is_multiple_of(8)) || data.is_empty() {
            return None;
        }
        let addr = |at: usize| IpAddr::V4(Ipv4Addr::new(packet[at], packet[at + 1], packet[at + 2], packet[at + 3]));
        let key = (addr(12), addr(16), packet[9], u32::from(u16::from_be_bytes([packet[4], packet[5]])));
        Some(Fragment { key, header: &packet[..header_len], offset, more, data, v6_next: None })
    }

    /// An IPv6 fragment: fixed header (40), the unfragmentable extension headers, the
    /// Fragment header (8: next header, reserved, offset·8 | M, identification), data.
    fn read_v6(packet: &'a [u8]) -> Option<Fragment<'a>> {
        let (f, names_it) = ipv6_fragment_header(packet)?;
        let payload_len = usize::from(u16::from_be_bytes([packet[4], packet[5]]));
        let end = 40 + payload_len;
        // A fragment of a fragment is no datagram anyone sends (the fuzzer's): refused.
        if end > packet.len() || end < f + 8 || packet[f] == IPV6_FRAGMENT {
            return None;
        }
        let bits = u16::from_be_bytes([packet[f + 2], packet[f + 3]]);
        let (more, offset) = (bits & 1 != 0, usize::from(bits >> 3) * 8);
        let data = &packet[f + 8..end];
        if (more && !data.len().is_multiple_of(8)) || data.is_empty() {
            return None;
        }
        let addr = |at: usize| Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&packet[at..at + 16]).ok()?)));
        let id = u32::from_be_bytes([packet[f + 4], packet[f + 5], packet[f + 6], packet[f + 7]]);
        let key = (addr(8)?, addr(24)?, 0, id);
        Some(Fragment { key, header: &packet[..f], offset, more, data, v6_next: Some((names_it, packet[f])) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UDP datagram of `len` payload bytes from 10.0.0.1:4000 to 10.0.0.2:7000 with
    /// identification `id`, whole.
    fn datagram(id: u16, len: usize) -> Vec<u8> {
        let udp_len = 8 + len;
        let mut p = vec![0u8; 20 + udp_len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
        p[4..6].copy_from_slice(&id.to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        p[20..22].copy_from_slice(&4000u16.to_be_bytes());
        p[22..24].copy_from_slice(&7000u16.to_be_bytes());
        p[24..26].copy_from_slice(&(udp_len as u16).to_be_bytes());
        for (i, b) in p[28..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let sum = checksum(&p[..20]);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p
    }

    /// `whole` cut into fragments of `size` payload bytes (a multiple of 8).
    fn fragments(whole: &[u8], size: usize) -> Vec<Vec<u8>> {
        let payload = &whole[20..];
        let mut out = Vec::new();
        for (i, chunk) in payload.chunks(size).enumerate() {
            let mut f = whole[..20].to_vec();
            f.extend_from_slice(chunk);
            let more = (i + 1) * size < payload.len();
            f[2..4].copy_from_slice(&((20 + chunk.len()) as u16).to_be_bytes());
            let bits = (i * size / 8) as u16 | if more { 0x2000 } else { 0 };
            f[6..8].copy_from_slice(&bits.to_be_bytes());
            f[10..12].copy_from_slice(&[0, 0]);
            let sum = checksum(&f[..20]);
            f[10..12].copy_from_slice(&sum.to_be_bytes());
            out.push(f);
        }
        out
    }

    #[test]
    fn fragments_in_any_order_give_back_the_datagram_that_was_cut() {
        let whole = datagram(7, 3_000);
        let mut parts = fragments(&whole, 1_480);
        assert_eq!(parts.len(), 3);
        parts.reverse();
        let mut r = Reassembler::new();
        assert_eq!(r.push(0, &parts[0]), None);
        assert_eq!(r.push(1, &parts[1]), None);
        assert_eq!(r.push(2, &parts[2]), Some(whole.clone()), "the same bytes, checksum included");
        assert_eq!((r.pending(), r.bytes, r.stats.completed), (0, 0, 1));
        assert!(!is_ipv4_fragment(&whole) && parts.iter().all(|p| is_ipv4_fragment(p)));
        // A stream of them within one timeout keeps nothing of those that completed.
        for id in 0..10_000u16 {
            for f in fragments(&datagram(id, 3_000), 1_480) {
                r.push(3, &f);
            }
        }
        assert_eq!(r.stats.completed, 10_001);
        assert!(r.order.len() <= 2 * DATAGRAMS_MAX + 1 && r.pending() == 0, "{} kept", r.order.len());
    }

    #[test]
    fn overlapping_duplicate_and_late_fragments_drop_their_datagram() {
        let whole = datagram(9, 3_000);
        let parts = fragments(&whole, 1_480);
        let mut r = Reassembler::new();
        r.push(0, &parts[0]);
        assert_eq!(r.push(0, &parts[0]), None, "a duplicate overlaps");
        assert_eq!((r.pending(), r.stats.dropped), (0, 1));
        // An overlap that would rewrite the ports of the first fragment.
        let mut evil = parts[1].clone();
        evil[6..8].copy_from_slice(&0x2000u16.to_be_bytes());
        r.push(0, &parts[0]);
        assert_eq!(r.push(0, &evil), None);
        assert_eq!(r.stats.dropped, 2);
        // Too late: the first fragment came more than the timeout before the rest.
        r.push(0, &parts[0]);
        r.push(0, &parts[1]);
        assert_eq!(r.push(TIMEOUT_NS, &parts[2]), None);
        assert_eq!((r.pending(), r.stats.dropped), (1, 3), "only the late fragment is held now");
    }

    #[test]
    fn a_flood_of_first_fragments_holds_at_most_the_bounds_and_the_next_datagram_still_completes() {
        let mut r = Reassembler::new();
        for id in 0..2_000u16 {
            let whole = datagram(id, 60_000);
            let first = &fragments(&whole, 1_480)[0];
            assert_eq!(r.push(u64::from(id), first), None);
            assert!(
                r.pending() <= DATAGRAMS_MAX && r.bytes <= BYTES_MAX,
                "{} datagrams, {} bytes",
                r.pending(),
                r.bytes
            );
        }
        let whole = datagram(20_000, 3_000);
        let mut out = None;
        for f in fragments(&whole, 1_480) {
            out = r.push(20_000, &f);
        }
        assert_eq!(out, Some(whole));
    }

    /// `whole` (an IPv6/UDP datagram) cut into IPv6 fragments of `size` data bytes.
    fn fragments_v6(whole: &[u8], size: usize, id: u32) -> Vec<Vec<u8>> {
        let payload = &whole[40..];
        let mut out = Vec::new();
        for (i, chunk) in payload.chunks(size).enumerate() {
            let more = (i + 1) * size < payload.len();
            let mut f = whole[..40].to_vec();
            f[6] = IPV6_FRAGMENT;
            f[4..6].copy_from_slice(&((8 + chunk.len()) as u16).to_be_bytes());
            let bits = ((i * size / 8) as u16) << 3 | u16::from(more);
            f.extend_from_slice(&[whole[6], 0]);
            f.extend_from_slice(&bits.to_be_bytes());
            f.extend_from_slice(&id.to_be_bytes());
            f.extend_from_slice(chunk);
            out.push(f);
        }
        out
    }

    #[test]
    fn ipv6_fragments_give_back_the_datagram_with_the_fragment_header_gone() {
        let mut whole = vec![0u8; 40 + 8 + 3_000];
        whole[0] = 0x60;
        whole[4..6].copy_from_slice(&(3_008u16).to_be_bytes());
        whole[6] = 17;
        whole[7] = 64;
        whole[8..24].copy_from_slice(&"fd00:66::7".parse::<Ipv6Addr>().unwrap().octets());
        whole[24..40].copy_from_slice(&"fd00:a::20".parse::<Ipv6Addr>().unwrap().octets());
        for (i, b) in whole[40..].iter_mut().enumerate() {
            *b = (i * 7) as u8;
        }
        let mut parts = fragments_v6(&whole, 1_448, 0xdead_beef);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| is_fragment(p)) && !is_fragment(&whole));
        parts.swap(0, 2);
        let mut r = Reassembler::new();
        assert_eq!(r.push(0, &parts[0]), None);
        assert_eq!(r.push(0, &parts[1]), None);
        assert_eq!(r.push(0, &parts[2]), Some(whole));
        assert_eq!((r.pending(), r.bytes), (0, 0));
    }

    #[test]
    fn ipv6_fragments_behind_a_destination_options_header_reassemble_with_it_kept() {
        // Fixed header, Destination Options (8 bytes, naming UDP), 3,000 bytes of data.
        let mut whole = vec![0u8; 40 + 8 + 3_000];
        whole[0] = 0x60;
        whole[4..6].copy_from_slice(&(3_008u16).to_be_bytes());
        whole[6] = 60;
        whole[8..24].copy_from_slice(&"fd00:66::7".parse::<Ipv6Addr>().unwrap().octets());
        whole[24..40].copy_from_slice(&"fd00:a::20".parse::<Ipv6Addr>().unwrap().octets());
        whole[40] = 17;
        for (i, b) in whole[48..].iter_mut().enumerate() {
            *b = (i * 11) as u8;
        }
        // As a sender cuts it: the unfragmentable part (fixed header and options) in each
        // fragment, the options naming the Fragment header.
        let parts: Vec<Vec<u8>> = whole[48..]
            .chunks(1_448)
            .enumerate()
            .map(|(i, chunk)| {
                let mut f = whole[..48].to_vec();
                f[40] = IPV6_FRAGMENT;
                f[4..6].copy_from_slice(&((16 + chunk.len()) as u16).to_be_bytes());
                let bits = ((i * 1_448 / 8) as u16) << 3 | u16::from((i + 1) * 1_448 < 3_000);
                f.extend_from_slice(&[17, 0]);
                f.extend_from_slice(&bits.to_be_bytes());
                f.extend_from_slice(&77u32.to_be_bytes());
                f.extend_from_slice(chunk);
                f
            })
            .collect();
        assert!(parts.iter().all(|p| is_ipv6_fragment(p)) && !is_fragment(&whole));
        let mut r = Reassembler::new();
        let out: Vec<_> = parts.iter().rev().filter_map(|p| r.push(0, p)).collect();
        assert_eq!(out, vec![whole.clone()]);
        // A chain of more extension headers than a sender puts there is not walked.
        let mut long = vec![0u8; 40 + 6 * 8 + 8 + 16];
        long[0] = 0x60;
        long[6] = 60;
        for i in 0..6 {
            long[40 + i * 8] = if i == 5 { IPV6_FRAGMENT } else { 60 };
        }
        assert!(!is_ipv6_fragment(&long));
    }

    #[test]
    fn a_large_ipv6_packet_cut_by_its_source_fits_the_mtu_and_reassembles() {
        let mut whole = vec![0u8; 40 + 9_000];
        whole[0] = 0x60;
        whole[4..6].copy_from_slice(&(9_000u16).to_be_bytes());
        whole[6] = 17;
        let parts = fragment_ipv6(&whole, 1_500, 7);
        assert_eq!(parts.len(), 7);
        assert!(parts.iter().all(|p| p.len() <= 1_500 && is_ipv6_fragment(p)));
        let mut r = Reassembler::new();
        let out: Vec<_> = parts.iter().filter_map(|p| r.push(0, p)).collect();
        assert_eq!(out, vec![whole.clone()]);
        assert_eq!(fragment_ipv6(&whole[..1_000], 1_500, 7), vec![whole[..1_000].to_vec()], "what fits goes alone");
        // A fragment whose next header is another Fragment header is refused.
        let mut nested = parts[0].clone();
        nested[40] = IPV6_FRAGMENT;
        assert_eq!(Reassembler::new().push(0, &nested), None);
    }

    #[test]
    fn a_datagram_that_reassembles_into_another_fragment_is_dropped() {
        // One whole-in-one fragment (offset 0, no more) naming Destination Options next;
        // its data is those options naming a Fragment header, and that header: put
        // together, the datagram's chain leads to a fragment again (the fuzzer's find).
        let mut f = vec![0u8; 40 + 8];
        f[0] = 0x60;
        f[6] = IPV6_FRAGMENT;
        f[40] = 60;
        f.extend_from_slice(&[IPV6_FRAGMENT, 0, 0, 0, 0, 0, 0, 0]);
        f.extend_from_slice(&[17, 0, 0, 1, 0, 0, 0, 9]);
        f.extend_from_slice(&[0; 16]);
        let len = (f.len() - 40) as u16;
        f[4..6].copy_from_slice(&len.to_be_bytes());
        let mut r = Reassembler::new();
        assert_eq!(r.push(0, &f), None, "no fragment comes out as a whole datagram");
        assert_eq!((r.pending(), r.bytes), (0, 0));
    }

    #[test]
    fn junk_is_ignored_without_a_panic() {
        let mut r = Reassembler::new();
        for junk in [&[][..], &[0x45; 19], &[0x45, 0, 0, 20, 0, 0, 0x20, 0, 64, 17, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]] {
            assert_eq!(r.push(0, junk), None);
        }
        assert_eq!(r.pending(), 0);
    }
}
