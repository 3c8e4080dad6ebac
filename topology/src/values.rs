//! Scalar value syntax of topology files: durations, percentages, bandwidths.

pub use anyedge_region::cidr::Cidr;

/// Why a scalar is not a duration, percentage, bandwidth or status list; each keeps the
/// text it refused, and says it as a diagnostic's reason (the diagnostic names the file,
/// line and field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueError {
    NoUnit(String),
    NotDuration(String),
    NegativeDuration(String),
    DurationTooLong(String),
    NotPercent(String),
    PercentRange(String),
    NotBandwidth { text: String, has_unit: bool },
    BandwidthRange(String),
    NotStatus(String),
}

impl std::fmt::Display for ValueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ValueError::NoUnit(t) => write!(f, "`{t}` has no unit (write e.g. 300ms, 2s, 1m)"),
            ValueError::NotDuration(t) => {
                write!(f, "`{t}` is not a duration: a number and a unit (e.g. 300ms, 2s; units ns, us, ms, s, m, h)")
            }
            ValueError::NegativeDuration(t) => write!(f, "`{t}` must be a non-negative duration"),
            ValueError::DurationTooLong(t) => write!(f, "`{t}` is too long"),
            ValueError::NotPercent(t) => write!(f, "`{t}` is not a percentage (write e.g. 0.3%)"),
            ValueError::PercentRange(t) => write!(f, "{t} is outside 0–100 %"),
            ValueError::NotBandwidth { text, has_unit: false } => {
                write!(f, "`{text}` is not a bandwidth (write e.g. 10Gbps, 100Mbps)")
            }
            ValueError::NotBandwidth { text, has_unit: true } => write!(f, "`{text}` is not a bandwidth"),
            ValueError::BandwidthRange(t) => write!(f, "`{t}` must be a positive bandwidth up to 1Pbps"),
            ValueError::NotStatus(t) => write!(f, "`{t}` is not a status (200), class (2xx) or range (200-299)"),
        }
    }
}

impl std::error::Error for ValueError {}

/// `300ms`, `0.3ms`, `60s`, `2m`, `150us`, `1h` → nanoseconds.
pub fn parse_duration_ns(text: &str) -> Result<u64, ValueError> {
    let t = text.trim();
    // Plain digits (and a point), then the unit: `1e9s` is not 1 with a unit `e9s`.
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+' || c == ' '));
    let Some(split) = split else { return Err(ValueError::NoUnit(t.to_string())) };
    let (number, unit) = t.split_at(split);
    let not_duration = || ValueError::NotDuration(t.to_string());
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
        return Err(ValueError::NegativeDuration(t.to_string()));
    }
    let ns = value * scale;
    if ns > 1e18 {
        return Err(ValueError::DurationTooLong(t.to_string()));
    }
    Ok(ns.round() as u64)
}

/// `0.3%` → 0.003. Must lie within 0–100 %.
pub fn parse_percent(text: &str) -> Result<f64, ValueError> {
    let t = text.trim();
    let not_percent = || ValueError::NotPercent(t.to_string());
    let number = t.strip_suffix('%').ok_or_else(not_percent)?;
    let value: f64 = number.trim().parse().map_err(|_| not_percent())?;
    if !(0.0..=100.0).contains(&value) {
        return Err(ValueError::PercentRange(t.to_string()));
    }
    Ok(value / 100.0)
}

/// `10Gbps`, `100Mbps`, `1.5Kbps`, `8000bps` → bits per second.
pub fn parse_bandwidth_bps(text: &str) -> Result<u64, ValueError> {
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
        return Err(ValueError::NotBandwidth { text: t.to_string(), has_unit: false });
    };
    let value: f64 =
        number.trim().parse().map_err(|_| ValueError::NotBandwidth { text: t.to_string(), has_unit: true })?;
    if !value.is_finite() || value <= 0.0 || value * scale > 1e15 {
        return Err(ValueError::BandwidthRange(t.to_string()));
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
