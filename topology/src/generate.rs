//! `anyedge generate`: a topology of N POPs, R regions and C clients at real places, from
//! GeoNames' cities of 50,000 people or more (`data/geo/cities.tsv`, CC BY 4.0; its
//! source is in `data/geo/README.md`).
//!
//! - **POPs** sit at the largest metros, spread out: a city is taken when no POP already
//!   taken is within a separation that starts at 2,000 km and halves until there are N.
//! - **Regions** the same way from 5,000 km, each with its own VIP published at every POP
//!   (anycast to the nearest POP, tunnelled to the VIP's home region), two listeners
//!   (UDP 7000 in front of three game servers, TCP 443 in front of two web servers) and
//!   `clb_nodes` CLB nodes.
//! - **Client groups** at the G largest cities, C clients shared by population (each group
//!   at least one), numbered from `clients_block: 100.64.0.0/10`. Every group sends one
//!   small UDP request a second to the VIP of its nearest region; every `web_every`-th
//!   group (by size) also browses it over TCP.
//!
//! The same arguments give the same bytes: nothing is drawn at random here (the file's
//! `seed` is the simulation's).

use std::fmt::Write;

use anyedge_ccn::geo::great_circle_km;

/// The cities the generator places things at, largest first.
const CITIES: &str = include_str!("../../data/geo/cities.tsv");

/// One row of `data/geo/cities.tsv`.
#[derive(Debug, Clone, PartialEq)]
pub struct City {
    pub name: &'static str,
    pub country: &'static str,
    pub location: [f64; 2],
    pub population: u64,
}

/// The shipped cities, largest first.
pub fn cities() -> Vec<City> {
    CITIES
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let mut f = l.split('\t');
            let (name, country) = (f.next()?, f.next()?);
            let lat = f.next()?.parse().ok()?;
            let lon = f.next()?.parse().ok()?;
            let population = f.next()?.parse().ok()?;
            Some(City { name, country, location: [lat, lon], population })
        })
        .collect()
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub name: String,
    pub pops: usize,
    pub regions: usize,
    pub clients: u64,
    pub groups: usize,
    /// Every this many groups one also browses over TCP (0: none does).
    pub web_every: usize,
    pub clb_nodes: u16,
    pub duration_s: u64,
    pub seed: u64,
    /// Write the default internet drawn for the world into the file
    /// ([`crate::internet_text`]).
    pub internet: bool,
}

impl Spec {
    /// `pops` POPs, one region, `groups` groups of two clients, seed 1, and the default
    /// internet drawn for them written in: the small file that still has all of the
    /// default internet's transit routers (they are where the exchanges are, not where
    /// the POPs are).
    pub fn drawn_internet(name: &str, pops: usize, groups: usize) -> Spec {
        Spec {
            name: name.into(),
            pops,
            regions: 1,
            clients: 2 * groups as u64,
            groups,
            web_every: 0,
            clb_nodes: 1,
            duration_s: 5,
            seed: 1,
            internet: true,
        }
    }
}

/// Most POPs and regions a generated file has (what the simulator is built for).
pub const POPS_MAX: usize = 2_000;
pub const REGIONS_MAX: usize = 500;

/// A topology file's text for `spec`, or why not.
// String: `anyedge generate`'s complaint about its arguments, printed as it is.
pub fn generate(spec: &Spec) -> Result<String, String> {
    let all = cities();
    let check = |what: &str, n: usize, lo: usize, hi: usize| {
        if (lo..=hi).contains(&n) { Ok(()) } else { Err(format!("--{what} {n}: must lie within {lo}–{hi}")) }
    };
    check("pops", spec.pops, 1, POPS_MAX)?;
    check("regions", spec.regions, 1, REGIONS_MAX.min(spec.pops.max(1)))
        .map_err(|e| format!("{e} (and no more than --pops)"))?;
    check("groups", spec.groups, 1, all.len()).map_err(|e| format!("{e}: one group a city of the dataset"))?;
    if spec.clients < spec.groups as u64 || spec.clients > crate::CLIENTS_MAX.min(4_194_302) {
        return Err(format!(
            "--clients {}: must lie within --groups ({}) and 4194302 (the clients block 100.64.0.0/10)",
            spec.clients, spec.groups
        ));
    }
    if !(1..=8).contains(&spec.clb_nodes) {
        return Err(format!("--clb-nodes {}: must lie within 1–8", spec.clb_nodes));
    }
    if !(1..=86_400).contains(&spec.duration_s) {
        return Err(format!("--duration {}s: must lie within 1s–24h", spec.duration_s));
    }
    let pops = spread(&all, spec.pops, 2_000.0);
    let regions = spread(&all, spec.regions, 5_000.0);
    let groups: Vec<&City> = all.iter().take(spec.groups).collect();
    let counts = shares(&groups, spec.clients);
    let slug = names(&all);

    let mut y = String::new();
    let w = &mut y;
    let _ = writeln!(w, "# yaml-language-server: $schema=../schema/topology.schema.json");
    let _ = writeln!(
        w,
        "# Generated by `anyedge generate --pops {} --regions {} --clients {} --groups {} --web-every {} --clb-nodes {} --duration {}s --seed {} --name {}{}`",
        spec.pops,
        spec.regions,
        spec.clients,
        spec.groups,
        spec.web_every,
        spec.clb_nodes,
        spec.duration_s,
        spec.seed,
        spec.name,
        if spec.internet { " --internet" } else { "" }
    );
    let _ = writeln!(w, "# Places: GeoNames (geonames.org, CC BY 4.0), data/geo/README.md.");
    let _ = writeln!(w, "name: {}\nseed: {}\nduration: {}s\n", spec.name, spec.seed, spec.duration_s);
    let _ = writeln!(w, "vips:");
    for (r, &c) in regions.iter().enumerate() {
        let _ = writeln!(
            w,
            "  - {{ name: {0}, ipv4: {1}, home: {0}, pops: all, listeners: [{{ protocol: udp, port: 7000, scheduler: maglev, backends: game }}, {{ protocol: tcp, port: 443, scheduler: wrr, backends: web }}] }}",
            slug[c],
            vip(r)
        );
    }
    let _ = writeln!(w, "\npops:");
    for &c in &pops {
        let _ = writeln!(w, "  - {{ name: {}, location: {} }}", slug[c], at(&all[c]));
    }
    let _ = writeln!(w, "\nregions:");
    for (r, &c) in regions.iter().enumerate() {
        let (a, b) = (r / 250, r % 250);
        let _ = writeln!(w, "  - name: {}\n    location: {}\n    clb_nodes: {}", slug[c], at(&all[c]), spec.clb_nodes);
        let _ = writeln!(w, "    backends:");
        let _ = writeln!(w, "      game: [{}]", backends(a, b, &[1, 2, 3], 7000));
        let _ = writeln!(w, "      web: [{}]", backends(a, b, &[10, 11], 8080));
    }
    let _ = writeln!(w, "\nclients_block: 100.64.0.0/10\nclients:");
    for (i, (g, count)) in groups.iter().zip(&counts).enumerate() {
        let near = nearest(g.location, regions.iter().map(|&c| all[c].location));
        let home = &slug[regions[near]];
        let web = spec.web_every > 0 && i % spec.web_every == spec.web_every - 1;
        let traffic = if web { format!("[game-{home}, web-{home}]") } else { format!("game-{home}") };
        let _ = writeln!(w, "  - {{ name: {}, location: {}, count: {count}, traffic: {traffic} }}", slug[i], at(g));
    }
    // Every POP publishes every VIP over a full mesh: the probe window must hold the
    // longest backbone round trip (validation refuses a world where it does not).
    let misses = probe_misses_for(
        &pops.iter().map(|&c| all[c].location).collect::<Vec<_>>(),
        &regions.iter().map(|&c| all[c].location).collect::<Vec<_>>(),
    );
    if let Some(misses) = misses {
        let _ = writeln!(w, "\n# The longest backbone round trip needs a probe window this long (50 ms a probe).");
        let _ = writeln!(w, "failover: {{ probe_misses: {misses} }}");
    }
    let _ = writeln!(w, "\ntraffic:");
    for &c in &regions {
        let s = &slug[c];
        let _ = writeln!(w, "  game-{s}: {{ vip: {s}, protocol: udp, port: 7000, interval: 1s, size: 120 }}");
        let _ = writeln!(
            w,
            "  web-{s}: {{ vip: {s}, protocol: tcp, port: 443, requests_per_s: 1, request: 500, response: 20000 }}"
        );
    }
    if spec.internet { with_internet(&spec.name, &y) } else { Ok(y) }
}

/// `text` with the default internet drawn for it written in: each POP's line gets its
/// upstreams and communities, and the `internet:` section follows.
// String: `anyedge generate`'s complaint, as `generate`'s.
fn with_internet(name: &str, text: &str) -> Result<String, String> {
    let mut t = crate::parse_str(&format!("{name}.yaml"), text).map_err(|e| e.to_string())?;
    crate::default_internet::apply(&mut t, &crate::default_internet::Shape::FITTED);
    let drawn = crate::internet_text::internet_text(&t);
    let mut out = String::with_capacity(text.len() + drawn.section.len());
    let (mut in_pops, mut p) = (false, 0);
    for line in text.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            in_pops = line == "pops:";
        }
        match line.strip_suffix(" }").filter(|_| in_pops && line.starts_with("  - { name: ")) {
            Some(open) => {
                let _ = writeln!(out, "{open}{} }}", drawn.pop_fields.get(p).map_or("", String::as_str));
                p += 1;
            }
            None => {
                let _ = writeln!(out, "{line}");
            }
        }
    }
    let _ = write!(
        out,
        "
# The default internet drawn for this world (seed {}): tier-1 networks and exchanges
# from data/internet/README.md, access networks for the groups. Edit it freely.
{}",
        t.seed, drawn.section
    );
    Ok(out)
}

/// The probe misses a window of default intervals needs to hold the longest round trip
/// between `pops` and `regions` on the default backbone (with a probe to spare, and the
/// places rounded as the file writes them); `None` when the default holds it.
fn probe_misses_for(pops: &[[f64; 2]], regions: &[[f64; 2]]) -> Option<u64> {
    let delay = &crate::parse::default_backbone_delay();
    let round = |l: [f64; 2]| [(l[0] * 1e3).round() / 1e3, (l[1] * 1e3).round() / 1e3];
    let longest =
        pops.iter().flat_map(|&p| regions.iter().map(move |&r| 2 * delay.one_way_ns(round(p), round(r)))).max()?;
    let interval = crate::schema::default_of("failover", "probe_interval", crate::schema::Field::default_ns);
    let default = crate::schema::default_of("failover", "probe_misses", crate::schema::Field::default_i64) as u64;
    let misses = longest / interval.max(1) + 2;
    (misses > default).then_some(misses.min(100))
}

/// `[lat, lon]` as the file writes it.
fn at(c: &City) -> String {
    format!("[{:.3}, {:.3}]", c.location[0], c.location[1])
}

/// Region `r`'s VIP: 198.18.0.1 up, 250 a /24 (the CLB nodes' addresses start at
/// 198.18.32.1).
fn vip(r: usize) -> String {
    format!("198.18.{}.{}", r / 250, r % 250 + 1)
}

fn backends(a: usize, b: usize, hosts: &[u8], port: u16) -> String {
    let one = |h: &u8| format!("{{ address: 10.{a}.{b}.{h}, port: {port} }}");
    hosts.iter().map(one).collect::<Vec<_>>().join(", ")
}

/// `n` of the `8n` largest cities (at least 100), largest first, none within `km` of
/// another taken before it; `km` halves until `n` are taken (below 1 km any city will
/// do). Only large metros are candidates: spreading over every city put a region in St.
/// John's, Newfoundland.
fn spread(all: &[City], n: usize, mut km: f64) -> Vec<usize> {
    let all = &all[..(n * 8).max(100).min(all.len())];
    let mut taken: Vec<usize> = Vec::with_capacity(n);
    let mut is_taken = vec![false; all.len()];
    while taken.len() < n.min(all.len()) {
        for (i, c) in all.iter().enumerate() {
            if taken.len() == n {
                break;
            }
            if is_taken[i] || (km >= 1.0 && taken.iter().any(|&t| great_circle_km(all[t].location, c.location) < km)) {
                continue;
            }
            taken.push(i);
            is_taken[i] = true;
        }
        km /= 2.0;
    }
    taken.sort_unstable();
    taken
}

/// `total` clients shared by population: one each, the rest in proportion, remainders to
/// the largest fractions (ties to the larger city).
fn shares(groups: &[&City], total: u64) -> Vec<u64> {
    let n = groups.len() as u64;
    let people: u128 = groups.iter().map(|c| u128::from(c.population)).sum::<u128>().max(1);
    let rest = u128::from(total - n);
    let mut counts: Vec<u64> = Vec::with_capacity(groups.len());
    let mut fractions: Vec<(u128, usize)> = Vec::with_capacity(groups.len());
    for (i, c) in groups.iter().enumerate() {
        let exact = rest * u128::from(c.population);
        counts.push(1 + (exact / people) as u64);
        fractions.push((exact % people, i));
    }
    let given: u64 = counts.iter().sum();
    fractions.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, i) in fractions.iter().take((total - given) as usize) {
        counts[i] += 1;
    }
    counts
}

/// The index of the place nearest `from`.
fn nearest(from: [f64; 2], places: impl Iterator<Item = [f64; 2]>) -> usize {
    let mut best = (f64::INFINITY, 0);
    for (i, p) in places.enumerate() {
        let d = great_circle_km(from, p);
        if d < best.0 {
            best = (d, i);
        }
    }
    best.1
}

/// A topology name for every city: its ASCII name in lower case, letters and digits
/// joined by `-`, then its country code (`sao-paulo-br`); a name that still repeats gets
/// `-2`, `-3`… in dataset order.
fn names(all: &[City]) -> Vec<String> {
    let mut seen = std::collections::HashMap::<String, usize>::new();
    all.iter()
        .map(|c| {
            let words: Vec<String> = c
                .name
                .split(|ch: char| !ch.is_ascii_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(|w| w.to_ascii_lowercase())
                .collect();
            let base = format!("{}-{}", if words.is_empty() { "city".into() } else { words.join("-") }, c.country)
                .to_ascii_lowercase();
            let n = seen.entry(base.clone()).or_insert(0);
            *n += 1;
            if *n == 1 { base } else { format!("{base}-{n}") }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dataset_is_read_whole_largest_first_with_unique_names() {
        let all = cities();
        assert_eq!(all.len(), 8_551);
        assert_eq!((all[0].name, all[0].country), ("Shanghai", "CN"));
        assert!(all.windows(2).all(|w| w[0].population >= w[1].population));
        assert!(all.iter().all(|c| c.population >= 50_000));
        let names = names(&all);
        let unique: std::collections::BTreeSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), all.len());
        assert!(names.iter().all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')));
    }

    #[test]
    fn clients_are_shared_by_population_and_add_up() {
        let all = cities();
        let groups: Vec<&City> = all.iter().take(4_000).collect();
        let counts = shares(&groups, 1_000_000);
        assert_eq!(counts.iter().sum::<u64>(), 1_000_000);
        assert!(counts.iter().all(|&c| c >= 1));
        assert!(counts.windows(2).all(|w| w[0] + 1 >= w[1]), "larger cities never get fewer (but for a remainder)");
        assert_eq!(shares(&groups, 4_000), vec![1; 4_000]);
    }

    #[test]
    fn pops_are_spread_out_and_regions_further() {
        let all = cities();
        let pops = spread(&all, 250, 2_000.0);
        assert_eq!(pops.len(), 250);
        let closest = |set: &[usize]| {
            let mut min = f64::INFINITY;
            for (i, &a) in set.iter().enumerate() {
                for &b in &set[i + 1..] {
                    min = min.min(great_circle_km(all[a].location, all[b].location));
                }
            }
            min
        };
        assert!(closest(&pops) >= 250.0, "{}", closest(&pops));
        let regions = spread(&all, 25, 5_000.0);
        assert!(closest(&regions) >= 1_250.0, "{}", closest(&regions));
        // Large metros only: 25 regions among the 200 largest cities, 250 POPs the 2,000.
        assert!(regions.iter().all(|&r| r < 200) && pops.iter().all(|&p| p < 2_000));
        assert_eq!(spread(&all, 2_000, 2_000.0).len(), 2_000);
    }
}
