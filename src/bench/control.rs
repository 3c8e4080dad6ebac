//! `bench control`: the control plane's leader killed again and again; the first
//! committed write after each timed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::report;

pub fn run(file: &Path, rounds: usize, json: Option<PathBuf>) -> ExitCode {
    let figures = anyedge_lab::bench::control(file, &super::exe(), rounds);
    report("control", figures, json, |f| {
        format!(
            "control: leader killed → first committed write: p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms over {} rounds, \
         {} without a commit (election timeouts {}–{} ms); write → commit with a leader: median {:.0} ms",
            f.failover_ms_median,
            f.failover_ms_p90,
            f.failover_ms_max,
            f.rounds,
            f.failed_rounds,
            f.election_timeout_ms[0],
            f.election_timeout_ms[1],
            f.commit_ms_median
        )
    })
}
