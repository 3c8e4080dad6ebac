//! One topology over several hosts: a hosts file places every node (and every network the
//! lab routes through: `internet`, `backbone`, `region/NAME`) on a named host with its
//! underlay address. `anyedge host up DIR --host NAME` builds that host's part of the
//! lab — its namespaces, veths between them, and its ends of the links to other hosts —
//! and `anyedge node --config` runs each node in its namespace there.
//!
//! ```yaml
//! hosts:
//!   - { name: edge, address: 10.77.0.1, nodes: [internet, transit/*, client/*, pop/*] }
//!   - { name: core, address: 10.77.0.2, nodes: [backbone, region/*, clb/*, control/*] }
//!   - { name: dc,   address: 10.77.0.3, nodes: [backend/*] }
//! ```
//!
//! Between hosts, the backbone is routed: its UDP envelopes cross the underlay as they
//! are, node address to node address, through the hosts' own namespaces (no
//! encapsulation, the underlay's full MTU). Every other link between hosts is VXLAN (UDP
//! port 4789, one VNI per link) between the two hosts' underlay addresses: transits' BGP
//! sessions want one hop, and the region's links are the backends' network. A VXLAN
//! link's MTU is the underlay's less VXLAN's 50 bytes (1,450 on a 1,500-byte underlay),
//! on both ends. What no longer fits is fragmented by the sender's kernel and reassembled
//! by the receiver's; the lab test measures both kinds of link with full-size packets.

use std::net::Ipv4Addr;
use std::path::Path;

use serde::Deserialize;

use anyedge_topology::name_matches as glob;

use super::SetupError;
use crate::error::Doing;
use crate::plan::{Plan, Role};

/// UDP port of the underlay's VXLAN (IANA's).
pub const VXLAN_PORT: u16 = 4789;
/// What VXLAN adds to a frame on an IPv4 underlay: outer IPv4, UDP, VXLAN, Ethernet.
pub const VXLAN_OVERHEAD: u32 = 50;

/// A hosts file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostsFile {
    pub hosts: Vec<Host>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    pub name: String,
    /// Its address on the underlay: where other hosts send its links' VXLAN.
    pub address: Ipv4Addr,
    /// Names and globs (`*` matches any run of characters) of what runs on it.
    pub nodes: Vec<String>,
    /// The network namespace that holds its underlay interface (hosts emulated by
    /// namespaces; on a real host, absent: the host's own).
    #[serde(default)]
    pub netns: Option<String>,
    /// The underlay's MTU (default 1,500).
    #[serde(default)]
    pub mtu: Option<u32>,
}

impl Host {
    pub fn mtu(&self) -> u32 {
        self.mtu.unwrap_or(1500)
    }
}

/// Every namespace of a plan on its host.
#[derive(Debug, Clone)]
pub struct Placement {
    pub hosts: Vec<Host>,
    /// Per namespace of the plan: the index of its host.
    pub host_of: Vec<usize>,
}

/// The name a hosts file gives namespace `i`: its node's name, or the network's
/// (`internet`, `backbone`, `region/NAME`).
pub fn place_name(t: &anyedge_topology::Topology, plan: &Plan, i: usize) -> String {
    if let Some(n) = plan.nodes.iter().find(|n| n.ns == i) {
        return n.name.clone();
    }
    match plan.namespaces[i].role {
        Role::Internet => "internet".into(),
        Role::Backbone => "backbone".into(),
        Role::RegionNet(r) => format!("region/{}", t.regions[r].name),
        _ => plan.namespaces[i].name.clone(),
    }
}

/// Reads a hosts file and places every namespace of `plan` on one host: each name is
/// claimed by exactly one host, every host's pattern matches something, names are unique
/// and addresses distinct. Errors name the file and what is wrong.
pub fn load(path: &Path, t: &anyedge_topology::Topology, plan: &Plan) -> Result<Placement, SetupError> {
    let text = std::fs::read_to_string(path).at(path)?;
    parse(&path.display().to_string(), &text, t, plan)
}

pub fn parse(file: &str, text: &str, t: &anyedge_topology::Topology, plan: &Plan) -> Result<Placement, SetupError> {
    let bad = |why: String| SetupError::Hosts { file: file.to_string(), why };
    let f: HostsFile = marked_yaml::from_yaml(0, text).map_err(|e| bad(e.to_string()))?;
    if f.hosts.is_empty() {
        return Err(bad("hosts: at least one host".to_string()));
    }
    for (k, h) in f.hosts.iter().enumerate() {
        if h.name.is_empty() || crate::layout::sanitize(&h.name) != h.name {
            return Err(bad(format!("hosts[{k}]: name `{}`: letters, digits, `.`, `_`, `-`", h.name)));
        }
        if let Some(other) = f.hosts[..k].iter().find(|o| o.name == h.name || o.address == h.address) {
            return Err(bad(format!(
                "host `{}`: its name or address {} is host `{}`'s too",
                h.name, h.address, other.name
            )));
        }
        if let Some(mtu) = h.mtu.filter(|m| !(1280..=9216).contains(m)) {
            return Err(bad(format!("host `{}`: mtu {mtu}: 1280 to 9216", h.name)));
        }
    }
    let names: Vec<String> = (0..plan.namespaces.len()).map(|i| place_name(t, plan, i)).collect();
    let mut host_of = Vec::with_capacity(names.len());
    for name in &names {
        let claims: Vec<&Host> = f.hosts.iter().filter(|h| h.nodes.iter().any(|p| glob(p, name))).collect();
        match claims[..] {
            [] => return Err(bad(format!("`{name}` is on no host (every node and network needs one)"))),
            [h] => host_of.push(f.hosts.iter().position(|x| x.name == h.name).unwrap_or(0)),
            _ => {
                let hosts: Vec<&str> = claims.iter().map(|h| h.name.as_str()).collect();
                return Err(bad(format!("`{name}` is on more than one host: {}", hosts.join(", "))));
            }
        }
    }
    for h in &f.hosts {
        for p in &h.nodes {
            if !names.iter().any(|n| glob(p, n)) {
                return Err(bad(format!("host `{}`: `{p}` names nothing in the topology", h.name)));
            }
        }
    }
    Ok(Placement { hosts: f.hosts, host_of })
}

impl Placement {
    /// The host named `name`.
    pub fn host(&self, name: &str) -> Result<usize, SetupError> {
        self.hosts.iter().position(|h| h.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.hosts.iter().map(|h| h.name.as_str()).collect();
            SetupError::NoSuchHost { host: name.to_string(), hosts: names.join(", ") }
        })
    }

    /// The VXLAN link MTU between hosts `a` and `b`: the smaller underlay's less VXLAN.
    pub fn link_mtu(&self, a: usize, b: usize) -> u32 {
        self.hosts[a].mtu().min(self.hosts[b].mtu()) - VXLAN_OVERHEAD
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> (anyedge_topology::Topology, Plan) {
        let t =
            anyedge_topology::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies/small.yaml")).unwrap();
        let plan = Plan::new(&t);
        (t, plan)
    }

    const THREE: &str = "hosts:
  - { name: edge, address: 10.77.0.1, nodes: [internet, transit/*, client/*, pop/*] }
  - { name: core, address: 10.77.0.2, nodes: [backbone, region/*, clb/*] }
  - { name: dc,   address: 10.77.0.3, nodes: [backend/*], mtu: 9000 }
";

    #[test]
    fn globs_match_runs_of_characters() {
        assert!(glob("pop/*", "pop/paris") && glob("*", "x") && glob("clb/*/1", "clb/frankfurt/1"));
        assert!(!glob("pop/*", "transit/paris") && !glob("clb/*/1", "clb/frankfurt/2") && !glob("pop", "pop/paris"));
        assert!(glob("a*b*c", "aXbYc") && !glob("a*b*c", "aXcYb") && !glob("ab*ba", "aba"));
    }

    #[test]
    fn every_node_and_network_lands_on_the_host_that_claims_it() {
        let (t, plan) = small();
        let p = parse("hosts.yaml", THREE, &t, &plan).unwrap();
        for (i, &h) in p.host_of.iter().enumerate() {
            let name = place_name(&t, &plan, i);
            let want = if name.starts_with("backend/") {
                "dc"
            } else if name == "backbone" || name.starts_with("region/") || name.starts_with("clb/") {
                "core"
            } else {
                "edge"
            };
            assert_eq!(p.hosts[h].name, want, "{name}");
        }
        assert_eq!(p.link_mtu(0, 2), 1450, "the smaller underlay decides");
        assert_eq!(p.link_mtu(2, 2), 8950);
    }

    #[test]
    fn a_hosts_file_that_leaves_out_or_doubles_a_node_is_refused_naming_it() {
        let (t, plan) = small();
        let refused = |text: &str, want: &str| {
            let e = parse("hosts.yaml", text, &t, &plan).unwrap_err();
            assert!(matches!(e, SetupError::Hosts { ref file, .. } if file == "hosts.yaml"), "{e}");
            let e = e.to_string();
            assert!(e.starts_with("hosts.yaml: ") && e.contains(want), "want `{want}`: {e}");
        };
        refused(&THREE.replace(", pop/*]", "]"), "`pop/paris` is on no host");
        refused(&THREE.replace("[backend/*]", "[backend/*, clb/*]"), "is on more than one host: core, dc");
        refused(&THREE.replace("[backend/*]", "[backend/*, pop/atlantis]"), "`pop/atlantis` names nothing");
        refused(&THREE.replace("10.77.0.3", "10.77.0.2"), "host `dc`: its name or address 10.77.0.2 is host `core`'s");
        refused(&THREE.replace("mtu: 9000", "mtu: 90"), "host `dc`: mtu 90: 1280 to 9216");
        refused(&THREE.replace("address: 10.77.0.1", "address: ten"), "hosts[0].address: invalid IPv4 address syntax");
        refused(&THREE.replace("nodes: [backend/*]", "nodes: [backend/*], disk: 1"), "disk");
        refused("hosts: []", "at least one host");
    }
}
