#!/usr/bin/env python3
"""A QUIC client that holds what it opens (aioquic, nobody here wrote it): CONNECTIONS
connections to a VIP's QUIC listener, each opening STREAMS bidirectional streams that
send BYTES bytes and never finish, held open for SECONDS. With ALPN h3 each stream is
an HTTP/3 POST whose body never ends (a request the listener can hold but never
forward); with another ALPN (a relay's, `anyedge-probe`) each stream asks the listener
for a backend connection of its own and keeps it. Prints one JSON object:

  connections   connections that completed their handshake
  streams       streams opened
  reset         streams the listener reset or stopped (refused), by error code
  closed        connections the listener closed, with their error codes

usage: hold.py HOST PORT CONNECTIONS STREAMS BYTES SECONDS [ALPN]
"""

import asyncio
import json
import ssl
import sys

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, StopSendingReceived, StreamReset


class Holder(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic) if self._quic.configuration.alpn_protocols == H3_ALPN else None
        self.reset = {}
        self.closed = None

    def quic_event_received(self, event):
        if isinstance(event, (StreamReset, StopSendingReceived)):
            self.reset[event.stream_id] = event.error_code
        elif isinstance(event, ConnectionTerminated):
            self.closed = event.error_code
        if self.h3 is not None:
            self.h3.handle_event(event)

    def hold(self, authority, body):
        stream = self._quic.get_next_available_stream_id()
        if self.h3 is not None:
            headers = [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", authority.encode()),
                       (b":path", b"/hold"), (b"content-length", str(len(body) + 1).encode())]
            self.h3.send_headers(stream, headers, end_stream=False)
            self.h3.send_data(stream, body, end_stream=False)
        else:
            self._quic.send_stream_data(stream, body, end_stream=False)
        self.transmit()


async def one(host, port, streams, body, seconds, alpn, out):
    config = QuicConfiguration(is_client=True, alpn_protocols=alpn, verify_mode=ssl.CERT_NONE)
    config.max_data = 64 << 20
    config.max_stream_data = 64 << 20
    try:
        async with connect(host, port, configuration=config, create_protocol=Holder) as c:
            out["connections"] += 1
            for _ in range(streams):
                try:
                    c.hold(f"{host}:{port}", body)
                except Exception:
                    break
                out["streams"] += 1
                await asyncio.sleep(0)
            await asyncio.sleep(seconds)
            for code in c.reset.values():
                out["reset"][str(code)] = out["reset"].get(str(code), 0) + 1
            if c.closed is not None:
                out["closed"].append(c.closed)
    except Exception as e:
        out["errors"].append(repr(e))


async def main():
    host, port, conns, streams, size, seconds = sys.argv[1:7]
    alpn = [sys.argv[7]] if len(sys.argv) > 7 else H3_ALPN
    out = {"connections": 0, "streams": 0, "reset": {}, "closed": [], "errors": []}
    body = b"x" * int(size)
    await asyncio.gather(*(one(host, int(port), int(streams), body, float(seconds), alpn, out)
                           for _ in range(int(conns))))
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    asyncio.run(main())
