//! SYN cookies for the layer-7 listeners: a CLB node answers a client's SYN with a SYN-ACK
//! whose initial sequence number is a keyed MAC of the connection (RFC 4987 §3.6, as
//! Linux's), so a SYN costs it nothing to remember; the node's own TCP stack is set up
//! only for an ACK that carries a cookie the node made in the last two periods.
//!
//! Cookie bits: period parity (1) · SACK permitted (1) · the client's window scale (4) ·
//! MSS index (3) · MAC (23). The MAC is HMAC-SHA256, under a secret of the node's own, of
//! the flow's addresses and ports, the client's initial sequence number, the period and
//! the option bits (so no bit of a cookie can be changed and still check out). A period
//! is 64 s; a cookie is good in its period and the next, which differ in parity.
//!
//! The window scale is what lets a proxied connection carry more than 64 KiB in flight
//! (RFC 7323): the SYN-ACK offers the node's own scale when the client offered one, and
//! the cookie remembers the client's, as Linux's cookies do in the timestamp option, but
//! needing no timestamps. So is SACK (RFC 2018): a client that permits it is offered it,
//! and the proxy's sender repairs every hole of a window in a round trip. Timestamps are
//! not offered (nothing to remember them in).

use anyedge_proto::FlowKey;

/// How long one cookie period lasts.
pub const PERIOD_NS: u64 = 64_000_000_000;

/// The MSS values a cookie can carry: the largest not above the client's is taken.
const MSS_TABLE: [u16; 8] = [536, 1_024, 1_200, 1_220, 1_360, 1_400, 1_440, 1_460];
const _: () = assert!(MSS_TABLE.len() == 8, "three bits of the cookie index it");

/// The largest window scale (RFC 7323 §2.3: a larger one is taken as 14).
pub const WINDOW_SCALE_MAX: u8 = 14;
/// The cookie's window-scale code for a client that offered none.
const NO_WINDOW_SCALE: u32 = 15;
const _: () = assert!((WINDOW_SCALE_MAX as u32) < NO_WINDOW_SCALE && NO_WINDOW_SCALE < 16, "four bits carry it");

/// What a good cookie tells of the client's SYN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Syn {
    /// The MSS the cookie carries (the largest of the table not above the client's).
    pub mss: u16,
    /// The client's window scale, `None` when its SYN offered none.
    pub window_scale: Option<u8>,
    /// Whether the client's SYN permitted SACK.
    pub sack: bool,
}

/// The options of a client's SYN that a cookie remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SynOptions {
    /// The MSS option (536 when absent, RFC 9293).
    pub mss: Option<u16>,
    /// The window scale option.
    pub window_scale: Option<u8>,
    /// The SACK-permitted option.
    pub sack: bool,
}

/// Bits of the MAC a cookie carries.
const MAC_BITS: u32 = 23;
const MAC_MASK: u32 = (1 << MAC_BITS) - 1;

/// Resets a node sends a second, at most, for segments of connections it does not know
/// (a restarted node's clients learn at once that their connection is gone and open a
/// new one, as a kernel's TCP tells them; past the budget, spoofed ACKs are dropped
/// unanswered). A reset is never larger than the segment it answers.
pub const RESETS_PER_S: u32 = 2_000;

/// The node's cookie secret, and its budget of resets for unknown connections.
#[derive(Debug)]
pub struct SynCookies {
    prf: anyedge_ccn::Prf,
    /// The second the budget counts in, and the resets sent in it.
    resets: (u64, u32),
}

impl SynCookies {
    pub fn new(secret: &[u8]) -> SynCookies {
        SynCookies { prf: anyedge_ccn::Prf::new(secret), resets: (0, 0) }
    }

    /// Whether a reset may go out now; counts it when it may.
    pub fn take_reset(&mut self, now_ns: u64) -> bool {
        let second = now_ns / 1_000_000_000;
        if self.resets.0 != second {
            self.resets = (second, 0);
        }
        let allowed = self.resets.1 < RESETS_PER_S;
        self.resets.1 += u32::from(allowed);
        debug_assert!(self.resets.1 <= RESETS_PER_S, "the budget is never overdrawn");
        allowed
    }

    fn mac(&self, key: &FlowKey, client_isn: u32, period: u64, options: u32) -> u32 {
        let mut input = Vec::with_capacity(48);
        for ip in [key.src, key.dst] {
            match ip {
                std::net::IpAddr::V4(a) => input.extend_from_slice(&a.octets()),
                std::net::IpAddr::V6(a) => input.extend_from_slice(&a.octets()),
            }
        }
        input.extend_from_slice(&key.src_port.to_be_bytes());
        input.extend_from_slice(&key.dst_port.to_be_bytes());
        input.extend_from_slice(&client_isn.to_be_bytes());
        input.extend_from_slice(&period.to_be_bytes());
        input.extend_from_slice(&options.to_be_bytes());
        debug_assert!(input.len() <= 2 * 16 + 2 * 2 + 4 + 8 + 4, "two addresses, two ports and three numbers");
        let out = self.prf.eval(&input);
        u32::from_be_bytes([0, out[0], out[1], out[2]]) & MAC_MASK
    }

    /// The initial sequence number of the SYN-ACK answering a SYN of `key` with sequence
    /// number `client_isn` and options `client`, and what the cookie carries of them.
    pub fn make(&self, key: &FlowKey, client_isn: u32, client: SynOptions, now_ns: u64) -> (u32, Syn) {
        let wanted = client.mss.unwrap_or(536);
        let index = MSS_TABLE.iter().rposition(|&m| m <= wanted).unwrap_or(0) as u32;
        let client_scale = client.window_scale;
        let scale = client_scale.map_or(NO_WINDOW_SCALE, |s| u32::from(s.min(WINDOW_SCALE_MAX)));
        let options = u32::from(client.sack) << 7 | scale << 3 | index;
        let period = now_ns / PERIOD_NS;
        let cookie = ((period & 1) as u32) << 31 | options << MAC_BITS | self.mac(key, client_isn, period, options);
        let syn = Syn {
            mss: MSS_TABLE[index as usize],
            window_scale: client_scale.map(|s| s.min(WINDOW_SCALE_MAX)),
            sack: client.sack,
        };
        debug_assert!(syn.mss <= wanted || index == 0, "never more than the client can take");
        debug_assert_eq!(self.check(key, client_isn, cookie, now_ns), Some(syn), "a fresh cookie checks out");
        (cookie, syn)
    }

    /// What a cookie carries when this node made it for `key` and `client_isn` in this
    /// period or the one before; `None` for anything else.
    pub fn check(&self, key: &FlowKey, client_isn: u32, cookie: u32, now_ns: u64) -> Option<Syn> {
        let now = now_ns / PERIOD_NS;
        let period = std::iter::once(now).chain(now.checked_sub(1)).find(|p| (p & 1) as u32 == cookie >> 31)?;
        let options = cookie >> MAC_BITS & 0xff;
        let (sack, scale, index) = (options >> 7 == 1, options >> 3 & 0xf, options & 7);
        if self.mac(key, client_isn, period, options) != cookie & MAC_MASK {
            return None;
        }
        // A scale code past the largest is never made: only a forged MAC could carry one.
        let window_scale = match scale {
            NO_WINDOW_SCALE => None,
            s => Some(u8::try_from(s).ok().filter(|&s| s <= WINDOW_SCALE_MAX)?),
        };
        Some(Syn { mss: MSS_TABLE[index as usize], window_scale, sack })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyedge_proto::Transport;

    fn opts(mss: Option<u16>, window_scale: Option<u8>) -> SynOptions {
        SynOptions { mss, window_scale, sack: false }
    }

    #[test]
    fn the_cookie_remembers_whether_the_client_permitted_sack_and_no_client_can_claim_otherwise() {
        let c = SynCookies::new(b"node secret");
        for sack in [false, true] {
            let (cookie, syn) = c.make(&key(4000), 9, SynOptions { sack, ..opts(Some(1_460), Some(7)) }, 0);
            assert_eq!(syn.sack, sack);
            assert_eq!(c.check(&key(4000), 9, cookie, 0), Some(syn));
            assert_eq!(c.check(&key(4000), 9, cookie ^ 1 << 30, 0), None, "the SACK bit flipped");
        }
    }

    fn key(port: u16) -> FlowKey {
        FlowKey {
            transport: Transport::Tcp,
            src: "198.18.64.7".parse().unwrap(),
            src_port: port,
            dst: "198.18.0.20".parse().unwrap(),
            dst_port: 80,
        }
    }

    #[test]
    fn an_ipv6_clients_cookie_checks_out_as_an_ipv4_clients_does() {
        let c = SynCookies::new(b"node secret");
        let v6 = FlowKey { src: "2001:db8::7".parse().unwrap(), dst: "fd00:a::20".parse().unwrap(), ..key(4000) };
        let t = 3 * PERIOD_NS;
        let (cookie, syn) = c.make(&v6, 99, opts(Some(1_440), Some(7)), t);
        assert_eq!(c.check(&v6, 99, cookie, t), Some(syn));
        assert_eq!(c.check(&key(4000), 99, cookie, t), None, "not an IPv4 client's");
    }

    #[test]
    fn a_cookie_checks_out_for_its_connection_in_its_period_and_the_next_only() {
        let c = SynCookies::new(b"node secret");
        let t = 5 * PERIOD_NS + 7;
        let (cookie, syn) = c.make(&key(4000), 1_000, opts(Some(1_460), Some(7)), t);
        assert_eq!(syn, Syn { mss: 1_460, window_scale: Some(7), sack: false });
        assert_eq!(c.check(&key(4000), 1_000, cookie, t), Some(syn));
        assert_eq!(c.check(&key(4000), 1_000, cookie, t + PERIOD_NS), Some(syn), "the next period");
        assert_eq!(c.check(&key(4000), 1_000, cookie, t + 2 * PERIOD_NS), None, "two periods on");
        assert_eq!(c.check(&key(4001), 1_000, cookie, t), None, "another port");
        assert_eq!(c.check(&key(4000), 1_001, cookie, t), None, "another client sequence number");
        assert_eq!(SynCookies::new(b"another node").check(&key(4000), 1_000, cookie, t), None, "another node's");
        for bit in 0..32 {
            assert_eq!(c.check(&key(4000), 1_000, cookie ^ 1 << bit, t), None, "bit {bit} flipped");
        }
    }

    #[test]
    fn the_cookie_carries_the_largest_mss_not_above_the_clients() {
        let c = SynCookies::new(b"node secret");
        for (asked, got) in
            [(None, 536), (Some(100), 536), (Some(1_300), 1_220), (Some(1_440), 1_440), (Some(9_000), 1_460)]
        {
            let (cookie, syn) = c.make(&key(4000), 9, opts(asked, None), 0);
            assert_eq!(syn.mss, got, "{asked:?}");
            assert_eq!(c.check(&key(4000), 9, cookie, 0), Some(syn), "{asked:?}");
        }
    }

    #[test]
    fn guessing_a_cookie_takes_millions_of_tries() {
        // 23 MAC bits: of 100,000 guesses for one connection, none should pass (expected
        // 0.012).
        let c = SynCookies::new(b"node secret");
        let t = 3 * PERIOD_NS;
        let hits =
            (0..100_000u32).filter(|g| c.check(&key(4000), 1, g.wrapping_mul(2_654_435_761), t).is_some()).count();
        assert_eq!(hits, 0);
    }

    #[test]
    fn the_cookie_remembers_the_clients_window_scale_or_that_it_offered_none() {
        let c = SynCookies::new(b"node secret");
        for (offered, kept) in
            [(None, None), (Some(0), Some(0)), (Some(7), Some(7)), (Some(14), Some(14)), (Some(20), Some(14))]
        {
            let (cookie, syn) = c.make(&key(4000), 9, opts(Some(1_460), offered), 0);
            assert_eq!(syn.window_scale, kept, "{offered:?}");
            assert_eq!(c.check(&key(4000), 9, cookie, 0).map(|s| s.window_scale), Some(kept), "{offered:?}");
        }
        // A client cannot claim another scale than its SYN's: the MAC covers it.
        let (cookie, _) = c.make(&key(4000), 9, opts(Some(1_460), Some(2)), 0);
        for scale in 0..16u32 {
            let forged = cookie & !(0xf << 26) | scale << 26;
            assert_eq!(c.check(&key(4000), 9, forged, 0).is_some(), scale == 2, "scale code {scale}");
        }
    }
}
