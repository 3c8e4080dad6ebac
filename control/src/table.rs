//! The route table every POP and CLB node follows — VIPs, their listeners and publish
//! sets, backend groups with weights and bindings, security groups — and the changes
//! the control API makes to it. A change is checked against the table (the topology
//! validator's rules) before it is proposed, and applied the same way on every node.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Largest weight a backend may have (SPEC: 0–100).
pub const WEIGHT_MAX: u8 = 100;
/// Session persistence bounds (SPEC: 30–3600 s).
pub const PERSISTENCE_S_MIN: u32 = 30;
pub const PERSISTENCE_S_MAX: u32 = 3600;

/// The replicated state: what the data plane forwards by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RouteTable {
    pub vips: Vec<VipRoute>,
    pub backend_groups: Vec<GroupRoute>,
    pub security_groups: Vec<SecurityGroupRoute>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipRoute {
    pub name: String,
    pub ipv4: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ipv6: Option<String>,
    /// The home region (its name).
    pub home: String,
    /// The POPs announcing the VIP (publish set), by name.
    pub publish: Vec<String>,
    pub listeners: Vec<ListenerRoute>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerRoute {
    /// tcp | udp | tcp-ssl | quic | http | https
    pub protocol: String,
    pub port: u16,
    /// wrr | wlc | hash | maglev
    pub scheduler: String,
    /// A backend group of the VIP's home region, by name.
    pub backends: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub persistence_s: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRoute {
    pub region: String,
    pub name: String,
    pub backends: Vec<BackendRoute>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendRoute {
    pub addr: SocketAddr,
    pub weight: u8,
    /// Unbound backends get nothing forwarded, new or old flows.
    pub bound: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroupRoute {
    pub name: String,
    /// Rules in order, as `allow|drop SOURCE-CIDR PORT|any`.
    pub rules: Vec<String>,
    /// What it is bound to (`backend/IP`, `clb/REGION[/N]`).
    pub bind: Vec<String>,
}

/// A change to the table: one committed log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "op")]
pub enum Change {
    SetWeight { backend: SocketAddr, weight: u8 },
    Bind { backend: SocketAddr },
    Unbind { backend: SocketAddr },
    AddListener { vip: String, listener: ListenerRoute },
    DelListener { vip: String, protocol: String, port: u16 },
}

impl Change {
    /// The entry bytes carried in the Raft log.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A log entry back into a change (`None`: not one of ours, e.g. the empty entry a
    /// new leader appends).
    pub fn decode(bytes: &[u8]) -> Option<Change> {
        serde_json::from_slice(bytes).ok()
    }
}

/// Why a change was refused: the field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangeError {
    pub field: String,
    pub reason: String,
}

impl fmt::Display for ChangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for ChangeError {}

fn refuse(field: &str, reason: impl Into<String>) -> ChangeError {
    ChangeError { field: field.to_string(), reason: reason.into() }
}

const PROTOCOLS: [&str; 6] = ["tcp", "udp", "tcp-ssl", "quic", "http", "https"];
/// Scheduler names, the one list the route table, the topology's parser and its schema
/// read: weighted round robin, weighted least connections, source hash, Maglev.
pub const SCHEDULERS: [&str; 4] = ["wrr", "wlc", "hash", "maglev"];
/// Those a QUIC listener takes (it has no 5-tuple to hash: connection IDs route it).
pub const QUIC_SCHEDULERS: [&str; 2] = ["wrr", "wlc"];
const _: () = assert!(QUIC_SCHEDULERS.len() < SCHEDULERS.len());

/// TCP-based listeners share one port space, UDP and QUIC the other.
fn port_space(protocol: &str) -> u8 {
    if matches!(protocol, "udp" | "quic") { 1 } else { 0 }
}

impl RouteTable {
    fn bindings(&self, backend: SocketAddr) -> impl Iterator<Item = &BackendRoute> {
        self.backend_groups.iter().flat_map(|g| &g.backends).filter(move |b| b.addr == backend)
    }

    /// A backend's weight (of its first binding).
    pub fn weight(&self, backend: SocketAddr) -> Option<u8> {
        self.bindings(backend).next().map(|b| b.weight)
    }

    /// Whether `change` may be applied to this table; the error names the field.
    pub fn check(&self, change: &Change) -> Result<(), ChangeError> {
        match change {
            Change::SetWeight { backend, weight } => {
                if self.bindings(*backend).next().is_none() {
                    return Err(refuse("backend", format!("no backend {backend} is bound in any group")));
                }
                if *weight > WEIGHT_MAX {
                    return Err(refuse("weight", format!("{weight} is not in 0–{WEIGHT_MAX}")));
                }
                Ok(())
            }
            Change::Bind { backend } | Change::Unbind { backend } => {
                if self.bindings(*backend).next().is_none() {
                    return Err(refuse("backend", format!("no backend {backend} in any group")));
                }
                Ok(())
            }
            Change::AddListener { vip, listener } => self.check_add_listener(vip, listener),
            Change::DelListener { vip, protocol, port } => {
                let v = self.vips.iter().find(|v| &v.name == vip).ok_or(refuse("vip", format!("no VIP `{vip}`")))?;
                if !v.listeners.iter().any(|l| &l.protocol == protocol && l.port == *port) {
                    return Err(refuse("port", format!("VIP `{vip}` has no {protocol} listener on port {port}")));
                }
                Ok(())
            }
        }
    }

    fn check_add_listener(&self, vip: &str, l: &ListenerRoute) -> Result<(), ChangeError> {
        let v = self.vips.iter().find(|v| v.name == vip).ok_or(refuse("vip", format!("no VIP `{vip}`")))?;
        if !PROTOCOLS.contains(&l.protocol.as_str()) {
            return Err(refuse("protocol", format!("`{}` is not one of {}", l.protocol, PROTOCOLS.join(", "))));
        }
        if l.port == 0 {
            return Err(refuse("port", "0 is not in 1–65535"));
        }
        if let Some(other) =
            v.listeners.iter().find(|o| o.port == l.port && port_space(&o.protocol) == port_space(&l.protocol))
        {
            return Err(refuse(
                "port",
                format!("port {} is taken on VIP `{vip}` by its {} listener", l.port, other.protocol),
            ));
        }
        if !SCHEDULERS.contains(&l.scheduler.as_str()) {
            return Err(refuse("scheduler", format!("`{}` is not one of {}", l.scheduler, SCHEDULERS.join(", "))));
        }
        if l.protocol == "quic" && !QUIC_SCHEDULERS.contains(&l.scheduler.as_str()) {
            return Err(refuse("scheduler", format!("QUIC listeners schedule with {}", QUIC_SCHEDULERS.join(" or "))));
        }
        if let Some(s) = l.persistence_s {
            if l.protocol == "quic" {
                return Err(refuse("persistence", "QUIC listeners have no session persistence"));
            }
            if l.scheduler != "wrr" {
                return Err(refuse("persistence", "session persistence works with the wrr scheduler only"));
            }
            if !(PERSISTENCE_S_MIN..=PERSISTENCE_S_MAX).contains(&s) {
                return Err(refuse(
                    "persistence",
                    format!("{s} s is not in {PERSISTENCE_S_MIN}–{PERSISTENCE_S_MAX} s"),
                ));
            }
        }
        if !self.backend_groups.iter().any(|g| g.region == v.home && g.name == l.backends) {
            return Err(refuse("backends", format!("region `{}` has no backend group `{}`", v.home, l.backends)));
        }
        Ok(())
    }

    /// Applies a change checked with [`RouteTable::check`]. A change that no longer fits
    /// (two writers raced) is skipped on every node alike: the error says why.
    pub fn apply(&mut self, change: &Change) -> Result<(), ChangeError> {
        self.check(change)?;
        match change {
            Change::SetWeight { backend, weight } => self.each_binding(*backend, |b| b.weight = *weight),
            Change::Bind { backend } => self.each_binding(*backend, |b| b.bound = true),
            Change::Unbind { backend } => self.each_binding(*backend, |b| b.bound = false),
            Change::AddListener { vip, listener } => {
                if let Some(v) = self.vips.iter_mut().find(|v| &v.name == vip) {
                    v.listeners.push(listener.clone());
                    v.listeners.sort_by_key(|l| (port_space(&l.protocol), l.port));
                    let keys: Vec<_> = v.listeners.iter().map(|l| (port_space(&l.protocol), l.port)).collect();
                    debug_assert!(keys.windows(2).all(|w| w[0] < w[1]), "one listener per port space and port");
                }
            }
            Change::DelListener { vip, protocol, port } => {
                if let Some(v) = self.vips.iter_mut().find(|v| &v.name == vip) {
                    v.listeners.retain(|l| !(&l.protocol == protocol && l.port == *port));
                }
            }
        }
        debug_assert!(self.backend_groups.iter().flat_map(|g| &g.backends).all(|b| b.weight <= WEIGHT_MAX));
        Ok(())
    }

    fn each_binding(&mut self, backend: SocketAddr, mut f: impl FnMut(&mut BackendRoute)) {
        for b in self.backend_groups.iter_mut().flat_map(|g| &mut g.backends).filter(|b| b.addr == backend) {
            f(b);
        }
    }

    /// What turns a node holding this table into one holding `new` (a watcher catching
    /// up from a whole table): listeners deleted and added, then every backend's weight
    /// and binding.
    pub fn changes_to(&self, new: &RouteTable) -> Vec<Change> {
        let listeners = |t: &RouteTable| -> Vec<(String, ListenerRoute)> {
            t.vips.iter().flat_map(|v| v.listeners.iter().map(move |l| (v.name.clone(), l.clone()))).collect()
        };
        let (before, after) = (listeners(self), listeners(new));
        let mut out: Vec<Change> = before
            .iter()
            .filter(|x| !after.contains(x))
            .map(|(vip, l)| Change::DelListener { vip: vip.clone(), protocol: l.protocol.clone(), port: l.port })
            .collect();
        out.extend(
            after
                .iter()
                .filter(|x| !before.contains(x))
                .map(|(vip, l)| Change::AddListener { vip: vip.clone(), listener: l.clone() }),
        );
        out.extend(new.as_changes());
        out
    }

    /// The whole table as the changes a data-plane node applies to its core (weights
    /// and bindings; one per backend address).
    pub fn as_changes(&self) -> Vec<Change> {
        let mut seen: std::collections::BTreeMap<SocketAddr, BackendRoute> = std::collections::BTreeMap::new();
        for b in self.backend_groups.iter().flat_map(|g| &g.backends) {
            seen.entry(b.addr).or_insert(*b);
        }
        debug_assert!(seen.len() <= self.backend_groups.iter().map(|g| g.backends.len()).sum::<usize>());
        seen.values()
            .flat_map(|b| {
                let bind = if b.bound { Change::Bind { backend: b.addr } } else { Change::Unbind { backend: b.addr } };
                [Change::SetWeight { backend: b.addr, weight: b.weight }, bind]
            })
            .collect()
    }

    /// The table as bytes (snapshots).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<RouteTable> {
        serde_json::from_slice(bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> RouteTable {
        RouteTable {
            vips: vec![VipRoute {
                name: "edge".into(),
                ipv4: "198.18.0.20".into(),
                ipv6: None,
                home: "frankfurt".into(),
                publish: vec!["paris".into(), "warsaw".into()],
                listeners: vec![ListenerRoute {
                    protocol: "udp".into(),
                    port: 7000,
                    scheduler: "maglev".into(),
                    backends: "game".into(),
                    persistence_s: None,
                }],
            }],
            backend_groups: vec![GroupRoute {
                region: "frankfurt".into(),
                name: "game".into(),
                backends: vec![BackendRoute { addr: "198.19.20.1:7000".parse().unwrap(), weight: 10, bound: true }],
            }],
            security_groups: Vec::new(),
        }
    }

    fn listener(protocol: &str, port: u16, scheduler: &str) -> ListenerRoute {
        ListenerRoute {
            protocol: protocol.into(),
            port,
            scheduler: scheduler.into(),
            backends: "game".into(),
            persistence_s: None,
        }
    }

    #[test]
    fn set_weight_changes_every_binding_and_refuses_out_of_range_weights() {
        let mut t = sample();
        let b = "198.19.20.1:7000".parse().unwrap();
        t.apply(&Change::SetWeight { backend: b, weight: 0 }).unwrap();
        assert_eq!(t.weight(b), Some(0));
        let e = t.apply(&Change::SetWeight { backend: b, weight: 101 }).unwrap_err();
        assert_eq!(e.field, "weight");
        assert_eq!(t.weight(b), Some(0), "a refused change changes nothing");
        let e = t.check(&Change::SetWeight { backend: "198.19.20.9:7000".parse().unwrap(), weight: 5 }).unwrap_err();
        assert_eq!(e.field, "backend");
    }

    #[test]
    fn add_listener_follows_the_topology_rules_and_names_the_field() {
        let t = sample();
        let add = |l: ListenerRoute| t.check(&Change::AddListener { vip: "edge".into(), listener: l });
        assert_eq!(add(listener("quic", 7000, "wrr")).unwrap_err().field, "port", "UDP and QUIC share a port space");
        assert!(add(listener("tcp", 7000, "wrr")).is_ok(), "TCP has a port space of its own");
        assert_eq!(add(listener("sctp", 80, "wrr")).unwrap_err().field, "protocol");
        assert_eq!(add(listener("tcp", 0, "wrr")).unwrap_err().field, "port");
        assert_eq!(add(listener("quic", 443, "maglev")).unwrap_err().field, "scheduler");
        let persistent = ListenerRoute { persistence_s: Some(10), ..listener("tcp", 80, "wrr") };
        assert_eq!(add(persistent).unwrap_err().field, "persistence");
        let persistent = ListenerRoute { persistence_s: Some(60), ..listener("tcp", 80, "wlc") };
        assert_eq!(add(persistent).unwrap_err().field, "persistence");
        let elsewhere = ListenerRoute { backends: "web".into(), ..listener("tcp", 80, "wrr") };
        assert_eq!(add(elsewhere).unwrap_err().field, "backends");
        let e = t.check(&Change::AddListener { vip: "nope".into(), listener: listener("tcp", 80, "wrr") }).unwrap_err();
        assert_eq!(e.field, "vip");
    }

    #[test]
    fn del_listener_removes_only_that_listener() {
        let mut t = sample();
        t.apply(&Change::AddListener { vip: "edge".into(), listener: listener("tcp", 7000, "wrr") }).unwrap();
        t.apply(&Change::DelListener { vip: "edge".into(), protocol: "udp".into(), port: 7000 }).unwrap();
        assert_eq!(t.vips[0].listeners, vec![listener("tcp", 7000, "wrr")]);
        let e = t.apply(&Change::DelListener { vip: "edge".into(), protocol: "udp".into(), port: 7000 }).unwrap_err();
        assert_eq!(e.field, "port");
    }

    #[test]
    fn changes_to_turns_one_table_into_another() {
        let old = sample();
        let mut new = sample();
        new.apply(&Change::DelListener { vip: "edge".into(), protocol: "udp".into(), port: 7000 }).unwrap();
        new.apply(&Change::AddListener { vip: "edge".into(), listener: listener("tcp", 80, "wrr") }).unwrap();
        new.apply(&Change::SetWeight { backend: "198.19.20.1:7000".parse().unwrap(), weight: 3 }).unwrap();
        let mut replayed = old.clone();
        for c in old.changes_to(&new) {
            replayed.apply(&c).unwrap();
        }
        assert_eq!(replayed, new);
    }

    #[test]
    fn changes_and_tables_survive_the_log_encoding() {
        let c = Change::Unbind { backend: "198.19.20.1:7000".parse().unwrap() };
        assert_eq!(Change::decode(&c.encode()), Some(c));
        assert_eq!(Change::decode(b""), None);
        assert_eq!(Change::decode(b"{\"op\":\"explode\"}"), None);
        let t = sample();
        assert_eq!(RouteTable::decode(&t.encode()), Some(t));
    }
}
