"""The onnxruntime backend: the shipped ONNX file is the shipped checkpoint's network (within 1e-4 on every path of
models/inference.py), make_heatmap gives the same numbers with either backend, wrong combinations are one-line
usage errors, the default device falls back to onnxruntime's CPU provider where it has no CUDA one, and the report
names the file that ran."""

import argparse
import csv
import sys

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -r requirements-export.txt)")

from pieanet import make_heatmap  # noqa: E402
from pieanet import runtime  # noqa: E402
from pieanet.models import DEFAULT_CHECKPOINT, DEFAULT_ONNX, CheckpointError, contract, load_model  # noqa: E402
from pieanet.models.onnx_model import execution_providers  # noqa: E402
from pieanet.models.inference import predict_residual  # noqa: E402

TOLERANCE = 1e-4
pytestmark = pytest.mark.export


@pytest.fixture(scope="module")
def models():
    return load_model(DEFAULT_CHECKPOINT), load_model(DEFAULT_ONNX)


@pytest.mark.parametrize(
    "shape, options",
    [
        ((256, 256), {"size": 0}),
        ((301, 199), {"size": 0}),
        ((600, 451), {}),
        pytest.param((1100, 700), {"size": 0, "tile": 512}, marks=pytest.mark.slow),
    ],
)
def test_shipped_onnx_file_is_the_shipped_network(models, shape, options):
    torch_model, onnx_model = models
    assert onnx_model.config == torch_model.config
    assert contract.working_size(onnx_model) == contract.working_size(torch_model)
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
        assert (
            make_heatmap.main(["--input", str(photos), "--output", str(tmp_path / backend), "--backend", backend]) == 0
        )
        runs[backend] = read_summary(tmp_path / backend)
    assert runs["torch"].keys() == runs["onnxruntime"].keys() == {"dark.png", "bright.png"}
    for name, row in runs["torch"].items():
        for column in ("mean_residual", "mean_abs_residual", "score"):
            assert float(runs["onnxruntime"][name][column]) == pytest.approx(float(row[column]), abs=TOLERANCE)
    assert float(runs["torch"]["dark.png"]["mean_residual"]) > 0 > float(runs["torch"]["bright.png"]["mean_residual"])


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--backend", "torch", "--checkpoint", str(DEFAULT_ONNX)], "runs with --backend onnxruntime"),
        (["--backend", "onnxruntime", "--checkpoint", str(DEFAULT_CHECKPOINT)], "export.py"),
    ],
)
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


CPU_ONLY, WITH_CUDA = ["CPUExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.parametrize(
    "device, explicit, available, expected",
    [
        ("cpu", True, WITH_CUDA, ["CPUExecutionProvider"]),
        ("cuda", False, CPU_ONLY, ["CPUExecutionProvider"]),
        ("cuda", True, WITH_CUDA, [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]),
        ("cuda:1", False, WITH_CUDA, [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]),
    ],
)
def test_execution_providers(device, explicit, available, expected):
    assert execution_providers("m.onnx", torch.device(device), explicit, available) == expected


def test_cuda_asked_for_without_the_cuda_provider_is_an_error():
    with pytest.raises(ValueError, match="m.onnx: --device cuda was asked for.*no CUDA provider"):
        execution_providers("m.onnx", torch.device("cuda"), True, CPU_ONLY)


@pytest.fixture
def cuda_machine(monkeypatch):
    """torch sees a GPU; onnxruntime's providers and the ones each session is made with are recorded."""
    import onnxruntime

    sessions, real_session = [], onnxruntime.InferenceSession

    def session(path, options, providers):
        sessions.append(providers)
        return real_session(path, options, providers=CPU_ONLY)  # this machine has no GPU to run on

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: list(CPU_ONLY))
    monkeypatch.setattr(onnxruntime, "InferenceSession", session)
    return onnxruntime, sessions


def test_default_device_on_a_cuda_machine_without_the_cuda_provider_runs_on_the_cpu(tmp_path, capsys, cuda_machine):
    _, sessions = cuda_machine
    Image.new("RGB", (40, 30), (60, 60, 60)).save(tmp_path / "grey.png")
    argv = ["--input", str(tmp_path / "grey.png"), "--backend", "onnxruntime"]
    assert make_heatmap.main([*argv, "--output", str(tmp_path / "auto")]) == 0
    assert sessions == [CPU_ONLY]
    assert (tmp_path / "auto" / "grey_exposure.png").is_file()
    capsys.readouterr()
    assert make_heatmap.main([*argv, "--output", str(tmp_path / "cuda"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--device cuda was asked for" in err and "no CUDA provider" in err and len(err.splitlines()) == 1


def test_each_torchrun_process_keeps_its_own_gpu(cuda_machine, monkeypatch):
    onnxruntime, sessions = cuda_machine
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: list(WITH_CUDA))
    args = argparse.Namespace(device="auto", backend="onnxruntime", tile=0, threads=None)
    runtime.setup(args)
    args.device = "cuda:1"  # what make_heatmap and evaluate set under torchrun on rank 1
    runtime.open_model(None, args)
    assert sessions == [[("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]]


def test_the_report_names_the_checkpoint_that_ran(tmp_path):
    Image.new("RGB", (40, 30), (90, 90, 90)).save(tmp_path / "grey.png")
    for backend, shipped, other in (
        ("onnxruntime", DEFAULT_ONNX, DEFAULT_CHECKPOINT),
        ("torch", DEFAULT_CHECKPOINT, DEFAULT_ONNX),
    ):
        output = tmp_path / backend
        assert (
            make_heatmap.main(["--input", str(tmp_path / "grey.png"), "--output", str(output), "--backend", backend])
            == 0
        )
        page = (output / "index.html").read_text()
        assert f"checkpoint: {shipped}" in page and other.name not in page


def test_missing_onnxruntime_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(CheckpointError, match=r"needs onnxruntime: pip install onnxruntime .*'\.\[export\]'"):
        load_model(DEFAULT_ONNX)
