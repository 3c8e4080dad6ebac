//! Batched datagram I/O for the forwarder's backbone and backend sockets, through
//! quinn-udp: one `recvmmsg` takes up to [`BATCH`] datagrams (segments the kernel
//! coalesced with GRO are split again by their stride), and what a pass of the node's
//! loop sends goes out together: runs of datagrams to one destination as one GSO send
//! where the kernel offers it, each of the rest with one `sendmsg`. Receive buffers and
//! the send staging buffer are allocated once and reused.
//!
//! An envelope longer than a link's datagram (a super-packet's: up to 64 KiB) leaves in
//! pieces of at most [`GSO_SEGMENT_MAX`] bytes, each behind an 8-byte piece header, as one
//! GSO send: the kernel moves the pieces as one buffer through every namespace on the way
//! and hands them to the receiver's socket as one GRO train, where IP fragments of one
//! datagram would cross each hop one by one and be put together in the kernel. The
//! receiving socket puts the envelope together again ([`Pieces`]) before the node sees it;
//! the envelope's tag, checked by the core, covers it all. A piece lost loses its
//! envelope, as a fragment lost loses its datagram.
//!
//! ```text
//!  0               1               2               3
//! +---------------+---------------+---------------+---------------+
//! |  0xF5 (piece) |     index     |     count     |   reserved    |
//! +---------------+---------------+---------------+---------------+
//! |                  envelope number (sender's)                   |
//! +---------------------------------------------------------------+
//! ```
//! No envelope starts with 0xF5 (its first nibble is the seal's version, 2), and no
//! packet does (an IP packet's is 4 or 6).

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
/// one up to [`PIECES_FROM`] (the envelope of a full-size inner packet) goes alone, and the
/// kernel fragments it; a larger one still goes in pieces.
pub const GSO_SEGMENT_MAX: usize = 1_472;

/// Datagrams at least this long leave in pieces: what IP fragmentation would cut into
/// more than two.
pub const PIECES_FROM: usize = 2 * GSO_SEGMENT_MAX;

/// The first byte of a piece.
const PIECE: u8 = 0xF5;
/// Bytes of a piece's header.
const PIECE_HEADER: usize = 8;
/// An envelope's bytes each piece but the last carries.
const PIECE_DATA: usize = GSO_SEGMENT_MAX - PIECE_HEADER;
/// The most pieces an envelope is cut into (a 64 KiB datagram takes 45).
const PIECES_MAX: usize = 64;
/// Envelopes a socket puts together at once: one more arriving pushes out the oldest.
const PARTIAL_MAX: usize = 32;

/// Envelopes arriving in pieces, put together again (bounded: at most [`PARTIAL_MAX`]
/// partly arrived, each at most [`PIECES_MAX`] pieces).
#[derive(Default)]
pub struct Pieces {
    partial: Vec<Partial>,
    /// Pieces that made no envelope: malformed, or pushed out before their envelope was
    /// whole.
    pub lost: u64,
}

struct Partial {
    from: SocketAddr,
    number: u32,
    count: u8,
    /// Which pieces arrived (bit i: piece i).
    got: u64,
    bytes: Vec<u8>,
    len: usize,
}

impl Pieces {
    /// Takes a piece (`datagram` starts with its header) from `from`; returns the
    /// envelope it completes.
    pub fn take(&mut self, from: SocketAddr, datagram: &[u8]) -> Option<Vec<u8>> {
        let (index, count, number) = match datagram {
            [PIECE, index, count, 0, n0, n1, n2, n3, ..]
                if usize::from(*count) <= PIECES_MAX && index < count && datagram.len() > PIECE_HEADER =>
            {
                (usize::from(*index), *count, u32::from_be_bytes([*n0, *n1, *n2, *n3]))
            }
            _ => {
                self.lost += 1;
                return None;
            }
        };
        let data = &datagram[PIECE_HEADER..];
        let last = index + 1 == usize::from(count);
        // Every piece but the last is full, and the last is no longer.
        if (!last && data.len() != PIECE_DATA) || data.len() > PIECE_DATA {
            self.lost += 1;
            return None;
        }
        let at = match self.partial.iter().position(|p| p.from == from && p.number == number) {
            Some(at) => at,
            None => {
                if self.partial.len() >= PARTIAL_MAX {
                    let gone = self.partial.remove(0);
                    self.lost += u64::from(gone.got.count_ones());
                }
                let bytes = Vec::with_capacity(usize::from(count) * PIECE_DATA);
                self.partial.push(Partial { from, number, count, got: 0, bytes, len: 0 });
                self.partial.len() - 1
            }
        };
        let p = &mut self.partial[at];
        if p.count != count || p.got & (1 << index) != 0 {
            self.lost += 1;
            return None;
        }
        p.got |= 1 << index;
        // In order (as a GRO train comes), each piece is appended; one out of order
        // leaves a gap of zeros for those before it.
        let start = index * PIECE_DATA;
        if start == p.bytes.len() {
            p.bytes.extend_from_slice(data);
        } else {
            if p.bytes.len() < start + data.len() {
                p.bytes.resize(start + data.len(), 0);
            }
            p.bytes[start..start + data.len()].copy_from_slice(data);
        }
        if last {
            p.len = index * PIECE_DATA + data.len();
        }
        if p.got.count_ones() < u32::from(count) {
            return None;
        }
        let mut whole = self.partial.remove(at);
        whole.bytes.truncate(whole.len);
        Some(whole.bytes)
    }
}

/// The header of piece `index` of `count` of envelope `number`.
fn piece_header(index: usize, count: usize, number: u32) -> [u8; PIECE_HEADER] {
    let n = number.to_be_bytes();
    [PIECE, index as u8, count as u8, 0, n[0], n[1], n[2], n[3]]
}

/// Pieces one GSO send carries at most: all of them within what one UDP datagram may
/// hold (65,507 bytes), which the kernel holds a GSO send to as a whole.
const PIECES_PER_SEND: usize = 65_507 / GSO_SEGMENT_MAX;
const _: () = assert!(PIECES_PER_SEND == 44 && PIECES_PER_SEND * GSO_SEGMENT_MAX <= 65_507);

/// A `UDP_SEGMENT` control message: the kernel cuts the send into datagrams of `size`.
#[repr(C, align(8))]
struct SegmentControl([u8; 24]);

fn segment_control(size: u16) -> SegmentControl {
    // struct cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; } then the u16,
    // padded to CMSG_SPACE(2) = 24 bytes on a 64-bit system.
    const HEADER: usize = std::mem::size_of::<libc::cmsghdr>();
    const _: () = assert!(HEADER == 16, "a 64-bit cmsghdr");
    let mut b = [0u8; 24];
    b[..8].copy_from_slice(&((HEADER + 2) as u64).to_ne_bytes());
    b[8..12].copy_from_slice(&libc::SOL_UDP.to_ne_bytes());
    b[12..16].copy_from_slice(&libc::UDP_SEGMENT.to_ne_bytes());
    b[16..18].copy_from_slice(&size.to_ne_bytes());
    SegmentControl(b)
}

/// `datagram` in pieces (headers and data, back to back) into `out`, as a GSO send puts
/// them on the wire: every piece [`GSO_SEGMENT_MAX`] bytes long but the last. Returns
/// how many.
#[cfg(test)]
fn cut_into_pieces(datagram: &[u8], number: u32, out: &mut Vec<u8>) -> usize {
    let count = datagram.len().div_ceil(PIECE_DATA);
    for (i, data) in datagram.chunks(PIECE_DATA).enumerate() {
        out.extend_from_slice(&piece_header(i, count, number));
        out.extend_from_slice(data);
    }
    count
}

/// Where a received datagram is.
#[derive(Clone, Copy)]
enum Taken {
    /// In receive buffer `b`.
    Buf { b: usize, start: usize, end: usize },
    /// Put together from pieces: the last receive's `i`th envelope.
    Whole(usize),
}

/// What a node's backbone sockets lost, summed over them (each adds what it counts:
/// [`BatchSocket::count_into`]): `/metrics` shows it.
#[derive(Debug, Default)]
pub struct Losses {
    /// Pieces that made no envelope ([`BatchSocket::pieces_lost`]).
    pub pieces_lost: std::sync::atomic::AtomicU64,
    /// Sends of pieces the kernel refused ([`BatchSocket::unsent`]).
    pub unsent: std::sync::atomic::AtomicU64,
}

pub struct BatchSocket {
    sock: UdpSocket,
    state: UdpSocketState,
    bufs: Box<[[u8; RECV_BUF]; BATCH]>,
    meta: Vec<RecvMeta>,
    got: usize,
    out: Vec<(SocketAddr, Vec<u8>)>,
    staging: Vec<u8>,
    /// Envelopes arriving in pieces, and those the last receive completed.
    pieces: Pieces,
    whole: Vec<Vec<u8>>,
    /// What the last receive took, in the order it arrived: datagrams in the receive
    /// buffers, and envelopes whole again where their last piece arrived.
    order: Vec<(SocketAddr, Taken)>,
    /// The number of the next envelope sent in pieces.
    next_number: u32,
    unsent: u64,
    /// The node's sums this socket adds to, and the pieces lost it has added so far.
    losses: Option<(std::sync::Arc<Losses>, u64)>,
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
            pieces: Pieces::default(),
            whole: Vec::new(),
            order: Vec::with_capacity(BATCH),
            next_number: 0,
            unsent: 0,
            losses: None,
        })
    }

    /// Waits for datagrams and takes every one waiting, up to [`BATCH`] (cancel-safe:
    /// nothing is read before the last await).
    pub async fn recv(&mut self) -> io::Result<()> {
        let BatchSocket { sock, state, bufs, meta, got, .. } = self;
        let sock = &*sock;
        *got = 0;
        self.whole.clear();
        loop {
            sock.readable().await?;
            let read = sock.try_io(Interest::READABLE, || {
                let mut iovs = bufs.each_mut().map(|b| IoSliceMut::new(&mut b[..]));
                state.recv(sock.into(), &mut iovs, meta)
            });
            match read {
                Ok(n) => {
                    *got = n;
                    self.put_pieces_together();
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The datagrams the last receive took, GRO trains split, in order; pieces go into
    /// the envelopes they complete, which take the place of their last piece.
    fn put_pieces_together(&mut self) {
        self.order.clear();
        for (b, m) in self.meta[..self.got].iter().enumerate() {
            let stride = if m.stride == 0 { m.len.max(1) } else { m.stride };
            let len = m.len.min(RECV_BUF);
            for start in (0..len).step_by(stride) {
                let end = (start + stride).min(len);
                let d = &self.bufs[b][start..end];
                if d.first() != Some(&PIECE) {
                    self.order.push((m.addr, Taken::Buf { b, start, end }));
                } else if let Some(envelope) = self.pieces.take(m.addr, d) {
                    self.order.push((m.addr, Taken::Whole(self.whole.len())));
                    self.whole.push(envelope);
                }
            }
        }
        if let Some((losses, added)) = &mut self.losses
            && self.pieces.lost > *added
        {
            losses.pieces_lost.fetch_add(self.pieces.lost - *added, std::sync::atomic::Ordering::Relaxed);
            *added = self.pieces.lost;
        }
    }

    /// What the last [`recv`](Self::recv) took, in the order it arrived: (source,
    /// datagram), GRO trains split, envelopes that came in pieces whole again.
    pub fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.order.iter().map(|(from, taken)| match *taken {
            Taken::Buf { b, start, end } => (*from, &self.bufs[b][start..end]),
            Taken::Whole(i) => (*from, &self.whole[i][..]),
        })
    }

    /// Adds what this socket loses from now on to the node's sums in `losses`.
    pub fn count_into(&mut self, losses: std::sync::Arc<Losses>) {
        self.losses = Some((losses, self.pieces.lost));
    }

    /// Pieces that made no envelope, since the socket was made.
    pub fn pieces_lost(&self) -> u64 {
        self.pieces.lost
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
            if size >= PIECES_FROM && max_segments > 1 {
                self.send_in_pieces(*to, first, max_segments).await;
                i += 1;
                continue;
            }
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

    /// One long datagram in pieces, as GSO sends of at most `max_segments` pieces and
    /// at most [`PIECES_PER_SEND`]: each send gathers its pieces' headers and the
    /// datagram's bytes where they lie (`sendmsg` with an iovec per header and per piece
    /// of data, and `UDP_SEGMENT`), so the datagram is not copied to be cut.
    async fn send_in_pieces(&mut self, to: SocketAddr, datagram: &[u8], max_segments: usize) {
        let count = datagram.len().div_ceil(PIECE_DATA);
        debug_assert!(count <= PIECES_MAX, "a datagram is at most 64 KiB");
        let number = self.next_number;
        self.next_number = self.next_number.wrapping_add(1);
        let headers: Vec<[u8; PIECE_HEADER]> = (0..count).map(|i| piece_header(i, count, number)).collect();
        let addr = socket2::SockAddr::from(to);
        let per_send = PIECES_PER_SEND.min(max_segments).max(1);
        for first in (0..count).step_by(per_send) {
            let last = (first + per_send).min(count);
            let send = || {
                let mut iov = Vec::with_capacity(2 * (last - first));
                for (i, header) in headers.iter().enumerate().take(last).skip(first) {
                    iov.push(std::io::IoSlice::new(header));
                    iov.push(std::io::IoSlice::new(
                        &datagram[i * PIECE_DATA..((i + 1) * PIECE_DATA).min(datagram.len())],
                    ));
                }
                let control = segment_control(GSO_SEGMENT_MAX as u16);
                let msg = socket2::MsgHdr::new().with_addr(&addr).with_buffers(&iov);
                let msg = if last - first > 1 { msg.with_control(&control.0) } else { msg };
                socket2::SockRef::from(&self.sock).sendmsg(&msg, 0)
            };
            let mut sent = self.sock.try_io(Interest::WRITABLE, send);
            if sent.as_ref().is_err_and(|e| e.kind() == io::ErrorKind::WouldBlock) && self.sock.writable().await.is_ok()
            {
                sent = self.sock.try_io(Interest::WRITABLE, send);
            }
            if sent.is_err() {
                self.unsent += 1;
                if let Some((losses, _)) = &self.losses {
                    losses.unsent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    }

    /// Sends of pieces the kernel refused (a full buffer twice, or an error), since the
    /// socket was made: each loses its envelope.
    pub fn unsent(&self) -> u64 {
        self.unsent
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

    /// An envelope cut into pieces comes back whole, in whatever order its pieces
    /// arrive; a duplicate, a piece of the wrong size or a stranger's header makes no
    /// envelope; envelopes from two senders with one number stay apart; and at most
    /// PARTIAL_MAX envelopes wait at once, the oldest pushed out.
    #[test]
    fn envelopes_cut_into_pieces_are_put_together_whatever_the_order_within_bounds() {
        let a: SocketAddr = "198.18.96.1:4000".parse().unwrap();
        let b: SocketAddr = "198.18.96.2:4000".parse().unwrap();
        let envelope: Vec<u8> = (0..60_000u32).map(|i| (i % 253) as u8).collect();
        let pieces = |number: u32, d: &[u8]| {
            let mut out = Vec::new();
            let n = cut_into_pieces(d, number, &mut out);
            let pieces: Vec<Vec<u8>> = out.chunks(GSO_SEGMENT_MAX).map(<[u8]>::to_vec).collect();
            assert_eq!(pieces.len(), n);
            pieces
        };
        let mut p = Pieces::default();
        let mut cut = pieces(7, &envelope);
        assert_eq!(cut.len(), 41);
        cut.reverse();
        let (last, rest) = cut.split_last().unwrap();
        for piece in rest {
            assert_eq!(p.take(a, piece), None);
            assert_eq!(p.take(a, piece), None, "a duplicate");
        }
        // Another sender's envelope of the same number stays its own.
        let other = pieces(7, &envelope[..5_000]);
        assert_eq!(other.iter().filter_map(|x| p.take(b, x)).collect::<Vec<_>>(), [envelope[..5_000].to_vec()]);
        assert_eq!(p.take(a, last).as_deref(), Some(&envelope[..]));
        assert_eq!(p.lost, 40, "the duplicates");
        // Malformed: a short middle piece, an index past the count, a foreign byte.
        let mut short = pieces(8, &envelope)[3].clone();
        short.truncate(100);
        for bad in [short, vec![PIECE, 9, 2, 0, 0, 0, 0, 1, 1], vec![PIECE, 0, 2, 1, 0, 0, 0, 1, 1], vec![0x21; 20]] {
            assert_eq!(p.take(a, &bad), None);
        }
        assert_eq!(p.lost, 44);
        // PARTIAL_MAX + 1 envelopes begun: the first is pushed out and never completes.
        for n in 100..100 + PARTIAL_MAX as u32 + 1 {
            assert_eq!(p.take(a, &pieces(n, &envelope[..3_000])[0]), None);
        }
        assert_eq!(p.partial.len(), PARTIAL_MAX);
        assert!(p.partial.iter().all(|w| w.number != 100), "the oldest went");
        let late = pieces(101, &envelope[..3_000]);
        let done: Vec<Vec<u8>> = late[1..].iter().filter_map(|x| p.take(a, x)).collect();
        assert!(done.len() == 1 && done[0] == envelope[..3_000], "the next oldest still completes");
    }

    /// A node's sockets add what they lose to the node's sums (`/metrics`'
    /// `backbone_pieces_lost_total`): a duplicated piece and malformed pieces, on two
    /// sockets.
    #[test]
    fn what_each_backbone_socket_loses_adds_up_in_the_nodes_sums() {
        let ns = crate::io::netns::TestNs::new("losses");
        let losses = std::sync::Arc::new(Losses::default());
        let counted = losses.clone();
        let (b_lost, c_lost, envelope_arrived) = in_ns(&ns.0, async move || {
            let mut b = BatchSocket::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
            let mut c = BatchSocket::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
            b.count_into(counted.clone());
            c.count_into(counted);
            let raw = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let envelope: Vec<u8> = (0..5_000u32).map(|i| i as u8).collect();
            let mut out = Vec::new();
            let n = cut_into_pieces(&envelope, 3, &mut out);
            let pieces: Vec<&[u8]> = out.chunks(GSO_SEGMENT_MAX).collect();
            assert_eq!(pieces.len(), n);
            // To b: the first piece twice (one lost), a malformed piece, then the rest.
            raw.send_to(pieces[0], b.sock.local_addr().unwrap()).unwrap();
            raw.send_to(pieces[0], b.sock.local_addr().unwrap()).unwrap();
            raw.send_to(&[PIECE, 9, 2, 0, 0, 0, 0, 1, 1], b.sock.local_addr().unwrap()).unwrap();
            for piece in &pieces[1..] {
                raw.send_to(piece, b.sock.local_addr().unwrap()).unwrap();
            }
            // To c: one malformed piece.
            raw.send_to(&[PIECE, 0, 2, 1, 0, 0, 0, 1, 1], c.sock.local_addr().unwrap()).unwrap();
            let mut arrived = false;
            while !arrived {
                let r = tokio::time::timeout(std::time::Duration::from_secs(2), b.recv()).await;
                assert!(r.is_ok(), "the envelope's pieces arrive");
                arrived |= b.datagrams().any(|(_, d)| d == &envelope[..]);
            }
            let r = tokio::time::timeout(std::time::Duration::from_secs(2), c.recv()).await;
            assert!(r.is_ok(), "c's piece arrives");
            (b.pieces_lost(), c.pieces_lost(), arrived)
        });
        assert!(envelope_arrived, "the envelope came whole despite the duplicate");
        assert_eq!((b_lost, c_lost), (2, 1), "b: a duplicate and a malformed piece; c: a malformed one");
        assert_eq!(losses.pieces_lost.load(std::sync::atomic::Ordering::Relaxed), 3, "the node's sum is both sockets'");
        assert_eq!(losses.unsent.load(std::sync::atomic::Ordering::Relaxed), 0, "nothing was refused");
    }

    /// Backbone envelopes of full-size inner packets are bigger than a 1500-byte link:
    /// the kernel must fragment them as it did for a plain socket (quinn-udp's default
    /// of never fragmenting would drop them), a super-packet's (up to 64 KiB) goes in
    /// pieces and comes back whole, and runs of equal datagrams sent with GSO must arrive
    /// as the datagrams they were, all in order.
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
            // 65,507 bytes: the largest envelope, whose pieces take more than one GSO send.
            sent.extend([1_400usize, 20, 1_472, 9_000, 65_000, 65_507, 2_000].iter().map(|&n| vec![n as u8; n]));
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
