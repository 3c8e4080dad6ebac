//! The simulator and the lab build their cores from one file through the same functions
//! (`anyedge_topology::nodes`); what each driver adds is its own: the keys (the
//! simulator's derived from the seed, the lab's from the key files `lab up` writes and
//! each node reads back) and the addresses (one function, `ClbAddresses::of`). Here each
//! driver's POP cores get the same client packets and must send every one to the same CLB
//! node, and a QUIC packet carrying an ID a CLB node issued (its node byte encrypted with
//! that driver's region key) to the node that issued it.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;

use anyedge_ccn::auth::{AuthConfig, BackboneSecret, NodeId};
use anyedge_ccn::{CidCipher, Dest};
use anyedge_pop::{Pop, PopConfig};
use anyedge_proto::Transport;
use anyedge_proto::quic::{CID_LEN, CID_MARKER};
use anyedge_topology::Topology;
use anyedge_topology::nodes::{self, ClbAddresses};
use common::net::tcp_syn_packet;

/// The shipped files and the fuzz seed with every feature.
fn files() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    ["topologies/small.yaml", "topologies/control.yaml", "topologies/global.yaml"]
        .iter()
        .chain(&["fuzz/corpus/topology/every-feature.yaml"])
        .map(|f| root.join(f))
        .collect()
}

/// The lab's keys as a node reads them: `lab up` writes every node's key file into a
/// state directory, the node reads its own back.
struct LabKeys {
    dir: PathBuf,
}

impl LabKeys {
    fn issue(t: &Topology, tag: &str) -> LabKeys {
        let dir = std::env::temp_dir().join(format!("anyedge-drivers-{}-{tag}", std::process::id()));
        let pops = (0..t.pops.len()).map(|p| (nodes::pop_node(p), format!("pop-{p}")));
        let clbs = t.regions.iter().enumerate().flat_map(|(r, region)| {
            (0..usize::from(region.clb_nodes)).map(move |i| (nodes::clb_node(r, i), format!("clb-{r}-{i}")))
        });
        let ids: Vec<(NodeId, String)> = pops.chain(clbs).collect();
        anyedge_lab::pki::issue_backbone_keys(&dir, t, &ids).unwrap();
        LabKeys { dir }
    }

    fn of(&self, name: &str) -> AuthConfig {
        let keys = anyedge_lab::pki::backbone_keys(&self.dir, name).unwrap();
        anyedge_lab::node::forwarder::auth_from_now(keys).unwrap()
    }
}

impl Drop for LabKeys {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A QUIC short-header packet from `client` to `vip` whose destination ID was issued by
/// node `node` under `cipher` (its 6 random bytes from `n`).
fn quic_packet(client: (IpAddr, u16), vip: (IpAddr, u16), node: u8, cipher: &CidCipher, n: u64) -> Vec<u8> {
    let nonce = n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes();
    let mut payload = vec![0x40, CID_MARKER, node ^ cipher.mask(&nonce[..CID_LEN - 2])];
    payload.extend_from_slice(&nonce[..CID_LEN - 2]);
    payload.extend_from_slice(&[0x55; 40]);
    anyedge_proto::inner::build_udp(client, vip, &payload).unwrap()
}

/// Where a POP core sends a client packet (the node and the flow hash), if anywhere.
fn sent(pop: &mut Pop, packet: &[u8]) -> Option<(Dest, u32)> {
    let _ = pop.handle_from_client(0, packet);
    let out = pop.poll_output().map(|t| (t.dest, t.flow_hash));
    while pop.poll_output().is_some() {}
    out
}

#[test]
fn the_simulators_and_the_labs_pop_cores_send_every_packet_to_the_same_clb_node() {
    for file in files() {
        let t = anyedge_topology::load(&file).unwrap();
        let name = file.file_stem().unwrap().to_string_lossy().to_string();
        let lab = LabKeys::issue(&t, &name);
        let sim = BackboneSecret::from_seed(t.seed);
        let mut checked = 0;
        for p in 0..t.pops.len() {
            let sim_auth = nodes::backbone_auth(&t, &sim, nodes::pop_node(p), 0);
            let lab_auth = lab.of(&format!("pop-{p}"));
            // The key file carries everything the simulator derives, only the values differ.
            let peers = |a: &AuthConfig| a.keys.iter().map(|k| k.peer).collect::<Vec<_>>();
            let regions = |a: &AuthConfig| a.cid_keys.iter().map(|(r, _)| *r).collect::<Vec<_>>();
            assert_eq!(peers(&lab_auth), peers(&sim_auth), "{name}: pop {p}'s backbone peers");
            assert_eq!(regions(&lab_auth), regions(&sim_auth), "{name}: pop {p}'s connection-ID keys");
            let config = nodes::pop_config(&t, p);
            let routes = config.routes.clone();
            let mut cores = [sim_auth, lab_auth].map(|auth| Pop::new(PopConfig { auth, ..config.clone() }, 0));
            for route in routes.iter() {
                let client = |i: u16| -> IpAddr {
                    if route.vip.is_ipv4() {
                        IpAddr::V4(Ipv4Addr::new(198, 18, 64, 1 + (i % 200) as u8))
                    } else {
                        format!("2001:db8::{}", 1 + i % 200).parse().unwrap()
                    }
                };
                for &(transport, port) in &route.ports {
                    for i in 0..64u16 {
                        let packet = match (transport, route.vip, client(i)) {
                            (Transport::Tcp, IpAddr::V4(vip), IpAddr::V4(c)) => {
                                tcp_syn_packet(SocketAddrV4::new(c, 20_000 + i), SocketAddrV4::new(vip, port), 1)
                            }
                            (Transport::Tcp, ..) => continue,
                            (Transport::Udp, vip, c) => {
                                anyedge_proto::inner::build_udp((c, 20_000 + i), (vip, port), b"same").unwrap()
                            }
                        };
                        let [a, b] = [0, 1].map(|d| sent(&mut cores[d], &packet));
                        assert!(a.is_some(), "{name}: pop {p} forwards {transport:?} to {}:{port}", route.vip);
                        assert_eq!(
                            a,
                            b,
                            "{name}: pop {p}, {transport:?} to {}:{port} from port {}",
                            route.vip,
                            20_000 + i
                        );
                        checked += 1;
                    }
                }
                // QUIC: a packet carrying an ID node `n` issued reaches node `n`, in both
                // drivers, each with the keys its CLB nodes hold (the lab's from their files).
                let r = usize::from(route.region);
                for &port in &route.quic_ports {
                    for n in 0..route.clb_nodes {
                        let keys = [
                            sim.cid_key(route.region),
                            lab.of(&format!("clb-{r}-{n}"))
                                .cid_keys
                                .iter()
                                .find(|(k, _)| *k == route.region)
                                .unwrap()
                                .1,
                        ];
                        for (d, key) in keys.iter().enumerate() {
                            for i in 0..16u16 {
                                let packet = quic_packet(
                                    (client(i), 30_000 + i),
                                    (route.vip, port),
                                    n as u8,
                                    &CidCipher::new(key),
                                    u64::from(i),
                                );
                                let to = sent(&mut cores[d], &packet).map(|(dest, _)| dest);
                                assert_eq!(
                                    to,
                                    Some(Dest::Node(nodes::clb_node(r, usize::from(n)))),
                                    "{name}: driver {d}"
                                );
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
        assert!(checked >= 128, "{name}: {checked} packets compared");
        // Both drivers give a CLB node the same addresses (one function).
        let plan = anyedge_lab::plan::Plan::new(&t);
        for (r, region) in t.regions.iter().enumerate() {
            for i in 0..usize::from(region.clb_nodes) {
                let a = ClbAddresses::of(r, i);
                assert_eq!(a.address, IpAddr::V4(plan.clb_inner_addr(r, i)));
                assert_eq!(a.address_v6, Some(IpAddr::V6(plan.clb_inner_addr6(r, i))));
            }
        }
    }
}

/// The chain a VIP presents to `client`, DER lengths, leaf first.
fn presented_lengths(
    server: &anyedge_region::termination::TlsTermination,
    client: std::sync::Arc<rustls::ClientConfig>,
) -> Vec<usize> {
    presented(server, client, "198.18.0.20").iter().map(|d| d.len()).collect()
}

/// The chain a VIP presents to `client` asking for `host` (a name, or the address: no
/// name), leaf first.
fn presented(
    server: &anyedge_region::termination::TlsTermination,
    client: std::sync::Arc<rustls::ClientConfig>,
    host: &str,
) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap();
    let mut c = rustls::ClientConnection::new(client, name).unwrap();
    let mut s = rustls::ServerConnection::new(server.0.clone()).unwrap();
    for _ in 0..4 {
        let mut wire = Vec::new();
        c.write_tls(&mut wire).unwrap();
        s.read_tls(&mut &wire[..]).unwrap();
        s.process_new_packets().unwrap();
        let mut back = Vec::new();
        s.write_tls(&mut back).unwrap();
        c.read_tls(&mut &back[..]).unwrap();
        c.process_new_packets().unwrap();
    }
    c.peer_certificates().expect("a chain").to_vec()
}

/// The lab's VIP chain (`lab up`'s issue, read back as a CLB node reads it) and the
/// simulator's, in every algorithm: the same certificates but for keys, signatures and
/// serial numbers' values, so the simulator's handshakes are the lab's size. An ECDSA
/// signature's length varies with its nonce in the lab (one or two bytes less, one time
/// in four or more); the simulator's always has the longest.
#[test]
fn the_simulators_vip_chain_is_the_size_of_the_one_the_lab_issues_in_every_algorithm() {
    use anyedge_region::identity::KeyAlgorithm;
    let t = anyedge_topology::parse_str("small.yaml", common::SMALL).unwrap();
    let vip: IpAddr = "198.18.0.20".parse().unwrap();
    for algorithm in KeyAlgorithm::ALL {
        let state =
            std::env::temp_dir().join(format!("anyedge-chain-size-{}-{}", std::process::id(), algorithm.name()));
        let _ = std::fs::remove_dir_all(&state);
        let ca = anyedge_lab::pki::Ca::generate(algorithm).unwrap();
        anyedge_lab::pki::issue_with(&state, &ca, &[], &anyedge_lab::pki::vip_names(&t, None)).unwrap();
        let lab = anyedge_lab::pki::vip_identities(&state, &t, 0).unwrap();
        let (sim, client) =
            anyedge_sim::tls::vip_pki(&[anyedge_sim::tls::VipTls::issued("edge", vec![vip])], algorithm).unwrap();
        // Each chain through a client that trusts its CA.
        let lab_client = trusting(&state.join("pki/ca.pem"));
        let lab_lengths = presented_lengths(&lab[0].1.https, lab_client);
        let sim_lengths = presented_lengths(&sim[0].1.https, client);
        let slack = algorithm.signature_len_max()
            - match algorithm {
                KeyAlgorithm::EcdsaP256 => 70,
                KeyAlgorithm::EcdsaP384 => 102,
                _ => algorithm.signature_len_max(),
            };
        assert_eq!(lab_lengths.len(), sim_lengths.len(), "{algorithm:?}");
        for (lab, sim) in lab_lengths.iter().zip(&sim_lengths) {
            let shorter_by = sim.checked_sub(*lab);
            assert!(
                shorter_by.is_some_and(|d| d <= slack),
                "{algorithm:?}: lab {lab_lengths:?}, simulator {sim_lengths:?}"
            );
        }
        let _ = std::fs::remove_dir_all(&state);
    }
}

/// A client configuration trusting only the root in the PEM file `root`.
fn trusting(root: &std::path::Path) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(root).unwrap()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    std::sync::Arc::new(config)
}

/// A VIP with chains of its own (another CA's, beside the topology file): the simulator
/// presents the user's bytes, as a lab's CLB node does, so its handshakes are the lab's
/// size; a run with HTTPS traffic to it answers every client; a chain file that is not
/// there stops the run, naming the field and the file.
#[test]
fn a_vip_with_a_chain_of_its_own_presents_the_same_bytes_in_the_simulator_and_the_lab() {
    let dir = std::env::temp_dir().join(format!("anyedge-own-chain-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let year = common::this_year();
    common::someones_ca(&dir, &[&["shop.example"], &["api.example"]], (year - 1, year + 1));
    let text = common::with_own_chains(common::SMALL.to_string())
        .replace("protocol: tcp, port: 443, requests_per_s", "protocol: tcp, port: 8443, requests_per_s");
    let file = dir.join("own.yaml");
    std::fs::write(&file, &text).unwrap();
    let t = anyedge_topology::load(&file).unwrap();

    let state = dir.join("state");
    let ca = anyedge_lab::pki::Ca::generate(t.tls.algorithm).unwrap();
    anyedge_lab::pki::issue_with(&state, &ca, &[], &anyedge_lab::pki::vip_names(&t, None)).unwrap();
    anyedge_lab::pki::copy_own_certificates(&t, &dir, &state).unwrap();
    let lab = anyedge_lab::pki::vip_identities(&state, &t, 0).unwrap();
    let (sim, client) = anyedge_sim::tls::vip_pki(&anyedge_sim::tls::vips(&t).unwrap(), t.tls.algorithm).unwrap();
    let lab_chain = presented(&lab[0].1.https, trusting(&dir.join("root.pem")), "api.example");
    let sim_chain = presented(&sim[0].1.https, client.clone(), "api.example");
    let given = std::fs::read(dir.join("certs/api.example.pem")).unwrap();
    let given: Vec<_> = {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        CertificateDer::pem_slice_iter(&given).collect::<Result<_, _>>().unwrap()
    };
    assert_eq!(lab_chain, given, "the lab presents the user's chain for the host asked for");
    assert_eq!(sim_chain, given, "and so does the simulator");
    // A simulated client names no host: the first chain, as to curl asking by address.
    let first = std::fs::read(dir.join("certs/shop.example.pem")).unwrap();
    let first_leaf = {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        CertificateDer::pem_slice_iter(&first).next().unwrap().unwrap()
    };
    assert_eq!(presented(&sim[0].1.https, client, "198.18.0.20")[0], first_leaf);

    let report = anyedge_sim::run(&t, |_| {}).unwrap().report;
    for group in report.clients.iter().filter(|c| c.traffic.iter().any(|tr| tr.name == "web")) {
        let web = group.traffic.iter().find(|tr| tr.name == "web").unwrap();
        assert!(web.anycast.received > 0 && web.anycast.loss_pct < 5.0, "{}: {:?}", group.name, web.anycast);
    }

    std::fs::remove_file(dir.join("certs/api.example.key")).unwrap();
    let t = anyedge_topology::load(&file).unwrap();
    let e = anyedge_sim::run(&t, |_| {}).err().expect("a missing key stops the run").0;
    assert!(e.contains("vips[0].certificates[1].key") && e.contains("certs/api.example.key"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
