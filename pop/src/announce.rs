//! What a POP announces to the internet, per VIP address: the VIP is healthy at this POP
//! while a CLB node of its home region answers the POP's probes, and health becomes an
//! announcement through rise/fall hysteresis, so a flapping check moves clients at most
//! once per `min(RISE, FALL)` samples. Both drivers sample once per probe round — the
//! simulator routes its clients by the result, the lab carries it to BIRD — so a dead
//! region's VIP is withdrawn after the same number of failed rounds in both.

use std::net::IpAddr;

/// Healthy samples in a row before a withdrawn VIP is announced again.
pub const RISE: u32 = 3;
/// Unhealthy samples in a row before an announced VIP is withdrawn.
pub const FALL: u32 = 2;
const _: () = assert!(RISE >= 1 && FALL >= 1, "hysteresis needs at least one sample each way");

/// One VIP address's announcement changed: announce it (`announced`) or withdraw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnounceChange {
    pub vip: IpAddr,
    pub announced: bool,
}

/// Health → announcement, with rise/fall hysteresis: announced after `rise` healthy
/// samples in a row, withdrawn after `fall` unhealthy ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hysteresis {
    rise: u32,
    fall: u32,
    announced: bool,
    /// Samples in a row that disagreed with `announced`.
    run: u32,
}

impl Hysteresis {
    pub fn new(rise: u32, fall: u32, announced: bool) -> Hysteresis {
        Hysteresis { rise: rise.max(1), fall: fall.max(1), announced, run: 0 }
    }

    pub fn announced(&self) -> bool {
        self.announced
    }

    /// Withdrawn now, not after `fall` samples; `Some(false)` when that is a change. The
    /// next announce needs `rise` healthy samples as after any withdrawal.
    pub fn withdraw(&mut self) -> Option<bool> {
        self.run = 0;
        std::mem::replace(&mut self.announced, false).then_some(false)
    }

    /// One health sample; `Some(announce)` when the announcement changes.
    pub fn sample(&mut self, healthy: bool) -> Option<bool> {
        if healthy == self.announced {
            self.run = 0;
            return None;
        }
        self.run += 1;
        let needed = if healthy { self.rise } else { self.fall };
        debug_assert!(self.run <= needed, "a run past its threshold would have changed the announcement");
        if self.run < needed {
            return None;
        }
        self.run = 0;
        self.announced = healthy;
        Some(healthy)
    }
}

/// One VIP address a POP publishes: where its health comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Published {
    vip: IpAddr,
    /// The home region, whose CLB nodes make the VIP healthy here.
    region: u16,
    clb_nodes: u16,
}

/// What a POP publishes, shared by the POPs that publish the same (every POP of a world
/// whose VIPs are published everywhere: 2,000 POPs × 500 VIPs held 64 MB of copies).
#[derive(Debug, PartialEq, Eq)]
struct Listed {
    published: Vec<Published>,
    /// (address, index in `published`), sorted: a POP of a world of hundreds of VIPs is
    /// asked about each of them.
    by_vip: Vec<(IpAddr, u32)>,
}

thread_local! {
    /// The lists this thread made, while a POP holds them.
    static LISTED: std::cell::RefCell<anyedge_ccn::WeakMemo<Vec<Published>, Listed>> = Default::default();
}

impl Listed {
    fn shared(published: Vec<Published>) -> std::sync::Arc<Listed> {
        LISTED.with(|memo| {
            memo.borrow_mut().get_or_make(&published[..], || {
                let mut by_vip: Vec<(IpAddr, u32)> =
                    published.iter().enumerate().map(|(i, p)| (p.vip, i as u32)).collect();
                by_vip.sort_unstable();
                std::sync::Arc::new(Listed { published: published.clone(), by_vip })
            })
        })
    }
}

/// The announcements of every VIP address a POP publishes; all announced at the start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcements {
    listed: std::sync::Arc<Listed>,
    /// Per entry of `listed.published`.
    hysteresis: Vec<Hysteresis>,
    /// What the last [`Announcements::sample`] left unchanged for ever after.
    quiet: Quiet,
}

/// When a sample can change nothing: after a held sample another held one withdraws
/// what is withdrawn already; once every VIP's hysteresis is settled (no run, announced
/// as its health says), a sample with the same CLB nodes down finds each as it was. A
/// POP of a world of hundreds of VIPs sampled them all every probe round.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Quiet {
    Unknown,
    Held,
    Settled(Vec<(u16, u16)>),
}

impl Announcements {
    /// From (VIP address, home region, CLB nodes in it), every one announced.
    pub fn new(vips: impl IntoIterator<Item = (IpAddr, u16, u16)>) -> Announcements {
        let published: Vec<Published> =
            vips.into_iter().map(|(vip, region, clb_nodes)| Published { vip, region, clb_nodes }).collect();
        let hysteresis = vec![Hysteresis::new(RISE, FALL, true); published.len()];
        Announcements { listed: Listed::shared(published), hysteresis, quiet: Quiet::Unknown }
    }

    /// A (re)started POP announces everything, as its speaker does when it starts.
    pub fn restart(&mut self) {
        for h in &mut self.hysteresis {
            *h = Hysteresis::new(RISE, FALL, true);
        }
        self.quiet = Quiet::Unknown;
    }

    /// One sample of every VIP: healthy while a node of its home region is not among the
    /// CLB nodes `down` (region, node). `held` (a drain, a stop) withdraws every VIP at
    /// once instead. Does nothing when the last sample left nothing to change (see
    /// [`Quiet`]). Returns the announcements that changed.
    pub fn sample(&mut self, down: &[(u16, u16)], held: bool) -> Vec<AnnounceChange> {
        let quiet = match &self.quiet {
            Quiet::Unknown => false,
            Quiet::Held => held,
            Quiet::Settled(was_down) => !held && was_down.as_slice() == down,
        };
        if quiet {
            return Vec::new();
        }
        let (changed, settled) = self.sample_every(|region, node| !down.contains(&(region, node)), held);
        self.quiet = match (held, settled) {
            (true, _) => Quiet::Held,
            (false, true) => Quiet::Settled(down.to_vec()),
            (false, false) => Quiet::Unknown,
        };
        changed
    }

    /// Samples every VIP; also whether each is settled after it (no run, announced as its
    /// health says).
    fn sample_every(&mut self, clb_up: impl Fn(u16, u16) -> bool, held: bool) -> (Vec<AnnounceChange>, bool) {
        let mut changed = Vec::new();
        let mut settled = true;
        for (p, h) in self.listed.published.iter().zip(&mut self.hysteresis) {
            let healthy = (0..p.clb_nodes).any(|node| clb_up(p.region, node));
            let change = if held { h.withdraw() } else { h.sample(healthy) };
            if let Some(announced) = change {
                changed.push(AnnounceChange { vip: p.vip, announced });
            }
            settled &= h.run == 0 && h.announced == healthy;
        }
        (changed, settled)
    }

    /// Whether `vip` is announced here; an address this POP does not publish is not.
    pub fn announces(&self, vip: IpAddr) -> bool {
        let by_vip = &self.listed.by_vip;
        let from = by_vip.partition_point(|&(v, _)| v < vip);
        let mut same = by_vip[from..].iter().take_while(|&&(v, _)| v == vip);
        same.any(|&(_, i)| self.hysteresis[i as usize].announced())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flapping_check_changes_the_announcement_a_bounded_number_of_times() {
        let mut h = Hysteresis::new(3, 2, true);
        let changes = (0..100).filter_map(|i| h.sample(i % 2 == 0)).count();
        assert_eq!(changes, 0, "alternating samples never reach either threshold");
        let mut h = Hysteresis::new(3, 2, true);
        let pattern = [false, false, true, true, true];
        let changes = (0..100).filter_map(|i| h.sample(pattern[i % 5])).count();
        assert!(changes <= 100 / 2, "{changes} changes in 100 samples");
    }

    #[test]
    fn a_drain_withdraws_at_once_and_the_next_announce_still_waits_for_rise() {
        let mut h = Hysteresis::new(RISE, FALL, true);
        assert_eq!(h.withdraw(), Some(false), "withdrawn on the first call, not after {FALL} samples");
        assert_eq!(h.withdraw(), None, "already withdrawn");
        for _ in 1..RISE {
            assert_eq!(h.sample(true), None);
        }
        assert_eq!(h.sample(true), Some(true), "announced after {RISE} healthy samples");
    }

    #[test]
    fn withdraws_after_fall_and_announces_after_rise() {
        let mut h = Hysteresis::new(3, 2, true);
        assert_eq!(h.sample(false), None);
        assert_eq!(h.sample(false), Some(false), "withdrawn after 2 bad samples");
        assert_eq!(h.sample(true), None);
        assert_eq!(h.sample(true), None);
        assert_eq!(h.sample(true), Some(true), "announced after 3 good samples");
    }

    #[test]
    fn a_vip_is_withdrawn_when_no_node_of_its_home_region_answers_and_only_that_vip() {
        let (a, b): (IpAddr, IpAddr) = ("198.18.0.20".parse().unwrap(), "198.18.0.30".parse().unwrap());
        let mut ann = Announcements::new([(a, 0, 2), (b, 1, 1)]);
        // Region 0 dead, region 1 alive.
        let region_0_dead = [(0, 0), (0, 1)];
        assert_eq!(ann.sample(&region_0_dead, false), vec![], "one bad sample is not enough");
        assert_eq!(ann.sample(&region_0_dead, false), vec![AnnounceChange { vip: a, announced: false }]);
        assert!(!ann.announces(a) && ann.announces(b));
        // One node of region 0 back: announced after RISE samples.
        let one_back = [(0, 0)];
        let changes: Vec<_> = (0..RISE).flat_map(|_| ann.sample(&one_back, false)).collect();
        assert_eq!(changes, vec![AnnounceChange { vip: a, announced: true }]);
        // A drain withdraws both at once; a restart announces both.
        assert_eq!(ann.sample(&one_back, true).len(), 2);
        ann.restart();
        assert!(ann.announces(a) && ann.announces(b));
        assert!(!ann.announces("198.18.0.99".parse().unwrap()), "an address not published is not announced");
    }

    /// Hundreds of VIPs, listed in no particular order (v4 and v6, a region each): the
    /// ones whose region died are withdrawn, every other one announced, an unknown none.
    #[test]
    fn among_hundreds_of_vips_each_answers_for_its_own_region() {
        let vips: Vec<(IpAddr, u16, u16)> = (0..300u16)
            .rev()
            .flat_map(|r| {
                let v4 = IpAddr::from([198, 18, (r >> 8) as u8, r as u8]);
                let v6 = IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, r]);
                [(v4, r, 1), (v6, r, 1)]
            })
            .collect();
        let mut ann = Announcements::new(vips.clone());
        let down: Vec<(u16, u16)> = (0..300u16).filter(|r| r % 7 == 0).map(|r| (r, 0)).collect();
        for _ in 0..FALL {
            ann.sample(&down, false);
        }
        for (vip, region, _) in vips {
            assert_eq!(ann.announces(vip), region % 7 != 0, "{vip}");
        }
        assert!(!ann.announces(IpAddr::from([198, 18, 9, 9])));
    }

    /// Sampling with quiet rounds skipped changes exactly what sampling every VIP every
    /// round does: random outages, recoveries and drains.
    #[test]
    fn skipping_quiet_rounds_changes_nothing_a_full_sample_would_not() {
        let vips: Vec<(IpAddr, u16, u16)> =
            (0..40u16).map(|i| (IpAddr::from([198, 18, 1, i as u8]), i % 6, 1 + i % 3)).collect();
        let (mut fast, mut every) = (Announcements::new(vips.clone()), Announcements::new(vips.clone()));
        let mut down: Vec<(u16, u16)> = Vec::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let (mut quiet_rounds, mut changes) = (0, 0);
        for step in 0..5_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match x % 16 {
                0 => down.push(((x >> 8) as u16 % 6, (x >> 16) as u16 % 3)),
                1 if !down.is_empty() => {
                    down.remove((x >> 8) as usize % down.len());
                }
                2 => fast.restart(),
                _ => {}
            }
            if x % 16 == 2 {
                every.restart();
            }
            let held = (x >> 32) % 50 < 2;
            quiet_rounds += usize::from(fast.quiet != Quiet::Unknown);
            let got = fast.sample(&down, held);
            let (want, _) = every.sample_every(|region, node| !down.contains(&(region, node)), held);
            assert_eq!(got, want, "step {step}");
            changes += got.len();
            assert_eq!(fast.hysteresis, every.hysteresis, "step {step}");
            for &(vip, _, _) in &vips {
                assert_eq!(fast.announces(vip), every.announces(vip));
            }
        }
        assert!(quiet_rounds > 1_000 && changes > 100, "{quiet_rounds} quiet rounds, {changes} changes");
    }
}
