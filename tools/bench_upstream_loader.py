#!/usr/bin/env python3
"""Upstream (ultralytics/yolov5) training dataloader throughput, for comparison with
`cargo run --release -p yolo-data --example bench_loader`.

Runs LoadImagesAndLabels(augment=True, hyp.scratch-low: mosaic, random_perspective, HSV, flips)
at 640 px through a torch DataLoader with 2 workers and batch 16 over the same images, and prints
images/s. Usage:

    python tools/bench_upstream_loader.py --yolov5 /path/to/yolov5 --data /tmp/yolo-data-bench-synth640

The dataset folder is the one the Rust example generates (images/train, labels/train).
"""

import argparse
import sys
import time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--yolov5", default="/tmp/yolov5src", help="yolov5 work tree")
    ap.add_argument("--data", default="/tmp/yolo-data-bench-synth640", help="dataset root (images/train)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--float", action="store_true", help="also convert each batch to float/255 (as train.py does)")
    ap.add_argument("--cache", default="", help="'ram' or 'disk' to cache decoded images (upstream --cache)")
    a = ap.parse_args()

    sys.path.insert(0, a.yolov5)
    import torch
    import yaml
    from utils.dataloaders import LoadImagesAndLabels

    hyp = yaml.safe_load(open(Path(a.yolov5) / "data/hyps/hyp.scratch-low.yaml"))
    ds = LoadImagesAndLabels(
        str(Path(a.data) / "images/train"),
        img_size=a.imgsz,
        batch_size=a.batch,
        augment=True,
        hyp=hyp,
        rect=False,
        cache_images=a.cache or False,
        stride=32,
    )
    g = torch.Generator()
    g.manual_seed(0)
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=a.batch,
        shuffle=True,
        num_workers=a.workers,
        pin_memory=False,
        collate_fn=LoadImagesAndLabels.collate_fn,
        persistent_workers=True,
        generator=g,
    )
    for _ in loader:  # warm-up epoch (worker start, page cache)
        pass
    t = time.perf_counter()
    n = 0
    for _ in range(a.epochs):
        for im, _targets, _paths, _shapes in loader:
            if a.float:
                im = im.float() / 255
            n += im.shape[0]
    dt = time.perf_counter() - t
    print(
        f"upstream LoadImagesAndLabels: {n} images in {dt:.2f}s = {n / dt:.1f} images/s "
        f"(mosaic {a.imgsz}, batch {a.batch}, {a.workers} workers, "
        f"{'float' if a.float else 'uint8'} batches{', cache ' + a.cache if a.cache else ''})"
    )


if __name__ == "__main__":
    main()
