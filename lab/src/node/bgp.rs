//! BGP in the lab: a BIRD 2 speaker in every POP and every transit namespace, run and
//! restarted by the node process that owns the namespace, configured from the topology
//! by the one rule in `anyedge_topology::bgp`.
//!
//! - A transit speaker (`transit/POP`) peers with its POP (eBGP, BFD 50 ms × 3, hold 3 s),
//!   with every other transit (eBGP through a relay that delays each speaker's messages
//!   by the delay model's one-way delay between the sites, [`crate::node::relay`]; MED
//!   set on import to the model's round trip in µs, compared across ASes), and installs the best route of each VIP prefix in its
//!   namespace's kernel table, which forwards the clients' packets.
//! - A POP speaker announces each VIP it publishes from a static protocol per VIP and
//!   address family (`vip4_K`, `vip6_K`); the POP node enables one while the VIP is
//!   healthy there (a live CLB node of its home region, with rise/fall hysteresis: the POP
//!   core's rule, `anyedge_pop::announce`, which the simulator follows too) and
//!   disables it when not, over the speaker's control socket. The speaker dies with the
//!   node (`PR_SET_PDEATHSIG`): a killed POP's session closes and its routes go at once;
//!   a frozen POP's BFD session times out.
//!
//! Sessions are one per family: POP–transit sessions over that family; transit–transit
//! sessions both over IPv4 loopback (the relays), each naming its link's address of its
//! family as the next hop.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyedge_pop::AnnounceChange;
use anyedge_topology::Topology;
use anyedge_topology::bgp::{CDN_ASN, HOLD_S, KEEPALIVE_S, med_us, pop_router_id, transit_asn, transit_router_id};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::node::relay;
use crate::plan::{LinkEnds, Plan, Role};

/// The speaker's program (Debian's `bird2`).
pub const BIRD: &str = "bird";

/// Is the speaker installed? The error names the package and how to install it.
pub fn check_installed() -> Result<(), String> {
    match Command::new(BIRD).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(_) => Ok(()),
        Err(_) => Err(format!(
            "the lab's BGP speaker `{BIRD}` is not installed: install Debian's bird2 (apt-get install bird2)"
        )),
    }
}

/// Session timers every speaker uses: quick reconnects after a flap (re-announce within
/// seconds, not BIRD's default minutes), the short hold time.
/// `on` or `off`: whether the POP–transit sessions run BFD (`failover.bfd_interval`).
fn bfd_switch(t: &Topology) -> &'static str {
    if t.failover.bfd_on() { "on" } else { "off" }
}

fn timers() -> String {
    format!(
        "hold time {HOLD_S}; keepalive time {KEEPALIVE_S}; connect delay time 1; connect retry time 1; error wait time 1, 10; error forget time 10;"
    )
}

/// The VIP prefixes of a topology, per family, as BIRD prefix sets.
fn prefix_sets(t: &Topology) -> (String, String) {
    prefix_sets_where(t, |_| true)
}

/// The prefixes of the VIPs POP `p` publishes: all its transit takes from it.
fn published_prefix_sets(t: &Topology, p: usize) -> (String, String) {
    prefix_sets_where(t, |v| v.pops.contains(&p))
}

fn prefix_sets_where(t: &Topology, keep: impl Fn(&&anyedge_topology::Vip) -> bool) -> (String, String) {
    let v4: Vec<String> = t.vips.iter().filter(&keep).map(|v| format!("{}/32", v.ipv4)).collect();
    let v6: Vec<String> = t.vips.iter().filter(&keep).filter_map(|v| v.ipv6.map(|a| format!("{a}/128"))).collect();
    let set = |v: Vec<String>| if v.is_empty() { String::new() } else { format!("[ {} ]", v.join(", ")) };
    (set(v4), set(v6))
}

fn header(out: &mut String, what: &str, router_id: std::net::Ipv4Addr) {
    let _ = writeln!(out, "# {what}: written by anyedge from the topology file; each start rewrites it.");
    let _ = writeln!(out, "router id {router_id};");
    let _ = writeln!(out, "log stderr {{ info, trace, remote, warning, error, auth, fatal, bug }};");
    let _ = writeln!(out, "protocol device {{ scan time 10; }}");
}

/// BFD on the POP–transit link, with the file's `failover.bfd_interval` and
/// `bfd_multiplier`.
fn bfd(out: &mut String, t: &Topology, dev: &str) {
    if !t.failover.bfd_on() {
        return;
    }
    let ms = t.failover.bfd_interval_ns / 1_000_000;
    let multiplier = t.failover.bfd_multiplier;
    let _ = writeln!(
        out,
        "protocol bfd {{ interface \"{dev}\" {{ min rx interval {ms} ms; min tx interval {ms} ms; multiplier {multiplier}; }}; }}"
    );
}

/// The two families' sessions over one link: (family, name suffix, local and peer
/// address).
fn families(l: &LinkEnds) -> [(&'static str, &'static str, IpAddr, IpAddr); 2] {
    [("ipv4", "4", IpAddr::V4(l.local), IpAddr::V4(l.peer)), ("ipv6", "6", IpAddr::V6(l.local6), IpAddr::V6(l.peer6))]
}

/// The speaker of transit `x` (upstream of POP `x`).
pub fn transit_config(t: &Topology, plan: &Plan, x: usize) -> Result<String, String> {
    let ns = plan.ns_index(&Role::Transit(x)).ok_or("no transit namespace")?;
    let pop_ns = plan.ns_index(&Role::Pop(x)).ok_or("no POP namespace")?;
    let asn = transit_asn(x);
    let (set4, set6) = prefix_sets(t);
    let mut out = String::new();
    header(&mut out, &format!("transit/{}", t.pops[x].name), transit_router_id(x));
    // Only BGP's best routes go to the kernel: they forward the clients' packets.
    for (name, family) in [("kernel4", "ipv4"), ("kernel6", "ipv6")] {
        let _ = writeln!(
            out,
            "protocol kernel {name} {{ {family} {{ import none; export filter {{ if source = RTS_BGP then accept; reject; }}; }}; }}"
        );
    }
    let pop = plan.link_between(ns, pop_ns).ok_or("transit without a link to its POP")?;
    bfd(&mut out, t, &pop.dev);
    let (timers, bfd) = (timers(), bfd_switch(t));
    // From the POP: only the prefixes of the VIPs it publishes (a POP announcing another
    // POP's VIP is refused), at MED 0 (it is this transit's own customer); a session per
    // family it announces in (as its own configuration has), with TTL security (RFC
    // 5082: only a packet from the link itself, TTL 255, reaches the session).
    let (pop4, pop6) = pop_families(t, x);
    let (own4, own6) = published_prefix_sets(t, x);
    for ((family, suffix, local, peer), (set, announces)) in
        families(&pop).into_iter().zip([(&own4, pop4), (&own6, pop6)])
    {
        if !announces {
            continue;
        }
        let _ = writeln!(
            out,
            "protocol bgp pop{suffix} {{ local {local} as {asn}; neighbor {peer} as {CDN_ASN}; ttl security yes; bfd {bfd}; debug {{ states }}; {timers} med metric yes; {family} {{ import filter {{ if net ~ {set} then {{ bgp_med = 0; accept; }} reject; }}; export none; }}; }}"
        );
    }
    // Every other transit, through the relay that delays what this speaker says (see
    // `relay`): the VIP prefixes both ways, MED = the model's round trip, the link's
    // address as next hop (resolved over the links' routes, `protocol direct`).
    let _ = writeln!(out, "protocol direct {{ ipv4; ipv6; }}");
    for y in (0..t.pops.len()).filter(|&y| y != x) {
        let peer_ns = plan.ns_index(&Role::Transit(y)).ok_or("no transit namespace")?;
        let l = plan.link_between(ns, peer_ns).ok_or("transits without a link")?;
        let med = med_us(t, x, y);
        let passive = if x > y { " passive on;" } else { "" };
        for (f, ((family, suffix, local, _), set)) in families(&l).into_iter().zip([&set4, &set6]).enumerate() {
            if set.is_empty() {
                continue;
            }
            let (me, relay, port) = (relay::SPEAKER_ADDR, relay::relay_addr(f, y), relay::RELAY_PORT);
            let _ = writeln!(
                out,
                "protocol bgp t{y}_{suffix} {{ description \"transit/{}\"; local {me} as {asn}; neighbor {relay} port {port} as {}; multihop;{passive} debug {{ states }}; {timers} med metric yes; {family} {{ next hop address {local}; import filter {{ if net ~ {set} then {{ bgp_med = {med}; accept; }} reject; }}; export filter {{ if source = RTS_BGP && net ~ {set} then accept; reject; }}; }}; }}",
                t.pops[y].name,
                transit_asn(y)
            );
        }
    }
    catchment_policies(t, x, (&set4, &set6), &mut out);
    Ok(out)
}

/// The client groups attached to transit `x` with a `catchment:` list: per group and
/// family, a table of its own (the kernel's [`bgp::catchment_table`], which the transit's
/// policy rule consults for packets from the group's link) holding the listed POPs'
/// routes, preferred in the list's order (BIRD's `preference`), with an unreachable
/// route beneath them all: with every listed POP withdrawn the group has no route.
fn catchment_policies(t: &Topology, x: usize, (set4, set6): (&str, &str), out: &mut String) {
    for g in (0..t.clients.len()).filter(|&g| anyedge_topology::bgp::attach(t, g) == Some(x)) {
        let Some(list) = t.clients[g].catchment.as_ref() else { continue };
        let kernel = anyedge_topology::bgp::catchment_table(g);
        for (family, suffix, set) in [("ipv4", "4", set4), ("ipv6", "6", set6)] {
            if set.is_empty() {
                continue;
            }
            let table = format!("g{g}_{suffix}");
            // The POP a route leads to is the AS before the POPs' own at the path's end.
            let ranked: String = list
                .iter()
                .enumerate()
                .map(|(rank, &p)| {
                    let mask = if p == x {
                        format!("[= {CDN_ASN} =]")
                    } else {
                        format!("[= * {} {CDN_ASN} =]", transit_asn(p))
                    };
                    format!("if bgp_path ~ {mask} then {{ preference = {}; accept; }} ", 300 - rank)
                })
                .collect();
            let prefixes: Vec<&str> = set.trim_matches(|c| c == '[' || c == ']' || c == ' ').split(", ").collect();
            let unreachable: String = prefixes.iter().map(|p| format!("route {p} unreachable; ")).collect();
            let _ = writeln!(out, "{family} table {table};");
            let _ = writeln!(
                out,
                "protocol static {table}_none {{ {family} {{ table {table}; preference 1; }}; {unreachable}}}"
            );
            let _ = writeln!(
                out,
                "protocol pipe {table}_pipe {{ table master{suffix}; peer table {table}; import none; export filter {{ if source = RTS_BGP && net ~ {set} then {{ {ranked}}} reject; }}; }}"
            );
            let _ = writeln!(
                out,
                "protocol kernel {table}_kernel {{ {family} {{ table {table}; import none; export all; }}; kernel table {kernel}; }}"
            );
        }
    }
}

/// Does POP `p` publish a VIP with an IPv4 address, with an IPv6 one?
fn pop_families(t: &Topology, p: usize) -> (bool, bool) {
    let published = || t.vips.iter().filter(|v| v.pops.contains(&p));
    (published().next().is_some(), published().any(|v| v.ipv6.is_some()))
}

/// A static protocol's name for VIP `k` in one family.
pub fn vip_protocol(k: usize, v6: bool) -> String {
    format!("vip{}_{k}", if v6 { 6 } else { 4 })
}

/// The speaker of POP `p`: one static protocol per VIP it publishes and family, each
/// exported to its transit; all start enabled (a POP starts healthy, as its probes do).
pub fn pop_config(t: &Topology, plan: &Plan, p: usize) -> Result<String, String> {
    let ns = plan.ns_index(&Role::Pop(p)).ok_or("no POP namespace")?;
    let transit = plan.ns_index(&Role::Transit(p)).ok_or("no transit namespace")?;
    let l = plan.link_between(ns, transit).ok_or("POP without a link to its transit")?;
    let mut out = String::new();
    header(&mut out, &format!("pop/{}", t.pops[p].name), pop_router_id(p));
    bfd(&mut out, t, &l.dev);
    for (k, v) in t.vips.iter().enumerate().filter(|(_, v)| v.pops.contains(&p)) {
        let _ =
            writeln!(out, "protocol static {} {{ ipv4; route {}/32 unreachable; }}", vip_protocol(k, false), v.ipv4);
        if let Some(v6) = v.ipv6 {
            let _ = writeln!(out, "protocol static {} {{ ipv6; route {v6}/128 unreachable; }}", vip_protocol(k, true));
        }
    }
    let (any4, any6) = pop_families(t, p);
    let (timers, bfd) = (timers(), bfd_switch(t));
    let asn = transit_asn(p);
    for ((family, suffix, local, peer), any) in families(&l).into_iter().zip([any4, any6]) {
        if !any {
            continue;
        }
        let _ = writeln!(
            out,
            "protocol bgp transit{suffix} {{ local {local} as {CDN_ASN}; neighbor {peer} as {asn}; ttl security yes; bfd {bfd}; debug {{ states }}; {timers} {family} {{ import none; export where source = RTS_STATIC; }}; }}"
        );
    }
    Ok(out)
}

/// Where node `node`'s speaker keeps its configuration and control socket.
pub fn speaker_dir(state_dir: &Path, node: &str) -> PathBuf {
    state_dir.join("bgp").join(crate::layout::sanitize(node))
}

/// Node `node`'s speaker's control socket.
pub fn speaker_socket(state_dir: &Path, node: &str) -> PathBuf {
    speaker_dir(state_dir, node).join("bird.ctl")
}

/// A BIRD process this node runs, restarted when it dies.
pub struct Speaker {
    config: PathBuf,
    pub socket: PathBuf,
    child: Child,
    /// Times it died and was started again.
    pub restarts: u64,
}

impl Speaker {
    /// Writes the configuration under the node's state, has BIRD check it, and starts it.
    pub fn start(state_dir: &Path, node: &str, config: &str) -> Result<Speaker, String> {
        check_installed()?;
        let dir = speaker_dir(state_dir, node);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join("bird.conf");
        std::fs::write(&path, config).map_err(|e| format!("{}: {e}", path.display()))?;
        let parsed = Command::new(BIRD).arg("-p").arg("-c").arg(&path).output().map_err(|e| e.to_string())?;
        if !parsed.status.success() {
            return Err(format!(
                "{}: BIRD refuses the configuration: {}",
                path.display(),
                String::from_utf8_lossy(&parsed.stderr).trim()
            ));
        }
        let socket = speaker_socket(state_dir, node);
        let child = spawn(&path, &socket)?;
        Ok(Speaker { config: path, socket, child, restarts: 0 })
    }

    /// Starts the speaker again if it has died; true when it did.
    pub fn revive(&mut self) -> bool {
        match self.child.try_wait() {
            Ok(None) => false,
            Ok(Some(status)) => {
                tracing::warn!("BGP speaker exited ({status}); starting it again");
                match spawn(&self.config, &self.socket) {
                    Ok(child) => {
                        self.child = child;
                        self.restarts += 1;
                        true
                    }
                    Err(e) => {
                        tracing::warn!("BGP speaker: {e}");
                        false
                    }
                }
            }
            Err(_) => false,
        }
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every speaker process this node has started (for [`stop_all`]).
static RUNNING: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// Stops this node's speakers and reaps them (the node is told to stop): BIRD closes its
/// sessions, and no process of the lab is left behind, not even a zombie.
pub fn stop_all() {
    let pids = RUNNING.lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default();
    for pid in pids {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = nix::sys::wait::waitpid(pid, None);
    }
}

/// BIRD in the foreground (its log on the node's stderr), killed when this process dies.
fn spawn(config: &Path, socket: &Path) -> Result<Child, String> {
    use std::os::unix::process::CommandExt;
    let _ = std::fs::remove_file(socket);
    let mut cmd = Command::new(BIRD);
    cmd.arg("-f").arg("-c").arg(config).arg("-s").arg(socket).stdin(Stdio::null());
    // SAFETY: prctl is async-signal-safe; the closure only calls it.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| format!("cannot start {BIRD}: {e}"))?;
    if let Ok(mut running) = RUNNING.lock() {
        running.push(child.id());
    }
    Ok(child)
}

/// One command over BIRD's control socket; its reply, without the reply codes. BIRD's
/// replies are lines `CODE-text` (more follow), ` text` (continuation) and `CODE text`
/// (the last); codes 8000 and up are errors.
pub async fn command(socket: &Path, cmd: &str) -> Result<String, String> {
    let run = async {
        let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| format!("{}: {e}", socket.display()))?;
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        // The greeting: `0001 BIRD 2.0.12 ready.`
        lines.next_line().await.map_err(|e| e.to_string())?;
        write.write_all(format!("{cmd}\n").as_bytes()).await.map_err(|e| e.to_string())?;
        let mut reply = String::new();
        while let Some(line) = lines.next_line().await.map_err(|e| e.to_string())? {
            let (code, sep, text) = split_reply(&line);
            if code.is_some_and(|c| c >= 8000) {
                return Err(format!("BIRD: {}", text.trim()));
            }
            reply.push_str(text);
            reply.push('\n');
            if code.is_some() && sep == ' ' {
                break;
            }
        }
        Ok(reply)
    };
    tokio::time::timeout(Duration::from_secs(2), run).await.map_err(|_| "BIRD did not answer in 2 s".to_string())?
}

/// `CODE-text`, `CODE text` or ` text`: the code, the separator and the text.
fn split_reply(line: &str) -> (Option<u32>, char, &str) {
    let b = line.as_bytes();
    if b.len() >= 5 && b[..4].iter().all(u8::is_ascii_digit) && (b[4] == b'-' || b[4] == b' ') {
        (line[..4].parse().ok(), b[4] as char, &line[5..])
    } else {
        (None, '-', line.strip_prefix(' ').unwrap_or(line))
    }
}

/// A BGP session as `show protocols` lists it (and, from `show protocols all`, the
/// prefixes it carries).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Session {
    pub name: String,
    /// BIRD's state (`up`, `start`, `down`) and the BGP state (`Established`, `Active`…).
    pub state: String,
    pub bgp: String,
    /// When it entered its state (BIRD's time format).
    pub since: String,
    /// Prefixes learned from the peer and announced to it (`show protocols all` only).
    pub imported: u64,
    pub exported: u64,
}

/// The BGP sessions out of `show protocols` or `show protocols all`: a protocol's line
/// starts unindented; `all` adds indented details, among them `Routes: N imported, …,
/// M exported` per channel.
pub fn sessions(show_protocols: &str) -> Vec<Session> {
    let mut out: Vec<Session> = Vec::new();
    let mut in_bgp = false;
    for l in show_protocols.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if !l.starts_with(char::is_whitespace) {
            in_bgp = f.len() >= 5 && f[1] == "BGP";
            if in_bgp {
                out.push(Session {
                    name: f[0].to_string(),
                    state: f[3].to_string(),
                    since: f[4].to_string(),
                    bgp: f.get(5).map_or(String::new(), |s| s.to_string()),
                    imported: 0,
                    exported: 0,
                });
            }
        } else if let (true, Some(session), Some(&"Routes:")) = (in_bgp, out.last_mut(), f.first()) {
            let count = |what: &str| {
                f.windows(2).find(|w| w[1].trim_end_matches(',') == what).and_then(|w| w[0].parse::<u64>().ok())
            };
            session.imported += count("imported").unwrap_or(0);
            session.exported += count("exported").unwrap_or(0);
        }
    }
    out
}

/// A route as `show route all` lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Route {
    pub prefix: String,
    /// The protocol (session) it came from.
    pub from: String,
    pub via: String,
    pub as_path: Vec<u32>,
    pub med: Option<u32>,
    /// The route BGP selected (and the kernel forwards by).
    pub best: bool,
    /// The POP that announced it (`pop/NAME`), from its AS path.
    pub pop: Option<String>,
}

/// The routes out of `show route all`; `own` is the POP a one-AS path (the CDN's alone)
/// comes from, for a transit (its own POP) or a POP (itself).
pub fn routes(t: &Topology, own: usize, show_route_all: &str) -> Vec<Route> {
    let mut out: Vec<Route> = Vec::new();
    let mut prefix = String::new();
    for line in show_route_all.lines() {
        if let Some(at) = line.find(" [") {
            let head = &line[..at];
            if !line.starts_with(char::is_whitespace) {
                prefix = head.split_whitespace().next().unwrap_or_default().to_string();
            }
            let from = line[at + 2..].split_whitespace().next().unwrap_or_default().to_string();
            let best = line.contains("] * (");
            out.push(Route {
                prefix: prefix.clone(),
                from,
                via: String::new(),
                as_path: Vec::new(),
                med: None,
                best,
                pop: None,
            });
            continue;
        }
        let Some(r) = out.last_mut() else { continue };
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("via ") {
            r.via = rest.split_whitespace().next().unwrap_or_default().to_string();
        } else if let Some(rest) = l.strip_prefix("BGP.as_path:") {
            r.as_path = rest.split_whitespace().filter_map(|a| a.parse().ok()).collect();
            // The POP's transit is the AS just before the POPs' own at the path's end
            // (a route re-exported by a third transit has that one first).
            let p = match r.as_path[..] {
                [CDN_ASN] => Some(own),
                [.., last_transit, CDN_ASN] => (last_transit.checked_sub(transit_asn(0))).map(|p| p as usize),
                _ => None,
            };
            r.pop = p.filter(|&p| p < t.pops.len()).map(|p| format!("pop/{}", t.pops[p].name));
        } else if let Some(rest) = l.strip_prefix("BGP.med:") {
            r.med = rest.trim().parse().ok();
        }
    }
    out
}

/// A node's routes for every VIP prefix (`anyedge lab bgp`), from its speaker.
pub async fn vip_routes(t: &Topology, own: usize, socket: &Path) -> Result<Vec<Route>, String> {
    table_routes(t, own, socket, None).await
}

/// Client group `g`'s routes for every VIP prefix at its transit: its own table when the
/// file gives it a `catchment:` list, else the transit's.
pub async fn group_routes(t: &Topology, g: usize, socket: &Path) -> Result<Vec<Route>, String> {
    let own = anyedge_topology::bgp::attach(t, g).ok_or("a group with no POP to attach to")?;
    table_routes(t, own, socket, t.clients[g].catchment.as_ref().map(|_| g)).await
}

async fn table_routes(t: &Topology, own: usize, socket: &Path, group: Option<usize>) -> Result<Vec<Route>, String> {
    let mut all = Vec::new();
    for v in &t.vips {
        let prefixes = std::iter::once((format!("{}/32", v.ipv4), 4)).chain(v.ipv6.map(|a| (format!("{a}/128"), 6)));
        for (prefix, family) in prefixes {
            let table = group.map_or(String::new(), |g| format!(" table g{g}_{family}"));
            let text = command(socket, &format!("show route all{table} for {prefix}")).await?;
            all.extend(routes(t, own, &text).into_iter().filter(|r| r.prefix == prefix));
        }
    }
    Ok(all)
}

/// A POP's announcements as its speaker should have them: what the POP core decided
/// (`anyedge_pop::announce`, the rule both drivers follow), carried to the task that
/// runs the speaker and applies it.
pub struct Announcer {
    /// (VIP, announced) for each VIP the POP publishes.
    vips: Vec<(usize, bool)>,
    desired: tokio::sync::watch::Sender<Vec<(usize, bool)>>,
}

impl Announcer {
    /// Starts POP `p`'s speaker (every VIP announced) and the task that keeps it running.
    pub async fn start(
        t: &Topology,
        plan: &Plan,
        p: usize,
        state_dir: &Path,
        (node, drops): (&str, crate::node::drops::Drops),
    ) -> Result<Announcer, String> {
        let mut speaker = Speaker::start(state_dir, node, &pop_config(t, plan, p)?)?;
        wait_for_socket(&speaker.socket).await?;
        let vips: Vec<(usize, bool)> =
            (0..t.vips.len()).filter(|&k| t.vips[k].pops.contains(&p)).map(|k| (k, true)).collect();
        let families: Vec<(usize, bool)> = vips.iter().map(|&(k, _)| (k, t.vips[k].ipv6.is_some())).collect();
        let (desired, mut wanted) = tokio::sync::watch::channel(vips.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                let revived = tokio::select! {
                    _ = tick.tick() => speaker.revive(),
                    changed = wanted.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        true
                    }
                };
                if revived {
                    // A restarted speaker starts with every VIP announced: tell it what
                    // health says once it listens.
                    let _ = wait_for_socket(&speaker.socket).await;
                    let now: Vec<(usize, bool)> = wanted.borrow_and_update().clone();
                    apply(&speaker.socket, &families, &now).await;
                }
                publish(&speaker, &drops).await;
            }
        });
        Ok(Announcer { vips, desired })
    }

    /// What the core decided, to the speaker: each change names a VIP address, which
    /// stands for its VIP (both families of a VIP share a home region, so they change
    /// together). Returns the VIPs whose announcement changed, with the new state.
    pub fn carry(&mut self, t: &Topology, changes: &[AnnounceChange]) -> Vec<(usize, bool)> {
        let mut changed = Vec::new();
        for change in changes {
            let is = |v: &anyedge_topology::Vip| {
                IpAddr::V4(v.ipv4) == change.vip || v.ipv6.map(IpAddr::V6) == Some(change.vip)
            };
            let Some(k) = t.vips.iter().position(is) else { continue };
            for (vip, on) in self.vips.iter_mut().filter(|(vip, on)| *vip == k && *on != change.announced) {
                *on = change.announced;
                changed.push((*vip, *on));
            }
        }
        if !changed.is_empty() {
            let _ = self.desired.send(self.vips.clone());
        }
        changed
    }
}

/// Enables or disables each VIP's static protocols to match `now`.
async fn apply(socket: &Path, families: &[(usize, bool)], now: &[(usize, bool)]) {
    for &(k, on) in now {
        let v6 = families.iter().any(|&(f, has6)| f == k && has6);
        for proto in std::iter::once(vip_protocol(k, false)).chain(v6.then(|| vip_protocol(k, true))) {
            let verb = if on { "enable" } else { "disable" };
            if let Err(e) = command(socket, &format!("{verb} {proto}")).await {
                tracing::warn!("BGP speaker: {verb} {proto}: {e}");
            }
        }
    }
}

/// Runs a transit: its speaker, restarted when it dies, and its sessions in `status`.
pub async fn run_transit(
    t: &Topology,
    plan: &Plan,
    x: usize,
    state_dir: &Path,
    (ready, drops): (&Path, crate::node::drops::Drops),
) -> Result<(), String> {
    let name = format!("transit/{}", t.pops[x].name);
    relay::start(relay_peers(t, plan, x)?, relay_families(t)).await?;
    let mut speaker = Speaker::start(state_dir, &name, &transit_config(t, plan, x)?)?;
    wait_for_socket(&speaker.socket).await?;
    std::fs::write(ready, b"ready\n").map_err(|e| e.to_string())?;
    supervise(&mut speaker, &drops).await
}

/// Transit `x`'s relays: one per other transit, delaying by the model's one-way delay
/// between the two sites (half the round trip its MED carries).
fn relay_peers(t: &Topology, plan: &Plan, x: usize) -> Result<Vec<relay::Peer>, String> {
    let ns = plan.ns_index(&Role::Transit(x)).ok_or("no transit namespace")?;
    (0..t.pops.len())
        .filter(|&y| y != x)
        .map(|y| {
            let peer_ns = plan.ns_index(&Role::Transit(y)).ok_or("no transit namespace")?;
            let link = plan.link_between(ns, peer_ns).ok_or("transits without a link")?;
            Ok(relay::Peer { y, link, one_way: Duration::from_micros(u64::from(med_us(t, x, y)) / 2) })
        })
        .collect()
}

/// The families transits exchange routes in: 0 (IPv4) always, 1 (IPv6) when a VIP has
/// an IPv6 address.
fn relay_families(t: &Topology) -> Vec<usize> {
    let (_, set6) = prefix_sets(t);
    if set6.is_empty() { vec![0] } else { vec![0, 1] }
}

/// Waits until a new speaker answers on its control socket.
pub async fn wait_for_socket(socket: &Path) -> Result<(), String> {
    for _ in 0..100 {
        if command(socket, "show status").await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("{}: BIRD did not come up in 5 s", socket.display()))
}

/// Revives the speaker when it dies and publishes its sessions (`bgp` in `status`) and
/// restarts (`bgp_speaker_restarts`), every 250 ms, for ever.
pub async fn supervise(speaker: &mut Speaker, drops: &crate::node::drops::Drops) -> Result<(), String> {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        speaker.revive();
        publish(speaker, drops).await;
    }
}

/// The speaker's sessions and restarts into the node's status.
pub async fn publish(speaker: &Speaker, drops: &crate::node::drops::Drops) {
    drops.set_gauge("bgp_speaker_restarts", speaker.restarts);
    if let Ok(text) = command(&speaker.socket, "show protocols all").await {
        let list = sessions(&text);
        let established = list.iter().filter(|s| s.bgp == "Established").count();
        drops.set_gauge("bgp_sessions_established", established as u64);
        drops.set_section("bgp", serde_json::json!({ "sessions": list, "speaker_restarts": speaker.restarts }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transit_takes_from_its_pop_only_the_vips_that_pop_publishes_over_ttl_security() {
        // reference.yaml: `edge` (198.18.0.20) on every POP, `api` (198.18.0.30) on paris.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies/reference.yaml");
        let t = anyedge_topology::load(&path).unwrap();
        let plan = Plan::new(&t);
        let session = |x: usize| {
            let config = transit_config(&t, &plan, x).unwrap();
            config.lines().find(|l| l.starts_with("protocol bgp pop4")).unwrap().to_string()
        };
        let (paris, warsaw) = (session(0), session(1));
        assert!(paris.contains("198.18.0.20/32") && paris.contains("198.18.0.30/32"), "{paris}");
        assert!(warsaw.contains("198.18.0.20/32") && !warsaw.contains("198.18.0.30"), "{warsaw}");
        assert!(paris.contains("ttl security yes") && warsaw.contains("ttl security yes"));
        let pop = pop_config(&t, &plan, 1).unwrap();
        assert!(pop.lines().filter(|l| l.starts_with("protocol bgp")).all(|l| l.contains("ttl security yes")), "{pop}");
    }

    #[test]
    fn reply_lines_split_into_code_and_text() {
        assert_eq!(split_reply("0001 BIRD 2.0.12 ready."), (Some(1), ' ', "BIRD 2.0.12 ready."));
        assert_eq!(split_reply("2002-Name       Proto"), (Some(2002), '-', "Name       Proto"));
        assert_eq!(split_reply(" continued"), (None, '-', "continued"));
        assert_eq!(split_reply("8001 Protocol not found"), (Some(8001), ' ', "Protocol not found"));
    }

    #[test]
    fn routes_come_from_show_route_all_with_the_pop_that_announced_them() {
        let t = anyedge_topology::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../topologies/small.yaml"
        )))
        .unwrap();
        // A second route of the same prefix is indented to the header's width.
        let text = [
            "Table master4:",
            "198.18.0.20/32       unicast [pop4 21:09:00.498] * (100) [AS64500i]",
            "\tvia 198.18.128.14 on l3",
            "\tBGP.as_path: 64500",
            "\tBGP.med: 0",
            "                     unicast [t1_4 21:09:00.546] (100) [AS64500i]",
            "\tvia 198.18.128.30 on l7",
            "\tBGP.as_path: 4200000001 64500",
            "\tBGP.med: 26770",
        ]
        .join("\n");
        let r = routes(&t, 0, &text);
        assert_eq!(r.len(), 2);
        assert!(r[0].best && !r[1].best);
        assert_eq!((r[0].pop.as_deref(), r[1].pop.as_deref()), (Some("pop/paris"), Some("pop/warsaw")));
        assert_eq!((r[1].via.as_str(), r[1].med, r[1].from.as_str()), ("198.18.128.30", Some(26770), "t1_4"));
        assert_eq!(r[1].prefix, "198.18.0.20/32");
    }

    #[test]
    fn sessions_come_from_show_protocols() {
        let text = "Name       Proto      Table      State  Since         Info\n\
device1    Device     ---        up     12:00:00.000  \n\
pop4       BGP        ---        up     12:00:01.000  Established   \n\
t1_4       BGP        ---        start  12:00:01.000  Active        Socket: Connection refused\n";
        let s = sessions(text);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].name.as_str(), s[0].state.as_str(), s[0].bgp.as_str()), ("pop4", "up", "Established"));
        assert_eq!((s[1].name.as_str(), s[1].bgp.as_str()), ("t1_4", "Active"));
    }

    #[test]
    fn show_protocols_all_adds_each_sessions_prefix_counts() {
        // As BIRD 2.0.12 answers on its control socket (one leading space stripped).
        let text = "Name       Proto      Table      State  Since         Info\n\
vip4_0     Static     master4    up     06:35:15.875  \n \
 Channel ipv4\n    Routes:         1 imported, 0 exported, 1 preferred\n\
transit4   BGP        ---        up     06:35:16.681  Established   \n \
 BGP state:          Established\n    Neighbor AS:      4200000000\n \
 Channel ipv4\n    State:          UP\n    Routes:         0 imported, 1 exported, 0 preferred\n\
t2_4       BGP        ---        up     06:35:16.700  Established   \n \
 Channel ipv4\n    Routes:         2 imported, 1 filtered, 3 exported, 1 preferred\n";
        let s = sessions(text);
        assert_eq!(s.len(), 2, "the static protocol is no session: {s:?}");
        assert_eq!((s[0].name.as_str(), s[0].imported, s[0].exported), ("transit4", 0, 1));
        assert_eq!((s[1].name.as_str(), s[1].imported, s[1].exported), ("t2_4", 2, 3));
    }
}
