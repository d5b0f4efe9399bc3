#!/usr/bin/python3
"""Throughput of the embedded default on i.i.d. traffic, two builds side by side.

  perf/iid_default.py --base /path/to/other/build [--build build] [-n 10000] [--repeat 3]
                      [--out perf/results/DATE-iid-default]

Both builds run their own embedded default (their own model, snapshot and front tiers: a build
of another commit brings its own tree's models/) on the same saturated pcap replay of n shuffled
Fashion-MNIST test images over net_pcap, interleaved (base, build, build --no-caches) `repeat`
times; the appliance's summary gives answers/s from first frame to last answer, and
`tools/fzgen.py summarize` the accuracy. Every run holds /tmp/freeze-bench.lock (one benchmark at
a time on a shared machine). Writes iid_default.csv (every run), report.md (medians, ratios, the
CPU) and iid_default.png.
"""
import argparse
import csv
import datetime
import fcntl
import json
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hostinfo import cpu_model  # noqa: E402


def log(msg):
    print(f"iid-default: {msg}", file=sys.stderr, flush=True)


def run_once(freeze, req, resp, meta, extra, prefix):
    cmd = [freeze, "--lcores", "0@0,1@1,(2-5)@(0,1)", "--no-huge", "-m", "512", "--no-pci",
           "--file-prefix", prefix, "--vdev", f"net_pcap0,rx_pcap={req},tx_pcap={resp}",
           "--log-level=pmd.net.pcap:error", "--", "--exit-idle", "300", *extra]
    with open("/tmp/freeze-bench.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    out = r.stdout + r.stderr
    m = re.search(r"^throughput\s+([0-9.]+) answers/s", out, re.M)
    if r.returncode != 0 or not m:
        raise RuntimeError(f"{freeze} {' '.join(extra)} failed ({r.returncode}):\n{out[-2000:]}")
    s = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "fzgen.py"), "summarize", resp,
                        "--requests", meta, "--json"], capture_output=True, text=True, check=True)
    j = json.loads(s.stdout)
    return float(m.group(1)), j.get("accuracy"), j.get("answered")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", required=True, help="the other build folder (its pipeline/freeze)")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("-n", "--count", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--base-name", default="base")
    ap.add_argument("--name", default="this tree")
    ap.add_argument("--out", default=os.path.join(
        ROOT, "perf", "results", datetime.date.today().isoformat() + "-iid-default"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    work = os.path.join(a.out, "work")
    os.makedirs(work, exist_ok=True)
    req, meta = os.path.join(work, "iid.pcap"), os.path.join(work, "iid.json")
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "fzgen.py"), "gen", "-n",
                    str(a.count), "--order", "shuffle", "--seed", str(a.seed), "-o", req,
                    "--json", meta], check=True, capture_output=True)
    configs = [(a.base_name, os.path.join(a.base, "pipeline", "freeze"), []),
               (a.name, os.path.join(a.build, "pipeline", "freeze"), []),
               (a.name + " --no-caches", os.path.join(a.build, "pipeline", "freeze"),
                ["--no-caches"])]
    rows = []
    for rep in range(a.repeat):
        for k, (name, freeze, extra) in enumerate(configs):
            resp = os.path.join(work, f"resp-{rep}-{k}.pcap")
            tput, acc, answered = run_once(freeze, req, resp, meta, extra, f"fziid{os.getpid()}{k}")
            rows.append({"round": rep, "setting": name, "answers_per_s": tput,
                         "accuracy": acc, "answered": answered})
            log(f"round {rep + 1}/{a.repeat} {name}: {tput:.0f} answers/s, accuracy {acc}")
            os.unlink(resp)
    for f in os.listdir(work):
        os.unlink(os.path.join(work, f))
    os.rmdir(work)
    with open(os.path.join(a.out, "iid_default.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    med = {n: statistics.median(r["answers_per_s"] for r in rows if r["setting"] == n)
           for n, _, _ in configs}
    base = med[a.base_name]
    lines = [f"# Embedded default on i.i.d. traffic: {a.name} vs {a.base_name}", "",
             f"CPU: {cpu_model()}, {os.cpu_count()} cores; {a.count} shuffled test images, "
             f"saturated net_pcap replay, medians of {a.repeat} interleaved runs.", "",
             "| setting | answers/s (median) | runs | ratio to " + a.base_name + " |",
             "|---|---|---|---|"]
    for n, _, _ in configs:
        runs = ", ".join(f"{r['answers_per_s']:.0f}" for r in rows if r["setting"] == n)
        lines.append(f"| {n} | {med[n]:.0f} | {runs} | {med[n] / base:.3f} |")
    with open(os.path.join(a.out, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6.5, 3.6))
        names = [n for n, _, _ in configs]
        ax.bar(range(len(names)), [med[n] for n in names], color=["grey", "tab:blue", "tab:orange"])
        for i, n in enumerate(names):
            pts = [r["answers_per_s"] for r in rows if r["setting"] == n]
            ax.plot([i] * len(pts), pts, "k.", ms=4)
        ax.set_xticks(range(len(names)), names, fontsize=8)
        ax.set_ylabel("answers/s (median, dots: runs)")
        ax.set_title(f"embedded default, i.i.d. test images ({cpu_model()})", fontsize=9)
        fig.tight_layout()
        fig.savefig(os.path.join(a.out, "iid_default.png"), dpi=110)
    except ImportError:
        log("matplotlib missing: no plot")
    return 0


if __name__ == "__main__":
    sys.exit(main())
