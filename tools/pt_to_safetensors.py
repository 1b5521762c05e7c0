#!/usr/bin/env python3
"""Convert an upstream YOLOv5/YOLOv7 checkpoint (.pt) to a yolo-forge weights file.

Usage (inside a checkout of the matching upstream repository, with torch, pyyaml, safetensors):
  python3 /path/to/yolo-forge/tools/pt_to_safetensors.py yolov5s.pt yolov5s.safetensors

The checkpoint's model (its EMA if present) is stored in float32 under its state_dict names,
with the model YAML (`yolo_forge.yaml`) and class names (`yolo_forge.names`) in the metadata,
so `yolo-forge detect --weights yolov5s.safetensors` needs nothing else. Integer counters
(`num_batches_tracked`) and cached grids are dropped; the loader ignores them anyway.
"""
import json, sys


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
    import torch, yaml
    from safetensors.torch import save_file
    sys.path.insert(0, ".")  # the upstream checkout: unpickling needs its `models` package
    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    model = (ckpt.get("ema") or ckpt["model"]) if isinstance(ckpt, dict) else ckpt
    model = model.float()
    cfg = getattr(model, "yaml", None)
    if not isinstance(cfg, dict):
        sys.exit(f"{src}: the model carries no YAML dict (model.yaml); cannot store its architecture")
    names = getattr(model, "names", None) or [str(i) for i in range(cfg.get("nc", 80))]
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    tensors = {
        k: v.detach().float().contiguous()
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked") and not k.endswith("anchor_grid") and v.is_floating_point()
    }
    meta = {"format": "pt", "yolo_forge.yaml": yaml.safe_dump(cfg, sort_keys=False), "yolo_forge.names": json.dumps(list(names))}
    save_file(tensors, dst, metadata=meta)
    print(f"{dst}: {len(tensors)} tensors, {sum(t.numel() for t in tensors.values()):,} values, {len(names)} classes")


if __name__ == "__main__":
    main()
