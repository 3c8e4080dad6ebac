//! The report a run ends with, built from the world's counters and histograms.
use crate::Report;
use crate::report::BackendReport;
use crate::report::CatchmentChange;
use crate::report::ClbNodeReport;
use crate::report::ClientReport;
use crate::report::ConnTableReport;
use crate::report::FaultReport;
use crate::report::HealthReport;
use crate::report::ModelReport;
use crate::report::ModelsReport;
use crate::report::PathReport;
use crate::report::PopReport;
use crate::report::Recovery;
use crate::report::RegionReport;
use crate::report::RouteReport;
use crate::report::RuleReport;
use crate::report::SecurityGroupReport;
use crate::report::SyncReport;
use crate::report::TrafficReport;
use crate::report::ms3;
use crate::world::World;
use crate::world::client::Client;
use crate::world::events::Path;
use crate::world::fault_state::FaultTracker;
use crate::world::flows::Flow;
use crate::world::forwarding::ClbNode;
use crate::world::ids::PopId;
use crate::world::samples;
use crate::world::servers::ADDRS_SEEN_MAX;
use crate::world::servers::BackendRecord;
use anyedge_topology::InternetEnd;
use anyedge_topology::TrafficKind;
use anyedge_topology::catchments::{Catchment, Catchments};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;

pub(super) fn path_report<'a>(
    flows: impl Iterator<Item = &'a Flow>,
    hist: &mut Histogram<u64>,
    samples: &samples::Samples,
) -> PathReport {
    let (mut sent, mut received, mut jsum, mut jn) = (0u64, 0u64, 0u128, 0u64);
    for f in flows {
        sent += f.sent;
        received += f.received;
        jsum += u128::from(f.jitter_sum_ns);
        jn += f.jitter_n;
    }
    let loss_pct = if sent == 0 { 0.0 } else { ms3(100.0 * sent.saturating_sub(received) as f64 / sent as f64) };
    let rtt_ms = samples.percentiles();
    let jitter_ms = (jn > 0).then(|| ms3(jsum as f64 / jn as f64 / 1e6));
    samples.histogram(hist);
    // The distribution, for CDFs: hdrhistogram's logarithmic buckets (upper bound, count),
    // those that hold a round trip only (a group's few dozen, where every bucket from
    // 0.1 ms up made a large world's report 127 MB).
    let histogram_ms = if hist.is_empty() {
        Vec::new()
    } else {
        hist.iter_log(100, 1.05)
            .map(|v| (ms3(v.value_iterated_to() as f64 / 1000.0), v.count_since_last_iteration()))
            .filter(|&(_, count)| count > 0)
            .collect()
    };
    PathReport { sent, received, loss_pct, rtt_ms, jitter_ms, histogram_ms, series: samples.series() }
}

pub(super) fn fault_report(tr: &FaultTracker) -> FaultReport {
    let mut rec: Vec<u64> = tr.first_reply_ns.iter().flatten().map(|&at| at - tr.at_ns).collect();
    rec.sort_unstable();
    let recovery_ms = (!rec.is_empty()).then(|| Recovery {
        p50: ms3(rec[(rec.len() - 1) / 2] as f64 / 1e6),
        max: ms3(*rec.last().unwrap_or(&0) as f64 / 1e6),
    });
    FaultReport {
        at_s: ms3(tr.at_ns as f64 / 1e9),
        what: tr.what.clone(),
        flows_affected: tr.affected.len() as u64,
        flows_recovered: rec.len() as u64,
        detected_ms: tr.detected_ns.map(|at| ms3((at - tr.at_ns) as f64 / 1e6)),
        noticed_ms: tr.noticed.iter().map(|(who, &at)| (who.clone(), ms3((at - tr.at_ns) as f64 / 1e6))).collect(),
        recovery_ms,
        flows_backend_changed: tr.changed.iter().filter(|&&c| c).count() as u64,
    }
}

impl<'t> World<'t> {
    pub fn report(&self) -> Report {
        let t = self.t;
        let pops = t
            .pops
            .iter()
            .enumerate()
            .map(|(p, site)| PopReport {
                name: site.name.clone(),
                location: site.location,
                flows: self.pops[PopId(p)].core().flows_seen(),
            })
            .collect();
        Report {
            name: t.name.clone(),
            seed: t.seed,
            auth: self.pki.tags.name(),
            duration_s: t.duration_ns as f64 / 1e9,
            models: self.models_report(),
            pops,
            regions: t.regions.iter().map(|r| RegionReport { name: r.name.clone(), location: r.location }).collect(),
            clients: {
                let mut hist = samples::report_histogram();
                let routes = first_vip_routes(t);
                t.clients
                    .iter()
                    .enumerate()
                    .map(|(g, group)| self.client_report(g, group, &mut hist, &routes))
                    .collect()
            },
            backends: self.servers.backends().iter().map(|b| self.backend_report(b)).collect(),
            clb_nodes: self.regions.clbs().iter().map(|n| self.clb_node_report(n)).collect(),
            security_groups: self.security_group_report(),
            faults: self.wire.recorded().trackers().iter().map(fault_report).collect(),
            control: self.control_report(),
            drops: self.drop_report(),
            violations: self.wire.recorded().violations().to_vec(),
        }
    }

    /// Which internet and backbone models (and calibrations) produced the figures.
    fn models_report(&self) -> ModelsReport {
        let t = self.t;
        let pinned = |p: &anyedge_topology::PinnedRtt| {
            let to = match p.to {
                InternetEnd::Pop(i) => format!("pop/{}", t.pops[i].name),
                InternetEnd::Region(i) => format!("region/{}", t.regions[i].name),
            };
            format!("client/{} {to}: {} ms", t.clients[p.client].name, p.rtt_ns as f64 / 1e6)
        };
        ModelsReport {
            internet: ModelReport::of(&t.internet.delay),
            internet_last_mile_ms: t.internet.last_mile_ns as f64 / 1e6,
            internet_last_mile_source: t.internet.last_mile_source.into(),
            internet_routing: t.internet.routing.text(t.seed),
            internet_pinned: t.internet.pinned.iter().map(pinned).collect(),
            internet_beyond_reach: beyond_reach(t),
            backbone: ModelReport::of(&t.backbone.delay),
        }
    }

    /// One backend port: its flows by path, the client addresses it saw, its health.
    fn backend_report(&self, b: &BackendRecord) -> BackendReport {
        let seen = b.addrs_seen.sorted(|c| self.edge.addr_of(c));
        let on = |path: Path| {
            b.flows.iter().filter(|(_, slot)| slot % 2 == path as usize).count() as u64
                + b.flows_elsewhere[path as usize]
        };
        BackendReport {
            region: self.t.regions[b.region].name.clone(),
            group: b.group.clone(),
            address: b.addr.to_string(),
            weight: b.weight,
            flows: b.flows.len() as u64 + b.flows_elsewhere.iter().sum::<u64>(),
            flows_anycast: on(Path::Anycast),
            flows_direct: on(Path::Direct),
            client_addrs_seen: seen.iter().take(ADDRS_SEEN_MAX).map(|a| a.to_string()).collect(),
            client_addrs_total: seen.len() as u64,
            health: b
                .health
                .iter()
                .map(|(at, ok, reason)| HealthReport {
                    at_s: ms3(*at as f64 / 1e9),
                    state: if *ok { "healthy" } else { "unhealthy" },
                    reason: reason.clone(),
                })
                .collect(),
        }
    }

    /// One CLB node across its restarts: flows, connection table, sync.
    fn clb_node_report(&self, n: &ClbNode) -> ClbNodeReport {
        let t = self.t;
        let (peak, evictions) = n.table_totals();
        let sync = (t.regions[n.region()].clb_nodes > 1).then(|| {
            let s = n.sync_total();
            SyncReport {
                messages_sent: s.messages_sent,
                bytes_sent: s.bytes_sent,
                messages_received: s.messages_received,
                bytes_received: s.bytes_received,
                flows_adopted: s.flows_adopted,
                queue_overflow: s.queue_overflow,
            }
        });
        ClbNodeReport {
            name: n.name(t),
            region: t.regions[n.region()].name.clone(),
            flows: n.flows_total(),
            conn_table: ConnTableReport { capacity: n.core().conn_table().capacity(), peak, evictions },
            sync,
        }
    }

    /// Every core's refused packets, by node and reason.
    pub(super) fn drop_report(&self) -> BTreeMap<String, BTreeMap<&'static str, u64>> {
        let t = self.t;
        let pops = self.pops.iter().enumerate().map(|(p, n)| (format!("pop/{}", t.pops[p].name), n.drops()));
        let clbs = self.regions.clbs().iter().map(|n| (n.name(t), n.drops()));
        let hosts = self.servers.hosts().iter().map(|h| (format!("backend/{}", h.ip), &h.drops));
        let egress = self.servers.egress_nodes().iter().map(|e| (e.name.clone(), &e.drops));
        pops.chain(clbs)
            .chain(hosts)
            .chain(egress)
            .filter(|(_, d)| !d.is_empty())
            .map(|(name, d)| (name, d.clone()))
            .collect()
    }

    /// Rule counters summed over every host a group is bound to.
    pub(super) fn security_group_report(&self) -> Vec<SecurityGroupReport> {
        let mut totals = self.faults.retired_sg().to_vec();
        let firewalls = self
            .regions
            .clbs()
            .iter()
            .filter_map(|c| c.core().firewall())
            .chain(self.servers.hosts().iter().filter_map(|h| h.firewall.as_ref()));
        // What the CLB nodes judged for backends (layer 7, QUIC, translated flows) counts
        // as the backend hosts' own firewalls count.
        let on_behalf = self.regions.clbs().iter().map(|c| c.core().backend_guard());
        let counted = firewalls.flat_map(|fw| fw.counters()).chain(on_behalf.flat_map(|g| g.counters()));
        for (gi, counters) in counted {
            for (ri, c) in counters.iter().enumerate() {
                totals[gi][ri].matched += c.matched;
                totals[gi][ri].denied += c.denied;
            }
        }
        self.t
            .security_groups
            .iter()
            .zip(totals)
            .map(|(d, counts)| SecurityGroupReport {
                name: d.group.name.clone(),
                rules: d
                    .group
                    .rules
                    .iter()
                    .zip(counts)
                    .map(|(r, c)| RuleReport {
                        source: r.source.to_string(),
                        port: r.ports.to_string(),
                        action: r.action.name(),
                        matched: c.matched,
                        denied: c.denied,
                    })
                    .collect(),
            })
            .collect()
    }

    /// Group `g`'s section; `hist`, a histogram to build each path's buckets in.
    pub(super) fn client_report(
        &self,
        g: usize,
        group: &anyedge_topology::ClientGroup,
        hist: &mut Histogram<u64>,
        routes: &[Option<Catchments>],
    ) -> ClientReport {
        let t = self.t;
        let first_vip = group.traffic.first().map(|&k| t.traffic[k].vip);
        let pop = first_vip.and_then(|v| self.edge.groups()[g].first_pop(v)).map(|p| t.pops[p.0].name.clone());
        // A group's clients are consecutive from its first.
        let members: Vec<&Client> = self.edge.group_clients(g).collect();
        debug_assert!(members.iter().all(|c| c.group == g));
        let traffic = group
            .traffic
            .iter()
            .enumerate()
            .map(|(k, &class)| {
                let mut path = |p: usize| {
                    // Another rank's clients have no rows here (`sim --mpi`: their owner
                    // sends their section).
                    let flows = members.iter().filter_map(|c| c.flows.get(k * 2 + p));
                    let record = &self.wire.recorded().class(g, k).paths[p];
                    path_report(flows, hist, &record.samples)
                };
                TrafficReport {
                    name: t.traffic[class].name.clone(),
                    protocol: match t.traffic[class].kind {
                        TrafficKind::Udp { .. } => "udp".into(),
                        TrafficKind::Tcp { .. } => "tcp".into(),
                        TrafficKind::SynFlood { .. } => "syn-flood".into(),
                        TrafficKind::Quic { .. } => "quic".into(),
                    },
                    anycast: path(0),
                    direct: path(1),
                }
            })
            .collect();
        let catchment = self
            .wire
            .recorded()
            .catchments()
            .iter()
            .filter(|c| c.1 == g)
            .map(|&(at, _, v, p)| CatchmentChange {
                at_s: ms3(at as f64 / 1e9),
                vip: t.vips[v].name.clone(),
                pop: p.map(|p| t.pops[p.0].name.clone()),
            })
            .collect();
        let route = first_vip.and_then(|v| routes[v].as_ref()).and_then(|c| route_report(t, &c.groups[g]));
        ClientReport {
            name: group.name.clone(),
            location: group.location,
            count: group.count,
            pop,
            catchment,
            route,
            traffic,
        }
    }

    /// The control plane's report section (when the file has `control:`).
    pub fn control_report(&self) -> Option<crate::control::ControlReport> {
        let names: Vec<String> = self.regions.clbs().iter().map(|n| n.name(self.t)).collect();
        self.control.as_ref().map(|c| c.report(&names))
    }
}

/// The places of `t` whose internet round trips the per-place model takes from its
/// distance law alone: no measured server within its reach.
fn beyond_reach(t: &anyedge_topology::Topology) -> Vec<String> {
    let Some(model) = &t.internet.delay.landmarks else { return Vec::new() };
    let clients = t.clients.iter().map(|c| (format!("client/{}", c.name), c.location));
    let pops = t.pops.iter().map(|p| (format!("pop/{}", p.name), p.location));
    let regions = t.regions.iter().map(|r| (format!("region/{}", r.name), r.location));
    clients.chain(pops).chain(regions).filter(|(_, at)| model.anchors(*at).is_empty()).map(|(name, _)| name).collect()
}

/// Every VIP's catchments at t=0 (all POPs announcing), for the VIPs that are some
/// group's first; `None` for the rest.
fn first_vip_routes(t: &anyedge_topology::Topology) -> Vec<Option<Catchments>> {
    let first: std::collections::BTreeSet<usize> =
        t.clients.iter().filter_map(|g| g.traffic.first().map(|&k| t.traffic[k].vip)).collect();
    let attacher = anyedge_topology::bgp::Attacher::new(t);
    (0..t.vips.len())
        .map(|v| {
            first.contains(&v).then(|| anyedge_topology::catchments::of_with(t, &attacher, v, &|_| true).ok()).flatten()
        })
        .collect()
}

fn route_report(t: &anyedge_topology::Topology, c: &Catchment) -> Option<RouteReport> {
    c.pop?;
    Some(RouteReport {
        as_path: c.path.clone(),
        as_path_names: c.path_names.clone(),
        rtt_ms: ms3(c.rtt_ns as f64 / 1e6),
        nearest_pop: c.nearest.map(|p| t.pops[p].name.clone()),
        nearest_rtt_ms: ms3(c.nearest_rtt_ns as f64 / 1e6),
        inflation_ms: ms3(c.inflation_ms()),
        inflation_km: (c.extra_km * 10.0).round() / 10.0,
    })
}
