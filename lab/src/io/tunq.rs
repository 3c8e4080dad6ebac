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

use crate::error::{Doing, SysError};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

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

/// Attaches `n` queues to the multi-queue TUN device `name` (no packet-information header).
pub fn attach(name: &str, n: usize) -> Result<Vec<OwnedFd>, SysError> {
    check_count(n)
        .map_err(|e| SysError::Io { what: format!("TUN device {name}"), source: std::io::Error::other(e) })?;
    (0..n).map(|q| attach_one(name).doing(|| format!("TUN device {name}, queue {q}"))).collect()
}

fn attach_one(name: &str) -> std::io::Result<OwnedFd> {
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
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq we own, on a descriptor we own.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &raw mut req) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
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
pub struct Writers(Vec<File>);

impl Writers {
    /// Write handles that share the queues of `fds` (duplicates of each descriptor).
    pub fn new(fds: &[OwnedFd]) -> Result<Writers, SysError> {
        let files = fds.iter().map(|fd| fd.try_clone().map(File::from).doing(|| "TUN queue".into()));
        Ok(Writers(files.collect::<Result<_, _>>()?))
    }

    /// How many queues there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The queue a flow's packets are written on (and so, after the first, read from).
    pub fn queue_of(&self, flow: u64) -> usize {
        (flow % self.0.len().max(1) as u64) as usize
    }

    /// Writes one packet into the device on its flow's queue. A TUN write does not wait
    /// for room; an error (a packet the kernel refuses) is returned, not retried.
    pub fn write(&self, flow: u64, packet: &[u8]) -> std::io::Result<usize> {
        match self.0.get(self.queue_of(flow)) {
            Some(mut file) => file.write(packet),
            None => Err(std::io::Error::other("no TUN queue")),
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
        assert!(attach("ae0", 0).unwrap_err().to_string().starts_with("TUN device ae0: 0 is not a queue count"));
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
        let ns = crate::io::netns::TestNs::new("tunq");
        crate::io::netns::ip_in(&ns.0, &["tuntap", "add", "dev", "aeq0", "mode", "tun", "multi_queue"]).unwrap();
        crate::io::netns::ip_in(&ns.0, &["link", "set", "aeq0", "up"]).unwrap();
        crate::io::netns::ip_in(&ns.0, &["addr", "add", "198.18.250.1/32", "dev", "aeq0"]).unwrap();
        crate::io::netns::ip_in(&ns.0, &["route", "add", "198.18.251.0/24", "dev", "aeq0"]).unwrap();
        let path = format!("/var/run/netns/{}", ns.0);
        let (per_queue, wrong) = std::thread::spawn(move || {
            let file = File::open(&path).unwrap();
            // SAFETY: setns on this thread only, with a namespace file we hold open.
            assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            assert!(attach("aeq0", 0).is_err(), "zero queues is refused");
            let fds = attach("aeq0", 4).unwrap();
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
            let w = Writers::new(&fds).unwrap();
            assert_eq!(w.len(), 4);
            w.write(3, &reply).unwrap();
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
