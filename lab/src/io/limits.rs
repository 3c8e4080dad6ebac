//! Bounds on what a node's TCP listeners (the control plane's gRPC, the gRPC backbone)
//! accept: connections in total and per peer address. A connection over either cap is
//! closed on arrival, so a flood of idle connections costs a bounded number of file
//! handles and the node keeps serving its peers; the TLS layer drops a connection that
//! completes no handshake within [`HANDSHAKE_TIMEOUT`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::{Stream, StreamExt};

/// How long a peer has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections a listener holds at once.
pub const CONNECTIONS_MAX: usize = 512;
/// Connections one peer address may hold at once.
pub const CONNECTIONS_PER_PEER_MAX: usize = 32;

/// Open connections per peer address.
#[derive(Clone, Default)]
struct Open(Arc<Mutex<HashMap<IpAddr, usize>>>);

impl Open {
    /// Counts a new connection from `peer` unless a cap is reached.
    fn admit(&self, peer: IpAddr, total_max: usize, per_peer_max: usize) -> bool {
        let Ok(mut open) = self.0.lock() else { return false };
        let total: usize = open.values().sum();
        let mine = open.entry(peer).or_default();
        if total >= total_max || *mine >= per_peer_max {
            return false;
        }
        *mine += 1;
        true
    }

    fn release(&self, peer: IpAddr) {
        if let Ok(mut open) = self.0.lock()
            && let Some(n) = open.get_mut(&peer)
        {
            *n -= 1;
            if *n == 0 {
                open.remove(&peer);
            }
        }
    }
}

/// An accepted connection that gives its place back when it closes.
pub struct Counted {
    io: TcpStream,
    peer: IpAddr,
    open: Open,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.release(self.peer);
    }
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Counted {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// The connections `listener` accepts within the caps, with `TCP_NODELAY` set (small
/// frames must not wait for Nagle).
pub fn limited(listener: TcpListener) -> impl Stream<Item = std::io::Result<Counted>> {
    limited_to(listener, CONNECTIONS_MAX, CONNECTIONS_PER_PEER_MAX)
}

fn limited_to(
    listener: TcpListener,
    total_max: usize,
    per_peer_max: usize,
) -> impl Stream<Item = std::io::Result<Counted>> {
    let open = Open::default();
    tokio_stream::wrappers::TcpListenerStream::new(listener).filter_map(move |conn| {
        let io = match conn {
            Ok(io) => io,
            // Out of file handles and the like: skip it, keep accepting.
            Err(_) => return None,
        };
        let peer = io.peer_addr().ok()?.ip();
        if !open.admit(peer, total_max, per_peer_max) {
            return None;
        }
        let _ = io.set_nodelay(true);
        Some(Ok(Counted { io, peer, open: open.clone() }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A connection from `from`; whether the listener kept it open (not closed on arrival).
    async fn kept(to: std::net::SocketAddr, from: IpAddr) -> (tokio::net::TcpStream, bool) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((from, 0).into()).unwrap();
        let mut s = socket.connect(to).await.unwrap();
        let mut b = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_millis(100), s.read(&mut b)).await;
        (s, !matches!(closed, Ok(Ok(0)) | Ok(Err(_))))
    }

    #[test]
    fn a_flood_from_one_peer_is_capped_and_others_still_get_in() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let mut accepted = Box::pin(limited_to(listener, 8, 3));
            // Whatever the listener admits stays open until this test ends.
            let held = Arc::new(Mutex::new(Vec::new()));
            let keep = held.clone();
            tokio::spawn(async move {
                while let Some(Ok(c)) = accepted.next().await {
                    keep.lock().unwrap().push(c);
                }
            });
            let flooder: IpAddr = "127.0.0.2".parse().unwrap();
            let mut flood = Vec::new();
            for _ in 0..6 {
                flood.push(kept(addr, flooder).await);
            }
            let admitted = flood.iter().filter(|(_, k)| *k).count();
            assert_eq!(admitted, 3, "one peer holds at most its share");
            let mut others = Vec::new();
            for i in 3..10u8 {
                others.push(kept(addr, IpAddr::from([127, 0, 0, i])).await);
            }
            let admitted = others.iter().filter(|(_, k)| *k).count();
            assert_eq!(admitted, 5, "the total cap holds: 3 + 5 = 8");
            // A closed connection gives its place back.
            held.lock().unwrap().clear();
            drop(flood);
            let (_s, again) = kept(addr, flooder).await;
            assert!(again, "places are given back when connections close");
        });
    }
}
