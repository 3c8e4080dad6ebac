//! A stream relayed as bytes to the backend over a TCP connection of the node's own (a
//! QUIC listener's protocols other than `h3`): each way bounded, so QUIC's or TCP's flow
//! control pushes back on a side that does not read.

use std::net::IpAddr;

use quinn_proto::StreamId;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;

use crate::termination::STREAM_WINDOW;

/// Bytes a relayed stream holds each way beyond quinn's and the TCP socket's buffers
/// (client → backend, backend → client); past it the listener stops reading that side,
/// and QUIC's or TCP's flow control pushes back on the sender (a backend that stops
/// reading took +194 MB into one relay, a client that never opened its window +484 MB).
pub const RELAY_HELD_MAX: usize = 64 * 1024;
const _: () = assert!(RELAY_HELD_MAX <= STREAM_WINDOW as usize);

/// A stream relayed to the backend over TCP.
pub(super) struct Relay {
    pub(super) stream: StreamId,
    pub(super) tcp: SocketHandle,
    pub(super) local: (IpAddr, u16),
    pub(super) to_tcp: Vec<u8>,
    pub(super) to_quic: Vec<u8>,
    /// The client finished its side of the stream / we closed TCP's send side.
    pub(super) quic_fin: bool,
    pub(super) tcp_closed: bool,
    /// The backend finished / we finished the QUIC stream.
    pub(super) tcp_fin: bool,
    pub(super) quic_finished: bool,
}

impl Relay {
    /// Client → backend: what the client's stream holds, until its FIN.
    pub(super) fn read_stream(&mut self, conn: &mut quinn_proto::Connection) {
        let room = RELAY_HELD_MAX.saturating_sub(self.to_tcp.len());
        if self.quic_fin || room == 0 {
            return;
        }
        let mut stream = conn.recv_stream(self.stream);
        let Ok(mut chunks) = stream.read(true) else { return };
        let mut room = room;
        loop {
            if room == 0 {
                break;
            }
            match chunks.next(room) {
                Ok(Some(chunk)) => {
                    room -= chunk.bytes.len();
                    self.to_tcp.extend_from_slice(&chunk.bytes);
                }
                Ok(None) => {
                    self.quic_fin = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let _ = chunks.finalize();
    }

    /// Moves bytes both ways between the stream and the TCP socket, and passes each
    /// side's end to the other once what preceded it is delivered.
    pub(super) fn pump(&mut self, conn: &mut quinn_proto::Connection, s: &mut tcp::Socket<'static>) {
        // The backend's bytes go into the stream as far as its credit goes, the rest
        // waits in the socket (a few rounds: each write makes room to read again).
        for _ in 0..4 {
            let room = RELAY_HELD_MAX.saturating_sub(self.to_quic.len());
            crate::tcp_stack::exchange_upto(s, &mut self.to_tcp, &mut self.to_quic, room);
            let n = match self.to_quic.is_empty() {
                true => 0,
                false => conn.send_stream(self.stream).write(&self.to_quic).unwrap_or(0),
            };
            self.to_quic.drain(..n);
            if n == 0 || !s.can_recv() {
                break;
            }
        }
        debug_assert!(self.to_quic.len() <= RELAY_HELD_MAX && self.to_tcp.len() <= RELAY_HELD_MAX);
        if self.quic_fin && self.to_tcp.is_empty() && !self.tcp_closed && s.may_send() {
            s.close();
            self.tcp_closed = true;
        }
        let closed_by_backend = matches!(
            s.state(),
            tcp::State::CloseWait
                | tcp::State::LastAck
                | tcp::State::TimeWait
                | tcp::State::Closed
                | tcp::State::Closing
        );
        if !s.may_recv() && closed_by_backend {
            self.tcp_fin = true;
        }
        if self.tcp_fin && self.to_quic.is_empty() && !self.quic_finished {
            let _ = conn.send_stream(self.stream).finish();
            self.quic_finished = true;
        }
        debug_assert!(!self.quic_finished || self.tcp_fin, "the client's stream ends only after the backend's side");
    }
}
