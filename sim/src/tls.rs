//! The TLS identity HTTPS listeners present in a run: a private CA and one server
//! certificate for every VIP address, generated at start (rcgen, Ed25519), and the client
//! configuration that trusts that CA. Serial numbers and validity are fixed and Ed25519
//! signatures have one length, so handshakes have the same sizes in every run (the
//! bytes differ, the timing does not).

use std::net::IpAddr;
use std::sync::Arc;

use anyedge_region::l7::TlsTermination;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType, SerialNumber};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Server and client TLS configurations for the given VIP addresses.
pub fn vip_pki(vips: &[IpAddr]) -> Result<(TlsTermination, Arc<rustls::ClientConfig>), String> {
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
    let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(|e| err(&e))?;
    let mut leaf_params = CertificateParams::new(Vec::<String>::new()).map_err(|e| err(&e))?;
    leaf_params.subject_alt_names = vips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
    leaf_params.serial_number = Some(SerialNumber::from(2u64));
    validity(&mut leaf_params);
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).map_err(|e| err(&e))?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone(), ca_cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| err(&e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| err(&e))?;
    // Tickets would add records whose number depends on nothing we model.
    server.send_tls13_tickets = 0;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone()).map_err(|e| err(&e))?;
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| err(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.resumption = rustls::client::Resumption::disabled();
    Ok((anyedge_region::Shared(Arc::new(server)), Arc::new(client)))
}

/// QUIC server and client configurations over the same identity.
pub fn quic_configs(
    server: &TlsTermination,
    client: &Arc<rustls::ClientConfig>,
) -> Result<(anyedge_region::quic_listener::QuicTermination, quinn_proto::ClientConfig), String> {
    use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
    let err = |e: &dyn std::fmt::Display| format!("QUIC set-up: {e}");
    let server = QuicServerConfig::try_from(server.0.clone()).map_err(|e| err(&e))?;
    let client = QuicClientConfig::try_from(client.clone()).map_err(|e| err(&e))?;
    let server = quinn_proto::ServerConfig::with_crypto(Arc::new(server));
    let client = quinn_proto::ClientConfig::new(Arc::new(client));
    Ok((anyedge_region::Shared(Arc::new(server)), client))
}
