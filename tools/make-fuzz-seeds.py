#!/usr/bin/env python3
"""make-fuzz-seeds.py: writes the seed corpora of the fuzz targets
(tests/fuzz/corpus/<target>/): small valid and nearly valid inputs that
start each fuzzer where the interesting branches are.

    tools/make-fuzz-seeds.py tests/fuzz/corpus
"""
import io
import json
import os
import struct
import sys
import tarfile


def safetensors(tensors, metadata=None, pad=0):
    """A safetensors file: tensors is [(name, dtype, shape, bytes)]."""
    header, data, off = {}, b"", 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [off, off + len(raw)]}
        data += raw
        off += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode() + b" " * pad
    return struct.pack("<Q", len(text)) + text + data


def write(folder, name, blob):
    with open(os.path.join(folder, name), "wb") as f:
        f.write(blob)


def tar_of(members, fmt=tarfile.PAX_FORMAT):
    """members: [(name, bytes or None for a folder, kind)]."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as t:
        for name, blob, kind in members:
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                t.addfile(info)
            elif kind == "link":
                info.type = tarfile.SYMTYPE
                info.linkname = "../etc/passwd"
                t.addfile(info)
            else:
                info.size = len(blob)
                t.addfile(info, io.BytesIO(blob))
    return out.getvalue()


def main(root):
    f32 = struct.pack("<4f", 1.0, -2.0, 0.5, 0.0)
    model = safetensors([("fc1.weight", "F32", [2, 2], f32),
                         ("fc1.bias", "F32", [2], f32[:8])],
                        {"format": "pt"})
    bf16 = safetensors([("a", "BF16", [2], b"\x80\x3f\x00\x40"),
                        ("b", "I8", [3], b"\x01\x02\x03"),
                        ("z", "F16", [0], b"")], pad=5)

    d = os.path.join(root, "fuzz_safetensors")
    os.makedirs(d, exist_ok=True)
    write(d, "model", b"\x00" + model)
    write(d, "mixed", b"\x03" + bf16)
    write(d, "truncated", b"\x00" + model[:-3])
    write(d, "lying-length", b"\x01" + struct.pack("<Q", 10 ** 12) + b"{}")
    write(d, "overlap", b"\x00" + safetensors(
        [("x", "F32", [1], f32[:4]), ("y", "F32", [1], f32[:4])]).replace(
            b'"data_offsets":[4,8]', b'"data_offsets":[0,4]'))
    write(d, "many", b"\x10" + safetensors(
        [("t%d" % i, "F32", [0], b"") for i in range(70)]))

    config = b'{"model_type":"mlp","layers":["fc1"],"hidden_act":"relu"}'
    d = os.path.join(root, "fuzz_tar")
    os.makedirs(d, exist_ok=True)
    write(d, "folder", tar_of([("m", None, "dir"),
                               ("m/config.json", config, "file"),
                               ("m/model.safetensors", model, "file")]))
    write(d, "ustar", tar_of([("./config.json", config, "file"),
                              ("./model.safetensors", model, "file")],
                             tarfile.USTAR_FORMAT))
    write(d, "gnu-long", tar_of([("d/" + "n" * 150, b"x", "file"),
                                 ("model.safetensors", model, "file")],
                                tarfile.GNU_FORMAT))
    write(d, "conflict", tar_of([("x", b"1", "file"), ("x/y", b"2", "file")]))
    write(d, "link", tar_of([("config.json", config, "file"),
                             ("evil", None, "link")]))
    write(d, "dotdot", tar_of([("../up", b"x", "file")]))

    d = os.path.join(root, "fuzz_spec")
    os.makedirs(d, exist_ok=True)
    specs = [
        {"method": "magnitude", "sparsity": 0.5},
        {"method": "magnitude", "pattern": "2:4", "scope": "layer"},
        {"method": "random", "scope": "global", "sparsity": 0.7, "seed": 42},
        {"method": "wanda", "calibration": {"dataset": "ds_x", "samples": 8},
         "evaluation": {"dataset": "ds_y"}},
        {"method": "sparsegpt", "calibration": {"dataset": "ds_x"},
         "sparsegpt": {"blocksize": 64, "damp": 0.02}},
        {"method": "magnitude", "targets": ["mlp\\.(gate|up)_proj"],
         "ignore": ["lm_head"],
         "overrides": [{"match": "down_proj", "sparsity": 0.3},
                       {"match": "self_attn", "pattern": "4:8"}]},
        {"method": "magnitude", "pattern": "rows", "norm": "l1",
         "output": {"format": "dense"}},
    ]
    for i, s in enumerate(specs):
        write(d, "spec%d" % i, b"\x00" + json.dumps(s).encode())
    regexes = ["^model\\.layers\\.[0-9]+\\.", "(q|k|v)_proj$",
               "[[:digit:]]{2}\\.mlp", "a.*a.*b.*b", "(ab){3,5}c?",
               "\\bfc\\d\\.weight", "[^.]+\\.weight$"]
    for i, r in enumerate(regexes):
        write(d, "regex%d" % i, b"\x01" + r.encode())

    d = os.path.join(root, "fuzz_headers")
    os.makedirs(d, exist_ok=True)
    for i, h in enumerate(["bytes=0-99", "bytes=-5", "bytes=10-",
                           "Bearer s3cret-token", "bearer   tok  ",
                           "sub/we\"ird\\name;\r\n\xc3\xa9.json",
                           "bytes=0--1"]):
        write(d, "h%d" % i, struct.pack(">Q", 1000 + i * 977) +
              h.encode("utf-8", "surrogateescape"))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fuzz/corpus")
