//! VIPs: where each is published, its listeners, their schedulers and persistence.

use super::*;

impl Parser {
    pub(super) fn vips(&mut self, top: &Obj<'_>, names: &Names<'_>) -> Vec<Vip> {
        let objs = self.list_of_objs(top, "vips", "vip");
        let mut vips = Vec::new();
        let mut seen = Vec::new();
        for o in &objs {
            let name = self.name(o);
            let ipv4 =
                self.req(o, "ipv4").and_then(|n| self.parsed::<Ipv4Addr>(n, &o.field("ipv4"), "an IPv4 address"));
            if let (Some(ip), Some(n)) = (ipv4, o.get("ipv4")) {
                let kind = if ip.is_loopback() {
                    Some("loopback")
                } else if ip.is_unspecified() {
                    Some("unspecified")
                } else if ip.is_multicast() {
                    Some("multicast")
                } else if ip.is_broadcast() {
                    Some("broadcast")
                } else if ip.is_link_local() {
                    Some("link-local")
                } else {
                    None
                };
                if let Some(kind) = kind {
                    self.err(n.span(), &o.field("ipv4"), format!("{ip} is not a routable unicast address ({kind})"));
                }
                let backend = names
                    .regions
                    .iter()
                    .flat_map(|r| &r.backend_groups)
                    .flat_map(|g| &g.backends)
                    .find(|b| b.addr.ip() == IpAddr::V4(ip));
                if let Some(b) = backend {
                    self.err(
                        n.span(),
                        &o.field("ipv4"),
                        format!("{ip} is also a backend ({}): a VIP needs an address of its own", b.addr),
                    );
                }
            }
            let ipv6 = match o.get("ipv6") {
                Some(n) => self.parsed::<Ipv6Addr>(n, &o.field("ipv6"), "an IPv6 address"),
                None => None,
            };
            let home = self.req(o, "home").and_then(|n| {
                let region = self.str(n, &o.field("home"))?;
                let i = names.regions.iter().position(|r| r.name == region);
                if i.is_none() {
                    self.err(n.span(), &o.field("home"), format!("unknown region `{region}`"));
                }
                i
            });
            let pops = self.publish_set(o, names).unwrap_or_default();
            let listeners = self.listeners(o, home.map(|h| &names.regions[h]));
            // Kept even when a field is wrong (the error is recorded and the file fails),
            // so references to this VIP do not add errors of their own.
            if let Some(name) = name {
                seen.push((name.clone(), o.map.span(), o.field("name")));
                let ipv4 = ipv4.unwrap_or(Ipv4Addr::UNSPECIFIED);
                let (hosts, certificates) = (self.hosts(o), self.certificates(o));
                vips.push(Vip {
                    name,
                    ipv4,
                    ipv6,
                    home: home.unwrap_or(0),
                    pops,
                    listeners,
                    hosts,
                    certificates,
                    announce: Default::default(),
                });
            }
        }
        self.unique(&seen);
        vips
    }

    /// A VIP's `hosts:`, DNS names, lower-case.
    fn hosts(&mut self, o: &Obj<'_>) -> Vec<String> {
        let Some(n) = o.get("hosts") else { return Vec::new() };
        let field = o.field("hosts");
        let Some(items) = self.seq(n, &field) else { return Vec::new() };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = format!("{field}[{i}]");
            let Some(host) = self.str(item, &at) else { continue };
            if is_host_name(host) {
                out.push(host.to_ascii_lowercase());
            } else {
                self.err(
                    item.span(),
                    &at,
                    format!("`{host}` is not a DNS name (labels of letters, digits and -, two or more)"),
                );
            }
        }
        out
    }

    /// A VIP's `certificates:`, each a chain and a key file.
    fn certificates(&mut self, o: &Obj<'_>) -> Vec<OwnCertificate> {
        if o.get("certificates").is_none() {
            return Vec::new();
        }
        let objs = self.list_of_objs(o, "certificates", "certificate");
        let mut out = Vec::new();
        for c in &objs {
            let file = |p: &mut Self, key: &str| {
                p.req(c, key).and_then(|n| p.str(n, &c.field(key)).map(std::path::PathBuf::from))
            };
            if let (Some(chain), Some(key)) = (file(self, "chain"), file(self, "key")) {
                out.push(OwnCertificate { chain, key });
            }
        }
        out
    }

    pub(super) fn publish_set(&mut self, o: &Obj<'_>, names: &Names<'_>) -> Option<Vec<usize>> {
        let field = o.field("pops");
        let node = self.req(o, "pops")?;
        if let Some(s) = node.as_scalar() {
            if s.as_str() == "all" {
                return Some((0..names.pops.len()).collect());
            }
            self.err(node.span(), &field, "expected `all` or a list of POP names");
            return None;
        }
        let seq = self.seq(node, &field)?;
        let mut out = Vec::new();
        for (i, n) in seq.iter().enumerate() {
            if let Some(p) = self.pop_ref(n, &format!("{field}[{i}]"), names) {
                out.push(p);
            }
        }
        if out.is_empty() && !seq.is_empty() {
            return None;
        }
        if seq.is_empty() {
            self.err(node.span(), &field, "a VIP must be published at one POP at least");
            return None;
        }
        Some(out)
    }

    pub(super) fn listeners(&mut self, vip: &Obj<'_>, home: Option<&Region>) -> Vec<Listener> {
        let objs = self.list_of_objs(vip, "listeners", "listener");
        let mut out: Vec<Listener> = Vec::new();
        // Without an ipv6 address, a VIP never reaches IPv6 backends (no NAT46).
        let v4_only = vip.get("ipv6").is_none();
        for o in &objs {
            let Some(l) = self.listener(o, home) else { continue };
            if v4_only
                && let (Some(region), Some(n)) = (home, o.get("backends"))
                && let Some(b) = region
                    .backend_groups
                    .get(l.backend_group)
                    .and_then(|g| g.backends.iter().find(|b| b.addr.is_ipv6()))
            {
                let reason = format!(
                    "backend {} is IPv6 and this VIP has no ipv6 address: it would never be reached (give the VIP an ipv6 address)",
                    b.addr
                );
                self.err(n.span(), &o.field("backends"), reason);
            }
            let clash = out.iter().position(|x| x.port == l.port && x.protocol.transport() == l.protocol.transport());
            if let Some(j) = clash {
                let span = o.get("port").map_or(o.map.span(), |n| n.span());
                let space = match l.protocol.transport() {
                    anyedge_proto::Transport::Tcp => "TCP, TCP SSL, HTTP and HTTPS listeners share one port space",
                    anyedge_proto::Transport::Udp => "UDP and QUIC listeners share one port space",
                };
                let reason = format!("port {} is already used by {}.listeners[{j}] ({space})", l.port, vip.path);
                self.err(span, &o.field("port"), reason);
                continue;
            }
            out.push(l);
        }
        for o in &objs {
            self.check_alt_svc(o, &out);
        }
        out
    }

    /// An `alt_svc` written out on an https listener names the VIP's HTTP/3 on its port:
    /// a VIP without an `h3` quic listener there has none to name.
    fn check_alt_svc(&mut self, o: &Obj<'_>, listeners: &[Listener]) {
        let Some(n) = o.get("alt_svc") else { return };
        let port = o.get("port").and_then(|p| p.as_scalar()).and_then(|p| p.as_str().parse::<u16>().ok());
        let https = o.get("protocol").and_then(|p| p.as_scalar()).is_some_and(|p| p.as_str() == "https");
        let off = n.as_scalar().is_some_and(|v| v.as_str() == "off");
        let Some(port) = port.filter(|_| https && !off) else { return };
        if !crate::serves_h3(listeners, port) {
            let reason = format!(
                "no quic listener of this VIP offers h3 on port {port}: nothing to name (add one, or drop alt_svc)"
            );
            self.err(n.span(), &o.field("alt_svc"), reason);
        }
    }

    /// A listener with protocol and port; other fields fall back after recording an error.
    pub(super) fn listener(&mut self, o: &Obj<'_>, home: Option<&Region>) -> Option<Listener> {
        let protocol = self.req(o, "protocol").and_then(|n| {
            let p = self.str(n, &o.field("protocol"))?;
            let proto = match p {
                "tcp" => ListenerProtocol::Tcp,
                "udp" => ListenerProtocol::Udp,
                "tcp-ssl" => ListenerProtocol::TcpSsl,
                "quic" => ListenerProtocol::Quic,
                "http" => ListenerProtocol::Http,
                "https" => ListenerProtocol::Https,
                other => {
                    self.err(
                        n.span(),
                        &o.field("protocol"),
                        format!("`{other}` is not one of tcp, udp, tcp-ssl, quic, http, https"),
                    );
                    return None;
                }
            };
            Some(proto)
        });
        let port = self.req(o, "port").and_then(|n| self.port(n, &o.field("port")));
        let scheduler = self.scheduler(o);
        let backend_group = self.req(o, "backends").and_then(|n| {
            let g = self.str(n, &o.field("backends"))?;
            let home = home?;
            let i = home.backend_groups.iter().position(|x| x.name == g);
            if i.is_none() {
                self.err(
                    n.span(),
                    &o.field("backends"),
                    format!("unknown backend group `{g}` in region `{}`", home.name),
                );
            }
            i
        });
        let persistence_ns = match o.get("persistence") {
            None => Some(None),
            Some(n) => self.persistence(n, &o.field("persistence"), protocol, scheduler),
        };
        if protocol == Some(ListenerProtocol::Quic)
            && let Some(Scheduler::Hash { .. } | Scheduler::Maglev { .. }) = scheduler
            && let Some(n) = o.get("scheduler")
        {
            let reason = format!("QUIC listeners schedule with {}", QUIC_SCHEDULERS.join(" or "));
            self.err(n.span(), &o.field("scheduler"), reason);
        }
        // QUIC listeners take IPv4 and IPv6-NAT64 VIPs: their backends are IPv4.
        if protocol == Some(ListenerProtocol::Quic)
            && let (Some(g), Some(home)) = (backend_group, home)
            && let Some(b) = home.backend_groups[g].backends.iter().find(|b| b.addr.is_ipv6())
            && let Some(n) = o.get("backends")
        {
            let reason = format!("QUIC listeners reach IPv4 backends only (IPv4 or NAT64 VIPs), not {}", b.addr);
            self.err(n.span(), &o.field("backends"), reason);
        }
        let mtls = match o.get("mtls") {
            None => schema::default_of("listener", "mtls", schema::Field::default_bool),
            Some(n) => {
                let on = self.parsed::<bool>(n, &o.field("mtls"), "true or false").unwrap_or(false);
                if on && protocol.is_some_and(|p| !(p.has_tls() || p == ListenerProtocol::Quic)) {
                    let reason = "mutual TLS needs a listener that terminates TLS (https, tcp-ssl or quic)";
                    self.err(n.span(), &o.field("mtls"), reason);
                }
                on
            }
        };
        let alpn = self.alpn(o, protocol);
        let alt_svc_ns = self.alt_svc(o, protocol);
        Some(Listener {
            protocol: protocol?,
            port: port?,
            scheduler: scheduler.unwrap_or(Scheduler::Wrr),
            backend_group: backend_group.unwrap_or(0),
            persistence_ns: persistence_ns.flatten(),
            mtls,
            alpn,
            alt_svc_ns,
        })
    }

    /// An HTTPS listener's `alt_svc` (default 24h; `off`); other listeners have none, and
    /// saying one is refused. Whether the VIP serves HTTP/3 on the port is checked with
    /// the VIP's listeners all read ([`Parser::check_alt_svc`]).
    fn alt_svc(&mut self, o: &Obj<'_>, protocol: Option<ListenerProtocol>) -> Option<u64> {
        let https = protocol == Some(ListenerProtocol::Https);
        let default = schema::default_of("listener", "alt_svc", schema::Field::default_ns);
        let Some(n) = o.get("alt_svc") else { return https.then_some(default) };
        if protocol.is_some() && !https {
            self.err(
                n.span(),
                &o.field("alt_svc"),
                "Alt-Svc is an https listener's (it names the HTTP/3 a quic listener serves)",
            );
            return None;
        }
        if n.as_scalar().is_some_and(|v| v.as_str() == "off") {
            return None;
        }
        self.duration_within(o, "alt_svc", default, 1_000_000_000, 365 * 24 * 3_600 * 1_000_000_000)
    }

    /// A QUIC listener's ALPN offer (default `[h3]`); other listeners have none, and
    /// saying one is refused.
    fn alpn(&mut self, o: &Obj<'_>, protocol: Option<ListenerProtocol>) -> Vec<String> {
        let quic = protocol == Some(ListenerProtocol::Quic);
        let Some(n) = o.get("alpn") else {
            return if quic { schema::default_of("listener", "alpn", schema::Field::default_strs) } else { Vec::new() };
        };
        let field = o.field("alpn");
        if protocol.is_some() && !quic {
            self.err(n.span(), &field, "ALPN is a quic listener's (https offers h2 and http/1.1 by itself)");
            return Vec::new();
        }
        let Some(items) = self.seq(n, &field) else { return Vec::new() };
        if items.is_empty() {
            self.err(n.span(), &field, "an empty offer refuses every client: say at least one protocol (h3)");
        }
        let mut out: Vec<String> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = format!("{field}[{i}]");
            let Some(id) = self.str(item, &at) else { continue };
            if !(1..=255).contains(&id.len()) || !id.bytes().all(|b| b.is_ascii_graphic()) {
                self.err(
                    item.span(),
                    &at,
                    format!("`{id}` is not an ALPN protocol ID (1–255 printable ASCII characters, no spaces)"),
                );
            } else if out.iter().any(|p| p == id) {
                self.err(item.span(), &at, format!("`{id}` is offered twice"));
            } else {
                out.push(id.to_string());
            }
        }
        out
    }

    pub(super) fn scheduler(&mut self, o: &Obj<'_>) -> Option<Scheduler> {
        let table = match o.get("table") {
            Some(n) => {
                let t = self.int_field(o, "table")? as usize;
                if !is_prime(t) {
                    self.err(
                        n.span(),
                        &o.field("table"),
                        format!("{t} is not prime (Maglev needs a prime table size)"),
                    );
                    return None;
                }
                Some(t)
            }
            None => None,
        };
        let scheduler = match o.get("scheduler") {
            None => Scheduler::Wrr,
            Some(n) => match self.str(n, &o.field("scheduler"))? {
                "wrr" => Scheduler::Wrr,
                "wlc" => Scheduler::Wlc,
                "hash" => Scheduler::Hash { table_size: table.unwrap_or(MAGLEV_TABLE_DEFAULT) },
                "maglev" => Scheduler::Maglev { table_size: table.unwrap_or(MAGLEV_TABLE_DEFAULT) },
                other => {
                    self.err(
                        n.span(),
                        &o.field("scheduler"),
                        format!("`{other}` is not one of {}", SCHEDULERS.join(", ")),
                    );
                    return None;
                }
            },
        };
        if let (Some(n), Scheduler::Wrr | Scheduler::Wlc) = (o.get("table"), scheduler) {
            self.err(n.span(), &o.field("table"), "a lookup table applies only to the maglev and hash schedulers");
            return None;
        }
        Some(scheduler)
    }

    pub(super) fn persistence(
        &mut self,
        n: &Node,
        field: &str,
        protocol: Option<ListenerProtocol>,
        scheduler: Option<Scheduler>,
    ) -> Option<Option<u64>> {
        let ttl = self.duration(n, field)?;
        if !(30 * S..=3600 * S).contains(&ttl) {
            let text = n.as_scalar().map_or("", |s| s.as_str()).to_string();
            self.err(n.span(), field, format!("{text} is outside 30s–3600s"));
            return None;
        }
        if protocol == Some(ListenerProtocol::Quic) {
            self.err(n.span(), field, "session persistence is not available on QUIC listeners");
            return None;
        }
        if scheduler.is_some_and(|s| s != Scheduler::Wrr) {
            self.err(n.span(), field, "session persistence works only with the wrr scheduler");
            return None;
        }
        Some(Some(ttl))
    }
}

/// Whether `host` is a DNS name as [`schema::HOST_NAME`] says: two labels or more, each
/// of 1–63 letters, digits and `-` (not first or last), 253 characters at most.
fn is_host_name(host: &str) -> bool {
    let label = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    host.len() <= 253 && host.split('.').count() >= 2 && host.split('.').all(label)
}
