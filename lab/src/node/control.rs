//! `anyedge node --name control/N`: one control node of a lab — the shipped
//! `ControlNode` (raft-rs) driven by tokio on the wall clock, its log in redb under the
//! lab's state directory. Raft between control nodes and the watch streams POPs and CLB
//! nodes follow run over gRPC on the backbone; the control API (`anyedge ctl`) also
//! answers on a Unix socket per node.

use crate::error::Doing;
use crate::node::NodeError;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyedge_ccn::{ComponentRng, Link, LinkOutcome};
use anyedge_control::durable::RedbDisk;
use anyedge_control::{CatchUp, Change, ControlNode, Output, ProposeError, WriteFate, write_fate};
use anyedge_proto::control::control_server::{Control, ControlServer};
use anyedge_proto::control::peer_client::PeerClient;
use anyedge_proto::control::peer_server::{Peer, PeerServer};
use anyedge_proto::control::{
    Ack, RaftFrame, RoutesReply, RoutesRequest, StatusReply, StatusRequest, WatchRequest, WatchUpdate, WriteReply,
    WriteRequest,
};
use anyedge_topology::Topology;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::layout::{CONTROL_PORT, api_socket, log_path, mark_ready};
use crate::pki::{PeerIdentity, Role};
use crate::plan::{Plan, PlanGap};

/// How long a write waits to commit before the API gives up on it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Updates a watch stream buffers; a watcher further behind is dropped and reconnects.
const WATCH_DEPTH: usize = 1024;

enum Call {
    /// A Raft message from the control node with this id (its certificate says so).
    Raft(u64, Vec<u8>),
    Status(oneshot::Sender<StatusReply>),
    Routes(oneshot::Sender<RoutesReply>),
    Write(Change, oneshot::Sender<Result<u64, Status>>),
    Watch(u64, mpsc::Sender<Result<WatchUpdate, Status>>),
}

#[derive(Clone)]
struct Api {
    calls: mpsc::Sender<Call>,
    /// Serving the Unix socket (root on this host, the operator) rather than the backbone.
    local: bool,
    refusals: Refusals,
    /// How long the backbone takes from this node's site to each watcher (`pop/X`,
    /// `clb/R/N`), as the simulator delays watch updates; empty with impairments off.
    watch_delays: Arc<HashMap<String, Duration>>,
}

/// Whether the `n`th refusal of a kind gets a log line: the first 20, then every
/// 1,000th (with the count), so a flood of refused peers cannot fill the disk.
pub(crate) fn worth_logging(n: u64) -> bool {
    n <= 20 || n.is_multiple_of(1000)
}

/// Logs why peers were refused: every reason the first few times, then one in a thousand,
/// so a flood of forged messages cannot fill the disk.
#[derive(Clone, Default)]
struct Refusals {
    name: Arc<str>,
    count: Arc<std::sync::atomic::AtomicU64>,
}

impl Refusals {
    fn new(name: &str) -> Refusals {
        Refusals { name: name.into(), count: Arc::default() }
    }

    fn log(&self, what: &str, reason: &dyn std::fmt::Display) {
        let n = self.count.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if worth_logging(n) {
            tracing::warn!("{}: refused {what}: {reason} ({n} refused so far)", self.name);
        }
    }

    /// The status a refused call gets back, logged.
    fn deny(&self, what: &str, reason: String) -> Status {
        self.log(what, &reason);
        Status::permission_denied(reason)
    }
}

impl Api {
    /// Who is calling: `None` on the local socket; over the backbone, the identity in the
    /// peer's certificate (which TLS checked against the lab's CA).
    fn caller<T>(&self, request: &Request<T>, what: &str) -> Result<Option<PeerIdentity>, Status> {
        if self.local {
            return Ok(None);
        }
        let chain = request.peer_certs().ok_or_else(|| self.refusals.deny(what, "no client certificate".into()))?;
        let leaf = chain.first().ok_or_else(|| self.refusals.deny(what, "empty certificate chain".into()))?;
        crate::pki::peer_identity(leaf.as_ref()).map(Some).map_err(|e| self.refusals.deny(what, e.to_string()))
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Call) -> Result<T, Status> {
        let (tx, rx) = oneshot::channel();
        self.calls.send(make(tx)).await.map_err(|_| Status::unavailable("control node is stopping"))?;
        rx.await.map_err(|_| Status::unavailable("control node is stopping"))
    }
}

#[tonic::async_trait]
impl Peer for Api {
    async fn raft(&self, request: Request<RaftFrame>) -> Result<Response<Ack>, Status> {
        let id = match self.caller(&request, "a Raft message")? {
            Some(PeerIdentity { role: Role::Control(id), .. }) => id,
            who => {
                let who = who.map_or("the local socket".to_string(), |w| w.name);
                return Err(self.refusals.deny("a Raft message", format!("{who} is no control node")));
            }
        };
        let frame = request.into_inner();
        self.calls.send(Call::Raft(id, frame.message)).await.map_err(|_| Status::unavailable("stopping"))?;
        Ok(Response::new(Ack {}))
    }
}

#[tonic::async_trait]
impl Control for Api {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        self.ask(Call::Status).await.map(Response::new)
    }

    async fn routes(&self, _: Request<RoutesRequest>) -> Result<Response<RoutesReply>, Status> {
        self.ask(Call::Routes).await.map(Response::new)
    }

    async fn write(&self, request: Request<WriteRequest>) -> Result<Response<WriteReply>, Status> {
        match self.caller(&request, "a write")? {
            None | Some(PeerIdentity { role: Role::Ctl, .. }) => {}
            Some(who) => return Err(self.refusals.deny("a write", format!("{} may only watch and read", who.name))),
        }
        let json = request.into_inner().change_json;
        let change: Change = serde_json::from_str(&json)
            .map_err(|e| Status::invalid_argument(format!("change: not a route-table change ({e})")))?;
        let waited = tokio::time::timeout(WRITE_TIMEOUT, self.ask(|tx| Call::Write(change, tx))).await;
        match waited {
            Ok(Ok(Ok(index))) => Ok(Response::new(WriteReply { index })),
            Ok(Ok(Err(status))) | Ok(Err(status)) => Err(status),
            Err(_) => Err(Status::deadline_exceeded("not committed within 5 s (no majority?)")),
        }
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchUpdate, Status>> + Send>>;

    async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let delay = match self.caller(&request, "a watch") {
            Ok(Some(who)) => self.watch_delays.get(&who.name).copied(),
            _ => None,
        };
        let (tx, rx) = mpsc::channel(WATCH_DEPTH);
        let after = request.into_inner().after;
        self.calls.send(Call::Watch(after, tx)).await.map_err(|_| Status::unavailable("stopping"))?;
        let Some(delay) = delay else { return Ok(Response::new(Box::pin(ReceiverStream::new(rx)))) };
        let (late_tx, late_rx) = mpsc::channel(WATCH_DEPTH);
        tokio::spawn(delay_updates(rx, late_tx, delay));
        Ok(Response::new(Box::pin(ReceiverStream::new(late_rx))))
    }
}

/// Hands each update on `delay` after it was sent, in order, none held longer: the
/// backbone between a control node and a watcher far away. A watcher more than
/// `WATCH_DEPTH` updates behind is dropped (it reconnects and catches up), as it is when
/// it reads too slowly.
async fn delay_updates<T>(mut rx: mpsc::Receiver<T>, tx: mpsc::Sender<T>, delay: Duration) {
    let mut on_the_way: std::collections::VecDeque<(tokio::time::Instant, T)> = std::collections::VecDeque::new();
    let mut open = true;
    while open || !on_the_way.is_empty() {
        let due = on_the_way.front().map(|(at, _)| *at);
        tokio::select! {
            item = rx.recv(), if open => match item {
                Some(item) if on_the_way.len() < WATCH_DEPTH => on_the_way.push_back((tokio::time::Instant::now() + delay, item)),
                Some(_) => return,
                None => open = false,
            },
            _ = tokio::time::sleep_until(due.unwrap_or_else(crate::io::clock::far_future)), if due.is_some() => {
                let Some((_, item)) = on_the_way.pop_front() else { continue };
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// One-way backbone delays from control node `id`'s site to every POP and CLB node that
/// watches the table, as the simulator has them (at least 100 µs); none when impairments
/// are off.
fn watch_delays(t: &Topology, c: &anyedge_topology::Control, id: u8, impair: bool) -> HashMap<String, Duration> {
    let Some(&(_, site)) = c.sites.get(usize::from(id).wrapping_sub(1)) else { return HashMap::new() };
    if !impair {
        return HashMap::new();
    }
    let delay =
        |to| Duration::from_nanos(anyedge_topology::nodes::backbone_link(t, site, to).impairment.delay_ns.max(100_000));
    let pops = t.pops.iter().map(|p| (format!("pop/{}", p.name), delay(p.location)));
    let clbs = t
        .regions
        .iter()
        .flat_map(|r| (1..=r.clb_nodes).map(move |n| (format!("clb/{}/{n}", r.name), delay(r.location))));
    pops.chain(clbs).collect()
}

/// The watcher is at `index` (entries that change nothing, like a new leader's empty one).
fn index_only(index: u64) -> WatchUpdate {
    WatchUpdate {
        index,
        change_json: String::new(),
        table_json: String::new(),
        sent_unix_us: crate::io::clock::unix_us(),
    }
}

fn update(index: u64, change: &Change) -> WatchUpdate {
    WatchUpdate {
        index,
        change_json: serde_json::to_string(change).unwrap_or_default(),
        table_json: String::new(),
        sent_unix_us: crate::io::clock::unix_us(),
    }
}

/// The way to one peer: its messages in order, each stamped when the node sent it.
type PeerTx = mpsc::Sender<(tokio::time::Instant, Vec<u8>)>;

/// Sends Raft messages to one peer in order, reconnecting as needed; never blocks the node.
/// With impairments on, each message waits out the backbone link between the two sites
/// (delay, jitter, loss), the link the simulator's control plane runs on.
fn peer_sender(
    addr: SocketAddr,
    tls: tonic::transport::ClientTlsConfig,
    mut link: Option<Link>,
) -> Result<PeerTx, NodeError> {
    let (tx, mut rx) = mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(4096);
    let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .and_then(|e| e.tls_config(tls))
        .map_err(|source| NodeError::Grpc { what: format!("control peer {addr}"), source })?;
    tokio::spawn(async move {
        let channel = endpoint.connect_timeout(Duration::from_millis(200)).tcp_nodelay(true).connect_lazy();
        let mut client = PeerClient::new(channel);
        let start = tokio::time::Instant::now();
        while let Some((sent, message)) = rx.recv().await {
            if let Some(link) = link.as_mut() {
                let at_ns = sent.duration_since(start).as_nanos() as u64;
                match link.transmit(at_ns, message.len(), 0) {
                    LinkOutcome::Deliver(due_ns) => {
                        tokio::time::sleep_until(start + Duration::from_nanos(due_ns)).await
                    }
                    LinkOutcome::Lost | LinkOutcome::QueueFull => continue,
                }
            }
            // A lost message is Raft's business (it retries); a dead peer just fails fast.
            let _ = tokio::time::timeout(Duration::from_millis(500), client.raft(RaftFrame { message })).await;
        }
    });
    Ok(tx)
}

/// The backbone link from control node `id`'s site to peer `p`'s, as the simulator has it
/// (at least 100 µs); none when impairments are off.
fn control_link(t: &Topology, c: &anyedge_topology::Control, id: u8, p: u8, impair: bool) -> Option<Link> {
    let site = |n: u8| c.sites.get(usize::from(n).checked_sub(1)?).map(|s| s.1);
    let (a, b) = (site(id)?, site(p)?);
    let mut model = anyedge_topology::nodes::backbone_link(t, a, b);
    model.impairment.delay_ns = model.impairment.delay_ns.max(100_000);
    impair.then(|| Link::new(model, ComponentRng::new(t.seed, &format!("lab/control/link/{id}/{p}"))))
}

/// Raft and the control API on the backbone, behind mutual TLS.
fn backbone_server(api: Api) -> tonic::transport::server::Router {
    tonic::transport::Server::builder().add_service(PeerServer::new(api.clone())).add_service(ControlServer::new(api))
}

/// Answers the writes the entry at (index, term) decides: committed, or superseded (a new
/// leader's entry took its place) — the caller may retry those, nothing of theirs applied.
/// Each committed one's time from proposal to commit goes into `commits`.
fn settle(pending: &mut Vec<PendingWrite>, index: u64, term: u64, commits: &mut CommitTimes) {
    let (decided, open): (Vec<PendingWrite>, Vec<PendingWrite>) =
        pending.drain(..).partition(|p| write_fate((p.index, p.term), (index, term)) != WriteFate::Open);
    *pending = open;
    for p in decided {
        let result = match write_fate((p.index, p.term), (index, term)) {
            WriteFate::Committed => {
                commits.record(p.proposed.elapsed());
                Ok(p.index)
            }
            _ => Err(Status::unavailable("superseded: leadership changed before the write committed; retry")),
        };
        let _ = p.reply.send(result);
    }
}

/// How long this node's last writes took from proposal to commit (the leader's view:
/// its log, the backbone to a quorum and back), the last [`CommitTimes::KEPT`] of them.
#[derive(Default)]
struct CommitTimes(std::collections::VecDeque<u64>);

impl CommitTimes {
    const KEPT: usize = 64;

    fn record(&mut self, took: Duration) {
        if self.0.len() == Self::KEPT {
            self.0.pop_front();
        }
        self.0.push_back(took.as_micros() as u64);
        debug_assert!(self.0.len() <= Self::KEPT);
    }

    /// (last, median) in µs; zeros before any write.
    fn last_and_median_us(&self) -> (u64, u64) {
        let mut sorted: Vec<u64> = self.0.iter().copied().collect();
        sorted.sort_unstable();
        (self.0.back().copied().unwrap_or(0), sorted.get(sorted.len() / 2).copied().unwrap_or(0))
    }
}

struct PendingWrite {
    index: u64,
    term: u64,
    proposed: std::time::Instant,
    reply: oneshot::Sender<Result<u64, Status>>,
}

struct WatchStream {
    tx: mpsc::Sender<Result<WatchUpdate, Status>>,
}

pub async fn run(
    t: &Topology,
    plan: &Plan,
    id: u8,
    dirs: (&Path, &Path, bool),
    (ready, drops, reloaded): (&Path, crate::node::drops::Drops, tokio::sync::watch::Receiver<u64>),
) -> Result<(), NodeError> {
    ControlDriver::bind(t, plan, id, dirs, (drops, reloaded)).await?.ready(ready)?.run().await
}

/// What woke a control node up.
enum Input {
    Tick,
    Call(Call),
}

/// A control node in the lab: the sans-IO `ControlNode` driven by tokio — gRPC with mutual
/// TLS on the backbone and the control API on a Unix socket feed it calls, a ticker drives
/// Raft's clock, and `transmit` hands its outputs to peers, writers and watchers.
struct ControlDriver {
    node: ControlNode,
    id: u8,
    name: String,
    voters: Vec<u64>,
    refusals: Refusals,
    calls: mpsc::Receiver<Call>,
    tick: tokio::time::Interval,
    peers: HashMap<u64, PeerTx>,
    pending: Vec<PendingWrite>,
    commits: CommitTimes,
    watchers: Vec<WatchStream>,
    /// The highest index watchers have been told of.
    streamed: u64,
    drops: crate::node::drops::Drops,
}

impl ControlDriver {
    /// Opens the node's Raft log, serves Raft and the control API (backbone and Unix
    /// socket), and makes the way to each peer.
    async fn bind(
        t: &Topology,
        plan: &Plan,
        id: u8,
        (conf_dir, state_dir, impair): (&Path, &Path, bool),
        (drops, reloaded): (crate::node::drops::Drops, tokio::sync::watch::Receiver<u64>),
    ) -> Result<ControlDriver, NodeError> {
        let c = t.control.as_ref().ok_or(PlanGap("the topology has no `control:` section"))?;
        let config = anyedge_topology::route_table::control_config(t, c, id);
        let store =
            RedbDisk::open(&log_path(state_dir, id), &config.voters).map_err(|e| NodeError::Control(e.into()))?;
        let node = ControlNode::new(&config, anyedge_topology::route_table::route_table(t), store)
            .map_err(NodeError::Control)?;
        let (calls_tx, calls) = mpsc::channel::<Call>(4096);
        let name = format!("control/{id}");
        let refusals = Refusals::new(&name);
        let watch_delays = Arc::new(watch_delays(t, c, id, impair));
        let api = Api { calls: calls_tx, local: false, refusals: refusals.clone(), watch_delays };
        let own = plan.control_addr(id).ok_or(PlanGap("control node without a backbone address"))?;
        serve_backbone(SocketAddr::new(own.into(), CONTROL_PORT), (conf_dir, &name, reloaded), api.clone()).await?;
        serve_local(state_dir, id, Api { local: true, ..api })?;
        let mut peers: HashMap<u64, PeerTx> = HashMap::new();
        for (p, addr) in plan.control_addrs().into_iter().filter(|&(p, _)| p != id) {
            let tls = crate::pki::client(conf_dir, &name, addr.into())?;
            let link = control_link(t, c, id, p, impair);
            peers.insert(u64::from(p), peer_sender(SocketAddr::new(addr.into(), CONTROL_PORT), tls, link)?);
        }
        let mut tick = tokio::time::interval(Duration::from_nanos(c.tick_ns));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let streamed = node.applied();
        Ok(ControlDriver {
            node,
            id,
            name,
            voters: config.voters.clone(),
            refusals,
            calls,
            tick,
            peers,
            pending: Vec::new(),
            commits: CommitTimes::default(),
            watchers: Vec::new(),
            streamed,
            drops,
        })
    }

    fn ready(self, ready: &Path) -> Result<ControlDriver, NodeError> {
        mark_ready(ready)?;
        Ok(self)
    }

    /// Selects and dispatches until the log cannot be written.
    async fn run(mut self) -> Result<(), NodeError> {
        loop {
            let input = tokio::select! {
                _ = self.tick.tick() => Input::Tick,
                Some(call) = self.calls.recv() => Input::Call(call),
            };
            match input {
                Input::Tick => self.node.tick().map_err(|e| NodeError::Control(e.into()))?,
                Input::Call(Call::Raft(from, bytes)) => self.on_raft(from, &bytes)?,
                Input::Call(Call::Status(reply)) => self.on_status(reply),
                Input::Call(Call::Routes(reply)) => self.on_routes(reply),
                Input::Call(Call::Write(change, reply)) => self.on_write(&change, reply),
                Input::Call(Call::Watch(after, tx)) => self.on_watch(after, tx),
            }
            self.transmit();
        }
    }

    /// A refused message changes nothing; a log that cannot be written stops the node.
    fn on_raft(&mut self, from: u64, bytes: &[u8]) -> Result<(), NodeError> {
        match self.node.step(from, bytes) {
            Ok(()) => Ok(()),
            Err(anyedge_control::StepError::Refused(e)) => {
                self.refusals.log(&format!("a Raft message from control/{from}"), &e);
                Ok(())
            }
            Err(source @ anyedge_control::StepError::Store(_)) => {
                Err(NodeError::Store { node: self.name.clone(), source })
            }
        }
    }

    fn on_status(&self, reply: oneshot::Sender<StatusReply>) {
        let _ = reply.send(StatusReply {
            node: self.name.clone(),
            id: u64::from(self.id),
            leader: self.node.leader().unwrap_or(0),
            term: self.node.term(),
            commit: self.node.commit(),
            applied: self.node.applied(),
            members: self.voters.clone(),
            last_commit_us: self.commits.last_and_median_us().0,
            commit_p50_us: self.commits.last_and_median_us().1,
        });
    }

    fn on_routes(&self, reply: oneshot::Sender<RoutesReply>) {
        let table_json = serde_json::to_string(self.node.table()).unwrap_or_default();
        let _ = reply.send(RoutesReply { index: self.node.applied(), table_json });
    }

    /// A write is answered once its entry commits (`settle`), or at once when it cannot be.
    fn on_write(&mut self, change: &Change, reply: oneshot::Sender<Result<u64, Status>>) {
        let refused = match self.node.propose(change) {
            Ok(index) => {
                let proposed = std::time::Instant::now();
                self.pending.push(PendingWrite { index, term: self.node.term(), proposed, reply });
                return;
            }
            Err(ProposeError::NotLeader { leader }) => {
                let who = leader.map_or("no leader yet".to_string(), |l| format!("leader is control/{l}"));
                Status::failed_precondition(format!("not the leader ({who})"))
            }
            Err(ProposeError::Invalid(e)) => Status::invalid_argument(e.to_string()),
            Err(ProposeError::Refused(e)) => Status::unavailable(e),
            Err(ProposeError::Store(e)) => Status::internal(format!("log store: {e}")),
        };
        let _ = reply.send(Err(refused));
    }

    /// A new watcher gets what it missed since `after` (the changes, or the whole table),
    /// then every applied change.
    fn on_watch(&mut self, after: u64, tx: mpsc::Sender<Result<WatchUpdate, Status>>) {
        let first: Vec<WatchUpdate> = match self.node.catch_up(after) {
            CatchUp::Changes { changes, upto } => {
                changes.iter().map(|(i, ch)| update(*i, ch)).chain(std::iter::once(index_only(upto))).collect()
            }
            CatchUp::Table { index, table } => vec![WatchUpdate {
                index,
                change_json: String::new(),
                table_json: serde_json::to_string(&table).unwrap_or_default(),
                sent_unix_us: crate::io::clock::unix_us(),
            }],
        };
        if first.into_iter().all(|u| tx.try_send(Ok(u)).is_ok()) {
            self.watchers.push(WatchStream { tx });
        }
    }

    /// Raft messages to peers, committed writes answered, applied changes and the applied
    /// index to watchers; gauges for /metrics.
    fn transmit(&mut self) {
        while let Some(out) = self.node.poll_output() {
            match out {
                Output::Message { to, bytes } => {
                    if let Some(peer) = self.peers.get(&to) {
                        let _ = peer.try_send((tokio::time::Instant::now(), bytes));
                    }
                }
                Output::Applied { index, term, change, .. } => {
                    settle(&mut self.pending, index, term, &mut self.commits);
                    let u = update(index, &change);
                    self.watchers.retain(|w| w.tx.try_send(Ok(u.clone())).is_ok());
                    self.streamed = index;
                }
                // Nothing to stream (the index goes out below), but a write there lost.
                Output::AppliedNothing { index, term } => settle(&mut self.pending, index, term, &mut self.commits),
                Output::Leader { .. } => {}
            }
        }
        if self.node.applied() > self.streamed {
            self.streamed = self.node.applied();
            let at = index_only(self.streamed);
            self.watchers.retain(|w| w.tx.try_send(Ok(at.clone())).is_ok());
        }
        self.drops.set_gauge("raft_term", self.node.term());
        self.drops.set_gauge("raft_commit", self.node.commit());
        self.drops.set_gauge("raft_applied", self.node.applied());
    }
}

/// Raft and watchers over the backbone, mutual TLS: only holders of the lab's
/// certificates get in; a reload changes the node's own certificate for new connections.
/// Bounded: an idle-connection flood neither exhausts file handles nor starves peers.
async fn serve_backbone(
    bind: SocketAddr,
    (conf_dir, name, reloaded): (&Path, &str, tokio::sync::watch::Receiver<u64>),
    api: Api,
) -> Result<(), NodeError> {
    let tcp = tokio::net::TcpListener::bind(bind).await.doing(|| format!("bind {bind}"))?;
    let tls = crate::io::tls::ServerTls::new(crate::pki::server(conf_dir, name)?);
    // After each reload: the certificate of the node's directory for new connections.
    crate::node::reload::server_tls_on_reload(conf_dir.to_path_buf(), name.to_string(), tls.clone(), reloaded);
    let server = backbone_server(api);
    tokio::spawn(async move {
        if let Err(e) = server.serve_with_incoming(crate::io::tls::incoming(tcp, tls)).await {
            tracing::error!("control gRPC server: {e}");
        }
    });
    Ok(())
}

/// The control API on a Unix socket (the operator, root on this host).
fn serve_local(state_dir: &Path, id: u8, api: Api) -> Result<(), NodeError> {
    let socket = api_socket(state_dir, id);
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).at(dir)?;
    }
    let _ = std::fs::remove_file(&socket);
    let unix = tokio::net::UnixListener::bind(&socket).at(&socket)?;
    let local = tonic::transport::Server::builder().add_service(ControlServer::new(api));
    tokio::spawn(async move {
        // Only root and this node's user write the table here (the socket's mode says so
        // too; the peer's credentials hold whatever it is).
        use tokio_stream::StreamExt;
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(unix)
            .filter(|s| s.as_ref().map_or(true, crate::layout::local_peer_allowed));
        if let Err(e) = local.serve_with_incoming(incoming).await {
            tracing::error!("control API server: {e}");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_logged_the_first_twenty_times_then_every_thousandth() {
        let logged: Vec<u64> = (1..=5_000).filter(|&n| worth_logging(n)).collect();
        assert_eq!(logged.len(), 20 + 5);
        assert_eq!(&logged[18..], [19, 20, 1_000, 2_000, 3_000, 4_000, 5_000]);
    }
    use std::net::{IpAddr, Ipv4Addr};
    use std::path::PathBuf;

    /// control/1's backbone server on `local`, its calls handed to the test.
    async fn serve_as_control_1(lab: &Path, local: IpAddr) -> (SocketAddr, mpsc::Receiver<Call>) {
        let (calls_tx, calls) = mpsc::channel(16);
        let api =
            Api { calls: calls_tx, local: false, refusals: Refusals::new("control/1"), watch_delays: Arc::default() };
        let tls = crate::io::tls::ServerTls::new(crate::pki::server(lab, "control/1").unwrap());
        let tcp = tokio::net::TcpListener::bind((local, 0)).await.unwrap();
        let addr = tcp.local_addr().unwrap();
        tokio::spawn(backbone_server(api).serve_with_incoming(crate::io::tls::incoming(tcp, tls)));
        (addr, calls)
    }

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("anyedge-pki-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A Raft frame sent to the server with `tls` (or in the clear); whether it got in.
    async fn inject(addr: SocketAddr, tls: Option<tonic::transport::ClientTlsConfig>) -> bool {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}")).unwrap();
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls).unwrap();
        }
        let Ok(channel) = endpoint.connect_timeout(Duration::from_secs(2)).connect().await else { return false };
        PeerClient::new(channel).raft(RaftFrame { message: b"forged".to_vec() }).await.is_ok()
    }

    #[test]
    fn only_control_nodes_of_the_lab_send_raft_messages_and_only_as_themselves() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
            let (lab, stranger) = (temp("lab"), temp("stranger"));
            let nodes = [
                ("control/1".to_string(), Some(local)),
                ("control/2".to_string(), Some(local)),
                ("pop/paris".to_string(), None),
                ("clb/frankfurt/1".to_string(), None),
            ];
            crate::pki::issue(&lab, &nodes, &[]).unwrap();
            // Another lab's CA issues certificates with the very same names.
            crate::pki::issue(&stranger, &nodes, &[]).unwrap();
            let (addr, mut calls) = serve_as_control_1(&lab, local).await;
            let ca_only = {
                let ca = std::fs::read_to_string(crate::pki::dir(&lab).join("ca.pem")).unwrap();
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                    .domain_name(local.to_string())
            };
            assert!(!inject(addr, None).await, "plaintext is refused");
            assert!(!inject(addr, Some(ca_only)).await, "TLS without a client certificate is refused");
            let foreign = crate::pki::client(&stranger, "control/2", local).unwrap();
            assert!(!inject(addr, Some(foreign)).await, "a certificate from another CA is refused");
            for watcher in ["pop/paris", "clb/frankfurt/1", "ctl"] {
                let tls = crate::pki::client(&lab, watcher, local).unwrap();
                assert!(!inject(addr, Some(tls)).await, "{watcher}'s certificate sends no Raft messages");
            }
            assert!(calls.try_recv().is_err(), "nothing reached the node");
            let member = crate::pki::client(&lab, "control/2", local).unwrap();
            assert!(inject(addr, Some(member)).await, "a control node's certificate gets in");
            assert!(
                matches!(calls.try_recv(), Ok(Call::Raft(2, m)) if m == b"forged"),
                "as control/2, its certificate's id"
            );
            let _ = std::fs::remove_dir_all(&lab);
            let _ = std::fs::remove_dir_all(&stranger);
        });
    }

    #[test]
    fn only_ctl_writes_pops_and_clb_nodes_only_read() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
            let lab = temp("writers");
            let nodes = [
                ("control/1".to_string(), Some(local)),
                ("pop/paris".to_string(), None),
                ("clb/frankfurt/1".to_string(), None),
            ];
            crate::pki::issue(&lab, &nodes, &[]).unwrap();
            let (addr, mut calls) = serve_as_control_1(&lab, local).await;
            // The node's side: a write reaching it is answered as committed at index 7.
            tokio::spawn(async move {
                while let Some(call) = calls.recv().await {
                    match call {
                        Call::Write(_, reply) => {
                            let _ = reply.send(Ok(7));
                        }
                        Call::Routes(reply) => {
                            let _ = reply.send(RoutesReply { index: 7, table_json: "{}".into() });
                        }
                        _ => {}
                    }
                }
            });
            let change = r#"{"op":"unbind","backend":"198.19.20.1:7000"}"#.to_string();
            for (who, writes) in [("pop/paris", false), ("clb/frankfurt/1", false), ("ctl", true)] {
                let tls = crate::pki::client(&lab, who, local).unwrap();
                let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{addr}")).unwrap();
                let channel = endpoint.tls_config(tls).unwrap().connect().await.unwrap();
                let mut client = anyedge_proto::control::control_client::ControlClient::new(channel);
                let written = client.write(WriteRequest { change_json: change.clone() }).await;
                assert_eq!(written.is_ok(), writes, "{who}: {written:?}");
                if let Err(status) = written {
                    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{who}");
                }
                assert!(client.routes(RoutesRequest {}).await.is_ok(), "{who} reads the table");
            }
            let _ = std::fs::remove_dir_all(&lab);
        });
    }

    #[test]
    fn certificates_name_their_node_and_role_with_key_usage_set() {
        let lab = temp("roles");
        let nodes = [("control/3".to_string(), Some(IpAddr::V4(Ipv4Addr::LOCALHOST))), ("pop/tokyo".to_string(), None)];
        crate::pki::issue(&lab, &nodes, &[]).unwrap();
        for (name, role, server) in
            [("control/3", Role::Control(3), true), ("pop/tokyo", Role::Pop, false), ("ctl", Role::Ctl, false)]
        {
            let pem =
                std::fs::read_to_string(crate::pki::dir(&lab).join(format!("{}.pem", crate::layout::sanitize(name))))
                    .unwrap();
            let (_, der) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
            let identity = crate::pki::peer_identity(&der.contents).unwrap();
            assert_eq!(identity, PeerIdentity { name: name.into(), role });
            let (_, cert) = x509_parser::parse_x509_certificate(&der.contents).unwrap();
            let usage = cert.key_usage().unwrap().expect("key usage set").value;
            assert!(usage.digital_signature() && !usage.key_cert_sign(), "{name}: {usage:?}");
            let eku = cert.extended_key_usage().unwrap().expect("extended key usage set").value;
            assert!(eku.client_auth, "{name} dials control nodes");
            assert_eq!(eku.server_auth, server, "{name} serves: {server}");
        }
        let _ = std::fs::remove_dir_all(&lab);
    }
}
