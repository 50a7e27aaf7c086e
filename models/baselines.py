"""Classical exposure maps without learning: models registered beside P-IEANet (``build_model({"name": "mertens"})``),
usable wherever a model is (``predict_residual``, ``evaluate.py --baseline``).

Each declares its receptive field, so tiled inference never changes its map: ``receptive_radius`` is 0 for per-pixel
and patch maps (``zero_dce`` also sets ``tile_multiple`` to its patch, so tiles start on patch boundaries) and
``math.inf`` for maps that depend on the whole image (``global_midgray``; ``local_midgray``, whose window grows with the
image), which are always run in one pass. Each maps B x 3 x H x W RGB in [0, 1] to a B x 1 x H x W residual in [-1, 1]
with the IEA sign (> 0 under-exposed, needs light; < 0 over-exposed). g below is the grey image 0.299 R + 0.587 G +
0.114 B.

* ``zero``: every pixel ideal, r = 0 (what a method must beat).
* ``global_midgray``: one exposure (EV) offset for the whole image. The gain k = lin(0.5) / mean(lin(g)), in linear
  light (lin = the sRGB decoding curve), takes the image's mean linear grey to mid-grey 0.5 in sRGB; the residual is
  what that gain does to each pixel, r = srgb(min(1, k lin(g))) - g. EV = log2 k. A black image stays black (r = 0).
* ``local_midgray``: r = 0.5 - (mean of g over a square window of side 1/16 of the longer image side), the local
  deviation from mid-grey.
* ``mertens``: signed well-exposedness of Mertens et al. 2007: |r| = 1 - exp(-(g - 0.5)^2 / (2 * 0.2^2)),
  positive where g < 0.5.
* ``zero_dce``: the exposure-control term of Zero-DCE (Guo et al. 2020): r = 0.6 - mean of g over each 16 x 16 patch
  (Zero-DCE averages the RGB channels; grey is used here for the project's convention), held constant over the patch.
"""

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pieanet.models.filters import box_mean
from pieanet.utils.exposure import gray, linear_to_srgb, srgb_to_linear


class Baseline(nn.Module):
    native_size = None
    tile_multiple = 1
    receptive_radius: float = 0  # pixels of context each output pixel depends on; math.inf = the whole image

    def __init__(self):
        super().__init__()
        self.config = {"name": self.name}


class Zero(Baseline):
    name = "zero"

    def forward(self, x):
        return x.new_zeros(x.shape[0], 1, *x.shape[-2:])


class GlobalMidgray(Baseline):
    name = "global_midgray"
    receptive_radius = math.inf  # one gain from the whole image's mean

    def forward(self, x):
        g = gray(x).cpu().numpy()
        linear = srgb_to_linear(g)
        gain = srgb_to_linear(np.float32(0.5)) / np.maximum(linear.mean(axis=(1, 2, 3), keepdims=True), 1e-12)
        ideal = linear_to_srgb(np.minimum(1.0, gain * linear))
        return torch.from_numpy((ideal - g).astype(np.float32)).to(x.device).clamp_(-1, 1)


class LocalMidgray(Baseline):
    name = "local_midgray"
    window_fraction = 1 / 16
    receptive_radius = math.inf  # the window is a fraction of the whole image's size

    def forward(self, x):
        radius = max(1, round(max(x.shape[-2:]) * self.window_fraction / 2))
        return 0.5 - box_mean(gray(x), 2 * radius + 1)


class Mertens(Baseline):
    name = "mertens"
    sigma = 0.2

    def forward(self, x):
        g = gray(x)
        magnitude = 1 - torch.exp(-((g - 0.5) ** 2) / (2 * self.sigma**2))
        return torch.where(g < 0.5, magnitude, -magnitude)


class ZeroDCE(Baseline):
    name = "zero_dce"
    patch = 16
    target = 0.6
    tile_multiple = patch  # tiles must start on patch boundaries to keep the patches

    def forward(self, x):
        height, width = x.shape[-2:]
        means = F.avg_pool2d(gray(x), self.patch, ceil_mode=True)  # edge patches average the pixels that exist
        means = means.repeat_interleave(self.patch, dim=2).repeat_interleave(self.patch, dim=3)
        return self.target - means[..., :height, :width]


BASELINES = {cls.name: cls for cls in (Zero, GlobalMidgray, LocalMidgray, Mertens, ZeroDCE)}


def build_baseline(name):
    """The baseline called ``name``, in eval mode (the same as ``models.build_model({"name": name})``)."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; expected one of {', '.join(BASELINES)}")
    return BASELINES[name]().eval()
