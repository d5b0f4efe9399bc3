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
grep -Eq '^block4 +knn' "$tmp/cal.txt"
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
# learned caches: predictors from the shipped heads file, one confirmed by k-means; a point
# whose lookups cost more than its exits save is reported switched off, never silently kept
heads=$(cd "$src" && pwd)/models/resnet18-w16-fmnist/cache-heads.safetensors
cat >"$tmp/learned.yaml" <<YAML
build: 3000
validation: 1000
budget: 0.005
heads: $heads
defaults: {kind: learned, key: {grid: 4}, threshold: budget}
caches:
  - {layer: stem_relu, confirm: true, key: {grid: 4, dims: 16, l2: true}, size: 64}
  - {layer: block2}
YAML
"$freeze" calibrate --model "$model" --cache-config "$tmp/learned.yaml" --out "$tmp/l.snap" \
	>"$tmp/lcal.txt" 2>"$tmp/lcal.err"
grep -Eq '^stem_relu +learned +g4/mlp64 ' "$tmp/lcal.txt"
grep -Eq '^block2 +learned .*(budget|no-payoff)' "$tmp/lcal.txt"
"$freeze" eval --model "$model" --cache "$tmp/l.snap" --images "$data/train-images-idx3-ubyte.gz" \
	--labels "$data/train-labels-idx1-ubyte.gz" --offset 5000 --limit 500 --json >"$tmp/leval.json"
python3 - "$tmp/leval.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
assert j["cascade_mismatch"] == 0, j
assert list(j["exit_histogram"]) == ["stem_relu", "block2", "full"], j["exit_histogram"]
assert j["exit_histogram"]["stem_relu"] > 0 and j["agreement"] > 0.97, j
p = j["points"]  # per point: hit rate, precision of its exits, payoff per request
assert list(p) == ["stem_relu", "block2"], p
assert abs(p["stem_relu"]["hit_rate"] * 500 - j["exit_histogram"]["stem_relu"]) < 1e-6, p
assert 0.9 <= p["stem_relu"]["precision"] <= 1 and p["stem_relu"]["kind"] == "learned", p
assert p["stem_relu"]["payoff_ns"] > 0, p  # the stem's exits skip nearly the whole model
PY
# a learned cache without its predictors' file is refused with file:line:column
printf 'caches:\n  - {layer: block2, kind: learned}\n' >"$tmp/nohead.yaml"
if "$freeze" calibrate --model "$model" --cache-config "$tmp/nohead.yaml" --out "$tmp/x.snap" \
	2>"$tmp/nohead.err"; then
	echo "learned cache without heads accepted"; exit 1
fi
grep -q "nohead.yaml:2:5: .*needs 'heads:'" "$tmp/nohead.err" || { cat "$tmp/nohead.err"; exit 1; }
# freeze plan: N stages covering every layer in order, each with a max_batch
"$freeze" plan --model "$model" --cache "$tmp/l.snap" --stages 2 --images \
	"$data/train-images-idx3-ubyte.gz" --labels "$data/train-labels-idx1-ubyte.gz" --offset 5000 \
	--limit 500 >"$tmp/plan.txt"
[ "$(grep -c '^  - {name: s[12], lcore: [23], layers: ' "$tmp/plan.txt")" = 2 ]
grep -q 'layers: stem\.\.' "$tmp/plan.txt" && grep -q '\.\.fc, max_batch' "$tmp/plan.txt"
# the shipped snapshot loads for the shipped model and answers
snap=$src/models/resnet18-w16-fmnist/cache.snap
if [ -f "$snap" ]; then
	"$freeze" eval --model "$model" --cache "$snap" --images "$data/train-images-idx3-ubyte.gz" \
		--labels "$data/train-labels-idx1-ubyte.gz" --limit 256 --json >"$tmp/shipped.json"
	python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); assert j["cascade_mismatch"] == 0 and j["exit_by_mid"] > 0.2, j' "$tmp/shipped.json"
fi
echo ok
