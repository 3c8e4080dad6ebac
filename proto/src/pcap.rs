//! Packet captures: the pcap file format (nanosecond timestamps, raw IP link type) and
//! the well-known UDP ports the backbone's envelopes travel on, so a capture of either
//! driver reads the same in tshark/Wireshark with the dissector in
//! `tools/wireshark/anyedge.lua`. Backbone datagrams are written as IPv4/UDP packets
//! between addresses derived from the envelope's node ids (10.KIND.REGION.N).

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};

use crate::seal;

/// CCN data (POP ↔ CLB node).
pub const TUNNEL_PORT: u16 = 6081;
/// CLB node ↔ backend host (and egress node).
pub const BACKEND_PORT: u16 = 6082;
/// Connection-table sync between a region's CLB nodes.
pub const SYNC_PORT: u16 = 6084;
/// Liveness probes and their answers.
pub const HEALTH_PORT: u16 = 6090;

/// pcap with nanosecond timestamps.
const MAGIC_NS: u32 = 0xa1b2_3c4d;
/// LINKTYPE_RAW: each record is an IPv4 or IPv6 packet.
const LINKTYPE_RAW: u32 = 101;
/// Longest record kept.
pub const SNAPLEN: u32 = 65_535;

/// The file header.
pub fn file_header() -> [u8; 24] {
    file_header_snap(SNAPLEN)
}

/// The header of a capture whose records keep at most `snaplen` bytes of each packet.
pub fn file_header_snap(snaplen: u32) -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&MAGIC_NS.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    h[16..20].copy_from_slice(&snaplen.min(SNAPLEN).to_le_bytes());
    h[20..24].copy_from_slice(&LINKTYPE_RAW.to_le_bytes());
    h
}

/// Writes one record stamped `at_ns` (since the capture's epoch).
pub fn write_record(out: &mut impl Write, at_ns: u64, packet: &[u8]) -> std::io::Result<()> {
    write_record_snap(out, at_ns, packet, SNAPLEN)
}

/// [`write_record`] keeping at most `snaplen` bytes (the record says the packet's whole
/// length, as tcpdump's `-s` does).
pub fn write_record_snap(out: &mut impl Write, at_ns: u64, packet: &[u8], snaplen: u32) -> std::io::Result<()> {
    let kept = &packet[..packet.len().min(snaplen.min(SNAPLEN) as usize)];
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&((at_ns / 1_000_000_000) as u32).to_le_bytes());
    h[4..8].copy_from_slice(&((at_ns % 1_000_000_000) as u32).to_le_bytes());
    h[8..12].copy_from_slice(&(kept.len() as u32).to_le_bytes());
    h[12..16].copy_from_slice(&(packet.len() as u32).to_le_bytes());
    out.write_all(&h)?;
    out.write_all(kept)
}

/// The address a capture gives a backbone node id: 10.KIND.REGION.N.
pub fn node_addr(wire: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, (wire >> 28) as u8, (wire >> 12) as u8, wire as u8)
}

/// The UDP port an envelope of `kind` travels on.
pub fn port_of(kind: seal::Kind) -> u16 {
    match kind {
        seal::Kind::Data => TUNNEL_PORT,
        seal::Kind::Backend => BACKEND_PORT,
        seal::Kind::Sync => SYNC_PORT,
        seal::Kind::Probe | seal::Kind::ProbeAnswer => HEALTH_PORT,
    }
}

/// What a capture records for a datagram that arrived: an IP packet as it is; a backbone
/// envelope inside an IPv4/UDP packet between its sender and receiver; anything else
/// inside UDP on `fallback_port`.
pub fn frame(bytes: &[u8], fallback_port: u16) -> Option<Vec<u8>> {
    if crate::inner::parse(bytes).is_ok() {
        return Some(bytes.to_vec());
    }
    let (src, dst, port) = match seal::Packet::new_checked(bytes) {
        Ok(p) => {
            let port = seal::Kind::from_u8(p.kind_raw()).map_or(fallback_port, port_of);
            (node_addr(p.sender()), node_addr(p.receiver()), port)
        }
        Err(_) => (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), fallback_port),
    };
    crate::inner::build_udp((IpAddr::V4(src), port), (IpAddr::V4(dst), port), bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_seconds_and_nanoseconds_and_envelopes_get_a_udp_frame() {
        let mut out = file_header().to_vec();
        let ip =
            crate::inner::build_udp(("198.18.64.1".parse().unwrap(), 1), ("198.18.0.20".parse().unwrap(), 2), b"x")
                .unwrap();
        write_record(&mut out, 3_000_000_123, &ip).unwrap();
        assert_eq!(u32::from_le_bytes(out[0..4].try_into().unwrap()), MAGIC_NS);
        assert_eq!(u32::from_le_bytes(out[24..28].try_into().unwrap()), 3);
        assert_eq!(u32::from_le_bytes(out[28..32].try_into().unwrap()), 123);
        assert_eq!(&out[40..], &ip[..]);
        assert_eq!(frame(&ip, 1).unwrap(), ip, "IP packets as they are");
        let env =
            seal::Repr { kind: seal::Kind::Data, salt: 0, sender: 1 << 28 | 3, receiver: 2 << 28 | 1 << 12, seq: 9 }
                .emit(b"payload");
        let framed = frame(&env, 1).unwrap();
        let info = crate::inner::parse(&framed).unwrap();
        assert_eq!(info.key.src, IpAddr::V4(Ipv4Addr::new(10, 1, 0, 3)));
        assert_eq!(info.key.dst, IpAddr::V4(Ipv4Addr::new(10, 2, 1, 0)));
        assert_eq!(info.key.dst_port, TUNNEL_PORT);
        assert_eq!(crate::inner::transport_payload(&framed), &env[..]);
    }
}
