//! `anyedge capture-here`: what `lab capture` runs inside a node's namespace.

use std::process::ExitCode;

/// Captures this namespace's packets for `duration` into `out`.
pub fn here(out: &std::path::Path, duration: &str, snaplen: u32) -> ExitCode {
    let duration = match anyedge_topology::parse_duration_ns(duration) {
        Ok(ns) => std::time::Duration::from_nanos(ns),
        Err(e) => {
            eprintln!("--duration: {e}");
            return ExitCode::from(2);
        }
    };
    match anyedge_lab::capture::capture_here(out, duration, snaplen) {
        Ok(n) => {
            println!("{n} packets captured into {}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("capture: {e}");
            ExitCode::FAILURE
        }
    }
}
