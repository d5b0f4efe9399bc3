#!/usr/bin/python3
"""What self-checking costs: saturated pcap replays of i.i.d. test images through the embedded
default configuration with `verify:` at each sample rate (0 = off), interleaved, medians of
--repeat runs. Throughput is the appliance's own figure (first frame to last answer); CPU is the
process's utime + stime from "serving" to exit, per answer. Every run holds
/tmp/freeze-bench.lock (flock) so no two benchmarks share the CPUs.

  perf/verify_cost.py [--build DIR] [-n 10000] [--rates 0,0.02,0.05] [--repeat 3] [--out DIR]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LCORES = "0@0,1@1,(2-5)@(0,1)"  # perf/run.py's: 6 lcores on 2 CPUs


def config(d, rate):
    with open(os.path.join(ROOT, "config", "examples", "appliance.yaml")) as f:
        text = f.read().replace("../../models", os.path.join(ROOT, "models"))
    text = re.sub(r"^verify:.*$", "", text, flags=re.M)
    path = os.path.join(d, f"verify-{rate}.yaml")
    with open(path, "w") as f:
        f.write(text + f"verify: {{sample: {rate}}}\n")
    return path


def run(freeze, d, pcap, rate, seq):
    resp = os.path.join(d, "resp.pcap")
    args = ["flock", "/tmp/freeze-bench.lock", freeze, "--lcores", LCORES, "--no-huge", "-m",
            "512", "--no-pci", "--file-prefix", f"fzvc{os.getpid()}_{seq}", "--vdev",
            f"net_pcap0,rx_pcap={pcap},tx_pcap={resp}", "--log-level=pmd.net.pcap:error",
            "--log-level=eal:error", "--", "--config", config(d, rate), "--exit-idle", "1500"]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, cpu = [], {}
    tick = os.sysconf("SC_CLK_TCK")

    def child_cpu():
        # flock's child: the freeze process
        try:
            kids = open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()
            fields = open(f"/proc/{kids[0]}/stat").read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            return None

    def sample():
        while p.poll() is None:
            c = child_cpu()
            if c is not None:
                cpu["last"] = c
            time.sleep(0.05)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    for line in p.stdout:
        lines.append(line)
        if "serving" in line and "start" not in cpu:
            cpu["start"] = child_cpu()
    p.wait()
    t.join()
    out = "".join(lines)
    m = re.search(r"^throughput\s+(\d+) answers/s", out, re.M)
    ans = re.search(r"^answered\s+(\d+)", out, re.M)
    sh = re.search(r"^self-checking\s+shadows sent (\d+), dropped \(busy\) (\d+), checked (\d+)",
                   out, re.M)
    if p.returncode or not m:
        sys.exit(f"freeze failed (rc {p.returncode}):\n{out[-3000:]}")
    cpu_s = (cpu.get("last") or 0) - (cpu.get("start") or 0)
    return {"rate": rate, "answers_per_s": int(m.group(1)), "answered": int(ans.group(1)),
            "cpu_us_per_answer": 1e6 * cpu_s / int(ans.group(1)) if cpu.get("start") is not None else None,
            "shadows_sent": int(sh.group(1)) if sh else 0,
            "shadows_busy": int(sh.group(2)) if sh else 0}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("-n", "--count", type=int, default=10000)
    ap.add_argument("--rates", default="0,0.02,0.05")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", help="write results.json and report.md here")
    a = ap.parse_args()
    freeze = os.path.join(a.build, "pipeline", "freeze")
    rates = [float(r) for r in a.rates.split(",")]
    d = tempfile.mkdtemp(prefix="fzvc")
    pcap = os.path.join(d, "iid.pcap")
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "fzgen.py"), "gen", "-o", pcap,
                    "-n", str(a.count), "--order", "shuffle"], check=True, capture_output=True)
    runs, seq = [], 0
    for r in range(a.repeat):  # interleaved: each round runs every rate once
        for rate in rates:
            seq += 1
            res = run(freeze, d, pcap, rate, seq)
            res["round"] = r
            runs.append(res)
            print(json.dumps(res), flush=True)
    summary = []
    base = None
    for rate in rates:
        rs = [x for x in runs if x["rate"] == rate]
        med = statistics.median(x["answers_per_s"] for x in rs)
        cpus = [x["cpu_us_per_answer"] for x in rs if x["cpu_us_per_answer"] is not None]
        if rate == 0:
            base = med
        summary.append({"rate": rate, "median_answers_per_s": med,
                        "runs": [x["answers_per_s"] for x in rs],
                        "median_cpu_us_per_answer": statistics.median(cpus) if cpus else None,
                        "shadows_sent": [x["shadows_sent"] for x in rs],
                        "shadows_busy": [x["shadows_busy"] for x in rs]})
    for s in summary:
        s["cost_pct"] = 100 * (1 - s["median_answers_per_s"] / base) if base else None
        print(f"sample {s['rate']:<5} median {s['median_answers_per_s']:.0f} answers/s "
              f"(runs {s['runs']}), cost {s['cost_pct']:+.1f} %, CPU "
              f"{s['median_cpu_us_per_answer'] or 0:.0f} us/answer, shadows sent {s['shadows_sent']} "
              f"busy {s['shadows_busy']}")
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "verify_cost.json"), "w") as f:
            json.dump({"count": a.count, "repeat": a.repeat, "runs": runs, "summary": summary,
                       "loadavg": os.getloadavg()}, f, indent=1)


if __name__ == "__main__":
    main()
