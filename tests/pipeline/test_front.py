#!/usr/bin/python3
"""The front tiers through the real appliance (net_pcap ports): exact repeats answered the same
without running, near-duplicate frames answered with an answer the appliance gave a frame of the
same scene, the summary's front accounting adding up, and a reload that clears the tables."""
import os
import re
import shutil
import signal
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import appliance_util as U  # noqa: E402

sys.path.insert(0, os.path.join(U.SRC, "tools"))
import fmnist  # noqa: E402
import workloads  # noqa: E402
from workloads import shift  # noqa: E402

FAILS = []
EXIT_FULL, FRONT = 0xFFFE, {0xFFF0: "exact", 0xFFF1: "flow", 0xFFF2: "near", 0xFFF3: "coalesced"}
# wider than the calibrated radius (config/examples/appliance.yaml): this test is about which
# answers are shared, not how exactly
NEAR_RADIUS = 0.03


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILS.append(what)


def write_idx(prefix, images, labels):
    workloads.write_idx(prefix + "-images-idx3-ubyte", images)
    workloads.write_idx(prefix + "-labels-idx1-ubyte", labels)
    return prefix + "-images-idx3-ubyte", prefix + "-labels-idx1-ubyte"


def config(d, name, front):
    path = os.path.join(d, name + ".yaml")
    with open(path, "w") as f:
        f.write(f"model: {U.MODEL_DIR}/model.yaml\ncache: {U.MODEL_DIR}/cache.snap\n"
                f"state_dir: {d}\n{front}\n"
                "stages:\n"
                "  - {name: s1, lcore: 2, layers: stem..block2, max_batch: 16}\n"
                "  - {name: s2, lcore: 3, layers: block3..fc, max_batch: 16}\n")
    return path


def front_account(out, what):
    """The summary's front lines add up; returns its counts."""
    m = re.search(r"^front tiers\s+requests (\d+) = exact (\d+) \+ flow (\d+) \+ near (\d+) \+ "
                  r"coalesced (\d+) \+ ran (\d+)$", out, re.M)
    c = re.search(r"^  coalesced\s+(\d+) \((\d+) exact repeats\) = answered by the request waited "
                  r"for (\d+) \+ led again \(its answer not sure enough\) (\d+) \+ ran (\d+) \+ ran "
                  r"\(waited \d+ us\) (\d+) \+ waiting (\d+)", out, re.M)
    check(m is not None and c is not None, f"{what}: the summary has the front account")
    if not m or not c:
        print(out[-3000:])
        return None
    n = [int(x) for x in m.groups()]
    f = [int(x) for x in c.groups()]
    check(n[0] == sum(n[1:]), f"{what}: requests {n[0]} = exact + flow + near + coalesced + ran")
    check(f[0] == n[4] and f[0] == f[2] + f[3] + f[4] + f[5] + f[6] and f[6] == 0,
          f"{what}: coalesced {f[0]} = answered + led again + ran + expired, none left waiting")
    return {"requests": n[0], "exact": n[1], "flow": n[2], "near": n[3], "coalesced": n[4],
            "ran": n[5], "coalesced_answered": f[2]}


def run(d, name, images, labels, cfg):
    img, lab = write_idx(os.path.join(d, name), images, labels)
    req, meta = U.gen(d, name, "-n", str(len(images)), "--images", img, "--labels", lab)
    resp = os.path.join(d, name + "-resp.pcap")
    _, out = U.run(f"net_pcap0,rx_pcap={req},tx_pcap={resp}", ["--config", cfg, "--exit-idle", "300"])
    got = U.answers(resp, meta)
    ids = [q["id"] for q in meta["requests"]]
    check(all(len(got.get(i, [])) == 1 for i in ids),
          f"{name}: each of {len(ids)} requests answered exactly once")
    check("accounting         ok" in out, f"{name}: the appliance's accounting adds up")
    return [got[i][0] if got.get(i) else None for i in ids], out


def test_exact_repeats(d, test_img, test_lab):
    """200 test images, then the same 200 twice more: every repeat answered exact or
    coalesced, with the label its first occurrence got, which is the label without the
    front tiers."""
    k = 200
    idx = np.concatenate([np.arange(3000, 3000 + k)] * 3)
    cfg = config(d, "exact", "front: {near: {radius: 0}}")
    res, out = run(d, "exact", test_img[idx], test_lab[idx], cfg)
    base, _ = run(d, "exact-off", test_img[idx[:k]], test_lab[idx[:k]],
                  config(d, "exact-off", "front: {enabled: false}"))
    first = res[:k]
    rep = [(i % k, r) for i, r in enumerate(res[k:], k)]
    check(all(r and r["status"] == 0 for r in res), "exact: every answer ok")
    check(all(r and FRONT.get(r["exit"]) in ("exact", "coalesced") for _, r in rep),
          f"exact: all {len(rep)} repeats answered by the exact tier or waiting for their first "
          f"({sum(1 for _, r in rep if r and FRONT.get(r['exit']) == 'exact')} exact)")
    check(all(r and first[j] and r["label"] == first[j]["label"] for j, r in rep),
          "exact: a repeat gets the label its first occurrence got")
    check(all(a and b and a["label"] == b["label"] and a["exit"] == b["exit"]
              for a, b in zip(first, base)),
          "exact: first occurrences answered as without the front tiers (labels and exits)")
    acc = front_account(out, "exact")
    if acc:
        check(acc["ran"] == k and acc["near"] == 0 and acc["flow"] == 0,
              f"exact: only the {k} first occurrences ran ({acc['ran']})")


def test_near_duplicates(d, test_img, test_lab):
    """Scenes: 40 test images, 12 frames each, moved by up to a pixel, 5 % brighter or darker,
    with sensor noise. Frames answered by the near, flow or coalescing tiers get an answer the
    appliance gave another frame of the same scene; no two scenes' frames are mixed up."""
    rng = np.random.default_rng(3)
    scenes, frames = 40, 12
    src = rng.permutation(len(test_img))[:scenes]
    ims, labs, scene = [], [], []
    for s, i in enumerate(src):
        for _ in range(frames):
            im = shift(test_img[i].astype(np.float32), *[int(v) for v in rng.integers(-1, 2, 2)])
            im = im * rng.uniform(0.95, 1.05) + rng.normal(0, 3, im.shape)
            ims.append(np.clip(np.rint(im), 0, 255))
            labs.append(test_lab[i])
            scene.append(s)
    front = ("front:\n  exact: {entries: 1024}\n"
             f"  near: {{entries: 512, freqs: 4, radius: {NEAR_RADIUS}, min_confidence: 0.9, "
             "exit_min_confidence: 0.99}\n"
             "  flows: {entries: 256, timeout_ms: 2000}\n"
             "  coalesce: {pending: 64, followers: 64, wait_us: 200000}")
    res, out = run(d, "near", np.array(ims), np.array(labs), config(d, "near", front))
    ran = {}
    for s, r in zip(scene, res):
        if r and r["status"] == 0 and r["exit"] not in FRONT:
            ran.setdefault(s, set()).add(r["label"])
    shared = [(s, r) for s, r in zip(scene, res) if r and r["exit"] in FRONT]
    check(len(shared) >= scenes, f"near: {len(shared)} of {len(res)} frames answered before any "
                                 f"layer ran (at least one a scene)")
    # the answer of a frame of another scene with another label would be a mix-up; a shared
    # label must be one that a frame of the same scene got from the pipeline
    mixed = [(s, r) for s, r in shared if r["label"] not in ran.get(s, set())]
    check(not mixed, f"near: every shared answer is one a frame of its own scene got "
                     f"({len(mixed)} not)")
    acc = front_account(out, "near")
    if acc:
        check(acc["near"] + acc["flow"] + acc["coalesced_answered"] == len(shared),
              "near: the summary's front hits are the responses' front exits")


def test_reload_clears(d, test_img, test_lab):
    """100 requests replayed without end: after the first pass they are exact repeats; a
    reload clears the table, so the pipeline answers them once more, and the summary says so."""
    k = 100
    img, lab = write_idx(os.path.join(d, "reload"), test_img[:k], test_lab[:k])
    req, meta = U.gen(d, "reload", "-n", str(k), "--images", img, "--labels", lab)
    snap = os.path.join(d, "reload.snap")
    shutil.copy(os.path.join(U.MODEL_DIR, "cache.snap"), snap)
    cfg = os.path.join(d, "reload.yaml")
    with open(cfg, "w") as f:
        f.write(f"model: {U.MODEL_DIR}/model.yaml\ncache: {snap}\nstate_dir: {d}\n"
                "front: {near: {radius: 0}, coalesce: {followers: 4096}}\nstages:\n"
                "  - {name: s1, lcore: 2, layers: stem..block2}\n"
                "  - {name: s2, lcore: 3, layers: block3..fc}\n")
    resp = os.path.join(d, "reload-resp.pcap")
    a = U.Appliance(f"net_pcap0,rx_pcap={req},tx_pcap={resp},infinite_rx=1", ["--config", cfg])
    if a.started:
        time.sleep(1.5)
        shutil.copy(snap, snap + ".tmp")
        os.rename(snap + ".tmp", snap)
        a.send(signal.SIGHUP)
        time.sleep(1.5)
    rc, out = a.stop(signal.SIGTERM)
    check(a.started and rc == 0, "reload: the appliance serves and stops cleanly")
    check("cache reloads      1 (refused 0)" in out, "reload: the snapshot was reloaded")
    check("in flight at exit  0" in out and "accounting         ok" in out,
          "reload: nothing in flight at exit, every request answered or counted")
    m = re.search(r"^pools at exit\s+mbufs (\d+)/(\d+) free, requests (\d+)/(\d+) free", out, re.M)
    check(m and m.group(1) == m.group(2) and m.group(3) == m.group(4),
          "reload: after millions of front answers every mbuf and request is back in its pool")
    m = re.search(r"cleared by reloads (\d+)", out)
    check(m and int(m.group(1)) == 1, "reload: the front tables were cleared once")
    acc = front_account(out, "reload")
    if acc:
        # the first pass and the pass after the reload run; everything else is a repeat
        check(acc["exact"] > 4 * k and 2 * k <= acc["ran"] < 3 * k,
              f"reload: {acc['ran']} ran (the first pass and again after the reload), "
              f"{acc['exact']} exact repeats")


def main():
    U.need_model()
    if not os.path.exists(os.path.join(U.MODEL_DIR, "cache.snap")):
        U.skip("no shipped cache snapshot")
    d = U.tmpdir()
    img, lab = fmnist.load("t10k")
    for t in (test_exact_repeats, test_near_duplicates, test_reload_clears):
        print(f"== {t.__name__}", flush=True)
        try:
            t(d, img, lab)
        except Exception as e:  # one case failing does not stop the others
            check(False, f"{t.__name__}: {type(e).__name__}: {e}")
    print(f"{len(FAILS)} failed")
    sys.exit(1 if FAILS else 0)


if __name__ == "__main__":
    main()
