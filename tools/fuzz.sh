#!/bin/sh
# Runs every libFuzzer target (meson suite 'fuzz') for a fixed time each: tools/fuzz.sh [SECONDS].
#
# Builds into build-fuzz with clang (-Dfuzz=true, no DPDK: the parsers do not need it). SECONDS
# per target defaults to 30; FZ_FUZZ_JOBS targets run at once (default 1: the box is shared).
# New corpus entries stay in build-fuzz/tests/fuzz/corpus/<target>/, crash inputs go to
# build-fuzz/tests/fuzz/artifacts/<target>/; the seed corpora in tests/fuzz/corpus/ are only read.
set -eu
cd "$(dirname "$0")/.."
secs=${1:-30}
case $secs in
'' | *[!0-9]*)
	echo "usage: tools/fuzz.sh [SECONDS per target, default 30]" >&2
	exit 2
	;;
esac
command -v clang >/dev/null 2>&1 || {
	echo "tools/fuzz.sh: clang not found; run tools/setup-debian.sh (clang, libclang-rt-14-dev)" >&2
	exit 1
}
if [ ! -f build-fuzz/build.ninja ]; then
	CC=clang meson setup build-fuzz -Dfuzz=true -Ddpdk=disabled -Dtests=enabled
else
	# pick up targets added since the last configure (tests/fuzz/meson.build checks for files)
	meson setup --reconfigure build-fuzz -Dfuzz=true -Ddpdk=disabled -Dtests=enabled >/dev/null
fi
jobs=${FZ_FUZZ_JOBS:-1}
targets=$(meson introspect build-fuzz --targets | python3 -c 'import json, sys
print(" ".join(t["name"] for t in json.load(sys.stdin)
               if t["type"] == "executable" and t["name"].startswith("fuzz_")))')
# shellcheck disable=SC2086 # one word per target
meson compile -C build-fuzz -j "$jobs" $targets
FZ_FUZZ_SECONDS=$secs exec meson test -C build-fuzz --suite fuzz --no-rebuild --print-errorlogs \
	--num-processes "$jobs"
