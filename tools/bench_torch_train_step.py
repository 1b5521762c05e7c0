#!/usr/bin/env python3
"""Time one upstream YOLOv5 training step on CPU: forward in training mode, upstream
ComputeLoss, backward, SGD (nesterov, momentum 0.937) step and zero_grad — the same workload as
`yolo-forge bench --train` (random input, 4 boxes per image, hyp.scratch-low).

Usage: python3 tools/bench_torch_train_step.py --repo PATH_TO_YOLOV5 --cfg configs/models/yolov5n.yaml \
           --imgsz 320 --batch 8 --threads 1 --runs 5
Prints one JSON line: {"median_ms", "min_ms", "peak_rss_mib", "torch"}: 2 warm-up steps, then
the median of --runs.
"""
import argparse, contextlib, io, json, os, resource, sys, time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True)
    ap.add_argument("--cfg", required=True)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--nc", type=int, default=80)
    a = ap.parse_args()
    cfg = os.path.abspath(a.cfg)
    sys.path.insert(0, os.path.abspath(a.repo))
    os.chdir(a.repo)
    import logging
    import torch
    import yaml
    torch.set_num_threads(a.threads)
    logging.getLogger("yolov5").setLevel(logging.WARNING)
    from models.yolo import Model
    logging.getLogger("yolov5").setLevel(logging.WARNING)
    from utils.loss import ComputeLoss
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        m = Model(cfg, nc=a.nc).train()
    with open("data/hyps/hyp.scratch-low.yaml") as f:
        hyp = yaml.safe_load(f)
    nl = m.model[-1].nl
    hyp["box"] *= 3 / nl
    hyp["cls"] *= a.nc / 80 * 3 / nl
    hyp["obj"] *= (a.imgsz / 640) ** 2 * 3 / nl
    m.hyp = hyp
    m.gr = 1.0
    loss_fn = ComputeLoss(m)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.937, nesterov=True, weight_decay=5e-4)
    torch.manual_seed(0)
    x = torch.rand(a.batch, 3, a.imgsz, a.imgsz)
    g = torch.Generator().manual_seed(1)
    rows = []
    for b in range(a.batch):
        for _ in range(4):
            w, h = 0.05 + 0.3 * torch.rand(2, generator=g)
            cx = w / 2 + (1 - w) * torch.rand(1, generator=g)
            cy = h / 2 + (1 - h) * torch.rand(1, generator=g)
            c = torch.randint(0, a.nc, (1,), generator=g)
            rows.append([b, c.item(), cx.item(), cy.item(), w.item(), h.item()])
    targets = torch.tensor(rows)
    times = []
    for i in range(a.runs + 2):
        t = time.perf_counter()
        pred = m(x)
        loss, _ = loss_fn(pred, targets)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if i >= 2:
            times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"median_ms": times[len(times) // 2], "min_ms": times[0], "peak_rss_mib": peak,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
