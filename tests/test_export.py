"""export.py: ONNX export of P-IEANet (with and without the scene branch, and the shipped checkpoint), checked with
onnxruntime against torch at sizes other than the one the graph was traced at; errors leave no file."""

import contextlib
import io
import json

import numpy as np
import pytest
import torch

for _module in ("onnx", "onnxruntime", "onnxscript"):
    pytest.importorskip(_module, reason=f"{_module} is not installed (pip install -r requirements-export.txt)")

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

from pieanet import export, exporting  # noqa: E402
from pieanet.models import DEFAULT_CHECKPOINT, build_model, load_model, save_model  # noqa: E402

TOLERANCE = 1e-4
pytestmark = pytest.mark.export
SCENE = {"scene_size": 32, "scene_channels": 4}


def run_export(capsys, *argv):
    """export.main(argv) -> (exit code, stdout, stderr)."""
    code = export.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def max_difference(model, sess, shape, seed=0):
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        expected = model(x).numpy()
    got = sess.run(["residual"], {"image": x.numpy()})[0]
    assert got.shape == expected.shape == (shape[0], 1, *shape[2:])
    return float(np.abs(got - expected).max())


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model_config):
    """name -> (torch model, onnx path, what the command printed); each made once by the command line."""
    folder = tmp_path_factory.mktemp("export")
    cache = {}

    def get(name):
        if name not in cache:
            if name == "default":
                checkpoint = DEFAULT_CHECKPOINT
            else:
                torch.manual_seed(0)
                config = dict(tiny_model_config, **(SCENE if name == "scene" else {}))
                checkpoint = folder / f"{name}.safetensors"
                save_model(checkpoint, build_model(config))
            output = folder / f"{name}.onnx"
            sizes = ["--check-sizes", "64x48", "33x65"] if name == "plain" else []  # else the default sizes
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                code = export.main(
                    ["--checkpoint", str(checkpoint), "--format", "onnx", "--output", str(output), *sizes]
                )
            assert code == 0 and output.is_file()
            cache[name] = (load_model(checkpoint), output, out.getvalue())
        return cache[name]

    return get


@pytest.mark.parametrize("name", ["plain", "scene", "default"])
def test_export_matches_torch_at_other_sizes(exported, name):
    model, path, _ = exported(name)
    sess = session(path)
    assert exporting.TRACE_SHAPE[2:] not in [(256, 256), (301, 199), (199, 301)]  # traced at another size
    for shape in [(1, 3, 256, 256), (2, 3, 301, 199), (1, 3, 199, 301)]:
        assert max_difference(model, sess, shape) <= TOLERANCE, shape


def test_scene_branch_extreme_shapes(exported):
    """Smaller than the scene thumbnail (magnified, no antialiasing), a strip whose thumbnail is one pixel wide
    (torch's CPU antialias quirk, reproduced) and one pixel high, a single pixel."""
    model, path, _ = exported("scene")
    sess = session(path)
    for shape in [(2, 3, 20, 30), (1, 3, 900, 20), (1, 3, 17, 900), (1, 3, 1, 1)]:
        assert max_difference(model, sess, shape) <= TOLERANCE, shape


def test_onnx_file_describes_itself(exported):
    model, path, _ = exported("default")
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version == exporting.DEFAULT_OPSET
    dims = lambda value: [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]  # noqa: E731
    assert [i.name for i in proto.graph.input] == ["image"] and dims(proto.graph.input[0]) == [
        "batch",
        3,
        "height",
        "width",
    ]
    assert [o.name for o in proto.graph.output] == ["residual"]
    assert dims(proto.graph.output[0]) == ["batch", 1, "height", "width"]
    metadata = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(metadata["p_iea.config"]) == model.config
    assert "under-exposed" in metadata["p_iea.output"]


def test_command_prints_the_check(exported):
    """The command prints the check at every size asked for (the tiny model was exported with its own sizes) and
    leaves no temporary file."""
    _, path, out = exported("plain")
    assert "check 64x48 (batch 1): max |onnxruntime - torch|" in out and "check 33x65 (batch 2)" in out
    assert f"wrote {path}" in out
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []


# ------------------------------------------------------------------------------------------------ errors
def test_unreadable_checkpoint_is_exit_2_and_no_file(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    for checkpoint in (bad, tmp_path / "missing.safetensors"):
        output = tmp_path / "out.onnx"
        code, out, err = run_export(capsys, "--checkpoint", checkpoint, "--output", output)
        assert code == 2 and not output.exists()
        assert err.startswith("export: ") and len(err.strip().splitlines()) == 1 and str(checkpoint) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.safetensors"]


@pytest.mark.parametrize(
    "argv", [["--format", "tflite"], ["--check-sizes", "256"], ["--check-sizes", "0x5"], ["--opset", "11"]]
)
def test_usage_errors_are_one_line_exit_2(tmp_path, capsys, argv):
    output = tmp_path / "out.onnx"
    with pytest.raises(SystemExit) as exit_info:
        export.main(["--output", str(output), *argv])
    assert exit_info.value.code == 2 and not output.exists()
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_output_folder_is_a_usage_error(tmp_path, capsys):
    code, out, err = run_export(capsys, "--output", tmp_path)
    assert code == 2 and "is a folder" in err


def test_missing_onnxruntime_says_how_to_install(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    code, out, err = run_export(capsys, "--output", tmp_path / "out.onnx")
    assert code == 2 and "pip install onnx onnxruntime onnxscript" in err and len(err.strip().splitlines()) == 1
    assert "pip install -r requirements-export.txt" in err and "pip install '.[export]'" in err
    assert not (tmp_path / "out.onnx").exists()


def test_released_network_is_refused():
    with pytest.raises(exporting.UsageError, match="256 x 256"):
        exporting.exportable(build_model({"name": "official"}))


def test_failed_check_writes_nothing(exported, tmp_path, capsys, monkeypatch):
    """An ONNX file that does not reproduce the model (here: another model's graph) fails the check: exit 1, no
    file, and a file already at --output is left as it was."""
    _, other, _ = exported("plain")
    monkeypatch.setattr(exporting, "export_onnx", lambda model, path, opset: path.write_bytes(other.read_bytes()))
    output = tmp_path / "out.onnx"
    code, out, err = run_export(capsys, "--output", output)  # the shipped checkpoint, checked against the tiny graph
    assert code == 1 and not output.exists() and "above 0.0001" in err and "nothing written" in err
    output.write_bytes(b"earlier")
    assert run_export(capsys, "--output", output)[0] == 1 and output.read_bytes() == b"earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]
