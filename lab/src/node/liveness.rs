//! The shared liveness core (`anyedge_ccn::LivenessProber`) driven over UDP: a probe to each
//! peer's health port every `failover.probe_interval` (the wire format is
//! `anyedge_proto::liveness`), echoed answers matched back, peers' Down/Up
//! handed to the caller. POPs probe the CLB nodes of the regions they forward to, CLB
//! nodes the POPs they reply through (`failover.probe_idle`; a POP's transit finds it
//! dead by BFD, in BIRD).
//! Probes between POPs and CLB nodes are sealed with the nodes' backbone keys (requests
//! and answers each their own kind), as in the simulator; a plain probe gets no answer.

use crate::error::Doing;
use crate::node::NodeError;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyedge_ccn::{Keyring, LivenessOutput, LivenessProber, NodeId};
use anyedge_proto::liveness;
use anyedge_proto::seal::Kind;
use anyedge_topology::Topology;
use tokio::net::UdpSocket;

use crate::layout::HEALTH_PORT;

/// Answers liveness probes on the health port for as long as the node runs: sealed ones
/// from backbone peers `keys` holds keys for, answered sealed. Everything else (plain
/// probes included: nothing on the internet probes a node since BGP replaced the lab's
/// router) is dropped and counted.
pub async fn answer_probes(mut keys: Keyring, drops: crate::node::drops::Drops) -> Result<(), NodeError> {
    let health = UdpSocket::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), HEALTH_PORT))
        .await
        .doing(|| "bind health port".into())?;
    tokio::spawn(async move {
        let mut buf = [0u8; 256];
        while let Ok((n, from)) = health.recv_from(&mut buf).await {
            let answer = match keys.open(Kind::Probe, &buf[..n]) {
                // Only well-formed requests are answered: nothing to reflect, no ping-pong.
                Ok((peer, request)) => {
                    liveness::answer(request).ok().and_then(|a| keys.seal(peer, Kind::ProbeAnswer, &a))
                }
                Err(e) => {
                    drops.count(Err(e));
                    None
                }
            };
            if let Some(answer) = answer {
                let _ = health.send_to(&answer, from).await;
            }
        }
    });
    Ok(())
}

/// A peer whose state changed: (peer index, up).
pub type PeerChange = (usize, bool);

/// A prober over UDP: `sock` receives the answers (await `sock.recv_from` in a select and
/// hand the bytes to `answered`); `tick` when `wake_at` comes (the core's own timer, so
/// rounds keep the configured cadence).
pub struct UdpLiveness {
    prober: LivenessProber,
    peers: Vec<SocketAddr>,
    /// The keys to seal with, and each peer's backbone id.
    keys: Keyring,
    ids: Vec<NodeId>,
    pub sock: UdpSocket,
}

impl UdpLiveness {
    /// Probes `peers` (health-port addresses) from `local`, sealed for each peer's
    /// backbone id, as the file's `failover` says: on demand (the peers the node
    /// forwarded to, [`UdpLiveness::used`]) unless `probe_idle: off`.
    pub async fn bind(
        local: IpAddr,
        peers: Vec<SocketAddr>,
        (keys, ids): (Keyring, Vec<NodeId>),
        t: &Topology,
        now_ns: u64,
    ) -> Result<Self, NodeError> {
        let sock = UdpSocket::bind(SocketAddr::new(local, 0)).await.doing(|| "bind probe socket".to_string())?;
        let prober = t.failover.backbone_prober(peers.len(), now_ns);
        Ok(UdpLiveness { prober, peers, keys, ids, sock })
    }

    /// The node forwarded to `peer` since the last round (its core's demand): probed from
    /// this round on.
    pub fn used(&mut self, peer: usize, now_ns: u64) {
        self.prober.handle_use(peer, now_ns);
    }

    /// When the next round is due, for a driver whose clock started at `start`.
    pub fn wake_at(&self, start: std::time::Instant) -> tokio::time::Instant {
        tokio::time::Instant::from_std(start + Duration::from_nanos(self.prober.poll_timeout()))
    }

    /// Counts misses, sends the next round; the peers whose state changed, (peer, up).
    pub async fn tick(&mut self, now_ns: u64) -> Vec<PeerChange> {
        self.prober.handle_timeout(now_ns);
        let (changes, sends) = self.outputs();
        for (peer, seq) in sends {
            let request = liveness::Repr { answer: false, peer: peer as u16, seq }.emit();
            if let Some(bytes) = self.keys.seal(self.ids[peer], Kind::Probe, &request) {
                let _ = self.sock.send_to(&bytes, self.peers[peer]).await;
            }
        }
        changes
    }

    /// Bytes that came back on `sock`: an answer if they are one of our echoed probes
    /// (sealed by the peer it names). The peers it brought back, at once (not at the next
    /// round).
    pub fn answered(&mut self, bytes: &[u8]) -> Vec<PeerChange> {
        let ids = &self.ids;
        let answer = self.keys.open(Kind::ProbeAnswer, bytes).ok().and_then(|(from, answer)| {
            liveness::parse_answer(answer).ok().filter(|(peer, _)| ids.get(usize::from(*peer)) == Some(&from))
        });
        if let Some((peer, seq)) = answer {
            self.prober.handle_answer(usize::from(peer), seq);
        }
        self.outputs().0
    }

    /// The prober's outputs: peers changed (peer, up), and probes to send (peer, seq).
    fn outputs(&mut self) -> (Vec<PeerChange>, Vec<(usize, u64)>) {
        let (mut changes, mut sends) = (Vec::new(), Vec::new());
        while let Some(out) = self.prober.poll_output() {
            match out {
                LivenessOutput::Send { peer, seq } => sends.push((peer, seq)),
                LivenessOutput::Down { peer } => changes.push((peer, false)),
                LivenessOutput::Up { peer } => changes.push((peer, true)),
            }
        }
        (changes, sends)
    }
}
