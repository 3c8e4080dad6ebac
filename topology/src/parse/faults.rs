//! Faults over simulated time: targets, node and link faults, and the control plane's
//! (partitions, heals, weights written through Raft).

use super::*;

impl Parser {
    /// `pop/NAME`, `region/NAME`, `clb/REGION/N` or `backend/IP:PORT`.
    pub(super) fn target(&mut self, node: &Node, field: &str, names: &Names<'_>) -> Option<Target> {
        let text = self.str(node, field)?;
        let (kind, rest) = text.split_once('/').unwrap_or((text, ""));
        let found = match kind {
            "pop" => names.pops.iter().position(|p| p.name == rest).map(Target::Pop),
            "region" => names.regions.iter().position(|r| r.name == rest).map(Target::Region),
            "clb" => {
                let (region, number) = rest.rsplit_once('/').unwrap_or((rest, ""));
                let Ok(number) = number.parse::<u16>() else {
                    self.err(node.span(), field, format!("`{text}` is not clb/REGION/N"));
                    return None;
                };
                let r = names.regions.iter().position(|r| r.name == region);
                if let Some(r) = r.filter(|&r| !(1..=names.regions[r].clb_nodes).contains(&number)) {
                    let n = names.regions[r].clb_nodes;
                    let reason = format!(
                        "`{text}`: CLB nodes are numbered from 1, like control nodes: clb/{region}/1 … clb/{region}/{n}"
                    );
                    self.err(node.span(), field, reason);
                    return None;
                }
                r.map(|region| Target::Clb { region, index: number - 1 })
            }
            "backend" => {
                let Ok(addr) = rest.parse::<SocketAddr>() else {
                    self.err(node.span(), field, format!("`{rest}` is not IP:PORT"));
                    return None;
                };
                names
                    .regions
                    .iter()
                    .position(|r| r.backend_groups.iter().any(|g| g.backends.iter().any(|b| b.addr == addr)))
                    .map(|region| Target::Backend { region, addr })
            }
            "control" => match rest.parse::<u8>() {
                Ok(n) if (1..=names.control_nodes).contains(&n) => Some(Target::Control(n)),
                _ if names.control_nodes == 0 => {
                    self.err(node.span(), field, format!("`{text}`: the file has no `control:` section"));
                    return None;
                }
                _ => {
                    let reason = format!("`{text}` is not control/1 … control/{}", names.control_nodes);
                    self.err(node.span(), field, reason);
                    return None;
                }
            },
            _ => {
                let reason =
                    format!("`{text}` is not pop/NAME, region/NAME, clb/REGION/N, backend/IP:PORT or control/N");
                self.err(node.span(), field, reason);
                return None;
            }
        };
        if found.is_none() {
            self.err(node.span(), field, format!("unknown fault target `{text}`"));
        }
        found
    }

    pub(super) fn faults(
        &mut self,
        top: &Obj<'_>,
        names: &Names<'_>,
        clients: &[String],
        duration_ns: u64,
    ) -> Vec<Fault> {
        let Some(node) = top.get("faults").filter(|n| !is_null(n)) else { return vec![] };
        let Some(seq) = self.seq(node, "faults") else {
            return vec![];
        };
        let mut out = Vec::new();
        for (i, item) in seq.iter().enumerate() {
            let Some(o) = self.obj(item, &format!("faults[{i}]"), "fault") else {
                continue;
            };
            if let Some(f) = self.fault(&o, names, clients, duration_ns) {
                out.push(f);
            }
        }
        out.sort_by_key(|f| f.at_ns);
        out
    }

    pub(super) fn fault(
        &mut self,
        o: &Obj<'_>,
        names: &Names<'_>,
        clients: &[String],
        duration_ns: u64,
    ) -> Option<Fault> {
        let at_node = self.req(o, "at")?;
        let at_ns = self.duration(at_node, &o.field("at"))?;
        if at_ns >= duration_ns {
            self.err(at_node.span(), &o.field("at"), "is at or after the end of the simulation (duration)");
            return None;
        }
        let all_kinds = &crate::schema::object("fault").exactly_one;
        let kinds: Vec<&str> = all_kinds.iter().copied().filter(|k| o.get(k).is_some()).collect();
        if kinds.len() != 1 {
            self.err(o.map.span(), &o.path, format!("a fault needs exactly one of {}", all_kinds.join(", ")));
            return None;
        }
        let key = kinds[0];
        let node = o.get(key)?;
        let field = o.field(key);
        if key == "migrate" {
            let text = self.str(node, &field)?;
            let group = text.strip_prefix("client/").and_then(|g| clients.iter().position(|c| c == g));
            let Some(group) = group else {
                self.err(node.span(), &field, format!("`{text}` is not client/NAME of a client group"));
                return None;
            };
            return Some(Fault { at_ns, action: FaultAction::Migrate(group), what: format!("migrate {text}") });
        }
        if matches!(key, "partition" | "heal" | "set-weight") {
            let action = self.control_fault(key, node, &field, names)?;
            return Some(Fault { at_ns, action, what: describe_control_fault(&action, names) });
        }
        if key != "link" {
            for extra in ["for", "loss", "delay", "jitter"] {
                if let Some(n) = o.get(extra) {
                    self.err(n.span(), &o.field(extra), format!("only link faults take `{extra}`"));
                }
            }
            let target = self.target(node, &field, names)?;
            let text = self.str(node, &field)?;
            let action = match key {
                "down" => FaultAction::Down(target),
                "up" => FaultAction::Up(target),
                _ if matches!(target, Target::Control(_)) => {
                    self.err(
                        node.span(),
                        &field,
                        format!("control nodes go down and up, they are not bound: `{text}`"),
                    );
                    return None;
                }
                _ if !matches!(target, Target::Backend { .. }) => {
                    self.err(node.span(), &field, format!("only backends are bound and unbound, not `{text}`"));
                    return None;
                }
                "unbind" => FaultAction::Unbind(target),
                _ => FaultAction::Bind(target),
            };
            return Some(Fault { at_ns, action, what: format!("{key} {text}") });
        }
        let (pop, region) = self.pop_region_pair(node, &field, names)?;
        let for_ns = self.req(o, "for").and_then(|n| self.duration(n, &o.field("for")));
        let loss = o.get("loss").map(|n| self.with(n, &o.field("loss"), parse_percent));
        let delay_ns = o.get("delay").map(|n| self.duration(n, &o.field("delay")));
        let jitter_ns = o.get("jitter").map(|n| self.duration(n, &o.field("jitter")));
        if loss.is_none() && delay_ns.is_none() && jitter_ns.is_none() {
            self.err(o.map.span(), &o.path, "a link fault needs one of loss, delay, jitter");
            return None;
        }
        let lo = LinkOverride {
            pop,
            region,
            for_ns: for_ns?,
            loss: loss.map_or(Some(None), |v| v.map(Some))?,
            delay_ns: delay_ns.map_or(Some(None), |v| v.map(Some))?,
            jitter_ns: jitter_ns.map_or(Some(None), |v| v.map(Some))?,
        };
        let what = format!("link pop/{}-region/{}", names.pops[pop].name, names.regions[region].name);
        Some(Fault { at_ns, action: FaultAction::Link(lo), what })
    }
    /// `partition: [[control/1, control/2], [control/3]]`, `heal: partition`,
    /// `set-weight: { backend: IP:PORT, weight: W }`.
    pub(super) fn control_fault(
        &mut self,
        key: &str,
        node: &Node,
        field: &str,
        names: &Names<'_>,
    ) -> Option<FaultAction> {
        match key {
            "heal" => {
                let text = self.str(node, field)?;
                if text != "partition" {
                    self.err(node.span(), field, format!("`{text}`: only `heal: partition` exists"));
                    return None;
                }
                Some(FaultAction::Heal)
            }
            "partition" => {
                if names.control_nodes == 0 {
                    self.err(
                        node.span(),
                        field,
                        "a partition splits control nodes: the file has no `control:` section",
                    );
                    return None;
                }
                let sides = self.seq(node, field)?;
                let mut side_of = [u8::MAX; CONTROL_NODES_MAX as usize];
                for (s, side) in sides.iter().enumerate() {
                    let side_field = format!("{field}[{s}]");
                    let members = self.seq(side, &side_field)?;
                    for (m, member) in members.iter().enumerate() {
                        let member_field = format!("{side_field}[{m}]");
                        let Some(Target::Control(n)) = self.target(member, &member_field, names) else {
                            self.err(member.span(), &member_field, "a partition lists control/N nodes only");
                            return None;
                        };
                        let slot = &mut side_of[usize::from(n) - 1];
                        if *slot != u8::MAX {
                            self.err(member.span(), &member_field, format!("control/{n} is on two sides"));
                            return None;
                        }
                        *slot = s as u8;
                    }
                }
                if sides.len() < 2 {
                    self.err(node.span(), field, "a partition needs at least two sides");
                    return None;
                }
                Some(FaultAction::Partition(side_of))
            }
            _ => {
                let o = self.obj(node, field, "set_weight")?;
                let backend = self.req(&o, "backend");
                let weight = self.req(&o, "weight").and_then(|_| self.int_field(&o, "weight"));
                let addr = self.parsed::<SocketAddr>(backend?, &o.field("backend"), "IP:PORT")?;
                let region = names
                    .regions
                    .iter()
                    .position(|r| r.backend_groups.iter().any(|g| g.backends.iter().any(|b| b.addr == addr)));
                let Some(region) = region else {
                    self.err(backend?.span(), &o.field("backend"), format!("no backend {addr} is bound in any group"));
                    return None;
                };
                Some(FaultAction::SetWeight { region, addr, weight: weight? as u8 })
            }
        }
    }
}

pub(super) fn describe_control_fault(action: &FaultAction, names: &Names<'_>) -> String {
    match action {
        FaultAction::Heal => "heal partition".into(),
        FaultAction::Partition(side_of) => {
            let mut sides: BTreeMap<u8, Vec<String>> = BTreeMap::new();
            for n in 0..names.control_nodes {
                sides.entry(side_of[usize::from(n)]).or_default().push(format!("control/{}", n + 1));
            }
            let shown: Vec<String> = sides.into_values().map(|s| s.join(",")).collect();
            format!("partition {}", shown.join(" | "))
        }
        FaultAction::SetWeight { addr, weight, .. } => format!("set-weight backend/{addr} {weight}"),
        _ => String::new(),
    }
}
