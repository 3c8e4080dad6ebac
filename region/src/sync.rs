//! Connection-table sync between the CLB nodes of a region (sans-IO): each node queues
//! the flows it schedules (and the persistence it sets) and sends them to its peers in
//! batches every `SYNC_INTERVAL_NS`; what peers send is kept in a bounded table of
//! their flows, so when a node dies its flows continue on the same backend at whichever
//! node the POPs send them to next. A node that (re)starts asks its peers for their
//! tables. Bounded everywhere: the queue drops (and counts) what it cannot hold, the
//! peer table is an LRU of the connection table's capacity.
//!
//! A flow scheduled within the last sync interval before its node dies is not yet known
//! to the peers: it is scheduled afresh where it lands (Maglev and source hash pick the
//! same backend anyway; WRR and WLC may not).

use std::collections::VecDeque;
use std::net::SocketAddr;

use anyedge_ccn::Lru;
use anyedge_proto::FlowKey;
use anyedge_proto::sync::{BATCH_BYTES_MAX, Entry, HEADER_LEN, Message, entry_len};

/// How long entries wait before they are sent (and so, how much a crash can lose).
pub const SYNC_INTERVAL_NS: u64 = 20_000_000;
/// Entries waiting to be sent, at most.
pub const SYNC_QUEUE_MAX: usize = 8192;

/// Sync traffic of one node.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SyncStats {
    pub messages_sent: u64,
    pub bytes_sent: u64,
    pub entries_sent: u64,
    pub messages_received: u64,
    pub bytes_received: u64,
    pub entries_received: u64,
    /// Flows a peer scheduled that arrived here and kept their backend.
    pub flows_adopted: u64,
    /// Entries dropped because the queue was full.
    pub queue_overflow: u64,
}

impl SyncStats {
    /// Both counts together (a node's across restarts).
    pub fn plus(&self, o: &SyncStats) -> SyncStats {
        SyncStats {
            messages_sent: self.messages_sent + o.messages_sent,
            bytes_sent: self.bytes_sent + o.bytes_sent,
            entries_sent: self.entries_sent + o.entries_sent,
            messages_received: self.messages_received + o.messages_received,
            bytes_received: self.bytes_received + o.bytes_received,
            entries_received: self.entries_received + o.entries_received,
            flows_adopted: self.flows_adopted + o.flows_adopted,
            queue_overflow: self.queue_overflow + o.queue_overflow,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerFlow {
    pub backend: SocketAddr,
    pub expires_ns: u64,
}

#[derive(Debug)]
pub(crate) struct ConnSync {
    node: u16,
    nodes: u16,
    pending: VecDeque<Entry>,
    flush_at: Option<u64>,
    /// Flows peers scheduled: where they go, until when.
    peer_flows: Lru<FlowKey, PeerFlow>,
    capacity: usize,
    pub(crate) stats: SyncStats,
}

impl ConnSync {
    pub(crate) fn new(node: u16, nodes: u16, capacity: usize) -> ConnSync {
        assert!(node < nodes.max(1), "node {node} of a region of {nodes}");
        ConnSync {
            node,
            nodes,
            pending: VecDeque::new(),
            flush_at: None,
            peer_flows: Lru::new(),
            capacity: capacity.max(1),
            stats: SyncStats::default(),
        }
    }

    /// Whether this node has peers to sync with.
    pub(crate) fn enabled(&self) -> bool {
        self.nodes > 1
    }

    fn peers(&self) -> impl Iterator<Item = u16> + use<> {
        let node = self.node;
        (0..self.nodes).filter(move |&n| n != node)
    }

    /// The request a starting node sends each peer.
    pub(crate) fn requests(&mut self) -> Vec<(u16, Vec<u8>)> {
        let bytes = Message::Request { from: self.node }.emit();
        let out: Vec<_> = self.peers().map(|p| (p, bytes.clone())).collect();
        debug_assert_eq!(out.len(), usize::from(self.nodes.saturating_sub(1)), "one request to every other node");
        self.count_sent(&out, 0);
        out
    }

    /// Queues an entry for the next batch.
    pub(crate) fn queue(&mut self, now_ns: u64, entry: Entry) {
        if !self.enabled() {
            return;
        }
        if self.pending.len() >= SYNC_QUEUE_MAX {
            self.stats.queue_overflow += 1;
            return;
        }
        self.pending.push_back(entry);
        self.flush_at.get_or_insert(now_ns + SYNC_INTERVAL_NS);
        debug_assert!(self.pending.len() <= SYNC_QUEUE_MAX, "the queue is bounded");
    }

    pub(crate) fn poll_timeout(&self) -> Option<u64> {
        self.flush_at
    }

    /// When due, the batches for every peer.
    pub(crate) fn flush(&mut self, now_ns: u64) -> Vec<(u16, Vec<u8>)> {
        if self.flush_at.is_none_or(|at| at > now_ns) {
            return Vec::new();
        }
        self.flush_at = None;
        let entries: Vec<Entry> = self.pending.drain(..).collect();
        debug_assert!(!entries.is_empty() || !self.enabled(), "a flush is armed only by a queued entry");
        let batches = batches(self.node, &entries);
        let out: Vec<_> = self.peers().flat_map(|p| batches.iter().map(move |b| (p, b.clone()))).collect();
        self.count_sent(&out, entries.len() as u64 * u64::from(self.nodes - 1));
        out
    }

    /// Batches of `entries` for one peer (a table dump).
    pub(crate) fn dump(&mut self, to: u16, entries: &[Entry]) -> Vec<(u16, Vec<u8>)> {
        let out: Vec<_> = batches(self.node, entries).into_iter().map(|b| (to, b)).collect();
        self.count_sent(&out, entries.len() as u64);
        out
    }

    fn count_sent(&mut self, out: &[(u16, Vec<u8>)], entries: u64) {
        self.stats.messages_sent += out.len() as u64;
        self.stats.bytes_sent += out.iter().map(|(_, b)| b.len() as u64).sum::<u64>();
        self.stats.entries_sent += entries;
    }

    /// Whether a message claiming to come from `from` may: a peer of this region.
    pub(crate) fn is_peer(&self, from: u16) -> bool {
        from < self.nodes && from != self.node
    }

    pub(crate) fn received(&mut self, bytes: usize, entries: usize) {
        self.stats.messages_received += 1;
        self.stats.bytes_received += bytes as u64;
        self.stats.entries_received += entries as u64;
    }

    pub(crate) fn learn_flow(&mut self, key: FlowKey, flow: PeerFlow) {
        self.peer_flows.put(key, flow);
        while self.peer_flows.len() > self.capacity {
            self.peer_flows.pop_lru();
        }
        debug_assert!(self.peer_flows.len() <= self.capacity, "peers' flows are bounded like the node's own");
    }

    /// Where a peer sent this flow, if it is still live.
    pub(crate) fn peer_flow(&mut self, key: &FlowKey, now_ns: u64) -> Option<SocketAddr> {
        match self.peer_flows.peek(key) {
            Some(f) if f.expires_ns > now_ns => Some(f.backend),
            Some(_) => {
                self.peer_flows.pop(key);
                debug_assert!(!self.peer_flows.contains(key));
                None
            }
            None => None,
        }
    }

    pub(crate) fn forget_flow(&mut self, key: &FlowKey) {
        self.peer_flows.pop(key);
    }

    /// Peer flows still live, for a table dump.
    pub(crate) fn live_peer_flows(&self, now_ns: u64) -> impl Iterator<Item = (&FlowKey, &PeerFlow)> {
        self.peer_flows.iter().filter(move |(_, f)| f.expires_ns > now_ns)
    }

    /// Forgets expired peer flows (oldest-renewed first, stopping at the first live one).
    pub(crate) fn expire(&mut self, now_ns: u64) {
        while let Some((_, f)) = self.peer_flows.peek_lru() {
            if f.expires_ns > now_ns {
                break;
            }
            self.peer_flows.pop_lru();
        }
        debug_assert!(self.peer_flows.peek_lru().is_none_or(|(_, f)| f.expires_ns > now_ns));
    }

    pub(crate) fn peer_flows(&self) -> usize {
        self.peer_flows.len()
    }
}

/// Entries cut into messages of at most `BATCH_BYTES_MAX` bytes.
fn batches(from: u16, entries: &[Entry]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut batch = Vec::new();
    let mut size = HEADER_LEN;
    for e in entries {
        let len = entry_len(e);
        if !batch.is_empty() && (size + len > BATCH_BYTES_MAX || batch.len() == usize::from(u16::MAX)) {
            out.push(Message::Entries { from, entries: std::mem::take(&mut batch) }.emit());
            size = HEADER_LEN;
        }
        batch.push(*e);
        size += len;
        debug_assert!(batch.len() == 1 || size <= BATCH_BYTES_MAX, "a batch past the limit holds one entry");
    }
    if !batch.is_empty() {
        out.push(Message::Entries { from, entries: batch }.emit());
    }
    out
}
