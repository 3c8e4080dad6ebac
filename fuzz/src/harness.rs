//! What the fuzz targets (`fuzz/fuzz_targets/`) and the seeded loops in
//! `tests/fuzz_parsers.rs` run: every wire parser with its oracles, and the POP, CLB and
//! egress cores stepped with packets from each peer, sealed with real keys. One copy,
//! included by both (`#[path]`), so a finding replays the same way in either.

use anyedge_ccn::auth::{AuthConfig, BackboneSecret, Keyring, NodeId};
use anyedge_pop::{Pop, PopConfig, Route};
use anyedge_proto::ccn::{self, Direction};
use anyedge_proto::seal::{self, Kind};
use anyedge_proto::{inner, liveness, sync};
use anyedge_region::gateway::{Gateway, GatewayConfig};
use anyedge_region::{BackendConfig, Clb, ClbConfig, HealthConfig, ListenerConfig, SchedulerKind};

/// Well-formed packets of every format: the seeds mutation starts from.
pub fn valid_packets() -> Vec<Vec<u8>> {
    let client = ("198.18.64.1".parse().unwrap(), 10_000);
    let vip = ("198.18.0.20".parse().unwrap(), 7000);
    let v6a = ("fd00::1".parse().unwrap(), 10_000);
    let v6b = ("fd00::2".parse().unwrap(), 7000);
    let udp4 = inner::build_udp(client, vip, &[7u8; 64]).unwrap();
    let udp6 = inner::build_udp(v6a, v6b, &[9u8; 40]).unwrap();
    let encapsulated = ccn::encapsulate(Direction::ToRegion, 1, 77, &udp4).unwrap();
    let reply = ccn::encapsulate(Direction::ToPop, 0, 77, &udp4).unwrap();
    let request = liveness::Repr { answer: false, peer: 3, seq: 77 }.emit().to_vec();
    let answer = liveness::answer(&request).unwrap().to_vec();
    let key = inner::parse(&udp4).unwrap().key;
    let entries = vec![
        sync::Entry::Flow { key, backend: "198.19.20.1:7000".parse().unwrap(), ttl_ms: 60_000 },
        sync::Entry::Persist {
            transport: anyedge_proto::Transport::Tcp,
            client: key.src,
            vip: "198.18.0.20:443".parse().unwrap(),
            backend: "198.19.20.10:8080".parse().unwrap(),
            ttl_ms: 1,
        },
    ];
    let batch = sync::Message::Entries { from: 1, entries }.emit();
    let table_request = sync::Message::Request { from: 1 }.emit();
    // TCP toward the layer-4 (SNAT, WLC) and layer-7 listeners, and a backend's answer.
    let c = [198, 18, 64, 1];
    let (v, b) = ([198, 18, 0, 20], [198, 19, 20, 1]);
    let get = b"GET / HTTP/1.1\r\nHost: vip\r\nX-Forwarded-For: 6.6.6.6\r\nContent-Length: 4\r\n\r\nbody";
    let tcp = vec![
        tcp_packet((c, 10_001), (v, 443), SYN, (1, 0), &[]),
        tcp_packet((c, 10_002), (v, 444), SYN, (1, 0), &[]),
        tcp_packet((c, 10_003), (v, 80), SYN, (1, 0), &[]),
        tcp_packet((c, 10_003), (v, 80), ACK | PSH, (2, 0), get),
        tcp_packet((b, 8080), (c, 10_001), SYN | ACK, (9, 2), &[]),
        tcp_packet((c, 10_001), (v, 443), FIN | ACK, (2, 10), &[]),
        tcp_packet((c, 10_002), (v, 444), RST, (2, 0), &[]),
        inner::build_udp(client, ("198.18.0.20".parse().unwrap(), 7001), &[5u8; 32]).unwrap(),
    ];
    // A client's TCP super-packet (three segments of 536 bytes behind one header), as the
    // CCN envelope a POP makes of it.
    let sup = tcp_packet((c, 10_004), (v, 444), ACK | PSH, (2, 0), &[6u8; 3 * 536]);
    let repr = ccn::Repr::around(Direction::ToRegion, 1, 78, &sup).unwrap().with_segment(536);
    let mut segmented = vec![0u8; repr.buffer_len()];
    repr.emit_with(&mut segmented, &sup);
    [udp4, udp6, encapsulated, reply, request, answer, batch, table_request]
        .into_iter()
        .chain(tcp)
        .chain([sup, segmented])
        .collect()
}

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

/// An IPv4/TCP packet with checksums (and an MSS option on a SYN, as kernels send).
fn tcp_packet(src: ([u8; 4], u16), dst: ([u8; 4], u16), flags: u8, (seq, ack): (u32, u32), payload: &[u8]) -> Vec<u8> {
    let options: &[u8] = if flags & SYN != 0 { &[2, 4, 0x05, 0xb4] } else { &[] };
    let tcp_len = 20 + options.len() + payload.len();
    let mut p = vec![0u8; 20 + tcp_len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src.0);
    p[16..20].copy_from_slice(&dst.0);
    let sum = checksum(&[&p[..20]]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    let t = &mut p[20..];
    t[0..2].copy_from_slice(&src.1.to_be_bytes());
    t[2..4].copy_from_slice(&dst.1.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = ((20 + options.len()) as u8 / 4) << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&64_240u16.to_be_bytes());
    t[20..20 + options.len()].copy_from_slice(options);
    t[20 + options.len()..].copy_from_slice(payload);
    let mut pseudo = [0u8; 12];
    pseudo[..4].copy_from_slice(&src.0);
    pseudo[4..8].copy_from_slice(&dst.0);
    pseudo[9] = 6;
    pseudo[10..].copy_from_slice(&(tcp_len as u16).to_be_bytes());
    let sum = checksum(&[&pseudo, &p[20..]]);
    p[36..38].copy_from_slice(&sum.to_be_bytes());
    p
}

/// The Internet checksum over `parts` laid end to end (each of even length but the last).
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        for c in part.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Every parser of the wire formats on `p`, with the oracles that must hold: what parses
/// emits back to the same bytes, an answer only answers a well-formed request, rewrites
/// never panic.
pub fn wire(p: &[u8]) {
    let _ = ccn::decapsulate(p);
    if let Ok(packet) = ccn::Packet::new_checked(p)
        && let Ok(repr) = ccn::Repr::parse(&packet)
    {
        // What parses emits a header that parses to the same (bits the format ignores
        // are written as zero: that is the normal form).
        let mut out = vec![0u8; repr.buffer_len()];
        repr.emit_with(&mut out, &p[repr.header_len()..repr.buffer_len()]);
        let again = ccn::Packet::new_checked(&out[..]).and_then(|q| ccn::Repr::parse(&q));
        assert_eq!(again.ok(), Some(repr), "ccn header round trip");
    }
    let _ = inner::parse(p);
    let _ = inner::transport_payload(p);
    if let Ok(packet) = liveness::Packet::new_checked(p) {
        let _ = liveness::Repr::parse(&packet);
    }
    // A probe answer is only ever the answer to a well-formed request.
    if let Ok(answer) = liveness::answer(p) {
        assert_eq!(
            liveness::parse_answer(&answer).ok(),
            liveness::Repr::parse(&liveness::Packet::new_unchecked(p)).ok().map(|r| (r.peer, r.seq))
        );
    }
    let _ = liveness::parse_answer(p);
    if let Ok(packet) = seal::Packet::new_checked(p) {
        let _ = seal::Repr::parse(&packet);
        let _ = (packet.payload(), packet.tag(), packet.covered());
    }
    // What parses emits back to the same bytes.
    if let Ok(m) = sync::Message::parse(p) {
        assert_eq!(m.emit(), p);
    }
    let mut q = p.to_vec();
    let _ = inner::rewrite(&mut q, Some(("198.18.0.1".parse().unwrap(), 1)), Some(("198.19.0.1".parse().unwrap(), 2)));
    let mut q6 = p.to_vec();
    let _ = inner::rewrite(&mut q6, None, Some(("fd00::9".parse().unwrap(), 2)));
    let _ = inner::translate(p, ("198.18.99.1".parse().unwrap(), 40_000), ("198.19.0.1".parse().unwrap(), 2));
    let _ = inner::insert_tcp_option(p, &inner::toa_option(("198.18.64.1".parse().unwrap(), 9)));
    // A SYN proxy's shift, and back, leaves the segment as a shift by nothing does (the
    // numbers as they were, the checksum filled in); a packet that parsed still parses,
    // as the same flow.
    let _ = inner::tcp_numbers(p);
    let mut there = p.to_vec();
    if inner::shift_tcp(&mut there, 0x9e37_79b9, 0x7f4a_7c15).is_ok() {
        if let Ok(info) = inner::parse(p) {
            assert_eq!(inner::parse(&there).map(|i| i.key).ok(), Some(info.key), "a shifted segment parses");
        }
        let before = inner::tcp_numbers(p);
        inner::shift_tcp(&mut there, 0u32.wrapping_sub(0x9e37_79b9), 0u32.wrapping_sub(0x7f4a_7c15)).unwrap();
        let mut unmoved = p.to_vec();
        inner::shift_tcp(&mut unmoved, 0, 0).unwrap();
        assert_eq!(there, unmoved, "shifted and back");
        assert_eq!(inner::tcp_numbers(&there), before, "the same numbers");
    }
    // A POP's MSS clamp: a SYN's MSS is at most the bound after it, the length and the flow
    // are what they were, and a second clamp changes nothing.
    let mut clamped = p.to_vec();
    if inner::clamp_mss(&mut clamped, 1_384) == Ok(true) {
        assert_eq!(clamped.len(), p.len());
        assert!(inner::tcp_numbers(&clamped).is_some_and(|(_, _, mss)| mss.is_some_and(|m| m <= 1_384)));
        assert_eq!(inner::parse(&clamped).map(|i| i.key).ok(), inner::parse(p).map(|i| i.key).ok());
        assert_eq!(inner::clamp_mss(&mut clamped, 1_384), Ok(false), "a clamp is done once");
    }
    // A client's TOA taken out is gone, and what is left is still a packet of the flow.
    if let Ok(stripped) = inner::strip_toa(p) {
        assert!(!inner::has_toa(&stripped), "a TOA left after strip_toa");
        assert_eq!(inner::read_toa(&stripped), None);
        let (before, after) = (inner::parse(p).map(|i| i.key), inner::parse(&stripped).map(|i| i.key));
        assert_eq!(before.ok(), after.ok(), "stripping options changed the flow");
    }
    let _ = inner::tcp_reset_for(p);
    reassembly(p);
    super_packets(p);
}

/// The super-packet paths (`offload`): a read from a TUN device made whole is a packet
/// that parses, longer than its segment size; cut, a packet's parts carry its payload in
/// order, each within the size; fitted, each part is within the bound; the shim reads.
fn super_packets(p: &[u8]) {
    use anyedge_proto::offload;
    let mut read = p.to_vec();
    if let Ok(segment) = offload::from_device(&mut read)
        && segment > 0
    {
        let info = inner::parse(&read[offload::VNET_HDR_LEN..]).expect("a super-packet made whole parses");
        assert!(info.payload_len > usize::from(segment), "a super-packet is longer than one segment");
    }
    let chunk = 1 + usize::from(p.last().copied().unwrap_or(0)) * 8;
    if let (Ok(parts), Ok(whole)) = (offload::cut(p, chunk), inner::parse(p)) {
        let mut payload = Vec::new();
        for part in &parts {
            let info = inner::parse(part).expect("a cut part parses");
            assert!(info.payload_len <= chunk.max(whole.payload_len.min(chunk)), "a part within the size");
            assert_eq!(info.key, whole.key, "a part of the same flow");
            payload.extend_from_slice(inner::transport_payload(part));
        }
        assert_eq!(payload, inner::transport_payload(p), "the parts carry the payload in order");
    }
    if let Ok(parts) = offload::fit(p, 536, 3_000) {
        assert!(parts.len() == 1 || parts.iter().all(|x| x.len() <= 3_000), "fitted parts within the bound");
    }
    let _ = offload::to_device(&mut p.to_vec(), 536);
    let _ = offload::unshim(p);
}

/// The input as fragments, each `[len_hi, len_lo, bytes…]`, 10 ms apart: what comes out
/// is a whole IPv4 datagram (no fragment bits, its total length its size), and the
/// reassembler never holds more than its bounds.
fn reassembly(p: &[u8]) {
    use anyedge_proto::reassembly::{self, DATAGRAMS_MAX, Reassembler};
    let mut r = Reassembler::new();
    let mut rest = p;
    let mut now = 0u64;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let (fragment, tail) = rest[2..].split_at(len);
        if let Some(whole) = r.push(now, fragment) {
            assert!(!reassembly::is_fragment(&whole), "a whole datagram is no fragment");
            let declared = match whole[0] >> 4 {
                6 => 40 + usize::from(u16::from_be_bytes([whole[4], whole[5]])),
                _ => usize::from(u16::from_be_bytes([whole[2], whole[3]])),
            };
            assert_eq!(declared, whole.len(), "its header declares its length");
        }
        assert!(r.pending() <= DATAGRAMS_MAX);
        rest = tail;
        now += 10_000_000;
    }
    let _ = r.push(now, p);
}

/// The fuzzed CLB node: a listener of every scheduler and kind a packet can reach
/// without TLS — UDP Maglev (7000) and source hash (7001), TCP WRR through SNAT with
/// persistence (443), TCP WLC (444), and the HTTP proxy (80).
pub fn clb() -> Clb {
    use anyedge_proto::Transport::{Tcp, Udp};
    let listener = |transport, port, scheduler, backends: &[(&str, u8)]| ListenerConfig {
        vip: "198.18.0.20".parse().unwrap(),
        transport,
        port,
        scheduler,
        backends: backends.iter().map(|(a, w)| BackendConfig::direct(a.parse().unwrap(), *w)).collect(),
        persistence_ns: None,
        layer7: false,
        http: false,
        tls: None,
        quic: None,
        alt_svc: None,
    };
    let web = [("198.19.20.1:8080", 10), ("198.19.20.2:8080", 30)];
    let mut snat = listener(Tcp, 443, SchedulerKind::Wrr, &web);
    snat.backends[0].snat = true;
    snat.persistence_ns = Some(60_000_000_000);
    let mut http = listener(Tcp, 80, SchedulerKind::Wrr, &web);
    (http.layer7, http.http) = (true, true);
    let listeners = vec![
        listener(Udp, 7000, SchedulerKind::Maglev { table_size: 251 }, &[("198.19.20.1:7000", 10)]),
        listener(
            Udp,
            7001,
            SchedulerKind::Hash { table_size: 251 },
            &[("198.19.20.1:7001", 10), ("198.19.20.2:7001", 5)],
        ),
        snat,
        listener(Tcp, 444, SchedulerKind::Wlc, &web),
        http,
    ];
    Clb::new(
        ClbConfig {
            address: "198.18.32.1".parse().unwrap(),
            address_v6: Some("fd00:18:32::1".parse().unwrap()),
            node_index: 0,
            node_count: 2,
            snat: vec!["198.18.32.1".parse().unwrap()],
            security_groups: vec![],
            listeners,
            health: HealthConfig::tcp(1_000_000_000, 500_000_000, 2, 2),
            conn_table_capacity: 64,
            source_prefix_v4: 32,
            pop_fallback: Default::default(),
            region: 0,
            auth: auth(CLB),
            backend_hosts: vec![("198.19.20.1".parse().unwrap(), HOST), ("198.19.20.2".parse().unwrap(), HOST)],
        },
        0,
    )
}

pub const POP: NodeId = NodeId::Pop(0);
pub const CLB: NodeId = NodeId::Clb { region: 0, node: 0 };
pub const PEER: NodeId = NodeId::Clb { region: 0, node: 1 };
pub const HOST: NodeId = NodeId::Backend { region: 0, host: 0 };

/// The fuzzed backbone: POP 0 and two CLB nodes of region 0, every pair keyed; the POP
/// and the CLB nodes hold region 0's QUIC connection-ID key.
pub fn auth(me: NodeId) -> AuthConfig {
    let peers: Vec<NodeId> = [POP, CLB, PEER, HOST].into_iter().filter(|&p| p != me).collect();
    let secret = BackboneSecret::from_seed(9);
    let cid_keys = if me == HOST { Vec::new() } else { vec![(0, secret.cid_key(0))] };
    AuthConfig { keys: secret.keys_for(me, &peers), cid_keys, ..AuthConfig::default() }
}

/// The cores under fuzzing: a POP, a CLB node, two egress gateways (NAT and router),
/// and authentic senders that seal what the fuzzer sends for them.
pub struct Cores {
    pub pop: Pop,
    pub clb: Clb,
    pub gateways: [Gateway; 2],
    /// POP, CLB, PEER, HOST.
    pub senders: Vec<Keyring>,
    /// Sealed packets that got past the tag check to the POP's parsers.
    pub opened: u32,
    /// Packets the gateways took from a CLB node.
    pub through_gateway: u32,
    /// SYN-ACKs the CLB node sent clients straight (a layer-7 listener's SYN cookies):
    /// client (address, port) → the sequence and acknowledgement numbers of the ACK that
    /// answers it. A client's ACK sent straight with acknowledgement number 0 gets these
    /// (a client that read its SYN-ACK), so the fuzzer gets past the cookie to the proxy.
    pub syn_acks: std::collections::HashMap<(std::net::IpAddr, u16), (u32, u32)>,
}

/// Whom a fuzzed packet comes from, and whether it arrives sealed by them.
#[derive(Debug, Clone, Copy)]
pub enum Sender {
    Client,
    /// A CLB node's reply, to the POP.
    ClbToPop {
        sealed: bool,
    },
    /// A POP's packet, to the CLB node.
    PopToClb {
        sealed: bool,
    },
    /// A packet straight from the internet, to the CLB node.
    Direct,
    /// The other CLB node's sync, to the CLB node.
    Peer {
        sealed: bool,
    },
    /// A backend host, to the CLB node.
    Backend {
        sealed: bool,
    },
    /// A CLB node, to the gateways.
    ClbToGateway {
        sealed: bool,
    },
    /// The internet, to the gateways.
    Internet,
}

impl Sender {
    /// The sender a selector byte names.
    pub fn of(b: u8) -> Sender {
        let sealed = b & 0x80 == 0;
        match b % 8 {
            0 => Sender::Client,
            1 => Sender::ClbToPop { sealed },
            2 => Sender::PopToClb { sealed },
            3 => Sender::Direct,
            4 => Sender::Peer { sealed },
            5 => Sender::Backend { sealed },
            6 => Sender::ClbToGateway { sealed },
            _ => Sender::Internet,
        }
    }
}

/// Flows the fuzzed tables hold at most.
pub const CAPACITY: usize = 64;

impl Cores {
    pub fn new() -> Cores {
        use anyedge_proto::Transport::{Tcp, Udp};
        let ports = vec![(Udp, 7000), (Udp, 7001), (Udp, 4433), (Tcp, 443), (Tcp, 444), (Tcp, 80)];
        let vip = "198.18.0.20".parse().unwrap();
        let routes = vec![Route { vip, region: 0, clb_nodes: 2, quic_ports: vec![4433], ports }];
        let pop = Pop::new(
            PopConfig {
                pop_id: 0,
                routes: std::sync::Arc::new(anyedge_pop::Routes::new(routes)),
                flow_table_capacity: CAPACITY,
                auth: auth(POP),
            },
            0,
        );
        // Egress nodes (as HOST) carrying the seeds' addresses both ways, so garbage also
        // reaches their translation.
        let carried = ["198.18.0.20", "198.18.64.1", "fd00::1", "fd00::2"].map(|a| a.parse().unwrap()).to_vec();
        let gateway_config = |public: Option<&str>| GatewayConfig {
            me: HOST,
            public: public.map(|p| p.parse().unwrap()),
            backends: carried.clone(),
            auth: auth(HOST),
            capacity: CAPACITY,
        };
        let gateways = [Gateway::new(gateway_config(Some("198.18.99.1")), 0), Gateway::new(gateway_config(None), 0)];
        let senders: Vec<Keyring> = [POP, CLB, PEER, HOST].map(|me| auth(me).keyring(me, 1 << 40)).into();
        Cores { pop, clb: clb(), gateways, senders, opened: 0, through_gateway: 0, syn_acks: Default::default() }
    }

    /// `p` from `from` at `now_ns`; then every core's output is taken, and the bounds
    /// every core promises are checked.
    pub fn step(&mut self, now_ns: u64, from: Sender, p: &[u8]) {
        let mut seal = |i: usize, to, kind, sealed: bool| {
            if sealed { self.senders[i].seal(to, kind, p).unwrap_or_default() } else { p.to_vec() }
        };
        match from {
            Sender::Client => {
                let _ = self.pop.handle_from_client(now_ns, p);
                // The same bytes as a TUN device with offloads hands a super-packet over.
                let segment = p.first().map_or(0, |&b| u16::from(b) * 6);
                let _ = self.pop.handle_super_from_client(now_ns, p, segment);
            }
            Sender::ClbToPop { sealed } => {
                let bytes = seal(1, POP, Kind::Data, sealed);
                let refused = matches!(self.pop.handle_from_clb(now_ns, &bytes), Err(anyedge_pop::PopDrop::Auth(_)));
                self.opened += u32::from(!refused);
            }
            Sender::PopToClb { sealed } => {
                let bytes = seal(0, CLB, Kind::Data, sealed);
                let _ = self.clb.handle_from_pop(now_ns, &bytes);
            }
            Sender::Direct => {
                let mut packet = p.to_vec();
                if let Ok(info) = inner::parse(&packet)
                    && info.tcp.is_some_and(|f| f.ack && !f.syn)
                    && let Some((seq, 0, _)) = inner::tcp_numbers(&packet)
                    && let Some(&(want_seq, want_ack)) = self.syn_acks.get(&(info.key.src, info.key.src_port))
                {
                    let _ = inner::shift_tcp(&mut packet, want_seq.wrapping_sub(seq), 0u32.wrapping_sub(want_ack));
                }
                let _ = self.clb.handle_direct(now_ns, packet);
            }
            Sender::Peer { sealed } => {
                let bytes = seal(2, CLB, Kind::Sync, sealed);
                let _ = self.clb.handle_from_peer(now_ns, &bytes);
            }
            Sender::Backend { sealed } => {
                let bytes = seal(3, CLB, Kind::Backend, sealed);
                let _ = self.clb.handle_from_backend(now_ns, bytes);
            }
            Sender::ClbToGateway { sealed } => {
                let bytes = seal(1, HOST, Kind::Backend, sealed);
                for g in &mut self.gateways {
                    self.through_gateway += u32::from(g.handle_from_clb(now_ns, &bytes).is_ok());
                }
            }
            Sender::Internet => {
                for g in &mut self.gateways {
                    let _ = g.handle_from_internet(now_ns, p);
                }
            }
        }
        if self.clb.poll_timeout().is_some_and(|at| at <= now_ns) {
            self.clb.handle_timeout(now_ns);
        }
        while self.pop.poll_output().is_some() {}
        while let Some(t) = self.clb.poll_output() {
            if let anyedge_ccn::Dest::Client(_) = t.dest
                && let Ok(info) = inner::parse(&t.bytes)
                && info.tcp.is_some_and(|f| f.syn && f.ack)
                && let Some((seq, ack, _)) = inner::tcp_numbers(&t.bytes)
            {
                if self.syn_acks.len() >= CAPACITY {
                    self.syn_acks.clear();
                }
                self.syn_acks.insert((info.key.dst, info.key.dst_port), (ack, seq.wrapping_add(1)));
            }
        }
        for g in &mut self.gateways {
            while g.poll_output().is_some() {}
            assert!(g.flows() <= CAPACITY, "the gateway's table stays bounded");
        }
        assert!(self.clb.conn_table().len() <= CAPACITY, "the connection table stays bounded");
        assert!(self.clb.peer_flows() <= CAPACITY, "so does the table of peers' flows");
    }
}

impl Default for Cores {
    fn default() -> Cores {
        Cores::new()
    }
}

/// The seeds `fuzz/corpus/wire` and `fuzz/corpus/cores` start from: each valid packet
/// alone, and for the cores, every valid packet sent by each sender, sealed, as records
/// of `[selector, length, bytes…]` (a millisecond apart).
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let packets = valid_packets();
    let mut out = Vec::new();
    for (i, p) in packets.iter().enumerate() {
        out.push(("wire", format!("valid-{i}"), p.clone()));
    }
    for who in 0..8u8 {
        let mut records = Vec::new();
        for p in &packets {
            let p = &p[..p.len().min(255)];
            records.extend_from_slice(&[who | 1 << 3, p.len() as u8]);
            records.extend_from_slice(p);
        }
        out.push(("cores", format!("sender-{who}"), records));
    }
    out
}
