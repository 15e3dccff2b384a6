#!/usr/bin/env python3
"""Prints the median of every criterion benchmark under target/criterion
(run `cargo bench` first): time per iteration, and elements per second
where the benchmark declared a throughput."""
import json
import pathlib

root = pathlib.Path(__file__).resolve().parent.parent / "target" / "criterion"
for est in sorted(root.glob("**/new/estimates.json")):
    bench = est.parent.parent
    meta = json.loads((bench / "new" / "benchmark.json").read_text())
    median_ns = json.loads(est.read_text())["median"]["point_estimate"]
    elements = (meta.get("throughput") or {}).get("Elements")
    name = meta["full_id"]
    if elements:
        print(f"{name:48} {elements / median_ns * 1e9:>14,.0f} elements/s  ({median_ns / elements:,.0f} ns each)")
    else:
        print(f"{name:48} {median_ns:>14,.1f} ns")
