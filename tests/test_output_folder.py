"""One output folder over several make_heatmap runs: output names unique across runs (summary.csv's output column),
--resume against the stored names and settings, names that are not UTF-8, and a killed run's temporary files."""

import csv
import os
import shutil
import subprocess
import sys

import pytest
import torch

from pieanet import make_heatmap
from pieanet.models import build_model, save_model
from pieanet.heatmaps.outputs import output_stems
from pieanet.heatmaps.summary import SUMMARY_FIELDS, read_summary
from conftest import save_photo


def run(argv, capsys):
    code = make_heatmap.main([str(a) for a in argv] + ["--threads", "1"])
    out, err = capsys.readouterr()
    return code, out, err


def rows_of(folder):
    return read_summary(folder / "summary.csv")


def heatmap_alone(photo, folder, capsys, *options):
    """The bytes of the heatmap one run of ``photo`` alone, with ``options``, writes into a fresh folder."""
    code, _, err = run(["--input", photo, "--output", folder, "--no-report", *options], capsys)
    assert code == 0, err
    return next(folder.glob("*_exposure.*")).read_bytes()


def test_output_stems_are_unique_in_the_run_and_against_earlier_rows():
    files = ["a.jpg", "a.PNG", "sub/b.png", "x.png", "x.jpg", "x_png.bmp"]
    sources = [f"../in/{file}" for file in files]
    assert output_stems(files, sources) == ["a_jpg", "a_png", "sub/b", "x_png", "x_jpg", "x_png_bmp"]
    # earlier rows: sub/b and x_png_bmp belong to other photos, a_jpg to this run's a.jpg itself
    taken = {
        "sub/b": "../other/sub/b.png",
        "a_jpg": "../in/a.jpg",
        "X_PNG_BMP": "../elsewhere/x_png.bmp",
        "x_png_bmp_2": "../in/x_png.bmp",
    }
    assert output_stems(files, sources, taken) == ["a_jpg", "a_png", "sub/b_png", "x_png", "x_jpg", "x_png_bmp_2"]


def test_same_named_photos_of_two_runs_keep_their_own_outputs(tiny_checkpoint, tmp_path, capsys):
    jpg = save_photo(tmp_path / "in" / "a.jpg", seed=1)
    png = save_photo(tmp_path / "in" / "a.png", seed=2, height=20)
    expected = {
        "a_exposure.png": heatmap_alone(jpg, tmp_path / "jpg", capsys, "--checkpoint", tiny_checkpoint),
        "a_png_exposure.png": heatmap_alone(png, tmp_path / "png", capsys, "--checkpoint", tiny_checkpoint),
    }
    out = tmp_path / "out"
    for photo in (jpg, png):
        code, _, err = run(["--input", photo, "--output", out, "--checkpoint", tiny_checkpoint], capsys)
        assert code == 0, err
    assert {name: (out / name).read_bytes() for name in expected} == expected
    assert [(row["file"], row["output"]) for row in rows_of(out)] == [("a.jpg", "a"), ("a.png", "a_png")]
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "not found" not in page and 'src="a_exposure.png"' in page and 'src="a_png_exposure.png"' in page

    os.utime(out / "a_exposure.png", ns=(10**9, 10**9))
    code, printed, err = run(["--input", jpg, "--output", out, "--checkpoint", tiny_checkpoint, "--resume"], capsys)
    assert code == 0 and "1 already done, skipped (--resume)" in printed, err
    assert (out / "a_exposure.png").stat().st_mtime_ns == 10**9
    assert (out / "a_exposure.png").read_bytes() == expected["a_exposure.png"]


def test_two_input_folders_with_the_same_names_share_an_output_folder(tiny_checkpoint, tmp_path, capsys):
    first = save_photo(tmp_path / "first" / "sub" / "x.png", seed=3)
    second = save_photo(tmp_path / "second" / "sub" / "x.png", seed=4, width=40)
    expected = [
        heatmap_alone(photo, tmp_path / name, capsys, "--checkpoint", tiny_checkpoint)
        for photo, name in [(first, "one"), (second, "two")]
    ]
    out = tmp_path / "out"
    for folder in ("first", "second", "first"):  # the first folder again: its photo keeps its name
        code, _, err = run(
            ["--input", tmp_path / folder, "--recursive", "--output", out, "--checkpoint", tiny_checkpoint], capsys
        )
        assert code == 0, err
    assert [(out / "sub" / name).read_bytes() for name in ("x_exposure.png", "x_png_exposure.png")] == expected
    # the third run's row replaces the first run's (issue 28: one row per photo, the redone photo's row last)
    assert [(row["source"], row["output"]) for row in rows_of(out)] == [
        ("../second/sub/x.png", "sub/x_png"),
        ("../first/sub/x.png", "sub/x"),
    ]
    page = (out / "index.html").read_text(encoding="utf-8")
    assert page.count('<section class="photo"') == 2 and "not found" not in page
    assert 'src="../first/sub/x.png"' in page and 'src="../second/sub/x.png"' in page
    assert 'src="sub/x_exposure.png"' in page and 'src="sub/x_png_exposure.png"' in page


@pytest.mark.skipif(sys.platform != "linux", reason="file names that are not UTF-8 are a Linux thing")
def test_a_file_name_that_is_not_utf8_is_processed_and_the_run_goes_on(tiny_checkpoint, tmp_path, capsys):
    src = tmp_path / "in"
    save_photo(src / "a.png", seed=5)
    odd = os.fsdecode(os.fsencode(str(src)) + b"/bad\xff.png")
    save_photo(tmp_path / "plain.png", seed=6)
    shutil.copyfile(tmp_path / "plain.png", odd)
    save_photo(src / "z.png", seed=7)
    expected = heatmap_alone(tmp_path / "plain.png", tmp_path / "plain", capsys, "--checkpoint", tiny_checkpoint)
    out = tmp_path / "out"
    code, _, err = run(["--input", src, "--output", out, "--checkpoint", tiny_checkpoint], capsys)
    assert code == 0 and "Traceback" not in err, err
    text = (out / "summary.csv").read_bytes().decode("utf-8")  # still valid UTF-8 for every tool
    assert text.endswith("\n")
    assert [(row["file"], row["status"]) for row in rows_of(out)] == [
        ("a.png", "ok"),
        ("bad\\xff.png", "ok"),
        ("z.png", "ok"),
    ]
    assert (out / "bad\\xff_exposure.png").read_bytes() == expected
    (out / "index.html").read_bytes().decode("utf-8")
    code, printed, err = run(["--input", src, "--output", out, "--checkpoint", tiny_checkpoint, "--resume"], capsys)
    assert code == 0 and "3 already done, skipped (--resume)" in printed, err


@pytest.fixture(scope="module")
def other_checkpoint(tmp_path_factory, tiny_model_config):
    """Weights other than tiny_checkpoint's, of the same model."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("other") / "other.safetensors"
    save_model(path, build_model(tiny_model_config))
    return path


@pytest.mark.parametrize(
    "first, then, redone",
    [
        ([], ["--vmax", "0.3"], True),
        ([], ["--vmax", "image"], True),
        ([], ["--threshold", "0.2"], True),
        ([], ["--size", "64"], True),
        ([], ["--tile", "512"], True),
        ([], ["--raw-clipping"], True),
        (["--format", "jpg"], ["--format", "jpg", "--jpeg-quality", "50"], True),
        (["--format", "jpg"], ["--format", "jpg", "--jpeg-quality", "90"], False),  # 90 is the default
        ([], ["--checkpoint", "{other}"], True),
        ([], ["--checkpoint", "{copy}"], False),  # the same weights under another name
        ([], ["--backend", "torch"], False),  # what auto runs a .safetensors file with
        ([], ["--threads", "2", "--batch-size", "2"], False),
    ],
)
def test_resume_redoes_photos_made_with_other_settings(
    tiny_checkpoint, other_checkpoint, tmp_path, capsys, first, then, redone
):
    photo = save_photo(tmp_path / "in" / "a.png", seed=8)
    shutil.copyfile(tiny_checkpoint, tmp_path / "copy.safetensors")
    names = {"{other}": other_checkpoint, "{copy}": tmp_path / "copy.safetensors"}
    then = [names.get(option, option) for option in then]
    then = ([] if "--checkpoint" in then else ["--checkpoint", tiny_checkpoint]) + then
    out = tmp_path / "out"
    code, _, err = run(["--input", photo, "--output", out, "--checkpoint", tiny_checkpoint, *first], capsys)
    assert code == 0, err
    before = next(out.glob("a_exposure.*")).read_bytes()
    code, printed, err = run(["--input", photo, "--output", out, *then, "--resume"], capsys)
    assert code == 0, err
    assert ("1 of 1 images done" in printed) == redone and ("1 already done" in printed) == (not redone)
    (row,) = rows_of(out)  # one row per photo either way
    heatmap = next(out.glob("a_exposure.*")).read_bytes()
    assert heatmap == (heatmap_alone(photo, tmp_path / "fresh", capsys, *then) if redone else before)
    code, printed, _ = run(["--input", photo, "--output", out, *then, "--resume"], capsys)
    assert "1 already done" in printed and rows_of(out) == [row]  # a redone photo now counts as done


@pytest.mark.subprocess
def test_resume_removes_a_killed_runs_temporaries_in_the_output_folder_too(tiny_checkpoint, tmp_path, capsys):
    save_photo(tmp_path / "in" / "sub" / "a.png", seed=9)
    out = tmp_path / "out"
    argv = ["--input", tmp_path / "in", "--recursive", "--output", out, "--checkpoint", tiny_checkpoint]
    code, _, err = run(argv, capsys)
    assert code == 0, err
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    dead = [
        out / f".summary.{ended.pid}-0123abcd.tmp.csv",
        out / f".index.{ended.pid}-0123abcd.tmp.html",
        out / "sub" / f".a_exposure.{ended.pid}-0123abcd.tmp.png",
    ]
    alive = out / f".summary.{os.getpid()}-0123abcd.tmp.csv"  # a process still writing it
    for path in dead + [alive]:
        path.write_text("partial")
    code, printed, err = run(argv + ["--resume"], capsys)
    assert code == 0 and "1 already done" in printed, err
    assert [path.exists() for path in dead + [alive]] == [False, False, False, True]


def test_resume_tells_native_size_from_the_models_working_size(tiny_model_config, tmp_path, capsys):
    torch.manual_seed(2)
    checkpoint = tmp_path / "working.safetensors"
    save_model(checkpoint, build_model(dict(tiny_model_config, working_size=32)))
    photo = save_photo(tmp_path / "in" / "a.png", seed=11, height=48, width=64)
    out = tmp_path / "out"
    assert run(["--input", photo, "--output", out, "--checkpoint", checkpoint], capsys)[0] == 0
    code, printed, err = run(
        ["--input", photo, "--output", out, "--checkpoint", checkpoint, "--size", "native", "--resume"], capsys
    )
    assert code == 0 and "1 of 1 images done" in printed, err
    assert (out / "a_exposure.png").read_bytes() == heatmap_alone(
        photo, tmp_path / "fresh", capsys, "--checkpoint", checkpoint, "--size", "native"
    )


def test_outputs_of_earlier_settings_never_outlive_a_redone_photo(tiny_checkpoint, tmp_path, capsys):
    photo = save_photo(tmp_path / "in" / "a.png", seed=12)
    out, argv = tmp_path / "out", ["--input", photo, "--checkpoint", tiny_checkpoint]
    assert run([*argv, "--output", out, "--overlay"], capsys)[0] == 0
    assert run([*argv, "--output", out, "--vmax", "0.3", "--resume"], capsys)[0] == 0  # redone without an overlay
    assert not (out / "a_overlay.png").exists()
    code, printed, err = run([*argv, "--output", out, "--vmax", "0.3", "--overlay", "--resume"], capsys)
    assert code == 0 and "1 of 1 images done" in printed, err  # the overlay is missing, so the photo is redone
    assert run([*argv, "--output", tmp_path / "fresh", "--vmax", "0.3", "--overlay"], capsys)[0] == 0
    assert (out / "a_overlay.png").read_bytes() == (tmp_path / "fresh" / "a_overlay.png").read_bytes()


NEWER = ("stops", "photo_sha256", "output_kinds")


def older_summary(out):
    """summary.csv as make_heatmap wrote it before the stops, photo_sha256 and output_kinds columns: the same rows
    without them."""
    rows = rows_of(out)
    fields = [field for field in SUMMARY_FIELDS if field not in NEWER]
    with open(out / "summary.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return rows


def test_a_summary_from_before_the_stops_column_is_read_and_upgraded(tiny_checkpoint, tmp_path, capsys):
    first, second = save_photo(tmp_path / "in" / "a.png", seed=13), save_photo(tmp_path / "in" / "b.png", seed=14)
    out, argv = tmp_path / "out", ["--output", tmp_path / "out", "--checkpoint", tiny_checkpoint]
    assert run(["--input", first, *argv], capsys)[0] == 0
    (row_a,) = older_summary(out)
    # a plain run appends below the older rows, after rewriting the file with today's columns
    code, _, err = run(["--input", second, *argv], capsys)
    assert code == 0, err
    assert next(csv.reader(open(out / "summary.csv", newline=""))) == SUMMARY_FIELDS
    rows = rows_of(out)
    assert [row["file"] for row in rows] == ["a.png", "b.png"] and rows[0]["stops"] == "" != rows[1]["stops"]
    assert {k: v for k, v in rows[0].items() if k not in NEWER} == {k: v for k, v in row_a.items() if k not in NEWER}
    # --resume redoes the photo whose row lacks its stops and keeps the complete one
    code, printed, err = run(["--input", tmp_path / "in", *argv, "--resume"], capsys)
    assert code == 0 and "1 of 1 images done" in printed and "1 already done" in printed, err
    rows = rows_of(out)
    assert sorted(row["file"] for row in rows) == ["a.png", "b.png"] and all(row["stops"] != "" for row in rows)
    assert run(["--input", first, "--output", tmp_path / "fresh", "--checkpoint", tiny_checkpoint], capsys)[0] == 0
    (fresh,) = rows_of(tmp_path / "fresh")
    assert next(row for row in rows if row["file"] == "a.png")["stops"] == fresh["stops"]
