#!/usr/bin/env python3
"""A topology file opened as an editor opens it: yaml-language-server (the language
server of VS Code's YAML extension, Neovim, Helix) over LSP on stdio reads the schema from
the file's `# yaml-language-server: $schema=…` line.

  editor.py SERVER FILE

Opens FILE with two mistakes made in it (an unknown field on a POP, a scheduler that does
not exist), then asks for hover help on `scheduler` and for completion inside
`backbone: { … }`. Prints what the server said; exits 1 unless it flagged both mistakes,
hovered with the field's description and offered backbone fields.
"""

import json
import os
import select
import subprocess
import sys
import time

server_path, path = sys.argv[1], os.path.abspath(sys.argv[2])
server = subprocess.Popen([server_path, "--stdio"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
buf = b""
SETTINGS = {"validate": True, "hover": True, "completion": True, "schemaStore": {"enable": False}}


def send(msg):
    body = json.dumps(msg).encode()
    server.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
    server.stdin.flush()


def recv(deadline):
    global buf
    while time.time() < deadline:
        if b"\r\n\r\n" in buf:
            head, rest = buf.split(b"\r\n\r\n", 1)
            n = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0].split(b":")[1])
            if len(rest) >= n:
                buf = rest[n:]
                return json.loads(rest[:n])
        ready, _, _ = select.select([server.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(server.stdout.fileno(), 65536)
            if not chunk:
                return None
            buf += chunk
    return None


def wait_for(pred, seconds=30):
    deadline = time.time() + seconds
    while True:
        m = recv(deadline)
        if m is None:
            return None
        if "id" in m and "method" in m:  # the server asks: settings, or nothing
            items = m.get("params", {}).get("items", [])
            result = [SETTINGS for _ in items] if m["method"] == "workspace/configuration" else None
            send({"jsonrpc": "2.0", "id": m["id"], "result": result})
        elif pred(m):
            return m


uri = "file://" + path
text = open(path, encoding="utf-8").read()
lines = text.split("\n")
pop = next(i for i, l in enumerate(lines) if l.strip().startswith("- { name:") and "location" in l and l.rstrip().endswith("}"))
lines[pop] = lines[pop].rstrip()[:-1].rstrip() + ", colour: red }"
sched = next(i for i, l in enumerate(lines) if "scheduler: " in l)
word = lines[sched].split("scheduler: ")[1].split(",")[0].split("}")[0].strip()
lines[sched] = lines[sched].replace(f"scheduler: {word}", "scheduler: random", 1)
edited = "\n".join(lines)

send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "processId": os.getpid(), "rootUri": None,
    "capabilities": {"textDocument": {"hover": {"contentFormat": ["markdown"]}}, "workspace": {"configuration": True}}}})
wait_for(lambda m: m.get("id") == 1)
send({"jsonrpc": "2.0", "method": "initialized", "params": {}})
send({"jsonrpc": "2.0", "method": "workspace/didChangeConfiguration", "params": {"settings": {"yaml": SETTINGS}}})
send({"jsonrpc": "2.0", "method": "textDocument/didOpen",
      "params": {"textDocument": {"uri": uri, "languageId": "yaml", "version": 1, "text": edited}}})
d = wait_for(lambda m: m.get("method") == "textDocument/publishDiagnostics" and m["params"]["uri"] == uri
             and m["params"]["diagnostics"])
diagnostics = [(x["range"]["start"]["line"], x["message"]) for x in (d or {}).get("params", {}).get("diagnostics", [])]
for line, message in diagnostics:
    print(f"diagnostic, line {line + 1}: {message}")

col = lines[sched].index("scheduler") + 2
send({"jsonrpc": "2.0", "id": 2, "method": "textDocument/hover",
      "params": {"textDocument": {"uri": uri}, "position": {"line": sched, "character": col}}})
h = wait_for(lambda m: m.get("id") == 2) or {}
hover = ((h.get("result") or {}).get("contents") or {}).get("value", "")
print("hover on scheduler:", hover.replace("\n", " ")[:300])

bb = next(i for i, l in enumerate(lines) if l.startswith("backbone:"))
send({"jsonrpc": "2.0", "id": 3, "method": "textDocument/completion",
      "params": {"textDocument": {"uri": uri}, "position": {"line": bb, "character": len("backbone: { ")}}})
c = wait_for(lambda m: m.get("id") == 3) or {}
result = c.get("result") or []
items = result.get("items", []) if isinstance(result, dict) else result
labels = sorted(i["label"] for i in items)
print("completion in backbone:", ", ".join(labels))
server.kill()

ok = (
    any(line == pop and "colour" in msg for line, msg in diagnostics)
    and any(line == sched and "maglev" in msg for line, msg in diagnostics)
    and "weighted round robin" in hover
    and "transport" in labels
)
print("editor check:", "ok" if ok else "FAILED")
sys.exit(0 if ok else 1)
