//! The server side of a VIP's TLS: one certificate chain and key make what its HTTPS and
//! TCP SSL listeners (rustls) and QUIC listeners (quinn-proto) terminate with — one-way,
//! and, given the CA whose client certificates it accepts, mutual (`mtls: true`). TLS 1.3
//! only, no session tickets (records whose number would depend on nothing the simulator
//! models). Both drivers build identities here: the simulator from its generated CA, the
//! lab from the certificates `lab up` issued.
//!
//! The CA that issues VIP client certificates may also issue other certificates (in the
//! lab and in a rendered deployment, the nodes' own), so a mutual listener also checks
//! the role: a client certificate must name [`VIP_CLIENT_ROLE`] as its only
//! organizational unit. A node's certificate (unit `pop`, `clb`, `control`, `ctl`) is
//! never a VIP client, though it chains to the same CA.

use std::sync::Arc;

use rustls::pki_types::UnixTime;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::Shared;
use crate::l7::TlsTermination;
use crate::quic_listener::QuicTermination;

/// What a VIP's TLS-terminating listeners present.
#[derive(Debug, Clone)]
pub struct VipIdentity {
    /// TCP SSL: TLS alone, no application protocol offered.
    pub tls: TlsTermination,
    /// HTTPS: the same, offering ALPN `h2` and `http/1.1` ([`HTTPS_ALPN`]).
    pub https: TlsTermination,
    pub quic: QuicTermination,
    /// The same certificate, client certificates from the CA required.
    pub tls_mutual: Option<TlsTermination>,
    pub https_mutual: Option<TlsTermination>,
    pub quic_mutual: Option<QuicTermination>,
}

/// What an HTTPS listener offers in ALPN, in its order of preference: HTTP/2, then
/// HTTP/1.1 (a client that offers neither, or no ALPN, speaks HTTP/1.1).
pub const HTTPS_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The same configuration offering the HTTPS listener's ALPN.
fn with_https_alpn(config: &rustls::ServerConfig) -> Arc<rustls::ServerConfig> {
    let mut https = config.clone();
    https.alpn_protocols = HTTPS_ALPN.iter().map(|p| p.to_vec()).collect();
    Arc::new(https)
}

/// The key algorithm of the certificates anyedge issues for VIPs (in a lab, a rendered
/// deployment and the simulator) and of the CA that issues them. ECDSA P-256, the
/// default, and P-384 are what browsers sign and verify (Chromium's BoringSSL, Firefox's
/// NSS and Safari); Ed25519 is not offered by any of them for a server's certificate
/// (curl and aioquic take it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum KeyAlgorithm {
    #[default]
    EcdsaP256,
    EcdsaP384,
    Ed25519,
}

impl KeyAlgorithm {
    pub const ALL: [KeyAlgorithm; 3] = [KeyAlgorithm::EcdsaP256, KeyAlgorithm::EcdsaP384, KeyAlgorithm::Ed25519];

    /// The name a topology file gives it (`tls: { algorithm: NAME }`).
    pub fn name(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "ecdsa-p256",
            KeyAlgorithm::EcdsaP384 => "ecdsa-p384",
            KeyAlgorithm::Ed25519 => "ed25519",
        }
    }

    pub fn from_name(name: &str) -> Option<KeyAlgorithm> {
        KeyAlgorithm::ALL.into_iter().find(|a| a.name() == name)
    }

    /// rcgen's name for it (signatures with SHA-256 on P-256, SHA-384 on P-384).
    pub fn rcgen(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyAlgorithm::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }

    /// A fresh key pair.
    pub fn generate(self) -> Result<rcgen::KeyPair, rcgen::Error> {
        rcgen::KeyPair::generate_for(self.rcgen())
    }

    /// The length of the longest signature it makes, bytes: an ECDSA signature is DER,
    /// two integers each a byte longer when its top bit is set, so its length varies
    /// with the nonce (70 to 72 bytes on P-256); an Ed25519 one has one length.
    pub fn signature_len_max(self) -> usize {
        match self {
            KeyAlgorithm::EcdsaP256 => 72,
            KeyAlgorithm::EcdsaP384 => 104,
            KeyAlgorithm::Ed25519 => 64,
        }
    }
}

/// The organizational unit a certificate must carry to be a VIP client.
pub const VIP_CLIENT_ROLE: &str = "vip-client";

/// Whether a certificate (DER) names [`VIP_CLIENT_ROLE`] as its one organizational unit.
pub fn is_vip_client(der: &[u8]) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return false;
    };
    let units: Vec<_> = cert.subject().iter_organizational_unit().map(|a| a.as_str()).collect();
    matches!(units[..], [Ok(VIP_CLIENT_ROLE)])
}

/// The CA's verifier, and then the role: see the module's doc.
#[derive(Debug)]
struct VipClientVerifier(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for VipClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.0.verify_client_cert(end_entity, intermediates, now)?;
        match is_vip_client(end_entity) {
            true => Ok(verified),
            false => Err(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

fn err(e: impl std::fmt::Display) -> String {
    format!("TLS identity: {e}")
}

fn server_config(
    key: &Arc<CertifiedKey>,
    clients: Option<Arc<dyn ClientCertVerifier>>,
) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(err)?;
    let builder = match clients {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key.clone())));
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// QUIC with the certificate, offering no ALPN (each listener derives its own offer:
/// [`QuicTermination::with_alpn`]).
fn quic(config: &Arc<rustls::ServerConfig>) -> Result<QuicTermination, String> {
    QuicTermination::new(config.clone(), &[])
}

impl VipIdentity {
    /// Listeners presenting `chain` (leaf first) signed with `key`; with `client_ca`,
    /// mutual-TLS variants that accept only client certificates it issued for the role
    /// [`VIP_CLIENT_ROLE`].
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        client_ca: Option<CertificateDer<'static>>,
    ) -> Result<VipIdentity, String> {
        let provider = rustls::crypto::ring::default_provider();
        let signing = provider.key_provider.load_private_key(key).map_err(err)?;
        let certified = CertifiedKey::new(chain, signing);
        certified.keys_match().map_err(err)?;
        VipIdentity::with_key(Arc::new(certified), client_ca)
    }

    /// Listeners presenting `key` (a chain and what signs for it: the simulator's signs
    /// its handshakes with a signer of its own); mutual variants as [`VipIdentity::new`].
    pub fn with_key(key: Arc<CertifiedKey>, client_ca: Option<CertificateDer<'static>>) -> Result<VipIdentity, String> {
        let chain = &key.cert;
        let tls = Arc::new(server_config(&key, None)?);
        let client_ca_given = client_ca.is_some();
        let mutual = match client_ca {
            None => None,
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca).map_err(err)?;
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(err)?;
                let verifier = Arc::new(VipClientVerifier(verifier));
                Some(Arc::new(server_config(&key, Some(verifier))?))
            }
        };
        debug_assert!(!chain.is_empty(), "rustls took a certificate chain");
        debug_assert_eq!(mutual.is_some(), client_ca_given, "mutual variants exactly when a client CA is given");
        Ok(VipIdentity {
            quic: quic(&tls)?,
            quic_mutual: mutual.as_ref().map(quic).transpose()?,
            https: Shared(with_https_alpn(&tls)),
            https_mutual: mutual.as_deref().map(with_https_alpn).map(Shared),
            tls: Shared(tls),
            tls_mutual: mutual.map(Shared),
        })
    }
}

/// A self-signed identity for the VIP address 198.18.0.20, and a root store that trusts
/// it: what the QUIC tests connect a real client with.
#[cfg(test)]
pub(crate) fn test_identity() -> (VipIdentity, rustls::RootCertStore) {
    use rcgen::{CertificateParams, KeyPair, SanType};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![SanType::IpAddress("198.18.0.20".parse().unwrap())];
    let cert = params.self_signed(&key).unwrap().der().clone();
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let identity = VipIdentity::new(vec![cert.clone()], der, None).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    (identity, roots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
    use rustls::pki_types::{PrivatePkcs8KeyDer, ServerName};

    struct Pki {
        ca: CertificateDer<'static>,
        server: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
        client: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
        /// A node's certificate from the same CA (role `pop`), as the lab issues one.
        node: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    }

    fn issue() -> Pki {
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap().der().clone();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |sans: Vec<SanType>, unit: Option<&str>| {
            let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.subject_alt_names = sans;
            if let Some(unit) = unit {
                p.distinguished_name.push(DnType::OrganizationalUnitName, unit);
            }
            let cert = p.signed_by(&key, &issuer).unwrap().der().clone();
            (vec![cert, ca.clone()], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))
        };
        let server = leaf(vec![SanType::IpAddress("198.18.0.20".parse().unwrap())], None);
        let client = leaf(Vec::new(), Some(VIP_CLIENT_ROLE));
        let node = leaf(Vec::new(), Some("pop"));
        Pki { ca, server, client, node }
    }

    /// A handshake and one byte each way between a client and `server`, in memory.
    fn talk(server: &TlsTermination, pki: &Pki, with_cert: bool) -> Result<(), String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match with_cert {
            true => builder.with_client_auth_cert(pki.client.0.clone(), pki.client.1.clone_key()).unwrap(),
            false => builder.with_no_client_auth(),
        };
        let name = ServerName::IpAddress("198.18.0.20".parse::<std::net::IpAddr>().unwrap().into());
        let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut srv = rustls::ServerConnection::new(server.0.clone()).unwrap();
        use std::io::{Read, Write};
        client.writer().write_all(b"x").unwrap();
        for _ in 0..10 {
            let mut wire = Vec::new();
            client.write_tls(&mut wire).unwrap();
            srv.read_tls(&mut &wire[..]).unwrap();
            srv.process_new_packets().map_err(|e| format!("server: {e}"))?;
            let mut back = Vec::new();
            srv.write_tls(&mut back).unwrap();
            client.read_tls(&mut &back[..]).unwrap();
            client.process_new_packets().map_err(|e| format!("client: {e}"))?;
        }
        let mut got = [0u8; 1];
        srv.reader().read_exact(&mut got).map_err(|e| format!("nothing arrived: {e}"))?;
        Ok(())
    }

    #[test]
    fn one_way_serves_anyone_and_mutual_only_holders_of_the_cas_vip_client_certificates_not_its_nodes() {
        let pki = issue();
        let id = VipIdentity::new(pki.server.0.clone(), pki.server.1.clone_key(), Some(pki.ca.clone())).unwrap();
        talk(&id.tls, &pki, false).expect("one-way, no client certificate");
        let mutual = id.tls_mutual.as_ref().expect("a mutual variant when a client CA is given");
        let refused = talk(mutual, &pki, false);
        assert!(refused.as_ref().is_err_and(|e| e.starts_with("server")), "{refused:?}");
        talk(mutual, &pki, true).expect("mutual, with the CA's client certificate");
        let stranger = issue();
        let pair = |p: &(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)| (p.0.clone(), p.1.clone_key());
        let as_node =
            Pki { ca: pki.ca.clone(), server: pair(&pki.server), client: pair(&pki.node), node: pair(&pki.node) };
        let refused = talk(mutual, &as_node, true);
        assert!(
            refused.as_ref().is_err_and(|e| e.starts_with("server")),
            "a node's certificate from the same CA: {refused:?}"
        );
        let foreign = Pki { ca: pki.ca.clone(), server: pki.server, client: stranger.client, node: stranger.node };
        assert!(talk(mutual, &foreign, true).is_err(), "a client certificate from another CA is refused");
        let none = VipIdentity::new(foreign.server.0.clone(), foreign.server.1.clone_key(), None).unwrap();
        assert!(none.tls_mutual.is_none() && none.quic_mutual.is_none());
    }
}
