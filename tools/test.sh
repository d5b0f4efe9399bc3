#!/bin/bash
# Freeze's test command: release build + unit and integration tests (cross_isa among them), the
# engine, cache and pcap appliance tests again with the ISA capped at AVX2, the unit tests under
# AddressSanitizer + UndefinedBehaviorSanitizer (leak detection on for the plain-C ones), the
# plain-C unit tests (suite unit) under ThreadSanitizer, then every libFuzzer target for a short
# fixed time (FZ_FUZZ_SECS, default 20; 0 skips). Ends with "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
SUITES=${FZ_TEST_SUITES:-"fast slow"}
fail=0
passed=0
failed=0
skipped=0

count() { # builddir [logbase]: add meson's results to the totals
	local f="$1/meson-logs/${2:-testlog}.json"
	[ -f "$f" ] || return
	local p q s
	p=$(grep -c '"result": "OK"' "$f" || true)
	q=$(grep -cE '"result": "(FAIL|TIMEOUT|ERROR|UNEXPECTEDPASS)"' "$f" || true)
	s=$(grep -c '"result": "SKIP"' "$f" || true)
	passed=$((passed + p)); failed=$((failed + q)); skipped=$((skipped + s))
}

run_build() { # builddir suites... [-- meson setup args]
	local dir=$1; shift
	local suites=() setup=()
	while [ $# -gt 0 ] && [ "$1" != "--" ]; do suites+=(--suite "$1"); shift; done
	[ "${1:-}" = "--" ] && { shift; setup=("$@"); }
	if [ ! -d "$dir" ]; then
		meson setup "$dir" -Dtests=enabled "${setup[@]}" || { fail=1; return; }
	elif [ ${#setup[@]} -gt 0 ]; then
		meson configure "$dir" "${setup[@]}" || { fail=1; return; }
	fi
	ninja -C "$dir" || { fail=1; failed=$((failed + 1)); return; }
	meson test -C "$dir" --print-errorlogs --num-processes 2 "${suites[@]}" || fail=1
	count "$dir"
}

echo "== release build: suites $SUITES"
# fault injection on: the stalled-stage test needs FZ_FAULT_STALL (production builds leave it off)
# shellcheck disable=SC2086
run_build build $SUITES -- -Dfault_injection=true
# An AVX-512 machine runs an AVX2-only one's code paths with the ISA capped (oneDNN's kernels
# and Freeze's own SIMD both honour ONEDNN_MAX_CPU_ISA); cross_isa compares the answers.
if [ -x build/pipeline/freeze ]; then
	echo "== engine, caches, front tiers and the pcap, front and transformation appliance tests with ONEDNN_MAX_CPU_ISA=AVX2"
	ONEDNN_MAX_CPU_ISA=AVX2 meson test -C build --print-errorlogs --num-processes 2 \
		--logbase testlog-avx2 engine test_cache test_snapshot test_concurrent test_front test_tiers appliance_pcap \
		appliance_front appliance_transform ||
		fail=1
	count build testlog-avx2
fi
echo "== ASan + UBSan build: suite fast"
run_build build-asan fast -- -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debugoptimized
# ThreadSanitizer needs clang's runtime (libclang-rt-14-dev, tools/setup-debian.sh). Only the
# plain-C unit tests run under it: oneDNN's OpenMP runtime (libgomp) is not instrumented, so its
# threads' synchronisation is invisible to TSan and would be reported as races.
echo "== TSan build: suite unit"
tsan_t0=$SECONDS
CC=clang run_build build-tsan unit -- -Db_sanitize=thread -Db_lundef=false -Dbuildtype=debugoptimized
echo "== TSan step: $((SECONDS - tsan_t0)) s"

if [ "${FZ_FUZZ_SECS:-20}" != 0 ] && [ -x tools/fuzz.sh ]; then
	echo "== libFuzzer targets: ${FZ_FUZZ_SECS:-20} s each"
	tools/fuzz.sh "${FZ_FUZZ_SECS:-20}" || fail=1
	count build-fuzz
fi

echo "$passed passed, $failed failed, $skipped skipped"
exit $fail
