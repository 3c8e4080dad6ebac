//! Security groups: ordered rules (source block, destination port, allow or drop), the
//! first match wins and no match drops. Stateful: once a flow is let in, the rest of it
//! and its replies pass without being judged again, and replies to flows the protected
//! host opened itself always pass.

use anyedge_ccn::Lru;

use anyedge_proto::FlowKey;

use crate::cidr::Cidr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Drop,
}

/// Destination ports a rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ports {
    Any,
    Range(u16, u16),
}

impl Action {
    /// As topology files write it.
    pub fn name(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Drop => "drop",
        }
    }
}

/// As topology files write it: `any`, `8080` or `8000-8999`.
impl std::fmt::Display for Ports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Ports::Any => write!(f, "any"),
            Ports::Range(lo, hi) if lo == hi => write!(f, "{lo}"),
            Ports::Range(lo, hi) => write!(f, "{lo}-{hi}"),
        }
    }
}

impl Ports {
    fn contains(&self, port: u16) -> bool {
        match *self {
            Ports::Any => true,
            Ports::Range(lo, hi) => {
                debug_assert!(lo <= hi, "the parser orders a range");
                (lo..=hi).contains(&port)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub source: Cidr,
    pub ports: Ports,
    pub action: Action,
}

impl Rule {
    fn matches(&self, key: &FlowKey) -> bool {
        self.source.contains(key.src) && self.ports.contains(key.dst_port)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityGroup {
    pub name: String,
    pub rules: Vec<Rule>,
}

/// Per rule: packets it was the first match for, and of those the ones it dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleCounters {
    pub matched: u64,
    pub denied: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
}

/// The first rule of `groups` (in order) that matches `key`: (position of its group in
/// `groups`, its position in the group).
fn first_match(groups: &[(usize, SecurityGroup)], key: &FlowKey) -> Option<(usize, usize)> {
    groups.iter().enumerate().find_map(|(gi, (_, g))| g.rules.iter().position(|r| r.matches(key)).map(|ri| (gi, ri)))
}

/// Why `groups` drop `key`: the rule that drops it, or the groups none of whose rules
/// allow it.
fn explain(groups: &[(usize, SecurityGroup)], key: &FlowKey) -> String {
    if let Some((gi, ri)) = first_match(groups, key) {
        return format!("security group `{}` rule {ri} drops {} to port {}", groups[gi].1.name, key.src, key.dst_port);
    }
    let names: Vec<&str> = groups.iter().map(|(_, g)| g.name.as_str()).collect();
    format!("no rule of security group `{}` allows {} to port {}", names.join("`, `"), key.src, key.dst_port)
}

/// Flows a firewall remembers as allowed; the oldest are forgotten past this.
const TRACKED_FLOWS_MAX: usize = 65_536;

/// The security groups bound to one host (a CLB node or a backend), evaluated in order.
#[derive(Debug)]
pub struct Firewall {
    /// (index of the group in the topology, its rules).
    groups: Vec<(usize, SecurityGroup)>,
    counters: Vec<Vec<RuleCounters>>,
    /// Packets no rule matched (the implicit drop at the end).
    unmatched: u64,
    /// Flows let in (inbound keys) and flows opened from here (their reply keys).
    tracked: Lru<FlowKey, ()>,
}

impl Firewall {
    pub fn new(groups: Vec<(usize, SecurityGroup)>) -> Firewall {
        let counters: Vec<Vec<RuleCounters>> =
            groups.iter().map(|(_, g)| vec![RuleCounters::default(); g.rules.len()]).collect();
        debug_assert_eq!(counters.len(), groups.len(), "a row of counters per group");
        Firewall { groups, counters, unmatched: 0, tracked: Lru::new() }
    }

    /// Judges an inbound packet.
    pub fn inbound(&mut self, key: &FlowKey) -> Verdict {
        if self.tracked.get(key).is_some() {
            return Verdict::Pass;
        }
        let verdict = judge(&self.groups, &mut self.counters, &mut self.unmatched, key);
        if verdict == Verdict::Pass {
            self.track(*key);
        }
        verdict
    }

    /// Why an inbound packet with `key` is dropped (for a user reading a report): the
    /// rule that drops it, or the groups none of whose rules allow it. Counts nothing.
    pub fn explain_drop(&self, key: &FlowKey) -> String {
        explain(&self.groups, key)
    }

    /// Notes an outbound packet of a flow this host opens, so its replies pass.
    pub fn outbound(&mut self, key: &FlowKey) {
        let reply = key.reversed();
        if self.tracked.get(&reply).is_none() {
            self.track(reply);
        }
    }

    fn track(&mut self, key: FlowKey) {
        self.tracked.put(key, ());
        while self.tracked.len() > TRACKED_FLOWS_MAX {
            self.tracked.pop_lru();
        }
        debug_assert!(self.tracked.len() <= TRACKED_FLOWS_MAX && self.tracked.contains(&key));
    }

    /// Counters per bound group: (group index in the topology, per-rule counters).
    pub fn counters(&self) -> impl Iterator<Item = (usize, &[RuleCounters])> {
        self.groups.iter().zip(&self.counters).map(|((g, _), c)| (*g, c.as_slice()))
    }

    pub fn unmatched(&self) -> u64 {
        self.unmatched
    }
}

/// The verdict of `groups` on a new flow `key`, counted on the rule that decided it
/// (`counters`, a row per group) or as `unmatched`.
fn judge(
    groups: &[(usize, SecurityGroup)],
    counters: &mut [Vec<RuleCounters>],
    unmatched: &mut u64,
    key: &FlowKey,
) -> Verdict {
    debug_assert_eq!(counters.len(), groups.len(), "a row of counters per group");
    let Some((gi, ri)) = first_match(groups, key) else {
        *unmatched += 1;
        return Verdict::Drop;
    };
    let counter = &mut counters[gi][ri];
    counter.matched += 1;
    debug_assert!(counter.denied < counter.matched, "a rule denies only what it matched");
    match groups[gi].1.rules[ri].action {
        Action::Allow => Verdict::Pass,
        Action::Drop => {
            counter.denied += 1;
            Verdict::Drop
        }
    }
}

/// A CLB node's security groups: its own, judging what reaches it, and its backends' as
/// it applies them on their behalf.
#[derive(Debug, Default)]
pub struct ClbGroups {
    pub own: Option<Firewall>,
    pub for_backends: BackendGuard,
}

/// A backend's security groups as a CLB node applies them for it, where the backend
/// would see the node's address rather than the client's: a layer-7 or QUIC listener
/// (the node opens the backend connection itself) or a translated layer-4 flow (SNAT,
/// NAT64). The node judges the client's address and the backend's port once per
/// backend connection (or translated flow), as the backend's own stateful firewall judges
/// a flow once, and counts per rule as that firewall does, so a report sums both.
#[derive(Debug, Default)]
pub struct BackendGuard {
    /// Per topology group index: its rules' counters.
    counters: std::collections::BTreeMap<usize, Vec<RuleCounters>>,
    /// New flows denied (a rule's drop or no rule's allow).
    denied: u64,
    /// Why the last denied flow was denied.
    last_denied: Option<String>,
}

impl BackendGuard {
    /// Whether the backend whose groups are `groups` would let the client flow `key`
    /// (its destination the backend's address and port) in. No groups admit all.
    pub fn judge(&mut self, groups: &[(usize, SecurityGroup)], key: &FlowKey) -> Verdict {
        if groups.is_empty() {
            return Verdict::Pass;
        }
        let allowed = first_match(groups, key).is_some_and(|(gi, ri)| {
            let (topo, group) = &groups[gi];
            let row = self.counters.entry(*topo).or_default();
            row.resize(group.rules.len(), RuleCounters::default());
            let counter = &mut row[ri];
            counter.matched += 1;
            let allow = group.rules[ri].action == Action::Allow;
            counter.denied += u64::from(!allow);
            debug_assert!(counter.denied <= counter.matched, "a rule denies only what it matched");
            allow
        });
        if allowed {
            return Verdict::Pass;
        }
        self.denied += 1;
        self.last_denied = Some(explain(groups, key));
        Verdict::Drop
    }

    /// Whether `groups` would let `key` in, counting nothing.
    pub fn would_admit(groups: &[(usize, SecurityGroup)], key: &FlowKey) -> bool {
        groups.is_empty()
            || first_match(groups, key).is_some_and(|(gi, ri)| groups[gi].1.rules[ri].action == Action::Allow)
    }

    /// Counters per group judged so far: (group index in the topology, per-rule counters).
    pub fn counters(&self) -> impl Iterator<Item = (usize, &[RuleCounters])> {
        self.counters.iter().map(|(g, c)| (*g, c.as_slice()))
    }

    /// New flows denied so far.
    pub fn denied(&self) -> u64 {
        self.denied
    }

    /// Why the last denied flow was denied.
    pub fn last_denied(&self) -> Option<&str> {
        self.last_denied.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyedge_proto::Transport;

    fn rule(source: &str, ports: Ports, action: Action) -> Rule {
        Rule { source: Cidr::parse(source).unwrap(), ports, action }
    }

    fn key(src: &str, port: u16) -> FlowKey {
        FlowKey {
            transport: Transport::Tcp,
            src: src.parse().unwrap(),
            src_port: 40_000,
            dst: "198.19.1.10".parse().unwrap(),
            dst_port: port,
        }
    }

    fn firewall(rules: Vec<Rule>) -> Firewall {
        Firewall::new(vec![(0, SecurityGroup { name: "sg".into(), rules })])
    }

    #[test]
    fn first_match_wins_and_a_blacklist_goes_before_the_allow() {
        let mut fw = firewall(vec![
            rule("198.18.66.0/24", Ports::Range(8080, 8080), Action::Drop),
            rule("0.0.0.0/0", Ports::Any, Action::Allow),
        ]);
        assert_eq!(fw.inbound(&key("198.18.66.5", 8080)), Verdict::Drop);
        assert_eq!(fw.inbound(&key("198.18.67.5", 8080)), Verdict::Pass);
        assert_eq!(fw.inbound(&key("198.18.66.5", 22)), Verdict::Pass, "the drop covers 8080 only");
        let c: Vec<RuleCounters> = fw.counters().next().unwrap().1.to_vec();
        assert_eq!(c[0], RuleCounters { matched: 1, denied: 1 });
        assert_eq!(c[1], RuleCounters { matched: 2, denied: 0 });
    }

    #[test]
    fn a_drop_after_the_final_allow_is_inert() {
        let mut fw = firewall(vec![
            rule("0.0.0.0/0", Ports::Any, Action::Allow),
            rule("198.18.66.0/24", Ports::Range(8080, 8080), Action::Drop),
        ]);
        assert_eq!(fw.inbound(&key("198.18.66.5", 8080)), Verdict::Pass);
        assert_eq!(fw.counters().next().unwrap().1[1], RuleCounters { matched: 0, denied: 0 });
    }

    #[test]
    fn no_match_drops_and_replies_to_our_own_flows_pass() {
        let mut fw = firewall(vec![rule("198.18.66.0/24", Ports::Any, Action::Allow)]);
        assert_eq!(fw.inbound(&key("203.0.113.9", 80)), Verdict::Drop);
        assert_eq!(fw.unmatched(), 1);
        // This host opens a flow to 203.0.113.9: its replies come back in.
        let out = key("203.0.113.9", 80).reversed();
        fw.outbound(&out);
        assert_eq!(fw.inbound(&out.reversed()), Verdict::Pass);
    }

    #[test]
    fn an_allowed_flow_is_not_judged_again() {
        let mut fw = firewall(vec![rule("198.18.66.0/24", Ports::Any, Action::Allow)]);
        for _ in 0..5 {
            assert_eq!(fw.inbound(&key("198.18.66.5", 443)), Verdict::Pass);
        }
        assert_eq!(fw.counters().next().unwrap().1[0].matched, 1);
    }

    #[test]
    fn a_clb_judging_for_a_backend_counts_on_the_groups_topology_index_and_says_why() {
        let groups = vec![(
            3,
            SecurityGroup {
                name: "web".into(),
                rules: vec![
                    rule("198.18.66.0/24", Ports::Range(8080, 8080), Action::Drop),
                    rule("0.0.0.0/0", Ports::Any, Action::Allow),
                ],
            },
        )];
        let mut guard = BackendGuard::default();
        assert_eq!(guard.judge(&groups, &key("198.18.66.5", 8080)), Verdict::Drop);
        assert_eq!(guard.judge(&groups, &key("198.18.67.5", 8080)), Verdict::Pass);
        assert_eq!(guard.judge(&[], &key("198.18.66.5", 8080)), Verdict::Pass, "no groups admit all");
        assert!(!BackendGuard::would_admit(&groups, &key("198.18.66.5", 8080)));
        let counted: Vec<(usize, Vec<RuleCounters>)> = guard.counters().map(|(g, c)| (g, c.to_vec())).collect();
        let expected = vec![RuleCounters { matched: 1, denied: 1 }, RuleCounters { matched: 1, denied: 0 }];
        assert_eq!(counted, vec![(3, expected)], "would_admit counts nothing");
        assert_eq!(guard.denied(), 1);
        assert_eq!(guard.last_denied(), Some("security group `web` rule 0 drops 198.18.66.5 to port 8080"));
    }
}
