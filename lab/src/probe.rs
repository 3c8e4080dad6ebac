//! `anyedge probe`: load a VIP from inside a client namespace — F flows (source ports),
//! a request rate, round trips in an HDR histogram — and report what came back,
//! including which backends answered and which client address they saw.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Mutex;

/// Bytes of a probe request: magic, sequence number, send time (µs since start).
pub const REQUEST_LEN: usize = 20;
const MAGIC: &[u8; 4] = b"AEPR";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Udp,
    Tcp,
    /// TCP inside TLS (a `tcp-ssl` listener): the same requests once the handshake is done.
    TcpSsl,
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
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let ca = self.ca.as_ref().ok_or("--ca: the CA to trust (the lab's: pki/ca.pem in its state directory)")?;
        let read_cert =
            |p: &std::path::Path| CertificateDer::from_pem_file(p).map_err(|e| format!("{}: {e}", p.display()));
        let mut roots = rustls::RootCertStore::empty();
        roots.add(read_cert(ca)?).map_err(|e| format!("{}: {e}", ca.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
                builder.with_client_auth_cert(vec![read_cert(cert)?], key).map_err(|e| e.to_string())?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err("--cert and --key go together".into()),
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
    /// Run SCHED_FIFO (see [`crate::realtime`]), so the probe's own waits stay out of the figures.
    pub realtime: bool,
    /// `tcp-ssl`: whom to trust and what to present.
    pub tls: TlsFiles,
}

#[derive(Debug, Serialize, Clone, Copy)]
pub struct RttUs {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

#[derive(Debug, Serialize)]
pub struct ProbeReport {
    pub source: String,
    pub sent: u64,
    pub received: u64,
    pub loss_pct: f64,
    pub rtt_us: Option<RttUs>,
    pub backends: BTreeMap<String, u64>,
    pub client_addrs_seen: Vec<String>,
    pub connections_opened: u64,
    /// Flows (source ports, TCP connections) answered by one backend and later by another.
    pub flows_backend_changed: u64,
    /// TCP connections that broke (reset, or 5 s without an answer) before the end.
    pub connections_broken: u64,
    /// Per flow, in flow order: the longest time between two of its replies (an outage
    /// and its recovery, when a node on its path died), in milliseconds.
    pub longest_gap_ms: Vec<f64>,
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

#[derive(Default)]
struct Tally {
    received: u64,
    hist: Option<Histogram<u64>>,
    backends: BTreeMap<String, u64>,
    clients: BTreeSet<String>,
    /// Per flow: the backend that answered it first, and whether another answered later.
    flow_backends: BTreeMap<usize, (String, bool)>,
    /// Per flow: when its last reply came (µs since start), and the longest gap so far.
    flow_gaps: BTreeMap<usize, (u64, u64)>,
    broken: u64,
}

impl Tally {
    /// Takes a reply of flow `flow`: the request echoed, then `|be=…|cl=…`.
    fn reply(&mut self, flow: usize, bytes: &[u8], start: Instant) {
        if bytes.len() < REQUEST_LEN || &bytes[..4] != MAGIC {
            return;
        }
        let sent_us = u64::from_be_bytes(bytes[12..20].try_into().unwrap_or([0; 8]));
        let now_us = start.elapsed().as_micros() as u64;
        let rtt = now_us.saturating_sub(sent_us).max(1);
        let gap = self.flow_gaps.entry(flow).or_insert((now_us, 0));
        gap.1 = gap.1.max(now_us - gap.0);
        gap.0 = now_us;
        let hist =
            self.hist.get_or_insert_with(|| Histogram::new_with_bounds(1, 60_000_000, 3).expect("static bounds"));
        let _ = hist.record(rtt);
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
            }
        }
    }
}

/// Runs a probe to completion.
pub fn run(config: &ProbeConfig) -> Result<ProbeReport, String> {
    if config.realtime {
        crate::realtime::enter()?;
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(async {
        match config.protocol {
            Protocol::Udp => udp(config).await,
            Protocol::Tcp | Protocol::TcpSsl => tcp(config).await,
        }
    })
}

fn interval(config: &ProbeConfig) -> Duration {
    Duration::from_secs_f64(1.0 / config.rate_per_s.max(0.001))
}

async fn udp(config: &ProbeConfig) -> Result<ProbeReport, String> {
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
        let sock = std::net::UdpSocket::bind(any_port(config.target)).map_err(|e| e.to_string())?;
        sock.connect(config.target).map_err(|e| format!("{}: {e}", config.target))?;
        senders.push(sock.try_clone().map_err(|e| e.to_string())?);
        sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        let s = UdpSocket::from_std(sock).map_err(|e| e.to_string())?;
        let t = tally.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok(n) = s.recv(&mut buf).await {
                t.lock().await.reply(flow, &buf[..n], start);
            }
        });
    }
    let source = senders[0].local_addr().map(|a| a.ip().to_string()).unwrap_or_default();
    let (step, duration) = (interval(config), config.duration);
    let sending = tokio::task::spawn_blocking(move || {
        let mut sent = 0u64;
        let mut next = Instant::now();
        while start.elapsed() < duration {
            // The clones share the non-blocking flag: a full send buffer drops the request
            // (it counts as sent and lost), as a paced sender should.
            let _ = senders[sent as usize % senders.len()].send(&request(sent, start));
            sent += 1;
            next += step;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        sent
    });
    let sent = sending.await.map_err(|e| e.to_string())?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = tally.lock().await;
    Ok(report(source, sent, &t, config.flows as u64))
}

/// Each flow keeps `window` requests in flight: a reply sends the next request.
async fn udp_windowed(config: &ProbeConfig, window: usize) -> Result<ProbeReport, String> {
    let start = Instant::now();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut tasks = Vec::new();
    let mut source = String::new();
    for f in 0..config.flows.max(1) {
        let sock = UdpSocket::bind(any_port(config.target)).await.map_err(|e| e.to_string())?;
        sock.connect(config.target).await.map_err(|e| format!("{}: {e}", config.target))?;
        if f == 0 {
            source = sock.local_addr().map(|a| a.ip().to_string()).unwrap_or_default();
        }
        let (t, duration) = (tally.clone(), config.duration);
        tasks.push(tokio::spawn(async move {
            let mut sent = 0u64;
            for _ in 0..window.max(1) {
                let _ = sock.send(&request(sent, start)).await;
                sent += 1;
            }
            let mut buf = vec![0u8; 65_536];
            while start.elapsed() < duration {
                // A reply, or a lost request after 200 ms: either way the next request goes,
                // so the window stays full.
                if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(200), sock.recv(&mut buf)).await {
                    t.lock().await.reply(f, &buf[..n], start);
                }
                let _ = sock.send(&request(sent, start)).await;
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
trait Conn: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Conn for T {}

/// Connects a flow: TCP, and a TLS handshake on it when `tls` is given.
async fn connect(
    target: SocketAddr,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<(Box<dyn Conn>, SocketAddr), String> {
    let stream = TcpStream::connect(target).await.map_err(|e| format!("connect {target}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().map_err(|e| e.to_string())?;
    let Some(config) = tls else { return Ok((Box::new(stream), local)) };
    let name = rustls::pki_types::ServerName::IpAddress(target.ip().into());
    let tls = tokio_rustls::TlsConnector::from(config.clone()).connect(name, stream).await;
    Ok((Box::new(tls.map_err(|e| format!("TLS with {target}: {e}"))?), local))
}

async fn tcp(config: &ProbeConfig) -> Result<ProbeReport, String> {
    let start = Instant::now();
    let tls = match config.protocol {
        Protocol::TcpSsl => Some(config.tls.client_config()?),
        _ => None,
    };
    let tally = Arc::new(Mutex::new(Tally::default()));
    let flows = config.flows.max(1);
    let per_flow = Duration::from_secs_f64(flows as f64 / config.rate_per_s.max(0.001));
    let mut tasks = Vec::new();
    let mut source = String::new();
    for f in 0..flows {
        let (stream, local) = connect(config.target, tls.as_ref()).await?;
        if f == 0 {
            source = local.ip().to_string();
        }
        let (t, duration) = (tally.clone(), config.duration);
        tasks.push(tokio::spawn(async move {
            let (mut rd, mut wr) = tokio::io::split(stream);
            let mut sent = 0u64;
            let mut next = tokio::time::Instant::now();
            while start.elapsed() < duration {
                if wr.write_all(&request(sent, start)).await.is_err() {
                    t.lock().await.broken += 1;
                    break;
                }
                sent += 1;
                let wait = tokio::time::timeout(Duration::from_secs(5), read_reply(&mut rd)).await;
                match wait {
                    Ok(Ok(reply)) => t.lock().await.reply(f, &reply, start),
                    // A broken or silent connection ends this flow.
                    _ => {
                        t.lock().await.broken += 1;
                        break;
                    }
                }
                next += per_flow;
                tokio::time::sleep_until(next).await;
            }
            sent
        }));
    }
    let mut sent = 0;
    for task in tasks {
        sent += task.await.unwrap_or(0);
    }
    let t = tally.lock().await;
    Ok(report(source, sent, &t, flows as u64))
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
        backends: t.backends.clone(),
        client_addrs_seen: t.clients.iter().take(16).cloned().collect(),
        connections_opened: connections,
        flows_backend_changed: t.flow_backends.values().filter(|(_, changed)| *changed).count() as u64,
        connections_broken: t.broken,
        longest_gap_ms: t.flow_gaps.values().map(|&(_, gap)| gap as f64 / 1000.0).collect(),
    }
}
