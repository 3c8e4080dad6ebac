//! What a client's TCP connection carries: plain requests, HTTP, or HTTPS through rustls,
//! and how it reads the answers.
use crate::app;
use crate::world::flows::Exchange;
use crate::world::flows::TcpFlow;
use crate::world::flows::port_of;
use anyedge_region::tcp_stack::TcpStack;
use anyedge_region::tcp_stack::buffer_for;
use smoltcp::socket::tcp;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::sync::Arc;

/// What a TCP traffic class sends: the plain request protocol, or HTTP (to a layer-7
/// listener), over TLS for HTTPS.
#[derive(Clone)]
pub(super) struct TcpApp {
    pub(super) request: u32,
    pub(super) response: u32,
    pub(super) http: bool,
    pub(super) tls: Option<Arc<rustls::ClientConfig>>,
}

impl TcpApp {
    pub(super) fn request_bytes(&self, remote: (IpAddr, u16)) -> Vec<u8> {
        if self.http {
            app::http_request(remote, self.request, self.response)
        } else {
            app::tcp_request(self.request, self.response)
        }
    }

    /// A client socket's (receive, send) buffers: the response and the request each fit
    /// whole, so the window is what it would be with 64 KiB for every message up to 60 KiB.
    pub(super) fn buffers(&self) -> (usize, usize) {
        (buffer_for(u64::from(self.response)), buffer_for(u64::from(self.request)))
    }

    /// Response length when it is known before the head is read (the plain protocol).
    pub(super) fn fixed_response(&self) -> Option<u64> {
        (!self.http).then(|| u64::from(self.response.max(app::ID_LEN as u32)))
    }
}

/// Drives one TCP flow of a client: (re)connect, write the request in progress, read its
/// response; completed requests go to `completions` as (slot, issue time, backend).
pub(super) fn service_tcp_flow(
    stack: &mut TcpStack,
    (tf, generation): (&mut TcpFlow, &mut u16),
    (slot, now): (usize, u64),
    addr: IpAddr,
    remote: (IpAddr, u16),
    app: &TcpApp,
    completions: &mut Vec<(usize, u64, Option<SocketAddr>)>,
) {
    give_up_if_silent(stack, tf, now);
    if !ensure_connected(stack, (tf, generation), (slot, now), (addr, remote), app) {
        return;
    }
    let Some(h) = tf.handle else { return };
    let ex = tf.exchange.get_or_insert_default();
    if ex.expected.is_none() {
        ex.expected = app.fixed_response();
        ex.body_at = ex.expected.map(|_| 0);
    }
    let req = app.request_bytes(remote);
    let s = stack.socket(h);
    queue_request(tf, &req);
    if let Some(tls) = tf.tls.as_mut() {
        anyedge_region::termination::tls_write(tls, &mut Vec::new(), &mut tf.wire);
    }
    send_wire(s, tf);
    let answered = completions.len();
    if !read_response(s, tf, app, slot, completions) {
        s.abort();
        return;
    }
    if completions.len() > answered {
        tf.progress.made(now);
    }
    // A finished handshake may have freed the request, or TLS may owe the peer records.
    if tf.tls.is_some() {
        queue_request(tf, &req);
        if let Some(tls) = tf.tls.as_mut() {
            anyedge_region::termination::tls_write(tls, &mut Vec::new(), &mut tf.wire);
        }
        send_wire(s, tf);
    }
}

/// A connection silent too long while a request waited is given up (see
/// [`Progress`](crate::world::flows::Progress)):
/// the request in progress counts as lost and the next service connects again.
fn give_up_if_silent(stack: &mut TcpStack, tf: &mut TcpFlow, now: u64) {
    if !tf.progress.gone_silent(!tf.pending.is_empty(), now) {
        return;
    }
    if let Some(h) = tf.handle {
        stack.socket(h).abort();
    }
    tf.pending.pop_front();
    tf.reset_exchange();
    tf.progress.made(now);
}

/// A flow whose connection broke (or never was) and has requests waiting gets a new
/// connection from the next port generation; false when it has none to use.
fn ensure_connected(
    stack: &mut TcpStack,
    (tf, generation): (&mut TcpFlow, &mut u16),
    (slot, now): (usize, u64),
    (addr, remote): (IpAddr, (IpAddr, u16)),
    app: &TcpApp,
) -> bool {
    let state = tf.handle.map(|h| stack.socket(h).state());
    let broken =
        matches!(state, None | Some(tcp::State::Closed) | Some(tcp::State::TimeWait) | Some(tcp::State::CloseWait));
    if !broken {
        return true;
    }
    if tf.pending.is_empty() {
        return false;
    }
    if let Some(h) = tf.handle.take() {
        stack.socket(h).abort();
        stack.sockets.remove(h);
        *generation = generation.wrapping_add(1);
    }
    let (rx, tx) = app.buffers();
    let h = stack.new_socket_sized(rx, tx);
    let local = port_of(slot, *generation);
    let (iface, sockets) = (&mut stack.iface, &mut stack.sockets);
    let socket = sockets.get_mut::<tcp::Socket>(h);
    socket.set_nagle_enabled(false);
    if socket.connect(iface.context(), remote, (addr, local)).is_err() {
        sockets.remove(h);
        return false;
    }
    tf.handle = Some(h);
    tf.progress.made(now);
    tf.tls = app.tls.as_ref().and_then(|cfg| {
        let name = rustls::pki_types::ServerName::IpAddress(remote.0.into());
        rustls::ClientConnection::new(cfg.clone(), name).ok().map(Box::new)
    });
    tf.wire.clear();
    tf.reset_exchange();
    true
}

/// The rest of the request in progress, straight onto the wire buffer, or through TLS
/// once its handshake is done.
fn queue_request(tf: &mut TcpFlow, req: &[u8]) {
    let ex = tf.exchange.get_or_insert_default();
    if tf.pending.is_empty() || ex.sent_bytes >= req.len() {
        return;
    }
    match tf.tls.as_mut() {
        Some(tls) if !tls.is_handshaking() => {
            let _ = std::io::Write::write_all(&mut tls.writer(), &req[ex.sent_bytes..]);
            ex.sent_bytes = req.len();
        }
        Some(_) => {}
        None => {
            tf.wire.extend_from_slice(&req[ex.sent_bytes..]);
            ex.sent_bytes = req.len();
        }
    }
}

/// What the socket takes of the wire buffer.
fn send_wire(s: &mut tcp::Socket<'_>, tf: &mut TcpFlow) {
    if s.can_send() && !tf.wire.is_empty() {
        let n = s.send_slice(&tf.wire).unwrap_or(0);
        tf.wire.drain(..n);
    }
}

/// The response, straight out of the socket's buffer (no zeroed scratch buffer per
/// read), through TLS when the flow has it; false when its TLS records were bad.
fn read_response(
    s: &mut tcp::Socket<'_>,
    tf: &mut TcpFlow,
    app: &TcpApp,
    slot: usize,
    completions: &mut Vec<(usize, u64, Option<SocketAddr>)>,
) -> bool {
    let mut tls = tf.tls.take();
    let mut broken = false;
    while s.can_recv() && !broken {
        let n = s
            .recv(|data| {
                match tls.as_mut() {
                    Some(tls) => {
                        let mut plain = Vec::new();
                        match anyedge_region::termination::tls_read(tls, data, &mut plain) {
                            Ok(_) => absorb_response(tf, &plain, app, slot, completions),
                            Err(_) => broken = true,
                        }
                    }
                    None => absorb_response(tf, data, app, slot, completions),
                }
                (data.len(), data.len())
            })
            .unwrap_or(0);
        if n == 0 {
            break;
        }
    }
    tf.tls = tls;
    !broken
}

/// Takes response bytes of the request in progress; completes it when all have come.
pub(super) fn absorb_response(
    tf: &mut TcpFlow,
    mut data: &[u8],
    app: &TcpApp,
    slot: usize,
    completions: &mut Vec<(usize, u64, Option<SocketAddr>)>,
) {
    let ex = tf.exchange.get_or_insert_default();
    while !data.is_empty() && !tf.pending.is_empty() {
        // Until an HTTP head is read the response's length is unknown: one request is
        // outstanding at a time, so whatever arrives belongs to it.
        let need = ex.expected.map_or(usize::MAX, |e| e.saturating_sub(ex.resp_got) as usize);
        let n = data.len().min(need);
        let keep = ex.body_at.map_or(app::HTTP_HEAD_MAX, |b| b + app::ID_LEN);
        let want = keep.saturating_sub(ex.head.len()).min(n);
        ex.head.extend_from_slice(&data[..want]);
        ex.resp_got += n as u64;
        data = &data[n..];
        if ex.expected.is_none()
            && let Some(end) = app::http_head_end(&ex.head)
        {
            let text = String::from_utf8_lossy(&ex.head[..end]);
            let length: u64 = app::http_header(&text, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            ex.body_at = Some(end);
            ex.expected = Some(end as u64 + length);
        }
        if ex.expected.is_some_and(|e| ex.resp_got >= e) {
            let body = ex.body_at.and_then(|b| ex.head.get(b..)).unwrap_or(&[]);
            let backend = app::parse_identity(body).map(|(b, _)| b);
            if let Some(issued) = tf.pending.pop_front() {
                completions.push((slot, issued, backend));
            }
            ex.reset();
            ex.expected = app.fixed_response();
            ex.body_at = ex.expected.map(|_| 0);
        }
    }
}

impl TcpFlow {
    /// Gives back the memory of what it holds empty: between requests a flow keeps no
    /// request, head or queue storage (each a few hundred bytes kept from the last).
    pub(super) fn shed(&mut self) {
        if self.pending.is_empty() {
            self.pending = std::collections::VecDeque::new();
            // Made again as the next request is served: what a new one starts as is what
            // a finished one was reset to.
            self.exchange = None;
        }
        if self.wire.is_empty() {
            self.wire = Vec::new();
        }
    }

    /// Forgets the request in progress (answered, or lost with its connection).
    pub(super) fn reset_exchange(&mut self) {
        if let Some(ex) = self.exchange.as_deref_mut() {
            ex.reset();
        }
    }
}

impl Exchange {
    fn reset(&mut self) {
        self.sent_bytes = 0;
        self.resp_got = 0;
        self.head.clear();
        self.body_at = None;
        self.expected = None;
    }
}
