//! Drawing a random fault schedule from a topology's world, within a budget that keeps the
//! world recoverable: every outage ends before the schedule does, each VIP keeps a POP,
//! each region a CLB node, each backend group a live bound backend, and the control plane
//! a majority that can reach each other.

use std::net::SocketAddr;

use anyedge_ccn::ComponentRng;
use anyedge_topology::{CONTROL_NODES_MAX, Fault, FaultAction, LinkOverride, Target, Topology};

const MS: u64 = 1_000_000;

/// A kind of fault `anyedge chaos` may draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// Kill and restart a POP.
    Pop,
    /// Kill and restart one CLB node.
    Clb,
    /// Kill and restart every CLB node of a region.
    Region,
    /// Kill and restart a backend port, or unbind and bind it again.
    Backend,
    /// Kill and restart a control node.
    Control,
    /// Split the control nodes, then heal.
    Partition,
    /// Lose, delay and jitter a backbone link for a while.
    Link,
    /// `set-weight` writes through the control plane (straight to CLBs without one).
    Write,
}

pub const KINDS: [FaultKind; 8] = [
    FaultKind::Pop,
    FaultKind::Clb,
    FaultKind::Region,
    FaultKind::Backend,
    FaultKind::Control,
    FaultKind::Partition,
    FaultKind::Link,
    FaultKind::Write,
];

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Pop => "pop",
            FaultKind::Clb => "clb",
            FaultKind::Region => "region",
            FaultKind::Backend => "backend",
            FaultKind::Control => "control",
            FaultKind::Partition => "partition",
            FaultKind::Link => "link",
            FaultKind::Write => "write",
        }
    }

    pub fn from_name(name: &str) -> Option<FaultKind> {
        KINDS.into_iter().find(|k| k.name() == name)
    }

    /// Why this world has no room for this kind of fault, if it has none.
    pub fn unavailable(self, t: &Topology) -> Option<String> {
        let control = t.control.as_ref().map_or(0, |c| c.nodes);
        match self {
            FaultKind::Pop if !t.vips.iter().any(|v| v.pops.len() >= 2) => Some(
                "every VIP is published at one POP only: killing it would leave its clients nowhere (the budget keeps a POP per VIP up)".into(),
            ),
            FaultKind::Clb if !t.regions.iter().any(|r| r.clb_nodes >= 2) => {
                Some("every region has one CLB node (the budget keeps one up)".into())
            }
            FaultKind::Backend if !groups(t).iter().any(|g| g.len() >= 2) => {
                Some("every backend group has one backend (the budget keeps one up and bound)".into())
            }
            FaultKind::Control | FaultKind::Partition if control == 0 => Some("the file has no `control:` section".into()),
            FaultKind::Link if !(0..t.pops.len()).any(|p| (0..t.regions.len()).any(|r| t.backbone.has_link(p, r))) => {
                Some("the file has no backbone links".into())
            }
            FaultKind::Write if groups(t).is_empty() => Some("the file has no backends to weigh".into()),
            _ => None,
        }
    }
}

/// Every backend group's members: (region, address).
fn groups(t: &Topology) -> Vec<Vec<(usize, SocketAddr)>> {
    t.regions
        .iter()
        .enumerate()
        .flat_map(|(r, region)| {
            region.backend_groups.iter().map(move |g| g.backends.iter().map(|b| (r, b.addr)).collect())
        })
        .collect()
}

/// Something an outage takes away for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resource {
    Pop(usize),
    Clb(usize, u16),
    Region(usize),
    Backend(SocketAddr),
    Control(u8),
    /// A partition (its minority side counts as control nodes away).
    Partition,
}

/// Outages drawn so far, and the rules that keep the world recoverable.
struct Budget<'t> {
    t: &'t Topology,
    busy: Vec<(Resource, u64, u64)>,
}

impl Budget<'_> {
    /// The distinct resources busy at some point of [from, to) that satisfy `which`.
    fn overlapping(&self, from: u64, to: u64, which: impl Fn(Resource) -> bool) -> Vec<Resource> {
        let mut out: Vec<Resource> = Vec::new();
        for &(r, a, b) in &self.busy {
            if a < to && from < b && which(r) && !out.contains(&r) {
                out.push(r);
            }
        }
        out
    }

    /// Whether taking `r` away over [from, to) leaves the world recoverable.
    fn allows(&self, r: Resource, from: u64, to: u64) -> bool {
        let t = self.t;
        if !self.overlapping(from, to, |x| x == r).is_empty() {
            return false;
        }
        match r {
            Resource::Pop(p) => t.vips.iter().filter(|v| v.pops.contains(&p)).all(|v| {
                let away = self.overlapping(from, to, |x| matches!(x, Resource::Pop(q) if v.pops.contains(&q)));
                away.len() + 1 < v.pops.len()
            }),
            Resource::Clb(region, _) => {
                let away = self.overlapping(
                    from,
                    to,
                    |x| matches!(x, Resource::Clb(q, _) | Resource::Region(q) if q == region),
                );
                let whole = away.iter().any(|x| matches!(x, Resource::Region(_)));
                !whole && away.len() + 1 < usize::from(t.regions[region].clb_nodes)
            }
            Resource::Region(region) => self
                .overlapping(from, to, |x| matches!(x, Resource::Clb(q, _) | Resource::Region(q) if q == region))
                .is_empty(),
            Resource::Backend(addr) => groups(t).iter().filter(|g| g.iter().any(|&(_, a)| a == addr)).all(|g| {
                let away =
                    self.overlapping(from, to, |x| matches!(x, Resource::Backend(a) if g.iter().any(|&(_, b)| b == a)));
                away.len() + 1 < g.len()
            }),
            Resource::Control(_) | Resource::Partition => false,
        }
    }

    /// Whether control nodes `away` (down, or on a partition's minority side) may be away
    /// over [from, to): a majority stays up and connected throughout.
    fn allows_control(&self, away: &[u8], from: u64, to: u64, partition: bool) -> bool {
        let nodes = self.t.control.as_ref().map_or(0, |c| c.nodes);
        if partition && !self.overlapping(from, to, |x| x == Resource::Partition).is_empty() {
            return false;
        }
        let mut all: Vec<u8> = away.to_vec();
        for (r, a, b) in &self.busy {
            if *a < to && from < *b {
                match r {
                    Resource::Control(n) if !all.contains(n) => all.push(*n),
                    _ => {}
                }
            }
        }
        // A partition's minority, when one overlaps, is away too (kept as Control rows).
        all.len() * 2 < usize::from(nodes)
    }
}

/// The window faults are drawn in: outages start after 0.5 s and end by `end_ns`.
pub struct Window {
    pub start_ns: u64,
    pub end_ns: u64,
}

/// A random schedule for seed `seed` of the given kinds, faults sorted by time.
pub fn draw(t: &Topology, seed: u64, kinds: &[FaultKind], window: &Window) -> Vec<Fault> {
    let mut rng = ComponentRng::new(seed, "chaos/schedule");
    let mut budget = Budget { t, busy: Vec::new() };
    let mut faults = Vec::new();
    if kinds.is_empty() || window.end_ns <= window.start_ns + 200_000_000 {
        return faults;
    }
    let episodes = 3 + rng.below(10);
    for _ in 0..episodes {
        // A few tries to find an episode the budget allows.
        for _ in 0..8 {
            let kind = kinds[rng.below(kinds.len() as u64) as usize];
            // Whole milliseconds, so the schedule written as YAML is exactly this one.
            let span_ms = (window.end_ns - window.start_ns) / MS;
            let from = window.start_ns + rng.below(span_ms - 100) * MS;
            let length = (300 + rng.below(3_700)) * MS;
            let to = (from + length).min(window.end_ns);
            if episode(t, &mut rng, &mut budget, kind, (from, to), &mut faults) {
                break;
            }
        }
    }
    faults.sort_by_key(|f| f.at_ns);
    faults
}

fn down_up(faults: &mut Vec<Fault>, (from, to): (u64, u64), target: Target, name: &str, unbind: bool) {
    let (off, on) = if unbind {
        (FaultAction::Unbind(target), FaultAction::Bind(target))
    } else {
        (FaultAction::Down(target), FaultAction::Up(target))
    };
    let (a, b) = if unbind { ("unbind", "bind") } else { ("down", "up") };
    faults.push(Fault { at_ns: from, action: off, what: format!("{a} {name}") });
    faults.push(Fault { at_ns: to, action: on, what: format!("{b} {name}") });
}

/// One of `n` things, drawn from `rng` (0 when there are none).
fn pick(rng: &mut ComponentRng, n: usize) -> usize {
    rng.below(n.max(1) as u64) as usize
}

/// Draws one episode of `kind` over `span`; false when the budget does not allow it.
fn episode(
    t: &Topology,
    rng: &mut ComponentRng,
    budget: &mut Budget<'_>,
    kind: FaultKind,
    span: (u64, u64),
    faults: &mut Vec<Fault>,
) -> bool {
    let (from, to) = span;
    let taken = |budget: &mut Budget<'_>, r: Resource| {
        let ok = budget.allows(r, from, to);
        if ok {
            budget.busy.push((r, from, to));
        }
        ok
    };
    match kind {
        FaultKind::Pop => {
            let p = pick(rng, t.pops.len());
            taken(budget, Resource::Pop(p)) && {
                down_up(faults, span, Target::Pop(p), &format!("pop/{}", t.pops[p].name), false);
                true
            }
        }
        FaultKind::Clb => {
            let r = pick(rng, t.regions.len());
            let index = pick(rng, usize::from(t.regions[r].clb_nodes)) as u16;
            taken(budget, Resource::Clb(r, index)) && {
                let name = anyedge_topology::clb_name(&t.regions[r].name, index);
                down_up(faults, span, Target::Clb { region: r, index }, &name, false);
                true
            }
        }
        FaultKind::Region => {
            let r = pick(rng, t.regions.len());
            taken(budget, Resource::Region(r)) && {
                down_up(faults, span, Target::Region(r), &format!("region/{}", t.regions[r].name), false);
                true
            }
        }
        FaultKind::Backend => {
            let all: Vec<(usize, SocketAddr)> = groups(t).into_iter().flatten().collect();
            let Some(&(region, addr)) = all.get(pick(rng, all.len())) else { return false };
            let unbind = rng.chance(0.5);
            taken(budget, Resource::Backend(addr)) && {
                down_up(faults, span, Target::Backend { region, addr }, &format!("backend/{addr}"), unbind);
                true
            }
        }
        FaultKind::Control => {
            let nodes = t.control.as_ref().map_or(0, |c| c.nodes);
            let n = pick(rng, usize::from(nodes)) as u8 + 1;
            let ok = nodes > 0 && budget.allows_control(&[n], from, to, false) && {
                budget.overlapping(from, to, |x| x == Resource::Control(n)).is_empty()
            };
            ok && {
                budget.busy.push((Resource::Control(n), from, to));
                down_up(faults, span, Target::Control(n), &format!("control/{n}"), false);
                true
            }
        }
        FaultKind::Partition => partition(t, rng, budget, span, faults),
        FaultKind::Link => link(t, rng, span, faults),
        FaultKind::Write => {
            let all: Vec<(usize, SocketAddr)> = groups(t).into_iter().flatten().collect();
            let Some(&(region, addr)) = all.get(pick(rng, all.len())) else { return false };
            // 1–100: a group of weight-0 backends would serve nobody new.
            let weight = 1 + rng.below(100) as u8;
            let action = FaultAction::SetWeight { region, addr, weight };
            faults.push(Fault { at_ns: from, action, what: format!("set-weight backend/{addr} {weight}") });
            true
        }
    }
}

/// Splits a minority of one or two control nodes from the rest for `span`, then heals.
fn partition(
    t: &Topology,
    rng: &mut ComponentRng,
    budget: &mut Budget<'_>,
    span: (u64, u64),
    faults: &mut Vec<Fault>,
) -> bool {
    let (from, to) = span;
    let nodes = t.control.as_ref().map_or(0, |c| c.nodes);
    if nodes < 3 {
        return false;
    }
    // A minority side of one or two nodes, the rest together.
    let size = 1 + pick(rng, usize::from((nodes - 1) / 2));
    let mut minority: Vec<u8> = Vec::new();
    while minority.len() < size {
        let n = pick(rng, usize::from(nodes)) as u8 + 1;
        if !minority.contains(&n) {
            minority.push(n);
        }
    }
    if !budget.allows_control(&minority, from, to, true) {
        return false;
    }
    budget.busy.push((Resource::Partition, from, to));
    budget.busy.extend(minority.iter().map(|&n| (Resource::Control(n), from, to)));
    // As the parser numbers sides: the first listed (the minority) 0, the rest 1,
    // slots past the file's nodes u8::MAX.
    let mut side_of = [u8::MAX; CONTROL_NODES_MAX as usize];
    for n in 1..=nodes {
        side_of[usize::from(n) - 1] = u8::from(!minority.contains(&n));
    }
    let mut names: Vec<String> = minority.iter().map(|n| format!("control/{n}")).collect();
    names.sort();
    faults.push(Fault {
        at_ns: from,
        action: FaultAction::Partition(side_of),
        what: format!("partition {}", names.join(",")),
    });
    faults.push(Fault { at_ns: to, action: FaultAction::Heal, what: "heal partition".into() });
    true
}

/// Loses, delays and jitters one backbone link for `span`.
fn link(t: &Topology, rng: &mut ComponentRng, span: (u64, u64), faults: &mut Vec<Fault>) -> bool {
    let (from, to) = span;
    let links: Vec<(usize, usize)> = (0..t.pops.len())
        .flat_map(|p| (0..t.regions.len()).map(move |r| (p, r)))
        .filter(|&(p, r)| t.backbone.has_link(p, r))
        .collect();
    let Some(&(pop, region)) = links.get(pick(rng, links.len())) else { return false };
    let loss = rng.below(30) as f64 / 100.0;
    let delay_ns = rng.below(80) * 1_000_000;
    let link = LinkOverride {
        pop,
        region,
        for_ns: to - from,
        loss: Some(loss),
        delay_ns: Some(delay_ns),
        jitter_ns: Some(rng.below(10) * 1_000_000),
    };
    let what = format!("link pop/{}-region/{}", t.pops[pop].name, t.regions[region].name);
    faults.push(Fault { at_ns: from, action: FaultAction::Link(link), what });
    true
}

/// A duration as a topology file writes it (whole milliseconds, or µs when finer).
fn yaml_ns(ns: u64) -> String {
    if ns.is_multiple_of(1_000_000) { format!("{}ms", ns / 1_000_000) } else { format!("{}us", ns / 1_000) }
}

fn target_name(t: &Topology, target: &Target) -> String {
    match *target {
        Target::Pop(p) => format!("pop/{}", t.pops[p].name),
        Target::Region(r) => format!("region/{}", t.regions[r].name),
        Target::Clb { region, index } => anyedge_topology::clb_name(&t.regions[region].name, index),
        Target::Backend { addr, .. } => format!("backend/{addr}"),
        Target::Control(n) => format!("control/{n}"),
    }
}

/// The schedule as the `faults:` lines of a topology file: paste them into the file and
/// `anyedge sim FILE --seed SEED` runs exactly this seed.
pub fn to_yaml(t: &Topology, faults: &[Fault]) -> String {
    let mut out = String::from("faults:\n");
    for f in faults {
        let at = yaml_ns(f.at_ns);
        let line = match &f.action {
            FaultAction::Down(x) => format!("down: {}", target_name(t, x)),
            FaultAction::Up(x) => format!("up: {}", target_name(t, x)),
            FaultAction::Unbind(x) => format!("unbind: {}", target_name(t, x)),
            FaultAction::Bind(x) => format!("bind: {}", target_name(t, x)),
            FaultAction::Migrate(g) => format!("migrate: client/{}", t.clients[*g].name),
            FaultAction::Heal => "heal: partition".into(),
            FaultAction::Partition(side_of) => {
                let nodes = t.control.as_ref().map_or(0, |c| c.nodes);
                let side = |s: u8| -> String {
                    let names: Vec<String> = (1..=nodes)
                        .filter(|&n| side_of[usize::from(n) - 1] == s)
                        .map(|n| format!("control/{n}"))
                        .collect();
                    format!("[{}]", names.join(", "))
                };
                format!("partition: [{}, {}]", side(0), side(1))
            }
            FaultAction::SetWeight { addr, weight, .. } => {
                format!("set-weight: {{ backend: \"{addr}\", weight: {weight} }}")
            }
            FaultAction::Link(lo) => {
                let mut parts = vec![format!(
                    "for: {}, link: [pop/{}, region/{}]",
                    yaml_ns(lo.for_ns),
                    t.pops[lo.pop].name,
                    t.regions[lo.region].name
                )];
                if let Some(loss) = lo.loss {
                    parts.push(format!("loss: {}%", (loss * 100.0).round()));
                }
                if let Some(d) = lo.delay_ns {
                    parts.push(format!("delay: {}", yaml_ns(d)));
                }
                if let Some(j) = lo.jitter_ns {
                    parts.push(format!("jitter: {}", yaml_ns(j)));
                }
                parts.join(", ")
            }
        };
        out += &format!("  - {{ at: {at}, {line} }}\n");
    }
    out
}
