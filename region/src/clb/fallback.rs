//! Which POP a reply leaves through: the flow's latest ingress POP, or when backbone
//! probing says that POP is down, its nearest live neighbour.

use crate::config::PopPlaces;

/// The POPs this node knows to be down, and each POP's neighbours nearest first.
#[derive(Debug)]
pub struct PopFallback {
    pops: PopPlaces,
    /// Per ingress POP, the other linked POPs nearest first (by fiber distance, then id):
    /// made the first time a reply needs it, so a node costs O(POPs), not O(POPs²), in a
    /// world of thousands of POPs.
    order: std::collections::BTreeMap<u16, Vec<u16>>,
    /// POPs down now, each once.
    down: Vec<u16>,
}

impl PopFallback {
    pub fn new(pops: PopPlaces) -> PopFallback {
        PopFallback { pops, order: Default::default(), down: Vec::new() }
    }

    /// Backbone health probing says whether a POP is reachable.
    pub fn set_up(&mut self, pop_id: u16, up: bool) {
        self.down.retain(|&p| p != pop_id);
        if !up {
            self.down.push(pop_id);
        }
        debug_assert!(self.down.iter().filter(|&&p| p == pop_id).count() == usize::from(!up));
    }

    /// The POP a reply to a flow that entered at `ingress` leaves through; `ingress`
    /// itself when no neighbour of it is up either.
    pub fn reply_pop(&mut self, ingress: u16) -> u16 {
        if !self.down.contains(&ingress) {
            return ingress;
        }
        let PopFallback { pops, order, down } = self;
        let Some(&from) = pops.places.get(usize::from(ingress)) else { return ingress };
        let order = order.entry(ingress).or_insert_with(|| {
            let mut others: Vec<u16> = (0..pops.places.len())
                .filter(|&q| q != usize::from(ingress) && pops.linked.get(q).copied().unwrap_or(false))
                .map(|q| q as u16)
                .collect();
            others
                .sort_by_cached_key(|&q| (anyedge_ccn::geo::fiber_delay_ns(from, pops.places[usize::from(q)], 1.0), q));
            others
        });
        order.iter().copied().find(|p| !down.contains(p)).unwrap_or(ingress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_down_pops_replies_go_to_its_nearest_live_neighbour_and_back_when_it_returns() {
        // Paris (0), Tokyo (1), Frankfurt (2): Frankfurt is Paris's nearest, then Tokyo.
        let places: std::sync::Arc<[[f64; 2]]> =
            std::sync::Arc::from([[48.857, 2.352], [35.69, 139.69], [50.11, 8.68]]);
        let mut f = PopFallback::new(PopPlaces { places: places.clone(), linked: vec![true; 3] });
        assert_eq!(f.reply_pop(0), 0);
        f.set_up(0, false);
        assert_eq!(f.reply_pop(0), 2);
        f.set_up(2, false);
        assert_eq!(f.reply_pop(0), 1);
        f.set_up(1, false);
        assert_eq!(f.reply_pop(0), 0, "nobody up: the ingress still");
        f.set_up(0, true);
        assert_eq!(f.reply_pop(0), 0);
        // A POP the region has no backbone link to is never a fallback.
        let mut f = PopFallback::new(PopPlaces { places, linked: vec![true, true, false] });
        f.set_up(0, false);
        assert_eq!(f.reply_pop(0), 1);
        // An id past the POPs known: the ingress itself.
        f.set_up(9, false);
        assert_eq!(f.reply_pop(9), 9);
    }
}
