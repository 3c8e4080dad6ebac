//! Packets as an attacker sends them, from inside a lab's namespaces: a thread that
//! enters a namespace, UDP from there, raw IPv4 with any source address, and capture of
//! what crosses the namespace (to replay it).

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Runs `f` on a thread inside network namespace `ns` (sockets it opens live there).
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: setns on this thread only, with a namespace file we hold open.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("the thread in the namespace panicked")
}

/// An IPv4 packet of `protocol` from `src` to `dst` with `len` bytes after its 20-byte
/// header (zeroed), the header's checksum filled in.
fn ipv4(src: SocketAddrV4, dst: SocketAddrV4, protocol: u8, len: usize) -> Vec<u8> {
    let total = 20 + len;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = protocol;
    p[12..16].copy_from_slice(&src.ip().octets());
    p[16..20].copy_from_slice(&dst.ip().octets());
    let sum = checksum(&p[..20]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p
}

/// An IPv4/UDP packet from `src` to `dst` (UDP checksum left 0, which IPv4 allows).
pub fn udp_packet(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let mut p = ipv4(src, dst, 17, 8 + payload.len());
    p[20..22].copy_from_slice(&src.port().to_be_bytes());
    p[22..24].copy_from_slice(&dst.port().to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

/// TCP flags.
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const PSH: u8 = 0x08;

/// An IPv4/TCP segment from `src` to `dst` with `flags`, `options` (a multiple of 4
/// bytes) and `payload`; checksums filled in.
pub fn tcp_packet(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    (seq, ack): (u32, u32),
    flags: u8,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    assert!(options.len().is_multiple_of(4) && options.len() <= 40, "TCP options in whole words, at most 40 bytes");
    let header = 20 + options.len();
    let mut p = ipv4(src, dst, 6, header + payload.len());
    let t = &mut p[20..];
    t[0..2].copy_from_slice(&src.port().to_be_bytes());
    t[2..4].copy_from_slice(&dst.port().to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = ((header / 4) as u8) << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&64_240u16.to_be_bytes());
    t[20..header].copy_from_slice(options);
    t[header..].copy_from_slice(payload);
    // The checksum covers a pseudo-header: addresses, protocol, TCP length.
    let len = (header + payload.len()) as u16;
    let mut pseudo = Vec::with_capacity(12 + usize::from(len) + 1);
    pseudo.extend_from_slice(&src.ip().octets());
    pseudo.extend_from_slice(&dst.ip().octets());
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&len.to_be_bytes());
    pseudo.extend_from_slice(&p[20..]);
    if pseudo.len() % 2 == 1 {
        pseudo.push(0);
    }
    let sum = checksum(&pseudo);
    p[36..38].copy_from_slice(&sum.to_be_bytes());
    p
}

/// An IPv4/TCP SYN from `src` to `dst` with sequence number `seq` (an MSS option, as a
/// kernel's own SYN has; checksums filled in).
pub fn tcp_syn_packet(src: SocketAddrV4, dst: SocketAddrV4, seq: u32) -> Vec<u8> {
    tcp_packet(src, dst, (seq, 0), SYN, &MSS_1460, &[])
}

/// `packet` (IPv4, a 20-byte header) cut into fragments of `size` bytes of payload each
/// (a multiple of 8), as a sender cutting its own datagram does: identification `id`,
/// offsets, More Fragments on all but the last, each header's checksum filled in.
pub fn ipv4_fragments(packet: &[u8], size: usize, id: u16) -> Vec<Vec<u8>> {
    assert!(size.is_multiple_of(8) && size > 0, "fragment payloads are multiples of 8 bytes");
    let payload = &packet[20..];
    payload
        .chunks(size)
        .enumerate()
        .map(|(i, chunk)| {
            let mut f = packet[..20].to_vec();
            f[2..4].copy_from_slice(&((20 + chunk.len()) as u16).to_be_bytes());
            f[4..6].copy_from_slice(&id.to_be_bytes());
            let more = if (i + 1) * size < payload.len() { 0x2000 } else { 0 };
            f[6..8].copy_from_slice(&((i * size / 8) as u16 | more).to_be_bytes());
            f[10..12].copy_from_slice(&[0, 0]);
            let sum = checksum(&f);
            f[10..12].copy_from_slice(&sum.to_be_bytes());
            f.extend_from_slice(chunk);
            f
        })
        .collect()
}

/// The MSS option a kernel's SYN carries on Ethernet.
pub const MSS_1460: [u8; 4] = [2, 4, 0x05, 0xb4];

fn checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A raw IPv4 socket that sends whole packets, source address included.
pub struct RawSender(std::os::fd::OwnedFd);

impl RawSender {
    pub fn new() -> RawSender {
        // SAFETY: a plain socket call; the fd is owned from here on.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        RawSender(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
    }

    /// Sends an IPv4 packet as it is; whether the kernel took it.
    pub fn send(&self, packet: &[u8]) -> bool {
        let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(dst.octets()) },
            sin_zero: [0; 8],
        };
        // SAFETY: the buffer and the address outlive the call.
        let n = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        n == packet.len() as isize
    }
}

impl Default for RawSender {
    fn default() -> Self {
        RawSender::new()
    }
}

/// A packet socket seeing every IPv4 packet on every interface of the namespace of the
/// thread that opened it, both ways (a packet once per interface it crosses).
pub struct Capture(std::os::fd::OwnedFd);

impl Capture {
    pub fn open() -> Capture {
        let proto = (libc::ETH_P_IP as u16).to_be();
        // SAFETY: a plain socket call; the fd is owned from here on.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from(proto)) };
        assert!(fd >= 0, "packet socket: {}", std::io::Error::last_os_error());
        let fd: std::os::fd::OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
        let tv = libc::timeval { tv_sec: 0, tv_usec: 100_000 };
        // SAFETY: setsockopt with a timeval that outlives the call.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        Capture(fd)
    }

    /// The next IPv4 packet of `protocol` (its header and what follows, to its total
    /// length) and whether it was leaving an interface (not arriving), or `None` when a
    /// read waited 100 ms or read something else.
    fn next_with_way<'a>(&self, buf: &'a mut [u8], protocol: u8) -> Option<(&'a [u8], bool)> {
        // SAFETY: zeroed is a valid sockaddr_ll; the buffer and address outlive the call.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        let n = unsafe {
            libc::recvfrom(
                self.0.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        let p = &buf[..usize::try_from(n).ok()?];
        if p.len() < 20 || p[0] != 0x45 || p[9] != protocol {
            return None;
        }
        let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
        Some((p.get(..total)?, from.sll_pkttype == libc::PACKET_OUTGOING))
    }

    fn next<'a>(&self, buf: &'a mut [u8], protocol: u8) -> Option<&'a [u8]> {
        self.next_with_way(buf, protocol).map(|(p, _)| p)
    }

    /// The first IPv4/UDP packet within `wait` that `want(source, destination, UDP
    /// payload)` takes: its source, destination and the whole IP packet as it crossed.
    pub fn udp(
        &self,
        wait: Duration,
        want: impl Fn(SocketAddrV4, SocketAddrV4, &[u8]) -> bool,
    ) -> Option<(SocketAddrV4, SocketAddrV4, Vec<u8>)> {
        let deadline = std::time::Instant::now() + wait;
        let mut buf = vec![0u8; 65_536];
        while std::time::Instant::now() < deadline {
            let Some(p) = self.next(&mut buf, 17).filter(|p| p.len() >= 28) else { continue };
            let (from, to) = endpoints(p);
            if want(from, to, &p[28..]) {
                // Sent on a veth, the UDP checksum may be left for the device to fill in:
                // as captured it is only partial. Zero (no checksum, IPv4 allows it) keeps
                // the datagram exactly what the sender sealed.
                let mut packet = p.to_vec();
                packet[26..28].copy_from_slice(&[0, 0]);
                return Some((from, to, packet));
            }
        }
        None
    }

    /// Every IPv4/UDP packet arriving on an interface for `wait` (a packet the namespace
    /// forwards counts once, where it came in; one its processes send, not at all, unless
    /// it goes in through a TUN device): source, destination and UDP payload length.
    pub fn udp_seen(&self, wait: Duration) -> Vec<(SocketAddrV4, SocketAddrV4, usize)> {
        let deadline = std::time::Instant::now() + wait;
        let mut buf = vec![0u8; 65_536];
        let mut seen = Vec::new();
        while std::time::Instant::now() < deadline {
            if let Some((p, false)) = self.next_with_way(&mut buf, 17).filter(|(p, _)| p.len() >= 28) {
                let (from, to) = endpoints(p);
                seen.push((from, to, p.len() - 28));
            }
        }
        seen
    }

    /// The first TCP segment to `to` within `wait` with all of `flags`, carrying data
    /// when `data`: its (sequence, acknowledgement) numbers and payload.
    pub fn tcp_to(&self, to: SocketAddrV4, flags: u8, data: bool, wait: Duration) -> Option<(u32, u32, Vec<u8>)> {
        let deadline = std::time::Instant::now() + wait;
        let mut buf = vec![0u8; 65_536];
        while std::time::Instant::now() < deadline {
            let Some(p) = self.next(&mut buf, 6).filter(|p| p.len() >= 40) else { continue };
            let t = &p[20..];
            let payload = t.get(usize::from(t[12] >> 4) * 4..).unwrap_or_default();
            if endpoints(p).1 == to && t[13] & flags == flags && payload.is_empty() != data {
                let word = |i: usize| u32::from_be_bytes([t[i], t[i + 1], t[i + 2], t[i + 3]]);
                return Some((word(4), word(8), payload.to_vec()));
            }
        }
        None
    }
}

/// The source and destination of an IPv4 packet with a 20-byte header and ports after it.
fn endpoints(p: &[u8]) -> (SocketAddrV4, SocketAddrV4) {
    let from = SocketAddrV4::new(Ipv4Addr::new(p[12], p[13], p[14], p[15]), u16::from_be_bytes([p[20], p[21]]));
    let to = SocketAddrV4::new(Ipv4Addr::new(p[16], p[17], p[18], p[19]), u16::from_be_bytes([p[22], p[23]]));
    (from, to)
}

/// The first IPv4/UDP packet to one of `dsts` seen on any interface of the namespace
/// within `wait` (the whole IP packet, as it crossed), and which one it went to.
pub fn capture_udp_to(dsts: &[SocketAddrV4], wait: Duration) -> Option<(SocketAddrV4, Vec<u8>)> {
    Capture::open().udp(wait, |_, to, _| dsts.contains(&to)).map(|(_, to, packet)| (to, packet))
}

/// A UDP socket bound in the current namespace, for plain datagrams.
pub fn udp() -> UdpSocket {
    UdpSocket::bind("0.0.0.0:0").expect("bind")
}

/// A kernel counter of the calling thread's namespace (`snmp` or `netstat` in /proc):
/// `table` (`Ip`, `TcpExt`, `IpExt`) and `field` (`InNoRoutes`, `IPReversePathFilter`).
pub fn kernel_counter(table: &str, field: &str) -> u64 {
    // The calling thread's namespace (/proc/net is the process's main thread's).
    for file in ["/proc/thread-self/net/snmp", "/proc/thread-self/net/netstat"] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.chunks(2) {
            let [names, values] = pair else { continue };
            let prefix = format!("{table}:");
            if !names.starts_with(&prefix) || !values.starts_with(&prefix) {
                continue;
            }
            let names = names.split_whitespace().skip(1);
            let values = values.split_whitespace().skip(1);
            if let Some((_, v)) = names.zip(values).find(|(n, _)| *n == field) {
                return v.parse().unwrap_or(0);
            }
        }
    }
    0
}
