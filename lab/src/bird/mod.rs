//! BIRD in the lab, the room setup, client and node share: a BIRD 2 speaker in every POP and every transit namespace, run and
//! restarted by the node process that owns the namespace, configured from the topology
//! by the one rule in `anyedge_topology::bgp`.
//!
//! - A transit speaker (`transit/POP`) peers with its POP (eBGP, BFD 50 ms × 3, hold 3 s),
//!   with every other transit (eBGP through a relay that delays each speaker's messages
//!   by the delay model's one-way delay between the sites, [`crate::node::relay`]; MED
//!   set on import to the model's round trip in µs, compared across ASes), and installs the best route of each VIP prefix in its
//!   namespace's kernel table, which forwards the clients' packets.
//! - A POP speaker announces each VIP it publishes from a static protocol per VIP and
//!   address family (`vip4_K`, `vip6_K`); the POP node enables one while the VIP is
//!   healthy there (a live CLB node of its home region, with rise/fall hysteresis: the POP
//!   core's rule, `anyedge_pop::announce`, which the simulator follows too) and
//!   disables it when not, over the speaker's control socket. The speaker dies with the
//!   node (`PR_SET_PDEATHSIG`): a killed POP's session closes and its routes go at once;
//!   a frozen POP's BFD session times out.
//!
//! Sessions are one per family: POP–transit sessions over that family; transit–transit
//! sessions both over IPv4 loopback (the relays), each naming its link's address of its
//! family as the next hop.

//!
//! `config` writes each speaker's configuration, `speaker` runs the process, `control`
//! talks to its control socket; `crate::node::bgp` carries the POP core's announce
//! decisions to the speaker.

mod config;
mod control;
mod internet;
mod speaker;

use std::path::PathBuf;

use crate::error::SysError;
use crate::plan::PlanGap;

/// Why a BGP speaker could not be configured, started or asked.
#[derive(Debug, thiserror::Error)]
pub enum BirdError {
    /// Debian's bird2 is not installed.
    #[error("the lab's BGP speaker `{BIRD}` is not installed: install Debian's bird2 (apt-get install bird2)")]
    NotInstalled,
    #[error(transparent)]
    Sys(#[from] SysError),
    #[error(transparent)]
    Plan(#[from] PlanGap),
    /// `bird -p` refused the configuration written at `path`.
    #[error("{}: BIRD refuses the configuration: {said}", path.display())]
    Configuration { path: PathBuf, said: String },
    /// The speaker answered a command with an error (a reply code of 8000 and up).
    #[error("BIRD: {0}")]
    Said(String),
    /// The speaker at `socket` did not answer within `seconds`.
    #[error("{}: BIRD did not answer in {seconds} s", socket.display())]
    Silent { socket: PathBuf, seconds: u64 },
}

pub use config::*;
pub use control::*;
pub use internet::{pop_config_as, reflector_config, region_community, router_config, router_id};
pub use speaker::*;
