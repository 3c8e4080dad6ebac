//! The shared liveness core (`anyedge_ccn::Prober`) driven over UDP: a probe to each
//! peer's health port every `failover.probe_interval` (the wire format is
//! `anyedge_proto::probe`), echoed answers matched back, peers' Down/Up
//! handed to the caller. POPs probe CLB nodes, CLB nodes POPs, the internet router POPs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyedge_ccn::{ProbeConfig, ProbeOutput, Prober};
use anyedge_proto::probe;
use anyedge_topology::Topology;
use tokio::net::UdpSocket;

use crate::layout::HEALTH_PORT;

/// Probing as the file sets it (`failover.probe_interval`, `failover.probe_misses`).
pub fn probe_config(t: &Topology) -> ProbeConfig {
    t.failover.probe()
}

/// Answers liveness probes on the health port (an echo) for as long as the node runs.
pub async fn answer_probes() -> Result<(), String> {
    let health = UdpSocket::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), HEALTH_PORT))
        .await
        .map_err(|e| format!("bind health port: {e}"))?;
    tokio::spawn(async move {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = health.recv_from(&mut buf).await {
            // Only well-formed requests are answered: nothing to reflect, no ping-pong.
            if let Ok(answer) = probe::answer(&buf[..n]) {
                let _ = health.send_to(&answer, from).await;
            }
        }
    });
    Ok(())
}

/// A peer whose state changed: (peer index, up).
pub type Change = (usize, bool);

/// A prober over UDP: `sock` receives the answers (await `sock.recv_from` in a select and
/// hand the bytes to `answered`); `tick` when `wake_at` comes (the core's own timer, so
/// rounds keep the configured cadence).
pub struct UdpProber {
    prober: Prober,
    peers: Vec<SocketAddr>,
    pub sock: UdpSocket,
}

impl UdpProber {
    /// Probes `peers` (health-port addresses) from `local`.
    pub async fn bind(local: IpAddr, peers: Vec<SocketAddr>, config: ProbeConfig, now_ns: u64) -> Result<Self, String> {
        let sock = UdpSocket::bind(SocketAddr::new(local, 0)).await.map_err(|e| format!("bind probe socket: {e}"))?;
        Ok(UdpProber { prober: Prober::new(peers.len(), config, now_ns), peers, sock })
    }

    /// When the next round is due, for a driver whose clock started at `start`.
    pub fn wake_at(&self, start: std::time::Instant) -> tokio::time::Instant {
        tokio::time::Instant::from_std(start + Duration::from_nanos(self.prober.poll_timeout()))
    }

    /// Counts misses, sends the next round; the peers whose state changed, (peer, up).
    pub async fn tick(&mut self, now_ns: u64) -> Vec<Change> {
        self.prober.handle_timeout(now_ns);
        let (changes, sends) = self.outputs();
        for (peer, seq) in sends {
            let request = probe::Repr { answer: false, peer: peer as u16, seq }.emit();
            let _ = self.sock.send_to(&request, self.peers[peer]).await;
        }
        changes
    }

    /// Bytes that came back on `sock`: an answer if they are one of our echoed probes.
    /// The peers it brought back, at once (not at the next round).
    pub fn answered(&mut self, bytes: &[u8]) -> Vec<Change> {
        if let Ok((peer, seq)) = probe::parse_answer(bytes) {
            self.prober.handle_answer(usize::from(peer), seq);
        }
        self.outputs().0
    }

    /// The prober's outputs: peers changed (peer, up), and probes to send (peer, seq).
    fn outputs(&mut self) -> (Vec<Change>, Vec<(usize, u64)>) {
        let (mut changes, mut sends) = (Vec::new(), Vec::new());
        while let Some(out) = self.prober.poll_output() {
            match out {
                ProbeOutput::Send { peer, seq } => sends.push((peer, seq)),
                ProbeOutput::Down { peer } => changes.push((peer, false)),
                ProbeOutput::Up { peer } => changes.push((peer, true)),
            }
        }
        (changes, sends)
    }
}
