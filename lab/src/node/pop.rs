//! A POP node of the lab: the shipped POP core behind the VIP's TUN device, read through
//! its multi-queue support with one queue per core ([`crate::io::tunq`]).
//!
//! Each queue has a thread of its own, with its own runtime and its own backbone socket
//! (`SO_REUSEPORT` on the POP's one tunnel address, so every thread sends from the same
//! address and the kernel hands each arriving datagram to one of them). The system calls —
//! TUN reads and writes, batched backbone sends and receives — run on every core at once.
//! The core's own work for a packet (parse, flow lookup, seal or open: about a microsecond)
//! runs under one lock, so the POP keeps one flow table, one sequence of backbone sequence
//! numbers and one set of replay windows whatever the number of queues: the core is the
//! simulator's, unchanged. Queue 0's thread (the process's main thread) also follows the
//! route table, probes the CLB nodes and takes the gRPC streams' replies.

use crate::error::{Doing, SysError};
use crate::node::NodeError;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use anyedge_ccn::{ComponentRng, Link};
use anyedge_ccn::{Dest, NodeId};
use anyedge_pop::Pop;
use anyedge_proto::inner;
use anyedge_topology::nodes::pop_config;
use anyedge_topology::{BackboneTransport, Topology};
use futures_util::FutureExt as _;
use tokio::sync::mpsc;

use crate::io::batch::{BATCH, BatchSocket};
use crate::io::clock::now_ns;
use crate::io::shaper::{Due, Shaper};
use crate::io::timer::PreciseTimer;
use crate::io::tunq::{Framing, take};
use crate::layout::{GRPC_PORT, HEALTH_PORT, mark_ready};
use crate::node::drops::{Drops, Way};
use crate::node::forwarder::{Forwarder, auth_from_now};
use crate::node::liveness::{UdpLiveness, answer_probes};
use crate::plan::{Plan, PlanGap, TUN_NAME};

/// Largest read a queue makes: a super-packet behind its virtio-net header.
const MTU_BUF: usize = crate::io::tunq::READ_MAX;
/// Packet buffers a queue keeps for its next reads.
const SPARE_MAX: usize = 4 * BATCH;
/// The largest buffer kept as a spare (a full-size packet fits).
const SPARE_BYTES_MAX: usize = 2_048;

/// Where a shaped packet goes once its link delivers it.
enum PopDest {
    /// A client's packet, now at the POP: into the core (a super-packet of this many
    /// bytes per segment; 0: an ordinary packet).
    Core(u16),
    /// Out of the node.
    Leave(Leave),
}

/// Where a packet leaving the node goes.
enum Leave {
    /// Encapsulated, now at the CLB node (UDP).
    Clb(SocketAddr),
    /// Encapsulated, now at the CLB node (gRPC stream to region, node).
    ClbStream(usize, usize),
    /// A reply (of this flow hash; a super-packet of this many bytes per segment, or 0),
    /// now at the client: out through the TUN device to the internet, on the flow's queue.
    Client(u64, u16),
}

/// What the queues share and take turns at: the core and the links it sends over.
struct PopState {
    core: Pop,
    shaper: Shaper<PopDest>,
    /// Access links of each client group: toward the POP, toward the client.
    to_pop: Vec<Link>,
    to_client: Vec<Link>,
    /// Backbone links to each region.
    backbone: Vec<Link>,
}

/// The POP's driver, shared by its queues: the state behind the lock, and what never
/// changes. Each queue's thread runs `serve_queue` over it: `take_from_clients` (TUN
/// reads), `take_from_clbs` (backbone datagrams), `handle_control` (queue 0: route
/// changes, liveness probes, gRPC replies) and `forward` (what is due, out).
struct PopDriver {
    state: Mutex<PopState>,
    /// Client group of each client source address (which access link a packet takes).
    groups: HashMap<IpAddr, usize>,
    /// Every CLB node's tunnel endpoint, looked up once rather than per packet.
    clb_tunnels: HashMap<(usize, usize), SocketAddr>,
    /// `backbone.transport: grpc`: one stream per CLB node instead of UDP.
    grpc: bool,
    streams: HashMap<(usize, usize), mpsc::Sender<Vec<u8>>>,
    writers: crate::io::tunq::Writers,
    drops: Drops,
    start: Instant,
}

/// One queue's own I/O: its TUN attachment, its backbone socket and its buffers.
struct Queue {
    index: usize,
    tun: tun::AsyncDevice,
    sock: BatchSocket,
    buf: Vec<u8>,
    inbox: Vec<(Option<usize>, u64, Vec<u8>, u16)>,
    out: Vec<(Leave, Vec<u8>)>,
    /// Buffers of packets this queue is done with (a client's packet the core has taken,
    /// a reply written to the device), reused for the next reads instead of allocating.
    spare: Vec<Vec<u8>>,
    /// Wakes this queue's thread when the shared shaper's next packet is due.
    shaper_timer: PreciseTimer,
}

impl Queue {
    fn recycle(&mut self, mut packet: Vec<u8>) {
        // A jumbo buffer is let go: the spares stay a few hundred KB at most.
        if self.spare.len() < SPARE_MAX && packet.capacity() <= SPARE_BYTES_MAX {
            packet.clear();
            self.spare.push(packet);
        }
    }
}

/// What only queue 0's thread waits on besides its queue.
struct PopControl<'a> {
    t: &'a Topology,
    p: usize,
    follower: Option<crate::node::watch::Follower>,
    prober: UdpLiveness,
    clb_peers: Vec<((usize, usize), SocketAddr)>,
    probe_buf: [u8; 256],
    down_rx: mpsc::Receiver<Vec<u8>>,
    /// The BGP speaker's announcements, by the VIPs' health here.
    announcer: crate::node::bgp::Announcer,
}

enum ControlEvent {
    /// A reply down a gRPC stream.
    Down(Vec<u8>),
    /// A committed route-table change.
    Change(anyedge_control::Change),
    /// The prober's timer.
    Tick,
    /// A probe answer of this many bytes in the probe buffer.
    Answer(usize),
}

pub(crate) async fn run_pop(
    t: &Topology,
    plan: &Plan,
    p: usize,
    node: Forwarder<'_>,
    queues: usize,
) -> Result<(), NodeError> {
    let Forwarder { ready, impair, follower, drops, keys, state_dir, conf_dir, name } = node;
    let fds = crate::io::tunq::attach(TUN_NAME, queues, Framing::Offloads)?;
    let bind = plan.pop_tunnel(p).ok_or(PlanGap("POP without a backbone address"))?;
    let auth = auth_from_now(keys)?;
    let (driver, down_rx) = PopDriver::bind(t, plan, p, (impair, &auth), (conf_dir, name), &fds, drops.clone())?;
    let driver = Arc::new(driver);
    // Liveness probes (the CLB nodes'): answered while we run.
    let me = anyedge_topology::nodes::pop_node(p);
    answer_probes(auth.keyring(me, 0), drops.clone()).await?;
    // The BGP speaker announces the VIPs while they are healthy here.
    let announcer = crate::node::bgp::Announcer::start(t, plan, p, state_dir, (name, drops)).await?;
    let control =
        PopControl::bind(t, p, &driver, bind.ip(), auth.keyring(me, 0), (follower, down_rx, announcer)).await?;
    let mut queue = start_queues(&driver, bind, fds)?;
    mark_ready(ready)?;
    tracing::info!("{name}: reading {TUN_NAME} on {} queue(s)", driver.writers.len());
    serve_queue(&driver, &mut queue, Some(control)).await
}

impl PopDriver {
    /// The POP's core, its links (the simulator's, in user space: each client group's
    /// access link both ways, the backbone to every region), its CLB tunnels and, with a
    /// gRPC backbone, a stream to each CLB node; the receiver of those streams' replies.
    fn bind(
        t: &Topology,
        plan: &Plan,
        p: usize,
        (impair, auth): (bool, &anyedge_ccn::AuthConfig),
        (conf_dir, name): (&std::path::Path, &str),
        fds: &[OwnedFd],
        drops: Drops,
    ) -> Result<(PopDriver, mpsc::Receiver<Vec<u8>>), NodeError> {
        let start = Instant::now();
        let mut config = pop_config(t, p);
        config.auth = auth.clone();
        let groups: HashMap<IpAddr, usize> =
            (0..t.clients.len()).flat_map(|g| plan.client_sources(g).into_iter().map(move |a| (a, g))).collect();
        let access = |g: usize, dir: usize| {
            let model = anyedge_topology::nodes::access_link(t, g, anyedge_topology::InternetEnd::Pop(p));
            Link::new(model, ComponentRng::new(t.seed, &format!("lab/inet/{g}/{p}/{dir}")))
        };
        let backbone = (0..t.regions.len())
            .map(|r| {
                let model = anyedge_topology::nodes::backbone_link(t, t.pops[p].location, t.regions[r].location);
                Link::new(model, ComponentRng::new(t.seed, &format!("lab/backbone/{p}/{r}/0")))
            })
            .collect();
        let state = PopState {
            core: Pop::new(config, 0),
            shaper: Shaper::new(start, impair),
            to_pop: (0..t.clients.len()).map(|g| access(g, 0)).collect(),
            to_client: (0..t.clients.len()).map(|g| access(g, 1)).collect(),
            backbone,
        };
        let clb_tunnels: HashMap<(usize, usize), SocketAddr> = t
            .regions
            .iter()
            .enumerate()
            .flat_map(|(r, region)| (0..usize::from(region.clb_nodes)).map(move |i| (r, i)))
            .filter_map(|(r, i)| plan.clb_tunnel(r, i).map(|a| ((r, i), a)))
            .collect();
        let grpc = t.backbone.transport == BackboneTransport::Grpc;
        let (down_tx, down_rx) = mpsc::channel::<Vec<u8>>(4096);
        let mut streams = HashMap::new();
        if grpc {
            for (&(r, i), a) in &clb_tunnels {
                let tls = crate::pki::client(conf_dir, name, a.ip())?;
                streams.insert(
                    (r, i),
                    crate::node::grpc::connect(
                        SocketAddr::new(a.ip(), GRPC_PORT),
                        (tls, conf_dir.to_path_buf(), name.to_string()),
                        down_tx.clone(),
                    ),
                );
            }
        }
        drops.set_tun_queues(fds.len());
        let writers = crate::io::tunq::Writers::new(fds, Framing::Offloads)?;
        let driver = PopDriver { state: Mutex::new(state), groups, clb_tunnels, grpc, streams, writers, drops, start };
        Ok((driver, down_rx))
    }
}

impl<'a> PopControl<'a> {
    /// Liveness probing of the CLB nodes (the shared core): a dead node's flows move to a
    /// live one of its region, a node that answers again is taken back.
    async fn bind(
        t: &'a Topology,
        p: usize,
        driver: &PopDriver,
        local: IpAddr,
        keyring: anyedge_ccn::Keyring,
        (follower, down_rx, announcer): (
            Option<crate::node::watch::Follower>,
            mpsc::Receiver<Vec<u8>>,
            crate::node::bgp::Announcer,
        ),
    ) -> Result<PopControl<'a>, NodeError> {
        let mut clb_peers: Vec<((usize, usize), SocketAddr)> =
            driver.clb_tunnels.iter().map(|(&node, a)| (node, SocketAddr::new(a.ip(), HEALTH_PORT))).collect();
        clb_peers.sort();
        let addrs = clb_peers.iter().map(|&(_, a)| a).collect();
        let ids = clb_peers.iter().map(|&((r, i), _)| anyedge_topology::nodes::clb_node(r, i)).collect();
        let prober = UdpLiveness::bind(local, addrs, (keyring, ids), t, now_ns(driver.start)).await?;
        Ok(PopControl { t, p, follower, prober, clb_peers, probe_buf: [0u8; 256], down_rx, announcer })
    }

    /// The regions the core forwarded to since the last round: their CLB nodes are
    /// probed.
    fn used(&mut self, regions: &[u16], now_ns: u64) {
        for (peer, &((r, _), _)) in self.clb_peers.iter().enumerate() {
            if regions.contains(&(r as u16)) {
                self.prober.used(peer, now_ns);
            }
        }
    }

    /// The probes' news, into the core (which samples announcements from it).
    fn clb_changes(&mut self, core: &mut Pop, changes: Vec<(usize, bool)>) {
        clb_changes(self.t, self.p, core, &self.clb_peers, changes);
    }

    /// One health sample per published VIP, by the core's rule: healthy while a CLB node
    /// of its home region answers probes, through rise/fall hysteresis; what changed goes
    /// to the speaker. While the POP drains or is stopped (`ctl drain`) every VIP is
    /// withdrawn at once, whatever health says; serving again, announcements follow
    /// health from withdrawn.
    fn announce(&mut self, core: &mut Pop, admin: crate::node::drops::Admin) {
        let held = admin != crate::node::drops::Admin::Serving;
        let changes = core.sample_announcements(held);
        for (k, up) in self.announcer.carry(self.t, &changes) {
            let what = if up { "announced" } else { "withdrawn" };
            tracing::info!("pop/{}: VIP {} {what}", self.t.pops[self.p].name, self.t.vips[k].name);
        }
    }
}

/// Binds every queue's backbone socket, starts a thread for each queue but the first and
/// waits until they run; returns the first, which the calling thread serves.
fn start_queues(driver: &Arc<PopDriver>, bind: SocketAddr, fds: Vec<OwnedFd>) -> Result<Queue, NodeError> {
    let mut socks =
        (0..fds.len()).map(|_| crate::io::batch::bind_shared(bind)).collect::<Result<Vec<_>, SysError>>()?.into_iter();
    let mut fds = fds.into_iter();
    let (first_fd, first_sock) =
        (fds.next().ok_or(PlanGap("no TUN queue"))?, socks.next().ok_or(PlanGap("no backbone socket"))?);
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    for (index, (fd, sock)) in fds.zip(socks).enumerate().map(|(i, x)| (i + 1, x)) {
        let (driver, started) = (driver.clone(), started_tx.clone());
        std::thread::Builder::new()
            .name(format!("tun-queue-{index}"))
            .spawn(move || queue_thread(driver, index, fd, sock, started))
            .doing(|| format!("cannot start the thread of TUN queue {index}"))?;
    }
    drop(started_tx);
    for started in started_rx {
        started?;
    }
    Queue::new(0, first_fd, first_sock, driver.drops.backbone_losses())
}

/// Queue `index`'s thread: a runtime of its own serving the queue; the node exits if it
/// fails, as it would if the main thread failed.
fn queue_thread(
    path: Arc<PopDriver>,
    index: usize,
    fd: OwnedFd,
    sock: std::net::UdpSocket,
    started: std::sync::mpsc::Sender<Result<(), NodeError>>,
) {
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().doing(|| "a runtime".into())?;
        rt.block_on(async {
            // The queue's error goes to the starting thread, which stops the node with it.
            let mut queue = match Queue::new(index, fd, sock, path.drops.backbone_losses()) {
                Ok(queue) => queue,
                Err(e) => {
                    let _ = started.send(Err(e));
                    return Ok(());
                }
            };
            let _ = started.send(Ok(()));
            drop(started);
            serve_queue(&path, &mut queue, None).await
        })
    }));
    let why = match run {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e,
        Err(_) => NodeError::Panicked(format!("TUN queue {index}")),
    };
    tracing::error!("TUN queue {index}: {why}; the node stops");
    std::process::exit(1);
}

impl Queue {
    /// Queue `index` on the calling thread's runtime.
    fn new(
        index: usize,
        fd: OwnedFd,
        sock: std::net::UdpSocket,
        losses: Arc<crate::io::batch::Losses>,
    ) -> Result<Queue, NodeError> {
        let mut sock = BatchSocket::from_std(sock)?;
        sock.count_into(losses);
        Ok(Queue {
            index,
            tun: crate::io::tunq::into_async(TUN_NAME, fd)?,
            sock,
            buf: vec![0u8; MTU_BUF],
            inbox: Vec::with_capacity(BATCH),
            out: Vec::with_capacity(BATCH),
            spare: Vec::with_capacity(SPARE_MAX),
            shaper_timer: PreciseTimer::new()?,
        })
    }
}

impl PopDriver {
    fn lock(&self) -> MutexGuard<'_, PopState> {
        // A thread that panicked holding the lock ends the node (`queue_thread`); what
        // it left is still the core's own consistent state between two calls.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn now_ns(&self) -> u64 {
        now_ns(self.start)
    }

    /// Packets from clients: the first one read (`n` bytes in the buffer) and every one
    /// already waiting on the queue, up to a batch, onto their access links from
    /// `arrived_ns` (a TUN device keeps no receive time: the first read's is the closest).
    fn take_from_clients(&self, q: &mut Queue, mut n: usize, arrived_ns: u64) {
        loop {
            // The kernel's super-packets and partial checksums, made whole.
            match take(&mut q.buf[..n], Framing::Offloads) {
                Ok((start, segment)) => {
                    let mut packet = q.spare.pop().unwrap_or_default();
                    packet.extend_from_slice(&q.buf[start..n]);
                    let parsed = inner::parse(&packet).ok();
                    // A fragment has no flow key, but its source names its group's link.
                    let group = inner::source(&packet).and_then(|src| self.groups.get(&src).copied());
                    let flow = parsed.map_or(0, |i| u64::from(i.key.flow_hash()));
                    q.inbox.push((group, flow, packet, segment));
                }
                Err(e) => {
                    self.drops.packet_in();
                    self.drops.count(Err(anyedge_pop::PopDrop::from(e)));
                }
            }
            if q.inbox.len() == BATCH {
                break;
            }
            match q.tun.recv(&mut q.buf).now_or_never() {
                Some(Ok(m)) => n = m,
                _ => break,
            }
        }
        self.drops.tun_read(q.index, q.inbox.len() as u64);
        let mut guard = self.lock();
        let PopState { shaper, to_pop, .. } = &mut *guard;
        let stopped = self.drops.admin() == crate::node::drops::Admin::Stopped;
        for (group, flow, packet, segment) in q.inbox.drain(..) {
            self.drops.packet_in();
            self.drops.client_packet();
            if stopped {
                self.drops.count(Err(crate::node::drops::Drained));
                q.spare.push(packet);
                continue;
            }
            match group.and_then(|g| to_pop.get_mut(g)) {
                Some(link) => shaper.push(link, flow, PopDest::Core(segment), packet, arrived_ns),
                None => shaper.pass(PopDest::Core(segment), packet, arrived_ns),
            }
        }
    }

    /// Backbone datagrams from CLB nodes that reached the node at `arrived_ns`, into the
    /// core; what it makes of them onto the clients' links from that time.
    fn take_from_clbs<'b>(&self, datagrams: impl Iterator<Item = &'b [u8]>, arrived_ns: u64) {
        let now = self.now_ns();
        let mut guard = self.lock();
        for packet in datagrams {
            self.drops.packet_in();
            self.drops.count(guard.core.handle_from_clb(now, packet));
            self.route_outputs(&mut guard, arrived_ns);
        }
    }

    /// What the core made of a packet that reached the node at `arrived_ns`, onto its
    /// links (backbone toward CLB nodes, access links toward clients) from that time.
    fn route_outputs(&self, state: &mut PopState, arrived_ns: u64) {
        let PopState { core, shaper, to_client, backbone, .. } = state;
        while let Some(out) = core.poll_output() {
            let flow = out.flow();
            match out.dest {
                Dest::Node(NodeId::Clb { region, node }) => {
                    let (r, i) = (usize::from(region), usize::from(node));
                    if let (Some(&to), Some(link)) = (self.clb_tunnels.get(&(r, i)), backbone.get_mut(r)) {
                        let leave = if self.grpc { Leave::ClbStream(r, i) } else { Leave::Clb(to) };
                        shaper.push(link, flow, PopDest::Leave(leave), out.bytes, arrived_ns);
                    }
                }
                Dest::Client(client) => {
                    // The client's group is its access link.
                    let group = self.groups.get(&client).copied();
                    let dest = PopDest::Leave(Leave::Client(flow, out.segment));
                    match group.and_then(|g| to_client.get_mut(g)) {
                        Some(link) => shaper.push(link, flow, dest, out.bytes, arrived_ns),
                        None => shaper.pass(dest, out.bytes, arrived_ns),
                    }
                }
                Dest::Node(_) | Dest::Backend(_) => {}
            }
        }
    }

    /// Packets due on their links (`due`, and whatever is ready without a wait): clients'
    /// into the core, each one's output onto its links from the time it was due; then,
    /// outside the lock, what is ready to leave goes out through this queue's socket and
    /// the TUN device.
    async fn forward(&self, q: &mut Queue, due: Vec<Due<PopDest>>, since: Instant) {
        {
            let now = self.now_ns();
            let mut guard = self.lock();
            // Clients' packets into the core and its output onto its links, until nothing
            // ready is left for the core (its output never is).
            let mut pending = due;
            loop {
                for (dest, packet, at) in pending.drain(..) {
                    match dest {
                        PopDest::Core(segment) => {
                            self.drops.count(guard.core.handle_super_from_client(now, &packet, segment));
                            self.route_outputs(&mut guard, at);
                            q.recycle(packet);
                        }
                        PopDest::Leave(leave) => q.out.push((leave, packet)),
                    }
                }
                pending.extend(guard.shaper.take_ready());
                if pending.is_empty() {
                    break;
                }
            }
        }
        self.send_out(q, since).await;
    }

    /// What left the links, out through this queue's socket, a gRPC stream or the TUN
    /// device; then the socket's batch goes, and each packet's time in the node since the
    /// wake-up at `since` is recorded.
    async fn send_out(&self, q: &mut Queue, since: Instant) {
        let mut out = std::mem::take(&mut q.out);
        let replies = out.iter().filter(|(leave, _)| matches!(leave, Leave::Client(..))).count() as u64;
        let requests = out.len() as u64 - replies;
        for (leave, packet) in out.drain(..) {
            match leave {
                Leave::Clb(to) => {
                    self.drops.packet_out();
                    q.sock.queue(to, packet);
                }
                Leave::ClbStream(r, i) => {
                    if let Some(up) = self.streams.get(&(r, i)) {
                        self.drops.packet_out();
                        let _ = up.try_send(packet);
                    }
                }
                // Written on the queue of the flow's hash: the kernel then reads the
                // flow's next packets from that queue too.
                Leave::Client(flow, segment) => {
                    self.drops.packet_out();
                    let mut packet = packet;
                    let _ = self.writers.write(flow, &mut packet, segment);
                    q.recycle(packet);
                }
            }
        }
        q.out = out;
        q.sock.flush().await;
        self.drops.left(Way::Request, since, requests);
        self.drops.left(Way::Reply, since, replies);
    }

    /// The packets due on their links now (the queue's timer fired).
    fn due(&self) -> Vec<Due<PopDest>> {
        self.lock().shaper.due()
    }
}

/// What queue 0's thread waits on besides its queue (never, on the other threads).
async fn next_control(control: &mut Option<PopControl<'_>>, start: Instant) -> ControlEvent {
    let Some(c) = control.as_mut() else { return std::future::pending().await };
    loop {
        tokio::select! {
            Some(packet) = c.down_rx.recv() => return ControlEvent::Down(packet),
            // POPs forward by VIP and CLB node; what the table changes for them is which
            // listeners' replies may leave toward clients.
            Some((change, _)) = crate::node::watch::next_change(&mut c.follower) => return ControlEvent::Change(change),
            _ = tokio::time::sleep_until(c.prober.wake_at(start)) => return ControlEvent::Tick,
            r = c.prober.sock.recv_from(&mut c.probe_buf) => {
                if let Ok((n, _)) = r {
                    return ControlEvent::Answer(n);
                }
            }
        }
    }
}

/// Serves one queue until the node stops: its TUN reads, its backbone socket, the links'
/// timers, and on queue 0 the route table, the prober and the gRPC streams.
async fn serve_queue(path: &PopDriver, q: &mut Queue, mut control: Option<PopControl<'_>>) -> Result<(), NodeError> {
    loop {
        // Packets with no delay to wait for go round again at once.
        let (mut due, wake) = {
            let mut state = path.lock();
            (state.shaper.take_ready(), state.shaper.wake_at())
        };
        let mut since = Instant::now();
        if due.is_empty() {
            tokio::select! {
                r = q.tun.recv(&mut q.buf) => {
                    since = Instant::now();
                    let n = r.doing(|| format!("TUN queue {}", q.index))?;
                    path.take_from_clients(q, n, path.now_ns());
                }
                r = q.sock.recv() => {
                    since = Instant::now();
                    r.doing(|| "the backbone socket".into())?;
                    path.take_from_clbs(q.sock.datagrams().map(|(_, d)| d), q.sock.received_ns(path.start));
                }
                event = next_control(&mut control, path.start) => {
                    if let Some(c) = control.as_mut() {
                        handle_control(path, c, event).await;
                    }
                }
                _ = q.shaper_timer.wait_until(wake) => due = path.due(),
            }
        }
        path.forward(q, due, since).await;
    }
}

async fn handle_control(path: &PopDriver, c: &mut PopControl<'_>, event: ControlEvent) {
    match event {
        ControlEvent::Down(packet) => path.take_from_clbs(std::iter::once(&packet[..]), path.now_ns()),
        ControlEvent::Change(change) => {
            anyedge_topology::route_table::apply_to_pop(&mut path.lock().core, c.t, &change);
        }
        ControlEvent::Tick => {
            let now = path.now_ns();
            let used = path.lock().core.take_demand();
            c.used(&used, now);
            let changes = c.prober.tick(now).await;
            let mut state = path.lock();
            c.clb_changes(&mut state.core, changes);
            c.announce(&mut state.core, path.drops.admin());
        }
        ControlEvent::Answer(n) => {
            let changes = c.prober.answered(&c.probe_buf[..n]);
            c.clb_changes(&mut path.lock().core, changes);
        }
    }
}

/// A POP's probes found CLB nodes down or back: its core sends their flows elsewhere (or
/// to them again), and the log says when.
fn clb_changes(
    t: &Topology,
    p: usize,
    core: &mut Pop,
    peers: &[((usize, usize), SocketAddr)],
    changes: Vec<(usize, bool)>,
) {
    for (peer, up) in changes {
        let ((r, i), _) = peers[peer];
        core.set_clb_up(r as u16, i as u16, up);
        let state = if up { "up" } else { "down" };
        tracing::info!("pop/{}: {} {state}", t.pops[p].name, anyedge_topology::clb_name(&t.regions[r].name, i));
    }
}
