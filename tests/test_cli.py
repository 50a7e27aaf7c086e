"""The shared command line (utils/cli.py) as every tool uses it: one usage error (exit 2) for a bad option, input or
setup before any work, one line per failed input (exit 1), no traceback, defaults stated in --help."""

import csv
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pieanet import compare_methods
from pieanet import evaluate
from pieanet import make_heatmap
from pieanet.heatmaps import processing
from pieanet import score
from pieanet import runtime
from pieanet.utils import cli
from conftest import exit_code, save_photo

ROOT = Path(__file__).resolve().parents[1]
TOOLS = {"make_heatmap": make_heatmap, "score": score, "compare_methods": compare_methods, "evaluate": evaluate}


def save_nan_tiff(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((24, 32), np.nan, np.float32), mode="F").save(path)
    return path


@pytest.fixture()
def setup(tmp_path, tiny_checkpoint):
    """Photos, two method folders, a tiny dataset, and the argv of each tool up to its common options."""
    for i in range(2):
        save_photo(tmp_path / "photos" / f"p{i}.png", seed=i)
        save_photo(tmp_path / "A" / f"{i}.png", seed=i)
        save_photo(tmp_path / "B" / f"{i}.png", seed=10 + i)
    data = tmp_path / "data"
    for i, grey in enumerate((60, 200)):
        Image.fromarray(np.full((24, 32, 3), grey, np.uint8)).save(save_photo(data / "images" / f"s{i}.png"))
        (data / "labels").mkdir(exist_ok=True)
        np.save(data / "labels" / f"s{i}.npy", np.full((24, 32), 128.0 - grey, np.float32))
    (data / "valid.csv").write_text("img_id,score\ns0.png,7\ns1.png,8\n")
    ck = str(tiny_checkpoint)
    argv = {
        "make_heatmap": ["--input", tmp_path / "photos", "--output", tmp_path / "out", "--checkpoint", ck],
        "score": ["--rules", "landscape", tmp_path / "photos", "--checkpoint", ck],
        "compare_methods": [
            "--inputs",
            tmp_path / "A",
            tmp_path / "B",
            "--output",
            tmp_path / "cmp",
            "--checkpoint",
            ck,
        ],
        "evaluate": ["--data-root", data, "--csv", "valid.csv", "--checkpoint", ck, "--json", tmp_path / "e.json"],
    }
    return tmp_path, argv


BAD_OPTIONS = [
    ("--size", "0"),
    ("--size", "-3"),
    ("--threshold", "nan"),
    ("--threshold", "inf"),
    ("--threshold", "1.5"),
    ("--tile", "-1"),
    ("--tile", "abc"),
    ("--threads", "0"),
    ("--device", "tpu"),
]


@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize("option, value", BAD_OPTIONS)
def test_bad_option_values_are_one_usage_error(setup, capsys, tool, option, value):
    tmp_path, argv = setup
    assert exit_code(TOOLS[tool], argv[tool] + [option, value]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and option in err
    assert not (tmp_path / "out" / "summary.csv").exists() and not (tmp_path / "e.json").exists()


@pytest.mark.parametrize("tool", TOOLS)
def test_tile_below_the_model_minimum_is_refused_before_any_work(setup, capsys, tool):
    tmp_path, argv = setup
    assert exit_code(TOOLS[tool], argv[tool] + ["--tile", "10"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"{tool}: --tile 10 is below this model's minimum of ") and "--overlap" not in line
    assert not (tmp_path / "out" / "summary.csv").exists() and not (tmp_path / "cmp" / "comparison.csv").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("tool", TOOLS)
def test_cuda_without_cuda_is_a_usage_error(setup, capsys, tool):
    tmp_path, argv = setup
    assert exit_code(TOOLS[tool], argv[tool] + ["--device", "cuda"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "no CUDA device" in line


@pytest.mark.parametrize("tool", ["make_heatmap", "compare_methods", "evaluate"])
def test_an_unwritable_output_is_refused_before_any_work(setup, capsys, monkeypatch, tool):
    tmp_path, argv = setup
    (tmp_path / "a_file").write_text("x")  # a file where a folder must be (running as root, chmod would not stop us)
    monkeypatch.setattr(runtime, "predict", lambda *a, **k: pytest.fail("computed before checking the output"))
    blocked = tmp_path / "a_file" / "sub"
    replace = {"make_heatmap": "--output", "compare_methods": "--output", "evaluate": "--json"}[tool]
    args = argv[tool]
    args = (
        args[: args.index(replace) + 1]
        + [blocked / ("m.json" if tool == "evaluate" else "")]
        + args[args.index(replace) + 2 :]
    )
    assert exit_code(TOOLS[tool], args) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"{tool}: {blocked}") and "cannot write" in line


@pytest.mark.parametrize(
    "tool, argv",
    [
        ("make_heatmap", ["--input", "{tmp}/nowhere"]),
        ("score", ["--rules", "landscape", "{tmp}/photos", "{tmp}/nowhere"]),
        ("compare_methods", ["--inputs", "{tmp}/A", "{tmp}/nowhere"]),
        ("evaluate", ["--data-root", "{tmp}/data", "--csv", "nowhere.csv", "--baseline", "zero"]),
    ],
)
def test_a_missing_input_is_exit_2_in_every_tool(setup, capsys, tool, argv):
    tmp_path, _ = setup
    assert exit_code(TOOLS[tool], [a.format(tmp=tmp_path) for a in argv]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"{tool}: ") and "nowhere" in line


@pytest.mark.parametrize("tool", TOOLS)
def test_a_nan_image_fails_alone_with_one_line(setup, capsys, tool):
    tmp_path, argv = setup
    save_nan_tiff(tmp_path / "photos" / "nan.tif")
    save_nan_tiff(tmp_path / "A" / "2.tif")
    save_nan_tiff(tmp_path / "B" / "2.tif")
    save_nan_tiff(tmp_path / "data" / "images" / "nan.tif")
    np.save(tmp_path / "data" / "labels" / "nan.npy", np.zeros((24, 32), np.float32))
    (tmp_path / "data" / "valid.csv").write_text("img_id,score\ns0.png,7\nnan.tif,5\ns1.png,8\n")
    assert exit_code(TOOLS[tool], argv[tool]) == 1
    out, err = capsys.readouterr()
    lines = [line for line in err.strip().splitlines() if "nan.tif" in line or "2.tif" in line]
    assert len(lines) == 1 and "NaN or infinite" in lines[0] and "Traceback" not in err
    if tool == "make_heatmap":
        with open(tmp_path / "out" / "summary.csv", newline="") as f:
            rows = {row["file"]: row for row in csv.DictReader(f)}
        assert rows["nan.tif"]["status"] == "failed" and rows["p0.png"]["status"] == "ok"
    if tool == "score":
        assert "nan.tif" not in out and "p0.png" in out


def test_help_states_every_default(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "250")
    for name, tool in TOOLS.items():
        with pytest.raises(SystemExit):
            tool.main(["--help"])
        text = capsys.readouterr().out
        blocks = re.split(r"\n(?=  -)", text.split("options:", 1)[1])
        for block in blocks:
            first = block.strip().split("  ")[0]
            takes_value = re.search(r"--[\w-]+ [A-Z]", first) or "{" in first
            if takes_value and "--help" not in first:
                assert "default" in block or "(required)" in block, f"{name}: {first}"


def test_common_option_types():
    assert cli.threshold("0.2") == 0.2 and cli.positive_int("3") == 3 and cli.non_negative_int("0") == 0
    assert cli.working_size("512") == 512 and cli.working_size("native") == 0  # 0: predict_tensor's native
    for text in ("0", "-3", "abc", "1.5"):
        with pytest.raises(Exception, match="positive integer or 'native'"):
            cli.working_size(text)
    for parse, text in [
        (cli.threshold, "nan"),
        (cli.threshold, "1"),
        (cli.positive_float, "-255"),
        (cli.positive_float, "0"),
        (cli.positive_float, "inf"),
        (cli.positive_int, "0"),
        (cli.non_negative_int, "2.5"),
    ]:
        with pytest.raises(Exception, match="expected"):
            parse(text)


def test_degenerate_shapes_cost_at_most_the_largest_photo(tiny_model_config):
    from pieanet.models import build_model

    model = build_model(tiny_model_config)  # tile multiple 32: a 1 x N strip is padded to 32 x N
    runtime.check_work(model, (1, 5_000_000))  # 160 MP of work: accepted
    with pytest.raises(ValueError, match="above the 200 MP limit"):
        runtime.check_work(model, (1, 10_000_000))
    (residual,) = runtime.predict(model, [np.random.default_rng(0).random((1, 700, 3), dtype=np.float32)], tile=256)
    assert residual.shape == (1, 700) and np.isfinite(residual).all()


# ------------------------------------------------------------------ make_heatmap's summary.csv and interruptions
def summary_rows(folder):
    with open(folder / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_two_runs_into_one_folder_keep_both_runs_rows(setup, capsys):
    tmp_path, argv = setup
    base = argv["make_heatmap"]
    assert exit_code(make_heatmap, base[:1] + [tmp_path / "photos" / "p0.png"] + base[2:]) == 0
    assert exit_code(make_heatmap, base[:1] + [tmp_path / "photos" / "p1.png"] + base[2:]) == 0
    assert [row["file"] for row in summary_rows(tmp_path / "out")] == ["p0.png", "p1.png"]


def test_a_summary_with_other_columns_is_not_appended_to(setup, capsys):
    tmp_path, argv = setup
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "summary.csv").write_text("name,value\na,1\n")
    assert exit_code(make_heatmap, argv["make_heatmap"]) == 2
    assert "other columns" in capsys.readouterr().err
    assert (tmp_path / "out" / "summary.csv").read_text() == "name,value\na,1\n"


def test_ctrl_c_keeps_the_finished_rows_and_no_partial_file(setup, capsys, monkeypatch):
    tmp_path, argv = setup
    real = processing.write_outputs
    calls = []

    def interrupted_on_the_second_photo(stem, image, residual, args, *rest):
        calls.append(stem)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(stem, image, residual, args, *rest)

    monkeypatch.setattr(processing, "write_outputs", interrupted_on_the_second_photo)
    assert exit_code(make_heatmap, argv["make_heatmap"]) == 130
    captured = capsys.readouterr()
    assert "interrupted" in captured.err and "Traceback" not in captured.err
    assert [row["file"] for row in summary_rows(tmp_path / "out")] == ["p0.png"]
    # the table and the report of what it finished (issue 28), not only after --resume
    assert "p0.png" in captured.out and "p1.png" not in captured.out
    assert "p0.png" in (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert not [p for p in (tmp_path / "out").iterdir() if ".tmp" in p.name or p.name.startswith("p1")]


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("tool", ["make_heatmap", "score"])
def test_a_closed_pipe_is_no_traceback(setup, tool):
    tmp_path, argv = setup
    for i in range(2, 12):
        save_photo(tmp_path / "photos" / f"p{i}.png", seed=i)
    command = " ".join(f"'{a}'" for a in [sys.executable, ROOT / f"{tool}.py", *argv[tool]])
    done = subprocess.run(
        ["bash", "-c", f"{command} | head -c 1 >/dev/null; echo rc=${{PIPESTATUS[0]}}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert int(done.stdout.split("rc=")[1]) in (0, 141)


def test_run_turns_endings_into_exit_codes(capsys):
    def raising(error):
        def body(argv):
            raise error

        return body

    assert cli.run("t", raising(cli.UsageError("bad value"))) == 2
    assert capsys.readouterr().err == "t: bad value\n"
    assert cli.run("t", raising(KeyboardInterrupt())) == 130
    assert cli.run("t", raising(BrokenPipeError())) == 141
    capsys.readouterr()
    assert cli.run("t", raising(OSError(28, "No space left on device", "out/comparison.png"))) == 1
    assert capsys.readouterr().err == "t: out/comparison.png: No space left on device\n"
    assert cli.run("t", lambda argv: 0) == 0 and math.isfinite(cli.DEFAULT_TILE)


def test_a_summary_row_that_cannot_be_written_whole_is_cut_back_off(setup, capsys, monkeypatch):
    import os

    tmp_path, argv = setup
    real_write = os.write
    calls = []

    def disk_full_on_the_second_row(fd, data):
        calls.append(data)
        if b"p1.png" in data:
            real_write(fd, data[:7])  # half a row reaches the disk, then it is full
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", disk_full_on_the_second_row)
    code = exit_code(make_heatmap, argv["make_heatmap"])
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert code == 1 and "could not append a row (No space left on device)" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "p1_exposure.png").exists()  # no photo has outputs without its row
    text = (tmp_path / "out" / "summary.csv").read_text()
    assert (
        text.endswith("\n")
        and "p1.png" not in text
        and [r["file"] for r in summary_rows(tmp_path / "out")] == ["p0.png"]
    )


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage", None])
def test_an_unusable_existing_summary_is_a_usage_error(setup, capsys, content):
    tmp_path, argv = setup
    (tmp_path / "out").mkdir()
    if content is None:
        (tmp_path / "out" / "summary.csv").mkdir()  # a folder where the file must be
    else:
        (tmp_path / "out" / "summary.csv").write_bytes(content)
    assert exit_code(make_heatmap, argv["make_heatmap"]) == 2
    err = capsys.readouterr().err
    assert "summary.csv" in err and "Traceback" not in err
