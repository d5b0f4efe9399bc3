#!/usr/bin/python3
"""Operator's view of a running appliance: tools/fzstats.py --prometheus parses as Prometheus text
format (names, types, labels, values) and its counters add up, and against the summary the
appliance prints at exit; fzstats.py --watch draws the live view in a terminal (tmux).
Self-checking: shadows add up; on a drifting stream the guard acts (a cache point and the exact
tier) and says so in the log, /freeze/layers, Prometheus and the summary."""
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import appliance_util as U  # noqa: E402

FAILS = []
FZSTATS = os.path.join(U.SRC, "tools", "fzstats.py")
NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
SAMPLE = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*)\})? '
                    r'(\S+)$')


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILS.append(what)


def fzstats(prefix, *args):
    p = subprocess.run([sys.executable, FZSTATS, "--file-prefix", prefix, *args],
                       capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout, p.stderr


def parse(text):
    """Prometheus text format, strictly: {(name, frozenset(labels)): value}, {family: type}."""
    samples, types, helps, bad = {}, {}, set(), []
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helps.add(line.split()[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            if name in types or kind not in ("counter", "gauge") or not NAME.fullmatch(name):
                bad.append(line)
            types[name] = kind
        elif line:
            m = SAMPLE.match(line)
            if not m or m.group(1) not in types:
                bad.append(line)
                continue
            labels = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            try:
                v = float(m.group(3))
            except ValueError:
                bad.append(line)
                continue
            samples[(m.group(1), labels)] = v
    return samples, types, helps, bad


def val(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def wait_answered(prefix, n, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        rc, out, _ = fzstats(prefix, "/freeze/stats")
        if rc == 0:
            st = __import__("json").loads(out)["/freeze/stats"]
            if st["answered_ok"] + st["answered_error"] + st["dropped"] >= n and st["in_flight"] == 0:
                return True
        time.sleep(0.3)
    return False


def main():
    U.need_model()
    d = U.tmpdir()
    n = 1500
    req, meta = U.gen(d, "stats", "-n", str(n), "--first", "4000")
    resp = os.path.join(d, "stats-resp.pcap")
    a = U.Appliance(f"net_pcap0,rx_pcap={req},tx_pcap={resp}", ["--exit-idle", "8000"])
    prefix = f"fzt{os.getpid()}_{U._prefix[0]}"
    check(a.started, "stats: the appliance serves")
    if not a.started:
        print("".join(a.lines)[-3000:])
        sys.exit(1)
    check(wait_answered(prefix, n), f"stats: the appliance answered all {n} requests")
    rc, text, err = fzstats(prefix, "--prometheus")
    check(rc == 0, f"prometheus: fzstats --prometheus runs ({err.strip()[:200]})")
    samples, types, helps, bad = parse(text)
    check(not bad, f"prometheus: every line parses as text format ({bad[:3]})")
    check(all(t in helps for t in types), "prometheus: every family has HELP and TYPE")
    check(all(name.startswith("freeze_") for name in types), "prometheus: names carry the freeze_ prefix")
    check(all(name.endswith("_total") == (kind == "counter") for name, kind in types.items()),
          "prometheus: counters and only counters end in _total")
    req_n = val(samples, "freeze_requests_total")
    ok = val(samples, "freeze_answers_total", status="ok")
    er = val(samples, "freeze_answers_total", status="error")
    dr = val(samples, "freeze_requests_dropped_total")
    fl = val(samples, "freeze_requests_in_flight")
    check(req_n == n and None not in (ok, er, dr, fl) and ok + er + dr + fl == req_n,
          f"prometheus: requests {req_n} = answered {ok}+{er} + dropped {dr} + in flight {fl}")
    layers = sorted({dict(k[1])["layer"] for k in samples if k[0] == "freeze_cache_lookups_total"})
    check(len(layers) > 0, f"prometheus: per cache point metrics ({len(layers)} points)")
    check(all(val(samples, "freeze_cache_lookups_total", layer=l) ==
              val(samples, "freeze_cache_hits_total", layer=l) +
              val(samples, "freeze_cache_misses_total", layer=l) for l in layers),
          "prometheus: per point lookups = hits + misses")
    front_req = val(samples, "freeze_front_requests_total")
    tiers = sum(v for k, v in samples.items() if k[0] == "freeze_front_hits_total")
    ran = val(samples, "freeze_front_ran_total")
    followers = val(samples, "freeze_front_followers_total")
    coalesced = val(samples, "freeze_front_hits_total", tier="coalesced")
    check(front_req == n and ran is not None and
          front_req == tiers - coalesced + followers + ran,
          f"prometheus: front requests {front_req} = tier hits + followers + ran")
    busy = [v for k, v in samples.items() if k[0] == "freeze_stage_busy_ratio"]
    check(len(busy) == 4 and all(0 <= b <= 1 for b in busy), f"prometheus: busy ratio per stage {busy}")

    # the live view under tmux
    if shutil.which("tmux"):
        sess = f"fzwatch{os.getpid()}"
        subprocess.run(["tmux", "new-session", "-d", "-s", sess, "-x", "150", "-y", "45",
                        f"{sys.executable} {FZSTATS} --file-prefix {prefix} --watch 0.5"], check=True)
        time.sleep(2.5)
        screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", sess], capture_output=True,
                                text=True).stdout
        subprocess.run(["tmux", "kill-session", "-t", sess], capture_output=True)
        check(f"requests {n}" in screen and all(s in screen for s in ("s1", "s4", "busy")),
              "watch: the live view shows requests and the load per stage")
        check(all(l in screen for l in layers) and "hit rate" in screen,
              "watch: the live view shows every cache point's hit rate")
        check("front tier" in screen and "exact" in screen, "watch: the live view shows the front tiers")
        if FAILS:
            print(screen)
    else:
        check(False, "watch: tmux is installed (tools/setup-debian.sh)")

    # against the summary printed at exit
    rc, out = a.stop(timeout=60)
    check(rc == 0, "stats: the appliance stops cleanly")
    check(U.summary_value(out, "requests") == req_n, "summary: requests as in the exposition")
    for l in layers:
        m = re.search(r"^\s+" + re.escape(l) + r"\s+\S+\s+(\d+)\s+(\d+)\s+(\d+)", out, re.M)
        ok_ = m and (int(m.group(1)), int(m.group(2))) == (
            val(samples, "freeze_cache_lookups_total", layer=l), val(samples, "freeze_cache_hits_total", layer=l))
        if not ok_:
            check(False, f"summary: {l}: lookups and hits as in the exposition")
    m = re.search(r"^front tiers\s+requests (\d+) = exact (\d+) \+ flow (\d+) \+ near (\d+)", out, re.M)
    check(m and int(m.group(1)) == front_req and
          int(m.group(2)) == val(samples, "freeze_front_hits_total", tier="exact"),
          "summary: front tier counts as in the exposition")
    test_verify(d)
    test_guard_acts(d)
    print(f"{len(FAILS)} failed")
    sys.exit(1 if FAILS else 0)


def test_verify(d):
    """Self-checking on: shadows of early answers run through the whole model and score every
    cache point, and never answer anybody; their counts add up, and show in the exposition."""
    n = 1500
    req, meta = U.gen(d, "verify", "-n", str(n), "--first", "6000")
    with open(os.path.join(U.SRC, "config", "examples", "appliance.yaml")) as f:
        text = f.read().replace("../../models", os.path.join(U.SRC, "models"))
    cfg = os.path.join(d, "verify.yaml")
    with open(cfg, "w") as f:
        f.write(re.sub(r"^verify:.*$", "", text, flags=re.M) +
                "verify: {sample: 1.0, window: 500, every: 25}\n")
    resp = os.path.join(d, "verify-resp.pcap")
    a = U.Appliance(f"net_pcap0,rx_pcap={req},tx_pcap={resp}",
                    ["--config", cfg, "--exit-idle", "8000"])
    prefix = f"fzt{os.getpid()}_{U._prefix[0]}"
    check(a.started and wait_answered(prefix, n), "verify: the appliance serves and answers")
    time.sleep(1.0)  # shadows still on their way
    rc, text, _ = fzstats(prefix, "--prometheus")
    samples, types, helps, bad = parse(text)
    check(rc == 0 and not bad, f"verify: the exposition parses ({bad[:3]})")
    sent = val(samples, "freeze_shadows_total", result="sent")
    checked = val(samples, "freeze_shadows_total", result="checked")
    failed = val(samples, "freeze_shadows_total", result="failed")
    check(sent and sent > 0 and checked + failed == sent,
          f"verify: every shadow sent was checked ({sent} sent, {checked} checked, {failed} failed)")
    lows = {dict(k[1])["layer"]: v for k, v in samples.items()
            if k[0] == "freeze_cache_sampled_agreement_lower"}
    check(lows and all(0 <= v <= 1 for v in lows.values()),
          f"verify: each point's sampled agreement has a lower bound ({len(lows)} points)")
    rc, out = a.stop(timeout=60)
    got = U.answers(resp, meta)
    ids = [q["id"] for q in meta["requests"]]
    check(all(len(got.get(i, [])) == 1 for i in ids) and len(got) == n,
          "verify: each request answered exactly once, no shadow answered anybody")
    m = re.search(r"^self-checking\s+shadows sent (\d+), dropped \(busy\) (\d+), checked (\d+), "
                  r"failed (\d+)", out, re.M)
    check(m and int(m.group(1)) == int(m.group(3)) + int(m.group(4)) == sent,
          "verify: the summary's shadows add up and match the exposition")
    check("in flight at exit  0" in out and "accounting         ok" in out,
          "verify: nothing in flight at exit, accounting ok")
    m = re.search(r"^pools at exit\s+mbufs (\d+)/(\d+) free, requests (\d+)/(\d+) free", out, re.M)
    check(m and m.group(1) == m.group(2) and m.group(3) == m.group(4),
          "verify: every request object (shadows too) is back in its pool")



def drift_stream(d):
    """A stream the caches answer wrongly in part: test images with their contrast tripled about
    mid-grey (a camera's exposure changing). First `early` distinct ones; then repeats of a pool
    of the stream's images in which the images the caches answered wrongly (per `freeze eval
    --dump`, over all of them: the caches, trained on such changes too, get few wrong) make a
    tenth, so the front tiers repeat wrong answers (exact hits, or coalesced ones while the first
    is in flight); then more distinct ones for the cache points' windows, with a repeat every
    fourth request. Their answers come
    out in this order, so the repeats' shadows are not queued behind thousands of others.
    Returns (pcap, meta) or None."""
    import numpy as np
    import workloads  # tools/, on the path appliance_util set
    img, _lab = workloads._test_set()
    n_first, early, n_rep = 4800, 800, 2400
    x = np.asarray(img[:n_first], np.float32)
    drift = np.clip((x - 128) * 3 + 128, 0, 255).astype(np.uint8)
    first = os.path.join(d, "drift-first")
    workloads.write_idx(first + "-images", drift)
    workloads.write_idx(first + "-labels", np.zeros(n_first, np.uint8))
    dump = os.path.join(d, "drift-dump.csv")
    subprocess.run([U.FREEZE, "eval", "--model", os.path.join(U.MODEL_DIR, "model.yaml"),
                    "--cache", os.path.join(U.MODEL_DIR, "cache.snap"),
                    "--images", first + "-images", "--labels", first + "-labels",
                    "--dump", dump], check=True, capture_output=True)
    bad, good = [], []
    with open(dump) as f:
        for line in f:
            v = line.strip().split(",")
            if not v or not v[0].isdigit():
                continue
            i, ans, exit_layer, full = int(v[0]), int(v[1]), int(v[2]), int(v[4])
            if exit_layer >= 0:
                (bad if ans != full else good).append(i)
    if len(bad) < 5:
        return None
    pool = bad + good[:9 * len(bad)]
    rng = np.random.default_rng(5)
    rep = [pool[k] for k in rng.integers(0, len(pool), n_rep)]
    # the distinct ones after the repeats carry a repeat every fourth request: a tier the guard
    # switched off meanwhile has work it must not do
    later = []
    for k, i in enumerate(range(early, n_first)):
        later.append(i)
        if k % 3 == 2:
            later.append(pool[int(rng.integers(0, len(pool)))])
    order = list(range(early)) + rep + later
    stream = os.path.join(d, "drift")
    workloads.write_idx(stream + "-images", drift[order])
    workloads.write_idx(stream + "-labels", np.zeros(len(order), np.uint8))
    pcap, meta = U.gen(d, "drift", "-n", str(len(order)), "--images", stream + "-images",
                       "--labels", stream + "-labels")
    return pcap, meta


def test_guard_acts(d):
    """A drifting stream with a window large enough (4000 samples; the guard decides on >= 765
    at target 0.995): the guard tightens or switches off a cache point and switches the exact tier
    off (it repeats the caches' wrong answers); each shows in the log, /freeze/layers, Prometheus
    and the summary, and once the exact tier is off it answers nobody."""
    made = drift_stream(d)
    check(made is not None, "guard: the drift stream has images the caches answer wrongly")
    if made is None:
        return
    req, meta = made
    n = len(meta["requests"])
    with open(os.path.join(U.SRC, "config", "examples", "appliance.yaml")) as f:
        text = f.read().replace("../../models", os.path.join(U.SRC, "models"))
    cfg = os.path.join(d, "guard.yaml")
    with open(cfg, "w") as f:
        # rooms for every shadow: at saturation shadows only fill room in stage 1's batches,
        # the rest wait (ring and pool large enough) and run once the requests are answered
        text = re.sub(r"^(verify|rings|pools):.*$", "", text, flags=re.M)
        f.write(text + "verify: {sample: 1.0, window: 4000, every: 25}\n"
                "rings: {size: 16384}\npools: {mbufs: 8191, requests: 32768}\n")
    resp = os.path.join(d, "guard-resp.pcap")
    # the idle exit counts from when the last shadow is done: well after wait_answered
    a = U.Appliance(f"net_pcap0,rx_pcap={req},tx_pcap={resp}",
                    ["--config", cfg, "--exit-idle", "120000"])
    prefix = f"fzt{os.getpid()}_{U._prefix[0]}"
    check(a.started and wait_answered(prefix, n, timeout=240),
          f"guard: the appliance answers all {n} requests, and runs every shadow")
    time.sleep(1.0)  # the last shadows, and the control thread's last round
    rc, out, _ = fzstats(prefix, "/freeze/layers")
    layers = __import__("json").loads(out)["/freeze/layers"] if rc == 0 else {}
    off = {k.split("/")[1]: v for k, v in layers.items()
           if v.get("kind") == "front" and v.get("enabled") == 0}
    check(off and all(v["guard_offs"] >= 1 for v in off.values()),
          f"guard: /freeze/layers shows a front tier switched off ({sorted(off)})")
    check(all(v["sampled"] >= 765 and float(v["agreement_low"]) < 0.995 for v in off.values()),
          "guard: ... on a window of >= 765 samples whose lower bound fell below 0.995")
    changed = {k: v["guard_changes"] for k, v in layers.items()
               if v.get("kind") != "front" and v.get("guard_changes")}
    check(changed, f"guard: /freeze/layers shows cache points the guard changed ({changed})")
    rc, text, _ = fzstats(prefix, "--prometheus")
    samples, _types, _helps, bad = parse(text)
    check(rc == 0 and not bad, "guard: the exposition parses")
    check(off and all(val(samples, "freeze_front_tier_enabled", tier=k) == 0 and
                      (val(samples, "freeze_front_tier_guard_offs_total", tier=k) or 0) >= 1
                      for k in off), "guard: Prometheus shows the tier off")
    rc, out = a.stop(timeout=60)
    check(re.search(r"^freeze: verify: \S+: (tighten|off), threshold", out, re.M) is not None,
          "guard: the log says a cache point was tightened or switched off")
    check(off and all(re.search(r"^freeze: verify: front tier " + k + r": switched off", out, re.M)
                      for k in off), "guard: the log says the tier was switched off")
    check(off and all(re.search(r"^\s+front " + k + r"\s+sampled agreement .* guard offs [1-9]\d*, "
                                r"off now", out, re.M) for k in off),
          "guard: the summary shows the tier off")
    got = U.answers(resp, meta)
    ids = [q["id"] for q in meta["requests"]]
    check(all(len(got.get(i, [])) == 1 for i in ids), "guard: every request answered exactly once")
    # (RX reads the whole pcap before the last shadows are scored, so when the tier went off
    # relative to the requests is not fixed here: vetoed answers are counted, not required)
    check(val(samples, "freeze_front_tier_vetoed_total", tier="exact") is not None,
          "guard: Prometheus counts answers a tier found while off")
    check("accounting         ok" in out and "in flight at exit  0" in out,
          "guard: accounting ok, nothing in flight")


if __name__ == "__main__":
    main()
