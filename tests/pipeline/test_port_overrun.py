#!/usr/bin/python3
"""Regression: frames lost before the appliance saw them went uncounted. A sender in a network
namespace sends the README's request pcap (tools/fzgen.py gen, one request per frame) over a
veth pair into net_af_packet faster than the appliance takes it, so the kernel's packet socket
ring overflows; then every frame sent is found again:

  sent = answered + dropped inside (requests and frames, by named reason)
         + lost before RX (/freeze/port: imissed + kernel socket drops + interface drops)

exactly, from telemetry read live (before the appliance stops), and the same numbers in
Prometheus and the exit summary. The sender also captures the answers on its end of the pair:
each answered id once, and as many as the appliance counted. Then the same over net_tap, where
the kernel drops what overflows the tap's queue (the interface's tx_dropped).

  test_port_overrun.py [PPS]          (default 0: as fast as the sender goes; 12-23k frames/s
                                      on the shared 2-core development machine, where the
                                      appliance took 33-46 % of them, as at the report's
                                      20 000 pps)
  test_port_overrun.py --send IFACE PCAP PPS   the sender, on the kernel's side of the port
"""
import collections
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_IGNORE_OUTGOING = 23
APP_PORT = 7878


def send_main(iface, pcap, pps):
    """Send every frame of pcap on iface at pps (0: as fast as possible), then capture answers
    until stdin says the appliance is done; print one JSON line."""
    import appliance_util as U  # noqa: F401 (puts tools/ on the path)
    import fzgen
    from pcap_io import read_pcap
    frames = [fr for _ts, fr in read_pcap(pcap)]
    cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    cap.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE: never drop an answer
    cap.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    cap.bind((iface, 0))
    cap.setblocking(False)
    tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: receives nothing
    tx.bind((iface, 0))
    sent = errors = 0
    t0 = time.perf_counter()
    for i, fr in enumerate(frames):
        if pps:
            due = t0 + i / pps
            while time.perf_counter() < due:
                pass
        try:
            tx.send(fr)
            sent += 1
        except OSError:
            errors += 1
    secs = time.perf_counter() - t0
    print(json.dumps({"sent": sent, "send_errors": errors, "send_s": round(secs, 3)}), flush=True)
    ids = collections.Counter()
    other = 0

    def drain():
        nonlocal other
        while True:
            try:
                data = cap.recv(65536)
            except BlockingIOError:
                return
            u = fzgen.parse_udp(data)
            r = fzgen.decode_resp(u[4]) if u and u[1] == APP_PORT else None
            if r is None:
                other += 1
            else:
                ids[r["id"]] += 1

    done = False
    while not done:
        rd, _, _ = select.select([cap, sys.stdin], [], [], 60)
        if not rd:
            break
        if sys.stdin in rd:
            sys.stdin.readline()
            done = True
        drain()
    time.sleep(0.2)
    drain()
    packets, drops = struct.unpack("II", cap.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    print(json.dumps({"answers": sum(ids.values()), "ids": sorted(ids),
                      "repeated": sum(1 for n in ids.values() if n > 1), "other_frames": other,
                      "capture_drops": drops}), flush=True)
    return 0


# ---- the test (parent, in the root namespace) ----

NS = f"fzo{os.getpid()}"
DEV, PEER = f"fzo{os.getpid() % 10000}a", f"fzo{os.getpid() % 10000}b"
TAP = f"fzo{os.getpid() % 10000}t"
FAILS = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        FAILS.append(what)
    return ok


def sh(*cmd, check=True):
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def sysfs(ns, dev, attr):
    pre = ("ip", "netns", "exec", ns) if ns else ()
    p = sh(*pre, "cat", f"/sys/class/net/{dev}/statistics/{attr}", check=False)
    return int(p.stdout) if p.returncode == 0 else None


def veth_setup():
    """The veth pair, PEER in namespace NS; None or why it cannot be made."""
    if sh("ip", "netns", "add", NS, check=False).returncode != 0:
        return "cannot create a network namespace here (ip netns add failed)"
    if sh("ip", "link", "add", DEV, "type", "veth", "peer", "name", PEER, check=False).returncode:
        return "cannot create a veth pair here"
    sh("ip", "link", "set", PEER, "netns", NS)
    # no addresses, no IPv6: nothing but the sender's frames crosses the pair
    sh("sysctl", "-qw", f"net.ipv6.conf.{DEV}.disable_ipv6=1", check=False)
    sh("ip", "netns", "exec", NS, "sysctl", "-qw", f"net.ipv6.conf.{PEER}.disable_ipv6=1",
       check=False)
    sh("ip", "link", "set", DEV, "up")
    sh("ip", "netns", "exec", NS, "ip", "link", "set", PEER, "up")
    return None


def veth_teardown():
    sh("ip", "link", "del", DEV, check=False)
    sh("ip", "netns", "del", NS, check=False)


def telemetry(prefix, *cmds):
    fzstats = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools",
                           "fzstats.py")
    p = subprocess.run([sys.executable, fzstats, "--file-prefix", prefix, *cmds],
                       capture_output=True, text=True)
    return p.returncode, p.stdout


def snap(prefix):
    """/freeze/stats and /freeze/port in one dict, or None."""
    rc, out = telemetry(prefix, "/freeze/stats", "/freeze/port")
    if rc != 0:
        return None
    d, dec, i = {}, json.JSONDecoder(), 0
    while i < len(out):
        if out[i].isspace():
            i += 1
            continue
        obj, i = dec.raw_decode(out, i)
        for v in obj.values():
            d.update(v or {})
    return d


def overrun(U, name, vdev, pps, sender_pre, kernel_in, appliance_mac=None):
    """Start the appliance on vdev, send the README's pcap from the kernel side at pps
    (sender_pre: the command prefix and interface of the sender), reconcile. kernel_in():
    the frames the kernel passed or dropped on their way to the appliance, by its counters."""
    a = sender = s1 = None
    print(f"-- {name}")
    try:
        a = U.Appliance(vdev, [])
        prefix = f"fzt{os.getpid()}_{U._prefix[0]}"
        if not check(a.started, f"{name}: the appliance started"):
            return
        if appliance_mac is None:  # the port's MAC, from the serving line
            m = re.search(r"serving .*\(([0-9A-Fa-f:]{17})\)", "".join(a.lines))
            appliance_mac = m.group(1)
        if name == "net_tap":  # its interface exists now: no IPv6 traffic into the port
            sh("sysctl", "-qw", f"net.ipv6.conf.{TAP}.disable_ipv6=1", check=False)
        # the README's pcap (one u8 request per frame), addressed to the appliance's MAC; the
        # client is a MAC and IP nobody has: its answers reach the sender's capture and stop
        # there (no ICMP back, no ARP)
        n = int(os.environ.get("FZ_OVERRUN_REQUESTS", "10000"))
        pcap, meta = U.gen(U.tmpdir(), "requests", "--count", str(n), "--appliance-mac",
                           appliance_mac, "--client-mac", "02:66:7a:6f:76:01",
                           "--client-ip", "198.18.0.77")
        frames = sum(1 for _ in U.read_pcap(pcap))
        sent_ids = {q["id"] for q in meta["requests"]}
        time.sleep(0.5)  # what the kernel sent at link-up has arrived before the baseline
        s0 = snap(prefix)
        if not check(s0 is not None and "lost" in s0,
                     f"{name}: /freeze/port answers ({s0 and s0.get('driver')} on "
                     f"{s0 and s0.get('iface')}, kernel socket found: "
                     f"{s0 and s0.get('kernel_socket')}, interface counters "
                     f"{s0 and s0.get('iface_counters')})"):
            return
        k0 = kernel_in()
        pre, iface = sender_pre
        sender = subprocess.Popen([*pre, sys.executable, os.path.abspath(__file__), "--send",
                                   iface, pcap, str(pps)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        first = json.loads(sender.stdout.readline() or "{}")
        sent = first.get("sent", 0)
        rate = sent / max(first.get("send_s", 1), 1e-9)
        print(f"sender: {json.dumps(first)} of {frames} frames ({rate:.0f} frames/s)")
        # the appliance works off what it took in; then nothing is in flight or in the ring
        deadline, steady = time.time() + 60, 0
        while time.time() < deadline:
            s = snap(prefix)
            if s and s1 and s == s1 and s["in_flight"] == 0 and s["unread"] == 0:
                steady += 1
                if steady >= 2:
                    break
            else:
                steady = 0
            s1 = s
            time.sleep(0.5)
        check(steady >= 2, f"{name}: the appliance settled (nothing in flight, nothing unread)")
        sender.stdin.write("done\n")
        sender.stdin.flush()
        second = json.loads(sender.stdout.readline() or "{}")
        sender.wait(timeout=30)
        k1 = kernel_in()
        d = {k: s1[k] - s0[k] for k in s1 if isinstance(s1[k], int) and k in s0}

        # the kernel passed on (or dropped on the way) what the sender sent, and nothing else
        check(sent == frames and first.get("send_errors") == 0 and k1 - k0 == sent,
              f"{name}: sent {sent} of {frames} frames; the kernel counted {k1 - k0} on their "
              "way to the appliance: no other traffic")
        lost = d["lost"]
        # a test of losses that saw none proves nothing: a faster machine needs a faster sender
        check(lost > 0 and d["rx_frames"] > 0,
              f"{name}: overrun at {rate:.0f} frames/s: {d['rx_frames']} frames taken, {lost} "
              f"lost before RX (kernel socket {d['kernel_socket_drops']}, interface "
              f"{d['iface_dropped']} + {d['iface_missed']}, imissed {d['imissed']}), seen live")
        check(d["rx_frames"] + lost == sent,
              f"{name}: port: received {d['rx_frames']} + lost {lost} = {d['rx_frames'] + lost} "
              f"== sent {sent}")
        check(d["frames"] == d["rx_frames"], f"{name}: RX took every frame the port handed it "
              f"({d['frames']} == {d['rx_frames']})")
        answered = d["answered_ok"] + d["answered_error"]
        inside = d["dropped"] + d["frames_dropped"]
        check(d["requests"] + d["frames_dropped"] == d["frames"],
              f"{name}: one request per frame: requests {d['requests']} + frame drops "
              f"{d['frames_dropped']} == frames {d['frames']}")
        total = answered + inside + lost
        check(total == sent, f"{name}: answered {answered} + dropped inside {inside} + lost "
              f"before RX {lost} = {total} == sent {sent}")
        ids = set(second.get("ids", []))
        check(second.get("capture_drops") == 0 and second.get("answers") == answered and
              second.get("repeated") == 0 and ids <= sent_ids,
              f"{name}: the sender captured {second.get('answers')} answers == {answered} "
              f"counted, {second.get('repeated')} ids answered twice, {len(ids - sent_ids)} "
              f"unknown ids, capture drops {second.get('capture_drops')}")
        check(d["tx_frames"] == second.get("answers"),
              f"{name}: port: {d['tx_frames']} frames sent back == answers captured")
        rc, prom = telemetry(prefix, "--prometheus")
        pl = {m.group(1): int(m.group(2)) for m in re.finditer(
            r'^freeze_port_lost_total\{reason="(\w+)"\} (\d+)$', prom, re.M)}
        pr = re.search(r"^freeze_port_received_total (\d+)$", prom, re.M)
        check(rc == 0 and sum(pl.values()) == s1["lost"] and pr and
              int(pr.group(1)) == s1["rx_frames"],
              f"{name}: Prometheus: freeze_port_lost_total sums to {sum(pl.values())} ({pl}), "
              f"received {pr and pr.group(1)}")
    finally:
        if sender and sender.poll() is None:
            sender.kill()
        if a:
            rc, out = a.stop(signal.SIGTERM)
            ok = check(rc == 0 and "accounting         ok" in out,
                       f"{name}: appliance stopped cleanly with its accounting adding up")
            m = re.search(r"^port\s+received (\d+), lost before RX (\d+) .*unread (\d+)", out,
                          re.M)
            if a.started and s1:
                check(m and int(m.group(1)) == s1["rx_frames"] and
                      int(m.group(2)) == s1["lost"] and int(m.group(3)) == 0,
                      f"{name}: summary: {m.group(0) if m else 'no port line'}")
                warned = [ln for ln in out.splitlines() if "lost before RX since" in ln]
                check(bool(warned), f"{name}: the appliance warned while frames were lost "
                      f"({warned[:1]})")
            if not ok or not m:
                print(out[-3000:])


def stopped_loaded(U, pps, mac):
    """SIGTERM right after the blast, the kernel socket's ring still full: the summary's last
    read counts what RX never took as unread, so received + lost + unread = sent. A stage
    stalled through the blast (fault injection) keeps the ring full until the stop."""
    name = "net_af_packet stopped while loaded"
    print(f"-- {name}")
    stall = U.fault_injection()
    if not stall:
        print("note: no fault injection in this build: the ring may be empty at the stop")
    a = sender = None
    try:
        env = dict(os.environ, FZ_FAULT_STALL="s1:1500") if stall else None
        a = U.Appliance(f"net_af_packet0,iface={DEV}", [], env=env)
        prefix = f"fzt{os.getpid()}_{U._prefix[0]}"
        if not check(a.started, f"{name}: the appliance started"):
            return
        pcap, _ = U.gen(U.tmpdir(), "requests", "--count", "4000", "--appliance-mac", mac,
                        "--client-mac", "02:66:7a:6f:76:01", "--client-ip", "198.18.0.77")
        s0 = snap(prefix)
        sender = subprocess.Popen(["ip", "netns", "exec", NS, sys.executable,
                                   os.path.abspath(__file__), "--send", PEER, pcap, str(pps)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        sent = json.loads(sender.stdout.readline() or "{}").get("sent", 0)
        rc, out = a.stop(signal.SIGTERM)
        a = None
        sender.stdin.write("done\n")
        sender.stdin.flush()
        sender.communicate(timeout=30)
        m = re.search(r"^port\s+received (\d+), lost before RX (\d+) .*unread (\d+)", out, re.M)
        if not check(rc == 0 and "accounting         ok" in out and m and s0,
                     f"{name}: stopped cleanly, accounting ok, a port line"):
            print(out[-3000:])
            return
        r, lost, unread = (int(m.group(i)) for i in (1, 2, 3))
        r -= s0["rx_frames"]
        lost -= s0["lost"]
        check((unread > 0 or not stall) and r + lost + unread == sent,
              f"{name}: received {r} + lost {lost} + unread {unread} = {r + lost + unread} == "
              f"sent {sent}")
        ans = U.summary_value(out, "answered") - s0["answered_ok"] - s0["answered_error"]
        drop = U.summary_value(out, "dropped") - s0["dropped"]
        check(ans + drop == r, f"{name}: every frame taken answered ({ans}) or dropped ({drop}) "
              f"by the drain == {r}")
    finally:
        if sender and sender.poll() is None:
            sender.kill()
        if a:
            a.stop(signal.SIGKILL)


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--send":
        return send_main(sys.argv[2], sys.argv[3], float(sys.argv[4]))
    import appliance_util as U
    pps = float(sys.argv[1]) if len(sys.argv) > 1 else 0
    U.need_model()
    if os.geteuid() != 0:
        U.skip("needs root for network namespaces, veth pairs and taps")
    why = veth_setup()
    if why:
        veth_teardown()
        U.skip(why)
    try:
        mac = open(f"/sys/class/net/{DEV}/address").read().strip()
        # the sender's veth sends (or drops); the appliance's veth receives (or drops)
        overrun(U, "net_af_packet", f"net_af_packet0,iface={DEV}", pps,
                (("ip", "netns", "exec", NS), PEER),
                lambda: sum(sysfs(NS, PEER, k) for k in ("tx_packets", "tx_dropped")),
                appliance_mac=mac)
        stopped_loaded(U, pps, mac)
    finally:
        veth_teardown()
    # net_tap: the kernel transmits on the tap to the appliance; the sender is in this
    # namespace and sends on the tap interface
    overrun(U, "net_tap", f"net_tap0,iface={TAP}", pps, ((), TAP),
            lambda: sum(sysfs(None, TAP, k) for k in ("tx_packets", "tx_dropped")))
    print(f"{len(FAILS)} failed")
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
