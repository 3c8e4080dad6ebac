//! BIRD's control socket: commands, and what `show protocols` and `show route all` say
//! (sessions and the routes to each VIP).

use std::path::Path;
use std::time::Duration;

use anyedge_topology::Topology;
use anyedge_topology::bgp::{CDN_ASN, transit_asn};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::BirdError;
use crate::error::Doing;
use crate::plan::PlanGap;

/// One command over BIRD's control socket; its reply, without the reply codes. BIRD's
/// replies are lines `CODE-text` (more follow), ` text` (continuation) and `CODE text`
/// (the last); codes 8000 and up are errors.
pub async fn command(socket: &Path, cmd: &str) -> Result<String, BirdError> {
    let run = async {
        let stream = tokio::net::UnixStream::connect(socket).await.at(socket)?;
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        // The greeting: `0001 BIRD 2.0.12 ready.`
        lines.next_line().await.at(socket)?;
        write.write_all(format!("{cmd}\n").as_bytes()).await.at(socket)?;
        let mut reply = String::new();
        while let Some(line) = lines.next_line().await.at(socket)? {
            let (code, sep, text) = split_reply(&line);
            if code.is_some_and(|c| c >= 8000) {
                return Err(BirdError::Said(text.trim().to_string()));
            }
            reply.push_str(text);
            reply.push('\n');
            if code.is_some() && sep == ' ' {
                break;
            }
        }
        Ok(reply)
    };
    let silent = || BirdError::Silent { socket: socket.to_path_buf(), seconds: 2 };
    tokio::time::timeout(Duration::from_secs(2), run).await.map_err(|_| silent())?
}

/// `CODE-text`, `CODE text` or ` text`: the code, the separator and the text.
fn split_reply(line: &str) -> (Option<u32>, char, &str) {
    let b = line.as_bytes();
    if b.len() >= 5 && b[..4].iter().all(u8::is_ascii_digit) && (b[4] == b'-' || b[4] == b' ') {
        (line[..4].parse().ok(), b[4] as char, &line[5..])
    } else {
        (None, '-', line.strip_prefix(' ').unwrap_or(line))
    }
}

/// A BGP session as `show protocols` lists it (and, from `show protocols all`, the
/// prefixes it carries).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Session {
    pub name: String,
    /// BIRD's state (`up`, `start`, `down`) and the BGP state (`Established`, `Active`…).
    pub state: String,
    pub bgp: String,
    /// When it entered its state (BIRD's time format).
    pub since: String,
    /// Prefixes learned from the peer and announced to it (`show protocols all` only).
    pub imported: u64,
    pub exported: u64,
}

/// The BGP sessions out of `show protocols` or `show protocols all`: a protocol's line
/// starts unindented; `all` adds indented details, among them `Routes: N imported, …,
/// M exported` per channel.
pub fn sessions(show_protocols: &str) -> Vec<Session> {
    let mut out: Vec<Session> = Vec::new();
    let mut in_bgp = false;
    for l in show_protocols.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if !l.starts_with(char::is_whitespace) {
            in_bgp = f.len() >= 5 && f[1] == "BGP";
            if in_bgp {
                out.push(Session {
                    name: f[0].to_string(),
                    state: f[3].to_string(),
                    since: f[4].to_string(),
                    bgp: f.get(5).map_or(String::new(), |s| s.to_string()),
                    imported: 0,
                    exported: 0,
                });
            }
        } else if let (true, Some(session), Some(&"Routes:")) = (in_bgp, out.last_mut(), f.first()) {
            let count = |what: &str| {
                f.windows(2).find(|w| w[1].trim_end_matches(',') == what).and_then(|w| w[0].parse::<u64>().ok())
            };
            session.imported += count("imported").unwrap_or(0);
            session.exported += count("exported").unwrap_or(0);
        }
    }
    out
}

/// A route as `show route all` lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Route {
    pub prefix: String,
    /// The protocol (session) it came from.
    pub from: String,
    pub via: String,
    pub as_path: Vec<u32>,
    pub med: Option<u32>,
    /// The route BGP selected (and the kernel forwards by).
    pub best: bool,
    /// The POP that announced it (`pop/NAME`), from its AS path.
    pub pop: Option<String>,
}

/// The routes out of `show route all`; `own` is the POP a one-AS path (the CDN's alone)
/// comes from, for a transit (its own POP) or a POP (itself).
pub fn routes(t: &Topology, own: usize, show_route_all: &str) -> Vec<Route> {
    let mut out: Vec<Route> = Vec::new();
    let mut prefix = String::new();
    for line in show_route_all.lines() {
        if let Some(at) = line.find(" [") {
            let head = &line[..at];
            if !line.starts_with(char::is_whitespace) {
                prefix = head.split_whitespace().next().unwrap_or_default().to_string();
            }
            let from = line[at + 2..].split_whitespace().next().unwrap_or_default().to_string();
            let best = line.contains("] * (");
            out.push(Route {
                prefix: prefix.clone(),
                from,
                via: String::new(),
                as_path: Vec::new(),
                med: None,
                best,
                pop: None,
            });
            continue;
        }
        let Some(r) = out.last_mut() else { continue };
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("via ") {
            r.via = rest.split_whitespace().next().unwrap_or_default().to_string();
        } else if let Some(rest) = l.strip_prefix("BGP.as_path:") {
            r.as_path = rest.split_whitespace().filter_map(|a| a.parse().ok()).collect();
            // The POP's transit is the AS just before the POPs' own at the path's end
            // (a route re-exported by a third transit has that one first).
            let p = match r.as_path[..] {
                [CDN_ASN] => Some(own),
                [.., last_transit, CDN_ASN] => (last_transit.checked_sub(transit_asn(0))).map(|p| p as usize),
                _ => None,
            };
            r.pop = p.filter(|&p| p < t.pops.len()).map(|p| format!("pop/{}", t.pops[p].name));
        } else if let Some(rest) = l.strip_prefix("BGP.med:") {
            r.med = rest.trim().parse().ok();
        }
    }
    out
}

/// A node's routes for every VIP prefix (`anyedge lab bgp`), from its speaker.
pub async fn vip_routes(t: &Topology, own: usize, socket: &Path) -> Result<Vec<Route>, BirdError> {
    table_routes(t, own, socket, None).await
}

/// Client group `g`'s routes for every VIP prefix at its transit: its own table when the
/// file gives it a `catchment:` list, else the transit's.
pub async fn group_routes(t: &Topology, g: usize, socket: &Path) -> Result<Vec<Route>, BirdError> {
    let own = anyedge_topology::bgp::attach(t, g).ok_or(PlanGap("a group with no POP to attach to"))?;
    table_routes(t, own, socket, t.clients[g].catchment.as_ref().map(|_| g)).await
}

async fn table_routes(t: &Topology, own: usize, socket: &Path, group: Option<usize>) -> Result<Vec<Route>, BirdError> {
    let mut all = Vec::new();
    for v in &t.vips {
        let prefixes = std::iter::once((format!("{}/32", v.ipv4), 4)).chain(v.ipv6.map(|a| (format!("{a}/128"), 6)));
        for (prefix, family) in prefixes {
            let table = group.map_or(String::new(), |g| format!(" table g{g}_{family}"));
            let text = command(socket, &format!("show route all{table} for {prefix}")).await?;
            all.extend(routes(t, own, &text).into_iter().filter(|r| r.prefix == prefix));
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bird::{pop_config, transit_config};
    use crate::plan::Plan;

    #[test]
    fn a_transit_takes_from_its_pop_only_the_vips_that_pop_publishes_over_ttl_security() {
        // reference.yaml: `edge` (198.18.0.20) on every POP, `api` (198.18.0.30) on paris.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies/reference.yaml");
        let t = anyedge_topology::load(&path).unwrap();
        let plan = Plan::new(&t);
        let session = |x: usize| {
            let config = transit_config(&t, &plan, x).unwrap();
            config.lines().find(|l| l.starts_with("protocol bgp pop4")).unwrap().to_string()
        };
        let (paris, warsaw) = (session(0), session(1));
        assert!(paris.contains("198.18.0.20/32") && paris.contains("198.18.0.30/32"), "{paris}");
        assert!(warsaw.contains("198.18.0.20/32") && !warsaw.contains("198.18.0.30"), "{warsaw}");
        assert!(paris.contains("ttl security yes") && warsaw.contains("ttl security yes"));
        let pop = pop_config(&t, &plan, 1).unwrap();
        assert!(pop.lines().filter(|l| l.starts_with("protocol bgp")).all(|l| l.contains("ttl security yes")), "{pop}");
    }

    #[test]
    fn reply_lines_split_into_code_and_text() {
        assert_eq!(split_reply("0001 BIRD 2.0.12 ready."), (Some(1), ' ', "BIRD 2.0.12 ready."));
        assert_eq!(split_reply("2002-Name       Proto"), (Some(2002), '-', "Name       Proto"));
        assert_eq!(split_reply(" continued"), (None, '-', "continued"));
        assert_eq!(split_reply("8001 Protocol not found"), (Some(8001), ' ', "Protocol not found"));
    }

    #[test]
    fn routes_come_from_show_route_all_with_the_pop_that_announced_them() {
        let t = anyedge_topology::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../topologies/small.yaml"
        )))
        .unwrap();
        // A second route of the same prefix is indented to the header's width.
        let text = [
            "Table master4:",
            "198.18.0.20/32       unicast [pop4 21:09:00.498] * (100) [AS64500i]",
            "\tvia 198.18.128.14 on l3",
            "\tBGP.as_path: 64500",
            "\tBGP.med: 0",
            "                     unicast [t1_4 21:09:00.546] (100) [AS64500i]",
            "\tvia 198.18.128.30 on l7",
            "\tBGP.as_path: 4200000001 64500",
            "\tBGP.med: 26770",
        ]
        .join("\n");
        let r = routes(&t, 0, &text);
        assert_eq!(r.len(), 2);
        assert!(r[0].best && !r[1].best);
        assert_eq!((r[0].pop.as_deref(), r[1].pop.as_deref()), (Some("pop/paris"), Some("pop/warsaw")));
        assert_eq!((r[1].via.as_str(), r[1].med, r[1].from.as_str()), ("198.18.128.30", Some(26770), "t1_4"));
        assert_eq!(r[1].prefix, "198.18.0.20/32");
    }

    #[test]
    fn sessions_come_from_show_protocols() {
        let text = "Name       Proto      Table      State  Since         Info\n\
device1    Device     ---        up     12:00:00.000  \n\
pop4       BGP        ---        up     12:00:01.000  Established   \n\
t1_4       BGP        ---        start  12:00:01.000  Active        Socket: Connection refused\n";
        let s = sessions(text);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].name.as_str(), s[0].state.as_str(), s[0].bgp.as_str()), ("pop4", "up", "Established"));
        assert_eq!((s[1].name.as_str(), s[1].bgp.as_str()), ("t1_4", "Active"));
    }

    #[test]
    fn show_protocols_all_adds_each_sessions_prefix_counts() {
        // As BIRD 2.0.12 answers on its control socket (one leading space stripped).
        let text = "Name       Proto      Table      State  Since         Info\n\
vip4_0     Static     master4    up     06:35:15.875  \n \
 Channel ipv4\n    Routes:         1 imported, 0 exported, 1 preferred\n\
transit4   BGP        ---        up     06:35:16.681  Established   \n \
 BGP state:          Established\n    Neighbor AS:      4200000000\n \
 Channel ipv4\n    State:          UP\n    Routes:         0 imported, 1 exported, 0 preferred\n\
t2_4       BGP        ---        up     06:35:16.700  Established   \n \
 Channel ipv4\n    Routes:         2 imported, 1 filtered, 3 exported, 1 preferred\n";
        let s = sessions(text);
        assert_eq!(s.len(), 2, "the static protocol is no session: {s:?}");
        assert_eq!((s[0].name.as_str(), s[0].imported, s[0].exported), ("transit4", 0, 1));
        assert_eq!((s[1].name.as_str(), s[1].imported, s[1].exported), ("t2_4", 2, 3));
    }
}
