"""Pixel-level and holistic metrics of predicted residual maps against labels (both H x W in [-1, 1]).

Conventions (every figure in the README follows them):
* mae, rmse, psnr, ssim are computed per image and averaged over images.
* psnr uses the residual's full range, 2: 10 log10(2^2 / MSE), capped at PSNR_CAP dB for a perfect map.
* ssim is pytorch-msssim's (11 x 11 Gaussian window, sigma 1.5, K = 0.01 / 0.03) applied to the residual maps as they
  are, in [-1, 1], with data_range=1 -- what the paper's code does, kept for comparability with its numbers. The
  stabilising constants (K * data_range)^2 are thus 4x smaller than data_range=2 would give, so nearly flat regions
  weigh small differences more. SSIM multiplies a luminance and a structure term, so on signed maps a sign-flipped
  prediction (over called under) makes both negative and still scores high: read it with IoU / MAE. Maps smaller
  than 11 px use the largest odd window that fits (at least 3 x 3 px).
* over- / under-exposed segmentations are r < -threshold / r > threshold (threshold 0.1); their IoU and F1 come from
  pixel counts summed over the whole dataset, so images without any such pixels do not make the mean undefined.
* srcc / plcc compare the predicted holistic score 10 (1 - mean|r|) with the dataset's score column.
* physics (needs the photo): a pixel with any channel clipped (>= 250 of 255) cannot need more light, one crushed in
  every channel (<= 5 of 255) cannot need less. clipped_needs_light is the share (percent) of clipped pixels the map
  says need more light (r > +0.05), crushed_needs_dark the share of crushed pixels it says need less (r < -0.05); pixel
  counts are summed over the dataset, like IoU. Not defined (nan) when no photo was given or no pixel is clipped /
  crushed.
* per photo (photo_numbers; bench/accuracy.py reports the worst photo and medians, as a pooled share hides one photo
  that fails): the share of pixels outside the definition's bounds [-grey, 1 - grey], the share of white pixels
  (grey >= 254 of 255) told to brighten (r > +0.05; 0 by construction once the map is bounded), and the correction in
  stops of the map and of the label (utils.exposure.correction_stops), whose verdict is under above +1/3 stop, over
  below -1/3, else ok.
"""

import math
import warnings

import numpy as np
import torch
from pytorch_msssim import ssim as msssim_ssim
from scipy import stats

from pieanet.utils.exposure import (
    CLIPPED_LEVEL,
    CRUSHED_LEVEL,
    DEFAULT_THRESHOLD,
    correction_stops,
    gray,
    holistic_score,
)

PSNR_CAP = 100.0
# physics: a clipped pixel (a channel >= CLIPPED_LEVEL) cannot need more light, a crushed one (every channel <=
# CRUSHED_LEVEL) cannot need less (levels of 255; the definition's home is utils/exposure.py)
PHYSICS_MARGIN = 0.05  # |r| beyond which a clipped / crushed pixel counts as judged the wrong way
SSIM_DATA_RANGE = 1.0
SSIM_CONVENTION = "pytorch-msssim SSIM on residual maps in [-1, 1] with data_range=1 (as the paper's code)"

# name: (better, what it measures)
METRICS = {
    "mae": ("lower", "mean absolute error of the residual map"),
    "rmse": ("lower", "root mean squared error of the residual map"),
    "psnr": ("higher", "PSNR in dB, data range 2"),
    "ssim": ("higher", SSIM_CONVENTION),
    "iou_over": ("higher", "IoU of the over-exposed pixels (r < -0.1)"),
    "iou_under": ("higher", "IoU of the under-exposed pixels (r > 0.1)"),
    "f1_over": ("higher", "F1 (Dice) of the over-exposed pixels"),
    "f1_under": ("higher", "F1 (Dice) of the under-exposed pixels"),
    "srcc": ("higher", "Spearman correlation of 10 (1 - mean|r|) with the score column"),
    "plcc": ("higher", "Pearson correlation of 10 (1 - mean|r|) with the score column"),
    "clipped_needs_light": ("lower", f"percent of clipped pixels (a channel >= {CLIPPED_LEVEL}) with r > +0.05"),
    "crushed_needs_dark": ("lower", f"percent of crushed pixels (every channel <= {CRUSHED_LEVEL}) with r < -0.05"),
}


def mae(pred, label):
    return float(np.abs(np.asarray(pred, np.float64) - label).mean())


def mse(pred, label):
    return float(np.square(np.asarray(pred, np.float64) - label).mean())


def rmse(pred, label):
    return math.sqrt(mse(pred, label))


def psnr(pred, label):
    error = mse(pred, label)
    return PSNR_CAP if error == 0 else min(PSNR_CAP, 10.0 * math.log10(4.0 / error))


def ssim(pred, label):
    """SSIM of two H x W residual maps (see the module notes for the convention)."""
    side = min(np.shape(pred))
    if side < 3:
        raise ValueError(f"SSIM needs maps of at least 3 x 3 pixels, got {np.shape(pred)}")
    window = min(11, side - 1 + side % 2)  # odd, at most the map's side
    to_tensor = lambda a: torch.as_tensor(np.asarray(a, np.float32))[None, None]  # noqa: E731
    return float(
        msssim_ssim(to_tensor(pred), to_tensor(label), data_range=SSIM_DATA_RANGE, win_size=window, size_average=True)
    )


def segmentation_counts(pred_mask, label_mask):
    """(intersection, predicted, labelled) pixel counts."""
    return (
        int(np.count_nonzero(pred_mask & label_mask)),
        int(np.count_nonzero(pred_mask)),
        int(np.count_nonzero(label_mask)),
    )


def iou_from_counts(intersection, predicted, labelled):
    union = predicted + labelled - intersection
    return intersection / union if union else float("nan")


def f1_from_counts(intersection, predicted, labelled):
    total = predicted + labelled
    return 2 * intersection / total if total else float("nan")


def correlation(kind, predicted, target):
    """Spearman ("srcc") or Pearson ("plcc") correlation; NaN when undefined (fewer than 3 values or a constant)."""
    predicted, target = np.asarray(predicted, np.float64), np.asarray(target, np.float64)
    if len(predicted) < 3 or np.ptp(predicted) == 0 or np.ptp(target) == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = stats.spearmanr(predicted, target) if kind == "srcc" else stats.pearsonr(predicted, target)
    return float(result.statistic)


def physics_counts(image, pred, margin=PHYSICS_MARGIN):
    """(clipped pixels, those with r > margin, crushed pixels, those with r < -margin) of an RGB photo (H x W x 3 in
    [0, 1]) and its residual map (H x W, the same pixels)."""
    levels = np.rint(np.asarray(image, np.float32) * 255.0)
    pred = np.asarray(pred)
    if levels.shape[:2] != pred.shape:
        raise ValueError(f"photo {levels.shape[:2]} and residual map {pred.shape} differ in shape")
    clipped = (levels >= CLIPPED_LEVEL).any(axis=-1)
    crushed = (levels <= CRUSHED_LEVEL).all(axis=-1)
    limit = np.float64(margin)
    return (
        int(np.count_nonzero(clipped)),
        int(np.count_nonzero(clipped & (pred > limit))),
        int(np.count_nonzero(crushed)),
        int(np.count_nonzero(crushed & (pred < -limit))),
    )


VERDICT_STOPS = 1 / 3  # a photo's verdict: under above +1/3 stop, over below -1/3 stop, else ok
WHITE_GREY = 254  # of 255: a pixel this bright cannot get 0.05 more light


def verdict(stops):
    """'under', 'ok' or 'over' of a correction in stops (nan: None)."""
    if not math.isfinite(stops):
        return None
    return "under" if stops > VERDICT_STOPS else "over" if stops < -VERDICT_STOPS else "ok"


def photo_numbers(image, pred, label=None, margin=PHYSICS_MARGIN):
    """One photo's numbers that are reported per photo (the module docstring): {out_of_bounds_pct,
    white_brightened_pct (nan: no white pixel), stops, label_stops (with ``label``, the photo's size)}."""
    image, pred = np.asarray(image, np.float32), np.asarray(pred, np.float32)
    grey = gray(image.astype(np.float64))
    r = pred.astype(np.float64)
    outside = np.count_nonzero((r < -grey - 1e-6) | (r > 1 - grey + 1e-6))  # 1e-6: float32 rounding of the grey
    white = grey * 255 >= WHITE_GREY
    found = {
        "out_of_bounds_pct": 100.0 * outside / r.size,
        "white_brightened_pct": (
            100.0 * np.count_nonzero(white & (r > margin)) / np.count_nonzero(white) if white.any() else float("nan")
        ),
        "stops": correction_stops(image, pred),
    }
    if label is not None:
        found["label_stops"] = correction_stops(image, np.asarray(label, np.float32))
    return found


def measure(pred, label, threshold=DEFAULT_THRESHOLD, score=None, image=None):
    """One image's share of every metric, a small picklable dict (processes of a distributed evaluation send these
    to rank 0): the per-image metrics, the over / under pixel counts, the (predicted, target) score pair and, when
    the photo is given (H x W x 3, the map's pixels), its physics_counts."""
    pred, label = np.asarray(pred, np.float32), np.asarray(label, np.float32)
    if pred.shape != label.shape:
        raise ValueError(f"prediction {pred.shape} and label {label.shape} differ in shape")
    found = {name: fn(pred, label) for name, fn in (("mae", mae), ("rmse", rmse), ("psnr", psnr), ("ssim", ssim))}
    found["over"] = segmentation_counts(pred < -threshold, label < -threshold)
    found["under"] = segmentation_counts(pred > threshold, label > threshold)
    found["scores"] = (holistic_score(pred), float(score)) if score is not None and math.isfinite(score) else None
    found["physics"] = physics_counts(image, pred) if image is not None else None
    return found


class MetricAccumulator:
    """Collects per-image results; ``result()`` gives every metric in METRICS plus n_images."""

    def __init__(self, threshold=DEFAULT_THRESHOLD):
        self.threshold = threshold
        self.per_image = {"mae": [], "rmse": [], "psnr": [], "ssim": []}
        self.counts = {"over": np.zeros(3, np.int64), "under": np.zeros(3, np.int64), "physics": np.zeros(4, np.int64)}
        self.predicted_scores, self.target_scores = [], []

    def add(self, pred, label, score=None, image=None):
        self.add_measured(measure(pred, label, self.threshold, score, image))

    def add_measured(self, found):
        """Add one image's ``measure`` result (taken with this accumulator's threshold)."""
        for name, values in self.per_image.items():
            values.append(found[name])
        self.counts["over"] += found["over"]
        self.counts["under"] += found["under"]
        if found.get("physics") is not None:
            self.counts["physics"] += found["physics"]
        if found["scores"] is not None:
            self.predicted_scores.append(found["scores"][0])
            self.target_scores.append(found["scores"][1])

    def __len__(self):
        return len(self.per_image["mae"])

    def result(self):
        out = {"n_images": len(self)}
        for name, values in self.per_image.items():
            out[name] = float(np.mean(values)) if values else float("nan")
        for kind in ("over", "under"):
            out[f"iou_{kind}"] = iou_from_counts(*self.counts[kind])
            out[f"f1_{kind}"] = f1_from_counts(*self.counts[kind])
        for kind in ("srcc", "plcc"):
            out[kind] = correlation(kind, self.predicted_scores, self.target_scores)
        clipped, clipped_wrong, crushed, crushed_wrong = (int(v) for v in self.counts["physics"])
        out["clipped_needs_light"] = 100.0 * clipped_wrong / clipped if clipped else float("nan")
        out["crushed_needs_dark"] = 100.0 * crushed_wrong / crushed if crushed else float("nan")
        return out
