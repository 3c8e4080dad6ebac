#!/usr/bin/env python3
"""Cuts iGreedy 2.0's public anycast measurements down to what `anyedge calibrate --anycast`
reads: each service's sites, and each vantage point's round trip to the service.

    python3 data/anycast/extract.py GIT_DIR sites > data/anycast/sites.csv
    python3 data/anycast/extract.py GIT_DIR pings > data/anycast/pings.csv

GIT_DIR is a clone (or bare mirror) of the public repository hugopascual/iGreedy2.0 at
commit 4bbb22ae5 (see data/anycast/README.md); files are read with `git show HEAD:PATH`.

- A site is one row of a site list: a root letter's `Sites` (town, country, latitude,
  longitude) or a Cloudflare data centre (IATA code, country, latitude, longitude).
- A vantage point is one RIPE Atlas probe in one measurement; its round trip is the least
  of the pings it answered (Atlas sent 2). A probe that answered none is left out.
- Rows are sorted (service, measurement, probe), so the file is the same every time.
"""
import csv
import json
import subprocess
import sys

# (service, set, site list, measurement files under datasets/measurements/campaigns/).
# `fit`: the campaigns the default internet is fitted on (issue 73: root letters C, H, I
# and a CDN's worldwide campaigns); `check`: held out of the fit, to check it.
NC = "North-Central_validation_20230410/"
WW = "PoPETs_IP_anycast_validation/"
ROOTS = "datasets/ground-truth/root_servers/root_servers_{}.json"
CLOUDFLARE = "datasets/ground-truth/cloudfare/cloudfare_servers_world.json"
SERVICES = [
    ("root-c", "fit", ROOTS.format("C"), [NC + "192.33.4.12_North-Central_1000_52070052.json"]),
    ("root-h", "fit", ROOTS.format("H"), [NC + "198.97.190.53_North-Central_1000_52071953.json"]),
    ("root-i", "fit", ROOTS.format("I"), [NC + "192.36.148.17_North-Central_1000_52072283.json"]),
    (
        "cloudflare",
        "fit",
        CLOUDFLARE,
        [
            WW + "104.18.215.59_WW_1000_56061102.json",
            WW + "104.18.34.246_WW_1000_56079091.json",
            WW + "104.26.0.26_WW_1000_56053052.json",
            WW + "172.64.153.10_WW_1000_56078705.json",
            WW + "172.67.70.79_WW_1000_56053843.json",
            WW + "172.67.9.106_WW_1000_56083666.json",
        ],
    ),
    ("root-k", "check", ROOTS.format("K"), [NC + "193.0.14.129_North-Central_1000_52099227.json"]),
    ("root-l", "check", ROOTS.format("L"), [NC + "199.7.83.42_North-Central_1000_52100828.json"]),
    ("root-m", "check", ROOTS.format("M"), [NC + "202.12.27.33_North-Central_1000_52101293.json"]),
    ("cloudflare-europe", "check", CLOUDFLARE, [NC + "104.16.123.96_North-Central_1000_52452489.json"]),
]


def show(git_dir, path):
    return json.loads(subprocess.check_output(["git", "--git-dir", git_dir, "show", "HEAD:" + path]))


def sites(git_dir, out):
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["service", "site", "country", "lat", "lon"])
    for service, _, path, _ in SERVICES:
        listed = show(git_dir, path)
        rows = []
        if isinstance(listed, dict):
            for s in listed["Sites"]:
                rows.append((s["Town"], s["Country"], s["Latitude"], s["Longitude"]))
        else:
            for s in listed:
                rows.append((s["IATA_code"], s["country_code"], s["latitude"], s["longitude"]))
        for name, country, lat, lon in sorted(rows):
            w.writerow([service, name.replace(",", ""), country, f"{lat:.4f}", f"{lon:.4f}"])


def pings(git_dir, out):
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["service", "set", "measurement", "probe", "lat", "lon", "rtt_ms"])
    for service, fit, _, files in SERVICES:
        for f in files:
            m = show(git_dir, "datasets/measurements/campaigns/" + f)
            best = {}
            for r in m["measurement_results"]:
                rtt = r.get("rtt_ms")
                if rtt is None or rtt <= 0:
                    continue
                key = int(r["hostname"])
                here = (r["latitude"], r["longitude"])
                if key not in best or rtt < best[key][1]:
                    best[key] = (here, rtt)
            for probe in sorted(best):
                (lat, lon), rtt = best[probe]
                w.writerow([service, fit, m["measurement_id"], probe, f"{lat:.4f}", f"{lon:.4f}", f"{rtt:.3f}"])


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[2] not in ("sites", "pings"):
        sys.exit(__doc__)
    {"sites": sites, "pings": pings}[sys.argv[2]](sys.argv[1], sys.stdout)
