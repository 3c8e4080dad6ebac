//! What a run will cost before it starts: events and memory, from the file alone, so
//! `anyedge sim` can refuse a world this machine cannot hold instead of dying hours in.
//! Figures measured on this machine's class: a TCP (or QUIC) client about 20 KB (its
//! stack), a UDP client about 2 KB, each round trip about 10 events and 16 bytes of
//! samples. Measured with generated worlds (50 POPs, 5 regions, 1,000 groups, 1 s),
//! 2026-12-01: `anyedge generate --clients N --groups 1000 --pops 50 --regions 5
//! --web-every 1 --duration 1s` (every group browses) at 4,000 and 40,000 clients, peak
//! RSS 149 and 864 MiB (`sim --threads 1`; 184 and 1,345 MB before idle connections were
//! parked); `--web-every 0` (UDP only) at 4,000 and 200,000, 65 and 453 MiB.

use anyedge_topology::{Topology, TrafficKind};

/// Bytes a simulated client with a TCP or QUIC stack holds (20.3 KB measured: the
/// every-group-browses worlds above, peak memory's difference over 36,000 clients).
const TCP_CLIENT_BYTES: f64 = 20_500.0;
/// Bytes any other simulated client holds (2.03 KB measured: UDP-only generated worlds,
/// 4,000 and 200,000 clients, peak memory's difference).
const UDP_CLIENT_BYTES: f64 = 2_050.0;
/// Events a request costs, there and back (sends, hops, timers).
const EVENTS_PER_REQUEST: f64 = 10.0;
/// Bytes kept per answered request (the exact-percentile samples).
const SAMPLE_BYTES: f64 = 16.0;
/// What a process takes beyond its clients: the default generated world's 250 POPs, 25
/// regions and 4,000 groups with one client each (`anyedge generate --clients 4000
/// --duration 1s`, `sim --threads 1`, 2026-12-01) peak at 186 MB, 58 MB of it once built
/// (the process, the nodes' cores, probers, groups' POP orders) and the rest what the
/// groups' traffic sets up as it runs (links, connection tables); `topologies/small.yaml`
/// 41 MB. Open MPI adds about 140 MiB to each rank (`mpirun -np 1` against a plain run).
const BASE_BYTES: f64 = 190e6;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cost {
    pub events: f64,
    pub bytes: f64,
}

/// Bytes a client takes in a process that does not run it (`sim --mpi`: another rank's
/// client): its entry in the map from client ids to rows (`edge/rows.rs`, a `u32`); its
/// address is in a run of consecutive addresses, a few per group. (An idle row of ~100
/// bytes until 2026-12-01: four ranks of a four-million-client world each held 300 MB
/// of them.)
const IDLE_CLIENT_BYTES: f64 = 4.0;

/// The estimated events and peak memory of simulating `t`.
pub fn estimate(t: &Topology) -> Cost {
    estimate_of(t, &|_| true)
}

/// The same, with only the client groups `runs` says in full and the others' clients as
/// entries in a row map.
fn estimate_of(t: &Topology, runs: &dyn Fn(usize) -> bool) -> Cost {
    let seconds = t.duration_ns as f64 / 1e9;
    let (mut events, mut bytes) = (0.0, BASE_BYTES);
    for (gi, g) in t.clients.iter().enumerate() {
        let n = f64::from(g.count);
        if !runs(gi) {
            bytes += n * IDLE_CLIENT_BYTES;
            continue;
        }
        let mut stack = false;
        for &k in &g.traffic {
            let rate = match t.traffic[k].kind {
                TrafficKind::Udp { interval_ns, .. } => 1e9 / interval_ns.max(1) as f64,
                TrafficKind::Tcp { requests_per_s, .. } | TrafficKind::Quic { requests_per_s, .. } => {
                    stack = true;
                    requests_per_s
                }
                TrafficKind::SynFlood { rate_per_s } => rate_per_s / 2.0,
            };
            // Anycast and direct: two requests per tick.
            let requests = n * rate * seconds * 2.0;
            events += requests * EVENTS_PER_REQUEST;
            bytes += requests * SAMPLE_BYTES;
        }
        bytes += n * if stack { TCP_CLIENT_BYTES } else { UDP_CLIENT_BYTES };
    }
    Cost { events, bytes }
}

/// Rank `rank`'s estimated events and peak memory when `t` runs over `ranks` processes
/// (`sim --mpi`, partitions shared by `balance` when given): the client groups of the
/// partitions it runs in full, every other client as an address in a run. A world that does not partition runs whole on rank 0 (the others hold
/// nothing but the process).
pub fn estimate_rank(t: &Topology, (ranks, rank): (usize, usize), balance: Option<&[u64]>) -> Cost {
    match crate::world::partition::rank_of_groups(t, ranks, balance) {
        Some(owner) => estimate_of(t, &|g| owner[g] == rank),
        None if rank == 0 => estimate(t),
        None => Cost { events: 0.0, bytes: BASE_BYTES },
    }
}

/// Why rank `rank` of `ranks` cannot run its share of `t`, where `own` is its estimate
/// ([`estimate_rank`]) and `here_bytes` what the ranks on its machine are estimated to
/// need together (its own estimate when alone).
pub fn refuse_rank(t: &Topology, (ranks, rank): (usize, usize), own: Cost, here_bytes: f64) -> Option<String> {
    let gb = |b: f64| b / 1e9;
    if let Some(available) = available_bytes()
        && here_bytes > available
    {
        let clients: u64 = t.clients.iter().map(|g| u64::from(g.count)).sum();
        return Some(format!(
            "rank {rank} of {ranks} would need about {:.1} GB of memory (its share of {clients} clients), and the ranks on its machine about {:.1} GB together; the machine has {:.1} GB available: more ranks or machines, or fewer clients",
            gb(own.bytes),
            gb(here_bytes),
            gb(available)
        ));
    }
    (own.events > EVENTS_MAX).then(|| {
        format!(
            "rank {rank} of {ranks} would take about {:.2e} events (~{:.0} h at a million a second; at most {:.1e}): more ranks, fewer clients or a shorter duration",
            own.events,
            own.events / 1e6 / 3600.0,
            EVENTS_MAX
        )
    })
}

/// Memory this machine can give a run now (MemAvailable), when it can tell.
pub fn available_bytes() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0)
}

/// Events a run may take at most: about a day at this machine's pace (a million a second).
pub const EVENTS_MAX: f64 = 86_400.0 * 1e6;

/// Why `t` is too much to run here, if it is.
pub fn refuse(t: &Topology) -> Option<String> {
    let cost = estimate(t);
    let gb = |b: f64| b / 1e9;
    if let Some(available) = available_bytes()
        && cost.bytes > available
    {
        return Some(format!(
            "the run would need about {:.1} GB of memory ({:.2e} events); this machine has {:.1} GB available: fewer clients, a lower rate or a shorter duration",
            gb(cost.bytes),
            cost.events,
            gb(available)
        ));
    }
    (cost.events > EVENTS_MAX).then(|| {
        format!(
            "the run would take about {:.2e} events (~{:.0} h at a million a second; at most {:.1e}): fewer clients, a lower rate or a shorter duration",
            cost.events,
            cost.events / 1e6 / 3600.0,
            EVENTS_MAX
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_worlds_fit_and_a_huge_one_does_not() {
        let small = anyedge_topology::parse_str("s.yaml", include_str!("../../topologies/small.yaml")).unwrap();
        let global = anyedge_topology::parse_str("g.yaml", include_str!("../../topologies/global.yaml")).unwrap();
        for t in [&small, &global] {
            let c = estimate(t);
            assert!(c.events < 1e9 && c.bytes < 4e9, "{c:?}");
        }
        let mut huge = small.clone();
        huge.duration_ns = 24 * 3600 * 1_000_000_000;
        for g in &mut huge.clients {
            g.count = 20_000;
        }
        let c = estimate(&huge);
        assert!(c.events > EVENTS_MAX && c.bytes > 100e9, "{c:?}");
        assert!(refuse(&huge).is_some_and(|why| why.contains("GB") || why.contains("events")));
    }

    #[test]
    fn a_ranks_estimate_is_its_partitions_clients_in_full_and_the_rest_a_row_map_entry() {
        let spec = anyedge_topology::generate::Spec {
            name: "gen".into(),
            pops: 20,
            regions: 4,
            clients: 40_000,
            groups: 200,
            web_every: 0,
            clb_nodes: 2,
            duration_s: 2,
            seed: 3,
            internet: false,
        };
        let t = anyedge_topology::parse_str("g.yaml", &anyedge_topology::generate::generate(&spec).unwrap()).unwrap();
        let whole = estimate(&t);
        assert_eq!(estimate_rank(&t, (1, 0), None), whole, "one rank runs it all");
        let shares: Vec<Cost> = (0..4).map(|r| estimate_rank(&t, (4, r), None)).collect();
        let events: f64 = shares.iter().map(|c| c.events).sum();
        assert!((events - whole.events).abs() < 1.0, "every request once: {events} vs {}", whole.events);
        // Each rank holds its partitions' clients (a region each here, unequal) and the
        // others' entries in its row map: well under the whole world's clients.
        for c in &shares {
            assert!(
                c.bytes - BASE_BYTES < (whole.bytes - BASE_BYTES) * 0.6 && c.bytes > BASE_BYTES,
                "{c:?} of {whole:?}"
            );
        }
        // A world of one region: rank 0 runs it whole, the others hold nothing.
        let small = anyedge_topology::parse_str("s.yaml", include_str!("../../topologies/small.yaml")).unwrap();
        assert_eq!(estimate_rank(&small, (3, 0), None), estimate(&small));
        assert_eq!(estimate_rank(&small, (3, 2), None).events, 0.0);
        // Ranks that together need more than any machine has are refused, naming the rank.
        let why = refuse_rank(&t, (4, 1), estimate_rank(&t, (4, 1), None), 1e15).expect("refused");
        assert!(why.starts_with("rank 1 of 4 would need about") && why.contains("GB"), "{why}");
    }
}
