#!/usr/bin/env python3
"""Makes data/geo/cities.tsv and data/geo/land.txt from their public sources (README.md).

    python3 data/geo/extract.py cities cities15000.txt > data/geo/cities.tsv
    python3 data/geo/extract.py land ne_110m_land.json > data/geo/land.txt
"""
import json
import sys


def cities(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            c = line.rstrip("\n").split("\t")
            population = int(c[14] or 0)
            if population >= 50000:
                # asciiname, country code, latitude, longitude, population
                rows.append((c[2], c[8], float(c[4]), float(c[5]), population))
    # Largest first; equal populations by name then country, so the order is total.
    rows.sort(key=lambda r: (-r[4], r[0], r[1]))
    print("# name\tcountry\tlatitude\tlongitude\tpopulation")
    for name, cc, lat, lon, pop in rows:
        print(f"{name}\t{cc}\t{lat:.3f}\t{lon:.3f}\t{pop}")


def land(path):
    d = json.load(open(path, encoding="utf-8"))
    print("# one ring of land per line: longitude,latitude pairs (degrees, 0.1 degree)")
    for feature in d["features"]:
        g = feature["geometry"]
        polygons = [g["coordinates"]] if g["type"] == "Polygon" else g["coordinates"]
        for polygon in polygons:
            for ring in polygon:
                points = []
                for lon, lat in ring:
                    p = f"{lon:.1f},{lat:.1f}"
                    if not points or points[-1] != p:
                        points.append(p)
                if len(points) >= 3:
                    print(" ".join(points))


if __name__ == "__main__":
    {"cities": cities, "land": land}[sys.argv[1]](sys.argv[2])
