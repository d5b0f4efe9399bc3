#!/usr/bin/python3
"""Freeze transformation suite: does any tier answer a transformed copy as it answered the original?

  perf/transform.py                      1000 test images per stream, every stream, ~5 minutes
  perf/transform.py -n 300 --streams iid,invert --tiers default

For N test images, one request pcap per stream: the N originals, then N other requests of the
stream (with --chunk K: K originals, their K copies, the next K originals, ...: the near table
keeps 512 answers, so each copy arrives while its original is still in the front tables):

  iid              N other test images (i.i.d., never sent before)
  invert ... occlude  transformed copies of the originals (tools/workloads.py TRANSFORMS)
  digits           N digits rendered in DejaVu fonts (another distribution than Fashion-MNIST)

Each pcap goes through the appliance (net_pcap, embedded default config) as tiers `default`
(everything on), `no-front` (--no-front: the caches without the front tiers) and `off`
(--no-caches: the full model, the reference). Answers are matched by request id; agreement is the
share of a stream's second half answered with the label the `off` run gave (no answer or an error
counts as a disagreement), and the same for the originals. Every run holds
/tmp/freeze-bench.lock (flock): the 2 cores are shared, never two benchmarks at once.

Writes perf/results/<date>-transform/ (or --out): transform.csv (per stream and tier setting:
agreement, which tier answered the copies and how many of those were wrong, throughput),
transform.png (agreement per stream, default and no-front, with the 99.5 % target) and report.md.
Exit status: 0, 1 when a stream of the first tier setting is below --target, 77 without a model.
"""
import argparse
import csv
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))
import fzgen  # noqa: E402
import workloads  # noqa: E402
from pcap_io import read_pcap  # noqa: E402

STREAMS = ("iid",) + tuple(workloads.TRANSFORMS) + ("digits",)
TIERS = {"default": [], "no-front": ["--no-front"], "off": ["--no-caches"]}
LCORES = "0@0,1@1,(2-5)@(0,1)"
LOCK = "/tmp/freeze-bench.lock"
APP_PORT = 7878
TARGET = 0.995
FRONT = {code: name for code, name in fzgen.EXIT_FRONT.items()}

T0 = time.monotonic()


def log(msg):
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


# ---- streams ----------------------------------------------------------------------------------

def make_streams(work, n, seed, names, chunk):
    """Write one request pcap per stream; returns [{name, pcap, ids, part}] where part[i] is
    "orig" for an original test image and "copy" for the stream's own request."""
    import numpy as np
    img, lab = workloads._test_set()
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(img))
    if 2 * n > len(img):
        raise ValueError(f"-n {n}: at most {len(img) // 2} (iid needs 2n distinct test images)")
    orig, orig_lab = img[perm[:n]], lab[perm[:n]]
    out = []
    for k, name in enumerate(names):
        if name == "iid":
            second, second_lab = img[perm[n:2 * n]], lab[perm[n:2 * n]]
        elif name == "digits":
            second, second_lab = workloads.digits(n, seed)
        else:
            second, second_lab = workloads.transform(name, orig, seed), orig_lab
        step = chunk if chunk > 0 else n
        ims, labs, part = [], [], []
        for c in range(0, n, step):
            ims += [orig[c:c + step], second[c:c + step]]
            labs += [orig_lab[c:c + step], second_lab[c:c + step]]
            part += ["orig"] * len(orig[c:c + step]) + ["copy"] * len(second[c:c + step])
        prefix = os.path.join(work, name)
        workloads.write_idx(prefix + "-images-idx3-ubyte", np.concatenate(ims))
        workloads.write_idx(prefix + "-labels-idx1-ubyte", np.concatenate(labs))
        pcap = prefix + ".pcap"
        with open(os.devnull, "w") as devnull:
            old, sys.stderr = sys.stderr, devnull
            try:
                rc = fzgen.main(["gen", "-o", pcap, "-n", str(2 * n), "--images",
                                 prefix + "-images-idx3-ubyte", "--labels",
                                 prefix + "-labels-idx1-ubyte"])
            finally:
                sys.stderr = old
        if rc:
            raise RuntimeError(f"fzgen gen failed for stream {name}")
        with open(pcap + ".json") as f:
            ids = [q["id"] for q in json.load(f)["requests"]]
        out.append({"name": name, "pcap": pcap, "ids": ids, "part": part})
    return out


# ---- the appliance ----------------------------------------------------------------------------

def run_appliance(freeze, pcap, tier, work, lock=True, timeout=600):
    """One run of the embedded default on pcap (tier: default, no-front or off), under the
    benchmark lock. Returns ({request id: response}, appliance summary dict)."""
    resp = os.path.join(work, f"resp-{os.getpid()}.pcap")
    if os.path.exists(resp):
        os.unlink(resp)
    run_appliance.seq += 1
    cmd = [freeze, "--lcores", LCORES, "--no-huge", "-m", "512", "--no-pci",
           "--file-prefix", f"fzxf{os.getpid()}_{run_appliance.seq}",
           "--vdev", f"net_pcap0,rx_pcap={pcap},tx_pcap={resp}",
           "--log-level=pmd.net.pcap:error", "--log-level=eal:error", "--",
           "--exit-idle", "1500"] + TIERS[tier]
    if lock and shutil.which("flock"):
        cmd = ["flock", LOCK] + cmd
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    out = p.stdout + p.stderr
    if p.returncode != 0:
        raise RuntimeError(f"freeze ({tier}) on {pcap} exited {p.returncode}:\n{out[-3000:]}")
    got = {}
    for _ts, fr in read_pcap(resp):
        u = fzgen.parse_udp(fr)
        r = fzgen.decode_resp(u[4]) if u and u[1] == APP_PORT else None
        if r is not None and r["id"] not in got:
            got[r["id"]] = r
    os.unlink(resp)
    m = re.search(r"^throughput\s+([\d.]+) answers/s", out, re.M)
    return got, {"throughput": float(m.group(1)) if m else None,
                 "accounting_ok": bool(re.search(r"^accounting\s+ok", out, re.M))}


run_appliance.seq = 0


def score(stream, got, ref):
    """Agreement of one run with the reference run, request by request (by id)."""
    r = {"n": 0, "agree": 0, "n_orig": 0, "agree_orig": 0, "missing": 0, "errors": 0,
         "error_names": {}, "ref_missing": 0, "wrong": 0,
         "early": 0, "early_wrong": 0, "front_wrong": 0}
    r.update({name: 0 for name in FRONT.values()})
    for rid, part in zip(stream["ids"], stream["part"]):
        want = ref.get(rid)
        if want is None or want["status"] != 0:
            r["ref_missing"] += 1
            continue
        a = got.get(rid)
        ok = a is not None and a["status"] == 0 and a["label"] == want["label"]
        if a is None:
            r["missing"] += 1
        elif a["status"] != 0:
            r["errors"] += 1
            r["error_names"][a["status_name"]] = r["error_names"].get(a["status_name"], 0) + 1
        if part == "orig":
            r["n_orig"] += 1
            r["agree_orig"] += ok
            continue
        r["n"] += 1
        r["agree"] += ok
        if a is None or a["status"] != 0:
            continue
        r["wrong"] += not ok
        if a["exit"] in FRONT:
            r[FRONT[a["exit"]]] += 1
            r["front_wrong"] += not ok
        elif a["exit"] != fzgen.EXIT_FULL:
            r["early"] += 1
            r["early_wrong"] += not ok
    r["agreement"] = r["agree"] / r["n"] if r["n"] else None
    r["agreement_orig"] = r["agree_orig"] / r["n_orig"] if r["n_orig"] else None
    return r


def run_suite(freeze, streams, tiers, work, repeat=1, lock=True, progress=log):
    """Every stream through `off` and each of tiers, `repeat` times (round-robin, so a change of
    load on the machine hits every setting alike). Returns rows: per stream and tier the run of
    median agreement, with the range over runs and the median throughput."""
    rows = []
    for s in streams:
        runs = {t: [] for t in tiers}
        off_tp = []
        for k in range(repeat):
            ref, info = run_appliance(freeze, s["pcap"], "off", work, lock)
            off_tp.append(info["throughput"])
            for t in tiers:
                got, info = run_appliance(freeze, s["pcap"], t, work, lock)
                sc = score(s, got, ref)
                sc["throughput"] = info["throughput"]
                sc["accounting_ok"] = info["accounting_ok"]
                runs[t].append(sc)
                front = sum(sc[x] for x in FRONT.values())
                progress(f"{s['name']:<16} {t:<9} run {k + 1}/{repeat}: copies agree "
                         f"{100 * sc['agreement']:6.2f} % ({sc['agree']}/{sc['n']}), originals "
                         f"{100 * sc['agreement_orig']:6.2f} %; front answered {front} "
                         f"({', '.join(f'{x} {sc[x]}' for x in FRONT.values() if sc[x])}"
                         f"{'' if front else 'none'}), {sc['front_wrong']} wrong"
                         + (f"; {sc['missing']} unanswered" if sc["missing"] else "")
                         + (f"; errors {sc['error_names']}" if sc["errors"] else ""))
        for t in tiers:
            rs = sorted(runs[t], key=lambda x: x["agreement"])
            med = dict(rs[(len(rs) - 1) // 2])
            tps = [x["throughput"] for x in rs if x["throughput"]]
            med.update(stream=s["name"], tiers=t, runs=len(rs),
                       agreement_min=rs[0]["agreement"], agreement_max=rs[-1]["agreement"],
                       throughput=statistics.median(tps) if tps else None,
                       off_throughput=statistics.median([x for x in off_tp if x]) if any(off_tp)
                       else None,
                       accounting_ok=all(x["accounting_ok"] for x in rs))
            rows.append(med)
    return rows


# ---- output -----------------------------------------------------------------------------------

CSV_COLS = ["stream", "tiers", "n", "agree", "agreement", "wrong", "agreement_min", "agreement_max",
            "n_orig", "agree_orig", "agreement_orig", "exact", "flow", "near", "coalesced",
            "front_wrong", "early", "early_wrong", "missing", "errors", "ref_missing", "runs",
            "throughput", "off_throughput", "accounting_ok"]


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.6g}" if isinstance(r.get(k), float) else r.get(k))
                        for k in CSV_COLS})


def plot(path, rows, tiers, title, target=TARGET):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    streams = list(dict.fromkeys(r["stream"] for r in rows))
    by = {(r["stream"], r["tiers"]): r for r in rows}
    colors = {"default": "tab:red", "no-front": "tab:blue"}
    width = 0.8 / len(tiers)
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(streams) + 2), 4.5))
    lo = 100.0
    for j, t in enumerate(tiers):
        xs = [i + (j - (len(tiers) - 1) / 2) * width for i in range(len(streams))]
        ys = [100 * by[(s, t)]["agreement"] for s in streams]
        lo = min(lo, *ys)
        label = {"default": "embedded default (front tiers on)",
                 "no-front": "--no-front (caches only)"}.get(t, t)
        ax.bar(xs, ys, width, label=label, color=colors.get(t))
        for x, y in zip(xs, ys):
            ax.text(x, y + 0.1, f"{y:.1f}", ha="center", va="bottom", fontsize=6.5, rotation=90)
    ax.axhline(100 * target, color="black", ls="--", lw=1, label=f"target {100 * target:g} %")
    ax.set_ylim(max(0, lo - 5), 101.5 if lo > 95 else 104)
    ax.set_xticks(range(len(streams)))
    ax.set_xticklabels([s.replace("_", "\n") for s in streams], fontsize=8)
    ax.set_ylabel("agreement with --no-caches (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def env_info():
    info = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "host": platform.node(), "cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()}
    try:
        git = ["git", "-C", ROOT]
        info["commit"] = subprocess.run(git + ["rev-parse", "--short", "HEAD"], check=True,
                                        capture_output=True, text=True).stdout.strip()
        info["dirty"] = bool(subprocess.run(git + ["status", "--porcelain", "--untracked-files=no"],
                                            capture_output=True, text=True).stdout.strip())
    except (subprocess.CalledProcessError, OSError):
        pass
    with open("/proc/cpuinfo") as f:
        m = re.search(r"model name\s*:\s*(.*)", f.read())
        info["cpu"] = m.group(1) if m else "?"
    return info


def build_name(path):
    """The binary as the results name it: relative to this tree, or its build folder's name (the
    results speak of the project, not of the machine's paths)."""
    rel = os.path.relpath(path, ROOT)
    return rel if not rel.startswith("..") else os.path.join(
        os.path.basename(os.path.dirname(os.path.dirname(path))), "pipeline", "freeze")


def pc(x):
    return "n/a" if x is None else f"{100 * x:.2f} %"


def report(path, rows, tiers, a, env, seconds):
    by = {(r["stream"], r["tiers"]): r for r in rows}
    streams = list(dict.fromkeys(r["stream"] for r in rows))
    lines = [f"# Transformation suite ({env['date'][:10]})", "",
             f"`perf/transform.py {shlex.join(a.argv)}`: {a.count} test images per stream "
             f"(seed {a.seed}, chunk {a.chunk}), {a.repeat} run(s) per setting (the run of median "
             f"agreement is shown), {a.note or 'commit ' + env.get('commit', '?')}"
             f"{' (dirty)' if env.get('dirty') and not a.note else ''}, {env['cpu']}, "
             f"{env['cpus']} CPUs, load {env['load_avg_at_start'][0]:.1f} at start, "
             f"{seconds:.0f} s.", "",
             "Agreement of each stream's second half (copies, other images or digits) with the "
             "full model (`--no-caches` on the same pcap), request by request; the originals' "
             "agreement next to it. An error response or no answer counts as a disagreement "
             "(errors: over the whole stream). Front answers and early exits: how many of the "
             "copies the front tiers and the cache points answered, and how many of those "
             "differently from the full model.", ""]
    head = "| stream | " + " | ".join(f"{t}: copies agree | {t}: front answers (wrong) | "
                                       f"{t}: early exits (wrong) | {t}: errors | "
                                       f"{t}: originals agree" for t in tiers) + " |"
    lines += [head, "|" + "---|" * (1 + 5 * len(tiers))]
    for s in streams:
        cells = []
        for t in tiers:
            r = by[(s, t)]
            mark = "" if r["agreement"] >= a.target else " **below**"
            fr = ", ".join(f"{x} {r[x]}" for x in FRONT.values() if r[x]) or "0"
            cells += [pc(r["agreement"]) + mark, f"{fr} ({r['front_wrong']})",
                      f"{r['early']} ({r['early_wrong']})", str(r["errors"] + r["missing"]),
                      pc(r["agreement_orig"])]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    tp = [(t, statistics.median([r["throughput"] for r in rows if r["tiers"] == t and
                                 r["throughput"]] or [0])) for t in tiers]
    off = statistics.median([r["off_throughput"] for r in rows if r["off_throughput"]] or [0])
    lines += ["", "Throughput (median over streams of the appliance's own figure, "
              f"{2 * a.count} requests per run: short runs, read as a rough figure): "
              + ", ".join(f"{t} {v:.0f}" for t, v in tp) + f", off {off:.0f} answers/s.", ""]
    bad = [r for r in rows if not r["accounting_ok"] or r["missing"] or r["errors"] or
           r["ref_missing"]]
    if bad:
        lines += ["Notes:"] + [f"- {r['stream']}/{r['tiers']}: accounting "
                               f"{'ok' if r['accounting_ok'] else 'NOT ok'}, {r['missing']} "
                               f"unanswered, errors {r['error_names'] or 0}, {r['ref_missing']} "
                               "without a reference answer (each counted as a disagreement)"
                               for r in bad] + [""]
    lines += ["![agreement per stream](transform.png)", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


# ---- main -------------------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--count", type=int, default=1000, help="test images per stream")
    ap.add_argument("--streams", default=",".join(STREAMS), help="comma list of " +
                    ",".join(STREAMS))
    ap.add_argument("--tiers", default="default,no-front",
                    help="tier settings compared with off (--no-caches): default,no-front")
    ap.add_argument("--chunk", type=int, default=256, help="originals and their copies in "
                    "blocks of this many (0: all originals, then all copies)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1, help="runs per setting (median agreement)")
    ap.add_argument("--target", type=float, default=TARGET, help="agreement target per stream")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"), help="meson build dir")
    ap.add_argument("--out", help="results folder (default perf/results/DATE-transform)")
    ap.add_argument("--work", help="scratch folder for pcaps (default: a temporary one)")
    ap.add_argument("--no-lock", action="store_true", help=f"do not take {LOCK}")
    ap.add_argument("--note", help="what the binary is, for the report and the plot (e.g. "
                    "'eeb51e1, before the key fix' for a --build of another tree)")
    a = ap.parse_args(argv)
    a.argv = argv if argv is not None else sys.argv[1:]
    a.streams = a.streams.split(",")
    a.tiers = a.tiers.split(",")
    for s in a.streams:
        if s not in STREAMS:
            ap.error(f"unknown stream {s!r}; streams: {', '.join(STREAMS)}")
    for t in a.tiers:
        if t not in TIERS or t == "off":
            ap.error(f"unknown tier setting {t!r}: default, no-front")
    if a.count < 1 or a.repeat < 1:
        ap.error("-n and --repeat must be >= 1")
    return a


def main(argv=None):
    a = parse_args(argv)
    src_freeze = os.path.join(os.path.abspath(a.build), "pipeline", "freeze")
    model = os.path.join(ROOT, "models", "resnet18-w16-fmnist")
    for f in ("model.yaml", "weights.safetensors", "cache.snap"):
        if not os.path.exists(os.path.join(model, f)):
            print(f"SKIP: no shipped model ({f})", file=sys.stderr)
            return 77
    if not os.path.exists(src_freeze):
        sys.exit(f"transform.py: no {src_freeze}; build it (ninja -C {a.build}) or give --build")
    env = env_info()
    out = os.path.abspath(a.out or os.path.join(
        HERE, "results", datetime.date.today().isoformat() + "-transform"))
    os.makedirs(out, exist_ok=True)
    work = a.work or tempfile.mkdtemp(prefix="fz-transform-")
    os.makedirs(work, exist_ok=True)
    try:
        # a private copy: a rebuild of the build folder during the run would mix two binaries
        freeze = os.path.join(work, "freeze")
        shutil.copy2(src_freeze, freeze)
        log(f"results -> {out}; {len(a.streams)} streams of {a.count} originals + {a.count}, "
            f"settings off,{','.join(a.tiers)}, {a.repeat} run(s) each")
        streams = make_streams(work, a.count, a.seed, a.streams, a.chunk)
        log("request pcaps written")
        rows = run_suite(freeze, streams, a.tiers, work, a.repeat, lock=not a.no_lock)
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
    seconds = time.monotonic() - T0
    write_csv(os.path.join(out, "transform.csv"), rows)
    plot(os.path.join(out, "transform.png"), rows, a.tiers,
         f"Transformation suite: {a.count} test images, then their copies; agreement with "
         f"--no-caches ({env['date'][:10]}, {a.note or env.get('commit', '?')})", a.target)
    with open(os.path.join(out, "env.json"), "w") as f:
        json.dump(dict(env, argv=a.argv, seconds=round(seconds, 1), freeze=build_name(src_freeze),
                       note=a.note), f, indent=1)
    report(os.path.join(out, "report.md"), rows, a.tiers, a, env, seconds)
    first = a.tiers[0]
    below = [r for r in rows if r["tiers"] == first and r["agreement"] < a.target]
    for r in rows:
        print(f"{r['stream']:<16} {r['tiers']:<9} copies {pc(r['agreement']):>9}  originals "
              f"{pc(r['agreement_orig']):>9}  front " +
              "/".join(str(r[x]) for x in FRONT.values()) + f" ({r['front_wrong']} wrong)")
    log(f"done in {seconds:.0f} s: {out}/transform.csv, transform.png, report.md; "
        f"{len(below)} stream(s) below {100 * a.target:g} % with {first}" +
        (": " + ", ".join(r["stream"] for r in below) if below else ""))
    return 1 if below else 0


if __name__ == "__main__":
    sys.exit(main())
