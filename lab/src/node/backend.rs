//! A backend host in the lab: takes inner packets only sealed by a CLB node of a region
//! that binds it (dropped and counted otherwise), filters them through the security
//! groups bound to it, hands them to its kernel through its TUN device, and seals what
//! its kernel answers for the CLB node the client's packets came through. A host away
//! from its region (another region, an IDC) or on the internet behind an egress node
//! delays both ways as the simulator's links do (`HostLinks`).

use crate::error::Doing;
use crate::node::NodeError;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyedge_ccn::{ComponentRng, Keyring, Link, NodeId};
use anyedge_proto::inner;
use anyedge_region::security::{Firewall, Verdict};
use anyedge_topology::{App, Site, Topology};
use tokio::net::{TcpListener, UdpSocket};

use crate::io::batch::BatchSocket;
use crate::io::shaper::Shaper;
use crate::io::timer::PreciseTimer;
use crate::io::tunq::{Framing, take};
use crate::layout::{BACKEND_PORT, mark_ready};
use crate::node::drops::{Drops, Way};
use crate::node::forwarder::auth_from_now;
use crate::plan::{Plan, PlanGap, REGION_NET, TUN_NAME};
use anyedge_proto::offload;

/// Largest read a host makes: a super-packet behind its virtio-net header.
const MTU_BUF: usize = crate::io::tunq::READ_MAX;

/// Where a host's packet goes once its link delivers it.
enum HostDest {
    /// Into the host's kernel (a super-packet of this many bytes per segment, or 0).
    Tun(u16),
    /// Back out of the tunnel socket, to a CLB node or the egress node.
    Tunnel(SocketAddr),
}

/// The links between a host and the region that binds it, per region and direction
/// (0: toward the host, 1: from it), as the simulator has them: over the backbone for a
/// host in another region or an IDC, one internet hop for a host behind an egress node,
/// none for a host in its own region.
struct HostLinks {
    links: HashMap<(u16, usize), Link>,
}

impl HostLinks {
    fn new(t: &Topology, ip: Ipv4Addr, internet: bool) -> HostLinks {
        let mut links = HashMap::new();
        let label = |region: usize, dir: usize| format!("lab/host/{region}/{ip}/{dir}");
        let sites = t
            .regions
            .iter()
            .enumerate()
            .flat_map(|(r, region)| region.backend_groups.iter().flat_map(|g| &g.backends).map(move |b| (r, b)));
        for (r, b) in sites.filter(|(_, b)| b.addr.ip() == IpAddr::V4(ip)) {
            let model = match b.site {
                Site::Local => continue,
                Site::Region(s) => {
                    anyedge_topology::nodes::backbone_link(t, t.regions[r].location, t.regions[s].location)
                }
                Site::Idc(i) => anyedge_topology::nodes::backbone_link(t, t.regions[r].location, t.idcs[i].location),
                Site::Internet(_) => anyedge_topology::nodes::internet_hop(t),
            };
            // An internet host's packets all go by its egress node: one pair of links.
            let region = if internet { 0 } else { r as u16 };
            for dir in 0..2 {
                links
                    .entry((region, dir))
                    .or_insert_with(|| Link::new(model, ComponentRng::new(t.seed, &label(r, dir))));
            }
        }
        HostLinks { links }
    }

    fn get(&mut self, region: u16, dir: usize) -> Option<&mut Link> {
        self.links.get_mut(&(region, dir))
    }
}

/// One backend host's state: its sockets, keys, filters, links and the way back of
/// each client's packets.
struct BackendDriver {
    /// Its TUN device with offloads: read here, written through `writer`.
    tun: tun::AsyncDevice,
    writer: crate::io::tunq::Writers,
    keyring: Keyring,
    /// An internet host's egress node: it takes plain packets from there only.
    internet: Option<SocketAddr>,
    clbs: HashMap<IpAddr, NodeId>,
    firewall: Option<Firewall>,
    toa: crate::node::servers::ToaSeen,
    /// Replies its kernel fragmented, put back together (bounded).
    fragments: anyedge_proto::reassembly::Reassembler,
    /// Client endpoint → the CLB node that last forwarded its packets (the way back).
    via: HashMap<(IpAddr, u16), (SocketAddr, NodeId)>,
    links: HostLinks,
    shaper: Shaper<HostDest>,
    /// Wakes the host when the shaper's next packet is due, to the microsecond.
    shaper_timer: PreciseTimer,
    drops: Drops,
}

pub async fn run(
    t: &Topology,
    plan: &Plan,
    ip: Ipv4Addr,
    impair: bool,
    ready: &Path,
    (keys, drops): (anyedge_ccn::AuthConfig, Drops),
) -> Result<(), NodeError> {
    let (mut host, mut sock) = BackendDriver::new(t, plan, ip, impair, keys, drops).await?;
    serve_ports(t, plan, ip, host.toa.clone()).await?;
    mark_ready(ready)?;
    host.run(&mut sock).await
}

/// The host's servers on every port bound to it as `app: builtin`: UDP echo, TCP and
/// HTTP. A port bound as `app: external` is the user's: nothing of ours listens there.
async fn serve_ports(
    t: &Topology,
    plan: &Plan,
    ip: Ipv4Addr,
    toa: crate::node::servers::ToaSeen,
) -> Result<(), NodeError> {
    let mut ports: Vec<u16> = t
        .regions
        .iter()
        .flat_map(|r| &r.backend_groups)
        .flat_map(|g| &g.backends)
        .filter(|b| b.addr.ip() == IpAddr::V4(ip) && b.app == App::Builtin)
        .map(|b| b.addr.port())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    let direct = plan.backend_direct_addr(ip).ok_or(PlanGap("backend without a region address"))?;
    let proxies = Arc::new(anyedge_topology::nodes::clb_proxy_addresses(t));
    for &port in &ports {
        // On every address of the host: the backend address (through the CLB) and its
        // own region address (the direct path). UDP answers from the address it was asked
        // on: one socket per address.
        let addr = SocketAddr::new(IpAddr::V4(ip), port);
        for local in [addr, SocketAddr::new(IpAddr::V4(direct), port)] {
            let udp = Arc::new(UdpSocket::bind(local).await.doing(|| format!("bind udp {local}"))?);
            tokio::spawn(crate::node::servers::udp_echo(udp, addr));
        }
        let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
        let tcp = TcpListener::bind(any).await.doing(|| format!("bind tcp {any}"))?;
        tokio::spawn(crate::node::servers::tcp_server(tcp, addr, toa.clone(), proxies.clone()));
    }
    Ok(())
}

impl BackendDriver {
    async fn new(
        t: &Topology,
        plan: &Plan,
        ip: Ipv4Addr,
        impair: bool,
        keys: anyedge_ccn::AuthConfig,
        drops: Drops,
    ) -> Result<(BackendDriver, BatchSocket), NodeError> {
        let fds = crate::io::tunq::attach(TUN_NAME, 1, Framing::Offloads)?;
        let writer = crate::io::tunq::Writers::new(&fds, Framing::Offloads)?;
        let tun = crate::io::tunq::into_async(TUN_NAME, fds.into_iter().next().ok_or(PlanGap("no TUN queue"))?)?;
        let bind = plan.backend_tunnel(ip).ok_or(PlanGap("backend without a region address"))?;
        // Batched both ways; an envelope of a super-packet comes and goes in pieces.
        let mut sock = BatchSocket::bind(bind).await?;
        sock.count_into(drops.backbone_losses());
        let me = anyedge_topology::nodes::backend_hosts(t)
            .into_iter()
            .find(|(h, _)| *h == IpAddr::V4(ip))
            .map(|(_, id)| id)
            .ok_or(PlanGap("backend host without a backbone id"))?;
        let internet = match plan.egress_of(ip) {
            Some(k) => Some(plan.egress_tunnel(k).ok_or(PlanGap("egress node without a region address"))?),
            None => None,
        };
        // Security groups bound to this instance, as the simulator applies them.
        let groups = anyedge_topology::nodes::backend_security_groups(t, IpAddr::V4(ip));
        let host = BackendDriver {
            tun,
            writer,
            keyring: auth_from_now(keys)?.keyring(me, 0),
            internet,
            clbs: clb_ids(t, plan),
            firewall: (!groups.is_empty()).then(|| Firewall::new(groups)),
            toa: crate::node::servers::ToaSeen::default(),
            fragments: Default::default(),
            via: HashMap::new(),
            links: HostLinks::new(t, ip, internet.is_some()),
            shaper: Shaper::new(Instant::now(), impair),
            shaper_timer: PreciseTimer::new()?,
            drops,
        };
        Ok((host, sock))
    }

    /// Selects and dispatches; what a wake-up made due leaves at its end.
    async fn run(&mut self, sock: &mut BatchSocket) -> Result<(), NodeError> {
        let mut tbuf = vec![0u8; MTU_BUF];
        loop {
            let wake = self.shaper.wake_at();
            let since = tokio::select! {
                r = sock.recv() => {
                    let since = std::time::Instant::now();
                    r.doing(|| "the tunnel socket".into())?;
                    let arrived = sock.received_ns(self.shaper.start());
                    for (from, datagram) in sock.datagrams() {
                        self.on_tunnel(from, datagram, arrived);
                    }
                    since
                }
                r = self.tun.recv(&mut tbuf) => {
                    let since = std::time::Instant::now();
                    let n = r.doing(|| "the TUN device".into())?;
                    // A TUN device keeps no receive time: the read's is the closest.
                    let arrived = self.shaper.now();
                    self.drops.packet_in();
                    match take(&mut tbuf[..n], Framing::Offloads) {
                        Ok((start, segment)) => self.on_kernel(&tbuf[start..n], segment, arrived),
                        Err(e) => self.drops.count(Err(anyedge_region::ClbDrop::from(e))),
                    }
                    since
                }
                _ = self.shaper_timer.wait_until(wake) => std::time::Instant::now(),
            };
            self.transmit(sock, since).await;
        }
    }

    /// A datagram on the tunnel socket: sealed by a CLB node, or plain from the egress.
    fn on_tunnel(&mut self, from: SocketAddr, datagram: &[u8], arrived_ns: u64) {
        self.drops.packet_in();
        let (clb, packet) = match self.internet {
            Some(egress) if from == egress => (None, datagram),
            Some(_) => {
                self.drops.count(Err(anyedge_region::gateway::GatewayDrop::NotCarried));
                return;
            }
            None => match self.keyring.open(anyedge_proto::seal::Kind::Backend, datagram) {
                Ok((clb @ NodeId::Clb { .. }, packet)) => (Some(clb), packet),
                Ok(_) => return,
                Err(e) => {
                    self.drops.count(Err(e));
                    return;
                }
            },
        };
        // A super-packet comes behind the shim that says where its kernel is to cut it.
        let (segment, packet) = match clb.map_or(Ok((0, packet)), |_| offload::unshim(packet)) {
            Ok(unshimmed) => unshimmed,
            Err(e) => {
                self.drops.count(Err(anyedge_region::ClbDrop::from(e)));
                return;
            }
        };
        let Ok(info) = inner::parse(packet) else { return };
        if let Some(fw) = self.firewall.as_mut()
            && fw.inbound(&info.key) == Verdict::Drop
        {
            self.drops.count(Err(anyedge_region::ClbDrop::Denied));
            self.drops.set_denied(&fw.explain_drop(&info.key));
            return;
        }
        let region = match clb {
            Some(clb @ NodeId::Clb { region, .. }) => {
                self.via.insert((info.key.src, info.key.src_port), (from, clb));
                region
            }
            _ => 0,
        };
        self.toa.note(packet);
        let flow = u64::from(info.key.flow_hash());
        match self.links.get(region, 0) {
            Some(link) => self.shaper.push(link, flow, HostDest::Tun(segment), packet.to_vec(), arrived_ns),
            None => self.shaper.pass(HostDest::Tun(segment), packet.to_vec(), arrived_ns),
        }
    }

    /// What the host's kernel sends (a super-packet of `segment` bytes per segment, or
    /// 0): out through the egress node, or sealed back to the CLB node its client's
    /// packets came through.
    fn on_kernel(&mut self, packet: &[u8], segment: u16, arrived_ns: u64) {
        if segment > 0 {
            // To the internet as the segments it stands for; to a CLB node in as few
            // envelopes as carry it.
            let parts = match self.internet {
                Some(_) => offload::cut(packet, usize::from(segment)).map(|p| (p, 0)),
                None if packet.len() > offload::SUPER_PACKET_MAX => {
                    offload::fit(packet, segment, offload::SUPER_PACKET_MAX).map(|p| (p, segment))
                }
                None => return self.leave_kernel(packet, segment, arrived_ns),
            };
            match parts {
                Ok((parts, segment)) => parts.iter().for_each(|p| self.leave_kernel(p, segment, arrived_ns)),
                Err(e) => self.drops.count(Err(anyedge_region::ClbDrop::from(e))),
            }
            return;
        }
        // A reply larger than the TUN device's MTU comes out in fragments: whole again
        // before it goes (the CLB and the POP route it by its ports).
        let whole;
        let packet = if anyedge_proto::reassembly::is_fragment(packet) {
            match self.fragments.push(arrived_ns, packet) {
                Some(p) => {
                    whole = p;
                    &whole[..]
                }
                None => return,
            }
        } else {
            packet
        };
        self.leave_kernel(packet, 0, arrived_ns);
    }

    /// One whole packet (or super-packet) from the host's kernel, onto its way out.
    fn leave_kernel(&mut self, packet: &[u8], segment: u16, arrived_ns: u64) {
        // What its kernel sends on its own (IPv6 neighbour discovery) stays here.
        let Ok(info) = inner::parse(packet) else { return };
        let flow = u64::from(info.key.flow_hash());
        let (to, region, bytes) = match self.internet {
            // Everything an internet host sends goes out through its egress node.
            Some(egress) => (egress, 0, packet.to_vec()),
            None => {
                let to = self.via.get(&(info.key.dst, info.key.dst_port)).copied().or_else(|| {
                    let id = self.clbs.get(&info.key.dst).copied()?;
                    in_region_net(info.key.dst).then(|| (SocketAddr::new(info.key.dst, BACKEND_PORT), id))
                });
                let Some((to, clb)) = to else {
                    tracing::debug!("no way back for {:?}", info.key);
                    return;
                };
                let NodeId::Clb { region, .. } = clb else { return };
                let kind = anyedge_proto::seal::Kind::Backend;
                let sealed = match offload::shim(segment) {
                    Some(shim) => self.keyring.seal_parts(clb, kind, &shim, packet),
                    None => self.keyring.seal(clb, kind, packet),
                };
                let Some(sealed) = sealed else { return };
                (to, region, sealed)
            }
        };
        match self.links.get(region, 1) {
            Some(link) => self.shaper.push(link, flow, HostDest::Tunnel(to), bytes, arrived_ns),
            None => self.shaper.pass(HostDest::Tunnel(to), bytes, arrived_ns),
        }
    }

    /// Sends what is due: into the kernel or out of the tunnel; each packet's time at the
    /// tunnel end since the wake-up at `since` is recorded.
    async fn transmit(&mut self, sock: &mut BatchSocket, since: std::time::Instant) {
        let due = if self.shaper.wake_at().is_some_and(|at| at <= Instant::now()) {
            self.shaper.due()
        } else {
            self.shaper.due_now()
        };
        let mut passed = [0u64; 2];
        for (dest, mut bytes, _) in due {
            self.drops.packet_out();
            let _ = match dest {
                HostDest::Tun(segment) => {
                    passed[Way::Request as usize] += 1;
                    self.writer.write(0, &mut bytes, segment)
                }
                HostDest::Tunnel(to) => {
                    passed[Way::Reply as usize] += 1;
                    sock.queue(to, bytes);
                    Ok(0)
                }
            };
        }
        sock.flush().await;
        self.drops.left(Way::Request, since, passed[0]);
        self.drops.left(Way::Reply, since, passed[1]);
    }
}

fn in_region_net(ip: IpAddr) -> bool {
    let IpAddr::V4(a) = ip else { return false };
    let (net, prefix) = REGION_NET;
    u32::from(a) >> (32 - prefix) == u32::from(net) >> (32 - prefix)
}

/// The backbone id of every CLB node, by each address it speaks to backends from.
fn clb_ids(t: &Topology, plan: &Plan) -> HashMap<IpAddr, NodeId> {
    let mut ids = HashMap::new();
    for (r, region) in t.regions.iter().enumerate() {
        for i in 0..usize::from(region.clb_nodes) {
            let id = anyedge_topology::nodes::clb_node(r, i);
            ids.insert(IpAddr::V4(plan.clb_inner_addr(r, i)), id);
            if let Some(a) = plan.clb_region_addr(r, i) {
                ids.insert(IpAddr::V4(a), id);
            }
        }
    }
    ids
}
