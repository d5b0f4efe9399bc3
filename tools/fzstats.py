#!/usr/bin/python3
"""Freeze stats client: query a running appliance's /freeze/ telemetry commands.

  fzstats.py [--file-prefix PREFIX] [COMMAND ...]      (default: /freeze/stats /freeze/drops)
  fzstats.py --watch 1                                 (print /freeze/stats every second)

Speaks DPDK's telemetry v2 socket protocol (/var/run/dpdk/PREFIX/dpdk_telemetry.v2), the same
as DPDK's usertools/dpdk-telemetry.py (Debian package dpdk-dev), which also works.
"""
import argparse
import json
import os
import socket
import sys
import time


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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--file-prefix", default="rte", help="the appliance's EAL --file-prefix")
    ap.add_argument("--watch", type=float, default=0, help="repeat /freeze/stats every N seconds")
    ap.add_argument("commands", nargs="*")
    a = ap.parse_args()
    try:
        s, maxlen = connect(a.file_prefix)
    except OSError as e:
        print(f"fzstats: cannot reach the appliance with file prefix '{a.file_prefix}': {e}", file=sys.stderr)
        return 1
    if a.watch:
        while True:
            print(json.dumps(query(s, maxlen, "/freeze/stats")["/freeze/stats"]), flush=True)
            time.sleep(a.watch)
    for cmd in a.commands or ["/freeze/stats", "/freeze/drops"]:
        print(json.dumps(query(s, maxlen, cmd), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
