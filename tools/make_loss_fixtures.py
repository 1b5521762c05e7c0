#!/usr/bin/env python3
"""Parity fixtures for yolo-losses (ComputeLoss) and yolo-train (NMS, val metrics).

Usage (from a checkout of ultralytics/yolov5 with torch, torchvision, numpy, safetensors and
the `ultralytics` package it imports its IoU helpers from):
  python3 tools/make_loss_fixtures.py --repo /path/to/yolov5 --out-dir .

Writes
  crates/losses/tests/fixtures/compute_loss.safetensors
  crates/train/tests/fixtures/metrics.safetensors
  crates/train/tests/fixtures/nms.safetensors

ComputeLoss runs in float64 (default dtype float64, so upstream's `torch.zeros(1)` accumulators
are float64 too) on predictions that are stored as float32: the Rust test reads the same float32
values and compares its float32 run against the float64 reference. Targets are drawn so that no
build_targets comparison (anchor ratio, 0.5 neighbour offsets, border tests) sits within 1e-3 of
its threshold, where float32 and float64 could disagree. The fixture also records PyTorch's own float32 gradient error per level
(`<case>.f32_err`), the yardstick for elements where terms cancel. Metrics and NMS run as upstream does
(float32 IoU) on float32 data.
"""
import argparse, os, sys
import numpy as np
import torch
from torch import nn
from safetensors.numpy import save_file as _save_file


def save_file(tensors, path):
    """safetensors.numpy writes a strided view's underlying buffer: make every array contiguous."""
    _save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, path)

NC, NA, NL, IMGSZ, BS = 3, 3, 3, 128, 3
STRIDES = [8.0, 16.0, 32.0]
ANCHORS_PX = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]


def borderline(t, anchors):
    """True when a target sits within 1e-3 of a build_targets threshold at any level."""
    for i, s in enumerate(STRIDES):
        g = IMGSZ / s
        xy, wh = t[2:4] * g, t[4:6] * g
        for a in anchors[i]:
            r = wh / a
            m = np.maximum(r, 1 / r).max()
            if abs(m - 4.0) < 1e-3:
                return True
        for v in list(xy) + list(g - xy):
            if abs(v % 1 - 0.5) < 1e-3 or abs(v % 1) < 1e-3 or abs(v % 1 - 1) < 1e-3 or abs(v - 1) < 1e-3:
                return True
    return False


def make_targets(rng, anchors):
    rows = []
    per_image = [5, 0, 7]  # the middle image has no labels
    for b, n in enumerate(per_image):
        while n:
            t = np.array([b, rng.integers(NC), *rng.uniform(0.02, 0.98, 2), *rng.uniform(0.03, 0.6, 2)])
            if borderline(t, anchors):
                continue
            rows.append(t)
            n -= 1
    # two labels on the same cell and anchor: upstream's tobj write order (last wins) matters
    t = rows[0].copy()
    t[4:6] *= 1.05
    rows.append(t)
    return np.stack(rows)


def loss_fixture(repo, out):
    from utils.loss import ComputeLoss

    torch.set_default_dtype(torch.float64)
    anchors = torch.tensor(ANCHORS_PX, dtype=torch.float64).view(NL, NA, 2) / torch.tensor(STRIDES).view(-1, 1, 1)

    class Det(nn.Module):
        def __init__(self):
            super().__init__()
            self.na, self.nc, self.nl = NA, NC, NL
            self.register_buffer("anchors", anchors.clone())
            self.stride = torch.tensor(STRIDES)
            self.w = nn.Parameter(torch.zeros(1))

    class Model(nn.Module):
        def __init__(self, hyp):
            super().__init__()
            self.model = nn.ModuleList([Det()])
            self.hyp = hyp

    rng = np.random.default_rng(7)
    tensors = {}
    targets = make_targets(rng, anchors.numpy())
    tensors["targets"] = targets.astype(np.float32)
    tensors["anchors"] = anchors.numpy().astype(np.float32)
    tensors["strides"] = np.array(STRIDES, dtype=np.float32)
    preds32 = []
    for i, s in enumerate(STRIDES):
        g = int(IMGSZ / s)
        p = rng.normal(0.0, 1.5, (BS, NA, g, g, NC + 5)).astype(np.float32)
        preds32.append(p)
        tensors[f"pred.{i}"] = p
    # train.py scaling for nl=3, nc=3, imgsz=128
    base = dict(box=0.05, cls=0.5, obj=1.0, anchor_t=4.0, fl_gamma=0.0, cls_pw=1.0, obj_pw=1.0, label_smoothing=0.0)
    cases = {
        "a": base,
        "b": dict(base, fl_gamma=1.5, label_smoothing=0.1, cls_pw=2.0, obj_pw=0.7),
    }
    for name, hyp in cases.items():
        hyp = dict(hyp)
        hyp["box"] *= 3 / NL
        hyp["cls"] *= NC / 80 * 3 / NL
        hyp["obj"] *= (IMGSZ / 640) ** 2 * 3 / NL
        loss_fn = ComputeLoss(Model(hyp))
        p = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in preds32]
        t = torch.tensor(targets, dtype=torch.float64)
        loss, items = loss_fn(p, t)
        loss.sum().backward()
        tensors[f"{name}.hyp"] = np.array(
            [hyp[k] for k in ("box", "cls", "obj", "anchor_t", "fl_gamma", "cls_pw", "obj_pw", "label_smoothing")],
            dtype=np.float64,
        )
        tensors[f"{name}.loss"] = loss.detach().numpy().reshape(1)
        tensors[f"{name}.items"] = items.numpy()
        for i in range(NL):
            tensors[f"{name}.grad.{i}"] = p[i].grad.numpy()
        # PyTorch's own float32 error on the same inputs, in the metric the Rust test uses
        # (per element, relative, floored at 1e-3 of the level's largest gradient)
        torch.set_default_dtype(torch.float32)
        loss_fn32 = ComputeLoss(Model(hyp).float())
        loss_fn32.anchors = loss_fn32.anchors.float()
        p32 = [torch.tensor(x, requires_grad=True) for x in preds32]
        loss32, items32 = loss_fn32(p32, torch.tensor(targets, dtype=torch.float32))
        loss32.sum().backward()
        torch.set_default_dtype(torch.float64)
        errs = []
        for i in range(NL):
            g64, g32 = p[i].grad.numpy(), p32[i].grad.double().numpy()
            floor = 1e-3 * np.abs(g64).max()
            errs.append((np.abs(g32 - g64) / np.maximum(np.abs(g64), floor)).max())
        tensors[f"{name}.f32_err"] = np.array(errs)
        print(name, "torch float32 gradient error per level", errs)
        if name == "a":
            tcls, tbox, indices, anch = loss_fn.build_targets(p, t)
            for i in range(NL):
                b, a, gj, gi = indices[i]
                tensors[f"bt.{i}.idx"] = torch.stack((b, a, gj, gi, tcls[i]), 1).numpy().astype(np.int64)
                tensors[f"bt.{i}.tbox"] = tbox[i].numpy()
                tensors[f"bt.{i}.anch"] = anch[i].numpy()
        print(name, "loss", loss.item(), "items", items.tolist())
    save_file(tensors, out)
    torch.set_default_dtype(torch.float32)


def metrics_fixture(out):
    from utils.metrics import ap_per_class, process_batch, fitness, ConfusionMatrix

    rng = np.random.default_rng(11)
    nc, n_img = 5, 12
    iouv = torch.linspace(0.5, 0.95, 10)
    labels_all, dets_all, correct_all, stats = [], [], [], []
    cm = ConfusionMatrix(nc=nc)
    for si in range(n_img):
        nl = 0 if si == 3 else int(rng.integers(1, 9))
        xy = rng.uniform(20, 600, (nl, 2))
        wh = rng.uniform(10, 200, (nl, 2))
        lab = np.concatenate([rng.integers(0, nc, (nl, 1)), xy - wh / 2, xy + wh / 2], 1).astype(np.float32)
        rows = []
        for l in lab:  # noisy copies of labels, sometimes with a wrong class
            for _ in range(int(rng.integers(0, 3))):
                jit = rng.normal(0, 0.08, 4) * np.array([l[3] - l[1], l[4] - l[2]] * 2)
                cls = l[0] if rng.uniform() < 0.8 else rng.integers(0, nc)
                rows.append([*(l[1:] + jit), rng.uniform(0.05, 1.0), cls])
        for _ in range(0 if si == 5 else int(rng.integers(0, 5))):  # false positives
            c = rng.uniform(20, 600, 2)
            s = rng.uniform(10, 200, 2)
            rows.append([*(c - s / 2), *(c + s / 2), rng.uniform(0.0, 0.6), rng.integers(0, nc)])
        det = np.array(rows, dtype=np.float32).reshape(-1, 6)
        det = det[np.argsort(-det[:, 4], kind="stable")]  # NMS output order
        dt, lt = torch.tensor(det), torch.tensor(lab)
        if len(det) == 0:
            correct = torch.zeros(0, 10, dtype=torch.bool)
            if nl:
                stats.append((correct, torch.zeros(0), torch.zeros(0), lt[:, 0]))
                cm.process_batch(detections=None, labels=lt[:, 0])
        else:
            correct = process_batch(dt, lt, iouv) if nl else torch.zeros(len(det), 10, dtype=torch.bool)
            if nl:
                cm.process_batch(dt, lt)
            stats.append((correct, dt[:, 4], dt[:, 5], lt[:, 0]))
        labels_all.append(np.concatenate([np.full((nl, 1), si), lab], 1))
        dets_all.append(np.concatenate([np.full((len(det), 1), si), det], 1))
        correct_all.append(correct.numpy())
    stats = [torch.cat(x, 0).numpy() for x in zip(*stats)]
    tp, fp, p, r, f1, ap, ap_class = ap_per_class(*stats, names={})
    ap50, apm = ap[:, 0], ap.mean(1)
    mp, mr, map50, map_ = p.mean(), r.mean(), ap50.mean(), apm.mean()
    fit = fitness(np.array([[mp, mr, map50, map_]]))
    save_file(
        {
            "labels": np.concatenate(labels_all).astype(np.float32),  # image, class, x1, y1, x2, y2
            "dets": np.concatenate(dets_all).astype(np.float32),  # image, x1, y1, x2, y2, conf, class
            "correct": np.concatenate(correct_all).astype(np.uint8),
            "tp": tp.astype(np.float64),
            "fp": fp.astype(np.float64),
            "p": p,
            "r": r,
            "f1": f1,
            "ap": ap,
            "ap_class": ap_class.astype(np.int64),
            "summary": np.array([mp, mr, map50, map_, fit[0]]),
            "confusion": cm.matrix,
        },
        out,
    )
    print("metrics", mp, mr, map50, map_)


def nms_fixture(out):
    from utils.general import non_max_suppression

    rng = np.random.default_rng(5)
    bs, n, nc = 2, 600, 4
    xy = rng.uniform(0, 320, (bs, n, 2))
    # clusters of boxes around a few centres, so NMS has work to do
    centres = rng.uniform(20, 300, (bs, 12, 2))
    pick = rng.integers(0, 12, (bs, n))
    xy = np.take_along_axis(centres, pick[..., None], 1) + rng.normal(0, 6, (bs, n, 2))
    wh = rng.uniform(15, 80, (bs, n, 2))
    obj = rng.uniform(0, 1, (bs, n, 1)) ** 2
    cls = rng.uniform(0, 1, (bs, n, nc))
    pred = np.concatenate([xy, wh, obj, cls], 2).astype(np.float32)
    tensors = {"pred": pred}
    configs = {
        "default": dict(conf_thres=0.25, iou_thres=0.45),
        "val": dict(conf_thres=0.001, iou_thres=0.6, multi_label=True, max_det=300),
        "agnostic": dict(conf_thres=0.2, iou_thres=0.5, agnostic=True),
        "classes": dict(conf_thres=0.1, iou_thres=0.45, classes=[1, 3]),
        "maxdet": dict(conf_thres=0.05, iou_thres=0.3, max_det=7),
    }
    for name, kw in configs.items():
        outs = non_max_suppression(torch.tensor(pred), **kw)
        rows = [np.concatenate([np.full((len(o), 1), i), o.numpy()], 1) for i, o in enumerate(outs)]
        tensors[f"out.{name}"] = np.concatenate(rows).astype(np.float32)
        print("nms", name, [len(o) for o in outs])
    save_file(tensors, out)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True)
    ap.add_argument("--out-dir", default=".")
    a = ap.parse_args()
    out = os.path.abspath(a.out_dir)
    sys.path.insert(0, os.path.abspath(a.repo))
    os.chdir(os.path.abspath(a.repo))
    for d in ("crates/losses/tests/fixtures", "crates/train/tests/fixtures"):
        os.makedirs(os.path.join(out, d), exist_ok=True)
    loss_fixture(a.repo, os.path.join(out, "crates/losses/tests/fixtures/compute_loss.safetensors"))
    metrics_fixture(os.path.join(out, "crates/train/tests/fixtures/metrics.safetensors"))
    nms_fixture(os.path.join(out, "crates/train/tests/fixtures/nms.safetensors"))
