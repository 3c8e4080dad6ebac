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
mod speaker;

pub use config::*;
pub use control::*;
pub use speaker::*;
