//! `bench lab`: the lab forwarder's throughput and added latency on real packets, and
//! what the rounds cost the host.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{quantiles_us, report};

pub fn run(file: &Path, options: anyedge_lab::bench::LabBench<'_>, json: Option<PathBuf>) -> ExitCode {
    let figures = anyedge_lab::bench::run(file, &super::exe(), options);
    report("lab", figures, json, lab_text)
}

/// `bench lab`'s figures as the lines it prints.
fn lab_text(f: &anyedge_lab::bench::LabFigures) -> String {
    let mut line = format!(
        "lab{}, POP TUN queues {}: {:.0} round trips/s through the VIP (two hops: POP, CLB), {:.0} direct ({:.2}x); added latency at 10k/s p50 {} µs, p99 {} µs, p99.9 {} µs (round trips p50/p99/p99.9: VIP {}, direct {}; an added figure below zero is noise in that quantile)",
        if f.realtime { " (SCHED_FIFO)" } else { "" },
        f.tun_queues,
        f.pps,
        f.direct_pps,
        f.pps / f.direct_pps.max(1.0),
        f.added_p50_us,
        f.added_p99_us,
        f.added_p999_us,
        quantiles_us(f.vip_rtt_us),
        quantiles_us(f.direct_rtt_us)
    );
    if let Some(p) = &f.peer {
        if p.measured {
            line += &format!(
                "\n{}: {:.0} round trips/s through {} ({:.2}x direct); added latency at 10k/s p50 {} µs, p99 {} µs, p99.9 {} µs (round trips {}; {})",
                p.name,
                p.pps,
                if p.hops == 1 { "one hop".to_string() } else { format!("{} hops", p.hops) },
                p.pps / f.direct_pps.max(1.0),
                p.added_p50_us,
                p.added_p99_us,
                p.added_p999_us,
                quantiles_us(p.rtt_us),
                p.what
            );
        } else {
            line += &format!("\n{}: {}", p.name, p.what);
        }
    }
    line += &cpu_text(f);
    if !f.peak_rss_kib.is_empty() {
        line += "\npeak memory:";
        for (process, kib) in &f.peak_rss_kib {
            line += &format!(" {process} {:.1} MiB", *kib as f64 / 1024.0);
        }
    }
    if !f.breakdown.is_empty() {
        line += "\ninside each node of the VIP path at 10k/s (wake-up to send; p50 / p99 / p99.9 / max, µs):";
        for h in &f.breakdown {
            let us = |ns: u64| ns as f64 / 1000.0;
            line += &format!(
                "\n  {:<8} {:<8} {:>8.1} {:>8.1} {:>8.1} {:>9.1}  {} packets, {}",
                h.hop,
                h.way,
                us(h.p50_ns),
                us(h.p99_ns),
                us(h.p999_ns),
                us(h.max_ns),
                h.packets,
                h.node
            );
        }
    }
    line
}

/// What the paced rounds cost the host, and, when the VIP rounds kept a core past the
/// kernel's real-time budget with the nodes SCHED_FIFO, what that does to the tail.
fn cpu_text(f: &anyedge_lab::bench::LabFigures) -> String {
    let path = |name: &str, c: &anyedge_lab::bench::PathCpu| {
        let parts: Vec<String> = c.by_process_us.iter().map(|(k, us)| format!("{k} {us:.0}")).collect();
        format!("{name} {:.0} ({})", c.per_round_trip_us, parts.join(", "))
    };
    let waits = |c: &anyedge_lab::bench::PathCpu| {
        if c.waited_us.is_empty() {
            return "not measured (this kernel keeps no schedstat)".to_string();
        }
        c.waited_us.iter().map(|(k, us)| format!("{k} {us:.1}")).collect::<Vec<_>>().join(", ")
    };
    let mut paths = vec![path("VIP", &f.cpu.vip), path("direct", &f.cpu.direct)];
    let mut busy = vec![
        format!(
            "VIP {:.0} % (busiest core-second {:.0} %)",
            f.cpu.vip.host_busy_pct, f.cpu.vip.busiest_core_second_pct
        ),
        format!("direct {:.0} % ({:.0} %)", f.cpu.direct.host_busy_pct, f.cpu.direct.busiest_core_second_pct),
    ];
    if let (Some(c), Some(p)) = (&f.cpu.peer, &f.peer) {
        paths.push(path(&p.name, c));
        busy.push(format!("{} {:.0} % ({:.0} %)", p.name, c.host_busy_pct, c.busiest_core_second_pct));
    }
    let mut text = format!(
        "\nhost CPU per round trip at 10k/s, µs (by process; the kernel's forwarding counts to the sender): {}\nhost busy at 10k/s: {}\nnodes waiting for a CPU per round trip at 10k/s, µs: VIP {}; direct {}",
        paths.join("; "),
        busy.join(", "),
        waits(&f.cpu.vip),
        waits(&f.cpu.direct)
    );
    if let Some(note) = rt_budget_note(f) {
        text += "\n";
        text += &note;
    }
    text
}

/// Within this many points of the real-time budget, a core's busy second counts as at it
/// (the samples are 100 ms apart and not aligned with the kernel's period).
const RT_BUDGET_MARGIN_PCT: f64 = 5.0;

/// The warning for VIP rounds that ran a core into the kernel's real-time budget.
fn rt_budget_note(f: &anyedge_lab::bench::LabFigures) -> Option<String> {
    let (Some(runtime), Some(period)) = (f.cpu.rt_runtime_us, f.cpu.rt_period_us) else { return None };
    if !f.realtime || runtime < 0 || runtime as u64 >= period {
        return None;
    }
    let budget_pct = 100.0 * runtime as f64 / period as f64;
    let busiest = f.cpu.vip.busiest_core_second_pct;
    (busiest >= budget_pct - RT_BUDGET_MARGIN_PCT).then(|| {
        format!(
            "note: in the VIP rounds a core was {busiest:.0} % busy for a second. The kernel stops SCHED_FIFO tasks on a core once they have run {runtime} of every {period} µs there (kernel.sched_rt_runtime_us), for the rest of the period (up to {} ms), even with the core idle: a p99 of milliseconds here is that stop, not a queue in the forwarder. To see the forwarder's own tail, lift the limit for the run (sysctl -w kernel.sched_rt_runtime_us=-1, and set it back to {runtime} after) or measure on a host with more cores.",
            (period - runtime as u64) / 1000
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab_figures(realtime: bool, busiest: f64, rt_runtime_us: i64) -> anyedge_lab::bench::LabFigures {
        use anyedge_lab::bench::{CpuFigures, LabFigures, PathCpu};
        let path = |us: f64, busiest: f64| PathCpu {
            per_round_trip_us: us,
            by_process_us: [("pop".to_string(), us / 2.0), ("probe".to_string(), us / 2.0)].into(),
            waited_us: [("pop".to_string(), us / 100.0)].into(),
            host_busy_pct: busiest - 5.0,
            busiest_core_second_pct: busiest,
        };
        LabFigures {
            pps: 30_000.0,
            direct_pps: 60_000.0,
            added_p50_us: 200,
            added_p99_us: 12_000,
            added_p999_us: 20_000,
            vip_rtt_us: [250, 12_100, 20_500],
            direct_rtt_us: [50, 100, 500],
            realtime,
            tun_queues: 2,
            peer: None,
            breakdown: Vec::new(),
            peak_rss_kib: [("clb/frankfurt/1".to_string(), 41_000), ("pop/paris".to_string(), 45_056)].into(),
            cpu: CpuFigures {
                vip: path(190.0, busiest),
                direct: path(80.0, 50.0),
                peer: None,
                rt_runtime_us: Some(rt_runtime_us),
                rt_period_us: Some(1_000_000),
            },
        }
    }

    #[test]
    fn bench_lab_shows_the_cpu_per_round_trip_and_warns_when_the_vip_rounds_reach_the_real_time_budget() {
        let text = lab_text(&lab_figures(true, 97.0, 950_000));
        assert!(text.contains("host CPU per round trip at 10k/s, µs"), "{text}");
        assert!(text.contains("VIP 190 (pop 95, probe 95); direct 80 (pop 40, probe 40)"), "{text}");
        assert!(text.contains("host busy at 10k/s: VIP 92 % (busiest core-second 97 %), direct 45 % (50 %)"), "{text}");
        assert!(
            text.contains("nodes waiting for a CPU per round trip at 10k/s, µs: VIP pop 1.9; direct pop 0.8"),
            "{text}"
        );
        assert!(text.contains("run 950000 of every 1000000 µs") && text.contains("up to 50 ms"), "{text}");
        assert!(text.contains("sysctl -w kernel.sched_rt_runtime_us=-1"), "{text}");
        assert!(text.contains("peak memory: clb/frankfurt/1 40.0 MiB pop/paris 44.0 MiB"), "{text}");
        // Below the budget, without SCHED_FIFO, or with the limit lifted: no warning.
        for quiet in [lab_figures(true, 80.0, 950_000), lab_figures(false, 97.0, 950_000), lab_figures(true, 100.0, -1)]
        {
            let text = lab_text(&quiet);
            assert!(text.contains("host busy at 10k/s") && !text.contains("note:"), "{text}");
        }
    }
}
