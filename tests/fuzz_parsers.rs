//! Randomised fuzzing of every packet parser and the cores fed from the wire: random
//! bytes and mutated valid packets must give errors, never panics. Seeded, so a failure
//! replays; the iteration count is sized for CI.

use anyedge_ccn::ComponentRng;
use anyedge_ccn::auth::{AuthConfig, BackboneSecret, Keyring, NodeId};
use anyedge_pop::{Pop, PopConfig, Route};
use anyedge_proto::ccn::{self, Direction};
use anyedge_proto::seal::{self, Kind};
use anyedge_proto::{inner, liveness, sync};
use anyedge_region::{BackendConfig, Clb, ClbConfig, HealthConfig, ListenerConfig, SchedulerKind};

const ITERATIONS: usize = 200_000;

fn valid_packets() -> Vec<Vec<u8>> {
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
    vec![udp4, udp6, encapsulated, reply, request, answer, batch, table_request]
}

fn mutate(rng: &mut ComponentRng, seed_packets: &[Vec<u8>]) -> Vec<u8> {
    if rng.chance(0.2) {
        let len = rng.below(80) as usize;
        return (0..len).map(|_| rng.next_u64() as u8).collect();
    }
    let mut p = seed_packets[rng.below(seed_packets.len() as u64) as usize].clone();
    for _ in 0..1 + rng.below(4) {
        match rng.below(3) {
            0 if !p.is_empty() => {
                let i = rng.below(p.len() as u64) as usize;
                p[i] = rng.next_u64() as u8;
            }
            1 => p.truncate(rng.below(p.len() as u64 + 1) as usize),
            _ => p.push(rng.next_u64() as u8),
        }
    }
    p
}

fn clb() -> Clb {
    let listener = ListenerConfig {
        vip: "198.18.0.20".parse().unwrap(),
        transport: anyedge_proto::Transport::Udp,
        port: 7000,
        scheduler: SchedulerKind::Maglev { table_size: 251 },
        backends: vec![BackendConfig::direct("198.19.20.1:7000".parse().unwrap(), 10)],
        persistence_ns: None,
        layer7: false,
        http: false,
        tls: None,
        quic: None,
    };
    Clb::new(
        ClbConfig {
            address: "198.18.32.1".parse().unwrap(),
            address_v6: Some("fd00:18:32::1".parse().unwrap()),
            node_index: 0,
            node_count: 2,
            snat: vec!["198.18.32.1".parse().unwrap()],
            security_groups: vec![],
            listeners: vec![listener],
            health: HealthConfig::tcp(1_000_000_000, 500_000_000, 2, 2),
            conn_table_capacity: 64,
            pop_fallback: vec![vec![]],
            region: 0,
            auth: auth(CLB),
            backend_hosts: vec![("198.19.20.1".parse().unwrap(), HOST)],
        },
        0,
    )
}

const POP: NodeId = NodeId::Pop(0);
const CLB: NodeId = NodeId::Clb { region: 0, node: 0 };
const PEER: NodeId = NodeId::Clb { region: 0, node: 1 };
const HOST: NodeId = NodeId::Backend { region: 0, host: 0 };

/// The fuzzed backbone: POP 0 and two CLB nodes of region 0, every pair keyed.
fn auth(me: NodeId) -> AuthConfig {
    let peers: Vec<NodeId> = [POP, CLB, PEER, HOST].into_iter().filter(|&p| p != me).collect();
    AuthConfig { keys: BackboneSecret::from_seed(9).keys_for(me, &peers), epoch_ns: 0, salt: 0 }
}

#[test]
fn packet_parsers_never_panic_on_fuzzed_input() {
    let seeds = valid_packets();
    let mut rng = ComponentRng::new(0xf022, "fuzz/parsers");
    for _ in 0..ITERATIONS {
        let p = mutate(&mut rng, &seeds);
        let _ = ccn::decapsulate(&p);
        if let Ok(packet) = ccn::Packet::new_checked(&p[..]) {
            let _ = ccn::Repr::parse(&packet);
        }
        let _ = inner::parse(&p);
        let _ = inner::transport_payload(&p);
        if let Ok(packet) = liveness::Packet::new_checked(&p[..]) {
            let _ = liveness::Repr::parse(&packet);
        }
        // A probe answer is only ever the answer to a well-formed request.
        if let Ok(answer) = liveness::answer(&p) {
            assert_eq!(
                liveness::parse_answer(&answer).ok(),
                liveness::Repr::parse(&liveness::Packet::new_unchecked(&p[..])).ok().map(|r| (r.peer, r.seq))
            );
        }
        let _ = liveness::parse_answer(&p);
        if let Ok(packet) = seal::Packet::new_checked(&p[..]) {
            let _ = seal::Repr::parse(&packet);
            let _ = (packet.payload(), packet.tag(), packet.covered());
        }
        // What parses emits back to the same bytes.
        if let Ok(m) = sync::Message::parse(&p) {
            assert_eq!(m.emit(), p);
        }
        let mut q = p.clone();
        let _ =
            inner::rewrite(&mut q, Some(("198.18.0.1".parse().unwrap(), 1)), Some(("198.19.0.1".parse().unwrap(), 2)));
        let mut q6 = p.clone();
        let _ = inner::rewrite(&mut q6, None, Some(("fd00::9".parse().unwrap(), 2)));
    }
}

#[test]
fn cores_drop_fuzzed_packets_without_panicking() {
    let seeds = valid_packets();
    let mut rng = ComponentRng::new(0xf023, "fuzz/cores");
    let ports = vec![(anyedge_proto::Transport::Udp, 7000), (anyedge_proto::Transport::Udp, 4433)];
    let vip = "198.18.0.20".parse().unwrap();
    let routes = vec![Route { vip, region: 0, clb_nodes: 2, quic_ports: vec![4433], ports }];
    let mut pop = Pop::new(PopConfig { pop_id: 0, routes, flow_table_capacity: 64, auth: auth(POP) }, 0);
    let mut clb = clb();
    // An egress node (as HOST) carrying the seeds' addresses both ways, so garbage also
    // reaches its translation.
    let carried = ["198.18.0.20", "198.18.64.1", "fd00::1", "fd00::2"].map(|a| a.parse().unwrap()).to_vec();
    let gateway_config = |public: Option<&str>| anyedge_region::gateway::GatewayConfig {
        me: HOST,
        public: public.map(|p| p.parse().unwrap()),
        backends: carried.clone(),
        auth: auth(HOST),
        capacity: 64,
    };
    let mut gateways = [
        anyedge_region::gateway::Gateway::new(gateway_config(Some("198.18.99.1")), 0),
        anyedge_region::gateway::Gateway::new(gateway_config(None), 0),
    ];
    let mut through_gateway = 0;
    // Authentic senders, so garbage also arrives sealed and reaches the parsers behind
    // the tag check.
    let mut senders: Vec<Keyring> = [POP, CLB, PEER, HOST].map(|me| auth(me).keyring(me, 1 << 40)).into();
    let mut opened = 0;
    for i in 0..ITERATIONS as u64 {
        let p = mutate(&mut rng, &seeds);
        let mut sealed = |keys: &mut Keyring, to, kind| {
            if rng.chance(0.5) { keys.seal(to, kind, &p).unwrap() } else { p.clone() }
        };
        let (to_pop, to_clb, to_peer, from_host) = (
            sealed(&mut senders[1], POP, Kind::Data),
            sealed(&mut senders[0], CLB, Kind::Data),
            sealed(&mut senders[2], CLB, Kind::Sync),
            sealed(&mut senders[3], CLB, Kind::Backend),
        );
        let _ = pop.handle_from_client(i, &p);
        opened += u32::from(!matches!(pop.handle_from_clb(i, &to_pop), Err(anyedge_pop::PopDrop::Auth(_))));
        let _ = clb.handle_from_pop(i, &to_clb);
        let _ = clb.handle_direct(i, p.clone());
        let _ = clb.handle_from_peer(i, &to_peer);
        let _ = clb.handle_from_backend(i, from_host);
        let to_gateway = sealed(&mut senders[1], HOST, Kind::Backend);
        for g in &mut gateways {
            through_gateway += u32::from(g.handle_from_clb(i, &to_gateway).is_ok());
            let _ = g.handle_from_internet(i, &p);
            while g.poll_output().is_some() {}
            assert!(g.flows() <= 64, "the gateway's table stays bounded under garbage");
        }
        while pop.poll_output().is_some() {}
        while clb.poll_output().is_some() {}
    }
    assert!(through_gateway > 1_000, "garbage reached the gateways' translation ({through_gateway} times)");
    assert!(opened > 10_000, "sealed garbage got past the tag check to the parsers ({opened} times)");
    assert!(clb.conn_table().len() <= 64, "the connection table stays bounded under garbage");
    assert!(clb.peer_flows() <= 64, "so does the table of peers' flows");
}
