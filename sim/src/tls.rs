//! The TLS identity HTTPS, TCP SSL and QUIC listeners present in a run: a private CA and
//! one server certificate for every VIP address, generated at start (rcgen, the
//! topology's `tls.algorithm`, ECDSA P-256 by default, as a lab's), and the client
//! configuration that trusts that CA (with a client certificate from it, for mutual-TLS
//! listeners). A VIP with chains of its own (`certificates:`) presents those, the
//! user's own bytes, as a lab's does; the clients take each such leaf as given (a
//! browser trusts its public root; the run has none) and check the handshake's
//! signature with its key, as any client does.
//!
//! Handshakes have the same sizes in every run (the bytes differ, the timing does not):
//! the certificates have the lab's shapes, serial numbers are fixed, and every
//! signature, in a certificate or a
//! handshake, has its algorithm's longest length. An ECDSA signature is DER, whose
//! length varies with its random nonce (70–72 bytes on P-256), so the simulator signs
//! again until it has that length ([`FixedLength`]: one signature in four has it).

use std::net::IpAddr;
use std::sync::Arc;

use anyedge_region::identity::{KeyAlgorithm, OwnCertRefused, VipIdentity};
use rcgen::{CertificateParams, Issuer, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{DigitallySignedStruct, SignatureAlgorithm, SignatureScheme};

/// How many times a signature is made before one of the longest length is given up on:
/// (3/4)^256 is 1e-32.
const SIGN_TRIES: usize = 256;

/// Why a run's certificates could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsSetupError {
    /// A VIP's own chain or key (`certificates:`): the field, the file, and why.
    #[error("{field}: {}: {why}", path.display())]
    Own { field: String, path: std::path::PathBuf, why: String },
    /// rcgen, rustls or quinn refused to make a key, certificate or configuration (its
    /// own words).
    #[error("TLS set-up: {0}")]
    Make(String),
}

impl From<TlsSetupError> for crate::SimError {
    fn from(e: TlsSetupError) -> crate::SimError {
        crate::SimError(e.to_string())
    }
}

fn make(e: impl std::fmt::Display) -> TlsSetupError {
    TlsSetupError::Make(e.to_string())
}

/// A VIP as the run's certificates see it.
#[derive(Debug, Clone)]
pub struct VipTls {
    /// Its name and addresses, as the lab names them in the certificate its CA issues.
    pub name: String,
    pub addrs: Vec<IpAddr>,
    /// Chains of its own ([`own_chain`]), presented instead of an issued one.
    pub own: Vec<Arc<CertifiedKey>>,
}

impl VipTls {
    /// A VIP that presents the certificate the run's CA issues it.
    pub fn issued(name: &str, addrs: Vec<IpAddr>) -> VipTls {
        VipTls { name: name.to_string(), addrs, own: Vec::new() }
    }
}

/// The topology's VIPs as the run's certificates see them: their chains of their own
/// read from their files and checked ([`own_chain`]; a refusal names the field, the file
/// and why).
pub fn vips(t: &anyedge_topology::Topology) -> Result<Vec<VipTls>, TlsSetupError> {
    let mut out = Vec::new();
    for (i, v) in t.vips.iter().enumerate() {
        let addrs = [Some(IpAddr::V4(v.ipv4)), v.ipv6.map(IpAddr::V6)].into_iter().flatten().collect();
        let mut vip = VipTls::issued(&v.name, addrs);
        for (k, c) in v.certificates.iter().enumerate() {
            let at = |field: &str, path: &std::path::Path, e: &dyn std::fmt::Display| TlsSetupError::Own {
                field: format!("vips[{i}].certificates[{k}].{field}"),
                path: path.to_path_buf(),
                why: e.to_string(),
            };
            let chain = std::fs::read(&c.chain).map_err(|e| at("chain", &c.chain, &e))?;
            let key = std::fs::read(&c.key).map_err(|e| at("key", &c.key, &e))?;
            let own = own_chain(&chain, &key, &v.names()).map_err(|e| match &e {
                OwnCertRefused::Chain(_) => at("chain", &c.chain, &e),
                OwnCertRefused::Key(_) => at("key", &c.key, &e),
            })?;
            vip.own.push(own);
        }
        out.push(vip);
    }
    Ok(out)
}

/// Each VIP's identity (one-way and mutual) by address, and the clients' configuration:
/// it trusts the CA and holds a client certificate from it, which it presents when a
/// listener asks (`mtls: true`), and takes the VIPs' own leaves as given. The
/// certificates have the lab's shapes ([`anyedge_region::identity::shape`]), with fixed
/// serial numbers.
#[allow(clippy::type_complexity)]
pub fn vip_pki(
    vips: &[VipTls],
    algorithm: KeyAlgorithm,
) -> Result<(Vec<(IpAddr, VipIdentity)>, Arc<rustls::ClientConfig>), TlsSetupError> {
    use anyedge_region::identity::shape;
    let ca_key = algorithm.generate().map_err(make)?;
    let ca_params = shape::ca(1u64.to_be_bytes());
    let ca_cert = longest(algorithm, || ca_params.self_signed(&ca_key).map(|c| c.der().clone()))?;
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |params: CertificateParams| -> Result<(CertificateDer<'static>, KeyPair), TlsSetupError> {
        let key = algorithm.generate().map_err(make)?;
        let cert = longest(algorithm, || params.signed_by(&key, &issuer).map(|c| c.der().clone()))?;
        Ok((cert, key))
    };
    let mut identities = Vec::new();
    for (i, vip) in vips.iter().enumerate() {
        let identity = if vip.own.is_empty() {
            let (cert, key) = leaf(shape::vip(&vip.name, &vip.addrs, (3 + i as u64).to_be_bytes()))?;
            let server = certified(vec![cert, ca_cert.clone()], &key, algorithm)?;
            VipIdentity::with_key(server, Some(ca_cert.clone())).map_err(make)?
        } else {
            VipIdentity::with_keys(vip.own.clone(), Some(ca_cert.clone())).map_err(make)?
        };
        identities.extend(vip.addrs.iter().map(|a| (*a, identity.clone())));
    }
    let (client_cert, client_key) = leaf(shape::vip_client(2u64.to_be_bytes()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.clone()).map_err(make)?;
    let run_ca = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(make)?;
    let own_leaves = vips.iter().flat_map(|v| &v.own).filter_map(|k| k.cert.first().cloned()).collect();
    let client_key = certified(vec![client_cert, ca_cert], &client_key, algorithm)?;
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(make)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(OwnLeavesOrRunCa { own_leaves, run_ca }))
        .with_client_cert_resolver(Arc::new(ClientKey(client_key)));
    client.resumption = rustls::client::Resumption::disabled();
    Ok((identities, Arc::new(client)))
}

/// A chain of one's own and its key (PEM), checked as a lab checks them but for the
/// dates ([`anyedge_region::identity::own_key`] with no day: a run does not depend on the
/// day it is made), signing with its key's longest signatures ([`FixedLength`]).
pub fn own_chain(chain_pem: &[u8], key_pem: &[u8], names: &[String]) -> Result<Arc<CertifiedKey>, OwnCertRefused> {
    let checked = anyedge_region::identity::own_key(chain_pem, key_pem, names, None)?;
    let Some(len) = checked.cert.first().and_then(|leaf| ecdsa_signature_len_max(leaf)) else {
        // RSA and Ed25519 signatures have one length.
        return Ok(checked);
    };
    let signing = Arc::new(FixedLength { inner: checked.key.clone(), len });
    Ok(Arc::new(CertifiedKey::new(checked.cert.clone(), signing)))
}

/// The longest DER signature a certificate's ECDSA key makes (P-256: 72 bytes, P-384:
/// 104): a SEQUENCE of two INTEGERs of the field's size and a sign byte each. `None`
/// for other keys.
fn ecdsa_signature_len_max(leaf: &[u8]) -> Option<usize> {
    use x509_parser::public_key::PublicKey;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let PublicKey::EC(point) = cert.public_key().parsed().ok()? else { return None };
    // An uncompressed point: 0x04, then x and y of the field's size each.
    let field = point.data().len().checked_sub(1)? / 2;
    let content = 2 * (2 + field + 1);
    Some(if content < 128 { 2 + content } else { 3 + content })
}

/// The simulated clients' check of a server's chain: a VIP's own leaf is taken as given
/// (its exact bytes: a browser trusts its public root, which a run does not have), any
/// other chain must come from the run's CA; the handshake's signature is checked
/// against the leaf's key either way.
#[derive(Debug)]
struct OwnLeavesOrRunCa {
    own_leaves: Vec<CertificateDer<'static>>,
    run_ca: Arc<rustls::client::WebPkiServerVerifier>,
}

impl ServerCertVerifier for OwnLeavesOrRunCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.own_leaves.iter().any(|leaf| leaf.as_ref() == end_entity.as_ref()) {
            return Ok(ServerCertVerified::assertion());
        }
        self.run_ca.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.run_ca.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.run_ca.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.run_ca.supported_verify_schemes()
    }
}

/// A certificate made by `make_cert` (which signs it afresh each call) whose signature has
/// `algorithm`'s longest length.
fn longest(
    algorithm: KeyAlgorithm,
    make_cert: impl Fn() -> Result<CertificateDer<'static>, rcgen::Error>,
) -> Result<CertificateDer<'static>, TlsSetupError> {
    let mut cert = make_cert().map_err(make)?;
    for _ in 1..SIGN_TRIES {
        if signature_len(&cert) == Some(algorithm.signature_len_max()) {
            break;
        }
        cert = make_cert().map_err(make)?;
    }
    Ok(cert)
}

/// The length of a certificate's signature, bytes.
fn signature_len(der: &[u8]) -> Option<usize> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.signature_value.data.len())
}

/// `chain` with `key` signing for it through [`FixedLength`].
fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: &KeyPair,
    algorithm: KeyAlgorithm,
) -> Result<Arc<CertifiedKey>, TlsSetupError> {
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = rustls::crypto::ring::default_provider();
    let inner = provider.key_provider.load_private_key(der).map_err(make)?;
    let signing = Arc::new(FixedLength { inner, len: algorithm.signature_len_max() });
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

/// A signing key whose signatures all have `len` bytes: it signs again until one has
/// (at most [`SIGN_TRIES`] times).
#[derive(Debug)]
struct FixedLength {
    inner: Arc<dyn SigningKey>,
    len: usize,
}

impl SigningKey for FixedLength {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let inner = self.inner.choose_scheme(offered)?;
        Some(Box::new(FixedLengthSigner { inner, len: self.len }))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        self.inner.algorithm()
    }
}

#[derive(Debug)]
struct FixedLengthSigner {
    inner: Box<dyn Signer>,
    len: usize,
}

impl Signer for FixedLengthSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let mut signature = self.inner.sign(message)?;
        for _ in 1..SIGN_TRIES {
            if signature.len() == self.len {
                break;
            }
            signature = self.inner.sign(message)?;
        }
        Ok(signature)
    }

    fn scheme(&self) -> SignatureScheme {
        self.inner.scheme()
    }
}

/// The client certificate a simulated client presents when a listener asks for one.
#[derive(Debug)]
struct ClientKey(Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for ClientKey {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The QUIC clients' configuration over the same trust and client certificate,
/// offering `alpn` (one protocol, or none when empty).
pub fn quic_client(
    client: &Arc<rustls::ClientConfig>,
    alpn: &[u8],
) -> Result<quinn_proto::ClientConfig, TlsSetupError> {
    use quinn_proto::crypto::rustls::QuicClientConfig;
    let mut offering = (**client).clone();
    offering.alpn_protocols = if alpn.is_empty() { Vec::new() } else { vec![alpn.to_vec()] };
    let client = QuicClientConfig::try_from(Arc::new(offering)).map_err(make)?;
    Ok(quinn_proto::ClientConfig::new(Arc::new(client)))
}

/// What a simulated QUIC client offers a listener that offers `alpn`: `h3` when the
/// listener speaks HTTP/3 (it then speaks it too), else the listener's first protocol
/// (its streams carry the simulator's own request and answer).
pub fn quic_offer(alpn: &[String]) -> Vec<u8> {
    let h3 = alpn.iter().any(|p| p.as_bytes() == anyedge_region::quic_listener::H3);
    if h3 {
        anyedge_region::quic_listener::H3.to_vec()
    } else {
        alpn.first().map(|p| p.as_bytes().to_vec()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signature_the_simulator_makes_has_its_algorithms_longest_length() {
        for algorithm in KeyAlgorithm::ALL {
            let key = algorithm.generate().unwrap();
            let chain = vec![CertificateDer::from(vec![0u8])];
            let certified = certified(chain, &key, algorithm).unwrap();
            let signer = certified.key.choose_scheme(&[
                SignatureScheme::ECDSA_NISTP256_SHA256,
                SignatureScheme::ECDSA_NISTP384_SHA384,
                SignatureScheme::RSA_PSS_SHA256,
                SignatureScheme::ED25519,
            ]);
            let signer = signer.expect("a scheme the key signs with");
            let lengths: std::collections::BTreeSet<usize> =
                (0..64u8).map(|i| signer.sign(&[i; 32]).unwrap().len()).collect();
            assert_eq!(lengths, [algorithm.signature_len_max()].into(), "{algorithm:?}");
        }
    }

    #[test]
    fn the_runs_certificates_have_one_size_whatever_their_keys_and_nonces_draw() {
        // The client's chain: a leaf signed by the CA, and the CA signed by itself.
        let vip: IpAddr = "198.18.0.20".parse().unwrap();
        for algorithm in KeyAlgorithm::ALL {
            let lens: std::collections::BTreeSet<Vec<usize>> = (0..6)
                .map(|_| {
                    let (_, client) = vip_pki(&[VipTls::issued("edge", vec![vip])], algorithm).unwrap();
                    let key = client.client_auth_cert_resolver.resolve(&[], &[]).expect("a client certificate");
                    key.cert.iter().map(|c| c.len()).collect()
                })
                .collect();
            assert_eq!(lens.len(), 1, "{algorithm:?}: chains of {lens:?} bytes");
        }
    }

    /// A handshake between `client` and `server` over a perfect wire; the client, done.
    fn handshake(
        client: &Arc<rustls::ClientConfig>,
        server: &Arc<rustls::ServerConfig>,
        vip: IpAddr,
    ) -> Result<rustls::ClientConnection, rustls::Error> {
        let name = rustls::pki_types::ServerName::IpAddress(vip.into());
        let mut c = rustls::ClientConnection::new(client.clone(), name)?;
        let mut s = rustls::ServerConnection::new(server.clone())?;
        for _ in 0..4 {
            let mut wire = Vec::new();
            c.write_tls(&mut wire).expect("to memory");
            s.read_tls(&mut &wire[..]).expect("from memory");
            s.process_new_packets()?;
            let mut back = Vec::new();
            s.write_tls(&mut back).expect("to memory");
            c.read_tls(&mut &back[..]).expect("from memory");
            c.process_new_packets()?;
        }
        assert!(!c.is_handshaking() && !s.is_handshaking(), "the handshake completed");
        Ok(c)
    }

    #[test]
    fn a_client_completes_a_handshake_with_the_vip_in_every_algorithm_mutual_tls_included() {
        let vip: IpAddr = "198.18.0.20".parse().unwrap();
        for algorithm in KeyAlgorithm::ALL {
            let (identities, client) = vip_pki(&[VipTls::issued("edge", vec![vip])], algorithm).unwrap();
            let identity = &identities[0].1;
            for server in [&identity.https, identity.https_mutual.as_ref().unwrap()] {
                handshake(&client, &server.0, vip).unwrap_or_else(|e| panic!("{algorithm:?}: {e}"));
            }
        }
    }

    /// A chain from a CA the run does not know: a P-384 root, an intermediate, and a leaf
    /// for shop.example and `vip`; PEM chain (leaf, intermediate) and the leaf's key.
    fn foreign_chain(vip: IpAddr) -> (String, String) {
        let alg = &rcgen::PKCS_ECDSA_P384_SHA384;
        let root_key = KeyPair::generate_for(alg).unwrap();
        let mut root = CertificateParams::new(Vec::<String>::new()).unwrap();
        root.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let root = Issuer::new(root, root_key);
        let mid_key = KeyPair::generate_for(alg).unwrap();
        let mut mid = CertificateParams::new(Vec::<String>::new()).unwrap();
        mid.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        mid.distinguished_name.push(rcgen::DnType::CommonName, "Intermediate");
        let mid_pem = mid.signed_by(&mid_key, &root).unwrap().pem();
        let mid = Issuer::new(mid, mid_key);
        let leaf_key = KeyPair::generate_for(alg).unwrap();
        let mut leaf = CertificateParams::new(vec!["shop.example".to_string()]).unwrap();
        leaf.subject_alt_names.push(rcgen::SanType::IpAddress(vip));
        let leaf = leaf.signed_by(&leaf_key, &mid).unwrap();
        (leaf.pem() + &mid_pem, leaf_key.serialize_pem())
    }

    #[test]
    fn a_vip_with_a_chain_of_its_own_presents_its_bytes_and_signs_with_its_keys_longest_signatures() {
        use rustls::pki_types::pem::PemObject;
        let vip: IpAddr = "198.18.0.20".parse().unwrap();
        let (chain, key) = foreign_chain(vip);
        let names = vec!["shop.example".to_string(), vip.to_string()];
        let own = own_chain(chain.as_bytes(), key.as_bytes(), &names).unwrap();
        let signer = own.key.choose_scheme(&[SignatureScheme::ECDSA_NISTP384_SHA384]).expect("a P-384 key");
        let lengths: std::collections::BTreeSet<usize> =
            (0..64u8).map(|i| signer.sign(&[i; 32]).unwrap().len()).collect();
        assert_eq!(lengths, [104].into(), "P-384's longest DER signature, every time");
        let vips = [VipTls { own: vec![own], ..VipTls::issued("edge", vec![vip]) }];
        let (identities, client) = vip_pki(&vips, KeyAlgorithm::EcdsaP256).unwrap();
        let given: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(chain.as_bytes()).collect::<Result<_, _>>().unwrap();
        let identity = &identities[0].1;
        for server in [&identity.https, identity.https_mutual.as_ref().unwrap()] {
            let c = handshake(&client, &server.0, vip).unwrap();
            assert_eq!(c.peer_certificates(), Some(&given[..]), "the user's own chain, byte for byte");
        }
    }

    #[test]
    fn a_simulated_client_refuses_a_chain_that_is_neither_a_vips_own_nor_from_the_runs_ca() {
        let vip: IpAddr = "198.18.0.20".parse().unwrap();
        let (chain, key) = foreign_chain(vip);
        let names = vec![vip.to_string()];
        let stranger = own_chain(chain.as_bytes(), key.as_bytes(), &names).unwrap();
        let (_, client) = vip_pki(&[VipTls::issued("edge", vec![vip])], KeyAlgorithm::EcdsaP256).unwrap();
        let server = VipIdentity::with_key(stranger, None).unwrap();
        let e = handshake(&client, &server.https.0, vip).expect_err("an unknown issuer");
        assert!(matches!(e, rustls::Error::InvalidCertificate(_)), "{e}");
    }
}
