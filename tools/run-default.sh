#!/bin/bash
# The main job: build if needed, make a request pcap from the Fashion-MNIST test set, run the
# appliance on its embedded default over a net_pcap port, and summarise the responses.
#   tools/run-default.sh [COUNT] [-- extra app options, e.g. --no-caches]
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-10000}
shift || true
[ "${1:-}" = "--" ] && shift
BUILD=${FZ_BUILD:-build}
if [ ! -x "$BUILD/pipeline/freeze" ]; then
	[ -d "$BUILD" ] || meson setup "$BUILD" >/dev/null
	ninja -C "$BUILD" >/dev/null
fi
OUT=${FZ_OUT:-$BUILD/run}
mkdir -p "$OUT"
echo "== making $COUNT requests from the Fashion-MNIST test set"
/usr/bin/python3 tools/fzgen.py gen --count "$COUNT" --output "$OUT/requests.pcap" \
	--json "$OUT/requests.json" >/dev/null
rm -f "$OUT/responses.pcap"
echo "== freeze (embedded default) on net_pcap"
"$BUILD/pipeline/freeze" --lcores '0@0,1@1,(2-5)@(0,1)' --no-huge -m 512 --no-pci --file-prefix "fz$$" \
	--vdev "net_pcap0,rx_pcap=$OUT/requests.pcap,tx_pcap=$OUT/responses.pcap" \
	--log-level=pmd.net.pcap:error -- --exit-idle 300 "$@"
echo "== responses in $OUT/responses.pcap"
/usr/bin/python3 tools/fzgen.py summarize "$OUT/responses.pcap" --requests "$OUT/requests.json"
