#!/usr/bin/python3
"""Soak: sustained load from a pcap port with infinite_rx for SECONDS (argument, or
FZ_SOAK_SECONDS, default 20: the quick variant; the 'soak' suite runs 600), online updates on
and the front tiers as shipped (config/examples/appliance.yaml). Afterwards every pool (mbufs,
requests, the batches between each two stages) is full again, resident memory has not grown,
and the counters add up (received = answered + dropped), the front tiers' too, with coalescing
followers met and none left waiting. The response pcap is read back: the pcap replays the same
requests round after round, so every answerable request has one response per round (as many as
the others, or one more in the round SIGTERM cut short) with the status the request pcap's
sidecar expects, the others none, and the responses are as many as the appliance says it
answered.

The replay sends the same ids round after round, and an id comes back only after its tombstone
(its answer + the reassembly timeout) has passed, or its fragments are dropped as late_fragment
(one answer per id, as it must be; a dropped fragment costs RX next to nothing, so the next
round comes sooner still and loses more). That time is reassembly time, which stands still
while RX holds frames back (pipeline/datapath/lc_rx.c): under this overload it advances only by
the time RX spends taking frames in, ~N_REQ x (RX's cost of a request) per round, against a
tombstone of (RX's cost of the requests admitted while one waits: at most the shipped pool's
2048) + the timeout. Whatever the machine's speed, a round must therefore hold many more
requests than the pool, and the timeout be short next to it: a round is N_REQ = 40000 requests
of distinct ids (the test set's images in shuffled passes: an image comes back after ~13000
requests, three times what the exact table holds, so rounds run the pipeline rather than being
answered from the table), and the soak's reassembly timeout is REASM_MS = 10 ms (fragments of
a request travel together here). Everything else is the embedded default as shipped; with its
100 ms, rounds of 10000 or 40000 requests lost ids to late_fragment. A late_fragment count
fails the test by name."""
import os
import random
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


def meta_kinds(meta):
    """The malformed kinds fzgen injected (once a round each), by their drop counter's name."""
    return {q["expect"] for q in meta["requests"] if q["expect"] != "ok"}


N_REQ = 40000  # requests in a round (distinct ids): 30000 images, every fourth sent twice
REASM_MS = 10  # the reassembly timeout: a tombstone's life past its answer (see above)


def soak_config(d, frames):
    """The embedded default (config/examples/appliance.yaml) as shipped, front tiers and all, with
    absolute paths, room in the mbuf pool for the replayed pcap (net_pcap's infinite_rx holds
    every frame of it in the port's pool for the whole run) and a reassembly timeout of
    REASM_MS (the module docstring says why)."""
    src = os.path.join(U.SRC, "config", "examples", "appliance.yaml")
    with open(src) as f:
        text = f.read()
    base = os.path.dirname(src)
    text, n = re.subn(r"^(model|cache): (\S+)",
                      lambda m: f"{m.group(1)}: {os.path.normpath(os.path.join(base, m.group(2)))}",
                      text, flags=re.M)
    text, k = re.subn(r"^pools: \{mbufs: (\d+),",
                      lambda m: f"pools: {{mbufs: {int(m.group(1)) + frames},", text, flags=re.M)
    text, r = re.subn(r"^(reassembly: \{entries: \d+), timeout_ms: \d+\}",
                      lambda m: f"{m.group(1)}, timeout_ms: {REASM_MS}}}", text, flags=re.M)
    if n != 2 or k != 1 or r != 1 or not re.search(r"^front:", text, re.M):
        raise SystemExit(f"soak: {src} no longer has model, cache, pools, reassembly and front "
                         f"as expected")
    path = os.path.join(d, "soak.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


def main():
    U.need_model()
    secs = float(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("FZ_SOAK_SECONDS", "20"))
    d = U.tmpdir()
    # fragmented requests (two fragments, shuffled) plus every malformed kind, over and over:
    # test images in shuffled passes, every fourth request the image of the one before (it
    # completes while that one is in flight and waits for it: a coalescing follower)
    rng, img = random.Random(7), []
    while len(img) < N_REQ - N_REQ // 4:
        img += rng.sample(range(10000), 10000)
    idx = [img[i - (i + 1) // 4] for i in range(N_REQ)]
    req, meta = U.gen_images(d, "soak", idx, "--frag", "400", "--frag-order", "shuffle",
                             "--inject", "all")
    resp = os.path.join(d, "soak-resp.pcap")
    a = U.Appliance(f"net_pcap0,rx_pcap={req},tx_pcap={resp},infinite_rx=1",
                    ["--config", soak_config(d, meta["frames"]), "--online"])
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
    ok, followers, line = U.front_followers(out)
    if not ok or followers == 0:
        fails.append(f"front tiers: the account does not add up, a follower is left waiting or "
                     f"none was met: {line}")
    # fzgen injects one late fragment a round (as it does each other kind): more means a round
    # came back within an id's tombstone (the round too short, or the timeout too long)
    c = U.counters(out)
    late = c.pop("late_fragment", 0)
    rounds = max((v for k, v in c.items() if k in meta_kinds(meta)), default=0)
    if late > rounds + 1:
        fails.append(f"{late} fragments dropped as late_fragment in about {rounds} rounds: a round "
                     f"re-sent its ids within their tombstone (answer + reassembly timeout)")
    os.unlink(resp)  # ~80 bytes a response: 250 MB after the 10-minute soak
    for f in fails:
        print("FAIL " + f)
    print(f"soak: {n} requests in {secs:.0f} s; {len(fails)} failed")
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
