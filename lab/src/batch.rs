//! Batched datagram I/O for the forwarder's backbone and backend sockets, through
//! quinn-udp: one `recvmmsg` takes up to [`BATCH`] datagrams (segments the kernel
//! coalesced with GRO are split again by their stride), and what a pass of the node's
//! loop sends goes out together: runs of datagrams to one destination as one GSO send
//! where the kernel offers it, each of the rest with one `sendmsg`. Receive buffers and
//! the send staging buffer are allocated once and reused.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams one receive call takes at most.
pub const BATCH: usize = quinn_udp::BATCH_SIZE;

/// Room for one receive: a GRO train of segments, or one datagram of any size.
const RECV_BUF: usize = 65_536;

/// The most bytes one GSO send carries.
const GSO_BYTES_MAX: usize = 65_000;

pub struct BatchSocket {
    sock: UdpSocket,
    state: UdpSocketState,
    bufs: Box<[[u8; RECV_BUF]]>,
    meta: Vec<RecvMeta>,
    got: usize,
    out: Vec<(SocketAddr, Vec<u8>)>,
    staging: Vec<u8>,
}

impl BatchSocket {
    pub async fn bind(addr: SocketAddr) -> Result<BatchSocket, String> {
        let sock = UdpSocket::bind(addr).await.map_err(|e| format!("bind {addr}: {e}"))?;
        let state = UdpSocketState::new((&sock).into()).map_err(|e| format!("{addr}: {e}"))?;
        Ok(BatchSocket {
            sock,
            state,
            bufs: vec![[0u8; RECV_BUF]; BATCH].into_boxed_slice(),
            meta: vec![RecvMeta::default(); BATCH],
            got: 0,
            out: Vec::with_capacity(BATCH),
            staging: Vec::with_capacity(GSO_BYTES_MAX),
        })
    }

    /// Waits for datagrams and takes every one waiting, up to [`BATCH`] (cancel-safe:
    /// nothing is read before the last await).
    pub async fn recv(&mut self) -> io::Result<()> {
        let BatchSocket { sock, state, bufs, meta, got, .. } = self;
        let sock = &*sock;
        *got = 0;
        loop {
            sock.readable().await?;
            let read = sock.try_io(Interest::READABLE, || {
                let mut iovs: Vec<IoSliceMut<'_>> = bufs.iter_mut().map(|b| IoSliceMut::new(&mut b[..])).collect();
                state.recv(sock.into(), &mut iovs, meta)
            });
            match read {
                Ok(n) => {
                    *got = n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// What the last [`recv`](Self::recv) took: (source, datagram), GRO trains split.
    pub fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.meta[..self.got].iter().zip(self.bufs.iter()).flat_map(|(m, buf)| {
            let stride = if m.stride == 0 { m.len.max(1) } else { m.stride };
            buf[..m.len.min(RECV_BUF)].chunks(stride).map(move |d| (m.addr, d))
        })
    }

    /// Queues a datagram for the next [`flush`](Self::flush).
    pub fn queue(&mut self, to: SocketAddr, bytes: Vec<u8>) {
        self.out.push((to, bytes));
    }

    /// Sends everything queued: runs to one destination with equal sizes (the last may be
    /// shorter) as one GSO send, the rest one by one. A full socket buffer drops the
    /// datagram, as the kernel would have.
    pub async fn flush(&mut self) {
        let out = std::mem::take(&mut self.out);
        let max_segments = self.state.max_gso_segments().max(1);
        let mut i = 0;
        while i < out.len() {
            let (to, first) = (&out[i].0, &out[i].1);
            let size = first.len();
            let mut j = i + 1;
            if max_segments > 1 && size > 0 {
                let mut total = size;
                while j < out.len()
                    && j - i < max_segments
                    && out[j].0 == *to
                    && out[j].1.len() <= size
                    && total + out[j].1.len() <= GSO_BYTES_MAX
                {
                    total += out[j].1.len();
                    j += 1;
                    // Only the last segment may be shorter than the others.
                    if out[j - 1].1.len() < size {
                        break;
                    }
                }
            }
            let contents: &[u8] = if j - i == 1 {
                first
            } else {
                self.staging.clear();
                for (_, d) in &out[i..j] {
                    self.staging.extend_from_slice(d);
                }
                &self.staging
            };
            let segment_size = (j - i > 1).then_some(size);
            let transmit = Transmit { destination: *to, ecn: None, contents, segment_size, src_ip: None };
            let sent = self.sock.try_io(Interest::WRITABLE, || self.state.send((&self.sock).into(), &transmit));
            if let Err(e) = sent
                && e.kind() == io::ErrorKind::WouldBlock
            {
                // Wait for room once, then try again; a second refusal drops it.
                if self.sock.writable().await.is_ok() {
                    let _ = self.sock.try_io(Interest::WRITABLE, || self.state.send((&self.sock).into(), &transmit));
                }
            }
            i = j;
        }
        let mut out = out;
        out.clear();
        self.out = out;
    }

    pub fn queued(&self) -> usize {
        self.out.len()
    }
}
