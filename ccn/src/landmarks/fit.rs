//! Fitting the per-place model: the landmarks' heights and the base stretch on short
//! pairs, the fallback law on every pair, and the reach chosen by how well it predicts
//! servers it never saw (every pair of a held-out server left out of the fit).

use super::{Landmark, LandmarkModel, Law, Observation, Reach, SHORT_KM, weigh};
use crate::delay::{self, Measured, fibre_rtt_ms, quantile, round3};
use crate::geo::{Location, great_circle_km};

/// A dataset of round trips between named places.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Each server once: name and place, in order of first appearance.
    pub sites: Vec<(String, Location)>,
    pub observations: Vec<Observation>,
}

impl Dataset {
    /// From rows (name a, place a, name b, place b, rtt ms). A name is one server: the
    /// same name at two places is an error, (row counted from 0, why). Unnamed ends are
    /// named by their coordinates.
    pub fn new<'r>(
        rows: impl Iterator<Item = (&'r str, Location, &'r str, Location, f64)>,
    ) -> Result<Dataset, (usize, String)> {
        let mut sites: Vec<(String, Location)> = Vec::new();
        let mut by_name = std::collections::HashMap::new();
        let mut observations = Vec::new();
        for (row, (na, a, nb, b, rtt_ms)) in rows.enumerate() {
            let mut index = |name: &str, at: Location| -> Result<usize, (usize, String)> {
                let name = if name.is_empty() { format!("{},{}", at[0], at[1]) } else { name.to_string() };
                if let Some(&i) = by_name.get(&name) {
                    let (_, was): &(String, Location) = &sites[i];
                    return if *was == at {
                        Ok(i)
                    } else {
                        Err((row, format!("`{name}` is at {at:?} here and at {was:?} on an earlier row")))
                    };
                }
                by_name.insert(name.clone(), sites.len());
                sites.push((name, at));
                Ok(sites.len() - 1)
            };
            let (a, b) = (index(na, a)?, index(nb, b)?);
            observations.push(Observation { a, b, rtt_ms });
        }
        Ok(Dataset { sites, observations })
    }

    fn km(&self, o: &Observation) -> f64 {
        great_circle_km(self.sites[o.a].1, self.sites[o.b].1)
    }

    fn measured(&self, o: &Observation) -> Measured {
        Measured { a: self.sites[o.a].1, b: self.sites[o.b].1, rtt_ms: o.rtt_ms }
    }
}

/// Rounds of the heights' fit: past 40 they move by less than the microsecond they are
/// rounded to on the shipped dataset.
const BASE_ROUNDS: usize = 40;
/// A short pair slower than this many times the short-path law is a detour (Lagos–Accra
/// through Europe: 193 ms over 407 km), which says what the pair costs, not what a path
/// near either end costs: it stays out of the heights (its detour is the pair's own).
const DETOUR_FACTOR: f64 = 2.0;

/// What [`fit_base`] fits.
#[derive(Debug, Clone, PartialEq)]
pub struct Base {
    /// Each landmark's height, ms (µs-rounded).
    pub heights: Vec<f64>,
    /// The base's stretch, fitted with the heights.
    pub stretch: f64,
    /// How many short pairs that are no detour each landmark's height rests on (0: it
    /// took half the law's floor).
    pub direct_pairs: Vec<usize>,
}

/// The landmarks' heights and the base stretch, fitted on the pairs under [`SHORT_KM`]
/// (`skip`'s left out) that are no detour: no slower than [`DETOUR_FACTOR`] times the
/// short-path `law` (rtt = floor + stretch × fibre, fitted on every short pair; its floor
/// is what a 0 km path costs).
///
/// - Heights and the base stretch: rtt ≈ h(a) + h(b) + stretch × fibre over the short
///   pairs that are no detour, by alternating medians ([`fit_heights`]). A landmark
///   without such a pair gets half the law's floor.
pub fn fit_base(data: &Dataset, skip: Option<usize>, law: &delay::PathParams) -> Base {
    let short: Vec<(Observation, f64)> = data
        .observations
        .iter()
        .filter(|o| o.a != o.b && Some(o.a) != skip && Some(o.b) != skip)
        .map(|o| (*o, data.km(o)))
        .filter(|&(_, km)| km < SHORT_KM)
        .map(|(o, km)| (o, fibre_rtt_ms(km)))
        .collect();
    let direct: Vec<(Observation, f64)> = short
        .into_iter()
        .filter(|(o, fibre)| o.rtt_ms <= DETOUR_FACTOR * (law.overhead_ms + law.stretch * fibre))
        .collect();
    let mut direct_pairs = vec![0; data.sites.len()];
    for (o, _) in &direct {
        direct_pairs[o.a] += 1;
        direct_pairs[o.b] += 1;
    }
    let (heights, stretch) = fit_heights(&direct_pairs, &direct, law.overhead_ms / 2.0);
    let heights = heights.into_iter().map(round3).collect();
    Base { heights, stretch: round3(stretch), direct_pairs }
}

/// Heights h and a stretch with rtt ≈ h(a) + h(b) + stretch × fibre over `direct` (pairs
/// and their fibre round trips; `counts` of each landmark's), starting from `start`,
/// which a landmark without pairs keeps. Each round the stretch is the fibre-weighted
/// median of (rtt − heights) ÷ fibre, then each height moves halfway to the median of
/// what its pairs leave it.
fn fit_heights(counts: &[usize], direct: &[(Observation, f64)], start: f64) -> (Vec<f64>, f64) {
    let n = counts.len();
    let mut pairs_of: Vec<Vec<usize>> = counts.iter().map(|&c| Vec::with_capacity(c)).collect();
    for (k, (o, _)) in direct.iter().enumerate() {
        pairs_of[o.a].push(k);
        pairs_of[o.b].push(k);
    }
    let (mut heights, mut stretch) = (vec![start; n], 1.0);
    for _ in 0..BASE_ROUNDS {
        stretch = base_stretch(direct, &heights);
        let left = |i: usize, k: usize| {
            let (o, fibre) = direct[k];
            let other = if o.a == i { o.b } else { o.a };
            o.rtt_ms - heights[other] - stretch * fibre
        };
        let next: Vec<f64> = (0..n)
            .map(|i| {
                let mut v: Vec<f64> = pairs_of[i].iter().map(|&k| left(i, k)).collect();
                if v.is_empty() { heights[i] } else { (heights[i] + quantile(&mut v, 0.5).max(0.0)) / 2.0 }
            })
            .collect();
        heights = next;
    }
    (heights, stretch)
}

/// The fibre-weighted median of (rtt − heights) ÷ fibre over `pairs`, at least 1.
fn base_stretch(pairs: &[(Observation, f64)], heights: &[f64]) -> f64 {
    let mut ratios: Vec<(f64, f64)> = pairs
        .iter()
        .filter(|(_, fibre)| *fibre > 0.0)
        .map(|(o, fibre)| ((o.rtt_ms - heights[o.a] - heights[o.b]) / fibre, *fibre))
        .collect();
    ratios.sort_by(|x, y| x.0.total_cmp(&y.0));
    let half = ratios.iter().map(|r| r.1).sum::<f64>() / 2.0;
    let mut acc = 0.0;
    for (ratio, w) in ratios {
        acc += w;
        if acc >= half {
            return ratio.max(1.0);
        }
    }
    1.0
}

/// The model of `data` with the base `heights` and `stretch`, `skip`'s pairs left out.
fn model_of(data: &Dataset, base: &Base, reach: Reach, law: Law, skip: Option<usize>) -> LandmarkModel {
    let landmarks = data
        .sites
        .iter()
        .zip(&base.heights)
        .map(|((name, at), &height_ms)| Landmark { name: name.clone(), at: *at, height_ms })
        .collect();
    let kept: Vec<Observation> =
        data.observations.iter().filter(|o| Some(o.a) != skip && Some(o.b) != skip).copied().collect();
    LandmarkModel::new(landmarks, &kept, base.stretch, reach, law)
}

/// The reaches the fit chooses among.
pub fn reach_grid() -> Vec<Reach> {
    let mut grid = Vec::new();
    for reach_km in [2000.0, 3000.0] {
        for neighbours in [2, 4, 8] {
            for power in [2.0, 3.0] {
                for prior in [0.5, 1.0, 2.0, 4.0] {
                    grid.push(Reach { neighbours, power, reach_km, prior });
                }
            }
        }
    }
    grid
}

/// The distance law on `data`'s observations, `skip`'s left out: a line on the short
/// pairs and one on the long.
fn law_of(data: &Dataset, skip: Option<usize>) -> Law {
    let (mut short, mut long) = (Vec::new(), Vec::new());
    for o in data.observations.iter().filter(|o| o.a != o.b && Some(o.a) != skip && Some(o.b) != skip) {
        if data.km(o) < SHORT_KM { short.push(data.measured(o)) } else { long.push(data.measured(o)) }
    }
    Law { short: delay::fit_straight(&short), long: delay::fit_straight(&long) }
}

/// Predictions of every observation by models that never saw one of its ends: for each
/// server, heights, stretch and fallback are fitted without its pairs, and its place
/// rests on the other servers. One vector per reach, in `reaches`' order, of predicted
/// ms per observation (NaN for pairs of a server with itself).
pub fn held_out_by_site(data: &Dataset, reaches: &[Reach]) -> Vec<Vec<f64>> {
    let mut out = vec![vec![f64::NAN; data.observations.len()]; reaches.len()];
    let widest = reaches.iter().map(|r| r.reach_km).fold(0.0, f64::max);
    let most = reaches.iter().map(|r| r.neighbours).max().unwrap_or(1);
    for s in 0..data.sites.len() {
        let mine: Vec<usize> = (0..data.observations.len())
            .filter(|&k| data.observations[k].a == s || data.observations[k].b == s)
            .collect();
        if mine.is_empty() {
            continue;
        }
        let law = law_of(data, Some(s));
        let base = fit_base(data, Some(s), &law.short);
        let wide = Reach { neighbours: most, power: 1.0, reach_km: widest, prior: 1.0 };
        let mut model = model_of(data, &base, wide, law, Some(s));
        let near = |at: Location| -> Vec<(usize, f64)> {
            model.nearest(at, most + 1).into_iter().filter(|&(i, _)| i != s).collect()
        };
        let ends: Vec<[Vec<(usize, f64)>; 2]> = mine
            .iter()
            .map(|&k| {
                let o = data.observations[k];
                [near(data.sites[o.a].1), near(data.sites[o.b].1)]
            })
            .collect();
        for (r, reach) in reaches.iter().enumerate() {
            model.reach = *reach;
            for (&k, [na, nb]) in mine.iter().zip(&ends) {
                let o = data.observations[k];
                let (a, b) = (weigh(na.iter().copied(), reach), weigh(nb.iter().copied(), reach));
                out[r][k] = model.rtt_anchored(&a, &b, data.sites[o.a].1, data.sites[o.b].1);
            }
        }
    }
    out
}

/// How a reach scores: the median error of long pairs plus that of short pairs, held
/// out by server (each length counts alike, whatever its number of pairs).
fn score(data: &Dataset, predicted: &[f64]) -> f64 {
    let (mut long, mut short) = (Vec::new(), Vec::new());
    for (o, &p) in data.observations.iter().zip(predicted) {
        if p.is_nan() {
            continue;
        }
        let err = ((p - o.rtt_ms) / o.rtt_ms).abs();
        if data.km(o) >= SHORT_KM { long.push(err) } else { short.push(err) }
    }
    quantile(&mut long, 0.5) + quantile(&mut short, 0.5)
}

/// A fitted model and how it does on servers it never saw.
pub struct Fitted {
    pub model: LandmarkModel,
    /// Each observation's prediction by the model fitted without either of its ends'
    /// pairs (the chosen reach; NaN for a server paired with itself).
    pub held_out_ms: Vec<f64>,
    /// [`Base::direct_pairs`].
    pub direct_pairs: Vec<usize>,
}

/// The fitted model: heights and stretch on every short pair, the fallback on every
/// pair, and the reach of [`reach_grid`] that predicts held-out servers best (the first
/// of a tie).
pub fn fit(data: &Dataset) -> Fitted {
    let grid = reach_grid();
    let mut held = held_out_by_site(data, &grid);
    let scores: Vec<f64> = held.iter().map(|p| score(data, p)).collect();
    let best = (0..grid.len()).min_by(|&a, &b| scores[a].total_cmp(&scores[b])).unwrap_or(0);
    let law = law_of(data, None);
    let base = fit_base(data, None, &law.short);
    let model = model_of(data, &base, grid[best], law, None);
    Fitted { model, held_out_ms: held.swap_remove(best), direct_pairs: base.direct_pairs }
}
