"""Helpers of the appliance integration tests: run the real freeze binary on pcap ports."""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

SRC = os.environ.get("FZ_SRCDIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BUILD = os.environ.get("FZ_BUILDDIR", os.path.join(SRC, "build"))
FREEZE = os.path.join(BUILD, "pipeline", "freeze")
MODEL_DIR = os.path.join(SRC, "models", "resnet18-w16-fmnist")
sys.path.insert(0, os.path.join(SRC, "tools"))
import fzgen  # noqa: E402
from pcap_io import read_pcap  # noqa: E402

LCORES = "0@0,1@1,(2-9)@(0,1)"  # more lcores than cores: stages idle by yielding
_prefix = [0]


def skip(why):
    print(f"SKIP: {why}")
    sys.exit(77)


def need_model():
    for f in ("model.yaml", "weights.safetensors"):
        if not os.path.exists(os.path.join(MODEL_DIR, f)):
            skip(f"no shipped model ({f})")


def eal_args(vdev):
    _prefix[0] += 1
    return ["--lcores", LCORES, "--no-huge", "-m", "512", "--no-pci",
            "--file-prefix", f"fzt{os.getpid()}_{_prefix[0]}", "--vdev", vdev,
            "--log-level=pmd.net.pcap:error", "--log-level=eal:error"]


def run(vdev, app_args, timeout=600, check=True):
    """Run freeze to completion; returns (returncode, stdout+stderr)."""
    p = subprocess.run([FREEZE] + eal_args(vdev) + ["--"] + app_args, capture_output=True,
                       text=True, timeout=timeout)
    out = p.stdout + p.stderr
    if check and p.returncode != 0:
        print(out)
        raise AssertionError(f"freeze exited {p.returncode}")
    return p.returncode, out


def gen(out_dir, name, *args):
    """tools/fzgen.py gen into out_dir/name.pcap; returns (pcap, sidecar dict)."""
    pcap = os.path.join(out_dir, name + ".pcap")
    subprocess.run([sys.executable, os.path.join(SRC, "tools", "fzgen.py"), "gen", "-o", pcap,
                    *args], check=True, capture_output=True)
    with open(pcap + ".json") as f:
        return pcap, json.load(f)


def answers(resp_pcap, meta):
    """Response frames by request id: {id: [decoded response, ...]} (a list, to see repeats)."""
    port = meta["appliance"]["port"]
    got = {}
    for _ts, fr in read_pcap(resp_pcap):
        u = fzgen.parse_udp(fr)
        r = fzgen.decode_resp(u[4]) if u and u[1] == port else None
        if r is not None:
            got.setdefault(r["id"], []).append(r)
    return got


def counters(out):
    """The summary's drop lines: {reason: count}."""
    c = {}
    for m in re.finditer(r"^\s+(?:frame|request) drop (\S+)\s+(\d+)$", out, re.M):
        c[m.group(1)] = c.get(m.group(1), 0) + int(m.group(2))
    return c


def summary_value(out, key):
    m = re.search(r"^" + re.escape(key) + r"\s+(\d+)", out, re.M)
    return int(m.group(1)) if m else None


def pool_batches(out):
    """The batch pools the summary's pools line lists: {"s1>s2": (free, count), ...}."""
    m = re.search(r"^pools at exit\s+.*, batches (.*) free$", out, re.M)
    res = {}
    for b in m.group(1).split(", ") if m else []:
        bm = re.match(r"(\S+>\S+) (\d+)/(\d+)$", b)
        if bm:
            res[bm.group(1)] = (int(bm.group(2)), int(bm.group(3)))
    return res


def pools_at_exit(out):
    """The summary's pools line: (every pool full again, the line). The pools are mbufs,
    requests and, between each two stages, batches ("batches s1>s2 32/32, s2>s3 32/32 free")."""
    m = re.search(r"^pools at exit\s+(mbufs (\d+)/(\d+) free, requests (\d+)/(\d+) free.*)$",
                  out, re.M)
    if not m:
        return False, "no pool line"
    full = m.group(2) == m.group(3) and m.group(4) == m.group(5)
    full = full and all(free == n > 0 for free, n in pool_batches(out).values())
    return full, m.group(1)


def fault_injection():
    """Does this freeze obey the test-only fault hooks (meson -Dfault_injection=true)? Its
    --help names them only then."""
    p = subprocess.run([FREEZE, "--help"], capture_output=True, text=True)
    return "FZ_FAULT_STALL" in p.stdout


def tmpdir():
    return tempfile.mkdtemp(prefix="fz-test-")


class Appliance:
    """A running freeze: started on `vdev` with app args, ready once it says it is serving."""

    def __init__(self, vdev, app_args, env=None, timeout=120):
        self.p = subprocess.Popen([FREEZE] + eal_args(vdev) + ["--"] + app_args, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = []
        self.started = False
        t0 = time.time()
        while time.time() - t0 < timeout:
            line = self.p.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if "serving" in line:
                self.started = True
                break

    def send(self, sig):
        self.p.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=120):
        """Send sig, wait for the exit; returns (returncode, all output)."""
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            out, _ = self.p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            out, _ = self.p.communicate()
        return self.p.returncode, "".join(self.lines) + out


def shipped_front():
    """The embedded default's `front:` section (config/examples/appliance.yaml) as written, for
    tests that run the front tiers as they ship."""
    with open(os.path.join(SRC, "config", "examples", "appliance.yaml")) as f:
        m = re.search(r"^front:\n(?:[ #].*\n|\n)+", f.read(), re.M)
    return m.group(0)


def front_followers(out):
    """The summary's front account: (it adds up with no follower left waiting, the coalescing
    followers, the two lines as printed)."""
    m = re.search(r"^front tiers\s+requests (\d+) = exact (\d+) \+ flow (\d+) \+ near (\d+) \+ "
                  r"coalesced (\d+) \+ ran (\d+)$", out, re.M)
    c = re.search(r"^  coalesced\s+(\d+) \(\d+ exact repeats\) = answered by the request waited "
                  r"for (\d+) \+ led again \(its answer not sure enough\) (\d+) \+ ran (\d+) \+ ran "
                  r"\(waited \d+ us\) (\d+) \+ waiting (\d+)", out, re.M)
    if not m or not c:
        return False, 0, "no front account in the summary"
    n = [int(x) for x in m.groups()]
    f = [int(x) for x in c.groups()]
    ok = n[0] == sum(n[1:]) and f[0] == n[4] and f[0] == sum(f[1:]) and f[5] == 0
    return ok, f[0], m.group(0).split(None, 2)[2] + "; " + c.group(0).strip()


def gen_pairs(out_dir, name, n, *args, seed=None):
    """tools/fzgen.py gen of `n` requests whose test images (from 2000 on) come in pairs, one
    image sent twice in a row: the second arrives while the first is in flight and waits for
    it (a coalescing follower). With `seed`, the pairs come in a shuffled order. Returns
    (pcap, sidecar dict)."""
    import random
    img = [2000 + i % 8000 for i in range((n + 1) // 2)]
    if seed is not None:
        random.Random(seed).shuffle(img)
    return gen_images(out_dir, name, [img[i // 2] for i in range(n)], *args)


def gen_images(out_dir, name, idx, *args):
    """tools/fzgen.py gen of one request per entry of `idx`, test image idx[i] (and its label)
    for request i, in that order. Returns (pcap, sidecar dict)."""
    data = os.environ.get("FZ_FMNIST_DIR", "/usr/share/datasets/fashion-mnist")
    dims, raw = fzgen.read_idx(os.path.join(data, "t10k-images-idx3-ubyte.gz"))
    _, lraw = fzgen.read_idx(os.path.join(data, "t10k-labels-idx1-ubyte.gz"))
    sz = dims[1] * dims[2]
    n = len(idx)
    import struct
    paths = []
    for kind, magic, shape, body in (
            ("images", 0x803, [n, dims[1], dims[2]], b"".join(raw[i * sz:(i + 1) * sz] for i in idx)),
            ("labels", 0x801, [n], bytes(lraw[i] for i in idx))):
        paths.append(os.path.join(out_dir, f"{name}-{kind}.idx"))
        with open(paths[-1], "wb") as f:
            f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", x) for x in shape) + body)
    return gen(out_dir, name, "-n", str(n), "--images", paths[0], "--labels", paths[1], *args)
