//! A lab node's drop counters: every packet its core refuses, by reason, shared between
//! the forwarding loop and the status socket.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Default)]
pub struct Drops(Arc<Mutex<BTreeMap<&'static str, u64>>>, Sections, Arc<Counters>);

/// Packets through the node's forwarding loop, and gauges its core reports.
#[derive(Debug, Default)]
struct Counters {
    packets_in: std::sync::atomic::AtomicU64,
    packets_out: std::sync::atomic::AtomicU64,
    gauges: Mutex<BTreeMap<&'static str, u64>>,
    /// Packets read from each queue of a POP's TUN device.
    tun_reads: std::sync::OnceLock<Box<[std::sync::atomic::AtomicU64]>>,
    /// Time packets spent inside the node, by way ([`Way`]).
    residence: [Mutex<Option<hdrhistogram::Histogram<u64>>>; 2],
    /// A POP's administrative state ([`Admin`]), set by `ctl drain`.
    admin: std::sync::atomic::AtomicU8,
    /// Packets a POP read from clients (what `ctl drain` watches for the last flow).
    client_packets: std::sync::atomic::AtomicU64,
    /// What the node's backbone sockets lost: pieces, refused sends.
    backbone: Arc<crate::io::batch::Losses>,
}

/// What an operator asked of a POP: serve (announce while healthy), drain (withdraw every
/// VIP, keep serving what still arrives) or stop (withdrawn, client packets dropped as
/// `drained`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admin {
    Serving = 0,
    Draining = 1,
    Stopped = 2,
}

impl Admin {
    pub fn name(self) -> &'static str {
        match self {
            Admin::Serving => "serving",
            Admin::Draining => "draining",
            Admin::Stopped => "stopped",
        }
    }
}

/// Client packets a stopped POP refuses.
pub struct Drained;

impl Reason for Drained {
    fn name(&self) -> &'static str {
        "drained"
    }
}

/// Which way a packet goes through a node: toward the backend or back to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    Request = 0,
    Reply = 1,
}

/// The longest residence a histogram holds (longer ones count at this value): 10 s.
const RESIDENCE_MAX_NS: u64 = 10_000_000_000;

/// Further sections of a node's status (`sync`, `quic`), by name.
type Sections = Arc<Mutex<BTreeMap<&'static str, serde_json::Value>>>;

impl Drops {
    /// A CLB node's connection-table sync counters, for `status`.
    pub fn set_sync(&self, stats: &anyedge_region::sync::SyncStats) {
        self.set_section(
            "sync",
            serde_json::json!({
                "messages_sent": stats.messages_sent,
                "bytes_sent": stats.bytes_sent,
                "messages_received": stats.messages_received,
                "bytes_received": stats.bytes_received,
                "flows_adopted": stats.flows_adopted,
                "queue_overflow": stats.queue_overflow,
            }),
        );
    }

    /// A CLB node's QUIC counts, for `status` and `/metrics`.
    pub fn set_quic(&self, q: anyedge_region::quic_listener::QuicCounts) {
        self.set_gauge("quic_connections", q.connections as u64);
        self.set_gauge("quic_handshakes_total", q.handshakes);
        self.set_gauge("quic_retries_total", q.retries);
        self.set_gauge("quic_stateless_resets_total", q.stateless_resets);
        self.set_gauge("quic_refused_total", q.refused);
        self.set_gauge("quic_h3_requests_total", q.h3_requests);
        self.set_gauge("quic_backend_connections", q.relays as u64);
        self.set_gauge("quic_streams_refused_total", q.streams_refused);
        self.set_section(
            "quic",
            serde_json::json!({
                "connections": q.connections,
                "handshakes": q.handshakes,
                "retries": q.retries,
                "stateless_resets": q.stateless_resets,
                "refused": q.refused,
                "h3_requests": q.h3_requests,
                "backend_connections": q.relays,
                "streams_refused": q.streams_refused,
            }),
        );
    }

    /// The last flow a backend's security groups dropped, and why (`status`): on a backend
    /// host, its own packets; on a CLB node, the clients it kept from a backend.
    pub fn set_denied(&self, why: &str) {
        self.set_section("denied", serde_json::Value::String(why.to_string()));
    }

    /// A CLB node's view of its backends' health (`status`).
    pub fn set_health(&self, health: &std::collections::BTreeMap<String, &'static str>) {
        self.set_section("health", serde_json::json!(health));
    }

    pub fn set_section(&self, name: &'static str, value: serde_json::Value) {
        if let Ok(mut s) = self.1.lock() {
            s.insert(name, value);
        }
    }

    /// The status sections set so far.
    pub fn sections(&self) -> BTreeMap<&'static str, serde_json::Value> {
        self.1.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Counts a core's refusal, if it refused.
    pub fn count<E: Reason>(&self, result: Result<(), E>) {
        if let Err(reason) = result
            && let Ok(mut counts) = self.0.lock()
        {
            tracing::debug!(reason = reason.name(), "dropped");
            *counts.entry(reason.name()).or_default() += 1;
        }
    }

    /// A packet (datagram, TUN read, stream message) the node took in.
    pub fn packet_in(&self) {
        self.2.packets_in.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// A packet the node sent on.
    pub fn packet_out(&self) {
        self.2.packets_out.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The POP's administrative state.
    pub fn admin(&self) -> Admin {
        match self.2.admin.load(std::sync::atomic::Ordering::SeqCst) {
            1 => Admin::Draining,
            2 => Admin::Stopped,
            _ => Admin::Serving,
        }
    }

    pub fn set_admin(&self, admin: Admin) {
        self.2.admin.store(admin as u8, std::sync::atomic::Ordering::SeqCst);
    }

    /// The sums the node's backbone sockets add their losses to
    /// ([`crate::io::batch::BatchSocket::count_into`]).
    pub fn backbone_losses(&self) -> Arc<crate::io::batch::Losses> {
        self.2.backbone.clone()
    }

    /// A packet a POP read from a client.
    pub fn client_packet(&self) {
        self.2.client_packets.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn client_packets(&self) -> u64 {
        self.2.client_packets.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The node reads its TUN device with `n` queues (a POP).
    pub fn set_tun_queues(&self, n: usize) {
        let _ = self.2.tun_reads.set((0..n).map(|_| std::sync::atomic::AtomicU64::new(0)).collect());
    }

    /// `count` packets read from TUN queue `queue`.
    pub fn tun_read(&self, queue: usize, count: u64) {
        if let Some(q) = self.2.tun_reads.get().and_then(|r| r.get(queue)) {
            q.fetch_add(count, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Packets read from each TUN queue so far (a POP), for `status`.
    pub fn tun_reads(&self) -> Option<Vec<u64>> {
        let reads = self.2.tun_reads.get()?;
        Some(reads.iter().map(|q| q.load(std::sync::atomic::Ordering::Relaxed)).collect())
    }

    /// `count` packets going `way` left the node; the node read the first of them at
    /// `since` (the wake-up that read them): the time from that read to now is theirs.
    /// Every packet of a batch is charged the batch's whole pass, the bound a packet that
    /// arrives with others sees.
    pub fn left(&self, way: Way, since: std::time::Instant, count: u64) {
        if count == 0 {
            return;
        }
        let ns = (since.elapsed().as_nanos() as u64).clamp(1, RESIDENCE_MAX_NS);
        if let Ok(mut h) = self.2.residence[way as usize].lock() {
            if h.is_none() {
                *h = hdrhistogram::Histogram::new_with_bounds(1, RESIDENCE_MAX_NS, 3).ok();
            }
            if let Some(h) = h.as_mut() {
                let _ = h.record_n(ns, count);
            }
        }
    }

    /// Forgets the residence recorded so far (`bench lab --breakdown` between phases).
    pub fn reset_residence(&self) {
        for h in &self.2.residence {
            if let Ok(mut h) = h.lock() {
                *h = None;
            }
        }
    }

    /// Residence since the last reset, for `status`: per way, packets and the p50, p99,
    /// p99.9 and max in nanoseconds (absent when nothing went that way).
    pub fn residence(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for (name, h) in ["request", "reply"].iter().zip(&self.2.residence) {
            let Ok(h) = h.lock() else { continue };
            let Some(h) = h.as_ref().filter(|h| !h.is_empty()) else { continue };
            out.insert(
                name.to_string(),
                serde_json::json!({
                    "packets": h.len(),
                    "p50_ns": h.value_at_quantile(0.5),
                    "p99_ns": h.value_at_quantile(0.99),
                    "p999_ns": h.value_at_quantile(0.999),
                    "max_ns": h.max(),
                }),
            );
        }
        serde_json::Value::Object(out)
    }

    /// A figure the node's core reports (`conn_table_entries`, `raft_term`, …).
    pub fn set_gauge(&self, name: &'static str, value: u64) {
        if let Ok(mut g) = self.2.gauges.lock() {
            g.insert(name, value);
        }
    }

    /// Everything as Prometheus text exposition (version 0.0.4), labelled with `node`.
    pub fn prometheus(&self, node: &str) -> String {
        use std::fmt::Write;
        use std::sync::atomic::Ordering::Relaxed;
        let mut out = String::new();
        let node = node.replace('\\', "\\\\").replace('"', "\\\"");
        let mut metric = |name: &str, kind: &str, help: &str, rows: Vec<(String, u64)>| {
            if rows.is_empty() {
                return;
            }
            let _ = writeln!(out, "# HELP anyedge_{name} {help}\n# TYPE anyedge_{name} {kind}");
            for (labels, v) in rows {
                let _ = writeln!(out, "anyedge_{name}{{node=\"{node}\"{labels}}} {v}");
            }
        };
        metric(
            "packets_in_total",
            "counter",
            "Packets the node took in.",
            vec![(String::new(), self.2.packets_in.load(Relaxed))],
        );
        metric(
            "packets_out_total",
            "counter",
            "Packets the node sent on.",
            vec![(String::new(), self.2.packets_out.load(Relaxed))],
        );
        metric(
            "backbone_pieces_lost_total",
            "counter",
            "Pieces of backbone envelopes that made no envelope (a piece lost, late or duplicated): each lost its envelope.",
            vec![(String::new(), self.2.backbone.pieces_lost.load(Relaxed))],
        );
        metric(
            "backbone_sends_refused_total",
            "counter",
            "Sends of backbone envelope pieces the kernel refused (a full buffer twice, or an error): each lost its envelope.",
            vec![(String::new(), self.2.backbone.unsent.load(Relaxed))],
        );
        if let Some(reads) = self.tun_reads() {
            let rows = reads.iter().enumerate().map(|(q, n)| (format!(",queue=\"{q}\""), *n)).collect();
            metric("tun_queue_packets_total", "counter", "Packets read from each queue of the TUN device.", rows);
        }
        let drops = self.0.lock().map(|c| c.clone()).unwrap_or_default();
        let rows = drops.iter().map(|(r, n)| (format!(",reason=\"{r}\""), *n)).collect();
        metric("drops_total", "counter", "Packets the node's core refused, by reason.", rows);
        let gauges = self.2.gauges.lock().map(|g| g.clone()).unwrap_or_default();
        for (name, v) in gauges {
            let (kind, help) = gauge_kind(name);
            metric(name, kind, help, vec![(String::new(), v)]);
        }
        let sections = self.sections();
        if let Some(health) = sections.get("health").and_then(|h| h.as_object()) {
            let rows =
                health.iter().map(|(b, state)| (format!(",backend=\"{b}\""), u64::from(state == "healthy"))).collect();
            metric("backend_healthy", "gauge", "1 while the node's health checks pass for the backend.", rows);
        }
        if let Some(sync) = sections.get("sync").and_then(|h| h.as_object()) {
            for (k, v) in sync {
                let help = "Connection-table sync with the region's other nodes.";
                metric(&format!("sync_{k}_total"), "counter", help, vec![(String::new(), v.as_u64().unwrap_or(0))]);
            }
        }
        out
    }

    /// The counts so far, as a JSON object (`{"no_route": 3}`).
    pub fn to_json(&self) -> serde_json::Value {
        let counts = self.0.lock().map(|c| c.clone()).unwrap_or_default();
        serde_json::json!(counts)
    }
}

/// A core's drop reason, by its stable name.
pub trait Reason {
    fn name(&self) -> &'static str;
}

/// A node figure's Prometheus type and help text, by name.
fn gauge_kind(name: &str) -> (&'static str, &'static str) {
    match name {
        "conn_table_entries" => ("gauge", "Flows in the connection table."),
        "conn_table_evictions_total" => {
            ("counter", "Flows not yet established the connection table pushed out (full).")
        }
        "conn_table_refused_total" => ("counter", "New flows refused: the table held only established flows."),
        "snat_evictions_total" => ("counter", "SNAT ports taken back from flows never established (pool full)."),
        "l7_connections" => ("gauge", "Layer-7 (HTTP, HTTPS, TCP SSL) connections the node proxies."),
        "l7_buffer_bytes" => ("gauge", "Socket and relay buffer bytes the node's layer-7 connections hold."),
        "l7_window_grown_bytes" => {
            ("gauge", "Window growth granted to layer-7 connections past 64 KiB a socket (at most 512 MiB).")
        }
        "syn_cookies_total" => ("counter", "Layer-7 SYNs answered with a SYN cookie (nothing kept until the ACK)."),
        "raft_term" => ("gauge", "The control node's Raft term."),
        "raft_commit" => ("gauge", "The control node's commit index."),
        "raft_applied" => ("gauge", "The control node's applied index."),
        "route_table_applied" => ("gauge", "The route-table log index the node has applied."),
        "backend_groups_denied_total" => {
            ("counter", "Clients a CLB node kept from a backend by the backend's security groups.")
        }
        "route_table_lag_us" => {
            ("gauge", "How long the last route-table update the node applied took from its control node.")
        }
        "quic_connections" => ("gauge", "QUIC connections held."),
        "quic_handshakes_total" => ("counter", "QUIC handshakes accepted."),
        "quic_retries_total" => ("counter", "QUIC Initials answered with a Retry (over the rate)."),
        "quic_h3_requests_total" => ("counter", "HTTP/3 requests forwarded to backends as HTTP/1.1."),
        "quic_buffer_bytes" => ("gauge", "Bytes QUIC listeners hold of their own: requests, relay and socket buffers."),
        "quic_backend_connections" => {
            ("gauge", "Backend connections QUIC listeners hold (one per stream at a backend).")
        }
        "quic_streams_refused_total" => {
            ("counter", "QUIC streams refused: their source held its share of backend connections.")
        }
        _ => ("gauge", "A node figure."),
    }
}

impl Reason for anyedge_pop::PopDrop {
    fn name(&self) -> &'static str {
        anyedge_pop::PopDrop::name(self)
    }
}

impl Reason for anyedge_region::ClbDrop {
    fn name(&self) -> &'static str {
        anyedge_region::ClbDrop::name(self)
    }
}

impl Reason for anyedge_region::gateway::GatewayDrop {
    fn name(&self) -> &'static str {
        anyedge_region::gateway::GatewayDrop::name(self)
    }
}

impl Reason for anyedge_ccn::AuthError {
    fn name(&self) -> &'static str {
        anyedge_ccn::AuthError::name(self)
    }
}
