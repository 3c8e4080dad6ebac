//! A harness in the quinn-proto style: the core alone, packets in and out, no I/O.
use super::*;
use crate::config::SchedulerKind;
use crate::config::{BackendConfig, HealthConfig};
use crate::tcp_stack::TcpStack;
use anyedge_ccn::Dest;
use anyedge_ccn::auth::{AuthConfig, BackboneSecret};
use anyedge_proto::ccn;
use anyedge_proto::sync::Message;
use smoltcp::iface::SocketHandle;
use smoltcp::wire::TcpControl;
use std::collections::HashMap;

/// The test backbone: POPs 0..4, three CLB nodes of region 0, and the backend hosts.
fn backbone() -> (BackboneSecret, Vec<NodeId>) {
    let pops = (0..4).map(NodeId::Pop);
    let clbs = (0..3).map(|node| NodeId::Clb { region: 0, node });
    let hosts = backend_hosts().into_iter().map(|(_, id)| id);
    (BackboneSecret::from_seed(3), pops.chain(clbs).chain(hosts).collect())
}

/// The hosts of B1 and B2.
fn backend_hosts() -> Vec<(IpAddr, NodeId)> {
    [B1, B2]
        .iter()
        .enumerate()
        .map(|(i, b)| (b.parse::<SocketAddr>().unwrap().ip(), NodeId::Backend { region: 0, host: i as u16 }))
        .collect()
}

fn host_of(ip: IpAddr) -> NodeId {
    backend_hosts().into_iter().find(|(a, _)| *a == ip).expect("a test backend host").1
}

/// A packet the core sent, as its receiver sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sent {
    /// An encapsulated reply for the POP with this id (still sealed).
    Pop { pop_id: u16, bytes: Vec<u8> },
    /// An IP packet a backend receives (opened by its host).
    Backend { backend: SocketAddr, bytes: Vec<u8> },
    /// A TCP super-packet for a backend's host to cut into segments of `segment` bytes.
    BackendSuper { backend: SocketAddr, segment: u16, bytes: Vec<u8> },
    /// An IP packet straight to a client.
    Client { bytes: Vec<u8> },
    /// Connection-table sync for the region's CLB node with this index (still sealed).
    Peer { node: u16, bytes: Vec<u8> },
}

impl Clb {
    /// The next output as its receiver sees it: a backend's packet opened by its host.
    /// Every output carries the flow hash of the packet it was made from.
    fn next_out(&mut self) -> Option<Sent> {
        let Transmit { dest, flow_hash, bytes, .. } = self.poll_output()?;
        Some(match dest {
            Dest::Backend(backend) => {
                let mut host = keyring(host_of(backend.ip()));
                let (from, opened) = host.open(Kind::Backend, &bytes).expect("sealed for the backend's host");
                assert_eq!(from, NodeId::Clb { region: 0, node: self.node.index });
                let (segment, opened) = anyedge_proto::offload::unshim(opened).expect("a shim that reads");
                assert_eq!(flow_hash, inner::parse(opened).unwrap().key.flow_hash(), "the packet's own flow");
                match segment {
                    0 => Sent::Backend { backend, bytes: opened.to_vec() },
                    _ => Sent::BackendSuper { backend, segment, bytes: opened.to_vec() },
                }
            }
            Dest::Node(NodeId::Pop(pop_id)) => {
                let opened = at_pop(pop_id, &bytes);
                let (repr, _) = ccn::decapsulate(&opened).unwrap();
                assert_eq!(repr.flow_hash, flow_hash, "the hash the CCN header carries");
                Sent::Pop { pop_id, bytes }
            }
            Dest::Node(NodeId::Clb { region: 0, node }) => Sent::Peer { node, bytes },
            Dest::Client(client) => {
                let key = inner::parse(&bytes).unwrap().key;
                assert_eq!((client, flow_hash), (key.dst, key.flow_hash()));
                Sent::Client { bytes }
            }
            other => panic!("a CLB node sends nothing to {other:?}"),
        })
    }

    /// A packet from a backend, sealed by the host its source address belongs to.
    fn handle_backend_sealed(&mut self, now_ns: u64, packet: Vec<u8>) -> Result<(), ClbDrop> {
        let src = inner::parse(&packet).unwrap().key.src;
        let to = NodeId::Clb { region: 0, node: self.node.index };
        let sealed = keyring(host_of(src)).seal(to, Kind::Backend, &packet).unwrap();
        self.handle_from_backend(now_ns, sealed)
    }
}

/// The keys of CLB node `node` of region 0.
fn auth(node: u16) -> AuthConfig {
    let (secret, peers) = backbone();
    let me = NodeId::Clb { region: 0, node };
    AuthConfig {
        keys: secret.keys_for(me, &peers.into_iter().filter(|&p| p != me).collect::<Vec<_>>()),
        cid_keys: vec![(0, secret.cid_key(0))],
        ..AuthConfig::default()
    }
}

/// A fresh keyring for `id` whose sequence numbers are ahead of every earlier one's.
fn keyring(id: NodeId) -> Keyring {
    static BOOT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1 << 40);
    let (secret, peers) = backbone();
    let boot = BOOT.fetch_add(1 << 20, std::sync::atomic::Ordering::Relaxed);
    Keyring::new(id, &secret.keys_for(id, &peers), boot)
}

/// What POP `pop` sends CLB node `node` of region 0 for `packet`.
fn from_pop(pop: u16, node: u16, packet: &[u8]) -> Vec<u8> {
    let bytes = ccn::encapsulate(Direction::ToRegion, pop, 1, packet).unwrap();
    keyring(NodeId::Pop(pop)).seal(NodeId::Clb { region: 0, node }, Kind::Data, &bytes).unwrap()
}

/// The CCN packet POP `pop` finds in what a CLB node sent it.
fn at_pop(pop: u16, sealed: &[u8]) -> Vec<u8> {
    keyring(NodeId::Pop(pop)).open(Kind::Data, sealed).expect("sealed for this POP").1.to_vec()
}

/// A VIP identity from a fresh self-signed certificate (its own client CA too).
fn identity() -> crate::identity::VipIdentity {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["edge".to_string()]).unwrap().self_signed(&key).unwrap();
    let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    crate::identity::VipIdentity::new(vec![cert.der().clone()], der, Some(cert.der().clone())).unwrap()
}

#[test]
fn a_rotated_vip_certificate_replaces_the_old_one_on_every_listener_that_presented_it() {
    let (a, b) = (identity(), identity());
    let mut c = config(SchedulerKind::Wrr, None);
    let base = c.listeners[0].clone();
    let https =
        |port, tls| ListenerConfig { transport: Transport::Tcp, port, layer7: true, http: true, tls, ..base.clone() };
    c.listeners.push(https(8443, Some(a.https.clone())));
    c.listeners.push(https(9443, a.https_mutual.clone()));
    c.listeners.push(ListenerConfig { http: false, ..https(8444, Some(a.tls.clone())) });
    c.listeners.push(ListenerConfig { http: false, ..https(9444, a.tls_mutual.clone()) });
    c.listeners.push(ListenerConfig { port: 4433, quic: Some(a.quic.with_alpn(&[b"h3".to_vec()])), ..base.clone() });
    let mut clb = Clb::new(c, 0);
    assert_eq!(clb.replace_identity(&b, &a), 0, "no listener presented b");
    assert_eq!(clb.replace_identity(&a, &b), 5, "HTTPS, TCP SSL (each one-way and mutual) and QUIC");
    assert_eq!(clb.replace_identity(&a, &b), 0, "a is presented nowhere now");
    let at = |port: u16| clb.listeners.iter().find(|l| l.config().port == port).unwrap();
    let same = |x: &Option<crate::Shared<rustls::ServerConfig>>, y: &crate::Shared<rustls::ServerConfig>| {
        x.as_ref().is_some_and(|x| std::sync::Arc::ptr_eq(&x.0, &y.0))
    };
    assert!(same(&at(8443).config().tls, &b.https), "one-way HTTPS takes b's one-way HTTPS config");
    assert!(same(&at(9443).config().tls, b.https_mutual.as_ref().unwrap()), "mutual HTTPS takes b's mutual one");
    assert!(same(&at(8444).config().tls, &b.tls), "one-way TCP SSL takes b's one-way TLS config (no ALPN)");
    assert!(same(&at(9444).config().tls, b.tls_mutual.as_ref().unwrap()), "mutual TCP SSL takes b's mutual one");
    let quic = at(4433).config().quic.as_ref().unwrap();
    assert!(quic.same_identity(&b.quic) && quic.alpn() == [b"h3".to_vec()], "QUIC takes b's, keeping its ALPN");
    assert!(at(7000).config().tls.is_none() && at(7000).config().quic.is_none(), "plain UDP untouched");
}

/// A node whose one listener is an HTTP proxy on the VIP's port 80.
fn http_node() -> Clb {
    let mut c = config(SchedulerKind::Wrr, None);
    let l = &mut c.listeners[0];
    (l.transport, l.port, l.layer7, l.http) = (Transport::Tcp, 80, true, true);
    Clb::new(c, 0)
}

fn tcp_flags(bytes: &[u8]) -> inner::TcpFlags {
    inner::parse(bytes).unwrap().tcp.unwrap()
}

#[test]
fn an_http_listener_answers_syns_with_cookies_and_keeps_nothing_until_the_ack_returns_one() {
    let mut clb = http_node();
    let vip: IpAddr = VIP.parse().unwrap();
    // 10,000 spoofed SYNs: a SYN-ACK each, no connection, nothing kept.
    for i in 0..10_000u32 {
        let src = (IpAddr::from([203, 0, (i >> 8) as u8, i as u8]), 1024 + (i % 50_000) as u16);
        let syn = inner::build_tcp(src.0, vip, &inner::bare_tcp(src.1, 80, TcpControl::Syn, i, None, Some(1460)));
        clb.handle_direct(1_000, syn.unwrap()).unwrap();
        let Some(Sent::Client { bytes }) = clb.next_out() else { panic!("SYN {i} unanswered") };
        let f = tcp_flags(&bytes);
        assert!(f.syn && f.ack, "a SYN-ACK");
        assert_eq!(inner::tcp_numbers(&bytes).map(|n| n.1), Some(i.wrapping_add(1)), "it acknowledges the SYN");
    }
    assert_eq!((clb.proxied_connections(), clb.syn_cookies_sent()), (0, 10_000), "no connection set up for a SYN");
    // An ACK whose acknowledgement is no cookie of this node's sets nothing up either.
    let src: IpAddr = "203.0.0.1".parse().unwrap();
    for guess in [0u32, 1, 0xdead_beef] {
        let ack = inner::bare_tcp(1025, 80, TcpControl::None, 2, Some(guess), None);
        let ack = inner::build_tcp(src, vip, &ack).unwrap();
        assert_eq!(clb.handle_direct(2_000, ack).map_err(|e| e.name()), Err("bad_cookie"));
    }
    assert_eq!(clb.proxied_connections(), 0);
}

#[test]
fn a_segment_of_a_connection_the_node_does_not_know_is_reset_within_a_budget() {
    // A node that restarted gets the next segment of a connection it held before.
    let mut clb = http_node();
    let (vip, src): (IpAddr, IpAddr) = (VIP.parse().unwrap(), "203.0.0.1".parse().unwrap());
    let segment = |ack: u32| {
        let repr = inner::bare_tcp(1025, 80, TcpControl::Psh, 7_000, Some(ack), None);
        inner::build_tcp(src, vip, &repr).unwrap()
    };
    assert_eq!(clb.handle_direct(1_000, segment(0x1234_5678)).map_err(|e| e.name()), Err("bad_cookie"));
    let Some(Sent::Client { bytes }) = clb.next_out() else { panic!("no reset for an unknown connection") };
    let f = tcp_flags(&bytes);
    assert!(f.rst && !f.syn, "a reset");
    assert_eq!(inner::tcp_numbers(&bytes).map(|n| n.0), Some(0x1234_5678), "its sequence is the segment's ack");
    let parsed = inner::parse(&bytes).unwrap().key;
    assert_eq!((parsed.src, parsed.src_port, parsed.dst, parsed.dst_port), (vip, 80, src, 1025));
    assert_eq!(clb.proxied_connections(), 0, "nothing set up");
    // A flood of forged ACKs gets at most the budget back in a second, and the budget
    // comes back the next second.
    let mut resets = 0;
    for i in 0..3 * crate::syn_cookie::RESETS_PER_S {
        let _ = clb.handle_direct(2_000_000_000 + u64::from(i), segment(i));
        while clb.next_out().is_some() {
            resets += 1;
        }
    }
    assert_eq!(resets, crate::syn_cookie::RESETS_PER_S);
    let _ = clb.handle_direct(3_000_000_000, segment(1));
    assert!(clb.next_out().is_some(), "a new second, a new budget");
}

/// An HTTP client of [`http_node`]'s VIP with its own TCP stack, and both backends
/// running a server that answers its first request `ok`.
struct HttpRig {
    clb: Clb,
    client: TcpStack,
    h: SocketHandle,
    servers: Vec<(SocketAddr, TcpStack, SocketHandle)>,
    /// The request the client sends once connected.
    request: Vec<u8>,
    sent: bool,
    /// What a backend read of the request, once one did.
    seen: Option<Vec<u8>>,
    /// What the client read.
    got: Vec<u8>,
}

impl HttpRig {
    fn new(request: &[u8]) -> HttpRig {
        let clb = http_node();
        let (vip, me): (IpAddr, IpAddr) = (VIP.parse().unwrap(), "198.18.64.7".parse().unwrap());
        let mut client = TcpStack::new(me, 5, 0);
        let h = client.connect(SocketAddr::new(vip, 80), (me, 40_000)).unwrap();
        let servers = [B1, B2]
            .iter()
            .map(|b| {
                let addr: SocketAddr = b.parse().unwrap();
                let mut stack = TcpStack::new(addr.ip(), 9, 0);
                let s = stack.new_socket();
                stack.socket(s).listen(addr.port()).unwrap();
                (addr, stack, s)
            })
            .collect();
        HttpRig { clb, client, h, servers, request: request.to_vec(), sent: false, seen: None, got: Vec::new() }
    }

    /// One millisecond's round at `now`: the client sends its request once connected and
    /// reads; packets cross both ways; a backend answers the first request it reads.
    fn step(&mut self, now: u64) {
        self.client.poll(now);
        let s = self.client.socket(self.h);
        if s.may_send() && !self.sent {
            self.sent = s.send_slice(&self.request).unwrap() == self.request.len();
        }
        while s.can_recv() {
            let mut buf = [0u8; 4096];
            let n = s.recv_slice(&mut buf).unwrap();
            self.got.extend_from_slice(&buf[..n]);
        }
        self.client.poll(now);
        for p in self.client.drain_tx().collect::<Vec<_>>() {
            let _ = self.clb.handle_direct(now, p);
        }
        self.clb.handle_timeout(now);
        while let Some(out) = self.clb.next_out() {
            match out {
                Sent::Client { bytes } => self.client.receive(bytes),
                Sent::Backend { backend, bytes } => {
                    self.servers.iter_mut().find(|(a, _, _)| *a == backend).unwrap().1.receive(bytes)
                }
                _ => {}
            }
        }
        for (_, stack, sock) in self.servers.iter_mut() {
            stack.poll(now);
            let s = stack.socket(*sock);
            if s.can_recv() && self.seen.is_none() {
                let mut buf = [0u8; 4096];
                let n = s.recv_slice(&mut buf).unwrap();
                self.seen = Some(buf[..n].to_vec());
                s.send_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
            }
            stack.poll(now);
            for p in stack.drain_tx().collect::<Vec<_>>() {
                let _ = self.clb.handle_backend_sealed(now, p);
            }
        }
    }

    /// Rounds a millisecond apart from `from_ms` until the client has `ok` or `ms` passed;
    /// the time it has it at.
    fn run(&mut self, from_ms: u64, ms: u64) -> Option<u64> {
        for t in from_ms..from_ms + ms {
            self.step(t * 1_000_000);
            if self.got.ends_with(b"ok") {
                return Some(t);
            }
        }
        None
    }
}

#[test]
fn a_client_behind_a_syn_cookie_gets_its_request_to_a_backend_and_the_answer_back() {
    let mut rig = HttpRig::new(b"GET / HTTP/1.1\r\nHost: edge\r\n\r\n");
    rig.run(1, 200);
    let seen = rig.seen.as_deref().expect("the request reached a backend");
    assert!(seen.starts_with(b"GET / HTTP/1.1\r\n"), "the request as the client sent it");
    let got = &rig.got;
    assert!(got.starts_with(b"HTTP/1.1 200 OK") && got.ends_with(b"ok"), "{:?}", String::from_utf8_lossy(got));
    assert_eq!(rig.client.socket(rig.h).send_queue(), 0, "the node's stack acknowledged all the client sent");
    assert_eq!(rig.clb.syn_cookies_sent(), 1);
}

#[test]
fn a_request_that_came_while_no_backend_could_take_it_goes_once_one_can_without_the_client_sending_more() {
    let mut rig = HttpRig::new(b"GET /waiting HTTP/1.1\r\nHost: edge\r\n\r\n");
    let (b1, b2): (SocketAddr, SocketAddr) = (B1.parse().unwrap(), B2.parse().unwrap());
    rig.clb.set_weight(b1, 0);
    rig.clb.set_weight(b2, 0);
    assert_eq!(rig.run(1, 500), None, "no backend takes new requests");
    assert!(rig.sent && rig.seen.is_none(), "the request came and waits");
    // A backend takes requests again (weights back; a health check passing is the same):
    // the request goes with nothing more from the client, within a retry.
    rig.clb.set_weight(b2, 1);
    let answered = rig.run(501, 1_000).expect("the waiting request went to the backend");
    assert!(answered < 501 + crate::l7::BACKEND_RETRY_NS / 1_000_000 + 50, "answered at {answered} ms");
    assert!(rig.seen.as_deref().is_some_and(|r| r.starts_with(b"GET /waiting ")));
}

#[test]
fn a_request_no_backend_takes_within_the_wait_is_answered_503_and_the_connection_closes() {
    let mut rig = HttpRig::new(b"GET /nobody HTTP/1.1\r\nHost: edge\r\n\r\n");
    for b in [B1, B2] {
        rig.clb.set_weight(b.parse().unwrap(), 0);
    }
    let wait_ms = crate::l7::BACKEND_WAIT_NS / 1_000_000;
    rig.run(1, wait_ms - 100);
    assert!(rig.got.is_empty(), "nothing before the wait is over");
    rig.run(wait_ms - 99, 300);
    let got = String::from_utf8_lossy(&rig.got);
    assert!(got.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{got}");
    assert!(rig.seen.is_none(), "no backend saw it");
    let state = rig.client.socket(rig.h).state();
    assert!(!rig.client.socket(rig.h).may_recv(), "the node closed its side: {state:?}");
}

const VIP: &str = "198.18.0.20";
const B1: &str = "198.19.20.1:7000";
const B2: &str = "198.19.20.2:7000";

fn config(scheduler: SchedulerKind, persistence_ns: Option<u64>) -> ClbConfig {
    let backends = [B1, B2].iter().map(|a| BackendConfig::direct(a.parse().unwrap(), 10)).collect();
    ClbConfig {
        address: "198.18.32.1".parse().unwrap(),
        address_v6: None,
        region: 0,
        node_index: 0,
        node_count: 1,
        snat: vec!["198.18.32.1".parse().unwrap()],
        security_groups: vec![],
        listeners: vec![ListenerConfig {
            vip: VIP.parse().unwrap(),
            transport: Transport::Udp,
            port: 7000,
            scheduler,
            backends,
            persistence_ns,
            layer7: false,
            http: false,
            tls: None,
            quic: None,
            alt_svc: None,
        }],
        health: HealthConfig::tcp(1_000_000_000, 500_000_000, 2, 2),
        conn_table_capacity: 1000,
        source_prefix_v4: crate::cidr::SOURCE_PREFIX_V4,
        pop_fallback: crate::config::PopPlaces {
            places: std::sync::Arc::from([[48.857, 2.352], [50.11, 8.68], [52.23, 21.01]]),
            linked: vec![true; 3],
        },
        auth: auth(0),
        backend_hosts: backend_hosts(),
    }
}

fn client(port: u16) -> Vec<u8> {
    inner::build_udp(("198.18.64.7".parse().unwrap(), port), (VIP.parse().unwrap(), 7000), b"ping").unwrap()
}

/// Sends a client packet in through `pop` and returns the backend it reached.
fn send(clb: &mut Clb, pop: u16, port: u16) -> SocketAddr {
    let bytes = from_pop(pop, clb.node.index, &client(port));
    clb.handle_from_pop(0, &bytes).unwrap();
    loop {
        match clb.next_out() {
            Some(Sent::Backend { backend, bytes }) if backend.port() == 7000 => {
                let seen = inner::parse(&bytes).unwrap().key;
                assert_eq!(seen.src, "198.18.64.7".parse::<IpAddr>().unwrap(), "the client's own address");
                assert_eq!((seen.dst, seen.dst_port), (backend.ip(), backend.port()));
                return backend;
            }
            Some(_) => continue,
            None => panic!("nothing forwarded"),
        }
    }
}

/// The backend answers; returns the POP the reply leaves through and the reply.
fn reply(clb: &mut Clb, backend: SocketAddr, port: u16) -> (u16, Vec<u8>) {
    let packet =
        inner::build_udp((backend.ip(), backend.port()), ("198.18.64.7".parse().unwrap(), port), b"pong").unwrap();
    clb.handle_backend_sealed(0, packet).unwrap();
    match clb.next_out() {
        Some(Sent::Pop { pop_id, bytes }) => {
            let bytes = at_pop(pop_id, &bytes);
            let (repr, inner_bytes) = ccn::decapsulate(&bytes).unwrap();
            assert_eq!(repr.pop_id, pop_id);
            (pop_id, inner_bytes.to_vec())
        }
        other => panic!("expected a reply toward a POP, got {other:?}"),
    }
}

fn fail_health(clb: &mut Clb, backend: SocketAddr) {
    // Run the clock with probes to `backend` unanswered and the others answered.
    while clb.backend_healthy(backend) == Some(true) {
        let now = clb.poll_timeout().unwrap();
        clb.handle_timeout(now);
        while let Some(out) = clb.next_out() {
            if let Sent::Backend { backend: to, bytes } = out
                && to != backend
                && let Some(answer) = syn_ack(&bytes)
            {
                clb.handle_backend_sealed(now, answer).unwrap();
            }
        }
        assert!(now < 60_000_000_000, "never marked unhealthy");
    }
}

fn syn_ack(probe: &[u8]) -> Option<Vec<u8>> {
    let info = inner::parse(probe).ok()?;
    let tcp = smoltcp::wire::TcpPacket::new_checked(&probe[20..]).ok()?;
    let repr = inner::bare_tcp(
        info.key.dst_port,
        info.key.src_port,
        TcpControl::Syn,
        7,
        Some((tcp.seq_number() + 1).0 as u32),
        None,
    );
    inner::build_tcp(info.key.dst, info.key.src, &repr)
}

#[test]
fn replies_leave_as_the_vip_through_the_latest_ingress_pop() {
    let mut clb = Clb::new(config(SchedulerKind::Wrr, None), 0);
    let backend = send(&mut clb, 0, 4000);
    let (pop, packet) = reply(&mut clb, backend, 4000);
    assert_eq!(pop, 0);
    let key = inner::parse(&packet).unwrap().key;
    assert_eq!((key.src, key.src_port), (VIP.parse().unwrap(), 7000), "the reply comes from the VIP");
    // The client's anycast route moved to POP 2: replies follow it.
    assert_eq!(send(&mut clb, 2, 4000), backend, "same flow, same backend");
    assert_eq!(reply(&mut clb, backend, 4000).0, 2);
}

#[test]
fn replies_avoid_a_pop_known_to_be_down() {
    let mut clb = Clb::new(config(SchedulerKind::Wrr, None), 0);
    let backend = send(&mut clb, 0, 4000);
    clb.set_pop_up(0, false);
    clb.set_pop_up(1, false);
    assert_eq!(reply(&mut clb, backend, 4000).0, 2, "the nearest live neighbour of POP 0");
    clb.set_pop_up(0, true);
    assert_eq!(reply(&mut clb, backend, 4000).0, 0);
}

#[test]
fn weight_zero_drains_existing_flows() {
    let mut clb = Clb::new(config(SchedulerKind::Wrr, None), 0);
    let first = send(&mut clb, 0, 4000);
    clb.set_weight(first, 0);
    for _ in 0..5 {
        assert_eq!(send(&mut clb, 0, 4000), first, "an existing flow keeps its backend");
    }
    for port in 5000..5020 {
        assert_ne!(send(&mut clb, 0, port), first, "no new flow goes to a weight-0 backend");
    }
}

#[test]
fn flows_on_an_unhealthy_backend_move_to_a_healthy_one() {
    for scheduler in [SchedulerKind::Wrr, SchedulerKind::Maglev { table_size: 251 }] {
        let mut clb = Clb::new(config(scheduler, None), 0);
        let ports: Vec<u16> = (4000..4040).collect();
        let before: Vec<SocketAddr> = ports.iter().map(|&p| send(&mut clb, 0, p)).collect();
        let victim: SocketAddr = B1.parse().unwrap();
        assert!(before.contains(&victim));
        fail_health(&mut clb, victim);
        let mut moved = 0;
        while let Some(ev) = clb.poll_event() {
            if let Event::FlowMoved { .. } = ev {
                moved += 1;
            }
        }
        assert_eq!(moved, 0, "flows move when their next packet arrives, not before");
        for (&p, &b) in ports.iter().zip(&before) {
            let now = send(&mut clb, 0, p);
            assert_ne!(now, victim, "{scheduler:?}");
            if b != victim {
                assert_eq!(now, b, "flows on healthy backends stay put ({scheduler:?})");
            }
        }
    }
}

#[test]
fn persistence_keeps_a_client_ip_on_one_backend() {
    let mut clb = Clb::new(config(SchedulerKind::Wrr, Some(300_000_000_000)), 0);
    let first = send(&mut clb, 0, 4000);
    for port in 4001..4010 {
        assert_eq!(send(&mut clb, 0, port), first, "new flows from the same client IP");
    }
    let mut plain = Clb::new(config(SchedulerKind::Wrr, None), 0);
    let spread: std::collections::BTreeSet<SocketAddr> = (4000..4010).map(|p| send(&mut plain, 0, p)).collect();
    assert_eq!(spread.len(), 2, "without persistence WRR spreads the same client");
}

#[test]
fn maglev_nodes_agree_on_every_flow() {
    let mut cfg = config(SchedulerKind::Maglev { table_size: 65_537 }, None);
    cfg.node_count = 2;
    let mut a = Clb::new(cfg.clone(), 0);
    cfg.node_index = 1;
    cfg.auth = auth(1);
    cfg.address = "198.18.32.2".parse().unwrap();
    let mut b = Clb::new(cfg, 0);
    for port in 4000..4200 {
        assert_eq!(send(&mut a, 0, port), send(&mut b, 1, port));
    }
}

#[test]
fn packets_for_no_listener_are_dropped() {
    let mut clb = Clb::new(config(SchedulerKind::Wrr, None), 0);
    let other = inner::build_udp(("198.18.64.7".parse().unwrap(), 1), (VIP.parse().unwrap(), 9999), b"x").unwrap();
    assert_eq!(clb.handle_direct(0, other), Err(ClbDrop::NoListener));
    let stray =
        inner::build_udp(("198.19.20.1".parse().unwrap(), 7000), ("198.18.64.9".parse().unwrap(), 1), b"x").unwrap();
    assert_eq!(clb.handle_backend_sealed(0, stray), Err(ClbDrop::NoConnection));
}

fn tcp_segment(port: u16, control: TcpControl) -> Vec<u8> {
    let repr = inner::bare_tcp(port, 7000, control, 1, None, None);
    inner::build_tcp("198.18.64.7".parse().unwrap(), VIP.parse().unwrap(), &repr).unwrap()
}

fn tcp_config(scheduler: SchedulerKind, weights: [u8; 2]) -> ClbConfig {
    let mut c = config(scheduler, None);
    c.listeners[0].transport = Transport::Tcp;
    for (b, w) in c.listeners[0].backends.iter_mut().zip(weights) {
        b.weight = w;
    }
    c
}

/// Opens a TCP flow from `port`; returns its backend.
fn open(clb: &mut Clb, port: u16) -> SocketAddr {
    clb.handle_direct(0, tcp_segment(port, TcpControl::Syn)).unwrap();
    match clb.next_out() {
        Some(Sent::Backend { backend, .. }) => backend,
        other => panic!("{other:?}"),
    }
}

#[test]
fn one_source_holds_at_most_its_share_of_half_open_flows_and_others_still_get_in() {
    use crate::conn_table::HALF_OPEN_PER_SOURCE_MAX;
    let mut c = tcp_config(SchedulerKind::Wrr, [10, 10]);
    c.conn_table_capacity = 100_000;
    let mut clb = Clb::new(c, 0);
    // SYNs from every port of one address (a source under the default /32).
    let syn_from = |clb: &mut Clb, src: IpAddr, port: u16| {
        let repr = inner::bare_tcp(port, 7000, TcpControl::Syn, 1, None, None);
        let result = clb.handle_direct(0, inner::build_tcp(src, VIP.parse().unwrap(), &repr).unwrap());
        while clb.next_out().is_some() {}
        result
    };
    let mut refused = 0;
    for i in 0..3_000u16 {
        refused += usize::from(syn_from(&mut clb, "203.0.113.5".parse().unwrap(), 1024 + i) == Err(ClbDrop::SourceCap));
    }
    assert_eq!(clb.conn_table().len(), HALF_OPEN_PER_SOURCE_MAX, "the source's share, no more");
    assert_eq!(refused, 3_000 - HALF_OPEN_PER_SOURCE_MAX);
    // Another address gets its handshake; the flooder's entries time out, freeing its share.
    assert_eq!(syn_from(&mut clb, "198.18.64.9".parse().unwrap(), 5000), Ok(()));
    let mut now = 1;
    while now < HALF_OPEN_NS + 2 * SWEEP_INTERVAL_NS {
        now = clb.poll_timeout().unwrap().max(now + 1);
        clb.handle_timeout(now);
        while clb.next_out().is_some() {}
    }
    assert_eq!(clb.conn_table().half_open_from("203.0.113.5".parse().unwrap()), 0, "its share is free again");
}

#[test]
fn a_syn_flood_never_pushes_out_established_flows_and_half_open_ones_go_after_ten_seconds() {
    let mut c = tcp_config(SchedulerKind::Wrr, [10, 10]);
    c.conn_table_capacity = 200;
    let mut clb = Clb::new(c, 0);
    let client: IpAddr = "198.18.64.7".parse().unwrap();
    // Eight real clients: SYN, the backend's SYN-ACK, the client's ACK.
    let mut victims = Vec::new();
    for port in 4000..4008u16 {
        let backend = open(&mut clb, port);
        let syn_ack = inner::bare_tcp(backend.port(), port, TcpControl::Syn, 9, Some(2), None);
        clb.handle_backend_sealed(0, inner::build_tcp(backend.ip(), client, &syn_ack).unwrap()).unwrap();
        while clb.next_out().is_some() {}
        clb.handle_direct(0, tcp_segment(port, TcpControl::None)).unwrap();
        while clb.next_out().is_some() {}
        victims.push((port, backend));
    }
    // 45,000 spoofed SYNs through a 200-entry table.
    for i in 0..45_000u32 {
        let repr = inner::bare_tcp(1024 + (i % 60_000) as u16, 7000, TcpControl::Syn, 1, None, None);
        let src = IpAddr::from([203, 0, (i >> 16) as u8 + 113, (i >> 8) as u8]);
        let _ = clb.handle_direct(0, inner::build_tcp(src, VIP.parse().unwrap(), &repr).unwrap());
        while clb.next_out().is_some() {}
    }
    assert_eq!(clb.conn_table().len(), 200);
    for &(port, backend) in &victims {
        clb.handle_direct(1, tcp_segment(port, TcpControl::Psh)).unwrap();
        match clb.next_out() {
            Some(Sent::Backend { backend: to, .. }) => assert_eq!(to, backend, "flow {port} kept its backend"),
            other => panic!("flow {port} lost: {other:?}"),
        }
    }
    assert_eq!(clb.conn_table().refused(), 0, "the flood pushed out only its own entries");
    // Ten seconds on, the half-open entries are gone and the established stay.
    let mut now = 1;
    while now < HALF_OPEN_NS + 2 * SWEEP_INTERVAL_NS {
        now = clb.poll_timeout().unwrap().max(now + 1);
        clb.handle_timeout(now);
        while clb.next_out().is_some() {}
    }
    assert_eq!(clb.conn_table().len(), victims.len());
}

#[test]
fn a_spoofed_syn_flood_that_takes_every_snat_port_gives_them_back_to_real_clients() {
    let mut c = tcp_config(SchedulerKind::Wrr, [10, 0]);
    for b in &mut c.listeners[0].backends {
        b.snat = true;
    }
    c.conn_table_capacity = 100_000;
    let mut clb = Clb::new(c, 0);
    let client: IpAddr = "198.18.64.7".parse().unwrap();
    // One real flow, established (SYN, SYN-ACK, ACK).
    clb.handle_direct(0, tcp_segment(4000, TcpControl::Syn)).unwrap();
    let Some(Sent::Backend { backend, bytes }) = clb.next_out() else { panic!("not forwarded") };
    let snat = inner::parse(&bytes).unwrap().key;
    let syn_ack = inner::bare_tcp(backend.port(), snat.src_port, TcpControl::Syn, 9, Some(2), None);
    clb.handle_backend_sealed(0, inner::build_tcp(backend.ip(), snat.src, &syn_ack).unwrap()).unwrap();
    while clb.next_out().is_some() {}
    clb.handle_direct(0, tcp_segment(4000, TcpControl::None)).unwrap();
    while clb.next_out().is_some() {}
    // More spoofed SYNs than the node has SNAT ports.
    let ports = usize::from(SNAT_PORTS.end - SNAT_PORTS.start);
    for i in 0..ports as u32 + 1_000 {
        let repr = inner::bare_tcp(1024 + (i % 60_000) as u16, 7000, TcpControl::Syn, 1, None, None);
        let src = IpAddr::from([203, 0, 113 + (i >> 16) as u8, (i >> 8) as u8]);
        let _ = clb.handle_direct(0, inner::build_tcp(src, VIP.parse().unwrap(), &repr).unwrap());
        while clb.next_out().is_some() {}
    }
    assert!(clb.snat_evictions() >= 1_000, "the pool ran out and took ports back: {}", clb.snat_evictions());
    // A new real client still gets a port; the established flow keeps its own.
    clb.handle_direct(1, tcp_segment(5000, TcpControl::Syn)).unwrap();
    let Some(Sent::Backend { bytes, .. }) = clb.next_out() else { panic!("a new client refused") };
    assert_eq!(inner::read_toa(&bytes), Some((client, 5000)));
    clb.handle_direct(1, tcp_segment(4000, TcpControl::Psh)).unwrap();
    let Some(Sent::Backend { bytes, .. }) = clb.next_out() else { panic!("the established flow lost") };
    assert_eq!(inner::parse(&bytes).unwrap().key.src_port, snat.src_port, "it kept its SNAT port");
}

#[test]
fn each_backend_has_a_snat_pool_of_its_own_so_one_port_serves_two_backends_at_once() {
    let mut c = tcp_config(SchedulerKind::Wrr, [10, 10]);
    for b in &mut c.listeners[0].backends {
        b.snat = true;
    }
    c.conn_table_capacity = 200_000;
    let mut clb = Clb::new(c, 0);
    // One and a half times the port range, split between two backends: a single pool
    // would have to take ports back, a pool per backend never does.
    let ports = usize::from(SNAT_PORTS.end - SNAT_PORTS.start);
    let mut used: HashMap<SocketAddr, std::collections::HashSet<u16>> = HashMap::new();
    for i in 0..(ports + ports / 2) as u32 {
        let repr = inner::bare_tcp(1024 + (i % 60_000) as u16, 7000, TcpControl::Syn, 1, None, None);
        let src = IpAddr::from([203, 0, 113 + (i >> 16) as u8, (i >> 8) as u8]);
        clb.handle_direct(0, inner::build_tcp(src, VIP.parse().unwrap(), &repr).unwrap()).unwrap();
        let Some(Sent::Backend { backend, bytes }) = clb.next_out() else { panic!("SYN {i} not forwarded") };
        let port = inner::parse(&bytes).unwrap().key.src_port;
        assert!(used.entry(backend).or_default().insert(port), "port {port} taken twice toward {backend}");
        while clb.next_out().is_some() {}
    }
    assert_eq!(clb.snat_evictions(), 0, "no flow gave its port up");
    assert_eq!(used.len(), 2);
    let [a, b] = [B1, B2].map(|x| &used[&x.parse::<SocketAddr>().unwrap()]);
    assert!(a.len() + b.len() > ports, "more flows than one pool holds: {} + {}", a.len(), b.len());
    assert!(a.intersection(b).count() > ports / 3, "the same ports serve both backends");
}

/// Found by the `cores` fuzz target once its node had two listeners sharing a backend
/// (the conn table's own check, "one reply key per flow", fired): a client that sends
/// from one port to two VIP ports whose listeners pick the same backend makes two flows
/// whose replies look alike (backend → client address and port). The second used to
/// overwrite the first's reply key, so the first's replies left from the wrong VIP port,
/// and once either ended the other's replies were dropped.
#[test]
fn a_second_flow_whose_replies_would_look_like_the_firsts_is_refused_and_the_first_keeps_its_replies() {
    let mut c = config(SchedulerKind::Wrr, None);
    let mut other = c.listeners[0].clone();
    other.port = 7001;
    other.backends.truncate(1);
    c.listeners[0].backends.truncate(1);
    c.listeners.push(other);
    let mut clb = Clb::new(c, 0);
    let (client, vip): (IpAddr, IpAddr) = ("198.18.64.7".parse().unwrap(), VIP.parse().unwrap());
    let to = |port| inner::build_udp((client, 5000), (vip, port), b"ping").unwrap();
    clb.handle_direct(0, to(7000)).unwrap();
    let Some(Sent::Backend { backend, .. }) = clb.next_out() else { panic!("the first flow not forwarded") };
    assert_eq!(clb.handle_direct(0, to(7001)), Err(ClbDrop::ReplyTaken), "the look-alike flow is refused");
    assert!(clb.next_out().is_none());
    assert_eq!(clb.conn_table().len(), 1);
    // The first flow's replies still leave from its own VIP port.
    let answer = inner::build_udp((backend.ip(), backend.port()), (client, 5000), b"pong").unwrap();
    clb.handle_backend_sealed(0, answer).unwrap();
    let Some(Sent::Client { bytes, .. }) = clb.next_out() else { panic!("no reply") };
    assert_eq!(inner::parse(&bytes).unwrap().key.src_port, 7000);
    assert_eq!(ClbDrop::ReplyTaken.name(), "reply_taken");
}

#[test]
fn wlc_balances_active_flows_per_weight() {
    let mut clb = Clb::new(tcp_config(SchedulerKind::Wlc, [10, 30]), 0);
    for port in 0..400 {
        open(&mut clb, 4000 + port);
    }
    let (b1, b2) = (B1.parse().unwrap(), B2.parse().unwrap());
    assert_eq!((clb.active_flows(b1), clb.active_flows(b2)), (100, 300), "active ∝ weight");
    // Close 100 flows of B2 with RSTs: the next new flows go to B2 until it is even.
    let mut closed = 0;
    for port in 0..400 {
        if closed < 100 && open(&mut clb, 4000 + port) == b2 {
            clb.handle_direct(0, tcp_segment(4000 + port, TcpControl::Rst)).unwrap();
            while clb.next_out().is_some() {}
            closed += 1;
        }
    }
    assert_eq!(clb.active_flows(b2), 200);
    let next: Vec<SocketAddr> = (0..100).map(|i| open(&mut clb, 6000 + i)).collect();
    assert!(next.iter().all(|b| *b == b2), "the least loaded per weight takes new flows");
}

#[test]
fn source_hash_sends_a_client_ip_to_one_backend() {
    let mut clb = Clb::new(config(SchedulerKind::Hash { table_size: 251 }, None), 0);
    let first = send(&mut clb, 0, 4000);
    assert!((4001..4050).all(|p| send(&mut clb, 0, p) == first));
}

#[test]
fn unbind_stops_forwarding_at_once() {
    let mut clb = Clb::new(config(SchedulerKind::Wrr, None), 0);
    let first = send(&mut clb, 0, 4000);
    clb.unbind(first);
    // Nothing from the unbound backend reaches the client any more.
    let stray = inner::build_udp((first.ip(), first.port()), ("198.18.64.7".parse().unwrap(), 4000), b"x").unwrap();
    assert_eq!(clb.handle_backend_sealed(0, stray), Err(ClbDrop::Unbound));
    // Its flow moves on the next packet, and no new flow goes there.
    assert_ne!(send(&mut clb, 0, 4000), first);
    assert!((5000..5020).all(|p| send(&mut clb, 0, p) != first));
    clb.bind(first);
    assert!((6000..6020).any(|p| send(&mut clb, 0, p) == first));
}

#[test]
fn idle_udp_flows_are_forgotten() {
    let mut clb = Clb::new(config(SchedulerKind::Wrr, None), 0);
    send(&mut clb, 0, 4000);
    assert_eq!(clb.conn_table().len(), 1);
    let mut now = 0;
    while now < crate::config::UDP_IDLE_NS + 2 * crate::config::SWEEP_INTERVAL_NS {
        now = clb.poll_timeout().unwrap();
        clb.handle_timeout(now);
        while clb.next_out().is_some() {}
    }
    assert_eq!(clb.conn_table().len(), 0);
    assert_eq!(clb.active_flows(B1.parse().unwrap()) + clb.active_flows(B2.parse().unwrap()), 0);
}

#[test]
fn nat64_takes_ipv6_clients_to_ipv4_backends_and_back() {
    let mut c = config(SchedulerKind::Wrr, None);
    c.listeners[0].vip = "fd00:a::20".parse().unwrap();
    let mut clb = Clb::new(c, 0);
    let client: (IpAddr, u16) = ("fd00:66::7".parse().unwrap(), 4000);
    let request = inner::build_udp(client, ("fd00:a::20".parse().unwrap(), 7000), b"ping").unwrap();
    clb.handle_direct(0, request).unwrap();
    let Some(Sent::Backend { backend, bytes }) = clb.next_out() else { panic!("not forwarded") };
    let seen = inner::parse(&bytes).unwrap().key;
    assert_eq!(seen.src, "198.18.32.1".parse::<IpAddr>().unwrap(), "the backend sees the SNAT address");
    assert_eq!((seen.dst, seen.dst_port), (backend.ip(), backend.port()));
    let answer = inner::build_udp((backend.ip(), backend.port()), (seen.src, seen.src_port), b"pong").unwrap();
    clb.handle_backend_sealed(0, answer).unwrap();
    let Some(Sent::Client { bytes }) = clb.next_out() else { panic!("no reply") };
    let back = inner::parse(&bytes).unwrap().key;
    assert_eq!((back.src, back.src_port), ("fd00:a::20".parse().unwrap(), 7000));
    assert_eq!((back.dst, back.dst_port), client);
}

#[test]
fn an_ipv6_client_a_backends_group_denies_is_refused_before_nat64_hides_its_address() {
    use crate::security::{Action, Ports, Rule, SecurityGroup};
    let rule = |source: &str, action| Rule {
        source: crate::cidr::Cidr::parse(source).unwrap(),
        ports: Ports::Range(7000, 7000),
        action,
    };
    let mut c = config(SchedulerKind::Wrr, None);
    c.listeners[0].vip = "fd00:a::20".parse().unwrap();
    // Every backend denies fd00:66::/64 and takes the rest of IPv6.
    let group = SecurityGroup {
        name: "no-66".into(),
        rules: vec![rule("fd00:66::/64", Action::Drop), rule("::/0", Action::Allow)],
    };
    for b in &mut c.listeners[0].backends {
        b.security_groups = vec![(0, group.clone())];
    }
    let mut clb = Clb::new(c, 0);
    let vip: IpAddr = "fd00:a::20".parse().unwrap();
    let denied = inner::build_udp(("fd00:66::7".parse().unwrap(), 4000), (vip, 7000), b"ping").unwrap();
    assert_eq!(clb.handle_direct(0, denied).map_err(|e| e.name()), Err("denied"));
    assert!(clb.next_out().is_none(), "nothing reaches a backend");
    let counted: Vec<_> = clb.backend_guard().counters().map(|(g, c)| (g, c.to_vec())).collect();
    assert_eq!(counted[0].1[0], crate::security::RuleCounters { matched: 1, denied: 1 }, "counted on the rule");
    assert_eq!(clb.backend_guard().denied(), 1);
    let allowed = inner::build_udp(("fd00:67::7".parse().unwrap(), 4000), (vip, 7000), b"ping").unwrap();
    clb.handle_direct(0, allowed).unwrap();
    assert!(matches!(clb.next_out(), Some(Sent::Backend { .. })), "another /64 is let through");
}

#[test]
fn snat_backends_get_the_client_in_a_toa_option() {
    let mut c = tcp_config(SchedulerKind::Wrr, [10, 10]);
    for b in &mut c.listeners[0].backends {
        b.snat = true;
    }
    let mut clb = Clb::new(c, 0);
    clb.handle_direct(0, tcp_segment(4000, TcpControl::Syn)).unwrap();
    let Some(Sent::Backend { bytes, .. }) = clb.next_out() else { panic!("not forwarded") };
    assert_eq!(inner::parse(&bytes).unwrap().key.src, "198.18.32.1".parse::<IpAddr>().unwrap());
    assert_eq!(inner::read_toa(&bytes), Some(("198.18.64.7".parse().unwrap(), 4000)));
}

/// A SYN with `option` appended as often as the 40 bytes of TCP options allow.
fn packed(mut syn: Vec<u8>, option: &[u8]) -> Vec<u8> {
    while let Ok(more) = inner::insert_tcp_option(&syn, option) {
        syn = more;
    }
    syn
}

#[test]
fn a_clients_own_toa_never_reaches_a_backend_and_the_nodes_always_fits_or_the_flow_is_refused() {
    let client: IpAddr = "198.18.64.7".parse().unwrap();
    let forged = inner::toa_option(("6.6.6.6".parse().unwrap(), 4242));
    let syn = inner::insert_tcp_option(&tcp_segment(4000, TcpControl::Syn), &forged).unwrap();
    // The client's claim, then NOPs up to the options' 40 bytes: no room left as sent.
    let padded = packed(syn.clone(), &[1]);
    assert!(inner::insert_tcp_option(&padded, &inner::toa_option((client, 4000))).is_err());
    for (snat, behind_nat) in [(false, false), (true, false), (false, true)] {
        for (packet, what) in [(&syn, "a forged TOA"), (&padded, "a forged TOA and padding")] {
            let mut c = tcp_config(SchedulerKind::Wrr, [10, 10]);
            for b in &mut c.listeners[0].backends {
                (b.snat, b.behind_nat) = (snat, behind_nat);
            }
            let mut clb = Clb::new(c, 0);
            clb.handle_direct(0, packet.clone()).unwrap();
            let Some(Sent::Backend { bytes, .. }) = clb.next_out() else { panic!("not forwarded") };
            // With SNAT or a NAT gateway the node names the client; with the client's
            // own address as source, nothing does. Never 6.6.6.6.
            let want = (snat || behind_nat).then_some((client, 4000));
            assert_eq!(inner::read_toa(&bytes), want, "{what}, snat {snat}, behind NAT {behind_nat}");
            assert_eq!(inner::parse(&bytes).unwrap().tcp.map(|f| f.syn), Some(true));
        }
    }
    // Options of the client's own filling every byte: the SNAT flow is refused, counted,
    // and leaves no entry behind.
    let stuffed = packed(tcp_segment(4000, TcpControl::Syn), &[30, 2]);
    let mut c = tcp_config(SchedulerKind::Wrr, [10, 10]);
    for b in &mut c.listeners[0].backends {
        b.snat = true;
    }
    let mut clb = Clb::new(c, 0);
    assert_eq!(clb.handle_direct(0, stuffed).map_err(|e| e.name()), Err("toa_no_room"));
    assert!(clb.next_out().is_none());
    assert_eq!(clb.conn_table().len(), 0);
}

#[test]
fn backends_behind_a_nat_gateway_get_the_client_in_a_toa_option_and_the_client_as_source() {
    let mut c = tcp_config(SchedulerKind::Wrr, [10, 10]);
    for b in &mut c.listeners[0].backends {
        b.behind_nat = true;
    }
    let mut clb = Clb::new(c, 0);
    clb.handle_direct(0, tcp_segment(4000, TcpControl::Syn)).unwrap();
    let Some(Sent::Backend { bytes, .. }) = clb.next_out() else { panic!("not forwarded") };
    // The gateway translates the source; the node leaves it alone and names the client.
    assert_eq!(inner::parse(&bytes).unwrap().key.src, "198.18.64.7".parse::<IpAddr>().unwrap());
    assert_eq!(inner::read_toa(&bytes), Some(("198.18.64.7".parse().unwrap(), 4000)));
    // Only the SYN carries it.
    clb.handle_direct(0, tcp_segment(4000, TcpControl::None)).unwrap();
    let Some(Sent::Backend { bytes, .. }) = clb.next_out() else { panic!("not forwarded") };
    assert_eq!(inner::read_toa(&bytes), None);
}

#[test]
fn snat_ports_are_unique_and_split_between_nodes() {
    let mut ports = std::collections::BTreeSet::new();
    for node in 0..2u16 {
        let mut c = config(SchedulerKind::Wrr, None);
        c.node_index = node;
        c.node_count = 2;
        c.auth = auth(node);
        for b in &mut c.listeners[0].backends {
            b.snat = true;
        }
        let mut clb = Clb::new(c, 0);
        // Its first output is the table request to its peer.
        assert!(matches!(clb.next_out(), Some(Sent::Peer { .. })));
        for port in 0..300 {
            clb.handle_direct(0, client(5000 + port)).unwrap();
            let Some(Sent::Backend { bytes, .. }) = clb.next_out() else { panic!() };
            let p = inner::parse(&bytes).unwrap().key.src_port;
            assert_eq!(p % 2, node ^ (SNAT_PORTS.start % 2), "node {node} uses its own share");
            assert!(ports.insert(p), "port {p} handed out twice");
        }
    }
}

/// Node `index` of a two-node region.
fn node(index: u16, scheduler: SchedulerKind, persistence_ns: Option<u64>) -> Clb {
    let mut c = config(scheduler, persistence_ns);
    c.node_index = index;
    c.node_count = 2;
    c.auth = auth(index);
    Clb::new(c, 0)
}

/// Runs `from`'s timers at `now` and hands every sync message it sends to `to`.
fn pump(from: &mut Clb, to: &mut Clb, now: u64) -> usize {
    from.handle_timeout(now);
    let mut n = 0;
    while let Some(out) = from.next_out() {
        if let Sent::Peer { node, bytes } = out {
            assert_eq!(node, to.node.index);
            to.handle_from_peer(now, &bytes).unwrap();
            n += 1;
        }
    }
    n
}

#[test]
fn a_peer_keeps_the_flows_another_node_scheduled_on_the_same_backend() {
    let (mut a, mut b, mut unsynced) =
        (node(0, SchedulerKind::Wrr, None), node(1, SchedulerKind::Wrr, None), node(1, SchedulerKind::Wrr, None));
    while a.next_out().is_some() {}
    // b and its twin have scheduled flows of their own, so their WRR is elsewhere.
    for port in 5000..5003 {
        send(&mut b, 0, port);
        send(&mut unsynced, 0, port);
    }
    let chosen: Vec<SocketAddr> = (1000..1050).map(|port| send(&mut a, 0, port)).collect();
    assert_eq!(pump(&mut a, &mut b, 0), 0, "nothing is sent before the sync interval");
    assert!(pump(&mut a, &mut b, crate::sync::SYNC_INTERVAL_NS) >= 1, "one batch (or a few) after it");
    let kept: Vec<SocketAddr> = (1000..1050).map(|port| send(&mut b, 1, port)).collect();
    assert_eq!(kept, chosen, "node 1 took over node 0's flows with their backends");
    assert_eq!(b.sync_stats().flows_adopted, 50);
    assert_eq!(b.flows_created(), 3, "adopted flows are not scheduled again");
    // Without the sync the same node would have moved some of them.
    let fresh: Vec<SocketAddr> = (1000..1050).map(|port| send(&mut unsynced, 1, port)).collect();
    assert_ne!(fresh, chosen, "the test's premise: WRR on another node picks differently");
    let stats = a.sync_stats();
    assert_eq!(stats.entries_sent, 50);
    assert!(stats.bytes_sent < 50 * 40 && stats.messages_sent <= 3, "batched: {stats:?}");
}

#[test]
fn a_restarted_node_learns_flows_and_persistence_from_a_peer() {
    let mut a = node(0, SchedulerKind::Wrr, Some(60_000_000_000));
    while a.next_out().is_some() {}
    let chosen: Vec<SocketAddr> = (1000..1004).map(|port| send(&mut a, 0, port)).collect();
    // Node 1 (re)starts: its first output asks node 0 for its table.
    let mut b = node(1, SchedulerKind::Wrr, Some(60_000_000_000));
    match b.next_out() {
        Some(Sent::Peer { node: 0, bytes }) => a.handle_from_peer(1, &bytes).unwrap(),
        other => panic!("expected a table request, got {other:?}"),
    }
    let mut dumped = 0;
    while let Some(out) = a.next_out() {
        if let Sent::Peer { node: 1, bytes } = out {
            b.handle_from_peer(1, &bytes).unwrap();
            dumped += 1;
        }
    }
    assert!(dumped >= 1);
    let kept: Vec<SocketAddr> = (1000..1004).map(|port| send(&mut b, 1, port)).collect();
    assert_eq!(kept, chosen);
    // Persistence came along: a new flow of the same client goes where its others do.
    assert!(chosen.iter().all(|&c| c == chosen[0]), "persistence kept the client on one backend");
    assert_eq!(send(&mut b, 1, 2000), chosen[0]);
}

#[test]
fn sync_from_outside_the_region_or_garbage_is_refused_and_changes_nothing() {
    let mut b = node(1, SchedulerKind::Wrr, None);
    let me = NodeId::Clb { region: 0, node: 1 };
    // Sealed by node 2 (a member of the test backbone, not of this two-node region),
    // and by node 0 but naming another sender.
    for (sealer, from) in [(2, 2), (0, 2), (0, 7)] {
        let bytes = keyring(NodeId::Clb { region: 0, node: sealer })
            .seal(me, Kind::Sync, &Message::Request { from }.emit())
            .unwrap();
        assert_eq!(b.handle_from_peer(0, &bytes), Err(ClbDrop::NotPeer), "node {sealer} as {from}");
    }
    // A POP's keys, an unsealed request and garbage.
    let pop = keyring(NodeId::Pop(0)).seal(me, Kind::Sync, &Message::Request { from: 0 }.emit()).unwrap();
    assert_eq!(b.handle_from_peer(0, &pop), Err(ClbDrop::NotPeer));
    let bare = Message::Request { from: 0 }.emit();
    assert_eq!(b.handle_from_peer(0, &bare), Err(ClbDrop::Auth(AuthError::Malformed)));
    assert!(b.handle_from_peer(0, b"AS\x01\x01garbage").is_err());
    assert_eq!(b.peer_flows(), 0);
    assert!(b.next_out().is_some_and(|o| matches!(o, Sent::Peer { node: 0, .. })));
    assert!(b.next_out().is_none(), "nothing answered");
}

#[test]
fn a_backend_hosts_packet_must_be_sealed_by_it_and_come_from_its_own_address() {
    let mut clb = Clb::new(config(SchedulerKind::Wrr, None), 0);
    let backend = send(&mut clb, 0, 4000);
    let other = [B1, B2].iter().map(|b| b.parse::<SocketAddr>().unwrap()).find(|b| *b != backend).unwrap();
    let answer = inner::build_udp((backend.ip(), backend.port()), ("198.18.64.7".parse().unwrap(), 4000), b"pong");
    let answer = answer.unwrap();
    let me = NodeId::Clb { region: 0, node: 0 };
    assert_eq!(clb.handle_from_backend(0, answer.clone()), Err(ClbDrop::Auth(AuthError::Malformed)), "bare");
    // The other backend's host speaking for this backend's address.
    let spoofed = keyring(host_of(other.ip())).seal(me, Kind::Backend, &answer).unwrap();
    assert_eq!(clb.handle_from_backend(0, spoofed), Err(ClbDrop::NotHost));
    let pop = keyring(NodeId::Pop(1)).seal(me, Kind::Backend, &answer).unwrap();
    assert_eq!(clb.handle_from_backend(0, pop), Err(ClbDrop::NotHost), "a POP's keys are no host's");
    assert!(clb.next_out().is_none(), "nothing reached the client");
    assert_eq!(clb.handle_backend_sealed(0, answer), Ok(()));
    assert!(matches!(clb.next_out(), Some(Sent::Pop { pop_id: 0, .. })));
}

#[test]
fn a_pops_packet_must_be_sealed_for_this_node_and_name_its_sealer() {
    let mut clb = Clb::new(config(SchedulerKind::Wrr, None), 0);
    let bare = ccn::encapsulate(Direction::ToRegion, 1, 1, &client(4000)).unwrap();
    assert_eq!(clb.handle_from_pop(0, &bare), Err(ClbDrop::Auth(AuthError::Malformed)));
    // POP 1 seals a packet whose CCN header says POP 2: replies would go to POP 2.
    let claims_other = ccn::encapsulate(Direction::ToRegion, 2, 1, &client(4000)).unwrap();
    let forged = keyring(NodeId::Pop(1)).seal(NodeId::Clb { region: 0, node: 0 }, Kind::Data, &claims_other);
    assert_eq!(clb.handle_from_pop(0, &forged.unwrap()), Err(ClbDrop::PopMismatch));
    let for_node_1 = from_pop(1, 1, &client(4000));
    assert_eq!(clb.handle_from_pop(0, &for_node_1), Err(ClbDrop::Auth(AuthError::Misdirected)));
    let good = from_pop(1, 0, &client(4000));
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x80;
    assert_eq!(clb.handle_from_pop(0, &flipped), Err(ClbDrop::Auth(AuthError::BadTag)));
    assert_eq!(clb.handle_from_pop(0, &good), Ok(()));
    assert_eq!(clb.handle_from_pop(0, &good), Err(ClbDrop::Auth(AuthError::Replayed)));
    assert_eq!(clb.flows_created(), 1, "only the authentic packet was scheduled");
}

#[test]
fn the_sync_queue_is_bounded_and_counts_what_it_drops() {
    let mut c = config(SchedulerKind::Maglev { table_size: 251 }, None);
    c.node_count = 2;
    c.conn_table_capacity = 20_000;
    let mut a = Clb::new(c, 0);
    for port in 0..10_000 {
        send(&mut a, 0, port);
    }
    let stats = a.sync_stats();
    assert_eq!(stats.queue_overflow, 10_000 - crate::sync::SYNC_QUEUE_MAX as u64);
}

/// A node whose one listener terminates QUIC on the VIP's port 4433 (ALPN
/// `anyedge-probe`: each stream relayed to B1 or B2 over TCP), and a client connecting
/// to it.
fn quic_node() -> (Clb, crate::quic::QuicHost, quinn_proto::ConnectionHandle) {
    let (identity, roots) = crate::identity::test_identity();
    let alpn = b"anyedge-probe".to_vec();
    let mut c = config(SchedulerKind::Wrr, None);
    (c.listeners[0].port, c.listeners[0].quic) = (4433, Some(identity.quic.with_alpn(std::slice::from_ref(&alpn))));
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn];
    let quic = quinn_proto::crypto::rustls::QuicClientConfig::try_from(std::sync::Arc::new(tls)).unwrap();
    let mut client = crate::quic::QuicHost::client(5);
    let vip = SocketAddr::new(VIP.parse().unwrap(), 4433);
    let ch = client.connect(0, quinn_proto::ClientConfig::new(std::sync::Arc::new(quic)), vip, VIP).unwrap();
    (Clb::new(c, 0), client, ch)
}

/// Moves the client's datagrams in through POP 0 and the node's replies back to it, one
/// millisecond a round from `now_ns` (well inside one sweep interval).
fn quic_rounds(clb: &mut Clb, client: &mut crate::quic::QuicHost, now_ns: &mut u64, rounds: usize) {
    let from: SocketAddr = "198.18.64.7:50000".parse().unwrap();
    let vip = SocketAddr::new(VIP.parse().unwrap(), 4433);
    for _ in 0..rounds {
        *now_ns += 1_000_000;
        let mut up = Vec::new();
        client.drive(*now_ns, &mut up);
        for (_, _, datagram) in up {
            let packet = inner::build_udp((from.ip(), from.port()), (vip.ip(), vip.port()), &datagram).unwrap();
            let _ = clb.handle_from_pop(*now_ns, &from_pop(0, 0, &packet));
        }
        clb.handle_timeout(*now_ns);
        let mut down = Vec::new();
        while let Some(sent) = clb.next_out() {
            let Sent::Pop { pop_id, bytes } = sent else { continue };
            let opened = at_pop(pop_id, &bytes);
            let (_, packet) = ccn::decapsulate(&opened).unwrap();
            let len = inner::parse(packet).unwrap().payload_len;
            client.receive(*now_ns, vip, None, &packet[packet.len() - len..], &mut down);
        }
    }
}

#[test]
fn what_a_quic_connection_holds_counts_against_the_nodes_budget_as_it_arrives_not_a_sweep_later() {
    let (mut clb, mut client, ch) = quic_node();
    let mut now_ns = 0;
    quic_rounds(&mut clb, &mut client, &mut now_ns, 20);
    assert_eq!(clb.quic_counts().connections, 1, "the handshake went through");
    // A stream whose backend never answers its SYN: what the client sends waits in the
    // relay, up to its bound.
    let conn = client.conn(ch).unwrap();
    let stream = conn.streams().open(quinn_proto::Dir::Bi).unwrap();
    let _ = conn.send_stream(stream).write(&[7u8; 48 * 1024]);
    quic_rounds(&mut clb, &mut client, &mut now_ns, 20);
    assert!(now_ns < crate::config::SWEEP_INTERVAL_NS, "no sweep has run");
    let held = clb.quic_held_bytes();
    assert!(held >= 32 * 1024, "the relay holds what the client sent: {held}");
    let counted = clb.l7.proxy().held_bytes();
    let expected = held + crate::quic_listener::QUIC_CONN_BYTES;
    assert_eq!(counted, expected, "the node's budget counts the connection and its buffers at once");
}

#[test]
fn a_quic_connection_made_while_no_backend_could_take_it_gets_one_once_one_can_and_its_stream_goes() {
    let (mut clb, mut client, ch) = quic_node();
    let (b1, b2): (SocketAddr, SocketAddr) = (B1.parse().unwrap(), B2.parse().unwrap());
    clb.set_weight(b1, 0);
    clb.set_weight(b2, 0);
    let mut now_ns = 0;
    quic_rounds(&mut clb, &mut client, &mut now_ns, 20);
    assert_eq!(clb.quic_counts().connections, 1, "the handshake went through");
    let conn = client.conn(ch).unwrap();
    let stream = conn.streams().open(quinn_proto::Dir::Bi).unwrap();
    conn.send_stream(stream).write(b"hello").unwrap();
    quic_rounds(&mut clb, &mut client, &mut now_ns, 200);
    let to_backends = |clb: &mut Clb| {
        let mut n = 0;
        while let Some(out) = clb.next_out() {
            n += usize::from(matches!(out, Sent::Backend { backend, .. } if backend == b2));
        }
        n
    };
    assert_eq!(to_backends(&mut clb), 0, "no backend takes new connections");
    // A backend takes them again, with nothing more from the client: the connection is
    // bound and its stream opens its backend connection (a SYN toward it) within a retry.
    clb.set_weight(b2, 1);
    let mut sent = 0;
    for _ in 0..200 {
        now_ns += 1_000_000;
        clb.handle_timeout(now_ns);
        sent += to_backends(&mut clb);
    }
    assert!(sent > 0, "the stream's backend connection opened");
}

#[test]
fn a_quic_connection_no_backend_takes_within_the_wait_is_closed() {
    let (mut clb, mut client, ch) = quic_node();
    for b in [B1, B2] {
        clb.set_weight(b.parse().unwrap(), 0);
    }
    let mut now_ns = 0;
    quic_rounds(&mut clb, &mut client, &mut now_ns, 20);
    assert_eq!(clb.quic_counts().connections, 1, "the handshake went through");
    let wait_ms = (crate::l7::BACKEND_WAIT_NS / 1_000_000) as usize;
    quic_rounds(&mut clb, &mut client, &mut now_ns, wait_ms - 100);
    assert!(!client.conn(ch).unwrap().is_closed(), "open while it waits");
    quic_rounds(&mut clb, &mut client, &mut now_ns, 300);
    let closed = client.conn(ch).is_none_or(|c| c.is_closed());
    assert!(closed, "closed once the wait is over");
}

/// What POP `pop` sends CLB node `node` of region 0 for a super-packet of `segment`
/// bytes per segment.
fn super_from_pop(pop: u16, node: u16, packet: &[u8], segment: u16) -> Vec<u8> {
    let repr = ccn::Repr::around(Direction::ToRegion, pop, 1, packet).unwrap().with_segment(segment);
    let mut bytes = vec![0u8; repr.buffer_len()];
    repr.emit_with(&mut bytes, packet);
    keyring(NodeId::Pop(pop)).seal(NodeId::Clb { region: 0, node }, Kind::Data, &bytes).unwrap()
}

/// A TCP packet carrying `len` bytes, from `src` to `dst`, with correct checksums.
fn tcp_with_payload(src: (IpAddr, u16), dst: (IpAddr, u16), len: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let repr = inner::bare_tcp(src.1, dst.1, TcpControl::Psh, 5_000, Some(9), None);
    inner::build_tcp(src.0, dst.0, &smoltcp::wire::TcpRepr { payload: &data, ..repr }).unwrap()
}

fn checksums_hold(p: &[u8]) -> bool {
    use smoltcp::wire::{IpAddress, Ipv4Packet, TcpPacket};
    let ip = Ipv4Packet::new_checked(p).unwrap();
    let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
    ip.verify_checksum() && tcp.verify_checksum(&IpAddress::Ipv4(ip.src_addr()), &IpAddress::Ipv4(ip.dst_addr()))
}

/// A layer-4 flow's super-packets cross the node whole, one envelope each way: the
/// client's reaches the backend's host behind the shim that says where to cut it, the
/// backend's reply reaches the POP with its segment size in the CCN header, both
/// rewritten with correct checksums over all of it.
#[test]
fn a_layer_four_flows_super_packets_cross_whole_both_ways() {
    let mut clb = Clb::new(tcp_config(SchedulerKind::Wrr, [10, 10]), 0);
    let client: IpAddr = "198.18.64.7".parse().unwrap();
    let vip: IpAddr = VIP.parse().unwrap();
    let backend = open(&mut clb, 41_000);
    let up = tcp_with_payload((client, 41_000), (vip, 7000), 20_000);
    clb.handle_from_pop(1_000, &super_from_pop(2, 0, &up, 1_448)).unwrap();
    let Some(Sent::BackendSuper { backend: to, segment, bytes }) = clb.next_out() else { panic!("not whole") };
    assert_eq!((to, segment), (backend, 1_448));
    let info = inner::parse(&bytes).unwrap();
    assert_eq!((info.key.dst, info.key.dst_port, info.payload_len), (backend.ip(), backend.port(), 20_000));
    assert!(checksums_hold(&bytes), "rewritten with a checksum over the whole super-packet");
    assert!(clb.next_out().is_none(), "one envelope");
    // The reply, sealed by the backend's host behind its shim.
    let down = tcp_with_payload((backend.ip(), backend.port()), (client, 41_000), 30_000);
    let shim = anyedge_proto::offload::shim(1_448).unwrap();
    let to = NodeId::Clb { region: 0, node: 0 };
    let sealed = keyring(host_of(backend.ip())).seal(to, Kind::Backend, &[&shim[..], &down].concat()).unwrap();
    clb.handle_from_backend(2_000, sealed).unwrap();
    let Some(Sent::Pop { pop_id: 2, bytes }) = clb.next_out() else { panic!("no reply to the POP") };
    let (repr, reply) = ccn::decapsulate(&at_pop(2, &bytes)).map(|(r, p)| (r, p.to_vec())).unwrap();
    assert_eq!(repr.segment, 1_448);
    let info = inner::parse(&reply).unwrap();
    assert_eq!((info.key.src, info.key.src_port, info.payload_len), (vip, 7000, 30_000));
    assert!(checksums_hold(&reply));
    assert!(clb.next_out().is_none(), "one envelope");
}

/// A terminated connection's stack never sees a super-packet: what a POP sends whole
/// to a layer-7 listener is taken as the segments the client's kernel would have sent
/// (here each is a segment of a connection the node does not know: a reset each).
#[test]
fn a_super_packet_for_a_layer_seven_listener_is_taken_as_its_segments() {
    let mut clb = http_node();
    let (vip, src): (IpAddr, IpAddr) = (VIP.parse().unwrap(), "203.0.0.1".parse().unwrap());
    let sup = tcp_with_payload((src, 1025), (vip, 80), 10 * 1_000);
    let dropped = clb.handle_from_pop(1_000, &super_from_pop(1, 0, &sup, 1_000));
    assert_eq!(dropped.map_err(|e| e.name()), Err("bad_cookie"));
    let mut resets = 0;
    while let Some(out) = clb.next_out() {
        let Sent::Pop { bytes, .. } = out else { panic!("{out:?}") };
        let (repr, reset) = ccn::decapsulate(&at_pop(1, &bytes)).map(|(r, p)| (r, p.to_vec())).unwrap();
        assert!(repr.segment == 0 && tcp_flags(&reset).rst);
        resets += 1;
    }
    assert_eq!(resets, 10, "one reset per segment");
}
