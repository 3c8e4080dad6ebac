//! `bench maglev`: Maglev table balance, disruption when one backend goes, build time.

use anyhow::anyhow;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyedge_region::scheduler::{Candidate, Maglev};
use serde::Serialize;

use super::{report, round4};

/// What `bench maglev` measures for removing one of N backends.
#[derive(Debug, Serialize)]
pub struct MaglevFigures {
    pub backends: usize,
    pub table: usize,
    /// The fullest backend's slots over the mean: 1.0 is perfect balance.
    pub max_over_avg: f64,
    /// Share of table slots whose backend changed when one backend was removed.
    pub disruption_pct: f64,
    /// The least any scheme can move: the removed backend's share.
    pub ideal_disruption_pct: f64,
    /// Median wall time of one table build.
    pub build_ms: f64,
}

pub fn maglev(backends: usize, table: usize) -> anyhow::Result<MaglevFigures> {
    if backends < 2 {
        return Err(anyhow!("--backends must be at least 2 (one is removed)"));
    }
    if table < backends || !(2..).take_while(|d| d * d <= table).all(|d| !table.is_multiple_of(d)) {
        return Err(anyhow!("--table {table} must be a prime no smaller than --backends"));
    }
    let names: Vec<String> = (0..backends).map(|i| format!("198.19.{}.{}:8080", i / 250, i % 250 + 1)).collect();
    let all: Vec<Candidate> = names.iter().map(|n| Candidate { name: n, weight: 10 }).collect();
    let mut build_ns: Vec<u128> = (0..7)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(Maglev::build(std::hint::black_box(&all), table));
            start.elapsed().as_nanos()
        })
        .collect();
    build_ns.sort_unstable();
    let before = Maglev::build(&all, table);
    let counts = before.slot_counts(backends);
    let max = counts.iter().copied().max().unwrap_or(0) as f64;
    let avg = table as f64 / backends as f64;
    let removed = backends / 2;
    let mut less = all.clone();
    less[removed].weight = 0;
    let after = Maglev::build(&less, table);
    let moved = (0..table as u32).filter(|&h| before.lookup(h) != after.lookup(h)).count();
    Ok(MaglevFigures {
        backends,
        table,
        max_over_avg: round4(max / avg),
        disruption_pct: round4(100.0 * moved as f64 / table as f64),
        ideal_disruption_pct: round4(100.0 * counts[removed] as f64 / table as f64),
        build_ms: round4(build_ns[build_ns.len() / 2] as f64 / 1e6),
    })
}

pub fn run(backends: usize, table: usize, json: Option<PathBuf>) -> ExitCode {
    report("maglev", maglev(backends, table), json, |f| {
        format!(
            "maglev N={} M={}: max/avg {:.4}, disruption {:.3}% (ideal {:.3}%), build {:.3} ms",
            f.backends, f.table, f.max_over_avg, f.disruption_pct, f.ideal_disruption_pct, f.build_ms
        )
    })
}
