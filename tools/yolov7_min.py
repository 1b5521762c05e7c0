"""The part of WongKinYiu/yolov7's model code that yolov7-tiny.yaml needs, for building the parity
reference without a yolov7 checkout (used by tools/make_parity_fixtures.py).

Written for this project; it follows upstream's behaviour (models/yolo.py, models/common.py,
utils/torch_utils.py, utils/autoanchor.py) where the numbers or the state_dict names depend on it:

- parse_model: `from` may be an int or a list, negative indices count back from the current row;
  the channel list starts as [ch] and is replaced by the first row's output; rows in the conv
  family get c2 = ceil(c2 * width_multiple / 8) * 8 unless c2 equals the output count
  na * (nc + 5); Concat sums its inputs' channels; a detection head gets the list of its inputs'
  channels appended (an int anchor count becomes that many placeholder anchors per level); every
  other row keeps its input's channel count; n > 1 is scaled by depth_multiple and repeats the
  module in an nn.Sequential. String arguments are resolved like upstream's `eval`: `None`,
  `True`, `False`, numbers, `nc`, `anchors` and `nn.Name(literal, ...)` (a fresh module per row);
  anything else (e.g. 'nearest') stays a string.
- Conv: Conv2d(bias=False, padding k // 2 when None) -> BatchNorm2d -> act, where act=True is
  SiLU, a module is used as given, anything else is Identity.
- MP(k=2): max-pool k with stride k. SP(k=3, s=1): max-pool k, stride s, padding k // 2.
- IDetect: per level 1x1 Conv2d `m.i` applied to (x + `ia.i.implicit`), then multiplied by
  `im.i.implicit`; reshaped to (bs, na, ny, nx, no). Inference decode:
  y = sigmoid; xy = (y * 2 - 0.5 + grid) * stride; wh = (y * 2) ** 2 * anchor_grid, with the
  grid made in float32 and anchor_grid a buffer holding the YAML anchors in pixels.
- Model: stride from one training-mode forward of zeros at 256x256 (so running statistics move),
  anchor order checked against the stride order, `anchors` divided by the stride (grid units),
  detection biases initialised (obj += log(8 / (640 / s)^2), cls += log(0.6 / (nc - 0.99))),
  then every BatchNorm2d gets eps=1e-3 and momentum=0.03 and LeakyReLU/ReLU/ReLU6/Hardswish
  become in-place.
"""
import ast
import math
from copy import deepcopy

import torch
import torch.nn as nn


def _same_pad(k, p=None):
    if p is not None:
        return p
    return k // 2 if isinstance(k, int) else [v // 2 for v in k]


class Conv(nn.Module):
    def __init__(self, c1, c2, k=1, s=1, p=None, g=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, _same_pad(k, p), groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        if act is True:
            self.act = nn.SiLU()
        elif isinstance(act, nn.Module):
            self.act = act
        else:
            self.act = nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Concat(nn.Module):
    def __init__(self, dimension=1):
        super().__init__()
        self.d = dimension

    def forward(self, xs):
        return torch.cat(xs, self.d)


class MP(nn.Module):
    def __init__(self, k=2):
        super().__init__()
        self.m = nn.MaxPool2d(kernel_size=k, stride=k)

    def forward(self, x):
        return self.m(x)


class SP(nn.Module):
    def __init__(self, k=3, s=1):
        super().__init__()
        self.m = nn.MaxPool2d(kernel_size=k, stride=s, padding=k // 2)

    def forward(self, x):
        return self.m(x)


class ImplicitA(nn.Module):
    """Learned per-channel offset, added."""

    def __init__(self, channel, mean=0.0, std=0.02):
        super().__init__()
        self.channel = channel
        self.implicit = nn.Parameter(torch.zeros(1, channel, 1, 1))
        nn.init.normal_(self.implicit, mean=mean, std=std)

    def forward(self, x):
        return self.implicit + x


class ImplicitM(nn.Module):
    """Learned per-channel scale, multiplied."""

    def __init__(self, channel, mean=1.0, std=0.02):
        super().__init__()
        self.channel = channel
        self.implicit = nn.Parameter(torch.ones(1, channel, 1, 1))
        nn.init.normal_(self.implicit, mean=mean, std=std)

    def forward(self, x):
        return self.implicit * x


class IDetect(nn.Module):
    stride = None  # set by Model from a dummy forward

    def __init__(self, nc=80, anchors=(), ch=()):
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.grid = [torch.zeros(1) for _ in range(self.nl)]
        a = torch.tensor(anchors).float().view(self.nl, -1, 2)
        self.register_buffer("anchors", a)  # (nl, na, 2); grid units once Model has run
        self.register_buffer("anchor_grid", a.clone().view(self.nl, 1, -1, 1, 1, 2))  # pixels
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)
        self.ia = nn.ModuleList(ImplicitA(c) for c in ch)
        self.im = nn.ModuleList(ImplicitM(self.no * self.na) for _ in ch)

    @staticmethod
    def _grid(nx, ny):
        gy, gx = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing="ij")
        return torch.stack((gx, gy), 2).view(1, 1, ny, nx, 2).float()

    def forward(self, xs):
        z = []
        for i in range(self.nl):
            t = self.im[i](self.m[i](self.ia[i](xs[i])))
            bs, _, ny, nx = t.shape
            t = t.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            xs[i] = t
            if not self.training:
                if self.grid[i].shape[2:4] != t.shape[2:4]:
                    self.grid[i] = self._grid(nx, ny).to(t.device)
                y = t.sigmoid()
                y[..., 0:2] = (y[..., 0:2] * 2.0 - 0.5 + self.grid[i]) * self.stride[i]
                y[..., 2:4] = (y[..., 2:4] * 2) ** 2 * self.anchor_grid[i]
                z.append(y.view(bs, -1, self.no))
        return xs if self.training else (torch.cat(z, 1), xs)


MODULES = {"Conv": Conv, "Concat": Concat, "MP": MP, "SP": SP, "IDetect": IDetect}
CONV_LIKE = (nn.Conv2d, Conv)
HEADS = (IDetect,)


def module_names():
    """Module names this file can build (besides any `nn.Name`)."""
    return set(MODULES)


def _literal(node):
    return ast.literal_eval(node)


def _resolve(a, names):
    """A YAML argument as upstream's eval would see it (restricted to what model YAMLs use)."""
    if not isinstance(a, str):
        return a
    try:
        node = ast.parse(a.strip(), mode="eval").body
    except SyntaxError:
        return a
    if isinstance(node, ast.Name):
        if node.id in names:
            return names[node.id]
        return {"None": None, "True": True, "False": False}.get(node.id, a)
    if isinstance(node, ast.Constant):
        return node.value
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "nn"
            and hasattr(nn, node.func.attr)):
        args = [_literal(x) for x in node.args]
        kwargs = {k.arg: _literal(k.value) for k in node.keywords}
        return getattr(nn, node.func.attr)(*args, **kwargs)
    try:
        return _literal(node)
    except ValueError:
        return a


def _module(name, row):
    if name in MODULES:
        return MODULES[name]
    if name.startswith("nn.") and hasattr(nn, name[3:]):
        return getattr(nn, name[3:])
    raise ValueError(f"row {row}: module {name!r} is not implemented in tools/yolov7_min.py "
                     f"(it has {sorted(MODULES)} and nn.*); use --repo with a yolov7 checkout")


def parse_model(d, ch):
    anchors, nc = d["anchors"], d["nc"]
    gd, gw = d["depth_multiple"], d["width_multiple"]
    na = (len(anchors[0]) // 2) if isinstance(anchors, list) else anchors
    no = na * (nc + 5)
    names = {"nc": nc, "anchors": anchors}
    layers, save = [], []
    for i, (f, n, mname, args) in enumerate(d["backbone"] + d["head"]):
        m = _module(mname, i)
        args = [_resolve(a, names) for a in args]
        n = max(round(n * gd), 1) if n > 1 else n
        if m in CONV_LIKE:
            c1, c2 = ch[f], args[0]
            if c2 != no:
                c2 = math.ceil(c2 * gw / 8) * 8
            args = [c1, c2, *args[1:]]
        elif m is Concat:
            c2 = sum(ch[j] for j in f)
        elif m in HEADS:
            args.append([ch[j] for j in f])
            if isinstance(args[1], int):
                args[1] = [list(range(args[1] * 2))] * len(f)
        else:
            c2 = ch[f]
        mod = nn.Sequential(*(m(*args) for _ in range(n))) if n > 1 else m(*args)
        mod.i, mod.f, mod.type = i, f, mname
        mod.np = sum(p.numel() for p in mod.parameters())
        save.extend(j % i for j in ([f] if isinstance(f, int) else f) if j != -1)
        layers.append(mod)
        if i == 0:
            ch = []
        ch.append(c2)
    return nn.Sequential(*layers), sorted(save)


class Model(nn.Module):
    def __init__(self, cfg, ch=3, nc=None):
        super().__init__()
        if isinstance(cfg, dict):
            self.yaml = cfg
        else:
            import yaml
            with open(cfg) as fh:
                self.yaml = yaml.safe_load(fh)
        ch = self.yaml["ch"] = self.yaml.get("ch", ch)
        if nc and nc != self.yaml["nc"]:
            self.yaml["nc"] = nc
        self.model, self.save = parse_model(deepcopy(self.yaml), ch=[ch])
        self.names = [str(i) for i in range(self.yaml["nc"])]
        head = self.model[-1]
        if isinstance(head, HEADS):
            s = 256
            head.stride = torch.tensor([s / o.shape[-2] for o in self.forward(torch.zeros(1, ch, s, s))])
            area = head.anchor_grid.prod(-1).view(-1)
            if (area[-1] - area[0]).sign() != (head.stride[-1] - head.stride[0]).sign():
                head.anchors[:] = head.anchors.flip(0)
                head.anchor_grid[:] = head.anchor_grid.flip(0)
            head.anchors /= head.stride.view(-1, 1, 1)
            self.stride = head.stride
            self._initialize_biases()
        for mod in self.modules():
            t = type(mod)
            if t is nn.BatchNorm2d:
                mod.eps = 1e-3
                mod.momentum = 0.03
            elif t in (nn.Hardswish, nn.LeakyReLU, nn.ReLU, nn.ReLU6):
                mod.inplace = True

    def _initialize_biases(self):
        head = self.model[-1]
        for conv, s in zip(head.m, head.stride):
            b = conv.bias.view(head.na, -1)
            b.data[:, 4] += math.log(8 / (640 / s) ** 2)
            b.data[:, 5:] += math.log(0.6 / (head.nc - 0.99))
            conv.bias = nn.Parameter(b.view(-1), requires_grad=True)

    def forward(self, x):
        outs = []
        for mod in self.model:
            if mod.f != -1:
                x = outs[mod.f] if isinstance(mod.f, int) else [x if j == -1 else outs[j] for j in mod.f]
            x = mod(x)
            outs.append(x if mod.i in self.save else None)
        return x
