//! The TLS identity HTTPS, TCP SSL and QUIC listeners present in a run: a private CA and
//! one server certificate for every VIP address, generated at start (rcgen, the
//! topology's `tls.algorithm`, ECDSA P-256 by default, as a lab's), and the client
//! configuration that trusts that CA (with a client certificate from it, for mutual-TLS
//! listeners).
//!
//! Handshakes have the same sizes in every run (the bytes differ, the timing does not):
//! the certificates have the lab's shapes, serial numbers are fixed, and every
//! signature, in a certificate or a
//! handshake, has its algorithm's longest length. An ECDSA signature is DER, whose
//! length varies with its random nonce (70–72 bytes on P-256), so the simulator signs
//! again until it has that length ([`FixedLength`]: one signature in four has it).

use std::net::IpAddr;
use std::sync::Arc;

use anyedge_region::identity::{KeyAlgorithm, VipIdentity};
use rcgen::{CertificateParams, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};

/// How many times a signature is made before one of the longest length is given up on:
/// (3/4)^256 is 1e-32.
const SIGN_TRIES: usize = 256;

/// Each VIP's identity (one-way and mutual; `(name, addresses)` as the lab names them)
/// by address, and the clients' configuration: it trusts the CA and holds a client
/// certificate from it, which it presents when a listener asks (`mtls: true`). The
/// certificates have the lab's shapes ([`anyedge_region::identity::shape`]), with fixed
/// serial numbers.
#[allow(clippy::type_complexity)]
pub fn vip_pki(
    vips: &[(String, Vec<IpAddr>)],
    algorithm: KeyAlgorithm,
) -> Result<(Vec<(IpAddr, VipIdentity)>, Arc<rustls::ClientConfig>), String> {
    use anyedge_region::identity::shape;
    let err = |e: &dyn std::fmt::Display| format!("TLS set-up: {e}");
    let ca_key = algorithm.generate().map_err(|e| err(&e))?;
    let ca_params = shape::ca(1u64.to_be_bytes());
    let ca_cert = longest(algorithm, || ca_params.self_signed(&ca_key).map(|c| c.der().clone()))?;
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |params: CertificateParams| -> Result<(CertificateDer<'static>, KeyPair), String> {
        let key = algorithm.generate().map_err(|e| err(&e))?;
        let cert = longest(algorithm, || params.signed_by(&key, &issuer).map(|c| c.der().clone()))?;
        Ok((cert, key))
    };
    let mut identities = Vec::new();
    for (i, (name, addrs)) in vips.iter().enumerate() {
        let (cert, key) = leaf(shape::vip(name, addrs, (3 + i as u64).to_be_bytes()))?;
        let server = certified(vec![cert, ca_cert.clone()], &key, algorithm)?;
        let identity = VipIdentity::with_key(server, Some(ca_cert.clone()))?;
        identities.extend(addrs.iter().map(|a| (*a, identity.clone())));
    }
    let (client_cert, client_key) = leaf(shape::vip_client(2u64.to_be_bytes()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.clone()).map_err(|e| err(&e))?;
    let client_key = certified(vec![client_cert, ca_cert], &client_key, algorithm)?;
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| err(&e))?
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(ClientKey(client_key)));
    client.resumption = rustls::client::Resumption::disabled();
    Ok((identities, Arc::new(client)))
}

/// A certificate made by `make` (which signs it afresh each call) whose signature has
/// `algorithm`'s longest length.
fn longest(
    algorithm: KeyAlgorithm,
    make: impl Fn() -> Result<CertificateDer<'static>, rcgen::Error>,
) -> Result<CertificateDer<'static>, String> {
    let mut cert = make().map_err(|e| format!("TLS set-up: {e}"))?;
    for _ in 1..SIGN_TRIES {
        if signature_len(&cert) == Some(algorithm.signature_len_max()) {
            break;
        }
        cert = make().map_err(|e| format!("TLS set-up: {e}"))?;
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
) -> Result<Arc<CertifiedKey>, String> {
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = rustls::crypto::ring::default_provider();
    let inner = provider.key_provider.load_private_key(der).map_err(|e| format!("TLS set-up: {e}"))?;
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
pub fn quic_client(client: &Arc<rustls::ClientConfig>, alpn: &[u8]) -> Result<quinn_proto::ClientConfig, String> {
    use quinn_proto::crypto::rustls::QuicClientConfig;
    let mut offering = (**client).clone();
    offering.alpn_protocols = if alpn.is_empty() { Vec::new() } else { vec![alpn.to_vec()] };
    let client = QuicClientConfig::try_from(Arc::new(offering)).map_err(|e| format!("QUIC set-up: {e}"))?;
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
                    let (_, client) = vip_pki(&[("edge".into(), vec![vip])], algorithm).unwrap();
                    let key = client.client_auth_cert_resolver.resolve(&[], &[]).expect("a client certificate");
                    key.cert.iter().map(|c| c.len()).collect()
                })
                .collect();
            assert_eq!(lens.len(), 1, "{algorithm:?}: chains of {lens:?} bytes");
        }
    }

    #[test]
    fn a_client_completes_a_handshake_with_the_vip_in_every_algorithm_mutual_tls_included() {
        let vip: IpAddr = "198.18.0.20".parse().unwrap();
        for algorithm in KeyAlgorithm::ALL {
            let (identities, client) = vip_pki(&[("edge".into(), vec![vip])], algorithm).unwrap();
            let identity = &identities[0].1;
            for server in [&identity.https, identity.https_mutual.as_ref().unwrap()] {
                let name = rustls::pki_types::ServerName::IpAddress(vip.into());
                let mut c = rustls::ClientConnection::new(client.clone(), name).unwrap();
                let mut s = rustls::ServerConnection::new(server.0.clone()).unwrap();
                for _ in 0..4 {
                    let mut wire = Vec::new();
                    c.write_tls(&mut wire).unwrap();
                    s.read_tls(&mut &wire[..]).unwrap();
                    s.process_new_packets().unwrap_or_else(|e| panic!("{algorithm:?}: server: {e}"));
                    let mut back = Vec::new();
                    s.write_tls(&mut back).unwrap();
                    c.read_tls(&mut &back[..]).unwrap();
                    c.process_new_packets().unwrap_or_else(|e| panic!("{algorithm:?}: client: {e}"));
                }
                assert!(!c.is_handshaking() && !s.is_handshaking(), "{algorithm:?}: the handshake completed");
            }
        }
    }
}
