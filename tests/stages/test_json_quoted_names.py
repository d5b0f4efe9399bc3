#!/usr/bin/python3
"""Regression: a model name or file path holding a quote, a backslash or a tab broke the JSON of
`freeze infer --json` and `freeze eval --json` (printed with printf, unescaped). The shipped model
is copied under such a name into such a directory; both reports must parse and carry the names
back unchanged. Exit code 77 (skip) without the shipped model or the data."""
import json
import os
import re
import subprocess
import sys
import tempfile

SRC = os.environ.get("FZ_SRCDIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("FZ_BUILDDIR", os.path.join(SRC, "build"))
DATA = os.environ.get("FZ_FMNIST_DIR", "/usr/share/datasets/fashion-mnist")
FREEZE = os.path.join(BUILD, "pipeline", "freeze")
MODEL_DIR = os.path.join(SRC, "models", "resnet18-w16-fmnist")
IMAGES = os.path.join(DATA, "t10k-images-idx3-ubyte.gz")
LABELS = os.path.join(DATA, "t10k-labels-idx1-ubyte.gz")
NAME = 'res"net\\18\tw16'  # a quote, a backslash and a tab
DIR = 'we"ird\\dir'

for need in (os.path.join(MODEL_DIR, "model.yaml"), os.path.join(MODEL_DIR, "weights.safetensors"),
             os.path.join(MODEL_DIR, "cache.snap"), IMAGES, LABELS):
    if not os.path.exists(need):
        print(f"SKIP: {need} not there")
        sys.exit(77)


def report(cmd):
    p = subprocess.run([FREEZE] + cmd + ["--json"], capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        print(f"FAIL: freeze {' '.join(cmd)}: exit {p.returncode}\n{p.stderr}")
        sys.exit(1)
    try:
        return json.loads(p.stdout)
    except json.JSONDecodeError as e:
        print(f"FAIL: freeze {cmd[0]} --json is not JSON ({e}):\n{p.stdout}")
        sys.exit(1)


with tempfile.TemporaryDirectory() as tmp:
    d = os.path.join(tmp, DIR)
    os.mkdir(d)
    with open(os.path.join(MODEL_DIR, "model.yaml")) as f:
        yaml = f.read()
    # YAML double-quoted scalar: \" \\ \t are its escapes too
    yaml_name = NAME.replace("\\", "\\\\").replace('"', '\\"').replace("\t", "\\t")
    yaml, n = re.subn(r"(?m)^name: .*$", lambda _: f'name: "{yaml_name}"', yaml)
    assert n == 1, "model.yaml has no top-level name"
    weights = os.path.abspath(os.path.join(MODEL_DIR, "weights.safetensors"))
    yaml = re.sub(r"(?m)^weights: .*$", lambda _: "weights: '%s'" % weights.replace("'", "''"),
                  yaml)
    model = os.path.join(d, "model.yaml")
    with open(model, "w") as f:
        f.write(yaml)
    snap = os.path.join(d, "cache.snap")
    images = os.path.join(d, "images.gz")
    os.symlink(os.path.abspath(os.path.join(MODEL_DIR, "cache.snap")), snap)
    os.symlink(IMAGES, images)

    r = report(["infer", "--model", model, "--images", images, "--labels", LABELS,
                "--limit", "64"])
    fail = 0
    if r.get("model") != NAME or r.get("images") != 64 or not isinstance(r.get("accuracy"), float):
        print(f"FAIL: infer report: {r}")
        fail = 1
    r = report(["eval", "--model", model, "--cache", snap, "--images", images,
                "--labels", LABELS, "--limit", "64"])
    if (r.get("model") != NAME or r.get("snapshot") != snap or r.get("images") != images
            or r.get("requests") != 64 or sum(r.get("exit_histogram", {}).values()) != 64):
        print(f"FAIL: eval report: {r}")
        fail = 1
    if not fail:
        print(f"ok: model {NAME!r} in {d!r}: infer and eval reports parse, names intact")
    sys.exit(fail)
