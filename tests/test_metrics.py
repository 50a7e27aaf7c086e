import math

import numpy as np
import pytest
import torch
from pytorch_msssim import ssim as reference_ssim
from scipy import stats
from skimage.metrics import structural_similarity

from pieanet.utils import metrics
from pieanet.utils.metrics import METRICS, MetricAccumulator


def test_errors_hand_computed():
    pred = np.array([[0.0, 0.5], [-0.5, 1.0]])
    label = np.array([[0.1, 0.5], [-0.3, 0.6]])
    # errors 0.1, 0, 0.2, 0.4
    assert metrics.mae(pred, label) == pytest.approx(0.7 / 4)
    assert metrics.rmse(pred, label) == pytest.approx(math.sqrt(0.21 / 4))
    assert metrics.psnr(pred, label) == pytest.approx(10 * math.log10(4 / (0.21 / 4)))
    assert metrics.psnr(label, label) == metrics.PSNR_CAP


def test_psnr_of_a_uniform_error():
    # error 0.02 everywhere: MSE 4e-4, PSNR = 10 log10(4 / 4e-4) = 40 dB
    label = np.zeros((8, 8))
    assert metrics.psnr(label + 0.02, label) == pytest.approx(40.0)


def test_ssim_matches_pytorch_msssim_and_skimage():
    rng = np.random.default_rng(0)
    label = np.clip(rng.normal(0, 0.3, (48, 64)), -1, 1).astype(np.float32)
    pred = np.clip(label + rng.normal(0, 0.1, label.shape), -1, 1).astype(np.float32)
    ours = metrics.ssim(pred, label)
    theirs = reference_ssim(torch.from_numpy(pred)[None, None], torch.from_numpy(label)[None, None], data_range=1)
    assert ours == pytest.approx(theirs.item(), abs=1e-6)
    # an independent implementation with the same Gaussian window and constants, valid region only
    independent = structural_similarity(
        pred.astype(np.float64),
        label.astype(np.float64),
        data_range=1,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    assert ours == pytest.approx(independent, abs=2e-3)
    assert metrics.ssim(label, label) == pytest.approx(1.0, abs=1e-6)


def test_ssim_of_a_small_map():
    label = np.random.default_rng(2).uniform(-1, 1, (6, 7)).astype(np.float32)
    assert metrics.ssim(label, label) == pytest.approx(1.0, abs=1e-6)
    assert metrics.ssim(np.zeros_like(label), label) < 0.05


def test_ssim_cannot_tell_over_from_under():
    # SSIM multiplies a luminance and a structure term; flipping the map's sign makes both negative, so a map that
    # calls every over-exposed region under-exposed still scores high. The IoU / F1 and MAE columns catch it.
    label = np.random.default_rng(3).uniform(-1, 1, (32, 32)).astype(np.float32)
    assert metrics.ssim(-label, label) > 0.5
    assert metrics.mae(-label, label) > 0.5
    with pytest.raises(ValueError, match="at least 3 x 3"):
        metrics.ssim(label[:2], label[:2])


def test_segmentation_iou_and_f1_hand_computed():
    label = np.array([[-0.5, -0.5, 0.0, 0.5]] + [[0.0] * 4] * 2)
    pred = np.array([[-0.5, 0.0, -0.5, 0.5]] + [[0.0] * 4] * 2)
    acc = MetricAccumulator()
    acc.add(pred, label)
    out = acc.result()
    # over: label {0, 1}, pred {0, 2}: intersection 1, union 3; F1 = 2 * 1 / (2 + 2)
    assert out["iou_over"] == pytest.approx(1 / 3)
    assert out["f1_over"] == pytest.approx(0.5)
    # under: both {3}
    assert out["iou_under"] == pytest.approx(1.0) and out["f1_under"] == pytest.approx(1.0)


def test_threshold_is_strict():
    acc = MetricAccumulator()
    values = np.array([[0.1, -0.1, 0.11]] * 3)
    acc.add(values, values)
    out = acc.result()
    assert out["iou_under"] == 1.0  # only 0.11 counts
    assert math.isnan(out["iou_over"])  # nothing over-exposed anywhere: undefined, not 0 or 1


def test_correlations_match_scipy_on_holistic_scores():
    rng = np.random.default_rng(1)
    acc = MetricAccumulator()
    predicted, targets = [], []
    for i in range(6):
        pred = rng.uniform(-1, 1, (4, 4)) * (i + 1) / 6
        target = rng.uniform(0, 10)
        acc.add(pred, np.zeros((4, 4)), score=target)
        predicted.append(10 * (1 - np.abs(pred.astype(np.float32)).mean()))
        targets.append(target)
    out = acc.result()
    assert out["srcc"] == pytest.approx(stats.spearmanr(predicted, targets).statistic)
    assert out["plcc"] == pytest.approx(stats.pearsonr(predicted, targets).statistic)
    assert out["n_images"] == 6


def test_correlation_is_undefined_for_constants():
    assert math.isnan(metrics.correlation("srcc", [1, 1, 1], [1, 2, 3]))
    assert math.isnan(metrics.correlation("plcc", [1, 2], [1, 2]))


def test_per_image_averaging():
    acc = MetricAccumulator()
    acc.add(np.zeros((3, 3)), np.full((3, 3), 0.2))
    acc.add(np.zeros((4, 4)), np.zeros((4, 4)))
    assert acc.result()["mae"] == pytest.approx(0.1)


def test_every_metric_has_a_direction():
    acc = MetricAccumulator()
    acc.add(np.zeros((8, 8)), np.zeros((8, 8)), score=5.0)
    assert set(METRICS) <= set(acc.result())
    assert {better for better, _ in METRICS.values()} == {"lower", "higher"}
    with pytest.raises(ValueError, match="differ in shape"):
        acc.add(np.zeros((2, 2)), np.zeros((3, 3)))


def test_physics_counts_hand_computed():
    # nine pixels: (photo RGB, residual)
    pixels = [
        ((255, 0, 0), 0.2),  # clipped (one channel), said to need light: wrong
        ((250, 250, 250), -0.3),  # clipped, said to need less: right
        ((249, 200, 100), 0.5),  # not clipped (249 < 250)
        ((0, 0, 0), -0.1),  # crushed, said to need less light: wrong
        ((5, 5, 5), 0.5),  # crushed, needs light: right
        ((6, 0, 0), -0.5),
    ] + [((128, 128, 128), 0.0)] * 3  # not crushed (one channel above 5); neither
    image = np.array([p for p, _ in pixels], np.float32).reshape(3, 3, 3) / 255
    pred = np.array([r for _, r in pixels], np.float32).reshape(3, 3)
    assert metrics.physics_counts(image, pred) == (2, 1, 2, 1)
    assert metrics.physics_counts(image, np.where(pred > 0, 0.05, -0.05)) == (2, 0, 2, 0)  # at the margin: not wrong
    acc = MetricAccumulator()
    acc.add(pred, pred, image=image)
    acc.add(pred, pred)  # without the photo: no physics counts
    result = acc.result()
    assert result["clipped_needs_light"] == 50.0 and result["crushed_needs_dark"] == 50.0
    assert math.isnan(MetricAccumulator().result()["clipped_needs_light"])
