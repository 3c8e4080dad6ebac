//! The packets of health checks: a half-open TCP handshake, a UDP datagram, or an HTTP
//! GET over a real TCP connection (smoltcp on the caller's clock). The prober sends and
//! recognises answers; the `HealthChecker` decides what they mean over time.

use std::net::{IpAddr, SocketAddr};

use anyedge_proto::Transport;
use anyedge_proto::inner::{self, Inner};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::TcpControl;

use crate::config::HealthProtocol;
use crate::tcp_stack::TcpStack;

/// Source ports of health probes (SNAT never hands these out).
pub const PROBE_PORTS: std::ops::RangeInclusive<u16> = 61_000..=65_535;
/// First TCP sequence number of half-open probes; the probe id is added to it.
const PROBE_ISN: u32 = 0x5eed_0000;
/// UDP probes carry this, then the probe id.
const UDP_PROBE_MAGIC: &[u8] = b"anyedge-health ";
/// Bytes of an HTTP answer read for its status line.
const STATUS_LINE_MAX: usize = 512;

/// A finished probe: its id and whether the backend passed.
pub type Answer = (u16, bool);

struct HttpProbe {
    probe_id: u16,
    backend: SocketAddr,
    local_port: u16,
    handle: SocketHandle,
    request: Vec<u8>,
    sent: usize,
    status_line: Vec<u8>,
    expect: Vec<(u16, u16)>,
}

/// One CLB node's health probes in flight.
pub struct HealthProber {
    address: IpAddr,
    address_v6: Option<IpAddr>,
    http: Option<TcpStack>,
    http_probes: Vec<HttpProbe>,
    seed: u64,
}

impl std::fmt::Debug for HealthProber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthProber").field("http_probes", &self.http_probes.len()).finish()
    }
}

/// Something the prober wants on the wire, toward a backend.
pub type Send = (SocketAddr, Vec<u8>);

fn probe_port(probe_id: u16) -> u16 {
    let span = PROBE_PORTS.end() - PROBE_PORTS.start() + 1;
    let port = PROBE_PORTS.start() + probe_id % span;
    debug_assert!(PROBE_PORTS.contains(&port), "probes leave from probe ports only");
    port
}

impl HealthProber {
    pub fn new(address: IpAddr, address_v6: Option<IpAddr>, seed: u64) -> HealthProber {
        HealthProber { address, address_v6, http: None, http_probes: Vec::new(), seed }
    }

    fn own_address_for(&self, peer: IpAddr) -> IpAddr {
        let own = match (peer, self.address_v6) {
            (IpAddr::V6(_), Some(v6)) => v6,
            _ => self.address,
        };
        debug_assert!(
            self.address_v6.is_none() || own.is_ipv4() == peer.is_ipv4(),
            "a probe speaks the backend's family"
        );
        own
    }

    /// Whether a packet addressed to this node is a probe's answer.
    pub fn is_probe_traffic(&self, info: &Inner) -> bool {
        (info.key.dst == self.address || Some(info.key.dst) == self.address_v6)
            && PROBE_PORTS.contains(&info.key.dst_port)
    }

    /// Sends probe `probe_id` to `backend`.
    pub fn start(
        &mut self,
        now_ns: u64,
        probe_id: u16,
        backend: SocketAddr,
        protocol: &HealthProtocol,
        out: &mut Vec<Send>,
    ) {
        let own = self.own_address_for(backend.ip());
        let port = probe_port(probe_id);
        match protocol {
            HealthProtocol::Tcp => {
                let seq = PROBE_ISN.wrapping_add(u32::from(probe_id));
                let syn = inner::bare_tcp(port, backend.port(), TcpControl::Syn, seq, None, Some(1460));
                out.extend(inner::build_tcp(own, backend.ip(), &syn).map(|b| (backend, b)));
            }
            HealthProtocol::Udp => {
                let mut payload = UDP_PROBE_MAGIC.to_vec();
                payload.extend_from_slice(&probe_id.to_be_bytes());
                out.extend(
                    inner::build_udp((own, port), (backend.ip(), backend.port()), &payload).map(|b| (backend, b)),
                );
            }
            HealthProtocol::Http { path, expect } => self.start_http(now_ns, probe_id, backend, path, expect, out),
        }
    }

    fn start_http(
        &mut self,
        now_ns: u64,
        probe_id: u16,
        backend: SocketAddr,
        path: &str,
        expect: &[(u16, u16)],
        out: &mut Vec<Send>,
    ) {
        let own = self.own_address_for(backend.ip());
        let addrs: Vec<IpAddr> = std::iter::once(self.address).chain(self.address_v6).collect();
        let seed = self.seed;
        let stack = self.http.get_or_insert_with(|| TcpStack::with_addresses(&addrs, seed, now_ns));
        let handle = stack.new_socket();
        let local_port = probe_port(probe_id);
        let (iface, sockets) = (&mut stack.iface, &mut stack.sockets);
        let socket = sockets.get_mut::<tcp::Socket>(handle);
        if socket.connect(iface.context(), (backend.ip(), backend.port()), (own, local_port)).is_err() {
            sockets.remove(handle);
            return;
        }
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {backend}\r\nUser-Agent: anyedge-health\r\nConnection: close\r\n\r\n"
        )
        .into_bytes();
        self.http_probes.push(HttpProbe {
            probe_id,
            backend,
            local_port,
            handle,
            request,
            sent: 0,
            status_line: Vec::new(),
            expect: expect.to_vec(),
        });
        self.drive_http(now_ns, out, &mut Vec::new());
    }

    /// Handles an answer addressed to a probe port. `backend_of` names the backend an
    /// outstanding probe id was sent to, so answers from anyone else are ignored.
    pub fn on_packet(
        &mut self,
        now_ns: u64,
        info: &Inner,
        packet: &[u8],
        backend_of: impl Fn(u16) -> Option<SocketAddr>,
        out: &mut Vec<Send>,
        answers: &mut Vec<Answer>,
    ) {
        let from = SocketAddr::new(info.key.src, info.key.src_port);
        if let Some(http) = self.http_probes.iter().find(|p| p.local_port == info.key.dst_port && p.backend == from) {
            let _ = http.probe_id;
            if let Some(stack) = self.http.as_mut() {
                stack.receive(packet.to_vec());
            }
            self.drive_http(now_ns, out, answers);
            return;
        }
        match (info.key.transport, info.tcp) {
            (Transport::Tcp, Some(flags)) => {
                let Some(ack) = info.ack_number else { return };
                let probe_id = ack.wrapping_sub(1).wrapping_sub(PROBE_ISN) as u16;
                if backend_of(probe_id) != Some(from) {
                    return;
                }
                let ok = flags.syn && flags.ack && !flags.rst;
                if ok {
                    // Half-open: we got our answer, the backend gets its connection back.
                    let rst = inner::bare_tcp(info.key.dst_port, from.port(), TcpControl::Rst, ack, None, None);
                    out.extend(inner::build_tcp(info.key.dst, from.ip(), &rst).map(|b| (from, b)));
                }
                answers.push((probe_id, ok));
            }
            (Transport::Udp, _) => {
                let payload = inner::transport_payload(packet);
                let Some(id) = payload.strip_prefix(UDP_PROBE_MAGIC) else { return };
                let Some(probe_id) = id.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else { return };
                if backend_of(probe_id) == Some(from) {
                    answers.push((probe_id, true));
                }
            }
            _ => {}
        }
    }

    /// Drops probes the health checker gave up on (timed out).
    pub fn cancel_except(&mut self, outstanding: impl Fn(u16) -> bool, out: &mut Vec<Send>) {
        let Some(stack) = self.http.as_mut() else { return };
        self.http_probes.retain(|p| {
            if outstanding(p.probe_id) {
                return true;
            }
            stack.socket(p.handle).abort();
            false
        });
        self.flush(out, 0);
    }

    pub fn poll_timeout(&mut self, now_ns: u64) -> Option<u64> {
        if self.http_probes.is_empty() {
            return None;
        }
        self.http.as_mut()?.poll_at_ns(now_ns).map(|t| t.max(now_ns))
    }

    pub fn handle_timeout(&mut self, now_ns: u64, out: &mut Vec<Send>, answers: &mut Vec<Answer>) {
        self.drive_http(now_ns, out, answers);
    }

    /// Moves every HTTP probe along: write the request, read the status line, judge it.
    fn drive_http(&mut self, now_ns: u64, out: &mut Vec<Send>, answers: &mut Vec<Answer>) {
        let Some(stack) = self.http.as_mut() else { return };
        stack.poll(now_ns);
        let mut done = Vec::new();
        for (i, p) in self.http_probes.iter_mut().enumerate() {
            let s = stack.socket(p.handle);
            if s.can_send() && p.sent < p.request.len() {
                p.sent += s.send_slice(&p.request[p.sent..]).unwrap_or(0);
            }
            while s.can_recv() && !p.status_line.contains(&b'\n') && p.status_line.len() < STATUS_LINE_MAX {
                let mut buf = [0u8; 256];
                let n = s.recv_slice(&mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                p.status_line.extend_from_slice(&buf[..n]);
            }
            let verdict = if p.status_line.contains(&b'\n') || p.status_line.len() >= STATUS_LINE_MAX {
                Some(status_in(&p.status_line, &p.expect))
            } else if matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait) {
                Some(false) // refused or closed before answering
            } else {
                None
            };
            if let Some(ok) = verdict {
                s.abort();
                answers.push((p.probe_id, ok));
                done.push(i);
            }
        }
        for i in done.into_iter().rev() {
            self.http_probes.remove(i);
        }
        self.flush(out, now_ns);
    }

    fn flush(&mut self, out: &mut Vec<Send>, now_ns: u64) {
        let Some(stack) = self.http.as_mut() else { return };
        if now_ns > 0 {
            stack.poll(now_ns);
        }
        for packet in stack.drain_tx() {
            if let Ok(info) = inner::parse(&packet) {
                out.push((SocketAddr::new(info.key.dst, info.key.dst_port), packet));
            }
        }
        // Aborted sockets are gone once their RST is out.
        let closed: Vec<SocketHandle> = stack
            .sockets
            .iter()
            .filter(|(h, s)| {
                !self.http_probes.iter().any(|p| p.handle == *h)
                    && matches!(s, smoltcp::socket::Socket::Tcp(t) if t.state() == tcp::State::Closed)
            })
            .map(|(h, _)| h)
            .collect();
        for h in closed {
            stack.sockets.remove(h);
        }
    }
}

/// Whether an HTTP status line (`HTTP/1.1 200 OK`) carries an expected status.
fn status_in(line: &[u8], expect: &[(u16, u16)]) -> bool {
    let text = String::from_utf8_lossy(line);
    let mut words = text.split_whitespace();
    let version_ok = words.next().is_some_and(|v| v.starts_with("HTTP/"));
    let status = words.next().and_then(|c| c.parse::<u16>().ok());
    version_ok && status.is_some_and(|c| expect.iter().any(|&(lo, hi)| (lo..=hi).contains(&c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_match_expected_ranges() {
        let ok = [(200, 299)];
        assert!(status_in(b"HTTP/1.1 200 OK\r\n", &ok));
        assert!(status_in(b"HTTP/1.0 204 No Content\r\n", &ok));
        assert!(!status_in(b"HTTP/1.1 503 Busy\r\n", &ok));
        assert!(!status_in(b"SSH-2.0-OpenSSH\r\n", &ok));
        assert!(!status_in(b"", &ok));
        assert!(status_in(b"HTTP/1.1 301 Moved\r\n", &[(200, 200), (300, 399)]));
    }
}
