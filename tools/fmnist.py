"""Fashion-MNIST idx reader shared by Freeze's Python tools (trainer, reference checks, perf)."""
import gzip
import os
import struct

import numpy as np

DATA_DIR = os.environ.get("FZ_FMNIST_DIR", "/usr/share/datasets/fashion-mnist")
MEAN = 0.2860
STD = 0.3530


def read_idx(path):
    """Read an idx file (optionally gzipped) into a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an idx file")
    dtype = {0x08: np.uint8}.get(data[2])
    if dtype is None:
        raise ValueError(f"{path}: unsupported idx dtype 0x{data[2]:02x}")
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path}: truncated idx file")
    return arr.reshape(dims)


def load(split):
    """Return (images uint8 [N,28,28], labels uint8 [N]) for split 'train' or 't10k'."""
    img = read_idx(os.path.join(DATA_DIR, f"{split}-images-idx3-ubyte.gz"))
    lab = read_idx(os.path.join(DATA_DIR, f"{split}-labels-idx1-ubyte.gz"))
    return img, lab
