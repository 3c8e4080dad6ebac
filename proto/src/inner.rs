//! Views of the inner IP packet the cores carry: the flow key a packet belongs to, and
//! rewriting its addresses (the CLB's destination NAT) with checksums kept valid.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    IpAddress, IpProtocol, IpRepr, Ipv4Packet, Ipv6Packet, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber, UdpPacket,
    UdpRepr,
};

use crate::{Error, Result};

/// The transport a flow uses; TCP-based listeners share one port space, UDP the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Tcp,
    Udp,
}

/// The 5-tuple that names a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub transport: Transport,
    pub src: IpAddr,
    pub src_port: u16,
    pub dst: IpAddr,
    pub dst_port: u16,
}

impl FlowKey {
    /// A stable hash of the 5-tuple: the same on every node, every run (FNV-1a, then a
    /// finaliser), so any POP or CLB node computes the same value for a flow.
    pub fn flow_hash(&self) -> u32 {
        let mut h = Fnv::new();
        h.byte(match self.transport {
            Transport::Tcp => 6,
            Transport::Udp => 17,
        });
        h.addr(self.src);
        h.bytes(&self.src_port.to_be_bytes());
        h.addr(self.dst);
        h.bytes(&self.dst_port.to_be_bytes());
        (mix64(h.finish()) >> 32) as u32
    }

    /// The key of the reply direction.
    pub fn reversed(&self) -> FlowKey {
        let reply = FlowKey {
            transport: self.transport,
            src: self.dst,
            src_port: self.dst_port,
            dst: self.src,
            dst_port: self.src_port,
        };
        debug_assert!(reply.transport == self.transport && reply.dst == self.src, "a reply's key mirrors the flow's");
        reply
    }
}

/// 64-bit FNV-1a, used for hashes that must agree across nodes and runs.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Fnv {
    pub fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    pub fn byte(&mut self, b: u8) {
        self.0 ^= u64::from(b);
        self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
    }
    pub fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.byte(b);
        }
    }
    pub fn addr(&mut self, addr: IpAddr) {
        match addr {
            IpAddr::V4(a) => self.bytes(&a.octets()),
            IpAddr::V6(a) => self.bytes(&a.octets()),
        }
    }
    pub fn finish(&self) -> u64 {
        self.0
    }
}

impl Default for Fnv {
    fn default() -> Self {
        Fnv::new()
    }
}

/// splitmix64's finaliser: spreads FNV's weak low bits over the whole word.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// TCP control bits the CLB's connection tracking looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpFlags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
}

/// What a core needs to know about an inner packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inner {
    pub key: FlowKey,
    /// `None` for UDP.
    pub tcp: Option<TcpFlags>,
    /// Transport payload length in bytes.
    pub payload_len: usize,
    /// TCP acknowledgement number when the ACK bit is set.
    pub ack_number: Option<u32>,
}

/// The source address of an IPv4 or IPv6 packet, whatever it carries (a fragment too).
pub fn source(packet: &[u8]) -> Option<IpAddr> {
    match packet.first().map(|b| b >> 4) {
        Some(4) if packet.len() >= 20 => Some(IpAddr::from(<[u8; 4]>::try_from(&packet[12..16]).ok()?)),
        Some(6) if packet.len() >= 40 => Some(IpAddr::from(<[u8; 16]>::try_from(&packet[8..24]).ok()?)),
        _ => None,
    }
}

/// Reads the flow key and TCP flags of an IPv4 or IPv6 packet carrying TCP or UDP.
pub fn parse(packet: &[u8]) -> Result<Inner> {
    let (src, dst, protocol, transport_bytes) = match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let ip = Ipv4Packet::new_checked(packet).map_err(|_| Error::Truncated)?;
            if ip.more_frags() || ip.frag_offset() != 0 {
                return Err(Error::Unsupported("IPv4 fragment"));
            }
            let src = IpAddr::V4(ip.src_addr());
            let dst = IpAddr::V4(ip.dst_addr());
            let header_len = usize::from(ip.header_len());
            let total_len = usize::from(ip.total_len());
            debug_assert!(header_len <= total_len && total_len <= packet.len(), "new_checked bounds the datagram");
            (src, dst, ip.next_header(), &packet[header_len..total_len])
        }
        Some(6) => {
            let ip = Ipv6Packet::new_checked(packet).map_err(|_| Error::Truncated)?;
            let src = IpAddr::V6(ip.src_addr());
            let dst = IpAddr::V6(ip.dst_addr());
            let start = ip.header_len();
            let end = start + usize::from(ip.payload_len());
            debug_assert!(end <= packet.len(), "new_checked bounds the payload");
            (src, dst, ip.next_header(), &packet[start..end])
        }
        Some(_) => return Err(Error::Malformed("IP version")),
        None => return Err(Error::Truncated),
    };
    match protocol {
        IpProtocol::Udp => {
            let udp = UdpPacket::new_checked(transport_bytes).map_err(|_| Error::Truncated)?;
            let key =
                FlowKey { transport: Transport::Udp, src, src_port: udp.src_port(), dst, dst_port: udp.dst_port() };
            Ok(Inner { key, tcp: None, payload_len: udp.payload().len(), ack_number: None })
        }
        IpProtocol::Tcp => {
            let tcp = TcpPacket::new_checked(transport_bytes).map_err(|_| Error::Truncated)?;
            let key =
                FlowKey { transport: Transport::Tcp, src, src_port: tcp.src_port(), dst, dst_port: tcp.dst_port() };
            let flags = TcpFlags { syn: tcp.syn(), ack: tcp.ack(), fin: tcp.fin(), rst: tcp.rst() };
            let ack_number = tcp.ack().then(|| tcp.ack_number().0 as u32);
            Ok(Inner { key, tcp: Some(flags), payload_len: tcp.payload().len(), ack_number })
        }
        _ => Err(Error::Unsupported("transport (not TCP or UDP)")),
    }
}

/// One endpoint of a rewrite: the new address and port.
pub type Endpoint = (IpAddr, u16);

/// Re-addresses a packet into a new buffer: new source and destination endpoints, in
/// either IP family (NAT64 when the families differ from the packet's). The transport
/// segment is carried over with its ports replaced and its checksum recomputed.
pub fn translate(packet: &[u8], src: Endpoint, dst: Endpoint) -> Result<Vec<u8>> {
    let info = parse(packet)?;
    let segment = transport_segment(packet).ok_or(Error::Truncated)?;
    let (src_ip, dst_ip) = ip_pair(src.0, dst.0).ok_or(Error::Malformed("translation across IP families"))?;
    let protocol = match info.key.transport {
        Transport::Tcp => IpProtocol::Tcp,
        Transport::Udp => IpProtocol::Udp,
    };
    let hop_limit = match packet[0] >> 4 {
        4 => Ipv4Packet::new_checked(packet).map_err(|_| Error::Truncated)?.hop_limit(),
        _ => Ipv6Packet::new_checked(packet).map_err(|_| Error::Truncated)?.hop_limit(),
    };
    let ip = IpRepr::new(src_ip, dst_ip, protocol, segment.len(), hop_limit);
    let mut out = vec![0u8; ip.buffer_len()];
    ip.emit(&mut out[..], &ChecksumCapabilities::default());
    let header_len = ip.header_len();
    debug_assert_eq!(out.len() - header_len, segment.len(), "the new header sized for the segment");
    out[header_len..].copy_from_slice(segment);
    let transport = &mut out[header_len..];
    match info.key.transport {
        Transport::Udp => {
            let mut udp = UdpPacket::new_unchecked(transport);
            udp.set_src_port(src.1);
            udp.set_dst_port(dst.1);
            udp.fill_checksum(&src_ip, &dst_ip);
        }
        Transport::Tcp => {
            let mut tcp = TcpPacket::new_unchecked(transport);
            tcp.set_src_port(src.1);
            tcp.set_dst_port(dst.1);
            tcp.fill_checksum(&src_ip, &dst_ip);
        }
    }
    debug_assert_eq!(
        parse(&out).map(|i| (i.key.src, i.key.src_port, i.key.dst, i.key.dst_port)).ok(),
        Some((src.0, src.1, dst.0, dst.1))
    );
    Ok(out)
}

/// [`translate`] in place where it can be (the same IP family, no bytes past the IP
/// packet): a rewrite whose checksums follow what changed, no copy, no pass over the
/// payload; a copy by [`translate`] otherwise.
pub fn readdress(packet: &mut Vec<u8>, src: Endpoint, dst: Endpoint) -> Result<()> {
    let same_family = match packet.first().map(|b| b >> 4) {
        Some(4) => {
            src.0.is_ipv4()
                && dst.0.is_ipv4()
                && packet.len() >= 4
                && usize::from(u16::from_be_bytes([packet[2], packet[3]])) == packet.len()
        }
        Some(6) => {
            src.0.is_ipv6()
                && dst.0.is_ipv6()
                && packet.len() >= 6
                && 40 + usize::from(u16::from_be_bytes([packet[4], packet[5]])) == packet.len()
        }
        _ => false,
    };
    if same_family && rewrite(packet, Some(src), Some(dst)).is_ok() {
        return Ok(());
    }
    *packet = translate(packet, src, dst)?;
    Ok(())
}

/// TCP option kind carrying the client's IPv4 address and port (TOA, 8 bytes).
pub const TOA_V4: u8 = 254;
/// TCP option kind carrying the client's IPv6 address and port (20 bytes).
pub const TOA_V6: u8 = 253;

/// The TOA option that tells a backend behind SNAT who the client is.
pub fn toa_option(client: Endpoint) -> Vec<u8> {
    let mut opt = match client.0 {
        IpAddr::V4(_) => vec![TOA_V4, 8],
        IpAddr::V6(_) => vec![TOA_V6, 20],
    };
    opt.extend_from_slice(&client.1.to_be_bytes());
    match client.0 {
        IpAddr::V4(a) => opt.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => opt.extend_from_slice(&a.octets()),
    }
    debug_assert_eq!(opt.len(), usize::from(opt[1]), "an option's length byte counts it whole");
    opt
}

/// Appends a TCP option to a segment's options (padded with NOPs to a 4-byte boundary),
/// growing the header. An error when the header would pass 60 bytes or it is no TCP.
pub fn insert_tcp_option(packet: &[u8], option: &[u8]) -> Result<Vec<u8>> {
    let info = parse(packet)?;
    if info.key.transport != Transport::Tcp {
        return Err(Error::Unsupported("TCP option on a non-TCP packet"));
    }
    let segment = transport_segment(packet).ok_or(Error::Truncated)?;
    let tcp = TcpPacket::new_checked(segment).map_err(|_| Error::Truncated)?;
    let old_header = usize::from(tcp.header_len());
    // Options end at the first End-of-List: the new one goes before it, not after.
    let options = tcp.options();
    let used = options_in_use(options);
    let new_header = (20 + used + option.len()).div_ceil(4) * 4;
    debug_assert!(used <= old_header - 20 && new_header.is_multiple_of(4));
    if new_header > 60 {
        return Err(Error::Malformed("TCP header full (no room for the option)"));
    }
    let mut new_segment = Vec::with_capacity(segment.len() + new_header - old_header);
    new_segment.extend_from_slice(&segment[..20 + used]);
    new_segment.extend_from_slice(option);
    new_segment.resize(new_header, 0); // End-of-List padding
    new_segment.extend_from_slice(&segment[old_header..]);
    TcpPacket::new_unchecked(&mut new_segment[..]).set_header_len(new_header as u8);
    let ip_header = packet.len() - segment.len() - trailing(packet, segment.len())?;
    let mut out = packet[..ip_header].to_vec();
    out.extend_from_slice(&new_segment);
    fix_ip_lengths(&mut out, new_segment.len())?;
    fill_checksums(&mut out)?;
    debug_assert_eq!(parse(&out).map(|i| i.key).ok(), Some(info.key), "an option changes no address or port");
    Ok(out)
}

/// Whether a TCP segment's options carry a TOA option (either family's kind).
pub fn has_toa(packet: &[u8]) -> bool {
    let Some(tcp) = transport_segment(packet).and_then(|s| TcpPacket::new_checked(s).ok()) else { return false };
    let options = tcp.options();
    let mut at = 0;
    while at < options.len() {
        match options[at] {
            0 => return false,
            1 => at += 1,
            TOA_V4 | TOA_V6 => return true,
            _ => match options.get(at + 1) {
                Some(&len) if len >= 2 => at += usize::from(len),
                _ => return false,
            },
        }
    }
    false
}

/// The segment without its TOA options (a client's claim of who it is) and without NOP
/// padding, the rest of its options kept in order and the header shrunk to fit; what
/// follows a malformed option is dropped with it (the options before it are kept). An
/// error when it is no TCP.
pub fn strip_toa(packet: &[u8]) -> Result<Vec<u8>> {
    let info = parse(packet)?;
    if info.key.transport != Transport::Tcp {
        return Err(Error::Unsupported("TCP options on a non-TCP packet"));
    }
    let segment = transport_segment(packet).ok_or(Error::Truncated)?;
    let tcp = TcpPacket::new_checked(segment).map_err(|_| Error::Truncated)?;
    let old_header = usize::from(tcp.header_len());
    let options = tcp.options();
    let mut kept = Vec::with_capacity(options.len());
    let mut at = 0;
    while at < options.len() {
        match options[at] {
            0 => break,
            1 => at += 1,
            kind => match options.get(at + 1) {
                Some(&len) if len >= 2 && at + usize::from(len) <= options.len() => {
                    if kind != TOA_V4 && kind != TOA_V6 {
                        kept.extend_from_slice(&options[at..at + usize::from(len)]);
                    }
                    at += usize::from(len);
                }
                _ => break,
            },
        }
    }
    let new_header = (20 + kept.len()).div_ceil(4) * 4;
    let mut new_segment = Vec::with_capacity(segment.len());
    new_segment.extend_from_slice(&segment[..20]);
    new_segment.extend_from_slice(&kept);
    new_segment.resize(new_header, 0); // End-of-List padding
    new_segment.extend_from_slice(&segment[old_header..]);
    TcpPacket::new_unchecked(&mut new_segment[..]).set_header_len(new_header as u8);
    let ip_header = packet.len() - segment.len() - trailing(packet, segment.len())?;
    let mut out = packet[..ip_header].to_vec();
    out.extend_from_slice(&new_segment);
    fix_ip_lengths(&mut out, new_segment.len())?;
    fill_checksums(&mut out)?;
    debug_assert!(!has_toa(&out), "every TOA went");
    debug_assert_eq!(parse(&out).map(|i| i.key).ok(), Some(info.key), "stripping changes no address or port");
    Ok(out)
}

/// Bytes of a TCP options area before its End-of-List (or its end).
fn options_in_use(options: &[u8]) -> usize {
    let mut at = 0;
    while at < options.len() {
        match options[at] {
            0 => break,
            1 => at += 1,
            _ => match options.get(at + 1) {
                Some(&len) if len >= 2 && at + usize::from(len) <= options.len() => at += usize::from(len),
                _ => break,
            },
        }
    }
    debug_assert!(at <= options.len());
    at
}

/// Bytes after the IP datagram in the buffer (link padding), so headers can be cut.
fn trailing(packet: &[u8], segment_len: usize) -> Result<usize> {
    let header = match packet.first().map(|b| b >> 4) {
        Some(4) => usize::from(Ipv4Packet::new_checked(packet).map_err(|_| Error::Truncated)?.header_len()),
        _ => Ipv6Packet::new_checked(packet).map_err(|_| Error::Truncated)?.header_len(),
    };
    debug_assert!(header + segment_len <= packet.len(), "the segment is this packet's");
    Ok(packet.len() - header - segment_len)
}

fn fix_ip_lengths(packet: &mut [u8], segment_len: usize) -> Result<()> {
    match packet[0] >> 4 {
        4 => {
            let mut ip = Ipv4Packet::new_unchecked(&mut *packet);
            let header = usize::from(ip.header_len());
            ip.set_total_len((header + segment_len) as u16);
        }
        _ => Ipv6Packet::new_unchecked(&mut *packet).set_payload_len(segment_len as u16),
    }
    debug_assert_eq!(transport_segment(packet).map(<[u8]>::len), Some(segment_len), "the lengths cover the segment");
    Ok(())
}

/// A TCP header's options as (kind, body), in order, up to the end-of-list option or the
/// first malformed one (a length under 2 or past the end).
fn tcp_options(mut options: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        loop {
            let (&kind, rest) = options.split_first()?;
            match kind {
                0 => return None,
                1 => options = rest,
                _ => {
                    let len = usize::from(*rest.first()?);
                    if len < 2 || len > options.len() {
                        return None;
                    }
                    let body = &options[2..len];
                    options = &options[len..];
                    return Some((kind, body));
                }
            }
        }
    })
}

/// The client endpoint a TOA option in a TCP segment names, if it carries one.
pub fn read_toa(packet: &[u8]) -> Option<Endpoint> {
    let segment = transport_segment(packet)?;
    let tcp = TcpPacket::new_checked(segment).ok()?;
    tcp_options(tcp.options()).find_map(|(kind, body)| match (kind, body.len()) {
        (TOA_V4, 6) => {
            let port = u16::from_be_bytes([body[0], body[1]]);
            Some((IpAddr::V4(Ipv4Addr::new(body[2], body[3], body[4], body[5])), port))
        }
        (TOA_V6, 18) => {
            let port = u16::from_be_bytes([body[0], body[1]]);
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[2..18]);
            Some((IpAddr::V6(Ipv6Addr::from(octets)), port))
        }
        _ => None,
    })
}

/// Rewrites the source and/or destination of a packet in place and recomputes the IP
/// and transport checksums. Both addresses must stay in the packet's IP family.
pub fn rewrite(packet: &mut [u8], new_src: Option<Endpoint>, new_dst: Option<Endpoint>) -> Result<()> {
    let info = parse(packet)?;
    let src = new_src.map_or(info.key.src, |e| e.0);
    let dst = new_dst.map_or(info.key.dst, |e| e.0);
    let header_len = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) if packet[0] >> 4 == 4 => rewrite_v4_header(packet, s, d)?,
        (IpAddr::V6(s), IpAddr::V6(d)) if packet[0] >> 4 == 6 => rewrite_v6_header(packet, s, d)?,
        _ => return Err(Error::Malformed("rewrite across IP families")),
    };
    let transport = &mut packet[header_len..];
    let (src_port, dst_port) = (new_src.map_or(info.key.src_port, |e| e.1), new_dst.map_or(info.key.dst_port, |e| e.1));
    transport[0..2].copy_from_slice(&src_port.to_be_bytes());
    transport[2..4].copy_from_slice(&dst_port.to_be_bytes());
    // The checksum follows what changed (RFC 1624): a pass over a 64 KiB super-packet's
    // payload for four addresses and ports would cost more than the rest of its rewrite.
    let at = match info.key.transport {
        Transport::Udp => 6,
        Transport::Tcp => 16,
    };
    let check = u16::from_be_bytes([transport[at], transport[at + 1]]);
    // An IPv4 UDP datagram without a checksum (0) stays without one.
    if !(info.key.transport == Transport::Udp && check == 0) {
        let old = words(info.key.src, info.key.src_port) + words(info.key.dst, info.key.dst_port);
        let new = words(src, src_port) + words(dst, dst_port);
        let sum = u64::from(!check) + u64::from(!crate::offload::fold(old)) + u64::from(crate::offload::fold(new));
        let mut check = !crate::offload::fold(sum);
        if info.key.transport == Transport::Udp && check == 0 {
            check = 0xffff;
        }
        transport[at..at + 2].copy_from_slice(&check.to_be_bytes());
    }
    debug_assert_eq!(parse(packet).map(|i| (i.key.src, i.key.dst)).ok(), Some((src, dst)));
    Ok(())
}

/// Hop limit (TTL) of packets the cores originate.
pub const HOP_LIMIT: u8 = 64;

/// Builds an IP/UDP datagram. `None` when the endpoints are of different IP families
/// or the payload does not fit in one datagram.
pub fn build_udp(src: Endpoint, dst: Endpoint, payload: &[u8]) -> Option<Vec<u8>> {
    let udp = UdpRepr { src_port: src.1, dst_port: dst.1 };
    let (src_ip, dst_ip) = ip_pair(src.0, dst.0)?;
    let udp_len = udp.header_len() + payload.len();
    if udp_len > usize::from(u16::MAX) - 40 {
        return None;
    }
    let ip = IpRepr::new(src_ip, dst_ip, IpProtocol::Udp, udp_len, HOP_LIMIT);
    let mut buf = vec![0u8; ip.buffer_len()];
    let caps = ChecksumCapabilities::default();
    ip.emit(&mut buf[..], &caps);
    let mut packet = UdpPacket::new_unchecked(&mut buf[ip.header_len()..]);
    udp.emit(&mut packet, &src_ip, &dst_ip, payload.len(), |b| b.copy_from_slice(payload), &caps);
    debug_assert_eq!(
        parse(&buf).map(|i| (i.key.src_port, i.key.dst_port, i.payload_len)).ok(),
        Some((src.1, dst.1, payload.len()))
    );
    Some(buf)
}

/// Builds an IP/TCP segment from a smoltcp `TcpRepr`.
pub fn build_tcp(src: IpAddr, dst: IpAddr, tcp: &TcpRepr<'_>) -> Option<Vec<u8>> {
    let (src_ip, dst_ip) = ip_pair(src, dst)?;
    let ip = IpRepr::new(src_ip, dst_ip, IpProtocol::Tcp, tcp.buffer_len(), HOP_LIMIT);
    let mut buf = vec![0u8; ip.buffer_len()];
    let caps = ChecksumCapabilities::default();
    ip.emit(&mut buf[..], &caps);
    let mut packet = TcpPacket::new_unchecked(&mut buf[ip.header_len()..]);
    tcp.emit(&mut packet, &src_ip, &dst_ip, &caps);
    debug_assert_eq!(parse(&buf).map(|i| (i.key.src, i.key.dst, i.key.dst_port)).ok(), Some((src, dst, tcp.dst_port)));
    Some(buf)
}

fn ip_pair(src: IpAddr, dst: IpAddr) -> Option<(IpAddress, IpAddress)> {
    match (src, dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => Some((src.into(), dst.into())),
        _ => None,
    }
}

/// The RST a host answers a TCP segment with when no connection or listener takes it
/// (RFC 9293 §3.10.7.1). `None` for non-TCP packets and for segments that are resets.
pub fn tcp_reset_for(packet: &[u8]) -> Option<Vec<u8>> {
    let info = parse(packet).ok()?;
    let flags = info.tcp?;
    if flags.rst {
        return None;
    }
    let tcp = TcpPacket::new_checked(transport_segment(packet)?).ok()?;
    let seg_len = info.payload_len as i32 + i32::from(flags.syn) + i32::from(flags.fin);
    let (seq, ack) = if flags.ack {
        (tcp.ack_number().0 as u32, None)
    } else {
        (0, Some((tcp.seq_number() + seg_len as usize).0 as u32))
    };
    let repr = bare_tcp(info.key.dst_port, info.key.src_port, TcpControl::Rst, seq, ack, None);
    let rst = build_tcp(info.key.dst, info.key.src, &repr)?;
    debug_assert!(parse(&rst).is_ok_and(|i| i.key == info.key.reversed() && i.tcp.is_some_and(|f| f.rst)));
    Some(rst)
}

/// A TCP segment with no payload: SYNs, resets, health probes.
pub fn bare_tcp(
    src_port: u16,
    dst_port: u16,
    control: TcpControl,
    seq: u32,
    ack: Option<u32>,
    max_seg_size: Option<u16>,
) -> TcpRepr<'static> {
    TcpRepr {
        src_port,
        dst_port,
        control,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
        window_len: if control == TcpControl::Rst { 0 } else { 64_240 },
        window_scale: None,
        max_seg_size,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    }
}

/// A TCP segment's sequence and acknowledgement numbers and its MSS option, if any.
pub fn tcp_numbers(packet: &[u8]) -> Option<(u32, u32, Option<u16>)> {
    let tcp = TcpPacket::new_checked(transport_segment(packet)?).ok()?;
    let mss = tcp_options(tcp.options()).find_map(|(kind, body)| match (kind, body) {
        (2, &[a, b]) => Some(u16::from_be_bytes([a, b])),
        _ => None,
    });
    Some((tcp.seq_number().0 as u32, tcp.ack_number().0 as u32, mss))
}

/// A TCP segment's window scale option (RFC 7323), if it carries one.
pub fn tcp_window_scale(packet: &[u8]) -> Option<u8> {
    let tcp = TcpPacket::new_checked(transport_segment(packet)?).ok()?;
    tcp_options(tcp.options()).find_map(|(kind, body)| match (kind, body) {
        (3, &[shift]) => Some(shift),
        _ => None,
    })
}

/// Where an IP packet's TCP segment is, and its addresses: one look at the IP header (no
/// full parse: this runs on every segment of a spliced connection).
fn tcp_place(packet: &[u8]) -> Result<(std::ops::Range<usize>, IpAddress, IpAddress)> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let ip = Ipv4Packet::new_checked(packet).map_err(|_| Error::Truncated)?;
            if ip.next_header() != IpProtocol::Tcp {
                return Err(Error::Malformed("not TCP"));
            }
            let range = usize::from(ip.header_len())..usize::from(ip.total_len());
            Ok((range, IpAddress::Ipv4(ip.src_addr()), IpAddress::Ipv4(ip.dst_addr())))
        }
        Some(6) => {
            let ip = Ipv6Packet::new_checked(packet).map_err(|_| Error::Truncated)?;
            if ip.next_header() != IpProtocol::Tcp {
                return Err(Error::Malformed("not TCP"));
            }
            let range = ip.header_len()..ip.header_len() + usize::from(ip.payload_len());
            Ok((range, IpAddress::Ipv6(ip.src_addr()), IpAddress::Ipv6(ip.dst_addr())))
        }
        _ => Err(Error::Malformed("not IP")),
    }
}

/// Lowers the MSS option of a TCP SYN (or SYN-ACK) to at most `max` and refills the
/// checksum, in place; whether it changed anything. What a tunnel's entrance does
/// (RFC 4459 §3.2, "MSS clamping"): its envelope adds bytes the endpoints do not know
/// of, and a connection whose segments fit the tunnel whole is never fragmented in it.
/// A segment that is not a SYN, or has no MSS option, or a smaller one, is left as is.
pub fn clamp_mss(packet: &mut [u8], max: u16) -> Result<bool> {
    let (range, src, dst) = tcp_place(packet)?;
    let tcp =
        TcpPacket::new_checked(packet.get(range.clone()).ok_or(Error::Truncated)?).map_err(|_| Error::Truncated)?;
    if !tcp.syn() {
        return Ok(false);
    }
    // The first MSS option (as `tcp_numbers` and a receiver's stack read it): its value,
    // and where that value sits in the options.
    let options = tcp.options();
    let found = tcp_options(options).find_map(|(kind, body)| match (kind, body) {
        (2, &[a, b]) => Some((body.as_ptr() as usize - options.as_ptr() as usize, u16::from_be_bytes([a, b]))),
        _ => None,
    });
    let Some((value_at, mss)) = found.filter(|&(_, mss)| mss > max) else { return Ok(false) };
    let mut tcp = TcpPacket::new_unchecked(&mut packet[range]);
    tcp.options_mut()[value_at..value_at + 2].copy_from_slice(&max.to_be_bytes());
    tcp.fill_checksum(&src, &dst);
    debug_assert!(tcp_numbers(packet).is_some_and(|(_, _, m)| m == Some(max)) && mss > max);
    Ok(true)
}

/// Moves a TCP segment's sequence number by `seq_add` and, when it has the ACK flag, its
/// acknowledgement number and its SACK blocks' edges (which number the same bytes) back
/// by `ack_sub` (all modulo 2^32), and refills the checksum:
/// what a SYN proxy does to every segment of a connection it spliced (the client's
/// numbers for the node's stack on the way in, the stack's for the client's on the way
/// out).
pub fn shift_tcp(packet: &mut [u8], seq_add: u32, ack_sub: u32) -> Result<()> {
    let (range, src, dst) = tcp_place(packet)?;
    let segment = packet.get_mut(range).ok_or(Error::Truncated)?;
    let mut tcp = TcpPacket::new_checked(segment).map_err(|_| Error::Truncated)?;
    // Plain wrapping arithmetic: smoltcp's `+` panics past i32::MAX.
    let seq = tcp.seq_number().0 as u32;
    tcp.set_seq_number(TcpSeqNumber(seq.wrapping_add(seq_add) as i32));
    debug_assert_eq!((tcp.seq_number().0 as u32).wrapping_sub(seq), seq_add);
    if tcp.ack() {
        let ack = (tcp.ack_number().0 as u32).wrapping_sub(ack_sub);
        tcp.set_ack_number(TcpSeqNumber(ack as i32));
        shift_sack_blocks(tcp.options_mut(), ack_sub);
    }
    tcp.fill_checksum(&src, &dst);
    Ok(())
}

/// Moves every edge of a SACK option's blocks (RFC 2018) back by `sub`; options past a
/// malformed one are left as they are (the stack reading them stops there too).
fn shift_sack_blocks(options: &mut [u8], sub: u32) {
    let mut at = 0;
    while let Some(&kind) = options.get(at) {
        match kind {
            0 => return,
            1 => at += 1,
            _ => {
                let Some(len) = options.get(at + 1).map(|&l| usize::from(l)) else { return };
                let Some(body) = options.get_mut(at + 2..at + len).filter(|_| len >= 2) else { return };
                if kind == 5 {
                    for edge in body.chunks_exact_mut(4) {
                        let moved = u32::from_be_bytes([edge[0], edge[1], edge[2], edge[3]]).wrapping_sub(sub);
                        edge.copy_from_slice(&moved.to_be_bytes());
                    }
                }
                at += len;
            }
        }
    }
}

/// Whether a TCP segment (a SYN) carries the SACK-permitted option (RFC 2018).
pub fn tcp_sack_permitted(packet: &[u8]) -> bool {
    let Some(tcp) = transport_segment(packet).and_then(|t| TcpPacket::new_checked(t).ok()) else { return false };
    tcp_options(tcp.options()).any(|(kind, body)| kind == 4 && body.is_empty())
}

/// The transport segment (header and payload) inside an IP packet.
fn transport_segment(packet: &[u8]) -> Option<&[u8]> {
    match packet.first()? >> 4 {
        4 => {
            let ip = Ipv4Packet::new_checked(packet).ok()?;
            packet.get(usize::from(ip.header_len())..usize::from(ip.total_len()))
        }
        6 => {
            let ip = Ipv6Packet::new_checked(packet).ok()?;
            packet.get(ip.header_len()..ip.header_len() + usize::from(ip.payload_len()))
        }
        _ => None,
    }
}

/// The transport payload of a TCP or UDP packet (empty when it cannot be parsed).
pub fn transport_payload(packet: &[u8]) -> &[u8] {
    let Ok(info) = parse(packet) else { return &[] };
    // The segment ends where the IP header says: bytes after it are a link's padding.
    let Some(segment) = transport_segment(packet) else { return &[] };
    debug_assert!(info.payload_len <= segment.len());
    &segment[segment.len() - info.payload_len..]
}

/// Every checksum of a packet whose bytes were changed in place computed again over it
/// (a TCP option inserted or taken out: no change to follow).
fn fill_checksums(packet: &mut [u8]) -> Result<()> {
    let info = parse(packet)?;
    let header_len = match (info.key.src, info.key.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => rewrite_v4_header(packet, s, d)?,
        (IpAddr::V6(s), IpAddr::V6(d)) => rewrite_v6_header(packet, s, d)?,
        _ => return Err(Error::Malformed("IP families")),
    };
    let (src, dst) = (IpAddress::from(info.key.src), IpAddress::from(info.key.dst));
    let transport = &mut packet[header_len..];
    match info.key.transport {
        Transport::Udp => UdpPacket::new_unchecked(transport).fill_checksum(&src, &dst),
        Transport::Tcp => TcpPacket::new_unchecked(transport).fill_checksum(&src, &dst),
    }
    Ok(())
}

/// The one's-complement sum (not folded) of an address's 16-bit words and a port.
fn words(ip: IpAddr, port: u16) -> u64 {
    let addr = match ip {
        IpAddr::V4(a) => crate::offload::add(0, &a.octets()),
        IpAddr::V6(a) => crate::offload::add(0, &a.octets()),
    };
    addr + u64::from(port)
}

/// Returns the header length; the slice after it is exactly the transport segment.
fn rewrite_v4_header(packet: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr) -> Result<usize> {
    let len = packet.len();
    let mut ip = Ipv4Packet::new_checked(&mut *packet).map_err(|_| Error::Truncated)?;
    if usize::from(ip.total_len()) != len {
        return Err(Error::Malformed("IPv4 total length (trailing bytes)"));
    }
    ip.set_src_addr(src);
    ip.set_dst_addr(dst);
    ip.fill_checksum();
    debug_assert!(ip.verify_checksum());
    Ok(usize::from(ip.header_len()))
}

fn rewrite_v6_header(packet: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr) -> Result<usize> {
    let len = packet.len();
    let mut ip = Ipv6Packet::new_checked(&mut *packet).map_err(|_| Error::Truncated)?;
    let header_len = ip.header_len();
    if header_len + usize::from(ip.payload_len()) != len {
        return Err(Error::Malformed("IPv6 payload length (trailing bytes)"));
    }
    ip.set_src_addr(src);
    ip.set_dst_addr(dst);
    Ok(header_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::IpVersion;

    fn udp_v4(src: Endpoint, dst: Endpoint, payload: &[u8]) -> Vec<u8> {
        build_udp(src, dst, payload).unwrap()
    }

    /// A SYN proxy's shift moves a client's SACK blocks as it moves the ACK: they number
    /// the proxy's bytes too. The checksum still checks, and the SACK-permitted option of
    /// a SYN is seen.
    #[test]
    fn a_shift_moves_the_sack_blocks_edges_with_the_acknowledgement_number() {
        let (src, dst): (IpAddr, IpAddr) = ("198.18.64.7".parse().unwrap(), "198.18.0.20".parse().unwrap());
        let mut tcp = bare_tcp(4000, 80, TcpControl::None, 7, Some(1_000), None);
        tcp.sack_ranges = [Some((2_000, 3_000)), Some((4_000, 4_500)), Some((u32::MAX - 10, 5))];
        let mut packet = build_tcp(src, dst, &tcp).unwrap();
        shift_tcp(&mut packet, 0, 100).unwrap();
        let ip = Ipv4Packet::new_checked(&packet[..]).unwrap();
        let segment = TcpPacket::new_checked(ip.payload()).unwrap();
        let caps = smoltcp::phy::ChecksumCapabilities::default();
        let repr = TcpRepr::parse(&segment, &IpAddress::from(src), &IpAddress::from(dst), &caps).unwrap();
        assert_eq!(repr.ack_number, Some(TcpSeqNumber(900)));
        assert_eq!(
            repr.sack_ranges,
            [Some((1_900, 2_900)), Some((3_900, 4_400)), Some((u32::MAX - 110, u32::MAX - 94))]
        );
        assert!(!tcp_sack_permitted(&packet), "no SACK-permitted option on this one");
        let mut syn = bare_tcp(4000, 80, TcpControl::Syn, 7, None, Some(1_460));
        syn.sack_permitted = true;
        assert!(tcp_sack_permitted(&build_tcp(src, dst, &syn).unwrap()));
    }

    #[test]
    fn transport_payload_of_built_udp() {
        let pkt = udp_v4(("198.18.1.1".parse().unwrap(), 1), ("198.18.0.10".parse().unwrap(), 2), b"abc");
        assert_eq!(transport_payload(&pkt), b"abc");
        let v6 = build_udp(("fd00::1".parse().unwrap(), 1), ("fd00::2".parse().unwrap(), 2), b"xyz").unwrap();
        assert_eq!(transport_payload(&v6), b"xyz");
        assert!(build_udp(("fd00::1".parse().unwrap(), 1), ("1.2.3.4".parse().unwrap(), 2), b"").is_none());
    }

    /// A rewrite's checksums follow what changed, and come out as a computation over the
    /// whole packet does: TCP and UDP, IPv4 and IPv6, every port, a 60 KB segment; an
    /// IPv4 UDP datagram sent without a checksum keeps none.
    #[test]
    fn a_rewrites_checksums_are_what_a_computation_over_the_whole_packet_gives() {
        let data: Vec<u8> = (0..60_000u32).map(|i| (i * 7 % 253) as u8).collect();
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        for (len, port) in [(0usize, 1u16), (1, 80), (3, 443), (1_400, 65_535), (60_000, 40_000)] {
            let tcp = bare_tcp(port, 7000, TcpControl::Psh, 9, Some(3), None);
            let tcp = TcpRepr { payload: &data[..len], ..tcp };
            let cases = [
                build_tcp(ip("198.18.64.7"), ip("198.18.0.20"), &tcp).unwrap(),
                build_tcp(ip("fd00::7"), ip("fd00::20"), &tcp).unwrap(),
                udp_v4((ip("198.18.64.7"), port), (ip("198.18.0.20"), 7000), &data[..len.min(9_000)]),
            ];
            for pkt in cases {
                let v6 = pkt[0] >> 4 == 6;
                let (src, dst) = if v6 {
                    ((ip("fd00::99"), 1024), (ip("fd00::1"), 8080))
                } else {
                    ((ip("198.18.32.1"), 1024), (ip("198.19.20.40"), 5201))
                };
                let mut ours = pkt.clone();
                rewrite(&mut ours, Some(src), Some(dst)).unwrap();
                let mut full = ours.clone();
                fill_checksums(&mut full).unwrap();
                assert_eq!(ours, full, "{len} bytes from port {port}, IPv6 {v6}");
            }
        }
        let mut bare = udp_v4((ip("198.18.64.7"), 1), (ip("198.18.0.20"), 2), b"no checksum");
        bare[26..28].copy_from_slice(&[0, 0]);
        rewrite(&mut bare, None, Some((ip("198.19.20.40"), 9))).unwrap();
        assert_eq!(&bare[26..28], &[0, 0]);
    }

    /// Bytes past the IP packet's length (a link's padding) are no part of its payload:
    /// the payload ends where the header says the packet does (found by the fuzzer's
    /// super-packet oracle, comparing it with what a cut packet carries).
    #[test]
    fn the_transport_payload_ends_where_the_ip_header_says_the_packet_does() {
        let mut pkt = udp_v4(("198.18.1.1".parse().unwrap(), 1), ("198.18.0.10".parse().unwrap(), 2), b"abc");
        pkt.extend_from_slice(&[0xff, 0xee]);
        assert_eq!(transport_payload(&pkt), b"abc");
        let mut v6 = build_udp(("fd00::1".parse().unwrap(), 1), ("fd00::2".parse().unwrap(), 2), b"xyz").unwrap();
        v6.push(0);
        assert_eq!(transport_payload(&v6), b"xyz");
    }

    #[test]
    fn parses_udp_flow_key() {
        let pkt = udp_v4(("198.18.1.1".parse().unwrap(), 40000), ("198.18.0.10".parse().unwrap(), 7000), b"hello");
        let inner = parse(&pkt).unwrap();
        assert_eq!(inner.key.transport, Transport::Udp);
        assert_eq!(inner.key.src_port, 40000);
        assert_eq!(inner.key.dst_port, 7000);
        assert_eq!(inner.payload_len, 5);
        assert_eq!(IpVersion::of_packet(&pkt).unwrap(), IpVersion::Ipv4);
    }

    #[test]
    fn rewrite_keeps_source_and_checksums_valid() {
        let client: Endpoint = ("198.18.1.1".parse().unwrap(), 40000);
        let mut pkt = udp_v4(client, ("198.18.0.10".parse().unwrap(), 7000), b"hello");
        let backend: Endpoint = ("198.19.1.1".parse().unwrap(), 7001);
        rewrite(&mut pkt, None, Some(backend)).unwrap();
        let inner = parse(&pkt).unwrap();
        assert_eq!((inner.key.src, inner.key.src_port), client);
        assert_eq!((inner.key.dst, inner.key.dst_port), backend);
        let ip = Ipv4Packet::new_checked(&pkt[..]).unwrap();
        assert!(ip.verify_checksum());
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(udp.verify_checksum(&IpAddress::from(client.0), &IpAddress::from(backend.0)));
    }

    #[test]
    fn flow_hash_is_stable_and_direction_sensitive() {
        let key = FlowKey {
            transport: Transport::Udp,
            src: "1.2.3.4".parse().unwrap(),
            src_port: 1,
            dst: "5.6.7.8".parse().unwrap(),
            dst_port: 2,
        };
        assert_eq!(key.flow_hash(), key.flow_hash());
        assert_ne!(key.flow_hash(), key.reversed().flow_hash());
    }

    #[test]
    fn reset_answers_a_stray_segment() {
        let repr = TcpRepr {
            src_port: 40000,
            dst_port: 8080,
            control: smoltcp::wire::TcpControl::None,
            seq_number: smoltcp::wire::TcpSeqNumber(1000),
            ack_number: Some(smoltcp::wire::TcpSeqNumber(5000)),
            window_len: 100,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: b"data",
        };
        let seg = build_tcp("198.18.64.1".parse().unwrap(), "198.19.1.1".parse().unwrap(), &repr).unwrap();
        let rst = tcp_reset_for(&seg).unwrap();
        let info = parse(&rst).unwrap();
        assert!(info.tcp.unwrap().rst);
        assert_eq!((info.key.src_port, info.key.dst_port), (8080, 40000));
        let tcp = TcpPacket::new_checked(transport_segment(&rst).unwrap()).unwrap();
        assert_eq!(tcp.seq_number(), smoltcp::wire::TcpSeqNumber(5000), "RST takes the segment's ACK as its sequence");
        assert_eq!(tcp_reset_for(&rst), None, "a reset is never answered");
    }

    #[test]
    fn nat64_translation_keeps_the_segment_valid() {
        let v6 =
            build_udp(("fd00:66::1".parse().unwrap(), 5000), ("fd00:a::20".parse().unwrap(), 7000), b"hi").unwrap();
        let v4 =
            translate(&v6, ("198.18.32.1".parse().unwrap(), 1024), ("198.19.20.1".parse().unwrap(), 7000)).unwrap();
        let info = parse(&v4).unwrap();
        assert_eq!(info.key.src, "198.18.32.1".parse::<IpAddr>().unwrap());
        assert_eq!((info.key.src_port, info.key.dst_port), (1024, 7000));
        assert_eq!(transport_payload(&v4), b"hi");
        let ip = Ipv4Packet::new_checked(&v4[..]).unwrap();
        assert!(ip.verify_checksum());
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(udp.verify_checksum(&IpAddress::from(info.key.src), &IpAddress::from(info.key.dst)));
        let back =
            translate(&v4, ("fd00:a::20".parse().unwrap(), 7000), ("fd00:66::1".parse().unwrap(), 5000)).unwrap();
        assert_eq!(parse(&back).unwrap().key, parse(&v6).unwrap().key.reversed());
    }

    #[test]
    fn strip_toa_takes_out_every_toa_and_the_padding_and_keeps_the_rest() {
        let mut syn = bare_tcp(40000, 8080, TcpControl::Syn, 1, None, Some(1460));
        syn.window_scale = Some(7);
        let pkt = build_tcp("198.18.32.1".parse().unwrap(), "198.19.1.1".parse().unwrap(), &syn).unwrap();
        let mut with = insert_tcp_option(&pkt, &toa_option(("6.6.6.6".parse().unwrap(), 1))).unwrap();
        with = insert_tcp_option(&with, &[1, 1, 1]).unwrap();
        with = insert_tcp_option(&with, &toa_option(("fd00::6".parse().unwrap(), 2))).unwrap();
        assert!(has_toa(&with) && !has_toa(&pkt));
        let stripped = strip_toa(&with).unwrap();
        assert!(!has_toa(&stripped));
        assert_eq!(read_toa(&stripped), None);
        let ip = Ipv4Packet::new_checked(&stripped[..]).unwrap();
        assert!(ip.verify_checksum());
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(tcp.verify_checksum(&IpAddress::from(ip.src_addr()), &IpAddress::from(ip.dst_addr())));
        let (src, dst) = (IpAddress::from(ip.src_addr()), IpAddress::from(ip.dst_addr()));
        let repr = TcpRepr::parse(&tcp, &src, &dst, &ChecksumCapabilities::default()).unwrap();
        assert_eq!((repr.max_seg_size, repr.window_scale), (Some(1460), Some(7)), "the rest survives");
        assert!(tcp.header_len() < TcpPacket::new_checked(&with[20..]).unwrap().header_len());
        assert!(strip_toa(&build_udp_for_test()).is_err(), "no TCP, no options");
    }

    fn build_udp_for_test() -> Vec<u8> {
        build_udp(("198.18.32.1".parse().unwrap(), 1), ("198.19.1.1".parse().unwrap(), 2), b"x").unwrap()
    }

    #[test]
    fn toa_option_round_trips_in_a_syn() {
        // Window scale and SACK-permitted leave End-of-List padding, as smoltcp's SYNs do.
        let mut syn = bare_tcp(40000, 8080, TcpControl::Syn, 1, None, Some(1460));
        syn.window_scale = Some(7);
        syn.sack_permitted = true;
        let pkt = build_tcp("198.18.32.1".parse().unwrap(), "198.19.1.1".parse().unwrap(), &syn).unwrap();
        for client in [("198.18.66.7".parse().unwrap(), 5555), ("fd00:66::7".parse().unwrap(), 6666)] {
            let with = insert_tcp_option(&pkt, &toa_option(client)).unwrap();
            assert_eq!(read_toa(&with), Some(client));
            let ip = Ipv4Packet::new_checked(&with[..]).unwrap();
            assert!(ip.verify_checksum());
            let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
            assert!(tcp.verify_checksum(&IpAddress::from(ip.src_addr()), &IpAddress::from(ip.dst_addr())));
            assert!(tcp.syn());
            let repr = TcpRepr::parse(
                &tcp,
                &IpAddress::from(ip.src_addr()),
                &IpAddress::from(ip.dst_addr()),
                &ChecksumCapabilities::default(),
            )
            .unwrap();
            assert_eq!(repr.max_seg_size, Some(1460), "existing options survive");
            assert_eq!(repr.window_scale, Some(7));
        }
        assert_eq!(read_toa(&pkt), None);
    }

    #[test]
    fn garbage_is_an_error() {
        for bytes in [&[][..], &[0x45][..], &[0x60, 0, 0][..], &[0x10; 40][..]] {
            assert!(parse(bytes).is_err());
        }
    }
}
