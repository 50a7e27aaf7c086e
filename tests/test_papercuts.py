"""What a new user meets first (issue 16): repeated options, a useless --size, the readable formats, --recursive,
a fully resumed run, long names in the table, the tools' default checkpoint, compare_methods --vmax, the README's
Python API, where examples write, the shipped configs and the released weights."""

import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pieanet
from pieanet import compare_methods, comparison, evaluate, make_heatmap, score
from pieanet.models import contract
from pieanet.utils.config import ConfigError
from pieanet.utils.image_io import IMAGE_EXTENSIONS
from conftest import exit_code, flat_iea_dataset, save_photo

ROOT = Path(__file__).resolve().parents[1]


def error_line(capsys):
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_several_inputs_and_positional_paths_are_all_read(tiny_checkpoint, tmp_path, capsys):
    # issue 16 refused a second --input; issue 28: several are read, as docs/heatmaps.md says and score.py does
    a, b = save_photo(tmp_path / "a.png"), save_photo(tmp_path / "b.png", seed=1)
    c = save_photo(tmp_path / "more" / "c.png", seed=2)
    code = exit_code(
        make_heatmap,
        [
            "--input",
            a,
            "--input",
            b,
            "--output",
            tmp_path / "out",
            "--checkpoint",
            tiny_checkpoint,
            tmp_path / "more",
            a,
        ],
    )
    assert code == 0
    with open(tmp_path / "out" / "summary.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sorted(row["file"] for row in rows) == ["a.png", "b.png", "c.png"]  # a named twice: done once
    assert str(c) not in capsys.readouterr().err


def test_no_input_and_no_default_folder_names_input(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(make_heatmap, "WORK", tmp_path)  # a folder without img_to_pred/
    assert exit_code(make_heatmap, ["--output", tmp_path / "out", "--checkpoint", tiny_checkpoint]) == 2
    line = error_line(capsys)
    assert "--input" in line and "img_to_pred/" in line


def test_size_below_what_the_model_can_use_is_refused(tiny_checkpoint, tmp_path, capsys):
    # the tiny model's window is 4: tile multiple 8 x 4 = 32 px; the shipped model's window 8: 64 px
    save_photo(tmp_path / "in" / "a.png", height=48, width=64)
    argv = ["--input", tmp_path / "in", "--checkpoint", tiny_checkpoint]
    assert exit_code(make_heatmap, argv + ["--output", tmp_path / "small", "--size", "1"]) == 2
    assert error_line(capsys) == (
        "make_heatmap: --size 1 is below this model's minimum working size of 32 px; use "
        "--size 32 or more, or --size native"
    )
    assert not (tmp_path / "small" / "summary.csv").exists()
    assert exit_code(make_heatmap, argv + ["--output", tmp_path / "ok", "--size", "32", "--save-npy"]) == 0
    assert np.load(tmp_path / "ok" / "a_residual.npy").shape == (48, 64)
    assert contract.minimum_size(pieanet.load()) == 64


def test_an_empty_folder_names_every_readable_format(tiny_checkpoint, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no photo here")
    save_photo(tmp_path / "B" / "x.png")
    for tool, argv in [
        (make_heatmap, ["--input", tmp_path / "empty", "--output", tmp_path / "out"]),
        (score, ["--rules", "landscape", tmp_path / "empty"]),
        (compare_methods, ["--inputs", tmp_path / "empty", tmp_path / "B", "--output", tmp_path / "c"]),
    ]:
        assert exit_code(tool, argv + ["--checkpoint", tiny_checkpoint]) == 2
        line = error_line(capsys)
        assert "no images found" in line
        listed = set(re.findall(r"\.[0-9a-z]+\b", line.split("expected files ending in ")[1]))
        assert listed == set(IMAGE_EXTENSIONS), tool.__name__
        assert {".heic", ".heif", ".dng", ".cr2", ".nef"} <= listed


def test_recursive_is_suggested_when_only_sub_folders_hold_images(tiny_checkpoint, tmp_path, capsys):
    save_photo(tmp_path / "in" / "trip" / "a.png")
    save_photo(tmp_path / "in" / "trip" / "day2" / "b.jpg")
    assert (
        exit_code(
            make_heatmap, ["--input", tmp_path / "in", "--output", tmp_path / "out", "--checkpoint", tiny_checkpoint]
        )
        == 2
    )
    assert error_line(capsys) == (
        f"make_heatmap: {tmp_path / 'in'}: no images in the folder itself, 2 in its "
        "sub-folders; add --recursive to read them"
    )
    # score.py has no --recursive: it is not suggested there
    assert exit_code(score, ["--rules", "landscape", tmp_path / "in", "--checkpoint", tiny_checkpoint]) == 2
    assert "--recursive" not in error_line(capsys)


def test_a_fully_resumed_run_says_so(tiny_checkpoint, tmp_path, capsys):
    save_photo(tmp_path / "in" / "a.png")
    save_photo(tmp_path / "in" / "b.png", seed=1)
    argv = ["--input", tmp_path / "in", "--output", tmp_path / "out", "--checkpoint", tiny_checkpoint, "--resume"]
    assert exit_code(make_heatmap, argv) == 0
    capsys.readouterr()
    assert exit_code(make_heatmap, argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        f"nothing to do: 2 already done, skipped (--resume), every image of the input; heatmaps and "
        f"summary.csv in {tmp_path / 'out'}"
    )
    assert not any(line.startswith("file ") or "0 of 0" in line for line in out)


def test_the_printed_table_fits_long_names(tiny_checkpoint, tmp_path, capsys):
    long_name = "a_rather_long_holiday_photo_name_from_a_phone_2026-07-14.png"  # 60 characters
    save_photo(tmp_path / "in" / long_name)
    save_photo(tmp_path / "in" / "b.png", seed=1)
    assert (
        exit_code(
            make_heatmap,
            ["--input", tmp_path / "in", "--output", tmp_path / "out", "--checkpoint", tiny_checkpoint, "--no-report"],
        )
        == 0
    )
    header, *rows = capsys.readouterr().out.splitlines()[:3]
    assert header.startswith("file ") and len(rows) == 2
    # every column ends where its header ends: the status column starts at the same place on every line
    status_at = header.index("  status")
    assert [row.index("  ok") for row in rows] == [status_at, status_at]
    assert [row.index("32x24") + len("32x24") for row in rows] == [header.index("size") + len("size")] * 2


def test_evaluate_defaults_to_the_shipped_checkpoint(tmp_path, capsys):
    data = flat_iea_dataset(tmp_path / "data", (60, 200), ["N1", "P1"])
    out = tmp_path / "m.json"
    code = evaluate.main(["--data-root", str(data), "--csv", "valid.csv", "--json", str(out), "--threads", "1"])
    assert code == 1  # the dataset's corrupt image and missing label
    import json

    methods = json.loads(out.read_text())["methods"]
    assert list(methods) == ["pieanet_corpus"] and methods["pieanet_corpus"]["n_images"] == 2
    # only baselines asked for: no checkpoint added
    code = evaluate.main(
        ["--data-root", str(data), "--csv", "valid.csv", "--json", str(out), "--baseline", "global_midgray"]
    )
    assert list(json.loads(out.read_text())["methods"]) == ["baseline: global_midgray"]


def test_compare_methods_vmax_sets_the_figure_scale(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    for i in range(2):
        save_photo(tmp_path / "A" / f"{i}.png", seed=i)
        save_photo(tmp_path / "B" / f"{i}.png", seed=10 + i)
    drawn = []

    def recording_colorize(residual, vmax=1.0):
        drawn.append(vmax)
        return np.zeros((*residual.shape, 3), np.uint8)

    monkeypatch.setattr(comparison, "colorize", recording_colorize)
    argv = ["--inputs", tmp_path / "A", tmp_path / "B", "--output", tmp_path / "c", "--checkpoint", tiny_checkpoint]
    assert exit_code(compare_methods, argv + ["--vmax", "0.25"]) == 0
    assert drawn == [0.25] * 4  # 2 images x 2 methods, one scale
    assert exit_code(compare_methods, argv + ["--vmax", "0"]) == 2
    assert "--vmax" in capsys.readouterr().err


def readme_api_snippet():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    snippet = next(block for block in blocks if "pieanet.load()" in block)
    return snippet


def test_readme_api_snippet_gives_the_tools_map_without_gradients(tmp_path, monkeypatch, capsys):
    shutil.copyfile(ROOT / "img_to_pred" / "chelsea.jpg", tmp_path / "photo.jpg")
    assert (
        make_heatmap.main(
            ["--input", str(tmp_path / "photo.jpg"), "--output", str(tmp_path / "out"), "--save-npy", "--no-report"]
        )
        == 0
    )
    monkeypatch.chdir(tmp_path)
    names = {}
    exec(readme_api_snippet(), names)
    tool_map = np.load(tmp_path / "out" / "photo_residual.npy")
    assert names["residual"].shape == tool_map.shape == (300, 451)
    # the tool runs the shipped network in onnxruntime (models/torch_free.py), the API in torch: the same map to
    # float rounding, which the guided filter magnifies to at most 1e-4 (tests/test_torch_free.py)
    np.testing.assert_allclose(names["residual"], tool_map, atol=1e-4)
    assert not names["maps"].requires_grad and tuple(names["maps"].shape) == (1, 1, 256, 256)


def test_predict_takes_an_array_as_the_tools_read_the_file(tmp_path):
    photo = np.random.default_rng(5).integers(0, 256, (40, 70, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "p.png")
    model = pieanet.load()
    from_file, from_array = pieanet.predict(tmp_path / "p.png", model), pieanet.predict(photo, model)
    assert from_file.shape == (40, 70) and from_file.dtype == np.float32
    np.testing.assert_array_equal(from_file, from_array)
    with pytest.raises(ValueError, match="H x W x 3"):
        pieanet.predict(photo[..., 0], model)


def test_examples_write_under_outputs_never_into_tracked_paths():
    text = "".join((ROOT / name).read_text() for name in ("README.md", "docs/export.md", "export.py"))
    written = re.findall(r"export\.py [^\n]*?--output (\S+)", text)
    assert written and all(path.startswith("outputs/") for path in written), written
    assert 'InferenceSession("outputs/' in text


def test_configs_name_only_checkpoints_the_checkout_holds():
    for config in sorted((ROOT / "configs").glob("*.yaml")):
        for name in re.findall(r"checkpoints/([\w.-]+\.(?:safetensors|onnx|pt|pth))", config.read_text()):
            assert (ROOT / "checkpoints" / name).is_file(), f"{config.name} names checkpoints/{name}"


def test_shipped_configs_are_found_by_name_from_another_folder(tmp_path, monkeypatch):
    from pieanet.training.run import resolve_config

    monkeypatch.chdir(tmp_path)
    by_name, by_path = resolve_config("pieanet_synth"), resolve_config("configs/pieanet_synth.yaml")
    assert by_name == by_path and by_name["train"]["epochs"] == 12 and by_name["model"]["name"] == "pieanet"
    with pytest.raises(ConfigError, match=r"elsewhere/pieanet_synth.yaml: config file not found; .*pieanet_synth"):
        resolve_config("elsewhere/pieanet_synth.yaml")  # another folder's file is never replaced by a shipped one


def test_released_weights_come_from_the_environment_never_a_development_path(
    tiny_checkpoint, tmp_path, capsys, monkeypatch
):
    import pieanet.models.loading as models  # where the checkpoint constants live

    # no path into the development data (../shared); a checkout's own path may contain the word (/tmp/noshared/)
    assert not [
        value for value in vars(models).values() if isinstance(value, (str, Path)) and "shared" in Path(value).parts
    ]
    save_photo(tmp_path / "in" / "a.png")
    argv = ["--input", tmp_path / "in", "--output", tmp_path / "out", "--checkpoint", "released", "--no-report"]
    monkeypatch.delenv("P_IEA_RELEASED_WEIGHTS", raising=False)
    assert exit_code(make_heatmap, argv) == 2
    line = error_line(capsys)
    assert "P_IEA_RELEASED_WEIGHTS" in line and "../shared" not in line
    monkeypatch.setenv("P_IEA_RELEASED_WEIGHTS", str(tiny_checkpoint))
    assert exit_code(make_heatmap, argv) == 0
    with pytest.raises(models.CheckpointError) as missing:
        models.load_model(tmp_path / "nothing.pth")
    assert "../shared" not in str(missing.value)


def test_load_understands_released_as_the_tools_do(tiny_checkpoint, monkeypatch, tmp_path):
    from pieanet.models import CheckpointError

    monkeypatch.delenv("P_IEA_RELEASED_WEIGHTS", raising=False)
    monkeypatch.chdir(tmp_path)  # no file called "released" here
    with pytest.raises(CheckpointError, match="P_IEA_RELEASED_WEIGHTS"):
        pieanet.load("released")
    monkeypatch.setenv("P_IEA_RELEASED_WEIGHTS", str(tiny_checkpoint))
    assert pieanet.load("released").config == pieanet.load(tiny_checkpoint).config


def test_a_plain_second_run_replaces_the_rows_of_the_photos_it_redoes(tiny_checkpoint, tmp_path, capsys):
    # issue 28: a second run into the same folder appended a duplicate row per photo (38 rows for 19 photos)
    save_photo(tmp_path / "in" / "a.png"), save_photo(tmp_path / "in" / "b.png", seed=1)
    save_photo(tmp_path / "other" / "c.png", seed=2)
    argv = ["--output", tmp_path / "out", "--checkpoint", tiny_checkpoint]
    assert exit_code(make_heatmap, [tmp_path / "other", *argv]) == 0
    assert exit_code(make_heatmap, [tmp_path / "in", *argv]) == 0
    capsys.readouterr()
    assert exit_code(make_heatmap, [tmp_path / "in", *argv]) == 0
    assert "2 row(s) of earlier runs for these photos replaced" in capsys.readouterr().out
    with open(tmp_path / "out" / "summary.csv", newline="", encoding="utf-8") as f:
        files = [row["file"] for row in csv.DictReader(f)]
    assert files == ["c.png", "a.png", "b.png"]  # one row each; the photo of the other run kept


def test_the_report_shows_signed_stops_the_colour_bar_and_no_empty_column(tiny_checkpoint, tmp_path):
    save_photo(tmp_path / "in" / "a.png")
    assert (
        exit_code(
            make_heatmap, [tmp_path / "in", "--output", tmp_path / "out", "--checkpoint", tiny_checkpoint, "--colorbar"]
        )
        == 0
    )
    page = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    with open(tmp_path / "out" / "summary.csv", newline="", encoding="utf-8") as f:
        (row,) = csv.DictReader(f)
    assert f">{float(row['stops']):+.2f}<" in page  # the sign always shown: + more light, - less
    assert "a_colorbar.png" in page and "with colour bar" in page
    assert "% raw clipped" not in page and 'data-key="error"' not in page  # empty for every photo: not shown
    assert "How far to trust" not in page  # a checkpoint nobody measured gets no statement


def test_the_trust_statement_is_where_users_look(tmp_path, capsys):
    # issue 28: README, the printed table's footer and the top of index.html say how far to trust the shipped model,
    # with the figures bench/accuracy.py --plain wrote to checkpoints/trust.txt
    from pieanet.models import DEFAULT_CHECKPOINT, DEFAULT_ONNX
    from pieanet.utils.shipped import TRUST_FILE, trust_statement

    text = TRUST_FILE.read_text(encoding="utf-8").strip()
    assert "stops" in text and " % " in text
    assert text in " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert trust_statement(DEFAULT_CHECKPOINT) == trust_statement(DEFAULT_ONNX) == text
    assert trust_statement(tmp_path / "other.safetensors") == ""
    save_photo(tmp_path / "in" / "a.png")
    assert exit_code(make_heatmap, [tmp_path / "in", "--output", tmp_path / "out"]) == 0
    assert f"How far to trust these maps: {text}" in capsys.readouterr().out
    page = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert "How far to trust these maps" in page and "per pixel in stops" in page


def test_the_training_quick_start_uses_no_sample_photo_and_no_download():
    # issue 28: the default synthetic set was made of the scenes of img_to_pred/; the quick start picks two others
    from pieanet.datasets import synthetic
    from pieanet.training.run import resolve_config

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "--scenes motorcycle hopper --val-scenes hopper" in readme and "--config pieanet_quick" in readme
    scenes = synthetic.default_scenes()
    chosen = synthetic.chosen_scenes(scenes, ["motorcycle", "hopper"])
    samples = {path.stem for path in (ROOT / "img_to_pred").glob("*.jpg")}
    assert set(chosen) == {"motorcycle", "hopper"} and not samples & {p.stem for ps, _ in chosen.values() for p in ps}
    with pytest.raises(ValueError, match="--scenes nowhere"):
        synthetic.chosen_scenes(scenes, ["nowhere"])
    assert resolve_config("pieanet_quick")["data"]["root"] == "data/quick"
