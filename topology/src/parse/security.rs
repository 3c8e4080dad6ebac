//! Security groups: what each guards and its rules.

use super::*;

impl Parser {
    pub(super) fn security_groups(&mut self, top: &Obj<'_>, names: &Names<'_>) -> Vec<SecurityGroupDef> {
        if top.get("security_groups").is_none() {
            return vec![];
        }
        let objs = self.list_of_objs(top, "security_groups", "security_group");
        let mut out = Vec::new();
        let mut seen = Vec::new();
        for o in &objs {
            let name = self.name(o);
            let bind = self.sg_bindings(o, names);
            let rules: Vec<Rule> =
                self.list_of_objs(o, "rules", "rule").iter().filter_map(|r| self.sg_rule(r)).collect();
            if let Some(name) = name {
                seen.push((name.clone(), o.map.span(), o.field("name")));
                out.push(SecurityGroupDef { group: SecurityGroup { name, rules }, bind });
            }
        }
        self.unique(&seen);
        out
    }

    pub(super) fn sg_bindings(&mut self, o: &Obj<'_>, names: &Names<'_>) -> Vec<SgBinding> {
        let field = o.field("bind");
        let Some(node) = self.req(o, "bind") else { return vec![] };
        let Some(seq) = self.seq(node, &field) else { return vec![] };
        let mut out = Vec::new();
        for (i, n) in seq.iter().enumerate() {
            let f = format!("{field}[{i}]");
            let Some(text) = self.str(n, &f) else { continue };
            let binding = match text.split_once('/') {
                Some(("clb", rest)) => {
                    let (region, number) = match rest.split_once('/') {
                        Some((r, i)) => (r, Some(i.parse::<u16>().ok())),
                        None => (rest, None),
                    };
                    names.regions.iter().position(|r| r.name == region).and_then(|r| {
                        // `clb/REGION/N` counts from 1, as everywhere users name a node.
                        let index = match number {
                            None => None,
                            Some(Some(n)) if (1..=names.regions[r].clb_nodes).contains(&n) => Some(n - 1),
                            Some(_) => return None,
                        };
                        Some(SgBinding::Clb { region: r, index })
                    })
                }
                Some(("backend", rest)) => {
                    let addr: Option<SocketAddr> = rest.parse().ok();
                    addr.filter(|a| {
                        names
                            .regions
                            .iter()
                            .flat_map(|r| &r.backend_groups)
                            .flat_map(|g| &g.backends)
                            .any(|b| b.addr == *a)
                    })
                    .map(|a| SgBinding::Backend(a.ip()))
                }
                _ => {
                    self.err(n.span(), &f, format!("`{text}` is not backend/IP:PORT or clb/REGION"));
                    continue;
                }
            };
            match binding {
                Some(b) => out.push(b),
                None => self.err(n.span(), &f, format!("unknown binding target `{text}`")),
            }
        }
        out
    }

    pub(super) fn sg_rule(&mut self, r: &Obj<'_>) -> Option<Rule> {
        let source = self.req(r, "source").and_then(|n| self.with(n, &r.field("source"), Cidr::parse));
        let ports = self.req(r, "port").and_then(|n| {
            self.with(n, &r.field("port"), |t| {
                let t = t.trim();
                let port = |p: &str| p.trim().parse::<u16>().ok().filter(|&p| p >= 1);
                if t == "any" {
                    return Ok(Ports::Any);
                }
                let (lo, hi) = t.split_once('-').unwrap_or((t, t));
                match (port(lo), port(hi)) {
                    (Some(lo), Some(hi)) if lo <= hi => Ok(Ports::Range(lo, hi)),
                    _ => Err(format!("`{t}` is not a port 1–65535, a range like 8000-8100, or any")),
                }
            })
        });
        let action = self.req(r, "action").and_then(|n| {
            self.with(n, &r.field("action"), |t| match t {
                "allow" => Ok(Action::Allow),
                "drop" => Ok(Action::Drop),
                other => Err(format!("`{other}` is not allow or drop")),
            })
        });
        Some(Rule { source: source?, ports: ports?, action: action? })
    }
}
