//! What the world's nodes authenticate with: the VIPs' certificates and the clients'
//! trust in them, the region edges' QUIC connection-ID ciphers, and each node's backbone
//! keys (from the seed, as `lab up` derives them from its secret).

use std::net::IpAddr;
use std::sync::Arc;

use anyedge_topology::ListenerProtocol;
use anyedge_topology::Topology;
use anyedge_topology::nodes::PeerLists;

use crate::SimError;

/// Certificates and keys the world's clients and region edges hold: the VIPs' identity
/// and the clients' trust in it when a listener is HTTPS or QUIC, and each region's
/// QUIC connection-ID cipher.
pub(super) struct Pki {
    /// Each VIP's identity by address (the lab's certificate shapes, one per VIP).
    pub(super) vip_identities: Vec<(IpAddr, anyedge_region::identity::VipIdentity)>,
    pub(super) tls_client: Option<Arc<rustls::ClientConfig>>,
    /// QUIC clients' configurations by the protocol they offer in ALPN (empty: none).
    pub(super) quic_clients: std::collections::BTreeMap<Vec<u8>, quinn_proto::ClientConfig>,
    /// How backbone envelopes are tagged this run.
    pub(super) tags: anyedge_ccn::Tags,
    /// The region's edge routes QUIC by the node an ID names, as a QUIC-LB load
    /// balancer holding the key does.
    pub(super) cid_ciphers: Vec<anyedge_ccn::CidCipher>,
}

impl Pki {
    pub(super) fn new(t: &Topology, tags: anyedge_ccn::Tags) -> Result<Pki, SimError> {
        let secret = anyedge_ccn::BackboneSecret::from_seed(t.seed);
        let cid_ciphers =
            (0..t.regions.len() as u16).map(|r| anyedge_ccn::CidCipher::new(&secret.cid_key(r))).collect();
        let quic_clients = std::collections::BTreeMap::new();
        let mut pki = Pki { vip_identities: Vec::new(), tls_client: None, quic_clients, cid_ciphers, tags };
        let listeners = || t.vips.iter().flat_map(|v| &v.listeners);
        if !listeners().any(|l| l.protocol.has_tls() || l.protocol == ListenerProtocol::Quic) {
            return Ok(pki);
        }
        let vips = crate::tls::vips(t)?;
        let (identities, client) = crate::tls::vip_pki(&vips, t.tls.algorithm)?;
        for l in listeners().filter(|l| l.protocol == ListenerProtocol::Quic) {
            let offer = crate::tls::quic_offer(&l.alpn);
            if let std::collections::btree_map::Entry::Vacant(e) = pki.quic_clients.entry(offer) {
                let config = crate::tls::quic_client(&client, e.key())?;
                e.insert(config);
            }
        }
        pki.vip_identities = identities;
        pki.tls_client = Some(client);
        Ok(pki)
    }
}

/// A node's backbone keys: from the seed, the same derivation `lab up` makes from its
/// random secret (each peer's when the node first talks with it), tagging as the run
/// asks, its peer list from (or into) `lists`. The simulator's clock starts at 0.
pub(super) fn backbone_auth(
    t: &Topology,
    me: anyedge_ccn::NodeId,
    tags: anyedge_ccn::Tags,
    lists: &mut PeerLists,
) -> anyedge_ccn::AuthConfig {
    let secret = anyedge_ccn::BackboneSecret::from_seed(t.seed);
    anyedge_ccn::AuthConfig { tags, ..anyedge_topology::nodes::backbone_auth_derived(t, &secret, me, lists) }
}
