#!/usr/bin/env python3
"""How well could any model of distance and area do on a dataset's short pairs?

    anyedge calibrate data/delay/wondernetwork-2020-07-pairs.csv --json /tmp/fit.json
    python3 data/delay/short_pair_floor.py /tmp/fit.json

For each pair of areas and each band of BAND_KM, takes the one round trip that minimises
the median relative error of that band's pairs under 1,000 km — chosen on the very pairs
it is then scored on, so no model of distance and area can beat it on them — and prints
the median and p90 of the absolute error and the median signed error over all those
pairs, beside what the fitted model gets on the same pairs.
"""
import json
import math
import sys

BAND_KM = 50
SHORT_KM = 1000


def quantile(values, q):
    v = sorted(values)
    return v[min(max(math.ceil(q * len(v)), 1), len(v)) - 1]


def best_constant(measured):
    """The round trip whose median relative error over `measured` is least (1 % steps)."""
    best, at = None, min(measured)
    while at <= max(measured):
        err = quantile([abs(at - m) / m for m in measured], 0.5)
        if best is None or err < best[0]:
            best = (err, at)
        at *= 1.01
    return best[1]


def summary(errors):
    absolute = [abs(e) for e in errors]
    return f"median {100 * quantile(absolute, 0.5):.1f} %, p90 {100 * quantile(absolute, 0.9):.1f} %, " \
           f"bias {100 * quantile(errors, 0.5):+.1f} %"


def main(path):
    pairs = [p for p in json.load(open(path))["pairs"] if p["km"] < SHORT_KM]
    bands = {}
    for p in pairs:
        bands.setdefault((p["areas"], int(p["km"] // BAND_KM)), []).append(p["measured_ms"])
    floor = []
    for measured in bands.values():
        at = best_constant(measured)
        floor += [(at - m) / m for m in measured]
    model = [p["error_pct"] / 100 for p in pairs]
    print(f"{len(pairs)} pairs under {SHORT_KM} km")
    print(f"  best constant per pair of areas and {BAND_KM} km band: {summary(floor)}")
    print(f"  the fitted model:                                {summary(model)}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
