#!/usr/bin/env python3
"""Per-layer times of ONNX Runtime next to `yolo-forge bench --profile`, for one model and size.

Usage: python3 tools/profile_ort_layers.py --repo PATH_TO_YOLOV5 --cfg configs/models/yolov5n.yaml \
           --imgsz 320 --threads 1 --runs 20 [--bin target/release/yolo-forge]
Exports the fused eval model as `bench_ort_forward.export_session` does, with ONNX Runtime's
profiler on, runs it 2 + --runs times and sums each run's node times per upstream layer (node
names start with `/model.N/`); then runs our `bench --profile` with the same runs and prints both
medians per layer, their ratio, and the totals. ORT's node times leave out its scheduling between
nodes, ours include each op's hand-off, so compare rows, not the totals' gap.
"""
import argparse, collections, json, os, re, statistics, subprocess, sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True)
    ap.add_argument("--cfg", required=True)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--bin", default="target/release/yolo-forge")
    a = ap.parse_args()
    cfg, binary = os.path.abspath(a.cfg), os.path.abspath(a.bin)
    ours = subprocess.run([binary, "bench", "--model", cfg, "--imgsz", str(a.imgsz), "--threads", str(a.threads),
                           "--runs", str(a.runs), "--profile"], capture_output=True, text=True, check=True).stdout
    mine = {}
    for line in ours.splitlines():
        m = re.match(r"\s*(\d+)\s+([\d.]+)\s+[\d.]+\s+([\d.]+)\s+[\d.]+\s+\d+\s+(.*)$", line)
        if m:
            mine[int(m.group(1))] = (float(m.group(2)), float(m.group(3)), m.group(4))
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_ort_forward import export_session
    sess, xn = export_session(a.repo, cfg, a.imgsz, a.threads, profile=True)
    for _ in range(a.runs + 2):
        sess.run(None, {"images": xn})
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    runs = []
    for e in events:
        if e.get("cat") == "Session" and e["name"] == "model_run":
            runs.append(e)
    layer_runs = [collections.defaultdict(float) for _ in runs]
    starts = [(r["ts"], r["ts"] + r["dur"]) for r in runs]
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        m = re.match(r"/model\.(\d+)/", e["name"])
        layer = int(m.group(1)) if m else -1
        for i, (s, t) in enumerate(starts):
            if s <= e["ts"] <= t:
                layer_runs[i][layer] += e["dur"] / 1e3
                break
    layer_runs = layer_runs[2:]
    layers = sorted({k for r in layer_runs for k in r})
    print(f"{'':>3} {'ours ms':>8} {'ORT ms':>8} {'ours/ORT':>8} {'GFLOPs':>7}  module")
    tot_o = tot_r = 0.0
    for k in layers:
        ort_ms = statistics.median(r.get(k, 0.0) for r in layer_runs)
        o = mine.get(k, (0.0, 0.0, "(not a layer)"))
        tot_o += o[0]
        tot_r += ort_ms
        ratio = o[0] / ort_ms if ort_ms > 0 else float("nan")
        print(f"{k:>3} {o[0]:>8.2f} {ort_ms:>8.2f} {ratio:>8.2f} {o[1]:>7.3f}  {o[2]}")
    print(f"    {tot_o:>8.2f} {tot_r:>8.2f} {tot_o / tot_r:>8.2f}          total (ORT: node times only)")
    print("ORT whole runs, median ms:", round(statistics.median(r["dur"] / 1e3 for r in runs[2:]), 2))


if __name__ == "__main__":
    main()
