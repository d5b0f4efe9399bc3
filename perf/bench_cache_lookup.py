#!/usr/bin/env python3
"""Lookup cost against the layer group it follows, from `freeze eval --json`, per ISA and batch.

Runs `freeze eval` on the shipped model and snapshot REPEAT times for every (binary, ISA, batch),
round-robin so that the shared machine's noise spreads over all of them, and writes one CSV row
per (binary, isa, batch, cache) with the medians of the per-run lookup ns, layer-group ns and
their ratio (eval's lookup_over_layer), plus the ratio's range. The ISA is oneDNN's (and, with
ONEDNN_MAX_CPU_ISA, the caches' too): `default` is the machine's best, `AVX2` the cap.
--base FREEZE adds a second binary (e.g. one built from an older commit) measured in the same
run, the baseline the ratios are compared with.

  perf/bench_cache_lookup.py [--build build] [--base /tmp/old/pipeline/freeze] [--repeat 5]
      [--batches 64,1] [--limit 2000] [--out perf/results/lookup-DATE.csv]
"""
import argparse
import csv
import datetime
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_eval(freeze, isa, batch, limit, data):
    env = dict(os.environ)
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    if isa != "default":
        env["ONEDNN_MAX_CPU_ISA"] = isa
    model = os.path.join(ROOT, "models/resnet18-w16-fmnist")
    cmd = [freeze, "eval", "--model", f"{model}/model.yaml", "--cache", f"{model}/cache.snap",
           "--images", f"{data}/t10k-images-idx3-ubyte.gz",
           "--labels", f"{data}/t10k-labels-idx1-ubyte.gz",
           "--limit", str(limit), "--batch", str(batch), "--json"]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--base", help="a second freeze binary, measured in the same run")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--batches", default="64")
    ap.add_argument("--isas", default="default,AVX2")
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--data", default=os.environ.get("FZ_FMNIST_DIR",
                                                     "/usr/share/datasets/fashion-mnist"))
    ap.add_argument("--out", default=os.path.join(
        ROOT, "perf/results", f"lookup-{datetime.date.today().isoformat()}.csv"))
    a = ap.parse_args()

    bins = [("new", os.path.join(ROOT, a.build, "pipeline/freeze"))]
    if a.base:
        bins.append(("base", a.base))
    configs = [(name, path, isa, int(b)) for name, path in bins for isa in a.isas.split(",")
               for b in a.batches.split(",")]
    runs = {c[:1] + c[2:]: [] for c in configs}
    for r in range(a.repeat):
        for name, path, isa, b in configs:
            runs[(name, isa, b)].append(run_eval(path, isa, b, a.limit, a.data))
            print(f"run {r + 1}/{a.repeat}: {name} {isa} batch {b}", file=sys.stderr)

    rows = []
    for (name, isa, b), js in runs.items():
        caches = list(js[0]["lookup_ns"])
        groups = list(js[0]["layer_ns"])
        for i, cache in enumerate(caches):
            look = [j["lookup_ns"][cache] for j in js]
            layer = [j["layer_ns"][groups[i]] for j in js]
            ratio = [j["lookup_over_layer"][cache] for j in js]
            rows.append({"build": name, "isa": isa, "batch": b, "cache": cache,
                         "lookup_ns": round(statistics.median(look)),
                         "layer_ns": round(statistics.median(layer)),
                         "ratio": round(statistics.median(ratio), 4),
                         "ratio_min": round(min(ratio), 4), "ratio_max": round(max(ratio), 4),
                         "runs": len(js),
                         "agreement": js[0]["agreement"]})
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print("| build | isa | batch | cache | lookup ns | layer ns | ratio (median, range) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['build']} | {r['isa']} | {r['batch']} | {r['cache']} | {r['lookup_ns']} | "
              f"{r['layer_ns']} | {100 * r['ratio']:.1f} % ({100 * r['ratio_min']:.1f}-"
              f"{100 * r['ratio_max']:.1f}) |")
    print(f"wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
