#!/usr/bin/python3
"""Freeze frame generator: request pcaps from Fashion-MNIST, and summaries of response pcaps.

  fzgen.py gen -o req.pcap [--count N] [--frag 300] [--inject all] ...   (writes req.pcap.json)
  fzgen.py summarize resp.pcap --requests req.pcap.json [--json] [--strict]
  fzgen.py check-header pipeline/proto/fz_proto.h

The wire format is docs/protocol.md; pipeline/proto/fz_proto.h is the C side. fzclient.py imports the
encoders and decoders from here.
"""
import argparse
import gzip
import json
import os
import random
import re
import socket
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pcap_io import PcapWriter, read_pcap  # noqa: E402

DATA_DIR = os.environ.get("FZ_FMNIST_DIR", "/usr/share/datasets/fashion-mnist")
REQ_MAGIC = 0x465A5251  # "FZRQ"
RESP_MAGIC = 0x465A5253  # "FZRS"
VERSION = 1
KIND_REQUEST = 1
KIND_RESPONSE = 2
DT_U8 = 1
DT_F32 = 2
DTYPE_SIZE = {DT_U8: 1, DT_F32: 4}
EXIT_FULL = 0xFFFE
EXIT_NONE = 0xFFFF
# answered before any layer ran (the front tiers)
EXIT_FRONT = {0xFFF0: "exact", 0xFFF1: "flow", 0xFFF2: "near", 0xFFF3: "coalesced"}
LABEL_NONE = 0xFFFF
REQ_HDR = struct.Struct(">IBBBBQHHHHII")  # 32 bytes, docs/protocol.md
RESP = struct.Struct(">IBBBBQHHfQ")  # 32 bytes
MTU_FRAG = 1440

# Copy of FZ_PROTO_FOREACH_REASON (pipeline/proto/fz_proto.h), in order: index = wire status.
# (name, answered with an error response when the request id is known)
REASONS = [
    ("ok", True),
    ("truncated_frame", False),
    ("wrong_dst_mac", False),
    ("not_ipv4", False),
    ("arp_malformed", False),
    ("arp_ignored", False),
    ("ip_truncated", False),
    ("ip_bad_header", False),
    ("ip_bad_length", False),
    ("ip_bad_checksum", False),
    ("ip_fragment", False),
    ("wrong_dst_ip", False),
    ("bad_src", False),
    ("not_udp", False),
    ("icmp_malformed", False),
    ("icmp_ignored", False),
    ("udp_bad_length", False),
    ("udp_bad_checksum", False),
    ("wrong_port", False),
    ("truncated_header", False),
    ("bad_magic", False),
    ("bad_version", False),
    ("bad_kind", False),
    ("unknown_dtype", True),
    ("unsupported_dtype", True),
    ("oversized_tensor", True),
    ("dims_mismatch", True),
    ("tensor_size_mismatch", True),
    ("payload_length_mismatch", True),
    ("bad_fragment", True),
    ("duplicate_fragment", True),
    ("overlapping_fragment", True),
    ("fragment_mismatch", True),
    ("too_many_fragments", True),
    ("reassembly_timeout", True),
    ("reassembly_table_full", True),
    ("late_fragment", False),
    ("overloaded", True),
    ("shutting_down", True),
    ("internal", True),
    ("nonfinite_input", True),
]
STATUS = {name: i for i, (name, _) in enumerate(REASONS)}


def status_name(code):
    return REASONS[code][0] if code < len(REASONS) else f"status_{code}"


# ---- encoding ---------------------------------------------------------------------------------

def cksum(data):
    """Internet checksum (RFC 1071)."""
    if len(data) & 1:
        data += b"\0"
    s = sum(struct.unpack(f">{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def mac_bytes(text):
    b = bytes(int(x, 16) for x in text.split(":"))
    if len(b) != 6:
        raise ValueError(f"bad MAC address {text!r}")
    return b


def ip_bytes(text):
    return socket.inet_aton(text)


def encode_req(req_id, frag_off, frag, total, dims=(1, 28, 28), dtype=DT_U8, kind=KIND_REQUEST,
               magic=REQ_MAGIC, version=VERSION, frag_len=None):
    """Request header + fragment bytes (a UDP payload)."""
    c, h, w = dims
    if frag_len is None:
        frag_len = len(frag)
    return REQ_HDR.pack(magic, version, kind, dtype, 0, req_id, c, h, w, frag_len, total,
                        frag_off) + bytes(frag)


def decode_resp(payload):
    """Response dict from a UDP payload, or None if it is not a response."""
    if len(payload) < RESP.size:
        return None
    magic, ver, kind, status, _flags, req_id, label, exit_layer, conf, time_ns = \
        RESP.unpack_from(payload)
    if magic != RESP_MAGIC or ver != VERSION or kind != KIND_RESPONSE:
        return None
    return {"id": req_id, "status": status, "status_name": status_name(status), "label": label,
            "exit": exit_layer, "confidence": conf, "time_ns": time_ns}


def fragments(tensor, frag_size):
    """[(offset, bytes)] tiling the tensor; one fragment when frag_size is 0 or large enough."""
    if not frag_size or frag_size >= len(tensor):
        return [(0, tensor)]
    return [(o, tensor[o:o + frag_size]) for o in range(0, len(tensor), frag_size)]


def udp_frame(src_mac, dst_mac, src_ip, dst_ip, sport, dport, payload, proto=17,
              ip_flags=0x4000, ethertype=0x0800, udp_csum=True, ip_id=0):
    """Ethernet + IPv4 + UDP frame with correct checksums (addresses as bytes)."""
    udp_len = 8 + len(payload)
    udp = struct.pack(">HHHH", sport, dport, udp_len, 0) + payload
    if udp_csum:
        pseudo = src_ip + dst_ip + struct.pack(">BBH", 0, 17, udp_len)
        c = cksum(pseudo + udp) or 0xFFFF
        udp = udp[:6] + struct.pack(">H", c) + udp[8:]
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, ip_id, ip_flags, 64, proto, 0,
                     src_ip, dst_ip)
    ip = ip[:10] + struct.pack(">H", cksum(ip)) + ip[12:]
    return dst_mac + src_mac + struct.pack(">H", ethertype) + ip + udp


def parse_udp(frame):
    """(src_ip, sport, dst_ip, dport, payload) of an Ethernet/IPv4/UDP frame, or None."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[14] >> 4 != 4:
        return None
    ihl = (frame[14] & 0xF) * 4
    if frame[23] != 17 or len(frame) < 14 + ihl + 8:
        return None
    tot = struct.unpack(">H", frame[16:18])[0]
    u = 14 + ihl
    sport, dport, ulen = struct.unpack(">HHH", frame[u:u + 6])
    end = min(u + ulen, 14 + tot, len(frame))
    return (socket.inet_ntoa(frame[26:30]), sport, socket.inet_ntoa(frame[30:34]), dport,
            frame[u + 8:end])


# ---- data set ---------------------------------------------------------------------------------

def read_idx(path):
    """(dims, raw bytes) of an unsigned-byte idx file, gzipped when the name ends in .gz."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte idx file")
    nd = data[3]
    dims = struct.unpack(f">{nd}I", data[4:4 + 4 * nd])
    body = data[4 + 4 * nd:]
    n = 1
    for d in dims:
        n *= d
    if len(body) != n:
        raise ValueError(f"{path}: truncated idx file")
    return dims, body


class Dataset:
    """Test-set images as 784-byte u8 tensors, with labels."""

    def __init__(self, images=None, labels=None):
        images = images or os.path.join(DATA_DIR, "t10k-images-idx3-ubyte.gz")
        labels = labels or os.path.join(DATA_DIR, "t10k-labels-idx1-ubyte.gz")
        dims, self.raw = read_idx(images)
        ldims, self.labels = read_idx(labels)
        self.count = dims[0]
        self.dims = (1,) + tuple(dims[1:]) if len(dims) == 3 else tuple(dims[1:])
        self.size = len(self.raw) // self.count
        if ldims[0] != self.count:
            raise ValueError(f"{images} has {self.count} images but {labels} {ldims[0]} labels")

    def image(self, i):
        return self.raw[i * self.size:(i + 1) * self.size]

    def label(self, i):
        return self.labels[i]


def as_dtype(img, dtype):
    """u8 image bytes as the wire tensor of `dtype` (f32: big-endian, same 0..255 scale)."""
    if dtype == DT_U8:
        return bytes(img)
    return struct.pack(f">{len(img)}f", *img)


DTYPES = {"u8": DT_U8, "f32": DT_F32}


def pick_indices(count, first, n_items, order, seed):
    idx = [(first + k) % n_items for k in range(count)]
    if order == "shuffle":
        random.Random(seed).shuffle(idx)
    return idx


# ---- malformed frames -------------------------------------------------------------------------

# Injected kinds: the name is the drop reason / status the appliance must report.
ANSWERED_KINDS = ["unknown_dtype", "dims_mismatch", "tensor_size_mismatch",
                  "payload_length_mismatch", "oversized_tensor", "bad_fragment",
                  "duplicate_fragment", "overlapping_fragment", "reassembly_timeout"]
COUNTED_KINDS = ["truncated_header", "bad_magic", "bad_version", "bad_kind", "not_ipv4",
                 "not_udp", "wrong_port", "wrong_dst_ip", "ip_bad_checksum", "ip_fragment",
                 "udp_bad_checksum"]
CONTROL_KINDS = ["arp", "icmp"]
ALL_KINDS = ANSWERED_KINDS + COUNTED_KINDS + CONTROL_KINDS


class Endpoints:
    def __init__(self, a):
        self.amac = mac_bytes(a.appliance_mac)
        self.aip = ip_bytes(a.appliance_ip)
        self.aport = a.port
        self.cmac = mac_bytes(a.client_mac)
        self.cip = ip_bytes(a.client_ip)
        self.cport = a.client_port

    def frame(self, payload, **kw):
        return udp_frame(self.cmac, self.amac, self.cip, self.aip, self.cport,
                         kw.pop("dport", self.aport), payload, **kw)


def malformed(kind, ep, req_id, tensor, dims):
    """Frames of one malformed request of `kind`."""
    total = len(tensor)
    half = total // 2
    f = ep.frame
    if kind == "unknown_dtype":
        return [f(encode_req(req_id, 0, tensor, total, dims, dtype=9))]
    if kind == "dims_mismatch":
        return [f(encode_req(req_id, 0, tensor, total, (dims[0], dims[1], dims[2] - 1)))]
    if kind == "tensor_size_mismatch":
        return [f(encode_req(req_id, 0, tensor, total + 1, dims))]
    if kind == "payload_length_mismatch":
        return [f(encode_req(req_id, 0, tensor[:-1], total, dims, frag_len=total))]
    if kind == "oversized_tensor":
        return [f(encode_req(req_id, 0, tensor, 1 << 26, dims))]
    if kind == "bad_fragment":
        return [f(encode_req(req_id, total - 10, tensor[:20], total, dims))]
    if kind == "duplicate_fragment":
        a = f(encode_req(req_id, 0, tensor[:half], total, dims))
        return [a, a, f(encode_req(req_id, half, tensor[half:], total, dims))]
    if kind == "overlapping_fragment":
        return [f(encode_req(req_id, 0, tensor[:half + 8], total, dims)),
                f(encode_req(req_id, half, tensor[half:], total, dims))]
    if kind == "reassembly_timeout":
        return [f(encode_req(req_id, 0, tensor[:half], total, dims))]
    good = encode_req(req_id, 0, tensor, total, dims)
    if kind == "truncated_header":
        return [f(good[:20])]
    if kind == "bad_magic":
        return [f(b"XXXX" + good[4:])]
    if kind == "bad_version":
        return [f(good[:4] + b"\x07" + good[5:])]
    if kind == "bad_kind":
        return [f(good[:5] + bytes([KIND_RESPONSE]) + good[6:])]
    if kind == "not_ipv4":
        fr = f(good)
        return [fr[:12] + b"\x86\xdd" + fr[14:]]
    if kind == "not_udp":
        return [f(good, proto=6, udp_csum=False)]
    if kind == "wrong_port":
        return [f(good, dport=ep.aport + 1)]
    if kind == "wrong_dst_ip":
        return [udp_frame(ep.cmac, ep.amac, ep.cip, bytes([ep.aip[0], ep.aip[1], ep.aip[2],
                                                           ep.aip[3] ^ 0x40]),
                          ep.cport, ep.aport, good)]
    if kind == "ip_bad_checksum":
        fr = bytearray(f(good))
        fr[24] ^= 0x5A
        return [bytes(fr)]
    if kind == "ip_fragment":
        return [f(good, ip_flags=0x2000)]
    if kind == "udp_bad_checksum":
        fr = bytearray(f(good))
        fr[-1] ^= 0xFF
        return [bytes(fr)]
    if kind == "arp":
        arp = struct.pack(">HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, ep.cmac, ep.cip, b"\0" * 6,
                          ep.aip)
        return [b"\xff" * 6 + ep.cmac + b"\x08\x06" + arp + b"\0" * 18]
    if kind == "icmp":
        body = struct.pack(">BBHHH", 8, 0, 0, 0xF2, 1) + bytes(range(56))
        body = body[:2] + struct.pack(">H", cksum(body)) + body[4:]
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 1, 0x4000, 64, 1, 0,
                         ep.cip, ep.aip)
        ip = ip[:10] + struct.pack(">H", cksum(ip)) + ip[12:]
        return [ep.amac + ep.cmac + b"\x08\x00" + ip + body]
    raise ValueError(f"unknown kind {kind}")


# ---- gen --------------------------------------------------------------------------------------

def cmd_gen(a):
    ds = Dataset(a.images, a.labels)
    ep = Endpoints(a)
    kinds = []
    if a.inject:
        kinds = ALL_KINDS if a.inject == "all" else a.inject.split(",")
        for k in kinds:
            if k not in ALL_KINDS:
                sys.exit(f"fzgen: unknown --inject kind {k!r}; kinds: {', '.join(ALL_KINDS)}")
    indices = pick_indices(a.count, a.first, ds.count, a.order, a.seed)
    rng = random.Random(a.seed + 1)
    # Spread the injected kinds evenly among the good requests.
    slots = {}
    for j, k in enumerate(kinds):
        slots.setdefault((j + 1) * len(indices) // (len(kinds) + 1), []).append(k)
    out_json = a.json or a.output + ".json"
    requests, control = [], []
    next_id = a.id_base
    nframes = 0
    with PcapWriter(a.output) as w:
        def put(frame):
            nonlocal nframes
            w.write(frame, nframes * a.gap_ns)
            nframes += 1

        pending = []  # good requests whose frames are interleaved: (sidecar entry, frames)

        def flush():
            # Round-robin over the pending requests' frames (--interleave).
            for q, _ in pending:
                q["frame"] = None
            while any(frs for _, frs in pending):
                for q, frs in pending:
                    if frs:
                        if q["frame"] is None:
                            q["frame"] = nframes
                        put(frs.pop(0))
            pending.clear()

        for pos in range(len(indices) + 1):
            if slots.get(pos):
                flush()
            for k in slots.get(pos, []):
                if k in CONTROL_KINDS:
                    control.append({"kind": k, "frame": nframes})
                    for fr in malformed(k, ep, 0, b"", ds.dims):
                        put(fr)
                    continue
                i = indices[pos % len(indices)] if indices else 0
                frames = malformed(k, ep, next_id, ds.image(i), ds.dims)
                requests.append({"id": next_id, "index": i, "label": ds.label(i), "expect": k,
                                 "answered": k in ANSWERED_KINDS, "frames": len(frames),
                                 "frame": nframes})
                for fr in frames:
                    put(fr)
                next_id += 1
            if pos == len(indices):
                break
            i = indices[pos]
            tensor = as_dtype(ds.image(i), DTYPES[a.dtype])
            frags = fragments(tensor, a.frag)
            if a.frag_order == "reverse":
                frags.reverse()
            elif a.frag_order == "shuffle":
                rng.shuffle(frags)
            sport = a.client_port + pos % a.clients
            q = {"id": next_id, "index": i, "label": ds.label(i), "expect": "ok",
                 "answered": True, "frames": len(frags), "frame": nframes}
            if a.clients > 1:
                q["port"] = sport
            requests.append(q)
            pending.append((q, [udp_frame(ep.cmac, ep.amac, ep.cip, ep.aip, sport, ep.aport,
                                          encode_req(next_id, off, data, len(tensor), ds.dims,
                                                     dtype=DTYPES[a.dtype]))
                                for off, data in frags]))
            if len(pending) >= a.interleave:
                flush()
            next_id += 1
        flush()
    meta = {
        "version": 1,
        "pcap": os.path.abspath(a.output),
        "appliance": {"mac": a.appliance_mac, "ip": a.appliance_ip, "port": a.port},
        "client": {"mac": a.client_mac, "ip": a.client_ip, "port": a.client_port},
        "dims": list(ds.dims), "dtype": a.dtype, "frag": a.frag, "frames": nframes,
        "requests": requests, "control": control,
    }
    write_sidecar(out_json, meta)
    n_bad = len(kinds) - len(control)
    print(f"fzgen: {len(indices)} good and {n_bad} malformed requests, {len(control)} control "
          f"frames; {nframes} frames -> {a.output}, {out_json}", file=sys.stderr)
    return 0


def write_sidecar(path, meta):
    """JSON with one request per line: readable, diffable, and small enough for 10k requests."""
    head = {k: v for k, v in meta.items() if k not in ("requests", "control")}
    with open(path, "w") as f:
        f.write(json.dumps(head, indent=1)[:-2] + ",\n")
        for key in ("control", "requests"):
            items = meta[key]
            f.write(f' "{key}": [\n')
            f.write(",\n".join("  " + json.dumps(r, separators=(",", ":")) for r in items))
            f.write("\n ]" + (",\n" if key == "control" else "\n"))
        f.write("}\n")


# ---- summarize --------------------------------------------------------------------------------

def percentile(sorted_vals, p):
    if not sorted_vals:
        return None
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


def summarize(resp_pcap, meta):
    """Match the responses in a pcap against a request sidecar; returns a dict of figures."""
    app = meta["appliance"]
    reqs = {r["id"]: r for r in meta["requests"]}
    seen = {}
    dup = unknown = arp_replies = icmp_replies = other = 0
    for _ts, fr in read_pcap(resp_pcap):
        if len(fr) >= 42 and fr[12:14] == b"\x08\x06" and fr[20:22] == b"\x00\x02":
            arp_replies += 1
            continue
        if len(fr) >= 34 and fr[12:14] == b"\x08\x00" and fr[23] == 1:
            ihl = (fr[14] & 0xF) * 4
            if len(fr) > 14 + ihl and fr[14 + ihl] == 0:
                icmp_replies += 1
                continue
        u = parse_udp(fr)
        r = decode_resp(u[4]) if u and u[1] == app["port"] else None
        if r is None:
            other += 1
            continue
        if r["id"] not in reqs:
            unknown += 1
        elif r["id"] in seen:
            dup += 1
        else:
            seen[r["id"]] = r
    status = {}
    exits = {}
    correct = ok = 0
    times = []
    mismatched = []
    missing = []
    unexpected = []
    for rid, q in reqs.items():
        r = seen.get(rid)
        if r is None:
            if q["answered"]:
                missing.append(rid)
            continue
        if not q["answered"]:
            unexpected.append(rid)
        status[r["status_name"]] = status.get(r["status_name"], 0) + 1
        if r["status_name"] != q["expect"]:
            mismatched.append({"id": rid, "expect": q["expect"], "got": r["status_name"]})
        if r["status"] == 0:
            ok += 1
            correct += r["label"] == q["label"]
            ex = {EXIT_FULL: "full", **EXIT_FRONT}.get(r["exit"], str(r["exit"]))
            exits[ex] = exits.get(ex, 0) + 1
            times.append(r["time_ns"])
    times.sort()
    n_answerable = sum(1 for q in reqs.values() if q["answered"])
    return {
        "requests": len(reqs), "answerable": n_answerable, "answered": len(seen),
        "ok": ok, "errors": len(seen) - ok, "status": status, "missing": len(missing),
        "missing_ids": missing[:20], "duplicates": dup, "unknown_ids": unknown,
        "unexpected_answers": len(unexpected), "status_mismatches": mismatched[:20],
        "n_status_mismatches": len(mismatched),
        "accuracy": correct / ok if ok else None, "correct": correct,
        # front tiers first, then layers in model order, then the full model
        "exit_histogram": dict(sorted(exits.items(), key=lambda kv: (
            (1, int(kv[0]), "") if kv[0].isdigit() else (2 if kv[0] == "full" else 0, 0, kv[0])))),
        "time_ns": {"p50": percentile(times, 50), "p90": percentile(times, 90),
                    "p99": percentile(times, 99), "max": times[-1] if times else None},
        "arp_replies": arp_replies, "icmp_replies": icmp_replies, "other_frames": other,
        "control_expected": len(meta.get("control", [])),
    }


def cmd_summarize(a):
    with open(a.requests) as f:
        meta = json.load(f)
    s = summarize(a.pcap, meta)
    if a.json:
        json.dump(s, sys.stdout, indent=1)
        print()
    else:
        acc = f"{100 * s['accuracy']:.2f}% ({s['correct']}/{s['ok']})" if s["ok"] else "n/a"
        print(f"requests   {s['requests']} ({s['answerable']} answerable)")
        print(f"answered   {s['answered']}: ok {s['ok']}, errors {s['errors']}")
        for k, v in sorted(s["status"].items()):
            if k != "ok":
                print(f"  {k:<24} {v}")
        print(f"missing    {s['missing']}  duplicates {s['duplicates']}  unknown ids "
              f"{s['unknown_ids']}  unexpected answers {s['unexpected_answers']}")
        print(f"status mismatches {s['n_status_mismatches']}")
        for m in s["status_mismatches"]:
            print(f"  id {m['id']}: expected {m['expect']}, got {m['got']}")
        print(f"accuracy   {acc}")
        print("exits      " + ", ".join(f"{k}: {v}" for k, v in s["exit_histogram"].items()))
        t = s["time_ns"]
        if t["p50"] is not None:
            print(f"in-appliance time  p50 {t['p50'] / 1e3:.1f} us  p90 {t['p90'] / 1e3:.1f} us  "
                  f"p99 {t['p99'] / 1e3:.1f} us  max {t['max'] / 1e3:.1f} us")
        print(f"control    arp replies {s['arp_replies']}, icmp replies {s['icmp_replies']} "
              f"({s['control_expected']} requests sent); other frames {s['other_frames']}")
    if a.strict and (s["missing"] or s["duplicates"] or s["unknown_ids"] or
                     s["unexpected_answers"] or s["n_status_mismatches"]):
        return 1
    return 0


# ---- check-header -----------------------------------------------------------------------------

def cmd_check_header(a):
    with open(a.header) as f:
        text = f.read()
    m = re.search(r"#define FZ_PROTO_FOREACH_REASON\(_\)(.*?)\n\nenum", text, re.S)
    if not m:
        print(f"fzgen: no FZ_PROTO_FOREACH_REASON in {a.header}", file=sys.stderr)
        return 1
    names = re.findall(r'_\(\s*[A-Z0-9_]+\s*,\s*"([a-z0-9_]+)"', m.group(1))
    mine = [n for n, _ in REASONS]
    if names != mine:
        for i in range(max(len(names), len(mine))):
            h = names[i] if i < len(names) else None
            p = mine[i] if i < len(mine) else None
            if h != p:
                print(f"fzgen: status {i}: header says {h}, fzgen.py says {p}", file=sys.stderr)
        return 1
    for k in ANSWERED_KINDS + COUNTED_KINDS:
        if k not in STATUS or REASONS[STATUS[k]][1] != (k in ANSWERED_KINDS):
            print(f"fzgen: injected kind {k} disagrees with the reason list", file=sys.stderr)
            return 1
    if a.doc:
        with open(a.doc) as f:
            rows = re.findall(r"^\| (\d+) \| ([a-z0-9_]+) \|.*\| (answered|counted) \|$",
                              f.read(), re.M)
        doc = [(int(v), n, w == "answered") for v, n, w in rows]
        want = [(i, n, ans) for i, (n, ans) in enumerate(REASONS)]
        if doc != want:
            for d, w in zip(doc + [None] * len(want), want + [None] * len(doc)):
                if d != w:
                    print(f"fzgen: {a.doc} status table has {d}, expected {w}", file=sys.stderr)
                    break
            return 1
    print(f"fzgen: {len(names)} reasons match {a.header}" + (f" and {a.doc}" if a.doc else ""))
    return 0


# ---- fuzz seeds -------------------------------------------------------------------------------

def cmd_seeds(a):
    """Seed corpus for tests/fuzz/fuzz_frame.c: records [ctl u8][len u16 BE][frame]."""
    ds = Dataset(a.images, a.labels)
    ep = Endpoints(a)
    os.makedirs(a.dir, exist_ok=True)
    img = ds.image(0)

    def rec(frame, ctl=0):
        return bytes([ctl]) + struct.pack(">H", len(frame)) + frame

    def req(rid, off, data, **kw):
        return ep.frame(encode_req(rid, off, data, ds.size, ds.dims, **kw))

    seeds = {
        "single": rec(req(1, 0, img)),
        "frags_out_of_order": b"".join(rec(req(2, o, img[o:o + 300])) for o in (600, 0, 300)),
        "frags_two_requests": b"".join(rec(req(3 + (k & 1), o, img[o:o + 392]))
                                       for k, o in enumerate((0, 0, 392, 392))),
        "frag_missing_timeout": rec(req(5, 0, img[:300])) + rec(b"", 0xF0),
        "fixup_checksums": rec(req(6, 0, img), 3),
        # fuzz_frame's table holds 4 requests of at most 8 fragments
        "table_full": b"".join(rec(req(20 + k, 0, img[:392])) for k in range(6)),
        "too_many_fragments": b"".join(rec(req(30, o, img[o:o + 70]))
                                       for o in range(0, len(img), 70)),
        "f32_mismatch": rec(req(7, 0, img[:392])) +
        rec(ep.frame(encode_req(7, 392, img[392:], ds.size * 4, ds.dims, dtype=DT_F32))),
    }
    for k in ALL_KINDS:
        seeds[k] = b"".join(rec(fr) for fr in malformed(k, ep, 100, img, ds.dims))
    for name, blob in seeds.items():
        with open(os.path.join(a.dir, name), "wb") as f:
            f.write(blob)
    print(f"fzgen: {len(seeds)} seeds -> {a.dir}", file=sys.stderr)
    return 0


# ---- selftest ---------------------------------------------------------------------------------

def cmd_selftest(a):
    """Generator -> C classifier/reassembler (test_reasm --loopback) -> summarize, end to end."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fzgen-") as d:
        req, resp = os.path.join(d, "req.pcap"), os.path.join(d, "resp.pcap")
        gen_args = ["gen", "-o", req, "-n", str(a.count), "--frag", "300", "--frag-order",
                    "shuffle", "--order", "shuffle", "--inject", "all", "--interleave", "5",
                    "--clients", "3"]
        if main(gen_args) != 0:
            return 1
        out = subprocess.run([a.loopback, "--loopback", req, resp], check=True,
                             capture_output=True, text=True).stdout
        counters = json.loads(out)
        with open(req + ".json") as f:
            meta = json.load(f)
        s = summarize(resp, meta)
        bad = []
        if s["missing"] or s["duplicates"] or s["unknown_ids"] or s["unexpected_answers"]:
            bad.append(f"missing {s['missing']} dup {s['duplicates']} unknown "
                       f"{s['unknown_ids']} unexpected {s['unexpected_answers']}")
        if s["n_status_mismatches"]:
            bad.append(f"status mismatches {s['status_mismatches']}")
        if s["ok"] != a.count or counters["complete"] != a.count:
            bad.append(f"{s['ok']} ok answers, {counters['complete']} complete, want {a.count}")
        if s["arp_replies"] != 1 or s["icmp_replies"] != 1:
            bad.append(f"arp {s['arp_replies']} icmp {s['icmp_replies']} replies, want 1 each")
        for k in COUNTED_KINDS + ANSWERED_KINDS:
            if counters["reasons"].get(k, 0) < 1:
                bad.append(f"no {k} counted")
        # Loopback answers label = byte sum: checks every reassembled byte.
        ds = Dataset()
        want = {q["id"]: sum(ds.image(q["index"])) & 0xFFFF for q in meta["requests"]
                if q["expect"] == "ok"}
        for _ts, fr in read_pcap(resp):
            u = parse_udp(fr)
            r = decode_resp(u[4]) if u else None
            if r and r["status"] == 0 and r["label"] != want[r["id"]]:
                bad.append(f"id {r['id']}: tensor sum {r['label']}, want {want[r['id']]}")
                break
        if bad:
            print("fzgen selftest FAILED: " + "; ".join(bad), file=sys.stderr)
            return 1
        print(f"fzgen selftest: {a.count} requests in shuffled 300-byte fragments from 3 ports, "
              f"5 interleaved, and "
              f"{len(ALL_KINDS)} injected kinds round-trip through the C classifier")
    return 0


def add_endpoint_args(p):
    p.add_argument("--appliance-mac", default="02:70:63:61:70:00",
                   help="appliance MAC (default: DPDK net_pcap's first port)")
    p.add_argument("--appliance-ip", default="198.18.0.1")
    p.add_argument("--port", type=int, default=7878, help="appliance UDP port")
    p.add_argument("--client-mac", default="02:66:7a:63:6c:01")
    p.add_argument("--client-ip", default="198.18.0.2")
    p.add_argument("--client-port", type=int, default=40000)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen", help="write a pcap of request frames and a JSON sidecar")
    g.add_argument("-o", "--output", required=True, help="pcap to write")
    g.add_argument("--json", help="sidecar (default: OUTPUT.json)")
    g.add_argument("-n", "--count", type=int, default=1000, help="good requests (wraps around)")
    g.add_argument("--first", type=int, default=0, help="first test-set index")
    g.add_argument("--order", choices=["seq", "shuffle"], default="seq")
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--id-base", type=int, default=1, help="first request id")
    g.add_argument("--frag", type=int, default=0,
                   help="fragment payload bytes (default 0: whole tensor in one datagram)")
    g.add_argument("--frag-order", choices=["in", "reverse", "shuffle"], default="in")
    g.add_argument("--interleave", type=int, default=1,
                   help="interleave the fragments of this many consecutive requests")
    g.add_argument("--clients", type=int, default=1,
                   help="spread requests over this many client UDP ports (port, port+1, ...)")
    g.add_argument("--dtype", choices=sorted(DTYPES), default="u8",
                   help="tensor element type of the good requests (malformed ones are u8)")
    g.add_argument("--inject", help="malformed/control frames to add, once each: 'all' or "
                   "a comma list of " + ",".join(ALL_KINDS))
    g.add_argument("--gap-ns", type=int, default=1000, help="pcap timestamp step")
    g.add_argument("--images", help="idx images (default: Fashion-MNIST t10k)")
    g.add_argument("--labels", help="idx labels (default: Fashion-MNIST t10k)")
    add_endpoint_args(g)
    s = sub.add_parser("summarize", help="match a response pcap against a request sidecar")
    s.add_argument("pcap")
    s.add_argument("--requests", required=True, help="the sidecar JSON written by gen")
    s.add_argument("--json", action="store_true")
    s.add_argument("--strict", action="store_true",
                   help="exit 1 on missing/duplicate/unknown/unexpected answers or statuses")
    c = sub.add_parser("check-header", help="compare the reason list with fz_proto.h")
    c.add_argument("header")
    c.add_argument("--doc", help="also check the status table of docs/protocol.md")
    z = sub.add_parser("seeds", help="write the fuzz_frame seed corpus")
    z.add_argument("dir")
    z.add_argument("--images")
    z.add_argument("--labels")
    add_endpoint_args(z)
    t = sub.add_parser("selftest", help="round trip through the C classifier (test_reasm)")
    t.add_argument("--loopback", required=True, help="the test_reasm executable")
    t.add_argument("-n", "--count", type=int, default=300)
    a = ap.parse_args(argv)
    if a.cmd == "gen":
        if a.interleave < 1 or a.clients < 1 or a.client_port + a.clients > 65536:
            ap.error("--interleave and --clients must be >= 1 (and ports <= 65535)")
        if a.frag < 0 or a.frag > 65535 - 20 - 8 - REQ_HDR.size:
            ap.error("--frag must be 0..65475 (1440 fits a 1500-byte MTU)")
        return cmd_gen(a)
    if a.cmd == "summarize":
        return cmd_summarize(a)
    if a.cmd == "selftest":
        return cmd_selftest(a)
    if a.cmd == "seeds":
        return cmd_seeds(a)
    return cmd_check_header(a)


if __name__ == "__main__":
    sys.exit(main())
