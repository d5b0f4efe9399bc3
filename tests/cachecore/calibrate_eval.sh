#!/bin/bash
# Integration: freeze calibrate on a small train split, then freeze eval (cascade and oracle) on
# train images that neither the calibration nor the shipped cache heads saw: train[50k, 60k) is cut
# out (the heads trained on train[0, 50k)); calibration builds on its first 3000, sets thresholds
# on the next 3000, and every evaluation runs on its last 4000. There the disagreement with the
# full model must be what the budget promises (a binomial test at the budget), and the oracle must
# exit every request the cascade answered right, no later than the cascade did.
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
# train[50k, 60k) as idx files of their own: calibrate takes build and validation from the start
python3 - "$data" "$tmp" <<'PY'
import gzip, struct, sys
data, tmp = sys.argv[1:]
for kind, ndim in (("images", 3), ("labels", 1)):
    raw = gzip.open(f"{data}/train-{kind}-idx{ndim}-ubyte.gz").read()
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    item = 1
    for x in dims[1:]:
        item *= x
    hdr, first = 4 + 4 * ndim, 50000
    with open(f"{tmp}/heldout-{kind}.idx", "wb") as f:
        f.write(raw[:4] + struct.pack(">I", dims[0] - first) + raw[8:hdr] +
                raw[hdr + first * item:])
PY
images=$tmp/heldout-images.idx labels=$tmp/heldout-labels.idx
# evaluation: the last 4000 of them (calibration uses the first 3000 + 3000)
evalset=(--images "$images" --labels "$labels" --offset 6000 --limit 4000)
# agreement.py EVAL.json BUDGET NV: the disagreement on the evaluation set is what the budget
# promises. Thresholds that allow budget * NV disagreements on NV validation requests promise a
# rate up to the 95 % Wilson upper bound of that share (the validation set is a sample: what the
# thresholds fit to it does not carry over exactly); fail when seeing this many disagreements
# out of n would have probability < 0.001 at that rate (binomial upper tail). A calibrator that
# let through 4x the budget fails it.
cat >"$tmp/agreement.py" <<'PY'
import json, math, sys
j, share, nv = json.load(open(sys.argv[1])), float(sys.argv[2]), int(sys.argv[3])
z = 1.959963984540054
budget = (share + z * z / (2 * nv) + z * math.sqrt(share * (1 - share) / nv + z * z / (4 * nv * nv))) \
    / (1 + z * z / nv)
n = j["requests"]
d = round((1 - j["agreement"]) * n)
def pmf(k):
    return math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) +
                    k * math.log(budget) + (n - k) * math.log1p(-budget))
tail = sum(pmf(k) for k in range(d, n + 1))
print(f"{sys.argv[1]}: {d} of {n} disagree with the full model ({100 * d / n:.2f} %; budget "
      f"{100 * share:.2f} % on {nv} validation requests, up to {100 * budget:.2f} %): "
      f"P(>= {d} | {100 * budget:.2f} %) = {tail:.2g}")
assert tail >= 1e-3, "disagreement above the budget"
PY
cat >"$tmp/caches.yaml" <<'YAML'
build: 3000
validation: 3000
budget: 0.005
defaults: {kind: kmeans, key: {grid: 1, l2: true}, size: 64, threshold: budget}
caches:
  - {layer: block2}
  - {layer: block4, kind: knn, k: 4, size: 256, key: {grid: 2, dims: 16}}
  - {layer: block6, capacity: 16, online: true}
YAML
"$freeze" calibrate --model "$model" --cache-config "$tmp/caches.yaml" --out "$tmp/c.snap" \
	--images "$images" --labels "$labels" >"$tmp/cal.txt" 2>"$tmp/cal.err"
grep -Eq '^block4 +knn' "$tmp/cal.txt"
grep -q '^validation' "$tmp/cal.txt"
# held-out train images (nothing is tuned on the test set, nothing evaluated on what built it)
"$freeze" eval --model "$model" --cache "$tmp/c.snap" "${evalset[@]}" --json \
	--dump "$tmp/eval.csv" >"$tmp/eval.json"
python3 - "$tmp/eval.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
for k in ["requests", "exit_histogram", "exit_by_mid", "effective_layers", "agreement", "accuracy",
          "full_model_accuracy", "cache_bytes", "lookup_ns", "layer_ns"]:
    assert k in j, k
assert j["requests"] == 4000 and sum(j["exit_histogram"].values()) == 4000
assert list(j["exit_histogram"]) == ["block2", "block4", "block6", "full"]
assert j["exit_histogram"]["full"] < 4000, j["exit_histogram"]  # the caches answer some
assert j["cascade_mismatch"] == 0, j["cascade_mismatch"]
assert 0 < j["effective_layers"] < 1
PY
python3 "$tmp/agreement.py" "$tmp/eval.json" 0.005 3000
# the oracle exits at the first point whose cache knows the full model's answer: every request
# the cascade answered right at a point, it answers at that point or earlier
"$freeze" eval --model "$model" --cache "$tmp/c.snap" "${evalset[@]}" --oracle --json \
	--dump "$tmp/oracle.csv" >"$tmp/oracle.json"
python3 - "$tmp/eval.csv" "$tmp/oracle.csv" <<'PY'
import csv, sys
c, o = ({int(r["index"]): r for r in csv.DictReader(open(f))} for f in sys.argv[1:])
assert sorted(c) == sorted(o) and len(c) == 4000, (len(c), len(o))
right = [i for i, r in c.items() if int(r["exit_layer"]) >= 0 and r["label"] == r["full_label"]]
late = [i for i in right if not 0 <= int(o[i]["exit_layer"]) <= int(c[i]["exit_layer"])]
wrong = [i for i, r in o.items() if r["label"] != r["full_label"]]
exits = sum(int(r["exit_layer"]) >= 0 for r in o.values())
print(f"oracle: {exits} exits; the cascade's {len(right)} right exits all at or after the "
      f"oracle's: {not late}; oracle answers unlike the full model: {len(wrong)}")
assert right and not late and not wrong, (late[:5], wrong[:5])
PY
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
validation: 3000
budget: 0.005
heads: $heads
defaults: {kind: learned, key: {grid: 4}, threshold: budget}
caches:
  - {layer: stem_relu, confirm: true, key: {grid: 4, dims: 16, l2: true}, size: 64}
  - {layer: block2}
YAML
"$freeze" calibrate --model "$model" --cache-config "$tmp/learned.yaml" --out "$tmp/l.snap" \
	--images "$images" --labels "$labels" >"$tmp/lcal.txt" 2>"$tmp/lcal.err"
grep -Eq '^stem_relu +learned +g4/mlp64 ' "$tmp/lcal.txt"
grep -Eq '^block2 +learned .*(budget|no-payoff)' "$tmp/lcal.txt"
"$freeze" eval --model "$model" --cache "$tmp/l.snap" "${evalset[@]}" --json >"$tmp/leval.json"
python3 - "$tmp/leval.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
assert j["cascade_mismatch"] == 0, j
assert list(j["exit_histogram"]) == ["stem_relu", "block2", "full"], j["exit_histogram"]
assert j["exit_histogram"]["stem_relu"] > 0, j
p = j["points"]  # per point: hit rate, precision of its exits, payoff per request
assert list(p) == ["stem_relu", "block2"], p
assert abs(p["stem_relu"]["hit_rate"] * 4000 - j["exit_histogram"]["stem_relu"]) < 1e-6, p
assert 0.9 <= p["stem_relu"]["precision"] <= 1 and p["stem_relu"]["kind"] == "learned", p
assert p["stem_relu"]["payoff_ns"] > 0, p  # the stem's exits skip nearly the whole model
PY
python3 "$tmp/agreement.py" "$tmp/leval.json" 0.005 3000
# a learned cache without its predictors' file is refused with file:line:column
printf 'caches:\n  - {layer: block2, kind: learned}\n' >"$tmp/nohead.yaml"
if "$freeze" calibrate --model "$model" --cache-config "$tmp/nohead.yaml" --out "$tmp/x.snap" \
	2>"$tmp/nohead.err"; then
	echo "learned cache without heads accepted"; exit 1
fi
grep -q "nohead.yaml:2:5: .*needs 'heads:'" "$tmp/nohead.err" || { cat "$tmp/nohead.err"; exit 1; }
# freeze plan: N stages covering every layer in order, each with a max_batch
"$freeze" plan --model "$model" --cache "$tmp/l.snap" --stages 2 --images "$images" \
	--labels "$labels" --offset 6000 --limit 500 >"$tmp/plan.txt"
[ "$(grep -c '^  - {name: s[12], lcore: [23], layers: ' "$tmp/plan.txt")" = 2 ]
grep -q 'layers: stem\.\.' "$tmp/plan.txt" && grep -q '\.\.fc, max_batch' "$tmp/plan.txt"
# the shipped snapshot loads for the shipped model and answers, on test images (it was built and
# calibrated on the whole train set; the test set only ever evaluates)
snap=$src/models/resnet18-w16-fmnist/cache.snap
if [ -f "$snap" ]; then
	"$freeze" eval --model "$model" --cache "$snap" --images "$data/t10k-images-idx3-ubyte.gz" \
		--labels "$data/t10k-labels-idx1-ubyte.gz" --limit 256 --json >"$tmp/shipped.json"
	python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); assert j["cascade_mismatch"] == 0 and j["exit_by_mid"] > 0.2, j' "$tmp/shipped.json"
fi
echo ok
