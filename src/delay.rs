//! `anyedge delay A B`: the delay model's round trip between two places, the distance,
//! and what it rests on — for the per-place model, the measured server pairs around the
//! two ends with their weights; for an area model, the pair of areas' parameters.

use anyhow::anyhow;
use std::process::ExitCode;

use anyedge_ccn::delay::{Area, DelayModel, fibre_rtt_ms};
use anyedge_ccn::geo::{Location, great_circle_km};
use anyedge_ccn::landmarks::{Explanation, LandmarkModel};
use anyedge_topology::generate::{City, cities};

pub struct Args {
    pub a: String,
    pub b: String,
    pub model: String,
    /// How many measured pairs to list (the heaviest first).
    pub terms: usize,
}

/// A place as the user named it.
struct Place {
    label: String,
    at: Location,
}

/// `NAME` or `NAME/CC` (a city of `data/geo/cities.tsv`, accents optional, or the first
/// words of its name; the most populous of those that match), or `LAT,LON`.
fn place(text: &str, all: &[City]) -> anyhow::Result<Place> {
    if let Some((lat, lon)) = text.split_once(',')
        && let (Ok(lat), Ok(lon)) = (lat.trim().parse::<f64>(), lon.trim().parse::<f64>())
    {
        let at = anyedge_topology::measured::check_place("", lat, lon).map_err(|e| {
            anyhow!(
                "`{text}`: {}",
                e.trim_start_matches('_').replacen("lat", "latitude", 1).replacen("lon", "longitude", 1)
            )
        })?;
        return Ok(Place { label: format!("{lat}, {lon}"), at });
    }
    let (name, country) = match text.rsplit_once('/') {
        Some((n, cc)) => (n.trim(), Some(cc.trim())),
        None => (text.trim(), None),
    };
    let wanted = fold(name);
    let in_country = |c: &&City| country.is_none_or(|cc| c.country.eq_ignore_ascii_case(cc));
    let mut matches: Vec<&City> = all.iter().filter(in_country).filter(|c| fold(c.name) == wanted).collect();
    if matches.is_empty() {
        // "Frankfurt" for "Frankfurt am Main", "Osaka" for "Osaka-shi": a name that starts
        // with the words given.
        let first_words = |c: &&City| {
            let name = fold(c.name);
            name.strip_prefix(wanted.as_str()).is_some_and(|rest| rest.starts_with([' ', '-']))
        };
        matches = all.iter().filter(in_country).filter(first_words).collect();
    }
    let Some(city) = matches.first() else {
        return Err(anyhow!(
            "`{text}`: no such place in data/geo/cities.tsv (a city of 50,000 or more, as NAME or NAME/CC), and not LAT,LON"
        ));
    };
    let others = if matches.len() > 1 { format!(", the largest of {} so named", matches.len()) } else { String::new() };
    let [lat, lon] = city.location;
    Ok(Place { label: format!("{}/{} ({lat}, {lon}{others})", city.name, city.country), at: city.location })
}

/// A name as compared: lower case, the common Latin accents taken off (`São Paulo` finds
/// GeoNames' ASCII `Sao Paulo`).
fn fold(name: &str) -> String {
    name.trim()
        .to_lowercase()
        .chars()
        .map(|c| match c {
            'á' | 'à' | 'â' | 'ã' | 'ä' | 'å' => 'a',
            'é' | 'è' | 'ê' | 'ë' => 'e',
            'í' | 'ì' | 'î' | 'ï' => 'i',
            'ó' | 'ò' | 'ô' | 'õ' | 'ö' | 'ø' => 'o',
            'ú' | 'ù' | 'û' | 'ü' => 'u',
            'ç' => 'c',
            'ñ' => 'n',
            _ => c,
        })
        .collect()
}

pub fn run(args: Args) -> ExitCode {
    let all = cities();
    let ends = place(&args.a, &all).and_then(|a| Ok((a, place(&args.b, &all)?)));
    let model = anyedge_topology::builtin_delay(&args.model).ok_or_else(|| {
        let names: Vec<&str> = anyedge_topology::BUILTIN_DELAYS.to_vec();
        anyhow!("--model `{}`: no calibration that ships (one of: {})", args.model, names.join(", "))
    });
    match (ends, model) {
        (Ok((a, b)), Ok(model)) => {
            print!("{}", explain(&model, &a, &b, args.terms));
            ExitCode::SUCCESS
        }
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn explain(model: &DelayModel, a: &Place, b: &Place, terms: usize) -> String {
    let km = great_circle_km(a.at, b.at);
    let mut out = format!("{} → {}\n", a.label, b.label);
    out += &format!(
        "{:.1} ms round trip, {km:.0} km (light in fibre: {:.1} ms); model `{}`, no last mile\n",
        model.rtt_ms(a.at, b.at),
        fibre_rtt_ms(km),
        model.name
    );
    match &model.landmarks {
        Some(l) => out += &explain_landmarks(l, &l.explain(a.at, b.at), terms),
        None => {
            let (x, y) = (Area::of(a.at), Area::of(b.at));
            let p = model.params(x, y);
            let via = p.via.as_deref().map_or(String::new(), |h| format!(" through {h}"));
            out += &format!(
                "  areas {x}/{y}: {:.1} ms overhead + {} × the fibre round trip{via}\n",
                p.overhead_ms, p.stretch
            );
        }
    }
    out
}

fn explain_landmarks(l: &LandmarkModel, e: &Explanation, terms: usize) -> String {
    let law = format!(
        "the distance law {:.1} ms (the lesser of {:.1} ms + {} × fibre and {:.1} ms + {} × fibre)",
        e.law_ms, l.law.short.overhead_ms, l.law.short.stretch, l.law.long.overhead_ms, l.law.long.stretch
    );
    if e.fallback {
        let side = if e.anchors[0].is_empty() { "the first place" } else { "the second place" };
        return format!("  no measured server within {} km of {side}: {law}\n", l.reach.reach_km);
    }
    let mut out = format!(
        "  = {:.0} % measured pairs: floors {:.1} + {:.1} ms + {} × fibre ({:.1} ms) + their detour {:+.1} ms\n",
        (1.0 - e.law_share) * 100.0,
        e.floor_a_ms,
        e.floor_b_ms,
        l.stretch,
        e.fibre_ms,
        e.detour_ms
    );
    out += &format!("  + {:.0} % {law}\n", e.law_share * 100.0);
    for (end, anchors) in ["first", "second"].iter().zip(&e.anchors) {
        let list: Vec<String> =
            anchors.iter().map(|&(i, _, km)| format!("{} {km:.0} km", l.landmarks[i].name)).collect();
        out += &format!("  servers near the {end} place: {}\n", list.join(", "));
    }
    let shown = terms.min(e.terms.len());
    out += &format!(
        "  measured pairs it rests on (weight, measured, detour beyond the base), {shown} of {}:\n",
        e.terms.len()
    );
    for t in e.terms.iter().take(terms) {
        let (x, y) = (&l.landmarks[t.a].name, &l.landmarks[t.b].name);
        let measured = t.measured_ms.map_or("the same server: its floor".to_string(), |m| format!("{m:.1} ms"));
        out += &format!("    {:>5.1} %  {x} – {y}: {measured}, detour {:+.1} ms\n", t.weight * 100.0, t.detour_ms);
    }
    out
}
