//! The simulator owns every clock: a run's report does not depend on the machine's clock
//! or on how fast the machine is. Checked by running the same world twice, once with the
//! process's clock skewed by a month and running fifty thousand times fast (libfaketime,
//! Debian's `faketime`, preloaded): a QUIC Retry token whose age were judged by the wall
//! clock (quinn's default) expires between its issue and its echo there, the client is
//! sent Retry after Retry, and the report changes. Installs `faketime` when it is missing
//! (root; CI runs as root).

use std::path::{Path, PathBuf};
use std::process::Command;

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_anyedge")
}

fn libfaketime() -> PathBuf {
    let lib = PathBuf::from("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1");
    if !lib.exists() {
        let update = Command::new("apt-get").args(["update", "-qq"]).status().expect("apt-get");
        assert!(update.success(), "apt-get update");
        let install = Command::new("apt-get")
            .args(["install", "-y", "-qq", "faketime"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .expect("apt-get");
        assert!(install.success(), "apt-get install faketime");
    }
    assert!(lib.exists(), "{} after installing faketime", lib.display());
    lib
}

/// A world where QUIC clients arrive faster than a CLB node admits unvalidated
/// handshakes (200 a second): many get a Retry and come back with its token.
const WORLD: &str = "name: clock
seed: 5
duration: 1s
vips:
  - name: edge
    ipv4: 198.18.0.20
    home: frankfurt
    pops: [paris]
    listeners:
      - { protocol: quic, port: 4433, scheduler: wlc, backends: web }
pops:
  - { name: paris, location: [48.857, 2.352] }
regions:
  - name: frankfurt
    location: [50.110, 8.682]
    clb_nodes: 1
    backends:
      web:
        members:
          - { address: 198.19.20.10, port: 8080 }
clients:
  - { name: london, location: [51.507, -0.128], count: 300, traffic: [app] }
traffic:
  app: { vip: edge, protocol: quic, port: 4433, requests_per_s: 1, request: 300, response: 3000 }
";

/// The report and the client group's capture of one run, the clock skewed by `faketime`.
fn run(dir: &Path, name: &str, faketime: Option<&str>) -> (Vec<u8>, Vec<u8>) {
    let file = dir.join("world.yaml");
    std::fs::write(&file, WORLD).unwrap();
    let (json, pcap) = (dir.join(format!("{name}.json")), dir.join(name));
    let mut cmd = Command::new(exe());
    cmd.args(["sim", "-q", "--threads", "1", "--pcap-nodes", "client/*", "--json"]).arg(&json).arg("--pcap").arg(&pcap);
    cmd.arg(&file);
    if let Some(spec) = faketime {
        cmd.env("LD_PRELOAD", libfaketime()).env("FAKETIME", spec).env("FAKETIME_NO_CACHE", "1");
    }
    let out = cmd.output().expect("anyedge sim");
    assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    let capture = std::fs::read(pcap.join("client-london.pcap")).expect("the clients' capture");
    (std::fs::read(json).unwrap(), capture)
}

/// QUIC Retry packets among a capture's IPv4 packets (long header, version 1, type 3).
fn retries(pcap: &[u8]) -> usize {
    let (mut at, mut n) = (24, 0);
    while at + 16 <= pcap.len() {
        let len = u32::from_le_bytes([pcap[at + 8], pcap[at + 9], pcap[at + 10], pcap[at + 11]]) as usize;
        let p = &pcap[at + 16..(at + 16 + len).min(pcap.len())];
        n += usize::from(p.len() > 33 && p[9] == 17 && p[28] & 0xf0 == 0xf0 && p[29..33] == [0, 0, 0, 1]);
        at += 16 + len;
    }
    n
}

#[test]
fn a_run_gives_the_same_report_with_the_machines_clock_a_month_ahead_and_fifty_thousand_times_fast() {
    let dir = std::env::temp_dir().join(format!("anyedge-clock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (report, capture) = run(&dir, "plain", None);
    assert!(retries(&capture) > 50, "the world sends Retries: {}", retries(&capture));
    let (skewed, skewed_capture) = run(&dir, "skewed", Some("+30d x50000"));
    assert_eq!(retries(&skewed_capture), retries(&capture), "as many Retries on a skewed clock");
    assert!(skewed == report, "the report depends on the machine's clock");
    let _ = std::fs::remove_dir_all(dir);
}
