//! Scalar value syntax of topology files: durations, percentages, bandwidths.

/// `300ms`, `0.3ms`, `60s`, `2m`, `150us`, `1h` → nanoseconds.
pub fn parse_duration_ns(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| c.is_ascii_alphabetic())
        .ok_or_else(|| format!("`{t}` has no unit (write e.g. 300ms, 2s, 1m)"))?;
    let (number, unit) = t.split_at(split);
    let value: f64 = number.trim().parse().map_err(|_| format!("`{t}` is not a duration (e.g. 300ms, 2s)"))?;
    let scale = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" | "min" => 60e9,
        "h" => 3600e9,
        _ => return Err(format!("`{unit}` is not a time unit (ns, us, ms, s, m, h)")),
    };
    if !value.is_finite() || value < 0.0 {
        return Err(format!("`{t}` must be a non-negative duration"));
    }
    let ns = value * scale;
    if ns > 1e18 {
        return Err(format!("`{t}` is too long"));
    }
    Ok(ns.round() as u64)
}

/// `0.3%` → 0.003. Must lie within 0–100 %.
pub fn parse_percent(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let number = t.strip_suffix('%').ok_or_else(|| format!("`{t}` is not a percentage (write e.g. 0.3%)"))?;
    let value: f64 = number.trim().parse().map_err(|_| format!("`{t}` is not a percentage (write e.g. 0.3%)"))?;
    if !(0.0..=100.0).contains(&value) {
        return Err(format!("{t} is outside 0–100 %"));
    }
    Ok(value / 100.0)
}

/// `10Gbps`, `100Mbps`, `1.5Kbps`, `8000bps` → bits per second.
pub fn parse_bandwidth_bps(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    let (number, scale) = if let Some(n) = lower.strip_suffix("gbps") {
        (n, 1e9)
    } else if let Some(n) = lower.strip_suffix("mbps") {
        (n, 1e6)
    } else if let Some(n) = lower.strip_suffix("kbps") {
        (n, 1e3)
    } else if let Some(n) = lower.strip_suffix("bps") {
        (n, 1.0)
    } else {
        return Err(format!("`{t}` is not a bandwidth (write e.g. 10Gbps, 100Mbps)"));
    };
    let value: f64 = number.trim().parse().map_err(|_| format!("`{t}` is not a bandwidth"))?;
    if !value.is_finite() || value <= 0.0 || value * scale > 1e15 {
        return Err(format!("`{t}` must be a positive bandwidth up to 1Pbps"));
    }
    Ok((value * scale).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ns("300ms"), Ok(300_000_000));
        assert_eq!(parse_duration_ns("0.3ms"), Ok(300_000));
        assert_eq!(parse_duration_ns("60s"), Ok(60_000_000_000));
        assert_eq!(parse_duration_ns("2m"), Ok(120_000_000_000));
        assert!(parse_duration_ns("5").is_err());
        assert!(parse_duration_ns("-1s").is_err());
        assert!(parse_duration_ns("3 parsecs").is_err());
    }

    #[test]
    fn percentages() {
        assert_eq!(parse_percent("0.3%"), Ok(0.003));
        assert_eq!(parse_percent("100%"), Ok(1.0));
        assert!(parse_percent("101%").is_err());
        assert!(parse_percent("-1%").is_err());
        assert!(parse_percent("0.3").is_err());
    }

    #[test]
    fn bandwidths() {
        assert_eq!(parse_bandwidth_bps("10Gbps"), Ok(10_000_000_000));
        assert_eq!(parse_bandwidth_bps("100Mbps"), Ok(100_000_000));
        assert!(parse_bandwidth_bps("fast").is_err());
    }
}

/// An address block, `198.18.66.0/24` or `fd00:66::/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let t = text.trim();
        let (addr, prefix) =
            t.split_once('/').ok_or_else(|| format!("`{t}` is not a CIDR block (e.g. 198.18.66.0/24)"))?;
        let addr: std::net::IpAddr = addr.parse().map_err(|_| format!("`{addr}` is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|&p| p <= max)
            .ok_or_else(|| format!("`/{prefix}` is not a prefix length 0–{max}"))?;
        let cidr = Cidr { addr, prefix };
        if cidr.network() != addr {
            return Err(format!("`{t}` has host bits set (the block starts at {})", cidr.network()));
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
        self.addr_of(Self::as_u128(self.network()) + 1 + i)
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
