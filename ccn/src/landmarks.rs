//! The per-place delay model: the round trip between two places from the measured round
//! trips between the landmarks (a dataset's servers) around each of them, and the fit that
//! learns its few parameters.
//!
//! Why per place: a rule for a pair of areas applies one detour to every pair of those
//! areas, so it cannot hold São Paulo–Buenos Aires (30 ms, direct) and Lagos–Accra
//! (193 ms, through Europe) at once. Here every pair rests on the measured pairs nearest
//! its two ends: a tromboning pair stays slow, a direct one stays fast.
//!
//! ```text
//! rtt(A, B) = Σ w(i, j) × [base(A, B) + ρ(i, j)] + w₀ × law(d(A, B))     (weights sum to 1)
//! base(A, B) = h(A) + h(B) + stretch × fibre(d(A, B))
//! ρ(i, j)    = measured(i, j) − base(i, j)      (ρ(i, i) = 0: two places near one landmark)
//! ```
//!
//! - `h(X)`, the **floor** of a place: the weighted height of its landmarks. A landmark's
//!   height is half of what a 0 km path between it and a server like it costs, fitted on
//!   its short pairs that are no detour (routers, the way into and out of its datacenter).
//!   It is not the last mile, which is a client's access network and is added apart.
//! - `i`, `j`: the [`Reach::neighbours`] landmarks nearest A and B within
//!   [`Reach::reach_km`]. A pair's weight falls with how far the landmark pair is from
//!   the place pair (`LandmarkModel::each_pair`): a place on a landmark is that landmark.
//!   Moving A away from its landmarks changes the base by the fibre it adds or saves, so
//!   a place 300 km nearer B than its landmark is corrected for it.
//! - `law`, the **distance law**, fitted on every pair: the lesser of a short-path line
//!   (pairs under [`SHORT_KM`]) and a long-haul line (the rest). It weighs as much as a
//!   landmark pair [`Reach::prior_km`] away, so places far from every landmark (or with
//!   none within reach: [`Explanation::fallback`]) take it rather than the detours of
//!   landmarks that say little about them.
//!
//! No prediction beats light in fibre plus the least floor: [`LandmarkModel::lower_bound`].

use std::fmt;

mod fit;
pub use fit::{Base, Dataset, Fitted, fit, fit_base, held_out_by_site, reach_grid};

use crate::geo::{EARTH_RADIUS_KM, Location, great_circle_km};
use crate::path::{PathParams, fibre_rtt_ms};

/// Pairs under this distance fit the landmarks' heights, the base stretch and the short
/// line of the distance law.
pub const SHORT_KM: f64 = 1000.0;
/// The most neighbours a place may take (the fit chooses within it).
pub const NEIGHBOURS_MAX: usize = 8;
/// The shortest length the law's weight is scaled by ([`Reach::prior`]).
pub const PRIOR_KM_MIN: f64 = 100.0;
/// A landmark this near a place counts as this near: a place on a landmark is that
/// landmark, with its neighbours' weights a rounding error beside it.
const NEAR_KM: f64 = 1.0;

/// A measured server: where it is and what its own share of a short path costs.
#[derive(Debug, Clone, PartialEq)]
pub struct Landmark {
    pub name: String,
    pub at: Location,
    /// Half of a 0 km path's round trip at this landmark, ms.
    pub height_ms: f64,
}

/// How far a place looks for landmarks, and how it weighs them against the law.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reach {
    /// How many of the nearest landmarks a place rests on (1..=NEIGHBOURS_MAX).
    pub neighbours: usize,
    /// A landmark pair's weight is 1 / (its distance from the place pair)^power.
    pub power: f64,
    /// Landmarks farther than this are not a place's neighbours.
    pub reach_km: f64,
    /// The distance law weighs as much as a landmark pair this many times the place
    /// pair's length (at least [`PRIOR_KM_MIN`]) away from it.
    pub prior: f64,
}

/// The distance law: the lesser of two lines over the fibre round trip, one fitted on
/// short pairs, one on long ones.
#[derive(Debug, Clone, PartialEq)]
pub struct Law {
    pub short: PathParams,
    pub long: PathParams,
}

impl Law {
    pub fn rtt_ms(&self, km: f64) -> f64 {
        let fibre = fibre_rtt_ms(km);
        (self.short.overhead_ms + self.short.stretch * fibre).min(self.long.overhead_ms + self.long.stretch * fibre)
    }

    /// The least overhead of its lines (both stretches are at least 1).
    fn overhead_min_ms(&self) -> f64 {
        self.short.overhead_ms.min(self.long.overhead_ms)
    }
}

/// One measured round trip between two landmarks (indices into a landmark list).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    pub a: usize,
    pub b: usize,
    pub rtt_ms: f64,
}

/// The model: landmarks, their measured pairs, the base, the law and the reach.
#[derive(Clone)]
pub struct LandmarkModel {
    pub landmarks: Vec<Landmark>,
    /// The base's fibre stretch (fitted on short pairs with the heights).
    pub stretch: f64,
    pub reach: Reach,
    pub law: Law,
    units: Vec<[f64; 3]>,
    /// Measured round trip of landmark pair (i, j) at `i * n + j`, ms; NaN where unmeasured.
    measured: Vec<f32>,
    /// ρ(i, j) at `i * n + j`, ms; NaN where unmeasured, 0 on the diagonal.
    detour: Vec<f32>,
    /// Great-circle km between landmarks i and j at `i * n + j`.
    km: Vec<f32>,
    /// The least floor of any place: twice the least height, or the law's least overhead.
    floor_min_ms: f64,
}

/// A place's landmarks and their weights (summing to 1), nearest first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Anchors {
    len: usize,
    index: [u32; NEIGHBOURS_MAX],
    weight: [f64; NEIGHBOURS_MAX],
    km: [f64; NEIGHBOURS_MAX],
}

impl Anchors {
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// (landmark, weight, distance in km), nearest first.
    pub fn iter(&self) -> impl Iterator<Item = (usize, f64, f64)> + '_ {
        (0..self.len).map(|k| (self.index[k] as usize, self.weight[k], self.km[k]))
    }
}

/// One measured landmark pair a prediction rests on.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    pub a: usize,
    pub b: usize,
    /// The pair's share of the prediction (`LandmarkModel::each_pair`).
    pub weight: f64,
    /// None on the diagonal (both ends near the same landmark).
    pub measured_ms: Option<f64>,
    pub detour_ms: f64,
}

/// What a prediction is made of: `anyedge delay` prints it. The prediction is
/// `(1 − law_share) × (floor_a + floor_b + fibre + detour) + law_share × law`, raised to
/// light in fibre plus the least floor where it would be below.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    pub rtt_ms: f64,
    pub km: f64,
    /// An end had no landmark within reach: the law alone.
    pub fallback: bool,
    pub floor_a_ms: f64,
    pub floor_b_ms: f64,
    /// The base's stretch × the fibre round trip.
    pub fibre_ms: f64,
    /// The landmark pairs' detour, weighted among themselves.
    pub detour_ms: f64,
    pub law_ms: f64,
    pub law_share: f64,
    pub anchors: [Vec<(usize, f64, f64)>; 2],
    /// Heaviest first; their weights and `law_share` sum to 1.
    pub terms: Vec<Term>,
}

/// The anchors of a place from its nearest landmarks (index, km), nearest first: the
/// first `reach.neighbours` within reach, weighted 1 / km^power and normalised.
pub(crate) fn weigh(nearest: impl Iterator<Item = (usize, f64)>, reach: &Reach) -> Anchors {
    let mut anchors = Anchors { len: 0, index: [0; NEIGHBOURS_MAX], weight: [0.0; NEIGHBOURS_MAX], km: [0.0; 8] };
    for (i, km) in nearest.filter(|&(_, km)| km <= reach.reach_km).take(reach.neighbours) {
        let slot = anchors.len;
        (anchors.index[slot], anchors.km[slot]) = (i as u32, km);
        anchors.weight[slot] = km.max(NEAR_KM).powf(-reach.power);
        anchors.len += 1;
    }
    let total: f64 = anchors.weight[..anchors.len].iter().sum();
    anchors.weight[..anchors.len].iter_mut().for_each(|w| *w /= total);
    anchors
}

fn unit(at: Location) -> [f64; 3] {
    let (lat, lon) = (at[0].to_radians(), at[1].to_radians());
    [lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()]
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

impl LandmarkModel {
    /// The model of `landmarks` and their `observations` (each pair once; later rows of a
    /// pair replace earlier ones).
    pub fn new(
        landmarks: Vec<Landmark>,
        observations: &[Observation],
        stretch: f64,
        reach: Reach,
        law: Law,
    ) -> LandmarkModel {
        assert!((1..=NEIGHBOURS_MAX).contains(&reach.neighbours), "{reach:?}");
        let n = landmarks.len();
        let mut measured = vec![f32::NAN; n * n];
        let mut detour = vec![f32::NAN; n * n];
        for i in 0..n {
            detour[i * n + i] = 0.0;
        }
        let base = |i: usize, j: usize| {
            let (a, b) = (&landmarks[i], &landmarks[j]);
            a.height_ms + b.height_ms + stretch * fibre_rtt_ms(great_circle_km(a.at, b.at))
        };
        for o in observations.iter().filter(|o| o.a != o.b && o.a < n && o.b < n) {
            let rho = (o.rtt_ms - base(o.a, o.b)) as f32;
            for (i, j) in [(o.a, o.b), (o.b, o.a)] {
                measured[i * n + j] = o.rtt_ms as f32;
                detour[i * n + j] = rho;
            }
        }
        let least_height = landmarks.iter().map(|l| l.height_ms).fold(f64::INFINITY, f64::min);
        let floor_min_ms = (2.0 * least_height).min(law.overhead_min_ms()).max(0.0);
        let units = landmarks.iter().map(|l| unit(l.at)).collect();
        let km = landmarks.iter().flat_map(|a| landmarks.iter().map(|b| great_circle_km(a.at, b.at) as f32)).collect();
        LandmarkModel { landmarks, stretch, reach, law, units, measured, detour, km, floor_min_ms }
    }

    /// The measured round trip between two landmarks, if there is one.
    pub fn measured_ms(&self, a: usize, b: usize) -> Option<f64> {
        let v = self.measured[a * self.landmarks.len() + b];
        (!v.is_nan()).then_some(f64::from(v))
    }

    /// The nearest landmarks of `at` within reach and their weights.
    pub fn anchors(&self, at: Location) -> Anchors {
        self.anchors_without(at, None)
    }

    /// [`Self::anchors`] with one landmark left out (a held-out server).
    pub(crate) fn anchors_without(&self, at: Location, skip: Option<usize>) -> Anchors {
        let nearest = self.nearest(at, self.reach.neighbours + usize::from(skip.is_some()));
        weigh(nearest.into_iter().filter(|&(i, _)| Some(i) != skip), &self.reach)
    }

    /// Up to `k` landmarks nearest `at` within reach, nearest first: (index, km).
    pub(crate) fn nearest(&self, at: Location, k: usize) -> Vec<(usize, f64)> {
        let me = unit(at);
        let least = (self.reach.reach_km / EARTH_RADIUS_KM).min(std::f64::consts::PI).cos();
        let mut best: Vec<(f64, usize)> = Vec::with_capacity(k + 1);
        for (i, u) in self.units.iter().enumerate() {
            let d = dot(*u, me);
            if d < least || (best.len() == k && d <= best[k - 1].0) {
                continue;
            }
            let slot = best.partition_point(|&(b, _)| b >= d);
            best.insert(slot, (d, i));
            best.truncate(k);
        }
        best.into_iter().map(|(_, i)| (i, great_circle_km(at, self.landmarks[i].at))).collect()
    }

    /// A place's floor: its landmarks' weighted height, ms.
    fn height_ms(&self, anchors: &Anchors) -> f64 {
        anchors.iter().map(|(i, w, _)| w * self.landmarks[i].height_ms).sum()
    }

    /// The round trip between two places, ms.
    pub fn rtt_ms(&self, a: Location, b: Location) -> f64 {
        self.rtt_anchored(&self.anchors(a), &self.anchors(b), a, b)
    }

    /// The law's weight beside the landmark pairs' for places `km` apart: landmarks some
    /// hundreds of km off say much of a long pair and little of a short one.
    fn law_weight(&self, km: f64) -> f64 {
        (self.reach.prior * km.max(PRIOR_KM_MIN)).max(NEAR_KM).powf(-self.reach.power)
    }

    /// The round trip between two places whose anchors are known, ms.
    pub fn rtt_anchored(&self, na: &Anchors, nb: &Anchors, a: Location, b: Location) -> f64 {
        let km = great_circle_km(a, b);
        let light = self.floor_min_ms + fibre_rtt_ms(km);
        if na.is_empty() || nb.is_empty() {
            return self.law.rtt_ms(km).max(light);
        }
        let base = self.height_ms(na) + self.height_ms(nb) + self.stretch * fibre_rtt_ms(km);
        let w0 = self.law_weight(km);
        let (mut sum, mut weights) = (w0 * self.law.rtt_ms(km), w0);
        self.each_pair(na, nb, km, |_, _, w, rho| {
            sum += w * (base + rho);
            weights += w;
        });
        (sum / weights).max(light)
    }

    /// Calls `f(i, j, weight, ρ(i, j))` for every landmark pair of the two places' anchors
    /// that is measured (or the same landmark). A pair's weight is 1 / D^power in the
    /// space of pairs: D = d(A, i) + d(B, j) + |d(i, j) − d(A, B)|, how far the landmark
    /// pair is from the place pair at each end and in length; for one landmark (i = j),
    /// whose "pair" is the base at any length, D = d(A, i) + d(B, i). So two places near
    /// each other rest on the same landmark (its floor) rather than on the detour between
    /// two landmarks each some hundreds of km from both, and a long pair rests on
    /// landmark pairs of its length.
    fn each_pair(&self, na: &Anchors, nb: &Anchors, km: f64, mut f: impl FnMut(usize, usize, f64, f64)) {
        let n = self.landmarks.len();
        for (i, _, dai) in na.iter() {
            let (detour, apart) = (&self.detour[i * n..(i + 1) * n], &self.km[i * n..(i + 1) * n]);
            for (j, _, dbj) in nb.iter() {
                let rho = detour[j];
                if !rho.is_nan() {
                    let mismatch = if i == j { 0.0 } else { (f64::from(apart[j]) - km).abs() };
                    let d = dai + dbj + mismatch;
                    f(i, j, d.max(NEAR_KM).powf(-self.reach.power), f64::from(rho));
                }
            }
        }
    }

    /// No prediction is below `overhead + stretch × fibre(km)`: (overhead ms, stretch).
    pub fn lower_bound(&self) -> (f64, f64) {
        (self.floor_min_ms, 1.0)
    }

    /// The prediction between two places and what it rests on.
    pub fn explain(&self, a: Location, b: Location) -> Explanation {
        let (na, nb) = (self.anchors(a), self.anchors(b));
        let km = great_circle_km(a, b);
        let fallback = na.is_empty() || nb.is_empty();
        let n = self.landmarks.len();
        let mut terms = Vec::new();
        let w0 = if fallback { 1.0 } else { self.law_weight(km) };
        if !fallback {
            self.each_pair(&na, &nb, km, |i, j, weight, detour_ms| {
                let measured_ms = (i != j).then(|| f64::from(self.measured[i * n + j]));
                terms.push(Term { a: i, b: j, weight, measured_ms, detour_ms });
            });
        }
        let total = w0 + terms.iter().map(|t| t.weight).sum::<f64>();
        terms.iter_mut().for_each(|t| t.weight /= total);
        terms.sort_by(|x, y| y.weight.total_cmp(&x.weight).then((x.a, x.b).cmp(&(y.a, y.b))));
        let law_share = w0 / total;
        let detour_ms =
            terms.iter().map(|t| t.weight * t.detour_ms).sum::<f64>() / (1.0 - law_share).max(f64::MIN_POSITIVE);
        Explanation {
            rtt_ms: self.rtt_anchored(&na, &nb, a, b),
            km,
            fallback,
            floor_a_ms: self.height_ms(&na),
            floor_b_ms: self.height_ms(&nb),
            fibre_ms: self.stretch * fibre_rtt_ms(km),
            detour_ms: if fallback { 0.0 } else { detour_ms },
            law_ms: self.law.rtt_ms(km),
            law_share,
            anchors: [na.iter().collect(), nb.iter().collect()],
            terms,
        }
    }
}

/// Equal when made of the same landmarks, measurements and parameters (the unmeasured
/// pairs' NaNs compare by their bits).
impl PartialEq for LandmarkModel {
    fn eq(&self, other: &LandmarkModel) -> bool {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
        self.landmarks == other.landmarks
            && self.stretch == other.stretch
            && self.reach == other.reach
            && self.law == other.law
            && bits(&self.measured) == bits(&other.measured)
            && bits(&self.detour) == bits(&other.detour)
    }
}

/// The parameters and sizes, not the n × n tables.
impl fmt::Debug for LandmarkModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pairs = self.measured.iter().filter(|v| !v.is_nan()).count() / 2;
        f.debug_struct("LandmarkModel")
            .field("landmarks", &self.landmarks.len())
            .field("measured_pairs", &pairs)
            .field("stretch", &self.stretch)
            .field("reach", &self.reach)
            .field("law", &self.law)
            .finish()
    }
}

impl fmt::Display for Reach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} neighbours within {} km, weight 1/d^{}, the law weighing as a landmark pair {} × the pair's length off",
            self.neighbours, self.reach_km, self.power, self.prior
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// West Africa as the data has it: Lagos and Accra reach each other through London,
    /// Lagos and Abuja directly; every place has the same height.
    fn west_africa() -> LandmarkModel {
        let at = [[6.524, 3.379], [5.603, -0.187], [9.082, 7.491], [51.507, -0.128]];
        let names = ["lagos", "accra", "abuja", "london"];
        let landmarks =
            names.iter().zip(at).map(|(n, at)| Landmark { name: n.to_string(), at, height_ms: 2.0 }).collect();
        let km = |a: usize, b: usize| great_circle_km(at[a], at[b]);
        let rtt = |a: usize, b: usize| 4.0 + 1.5 * fibre_rtt_ms(km(a, b));
        let through_london = 4.0 + 1.5 * fibre_rtt_ms(km(0, 3) + km(3, 1));
        let observations = [
            Observation { a: 0, b: 1, rtt_ms: through_london },
            Observation { a: 0, b: 2, rtt_ms: rtt(0, 2) },
            Observation { a: 1, b: 2, rtt_ms: through_london + 3.0 },
            Observation { a: 0, b: 3, rtt_ms: rtt(0, 3) },
            Observation { a: 1, b: 3, rtt_ms: rtt(1, 3) },
            Observation { a: 2, b: 3, rtt_ms: rtt(2, 3) },
        ];
        let reach = Reach { neighbours: 2, power: 2.0, reach_km: 1000.0, prior: 2.0 };
        LandmarkModel::new(landmarks, &observations, 1.5, reach, law())
    }

    fn law() -> Law {
        Law { short: PathParams::direct(2.5, 5.0), long: PathParams::direct(1.7, 10.0) }
    }

    #[test]
    fn a_tromboning_pair_stays_slow_while_a_direct_pair_of_the_same_areas_stays_fast() {
        let m = west_africa();
        let (lagos, accra, abuja) = ([6.524, 3.379], [5.603, -0.187], [9.082, 7.491]);
        let trombone = m.rtt_ms(lagos, accra);
        assert!(
            (trombone - m.measured_ms(0, 1).unwrap()).abs() < 0.01,
            "on the landmarks, the measurement: {trombone}"
        );
        assert!(trombone > 100.0, "Lagos–Accra goes through London: {trombone}");
        let direct = m.rtt_ms(lagos, abuja);
        assert!(direct < 15.0, "Lagos–Abuja is direct: {direct}");
        // Ibadan, 120 km from Lagos: still through London to Accra, still direct to Abuja.
        let ibadan = [7.378, 3.947];
        assert!(m.rtt_ms(ibadan, accra) > 100.0);
        assert!(m.rtt_ms(ibadan, abuja) < 15.0);
    }

    #[test]
    fn two_places_near_one_landmark_cost_its_floor_and_the_fibre_between_them() {
        let m = west_africa();
        let (lagos, ikeja) = ([6.524, 3.379], [6.602, 3.351]);
        let km = great_circle_km(lagos, ikeja);
        let want = 2.0 + 2.0 + 1.5 * fibre_rtt_ms(km);
        assert!((m.rtt_ms(lagos, ikeja) - want).abs() < 0.5, "{} vs {want}", m.rtt_ms(lagos, ikeja));
        assert!(!m.explain(lagos, ikeja).fallback);
    }

    #[test]
    fn a_place_with_no_landmark_within_reach_takes_the_distance_law_and_says_so() {
        let m = west_africa();
        let (honolulu, lagos) = ([21.307, -157.858], [6.524, 3.379]);
        let km = great_circle_km(honolulu, lagos);
        let e = m.explain(honolulu, lagos);
        assert!(e.fallback && e.terms.is_empty() && e.law_share == 1.0);
        assert!((e.rtt_ms - (10.0 + 1.7 * fibre_rtt_ms(km))).abs() < 1e-6, "the long line: {e:?}");
        let near = [21.4, -157.9];
        let short = 5.0 + 2.5 * fibre_rtt_ms(great_circle_km(honolulu, near));
        assert!((m.rtt_ms(honolulu, near) - short).abs() < 1e-6, "the short line");
    }

    #[test]
    fn places_far_from_their_landmarks_lean_on_the_law_not_on_the_landmarks_detours() {
        let m = west_africa();
        // Two places 50 km apart, 650–750 km from Lagos and Accra, whose measured pair
        // trombones through London (190 ms): that detour says little about them.
        let (a, b) = ([12.0, 1.0], [12.3, 1.4]);
        let far = m.explain(a, b);
        assert!(!far.fallback && far.terms.iter().any(|t| t.measured_ms.is_some_and(|ms| ms > 150.0)));
        assert!(far.rtt_ms < 60.0, "{far:?}");
        let near = m.explain([6.6, 3.4], [6.7, 3.5]);
        assert!(far.law_share > 2.0 * near.law_share, "the law counts for more far away: {far:?} {near:?}");
    }

    #[test]
    fn no_prediction_beats_light_in_fibre_and_the_lower_bound_holds() {
        let mut m = west_africa();
        // A measurement barely above light: its negative detour cannot pull a longer pair under light.
        let fast = fibre_rtt_ms(great_circle_km(m.landmarks[0].at, m.landmarks[2].at)) + 0.1;
        m = LandmarkModel::new(m.landmarks.clone(), &[Observation { a: 0, b: 2, rtt_ms: fast }], 3.0, m.reach, law());
        let (overhead, stretch) = m.lower_bound();
        for a in [[6.0, 3.0], [7.0, 4.0], [5.0, 0.0], [30.0, 10.0]] {
            for b in [[9.5, 7.9], [8.5, 7.0], [6.524, 3.379]] {
                let km = great_circle_km(a, b);
                let rtt = m.rtt_ms(a, b);
                assert!(rtt >= fibre_rtt_ms(km) - 1e-9, "{a:?}–{b:?}: {rtt} under light");
                assert!(rtt >= overhead + stretch * fibre_rtt_ms(km) - 1e-9);
            }
        }
    }

    #[test]
    fn the_explanation_adds_up_to_the_prediction() {
        let m = west_africa();
        let e = m.explain([7.378, 3.947], [5.9, -0.5]);
        let landmarks = e.floor_a_ms + e.floor_b_ms + e.fibre_ms + e.detour_ms;
        let sum = (1.0 - e.law_share) * landmarks + e.law_share * e.law_ms;
        assert!((sum - e.rtt_ms).abs() < 1e-3, "{e:?}");
        assert!((e.terms.iter().map(|t| t.weight).sum::<f64>() + e.law_share - 1.0).abs() < 1e-9);
        assert_eq!(e.terms[0].measured_ms, m.measured_ms(e.terms[0].a, e.terms[0].b));
    }
}
