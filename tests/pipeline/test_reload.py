#!/usr/bin/python3
"""Hot reload that changes answers: the appliance serves the shipped snapshot, SIGHUP swaps in a
different one (same cache layers and key sizes, but every block1 lookup answers: a fixed
threshold of 0), and the responses after the swap all exit at block1 while those before it did
not, with labels that differ for the requests both phases answered. A corrupt file under the
same path is then refused and the swapped-in set keeps answering. The phases are told apart by
the response pcap's timestamps (net_pcap stamps frames with the wall clock as they leave)."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import appliance_util as U  # noqa: E402

FAILS = []
PHASE_S = 2.0  # seconds of traffic per phase
# after a SIGHUP: the reload, then what was in flight drains (rings of 128 requests: well
# under 0.1 s at the ~3000 answers/s of two stages on two cores)
SETTLE_NS = 500_000_000


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILS.append(what)


def layer_index(name):
    """The model layer index responses carry for a cache exit (model.yaml's layer order)."""
    with open(os.path.join(U.MODEL_DIR, "model.yaml")) as f:
        names = re.findall(r"^\s+- \{name: (\w+),", f.read(), re.M)
    return names.index(name)


def make_snapshots(d):
    """Two small k-means snapshots on the same layers and key sizes (4x4 grid, 64 dims): the
    running one with budget thresholds, and one whose block1 cache answers every lookup
    (threshold fixed at 0). One calibrate pass makes both."""
    base = ("build: 2000\nvalidation: 500\nobjective: compute\nseed: 2\n"
            "defaults:\n  kind: kmeans\n  key: {grid: 4, dims: 64, l2: true}\n"
            "  size: 64\n  threshold: %s\n"
            "caches:\n  - layer: block1\n  - layer: block2\n  - layer: block3\n"
            "  - layer: block4\n")
    args = [U.FREEZE, "calibrate", "--model", os.path.join(U.MODEL_DIR, "model.yaml")]
    snaps = []
    for name, thr in (("running", "budget"), ("every-block1", "0")):
        cfg = os.path.join(d, name + ".yaml")
        with open(cfg, "w") as f:
            f.write(base % thr)
        snaps.append(os.path.join(d, name + ".snap"))
        args += ["--cache-config", cfg, "--out", snaps[-1]]
    subprocess.run(args, check=True, capture_output=True)
    return snaps


def responses(resp, meta):
    """[(ts_ns, id, label, exit)] of the ok answers in the response pcap, in sending order."""
    port = meta["appliance"]["port"]
    out = []
    for ts, fr in U.read_pcap(resp):
        u = U.fzgen.parse_udp(fr)
        r = U.fzgen.decode_resp(u[4]) if u and u[1] == port else None
        if r is not None and r["status"] == 0:
            out.append((ts, r["id"], r["label"], r["exit"]))
    return out


def main():
    U.need_model()
    d = U.tmpdir()
    snap, other = make_snapshots(d)
    cfg = os.path.join(d, "reload.yaml")
    with open(cfg, "w") as f:
        f.write(f"model: {U.MODEL_DIR}/model.yaml\ncache: {snap}\nstate_dir: {d}\n"
                "rings: {size: 128}\nstages:\n"
                "  - {name: s1, lcore: 2, layers: stem..block2}\n"
                "  - {name: s2, lcore: 3, layers: block3..fc}\n")
    req, meta = U.gen(d, "reload", "-n", "500")
    resp = os.path.join(d, "reload-resp.pcap")
    a = U.Appliance(f"net_pcap0,rx_pcap={req},tx_pcap={resp},infinite_rx=1", ["--config", cfg])
    started = a.started
    t_swap = t_corrupt = 0
    if started:
        time.sleep(PHASE_S)
        shutil.copy(other, snap + ".tmp")  # replace the file whole, as an operator would
        os.rename(snap + ".tmp", snap)
        t_swap = time.time_ns()
        a.send(signal.SIGHUP)
        time.sleep(PHASE_S)
        with open(snap, "r+b") as f:  # corrupt it in place: refused, the swapped-in set stays
            f.seek(100)
            f.write(b"\xff" * 64)
        t_corrupt = time.time_ns()
        a.send(signal.SIGHUP)
        time.sleep(PHASE_S)
    rc, out = a.stop(signal.SIGTERM)
    check(started and rc == 0, "reload: the appliance keeps serving and stops cleanly")
    check("cache reloads      1 (refused 1)" in out,
          "reload: the other snapshot swapped in, the corrupt file refused")
    check("reload refused" in out and snap in out, "reload: the refusal names the file")
    check("in flight at exit  0" in out and "accounting         ok" in out,
          "reload: nothing in flight at exit, accounting adds up")
    if not started:
        print(out[-3000:])
        sys.exit(1)

    b1 = layer_index("block1")
    rs = responses(resp, meta)
    before = [r for r in rs if r[0] < t_swap]
    swapped = [r for r in rs if t_swap + SETTLE_NS < r[0] < t_corrupt]
    kept = [r for r in rs if r[0] > t_corrupt + SETTLE_NS]
    print(f"responses: {len(before)} before the swap, {len(swapped)} after it, "
          f"{len(kept)} after the refused reload")

    def share_b1(rr):
        return sum(r[3] == b1 for r in rr) / len(rr) if rr else 0.0

    # the running snapshot answers a part at block1 (budget thresholds); the other answers
    # every request there
    check(len(before) > 100 and share_b1(before) < 0.6,
          f"reload: before the swap {100 * share_b1(before):.1f} % exit at block1 (budget thresholds)")
    check(len(swapped) > 100 and share_b1(swapped) == 1.0,
          f"reload: after the swap every answer exits at block1 ({100 * share_b1(swapped):.1f} %)")
    first = {}
    for r in before:
        first.setdefault(r[1], r)
    both = [(first[r[1]], r) for r in swapped if r[1] in first]
    changed = sum(x[2] != y[2] for x, y in both)
    # the other snapshot agrees with the full model on ~76 % of its validation images
    check(len(both) > 100 and changed > 0.05 * len(both),
          f"reload: {changed} of {len(both)} requests answered in both phases got another label")
    check(len(kept) > 100 and share_b1(kept) == 1.0,
          f"reload: after the refused reload the swapped-in set still answers "
          f"({len(kept)} answers, {100 * share_b1(kept):.1f} % at block1)")
    print(f"{len(FAILS)} failed")
    sys.exit(1 if FAILS else 0)


if __name__ == "__main__":
    main()
