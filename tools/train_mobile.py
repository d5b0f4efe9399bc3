#!/usr/bin/python3
"""A second model for Freeze, of another shape, brought in through ONNX: a MobileNet-style net
(depthwise-separable residual blocks, max pooling) trained on Fashion-MNIST train[0, 50k) with
PyTorch, exported to ONNX and imported by tools/onnx2freeze.py.

  tools/train_mobile.py --out models/mobilenet-fmnist [--epochs 4] [--width 24]

Writes OUT/model.onnx, OUT/train_report.json and, through onnx2freeze, OUT/model.yaml,
OUT/weights.safetensors and OUT/cache-config.yaml. Shows progress per epoch.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fmnist  # noqa: E402

MEAN, STD = 0.286, 0.353


class Separable(nn.Module):
    """depthwise 3x3 - BN - ReLU - pointwise 1x1 - BN, + the input, ReLU."""

    def __init__(self, c):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.b1 = nn.BatchNorm2d(c)
        self.pw = nn.Conv2d(c, c, 1, bias=False)
        self.b2 = nn.BatchNorm2d(c)

    def forward(self, x):
        y = torch.relu(self.b1(self.dw(x)))
        return torch.relu(x + self.b2(self.pw(y)))


class MobileNetish(nn.Module):
    def __init__(self, w=24, classes=10):
        super().__init__()
        self.stem = nn.Conv2d(1, w, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(w)
        self.b1, self.b2 = Separable(w), Separable(w)
        self.pool1 = nn.MaxPool2d(3, stride=2, padding=1)           # 28 -> 14
        self.up1 = nn.Conv2d(w, 2 * w, 1, bias=False)
        self.up1_bn = nn.BatchNorm2d(2 * w)
        self.b3, self.b4 = Separable(2 * w), Separable(2 * w)
        self.pool2 = nn.MaxPool2d(3, stride=2, padding=1)           # 14 -> 7
        self.up2 = nn.Conv2d(2 * w, 4 * w, 1, bias=False)
        self.up2_bn = nn.BatchNorm2d(4 * w)
        self.b5, self.b6 = Separable(4 * w), Separable(4 * w)
        self.fc = nn.Linear(4 * w, classes)

    def forward(self, x):
        x = torch.relu(self.stem_bn(self.stem(x)))
        x = self.b2(self.b1(x))
        x = torch.relu(self.up1_bn(self.up1(self.pool1(x))))
        x = self.b4(self.b3(x))
        x = torch.relu(self.up2_bn(self.up2(self.pool2(x))))
        x = self.b6(self.b5(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def norm(u8):
    return torch.from_numpy((u8.astype(np.float32) / 255 - MEAN) / STD).unsqueeze(1)


def evaluate(m, x, y):
    m.eval()
    with torch.no_grad():
        pred = torch.cat([m(x[i:i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
    return (pred == y).float().mean().item()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--width", type=int, default=24)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args(argv)
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    tr_i, tr_l = fmnist.load("train")
    te_i, te_l = fmnist.load("t10k")
    x, y = norm(tr_i[:50000]), torch.from_numpy(tr_l[:50000].astype(np.int64))
    xv, yv = norm(tr_i[50000:]), torch.from_numpy(tr_l[50000:].astype(np.int64))
    m = MobileNetish(a.width)
    opt = torch.optim.SGD(m.parameters(), lr=a.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = a.epochs * ((len(x) + a.batch - 1) // a.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=steps)
    t0 = time.time()
    for ep in range(a.epochs):
        m.train()
        perm = torch.randperm(len(x))
        loss_sum = 0.0
        for k, i in enumerate(range(0, len(x), a.batch)):
            idx = perm[i:i + a.batch]
            loss = nn.functional.cross_entropy(m(x[idx]), y[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item()
            if k % 100 == 0:
                print(f"train_mobile: epoch {ep + 1}/{a.epochs} step {k} loss {loss.item():.3f} "
                      f"({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
        acc = evaluate(m, xv, yv)
        print(f"train_mobile: epoch {ep + 1}/{a.epochs}: loss {loss_sum / (k + 1):.3f}, "
              f"validation accuracy {acc:.4f} ({time.time() - t0:.0f} s)", file=sys.stderr,
              flush=True)
    test_acc = evaluate(m, norm(te_i), torch.from_numpy(te_l.astype(np.int64)))
    os.makedirs(a.out, exist_ok=True)
    onnx_path = os.path.join(a.out, "model.onnx")
    m.eval()
    torch.onnx.export(m, torch.zeros(1, 1, 28, 28), onnx_path, opset_version=13,
                      input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "n"}, "logits": {0: "n"}})
    with open(os.path.join(a.out, "train_report.json"), "w") as f:
        json.dump({"model": "MobileNet-style (depthwise-separable residual blocks)",
                   "width": a.width, "epochs": a.epochs, "train": [0, 50000],
                   "validation_accuracy": acc, "test_accuracy_pytorch": test_acc,
                   "seconds": round(time.time() - t0, 1)}, f, indent=1)
        f.write("\n")
    print(f"train_mobile: test accuracy (PyTorch) {test_acc:.4f}; {onnx_path}", file=sys.stderr)
    tool = os.path.join(os.path.dirname(os.path.abspath(__file__)), "onnx2freeze.py")
    return subprocess.run([sys.executable, tool, onnx_path, "--out", a.out, "--mean", str(MEAN),
                           "--std", str(STD), "--name", os.path.basename(a.out.rstrip("/"))]).returncode


if __name__ == "__main__":
    sys.exit(main())
