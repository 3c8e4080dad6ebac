//! The node's SNAT ports: which (address, port) each flow toward a backend took, from
//! this node's share of the range, and how full each pool is.
//!
//! A pool is one (SNAT address, transport, backend): a reply names all four, so the same
//! port serves flows to different backends at once, and a flood toward one backend
//! leaves every other backend's ports alone. Nodes of a region take interleaved ports
//! (`port ≡ node_index mod node_count`), so two nodes never hand out the same one.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use anyedge_proto::Transport;

use crate::health_check::PROBE_PORTS;

/// The port range SNAT draws from; health probes use the ports above it.
pub const SNAT_PORTS: std::ops::Range<u16> = 1024..61_000;
const _: () = assert!(SNAT_PORTS.end <= *PROBE_PORTS.start(), "SNAT ports and health-probe ports never meet");
const _: () = assert!(SNAT_PORTS.start >= 1024, "SNAT never takes a well-known port");

/// One pool: ports of one address toward one backend over one transport.
type Pool = (IpAddr, Transport, SocketAddr);

/// The SNAT ports of one node.
#[derive(Debug)]
pub struct SnatPool {
    ips: Vec<IpAddr>,
    /// Ports in use: (address, port, transport, the backend it was taken toward).
    used: HashSet<(IpAddr, u16, Transport, SocketAddr)>,
    /// Ports taken per pool; a pool with none taken has no entry. Sums to `used.len()`.
    taken: HashMap<Pool, usize>,
    cursor: u32,
    node_index: u16,
    node_count: u16,
    /// Ports taken back from flows that never got established, for new ones.
    evictions: u64,
}

impl SnatPool {
    /// The pool of node `node_index` of `node_count`, over these SNAT addresses.
    pub fn new(ips: Vec<IpAddr>, node_index: u16, node_count: u16) -> SnatPool {
        let node_count = node_count.max(1);
        assert!(node_index < node_count, "node {node_index} of a region of {node_count}");
        SnatPool { ips, used: HashSet::new(), taken: HashMap::new(), cursor: 0, node_index, node_count, evictions: 0 }
    }

    /// Ports of one pool this node may hand out.
    fn share(&self) -> u32 {
        u32::from(SNAT_PORTS.end - SNAT_PORTS.start) / u32::from(self.node_count)
    }

    /// The SNAT address in `backend`'s family, if the node has one.
    pub fn address_for(&self, backend: SocketAddr) -> Option<IpAddr> {
        self.ips.iter().copied().find(|a| a.is_ipv4() == backend.is_ipv4())
    }

    /// A free port toward `backend` on `ip`, when the pool is not full. A full pool is
    /// known without a look at every port (a flood would pay that per SYN).
    pub fn take(&mut self, ip: IpAddr, transport: Transport, backend: SocketAddr) -> Option<u16> {
        let share = self.share();
        let full = self.taken.get(&(ip, transport, backend)).is_some_and(|&n| n >= share as usize);
        for _ in 0..if full { 0 } else { share } {
            let k = self.cursor % share;
            self.cursor = self.cursor.wrapping_add(1);
            let port = SNAT_PORTS.start + (k * u32::from(self.node_count)) as u16 + self.node_index;
            debug_assert!(SNAT_PORTS.contains(&port) && (port - SNAT_PORTS.start) % self.node_count == self.node_index);
            if self.used.insert((ip, port, transport, backend)) {
                *self.taken.entry((ip, transport, backend)).or_default() += 1;
                return Some(port);
            }
        }
        None
    }

    /// A port an evicted flow held, handed straight to the new flow: it stays taken.
    pub fn hand_over(&mut self, ip: IpAddr, port: u16, transport: Transport, backend: SocketAddr) {
        self.evictions += 1;
        if self.used.insert((ip, port, transport, backend)) {
            *self.taken.entry((ip, transport, backend)).or_default() += 1;
        }
    }

    /// Gives a port taken toward `backend` back.
    pub fn free(&mut self, ip: IpAddr, port: u16, transport: Transport, backend: SocketAddr) {
        let pool = (ip, transport, backend);
        if !self.used.remove(&(ip, port, transport, backend)) {
            return;
        }
        let n = self.taken.get_mut(&pool);
        debug_assert!(n.as_ref().is_some_and(|n| **n > 0), "a used port counts in its pool");
        if let Some(n) = n {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.taken.remove(&pool);
            }
        }
        debug_assert_eq!(self.taken.values().sum::<usize>(), self.used.len());
    }

    /// Whether this port is taken toward `backend`.
    pub fn is_taken(&self, ip: IpAddr, port: u16, transport: Transport, backend: SocketAddr) -> bool {
        self.used.contains(&(ip, port, transport, backend))
    }

    /// SNAT ports taken back from flows that never got established, for new ones.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKEND: &str = "10.1.0.1:80";

    #[test]
    fn nodes_of_a_region_take_disjoint_ports_and_a_freed_port_is_taken_again() {
        let ip: IpAddr = "10.9.0.1".parse().unwrap();
        let backend: SocketAddr = BACKEND.parse().unwrap();
        let mut a = SnatPool::new(vec![ip], 0, 2);
        let mut b = SnatPool::new(vec![ip], 1, 2);
        let pa = a.take(ip, Transport::Tcp, backend).unwrap();
        let pb = b.take(ip, Transport::Tcp, backend).unwrap();
        assert_ne!(pa % 2, pb % 2, "interleaved shares");
        a.free(ip, pa, Transport::Tcp, backend);
        assert!(!a.is_taken(ip, pa, Transport::Tcp, backend));
        // Freeing twice changes nothing.
        a.free(ip, pa, Transport::Tcp, backend);
        let share = a.share() as usize;
        let ports: HashSet<u16> = (0..share).filter_map(|_| a.take(ip, Transport::Tcp, backend)).collect();
        assert_eq!(ports.len(), share, "every port of the share, once");
        assert_eq!(a.take(ip, Transport::Tcp, backend), None, "a full pool");
        let other: SocketAddr = "10.1.0.2:80".parse().unwrap();
        assert!(a.take(ip, Transport::Tcp, other).is_some(), "another backend's pool is its own");
    }

    #[test]
    fn three_nodes_share_the_range_without_a_port_in_common() {
        let ip: IpAddr = "10.9.0.1".parse().unwrap();
        let backend: SocketAddr = BACKEND.parse().unwrap();
        let mut taken = HashSet::new();
        for node in 0..3 {
            let mut pool = SnatPool::new(vec![ip], node, 3);
            for _ in 0..100 {
                let port = pool.take(ip, Transport::Tcp, backend).expect("room");
                assert!(SNAT_PORTS.contains(&port));
                assert!(taken.insert(port), "port {port} handed out twice");
            }
        }
        assert_eq!(taken.len(), 300);
    }
}
