#!/usr/bin/python3
"""The same fast path on every x86-64 CPU: under this machine's own ISA and with oneDNN (and
Freeze's own kernels) capped at AVX2, AVX and SSE4.1, `freeze eval` must run no reference
convolution, pooling or inner product, and give the same answers and exits image by image.

A capped ISA is how an AVX-512 machine runs the code paths of an AVX2-only one; ISAs the CPU
lacks are skipped (oneDNN caps, it never raises). Exit code 77 (skip) only without the data."""
import csv
import os
import re
import subprocess
import sys
import tempfile

SRC = os.environ.get("FZ_SRCDIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("FZ_BUILDDIR", os.path.join(SRC, "build"))
DATA = os.environ.get("FZ_FMNIST_DIR", "/usr/share/datasets/fashion-mnist")
FREEZE = os.path.join(BUILD, "pipeline", "freeze")
MODEL = os.path.join(SRC, "models/resnet18-w16-fmnist/model.yaml")
SNAP = os.path.join(SRC, "models/resnet18-w16-fmnist/cache.snap")
IMAGES = os.path.join(DATA, "t10k-images-idx3-ubyte.gz")
LABELS = os.path.join(DATA, "t10k-labels-idx1-ubyte.gz")
LIMIT = 1000
HEAVY = ("convolution", "pooling", "pooling_v2", "inner_product", "matmul")
# Different kernels round differently (logits agree to ~1e-5); a request whose cache confidence
# sits on its threshold may exit one layer apart. More than this many such requests is a bug.
MAX_DIFFER = 2


def run(isa, dump):
    env = dict(os.environ, ONEDNN_VERBOSE="1")
    env.pop("FZ_ALLOW_REF_KERNELS", None)
    if isa:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    else:
        env.pop("ONEDNN_MAX_CPU_ISA", None)
    p = subprocess.run([FREEZE, "eval", "--model", MODEL, "--cache", SNAP, "--images", IMAGES,
                        "--labels", LABELS, "--limit", str(LIMIT), "--dump", dump],
                       env=env, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        sys.exit(f"FAIL: ISA {isa or 'native'}: freeze eval exited {p.returncode}:\n"
                 f"{p.stderr[-3000:]}")
    impls = {}
    for line in p.stdout.splitlines() + p.stderr.splitlines():
        f = line.split(",")
        if line.startswith("onednn_verbose,exec,cpu,") and len(f) > 4:
            impls.setdefault(f[3], set()).add(f[4])
    with open(dump) as fh:
        rows = [r for r in csv.reader(fh) if r and r[0].isdigit()]
    return impls, rows


def main():
    for f in (FREEZE, MODEL, SNAP, IMAGES, LABELS):
        if not os.path.exists(f):
            print(f"SKIP: {f} missing")
            return 77
    with tempfile.TemporaryDirectory() as tmp:
        base_impls, base = run(None, os.path.join(tmp, "native.csv"))
        conv = sorted(base_impls.get("convolution", []))
        print(f"native: convolutions {conv}")
        failures = []
        for isa in ("AVX2", "AVX", "SSE41"):
            impls, rows = run(isa, os.path.join(tmp, f"{isa}.csv"))
            for kind in HEAVY:
                refs = [i for i in impls.get(kind, ()) if i.startswith("ref")]
                if refs:
                    failures.append(f"{isa}: reference {kind} {refs}")
            print(f"{isa}: convolutions {sorted(impls.get('convolution', []))}")
            if len(rows) != len(base) or len(rows) != LIMIT:
                failures.append(f"{isa}: {len(rows)} answers, native gave {len(base)}")
                continue
            # answer and exit layer (the confidences after them differ in the last bits)
            differ = [(a, b) for a, b in zip(base, rows) if a[1:3] != b[1:3]]
            print(f"{isa}: {len(differ)} of {LIMIT} answers or exits differ from native")
            for a, b in differ[:5]:
                print(f"  image {a[0]}: native {a[1:]} vs {isa} {b[1:]}")
            if len(differ) > MAX_DIFFER:
                failures.append(f"{isa}: {len(differ)} answers differ (at most {MAX_DIFFER})")
            # an ISA the CPU has must be used, not silently a lower one
            jit = [i for i in impls.get("convolution", ()) if re.match(r"(jit|brg)", i)]
            if not jit:
                failures.append(f"{isa}: no jit convolution at all: {impls.get('convolution')}")
        for kind in HEAVY:
            refs = [i for i in base_impls.get(kind, ()) if i.startswith("ref")]
            if refs:
                failures.append(f"native: reference {kind} {refs}")
    if failures:
        print("FAIL:\n  " + "\n  ".join(failures))
        return 1
    print("ok: no reference kernels; answers match across ISAs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
