//! The TLS identity HTTPS, TCP SSL and QUIC listeners present in a run: a private CA and
//! one server certificate for every VIP address, generated at start (rcgen, Ed25519), and
//! the client configuration that trusts that CA (with a client certificate from it, for
//! mutual-TLS listeners). Serial numbers and validity are fixed and Ed25519
//! signatures have one length, so handshakes have the same sizes in every run (the
//! bytes differ, the timing does not).

use std::net::IpAddr;
use std::sync::Arc;

use anyedge_region::identity::VipIdentity;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType, SerialNumber};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The VIPs' identity (one-way and mutual) and the clients' configuration: it trusts the
/// CA and holds a client certificate from it, which it presents when a listener asks
/// (`mtls: true`).
pub fn vip_pki(vips: &[IpAddr]) -> Result<(VipIdentity, Arc<rustls::ClientConfig>), String> {
    let err = |e: &dyn std::fmt::Display| format!("TLS set-up: {e}");
    let validity = |p: &mut CertificateParams| {
        p.not_before = rcgen::date_time_ymd(2000, 1, 1);
        p.not_after = rcgen::date_time_ymd(2999, 12, 31);
    };
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(|e| err(&e))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(|e| err(&e))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.serial_number = Some(SerialNumber::from(1u64));
    validity(&mut ca_params);
    let ca_cert = ca_params.self_signed(&ca_key).map_err(|e| err(&e))?;
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |sans: Vec<SanType>,
                unit: Option<&str>,
                serial: u64|
     -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), String> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(|e| err(&e))?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| err(&e))?;
        params.subject_alt_names = sans;
        if let Some(unit) = unit {
            params.distinguished_name.push(rcgen::DnType::OrganizationalUnitName, unit);
        }
        params.serial_number = Some(SerialNumber::from(serial));
        validity(&mut params);
        let cert = params.signed_by(&key, &issuer).map_err(|e| err(&e))?;
        Ok((cert.der().clone(), PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))))
    };
    let (server_cert, server_key) = leaf(vips.iter().map(|ip| SanType::IpAddress(*ip)).collect(), None, 2)?;
    let (client_cert, client_key) = leaf(Vec::new(), Some(anyedge_region::identity::VIP_CLIENT_ROLE), 3)?;
    let chain = vec![server_cert, ca_cert.der().clone()];
    let identity = VipIdentity::new(chain, server_key, Some(ca_cert.der().clone()))?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone()).map_err(|e| err(&e))?;
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| err(&e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![client_cert, ca_cert.der().clone()], client_key)
        .map_err(|e| err(&e))?;
    client.resumption = rustls::client::Resumption::disabled();
    Ok((identity, Arc::new(client)))
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
