//! QUIC datagrams into a CLB node's QUIC listener (quinn-proto behind it, the VIP's real
//! certificate): a sequence of `[source port, length, bytes…]` records, a millisecond
//! apart, from clients the first byte tells apart; the listener is driven after each.
//! Nothing a client sends may panic it.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

use anyedge_region::conn_table::Ingress;
use anyedge_region::identity::VipIdentity;
use anyedge_region::quic_listener::{QuicListener, QuicStep};
use libfuzzer_sys::fuzz_target;

const VIP: &str = "198.18.0.20:4433";

fn identity() -> &'static VipIdentity {
    static ID: OnceLock<VipIdentity> = OnceLock::new();
    ID.get_or_init(|| {
        let vip: SocketAddr = VIP.parse().unwrap();
        anyedge_sim::tls::vip_pki(&[vip.ip()]).expect("a test PKI").0
    })
}

fuzz_target!(|data: &[u8]| {
    let vip: SocketAddr = VIP.parse().unwrap();
    let mut listener = QuicListener::new(&identity().quic, vip, vec![vip.ip()], (0, [1; 32]), 1);
    let mut now = 1_000_000u64;
    let mut rest = data;
    while let [port, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let client = SocketAddr::new("198.18.64.7".parse().unwrap(), 40_000 + u16::from(*port % 4));
        let mut step = QuicStep::default();
        listener.receive(now, client, &tail[..n], Ingress::Direct, 0, &mut step);
        listener.drive(now, &mut step);
        if let Some(at) = listener.poll_timeout(now) {
            now = now.max(at);
            listener.drive(now, &mut step);
        }
        now += 1_000_000;
        rest = &tail[n..];
    }
});
