//! Mutual TLS for the lab's control plane: at `lab up` a private CA (rcgen; its key, and
//! the VIP certificates it issues, of the topology's `tls: { algorithm }`, ECDSA P-256 by
//! default, what browsers verify) issues one Ed25519 certificate per node that speaks gRPC on the backbone — control nodes
//! (their backbone address as SAN), CLB nodes (the gRPC backbone's servers, their tunnel
//! address as SAN), POPs and `ctl`. Each names its node (common name `control/2`,
//! `pop/paris`, `clb/frankfurt/1`, `ctl`) and role (organizational unit), with key usage
//! and extended key usage set (control and CLB nodes serve and dial, the rest only dial). Control nodes accept only peers that present a
//! certificate from that CA and then check the role in it ([`PeerIdentity`]); the CA's
//! key is not kept, so no certificate can be minted for a stranger later.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyedge_region::identity::{KeyAlgorithm, shape};
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose, SanType};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::error::{Doing, SysError};
use crate::layout::sanitize;

/// Eight random bytes for a serial number ([`shape::serial`] gives them one length).
fn serial_bytes() -> Result<[u8; 8], PkiError> {
    let mut b = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| PkiError::NoRandomness(anyedge_ccn::NoRandomness))?;
    Ok(b)
}

/// Where a lab keeps its certificates.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("pki")
}

/// Why the lab's certificates or keys could not be made, read or trusted.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file or directory of the PKI (see [`SysError`]'s kinds).
    #[error(transparent)]
    Sys(#[from] SysError),
    /// rcgen could not make a key or sign a certificate.
    #[error("certificates: {0}")]
    Issue(#[from] rcgen::Error),
    /// rustls refused a certificate, key or configuration made of them.
    #[error("{what}: {source}")]
    Tls {
        what: String,
        #[source]
        source: rustls::Error,
    },
    /// A certificate or key file that does not hold what it must (not a key, not the
    /// certificate's key, not issued by the CA, not valid now, for another node).
    #[error("{}: {why}", path.display())]
    Refused { path: PathBuf, why: String },
    /// A node name that names no role (`control/N`, `pop/X`, `clb/R/N`, `ctl`).
    #[error("`{0}` names no role")]
    NoRole(String),
    /// The system gave no randomness (for the backbone's secret, a salt, a serial number).
    #[error("{0}")]
    NoRandomness(#[from] anyedge_ccn::NoRandomness),
}

/// Why a peer's certificate gives it no identity in the lab.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityRefused {
    #[error("unreadable certificate: {0}")]
    Unreadable(String),
    #[error("certificate without exactly one common name and one role")]
    NotOneName,
    #[error("certificate for `{0}`, which names no role")]
    NoRole(String),
    #[error("certificate for `{name}` claims role `{unit}`")]
    WrongRole { name: String, unit: String },
}

/// A certificate or key at `path` that is not what it must be.
fn refused(path: &Path, why: impl std::fmt::Display) -> PkiError {
    PkiError::Refused { path: path.to_path_buf(), why: why.to_string() }
}

/// A VIP's server certificate: its name (a DNS name in the SAN) and its addresses.
pub type VipNames = (String, Vec<IpAddr>);

/// The names and addresses of the file's VIPs (those homed in `region`, when given).
pub fn vip_names(t: &anyedge_topology::Topology, region: Option<usize>) -> Vec<VipNames> {
    t.vips
        .iter()
        .filter(|v| region.is_none_or(|r| v.home == r))
        .map(|v| (v.name.clone(), std::iter::once(v.ipv4.into()).chain(v.ipv6.map(Into::into)).collect()))
        .collect()
}

/// The authority a lab's or a deployment's certificates chain to: made fresh (a lab's,
/// whose key is dropped once its certificates are issued), or kept by `render` and given
/// back with `--ca` so a node rendered later trusts and is trusted by the earlier ones.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    key_pem: String,
    /// Its key's algorithm, which the VIP certificates it issues share.
    algorithm: KeyAlgorithm,
}

impl Ca {
    /// A new self-signed CA whose key, and the VIP certificates it issues, are `algorithm`.
    pub fn generate(algorithm: KeyAlgorithm) -> Result<Ca, PkiError> {
        let ca_key = algorithm.generate()?;
        let key_pem = ca_key.serialize_pem();
        let ca_params = shape::ca(serial_bytes()?);
        let ca = ca_params.self_signed(&ca_key)?;
        Ok(Ca { issuer: Issuer::new(ca_params, ca_key), pem: ca.pem(), key_pem, algorithm })
    }

    /// Its key's algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// This CA, if it is the `algorithm` a topology asks for (`tls.algorithm`): a VIP
    /// certificate of one algorithm signed by a CA of another is a chain a browser may
    /// not verify.
    pub fn of_algorithm(self, algorithm: KeyAlgorithm, dir: &Path) -> Result<Ca, PkiError> {
        if self.algorithm == algorithm {
            return Ok(self);
        }
        let why = format!(
            "the CA's key is {}, the topology asks for {} (tls.algorithm): give a CA of that algorithm or set tls.algorithm: {}",
            self.algorithm.name(),
            algorithm.name(),
            self.algorithm.name()
        );
        Err(refused(&dir.join("ca.key"), why))
    }

    /// The CA kept in `dir` (`ca.pem`, `ca.key`), as `render` writes it.
    pub fn load(dir: &Path) -> Result<Ca, PkiError> {
        let (cert, key) = (dir.join("ca.pem"), dir.join("ca.key"));
        let pem = read(&cert)?;
        let key_pem = read(&key)?;
        let signing = KeyPair::from_pem(&key_pem).map_err(|e| refused(&key, format!("not a private key: {e}")))?;
        let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .map_err(|e| refused(&cert, format!("not a PEM certificate: {e}")))?;
        let x509 = parsed.parse_x509().map_err(|e| refused(&cert, format!("not a certificate: {e}")))?;
        if x509.public_key().subject_public_key.data.as_ref() != signing.public_key_raw() {
            return Err(refused(&key, format!("the key is not the certificate's ({})", cert.display())));
        }
        if !x509.is_ca() {
            return Err(refused(&cert, "not a CA certificate"));
        }
        let algorithm = KeyAlgorithm::ALL.into_iter().find(|a| signing.algorithm() == a.rcgen()).ok_or_else(|| {
            refused(&key, "a key of no algorithm anyedge issues with (ecdsa-p256, ecdsa-p384, rsa-2048, ed25519)")
        })?;
        let issuer = Issuer::from_ca_cert_pem(&pem, signing).map_err(|e| refused(&cert, e))?;
        Ok(Ca { issuer, pem, key_pem, algorithm })
    }

    /// Keeps the CA in `dir` (certificate and key, both 0600): the operator's to guard.
    pub fn save(&self, dir: &Path) -> Result<(), PkiError> {
        crate::layout::private_dir(dir)?;
        write(&dir.join("ca.pem"), &self.pem)?;
        write(&dir.join("ca.key"), &self.key_pem)
    }
}

/// Issues a fresh CA's certificates (see [`issue_with`]; VIP certificates ECDSA P-256);
/// the CA's key is not kept.
pub fn issue(state_dir: &Path, nodes: &[(String, Option<IpAddr>)], vips: &[VipNames]) -> Result<(), PkiError> {
    issue_with(state_dir, &Ca::generate(KeyAlgorithm::default())?, nodes, vips)
}

/// Issues, from `ca`, a certificate for each `(node, address)` (addresses go in the SAN),
/// a server certificate for each VIP (`vip-NAME.pem`, its name and addresses in the SAN),
/// which HTTPS, TCP SSL and QUIC listeners terminate with, and the `ctl` and `client`
/// certificates, into `state_dir`'s `pki/`.
pub fn issue_with(
    state_dir: &Path,
    ca: &Ca,
    nodes: &[(String, Option<IpAddr>)],
    vips: &[VipNames],
) -> Result<(), PkiError> {
    issue_nodes(state_dir, ca, nodes)?;
    issue_vips(state_dir, ca, vips)?;
    // What clients present to listeners with `mtls: true` (`anyedge probe` in the lab).
    let dir = dir(state_dir);
    let key = ca.algorithm.generate()?;
    let cert = shape::vip_client(serial_bytes()?).signed_by(&key, &ca.issuer)?;
    write(&dir.join("client.pem"), &cert.pem())?;
    write(&dir.join("client.key"), &key.serialize_pem())?;
    Ok(())
}

/// A fresh certificate and key from `ca` for each `(node, address)` (addresses in the
/// SAN, the role in the OU) and for `ctl`, into `state_dir`'s `pki/`, beside the CA's
/// certificate: at render, and again to rotate them (`lab reload --new-node-certificates`).
pub fn issue_nodes(state_dir: &Path, ca: &Ca, nodes: &[(String, Option<IpAddr>)]) -> Result<(), PkiError> {
    let dir = dir(state_dir);
    std::fs::create_dir_all(&dir).at(&dir)?;
    let issuer = &ca.issuer;
    write(&dir.join("ca.pem"), &ca.pem)?;
    let ctl = ("ctl".to_string(), None);
    for (node, addr) in nodes.iter().chain(std::iter::once(&ctl)) {
        let role = Role::of(node).ok_or_else(|| PkiError::NoRole(node.clone()))?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, node.as_str());
        params.distinguished_name.push(DnType::OrganizationalUnitName, role.name());
        params.subject_alt_names = addr.iter().map(|a| SanType::IpAddress(*a)).collect();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match role {
            // Control nodes serve Raft and the API; CLB nodes serve the gRPC backbone.
            Role::Control(_) | Role::Clb => {
                vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth]
            }
            _ => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        let cert = params.signed_by(&key, issuer)?;
        write(&dir.join(format!("{}.pem", sanitize(node))), &cert.pem())?;
        write(&dir.join(format!("{}.key", sanitize(node))), &key.serialize_pem())?;
    }
    Ok(())
}

/// The DER of the first PEM block in `path`.
fn der(path: &Path) -> Result<Vec<u8>, PkiError> {
    let text = read(path)?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(text.as_bytes()).map_err(|e| refused(path, e))?;
    Ok(pem.contents)
}

/// What the CLB nodes of `region` terminate TLS with: each VIP's chains of its own
/// (`certificates:`, checked again here), else the certificate the lab's CA issued it,
/// for its addresses; mutual variants accept the lab's CA's clients.
pub fn vip_identities(
    state_dir: &Path,
    t: &anyedge_topology::Topology,
    region: usize,
) -> Result<Vec<(IpAddr, anyedge_region::identity::VipIdentity)>, PkiError> {
    use anyedge_region::identity::VipIdentity;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let ca = CertificateDer::from(der(&dir(state_dir).join("ca.pem"))?);
    let mut out = Vec::new();
    for vip in t.vips.iter().filter(|v| v.home == region) {
        let identity = if vip.certificates.is_empty() {
            let path = vip_cert_path(state_dir, &vip.name);
            let chain = vec![CertificateDer::from(der(&path)?), ca.clone()];
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der(&path.with_extension("key"))?));
            VipIdentity::new(chain, key, Some(ca.clone())).map_err(|e| refused(&path, e))?
        } else {
            let own = (0..vip.certificates.len()).map(|k| vip_own_path(state_dir, &vip.name, k));
            let keys = own.map(|chain| own_key(&chain, &chain.with_extension("key"), vip)).collect::<Result<_, _>>()?;
            let first = vip_own_path(state_dir, &vip.name, 0);
            VipIdentity::with_keys(keys, Some(ca.clone())).map_err(|e| refused(&first, e))?
        };
        let addrs = std::iter::once(IpAddr::V4(vip.ipv4)).chain(vip.ipv6.map(IpAddr::V6));
        out.extend(addrs.map(|a| (a, identity.clone())));
    }
    Ok(out)
}

/// Where VIP `name`'s own chain number `k` is kept in a `pki/` (its key beside it, `.key`).
pub fn vip_own_path(state_dir: &Path, name: &str, k: usize) -> PathBuf {
    dir(state_dir).join(format!("vip-{}.own{k}.pem", sanitize(name)))
}

/// A chain of one's own and its key, checked for `vip` as a browser would take them now
/// ([`anyedge_region::identity::own_key`]); a refusal names the file and why.
fn own_key(
    chain: &Path,
    key: &Path,
    vip: &anyedge_topology::Vip,
) -> Result<std::sync::Arc<rustls::sign::CertifiedKey>, PkiError> {
    use anyedge_region::identity::OwnCertRefused;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let (chain_pem, key_pem) = (std::fs::read(chain).at(chain)?, std::fs::read(key).at(key)?);
    anyedge_region::identity::own_key(&chain_pem, &key_pem, &vip.names(), Some(now)).map_err(|e| match e {
        OwnCertRefused::Chain(why) => refused(chain, why),
        OwnCertRefused::Key(why) => refused(key, why),
    })
}

/// Each VIP's chains of its own (`certificates:`, paths relative to `base`, the
/// topology file's directory), checked, into `state_dir`'s `pki/` ([`vip_own_path`]): at
/// render, and again at `lab reload --new-vip-certificates` (after a renewal).
pub fn copy_own_certificates(t: &anyedge_topology::Topology, base: &Path, state_dir: &Path) -> Result<(), PkiError> {
    for vip in &t.vips {
        for (k, c) in vip.certificates.iter().enumerate() {
            let (chain, key) = (base.join(&c.chain), base.join(&c.key));
            own_key(&chain, &key, vip)?;
            let to = vip_own_path(state_dir, &vip.name, k);
            crate::layout::write_private(&to, &std::fs::read(&chain).at(&chain)?)?;
            crate::layout::write_private(&to.with_extension("key"), &std::fs::read(&key).at(&key)?)?;
        }
    }
    Ok(())
}

/// A fresh server certificate and key for each VIP (`vip-NAME.pem`, its name and
/// addresses in the SAN; the CA's algorithm), from `ca`, into `state_dir`'s `pki/`: at
/// render, and again to rotate them (`lab reload --new-vip-certificates`).
pub fn issue_vips(state_dir: &Path, ca: &Ca, vips: &[VipNames]) -> Result<(), PkiError> {
    for (name, addrs) in vips {
        let key = ca.algorithm.generate()?;
        let cert = shape::vip(name, addrs, serial_bytes()?).signed_by(&key, &ca.issuer)?;
        write(&vip_cert_path(state_dir, name), &cert.pem())?;
        write(&vip_cert_path(state_dir, name).with_extension("key"), &key.serialize_pem())?;
    }
    Ok(())
}

/// Where VIP `name`'s server certificate is (its key beside it, `.key`).
pub fn vip_cert_path(state_dir: &Path, name: &str) -> PathBuf {
    dir(state_dir).join(format!("vip-{}.pem", sanitize(name)))
}

fn write(path: &Path, text: &str) -> Result<(), PkiError> {
    Ok(crate::layout::write_private(path, text.as_bytes())?)
}

/// A PEM, key or key file of a node's: a private key or backbone keys are secrets.
fn read(path: &Path) -> Result<String, PkiError> {
    let secret = path.extension().is_some_and(|x| x == "key" || x == "keys");
    let trust = if secret { crate::layout::FileTrust::Secret } else { crate::layout::FileTrust::Config };
    Ok(crate::layout::read_node_file(path, trust)?)
}

fn identity(state_dir: &Path, node: &str) -> Result<(Certificate, Identity), PkiError> {
    let dir = dir(state_dir);
    let ca = Certificate::from_pem(read(&dir.join("ca.pem"))?);
    let cert = read(&dir.join(format!("{}.pem", sanitize(node))))?;
    let key = read(&dir.join(format!("{}.key", sanitize(node))))?;
    Ok((ca, Identity::from_pem(cert, key)))
}

/// Checks `node`'s certificate and key in `state_dir`'s `pki/`: both there and parsed, the
/// certificate naming the node, issued by the CA beside it, valid now, and the key its own.
pub fn check_identity(state_dir: &Path, node: &str) -> Result<(), PkiError> {
    let dir = dir(state_dir);
    let (ca_path, cert_path) = (dir.join("ca.pem"), dir.join(format!("{}.pem", sanitize(node))));
    let key_path = cert_path.with_extension("key");
    let (ca_der, cert_der) = (der(&ca_path)?, der(&cert_path)?);
    let parse =
        |path: &Path, der| x509_parser::parse_x509_certificate(der).map(|(_, c)| c).map_err(|e| refused(path, e));
    let (ca, cert) = (parse(&ca_path, &ca_der)?, parse(&cert_path, &cert_der)?);
    let key =
        KeyPair::from_pem(&read(&key_path)?).map_err(|e| refused(&key_path, format!("not a private key: {e}")))?;
    let cn = cert.subject().iter_common_name().next().and_then(|c| c.as_str().ok()).unwrap_or("");
    if cn != node {
        return Err(refused(&cert_path, format!("issued to `{cn}`, not to `{node}`")));
    }
    if cert.issuer() != ca.subject() {
        return Err(refused(&cert_path, format!("not issued by the CA in {}", ca_path.display())));
    }
    if !cert.validity().is_valid() {
        return Err(refused(&cert_path, format!("not valid now ({:?})", cert.validity())));
    }
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(refused(&key_path, format!("not the key of {}", cert_path.display())));
    }
    Ok(())
}

/// A gRPC server's TLS (a control node's, a CLB node's gRPC backbone): its certificate and
/// key from `state_dir`'s `pki/`, and a client certificate from the CA beside them
/// required. Read again on reload (`io::tls::ServerTls::replace`).
pub fn server(state_dir: &Path, node: &str) -> Result<std::sync::Arc<rustls::ServerConfig>, PkiError> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use std::sync::Arc;
    let dir = dir(state_dir);
    let cert_path = dir.join(format!("{}.pem", sanitize(node)));
    let cert = CertificateDer::from(der(&cert_path)?);
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der(&cert_path.with_extension("key"))?));
    let mut roots = rustls::RootCertStore::empty();
    let ca_path = dir.join("ca.pem");
    roots.add(CertificateDer::from(der(&ca_path)?)).map_err(|e| refused(&ca_path, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| refused(&ca_path, e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| PkiError::Tls { what: "TLS versions".into(), source })?
        .with_client_cert_verifier(clients)
        .with_single_cert(vec![cert], key)
        .map_err(|e| refused(&cert_path, e))?;
    // gRPC is HTTP/2, and tonic's clients insist on it.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A node's client side toward the control node at `server`.
pub fn client(state_dir: &Path, node: &str, server: IpAddr) -> Result<ClientTlsConfig, PkiError> {
    let (ca, id) = identity(state_dir, node)?;
    Ok(ClientTlsConfig::new().ca_certificate(ca).identity(id).domain_name(server.to_string()))
}

/// Hands out the backbone's keys at `lab up`: a fresh secret (dropped once done, like the
/// CA's key) derives each POP's and CLB node's keys for its peers (`anyedge_ccn::auth`),
/// written to `pki/<node>.keys`, readable by root only. A node gets its own keys and no
/// one else's.
pub fn issue_backbone_keys(
    state_dir: &Path,
    t: &anyedge_topology::Topology,
    nodes: &[(anyedge_ccn::NodeId, String)],
) -> Result<(), PkiError> {
    let secret = anyedge_ccn::BackboneSecret::generate().map_err(PkiError::NoRandomness)?;
    issue_backbone_keys_with(state_dir, &secret, t, nodes)
}

/// [`issue_backbone_keys`] from a given secret (one `render` kept).
pub fn issue_backbone_keys_with(
    state_dir: &Path,
    secret: &anyedge_ccn::BackboneSecret,
    t: &anyedge_topology::Topology,
    nodes: &[(anyedge_ccn::NodeId, String)],
) -> Result<(), PkiError> {
    let dir = dir(state_dir);
    std::fs::create_dir_all(&dir).at(&dir)?;
    for (id, name) in nodes {
        let auth = anyedge_topology::nodes::backbone_auth(t, secret, *id, 0);
        let peers = auth.keys.iter().map(|k| format!("{:08x} {} {}\n", k.peer.to_wire(), hex(&k.send), hex(&k.recv)));
        let cids = auth.cid_keys.iter().map(|(r, k)| format!("cid {r} {}\n", hex(k)));
        let text: String = peers.chain(cids).collect();
        write(&keys_path(state_dir, name), &text)?;
    }
    Ok(())
}

pub fn keys_path(state_dir: &Path, node: &str) -> PathBuf {
    dir(state_dir).join(format!("{}.keys", sanitize(node)))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(text: &str) -> Option<anyedge_ccn::auth::KeyBytes> {
    let mut k = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(k)
}

/// A node's backbone keys (`PEER SEND RECV` lines) and QUIC connection-ID keys (`cid
/// REGION KEY` lines), as `lab up` wrote them; its clock's epoch and salt are the node's
/// to set at start.
pub fn backbone_keys(state_dir: &Path, node: &str) -> Result<anyedge_ccn::AuthConfig, PkiError> {
    let path = keys_path(state_dir, node);
    let text = read(&path)?;
    let mut auth = anyedge_ccn::AuthConfig::default();
    for (i, line) in text.lines().enumerate() {
        let bad = || refused(&path, format!("line {}: not `PEER SEND RECV` or `cid REGION KEY` in hex", i + 1));
        match line.split(' ').collect::<Vec<_>>()[..] {
            ["cid", region, key] => {
                let region = region.parse::<u16>().map_err(|_| bad())?;
                auth.cid_keys.push((region, unhex(key).ok_or_else(bad)?));
            }
            [peer, send, recv] => {
                let peer =
                    u32::from_str_radix(peer, 16).ok().and_then(anyedge_ccn::NodeId::from_wire).ok_or_else(bad)?;
                let (send, recv) = (unhex(send).ok_or_else(bad)?, unhex(recv).ok_or_else(bad)?);
                auth.keys.push(anyedge_ccn::PeerKeys { peer, send, recv });
            }
            _ => return Err(bad()),
        }
    }
    Ok(auth)
}

/// What a certificate of the lab lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A control node, with its Raft id: sends Raft messages as that id.
    Control(u64),
    /// POPs and CLB nodes: watch and read the table.
    Pop,
    Clb,
    /// The operator's tool: writes.
    Ctl,
}

impl Role {
    /// The role a node's name gives it (`control/N`, `pop/X`, `clb/R/N`, `ctl`).
    pub fn of(name: &str) -> Option<Role> {
        match name.split('/').collect::<Vec<_>>()[..] {
            ["control", n] => n.parse().ok().filter(|&n| n > 0).map(Role::Control),
            ["pop", p] if !p.is_empty() => Some(Role::Pop),
            ["clb", r, n] if !r.is_empty() && n.parse::<u16>().is_ok() => Some(Role::Clb),
            ["ctl"] => Some(Role::Ctl),
            _ => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Role::Control(_) => "control",
            Role::Pop => "pop",
            Role::Clb => "clb",
            Role::Ctl => "ctl",
        }
    }
}

/// Who is on the other end of a mutual-TLS connection, from its certificate (which the
/// TLS layer already checked against the lab's CA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    pub name: String,
    pub role: Role,
}

/// The identity in a peer's certificate (DER): its common name, whose role must be the
/// one its organizational unit states.
pub fn peer_identity(der: &[u8]) -> Result<PeerIdentity, IdentityRefused> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| IdentityRefused::Unreadable(e.to_string()))?;
    let subject = cert.subject();
    let names: Vec<&str> = subject.iter_common_name().filter_map(|a| a.as_str().ok()).collect();
    let units: Vec<&str> = subject.iter_organizational_unit().filter_map(|a| a.as_str().ok()).collect();
    let (&[name], &[unit]) = (&names[..], &units[..]) else {
        return Err(IdentityRefused::NotOneName);
    };
    let role = Role::of(name).ok_or_else(|| IdentityRefused::NoRole(name.to_string()))?;
    if role.name() != unit {
        return Err(IdentityRefused::WrongRole { name: name.to_string(), unit: unit.to_string() });
    }
    Ok(PeerIdentity { name: name.to_string(), role })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, IsCa};

    #[test]
    fn each_vip_gets_a_server_certificate_naming_it_and_its_addresses() {
        let state = std::env::temp_dir().join(format!("anyedge-vip-pki-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        let addrs: Vec<IpAddr> = vec!["198.18.0.20".parse().unwrap(), "fd00:a::20".parse().unwrap()];
        issue(&state, &[], &[("edge".into(), addrs.clone())]).unwrap();
        let pem = std::fs::read_to_string(vip_cert_path(&state, "edge")).unwrap();
        let (_, der) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der.contents).unwrap();
        let san = cert.subject_alternative_name().unwrap().expect("a SAN").value;
        use x509_parser::extensions::GeneralName;
        let dns: Vec<&str> = san
            .general_names
            .iter()
            .filter_map(|n| if let GeneralName::DNSName(d) = n { Some(*d) } else { None })
            .collect();
        assert_eq!(dns, ["edge"]);
        let ips: Vec<&[u8]> = san
            .general_names
            .iter()
            .filter_map(|n| if let GeneralName::IPAddress(a) = n { Some(*a) } else { None })
            .collect();
        let want: Vec<Vec<u8>> = addrs
            .iter()
            .map(|a| match a {
                IpAddr::V4(v) => v.octets().to_vec(),
                IpAddr::V6(v) => v.octets().to_vec(),
            })
            .collect();
        assert_eq!(ips, want.iter().map(|w| w.as_slice()).collect::<Vec<_>>());
        let eku = cert.extended_key_usage().unwrap().expect("extended key usage").value;
        assert!(eku.server_auth && !eku.client_auth);
        let ca_pem = std::fs::read_to_string(dir(&state).join("ca.pem")).unwrap();
        let (_, ca_der) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()).unwrap();
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der.contents).unwrap();
        assert_eq!(cert.issuer(), ca.subject(), "issued by the lab's CA");
        use std::os::unix::fs::PermissionsExt;
        let key = vip_cert_path(&state, "edge").with_extension("key");
        assert_eq!(std::fs::metadata(key).unwrap().permissions().mode() & 0o077, 0, "the key is root's only");
        let _ = std::fs::remove_dir_all(&state);
    }

    /// The OID of the public key in the first certificate of a PEM file.
    fn key_oid(path: &Path) -> String {
        let pem = std::fs::read_to_string(path).unwrap();
        let (_, der) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der.contents).unwrap();
        let key = cert.public_key();
        let curve = key.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).map(|o| o.to_id_string());
        format!("{} {}", key.algorithm.algorithm.to_id_string(), curve.unwrap_or_default())
    }

    #[test]
    fn vip_certificates_and_their_ca_are_ecdsa_p256_by_default_and_the_nodes_stay_ed25519() {
        let state = std::env::temp_dir().join(format!("anyedge-vip-alg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        let nodes = [("pop/paris".to_string(), None)];
        issue(&state, &nodes, &[("edge".into(), vec!["198.18.0.20".parse().unwrap()])]).unwrap();
        // id-ecPublicKey on prime256v1, as browsers verify; Ed25519 for the node.
        let p256 = "1.2.840.10045.2.1 1.2.840.10045.3.1.7";
        assert_eq!(key_oid(&vip_cert_path(&state, "edge")), p256);
        assert_eq!(key_oid(&dir(&state).join("ca.pem")), p256);
        assert_eq!(key_oid(&dir(&state).join("client.pem")), p256);
        assert_eq!(key_oid(&dir(&state).join("pop-paris.pem")), "1.3.101.112 ");
        let _ = std::fs::remove_dir_all(&state);
    }

    #[test]
    fn a_kept_ca_of_another_algorithm_than_the_topologys_is_refused_naming_both() {
        let dir = std::env::temp_dir().join(format!("anyedge-ca-alg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Ca::generate(KeyAlgorithm::Ed25519).unwrap().save(&dir).unwrap();
        let loaded = Ca::load(&dir).unwrap();
        assert_eq!(loaded.algorithm(), KeyAlgorithm::Ed25519, "read from the key");
        let e = loaded.of_algorithm(KeyAlgorithm::EcdsaP256, &dir).err().expect("refused").to_string();
        assert!(e.contains("ca.key") && e.contains("ed25519") && e.contains("ecdsa-p256"), "{e}");
        Ca::generate(KeyAlgorithm::Rsa2048).unwrap().save(&dir).unwrap();
        assert_eq!(Ca::load(&dir).unwrap().algorithm(), KeyAlgorithm::Rsa2048, "an RSA CA kept and read back");
        Ca::generate(KeyAlgorithm::EcdsaP384).unwrap().save(&dir).unwrap();
        let p384 = Ca::load(&dir).unwrap().of_algorithm(KeyAlgorithm::EcdsaP384, &dir).expect("the same algorithm");
        assert_eq!(p384.algorithm(), KeyAlgorithm::EcdsaP384);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A CA of someone else's (an ACME one, say) that signs `names` for a year from now:
    /// its root, and the chain (leaf, intermediate) and key as PEM.
    fn foreign_chain(names: &[&str]) -> (String, String, String) {
        let root_key = KeyAlgorithm::EcdsaP256.generate().unwrap();
        let mut root = CertificateParams::new(Vec::<String>::new()).unwrap();
        root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        root.distinguished_name.push(DnType::CommonName, "Someone's Root");
        let root_pem = root.self_signed(&root_key).unwrap().pem();
        let root = Issuer::new(root, root_key);
        let mid_key = KeyAlgorithm::EcdsaP256.generate().unwrap();
        let mut mid = CertificateParams::new(Vec::<String>::new()).unwrap();
        mid.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        mid.distinguished_name.push(DnType::CommonName, "Someone's Intermediate");
        let mid_pem = mid.signed_by(&mid_key, &root).unwrap().pem();
        let mid = Issuer::new(mid, mid_key);
        let key = KeyAlgorithm::EcdsaP256.generate().unwrap();
        let leaf = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let leaf_pem = leaf.signed_by(&key, &mid).unwrap().pem();
        (root_pem, leaf_pem + &mid_pem, key.serialize_pem())
    }

    #[test]
    fn a_vips_own_chains_are_checked_copied_and_presented_and_a_bad_one_is_refused_naming_its_file() {
        let base = std::env::temp_dir().join(format!("anyedge-own-certs-{}", std::process::id()));
        let state = base.join("state");
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("certs")).unwrap();
        let (_, chain, key) = foreign_chain(&["shop.example"]);
        std::fs::write(base.join("certs/shop.pem"), &chain).unwrap();
        std::fs::write(base.join("certs/shop.key"), &key).unwrap();
        let text = include_str!("../../topologies/small.yaml").replace(
            "    pops: [paris, warsaw]\n",
            "    pops: [paris, warsaw]\n    hosts: [shop.example]\n    certificates:\n      - { chain: certs/shop.pem, key: certs/shop.key }\n",
        );
        let t = anyedge_topology::parse_str("own.yaml", &text).unwrap();
        issue(&state, &[], &vip_names(&t, None)).unwrap();
        copy_own_certificates(&t, &base, &state).unwrap();
        assert_eq!(std::fs::read_to_string(vip_own_path(&state, "edge", 0)).unwrap(), chain, "kept as given");
        let vips = vip_identities(&state, &t, 0).expect("the node loads the VIP's own chain");
        assert_eq!(vips.len(), 1, "one address, one identity");
        // A chain for another host, and a key that is not the chain's: refused, naming the file.
        let (_, other, other_key) = foreign_chain(&["other.example"]);
        std::fs::write(base.join("certs/shop.pem"), &other).unwrap();
        std::fs::write(base.join("certs/shop.key"), &other_key).unwrap();
        let e = copy_own_certificates(&t, &base, &state).unwrap_err().to_string();
        assert!(e.contains("certs/shop.pem") && e.contains("none of the VIP's shop.example"), "{e}");
        std::fs::write(base.join("certs/shop.pem"), &chain).unwrap();
        std::fs::write(base.join("certs/shop.key"), &other_key).unwrap();
        let e = copy_own_certificates(&t, &base, &state).unwrap_err().to_string();
        assert!(e.contains("certs/shop.key") && e.contains("not the key"), "{e}");
        let _ = std::fs::remove_dir_all(&base);
    }
}
