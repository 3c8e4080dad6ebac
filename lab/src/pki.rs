//! Mutual TLS for the lab's control plane: at `lab up` a private CA (rcgen, Ed25519)
//! issues one certificate per node that speaks gRPC on the backbone — control nodes
//! (their backbone address as SAN), POPs and CLB nodes (watchers). Control nodes accept
//! only peers that present a certificate from that CA; the CA's key is not kept, so no
//! certificate can be minted for a stranger later.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::layout::sanitize;

/// Where a lab keeps its certificates.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("pki")
}

fn err(e: impl std::fmt::Display) -> String {
    format!("certificates: {e}")
}

/// Issues a CA and a certificate for each `(node, address)`; addresses go in the SAN.
pub fn issue(state_dir: &Path, nodes: &[(String, Option<IpAddr>)]) -> Result<(), String> {
    let dir = dir(state_dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "anyedge lab control CA");
    let ca = ca_params.self_signed(&ca_key).map_err(err)?;
    let issuer = Issuer::new(ca_params, ca_key);
    write(&dir.join("ca.pem"), &ca.pem())?;
    for (node, addr) in nodes {
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params.distinguished_name.push(DnType::CommonName, node.as_str());
        params.subject_alt_names = addr.iter().map(|a| SanType::IpAddress(*a)).collect();
        let cert = params.signed_by(&key, &issuer).map_err(err)?;
        write(&dir.join(format!("{}.pem", sanitize(node))), &cert.pem())?;
        write(&dir.join(format!("{}.key", sanitize(node))), &key.serialize_pem())?;
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(text.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn identity(state_dir: &Path, node: &str) -> Result<(Certificate, Identity), String> {
    let dir = dir(state_dir);
    let ca = Certificate::from_pem(read(&dir.join("ca.pem"))?);
    let cert = read(&dir.join(format!("{}.pem", sanitize(node))))?;
    let key = read(&dir.join(format!("{}.key", sanitize(node))))?;
    Ok((ca, Identity::from_pem(cert, key)))
}

/// A control node's server side: its certificate, and client certificates required.
pub fn server(state_dir: &Path, node: &str) -> Result<ServerTlsConfig, String> {
    let (ca, id) = identity(state_dir, node)?;
    Ok(ServerTlsConfig::new().identity(id).client_ca_root(ca))
}

/// A node's client side toward the control node at `server`.
pub fn client(state_dir: &Path, node: &str, server: IpAddr) -> Result<ClientTlsConfig, String> {
    let (ca, id) = identity(state_dir, node)?;
    Ok(ClientTlsConfig::new().ca_certificate(ca).identity(id).domain_name(server.to_string()))
}
