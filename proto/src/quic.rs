//! Just enough of QUIC's wire image to route a packet: the destination connection ID,
//! which carries the CLB node that issued it.

/// Length of the connection IDs CLB nodes issue.
pub const CID_LEN: usize = 8;
/// First byte of a CID issued by a CLB node; the second names the node.
pub const CID_MARKER: u8 = 0xae;

/// The node byte (as sent: encrypted under the region's key) and the six random bytes
/// of a QUIC packet's destination connection ID, if it is one a CLB node issued (long or
/// short header); `anyedge_ccn::cid_node` reads the node back.
pub fn cid_parts(udp_payload: &[u8]) -> Option<(u8, [u8; CID_LEN - 2])> {
    let first = *udp_payload.first()?;
    let dcid = if first & 0x80 != 0 {
        let len = usize::from(*udp_payload.get(5)?);
        udp_payload.get(6..6 + len)?
    } else {
        udp_payload.get(1..1 + CID_LEN)?
    };
    if dcid.len() != CID_LEN || dcid[0] != CID_MARKER {
        return None;
    }
    let mut nonce = [0u8; CID_LEN - 2];
    nonce.copy_from_slice(&dcid[2..]);
    Some((dcid[1], nonce))
}
