//! What the lab tests share: a lab of its own per test (a uniquely named copy of
//! small.yaml, taken down on drop), one lab at a time, and the commands they run.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

pub const SMALL: &str = include_str!("../../topologies/small.yaml");

pub fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_anyedge")
}

/// Labs measure time: one at a time, so they do not slow each other down.
pub static ONE_LAB_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether this process may make namespaces; outside CI a non-root run skips.
pub fn may_run() -> bool {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root && std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("lab tests must run as root in CI");
    }
    if !root {
        eprintln!("skipping: lab tests need root (network namespaces)");
    }
    root
}

/// A lab of its own: a uniquely named copy of small.yaml, taken down on drop (also
/// when the test fails).
pub struct Lab {
    pub file: PathBuf,
    pub dir: PathBuf,
}

impl Lab {
    pub fn up(tag: &str) -> Lab {
        Lab::up_with(tag, |text| text)
    }

    /// A lab of small.yaml edited by `edit`.
    pub fn up_with(tag: &str, edit: impl Fn(String) -> String) -> Lab {
        Lab::up_flags(tag, edit, &[])
    }

    /// A lab of small.yaml edited by `edit`, brought up with `lab up FILE FLAGS…`.
    pub fn up_flags(tag: &str, edit: impl Fn(String) -> String, flags: &[&str]) -> Lab {
        Lab::up_topology(tag, SMALL, edit, flags)
    }

    /// A lab of `topology` (a shipped file's text, its `name:` line replaced) edited by
    /// `edit`, brought up with `lab up FILE FLAGS…`.
    pub fn up_topology(tag: &str, topology: &str, edit: impl Fn(String) -> String, flags: &[&str]) -> Lab {
        let name = format!("t-{tag}-{}", std::process::id());
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        let shipped = topology.lines().find_map(|l| l.strip_prefix("name: ")).expect("a name: line");
        let text = topology.replace(&format!("name: {shipped}"), &format!("name: {name}"));
        let text = edit(text.split("faults:").next().unwrap().to_string());
        let file = dir.join("lab.yaml");
        std::fs::write(&file, text).unwrap();
        let lab = Lab { file, dir };
        let out = lab.anyedge(&[&["lab", "up"], flags].concat());
        assert!(out.status.success(), "lab up: {}", String::from_utf8_lossy(&out.stderr));
        lab
    }

    pub fn anyedge(&self, args: &[&str]) -> std::process::Output {
        let (cmd, rest) = args.split_at(2);
        Command::new(exe()).args(cmd).arg(&self.file).args(rest).output().expect("runs")
    }

    /// Runs `anyedge probe` inside a client's namespace and returns its report.
    pub fn probe(&self, client: &str, target: &str, protocol: &str, flows: usize) -> Value {
        self.probe_with(client, target, protocol, flows, &[])
    }

    /// `probe` with further arguments (`--migrate-at 1s`).
    pub fn probe_with(&self, client: &str, target: &str, protocol: &str, flows: usize, extra: &[&str]) -> Value {
        let report = self.dir.join(format!("probe-{client}-{protocol}.json"));
        let out = Command::new(exe())
            .args(["lab", "exec"])
            .arg(&self.file)
            .arg(format!("client/{client}"))
            .args([
                "--",
                exe(),
                "probe",
                "--target",
                target,
                "--protocol",
                protocol,
                "--rate",
                "200",
                "--duration",
                "2s",
            ])
            .args(["--flows", &flows.to_string(), "--json"])
            .arg(&report)
            .args(extra)
            .output()
            .expect("runs");
        assert!(out.status.success(), "probe: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap()
    }

    /// `probe` where nothing should answer: it exits 1, says so, and still writes its report.
    pub fn probe_unanswered(&self, client: &str, target: &str, protocol: &str, flows: usize) -> Value {
        self.probe_unanswered_with(client, target, protocol, flows, &[])
    }

    /// `probe_unanswered` with further arguments (`--size 3000`).
    pub fn probe_unanswered_with(
        &self,
        client: &str,
        target: &str,
        protocol: &str,
        flows: usize,
        extra: &[&str],
    ) -> Value {
        let report = self.dir.join(format!("probe-{client}-{protocol}-unanswered.json"));
        let out = Command::new(exe())
            .args(["lab", "exec"])
            .arg(&self.file)
            .arg(format!("client/{client}"))
            .args(["--", exe(), "probe", "--target", target, "--protocol", protocol, "--rate", "200"])
            .args(["--duration", "2s", "--flows", &flows.to_string(), "--json"])
            .arg(&report)
            .args(extra)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(1), "probe: {}", String::from_utf8_lossy(&out.stdout));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("no answer from {target}")), "{stderr}");
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap()
    }

    pub fn prefix(&self) -> String {
        format!("{}-", self.file.parent().and_then(Path::file_name).unwrap().to_string_lossy())
    }
}

impl Lab {
    /// Takes the lab down and removes its folder (what dropping it does; a lab kept in a
    /// static, which is never dropped, is taken down this way at exit).
    pub fn down(&self) {
        let _ = Command::new(exe()).args(["lab", "down"]).arg(&self.file).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.down();
    }
}

pub fn namespaces_with(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with(prefix)).map(String::from).collect()
}

pub fn client_address(lab: &Lab, client: &str) -> String {
    let out = Command::new(exe())
        .args(["lab", "exec"])
        .arg(&lab.file)
        .arg(format!("client/{client}"))
        .args(["--", "ip", "-4", "-o", "addr", "show", "dev", "inet"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // "2: inet    inet 198.18.128.2/30 brd ...": the address is the token with a prefix.
    let addr = text.split_whitespace().find(|w| w.contains('/')).and_then(|a| a.split('/').next());
    addr.unwrap_or_else(|| panic!("no address in {text}")).to_string()
}

/// small.yaml with a three-node control plane.
pub fn with_control(text: String) -> String {
    text + "control: { nodes: 3 }\n"
}

pub fn ctl_status(lab: &Lab) -> Value {
    let out = ctl_write(lab, &["status", "--json"]);
    assert!(out.status.success(), "ctl status: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Waits (up to 5 s) for `check` to hold on `ctl status`.
pub fn wait_status(lab: &Lab, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let started = std::time::Instant::now();
    loop {
        let s = ctl_status(lab);
        if check(&s) {
            return s;
        }
        if started.elapsed() >= std::time::Duration::from_secs(5) {
            // What the control nodes said last: the lab (and its logs) goes when the test ends.
            let logs: Vec<String> = (1..=5)
                .filter_map(|i| {
                    let log = std::fs::read_to_string(lab_state_dir(lab).join(format!("control-{i}.log"))).ok()?;
                    let tail: Vec<&str> = log.lines().rev().take(12).collect();
                    Some(format!("control/{i}:\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n")))
                })
                .collect();
            panic!("{what}: {s}\n{}", logs.join("\n"));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `anyedge ctl FILE ARGS…`.
pub fn ctl_write(lab: &Lab, args: &[&str]) -> std::process::Output {
    Command::new(exe()).arg("ctl").arg(&lab.file).args(args).output().expect("runs")
}

/// A `ctl` write that must commit, then every CLB node applying it.
pub fn write_and_spread(lab: &Lab, args: &[&str]) {
    let out = ctl_write(lab, args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let commit = ctl_status(lab)["commit"].as_u64();
    wait_status(lab, "CLB nodes applied the write", |s| {
        ["clb/frankfurt/1", "clb/frankfurt/2"].iter().all(|n| s["applied"][n].as_u64() >= commit)
    });
}

/// Where a test lab keeps its state (`ANYEDGE_LAB_DIR` or /run/anyedge/labs).
pub fn lab_state_dir(lab: &Lab) -> PathBuf {
    let name = lab.dir.file_name().unwrap().to_string_lossy().to_string();
    let base = std::env::var_os("ANYEDGE_LAB_DIR").map_or_else(|| PathBuf::from("/run/anyedge/labs"), PathBuf::from);
    base.join(name)
}

/// What `pgrep -f` finds the lab's node processes by (each runs `anyedge node --config
/// STATE/nodes/NODE`); with `node` (`pop-paris`), that node's alone.
pub fn node_pattern(lab: &Lab, node: &str) -> String {
    format!("node --config {}/nodes/{node}", lab_state_dir(lab).display())
}

/// `anyedge probe` in a client's namespace, in the background (80 packets/s per flow
/// for 6 s); its report goes to `name` in the lab's folder.
pub fn spawn_probe(
    lab: &Lab,
    client: &str,
    target: &str,
    protocol: &str,
    flows: usize,
    name: &str,
) -> std::process::Child {
    Command::new(exe())
        .args(["lab", "exec"])
        .arg(&lab.file)
        .arg(format!("client/{client}"))
        .args(["--", exe(), "probe", "--target", target, "--protocol", protocol])
        .args(["--rate", "80", "--duration", "6s", "--flows", &flows.to_string(), "--json"])
        .arg(lab.dir.join(name))
        .spawn()
        .expect("runs")
}

pub mod net;
pub mod worlds;

/// Where `.ci/run` installs PyPI's `package` (`pip3 install --target target/DIR`), if it
/// is there; in CI it must be, elsewhere the test that wants it skips.
fn pip_installed(dir: &str, package: &str) -> Option<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join(dir);
    let found = dir.join(package).is_dir();
    if !found && std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{package} is not in {} (.ci/run installs it)", dir.display());
    }
    if !found {
        eprintln!("skipping: {package} is not in {} (.ci/run installs it)", dir.display());
    }
    found.then_some(dir)
}

/// aioquic: a QUIC client nobody here wrote.
pub fn aioquic_path() -> Option<std::path::PathBuf> {
    pip_installed("aioquic", "aioquic")
}

/// h2: an HTTP/2 client nobody here wrote.
pub fn h2py_path() -> Option<std::path::PathBuf> {
    pip_installed("h2py", "h2")
}

/// Every CLB node's view of every backend.
pub fn unhealthy(lab: &Lab) -> (Vec<String>, Value) {
    let s: Value = serde_json::from_slice(&lab.anyedge(&["lab", "status", "--json"]).stdout).unwrap();
    let bad = s["health"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.iter())
        .flat_map(|(clb, seen)| {
            seen.as_object()
                .into_iter()
                .flat_map(|b| b.iter())
                .filter(|(_, v)| *v != "healthy")
                .map(move |(b, v)| format!("{clb} sees {b} {}", v.as_str().unwrap_or("?")))
        })
        .collect();
    (bad, s["health"].clone())
}

/// Waits until the servers have passed the region's checks (two in a row, a second
/// apart) and no CLB node sees any backend unhealthy.
pub fn wait_every_backend_healthy(lab: &Lab) {
    let started = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_millis(2_500));
    loop {
        let (bad, health) = unhealthy(lab);
        if bad.is_empty() {
            return;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "backends still unhealthy: {bad:?}\n{health}");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// Someone else's CA (an ACME one, a company's): its root into `dir/root.pem`, and for
/// each entry of `chains` a full chain (leaf naming those hosts, then the intermediate)
/// and key, `dir/certs/NAME.pem` and `.key` after the first host, valid `years`.
pub fn someones_ca(dir: &std::path::Path, chains: &[&[&str]], years: (i32, i32)) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca = |name: &str, by: Option<&Issuer<'static, KeyPair>>| {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let pem = match by {
            Some(issuer) => p.signed_by(&key, issuer).unwrap().pem(),
            None => p.self_signed(&key).unwrap().pem(),
        };
        (pem, Issuer::new(p, key))
    };
    let (root_pem, root) = ca("Someone's Root", None);
    let (mid_pem, mid) = ca("Someone's Intermediate", Some(&root));
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    std::fs::write(dir.join("root.pem"), root_pem).unwrap();
    for hosts in chains {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, hosts[0]);
        (p.not_before, p.not_after) = (rcgen::date_time_ymd(years.0, 1, 1), rcgen::date_time_ymd(years.1, 1, 1));
        let leaf = p.signed_by(&key, &mid).unwrap().pem();
        std::fs::write(dir.join(format!("certs/{}.pem", hosts[0])), leaf + &mid_pem).unwrap();
        std::fs::write(dir.join(format!("certs/{}.key", hosts[0])), key.serialize_pem()).unwrap();
    }
}

/// The year it is now (UTC, to within a day of New Year): certificates a test makes are
/// valid around it, so the test does not expire.
pub fn this_year() -> i32 {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    1970 + (secs / 31_556_952) as i32
}

/// small.yaml's VIP with an HTTPS listener (8443), the hosts shop.example and
/// api.example, and a chain of its own for each (files as [`someones_ca`] writes them).
pub fn with_own_chains(text: String) -> String {
    text.replace(
        "      - { protocol: tcp, port: 443, scheduler: wrr, backends: web }",
        "      - { protocol: tcp, port: 443, scheduler: wrr, backends: web }\n      - { protocol: https, port: 8443, backends: web }",
    )
    .replace(
        "    pops: [paris, warsaw]\n",
        "    pops: [paris, warsaw]\n    hosts: [shop.example, api.example]\n    certificates:\n      - { chain: certs/shop.example.pem, key: certs/shop.example.key }\n      - { chain: certs/api.example.pem, key: certs/api.example.key }\n",
    )
}

/// Each group's (POP, AS path) for the first VIP: as the lab's speakers route it (`lab
/// catchments`) …
pub fn lab_ways(lab: &Lab) -> Vec<(String, Value)> {
    let out = lab.anyedge(&["lab", "catchments", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let clients = v["clients"].as_array().unwrap().iter();
    clients.map(|c| (c["pop"].as_str().unwrap_or("none").to_string(), c["as_path"].clone())).collect()
}

/// … and as the simulator's BGP core does (`anyedge catchments --json`), `down` withdrawn.
pub fn sim_ways(file: &std::path::Path, down: &[&str]) -> Vec<(String, Value)> {
    let downs: Vec<String> = down.iter().flat_map(|d| ["--down".to_string(), d.to_string()]).collect();
    let out = Command::new(exe()).arg("catchments").arg(file).arg("--json").args(&downs).output().expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let groups = v["vips"][0]["groups"].as_array().unwrap().iter();
    groups.map(|g| (g["pop"].as_str().unwrap_or("none").to_string(), g["as_path"].clone())).collect()
}

/// What `read` gives once it equals `want`, polling every `every` until `limit` has
/// passed (then its last answer): routes converge, they do not change at once.
pub fn poll_until_equal<T: PartialEq>(
    want: &T,
    limit: std::time::Duration,
    every: std::time::Duration,
    mut read: impl FnMut() -> T,
) -> T {
    let deadline = std::time::Instant::now() + limit;
    let mut got = read();
    while got != *want && std::time::Instant::now() < deadline {
        std::thread::sleep(every);
        got = read();
    }
    got
}
