#!/usr/bin/env python3
"""Parity fixtures: raw outputs of the upstream PyTorch model for deterministic weights/input.

Usage (from a checkout of ultralytics/yolov5 or WongKinYiu/yolov7, with torch, pyyaml, safetensors):
  python3 tools/make_parity_fixtures.py --repo PATH --cfg configs/models/yolov5n.yaml \
      --imgsz 320 --out crates/models/tests/fixtures/parity_yolov5n.safetensors

Weights are not stored: every state_dict entry (except anchors and counters) is overwritten by a
value computed from the tensor's name and element index (murmur3 finaliser of an FNV-1a name
hash), and the Rust test computes the same values. That keeps the fixture to the input-free
outputs: `train.N` (model.train(), batch statistics: raw level N) and `eval.pred` (model.eval():
decoded predictions), plus the list of state_dict names in the metadata (`keys`). The input is
computed the same way.
"""
import argparse, contextlib, io, os, sys
import numpy as np

MASK = 0xFFFFFFFF


def fnv1a(s):
    h = 0x811C9DC5
    for b in s.encode():
        h = ((h ^ b) * 0x01000193) & MASK
    return h


def unit(name, n):
    """n values in [0, 1): fmix32(hash(name) ^ (i * 0x9E3779B9)) / 2^32, as float64."""
    i = np.arange(n, dtype=np.uint64)
    x = (np.uint64(fnv1a(name)) ^ ((i * np.uint64(0x9E3779B9)) & np.uint64(MASK))) & np.uint64(MASK)
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x85EBCA6B)) & np.uint64(MASK)
    x ^= x >> np.uint64(13)
    x = (x * np.uint64(0xC2B2AE35)) & np.uint64(MASK)
    x ^= x >> np.uint64(16)
    return x.astype(np.float64) / 4294967296.0


def value(name, shape):
    """The rule the Rust test mirrors (crates/models/tests/parity.rs)."""
    n = int(np.prod(shape)) if len(shape) else 1
    u = unit(name, n)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "running_var":
        v = 0.5 + u
    elif leaf == "running_mean":
        v = (2 * u - 1) * 0.2
    elif leaf == "implicit":
        v = (1.0 if ".im." in name else 0.0) + (2 * u - 1) * 0.05
    elif leaf == "weight" and len(shape) == 1:  # BN gamma
        v = 0.5 + u
    elif leaf == "bias" and ".m." in name and "model." in name and is_head(name):
        v = (2 * u - 1) * 2.0 - 1.0  # Detect biases: away from 0 so sigmoid outputs vary
    elif leaf == "bias":
        v = (2 * u - 1) * 0.2
    elif len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        v = (2 * u - 1) * np.sqrt(3.0 / fan_in)  # unit-variance-preserving scale
    else:
        v = (2 * u - 1) * 0.2
    return v.astype(np.float32).reshape(shape)


HEAD = {"idx": None}


def is_head(name):
    return name.startswith(f"model.{HEAD['idx']}.")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True)
    ap.add_argument("--cfg", required=True)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", default="float64", choices=["float32", "float64"],
                    help="precision of the reference run (outputs are stored as float32); float64 makes "
                         "the fixture independent of PyTorch's own float32 rounding, which batch-norm "
                         "statistics over small maps amplify to ~1e-4")
    a = ap.parse_args()
    cfg, out = os.path.abspath(a.cfg), os.path.abspath(a.out)
    sys.path.insert(0, os.path.abspath(a.repo))
    os.chdir(a.repo)
    import torch
    from safetensors.torch import save_file
    from models.yolo import Model
    with contextlib.redirect_stdout(io.StringIO()):
        m = Model(cfg)
    HEAD["idx"] = len(m.model) - 1
    sd = m.state_dict()
    new = {}
    for k, t in sd.items():
        if k.endswith("anchors") or k.endswith("anchor_grid") or k.endswith("num_batches_tracked"):
            continue
        new[k] = torch.from_numpy(value(k, list(t.shape)))
    m.load_state_dict(new, strict=False)
    x32 = torch.from_numpy(unit("input", 3 * a.imgsz * a.imgsz).astype(np.float32).reshape(1, 3, a.imgsz, a.imgsz))

    def run(dt):
        mm = m.to(dt)
        sd = {k: v.to(dt) for k, v in new.items()}
        mm.load_state_dict(sd, strict=False)
        x = x32.to(dt)
        out = {}
        with torch.no_grad():
            mm.train()
            for i, r in enumerate(mm(x)):
                out[f"train.{i}"] = r.float().contiguous()
            mm.load_state_dict(sd, strict=False)  # the train pass moved the running stats
            mm.eval()
            out["eval.pred"] = mm(x)[0].float().contiguous()  # decoded boxes
        return out

    # The stored reference is the float64 run. PyTorch's own float32 run is compared with it and
    # its worst error per output recorded: batch-norm statistics of a batch of one over small
    # maps amplify float32 rounding to ~1e-4 in training mode, so a float32 implementation is
    # held to max(1e-4, 1.5 x PyTorch's own float32 error).
    other = run(torch.float32) if a.dtype == "float64" else None
    res = run(getattr(torch, a.dtype))
    f32_err = {}
    if other is not None:
        for k in res:
            d = (other[k] - res[k]).abs() / res[k].abs().clamp(min=1.0)
            f32_err["f32_err." + k] = f"{d.max().item():.3e}"
    keys = ",".join(sorted(new))
    save_file(res, out, metadata={"cfg": os.path.basename(cfg), "imgsz": str(a.imgsz), "keys": keys, "dtype": a.dtype, **f32_err})
    print(out, {k: list(v.shape) for k, v in res.items()}, f32_err)


if __name__ == "__main__":
    main()
