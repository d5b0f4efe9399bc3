#!/usr/bin/python3
"""tools/onnx2freeze.py: small random PyTorch nets with every operator it imports (Conv with and
without bias, BatchNormalization, Relu, Add, AveragePool, MaxPool with padding,
GlobalAveragePool, Flatten/Reshape, Gemm and MatMul + Add) go PyTorch -> ONNX -> Freeze and
`freeze infer` gives PyTorch's logits within 1e-4; graphs it cannot run (MaxPool with ceil_mode,
grouped convolutions, asymmetric padding, unknown operators, a corrupt file) are refused with the
node's name, its op type and why."""
import os
import subprocess
import sys
import tempfile

import numpy as np

SRC = os.environ.get("FZ_SRCDIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BUILD = os.environ.get("FZ_BUILDDIR", os.path.join(SRC, "build"))
FREEZE = os.path.join(BUILD, "pipeline", "freeze")
TOOL = os.path.join(SRC, "tools", "onnx2freeze.py")
sys.path.insert(0, os.path.join(SRC, "tools"))
from workloads import write_idx  # noqa: E402
FAILS = []

try:
    import onnx  # noqa: F401
    import torch
    import torch.nn as nn
except ImportError as e:
    print(f"SKIP: {e} (python3-torch, python3-onnx: tools/setup-debian.sh)")
    sys.exit(77)


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILS.append(what)


MEAN, STD = 0.3, 0.35


class Residual(nn.Module):
    """conv-bn-relu, conv (bias)-add-bn-relu, avgpool, a strided conv, global pool, head."""

    def __init__(self, head):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1, bias=True)
        self.b2 = nn.BatchNorm2d(8)  # after the add: stays a BatchNormalization node
        self.pool = nn.AvgPool2d(2)
        self.c3 = nn.Conv2d(8, 16, 5, stride=2, padding=2, bias=True)
        self.mp = nn.MaxPool2d(3, stride=2, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)  # depthwise
        self.b3 = nn.BatchNorm2d(16)
        self.pw = nn.Conv2d(16, 16, 1)  # pointwise: a depthwise-separable pair
        self.head = head
        self.fc = nn.Linear(16, 10)
        for bn in (self.b1, self.b2):  # statistics that are not the identity
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.2, 0.2)

    def forward(self, x):
        y = torch.relu(self.b1(self.c1(x)))
        y = torch.relu(self.b2(y + self.c2(y)))
        y = torch.relu(self.mp(self.c3(self.pool(y))))  # negative maxima: pads must not win
        y = torch.relu(self.pw(torch.relu(self.b3(self.dw(y)))))
        y = nn.functional.adaptive_avg_pool2d(y, 1)
        if self.head == "gemm":
            return self.fc(torch.flatten(y, 1))
        return torch.reshape(y, (-1, 16)) @ self.fc.weight.t() + self.fc.bias  # MatMul + Add


def export(m, path, opset):
    m.eval()
    torch.onnx.export(m, torch.zeros(1, 1, 28, 28), path, opset_version=opset,
                      input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})


def import_(path, out, *extra):
    return subprocess.run([sys.executable, TOOL, path, "--out", out, "--mean", str(MEAN), "--std",
                           str(STD), *extra], capture_output=True, text=True)


def images(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


def test_logits(d):
    torch.manual_seed(3)
    im = images(64, 1)
    idx = os.path.join(d, "img-idx3-ubyte")
    write_idx(idx, im)
    x = torch.from_numpy((im.astype(np.float32) / 255 - MEAN) / STD).unsqueeze(1)
    for head, opset in (("gemm", 13), ("matmul", 11), ("gemm", 17)):
        m = Residual(head)
        path = os.path.join(d, f"{head}{opset}.onnx")
        export(m, path, opset)
        out = os.path.join(d, f"{head}{opset}")
        r = import_(path, out)
        check(r.returncode == 0, f"{head}/opset {opset}: imported ({r.stderr.strip()[:300]})")
        if r.returncode:
            continue
        with open(os.path.join(out, "model.yaml")) as f:
            kinds = {l.split("kind: ")[1].split(",")[0] for l in f if "kind: " in l}
        want = {"conv", "batchnorm", "relu", "add", "avgpool", "maxpool", "global_avgpool", "fc"}
        check(want <= kinds, f"{head}/opset {opset}: every layer kind imported ({sorted(kinds)})")
        lg = os.path.join(d, f"{head}{opset}.logits")
        p = subprocess.run([FREEZE, "infer", "--model", os.path.join(out, "model.yaml"),
                            "--images", idx, "--logits", lg, "--batch", "16"],
                           capture_output=True, text=True)
        check(p.returncode == 0, f"{head}/opset {opset}: freeze infer runs ({p.stderr.strip()[:300]})")
        if p.returncode:
            continue
        got = np.loadtxt(lg, ndmin=2)
        with torch.no_grad():
            ref = m(x).numpy()
        err = float(np.abs(got - ref).max())
        check(got.shape == ref.shape and err <= 1e-4,
              f"{head}/opset {opset}: logits within 1e-4 of PyTorch's (max error {err:.2e})")
        with open(os.path.join(out, "cache-config.yaml")) as f:
            cc = f.read()
        check("layer:" in cc, f"{head}/opset {opset}: cache points after the residual block")


class Bad(nn.Module):
    def __init__(self, what):
        super().__init__()
        self.what = what
        self.c = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        y = self.c(x)
        y = nn.functional.max_pool2d(y, 2, ceil_mode=True) if self.what == "maxpool" \
            else torch.sigmoid(y)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


def conv_graph(path, group, pads, dil=1):
    """conv (group, pads) -> global pool -> flatten -> gemm, made with onnx.helper."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, max(1, 4 // group), 3, 3)).astype(np.float32),
                                "w")
    fw = numpy_helper.from_array(rng.standard_normal((10, 4)).astype(np.float32), "fw")
    fb = numpy_helper.from_array(np.zeros(10, np.float32), "fb")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="the_conv", group=group,
                              kernel_shape=[3, 3], pads=pads, dilations=[dil, dil]),
             helper.make_node("GlobalAveragePool", ["c"], ["p"], name="gap"),
             helper.make_node("Flatten", ["p"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="head", transB=1)]
    g = helper.make_graph(nodes, "bad", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                        [1, 4, 28, 28])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                          initializer=[w, fw, fb])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)


def test_asymmetric_pads(d):
    """ONNX pads [top, left, bottom, right] that differ, on a conv and a max pool (a graph made
    with onnx.helper): freeze infer against the same arithmetic in PyTorch (explicit F.pad)."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    fw = rng.standard_normal((10, 4)).astype(np.float32)
    fb = rng.standard_normal(10).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", kernel_shape=[3, 3],
                              pads=[2, 0, 1, 2], strides=[2, 2]),
             helper.make_node("MaxPool", ["c"], ["m"], name="pool", kernel_shape=[3, 3],
                              pads=[0, 1, 2, 0], strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["m"], ["p"], name="gap"),
             helper.make_node("Flatten", ["p"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="head", transB=1)]
    g = helper.make_graph(nodes, "asym", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         [1, 1, 28, 28])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                          initializer=[numpy_helper.from_array(w, "w"),
                                       numpy_helper.from_array(b, "b"),
                                       numpy_helper.from_array(fw, "fw"),
                                       numpy_helper.from_array(fb, "fb")])
    path = os.path.join(d, "asym.onnx")
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)
    out = os.path.join(d, "asym")
    r = import_(path, out)
    check(r.returncode == 0, f"asymmetric pads: imported ({r.stderr.strip()[:300]})")
    if r.returncode:
        return
    im = images(32, 2)
    idx = os.path.join(d, "asym-idx3-ubyte")
    write_idx(idx, im)
    lg = os.path.join(d, "asym.logits")
    p = subprocess.run([FREEZE, "infer", "--model", os.path.join(out, "model.yaml"), "--images",
                        idx, "--logits", lg], capture_output=True, text=True)
    check(p.returncode == 0, f"asymmetric pads: freeze infer runs ({p.stderr.strip()[:300]})")
    if p.returncode:
        return
    x = torch.from_numpy((im.astype(np.float32) / 255 - MEAN) / STD).unsqueeze(1)
    F = nn.functional
    with torch.no_grad():  # F.pad takes (left, right, top, bottom)
        c = F.conv2d(F.pad(x, (0, 2, 2, 1)), torch.from_numpy(w), torch.from_numpy(b), stride=2)
        m = F.max_pool2d(F.pad(c, (1, 0, 0, 2), value=float("-inf")), 3, stride=2)
        ref = (F.adaptive_avg_pool2d(m, 1).flatten(1) @ torch.from_numpy(fw).t() +
               torch.from_numpy(fb)).numpy()
    got = np.loadtxt(lg, ndmin=2)
    err = float(np.abs(got - ref).max()) if got.shape == ref.shape else float("inf")
    check(err <= 1e-4, f"asymmetric pads: logits within 1e-4 of PyTorch's (max error {err:.2e})")


def test_refused(d):
    cases = []
    for what in ("maxpool", "sigmoid"):
        path = os.path.join(d, f"bad-{what}.onnx")
        export(Bad(what), path, 13)
        cases.append((what, path, {"maxpool": "(MaxPool): max pooling with ceil_mode",
                                   "sigmoid": "(Sigmoid): not an operator"}[what]))
    for what, group, pads, dil, words in (
            ("group", 3, [1, 1, 1, 1], 1, "3 groups do not divide 4"),
            ("dilation", 1, [1, 1, 1, 1], 2, "dilation [2, 2]: the engine runs dilation 1 only")):
        path = os.path.join(d, f"bad-{what}.onnx")
        conv_graph(path, group, pads, dil)
        cases.append((what, path, words))
    for what, path, words in cases:
        r = import_(path, os.path.join(d, f"bad-{what}"))
        msg = r.stderr.strip()
        named = "node 'the_conv' (Conv): " in msg if what in ("group", "dilation") else True
        check(r.returncode == 1 and "refused: node '" in msg and words in msg and named,
              f"refused: {what}: {msg[:200]}")
        check(not os.path.exists(os.path.join(d, f"bad-{what}", "model.yaml")),
              f"refused: {what}: nothing written")
    path = os.path.join(d, "corrupt.onnx")
    with open(path, "wb") as f:
        f.write(b"\x08\x07garbage" * 10)
    r = import_(path, os.path.join(d, "corrupt"))
    check(r.returncode == 1 and "not a valid ONNX model" in r.stderr, "refused: a corrupt file")


def main():
    if not os.path.exists(FREEZE):
        print(f"SKIP: no {FREEZE}")
        sys.exit(77)
    d = tempfile.mkdtemp(prefix="fz-onnx-")
    for t in (test_logits, test_asymmetric_pads, test_refused):
        print(f"== {t.__name__}", flush=True)
        try:
            t(d)
        except Exception as e:  # one case failing does not stop the others
            check(False, f"{t.__name__}: {type(e).__name__}: {e}")
    print(f"{len(FAILS)} failed")
    sys.exit(1 if FAILS else 0)


if __name__ == "__main__":
    main()
