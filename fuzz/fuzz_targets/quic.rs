//! QUIC into a CLB node's QUIC listener (quinn-proto behind it, the VIP's real
//! certificate), with a real client beside the attacker: records `[op, len (u16 LE),
//! bytes…]`. Op 0 sends the bytes as a datagram from one of four client ports (Initials
//! need 1,200 bytes: the length is two bytes); op 1 delivers the real client's pending
//! datagrams, from a port the op picks (a moved client), with the record's bytes as
//! `(offset, xor)` pairs flipped into the first one; op 2 delivers the listener's
//! datagrams for the real client; op 3 lets `len` milliseconds pass. Once the handshake is
//! done the client opens a stream with a request and the listener is given a backend and
//! relay ports, so streams, relays and migration are reached, not only header parsing.
//! When the first record's op has its top bit set, the listener offers ALPN `h3` and the
//! client speaks HTTP/3 (its control and QPACK streams, then a GET through `H3Client`),
//! so the listener's HTTP/3 side is reached too. Nothing a client sends may panic the
//! listener.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use anyedge_region::conn_table::Ingress;
use anyedge_region::identity::VipIdentity;
use anyedge_region::quic::{QuicHost, QuicTransmit};
use anyedge_region::quic_listener::{QuicListener, QuicStep};
use libfuzzer_sys::fuzz_target;

const VIP: &str = "198.18.0.20:4433";
const BACKEND: &str = "198.19.1.2:8080";

fn pki() -> &'static (VipIdentity, Arc<rustls::ClientConfig>) {
    static ID: OnceLock<(VipIdentity, Arc<rustls::ClientConfig>)> = OnceLock::new();
    ID.get_or_init(|| {
        let vip: SocketAddr = VIP.parse().unwrap();
        let (mut identities, client) =
            anyedge_sim::tls::vip_pki(&[anyedge_sim::tls::VipTls::issued("edge", vec![vip.ip()])], Default::default()).expect("a test PKI");
        (identities.remove(0).1, client)
    })
}

fn client_addr(port: u8) -> SocketAddr {
    SocketAddr::new("198.18.64.7".parse().unwrap(), 40_000 + u16::from(port % 4))
}

/// The listener's turn: the step it took, with backends and relay ports handed out.
fn serve(listener: &mut QuicListener, now: u64, step: &mut QuicStep, next_port: &mut u16, to_client: &mut Vec<Vec<u8>>) {
    listener.drive(now, step);
    for ch in std::mem::take(&mut step.need_backend) {
        listener.set_backend(ch, 0, BACKEND.parse().unwrap(), now);
    }
    for (ch, stream) in std::mem::take(&mut step.need_port) {
        *next_port = next_port.wrapping_add(1).max(1024);
        listener.open_relay(ch, stream, ("198.19.0.2".parse().unwrap(), *next_port));
    }
    to_client.extend(step.to_client.drain(..).map(|(_, _, d)| d));
    step.to_backend.clear();
    step.closed.clear();
}

/// A request as bytes on a stream of its own.
fn ask(conn: &mut quinn_proto::Connection) -> bool {
    let Some(id) = conn.streams().open(quinn_proto::Dir::Bi) else { return false };
    let _ = conn.send_stream(id).write(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n");
    let _ = conn.send_stream(id).finish();
    true
}

/// HTTP/3: the client's control and QPACK streams, then a GET on a request stream.
fn ask_h3(conn: &mut quinn_proto::Connection) -> bool {
    let uni: Option<Vec<quinn_proto::StreamId>> = (0..3).map(|_| conn.streams().open(quinn_proto::Dir::Uni)).collect();
    let Some(uni) = uni else { return false };
    let Ok((mut client, first)) = anyedge_region::h3::H3Client::new([uni[0].into(), uni[1].into(), uni[2].into()]) else {
        return false;
    };
    for (id, (_, bytes)) in uni.iter().zip(first) {
        let _ = conn.send_stream(*id).write(&bytes);
    }
    let Some(id) = conn.streams().open(quinn_proto::Dir::Bi) else { return false };
    if let Ok((_, bytes)) = client.request(("GET", "198.18.0.20:4433", "/"), &[], b"") {
        let _ = conn.send_stream(id).write(&bytes);
        let _ = conn.send_stream(id).finish();
    }
    true
}

fuzz_target!(|data: &[u8]| {
    let (identity, client_tls) = pki();
    let vip: SocketAddr = VIP.parse().unwrap();
    let cipher = anyedge_ccn::CidCipher::new(&[2; 32]);
    let h3 = data.first().is_some_and(|op| op & 0x80 != 0);
    let alpn: &[u8] = if h3 { anyedge_region::quic_listener::H3 } else { b"" };
    let termination = if h3 { identity.quic.with_alpn(&[alpn.to_vec()]) } else { identity.quic.clone() };
    let mut listener = QuicListener::new(&termination, vip, vec![vip.ip()], (0, [1; 32], Some(cipher)), 1);
    let mut client = QuicHost::client(7);
    let config = anyedge_sim::tls::quic_client(client_tls, alpn).expect("a QUIC client configuration");
    let mut now = 1_000_000u64;
    let ch = client.connect(now, config, vip, &vip.ip().to_string());
    let (mut connected, mut asked) = (false, false);
    let (mut step, mut next_port) = (QuicStep::default(), 20_000u16);
    let mut from_client: Vec<QuicTransmit> = Vec::new();
    let mut to_client: Vec<Vec<u8>> = Vec::new();
    let mut rest = data;
    while let [op, lo, hi, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*lo, *hi]));
        let n = len.min(tail.len()).min(1500);
        let (bytes, next) = tail.split_at(n);
        rest = next;
        match op % 4 {
            0 => listener.receive(now, client_addr(op >> 2), bytes, Ingress::Direct, 0, &mut step),
            1 => {
                client.drive(now, &mut from_client);
                for (i, (_, _, mut d)) in std::mem::take(&mut from_client).into_iter().enumerate() {
                    if i == 0 {
                        for pair in bytes.chunks_exact(2) {
                            let at = usize::from(pair[0]) * d.len() / 256;
                            if let Some(b) = d.get_mut(at) {
                                *b ^= pair[1];
                            }
                        }
                    }
                    listener.receive(now, client_addr(op >> 2), &d, Ingress::Direct, 0, &mut step);
                }
            }
            2 => {
                for d in std::mem::take(&mut to_client) {
                    client.receive(now, vip, None, &d, &mut from_client);
                }
            }
            _ => {
                now += (len as u64 % 2_000) * 1_000_000;
                client.drive(now, &mut from_client);
            }
        }
        serve(&mut listener, now, &mut step, &mut next_port, &mut to_client);
        if let Some(at) = listener.poll_timeout(now).filter(|&at| at <= now) {
            serve(&mut listener, at.max(now), &mut step, &mut next_port, &mut to_client);
        }
        connected |= client.take_events().iter().any(|(_, e)| matches!(e, quinn_proto::Event::Connected));
        if connected
            && !asked
            && let Some(conn) = ch.and_then(|ch| client.conn(ch))
        {
            asked = if h3 { ask_h3(conn) } else { ask(conn) };
        }
    }
});
