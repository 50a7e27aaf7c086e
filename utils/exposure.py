"""Exposure conventions shared by every script.

residual r = (gray(ideal) - gray(test)) / 255 with gray = 0.299 R + 0.587 G + 0.114 B,
r in [-1, 1]; r > 0 is under-exposed (needs light), r < 0 over-exposed.
"""

import math
import sys

import numpy as np

GRAY_WEIGHTS = (0.299, 0.587, 0.114)
DEFAULT_THRESHOLD = 0.1
# Clipped and crushed pixels: the one home of the three tests the code applies. They differ on purpose, by the
# input each reads; every number they give is as before.
# 1. Per channel, on 8-bit levels (0..255): a channel at or above CLIPPED_LEVEL is clipped (it says nothing of the
#    light it lost), a pixel with every channel at or below CRUSHED_LEVEL is crushed to black. metrics.physics_counts
#    rounds the photo to levels, then compares with these.
CLIPPED_LEVEL = 250
CRUSHED_LEVEL = 5
# 2. The same test on values not rounded (0..255 scale, any bit depth): correction_stops compares with the half-way
#    points, which picks the same pixels as rounding first (8-bit photos give whole levels), except a value exactly
#    at 5.5, crushed here and not in physics_counts (np.rint rounds 5.5 to 6). A clipped or crushed pixel is left out.
STOPS_CLIPPED_FROM = CLIPPED_LEVEL - 0.5  # 249.5: any channel at or above is clipped
STOPS_CRUSHED_UP_TO = CRUSHED_LEVEL + 0.5  # 5.5: every channel at or below is crushed
# 3. A rule base's "clipped" measure (pieanet/scoring/rules.py) judges a pixel's grey (gray(), on the 0..1 scale), not
#    its channels, with tighter bounds of its own: grey at or below GREY_CRUSHED_UP_TO is crushed, at or above
#    GREY_BLOWN_FROM blown (the rule files' tables are calibrated on these).
GREY_CRUSHED_UP_TO, GREY_BLOWN_FROM = 2 / 255, 253 / 255
STOPS_FLOOR = 0.5  # grey levels: the grey and the corrected grey are clamped to at least half a code value
STOPS_MAX_PIXELS = 1 << 21  # larger photos are read on a regular grid (correction_stops)
STATS_ROWS = 256  # residual_stats reads a map this many rows at a time (1 MP of a 4000 px wide map: 4 MB)


def gray(rgb):
    """Luma of an RGB array/tensor: numpy H x W x 3 (channels last) or torch B x 3 x H x W. (torch is not imported
    here: a tensor exists only once something else has imported it, so this module stays light for the command
    line's options.)"""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(rgb, torch.Tensor):
        w = torch.tensor(GRAY_WEIGHTS, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
        return (rgb * w).sum(dim=1, keepdim=True)
    rgb = np.asarray(rgb)
    return rgb[..., 0] * GRAY_WEIGHTS[0] + rgb[..., 1] * GRAY_WEIGHTS[1] + rgb[..., 2] * GRAY_WEIGHTS[2]


def bound_residual(residual, photo_grey, out=None):
    """``residual`` clamped into the definition's bounds for a photo whose grey (gray(), on the 0..1 scale) is
    ``photo_grey``: the ideal's grey lies in [0, 1], so r = ideal - grey lies in [-grey, 1 - grey]; a map beyond them
    asks for light a pixel cannot get (a clipped highlight told to brighten). Numpy arrays or torch tensors of one
    shape (or broadcastable); ``out``: write there (e.g. the residual itself). The one home of the bounds: every
    prediction path (models/inference.py predict_tensor), --raw-clipping's override and the training loss use it."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(residual, torch.Tensor):
        grey = photo_grey.to(residual.dtype)
        if out is None:
            out = residual.clone()
        elif out is not residual:
            out.copy_(residual)
        # the ideal's grey (r + grey) clamped into [0, 1], then r again: three passes in place, 4x faster on a 12 MP map
        # than clamp with tensor bounds (which makes -grey and 1 - grey); r moves by float rounding (~1e-7) at most
        return out.add_(grey).clamp_(0.0, 1.0).sub_(grey)
    grey = np.asarray(photo_grey, dtype=np.asarray(residual).dtype)
    return np.clip(residual, -grey, 1 - grey, out=out)


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


def correction_stops(photo, residual):
    """The exposure correction in stops (EV) that a residual map implies for its photo: the median, over the
    photo's unclipped pixels, of log2(lin(g + 255 r) / lin(g)), with g the pixel's grey (0..255), r its residual
    and lin the sRGB-to-linear curve (srgb_to_linear), i.e. by how many stops the pixel's linear light would change
    if its grey became the ideal's. Positive: the map asks for more light (under-exposed); negative: less.

    ``photo``: H x W x 3, float in [0, 1] or uint8; ``residual``: H x W, the same size (or N x 3 and N: a region's
    pixels, as the rule bases pass them).
    Unclipped: on the 0..255 scale, no channel >= 249.5 (8-bit 250 and above: a clipped channel says nothing of the
    light it lost) and not every channel <= 5.5 (8-bit 0..5: crushed to black, as little). Both greys are clamped
    into [0.5, 255] (half a code value up to white) before the curve: g + 255 r beyond white or black is the most the
    photo's range can show, and a grey of 0 (possible only with all channels 0, already left out) would divide by
    zero; the floor bounds one pixel's answer to about +/- 12.7 stops. NaN when no pixel is unclipped.
    A photo above STOPS_MAX_PIXELS is read on a regular grid, every k-th pixel of every k-th row with the smallest k
    that brings it under (a 12 MP photo: k = 3; a list of pixels: every k-th squared); its map is an upsampled
    working-size map, so the median moves by well under 0.01 stops, and a 12 MP photo costs 0.1 s instead of 1 s."""
    photo = np.asarray(photo)
    residual = np.asarray(residual)
    if photo.ndim not in (2, 3) or photo.shape[-1] != 3 or photo.shape[:-1] != residual.shape:
        raise ValueError(f"photo {photo.shape} and residual {residual.shape}: expected H x W x 3 and H x W")
    step = max(1, math.ceil(math.sqrt(residual.size / STOPS_MAX_PIXELS)))
    if residual.ndim == 2:
        photo, residual = photo[::step, ::step], residual[::step, ::step]
    else:
        photo, residual = photo[:: step * step], residual[:: step * step]
    stops = _pixel_stops(photo, residual)
    stops = stops[np.isfinite(stops)]
    return float(np.median(stops)) if stops.size else float("nan")


def _pixel_stops(photo, residual):
    """log2(lin(g + 255 r) / lin(g)) per pixel (float32, the shape of ``residual``), NaN at clipped or crushed pixels
    (correction_stops says which and why)."""
    scale = np.float32(1.0 if photo.dtype == np.uint8 else 255.0)
    channels = [photo[..., c].astype(np.float32) * scale for c in range(3)]
    brightest = np.maximum(np.maximum(channels[0], channels[1]), channels[2])
    keep = (brightest < STOPS_CLIPPED_FROM) & (brightest > STOPS_CRUSHED_UP_TO)
    stops = np.full(residual.shape, np.nan, np.float32)
    if not keep.any():
        return stops
    grey = sum(np.float32(w) * channel[keep] for w, channel in zip(GRAY_WEIGHTS, channels))
    target = grey + np.float32(255.0) * residual[keep].astype(np.float32)
    low, high = np.float32(STOPS_FLOOR), np.float32(255.0)
    ratio = srgb_to_linear(np.clip(target, low, high) / high) / srgb_to_linear(np.clip(grey, low, high) / high)
    stops[keep] = np.log2(ratio)
    return stops


def stops_map(photo, residual):
    """The correction in stops per pixel (``--map stops``): log2 of the linear-light ratio the map implies, the
    quantity whose median is correction_stops (the ``stops`` column), at every pixel of the photo (no grid); NaN at
    clipped or crushed pixels, whose light cannot be measured. A global exposure error is one flat value here, where
    the residual (grey levels) grows with the pixel's brightness. ``photo`` H x W x 3 (float in [0, 1] or uint8),
    ``residual`` H x W; returns H x W float32."""
    photo, residual = np.asarray(photo), np.asarray(residual)
    if photo.ndim != 3 or photo.shape[-1] != 3 or photo.shape[:-1] != residual.shape:
        raise ValueError(f"photo {photo.shape} and residual {residual.shape}: expected H x W x 3 and H x W")
    return _pixel_stops(photo, residual)


def float32_bounds(limit):
    """(below, above): the float32 numbers with, for every float32 r, r < below exactly when r < -limit and r > above
    exactly when r > limit, compared in float64 (``limit`` a float64): the smallest float32 at or above -limit and
    the largest at or below limit. A float32 map is then compared without converting each pixel to float64."""
    with np.errstate(over="ignore"):  # a limit beyond float32's range: the bounds are its largest numbers
        below, above = np.float32(-limit), np.float32(limit)
    if np.float64(below) < -limit:
        below = np.nextafter(below, np.float32(np.inf))
    if np.float64(above) > limit:
        above = np.nextafter(above, np.float32(-np.inf))
    return below, above


def residual_stats(residual, threshold=DEFAULT_THRESHOLD, photo=None, not_judged=None):
    """Per-image numbers of a residual map (numpy, any shape); with ``photo`` (H x W x 3, see correction_stops) also
    ``stops``, the correction in stops the map implies. ``not_judged``: a mask of pixels left out of every number
    (transparent ones, utils/alpha.py). Sums run in float64 without a float64 copy of the map (a 12 MP map would take
    100 MB and most of the time), STATS_ROWS rows at a time so each strip is read from the cache by every sum and
    count; the threshold is compared in float64 (a float32 map: against the float32 bounds that pick the same pixels,
    float32_bounds)."""
    r = np.asarray(residual)
    if not_judged is not None:
        r, photo = r[~not_judged], (None if photo is None else np.asarray(photo)[~not_judged])
    limit = np.float64(threshold)  # compared in float64, whatever the map's type
    below, above = float32_bounds(limit) if r.dtype == np.float32 else (-limit, limit)
    rows = r.reshape(len(r), -1) if r.ndim > 1 else r.reshape(1, -1)
    buffer = np.empty((min(STATS_ROWS, len(rows)), rows.shape[1]), dtype=r.dtype if r.dtype.kind == "f" else float)
    total = total_abs = 0.0
    over = under = 0
    for start in range(0, len(rows), STATS_ROWS):
        strip = rows[start : start + STATS_ROWS]
        total += float(strip.sum(dtype=np.float64))
        total_abs += float(np.abs(strip, out=buffer[: len(strip)]).sum(dtype=np.float64))
        over += np.count_nonzero(strip < below)
        under += np.count_nonzero(strip > above)
    mean_abs = total_abs / r.size
    stats = {
        "mean_residual": total / r.size,
        "mean_abs_residual": mean_abs,
        "pct_over": float(over * 100.0 / r.size),
        "pct_under": float(under * 100.0 / r.size),
        "score": score_of_mean_abs(mean_abs),
    }
    if photo is not None:
        stats["stops"] = correction_stops(photo, r)
    return stats
