//! `bench failover`: a POP dies under load, again and again; BGP's answer timed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyedge_lab::failover::{Fault, Update};

use super::report;

pub fn run(file: &Path, pop: Option<&str>, kills: usize, fault: &str, json: Option<PathBuf>) -> ExitCode {
    let fault = if fault == "kill" { Fault::Kill } else { Fault::Freeze };
    let figures = anyedge_lab::failover::failover(file, &super::exe(), pop, kills, fault);
    report("failover", figures, json, |f| {
        let ways = |u: Update| f.crossings.iter().filter(|c| c.hops > 0 && c.update == u).count();
        let crossed = match f.over_as_internet {
            true => format!(
                "; past the upstream router, each BGP speaker passed the withdrawal on in p50 {:.2} ms \
                 (max {:.2}) over {} ways to groups, the announcement in p50 {:.2} ms (max {:.2}) over {} \
                 (the file's failover.route_hop: {:.2} ms)",
                f.hop_ms_p50,
                f.hop_ms_max,
                ways(Update::Withdrawal),
                f.announce_hop_ms_p50,
                f.announce_hop_ms_max,
                ways(Update::Announcement),
                f.route_hop_ms
            ),
            false => String::new(),
        };
        format!(
            "failover: {} {} {} times under load from {}: detected p50 {:.0} ms (max {:.0}), withdrawn \
             everywhere p50 {:.0} ms (max {:.0}; {:.1} ms after detection), {} p50 \
             {:.0} ms (max {:.0}), replies resumed p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms over {} flows{}",
            f.pop,
            if f.fault == Fault::Kill { "killed" } else { "frozen" },
            f.kills,
            f.groups.join(", "),
            f.detect_ms_p50,
            f.detect_ms_max,
            f.withdrawn_ms_p50,
            f.withdrawn_ms_max,
            f.converge_ms_p50,
            if f.over_as_internet { "no group reaches it" } else { "gone from every transit" },
            f.propagated_ms_p50,
            f.propagated_ms_max,
            f.resume_ms_p50,
            f.resume_ms_p90,
            f.resume_ms_max,
            f.resume_ms.len(),
            crossed
        )
    })
}
