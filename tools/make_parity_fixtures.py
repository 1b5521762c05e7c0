#!/usr/bin/env python3
"""Parity fixtures: raw outputs of the upstream PyTorch model for deterministic weights/input.

One command, no checkout needed (creates the venv on first use, then re-runs itself inside it):
  python3 tools/make_parity_fixtures.py --venv target/fixtures-venv --cfg configs/models/yolov5n.yaml \
      --imgsz 320 --out crates/models/tests/fixtures/parity_yolov5n.safetensors
  python3 tools/make_parity_fixtures.py --venv target/fixtures-venv --cfg configs/models/yolov7-tiny.yaml \
      --imgsz 320 --out crates/models/tests/fixtures/parity_yolov7-tiny.safetensors
(`tools/make_parity_fixtures.sh` is the same with --venv target/fixtures-venv filled in.)

`--venv DIR` makes DIR with `python3 -m venv` when it is missing and pip-installs TORCH_REQS and
OTHER_REQS (below) into it: torch and torchvision from the PyTorch CPU wheel index when that
answers (`--torch-index` overrides), else from PyPI; the rest from PyPI. A stamp file in DIR
(with the versions installed) skips this on later runs while the lists are unchanged. Then it
re-executes this script with DIR's python. Where the model comes from
(`--impl`, default auto):
- `yolov5`: the PyPI package `yolov5` (`from yolov5.models.yolo import Model`), chosen when
  every module the YAML names exists there (yolov5n/s/m/l/x and friends);
- `yolov7-min`: tools/yolov7_min.py, this project's rendering of the few upstream yolov7
  modules that yolov7-tiny.yaml uses (Conv with per-row activations, Concat, MP, SP,
  nn.Upsample, IDetect), built from the YAML alone;
- `--repo PATH` (a checkout of ultralytics/yolov5 or WongKinYiu/yolov7, with torch, pyyaml,
  safetensors, numpy in the running python) still works as before and takes precedence:
  python3 tools/make_parity_fixtures.py --repo PATH --cfg ... --imgsz 320 --out ...

Weights are not stored: every state_dict entry (except anchors and counters) is overwritten by a
value computed from the tensor's name and element index (murmur3 finaliser of an FNV-1a name
hash), and the Rust test computes the same values. That keeps the fixture to the input-free
outputs: `train.N` (model.train(), batch statistics: raw level N) and `eval.pred` (model.eval():
decoded predictions), plus the list of state_dict names in the metadata (`keys`). The input is
computed the same way.
"""
import argparse, contextlib, io, json, os, subprocess, sys

try:  # absent from a bare system python; the --venv bootstrap needs only the standard library
    import numpy as np
except ImportError:
    np = None

HERE = os.path.dirname(os.path.abspath(__file__))
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# Pinned to ranges known to work together (yolov5 7.0.14 is the last release of the PyPI
# package; torchvision is left to follow torch; yolov5 imports pkg_resources, which setuptools
# dropped after 80).
TORCH_REQS = ["torch>=2.0,<3", "torchvision"]
OTHER_REQS = ["yolov5==7.0.14", "setuptools<81", "safetensors>=0.4", "pyyaml>=5.3", "numpy>=1.23"]
STAMP = ".make_parity_fixtures.json"

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


def cpu_index_reachable():
    import urllib.request
    try:
        with urllib.request.urlopen(CPU_INDEX + "/torch/", timeout=15) as r:
            return r.status == 200
    except Exception:
        return False


def bootstrap(venv, torch_index):
    """Make `venv` (python3 -m venv), install the requirements once, and re-run this script there."""
    venv = os.path.abspath(venv)
    if os.path.realpath(sys.prefix) == os.path.realpath(venv):
        return  # already re-executed inside it
    py = os.path.join(venv, "bin", "python")
    if not os.path.exists(py):
        print(f"[fixtures] creating venv {venv}", file=sys.stderr, flush=True)
        try:
            subprocess.check_call([sys.executable, "-m", "venv", venv])
        except subprocess.CalledProcessError:
            sys.exit(f"python3 -m venv {venv} failed (on Debian/Ubuntu: apt-get install python3-venv)")
    want = {"torch": TORCH_REQS, "other": OTHER_REQS, "torch_index": torch_index}
    stamp = os.path.join(venv, STAMP)
    have = None
    if os.path.exists(stamp):
        with open(stamp) as fh:
            have = json.load(fh)
    if have is None or have.get("requirements") != want:
        pip = [py, "-m", "pip", "install"]
        index = None
        if torch_index == "auto":
            index = CPU_INDEX if cpu_index_reachable() else None
            if index is None:
                print(f"[fixtures] {CPU_INDEX} does not answer: torch comes from PyPI (the default "
                      "Linux wheel, with its CUDA libraries: a few GB)", file=sys.stderr, flush=True)
        elif torch_index != "pypi":
            index = torch_index
        if index:
            print(f"[fixtures] installing {' '.join(TORCH_REQS)} from {index}", file=sys.stderr, flush=True)
            subprocess.check_call(pip + ["--index-url", index] + TORCH_REQS)
        print(f"[fixtures] installing {' '.join(TORCH_REQS + OTHER_REQS)}", file=sys.stderr, flush=True)
        subprocess.check_call(pip + TORCH_REQS + OTHER_REQS)
        listed = json.loads(subprocess.check_output([py, "-m", "pip", "list", "--format=json"]))
        wanted = {"torch", "torchvision", "yolov5", "ultralytics", "safetensors", "pyyaml", "numpy", "setuptools"}
        installed = {d["name"]: d["version"] for d in listed if d["name"].lower() in wanted}
        with open(stamp, "w") as fh:
            json.dump({"requirements": want, "torch_from": index or "pypi", "installed": installed}, fh, indent=1)
        print(f"[fixtures] installed {installed}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os.execv(py, [py, os.path.abspath(__file__)] + sys.argv[1:])


def yaml_modules(cfg):
    import yaml
    with open(cfg, encoding="ascii", errors="ignore") as fh:
        d = yaml.safe_load(fh)
    return [row[2] for row in d["backbone"] + d["head"]]


def model_class(a, cfg):
    """(Model class, description) from --repo, the yolov5 package or tools/yolov7_min.py."""
    if a.repo:
        sys.path.insert(0, os.path.abspath(a.repo))
        os.chdir(a.repo)
        from models.yolo import Model
        return Model, "repo " + os.path.basename(os.path.abspath(a.repo))
    import torch.nn as nn
    names = set(yaml_modules(cfg))
    is_nn = lambda n: n.startswith("nn.") and hasattr(nn, n[3:])
    impl, why = a.impl, ""
    if impl in ("auto", "yolov5"):
        try:
            import yolov5
            from yolov5.models import yolo as y5
        except ImportError as e:
            if impl == "yolov5":
                sys.exit(f"the PyPI package yolov5 does not import ({e!r}): use --venv DIR")
            y5, why = None, f" (the yolov5 package did not import: {e!r})"
        if y5 is not None and (impl == "yolov5" or all(is_nn(n) or hasattr(y5, n) for n in names)):
            return y5.Model, f"yolov5 {yolov5.__version__} (PyPI)"
    sys.path.insert(0, HERE)
    sys.dont_write_bytecode = True  # no tools/__pycache__ in the work tree
    import yolov7_min
    missing = sorted(n for n in names if not is_nn(n) and n not in yolov7_min.module_names())
    if missing:
        where = "tools/yolov7_min.py" if impl == "yolov7-min" else "the yolov5 package nor in tools/yolov7_min.py"
        sys.exit(f"{cfg}: modules {missing} are not in {where}: "
                 f"use --repo with an upstream checkout{why}")
    return yolov7_min.Model, "tools/yolov7_min.py"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--venv", help="make/use this venv (installs torch, yolov5, safetensors, pyyaml, numpy) "
                                   "and run inside it")
    ap.add_argument("--repo", help="an ultralytics/yolov5 or WongKinYiu/yolov7 checkout to take the model from")
    ap.add_argument("--impl", default="auto", choices=["auto", "yolov5", "yolov7-min"],
                    help="without --repo: the yolov5 PyPI package or tools/yolov7_min.py (auto: yolov5 when "
                         "it has every module of the YAML)")
    ap.add_argument("--torch-index", default="auto",
                    help="with --venv: where torch comes from: auto (PyTorch CPU index if reachable, else "
                         "PyPI), pypi, or an index URL")
    ap.add_argument("--cfg", required=True)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", default="float64", choices=["float32", "float64"],
                    help="precision of the reference run (outputs are stored as float32); float64 makes "
                         "the fixture independent of PyTorch's own float32 rounding, which batch-norm "
                         "statistics over small maps amplify to ~1e-4")
    a = ap.parse_args()
    if a.venv:
        bootstrap(a.venv, a.torch_index)
    global np
    try:
        import numpy as np
        import torch
        from safetensors.torch import save_file
    except ImportError as e:
        sys.exit(f"{e}: run with --venv DIR to get torch, safetensors, pyyaml and numpy installed")
    cfg, out = os.path.abspath(a.cfg), os.path.abspath(a.out)
    Model, impl = model_class(a, cfg)
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
    meta = {"cfg": os.path.basename(cfg), "imgsz": str(a.imgsz), "keys": keys, "dtype": a.dtype,
            "model_from": impl, "torch": torch.__version__, **f32_err}
    save_file(res, out, metadata=meta)
    print(out, impl, f"torch {torch.__version__}", {k: list(v.shape) for k, v in res.items()}, f32_err)


if __name__ == "__main__":
    main()
