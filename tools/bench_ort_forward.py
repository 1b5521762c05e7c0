#!/usr/bin/env python3
"""Forward latency of an upstream model exported to ONNX and run by ONNX Runtime (CPU).

Usage: python3 tools/bench_ort_forward.py --repo PATH_TO_YOLOV5 --cfg configs/models/yolov5s.yaml \
           --imgsz 640 --threads 1 --runs 10
Exports the fused eval model (opset 17) to a temporary file, then times `session.run` with the
same protocol as `yolo-forge bench` (2 warm-up runs, median of --runs). Prints one JSON line.
"""
import argparse, contextlib, io, json, os, sys, tempfile, time


def export_session(repo, cfg, imgsz, threads, profile=False):
    """The fused eval model of `cfg` exported from the upstream checkout `repo` (opset 17) and
    loaded into an ONNX Runtime CPU session with `threads` intra-op threads (its profiler on when
    `profile`): (session, input)."""
    cfg = os.path.abspath(cfg)
    sys.path.insert(0, os.path.abspath(repo))
    os.chdir(repo)
    import torch, onnxruntime as ort
    from models.yolo import Model
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        m = Model(cfg).fuse().eval()
        for mod in m.modules():
            if hasattr(mod, "export"):
                mod.export = True  # Detect returns the decoded tensor only
        x = torch.rand(1, 3, imgsz, imgsz)
        path = os.path.join(tempfile.mkdtemp(), "model.onnx")
        torch.onnx.export(m, x, path, opset_version=17, input_names=["images"], output_names=["output"], dynamo=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.enable_profiling = profile
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"]), x.numpy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True)
    ap.add_argument("--cfg", required=True)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=10)
    a = ap.parse_args()
    import onnxruntime as ort
    sess, xn = export_session(a.repo, a.cfg, a.imgsz, a.threads)
    times = []
    for i in range(a.runs + 2):
        t = time.perf_counter()
        sess.run(None, {"images": xn})
        if i >= 2:
            times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    print(json.dumps({"median_ms": times[len(times) // 2], "min_ms": times[0], "onnxruntime": ort.__version__}))


if __name__ == "__main__":
    main()
