#!/bin/bash
# Which cache key and kind win: every variant is calibrated in one pass on train[0, 55k)
# (45k build + 10k validation) and measured on the held-out train[55k, 60k). The test set is
# never touched. Usage: perf/bench_cache_keys.sh [BUILD_DIR] [variant ...]
#   variant = name|kind|grid|dims|l2|size|k|budget|layers[|objective]   -> perf/results/cache_keys.{txt,csv}
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-cache}
shift || true
freeze=$build/pipeline/freeze
model=${FZ_MODEL:-models/resnet18-w16-fmnist/model.yaml}
nb=${FZ_BUILD:-45000} nv=${FZ_VAL:-10000} held=${FZ_HELD:-5000}
out=${FZ_OUT:-perf/results/cache_keys}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
all="block1 block2 block3 block4 block5 block6 block7 block8"
variants=(
  "g1-l2|kmeans|1|0|true|512|1|0.004|$all"
  "g1-raw|kmeans|1|0|false|512|1|0.004|$all"
  "g2-pca32-l2|kmeans|2|32|true|512|1|0.004|$all"
  "g2-pca16-l2|kmeans|2|16|true|512|1|0.004|$all"
  "g2-pca64-l2|kmeans|2|64|true|512|1|0.004|$all"
  "g1-pca16-l2|kmeans|1|16|true|512|1|0.004|$all"
  "g1-l2-256|kmeans|1|0|true|256|1|0.004|$all"
  "g1-l2-1024|kmeans|1|0|true|1024|1|0.004|$all"
  "g2-pca32-l2-1024|kmeans|2|32|true|1024|1|0.004|$all"
  "knn-g1-pca16-l2-k8|knn|1|16|true|2048|8|0.004|$all"
  "knn-g2-pca32-l2-k8|knn|2|32|true|1024|8|0.004|$all"
  "knn-g2-pca32-l2-k4|knn|2|32|true|1024|4|0.004|$all"
  "g2-pca32-l2-compute|kmeans|2|32|true|512|1|0.004|$all|compute"
  "knn-g2-pca32-l2-k8-compute|knn|2|32|true|1024|8|0.004|$all|compute"
)
[ $# -gt 0 ] && variants=("$@")
args=()
for v in "${variants[@]}"; do
	IFS='|' read -r name kind grid dims l2 size k budget layers objective <<<"$v"
	{
		echo "build: $nb"
		echo "validation: $nv"
		echo "budget: $budget"
		echo "objective: ${objective:-exits}"
		echo "defaults: {kind: $kind, key: {grid: $grid, dims: $dims, l2: $l2}, size: $size, k: $k, threshold: budget}"
		echo "caches:"
		for l in $layers; do echo "  - {layer: $l}"; done
	} >"$tmp/$name.yaml"
	args+=(--cache-config "$tmp/$name.yaml" --out "$tmp/$name.snap")
done
mkdir -p "$(dirname "$out")"
"$freeze" calibrate --model "$model" "${args[@]}" --heldout "$held" | tee "$out.txt"
python3 - "$out.txt" "$out.csv" <<'PY'
import re, sys, os
txt = open(sys.argv[1]).read()
rows = ["variant,val_exits,val_by_mid,val_agreement,held_exits,held_by_mid,held_agreement,cache_bytes"]
for block in txt.split("config       ")[1:]:
    name = os.path.basename(block.split()[0]).replace(".yaml", "")
    v = re.search(r"validation +exits ([\d.]+)%, by block4 ([\d.]+)%, agreement ([\d.]+)%", block)
    h = re.search(r"held-out +exits ([\d.]+)%, by block4 ([\d.]+)%, agreement ([\d.]+)%", block)
    b = re.search(r"cache bytes +(\d+)", block)
    rows.append(",".join([name, *v.groups(), *h.groups(), b.group(1)]))
open(sys.argv[2], "w").write("\n".join(rows) + "\n")
print("\n".join(rows))
PY
