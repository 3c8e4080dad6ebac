//! The front of a node's layer-7 listeners: SYN cookies answer SYNs without keeping
//! anything, an ACK that returns a good cookie sets a proxied connection up, and the
//! proxy holds each connection (with where its client entered) until it finishes.

use std::net::IpAddr;

use anyedge_proto::FlowKey;
use anyedge_proto::inner::{self, TcpFlags};
use smoltcp::wire::TcpControl;

use super::ClbDrop;
use crate::l7::{L7, Mode, Refused};
use crate::syn_cookie::{SynCookies, SynOptions};

/// What to do with a client segment of a layer-7 listener.
#[derive(Debug)]
pub enum Admission {
    /// A segment of a connection the proxy holds; `new` when this segment set it up.
    Proxied { new: bool },
    /// A SYN: send this SYN-ACK (its sequence number is the cookie); nothing is kept.
    Answer(Vec<u8>),
    /// Refused for this reason; send the reset when there is one (an ACK of a
    /// connection the node does not know, within the reset budget).
    Refused(ClbDrop, Option<Vec<u8>>),
}

/// Where a new connection would be proxied for: its listener and how it relays.
#[derive(Debug, Clone, Copy)]
pub struct Opening<'a> {
    pub listener: usize,
    pub mode: Mode<'a>,
    /// The node's own addresses (its TCP answers on them toward backends).
    pub own: &'a [IpAddr],
    /// Seeds the connection's TCP stack.
    pub seed: u64,
    /// Backend connections the client's source holds through the node's QUIC listeners:
    /// they count with its proxied connections against [`crate::l7::PER_SOURCE_MAX`].
    pub held_elsewhere: usize,
}

/// A node's SYN cookies and proxied connections.
#[derive(Debug)]
pub struct L7Front {
    proxy: L7,
    cookies: SynCookies,
    /// SYN-ACKs sent with a cookie.
    cookies_sent: u64,
}

impl L7Front {
    pub fn new(source_prefix_v4: u8, cookie_secret: &[u8]) -> L7Front {
        L7Front { proxy: L7::new(source_prefix_v4), cookies: SynCookies::new(cookie_secret), cookies_sent: 0 }
    }

    pub fn proxy(&self) -> &L7 {
        &self.proxy
    }

    pub fn proxy_mut(&mut self) -> &mut L7 {
        &mut self.proxy
    }

    /// SYN-ACKs this node answered layer-7 SYNs with.
    pub fn cookies_sent(&self) -> u64 {
        self.cookies_sent
    }

    /// Decides what a client segment is: part of a held connection, a SYN to answer
    /// with a cookie, the ACK that sets a connection up, or something to refuse.
    pub fn admit(
        &mut self,
        key: FlowKey,
        tcp: Option<TcpFlags>,
        packet: &[u8],
        at: Opening<'_>,
        now_ns: u64,
    ) -> Admission {
        if self.proxy.get(&key).is_some() {
            return Admission::Proxied { new: false };
        }
        let refused = |drop| Admission::Refused(drop, None);
        let Some(flags) = tcp.filter(|f| !f.rst) else { return refused(ClbDrop::NoConnection) };
        let Some((seq, ack, mss)) = inner::tcp_numbers(packet) else { return refused(ClbDrop::NoConnection) };
        if flags.syn && !flags.ack {
            let options = SynOptions {
                mss,
                window_scale: inner::tcp_window_scale(packet),
                sack: inner::tcp_sack_permitted(packet),
            };
            let answer = self.answer_syn(&key, seq, options, now_ns);
            return answer.map_or(refused(ClbDrop::NoConnection), Admission::Answer);
        }
        if flags.syn || !flags.ack {
            return refused(ClbDrop::NoConnection);
        }
        let (client_isn, cookie) = (seq.wrapping_sub(1), ack.wrapping_sub(1));
        let Some(syn) = self.cookies.check(&key, client_isn, cookie, now_ns) else {
            return Admission::Refused(ClbDrop::BadCookie, self.reset(now_ns, &key, ack));
        };
        let source = crate::cidr::source_prefix(key.src, self.proxy.source_prefix_v4());
        if self.proxy.held_by(source) + at.held_elsewhere >= crate::l7::PER_SOURCE_MAX {
            self.proxy.note_refused_per_source();
            return refused(ClbDrop::SourceCap);
        }
        match self.proxy.accept(key, at.listener, at.own, at.mode, at.seed, now_ns) {
            Ok(()) => {}
            Err(Refused::SourceCap) => return refused(ClbDrop::SourceCap),
            Err(Refused::Full) => return refused(ClbDrop::NoBackend),
        }
        if !self.proxy.splice(&key, client_isn, cookie, syn, now_ns) {
            self.proxy.remove(&key);
            return refused(ClbDrop::NoBackend);
        }
        debug_assert!(self.proxy.get(&key).is_some_and(|c| c.listener() == at.listener));
        Admission::Proxied { new: true }
    }

    /// A SYN costs nothing to remember: the SYN-ACK's sequence number is a cookie, and
    /// the connection is set up on the ACK that returns it. A client that offers window
    /// scaling is offered the proxied sockets' scale ([`crate::window::SHIFT`]); one that
    /// permits SACK is permitted it back.
    fn answer_syn(&mut self, key: &FlowKey, seq: u32, options: SynOptions, now_ns: u64) -> Option<Vec<u8>> {
        let (cookie, syn) = self.cookies.make(key, seq, options, now_ns);
        let ack = Some(seq.wrapping_add(1));
        let mut syn_ack = inner::bare_tcp(key.dst_port, key.src_port, TcpControl::Syn, cookie, ack, Some(syn.mss));
        syn_ack.window_scale = syn.window_scale.map(|_| crate::window::SHIFT);
        syn_ack.sack_permitted = syn.sack;
        let syn_ack = inner::build_tcp(key.dst, key.src, &syn_ack)?;
        self.cookies_sent += 1;
        Some(syn_ack)
    }

    /// An ACK of a connection this node does not know (it restarted, or the ACK is
    /// forged): a reset with the acknowledged number as its sequence (RFC 9293
    /// §3.10.7.1), within the node's reset budget, so a real client opens a new
    /// connection at once.
    fn reset(&mut self, now_ns: u64, key: &FlowKey, ack: u32) -> Option<Vec<u8>> {
        if !self.cookies.take_reset(now_ns) {
            return None;
        }
        let rst = inner::bare_tcp(key.dst_port, key.src_port, TcpControl::Rst, ack, None, None);
        inner::build_tcp(key.dst, key.src, &rst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyedge_proto::Transport;

    /// A client's SYN, the node's cookie, and the ACK that returns it, with `held_elsewhere`
    /// backend connections of the client's source on QUIC listeners.
    fn handshake(front: &mut L7Front, port: u16, held_elsewhere: usize) -> Admission {
        let (client, vip): (IpAddr, IpAddr) = ("198.18.128.2".parse().unwrap(), "198.18.0.20".parse().unwrap());
        let key = FlowKey { transport: Transport::Tcp, src: client, src_port: port, dst: vip, dst_port: 80 };
        let at = || Opening {
            listener: 0,
            mode: crate::l7::Mode { http: true, tls: None, alt_svc: None },
            own: &[],
            seed: 1,
            held_elsewhere,
        };
        let syn = inner::build_tcp(client, vip, &inner::bare_tcp(port, 80, TcpControl::Syn, 100, None, Some(1460)));
        let syn = syn.unwrap();
        let Admission::Answer(syn_ack) = front.admit(key, inner::parse(&syn).unwrap().tcp, &syn, at(), 0) else {
            panic!("a SYN is answered with a cookie")
        };
        let cookie = inner::tcp_numbers(&syn_ack).unwrap().0;
        let ack = inner::bare_tcp(port, 80, TcpControl::None, 101, Some(cookie.wrapping_add(1)), None);
        let ack = inner::build_tcp(client, vip, &ack).unwrap();
        front.admit(key, inner::parse(&ack).unwrap().tcp, &ack, at(), 0)
    }

    #[test]
    fn backend_connections_a_source_holds_through_quic_count_against_its_layer_7_share() {
        let mut front = L7Front::new(32, b"secret");
        assert!(matches!(handshake(&mut front, 1000, 0), Admission::Proxied { new: true }));
        // The same source holding its whole share through HTTP/3 and relayed streams.
        let full = crate::l7::PER_SOURCE_MAX - 1;
        assert!(matches!(handshake(&mut front, 1001, full), Admission::Refused(ClbDrop::SourceCap, None)));
        assert_eq!(front.proxy().refused_per_source(), 1);
        assert!(matches!(handshake(&mut front, 1002, full - 1), Admission::Proxied { new: true }));
    }

    /// Packets on their way, each due at a time.
    type Path = std::collections::BTreeMap<(u64, u64), (bool, Vec<u8>)>;

    /// A client (its receive buffer of 4 MiB, as Linux's grows to) downloading `len`
    /// bytes through a relaying (`tcp` SSL-less) listener from a backend, with `rtt_ms`
    /// between client and node and 1 ms between node and backend, every `loss_every`th
    /// packet toward the client lost (0: none). Milliseconds it took, and the largest
    /// window the proxy granted.
    fn download(len: usize, rtt_ms: u64, loss_every: u64) -> (u64, usize) {
        use crate::tcp_stack::TcpStack;
        use std::net::SocketAddr;
        let (client, vip, node, server): (IpAddr, IpAddr, IpAddr, IpAddr) = (
            "198.18.128.2".parse().unwrap(),
            "198.18.0.20".parse().unwrap(),
            "198.18.32.2".parse().unwrap(),
            "198.19.20.30".parse().unwrap(),
        );
        let key = FlowKey { transport: Transport::Tcp, src: client, src_port: 40_000, dst: vip, dst_port: 80 };
        let mut front = L7Front::new(32, b"secret");
        let own = [node];
        let at = Opening {
            listener: 0,
            mode: crate::l7::Mode { http: false, tls: None, alt_svc: None },
            own: &own,
            seed: 1,
            held_elsewhere: 0,
        };
        let mut c = TcpStack::new(client, 7, 0);
        let ch = c.new_socket_sized(4 << 20, 64 << 10);
        let cx = c.iface.context();
        c.sockets.get_mut::<smoltcp::socket::tcp::Socket>(ch).connect(cx, (vip, 80), (client, 40_000)).unwrap();
        // Every segment acknowledged at once, as Linux does while a transfer starts.
        c.socket(ch).set_ack_delay(None);
        let mut b = TcpStack::new(server, 9, 0);
        let bh = b.new_socket_sized(64 << 10, 4 << 20);
        b.socket(bh).listen(8080).unwrap();
        let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let (mut path, mut seq, mut served, mut got, mut asked, mut widest) = (Path::new(), 0u64, 0, 0, false, 0);
        let half = rtt_ms * 500_000;
        for tick in 0..2_000_000u64 {
            let now = tick * 100_000;
            // The client asks once, then reads everything.
            c.poll(now);
            let cs = c.socket(ch);
            if !asked && cs.may_send() {
                asked = cs.send_slice(b"GET big\n").unwrap() > 0;
            }
            while let Ok(n) = cs.recv(|d| (d.len(), d.len())) {
                if n == 0 {
                    break;
                }
                got += n;
            }
            if got == len {
                return (now / 1_000_000, widest);
            }
            for p in c.drain_tx() {
                seq += 1;
                path.insert((now + half, seq), (true, p));
            }
            b.poll(now);
            let bs = b.socket(bh);
            if bs.may_send() && bs.recv_queue() > 0 && served < len {
                served += bs.send_slice(&body[served..]).unwrap();
            }
            for p in b.drain_tx() {
                seq += 1;
                path.insert((now + 500_000, seq), (false, p));
            }
            // The node: what arrived, then its timers.
            let due: Vec<_> = path.range(..(now + 1, 0)).map(|(k, _)| *k).collect();
            let mut drive = false;
            for k in due {
                let (_, p) = path.remove(&k).unwrap();
                let to = inner::parse(&p).unwrap().key.dst;
                if to == client {
                    c.receive(p);
                } else if to == server {
                    b.receive(p);
                } else if to == node {
                    front.proxy_mut().receive(&key, p);
                    drive = true;
                } else {
                    match front.admit(key, inner::parse(&p).unwrap().tcp, &p, at, now) {
                        Admission::Answer(syn_ack) => {
                            seq += 1;
                            path.insert((now + half, seq), (false, syn_ack));
                        }
                        Admission::Proxied { .. } => {
                            front.proxy_mut().receive_client(&key, crate::conn_table::Ingress::Direct, p);
                            drive = true;
                        }
                        Admission::Refused(..) => {}
                    }
                }
            }
            if drive || front.proxy().next_timer().is_some_and(|t| t <= now) {
                let mut step = front.proxy_mut().drive(&key, now);
                if step.needs_backend {
                    assert!(front.proxy_mut().connect(&key, 0, SocketAddr::new(server, 8080), (node, 50_000)));
                    step.to_backend.extend(front.proxy_mut().drive(&key, now).to_backend);
                }
                for (p, _) in step.to_client {
                    seq += 1;
                    if loss_every == 0 || !seq.is_multiple_of(loss_every) {
                        path.insert((now + half, seq), (false, p));
                    }
                }
                for p in step.to_backend {
                    seq += 1;
                    path.insert((now + 500_000, seq), (true, p));
                }
            }
            widest = widest.max(front.proxy().windows_grown() / crate::window::SOCKETS + crate::window::START);
            if tick % 2_500 == 0 && std::env::var("TRACE").is_ok() {
                eprintln!(
                    "{} ms: got {got} served {served} grown {} in flight {}",
                    now / 1_000_000,
                    front.proxy().windows_grown(),
                    path.len()
                );
            }
        }
        panic!("{got} of {len} bytes arrived");
    }

    #[test]
    fn a_proxied_download_grows_its_window_with_the_paths_bandwidth_delay_product() {
        let (ms, widest) = download(20_000_000, 40, 0);
        eprintln!("20 MB at 40 ms: {ms} ms, window {widest}");
        let (ms, widest) = download(20_000_000, 40, 500);
        eprintln!("20 MB at 40 ms, 0.2 % loss: {ms} ms, window {widest}");
        assert!(widest > crate::window::START, "the window grew");
    }
}
