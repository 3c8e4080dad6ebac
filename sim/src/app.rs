//! Application payloads of simulated traffic. UDP: an echo whose reply names the backend
//! that answered and the client address it saw. TCP: a request header announcing the
//! response size; the response opens with the same identification.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// Bytes of a UDP request that carry sequence and send time.
pub const UDP_STAMP_LEN: usize = 16;
/// Bytes an echo reply adds: backend address and the client address it saw.
pub const ID_LEN: usize = 36;
/// Smallest payload that carries the stamp and the identification.
pub const MIN_PAYLOAD: usize = UDP_STAMP_LEN + ID_LEN;
const _: () = assert!(MIN_PAYLOAD == anyedge_topology::UDP_PAYLOAD_MIN, "topology files validate against this");

fn put_addr(buf: &mut [u8], addr: SocketAddr) {
    let v6 = match addr.ip() {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    };
    buf[..16].copy_from_slice(&v6.octets());
    buf[16..18].copy_from_slice(&addr.port().to_be_bytes());
}

fn get_addr(buf: &[u8]) -> SocketAddr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&buf[..16]);
    let v6 = Ipv6Addr::from(octets);
    let ip = v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4);
    SocketAddr::new(ip, u16::from_be_bytes([buf[16], buf[17]]))
}

/// A UDP request: sequence number and send time, padded to `size`.
pub fn udp_request(seq: u64, sent_ns: u64, size: usize) -> Vec<u8> {
    let mut p = vec![0u8; size.max(MIN_PAYLOAD)];
    p[..8].copy_from_slice(&seq.to_be_bytes());
    p[8..16].copy_from_slice(&sent_ns.to_be_bytes());
    p
}

/// Writes who answered and whom it saw into a payload (echo reply or response head).
pub fn stamp_identity(payload: &mut [u8], offset: usize, backend: SocketAddr, client_seen: SocketAddr) {
    if payload.len() >= offset + ID_LEN {
        put_addr(&mut payload[offset..], backend);
        put_addr(&mut payload[offset + 18..], client_seen);
    }
}

/// What a UDP echo reply says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpReply {
    pub seq: u64,
    pub sent_ns: u64,
    pub backend: SocketAddr,
    pub client_seen: SocketAddr,
}

pub fn parse_udp_reply(p: &[u8]) -> Option<UdpReply> {
    if p.len() < MIN_PAYLOAD {
        return None;
    }
    Some(UdpReply {
        seq: u64::from_be_bytes(p[..8].try_into().ok()?),
        sent_ns: u64::from_be_bytes(p[8..16].try_into().ok()?),
        backend: get_addr(&p[16..]),
        client_seen: get_addr(&p[34..]),
    })
}

/// TCP request header: magic, request length, response length.
pub const TCP_REQUEST_HEADER: usize = 12;
const MAGIC: u32 = 0x616e_7965; // "anye"

pub fn tcp_request(request_len: u32, response_len: u32) -> Vec<u8> {
    let mut p = vec![0u8; (request_len as usize).max(TCP_REQUEST_HEADER)];
    p[..4].copy_from_slice(&MAGIC.to_be_bytes());
    let len = p.len() as u32;
    p[4..8].copy_from_slice(&len.to_be_bytes());
    p[8..12].copy_from_slice(&response_len.max(ID_LEN as u32).to_be_bytes());
    p
}

/// (request length, response length) from a request header.
pub fn parse_tcp_request_header(h: &[u8]) -> Option<(u32, u32)> {
    if h.len() < TCP_REQUEST_HEADER || h[..4] != MAGIC.to_be_bytes() {
        return None;
    }
    let req = u32::from_be_bytes(h[4..8].try_into().ok()?);
    let resp = u32::from_be_bytes(h[8..12].try_into().ok()?);
    (req as usize >= TCP_REQUEST_HEADER).then_some((req, resp))
}

/// The identification at the head of a TCP response.
pub fn parse_identity(p: &[u8]) -> Option<(SocketAddr, SocketAddr)> {
    (p.len() >= ID_LEN).then(|| (get_addr(p), get_addr(&p[18..])))
}

/// Longest HTTP request head a simulated server reads.
pub const HTTP_HEAD_MAX: usize = 16 * 1024;

pub use anyedge_region::http1::{http_head_end, http_header, looks_like_http};

/// What a simulated HTTP server does with one request head.
pub struct HttpAnswer {
    pub response: Vec<u8>,
    /// Who the server takes the client to be (X-Forwarded-For's first address, or the peer).
    pub client: IpAddr,
    /// Request body bytes still to read and ignore.
    pub body_len: u64,
    pub close: bool,
}

/// Answers a request: 200 with a body that names the backend and the client it believes
/// in (the first X-Forwarded-For address when a proxy sent one, else the TCP peer).
pub fn http_answer(head: &[u8], backend: SocketAddr, peer: SocketAddr) -> HttpAnswer {
    let text = String::from_utf8_lossy(head);
    let body_len = http_header(&text, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let close = http_header(&text, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let client = http_header(&text, "x-forwarded-for")
        .and_then(|v| v.split(',').next())
        .and_then(|a| a.trim().parse::<IpAddr>().ok())
        .map_or(peer, |ip| SocketAddr::new(ip, 0));
    let size: usize = http_header(&text, "x-anyedge-response-bytes")
        .and_then(|v| v.parse().ok())
        .unwrap_or(ID_LEN)
        .clamp(ID_LEN, 16 << 20);
    let mut body = vec![b'.'; size];
    stamp_identity(&mut body, 0, backend, client);
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nX-Anyedge-Backend: {backend}\r\nConnection: {}\r\n\r\n",
        if close { "close" } else { "keep-alive" }
    )
    .into_bytes();
    response.extend_from_slice(&body);
    HttpAnswer { response, client: client.ip(), body_len, close }
}

/// An HTTP request of about `size` bytes asking the server for `response` body bytes.
pub fn http_request(host: (IpAddr, u16), size: u32, response: u32) -> Vec<u8> {
    let host = SocketAddr::new(host.0, host.1);
    let head_for = |body: usize| {
        format!(
            "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: {body}\r\nX-Anyedge-Response-Bytes: {response}\r\n\r\n"
        )
    };
    let body = (size as usize).saturating_sub(head_for(0).len() + 2);
    let mut request = head_for(body).into_bytes();
    request.resize(request.len() + body, b'x');
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_echo_identity_round_trips() {
        let mut p = udp_request(7, 1234, 120);
        let backend: SocketAddr = "198.19.1.3:7000".parse().unwrap();
        let client: SocketAddr = "[fd00::5]:4000".parse().unwrap();
        stamp_identity(&mut p, UDP_STAMP_LEN, backend, client);
        let r = parse_udp_reply(&p).unwrap();
        assert_eq!((r.seq, r.sent_ns, r.backend, r.client_seen), (7, 1234, backend, client));
    }

    #[test]
    fn tcp_request_header_round_trips() {
        let req = tcp_request(500, 20_000);
        assert_eq!(req.len(), 500);
        assert_eq!(parse_tcp_request_header(&req), Some((500, 20_000)));
        assert_eq!(parse_tcp_request_header(&[0; 12]), None);
    }
}
