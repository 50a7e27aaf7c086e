"""The torch-free path (models/torch_free.py) against the torch path it stands in for (models/inference.py,
models/full_size.py): each piece on the same input, the whole map on real photos, and when pieanet.runtime takes it."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pieanet import runtime
from pieanet.models import DEFAULT_CHECKPOINT, DEFAULT_ONNX, inference, load_model
from pieanet.models import torch_free as tf
from pieanet.models.full_size import GuidedFit, shrink_photo
from pieanet.models.filters import box_mean
from pieanet.utils.image_io import load_image

pytest.importorskip("onnxruntime")
ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted((ROOT / "img_to_pred").glob("*.jpg"))
# the maps of the two paths differ by float rounding of the shrink and the network (each ~5e-7), which the guided
# filter magnifies where the working-size grey is flat (a = cov / (var + eps)): measured up to 7.6e-5 (122 photos)
MAP_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def models():
    return load_model(DEFAULT_CHECKPOINT), tf.TorchFreeModel(DEFAULT_ONNX)


def photo(height, width, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    smooth = np.asarray(
        Image.fromarray(rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8)).resize(
            (width, height), Image.Resampling.BICUBIC
        ),
        dtype=np.float32,
    )
    levels = np.clip(smooth + rng.normal(0, 4, smooth.shape), 0, 255).astype(np.uint8)
    return levels if dtype == np.uint8 else levels.astype(np.float32) / np.float32(255)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("size", [(67, 41), (192, 256), (37, 300)])
def test_shrink_equals_torchs_antialiased_bicubic(dtype, size):
    image = photo(613, 829, dtype=dtype)
    got = tf.shrink(image, size)
    want = shrink_photo(image, size)[0].numpy()
    assert got.shape == want.shape and got.dtype == np.float32
    # Pillow weighs and sums each pass in float64, torch in float32: up to ~1e-5 apart (1/400 of a level)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_box_means_and_guided_coefficients_equal_torchs():
    rng = np.random.default_rng(3)
    residual = (rng.random((61, 83), dtype=np.float32) - 0.5).astype(np.float32)
    guide = rng.random((61, 83), dtype=np.float32) ** 3  # dark, nearly flat places: where eps matters
    np.testing.assert_allclose(
        tf.box_mean(guide, 3), box_mean(torch.from_numpy(guide)[None, None], 3)[0, 0].numpy(), rtol=0, atol=1e-7
    )
    a, b = tf.guided_coefficients(residual, guide)
    want_a, want_b = inference.guided_coefficients(
        torch.from_numpy(residual)[None, None], torch.from_numpy(guide)[None, None]
    )
    np.testing.assert_allclose(a, want_a[0, 0].numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(b, want_b[0, 0].numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("low, high", [(256, 4000), (192, 3000), (7, 7), (5, 13), (300, 301)])
def test_bilinear_taps_are_torchs(low, high):
    ramp = torch.arange(low, dtype=torch.float32).view(1, 1, 1, low).expand(1, 1, 2, low)
    want = F.interpolate(ramp, size=(2, high), mode="bilinear", align_corners=False)[0, 0, 0].numpy()
    first, second, w_first, w_second = tf.bilinear_taps(low, high)
    np.testing.assert_array_equal(first * w_first + second * w_second, want)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_full_size_map_equals_the_torch_guided_upsampling(dtype):
    rng = np.random.default_rng(5)
    a, b = (rng.normal(0, 3, (48, 64)).astype(np.float32) for _ in range(2))
    image = photo(700, 933, seed=2, dtype=dtype)  # strips of 256 rows and a last partial one
    np.testing.assert_allclose(
        tf.NumpyGuidedFit(a, b).full_map(image), GuidedFit(a, b).full_map(image), rtol=0, atol=1e-5
    )


@pytest.mark.parametrize("path", SAMPLES, ids=[p.stem for p in SAMPLES])
def test_sample_photos_give_the_torch_paths_maps(models, path):
    torch_model, torch_free_model = models
    image = load_image(path, keep_uint8=True)
    want = inference.predict_residual(torch_model, image)
    got = tf.predict(torch_free_model, image)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=MAP_TOLERANCE)


def test_a_photo_smaller_than_the_working_size_is_judged_as_it_is(models):
    torch_model, torch_free_model = models
    image = photo(150, 211, seed=7)
    np.testing.assert_allclose(
        tf.predict(torch_free_model, image), inference.predict_residual(torch_model, image), rtol=0, atol=MAP_TOLERANCE
    )


@pytest.mark.slow
def test_a_12_mp_photo_gives_the_torch_paths_map(models):
    torch_model, torch_free_model = models
    image = photo(3000, 4000, seed=9)
    fit = tf.predict(torch_free_model, image, deferred=True)
    assert isinstance(fit, GuidedFit) and fit.a.shape == (384, 512)  # the shipped working size, 512
    got = fit.full_map(image)
    np.testing.assert_allclose(got, inference.predict_residual(torch_model, image), rtol=0, atol=MAP_TOLERANCE)
    grey = tf.photo_grey(image)
    assert np.all(got >= -grey) and np.all(got <= 1 - grey)  # the definition's bounds, as on the torch path


@pytest.mark.parametrize("bad", [np.nan, 1.5])
def test_a_float_photo_outside_the_contract_is_refused(models, bad):
    image = photo(40, 50, dtype=np.float32)
    image[3, 4, 1] = bad
    with pytest.raises(ValueError, match="NaN or infinite|grey runs from"):
        tf.predict(models[1], image)
    big = photo(600, 700, dtype=np.float32)
    big[3, 4, 1] = bad
    with pytest.raises(ValueError, match="NaN or infinite|grey runs from"):
        tf.predict(models[1], big)


def test_the_shipped_exports_contract_is_the_torch_models(models):
    torch_model, torch_free_model = models
    onnx_model = load_model(DEFAULT_ONNX)  # models/onnx_model.py: the contract as the torch skeleton declares it
    for name in ("working_size", "tile_multiple", "receptive_radius", "native_size"):
        assert getattr(torch_free_model, name) == getattr(onnx_model, name), name
    assert torch_free_model.config == torch_model.config


def test_an_onnx_file_without_the_contract_is_one_line(tmp_path):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(DEFAULT_ONNX))
    kept = [prop for prop in model.metadata_props if prop.key != tf.CONTRACT_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, str(tmp_path / "old.onnx"))
    with pytest.raises(ValueError, match="without the P-IEA model contract.*re-export it with export.py"):
        tf.TorchFreeModel(tmp_path / "old.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        tf.TorchFreeModel(tmp_path / "junk.onnx")


def options(**given):
    values = {"checkpoint": None, "backend": "auto", "device": "cpu", "size": None}
    values.update(given)
    return argparse.Namespace(**values)


@pytest.mark.parametrize(
    "given, expected",
    [
        ({}, True),
        ({"backend": "onnxruntime"}, True),
        ({"size": 512}, True),
        ({"checkpoint": str(DEFAULT_CHECKPOINT)}, False),
        ({"checkpoint": str(DEFAULT_ONNX)}, False),
        ({"backend": "torch"}, False),
        ({"device": "cuda"}, False),
        ({"size": 0}, False),
    ],
)
def test_which_runs_go_without_torch(given, expected, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert runtime.torch_free(options(**given)) is expected


def test_torchrun_and_a_visible_gpu_take_the_torch_path(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert not runtime.torch_free(options())
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setattr(runtime, "gpu_may_be_visible", lambda: True)
    assert not runtime.torch_free(options(device="auto")) and runtime.torch_free(options(device="cpu"))


@pytest.mark.parametrize("hidden", ["", "-1"])
def test_cuda_visible_devices_can_hide_every_gpu(hidden, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
    assert not runtime.gpu_may_be_visible()


@pytest.mark.subprocess
def test_the_main_job_never_imports_torch(tmp_path):
    """make_heatmap with its defaults on a photo: the maps, the table and the report, and torch never loaded."""
    script = (
        "import sys, json; sys.argv[0] = 'make_heatmap'; from pieanet import make_heatmap; "
        "code = make_heatmap.main(sys.argv[1:]); "
        "print(json.dumps({'code': code, 'torch': 'torch' in sys.modules}))"
    )
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU: --device auto means the CPU here
    done = subprocess.run(
        [sys.executable, "-c", script, "--input", str(SAMPLES[0]), "--output", str(tmp_path / "out"), "--threads", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"code": 0, "torch": False}, done.stderr[-2000:]
    assert (tmp_path / "out" / f"{SAMPLES[0].stem}_exposure.png").is_file()
    assert "checkpoint=sha256:" in (tmp_path / "out" / "summary.csv").read_text(encoding="utf-8")
