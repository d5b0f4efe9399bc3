#!/bin/bash
# The paper's table on the 10k test set: oracle / knn / kmeans, each calibrated on the train
# set only (50k build + 10k validation), then evaluated once on t10k (nothing tuned on it).
# Usage: perf/bench_cache_table.sh [BUILD_DIR]  -> perf/results/cache_table.{csv,md}
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-cache}
freeze=$build/pipeline/freeze
dir=models/resnet18-w16-fmnist
model=$dir/model.yaml
data=/usr/share/datasets/fashion-mnist
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
test_set=(--images $data/t10k-images-idx3-ubyte.gz --labels $data/t10k-labels-idx1-ubyte.gz)

# the shipped kmeans snapshot, and a knn one calibrated the same way
[ -f "$dir/cache.snap" ] || "$freeze" calibrate --model "$model" --cache-config "$dir/cache-config.yaml" --out "$dir/cache.snap"
if [ -n "${KNN_SNAP:-}" ]; then cp "$KNN_SNAP" "$tmp/knn.snap"; else
	"$freeze" calibrate --model "$model" --cache-config config/examples/cache-knn.yaml --out "$tmp/knn.snap" >"$tmp/knn.txt"
fi
"$freeze" eval --model "$model" --cache "$dir/cache.snap" "${test_set[@]}" --json --oracle >"$tmp/oracle-kmeans.json"
"$freeze" eval --model "$model" --cache "$tmp/knn.snap" "${test_set[@]}" --json --oracle >"$tmp/oracle-knn.json"
"$freeze" eval --model "$model" --cache "$tmp/knn.snap" "${test_set[@]}" --json >"$tmp/knn.json"
"$freeze" eval --model "$model" --cache "$dir/cache.snap" "${test_set[@]}" --json >"$tmp/kmeans.json"
python3 - "$tmp" <<'PY'
import json, sys, os
tmp = sys.argv[1]
rows = [("oracle (k-means caches)", "oracle-kmeans"), ("oracle (knn caches)", "oracle-knn"),
        ("knn", "knn"), ("kmeans (shipped)", "kmeans")]
csv = ["design,requests,exit_by_mid,effective_layers,effective_macs,agreement,accuracy,full_model_accuracy,cache_bytes,lookup_ns_total,layer_ns_total,images_per_s_full,images_per_s_cascade"]
md = ["| design | exit at or before block4 | effective layers | agreement | accuracy (full model) | cache bytes | lookup ns / layer ns per request | images/s full -> cascade |",
      "|---|---|---|---|---|---|---|---|"]
for name, f in rows:
    j = json.load(open(os.path.join(tmp, f + ".json")))
    casc = j.get("images_per_s_cascade")
    csv.append(",".join(str(x) for x in [name, j["requests"], j["exit_by_mid"], j["effective_layers"], j["effective_macs"], j["agreement"], j["accuracy"], j["full_model_accuracy"], j["cache_bytes"], j["lookup_ns_total"], j["layer_ns_total"], j["images_per_s_full"], casc if casc else ""]))
    md.append("| %s | %.2f%% | %.3f | %.2f%% | %.2f%% (%.2f%%) | %d | %.0f / %.0f | %s |" % (
        name, 100 * j["exit_by_mid"], j["effective_layers"], 100 * j["agreement"], 100 * j["accuracy"],
        100 * j["full_model_accuracy"], j["cache_bytes"], j["lookup_ns_total"], j["layer_ns_total"],
        "%.0f -> %.0f" % (j["images_per_s_full"], casc) if casc else "-"))
os.makedirs("perf/results", exist_ok=True)
open("perf/results/cache_table.csv", "w").write("\n".join(csv) + "\n")
open("perf/results/cache_table.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
for f in ["kmeans", "knn"]:
    j = json.load(open(os.path.join(tmp, f + ".json")))
    print(f, "exit_histogram", j["exit_histogram"])
    print(f, "lookup_over_layer", j["lookup_over_layer"])
PY
