#!/usr/bin/env python3
"""Turns WonderNetwork's "A day in the life of the internet" into one row per server pair.

    python3 data/delay/wondernetwork_pairs.py SERVERS.csv PINGS.csv \\
        > data/delay/wondernetwork-2020-07-pairs.csv

SERVERS.csv and PINGS.csv are `servers-2020-07-19.csv` and
`pings-2020-07-19-2020-07-20-grouped.csv` of the public repository
sm86/geo-latency-data (see data/delay/README.md). Each ping row is one ordered server
pair's round trip over the two days (the mirror grouped WonderProxy's hourly `ping -c 30`
summaries per pair); its `avg` column is taken.

- A pair measured both ways gets the mean of the two directions (rounded to 0.01 ms);
  a pair measured one way keeps that figure; a server pinging itself is left out.
- A server the pings name but the servers file does not (no coordinates) is left out.
- A server whose round trips beat light in fibre to more than MISPLACED_MIN others is not
  where its coordinates say (a proxy hosted in another city): all its pairs are left out.
- Any other pair faster than light in fibre over its great circle (neighbouring cities a
  millisecond apart, with city-centre coordinates) is left out.

What was left out, and why, goes to standard error. Rows are sorted by server names, so
`anyedge calibrate --holdout 3` holds out the same pairs every time.
"""
import csv
import math
import sys

# Same constants as ccn/src/geo.rs: mean Earth radius and light in fibre (n ≈ 1.468).
EARTH_KM = 6371.0088
FIBER_KM_PER_S = 204_190.0
MISPLACED_MIN = 5


def great_circle_km(a, b):
    la1, lo1, la2, lo2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 2 * EARTH_KM * math.asin(math.sqrt(min(1.0, h)))


def fibre_rtt_ms(km):
    return 2 * km / FIBER_KM_PER_S * 1e3


def main(servers_path, pings_path):
    servers = {}
    for r in csv.DictReader(open(servers_path, newline="", encoding="utf-8")):
        servers[int(r["id"])] = (r["name"], float(r["latitude"]), float(r["longitude"]))
    directions = {}
    for r in csv.DictReader(open(pings_path, newline="", encoding="utf-8")):
        a, b = int(r["source"]), int(r["destination"])
        if a != b:
            directions.setdefault((min(a, b), max(a, b)), []).append(float(r["avg"]))
    unknown = sorted({i for pair in directions for i in pair if i not in servers})
    located = {k: v for k, v in directions.items() if k[0] in servers and k[1] in servers}

    def too_fast(pair, rtts):
        (_, la, lo), (_, lb, lob) = servers[pair[0]], servers[pair[1]]
        return sum(rtts) / len(rtts) < fibre_rtt_ms(great_circle_km((la, lo), (lb, lob)))

    beaten = {}
    for pair, rtts in located.items():
        if too_fast(pair, rtts):
            for i in pair:
                beaten[i] = beaten.get(i, 0) + 1
    misplaced = sorted(i for i, n in beaten.items() if n > MISPLACED_MIN)
    rows, dropped_fast = [], 0
    for pair, rtts in located.items():
        if pair[0] in misplaced or pair[1] in misplaced:
            continue
        if too_fast(pair, rtts):
            dropped_fast += 1
            continue
        (na, la, lo), (nb, lb, lob) = servers[pair[0]], servers[pair[1]]
        if nb < na:
            (na, la, lo), (nb, lb, lob) = (nb, lb, lob), (na, la, lo)
        rows.append((na, nb, la, lo, lb, lob, round(sum(rtts) / len(rtts), 2)))
    rows.sort()
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(["a", "b", "a_lat", "a_lon", "b_lat", "b_lon", "rtt_ms"])
    out.writerows(rows)
    print(f"server ids without coordinates: {unknown}", file=sys.stderr)
    names = [f"{servers[i][0]} ({beaten[i]} pairs)" for i in misplaced]
    print(f"servers faster than light to more than {MISPLACED_MIN} others, left out: {names}", file=sys.stderr)
    print(f"other pairs faster than light, left out: {dropped_fast}", file=sys.stderr)
    print(f"pairs written: {len(rows)}", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
