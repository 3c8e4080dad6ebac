//! Scalar value syntax of topology files: durations, percentages, bandwidths.

pub use anyedge_region::cidr::Cidr;

/// `300ms`, `0.3ms`, `60s`, `2m`, `150us`, `1h` → nanoseconds.
pub fn parse_duration_ns(text: &str) -> Result<u64, String> {
    let t = text.trim();
    // Plain digits (and a point), then the unit: `1e9s` is not 1 with a unit `e9s`.
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+' || c == ' '));
    let Some(split) = split else { return Err(format!("`{t}` has no unit (write e.g. 300ms, 2s, 1m)")) };
    let (number, unit) = t.split_at(split);
    let not_duration =
        || format!("`{t}` is not a duration: a number and a unit (e.g. 300ms, 2s; units ns, us, ms, s, m, h)");
    let value: f64 = number.trim().parse().map_err(|_| not_duration())?;
    let scale = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" | "min" => 60e9,
        "h" => 3600e9,
        _ => return Err(not_duration()),
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
