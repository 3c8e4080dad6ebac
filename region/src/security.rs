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

impl SecurityGroup {
    /// Whether `groups`, in order, let a new flow `key` in: the first rule that matches
    /// decides; none matching drops (the implicit drop at the end). No group admits all.
    pub fn admit(groups: &[SecurityGroup], key: &FlowKey) -> bool {
        if groups.is_empty() {
            return true;
        }
        groups.iter().find_map(|g| g.rules.iter().find(|r| r.matches(key))).is_some_and(|r| r.action == Action::Allow)
    }
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
        for (gi, (_, group)) in self.groups.iter().enumerate() {
            if let Some(ri) = group.rules.iter().position(|r| r.matches(key)) {
                let counter = &mut self.counters[gi][ri];
                counter.matched += 1;
                debug_assert!(counter.denied < counter.matched, "a rule denies only what it matched");
                return match group.rules[ri].action {
                    Action::Allow => {
                        self.track(*key);
                        Verdict::Pass
                    }
                    Action::Drop => {
                        counter.denied += 1;
                        Verdict::Drop
                    }
                };
            }
        }
        self.unmatched += 1;
        Verdict::Drop
    }

    /// Why an inbound packet with `key` is dropped (for a user reading a report): the
    /// rule that drops it, or the groups none of whose rules allow it. Counts nothing.
    pub fn explain_drop(&self, key: &FlowKey) -> String {
        for (_, group) in &self.groups {
            if let Some(ri) = group.rules.iter().position(|r| r.matches(key)) {
                return format!("security group `{}` rule {ri} drops {} to port {}", group.name, key.src, key.dst_port);
            }
        }
        let names: Vec<&str> = self.groups.iter().map(|(_, g)| g.name.as_str()).collect();
        format!("no rule of security group `{}` allows {} to port {}", names.join("`, `"), key.src, key.dst_port)
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
}
