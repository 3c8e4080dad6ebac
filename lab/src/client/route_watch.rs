//! Each router's route changes for a VIP, timed by the kernel (`ip -ts monitor route` in
//! every router namespace of an AS-level internet's lab): how long a BGP update takes to
//! cross each speaker, to the microsecond, where polling 42 speakers one after another
//! sees only milliseconds.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyedge_topology::routing::RouterId;

use crate::client::ClientError;
use crate::error::Doing;
use crate::plan::{Plan, Role};

/// A route monitor per router namespace, each writing to a file of its own.
pub struct RouteWatch {
    watching: Vec<(RouterId, Child, PathBuf)>,
}

impl RouteWatch {
    /// Starts watching every router of the lab; the files go to `dir`, named for `round`.
    pub fn start(plan: &Plan, dir: &Path, round: usize) -> Result<RouteWatch, ClientError> {
        let mut watch = RouteWatch { watching: Vec::new() };
        for ns in &plan.namespaces {
            let Role::Router(r) = ns.role else { continue };
            let out = dir.join(format!("routes-{round}-{r}.log"));
            let file = std::fs::File::create(&out).at(&out)?;
            let child = Command::new("ip")
                .args(["-n", &ns.name, "-ts", "monitor", "route"])
                .stdout(file)
                .stderr(Stdio::null())
                .spawn()
                .doing(|| "cannot start `ip monitor route`".into())?;
            watch.watching.push((RouterId(r), child, out));
        }
        Ok(watch)
    }

    /// Stops the monitors: each router's changes of its route to `vip`, seconds since the
    /// epoch, in order.
    pub fn stop(self, vip: Ipv4Addr) -> BTreeMap<RouterId, Vec<f64>> {
        let mut out = BTreeMap::new();
        for (r, mut child, file) in self.watching {
            let _ = child.kill();
            let _ = child.wait();
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let _ = std::fs::remove_file(&file);
            let times: Vec<f64> = text.lines().filter_map(|l| change_at(l, vip)).collect();
            if !times.is_empty() {
                out.insert(r, times);
            }
        }
        out
    }
}

/// When a line of `ip -ts monitor route` changed the route to `vip` (added, replaced or
/// deleted): `[2026-11-29T21:34:20.013750] Deleted 198.18.0.20 via …`.
fn change_at(line: &str, vip: Ipv4Addr) -> Option<f64> {
    let (stamp, rest) = line.strip_prefix('[')?.split_once("] ")?;
    let rest = rest.strip_prefix("Deleted ").unwrap_or(rest);
    let dest = rest.split_whitespace().next()?;
    let dest = dest.strip_suffix("/32").unwrap_or(dest);
    (dest.parse::<Ipv4Addr>().ok()? == vip).then_some(())?;
    epoch_s(stamp)
}

/// `2026-11-29T21:34:20.013750` in seconds since the epoch, were it UTC (`ip -ts` prints
/// the local time; only differences of two are used).
fn epoch_s(stamp: &str) -> Option<f64> {
    let (date, time) = stamp.split_once('T')?;
    let mut d = date.splitn(3, '-').map(str::parse::<i64>);
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.splitn(3, ':');
    let (h, min) = (t.next()?.parse::<i64>().ok()?, t.next()?.parse::<i64>().ok()?);
    let s: f64 = t.next()?.parse().ok()?;
    Some((days_from_civil(y, m, day) * 86_400 + h * 3_600 + min * 60) as f64 + s)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 20);

    #[test]
    fn a_monitor_line_gives_when_the_vips_route_changed() {
        let added = "[2026-11-29T21:34:20.013750] 198.18.0.20 via 198.18.128.77 dev s19 proto bird metric 32 ";
        let deleted =
            "[2026-11-29T21:34:20.014769] Deleted 198.18.0.20 via 198.18.128.210 dev l52 proto bird metric 32";
        let a = change_at(added, VIP).unwrap();
        let d = change_at(deleted, VIP).unwrap();
        assert!((d - a - 0.001019).abs() < 1e-6, "{}", d - a);
        // 2026-11-29 is day 20,786 since the epoch.
        assert_eq!(days_from_civil(2026, 11, 29), 20_786);
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert!((a - (20_786.0 * 86_400.0 + 21.0 * 3_600.0 + 34.0 * 60.0 + 20.01375)).abs() < 1e-6);
    }

    #[test]
    fn other_routes_and_garbage_are_not_changes() {
        assert_eq!(change_at("[2026-11-29T21:34:20.013750] 198.18.0.21 via 1.2.3.4 dev x", VIP), None);
        assert_eq!(change_at("Timestamp: Sun Nov 29 21:35:20 2026 580860 usec", VIP), None);
        assert_eq!(change_at("[garbage] 198.18.0.20 via", VIP), None);
        assert_eq!(change_at("", VIP), None);
    }
}
