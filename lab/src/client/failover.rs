//! `anyedge bench failover`: a POP dies under load, again and again, and BGP's answer is
//! timed from outside: when its transit's session went down (detection: BFD, or the
//! session closing), when every transit's selected route stopped leading to it
//! (withdrawal), when no transit held a route from it at all (propagation: BGP between
//! transits waits out the delay model's one-way delays), and how long each affected
//! client flow went without replies (resume).
//!
//! Over an AS-level internet (`internet.ases`) the same three moments are read off the
//! routers' speakers ([`Speakers::Routers`]): a session of the POP's down at one of its
//! upstream routers; no router's selected route leading straight to the POP; and every
//! client group's packets led elsewhere, followed hop by hop as `lab catchments` does.

use crate::client::ClientError;
use crate::client::unsuited;
use crate::error::Doing;
use crate::plan::PlanGap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyedge_topology::{ListenerProtocol, Topology};

use crate::bird;
use crate::client::bench::quantile;
use crate::client::route_watch::RouteWatch;
use crate::plan::{Plan, Role};
use crate::setup;
use anyedge_topology::routing::RouterId;

/// How the POP dies: frozen whole (node and speaker: only BFD notices), or its node
/// stopped (the speaker closes its session on the way out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    Freeze,
    Kill,
}

/// Which of a kill's two updates crossed: the POP's withdrawal, or its announcement once
/// it is back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Update {
    Withdrawal,
    Announcement,
}

/// An update's way to one group: the BGP speakers it passed from the upstream router
/// its way entered the victim by (a route reflector counts) and how long that took, the
/// upstream's first route change to the access router's last (the ways with the victim up,
/// which a withdrawal comes back along and an announcement goes out along).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Crossing {
    pub kill: usize,
    pub update: Update,
    pub group: String,
    pub hops: u32,
    pub ms: f64,
}

#[derive(Debug, serde::Serialize)]
pub struct FailoverFigures {
    pub pop: String,
    pub fault: Fault,
    pub kills: usize,
    /// The client groups whose POP it is, and the flows they ran each time.
    pub groups: Vec<String>,
    pub flows_per_kill: usize,
    /// Fault → the POP's session down at its transit, per kill (`null`: not seen in 5 s).
    pub detect_ms: Vec<Option<f64>>,
    /// Fault → no transit's selected route leads to the POP, per kill.
    pub withdrawn_ms: Vec<Option<f64>>,
    /// Fault → no transit holds any route from the POP (the withdrawal has crossed the
    /// delayed sessions between transits), per kill; over an AS-level internet, no client
    /// group's packets reach it.
    pub propagated_ms: Vec<Option<f64>>,
    /// Read off an AS-level internet's routers (`internet.ases`), not transits.
    pub over_as_internet: bool,
    /// Over an AS-level internet, per kill: the fault → the first of the victim's upstream
    /// routers changed its route (the kernel's clock, not a poll).
    pub upstream_ms: Vec<Option<f64>>,
    /// Over an AS-level internet, per kill: the POP started again → the first of its
    /// upstream routers had its route (BIRD's start and the session's set-up included).
    pub back_ms: Vec<Option<f64>>,
    /// Over an AS-level internet, per kill and timed group: how the withdrawal, and the
    /// announcement once the POP was back, crossed from the upstream router the group's
    /// way entered by to its access router.
    pub crossings: Vec<Crossing>,
    /// The median of the withdrawals' ms per speaker passed (ways of one speaker or
    /// more): what `failover.route_hop` models.
    pub hop_ms_p50: f64,
    pub hop_ms_max: f64,
    /// The same for the announcements.
    pub announce_hop_ms_p50: f64,
    pub announce_hop_ms_max: f64,
    /// The file's `failover.route_hop`, which the simulator uses, ms.
    pub route_hop_ms: f64,
    /// Each affected flow's longest wait for a reply, over every kill.
    pub resume_ms: Vec<f64>,
    pub detect_ms_p50: f64,
    pub detect_ms_max: f64,
    pub withdrawn_ms_p50: f64,
    pub withdrawn_ms_max: f64,
    pub propagated_ms_p50: f64,
    pub propagated_ms_max: f64,
    /// Detection → withdrawal everywhere: what `failover.route_converge` models.
    pub converge_ms_p50: f64,
    pub converge_ms_max: f64,
    pub resume_ms_p50: f64,
    pub resume_ms_p90: f64,
    pub resume_ms_max: f64,
}

/// Flows each affected group runs per kill, and their rate (requests/s, all flows).
const FLOWS: usize = 8;
const RATE: u32 = 160;
/// Load before the fault, and the probe's whole run.
const LEAD: Duration = Duration::from_millis(1_500);
const PROBE: &str = "4s";
/// How long polling waits for detection and withdrawal.
const WATCH: Duration = Duration::from_secs(5);

pub fn failover(
    file: &Path,
    exe: &Path,
    pop: Option<&str>,
    kills: usize,
    fault: Fault,
) -> Result<FailoverFigures, ClientError> {
    let t = anyedge_topology::load(file)?;
    let plan = Plan::new(&t);
    let (victim, target, groups) = choose(&t, pop)?;
    setup::up_with(file, exe, setup::LabOptions::default())?;
    let result = kill_rounds(file, exe, (&t, &plan), (victim, target, &groups), (kills.max(1), fault));
    let down = setup::down(file);
    let Rounds { detect, withdrawn, propagated, resume, upstream, back, crossings } = result?;
    let per_hop = |u: Update| -> Vec<f64> {
        crossings.iter().filter(|c| c.hops > 0 && c.update == u).map(|c| c.ms / f64::from(c.hops)).collect()
    };
    let (per_hop, announce_per_hop) = (per_hop(Update::Withdrawal), per_hop(Update::Announcement));
    down?;
    let converge: Vec<f64> =
        detect.iter().zip(&withdrawn).filter_map(|(d, w)| Some(((*w)? - (*d)?).max(0.0))).collect();
    let seen = |v: &[Option<f64>]| v.iter().flatten().copied().collect::<Vec<f64>>();
    let (d, w, g) = (seen(&detect), seen(&withdrawn), seen(&propagated));
    Ok(FailoverFigures {
        pop: format!("pop/{}", t.pops[victim].name),
        fault,
        over_as_internet: t.internet.has_ases(),
        upstream_ms: upstream,
        back_ms: back,
        crossings,
        hop_ms_p50: quantile(&per_hop, 0.5),
        hop_ms_max: quantile(&per_hop, 1.0),
        announce_hop_ms_p50: quantile(&announce_per_hop, 0.5),
        announce_hop_ms_max: quantile(&announce_per_hop, 1.0),
        route_hop_ms: t.failover.route_hop_ns as f64 / 1e6,
        kills: detect.len(),
        groups: groups.iter().map(|&g| format!("client/{}", t.clients[g].name)).collect(),
        flows_per_kill: FLOWS * groups.len(),
        detect_ms_p50: quantile(&d, 0.5),
        detect_ms_max: quantile(&d, 1.0),
        withdrawn_ms_p50: quantile(&w, 0.5),
        withdrawn_ms_max: quantile(&w, 1.0),
        propagated_ms_p50: quantile(&g, 0.5),
        propagated_ms_max: quantile(&g, 1.0),
        converge_ms_p50: quantile(&converge, 0.5),
        converge_ms_max: quantile(&converge, 1.0),
        resume_ms_p50: quantile(&resume, 0.5),
        resume_ms_p90: quantile(&resume, 0.9),
        resume_ms_max: quantile(&resume, 1.0),
        detect_ms: detect,
        withdrawn_ms: withdrawn,
        propagated_ms: propagated,
        resume_ms: resume,
    })
}

/// The POP to kill (named, else the first some client group enters), a UDP listener of a
/// VIP it publishes, and the groups that enter it for that VIP (over an AS-level
/// internet, by BGP's catchments with every POP up).
fn choose(t: &Topology, pop: Option<&str>) -> Result<(usize, SocketAddr, Vec<usize>), ClientError> {
    let by_bgp: Vec<Vec<Option<usize>>> = (0..t.vips.len())
        .map(|k| match t.internet.has_ases() {
            true => anyedge_topology::catchments::of(t, k, &|_| true)
                .map(|c| c.groups.iter().map(|x| x.pop).collect())
                .unwrap_or_default(),
            false => Vec::new(),
        })
        .collect();
    let first = |g: usize, k: usize| match t.internet.has_ases() {
        true => by_bgp[k].get(g).copied().flatten(),
        false => t.pop_order(g, k).first().copied(),
    };
    let udp = |k: usize| t.vips[k].listeners.iter().find(|l| l.protocol == ListenerProtocol::Udp).map(|l| l.port);
    let victim = match pop {
        Some(name) => {
            t.pops.iter().position(|p| p.name == name).ok_or_else(|| unsuited(format!("--pop {name}: no such POP")))?
        }
        None => (0..t.clients.len())
            .find_map(|g| (0..t.vips.len()).find(|&k| udp(k).is_some()).and_then(|k| first(g, k)))
            .ok_or(ClientError::Unsuited("no client group enters a POP with a UDP listener".into()))?,
    };
    let k = (0..t.vips.len())
        .find(|&k| udp(k).is_some() && (0..t.clients.len()).any(|g| first(g, k) == Some(victim)))
        .ok_or_else(|| {
            unsuited(format!("no client group enters pop/{} for a VIP with a UDP listener", t.pops[victim].name))
        })?;
    let mut groups: Vec<usize> = (0..t.clients.len()).filter(|&g| first(g, k) == Some(victim)).collect();
    if t.internet.has_ases() {
        // Over an AS-level internet a group may have no route once the POP withdraws (its
        // network's best was one it may not pass on): it has no recovery to time.
        let after = anyedge_topology::catchments::of(t, k, &|p| p != victim).map_err(|e| unsuited(e.to_string()))?;
        let (kept, stranded): (Vec<usize>, Vec<usize>) =
            groups.iter().partition(|&&g| after.groups.get(g).is_some_and(|c| c.pop.is_some()));
        for g in stranded {
            eprintln!("client/{}: no route once pop/{} withdraws; not timed", t.clients[g].name, t.pops[victim].name);
        }
        groups = kept;
        if groups.is_empty() {
            return Err(unsuited(format!(
                "no client group that enters pop/{} has a route once it withdraws",
                t.pops[victim].name
            )));
        }
    }
    let port = udp(k).ok_or(ClientError::Unsuited("no UDP listener".into()))?;
    Ok((victim, SocketAddr::new(IpAddr::V4(t.vips[k].ipv4), port), groups))
}

#[derive(Default)]
struct Rounds {
    detect: Vec<Option<f64>>,
    withdrawn: Vec<Option<f64>>,
    propagated: Vec<Option<f64>>,
    resume: Vec<f64>,
    upstream: Vec<Option<f64>>,
    back: Vec<Option<f64>>,
    crossings: Vec<Crossing>,
}

impl Rounds {
    /// What kill `kill`'s monitors saw of `update`, started at `wall`: the first upstream
    /// router's change (into `upstream` or `back`) and each timed group's crossing.
    fn record(
        &mut self,
        (kill, update): (usize, Update),
        ways: &Ways<'_>,
        monitors: RouteWatch,
        wall: std::time::SystemTime,
    ) {
        let changes = monitors.stop(ways.vip);
        let (first, crossed) = ways.crossings(&changes, wall);
        match update {
            Update::Withdrawal => self.upstream.push(first),
            Update::Announcement => self.back.push(first),
        }
        self.crossings.extend(crossed.into_iter().map(|(group, hops, ms)| Crossing { kill, update, group, hops, ms }));
    }

    /// Kill `kill`'s crossings of `update`, as text.
    fn crossed(&self, kill: usize, update: Update) -> String {
        let each: Vec<String> = self
            .crossings
            .iter()
            .filter(|c| c.kill == kill && c.update == update)
            .map(|c| format!("{} {} speakers in {:.1} ms", c.group, c.hops, c.ms))
            .collect();
        each.join(", ")
    }
}

fn kill_rounds(
    file: &Path,
    exe: &Path,
    (t, plan): (&Topology, &Plan),
    (victim, target, groups): (usize, SocketAddr, &[usize]),
    (kills, fault): (usize, Fault),
) -> Result<Rounds, ClientError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().doing(|| "a runtime".into())?;
    let dir = crate::layout::state_dir(&plan.lab);
    let name = format!("pop/{}", t.pops[victim].name);
    let speakers = Speakers::of(t, plan, victim);
    let mut rounds = Rounds::default();
    let ways = Ways::new(t, (victim, target, groups));
    // The monitors of the last POP's return, read once its sessions have settled.
    let mut back: Option<(RouteWatch, std::time::SystemTime)> = None;
    for round in 0..kills {
        settle(&rt, &speakers.settled(victim))?;
        if let Some((monitors, wall)) = back.take() {
            rounds.record((round - 1, Update::Announcement), &ways, monitors, wall);
            report_back(&rounds, round - 1);
        }
        let probes: Vec<(Child, PathBuf)> = groups
            .iter()
            .map(|&g| start_probe(plan, exe, g, target, &dir.join(format!("failover-{round}-{g}.json"))))
            .collect::<Result<_, _>>()?;
        // The monitors start with the load, well before the fault: each must have
        // subscribed to its kernel's route changes by then.
        let monitors = route_watch(&speakers, plan, &dir, 2 * round)?;
        std::thread::sleep(LEAD);
        let wall = std::time::SystemTime::now();
        let at = Instant::now();
        match fault {
            Fault::Freeze => crate::client::lab::freeze(file, &name, true).map(drop)?,
            Fault::Kill => crate::client::lab::kill(file, &name)?,
        }
        let (d, w, g) = match &speakers {
            Speakers::Transits(transits) => rt.block_on(watch(t, transits, victim, at)),
            Speakers::Routers { .. } => watch_routers((t, plan), &rt, &speakers, (victim, at)),
        };
        if let Some(m) = monitors {
            rounds.record((round, Update::Withdrawal), &ways, m, wall);
        }
        rounds.detect.push(d);
        rounds.withdrawn.push(w);
        rounds.propagated.push(g);
        for (child, report) in probes {
            rounds.resume.extend(longest_gaps(child, &report)?);
        }
        back = route_watch(&speakers, plan, &dir, 2 * round + 1)?.map(|m| (m, std::time::SystemTime::now()));
        match fault {
            Fault::Freeze => crate::client::lab::freeze(file, &name, false).map(drop)?,
            Fault::Kill => crate::client::lab::start(file, &name, exe)?,
        }
        let ms = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.1} ms"));
        let gone = if t.internet.has_ases() { "no group reaches it" } else { "gone from every transit" };
        eprintln!("kill {}/{kills}: detected {}, withdrawn everywhere {}, {gone} {}", round + 1, ms(d), ms(w), ms(g));
        let crossed = rounds.crossed(round, Update::Withdrawal);
        if let Some(up) = rounds.upstream.last().filter(|_| !crossed.is_empty()) {
            eprintln!("  an upstream's route moved {}; from there: {crossed}", ms(*up));
        }
    }
    settle(&rt, &speakers.settled(victim))?;
    if let Some((monitors, wall)) = back.take() {
        rounds.record((kills - 1, Update::Announcement), &ways, monitors, wall);
        report_back(&rounds, kills - 1);
    }
    Ok(rounds)
}

/// Route monitors on every router, over an AS-level internet (none over transits).
fn route_watch(speakers: &Speakers, plan: &Plan, dir: &Path, n: usize) -> Result<Option<RouteWatch>, ClientError> {
    match speakers {
        Speakers::Routers { .. } => RouteWatch::start(plan, dir, n).map(Some),
        Speakers::Transits(_) => Ok(None),
    }
}

/// Prints how kill `kill`'s POP came back: when an upstream had its route again, and
/// the announcement's crossings from there.
fn report_back(rounds: &Rounds, kill: usize) {
    let crossed = rounds.crossed(kill, Update::Announcement);
    if let Some(Some(up)) = rounds.back.last().filter(|_| !crossed.is_empty()) {
        eprintln!("  back {}: an upstream had its route {up:.0} ms after the start; from there: {crossed}", kill + 1);
    }
}

/// The ways the timed groups take to the victim with every POP up (which a withdrawal
/// comes back along and an announcement goes out along), worked out once per bench.
struct Ways<'a> {
    t: &'a Topology,
    victim: usize,
    groups: &'a [usize],
    /// The VIP whose routes the monitors watch.
    vip: std::net::Ipv4Addr,
    /// Every group's catchment for it (none: not over an AS-level internet).
    before: Option<anyedge_topology::catchments::Catchments>,
}

impl<'a> Ways<'a> {
    fn new(t: &'a Topology, (victim, target, groups): (usize, SocketAddr, &'a [usize])) -> Ways<'a> {
        let k = t.vips.iter().position(|v| IpAddr::V4(v.ipv4) == target.ip());
        let vip = k.map_or(std::net::Ipv4Addr::UNSPECIFIED, |k| t.vips[k].ipv4);
        let before = match t.internet.has_ases() {
            true => k.and_then(|k| anyedge_topology::catchments::of(t, k, &|_| true).ok()),
            false => None,
        };
        Ways { t, victim, groups, vip, before }
    }

    /// From each router's route changes over one update (`changes`, seconds since the
    /// epoch): its start (at `wall`) → the victim's first upstream router to change, and
    /// per group (name, speakers, ms) the upstream its way entered by → its access
    /// router's last change.
    fn crossings(
        &self,
        changes: &std::collections::BTreeMap<RouterId, Vec<f64>>,
        wall: std::time::SystemTime,
    ) -> (Option<f64>, Vec<(String, u32, f64)>) {
        let (t, Some(before)) = (self.t, &self.before) else { return (None, Vec::new()) };
        let net = t.internet.ways.internetwork(t);
        let start_s = wall.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let first = |r: RouterId| changes.get(&r).and_then(|v| v.first().copied());
        let upstream = before.groups.iter().filter(|c| c.pop == Some(self.victim)).filter_map(|c| first(c.upstream?));
        let upstream_s = upstream.fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.min(x))));
        let crossed = self
            .groups
            .iter()
            .filter_map(|&g| {
                let c = &before.groups[g];
                let from = first(c.upstream?)?;
                let to = changes.get(&net.group_router(g))?.last().copied()?;
                Some((format!("client/{}", t.clients[g].name), c.hops, ((to - from) * 1000.0).max(0.0)))
            })
            .collect();
        (upstream_s.map(|s| (s - start_s) * 1000.0), crossed)
    }
}

/// The speakers a failover is read from.
enum Speakers {
    /// Each POP's own transit, in POP order.
    Transits(Vec<PathBuf>),
    /// Over an AS-level internet: the victim POP's own speaker, each router's, the
    /// names of the victim's sessions at its upstream routers (socket, protocol), and
    /// the victim's addresses on its links (a route leading straight to it has one as
    /// its next hop).
    Routers { pop: PathBuf, all: Vec<PathBuf>, upstream: Vec<(PathBuf, String)>, at_victim: Vec<String> },
}

impl Speakers {
    fn of(t: &Topology, plan: &Plan, victim: usize) -> Speakers {
        if !t.internet.has_ases() {
            return Speakers::Transits(transit_sockets(t, plan));
        }
        let dir = crate::layout::state_dir(&plan.lab);
        let socket = |name: &str| bird::speaker_socket(&dir, name);
        let net = t.internet.ways.internetwork(t);
        let g = net.graph();
        let me = net.pop_router(victim);
        let upstream = (0..g.sessions())
            .map(anyedge_topology::routing::SessionId)
            .filter(|&s| g.session(s).a == me)
            .filter_map(|s| Some((socket(plan.router_node(g.session(s).b.0)?), format!("s{}", s.0))))
            .collect();
        let ns = plan.ns_index(&Role::Pop(victim));
        let at_victim = plan
            .links
            .iter()
            .filter_map(|l| match ns {
                Some(n) if l.a == n => Some(l.a_addr.to_string()),
                Some(n) if l.b == n => Some(l.b_addr.to_string()),
                _ => None,
            })
            .collect();
        Speakers::Routers {
            pop: socket(&format!("pop/{}", t.pops[victim].name)),
            all: plan
                .nodes
                .iter()
                .filter(|n| matches!(plan.namespaces[n.ns].role, Role::Router(_)))
                .map(|n| socket(&n.name))
                .collect(),
            upstream,
            at_victim,
        }
    }

    /// The speaker whose sessions must all be up for the victim to count as back: its
    /// transit's, or over an AS-level internet the victim POP's own.
    fn settled(&self, victim: usize) -> PathBuf {
        match self {
            Speakers::Transits(transits) => transits[victim].clone(),
            Speakers::Routers { pop, .. } => pop.clone(),
        }
    }
}

/// [`watch`] over an AS-level internet, polled as fast as the speakers answer: when an
/// upstream router of the victim saw its session go down, when no router's selected
/// route led straight to the victim, and when no group's packets reached it.
fn watch_routers(
    (t, plan): (&Topology, &Plan),
    rt: &tokio::runtime::Runtime,
    speakers: &Speakers,
    (victim, at): (usize, Instant),
) -> (Option<f64>, Option<f64>, Option<f64>) {
    let Speakers::Routers { all, upstream, at_victim, .. } = speakers else { return (None, None, None) };
    // One moment at a time, in the order they come, so each poll asks only what it
    // times (asking all 42 routers of topologies/internet.yaml takes milliseconds).
    let first = |done: &dyn Fn() -> bool| -> Option<f64> {
        while at.elapsed() < WATCH {
            if done() {
                return Some(at.elapsed().as_secs_f64() * 1000.0);
            }
        }
        None
    };
    let detect = first(&|| upstream.iter().any(|(socket, name)| session_down(rt, socket, name)));
    let withdrawn = first(&|| !all.iter().any(|socket| selects_via(t, rt, socket, at_victim)));
    let gone = first(&|| !(0..t.clients.len()).any(|g| reaches(t, plan, rt, g, victim)));
    (detect, withdrawn, gone)
}

/// Whether protocol `name` at the speaker is not established.
fn session_down(rt: &tokio::runtime::Runtime, socket: &Path, name: &str) -> bool {
    let text = rt.block_on(bird::command(socket, "show protocols")).unwrap_or_default();
    bird::sessions(&text).iter().any(|s| s.name == name && s.bgp != "Established")
}

/// Whether the speaker's selected route for a VIP has one of `next_hops` as its next hop.
fn selects_via(t: &Topology, rt: &tokio::runtime::Runtime, socket: &Path, next_hops: &[String]) -> bool {
    let routes = rt.block_on(bird::vip_routes(t, 0, socket)).unwrap_or_default();
    routes.iter().any(|r| r.best && next_hops.contains(&r.via))
}

/// Whether group `g`'s packets to any VIP reach POP `victim`.
fn reaches(t: &Topology, plan: &Plan, rt: &tokio::runtime::Runtime, g: usize, victim: usize) -> bool {
    (0..t.vips.len()).any(|k| crate::client::routes::way(t, plan, rt, (g, k)).is_ok_and(|w| w.pop == Some(victim)))
}

/// Until every session of the victim's transit (or its own speaker) is established, and
/// has been for 3 s (a thawed speaker's BFD may flap once).
fn settle(rt: &tokio::runtime::Runtime, speaker: &Path) -> Result<(), ClientError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut steady_since: Option<Instant> = None;
    while Instant::now() < deadline {
        let up = rt.block_on(bird::command(speaker, "show protocols")).is_ok_and(|text| {
            let s = bird::sessions(&text);
            !s.is_empty() && s.iter().all(|x| x.bgp == "Established")
        });
        match (up, steady_since) {
            (true, Some(since)) if since.elapsed() >= Duration::from_secs(3) => return Ok(()),
            (true, None) => steady_since = Some(Instant::now()),
            (false, _) => steady_since = None,
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(ClientError::NotInTime("the POP's sessions did not stay established for 3 s within a minute".into()))
}

/// Polls the transits every 2 ms from `at`: when the victim's own transit lost its
/// session, when no transit's selected route led to the victim any more, and when no
/// transit held a route from it.
async fn watch(
    t: &Topology,
    transits: &[PathBuf],
    victim: usize,
    at: Instant,
) -> (Option<f64>, Option<f64>, Option<f64>) {
    let ms = || at.elapsed().as_secs_f64() * 1000.0;
    let pop = format!("pop/{}", t.pops[victim].name);
    let (mut detect, mut withdrawn, mut gone) = (None, None, None);
    while at.elapsed() < WATCH && (detect.is_none() || withdrawn.is_none() || gone.is_none()) {
        if detect.is_none() {
            let text = bird::command(&transits[victim], "show protocols").await.unwrap_or_default();
            if bird::sessions(&text).iter().any(|s| s.name.starts_with("pop") && s.bgp != "Established") {
                detect = Some(ms());
            }
        }
        if withdrawn.is_none() && selecting(t, transits, &pop).await.is_none() {
            withdrawn = Some(ms());
        }
        if gone.is_none() && !holding(t, transits, &pop).await {
            gone = Some(ms());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    (detect, withdrawn, gone)
}

/// Whether any transit holds a route (selected or not) that `pop` announced.
async fn holding(t: &Topology, transits: &[PathBuf], pop: &str) -> bool {
    for (x, socket) in transits.iter().enumerate() {
        let routes = bird::vip_routes(t, x, socket).await.unwrap_or_default();
        if routes.iter().any(|r| r.pop.as_deref() == Some(pop)) {
            return true;
        }
    }
    false
}

/// The first transit whose selected route for a VIP leads to `pop` (`pop/NAME`), if any.
pub(crate) async fn selecting(t: &Topology, transits: &[PathBuf], pop: &str) -> Option<usize> {
    for (x, socket) in transits.iter().enumerate() {
        let routes = bird::vip_routes(t, x, socket).await.unwrap_or_default();
        if routes.iter().any(|r| r.best && r.pop.as_deref() == Some(pop)) {
            return Some(x);
        }
    }
    None
}

/// Every transit's speaker socket, in POP order.
pub(crate) fn transit_sockets(t: &Topology, plan: &Plan) -> Vec<PathBuf> {
    let dir = crate::layout::state_dir(&plan.lab);
    (0..t.pops.len()).map(|x| bird::speaker_socket(&dir, &format!("transit/{}", t.pops[x].name))).collect()
}

fn start_probe(
    plan: &Plan,
    exe: &Path,
    g: usize,
    target: SocketAddr,
    report: &Path,
) -> Result<(Child, PathBuf), ClientError> {
    let ns = plan.ns_index(&Role::Client(g)).ok_or(PlanGap("no client namespace"))?;
    let child = Command::new("ip")
        .args(["netns", "exec", &plan.namespaces[ns].name])
        .arg(exe)
        .args(["probe", "--target", &target.to_string(), "--protocol", "udp", "--duration", PROBE])
        .args(["--rate", &RATE.to_string(), "--flows", &FLOWS.to_string(), "--json"])
        .arg(report)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .doing(|| "cannot start the probe".into())?;
    Ok((child, report.to_path_buf()))
}

/// A probe's flows' longest gaps between replies (ms).
fn longest_gaps(child: Child, report: &Path) -> Result<Vec<f64>, ClientError> {
    let out = child.wait_with_output().doing(|| "the probe".into())?;
    if !out.status.success() {
        return Err(ClientError::Answered { who: "probe".into(), said: String::from_utf8_lossy(&out.stderr).into() });
    }
    let text = std::fs::read_to_string(report).at(report)?;
    let r: serde_json::Value = serde_json::from_str(&text)
        .map_err(|source| ClientError::Json { what: report.display().to_string(), source })?;
    Ok(r["longest_gap_ms"].as_array().into_iter().flatten().filter_map(serde_json::Value::as_f64).collect())
}
