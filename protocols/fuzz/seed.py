#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora from ../tests/vectors (run from protocols/fuzz)."""
import glob, os, struct

V = os.path.join(os.path.dirname(__file__), "..", "tests", "vectors")
C = os.path.join(os.path.dirname(__file__), "corpus")

def chunks(path):
    for line in open(path):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        d, n, *h = line.split()
        yield (d == "<"), int(n), bytes.fromhex(h[0] if h else "")

def put(target, name, data):
    os.makedirs(os.path.join(C, target), exist_ok=True)
    open(os.path.join(C, target, name), "wb").write(data)

for path in glob.glob(os.path.join(V, "*.txt")):
    name = os.path.basename(path)[:-4]
    rec, h1, h2 = b"", [], []
    for s2c, n, data in chunks(path):
        data = data[:4096]
        rec += struct.pack("<BHH", 1 if s2c else 0, len(data), min(n - len(data), 65535)) + data
        (h2 if s2c else h1).append(data)
    put("connection", name, rec)
    joined = b"\xff\x00".join(h1[:6] + h2[:6])
    put("http1" if name.startswith("http1") else "http2", name, joined)
    # gRPC / etcd / CRI message bodies: DATA frames' payloads are in the
    # chunks; seed with the raw chunks as well.
    for i, c in enumerate(h1[:20] + h2[:20]):
        put("grpc", f"{name}-{i}", c)
        put("etcd", f"{name}-{i}", bytes([i % 12]) + c[9:])
        put("cri", f"{name}-{i}", bytes([i % 16]) + c[9:])
        put("hpack", f"{name}-{i}", b"\x00" + c[9:])
for path in glob.glob(os.path.join(V, "k8s", "*")):
    data = open(path, "rb").read()
    put("k8s", os.path.basename(path), data)
    put("redact", os.path.basename(path), data)
