#!/usr/bin/env python3
"""Parity fixture for yolo-losses `ComputeLossOta` (YOLOv7 `ComputeLossOTA`).

Usage (from a checkout of WongKinYiu/yolov7 with torch, numpy and safetensors):
  python3 tools/make_ota_fixtures.py --repo /path/to/yolov7 --out-dir .

Writes crates/losses/tests/fixtures/compute_loss_ota.safetensors; with --aux, the same for
`ComputeLossAuxOTA` (IAuxDetect models: lead levels then auxiliary levels, the auxiliary head
assigned over find_5_positive candidates, top-20 IoU sums) into compute_loss_aux_ota.safetensors
(assignments `asg.<level>.idx` for the lead head and `asg_aux.<level>.idx` for the auxiliary).

As tools/make_loss_fixtures.py: upstream runs in float64 (default dtype float64) on predictions
stored as float32; the Rust test runs float32 on the same values. PyTorch's own float32
gradient error per level is recorded as `<case>.f32_err`.

The SimOTA assignment is discrete (anchor ratio test, neighbour cells, dynamic k = int(sum of
the top-10 IoUs), top-k of the cost, argmin of the cost over ground truths for shared
predictions). The random draw is rejected until every one of those decisions has a margin of
at least 1e-4 in the float64 reference, so float32/float64 rounding cannot flip any of them;
the float32 upstream run must also give the same assignment, every level must get matches,
and at least one candidate must be taken by several ground truths (the cost argmin path). The assignment itself is stored
(`asg.<level>.idx`: image, anchor, gj, gi, class) so the Rust test checks it exactly.
"""
import argparse, os, sys
import numpy as np
import torch
from torch import nn
from safetensors.numpy import save_file as _save_file


def save_file(tensors, path):
    _save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, path)


NC, NA, NL, IMGSZ, BS = 3, 3, 3, 128, 2
STRIDES = [8.0, 16.0, 32.0]
# yolov7.yaml / yolov7-tiny.yaml default anchors (pixels)
ANCHORS_PX = [[12, 16, 19, 36, 40, 28], [36, 75, 76, 55, 72, 146], [142, 110, 192, 243, 459, 401]]
MARGIN = 1e-4


def borderline(t, anchors):
    """True when a target sits within 1e-3 of a find_3/5_positive threshold at any level."""
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
    for b, n in enumerate([5, 3]):
        while n:
            t = np.array([b, rng.integers(NC), *rng.uniform(0.05, 0.95, 2), *rng.uniform(0.05, 0.6, 2)])
            if borderline(t, anchors):
                continue
            rows.append(t)
            n -= 1
    return np.stack(rows).astype(np.float32).astype(np.float64)


class Margins:
    """Wraps torch.topk / torch.min during build_targets to record the decision margins."""

    def __init__(self):
        self.worst = np.inf
        self.where = ""
        self.shared = 0  # images where some candidate was taken by several gts

    def note(self, m, where):
        if m < self.worst:
            self.worst, self.where = m, where

    def __enter__(self):
        self._topk, self._min = torch.topk, torch.min
        topk, tmin, me = self._topk, self._min, self

        def topk_w(x, k, *a, largest=True, **kw):
            out = topk(x, k, *a, largest=largest, **kw)
            xs = x.detach().double()
            if largest:  # IoU top-10 of each gt: dynamic k = int(sum)
                s = out[0].detach().double().sum(-1).reshape(-1)
                for v in s.tolist():
                    if v >= 1.0:  # below 1 the clamp(min=1) decides
                        me.note(abs(v - round(v)), "dynamic k sum")
            else:  # the k smallest costs of one gt
                v = torch.sort(xs.reshape(-1)).values
                if k < v.numel():
                    me.note((v[k] - v[k - 1]).item(), "cost top-k boundary")
            return out

        def min_w(x, *a, **kw):
            out = tmin(x, *a, **kw)
            if "dim" in kw or (a and isinstance(a[0], int)):
                me.shared += 1
                v = torch.sort(x.detach().double(), dim=0).values
                if v.shape[0] > 1:
                    me.note((v[1] - v[0]).min().item(), "shared prediction argmin")
            return out

        torch.topk, torch.min = topk_w, min_w
        return self

    def __exit__(self, *exc):
        torch.topk, torch.min = self._topk, self._min


def main(out, aux):
    from utils.loss import ComputeLossOTA, ComputeLossAuxOTA

    LossCls = ComputeLossAuxOTA if aux else ComputeLossOTA
    nlp = 2 * NL if aux else NL  # prediction levels

    torch.set_default_dtype(torch.float64)
    anchors = torch.tensor(ANCHORS_PX, dtype=torch.float64).view(NL, NA, 2) / torch.tensor(STRIDES).view(-1, 1, 1)

    class Det(nn.Module):
        def __init__(self, dtype):
            super().__init__()
            self.na, self.nc, self.nl = NA, NC, NL
            self.register_buffer("anchors", anchors.clone().to(dtype))
            self.stride = torch.tensor(STRIDES, dtype=dtype)
            self.w = nn.Parameter(torch.zeros(1, dtype=dtype))

    class Model(nn.Module):
        def __init__(self, hyp, dtype=torch.float64):
            super().__init__()
            self.model = nn.ModuleList([Det(dtype)])
            self.hyp = hyp
            self.gr = 1.0

    # train.py scaling for nl=3, nc=3, imgsz=128 of data/hyp.scratch.p5.yaml
    base = dict(box=0.05, cls=0.3, obj=0.7, anchor_t=4.0, fl_gamma=0.0, cls_pw=1.0, obj_pw=1.0, label_smoothing=0.0)
    cases = {
        "a": base,
        "b": dict(base, fl_gamma=1.5, label_smoothing=0.1, cls_pw=2.0, obj_pw=0.7),
    }
    for hyp in cases.values():
        hyp["box"] *= 3 / NL
        hyp["cls"] *= NC / 80 * 3 / NL
        hyp["obj"] *= (IMGSZ / 640) ** 2 * 3 / NL
    imgs = torch.zeros(BS, 3, IMGSZ, IMGSZ)

    def assignment(loss_fn, p, t):
        fns = [loss_fn.build_targets] + ([loss_fn.build_targets2] if aux else [])
        out = []
        for fn in fns:
            bs_, as_, gjs, gis, tg, _ = fn(p[:NL], t, imgs)
            out += [torch.stack((bs_[i], as_[i], gjs[i], gis[i], tg[i][:, 1].long()), 1).numpy().astype(np.int64)
                    for i in range(NL)]
        return out

    for seed in range(1000):
        rng = np.random.default_rng(seed)
        targets = make_targets(rng, anchors.numpy())
        preds32 = [rng.normal(0.0, 1.5, (BS, NA, int(IMGSZ / s), int(IMGSZ / s), NC + 5)).astype(np.float32)
                   for s in STRIDES * (nlp // NL)]
        loss_fn = LossCls(Model(cases["a"]))
        p = [torch.tensor(x, dtype=torch.float64) for x in preds32]
        with Margins() as m:
            asg = assignment(loss_fn, p, torch.tensor(targets))
        torch.set_default_dtype(torch.float32)
        loss32 = LossCls(Model(cases["a"], torch.float32))
        asg32 = assignment(loss32, [torch.tensor(x) for x in preds32], torch.tensor(targets, dtype=torch.float32))
        torch.set_default_dtype(torch.float64)
        same = all(np.array_equal(x, y) for x, y in zip(asg, asg32))
        counts = [len(x) for x in asg]
        print(f"seed {seed}: margin {m.worst:.2e} ({m.where}), f32 same {same}, per level {counts}, "
              f"shared-candidate images {m.shared}")
        if m.worst >= MARGIN and same and min(counts) > 0 and m.shared > 0:
            break
    else:
        raise SystemExit("no seed with safe margins")

    tensors = {
        "targets": targets.astype(np.float32),
        "anchors": anchors.numpy().astype(np.float32),
        "strides": np.array(STRIDES, dtype=np.float32),
        "img_size": np.array([IMGSZ, IMGSZ], dtype=np.int64),
        "margin": np.array([m.worst]),
    }
    for i in range(nlp):
        tensors[f"pred.{i}"] = preds32[i]
    for i in range(NL):
        tensors[f"asg.{i}.idx"] = asg[i]
        if aux:
            tensors[f"asg_aux.{i}.idx"] = asg[NL + i]

    for name, hyp in cases.items():
        loss_fn = LossCls(Model(hyp))
        p = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in preds32]
        loss, items = loss_fn(p, torch.tensor(targets), imgs)
        loss.sum().backward()
        tensors[f"{name}.hyp"] = np.array(
            [hyp[k] for k in ("box", "cls", "obj", "anchor_t", "fl_gamma", "cls_pw", "obj_pw", "label_smoothing")],
            dtype=np.float64,
        )
        tensors[f"{name}.loss"] = loss.detach().numpy().reshape(1)
        tensors[f"{name}.items"] = items.numpy()
        for i in range(nlp):
            tensors[f"{name}.grad.{i}"] = p[i].grad.numpy()
        torch.set_default_dtype(torch.float32)
        loss_fn32 = LossCls(Model(hyp, torch.float32))
        p32 = [torch.tensor(x, requires_grad=True) for x in preds32]
        loss32, _ = loss_fn32(p32, torch.tensor(targets, dtype=torch.float32), imgs.float())
        loss32.sum().backward()
        torch.set_default_dtype(torch.float64)
        errs = []
        for i in range(nlp):
            g64, g32 = p[i].grad.numpy(), p32[i].grad.double().numpy()
            floor = 1e-3 * np.abs(g64).max()
            errs.append((np.abs(g32 - g64) / np.maximum(np.abs(g64), floor)).max())
        tensors[f"{name}.f32_err"] = np.array(errs)
        print(name, "loss", loss.item(), "items", items.tolist(), "torch f32 grad error", errs)
    save_file(tensors, out)
    torch.set_default_dtype(torch.float32)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True)
    ap.add_argument("--out-dir", default=".")
    ap.add_argument("--aux", action="store_true", help="ComputeLossAuxOTA instead of ComputeLossOTA")
    a = ap.parse_args()
    out = os.path.abspath(a.out_dir)
    sys.path.insert(0, os.path.abspath(a.repo))
    os.chdir(os.path.abspath(a.repo))
    os.makedirs(os.path.join(out, "crates/losses/tests/fixtures"), exist_ok=True)
    name = "compute_loss_aux_ota" if a.aux else "compute_loss_ota"
    main(os.path.join(out, f"crates/losses/tests/fixtures/{name}.safetensors"), a.aux)
