//! The bytes ranks send each other at a window's end (`partition`): crossings, and at a
//! fault on a CLB node the questions a rank's clients ask of POPs another rank runs, and
//! their answers. Little-endian, fixed widths, nothing that depends on the process (no
//! pointers, no hash order): a rank reads exactly what another wrote, and any byte it
//! cannot read is an error naming it, never a guess.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyedge_proto::inner::{FlowKey, Transport};

use crate::world::events::Arrival;
use crate::world::ids::{ClbId, ClientId, HostId, PopId, Probed, ProberAt};
use crate::world::partitioning::{Crossed, Crossing};

/// Reads what [`Writer`]s wrote; every read says when the bytes ran out.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// What is left to read.
    pub(super) fn rest(&self) -> &'a [u8] {
        self.bytes
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() < n {
            return Err(format!("{} bytes where {n} were due", self.bytes.len()));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    pub(super) fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(super) fn u64(&mut self) -> Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    fn index(&mut self) -> Result<usize, String> {
        usize::try_from(self.u64()?).map_err(|_| "an index beyond this machine's".to_string())
    }

    fn bytes(&mut self) -> Result<Vec<u8>, String> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }

    fn ip(&mut self) -> Result<IpAddr, String> {
        match self.u8()? {
            4 => {
                let b = self.take(4)?;
                Ok(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])))
            }
            6 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(self.take(16)?);
                Ok(IpAddr::V6(Ipv6Addr::from(a)))
            }
            v => Err(format!("address family {v}")),
        }
    }
}

/// Appends fixed-width little-endian fields.
#[derive(Default)]
pub(super) struct Writer {
    pub(super) out: Vec<u8>,
}

impl Writer {
    pub(super) fn u8(&mut self, v: u8) {
        self.out.push(v);
    }

    pub(super) fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    pub(super) fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    fn index(&mut self, v: usize) {
        self.u64(v as u64);
    }

    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.out.extend_from_slice(b);
    }

    fn ip(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(a) => {
                self.u8(4);
                self.out.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                self.u8(6);
                self.out.extend_from_slice(&a.octets());
            }
        }
    }

    /// One crossing: when, between which partitions, its place in its sender's order, and
    /// what it carries.
    pub(super) fn crossing(&mut self, c: &Crossing) {
        self.u64(c.at);
        self.u32(c.from);
        self.u64(c.seq);
        self.u32(c.to);
        match &c.ev {
            Crossed::Arrive { to, packet } => {
                self.u8(0);
                self.arrival(to);
                self.bytes(packet);
            }
            Crossed::Routes { pop, routes, part } => {
                self.u8(1);
                self.index(pop.0);
                self.u32(*part);
                self.u32(routes.len() as u32);
                self.out.extend(routes.iter().map(|&r| u8::from(r)));
            }
        }
    }

    fn arrival(&mut self, a: &Arrival) {
        match *a {
            Arrival::PopFromClient(p) => self.tagged(0, p.0),
            Arrival::PopFromClb(p) => self.tagged(1, p.0),
            Arrival::ClbFromPop(c) => self.tagged(2, c.0),
            Arrival::ClbDirect(c) => self.tagged(3, c.0),
            Arrival::RegionEdge { region, hash, quic } => {
                self.u8(4);
                self.u32(region);
                self.u32(hash);
                self.u8(u8::from(quic));
            }
            Arrival::ClbFromBackend(c) => self.tagged(5, c.0),
            Arrival::ClbFromPeer(c) => self.tagged(6, c.0),
            Arrival::Backend { host, via_clb } => {
                self.tagged(7, host.0);
                self.index(via_clb.0);
            }
            Arrival::EgressFromClb(e) => self.tagged(8, e),
            Arrival::EgressFromInternet(e) => self.tagged(9, e),
            Arrival::InternetHost(h) => self.tagged(10, h.0),
            Arrival::Client(c) => self.tagged(11, c.0),
            Arrival::ProbeRequest { to, from } => {
                match to {
                    Probed::Pop(p) => self.tagged(12, p.0),
                    Probed::Clb(c) => self.tagged(13, c.0),
                }
                self.prober(from);
            }
            Arrival::ProbeAnswer { at } => {
                self.u8(14);
                self.prober(at);
            }
        }
    }

    fn tagged(&mut self, tag: u8, index: usize) {
        self.u8(tag);
        self.index(index);
    }

    fn prober(&mut self, at: ProberAt) {
        match at {
            ProberAt::Pop(p) => self.tagged(0, p.0),
            ProberAt::Clb(c) => self.tagged(1, c.0),
            ProberAt::Transit(p) => self.tagged(2, p.0),
            ProberAt::Region(r) => self.tagged(3, r),
        }
    }

    /// A flow's 5-tuple, as a POP's flow table keys it.
    pub(super) fn flow_key(&mut self, k: &FlowKey) {
        self.u8(match k.transport {
            Transport::Tcp => 6,
            Transport::Udp => 17,
        });
        self.ip(k.src);
        self.u32(u32::from(k.src_port));
        self.ip(k.dst);
        self.u32(u32::from(k.dst_port));
    }
}

impl Reader<'_> {
    pub(super) fn crossing(&mut self) -> Result<Crossing, String> {
        let (at, from, seq, to) = (self.u64()?, self.u32()?, self.u64()?, self.u32()?);
        let ev = match self.u8()? {
            0 => {
                let to = self.arrival()?;
                Crossed::Arrive { to, packet: self.bytes()? }
            }
            1 => {
                let pop = PopId(self.index()?);
                let part = self.u32()?;
                let n = self.u32()? as usize;
                let routes = self.take(n)?.iter().map(|&b| b != 0).collect();
                Crossed::Routes { pop, routes, part }
            }
            k => return Err(format!("a crossing of kind {k}")),
        };
        Ok(Crossing { at, from, seq, to, ev })
    }

    fn arrival(&mut self) -> Result<Arrival, String> {
        Ok(match self.u8()? {
            0 => Arrival::PopFromClient(PopId(self.index()?)),
            1 => Arrival::PopFromClb(PopId(self.index()?)),
            2 => Arrival::ClbFromPop(ClbId(self.index()?)),
            3 => Arrival::ClbDirect(ClbId(self.index()?)),
            4 => Arrival::RegionEdge { region: self.u32()?, hash: self.u32()?, quic: self.u8()? != 0 },
            5 => Arrival::ClbFromBackend(ClbId(self.index()?)),
            6 => Arrival::ClbFromPeer(ClbId(self.index()?)),
            7 => Arrival::Backend { host: HostId(self.index()?), via_clb: ClbId(self.index()?) },
            8 => Arrival::EgressFromClb(self.index()?),
            9 => Arrival::EgressFromInternet(self.index()?),
            10 => Arrival::InternetHost(HostId(self.index()?)),
            11 => Arrival::Client(ClientId(self.index()?)),
            12 => Arrival::ProbeRequest { to: Probed::Pop(PopId(self.index()?)), from: self.prober()? },
            13 => Arrival::ProbeRequest { to: Probed::Clb(ClbId(self.index()?)), from: self.prober()? },
            14 => Arrival::ProbeAnswer { at: self.prober()? },
            k => return Err(format!("an arrival of kind {k}")),
        })
    }

    fn prober(&mut self) -> Result<ProberAt, String> {
        Ok(match self.u8()? {
            0 => ProberAt::Pop(PopId(self.index()?)),
            1 => ProberAt::Clb(ClbId(self.index()?)),
            2 => ProberAt::Transit(PopId(self.index()?)),
            3 => ProberAt::Region(self.index()?),
            k => return Err(format!("a prober of kind {k}")),
        })
    }

    pub(super) fn flow_key(&mut self) -> Result<FlowKey, String> {
        let transport = match self.u8()? {
            6 => Transport::Tcp,
            17 => Transport::Udp,
            p => return Err(format!("transport {p}")),
        };
        let src = self.ip()?;
        let src_port = u16::try_from(self.u32()?).map_err(|_| "a port above 65535".to_string())?;
        let dst = self.ip()?;
        let dst_port = u16::try_from(self.u32()?).map_err(|_| "a port above 65535".to_string())?;
        Ok(FlowKey { transport, src, src_port, dst, dst_port })
    }
}

/// Every crossing in `bytes`, in the order written.
pub(super) fn crossings(bytes: &[u8]) -> Result<Vec<Crossing>, String> {
    let mut r = Reader::new(bytes);
    let mut out = Vec::new();
    while !r.is_empty() {
        out.push(r.crossing()?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrivals() -> Vec<Arrival> {
        vec![
            Arrival::PopFromClient(PopId(3)),
            Arrival::PopFromClb(PopId(1 << 40)),
            Arrival::ClbFromPop(ClbId(2)),
            Arrival::ClbDirect(ClbId(0)),
            Arrival::RegionEdge { region: 7, hash: 0xdead_beef, quic: true },
            Arrival::ClbFromBackend(ClbId(5)),
            Arrival::ClbFromPeer(ClbId(6)),
            Arrival::Backend { host: HostId(9), via_clb: ClbId(4) },
            Arrival::EgressFromClb(2),
            Arrival::EgressFromInternet(3),
            Arrival::InternetHost(HostId(11)),
            Arrival::Client(ClientId(999_999)),
            Arrival::ProbeRequest { to: Probed::Pop(PopId(2)), from: ProberAt::Clb(ClbId(1)) },
            Arrival::ProbeRequest { to: Probed::Clb(ClbId(2)), from: ProberAt::Region(4) },
            Arrival::ProbeAnswer { at: ProberAt::Transit(PopId(8)) },
            Arrival::ProbeAnswer { at: ProberAt::Pop(PopId(0)) },
        ]
    }

    #[test]
    fn every_crossing_reads_back_as_written_and_a_cut_or_unknown_one_is_an_error() {
        let mut w = Writer::default();
        let mut written = Vec::new();
        for (i, to) in arrivals().into_iter().enumerate() {
            let c = Crossing {
                at: 1_000_000 + i as u64,
                from: i as u32 % 3,
                seq: 40 + i as u64,
                to: 2,
                ev: Crossed::Arrive { to, packet: vec![i as u8; i * 7] },
            };
            w.crossing(&c);
            written.push(c);
        }
        let routes = Crossing {
            at: 5,
            from: 1,
            seq: 1,
            to: 0,
            ev: Crossed::Routes { pop: PopId(4), routes: vec![true, false, true], part: 2 },
        };
        w.crossing(&routes);
        written.push(routes);
        let read = crossings(&w.out).expect("reads back");
        assert_eq!(read.len(), written.len());
        for (a, b) in read.iter().zip(&written) {
            assert_eq!((a.at, a.from, a.seq, a.to), (b.at, b.from, b.seq, b.to));
            match (&a.ev, &b.ev) {
                (Crossed::Arrive { to: ta, packet: pa }, Crossed::Arrive { to: tb, packet: pb }) => {
                    assert_eq!(format!("{ta:?}"), format!("{tb:?}"));
                    assert_eq!(pa, pb);
                }
                (
                    Crossed::Routes { pop: a, routes: ra, part: xa },
                    Crossed::Routes { pop: b, routes: rb, part: xb },
                ) => {
                    assert_eq!((a.0, ra, xa), (b.0, rb, xb));
                }
                _ => panic!("kinds differ"),
            }
        }
        for cut in [1, 10, 30, w.out.len() - 1] {
            assert!(crossings(&w.out[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = w.out.clone();
        bad[24] = 9;
        match crossings(&bad) {
            Err(e) => assert!(e.contains("kind 9"), "{e}"),
            Ok(_) => panic!("an unknown kind read"),
        }
    }

    #[test]
    fn bytes_of_any_shape_read_as_crossings_or_an_error_never_a_panic() {
        let mut rng = anyedge_ccn::ComponentRng::new(11, "rank wire");
        let mut w = Writer::default();
        for to in arrivals() {
            w.crossing(&Crossing { at: 9, from: 1, seq: 2, to: 0, ev: Crossed::Arrive { to, packet: vec![7; 40] } });
        }
        for _ in 0..20_000 {
            let mut bytes = w.out.clone();
            // Flip a few bytes and cut somewhere: lengths, kinds and indices all go wrong.
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(bytes.len() as u64) as usize;
                bytes[at] = rng.below(256) as u8;
            }
            bytes.truncate(rng.below(bytes.len() as u64 + 1) as usize);
            let _ = crossings(&bytes);
            let mut r = Reader::new(&bytes);
            let _ = r.flow_key();
        }
    }

    #[test]
    fn a_flow_key_reads_back_as_written() {
        let keys = [
            FlowKey {
                transport: Transport::Udp,
                src: "100.64.1.2".parse().unwrap(),
                src_port: 40_000,
                dst: "198.18.0.20".parse().unwrap(),
                dst_port: 7000,
            },
            FlowKey {
                transport: Transport::Tcp,
                src: "2001:db8::7".parse().unwrap(),
                src_port: 1,
                dst: "2001:db8:ffff::1".parse().unwrap(),
                dst_port: 443,
            },
        ];
        let mut w = Writer::default();
        for k in &keys {
            w.flow_key(k);
        }
        let mut r = Reader::new(&w.out);
        assert_eq!([r.flow_key().unwrap(), r.flow_key().unwrap()], keys);
        assert!(r.is_empty());
    }
}
