//! A TUN device read through its multi-queue support (`IFF_MULTI_QUEUE`): the device is
//! attached several times, each attachment a queue with a file descriptor of its own, and
//! the kernel hands each packet routed into the device to one queue. It picks the queue
//! by the packet's flow hash, and once the node has written a packet of that flow back
//! into the device, the queue that write went through. A POP reads each queue on a thread
//! of its own (one per core) and writes a reply on the queue of its flow's hash
//! ([`Writers::write`]), so a flow's packets keep to one queue and flows spread over all.
//!
//! `lab up` creates the device (`ip tuntap add … multi_queue`); the node attaches to it
//! here with `TUNSETIFF` and hands each queue to the `tun` crate for async reads.
//!
//! With [`Framing::Offloads`] (what POPs and backend hosts run) every packet read or
//! written has a virtio-net header in front (`IFF_VNET_HDR`) and the device offers the
//! kernel checksum and TCP segmentation offload (`TUNSETOFFLOAD`: TSO for IPv4 and IPv6,
//! with ECN): the kernel hands over a bulk transfer as super-packets of up to 64 KiB
//! behind one header, and takes them back to cut itself, so a read or write moves forty
//! segments rather than one (`anyedge_proto::offload`).

use crate::error::{Doing, SysError};
use anyedge_proto::offload;
use std::fs::File;
use std::io::{IoSlice, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// What each read and write of a queue carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One IP packet, as it is.
    Bare,
    /// A virtio-net header, then an IP packet that may be a TCP super-packet; the device
    /// offloads checksums and TCP segmentation to the node.
    Offloads,
}

/// The largest read a queue makes: a super-packet of 64 KiB behind its header.
pub const READ_MAX: usize = 65_536 + offload::VNET_HDR_LEN;

/// A packet just read (`read`: what the read returned), made ready for a core: where
/// the IP packet starts in it and, for a super-packet, its segment size (0 otherwise).
/// Bytes the kernel should never hand over are refused with what was wrong.
pub fn take(read: &mut [u8], framing: Framing) -> Result<(usize, u16), anyedge_proto::Error> {
    match framing {
        Framing::Bare => Ok((0, 0)),
        Framing::Offloads => Ok((offload::VNET_HDR_LEN, offload::from_device(read)?)),
    }
}

/// The most queues a node attaches (the kernel allows 256 per device).
pub const QUEUES_MAX: usize = 64;

/// One queue per core of this machine, at most [`QUEUES_MAX`].
pub fn per_core() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, QUEUES_MAX)
}

/// A number of TUN queues out of range, or text that is no number.
#[derive(Debug, thiserror::Error)]
#[error("{given} is not a queue count: 1 to {QUEUES_MAX}")]
pub struct NotAQueueCount {
    pub given: String,
}

/// `n` as a queue count, or why it is not one.
pub fn check_count(n: usize) -> Result<usize, NotAQueueCount> {
    if (1..=QUEUES_MAX).contains(&n) { Ok(n) } else { Err(NotAQueueCount { given: n.to_string() }) }
}

/// A queue count written as text (`--tun-queues`).
pub fn parse_count(text: &str) -> Result<usize, NotAQueueCount> {
    let text = text.trim();
    text.parse::<usize>().map_err(|_| NotAQueueCount { given: format!("`{text}`") }).and_then(check_count)
}

/// Attaches `n` queues to the multi-queue TUN device `name` (no packet-information
/// header), framed as `framing` says.
pub fn attach(name: &str, n: usize, framing: Framing) -> Result<Vec<OwnedFd>, SysError> {
    check_count(n)
        .map_err(|e| SysError::Io { what: format!("TUN device {name}"), source: std::io::Error::other(e) })?;
    (0..n).map(|q| attach_one(name, framing).doing(|| format!("TUN device {name}, queue {q}"))).collect()
}

fn attach_one(name: &str, framing: Framing) -> std::io::Result<OwnedFd> {
    // SAFETY: open with a NUL-terminated path; the result is checked before use.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero ifreq is valid (a C struct of integers and arrays).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not an interface name"));
    }
    for (to, &b) in req.ifr_name.iter_mut().zip(bytes) {
        *to = b as libc::c_char;
    }
    let vnet = if framing == Framing::Offloads { libc::IFF_VNET_HDR } else { 0 };
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE | vnet) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq we own, on a descriptor we own.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &raw mut req) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if framing == Framing::Offloads {
        let features = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;
        // SAFETY: TUNSETOFFLOAD takes its argument by value, on a descriptor we own.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETOFFLOAD, libc::c_ulong::from(features)) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(fd)
}

/// A queue, ready for async reads on the runtime of the calling thread.
pub fn into_async(name: &str, fd: OwnedFd) -> Result<tun::AsyncDevice, SysError> {
    use std::os::fd::IntoRawFd;
    let mut config = tun::Configuration::default();
    config.tun_name(name).raw_fd(fd.into_raw_fd()).close_fd_on_drop(true);
    tun::create_as_async(&config).map_err(|e| SysError::Io { what: format!("TUN device {name}"), source: e.into() })
}

/// Every queue of a device, for writing from any thread.
pub struct Writers {
    files: Vec<File>,
    framing: Framing,
}

impl Writers {
    /// Write handles that share the queues of `fds` (duplicates of each descriptor),
    /// attached with `framing`.
    pub fn new(fds: &[OwnedFd], framing: Framing) -> Result<Writers, SysError> {
        let files = fds.iter().map(|fd| fd.try_clone().map(File::from).doing(|| "TUN queue".into()));
        Ok(Writers { files: files.collect::<Result<_, _>>()?, framing })
    }

    /// How many queues there are.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The queue a flow's packets are written on (and so, after the first, read from).
    pub fn queue_of(&self, flow: u64) -> usize {
        (flow % self.files.len().max(1) as u64) as usize
    }

    /// Writes one packet into the device on its flow's queue: a super-packet of
    /// `segment` bytes per segment (0: an ordinary packet) for the kernel to cut, behind
    /// the header that says so (on a device without offloads, cut here first). A TUN
    /// write does not wait for room; an error (a packet the kernel refuses) is returned,
    /// not retried.
    pub fn write(&self, flow: u64, packet: &mut [u8], segment: u16) -> std::io::Result<usize> {
        let Some(mut file) = self.files.get(self.queue_of(flow)) else {
            return Err(std::io::Error::other("no TUN queue"));
        };
        match self.framing {
            Framing::Offloads => {
                let hdr = offload::to_device(packet, segment).map_err(std::io::Error::other)?;
                file.write_vectored(&[IoSlice::new(&hdr), IoSlice::new(packet)])
            }
            Framing::Bare if segment == 0 => file.write(packet),
            Framing::Bare => {
                let parts = offload::cut(packet, usize::from(segment)).map_err(std::io::Error::other)?;
                parts.iter().map(|p| file.write(p)).sum()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// A queue count from the command line or a rendered node: a bad one is refused with
    /// what was wrong.
    #[test]
    fn queue_counts_outside_one_to_the_maximum_are_refused_with_the_reason() {
        assert_eq!(parse_count(" 3\n").ok(), Some(3));
        assert_eq!(parse_count("64").ok(), Some(QUEUES_MAX));
        for bad in ["0", "65", "-1", "two", ""] {
            let e = parse_count(bad).unwrap_err().to_string();
            assert!(e.contains("is not a queue count: 1 to 64"), "{bad}: {e}");
        }
        assert!(
            attach("ae0", 0, Framing::Offloads)
                .unwrap_err()
                .to_string()
                .starts_with("TUN device ae0: 0 is not a queue count")
        );
    }

    /// A namespace of its own with the multi-queue device aeq0 up at 198.18.250.1 and
    /// 198.18.251.0/24 routed into it; the namespace's file path.
    fn namespace_with_device(prefix: &str) -> (crate::io::netns::TestNs, String) {
        let ns = crate::io::netns::TestNs::new(prefix);
        crate::io::netns::ip_in(&ns.0, &["tuntap", "add", "dev", "aeq0", "mode", "tun", "multi_queue"]).unwrap();
        crate::io::netns::ip_in(&ns.0, &["link", "set", "aeq0", "up"]).unwrap();
        crate::io::netns::ip_in(&ns.0, &["addr", "add", "198.18.250.1/32", "dev", "aeq0"]).unwrap();
        crate::io::netns::ip_in(&ns.0, &["route", "add", "198.18.251.0/24", "dev", "aeq0"]).unwrap();
        let path = format!("/var/run/netns/{}", ns.0);
        (ns, path)
    }

    fn root() -> bool {
        // SAFETY: geteuid has no arguments and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    /// A device made multi-queue by `ip tuntap … multi_queue` takes several attachments;
    /// packets of many flows routed into it arrive on more than one queue, each whole and
    /// each on one queue only; a write on any queue goes into the kernel's stack.
    #[test]
    fn a_multi_queue_tun_device_spreads_flows_over_its_queues() {
        if !root() {
            eprintln!("skipped: needs root (CI runs it as root)");
            return;
        }
        let (_ns, path) = namespace_with_device("tunq");
        let (per_queue, wrong) = std::thread::spawn(move || {
            let file = File::open(&path).unwrap();
            // SAFETY: setns on this thread only, with a namespace file we hold open.
            assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            assert!(attach("aeq0", 0, Framing::Bare).is_err(), "zero queues is refused");
            let fds = attach("aeq0", 4, Framing::Bare).unwrap();
            let files: Vec<File> = fds.iter().map(|fd| File::from(fd.try_clone().unwrap())).collect();
            for f in &files {
                // SAFETY: fcntl on a descriptor we own, setting O_NONBLOCK.
                unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
            }
            // Every queue's packets to 198.18.251.7 waiting now (the kernel's own traffic,
            // IPv6 solicitations and the like, is not ours).
            let read_all = || -> Vec<Vec<Vec<u8>>> {
                let mut buf = [0u8; 2048];
                let mut all = Vec::new();
                for mut f in &files {
                    let mut got = Vec::new();
                    while let Ok(n) = f.read(&mut buf) {
                        if n >= 28 && buf[0] >> 4 == 4 && buf[16..20] == [198, 18, 251, 7] {
                            got.push(buf[28..n].to_vec());
                        }
                    }
                    all.push(got);
                }
                all
            };
            // A device has carrier once a queue is attached, but the kernel starts handing
            // it packets a moment later (its link watch): until then, sends are dropped.
            let warm = std::net::UdpSocket::bind("198.18.250.1:0").unwrap();
            let since = std::time::Instant::now();
            while read_all().iter().flatten().next().is_none() {
                assert!(since.elapsed() < std::time::Duration::from_secs(5), "the device never passed a packet");
                warm.send_to(b"warm", "198.18.251.7:9").unwrap();
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            read_all();
            // 64 flows (source ports), two datagrams each.
            let senders: Vec<_> =
                (0..64).map(|_| std::net::UdpSocket::bind("198.18.250.1:0").unwrap()).collect::<Vec<_>>();
            for s in &senders {
                for _ in 0..2 {
                    s.send_to(b"hello queues", "198.18.251.7:9").unwrap();
                }
            }
            let mut per_queue = vec![0usize; fds.len()];
            let mut wrong = 0;
            for (q, got) in read_all().into_iter().enumerate() {
                for payload in got {
                    if payload == b"hello queues" {
                        per_queue[q] += 1;
                    } else {
                        wrong += 1;
                    }
                }
            }
            // A write on the last queue reaches the stack: an echo to our own socket.
            let back = std::net::UdpSocket::bind("198.18.250.1:7777").unwrap();
            back.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
            let reply = udp4([198, 18, 251, 7], 9, [198, 18, 250, 1], 7777, b"back");
            let w = Writers::new(&fds, Framing::Bare).unwrap();
            assert_eq!(w.len(), 4);
            w.write(3, &mut reply.clone(), 0).unwrap();
            let mut got = [0u8; 16];
            let n = back.recv(&mut got).unwrap();
            assert_eq!(&got[..n], b"back");
            (per_queue, wrong)
        })
        .join()
        .unwrap();
        assert_eq!(wrong, 0);
        assert_eq!(per_queue.iter().sum::<usize>(), 128, "every datagram read once: {per_queue:?}");
        assert!(per_queue.iter().filter(|&&n| n > 0).count() >= 2, "flows on more than one queue: {per_queue:?}");
    }

    /// With offloads, the kernel's own TCP hands a bulk send over as super-packets (one
    /// read, many segments, its segment size in the header, made whole with a checksum
    /// over all of it), and takes a super-packet written back with the header that says
    /// where to cut it: its socket reads every byte. Both ways through a real TCP
    /// connection of the namespace's kernel, whose peer is this test.
    #[test]
    fn with_offloads_the_kernels_tcp_comes_and_goes_as_super_packets() {
        use smoltcp::wire::{IpAddress, Ipv4Packet, TcpControl, TcpPacket, TcpRepr};
        use std::io::{Read, Write};
        if !root() {
            eprintln!("skipped: needs root (CI runs it as root)");
            return;
        }
        let (_ns, path) = namespace_with_device("tso");
        let (supers, up, sent) = std::thread::spawn(move || {
            let file = File::open(&path).unwrap();
            // SAFETY: setns on this thread only, with a namespace file we hold open.
            assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            let fds = attach("aeq0", 1, Framing::Offloads).unwrap();
            let w = Writers::new(&fds, Framing::Offloads).unwrap();
            let mut tun = File::from(fds[0].try_clone().unwrap());
            let (me, peer) = ("198.18.250.1".parse().unwrap(), "198.18.251.7".parse().unwrap());
            // Reads the kernel's next TCP packet to the peer, made whole: (segment, packet).
            let mut next = || loop {
                let mut buf = vec![0u8; READ_MAX];
                let n = tun.read(&mut buf).unwrap();
                let (start, segment) = take(&mut buf[..n], Framing::Offloads).unwrap();
                let p = buf[start..n].to_vec();
                if p.len() >= 40 && p[0] >> 4 == 4 && p[9] == 6 && p[16..20] == [198, 18, 251, 7] {
                    return (segment, p);
                }
            };
            let client = std::thread::spawn(|| std::net::TcpStream::connect("198.18.251.7:9"));
            let (_, syn) = next();
            let (isn, _, _) = anyedge_proto::inner::tcp_numbers(&syn).unwrap();
            let mut syn_ack = anyedge_proto::inner::bare_tcp(9, 0, TcpControl::Syn, 5_000, Some(isn + 1), Some(1_400));
            syn_ack.dst_port = u16::from_be_bytes([syn[20], syn[21]]);
            syn_ack.window_len = 65_535;
            syn_ack.window_scale = Some(7);
            let port = syn_ack.dst_port;
            w.write(0, &mut anyedge_proto::inner::build_tcp(peer, me, &syn_ack).unwrap(), 0).unwrap();
            let mut stream = client.join().unwrap().unwrap();
            let _ack = next();
            // Up: 100 KB sent at once leave as super-packets of 1,400-byte segments.
            let sent: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
            stream.set_nonblocking(true).unwrap();
            let accepted = stream.write(&sent).unwrap_or(0);
            let (mut up, mut supers, mut acked) = (Vec::new(), 0, isn + 1);
            while up.len() < accepted.min(10 * 1_400) {
                let (segment, p) = next();
                let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
                let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
                assert!(tcp.verify_checksum(&IpAddress::Ipv4(ip.src_addr()), &IpAddress::Ipv4(ip.dst_addr())));
                if segment > 0 {
                    assert_eq!(segment, 1_400);
                    supers += 1;
                }
                up.extend_from_slice(tcp.payload());
                acked = acked.wrapping_add(tcp.payload().len() as u32);
            }
            // Down: one super-packet of 20,000 bytes, cut by the kernel, read whole.
            let data: Vec<u8> = (0..20_000u32).map(|i| (i % 241) as u8).collect();
            let repr = anyedge_proto::inner::bare_tcp(9, port, TcpControl::Psh, 5_001, Some(acked), None);
            let repr = TcpRepr { payload: &data, window_len: 65_535, ..repr };
            let mut packet = anyedge_proto::inner::build_tcp(peer, me, &repr).unwrap();
            w.write(0, &mut packet, 1_400).unwrap();
            stream.set_nonblocking(false).unwrap();
            stream.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
            let mut down = vec![0u8; data.len()];
            stream.read_exact(&mut down).unwrap();
            assert_eq!(down, data, "the super-packet's bytes, in order");
            (supers, up, sent)
        })
        .join()
        .unwrap();
        assert!(supers >= 1, "the first flight came as a super-packet");
        assert_eq!(up[..], sent[..up.len()], "the bytes sent, in order");
    }

    /// An IPv4 UDP packet with a correct header checksum (UDP checksum 0: none).
    pub(super) fn udp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
        let len = 28 + payload.len();
        let mut p = vec![0u8; len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        let mut sum: u32 = p[..20].chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p[28..].copy_from_slice(payload);
        p
    }
}
