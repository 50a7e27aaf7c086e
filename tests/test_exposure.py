import numpy as np
import pytest

from pieanet.utils.exposure import holistic_score, linear_to_srgb, residual_stats, srgb_to_linear


def test_holistic_score_is_ten_times_one_minus_mean_abs_residual():
    r = np.array([[0.3, -0.3], [0.1, -0.5]])  # mean |r| = 0.3
    assert holistic_score(r) == pytest.approx(7.0)
    assert holistic_score(np.zeros((4, 4))) == 10.0 and holistic_score(np.ones((2, 2))) == 0.0


def test_residual_stats_hand_computed():
    r = np.array([0.2, -0.2, 0.05, -0.05])
    stats = residual_stats(r, threshold=0.1)
    assert stats == pytest.approx({"mean_residual": 0.0, "mean_abs_residual": 0.125, "pct_over": 25.0,
                                   "pct_under": 25.0, "score": 8.75})


def test_residual_stats_tells_over_from_under():
    # asymmetric, so that swapping the two shares (or the sign convention) shows: r > 0 is under-exposed (needs
    # light), r < 0 over-exposed; |r| equal to the threshold counts as neither
    r = np.array([[0.5, 0.3, 0.2, 0.1], [-0.4, 0.0, 0.05, -0.1]])
    stats = residual_stats(r, threshold=0.1)
    assert stats["pct_under"] == pytest.approx(37.5)  # 0.5, 0.3, 0.2: 3 of 8
    assert stats["pct_over"] == pytest.approx(12.5)  # -0.4: 1 of 8
    assert stats["mean_residual"] == pytest.approx(0.65 / 8)
    assert stats["mean_abs_residual"] == pytest.approx(1.65 / 8)
    assert stats["score"] == pytest.approx(10 * (1 - 1.65 / 8))


def test_srgb_curves_invert_each_other():
    v = np.linspace(0, 1, 101)
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(v)), v, atol=1e-12)
    assert srgb_to_linear(np.float64(0.5)) == pytest.approx(0.214041, abs=1e-6)
