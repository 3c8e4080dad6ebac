//! Connection-table sync between the CLB nodes of a region (UDP over the region network):
//! batches of entries (a flow's backend, a client's persistence), and the request a node
//! that restarts sends its peers for their tables. Parse/emit with typed errors, the
//! smoltcp way; fuzzed with the other parsers.
//!
//! ```text
//! header (8 bytes):  'A' 'S' | version | kind (1 entries, 2 table request) | from node (16) | count (16)
//! entry:             kind (1 flow, 2 persistence) | transport (6 TCP, 17 UDP)
//!                    | client family (4, 6) | backend family (4, 6)
//!                    | client IP | client port (16) | VIP | VIP port (16)
//!                    | backend IP | backend port (16) | ttl in ms (32)
//! ```
//! A persistence entry names the client by address alone (its port is 0).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::{Error, FlowKey, Result, Transport};

pub const VERSION: u8 = 1;
const MAGIC: [u8; 2] = *b"AS";
pub const HEADER_LEN: usize = 8;
/// A batch stays below this many bytes (one datagram on any path).
pub const BATCH_BYTES_MAX: usize = 1200;

const KIND_ENTRIES: u8 = 1;
const KIND_REQUEST: u8 = 2;
const ENTRY_FLOW: u8 = 1;
const ENTRY_PERSIST: u8 = 2;

/// One synced fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// This flow (client → VIP) goes to `backend`; the entry lives `ttl_ms` unless renewed.
    Flow { key: FlowKey, backend: SocketAddr, ttl_ms: u32 },
    /// New flows from `client` to this listener go to `backend` for `ttl_ms`.
    Persist { transport: Transport, client: IpAddr, vip: SocketAddr, backend: SocketAddr, ttl_ms: u32 },
}

/// A sync message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Entries {
        from: u16,
        entries: Vec<Entry>,
    },
    /// "Send me your table": a node that (re)started.
    Request {
        from: u16,
    },
}

fn family(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() { 4 } else { 6 }
}

fn put_ip(out: &mut Vec<u8>, ip: &IpAddr) {
    let before = out.len();
    match ip {
        IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
    }
    debug_assert_eq!(out.len() - before, if family(ip) == 4 { 4 } else { 16 });
}

/// The bytes one entry takes.
pub fn entry_len(entry: &Entry) -> usize {
    let (client, backend) = match entry {
        Entry::Flow { key, backend, .. } => (key.src, backend.ip()),
        Entry::Persist { client, backend, .. } => (*client, backend.ip()),
    };
    let ip = |f: u8| if f == 4 { 4 } else { 16 };
    debug_assert!(
        matches!(entry, Entry::Flow { key, .. } if key.src.is_ipv4() == key.dst.is_ipv4())
            || matches!(entry, Entry::Persist { .. })
    );
    4 + 2 * ip(family(&client)) + ip(family(&backend)) + 2 + 2 + 2 + 4
}

fn emit_entry(out: &mut Vec<u8>, entry: &Entry) {
    let (kind, transport, client, client_port, vip, backend, ttl_ms) = match *entry {
        Entry::Flow { key, backend, ttl_ms } => {
            (ENTRY_FLOW, key.transport, key.src, key.src_port, SocketAddr::new(key.dst, key.dst_port), backend, ttl_ms)
        }
        Entry::Persist { transport, client, vip, backend, ttl_ms } => {
            (ENTRY_PERSIST, transport, client, 0, vip, backend, ttl_ms)
        }
    };
    let proto = match transport {
        Transport::Tcp => 6,
        Transport::Udp => 17,
    };
    // The VIP is written in the client's family: the reader takes it so.
    debug_assert_eq!(family(&client), family(&vip.ip()), "a client reaches a VIP of its own family");
    let before = out.len();
    out.extend_from_slice(&[kind, proto, family(&client), family(&backend.ip())]);
    put_ip(out, &client);
    out.extend_from_slice(&client_port.to_be_bytes());
    put_ip(out, &vip.ip());
    out.extend_from_slice(&vip.port().to_be_bytes());
    put_ip(out, &backend.ip());
    out.extend_from_slice(&backend.port().to_be_bytes());
    out.extend_from_slice(&ttl_ms.to_be_bytes());
    debug_assert_eq!(out.len() - before, entry_len(entry), "entry_len sizes what is written");
}

impl Message {
    pub fn emit(&self) -> Vec<u8> {
        let (kind, from, entries): (u8, u16, &[Entry]) = match self {
            Message::Entries { from, entries } => (KIND_ENTRIES, *from, entries),
            Message::Request { from } => (KIND_REQUEST, *from, &[]),
        };
        let mut out = Vec::with_capacity(HEADER_LEN + entries.iter().map(entry_len).sum::<usize>());
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(kind);
        out.extend_from_slice(&from.to_be_bytes());
        out.extend_from_slice(&(entries.len() as u16).to_be_bytes());
        debug_assert!(entries.len() <= usize::from(u16::MAX), "a batch's count fits its field");
        for e in entries {
            emit_entry(&mut out, e);
        }
        debug_assert_eq!(out.len(), HEADER_LEN + entries.iter().map(entry_len).sum::<usize>());
        out
    }

    pub fn parse(bytes: &[u8]) -> Result<Message> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(2)? != MAGIC {
            return Err(Error::Malformed("sync magic"));
        }
        if r.u8()? != VERSION {
            return Err(Error::Malformed("sync version"));
        }
        let kind = r.u8()?;
        let from = r.u16()?;
        let count = r.u16()?;
        let message = match kind {
            KIND_REQUEST if count == 0 => Message::Request { from },
            KIND_REQUEST => return Err(Error::Malformed("sync request with entries")),
            KIND_ENTRIES => {
                // Each entry takes at least 26 bytes: a count beyond that is a lie.
                if usize::from(count) > bytes.len() / 26 {
                    return Err(Error::Truncated);
                }
                let entries = (0..count).map(|_| r.entry()).collect::<Result<Vec<_>>>()?;
                Message::Entries { from, entries }
            }
            _ => return Err(Error::Unsupported("sync message kind")),
        };
        if r.at != bytes.len() {
            return Err(Error::Malformed("sync trailing bytes"));
        }
        debug_assert!(matches!(&message, Message::Request { .. }) || kind == KIND_ENTRIES);
        Ok(message)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).ok_or(Error::Truncated)?;
        let slice = self.bytes.get(self.at..end).ok_or(Error::Truncated)?;
        debug_assert_eq!(slice.len(), n);
        self.at = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn ip(&mut self, family: u8) -> Result<IpAddr> {
        Ok(match family {
            4 => {
                let b = self.take(4)?;
                IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            }
            6 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(self.take(16)?);
                IpAddr::V6(Ipv6Addr::from(a))
            }
            _ => return Err(Error::Malformed("sync address family")),
        })
    }

    fn entry(&mut self) -> Result<Entry> {
        let kind = self.u8()?;
        let transport = match self.u8()? {
            6 => Transport::Tcp,
            17 => Transport::Udp,
            _ => return Err(Error::Unsupported("sync transport")),
        };
        let (client_family, backend_family) = (self.u8()?, self.u8()?);
        let client = self.ip(client_family)?;
        let client_port = self.u16()?;
        let vip = self.ip(client_family)?;
        let vip_port = self.u16()?;
        let backend = SocketAddr::new(self.ip(backend_family)?, self.u16()?);
        let ttl_ms = self.u32()?;
        debug_assert!(self.at <= self.bytes.len());
        Ok(match kind {
            ENTRY_FLOW => Entry::Flow {
                key: FlowKey { transport, src: client, src_port: client_port, dst: vip, dst_port: vip_port },
                backend,
                ttl_ms,
            },
            ENTRY_PERSIST if client_port == 0 => {
                Entry::Persist { transport, client, vip: SocketAddr::new(vip, vip_port), backend, ttl_ms }
            }
            ENTRY_PERSIST => return Err(Error::Malformed("sync persistence entry with a port")),
            _ => return Err(Error::Unsupported("sync entry kind")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<Entry> {
        let key = FlowKey {
            transport: Transport::Udp,
            src: "198.18.64.1".parse().unwrap(),
            src_port: 40_000,
            dst: "198.18.0.20".parse().unwrap(),
            dst_port: 7000,
        };
        vec![
            Entry::Flow { key, backend: "198.19.20.1:7000".parse().unwrap(), ttl_ms: 60_000 },
            Entry::Flow {
                key: FlowKey { src: "fd00::1".parse().unwrap(), dst: "fd00:a::20".parse().unwrap(), ..key },
                backend: "198.19.20.2:7000".parse().unwrap(),
                ttl_ms: 1,
            },
            Entry::Persist {
                transport: Transport::Tcp,
                client: "198.18.64.9".parse().unwrap(),
                vip: "198.18.0.20:443".parse().unwrap(),
                backend: "[fd00:19::1]:8080".parse().unwrap(),
                ttl_ms: 300_000,
            },
        ]
    }

    #[test]
    fn batches_and_requests_round_trip() {
        let m = Message::Entries { from: 2, entries: entries() };
        let bytes = m.emit();
        assert_eq!(bytes.len(), HEADER_LEN + entries().iter().map(entry_len).sum::<usize>());
        assert_eq!(Message::parse(&bytes), Ok(m));
        let r = Message::Request { from: 1 };
        assert_eq!(Message::parse(&r.emit()), Ok(r));
    }

    #[test]
    fn every_truncation_and_a_lying_count_are_errors() {
        let bytes = Message::Entries { from: 2, entries: entries() }.emit();
        for len in 0..bytes.len() {
            assert!(Message::parse(&bytes[..len]).is_err(), "{len} bytes parsed");
        }
        let mut lying = bytes.clone();
        lying[6..8].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(Message::parse(&lying), Err(Error::Truncated));
        let mut long = bytes;
        long.push(0);
        assert_eq!(Message::parse(&long), Err(Error::Malformed("sync trailing bytes")));
    }
}
