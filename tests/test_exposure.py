import numpy as np
import pytest

from pieanet.utils import exposure
from pieanet.utils.exposure import correction_stops, holistic_score, linear_to_srgb, residual_stats, srgb_to_linear


def test_holistic_score_is_ten_times_one_minus_mean_abs_residual():
    r = np.array([[0.3, -0.3], [0.1, -0.5]])  # mean |r| = 0.3
    assert holistic_score(r) == pytest.approx(7.0)
    assert holistic_score(np.zeros((4, 4))) == 10.0 and holistic_score(np.ones((2, 2))) == 0.0


def test_residual_stats_hand_computed():
    r = np.array([0.2, -0.2, 0.05, -0.05])
    stats = residual_stats(r, threshold=0.1)
    assert stats == pytest.approx(
        {"mean_residual": 0.0, "mean_abs_residual": 0.125, "pct_over": 25.0, "pct_under": 25.0, "score": 8.75}
    )


def test_float32_bounds_pick_the_pixels_a_float64_comparison_picks():
    # every float32 within 50 steps of each threshold, and thresholds that are and are not float32 numbers
    for threshold in (0.1, 0.05, 0.25, 0.5, float(np.float32(0.1)), 1.0, 1e-30, 1e300):
        below, above = exposure.float32_bounds(np.float64(threshold))
        assert below.dtype == np.float32 and above.dtype == np.float32
        for centre in (threshold, -threshold):
            with np.errstate(over="ignore"):  # 1e300: the steps start at infinity
                steps = [np.float32(centre)]
                for direction in (np.inf, -np.inf):
                    for _ in range(50):
                        steps.append(np.nextafter(steps[-1], np.float32(direction)))
            r = np.array(steps, dtype=np.float32)
            np.testing.assert_array_equal(r < below, r.astype(np.float64) < -np.float64(threshold))
            np.testing.assert_array_equal(r > above, r.astype(np.float64) > np.float64(threshold))


def test_residual_stats_in_strips_are_the_whole_maps_numbers():
    # a map of several strips (STATS_ROWS rows each) and a last short one, as float32 and float64, against the
    # numbers of the whole map in one go
    rng = np.random.default_rng(4)
    for dtype in (np.float32, np.float64):
        r = np.clip(rng.normal(0.02, 0.2, (2 * exposure.STATS_ROWS + 37, 61)), -1, 1).astype(dtype)
        r[0, :5] = [0.1, -0.1, np.float32(0.1), -np.float32(0.1), 0.0]
        stats = residual_stats(r, threshold=0.1)
        as64 = r.astype(np.float64)
        assert stats["mean_residual"] == pytest.approx(as64.mean(), abs=1e-12)
        assert stats["mean_abs_residual"] == pytest.approx(np.abs(as64).mean(), abs=1e-12)
        assert stats["pct_over"] == 100.0 * np.count_nonzero(as64 < -0.1) / r.size
        assert stats["pct_under"] == 100.0 * np.count_nonzero(as64 > 0.1) / r.size


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


# correction_stops: log2 of linear-light ratios worked out by hand from the sRGB curve
# lin(v) = ((v + 0.055) / 1.055) ** 2.4 above 0.04045, v / 12.92 below:
# lin(64/255) = (0.290029)^2.4 = 0.051269, lin(128/255) = (0.527925)^2.4 = 0.215861  ->  log2(4.2104) = +2.0739
# lin(32/255) = (0.171085)^2.4 = 0.014444                                            ->  log2(0.28173) = -1.8276
# lin(200/255) = (0.795547)^2.4 = 0.577581, lin(1) = 1                               ->  log2(1.73136) = +0.7919
UP_64_TO_128, DOWN_64_TO_32, UP_200_TO_WHITE = 2.0739, -1.8276, 0.7919


def grey_photo(level, height=4, width=5):
    return np.full((height, width, 3), level, dtype=np.uint8)


def test_stops_of_a_uniform_grey_photo_hand_computed():
    under = residual_stats(np.full((4, 5), 64 / 255, np.float32), photo=grey_photo(64))["stops"]
    assert under == pytest.approx(UP_64_TO_128, abs=1e-3)  # under-exposed (r > 0): more light, positive
    assert correction_stops(grey_photo(64), np.full((4, 5), -32 / 255)) == pytest.approx(DOWN_64_TO_32, abs=1e-3)
    assert correction_stops(grey_photo(90), np.zeros((4, 5))) == 0.0
    # float photos in [0, 1] are read on the same 0..255 scale
    assert correction_stops(grey_photo(64) / np.float32(255), np.full((4, 5), 64 / 255)) == pytest.approx(
        UP_64_TO_128, abs=1e-3
    )


def test_stops_clamp_the_corrected_grey_to_white():
    # 200 + 100 is beyond white: the most the photo can show is 255
    assert correction_stops(grey_photo(200), np.full((4, 5), 100 / 255)) == pytest.approx(UP_200_TO_WHITE, abs=1e-3)


def test_stops_leave_clipped_and_crushed_pixels_out():
    photo = grey_photo(64, 3, 3)
    residual = np.full((3, 3), 64 / 255, np.float32)
    # 5 of the 9 pixels are clipped (one channel at 250 or 255) or crushed (every channel <= 5), each with a residual
    # that would pull the median their way; the 4 left (one of them (6, 0, 0): not every channel <= 5) decide it
    photo[0, :] = (255, 100, 100)
    photo[1, 0] = (10, 250, 10)
    photo[1, 1] = (5, 5, 5)
    photo[1, 2] = (6, 0, 0)
    residual[0, :] = residual[1, :2] = -0.5
    residual[1, 2] = (128 - 0.299 * 6) / 255  # gray(6, 0, 0) = 1.794 -> 128
    lin_small = 1.794 / 255 / 12.92  # below the curve's knee: linear
    expected_other = np.log2(0.215861 / lin_small)  # +9.8, an outlier above the other three
    assert expected_other > UP_64_TO_128
    assert correction_stops(photo, residual) == pytest.approx(UP_64_TO_128, abs=1e-3)  # median of 4: two at 2.0739
    photo[1, 2] = (5, 0, 0)  # now crushed too: the three grey pixels alone
    assert correction_stops(photo, residual) == pytest.approx(UP_64_TO_128, abs=1e-3)
    assert np.isnan(correction_stops(grey_photo(255), np.zeros((4, 5))))  # nothing unclipped: no answer
    assert np.isnan(correction_stops(grey_photo(3), np.zeros((4, 5))))


def test_stops_guard_a_black_target():
    # a residual that takes the grey below black is clamped at half a code value: log2(lin(0.5) / lin(10)),
    # both below the knee, so the ratio is 0.5 / 10
    assert correction_stops(grey_photo(10), np.full((4, 5), -0.5)) == pytest.approx(np.log2(0.05), abs=1e-4)


def test_stops_of_a_large_photo_read_on_a_grid_match_every_pixel(monkeypatch):
    # a smooth map (an upsampled working-size map, as the tools make) over a textured photo of 4.2 MP
    rng = np.random.default_rng(0)
    photo = rng.integers(20, 240, (1600, 2600, 3), dtype=np.uint8)
    coarse = rng.uniform(-0.2, 0.3, (25, 40)).astype(np.float32)
    residual = np.kron(coarse, np.ones((64, 65), np.float32))
    sampled = correction_stops(photo, residual)
    monkeypatch.setattr(exposure, "STOPS_MAX_PIXELS", photo.shape[0] * photo.shape[1])
    assert correction_stops(photo, residual) == pytest.approx(sampled, abs=0.01)


def test_physics_and_the_stops_leave_out_the_same_8_bit_levels():
    """One definition of clipped / crushed (utils/exposure.py): on every 8-bit grey level, correction_stops leaves a
    pixel out (nan for a photo of that level alone) exactly when metrics.physics_counts calls it clipped or crushed,
    and those are the levels >= 250 and <= 5."""
    from pieanet.utils.metrics import physics_counts

    left_out = []
    for level in range(256):
        photo = np.full((2, 2, 3), level, np.uint8).astype(np.float32) / np.float32(255)  # as load_image gives it
        clipped, _, crushed, _ = physics_counts(photo, np.zeros((2, 2), np.float32))
        assert np.isnan(correction_stops(photo, np.zeros((2, 2)))) == bool(clipped or crushed), level
        left_out += [level] if clipped or crushed else []
    assert left_out == [*range(0, 6), *range(250, 256)]
