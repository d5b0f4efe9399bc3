#!/usr/bin/python3
"""Freeze perf harness: how much faster, at what accuracy, on which traffic.

  perf/run.py                     full mode (about 20-30 minutes on the 2-core dev machine)
  perf/run.py --quick             CI smoke: tiny counts, under a minute
  perf/run.py --scenarios saturation,load --workloads iid,temporal --modes off,learned,online

Builds what it needs, makes the workloads from the Fashion-MNIST test set (tools/workloads.py),
finds or calibrates the cache snapshots (train split only), runs the scenarios and writes CSV, a
Markdown report and PNG plots into perf/results/<date-time>/ (see perf/README.md).

Scenarios
  saturation  pcap replay through the appliance (net_pcap): throughput, exits, agreement with the
              caches-off run on the same requests, accuracy, CPU time per request
  load        live veth + open-loop client (perf/loadgen.py) at a sweep of offered rates:
              answered rate, latency p50/p90/p99 and CDFs (needs root and network namespaces)
  offline     `freeze eval` of every mode on every workload: exits, effective layers and MACs,
              lookup against layer cost (the profile behind the appliance numbers)
  sweep       thresholds from calibration budgets (train split only) -> `freeze eval` on the test
              workload: the accuracy-vs-exit trade-off, with the oracle bound
  peers       perf/bench_infer.py: `freeze infer` without caches and PyTorch at batch 1 and 32
  profile     `perf record` of chosen saturation runs (--profile iid/learned,...): CPU by object
              and symbol, to say why a target is missed
Modes
  off         --no-caches (every request runs the whole model): the baseline of every ratio
  learned     the shipped snapshot: learned caches confirmed by k-means (GATI-style)
  kmeans      k-means caches after block1..4 (the paper's realised design; shipped before)
  knn         a knn snapshot
  online-off  the online-capable snapshot with online inserts off
  online      the online-capable snapshot with --online (full-model answers inserted)
  front       the shipped snapshot with the front tiers of the default config (exact repeats,
              flow memory, near-duplicate inputs, coalescing); `learned` is the same without them
  front@R     the same with the near-duplicate radius R instead of the calibrated one (a sweep:
              --modes off,front,front@0.015,front@0.03 draws front_sweep.png)
  verify      front with self-checking: a share of early answers checked against the full
              model, thresholds guarded (--verify-sample, the drift scenario's subject)
Scenario drift (live veth, needs root): the test set, then the same images contrast-stretched
(x2 about mid-grey: a camera's exposure changing), at --drift-rate; off, front and verify.
Agreement with the caches-off answers over a sliding window of requests, as CSV and drift.png,
and the number of requests after the switch until verify is back at >= 99.5 % for good.
"""
import argparse
import csv
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))
import fzgen  # noqa: E402
import workloads  # noqa: E402
from pcap_io import read_pcap  # noqa: E402

PY = "/usr/bin/python3"  # Debian's, with numpy, matplotlib and torch
SCENARIOS = ("saturation", "profile", "load", "offline", "sweep", "peers", "drift")
MODES = ("off", "learned", "kmeans", "knn", "online-off", "online", "front", "verify")
MODE_SNAPSHOT = {"off": "learned", "learned": "learned", "kmeans": "kmeans", "knn": "knn",
                 "online-off": "online", "online": "online", "front": "learned",
                 "verify": "learned"}
COLORS = {"off": "black", "learned": "tab:red", "kmeans": "tab:blue", "knn": "tab:orange",
          "online-off": "tab:purple", "online": "tab:green", "front": "tab:brown"}
# Snapshots looked for in the model folder before calibrating our own (first match wins).
SHIPPED = {"learned": ["cache.snap"], "kmeans": ["cache-kmeans.snap", "cache-kmeans.fzc"],
           "knn": ["cache-knn.snap", "cache-knn.fzc"],
           "online": ["cache-online.snap", "cache-online.fzc"]}
CONFIGS = {"learned": ["cache-config.yaml"],
           "kmeans": ["cache-kmeans-early.yaml", "cache-kmeans.yaml"], "knn": ["cache-config-knn.yaml",
                                                                          "cache-knn.yaml"],
           "online": ["cache-config-online.yaml", "cache-online.yaml"]}
LCORES = "0@0,1@1,(2-5)@(0,1)"
APP_IP, CLIENT_IP, APP_PORT = "198.18.0.1", "198.18.0.2", 7878

T0 = time.monotonic()


def base_mode(m):
    """A mode's kind: "front@0.03" is "front" with another near-duplicate radius."""
    return m.split("@")[0]


def log(msg):
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def sh(cmd, check=True, **kw):
    return subprocess.run(cmd, check=check, capture_output=True, text=True, **kw)


def pct(sorted_vals, p):
    return fzgen.percentile(sorted_vals, p)


# ---- model facts ------------------------------------------------------------------------------

class Model:
    """Layer names, ResNet-18 weight-layer counts and MACs per exit point, from model.yaml."""

    def __init__(self, path):
        import yaml
        with open(path) as f:
            y = yaml.safe_load(f)
        self.path = path
        self.name = y.get("name", "?")
        self.layers = [layer["name"] for layer in y["layers"]]
        self.blocks = [layer["name"] for layer in y["layers"] if layer["kind"] == "block"]
        # weight layers up to and including each block (stem conv + 2 convs per block), as
        # `freeze eval` counts them; the full model adds the fc layer
        self.weight_layers = {b: 1 + 2 * (i + 1) for i, b in enumerate(self.blocks)}
        self.weight_layers["full"] = 2 + 2 * len(self.blocks)
        macs, total = {}, 0
        shape = {"input": y["input"]["shape"]}
        for layer in y["layers"]:
            src = shape.get(layer.get("input"), None)
            out = layer.get("shape", src)
            shape[layer["name"]] = out
            k = layer["kind"]
            if k == "conv":
                total += out[0] * out[1] * out[2] * src[0] * layer.get("kernel", 3) ** 2
            elif k == "block":
                c, h, w = out
                total += c * h * w * src[0] * 9 + c * h * w * c * 9
                if layer.get("stride", 1) != 1 or src[0] != c:
                    total += c * h * w * src[0]
            elif k == "fc":
                total += src[0] * layer["out_features"]
            if k == "block":
                macs[layer["name"]] = total
        macs["full"] = total
        self.macs = macs

    def exit_name(self, code):
        if code == fzgen.EXIT_FULL:
            return "full"
        if code in fzgen.EXIT_FRONT:
            return fzgen.EXIT_FRONT[code]
        return self.layers[code] if code < len(self.layers) else f"layer{code}"

    def exit_points(self):
        return list(fzgen.EXIT_FRONT.values()) + self.blocks + ["full"]


# ---- the appliance ----------------------------------------------------------------------------

class Appliance:
    """One `freeze` appliance process: started on a vdev, its summary parsed at exit, its CPU
    time sampled from /proc/PID/stat while it serves."""
    seq = 0

    def __init__(self, h, mode, vdev, exit_idle=None):
        Appliance.seq += 1
        cfg = h.app_config(mode)
        args = [h.freeze, "--lcores", LCORES, "--no-huge", "-m", "512", "--no-pci",
                "--file-prefix", f"fzperf{os.getpid()}_{Appliance.seq}", "--vdev", vdev,
                "--log-level=pmd.net.pcap:error", "--log-level=eal:error", "--",
                "--config", cfg]
        if mode == "off":
            args.append("--no-caches")
        if mode == "online":
            args.append("--online")
        if exit_idle is not None:
            args += ["--exit-idle", str(exit_idle)]
        self.lines = []
        self.t_serving = None
        self.cpu = []  # (monotonic, cpu seconds)
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True)
        self.serving = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.sampler = threading.Thread(target=self._sample, daemon=True)
        self.sampler.start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.append(line)
            if self.t_serving is None and "serving" in line:
                self.t_serving = time.monotonic()
                self.serving.set()
        self.serving.set()

    def _sample(self):
        tick = os.sysconf("SC_CLK_TCK")
        path = f"/proc/{self.p.pid}/stat"
        while self.p.poll() is None:
            try:
                with open(path) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                self.cpu.append((time.monotonic(), (int(fields[11]) + int(fields[12])) / tick))
            except (OSError, IndexError, ValueError):
                break
            time.sleep(0.02)

    def wait_serving(self, timeout=120):
        self.serving.wait(timeout)
        if self.t_serving is None:
            self.stop()
            raise RuntimeError("freeze did not start:\n" + "".join(self.lines[-30:]))

    def cpu_at(self, t):
        """Process CPU seconds at time t, interpolated between samples."""
        s = self.cpu
        if not s:
            return None
        if t <= s[0][0]:
            return s[0][1]
        for (ta, ca), (tb, cb) in zip(s, s[1:]):
            if ta <= t <= tb:
                return ca + (cb - ca) * (t - ta) / (tb - ta) if tb > ta else ca
        return s[-1][1]

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        return self.wait(60)

    def wait(self, timeout):
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self.reader.join(5)
        return self.summary()

    def summary(self):
        out = "".join(self.lines)
        s = {"rc": self.p.returncode, "output": out}
        for key in ("requests", "dropped", "cache hits"):
            m = re.search(r"^" + key + r"\s+(\d+)", out, re.M)
            s[key.replace(" ", "_")] = int(m.group(1)) if m else None
        m = re.search(r"^answered\s+(\d+) \(ok (\d+), error (\d+)\)", out, re.M)
        s["answered"], s["ok"], s["errors"] = (int(x) for x in m.groups()) if m else (None,) * 3
        m = re.search(r"^throughput\s+([\d.]+) answers/s over ([\d.]+) s", out, re.M)
        s["throughput"], s["window_s"] = (float(m.group(1)), float(m.group(2))) if m else (None, None)
        s["accounting_ok"] = bool(re.search(r"^accounting\s+ok", out, re.M))
        s["busy_s"] = sum(float(x) for x in re.findall(r"busy ([\d.]+) s", out))
        s["stages"] = re.findall(r"^  (\S+)\s+\S+\s+\.\.\S+\s+in\s+(\d+) answered\s+(\d+).*?"
                                 r"mean batch\s+([\d.]+)\s+busy ([\d.]+) s", out, re.M)
        return s


def responses(pcap, port=APP_PORT):
    """{request id: decoded response} of a response pcap (first answer per id)."""
    got = {}
    for _ts, fr in read_pcap(pcap):
        u = fzgen.parse_udp(fr)
        r = fzgen.decode_resp(u[4]) if u and u[1] == port else None
        if r is not None and r["id"] not in got:
            got[r["id"]] = r
    return got


# ---- the harness ------------------------------------------------------------------------------

class Harness:
    def __init__(self, a):
        self.a = a
        self.quick = a.quick
        self.build = os.path.abspath(a.build)
        self.freeze = os.path.join(self.build, "pipeline", "freeze")
        self.model_dir = os.path.abspath(a.model_dir)
        self.model_yaml = os.path.join(self.model_dir, "model.yaml")
        stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M%S")
        self.out = os.path.abspath(a.out or os.path.join(HERE, "results", stamp))
        self.work = os.path.join(a.work or os.path.join(self.out, "scratch"))
        os.makedirs(self.work, exist_ok=True)
        self.cache_dir = os.path.abspath(a.cache_dir)
        self._model_key = None
        self.small = ["--build", "1500", "--validation", "500"] if a.quick else []
        self.snap = {}
        self.model = None
        self.wl = {}  # workload -> {"images", "labels", "meta", "pcap", "sidecar", "labelled"}
        self.ref = {}  # workload -> [full-model label per request]
        self.rows = {k: [] for k in ("saturation", "load", "offline", "sweep", "peers", "drift")}
        self.exits = []  # rows: scenario, workload, mode, exit, count
        self.cdf = {}  # (workload, mode, rate) -> {"all": [...], "hit": [...]}
        self.notes = []
        self.profiles = {}

    # -- set-up --

    def do_build(self):
        if self.a.no_build:
            if not os.path.exists(self.freeze):
                sys.exit(f"run.py: {self.freeze} does not exist (drop --no-build)")
            return
        if not os.path.exists(os.path.join(self.build, "build.ninja")):
            log(f"meson setup {self.build}")
            sh(["meson", "setup", self.build], cwd=ROOT)
        log(f"ninja -C {self.build}")
        r = sh(["ninja", "-C", self.build], check=False)
        if r.returncode != 0:
            sys.exit("run.py: the build failed:\n" + r.stdout[-3000:] + r.stderr[-2000:])

    def pin_binary(self):
        """Run a private copy of freeze: a rebuild in the shared build folder in the middle of
        a run would otherwise mix two binaries in one set of results."""
        dst = os.path.join(self.work, "freeze")
        shutil.copy2(self.freeze, dst)
        self.freeze = dst

    def model_key(self):
        if self._model_key:
            return self._model_key
        h = hashlib.sha1()
        for f in ("model.yaml", "weights.safetensors"):
            with open(os.path.join(self.model_dir, f), "rb") as fh:
                h.update(fh.read())
        self._model_key = h.hexdigest()[:16]
        return self._model_key

    def find_config(self, kind):
        for name in CONFIGS[kind]:
            for d in (self.model_dir, os.path.join(HERE, "configs"),
                      os.path.join(ROOT, "config", "examples")):
                p = os.path.join(d, name)
                if os.path.exists(p):
                    return p
        sys.exit(f"run.py: no cache config for {kind} (looked for {CONFIGS[kind]})")

    def snap_path(self, cfg_text, tag):
        """Where the snapshot of cfg_text lives in the cache folder (keyed by model and config)."""
        key = hashlib.sha1((self.model_key() + cfg_text + " ".join(self.small)).encode())
        return os.path.join(self.cache_dir, key.hexdigest()[:12], f"{tag}.fzc")

    def calibrate_all(self, jobs):
        """Calibrate every (tag, config text) not yet in the cache folder, on the train split
        only, in one pass through the model (freeze calibrate takes several configs); returns
        {tag: snapshot}."""
        paths = {tag: self.snap_path(text, tag) for tag, text in jobs}
        missing = [(tag, text) for tag, text in jobs if not os.path.exists(paths[tag])]
        for i in range(0, len(missing), 32):  # freeze calibrate takes up to 32 configs
            chunk = missing[i:i + 32]
            log(f"calibrating {len(chunk)} snapshot(s) in one pass over the train split: "
                + ", ".join(t for t, _ in chunk))
            cmd = [self.freeze, "calibrate", "--model", self.model_yaml, "--threads", "2"] + self.small
            for tag, text in chunk:
                d = os.path.dirname(paths[tag])
                os.makedirs(d, exist_ok=True)
                cfg = os.path.join(d, f"{tag}.yaml")
                # learned caches' predictors: where the model folder keeps them
                text = re.sub(r"^heads:\s*([^/\s]\S*)",
                              lambda mm: f"heads: {os.path.join(self.model_dir, mm.group(1))}",
                              text, flags=re.M)
                with open(cfg, "w") as f:
                    f.write(text)
                cmd += ["--cache-config", cfg, "--out", paths[tag] + ".tmp"]
            t = time.monotonic()
            r = sh(cmd, check=False)
            if r.returncode != 0:
                sys.exit(f"run.py: calibrate failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
            for tag, _ in chunk:
                with open(paths[tag][:-4] + ".calibrate.txt", "w") as f:
                    f.write(r.stdout)
                os.replace(paths[tag] + ".tmp", paths[tag])
            log(f"  calibrated in {time.monotonic() - t:.0f} s")
        return paths

    def sweep_jobs(self):
        """(kind, threshold, tag, config text) of the threshold sweep."""
        kinds = [k for k in self.a.sweep_kinds.split(",") if k]
        budgets = [float(b) for b in self.a.budgets.split(",") if b]
        # the second and later kinds get every other budget (fewer configs in the pass)
        pts = [(k, b) for k in kinds for b in (budgets if k == kinds[0] else budgets[::2])]
        if not self.quick:
            pts += [(k, "zero-error") for k in kinds]
        jobs = []
        for kind, b in pts:
            with open(self.find_config(kind)) as f:
                text = f.read()
            if b == "zero-error":
                text = re.sub(r"threshold:\s*budget", "threshold: zero-error", text)
                tag = f"{kind}-zero-error"
            else:
                text = re.sub(r"^budget:.*$", f"budget: {b}", text, flags=re.M)
                tag = f"{kind}-budget{b}"
            jobs.append((kind, b, tag, text))
        return jobs

    def snapshots(self, modes, sweep):
        """Shipped snapshots where they exist; every other one (and the sweep's) calibrated."""
        jobs = []
        for kind in sorted({MODE_SNAPSHOT[base_mode(m)] for m in modes}):
            if not self.a.own_caches:
                for name in SHIPPED[kind]:
                    p = os.path.join(self.model_dir, name)
                    if os.path.exists(p):
                        self.snap[kind] = p
                        break
            if kind not in self.snap:
                with open(self.find_config(kind)) as f:
                    jobs.append((kind, f.read()))
        if sweep:
            jobs += [(tag, text) for _k, _b, tag, text in self.sweep_jobs()]
        self.sweep_snap = self.calibrate_all(jobs)
        for kind in sorted({MODE_SNAPSHOT[base_mode(m)] for m in modes}):
            if kind not in self.snap:
                self.snap[kind] = self.sweep_snap[kind]
            log(f"snapshot {kind}: {os.path.relpath(self.snap[kind], ROOT)}")

    def app_config(self, mode):
        path = os.path.join(self.work, f"appliance-{mode}.yaml")
        if not os.path.exists(path):
            with open(os.path.join(ROOT, "config", "examples", "appliance.yaml")) as f:
                text = f.read()
            text = re.sub(r"^model:.*$", f"model: {self.model_yaml}", text, flags=re.M)
            snap = self.snap[MODE_SNAPSHOT[base_mode(mode)]]
            text = re.sub(r"^cache:.*$", f"cache: {snap}\nstate_dir: {os.path.dirname(snap)}", text,
                          flags=re.M)
            if mode == "verify":  # the embedded default's own `verify:` line replaced
                text = re.sub(r"^verify:.*$", "", text, flags=re.M)
                text += (f"verify: {{sample: {self.a.verify_sample}, window: "
                         f"{self.a.verify_window}}}\n")
            if base_mode(mode) not in ("front", "verify"):  # the front tiers where asked for
                text = re.sub(r"^front:.*?(?=^\S)", "front: {enabled: false}\n", text,
                              flags=re.M | re.S)
            elif "@" in mode:
                text = re.sub(r"(^  near: \{.*radius: )[0-9.]+", r"\g<1>" + mode.split("@")[1],
                              text, flags=re.M)
            with open(path, "w") as f:
                f.write(text)
        return path

    def wl_params(self, w):
        a = self.a
        if w == "temporal":
            return {"scene_len": a.scene_len}
        if w == "zipf":
            return {"zipf_s": a.zipf_s, "zipf_items": a.zipf_items}
        return {}

    def load_workload(self, w, count):
        """The load sweep's stream: long enough that the fastest rate never wraps around (a
        wrapped temporal stream would replay scenes the online caches have seen). Same seed, so
        its first a.count requests are the saturation workload's."""
        if count <= self.a.count:
            return self.wl[w]
        prefix = os.path.join(self.work, f"load-{w}")
        if not os.path.exists(prefix + ".json"):
            log(f"workload {w} for the load sweep: {count} requests")
            workloads.make(w, prefix, count, self.a.seed, **self.wl_params(w))
        return {"images": prefix + "-images-idx3-ubyte", "labels": prefix + "-labels-idx1-ubyte"}

    def make_workloads(self, names):
        a = self.a
        for w in names:
            count = a.count
            params = self.wl_params(w)
            prefix = os.path.join(self.work, w)
            paths = workloads.make(w, prefix, count, a.seed, **params)
            pcap = prefix + ".pcap"
            with open(os.devnull, "w") as devnull:
                old, sys.stderr = sys.stderr, devnull
                try:
                    fzgen.main(["gen", "-o", pcap, "-n", str(count), "--images", paths["images"],
                                "--labels", paths["labels"]])
                finally:
                    sys.stderr = old
            with open(pcap + ".json") as f:
                side = json.load(f)
            self.wl[w] = dict(paths, pcap=pcap, count=count, labelled=w != "ood",
                              ids=[q["id"] for q in side["requests"]],
                              gt=[q["label"] for q in side["requests"]], params=params)
            log(f"workload {w}: {count} requests {params or ''}")

    # -- scenario: saturation --

    def replay(self, w, mode):
        wl = self.wl[w]
        resp = os.path.join(self.work, f"resp-{w}-{mode}.pcap")
        if os.path.exists(resp):
            os.unlink(resp)
        # --exit-idle counts time without frames, which includes time the pipeline holds RX
        # back while starved of CPU by other work: a generous idle time keeps runs whole
        app = Appliance(self, mode, f"net_pcap0,rx_pcap={wl['pcap']},tx_pcap={resp}",
                        exit_idle=1500)
        s = app.wait(600)
        if s["rc"] != 0 or s["throughput"] is None:
            raise RuntimeError(f"freeze {w}/{mode} failed (rc {s['rc']}):\n{s['output'][-3000:]}")
        t0 = app.t_serving
        cpu = None
        if t0 is not None and app.cpu:
            a, b = app.cpu_at(t0), app.cpu_at(t0 + s["window_s"])
            cpu = (b - a) if a is not None and b is not None else None
        got = responses(resp)
        os.unlink(resp)
        return s, cpu, got

    def saturation(self, modes):
        order = ["off"] + [m for m in modes if m != "off"]
        n = len(order) * len(self.wl) * self.a.repeat
        k = 0
        for w, wl in self.wl.items():
            for mode in order:
                tps, cpus, busy = [], [], []
                got = s = None
                for r in range(self.a.repeat):
                    k += 1
                    log(f"saturation [{k}/{n}] {w} / {mode} run {r + 1}/{self.a.repeat}")
                    s, cpu, g = self.replay(w, mode)
                    if len(g) < wl["count"]:  # the appliance left before answering everything
                        self.notes.append(f"saturation {w}/{mode} run {r + 1}: {len(g)} of "
                                          f"{wl['count']} answered; run again")
                        log(f"  only {len(g)} of {wl['count']} answered: running again")
                        s, cpu, g = self.replay(w, mode)
                    tps.append(s["throughput"])
                    if cpu is not None:
                        cpus.append(cpu / max(1, s["answered"]))
                    busy.append(s["busy_s"] / max(1, s["answered"]))
                    if got is None:
                        got = g
                res = [got.get(i) for i in wl["ids"]]
                labels = [r["label"] if r and r["status"] == 0 else None for r in res]
                if mode == "off":
                    self.ref[w] = labels
                ref = self.ref.get(w)
                hist = {}
                for r in res:
                    if r and r["status"] == 0:
                        e = self.model.exit_name(r["exit"])
                        hist[e] = hist.get(e, 0) + 1
                ok = sum(hist.values())
                # agreement over the requests both runs answered
                both = [(x, y) for x, y in zip(labels, ref or []) if x is not None and y is not None]
                agree = sum(1 for x, y in both if x == y) if ref else None
                correct = sum(1 for x, g in zip(labels, wl["gt"]) if x is not None and x == g)
                times = sorted(r["time_ns"] / 1e3 for r in res if r and r["status"] == 0)
                hit_times = sorted(r["time_ns"] / 1e3 for r in res
                                   if r and r["status"] == 0 and r["exit"] != fzgen.EXIT_FULL)
                eff_l = sum(c * self.model.weight_layers.get(e, 0) for e, c in hist.items()) / \
                    (ok * self.model.weight_layers["full"]) if ok else None
                eff_m = sum(c * self.model.macs.get(e, 0) for e, c in hist.items()) / \
                    (ok * self.model.macs["full"]) if ok else None
                row = {"workload": w, "mode": mode, "requests": wl["count"], "answered": ok,
                       "throughput_rps": statistics.median(tps),
                       "throughput_runs": ";".join(f"{t:.0f}" for t in tps),
                       "speedup_vs_off": None,
                       "hit_rate": 1 - hist.get("full", 0) / ok if ok else None,
                       "effective_layers": eff_l, "effective_macs": eff_m,
                       "agreement": agree / len(both) if both and agree is not None else None,
                       "accuracy": correct / ok if ok and wl["labelled"] else None,
                       "cpu_us_per_req": statistics.median(cpus) * 1e6 if cpus else None,
                       "busy_us_per_req": statistics.median(busy) * 1e6,
                       "inside_p50_us": pct(times, 50), "inside_p99_us": pct(times, 99),
                       "inside_hit_p50_us": pct(hit_times, 50),
                       # per stage: requests in, mean batch, busy seconds (last run)
                       "stages": " ".join(f"{st[0]}:{st[1]}/{float(st[3]):.1f}/{st[4]}s"
                                          for st in s["stages"]),
                       "accounting_ok": s["accounting_ok"]}
                base = next((q for q in self.rows["saturation"] if q["workload"] == w and
                             q["mode"] == "off"), None)
                if base:
                    row["speedup_vs_off"] = row["throughput_rps"] / base["throughput_rps"]
                self.rows["saturation"].append(row)
                for e in self.model.exit_points():
                    self.exits.append({"scenario": "saturation", "workload": w, "mode": mode,
                                       "exit": e, "count": hist.get(e, 0)})
                log(f"  {w}/{mode}: {row['throughput_rps']:.0f} answers/s "
                    f"({(row['speedup_vs_off'] or 1):.2f}x off), hits {100 * (row['hit_rate'] or 0):.1f}%, "
                    f"agreement {100 * (row['agreement'] or 0):.2f}%")

    # -- scenario: profile --

    def profile(self):
        """`perf record` one saturation run per --profile case; the report keeps where the
        CPU time went, by shared object and by symbol."""
        if not shutil.which("perf"):
            self.notes.append("profile skipped: no `perf` (Debian linux-perf)")
            return
        for case in self.a.profile.split(","):
            w, _, mode = case.partition("/")
            if w not in self.wl or mode not in MODES:
                self.notes.append(f"profile {case}: not a workload/mode of this run")
                continue
            log(f"profile {w} / {mode} under perf record")
            data = os.path.join(self.work, "perf.data")
            resp = os.path.join(self.work, "resp-profile.pcap")
            app = Appliance(self, mode, f"net_pcap0,rx_pcap={self.wl[w]['pcap']},tx_pcap={resp}",
                            exit_idle=300)
            app.wait_serving()
            # attach once it serves: start-up (pools, primitives) stays out of the profile
            rec = subprocess.Popen(["perf", "record", "-F", "1999", "-g", "-q", "-o", data, "-p",
                                    str(app.p.pid)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
            s = app.wait(600)
            try:
                rec.wait(30)
            except subprocess.TimeoutExpired:
                rec.send_signal(signal.SIGINT)
                rec.wait(30)
            if s["rc"] != 0 or not os.path.exists(data):
                self.notes.append(f"profile {case}: freeze under perf exited {s['rc']}")
                continue
            text = []
            for sort, n in (("dso", 12), ("dso,sym", 30)):
                r = sh(["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", sort,
                        "--percent-limit", "0.5"], check=False)
                lines = [ln for ln in r.stdout.splitlines() if ln.strip() and
                         not ln.lstrip().startswith("#") and "%" in ln and "--" not in ln]
                text.append(f"## {w} / {mode}: CPU samples by {sort}\n")
                text.extend(lines[:n])
                text.append("")
            self.profiles[case] = {"text": "\n".join(text), "throughput": s["throughput"]}
            with open(os.path.join(self.out, f"profile-{w}-{mode}.txt"), "w") as f:
                f.write("\n".join(text) + "\n")

    # -- scenario: load (live veth) --

    def veth_up(self):
        tag = f"{os.getpid() % 100000}"
        self.ns, self.dev, self.peer = f"fzperf{tag}", f"fzp{tag}a", f"fzp{tag}b"
        if os.geteuid() != 0:
            return "needs root for network namespaces"
        if sh(["ip", "netns", "add", self.ns], check=False).returncode != 0:
            return "cannot create a network namespace"
        cmds = [["ip", "link", "add", self.dev, "type", "veth", "peer", "name", self.peer],
                ["ip", "link", "set", self.peer, "netns", self.ns],
                ["sysctl", "-qw", f"net.ipv6.conf.{self.dev}.disable_ipv6=1"],
                ["ip", "link", "set", self.dev, "up"],
                ["ip", "netns", "exec", self.ns, "ethtool", "-K", self.peer, "tx", "off"],
                ["ip", "netns", "exec", self.ns, "ip", "addr", "add", CLIENT_IP + "/24", "dev",
                 self.peer],
                ["ip", "netns", "exec", self.ns, "ip", "link", "set", self.peer, "up"],
                ["ip", "netns", "exec", self.ns, "ip", "link", "set", "lo", "up"]]
        for c in cmds:
            r = sh(c, check=False)
            if r.returncode != 0 and "sysctl" not in c and "ethtool" not in c:
                self.veth_down()
                return f"{' '.join(c)}: {r.stderr.strip()}"
        return None

    def veth_down(self):
        sh(["ip", "link", "del", self.dev], check=False)
        sh(["ip", "netns", "del", self.ns], check=False)

    def load(self, modes, wls):
        why = self.veth_up()
        if why:
            self.notes.append(f"load scenario skipped: {why}")
            log(f"load: skipped ({why})")
            return
        try:
            self._load(modes, wls)
        finally:
            self.veth_down()

    # -- scenario: drift (live veth) --

    def drift(self):
        why = self.veth_up()
        if why:
            self.notes.append(f"drift scenario skipped: {why}")
            log(f"drift: skipped ({why})")
            return
        try:
            self._drift()
        finally:
            self.veth_down()

    def _drift(self):
        import numpy as np
        a = self.a
        img, lab = workloads._test_set()
        rng = np.random.default_rng(a.seed)
        n0, n1 = a.drift_before, a.drift_after
        i0 = rng.permutation(len(img))[:n0]
        i1 = rng.permutation(len(img))[:n1] if n1 <= len(img) else rng.integers(0, len(img), n1)
        shifted = np.clip((img[i1].astype(np.float32) - 128) * 2 + 128, 0, 255).astype(np.uint8)
        prefix = os.path.join(self.work, "drift")
        workloads.write_idx(prefix + "-images-idx3-ubyte", np.concatenate([img[i0], shifted]))
        workloads.write_idx(prefix + "-labels-idx1-ubyte", np.concatenate([lab[i0], lab[i1]]))
        wl = {"images": prefix + "-images-idx3-ubyte", "labels": prefix + "-labels-idx1-ubyte"}
        n = n0 + n1
        got, guard = {}, {}
        for mode in ("off", "front", "verify"):
            log(f"drift: {mode}, {n} requests at {a.drift_rate:.0f} req/s "
                f"({n0} test images, then {n1} contrast-stretched)")
            app = Appliance(self, mode, f"net_af_packet0,iface={self.dev}")
            try:
                app.wait_serving()
                sh(["ip", "netns", "exec", self.ns, "ping", "-c", "1", "-W", "2", APP_IP],
                   check=False)
                out = os.path.join(self.work, "drift.json")
                r = sh(["ip", "netns", "exec", self.ns, PY, os.path.join(HERE, "loadgen.py"),
                        "--host", APP_IP, "--images", wl["images"], "--labels", wl["labels"],
                        "--rate", str(a.drift_rate), "--duration", str(n / a.drift_rate),
                        "--warmup", "0", "--out", out], check=False)
                if r.returncode != 0:
                    raise RuntimeError(f"loadgen failed: {r.stderr[-2000:]}")
                with open(out) as f:
                    got[mode] = {x[0]: (x[4], x[3]) for x in json.load(f)["answers"]}
            finally:
                s = app.stop()
            guard[mode] = re.findall(r"verify: (\S+): (tighten|relax|off|on), threshold", s["output"])
            log(f"  {len(got[mode])} of {n} answered; guard changes: {len(guard[mode])}")
        ref = got["off"]
        win = a.drift_window
        rows, recovered = [], None
        for mode in ("front", "verify"):
            agree = [None] * n
            for k in range(n):
                if k in got[mode] and k in ref:
                    agree[k] = got[mode][k][0] == ref[k][0]
            last_bad = None
            for k in range(win, n + 1, max(1, win // 10)):
                w = [x for x in agree[k - win:k] if x is not None]
                if not w:
                    continue
                ag = sum(w) / len(w)
                ex = sum(1 for j in range(k - win, k) if j in got[mode] and
                         got[mode][j][1] != fzgen.EXIT_FULL) / win
                rows.append({"mode": mode, "request": k, "agreement": ag, "early_share": ex,
                             "window": win})
                if mode == "verify" and k > n0 and ag < 0.995:
                    last_bad = k
            if mode == "verify":
                recovered = (last_bad - n0) if last_bad is not None else 0
        self.rows["drift"] = rows
        self.drift_info = {"switch_at": n0, "requests": n, "rate": a.drift_rate, "window": win,
                           "recovered_after": recovered,
                           "guard_changes": {m: len(g) for m, g in guard.items()},
                           "guard_log": guard.get("verify", [])[:20]}
        log(f"drift: verify back at >= 99.5 % agreement (window {win}) for good "
            f"{recovered} requests after the switch")

    def rates(self):
        if self.a.rates:
            return [float(x) for x in self.a.rates.split(",")]
        base = next((q["throughput_rps"] for q in self.rows["saturation"]
                     if q["mode"] == "off" and q["workload"] == "iid"), None)
        base = base or (600.0 if self.quick else 2000.0)
        fr = [float(x) for x in self.a.rate_fractions.split(",")]
        return [round(min(self.a.max_rate, f * base), -1) or 10.0 for f in fr]

    def _load(self, modes, wls):
        rates = sorted(set(self.rates()))
        order = ["off"] + [m for m in modes if m != "off"]
        n = len(order) * len(wls) * len(rates)
        k = 0
        warm = 0.2 if self.quick else 0.5
        for w in wls:
            wl = self.load_workload(w, min(60000, int(max(rates) * (self.a.load_seconds + warm)) + 1))
            for mode in order:
                # online caches learn from what they see: a fresh appliance for every rate, so
                # one rate's requests never warm the next one's caches
                groups = [[r] for r in rates] if mode == "online" else [rates]
                for group in groups:
                    k = self._load_group(w, wl, mode, group, k, n)

    def _load_group(self, w, wl, mode, rates, k, n):
        app = Appliance(self, mode, f"net_af_packet0,iface={self.dev}")
        try:
            app.wait_serving()
            sh(["ip", "netns", "exec", self.ns, "ping", "-c", "1", "-W", "2", APP_IP],
               check=False)
            for rate in rates:
                k += 1
                log(f"load [{k}/{n}] {w} / {mode} at {rate:.0f} req/s")
                out = os.path.join(self.work, "load.json")
                c0 = app.cpu_at(time.monotonic())
                t_start = time.monotonic()
                r = sh(["ip", "netns", "exec", self.ns, PY, os.path.join(HERE, "loadgen.py"),
                        "--host", APP_IP, "--images", wl["images"], "--labels",
                        wl["labels"], "--rate", str(rate), "--duration",
                        str(self.a.load_seconds), "--warmup",
                        str(0.2 if self.quick else 0.5), "--out", out], check=False)
                if r.returncode != 0:
                    raise RuntimeError(f"loadgen failed: {r.stderr[-2000:]}")
                c1 = app.cpu_at(time.monotonic())
                with open(out) as f:
                    res = json.load(f)
                self.load_row(w, mode, rate, res, (c1 - c0) if c0 is not None and
                              c1 is not None else None, time.monotonic() - t_start)
        finally:
            s = app.stop()
            if not s["accounting_ok"]:
                self.notes.append(f"load {w}/{mode}: appliance accounting not ok")
        return k

    def load_row(self, w, mode, rate, res, cpu, wall):
        ans = res["answers"]
        lat = sorted(x[1] for x in ans)
        inside = sorted(x[2] for x in ans)
        hits = sorted(x[1] for x in ans if x[3] != fzgen.EXIT_FULL)
        full = sorted(x[1] for x in ans if x[3] == fzgen.EXIT_FULL)
        # agreement on the requests the caches-off saturation run answered (the first a.count)
        ref = self.ref.get(w) or []
        judged = [x for x in ans if x[0] < len(ref) and ref[x[0]] is not None]
        agree = sum(1 for x in judged if x[4] == ref[x[0]])
        row = {"workload": w, "mode": mode, "offered_rps": rate, "sent": res["sent"],
               "answered_rps": res["throughput_rps"], "lost": res["lost"],
               "sender_max_behind_ms": res["max_behind_ms"],
               "p50_us": pct(lat, 50), "p90_us": pct(lat, 90), "p99_us": pct(lat, 99),
               "inside_p50_us": pct(inside, 50), "inside_p99_us": pct(inside, 99),
               "hit_rate": len(hits) / len(ans) if ans else None,
               "hit_p50_us": pct(hits, 50), "miss_p50_us": pct(full, 50),
               "agreement": agree / len(judged) if judged else None,
               "accuracy": res["accuracy"],
               # appliance CPU from the first warm-up request to the last answer, per request sent
               "cpu_us_per_req": cpu / res["sent_total"] * 1e6 if cpu and res["sent_total"] else None}
        self.rows["load"].append(row)
        q = [i / 100 for i in range(101)]
        self.cdf[(w, mode, rate)] = {"all": [pct(lat, 100 * x) for x in q] if lat else [],
                                     "hit": [pct(hits, 100 * x) for x in q] if hits else []}
        log(f"  answered {row['answered_rps']} req/s, lost {row['lost']}, p50 {row['p50_us']} us, "
            f"p99 {row['p99_us']} us, hits {100 * (row['hit_rate'] or 0):.0f}%")

    # -- scenario: offline (freeze eval) --

    def eval(self, snap, wl, online=False, oracle=False):
        cmd = [self.freeze, "eval", "--model", self.model_yaml, "--cache", snap, "--images",
               wl["images"], "--labels", wl["labels"], "--threads", "2", "--json"]
        if online:
            cmd.append("--online")
        if oracle:
            cmd.append("--oracle")
        r = sh(cmd, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"freeze eval failed: {r.stderr[-2000:]}")
        return json.loads(r.stdout)

    def offline(self, modes):
        wls = list(self.wl)[:1] if self.quick else list(self.wl)
        jobs = [(w, m) for w in wls for m in modes if m != "off"]
        for k, (w, mode) in enumerate(jobs):
            log(f"offline [{k + 1}/{len(jobs)}] freeze eval {w} / {mode}")
            e = self.eval(self.snap[MODE_SNAPSHOT[base_mode(mode)]], self.wl[w],
                          online=mode == "online")
            lk, ly = e.get("lookup_ns_total"), e.get("layer_ns_total")
            self.rows["offline"].append({
                "workload": w, "mode": mode, "requests": e["requests"],
                "hit_rate": 1 - e["exit_histogram"].get("full", 0) / e["requests"],
                "exit_by_mid": e["exit_by_mid"], "effective_layers": e["effective_layers"],
                "effective_macs": e["effective_macs"], "agreement": e["agreement"],
                "accuracy": e["accuracy"] if self.wl[w]["labelled"] else None,
                "full_model_accuracy": e["full_model_accuracy"] if self.wl[w]["labelled"] else None,
                "cache_bytes": e["cache_bytes"], "lookup_ns_total": lk, "layer_ns_total": ly,
                "images_per_s_full": e.get("images_per_s_full"),
                "images_per_s_cascade": e.get("images_per_s_cascade"),
                "online_inserts": e.get("online_inserts")})

    # -- scenario: sweep --

    def sweep(self):
        w = "iid" if "iid" in self.wl else next(iter(self.wl))
        wl = self.wl[w]
        jobs = self.sweep_jobs()
        for n, (kind, b, tag, _text) in enumerate(jobs):
            log(f"sweep [{n + 1}/{len(jobs)}] freeze eval {w} with {tag}")
            e = self.eval(self.sweep_snap[tag], wl)
            self.rows["sweep"].append(self.sweep_row(w, kind, b, e))
        if jobs:
            kind = jobs[0][0]
            e = self.eval(self.snap.get(kind) or self.sweep_snap[jobs[0][2]], wl, oracle=True)
            self.rows["sweep"].append(self.sweep_row(w, kind, "oracle", e))

    def sweep_row(self, w, kind, b, e):
        return {"workload": w, "kind": kind, "threshold": b,
                "hit_rate": 1 - e["exit_histogram"].get("full", 0) / e["requests"],
                "exit_by_mid": e["exit_by_mid"], "effective_layers": e["effective_layers"],
                "effective_macs": e["effective_macs"], "agreement": e["agreement"],
                "accuracy": e["accuracy"], "full_model_accuracy": e["full_model_accuracy"]}

    # -- scenario: peers --

    def peers(self):
        out = os.path.join(self.work, "peers.csv")
        cmd = [PY, os.path.join(HERE, "bench_infer.py"), "--freeze", self.freeze, "--model-dir",
               self.model_dir, "--batches", "1,32", "--out", out]
        cmd += ["--repeat", "1", "--limit", "128"] if self.quick else \
            ["--repeat", str(self.a.repeat), "--limit", str(self.a.peer_limit)]
        log("peers: perf/bench_infer.py " + " ".join(cmd[2:]))
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for line in p.stderr:
            log("  " + line.rstrip())
        p.wait()
        if p.returncode != 0 or not os.path.exists(out):
            self.notes.append("peers: bench_infer.py failed (is python3-torch installed?)")
            return
        with open(out) as f:
            for r in csv.DictReader(f):
                self.rows["peers"].append(r)

    # -- outputs --

    def write_csv(self, name, rows):
        if not rows:
            return
        cols = list(rows[0].keys())
        with open(os.path.join(self.out, name), "w", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=cols)
            wr.writeheader()
            for r in rows:
                wr.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})

    def write_all(self):
        for k, rows in self.rows.items():
            self.write_csv(f"{k}.csv", rows)
        self.write_csv("exits.csv", self.exits)
        cdf_rows = []
        for (w, m, rate), d in self.cdf.items():
            for kind, vals in d.items():
                for i, v in enumerate(vals):
                    cdf_rows.append({"workload": w, "mode": m, "offered_rps": rate,
                                     "requests": kind, "quantile": i / 100, "latency_us": v})
        self.write_csv("latency_cdf.csv", cdf_rows)
        if getattr(self, "drift_info", None):
            with open(os.path.join(self.out, "drift.json"), "w") as f:
                json.dump(self.drift_info, f, indent=1)
        import report
        report.write(self)
        if not self.a.keep_work:
            shutil.rmtree(self.work, ignore_errors=True)


def env_info(h):
    info = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "host": platform.node(), "cpus": os.cpu_count(),
            "load_avg_at_start": os.getloadavg()}
    try:
        info["commit"] = sh(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]).stdout.strip()
        info["dirty"] = bool(sh(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"]).stdout.strip())
    except (subprocess.CalledProcessError, OSError):
        pass
    with open("/proc/cpuinfo") as f:
        m = re.search(r"model name\s*:\s*(.*)", f.read())
        info["cpu"] = m.group(1) if m else "?"
    return info


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CI smoke: tiny counts, under a minute")
    ap.add_argument("--scenarios", default="all", help=f"comma list of {','.join(SCENARIOS)} or "
                    "all (quick: all but peers and profile)")
    ap.add_argument("--modes", help=f"comma list of {','.join(MODES)} (default: all; quick: "
                    "off,online)")
    ap.add_argument("--workloads", default=",".join(workloads.KINDS), help="comma list of "
                    f"{','.join(workloads.KINDS)}")
    ap.add_argument("--load-workloads", default="iid,temporal", help="workloads of the load sweep")
    ap.add_argument("--load-modes", help="modes of the load sweep (default: off,learned,online; "
                    "quick: off,online)")
    ap.add_argument("-n", "--count", type=int, help="requests per workload (default 10000; quick 150)")
    ap.add_argument("--scene-len", type=int, default=32, help="temporal: frames per scene")
    ap.add_argument("--zipf-s", type=float, default=1.0, help="zipf: skew exponent")
    ap.add_argument("--zipf-items", type=int, default=1000, help="zipf: distinct images")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, help="saturation runs per point, median (default 3; quick 1)")
    ap.add_argument("--rates", help="offered loads, req/s (default: fractions of caches-off "
                    "saturation throughput)")
    ap.add_argument("--rate-fractions", help="offered loads as fractions of the caches-off iid "
                    "saturation throughput (default 0.1,0.25,0.5,0.75,1,1.5,2.5,4,6; quick 0.25,1.5)")
    ap.add_argument("--max-rate", type=float, default=20000, help="cap on offered load")
    ap.add_argument("--load-seconds", type=float, help="measured seconds per rate (default 3; quick 1)")
    ap.add_argument("--budgets", help="sweep: calibration budgets (default "
                    "0.0005,0.001,0.002,0.004,0.008,0.016,0.032; quick 0.004)")
    ap.add_argument("--sweep-kinds", help="sweep: cache kinds (default learned,kmeans; quick learned); "
                    "the second and later kinds get every other budget")
    ap.add_argument("--profile", default="iid/learned,temporal/online",
                    help="profile scenario: WORKLOAD/MODE cases run under `perf record`")
    ap.add_argument("--peer-limit", type=int, default=3000, help="peers: images per run")
    ap.add_argument("--drift-rate", type=float, default=1500, help="drift: offered req/s")
    ap.add_argument("--drift-before", type=int, default=8000, help="drift: test images first")
    ap.add_argument("--drift-after", type=int, default=16000, help="drift: shifted ones after")
    ap.add_argument("--drift-window", type=int, default=1000, help="drift: agreement window")
    ap.add_argument("--verify-sample", type=float, default=0.25,
                    help="verify mode: share of early answers checked")
    ap.add_argument("--verify-window", type=int, default=1500, help="verify mode: samples kept per point")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"), help="meson build dir")
    ap.add_argument("--no-build", action="store_true", help="use the existing build as it is")
    ap.add_argument("--model-dir", default=os.path.join(ROOT, "models", "resnet18-w16-fmnist"))
    ap.add_argument("--own-caches", action="store_true",
                    help="calibrate every snapshot here instead of using the shipped ones")
    ap.add_argument("--cache-dir", default=os.path.join(HERE, ".cache"),
                    help="where calibrated snapshots are kept between runs")
    ap.add_argument("--out", help="results folder (default perf/results/DATE-TIME)")
    ap.add_argument("--work", help="scratch folder for pcaps and idx files (default OUT/scratch)")
    ap.add_argument("--keep-work", action="store_true", help="keep the scratch folder")
    a = ap.parse_args(argv)
    q = a.quick
    a.count = a.count or (150 if q else 10000)
    a.repeat = a.repeat or (1 if q else 3)
    a.load_seconds = a.load_seconds or (1.0 if q else 3.0)
    a.rate_fractions = a.rate_fractions or ("0.25,1.5" if q else "0.1,0.25,0.5,0.75,1,1.5,2.5,4,6")
    a.budgets = a.budgets if a.budgets is not None else \
        ("0.004" if q else "0.0005,0.001,0.002,0.004,0.008,0.016,0.032")
    a.sweep_kinds = a.sweep_kinds if a.sweep_kinds is not None else ("learned" if q else "learned,kmeans")
    a.modes = (a.modes or ("off,online" if q else ",".join(MODES))).split(",")
    a.load_modes = (a.load_modes or ("off,online" if q else "off,learned,online")).split(",")
    if a.scenarios == "all":  # quick leaves out the peers: PyTorch's start-up alone takes ~10 s
        a.scenarios = [s for s in SCENARIOS if not (q and s in ("peers", "profile"))]
    else:
        a.scenarios = a.scenarios.split(",")
    a.workloads = a.workloads.split(",")
    a.load_workloads = [w for w in a.load_workloads.split(",") if w in a.workloads]
    if q and a.load_workloads == ["iid", "temporal"]:
        a.load_workloads = ["temporal"]
    for m in a.modes + a.load_modes:
        if base_mode(m) not in MODES or (m != base_mode(m) and (base_mode(m) != "front" or
                                                               not re.fullmatch(r"[0-9.]+", m[6:]))):
            ap.error(f"unknown mode {m!r}; modes: {', '.join(MODES)}")
    for s in a.scenarios:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s!r}; scenarios: {', '.join(SCENARIOS)}")
    for w in a.workloads:
        if w not in workloads.KINDS:
            ap.error(f"unknown workload {w!r}; workloads: {', '.join(workloads.KINDS)}")
    return a


def main(argv=None):
    a = parse_args(argv)
    for f in ("model.yaml", "weights.safetensors"):
        if not os.path.exists(os.path.join(a.model_dir, f)):
            print(f"SKIP: no model in {a.model_dir} ({f} missing); train it with tools/train.py",
                  file=sys.stderr)
            return 77
    h = Harness(a)
    h.env = env_info(h)
    h.env["argv"] = " ".join(sys.argv[1:])
    log(f"results -> {h.out}")
    h.do_build()
    h.pin_binary()
    h.model = Model(h.model_yaml)
    modes = list(dict.fromkeys(["off"] + a.modes + (a.load_modes if "load" in a.scenarios else [])))
    need = [m for m in modes if m != "off"] or ["learned"]
    if "sweep" in a.scenarios:
        need += [k for k in a.sweep_kinds.split(",") if k]
    h.snapshots(need, "sweep" in a.scenarios)
    h.make_workloads(a.workloads)
    h.timing = {}
    steps = [("saturation", lambda: h.saturation(a.modes)),
             ("profile", h.profile),
             ("load", lambda: h.load(a.load_modes, a.load_workloads)),
             ("offline", lambda: h.offline(a.modes)),
             ("sweep", h.sweep),
             ("peers", h.peers),
             ("drift", h.drift)]
    if "load" in a.scenarios and "saturation" not in a.scenarios:
        h.notes.append("no saturation run: the load sweep has no caches-off reference labels")
    for name, fn in steps:
        if name in a.scenarios:
            t = time.monotonic()
            log(f"== {name}")
            fn()
            h.timing[name] = round(time.monotonic() - t, 1)
    h.write_all()
    log(f"done: {os.path.join(h.out, 'report.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
