#!/usr/bin/env python3
"""Forward latency of an upstream PyTorch model (fused, eval, no_grad), for side-by-side tables.

Usage: python3 tools/bench_torch_forward.py --repo PATH_TO_YOLOV5 --cfg configs/models/yolov5s.yaml \
           --imgsz 640 --threads 1 --runs 10
Prints one JSON line: {"median_ms": …, "min_ms": …}. Same protocol as `yolo-forge bench`:
2 warm-up runs, then the median of --runs.
"""
import argparse, contextlib, io, json, os, sys, time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True)
    ap.add_argument("--cfg", required=True)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=10)
    a = ap.parse_args()
    cfg = os.path.abspath(a.cfg)
    sys.path.insert(0, os.path.abspath(a.repo))
    os.chdir(a.repo)
    import torch
    torch.set_num_threads(a.threads)
    from models.yolo import Model
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        m = Model(cfg).fuse().eval()
    x = torch.rand(a.batch, 3, a.imgsz, a.imgsz)
    times = []
    with torch.no_grad():
        for i in range(a.runs + 2):
            t = time.perf_counter()
            m(x)
            if i >= 2:
                times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    print(json.dumps({"median_ms": times[len(times) // 2], "min_ms": times[0], "torch": torch.__version__}))


if __name__ == "__main__":
    main()
