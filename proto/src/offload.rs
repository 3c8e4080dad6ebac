//! TCP super-packets: one IP and one TCP header in front of many segments' payload, as a
//! TUN device with offloads (`IFF_VNET_HDR`, `TUNSETOFFLOAD` with TSO) hands them over
//! and takes them back, so that a bulk transfer costs a system call per 64 KiB rather
//! than per 1.5 KB. wireguard-go and the kernel's own virtio-net do the same.
//!
//! Each read from and write to such a device starts with a virtio-net header
//! ([`VnetHdr`]). What this module makes of a read is an ordinary IP packet with correct
//! checksums, however long ([`from_device`]), plus its segment size: the payload bytes
//! of each segment it is cut into where it leaves the backbone (the kernel's
//! `gso_size`). The cores treat it as one packet (one flow lookup, one rewrite, one
//! envelope sealed once); [`to_device`] hands it back to a kernel to cut, and [`cut`]
//! cuts it here where no kernel will (a path that takes only whole segments).
//!
//! Every function returns a typed error on bytes it cannot read; none panics (fuzzed).
//!
//! Between a CLB node and a backend host a super-packet travels behind a four-byte shim
//! ([`shim`], [`unshim`]) whose first byte no IP packet starts with; an ordinary packet has
//! none, so its envelope is what it was before super-packets.

use crate::{Error, Result};

/// The most a UDP datagram over IPv4 carries: one backbone envelope.
pub const DATAGRAM_MAX: usize = 65_507;

/// The longest super-packet one backbone envelope carries: a datagram less the seal, the
/// CCN header and its option word (the backend shim is shorter). A longer one (the
/// kernel makes them up to 64 KiB) is cut into whole segments that fit ([`fit`]).
pub const SUPER_PACKET_MAX: usize =
    DATAGRAM_MAX - crate::seal::OVERHEAD - crate::ccn::HEADER_LEN - crate::ccn::OPTION_LEN;
const _: () = assert!(SUPER_PACKET_MAX == 65_455 && SHIM_LEN <= crate::ccn::HEADER_LEN + crate::ccn::OPTION_LEN);

/// Bytes of the virtio-net header in front of every packet on an `IFF_VNET_HDR` device.
pub const VNET_HDR_LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the transport checksum is to be completed from
/// `csum_start`, into `csum_start + csum_offset`.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_*`.
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_TCPV6: u8 = 4;
/// Set beside a TCP type when the super-packet carries CWR (ECN).
pub const GSO_ECN: u8 = 0x80;

/// The virtio-net header (`struct virtio_net_hdr`), in the host's byte order as the TUN
/// device speaks it by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn parse(bytes: &[u8]) -> Result<VnetHdr> {
        let b: &[u8; VNET_HDR_LEN] =
            bytes.get(..VNET_HDR_LEN).ok_or(Error::Truncated)?.try_into().map_err(|_| Error::Truncated)?;
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Ok(VnetHdr { flags: b[0], gso_type: b[1], hdr_len: u(2), gso_size: u(4), csum_start: u(6), csum_offset: u(8) })
    }

    pub fn emit(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        for (i, v) in [(2, self.hdr_len), (4, self.gso_size), (6, self.csum_start), (8, self.csum_offset)] {
            b[i..i + 2].copy_from_slice(&v.to_ne_bytes());
        }
        b
    }
}

/// Where a TCP packet's headers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tcp {
    v6: bool,
    /// IP header length (IPv6: the fixed header; extension headers are not carried).
    ip: usize,
    /// TCP header length, options included.
    tcp: usize,
    /// The IP packet's length as its header says (≤ the buffer).
    total: usize,
}

impl Tcp {
    fn headers(&self) -> usize {
        self.ip + self.tcp
    }

    fn payload(&self) -> usize {
        self.total - self.headers()
    }
}

const PROTO_TCP: u8 = 6;

/// The headers of an IPv4 or IPv6 packet that carries TCP right after its IP header.
fn tcp_headers(p: &[u8]) -> Result<Tcp> {
    let (v6, ip, total) = match p.first().map(|b| b >> 4) {
        Some(4) => {
            if p.len() < 20 {
                return Err(Error::Truncated);
            }
            let ip = usize::from(p[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
            if ip < 20 || total < ip {
                return Err(Error::Malformed("IPv4 header length"));
            }
            if p[9] != PROTO_TCP {
                return Err(Error::Unsupported("super-packet transport (not TCP)"));
            }
            if u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0 {
                return Err(Error::Unsupported("IPv4 fragment"));
            }
            (false, ip, total)
        }
        Some(6) => {
            if p.len() < 40 {
                return Err(Error::Truncated);
            }
            if p[6] != PROTO_TCP {
                return Err(Error::Unsupported("super-packet transport (not TCP after the IPv6 header)"));
            }
            (true, 40, 40 + usize::from(u16::from_be_bytes([p[4], p[5]])))
        }
        Some(_) => return Err(Error::Malformed("IP version")),
        None => return Err(Error::Truncated),
    };
    if total > p.len() || total < ip + 20 {
        return Err(Error::Truncated);
    }
    let tcp = usize::from(p[ip + 12] >> 4) * 4;
    if tcp < 20 || ip + tcp > total {
        return Err(Error::Malformed("TCP data offset"));
    }
    Ok(Tcp { v6, ip, tcp, total })
}

/// The one's-complement sum of `data` as 16-bit big-endian words (an odd last byte padded
/// with zero), added to `sum`, not folded. Eight bytes a step: a 64 KiB packet in a few
/// microseconds.
pub(crate) fn add(mut sum: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(8);
    // Four 16-bit lanes per step, each widened to 64 bits: no carry is lost before the fold
    // (2^16 lanes of 2^16 each stay far below 2^64).
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        sum += (w >> 48) + ((w >> 32) & 0xffff) + ((w >> 16) & 0xffff) + (w & 0xffff);
    }
    let rest = chunks.remainder();
    let mut pairs = rest.chunks_exact(2);
    for c in &mut pairs {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = pairs.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

pub(crate) fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The pseudo-header's sum for a TCP segment of `len` bytes (header and payload).
fn pseudo(p: &[u8], t: &Tcp, len: usize) -> u64 {
    let addrs = if t.v6 { &p[8..40] } else { &p[12..20] };
    let proto_len = len as u64 + u64::from(PROTO_TCP);
    // IPv6's 32-bit length adds as two words; a length under 2^16 is one.
    add(0, addrs) + (proto_len >> 16) + (proto_len & 0xffff)
}

/// Writes the full TCP checksum (and an IPv4 header's own) of the packet as it stands.
fn fill_checksums(p: &mut [u8], t: &Tcp) {
    if !t.v6 {
        p[10..12].copy_from_slice(&[0, 0]);
        let sum = !fold(add(0, &p[..t.ip]));
        p[10..12].copy_from_slice(&sum.to_be_bytes());
    }
    let at = t.ip + 16;
    p[at..at + 2].copy_from_slice(&[0, 0]);
    let len = t.total - t.ip;
    let sum = !fold(add(pseudo(p, t, len), &p[t.ip..t.total]));
    p[at..at + 2].copy_from_slice(&sum.to_be_bytes());
}

/// A packet as the kernel handed it over from an `IFF_VNET_HDR` device (`read`: the
/// header, then the packet), made whole in place: a checksum left for the device to
/// complete is completed, a super-packet's TCP checksum is computed over all of it (a
/// segment's own means nothing for the whole). Returns the segment size of a
/// super-packet, 0 for an ordinary packet.
pub fn from_device(read: &mut [u8]) -> Result<u16> {
    let hdr = VnetHdr::parse(read)?;
    let p = &mut read[VNET_HDR_LEN..];
    match hdr.gso_type & !GSO_ECN {
        GSO_NONE => {
            if hdr.flags & F_NEEDS_CSUM != 0 {
                complete(p, usize::from(hdr.csum_start), usize::from(hdr.csum_offset))?;
            }
            Ok(0)
        }
        kind @ (GSO_TCPV4 | GSO_TCPV6) => {
            let t = tcp_headers(p)?;
            if t.v6 != (kind == GSO_TCPV6) {
                return Err(Error::Malformed("GSO type for the IP version"));
            }
            if hdr.gso_size == 0 {
                return Err(Error::Malformed("GSO segment size (zero)"));
            }
            fill_checksums(p, &t);
            Ok(if t.payload() > usize::from(hdr.gso_size) { hdr.gso_size } else { 0 })
        }
        _ => Err(Error::Unsupported("GSO type (not TCP)")),
    }
}

/// Completes a checksum the sender left partial: the one's-complement sum from `start`
/// to the end, into `start + offset` (which held the pseudo-header's sum).
fn complete(p: &mut [u8], start: usize, offset: usize) -> Result<()> {
    let at = start.checked_add(offset).ok_or(Error::Malformed("checksum offset"))?;
    if at + 2 > p.len() {
        return Err(Error::Malformed("checksum offset"));
    }
    let sum = !fold(add(0, &p[start..]));
    // 0 is "no checksum" to UDP: the kernel writes its equal, all ones.
    let sum = if sum == 0 { 0xffff } else { sum };
    p[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

/// The virtio-net header to write in front of `packet` (an ordinary packet with correct
/// checksums) so that the kernel takes it: a TCP super-packet of `segment` bytes per
/// segment is marked for the kernel to cut (its checksum field becomes the pseudo-header's
/// sum, as the kernel's own super-packets carry); anything else goes as it is.
pub fn to_device(packet: &mut [u8], segment: u16) -> Result<[u8; VNET_HDR_LEN]> {
    if segment == 0 {
        return Ok(VnetHdr::default().emit());
    }
    let t = tcp_headers(packet)?;
    if t.payload() <= usize::from(segment) {
        return Ok(VnetHdr::default().emit());
    }
    let cwr = packet[t.ip + 13] & 0x80 != 0;
    let kind = if t.v6 { GSO_TCPV6 } else { GSO_TCPV4 };
    let at = t.ip + 16;
    let partial = fold(pseudo(packet, &t, t.total - t.ip));
    packet[at..at + 2].copy_from_slice(&partial.to_be_bytes());
    let headers = u16::try_from(t.headers()).map_err(|_| Error::Malformed("header length"))?;
    Ok(VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: kind | if cwr { GSO_ECN } else { 0 },
        hdr_len: headers,
        gso_size: segment,
        csum_start: t.ip as u16,
        csum_offset: 16,
    }
    .emit())
}

/// A TCP packet cut into packets of at most `chunk` payload bytes each, as the kernel's
/// segmentation cuts one: the headers repeated, the sequence number advanced, the IP
/// length (and IPv4's identification) per part, FIN and PSH on the last part only, CWR on
/// the first only, every checksum correct. A packet no longer than `chunk` comes back as
/// it is, alone.
pub fn cut(packet: &[u8], chunk: usize) -> Result<Vec<Vec<u8>>> {
    let t = tcp_headers(packet)?;
    if chunk == 0 {
        return Err(Error::Malformed("segment size (zero)"));
    }
    if t.payload() <= chunk {
        return Ok(vec![packet[..t.total].to_vec()]);
    }
    let head = &packet[..t.headers()];
    let payload = &packet[t.headers()..t.total];
    let seq = u32::from_be_bytes([head[t.ip + 4], head[t.ip + 5], head[t.ip + 6], head[t.ip + 7]]);
    let id = u16::from_be_bytes([head[4], head[5]]);
    let parts = payload.len().div_ceil(chunk);
    let mut out = Vec::with_capacity(parts);
    for (i, data) in payload.chunks(chunk).enumerate() {
        let mut p = Vec::with_capacity(head.len() + data.len());
        p.extend_from_slice(head);
        p.extend_from_slice(data);
        let total = p.len();
        if t.v6 {
            p[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
        } else {
            p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            p[4..6].copy_from_slice(&id.wrapping_add(i as u16).to_be_bytes());
        }
        let s = seq.wrapping_add((i * chunk) as u32);
        p[t.ip + 4..t.ip + 8].copy_from_slice(&s.to_be_bytes());
        let flags = &mut p[t.ip + 13];
        if i + 1 < parts {
            *flags &= !(0x01 | 0x08); // FIN, PSH
        }
        if i > 0 {
            *flags &= !0x80; // CWR
        }
        fill_checksums(&mut p, &Tcp { total, ..t });
        out.push(p);
    }
    Ok(out)
}

/// A super-packet cut into super-packets of at most `max_len` bytes each (whole segments
/// of `segment` bytes per part): what one envelope can carry.
pub fn fit(packet: &[u8], segment: u16, max_len: usize) -> Result<Vec<Vec<u8>>> {
    let t = tcp_headers(packet)?;
    if t.total <= max_len {
        return Ok(vec![packet[..t.total].to_vec()]);
    }
    let segment = usize::from(segment).max(1);
    let room = max_len
        .checked_sub(t.headers())
        .filter(|&r| r >= segment)
        .ok_or(Error::Malformed("segment size (larger than an envelope)"))?;
    cut(packet, room / segment * segment)
}

/// The shim's first byte: no IPv4 or IPv6 packet starts with it (version 0).
const SHIM_SEGMENTED: u8 = 0x01;
/// Bytes of the shim.
pub const SHIM_LEN: usize = 4;

/// The shim in front of a super-packet between a CLB node and a backend host: its
/// segment size. An ordinary packet (segment 0) has none.
pub fn shim(segment: u16) -> Option<[u8; SHIM_LEN]> {
    let s = segment.to_be_bytes();
    (segment > 0).then_some([SHIM_SEGMENTED, 0, s[0], s[1]])
}

/// A backend envelope's payload: its segment size (0 without a shim) and the packet.
pub fn unshim(payload: &[u8]) -> Result<(u16, &[u8])> {
    match payload.first() {
        Some(&SHIM_SEGMENTED) => {
            let b = payload.get(..SHIM_LEN).ok_or(Error::Truncated)?;
            let segment = u16::from_be_bytes([b[2], b[3]]);
            if b[1] != 0 || segment == 0 {
                return Err(Error::Malformed("segment shim"));
            }
            Ok((segment, &payload[SHIM_LEN..]))
        }
        _ => Ok((0, payload)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inner;

    /// A TCP/IPv4 packet from 198.18.0.2:40000 to 198.19.20.40:5201 with `payload`.
    fn tcp4(payload: &[u8], flags: u8) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((40 + payload.len()) as u16).to_be_bytes());
        p[4..6].copy_from_slice(&7u16.to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = PROTO_TCP;
        p[12..16].copy_from_slice(&[198, 18, 0, 2]);
        p[16..20].copy_from_slice(&[198, 19, 20, 40]);
        p[20..22].copy_from_slice(&40000u16.to_be_bytes());
        p[22..24].copy_from_slice(&5201u16.to_be_bytes());
        p[24..28].copy_from_slice(&1_000u32.to_be_bytes());
        p[28..32].copy_from_slice(&77u32.to_be_bytes());
        p[32] = 5 << 4;
        p[33] = flags;
        p[34..36].copy_from_slice(&512u16.to_be_bytes());
        p.extend_from_slice(payload);
        let t = tcp_headers(&p).unwrap();
        fill_checksums(&mut p, &t);
        p
    }

    /// What smoltcp (somebody else's reading) says of a packet's checksums.
    fn checksums_hold(p: &[u8]) -> bool {
        use smoltcp::wire::{IpAddress, Ipv4Packet, TcpPacket};
        let ip = Ipv4Packet::new_checked(p).unwrap();
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        ip.verify_checksum() && tcp.verify_checksum(&IpAddress::Ipv4(ip.src_addr()), &IpAddress::Ipv4(ip.dst_addr()))
    }

    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// The kernel's super-packet (checksum field holding the pseudo-header's sum, the
    /// device to complete it) read through `from_device` is an ordinary packet with a
    /// correct checksum over all of it, and its segment size; `to_device` marks it for
    /// the kernel again with the same pseudo-header sum the kernel wrote.
    #[test]
    fn a_super_packet_from_the_kernel_is_made_whole_and_handed_back_as_the_kernel_made_it() {
        let data = payload(60_000);
        let whole = tcp4(&data, 0x18);
        assert!(checksums_hold(&whole));
        let t = tcp_headers(&whole).unwrap();
        let mut from_kernel = whole.clone();
        let partial = fold(pseudo(&whole, &t, whole.len() - 20));
        from_kernel[36..38].copy_from_slice(&partial.to_be_bytes());
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 40,
            gso_size: 1_448,
            csum_start: 20,
            csum_offset: 16,
        };
        let mut read = hdr.emit().to_vec();
        read.extend_from_slice(&from_kernel);
        assert_eq!(from_device(&mut read), Ok(1_448));
        assert_eq!(&read[VNET_HDR_LEN..], &whole[..]);
        let mut out = whole.clone();
        let back = VnetHdr::parse(&to_device(&mut out, 1_448).unwrap()).unwrap();
        assert_eq!(back, VnetHdr { hdr_len: 40, ..hdr });
        assert_eq!(out, from_kernel);
    }

    /// A small packet whose checksum the kernel left partial is completed; one already
    /// whole is left alone; a super-packet of one segment goes to the kernel unmarked.
    #[test]
    fn partial_checksums_of_ordinary_packets_are_completed() {
        let whole = tcp4(b"hello", 0x18);
        let t = tcp_headers(&whole).unwrap();
        let mut partial = whole.clone();
        partial[36..38].copy_from_slice(&fold(pseudo(&whole, &t, whole.len() - 20)).to_be_bytes());
        let hdr = VnetHdr { flags: F_NEEDS_CSUM, csum_start: 20, csum_offset: 16, ..Default::default() };
        let mut read = [hdr.emit().as_slice(), &partial].concat();
        assert_eq!(from_device(&mut read), Ok(0));
        assert!(checksums_hold(&read[VNET_HDR_LEN..]));
        let mut plain = [[0u8; VNET_HDR_LEN].as_slice(), &whole].concat();
        assert_eq!(from_device(&mut plain), Ok(0));
        assert_eq!(&plain[VNET_HDR_LEN..], &whole[..]);
        let mut one = tcp4(&payload(1_000), 0x10);
        assert_eq!(to_device(&mut one, 1_448).unwrap(), [0u8; VNET_HDR_LEN]);
    }

    /// Cut into segments, a super-packet is what the sender's kernel would have sent one
    /// by one: each part parses, checksums hold, sequence numbers follow on, FIN and PSH
    /// only on the last, CWR only on the first, and the payload is the same bytes.
    #[test]
    fn a_super_packet_cut_into_segments_is_what_the_kernel_would_have_sent() {
        let data = payload(10_000);
        let sup = tcp4(&data, 0x80 | 0x10 | 0x08 | 0x01);
        let parts = cut(&sup, 1_448).unwrap();
        assert_eq!(parts.len(), 7);
        let mut joined = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            assert!(checksums_hold(p), "part {i}");
            let info = inner::parse(p).unwrap();
            assert_eq!(info.payload_len, if i < 6 { 1_448 } else { 10_000 - 6 * 1_448 });
            let (seq, _, _) = inner::tcp_numbers(p).unwrap();
            assert_eq!(seq, 1_000 + (i * 1_448) as u32);
            let flags = p[33];
            assert_eq!((flags & 0x80 != 0, flags & 0x09 != 0), (i == 0, i == 6), "part {i}: {flags:#x}");
            assert_eq!(u16::from_be_bytes([p[4], p[5]]), 7 + i as u16);
            joined.extend_from_slice(&p[40..]);
        }
        assert_eq!(joined, data);
        // Fitted to an envelope: whole segments per part, each part a super-packet.
        let fitted = fit(&sup, 1_448, 4_000).unwrap();
        assert_eq!(fitted.iter().map(|p| p.len() - 40).collect::<Vec<_>>(), [2_896, 2_896, 2_896, 1_312]);
        assert!(fitted.iter().all(|p| checksums_hold(p)));
        assert_eq!(fit(&sup, 1_448, 20_000).unwrap(), vec![sup.clone()]);
        assert!(fit(&sup, 1_448, 1_000).is_err(), "no whole segment fits");
    }

    /// Bad bytes are refused with what was wrong, never a panic: a header cut short, a
    /// GSO type for the other IP version or not TCP, a zero segment size, a checksum
    /// offset past the end, a shim with reserved bits.
    #[test]
    fn bad_headers_and_packets_are_refused_with_the_reason() {
        assert_eq!(from_device(&mut [0u8; 5]), Err(Error::Truncated));
        let whole = tcp4(&payload(3_000), 0x10);
        let with = |h: VnetHdr| [h.emit().as_slice(), &whole].concat();
        let v6 = VnetHdr { gso_type: GSO_TCPV6, gso_size: 1_000, ..Default::default() };
        assert_eq!(from_device(&mut with(v6)), Err(Error::Malformed("GSO type for the IP version")));
        let udp = VnetHdr { gso_type: 5, gso_size: 1_000, ..Default::default() };
        assert_eq!(from_device(&mut with(udp)), Err(Error::Unsupported("GSO type (not TCP)")));
        let zero = VnetHdr { gso_type: GSO_TCPV4, ..Default::default() };
        assert_eq!(from_device(&mut with(zero)), Err(Error::Malformed("GSO segment size (zero)")));
        let past = VnetHdr { flags: F_NEEDS_CSUM, csum_start: 3_000, csum_offset: 100, ..Default::default() };
        assert_eq!(from_device(&mut with(past)), Err(Error::Malformed("checksum offset")));
        assert_eq!(cut(&whole, 0), Err(Error::Malformed("segment size (zero)")));
        assert_eq!(cut(&whole[..30], 100), Err(Error::Truncated));
        assert_eq!(unshim(&[SHIM_SEGMENTED, 1, 0, 5]), Err(Error::Malformed("segment shim")));
        assert_eq!(unshim(&[SHIM_SEGMENTED, 0]), Err(Error::Truncated));
        let shimmed = [shim(1_448).unwrap().as_slice(), &whole].concat();
        assert_eq!(unshim(&shimmed), Ok((1_448, &whole[..])));
        assert_eq!(unshim(&whole), Ok((0, &whole[..])));
        assert_eq!(shim(0), None);
    }

    /// The wide sum is the plain 16-bit one's-complement sum, for every length's tail.
    #[test]
    fn the_eight_byte_sum_is_the_sixteen_bit_sum() {
        let data = payload(1_031);
        for n in 0..data.len() {
            let d = &data[..n];
            let plain: u64 = d.chunks(2).map(|c| u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
            assert_eq!(fold(add(0, d)), fold(plain), "{n} bytes");
        }
    }
}
