#!/bin/bash
# Integration: freeze calibrate on a small train split, then freeze eval (cascade and oracle) on it.
set -euo pipefail
src=${FZ_SRCDIR:?} build=${FZ_BUILDDIR:?} data=${FZ_FMNIST_DIR:-/usr/share/datasets/fashion-mnist}
model=$src/models/resnet18-w16-fmnist/model.yaml
freeze=$build/pipeline/freeze
if [ ! -f "$model" ] || [ ! -f "$data/train-images-idx3-ubyte.gz" ]; then
	echo "skip: needs $model and Fashion-MNIST in $data"
	exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/caches.yaml" <<'YAML'
build: 3000
validation: 1000
budget: 0.005
defaults: {kind: kmeans, key: {grid: 1, l2: true}, size: 64, threshold: budget}
caches:
  - {layer: block2}
  - {layer: block4, kind: knn, k: 4, size: 256, key: {grid: 2, dims: 16}}
  - {layer: block6, capacity: 16, online: true}
YAML
"$freeze" calibrate --model "$model" --cache-config "$tmp/caches.yaml" --out "$tmp/c.snap" \
	>"$tmp/cal.txt" 2>"$tmp/cal.err"
grep -q '^block4   knn' "$tmp/cal.txt"
grep -q '^validation' "$tmp/cal.txt"
# a functional check on train images (nothing is tuned on the test set)
"$freeze" eval --model "$model" --cache "$tmp/c.snap" --images "$data/train-images-idx3-ubyte.gz" \
	--labels "$data/train-labels-idx1-ubyte.gz" --limit 500 --json >"$tmp/eval.json"
python3 - "$tmp/eval.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
for k in ["requests", "exit_histogram", "exit_by_mid", "effective_layers", "agreement", "accuracy",
          "full_model_accuracy", "cache_bytes", "lookup_ns", "layer_ns"]:
    assert k in j, k
assert j["requests"] == 500 and sum(j["exit_histogram"].values()) == 500
assert list(j["exit_histogram"]) == ["block2", "block4", "block6", "full"]
assert j["cascade_mismatch"] == 0, j["cascade_mismatch"]
assert 0 < j["effective_layers"] <= 1
PY
"$freeze" eval --model "$model" --cache "$tmp/c.snap" --images "$data/train-images-idx3-ubyte.gz" \
	--labels "$data/train-labels-idx1-ubyte.gz" --limit 500 --oracle --json >"$tmp/oracle.json"
python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); assert j["agreement"] == 1.0' "$tmp/oracle.json"
# a corrupt snapshot is refused whole, with the file named
printf 'X' | dd of="$tmp/c.snap" bs=1 seek=100 conv=notrunc status=none
if "$freeze" eval --model "$model" --cache "$tmp/c.snap" --images "$data/t10k-images-idx3-ubyte.gz" \
	--labels "$data/t10k-labels-idx1-ubyte.gz" --limit 10 2>"$tmp/bad.err"; then
	echo "corrupt snapshot accepted"; exit 1
fi
grep -q "c.snap: checksum mismatch" "$tmp/bad.err"
# the shipped snapshot loads for the shipped model and answers
snap=$src/models/resnet18-w16-fmnist/cache.snap
if [ -f "$snap" ]; then
	"$freeze" eval --model "$model" --cache "$snap" --images "$data/train-images-idx3-ubyte.gz" \
		--labels "$data/train-labels-idx1-ubyte.gz" --limit 256 --json >"$tmp/shipped.json"
	python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); assert j["cascade_mismatch"] == 0 and j["exit_by_mid"] > 0.2, j' "$tmp/shipped.json"
fi
echo ok
