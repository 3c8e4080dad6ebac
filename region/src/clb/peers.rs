//! A CLB node and the region's other nodes: what it tells them of its flows and
//! persistence, and what it learns from them (a restarted node learns everything).

use std::net::SocketAddr;

use anyedge_ccn::auth::NodeId;
use anyedge_proto::FlowKey;
use anyedge_proto::seal::Kind;
use anyedge_proto::sync::{Entry, Message};

use super::persistence::Sticky;
use super::{Clb, ClbDrop, idle_ns};
use crate::sync::{PeerFlow, SyncStats};

/// Milliseconds of a span in nanoseconds, as sync entries carry it.
fn ms(ns: u64) -> u32 {
    u32::try_from(ns / 1_000_000).unwrap_or(u32::MAX)
}

impl Clb {
    /// Connection-table sync traffic of this node.
    pub fn sync_stats(&self) -> SyncStats {
        self.sync.stats
    }

    /// Flows the region's other nodes told this one of (still live or not yet expired).
    pub fn peer_flows(&self) -> usize {
        self.sync.peer_flows()
    }

    /// A sealed sync message from another CLB node of the region; it must name its sealer.
    pub fn handle_from_peer(&mut self, now_ns: u64, bytes: &[u8]) -> Result<(), ClbDrop> {
        self.now_ns = self.now_ns.max(now_ns);
        let (sender, bytes) = self.outbox.open(Kind::Sync, bytes).map_err(ClbDrop::Auth)?;
        let message = Message::parse(bytes)?;
        let named = match message {
            Message::Request { from } | Message::Entries { from, .. } => from,
        };
        if sender != (NodeId::Clb { region: self.node.region, node: named }) || !self.sync.is_peer(named) {
            return Err(ClbDrop::NotPeer);
        }
        match message {
            Message::Request { from } => {
                self.sync.received(bytes.len(), 0);
                let entries = self.table_entries(now_ns);
                let out = self.sync.dump(from, &entries);
                self.outbox.send_to_peers(self.node.region, out);
            }
            Message::Entries { entries, .. } => {
                self.sync.received(bytes.len(), entries.len());
                for e in entries {
                    self.learn(now_ns, e);
                }
            }
        }
        Ok(())
    }

    /// Takes in one entry a peer sent.
    fn learn(&mut self, now_ns: u64, entry: Entry) {
        match entry {
            Entry::Flow { key, backend, ttl_ms } => {
                debug_assert_eq!(key.src.is_ipv4(), key.dst.is_ipv4(), "the parser reads a VIP in its client's family");
                // A flow this node serves itself keeps what this node decided.
                if !self.conns.contains(&key) {
                    let expires_ns = now_ns + u64::from(ttl_ms) * 1_000_000;
                    self.sync.learn_flow(key, PeerFlow { backend, expires_ns });
                }
            }
            Entry::Persist { transport, client, vip, backend, ttl_ms } => {
                let Some(li) = self.listeners.find_vip(vip.ip(), transport, vip.port()) else { return };
                let Some(binding) = self.binding_of(li, backend) else { return };
                let expires_ns = now_ns + u64::from(ttl_ms) * 1_000_000;
                // Known to the peers already: not sent on again.
                self.persistence.put(li, client, Sticky { binding, expires_ns, synced_ns: now_ns });
            }
        }
    }

    /// Everything a restarting peer should learn: this node's flows, the flows it knows
    /// of from other peers, and live persistence.
    fn table_entries(&self, now_ns: u64) -> Vec<Entry> {
        let mut out: Vec<Entry> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.closing && c.snat.is_none())
            .map(|(key, c)| {
                let left = (c.last_seen_ns + idle_ns(key.transport)).saturating_sub(now_ns);
                Entry::Flow { key: *key, backend: self.backend_addr(c.listener, c.backend), ttl_ms: ms(left) }
            })
            .collect();
        out.extend(self.sync.live_peer_flows(now_ns).map(|(key, f)| Entry::Flow {
            key: *key,
            backend: f.backend,
            ttl_ms: ms(f.expires_ns - now_ns),
        }));
        for (li, client, sticky) in self.persistence.iter() {
            let l = &self.listeners[li];
            if sticky.expires_ns > now_ns && !l.is_removed() {
                out.push(Entry::Persist {
                    transport: l.config().transport,
                    client,
                    vip: SocketAddr::new(l.config().vip, l.config().port),
                    backend: self.backend_addr(li, sticky.binding),
                    ttl_ms: ms(sticky.expires_ns - now_ns),
                });
            }
        }
        out
    }

    /// The binding of listener `li` that sends to `backend`.
    pub(super) fn binding_of(&self, li: usize, backend: SocketAddr) -> Option<usize> {
        self.listeners[li].bindings().iter().position(|b| self.backends[b.port].addr == backend)
    }

    /// Tells the region's other nodes where a flow goes.
    pub(super) fn sync_flow(&mut self, now_ns: u64, key: FlowKey) {
        let Some(conn) = self.conns.get_mut(&key) else { return };
        if conn.snat.is_some() || !self.sync.enabled() {
            // Replies to a node's own SNAT address cannot reach another node.
            return;
        }
        debug_assert!(conn.synced_ns <= now_ns, "told of no later than now");
        conn.synced_ns = now_ns;
        let (li, b) = (conn.listener, conn.backend);
        let ttl_ms = ms(idle_ns(key.transport));
        let backend = self.backend_addr(li, b);
        self.sync.queue(now_ns, Entry::Flow { key, backend, ttl_ms });
    }

    /// Tells the region's other nodes that `client` sticks to `binding` of listener `li`.
    pub(super) fn sync_persistence(
        &mut self,
        now_ns: u64,
        li: usize,
        client: std::net::IpAddr,
        binding: usize,
        ttl_ns: u64,
    ) {
        let l = &self.listeners[li];
        let entry = Entry::Persist {
            transport: l.config().transport,
            client,
            vip: SocketAddr::new(l.config().vip, l.config().port),
            backend: self.backend_addr(li, binding),
            ttl_ms: ms(ttl_ns),
        };
        self.sync.queue(now_ns, entry);
    }
}
