#!/usr/bin/env python3
"""Reads a scores folder's scores.safetensors with numpy alone (8-byte header length, JSON header, raw little-endian
arrays, as the safetensors format defines) and compares every value with scores.csv (columns node,site,layer,position,index,score).
Usage: check_scores_safetensors.py SCORES_DIR. Prints "ok N values" or one error line, exit 1."""
import csv
import json
import os
import struct
import sys

import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        if t["dtype"] != "F32":
            raise ValueError(f"{name}: dtype {t['dtype']}, expected F32")
        begin, end = t["data_offsets"]
        out[name] = np.frombuffer(data[begin:end], dtype="<f4").reshape(t["shape"])
    return out, header.get("__metadata__", {})


def main(folder):
    tensors, meta = read_safetensors(os.path.join(folder, "scores.safetensors"))
    count = 0
    with open(os.path.join(folder, "scores.csv"), newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            layer, pos, index = int(row["layer"]), int(row["position"]), int(row["index"])
            want = np.float32(float(row["score"]))
            got = tensors[f"{row['site']}/L{layer}"][pos, index]
            if not (got == want or (np.isnan(got) and np.isnan(want))):
                raise ValueError(f"{row['node']}: safetensors {got!r}, scores.csv {want!r}")
            expect_id = f"{row['site']}/L{layer}/P-{pos}/{index}"
            if row["node"] != expect_id:
                raise ValueError(f"node column {row['node']!r} is not {expect_id!r}")
            count += 1
    total = sum(t.size for t in tensors.values())
    if count != total:
        raise ValueError(f"scores.csv has {count} rows, the safetensors file {total} values")
    if int(meta.get("positions", -1)) != next(iter(tensors.values())).shape[0]:
        raise ValueError("metadata positions does not match the tensors")
    print(f"ok {count} values")


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except (ValueError, KeyError, OSError) as e:
        print(f"error: {e}")
        sys.exit(1)
