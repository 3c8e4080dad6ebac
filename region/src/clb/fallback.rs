//! Which POP a reply leaves through: the flow's latest ingress POP, or when backbone
//! probing says that POP is down, its nearest live neighbour.

/// The POPs this node knows to be down, and each POP's neighbours nearest first.
#[derive(Debug)]
pub struct PopFallback {
    /// For each POP id, the other POPs nearest first.
    order: Vec<Vec<u16>>,
    /// POPs down now, each once.
    down: Vec<u16>,
}

impl PopFallback {
    pub fn new(order: Vec<Vec<u16>>) -> PopFallback {
        debug_assert!(order.iter().enumerate().all(|(p, o)| !o.contains(&(p as u16))), "a POP is not its own fallback");
        PopFallback { order, down: Vec::new() }
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
    pub fn reply_pop(&self, ingress: u16) -> u16 {
        if !self.down.contains(&ingress) {
            return ingress;
        }
        let fallback = self
            .order
            .get(usize::from(ingress))
            .and_then(|order| order.iter().copied().find(|p| !self.down.contains(p)));
        fallback.unwrap_or(ingress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_down_pops_replies_go_to_its_nearest_live_neighbour_and_back_when_it_returns() {
        let mut f = PopFallback::new(vec![vec![2, 1], vec![0, 2], vec![0, 1]]);
        assert_eq!(f.reply_pop(0), 0);
        f.set_up(0, false);
        assert_eq!(f.reply_pop(0), 2);
        f.set_up(2, false);
        assert_eq!(f.reply_pop(0), 1);
        f.set_up(1, false);
        assert_eq!(f.reply_pop(0), 0, "nobody up: the ingress still");
        f.set_up(0, true);
        assert_eq!(f.reply_pop(0), 0);
    }
}
