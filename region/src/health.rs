//! Health checking of backend ports as a timer-driven state machine: one probe per
//! interval, a probe fails when its timeout passes without an answer, and a port flips
//! state only after `healthy` consecutive successes or `unhealthy` consecutive failures.

use crate::config::HealthConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Unhealthy,
}

#[derive(Debug, Clone, Copy)]
struct Outstanding {
    probe_id: u16,
    deadline_ns: u64,
}

#[derive(Debug, Clone)]
struct PortHealth {
    config: HealthConfig,
    state: Health,
    successes: u32,
    failures: u32,
    next_probe_ns: u64,
    outstanding: Option<Outstanding>,
}

/// A probe the driver must send: backend index and the probe id to match the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeRequest {
    pub backend: usize,
    pub probe_id: u16,
}

#[derive(Debug, Clone)]
pub struct HealthChecker {
    ports: Vec<PortHealth>,
    next_probe_id: u16,
}

impl HealthChecker {
    /// Every port starts healthy; first probes are spread over one interval.
    pub fn new(configs: Vec<HealthConfig>, now_ns: u64) -> HealthChecker {
        let n = (configs.len() as u64).max(1);
        let ports = configs
            .into_iter()
            .enumerate()
            .map(|(i, config)| PortHealth {
                next_probe_ns: now_ns + config.interval_ns / n * i as u64,
                config,
                state: Health::Healthy,
                successes: 0,
                failures: 0,
                outstanding: None,
            })
            .collect();
        HealthChecker { ports, next_probe_id: 0 }
    }

    /// A port bound later (a listener added at run time): healthy, first probe at once.
    pub fn add_port(&mut self, config: HealthConfig, now_ns: u64) -> usize {
        debug_assert!(config.timeout_ns <= config.interval_ns.max(1), "a probe times out before the next is due");
        self.ports.push(PortHealth {
            next_probe_ns: now_ns,
            config,
            state: Health::Healthy,
            successes: 0,
            failures: 0,
            outstanding: None,
        });
        self.ports.len() - 1
    }

    pub fn state(&self, backend: usize) -> Health {
        self.ports.get(backend).map_or(Health::Unhealthy, |p| p.state)
    }

    pub fn is_healthy(&self, backend: usize) -> bool {
        self.state(backend) == Health::Healthy
    }

    pub fn poll_timeout(&self) -> Option<u64> {
        self.ports.iter().map(|p| p.outstanding.map_or(p.next_probe_ns, |o| o.deadline_ns.min(p.next_probe_ns))).min()
    }

    /// Expires overdue probes and starts due ones. Appends probes to send and state changes.
    pub fn on_timeout(&mut self, now_ns: u64, probes: &mut Vec<ProbeRequest>, changes: &mut Vec<(usize, Health)>) {
        for backend in 0..self.ports.len() {
            if self.ports[backend].outstanding.is_some_and(|o| o.deadline_ns <= now_ns) {
                self.ports[backend].outstanding = None;
                self.record(backend, false, changes);
            }
            let port = &mut self.ports[backend];
            if port.next_probe_ns <= now_ns {
                port.next_probe_ns = now_ns + port.config.interval_ns.max(1);
                if port.outstanding.is_none() {
                    let probe_id = self.next_probe_id;
                    self.next_probe_id = self.next_probe_id.wrapping_add(1);
                    port.outstanding = Some(Outstanding { probe_id, deadline_ns: now_ns + port.config.timeout_ns });
                    probes.push(ProbeRequest { backend, probe_id });
                }
            }
        }
    }

    /// An answer to a probe: `ok` for a completed handshake, false for a refusal.
    /// Answers to probes that already timed out are ignored.
    pub fn on_answer(&mut self, backend: usize, probe_id: u16, ok: bool, changes: &mut Vec<(usize, Health)>) {
        let Some(port) = self.ports.get_mut(backend) else {
            return;
        };
        if port.outstanding.is_some_and(|o| o.probe_id == probe_id) {
            port.outstanding = None;
            self.record(backend, ok, changes);
        }
    }

    /// Which backend an outstanding probe id belongs to.
    pub fn backend_of_probe(&self, probe_id: u16) -> Option<usize> {
        self.ports.iter().position(|p| p.outstanding.is_some_and(|o| o.probe_id == probe_id))
    }

    fn record(&mut self, backend: usize, ok: bool, changes: &mut Vec<(usize, Health)>) {
        let port = &mut self.ports[backend];
        debug_assert!(port.outstanding.is_none(), "a probe is recorded once, after it was answered or timed out");
        let (healthy_after, unhealthy_after) = (port.config.healthy.max(1), port.config.unhealthy.max(1));
        if ok {
            port.successes += 1;
            port.failures = 0;
            if port.state == Health::Unhealthy && port.successes >= healthy_after {
                port.state = Health::Healthy;
                changes.push((backend, Health::Healthy));
            }
        } else {
            port.failures += 1;
            port.successes = 0;
            if port.state == Health::Healthy && port.failures >= unhealthy_after {
                port.state = Health::Unhealthy;
                changes.push((backend, Health::Unhealthy));
            }
        }
        debug_assert!(port.successes == 0 || port.failures == 0, "a run of successes or of failures, never both");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn checker() -> HealthChecker {
        HealthChecker::new(vec![HealthConfig::tcp(2000 * MS, 1000 * MS, 3, 3)], 0)
    }

    #[test]
    fn unanswered_probes_mark_unhealthy_after_threshold() {
        let mut hc = checker();
        let (mut probes, mut changes) = (vec![], vec![]);
        let mut now = 0;
        while changes.is_empty() {
            now = hc.poll_timeout().unwrap();
            hc.on_timeout(now, &mut probes, &mut changes);
        }
        assert_eq!(changes, vec![(0, Health::Unhealthy)]);
        // probes at 0, 2 s, 4 s; the third times out at 5 s
        assert_eq!(now, 5000 * MS);
        assert_eq!(probes.len(), 3);
    }

    #[test]
    fn answered_probes_bring_a_port_back_after_healthy_successes() {
        let mut hc = checker();
        let (mut probes, mut changes) = (vec![], vec![]);
        while changes.is_empty() {
            let now = hc.poll_timeout().unwrap();
            hc.on_timeout(now, &mut probes, &mut changes);
        }
        changes.clear();
        let mut answered = 0;
        while changes.is_empty() {
            let now = hc.poll_timeout().unwrap();
            probes.clear();
            hc.on_timeout(now, &mut probes, &mut changes);
            for p in probes.drain(..) {
                hc.on_answer(p.backend, p.probe_id, true, &mut changes);
                answered += 1;
            }
        }
        assert_eq!(answered, 3);
        assert!(hc.is_healthy(0));
    }
}
