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

/// An IPv4/TCP SYN from `src` to `dst` with sequence number `seq` (an MSS option, as a
/// kernel's own SYN has; checksums filled in).
pub fn tcp_syn_packet(src: SocketAddrV4, dst: SocketAddrV4, seq: u32) -> Vec<u8> {
    let mut p = ipv4(src, dst, 6, 24);
    let t = &mut p[20..];
    t[0..2].copy_from_slice(&src.port().to_be_bytes());
    t[2..4].copy_from_slice(&dst.port().to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[12] = 6 << 4; // 24 bytes of header
    t[13] = 0x02; // SYN
    t[14..16].copy_from_slice(&64_240u16.to_be_bytes());
    t[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]); // MSS 1460
    // The checksum covers a pseudo-header: addresses, protocol, TCP length.
    let mut pseudo = Vec::with_capacity(12 + 24);
    pseudo.extend_from_slice(&src.ip().octets());
    pseudo.extend_from_slice(&dst.ip().octets());
    pseudo.extend_from_slice(&[0, 6, 0, 24]);
    pseudo.extend_from_slice(&p[20..]);
    let sum = checksum(&pseudo);
    p[36..38].copy_from_slice(&sum.to_be_bytes());
    p
}

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

/// The first IPv4/UDP packet to one of `dsts` seen on any interface of the namespace
/// within `wait` (the whole IP packet, as it crossed), and which one it went to.
pub fn capture_udp_to(dsts: &[SocketAddrV4], wait: Duration) -> Option<(SocketAddrV4, Vec<u8>)> {
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
    let deadline = std::time::Instant::now() + wait;
    let mut buf = vec![0u8; 65_536];
    while std::time::Instant::now() < deadline {
        // SAFETY: the buffer outlives the call.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 28 {
            continue;
        }
        let p = &buf[..n as usize];
        let to = SocketAddrV4::new(Ipv4Addr::new(p[16], p[17], p[18], p[19]), u16::from_be_bytes([p[22], p[23]]));
        if p[0] == 0x45 && p[9] == 17 && dsts.contains(&to) {
            // Sent on a veth, the UDP checksum may be left for the device to fill in: as
            // captured it is only partial. Zero (no checksum, IPv4 allows it) keeps the
            // datagram exactly what the sender sealed.
            let mut packet = p.to_vec();
            packet[26..28].copy_from_slice(&[0, 0]);
            return Some((to, packet));
        }
    }
    None
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
