#!/usr/bin/env python3
"""Deliveries/s against N for each way, from bench/results/results-<N>.json.

Writes bench/results/rate-vs-n.svg (a hand-written SVG: no plotting library
to install for one chart). Each size's point is the latest run of that size,
the median when it was run with --repeat.
"""

import json
import math
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
COLOURS = {"send": "#1f77b4", "sqlite": "#2ca02c", "postgres": "#9467bd", "web-push": "#d62728"}
W, H, LEFT, RIGHT, TOP, BOTTOM = 640, 400, 70, 120, 30, 50


def points():
    by_way = {}
    for f in sorted(RESULTS.glob("results-*.json")):
        stem = f.stem.removeprefix("results-")
        if not stem.isdigit():
            continue  # a file of several sizes or of the subscribe load
        data = json.loads(f.read_text())
        for run in data.get("runs", []):
            by_way.setdefault(run["way"], []).append((run["n"], run["per_second"]))
    return {way: sorted(ps) for way, ps in by_way.items()}


def main():
    data = points()
    ns = sorted({n for ps in data.values() for n, _ in ps})
    top = max(r for ps in data.values() for _, r in ps)
    y_max = math.ceil(top / 5000) * 5000
    lo, hi = math.log10(ns[0]), math.log10(ns[-1])

    def x(n):
        return LEFT + (math.log10(n) - lo) / max(hi - lo, 1e-9) * (W - LEFT - RIGHT)

    def y(r):
        return H - BOTTOM - r / y_max * (H - TOP - BOTTOM)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="14">Broadcast deliveries/s against N '
           '(2 cores, nginx sink on the same cores)</text>']
    for r in range(0, y_max + 1, 5000):
        out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(r):.1f}" y2="{y(r):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y(r) + 4:.1f}" text-anchor="end">{r:,}</text>')
    for n in ns:
        out.append(f'<text x="{x(n):.1f}" y="{H - BOTTOM + 18}" text-anchor="middle">{n:,}</text>')
    out.append(f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 12}" text-anchor="middle">N (subscriptions)</text>')
    for i, (way, ps) in enumerate(sorted(data.items(), key=lambda kv: -kv[1][-1][1])):
        colour = COLOURS.get(way, "#555")
        path = " ".join(f"{x(n):.1f},{y(r):.1f}" for n, r in ps)
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        for n, r in ps:
            out.append(f'<circle cx="{x(n):.1f}" cy="{y(r):.1f}" r="3" fill="{colour}"><title>{way} N={n:,}: '
                       f'{r:,}/s</title></circle>')
        out.append(f'<rect x="{W - RIGHT + 15}" y="{TOP + 20 * i}" width="12" height="12" fill="{colour}"/>')
        out.append(f'<text x="{W - RIGHT + 32}" y="{TOP + 20 * i + 11}">{way}</text>')
    out.append("</svg>")
    target = RESULTS / "rate-vs-n.svg"
    target.write_text("\n".join(out) + "\n")
    print(f"written to {target}")


if __name__ == "__main__":
    main()
