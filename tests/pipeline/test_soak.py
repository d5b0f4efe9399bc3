#!/usr/bin/python3
"""Soak: sustained load from a pcap port with infinite_rx for SECONDS (argument, or
FZ_SOAK_SECONDS, default 20: the quick variant; the 'soak' suite runs 600), online updates on.
Afterwards every pool (mbufs, requests, the batches between each two stages) is full again,
resident memory has not grown, and the counters add up (received = answered + dropped). The
response pcap is read back: the pcap replays the same requests round after round, so every
answerable request has one response per round (as many as the others, or one more in the round
SIGTERM cut short) with the status the request pcap's sidecar expects, the others none, and the
responses are as many as the appliance says it answered."""
import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import appliance_util as U  # noqa: E402


def check_responses(resp, meta, answered, dropped=0):
    """Read the response pcap back against the sidecar; returns what failed."""
    port = meta["appliance"]["port"]
    reqs = {q["id"]: q for q in meta["requests"]}
    seq = {}  # id -> statuses in sending order
    unknown = total = 0
    for _ts, fr in U.read_pcap(resp):
        u = U.fzgen.parse_udp(fr)
        r = U.fzgen.decode_resp(u[4]) if u and u[1] == port else None
        if r is None:
            continue  # ARP and ICMP replies
        total += 1
        if r["id"] not in reqs:
            unknown += 1
        else:
            seq.setdefault(r["id"], []).append(r["status_name"])
    answerable = [q for q in reqs.values() if q["answered"]]
    # a request left half-sent on purpose gets no answer in a round that re-sends its fragment
    # while the previous round's entry still absorbs fragments (a faster appliance makes rounds
    # shorter than the reassembly timeout): its count per round is not fixed, its statuses are
    # checked below
    counts = [len(seq.get(q["id"], [])) for q in answerable if q["expect"] != "reassembly_timeout"]
    # every round answers each request once, except requests the appliance counted as
    # dropped (a full request pool under this overload: named in the summary), and the round
    # SIGTERM cut short answers a prefix once more
    top = max(counts) if counts else 0
    rounds = min(counts) if counts else 0
    # a request SIGTERM finds half-reassembled is answered shutting_down: only its last answer
    # a request left half-sent on purpose expects reassembly_timeout; when the next round
    # re-sends its fragment before that timeout has passed, the appliance rightly calls it a
    # duplicate_fragment instead (rounds of a faster appliance come closer together)
    def fine(q, st, i):
        return (st == q["expect"] or (st == "shutting_down" and i == len(seq[q["id"]]) - 1) or
                (q["expect"] == "reassembly_timeout" and st == "duplicate_fragment"))
    wrong = [(q["id"], st) for q in answerable for i, st in enumerate(seq.get(q["id"], []))
             if not fine(q, st, i)]
    silent = [q["id"] for q in reqs.values() if not q["answered"] and q["id"] in seq]
    print(f"soak: {total} responses read back, {rounds} full rounds of {len(answerable)} "
          f"answerable requests", flush=True)
    fails = []
    short = sum(max(0, top - 1 - c) for c in counts)  # answers missing below the full rounds
    if rounds < 1 or short > dropped:
        fails.append(f"responses per request range {min(counts)}..{top}: {short} answers missing "
                     f"from full rounds, {dropped} requests counted as dropped")
    if wrong:
        fails.append(f"{len(wrong)} responses with another status than the sidecar expects, "
                     f"e.g. {wrong[:3]}")
    if silent or unknown:
        fails.append(f"answers to {len(silent)} requests that expect none, {unknown} to unknown ids")
    if total != answered:
        fails.append(f"{total} responses in the pcap, the appliance says it answered {answered}")
    return fails


def main():
    U.need_model()
    secs = float(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("FZ_SOAK_SECONDS", "20"))
    d = U.tmpdir()
    # fragmented requests in shuffled order plus every malformed kind, over and over
    req, meta = U.gen(d, "soak", "-n", "2000", "--frag", "300", "--frag-order", "shuffle",
                   "--inject", "all", "--order", "shuffle")
    resp = os.path.join(d, "soak-resp.pcap")
    # without the front tiers: they answer the repeated rounds so fast that a round takes less
    # than the reassembly timeout, and a request left half-sent on purpose meets its own
    # previous round as a duplicate fragment (tests/pipeline/test_front.py soaks those tiers)
    a = U.Appliance(f"net_pcap0,rx_pcap={req},tx_pcap={resp},infinite_rx=1",
                    ["--online", "--no-front"])
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
    fails += check_responses(resp, meta, U.summary_value(out, "answered"),
                             U.summary_value(out, "dropped") or 0)
    os.unlink(resp)  # ~80 bytes a response: 250 MB after the 10-minute soak
    for f in fails:
        print("FAIL " + f)
    print(f"soak: {n} requests in {secs:.0f} s; {len(fails)} failed")
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
