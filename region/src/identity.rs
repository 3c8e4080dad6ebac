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
use crate::termination::{QuicTermination, TerminationError, TlsTermination};

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
/// (curl and aioquic take it). RSA-2048 is what every client takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum KeyAlgorithm {
    #[default]
    EcdsaP256,
    EcdsaP384,
    Rsa2048,
    Ed25519,
}

impl KeyAlgorithm {
    pub const ALL: [KeyAlgorithm; 4] =
        [KeyAlgorithm::EcdsaP256, KeyAlgorithm::EcdsaP384, KeyAlgorithm::Rsa2048, KeyAlgorithm::Ed25519];

    /// The name a topology file gives it (`tls: { algorithm: NAME }`).
    pub fn name(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "ecdsa-p256",
            KeyAlgorithm::EcdsaP384 => "ecdsa-p384",
            KeyAlgorithm::Rsa2048 => "rsa-2048",
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
            KeyAlgorithm::Rsa2048 => &rcgen::PKCS_RSA_SHA256,
            KeyAlgorithm::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }

    /// A fresh key pair.
    pub fn generate(self) -> Result<rcgen::KeyPair, rcgen::Error> {
        if self != KeyAlgorithm::Rsa2048 {
            return rcgen::KeyPair::generate_for(self.rcgen());
        }
        use rand_core::SeedableRng;
        use rsa::pkcs8::EncodePrivateKey;
        let mut seed = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
            .map_err(|_| rcgen::Error::RingUnspecified)?;
        let mut rng = rand_chacha::ChaCha20Rng::from_seed(seed);
        let key = rsa::PrivateKey::new(&mut rng, 2048).map_err(|_| rcgen::Error::KeyGenerationUnavailable)?;
        let der = key.to_pkcs8_der().map_err(|_| rcgen::Error::KeyGenerationUnavailable)?;
        let der = rustls::pki_types::PrivatePkcs8KeyDer::from(der.as_bytes().to_vec());
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, self.rcgen())
    }

    /// The length of the longest signature it makes, bytes: an ECDSA signature is DER,
    /// two integers each a byte longer when its top bit is set, so its length varies
    /// with the nonce (70 to 72 bytes on P-256); an Ed25519 or RSA one has one length.
    pub fn signature_len_max(self) -> usize {
        match self {
            KeyAlgorithm::EcdsaP256 => 72,
            KeyAlgorithm::EcdsaP384 => 104,
            KeyAlgorithm::Rsa2048 => 256,
            KeyAlgorithm::Ed25519 => 64,
        }
    }
}

/// The certificates anyedge issues, one shape for both drivers: a lab's (and a rendered
/// deployment's) and the simulator's have the same fields, names and encodings, so their
/// handshakes are the same size; only keys, signatures and serial numbers' values
/// differ. Valid 2000-01-01 to 2999-12-31; serial numbers are 8 bytes, the first in
/// 0x40..=0x7f (one DER length).
pub mod shape {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType,
        SerialNumber,
    };
    use std::net::IpAddr;

    /// A serial number of the one length from any 8 bytes.
    pub fn serial(bytes: [u8; 8]) -> SerialNumber {
        let mut b = bytes;
        b[0] = 0x40 | (b[0] & 0x3f);
        SerialNumber::from_slice(&b)
    }

    fn base(serial_bytes: [u8; 8]) -> CertificateParams {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("no names to check");
        p.not_before = rcgen::date_time_ymd(2000, 1, 1);
        p.not_after = rcgen::date_time_ymd(2999, 12, 31);
        p.serial_number = Some(serial(serial_bytes));
        p
    }

    /// The CA that issues VIP certificates (in a lab, the nodes' too).
    pub fn ca(serial_bytes: [u8; 8]) -> CertificateParams {
        let mut p = base(serial_bytes);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, "anyedge lab control CA");
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p
    }

    /// VIP `name`'s server certificate: its name (a DNS name, when it is one) and its
    /// addresses in the SAN.
    pub fn vip(name: &str, addrs: &[IpAddr], serial_bytes: [u8; 8]) -> CertificateParams {
        let mut p = base(serial_bytes);
        p.distinguished_name.push(DnType::CommonName, format!("vip/{name}"));
        let dns = rcgen::string::Ia5String::try_from(name).ok().map(SanType::DnsName);
        p.subject_alt_names = dns.into_iter().chain(addrs.iter().map(|a| SanType::IpAddress(*a))).collect();
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p
    }

    /// What clients present to `mtls: true` listeners.
    pub fn vip_client(serial_bytes: [u8; 8]) -> CertificateParams {
        let mut p = base(serial_bytes);
        p.distinguished_name.push(DnType::CommonName, "client");
        p.distinguished_name.push(DnType::OrganizationalUnitName, super::VIP_CLIENT_ROLE);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p
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

fn err(e: impl std::fmt::Display) -> TerminationError {
    TerminationError::Tls(e.to_string())
}

fn server_config(
    keys: &[Arc<CertifiedKey>],
    clients: Option<Arc<dyn ClientCertVerifier>>,
) -> Result<rustls::ServerConfig, TerminationError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(err)?;
    let builder = match clients {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let named = keys.iter().map(|k| (names_of(k), k.clone())).collect();
    let mut config = builder.with_cert_resolver(Arc::new(ByServerName(named)));
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// QUIC with the certificate, offering no ALPN (each listener derives its own offer:
/// [`QuicTermination::with_alpn`]).
fn quic(config: &Arc<rustls::ServerConfig>) -> Result<QuicTermination, TerminationError> {
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
    ) -> Result<VipIdentity, TerminationError> {
        let provider = rustls::crypto::ring::default_provider();
        let signing = provider.key_provider.load_private_key(key).map_err(err)?;
        let certified = CertifiedKey::new(chain, signing);
        certified.keys_match().map_err(err)?;
        VipIdentity::with_key(Arc::new(certified), client_ca)
    }

    /// Listeners presenting `key` (a chain and what signs for it: the simulator's signs
    /// its handshakes with a signer of its own); mutual variants as [`VipIdentity::new`].
    pub fn with_key(
        key: Arc<CertifiedKey>,
        client_ca: Option<CertificateDer<'static>>,
    ) -> Result<VipIdentity, TerminationError> {
        VipIdentity::with_keys(vec![key], client_ca)
    }

    /// Listeners presenting one of `keys` by the name the client asks for (SNI; the
    /// first to a client that names none or none of theirs).
    pub fn with_keys(
        keys: Vec<Arc<CertifiedKey>>,
        client_ca: Option<CertificateDer<'static>>,
    ) -> Result<VipIdentity, TerminationError> {
        let chain = keys.first().map(|k| k.cert.clone()).unwrap_or_default();
        let tls = Arc::new(server_config(&keys, None)?);
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
                Some(Arc::new(server_config(&keys, Some(verifier))?))
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

/// Why a certificate chain of one's own (a VIP's `certificates:`) cannot be presented:
/// which file, and what about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnCertRefused {
    #[error("{0}")]
    Chain(String),
    #[error("{0}")]
    Key(String),
}

/// A full chain (PEM, leaf first, from any CA) and its key (PEM), checked as a browser
/// would take them at `now_unix`: the key is the leaf's, each certificate is signed by
/// the next (the last one's issuer being the root clients trust, which a full chain
/// leaves out), each is valid now, and the leaf names at least one of `names` (DNS names
/// or IP addresses, `*.` wildcards matching one label); what listeners present. With no
/// `now_unix` the dates are not judged: the simulator's runs do not depend on the day
/// they are made (a lab and a deployment judge them when they copy the files in).
pub fn own_key(
    chain_pem: &[u8],
    key_pem: &[u8],
    names: &[String],
    now_unix: Option<i64>,
) -> Result<Arc<CertifiedKey>, OwnCertRefused> {
    use rustls::pki_types::pem::PemObject;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| OwnCertRefused::Chain(format!("not PEM certificates: {e}")))?;
    if chain.is_empty() {
        return Err(OwnCertRefused::Chain("no certificate in it".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| OwnCertRefused::Key(format!("not a PEM private key: {e}")))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| OwnCertRefused::Key(format!("a key rustls cannot sign with: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|_| OwnCertRefused::Key("not the key of the chain's first certificate".into()))?;
    check_chain(&certified.cert, names, now_unix).map_err(OwnCertRefused::Chain)?;
    Ok(Arc::new(certified))
}

/// The chain's links, validity and names (see [`own_key`]). The reason is the text of
/// an [`OwnCertRefused::Chain`], which names the file.
// String: the text inside `OwnCertRefused::Chain`, the typed error callers see.
fn check_chain(chain: &[CertificateDer<'static>], names: &[String], now_unix: Option<i64>) -> Result<(), String> {
    let parsed: Vec<_> = chain
        .iter()
        .enumerate()
        .map(|(i, der)| {
            x509_parser::parse_x509_certificate(der).map(|(_, c)| c).map_err(|e| format!("certificate {}: {e}", i + 1))
        })
        .collect::<Result<_, _>>()?;
    let now = now_unix.map(x509_parser::time::ASN1Time::from_timestamp).transpose().map_err(|e| e.to_string())?;
    for (i, cert) in parsed.iter().enumerate() {
        let subject = cert.subject().to_string();
        if let Some(now) = now
            && !cert.validity().is_valid_at(now)
        {
            let v = cert.validity();
            return Err(format!(
                "certificate {} ({subject}) is not valid now: {} to {}",
                i + 1,
                v.not_before,
                v.not_after
            ));
        }
        let Some(issuer) = parsed.get(i + 1) else { continue };
        if cert.issuer() != issuer.subject() || cert.verify_signature(Some(issuer.public_key())).is_err() {
            return Err(format!(
                "certificate {} ({subject}) is not signed by certificate {}: give the full chain in order (leaf, then each intermediate)",
                i + 1,
                i + 2
            ));
        }
    }
    let leaf = &parsed[0];
    let named = leaf_names(leaf);
    if !names.iter().any(|n| named.iter().any(|c| covers(c, n))) {
        return Err(format!("certificate 1 names {} and none of the VIP's {}", named.join(", "), names.join(", ")));
    }
    Ok(())
}

/// The DNS names and addresses a certificate's subject alternative names give.
fn leaf_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok(Some(san)) = cert.subject_alternative_name() else { return Vec::new() };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
            GeneralName::IPAddress(a) => match a.len() {
                4 => <[u8; 4]>::try_from(*a).ok().map(|o| std::net::IpAddr::from(o).to_string()),
                16 => <[u8; 16]>::try_from(*a).ok().map(|o| std::net::IpAddr::from(o).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Whether a certificate's name `pattern` (`*.example.com` matches one label) covers `name`.
fn covers(pattern: &str, name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(rest) => name.split_once('.').is_some_and(|(label, tail)| !label.is_empty() && tail == rest),
        None => pattern == name,
    }
}

/// The names a certified key's leaf covers.
fn names_of(key: &CertifiedKey) -> Vec<String> {
    key.end_entity_cert()
        .ok()
        .and_then(|der| x509_parser::parse_x509_certificate(der).ok())
        .map_or_else(Vec::new, |(_, c)| leaf_names(&c))
}

/// Picks a VIP's certificate by the name a client asks for (SNI): the first that covers
/// it, else the first (a client that names none, or an address).
#[derive(Debug)]
struct ByServerName(Vec<(Vec<String>, Arc<CertifiedKey>)>);

impl rustls::server::ResolvesServerCert for ByServerName {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let asked = hello.server_name();
        let found = asked.and_then(|n| self.0.iter().find(|(names, _)| names.iter().any(|c| covers(c, n))));
        found.or(self.0.first()).map(|(_, key)| key.clone())
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

    /// A client of the VIP trusting `pki`'s CA, with its client certificate when asked.
    fn client_of(pki: &Pki, with_cert: bool) -> rustls::ClientConnection {
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
        rustls::ClientConnection::new(Arc::new(config), name).unwrap()
    }

    /// A handshake and one byte each way between a client and `server`, in memory.
    fn talk(server: &TlsTermination, pki: &Pki, with_cert: bool) -> Result<(), String> {
        let mut client = client_of(pki, with_cert);
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

    /// The HTTPS proxy hands rustls what it has for the client in one call (HTTP/2's frames
    /// can pass 64 KiB, rustls's default limit on what it buffers to send): every byte
    /// must reach the wire, in order (a GET of 20 MB over HTTP/2 broke after 350 KB when
    /// the tail past the limit was dropped).
    #[test]
    fn tls_write_puts_every_byte_on_the_wire_however_much_is_handed_over_at_once() {
        let pki = issue();
        let id = VipIdentity::new(pki.server.0.clone(), pki.server.1.clone_key(), None).unwrap();
        let mut client = client_of(&pki, false);
        let mut srv = rustls::ServerConnection::new(id.tls.0.clone()).unwrap();
        while client.is_handshaking() || srv.is_handshaking() {
            let mut wire = Vec::new();
            client.write_tls(&mut wire).unwrap();
            srv.read_tls(&mut &wire[..]).unwrap();
            srv.process_new_packets().unwrap();
            let mut back = Vec::new();
            srv.write_tls(&mut back).unwrap();
            client.read_tls(&mut &back[..]).unwrap();
            client.process_new_packets().unwrap();
        }
        let sent: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let (mut plaintext, mut wire) = (sent.clone(), Vec::new());
        crate::termination::tls_write(&mut srv, &mut plaintext, &mut wire);
        let mut got = Vec::new();
        crate::termination::tls_read(&mut client, &wire, &mut got).unwrap();
        got.extend(plaintext);
        assert_eq!(got.len(), sent.len(), "what was not written waits in the plaintext");
        assert!(got == sent, "in order");
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

    /// A root (not in the chain), an intermediate, and leaves it signs for `names`
    /// (valid `from`..`to`, years): each leaf's full chain (leaf, intermediate) and key,
    /// as PEM, and the root.
    struct Foreign {
        root: CertificateDer<'static>,
        issuer: Issuer<'static, KeyPair>,
        intermediate_pem: String,
    }

    impl Foreign {
        fn new() -> Foreign {
            let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let mut root = CertificateParams::new(Vec::<String>::new()).unwrap();
            root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            root.distinguished_name.push(DnType::CommonName, "Foreign Root");
            let root_cert = root.self_signed(&root_key).unwrap();
            let root_issuer = Issuer::new(root, root_key);
            let mid_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let mut mid = CertificateParams::new(Vec::<String>::new()).unwrap();
            mid.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            mid.distinguished_name.push(DnType::CommonName, "Foreign Intermediate");
            let mid_cert = mid.signed_by(&mid_key, &root_issuer).unwrap();
            Foreign {
                root: root_cert.der().clone(),
                issuer: Issuer::new(mid, mid_key),
                intermediate_pem: mid_cert.pem(),
            }
        }

        fn leaf(&self, names: &[&str], years: (i32, i32)) -> (String, String) {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
            p.distinguished_name.push(DnType::CommonName, names[0]);
            (p.not_before, p.not_after) = (rcgen::date_time_ymd(years.0, 1, 1), rcgen::date_time_ymd(years.1, 1, 1));
            let cert = p.signed_by(&key, &self.issuer).unwrap();
            (cert.pem() + &self.intermediate_pem, key.serialize_pem())
        }
    }

    /// 2026-11-28.
    const NOW: i64 = 1_795_824_000;

    fn own(chain: &str, key: &str, names: &[&str]) -> Result<Arc<CertifiedKey>, OwnCertRefused> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        own_key(chain.as_bytes(), key.as_bytes(), &names, Some(NOW))
    }

    #[test]
    fn a_chain_of_ones_own_is_taken_when_its_key_links_dates_and_names_hold_and_refused_naming_what_does_not() {
        let ca = Foreign::new();
        let (chain, key) = ca.leaf(&["shop.example", "*.shop.example"], (2026, 2027));
        own(&chain, &key, &["shop.example"]).expect("a good chain");
        own(&chain, &key, &["www.shop.example"]).expect("a wildcard covers one label");
        #[track_caller]
        fn refused(r: Result<Arc<CertifiedKey>, OwnCertRefused>) -> OwnCertRefused {
            r.expect_err("refused")
        }
        let (_, other_key) = ca.leaf(&["shop.example"], (2026, 2027));
        assert!(
            matches!(refused(own(&chain, &other_key, &["shop.example"])), OwnCertRefused::Key(w) if w.contains("not the key"))
        );
        let swapped = ca.intermediate_pem.clone() + &chain[..chain.find("-----END CERTIFICATE-----").unwrap() + 25];
        let e = refused(own(&swapped, &key, &["shop.example"]));
        assert!(matches!(&e, OwnCertRefused::Key(_) | OwnCertRefused::Chain(_)), "{e}");
        let (expired, expired_key) = ca.leaf(&["shop.example"], (2020, 2021));
        let e = refused(own(&expired, &expired_key, &["shop.example"])).to_string();
        assert!(e.contains("not valid now"), "{e}");
        let undated =
            |chain: &str, key: &str| own_key(chain.as_bytes(), key.as_bytes(), &["shop.example".into()], None);
        undated(&expired, &expired_key).expect("no day given (the simulator's): dates are not judged");
        assert!(undated(&chain, &other_key).is_err(), "the key is judged without a day");
        let e = refused(own(&chain, &key, &["a.b.shop.example", "other.example"])).to_string();
        assert!(e.contains("none of the VIP's") && e.contains("other.example"), "{e}");
        let stranger = Foreign::new();
        let (leaf, leaf_key) = stranger.leaf(&["shop.example"], (2026, 2027));
        let leaf_only = &leaf[..leaf.find("-----END CERTIFICATE-----").unwrap() + 25];
        let mixed = leaf_only.to_string() + "\n" + &ca.intermediate_pem;
        let e = refused(own(&mixed, &leaf_key, &["shop.example"])).to_string();
        assert!(e.contains("not signed by certificate 2"), "another CA's intermediate: {e}");
        assert!(matches!(refused(own("junk", &key, &["shop.example"])), OwnCertRefused::Chain(_)));
        assert!(matches!(refused(own(&chain, "junk", &["shop.example"])), OwnCertRefused::Key(_)));
    }

    /// The leaf a server presents to a client asking for `sni` (none: an address).
    fn presented(identity: &VipIdentity, root: &CertificateDer<'static>, sni: Option<&str>) -> Vec<String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.enable_sni = sni.is_some();
        let name = ServerName::try_from(sni.unwrap_or("shop.example").to_string()).unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut server = rustls::ServerConnection::new(identity.https.0.clone()).unwrap();
        for _ in 0..4 {
            let mut wire = Vec::new();
            client.write_tls(&mut wire).unwrap();
            server.read_tls(&mut &wire[..]).unwrap();
            let _ = server.process_new_packets();
            let mut back = Vec::new();
            server.write_tls(&mut back).unwrap();
            client.read_tls(&mut &back[..]).unwrap();
            let _ = client.process_new_packets();
        }
        let leaf = client.peer_certificates().expect("a certificate")[0].clone();
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
        leaf_names(&cert)
    }

    #[test]
    fn sni_picks_the_certificate_that_names_the_host_asked_for_and_the_first_goes_to_a_client_that_names_none() {
        let ca = Foreign::new();
        let (shop, shop_key) = ca.leaf(&["shop.example"], (2026, 2027));
        let (api, api_key) = ca.leaf(&["api.example"], (2026, 2027));
        let names = ["shop.example", "api.example"];
        let keys = vec![own(&shop, &shop_key, &names).unwrap(), own(&api, &api_key, &names).unwrap()];
        let identity = VipIdentity::with_keys(keys, None).unwrap();
        assert_eq!(presented(&identity, &ca.root, Some("api.example")), ["api.example"]);
        assert_eq!(presented(&identity, &ca.root, Some("shop.example")), ["shop.example"]);
        assert_eq!(presented(&identity, &ca.root, None), ["shop.example"], "no SNI: the first");
    }
}
