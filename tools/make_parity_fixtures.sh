#!/bin/sh
# Regenerate both parity fixtures (crates/models/tests/fixtures/parity_*.safetensors) with no
# upstream checkout: tools/make_parity_fixtures.py makes the venv (default target/fixtures-venv,
# or $FIXTURES_VENV) on first use, installs torch + the PyPI package yolov5 there, and runs inside
# it; yolov7-tiny is built from its YAML by tools/yolov7_min.py.
#   sh tools/make_parity_fixtures.sh [OUT_DIR]     (default: crates/models/tests/fixtures)
set -eu
cd "$(dirname "$0")/.."
venv="${FIXTURES_VENV:-target/fixtures-venv}"
out="${1:-crates/models/tests/fixtures}"
mkdir -p "$out"
for m in yolov5n yolov7-tiny; do
  python3 tools/make_parity_fixtures.py --venv "$venv" --cfg "configs/models/$m.yaml" \
    --imgsz 320 --out "$out/parity_$m.safetensors"
done
