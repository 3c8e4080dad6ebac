//! `anyedge bench failover`: a POP dies under load, again and again, and BGP's answer is
//! timed from outside: when its transit's session went down (detection: BFD, or the
//! session closing), when every transit's selected route stopped leading to it
//! (withdrawal), when no transit held a route from it at all (propagation: BGP between
//! transits waits out the delay model's one-way delays), and how long each affected
//! client flow went without replies (resume).

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
use crate::plan::{Plan, Role};
use crate::setup;

/// How the POP dies: frozen whole (node and speaker: only BFD notices), or its node
/// stopped (the speaker closes its session on the way out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    Freeze,
    Kill,
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
    /// delayed sessions between transits), per kill.
    pub propagated_ms: Vec<Option<f64>>,
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
    let Rounds { detect, withdrawn, propagated, resume } = result?;
    down?;
    let converge: Vec<f64> =
        detect.iter().zip(&withdrawn).filter_map(|(d, w)| Some(((*w)? - (*d)?).max(0.0))).collect();
    let seen = |v: &[Option<f64>]| v.iter().flatten().copied().collect::<Vec<f64>>();
    let (d, w, g) = (seen(&detect), seen(&withdrawn), seen(&propagated));
    Ok(FailoverFigures {
        pop: format!("pop/{}", t.pops[victim].name),
        fault,
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
/// VIP it publishes, and the groups that enter it for that VIP.
fn choose(t: &Topology, pop: Option<&str>) -> Result<(usize, SocketAddr, Vec<usize>), ClientError> {
    let first = |g: usize, k: usize| t.pop_order(g, k).first().copied();
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
    let groups: Vec<usize> = (0..t.clients.len()).filter(|&g| first(g, k) == Some(victim)).collect();
    let port = udp(k).ok_or(ClientError::Unsuited("no UDP listener".into()))?;
    Ok((victim, SocketAddr::new(IpAddr::V4(t.vips[k].ipv4), port), groups))
}

#[derive(Default)]
struct Rounds {
    detect: Vec<Option<f64>>,
    withdrawn: Vec<Option<f64>>,
    propagated: Vec<Option<f64>>,
    resume: Vec<f64>,
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
    let transits = transit_sockets(t, plan);
    let mut rounds = Rounds::default();
    for round in 0..kills {
        settle(&rt, &transits, victim)?;
        let probes: Vec<(Child, PathBuf)> = groups
            .iter()
            .map(|&g| start_probe(plan, exe, g, target, &dir.join(format!("failover-{round}-{g}.json"))))
            .collect::<Result<_, _>>()?;
        std::thread::sleep(LEAD);
        let at = Instant::now();
        match fault {
            Fault::Freeze => crate::client::lab::freeze(file, &name, true).map(drop)?,
            Fault::Kill => crate::client::lab::kill(file, &name)?,
        }
        let (d, w, g) = rt.block_on(watch(t, &transits, victim, at));
        rounds.detect.push(d);
        rounds.withdrawn.push(w);
        rounds.propagated.push(g);
        for (child, report) in probes {
            rounds.resume.extend(longest_gaps(child, &report)?);
        }
        match fault {
            Fault::Freeze => crate::client::lab::freeze(file, &name, false).map(drop)?,
            Fault::Kill => crate::client::lab::start(file, &name, exe)?,
        }
        let ms = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.1} ms"));
        eprintln!(
            "kill {}/{kills}: detected {}, withdrawn everywhere {}, gone from every transit {}",
            round + 1,
            ms(d),
            ms(w),
            ms(g)
        );
    }
    settle(&rt, &transits, victim)?;
    Ok(rounds)
}

/// Until every transit selects the victim's route for its own clients again, and has
/// for 3 s (a thawed speaker's BFD may flap once).
fn settle(rt: &tokio::runtime::Runtime, transits: &[PathBuf], victim: usize) -> Result<(), ClientError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut steady_since: Option<Instant> = None;
    while Instant::now() < deadline {
        let up = rt.block_on(bird::command(&transits[victim], "show protocols")).is_ok_and(|text| {
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
