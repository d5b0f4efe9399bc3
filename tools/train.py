#!/usr/bin/python3
"""Freeze's offline trainer: ResNet-18 topology on Fashion-MNIST, exported for the C engine.

Writes into --out: model.yaml (the graph Freeze loads), weights.safetensors, reference.safetensors
(the first --ref-count test images' logits, for the engine's equality test) and train_report.json.
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


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.has_down = stride != 1 or cin != cout
        if self.has_down:
            self.down = nn.Conv2d(cin, cout, 1, stride, 0, bias=False)
            self.down_bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        s = self.down_bn(self.down(x)) if self.has_down else x
        return F.relu(y + s)


class ResNet18(nn.Module):
    """Stem 3x3 conv, 4 stages x 2 BasicBlocks (w, 2w, 4w, 8w; strides 1, 2, 2, 2), GAP, FC."""

    def __init__(self, width=16, classes=10):
        super().__init__()
        self.width = width
        self.stem = nn.Conv2d(1, width, 3, 1, 1, bias=False)
        self.stem_bn = nn.BatchNorm2d(width)
        self.plan = []  # (name, cin, cout, stride)
        cin = width
        for s, mult in enumerate((1, 2, 4, 8)):
            cout = width * mult
            for b in range(2):
                stride = (1 if s == 0 else 2) if b == 0 else 1
                name = f"block{2 * s + b + 1}"
                setattr(self, name, BasicBlock(cin, cout, stride))
                self.plan.append((name, cin, cout, stride))
                cin = cout
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem(x)))
        for name, *_ in self.plan:
            x = getattr(self, name)(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


def normalise(img_u8):
    x = torch.from_numpy(img_u8.astype(np.float32) / 255.0)
    return ((x - fmnist.MEAN) / fmnist.STD).unsqueeze(1)


def augment(x, gen):
    """Random crop (pad 2) and horizontal flip, on a normalised batch."""
    n = x.shape[0]
    pad = F.pad(x, (2, 2, 2, 2), value=(0.0 - fmnist.MEAN) / fmnist.STD)
    dx = torch.randint(0, 5, (n,), generator=gen)
    dy = torch.randint(0, 5, (n,), generator=gen)
    out = torch.empty_like(x)
    for i in range(n):
        out[i] = pad[i, :, dy[i]:dy[i] + 28, dx[i]:dx[i] + 28]
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(3)
    return out


def evaluate(model, x, y, batch=500):
    model.eval()
    correct = 0
    logits = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            out = model(x[i:i + batch])
            logits.append(out)
            correct += (out.argmax(1) == y[i:i + batch]).sum().item()
    return correct / x.shape[0], torch.cat(logits)


def export_yaml(model, path, name, weights_file):
    w = model.width
    lines = [
        f"# {name}: ResNet-18 topology (width {w}) trained on Fashion-MNIST by tools/train.py",
        f"name: {name}",
        f"weights: {weights_file}",
        "input:",
        "  name: input",
        "  dtype: f32",
        "  shape: [1, 28, 28]",
        f"  mean: [{fmnist.MEAN}]",
        f"  std: [{fmnist.STD}]",
        "  scale: 255  # raw u8 pixels are divided by this before normalisation",
        "layers:",
        f"  - {{name: stem, kind: conv, input: input, out_channels: {w}, kernel: 3, stride: 1, pad: 1, shape: [{w}, 28, 28]}}",
        "  - {name: stem_bn, kind: batchnorm, input: stem}",
        "  - {name: stem_relu, kind: relu, input: stem_bn}",
    ]
    prev, hw = "stem_relu", 28
    for bname, cin, cout, stride in model.plan:
        hw = (hw + 2 - 3) // stride + 1
        lines.append(f"  - {{name: {bname}, kind: block, input: {prev}, out_channels: {cout}, "
                     f"stride: {stride}, shape: [{cout}, {hw}, {hw}]}}")
        prev = bname
    c = model.plan[-1][2]
    lines += [
        f"  - {{name: pool, kind: global_avgpool, input: {prev}, shape: [{c}, 1, 1]}}",
        f"  - {{name: fc, kind: fc, input: pool, out_features: 10, shape: [10, 1, 1]}}",
        "output: fc",
        "",
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--ref-count", type=int, default=300)
    ap.add_argument("--train-count", type=int, default=50000,
                    help="train on train[0, N); train[N, 60k) stays unseen for calibration (default 50000)")
    ap.add_argument("--limit", type=int, default=0, help="train on the first N images only (smoke runs)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)

    tr_img, tr_lab = fmnist.load("train")
    te_img, te_lab = fmnist.load("t10k")
    count = min(args.limit or args.train_count, args.train_count)
    tr_img, tr_lab = tr_img[:count], tr_lab[:count]
    xtr, ytr = normalise(tr_img), torch.from_numpy(tr_lab.astype(np.int64))
    xte, yte = normalise(te_img), torch.from_numpy(te_lab.astype(np.int64))

    model = ResNet18(args.width)
    steps_per_epoch = (xtr.shape[0] + args.batch - 1) // args.batch
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, epochs=args.epochs,
                                                steps_per_epoch=steps_per_epoch, pct_start=0.25)
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(xtr.shape[0], generator=gen)
        loss_sum, seen = 0.0, 0
        for step in range(steps_per_epoch):
            idx = perm[step * args.batch:(step + 1) * args.batch]
            xb = augment(xtr[idx], gen)
            loss = F.cross_entropy(model(xb), ytr[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * idx.numel()
            seen += idx.numel()
            if step % 50 == 0 or step == steps_per_epoch - 1:
                el = time.time() - t0
                done = epoch * steps_per_epoch + step + 1
                eta = el / done * (args.epochs * steps_per_epoch - done)
                print(f"\repoch {epoch + 1}/{args.epochs} step {step + 1}/{steps_per_epoch} "
                      f"loss {loss_sum / seen:.4f} elapsed {el:.0f}s eta {eta:.0f}s", end="", flush=True)
        acc, _ = evaluate(model, xte, yte)
        print(f"\nepoch {epoch + 1}: train loss {loss_sum / seen:.4f} test accuracy {acc * 100:.2f}%", flush=True)

    acc, logits = evaluate(model, xte, yte)
    os.makedirs(args.out, exist_ok=True)
    name = os.path.basename(os.path.normpath(args.out))
    tensors = {k: v.detach().float().numpy() for k, v in model.state_dict().items()
               if not k.endswith("num_batches_tracked")}
    safetensors_io.save(os.path.join(args.out, "weights.safetensors"), tensors,
                        metadata={"format": "freeze", "trainer": "tools/train.py"})
    n = args.ref_count
    safetensors_io.save(os.path.join(args.out, "reference.safetensors"),
                        {"logits": logits[:n].numpy().astype(np.float32),
                         "predictions": logits.argmax(1).numpy().astype(np.int32)},
                        metadata={"images": "t10k-images-idx3-ubyte", "first": "0", "count": str(n)})
    export_yaml(model, os.path.join(args.out, "model.yaml"), name, "weights.safetensors")
    report = {"model": name, "width": args.width, "epochs": args.epochs, "batch": args.batch,
              "lr": args.lr, "seed": args.seed, "train_images": int(xtr.shape[0]),
              "train": [0, int(xtr.shape[0])],
              "test_images": int(xte.shape[0]), "test_accuracy": acc,
              "test_correct": int(round(acc * xte.shape[0])), "train_seconds": round(time.time() - t0, 1),
              "torch": torch.__version__}
    with open(os.path.join(args.out, "train_report.json"), "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    print(f"test accuracy {acc * 100:.2f}% ({report['test_correct']}/{xte.shape[0]}); wrote {args.out}")


if __name__ == "__main__":
    main()
