//! `anyedge ctl`: the control API of a running lab — status and routes, and the writes
//! that return once committed.

use anyhow::anyhow;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyedge_control::{Change, ListenerRoute};
use anyedge_lab::ctl;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum CtlCommand {
    /// Leader, term, commit, members, how long writes take to commit on the leader, the
    /// applied index of every control, POP and CLB node, and how long the last update
    /// each POP and CLB node applied took to reach it.
    Status {
        /// A table, or JSON on stdout.
        #[arg(long, value_parser = ["table", "json"], default_value = "table")]
        output: String,
        /// Same as `--output json` (older spelling).
        #[arg(long, hide = true)]
        json: bool,
    },
    /// The replicated route table.
    Routes {
        /// A table, or JSON on stdout.
        #[arg(long, value_parser = ["table", "json"], default_value = "table")]
        output: String,
        /// Same as `--output json` (older spelling).
        #[arg(long, hide = true)]
        json: bool,
    },
    /// Set a backend's weight (0–100; 0 drains). Returns once committed.
    SetWeight {
        backend: String,
        /// 0–100.
        #[arg(allow_hyphen_values = true)]
        weight: String,
    },
    /// Bind a backend again.
    Bind { backend: String },
    /// Unbind a backend: forwarding to it stops at once.
    Unbind { backend: String },
    /// Add a listener to a VIP.
    AddListener {
        vip: String,
        /// tcp, udp, tcp-ssl, quic, http or https.
        protocol: String,
        port: u16,
        #[arg(long, default_value = "wrr")]
        scheduler: String,
        /// Backend group of the VIP's home region.
        #[arg(long)]
        backends: String,
        /// Session persistence, as in the file (30s–3600s, e.g. 60s or 5m; wrr only).
        #[arg(long)]
        persistence: Option<String>,
    },
    /// Remove a listener from a VIP.
    DelListener { vip: String, protocol: String, port: u16 },
    /// Take a POP out of service on purpose: it withdraws every VIP at once and keeps
    /// serving until no transit selects its route, then until its clients' packets stop
    /// (1 s quiet) or the timeout, and only then stops (client packets dropped). Lab only;
    /// needs no control plane.
    Drain {
        /// The POP, `pop/NAME`.
        pop: String,
        /// Stop after this long even if clients still send to it (e.g. 30s).
        #[arg(long, default_value = "30s")]
        timeout: String,
        /// Write the figures here as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Put a drained POP back: it announces again once healthy (rise samples), and the
    /// command returns when its own transit selects its route.
    Undrain {
        /// The POP, `pop/NAME`.
        pop: String,
    },
}

/// What a route-table change does, for the user who asked for it.
fn describe(change: &anyedge_control::Change) -> String {
    use anyedge_control::Change;
    match change {
        Change::SetWeight { backend, weight } => format!("backend {backend}: weight set to {weight}"),
        Change::Bind { backend } => format!("backend {backend}: bound"),
        Change::Unbind { backend } => format!("backend {backend}: unbound (forwarding to it stopped)"),
        Change::AddListener { vip, listener } => format!(
            "VIP {vip}: {} listener on port {} added ({} over group {}{})",
            listener.protocol,
            listener.port,
            listener.scheduler,
            listener.backends,
            listener.persistence_s.map_or(String::new(), |p| format!(", persistence {p}s"))
        ),
        Change::DelListener { vip, protocol, port } => format!("VIP {vip}: {protocol} listener on port {port} removed"),
        #[allow(unreachable_patterns)]
        other => format!("{other:?}"),
    }
}

/// `ctl routes` as a table: VIPs and their listeners, then groups and their backends.
fn routes_table(r: &serde_json::Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    let _ = writeln!(out, "route table at index {} (from {})", r["index"], s(&r["from"]));
    let t = &r["table"];
    for v in t["vips"].as_array().into_iter().flatten() {
        let pops: Vec<String> = v["publish"].as_array().into_iter().flatten().map(s).collect();
        let _ = writeln!(out, "VIP {} home {} published at {}", s(&v["name"]), s(&v["home"]), pops.join(", "));
        for l in v["listeners"].as_array().into_iter().flatten() {
            let persist = l["persistence_s"].as_u64().map_or(String::new(), |p| format!("  persistence {p}s"));
            let _ = writeln!(
                out,
                "  {:<8} {:>5}  {:<7} -> {}{persist}",
                s(&l["protocol"]),
                l["port"],
                s(&l["scheduler"]),
                s(&l["backends"])
            );
        }
    }
    for g in t["backend_groups"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "group {}/{}", s(&g["region"]), s(&g["name"]));
        for b in g["backends"].as_array().into_iter().flatten() {
            let bound = if b["bound"].as_bool().unwrap_or(true) { "" } else { "  (unbound)" };
            let _ = writeln!(out, "  {:<24} weight {:>3}{bound}", s(&b["addr"]), b["weight"]);
        }
    }
    out
}

/// `IP:PORT` or `backend/IP:PORT`.
fn backend_arg(text: &str) -> anyhow::Result<std::net::SocketAddr> {
    let bare = text.strip_prefix("backend/").unwrap_or(text);
    bare.parse().map_err(|_| anyhow!("backend: `{text}` is not IP:PORT"))
}

/// Runs a `ctl` subcommand against the lab of `file`: a read, or a write that returns
/// once committed.
pub fn run(file: PathBuf, action: CtlCommand) -> ExitCode {
    let change = match action {
        CtlCommand::Status { output, json } => return status(&file, json || output == "json"),
        CtlCommand::Routes { output, json } => return routes(&file, json || output == "json"),
        CtlCommand::Drain { pop, timeout, json } => return drain(&file, &pop, &timeout, json.as_deref()),
        CtlCommand::Undrain { pop } => return undrain(&file, &pop),
        write => change_of(&file, write),
    };
    match change {
        Ok(change) => write(&file, &change),
        Err(e) => {
            eprintln!("ctl: {e}");
            ExitCode::from(2)
        }
    }
}

fn status(file: &Path, json: bool) -> ExitCode {
    match ctl::status(file) {
        Ok(s) if json => {
            println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(s) => {
            let quorum = if s.quorum { String::new() } else { " — no quorum: writes cannot commit".to_string() };
            println!(
                "leader {} (term {}, commit {}), members {}, {} of {} answering{quorum}",
                s.leader.as_deref().unwrap_or("none"),
                s.term,
                s.commit,
                s.members.join(" "),
                s.answering,
                s.members.len()
            );
            if let Some(c) = &s.commit_ms {
                println!("  writes commit in {:.1} ms on the leader (median of its last 64: {:.1} ms)", c.last, c.p50);
            }
            for (node, applied) in &s.applied {
                let mut shown = applied.map_or("not answering".to_string(), |a| format!("applied {a}"));
                if let Some(Some(lag)) = s.lag_ms.get(node) {
                    shown += &format!(", {lag:.1} ms after its control node sent it");
                }
                println!("  {node:<24} {shown}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ctl status: {e}");
            ExitCode::FAILURE
        }
    }
}

fn routes(file: &Path, json: bool) -> ExitCode {
    match ctl::routes(file) {
        Ok(r) if json => {
            println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(r) => {
            print!("{}", routes_table(&r));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ctl routes: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The route-table change a write subcommand asks for, or why it is not one.
fn change_of(file: &Path, action: CtlCommand) -> anyhow::Result<Change> {
    match action {
        CtlCommand::SetWeight { backend, weight } => match weight.parse::<u8>() {
            Ok(w) if w <= 100 => backend_arg(&backend).map(|b| Change::SetWeight { backend: b, weight: w }),
            _ => Err(anyhow!("weight: `{weight}` is not a whole number from 0 to 100 (0 drains)")),
        },
        CtlCommand::Bind { backend } => backend_arg(&backend).map(|b| Change::Bind { backend: b }),
        CtlCommand::Unbind { backend } => backend_arg(&backend).map(|b| Change::Unbind { backend: b }),
        CtlCommand::AddListener { vip, protocol, port, scheduler, backends, persistence } => {
            let vip = vip_name(file, vip)?;
            let persistence_s = match persistence.as_deref().map(anyedge_topology::parse_duration_ns).transpose() {
                Ok(ns) => ns.map(|ns| (ns / 1_000_000_000).min(u64::from(u32::MAX)) as u32),
                Err(e) => return Err(anyhow!("--persistence: {e}")),
            };
            let listener = ListenerRoute { protocol, port, scheduler, backends, persistence_s };
            Ok(Change::AddListener { vip, listener })
        }
        CtlCommand::DelListener { vip, protocol, port } => Ok(Change::DelListener { vip, protocol, port }),
        CtlCommand::Status { .. }
        | CtlCommand::Routes { .. }
        | CtlCommand::Drain { .. }
        | CtlCommand::Undrain { .. } => Err(anyhow!("not a write")),
    }
}

fn drain(file: &Path, pop: &str, timeout: &str, json: Option<&Path>) -> ExitCode {
    let timeout = match anyedge_topology::parse_duration_ns(timeout) {
        Ok(ns) if ns > 0 => std::time::Duration::from_nanos(ns),
        Ok(_) => return usage("--timeout: must be above zero"),
        Err(e) => return usage(&format!("--timeout: {e}")),
    };
    match anyedge_lab::drain::drain(file, pop, timeout) {
        Ok(f) => {
            let last = f.last_client_packet_ms.map_or("no client packet after the command".to_string(), |ms| {
                format!("last client packet at {ms:.0} ms")
            });
            let why =
                if f.timed_out { "the timeout passed with clients still sending" } else { "its clients went quiet" };
            println!(
                "{}: withdrawn; no transit selects it after {:.1} ms ({} client packets served meanwhile); {last}; stopped at {:.0} ms ({why})",
                f.pop, f.withdrawn_everywhere_ms, f.packets_while_withdrawing, f.stopped_ms
            );
            if let Some(path) = json
                && let Err(e) = std::fs::write(path, serde_json::to_string_pretty(&f).unwrap_or_default())
            {
                eprintln!("ctl drain: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ctl drain: {e}");
            ExitCode::FAILURE
        }
    }
}

fn undrain(file: &Path, pop: &str) -> ExitCode {
    match anyedge_lab::drain::undrain(file, pop) {
        Ok(f) => {
            println!("{}: serving; its transit selects it again after {:.0} ms", f.pop, f.announced_ms);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ctl undrain: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(what: &str) -> ExitCode {
    eprintln!("ctl: {what}");
    ExitCode::from(2)
}

/// A VIP by name, or by one of its addresses.
fn vip_name(file: &Path, vip: String) -> anyhow::Result<String> {
    let Ok(ip) = vip.parse::<IpAddr>() else { return Ok(vip) };
    anyedge_topology::load(file)
        .ok()
        .and_then(|t| {
            t.vips
                .iter()
                .find(|v| IpAddr::V4(v.ipv4) == ip || v.ipv6.map(IpAddr::V6) == Some(ip))
                .map(|v| v.name.clone())
        })
        .ok_or_else(|| anyhow!("no VIP has the address {ip}"))
}

fn write(file: &Path, change: &Change) -> ExitCode {
    let what = describe(change);
    match ctl::write(file, change) {
        Ok(index) => {
            println!("{what}: committed at index {index}");
            ExitCode::SUCCESS
        }
        Err(ctl::WriteError::Invalid(e)) => {
            eprintln!("ctl: refused, nothing changed: {e}");
            ExitCode::from(2)
        }
        Err(ctl::WriteError::Unavailable(e)) => {
            eprintln!("ctl: {e}");
            ExitCode::FAILURE
        }
    }
}
