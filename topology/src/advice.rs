//! Advice on a valid topology: combinations the format allows that a user most likely
//! did not mean. `anyedge validate` prints them as warnings; nothing refuses them.

use crate::{Listener, ListenerProtocol, Topology};

/// How a listener's backends learn who the client is, where it matters to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientNaming {
    /// The CLB writes X-Forwarded-For (and drops the client's own): `http`, `https`,
    /// `quic` speaking HTTP/3.
    WritesForwardedFor,
    /// The backend sees the CLB's address and the client's bytes unchanged, any
    /// X-Forwarded-For the client wrote included: `tcp-ssl`, `quic` relaying streams.
    PassesClientBytes,
}

/// What a listener does, of the two (a QUIC listener offering `h3` and another ALPN does both).
fn naming(l: &Listener) -> Vec<ClientNaming> {
    match l.protocol {
        ListenerProtocol::Http | ListenerProtocol::Https => vec![ClientNaming::WritesForwardedFor],
        ListenerProtocol::TcpSsl => vec![ClientNaming::PassesClientBytes],
        ListenerProtocol::Quic => {
            let h3 = l.alpn.is_empty() || l.alpn.iter().any(|a| a == "h3");
            let relays = l.alpn.iter().any(|a| a != "h3");
            let mut out = Vec::new();
            out.extend(h3.then_some(ClientNaming::WritesForwardedFor));
            out.extend(relays.then_some(ClientNaming::PassesClientBytes));
            out
        }
        ListenerProtocol::Tcp | ListenerProtocol::Udp => Vec::new(),
    }
}

/// `protocol PORT` as a user reads a listener.
fn shown(l: &Listener) -> String {
    format!("{} {}", l.protocol.name(), l.port)
}

/// Every piece of advice on `t`, one line each, naming the VIP, the backend group and
/// the listeners.
pub fn advice(t: &Topology) -> Vec<String> {
    let mut out = Vec::new();
    for vip in &t.vips {
        let groups = &t.regions[vip.home].backend_groups;
        for (gi, group) in groups.iter().enumerate() {
            let of_group: Vec<&Listener> = vip.listeners.iter().filter(|l| l.backend_group == gi).collect();
            let with = |n: ClientNaming| -> Vec<String> {
                of_group.iter().filter(|l| naming(l).contains(&n)).map(|l| shown(l)).collect()
            };
            let (writes, passes) = (with(ClientNaming::WritesForwardedFor), with(ClientNaming::PassesClientBytes));
            if !writes.is_empty() && !passes.is_empty() {
                out.push(format!(
                    "vips.{}: backend group `{}` is behind {} (the CLB writes X-Forwarded-For) and {} (the \
                     client's bytes pass unchanged, its own X-Forwarded-For included, from the CLB's address): \
                     a backend that trusts X-Forwarded-For from CLB addresses can be told any client address \
                     on {}; give those listeners another group, or read the TOA option there",
                    vip.name,
                    group.name,
                    writes.join(", "),
                    passes.join(", "),
                    passes.join(", ")
                ));
            }
        }
    }
    out.extend(unreachable_pops(t));
    out
}

/// With an AS-level internet, a POP without upstreams announces to nobody.
fn unreachable_pops(t: &Topology) -> impl Iterator<Item = String> + '_ {
    t.pops.iter().filter(|p| t.internet.has_ases() && p.bgp.upstreams.is_empty()).map(|p| {
        format!(
            "pops.{}: no `upstreams`, so the POP announces its VIPs to no network and no client reaches it; \
             name the transits it buys from or the IXPs it peers at",
            p.name
        )
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_group_behind_an_xff_writing_and_a_pass_through_listener_is_advised_against() {
        let small = include_str!("../../topologies/small.yaml");
        let both = small.replace(
            "      - { protocol: tcp, port: 443, scheduler: wrr, backends: web }",
            "      - { protocol: tcp, port: 443, scheduler: wrr, backends: web }\n      - { protocol: https, port: 8443, backends: web }\n      - { protocol: tcp-ssl, port: 9443, backends: web }",
        );
        let t = crate::parse_str("both.yaml", &both).unwrap();
        let advice = super::advice(&t);
        assert_eq!(advice.len(), 1, "{advice:?}");
        assert!(advice[0].contains("`web`") && advice[0].contains("https 8443") && advice[0].contains("tcp-ssl 9443"));
        // An HTTP/3 listener and a relaying one on the same group: the same.
        let quic = small.replace(
            "      - { protocol: tcp, port: 443, scheduler: wrr, backends: web }",
            "      - { protocol: tcp, port: 443, scheduler: wrr, backends: web }\n      - { protocol: quic, port: 4433, backends: web }\n      - { protocol: quic, port: 4435, backends: web, alpn: [anyedge-probe] }",
        );
        let advice = super::advice(&crate::parse_str("quic.yaml", &quic).unwrap());
        assert!(advice.len() == 1 && advice[0].contains("quic 4435"), "{advice:?}");
        // Layer 4 (the backend sees the client's own address) and layer 7 alone: nothing.
        let fine = small.replace(
            "      - { protocol: tcp, port: 443, scheduler: wrr, backends: web }",
            "      - { protocol: tcp, port: 443, scheduler: wrr, backends: web }\n      - { protocol: https, port: 8443, backends: web }",
        );
        assert!(super::advice(&crate::parse_str("fine.yaml", &fine).unwrap()).is_empty());
        assert!(super::advice(&crate::parse_str("small.yaml", small).unwrap()).is_empty());
    }

    #[test]
    fn a_pop_without_upstreams_in_an_as_level_internet_is_advised_against() {
        let file = include_str!("../../topologies/internet.yaml");
        assert!(super::advice(&crate::parse_str("internet.yaml", file).unwrap()).is_empty());
        let alone = file.replacen(", upstreams: [arelion, gtt] }", " }", 1);
        let advice = super::advice(&crate::parse_str("alone.yaml", &alone).unwrap());
        assert!(advice.len() == 1 && advice[0].starts_with("pops.warsaw: no `upstreams`"), "{advice:?}");
    }
}
