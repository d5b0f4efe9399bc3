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
computed here the same way) lies within the radius of an answered one, if that answer's probability
is at least min-confidence (a full-model answer) or exit-min-confidence (an early exit of a learned
cache; the answers are the appliance's own, `freeze eval --dump` with the snapshot). Two ways a shared answer can be wrong are measured at each radius r:
  perturbed  a perturbed copy against the nearest answered original (its own, or another image);
  distinct   an original against the nearest OTHER original (unrelated requests that look alike).
Near-duplicate traffic is mostly answered by the tier, so its measure is the share of wrong answers
among the perturbed copies answered; unrelated traffic mostly is not, so its measure is the share of
distinct images answered wrongly. Over min-confidence pairs and radii (steps of 0.0025), the pair
answering most perturbed copies is chosen such that the 95% Wilson upper bound of both shares stays
within 1 - target. Writes PREFIX.json (the radius and the rule), PREFIX.csv (the sweep) and PREFIX.png.
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
from workloads import shift, write_idx  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(msg):
    print(f"calibrate-front: {msg}", file=sys.stderr, flush=True)


def front_keys(images, freqs):
    """The appliance's input key (fz_front_key_u8): |F(ky, kx)| for ky < freqs, |kx| < freqs
    (kx < 0 skipped at ky = 0), of the image scaled to [0, 1], L2-normalised."""
    x = images.astype(np.float64).reshape(len(images), 28, 28) / 255.0
    F = np.abs(np.fft.fft2(x))
    parts = [F[:, 0, 1:freqs]]
    for ky in range(1, freqs):
        parts.append(np.concatenate([F[:, ky, -(freqs - 1):], F[:, ky, :freqs]], axis=1))
    k = np.concatenate(parts, axis=1)
    n = np.linalg.norm(k, axis=1, keepdims=True)
    return (k / np.where(n > 0, n, 1)).astype(np.float32)


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
    ap.add_argument("--freqs", type=int, default=4)
    ap.add_argument("--target", type=float, default=0.995)
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
    pert, src = perturb(held, a.variants, a.max_shift, a.noise, a.gain, rng)
    with tempfile.TemporaryDirectory() as tmp:
        lab_o, p_o = answers(a.freeze, a.model, held, tmp, "held-out")
        lab_p, _ = answers(a.freeze, a.model, pert, tmp, "perturbed")
        # what the appliance shares is its own answer: an early exit or the full model's
        ans_o, exit_o, conf_o = cascade_answers(a.freeze, a.model, a.cache, held, tmp)
    early = exit_o >= 0
    # a learned cache's log-odds as a probability (the appliance's rule, datapath/front.c)
    p_ans = np.where(early, 1 / (1 + np.exp(-np.clip(conf_o, -50, 50))), conf_o)
    ko, kp = front_keys(held, a.freqs), front_keys(pert, a.freqs)
    budget = 1 - a.target
    rows, best = [], None
    for mc, me in [(mc, me) for mc in a.min_confidence for me in a.exit_min_confidence]:
        # the answers the appliance would share
        kept = np.nonzero(np.where(early, p_ans >= me, p_ans >= mc))[0]
        log(f"min confidence {mc} (early exits {me}): {len(kept)}/{len(held)} held-out answers "
            f"shared ({int(early[kept].sum())} early exits); keys of {ko.shape[1]} floats")
        if len(kept) == 0:
            continue
        dp, jp = nearest(kp, ko[kept])
        ok_p = ans_o[kept][jp] == lab_p
        # distinct: each original against the nearest OTHER shared original
        pos = np.full(len(held), -1)
        pos[kept] = np.arange(len(kept))
        dd, jd = nearest(ko, ko[kept], exclude=pos)
        ok_d = ans_o[kept][jd] == lab_o
        for r in np.round(np.arange(0.0025, 0.1001, 0.0025), 4):
            hp, hd = dp <= r, dd <= r
            ep, ed = int((hp & ~ok_p).sum()), int((hd & ~ok_d).sum())
            # near-duplicate traffic is mostly hits: what matters is the share of wrong hits;
            # unrelated traffic mostly misses: the share of requests answered wrongly
            up, ud = wilson_upper(ep, int(hp.sum())), wilson_upper(ed, len(dd))
            passing = up <= budget and ud <= budget
            row = {"min_confidence": mc, "exit_min_confidence": me, "radius": float(r), "perturbed_hit": hp.mean(),
                   "perturbed_wrong_of_hits": ep / max(1, hp.sum()),
                   "perturbed_wrong_of_hits_upper": up, "distinct_hit": hd.mean(),
                   "distinct_wrong": ed / len(dd), "distinct_wrong_upper": ud,
                   "within": passing}
            rows.append(row)
            if passing and (best is None or row["perturbed_hit"] > best["perturbed_hit"]):
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
           "cache": os.path.relpath(a.cache, os.path.dirname(prefix)), "freqs": a.freqs, "target": a.target,
           "key_dim": int(ko.shape[1]),
           "rule": "the (min_confidence, radius) answering most perturbed copies such that the 95% "
                   "Wilson upper bounds of the share of wrong answers among perturbed copies "
                   "answered, and of the share of distinct held-out images answered wrongly, "
                   "stay <= 1 - target",
           "held_out": [a.first, a.first + a.count], "variants": a.variants,
           "perturbation": {"max_shift": a.max_shift, "noise": a.noise, "gain": a.gain}}
    at = best
    if at:
        res.update({k: at[k] for k in ("perturbed_hit", "perturbed_wrong_of_hits", "distinct_hit",
                                       "distinct_wrong")})
    with open(prefix + ".json", "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(1, 2, figsize=(11, 4))
        for mc in a.min_confidence:
            rr = [r for r in rows if r["min_confidence"] == mc and
                  r["exit_min_confidence"] == exit_conf]
            R = [r["radius"] for r in rr]
            ax[0].plot(R, [r["perturbed_hit"] for r in rr], label=f"perturbed, p >= {mc}")
            ax[0].plot(R, [r["distinct_hit"] for r in rr], ls=":", label=f"distinct, p >= {mc}")
            ax[1].plot(R, [max(r["perturbed_wrong_of_hits_upper"], 1e-5) for r in rr],
                       label=f"wrong of perturbed hits, p >= {mc}")
            ax[1].plot(R, [max(r["distinct_wrong_upper"], 1e-5) for r in rr], ls=":",
                       label=f"distinct answered wrongly, p >= {mc}")
        ax[0].set_ylabel("share answered by the near tier")
        ax[1].axhline(budget, color="k", ls="--", lw=0.8, label=f"budget {budget:.2%}")
        ax[1].set_ylabel("95% upper bound")
        ax[1].set_yscale("log")
        for x in ax:
            x.axvline(radius, color="r", ls="--", lw=0.8)
            x.set_xlabel("radius (input key distance)")
            x.legend(fontsize=7)
        fig.suptitle(f"near-duplicate radius {radius} (held-out train[{a.first}:{a.first + a.count}])")
        fig.tight_layout()
        fig.savefig(prefix + ".png", dpi=110)
    except ImportError:
        log("matplotlib missing: no plot")
    log(f"radius {radius}, min confidence {min_conf}, early exits {exit_conf}: perturbed copies answered "
        f"{at['perturbed_hit']:.1%} (wrong {at['perturbed_wrong_of_hits']:.3%} of those), distinct "
        f"images {at['distinct_hit']:.2%} (wrong {at['distinct_wrong']:.3%})" if at else
        "no radius passes")
    print(f"front:\n  near: {{freqs: {a.freqs}, radius: {radius}, min_confidence: {min_conf}, "
          f"exit_min_confidence: {exit_conf}}}   # {prefix}.json")
    return 0 if radius > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
