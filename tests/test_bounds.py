"""The definition's bounds hold by construction: a pixel's ideal grey lies in [0, 255], so every map the tools hand
back has r in [-grey / 255, (255 - grey) / 255] of the photo it judged (utils.exposure.bound_residual, applied last in
models.inference.predict_tensor). Checked on every backend and path: torch at the working size, guided upsampling to
full size, tiles at native size, the ONNX export, make_heatmap's torch-free path (models/torch_free.py, which bounds
its maps itself), the released network; on the 4 sample photos and on the development sets (../shared, skipped when
absent)."""

import numpy as np
import pytest
import torch

from conftest import OFFICIAL_WEIGHTS, ROOT, SHARED
from pieanet import runtime
from pieanet.models import DEFAULT_CHECKPOINT, DEFAULT_ONNX, contract, load_model
from pieanet.models.torch_free import TorchFreeModel
from pieanet.utils.exposure import GRAY_WEIGHTS, bound_residual, gray
from pieanet.utils.image_io import load_image

SAMPLES = sorted((ROOT / "img_to_pred").glob("*.jpg"))
DEVELOPMENT = ("real_brackets", "human_ref", "well_exposed")
EVERY_NTH = 12  # development sets: the photos run on every backend (the others on the default paths)
# float32 rounding of the grey the bound is computed from (the test's grey is float64)
ROUNDING = 1e-6


def out_of_bounds(photo, residual):
    """Pixels of ``residual`` outside [-grey, 1 - grey] of ``photo`` (H x W x 3 in [0, 1]), grey in float64 from the
    definition's weights (independent of the code under test)."""
    grey = np.tensordot(np.asarray(photo, np.float64), np.array(GRAY_WEIGHTS), axes=([2], [0]))
    r = np.asarray(residual, np.float64)
    return int(np.count_nonzero((r < -grey - ROUNDING) | (r > 1 - grey + ROUNDING)))


def clipped_told_to_brighten(photo, residual, margin=0.0):
    """Pixels at grey >= 254 (of 255) with r > margin."""
    grey = np.tensordot(np.asarray(photo, np.float64) * 255, np.array(GRAY_WEIGHTS), axes=([2], [0]))
    return int(np.count_nonzero((grey >= 254) & (np.asarray(residual) > margin + 1 / 255 + ROUNDING)))


def test_bound_residual_by_hand():
    grey = np.array([0.0, 0.25, 1.0], np.float32)
    r = np.array([-0.5, 0.9, 0.3], np.float32)
    assert bound_residual(r, grey).tolist() == [0.0, 0.75, 0.0]
    t = bound_residual(torch.tensor([-0.5, -0.9, 0.3]), torch.tensor([0.0, 0.25, 0.5]))
    assert t.tolist() == pytest.approx([0.0, -0.25, 0.3])
    inside = np.array([-0.1, 0.2, -0.6], np.float32)  # already within: unchanged
    assert bound_residual(inside.copy(), np.array([0.5, 0.5, 0.7], np.float32)).tolist() == inside.tolist()


class Unbounded(torch.nn.Module):
    """A model far beyond the bounds of any photo: r = +1 where the grey is below one half, -1 elsewhere."""

    tile_multiple = 8
    receptive_radius = 0

    def forward(self, x):
        return torch.where(gray(x) < 0.5, 1.0, -1.0)


def backends():
    """(name, model, size, tile) of every path a map can come from."""
    shipped = load_model(DEFAULT_CHECKPOINT)
    found = [
        ("torch", shipped, None, None),
        ("torch guided upsampling", shipped, 128, None),
        ("torch tiles, native size", shipped, 0, contract.minimum_tile(shipped)),
        ("onnxruntime", load_model(DEFAULT_ONNX), None, None),
        ("torch-free (make_heatmap's default)", TorchFreeModel(DEFAULT_ONNX), None, None),
    ]
    if OFFICIAL_WEIGHTS.is_file():
        found.append(("released network", load_model(OFFICIAL_WEIGHTS), None, None))
    return found


@pytest.fixture(scope="module")
def every_backend():
    return backends()


def check_photos(paths, every_backend):
    for path in paths:
        photo = load_image(path)
        for name, model, size, tile in every_backend:
            (residual,) = runtime.predict(model, [photo], size=size, tile=tile)
            assert not isinstance(residual, BaseException), f"{path.name}, {name}: {residual}"
            assert out_of_bounds(photo, residual) == 0, f"{path.name}, {name}: pixels outside the bounds"
            assert clipped_told_to_brighten(photo, residual) == 0, f"{path.name}, {name}"


def test_a_model_beyond_the_bounds_is_bounded_on_every_path():
    photo = load_image(SAMPLES[0])
    grey = photo.astype(np.float64) @ np.array(GRAY_WEIGHTS)
    for size, tile in ((None, None), (128, None), (0, 64), (128, 32)):
        (residual,) = runtime.predict(Unbounded(), [photo], size=size, tile=tile)
        assert out_of_bounds(photo, residual) == 0
        if size != 128:  # at full size, the model's +1 / -1 become the bounds themselves, not values inside them
            np.testing.assert_allclose(residual, np.where(grey < 0.5, 1 - grey, -grey), atol=1e-5)


@pytest.mark.slow  # 5 backends, one of them tiles at native size: minutes on 2 loaded cores
def test_sample_photos_within_bounds_on_every_backend(every_backend):
    check_photos(SAMPLES, every_backend)


@pytest.mark.slow
@pytest.mark.shared
@pytest.mark.parametrize("name", DEVELOPMENT)
def test_development_sets_within_bounds_on_every_backend(name, every_backend):
    images = SHARED / name / "images"
    if not images.is_dir():
        pytest.skip(f"{images}: the {name} development set is not there (../shared beside the repo)")
    # every photo on one of the two default paths at the working size, in turn (the API's torch and make_heatmap's
    # torch-free one); every EVERY_NTH photo on all six, native-size tiles and the released network included (those
    # take seconds a photo: the whole sets on every path, most of an hour)
    paths = sorted(p for p in images.iterdir() if p.is_file())
    default_paths = [
        backend for backend in every_backend if backend[0] in ("torch", "torch-free (make_heatmap's default)")
    ]
    assert len(default_paths) == 2
    for n, path in enumerate(paths):
        if n % EVERY_NTH:
            check_photos([path], [default_paths[n % 2]])
    check_photos(paths[::EVERY_NTH], every_backend)
