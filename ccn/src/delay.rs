//! The delay model: the round trip between two places from the areas they lie in — a
//! fibre stretch and a fixed overhead per pair of areas, through the hub real routes of
//! that pair pass through — and the least-squares fit that calibrates it on measured
//! round trips.
//!
//! One stretch for the whole world is wrong both ways: short pairs are dominated by a
//! fixed cost (routers, serialisation, the way in and out of a city), direct cables run
//! near 1.2–1.5 × the great circle, and regions without direct peering detour through a
//! hub (West Africa through Europe, western South America through Miami). The model
//! keeps each of those as a parameter and `fit` learns them from a dataset.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::geo::Location;
use crate::landmarks::LandmarkModel;
pub use crate::path::{HUBS, PathParams, fibre_rtt_ms, hub_location};

/// The coarse areas of the world a place is put in, by latitude and longitude boxes
/// (`Area::of`). Pairs of areas carry their own parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Area {
    NorthAmerica,
    SouthAmerica,
    Europe,
    Africa,
    MiddleEast,
    SouthAsia,
    EastAsia,
    SoutheastAsia,
    Oceania,
    /// Eastern mainland China, behind its border gateways.
    China,
    /// Anywhere the boxes do not cover (Siberia, Central Asia, open ocean).
    Other,
}

impl Area {
    pub const ALL: [Area; 11] = [
        Area::NorthAmerica,
        Area::SouthAmerica,
        Area::Europe,
        Area::Africa,
        Area::MiddleEast,
        Area::SouthAsia,
        Area::EastAsia,
        Area::SoutheastAsia,
        Area::Oceania,
        Area::China,
        Area::Other,
    ];

    /// The area a place lies in. Boxes are checked in this order, first match wins.
    pub fn of(at: Location) -> Area {
        let [lat, lon] = at;
        let hong_kong = (22.15..22.5).contains(&lat) && (113.8..114.45).contains(&lon);
        let taiwan = (21.8..25.4).contains(&lat) && (119.9..122.1).contains(&lon);
        let hainan = (18.0..20.2).contains(&lat) && (108.5..111.1).contains(&lon);
        let china_core = (21.5..42.5).contains(&lat) && (97.0..123.0).contains(&lon);
        // North-east China, without Russia's Primorsky Krai (Vladivostok) east of it.
        let primorsky = lat < 48.0 && lon >= 131.0;
        let china_north_east = (42.5..54.0).contains(&lat) && (120.0..135.0).contains(&lon) && !primorsky;
        if (china_core || china_north_east || hainan) && !hong_kong && !taiwan {
            return Area::China;
        }
        if (lat < -10.0 && lon > 110.0) || (lat < 0.0 && !(-150.0..=140.0).contains(&lon)) {
            return Area::Oceania;
        }
        if lat >= 21.8 && (100.0..150.0).contains(&lon) && lat < 55.0 {
            return Area::EastAsia;
        }
        if (-11.0..28.0).contains(&lat) && (92.0..141.0).contains(&lon) {
            return Area::SoutheastAsia;
        }
        if (5.0..37.0).contains(&lat) && (60.0..92.0).contains(&lon) {
            return Area::SouthAsia;
        }
        if (12.0..42.0).contains(&lat) && (34.0..60.0).contains(&lon) {
            return Area::MiddleEast;
        }
        if (-36.0..35.5).contains(&lat) && (-26.0..52.0).contains(&lon) {
            return Area::Africa;
        }
        if (35.0..72.0).contains(&lat) && (-30.0..60.0).contains(&lon) {
            return Area::Europe;
        }
        if (-170.0..-50.0).contains(&lon) && (lat >= 13.0 || (lat >= 7.0 && lon < -77.0)) {
            return Area::NorthAmerica;
        }
        if (-95.0..-30.0).contains(&lon) && lat < 13.0 {
            return Area::SouthAmerica;
        }
        Area::Other
    }

    pub fn name(self) -> &'static str {
        match self {
            Area::NorthAmerica => "north-america",
            Area::SouthAmerica => "south-america",
            Area::Europe => "europe",
            Area::Africa => "africa",
            Area::MiddleEast => "middle-east",
            Area::SouthAsia => "south-asia",
            Area::EastAsia => "east-asia",
            Area::SoutheastAsia => "southeast-asia",
            Area::Oceania => "oceania",
            Area::China => "china",
            Area::Other => "other",
        }
    }

    pub fn parse(name: &str) -> Option<Area> {
        Area::ALL.into_iter().find(|a| a.name() == name)
    }
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A delay model: parameters per pair of areas, `default` for pairs without their own;
/// or, where a calibration has one, the per-place model of its landmarks
/// ([`crate::landmarks`]), `default` its fallback law.
#[derive(Debug, Clone, PartialEq)]
pub struct DelayModel {
    /// What produced it, for reports: `uniform` or a calibration's name.
    pub name: String,
    /// Where its parameters come from (dataset, date, licence), for reports.
    pub source: String,
    pub default: PathParams,
    pub pairs: BTreeMap<(Area, Area), PathParams>,
    /// The per-place model; `pairs` is then empty.
    pub landmarks: Option<Arc<LandmarkModel>>,
}

impl DelayModel {
    /// One stretch everywhere, no overhead: the model before calibration.
    pub fn uniform(stretch: f64) -> DelayModel {
        DelayModel {
            name: "uniform".into(),
            source: format!("stretch {stretch} everywhere, not calibrated"),
            default: PathParams::direct(stretch, 0.0),
            pairs: BTreeMap::new(),
            landmarks: None,
        }
    }

    pub fn params(&self, a: Area, b: Area) -> &PathParams {
        self.pairs.get(&area_key(a, b)).unwrap_or(&self.default)
    }

    /// The round trip it predicts between two places, in ms.
    pub fn rtt_ms(&self, a: Location, b: Location) -> f64 {
        match &self.landmarks {
            Some(l) => l.rtt_ms(a, b),
            None => self.params(Area::of(a), Area::of(b)).rtt_ms(a, b),
        }
    }

    /// No round trip it predicts over `d` km is below `overhead + stretch × fibre(d)`:
    /// (overhead ms, stretch).
    pub fn lower_bound(&self) -> (f64, f64) {
        if let Some(l) = &self.landmarks {
            return l.lower_bound();
        }
        let params = || std::iter::once(&self.default).chain(self.pairs.values());
        let overhead = params().map(|p| p.overhead_ms).fold(f64::INFINITY, f64::min);
        let stretch = params().map(|p| p.stretch).fold(f64::INFINITY, f64::min);
        (overhead, stretch)
    }

    /// How much longer than the great circle the measured routes run, as a multiple of
    /// fibre's round trip over it: the slope of the long-haul line of the per-place
    /// model's distance law (fitted on every pair), or the default pair's stretch. A
    /// round trip the model predicts over `d` km already pays for a route this many times
    /// `d` long, its detours included; only a way longer than that pays more.
    pub fn route_stretch(&self) -> f64 {
        match &self.landmarks {
            Some(l) => l.law.long.stretch,
            None => self.default.stretch,
        }
    }

    /// Half the predicted round trip, in ns: a link's one-way delay.
    pub fn one_way_ns(&self, a: Location, b: Location) -> u64 {
        (self.rtt_ms(a, b) * 1e6 / 2.0).round() as u64
    }
}

/// Pairs are unordered: the key has the smaller area first.
pub fn area_key(a: Area, b: Area) -> (Area, Area) {
    if a <= b { (a, b) } else { (b, a) }
}

/// One measured round trip between two places.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    pub a: Location,
    pub b: Location,
    pub rtt_ms: f64,
}

/// Fewest measured pairs an area pair needs for parameters of its own.
pub const MIN_PAIRS_PER_AREA_PAIR: usize = 4;
/// A detour through a hub is taken only when it cuts the pair's median error by this
/// fraction: a model takes the straight path unless the data say otherwise.
const HUB_GAIN_MIN: f64 = 0.2;

/// Fewest measured pairs before a detour is considered: a hub fitted on three pairs is
/// noise that happens to fit.
const MIN_PAIRS_FOR_A_HUB: usize = 8;

/// A hub may carry a pair of areas when it lies in one of them, or in Europe or North
/// America, where the transit networks of the others meet (Lagos–Accra through London,
/// Bogotá–Lima through Miami): never a detour through a third area's edge.
fn hub_may_carry(hub: Area, (a, b): (Area, Area)) -> bool {
    hub == a || hub == b || hub == Area::Europe || hub == Area::NorthAmerica
}

/// Fits a model to measured round trips: a default from every pair, then, for each pair
/// of areas with enough measurements, its own stretch and overhead on the straight path
/// or through the hub that fits it best. Deterministic: same rows, same model.
pub fn fit(name: &str, source: &str, rows: &[Measured]) -> DelayModel {
    let direct = PathParams::direct(1.0, 0.0);
    let default = fit_straight(rows);
    let mut by_pair: BTreeMap<(Area, Area), Vec<Measured>> = BTreeMap::new();
    for m in rows {
        by_pair.entry(area_key(Area::of(m.a), Area::of(m.b))).or_default().push(m.clone());
    }
    let mut pairs = BTreeMap::new();
    for (key, group) in by_pair {
        if group.len() < MIN_PAIRS_PER_AREA_PAIR {
            continue;
        }
        let straight = fit_path(&group, &direct);
        let straight_err = median_abs_error(&group, &straight);
        let mut best = (straight, straight_err);
        let hubs =
            HUBS.iter().filter(|(_, at)| group.len() >= MIN_PAIRS_FOR_A_HUB && hub_may_carry(Area::of(*at), key));
        for (hub, _) in hubs {
            let via = PathParams { via: Some(hub.to_string()), ..direct.clone() };
            let p = fit_path(&group, &via);
            let err = median_abs_error(&group, &p);
            if err < best.1 && err < straight_err * (1.0 - HUB_GAIN_MIN) {
                best = (p, err);
            }
        }
        pairs.insert(key, best.0);
    }
    DelayModel { name: name.into(), source: source.into(), default, pairs, landmarks: None }
}

/// The straight-path law fitted on every row: the model's `default`, and the per-place
/// model's fallback.
pub fn fit_straight(rows: &[Measured]) -> PathParams {
    fit_path(rows, &PathParams::direct(1.0, 0.0))
}

/// Rounds of reweighting `fit_path` runs: past 30 the parameters move by less than the
/// 0.001 they are rounded to on the shipped datasets.
const FIT_ROUNDS: usize = 30;

/// Fits rtt = overhead + stretch × fibre rtt over `shape`'s path, with stretch ≥ 1 and
/// overhead ≥ 0 (nothing beats light in fibre), so that half of the pairs are faster
/// than predicted and half slower: a least-absolute-deviation fit of each pair's error
/// relative to the prediction, by iteratively reweighted least squares.
///
/// Why not plain least squares of relative errors: round trips of nearby places are
/// skewed (most near the floor, some through a far exchange point), and squared errors
/// relative to the measurement punish a prediction above a fast pair far more than one
/// below a slow pair, so the fit settled below the median — 22 % too fast on pairs
/// under 1,000 km of the WonderNetwork matrix.
fn fit_path(rows: &[Measured], shape: &PathParams) -> PathParams {
    let xs: Vec<f64> = rows.iter().map(|m| fibre_rtt_ms(shape.path_km(m.a, m.b))).collect();
    let ys: Vec<f64> = rows.iter().map(|m| m.rtt_ms).collect();
    let mut weights: Vec<f64> = ys.iter().map(|y| 1.0 / (y * y).max(1e-6)).collect();
    let mut line = weighted_line(&xs, &ys, &weights);
    for _ in 0..FIT_ROUNDS {
        for ((w, &x), &y) in weights.iter_mut().zip(&xs).zip(&ys) {
            let predicted = (line.1 + line.0 * x).max(1e-3);
            *w = 1.0 / (predicted * (predicted - y).abs().max(1e-3 * predicted));
        }
        line = weighted_line(&xs, &ys, &weights);
    }
    let (stretch, overhead) = line;
    debug_assert!(stretch >= 1.0 && overhead >= 0.0, "no fit beats light in fibre: {line:?}");
    PathParams { stretch: round3(stretch), overhead_ms: round3(overhead), via: shape.via.clone() }
}

/// Weighted least squares of y = overhead + stretch × x, constrained to stretch ≥ 1 and
/// overhead ≥ 0: (stretch, overhead).
fn weighted_line(xs: &[f64], ys: &[f64], weights: &[f64]) -> (f64, f64) {
    let (mut sw, mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for ((&x, &y), &w) in xs.iter().zip(ys).zip(weights) {
        sw += w;
        sx += w * x;
        sy += w * y;
        sxx += w * x * x;
        sxy += w * x * y;
    }
    let det = sw * sxx - sx * sx;
    let (mut stretch, mut overhead) = if det.abs() > 1e-12 * sw * sxx {
        let s = (sw * sxy - sx * sy) / det;
        (s, (sy - s * sx) / sw)
    } else {
        (1.0, 0.0)
    };
    if overhead < 0.0 {
        overhead = 0.0;
        stretch = if sxx > 0.0 { sxy / sxx } else { 1.0 };
    }
    if stretch < 1.0 {
        stretch = 1.0;
        overhead = ((sy - sx) / sw).max(0.0);
    }
    (stretch, overhead)
}

/// To the thousandth: what calibrations write, so a fit and its YAML agree.
pub(crate) fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn median_abs_error(rows: &[Measured], p: &PathParams) -> f64 {
    let mut errs: Vec<f64> = rows.iter().map(|m| ((p.rtt_ms(m.a, m.b) - m.rtt_ms) / m.rtt_ms).abs()).collect();
    quantile(&mut errs, 0.5)
}

/// The q-quantile (nearest rank) of `v`; 0 for an empty slice.
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// How far a model's predictions are from measurements: relative errors (prediction −
/// measurement) ÷ measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErrorSummary {
    pub pairs: usize,
    /// Median of the absolute relative error.
    pub median: f64,
    /// 90th percentile of the absolute relative error.
    pub p90: f64,
    /// Median of the signed relative error: above 0, the model is too slow.
    pub bias: f64,
}

pub fn errors(model: &DelayModel, rows: &[Measured]) -> ErrorSummary {
    ErrorSummary::of(rows.iter().map(|m| (model.rtt_ms(m.a, m.b) - m.rtt_ms) / m.rtt_ms).collect())
}

impl ErrorSummary {
    /// The summary of signed relative errors.
    pub fn of(mut signed: Vec<f64>) -> ErrorSummary {
        let mut abs: Vec<f64> = signed.iter().map(|e| e.abs()).collect();
        ErrorSummary {
            pairs: signed.len(),
            median: quantile(&mut abs, 0.5),
            p90: quantile(&mut abs, 0.9),
            bias: quantile(&mut signed, 0.5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::great_circle_km;

    #[test]
    fn places_fall_in_the_areas_people_would_name() {
        let cases = [
            ([51.507, -0.128], Area::Europe),
            ([55.756, 37.617], Area::Europe),
            ([22.319, 114.169], Area::EastAsia),
            ([22.543, 114.058], Area::China),
            ([23.129, 113.264], Area::China),
            ([39.904, 116.407], Area::China),
            ([45.803, 126.535], Area::China),
            ([43.117, 131.9], Area::EastAsia),
            ([25.033, 121.565], Area::EastAsia),
            ([37.566, 126.978], Area::EastAsia),
            ([35.690, 139.692], Area::EastAsia),
            ([1.352, 103.820], Area::SoutheastAsia),
            ([21.028, 105.854], Area::SoutheastAsia),
            ([-6.208, 106.846], Area::SoutheastAsia),
            ([19.076, 72.878], Area::SouthAsia),
            ([25.205, 55.271], Area::MiddleEast),
            ([32.085, 34.781], Area::MiddleEast),
            ([30.044, 31.236], Area::Africa),
            ([6.524, 3.379], Area::Africa),
            ([-26.204, 28.047], Area::Africa),
            ([-33.869, 151.209], Area::Oceania),
            ([-36.848, 174.763], Area::Oceania),
            ([40.713, -74.006], Area::NorthAmerica),
            ([19.433, -99.133], Area::NorthAmerica),
            ([-23.55, -46.633], Area::SouthAmerica),
            ([4.711, -74.072], Area::SouthAmerica),
            ([-12.046, -77.043], Area::SouthAmerica),
        ];
        for (at, area) in cases {
            assert_eq!(Area::of(at), area, "{at:?}");
        }
    }

    #[test]
    fn a_fit_recovers_the_stretch_and_overhead_that_made_the_data() {
        let truth = PathParams::direct(1.5, 4.0);
        let places =
            [[48.857, 2.352], [52.23, 21.012], [40.416, -3.704], [59.913, 10.752], [41.9, 12.5], [53.35, -6.26]];
        let mut rows = Vec::new();
        for (i, &a) in places.iter().enumerate() {
            for &b in &places[i + 1..] {
                rows.push(Measured { a, b, rtt_ms: truth.rtt_ms(a, b) });
            }
        }
        let model = fit("t", "synthetic", &rows);
        let eu = model.params(Area::Europe, Area::Europe);
        assert!((eu.stretch - 1.5).abs() < 0.01 && (eu.overhead_ms - 4.0).abs() < 0.05, "{eu:?}");
        assert!(eu.via.is_none(), "a straight path fits exactly: {eu:?}");
        assert!(errors(&model, &rows).median < 0.001);
    }

    #[test]
    fn a_detour_through_a_hub_is_learned_when_the_data_take_it() {
        // West African pairs whose packets go through London.
        let london = hub_location("london").unwrap();
        let places = [[6.524, 3.379], [5.603, -0.187], [14.716, -17.467], [9.082, 7.491], [12.639, -8.003]];
        let mut rows = Vec::new();
        for (i, &a) in places.iter().enumerate() {
            for &b in &places[i + 1..] {
                let km = great_circle_km(a, london) + great_circle_km(london, b);
                rows.push(Measured { a, b, rtt_ms: 3.0 + 1.3 * fibre_rtt_ms(km) });
            }
        }
        let model = fit("t", "synthetic", &rows);
        let af = model.params(Area::Africa, Area::Africa);
        assert_eq!(af.via.as_deref(), Some("london"), "{af:?}");
        assert!(errors(&model, &rows).median < 0.01);
    }

    #[test]
    fn no_fitted_model_beats_light_in_fibre() {
        // Noisy, even impossible rows (faster than light) still give stretch >= 1, overhead >= 0.
        let rows = vec![
            Measured { a: [0.0, 0.0], b: [0.0, 10.0], rtt_ms: 1.0 },
            Measured { a: [0.0, 0.0], b: [0.0, 40.0], rtt_ms: 2.0 },
            Measured { a: [0.0, 0.0], b: [0.0, 80.0], rtt_ms: 3.0 },
        ];
        let model = fit("t", "synthetic", &rows);
        assert!(model.default.stretch >= 1.0 && model.default.overhead_ms >= 0.0, "{:?}", model.default);
    }
}
