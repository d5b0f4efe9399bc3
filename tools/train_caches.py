#!/usr/bin/python3
"""Train Freeze's learned caches: per cache point, a small predictor of the full model's answer.

For every cache point (a model layer) the layer's output is average-pooled to a grid x grid
cells (adaptive bounds, [channel][row][column] order, as cachecore pools a tap) and a predictor
is trained on it: a linear layer, or one hidden ReLU layer, fitted with Adam on train[0, build)
and transformed copies of a share of it (--augment: inversion, contrast, brightness, blur, noise,
shifts, rotations, occlusion) against the *full model's* answers (not the ground truth: the cache
must say what the model would say, also where a change of the input changes the model's answer). On train[build, build + validation) a temperature is fitted (the confidence becomes a
calibrated probability) and nothing else: `freeze calibrate` sets the thresholds there, with the
cumulative disagreement budget. The test set is never read.

Also written per point, for the out-of-distribution guard: the mean and inverse standard
deviation of the pooled features on the build split and the radius within which a pooled vector
may answer (|(x - mean) * inv_std| at the --guard-quantile of build vectors); outside it the
cache abstains.

Output (safetensors, f32), per point L with P pooled floats, C classes, H hidden units:
  L.mean [P], L.inv_std [P], L.radius [1], L.temperature [1],
  L.w1 [H or C, P], L.b1 [H or C]        (on the raw pooled vector: standardisation folded in)
  L.w2 [C, H], L.b2 [C]                   (only with a hidden layer)
metadata: per point `L.grid`, and the splits used.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fmnist  # noqa: E402
import safetensors_io  # noqa: E402
import train  # noqa: E402
from workloads import TRANSFORMS, transform  # noqa: E402


def model_from_dir(model_dir):
    w = safetensors_io.load(os.path.join(model_dir, "weights.safetensors"))
    width = w["stem.weight"].shape[0]
    m = train.ResNet18(width)
    m.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in w.items()}, strict=False)
    m.eval()
    return m


def taps(m, x, points, grid, batch=1000):
    """Pooled taps {point: [N, P]}, the grid each point was pooled to, and the full model's
    answers [N], with progress."""
    feats = {p: [] for p in points}
    used = {}
    answers = []
    t0 = time.time()
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            h = F.relu(m.stem_bn(m.stem(x[i:i + batch])))
            outs = {"stem_relu": h}
            for name, *_ in m.plan:
                h = getattr(m, name)(h)
                outs[name] = h
            answers.append(m.fc(F.adaptive_avg_pool2d(h, 1).flatten(1)).argmax(1).numpy())
            for p in points:
                t = outs[p]
                g = used[p] = min(grid[p], t.shape[-1])
                feats[p].append(F.adaptive_avg_pool2d(t, g).flatten(1).numpy())
            done = min(i + batch, x.shape[0])
            print(f"\rtrain_caches: forward {done}/{x.shape[0]} images "
                  f"({done / (time.time() - t0):.0f}/s)", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return {p: np.concatenate(v) for p, v in feats.items()}, used, np.concatenate(answers)


def fit_temperature(logits, target):
    """The temperature T minimising the NLL of softmax(logits / T) on held-out answers."""
    best_t, best = 1.0, None
    for t in np.exp(np.linspace(np.log(0.25), np.log(8.0), 97)):
        nll = F.cross_entropy(logits / float(t), target).item()
        if best is None or nll < best:
            best_t, best = float(t), nll
    return best_t


def train_point(X, y, nb, nv, hidden, epochs, seed, classes):
    """Predictor for one point; returns (tensors, report)."""
    torch.manual_seed(seed)
    Xb = torch.from_numpy(X[:nb])
    mu = Xb.mean(0)
    sd = Xb.std(0) + 1e-6
    Z = (torch.from_numpy(X[:nb + nv]) - mu) / sd
    yt = torch.from_numpy(y[:nb + nv].astype(np.int64))
    P = X.shape[1]
    if hidden:
        net = nn.Sequential(nn.Linear(P, hidden), nn.ReLU(), nn.Linear(hidden, classes))
    else:
        net = nn.Sequential(nn.Linear(P, classes))
    opt = torch.optim.Adam(net.parameters(), 2e-3, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for _ in range(epochs):
        perm = torch.randperm(nb)
        for i in range(0, nb, 512):
            idx = perm[i:i + 512]
            loss = F.cross_entropy(net(Z[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    with torch.no_grad():
        zv = net(Z[nb:])
        temp = fit_temperature(zv, yt[nb:])
        val_agree = (zv.argmax(1) == yt[nb:]).float().mean().item()
        # fold the standardisation into the first layer: W (x - mu) / sd + b
        w1 = net[0].weight / sd
        b1 = net[0].bias - (net[0].weight * (mu / sd)).sum(1)
        r2 = ((Z[:nb] ** 2).sum(1)).numpy()
    t = {"mean": mu.numpy(), "inv_std": (1.0 / sd).numpy(),
         "w1": w1.numpy(), "b1": b1.numpy(),
         "temperature": np.array([temp], np.float32)}
    if hidden:
        t["w2"] = net[2].weight.detach().numpy()
        t["b2"] = net[2].bias.detach().numpy()
    rep = {"pooled": P, "hidden": hidden, "temperature": temp,
           "validation_agreement": val_agree, "guard_r2": r2}
    return t, rep


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", required=True, help="directory with weights.safetensors (tools/train.py's)")
    ap.add_argument("--points", default="stem_relu,block1,block2,block3,block4,block5,block6,block7,block8")
    ap.add_argument("--grid", type=int, default=4, help="pooling grid (smaller where the tap is smaller)")
    ap.add_argument("--hidden", type=int, default=64, help="hidden units (0: a linear predictor)")
    ap.add_argument("--point-hidden", default="", help="per point overrides, e.g. stem_relu=0,block8=32")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--build", type=int, default=50000)
    ap.add_argument("--validation", type=int, default=10000)
    ap.add_argument("--guard-quantile", type=float, default=0.999)
    ap.add_argument("--augment", type=float, default=0.1,
                    help="per transformation of tools/workloads.py (inversion, contrast, brightness, "
                         "blur, noise, shifts, rotations, occlusion), this share of the build images "
                         "is added transformed, labelled by the full model's answers on them: the "
                         "predictors learn where the model's answer changes, not only clean images "
                         "(0: none)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", required=True, help="safetensors file to write")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    points = [p for p in args.points.split(",") if p]
    hidden = {p: args.hidden for p in points}
    for kv in filter(None, args.point_hidden.split(",")):
        k, v = kv.split("=")
        if k not in hidden:
            ap.error(f"--point-hidden names '{k}', which is not in --points")
        hidden[k] = int(v)
    m = model_from_dir(args.model_dir)
    known = {"stem_relu"} | {name for name, *_ in m.plan}
    for p in points:
        if p not in known:
            ap.error(f"no cache point '{p}' in this model (known: {', '.join(sorted(known))})")
    img, _ = fmnist.load("train")  # the test set is never read
    nb, nv = args.build, args.validation
    if nb + nv > img.shape[0]:
        ap.error(f"build + validation = {nb + nv} > {img.shape[0]} train images")
    build, val = img[:nb], img[nb:nb + nv]
    if args.augment > 0:
        rng = np.random.default_rng(args.seed)
        extra = []
        for name in TRANSFORMS:
            pick = rng.choice(nb, int(round(args.augment * nb)), replace=False)
            extra.append(transform(name, build[pick], seed=args.seed))
        build = np.concatenate([build] + extra)
        print(f"train_caches: {len(build) - nb} transformed copies of build images added "
              f"({len(TRANSFORMS)} transformations x {args.augment:.0%})", file=sys.stderr)
    nb = len(build)
    feats, grids, ans = taps(m, train.normalise(np.concatenate([build, val])), points,
                             {p: args.grid for p in points})
    classes = m.fc.out_features
    tensors, report, meta = {}, {"build": nb, "validation": nv, "points": {}}, {}
    t0 = time.time()
    for i, p in enumerate(points):
        t, rep = train_point(feats[p], ans, nb, nv, hidden[p], args.epochs, args.seed + i, classes)
        r2 = rep.pop("guard_r2")
        t["radius"] = np.array([np.sqrt(np.quantile(r2, args.guard_quantile))], np.float32)
        rep["radius"] = float(t["radius"][0])
        for k, v in t.items():
            tensors[f"{p}.{k}"] = np.ascontiguousarray(v, dtype=np.float32)
        meta[f"{p}.grid"] = rep["grid"] = grids[p]
        report["points"][p] = rep
        print(f"train_caches: {i + 1}/{len(points)} {p}: pooled {rep['pooled']}, hidden {rep['hidden']}, "
              f"validation agreement with the full model {100 * rep['validation_agreement']:.2f}%, "
              f"T {rep['temperature']:.2f}, radius {rep['radius']:.1f} ({time.time() - t0:.0f} s)",
              file=sys.stderr, flush=True)
    meta.update({"trainer": "tools/train_caches.py", "build": nb, "validation": nv,
                 "augment": args.augment,
                 "guard_quantile": args.guard_quantile, "target": "full model answers"})
    safetensors_io.save(args.out, tensors, metadata=meta)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    print(f"train_caches: wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
