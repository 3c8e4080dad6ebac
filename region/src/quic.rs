//! QUIC with quinn-proto on the caller's clock: an endpoint and its connections driven
//! by packets in and `now` — the same sans-IO shape as the rest of the cores. The CLB's
//! QUIC listeners and the simulator's QUIC clients both use it. Server connection IDs
//! carry the issuing CLB node, so POPs can route a migrated client back to its node.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyedge_ccn::{CidCipher, Prf};
use anyedge_proto::inner::mix64;
use bytes::BytesMut;
use quinn_proto::{
    ClientConfig, Connection, ConnectionHandle, ConnectionId, ConnectionIdGenerator, DatagramEvent, Endpoint,
    EndpointConfig, Event, ServerConfig,
};

pub use anyedge_ccn::cid_node;
pub use anyedge_proto::quic::{CID_LEN, CID_MARKER};

/// Issues `CID_MARKER, node, 6 bytes` connection IDs: the 6 bytes a keyed PRF of a
/// counter under the node's own secret, so seeing any number of a node's IDs tells
/// nothing of its next (RFC 9000 §5.1: IDs must not be guessable by an observer); the
/// node byte encrypted under the region's key with those bytes as the nonce (QUIC-LB), so
/// POPs, which hold the key, route by it and an observer cannot tell the node.
struct NodeCids {
    node: u8,
    cipher: Option<CidCipher>,
    prf: Prf,
    issued: u64,
}

impl ConnectionIdGenerator for NodeCids {
    fn generate_cid(&mut self) -> ConnectionId {
        self.issued += 1;
        let r = self.prf.eval(&self.issued.to_be_bytes());
        let node = self.node ^ self.cipher.as_ref().map_or(0, |c| c.mask(&r[..6]));
        let bytes = [CID_MARKER, node, r[0], r[1], r[2], r[3], r[4], r[5]];
        debug_assert_eq!(bytes.len(), CID_LEN, "every ID of a node has the length quinn is told");
        ConnectionId::new(&bytes)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// The wall clock quinn reads (a Retry token's issue time and lifetime), on the caller's
/// clock: `epoch` plus the `now_ns` of the host's latest call. The simulator leaves the
/// epoch at [`SIM_EPOCH_S`], so its tokens and its runs never depend on the machine's
/// clock; a lab node sets the real time it started at
/// ([`QuicHost::set_wall_epoch`]), so a restarted node's old tokens are old.
#[derive(Debug)]
struct HostClock {
    epoch_s: std::sync::atomic::AtomicU64,
    now_ns: std::sync::atomic::AtomicU64,
}

/// Where a simulated run's wall clock starts: 2026-01-01T00:00:00Z.
pub const SIM_EPOCH_S: u64 = 1_767_225_600;

impl quinn_proto::TimeSource for HostClock {
    fn now(&self) -> std::time::SystemTime {
        use std::sync::atomic::Ordering::Relaxed;
        std::time::UNIX_EPOCH
            + Duration::from_secs(self.epoch_s.load(Relaxed))
            + Duration::from_nanos(self.now_ns.load(Relaxed))
    }
}

/// A client's own connection IDs: 8 bytes (quinn's default length) drawn under its
/// seed, where quinn's default draws them from the machine's entropy.
struct SeededCids {
    prf: Prf,
    issued: u64,
}

impl ConnectionIdGenerator for SeededCids {
    fn generate_cid(&mut self) -> ConnectionId {
        self.issued += 1;
        ConnectionId::new(&self.prf.eval(&self.issued.to_be_bytes())[..8])
    }

    fn cid_len(&self) -> usize {
        8
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// A datagram to send: destination, the source address to send from, the bytes.
pub type QuicTransmit = (SocketAddr, Option<IpAddr>, Vec<u8>);

/// An endpoint and its connections.
pub struct QuicHost {
    endpoint: Endpoint,
    conns: BTreeMap<ConnectionHandle, Connection>,
    epoch: Instant,
    server: Option<Arc<ServerConfig>>,
    /// What quinn reads as the wall clock (servers' Retry tokens).
    clock: Arc<HostClock>,
    /// The key a server seals its Retry tokens with, from its node's secret (quinn's own
    /// default is drawn from the machine's entropy: a simulated run's Retry packets would
    /// differ run to run).
    token_key: Option<Arc<ring::hkdf::Prk>>,
    /// A client's Initial destination connection IDs, drawn under its seed (quinn's
    /// default draws them from the machine's entropy), and how many it drew.
    dcids: Prf,
    dcids_drawn: u64,
    /// Connection events for the application: (connection, event).
    events: Vec<(ConnectionHandle, Event)>,
    handshakes: u64,
    /// New connections accepted without a validated address: up to a rate, then Retry.
    initials: TokenBucket,
    /// Accepted connections whose address is not validated yet (their handshake under
    /// way): at [`UNVALIDATED_MAX`], new ones get a Retry whatever the rate.
    unvalidated: usize,
    /// Unvalidated handshakes per source ([`UNVALIDATED_PER_SOURCE_MAX`]).
    unvalidated_by_source: BTreeMap<IpAddr, usize>,
    retries: u64,
    /// Stateless resets sent: answers to short-header packets of connections unknown here.
    stateless_resets: u64,
    /// Accepted connections per source ([`CONNECTIONS_PER_SOURCE_MAX`]), and Initials
    /// refused because their source or the endpoint was full.
    by_source: BTreeMap<IpAddr, usize>,
    refused: u64,
    /// Leading bits of an IPv4 address that name one source.
    source_prefix_v4: u8,
    /// Accepted connections' anti-amplification budgets (servers only).
    budgets: BTreeMap<ConnectionHandle, Budget>,
    held: u64,
    /// The node holds its memory budget: new connections are refused.
    full: bool,
}

/// RFC 9000 §8.1, enforced here whatever quinn does (it lets a datagram through while any
/// credit is left, and sent 3,738 bytes for a 1,200-byte Initial from a silent address):
/// until a connection's address is validated (a Retry token, or the handshake done — the
/// client's Handshake packets prove it got ours), it gets at most three times the bytes
/// it sent. A datagram over the budget is not sent; quinn's recovery sends it again once
/// the client says more.
#[derive(Debug, Clone)]
struct Budget {
    received: usize,
    sent: usize,
    validated: bool,
    /// The source the connection counts against while unvalidated.
    source: IpAddr,
    /// Where the connection moved, while that address has not answered a challenge.
    moved: Option<PathBudget>,
}

/// RFC 9000 §9.3 for a connection that moved to another address (another IP, not just
/// another port of its own, which is NAT rebinding and reflects only to the sender): that
/// address gets at most three times what came from it until it answers a
/// PATH_CHALLENGE. quinn sent a whole padded 1,200-byte datagram to a new address for a
/// 30-byte packet from it, so anyone holding a connection could reflect 40 times its
/// bytes at a victim by sending from the victim's address, once per move. Held back,
/// the challenge rides again on quinn's next datagram to that path, once it has credit.
#[derive(Debug, Clone)]
struct PathBudget {
    remote: SocketAddr,
    received: usize,
    sent: usize,
}

impl Budget {
    fn may_send(&mut self, to: SocketAddr, size: usize, handshake_done: bool) -> bool {
        self.validated |= handshake_done;
        if let Some(path) = self.moved.as_mut().filter(|p| p.remote == to) {
            if path.sent + size > 3 * path.received {
                return false;
            }
            path.sent += size;
            debug_assert!(path.sent <= 3 * path.received, "a moved path never gets more than three times its bytes");
        }
        if self.validated {
            return true;
        }
        if self.sent + size > 3 * self.received {
            return false;
        }
        self.sent += size;
        debug_assert!(self.sent <= 3 * self.received, "RFC 9000 §8.1: three times what came in, until validated");
        true
    }

    /// A datagram of `len` bytes from `from` was handled: the connection's address was
    /// `before` and is `after`; `answered` whether it carried a PATH_RESPONSE.
    fn on_datagram(&mut self, from: SocketAddr, len: usize, (before, after): (SocketAddr, SocketAddr), answered: bool) {
        if from == before {
            self.received += len;
        }
        if after.ip() != before.ip() {
            debug_assert_eq!(after, from, "a connection moves to where its datagram came from");
            self.moved = Some(PathBudget { remote: after, received: len, sent: 0 });
        } else if let Some(path) = self.moved.as_mut().filter(|p| p.remote == from) {
            path.received += len;
            if answered {
                self.moved = None;
            }
        }
    }
}

/// What a new client's Initial gets ([`QuicHost::admission`]).
enum Admission {
    Refuse,
    Retry,
    Accept,
}

/// Initials an endpoint takes on trust, per second, and in a burst; past them a client
/// must echo a Retry's token first (RFC 9000 §8.1.2). A real client pays one round trip
/// more; a spoofed flood gets small Retries and no handshakes.
pub const INITIALS_PER_S: u64 = 200;
pub const INITIALS_BURST: u64 = 200;

/// Handshakes an endpoint keeps under way at once for addresses it has not validated;
/// past it, a new client echoes a Retry's token first. Spoofed Initials never finish
/// their handshake, so without this bound each one the rate let in held a connection
/// (and its timers, retransmissions and a turn of every `drive`) until its idle timeout:
/// a 1,000/s flood let 200 a second in, about 1,200 per node after 6 s, and the node's
/// per-packet work grew with them until a QUIC victim's round trips reached a second.
pub const UNVALIDATED_MAX: usize = 64;
/// Of those, what one source ([`crate::cidr::source_prefix`]: an IPv6 /64, an IPv4
/// address) may hold; past it, that source's new clients echo a Retry's token first, and
/// no one source takes every place.
pub const UNVALIDATED_PER_SOURCE_MAX: usize = 8;
const _: () = assert!(UNVALIDATED_PER_SOURCE_MAX < UNVALIDATED_MAX);

/// Connections a server endpoint holds, in all and per source (validated or not): past
/// them a new client's Initial is refused (CONNECTION_REFUSED, smaller than the Initial).
/// Each connection costs its state and the connection IDs it was issued; without a bound a
/// client with a real address could open them until the node ran out of memory. The same
/// figures as the layer-7 proxy's ([`crate::l7::PROXIED_MAX`], [`crate::l7::PER_SOURCE_MAX`]).
pub const CONNECTIONS_MAX: usize = crate::l7::PROXIED_MAX;
pub const CONNECTIONS_PER_SOURCE_MAX: usize = crate::l7::PER_SOURCE_MAX;
const _: () = assert!(UNVALIDATED_PER_SOURCE_MAX <= CONNECTIONS_PER_SOURCE_MAX);
const _: () = assert!(CONNECTIONS_PER_SOURCE_MAX < CONNECTIONS_MAX);

/// An unvalidated handshake ends (validated, or gone): its place, and its source's, free.
fn release_unvalidated(total: &mut usize, by_source: &mut BTreeMap<IpAddr, usize>, source: IpAddr) {
    debug_assert!(*total > 0, "released a place never taken");
    *total = total.saturating_sub(1);
    release_source(by_source, source);
}

/// One of `source`'s places in `by_source` is free again (the count goes when it is 0).
fn release_source(by_source: &mut BTreeMap<IpAddr, usize>, source: IpAddr) {
    let held = by_source.get_mut(&source);
    debug_assert!(held.as_ref().is_some_and(|n| **n > 0), "a place released that its source never held");
    if let Some(n) = held {
        *n -= 1;
        if *n == 0 {
            by_source.remove(&source);
        }
    }
}

/// A token bucket on the caller's clock (nanoseconds).
#[derive(Debug, Clone)]
struct TokenBucket {
    tokens: u64,
    at_ns: u64,
}

impl TokenBucket {
    fn full() -> TokenBucket {
        TokenBucket { tokens: INITIALS_BURST, at_ns: 0 }
    }

    /// Takes one token if there is one, refilling at [`INITIALS_PER_S`].
    fn take(&mut self, now_ns: u64) -> bool {
        let step = 1_000_000_000 / INITIALS_PER_S;
        let earned = now_ns.saturating_sub(self.at_ns) / step;
        if earned > 0 {
            self.tokens = (self.tokens + earned).min(INITIALS_BURST);
            self.at_ns += earned * step;
        }
        debug_assert!(self.tokens <= INITIALS_BURST && self.at_ns <= now_ns.max(self.at_ns));
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

impl std::fmt::Debug for QuicHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicHost").field("connections", &self.conns.len()).finish()
    }
}

fn seed32(seed: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&mix64(seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9)).to_be_bytes());
    }
    out
}

/// Frames of every kind a connection took from decrypted packets (quinn counts them only
/// after a packet's protection came off; padding is not counted, and a packet of padding
/// alone moves nothing).
fn frames_received(f: &quinn_proto::FrameStats) -> u64 {
    [
        f.acks,
        f.ack_frequency,
        f.crypto,
        f.connection_close,
        f.data_blocked,
        f.datagram,
        u64::from(f.handshake_done),
        f.immediate_ack,
        f.max_data,
        f.max_stream_data,
        f.max_streams_bidi,
        f.max_streams_uni,
        f.new_connection_id,
        f.new_token,
        f.path_challenge,
        f.path_response,
        f.ping,
        f.reset_stream,
        f.retire_connection_id,
        f.stream_data_blocked,
        f.streams_blocked_bidi,
        f.streams_blocked_uni,
        f.stop_sending,
        f.stream,
    ]
    .iter()
    .fold(0u64, |a, &b| a.wrapping_add(b))
}

impl QuicHost {
    /// A server endpoint whose connection IDs name `node` (encrypted with the region's
    /// `cipher`, in the clear without one), the rest drawn under `cid_secret` (the node's
    /// own: [`anyedge_ccn::AuthConfig::node_secret`]). Its stateless-reset tokens come
    /// from the region's key ([`CidCipher::reset_key`]), shared by the region's nodes and
    /// stable across restarts; without a cipher, from `cid_secret` (this start's own).
    pub fn server(
        config: Arc<ServerConfig>,
        (node, cipher): (u8, Option<CidCipher>),
        seed: u64,
        cid_secret: [u8; 32],
    ) -> QuicHost {
        let reset_key = cipher.as_ref().map_or(cid_secret, CidCipher::reset_key);
        let mut endpoint_config =
            EndpointConfig::new(Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &reset_key)));
        let prf = Prf::new(&cid_secret);
        endpoint_config
            .cid_generator(move || Box::new(NodeCids { node, cipher: cipher.clone(), prf: prf.clone(), issued: 0 }));
        let token_key =
            ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"anyedge quic retry tokens").extract(&cid_secret);
        let mut host = QuicHost::new(endpoint_config, None, seed);
        host.token_key = Some(Arc::new(token_key));
        host.set_server_config(config);
        host
    }

    /// New connections to this server handshake with `config` from now on; open ones
    /// keep theirs.
    /// The configuration is this host's own copy, reading this host's clock and sealing
    /// tokens with its key.
    pub fn set_server_config(&mut self, config: Arc<ServerConfig>) {
        let mut own = (*config).clone();
        own.time_source(self.clock.clone());
        if let Some(key) = &self.token_key {
            own.token_key(key.clone());
        }
        let own = Arc::new(own);
        self.endpoint.set_server_config(Some(own.clone()));
        self.server = Some(own);
    }

    /// The real time (seconds since the Unix epoch) this host's `now_ns` counts from: what
    /// quinn's wall clock reads is that plus `now_ns` (a lab node's start; the simulator
    /// keeps [`SIM_EPOCH_S`]).
    pub fn set_wall_epoch(&mut self, epoch_s: u64) {
        self.clock.epoch_s.store(epoch_s, std::sync::atomic::Ordering::Relaxed);
    }

    /// A client endpoint.
    pub fn client(seed: u64) -> QuicHost {
        // Clients send no stateless resets; the key only has to be fixed for a run to replay.
        let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &seed32(seed));
        let mut config = EndpointConfig::new(Arc::new(reset_key));
        let prf = Prf::new(&seed32(seed ^ 0x7363_6964));
        config.cid_generator(move || Box::new(SeededCids { prf: prf.clone(), issued: 0 }));
        QuicHost::new(config, None, seed)
    }

    fn new(config: EndpointConfig, server: Option<Arc<ServerConfig>>, seed: u64) -> QuicHost {
        // The epoch only anchors quinn's `Instant`s: behaviour depends on differences.
        let endpoint = Endpoint::new(Arc::new(config), server.clone(), false, Some(seed32(seed)));
        QuicHost {
            endpoint,
            conns: BTreeMap::new(),
            epoch: Instant::now(),
            server,
            clock: Arc::new(HostClock {
                epoch_s: std::sync::atomic::AtomicU64::new(SIM_EPOCH_S),
                now_ns: std::sync::atomic::AtomicU64::new(0),
            }),
            token_key: None,
            dcids: Prf::new(&seed32(seed ^ 0x6463_6964)),
            dcids_drawn: 0,
            events: Vec::new(),
            handshakes: 0,
            initials: TokenBucket::full(),
            unvalidated: 0,
            unvalidated_by_source: BTreeMap::new(),
            retries: 0,
            stateless_resets: 0,
            by_source: BTreeMap::new(),
            refused: 0,
            source_prefix_v4: crate::cidr::SOURCE_PREFIX_V4,
            budgets: BTreeMap::new(),
            held: 0,
            full: false,
        }
    }

    /// quinn's `Instant` for `now_ns`; quinn's wall clock moves there too.
    fn at(&self, now_ns: u64) -> Instant {
        self.clock.now_ns.store(now_ns, std::sync::atomic::Ordering::Relaxed);
        self.epoch + Duration::from_nanos(now_ns)
    }

    /// Opens a connection.
    pub fn connect(
        &mut self,
        now_ns: u64,
        config: ClientConfig,
        remote: SocketAddr,
        name: &str,
    ) -> Option<ConnectionHandle> {
        let mut config = config;
        self.dcids_drawn += 1;
        let r = self.dcids.eval(&self.dcids_drawn.to_be_bytes());
        let dcid = ConnectionId::new(&r[..20]);
        config.initial_dst_cid_provider(Arc::new(move || dcid));
        let (ch, conn) = self.endpoint.connect(self.at(now_ns), config, remote, name).ok()?;
        self.conns.insert(ch, conn);
        self.handshakes += 1;
        Some(ch)
    }

    /// Closes connection `ch` (an application close, code 0, with `reason`): its peer
    /// is told, and the connection is dropped once its closing period has passed.
    pub fn close(&mut self, ch: ConnectionHandle, now_ns: u64, reason: &'static [u8]) {
        let now = self.at(now_ns);
        if let Some(conn) = self.conns.get_mut(&ch) {
            conn.close(now, quinn_proto::VarInt::from_u32(0), bytes::Bytes::from_static(reason));
        }
    }

    /// Closes connection `ch` with an application error `code` (HTTP/3's, say) and `reason`.
    pub fn close_with(&mut self, ch: ConnectionHandle, now_ns: u64, code: u64, reason: &'static [u8]) {
        let now = self.at(now_ns);
        if let (Some(conn), Ok(code)) = (self.conns.get_mut(&ch), quinn_proto::VarInt::from_u64(code)) {
            conn.close(now, code, bytes::Bytes::from_static(reason));
        }
    }

    /// Stateless resets sent so far.
    pub fn stateless_resets(&self) -> u64 {
        self.stateless_resets
    }

    /// Connections opened or accepted so far.
    pub fn handshakes(&self) -> u64 {
        self.handshakes
    }

    /// Counts IPv4 sources by their first `bits` bits from now on.
    pub fn set_source_prefix_v4(&mut self, bits: u8) {
        self.source_prefix_v4 = bits;
    }

    /// Whether the node holds its memory budget (then new connections are refused, as
    /// past [`CONNECTIONS_MAX`]).
    pub fn set_full(&mut self, full: bool) {
        self.full = full;
    }

    /// The source (an IPv6 /64, an IPv4 prefix) an address counts against.
    pub fn source_of(&self, ip: IpAddr) -> IpAddr {
        crate::cidr::source_prefix(ip, self.source_prefix_v4)
    }

    /// Initials refused because their source held [`CONNECTIONS_PER_SOURCE_MAX`] or the
    /// endpoint [`CONNECTIONS_MAX`].
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Initials answered with a Retry (over the rate, address not yet validated).
    pub fn retries(&self) -> u64 {
        self.retries
    }

    /// Datagrams held back because they would have taken an unvalidated address past
    /// three times what it sent.
    pub fn held_by_amplification_limit(&self) -> u64 {
        self.held
    }

    pub fn conn(&mut self, ch: ConnectionHandle) -> Option<&mut Connection> {
        self.conns.get_mut(&ch)
    }

    /// The application events connections raised since the last call.
    pub fn take_events(&mut self) -> Vec<(ConnectionHandle, Event)> {
        std::mem::take(&mut self.events)
    }

    /// A datagram from `remote` to `local_ip`. Servers accept new connections.
    /// Returns the connection it belongs to, if any, and whether a packet of it decrypted
    /// (a new connection's Initial does): only such a datagram may move the connection's
    /// path, since anyone who saw its connection IDs can send one that carries them.
    pub fn receive(
        &mut self,
        now_ns: u64,
        remote: SocketAddr,
        local_ip: Option<IpAddr>,
        payload: &[u8],
        out: &mut Vec<QuicTransmit>,
    ) -> Option<(ConnectionHandle, bool)> {
        let mut buf = Vec::new();
        let now = self.at(now_ns);
        match self.endpoint.handle(now, remote, local_ip, None, BytesMut::from(payload), &mut buf)? {
            DatagramEvent::ConnectionEvent(ch, event) => self.on_datagram(ch, event, remote, payload.len()),
            DatagramEvent::NewConnection(incoming) => self.on_initial(now_ns, incoming, payload.len(), out),
            DatagramEvent::Response(t) => {
                // quinn answers a short-header packet it cannot place with a stateless
                // reset (a long one with version negotiation).
                self.stateless_resets += u64::from(payload.first().is_some_and(|b| b & 0x80 == 0));
                out.push((t.destination, t.src_ip, buf[..t.size].to_vec()));
                None
            }
        }
    }

    /// A datagram of an open connection; whether a packet of it decrypted.
    fn on_datagram(
        &mut self,
        ch: ConnectionHandle,
        event: quinn_proto::ConnectionEvent,
        remote: SocketAddr,
        len: usize,
    ) -> Option<(ConnectionHandle, bool)> {
        let conn = self.conns.get_mut(&ch)?;
        let (path, before) = (conn.remote_address(), conn.stats().frame_rx);
        conn.handle_event(event);
        let after = conn.stats().frame_rx;
        debug_assert!(after.path_response >= before.path_response, "frame counts only grow");
        if let Some(b) = self.budgets.get_mut(&ch) {
            let answered = after.path_response > before.path_response;
            b.on_datagram(remote, len, (path, conn.remote_address()), answered);
        }
        Some((ch, frames_received(&after) != frames_received(&before)))
    }

    /// What a new client's Initial gets: refused when its source or the endpoint holds
    /// all the connections it may; past the rate or the unvalidated caps, a Retry (the
    /// client proves its address before the handshake costs anything: spoofed Initials
    /// draw one small Retry each and no TLS work); else a connection.
    fn admission(&mut self, now_ns: u64, incoming: &quinn_proto::Incoming, source: IpAddr) -> Admission {
        let held = self.by_source.get(&source).copied().unwrap_or(0);
        if self.full || held >= CONNECTIONS_PER_SOURCE_MAX || self.budgets.len() >= CONNECTIONS_MAX {
            return Admission::Refuse;
        }
        let source_full = self.unvalidated_by_source.get(&source).is_some_and(|&n| n >= UNVALIDATED_PER_SOURCE_MAX);
        let untrusted = self.unvalidated >= UNVALIDATED_MAX || source_full || !self.initials.take(now_ns);
        match untrusted && !incoming.remote_address_validated() && incoming.may_retry() {
            true => Admission::Retry,
            false => Admission::Accept,
        }
    }

    fn on_initial(
        &mut self,
        now_ns: u64,
        incoming: quinn_proto::Incoming,
        len: usize,
        out: &mut Vec<QuicTransmit>,
    ) -> Option<(ConnectionHandle, bool)> {
        let source = crate::cidr::source_prefix(incoming.remote_address().ip(), self.source_prefix_v4);
        let mut buf = Vec::new();
        let answer = match self.admission(now_ns, &incoming, source) {
            Admission::Refuse => {
                self.refused += 1;
                Some(self.endpoint.refuse(incoming, &mut buf))
            }
            Admission::Retry => {
                self.retries += 1;
                self.endpoint.retry(incoming, &mut buf).map_err(|e| self.endpoint.ignore(e.into_incoming())).ok()
            }
            Admission::Accept => return self.accept(now_ns, incoming, (source, len), out),
        };
        if let Some(t) = answer {
            out.push((t.destination, t.src_ip, buf[..t.size].to_vec()));
        }
        None
    }

    /// Takes a new connection, its budget and its source's places.
    fn accept(
        &mut self,
        now_ns: u64,
        incoming: quinn_proto::Incoming,
        (source, len): (IpAddr, usize),
        out: &mut Vec<QuicTransmit>,
    ) -> Option<(ConnectionHandle, bool)> {
        let validated = incoming.remote_address_validated();
        let mut buf = Vec::new();
        match self.endpoint.accept(incoming, self.at(now_ns), &mut buf, self.server.clone()) {
            Ok((ch, conn)) => {
                self.conns.insert(ch, conn);
                self.budgets.insert(ch, Budget { received: len, sent: 0, validated, source, moved: None });
                *self.by_source.entry(source).or_default() += 1;
                if !validated {
                    self.unvalidated += 1;
                    *self.unvalidated_by_source.entry(source).or_default() += 1;
                }
                self.handshakes += 1;
                debug_assert!(
                    self.by_source[&source] <= CONNECTIONS_PER_SOURCE_MAX,
                    "admission kept the source's share"
                );
                debug_assert_eq!(self.conns.len(), self.budgets.len(), "a server budgets every connection");
                Some((ch, true))
            }
            Err(e) => {
                if let Some(t) = e.response {
                    out.push((t.destination, t.src_ip, buf[..t.size].to_vec()));
                }
                None
            }
        }
    }

    /// Runs timers, exchanges endpoint events, collects application events and datagrams.
    pub fn drive(&mut self, now_ns: u64, out: &mut Vec<QuicTransmit>) {
        let now = self.at(now_ns);
        let mut drained = Vec::new();
        loop {
            let mut endpoint_events = Vec::new();
            for (&ch, conn) in self.conns.iter_mut() {
                if conn.poll_timeout().is_some_and(|t| t <= now) {
                    conn.handle_timeout(now);
                }
                while let Some(ev) = conn.poll_endpoint_events() {
                    endpoint_events.push((ch, ev));
                }
                while let Some(ev) = conn.poll() {
                    self.events.push((ch, ev));
                }
                let mut buf = Vec::new();
                let mut budget = self.budgets.get_mut(&ch);
                while let Some(t) = conn.poll_transmit(now, 1, &mut buf) {
                    let send = match budget.as_deref_mut() {
                        Some(b) => {
                            let was = b.validated;
                            let send = b.may_send(t.destination, t.size, !conn.is_handshaking());
                            if b.validated && !was {
                                release_unvalidated(&mut self.unvalidated, &mut self.unvalidated_by_source, b.source);
                            }
                            send
                        }
                        None => true,
                    };
                    if send {
                        out.push((t.destination, t.src_ip, buf[..t.size].to_vec()));
                    } else {
                        self.held += 1;
                    }
                    buf.clear();
                }
                if conn.is_drained() {
                    drained.push(ch);
                }
            }
            if endpoint_events.is_empty() {
                break;
            }
            for (ch, ev) in endpoint_events {
                if let Some(back) = self.endpoint.handle_event(ch, ev)
                    && let Some(conn) = self.conns.get_mut(&ch)
                {
                    conn.handle_event(back);
                }
            }
        }
        for ch in drained {
            self.conns.remove(&ch);
            let Some(b) = self.budgets.remove(&ch) else { continue };
            if !b.validated {
                release_unvalidated(&mut self.unvalidated, &mut self.unvalidated_by_source, b.source);
            }
            release_source(&mut self.by_source, b.source);
        }
        debug_assert_eq!(
            self.by_source.values().sum::<usize>(),
            self.budgets.len(),
            "every connection counts at its source"
        );
        debug_assert!(self.unvalidated <= self.budgets.len(), "unvalidated handshakes are connections held");
    }

    /// When a connection next needs `drive`, in the caller's nanoseconds.
    pub fn poll_timeout(&mut self) -> Option<u64> {
        let t = self.conns.values_mut().filter_map(|c| c.poll_timeout()).min()?;
        Some(t.saturating_duration_since(self.epoch).as_nanos() as u64)
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str = "198.18.0.20:443";

    /// A server endpoint for a self-signed certificate, and a client that trusts it.
    fn pair() -> (QuicHost, QuicHost, ClientConfig) {
        let (identity, roots) = crate::identity::test_identity();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let quic = quinn_proto::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls)).unwrap();
        let server = QuicHost::server(identity.quic.server.clone(), (2, None), 1, [9; 32]);
        (server, QuicHost::client(2), ClientConfig::new(Arc::new(quic)))
    }

    /// Datagrams both ways until neither has anything to say; the client sits at `client`.
    fn exchange(server: &mut QuicHost, client: &mut QuicHost, at: SocketAddr, now: &mut u64) {
        let to: SocketAddr = SERVER.parse().unwrap();
        for _ in 0..50 {
            *now += 1_000_000;
            let (mut up, mut down) = (Vec::new(), Vec::new());
            client.drive(*now, &mut up);
            for (_, _, d) in up.drain(..) {
                server.receive(*now, at, Some(to.ip()), &d, &mut down);
            }
            server.drive(*now, &mut down);
            let quiet = down.is_empty();
            for (_, _, d) in down.drain(..) {
                client.receive(*now, to, None, &d, &mut up);
            }
            if quiet && up.is_empty() {
                return;
            }
        }
    }

    #[test]
    fn a_node_at_its_memory_budget_refuses_new_connections_and_takes_them_again_below_it() {
        let (mut server, mut client, config) = pair();
        let london: SocketAddr = "198.51.100.7:5000".parse().unwrap();
        let mut now = 0;
        server.set_full(true);
        let refused_before = server.refused();
        let _ = client.connect(now, config.clone(), SERVER.parse().unwrap(), "198.18.0.20").unwrap();
        exchange(&mut server, &mut client, london, &mut now);
        assert_eq!(server.connections(), 0, "refused while full");
        assert!(server.refused() > refused_before, "counted as refused");
        server.set_full(false);
        let mut again = QuicHost::client(77);
        let _ = again.connect(now, config, SERVER.parse().unwrap(), "198.18.0.20").unwrap();
        exchange(&mut server, &mut again, london, &mut now);
        assert_eq!(server.connections(), 1, "taken again below the budget");
    }

    #[test]
    fn only_a_datagram_that_decrypts_may_move_a_connection() {
        let (mut server, mut client, config) = pair();
        let london: SocketAddr = "198.51.100.7:5000".parse().unwrap();
        let mut now = 0;
        let ch = client.connect(now, config, SERVER.parse().unwrap(), "198.18.0.20").unwrap();
        exchange(&mut server, &mut client, london, &mut now);
        assert_eq!(server.connections(), 1, "the handshake completed");
        // The client's next datagram: genuine, and a forgery with its connection IDs
        // (header kept, protected payload flipped) sent from kyiv.
        client.conn(ch).unwrap().ping();
        let mut up = Vec::new();
        now += 1_000_000;
        client.drive(now, &mut up);
        let (_, _, genuine) = up.first().cloned().expect("the ping goes out");
        let mut forged = genuine.clone();
        for b in forged[12..].iter_mut() {
            *b ^= 0x5a;
        }
        let kyiv: SocketAddr = "203.0.113.9:6000".parse().unwrap();
        let mut out = Vec::new();
        let got = server.receive(now, kyiv, Some(SERVER.parse::<SocketAddr>().unwrap().ip()), &forged, &mut out);
        assert!(matches!(got, Some((_, false))), "junk with the connection's IDs is its, but moves nothing: {got:?}");
        let got = server.receive(now, london, Some(SERVER.parse::<SocketAddr>().unwrap().ip()), &genuine, &mut out);
        assert!(matches!(got, Some((_, true))), "the client's own datagram decrypts: {got:?}");
    }

    #[test]
    fn past_the_initial_rate_or_the_unvalidated_cap_spoofed_initials_draw_small_retries_and_a_real_client_still_connects()
     {
        let (mut server, mut client, config) = pair();
        let to: SocketAddr = SERVER.parse().unwrap();
        let now = 1_000_000;
        // Initials of as many connections, from spoofed addresses, at one instant.
        let first_initial = |host: &mut QuicHost| {
            host.connect(now, config.clone(), to, "198.18.0.20").unwrap();
            let mut up = Vec::new();
            host.drive(now, &mut up);
            up[0].2.clone()
        };
        let (mut answered, mut retry_bytes) = (0, 0);
        for i in 0..(INITIALS_BURST + 300) {
            let initial = first_initial(&mut QuicHost::client(1_000 + i));
            let spoofed = SocketAddr::new(IpAddr::from([203, 0, (i >> 8) as u8, i as u8]), 4000);
            let mut out = Vec::new();
            server.receive(now, spoofed, Some(to.ip()), &initial, &mut out);
            if i >= UNVALIDATED_MAX as u64 {
                answered += out.len();
                retry_bytes += out.iter().map(|(_, _, d)| d.len()).sum::<usize>();
                assert!(out.iter().all(|(_, _, d)| d.len() < initial.len()), "a Retry is smaller than an Initial");
            }
        }
        // The burst allows 200, but no more than 64 handshakes of unvalidated addresses
        // are under way at once.
        let over = INITIALS_BURST + 300 - UNVALIDATED_MAX as u64;
        assert_eq!(server.handshakes(), UNVALIDATED_MAX as u64, "taken on trust: as many as the cap, no more");
        assert_eq!(server.retries(), over);
        assert_eq!(answered as u64, over, "one Retry each");
        assert!(retry_bytes < over as usize * 1_200, "{retry_bytes} bytes for {over} Initials of at least 1,200");
        // A real client over the rate echoes the token and gets its connection.
        let ch = client.connect(now, config, to, "198.18.0.20").unwrap();
        let mut up = Vec::new();
        client.drive(now, &mut up);
        let initial = up[0].2.clone();
        let mut server_out = Vec::new();
        let london: SocketAddr = "198.51.100.7:5000".parse().unwrap();
        server.receive(now, london, Some(to.ip()), &initial, &mut server_out);
        assert_eq!(server.retries(), over + 1);
        let mut up = Vec::new();
        for (_, _, d) in server_out {
            client.receive(now, to, None, &d, &mut up);
        }
        let mut t = now;
        exchange(&mut server, &mut client, london, &mut t);
        assert!(client.conn(ch).is_some_and(|c| !c.is_handshaking()), "the client got through with the token");
    }

    #[test]
    fn one_ipv6_64_holds_at_most_its_share_of_unvalidated_handshakes_and_others_still_get_theirs() {
        let (mut server, _, config) = pair();
        let to: SocketAddr = SERVER.parse().unwrap();
        let now = 1_000_000;
        let initial_from = |server: &mut QuicHost, i: u64, from: SocketAddr| {
            let mut host = QuicHost::client(5_000 + i);
            host.connect(now, config.clone(), to, "198.18.0.20").unwrap();
            let mut up = Vec::new();
            host.drive(now, &mut up);
            let mut out = Vec::new();
            server.receive(now, from, Some(to.ip()), &up[0].2, &mut out);
        };
        // 40 addresses of one /64, well within the rate: 8 handshakes, then Retries.
        for i in 0..40u64 {
            initial_from(&mut server, i, SocketAddr::new(format!("2001:db8:0:7::{:x}", i + 1).parse().unwrap(), 4000));
        }
        assert_eq!(server.handshakes(), UNVALIDATED_PER_SOURCE_MAX as u64);
        assert_eq!(server.retries(), 40 - UNVALIDATED_PER_SOURCE_MAX as u64);
        // Another /64 and an IPv4 client are still taken on trust.
        initial_from(&mut server, 100, "[2001:db8:0:8::1]:4000".parse().unwrap());
        initial_from(&mut server, 101, "198.51.100.7:4000".parse().unwrap());
        assert_eq!(server.handshakes(), UNVALIDATED_PER_SOURCE_MAX as u64 + 2);
    }

    #[test]
    fn with_a_24_bit_ipv4_source_prefix_a_whole_24_shares_one_sources_handshakes() {
        let (mut server, _, config) = pair();
        server.set_source_prefix_v4(24);
        let to: SocketAddr = SERVER.parse().unwrap();
        for i in 0..20u8 {
            let mut host = QuicHost::client(7_000 + u64::from(i));
            host.connect(1_000_000, config.clone(), to, "198.18.0.20").unwrap();
            let mut up = Vec::new();
            host.drive(1_000_000, &mut up);
            let from = SocketAddr::new(IpAddr::from([198, 51, 100, 10 + i]), 4000);
            server.receive(1_000_000, from, Some(to.ip()), &up[0].2, &mut Vec::new());
        }
        assert_eq!(server.handshakes(), UNVALIDATED_PER_SOURCE_MAX as u64, "20 addresses, one source");
        assert_eq!(server.retries(), 20 - UNVALIDATED_PER_SOURCE_MAX as u64);
    }

    #[test]
    fn handshakes_of_spoofed_addresses_give_their_place_back_when_they_time_out() {
        let (mut server, _, config) = pair();
        let to: SocketAddr = SERVER.parse().unwrap();
        let spoof = |server: &mut QuicHost, i: u64, now: u64| {
            let mut host = QuicHost::client(5_000 + i);
            host.connect(now, config.clone(), to, "198.18.0.20").unwrap();
            let mut up = Vec::new();
            host.drive(now, &mut up);
            let from = SocketAddr::new(IpAddr::from([203, 0, 113, i as u8]), 4000);
            let mut out = Vec::new();
            server.receive(now, from, Some(to.ip()), &up[0].2, &mut out);
        };
        for i in 0..=UNVALIDATED_MAX as u64 {
            spoof(&mut server, i, 1_000_000);
        }
        assert_eq!((server.handshakes(), server.retries()), (UNVALIDATED_MAX as u64, 1), "the cap holds");
        // Nobody answers: each handshake times out, its connection drains.
        let mut now = 1_000_000;
        while let Some(t) = server.poll_timeout().filter(|&t| t < 300_000_000_000) {
            now = t.max(now);
            server.drive(now, &mut Vec::new());
        }
        assert_eq!(server.connections(), 0, "every spoofed handshake timed out");
        spoof(&mut server, 200, now);
        assert_eq!((server.handshakes(), server.retries()), (UNVALIDATED_MAX as u64 + 1, 1), "trusted again");
    }

    #[test]
    fn an_unvalidated_address_never_gets_more_than_three_times_what_it_sent() {
        let (mut server, mut client, config) = pair();
        let to: SocketAddr = SERVER.parse().unwrap();
        client.connect(0, config, to, "198.18.0.20").unwrap();
        let mut up = Vec::new();
        client.drive(0, &mut up);
        let initial = up[0].2.clone();
        let victim: SocketAddr = "203.0.113.9:6000".parse().unwrap();
        let mut out = Vec::new();
        server.receive(0, victim, Some(to.ip()), &initial, &mut out);
        // The victim never answers: the server's first flight and every retransmission
        // over the next 30 s.
        for ms in 0..30_000u64 {
            server.drive(ms * 1_000_000, &mut out);
        }
        let sent: usize = out.iter().filter(|(d, _, _)| *d == victim).map(|(_, _, b)| b.len()).sum();
        assert!(sent > 0 && sent <= 3 * initial.len(), "{sent} bytes toward the victim for {}", initial.len());
    }

    /// A connected pair: the client at `at`, every handshake datagram delivered.
    fn connected(at: SocketAddr) -> (QuicHost, QuicHost, ConnectionHandle, u64) {
        let (mut server, mut client, config) = pair();
        let mut now = 0;
        let ch = client.connect(now, config, SERVER.parse().unwrap(), "198.18.0.20").unwrap();
        exchange(&mut server, &mut client, at, &mut now);
        assert!(client.conn(ch).is_some_and(|c| !c.is_handshaking()), "the handshake completed");
        (server, client, ch, now)
    }

    #[test]
    fn a_retry_token_echoed_from_another_address_opens_no_connection() {
        let (mut server, mut client, config) = pair();
        let to: SocketAddr = SERVER.parse().unwrap();
        let london: SocketAddr = "198.51.100.7:5000".parse().unwrap();
        let mut now = 1_000_000;
        // Past the rate, so every new client gets a Retry first.
        server.initials.tokens = 0;
        client.connect(now, config, to, "198.18.0.20").unwrap();
        let (mut up, mut down) = (Vec::new(), Vec::new());
        client.drive(now, &mut up);
        server.receive(now, london, Some(to.ip()), &up[0].2, &mut down);
        assert_eq!((server.retries(), server.connections()), (1, 0), "a Retry, no connection yet");
        up.clear();
        client.receive(now, to, None, &down[0].2, &mut up);
        client.drive(now, &mut up);
        let echoed = up[0].2.clone();
        // The token names london's address and port: the same Initial from kyiv, and from
        // london's other port, opens nothing and costs no handshake.
        now += 1_000_000;
        for thief in ["203.0.113.9:6000", "198.51.100.7:5001"] {
            let mut out = Vec::new();
            let got = server.receive(now, thief.parse().unwrap(), Some(to.ip()), &echoed, &mut out);
            server.drive(now, &mut out);
            assert!(got.is_none() && server.connections() == 0, "{thief}: {got:?}");
            assert_eq!(server.handshakes(), 0, "{thief}: no TLS work");
        }
        // From london itself it is good.
        let mut out = Vec::new();
        assert!(server.receive(now, london, Some(to.ip()), &echoed, &mut out).is_some());
        assert_eq!(server.connections(), 1);
    }

    #[test]
    fn a_forged_retry_token_counts_as_none_and_draws_another_retry() {
        let (mut server, mut client, config) = pair();
        let to: SocketAddr = SERVER.parse().unwrap();
        let now = 1_000_000;
        server.initials.tokens = 0;
        // The client's own Initial, its token field filled with bytes of our choosing,
        // as the quinn client sends a token it was given (RFC 9000 §17.2.2).
        let mut forged = quinn_proto::ClientConfig::clone(&config);
        forged.token_store(Arc::new(OneToken(bytes::Bytes::from_static(&[0x42; 77]))));
        client.connect(now, forged, to, "198.18.0.20").unwrap();
        let mut up = Vec::new();
        client.drive(now, &mut up);
        let mut out = Vec::new();
        let got = server.receive(now, "198.51.100.7:5000".parse().unwrap(), Some(to.ip()), &up[0].2, &mut out);
        assert!(got.is_none(), "{got:?}");
        assert_eq!(
            (server.retries(), server.handshakes(), server.connections()),
            (1, 0, 0),
            "a Retry, as for no token"
        );
    }

    /// Hands the client one token (as a NEW_TOKEN frame would have stored it).
    struct OneToken(bytes::Bytes);

    impl quinn_proto::TokenStore for OneToken {
        fn insert(&self, _: &str, _: bytes::Bytes) {}
        fn take(&self, _: &str) -> Option<bytes::Bytes> {
            Some(self.0.clone())
        }
    }

    #[test]
    fn a_forged_stateless_reset_leaves_the_clients_connection_open() {
        let (_server, mut client, ch, now) = connected("198.51.100.7:5000".parse().unwrap());
        // A short-header packet of the right shape, its last 16 bytes (the token) guessed.
        let to: SocketAddr = SERVER.parse().unwrap();
        for guess in 0..256u32 {
            let mut forged = vec![0x40u8];
            forged.extend_from_slice(&[0x17; 40]);
            forged.extend_from_slice(&[guess as u8; 16]);
            let mut out = Vec::new();
            client.receive(now, to, None, &forged, &mut out);
        }
        let mut out = Vec::new();
        client.drive(now + 1_000_000, &mut out);
        let events = client.take_events();
        assert!(!events.iter().any(|(_, e)| matches!(e, Event::ConnectionLost { .. })), "{events:?}");
        assert!(client.conn(ch).is_some_and(|c| !c.is_closed()), "still open");
    }

    #[test]
    fn junk_for_unknown_connections_draws_at_most_one_smaller_reset_per_twenty_ms() {
        let (mut server, _, _) = pair();
        let to: SocketAddr = SERVER.parse().unwrap();
        let (mut triggers, mut out) = (0usize, Vec::new());
        // One second of 1,200-byte short-header packets with random-looking IDs, one a
        // millisecond, from a spoofed victim.
        for ms in 0..1_000u64 {
            let mut junk = vec![0x40u8, CID_MARKER, 1];
            junk.extend((0..1_197u32).map(|i| (i as u64 * 31 + ms * 7) as u8));
            triggers += junk.len();
            server.receive(ms * 1_000_000, "203.0.113.9:6000".parse().unwrap(), Some(to.ip()), &junk, &mut out);
        }
        assert!(server.stateless_resets() <= 51, "{} resets in a second", server.stateless_resets());
        let sent: usize = out.iter().map(|(_, _, b)| b.len()).sum();
        assert!(out.iter().all(|(_, _, b)| b.len() < 1_200), "each reset smaller than what drew it");
        assert!(sent * 20 < triggers, "{sent} bytes back for {triggers}");
    }

    #[test]
    fn a_connection_moved_to_a_spoofed_address_sends_it_at_most_three_times_what_came_from_it() {
        let london: SocketAddr = "198.51.100.7:5000".parse().unwrap();
        let (mut server, mut client, ch, mut now) = connected(london);
        // The client (or anyone on its path) sends one genuine datagram with the victim's
        // address as its source, while the server has 200 KB to send it.
        let sch = *server.conns.keys().next().unwrap();
        let stream = server.conn(sch).unwrap().streams().open(quinn_proto::Dir::Uni).unwrap();
        server.conn(sch).unwrap().send_stream(stream).write(&[7u8; 200_000]).unwrap();
        client.conn(ch).unwrap().ping();
        let mut up = Vec::new();
        now += 1_000_000;
        client.drive(now, &mut up);
        let victim: SocketAddr = "203.0.113.9:6000".parse().unwrap();
        let to: SocketAddr = SERVER.parse().unwrap();
        let mut out = Vec::new();
        let from_victim: usize = up.iter().map(|(_, _, d)| d.len()).sum();
        for (_, _, d) in &up {
            server.receive(now, victim, Some(to.ip()), d, &mut out);
        }
        // The victim never answers the path challenge: 10 s of the server's timers.
        for ms in 0..10_000u64 {
            server.drive(now + ms * 1_000_000, &mut out);
        }
        let sent: usize = out.iter().filter(|(d, _, _)| *d == victim).map(|(_, _, b)| b.len()).sum();
        assert!(sent <= 3 * from_victim, "{sent} bytes toward the victim for {from_victim}");
    }

    #[test]
    fn a_client_that_really_moved_to_another_address_answers_the_challenge_and_gets_its_data() {
        let (mut server, mut client, ch, mut now) = connected("198.51.100.7:5000".parse().unwrap());
        let sch = *server.conns.keys().next().unwrap();
        let stream = server.conn(sch).unwrap().streams().open(quinn_proto::Dir::Uni).unwrap();
        let before = client.conn(ch).unwrap().stats().udp_rx.bytes;
        server.conn(sch).unwrap().send_stream(stream).write(&[7u8; 50_000]).unwrap();
        client.conn(ch).unwrap().ping();
        let moved: SocketAddr = "192.0.2.44:7000".parse().unwrap();
        for _ in 0..20 {
            exchange(&mut server, &mut client, moved, &mut now);
        }
        assert_eq!(server.conn(sch).unwrap().remote_address(), moved);
        assert!(server.budgets[&sch].moved.is_none(), "the new address answered the challenge");
        let got = client.conn(ch).unwrap().stats().udp_rx.bytes - before;
        assert!(got > 50_000, "{got} bytes reached the client at its new address");
    }

    #[test]
    fn one_source_holds_at_most_its_share_of_connections_and_others_still_connect() {
        let (mut server, _, config) = pair();
        let mut now = 0;
        let connect = |server: &mut QuicHost, at: SocketAddr, seed: u64, now: &mut u64| {
            let mut client = QuicHost::client(seed);
            let ch = client.connect(*now, config.clone(), SERVER.parse().unwrap(), "198.18.0.20").unwrap();
            exchange(server, &mut client, at, now);
            client.conn(ch).is_some_and(|c| !c.is_handshaking() && !c.is_closed())
        };
        // Every port of one address (the validated handshakes of a real client).
        for port in 0..CONNECTIONS_PER_SOURCE_MAX as u16 {
            let at = SocketAddr::new(IpAddr::from([198, 51, 100, 7]), 5000 + port);
            assert!(connect(&mut server, at, u64::from(port) + 10, &mut now), "connection {port} of the cap");
        }
        assert_eq!(server.connections(), CONNECTIONS_PER_SOURCE_MAX);
        let over = connect(&mut server, "198.51.100.7:9999".parse().unwrap(), 1, &mut now);
        assert!(!over && server.refused() == 1, "one more from that source is refused");
        assert_eq!(server.connections(), CONNECTIONS_PER_SOURCE_MAX);
        assert!(connect(&mut server, "203.0.113.9:5000".parse().unwrap(), 2, &mut now), "another source gets in");
    }

    #[test]
    fn connection_ids_come_from_the_nodes_secret_not_from_public_values() {
        let ids = |secret: [u8; 32]| {
            let mut g = NodeCids { node: 3, cipher: None, prf: Prf::new(&secret), issued: 0 };
            (0..64).map(|_| g.generate_cid().to_vec()).collect::<Vec<_>>()
        };
        let (a, b) = (ids([1; 32]), ids([2; 32]));
        assert_eq!(a, ids([1; 32]), "the same secret replays (the simulator's runs)");
        // Same node, same count, another secret: nothing in common but the routing bytes.
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((x[0], x[1]), (CID_MARKER, 3));
            assert_ne!(x[2..], y[2..]);
        }
        // No step between consecutive IDs repeats (the old counter-and-mix had one
        // hidden state an observer could recover and run forward).
        let value = |id: &Vec<u8>| id[2..].iter().fold(0u64, |v, &b| v << 8 | u64::from(b));
        let steps: std::collections::BTreeSet<u64> =
            a.windows(2).map(|w| value(&w[1]).wrapping_sub(value(&w[0]))).collect();
        assert_eq!(steps.len(), 63);
    }

    #[test]
    fn our_connection_ids_route_to_their_node_for_whoever_holds_the_regions_key() {
        let key = anyedge_ccn::BackboneSecret::from_seed(5).cid_key(0);
        let cipher = CidCipher::new(&key);
        for node in 0..4u8 {
            let mut g = NodeCids { node, cipher: Some(cipher.clone()), prf: Prf::new(&[7; 32]), issued: 0 };
            for _ in 0..16 {
                let cid = g.generate_cid();
                let mut short = vec![0x40u8];
                short.extend_from_slice(&cid);
                short.extend_from_slice(&[0; 20]);
                assert_eq!(cid_node(&short, 4, Some(&cipher)), Some(u16::from(node)));
                let mut long = vec![0xc0u8, 0, 0, 0, 1, CID_LEN as u8];
                long.extend_from_slice(&cid);
                assert_eq!(cid_node(&long, 4, Some(&cipher)), Some(u16::from(node)));
            }
        }
        let random_initial = [0xc0u8, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(cid_node(&random_initial, 4, Some(&cipher)), None);
        assert_eq!(cid_node(&[], 4, Some(&cipher)), None);
    }

    #[test]
    fn an_observer_without_the_key_cannot_tell_which_node_issued_an_id() {
        // 4,096 IDs from node 1 and 4,096 from node 2 of the same region: their routing
        // bytes (as sent) spread over all 256 values alike, so the byte says nothing of
        // the node; with the clear byte of before, it named the node every time.
        let cipher = CidCipher::new(&anyedge_ccn::BackboneSecret::from_seed(5).cid_key(0));
        let sent_bytes = |node: u8| {
            let mut g = NodeCids { node, cipher: Some(cipher.clone()), prf: Prf::new(&[node; 32]), issued: 0 };
            let mut seen = [0u32; 256];
            for _ in 0..4_096 {
                seen[usize::from(g.generate_cid()[1])] += 1;
            }
            seen
        };
        for seen in [sent_bytes(1), sent_bytes(2)] {
            assert_eq!(seen.iter().filter(|&&n| n > 0).count(), 256, "every value occurs");
            assert!(seen.iter().all(|&n| n <= 48), "none stands out (16 expected): {:?}", seen.iter().max());
        }
        // Another region's key reads the same IDs as noise, not as the node.
        let other = CidCipher::new(&anyedge_ccn::BackboneSecret::from_seed(5).cid_key(1));
        let mut g = NodeCids { node: 1, cipher: Some(cipher.clone()), prf: Prf::new(&[3; 32]), issued: 0 };
        let right = (0..256)
            .filter(|_| {
                let mut short = vec![0x40u8];
                short.extend_from_slice(&g.generate_cid());
                cid_node(&short, 256, Some(&other)) == Some(1)
            })
            .count();
        assert!(right <= 8, "the wrong key named the node {right} times in 256");
    }
}
