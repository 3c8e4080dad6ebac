#!/usr/bin/env python3
"""HTTP/2 header fields that cost nothing on the wire (the `h2` library from PyPI, nobody
here wrote it): CONNECTIONS TLS connections to an HTTPS listener (ALPN h2), each opening
STREAMS streams whose HEADERS carry FIELDS copies of one small field, which HPACK sends
once into its dynamic table and then as one-byte references; no stream ever ends. The
connections are held for SECONDS. Prints one JSON object:

  connections   connections whose preface and SETTINGS went through
  streams       streams opened
  wire_bytes    bytes sent (TLS records excluded)
  refused       streams the server reset, by error code
  goaway        connections the server closed with GOAWAY, by error code

usage: fields.py HOST PORT CONNECTIONS STREAMS FIELDS SECONDS
"""

import json
import socket
import ssl
import sys
import threading
import time

import h2.config
import h2.connection
import h2.events


def hold(host, port, streams, fields, seconds, out, lock):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    try:
        raw = socket.create_connection((host, port), timeout=5)
        sock = ctx.wrap_socket(raw, server_hostname=host)
    except OSError as e:
        with lock:
            out["errors"].append(repr(e))
        return
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sent = 0
    refused, goaway = {}, {}
    headers = [(":method", "POST"), (":scheme", "https"), (":authority", host), (":path", "/fields")]
    headers += [("a", "b")] * fields
    opened = 0
    try:
        data = conn.data_to_send()
        sock.sendall(data)
        sent += len(data)
        for _ in range(streams):
            stream = conn.get_next_available_stream_id()
            try:
                conn.send_headers(stream, headers, end_stream=False)
            except Exception:
                break
            opened += 1
            data = conn.data_to_send()
            sock.sendall(data)
            sent += len(data)
        sock.settimeout(0.2)
        until = time.time() + seconds
        while time.time() < until:
            try:
                got = sock.recv(65536)
            except socket.timeout:
                continue
            if not got:
                break
            for e in conn.receive_data(got):
                if isinstance(e, h2.events.StreamReset):
                    refused[str(e.error_code)] = refused.get(str(e.error_code), 0) + 1
                elif isinstance(e, h2.events.ConnectionTerminated):
                    goaway[str(e.error_code)] = goaway.get(str(e.error_code), 0) + 1
            data = conn.data_to_send()
            if data:
                sock.sendall(data)
    except OSError as e:
        with lock:
            out["errors"].append(repr(e))
    finally:
        with lock:
            out["connections"] += 1
            out["streams"] += opened
            out["wire_bytes"] += sent
            for k, v in refused.items():
                out["refused"][k] = out["refused"].get(k, 0) + v
            for k, v in goaway.items():
                out["goaway"][k] = out["goaway"].get(k, 0) + v
        sock.close()


def main():
    host, port, conns, streams, fields, seconds = sys.argv[1:7]
    out = {"connections": 0, "streams": 0, "wire_bytes": 0, "refused": {}, "goaway": {}, "errors": []}
    lock = threading.Lock()
    threads = [threading.Thread(target=hold, args=(host, int(port), int(streams), int(fields), float(seconds), out, lock))
               for _ in range(int(conns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
