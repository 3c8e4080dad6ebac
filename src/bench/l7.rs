//! `bench l7`: HTTP/2 through the lab's HTTPS listener and through HAProxy, measured by
//! h2load.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::report;
use anyedge_lab::l7::{L7Figures, L7Run, Load};

pub fn run(file: &Path, port: Option<u16>, load: Load, peer: bool, json: Option<PathBuf>) -> ExitCode {
    let figures = anyedge_lab::l7::run(file, &super::exe(), port, load, peer);
    report("l7", figures, json, l7_text)
}

/// One path's figures as a line.
fn run_text(r: &L7Run) -> String {
    let roles: Vec<String> = r.cpu_by_role_us.iter().map(|(role, us)| format!("{role} {us:.0}")).collect();
    format!(
        "{:.0} requests/s ({}, {} succeeded, {} failed), p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms, CPU {:.0} µs a request ({})",
        r.requests_per_s,
        r.protocol,
        r.succeeded,
        r.failed,
        r.p50_ms,
        r.p99_ms,
        r.p999_ms,
        r.max_ms,
        r.cpu_us_per_request,
        roles.join(", ")
    )
}

/// `bench l7`'s figures as the lines it prints.
fn l7_text(f: &L7Figures) -> String {
    let backends: Vec<String> = f.backends.iter().map(ToString::to_string).collect();
    let mut s = format!(
        "HTTP/2 by {}, from client/{}, {} requests over {} connections, {} streams each, impairments off; backends {} ({}):\n  through the VIP ({}): {}\n  peak memory:",
        f.h2load,
        f.client,
        f.load.requests,
        f.load.connections,
        f.load.streams,
        backends.join(", "),
        f.nginx,
        f.listener,
        run_text(&f.vip),
    );
    for (node, kib) in &f.peak_rss_kib {
        s.push_str(&format!(" {node} {:.1} MiB", *kib as f64 / 1024.0));
    }
    s.push('\n');
    if let Some(p) = &f.peer {
        match &p.through {
            Some(x) => {
                let ratio = if x.requests_per_s > 0.0 { f.vip.requests_per_s / x.requests_per_s } else { 0.0 };
                s.push_str(&format!(
                    "  through {} ({}): {}\n  requests/s VIP / {}: {:.2}x\n  peak memory:",
                    p.name,
                    p.what,
                    run_text(x),
                    p.name,
                    ratio
                ));
                for (process, kib) in &p.peak_rss_kib {
                    s.push_str(&format!(" {process} {:.1} MiB", *kib as f64 / 1024.0));
                }
                s.push('\n');
            }
            None => s.push_str(&format!("  {} not measured: {}\n", p.name, p.what)),
        }
    }
    s
}
