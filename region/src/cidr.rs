//! Address blocks (CIDR): client address pools, SNAT, security-group sources, and the
//! prefix a per-source budget counts a client by.

use std::net::IpAddr;

/// Bits of an IPv6 source that name one client.
pub const SOURCE_PREFIX_V6: u8 = 64;
/// Bits of an IPv4 source that name one client, by default.
pub const SOURCE_PREFIX_V4: u8 = 32;

/// The source a connection counts against: its address with the host bits cleared.
pub fn source_prefix(ip: IpAddr, v4_bits: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(v4_bits.min(32))).unwrap_or(0);
            debug_assert_eq!(mask.count_ones(), u32::from(v4_bits.min(32)), "the prefix's bits and no others");
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(SOURCE_PREFIX_V6)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

/// An address block, `198.18.66.0/24` or `fd00:66::/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

/// Why a text is not an address block; said as a diagnostic's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("`{0}` is not a CIDR block (e.g. 198.18.66.0/24)")]
    NoPrefix(String),
    #[error("`{0}` is not an IP address")]
    NotAddress(String),
    #[error("`/{prefix}` is not a prefix length 0–{max}")]
    PrefixLength { prefix: String, max: u8 },
    #[error("`{text}` has host bits set (the block starts at {network})")]
    HostBits { text: String, network: std::net::IpAddr },
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, CidrError> {
        let t = text.trim();
        let (addr, prefix) = t.split_once('/').ok_or_else(|| CidrError::NoPrefix(t.to_string()))?;
        let addr: std::net::IpAddr = addr.parse().map_err(|_| CidrError::NotAddress(addr.to_string()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|&p| p <= max)
            .ok_or_else(|| CidrError::PrefixLength { prefix: prefix.to_string(), max })?;
        let cidr = Cidr { addr, prefix };
        debug_assert!(cidr.contains(cidr.network()), "a block holds its network address");
        if cidr.network() != addr {
            return Err(CidrError::HostBits { text: t.to_string(), network: cidr.network() });
        }
        Ok(cidr)
    }

    fn bits(&self) -> u32 {
        if self.addr.is_ipv4() { 32 } else { 128 }
    }

    fn as_u128(addr: std::net::IpAddr) -> u128 {
        match addr {
            std::net::IpAddr::V4(a) => u128::from(u32::from(a)),
            std::net::IpAddr::V6(a) => u128::from(a),
        }
    }

    fn addr_of(&self, v: u128) -> std::net::IpAddr {
        match self.addr {
            std::net::IpAddr::V4(_) => std::net::IpAddr::V4(std::net::Ipv4Addr::from(v as u32)),
            std::net::IpAddr::V6(_) => std::net::IpAddr::V6(std::net::Ipv6Addr::from(v)),
        }
    }

    fn mask(&self) -> u128 {
        let host_bits = self.bits() - u32::from(self.prefix);
        let all = if self.bits() == 32 { u128::from(u32::MAX) } else { u128::MAX };
        debug_assert!(u32::from(self.prefix) <= self.bits(), "Cidr::parse bounds the prefix");
        if host_bits >= 128 { 0 } else { all & !((1u128 << host_bits) - 1) }
    }

    pub fn network(&self) -> std::net::IpAddr {
        self.addr_of(Self::as_u128(self.addr) & self.mask())
    }

    pub fn contains(&self, addr: std::net::IpAddr) -> bool {
        addr.is_ipv4() == self.addr.is_ipv4()
            && Self::as_u128(addr) & self.mask() == Self::as_u128(self.addr) & self.mask()
    }

    /// Host addresses the block offers (network and, for IPv4, broadcast excluded).
    pub fn hosts(&self) -> u128 {
        let host_bits = self.bits() - u32::from(self.prefix);
        let size = if host_bits >= 127 { u128::MAX / 2 } else { 1u128 << host_bits };
        size.saturating_sub(if self.addr.is_ipv4() { 2 } else { 1 })
    }

    /// The i-th host address (from 0), just past the network address.
    pub fn host(&self, i: u128) -> std::net::IpAddr {
        let host = self.addr_of(Self::as_u128(self.network()) + 1 + i);
        debug_assert!(i >= self.hosts() || self.contains(host), "host i of a block lies in it");
        host
    }

    /// Addresses the block spans, network and broadcast included (saturating at 2^128 - 1).
    pub fn span(&self) -> u128 {
        let host_bits = self.bits() - u32::from(self.prefix);
        if host_bits >= 128 { u128::MAX } else { 1u128 << host_bits }
    }

    /// Whether two blocks share any address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod cidr_tests {
    use super::Cidr;

    #[test]
    fn cidr_blocks() {
        let c = Cidr::parse("198.18.66.0/24").unwrap();
        assert!(c.contains("198.18.66.200".parse().unwrap()));
        assert!(!c.contains("198.18.67.1".parse().unwrap()));
        assert_eq!(c.hosts(), 254);
        assert_eq!(c.host(0), "198.18.66.1".parse::<std::net::IpAddr>().unwrap());
        let v6 = Cidr::parse("fd00:66::/64").unwrap();
        assert_eq!(v6.host(4), "fd00:66::5".parse::<std::net::IpAddr>().unwrap());
        assert!(Cidr::parse("198.18.66.1/24").is_err(), "host bits set");
        assert!(Cidr::parse("198.18.66.0/33").is_err());
        assert!(Cidr::parse("nonsense").is_err());
        assert!(c.overlaps(&Cidr::parse("198.18.0.0/16").unwrap()));
        assert!(!c.overlaps(&Cidr::parse("fd00::/8").unwrap()));
        assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().hosts(), (1u128 << 32) - 2);
    }
}
