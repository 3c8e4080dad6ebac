#!/usr/bin/env python3
"""An HTTP/3 client nobody here wrote (aioquic's H3Connection) against a VIP's QUIC
listener: one connection offering ALPN h3, then the requests asked for, each on a
stream of its own, one after another. Prints one JSON object:

  alpn        the protocol the listener chose
  responses   per request: method, path, status, the body's length and SHA-256, and
              the body itself when it is text of at most 4096 bytes (a request with no
              answer within --timeout: status null and an error)

usage: h3.py HOST PORT [--get PATH]... [--head PATH]... [--put PATH FILE]...
       [--get-to PATH FILE]... [--header NAME:VALUE]... [--trailer NAME:VALUE]...
       [--timeout SECONDS]

Requests run in the order --get, --head, --put, --get-to are given on the command
line. Every request carries each --header field (one field per --header, so a name
given twice is sent twice) and ends with a trailer section of the --trailer fields
when there are any (sent after the body, or after the headers when there is none).
"""

import argparse
import asyncio
import hashlib
import json
import ssl
import sys

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic)
        self.answers = {}

    def quic_event_received(self, event):
        for e in self.http.handle_event(event):
            if not isinstance(e, (HeadersReceived, DataReceived)) or e.stream_id not in self.answers:
                continue
            answer = self.answers[e.stream_id]
            if isinstance(e, HeadersReceived):
                answer["headers"] += e.headers
            else:
                answer["body"] += e.data
            if e.stream_ended and not answer["done"].done():
                answer["done"].set_result(True)

    async def request(self, method, authority, path, body, timeout, extra=(), trailers=()):
        stream = self._quic.get_next_available_stream_id()
        done = asyncio.get_running_loop().create_future()
        self.answers[stream] = {"headers": [], "body": b"", "done": done}
        headers = [(b":method", method.encode()), (b":scheme", b"https"), (b":authority", authority.encode()),
                   (b":path", path.encode()), (b"user-agent", b"aioquic-h3")] + list(extra)
        if body:
            headers.append((b"content-length", str(len(body)).encode()))
        self.http.send_headers(stream, headers, end_stream=not body and not trailers)
        if body:
            self.http.send_data(stream, body, end_stream=not trailers)
        if trailers:
            self.http.send_headers(stream, list(trailers), end_stream=True)
        self.transmit()
        await asyncio.wait_for(done, timeout)
        answer = self.answers.pop(stream)
        status = next((int(v) for k, v in answer["headers"] if k == b":status"), None)
        return status, answer["body"]


def field(text):
    name, _, value = text.partition(":")
    return (name.strip().lower().encode(), value.strip().encode())


class Ordered(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        namespace.requests.append((option_string, values))


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--get", action=Ordered, nargs=1)
    p.add_argument("--head", action=Ordered, nargs=1)
    p.add_argument("--put", action=Ordered, nargs=2)
    p.add_argument("--get-to", action=Ordered, nargs=2)
    p.add_argument("--header", action="append", default=[], type=field)
    p.add_argument("--trailer", action="append", default=[], type=field)
    p.add_argument("--timeout", type=float, default=5.0)
    p.set_defaults(requests=[])
    a = p.parse_args()
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, verify_mode=ssl.CERT_NONE)
    config.max_data = 64 << 20
    config.max_stream_data = 64 << 20
    authority = f"{a.host}:{a.port}"
    out = {"alpn": None, "responses": []}
    async with connect(a.host, a.port, configuration=config, create_protocol=Client) as client:
        out["alpn"] = client._quic.tls.alpn_negotiated
        for option, values in a.requests:
            path = values[0]
            body = b""
            if option == "--put":
                with open(values[1], "rb") as f:
                    body = f.read()
            method = {"--put": "PUT", "--head": "HEAD"}.get(option, "GET")
            try:
                status, got = await client.request(method, authority, path, body, a.timeout, a.header, a.trailer)
            except asyncio.TimeoutError:
                out["responses"].append({"method": method, "path": path, "status": None, "error": "no answer in time"})
                continue
            if option == "--get-to":
                with open(values[1], "wb") as f:
                    f.write(got)
            r = {"method": method, "path": path, "status": status, "length": len(got),
                 "sha256": hashlib.sha256(got).hexdigest()}
            if len(got) <= 4096:
                try:
                    r["body"] = got.decode()
                except UnicodeDecodeError:
                    pass
            out["responses"].append(r)
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    asyncio.run(main())
