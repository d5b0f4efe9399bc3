#!/usr/bin/python3
"""Integration: `freeze infer` on the 10k Fashion-MNIST test set reaches the accuracy the trainer
reported for the shipped weights (within 0.05%), at batch 1 and batch 64, with --json output."""
import json
import os
import subprocess
import sys

src = os.environ.get("FZ_SRCDIR", ".")
build = os.environ.get("FZ_BUILDDIR", os.path.join(src, "build"))
data = os.environ.get("FZ_FMNIST_DIR", "/usr/share/datasets/fashion-mnist")
model_dir = os.path.join(src, "models", "resnet18-w16-fmnist")
if not os.path.exists(os.path.join(model_dir, "train_report.json")):
    print("SKIP: no shipped model")
    sys.exit(77)
report = json.load(open(os.path.join(model_dir, "train_report.json")))
freeze = os.path.join(build, "pipeline", "freeze")
fail = 0
for batch, threads in ((64, 2), (1, 1)):
    out = subprocess.run([freeze, "infer", "--model", os.path.join(model_dir, "model.yaml"),
                          "--images", os.path.join(data, "t10k-images-idx3-ubyte.gz"),
                          "--labels", os.path.join(data, "t10k-labels-idx1-ubyte.gz"),
                          "--batch", str(batch), "--threads", str(threads), "--json"],
                         check=True, capture_output=True, text=True).stdout
    res = json.loads(out)
    for key in ("images", "accuracy", "images_per_s", "batch", "threads"):
        if key not in res:
            print(f"FAIL: --json output lacks '{key}': {out}")
            fail = 1
    diff = abs(res["accuracy"] - report["test_accuracy"])
    print(f"batch {batch}: freeze {res['accuracy'] * 100:.2f}% trainer {report['test_accuracy'] * 100:.2f}% "
          f"(|diff| {diff * 100:.3f}%), {res['images']} images")
    if res["images"] != 10000 or diff > 0.0005:
        print("FAIL")
        fail = 1
sys.exit(fail)
