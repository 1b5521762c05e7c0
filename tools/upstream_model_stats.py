#!/usr/bin/env python3
"""Parameter counts and GFLOPs of upstream model YAML files, from the upstream PyTorch code.

Usage: python3 tools/upstream_model_stats.py --repo PATH_TO_YOLOV5_OR_YOLOV7_CHECKOUT \
           --out crates/models/tests/fixtures/upstream_stats.json configs/models/*.yaml

Needs torch, thop (ultralytics-thop), pyyaml and the upstream repository's own requirements.
Writes {yaml_name: {"params": int, "params_fused": int, "gflops": float, "gflops_fused": float}}
as upstream's model.info() computes them (thop on a max(stride, 32) input, scaled to 640). YOLOv5 and
YOLOv7 compute GFLOPs the same way (both profile at max(stride, 32): 64 for P6 models), so one script
serves both; the input has the YAML's `ch` channels (YOLOv5 reads them off the first weight, which
is wrong for YOLOv7's P6 models whose first row is ReOrg). Existing entries of --out are kept.
The committed fixture was made this way; tests read it and never need Python.
"""
import argparse, contextlib, io, json, os, sys
from copy import deepcopy


def stats(model, imgsz=640):
    import thop, torch
    p = next(model.parameters())
    n_p = sum(x.numel() for x in model.parameters())
    stride = max(int(model.stride.max()), 32) if hasattr(model, "stride") else 32
    ch = model.yaml.get("ch", 3) if isinstance(getattr(model, "yaml", None), dict) else p.shape[1]
    im = torch.empty((1, ch, stride, stride), device=p.device)
    flops = thop.profile(deepcopy(model), inputs=(im,), verbose=False)[0] / 1e9 * 2
    return n_p, flops * imgsz / stride * imgsz / stride


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("yamls", nargs="+")
    a = ap.parse_args()
    sys.path.insert(0, os.path.abspath(a.repo))
    os.chdir(a.repo)
    import torch
    from models.yolo import Model
    torch.manual_seed(0)
    out = {}
    if os.path.exists(a.out):
        out = json.load(open(a.out))
    for y in a.yamls:
        name = os.path.basename(y)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                m = Model(os.path.abspath(os.path.join(os.environ.get("OLDPWD", "."), y)) if not os.path.isabs(y) else y)
            n, g = stats(m)
            # no_grad: YOLOv7's IDetect.fuse() updates parameters in place; fuse() prints per block
            with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
                m.fuse()
            nf, gf = stats(m)
            out[name] = {"params": n, "params_fused": nf, "gflops": round(g, 4), "gflops_fused": round(gf, 4)}
            print(name, out[name], flush=True)
        except Exception as e:  # report and continue: some YAMLs need modules this repo lacks
            print(name, "FAILED:", repr(e), flush=True)
    json.dump(out, open(a.out, "w"), indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
