#!/usr/bin/python3
"""The second shipped model (models/mobilenet-fmnist: trained with PyTorch by tools/train_mobile.py,
exported to ONNX, imported by tools/onnx2freeze.py) through calibrate, eval and the appliance:
a snapshot calibrated on the train split loads and answers early; the appliance on a pcap answers
every request once, with the labels and exits `freeze eval` gives the same images."""
import csv
import os
import subprocess
import sys
import tempfile

SRC = os.environ.get("FZ_SRCDIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
sys.path.insert(0, os.path.join(SRC, "tests", "pipeline"))
import appliance_util as U  # noqa: E402

M = os.path.join(SRC, "models", "mobilenet-fmnist")
DATA = os.environ.get("FZ_FMNIST_DIR", "/usr/share/datasets/fashion-mnist")
FAILS = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILS.append(what)


def main():
    for f in ("model.yaml", "weights.safetensors", "cache-config.yaml", "cache.snap"):
        if not os.path.exists(os.path.join(M, f)):
            U.skip(f"no {f} in {M} (tools/train_mobile.py)")
    d = tempfile.mkdtemp(prefix="fz-second-")
    model = os.path.join(M, "model.yaml")
    # calibrate: a small build/validation split of train, the shipped cache config
    snap = os.path.join(d, "small.snap")
    p = subprocess.run([U.FREEZE, "calibrate", "--model", model, "--cache-config",
                        os.path.join(M, "cache-config.yaml"), "--out", snap, "--build", "3000",
                        "--validation", "2000", "--threads", "2"], capture_output=True, text=True)
    check(p.returncode == 0 and os.path.exists(snap),
          f"calibrate: a snapshot for the imported model ({p.stderr.strip()[-300:]})")
    # eval with the shipped snapshot: some requests exit early
    dump = os.path.join(d, "eval.csv")
    n, first = 800, 1000
    p = subprocess.run([U.FREEZE, "eval", "--model", model, "--cache", os.path.join(M, "cache.snap"),
                        "--images", os.path.join(DATA, "t10k-images-idx3-ubyte.gz"),
                        "--labels", os.path.join(DATA, "t10k-labels-idx1-ubyte.gz"),
                        "--offset", str(first), "--limit", str(n), "--dump", dump],
                       capture_output=True, text=True)
    check(p.returncode == 0, f"eval: runs ({p.stderr.strip()[-300:]})")
    with open(dump) as f:
        ev = {int(r["index"]): r for r in csv.DictReader(f)}
    early = sum(1 for r in ev.values() if int(r["exit_layer"]) >= 0)
    check(len(ev) == n and early > 0, f"eval: {early} of {n} requests answered early")
    # the appliance: the same images, the same answers
    req, meta = U.gen(d, "req", "-n", str(n), "--first", str(first))
    cfg = os.path.join(d, "stages.yaml")
    with open(cfg, "w") as f:
        f.write(f"model: {model}\ncache: {os.path.join(M, 'cache.snap')}\n"
                "stages:\n  - {name: s1, lcore: 2, layers: all_layers, max_batch: 16}\n")
    with open(model) as f:
        names = [l.split("name: ")[1].split(",")[0] for l in f if l.startswith("  - {name: ")]
    with open(cfg) as f:
        text = f.read().replace("all_layers", f"{names[0]}..{names[-1]}")
    with open(cfg, "w") as f:
        f.write(text)
    resp = os.path.join(d, "resp.pcap")
    rc, out = U.run(f"net_pcap0,rx_pcap={req},tx_pcap={resp}",
                    ["--config", cfg, "--exit-idle", "300", "--no-front"], check=False)
    check(rc == 0 and "accounting         ok" in out, "appliance: serves the imported model")
    got = U.answers(resp, meta)
    ids = [q["id"] for q in meta["requests"]]
    check(all(len(got.get(i, [])) == 1 for i in ids), f"appliance: each of {n} requests answered once")
    same = 0
    for q in meta["requests"]:
        r, e = got.get(q["id"], [None])[0], ev.get(q["index"])
        if r and e:
            ex = -1 if r["exit"] == 0xFFFE else r["exit"]
            same += r["label"] == int(e["label"]) and ex == int(e["exit_layer"])
    check(same == n, f"appliance: labels and exits equal freeze eval's ({same}/{n})")
    print(f"{len(FAILS)} failed")
    sys.exit(1 if FAILS else 0)


if __name__ == "__main__":
    main()
