#!/usr/bin/python3
"""Freeze perf workloads: request streams made from the Fashion-MNIST TEST set, written as idx files.

  workloads.py gen iid      -o DIR/iid      [--count N] [--seed S]
  workloads.py gen temporal -o DIR/temporal [--count N] [--scene-len L]
  workloads.py gen zipf     -o DIR/zipf     [--count N] [--zipf-s S] [--zipf-items K]
  workloads.py gen ood      -o DIR/ood      [--count N]

Each writes PREFIX-images-idx3-ubyte, PREFIX-labels-idx1-ubyte and PREFIX.json (the parameters and,
per request, where it came from). Feed the idx files to `fzgen.py gen --images --labels` for a
request pcap, to `freeze eval`, or to `freeze infer`.

  iid       the test set in a random order (a fresh permutation for every 10k requests)
  temporal  "scenes": one test image shown for L frames while it drifts by a pixel or two, with
            sensor noise and a slowly changing brightness (video-like locality, as in GATI)
  zipf      exact repeats of K test images drawn with Zipf popularity p(rank r) ~ 1 / r^s
  ood       inputs unlike the training data: uniform noise, inverted test images, rendered
            digits and letters (DejaVu fonts), stripes and checkerboards. They have no label
            (label byte 255): measure agreement with the full model on them instead.

The caches are built from the train split only, so nothing here ever reaches calibration.

Also here: the transformations of the transformation suite (`TRANSFORMS`, `transform(name,
images, seed)`: inversion, contrast and brightness changes, blur, noise, small shifts and
rotations, occlusion) and `digits(count)`, digits rendered in DejaVu fonts (another distribution).
"""
import argparse
import json
import os
import struct
import sys
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fmnist  # noqa: E402

KINDS = ("iid", "temporal", "zipf", "ood")
NO_LABEL = 255
OOD_KINDS = ("noise", "inverted", "glyph", "pattern")
FONT_DIR = "/usr/share/fonts/truetype/dejavu"


def _test_set():
    return fmnist.load("t10k")


def gen_iid(count, seed, **_):
    img, lab = _test_set()
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.permutation(len(img)) for _ in range(-(-count // len(img)))])[:count]
    meta = [{"src": int(i)} for i in idx]
    return img[idx].copy(), lab[idx].copy(), meta


def shift(im, dx, dy):
    """Translate by whole pixels, filling with the background (0)."""
    out = np.zeros_like(im)
    h, w = im.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = im[ys, xs]
    return out


# ---- transformations: copies of images that a camera, a scanner or a client could send -------
# Each takes u8 images [N, 28, 28] and a numpy Generator and returns new u8 images of the same
# shape; the random ones draw per image from the generator, so `transform` with the same seed gives
# the same copies. perf/transform.py sends each as its own stream after the originals and measures
# agreement with the full model; tools/calibrate_front.py can take them as negatives.

def _u8(a):
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def t_invert(images, rng):
    """Negative: 255 - x (sign flipped about mid-grey)."""
    return 255 - images


def t_contrast_down(images, rng):
    """Half the contrast, lifted to mid-grey: x / 2 + 64."""
    return _u8(images.astype(np.float32) / 2 + 64)


def t_contrast_up(images, rng):
    """1.5x the contrast about mid-grey: (x - 128) * 1.5 + 128, clipped."""
    return _u8((images.astype(np.float32) - 128) * 1.5 + 128)


def t_brightness_up(images, rng):
    """Brighter: x + 40, clipped (the black background turns dark grey)."""
    return _u8(images.astype(np.float32) + 40)


def t_brightness_down(images, rng):
    """Darker: x - 40, clipped (faint parts vanish into the background)."""
    return _u8(images.astype(np.float32) - 40)


def _gauss_kernel(sigma, radius):
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    k = np.exp(-x * x / (2 * sigma * sigma))
    return k / k.sum()


def t_blur(images, rng, sigma=1.0):
    """Gaussian blur, sigma 1 pixel (5x5, separable; outside the image counts as background 0)."""
    k = _gauss_kernel(sigma, 2)
    a = np.pad(images.astype(np.float32), ((0, 0), (2, 2), (2, 2)))
    h, w = images.shape[1:]
    rows = sum(k[j] * a[:, j:j + h, :] for j in range(5))
    return _u8(sum(k[j] * rows[:, :, j:j + w] for j in range(5)))


def t_noise(images, rng, sigma=12.0):
    """Gaussian sensor noise of sigma 12 grey levels, independent per pixel."""
    return _u8(images.astype(np.float32) + rng.normal(0, sigma, images.shape))


def t_shift(images, rng):
    """Moved by 1 or 2 pixels (dx, dy in -2..2, not both 0), background filling in."""
    out = np.empty_like(images)
    for i, im in enumerate(images):
        while True:
            dx, dy = (int(v) for v in rng.integers(-2, 3, 2))
            if dx or dy:
                break
        out[i] = shift(im, dx, dy)
    return out


def rotate(im, degrees):
    """Rotate one image about its centre (bilinear; outside the image counts as background 0)."""
    h, w = im.shape
    th = np.deg2rad(degrees)
    c, s = np.cos(th), np.sin(th)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    # inverse map: the source of each output pixel
    sx = c * (x - cx) + s * (y - cy) + cx
    sy = -s * (x - cx) + c * (y - cy) + cy
    a = np.pad(im.astype(np.float64), 1)
    x0, y0 = np.floor(sx), np.floor(sy)
    fx, fy = sx - x0, sy - y0
    x0 = np.clip(x0.astype(int) + 1, 0, w)
    y0 = np.clip(y0.astype(int) + 1, 0, h)
    x1, y1 = np.clip(x0 + 1, 0, w + 1), np.clip(y0 + 1, 0, h + 1)
    inside = (sx > -1) & (sx < w) & (sy > -1) & (sy < h)
    v = (a[y0, x0] * (1 - fx) * (1 - fy) + a[y0, x1] * fx * (1 - fy) +
         a[y1, x0] * (1 - fx) * fy + a[y1, x1] * fx * fy)
    return _u8(np.where(inside, v, 0))


def t_rotate(images, rng):
    """Turned by 4 to 10 degrees either way, about the centre."""
    out = np.empty_like(images)
    for i, im in enumerate(images):
        out[i] = rotate(im, float(rng.uniform(4, 10) * rng.choice((-1, 1))))
    return out


def t_occlude(images, rng, size=8):
    """An 8x8 black patch somewhere in the central 20x20 (where the garment is)."""
    out = images.copy()
    for im in out:
        y, x = (int(v) for v in rng.integers(4, 24 - size + 1, 2))
        im[y:y + size, x:x + size] = 0
    return out


TRANSFORMS = {"invert": t_invert, "contrast_down": t_contrast_down, "contrast_up": t_contrast_up,
              "brightness_up": t_brightness_up, "brightness_down": t_brightness_down,
              "blur": t_blur, "noise": t_noise, "shift": t_shift, "rotate": t_rotate,
              "occlude": t_occlude}


def transform(name, images, seed=1):
    """Transformed copies (u8 [N, 28, 28]) of u8 images by TRANSFORMS[name]; the same name, images
    and seed give the same copies, whatever else was drawn before."""
    if name not in TRANSFORMS:
        raise ValueError(f"unknown transformation {name!r}; known: {', '.join(TRANSFORMS)}")
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    out = TRANSFORMS[name](np.asarray(images, np.uint8), rng)
    assert out.dtype == np.uint8 and out.shape == np.shape(images)
    return out


def gen_temporal(count, seed, scene_len=32, max_shift=2, noise=6.0, brightness=0.12, **_):
    """Scenes of scene_len frames: a random walk of shifts within +-max_shift pixels, Gaussian
    noise of `noise` grey levels, brightness drifting within 1 +- `brightness`."""
    img, lab = _test_set()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(img))
    out = np.empty((count, 28, 28), np.uint8)
    labels = np.empty(count, np.uint8)
    meta = []
    scene = 0
    k = 0
    while k < count:
        src = int(order[scene % len(order)])
        base = img[src].astype(np.float32)
        dx = dy = 0
        gain = 1.0 + rng.uniform(-brightness, brightness)
        for f in range(min(scene_len, count - k)):
            if f:
                dx = int(np.clip(dx + rng.integers(-1, 2), -max_shift, max_shift))
                dy = int(np.clip(dy + rng.integers(-1, 2), -max_shift, max_shift))
                gain = float(np.clip(gain + rng.normal(0, brightness / 4),
                                     1 - brightness, 1 + brightness))
            im = shift(base, dx, dy) * gain + rng.normal(0, noise, base.shape)
            out[k] = np.clip(np.rint(im), 0, 255).astype(np.uint8)
            labels[k] = lab[src]
            meta.append({"src": src, "scene": scene, "frame": f, "dx": dx, "dy": dy,
                         "gain": round(gain, 3)})
            k += 1
        scene += 1
    return out, labels, meta


def gen_zipf(count, seed, zipf_s=1.0, zipf_items=1000, **_):
    """count draws from zipf_items distinct test images; rank r has weight 1 / r^zipf_s."""
    img, lab = _test_set()
    rng = np.random.default_rng(seed)
    items = rng.permutation(len(img))[:min(zipf_items, len(img))]
    w = 1.0 / np.arange(1, len(items) + 1) ** zipf_s
    ranks = rng.choice(len(items), size=count, p=w / w.sum())
    idx = items[ranks]
    meta = [{"src": int(i), "rank": int(r) + 1} for i, r in zip(idx, ranks)]
    return img[idx].copy(), lab[idx].copy(), meta


def _fonts():
    return sorted(os.path.join(FONT_DIR, f) for f in os.listdir(FONT_DIR)
                  if f.endswith(".ttf")) if os.path.isdir(FONT_DIR) else []


def _glyph(rng, fonts, chars="0123456789ABEGHKMRWXYZaegkqrs"):
    """A digit or letter rendered in a DejaVu font, like an MNIST/EMNIST sample."""
    from PIL import Image, ImageDraw, ImageFont

    ch = str(rng.choice(list(chars)))
    font = ImageFont.truetype(fonts[rng.integers(len(fonts))], int(rng.integers(16, 25)))
    canvas = Image.new("L", (56, 56), 0)
    ImageDraw.Draw(canvas).text((14, 10), ch, fill=255, font=font)
    canvas = canvas.rotate(float(rng.uniform(-20, 20)), resample=Image.BILINEAR)
    a = np.asarray(canvas, np.float32)
    ys, xs = np.nonzero(a > 0)
    if len(ys):  # centre the glyph's bounding box as MNIST does
        cy, cx = (ys.min() + ys.max()) // 2, (xs.min() + xs.max()) // 2
        a = np.roll(a, (28 - cy, 28 - cx), axis=(0, 1))
    return a[14:42, 14:42], {"glyph": ch}


def digits(count, seed=1):
    """count handwriting-like digits rendered in DejaVu fonts (MNIST's distribution, not Fashion-
    MNIST's), turned by up to 20 degrees: (u8 images [count, 28, 28], digit labels). Raises
    RuntimeError without the fonts or PIL."""
    fonts = _fonts()
    if not fonts:
        raise RuntimeError(f"no DejaVu fonts in {FONT_DIR}")
    rng = np.random.default_rng([seed, zlib.crc32(b"digits")])
    out = np.empty((count, 28, 28), np.uint8)
    labels = np.empty(count, np.uint8)
    for k in range(count):
        a, m = _glyph(rng, fonts, "0123456789")
        out[k] = _u8(a)
        labels[k] = int(m["glyph"])
    return out, labels


def _pattern(rng):
    y, x = np.mgrid[0:28, 0:28]
    kind = int(rng.integers(3))
    if kind == 0:
        p = int(rng.integers(2, 8))
        a = (((x // p) + (y // p)) % 2) * 255.0
        name = f"checker{p}"
    elif kind == 1:
        th = rng.uniform(0, np.pi)
        f = rng.uniform(0.2, 1.2)
        a = 127.5 + 127.5 * np.sin(f * (x * np.cos(th) + y * np.sin(th)))
        name = "stripes"
    else:
        a = np.full((28, 28), float(rng.integers(0, 256)))
        name = "flat"
    return a, {"pattern": name}


def gen_ood(count, seed, **_):
    """Equal parts uniform noise, inverted test images, rendered glyphs and synthetic patterns."""
    img, _lab = _test_set()
    rng = np.random.default_rng(seed)
    fonts = _fonts()
    kinds = [k for k in OOD_KINDS if k != "glyph" or fonts]
    out = np.empty((count, 28, 28), np.uint8)
    meta = []
    for k in range(count):
        kind = kinds[k % len(kinds)]
        m = {"ood": kind}
        if kind == "noise":
            a = rng.uniform(0, 256, (28, 28))
        elif kind == "inverted":
            src = int(rng.integers(len(img)))
            a = t_invert(img[src], rng)
            m["src"] = src
        elif kind == "glyph":
            a, extra = _glyph(rng, fonts)
            m.update(extra)
        else:
            a, extra = _pattern(rng)
            m.update(extra)
        out[k] = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        meta.append(m)
    perm = rng.permutation(count)  # interleave the kinds at random
    return out[perm], np.full(count, NO_LABEL, np.uint8), [meta[i] for i in perm]


GENERATORS = {"iid": gen_iid, "temporal": gen_temporal, "zipf": gen_zipf, "ood": gen_ood}


def write_idx(path, arr):
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, arr.ndim))
        f.write(struct.pack(">" + "I" * arr.ndim, *arr.shape))
        f.write(np.ascontiguousarray(arr, np.uint8).tobytes())


def write(prefix, kind, images, labels, meta, params):
    """Write PREFIX-images-idx3-ubyte, PREFIX-labels-idx1-ubyte, PREFIX.json; returns paths."""
    d = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(d, exist_ok=True)
    paths = {"images": prefix + "-images-idx3-ubyte", "labels": prefix + "-labels-idx1-ubyte",
             "meta": prefix + ".json"}
    write_idx(paths["images"], images)
    write_idx(paths["labels"], labels)
    with open(paths["meta"], "w") as f:
        head = {"kind": kind, "params": params, "count": int(len(images)),
                "labelled": bool(kind != "ood"), "no_label": NO_LABEL,
                "source": "Fashion-MNIST t10k (test split)"}
        f.write(json.dumps(head, indent=1)[:-2] + ',\n "requests": [\n')
        f.write(",\n".join("  " + json.dumps(m, separators=(",", ":")) for m in meta))
        f.write("\n ]\n}\n")
    return paths


def make(kind, prefix, count, seed=1, **params):
    """Generate workload `kind` with `count` requests and write it under `prefix`."""
    if kind not in GENERATORS:
        raise ValueError(f"unknown workload {kind!r}; kinds: {', '.join(KINDS)}")
    images, labels, meta = GENERATORS[kind](count, seed, **params)
    return write(prefix, kind, images, labels, meta, dict(params, seed=seed))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen", help="write one workload as idx files + a JSON description")
    g.add_argument("kind", choices=KINDS)
    g.add_argument("-o", "--output", required=True, help="path prefix of the files to write")
    g.add_argument("-n", "--count", type=int, default=10000)
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--scene-len", type=int, default=32, help="temporal: frames per scene")
    g.add_argument("--max-shift", type=int, default=2, help="temporal: pixels of drift")
    g.add_argument("--noise", type=float, default=6.0, help="temporal: noise sigma (grey levels)")
    g.add_argument("--brightness", type=float, default=0.12, help="temporal: gain range 1+-B")
    g.add_argument("--zipf-s", type=float, default=1.0, help="zipf: skew exponent s")
    g.add_argument("--zipf-items", type=int, default=1000, help="zipf: distinct images")
    a = ap.parse_args(argv)
    if a.count < 1:
        ap.error("--count must be >= 1")
    params = {}
    if a.kind == "temporal":
        if a.scene_len < 1:
            ap.error("--scene-len must be >= 1")
        params = {"scene_len": a.scene_len, "max_shift": a.max_shift, "noise": a.noise,
                  "brightness": a.brightness}
    elif a.kind == "zipf":
        params = {"zipf_s": a.zipf_s, "zipf_items": a.zipf_items}
    paths = make(a.kind, a.output, a.count, a.seed, **params)
    print(f"workloads: {a.kind} x {a.count} -> {paths['images']}, {paths['labels']}, "
          f"{paths['meta']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
