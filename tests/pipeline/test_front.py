#!/usr/bin/python3
"""The front tiers through the real appliance (net_pcap ports) as shipped: exact repeats answered
the same without running; near-duplicate frames from several clients answered, image by image,
with the answer of an earlier frame within the radius that passed the confidence gates; inverted
and contrast-changed copies never; the summary's front accounting adding up; and a reload, with
every table on, that clears the tables."""
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


def shipped_front():
    """The embedded default's `front:` section (config/examples/appliance.yaml) as written, and
    its near tier's radius and confidence gates: the tests run what ships."""
    with open(os.path.join(U.SRC, "config", "examples", "appliance.yaml")) as f:
        text = f.read()
    block = re.search(r"^front:\n((?:[ #].*\n|\n)+)", text, re.M).group(0)
    near = re.search(r"near: \{([^}]*)\}", block).group(1)
    kv = dict(re.findall(r"(\w+): ([0-9.]+)", near))
    return block, float(kv["radius"]), float(kv["min_confidence"]), float(kv["exit_min_confidence"])


def rms(a, b):
    d = a.astype(np.int64).ravel() - b.astype(np.int64).ravel()
    return float(np.sqrt((d * d).sum() / (255.0 * 255.0 * d.size)))


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
    """Scenes at the shipped radius and gates, from 4 client ports: 40 test images, 12 frames
    each with sensor noise (sigma 2 grey levels), interleaved (a pool of 48 requests holds the
    replay back until earlier frames are answered, so later ones can meet their answers); then every scene's image inverted
    and with its contrast halved. Checked image by image: each frame answered by the near, flow
    or coalescing tier carries the answer (label and confidence) of an earlier frame that ran,
    whose image is within the radius of it and whose answer passed the confidence gate; near
    hits happen; no inverted or contrast-changed frame is answered by those tiers."""
    block, radius, min_conf, exit_conf = shipped_front()
    check(radius > 0, f"near: the embedded default ships the near tier on (radius {radius})")
    rng = np.random.default_rng(3)
    scenes, frames = 40, 12
    src = rng.permutation(len(test_img))[:scenes]
    ims, labs, scene = [], [], []
    for f_ in range(frames):
        for s_, i in enumerate(src):
            im = test_img[i].astype(np.float32)
            if f_:
                im = im + rng.normal(0, 2, im.shape)
            ims.append(np.clip(np.rint(im), 0, 255).astype(np.uint8))
            labs.append(test_lab[i])
            scene.append(s_)
    for s_, i in enumerate(src):  # copies the model may answer otherwise: never shared
        for im in (255 - test_img[i], test_img[i] // 2 + 64):
            ims.append(im.astype(np.uint8))
            labs.append(test_lab[i])
            scene.append(-1)
    ims = np.array(ims)
    img, lab = write_idx(os.path.join(d, "near"), ims, np.array(labs))
    req, meta = U.gen(d, "near", "-n", str(len(ims)), "--images", img, "--labels", lab,
                      "--clients", "4")
    resp = os.path.join(d, "near-resp.pcap")
    _, out = U.run(f"net_pcap0,rx_pcap={req},tx_pcap={resp}",
                   ["--config", config(d, "near", block + "pools: {requests: 48}\n"),
                    "--exit-idle", "300"])
    got = U.answers(resp, meta)
    ids = [q["id"] for q in meta["requests"]]
    check(all(len(got.get(i, [])) == 1 for i in ids),
          f"near: each of {len(ids)} requests answered exactly once")
    res = [got[i][0] if got.get(i) else None for i in ids]
    ran = [j for j, r in enumerate(res) if r and r["status"] == 0 and r["exit"] not in FRONT]
    by_tier = {t: 0 for t in FRONT.values()}
    bad = []
    for j, r in enumerate(res):
        if not r or r["exit"] not in FRONT or FRONT[r["exit"]] == "exact":
            continue
        by_tier[FRONT[r["exit"]]] += 1
        # its source: an earlier frame that ran, with this very answer, within the radius
        srcs = [k for k in ran if k < j and res[k]["label"] == r["label"] and
                res[k]["confidence"] == r["confidence"] and rms(ims[k], ims[j]) <= radius]
        ok = False
        for k in srcs:
            c, full = res[k]["confidence"], res[k]["exit"] == EXIT_FULL
            gate = c >= min_conf if full else 1 / (1 + np.exp(-c)) >= exit_conf
            ok |= gate
        if not ok:
            bad.append((j, FRONT[r["exit"]], scene[j]))
    check(by_tier["near"] + by_tier["flow"] >= scenes,
          f"near: near and flow hits happen ({by_tier})")
    check(not bad, f"near: every near/flow/coalesced answer is an earlier answer within rms "
                   f"{radius} that passed the gates ({len(bad)} not: {bad[:5]})")
    neg = [j for j in range(len(res)) if scene[j] < 0 and res[j] and res[j]["exit"] in FRONT]
    check(not neg, f"near: no inverted or contrast-changed copy answered before the layers "
                   f"({len(neg)} were)")
    acc = front_account(out, "near")
    if acc:
        check(acc["near"] == by_tier["near"] and acc["flow"] == by_tier["flow"],
              "near: the summary's near and flow hits are the responses' exits")


def test_reload_clears(d, test_img, test_lab):
    """100 requests replayed without end: after the first pass they are exact repeats; a
    reload clears the table, so the pipeline answers them once more, and the summary says so."""
    k = 100
    # every table on, as shipped, with room for the followers of a replay without end
    block = shipped_front()[0].replace("followers: 64", "followers: 4096")
    check("followers: 4096" in block and "radius: 0," not in block,
          "reload: the shipped front section with every table on")
    img, lab = write_idx(os.path.join(d, "reload"), test_img[:k], test_lab[:k])
    req, meta = U.gen(d, "reload", "-n", str(k), "--images", img, "--labels", lab)
    snap = os.path.join(d, "reload.snap")
    shutil.copy(os.path.join(U.MODEL_DIR, "cache.snap"), snap)
    cfg = os.path.join(d, "reload.yaml")
    with open(cfg, "w") as f:
        f.write(f"model: {U.MODEL_DIR}/model.yaml\ncache: {snap}\nstate_dir: {d}\n"
                f"{block}"
                "stages:\n"
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
