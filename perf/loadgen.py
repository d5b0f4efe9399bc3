#!/usr/bin/python3
"""Open-loop UDP load for perf/run.py: send a workload's requests at a fixed rate, keep every
request's latency (not only percentiles, so run.py can draw CDFs), and write one JSON object.

  loadgen.py --host 198.18.0.1 --images W-images-idx3-ubyte --labels W-labels-idx1-ubyte \
             --rate 2000 --duration 3 [--warmup 0.5] [--out r.json]

Requests go out on schedule whatever the appliance does (open loop: when the sender falls behind
it catches up in bursts, and the report says how late it was). Latency is from sending a request
to receiving its answer; answers carry the appliance's own time and the exit layer too.
"""
import argparse
import json
import os
import random
import selectors
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tools"))
import fzgen  # noqa: E402


def run(a):
    ds = fzgen.Dataset(a.images, a.labels)
    payloads = [fzgen.encode_req(0, 0, ds.image(i), ds.size, ds.dims) for i in range(ds.count)]
    addr = (a.host, a.port)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    base = random.getrandbits(30) << 32
    n_total = int(a.rate * (a.duration + a.warmup))
    n_warm = int(a.rate * a.warmup)
    t_send = [0.0] * n_total
    rec = {}  # request number -> (latency us, appliance us, exit, label, status)
    send_err = 0
    max_behind = 0.0
    t0 = time.monotonic() + 0.01
    nxt = 0

    def receive():
        while True:
            try:
                data = sock.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            t = time.monotonic()
            r = fzgen.decode_resp(data)
            if r is None:
                continue
            k = r["id"] - base
            if 0 <= k < nxt and k not in rec:
                rec[k] = (round((t - t_send[k]) * 1e6, 1), round(r["time_ns"] / 1e3, 1),
                          r["exit"], r["label"], r["status"])

    while True:
        now = time.monotonic()
        burst = 0
        while nxt < n_total and now >= t0 + nxt / a.rate and burst < 64:
            p = payloads[nxt % len(payloads)]
            rid = (base + nxt).to_bytes(8, "big")
            t_send[nxt] = time.monotonic()
            max_behind = max(max_behind, t_send[nxt] - (t0 + nxt / a.rate))
            try:
                sock.sendto(p[:8] + rid + p[16:], addr)
            except OSError:
                send_err += 1
            nxt += 1
            burst += 1
        receive()
        if nxt >= n_total:
            break
        wait = t0 + nxt / a.rate - time.monotonic()
        if wait > 0:
            sel.select(timeout=min(wait, 0.01))
    t_end_send = time.monotonic()
    deadline = t_end_send + a.timeout
    while len(rec) < n_total and time.monotonic() < deadline:
        sel.select(timeout=0.02)
        receive()
    sock.close()

    keep = [k for k in range(n_warm, n_total)]
    ans = [rec[k] for k in keep if k in rec]
    ok = [r for r in ans if r[4] == 0]
    labels = ds.labels
    labelled = [(k, rec[k]) for k in keep if k in rec and rec[k][4] == 0
                and labels[k % ds.count] != 255]
    t_last = max((t_send[k] + rec[k][0] / 1e6 for k in keep if k in rec), default=None)
    t_first = t_send[n_warm] if n_warm < n_total else t0
    return {
        "rate": a.rate, "duration_s": a.duration, "warmup_s": a.warmup,
        "sent": len(keep), "sent_total": nxt, "answered": len(ans), "ok": len(ok),
        "lost": len(keep) - len(ans), "send_errors": send_err,
        "max_behind_ms": round(max_behind * 1e3, 2),
        "send_rate": round(len(keep) / (t_end_send - t_first), 1) if t_end_send > t_first else None,
        "throughput_rps": round(len(ans) / (t_last - t_first), 1) if t_last and t_last > t_first else None,
        "accuracy": (sum(r[3] == labels[k % ds.count] for k, r in labelled) / len(labelled))
        if labelled else None,
        # per answered request, in send order: [request number, client us, appliance us, exit, label]
        "answers": [[k, rec[k][0], rec[k][1], rec[k][2], rec[k][3]] for k in keep
                    if k in rec and rec[k][4] == 0],
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=7878)
    ap.add_argument("--images", required=True)
    ap.add_argument("--labels", required=True)
    ap.add_argument("--rate", type=float, required=True, help="requests per second")
    ap.add_argument("--duration", type=float, default=3.0, help="measured seconds")
    ap.add_argument("--warmup", type=float, default=0.5, help="seconds sent but not measured")
    ap.add_argument("--timeout", type=float, default=1.0, help="wait for late answers")
    ap.add_argument("--out", help="JSON file (default: stdout)")
    a = ap.parse_args(argv)
    if a.rate <= 0 or a.duration <= 0:
        ap.error("--rate and --duration must be > 0")
    r = run(a)
    text = json.dumps(r, separators=(",", ":"))
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
