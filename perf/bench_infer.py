#!/usr/bin/python3
"""Benchmark: `freeze infer` (oneDNN, no caches) against PyTorch on the same weights and images.

Runs freeze at batch 1 and 64 with 1 and 2 threads, and PyTorch in eager, TorchScript-frozen and
channels_last modes at the same batch sizes with 1 and 2 threads, each --repeat times; reports
medians, ratios against PyTorch's best setting (mode and threads) in the same run, and the
fraction of the machine's fp32 peak (a large sgemm, measured) that each reaches. Writes
perf/results/infer-DATE.csv and prints a Markdown table.

OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE, which some machines set for old OpenBLAS builds, pin
OpenBLAS to an AVX2 kernel (a third of an AVX-512 CPU's sgemm rate): the benchmark drops them, so
the peer and the peak are measured at their best.

--isa AVX2 caps both systems at AVX2 (ONEDNN_MAX_CPU_ISA, which oneDNN in Freeze and in PyTorch
read) and measures the peak with OpenBLAS's AVX2 kernel (OPENBLAS_CORETYPE=Haswell): how an
AVX2-only CPU would do. Runs are interleaved (every setting once per round, --repeat rounds) and
the peak is measured in every round (the best counts), so a noisy minute hits all alike. The CSV
names the CPU and the ISA.
"""
import argparse
import csv
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))
import fmnist  # noqa: E402
import safetensors_io  # noqa: E402
from train import ResNet18, normalise  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hostinfo import cpu_model  # noqa: E402


def progress(msg):
    print(msg, file=sys.stderr, flush=True)


def run_freeze(freeze, model, images, labels, batch, threads, limit):
    cmd = [freeze, "infer", "--model", model, "--images", images, "--labels", labels,
           "--batch", str(batch), "--threads", str(threads), "--json"]
    if limit:
        cmd += ["--limit", str(limit)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def torch_model(model_dir, mode, threads, batch):
    torch.set_num_threads(threads)
    w = safetensors_io.load(os.path.join(model_dir, "weights.safetensors"))
    width = w["stem.weight"].shape[0]
    m = ResNet18(width)
    m.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in w.items()}, strict=False)
    m.eval()
    example = torch.zeros(batch, 1, 28, 28)
    if mode == "channels_last":
        m = m.to(memory_format=torch.channels_last)
    if mode in ("jit_freeze", "channels_last"):
        with torch.no_grad():
            m = torch.jit.freeze(torch.jit.trace(m, example))
    return m


def run_torch(model_dir, x, y, mode, batch, threads):
    m = torch_model(model_dir, mode, threads, batch)
    cl = mode == "channels_last"
    with torch.inference_mode():
        for _ in range(3):  # warm-up (TorchScript profiles the first runs)
            xb = x[:batch]
            m(xb.contiguous(memory_format=torch.channels_last) if cl else xb)
        correct = 0
        t0 = time.perf_counter()
        for i in range(0, x.shape[0], batch):
            xb = x[i:i + batch]
            if cl:
                xb = xb.contiguous(memory_format=torch.channels_last)
            correct += (m(xb).argmax(1) == y[i:i + batch]).sum().item()
        secs = time.perf_counter() - t0
    return {"images": x.shape[0], "images_per_s": x.shape[0] / secs, "accuracy": correct / x.shape[0]}


def sgemm_gflops(threads):
    """Best-case fp32 rate of this machine, measured: a large single-precision matrix multiply."""
    torch.set_num_threads(threads)
    a = torch.randn(2048, 2048)
    b = torch.randn(2048, 2048)
    torch.mm(a, b)
    best = 0
    for _ in range(5):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * 2048 ** 3 / (time.perf_counter() - t0) / 1e9)
    return best




def main():
    isa = None
    if "--isa" in sys.argv[:-1]:
        isa = sys.argv[sys.argv.index("--isa") + 1].upper()
    want = {"ONEDNN_MAX_CPU_ISA": isa, "OPENBLAS_CORETYPE": "Haswell"} if isa else {}
    have = {k: os.environ.get(k) for k in ("ONEDNN_MAX_CPU_ISA", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    if any(have[k] != want.get(k) for k in have):
        # OpenBLAS and oneDNN read these once, at load: set them before python3 starts again
        env = {k: v for k, v in os.environ.items() if k not in have}
        env.update(want)
        os.execve(sys.executable, [sys.executable] + sys.argv, env)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--freeze", default=os.path.join(ROOT, "build", "pipeline", "freeze"))
    ap.add_argument("--model-dir", default=os.path.join(ROOT, "models", "resnet18-w16-fmnist"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--limit", type=int, default=0, help="images per run (default: all 10k)")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--out", default=None)
    ap.add_argument("--isa", default=None, help="cap both systems at this ISA (e.g. AVX2)")
    args = ap.parse_args()

    images = os.path.join(fmnist.DATA_DIR, "t10k-images-idx3-ubyte.gz")
    labels = os.path.join(fmnist.DATA_DIR, "t10k-labels-idx1-ubyte.gz")
    img, lab = fmnist.load("t10k")
    if args.limit:
        img, lab = img[:args.limit], lab[:args.limit]
    x, y = normalise(img), torch.from_numpy(lab.astype(np.int64))
    model = os.path.join(args.model_dir, "model.yaml")
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    macs = None
    jobs = []
    for b in batches:
        for t in (1, 2):
            jobs.append(("freeze", "onednn", b, t))
        for mode in ("eager", "jit_freeze", "channels_last"):
            for t in (1, 2):
                jobs.append(("pytorch", mode, b, t))
    ips = {j: [] for j in jobs}
    acc = {}
    peak = 0.0
    for r in range(args.repeat):
        for i, (system, mode, b, t) in enumerate(jobs):
            progress(f"round {r + 1}/{args.repeat} [{i + 1}/{len(jobs)}] {system} {mode} "
                     f"batch {b} threads {t}")
            if system == "freeze":
                res = run_freeze(args.freeze, model, images, labels, b, t, args.limit)
                macs = res["macs_per_image"]
            else:
                res = run_torch(args.model_dir, x, y, mode, b, t)
            ips[(system, mode, b, t)].append(res["images_per_s"])
            acc[(system, mode, b, t)] = res["accuracy"]
        progress(f"round {r + 1}/{args.repeat}: measuring the sgemm peak")
        peak = max(peak, sgemm_gflops(1), sgemm_gflops(2))
    cpu = cpu_model()
    for (system, mode, b, t) in jobs:
        v = ips[(system, mode, b, t)]
        rows.append({"system": system, "mode": mode, "batch": b, "threads": t,
                     "images": len(lab), "images_per_s_median": statistics.median(v),
                     "images_per_s_runs": ";".join(f"{q:.1f}" for q in v),
                     "accuracy": acc[(system, mode, b, t)], "cpu": cpu,
                     "isa": isa or "native"})
    for r in rows:
        best_torch = max(q["images_per_s_median"] for q in rows
                         if q["system"] == "pytorch" and q["batch"] == r["batch"])
        r["ratio_vs_pytorch_best"] = r["images_per_s_median"] / best_torch
        r["gflops"] = r["images_per_s_median"] * 2 * macs / 1e9
        r["fraction_of_sgemm_peak"] = r["gflops"] / peak
        r["sgemm_peak_gflops"] = peak

    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M%S")
    out = args.out or os.path.join(HERE, "results", f"infer-{stamp}{'-' + isa.lower() if isa else ''}.csv")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    cols = ["system", "mode", "batch", "threads", "images", "images_per_s_median", "images_per_s_runs",
            "ratio_vs_pytorch_best", "accuracy", "gflops", "fraction_of_sgemm_peak", "sgemm_peak_gflops",
            "cpu", "isa"]
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow([f"{r[c]:.4f}" if isinstance(r[c], float) else r[c] for c in cols])
    print(f"results: {out}")
    print(f"CPU: {cpu}; ISA: {isa or 'native'}")
    print(f"model: {macs / 1e6:.1f} M MACs/image; fp32 peak (best 2048^3 sgemm, 1 or 2 threads, "
          f"measured): {peak:.1f} GFLOP/s\n")
    print("| system | mode | batch | threads | images/s (median) | vs PyTorch best | GFLOP/s | of sgemm peak |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['system']} | {r['mode']} | {r['batch']} | {r['threads']} | {r['images_per_s_median']:.0f} "
              f"| {r['ratio_vs_pytorch_best']:.2f}x | {r['gflops']:.1f} | {r['fraction_of_sgemm_peak'] * 100:.0f}% |")


if __name__ == "__main__":
    main()
