#!/usr/bin/python3
"""Live test: the appliance on net_af_packet bound to one end of a veth pair, the client in a
network namespace on the other end, talking with ordinary UDP sockets (and ping, and ARP)."""
import json
import os
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import appliance_util as U  # noqa: E402

NS = f"fzc{os.getpid()}"
DEV, PEER = f"fzv{os.getpid() % 10000}a", f"fzv{os.getpid() % 10000}b"


def sh(*cmd, check=True):
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def setup():
    if os.geteuid() != 0:
        U.skip("needs root for network namespaces")
    if sh("ip", "netns", "add", NS, check=False).returncode != 0:
        U.skip("cannot create a network namespace here")
    sh("ip", "link", "add", DEV, "type", "veth", "peer", "name", PEER)
    sh("ip", "link", "set", PEER, "netns", NS)
    sh("sysctl", "-qw", f"net.ipv6.conf.{DEV}.disable_ipv6=1", check=False)
    sh("ip", "link", "set", DEV, "up")
    # the peer keeps its default offloads (tx checksum on): its UDP checksums arrive unfinished,
    # as they would for any user, and the appliance must answer them anyway
    sh("ip", "netns", "exec", NS, "ip", "addr", "add", "198.18.0.2/24", "dev", PEER)
    sh("ip", "netns", "exec", NS, "ip", "link", "set", PEER, "up")
    sh("ip", "netns", "exec", NS, "ip", "link", "set", "lo", "up")


def teardown():
    sh("ip", "link", "del", DEV, check=False)
    sh("ip", "netns", "del", NS, check=False)


def eval_accuracy(n):
    """freeze eval's accuracy on t10k images 0..n-1 with the shipped caches (the appliance's
    default), or None."""
    data = os.environ.get("FZ_FMNIST_DIR", "/usr/share/datasets/fashion-mnist")
    p = subprocess.run([U.FREEZE, "eval", "--model", os.path.join(U.MODEL_DIR, "model.yaml"),
                        "--cache", os.path.join(U.MODEL_DIR, "cache.snap"),
                        "--images", os.path.join(data, "t10k-images-idx3-ubyte.gz"),
                        "--labels", os.path.join(data, "t10k-labels-idx1-ubyte.gz"),
                        "--limit", str(n), "--json"], capture_output=True, text=True)
    try:
        return json.loads(p.stdout)["accuracy"]
    except (ValueError, KeyError):
        print(p.stdout, p.stderr)
        return None


def main():
    U.need_model()
    setup()
    fails = []
    a = None
    try:
        a = U.Appliance(f"net_af_packet0,iface={DEV}", [])
        if not a.started:
            print("FAIL the appliance did not start")
            fails.append("start")
            raise SystemExit(1)  # the finally below still stops it and removes the veth pair
        ping = sh("ip", "netns", "exec", NS, "ping", "-c", "3", "-i", "0.2", "-W", "2",
                  "198.18.0.1", check=False)
        ok = ping.returncode == 0
        print(("ok   " if ok else "FAIL ") + "ping through ARP and ICMP echo")
        if not ok:
            fails.append("ping")
            print(ping.stdout, ping.stderr)
        n = 2000
        c = sh("ip", "netns", "exec", NS, sys.executable, os.path.join(U.SRC, "tools", "fzclient.py"),
               "--host", "198.18.0.1", "-n", str(n), "--concurrency", "16", "--timeout", "5",
               "--frag", "300", "--json", check=False)
        try:
            r = json.loads(c.stdout)
        except ValueError:
            r = {}
            print(c.stdout, c.stderr)
        print(json.dumps({k: r.get(k) for k in ("sent", "answered", "ok", "errors", "timeouts",
                                                "accuracy", "latency_us")}))
        ok = r.get("answered") == n and r.get("ok") == n
        print(("ok   " if ok else "FAIL ") + f"client: {r.get('answered')}/{n} answered ok over UDP "
              "sockets (fragmented requests)")
        if not ok:
            fails.append("client")
        # fzclient sends t10k images 0..n-1 in order. The shipped model with its caches scores
        # 94.1 % on all 10 000 (README) and 94.7 % on these 2000 (freeze eval): the floor of
        # 93 % leaves 34 answers for numerics on other CPUs, far less than a wrong input
        # normalisation, layout or cache would cost. And over UDP sockets the answers are
        # the ones freeze eval gives for the same images: the same accuracy within 5 answers.
        acc = r.get("accuracy") or 0
        ev = eval_accuracy(n)
        ok = acc >= 0.93 and ev is not None and abs(acc - ev) <= 5 / n
        print(("ok   " if ok else "FAIL ") + f"client: accuracy {acc:.4f} (floor 0.93; freeze eval "
              f"on the same images {ev})")
        if not ok:
            fails.append("accuracy")
    finally:
        if a:
            rc, out = a.stop(signal.SIGTERM)
            ok = rc == 0 and "accounting         ok" in out
            print(("ok   " if ok else "FAIL ") + "appliance stopped cleanly with its accounting adding up")
            if not ok:
                fails.append("appliance")
                print(out[-3000:])
            full, line = U.pools_at_exit(out)
            ok = full and len(U.pool_batches(out)) == 3
            print(("ok   " if ok else "FAIL ") + f"every mbuf, request and batch back in its pool ({line})")
            if not ok:
                fails.append("pools")
            # default veth offloads: the datagrams came with partial checksums, were counted
            # and warned about once, and none was refused for its checksum
            partial = U.summary_value(out, "udp_csum_partial") or 0
            bad = U.counters(out).get("udp_bad_checksum", 0)
            warned = out.count("sends unfinished UDP checksums")
            ok = partial > 0 and bad == 0 and warned == 1
            print(("ok   " if ok else "FAIL ") + f"peer with tx checksum offload: {partial} frames "
                  f"udp_csum_partial, {bad} udp_bad_checksum, warned {warned}x")
            if not ok:
                fails.append("partial-csum")
        teardown()
    print(f"{len(fails)} failed")
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
