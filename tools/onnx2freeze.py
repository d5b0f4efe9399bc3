#!/usr/bin/python3
"""Import an ONNX model into Freeze: write DIR/model.yaml, DIR/weights.safetensors and a cache
config with a cache point after each residual block, for `freeze infer`, `calibrate`, `eval` and
the appliance.

  tools/onnx2freeze.py MODEL.onnx --out DIR [--mean M[,M..]] [--std S[,S..]] [--name N]
                       [--cache-points LAYER,...]

Reads opsets 11-17 (Debian's python3-onnx). Operators the engine runs today:
  Conv (grouped and depthwise too; dilation 1, a square kernel, equal strides, any pads),
  BatchNormalization, Relu, Add, AveragePool (no padding), MaxPool (any pads),
  GlobalAveragePool,
  Flatten or Reshape ahead of Gemm, Gemm (alpha = beta = 1) or MatMul + Add, and Pad or
  Identity nodes that change nothing (zero pads: PyTorch exports one before AveragePool).
Anything else is refused with the node's name, its op type and why.
The model takes one input of shape [N, C, H, W] fed with (pixels / 255 - mean) / std: give the
mean and std the network was trained with (defaults 0 and 1: raw pixels / 255).
"""
import argparse
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402


class Refused(Exception):
    pass


def refuse(node, why):
    raise Refused(f"node '{node.name or '(unnamed)'}' ({node.op_type}): {why}")


def attrs(node):
    import onnx
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def sanitize(name, used):
    base = re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_").lower() or "layer"
    base = re.sub(r"_+", "_", base)[:48]
    n, k = base, 1
    while n in used:
        k += 1
        n = f"{base}_{k}"
    used.add(n)
    return n


def convert(model, mean, std, name, cache_points=None):
    """ONNX ModelProto -> (model.yaml text, tensors, cache-config text)."""
    import onnx
    from onnx import numpy_helper
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if not 11 <= opset <= 17:
        raise Refused(f"opset {opset}: this importer reads opsets 11-17")
    g = model.graph
    init = {t.name: numpy_helper.to_array(t).astype(np.float32) if
            t.data_type == onnx.TensorProto.FLOAT else numpy_helper.to_array(t) for t in g.initializer}
    consts = {}
    inputs = [i for i in g.input if i.name not in init]
    if len(inputs) != 1:
        raise Refused(f"{len(inputs)} graph inputs: expected one image tensor")
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or not all(dims[1:]):
        raise Refused(f"input '{inputs[0].name}' of shape {dims}: expected [N, C, H, W]")
    c, h, w = dims[1:]
    if len(g.output) != 1:
        raise Refused(f"{len(g.output)} graph outputs: expected one (the logits)")
    # value name -> (freeze layer name or "input", shape (c, h, w))
    val = {inputs[0].name: ("input", (c, h, w))}
    layers, tensors, used, after_add = [], {}, {"input"}, []
    pending_matmul = {}  # MatMul output -> (input value, weight [in, out], node)

    def src(node, i=0):
        v = node.input[i]
        if v not in val:
            refuse(node, f"input '{v}' is not produced by an imported node")
        return val[v]

    def emit(node, kind, inp, shape, **kw):
        lname = sanitize(node.name or node.output[0], used)
        d = {"name": lname, "kind": kind}
        if kind == "add":
            d["inputs"] = inp
        else:
            d["input"] = inp
        d.update(kw)
        d["shape"] = list(shape)
        layers.append(d)
        val[node.output[0]] = (lname, shape)
        return lname

    for node in g.node:
        op, a = node.op_type, attrs(node)
        if op == "Constant":
            consts[node.output[0]] = numpy_helper.to_array(a["value"])
            continue
        if op in ("Identity", "Dropout"):
            val[node.output[0]] = src(node)
            continue
        if op == "Pad":
            pads = a.get("pads")
            if pads is None and len(node.input) > 1:
                p = node.input[1]
                pads = consts.get(p, init.get(p))
            mode = a.get("mode", b"constant")
            if pads is None or np.any(np.asarray(pads) != 0):
                refuse(node, "padding that changes the tensor (only zero pads are folded away)")
            if mode not in (b"constant", "constant"):
                refuse(node, f"pad mode {mode!r}")
            val[node.output[0]] = src(node)
            continue
        if op == "Conv":
            x, (ic, ih, iw) = src(node)
            wgt = init.get(node.input[1])
            if wgt is None:
                refuse(node, "its weights are not a constant initializer")
            grp = int(a.get("group", 1))
            if ic % grp or wgt.shape[0] % grp:
                refuse(node, f"{grp} groups do not divide {ic} input and {wgt.shape[0]} output "
                             "channels")
            if any(d != 1 for d in a.get("dilations", [1, 1])):
                refuse(node, f"dilation {a['dilations']}: the engine runs dilation 1 only")
            k = wgt.shape[2:]
            if k[0] != k[1]:
                refuse(node, f"kernel {list(k)}: the engine runs square kernels")
            st = a.get("strides", [1, 1])
            if st[0] != st[1]:
                refuse(node, f"strides {st}: the engine runs equal strides")
            pads = a.get("pads", [0, 0, 0, 0])
            if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
                refuse(node, f"auto_pad {a['auto_pad']!r}: give explicit pads")
            if any(p < 0 or p >= k[0] for p in pads):
                refuse(node, f"pads {pads}: each below the kernel ({k[0]}) and not negative")
            if wgt.shape[1] * grp != ic:
                refuse(node, f"weights for {wgt.shape[1]} input channels per group, the input "
                             f"has {ic} in {grp} groups")
            oc, kk, s, p = int(wgt.shape[0]), int(k[0]), int(st[0]), int(pads[0])
            oh = (ih + pads[0] + pads[2] - kk) // s + 1
            ow = (iw + pads[1] + pads[3] - kk) // s + 1
            bias = len(node.input) > 2 and node.input[2] in init
            kw = {"groups": grp} if grp > 1 else {}
            # ONNX's [top, left, bottom, right]; one `pad` when all four are equal
            kw.update({"pad": p} if len(set(pads)) == 1 else {"pads": [int(x) for x in pads]})
            ln = emit(node, "conv", x, (oc, oh, ow), out_channels=oc, kernel=kk, stride=s,
                      bias=bias, **kw)
            tensors[f"{ln}.weight"] = wgt
            if bias:
                tensors[f"{ln}.bias"] = init[node.input[2]]
            continue
        if op == "BatchNormalization":
            x, shape = src(node)
            parts = [init.get(i) for i in node.input[1:5]]
            if any(p is None for p in parts):
                refuse(node, "its scale, bias, mean and variance must be constant initializers")
            if len(node.output) > 1 and any(node.output[1:]):
                refuse(node, "training-mode batch normalization (running statistics as outputs)")
            ln = emit(node, "batchnorm", x, shape, eps=float(a.get("epsilon", 1e-5)))
            for part, t in zip(("weight", "bias", "running_mean", "running_var"), parts):
                tensors[f"{ln}.{part}"] = t
            continue
        if op == "Relu":
            x, shape = src(node)
            ln = emit(node, "relu", x, shape)
            if after_add and after_add[-1] == x:
                after_add[-1] = ln  # a residual block ends after its ReLU
            continue
        if op == "Add" and node.output[0] not in pending_matmul:
            if node.input[0] in pending_matmul or node.input[1] in pending_matmul:
                mm = node.input[0] if node.input[0] in pending_matmul else node.input[1]
                b = init.get(node.input[1] if mm == node.input[0] else node.input[0])
                x, wgt, mnode = pending_matmul.pop(mm)
                if b is None:
                    refuse(node, "MatMul + Add needs a constant bias")
                xl, shape = x
                ln = emit(node, "fc", xl, (wgt.shape[1], 1, 1), out_features=int(wgt.shape[1]))
                tensors[f"{ln}.weight"] = np.ascontiguousarray(wgt.T)
                tensors[f"{ln}.bias"] = b.reshape(-1)
                continue
            if node.input[0] in init or node.input[1] in init:
                refuse(node, "adding a constant: only the sum of two activations (a residual)")
            (x0, s0), (x1, s1) = src(node, 0), src(node, 1)
            if s0 != s1:
                refuse(node, f"shapes {s0} and {s1} differ (no broadcasting)")
            ln = emit(node, "add", [x0, x1], s0)
            after_add.append(ln)
            continue
        if op == "AveragePool":
            x, (ic, ih, iw) = src(node)
            k, st = a.get("kernel_shape"), a.get("strides", a.get("kernel_shape"))
            if any(p != 0 for p in a.get("pads", [0, 0, 0, 0])) or a.get("ceil_mode", 0):
                refuse(node, "average pooling with padding or ceil_mode")
            if k[0] != k[1] or st[0] != st[1]:
                refuse(node, f"kernel {k}, strides {st}: the engine pools square windows")
            kk, s = int(k[0]), int(st[0])
            emit(node, "avgpool", x, (ic, (ih - kk) // s + 1, (iw - kk) // s + 1), kernel=kk,
                 stride=s)
            continue
        if op == "GlobalAveragePool":
            x, (ic, _, _) = src(node)
            emit(node, "global_avgpool", x, (ic, 1, 1))
            continue
        if op in ("Flatten", "Reshape"):
            x, shape = src(node)
            if shape[1:] != (1, 1):
                refuse(node, f"flattening a {shape[0]}x{shape[1]}x{shape[2]} tensor: only "
                             "C x 1 x 1 (after global pooling) ahead of Gemm")
            val[node.output[0]] = (x, shape)
            continue
        if op == "Gemm":
            x, shape = src(node)
            wgt = init.get(node.input[1])
            if wgt is None or a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or \
                    a.get("beta", 1.0) != 1.0:
                refuse(node, "only Gemm with constant weights, transA 0, alpha = beta = 1")
            if not a.get("transB", 0):
                wgt = wgt.T
            if wgt.shape[1] != shape[0]:
                refuse(node, f"weights for {wgt.shape[1]} inputs, the input has {shape[0]}")
            ln = emit(node, "fc", x, (wgt.shape[0], 1, 1), out_features=int(wgt.shape[0]))
            tensors[f"{ln}.weight"] = np.ascontiguousarray(wgt)
            b = init.get(node.input[2]) if len(node.input) > 2 else None
            tensors[f"{ln}.bias"] = b.reshape(-1) if b is not None else \
                np.zeros(wgt.shape[0], np.float32)
            continue
        if op == "MatMul":
            x = src(node)
            wgt = init.get(node.input[1])
            if wgt is None or wgt.ndim != 2 or x[1][1:] != (1, 1):
                refuse(node, "only MatMul of a flattened C x 1 x 1 tensor by constant weights")
            pending_matmul[node.output[0]] = (x, wgt, node)
            continue
        if op == "MaxPool":
            x, (ic, ih, iw) = src(node)
            k, st = a.get("kernel_shape"), a.get("strides", [1, 1])
            pads = a.get("pads", [0, 0, 0, 0])
            if a.get("ceil_mode", 0) or any(d != 1 for d in a.get("dilations", [1, 1])) or \
                    len(node.output) > 1 and node.output[1]:
                refuse(node, "max pooling with ceil_mode, dilation or indices")
            if k[0] != k[1] or st[0] != st[1]:
                refuse(node, f"kernel {k}, strides {st}: the engine pools square windows")
            if any(p < 0 or p >= k[0] for p in pads):
                refuse(node, f"pads {pads}: each below the kernel ({k[0]}) and not negative")
            kk, s = int(k[0]), int(st[0])
            kw = {"pad": int(pads[0])} if len(set(pads)) == 1 else {"pads": [int(x) for x in pads]}
            emit(node, "maxpool", x, (ic, (ih + pads[0] + pads[2] - kk) // s + 1,
                                      (iw + pads[1] + pads[3] - kk) // s + 1),
                 kernel=kk, stride=s, **kw)
            continue
        refuse(node, "not an operator the engine runs")
    if pending_matmul:
        n = next(iter(pending_matmul.values()))[2]
        refuse(n, "MatMul without the Add of a bias")
    out = g.output[0].name
    if out not in val:
        raise Refused(f"graph output '{out}' is not produced by an imported node")
    out_layer, out_shape = val[out]
    if layers[-1]["name"] != out_layer or layers[-1]["kind"] != "fc":
        raise Refused(f"the output ('{out_layer}') must be the last layer, a Gemm/MatMul (fc)")
    mean = (mean or [0.0]) * (c if len(mean or [0]) == 1 else 1)
    std = (std or [1.0]) * (c if len(std or [1]) == 1 else 1)
    if len(mean) != c or len(std) != c:
        raise Refused(f"--mean/--std give {len(mean)}/{len(std)} values for {c} channels")
    y = [f"# {name}: imported from ONNX by tools/onnx2freeze.py", f"name: {name}",
         "weights: weights.safetensors", "input:", "  name: input", "  dtype: f32",
         f"  shape: [{c}, {h}, {w}]", f"  mean: [{', '.join(repr(float(m)) for m in mean)}]",
         f"  std: [{', '.join(repr(float(s)) for s in std)}]", "  scale: 255", "layers:"]
    for d in layers:
        items = []
        for k, v in d.items():
            if isinstance(v, bool):
                v = "true" if v else "false"
            elif isinstance(v, list):
                v = "[" + ", ".join(str(x) for x in v) + "]"
            items.append(f"{k}: {v}")
        y.append("  - {" + ", ".join(items) + "}")
    y.append(f"output: {out_layer}")
    points = cache_points if cache_points is not None else after_add
    names = {d["name"] for d in layers}
    for p in points:
        if p not in names:
            raise Refused(f"cache point '{p}': no such layer (layers: {', '.join(sorted(names))})")
    cc = ["# cache points of the imported model: after each residual block unless given",
          "# (tools/onnx2freeze.py --cache-points); k-means caches, calibrated by `freeze calibrate`",
          "defaults: {kind: kmeans, key: {grid: 2, dims: 64, l2: true}, size: 256}",
          "caches:"] + [f"  - {{layer: {p}}}" for p in points]
    return "\n".join(y) + "\n", tensors, "\n".join(cc) + "\n" if points else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("onnx")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--mean", help="per-channel mean of pixels / 255 (comma list)")
    ap.add_argument("--std", help="per-channel std (comma list)")
    ap.add_argument("--name", help="model name (default: the file's)")
    ap.add_argument("--cache-points", help="comma list of layer names (default: after each "
                                           "residual block)")
    a = ap.parse_args(argv)
    try:
        import onnx
    except ImportError:
        print("onnx2freeze: needs Debian's python3-onnx (tools/setup-debian.sh)", file=sys.stderr)
        return 2
    try:
        model = onnx.load(a.onnx)
        onnx.checker.check_model(model)
    except Exception as e:  # a corrupt or invalid file is refused whole
        print(f"onnx2freeze: {a.onnx}: not a valid ONNX model: {e}", file=sys.stderr)
        return 1
    name = a.name or re.sub(r"[^A-Za-z0-9_-]", "-", os.path.splitext(os.path.basename(a.onnx))[0])
    fl = lambda s: [float(x) for x in s.split(",")] if s else None  # noqa: E731
    try:
        text, tensors, cache_cfg = convert(model, fl(a.mean), fl(a.std), name,
                                           a.cache_points.split(",") if a.cache_points else None)
    except Refused as e:
        print(f"onnx2freeze: {a.onnx}: refused: {e}", file=sys.stderr)
        return 1
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "model.yaml"), "w") as f:
        f.write(text)
    safetensors_io.save(os.path.join(a.out, "weights.safetensors"),
                        {k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()})
    if cache_cfg:
        with open(os.path.join(a.out, "cache-config.yaml"), "w") as f:
            f.write(cache_cfg)
    n_layers = text.count("\n  - {")
    print(f"onnx2freeze: {a.onnx} -> {a.out}/model.yaml ({n_layers} layers), "
          f"weights.safetensors ({len(tensors)} tensors)"
          + (", cache-config.yaml" if cache_cfg else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
