//! A topology's AS-level internet as the file writes it: what `anyedge generate
//! --internet` puts in the file it writes, so the drawn default internet can be read and
//! edited, and gives the same catchments read back.
//!
//! Written as: each network with its places (`CITY, CC`, quoted: the comma is YAML's
//! too), providers, peers (each pair once: one side naming the other is enough) and
//! client groups; access networks as `access-GROUP` (a file's names have no `/`); each
//! exchange with members by its name (`local-POP` for a local node's own); each POP's
//! `upstreams` and `communities`. An exchange with no member is left out, and so is a
//! POP's membership of it: nobody is reached through it.

use std::fmt::Write as _;

use crate::{Topology, Upstream};

/// The fields to add to each POP's line, and the `internet:` section.
#[derive(Debug, Clone, PartialEq)]
pub struct InternetText {
    /// Per POP: `, upstreams: [...]` and `, communities: [...]` as they apply (may be empty).
    pub pop_fields: Vec<String>,
    /// `internet:` and what it holds, ending in a newline.
    pub section: String,
}

/// A network's name as a file may write it.
fn file_name(name: &str) -> String {
    name.replace('/', "-")
}

/// `t`'s AS-level internet as text (`t.internet.has_ases()`).
pub fn internet_text(t: &Topology) -> InternetText {
    let nets = &t.internet.ases;
    let ixps: Vec<usize> = (0..t.internet.ixps.len()).filter(|&x| !t.internet.ixps[x].members.is_empty()).collect();
    let pop_fields = t
        .pops
        .iter()
        .map(|pop| {
            let upstreams: Vec<String> = pop
                .bgp
                .upstreams
                .iter()
                .filter_map(|u| match *u {
                    Upstream::As(a) => Some(file_name(&nets[a].name)),
                    Upstream::Ixp(x) => {
                        ixps.contains(&x).then(|| format!("ixp/{}", file_name(&t.internet.ixps[x].name)))
                    }
                })
                .collect();
            let mut out = String::new();
            if !upstreams.is_empty() {
                let _ = write!(out, ", upstreams: [{}]", upstreams.join(", "));
            }
            if pop.bgp.levers.no_export {
                out.push_str(", communities: [no-export]");
            }
            out
        })
        .collect();
    let mut section = String::from("internet:\n");
    if t.internet.last_mile_source == crate::default_internet::LAST_MILE_FITTED {
        let _ = writeln!(section, "  last_mile: {}us", t.internet.last_mile_ns / 1_000);
    }
    section.push_str("  ases:\n");
    for (a, net) in nets.iter().enumerate() {
        let mut fields = vec![format!("name: {}", file_name(&net.name)), format!("asn: {}", net.asn)];
        let list = |items: Vec<String>| format!("[{}]", items.join(", "));
        if !net.at.is_empty() {
            fields.push(format!("at: {}", list(net.at.iter().map(|p| format!("\"{}\"", p.name)).collect())));
        }
        if !net.providers.is_empty() {
            fields.push(format!(
                "providers: {}",
                list(net.providers.iter().map(|&p| file_name(&nets[p].name)).collect())
            ));
        }
        let peers: Vec<String> = net.peers.iter().filter(|&&p| p > a).map(|&p| file_name(&nets[p].name)).collect();
        if !peers.is_empty() {
            fields.push(format!("peers: {}", list(peers)));
        }
        if !net.clients.is_empty() {
            fields.push(format!("clients: {}", list(net.clients.iter().map(|&g| t.clients[g].name.clone()).collect())));
        }
        if let Some(ns) = net.last_mile_ns {
            fields.push(format!("last_mile: {}us", ns / 1_000));
        }
        let _ = writeln!(section, "    - {{ {} }}", fields.join(", "));
    }
    if !ixps.is_empty() {
        section.push_str("  ixps:\n");
    }
    for &x in &ixps {
        let ixp = &t.internet.ixps[x];
        let members: Vec<String> = ixp.members.iter().map(|&m| file_name(&nets[m].name)).collect();
        let at = match t.pops.iter().find(|p| p.location == ixp.at.location && p.name == ixp.at.name) {
            Some(p) => format!("pop/{}", p.name),
            None => format!("\"{}\"", ixp.at.name),
        };
        let _ = writeln!(
            section,
            "    - {{ name: {}, at: {at}, members: [{}] }}",
            file_name(&ixp.name),
            members.join(", ")
        );
    }
    InternetText { pop_fields, section }
}
