#!/usr/bin/python3
"""Calibrate the radius of Freeze's near-duplicate tier (the `front: near: radius` of a stages config).

  tools/calibrate_front.py --model models/resnet18-w16-fmnist/model.yaml
        [--freqs 4] [--target 0.995] [--min-confidence 0.9] [--variants 3]
        [--max-shift 2] [--noise 8] [--gain 0.15] [--out-prefix PREFIX]

Held-out requests only: train[50k, 60k) (the caches' validation split; the test set is never read).
Each held-out image is answered by the full model (`freeze infer --answers`), and so are `variants`
perturbed copies of it (a random shift of up to max-shift pixels, Gaussian noise of up to `noise`
grey levels, a gain within 1 +- `gain`): the camera jitter the tier is meant to absorb. The
appliance shares an answer with a request whose input key (|DFT| magnitudes, cachecore/fz_front.h;
computed here the same way) lies within the radius of an answered one. Two ways a shared answer can
be wrong are measured, each as the share of requests that would get a wrong answer at radius r:
  perturbed  a perturbed copy against the nearest answered original (its own, or another image);
  distinct   an original against the nearest OTHER original (unrelated requests that look alike).
Answered originals are the ones the appliance would keep: answers of probability >= min-confidence.
The radius is the largest r at which the 95% Wilson upper bound of both error shares stays within
1 - target. Writes PREFIX.json (the radius and the rule), PREFIX.csv (the sweep) and PREFIX.png.
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(msg):
    print(f"calibrate-front: {msg}", file=sys.stderr, flush=True)


def front_keys(images, freqs):
    """The appliance's input key (fz_front_key_u8): |F(ky, kx)| for ky < freqs, |kx| < freqs
    (kx < 0 skipped at ky = 0), of the image scaled to [0, 1], L2-normalised."""
    x = images.astype(np.float64).reshape(len(images), 28, 28) / 255.0
    F = np.abs(np.fft.fft2(x))
    parts = [F[:, 0, :freqs]]
    for ky in range(1, freqs):
        parts.append(np.concatenate([F[:, ky, -(freqs - 1):], F[:, ky, :freqs]], axis=1))
    k = np.concatenate(parts, axis=1)
    n = np.linalg.norm(k, axis=1, keepdims=True)
    return (k / np.where(n > 0, n, 1)).astype(np.float32)


def shift(im, dx, dy):
    out = np.zeros_like(im)
    h, w = im.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = im[ys, xs]
    return out


def perturb(images, variants, max_shift, noise, gain, rng):
    out = np.empty((len(images) * variants, 28, 28), np.uint8)
    src = np.repeat(np.arange(len(images)), variants)
    for i, s in enumerate(src):
        dx, dy = rng.integers(-max_shift, max_shift + 1, size=2)
        im = shift(images[s].astype(np.float32), int(dx), int(dy))
        im = im * rng.uniform(1 - gain, 1 + gain) + rng.normal(0, rng.uniform(0, noise), im.shape)
        out[i] = np.clip(np.rint(im), 0, 255).astype(np.uint8)
    return out, src


def write_idx(path, arr):
    with open(path, "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape))
        f.write(arr.tobytes())


def answers(freeze, model, images, tmp, name):
    path = os.path.join(tmp, name + "-images-idx3-ubyte")
    write_idx(path, images)
    out = os.path.join(tmp, name + ".answers")
    log(f"full model on {len(images)} {name} images ...")
    subprocess.run([freeze, "infer", "--model", model, "--images", path, "--threads", "2",
                    "--answers", out], check=True, stdout=subprocess.DEVNULL)
    a = np.loadtxt(out, ndmin=2)
    return a[:, 0].astype(int), a[:, 1]


def nearest(q, e, exclude=None, chunk=2048):
    """Distance to and index of the nearest row of e for each row of q (exclude[i]: a row of e
    that query i may not use, or -1)."""
    e2 = (e * e).sum(1)
    d = np.empty(len(q), np.float32)
    j = np.empty(len(q), np.int64)
    for s in range(0, len(q), chunk):
        qq = q[s:s + chunk]
        D = (qq * qq).sum(1)[:, None] + e2[None, :] - 2 * qq @ e.T
        if exclude is not None:
            ex = exclude[s:s + chunk]
            rows = np.nonzero(ex >= 0)[0]
            D[rows, ex[rows]] = np.inf
        j[s:s + chunk] = D.argmin(1)
        d[s:s + chunk] = np.sqrt(np.maximum(D[np.arange(len(qq)), j[s:s + chunk]], 0))
        log(f"  nearest: {min(s + chunk, len(q))}/{len(q)}")
    return d, j


def wilson_upper(k, n, z=1.96):
    if n == 0:
        return 1.0
    p = k / n
    den = 1 + z * z / n
    c = p + z * z / (2 * n)
    return (c + z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / den


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--freeze", default=os.path.join(ROOT, "build", "pipeline", "freeze"))
    ap.add_argument("--freqs", type=int, default=4)
    ap.add_argument("--target", type=float, default=0.995)
    ap.add_argument("--min-confidence", type=float, default=0.9)
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
    prefix = a.out_prefix or os.path.join(os.path.dirname(os.path.abspath(a.model)),
                                          "front-calibration")
    img, _ = fmnist.load("train")
    held = img[a.first:a.first + a.count]
    rng = np.random.default_rng(a.seed)
    pert, src = perturb(held, a.variants, a.max_shift, a.noise, a.gain, rng)
    with tempfile.TemporaryDirectory() as tmp:
        lab_o, p_o = answers(a.freeze, a.model, held, tmp, "held-out")
        lab_p, _ = answers(a.freeze, a.model, pert, tmp, "perturbed")
    ko, kp = front_keys(held, a.freqs), front_keys(pert, a.freqs)
    kept = np.nonzero(p_o >= a.min_confidence)[0]  # what the appliance would keep
    log(f"{len(kept)}/{len(held)} held-out answers sure enough to keep; keys of {ko.shape[1]} floats")
    dp, jp = nearest(kp, ko[kept])
    ok_p = lab_o[kept][jp] == lab_p
    # distinct: each original against the nearest other kept original
    pos = np.full(len(held), -1)
    pos[kept] = np.arange(len(kept))
    dd, jd = nearest(ko, ko[kept], exclude=pos)
    ok_d = lab_o[kept][jd] == lab_o
    budget = 1 - a.target
    rows, radius, passing = [], 0.0, True
    for r in np.round(np.arange(0.0025, 0.1001, 0.0025), 4):
        hp, hd = dp <= r, dd <= r
        ep, ed = int((hp & ~ok_p).sum()), int((hd & ~ok_d).sum())
        up, ud = wilson_upper(ep, len(dp)), wilson_upper(ed, len(dd))
        good = up <= budget and ud <= budget
        rows.append({"radius": r, "perturbed_hit": hp.mean(), "perturbed_wrong": ep / len(dp),
                     "perturbed_wrong_upper": up, "distinct_hit": hd.mean(),
                     "distinct_wrong": ed / len(dd), "distinct_wrong_upper": ud, "within": good})
        passing = passing and good
        if passing:
            radius = float(r)
    with open(prefix + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for row in rows:
            w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    res = {"radius": radius, "freqs": a.freqs, "target": a.target, "key_dim": int(ko.shape[1]),
           "rule": "largest radius (steps of 0.0025, all smaller ones passing too) at which the 95% "
                   "Wilson upper bound of the share of wrong shared answers stays <= 1 - target, "
                   "for perturbed copies and for distinct held-out images",
           "held_out": [a.first, a.first + a.count], "variants": a.variants,
           "perturbation": {"max_shift": a.max_shift, "noise": a.noise, "gain": a.gain},
           "min_confidence": a.min_confidence}
    at = next((r for r in rows if r["radius"] == radius), None)
    if at:
        res.update({k: at[k] for k in ("perturbed_hit", "perturbed_wrong", "distinct_hit",
                                       "distinct_wrong")})
    with open(prefix + ".json", "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        R = [r["radius"] for r in rows]
        fig, ax = plt.subplots(1, 2, figsize=(11, 4))
        ax[0].plot(R, [r["perturbed_hit"] for r in rows], label="perturbed copies")
        ax[0].plot(R, [r["distinct_hit"] for r in rows], label="distinct images")
        ax[0].set_ylabel("share answered by the near tier")
        ax[1].plot(R, [r["perturbed_wrong_upper"] for r in rows], label="perturbed (95% upper)")
        ax[1].plot(R, [r["distinct_wrong_upper"] for r in rows], label="distinct (95% upper)")
        ax[1].axhline(budget, color="k", ls=":", label=f"budget {budget:.3%}")
        ax[1].set_ylabel("share answered wrongly")
        ax[1].set_yscale("log")
        for x in ax:
            x.axvline(radius, color="r", ls="--", lw=0.8)
            x.set_xlabel("radius (input key distance)")
            x.legend()
        fig.suptitle(f"near-duplicate radius {radius} (held-out train[{a.first}:{a.first + a.count}])")
        fig.tight_layout()
        fig.savefig(prefix + ".png", dpi=110)
    except ImportError:
        log("matplotlib missing: no plot")
    log(f"radius {radius}: perturbed copies answered {at['perturbed_hit']:.1%} "
        f"(wrong {at['perturbed_wrong']:.3%}), distinct images {at['distinct_hit']:.2%} "
        f"(wrong {at['distinct_wrong']:.3%})" if at else "no radius passes")
    print(f"front:\n  near: {{freqs: {a.freqs}, radius: {radius}}}   # {prefix}.json")
    return 0 if radius > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
