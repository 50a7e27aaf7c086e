"""The onnxruntime backend: the shipped ONNX file is the shipped checkpoint's network (within 1e-4 on every path of
utils/inference.py), make_heatmap gives the same numbers with either backend, and wrong combinations are one-line
usage errors."""
import csv

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -r requirements-export.txt)")

import make_heatmap  # noqa: E402
from pieanet.models import DEFAULT_CHECKPOINT, DEFAULT_ONNX, CheckpointError, load_model  # noqa: E402
from pieanet.utils.inference import predict_residual  # noqa: E402

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def models():
    return load_model(DEFAULT_CHECKPOINT), load_model(DEFAULT_ONNX)


@pytest.mark.parametrize("shape, options", [((256, 256), {"size": 0}), ((301, 199), {"size": 0}),
                                            ((600, 451), {}), ((1100, 700), {"size": 0, "tile": 512})])
def test_shipped_onnx_file_is_the_shipped_network(models, shape, options):
    torch_model, onnx_model = models
    assert onnx_model.config == torch_model.config and onnx_model.working_size == torch_model.working_size
    image = np.random.default_rng(sum(shape)).random((*shape, 3), dtype=np.float32)
    expected = predict_residual(torch_model, image, **options)
    got = predict_residual(onnx_model, image, **options)
    assert got.shape == expected.shape == shape
    assert np.abs(got - expected).max() < TOLERANCE


def read_summary(folder):
    with open(folder / "summary.csv", newline="") as f:
        return {row["file"]: row for row in csv.DictReader(f)}


def test_make_heatmap_numbers_match_between_backends(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(1)
    for name, gain in (("dark.png", 0.4), ("bright.png", 1.6)):
        Image.fromarray((np.clip(rng.random((90, 130, 3)) * 180 * gain, 0, 255)).astype(np.uint8)).save(photos / name)
    runs = {}
    for backend in ("torch", "onnxruntime"):
        assert make_heatmap.main(["--input", str(photos), "--output", str(tmp_path / backend),
                                  "--backend", backend]) == 0
        runs[backend] = read_summary(tmp_path / backend)
    assert runs["torch"].keys() == runs["onnxruntime"].keys() == {"dark.png", "bright.png"}
    for name, row in runs["torch"].items():
        for column in ("mean_residual", "mean_abs_residual", "score"):
            assert float(runs["onnxruntime"][name][column]) == pytest.approx(float(row[column]), abs=TOLERANCE)
    assert float(runs["torch"]["dark.png"]["mean_residual"]) > 0 > float(runs["torch"]["bright.png"]["mean_residual"])


@pytest.mark.parametrize("argv, says", [
    (["--backend", "torch", "--checkpoint", str(DEFAULT_ONNX)], "runs with --backend onnxruntime"),
    (["--backend", "onnxruntime", "--checkpoint", str(DEFAULT_CHECKPOINT)], "export.py"),
])
def test_backend_and_checkpoint_that_do_not_fit_are_usage_errors(tmp_path, capsys, argv, says):
    Image.new("RGB", (40, 30), (90, 90, 90)).save(tmp_path / "grey.png")
    assert make_heatmap.main(["--input", str(tmp_path / "grey.png"), "--output", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1


def test_a_file_that_is_not_an_exported_model_is_refused(tmp_path):
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="fake.onnx: not a readable ONNX model"):
        load_model(fake)
    with pytest.raises(CheckpointError, match="no such file"):
        load_model(tmp_path / "missing.onnx")
