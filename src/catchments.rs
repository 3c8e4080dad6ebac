//! `anyedge catchments`: where BGP sends each client group, without a simulation. Per
//! group and VIP: the POP, the AS path, the round trip of the group↔POP leg alone, and
//! its inflation over the nearest announcing POP (ms and km), with POPs withdrawn on
//! request (`--down`) and the file's values changed (`--set`), as `sim` and `sweep` take
//! them.

use std::path::PathBuf;
use std::process::ExitCode;

use anyedge_topology::catchments::{self, Catchments};
use anyedge_topology::{Override, Topology};
use anyhow::{Context, anyhow};
use serde_json::json;

pub struct Args {
    pub file: PathBuf,
    pub sets: Vec<String>,
    pub down: Vec<String>,
    pub json: bool,
}

pub fn run(args: Args) -> ExitCode {
    match catchments_of(&args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::from(2)
        }
    }
}

fn catchments_of(args: &Args) -> anyhow::Result<String> {
    let file = args.file.display().to_string();
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("{file}: cannot read"))?;
    let sets: Vec<Override> = args
        .sets
        .iter()
        .map(|s| s.split_once('=').map(|(p, v)| Override { path: p.to_string(), value: v.to_string() }))
        .collect::<Option<_>>()
        .ok_or_else(|| anyhow!("--set: expected PATH=VALUE"))?;
    let t = anyedge_topology::parse_with(&file, &text, &sets).map_err(|e| anyhow!("{e}"))?;
    let mut down = Vec::new();
    for name in &args.down {
        let p = name.strip_prefix("pop/").unwrap_or(name);
        down.push(t.pop_index(p).ok_or_else(|| anyhow!("--down: unknown POP `{name}`"))?);
    }
    let up = |p: usize| !down.contains(&p);
    let mut per_vip = Vec::new();
    let attacher = anyedge_topology::bgp::Attacher::new(&t);
    for v in 0..t.vips.len() {
        let c =
            catchments::of_with(&t, &attacher, v, &up).map_err(|e| anyhow!("{file}: VIP {}: {e}", t.vips[v].name))?;
        per_vip.push(c);
    }
    Ok(if args.json { json_of(&t, &per_vip) } else { table(&t, &per_vip) })
}

/// The groups that talk to VIP `v`.
fn talkers(t: &Topology, v: usize) -> impl Iterator<Item = usize> + '_ {
    (0..t.clients.len()).filter(move |&g| t.clients[g].traffic.iter().any(|&k| t.traffic[k].vip == v))
}

fn table(t: &Topology, per_vip: &[Catchments]) -> String {
    let mut out = String::new();
    let model = if t.internet.has_ases() {
        let (routers, sessions) = catchments::Internetwork::build(t).size();
        let whose = match t.internet.routing {
            anyedge_topology::Routing::BgpDrawn => format!("the default internet drawn from seed {}", t.seed),
            _ => "the file's internet".to_string(),
        };
        format!(
            "BGP over {whose}: {} networks, {} IXPs, {routers} routers, {sessions} sessions",
            t.internet.ases.len(),
            t.internet.ixps.len()
        )
    } else {
        "no AS-level internet (routing: nearest, or catchment lists): each POP its own transit, a group enters its nearest POP".to_string()
    };
    out.push_str(&format!("{}: {model}\n", t.name));
    // Columns as wide as the longest name in them.
    let gw = t.clients.iter().map(|g| g.name.chars().count()).max().unwrap_or(0).max(16);
    let pw = t.pops.iter().map(|p| p.name.chars().count()).max().unwrap_or(0).max(12);
    for (v, c) in per_vip.iter().enumerate() {
        out.push_str(&format!(
            "\nVIP {}\n{:<gw$} {:<pw$} {:>9} {:<pw$} {:>9} {:>10} {:>8}  AS path\n",
            t.vips[v].name, "group", "POP", "rtt ms", "nearest", "rtt ms", "infl. ms", "infl. km"
        ));
        for g in talkers(t, v) {
            let x = &c.groups[g];
            let name = |p: Option<usize>| p.map_or("-".to_string(), |p| t.pops[p].name.clone());
            let line = match x.pop {
                Some(_) => format!(
                    "{:<gw$} {:<pw$} {:>9.1} {:<pw$} {:>9.1} {:>10.1} {:>8.0}  {}\n",
                    t.clients[g].name,
                    name(x.pop),
                    x.rtt_ns as f64 / 1e6,
                    name(x.nearest),
                    x.nearest_rtt_ns as f64 / 1e6,
                    x.inflation_ms(),
                    x.extra_km,
                    x.path_names.join(" ")
                ),
                None => format!("{:<gw$} {:<pw$} (no route)\n", t.clients[g].name, "-"),
            };
            out.push_str(&line);
        }
    }
    out
}

fn json_of(t: &Topology, per_vip: &[Catchments]) -> String {
    let vips: Vec<_> = per_vip
        .iter()
        .enumerate()
        .map(|(v, c)| {
            let groups: Vec<_> = talkers(t, v)
                .map(|g| {
                    let x = &c.groups[g];
                    json!({
                        "group": t.clients[g].name,
                        "pop": x.pop.map(|p| t.pops[p].name.clone()),
                        "as_path": x.path,
                        "as_path_names": x.path_names,
                        "rtt_ms": x.rtt_ns as f64 / 1e6,
                        "nearest_pop": x.nearest.map(|p| t.pops[p].name.clone()),
                        "nearest_rtt_ms": x.nearest_rtt_ns as f64 / 1e6,
                        "inflation_ms": x.pop.map(|_| x.inflation_ms()),
                        "inflation_km": x.pop.map(|_| x.extra_km),
                    })
                })
                .collect();
            json!({ "vip": t.vips[v].name, "groups": groups })
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&json!({ "topology": t.name, "vips": vips })).unwrap_or_default();
    text.push('\n');
    text
}
