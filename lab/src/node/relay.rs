//! BGP between transits, as late as the internet makes it: the transits' veth links carry
//! no delay (the clients' packets wait out their whole path at the POP, on the model's
//! link), so each transit's speaker reaches every other through a relay in its own node
//! process that holds the bytes its speaker sends for the delay model's one-way delay
//! between the two transits' sites (half of the round trip the MED carries).
//!
//! Transit `x`'s speaker peers with transit `y` at a loopback address of its own,
//! [`relay_addr`] (`127.1.Y.Y` for the IPv4 session, `127.2.Y.Y` for the IPv6 one), port
//! [`RELAY_PORT`]: `x`'s relay listens there and carries the session to `y`'s relay on
//! the x–y link (port [`RELAY_PORT`] + family), which hands it to `y`'s speaker from
//! `x`'s own relay address, so each speaker tells its peers apart by address as before.
//! Each relay delays what its own speaker says; the lower-numbered transit connects, the
//! other waits (`passive`). Routes carry the link's address as their next hop (`next hop
//! address`), so the kernel forwards over the link as with a direct session.

use crate::error::Doing;
use crate::node::NodeError;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::plan::LinkEnds;

/// The port relays listen on (the speaker keeps 179 for itself).
pub const RELAY_PORT: u16 = 1179;
/// Chunks in flight on one way of one session; a speaker that outruns them waits.
const IN_FLIGHT: usize = 1_024;
/// How long a relay waits for its peer relay or its speaker to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The address transit `x`'s speaker knows transit `y` by for `family` (0: the IPv4
/// session, 1: the IPv6 one), in `x`'s namespace.
pub fn relay_addr(family: usize, y: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 1 + family as u8, (y >> 8) as u8, y as u8)
}

/// The speaker's own address on relayed sessions.
pub const SPEAKER_ADDR: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// One other transit: its number, the link to it, the one-way delay to its site.
#[derive(Debug, Clone)]
pub struct Peer {
    pub y: usize,
    pub link: LinkEnds,
    pub one_way: Duration,
}

/// Binds every relay of transit `x` (families in `families`: 0 IPv4, 1 IPv6) and serves
/// them until the process ends. Binding errors come back at once.
pub async fn start(peers: Vec<Peer>, families: Vec<usize>) -> Result<(), NodeError> {
    for p in peers {
        for &f in &families {
            let out = SocketAddr::new(IpAddr::V4(relay_addr(f, p.y)), RELAY_PORT);
            let outward = TcpListener::bind(out).await.doing(|| format!("relay {out}"))?;
            let inn = SocketAddr::new(IpAddr::V4(p.link.local), RELAY_PORT + f as u16);
            let inward = TcpListener::bind(inn).await.doing(|| format!("relay {inn}"))?;
            let to_peer = SocketAddr::new(IpAddr::V4(p.link.peer), RELAY_PORT + f as u16);
            let delay = p.one_way;
            // Our speaker → the peer's relay.
            tokio::spawn(async move {
                while let Ok((speaker, _)) = outward.accept().await {
                    tokio::spawn(async move {
                        if let Ok(Ok(remote)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to_peer)).await
                        {
                            splice(speaker, remote, delay).await;
                        }
                    });
                }
            });
            // The peer's relay → our speaker, from the peer's relay address; only from
            // the peer's end of the link.
            let (from_peer, as_addr) = (p.link.peer, relay_addr(f, p.y));
            tokio::spawn(async move {
                while let Ok((remote, from)) = inward.accept().await {
                    if from.ip() != IpAddr::V4(from_peer) {
                        continue;
                    }
                    tokio::spawn(async move {
                        if let Ok(speaker) = connect_speaker(as_addr).await {
                            splice(speaker, remote, delay).await;
                        }
                    });
                }
            });
        }
    }
    Ok(())
}

async fn connect_speaker(from: Ipv4Addr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(IpAddr::V4(from), 0))?;
    let to = SocketAddr::new(IpAddr::V4(SPEAKER_ADDR), 179);
    tokio::time::timeout(CONNECT_TIMEOUT, s.connect(to)).await.map_err(|_| std::io::ErrorKind::TimedOut)?
}

/// Carries a session both ways until either end closes or fails: what our `speaker`
/// says reaches `remote` `delay` later; what `remote` says passes at once (its own relay
/// delayed it).
async fn splice(speaker: TcpStream, remote: TcpStream, delay: Duration) {
    let _ = (speaker.set_nodelay(true), remote.set_nodelay(true));
    let (sr, sw) = speaker.into_split();
    let (rr, rw) = remote.into_split();
    let _ = tokio::try_join!(delayed(sr, rw, delay), delayed(rr, sw, Duration::ZERO));
}

/// Copies `from` to `to`, each chunk `delay` after it was read; a closed `from` closes
/// `to` once everything read has gone out.
async fn delayed(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) -> std::io::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(IN_FLIGHT);
    let read = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), std::io::Error>(());
            }
            let due = tokio::time::Instant::now() + delay;
            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
        }
    };
    let write = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            to.write_all(&chunk).await?;
        }
        to.shutdown().await
    };
    tokio::try_join!(read, write).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_peer_and_family_has_its_own_loopback_address() {
        assert_eq!(relay_addr(0, 3), Ipv4Addr::new(127, 1, 0, 3));
        assert_eq!(relay_addr(1, 3), Ipv4Addr::new(127, 2, 0, 3));
        assert_eq!(relay_addr(0, 258), Ipv4Addr::new(127, 1, 1, 2));
        assert!(relay_addr(1, 300).is_loopback());
    }

    #[tokio::test]
    async fn a_relayed_chunk_arrives_after_the_delay_and_a_close_passes_through() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let far = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (a, b) = (listener.local_addr().unwrap(), far.local_addr().unwrap());
        let speaker_side = tokio::spawn(async move { TcpStream::connect(a).await.unwrap() });
        let (relay_speaker, _) = listener.accept().await.unwrap();
        let mut speaker = speaker_side.await.unwrap();
        let remote_side = tokio::spawn(async move { far.accept().await.unwrap().0 });
        let relay_remote = TcpStream::connect(b).await.unwrap();
        let mut remote = remote_side.await.unwrap();
        tokio::spawn(splice(relay_speaker, relay_remote, Duration::from_millis(40)));

        let sent = std::time::Instant::now();
        speaker.write_all(b"OPEN").await.unwrap();
        let mut got = [0u8; 4];
        remote.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"OPEN");
        assert!(sent.elapsed() >= Duration::from_millis(40), "arrived after {:?}", sent.elapsed());
        // The other way is not delayed again here (its own relay did that).
        remote.write_all(b"KEEP").await.unwrap();
        speaker.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"KEEP");
        drop(speaker);
        let mut rest = Vec::new();
        assert_eq!(remote.read_to_end(&mut rest).await.unwrap(), 0, "the speaker's close reaches the peer");
    }
}
