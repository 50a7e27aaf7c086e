"""Exposure conventions shared by every script.

residual r = (gray(ideal) - gray(test)) / 255 with gray = 0.299 R + 0.587 G + 0.114 B,
r in [-1, 1]; r > 0 is under-exposed (needs light), r < 0 over-exposed.
"""
import numpy as np
import torch

GRAY_WEIGHTS = (0.299, 0.587, 0.114)
DEFAULT_THRESHOLD = 0.1


def gray(rgb):
    """Luma of an RGB array/tensor: numpy H x W x 3 (channels last) or torch B x 3 x H x W."""
    if isinstance(rgb, torch.Tensor):
        w = torch.tensor(GRAY_WEIGHTS, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
        return (rgb * w).sum(dim=1, keepdim=True)
    rgb = np.asarray(rgb)
    return rgb[..., 0] * GRAY_WEIGHTS[0] + rgb[..., 1] * GRAY_WEIGHTS[1] + rgb[..., 2] * GRAY_WEIGHTS[2]


def srgb_to_linear(v):
    """The sRGB EOTF (IEC 61966-2-1) on values in [0, 1]."""
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(v):
    """The sRGB OETF (inverse of srgb_to_linear) on values in [0, 1]."""
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * np.power(np.maximum(v, 0.0031308), 1 / 2.4) - 0.055)


def holistic_score(residual):
    """The paper's untuned mapping from a residual map to a 0..10 score: 10 * (1 - mean|r|)."""
    return score_of_mean_abs(float(np.abs(residual).mean(dtype=np.float64)))


def score_of_mean_abs(mean_abs):
    return 10.0 * (1.0 - mean_abs)


def residual_stats(residual, threshold=DEFAULT_THRESHOLD):
    """Per-image numbers of a residual map (numpy, any shape). Sums run in float64 without a float64 copy of the
    map (a 12 MP map would take 100 MB and most of the time)."""
    r = np.asarray(residual)
    limit = np.float64(threshold)  # compared in float64, whatever the map's type
    mean_abs = float(np.abs(r).mean(dtype=np.float64))
    return {
        "mean_residual": float(r.mean(dtype=np.float64)),
        "mean_abs_residual": mean_abs,
        "pct_over": float(np.count_nonzero(r < -limit) * 100.0 / r.size),
        "pct_under": float(np.count_nonzero(r > limit) * 100.0 / r.size),
        "score": score_of_mean_abs(mean_abs),
    }
