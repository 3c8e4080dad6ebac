//! One CLB node: takes client packets (encapsulated by a POP, or straight from the
//! internet for the direct baseline), picks a backend, rewrites the destination while
//! keeping the client's source address, and sends replies back the way the flow came.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use anyedge_proto::ccn::{self, Direction};
use anyedge_proto::inner::{self, Inner};
use anyedge_proto::{FlowKey, Transport};
use lru::LruCache;
use smoltcp::wire::TcpControl;

use crate::config::{ClbConfig, ListenerConfig, SchedulerKind};
use crate::conn_table::{Conn, ConnTable, Ingress};
use crate::health::{Health, HealthChecker, ProbeRequest};
use crate::scheduler::{Candidate, Maglev, Wrr};

/// Something the driver must send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An encapsulated reply for the POP with this id, over the backbone.
    ToPop { pop_id: u16, bytes: Vec<u8> },
    /// An IP packet for a backend (client packets, health probes).
    ToBackend { backend: SocketAddr, bytes: Vec<u8> },
    /// An IP packet straight to a client over the internet (direct-ingress replies).
    ToClient { bytes: Vec<u8> },
}

/// Something worth recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    HealthChanged {
        backend: SocketAddr,
        healthy: bool,
    },
    /// A flow whose backend became unhealthy or was unbound moved to another one.
    FlowMoved {
        from: SocketAddr,
        to: SocketAddr,
    },
}

/// Why a packet was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    Packet(anyedge_proto::Error),
    WrongDirection,
    NoListener,
    NoBackend,
    NoConnection,
}

impl From<anyedge_proto::Error> for Drop {
    fn from(e: anyedge_proto::Error) -> Drop {
        Drop::Packet(e)
    }
}

#[derive(Debug)]
struct Listener {
    config: ListenerConfig,
    /// Backend port index (into `Clb::backends`) of each binding.
    ports: Vec<usize>,
    names: Vec<String>,
    wrr: Wrr,
    maglev: Option<Maglev>,
}

/// First TCP sequence number of health probes; the probe id is added to it.
const PROBE_ISN: u32 = 0x5eed_0000;
/// Health probes use source ports from here up.
const PROBE_PORT_BASE: u16 = 1024;

/// The CLB core.
#[derive(Debug)]
pub struct Clb {
    address: IpAddr,
    listeners: Vec<Listener>,
    /// Distinct backend ports across listeners: health is per port.
    backends: Vec<SocketAddr>,
    health: HealthChecker,
    conns: ConnTable,
    persistence: LruCache<(usize, IpAddr), (usize, u64)>,
    outputs: VecDeque<Output>,
    events: VecDeque<Event>,
    probes: Vec<ProbeRequest>,
    changes: Vec<(usize, Health)>,
    pop_fallback: Vec<Vec<u16>>,
    pops_down: Vec<u16>,
}

impl Clb {
    pub fn new(config: ClbConfig, now_ns: u64) -> Clb {
        let mut backends: Vec<SocketAddr> = Vec::new();
        let listeners: Vec<Listener> = config
            .listeners
            .into_iter()
            .map(|lc| {
                let ports = lc
                    .backends
                    .iter()
                    .map(|b| match backends.iter().position(|a| *a == b.addr) {
                        Some(i) => i,
                        None => {
                            backends.push(b.addr);
                            backends.len() - 1
                        }
                    })
                    .collect();
                let names = lc.backends.iter().map(|b| b.addr.to_string()).collect();
                Listener {
                    wrr: Wrr::new(lc.backends.len()),
                    config: lc,
                    ports,
                    names,
                    maglev: None,
                }
            })
            .collect();
        let health = HealthChecker::new(config.health, backends.len(), now_ns);
        let mut clb = Clb {
            address: config.address,
            listeners,
            backends,
            health,
            conns: ConnTable::new(config.conn_table_capacity),
            persistence: LruCache::unbounded(),
            outputs: VecDeque::new(),
            events: VecDeque::new(),
            probes: Vec::new(),
            changes: Vec::new(),
            pop_fallback: config.pop_fallback,
            pops_down: Vec::new(),
        };
        clb.rebuild_maglev();
        clb
    }

    pub fn address(&self) -> IpAddr {
        self.address
    }

    pub fn conn_table(&self) -> &ConnTable {
        &self.conns
    }

    pub fn backend_healthy(&self, backend: SocketAddr) -> Option<bool> {
        let i = self.backends.iter().position(|b| *b == backend)?;
        Some(self.health.is_healthy(i))
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<u64> {
        self.health.poll_timeout()
    }

    /// Backbone health probing says whether a POP is reachable.
    pub fn set_pop_up(&mut self, pop_id: u16, up: bool) {
        self.pops_down.retain(|&p| p != pop_id);
        if !up {
            self.pops_down.push(pop_id);
        }
    }

    /// The POP a reply leaves through: the flow's latest ingress POP, or when that POP is
    /// down, its nearest live neighbour.
    fn reply_pop(&self, ingress: u16) -> u16 {
        if !self.pops_down.contains(&ingress) {
            return ingress;
        }
        let fallback = self
            .pop_fallback
            .get(usize::from(ingress))
            .and_then(|order| order.iter().copied().find(|p| !self.pops_down.contains(p)));
        fallback.unwrap_or(ingress)
    }

    /// An encapsulated client packet from a POP.
    pub fn handle_from_pop(&mut self, now_ns: u64, bytes: &[u8]) -> Result<(), Drop> {
        let (repr, packet) = ccn::decapsulate(bytes)?;
        if repr.direction != Direction::ToRegion {
            return Err(Drop::WrongDirection);
        }
        self.forward(now_ns, packet.to_vec(), Ingress::Pop(repr.pop_id))
    }

    /// A client packet that reached the region straight over the internet.
    pub fn handle_direct(&mut self, now_ns: u64, packet: Vec<u8>) -> Result<(), Drop> {
        self.forward(now_ns, packet, Ingress::Direct)
    }

    /// A packet from a backend: a reply to a client, or the answer to a health probe.
    pub fn handle_from_backend(&mut self, _now_ns: u64, mut packet: Vec<u8>) -> Result<(), Drop> {
        let info = inner::parse(&packet)?;
        if info.key.dst == self.address {
            self.probe_answer(&info);
            return Ok(());
        }
        let (fkey, conn) = self.conns.lookup_reply(&info.key).ok_or(Drop::NoConnection)?;
        inner::rewrite(&mut packet, Some((fkey.dst, fkey.dst_port)), None)?;
        let out = match conn.ingress {
            Ingress::Pop(ingress) => {
                let pop_id = self.reply_pop(ingress);
                Output::ToPop {
                    pop_id,
                    bytes: ccn::encapsulate(Direction::ToPop, pop_id, conn.flow_hash, &packet)?,
                }
            }
            Ingress::Direct => Output::ToClient { bytes: packet },
        };
        self.outputs.push_back(out);
        Ok(())
    }

    /// Runs health checking; call at `poll_timeout()`.
    pub fn handle_timeout(&mut self, now_ns: u64) {
        let mut probes = std::mem::take(&mut self.probes);
        let mut changes = std::mem::take(&mut self.changes);
        self.health.on_timeout(now_ns, &mut probes, &mut changes);
        for probe in probes.drain(..) {
            self.send_probe(probe);
        }
        self.probes = probes;
        self.apply_health_changes(&mut changes);
        self.changes = changes;
    }

    fn forward(&mut self, now_ns: u64, mut packet: Vec<u8>, ingress: Ingress) -> Result<(), Drop> {
        let info = inner::parse(&packet)?;
        let key = info.key;
        let li = self.find_listener(&key).ok_or(Drop::NoListener)?;
        let existing = self.conns.get_mut(&key).map(|c| {
            c.ingress = ingress;
            *c
        });
        let binding = match existing {
            Some(conn) if conn.listener == li && self.health.is_healthy(self.listeners[li].ports[conn.backend]) => {
                conn.backend
            }
            Some(conn) => {
                let binding = self.pick(li, &key, now_ns).ok_or(Drop::NoBackend)?;
                let from = self.backends[self.listeners[conn.listener].ports[conn.backend]];
                let to = self.backends[self.listeners[li].ports[binding]];
                self.events.push_back(Event::FlowMoved { from, to });
                self.insert_conn(key, li, binding, ingress);
                binding
            }
            None => {
                let binding = self.pick(li, &key, now_ns).ok_or(Drop::NoBackend)?;
                self.insert_conn(key, li, binding, ingress);
                binding
            }
        };
        let backend = self.backends[self.listeners[li].ports[binding]];
        inner::rewrite(&mut packet, None, Some((backend.ip(), backend.port())))?;
        self.outputs.push_back(Output::ToBackend { backend, bytes: packet });
        Ok(())
    }

    fn insert_conn(&mut self, key: FlowKey, listener: usize, binding: usize, ingress: Ingress) {
        let backend = self.backends[self.listeners[listener].ports[binding]];
        let reply_key = FlowKey {
            transport: key.transport,
            src: backend.ip(),
            src_port: backend.port(),
            dst: key.src,
            dst_port: key.src_port,
        };
        let conn = Conn {
            listener,
            backend: binding,
            ingress,
            flow_hash: key.flow_hash(),
            reply_key,
        };
        self.conns.insert(key, conn);
    }

    fn find_listener(&self, key: &FlowKey) -> Option<usize> {
        self.listeners.iter().position(|l| {
            l.config.vip == key.dst && l.config.port == key.dst_port && l.config.transport == key.transport
        })
    }

    fn candidates(&self, li: usize) -> Vec<Candidate<'_>> {
        let l = &self.listeners[li];
        l.config
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let healthy = self.health.is_healthy(l.ports[i]);
                Candidate {
                    name: &l.names[i],
                    weight: if healthy { u32::from(b.weight) } else { 0 },
                }
            })
            .collect()
    }

    fn eligible(&self, li: usize, binding: usize) -> bool {
        let l = &self.listeners[li];
        l.config.backends.get(binding).is_some_and(|b| b.weight > 0) && self.health.is_healthy(l.ports[binding])
    }

    /// Picks a binding for a new flow: a live persistence entry first, then the scheduler.
    fn pick(&mut self, li: usize, key: &FlowKey, now_ns: u64) -> Option<usize> {
        let persistence_ns = self.listeners[li].config.persistence_ns;
        if let Some(ttl_ns) = persistence_ns
            && let Some(&(binding, expires_ns)) = self.persistence.get(&(li, key.src))
            && expires_ns > now_ns
            && self.eligible(li, binding)
        {
            self.persistence.put((li, key.src), (binding, now_ns + ttl_ns));
            return Some(binding);
        }
        let binding = match self.listeners[li].config.scheduler {
            SchedulerKind::Wrr => {
                let weights: Vec<u32> = self.candidates(li).iter().map(|c| c.weight).collect();
                let Listener { names, wrr, .. } = &mut self.listeners[li];
                let cands: Vec<Candidate> = names
                    .iter()
                    .zip(&weights)
                    .map(|(n, &w)| Candidate { name: n, weight: w })
                    .collect();
                wrr.pick(&cands)?
            }
            SchedulerKind::Maglev { .. } => self.listeners[li].maglev.as_ref()?.lookup(key.flow_hash())?,
        };
        if let Some(ttl_ns) = persistence_ns {
            self.persistence.put((li, key.src), (binding, now_ns + ttl_ns));
            while self.persistence.len() > self.conns.capacity() {
                self.persistence.pop_lru();
            }
        }
        Some(binding)
    }

    fn rebuild_maglev(&mut self) {
        for li in 0..self.listeners.len() {
            if let SchedulerKind::Maglev { table_size } = self.listeners[li].config.scheduler {
                let table = Maglev::build(&self.candidates(li), table_size);
                self.listeners[li].maglev = Some(table);
            }
        }
    }

    fn apply_health_changes(&mut self, changes: &mut Vec<(usize, Health)>) {
        if changes.is_empty() {
            return;
        }
        for (port, state) in changes.drain(..) {
            let healthy = state == Health::Healthy;
            self.events.push_back(Event::HealthChanged {
                backend: self.backends[port],
                healthy,
            });
        }
        self.rebuild_maglev();
    }

    fn send_probe(&mut self, probe: ProbeRequest) {
        let backend = self.backends[probe.backend];
        let src_port = PROBE_PORT_BASE + probe.probe_id % (u16::MAX - PROBE_PORT_BASE);
        let seq = PROBE_ISN.wrapping_add(u32::from(probe.probe_id));
        let tcp = inner::bare_tcp(src_port, backend.port(), TcpControl::Syn, seq, None, Some(1460));
        if let Some(bytes) = inner::build_tcp(self.address, backend.ip(), &tcp) {
            self.outputs.push_back(Output::ToBackend { backend, bytes });
        }
    }

    /// A SYN-ACK completes a probe (answered with RST, as a half-open check does); a RST
    /// refuses it.
    fn probe_answer(&mut self, info: &Inner) {
        let Some(flags) = info.tcp else { return };
        let Some(ack) = info.ack_number else { return };
        let probe_id = ack.wrapping_sub(1).wrapping_sub(PROBE_ISN) as u16;
        let Some(port) = self.health.backend_of_probe(probe_id) else {
            return;
        };
        let backend = self.backends[port];
        if info.key.src != backend.ip() || info.key.src_port != backend.port() || info.key.transport != Transport::Tcp {
            return;
        }
        let ok = flags.syn && flags.ack && !flags.rst;
        let mut changes = std::mem::take(&mut self.changes);
        self.health.on_answer(port, probe_id, ok, &mut changes);
        if ok {
            self.send_probe_reset(backend, info);
        }
        self.apply_health_changes(&mut changes);
        self.changes = changes;
    }

    fn send_probe_reset(&mut self, backend: SocketAddr, info: &Inner) {
        let seq = info.ack_number.unwrap_or(0);
        let tcp = inner::bare_tcp(info.key.dst_port, backend.port(), TcpControl::Rst, seq, None, None);
        if let Some(bytes) = inner::build_tcp(self.address, backend.ip(), &tcp) {
            self.outputs.push_back(Output::ToBackend { backend, bytes });
        }
    }
}
