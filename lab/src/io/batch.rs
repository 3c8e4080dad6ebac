//! Batched datagram I/O for the forwarder's backbone and backend sockets, through
//! quinn-udp: one `recvmmsg` takes up to [`BATCH`] datagrams (segments the kernel
//! coalesced with GRO are split again by their stride), and what a pass of the node's
//! loop sends goes out together: runs of datagrams to one destination as one GSO send
//! where the kernel offers it, each of the rest with one `sendmsg`. Receive buffers and
//! the send staging buffer are allocated once and reused.

use crate::error::{Doing, SysError};
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

/// The largest datagram sent in a GSO run: one that fits a 1500-byte link whole. A larger
/// one (the envelope of a full-size inner packet) goes alone, and the kernel fragments it.
const GSO_SEGMENT_MAX: usize = 1_472;

pub struct BatchSocket {
    sock: UdpSocket,
    state: UdpSocketState,
    bufs: Box<[[u8; RECV_BUF]; BATCH]>,
    meta: Vec<RecvMeta>,
    got: usize,
    out: Vec<(SocketAddr, Vec<u8>)>,
    staging: Vec<u8>,
}

impl BatchSocket {
    pub async fn bind(addr: SocketAddr) -> Result<BatchSocket, SysError> {
        let sock = UdpSocket::bind(addr).await.doing(|| format!("bind {addr}"))?;
        BatchSocket::new(sock, addr)
    }

    /// A socket from [`bind_shared`], on the calling thread's runtime.
    pub fn from_std(sock: std::net::UdpSocket) -> Result<BatchSocket, SysError> {
        let addr = sock.local_addr().doing(|| "a shared socket's address".into())?;
        sock.set_nonblocking(true).doing(|| addr.to_string())?;
        BatchSocket::new(UdpSocket::from_std(sock).doing(|| addr.to_string())?, addr)
    }

    fn new(sock: UdpSocket, addr: SocketAddr) -> Result<BatchSocket, SysError> {
        let state = UdpSocketState::new((&sock).into()).doing(|| addr.to_string())?;
        // quinn-udp never lets the kernel fragment (QUIC probes the path MTU itself); the
        // backbone carries envelopes of full-size packets, which a 1500-byte link must
        // fragment as it did for a plain socket.
        allow_fragments(&sock, addr).doing(|| addr.to_string())?;
        deepen_receive_buffer(std::os::fd::AsRawFd::as_raw_fd(&sock)).doing(|| addr.to_string())?;
        crate::io::clock::stamp_receives(std::os::fd::AsRawFd::as_raw_fd(&sock));
        Ok(BatchSocket {
            sock,
            state,
            // Built on the heap, never on the stack: BATCH buffers of RECV_BUF bytes.
            bufs: vec![[0u8; RECV_BUF]; BATCH]
                .into_boxed_slice()
                .try_into()
                .unwrap_or_else(|_| unreachable!("a vector of BATCH buffers is BATCH long")),
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
                let mut iovs = bufs.each_mut().map(|b| IoSliceMut::new(&mut b[..]));
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

    /// When the kernel received the last datagram the last [`recv`](Self::recv) took, on
    /// the clock that started at `start` (the node's): the batch's datagrams arrived at
    /// that time or a little before.
    pub fn received_ns(&self, start: std::time::Instant) -> u64 {
        crate::io::clock::received_ns(std::os::fd::AsRawFd::as_raw_fd(&self.sock), start)
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
            if max_segments > 1 && size > 0 && size <= GSO_SEGMENT_MAX {
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

/// A socket bound to `addr` with `SO_REUSEPORT`, so that one node's threads can each
/// bind one: they all send from `addr`, and the kernel hands each arriving datagram to
/// one of them (by its source and destination).
pub fn bind_shared(addr: SocketAddr) -> Result<std::net::UdpSocket, SysError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .doing(|| format!("socket for {addr}"))?;
    sock.set_reuse_port(true).doing(|| format!("SO_REUSEPORT on {addr}"))?;
    sock.bind(&addr.into()).doing(|| format!("bind {addr}"))?;
    Ok(sock.into())
}

/// The receive buffer of a tunnel socket, bytes: a bulk TCP connection's window (several
/// MB at a few Gbit/s) arrives as a burst of envelopes, and the kernel's default (208 KiB)
/// dropped them while the node was busy (iperf3 through the lab: thousands of
/// retransmits, `UdpRcvbufErrors` at the CLB node and the backend host).
pub const TUNNEL_RCVBUF_BYTES: usize = 8 << 20;

/// Gives a tunnel socket [`TUNNEL_RCVBUF_BYTES`] of receive buffer: past the system's
/// `rmem_max` where the node may (`SO_RCVBUFFORCE`, root, as lab and deployed nodes run),
/// else as much as `rmem_max` allows.
pub fn deepen_receive_buffer(fd: std::os::fd::RawFd) -> io::Result<()> {
    let value = TUNNEL_RCVBUF_BYTES as libc::c_int;
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    for name in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: setsockopt reads one c_int we own from the pointer, on a socket we own.
        let rc = unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, name, (&raw const value).cast(), len) };
        if rc == 0 {
            return Ok(());
        }
    }
    Err(io::Error::last_os_error())
}

/// Lets the kernel fragment datagrams larger than the path MTU (no DF bit).
fn allow_fragments(sock: &UdpSocket, addr: SocketAddr) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (level, name, value) = match addr {
        SocketAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_DONT),
        SocketAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, libc::IPV6_PMTUDISC_DONT),
    };
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: setsockopt reads one c_int we own from the pointer, on a socket we own.
    let rc = unsafe { libc::setsockopt(sock.as_raw_fd(), level, name, (&raw const value).cast(), len) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// Runs `f` on a thread inside namespace `ns`, on a runtime of its own.
    fn in_ns<T: Send + 'static>(ns: &str, f: impl AsyncFnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap();
            // SAFETY: setns on this thread only, with a namespace file we hold open.
            assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(f())
        })
        .join()
        .unwrap()
    }

    /// Backbone envelopes of full-size inner packets are bigger than a 1500-byte link:
    /// the kernel must fragment them as it did for a plain socket (quinn-udp's default
    /// of never fragmenting would drop them), and runs of equal datagrams sent with GSO
    /// must arrive as the datagrams they were, in order.
    #[test]
    fn datagrams_larger_than_the_link_mtu_and_gso_runs_arrive_whole() {
        let ns = crate::io::netns::TestNs::new("batch");
        crate::io::netns::ip_in(&ns.0, &["link", "set", "lo", "mtu", "1500"]).unwrap();
        let got = in_ns(&ns.0, async || {
            let a = BatchSocket::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
            let mut b = BatchSocket::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
            let to = b.sock.local_addr().unwrap();
            let mut a = a;
            let mut sent: Vec<Vec<u8>> = Vec::new();
            // One over the MTU, a GSO run of 40 equal ones with a short tail, mixed sizes.
            sent.push((0..3_000u32).map(|i| i as u8).collect());
            sent.extend((0..40u8).map(|i| vec![i; 1_000]));
            sent.push(vec![0xee; 300]);
            sent.extend([1_400usize, 20, 1_472, 9_000].iter().map(|&n| vec![n as u8; n]));
            for d in &sent {
                a.queue(to, d.clone());
            }
            a.flush().await;
            let mut got: Vec<Vec<u8>> = Vec::new();
            while got.len() < sent.len() {
                let r = tokio::time::timeout(std::time::Duration::from_secs(2), b.recv()).await;
                if r.is_err() {
                    break;
                }
                got.extend(b.datagrams().map(|(_, d)| d.to_vec()));
            }
            (sent, got)
        });
        let (sent, got) = got;
        assert_eq!(got.len(), sent.len(), "datagrams that arrived: {:?}", got.iter().map(Vec::len).collect::<Vec<_>>());
        assert!(got == sent, "every datagram arrives whole and in order");
    }
}
