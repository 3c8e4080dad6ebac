//! The shared liveness core (`anyedge_ccn::Prober`) driven over UDP: a probe to each
//! peer's health port every `PROBE_INTERVAL`, echoed answers matched back, peers' Down/Up
//! handed to the caller. POPs probe CLB nodes, CLB nodes POPs, the internet router POPs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyedge_ccn::{ProbeConfig, ProbeOutput, Prober};
use anyedge_topology::Topology;
use tokio::net::UdpSocket;

use crate::layout::HEALTH_PORT;

/// How often every peer is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(50);

const MAGIC: &[u8; 4] = b"AEpb";
const PROBE_LEN: usize = 14;

/// Probing as the file sets it: every `PROBE_INTERVAL`, down after `failover.pop_detect`
/// worth of unanswered probes in a row.
pub fn probe_config(t: &Topology) -> ProbeConfig {
    let interval_ns = PROBE_INTERVAL.as_nanos() as u64;
    ProbeConfig { interval_ns, misses: (t.failover.pop_detect_ns / interval_ns).max(1) as u32 }
}

/// Answers liveness probes on the health port (an echo) for as long as the node runs.
pub async fn answer_probes() -> Result<(), String> {
    let health = UdpSocket::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), HEALTH_PORT))
        .await
        .map_err(|e| format!("bind health port: {e}"))?;
    tokio::spawn(async move {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = health.recv_from(&mut buf).await {
            let _ = health.send_to(&buf[..n], from).await;
        }
    });
    Ok(())
}

/// A prober over UDP: `sock` receives the answers (await `sock.recv_from` in a select and
/// hand the bytes to `answered`); `tick` on every `PROBE_INTERVAL`.
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

    /// Counts misses, sends the next round; the peers whose state changed, (peer, up).
    pub async fn tick(&mut self, now_ns: u64) -> Vec<(usize, bool)> {
        self.prober.handle_timeout(now_ns);
        let mut changes = Vec::new();
        while let Some(out) = self.prober.poll_output() {
            match out {
                ProbeOutput::Send { peer, seq } => {
                    let _ = self.sock.send_to(&probe_bytes(peer, seq), self.peers[peer]).await;
                }
                ProbeOutput::Down { peer } => changes.push((peer, false)),
                ProbeOutput::Up { peer } => changes.push((peer, true)),
            }
        }
        changes
    }

    /// Bytes that came back on `sock`: an answer if they are one of our echoed probes.
    pub fn answered(&mut self, bytes: &[u8]) {
        if let Some((peer, seq)) = probe_answer(bytes) {
            self.prober.handle_answer(peer, seq);
        }
    }
}

/// A probe: magic, peer index, sequence number (the peer echoes it back).
fn probe_bytes(peer: usize, seq: u64) -> [u8; PROBE_LEN] {
    let mut b = [0u8; PROBE_LEN];
    b[..4].copy_from_slice(MAGIC);
    b[4..6].copy_from_slice(&(peer as u16).to_be_bytes());
    b[6..].copy_from_slice(&seq.to_be_bytes());
    b
}

/// The (peer, seq) an echoed probe names; anything else is not an answer.
fn probe_answer(bytes: &[u8]) -> Option<(usize, u64)> {
    if bytes.len() != PROBE_LEN || &bytes[..4] != MAGIC {
        return None;
    }
    let peer = u16::from_be_bytes([bytes[4], bytes[5]]);
    let seq = u64::from_be_bytes(bytes[6..PROBE_LEN].try_into().ok()?);
    Some((usize::from(peer), seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_reads_back_and_nothing_else_passes_for_one() {
        assert_eq!(probe_answer(&probe_bytes(3, 77)), Some((3, 77)));
        assert_eq!(probe_answer(b"anyedge-router-probe"), None);
        assert_eq!(probe_answer(&probe_bytes(3, 77)[..13]), None);
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = probe_answer(&bytes);
        }
    }
}
