#!/usr/bin/env python3
"""Checks a `yolo-forge export --format onnx` file with the ONNX checker and onnxruntime.

Usage:
    python3 tools/check_onnx_export.py MODEL.onnx INPUT EXPECTED [--tol 1e-4] [--bench 20]
        [--threads 1] [--other UPSTREAM.onnx]

INPUT and EXPECTED are .npy files or raw little-endian float32 files (as written by
`cargo run -p yolo-cli --example onnx_io`); raw files take the model's static input and output
shapes. Runs onnx.checker.check_model (full check) and strict shape inference, runs the model
in onnxruntime (CPU) on INPUT and prints the max absolute and relative difference to EXPECTED
(relative to max(|expected|, 1e-2), and over entries with |expected| >= 1e-3). With --bench N,
prints the median ORT latency of N runs (and of --other, e.g. an upstream export, on the same
input). Exits 1 when the relative difference exceeds --tol.
"""
import argparse
import json
import statistics
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort


def load(path, shape):
    if path.endswith(".npy"):
        return np.load(path).astype(np.float32).reshape(shape)
    return np.fromfile(path, dtype="<f4").reshape(shape)


def static_shape(value_info):
    return [d.dim_value for d in value_info.type.tensor_type.shape.dim]


def session(path, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def bench(sess, x, runs):
    name = sess.get_inputs()[0].name
    for _ in range(3):
        sess.run(None, {name: x})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {name: x})
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("input")
    ap.add_argument("expected")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--bench", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--other", help="another .onnx of the same model to time (e.g. upstream's export)")
    a = ap.parse_args()

    m = onnx.load(a.model)
    onnx.checker.check_model(m, full_check=True)
    onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
    meta = {p.key: p.value for p in m.metadata_props}
    ops = {}
    for n in m.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    in_shape = static_shape(m.graph.input[0])
    out_shape = static_shape(m.graph.output[0])
    print(f"{a.model}: checker ok (ir {m.ir_version}, opset {m.opset_import[0].version}, "
          f"producer {m.producer_name}), input {m.graph.input[0].name} {in_shape}, "
          f"output {m.graph.output[0].name} {out_shape}, stride {meta.get('stride')}")
    print("ops:", json.dumps(dict(sorted(ops.items()))))

    x = load(a.input, in_shape)
    want = load(a.expected, out_shape)
    sess = session(a.model, a.threads)
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    diff = np.abs(got - want)
    rel = diff / np.maximum(np.abs(want), 1e-2)
    big = np.abs(want) >= 1e-3
    rel_big = (diff[big] / np.abs(want[big])).max() if big.any() else 0.0
    i = np.unravel_index(rel.argmax(), rel.shape)
    print(f"onnxruntime {ort.__version__} vs expected: max abs diff {diff.max():.3e}, "
          f"max rel diff {rel.max():.3e} (at {tuple(int(j) for j in i)}: {got[i]:.6g} vs {want[i]:.6g}), "
          f"max rel diff over |expected| >= 1e-3: {rel_big:.3e}, {want.size} values")
    if a.bench:
        ms = bench(sess, x, a.bench)
        line = f"ORT latency ({a.threads} thread(s), median of {a.bench}): ours {ms:.2f} ms"
        if a.other:
            other = session(a.other, a.threads)
            ms2 = bench(other, x, a.bench)
            o = other.run(None, {other.get_inputs()[0].name: x})[0]
            line += f", other {ms2:.2f} ms (its output vs expected: max abs diff {np.abs(o - want).max():.3e})"
        print(line)
    if rel.max() > a.tol:
        print(f"FAIL: relative difference above {a.tol}")
        sys.exit(1)


if __name__ == "__main__":
    main()
