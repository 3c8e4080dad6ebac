//! Just enough of QUIC's wire image to route a packet: the destination connection ID,
//! which carries the CLB node that issued it.

/// Length of the connection IDs CLB nodes issue.
pub const CID_LEN: usize = 8;
/// First byte of a CID issued by a CLB node; the second names the node.
pub const CID_MARKER: u8 = 0xae;

/// The CLB node a QUIC packet's destination connection ID routes to, if it carries one
/// of ours (long or short header). Client-chosen initial IDs are routed by flow hash.
pub fn cid_node(udp_payload: &[u8], nodes: u16) -> Option<u16> {
    let first = *udp_payload.first()?;
    let dcid = if first & 0x80 != 0 {
        let len = usize::from(*udp_payload.get(5)?);
        udp_payload.get(6..6 + len)?
    } else {
        udp_payload.get(1..1 + CID_LEN)?
    };
    (dcid.len() == CID_LEN && dcid[0] == CID_MARKER && nodes > 0).then(|| u16::from(dcid[1]) % nodes)
}
