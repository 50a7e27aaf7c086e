import math

import numpy as np
import pytest
import torch

from pieanet.models.baselines import BASELINES, build_baseline
from pieanet.models.inference import predict_residual


def constant_image(value, height=40, width=56):
    return torch.full((2, 3, height, width), value)


def srgb_decode(v):
    return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4


@pytest.mark.parametrize("value", [0.1, 0.3, 0.5, 0.8])
def test_constant_image_hand_computed(value):
    x = constant_image(value)
    expected = {
        "zero": 0.0,
        # k * lin(c) = lin(0.5) exactly, so every pixel becomes mid-grey
        "global_midgray": 0.5 - value,
        "local_midgray": 0.5 - value,
        "mertens": math.copysign(1 - math.exp(-((value - 0.5) ** 2) / (2 * 0.2**2)), 0.5 - value)
        if value != 0.5
        else 0.0,
        "zero_dce": 0.6 - value,
    }
    for name, value_expected in expected.items():
        r = build_baseline(name)(x)
        assert r.shape == (2, 1, 40, 56), name
        np.testing.assert_allclose(r.numpy(), value_expected, atol=1e-5, err_msg=name)


def test_mertens_numbers():
    # g = 0.3: 1 - exp(-0.04 / 0.08) = 1 - e^-0.5 = 0.393469, under-exposed -> positive
    assert build_baseline("mertens")(constant_image(0.3))[0, 0, 0, 0].item() == pytest.approx(0.393469, abs=1e-5)
    assert build_baseline("mertens")(constant_image(0.7))[0, 0, 0, 0].item() == pytest.approx(-0.393469, abs=1e-5)


def test_global_midgray_is_one_gain_in_linear_light():
    # left half grey 0.2, right half 0.6: mean linear grey m, gain k = lin(0.5) / m, each side -> srgb(k lin(v))
    x = torch.zeros(1, 3, 8, 8)
    x[..., :4], x[..., 4:] = 0.2, 0.6
    m = (srgb_decode(0.2) + srgb_decode(0.6)) / 2
    k = srgb_decode(0.5) / m
    encode = lambda v: 12.92 * v if v <= 0.0031308 else 1.055 * v ** (1 / 2.4) - 0.055  # noqa: E731
    r = build_baseline("global_midgray")(x)[0, 0]
    assert r[0, 0].item() == pytest.approx(encode(k * srgb_decode(0.2)) - 0.2, abs=1e-5)
    assert r[0, 7].item() == pytest.approx(encode(min(1.0, k * srgb_decode(0.6))) - 0.6, abs=1e-5)


def test_zero_dce_patches_and_partial_edge_patch():
    x = torch.zeros(1, 3, 20, 20)
    x[..., 16:, 16:] = 0.4  # the 4 x 4 corner patch: its mean must be over its own 16 pixels
    r = build_baseline("zero_dce")(x)[0, 0]
    assert r[0, 0].item() == pytest.approx(0.6)
    assert r[19, 19].item() == pytest.approx(0.2, abs=1e-6)
    assert r[19, 0].item() == pytest.approx(0.6)


def test_local_midgray_follows_local_brightness():
    x = torch.zeros(1, 3, 64, 256)
    x[..., 128:] = 1.0
    r = build_baseline("local_midgray")(x)[0, 0]
    assert r[32, 0].item() == pytest.approx(0.5) and r[32, 255].item() == pytest.approx(-0.5)


def test_baselines_work_with_predict_residual():
    image = np.random.default_rng(0).random((37, 53, 3), dtype=np.float32)
    for name in BASELINES:
        r = predict_residual(build_baseline(name), image)
        assert r.shape == (37, 53) and np.all(np.abs(r) <= 1.0), name


def test_unknown_baseline_is_named():
    with pytest.raises(ValueError, match="unknown baseline 'foo'"):
        build_baseline("foo")


def test_baselines_are_models_registered_beside_pieanet():
    from pieanet.models import MODELS, build_model

    for name, cls in BASELINES.items():
        assert MODELS[name] is cls
        model = build_model({"name": name})
        assert model.config == {"name": name} and hasattr(model, "receptive_radius")


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_tiling_never_changes_a_baseline_map(name):
    # 0.0995 was the largest change when global baselines were silently tiled
    from pieanet import runtime

    image = np.random.default_rng(1).random((150, 230, 3), dtype=np.float32)
    image[:, :100] *= 0.3  # a dark left part: the global gain differs from any tile's
    model = build_baseline(name)
    whole = predict_residual(model, image)
    np.testing.assert_allclose(predict_residual(model, image, tile=64), whole, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(runtime.predict(model, [image], tile=64)[0], whole, atol=1e-6, err_msg=name)
