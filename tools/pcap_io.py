"""Classic libpcap files (Ethernet link type): write frames, read frames with ns timestamps."""
import struct

LINKTYPE_ETHERNET = 1
MAGIC_US = 0xA1B2C3D4
MAGIC_NS = 0xA1B23C4D


class PcapWriter:
    """Writes a classic pcap (microsecond timestamps, little-endian, Ethernet)."""

    def __init__(self, path, snaplen=65535):
        self.f = open(path, "wb")
        self.f.write(struct.pack("<IHHiIII", MAGIC_US, 2, 4, 0, 0, snaplen, LINKTYPE_ETHERNET))
        self.count = 0

    def write(self, frame, ts_ns=None):
        if ts_ns is None:
            ts_ns = self.count * 1000
        sec, rem = divmod(int(ts_ns), 1_000_000_000)
        self.f.write(struct.pack("<IIII", sec, rem // 1000, len(frame), len(frame)))
        self.f.write(frame)
        self.count += 1

    def close(self):
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_pcap(path):
    """Yield (ts_ns, frame bytes) from a classic pcap of either byte order and precision."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        raise ValueError(f"{path}: too short for a pcap header")
    for endian in "<>":
        magic = struct.unpack(endian + "I", data[:4])[0]
        if magic in (MAGIC_US, MAGIC_NS):
            break
    else:
        raise ValueError(f"{path}: not a classic pcap file (pcapng is not supported)")
    scale = 1 if magic == MAGIC_NS else 1000
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    if linktype != LINKTYPE_ETHERNET:
        raise ValueError(f"{path}: link type {linktype}, expected Ethernet (1)")
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack(endian + "IIII", data[off:off + 16])
        off += 16
        if off + incl > len(data):
            raise ValueError(f"{path}: truncated record at byte {off - 16}")
        yield sec * 1_000_000_000 + frac * scale, data[off:off + incl]
        off += incl
