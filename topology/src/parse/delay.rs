//! The `delay:` section of `internet:` and `backbone:`: a calibrated delay model, by the
//! name of one that ships (`azure-2025-06`, `wondernetwork-2020-07`) or written out as `anyedge calibrate` prints
//! it, and the calibrations that ship with anyedge.

use std::collections::BTreeMap;

use std::sync::Arc;

use anyedge_ccn::delay::{Area, DelayModel, PathParams, fibre_rtt_ms, hub_location};
use anyedge_ccn::geo::great_circle_km;
use anyedge_ccn::landmarks::{Dataset, Landmark, LandmarkModel, Law, Reach};
use marked_yaml::Node;

use super::{Names, Obj, Parser, show_ns};
use crate::{ClientGroup, InternetEnd, PinnedRtt};

/// The longest round trip a file may pin: ten seconds is no internet path.
const PINNED_RTT_MAX_NS: u64 = 10_000_000_000;

/// A built-in calibration by name (read once a process: a per-place model indexes its
/// dataset when it is built).
pub fn builtin(name: &str) -> Option<DelayModel> {
    static READ: std::sync::OnceLock<Vec<Option<DelayModel>>> = std::sync::OnceLock::new();
    let all = READ.get_or_init(|| crate::calibrations::BUILTIN.iter().map(|(_, text)| read_builtin(text)).collect());
    let k = crate::calibrations::BUILTIN.iter().position(|(n, _)| *n == name)?;
    all[k].clone()
}

fn read_builtin(text: &str) -> Option<DelayModel> {
    let node = marked_yaml::parse_yaml(0, text).ok()?;
    let mut p = Parser { diags: Vec::new(), paths: Vec::new(), apps: Vec::new() };
    let root = p.obj(&node, "", "calibration_file")?;
    let model = p.delay_model(root.get("delay")?, "delay")?;
    p.diags.is_empty().then_some(model)
}

fn builtin_names() -> String {
    crate::calibrations::BUILTIN.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

impl Parser {
    /// `delay: NAME` (a shipped calibration) or `delay: { name, source, default, pairs }`.
    pub(super) fn delay_model(&mut self, node: &Node, field: &str) -> Option<DelayModel> {
        if let Some(s) = node.as_scalar() {
            let name = s.as_str();
            let model = builtin(name);
            if model.is_none() {
                self.err(
                    node.span(),
                    field,
                    format!("`{name}` is no calibration that ships (one of: {})", builtin_names()),
                );
            }
            return model;
        }
        let o = self.obj(node, field, "delay_model")?;
        let name = match o.get("name") {
            Some(n) => self.str(n, &o.field("name"))?.to_string(),
            None => "custom".into(),
        };
        let source = match o.get("source") {
            Some(n) => self.str(n, &o.field("source"))?.to_string(),
            None => "given in the topology file".into(),
        };
        let default = self.req(&o, "default").and_then(|n| self.path_params(n, &o.field("default"), false));
        let pairs = match o.get("pairs") {
            Some(n) => self.area_pairs(n, &o.field("pairs")),
            None => Some(BTreeMap::new()),
        };
        let (default, pairs) = (default?, pairs?);
        let landmarks = match o.get("landmarks") {
            Some(n) if !pairs.is_empty() => {
                let why = "give `pairs` (a model per pair of areas) or `landmarks` (per place), not both";
                self.err(n.span(), &o.field("landmarks"), why);
                return None;
            }
            Some(n) => Some(Arc::new(self.landmarks(n, &o.field("landmarks"), &default)?)),
            None => None,
        };
        Some(DelayModel { name, source, default, pairs, landmarks })
    }

    /// `landmarks: { measured, stretch, short, neighbours, power, reach_km, prior,
    /// heights }`: the per-place model over a dataset that ships, a height for each of its
    /// servers; `long` (the model's `default`) and `short` its distance law.
    fn landmarks(&mut self, node: &Node, field: &str, long: &PathParams) -> Option<LandmarkModel> {
        let o = self.obj(node, field, "landmarks")?;
        let short = self.req(&o, "short").and_then(|n| self.path_params(n, &o.field("short"), false));
        let data = self.req(&o, "measured").and_then(|n| self.shipped_dataset(n, &o.field("measured")));
        let stretch = self.req(&o, "stretch").and_then(|_| self.float_field(&o, "stretch"));
        let neighbours = self.req(&o, "neighbours").and_then(|_| self.int_field(&o, "neighbours"));
        let power = self.req(&o, "power").and_then(|_| self.float_field(&o, "power"));
        let reach_km = self.req(&o, "reach_km").and_then(|_| self.int_field(&o, "reach_km"));
        let prior = self.req(&o, "prior").and_then(|_| self.float_field(&o, "prior"));
        let heights_node = self.req(&o, "heights");
        let data = data?;
        let heights = self.heights(heights_node?, &o.field("heights"), data)?;
        let reach =
            Reach { neighbours: neighbours? as usize, power: power?, reach_km: reach_km? as f64, prior: prior? };
        let law = Law { short: short?, long: long.clone() };
        let landmarks = data
            .sites
            .iter()
            .zip(heights)
            .map(|((name, at), height_ms)| Landmark { name: name.clone(), at: *at, height_ms })
            .collect();
        Some(LandmarkModel::new(landmarks, &data.observations, stretch?, reach, law))
    }

    fn shipped_dataset(&mut self, node: &Node, field: &str) -> Option<&'static Dataset> {
        let name = self.str(node, field)?;
        let data = crate::measured::shipped(name);
        if data.is_none() {
            let all: Vec<&str> = crate::measured::SHIPPED.iter().map(|(n, _)| *n).collect();
            self.err(
                node.span(),
                field,
                format!("`{name}` is no measured dataset that ships (one of: {})", all.join(", ")),
            );
        }
        data
    }

    /// `[{ server, height }, …]`: every server of `data` once, in any order; heights in
    /// ms, in the dataset's order of servers.
    fn heights(&mut self, node: &Node, field: &str, data: &Dataset) -> Option<Vec<f64>> {
        let seq = self.seq(node, field)?;
        let mut heights: Vec<Option<f64>> = vec![None; data.sites.len()];
        let mut ok = true;
        for (i, item) in seq.iter().enumerate() {
            let f = format!("{field}[{i}]");
            let Some(o) = self.obj(item, &f, "landmark_height") else {
                ok = false;
                continue;
            };
            let server = self.req(&o, "server").and_then(|n| self.str(n, &o.field("server")));
            let height = self.req(&o, "height").and_then(|_| self.duration_or(&o, "height", 0));
            let (Some(server), Some(height)) = (server, height) else {
                ok = false;
                continue;
            };
            let why = match data.sites.iter().position(|(n, _)| n == server) {
                None => format!("`{server}` is no server of the measured dataset"),
                Some(k) if heights[k].is_some() => format!("`{server}` is given twice"),
                Some(k) => {
                    heights[k] = Some(height as f64 / 1e6);
                    continue;
                }
            };
            self.err(item.span(), &o.field("server"), why);
            ok = false;
        }
        let missing: Vec<&str> =
            heights.iter().zip(&data.sites).filter(|(h, _)| h.is_none()).map(|(_, (n, _))| n.as_str()).collect();
        if ok && !missing.is_empty() {
            let shown = missing.iter().take(5).copied().collect::<Vec<_>>().join(", ");
            self.err(node.span(), field, format!("{} server(s) have no height: {shown}", missing.len()));
            ok = false;
        }
        if ok { heights.into_iter().collect() } else { None }
    }

    fn area_pairs(&mut self, node: &Node, field: &str) -> Option<BTreeMap<(Area, Area), PathParams>> {
        let seq = self.seq(node, field)?;
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (i, item) in seq.iter().enumerate() {
            let f = format!("{field}[{i}]");
            let Some(o) = self.obj(item, &f, "area_pair") else {
                ok = false;
                continue;
            };
            let key = self.req(&o, "between").and_then(|n| self.area_pair(n, &o.field("between")));
            let params = self.path_params(item, &f, true);
            match (key, params) {
                (Some(key), Some(params)) => {
                    if out.insert(key, params).is_some() {
                        self.err(item.span(), &f, format!("{} and {} are given twice", key.0, key.1));
                        ok = false;
                    }
                }
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn area_pair(&mut self, node: &Node, field: &str) -> Option<(Area, Area)> {
        let seq = self.seq(node, field)?;
        if seq.len() != 2 {
            self.err(node.span(), field, "expected [AREA, AREA]");
            return None;
        }
        let mut areas = seq.iter().enumerate().map(|(i, n)| self.area(n, &format!("{field}[{i}]")));
        let (a, b) = (areas.next()??, areas.next()??);
        Some(anyedge_ccn::delay::area_key(a, b))
    }

    fn area(&mut self, node: &Node, field: &str) -> Option<Area> {
        let name = self.str(node, field)?;
        let area = Area::parse(name);
        if area.is_none() {
            let all: Vec<_> = Area::ALL.iter().map(|a| a.name()).collect();
            self.err(node.span(), field, format!("`{name}` is not an area (one of: {})", all.join(", ")));
        }
        area
    }

    /// `{ stretch, overhead, via }`: stretch 1–10 (nothing beats light in fibre), overhead
    /// 0–500 ms of round trip, `via` one of the hubs.
    fn path_params(&mut self, node: &Node, field: &str, may_have_between: bool) -> Option<PathParams> {
        let allowed = if may_have_between { "area_pair" } else { "path_params" };
        let o = self.obj(node, field, allowed)?;
        let stretch = self.req(&o, "stretch").and_then(|_| self.float_field(&o, "stretch"));
        let overhead_ns = self.duration_field(&o, "overhead");
        let via = match o.get("via") {
            None => Some(None),
            Some(n) => {
                let hub = self.str(n, &o.field("via"))?;
                if hub_location(hub).is_none() {
                    let hubs: Vec<_> = anyedge_ccn::delay::HUBS.iter().map(|(h, _)| *h).collect();
                    self.err(n.span(), &o.field("via"), format!("`{hub}` is not a hub (one of: {})", hubs.join(", ")));
                    return None;
                }
                Some(Some(hub.to_string()))
            }
        };
        Some(PathParams { stretch: stretch?, overhead_ms: overhead_ns? as f64 / 1e6, via: via? })
    }

    /// A section's model: `delay:` or the older `stretch:` (one stretch everywhere), not both.
    pub(super) fn stretch_or_delay(&mut self, o: &Obj<'_>, default: impl FnOnce() -> DelayModel) -> Option<DelayModel> {
        match (o.get("stretch"), o.get("delay")) {
            (Some(s), Some(_)) => {
                self.err(
                    s.span(),
                    &o.field("stretch"),
                    "give `stretch` (one stretch everywhere) or `delay` (a calibrated model), not both",
                );
                None
            }
            (Some(_), None) => self.float_field(o, "stretch").map(DelayModel::uniform),
            (None, Some(d)) => self.delay_model(d, &o.field("delay")),
            (None, None) => Some(default()),
        }
    }
}

impl Parser {
    /// `internet.rtt: [{ between: [client/X, pop/Y|region/Y], rtt: DURATION }, …]`:
    /// measured round trips that replace the model's, each checked against light in fibre.
    pub(super) fn pinned_rtts(
        &mut self,
        node: &Node,
        field: &str,
        clients: &[ClientGroup],
        names: &Names<'_>,
    ) -> Option<Vec<PinnedRtt>> {
        let seq = self.seq(node, field)?;
        let mut out: Vec<PinnedRtt> = Vec::new();
        let mut ok = true;
        for (i, item) in seq.iter().enumerate() {
            let f = format!("{field}[{i}]");
            match self.pinned_rtt(item, &f, clients, names) {
                Some(pin) if out.iter().any(|p| p.client == pin.client && p.to == pin.to) => {
                    self.err(item.span(), &f, "this pair is pinned twice");
                    ok = false;
                }
                Some(pin) => out.push(pin),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn pinned_rtt(&mut self, item: &Node, f: &str, clients: &[ClientGroup], names: &Names<'_>) -> Option<PinnedRtt> {
        let o = self.obj(item, f, "pinned_rtt")?;
        let ends = self.req(&o, "between").and_then(|n| self.pinned_ends(n, &o.field("between"), clients, names));
        let rtt_node = self.req(&o, "rtt")?;
        let rtt_ns = self.duration(rtt_node, &o.field("rtt"))?;
        let (client, to) = ends?;
        if rtt_ns == 0 || rtt_ns > PINNED_RTT_MAX_NS {
            self.err(rtt_node.span(), &o.field("rtt"), format!("must lie within 1ns – {}", show_ns(PINNED_RTT_MAX_NS)));
            return None;
        }
        let far = match to {
            InternetEnd::Pop(p) => names.pops[p].location,
            InternetEnd::Region(r) => names.regions[r].location,
        };
        let km = great_circle_km(clients[client].location, far);
        let light_ms = fibre_rtt_ms(km);
        if (rtt_ns as f64) / 1e6 < light_ms {
            let reason = format!(
                "{} is faster than light in fibre over {km:.0} km (at least {light_ms:.1} ms round trip)",
                show_ns(rtt_ns)
            );
            self.err(rtt_node.span(), &o.field("rtt"), reason);
            return None;
        }
        Some(PinnedRtt { client, to, rtt_ns })
    }

    /// `[client/NAME, pop/NAME|region/NAME]`, in either order.
    fn pinned_ends(
        &mut self,
        node: &Node,
        field: &str,
        clients: &[ClientGroup],
        names: &Names<'_>,
    ) -> Option<(usize, InternetEnd)> {
        let seq = self.seq(node, field)?;
        let ends: Vec<&str> = seq.iter().filter_map(|n| n.as_scalar().map(|s| s.as_str())).collect();
        let kinds = "expected [client/NAME, pop/NAME] or [client/NAME, region/NAME]";
        let [a, b] = ends[..] else {
            self.err(node.span(), field, kinds);
            return None;
        };
        let (client, other) = match (a.strip_prefix("client/"), b.strip_prefix("client/")) {
            (Some(c), None) => (c, b),
            (None, Some(c)) => (c, a),
            _ => {
                self.err(node.span(), field, kinds);
                return None;
            }
        };
        let Some(g) = clients.iter().position(|c| c.name == client) else {
            self.err(node.span(), field, format!("no client group named `{client}`"));
            return None;
        };
        let to = if let Some(p) = other.strip_prefix("pop/") {
            names.pops.iter().position(|s| s.name == p).map(InternetEnd::Pop).ok_or(format!("no POP named `{p}`"))
        } else if let Some(r) = other.strip_prefix("region/") {
            names
                .regions
                .iter()
                .position(|s| s.name == r)
                .map(InternetEnd::Region)
                .ok_or(format!("no region named `{r}`"))
        } else {
            Err(kinds.to_string())
        };
        match to {
            Ok(to) => Some((g, to)),
            Err(reason) => {
                self.err(node.span(), field, reason);
                None
            }
        }
    }
}
