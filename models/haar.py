"""Orthonormal 2-D Haar wavelet transform and its exact inverse, for B x C x H x W tensors.

Matches ``pywt.dwt2(x, 'haar')`` (mode 'symmetric'): for a 2 x 2 block [[a, b], [c, d]]
    low = (a + b + c + d) / 2     (cA)
    H   = (a + b - c - d) / 2     (cH, horizontal detail: changes between rows)
    V   = (a - b + c - d) / 2     (cV, vertical detail: changes between columns)
    D   = (a - b - c + d) / 2     (cD, diagonal detail)
Odd sizes: the last row/column is repeated once (what PyWavelets' 'symmetric' mode does for a length-2 filter), so the
bands are ceil(H/2) x ceil(W/2); ``haar_idwt(..., size=(H, W))`` crops the reconstruction back, which makes the round
trip exact for every size.
"""

import torch
import torch.nn.functional as F


def haar_dwt(x):
    """x: B x C x H x W -> (low B x C x h x w, high B x 3C x h x w) with high = cat([H, V, D], dim=1)."""
    height, width = x.shape[-2:]
    if height % 2 or width % 2:
        x = F.pad(x, (0, width % 2, 0, height % 2), mode="replicate")
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    low = (a + b + c + d) / 2
    horizontal = (a + b - c - d) / 2
    vertical = (a - b + c - d) / 2
    diagonal = (a - b - c + d) / 2
    return low, torch.cat([horizontal, vertical, diagonal], dim=1)


def haar_idwt(low, high, size=None):
    """Inverse of ``haar_dwt``: (B x C x h x w, B x 3C x h x w) -> B x C x 2h x 2w, cropped to ``size`` if given."""
    horizontal, vertical, diagonal = high.chunk(3, dim=1)
    a = (low + horizontal + vertical + diagonal) / 2
    b = (low + horizontal - vertical - diagonal) / 2
    c = (low - horizontal + vertical - diagonal) / 2
    d = (low - horizontal - vertical + diagonal) / 2
    batch, channels, h, w = low.shape
    top = torch.stack([a, b], dim=-1).reshape(batch, channels, h, 2 * w)
    bottom = torch.stack([c, d], dim=-1).reshape(batch, channels, h, 2 * w)
    x = torch.stack([top, bottom], dim=-2).reshape(batch, channels, 2 * h, 2 * w)
    if size is not None:
        x = x[..., : size[0], : size[1]]
    return x
