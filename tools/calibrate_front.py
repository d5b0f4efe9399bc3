#!/usr/bin/python3
"""Calibrate the radius of Freeze's near-duplicate tier (the `front: near: radius` of a stages config).

  tools/calibrate_front.py --model models/resnet18-w16-fmnist/model.yaml
        [--grid 0] [--target 0.999] [--min-confidence 0.9,0.93,0.95] [--variants 3]
        [--max-shift 2] [--noise 8] [--gain 0.15] [--out-prefix PREFIX]

Held-out requests only: train[50k, 60k) (the caches' validation split, which neither the model nor
the caches were trained on; the test set is never read). The appliance shares an answered input's
answer with a request whose u8 image lies within the radius of it (root-mean-square pixel
difference on the 0..1 scale; found through the appliance's own keys, `freeze front-keys`, the
FZ_NEAR_CANDIDATES key-nearest confirmed on their pixels, as cachecore/front.c does), if that
answer is sure enough: a full-model probability >= min-confidence, or an early exit of a learned
cache whose log-odds give a probability >= exit-min-confidence (the appliance's own answers,
`freeze eval --dump` with the snapshot). Every held-out image is answered by the full model
(`freeze infer --answers`), and so are these streams of copies of them, each a query stream:
  jitter       `variants` copies: a shift of up to max-shift pixels, Gaussian noise of up to
               `noise` grey levels, a gain within 1 +- `gain` (the near-duplicates the tier is for)
  TRANSFORM    every transformation of tools/workloads.py (inversion, contrast and brightness
               changes, blur, noise, shifts, rotations, occlusion): copies the model may answer
               differently, so they count as negatives wherever it does
  distinct     each original against the OTHER originals (unrelated requests that look alike)
A query is answered wrongly when the tier would answer it with a label the full model does not
give it. Over (min-confidence, exit-min-confidence, radius), the setting answering most jitter
copies is chosen such that, for every stream, the 95 % Wilson upper bound of the share of its
queries answered wrongly stays within 1 - target (the share of jitter hits answered wrongly is
reported too: with few hits its bound says little). Radius 0 (the near tier off) when none does. Writes PREFIX.json
(the setting, the rule and per-stream numbers), PREFIX.csv (the sweep) and PREFIX.png.
"""
import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fmnist  # noqa: E402
from workloads import TRANSFORMS, shift, transform, write_idx  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(msg):
    print(f"calibrate-front: {msg}", file=sys.stderr, flush=True)


CANDIDATES = 4  # FZ_NEAR_CANDIDATES (cachecore/fz_front.h): key-nearest confirmed on pixels


def front_keys(freeze, model, images, tmp, name, grid):
    """The appliance's keys (fz_front_key_u8 through `freeze front-keys`)."""
    path = os.path.join(tmp, name + "-keys-idx3-ubyte")
    write_idx(path, images)
    out = os.path.join(tmp, name + ".keys")
    r = subprocess.run([freeze, "front-keys", "--model", model, "--images", path, "--grid",
                        str(grid), "--out", out], check=True, capture_output=True, text=True)
    n, dim, g = (int(x) for x in r.stdout.split())
    return np.fromfile(out, np.float32).reshape(n, dim), g


def perturb(images, variants, max_shift, noise, gain, rng):
    out = np.empty((len(images) * variants, 28, 28), np.uint8)
    src = np.repeat(np.arange(len(images)), variants)
    for i, s in enumerate(src):
        dx, dy = rng.integers(-max_shift, max_shift + 1, size=2)
        im = shift(images[s].astype(np.float32), int(dx), int(dy))
        im = im * rng.uniform(1 - gain, 1 + gain) + rng.normal(0, rng.uniform(0, noise), im.shape)
        out[i] = np.clip(np.rint(im), 0, 255).astype(np.uint8)
    return out, src


def answers(freeze, model, images, tmp, name):
    path = os.path.join(tmp, name + "-images-idx3-ubyte")
    write_idx(path, images)
    out = os.path.join(tmp, name + ".answers")
    log(f"full model on {len(images)} {name} images ...")
    subprocess.run([freeze, "infer", "--model", model, "--images", path, "--threads", "2",
                    "--answers", out], check=True, stdout=subprocess.DEVNULL)
    a = np.loadtxt(out, ndmin=2)
    return a[:, 0].astype(int), a[:, 1]


def cascade_answers(freeze, model, cache, images, tmp):
    """The appliance's answers (`freeze eval --dump` with the snapshot): label, exit layer (-1 =
    the full model) and confidence (a learned cache's log-odds, or the softmax probability)."""
    path = os.path.join(tmp, "cascade-images-idx3-ubyte")
    write_idx(path, images)
    lab = os.path.join(tmp, "cascade-labels-idx1-ubyte")
    with open(lab, "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + len(images).to_bytes(4, "big") + bytes(len(images)))
    dump = os.path.join(tmp, "cascade.csv")
    log(f"the cascade ({os.path.basename(cache)}) on {len(images)} held-out images ...")
    subprocess.run([freeze, "eval", "--model", model, "--cache", cache, "--images", path,
                    "--labels", lab, "--dump", dump], check=True, stdout=subprocess.DEVNULL)
    with open(dump) as f:
        rows = list(csv.DictReader(f))
    return (np.array([int(r["label"]) for r in rows]), np.array([int(r["exit_layer"]) for r in rows]),
            np.array([float(r["confidence"]) for r in rows]))


def candidates(q, e, exclude=None, k=CANDIDATES, chunk=2048):
    """Indices of the k key-nearest rows of e for each row of q, nearest first (exclude[i]: a
    row of e query i may not use, or -1)."""
    e2 = (e.astype(np.float64) ** 2).sum(1)
    out = np.empty((len(q), k), np.int64)
    for s in range(0, len(q), chunk):
        qq = q[s:s + chunk].astype(np.float64)
        D = (qq * qq).sum(1)[:, None] + e2[None, :] - 2 * qq @ e.T.astype(np.float64)
        if exclude is not None:
            ex = exclude[s:s + chunk]
            rows = np.nonzero(ex >= 0)[0]
            D[rows, ex[rows]] = np.inf
        part = np.argpartition(D, k, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(D, part, 1), axis=1)
        out[s:s + chunk] = np.take_along_axis(part, order, 1)
    return out


def rms(a, b):
    """Root-mean-square difference of u8 images on the 0..1 scale (the appliance's, exact)."""
    d = a.reshape(len(a), -1).astype(np.int64) - b.reshape(len(b), -1).astype(np.int64)
    return np.sqrt((d * d).sum(1) / (255.0 * 255.0 * d.shape[1]))


def hits_at(cand_rms, r):
    """Per query: the candidate (0..k-1) the appliance answers with at radius r, or -1 (the
    first in key order within r: keys bound the distance, so every one within r is a
    candidate by key)."""
    ok = cand_rms <= r
    first = ok.argmax(1)
    return np.where(ok.any(1), first, -1)


def wilson_upper(k, n, z=1.96):
    if n == 0:
        return 0.0  # nothing answered, nothing wrong
    p = k / n
    den = 1 + z * z / n
    c = p + z * z / (2 * n)
    return (c + z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / den


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--freeze", default=os.path.join(ROOT, "build", "pipeline", "freeze"))
    ap.add_argument("--cache", help="the snapshot whose early exits are shared (default: "
                    "MODEL_DIR/cache.snap)")
    ap.add_argument("--exit-min-confidence", default="0.99,0.995,0.999,1",
                    help="comma list: smallest probability of a shared early exit (a learned "
                         "cache's log-odds as a probability; 1 = early exits never shared)")
    ap.add_argument("--grid", type=int, default=0, help="cells per axis of the key (0: automatic)")
    ap.add_argument("--target", type=float, default=0.999,
                    help="per stream, the share of queries the tier may not answer wrongly "
                         "(95%% upper bound); the caches' own budget comes on top")
    ap.add_argument("--min-confidence", default="0.9,0.93,0.95",
                    help="comma list: smallest full-model probability of a shared answer")
    ap.add_argument("--variants", type=int, default=3)
    ap.add_argument("--max-shift", type=int, default=2)
    ap.add_argument("--noise", type=float, default=8.0)
    ap.add_argument("--gain", type=float, default=0.15)
    ap.add_argument("--first", type=int, default=50000, help="held-out split start")
    ap.add_argument("--count", type=int, default=10000, help="held-out images")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out-prefix", default=None,
                    help="default: MODEL_DIR/front-calibration")
    a = ap.parse_args(argv)
    a.min_confidence = [float(x) for x in a.min_confidence.split(",")]
    a.exit_min_confidence = [float(x) for x in a.exit_min_confidence.split(",")]
    a.cache = a.cache or os.path.join(os.path.dirname(os.path.abspath(a.model)), "cache.snap")
    prefix = a.out_prefix or os.path.join(os.path.dirname(os.path.abspath(a.model)),
                                          "front-calibration")
    img, _ = fmnist.load("train")
    held = img[a.first:a.first + a.count]
    rng = np.random.default_rng(a.seed)
    streams = {}
    pert, src = perturb(held, a.variants, a.max_shift, a.noise, a.gain, rng)
    streams["jitter"] = (pert, src)
    for name in TRANSFORMS:
        streams[name] = (transform(name, held, seed=a.seed), np.arange(len(held)))
    with tempfile.TemporaryDirectory() as tmp:
        lab_o, p_o = answers(a.freeze, a.model, held, tmp, "held-out")
        ko, grid = front_keys(a.freeze, a.model, held, tmp, "held-out", a.grid)
        q = {}
        for name, (ims, s_) in streams.items():
            lab, _ = answers(a.freeze, a.model, ims, tmp, name)
            kq, _ = front_keys(a.freeze, a.model, ims, tmp, name, a.grid)
            q[name] = (ims, lab, kq)
        # what the appliance shares is its own answer: an early exit or the full model's
        ans_o, exit_o, conf_o = cascade_answers(a.freeze, a.model, a.cache, held, tmp)
    q["distinct"] = (held, lab_o, ko)
    early = exit_o >= 0
    # a learned cache's log-odds as a probability (the appliance's rule, datapath/front.c)
    p_ans = np.where(early, 1 / (1 + np.exp(-np.clip(conf_o, -50, 50))), conf_o)
    budget = 1 - a.target
    radii = np.round(np.arange(0.0025, 0.1001, 0.0025), 4)
    rows, best = [], None
    for mc, me in [(mc, me) for mc in a.min_confidence for me in a.exit_min_confidence]:
        kept = np.nonzero(np.where(early, p_ans >= me, p_ans >= mc))[0]
        log(f"min confidence {mc} (early exits {me}): {len(kept)}/{len(held)} held-out answers "
            f"shared ({int(early[kept].sum())} early exits); keys of {ko.shape[1]} floats")
        if len(kept) < CANDIDATES + 1:
            continue
        pos = np.full(len(held), -1)
        pos[kept] = np.arange(len(kept))
        per = {}
        for name, (ims, lab, kq) in q.items():
            c = candidates(kq, ko[kept], exclude=pos if name == "distinct" else None)
            cr = np.stack([rms(ims, held[kept][c[:, j]]) for j in range(CANDIDATES)], 1)
            per[name] = (c, cr, lab)
        log(f"  candidates confirmed on pixels for {len(q)} streams")
        for r in radii:
            row = {"min_confidence": mc, "exit_min_confidence": me, "radius": float(r)}
            passing = True
            for name, (c, cr, lab) in per.items():
                h = hits_at(cr, r)
                hit = h >= 0
                got = np.where(hit, ans_o[kept][c[np.arange(len(c)), np.maximum(h, 0)]], -1)
                wrong = int((hit & (got != lab)).sum())
                n, nh = len(lab), int(hit.sum())
                up = wilson_upper(wrong, n)
                row[f"{name}_hit"] = nh / n
                row[f"{name}_wrong"] = wrong / n
                row[f"{name}_wrong_upper"] = up
                passing &= up <= budget
                if name == "jitter":  # reported: with few hits its bound says little
                    row["jitter_wrong_of_hits_upper"] = wilson_upper(wrong, nh)
            row["within"] = bool(passing)
            rows.append(row)
            if passing and (best is None or row["jitter_hit"] > best["jitter_hit"]):
                best = row
    radius = best["radius"] if best else 0.0
    min_conf = best["min_confidence"] if best else max(a.min_confidence)
    exit_conf = best["exit_min_confidence"] if best else 1.0
    with open(prefix + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for row in rows:
            w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    res = {"radius": radius, "min_confidence": min_conf, "exit_min_confidence": exit_conf,
           "cache": os.path.relpath(a.cache, os.path.dirname(prefix)), "grid": grid,
           "target": a.target, "key_dim": int(ko.shape[1]), "candidates": CANDIDATES,
           "rule": "the (min_confidence, exit_min_confidence, radius) answering most jitter copies "
                   "such that for every stream (jitter, each transformation, distinct originals) "
                   "the 95% Wilson upper bound of the share of its queries answered wrongly is <= "
                   "1 - target; distance = rms pixel difference on the 0..1 scale",
           "held_out": [a.first, a.first + a.count], "variants": a.variants,
           "jitter": {"max_shift": a.max_shift, "noise": a.noise, "gain": a.gain},
           "streams": list(q)}
    at = best
    if at:
        res["at_radius"] = {k: v for k, v in at.items() if k not in ("within",)}
    with open(prefix + ".json", "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(1, 2, figsize=(12, 4.5))
        rr = [r for r in rows if r["min_confidence"] == min_conf and
              r["exit_min_confidence"] == exit_conf]
        R = [r["radius"] for r in rr]
        for name in q:
            ls = "-" if name in ("jitter", "distinct") else ":"
            ax[0].plot(R, [r[f"{name}_hit"] for r in rr], ls=ls, label=name)
            ax[1].plot(R, [max(r[f"{name}_wrong_upper"], 1e-5) for r in rr], ls=ls, label=name)
        ax[0].set_ylabel("share answered by the near tier")
        ax[1].axhline(budget, color="k", ls="--", lw=0.8, label=f"budget {budget:.2%}")
        ax[1].set_ylabel("answered wrongly: 95% upper bound")
        ax[1].set_yscale("log")
        for x in ax:
            x.axvline(radius, color="r", ls="--", lw=0.8)
            x.set_xlabel("radius (rms pixel difference, 0..1 scale)")
            x.legend(fontsize=6, ncol=2)
        fig.suptitle(f"near-duplicate radius {radius} at p >= {min_conf}, early exits >= "
                     f"{exit_conf} (held-out train[{a.first}:{a.first + a.count}])")
        fig.tight_layout()
        fig.savefig(prefix + ".png", dpi=110)
    except ImportError:
        log("matplotlib missing: no plot")
    if at:
        log(f"radius {radius}, min confidence {min_conf}, early exits {exit_conf}: jitter copies "
            f"answered {at['jitter_hit']:.1%}; per stream answered / wrong: " +
            ", ".join(f"{n} {at[n + '_hit']:.1%}/{at[n + '_wrong']:.3%}" for n in q))
    else:
        log("no radius passes: ship the near tier off (radius 0)")
    print(f"front:\n  near: {{grid: {grid}, radius: {radius}, min_confidence: {min_conf}, "
          f"exit_min_confidence: {exit_conf}}}   # {prefix}.json")
    return 0 if radius > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
