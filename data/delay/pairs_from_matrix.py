#!/usr/bin/env python3
"""Turns the published source x destination matrix into one row per region pair.

    python3 data/delay/pairs_from_matrix.py > data/delay/azure-inter-region-rtt-2025-06.csv

A pair measured both ways gets the mean of the two directions (rounded to 0.5 ms); a
pair measured one way keeps that figure; a pair in the same city (Australia Central and
Central 2, East US and East US 2) is left out, since its distance is not known. Columns
are those `anyedge calibrate` reads.
"""
import csv
import os

HERE = os.path.dirname(os.path.abspath(__file__))
places = {r["region"]: r for r in csv.DictReader(open(os.path.join(HERE, "azure-regions.csv")))}
rows = list(csv.reader(open(os.path.join(HERE, "azure-inter-region-rtt-2025-06.matrix.csv"))))
dests = rows[0][1:]
seen = {}
for row in rows[1:]:
    src = row[0]
    for dst, cell in zip(dests, row[1:]):
        if cell.strip() and src != dst:
            seen.setdefault(tuple(sorted((src, dst))), []).append(float(cell))
out = csv.writer(os.sys.stdout, lineterminator="\n")
out.writerow(["a", "b", "a_lat", "a_lon", "b_lat", "b_lon", "rtt_ms"])
for (a, b), rtts in sorted(seen.items()):
    pa, pb = places[a], places[b]
    if (pa["lat"], pa["lon"]) == (pb["lat"], pb["lon"]):
        continue
    rtt = round(2 * sum(rtts) / len(rtts)) / 2
    out.writerow([a, b, pa["lat"], pa["lon"], pb["lat"], pb["lon"], rtt])
