//! `anyedge probe`: its arguments, their checks, and the table or JSON report of a run.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::{check_writable, write_file};

#[derive(clap::Args)]
pub struct Args {
    /// VIP:PORT to send to.
    #[arg(long)]
    target: std::net::SocketAddr,
    #[arg(long, value_parser = anyedge_lab::probe::Protocol::NAMES, default_value = "udp")]
    protocol: String,
    /// tcp-ssl, https, quic: the CA to trust (default: $ANYEDGE_LAB_PKI/ca.pem, which
    /// `lab exec` sets).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// To an `mtls: true` listener: the client certificate to present
    /// (default: $ANYEDGE_LAB_PKI/client.pem) …
    #[arg(long)]
    cert: Option<PathBuf>,
    /// … and its key (default: $ANYEDGE_LAB_PKI/client.key).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Requests per second, all flows together.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// How long to send, e.g. 5s.
    #[arg(long, default_value = "5s")]
    duration: String,
    /// Flows (source ports; TCP: connections).
    #[arg(long, default_value_t = 1)]
    flows: usize,
    /// UDP: keep this many requests in flight per flow instead of pacing at --rate.
    #[arg(long)]
    window: Option<usize>,
    /// UDP: bytes per request (20 to 65000; the backend echoes them back), e.g. 1460 for
    /// full-size packets whose backbone envelopes the links must fragment.
    #[arg(long, default_value_t = anyedge_lab::probe::REQUEST_LEN, allow_hyphen_values = true)]
    size: usize,
    /// QUIC: move every flow's connection to a new local port this far into the run
    /// (connection migration), e.g. 2s.
    #[arg(long)]
    migrate_at: Option<String>,
    /// QUIC: the protocol to offer in ALPN. h3 (what browsers and curl offer) speaks
    /// HTTP/3, a POST a request; anything else sends the probe's own requests on one
    /// stream, for a listener that relays streams as bytes (`alpn: [...]` without h3).
    #[arg(long, default_value = "h3")]
    alpn: String,
    /// Write the JSON report to this file (`--report` is an older name for it).
    #[arg(long = "json", alias = "report", value_name = "FILE")]
    report: Option<PathBuf>,
    /// What to print on stdout: a table, or the JSON report.
    #[arg(long, value_parser = ["table", "json"], default_value = "table")]
    output: String,
    /// Run SCHED_FIFO, so the probe's own scheduling waits stay out of its figures.
    #[arg(long)]
    realtime: bool,
    /// Probe from outside a lab's client namespace (a real service, say).
    #[arg(long)]
    outside_lab: bool,
}

pub fn run(args: Args) -> ExitCode {
    let (report, output) = (args.report.clone(), args.output.clone());
    let config = match config(args) {
        Ok(config) => config,
        Err(code) => return code,
    };
    match anyedge_lab::probe::run(&config) {
        Ok(r) => {
            let text = serde_json::to_string_pretty(&r).unwrap_or_default() + "\n";
            if let Some(path) = report
                && let Err(code) = write_file(&path, &text)
            {
                return code;
            }
            if output == "json" {
                print!("{text}");
            } else {
                print!("{}", r.table(config.target, config.protocol));
            }
            if r.received > 0 {
                return ExitCode::SUCCESS;
            }
            let why = match &r.connect_error {
                Some(e) => format!(" ({e})"),
                None => " — is there a listener on that port?".to_string(),
            };
            eprintln!("probe: no answer from {}: {} requests sent, none answered{why}", config.target, r.sent);
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("probe: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The run the arguments ask for, or the exit code of the first thing wrong with them
/// (said on stderr).
fn config(args: Args) -> Result<anyedge_lab::probe::ProbeConfig, ExitCode> {
    use anyedge_lab::probe::{Protocol, REQUEST_LEN, REQUEST_MAX};
    let usage = |msg: String| {
        eprintln!("{msg}");
        ExitCode::from(2)
    };
    let Args {
        target,
        protocol,
        ca,
        cert,
        key,
        rate,
        duration,
        flows,
        window,
        size,
        migrate_at,
        report,
        realtime,
        alpn,
        ..
    } = args;
    let duration = anyedge_topology::parse_duration_ns(&duration).map_err(|e| usage(format!("--duration: {e}")))?;
    let migrate_at = migrate_at
        .as_deref()
        .map(anyedge_topology::parse_duration_ns)
        .transpose()
        .map_err(|e| usage(format!("--migrate-at: {e}")))?;
    if let Some(path) = &report {
        check_writable("--report", path)?;
    }
    // A lab's client namespace has its link to the lab's internet, `inet`.
    if !args.outside_lab && !std::path::Path::new("/sys/class/net/inet").exists() {
        eprintln!(
            "probe: not inside a lab's client namespace (no `inet` link here): run it as `anyedge lab exec FILE client/NAME -- anyedge probe …`, or pass --outside-lab"
        );
        return Err(ExitCode::FAILURE);
    }
    // clap checked the name against the same list.
    let protocol = Protocol::from_name(&protocol).unwrap_or(Protocol::Udp);
    if migrate_at.is_some() && protocol != Protocol::Quic {
        return Err(usage("--migrate-at: only QUIC connections migrate (--protocol quic)".into()));
    }
    if !(1..=255).contains(&alpn.len()) || !alpn.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(usage(format!("--alpn `{alpn}`: 1 to 255 printable ASCII characters, no spaces")));
    }
    if alpn != "h3" && protocol != Protocol::Quic {
        return Err(usage("--alpn: only QUIC offers a protocol here (--protocol quic)".into()));
    }
    if !(REQUEST_LEN..=REQUEST_MAX).contains(&size) {
        return Err(usage(format!("--size {size}: a request is {REQUEST_LEN} to {REQUEST_MAX} bytes")));
    }
    if size != REQUEST_LEN && protocol != Protocol::Udp {
        return Err(usage("--size: only UDP requests are sized (--protocol udp)".into()));
    }
    // Inside a lab (`lab exec`), its CA and client certificate unless told otherwise.
    let pki = std::env::var_os("ANYEDGE_LAB_PKI").map(PathBuf::from);
    let from_lab = |name: &str| pki.as_ref().map(|d| d.join(name)).filter(|p| p.exists());
    let tls = anyedge_lab::probe::TlsFiles {
        ca: ca.or_else(|| from_lab("ca.pem")),
        cert: cert.or_else(|| from_lab("client.pem")),
        key: key.or_else(|| from_lab("client.key")),
    };
    Ok(anyedge_lab::probe::ProbeConfig {
        target,
        protocol,
        rate_per_s: rate,
        duration: std::time::Duration::from_nanos(duration),
        flows,
        window,
        size,
        realtime,
        tls,
        migrate_at: migrate_at.map(std::time::Duration::from_nanos),
        alpn: alpn.into_bytes(),
    })
}
