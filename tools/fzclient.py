#!/usr/bin/python3
"""Freeze client: send inference requests over UDP, match responses, report latency and accuracy.

  fzclient.py --host 198.18.0.1 --rate 2000 --duration 10        open loop at 2000 req/s
  fzclient.py --host 198.18.0.1 --concurrency 16 --count 10000   closed loop, 16 in flight
  fzclient.py --host ... --pcap req.pcap                         replay fzgen.py's requests

Requests come from the Fashion-MNIST test set (idx files) or from a request pcap written by
fzgen.py (its sidecar gives the labels). Each is matched to its response by request id; a request
without a response after --timeout counts as a timeout. Latency is measured at the client, from
sending the first fragment to receiving the response. Wire format: docs/protocol.md.
"""
import argparse
import collections
import json
import os
import random
import selectors
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fzgen  # noqa: E402
from pcap_io import read_pcap  # noqa: E402


class Source:
    """A list of (fragments [(offset, bytes)], dims, label or None, tensor bytes, dtype)."""

    def __init__(self, items):
        if not items:
            raise SystemExit("fzclient: no requests to send")
        self.items = items

    @staticmethod
    def from_idx(a):
        ds = fzgen.Dataset(a.images, a.labels)
        n = a.count if a.count else ds.count
        idx = fzgen.pick_indices(min(n, ds.count), a.first, ds.count, a.order, a.seed)
        dt = fzgen.DTYPES[a.dtype]
        items = []
        for i in idx:
            t = fzgen.as_dtype(ds.image(i), dt)
            items.append((fzgen.fragments(t, a.frag), ds.dims, ds.label(i), len(t), dt))
        return Source(items)

    @staticmethod
    def from_pcap(a):
        sidecar = a.requests or (a.pcap + ".json")
        labels, expect = {}, {}
        if os.path.exists(sidecar):
            with open(sidecar) as f:
                for q in json.load(f)["requests"]:
                    labels[q["id"]] = q["label"]
                    expect[q["id"]] = q["expect"]
        groups = collections.OrderedDict()
        for _ts, fr in read_pcap(a.pcap):
            u = fzgen.parse_udp(fr)
            if u is None or len(u[4]) < fzgen.REQ_HDR.size:
                continue
            h = fzgen.REQ_HDR.unpack_from(u[4])
            if h[0] != fzgen.REQ_MAGIC:
                continue
            rid = h[5]
            if expect.get(rid, "ok") != "ok" and not a.include_malformed:
                continue
            groups.setdefault(rid, []).append(u[4])
        items = []
        for rid, payloads in groups.items():
            h = fzgen.REQ_HDR.unpack_from(payloads[0])
            items.append((("raw", payloads), (h[6], h[7], h[8]), labels.get(rid), h[10], h[3]))
        return Source(items)


def payloads_for(item, req_id):
    """The UDP payloads of one request under id req_id."""
    frags, dims, _label, total, dtype = item
    if isinstance(frags, tuple) and frags[0] == "raw":
        idb = struct.pack(">Q", req_id)
        return [p[:8] + idb + p[16:] for p in frags[1]]
    return [fzgen.encode_req(req_id, off, data, total, dims, dtype=dtype) for off, data in frags]


def percentile(sorted_vals, p):
    return fzgen.percentile(sorted_vals, p)


def run(a, src):
    addr = (a.host, a.port)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    if a.bind:
        host, _, port = a.bind.partition(":")
        sock.bind((host, int(port or 0)))
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)

    id_base = a.id_base if a.id_base is not None else random.getrandbits(31) << 32
    inflight = {}  # id -> (t_send, item index)
    order = collections.deque()  # (deadline, id) in send order
    lat, app_ns = [], []
    status = collections.Counter()
    exits = collections.Counter()
    st = {"sent": 0, "frames": 0, "ok": 0, "correct": 0, "labelled": 0, "timeouts": 0,
          "late": 0, "unknown": 0, "send_errors": 0, "t_last": None}
    answered = set()

    limit = a.count if a.count else None
    t0 = time.monotonic()
    t_end = t0 + a.duration if a.duration else None
    nxt = 0  # next request number

    def can_send(now):
        if limit is not None and nxt >= limit:
            return False
        if t_end is not None and now >= t_end:
            return False
        if a.rate:
            return now >= t0 + nxt / a.rate
        return len(inflight) < a.concurrency

    def send_one(now):
        nonlocal nxt
        rid = id_base + nxt
        item = src.items[nxt % len(src.items)]
        try:
            for p in payloads_for(item, rid):
                sock.sendto(p, addr)
                st["frames"] += 1
        except (BlockingIOError, OSError):
            st["send_errors"] += 1
        inflight[rid] = (now, nxt % len(src.items))
        order.append((now + a.timeout, rid))
        st["sent"] += 1
        nxt += 1

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
            ent = inflight.pop(r["id"], None)
            if ent is None:
                st["late" if r["id"] in answered or
                   id_base <= r["id"] < id_base + nxt else "unknown"] += 1
                continue
            answered.add(r["id"])
            st["t_last"] = t
            lat.append(t - ent[0])
            status[r["status_name"]] += 1
            if r["status"] == 0:
                st["ok"] += 1
                app_ns.append(r["time_ns"])
                exits["full" if r["exit"] == fzgen.EXIT_FULL else str(r["exit"])] += 1
                label = src.items[ent[1]][2]
                if label is not None:
                    st["labelled"] += 1
                    st["correct"] += r["label"] == label

    while True:
        now = time.monotonic()
        while can_send(now):
            send_one(now)
            if a.rate:
                break  # interleave receives with paced sends
            now = time.monotonic()
        while order and order[0][0] <= now:
            _, rid = order.popleft()
            if inflight.pop(rid, None) is not None:
                st["timeouts"] += 1
        done_sending = (limit is not None and nxt >= limit) or (t_end is not None and
                                                                 now >= t_end)
        if done_sending and not inflight:
            break
        if a.rate and not done_sending:
            wait = max(0.0, t0 + nxt / a.rate - now)
        else:
            wait = order[0][0] - now if order else 0.05
        for _key, _ev in sel.select(timeout=max(0.0, min(wait, 0.05))):
            receive()
        receive()
    elapsed = time.monotonic() - t0
    sock.close()

    lat.sort()
    app_ns.sort()
    errors = {k: v for k, v in status.items() if k != "ok"}
    return {
        "target": f"{a.host}:{a.port}",
        "mode": f"rate {a.rate}/s" if a.rate else f"concurrency {a.concurrency}",
        "elapsed_s": round(elapsed, 3),
        "sent": st["sent"], "frames": st["frames"], "send_errors": st["send_errors"],
        "answered": sum(status.values()), "ok": st["ok"], "errors": errors,
        "timeouts": st["timeouts"], "late_responses": st["late"], "unknown_ids": st["unknown"],
        # answers per second up to the last answer (the final timeout wait is not counted)
        "throughput_rps": round(sum(status.values()) / (st["t_last"] - t0), 1)
        if st["t_last"] and st["t_last"] > t0 else None,
        "accuracy": st["correct"] / st["labelled"] if st["labelled"] else None,
        "latency_us": {p: round(percentile(lat, q) * 1e6, 1) if lat else None
                       for p, q in (("p50", 50), ("p90", 90), ("p99", 99))},
        "appliance_us": {p: round(percentile(app_ns, q) / 1e3, 1) if app_ns else None
                         for p, q in (("p50", 50), ("p90", 90), ("p99", 99))},
        "exit_histogram": dict(exits),
    }


def print_report(r):
    print(f"target     {r['target']}  ({r['mode']}, {r['elapsed_s']} s)")
    print(f"sent       {r['sent']} requests in {r['frames']} datagrams "
          f"({r['send_errors']} send errors)")
    print(f"answered   {r['answered']}: ok {r['ok']}, errors {sum(r['errors'].values())}; "
          f"timeouts {r['timeouts']}, late {r['late_responses']}, unknown {r['unknown_ids']}")
    for k, v in sorted(r["errors"].items()):
        print(f"  {k:<24} {v}")
    acc = f"{100 * r['accuracy']:.2f}%" if r["accuracy"] is not None else "n/a"
    print(f"accuracy   {acc}   throughput {r['throughput_rps']} answers/s")
    lu, au = r["latency_us"], r["appliance_us"]
    print(f"latency    p50 {lu['p50']} us  p90 {lu['p90']} us  p99 {lu['p99']} us (client)")
    print(f"           p50 {au['p50']} us  p90 {au['p90']} us  p99 {au['p99']} us (appliance)")
    print("exits      " + ", ".join(f"{k}: {v}" for k, v in sorted(
        r["exit_histogram"].items(), key=lambda kv: (kv[0] == "full", kv[0].zfill(5)))))


def selftest():
    """fzclient against an in-process fake appliance on 127.0.0.1 (no DPDK): ids, fragments,
    errors, timeouts and accuracy must come out exactly as the fake decided."""
    import threading

    ds = fzgen.Dataset()
    label_of = {bytes(ds.image(i)): ds.label(i) for i in range(200)}
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 0))
    srv.settimeout(0.2)
    stop = threading.Event()

    def fake():
        parts = {}
        while not stop.is_set():
            try:
                d, addr = srv.recvfrom(4096)
            except socket.timeout:
                continue
            h = fzgen.REQ_HDR.unpack_from(d)
            rid, ln, total, off = h[5], h[9], h[10], h[11]
            buf = parts.setdefault(rid, bytearray(total))
            buf[off:off + ln] = d[32:32 + ln]
            if off + ln != total:
                continue  # fzclient sends fragments in order: the last one completes
            img = bytes(parts.pop(rid))
            if rid % 37 == 5:
                continue  # lost: a timeout
            st = fzgen.STATUS["dims_mismatch"] if rid % 41 == 3 else 0
            lab = label_of[img] if st == 0 else fzgen.LABEL_NONE
            ex = (rid % 3) if st == 0 else fzgen.EXIT_NONE
            ex = fzgen.EXIT_FULL if ex == 2 else ex
            srv.sendto(fzgen.RESP.pack(fzgen.RESP_MAGIC, 1, 2, st, 0, rid, lab, ex, 0.5, 1000),
                       addr)

    th = threading.Thread(target=fake, daemon=True)
    th.start()
    port = srv.getsockname()[1]
    ok = True
    for mode in (["--concurrency", "4"], ["--rate", "2000"]):
        args = ["--host", "127.0.0.1", "--port", str(port), "-n", "200", "--frag", "300",
                "--timeout", "0.3", "--id-base", "0", "--json"] + mode
        a = build_parser().parse_args(args)
        r = run(a, Source.from_idx(a))
        lost = sum(1 for i in range(200) if i % 37 == 5)
        dims = sum(1 for i in range(200) if i % 41 == 3 and i % 37 != 5)
        want = {"sent": 200, "frames": 600, "timeouts": lost, "answered": 200 - lost,
                "ok": 200 - lost - dims, "errors": {"dims_mismatch": dims}, "accuracy": 1.0}
        got = {k: r[k] for k in want}
        if got != want or r["latency_us"]["p99"] is None or "full" not in r["exit_histogram"]:
            print(f"fzclient selftest FAILED ({' '.join(mode)}): got {got}, want {want}",
                  file=sys.stderr)
            ok = False
    stop.set()
    th.join()
    if ok:
        print("fzclient selftest: closed and open loop, 200 requests each, match the fake")
    return 0 if ok else 1


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", required=True, help="appliance IPv4 address")
    ap.add_argument("--port", type=int, default=7878)
    ap.add_argument("--bind", help="local ADDR[:PORT] to send from")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--rate", type=float, help="open loop: requests per second")
    mode.add_argument("--concurrency", type=int, default=8,
                      help="closed loop: requests in flight (default 8)")
    ap.add_argument("-n", "--count", type=int,
                    help="requests to send (default: the source once, unless --duration)")
    ap.add_argument("--duration", type=float, help="seconds to keep sending")
    ap.add_argument("--timeout", type=float, default=1.0, help="seconds to wait per request")
    ap.add_argument("--pcap", help="replay the requests of a pcap written by fzgen.py")
    ap.add_argument("--requests", help="its sidecar (default: PCAP.json)")
    ap.add_argument("--include-malformed", action="store_true",
                    help="also send the sidecar's malformed UDP requests")
    ap.add_argument("--images", help="idx images (default: Fashion-MNIST t10k)")
    ap.add_argument("--labels", help="idx labels")
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--order", choices=["seq", "shuffle"], default="seq")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--frag", type=int, default=0, help="fragment bytes (0: one datagram)")
    ap.add_argument("--dtype", choices=sorted(fzgen.DTYPES), default="u8")
    ap.add_argument("--id-base", type=int, help="first request id (default: random)")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("--selftest", action="store_true", help=argparse.SUPPRESS)
    return ap


def main(argv=None):
    if argv is None and sys.argv[1:] == ["--selftest"]:
        return selftest()
    ap = build_parser()
    a = ap.parse_args(argv)
    if a.rate is not None and a.rate <= 0:
        ap.error("--rate must be > 0")
    if a.concurrency < 1:
        ap.error("--concurrency must be >= 1")
    src = Source.from_pcap(a) if a.pcap else Source.from_idx(a)
    if a.count is None and a.duration is None:
        a.count = len(src.items)
    r = run(a, src)
    if a.json:
        json.dump(r, sys.stdout, indent=1)
        print()
    else:
        print_report(r)
    return 0 if r["answered"] else 1


if __name__ == "__main__":
    sys.exit(main())
