//! Backbone authentication, sans-IO: each node holds a key per peer and direction
//! (derived from one backbone secret: random at `lab up`, from the seed in the
//! simulator — the same derivation and the same checks either way), seals what it sends
//! in an `anyedge_proto::seal` envelope (a 128-bit AES-256-GCM tag over header and payload,
//! a sequence number per peer and kind) and opens what it receives: a datagram with a bad
//! tag, for another node, from a stranger, of the wrong kind, or replayed is refused with
//! the reason, and only an authentic one moves the replay window.
//!
//! Sequence numbers start at the sender's boot time in nanoseconds (wall clock in the
//! lab, virtual in the simulator) and count up, so a restarted sender is ahead of every
//! number it used before and its peers' windows take it without a handshake. A
//! restarted receiver starts with empty windows: a packet captured before its restart
//! can be replayed to it once, until the sender's next packet — the price of keeping no
//! state across restarts.
//!
//! The tag is AES-256-GCM's with the header as associated data and the payload as the
//! text, encrypted in a scratch copy and dropped (the payload stays readable, as the
//! dissector and the shapers need; [`gcm_tag`]). Version 2 tagged with ChaCha20-Poly1305
//! over the whole envelope as associated data: over a quarter of the CPU moving bulk TCP
//! through the lab went to its four Poly1305 passes over each super-packet; ring's
//! AES-GCM makes a tag as strong (128 bits, one nonce per key and number) at 1.8 times
//! the speed on a super-packet, a copy included, and in 60 % of the time on a 100-byte
//! packet. GCM needs a nonce never used twice with one key: the
//! nonce is salt ‖ kind ‖ sequence number, the key is per sender and receiver, sequence
//! numbers only grow within a start and start past the previous start's (clock above),
//! and the salt — drawn at random at every start in the lab — keeps a start apart from
//! an earlier one even if the wall clock was set back in between. Within one process,
//! each kind is sealed toward a peer by one keyring only (the core, the prober and the
//! probe answerer seal different kinds), so two keyrings never share a nonce.
//!
//! The simulator may tag with [`Tags::Fast`] instead: a keyed 128-bit hash (foldhash's
//! quality hasher: one pass over the nonce and envelope under a seed drawn from the key,
//! and a second seed's hash of that result and the nonce for the other 64 bits — so 64
//! bits of the tag depend on the bytes, and a blind forgery passes one time in 2^64) in
//! the same place, checked the same way — a packet with a wrong tag, for another
//! node, from a stranger, of the wrong kind or replayed is refused as before. It is not
//! a MAC against an adversary who sees tags and adapts (the simulator has none: its
//! forgeries are its own fault injections); it is a tenth of the work, and simulated time
//! never depends on a tag's bytes. The lab and deployments always use the AEAD.

use std::collections::BTreeMap;

use anyedge_proto::seal::{self, Kind, TAG_LEN};
use ring::{aead, hmac};

use crate::ComponentRng;

/// A node on the backbone, as envelopes name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeId {
    Pop(u16),
    Clb {
        region: u16,
        node: u16,
    },
    /// A backend host: its position among its region's hosts.
    Backend {
        region: u16,
        host: u16,
    },
}

/// Nodes per region (CLB nodes, backend hosts) an id can name.
pub const REGION_NODES_MAX: u16 = 1 << 12;
/// The bits of a regional id that name the node: as many as [`REGION_NODES_MAX`] needs.
const REGION_NODE_MASK: u16 = REGION_NODES_MAX - 1;
const _: () = assert!(REGION_NODES_MAX.is_power_of_two() && REGION_NODE_MASK == 0x0fff, "12 bits name a node");

impl NodeId {
    /// The 32 bits an envelope carries: the kind in the top 4, region in the next 16.
    pub fn to_wire(self) -> u32 {
        let regional =
            |kind: u32, region: u16, n: u16| kind << 28 | u32::from(region) << 12 | u32::from(n & REGION_NODE_MASK);
        let wire = match self {
            NodeId::Pop(p) => 1 << 28 | u32::from(p),
            NodeId::Clb { region, node } => regional(2, region, node),
            NodeId::Backend { region, host } => regional(3, region, host),
        };
        debug_assert!(
            matches!(self, NodeId::Clb { node: n, .. } | NodeId::Backend { host: n, .. } if n >= REGION_NODES_MAX)
                || NodeId::from_wire(wire) == Some(self),
            "an id in range survives the wire"
        );
        wire
    }

    pub fn from_wire(v: u32) -> Option<NodeId> {
        let (region, n) = ((v >> 12 & 0xffff) as u16, v as u16 & REGION_NODE_MASK);
        debug_assert!(n < REGION_NODES_MAX);
        match v >> 28 {
            1 if v >> 16 & 0x0fff == 0 => Some(NodeId::Pop(v as u16)),
            2 => Some(NodeId::Clb { region, node: n }),
            3 => Some(NodeId::Backend { region, host: n }),
            _ => None,
        }
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeId::Pop(p) => write!(f, "pop#{p}"),
            NodeId::Clb { region, node } => write!(f, "clb#{region}/{node}"),
            NodeId::Backend { region, host } => write!(f, "backend#{region}/{host}"),
        }
    }
}

/// A key's bytes.
pub type KeyBytes = [u8; 32];

/// The keys one node holds for one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerKeys {
    pub peer: NodeId,
    /// What this node signs with toward the peer.
    pub send: KeyBytes,
    /// What the peer signs with toward this node.
    pub recv: KeyBytes,
}

/// The secret every backbone key derives from. Only `lab up` and the simulator hold it;
/// each lab node gets just its own [`PeerKeys`].
#[derive(Clone)]
pub struct BackboneSecret(KeyBytes);

impl BackboneSecret {
    /// The simulator's: from the root seed, so a run replays byte for byte.
    pub fn from_seed(seed: u64) -> BackboneSecret {
        let mut rng = ComponentRng::new(seed, "backbone/secret");
        let mut k = [0u8; 32];
        for chunk in k.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        BackboneSecret(k)
    }

    /// A lab's: from the operating system's random source.
    pub fn generate() -> Result<BackboneSecret, NoRandomness> {
        use ring::rand::SecureRandom;
        let mut k = [0u8; 32];
        ring::rand::SystemRandom::new().fill(&mut k).map_err(|_| NoRandomness)?;
        Ok(BackboneSecret(k))
    }

    /// A secret kept from an earlier `render` (`backbone.secret`), so nodes rendered then and
    /// now share their keys.
    pub fn from_bytes(bytes: KeyBytes) -> BackboneSecret {
        BackboneSecret(bytes)
    }

    /// The secret's bytes (to keep beside the CA that rendered a deployment).
    pub fn bytes(&self) -> &KeyBytes {
        &self.0
    }

    /// The key `from` signs with toward `to`.
    pub fn key(&self, from: NodeId, to: NodeId) -> KeyBytes {
        self.derive(b"anyedge backbone v1", &[&from.to_wire().to_be_bytes(), &to.to_wire().to_be_bytes()])
    }

    /// HMAC-SHA256 under the secret of `label` followed by `parts`: every key derives so.
    fn derive(&self, label: &[u8], parts: &[&[u8]]) -> KeyBytes {
        let mut input = label.to_vec();
        for part in parts {
            input.extend_from_slice(part);
        }
        let mut k = [0u8; 32];
        k.copy_from_slice(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &self.0), &input).as_ref());
        k
    }

    /// The key of node `me`'s own secrets ([`AuthConfig::node_secret`]) when its peers'
    /// keys are derived on use rather than listed.
    fn node_key(&self, me: NodeId) -> KeyBytes {
        self.derive(b"anyedge node v1", &[&me.to_wire().to_be_bytes()])
    }

    /// What node `me` holds for talking with each of `peers`.
    pub fn keys_for(&self, me: NodeId, peers: &[NodeId]) -> Vec<PeerKeys> {
        peers.iter().map(|&peer| PeerKeys { peer, send: self.key(me, peer), recv: self.key(peer, me) }).collect()
    }

    /// Region `region`'s key for the routing bits of its CLB nodes' QUIC connection IDs
    /// ([`CidCipher`]): the region's CLB nodes and every POP hold it, nobody else.
    pub fn cid_key(&self, region: u16) -> KeyBytes {
        self.derive(b"anyedge quic cid v1", &[&region.to_be_bytes()])
    }
}

/// Keys a node derives from the backbone secret the first time it talks with a peer,
/// instead of holding them listed: the simulator's (whose secret comes from the seed),
/// where a POP may talk with each of a thousand CLB nodes but talks with a few, and a
/// listed keyring per node grew as POPs × CLB nodes. The same keys as listed ones
/// ([`BackboneSecret::keys_for`]), the same peers.
#[derive(Clone)]
pub struct DerivedKeys {
    pub secret: BackboneSecret,
    pub me: NodeId,
    /// The peers it may talk with (shared between nodes with the same peers).
    pub peers: std::sync::Arc<PeerList>,
}

/// Node ids sorted by their wire form (one integer compare a step of a search), without
/// repeats: the peers a keyring may talk with, shareable between keyrings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerList {
    wires: Vec<u32>,
    ids: Vec<NodeId>,
}

impl PeerList {
    pub fn new(ids: impl IntoIterator<Item = NodeId>) -> std::sync::Arc<PeerList> {
        let mut by_wire: Vec<(u32, NodeId)> = ids.into_iter().map(|id| (id.to_wire(), id)).collect();
        by_wire.sort_unstable();
        by_wire.dedup();
        let (wires, ids) = by_wire.into_iter().unzip();
        std::sync::Arc::new(PeerList { wires, ids })
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Where `id` is, if listed.
    fn find(&self, id: &NodeId) -> Option<usize> {
        let i = self.wires.binary_search(&id.to_wire()).ok()?;
        (self.ids[i] == *id).then_some(i)
    }
}

impl std::fmt::Debug for DerivedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DerivedKeys").field("me", &self.me).field("peers", &self.peers.len()).finish()
    }
}

impl PartialEq for DerivedKeys {
    fn eq(&self, other: &DerivedKeys) -> bool {
        self.secret.0 == other.secret.0 && self.me == other.me && self.peers == other.peers
    }
}

impl Eq for DerivedKeys {}

/// The routing bits of a CLB node's QUIC connection IDs, encrypted as the QUIC-LB draft
/// does (draft-ietf-quic-load-balancers): the node byte is XORed with a mask that
/// AES-256 draws from the ID's own random bytes under the region's key, so an observer
/// without the key cannot tell which node issued an ID, or that two IDs share a node;
/// a POP with the key reads the node back. One AES block a QUIC packet (ring's QUIC
/// header-protection primitive, which is exactly AES-ECB of a 16-byte sample).
pub struct CidCipher {
    key: KeyBytes,
    aes: aead::quic::HeaderProtectionKey,
}

impl CidCipher {
    pub fn new(key: &KeyBytes) -> CidCipher {
        // 32 bytes is AES-256's key length: this cannot fail.
        let aes = aead::quic::HeaderProtectionKey::new(&aead::quic::AES_256, key).expect("a 256-bit key");
        CidCipher { key: *key, aes }
    }

    /// The key a region's CLB nodes derive QUIC stateless-reset tokens from (RFC 9000
    /// §10.3): the same on every node of the region and across restarts, so a node that
    /// restarted, or took over another's IDs, resets a connection it does not know with
    /// the token the client was given, and the client opens a new one at once (the QUIC-LB
    /// design) instead of waiting out its idle timeout. Derived under its own label, so
    /// it reveals nothing of the ID key.
    pub fn reset_key(&self) -> KeyBytes {
        let mut k = [0u8; 32];
        k.copy_from_slice(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &self.key), b"anyedge quic reset v1").as_ref());
        k
    }

    /// The mask for the node byte of an ID whose random bytes are `nonce` (at most 16).
    pub fn mask(&self, nonce: &[u8]) -> u8 {
        let mut sample = [0u8; 16];
        debug_assert!(nonce.len() <= 16, "an ID's random part is at most one AES block");
        let n = nonce.len().min(16);
        sample[..n].copy_from_slice(&nonce[..n]);
        // Cannot fail for a 16-byte sample; 0 (the clear byte) if ring ever refused.
        self.aes.new_mask(&sample).map_or(0, |m| m[0])
    }
}

impl Clone for CidCipher {
    fn clone(&self) -> CidCipher {
        CidCipher::new(&self.key)
    }
}

impl std::fmt::Debug for CidCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CidCipher(..)")
    }
}

impl PartialEq for CidCipher {
    fn eq(&self, other: &CidCipher) -> bool {
        same(&self.key, &other.key)
    }
}

impl Eq for CidCipher {}

/// The CLB node a QUIC packet's destination connection ID routes to, if it carries one
/// of ours: the node byte read back with the region's `cipher` (in the clear without
/// one), modulo the region's `nodes`. Client-chosen initial IDs are routed by flow hash.
pub fn cid_node(udp_payload: &[u8], nodes: u16, cipher: Option<&CidCipher>) -> Option<u16> {
    let (node, nonce) = anyedge_proto::quic::cid_parts(udp_payload)?;
    let node = node ^ cipher.map_or(0, |c| c.mask(&nonce));
    let routed = (nodes > 0).then(|| u16::from(node) % nodes);
    debug_assert!(routed.is_none_or(|n| n < nodes));
    routed
}

/// How envelopes are tagged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Tags {
    /// AES-256-GCM (the lab, deployments, and the simulator with `--auth real`,
    /// whose captures then carry the lab's exact bytes).
    #[default]
    Aead,
    /// The simulator's default: a keyed 128-bit hash of the same length (module docs).
    Fast,
}

impl Tags {
    /// The name a report and the command line give it.
    pub fn name(self) -> &'static str {
        match self {
            Tags::Aead => "real",
            Tags::Fast => "fast",
        }
    }
}

/// What a core needs to seal and open: its keys, where its clock's zero lies in
/// wall-clock nanoseconds (0 in the simulator, whose clock starts at 0 for every run),
/// and the salt of this start (random in the lab; 0 in the simulator, whose virtual
/// clock alone keeps every start's sequence numbers ahead of the last).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    pub keys: Vec<PeerKeys>,
    /// Instead of `keys`: keys derived as peers are first used (the simulator's).
    pub derived: Option<DerivedKeys>,
    pub epoch_ns: u64,
    pub salt: u32,
    /// QUIC connection-ID keys by region ([`BackboneSecret::cid_key`]): a POP holds every
    /// region's, a CLB node its own region's.
    pub cid_keys: Vec<(u16, KeyBytes)>,
    /// How its envelopes are tagged.
    pub tags: Tags,
}

/// A keyed pseudo-random function (HMAC-SHA256): values nobody without the key can
/// compute or predict from earlier ones (a CLB node's QUIC connection IDs).
#[derive(Clone)]
pub struct Prf(hmac::Key);

impl std::fmt::Debug for Prf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prf(..)")
    }
}

impl Prf {
    pub fn new(key: &[u8]) -> Prf {
        Prf(hmac::Key::new(hmac::HMAC_SHA256, key))
    }

    pub fn eval(&self, input: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(hmac::sign(&self.0, input).as_ref());
        out
    }
}

impl AuthConfig {
    /// The cipher of region `region`'s QUIC connection IDs, if this node holds its key.
    pub fn cid_cipher(&self, region: u16) -> Option<CidCipher> {
        self.cid_keys.iter().find(|(r, _)| *r == region).map(|(_, k)| CidCipher::new(k))
    }

    /// A secret of this node's own for `label`: derived from every key it holds, this
    /// start's salt and its epoch, so it differs per lab, node and start, and no one
    /// without the node's keys computes it (in the simulator: from the seeded keys, so a
    /// run replays).
    pub fn node_secret(&self, label: &str) -> [u8; 32] {
        let mut material = Vec::with_capacity(self.keys.len() * 64);
        for k in &self.keys {
            material.extend_from_slice(&k.send);
            material.extend_from_slice(&k.recv);
        }
        debug_assert_eq!(material.len(), self.keys.len() * 64);
        if let Some(d) = &self.derived {
            // Derived keys: the node's own key from the secret stands for them.
            material.extend_from_slice(&d.secret.node_key(d.me));
        }
        let mut input = b"anyedge node secret v1 ".to_vec();
        input.extend_from_slice(label.as_bytes());
        input.extend_from_slice(&self.salt.to_be_bytes());
        input.extend_from_slice(&self.epoch_ns.to_be_bytes());
        Prf::new(&material).eval(&input)
    }

    /// The keyring of node `me` starting at `now_ns` on its clock.
    pub fn keyring(&self, me: NodeId, now_ns: u64) -> Keyring {
        let boot_ns = self.epoch_ns.saturating_add(now_ns);
        let ring = match &self.derived {
            Some(d) => {
                debug_assert!(d.me == me && self.keys.is_empty(), "derived keys are the node's only keys");
                Keyring::derived(d, boot_ns, self.tags)
            }
            None => Keyring::with_tags(me, &self.keys, boot_ns, self.tags),
        };
        ring.salted(self.salt)
    }

    /// A salt for a process starting now, from the operating system's random source.
    pub fn random_salt() -> Result<u32, NoRandomness> {
        use ring::rand::SecureRandom;
        let mut b = [0u8; 4];
        ring::rand::SystemRandom::new().fill(&mut b).map_err(|_| NoRandomness)?;
        Ok(u32::from_be_bytes(b) & SALT_MASK)
    }
}

/// The operating system gave no random bytes (a lab's secrets and salts need them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoRandomness;

impl std::fmt::Display for NoRandomness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no system randomness")
    }
}

impl std::error::Error for NoRandomness {}

/// The salt bits an envelope carries.
pub const SALT_MASK: u32 = 0x00ff_ffff;

/// Why a datagram was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// Not an envelope (too short, unknown version or kind).
    Malformed,
    /// An envelope of another kind than this port takes.
    WrongKind,
    /// Addressed to another node.
    Misdirected,
    /// From a node this one holds no key for.
    UnknownPeer,
    /// The tag does not match: forged or altered.
    BadTag,
    /// A sequence number already taken.
    Replayed,
    /// Older than the replay window reaches.
    TooOld,
}

impl AuthError {
    /// A stable name for drop counters.
    pub fn name(&self) -> &'static str {
        match self {
            AuthError::Malformed => "auth_malformed",
            AuthError::WrongKind => "auth_wrong_kind",
            AuthError::Misdirected => "auth_misdirected",
            AuthError::UnknownPeer => "auth_unknown_peer",
            AuthError::BadTag => "auth_bad_tag",
            AuthError::Replayed => "auth_replayed",
            AuthError::TooOld => "auth_too_old",
        }
    }
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Sequence numbers a replay window remembers behind the highest one seen: reordering
/// deeper than this (packets, per peer and kind) is taken for a replay.
pub const WINDOW: u64 = 8192;
const WORDS: usize = (WINDOW / 64) as usize;

/// Which of the last [`WINDOW`] sequence numbers have been taken.
#[derive(Debug, Clone, Default)]
pub struct ReplayWindow {
    /// The highest sequence number taken (0: none yet).
    top: u64,
    /// Made when the first number is taken: a node keeps a window per peer and kind, and
    /// most pairs never use most kinds (a POP never syncs, a CLB node's POP peers send no
    /// backend packets), 1 KB each in a world of thousands of peers.
    bits: Option<Box<[u64; WORDS]>>,
}

impl ReplayWindow {
    fn bit(seq: u64) -> (usize, u64) {
        let (word, bit): (usize, u64) = ((seq / 64 % WORDS as u64) as usize, 1 << (seq % 64));
        debug_assert!(word < WORDS && bit.is_power_of_two());
        (word, bit)
    }

    /// Ok when `seq` is new and inside the window.
    pub fn check(&self, seq: u64) -> Result<(), AuthError> {
        if seq == 0 {
            return Err(AuthError::TooOld);
        }
        if seq > self.top || self.top == 0 {
            return Ok(());
        }
        if self.top - seq >= WINDOW {
            return Err(AuthError::TooOld);
        }
        debug_assert!(seq <= self.top && self.top - seq < WINDOW);
        let (w, b) = Self::bit(seq);
        let taken = self.bits.as_ref().is_some_and(|bits| bits[w] & b != 0);
        if taken { Err(AuthError::Replayed) } else { Ok(()) }
    }

    /// Marks `seq` taken (after [`ReplayWindow::check`] and the tag passed).
    pub fn take(&mut self, seq: u64) {
        debug_assert!(self.check(seq).is_ok(), "only a number check passed is taken");
        let top_before = self.top;
        let bits = self.bits.get_or_insert_with(|| Box::new([0; WORDS]));
        if seq > self.top {
            let advance = seq - self.top;
            if advance >= WINDOW || self.top == 0 {
                bits.fill(0);
            } else {
                for s in self.top + 1..seq {
                    let (w, b) = Self::bit(s);
                    bits[w] &= !b;
                }
            }
            self.top = seq;
        }
        let (w, b) = Self::bit(seq);
        bits[w] |= b;
        debug_assert!(self.top >= top_before, "the window only moves forward");
        debug_assert!(self.check(seq) == Err(AuthError::Replayed), "a taken number is refused from now on");
        debug_assert!(seq <= self.top && self.top - seq < WINDOW, "a taken number lies inside the window");
    }
}

/// A tag key: AES-256-GCM's (ring's), or [`Tags::Fast`]'s two hash seeds.
enum TagKey {
    Aead(Box<aead::LessSafeKey>),
    Fast([u64; 2]),
}

/// AES-256-GCM's tag (NIST SP 800-38D) over `aad` and `payload`, the ciphertext dropped:
/// `payload` is encrypted in `scratch`, a copy, so the envelope itself stays readable. A
/// tag over the plaintext this way is as hard to forge as GCM's over a ciphertext: both
/// are GHASH under the secret H of bytes the forger knows, masked with a block only the
/// key makes. Ring's AES-GCM hashes associated data a block at a time and the text it
/// encrypts eight blocks at a time with VAES and VPCLMULQDQ where the CPU has them, so
/// the payload goes in as text: 5.6 GB/s on a 64 KB super-packet on this project's
/// machines, where the Poly1305 of version 2 made 3.1.
fn gcm_tag(
    key: &aead::LessSafeKey,
    nonce: [u8; aead::NONCE_LEN],
    aad: &[u8],
    payload: &[u8],
    scratch: &mut Vec<u8>,
) -> Option<[u8; TAG_LEN]> {
    scratch.clear();
    scratch.extend_from_slice(payload);
    let sealed =
        key.seal_in_place_separate_tag(aead::Nonce::assume_unique_for_key(nonce), aead::Aad::from(aad), scratch).ok();
    // Its ciphertext is of no use: emptied, the buffer keeps only its capacity.
    scratch.clear();
    let mut t = [0u8; TAG_LEN];
    t.copy_from_slice(sealed?.as_ref());
    Some(t)
}

impl TagKey {
    fn new(bytes: &KeyBytes, tags: Tags) -> TagKey {
        match tags {
            Tags::Aead => TagKey::Aead(Box::new(aead_key(bytes))),
            Tags::Fast => {
                let word = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
                TagKey::Fast([word(0) ^ word(2), word(1) ^ word(3)])
            }
        }
    }
}

struct Peer {
    send: TagKey,
    recv: TagKey,
    next_seq: [u64; Kind::ALL.len()],
    windows: [ReplayWindow; Kind::ALL.len()],
}

impl Peer {
    fn new(send: &KeyBytes, recv: &KeyBytes, boot_ns: u64, tags: Tags) -> Peer {
        Peer {
            send: TagKey::new(send, tags),
            recv: TagKey::new(recv, tags),
            next_seq: [boot_ns.max(1); Kind::ALL.len()],
            windows: Default::default(),
        }
    }
}

/// One node's keys, outgoing sequence numbers and replay windows.
pub struct Keyring {
    me: NodeId,
    salt: u32,
    peers: Peers,
    /// Where [`gcm_tag`] encrypts its copy (as long as the longest envelope yet).
    scratch: Vec<u8>,
}

/// Peers by id: the ids sorted in a table of their own, searched by halves (a few cache
/// lines for hundreds of peers, where a tree walks a node per level); beside each id the
/// slot of its state, which is made when the peer is first used if its keys are derived
/// (so state is as large as the peers a node talks with, not those it may).
struct Peers {
    /// Each peer's id, sorted by its wire form.
    list: std::sync::Arc<PeerList>,
    /// Per listed peer: where its state is (`UNMADE` until first use, derived keys).
    slot: Vec<u32>,
    state: Vec<Peer>,
    derive: Option<Derive>,
}

/// What a peer's state is made from on its first use.
struct Derive {
    secret: BackboneSecret,
    me: NodeId,
    boot_ns: u64,
    tags: Tags,
}

/// The slot of a peer not used yet.
const UNMADE: u32 = u32::MAX;

impl Peers {
    /// From (id, state) pairs; a later pair for an id replaces an earlier one.
    fn new(pairs: impl Iterator<Item = (NodeId, Peer)>) -> Peers {
        let sorted: BTreeMap<u32, (NodeId, Peer)> = pairs.map(|(id, p)| (id.to_wire(), (id, p))).collect();
        let mut list = PeerList::default();
        let mut peers = Peers { list: Default::default(), slot: Vec::new(), state: Vec::new(), derive: None };
        for (wire, (id, state)) in sorted {
            peers.slot.push(peers.state.len() as u32);
            list.wires.push(wire);
            list.ids.push(id);
            peers.state.push(state);
        }
        peers.list = std::sync::Arc::new(list);
        peers
    }

    /// Peers `ids`, each made from `derive` when first used.
    fn derived(list: &std::sync::Arc<PeerList>, derive: Derive) -> Peers {
        Peers { slot: vec![UNMADE; list.len()], list: list.clone(), state: Vec::new(), derive: Some(derive) }
    }

    fn len(&self) -> usize {
        self.list.len()
    }

    fn contains_key(&self, id: &NodeId) -> bool {
        self.list.find(id).is_some()
    }

    fn get_mut(&mut self, id: &NodeId) -> Option<&mut Peer> {
        let i = self.list.find(id)?;
        if self.slot[i] == UNMADE {
            let d = self.derive.as_ref()?;
            let peer = Peer::new(&d.secret.key(d.me, *id), &d.secret.key(*id, d.me), d.boot_ns, d.tags);
            self.slot[i] = self.state.len() as u32;
            self.state.push(peer);
        }
        debug_assert!((self.slot[i] as usize) < self.state.len(), "a made peer's slot holds its state");
        self.state.get_mut(self.slot[i] as usize)
    }
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("me", &self.me).field("peers", &self.peers.len()).finish()
    }
}

fn aead_key(bytes: &KeyBytes) -> aead::LessSafeKey {
    // 32 bytes is AES-256's key length: this cannot fail.
    aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_256_GCM, bytes).expect("a 256-bit key"))
}

fn nonce_bytes(salt: u32, kind: Kind, seq: u64) -> [u8; aead::NONCE_LEN] {
    let mut n = [0u8; aead::NONCE_LEN];
    n[..3].copy_from_slice(&salt.to_be_bytes()[1..]);
    n[3] = kind as u8;
    n[4..].copy_from_slice(&seq.to_be_bytes());
    // Unique per key: the salt is this start's, the sequence number never repeats a kind.
    debug_assert!(salt <= SALT_MASK && seq > 0);
    n
}

/// The tag over `covered` (an envelope's header and payload) of an envelope of `kind`
/// with `salt` and `seq`; `None` if ring refuses (it cannot for an envelope's length, but
/// a tag that was not computed must never stand in for one that was).
fn tag(
    key: &TagKey,
    (salt, kind, seq): (u32, Kind, u64),
    covered: &[u8],
    scratch: &mut Vec<u8>,
) -> Option<[u8; TAG_LEN]> {
    let mut t = [0u8; TAG_LEN];
    match key {
        TagKey::Aead(key) => {
            let (header, payload) = covered.split_at(seal::HEADER_LEN.min(covered.len()));
            t = gcm_tag(key, nonce_bytes(salt, kind, seq), header, payload, scratch)?;
        }
        TagKey::Fast([first, second]) => {
            use std::hash::{BuildHasher, Hasher};
            debug_assert!(salt <= SALT_MASK && seq > 0);
            let nonce = u64::from(salt) << 8 | kind as u64;
            // One pass over the bytes (it was one per half: a tenth of a small world's
            // instructions went to this).
            let mut h = foldhash::quality::FixedState::with_seed(*first).build_hasher();
            h.write_u64(nonce);
            h.write_u64(seq);
            h.write(covered);
            let over_bytes = h.finish();
            let mut g = foldhash::quality::FixedState::with_seed(*second).build_hasher();
            g.write_u64(over_bytes);
            g.write_u64(nonce);
            g.write_u64(seq);
            t[..8].copy_from_slice(&over_bytes.to_le_bytes());
            t[8..].copy_from_slice(&g.finish().to_le_bytes());
        }
    }
    Some(t)
}

/// Equal in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    debug_assert_eq!(a.len(), TAG_LEN, "only tags are compared");
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Keyring {
    /// Node `me` with `keys`; its sequence numbers start at `boot_ns` (at least 1).
    pub fn new(me: NodeId, keys: &[PeerKeys], boot_ns: u64) -> Keyring {
        Keyring::with_tags(me, keys, boot_ns, Tags::Aead)
    }

    /// The same, tagging with `tags`.
    pub fn with_tags(me: NodeId, keys: &[PeerKeys], boot_ns: u64, tags: Tags) -> Keyring {
        let peers = Peers::new(keys.iter().map(|k| (k.peer, Peer::new(&k.send, &k.recv, boot_ns, tags))));
        Keyring { me, salt: 0, peers, scratch: Vec::new() }
    }

    /// Node `d.me` with keys for `d.peers` derived from `d.secret` as each is first used:
    /// it seals and opens exactly as a keyring listing them (`with_tags` of
    /// `d.secret.keys_for(d.me, &d.peers)`) does.
    pub fn derived(d: &DerivedKeys, boot_ns: u64, tags: Tags) -> Keyring {
        let derive = Derive { secret: d.secret.clone(), me: d.me, boot_ns, tags };
        Keyring { me: d.me, salt: 0, peers: Peers::derived(&d.peers, derive), scratch: Vec::new() }
    }

    /// The same keyring sealing with `salt` (its low 24 bits).
    pub fn salted(mut self, salt: u32) -> Keyring {
        self.salt = salt & SALT_MASK;
        self
    }

    pub fn me(&self) -> NodeId {
        self.me
    }

    /// Whether this node holds keys for `peer`.
    pub fn knows(&self, peer: NodeId) -> bool {
        self.peers.contains_key(&peer)
    }

    /// `payload` in an envelope of `kind` for `to`; `None` when this node has no key for it.
    pub fn seal(&mut self, to: NodeId, kind: Kind, payload: &[u8]) -> Option<Vec<u8>> {
        self.seal_parts(to, kind, &[], payload)
    }

    /// Like [`Keyring::seal`], for a payload of `head` (a CCN header, an offload shim)
    /// then `body` (the packet), each copied straight into the envelope.
    pub fn seal_parts(&mut self, to: NodeId, kind: Kind, head: &[u8], body: &[u8]) -> Option<Vec<u8>> {
        let me = self.me;
        let peer = self.peers.get_mut(&to)?;
        let seq = &mut peer.next_seq[kind.index()];
        debug_assert!(*seq > 0, "0 is never sent: every window refuses it");
        let repr = seal::Repr { kind, salt: self.salt, sender: me.to_wire(), receiver: to.to_wire(), seq: *seq };
        *seq = seq.checked_add(1)?;
        let mut bytes = repr.emit_parts(head, body);
        let covered = bytes.len() - TAG_LEN;
        let t = tag(&peer.send, (repr.salt, kind, repr.seq), &bytes[..covered], &mut self.scratch)?;
        bytes[covered..].copy_from_slice(&t);
        Some(bytes)
    }

    /// The sender and payload of an authentic, fresh envelope of `kind` for this node.
    pub fn open<'a>(&mut self, kind: Kind, bytes: &'a [u8]) -> Result<(NodeId, &'a [u8]), AuthError> {
        let packet = seal::Packet::new_checked(bytes).map_err(|_| AuthError::Malformed)?;
        let repr = seal::Repr::parse(&packet).map_err(|_| AuthError::Malformed)?;
        if repr.kind != kind {
            return Err(AuthError::WrongKind);
        }
        if repr.receiver != self.me.to_wire() {
            return Err(AuthError::Misdirected);
        }
        let from = NodeId::from_wire(repr.sender).ok_or(AuthError::UnknownPeer)?;
        let peer = self.peers.get_mut(&from).ok_or(AuthError::UnknownPeer)?;
        let window = &mut peer.windows[kind.index()];
        window.check(repr.seq)?;
        let expected = tag(&peer.recv, (repr.salt, kind, repr.seq), packet.covered(), &mut self.scratch);
        if !expected.is_some_and(|t| same(&t, packet.tag())) {
            return Err(AuthError::BadTag);
        }
        window.take(repr.seq);
        debug_assert!(bytes.len() >= seal::OVERHEAD, "new_checked");
        let end = bytes.len() - TAG_LEN;
        Ok((from, &bytes[seal::HEADER_LEN..end]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POP: NodeId = NodeId::Pop(3);
    const CLB: NodeId = NodeId::Clb { region: 1, node: 0 };

    fn pair(secret: &BackboneSecret) -> (Keyring, Keyring) {
        (Keyring::new(POP, &secret.keys_for(POP, &[CLB]), 1000), Keyring::new(CLB, &secret.keys_for(CLB, &[POP]), 50))
    }

    #[test]
    fn node_ids_survive_the_wire_and_nothing_else_parses() {
        for id in [NodeId::Pop(0), NodeId::Pop(65535), CLB, NodeId::Backend { region: 65535, host: 4095 }] {
            assert_eq!(NodeId::from_wire(id.to_wire()), Some(id));
        }
        assert_eq!(NodeId::from_wire(0), None);
        assert_eq!(NodeId::from_wire(0x1001_0000), None, "a POP id with region bits");
        assert_eq!(NodeId::from_wire(0x4000_0000), None);
    }

    #[test]
    fn a_sealed_datagram_opens_once_at_its_receiver_only() {
        let (mut pop, mut clb) = pair(&BackboneSecret::from_seed(1));
        let sealed = pop.seal(CLB, Kind::Data, b"hello").unwrap();
        assert_eq!(sealed.len(), 5 + seal::OVERHEAD);
        assert_eq!(clb.open(Kind::Data, &sealed), Ok((POP, &b"hello"[..])));
        assert_eq!(clb.open(Kind::Data, &sealed), Err(AuthError::Replayed));
        let mut other = Keyring::new(NodeId::Clb { region: 1, node: 1 }, &[], 1);
        assert_eq!(other.open(Kind::Data, &sealed), Err(AuthError::Misdirected));
        let sealed = pop.seal(CLB, Kind::Data, b"again").unwrap();
        assert_eq!(clb.open(Kind::Probe, &sealed), Err(AuthError::WrongKind));
        assert_eq!(pop.seal(NodeId::Pop(9), Kind::Data, b"x"), None, "no key for a stranger");
    }

    #[test]
    fn a_keyring_deriving_its_keys_on_use_seals_and_opens_as_one_listing_them() {
        let secret = BackboneSecret::from_seed(1);
        let clbs: Vec<NodeId> = (0..50).map(|node| NodeId::Clb { region: 1, node }).collect();
        let derived = DerivedKeys { secret: secret.clone(), me: POP, peers: PeerList::new(clbs.clone()) };
        for tags in [Tags::Aead, Tags::Fast] {
            let mut lazy = Keyring::derived(&derived, 1000, tags);
            let mut listed = Keyring::with_tags(POP, &secret.keys_for(POP, &clbs), 1000, tags);
            for to in [clbs[7], clbs[7], clbs[0], clbs[49]] {
                assert_eq!(lazy.seal(to, Kind::Data, b"same bytes"), listed.seal(to, Kind::Data, b"same bytes"));
            }
            assert_eq!(lazy.peers.state.len(), 3, "state for the peers used, not the 50 it may use");
            assert!(lazy.knows(clbs[30]) && !lazy.knows(NodeId::Pop(9)));
            assert_eq!(lazy.seal(NodeId::Pop(9), Kind::Data, b"x"), None, "no key for a stranger");
            // A CLB node listing its key opens what the lazy POP sealed, once.
            let mut clb = Keyring::with_tags(clbs[30], &secret.keys_for(clbs[30], &[POP]), 5, tags);
            let sealed = lazy.seal(clbs[30], Kind::Probe, b"probe").unwrap();
            assert_eq!(clb.open(Kind::Probe, &sealed), Ok((POP, &b"probe"[..])));
            assert_eq!(clb.open(Kind::Probe, &sealed), Err(AuthError::Replayed));
            // And the other way: the lazy side opens, refusing a replay and a forgery.
            let answer = clb.seal(POP, Kind::ProbeAnswer, b"answer").unwrap();
            assert_eq!(lazy.open(Kind::ProbeAnswer, &answer), Ok((clbs[30], &b"answer"[..])));
            assert_eq!(lazy.open(Kind::ProbeAnswer, &answer), Err(AuthError::Replayed));
            let mut forged = clb.seal(POP, Kind::ProbeAnswer, b"answer").unwrap();
            let last = forged.len() - 1;
            forged[last] ^= 1;
            assert_eq!(lazy.open(Kind::ProbeAnswer, &forged), Err(AuthError::BadTag));
        }
    }

    #[test]
    fn any_changed_bit_or_another_secret_fails_the_tag() {
        let (mut pop, mut clb) = pair(&BackboneSecret::from_seed(1));
        let sealed = pop.seal(CLB, Kind::Data, b"client packet with pop id").unwrap();
        for i in seal::HEADER_LEN..sealed.len() {
            let mut forged = sealed.clone();
            forged[i] ^= 0x01;
            assert_eq!(clb.open(Kind::Data, &forged), Err(AuthError::BadTag), "byte {i}");
        }
        let (mut stranger, _) = pair(&BackboneSecret::from_seed(2));
        let forged = stranger.seal(CLB, Kind::Data, b"x").unwrap();
        assert_eq!(clb.open(Kind::Data, &forged), Err(AuthError::BadTag));
        // Forgeries did not move the window: the genuine packet still opens.
        assert!(clb.open(Kind::Data, &sealed).is_ok());
    }

    #[test]
    fn fast_tags_refuse_what_the_aead_refuses_and_neither_kind_opens_the_others() {
        let secret = BackboneSecret::from_seed(1);
        let fast = |me, peer, boot| Keyring::with_tags(me, &secret.keys_for(me, &[peer]), boot, Tags::Fast);
        let (mut pop, mut clb) = (fast(POP, CLB, 1000), fast(CLB, POP, 50));
        let sealed = pop.seal(CLB, Kind::Data, b"client packet with pop id").unwrap();
        assert_eq!(sealed.len(), 25 + seal::OVERHEAD, "the same envelope and tag length");
        for i in 1..sealed.len() {
            let mut forged = sealed.clone();
            forged[i] ^= 0x01;
            assert!(clb.open(Kind::Data, &forged).is_err(), "byte {i} changed");
        }
        let (mut stranger, _) = pair(&BackboneSecret::from_seed(2));
        let aead = stranger.seal(CLB, Kind::Data, b"x").unwrap();
        assert_eq!(clb.open(Kind::Data, &aead), Err(AuthError::BadTag), "another secret");
        let (mut aead_pop, mut aead_clb) = pair(&secret);
        let aead = aead_pop.seal(CLB, Kind::Data, b"x").unwrap();
        assert_eq!(clb.open(Kind::Data, &aead), Err(AuthError::BadTag), "an AEAD tag is not a fast one");
        let other = fast(POP, CLB, 2000).seal(CLB, Kind::Data, b"x").unwrap();
        assert_eq!(aead_clb.open(Kind::Data, &other), Err(AuthError::BadTag), "nor the other way");
        assert_eq!(clb.open(Kind::Data, &sealed), Ok((POP, &b"client packet with pop id"[..])));
        assert_eq!(clb.open(Kind::Data, &sealed), Err(AuthError::Replayed));
        let probe = pop.seal(CLB, Kind::Data, b"again").unwrap();
        assert_eq!(clb.open(Kind::Probe, &probe), Err(AuthError::WrongKind));
    }

    #[test]
    fn the_salt_is_authenticated_and_a_new_salt_gives_the_same_number_another_tag() {
        let secret = BackboneSecret::from_seed(1);
        let keys = secret.keys_for(POP, &[CLB]);
        let mut before = Keyring::new(POP, &keys, 1000).salted(0x12_3456);
        let mut clb = Keyring::new(CLB, &secret.keys_for(CLB, &[POP]), 50);
        let sealed = before.seal(CLB, Kind::Data, b"same bytes").unwrap();
        for i in 1..4 {
            let mut forged = sealed.clone();
            forged[i] ^= 0x80;
            assert_eq!(clb.open(Kind::Data, &forged), Err(AuthError::BadTag), "salt byte {i}");
        }
        // A restart whose clock was set back reuses a sequence number, never a nonce.
        let mut after = Keyring::new(POP, &keys, 1000).salted(0x65_4321);
        let again = after.seal(CLB, Kind::Data, b"same bytes").unwrap();
        assert_eq!(sealed[4..seal::HEADER_LEN], again[4..seal::HEADER_LEN], "same sender, receiver and number");
        assert_ne!(sealed[sealed.len() - TAG_LEN..], again[again.len() - TAG_LEN..], "another tag");
        assert_eq!(clb.open(Kind::Data, &sealed), Ok((POP, &b"same bytes"[..])));
        assert_eq!(after.salted(0xff00_0007).salt, 7, "only 24 bits travel");
    }

    #[test]
    fn reordering_inside_the_window_passes_and_older_is_refused() {
        let (mut pop, mut clb) = pair(&BackboneSecret::from_seed(1));
        let sealed: Vec<Vec<u8>> = (0..WINDOW + 10).map(|_| pop.seal(CLB, Kind::Data, b"x").unwrap()).collect();
        // The last one first, then the rest backwards down to the window's edge.
        let last = sealed.len() - 1;
        assert!(clb.open(Kind::Data, &sealed[last]).is_ok());
        for s in sealed[..last].iter().rev().take(WINDOW as usize - 1) {
            assert!(clb.open(Kind::Data, s).is_ok());
        }
        assert_eq!(clb.open(Kind::Data, &sealed[last - WINDOW as usize]), Err(AuthError::TooOld));
        assert_eq!(clb.open(Kind::Data, &sealed[last - 1]), Err(AuthError::Replayed));
    }

    #[test]
    fn a_restarted_sender_is_ahead_of_its_old_numbers() {
        let secret = BackboneSecret::from_seed(1);
        let (mut pop, mut clb) = pair(&secret);
        let old = pop.seal(CLB, Kind::Data, b"before").unwrap();
        assert!(clb.open(Kind::Data, &old).is_ok());
        let mut restarted = Keyring::new(POP, &secret.keys_for(POP, &[CLB]), 2_000_000);
        assert!(clb.open(Kind::Data, &restarted.seal(CLB, Kind::Data, b"after").unwrap()).is_ok());
        assert_eq!(clb.open(Kind::Data, &old), Err(AuthError::TooOld));
    }

    #[test]
    fn each_kind_counts_on_its_own() {
        let (mut pop, mut clb) = pair(&BackboneSecret::from_seed(1));
        let data = pop.seal(CLB, Kind::Data, b"d").unwrap();
        let probes: Vec<Vec<u8>> = (0..WINDOW + 5).map(|_| pop.seal(CLB, Kind::Probe, b"p").unwrap()).collect();
        for p in &probes {
            assert!(clb.open(Kind::Probe, p).is_ok());
        }
        assert!(clb.open(Kind::Data, &data).is_ok(), "probes sent after it do not age a data packet");
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// The tag is AES-256-GCM's: the GCM specification's test cases 13, 14 and 16
    /// (McGrew and Viega, "The Galois/Counter Mode of Operation"), whose tags a sealer
    /// that dropped the text, or hashed it as associated data, would not give.
    #[test]
    fn the_tag_is_aes_256_gcms_on_the_specifications_test_vectors() {
        let cases = [
            ("00".repeat(32), "00".repeat(12), "", "", "530f8afbc74536b9a963b4f1c4cb738b"),
            ("00".repeat(32), "00".repeat(12), "", &"00".repeat(16)[..], "d0d1c8a799996bf0265b98b5d48ab919"),
            (
                "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308".to_string(),
                "cafebabefacedbaddecaf888".to_string(),
                "feedfacedeadbeeffeedfacedeadbeefabaddad2",
                "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
                 1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
                "76fc6ece0f4e1768cddf8853bb2d551b",
            ),
        ];
        let mut scratch = Vec::new();
        for (key, nonce, aad, text, expected) in cases {
            let key: KeyBytes = hex(&key).try_into().unwrap();
            let nonce: [u8; aead::NONCE_LEN] = hex(&nonce).try_into().unwrap();
            let t = gcm_tag(&aead_key(&key), nonce, &hex(aad), &hex(text), &mut scratch).unwrap();
            assert_eq!(t.to_vec(), hex(expected), "text {text:?}");
            assert!(scratch.is_empty(), "no text stays behind in the scratch copy");
        }
    }

    /// A super-packet's envelope, and envelopes around the 16-byte blocks, open at their
    /// receiver with the payload unchanged and readable on the wire; one bit changed
    /// anywhere in header, payload or tag, and it is refused.
    #[test]
    fn an_envelope_of_any_length_opens_as_sealed_and_not_once_a_bit_changes() {
        let (mut pop, mut clb) = pair(&BackboneSecret::from_seed(7));
        let data: Vec<u8> = (0..65_455u32).map(|i| (i * 31 % 251) as u8).collect();
        for len in (0..40).chain([1_400, 4_096, 65_455]) {
            let sealed = pop.seal(CLB, Kind::Data, &data[..len]).unwrap();
            assert_eq!(&sealed[seal::HEADER_LEN..seal::HEADER_LEN + len], &data[..len], "the payload travels clear");
            let total = sealed.len();
            for at in [0, 4, seal::HEADER_LEN - 1, seal::HEADER_LEN, seal::HEADER_LEN + len / 2, total - 1] {
                let mut bent = sealed.clone();
                bent[at] ^= 0x10;
                assert!(clb.open(Kind::Data, &bent).is_err(), "{len} bytes, bit changed at {at}");
            }
            assert_eq!(clb.open(Kind::Data, &sealed), Ok((POP, &data[..len])), "{len} bytes");
        }
    }
}
