#!/usr/bin/env python3
"""yolo-forge binaries against ONNX Runtime, interleaved round by round (noisy shared hosts).

Usage: python3 tools/bench_interleaved_ort.py --repo PATH_TO_YOLOV5 --cfg configs/models/yolov5n.yaml \
           --imgsz 320 --threads 1 --rounds 5 --runs 15 --bins target/release/yolo-forge[,OTHER]
Exports the fused eval model to ONNX once (`bench_ort_forward.export_session`) and keeps one
session; each round runs every binary's `bench` (2 warm-up runs, median and minimum of --runs)
and then the session (same protocol). Prints each round and, per contender, the median of the
round medians and the smallest minimum.
"""
import argparse, json, os, statistics, subprocess, sys, time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True)
    ap.add_argument("--cfg", required=True)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--bins", default="target/release/yolo-forge")
    a = ap.parse_args()
    cfg = os.path.abspath(a.cfg)
    bins = [os.path.abspath(b) for b in a.bins.split(",")]
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_ort_forward import export_session
    sess, xn = export_session(a.repo, cfg, a.imgsz, a.threads)
    res = {b: [] for b in bins}
    res["onnxruntime"] = []
    for r in range(a.rounds):
        line = []
        for b in bins:
            out = subprocess.run([b, "bench", "--model", cfg, "--imgsz", str(a.imgsz), "--threads", str(a.threads),
                                  "--runs", str(a.runs), "--json"], capture_output=True, text=True, check=True).stdout
            d = json.loads(out)
            res[b].append((d["median_ms"], d["min_ms"]))
            line.append("%.1f/%.1f" % res[b][-1])
        ts = []
        for i in range(a.runs + 2):
            t = time.perf_counter()
            sess.run(None, {"images": xn})
            if i >= 2:
                ts.append((time.perf_counter() - t) * 1e3)
        res["onnxruntime"].append((statistics.median(ts), min(ts)))
        line.append("ort %.1f/%.1f" % res["onnxruntime"][-1])
        print(r, " ".join(line), flush=True)
    for k, v in res.items():
        print(f"{k}: median of medians {statistics.median(x[0] for x in v):.1f} ms, min {min(x[1] for x in v):.1f} ms")


if __name__ == "__main__":
    main()
