//! `bench bulk`: bulk TCP through the lab forwarder and straight to the same host,
//! measured by iperf3.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::report;

pub fn run(
    file: &Path,
    port: Option<u16>,
    seconds: u64,
    json: Option<PathBuf>,
    peer_hops: Option<usize>,
    realtime: bool,
) -> ExitCode {
    let figures = anyedge_lab::bulk::run(file, &super::exe(), port, seconds, peer_hops, realtime);
    report("bulk", figures, json, bulk_text)
}

/// `bench bulk`'s figures as the lines it prints.
fn bulk_text(f: &anyedge_lab::bulk::BulkFigures) -> String {
    let mut s = format!(
        "bulk TCP, {} from client/{}, {} s each, impairments off, {}:\n  through the VIP ({} → {}): {:.2} Gbit/s, {} retransmits\n  direct ({}): {:.2} Gbit/s, {} retransmits\n  VIP / direct: {:.2}x\n  peak memory:",
        f.iperf3,
        f.client,
        f.seconds,
        if f.realtime { "every process SCHED_FIFO" } else { "the ordinary scheduling class" },
        f.listener,
        f.backend,
        f.vip.gbit_per_s,
        f.vip.retransmits,
        f.direct,
        f.direct_path.gbit_per_s,
        f.direct_path.retransmits,
        f.ratio,
    );
    for (node, kib) in &f.peak_rss_kib {
        s.push_str(&format!(" {node} {:.1} MiB", *kib as f64 / 1024.0));
    }
    s.push('\n');
    if let Some(p) = &f.peer {
        match (&p.through, p.ratio) {
            (Some(x), Some(ratio)) => {
                s.push_str(&format!(
                    "  through {} ({}): {:.2} Gbit/s, {} retransmits\n  {} / direct: {:.2}x (VIP / {}: {:.2}x)\n  peak memory:",
                    p.name,
                    p.what,
                    x.gbit_per_s,
                    x.retransmits,
                    p.name,
                    ratio,
                    p.name,
                    if x.gbit_per_s > 0.0 { f.vip.gbit_per_s / x.gbit_per_s } else { 0.0 },
                ));
                for (process, kib) in &p.peak_rss_kib {
                    s.push_str(&format!(" {process} {:.1} MiB", *kib as f64 / 1024.0));
                }
                s.push('\n');
            }
            _ => s.push_str(&format!("  {} not measured: {}\n", p.name, p.what)),
        }
    }
    s
}
