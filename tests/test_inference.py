import numpy as np
import pytest
import torch
import torch.nn as nn

from pieanet.models import build_model
from pieanet.models.inference import guided_upsample, predict_batch, predict_residual


@pytest.fixture(scope="module")
def tiny_model(tiny_model_config):
    torch.manual_seed(0)
    return build_model(tiny_model_config).eval()


def random_image(height, width, seed=0):
    return np.random.default_rng(seed).random((height, width, 3), dtype=np.float32)


@pytest.mark.parametrize("shape", [(300, 420), (420, 72)])
def test_tiled_matches_untiled(tiny_model, shape):
    image = random_image(*shape)
    whole = predict_residual(tiny_model, image)
    # tiny config: tile multiple 32, measured receptive radius 47 px -> a 64 px margin is enough
    tiled = predict_residual(tiny_model, image, tile=256, overlap=48)
    assert whole.shape == tiled.shape == shape
    assert whole.dtype == np.float32
    # float rounding only (the brief's bound is 1e-3; a 32 px margin already gives 6e-4 on this random-init model,
    # whose outputs are small, so the test is tighter)
    assert np.abs(whole - tiled).max() <= 1e-5


def test_too_small_tile_is_refused(tiny_model):
    with pytest.raises(ValueError, match="too small"):
        predict_residual(tiny_model, random_image(100, 100), tile=64, overlap=48)


def test_working_resolution_returns_full_size_map(tiny_model):
    image = random_image(150, 260)
    residual = predict_residual(tiny_model, image, size=96)
    assert residual.shape == (150, 260)
    assert np.all(np.abs(residual) <= 1.0)


def test_guided_upsample_reproduces_a_linear_function_of_the_guide():
    rng = np.random.default_rng(1)
    guide_full = torch.from_numpy(rng.random((1, 1, 64, 80), dtype=np.float32))
    guide_low = torch.nn.functional.interpolate(guide_full, size=(16, 20), mode="area")
    residual_low = 0.5 - 0.8 * guide_low
    up = guided_upsample(residual_low, guide_low, guide_full, radius=2, eps=1e-8)
    np.testing.assert_allclose(up.numpy(), (0.5 - 0.8 * guide_full).numpy(), atol=1e-3)


def test_guided_upsample_keeps_a_constant_map():
    guide_full = torch.rand(1, 1, 40, 40)
    guide_low = torch.nn.functional.interpolate(guide_full, size=(10, 10), mode="area")
    up = guided_upsample(torch.full((1, 1, 10, 10), 0.25), guide_low, guide_full)
    np.testing.assert_allclose(up.numpy(), 0.25, atol=1e-5)


def test_guided_upsample_default_window_hand_computed():
    # A flat (zero) guide explains nothing: a = cov / (var + eps) = 0, so the output is b = the mean of the residual
    # over the window, averaged again over the window (both windows 3 x 3 at the default radius 1, borders averaged
    # over the pixels that exist). Guide and output at the same size: the bilinear step is the identity. For a unit
    # impulse at the centre of 5 x 5 each pass is separable: along one axis the first mean gives 0, 1/3, 1/3, 1/3, 0
    # and the second (1/3) / 2, (2/3) / 3, 1 / 3, ... = 1/6, 2/9, 1/3, 2/9, 1/6; the map is the outer product.
    residual = torch.zeros(1, 1, 5, 5)
    residual[..., 2, 2] = 1.0
    flat = torch.zeros(1, 1, 5, 5)
    axis = torch.tensor([1 / 6, 2 / 9, 1 / 3, 2 / 9, 1 / 6])
    expected = axis[:, None] * axis[None, :]  # centre 1/9, corners 1/36
    torch.testing.assert_close(guided_upsample(residual, flat, flat)[0, 0], expected, atol=1e-7, rtol=0)


def test_batch_matches_single_images(tiny_model):
    images = [random_image(64, 96, seed=s) for s in range(3)] + [random_image(50, 40, seed=3)]
    batch = predict_batch(tiny_model, images, batch_size=2)
    for image, residual in zip(images, batch):
        np.testing.assert_allclose(residual, predict_residual(tiny_model, image), atol=1e-5)


class ShapeRecorder(nn.Module):
    """A stand-in for the released wrapper: resizes internally, records what it was called with."""

    native_size = 256
    tile_multiple = 1

    def __init__(self):
        super().__init__()
        self.shapes = []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        return torch.zeros(x.shape[0], 1, *x.shape[-2:])


def test_native_size_models_are_called_on_the_whole_image():
    model = ShapeRecorder()
    residual = predict_residual(model, random_image(300, 500), size=128, tile=96)
    assert model.shapes == [(1, 3, 300, 500)]
    assert residual.shape == (300, 500)


def test_guided_upsampling_beats_bilinear_on_a_real_photo(shared_dir):
    from pieanet.models.baselines import build_baseline
    from pieanet.utils.image_io import load_image

    image = load_image(shared_dir / "official" / "test1_high.jpg")  # 945 x 587
    model = build_baseline("mertens")  # a per-pixel map: its full-resolution truth is known
    full = predict_residual(model, image)
    guided = predict_residual(model, image, size=128)
    low = torch.nn.functional.interpolate(
        torch.from_numpy(image).permute(2, 0, 1)[None],
        size=(80, 128),
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )
    bilinear = torch.nn.functional.interpolate(model(low), size=image.shape[:2], mode="bilinear", align_corners=False)[
        0, 0
    ].numpy()
    assert np.abs(guided - full).mean() < 0.6 * np.abs(bilinear - full).mean()


def test_default_margin_makes_tiles_equal_the_whole_map(tiny_model):
    # no overlap given: the model's own margin must hide every seam (a margin of 0 gives differences near 1e-2)
    image = random_image(300, 420, seed=3)
    whole = predict_residual(tiny_model, image)
    assert np.abs(predict_residual(tiny_model, image, tile=256) - whole).max() <= 1e-5
