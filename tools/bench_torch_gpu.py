#!/usr/bin/env python3
"""PyTorch side of `cargo xtask gpu-check`: upstream YOLOv5 on the same GPU, same workloads.

Builds the model from our YAML (default configs/models/yolov5s.yaml, nc 80) with the upstream
code: a checkout given by --repo, else the PyPI `yolov5` package when installed. Measures

- training step images/s at --train-batch × --imgsz (default 32 × 640): forward in training
  mode, upstream ComputeLoss (hyp.scratch-low, gains scaled as train.py does) when
  `utils.loss` imports, else the sum of the raw outputs' means (the JSON says which), backward,
  SGD (nesterov, momentum 0.937, weight decay 5e-4), zero_grad. Three modes: `fp32` (PyTorch
  defaults: cuDNN may use TF32 for convolutions), `fp32_strict` (TF32 off everywhere) and `amp`
  (autocast fp16 + GradScaler, as upstream --amp; bf16 autocast on the CPU);
- inference latency at batch 1 and 32 (fused Conv+BN, eval, no_grad, fp32);
- peak device memory (torch.cuda.max_memory_allocated) of each training mode.

Timing: cudnn.benchmark on, 3 warm-up iterations, then the median of --runs, with
torch.cuda.synchronize() around each. Prints one JSON line.

Usage: python3 tools/bench_torch_gpu.py [--repo PATH_TO_YOLOV5] [--cfg configs/models/yolov5s.yaml]
           [--device cuda:0] [--imgsz 640] [--train-batch 32] [--infer-batches 1,32]
           [--train-runs 10] [--infer-runs 30] [--modes fp32,fp32_strict,amp]
Smoke test without a GPU: --device cpu --imgsz 64 --train-batch 2 --infer-batches 1,2 --train-runs 1 --infer-runs 1
"""
import argparse, contextlib, io, json, os, statistics, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))

# data/hyps/hyp.scratch-low.yaml (the loss keys), for a tree without the file
SCRATCH_LOW = {"box": 0.05, "cls": 0.5, "cls_pw": 1.0, "obj": 1.0, "obj_pw": 1.0, "iou_t": 0.2,
               "anchor_t": 4.0, "fl_gamma": 0.0, "label_smoothing": 0.0}


def upstream_root(repo):
    """The directory whose `models/yolo.py` is upstream's: --repo, else the PyPI package."""
    if repo:
        return os.path.abspath(repo), "checkout"
    try:
        import yolov5  # noqa: F401  (PyPI package: the upstream tree under site-packages)
    except ImportError:
        sys.exit("bench_torch_gpu.py: no upstream YOLOv5: pass --repo PATH_TO_YOLOV5 or pip install yolov5")
    return os.path.dirname(yolov5.__file__), "pypi yolov5 " + getattr(yolov5, "__version__", "?")


# Modules the upstream tree imports at top level but that building, training and timing the
# model never use; a lean environment (torch only) gets permissive stand-ins for them.
OPTIONAL = {"pandas", "seaborn", "tqdm", "scipy", "git", "IPython", "ultralytics", "thop", "psutil",
            "matplotlib", "cv2", "PIL", "requests", "torchvision", "pkg_resources", "setuptools"}


class _Any:
    """Callable, subscriptable, iterable-as-empty stand-in for anything a stub module holds."""

    def __init__(self, *a, **k):
        pass

    def __call__(self, *a, **k):
        return _Any()

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _Any()

    def __getitem__(self, k):
        return _Any()

    def __iter__(self):
        return iter(())

    def __mro_entries__(self, bases):
        return (object,)


def _module_getattr(name):
    if name.startswith("__") and name.endswith("__"):
        raise AttributeError(name)
    return _Any()


def import_with_stubs(name, stubbed):
    """`import name`, replacing missing OPTIONAL modules by stubs (recorded in `stubbed`)."""
    import importlib, importlib.machinery, types
    for _ in range(40):
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as e:
            missing = (e.name or "").split(".")[0]
            if missing not in OPTIONAL or missing in stubbed:
                raise
            parts = e.name.split(".")
            for i in range(1, len(parts) + 1):
                mod = types.ModuleType(".".join(parts[:i]))
                mod.__getattr__ = _module_getattr
                mod.__path__ = []
                mod.__spec__ = importlib.machinery.ModuleSpec(mod.__name__, None, is_package=True)
                sys.modules.setdefault(".".join(parts[:i]), mod)
            stubbed.append(e.name)
            for k in [k for k in sys.modules if k == name or k.startswith(("models", "utils"))]:
                del sys.modules[k]
    raise RuntimeError(f"could not import {name}")


def timed(fn, runs, warmup, sync):
    times = []
    for i in range(warmup + runs):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        if i >= warmup:
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo")
    ap.add_argument("--cfg", default=os.path.join(HERE, "..", "configs", "models", "yolov5s.yaml"))
    ap.add_argument("--nc", type=int, default=80)
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--train-batch", type=int, default=32)
    ap.add_argument("--infer-batches", default="1,32")
    ap.add_argument("--train-runs", type=int, default=10)
    ap.add_argument("--infer-runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--modes", default="fp32,fp32_strict,amp")
    a = ap.parse_args()
    cfg = os.path.abspath(a.cfg)
    root, source = upstream_root(a.repo)
    sys.path.insert(0, root)
    os.chdir(root)
    import logging
    import torch
    logging.getLogger("yolov5").setLevel(logging.WARNING)
    stubbed = []
    Model = import_with_stubs("models.yolo", stubbed).Model
    try:
        ComputeLoss = import_with_stubs("utils.loss", stubbed).ComputeLoss
        loss_kind = "upstream ComputeLoss (hyp.scratch-low)"
    except Exception as e:  # an incomplete tree: time the network with a stand-in loss
        ComputeLoss = None
        loss_kind = f"sum of raw output means (utils.loss not importable: {type(e).__name__}: {e})"

    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        sys.exit("bench_torch_gpu.py: torch.cuda.is_available() is False")
    sync = (lambda: torch.cuda.synchronize(dev)) if cuda else (lambda: None)
    torch.backends.cudnn.benchmark = True
    tf32_default = {"cudnn": torch.backends.cudnn.allow_tf32,
                    "matmul": torch.backends.cuda.matmul.allow_tf32}
    out = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(dev) if cuda else "cpu",
        "upstream": f"{source} at {root}",
        "cfg": cfg,
        "imgsz": a.imgsz,
        "loss": loss_kind,
        "tf32_defaults": tf32_default,
        "stubbed_modules": stubbed,
        "train": {},
        "infer": {},
    }

    def build():
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            m = Model(cfg, nc=a.nc)
        return m.to(dev)

    # training step
    hyp = dict(SCRATCH_LOW)
    hyp_file = os.path.join(root, "data", "hyps", "hyp.scratch-low.yaml")
    if os.path.exists(hyp_file):
        import yaml
        with open(hyp_file) as f:
            hyp.update(yaml.safe_load(f))
    torch.manual_seed(0)
    b, s = a.train_batch, a.imgsz
    x = torch.rand(b, 3, s, s, device=dev)
    g = torch.Generator().manual_seed(1)
    rows = []
    for i in range(b):
        for _ in range(4):
            w, h = (0.05 + 0.3 * torch.rand(2, generator=g)).tolist()
            cx = w / 2 + (1 - w) * torch.rand(1, generator=g).item()
            cy = h / 2 + (1 - h) * torch.rand(1, generator=g).item()
            c = torch.randint(0, a.nc, (1,), generator=g).item()
            rows.append([i, c, cx, cy, w, h])
    targets = torch.tensor(rows, device=dev)
    for mode in [m for m in a.modes.split(",") if m]:
        if mode not in ("fp32", "fp32_strict", "amp"):
            sys.exit(f"bench_torch_gpu.py: unknown mode {mode}")
        torch.backends.cudnn.allow_tf32 = tf32_default["cudnn"] and mode != "fp32_strict"
        torch.backends.cuda.matmul.allow_tf32 = tf32_default["matmul"] and mode != "fp32_strict"
        m = build().train()
        nl = m.model[-1].nl
        h = dict(hyp)
        h["box"] *= 3 / nl
        h["cls"] *= a.nc / 80 * 3 / nl
        h["obj"] *= (s / 640) ** 2 * 3 / nl
        m.hyp, m.gr = h, 1.0
        loss_fn = ComputeLoss(m) if ComputeLoss else None
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.937, nesterov=True, weight_decay=5e-4)
        amp = mode == "amp"
        scaler = torch.amp.GradScaler("cuda", enabled=amp and cuda)
        ac_dtype = torch.float16 if cuda else torch.bfloat16

        def step():
            with torch.autocast(dev.type, dtype=ac_dtype, enabled=amp):
                pred = m(x)
                if loss_fn is not None:
                    loss, _ = loss_fn(pred, targets)
                else:
                    loss = sum(p.float().mean() for p in pred)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)

        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
        med, mn = timed(step, a.train_runs, a.warmup, sync)
        r = {"median_ms": med, "min_ms": mn, "images_per_s": b * 1e3 / med, "batch": b}
        if cuda:
            r["peak_mem_mib"] = torch.cuda.max_memory_allocated(dev) / 2**20
            r["peak_reserved_mib"] = torch.cuda.max_memory_reserved(dev) / 2**20
        out["train"][mode] = r
        del m, opt, loss_fn
    torch.backends.cudnn.allow_tf32 = tf32_default["cudnn"]
    torch.backends.cuda.matmul.allow_tf32 = tf32_default["matmul"]

    # inference latency (fused, eval, fp32)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        m = build().fuse().eval()
    for bs in [int(v) for v in a.infer_batches.split(",") if v]:
        xi = torch.rand(bs, 3, s, s, device=dev)
        with torch.no_grad():
            med, mn = timed(lambda: m(xi), a.infer_runs, a.warmup, sync)
        out["infer"][f"b{bs}"] = {"median_ms": med, "min_ms": mn, "images_per_s": bs * 1e3 / med}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
