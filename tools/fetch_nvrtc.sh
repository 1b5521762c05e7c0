#!/usr/bin/env bash
# Fetches NVIDIA's NVRTC runtime compiler (CUDA 13, the PyPI wheel `nvidia-cuda-nvrtc`) into
# DIR (default target/nvrtc) so that the CUDA kernels can be compiled -- not run -- on a machine
# without a GPU or CUDA toolkit. Prints the library folder on success; exits non-zero otherwise.
# Use: export LD_LIBRARY_PATH="$(tools/fetch_nvrtc.sh)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
set -euo pipefail
dir="${1:-target/nvrtc}"
lib="$dir/nvidia/cu13/lib"
if [ -e "$lib/libnvrtc.so.13" ]; then echo "$(cd "$lib" && pwd)"; exit 0; fi
mkdir -p "$dir"
py=$(command -v python3 || true)
[ -n "$py" ] || { echo "fetch_nvrtc: python3 not found" >&2; exit 1; }
if ! "$py" -m pip --version >/dev/null 2>&1; then
  "$py" -m ensurepip --user >/dev/null 2>&1 || { echo "fetch_nvrtc: pip not available" >&2; exit 1; }
fi
"$py" -m pip download --quiet --no-deps --dest "$dir" "nvidia-cuda-nvrtc>=13,<14" >&2
whl=$(ls "$dir"/nvidia_cuda_nvrtc-*.whl | head -1)
"$py" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$whl" "$dir"
[ -e "$lib/libnvrtc.so.13" ] || { echo "fetch_nvrtc: libnvrtc.so.13 not in $whl" >&2; exit 1; }
echo "$(cd "$lib" && pwd)"
