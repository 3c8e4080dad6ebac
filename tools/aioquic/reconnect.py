#!/usr/bin/env python3
"""A QUIC client nobody here wrote (aioquic) against a VIP's QUIC listener: one request
every INTERVAL on a new bidirectional stream of one connection; when a request gets no
answer within TIMEOUT, or the connection ends, the client gives the connection up and
opens a new one, as applications on real QUIC stacks do. Prints one JSON object:

  sent, answered      requests and the ones answered in time
  connections         connections opened (1 when nothing broke)
  first_s, last_s     seconds from the start of the first and the last answer
  gap_s               the longest time between two answers (the outage a user saw)

A request is the built-in backend's probe framing: 20 bytes it echoes, then a u16 length
and an identity trailer. aioquic ignores stateless resets (it drops packets it cannot
decrypt), so it notices a lost connection by the request timeout or its idle timeout;
quinn acts on the reset at once.

The client offers ALPN (default `anyedge-probe`): a listener whose `alpn` lists it relays
each stream to the backend as bytes.

usage: reconnect.py HOST PORT SECONDS [INTERVAL_S TIMEOUT_S [ALPN]]
"""

import asyncio
import json
import ssl
import sys
import time

from aioquic.asyncio import connect
from aioquic.quic.configuration import QuicConfiguration

REQUEST = b"AEPR" + b"\x00" * 16


async def ask(protocol, timeout):
    """One request on a new stream; the echoed bytes, or None."""
    reader, writer = await protocol.create_stream()
    writer.write(REQUEST)
    try:
        head = await asyncio.wait_for(reader.readexactly(len(REQUEST) + 2), timeout)
        trailer = int.from_bytes(head[-2:], "big")
        await asyncio.wait_for(reader.readexactly(trailer), timeout)
    except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
        return None
    finally:
        writer.close()
    return head[: len(REQUEST)]


async def one_connection(host, port, config, deadline, interval, timeout, tally):
    """Requests on one connection until one goes unanswered or time is up."""
    async with connect(host, port, configuration=config, wait_connected=True) as protocol:
        tally["connections"] += 1
        while time.monotonic() < deadline:
            tally["sent"] += 1
            echoed = await ask(protocol, timeout)
            if echoed != REQUEST:
                protocol.close()
                return
            now = time.monotonic() - tally["start"]
            tally["answered"] += 1
            if tally["last_s"] is not None:
                tally["gap_s"] = max(tally["gap_s"], now - tally["last_s"])
            tally["first_s"] = now if tally["first_s"] is None else tally["first_s"]
            tally["last_s"] = now
            await asyncio.sleep(interval)


async def main():
    host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    interval = float(sys.argv[4]) if len(sys.argv) > 4 else 0.1
    timeout = float(sys.argv[5]) if len(sys.argv) > 5 else 1.0
    alpn = sys.argv[6] if len(sys.argv) > 6 else "anyedge-probe"
    config = QuicConfiguration(is_client=True, verify_mode=ssl.CERT_NONE, idle_timeout=5.0, alpn_protocols=[alpn])
    start = time.monotonic()
    deadline = start + seconds
    tally = {"sent": 0, "answered": 0, "connections": 0, "first_s": None, "last_s": None, "gap_s": 0.0}
    tally["start"] = start
    while time.monotonic() < deadline:
        try:
            await asyncio.wait_for(
                one_connection(host, port, config, deadline, interval, timeout, tally),
                max(deadline - time.monotonic(), 0.1) + timeout,
            )
        except (asyncio.TimeoutError, ConnectionError, OSError):
            await asyncio.sleep(interval)
    del tally["start"]
    print(json.dumps(tally))


if __name__ == "__main__":
    asyncio.run(main())
