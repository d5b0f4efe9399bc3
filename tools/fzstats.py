#!/usr/bin/python3
"""Freeze stats client: query a running appliance's /freeze/ telemetry commands.

  fzstats.py [--file-prefix PREFIX] [COMMAND ...]   JSON of commands (default /freeze/stats
                                                    /freeze/drops; also /freeze/stages,
                                                    /freeze/layers, /freeze/front,
                                                    /freeze/port)
  fzstats.py --prometheus                           the metrics in Prometheus text format, once
  fzstats.py --prometheus --listen [ADDR:]PORT      serve them at http://ADDR:PORT/metrics
  fzstats.py --prometheus --textfile PATH [--every S]
                                                    rewrite PATH (node_exporter's textfile
                                                    collector) every S seconds
  fzstats.py --watch S                              a live view: load per stage, hit rate per
                                                    cache point and tier, every S seconds

Speaks DPDK's telemetry v2 socket protocol (/var/run/dpdk/PREFIX/dpdk_telemetry.v2), the same
as DPDK's usertools/dpdk-telemetry.py (Debian package dpdk-dev), which also works.
"""
import argparse
import http.server
import json
import os
import shutil
import socket
import sys
import time

COMMANDS = ("/freeze/stats", "/freeze/drops", "/freeze/stages", "/freeze/layers", "/freeze/front",
            "/freeze/port")

# /freeze/port's losses before RX, by where they happened (their sum is "lost")
PORT_LOSSES = ("imissed", "kernel_socket_drops", "iface_dropped", "iface_missed")


def connect(prefix):
    base = os.environ.get("RUNTIME_DIRECTORY") or ("/var/run/dpdk" if os.geteuid() == 0
                                                   else os.path.join(os.environ.get("XDG_RUNTIME_DIR", "/tmp"), "dpdk"))
    path = os.path.join(base, prefix, "dpdk_telemetry.v2")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(path)
    info = json.loads(s.recv(16384).decode())
    return s, info.get("max_output_len", 16384)


def query(s, maxlen, cmd):
    s.send(cmd.encode())
    return json.loads(s.recv(maxlen).decode())


def snapshot(s, maxlen):
    """Every /freeze/ command's answer: {command: dict}."""
    return {c: query(s, maxlen, c).get(c) or {} for c in COMMANDS}


# ---- Prometheus text format (https://prometheus.io/docs/instrumenting/exposition_formats/) ----

def _esc(v):
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Exposition:
    def __init__(self):
        self.fams = {}  # name -> (type, help, [(labels, value)])

    def add(self, name, kind, help_, value, **labels):
        fam = self.fams.setdefault(name, (kind, help_, []))
        fam[2].append((labels, value))

    def text(self):
        out = []
        for name, (kind, help_, samples) in self.fams.items():
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")
            for labels, v in samples:
                lab = ",".join(f'{k}="{_esc(x)}"' for k, x in labels.items())
                out.append(f"{name}{{{lab}}} {v}" if lab else f"{name} {v}")
        return "\n".join(out) + "\n"


FRONT_TIERS = {"exact_hits": "exact", "flow_hits": "flow", "near_hits": "near",
               "followers_answered": "coalesced"}


def prometheus(snap):
    """The appliance's counters as Prometheus metric families (base units, _total counters)."""
    e = Exposition()
    st = snap["/freeze/stats"]
    c = lambda n, h, v, **l: e.add(f"freeze_{n}_total", "counter", h, v, **l)  # noqa: E731
    g = lambda n, h, v, **l: e.add(f"freeze_{n}", "gauge", h, v, **l)  # noqa: E731
    c("frames", "Frames received", st.get("frames", 0))
    c("frames_dropped", "Frames dropped, every reason", st.get("frames_dropped", 0))
    c("requests", "Requests received (answered + dropped + in flight)", st.get("requests", 0))
    c("answers", "Requests answered", st.get("answered_ok", 0), status="ok")
    c("answers", "Requests answered", st.get("answered_error", 0), status="error")
    c("requests_dropped", "Requests dropped without an answer", st.get("dropped", 0))
    g("requests_in_flight", "Requests taken in and not yet answered", st.get("in_flight", 0))
    c("cache_reloads", "Cache snapshot reloads", st.get("reloads", 0), result="ok")
    c("cache_reloads", "Cache snapshot reloads", st.get("reload_failures", 0), result="refused")
    for k in ("sent", "busy", "checked", "failed"):
        c("shadows", "Early answers checked against the full model, by fate (busy: dropped)",
          st.get(f"shadows_{k}", 0), result=k)
    pt = snap.get("/freeze/port") or {}
    if pt:  # the port's account: frames sent to it = received + lost (+ unread)
        c("port_received", "Frames the port handed to RX", pt.get("rx_frames", 0))
        for k in PORT_LOSSES:
            c("port_lost", "Frames lost before RX saw them, by where (device: imissed; the "
              "kernel's packet socket; the kernel interface)", pt.get(k, 0), reason=k)
        g("port_unread", "Frames waiting in the kernel socket's ring for RX", pt.get("unread", 0))
        c("port_rx_nombuf", "Receive mbuf allocation failures of the port", pt.get("rx_nombuf", 0))
        c("port_rx_errors", "Erroneous frames the port received", pt.get("ierrors", 0))
        c("port_transmitted", "Frames the port sent", pt.get("tx_frames", 0))
        c("port_tx_errors", "Frames the port failed to send", pt.get("tx_errors", 0))
    for reason, v in sorted(snap["/freeze/drops"].items()):
        c("drops", "Frames and requests dropped, by named reason", v, reason=reason)
    for layer, p in snap["/freeze/layers"].items():
        if p.get("kind") == "front":  # a front tier self-checking follows: below
            continue
        c("cache_lookups", "Requests looked up at a cache point", p["lookups"], layer=layer)
        c("cache_hits", "Requests a cache point answered (lookups = hits + misses)", p["hits"],
          layer=layer)
        c("cache_misses", "Requests a cache point did not answer", p["misses"], layer=layer)
        c("cache_evictions", "Online entries replaced", p["evictions"], layer=layer)
        c("cache_macs_saved", "Multiply-accumulates not run thanks to this point's answers",
          p["macs_saved"], layer=layer)
        g("cache_entries", "Entries a cache point holds", p["entries"], layer=layer)
        thr = float(p["threshold"])
        g("cache_threshold", "A cache point's confidence threshold (+Inf: answers nothing)",
          "+Inf" if thr == float("inf") else repr(thr), layer=layer)
        g("cache_enabled", "1 when a cache point may answer", p["enabled"], layer=layer)
        if "sampled" in p:  # self-checking on (verify:)
            c("cache_checks", "Shadow samples that scored this point against the full model",
              p["shadow_samples"], layer=layer)
            g("cache_sampled", "Samples in the window the point answers at its threshold",
              p["sampled"], layer=layer)
            g("cache_sampled_agreement", "Agreement of those samples with the full model",
              p["sampled_agree"] / p["sampled"] if p["sampled"] else "NaN", layer=layer)
            g("cache_sampled_agreement_lower", "95 % Wilson lower bound of that agreement",
              p["agreement_low"], layer=layer)
            g("cache_sampled_agreement_upper", "95 % Wilson upper bound of that agreement",
              p["agreement_high"], layer=layer)
            g("cache_calibrated_threshold", "The threshold calibration set",
              "+Inf" if float(p["calibrated_threshold"]) == float("inf")
              else p["calibrated_threshold"], layer=layer)
            c("cache_guard_changes", "Threshold changes by the guard", p["guard_changes"],
              layer=layer)
            c("cache_guard_offs", "Times the guard switched a cache point off",
              p.get("guard_offs", 0), layer=layer)
            c("cache_sampled_disagreements", "Shadow samples this point answered otherwise than "
              "the full model", p.get("sampled_disagree_total", 0), layer=layer)
            c("cache_online_forgotten", "Online entries forgotten: the full model disagreed",
              p["online_forgotten"], layer=layer)
    for key, p in snap["/freeze/layers"].items():
        if p.get("kind") != "front":
            continue
        tier = key.split("/", 1)[-1]
        g("front_tier_enabled", "1 when a front tier may answer (0: switched off by the guard)",
          p["enabled"], tier=tier)
        c("front_tier_checks", "Shadow samples that scored a front tier against the full model",
          p["shadow_samples"], tier=tier)
        c("front_tier_disagreements", "Sampled answers of a front tier the full model did not give",
          p["sampled_disagree_total"], tier=tier)
        g("front_tier_sampled", "Samples in a front tier's window", p["sampled"], tier=tier)
        g("front_tier_sampled_agreement_lower", "95 % Wilson lower bound of a front tier's "
          "sampled agreement", p["agreement_low"], tier=tier)
        c("front_tier_guard_offs", "Times the guard switched a front tier off", p["guard_offs"],
          tier=tier)
        c("front_tier_vetoed", "Answers a front tier found while switched off (the requests ran)",
          p["vetoed"], tier=tier)
    for k in ("lost", "stale"):
        c("selfcheck_samples_dropped", "Scored samples the guard never saw (lost: ring full; "
          "stale: a reload replaced their snapshot)", st.get(f"verify_samples_{k}", 0), reason=k)
    for name, s in snap["/freeze/stages"].items():
        c("stage_requests", "Requests into a stage", s["requests_in"], stage=name)
        c("stage_answered", "Requests a stage answered", s["answered"], stage=name)
        c("stage_batches", "Batches a stage ran", s["batches"], stage=name)
        g("stage_busy_ratio", "Share of time since the first frame a stage was busy",
          s.get("busy_permille", 0) / 1000, stage=name)
    f = snap["/freeze/front"]
    if f.get("enabled"):
        c("front_requests", "Requests the front tiers saw", f["requests"])
        for k, tier in FRONT_TIERS.items():
            c("front_hits", "Requests a front tier answered before any layer ran", f[k], tier=tier)
        c("front_ran", "Requests the front tiers passed on into the pipeline", f["ran"])
        c("front_followers", "Requests that waited for one alike in flight", f["followers"])
        c("front_follower_waits_expired", "Waiting requests that ran after wait_us",
          f["followers_expired"])
        c("front_evictions", "Front table entries replaced", f["exact_evictions"], table="exact")
        c("front_evictions", "Front table entries replaced", f["near_evictions"], table="near")
        c("front_evictions", "Front table entries replaced", f["flow_replaced"], table="flows")
        c("front_clears", "Front tables cleared by reloads", f["clears"])
    return e.text()


def serve(s, maxlen, listen):
    host, _, port = listen.rpartition(":")

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404, "only /metrics")
                return
            body = prometheus(snapshot(s, maxlen)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = http.server.HTTPServer((host or "127.0.0.1", int(port)), H)
    print(f"fzstats: serving http://{host or '127.0.0.1'}:{srv.server_port}/metrics", flush=True)
    srv.serve_forever()


def write_textfile(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)  # the collector never reads half a file


# ---- the live view ----

def bar(frac, width=20):
    n = max(0, min(width, round(frac * width)))
    return "#" * n + "." * (width - n)


def view(snap, prev, dt):
    """One screen: requests and answers per second, load per stage, hit rate per point."""
    cols = shutil.get_terminal_size((100, 40)).columns
    st, pst = snap["/freeze/stats"], prev["/freeze/stats"] if prev else {}
    rate = lambda a, b: (a - b) / dt if dt > 0 else 0.0  # noqa: E731
    lines = [f"freeze  requests {st.get('requests', 0)}  answered ok {st.get('answered_ok', 0)} "
             f"error {st.get('answered_error', 0)}  dropped {st.get('dropped', 0)}  in flight "
             f"{st.get('in_flight', 0)}",
             f"        {rate(st.get('requests', 0), pst.get('requests', 0)):.0f} requests/s  "
             f"mean latency {st.get('mean_latency_ns', 0) / 1e3:.0f} us  reloads "
             f"{st.get('reloads', 0)}"]
    pt, ppt = snap.get("/freeze/port") or {}, (prev or {}).get("/freeze/port") or {}
    if pt:
        lines.append(f"port    received {pt.get('rx_frames', 0)}  lost before RX {pt.get('lost', 0)} "
                     f"({rate(pt.get('lost', 0), ppt.get('lost', 0)):.0f}/s)  unread "
                     f"{pt.get('unread', 0)}")
    lines += ["",
             f"{'stage':<8} {'layers':<18} {'busy':>5}  {'load':<20} {'in/s':>8} {'answered':>9}"]
    for name, s in snap["/freeze/stages"].items():
        p = (prev or {}).get("/freeze/stages", {}).get(name, {})
        busy = s.get("busy_permille", 0) / 1000
        lines.append(f"{name:<8} {s['first_layer'] + '..' + s['last_layer']:<18} {busy:>5.0%}  "
                     f"{bar(busy)} {rate(s['requests_in'], p.get('requests_in', 0)):>8.0f} "
                     f"{s['answered']:>9}")
    lines += ["", f"{'cache point':<12} {'kind':<8} {'lookups':>9} {'hits':>9} {'hit rate':>8}  "
                  f"{'':<20} {'agreement':>9} {'threshold':>9}"]
    for layer, p in snap["/freeze/layers"].items():
        if p.get("kind") == "front":
            continue
        hr = p["hits"] / p["lookups"] if p["lookups"] else 0.0
        state = "" if p["enabled"] else " off"
        # sampled agreement: with self-checking on (verify:), else not measured
        ag = (f"{p['sampled_agree'] / p['sampled']:.2%}" if p.get("sampled") else "-")
        lines.append(f"{layer:<12} {p['kind']:<8} {p['lookups']:>9} {p['hits']:>9} {hr:>8.1%}  "
                     f"{bar(hr)} {ag:>9} {float(p['threshold']):>9.4g}{state}")
    f = snap["/freeze/front"]
    if f.get("enabled"):
        n = f.get("requests", 0) or 1
        lines += ["", f"{'front tier':<12} {'answered':>9} {'share':>8}  (requests {f.get('requests', 0)}, "
                      f"ran {f.get('ran', 0)})"]
        checked = snap["/freeze/layers"]
        for k, tier in FRONT_TIERS.items():
            sc = checked.get(f"front/{tier}", {})
            state = "" if sc.get("enabled", 1) else "  off (self-checking)"
            ag = f"  agreement {sc['sampled_agree'] / sc['sampled']:.2%}" if sc.get("sampled") else ""
            lines.append(f"{tier:<12} {f[k]:>9} {f[k] / n:>8.1%}  {bar(f[k] / n)}{ag}{state}")
    return "\n".join(line[:cols] for line in lines)


def watch(s, maxlen, every):
    prev, t_prev = None, time.monotonic()
    while True:
        snap = snapshot(s, maxlen)
        now = time.monotonic()
        sys.stdout.write("\x1b[H\x1b[2J" + view(snap, prev, now - t_prev) + "\n")
        sys.stdout.flush()
        prev, t_prev = snap, now
        time.sleep(every)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--file-prefix", default="rte", help="the appliance's EAL --file-prefix")
    ap.add_argument("--watch", type=float, default=0, help="live view, refreshed every N seconds")
    ap.add_argument("--prometheus", action="store_true", help="Prometheus text format")
    ap.add_argument("--listen", help="with --prometheus: serve /metrics on [ADDR:]PORT")
    ap.add_argument("--textfile", help="with --prometheus: rewrite this file every --every s")
    ap.add_argument("--every", type=float, default=15, help="textfile interval, seconds")
    ap.add_argument("commands", nargs="*")
    a = ap.parse_args()
    try:
        s, maxlen = connect(a.file_prefix)
    except OSError as e:
        print(f"fzstats: cannot reach the appliance with file prefix '{a.file_prefix}': {e}", file=sys.stderr)
        return 1
    try:
        if a.watch:
            watch(s, maxlen, a.watch)
        if a.prometheus and a.listen:
            serve(s, maxlen, a.listen)
        if a.prometheus and a.textfile:
            while True:
                write_textfile(a.textfile, prometheus(snapshot(s, maxlen)))
                time.sleep(a.every)
        if a.prometheus:
            sys.stdout.write(prometheus(snapshot(s, maxlen)))
            return 0
    except (BrokenPipeError, ConnectionError, json.JSONDecodeError) as e:
        print(f"fzstats: the appliance went away: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    for cmd in a.commands or ["/freeze/stats", "/freeze/drops"]:
        print(json.dumps(query(s, maxlen, cmd), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
