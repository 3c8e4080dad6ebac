//! `anyedge probe`: load a VIP from inside a client namespace — F flows (source ports),
//! a request rate, round trips in an HDR histogram — and report what came back,
//! including which backends answered and which client address they saw.

use crate::client::ClientError;
use crate::error::{Doing, SysError};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Mutex;

pub use crate::app_wire::{REQUEST_LEN, REQUEST_MAX};

const MAGIC: &[u8; 4] = b"AEPR";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Udp,
    Tcp,
    /// TCP inside TLS (a `tcp-ssl` listener): the same requests once the handshake is done.
    TcpSsl,
    /// HTTP/1.1 requests on kept-alive connections (an `http` listener).
    Http,
    /// HTTP/1.1 inside TLS (an `https` listener).
    Https,
    /// A QUIC connection per flow (quinn), the requests on one bidirectional stream.
    Quic,
}

impl Protocol {
    /// The protocol a `--protocol` name stands for.
    pub fn from_name(name: &str) -> Option<Protocol> {
        Some(match name {
            "udp" => Protocol::Udp,
            "tcp" => Protocol::Tcp,
            "tcp-ssl" => Protocol::TcpSsl,
            "http" => Protocol::Http,
            "https" => Protocol::Https,
            "quic" => Protocol::Quic,
            _ => return None,
        })
    }

    /// Every name `from_name` takes.
    pub const NAMES: [&'static str; 6] = ["udp", "tcp", "http", "https", "tcp-ssl", "quic"];

    fn tls(self) -> bool {
        matches!(self, Protocol::TcpSsl | Protocol::Https | Protocol::Quic)
    }

    fn http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Https)
    }
}

/// How a `tcp-ssl` probe does TLS: the CA it trusts and, for `mtls: true` listeners, the
/// client certificate and key it presents (PEM files).
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub ca: Option<std::path::PathBuf>,
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

impl TlsFiles {
    /// The client configuration these files make.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, ClientError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let ca = self.ca.as_ref().ok_or(ClientError::Unsuited(
            "--ca: the CA to trust (the lab's: pki/ca.pem in its state directory)".into(),
        ))?;
        let pem = |p: &std::path::Path, e: rustls::pki_types::pem::Error| SysError::bad_file(p, e.to_string());
        let read_cert = |p: &std::path::Path| CertificateDer::from_pem_file(p).map_err(|e| pem(p, e));
        let mut roots = rustls::RootCertStore::empty();
        let tls = |what: String| move |source| ClientError::Tls { what, source };
        roots.add(read_cert(ca)?).map_err(tls(ca.display().to_string()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(tls("TLS versions".into()))?
            .with_root_certificates(roots);
        let config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem(key, e))?;
                builder.with_client_auth_cert(vec![read_cert(cert)?], key).map_err(tls(cert.display().to_string()))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(ClientError::Unsuited("--cert and --key go together".into())),
        };
        Ok(Arc::new(config))
    }
}

#[derive(Debug, Clone)]
pub struct ProbeConfig {
    pub target: SocketAddr,
    pub protocol: Protocol,
    pub rate_per_s: f64,
    pub duration: Duration,
    pub flows: usize,
    /// UDP: keep this many requests in flight per flow instead of pacing at `rate`
    /// (how many round trips per second the path sustains).
    pub window: Option<usize>,
    /// UDP: bytes per request, [`REQUEST_LEN`] (no padding) to [`REQUEST_MAX`].
    pub size: usize,
    /// Run SCHED_FIFO (see [`crate::io::realtime`]), so the probe's own waits stay out of the figures.
    pub realtime: bool,
    /// `tcp-ssl`, `https`, `quic`: whom to trust and what to present.
    pub tls: TlsFiles,
    /// QUIC: when each flow moves its connection to a new local port (a phone going
    /// from Wi-Fi to 4G), keeping the connection.
    pub migrate_at: Option<Duration>,
    /// QUIC: the protocol offered in ALPN; `h3` speaks HTTP/3 (a request a POST on its
    /// own stream), anything else the probe's own requests on one stream.
    pub alpn: Vec<u8>,
}

#[derive(Debug, Serialize, Clone, Copy)]
pub struct RttUs {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

#[derive(Debug, Serialize, Clone, Copy)]
pub struct RttMs {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

#[derive(Debug, Serialize)]
pub struct ProbeReport {
    pub source: String,
    pub sent: u64,
    pub received: u64,
    pub loss_pct: f64,
    pub rtt_us: Option<RttUs>,
    /// The same in milliseconds with decimals, as the simulator reports round trips.
    pub rtt_ms: Option<RttMs>,
    pub backends: BTreeMap<String, u64>,
    /// The client addresses the backends took for the client: the first X-Forwarded-For
    /// address (HTTP), else the TOA option's (TCP SSL, QUIC), else the packets' source.
    pub client_addrs_seen: Vec<String>,
    /// How many distinct client addresses the backends reported (the list shows 16).
    pub client_addrs_total: u64,
    /// HTTP(S): the X-Forwarded-For headers the backends received.
    pub forwarded_for_seen: Vec<String>,
    /// The client addresses (IP:port) backends learned from the TOA option of the CLB's
    /// connection to them (TCP SSL, QUIC, where the CLB speaks TCP on the client's behalf).
    pub toa_seen: Vec<String>,
    /// QUIC: how many flows moved to a new local port (`--migrate-at`).
    pub migrations: u64,
    /// Per second of the run, by when requests left: sent, answered, and the answered
    /// ones' round trips.
    pub timeline: Vec<ProbeSecond>,
    /// Why flows could not connect, when some could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_error: Option<String>,
    pub connections_opened: u64,
    /// Flows (source ports, TCP connections) answered by one backend and later by another.
    pub flows_backend_changed: u64,
    /// TCP connections that broke (reset, or 5 s without an answer) before the end.
    pub connections_broken: u64,
    /// Per flow, in flow order: the longest time between two of its replies (an outage
    /// and its recovery, when a node on its path died), in milliseconds.
    pub longest_gap_ms: Vec<f64>,
    /// HTTPS, TCP SSL and QUIC: the SHA-256 (hex) of each distinct leaf certificate the
    /// VIP presented, in the order first seen (a certificate rotated mid-run shows two).
    pub server_certificates: Vec<String>,
}

#[derive(Debug, Serialize, Clone, Copy)]
pub struct ProbeSecond {
    pub t_s: u64,
    pub sent: u64,
    pub received: u64,
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
}

impl ProbeReport {
    /// The report for a terminal.
    pub fn table(&self, target: SocketAddr, protocol: Protocol) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let name = Protocol::NAMES.iter().find(|n| Protocol::from_name(n) == Some(protocol)).unwrap_or(&"?");
        let _ =
            writeln!(out, "probe {name} {target} from {}: {} connections/flows", self.source, self.connections_opened);
        let _ = writeln!(out, "  sent {}  received {}  loss {:.3} %", self.sent, self.received, self.loss_pct);
        if let Some(r) = self.rtt_us {
            let ms = |us: u64| us as f64 / 1000.0;
            let _ = writeln!(
                out,
                "  round trip ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
                ms(r.p50),
                ms(r.p90),
                ms(r.p99),
                ms(r.p999),
                ms(r.max)
            );
        }
        for (b, n) in &self.backends {
            let _ = writeln!(out, "  backend {b:<24} {n} replies");
        }
        let lists = [
            ("clients seen", &self.client_addrs_seen),
            ("X-Forwarded-For", &self.forwarded_for_seen),
            ("TOA", &self.toa_seen),
            ("server certificate SHA-256", &self.server_certificates),
        ];
        for (what, list) in lists.into_iter().filter(|(_, l)| !l.is_empty()) {
            let _ = writeln!(out, "  {what}: {}", list.join(", "));
        }
        if self.connections_broken + self.flows_backend_changed + self.migrations > 0 {
            let _ = writeln!(
                out,
                "  broken {}  moved to another backend {}  migrated {}",
                self.connections_broken, self.flows_backend_changed, self.migrations
            );
        }
        out
    }
}

/// Any local port in the target's family.
fn any_port(target: SocketAddr) -> &'static str {
    if target.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }
}

fn request(seq: u64, start: Instant) -> [u8; REQUEST_LEN] {
    let mut r = [0u8; REQUEST_LEN];
    r[..4].copy_from_slice(MAGIC);
    r[4..12].copy_from_slice(&seq.to_be_bytes());
    r[12..20].copy_from_slice(&(start.elapsed().as_micros() as u64).to_be_bytes());
    r
}

/// A UDP request of `size` bytes: the request, then dots (the echo carries them back
/// ahead of the backend's `|`-separated trailer, whose first field they become).
fn udp_request(seq: u64, start: Instant, size: usize) -> Vec<u8> {
    let mut r = request(seq, start).to_vec();
    r.resize(size.max(REQUEST_LEN), b'.');
    r
}

#[derive(Default)]
struct Tally {
    received: u64,
    hist: Option<Histogram<u64>>,
    backends: BTreeMap<String, u64>,
    clients: BTreeSet<String>,
    forwarded_for: BTreeSet<String>,
    toa: BTreeSet<String>,
    migrations: u64,
    /// Per flow: the backend that answered it first, and whether another answered later.
    flow_backends: BTreeMap<usize, (String, bool)>,
    /// Per flow: when its last reply came (µs since start), and the longest gap so far.
    flow_gaps: BTreeMap<usize, (u64, u64)>,
    broken: u64,
    /// Per second of the run (by when the request left): requests sent, and the round
    /// trips of those answered.
    seconds: Vec<(u64, Option<Histogram<u64>>)>,
    /// Why connections could not be made (the last such error), for the user.
    connect_error: Option<String>,
    /// The leaf certificates the VIP presented (SHA-256 hex), first seen first.
    certificates: Vec<String>,
}

/// Slowest round trip a histogram holds (µs).
const RTT_MAX_US: u64 = 60_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, RTT_MAX_US, 3).expect("static bounds")
}

impl Tally {
    /// The tally of the second `at_us` (since the start) falls in; requests sent later
    /// than an hour in are counted in the last.
    fn second(&mut self, at_us: u64) -> &mut (u64, Option<Histogram<u64>>) {
        let i = (at_us / 1_000_000).min(3600) as usize;
        if self.seconds.len() <= i {
            self.seconds.resize_with(i + 1, || (0, None));
        }
        &mut self.seconds[i]
    }

    /// Counts `n` requests sent at `at_us`.
    fn sent(&mut self, at_us: u64, n: u64) {
        self.second(at_us).0 += n;
    }

    /// Takes a reply of flow `flow`: the request echoed, then `|be=…|cl=…`.
    /// A connection that could not be made: counted as broken, and why kept for the user.
    fn certificate(&mut self, leaf: Option<String>) {
        if let Some(leaf) = leaf
            && !self.certificates.contains(&leaf)
        {
            self.certificates.push(leaf);
        }
    }

    fn connect_failed(&mut self, why: ClientError) {
        self.broken += 1;
        self.connect_error = Some(why.to_string());
    }

    fn reply(&mut self, flow: usize, bytes: &[u8], start: Instant) {
        self.reply_at(flow, bytes, start.elapsed().as_micros() as u64);
    }

    /// A reply that reached the client at `now_us` (µs since the probe started).
    fn reply_at(&mut self, flow: usize, bytes: &[u8], now_us: u64) {
        if bytes.len() < REQUEST_LEN || &bytes[..4] != MAGIC {
            return;
        }
        let sent_us = u64::from_be_bytes(bytes[12..20].try_into().unwrap_or([0; 8]));
        let rtt = now_us.saturating_sub(sent_us).max(1);
        let gap = self.flow_gaps.entry(flow).or_insert((now_us, 0));
        gap.1 = gap.1.max(now_us - gap.0);
        gap.0 = now_us;
        let _ = self.hist.get_or_insert_with(histogram).record(rtt);
        let second = self.second(sent_us);
        let _ = second.1.get_or_insert_with(histogram).record(rtt);
        self.received += 1;
        let trailer = String::from_utf8_lossy(&bytes[REQUEST_LEN..]);
        for part in trailer.trim().split('|') {
            if let Some(b) = part.strip_prefix("be=") {
                *self.backends.entry(b.to_string()).or_default() += 1;
                let first = self.flow_backends.entry(flow).or_insert_with(|| (b.to_string(), false));
                first.1 |= first.0 != b;
            } else if let Some(c) = part.strip_prefix("cl=")
                && let Ok(addr) = c.parse::<SocketAddr>()
            {
                self.clients.insert(addr.ip().to_string());
            } else if let Some(xff) = part.strip_prefix("xff=") {
                self.forwarded_for.insert(xff.to_string());
            } else if let Some(toa) = part.strip_prefix("toa=") {
                self.toa.insert(toa.to_string());
            }
        }
    }
}

/// Runs a probe to completion.
pub fn run(config: &ProbeConfig) -> Result<ProbeReport, ClientError> {
    if config.realtime {
        crate::io::realtime::enter()?;
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().doing(|| "a runtime".into())?;
    rt.block_on(async {
        match config.protocol {
            Protocol::Udp => udp(config).await,
            Protocol::Quic => quic(config).await,
            _ => tcp(config).await,
        }
    })
}

fn interval(config: &ProbeConfig) -> Duration {
    Duration::from_secs_f64(1.0 / config.rate_per_s.max(0.001))
}

async fn udp(config: &ProbeConfig) -> Result<ProbeReport, ClientError> {
    if let Some(window) = config.window {
        return udp_windowed(config, window).await;
    }
    let start = Instant::now();
    let tally = Arc::new(Mutex::new(Tally::default()));
    // Replies are read by tokio tasks; requests leave from a thread of their own, paced
    // by thread sleeps: tokio's timer ticks in whole milliseconds, which at 10 k/s would
    // send bursts of ten every millisecond instead of one every 100 µs.
    let mut senders = Vec::new();
    for flow in 0..config.flows.max(1) {
        let at = || config.target.to_string();
        let sock = std::net::UdpSocket::bind(any_port(config.target)).doing(at)?;
        sock.connect(config.target).doing(at)?;
        senders.push(sock.try_clone().doing(at)?);
        sock.set_nonblocking(true).doing(at)?;
        // A reply's time is when the kernel took it (as ping's is), not when this
        // process got round to reading it.
        crate::io::clock::stamp_receives(std::os::fd::AsRawFd::as_raw_fd(&sock));
        let s = UdpSocket::from_std(sock).doing(at)?;
        let t = tally.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok(n) = s.recv(&mut buf).await {
                let at_us = crate::io::clock::received_ns(std::os::fd::AsRawFd::as_raw_fd(&s), start) / 1_000;
                t.lock().await.reply_at(flow, &buf[..n], at_us);
            }
        });
    }
    let source = senders[0].local_addr().map(|a| a.ip().to_string()).unwrap_or_default();
    let (step, duration, size) = (interval(config), config.duration, config.size);
    let sending = tokio::task::spawn_blocking(move || {
        let mut sent = 0u64;
        let mut per_second: Vec<u64> = Vec::new();
        let mut next = Instant::now();
        while start.elapsed() < duration {
            // The clones share the non-blocking flag: a full send buffer drops the request
            // (it counts as sent and lost), as a paced sender should.
            let req = udp_request(sent, start, size);
            let _ = senders[sent as usize % senders.len()].send(&req);
            let second = (start.elapsed().as_secs() as usize).min(3600);
            if per_second.len() <= second {
                per_second.resize(second + 1, 0);
            }
            per_second[second] += 1;
            sent += 1;
            next += step;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        (sent, per_second)
    });
    let (sent, per_second) =
        sending.await.map_err(|e| SysError::Io { what: "the sending thread".into(), source: e.into() })?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut t = tally.lock().await;
    for (i, n) in per_second.into_iter().enumerate() {
        t.sent(i as u64 * 1_000_000, n);
    }
    Ok(report(source, sent, &t, config.flows as u64))
}

/// Each flow keeps `window` requests in flight: a reply sends the next request.
async fn udp_windowed(config: &ProbeConfig, window: usize) -> Result<ProbeReport, ClientError> {
    let start = Instant::now();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut tasks = Vec::new();
    let mut source = String::new();
    for f in 0..config.flows.max(1) {
        let sock = UdpSocket::bind(any_port(config.target)).await.doing(|| config.target.to_string())?;
        sock.connect(config.target).await.doing(|| config.target.to_string())?;
        if f == 0 {
            source = sock.local_addr().map(|a| a.ip().to_string()).unwrap_or_default();
        }
        let (t, duration, size) = (tally.clone(), config.duration, config.size);
        tasks.push(tokio::spawn(async move {
            let mut sent = 0u64;
            for _ in 0..window.max(1) {
                let _ = sock.send(&udp_request(sent, start, size)).await;
                sent += 1;
            }
            t.lock().await.sent(start.elapsed().as_micros() as u64, sent);
            let mut buf = vec![0u8; 65_536];
            while start.elapsed() < duration {
                // A reply, or a lost request after 200 ms: either way the next request goes,
                // so the window stays full.
                let answer = tokio::time::timeout(Duration::from_millis(200), sock.recv(&mut buf)).await;
                let mut tally = t.lock().await;
                if let Ok(Ok(n)) = answer {
                    tally.reply(f, &buf[..n], start);
                }
                tally.sent(start.elapsed().as_micros() as u64, 1);
                drop(tally);
                let _ = sock.send(&udp_request(sent, start, size)).await;
                sent += 1;
            }
            sent
        }));
    }
    let mut sent = 0;
    for task in tasks {
        sent += task.await.unwrap_or(0);
    }
    let t = tally.lock().await;
    Ok(report(source, sent, &t, config.flows as u64))
}

/// A byte stream to the VIP: plain TCP, or TLS over it.
trait AppStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> AppStream for T {}

/// How long a flow waits for its connection, its handshake or an answer…
const WAIT: Duration = Duration::from_nanos(anyedge_topology::CLIENT_WAIT_NS);
/// …but never past `--duration` and this much more.
const GRACE: Duration = Duration::from_secs(1);

/// The SHA-256 (hex) of the leaf of a certificate chain a server presented.
fn leaf_sha256(chain: Option<&[rustls::pki_types::CertificateDer<'_>]>) -> Option<String> {
    let leaf = chain?.first()?;
    Some(crate::pki::hex(ring::digest::digest(&ring::digest::SHA256, leaf.as_ref()).as_ref()))
}

/// A connected flow: its stream, its local address, the leaf certificate (SHA-256) the
/// server presented when it spoke TLS.
type Connected = (Box<dyn AppStream>, SocketAddr, Option<String>);

/// Connects a flow: TCP, and a TLS handshake on it when `tls` is given; at most `wait`.
async fn connect(
    target: SocketAddr,
    tls: Option<&Arc<rustls::ClientConfig>>,
    wait: Duration,
) -> Result<Connected, ClientError> {
    let stream = tokio::time::timeout(wait, TcpStream::connect(target))
        .await
        .map_err(|_| ClientError::NotInTime(format!("connect {target}: no answer in {:.1} s", wait.as_secs_f64())))?
        .doing(|| format!("connect {target}"))?;
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().doing(|| format!("connect {target}"))?;
    let Some(config) = tls else { return Ok((Box::new(stream), local, None)) };
    let name = rustls::pki_types::ServerName::IpAddress(target.ip().into());
    let tls = tokio::time::timeout(wait, tokio_rustls::TlsConnector::from(config.clone()).connect(name, stream))
        .await
        .map_err(|_| {
            ClientError::NotInTime(format!("TLS with {target}: no handshake in {:.1} s", wait.as_secs_f64()))
        })?;
    let tls = tls.doing(|| format!("TLS with {target}"))?;
    let leaf = leaf_sha256(tls.get_ref().1.peer_certificates());
    Ok((Box::new(tls), local, leaf))
}

/// How long a connection may take: WAIT, but not past the run's end and its grace.
fn connect_wait(start: Instant, duration: Duration) -> Duration {
    WAIT.min((duration + GRACE).saturating_sub(start.elapsed())).max(Duration::from_millis(10))
}

/// What one flow's requests and replies look like on its byte stream.
#[derive(Clone, Copy)]
enum Framing {
    /// The probe's own: a fixed-size request, its echo and a length-prefixed trailer.
    Plain,
    /// HTTP/1.1: the request as a POST body, the reply as the response body.
    Http(SocketAddr),
}

/// A QUIC flow's move to a new local port, once its time has come: a new socket on a new
/// port, so the server sees the connection's packets come from a new address and
/// validates the path.
async fn migrate_when_due(migrate: &mut Option<(Duration, quinn::Endpoint)>, start: Instant, tally: &Mutex<Tally>) {
    let Some((at, endpoint)) = migrate.as_ref() else { return };
    if start.elapsed() < *at {
        return;
    }
    let moved = std::net::UdpSocket::bind(any_port(endpoint.local_addr().unwrap_or(([0, 0, 0, 0], 0).into())))
        .and_then(|sock| sock.set_nonblocking(true).and_then(|()| endpoint.rebind(sock)));
    if moved.is_ok() {
        tally.lock().await.migrations += 1;
    }
    *migrate = None;
}

/// One flow's exchange loop, paced at `per_flow`, until the run ends or the stream breaks.
/// `migrate`: a QUIC flow's endpoint and when to move it to a new local port.
async fn run_flow(
    (f, start, duration, per_flow): (usize, Instant, Duration, Duration),
    stream: (impl tokio::io::AsyncRead + Unpin, impl tokio::io::AsyncWrite + Unpin),
    framing: Framing,
    tally: Arc<Mutex<Tally>>,
    mut migrate: Option<(Duration, quinn::Endpoint)>,
) -> u64 {
    let (rd, mut wr) = stream;
    let mut rd = tokio::io::BufReader::new(rd);
    let mut sent = 0u64;
    let mut next = tokio::time::Instant::now();
    while start.elapsed() < duration {
        migrate_when_due(&mut migrate, start, &tally).await;
        let req = request(sent, start);
        tally.lock().await.sent(start.elapsed().as_micros() as u64, 1);
        let wrote = match framing {
            Framing::Plain => wr.write_all(&req).await,
            Framing::Http(target) => {
                let head = format!("POST /probe HTTP/1.1\r\nHost: {target}\r\nContent-Length: {}\r\n\r\n", req.len());
                let mut bytes = head.into_bytes();
                bytes.extend_from_slice(&req);
                wr.write_all(&bytes).await
            }
        };
        if wrote.is_err() {
            tally.lock().await.broken += 1;
            break;
        }
        sent += 1;
        // A reply may come up to WAIT after the request, but not past the run's grace.
        let wait = WAIT.min((duration + GRACE).saturating_sub(start.elapsed()));
        let reply = match framing {
            Framing::Plain => tokio::time::timeout(wait, read_reply(&mut rd)).await,
            Framing::Http(_) => tokio::time::timeout(wait, read_http_reply(&mut rd)).await,
        };
        match reply {
            Ok(Ok(reply)) => tally.lock().await.reply(f, &reply, start),
            // A broken or silent connection ends this flow.
            _ => {
                tally.lock().await.broken += 1;
                break;
            }
        }
        next += per_flow;
        tokio::time::sleep_until(next).await;
    }
    sent
}

/// One QUIC flow speaking HTTP/3 (ALPN `h3`): its control and QPACK streams, then each
/// request a POST of the probe's request on a stream of its own, whose response body is
/// the backend's echo and identity trailer, as over HTTPS. Paced and ended as
/// [`run_flow`]'s.
async fn run_h3_flow(
    (f, start, duration, per_flow): (usize, Instant, Duration, Duration),
    conn: quinn::Connection,
    target: SocketAddr,
    tally: Arc<Mutex<Tally>>,
    mut migrate: Option<(Duration, quinn::Endpoint)>,
) -> u64 {
    use anyedge_region::h3::H3Client;
    let mut uni = Vec::new();
    for _ in 0..3 {
        match conn.open_uni().await {
            Ok(s) => uni.push(s),
            Err(_) => {
                tally.lock().await.broken += 1;
                return 0;
            }
        }
    }
    let ids: Vec<u64> = uni.iter().map(|s| s.id().into()).collect();
    let Ok((mut client, first)) = H3Client::new([ids[0], ids[1], ids[2]]) else {
        tally.lock().await.broken += 1;
        return 0;
    };
    // The control and QPACK streams stay open for the connection's life.
    for (s, (_, bytes)) in uni.iter_mut().zip(first) {
        if s.write_all(&bytes).await.is_err() {
            tally.lock().await.broken += 1;
            return 0;
        }
    }
    let authority = target.to_string();
    let (mut sent, mut next) = (0u64, tokio::time::Instant::now());
    while start.elapsed() < duration {
        migrate_when_due(&mut migrate, start, &tally).await;
        let req = request(sent, start);
        tally.lock().await.sent(start.elapsed().as_micros() as u64, 1);
        let wait = WAIT.min((duration + GRACE).saturating_sub(start.elapsed()));
        let exchange = async {
            let (mut send, mut recv) = conn.open_bi().await.ok()?;
            let (id, bytes) = client.request(("POST", &authority, "/probe"), &[], &req).ok()?;
            // The library numbers requests as QUIC opens streams.
            (id == u64::from(send.id())).then_some(())?;
            send.write_all(&bytes).await.ok()?;
            send.finish().ok()?;
            let answer = recv.read_to_end(1 << 20).await.ok()?;
            client.feed(id, &answer, true).ok()?;
            client.take_answer(id).filter(|a| a.ended && a.status == Some(200)).map(|a| a.body)
        };
        sent += 1;
        match tokio::time::timeout(wait, exchange).await {
            Ok(Some(reply)) => tally.lock().await.reply(f, &reply, start),
            // A broken or silent connection ends this flow.
            _ => {
                tally.lock().await.broken += 1;
                break;
            }
        }
        next += per_flow;
        tokio::time::sleep_until(next).await;
    }
    drop(uni);
    sent
}

/// TCP, TCP SSL, HTTP and HTTPS: a connection per flow.
async fn tcp(config: &ProbeConfig) -> Result<ProbeReport, ClientError> {
    let start = Instant::now();
    let tls = if config.protocol.tls() { Some(config.tls.client_config()?) } else { None };
    let framing = if config.protocol.http() { Framing::Http(config.target) } else { Framing::Plain };
    let tally = Arc::new(Mutex::new(Tally::default()));
    let flows = config.flows.max(1);
    let per_flow = Duration::from_secs_f64(flows as f64 / config.rate_per_s.max(0.001));
    let mut tasks = Vec::new();
    let mut source = String::new();
    // Flows connect at once, each within the run's time.
    let connecting: Vec<_> = (0..flows)
        .map(|_| {
            let (target, tls, wait) = (config.target, tls.clone(), connect_wait(start, config.duration));
            tokio::spawn(async move { connect(target, tls.as_ref(), wait).await })
        })
        .collect();
    for (f, c) in connecting.into_iter().enumerate() {
        let (stream, local, leaf) = match c
            .await
            .map_err(|e| ClientError::Answered { who: "a connecting task".into(), said: e.to_string() })
            .and_then(|r| r)
        {
            Ok(connected) => connected,
            Err(e) => {
                tally.lock().await.connect_failed(e);
                continue;
            }
        };
        tally.lock().await.certificate(leaf);
        if source.is_empty() {
            source = local.ip().to_string();
        }
        let pace = (f, start, config.duration, per_flow);
        let t = tally.clone();
        tasks.push(tokio::spawn(async move { run_flow(pace, tokio::io::split(stream), framing, t, None).await }));
    }
    let (mut sent, opened) = (0, tasks.len() as u64);
    for task in tasks {
        sent += task.await.unwrap_or(0);
    }
    let t = tally.lock().await;
    Ok(report(source, sent, &t, opened))
}

/// A QUIC error, with what the probe was doing.
fn quic_error<E: std::error::Error + Send + Sync + 'static>(what: String) -> impl FnOnce(E) -> ClientError {
    move |e| ClientError::Quic { what, source: Box::new(e) }
}

/// QUIC: an endpoint (a local port) and a connection per flow, the requests on one
/// bidirectional stream in the probe's framing (the CLB relays the stream to the backend
/// over TCP).
async fn quic(config: &ProbeConfig) -> Result<ProbeReport, ClientError> {
    use quinn::crypto::rustls::QuicClientConfig;
    let start = Instant::now();
    let mut tls = (*config.tls.client_config()?).clone();
    tls.alpn_protocols = vec![config.alpn.clone()];
    let h3 = config.alpn == anyedge_region::quic_listener::H3;
    let crypto = QuicClientConfig::try_from(Arc::new(tls))
        .map_err(|e| ClientError::Quic { what: "QUIC set-up".into(), source: e.into() })?;
    let client = quinn::ClientConfig::new(Arc::new(crypto));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let flows = config.flows.max(1);
    let per_flow = Duration::from_secs_f64(flows as f64 / config.rate_per_s.max(0.001));
    let mut tasks = Vec::new();
    let mut source = String::new();
    let target = config.target;
    for f in 0..flows {
        let local: SocketAddr =
            any_port(target).parse().map_err(quic_error(format!("a local address for {target}")))?;
        let mut endpoint = quinn::Endpoint::client(local).doing(|| "QUIC endpoint".into())?;
        endpoint.set_default_client_config(client.clone());
        let connecting =
            endpoint.connect(target, &target.ip().to_string()).map_err(quic_error(format!("QUIC to {target}")))?;
        let wait = connect_wait(start, config.duration);
        let opened = async {
            let conn = tokio::time::timeout(wait, connecting)
                .await
                .map_err(|_| {
                    ClientError::NotInTime(format!("QUIC to {target}: no handshake in {:.1} s", wait.as_secs_f64()))
                })?
                .map_err(quic_error(format!("QUIC to {target}")))?;
            // HTTP/3 opens a stream per request; the probe's own protocol, one for all.
            let stream = if h3 {
                None
            } else {
                Some(conn.open_bi().await.map_err(quic_error(format!("QUIC stream to {target}")))?)
            };
            Ok::<_, ClientError>((conn, stream))
        };
        let (conn, stream) = match opened.await {
            Ok(opened) => opened,
            Err(e) => {
                tally.lock().await.connect_failed(e);
                continue;
            }
        };
        let chain =
            conn.peer_identity().and_then(|id| id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok());
        tally.lock().await.certificate(leaf_sha256(chain.as_deref().map(Vec::as_slice)));
        if source.is_empty() {
            // The endpoint is bound to the wildcard address: the source is the route's.
            source = source_toward(target)
                .or_else(|| endpoint.local_addr().ok().map(|a| a.ip()))
                .map(|ip| ip.to_string())
                .unwrap_or_default();
        }
        let pace = (f, start, config.duration, per_flow);
        let migrate = config.migrate_at.map(|at| (at, endpoint.clone()));
        let t = tally.clone();
        let flow_conn = conn.clone();
        tasks.push(tokio::spawn(async move {
            let sent = match stream {
                Some((send, recv)) => run_flow(pace, (recv, send), Framing::Plain, t, migrate).await,
                None => run_h3_flow(pace, flow_conn, target, t, migrate).await,
            };
            conn.close(0u32.into(), b"done");
            endpoint.wait_idle().await;
            sent
        }));
    }
    let (mut sent, opened) = (0, tasks.len() as u64);
    for task in tasks {
        sent += task.await.unwrap_or(0);
    }
    let t = tally.lock().await;
    Ok(report(source, sent, &t, opened))
}

/// The address this host sends from toward `target`: what its routes pick (a connected
/// UDP socket's local address; nothing is sent).
fn source_toward(target: SocketAddr) -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind(any_port(target)).ok()?;
    socket.connect(target).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

/// One TCP reply: the echoed request, a u16 length, the identity trailer.
async fn read_reply(rd: &mut (impl tokio::io::AsyncRead + Unpin)) -> std::io::Result<Vec<u8>> {
    let mut head = [0u8; REQUEST_LEN + 2];
    rd.read_exact(&mut head).await?;
    let len = usize::from(u16::from_be_bytes([head[REQUEST_LEN], head[REQUEST_LEN + 1]]));
    let mut trailer = vec![0u8; len];
    rd.read_exact(&mut trailer).await?;
    let mut reply = head[..REQUEST_LEN].to_vec();
    reply.extend_from_slice(&trailer);
    Ok(reply)
}

/// One HTTP response's body (the echoed request and the identity trailer); an error for
/// anything but a 200.
async fn read_http_reply(rd: &mut (impl tokio::io::AsyncBufRead + Unpin)) -> std::io::Result<Vec<u8>> {
    use crate::app_wire::{content_length, read_http_head};
    let head = read_http_head(rd).await?.ok_or(std::io::ErrorKind::UnexpectedEof)?;
    if !head.starts_with("HTTP/1.1 200 ") && !head.starts_with("HTTP/1.0 200 ") {
        let status = head.lines().next().unwrap_or_default().to_string();
        return Err(std::io::Error::other(status));
    }
    let mut body = vec![0u8; content_length(&head)? as usize];
    rd.read_exact(&mut body).await?;
    Ok(body)
}

fn report(source: String, sent: u64, t: &Tally, connections: u64) -> ProbeReport {
    let rtt_us = t.hist.as_ref().map(|h| RttUs {
        p50: h.value_at_quantile(0.5),
        p90: h.value_at_quantile(0.9),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
    });
    let loss_pct = if sent == 0 { 0.0 } else { 100.0 * sent.saturating_sub(t.received) as f64 / sent as f64 };
    ProbeReport {
        source,
        sent,
        received: t.received,
        loss_pct: (loss_pct * 1000.0).round() / 1000.0,
        rtt_us,
        rtt_ms: rtt_us.map(|r| {
            let ms = |us: u64| us as f64 / 1000.0;
            RttMs { p50: ms(r.p50), p90: ms(r.p90), p99: ms(r.p99), p999: ms(r.p999), max: ms(r.max) }
        }),
        backends: t.backends.clone(),
        client_addrs_seen: t.clients.iter().take(16).cloned().collect(),
        client_addrs_total: t.clients.len() as u64,
        forwarded_for_seen: t.forwarded_for.iter().take(16).cloned().collect(),
        toa_seen: t.toa.iter().take(16).cloned().collect(),
        migrations: t.migrations,
        connect_error: t.connect_error.clone(),
        timeline: t
            .seconds
            .iter()
            .enumerate()
            .map(|(i, (sent, h))| ProbeSecond {
                t_s: i as u64,
                sent: *sent,
                received: h.as_ref().map_or(0, |h| h.len()),
                p50_us: h.as_ref().map(|h| h.value_at_quantile(0.5)),
                p99_us: h.as_ref().map(|h| h.value_at_quantile(0.99)),
            })
            .collect(),
        connections_opened: connections,
        flows_backend_changed: t.flow_backends.values().filter(|(_, changed)| *changed).count() as u64,
        connections_broken: t.broken,
        server_certificates: t.certificates.clone(),
        longest_gap_ms: t.flow_gaps.values().map(|&(_, gap)| gap as f64 / 1000.0).collect(),
    }
}
