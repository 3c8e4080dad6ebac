//! `anyedge render`: every node's configuration in a directory of its own — what it is
//! (`node.json`), the topology it reads, and its keys and certificates — ready to copy to
//! the host that runs it, where `anyedge node --config DIR` starts it with no lab state.
//! `lab up` renders the same directories into its state directory and starts its nodes
//! from them: one code path.
//!
//! A node's directory holds only what is its own: the CA's certificate, its certificate
//! and key (nodes that speak gRPC), its backbone keys (POPs, CLB nodes, backend hosts,
//! egress nodes) and, on CLB nodes, the server certificates of the VIPs homed in its
//! region. Directories are 0700 and files 0600. The CA's key and the backbone secret that
//! derived every node's keys go to `OUT/ca/` (render a node later with `--ca OUT/ca` and it
//! joins the same deployment); the operator's `ctl` and `client` certificates to
//! `OUT/operator/`. `lab up` keeps neither the CA's key nor the secret.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyedge_topology::Topology;
use serde::{Deserialize, Serialize};

use super::SetupError;
use crate::error::{Doing, SysError};
use crate::layout::{private_dir, sanitize, write_private};
use crate::pki::PkiError;
use crate::plan::{Plan, Role};

/// A rendered node's `node.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The node, named as the topology names it: `pop/paris`, `clb/frankfurt/1`.
    pub node: String,
    /// The topology file, relative to the node's directory.
    pub topology: PathBuf,
    /// SHA-256 of the topology file as rendered: a copy edited since is refused.
    pub topology_sha256: String,
    /// Where the node writes at run time (ready marker, control socket, Raft log, BGP
    /// speaker): a lab's state directory, or the host's (`/var/lib/anyedge/NODE`).
    pub state: PathBuf,
    /// The file's delay, jitter and loss applied by the node (off for benchmarks).
    pub impairments: bool,
    /// SCHED_FIFO (see [`crate::io::realtime`]).
    pub realtime: bool,
    /// Queues a POP reads its TUN device with (absent: one per core).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tun_queues: Option<usize>,
    /// The node's addresses, as the topology places them (for the operator, and checked
    /// against the topology by `--check`).
    pub addresses: Vec<IpAddr>,
    /// The host it runs on (rendered with `--hosts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The namespace `anyedge host up` makes for it on that host: run it there with
    /// `ip netns exec NETNS anyedge node --config DIR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
}

/// What `render` is asked beyond the topology.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// A CA (and backbone secret) kept by an earlier render: `ca.pem`, `ca.key`,
    /// `backbone.secret`. Without it a new one is made and kept in `OUT/ca/`.
    pub ca: Option<PathBuf>,
    /// Each node's run-time directory; `None`: `/var/lib/anyedge/NODE`.
    pub state: Option<PathBuf>,
    pub no_impairments: bool,
    pub realtime: bool,
    pub tun_queues: Option<usize>,
    /// A hosts file placing every node on a host (see [`super::hosts`]).
    pub hosts: Option<PathBuf>,
}

/// The file in a node's directory that says what it is.
pub const NODE_FILE: &str = "node.json";
/// The topology's copy in a node's directory.
pub const TOPOLOGY_FILE: &str = "topology.yaml";
/// A deployment's placement of nodes on hosts (`render --hosts`), beside its topology.
pub const HOSTS_FILE: &str = "hosts.yaml";
/// Where a deployment's run-time state goes on a host by default.
pub const HOST_STATE: &str = "/var/lib/anyedge";

/// A rendered node's directory under `out`.
pub fn node_dir(out: &Path, node: &str) -> PathBuf {
    out.join(sanitize(node))
}

/// The nodes that run a process (clients are the lab's, not a deployment's).
pub fn process_nodes(plan: &Plan) -> Vec<String> {
    plan.nodes.iter().filter(|n| !n.name.starts_with("client/")).map(|n| n.name.clone()).collect()
}

/// `anyedge render FILE --out DIR`: renders every node of `file` into `out`, keeping the
/// CA and the backbone secret in `out/ca` (unless given with `--ca`) and the operator's
/// certificates in `out/operator`. Returns the nodes rendered.
pub fn render(file: &Path, out: &Path, opts: &RenderOptions) -> Result<Vec<String>, SetupError> {
    let t = anyedge_topology::load(file)?;
    let text = std::fs::read_to_string(file).at(file)?;
    let plan = Plan::new(&t);
    // Rendering again over a deployment is how keys are kept (`--ca`); a node of another
    // topology left in DIR would be started, checked and asked for as if it belonged.
    let nodes = process_nodes(&plan);
    if let Ok(entries) = std::fs::read_dir(out) {
        let mut stale: Vec<String> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|d| d.join(NODE_FILE).is_file())
            .filter_map(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .filter(|n| !nodes.iter().any(|node| sanitize(node) == *n))
            .collect();
        stale.sort();
        if !stale.is_empty() {
            return Err(node_config(
                out,
                format!(
                    "holds nodes {} does not have ({}): render into an empty directory",
                    file.display(),
                    stale.join(", ")
                ),
            ));
        }
    }
    crate::layout::private_files();
    private_dir(out)?;
    let algorithm = t.tls.algorithm;
    let (ca, secret) = match &opts.ca {
        Some(dir) => (crate::pki::Ca::load(dir)?.of_algorithm(algorithm, dir)?, load_secret(dir)?),
        None => {
            let (ca, secret) = (
                crate::pki::Ca::generate(algorithm)?,
                anyedge_ccn::BackboneSecret::generate().map_err(PkiError::NoRandomness)?,
            );
            let dir = out.join("ca");
            ca.save(&dir)?;
            save_secret(&dir, &secret)?;
            (ca, secret)
        }
    };
    let placement = match &opts.hosts {
        Some(path) => Some(super::hosts::load(path, &t, &plan)?),
        None => None,
    };
    let operator = out.join("operator");
    let base = file.parent().unwrap_or(Path::new("."));
    issue((&t, base), &plan, &operator, &ca, &secret)?;
    // The deployment's own copy of what every host builds from (`anyedge host up`).
    write_private(&out.join(TOPOLOGY_FILE), text.as_bytes())?;
    if let Some(path) = &opts.hosts {
        let hosts = std::fs::read(path).at(path)?;
        write_private(&out.join(HOSTS_FILE), &hosts)?;
    }
    let state = |node: &str| opts.state.clone().unwrap_or_else(|| Path::new(HOST_STATE).join(sanitize(node)));
    for node in &nodes {
        let host = placement.as_ref().and_then(|p| {
            let ns = plan.node(node)?.ns;
            Some(p.hosts[p.host_of[ns]].name.clone())
        });
        write_node(&t, &plan, &text, (&operator, out), node, (state(node), host), opts)?;
    }
    // The operator keeps the CA's certificate and the tools' identities; node material
    // lives in the node directories only.
    let pki = crate::pki::dir(&operator);
    for entry in std::fs::read_dir(&pki).at(&pki)? {
        let path = entry.at(&pki)?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !matches!(name, "ca.pem" | "ctl.pem" | "ctl.key" | "client.pem" | "client.key") {
            std::fs::remove_file(&path).at(&path)?;
        }
    }
    Ok(nodes)
}

/// Renders a lab's nodes into `state_dir/nodes`, each running in `state_dir`: the lab's
/// own CA (kept in `state_dir/ca`, root's alone, to rotate VIP certificates) and backbone
/// secret (not kept); the full set of certificates stays in `state_dir/pki` for the lab's
/// tools (probe, ctl).
pub fn render_lab(
    (t, base): (&Topology, &Path),
    text: &str,
    plan: &Plan,
    state_dir: &Path,
    opts: &RenderOptions,
) -> Result<(), SetupError> {
    let (ca, secret) = (
        crate::pki::Ca::generate(t.tls.algorithm)?,
        anyedge_ccn::BackboneSecret::generate().map_err(PkiError::NoRandomness)?,
    );
    ca.save(&state_dir.join("ca"))?;
    issue((t, base), plan, state_dir, &ca, &secret)?;
    let out = nodes_dir(state_dir);
    private_dir(&out)?;
    for node in process_nodes(plan) {
        write_node(t, plan, text, (state_dir, &out), &node, (state_dir.to_path_buf(), None), opts)?;
    }
    Ok(())
}

/// `lab reload`: the lab's rendered nodes take the topology `text` (its copy and the
/// SHA-256 and addresses in `node.json`), keeping their keys, certificates and options.
/// The nodes read it at their next SIGHUP.
pub fn rerender_lab(text: &str, plan: &Plan, state_dir: &Path) -> Result<Vec<String>, SetupError> {
    let out = nodes_dir(state_dir);
    let mut done = Vec::new();
    for node in process_nodes(plan) {
        let dir = node_dir(&out, &node);
        let path = dir.join(NODE_FILE);
        let json = std::fs::read_to_string(&path).at(&path)?;
        let mut config: NodeConfig =
            serde_json::from_str(&json).map_err(|source| SetupError::Json { path: path.clone(), source })?;
        config.topology_sha256 = sha256_hex(text.as_bytes());
        config.addresses = node_addresses(plan, &node);
        write_private(&dir.join(&config.topology), text.as_bytes())?;
        let json = serde_json::to_string_pretty(&config)
            .map_err(|source| SetupError::Json { path: path.clone(), source })?
            + "\n";
        write_private(&path, json.as_bytes())?;
        done.push(node);
    }
    Ok(done)
}

/// `lab reload --new-vip-certificates`: fresh VIP server certificates from the lab's CA,
/// into `state_dir/pki` and each CLB node's directory (the VIPs homed in its region). The
/// nodes take them at their next SIGHUP. Returns the nodes given new certificates.
pub fn renew_vip_certificates(
    (t, base): (&Topology, &Path),
    plan: &Plan,
    state_dir: &Path,
) -> Result<Vec<String>, SetupError> {
    let dir = state_dir.join("ca");
    let ca = crate::pki::Ca::load(&dir)?.of_algorithm(t.tls.algorithm, &dir)?;
    crate::pki::issue_vips(state_dir, &ca, &crate::pki::vip_names(t, None))?;
    // Chains of one's own are taken again as the file names them (renewed since, say).
    crate::pki::copy_own_certificates(t, base, state_dir)?;
    let out = nodes_dir(state_dir);
    let mut renewed = Vec::new();
    for node in process_nodes(plan) {
        let vips: Vec<String> = own_files(t, plan, &node).into_iter().filter(|f| f.starts_with("vip-")).collect();
        for name in &vips {
            copy_private(&crate::pki::dir(state_dir).join(name), &crate::pki::dir(&node_dir(&out, &node)).join(name))?;
        }
        if !vips.is_empty() {
            renewed.push(node);
        }
    }
    Ok(renewed)
}

/// `lab reload --new-node-certificates`: a fresh certificate and key from the lab's CA
/// for every node that speaks gRPC (control nodes, CLB nodes, POPs), into
/// `state_dir/pki` and each one's directory. The nodes take them at their next SIGHUP:
/// their gRPC servers offer them to new connections, and their watch and backbone
/// streams present them from their next connection. Returns the nodes given new
/// certificates.
pub fn renew_node_certificates(plan: &Plan, state_dir: &Path) -> Result<Vec<String>, SetupError> {
    let ca = crate::pki::Ca::load(&state_dir.join("ca"))?;
    let nodes = grpc_nodes(plan);
    crate::pki::issue_nodes(state_dir, &ca, &nodes)?;
    let out = nodes_dir(state_dir);
    for (node, _) in &nodes {
        let s = sanitize(node);
        for name in [format!("{s}.pem"), format!("{s}.key")] {
            copy_private(&crate::pki::dir(state_dir).join(&name), &crate::pki::dir(&node_dir(&out, node)).join(&name))?;
        }
    }
    Ok(nodes.into_iter().map(|(n, _)| n).collect())
}

/// `src` copied to `dst`, 0600.
fn copy_private(src: &Path, dst: &Path) -> Result<(), SysError> {
    let bytes = std::fs::read(src).at(src)?;
    write_private(dst, &bytes)
}

/// Where a lab keeps its rendered nodes.
pub fn nodes_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("nodes")
}

/// Every certificate and backbone key the topology's nodes need, into `dir/pki`.
fn issue(
    (t, base): (&Topology, &Path),
    plan: &Plan,
    dir: &Path,
    ca: &crate::pki::Ca,
    secret: &anyedge_ccn::BackboneSecret,
) -> Result<(), SetupError> {
    private_dir(dir)?;
    private_dir(&crate::pki::dir(dir))?;
    crate::pki::issue_backbone_keys_with(dir, secret, t, &backbone_nodes(t, plan))?;
    crate::pki::issue_with(dir, ca, &grpc_nodes(plan), &crate::pki::vip_names(t, None))?;
    // VIPs with chains of their own: checked and kept beside the issued ones.
    Ok(crate::pki::copy_own_certificates(t, base, dir)?)
}

/// Every POP, CLB node, backend host and egress node, with its backbone id (internet
/// hosts hold no keys: the internet is not the backbone).
pub fn backbone_nodes(t: &Topology, plan: &Plan) -> Vec<(anyedge_ccn::NodeId, String)> {
    let hosts = anyedge_topology::nodes::backend_hosts(t);
    let egress = anyedge_topology::nodes::egress_nodes(t);
    plan.nodes
        .iter()
        .filter_map(|n| match plan.namespaces[n.ns].role {
            Role::Pop(p) => Some((anyedge_topology::nodes::pop_node(p), n.name.clone())),
            Role::Clb { region, index } => Some((anyedge_topology::nodes::clb_node(region, index), n.name.clone())),
            Role::Backend { ip, .. } if plan.egress_of(ip).is_none() => {
                hosts.iter().find(|(h, _)| *h == IpAddr::V4(ip)).map(|&(_, id)| (id, n.name.clone()))
            }
            Role::Egress { region, k } => {
                egress.get(k).map(|&(_, e, _)| (anyedge_topology::nodes::egress_node(t, region, e), n.name.clone()))
            }
            _ => None,
        })
        .collect()
}

/// Everything that speaks gRPC on the backbone, with the address its certificate names:
/// control nodes (Raft, watch streams) and CLB nodes (the gRPC backbone) serve, POPs and
/// CLB nodes dial.
fn grpc_nodes(plan: &Plan) -> Vec<(String, Option<IpAddr>)> {
    plan.nodes
        .iter()
        .filter_map(|n| match plan.namespaces[n.ns].role {
            Role::Control(id) => Some((n.name.clone(), plan.control_addr(id).map(Into::into))),
            Role::Clb { region, index } => Some((n.name.clone(), plan.clb_tunnel(region, index).map(|a| a.ip()))),
            Role::Pop(_) => Some((n.name.clone(), None)),
            _ => None,
        })
        .collect()
}

/// The addresses of `node`'s namespace, as the plan gives them.
pub fn node_addresses(plan: &Plan, node: &str) -> Vec<IpAddr> {
    let Some(n) = plan.node(node) else { return Vec::new() };
    let mut out: Vec<IpAddr> = Vec::new();
    for l in &plan.links {
        if l.a == n.ns {
            out.extend([IpAddr::V4(l.a_addr), IpAddr::V6(l.a_addr6)]);
        }
        if l.b == n.ns {
            out.extend([IpAddr::V4(l.b_addr), IpAddr::V6(l.b_addr6)]);
        }
    }
    for p in plan.segments.iter().flat_map(|s| &s.ports).filter(|p| p.ns == n.ns) {
        out.extend([IpAddr::V4(p.addr), IpAddr::V6(p.addr6)]);
    }
    out
}

/// The files of `from`'s `pki/` that are `node`'s own.
fn own_files(t: &Topology, plan: &Plan, node: &str) -> Vec<String> {
    let s = sanitize(node);
    let mut files = vec!["ca.pem".to_string(), format!("{s}.pem"), format!("{s}.key"), format!("{s}.keys")];
    if let Some(n) = plan.node(node)
        && let Role::Clb { region, .. } = plan.namespaces[n.ns].role
    {
        for vip in t.vips.iter().filter(|v| v.home == region) {
            let own = (0..vip.certificates.len()).map(|k| crate::pki::vip_own_path(Path::new(""), &vip.name, k));
            let issued = std::iter::once(crate::pki::vip_cert_path(Path::new(""), &vip.name));
            let certs: Vec<PathBuf> = if vip.certificates.is_empty() { issued.collect() } else { own.collect() };
            for cert in certs {
                let cert = cert.file_name().and_then(|f| f.to_str()).unwrap_or_default().to_string();
                files.push(cert.replace(".pem", ".key"));
                files.push(cert);
            }
        }
    }
    files
}

fn write_node(
    t: &Topology,
    plan: &Plan,
    text: &str,
    (from, out): (&Path, &Path),
    node: &str,
    (state, host): (PathBuf, Option<String>),
    opts: &RenderOptions,
) -> Result<(), SetupError> {
    let dir = node_dir(out, node);
    private_dir(&dir)?;
    let pki = crate::pki::dir(&dir);
    private_dir(&pki)?;
    for name in own_files(t, plan, node) {
        let src = crate::pki::dir(from).join(&name);
        if src.exists() {
            copy_private(&src, &pki.join(&name))?;
        }
    }
    write_private(&dir.join(TOPOLOGY_FILE), text.as_bytes())?;
    let config = NodeConfig {
        node: node.to_string(),
        topology: PathBuf::from(TOPOLOGY_FILE),
        topology_sha256: sha256_hex(text.as_bytes()),
        state,
        impairments: !opts.no_impairments,
        realtime: opts.realtime,
        tun_queues: opts.tun_queues,
        addresses: node_addresses(plan, node),
        netns: host.as_ref().and_then(|_| plan.node(node)).map(|n| plan.namespaces[n.ns].name.clone()),
        host,
    };
    let path = dir.join(NODE_FILE);
    let json =
        serde_json::to_string_pretty(&config).map_err(|source| SetupError::Json { path: path.clone(), source })?;
    Ok(write_private(&path, (json + "\n").as_bytes())?)
}

/// A node's rendered directory (or a deployment's) at `path` that is not what it must be.
fn node_config(path: &Path, why: impl Into<String>) -> SetupError {
    SetupError::NodeConfig { path: path.to_path_buf(), why: why.into() }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    crate::pki::hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

const SECRET_FILE: &str = "backbone.secret";

fn save_secret(dir: &Path, secret: &anyedge_ccn::BackboneSecret) -> Result<(), SysError> {
    write_private(&dir.join(SECRET_FILE), format!("{}\n", crate::pki::hex(secret.bytes())).as_bytes())
}

fn load_secret(dir: &Path) -> Result<anyedge_ccn::BackboneSecret, SetupError> {
    let path = dir.join(SECRET_FILE);
    let text = std::fs::read_to_string(&path).at(&path)?;
    crate::pki::unhex(text.trim())
        .map(anyedge_ccn::BackboneSecret::from_bytes)
        .ok_or_else(|| SysError::bad_file(&path, "not 64 hex digits").into())
}

/// A rendered node, read and checked: what `anyedge node --config DIR` runs and `--check`
/// validates.
pub struct Rendered {
    pub dir: PathBuf,
    pub config: NodeConfig,
    pub topology: Topology,
    pub plan: Plan,
}

/// Reads the node rendered in `dir` and checks everything it will need before it starts:
/// its `node.json`, the topology (unchanged since it was rendered, the node in it, at the
/// addresses rendered), and its keys and certificates (present, parsed, issued by its CA
/// to it, its backbone keys for exactly the peers the topology gives it).
pub fn load_node(dir: &Path) -> Result<Rendered, SetupError> {
    use crate::layout::{FileTrust, check_node_dir, read_node_file};
    check_node_dir(dir)?;
    let pki = crate::pki::dir(dir);
    if pki.exists() {
        check_node_dir(&pki)?;
    }
    let path = dir.join(NODE_FILE);
    let json = read_node_file(&path, FileTrust::Config)?;
    let config: NodeConfig =
        serde_json::from_str(&json).map_err(|source| SetupError::Json { path: path.clone(), source })?;
    let plain_name = config.topology.components().count() == 1
        && matches!(config.topology.components().next(), Some(std::path::Component::Normal(_)));
    if !plain_name {
        return Err(node_config(
            &path,
            format!("topology `{}` is not a file name in the node's directory", config.topology.display()),
        ));
    }
    let tpath = dir.join(&config.topology);
    let text = read_node_file(&tpath, FileTrust::Config)?;
    let sha = sha256_hex(text.as_bytes());
    if sha != config.topology_sha256 {
        return Err(node_config(
            &tpath,
            format!(
                "changed since it was rendered (sha256 {sha}, {} says {}): render the deployment again",
                path.display(),
                config.topology_sha256
            ),
        ));
    }
    let topology = anyedge_topology::parse_str(&tpath.display().to_string(), &text)?;
    let plan = Plan::new(&topology);
    let n = plan
        .node(&config.node)
        .ok_or_else(|| node_config(&path, format!("node `{}` is not in {}", config.node, tpath.display())))?;
    if n.name.starts_with("client/") {
        return Err(node_config(&path, format!("`{}` is a lab client, not a node that runs", config.node)));
    }
    let placed = node_addresses(&plan, &config.node);
    if placed != config.addresses {
        return Err(node_config(
            &path,
            format!(
                "addresses {:?} are not where the topology places `{}` ({placed:?}): rendered by another version? render again",
                config.addresses, config.node
            ),
        ));
    }
    if let Some(why) = crate::layout::state_dir_refused(&config.state) {
        return Err(node_config(&path, why));
    }
    if let Some(q) = config.tun_queues {
        crate::io::tunq::check_count(q)
            .map_err(|source| SetupError::Queues { at: format!("{}: tun_queues", path.display()), source })?;
    }
    let r = Rendered { dir: dir.to_path_buf(), config, topology, plan };
    check_keys(&r)?;
    Ok(r)
}

/// The node's backbone keys and certificates, as [`load_node`] checks them.
fn check_keys(r: &Rendered) -> Result<(), SetupError> {
    let node = r.config.node.as_str();
    if let Some((id, _)) = backbone_nodes(&r.topology, &r.plan).into_iter().find(|(_, n)| n == node) {
        let keys = crate::pki::backbone_keys(&r.dir, node)?;
        let path = crate::pki::keys_path(&r.dir, node);
        // Which peers the topology gives the node does not depend on the secret.
        let want = anyedge_topology::nodes::backbone_auth(
            &r.topology,
            &anyedge_ccn::BackboneSecret::from_bytes([0; 32]),
            id,
            0,
        );
        let mut have: Vec<_> = keys.keys.iter().map(|k| k.peer).collect();
        let mut need: Vec<_> = want.keys.iter().map(|k| k.peer).collect();
        have.sort();
        need.sort();
        if have != need {
            let missing: Vec<String> = need.iter().filter(|p| !have.contains(p)).map(|p| p.to_string()).collect();
            let extra: Vec<String> = have.iter().filter(|p| !need.contains(p)).map(|p| p.to_string()).collect();
            return Err(node_config(
                &path,
                format!("keys for the wrong peers (missing: {missing:?}; not the topology's: {extra:?})",),
            ));
        }
        let regions: Vec<u16> = keys.cid_keys.iter().map(|(r, _)| *r).collect();
        let want_regions: Vec<u16> = want.cid_keys.iter().map(|(r, _)| *r).collect();
        if regions != want_regions {
            return Err(node_config(
                &path,
                format!("connection-ID keys for regions {regions:?}, not {want_regions:?}",),
            ));
        }
    }
    if grpc_nodes(&r.plan).iter().any(|(n, _)| n == node) {
        crate::pki::check_identity(&r.dir, node)?;
    }
    if let Some(n) = r.plan.node(node)
        && let Role::Clb { region, .. } = r.plan.namespaces[n.ns].role
    {
        crate::pki::vip_identities(&r.dir, &r.topology, region)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn topology() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies/control.yaml")
    }

    /// A fresh directory under the system's temporary one, removed when dropped.
    struct Scratch(PathBuf);
    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("ae-render-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            Scratch(dir)
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    fn render_to(out: &Path) -> Vec<String> {
        let opts = RenderOptions { state: Some(PathBuf::from("/var/lib/anyedge-test")), ..Default::default() };
        render(&topology(), out, &opts).unwrap()
    }

    #[test]
    fn every_node_gets_a_private_directory_holding_its_own_keys_and_no_one_elses() {
        let tmp = Scratch::new("own");
        let nodes = render_to(&tmp.0);
        assert!(nodes.iter().any(|n| n == "pop/paris") && nodes.iter().any(|n| n == "control/1"), "{nodes:?}");
        assert!(nodes.iter().any(|n| n.starts_with("clb/")) && nodes.iter().any(|n| n.starts_with("backend/")));
        assert!(!nodes.iter().any(|n| n.starts_with("client/")), "clients are the lab's: {nodes:?}");
        for node in &nodes {
            let dir = node_dir(&tmp.0, node);
            assert_eq!(mode(&dir), 0o700, "{}", dir.display());
            assert_eq!(mode(&dir.join("pki")), 0o700, "{node}");
            for f in [NODE_FILE, TOPOLOGY_FILE] {
                assert_eq!(mode(&dir.join(f)), 0o600, "{node}: {f}");
            }
            let s = sanitize(node);
            for f in files(&dir.join("pki")) {
                assert_eq!(mode(&dir.join("pki").join(&f)), 0o600, "{node}: {f}");
                let own = f == "ca.pem"
                    || f.starts_with(&format!("{s}."))
                    || (node.starts_with("clb/") && f.starts_with("vip-"));
                assert!(own, "{node} holds {f}, which is not its own");
            }
            let r = load_node(&dir).unwrap_or_else(|e| panic!("{node}: {e}"));
            assert_eq!(r.config.node, *node);
            assert_eq!(r.config.state, PathBuf::from("/var/lib/anyedge-test"));
            assert!(!r.config.addresses.is_empty(), "{node} has addresses");
        }
        let pop = files(&node_dir(&tmp.0, "pop/paris").join("pki"));
        assert_eq!(pop, ["ca.pem", "pop-paris.key", "pop-paris.keys", "pop-paris.pem"]);
        let clb = nodes.iter().find(|n| n.starts_with("clb/")).unwrap();
        assert!(files(&node_dir(&tmp.0, clb).join("pki")).iter().any(|f| f.starts_with("vip-")), "{clb} has its VIPs");
        // The deployment's secrets stay with the operator, and nothing else does.
        assert_eq!(files(&tmp.0.join("ca")), ["backbone.secret", "ca.key", "ca.pem"]);
        assert_eq!(mode(&tmp.0.join("ca/ca.key")), 0o600);
        assert_eq!(files(&tmp.0.join("operator/pki")), ["ca.pem", "client.key", "client.pem", "ctl.key", "ctl.pem"]);
    }

    #[test]
    fn a_render_with_the_kept_ca_joins_the_earlier_one() {
        let (a, b) = (Scratch::new("ca-a"), Scratch::new("ca-b"));
        render_to(&a.0);
        let opts = RenderOptions { ca: Some(a.0.join("ca")), ..Default::default() };
        render(&topology(), &b.0, &opts).unwrap();
        let read = |root: &Path, node: &str, f: &str| std::fs::read(node_dir(root, node).join("pki").join(f)).unwrap();
        assert_eq!(read(&a.0, "pop/paris", "pop-paris.keys"), read(&b.0, "pop/paris", "pop-paris.keys"), "same keys");
        assert_eq!(read(&a.0, "pop/paris", "ca.pem"), read(&b.0, "pop/paris", "ca.pem"), "same CA");
        assert!(!b.0.join("ca").exists(), "a CA given is not copied");
        // Over a deployment of another topology: refused, naming the nodes that do not belong.
        let small = Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies/small.yaml");
        let e = render(&small, &b.0, &RenderOptions::default()).unwrap_err().to_string();
        assert!(
            e.contains("holds nodes") && e.contains("control-1") && e.contains("render into an empty directory"),
            "{e}"
        );
        assert_eq!(
            load_node(&node_dir(&b.0, "pop/paris")).unwrap().config.state,
            Path::new(HOST_STATE).join("pop-paris")
        );
        // A CA whose key is not its own is refused, naming the file.
        let c = Scratch::new("ca-c");
        render_to(&c.0);
        std::fs::copy(c.0.join("ca/ca.key"), a.0.join("ca/ca.key")).unwrap();
        let e = render(&topology(), &b.0, &opts).unwrap_err();
        assert!(matches!(e, SetupError::Pki(crate::pki::PkiError::Refused { .. })), "{e}");
        assert!(e.to_string().contains("ca.key: the key is not the certificate's"), "{e}");
    }

    #[test]
    fn check_names_what_is_wrong_with_a_rendered_directory() {
        let tmp = Scratch::new("check");
        render_to(&tmp.0);
        let pop = node_dir(&tmp.0, "pop/paris");
        let expect = |dir: &Path, want: &str| {
            let e = load_node(dir).err().unwrap_or_else(|| panic!("{want}: accepted")).to_string();
            assert!(e.contains(want), "want `{want}` in: {e}");
        };
        // The topology edited after rendering.
        let topo = pop.join(TOPOLOGY_FILE);
        let text = std::fs::read_to_string(&topo).unwrap();
        std::fs::write(&topo, text.replace("seed:", "seed: 7 #")).unwrap();
        expect(&pop, "topology.yaml: changed since it was rendered");
        std::fs::write(&topo, &text).unwrap();
        load_node(&pop).unwrap();
        // Another node's keys in its place.
        let keys = pop.join("pki/pop-paris.keys");
        let own = std::fs::read(&keys).unwrap();
        let clb = std::fs::read_dir(&tmp.0)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("clb-"))
            .unwrap();
        let other = std::fs::read_dir(clb.join("pki")).unwrap().map(|e| e.unwrap().path());
        let other = other.into_iter().find(|p| p.extension().is_some_and(|x| x == "keys")).unwrap();
        std::fs::copy(&other, &keys).unwrap();
        expect(&pop, "pop-paris.keys: keys for the wrong peers");
        std::fs::remove_file(&keys).unwrap();
        expect(&pop, "pop-paris.keys: No such file");
        std::fs::write(&keys, &own).unwrap();
        let chmod = |path: &Path, mode: u32| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        chmod(&keys, 0o644);
        expect(&pop, "pop-paris.keys: mode 644: a secret must be its owner's alone");
        chmod(&keys, 0o600);
        // A key that is not the certificate's.
        let key = pop.join("pki/pop-paris.key");
        let own_key = std::fs::read(&key).unwrap();
        std::fs::copy(node_dir(&tmp.0, "control/1").join("pki/control-1.key"), &key).unwrap();
        expect(&pop, "pop-paris.key: not the key of");
        std::fs::write(&key, &own_key).unwrap();
        // node.json: an unknown field, a bad queue count, a relative state directory, a
        // node the topology does not have.
        let json = pop.join(NODE_FILE);
        let good = std::fs::read_to_string(&json).unwrap();
        for (from, to, want) in [
            ("\"realtime\"", "\"real_time\"", "unknown field `real_time`"),
            ("\"impairments\": true", "\"impairments\": true, \"tun_queues\": 0", "tun_queues: 0 is not a queue count"),
            (
                "\"state\": \"/var/lib/anyedge-test\"",
                "\"state\": \"var/lib\"",
                "state `var/lib` is not an absolute path",
            ),
            ("\"node\": \"pop/paris\"", "\"node\": \"pop/atlantis\"", "node `pop/atlantis` is not in"),
        ] {
            assert!(good.contains(from), "{from}");
            std::fs::write(&json, good.replace(from, to)).unwrap();
            expect(&pop, want);
            expect(&pop, "node.json");
        }
        std::fs::write(&json, &good).unwrap();
        load_node(&pop).unwrap();
        a_node_refuses_files_and_directories_others_could_change(&pop, &good, expect);
    }

    /// Files and directories of a node's that someone else could change or that never
    /// end, and state directories that are the system's, are refused with the reason.
    fn a_node_refuses_files_and_directories_others_could_change(pop: &Path, good: &str, expect: impl Fn(&Path, &str)) {
        use std::os::unix::fs::PermissionsExt;
        let chmod =
            |path: &Path, mode: u32| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        let json = pop.join(NODE_FILE);
        for (state, want) in [
            ("/etc", "state `/etc` is a system directory"),
            ("/", "state `/` is a system directory"),
            ("/etc/anyedge", "state `/etc/anyedge` is inside a system directory"),
            ("/proc/self", "state `/proc/self` is inside a system directory"),
            ("/var/lib/../../etc", "has `..` in it"),
        ] {
            std::fs::write(&json, good.replace("/var/lib/anyedge-test", state)).unwrap();
            expect(pop, want);
        }
        std::fs::write(&json, good.replace("\"topology.yaml\"", "\"../../etc/passwd\"")).unwrap();
        expect(pop, "topology `../../etc/passwd` is not a file name");
        std::fs::write(&json, good).unwrap();
        chmod(&json, 0o666);
        expect(pop, "node.json: mode 666: writable by group or others");
        chmod(&json, 0o600);
        chmod(pop, 0o777);
        expect(pop, "mode 777: writable by group or others");
        chmod(pop, 0o700);
        chmod(&pop.join("pki"), 0o757);
        expect(pop, "pki: mode 757");
        chmod(&pop.join("pki"), 0o700);
        // A topology that never ends, or never comes: refused before a byte is read.
        let topo = pop.join(TOPOLOGY_FILE);
        let text = std::fs::read(&topo).unwrap();
        std::fs::remove_file(&topo).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &topo).unwrap();
        expect(pop, "topology.yaml: not a regular file");
        std::fs::remove_file(&topo).unwrap();
        let fifo = std::ffi::CString::new(topo.to_string_lossy().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path we own.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        expect(pop, "topology.yaml: not a regular file");
        std::fs::remove_file(&topo).unwrap();
        crate::layout::write_private(&topo, &text).unwrap();
        // Someone else's keys (only root can hand a file to another user).
        if unsafe { libc::geteuid() } == 0 {
            let keys = pop.join("pki/pop-paris.keys");
            std::os::unix::fs::chown(&keys, Some(54_321), None).unwrap();
            expect(pop, "pop-paris.keys: owned by uid 54321");
            std::os::unix::fs::chown(&keys, Some(0), None).unwrap();
        }
        load_node(pop).unwrap();
    }
}
