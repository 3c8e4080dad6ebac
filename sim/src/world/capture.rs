//! `anyedge sim FILE --pcap DIR`: a pcap per node of every packet that reaches it,
//! stamped with simulated time (see `anyedge_proto::pcap` for the framing). Same
//! topology and seed, same bytes.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use crate::SimError;
use crate::world::World;
use crate::world::events::Arrival;
use crate::world::ids::Id;
use crate::world::ids::Probed;
use crate::world::ids::ProberAt;
use anyedge_proto::pcap;

pub(super) struct Capture {
    dir: PathBuf,
    filter: crate::CaptureFilter,
    files: BTreeMap<String, BufWriter<std::fs::File>>,
    /// The first write error: capturing stops there and the run reports it.
    pub(super) error: Option<String>,
}

impl Capture {
    pub(super) fn new(dir: PathBuf, filter: crate::CaptureFilter) -> Result<Capture, SimError> {
        std::fs::create_dir_all(&dir).map_err(|e| SimError(format!("--pcap {}: {e}", dir.display())))?;
        Ok(Capture { dir, filter, files: BTreeMap::new(), error: None })
    }

    /// Whether a packet reaching `node` now is kept (before it is framed at all).
    pub(super) fn keeps(&self, node: &str, at_ns: u64) -> bool {
        self.error.is_none() && self.filter.keeps(node, at_ns)
    }

    fn record(&mut self, node: String, at_ns: u64, packet: &[u8], port: u16) {
        if self.error.is_some() {
            return;
        }
        let Some(frame) = pcap::frame(packet, port) else { return };
        let snaplen = self.filter.snaplen.unwrap_or(pcap::SNAPLEN);
        let result = match self.files.get_mut(&node) {
            Some(out) => pcap::write_record_snap(out, at_ns, &frame, snaplen),
            None => {
                let path = self.dir.join(format!("{}.pcap", node.replace('/', "-")));
                let opened = std::fs::File::create(&path).map(BufWriter::new).and_then(|mut out| {
                    out.write_all(&pcap::file_header_snap(snaplen))?;
                    pcap::write_record_snap(&mut out, at_ns, &frame, snaplen)?;
                    Ok(out)
                });
                opened.map(|out| {
                    self.files.insert(node, out);
                })
            }
        };
        if let Err(e) = result {
            self.error = Some(format!("--pcap {}: {e}", self.dir.display()));
        }
    }

    /// Flushes every file; the first error, if any.
    pub(super) fn finish(&mut self) -> Result<(), SimError> {
        for out in self.files.values_mut() {
            if let Err(e) = out.flush() {
                self.error.get_or_insert(format!("--pcap {}: {e}", self.dir.display()));
            }
        }
        self.error.clone().map_or(Ok(()), |e| Err(SimError(e)))
    }
}

impl<'t> World<'t> {
    /// Captures (when on) a packet arriving at `to` now.
    pub(super) fn capture(&mut self, to: &Arrival, packet: &[u8]) {
        if self.capture.is_none() {
            return;
        }
        let t = self.t;
        let node = match *to {
            Arrival::PopFromClient(p) | Arrival::PopFromClb(p) => format!("pop/{}", t.pops[p.index()].name),
            // Handed to a CLB node at once, captured there.
            Arrival::RegionEdge { .. } => return,
            Arrival::ClbFromPop(c) | Arrival::ClbDirect(c) | Arrival::ClbFromBackend(c) | Arrival::ClbFromPeer(c) => {
                self.regions.clbs()[c].name(t)
            }
            Arrival::Backend { host, .. } | Arrival::InternetHost(host) => {
                format!("backend/{}", self.servers.hosts()[host].ip)
            }
            Arrival::EgressFromClb(e) | Arrival::EgressFromInternet(e) => self.servers.egress_nodes()[e].name.clone(),
            Arrival::Client(c) => format!("client/{}", t.clients[self.wire.group_of(c)].name),
            Arrival::ProbeRequest { to: Probed::Pop(p), .. } => format!("pop/{}", t.pops[p.index()].name),
            Arrival::ProbeRequest { to: Probed::Clb(c), .. } => self.regions.clbs()[c].name(t),
            Arrival::ProbeAnswer { at } => match at {
                ProberAt::Pop(p) => format!("pop/{}", t.pops[p.index()].name),
                ProberAt::Clb(c) => self.regions.clbs()[c].name(t),
                ProberAt::Transit(_) => "internet".to_string(),
                ProberAt::Region(r) => format!("region/{}", t.regions[r].name),
            },
        };
        // Unsealed datagrams that are not IP: the transits' probes of their POPs.
        let port = match to {
            Arrival::ProbeRequest { .. } | Arrival::ProbeAnswer { .. } => pcap::HEALTH_PORT,
            _ => pcap::TUNNEL_PORT,
        };
        let now = self.wire.now();
        if let Some(c) = self.capture.as_mut().filter(|c| c.keeps(&node, now)) {
            c.record(node, now, packet, port);
        }
    }

    /// Starts capturing into `dir`.
    pub fn capture_into(&mut self, dir: PathBuf, filter: crate::CaptureFilter) -> Result<(), SimError> {
        self.capture = Some(Capture::new(dir, filter)?);
        Ok(())
    }

    /// Ends the capture: every file flushed, or the first error.
    pub fn finish_capture(&mut self) -> Result<(), SimError> {
        self.capture.as_mut().map_or(Ok(()), |c| c.finish())
    }
}
