//! A CLB node's health checking of its backend ports: the checker that decides when a
//! port flips, and the prober that puts its probes on the wire and recognises answers.
//! The node only hears which ports changed state and what to send.

use std::net::IpAddr;

use anyedge_proto::inner::Inner;

use crate::HealthConfig;
use crate::health::{Health, HealthChecker, ProbeRequest};
use crate::health_check::{Answer, HealthProber, Send};
use crate::tables::{BackendTable, PortId};

/// A port whose state changed, and its new state.
pub type Change = (PortId, Health);

/// Health checks of every backend port of a node, one checker row per `PortId`.
#[derive(Debug)]
pub struct HealthPlane {
    checker: HealthChecker,
    prober: HealthProber,
    /// Probes due, reused between wake-ups.
    due: Vec<ProbeRequest>,
}

impl HealthPlane {
    /// Checks of ports `0..configs.len()` in `PortId` order, probing from the node's addresses.
    pub fn new(
        configs: Vec<HealthConfig>,
        (address, address_v6): (IpAddr, Option<IpAddr>),
        seed: u64,
        now_ns: u64,
    ) -> HealthPlane {
        HealthPlane {
            checker: HealthChecker::new(configs, now_ns),
            prober: HealthProber::new(address, address_v6, seed),
            due: Vec::new(),
        }
    }

    /// A port bound at run time: its row must be the next `PortId`.
    pub fn add_port(&mut self, port: PortId, config: HealthConfig, now_ns: u64) {
        let row = self.checker.add_port(config, now_ns);
        assert_eq!(row, port.0, "the checker's rows follow the backend table's");
    }

    pub fn is_healthy(&self, port: PortId) -> bool {
        self.checker.is_healthy(port.0)
    }

    /// Whether a packet from a backend answers one of this node's probes.
    pub fn is_probe_traffic(&self, info: &Inner) -> bool {
        self.prober.is_probe_traffic(info)
    }

    pub fn poll_timeout(&mut self, now_ns: u64) -> Option<u64> {
        let checker = self.checker.poll_timeout();
        let prober = self.prober.poll_timeout(now_ns);
        checker.into_iter().chain(prober).min()
    }

    /// Expires overdue probes, starts due ones and moves HTTP probes along; appends what
    /// to send and returns the ports that changed state.
    pub fn on_timeout(&mut self, now_ns: u64, backends: &BackendTable, sends: &mut Vec<Send>) -> Vec<Change> {
        let mut changes = Vec::new();
        self.checker.on_timeout(now_ns, &mut self.due, &mut changes);
        let checker = &self.checker;
        self.prober.cancel_except(|id| checker.backend_of_probe(id).is_some(), sends);
        for probe in self.due.drain(..) {
            let port = &backends[PortId(probe.backend)];
            self.prober.start(now_ns, probe.probe_id, port.addr, &port.probe, sends);
        }
        let mut answers = Vec::new();
        self.prober.handle_timeout(now_ns, sends, &mut answers);
        self.record(&answers, &mut changes);
        changes.into_iter().map(|(p, h)| (PortId(p), h)).collect()
    }

    /// A packet answering one of this node's probes; appends what to send and returns
    /// the ports that changed state.
    pub fn on_packet(
        &mut self,
        now_ns: u64,
        (info, packet): (&Inner, &[u8]),
        backends: &BackendTable,
        sends: &mut Vec<Send>,
    ) -> Vec<Change> {
        let mut answers = Vec::new();
        let checker = &self.checker;
        let backend_of = |id: u16| checker.backend_of_probe(id).map(|p| backends[PortId(p)].addr);
        self.prober.on_packet(now_ns, info, packet, backend_of, sends, &mut answers);
        let mut changes = Vec::new();
        self.record(&answers, &mut changes);
        changes.into_iter().map(|(p, h)| (PortId(p), h)).collect()
    }

    fn record(&mut self, answers: &[Answer], changes: &mut Vec<(usize, Health)>) {
        for &(probe_id, ok) in answers {
            if let Some(port) = self.checker.backend_of_probe(probe_id) {
                self.checker.on_answer(port, probe_id, ok, changes);
            }
        }
    }
}
