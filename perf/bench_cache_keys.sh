#!/bin/bash
# Which cache key and kind win: calibrate each variant on train[0, 55k) (45k build + 10k
# validation), then measure on the held-out train[55k, 60k). The test set is never touched.
# Usage: perf/bench_cache_keys.sh [BUILD_DIR] [variant ...]   -> perf/results/cache_keys.csv
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-cache}
shift || true
freeze=$build/pipeline/freeze
model=${FZ_MODEL:-models/resnet18-w16-fmnist/model.yaml}
nb=${FZ_BUILD:-45000} nv=${FZ_VAL:-10000} held=${FZ_HELD:-5000}
data=/usr/share/datasets/fashion-mnist
out=${FZ_OUT:-perf/results/cache_keys.csv}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# name | kind | grid | dims | l2 | size | k | budget
variants=(
  "g1-l2|kmeans|1|0|true|512|1|0.004"
  "g1-raw|kmeans|1|0|false|512|1|0.004"
  "g2-l2|kmeans|2|0|true|512|1|0.004"
  "g2-pca32-l2|kmeans|2|32|true|512|1|0.004"
  "g2-pca16-l2|kmeans|2|16|true|512|1|0.004"
  "g1-pca16-l2|kmeans|1|16|true|512|1|0.004"
  "g1-l2-256|kmeans|1|0|true|256|1|0.004"
  "g1-l2-1024|kmeans|1|0|true|1024|1|0.004"
  "knn-g1-pca16-l2-k8|knn|1|16|true|2048|8|0.004"
  "knn-g2-pca32-l2-k8|knn|2|32|true|1024|8|0.004"
)
[ $# -gt 0 ] && variants=("$@")
[ -f "$out" ] || echo "variant,kind,grid,dims,l2,size,k,budget,val_exits,val_by_mid,val_agreement,heldout_exit_by_mid,heldout_effective_layers,heldout_agreement,cache_bytes,lookup_ns_total,layer_ns_total" >"$out"
for v in "${variants[@]}"; do
	IFS='|' read -r name kind grid dims l2 size k budget <<<"$v"
	cat >"$tmp/c.yaml" <<YAML
build: $nb
validation: $nv
budget: $budget
defaults: {kind: $kind, key: {grid: $grid, dims: $dims, l2: $l2}, size: $size, k: $k, threshold: budget}
caches: [{layer: block1}, {layer: block2}, {layer: block3}, {layer: block4},
         {layer: block5}, {layer: block6}, {layer: block7}, {layer: block8}]
YAML
	echo "== $name" >&2
	"$freeze" calibrate --model "$model" --cache-config "$tmp/c.yaml" --out "$tmp/c.snap" \
		>"$tmp/cal.txt" 2>"$tmp/cal.err"
	cat "$tmp/cal.txt" >&2
	val=$(awk '/^validation/ {gsub("%|,", ""); print $3 "," $6 "," $8}' "$tmp/cal.txt")
	"$freeze" eval --model "$model" --cache "$tmp/c.snap" --images $data/train-images-idx3-ubyte.gz \
		--labels $data/train-labels-idx1-ubyte.gz --offset $((nb + nv)) --limit $held --json >"$tmp/e.json"
	held=$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("%.4f,%.4f,%.5f,%d,%.0f,%.0f" % (j["exit_by_mid"], j["effective_layers"], j["agreement"], j["cache_bytes"], j["lookup_ns_total"], j["layer_ns_total"]))' "$tmp/e.json")
	echo "$name,$kind,$grid,$dims,$l2,$size,$k,$budget,$val,$held" | tee -a "$out" >&2
done
