#!/usr/bin/python3
"""Soak: sustained load from a pcap port with infinite_rx for SECONDS (argument, or
FZ_SOAK_SECONDS, default 20: the quick variant; the 'soak' suite runs 600), online updates on.
Afterwards every pool (mbufs, requests, the batches between each two stages) is full again,
resident memory has not grown, and the counters add up (received = answered + dropped)."""
import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import appliance_util as U  # noqa: E402


def main():
    U.need_model()
    secs = float(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("FZ_SOAK_SECONDS", "20"))
    d = U.tmpdir()
    # fragmented requests in shuffled order plus every malformed kind, over and over
    req, _ = U.gen(d, "soak", "-n", "2000", "--frag", "300", "--frag-order", "shuffle",
                   "--inject", "all", "--order", "shuffle")
    resp = "/dev/null"
    a = U.Appliance(f"net_pcap0,rx_pcap={req},tx_pcap={resp},infinite_rx=1", ["--online"])
    print(f"soak: {secs:.0f} s of load", flush=True)
    time.sleep(secs)
    rc, out = a.stop(signal.SIGTERM)
    print("\n".join(l for l in out.splitlines() if not l.startswith(("EAL", "TELEMETRY"))))
    fails = []
    n = U.summary_value(out, "requests") or 0
    if rc != 0 or n == 0:
        fails.append(f"exit {rc}, {n} requests")
    if "accounting         ok" not in out or "in flight at exit  0" not in out:
        fails.append("counters do not add up")
    full, line = U.pools_at_exit(out)
    if not full or len(U.pool_batches(out)) != 3:
        fails.append("a pool (mbufs, requests, batches between the 4 stages) is not full again: " + line)
    m = re.search(r"rss (\d+) kB at exit, (\d+) kB when serving started", out)
    if not m or int(m.group(1)) > int(m.group(2)) + 16 * 1024:
        fails.append("resident memory grew by more than 16 MiB: " + (m.group(0) if m else "no memory line"))
    for f in fails:
        print("FAIL " + f)
    print(f"soak: {n} requests in {secs:.0f} s; {len(fails)} failed")
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
