//! The lab with real packets (needs root; CI runs it as root, so it never skips there):
//! UDP and TCP through the VIP, the backend seeing the client's own address, weights
//! shaping flows, and `lab down` leaving nothing behind — also after a crash.

mod common;

use std::net::SocketAddrV4;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

#[test]
fn udp_and_tcp_through_the_vip_reach_backends_that_see_the_clients_own_address() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let lab = Lab::up("vip");
    let london = client_address(&lab, "london");
    let udp = lab.probe("london", "198.18.0.20:7000", "udp", 16);
    assert!(udp["received"].as_u64().unwrap() >= udp["sent"].as_u64().unwrap() * 95 / 100, "{udp}");
    assert_eq!(udp["client_addrs_seen"], serde_json::json!([london]), "the backend sees the client, not a proxy");
    assert_eq!(udp["source"], london);
    let game: Vec<&String> = udp["backends"].as_object().unwrap().keys().collect();
    assert!(game.iter().all(|b| b.ends_with(":7000")) && game.len() >= 2, "{udp}");

    // README's line, verbatim: `anyedge` inside `lab exec` is this binary, whatever PATH says.
    let readme = Command::new(exe())
        .args(["lab", "exec"])
        .arg(&lab.file)
        .args(["client/london", "--", "anyedge", "probe", "--target", "198.18.0.20:7000", "--protocol", "udp"])
        .args(["--rate", "200", "--duration", "1s", "--flows", "8"])
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .unwrap();
    assert!(readme.status.success(), "{}", String::from_utf8_lossy(&readme.stderr));
    // Near full-size datagrams: their backbone envelopes (request and echoed reply) are
    // bigger than the 1500-byte links and must be fragmented, not dropped.
    let big = lab.probe_with("london", "198.18.0.20:7000", "udp", 4, &["--size", "1400"]);
    assert!(big["received"].as_u64().unwrap() >= big["sent"].as_u64().unwrap() * 95 / 100, "{big}");
    assert!(big["backends"].as_object().unwrap().keys().all(|b| b.ends_with(":7000")), "{big}");
    // Datagrams past the clients' 1500-byte MTU arrive at the POP in fragments, and their
    // echoes leave the backend's kernel in fragments: each is reassembled where it
    // enters a node and crosses the VIP whole (before, 0 of 10 3,000-byte datagrams were
    // answered). A datagram is lost when any of its fragments is (0.2 % a packet on the internet).
    for size in ["3000", "9000"] {
        let r = lab.probe_with("london", "198.18.0.20:7000", "udp", 4, &["--size", size]);
        assert!(r["received"].as_u64().unwrap() >= r["sent"].as_u64().unwrap() * 85 / 100, "{size}: {r}");
        assert!(r["backends"].as_object().unwrap().keys().all(|b| b.ends_with(":7000")), "{size}: {r}");
    }
    let kyiv = client_address(&lab, "kyiv");
    let tcp = lab.probe("kyiv", "198.18.0.20:443", "tcp", 8);
    assert!(tcp["received"].as_u64().unwrap() >= tcp["sent"].as_u64().unwrap() * 95 / 100, "{tcp}");
    assert_eq!(tcp["client_addrs_seen"], serde_json::json!([kyiv]));
    assert_eq!(tcp["connections_opened"], 8);

    // Every node on the way says how long packets spent inside it, each way (what
    // `bench lab --breakdown` shows): every answered request crossed a POP, a CLB node and
    // a backend host going out, and each of them coming back.
    let status: Value = serde_json::from_slice(&lab.anyedge(&["lab", "status", "--json"]).stdout).unwrap();
    let residence = status["residence"].as_object().unwrap();
    let answered = udp["received"].as_u64().unwrap() + big["received"].as_u64().unwrap();
    for hop in ["pop/", "clb/", "backend/"] {
        for way in ["request", "reply"] {
            let nodes: Vec<&Value> =
                residence.iter().filter(|(n, _)| n.starts_with(hop)).map(|(_, r)| &r[way]).collect();
            let packets: u64 = nodes.iter().map(|r| r["packets"].as_u64().unwrap_or(0)).sum();
            assert!(packets >= answered, "{hop} {way}: {packets} packets < {answered} answered: {residence:?}");
            for r in nodes.iter().filter(|r| r["packets"].as_u64().unwrap_or(0) > 0) {
                let q = ["p50_ns", "p99_ns", "p999_ns", "max_ns"].map(|k| r[k].as_u64().unwrap());
                assert!(q[0] > 0 && q.windows(2).all(|w| w[0] <= w[1]), "{hop} {way}: {r}");
            }
        }
    }
}

#[test]
fn weights_shape_flows_in_the_lab() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let lab = Lab::up("weights");
    // web: 198.19.20.10 weight 10, .11 weight 30, WRR over 40 connections.
    let tcp = lab.probe("london", "198.18.0.20:443", "tcp", 40);
    let backends = tcp["backends"].as_object().unwrap();
    let replies = |b: &str| backends.get(b).and_then(Value::as_u64).unwrap_or(0) as f64;
    let share = replies("198.19.20.11:8080") / (replies("198.19.20.10:8080") + replies("198.19.20.11:8080"));
    assert!((share - 0.75).abs() < 0.1, "share of the weight-30 backend: {share} ({tcp})");
}

#[test]
fn lab_down_leaves_nothing_behind_even_after_a_crash() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let lab = Lab::up("down");
    let prefix = lab.prefix();
    assert!(namespaces_with(&prefix).len() > 10);
    let status: Value = serde_json::from_slice(&lab.anyedge(&["lab", "status", "--json"]).stdout).unwrap();
    assert_eq!(status["nodes"]["pop/paris"], "running", "it answers on its control socket: {status}");
    assert!(status["nodes"].as_object().unwrap().values().all(|s| s == "running"), "{status}");
    // The lab's nodes are rendered deployments too: `--deployment` finds the same nodes
    // through their node.json and asks each in its own state directory.
    let rendered = lab_state_dir(&lab).join("nodes");
    let out =
        Command::new(exe()).args(["lab", "status", "--deployment"]).arg(&rendered).arg("--json").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deployed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(deployed["nodes"], status["nodes"], "{deployed}");
    assert_eq!(deployed["up"], true, "{deployed}");
    // A node dies on its own: down still finds and removes everything.
    let killed = lab.anyedge(&["lab", "kill", "pop/paris"]);
    assert!(killed.status.success(), "{}", String::from_utf8_lossy(&killed.stderr));
    assert!(String::from_utf8_lossy(&killed.stdout).contains("pop/paris: stopped"), "kill says what it did");
    let status: Value = serde_json::from_slice(&lab.anyedge(&["lab", "status", "--json"]).stdout).unwrap();
    assert_eq!(status["nodes"]["pop/paris"], "stopped");
    let out = Command::new(exe()).args(["lab", "status", "--deployment"]).arg(&rendered).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "a deployment with a stopped node is not up");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("pop/paris")
            && String::from_utf8_lossy(&out.stdout).contains("stopped")
    );
    let down = lab.anyedge(&["lab", "down"]);
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    assert!(namespaces_with(&prefix).is_empty(), "left: {:?}", namespaces_with(&prefix));
    // A lab that is not up: status says so, with its own exit code.
    let status = lab.anyedge(&["lab", "status"]);
    assert_eq!(status.status.code(), Some(3), "{}", String::from_utf8_lossy(&status.stdout));
    assert!(String::from_utf8_lossy(&status.stdout).contains(": down"));
    let procs = Command::new("pgrep").args(["-f", &node_pattern(&lab, "")]).output().unwrap();
    assert!(procs.stdout.is_empty(), "node processes left: {}", String::from_utf8_lossy(&procs.stdout));
}

#[test]
fn the_lab_agrees_with_the_simulator_on_each_clients_p50_within_15_percent() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let lab = Lab::up("fidelity");
    let t = anyedge_topology::load(&lab.file).unwrap();
    let sim = anyedge_sim::run(&t, |_| {}).unwrap().report;
    for client in ["london", "rome", "kyiv"] {
        let game = &sim.clients.iter().find(|c| c.name == client).unwrap().traffic[0];
        let sim_p50_ms = game.anycast.rtt_ms.unwrap().p50;
        let probe = lab.probe(client, "198.18.0.20:7000", "udp", 8);
        let lab_p50_ms = probe["rtt_us"]["p50"].as_f64().unwrap() / 1000.0;
        let gap = (lab_p50_ms - sim_p50_ms).abs() / sim_p50_ms;
        assert!(
            gap <= 0.15,
            "{client}: lab p50 {lab_p50_ms:.1} ms, simulator {sim_p50_ms:.1} ms ({:.0} %)",
            gap * 100.0
        );
    }
}

#[test]
fn a_tcp_connection_survives_pop_failover_on_the_same_backend() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let lab = Lab::up("failover");
    let report = lab.dir.join("failover.json");
    // One TCP connection, 20 requests a second for 6 s; its POP dies after 1.5 s.
    let probe = Command::new(exe())
        .args(["lab", "exec"])
        .arg(&lab.file)
        .args(["client/london", "--", exe(), "probe", "--target", "198.18.0.20:443", "--protocol", "tcp"])
        .args(["--rate", "20", "--duration", "6s", "--flows", "1", "--json"])
        .arg(&report)
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let killed = lab.anyedge(&["lab", "kill", "pop/paris"]);
    assert!(killed.status.success(), "{}", String::from_utf8_lossy(&killed.stderr));
    let out = probe.wait_with_output().unwrap();
    assert!(out.status.success());
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["connections_opened"], 1);
    assert_eq!(r["received"], r["sent"], "every request of the one connection was answered: {r}");
    assert_eq!(r["backends"].as_object().unwrap().len(), 1, "and all by the same backend: {r}");
    // The router moved London to Warsaw: the path is longer now.
    let after = lab.probe("london", "198.18.0.20:7000", "udp", 4);
    assert!(after["received"].as_u64().unwrap() > 0, "{after}");
    // Paris comes back: once routing converges London is back on the short path.
    let started = lab.anyedge(&["lab", "start", "pop/paris"]);
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let back = lab.probe("london", "198.18.0.20:7000", "udp", 4);
    let p50 = |r: &Value| r["rtt_us"]["p50"].as_u64().unwrap();
    assert!(p50(&back) < p50(&after), "Paris {} µs should beat Warsaw {} µs", p50(&back), p50(&after));
}

#[test]
fn a_killed_backend_is_taken_out_by_health_checks() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let lab = Lab::up("health");
    let before = lab.probe("rome", "198.18.0.20:7000", "udp", 32);
    assert!(before["backends"].get("198.19.20.3:7000").is_some(), "{before}");
    let killed = lab.anyedge(&["lab", "kill", "backend/198.19.20.3:7000"]);
    assert!(killed.status.success(), "{}", String::from_utf8_lossy(&killed.stderr));
    // Health checks: 1 s interval, 500 ms timeout, 2 failures — gone within 3 s.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let after = lab.probe("rome", "198.18.0.20:7000", "udp", 32);
    assert!(after["backends"].get("198.19.20.3:7000").is_none(), "{after}");
    assert!(after["received"].as_u64().unwrap() >= after["sent"].as_u64().unwrap() * 95 / 100, "{after}");
}

/// `lab reload ARGS` while the probe `during` runs: it succeeds and signals `nodes` nodes;
/// once the probe is done (its report in `file`), every flow kept its backend and at least
/// 95 % of its requests were answered.
fn reload_under_flows(lab: &Lab, args: &[&str], nodes: usize, mut during: std::process::Child, file: &str) {
    let out = lab.anyedge(&[&["lab", "reload"][..], args].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.contains(&format!("SIGHUP to {nodes} nodes")), "every node: {said}");
    assert!(during.wait().unwrap().success());
    let r: Value = serde_json::from_slice(&std::fs::read(lab.dir.join(file)).unwrap()).unwrap();
    assert_eq!(r["flows_backend_changed"], 0, "every flow kept its backend: {r}");
    assert!(r["received"].as_u64().unwrap() >= r["sent"].as_u64().unwrap() * 95 / 100, "{r}");
}

/// The certificate (DER) a TLS server at `addr` offers a new connection from namespace
/// `ns`, the client presenting `client`'s certificate from `pki` (a rendered node's
/// `pki/`, the CA beside it) and asking for HTTP/2, as the nodes' gRPC clients do.
fn offered_certificate(ns: &str, addr: std::net::SocketAddr, pki: &std::path::Path, client: &str) -> Vec<u8> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
    use std::os::fd::AsRawFd;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(pki.join("ca.pem")).unwrap()).unwrap();
    let cert = CertificateDer::from_pem_file(pki.join(format!("{client}.pem"))).unwrap();
    let key = PrivateKeyDer::from_pem_file(pki.join(format!("{client}.key"))).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let netns = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    std::thread::spawn(move || {
        // SAFETY: setns moves this thread alone into the namespace the open file names.
        assert_eq!(unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns");
        let mut sock = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        let name = ServerName::IpAddress(addr.ip().into());
        let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut sock).unwrap();
        }
        conn.peer_certificates().unwrap()[0].to_vec()
    })
    .join()
    .unwrap()
}

/// A node's address on its backbone link (device `ccn`), with `port`.
fn backbone_addr(lab: &Lab, node_ns: &str, port: u16) -> std::net::SocketAddr {
    let out = Command::new("ip")
        .args(["-n", &format!("{}{node_ns}", lab.prefix()), "-4", "-o", "addr", "show", "dev", "ccn"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let ip = text.split_whitespace().skip_while(|w| *w != "inet").nth(1).and_then(|a| a.split('/').next()).unwrap();
    std::net::SocketAddr::new(ip.parse().unwrap(), port)
}

#[test]
fn the_backbone_runs_over_grpc_streams_and_grpc_servers_take_new_certificates_on_reload() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let lab = Lab::up_with("grpc", |text| {
        with_control(text.replace("bandwidth: 1Gbps }", "bandwidth: 1Gbps, transport: grpc }"))
    });
    assert!(std::fs::read_to_string(&lab.file).unwrap().contains("transport: grpc"));
    let udp = lab.probe("london", "198.18.0.20:7000", "udp", 8);
    assert!(udp["received"].as_u64().unwrap() >= udp["sent"].as_u64().unwrap() * 95 / 100, "{udp}");
    let tcp = lab.probe("kyiv", "198.18.0.20:443", "tcp", 4);
    assert_eq!(tcp["received"], tcp["sent"], "{tcp}");
    // The CLB node listens for the gRPC backbone (tonic) on its backbone address.
    let ss = Command::new("ip")
        .args(["netns", "exec", &format!("{}clb-frankfurt-1", lab.prefix()), "cat", "/proc/net/tcp"])
        .output()
        .unwrap();
    let grpc_port = format!(":{:04X}", 6083);
    assert!(String::from_utf8_lossy(&ss.stdout).contains(&grpc_port), "no gRPC listener");

    // Certificate rotation: the gRPC servers (control/1's Raft and API on 6095, the CLB
    // node's backbone on 6083) offer their directory's certificate to new connections.
    let nodes = lab_state_dir(&lab).join("nodes");
    let file_der = |node: &str| {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        CertificateDer::from_pem_file(nodes.join(format!("{node}/pki/{node}.pem"))).unwrap().to_vec()
    };
    let servers = [
        ("control-1", backbone_addr(&lab, "control-1", 6095)),
        ("clb-frankfurt-1", backbone_addr(&lab, "clb-frankfurt-1", 6083)),
    ];
    let pop_ns = format!("{}pop-paris", lab.prefix());
    let offered = |addr| offered_certificate(&pop_ns, addr, &nodes.join("pop-paris/pki"), "pop-paris");
    let old: Vec<Vec<u8>> = servers.iter().map(|(node, _)| file_der(node)).collect();
    for ((node, addr), old) in servers.iter().zip(&old) {
        assert!(offered(*addr) == *old, "{node} offers the certificate of its directory");
    }
    // london's flows run over the POPs' open gRPC streams through the reload.
    let during = spawn_probe(&lab, "london", "198.18.0.20:7000", "udp", 8, "grpc-during.json");
    std::thread::sleep(std::time::Duration::from_secs(2));
    // Every node: 3 control, 2 transits, 2 POPs, 2 CLB nodes, 5 backend hosts.
    reload_under_flows(&lab, &["--new-node-certificates"], 14, during, "grpc-during.json");
    for ((node, addr), old) in servers.iter().zip(&old) {
        let new = file_der(node);
        assert!(new != *old, "{node} was given a new certificate");
        assert!(offered(*addr) == new, "{node} offers its new certificate to a new connection");
    }
    let state = lab_state_dir(&lab);
    for node in ["control-1", "clb-frankfurt-1"] {
        let log = std::fs::read_to_string(state.join(format!("{node}.log"))).unwrap();
        assert!(log.contains("gRPC certificate read again"), "{node} says what it took: {log}");
    }
    // A SIGHUP stops no node (its default action would), and Raft kept its quorum.
    let status = lab.anyedge(&["lab", "status", "--json"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["up"], true, "every node runs on after its SIGHUP: {status}");
    let log = std::fs::read_to_string(state.join("backend-198.19.20.1.log")).unwrap_or_default();
    assert!(log.contains("nothing else to apply"), "a backend host checked its directory: {log}");
    assert_eq!(ctl_status(&lab)["quorum"], true);
}

#[test]
fn an_ipv6_vip_answers_udp_and_tcp_through_nat64_to_ipv4_backends() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let lab =
        Lab::up_with("v6", |text| text.replace("ipv4: 198.18.0.20", "ipv4: 198.18.0.20\n    ipv6: \"fd00:a::20\""));
    let london = client_address(&lab, "london");
    let udp = lab.probe("london", "[fd00:a::20]:7000", "udp", 8);
    assert!(udp["received"].as_u64().unwrap() >= udp["sent"].as_u64().unwrap() * 95 / 100, "{udp}");
    let source: std::net::Ipv6Addr = udp["source"].as_str().unwrap().parse().expect("the client speaks IPv6");
    assert_eq!(source.segments()[0] & 0xff00, 0xfd00, "lab addresses come from fd00::/8: {source}");
    // The first round trips are as fast as the rest: no address waits out duplicate detection.
    assert!(udp["rtt_us"]["max"].as_u64().unwrap() < 200_000, "{udp}");
    // Past the MTU: the client's fragments are reassembled at the POP, and the POP, the
    // VIP's voice, fragments the reply itself (IPv6 routers never do; before, 0 of 100).
    let big = lab.probe_with("london", "[fd00:a::20]:7000", "udp", 4, &["--size", "3000"]);
    assert!(big["received"].as_u64().unwrap() >= big["sent"].as_u64().unwrap() * 85 / 100, "{big}");
    let tcp = lab.probe("london", "[fd00:a::20]:443", "tcp", 4);
    assert_eq!(tcp["received"], tcp["sent"], "{tcp}");
    assert!(tcp["backends"].as_object().unwrap().keys().all(|b| b.ends_with(":8080")), "{tcp}");
    // NAT64: IPv4 backends see an IPv4 address the CLB owns, never the client's IPv4 one…
    for seen in udp["client_addrs_seen"].as_array().unwrap() {
        let seen: std::net::Ipv4Addr = seen.as_str().unwrap().parse().expect("an IPv4 address");
        assert_ne!(seen.to_string(), london);
    }
    // …and over TCP the TOA option in the CLB's SYN tells them the IPv6 client.
    let seen: Vec<&str> = tcp["client_addrs_seen"].as_array().unwrap().iter().filter_map(|a| a.as_str()).collect();
    assert_eq!(seen, [source.to_string()], "{tcp}");
}

/// The scheduling policy of a process (/proc/PID/stat field 41; 1 is SCHED_FIFO).
fn policy(pid: &str) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(38)?.parse().ok()
}

#[test]
fn lab_up_realtime_runs_every_node_sched_fifo_and_still_forwards() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let lab = Lab::up_flags("rt", |text| text, &["--realtime"]);
    let procs = Command::new("pgrep").args(["-f", &node_pattern(&lab, "")]).output().unwrap();
    let pids: Vec<String> = String::from_utf8_lossy(&procs.stdout).split_whitespace().map(String::from).collect();
    // 2 transits, 2 POPs, 2 CLB nodes, 5 backend hosts (BIRD's command lines name
    // their configuration, not the file).
    assert_eq!(pids.len(), 11, "every node of small.yaml runs: {pids:?}");
    for pid in &pids {
        assert_eq!(policy(pid), Some(1), "node process {pid} runs SCHED_FIFO");
        // A peer that closes its end (a `ctl status` that gave up) must not kill a node
        // writing to it: SIGPIPE stays ignored (its default action killed control nodes).
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let ignored = status.lines().find_map(|l| l.strip_prefix("SigIgn:")).unwrap().trim().to_string();
        let mask = u64::from_str_radix(&ignored, 16).unwrap();
        assert!(mask & (1 << (libc::SIGPIPE - 1)) != 0, "node process {pid} ignores SIGPIPE (SigIgn {ignored})");
    }
    let r = lab.probe("london", "198.18.0.20:7000", "udp", 4);
    assert_eq!(r["received"], r["sent"], "{r}");
    // A node started again keeps the lab's scheduling.
    assert!(lab.anyedge(&["lab", "kill", "pop/paris"]).status.success());
    assert!(lab.anyedge(&["lab", "start", "pop/paris"]).status.success());
    let procs = Command::new("pgrep").args(["-f", &node_pattern(&lab, "pop-paris")]).output().unwrap();
    let pid = String::from_utf8_lossy(&procs.stdout).trim().to_string();
    assert_eq!(policy(&pid), Some(1), "restarted pop/paris ({pid}) runs SCHED_FIFO");
}

#[test]
fn a_pop_reads_its_tun_device_on_every_queue_asked_for_and_flows_spread_over_them() {
    if !may_run() {
        return;
    }
    let _one = serial();
    // Impairments off: nothing but the forwarder between a request and its reply.
    let lab = Lab::up_flags("tunq", |text| text, &["--tun-queues", "3", "--no-impairments"]);
    // The kernel's view: each POP's device has three queues attached.
    for pop in ["pop-paris", "pop-warsaw"] {
        let ns = format!("{}{pop}", lab.prefix());
        let out = Command::new("ip").args(["netns", "exec", &ns, "ls", "/sys/class/net/ae0/queues"]).output().unwrap();
        let listed = String::from_utf8_lossy(&out.stdout).to_string();
        let rx: Vec<&str> = listed.split_whitespace().filter(|q| q.starts_with("rx-")).collect();
        assert_eq!(rx, ["rx-0", "rx-1", "rx-2"], "{ns}: {listed}");
    }
    // One request in flight: each reply leaves the POP when it arrives from the CLB node,
    // not with whatever packet or timer comes next (the probe counts a reply later than
    // 200 ms as lost and sends the next request; a reply that waited made 56 requests in
    // 2 s and lost 11 of them).
    let one = lab.probe_with("london", "198.18.0.20:7000", "udp", 1, &["--window", "1"]);
    let (sent, received) = (one["sent"].as_u64().unwrap(), one["received"].as_u64().unwrap());
    assert!(sent >= 100 && received + 1 >= sent, "one request in flight: {one}");
    // Many flows of each kind, answered whole through whichever queue they came in on.
    let udp = lab.probe("london", "198.18.0.20:7000", "udp", 32);
    assert!(udp["received"].as_u64().unwrap() >= udp["sent"].as_u64().unwrap() * 95 / 100, "{udp}");
    let tcp = lab.probe("london", "198.18.0.20:443", "tcp", 16);
    assert!(tcp["received"].as_u64().unwrap() >= tcp["sent"].as_u64().unwrap() * 95 / 100, "{tcp}");
    assert_eq!(tcp["connections_opened"], 16, "{tcp}");
    // Every queue of the POP that took London's flows read some of them (48 flows over 3
    // queues: one left without any is a chance of about 1 in 10^8).
    let status: Value = serde_json::from_slice(&lab.anyedge(&["lab", "status", "--json"]).stdout).unwrap();
    let tun = status["tun"].as_object().unwrap();
    assert_eq!(tun.len(), 2, "both POPs report their TUN device: {status}");
    let busiest = tun
        .values()
        .max_by_key(|t| t["packets_read"].as_array().unwrap().iter().filter_map(Value::as_u64).sum::<u64>());
    let busiest = busiest.unwrap();
    assert_eq!(busiest["queues"], 3, "{busiest}");
    let reads: Vec<u64> = busiest["packets_read"].as_array().unwrap().iter().filter_map(Value::as_u64).collect();
    assert_eq!(reads.len(), 3, "{busiest}");
    assert!(reads.iter().all(|&n| n > 0), "packets read by queue: {reads:?}");
    let text = String::from_utf8_lossy(&lab.anyedge(&["lab", "status"]).stdout).to_string();
    assert!(text.contains("TUN: 3 queue(s)"), "{text}");
    // A queue count the POP cannot use is refused before anything is made.
    let refused = Command::new(exe()).args(["lab", "up"]).arg(&lab.file).args(["--tun-queues", "0"]).output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not a queue count"), "{refused:?}");
}

#[test]
fn killing_the_control_leader_lets_the_next_write_commit_under_a_new_leader() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let lab = Lab::up_with("ctl-leader", with_control);
    let s = wait_status(&lab, "a leader", |s| s["leader"].is_string());
    let leader = s["leader"].as_str().unwrap().to_string();
    assert_eq!(s["members"].as_array().unwrap().len(), 3);
    assert!(lab.anyedge(&["lab", "kill", &leader]).status.success());
    // At once, before any election: the dead leader is no longer shown as leader, though
    // its followers still name it; two of three answer, a quorum.
    let s = ctl_status(&lab);
    assert_ne!(s["leader"].as_str(), Some(leader.as_str()), "{s}");
    assert_eq!((s["answering"].as_u64(), s["quorum"].as_bool()), (Some(2), Some(true)), "{s}");
    assert!(s["term"].as_u64() >= Some(1), "the term the live nodes are in, not 0: {s}");
    let out = ctl_write(&lab, &["set-weight", "198.19.20.1:7000", "20"]);
    assert!(out.status.success(), "write after the leader died: {}", String::from_utf8_lossy(&out.stderr));
    let s = ctl_status(&lab);
    assert_ne!(s["leader"].as_str(), Some(leader.as_str()), "{s}");
    assert_eq!(s["applied"][&leader], Value::Null, "the killed node does not answer: {s}");
    // Every POP and CLB node follows the table to the new commit.
    let commit = s["commit"].as_u64().unwrap();
    wait_status(&lab, "data-plane nodes applied the write", |s| {
        ["pop/paris", "pop/warsaw", "clb/frankfurt/1", "clb/frankfurt/2"]
            .iter()
            .all(|n| s["applied"][n].as_u64() >= Some(commit))
    });
    let routes = ctl_write(&lab, &["routes", "--json"]);
    let routes: Value = serde_json::from_slice(&routes.stdout).unwrap();
    let game = &routes["table"]["backend_groups"][0]["backends"][0];
    assert_eq!((game["addr"].as_str(), game["weight"].as_u64()), (Some("198.19.20.1:7000"), Some(20)), "{routes}");
    // An invalid change is refused before it is proposed, naming the field.
    let out = ctl_write(&lab, &["set-weight", "198.19.20.1:7000", "101"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("weight: `101` is not a whole number from 0 to 100"));
    let out = ctl_write(&lab, &["add-listener", "edge", "tcp", "443", "--backends", "web"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("port: port 443 is taken"), "{out:?}");
    assert_eq!(ctl_status(&lab)["commit"].as_u64(), Some(commit), "refused changes reach no log");
}

#[test]
fn ctl_set_weight_zero_stops_new_flows_to_that_backend() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let lab = Lab::up_with("ctl-weight", with_control);
    wait_status(&lab, "a leader", |s| s["leader"].is_string());
    let before = lab.probe("rome", "198.18.0.20:7000", "udp", 32);
    assert!(before["backends"].get("198.19.20.3:7000").is_some(), "{before}");
    write_and_spread(&lab, &["set-weight", "backend/198.19.20.3:7000", "0"]);
    // New flows avoid it. From another client: a new probe from rome could reuse a source
    // port of the first (the kernel picks them at random), and that flow is an existing
    // one, which drains on its backend as it should (1 of 32 flows did, once in CI).
    let after = lab.probe("kyiv", "198.18.0.20:7000", "udp", 32);
    assert!(after["backends"].get("198.19.20.3:7000").is_none(), "{after}");
    // The file's internet loss (0.3 % each way) still applies; the others answer.
    assert!(after["loss_pct"].as_f64().unwrap() < 5.0, "{after}");
}

#[test]
fn a_restarted_control_node_replays_its_own_log_then_catches_up() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let lab = Lab::up_with("ctl-restart", with_control);
    wait_status(&lab, "a leader", |s| s["leader"].is_string());
    for w in ["11", "12", "13"] {
        let out = ctl_write(&lab, &["set-weight", "198.19.20.2:7000", w]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let commit = wait_status(&lab, "all control nodes applied", |s| {
        let c = s["commit"].as_u64();
        (1..=3).all(|i| s["applied"][format!("control/{i}")].as_u64() == c)
    })["commit"]
        .as_u64()
        .unwrap();
    for i in 1..=3 {
        assert!(lab.anyedge(&["lab", "kill", &format!("control/{i}")]).status.success());
    }
    // With no control node at all, the data plane forwards with the table it has.
    let dark = lab.probe("rome", "198.18.0.20:7000", "udp", 8);
    assert!(dark["loss_pct"].as_f64().unwrap() < 5.0, "{dark}");
    // Alone, with no peer to learn from, control/1 applies what its log on disk holds.
    assert!(lab.anyedge(&["lab", "start", "control/1"]).status.success());
    wait_status(&lab, "control/1 replayed its log", |s| s["applied"]["control/1"].as_u64() == Some(commit));
    for i in 2..=3 {
        assert!(lab.anyedge(&["lab", "start", &format!("control/{i}")]).status.success());
    }
    let out = ctl_write(&lab, &["set-weight", "198.19.20.2:7000", "14"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_status(&lab, "every node caught up", |s| {
        let c = s["commit"].as_u64();
        c > Some(commit) && (1..=3).all(|i| s["applied"][format!("control/{i}")].as_u64() == c)
    });
}

#[test]
fn listeners_added_and_deleted_through_ctl_start_and_stop_serving() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let lab = Lab::up_with("ctl-listener", with_control);
    wait_status(&lab, "a leader", |s| s["leader"].is_string());
    let before = lab.probe_unanswered("rome", "198.18.0.20:7001", "udp", 4);
    assert_eq!(before["received"], 0, "no listener on 7001 yet: {before}");
    write_and_spread(&lab, &["add-listener", "edge", "udp", "7001", "--scheduler", "maglev", "--backends", "game"]);
    let added = lab.probe("rome", "198.18.0.20:7001", "udp", 16);
    assert!(added["loss_pct"].as_f64().unwrap() < 5.0, "the new listener serves: {added}");
    // Through the game group (.1, .2, .3 on 7000): which of them 16 flows hash to is
    // chance (once in a full run, none went to .1).
    let game = ["198.19.20.1:7000", "198.19.20.2:7000", "198.19.20.3:7000"];
    let seen = added["backends"].as_object().map(|b| b.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
    assert!(!seen.is_empty() && seen.iter().all(|b| game.contains(&b.as_str())), "through the game group: {added}");
    // By the VIP's address, persistence written as in the file; the write says what it did.
    let added =
        ctl_write(&lab, &["add-listener", "198.18.0.20", "tcp", "8443", "--backends", "web", "--persistence", "60s"]);
    let said = String::from_utf8_lossy(&added.stdout);
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    assert!(said.contains("VIP edge: tcp listener on port 8443 added (wrr over group web, persistence 60s)"), "{said}");
    let table = String::from_utf8_lossy(&ctl_write(&lab, &["routes"]).stdout).to_string();
    assert!(table.contains("tcp") && table.contains("8443") && table.contains("persistence 60s"), "{table}");
    write_and_spread(&lab, &["del-listener", "edge", "tcp", "8443"]);
    write_and_spread(&lab, &["del-listener", "edge", "udp", "7000"]);
    let deleted = lab.probe_unanswered("rome", "198.18.0.20:7000", "udp", 4);
    assert_eq!(deleted["received"], 0, "the deleted listener serves no more: {deleted}");
    let routes: Value = serde_json::from_slice(&ctl_write(&lab, &["routes", "--json"]).stdout).unwrap();
    let ports: Vec<u64> = routes["table"]["vips"][0]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["port"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, vec![443, 7001], "{routes}");
}

#[test]
fn lab_status_counts_the_packets_a_core_refuses_by_node_and_reason() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let lab = Lab::up("drops");
    let drops = |lab: &Lab| -> Value {
        let status: Value = serde_json::from_slice(&lab.anyedge(&["lab", "status", "--json"]).stdout).unwrap();
        status["drops"].clone()
    };
    let count = |drops: &Value, prefix: &str, reason: &str| -> u64 {
        let nodes = drops.as_object().into_iter().flatten();
        nodes.filter(|(node, _)| node.starts_with(prefix)).filter_map(|(_, r)| r[reason].as_u64()).sum()
    };
    let before = drops(&lab);
    // UDP to a VIP port no listener serves: the POP forwards it, the CLB core refuses it.
    let probe = lab.probe_unanswered("london", "198.18.0.20:7999", "udp", 4);
    let sent = probe["sent"].as_u64().unwrap();
    assert_eq!(probe["received"], 0, "{probe}");
    let after = drops(&lab);
    let no_listener = count(&after, "clb/frankfurt/", "no_listener") - count(&before, "clb/frankfurt/", "no_listener");
    // The file's internet and backbone lose a few packets on the way (0.3 % and less).
    assert!(no_listener <= sent && no_listener >= sent * 95 / 100, "sent {sent}, counted {no_listener}: {after}");
    // POPs forward any VIP port. (Their kernels' own IPv6 chatter on the TUN device, router
    // solicitations and the like, is neither TCP nor UDP: counted as `unsupported`.)
    for reason in ["no_route", "not_ours", "wrong_direction", "truncated", "malformed"] {
        assert_eq!(count(&after, "pop/", reason), count(&before, "pop/", reason), "{reason}: {before} → {after}");
    }
    let text = String::from_utf8_lossy(&lab.anyedge(&["lab", "status"]).stdout).to_string();
    assert!(text.contains("drops: no_listener"), "{text}");
}

#[test]
fn pops_notice_a_dead_clb_node_and_send_its_flows_to_the_survivor() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let lab = Lab::up("clb-death");
    let before = lab.probe("london", "198.18.0.20:7000", "udp", 16);
    assert!(before["received"].as_u64().unwrap() >= before["sent"].as_u64().unwrap() * 95 / 100, "{before}");
    let killed = lab.anyedge(&["lab", "kill", "clb/frankfurt/1"]);
    assert!(killed.status.success(), "{}", String::from_utf8_lossy(&killed.stderr));
    // Probing finds the dead node within pop_detect (small.yaml: 300 ms); wait it out.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // Rendezvous hashing put about half of 16 flows on node 0: all must be answered now.
    let after = lab.probe("london", "198.18.0.20:7000", "udp", 16);
    assert!(after["received"].as_u64().unwrap() >= after["sent"].as_u64().unwrap() * 95 / 100, "{after}");
    // Brought back, it is probed alive and takes flows again.
    let started = lab.anyedge(&["lab", "start", "clb/frankfurt/1"]);
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let back = lab.probe("london", "198.18.0.20:7000", "udp", 16);
    assert!(back["received"].as_u64().unwrap() >= back["sent"].as_u64().unwrap() * 95 / 100, "{back}");
    // Taken back: the POPs send its share of new flows to it again, which it schedules
    // and tells node 1 of (sync messages it sends after its restart).
    let status = lab.anyedge(&["lab", "status", "--json"]);
    let s: Value = serde_json::from_slice(&status.stdout).unwrap_or(Value::Null);
    let sent = s["sync"]["clb/frankfurt/1"]["messages_sent"].as_u64().unwrap_or(0);
    assert!(sent >= 2, "the restarted node schedules flows again (a table request, then batches): {s}");
}

/// Spawns `anyedge probe` in a client namespace for `secs` seconds, reporting to `name`.

#[test]
fn a_clb_node_killed_under_tcp_and_udp_load_keeps_every_connection_and_backend() {
    if !may_run() {
        return;
    }
    let _one = serial();
    // WRR on both listeners: without the region's table sync, the survivor would pick
    // other backends for many of the dead node's flows.
    let lab = Lab::up_with("clb-sync", |s| s.replace("scheduler: maglev", "scheduler: wrr"));
    let tcp = spawn_probe(&lab, "london", "198.18.0.20:443", "tcp", 8, "sync-tcp.json");
    let udp = spawn_probe(&lab, "london", "198.18.0.20:7000", "udp", 8, "sync-udp.json");
    std::thread::sleep(std::time::Duration::from_millis(2000));
    let killed = lab.anyedge(&["lab", "kill", "clb/frankfurt/1"]);
    assert!(killed.status.success(), "{}", String::from_utf8_lossy(&killed.stderr));
    for (child, name) in [(tcp, "sync-tcp.json"), (udp, "sync-udp.json")] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let r: Value = serde_json::from_slice(&std::fs::read(lab.dir.join(name)).unwrap()).unwrap();
        assert_eq!(r["flows_backend_changed"], 0, "{name}: every flow kept its backend: {r}");
        assert!(r["received"].as_u64().unwrap() >= r["sent"].as_u64().unwrap() * 85 / 100, "{name}: {r}");
        if name.contains("tcp") {
            assert_eq!(r["connections_opened"], 8, "no connection re-opened: {r}");
            assert_eq!(r["connections_broken"], 0, "none broke: {r}");
        }
    }
    // The survivor adopted the dead node's flows from its copy of the table.
    let status = lab.anyedge(&["lab", "status", "--json"]);
    let s: Value = serde_json::from_slice(&status.stdout).unwrap_or(Value::Null);
    let adopted = s["sync"]["clb/frankfurt/2"]["flows_adopted"].as_u64().unwrap_or(0);
    assert!(adopted >= 1, "the survivor's status counts the flows it adopted: {s}");
}

/// The simulator's predicted recovery (p50 over affected flows, ms) for `fault` at 3 s in
/// small.yaml, next to the lab's measured one: london's UDP flows at the game's rate
/// (one request per flow every 50 ms) while `node` is killed; a flow's outage is its
/// longest gap between two replies.
fn recovery_sim_and_lab(lab: &Lab, fault: &str, node: &str) -> (f64, f64, Vec<f64>) {
    let text = std::fs::read_to_string(&lab.file).unwrap();
    let text = text.split("faults:").next().unwrap().to_string() + &format!("faults:\n  - {{ at: 3s, {fault} }}\n");
    let mut sim_t = anyedge_topology::parse_str("small.yaml", &text).unwrap();
    sim_t.duration_ns = 8_000_000_000;
    let sim = anyedge_sim::run(&sim_t, |_| {}).unwrap().report;
    let sim_p50 = sim.faults[0].recovery_ms.expect("the simulator recovers").p50;
    let child = Command::new(exe())
        .args(["lab", "exec"])
        .arg(&lab.file)
        .args(["client/london", "--", exe(), "probe", "--target", "198.18.0.20:7000", "--protocol", "udp"])
        .args(["--rate", "320", "--duration", "5s", "--flows", "16", "--json"])
        .arg(lab.dir.join("recovery.json"))
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // The simulator's `down` is a machine that goes silent: a POP is frozen with its BGP
    // speaker (only BFD notices; a killed one would close its session at once), a CLB
    // node is killed (nothing but probes notices either way).
    let verb = if node.starts_with("pop/") { "freeze" } else { "kill" };
    let stopped = lab.anyedge(&["lab", verb, node]);
    assert!(stopped.status.success(), "{}", String::from_utf8_lossy(&stopped.stderr));
    let out = child.wait_with_output().unwrap();
    if verb == "freeze" {
        lab.anyedge(&["lab", "thaw", node]);
    }
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&std::fs::read(lab.dir.join("recovery.json")).unwrap()).unwrap();
    // Affected flows went silent for far longer than their 50 ms between requests.
    let mut gaps: Vec<f64> =
        r["longest_gap_ms"].as_array().unwrap().iter().filter_map(Value::as_f64).filter(|&g| g > 150.0).collect();
    gaps.sort_by(f64::total_cmp);
    assert!(!gaps.is_empty(), "no london flow noticed the loss of {node}: {r}");
    let lab_p50 = gaps[(gaps.len() - 1) / 2];
    (sim_p50, lab_p50, gaps)
}

#[test]
fn the_lab_recovers_from_a_dead_pop_and_a_dead_clb_node_as_the_simulator_predicts() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let interval_ms = 50.0;
    for (fault, node) in [("down: clb/frankfurt/1", "clb/frankfurt/1"), ("down: pop/paris", "pop/paris")] {
        let lab = Lab::up(if node.starts_with("pop") { "rec-pop" } else { "rec-clb" });
        let (sim, measured, gaps) = recovery_sim_and_lab(&lab, fault, node);
        eprintln!("{fault}: simulator p50 {sim:.1} ms, lab p50 {measured:.1} ms over {} flows {gaps:?}", gaps.len());
        assert!(
            (measured - sim).abs() <= 0.2 * sim + interval_ms,
            "{fault}: lab recovered in {measured:.1} ms (p50), the simulator predicts {sim:.1} ms"
        );
    }
}

#[test]
fn a_security_group_bound_to_a_backend_drops_its_clients_in_the_lab_as_in_the_simulator() {
    if !may_run() {
        return;
    }
    let _one = serial();
    // Set after the clients' addresses are known: the lab gives kyiv its address.
    let probe_lab = Lab::up("sg-addr");
    let kyiv = client_address(&probe_lab, "kyiv");
    drop(probe_lab);
    let group = format!(
        "security_groups:\n  - name: no-kyiv\n    bind: [backend/198.19.20.1:7000]\n    rules:\n      - {{ source: {kyiv}/32, port: 7000, action: drop }}\n      - {{ source: 0.0.0.0/0, port: any, action: allow }}\n"
    );
    let with_v6 = |text: String| text.replace("ipv4: 198.18.0.20", "ipv4: 198.18.0.20\n    ipv6: \"fd00:a::20\"");
    let lab = Lab::up_with("sg", |text| with_v6(text) + &group);
    let from_kyiv = lab.probe("kyiv", "198.18.0.20:7000", "udp", 32);
    assert!(from_kyiv["backends"].get("198.19.20.1:7000").is_none(), "kyiv is kept from .1: {from_kyiv}");
    assert!(from_kyiv["received"].as_u64().unwrap() < from_kyiv["sent"].as_u64().unwrap(), "{from_kyiv}");
    let from_london = lab.probe("london", "198.18.0.20:7000", "udp", 32);
    let status: Value = serde_json::from_slice(&lab.anyedge(&["lab", "status", "--json"]).stdout).unwrap();
    // Once in a full run, london's 32 flows all went to .2 and .3 (a 1-in-10,000 chance
    // with .1 healthy): the backends' health and the drops say why if it happens again.
    assert!(
        from_london["backends"].get("198.19.20.1:7000").is_some(),
        "london reaches .1: {from_london}\nhealth: {}\ndrops: {}",
        status["health"],
        status["drops"]
    );
    let denied = status["drops"]["backend/198.19.20.1"]["denied"].as_u64().unwrap_or(0);
    assert!(denied > 0, "the host counts what its group denied: {}", status["drops"]);
    // The host's public address (the direct path, no CLB on the way) keeps kyiv out too.
    let plan = anyedge_lab::plan::Plan::new(&anyedge_topology::load(&lab.file).unwrap());
    let direct = plan.backend_direct_addr("198.19.20.1".parse().unwrap()).unwrap();
    let target = format!("{direct}:7000");
    let from_kyiv = lab.probe_unanswered("kyiv", &target, "udp", 8);
    assert_eq!(from_kyiv["received"].as_u64(), Some(0), "kyiv on the direct path: {from_kyiv}");
    let from_london = lab.probe("london", &target, "udp", 8);
    assert!(from_london["received"].as_u64().unwrap() > 0, "london on the direct path: {from_london}");
    // Datagrams the network fragments carry no port after the first fragment: the host
    // reassembles before its rules judge them (without that, kyiv's 3,000- and
    // 9,000-byte datagrams were all answered), and london's still are.
    for size in ["3000", "9000"] {
        let from_kyiv = lab.probe_unanswered_with("kyiv", &target, "udp", 4, &["--size", size]);
        assert_eq!(from_kyiv["received"].as_u64(), Some(0), "kyiv's {size}-byte datagrams: {from_kyiv}");
        let from_london = lab.probe_with("london", &target, "udp", 4, &["--size", size]);
        assert_eq!(from_london["received"], from_london["sent"], "london's {size}-byte datagrams: {from_london}");
    }
    // A SYN to the host's port 7000 cut into 8-byte fragments (the pass: 5 of 5 got a
    // SYN-ACK where a whole SYN got none): kyiv's goes unanswered like its whole one,
    // london's is reassembled and answered.
    let syn_ack_for = |client: &str, fragmented: bool, port: u16| {
        let from = SocketAddrV4::new(client_address(&lab, client).parse().unwrap(), port);
        let to = SocketAddrV4::new(direct, 7000);
        let ns = format!("{}client-{client}", lab.prefix());
        common::net::in_ns(&ns, move || {
            let capture = common::net::Capture::open();
            let syn = common::net::tcp_syn_packet(from, to, 77);
            let packets = match fragmented {
                true => common::net::ipv4_fragments(&syn, 8, port),
                false => vec![syn],
            };
            let raw = common::net::RawSender::new();
            packets.iter().all(|p| raw.send(p))
                && capture.tcp_to(from, common::net::SYN | common::net::ACK, false, Duration::from_secs(2)).is_some()
        })
    };
    assert!(!syn_ack_for("kyiv", false, 45_001), "kyiv's whole SYN is dropped");
    assert!(!syn_ack_for("kyiv", true, 45_002), "kyiv's fragmented SYN is dropped too");
    assert!(syn_ack_for("london", true, 45_003), "london's fragmented SYN is answered");
    // Through the IPv6 VIP, NAT64 gives the backend an address of the CLB's: the CLB
    // judges the client by the backend's group before it translates. The group has no
    // IPv6 rule, so no IPv6 client reaches .1 (before, kyiv got 200 of 400 answers from it).
    let v6 = lab.probe("kyiv", "[fd00:a::20]:7000", "udp", 16);
    assert!(v6["backends"].get("198.19.20.1:7000").is_none(), "kyiv over IPv6 is kept from .1: {v6}");
    assert!(v6["backends"].as_object().is_some_and(|b| !b.is_empty()), "the other backends answer: {v6}");
}

#[test]
fn a_labs_state_is_root_only_and_lab_down_signals_only_its_own_processes() {
    use std::os::unix::fs::PermissionsExt;
    if !may_run() {
        return;
    }
    let _one = serial();
    let lab = Lab::up_with("private", with_control);
    wait_status(&lab, "a leader", |s| s["leader"].is_string());
    let dir = lab_state_dir(&lab);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    let mut checked = 0;
    let mut pending = vec![dir.clone()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let (path, kind) = (entry.path(), entry.file_type().unwrap());
            if kind.is_dir() {
                assert_eq!(mode(&path), 0o700, "{}", path.display());
                pending.push(path);
            } else if kind.is_file() {
                assert_eq!(mode(&path) & 0o077, 0, "{} is readable by others", path.display());
                checked += 1;
            }
        }
    }
    let names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name().into_string().unwrap()).collect();
    assert!(names.iter().any(|n| n == "state.json") && names.iter().any(|n| n.ends_with(".log")), "{names:?}");
    assert!(checked >= 20, "logs, Raft logs, keys and certificates checked ({checked})");
    // A PID the lab recorded that now belongs to something else is left alone.
    let mut stranger = Command::new("sleep").arg("30").spawn().unwrap();
    let state_file = dir.join("state.json");
    let mut state: Value = serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    let real = state["pids"]["backend/198.19.20.1"].as_u64().unwrap();
    state["pids"]["backend/198.19.20.1"] = stranger.id().into();
    std::fs::write(&state_file, serde_json::to_vec(&state).unwrap()).unwrap();
    let down = lab.anyedge(&["lab", "down"]);
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    assert!(String::from_utf8_lossy(&down.stderr).contains("no longer this lab's node"), "{down:?}");
    let spared = stranger.try_wait().unwrap().is_none();
    let _ = stranger.kill();
    let _ = stranger.wait();
    // The node the lab no longer knew of is the test's to stop.
    let _ = Command::new("kill").args(["-9", &real.to_string()]).status();
    assert!(spared, "the stranger was not signalled");
}

/// small.yaml's `edge` VIP with HTTP, HTTPS and QUIC listeners on the web backends: QUIC
/// 4433 and 4434 (mutual TLS) speak HTTP/3, 4435 relays streams (ALPN `anyedge-probe`).
fn with_every_listener(text: String) -> String {
    text.replace(
        "      - { protocol: tcp, port: 443, scheduler: wrr, backends: web }",
        "      - { protocol: tcp, port: 443, scheduler: wrr, backends: web }\n      - { protocol: http, port: 80, backends: web }\n      - { protocol: https, port: 8443, backends: web }\n      - { protocol: quic, port: 4433, backends: web }\n      - { protocol: https, port: 9443, backends: web, mtls: true }\n      - { protocol: quic, port: 4434, backends: web, mtls: true }\n      - { protocol: quic, port: 4435, backends: web, alpn: [anyedge-probe] }",
    )
}

#[test]
fn lab_reload_with_new_vip_certificates_gives_new_connections_the_new_one_and_keeps_open_ones() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let lab = Lab::up_with("rotate", with_every_listener);
    let certs = |r: &Value| r["server_certificates"].as_array().cloned().unwrap_or_default();
    let answered = |r: &Value| r["sent"].as_u64().unwrap() > 0 && r["received"] == r["sent"];
    let https = lab.probe("london", "198.18.0.20:8443", "https", 2);
    let quic = lab.probe("london", "198.18.0.20:4433", "quic", 2);
    let old = certs(&https);
    assert!(answered(&https) && old.len() == 1, "one certificate before: {https}");
    assert_eq!(certs(&quic), old, "HTTPS and QUIC present the VIP's one certificate: {quic}");
    // Connections opened before the rotation run through it.
    let mut tls_during = spawn_probe(&lab, "rome", "198.18.0.20:8443", "https", 4, "https-during.json");
    let mut quic_during = spawn_probe(&lab, "kyiv", "198.18.0.20:4433", "quic", 4, "quic-during.json");
    std::thread::sleep(std::time::Duration::from_secs(2));
    let out = lab.anyedge(&["lab", "reload", "--new-vip-certificates"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(tls_during.wait().unwrap().success() && quic_during.wait().unwrap().success());
    for file in ["https-during.json", "quic-during.json"] {
        let r: Value = serde_json::from_slice(&std::fs::read(lab.dir.join(file)).unwrap()).unwrap();
        assert_eq!(r["connections_broken"], 0, "{file}: no open connection broke: {r}");
        assert!(r["received"].as_u64().unwrap() >= r["sent"].as_u64().unwrap() * 95 / 100, "{file}: {r}");
        assert_eq!(certs(&r), old, "{file}: opened before, kept the old session: {r}");
    }
    // New connections see the new certificate: HTTPS, QUIC, and mutual TLS alike.
    let https = lab.probe("london", "198.18.0.20:8443", "https", 2);
    let new = certs(&https);
    assert!(answered(&https) && new.len() == 1 && new != old, "a new certificate after: {https}");
    for (target, protocol) in
        [("198.18.0.20:4433", "quic"), ("198.18.0.20:9443", "https"), ("198.18.0.20:4434", "quic")]
    {
        let r = lab.probe("london", target, protocol, 2);
        assert!(answered(&r), "{target}: {r}");
        assert_eq!(certs(&r), new, "{target} presents the new certificate: {r}");
    }
    let log = std::fs::read_to_string(lab_state_dir(&lab).join("clb-frankfurt-1.log")).unwrap();
    // HTTPS 8443 and 9443 (mutual), QUIC 4433, 4434 (mutual) and 4435 (streams relayed).
    assert!(log.contains("VIP certificates read again: 5 listeners"), "the CLB node says what it took: {log}");
}

/// QUIC connections held and handshakes accepted, over every CLB node of the lab.
fn quic_handshakes(lab: &Lab) -> (u64, u64) {
    let status = lab.anyedge(&["lab", "status", "--json"]);
    let s: Value = serde_json::from_slice(&status.stdout).unwrap_or(Value::Null);
    let nodes = s["quic"].as_object().cloned().unwrap_or_default();
    let sum = |k: &str| nodes.values().map(|q| q[k].as_u64().unwrap_or(0)).sum();
    (sum("connections"), sum("handshakes"))
}

#[test]
fn anyedge_probe_speaks_http_https_and_quic_and_the_backends_show_what_reached_them() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let lab = Lab::up_with("listeners", with_every_listener);
    let london = client_address(&lab, "london");
    for protocol in ["http", "https"] {
        let port = if protocol == "http" { 80 } else { 8443 };
        let r = lab.probe("london", &format!("198.18.0.20:{port}"), protocol, 4);
        assert!(r["sent"].as_u64().unwrap() > 0 && r["received"] == r["sent"], "{protocol}: {r}");
        assert_eq!(r["connections_broken"], 0, "{protocol}: {r}");
        // The CLB node terminated the connection and named london in X-Forwarded-For.
        assert_eq!(r["forwarded_for_seen"], serde_json::json!([london]), "{protocol}: {r}");
        assert_eq!(r["client_addrs_seen"], serde_json::json!([london]), "{protocol}: {r}");
        assert!(r["backends"].as_object().unwrap().keys().all(|b| b.ends_with(":8080")), "{protocol}: {r}");
    }
    // QUIC with ALPN h3 (the probe's default, what browsers offer): each request an
    // HTTP/3 POST that the CLB node forwards as HTTP/1.1 naming london in
    // X-Forwarded-For, as over HTTPS.
    let r = lab.probe("london", "198.18.0.20:4433", "quic", 4);
    assert!(r["sent"].as_u64().unwrap() > 0 && r["received"] == r["sent"], "quic: {r}");
    assert_eq!(r["connections_broken"], 0, "quic: {r}");
    assert_eq!(r["forwarded_for_seen"], serde_json::json!([london]), "quic h3: {r}");
    assert_eq!(r["toa_seen"], serde_json::json!([]), "HTTP/3 names the client in the request, not TOA: {r}");
    assert_eq!(r["client_addrs_seen"], serde_json::json!([london]), "quic: {r}");
    assert_eq!(r["source"], serde_json::json!(london), "the probe names the address it sent from: {r}");
    assert_eq!(quic_handshakes(&lab).1, 4, "one handshake per connection");
    let status: Value = serde_json::from_slice(&lab.anyedge(&["lab", "status", "--json"]).stdout).unwrap();
    let h3: u64 = status["quic"].as_object().unwrap().values().map(|q| q["h3_requests"].as_u64().unwrap_or(0)).sum();
    assert_eq!(h3, r["sent"].as_u64().unwrap(), "every request went as HTTP/3: {}", status["quic"]);
    // A listener offering another protocol relays each stream over the CLB node's own
    // TCP connection, whose TOA option names london (address and port); no
    // X-Forwarded-For.
    let r = lab.probe_with("london", "198.18.0.20:4435", "quic", 4, &["--alpn", "anyedge-probe"]);
    assert!(r["sent"].as_u64().unwrap() > 0 && r["received"] == r["sent"], "quic relayed: {r}");
    let toa = r["toa_seen"].as_array().unwrap();
    assert_eq!(toa.len(), 4, "one TOA client per QUIC connection: {r}");
    assert!(toa.iter().all(|a| a.as_str().unwrap().starts_with(&format!("{london}:"))), "{r}");
    assert_eq!(r["client_addrs_seen"], serde_json::json!([london]), "quic relayed: {r}");
    assert_eq!(r["forwarded_for_seen"], serde_json::json!([]), "quic relayed: {r}");
    // Mutual TLS: the probe presents the lab's client certificate (`lab exec` points it there).
    for (port, protocol) in [(9443, "https"), (4434, "quic")] {
        let r = lab.probe("london", &format!("198.18.0.20:{port}"), protocol, 2);
        assert!(r["sent"].as_u64().unwrap() > 0 && r["received"] == r["sent"], "mtls {protocol}: {r}");
    }
}

#[test]
fn a_quic_connection_moved_to_a_new_port_keeps_its_backend_without_a_new_handshake() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let lab = Lab::up_with("quic-migrate", with_every_listener);
    let r = lab.probe_with("kyiv", "198.18.0.20:4433", "quic", 6, &["--migrate-at", "1s"]);
    assert_eq!(r["migrations"], 6, "every flow moved to a new port: {r}");
    assert!(r["sent"].as_u64().unwrap() > 100 && r["received"] == r["sent"], "every request answered: {r}");
    assert_eq!(r["connections_broken"], 0, "{r}");
    assert_eq!(r["flows_backend_changed"], 0, "each connection kept its backend: {r}");
    assert_eq!(quic_handshakes(&lab).1, 6, "the new path needed no new handshake");
}

#[test]
fn a_quic_connection_survives_its_pops_death_and_then_a_move_to_a_new_port() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let lab = Lab::up_with("quic-pop", with_every_listener);
    // London reaches the VIP through Paris; Paris dies 1.5 s in, the flows move at 4 s.
    let report = lab.dir.join("quic-pop.json");
    let probe = Command::new(exe())
        .args(["lab", "exec"])
        .arg(&lab.file)
        .args(["client/london", "--", exe(), "probe", "--target", "198.18.0.20:4433", "--protocol", "quic"])
        .args(["--rate", "80", "--duration", "6s", "--flows", "4", "--migrate-at", "4s", "--json"])
        .arg(&report)
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let killed = lab.anyedge(&["lab", "kill", "pop/paris"]);
    assert!(killed.status.success(), "{}", String::from_utf8_lossy(&killed.stderr));
    let out = probe.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["connections_broken"], 0, "no connection broke: {r}");
    assert_eq!(r["migrations"], 4, "{r}");
    assert!(r["sent"].as_u64().unwrap() > 100 && r["received"] == r["sent"], "QUIC resent what the outage lost: {r}");
    assert_eq!(r["flows_backend_changed"], 0, "Warsaw sent each connection to the node that holds it: {r}");
    let gaps: Vec<f64> = r["longest_gap_ms"].as_array().unwrap().iter().map(|g| g.as_f64().unwrap()).collect();
    // 20 requests/s a flow: a gap of two intervals is the outage (BGP withdrew the
    // killed POP at once; the rest is the CLB nodes' probes noticing it).
    assert!(gaps.iter().all(|&g| g > 100.0), "each flow saw the outage: {gaps:?}");
    assert_eq!(quic_handshakes(&lab).1, 4, "no connection shook hands again");
}

#[test]
fn an_aioquic_client_opens_a_new_connection_after_its_region_restarts_and_gets_answers_again() {
    if !may_run() {
        return;
    }
    let Some(aioquic) = aioquic_path() else { return };
    let _one = serial();
    let lab = Lab::up_with("quic-restart", with_every_listener);
    // A request every 100 ms on a stream of its own; one unanswered for 3 s and the
    // client gives the connection up and opens another (aioquic ignores stateless resets).
    let script = format!("{}/tools/aioquic/reconnect.py", env!("CARGO_MANIFEST_DIR"));
    let client = Command::new(exe())
        .args(["lab", "exec"])
        .arg(&lab.file)
        .args(["client/kyiv", "--", "python3", &script, "198.18.0.20", "4435", "12", "0.1", "3", "anyedge-probe"])
        .env("PYTHONPATH", &aioquic)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    // The whole region restarts: every QUIC connection's keys are gone.
    for node in ["clb/frankfurt/1", "clb/frankfurt/2"] {
        let killed = lab.anyedge(&["lab", "kill", node]);
        assert!(killed.status.success(), "{}", String::from_utf8_lossy(&killed.stderr));
    }
    for node in ["clb/frankfurt/1", "clb/frankfurt/2"] {
        let started = lab.anyedge(&["lab", "start", node]);
        assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    }
    let out = client.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(r["connections"], 2, "one connection before the restart, one after: {r}");
    // Answered until the restart and again after it: outside the outage, answers came
    // at least every 250 ms (a request every 100 ms after the last answer, over a
    // 50–60 ms round trip: 54–61 answers in 12 s were seen, fewer on a loaded machine).
    let (answered, sent) = (r["answered"].as_u64().unwrap(), r["sent"].as_u64().unwrap());
    assert!(sent - answered <= 2, "{r}");
    let answering_s = r["last_s"].as_f64().unwrap() - r["first_s"].as_f64().unwrap() - r["gap_s"].as_f64().unwrap();
    assert!(answered as f64 * 0.25 >= answering_s, "answers kept coming outside the outage: {r}");
    assert!(r["last_s"].as_f64().unwrap() > 11.0, "answers to the end: {r}");
    assert!(r["gap_s"].as_f64().unwrap() < 6.0, "the outage is the restart and the client's 3 s timeout: {r}");
    // The restarted region answered the old connection's packets with a stateless reset
    // (a client that acts on them, as quinn does, reconnects at once).
    let status = lab.anyedge(&["lab", "status", "--json"]);
    let s: Value = serde_json::from_slice(&status.stdout).unwrap_or(Value::Null);
    let resets: u64 = ["clb/frankfurt/1", "clb/frankfurt/2"]
        .iter()
        .map(|n| s["quic"][n]["stateless_resets"].as_u64().unwrap_or(0))
        .sum();
    assert!(resets >= 1, "a stateless reset for the connection the region lost: {s}");
}

/// small.yaml with a NAT gateway `egress` (public 198.18.99.1) in frankfurt and two
/// internet backends reached `via` it or the router (web 198.19.99.7:8080 weight 30, game
/// 198.19.99.8:7000 weight 20), and `extra` appended (security groups).
fn with_internet_backends(via: &'static str, extra: &'static str) -> impl Fn(String) -> String {
    move |text: String| {
        let text = text
            .replacen(
                "        - { address: 198.19.20.11, port: 8080, weight: 30 }\n",
                &format!("        - {{ address: 198.19.20.11, port: 8080, weight: 30 }}\n        - {{ address: 198.19.99.7, port: 8080, weight: 30, via: {via} }}\n"),
                1,
            )
            .replacen(
                "        - { address: 198.19.20.3, port: 7000, weight: 20 }\n",
                &format!("        - {{ address: 198.19.20.3, port: 7000, weight: 20 }}\n        - {{ address: 198.19.99.8, port: 7000, weight: 20, via: {via} }}\n"),
                1,
            );
        format!("{text}\nnat_gateways:\n  - {{ name: egress, region: frankfurt, public: 198.18.99.1 }}\n{extra}")
    }
}

/// What the backends at `backend` (IP:port) reported of their clients in probe report `r`.
fn replies_from(r: &Value, backend: &str) -> u64 {
    r["backends"][backend].as_u64().unwrap_or(0)
}

#[test]
fn internet_backends_behind_a_nat_gateway_answer_through_it_and_see_its_public_address() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let lab = Lab::up_with("nat", with_internet_backends("nat/egress", ""));
    let london = client_address(&lab, "london");
    // UDP: the gateway's address is all the backend sees of its clients.
    let udp = lab.probe("london", "198.18.0.20:7000", "udp", 32);
    assert!(replies_from(&udp, "198.19.99.8:7000") > 0, "the internet backend answered: {udp}");
    let seen: Vec<&str> = udp["client_addrs_seen"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(seen.contains(&"198.18.99.1") && seen.contains(&london.as_str()), "{udp}");
    assert!(udp["received"].as_u64().unwrap() >= udp["sent"].as_u64().unwrap() * 95 / 100, "{udp}");
    // TCP: the CLB node named london in a TOA option, which crossed the gateway.
    let tcp = lab.probe("london", "198.18.0.20:443", "tcp", 24);
    assert!(replies_from(&tcp, "198.19.99.7:8080") > 0, "{tcp}");
    assert_eq!(tcp["client_addrs_seen"], serde_json::json!([london]), "{tcp}");
    let toa = tcp["toa_seen"].as_array().unwrap();
    assert!(!toa.is_empty() && toa.iter().all(|a| a.as_str().unwrap().starts_with(&format!("{london}:"))), "{tcp}");
    assert_eq!(tcp["received"], tcp["sent"], "{tcp}");
    // Health checks cross the gateway too: no CLB node sees either backend unhealthy.
    let status = lab.anyedge(&["lab", "status", "--json"]);
    let s: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(s["nodes"]["nat/egress"], "running", "{s}");
    let unhealthy: Vec<String> = s["health"]
        .as_object()
        .map(|m| {
            m.values()
                .flat_map(|b| b.as_object().unwrap().iter().filter(|(_, v)| *v != "healthy").map(|(k, _)| k.clone()))
                .collect()
        })
        .unwrap_or_default();
    assert!(unhealthy.is_empty(), "{s}");
}

#[test]
fn internet_backends_via_the_router_see_the_clients_own_address_in_the_lab() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let lab = Lab::up_with("inet-router", with_internet_backends("router", ""));
    let london = client_address(&lab, "london");
    let udp = lab.probe("london", "198.18.0.20:7000", "udp", 32);
    assert!(replies_from(&udp, "198.19.99.8:7000") > 0, "{udp}");
    assert_eq!(udp["client_addrs_seen"], serde_json::json!([london]), "no translation on the way: {udp}");
}

#[test]
fn a_backend_whose_security_group_leaves_out_the_nat_gateway_is_unhealthy_and_lab_status_says_why() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let sg = "security_groups:\n  - name: be-public\n    bind: [backend/198.19.99.7:8080]\n    rules:\n      - { source: 198.18.128.0/18, port: any, action: allow }\n";
    let lab = Lab::up_with("nat-sg", with_internet_backends("nat/egress", sg));
    // Checks every 1 s, unhealthy after 2 unanswered: a few seconds.
    let started = std::time::Instant::now();
    let s = loop {
        let out = lab.anyedge(&["lab", "status", "--json"]);
        let s: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if s["health"]["clb/frankfurt/1"]["198.19.99.7:8080"] == "unhealthy" {
            break s;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "never unhealthy: {s}");
        std::thread::sleep(std::time::Duration::from_millis(250));
    };
    let why = s["denied"]["backend/198.19.99.7"].as_str().unwrap_or_default();
    assert!(why.contains("be-public") && why.contains("198.18.99.1"), "{s}");
    let text = lab.anyedge(&["lab", "status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("sees backend 198.19.99.7:8080 unhealthy") && text.contains("allows 198.18.99.1"), "{text}");
    // Healthy backends take every flow: nothing is lost to the dropped one.
    let tcp = lab.probe("kyiv", "198.18.0.20:443", "tcp", 16);
    assert_eq!(replies_from(&tcp, "198.19.99.7:8080"), 0, "{tcp}");
    assert_eq!(tcp["received"], tcp["sent"], "{tcp}");
}

#[test]
fn a_probe_to_a_port_nobody_serves_ends_on_time_and_exits_1_with_its_report() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let lab = Lab::up("dead-port");
    for protocol in ["tcp", "udp", "quic"] {
        let started = std::time::Instant::now();
        let r = lab.probe_unanswered("london", "198.18.0.20:7999", protocol, 2);
        let took = started.elapsed();
        // 2 s of run, 1 s of grace, and lab exec's own start.
        assert!(took < std::time::Duration::from_secs(6), "{protocol}: the probe took {took:?}");
        assert_eq!(r["received"], 0, "{protocol}: {r}");
        assert!(!r["timeline"].as_array().unwrap().is_empty() || protocol != "udp", "{protocol}: {r}");
    }
}

#[test]
fn lab_capture_records_a_nodes_packets_and_the_dissector_reads_its_backbone_envelopes() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let lab = Lab::up("capture");
    let out = lab.dir.join("clb0.pcap");
    let capture = Command::new(exe())
        .args(["lab", "capture"])
        .arg(&lab.file)
        .args(["clb/frankfurt/1", "-w"])
        .arg(&out)
        .args(["--duration", "3s"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let udp = lab.probe("london", "198.18.0.20:7000", "udp", 16);
    assert!(udp["received"].as_u64().unwrap() > 0, "{udp}");
    let done = capture.wait_with_output().unwrap();
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(&bytes[..4], &0xa1b2_3c4du32.to_le_bytes());
    assert!(bytes.len() > 24 + 100 * 16, "packets were captured: {} bytes", bytes.len());
    if Command::new("tshark").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI installs tshark (.ci/run)");
        return;
    }
    let decoded = Command::new("tshark")
        .arg("-X")
        .arg(format!("lua_script:{}/tools/wireshark/anyedge.lua", env!("CARGO_MANIFEST_DIR")))
        .arg("-r")
        .arg(&out)
        .args(["-Y", "anyedge.ccn.pop_id", "-T", "fields", "-e", "anyedge.sender_name", "-e", "ip.dst"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&decoded.stdout);
    assert!(
        text.lines().any(|l| l.starts_with("pop#") && l.contains("198.18.0.20")),
        "real CCN data from a POP with london's packet to the VIP inside: {}",
        &text[..text.len().min(1500)]
    );
    // --snaplen: each record keeps at most that much, and says the packet's length.
    let cut = lab.dir.join("clb0-cut.pcap");
    let capture = Command::new(exe())
        .args(["lab", "capture"])
        .arg(&lab.file)
        .args(["clb/frankfurt/1", "-w"])
        .arg(&cut)
        .args(["--duration", "2s", "--snaplen", "64"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    lab.probe("london", "198.18.0.20:7000", "udp", 8);
    assert!(capture.wait_with_output().unwrap().status.success());
    let bytes = std::fs::read(&cut).unwrap();
    assert_eq!(u32::from_le_bytes(bytes[16..20].try_into().unwrap()), 64, "the header's snap length");
    let (mut at, mut longer) = (24, 0);
    while at + 16 <= bytes.len() {
        let word = |i: usize| u32::from_le_bytes(bytes[at + i..at + i + 4].try_into().unwrap());
        assert!(word(8) <= 64 && word(8) <= word(12), "kept {} of {}", word(8), word(12));
        longer += usize::from(word(12) > 64);
        at += 16 + word(8) as usize;
    }
    assert!(longer > 50, "envelopes longer than the cut were cut: {longer}");
}

#[test]
fn every_node_serves_prometheus_metrics_and_lab_metrics_prints_them() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let lab = Lab::up_with("metrics", with_control);
    wait_status(&lab, "a leader", |s| s["leader"].is_string());
    let udp = lab.probe("london", "198.18.0.20:7000", "udp", 8);
    assert!(udp["received"].as_u64().unwrap() > 0, "{udp}");
    let out = lab.anyedge(&["lab", "metrics"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let value = |line_start: &str| -> u64 {
        let line =
            text.lines().find(|l| l.starts_with(line_start)).unwrap_or_else(|| panic!("{line_start} in:\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(value("anyedge_packets_in_total{node=\"pop/paris\"}") > 0);
    assert!(value("anyedge_packets_out_total{node=\"clb/frankfurt/1\"}") > 0);
    assert!(
        value("anyedge_conn_table_entries{node=\"clb/frankfurt/1\"}")
            + value("anyedge_conn_table_entries{node=\"clb/frankfurt/2\"}")
            >= 8
    );
    assert!(value("anyedge_raft_term{node=\"control/1\"}") >= 1);
    assert!(value("anyedge_raft_commit{node=\"control/1\"}") >= 1);
    assert!(text.contains("# TYPE anyedge_drops_total counter"), "{text}");
    // What each node's backbone sockets lost: pieces that made no envelope, refused sends.
    for node in ["pop/paris", "clb/frankfurt/1", "clb/frankfurt/2"] {
        for name in ["backbone_pieces_lost_total", "backbone_sends_refused_total"] {
            let start = format!("anyedge_{name}{{node=\"{node}\"}} ");
            assert!(text.lines().any(|l| l.starts_with(&start)), "{start}in:\n{text}");
        }
    }
    // The same text over HTTP on the node's namespace, as a Prometheus server would scrape it.
    let plan = anyedge_lab::plan::Plan::new(&anyedge_topology::load(&lab.file).unwrap());
    let clb = plan.clb_region_addr(0, 0).unwrap();
    let scrape = Command::new(exe())
        .args(["lab", "exec"])
        .arg(&lab.file)
        .args(["backend/198.19.20.1", "--", "bash", "-c"])
        .arg(format!("exec 3<>/dev/tcp/{clb}/6091; printf 'GET /metrics HTTP/1.1\\r\\n\\r\\n' >&3; cat <&3"))
        .output()
        .unwrap();
    let http = String::from_utf8_lossy(&scrape.stdout);
    assert!(http.starts_with("HTTP/1.1 200 OK") && http.contains("text/plain; version=0.0.4"), "{http}");
    assert!(http.contains("anyedge_packets_in_total{node=\"clb/frankfurt/1\"}"), "{http}");
    // Clients reach none of it: not on the POP's internet address, not on a backend's
    // public (direct-path) address.
    let pop = plan.pop_internet_addr(0).unwrap();
    let backend = plan.backend_direct_addr("198.19.20.1".parse().unwrap()).unwrap();
    for addr in [pop, backend] {
        let tried = Command::new(exe())
            .args(["lab", "exec"])
            .arg(&lab.file)
            .args(["client/london", "--", "bash", "-c"])
            .arg(format!("timeout 2 bash -c 'exec 3<>/dev/tcp/{addr}/6091' && echo OPEN || echo SHUT"))
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&tried.stdout);
        assert_eq!(said.trim(), "SHUT", "london reached /metrics on {addr}");
    }
    // Levelled logs in the state directory (RUST_LOG, default info).
    let log = std::fs::read_to_string(lab_state_dir(&lab).join("pop-paris.log")).unwrap();
    assert!(log.contains(" INFO ") && log.contains("pop/paris starting") && log.contains("ready"), "{log}");
}

#[test]
fn a_client_groups_address_block_is_its_source_in_the_lab_as_in_the_simulator() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let lab = Lab::up_with("client-block", |text| {
        text.replace(
            "{ name: london, location: [51.507, -0.128], count: 20, traffic: [game, web] }",
            "{ name: london, location: [51.507, -0.128], count: 20, traffic: [game, web], address: 198.18.66.0/24 }",
        )
    });
    for (protocol, target) in [("udp", "198.18.0.20:7000"), ("tcp", "198.18.0.20:443")] {
        let r = lab.probe("london", target, protocol, 8);
        assert_eq!(r["source"], "198.18.66.1", "{protocol}: {r}");
        assert_eq!(r["client_addrs_seen"], serde_json::json!(["198.18.66.1"]), "the backends see it: {r}");
        assert!(r["received"].as_u64().unwrap() >= r["sent"].as_u64().unwrap() * 95 / 100, "{protocol}: {r}");
    }
    // The direct path (straight to a backend's public address) answers the block too.
    let plan = anyedge_lab::plan::Plan::new(&anyedge_topology::load(&lab.file).unwrap());
    let direct = plan.backend_direct_addr("198.19.20.1".parse().unwrap()).unwrap();
    let r = lab.probe("london", &format!("{direct}:7000"), "udp", 4);
    assert!(r["received"].as_u64().unwrap() > 0, "{r}");
}

/// small.yaml with one UDP listener per way a backend can be away from its region:
/// 7001 in another region (lisbon), 7002 in an IDC (madrid), 7003 on the internet behind
/// a NAT gateway, 7004 on the internet through the region's router; london sends to each.
fn with_every_backend_path(text: String) -> String {
    let text = text
        .replacen(
            "      - { protocol: tcp, port: 443, scheduler: wrr, backends: web }\n",
            "      - { protocol: tcp, port: 443, scheduler: wrr, backends: web }\n\
             \x20     - { protocol: udp, port: 7001, scheduler: wrr, backends: remote }\n\
             \x20     - { protocol: udp, port: 7002, scheduler: wrr, backends: onprem }\n\
             \x20     - { protocol: udp, port: 7003, scheduler: wrr, backends: natted }\n\
             \x20     - { protocol: udp, port: 7004, scheduler: wrr, backends: routed }\n",
            1,
        )
        .replacen(
            "    clb_nodes: 2\n",
            "    clb_nodes: 2\n    snat: [198.18.40.1]\n",
            1,
        )
        .replacen(
            "      web:\n",
            "      remote: [{ address: 198.19.91.1, port: 7001, region: lisbon }]\n\
             \x20     onprem: [{ address: 198.19.92.1, port: 7002, idc: madrid }]\n\
             \x20     natted: [{ address: 198.19.99.8, port: 7003, via: nat/egress }]\n\
             \x20     routed: [{ address: 198.19.99.9, port: 7004, via: router }]\n\
             \x20     web:\n",
            1,
        )
        .replacen("regions:\n", "idcs:\n  - { name: madrid, location: [40.416, -3.704] }\n\nregions:\n", 1)
        .replacen(
            "\nbackbone:",
            "  - name: lisbon\n    location: [38.722, -9.139]\n    clb_nodes: 1\n    backends:\n      spare: [{ address: 198.19.91.2, port: 7009 }]\n\nbackbone:",
            1,
        )
        .replacen("traffic: [game, web] }", "traffic: [game, web, remote, onprem, natted, routed] }", 1)
        .replacen(
            "traffic:\n",
            "traffic:\n  remote: { vip: edge, protocol: udp, port: 7001, interval: 50ms, size: 60 }\n\
             \x20 onprem: { vip: edge, protocol: udp, port: 7002, interval: 50ms, size: 60 }\n\
             \x20 natted: { vip: edge, protocol: udp, port: 7003, interval: 50ms, size: 60 }\n\
             \x20 routed: { vip: edge, protocol: udp, port: 7004, interval: 50ms, size: 60 }\n",
            1,
        );
    format!("{text}\nnat_gateways:\n  - {{ name: egress, region: frankfurt, public: 198.18.99.1 }}\n")
}

#[test]
fn the_lab_delays_every_backend_path_as_the_simulator_does() {
    if !may_run() {
        return;
    }
    let _one = serial();
    // Every kind of backend path from london, the VIP's own four-hop path from london
    // (client, POP, CLB node, backend: 27 ms), and the shortest there is: a client in
    // Paris itself, on its POP's doorstep (a 5 ms last mile each way and the backbone).
    let with_a_short_path = |text: String| {
        with_every_backend_path(text).replacen(
            "clients:\n",
            "clients:\n  - { name: parisian, location: [48.857, 2.352], count: 20, traffic: game }\n",
            1,
        )
    };
    let lab = Lab::up_with("paths", with_a_short_path);
    let t = anyedge_topology::load(&lab.file).unwrap();
    let sim = anyedge_sim::run(&t, |_| {}).unwrap().report;
    // (client, class, port, backend that must answer, p50 allowance: share, fixed ms).
    // Each shaped hop starts its delay when the packet reached the node and releases it on
    // a microsecond timer: the median is the model's to 2 % + 0.3 ms. What no link
    // absorbs (the CLB's request leg, the backend's server, TUN reads, the kernel's hops:
    // 0.4–0.7 ms here, whatever the distance) is more than that on the 20 ms path, which
    // is held to the bound every path had before (docs/src/calibrating.md).
    let strict = (0.02, 0.3);
    for (client, class, port, backend, (share, fixed_ms)) in [
        ("parisian", "game", 7000, None, (0.10, 1.0)),
        ("london", "game", 7000, None, strict),
        ("london", "remote", 7001, Some("198.19.91.1:7001"), strict),
        ("london", "onprem", 7002, Some("198.19.92.1:7002"), strict),
        ("london", "natted", 7003, Some("198.19.99.8:7003"), strict),
        ("london", "routed", 7004, Some("198.19.99.9:7004"), strict),
    ] {
        let group = sim.clients.iter().find(|c| c.name == client).unwrap();
        let rtt = group.traffic.iter().find(|tr| tr.name == class).unwrap().anycast.rtt_ms.unwrap();
        // The median of three 2 s rounds: one round's p99 is its 4th slowest reply, and a
        // busy 2-core host moves that by milliseconds on its own. A CI run once saw two of
        // three onprem rounds 1.7 ms slow at p50 and 11 ms at p99 (every other path and
        // every local run: 0.4-0.5 ms), so a path outside its bound is measured once more
        // and must hold in that second set: a model that is wrong is wrong both times.
        let measure = || {
            let rounds: Vec<Value> =
                (0..3).map(|_| lab.probe(client, &format!("198.18.0.20:{port}"), "udp", 8)).collect();
            if let Some(backend) = backend {
                assert!(rounds.iter().all(|r| replies_from(r, backend) > 0), "{class}: {rounds:?}");
            }
            ["p50", "p99"].map(|q| {
                let mut v: Vec<f64> = rounds.iter().map(|r| r["rtt_us"][q].as_f64().unwrap() / 1000.0).collect();
                v.sort_by(f64::total_cmp);
                v[1]
            })
        };
        // The tail is the host's (a 2-core machine running a dozen nodes).
        let allowed = [(rtt.p50, share, fixed_ms), (rtt.p99, 0.10, 1.0)];
        let outside = |lab_ms: [f64; 2]| {
            (0..2).find(|&i| (lab_ms[i] - allowed[i].0).abs() > allowed[i].0 * allowed[i].1 + allowed[i].2)
        };
        let mut lab_ms = measure();
        for attempt in 1..=2 {
            eprintln!(
                "{client} {class} (set {attempt}): p50 lab {:.2} / sim {:.2} ms, p99 lab {:.2} / sim {:.2} ms",
                lab_ms[0], rtt.p50, lab_ms[1], rtt.p99
            );
            match outside(lab_ms) {
                None => break,
                Some(i) if attempt == 2 => {
                    let (sim_ms, share, fixed_ms) = allowed[i];
                    panic!(
                        "{client} {class} {}: lab {:.2} ms, simulator {sim_ms:.2} ms (allowed {} % + {fixed_ms} ms), in two sets of rounds",
                        ["p50", "p99"][i],
                        lab_ms[i],
                        share * 100.0
                    );
                }
                Some(_) => lab_ms = measure(),
            }
        }
    }
}

/// small.yaml with control nodes far apart: Frankfurt, and POPs in Mumbai and Virginia
/// (no VIP is published there).
fn with_far_control(text: String) -> String {
    let text = text.replacen(
        "  - { name: warsaw, location: [52.230, 21.012] }\n",
        "  - { name: warsaw, location: [52.230, 21.012] }\n  - { name: mumbai, location: [19.076, 72.878] }\n  - { name: virginia, location: [39.044, -77.487] }\n",
        1,
    );
    text + "control: { nodes: 3, sites: [frankfurt, mumbai, virginia] }\n"
}

/// `writes` set-weight faults for the simulator, a second apart from 3 s.
fn weight_writes(writes: usize) -> String {
    let mut text = String::from("faults:\n");
    for i in 0..writes {
        let at = 3 + i;
        text.push_str(&format!(
            "  - {{ at: {at}s, set-weight: {{ backend: \"198.19.20.1:7000\", weight: {} }} }}\n",
            10 + i
        ));
    }
    text
}

#[test]
fn raft_messages_cross_the_backbone_in_the_lab_as_long_as_in_the_simulator() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let lab = Lab::up_with("far-raft", with_far_control);
    let text = std::fs::read_to_string(&lab.file).unwrap() + &weight_writes(8);
    let t = anyedge_topology::parse_str("far.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
    let sim = anyedge_sim::run(&t, |_| {}).unwrap().report;
    let sim_p50 = sim.control.as_ref().and_then(|c| c.commit_latency_ms.as_ref()).expect("writes committed").p50;
    wait_status(&lab, "a leader", |s| s["leader"].is_string());
    for w in 0..7 {
        let out = ctl_write(&lab, &["set-weight", "198.19.20.1:7000", &(10 + w).to_string()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // The leader's own clock from proposal to commit: no ctl process in it (measured as
    // a write's time less a status read's, a status that asks every node ran longer than
    // a write's fixed cost and put the commit 12 ms under the backbone's round trip).
    let status = ctl_status(&lab);
    let lab_p50 = status["commit_ms"]["p50"].as_f64().expect("the leader says its commit time");
    eprintln!("commit: lab p50 {lab_p50:.1} ms (leader's clock), simulator p50 {sim_p50:.1} ms");
    // Never faster than the simulator's backbone allows (without the delay it was 3.7
    // ms); above it, the node's own scheduling on a busy 2-core host adds a few ms.
    assert!(
        lab_p50 >= sim_p50 * 0.90 && lab_p50 <= sim_p50 * 1.10 + 5.0,
        "a write commits in {lab_p50:.1} ms in the lab, {sim_p50:.1} ms in the simulator (allowed -10 % to +10 % + 5 ms): {status}"
    );
}

/// small.yaml with every control node in Mumbai, 6,300 km from the CLB nodes in
/// Frankfurt: POPs (publishing nothing) there host them, so a write commits in a
/// millisecond and only the way to the watchers is long.
fn with_remote_control(text: String) -> String {
    let text = text.replacen(
        "  - { name: warsaw, location: [52.230, 21.012] }\n",
        "  - { name: warsaw, location: [52.230, 21.012] }\n  - { name: mumbai1, location: [19.076, 72.878] }\n  - { name: mumbai2, location: [19.077, 72.879] }\n  - { name: mumbai3, location: [19.078, 72.880] }\n",
        1,
    );
    text + "control: { nodes: 3, sites: [mumbai1, mumbai2, mumbai3] }\n"
}

#[test]
fn a_committed_change_reaches_a_far_clb_node_a_backbone_delay_later_not_at_once() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let lab = Lab::up_with("far-watch", with_remote_control);
    wait_status(&lab, "a leader", |s| s["leader"].is_string());
    let applied = |s: &Value| s["applied"]["clb/frankfurt/1"].as_u64().unwrap_or(0);
    wait_status(&lab, "the CLB node follows the table", |s| applied(s) >= s["commit"].as_u64().unwrap_or(u64::MAX));
    let out = ctl_write(&lab, &["set-weight", "198.19.20.1:7000", "15"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let commit = ctl_status(&lab)["commit"].as_u64().unwrap();
    let s = wait_status(&lab, "the change reaches the CLB node", |s| applied(s) >= commit);
    // Frankfurt is 6,300 km from every control node: the simulator's backbone takes
    // `one_way` there, and the lab holds watch updates as long. The node's lag is stamped
    // by the control node at sending and by the CLB node at taking it (one host's clock),
    // so a busy host only adds to it.
    let t = anyedge_topology::parse_str("far.yaml", &std::fs::read_to_string(&lab.file).unwrap()).unwrap();
    let site = |name: &str| t.pops.iter().find(|p| p.name == name).map(|p| p.location).unwrap();
    let frankfurt = t.regions.iter().find(|r| r.name == "frankfurt").unwrap().location;
    let one_way_ms =
        anyedge_topology::nodes::backbone_link(&t, site("mumbai1"), frankfurt).impairment.delay_ns as f64 / 1e6;
    let lag_ms = s["lag_ms"]["clb/frankfurt/1"].as_f64().expect("the CLB node says its lag");
    eprintln!(
        "clb/frankfurt/1 applied the change {lag_ms:.1} ms after Mumbai sent it; the backbone's one way {one_way_ms:.1} ms"
    );
    assert!(one_way_ms > 30.0, "6,300 km of backbone take {one_way_ms:.1} ms one way");
    assert!(
        lag_ms >= one_way_ms * 0.95,
        "the change crossed 6,300 km in {lag_ms:.1} ms, the backbone takes {one_way_ms:.1}: {s}"
    );
}

/// Six POPs on three continents, one region, eight client groups far apart.
fn six_pop_world(small: String) -> String {
    let name = small.lines().find(|l| l.starts_with("name:")).unwrap().to_string();
    format!(
        "{name}\nseed: 1\nduration: 10s\n\
vips:\n  - name: edge\n    ipv4: 198.18.0.20\n    home: frankfurt\n    pops: all\n    listeners:\n      - {{ protocol: udp, port: 7000, scheduler: maglev, backends: game }}\n\
pops:\n  - {{ name: paris, location: [48.857, 2.352] }}\n  - {{ name: frankfurt, location: [50.110, 8.682] }}\n  \
- {{ name: virginia, location: [39.044, -77.487] }}\n  - {{ name: siliconvalley, location: [37.339, -121.895] }}\n  \
- {{ name: tokyo, location: [35.690, 139.692] }}\n  - {{ name: singapore, location: [1.352, 103.820] }}\n\
regions:\n  - name: frankfurt\n    location: [50.110, 8.682]\n    clb_nodes: 1\n    backends:\n      game:\n        - {{ address: 198.19.20.1, port: 7000 }}\n\
clients:\n  - {{ name: london, location: [51.507, -0.128], count: 1, traffic: game }}\n  \
- {{ name: madrid, location: [40.417, -3.704], count: 1, traffic: game, catchment: [tokyo, paris, virginia] }}\n  \
- {{ name: newyork, location: [40.713, -74.006], count: 1, traffic: game }}\n  \
- {{ name: losangeles, location: [34.052, -118.244], count: 1, traffic: game }}\n  \
- {{ name: osaka, location: [34.694, 135.502], count: 1, traffic: game }}\n  \
- {{ name: jakarta, location: [-6.208, 106.846], count: 1, traffic: game, catchment: [tokyo, paris] }}\n  \
- {{ name: sydney, location: [-33.869, 151.209], count: 1, traffic: game }}\n  \
- {{ name: saopaulo, location: [-23.55, -46.633], count: 1, traffic: game }}\n\
traffic:\n  game: {{ vip: edge, protocol: udp, port: 7000, interval: 50ms, size: 120 }}\n"
    )
}

/// Each client group's POP as BGP chose it (`lab catchments`, the simulator report's
/// `clients[].pop`), `none` without a route.
fn lab_catchments(lab: &Lab) -> Vec<String> {
    let out = lab.anyedge(&["lab", "catchments", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["clients"].as_array().unwrap().iter().map(|c| c["pop"].as_str().unwrap_or("none").to_string()).collect()
}

/// The simulator's catchment of each group with `dead` POPs withdrawn, `none` without one.
fn sim_catchments(t: &anyedge_topology::Topology, dead: &[&str]) -> Vec<String> {
    (0..t.clients.len())
        .map(|g| {
            let live = t.pop_order(g, 0).into_iter().find(|&p| !dead.contains(&t.pops[p].name.as_str()));
            live.map_or("none".to_string(), |p| t.pops[p].name.clone())
        })
        .collect()
}

#[test]
fn bgp_in_the_lab_picks_every_groups_pop_as_the_simulator_does_before_and_after_two_pops_die() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let lab = Lab::up_with("bgp6", six_pop_world);
    let t = anyedge_topology::load(&lab.file).unwrap();
    assert_eq!(lab_catchments(&lab), sim_catchments(&t, &[]), "catchments with every POP up");
    // A `catchment:` list is the group's policy at its transit: madrid's is tokyo first.
    assert_eq!(lab_catchments(&lab)[1], "tokyo");
    // Transits carry what their sessions say: each POP's and every other transit's.
    let status = lab.anyedge(&["lab", "bgp", "transit/paris"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.lines().filter(|l| l.contains("198.18.0.20/32")).count() >= 6, "{text}");
    // BGP between transits is as late as the model's internet: paris's withdrawal leaves
    // its own transit at once and reaches siliconvalley's the one-way delay later (MED/2).
    // Both speakers are asked over their control sockets, a millisecond apart, so the
    // lag's lower bound (the last read that still saw the route at siliconvalley, from the
    // first that saw it gone at paris) is not blurred by a command's start-up.
    let one_way_ms = f64::from(anyedge_topology::bgp::med_us(&t, 0, 3)) / 2_000.0;
    let (near, far) = (bird_socket(&lab, "transit/paris"), bird_socket(&lab, "transit/siliconvalley"));
    let kill = || assert!(lab.anyedge(&["lab", "kill", "pop/paris"]).status.success());
    let (gone_near, holding_far) = withdrawal_crossing(&t, (&near, 0), (&far, 3), "pop/paris", kill);
    let lag_ms = holding_far.saturating_duration_since(gone_near).as_secs_f64() * 1e3;
    eprintln!(
        "paris's withdrawal: siliconvalley held the route at least {lag_ms:.1} ms longer; model {one_way_ms:.1} ms"
    );
    assert!(lag_ms >= one_way_ms * 0.8, "withdrawal crossed {one_way_ms:.0} ms of model in {lag_ms:.1} ms or less");
    assert!(lab.anyedge(&["lab", "kill", "pop/tokyo"]).status.success());
    let want = sim_catchments(&t, &["paris", "tokyo"]);
    let got = poll_until_equal(&want, Duration::from_secs(5), Duration::from_millis(100), || lab_catchments(&lab));
    assert_eq!(got, want, "catchments with paris and tokyo withdrawn");
    // Madrid's list goes on to its third POP (hot potato at transit/tokyo would pick the
    // POP nearest tokyo); jakarta's list is spent: no route, as in the simulator.
    assert_eq!((got[1].as_str(), got[5].as_str()), ("virginia", "none"), "{got:?}");
    assert_ne!(want, sim_catchments(&t, &[]), "the kills moved someone");
    // Packets follow: london, whose POP died, is answered through its new one.
    let r = lab.probe("london", "198.18.0.20:7000", "udp", 4);
    assert!(r["received"].as_u64().unwrap() > 0, "london answered after paris died: {r}");
}

#[test]
fn the_labs_bird_speakers_route_every_group_over_the_as_level_internet_as_the_simulator_does() {
    if !may_run() {
        return;
    }
    let _one = serial();
    // Four transit networks, three IXPs, a prepend (Paris), a no-export community
    // (Frankfurt) and a selective announcement (Madrid): 42 routers, each a BIRD speaker.
    // The VIP has an IPv6 address too: the speakers carry both families.
    let v6 =
        |text: String| text.replacen("    ipv4: 198.18.0.20\n", "    ipv4: 198.18.0.20\n    ipv6: fd00:a::20\n", 1);
    let lab = Lab::up_topology("asnet", include_str!("../topologies/internet.yaml"), v6, &[]);
    let before = sim_ways(&lab.file, &[]);
    assert_eq!(lab_ways(&lab), before, "every group's POP and AS path with every POP up");
    assert!(before.iter().any(|(_, path)| path.as_array().unwrap().len() >= 5), "a prepended path: {before:?}");
    // Paris withdraws (its node dies): Cogent's best is then Frankfurt's no-export route,
    // which it may not pass on, so its customers (Lyon, Marseille, Lisbon) have no route;
    // then Frankfurt too, and everyone has one again. Each time where the simulator says.
    let mut down = Vec::new();
    for pop in ["paris", "frankfurt"] {
        assert!(lab.anyedge(&["lab", "kill", &format!("pop/{pop}")]).status.success());
        down.push(pop);
        let want = sim_ways(&lab.file, &down);
        assert_ne!(want, before, "the withdrawal moves someone");
        let got = poll_until_equal(&want, Duration::from_secs(10), Duration::from_millis(200), || lab_ways(&lab));
        assert_eq!(got, want, "every group's POP and AS path with {down:?} withdrawn");
        let stranded = want.iter().filter(|(pop, _)| pop == "none").count();
        assert_eq!(stranded, if down.len() == 1 { 3 } else { 0 }, "{want:?}");
    }
    // Packets follow the speakers' routes: Berlin, whose POP died, is answered, over
    // IPv4 and IPv6.
    for target in ["198.18.0.20:7000", "[fd00:a::20]:7000"] {
        let r = lab.probe("berlin", target, "udp", 2);
        assert!(r["received"].as_u64().unwrap() > 0, "berlin answered at {target} through its new POP: {r}");
    }
}

/// The selected route's POP for the VIP at `transit`, or none (no route).
fn best_pop(lab: &Lab, transit: &str) -> Option<String> {
    let out = lab.anyedge(&["lab", "bgp", transit, "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v["routes"].as_array()?.iter().find(|r| r["best"] == true).and_then(|r| r["pop"].as_str().map(str::to_string))
}

/// Whether `transit` holds any route (selected or not) that `pop` announced.
/// Node `node`'s BIRD control socket.
fn bird_socket(lab: &Lab, node: &str) -> std::path::PathBuf {
    anyedge_lab::bird::speaker_socket(&lab_state_dir(lab), node)
}

/// Whether the speaker at `socket` (transit number `own`) holds a route to 198.18.0.20
/// from `pop`, asked over its control socket (no process started).
fn bird_holds(t: &anyedge_topology::Topology, socket: &std::path::Path, own: usize, pop: &str) -> bool {
    use std::io::{BufRead, Write};
    let stream =
        std::os::unix::net::UnixStream::connect(socket).unwrap_or_else(|e| panic!("{}: {e}", socket.display()));
    stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut lines = std::io::BufReader::new(&stream).lines();
    let greeting = lines.next();
    assert!(matches!(greeting, Some(Ok(ref l)) if l.starts_with("0001 ")), "{}: {greeting:?}", socket.display());
    (&stream).write_all(b"show route all for 198.18.0.20/32\n").unwrap();
    let mut text = String::new();
    for line in lines {
        let line = line.unwrap_or_else(|e| panic!("{}: {e}", socket.display()));
        let b = line.as_bytes();
        let coded = b.len() >= 5 && b[..4].iter().all(u8::is_ascii_digit);
        text.push_str(if coded { &line[5..] } else { line.strip_prefix(' ').unwrap_or(&line) });
        text.push('\n');
        if coded && b[4] == b' ' {
            break;
        }
    }
    anyedge_lab::bird::routes(t, own, &text).iter().any(|r| r.pop.as_deref() == Some(pop))
}

/// `kill` run beside (it kills `pop`), while the near speaker is read from before it
/// starts: when the near speaker was first read without `pop`'s route (the end of that
/// read), and when the far one was last read still holding it (the start of that read).
/// The far speaker held it at least the difference longer.
fn withdrawal_crossing(
    t: &anyedge_topology::Topology,
    (near, near_own): (&std::path::Path, usize),
    (far, far_own): (&std::path::Path, usize),
    pop: &str,
    kill: impl FnOnce() + Send,
) -> (std::time::Instant, std::time::Instant) {
    assert!(bird_holds(t, near, near_own, pop), "{} holds {pop}'s route before it dies", near.display());
    std::thread::scope(|s| {
        s.spawn(kill);
        crossing_after(t, (near, near_own), (far, far_own), pop)
    })
}

fn crossing_after(
    t: &anyedge_topology::Topology,
    (near, near_own): (&std::path::Path, usize),
    (far, far_own): (&std::path::Path, usize),
    pop: &str,
) -> (std::time::Instant, std::time::Instant) {
    let limit = std::time::Instant::now() + Duration::from_secs(5);
    let gone_near = loop {
        assert!(std::time::Instant::now() < limit, "{} still holds {pop}'s route after 5 s", near.display());
        if !bird_holds(t, near, near_own, pop) {
            break std::time::Instant::now();
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let mut holding_far = gone_near;
    loop {
        assert!(std::time::Instant::now() < limit, "{} still holds {pop}'s route after 5 s", far.display());
        let asked = std::time::Instant::now();
        if !bird_holds(t, far, far_own, pop) {
            return (gone_near, holding_far);
        }
        holding_far = asked;
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// When a POP's log (`RFC 3339 timestamp  LEVEL target: pop/NAME: VIP vip withdrawn`)
/// says it withdrew `vip`, the first time after `since`.
fn withdrawn_at(log: &std::path::Path, vip: &str, since: std::time::SystemTime) -> Option<std::time::SystemTime> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().filter(|l| l.ends_with(&format!("VIP {vip} withdrawn"))).find_map(|l| {
        let at = rfc3339_utc(l.split_whitespace().next()?)?;
        (at >= since).then_some(at)
    })
}

/// `2026-11-26T04:34:48.640175Z` as a time.
fn rfc3339_utc(stamp: &str) -> Option<std::time::SystemTime> {
    let (date, time) = stamp.strip_suffix('Z')?.split_once('T')?;
    let d: Vec<i64> = date.split('-').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let (y, m) = if d[1] <= 2 { (d[0] - 1, d[1] + 9) } else { (d[0], d[1] - 3) };
    // Days since 1970-01-01 (the civil-from-days algorithm, proleptic Gregorian).
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let secs = days * 86_400 + t[0] * 3_600 + t[1] * 60 + t[2];
    let nanos: u32 = format!("{frac:0<9}")[..9].parse().ok()?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::new(u64::try_from(secs).ok()?, nanos))
}

/// Polls `check` every 20 ms until it holds or `limit` passes; how long it took.
fn within(limit: std::time::Duration, mut check: impl FnMut() -> bool) -> Option<std::time::Duration> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if check() {
            return Some(start.elapsed());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    None
}

#[test]
fn bgp_follows_health_a_hung_pop_and_a_dead_speaker_and_status_shows_the_sessions() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let lab = Lab::up("bgp-health");
    let (paris, warsaw) = (Some("pop/paris".to_string()), Some("pop/warsaw".to_string()));
    assert_eq!(best_pop(&lab, "transit/paris"), paris);
    // `lab status` lists every speaker's sessions (as its node last read them, every
    // 250 ms), all established.
    let status = || -> Value { serde_json::from_slice(&lab.anyedge(&["lab", "status", "--json"]).stdout).unwrap() };
    let established = |s: &Value, node: &str| {
        s["bgp"][node]["sessions"].as_array().is_some_and(|v| v.iter().all(|x| x["bgp"] == "Established"))
    };
    let all = within(std::time::Duration::from_secs(2), || {
        let s = status();
        ["pop/paris", "pop/warsaw", "transit/paris", "transit/warsaw"].iter().all(|n| established(&s, n))
    });
    let s = status();
    assert!(all.is_some(), "every session established: {s}");
    let sessions = s["bgp"]["transit/paris"]["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "one session with its POP, one with transit/warsaw: {s}");
    // A hung POP (node and speaker frozen, nothing closed) is withdrawn within BFD's
    // bound (3 × 50 ms, polled every 20 ms plus `lab bgp`'s own time), never the hold
    // timer's 3 s; thawed, it is announced again within 15 s.
    assert!(lab.anyedge(&["lab", "freeze", "pop/paris"]).status.success());
    let moved = within(std::time::Duration::from_secs(3), || best_pop(&lab, "transit/paris") == warsaw);
    assert!(lab.anyedge(&["lab", "thaw", "pop/paris"]).status.success());
    let moved = moved.expect("transit/paris moved to warsaw's route");
    assert!(moved < std::time::Duration::from_millis(1_000), "withdrawn {moved:?} after the freeze");
    let back = within(std::time::Duration::from_secs(15), || best_pop(&lab, "transit/paris") == paris);
    assert!(back.is_some(), "pop/paris announced again within 15 s of its thaw");
    // Health: with every CLB node of the VIP's home region dead, no POP carrying its
    // traffic announces it — after as many failed probe rounds as in the simulator (the
    // POP core's rule, which tests/simulation.rs holds the simulator to): down after
    // `probe_misses` unanswered rounds, then FALL unhealthy samples, one a round. POPs
    // probe the regions they forward to (`failover.probe_idle`): london's and kyiv's
    // game traffic keeps both POPs on frankfurt's nodes.
    let (lond, kyiv) = (
        spawn_probe(&lab, "london", "198.18.0.20:7000", "udp", 4, "h-lon.json"),
        spawn_probe(&lab, "kyiv", "198.18.0.20:7000", "udp", 4, "h-kyiv.json"),
    );
    std::thread::sleep(std::time::Duration::from_millis(1000));
    assert!(lab.anyedge(&["lab", "kill", "clb/frankfurt/1"]).status.success());
    let before = std::time::SystemTime::now();
    assert!(lab.anyedge(&["lab", "kill", "clb/frankfurt/2"]).status.success());
    let after = std::time::SystemTime::now();
    let gone = within(std::time::Duration::from_secs(5), || {
        best_pop(&lab, "transit/paris").is_none() && best_pop(&lab, "transit/warsaw").is_none()
    });
    assert!(gone.is_some(), "the VIP withdrawn everywhere once its region is unreachable");
    let t = anyedge_topology::load(&lab.file).unwrap();
    let (interval_ms, misses) = (t.failover.probe_interval_ns as f64 / 1e6, t.failover.probe_misses as f64);
    let fall = anyedge_pop::announce::FALL as f64;
    // The kill and the log line each take a few ms of their own.
    let (earliest, latest) = ((misses + fall - 1.0) * interval_ms - 15.0, (misses + fall) * interval_ms + 30.0);
    for pop in ["paris", "warsaw"] {
        let at = withdrawn_at(&common::lab_state_dir(&lab).join(format!("pop-{pop}.log")), "edge", before)
            .unwrap_or_else(|| panic!("pop/{pop} logs the withdrawal"));
        let ms = |since: std::time::SystemTime| at.duration_since(since).map_or(0.0, |d| d.as_secs_f64() * 1e3);
        let (soonest, latest_possible) = (ms(after), ms(before));
        assert!(
            soonest <= latest && latest_possible >= earliest,
            "pop/{pop} withdrew {soonest:.0}–{latest_possible:.0} ms after the region died; the rule says {earliest:.0}–{latest:.0} ms"
        );
    }
    for clb in ["clb/frankfurt/1", "clb/frankfurt/2"] {
        assert!(lab.anyedge(&["lab", "start", clb]).status.success());
    }
    // POPs keep probing nodes they found down, traffic or none, until they answer.
    for mut probe in [lond, kyiv] {
        let _ = probe.wait();
    }
    let again = within(std::time::Duration::from_secs(15), || best_pop(&lab, "transit/warsaw") == warsaw);
    assert!(again.is_some(), "announced again once a CLB node answers");
    // A speaker that dies is restarted by its node, counted, and its session comes back.
    let dir = common::lab_state_dir(&lab);
    let conf = dir.join("bgp/pop-warsaw/bird.conf");
    let killed = Command::new("pkill").arg("-f").arg(format!("bird -f -c {}", conf.display())).status().unwrap();
    assert!(killed.success(), "pop/warsaw's speaker was running");
    let restarted = within(std::time::Duration::from_secs(15), || {
        let s = status();
        s["bgp"]["pop/warsaw"]["speaker_restarts"] == 1 && established(&s, "transit/warsaw")
    });
    assert!(restarted.is_some(), "pop/warsaw's speaker restarted, counted, and its session re-established");
    // The route follows the session: BIRD exports it once the session is Established,
    // so it reaches transit/warsaw's kernel a moment later (CI once read it in between).
    let route = within(std::time::Duration::from_secs(5), || best_pop(&lab, "transit/warsaw") == warsaw);
    assert!(route.is_some(), "transit/warsaw prefers pop/warsaw's route again: {:?}", best_pop(&lab, "transit/warsaw"));
}

#[test]
fn log_times_read_as_the_moment_they_name() {
    let at = rfc3339_utc("2026-11-26T04:34:48.640175Z").unwrap();
    let secs = at.duration_since(std::time::UNIX_EPOCH).unwrap();
    assert_eq!(secs.as_secs(), 1_795_667_688, "date -u -d 2026-11-26T04:34:48Z +%s");
    assert_eq!(secs.subsec_micros(), 640_175);
    assert_eq!(
        rfc3339_utc("2024-02-29T00:00:00Z").unwrap().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
        1_709_164_800
    );
    assert!(rfc3339_utc("04:34:48").is_none());
}

#[test]
fn bench_failover_times_bfd_detection_withdrawal_and_the_clients_resume_for_a_frozen_pop() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let name = format!("t-bench-fo-{}", std::process::id());
    let dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("lab.yaml");
    let text = SMALL.replace("name: small-europe", &format!("name: {name}"));
    std::fs::write(&file, text.split("faults:").next().unwrap()).unwrap();
    let json = dir.join("failover.json");
    let out = Command::new(exe())
        .args(["bench", "failover"])
        .arg(&file)
        .args(["--kills", "2", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(namespaces_with(&format!("{name}-")).is_empty(), "the bench takes its lab down");
    let f: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(f["pop"], "pop/paris", "london and rome enter paris: {f}");
    assert_eq!(f["groups"], serde_json::json!(["client/london", "client/rome"]));
    let t = anyedge_topology::load(&file).unwrap();
    let bfd_ms = (t.failover.bfd_interval_ns * u64::from(t.failover.bfd_multiplier)) as f64 / 1e6;
    for k in 0..2 {
        let (d, w) = (f["detect_ms"][k].as_f64().expect("detected"), f["withdrawn_ms"][k].as_f64().expect("withdrawn"));
        // BFD declares the hung POP down within its bound (plus polling and scheduling),
        // never after the 3 s hold timer; withdrawal follows detection.
        assert!(d > 0.0 && d < bfd_ms + 500.0, "kill {k}: detected after {d} ms (BFD bound {bfd_ms} ms): {f}");
        assert!(w + 5.0 >= d && w < d + 500.0, "kill {k}: withdrawn at {w} ms, detected at {d} ms: {f}");
    }
    let resume = f["resume_ms"].as_array().unwrap();
    assert_eq!(resume.len(), 2 * 16, "8 flows from each of two groups, twice: {f}");
    assert!(f["resume_ms_p50"].as_f64().unwrap() >= f["detect_ms_p50"].as_f64().unwrap() * 0.5, "{f}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_pop_killed_and_restarted_again_and_again_leaves_no_speaker_or_route_behind() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let lab = Lab::up("bgp-flap");
    let dir = common::lab_state_dir(&lab);
    let speakers = || {
        let out = Command::new("pgrep").args(["-f", &format!("bird -f -c {}", dir.display())]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).split_whitespace().count()
    };
    assert_eq!(speakers(), 4, "a speaker for each POP and transit");
    for _ in 0..5 {
        assert!(lab.anyedge(&["lab", "kill", "pop/paris"]).status.success());
        assert!(lab.anyedge(&["lab", "start", "pop/paris"]).status.success());
    }
    assert_eq!(speakers(), 4, "each kill took its speaker along, each start brought one");
    // Back where it was: paris's transit selects paris again.
    let back =
        within(std::time::Duration::from_secs(15), || best_pop(&lab, "transit/paris").as_deref() == Some("pop/paris"));
    assert!(back.is_some(), "paris announced again after the last start");
    let prefix = lab.prefix();
    drop(lab);
    assert_eq!(speakers(), 0, "lab down stops every speaker");
    assert!(namespaces_with(&prefix).is_empty(), "and removes every namespace");
}

#[test]
fn ctl_drain_withdraws_first_loses_no_flow_and_stops_the_pop_only_once_its_clients_moved() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let lab = Lab::up("drain");
    let (paris, warsaw) = (Some("pop/paris".to_string()), Some("pop/warsaw".to_string()));
    assert_eq!(best_pop(&lab, "transit/paris"), paris, "london's transit starts on paris");
    // Bad requests change nothing.
    for (args, want) in [
        (vec!["drain", "transit/paris"], "is not a POP of this lab (its POPs: pop/paris, pop/warsaw)"),
        (vec!["drain", "pop/nowhere"], "is not a POP"),
        (vec!["drain", "pop/paris", "--timeout", "0s"], "--timeout"),
    ] {
        let out = ctl_write(&lab, &args);
        assert!(!out.status.success(), "{args:?} refused");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(want),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(best_pop(&lab, "transit/paris"), paris, "a refused drain withdrew nothing");
    // London's flows run across the drain: 4 flows, 100 requests/s each, for 6 s.
    let probe = Command::new(exe())
        .args(["lab", "exec"])
        .arg(&lab.file)
        .args(["client/london", "--", exe(), "probe", "--target", "198.18.0.20:7000", "--protocol", "udp"])
        .args(["--rate", "400", "--duration", "6s", "--flows", "4", "--json"])
        .arg(lab.dir.join("drain-probe.json"))
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let json = lab.dir.join("drain.json");
    let out = ctl_write(&lab, &["drain", "pop/paris", "--timeout", "20s", "--json", json.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let f: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    // Withdrawn at the POP's next probe tick and gone from every transit within
    // milliseconds (BIRD has no MRAI), far from any timer.
    let withdrawn = f["withdrawn_everywhere_ms"].as_f64().unwrap();
    assert!(withdrawn < 1_000.0, "{f}");
    // Stopped last: only after its clients had been quiet for a second.
    assert_eq!(f["timed_out"], false, "london moved to warsaw, so paris went quiet: {f}");
    assert!(f["stopped_ms"].as_f64().unwrap() >= withdrawn + 1_000.0, "{f}");
    assert_eq!(best_pop(&lab, "transit/paris"), warsaw, "london's transit now selects warsaw");
    let s: Value = serde_json::from_slice(&lab.anyedge(&["lab", "status", "--json"]).stdout).unwrap();
    assert_eq!(s["admin"]["pop/paris"], "stopped", "{s}");
    assert_eq!(s["admin"]["pop/warsaw"], "serving", "{s}");
    let table = String::from_utf8_lossy(&lab.anyedge(&["lab", "status"]).stdout).to_string();
    assert!(table.lines().any(|l| l.contains("pop/paris") && l.contains("stopped (ctl drain")), "{table}");
    // No flow noticed: no gap in replies longer than a lost packet or two and the longer
    // way round through warsaw (10 ms apart; a killed or frozen POP leaves at least BFD's
    // 150 ms).
    let out = probe.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&std::fs::read(lab.dir.join("drain-probe.json")).unwrap()).unwrap();
    let gaps: Vec<f64> = r["longest_gap_ms"].as_array().unwrap().iter().map(|g| g.as_f64().unwrap()).collect();
    assert_eq!(gaps.len(), 4, "{r}");
    assert!(gaps.iter().all(|&g| g < 100.0), "longest gaps {gaps:?} ms: {r}");
    assert!(r["received"].as_f64().unwrap() >= 0.98 * r["sent"].as_f64().unwrap(), "{r}");
    // Undrained, it announces again once healthy and london comes back.
    let out = ctl_write(&lab, &["undrain", "pop/paris"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(best_pop(&lab, "transit/paris"), paris);
    let s: Value = serde_json::from_slice(&lab.anyedge(&["lab", "status", "--json"]).stdout).unwrap();
    assert_eq!(s["admin"]["pop/paris"], "serving", "{s}");
    let after = lab.probe("london", "198.18.0.20:7000", "udp", 2);
    assert!(after["received"].as_u64().unwrap() > 0, "{after}");
}

/// Sends `request` as it is from london's namespace to the VIP's HTTP listener (bash's
/// /dev/tcp, so no client library tidies it up) and returns what came back.
fn raw_http(lab: &Lab, request: &str) -> String {
    let script = "exec 3<>/dev/tcp/198.18.0.20/80 && printf '%s' \"$REQ\" >&3 && timeout 5 cat <&3";
    let out = Command::new(exe())
        .args(["lab", "exec"])
        .arg(&lab.file)
        .args(["client/london", "--", "env", &format!("REQ={request}"), "bash", "-c", script])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn the_http_proxy_names_the_client_itself_and_answers_ambiguous_framing_with_400() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let lab = Lab::up_with("l7-forged", with_every_listener);
    let london = client_address(&lab, "london");
    // A client naming someone else: the backend hears of london only, from the proxy.
    let forged = "GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nConnection: close\r\n\r\n";
    let answer = raw_http(&lab, forged);
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains(&format!("|xff={london}")), "the proxy's header alone: {answer}");
    assert!(!answer.contains("6.6.6.6"), "{answer}");
    // Smuggling by framing: refused with a status, nothing reaches a backend.
    for (request, status) in [
        ("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc", "400"),
        ("GET / HTTP/1.1\r\nHost: x\nX-Forwarded-For: 6.6.6.6\r\n\r\n", "400"),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "501"),
    ] {
        let answer = raw_http(&lab, request);
        assert!(answer.starts_with(&format!("HTTP/1.1 {status} ")), "{request:?}: {answer:?}");
        assert!(!answer.contains("|be="), "no backend answered {request:?}: {answer:?}");
    }
    // The listener still serves everyone else.
    let r = lab.probe("london", "198.18.0.20:80", "http", 2);
    assert!(r["sent"].as_u64().unwrap() > 0 && r["received"] == r["sent"], "{r}");
}

#[test]
fn lab_reload_applies_an_edited_route_table_to_running_nodes_and_keeps_every_flow() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let lab = Lab::up("reload");
    let before = lab.probe("rome", "198.18.0.20:7000", "udp", 32);
    assert!(before["backends"].get("198.19.20.3:7000").is_some(), "{before}");
    // london's flows run through the reload.
    let during = spawn_probe(&lab, "london", "198.18.0.20:7000", "udp", 8, "during.json");
    std::thread::sleep(std::time::Duration::from_secs(2));
    let text = std::fs::read_to_string(&lab.file).unwrap();
    let weight = "{ address: 198.19.20.3, port: 7000, weight: 20 }";
    assert!(text.contains(weight));
    let edited = text.replace(weight, "{ address: 198.19.20.3, port: 7000, weight: 0 }");
    std::fs::write(&lab.file, &edited).unwrap();
    // Every node: 2 transits, 2 POPs, 2 CLB nodes, 5 backend hosts.
    reload_under_flows(&lab, &[], 11, during, "during.json");
    // New flows avoid the backend the file now weighs 0 (from another client: see
    // ctl_set_weight_zero_stops_new_flows_to_that_backend).
    let after = lab.probe("kyiv", "198.18.0.20:7000", "udp", 32);
    assert!(after["backends"].get("198.19.20.3:7000").is_none(), "{after}");
    assert!(after["loss_pct"].as_f64().unwrap() < 5.0, "{after}");
    let state = lab_state_dir(&lab);
    let log = std::fs::read_to_string(state.join("clb-frankfurt-1.log")).unwrap();
    assert!(log.contains("route-table changes"), "the CLB node says what it reloaded: {log}");

    // A file that changes the lab's nodes is refused, and nothing changes.
    let host = "        - { address: 198.19.20.11, port: 8080, weight: 30 }\n";
    assert!(edited.contains(host));
    std::fs::write(&lab.file, edited.replace(host, "")).unwrap();
    let out = lab.anyedge(&["lab", "reload"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not the running lab's"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let copy = std::fs::read_to_string(state.join("nodes/pop-paris/topology.yaml")).unwrap();
    assert_eq!(copy, edited, "the nodes' copies are untouched");

    // A node whose directory no longer checks out refuses the reload and forwards on.
    std::fs::write(state.join("nodes/pop-paris/topology.yaml"), format!("{edited}# edited by hand\n")).unwrap();
    let pids = Command::new("pgrep").args(["-f", &node_pattern(&lab, "pop-paris")]).output().unwrap();
    let pid = String::from_utf8_lossy(&pids.stdout).trim().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    std::thread::sleep(std::time::Duration::from_millis(300));
    let log = std::fs::read_to_string(state.join("pop-paris.log")).unwrap();
    assert!(
        log.contains("reload refused, running on as before") && log.contains("changed since it was rendered"),
        "{log}"
    );
    let r = lab.probe("london", "198.18.0.20:7000", "udp", 8);
    assert!(r["loss_pct"].as_f64().unwrap() < 5.0, "pop/paris still forwards: {r}");
}

/// A default internet drawn for a world has hundreds of routers, each a namespace and a
/// speaker in a lab: `lab up` refuses it, naming the count and the bound, before
/// anything is made.
#[test]
fn a_lab_refuses_an_as_level_internet_past_its_router_bound_before_anything_is_made() {
    if !may_run() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("t-asbig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("big.yaml");
    let made = Command::new(exe())
        .args(["generate", "--pops", "6", "--regions", "2", "--groups", "250", "--clients", "500", "--internet"])
        .args(["--name", "t-asbig", "--out"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    // Past the bound before `lab up` is asked: a shape that draws fewer routers must
    // not turn this test into a lab of hundreds of namespaces.
    let plan = anyedge_lab::plan::Plan::new(&anyedge_topology::load(&file).unwrap());
    let routers = plan.namespaces.iter().filter(|n| matches!(n.role, anyedge_lab::plan::Role::Router(_))).count();
    assert!(routers > anyedge_lab::setup::LAB_ROUTERS_MAX, "{routers} routers: generate more groups");
    let out = Command::new(exe()).args(["lab", "up"]).arg(&file).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let bound = format!("routers, and a lab runs at most {}", anyedge_lab::setup::LAB_ROUTERS_MAX);
    assert!(err.contains(&bound), "{err}");
    let left = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&left.stdout).contains("t-asbig"), "no namespace made");
}
