#!/usr/bin/env bash
# Interleaved forward-latency comparison: yolo-forge vs upstream PyTorch and ONNX Runtime, same
# machine, same minutes.
# Usage: tools/forward_side_by_side.sh PATH_TO_YOLOV5_CHECKOUT PYTHON_WITH_TORCH [rounds]
# Prints: round model imgsz threads ours_ms torch_ms ort_ms (medians of 7 timed runs, 2 warm-up).
# The Python needs torch, onnx and onnxruntime.
set -euo pipefail
repo=$1; py=$2; rounds=${3:-2}
here=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -q -p yolo-cli --manifest-path "$here/Cargo.toml"
for round in $(seq "$rounds"); do for t in 1 2; do for m in yolov5n yolov5s; do for s in 320 640; do
  ours=$("$here/target/release/yolo-forge" bench --model "$here/configs/models/$m.yaml" --imgsz "$s" --threads "$t" --runs 7 --json 2>/dev/null \
    | "$py" -c "import json,sys; print('%.1f' % json.load(sys.stdin)['median_ms'])")
  torch=$("$py" "$here/tools/bench_torch_forward.py" --repo "$repo" --cfg "$here/configs/models/$m.yaml" --imgsz "$s" --threads "$t" --runs 7 2>/dev/null \
    | tail -1 | "$py" -c "import json,sys; print('%.1f' % json.load(sys.stdin)['median_ms'])")
  ort=$("$py" "$here/tools/bench_ort_forward.py" --repo "$repo" --cfg "$here/configs/models/$m.yaml" --imgsz "$s" --threads "$t" --runs 7 2>/dev/null \
    | tail -1 | "$py" -c "import json,sys; print('%.1f' % json.load(sys.stdin)['median_ms'])")
  echo "$round $m $s $t $ours $torch $ort"
done; done; done; done
