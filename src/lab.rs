//! `anyedge lab`: bring a topology up as network namespaces with real packets, and
//! manage it (status, exec, kill, start, metrics, capture, down).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum LabCommand {
    /// Make the namespaces, links and devices, start every node, return when all are ready.
    Up {
        file: PathBuf,
        /// Leave the file's delay, jitter, loss and bandwidth out (to time the forwarder by hand).
        #[arg(long)]
        no_impairments: bool,
        /// Run node processes SCHED_FIFO, as data-plane daemons are run in production.
        #[arg(long)]
        realtime: bool,
        /// Queues each POP reads its TUN device with, each on a thread of its own
        /// (default: one per core).
        #[arg(long, value_name = "N", value_parser = anyedge_lab::tunq::parse_count)]
        tun_queues: Option<usize>,
    },
    /// Remove every namespace, link, device and process of the lab.
    Down { file: PathBuf },
    /// Apply FILE's route table (weights, bindings, listeners) to the running lab: every
    /// node's rendered directory takes the file, every node a SIGHUP; flows stay. Refused
    /// when FILE's nodes, addresses or links differ from the lab's.
    Reload {
        file: PathBuf,
        /// Also rotate the VIPs' server certificates: fresh ones from the lab's CA, which
        /// CLB nodes' HTTPS, TCP SSL and QUIC listeners present to new connections (open
        /// connections keep theirs).
        #[arg(long)]
        new_vip_certificates: bool,
        /// Also rotate the nodes' own certificates (control nodes, CLB nodes, POPs): fresh
        /// ones from the lab's CA, which their gRPC servers offer to new connections (open
        /// streams keep their session).
        #[arg(long)]
        new_node_certificates: bool,
    },
    /// Which nodes run: a lab's (FILE), or a rendered deployment's (--deployment DIR).
    Status {
        #[arg(required_unless_present = "deployment", conflicts_with = "deployment")]
        file: Option<PathBuf>,
        /// The directory `anyedge render` wrote (or a lab's STATE/nodes): every node in it
        /// asked over the control socket in its own state directory, on this host.
        #[arg(long, value_name = "DIR")]
        deployment: Option<PathBuf>,
        /// A table, or JSON on stdout.
        #[arg(long, value_parser = ["table", "json"], default_value = "table")]
        output: String,
        /// Same as `--output json` (older spelling).
        #[arg(long, hide = true)]
        json: bool,
    },
    /// Run a command inside a node's namespace.
    Exec {
        file: PathBuf,
        node: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Stop a node's process (its namespace stays, like a crashed machine).
    Kill { file: PathBuf, node: String },
    /// Start a stopped node again.
    Start { file: PathBuf, node: String },
    /// Freeze every process of a node (its BGP speaker too), like a machine that hangs
    /// without closing anything; `lab thaw` lets it go on.
    Freeze { file: PathBuf, node: String },
    /// Let a frozen node go on.
    Thaw { file: PathBuf, node: String },
    /// A POP's, transit's or router's BGP routes for the VIP prefixes: where each leads,
    /// its AS path and MED, the POP that announced it (where each POP has its own
    /// transit), and which one BGP selected (`*`).
    Bgp {
        file: PathBuf,
        node: String,
        #[arg(long)]
        json: bool,
    },
    /// Each client group's POP as BGP selects it now (the simulator report's `clients`
    /// shape: name, location, count, pop), with its transit and its POP per VIP; over an
    /// AS-level internet, its access router and the AS path, the POP found by following
    /// the speakers' routes hop by hop.
    Catchments {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Every node's Prometheus metrics (each also serves them at http://NODE:6091/metrics
    /// inside the lab).
    Metrics { file: PathBuf, node: Option<String> },
    /// Capture a node's packets (every interface of its namespace) into a pcap file.
    Capture {
        file: PathBuf,
        node: String,
        /// The pcap file to write.
        #[arg(short = 'w', value_name = "FILE")]
        out: PathBuf,
        /// How long to capture, e.g. 5s.
        #[arg(long, default_value = "5s")]
        duration: String,
        /// Keep at most N bytes of each packet (tcpdump's -s; the record says its length).
        #[arg(long, value_name = "N", default_value_t = 65_535, value_parser = clap::value_parser!(u32).range(1..=65_535))]
        snaplen: u32,
    },
}

/// Runs a `lab` subcommand.
pub fn run(action: LabCommand) -> ExitCode {
    use anyedge_lab::{client, setup};
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("anyedge"));
    // Whether the lab is up, as far as `status` found out (other commands leave it true).
    let mut up = true;
    let result: Result<(), client::ClientError> = match action {
        LabCommand::Up { file, no_impairments, realtime, tun_queues } => {
            let options = setup::LabOptions { impairments: !no_impairments, realtime, tun_queues };
            setup::up_with(&file, &exe, options)
                .map(|s| {
                    println!("lab {} is up: {} namespaces, {} node processes", s.lab, s.namespaces.len(), s.pids.len());
                })
                .map_err(Into::into)
        }
        LabCommand::Reload { file, new_vip_certificates, new_node_certificates } => {
            setup::reload(&file, new_vip_certificates, new_node_certificates)
                .map(|nodes| {
                    println!("lab reloaded: SIGHUP to {} nodes ({})", nodes.len(), nodes.join(", "));
                })
                .map_err(Into::into)
        }
        LabCommand::Down { file } => setup::require_root("lab down")
            .and_then(|()| setup::down(&file))
            .map(|()| println!("lab is down"))
            .map_err(Into::into),
        LabCommand::Status { file, deployment, output, json } => match (file, deployment) {
            (_, Some(dir)) => client::lab::deployment_status(&dir),
            (Some(file), None) => client::lab::status(&file),
            (None, None) => Err(client::ClientError::Unsuited("a topology file or --deployment DIR".into())),
        }
        .map(|s| {
            up = s.up;
            if json || output == "json" {
                println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            } else {
                print_status(&s);
            }
        }),
        LabCommand::Exec { file, node, mut command } => {
            // `anyedge` is this very binary (sudo resets PATH, and a checkout's build is
            // not on it anyway).
            if command.first().is_some_and(|c| c == "anyedge") {
                command[0] = exe.display().to_string();
            }
            match root("lab exec").and_then(|()| client::lab::exec(&file, &node, &command)) {
                Ok(code) => return ExitCode::from(code.clamp(0, 255) as u8),
                Err(e) => Err(e),
            }
        }
        LabCommand::Kill { file, node } => root("lab kill")
            .and_then(|()| client::lab::kill(&file, &node))
            .map(|()| println!("{node}: stopped (its namespace stays, like a crashed machine's)")),
        LabCommand::Metrics { file, node } => client::lab::metrics(&file, node.as_deref()).map(|text| print!("{text}")),
        LabCommand::Capture { file, node, out, duration, snaplen } => {
            if let Err(e) = anyedge_topology::parse_duration_ns(&duration) {
                eprintln!("--duration: {e}");
                return ExitCode::from(2);
            }
            root("lab capture").and_then(|()| client::lab::capture(&file, &node, &out, (&duration, snaplen), &exe))
        }
        LabCommand::Freeze { file, node } => root("lab freeze")
            .and_then(|()| client::lab::freeze(&file, &node, true))
            .map(|n| println!("{node}: frozen ({n} processes)")),
        LabCommand::Thaw { file, node } => root("lab thaw")
            .and_then(|()| client::lab::freeze(&file, &node, false))
            .map(|n| println!("{node}: thawed ({n} processes)")),
        LabCommand::Bgp { file, node, json } => root("lab bgp")
            .and_then(|()| client::lab::bgp(&file, &node))
            .map(|routes| print!("{}", bgp_text(&routes, json))),
        LabCommand::Catchments { file, json } => root("lab catchments")
            .and_then(|()| client::lab::catchments(&file))
            .map(|c| print!("{}", catchments_text(&c, json))),
        LabCommand::Start { file, node } => root("lab start")
            .and_then(|()| client::lab::start(&file, &node, &exe))
            .map(|()| println!("{node}: started")),
    };
    match result {
        // `lab status` of a lab that is not up.
        Ok(()) if !up => ExitCode::from(3),
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lab: {e}");
            ExitCode::from(2)
        }
    }
}

/// Whether this process may run a lab command that needs root, as a client's error.
fn root(what: &str) -> Result<(), anyedge_lab::client::ClientError> {
    Ok(anyedge_lab::setup::require_root(what)?)
}

/// `lab catchments`' table (or JSON): one line per client group.
fn catchments_text(c: &serde_json::Value, json: bool) -> String {
    if json {
        return format!("{c}\n");
    }
    // Over an AS-level internet a group hangs off its access router, and each VIP's
    // entry has the AS path its router selected.
    let upstream = |g: &serde_json::Value| g["transit"].as_str().or(g["router"].as_str()).unwrap_or("?").to_string();
    let groups: Vec<&serde_json::Value> = c["clients"].as_array().into_iter().flatten().collect();
    let name = |g: &serde_json::Value| format!("client/{}", g["name"].as_str().unwrap_or("?"));
    // Columns as wide as their longest entry, and two spaces between.
    let wide = groups.iter().map(|g| name(g).chars().count() + 2).max().unwrap_or(0).max(24);
    let up_wide = groups.iter().map(|g| upstream(g).chars().count() + 2).max().unwrap_or(0).max(28);
    let mut out = format!("{:<wide$}{:<up_wide$}{}\n", "client", "upstream", "POP per VIP (BGP's selection)");
    for g in groups {
        let vips: Vec<String> = g["vips"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| {
                let path: Vec<String> = v["as_path"].as_array().into_iter().flatten().map(|a| a.to_string()).collect();
                let path = if path.is_empty() { String::new() } else { format!(" (AS path {})", path.join(" ")) };
                format!("{} → {}{path}", v["vip"].as_str().unwrap_or("?"), v["pop"].as_str().unwrap_or("no route"))
            })
            .collect();
        out += &format!("{:<wide$}{:<up_wide$}{}\n", name(g), upstream(g), vips.join(", "));
    }
    out
}

/// `lab bgp`'s table (or JSON): one line per route, the selected one marked `*`.
fn bgp_text(routes: &[anyedge_lab::bgp::Route], json: bool) -> String {
    if json {
        return format!("{}\n", serde_json::json!({ "routes": routes }));
    }
    let mut out =
        format!("{:<2}{:<22}{:<18}{:<18}{:<26}{:>10}  {}\n", "", "prefix", "from", "via", "as path", "med", "pop");
    for r in routes {
        let path: Vec<String> = r.as_path.iter().map(u32::to_string).collect();
        out.push_str(&format!(
            "{:<2}{:<22}{:<18}{:<18}{:<26}{:>10}  {}\n",
            if r.best { "*" } else { "" },
            r.prefix,
            r.from,
            r.via,
            path.join(" "),
            r.med.map_or("-".into(), |m| m.to_string()),
            r.pop.as_deref().unwrap_or("?")
        ));
    }
    out
}

/// `lab status`'s table: every node's state, then what running nodes report.
fn print_status(s: &anyedge_lab::client::lab::Status) {
    println!("lab {}: {}", s.lab, if s.up { "up" } else { "down" });
    for (node, state) in &s.nodes {
        println!("  {node:<32} {state}");
    }
    for (node, reasons) in &s.drops {
        let reasons: Vec<String> = reasons.iter().map(|(r, n)| format!("{r} {n}")).collect();
        println!("  {node:<32} drops: {}", reasons.join(", "));
    }
    for (node, c) in &s.sync {
        let n = |k: &str| c.get(k).copied().unwrap_or(0);
        println!(
            "  {node:<32} sync: sent {} msgs / {} B, received {} msgs / {} B, {} flows adopted",
            n("messages_sent"),
            n("bytes_sent"),
            n("messages_received"),
            n("bytes_received"),
            n("flows_adopted")
        );
    }
    for (node, q) in s.quic.iter().filter(|(_, q)| q.values().any(|&v| v > 0)) {
        let n = |k: &str| q.get(k).copied().unwrap_or(0);
        println!("  {node:<32} quic: {} connections, {} handshakes", n("connections"), n("handshakes"));
    }
    for (node, backends) in &s.health {
        for (backend, state) in backends.iter().filter(|(_, s)| *s != "healthy") {
            println!("  {node:<32} sees backend {backend} {state}");
        }
    }
    for (node, why) in &s.denied {
        println!("  {node:<32} last dropped: {why}");
    }
    for (node, state) in s.admin.iter().filter(|(_, a)| *a != "serving") {
        println!("  {node:<32} {state} (ctl drain; ctl undrain serves again)");
    }
    for (node, t) in &s.tun {
        let reads: Vec<String> = t.packets_read.iter().map(u64::to_string).collect();
        println!("  {node:<32} TUN: {} queue(s), packets read {}", t.queues, reads.join(" / "));
    }
    for (node, speaker) in &s.bgp {
        let sessions: Vec<String> = speaker["sessions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| {
                format!(
                    "{} {} since {} ({} in, {} out)",
                    x["name"].as_str().unwrap_or("?"),
                    x["bgp"].as_str().unwrap_or("?"),
                    x["since"].as_str().unwrap_or("?"),
                    x["imported"].as_u64().unwrap_or(0),
                    x["exported"].as_u64().unwrap_or(0)
                )
            })
            .collect();
        let restarts = speaker["speaker_restarts"].as_u64().unwrap_or(0);
        println!("  {node:<32} bgp: {} (speaker restarts {restarts})", sessions.join(", "));
    }
}
