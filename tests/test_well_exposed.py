"""evaluate.py --well-exposed on hand-made folders: photos that are their own ideal, judged by baselines whose maps are
known in closed form (models/baselines.py)."""

import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

from pieanet import evaluate
from pieanet.utils import well_exposed

# global_midgray takes a flat photo of grey g to mid-grey 0.5 exactly: r = 0.5 - g / 255 everywhere
MID = 0.5 - 128 / 255  # -0.00196: well exposed
BRIGHT = 0.5 - 230 / 255  # -0.40196: every pixel over-exposed
LIGHT = 0.5 - 145 / 255  # -0.06863: no pixel beyond 0.1, but the mean is beyond 0.05
# mertens: |r| = 1 - exp(-(g - 0.5)^2 / (2 * 0.2^2)), positive where g < 0.5: 0.95606 for black and for white
MERTENS_EXTREME = 1 - math.exp(-0.25 / 0.08)


def flat(path, grey, shape=(20, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*shape, 3), grey, np.uint8)).save(path)


def striped(path):
    """20 x 30: the top 4 rows black, the next 4 white, the rest mid-grey 128: 40 % of the pixels at an extreme,
    the two extremes cancelling in the mean."""
    image = np.full((20, 30, 3), 128, np.uint8)
    image[:4] = 0
    image[4:8] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


@pytest.fixture
def keyed(tmp_path):
    """DIR/images with three flat photos and a manifest giving their keys (the development set's layout)."""
    root = tmp_path / "keyed"
    flat(root / "images" / "grey.png", 128)
    flat(root / "images" / "bright.png", 230)
    flat(root / "images" / "light.png", 145)
    (root / "manifest.csv").write_text(
        "file,licence,key\ngrey.png,CC0,normal\nbright.png,CC0,high\nlight.png,CC0,normal\n"
    )
    return root


def run(args, tmp_path, name="out"):
    out = tmp_path / name
    code = evaluate.main([str(a) for a in args] + ["--output", str(out), "--json", str(out / "m.json")])
    payload = json.loads((out / "m.json").read_text()) if (out / "m.json").is_file() else None
    rows = list(csv.DictReader(open(out / well_exposed.CSV_NAME))) if (out / well_exposed.CSV_NAME).is_file() else None
    return code, payload, rows


def test_mid_grey_is_well_exposed_and_bright_or_light_photos_are_flagged_per_key(keyed, tmp_path, capsys):
    code, payload, rows = run(["--well-exposed", keyed, "--baselines", "global_midgray", "zero"], tmp_path)
    assert code == 0
    midgray = payload["methods"]["baseline: global_midgray"]
    assert (midgray["n_images"], midgray["n_flagged"]) == (3, 2)
    assert midgray["false_alarm_pct"] == pytest.approx(200 / 3)
    assert midgray["per_key"] == {
        "high": {"n_images": 1, "n_flagged": 1, "false_alarm_pct": 100.0, "median_pct_flagged": 100.0},
        "normal": {"n_images": 2, "n_flagged": 1, "false_alarm_pct": 50.0, "median_pct_flagged": 0.0},
    }
    assert midgray["median_pct_flagged"] == 0.0  # flagged pixels: 100 %, 0 %, 0 %
    zero = payload["methods"]["baseline: zero"]  # r = 0 everywhere: nothing can be flagged
    assert zero["n_flagged"] == 0 and zero["false_alarm_pct"] == 0.0
    assert payload["criterion"] == {"threshold": 0.1, "share_limit_pct": 10.0, "mean_limit": 0.05}
    # the per-photo table: every method x photo, files in folder order, numbers hand-computed above
    assert [(r["method"], r["file"], r["key"], r["flagged"]) for r in rows[:3]] == [
        ("baseline: global_midgray", "bright.png", "high", "yes"),
        ("baseline: global_midgray", "grey.png", "normal", "no"),
        ("baseline: global_midgray", "light.png", "normal", "yes"),
    ]
    bright, grey, light = rows[:3]
    assert float(bright["mean_residual"]) == pytest.approx(BRIGHT, abs=1e-5)
    assert (float(bright["pct_flagged"]), float(bright["pct_over"]), float(bright["pct_under"])) == (100, 100, 0)
    assert float(grey["mean_residual"]) == pytest.approx(MID, abs=1e-5) and float(grey["pct_flagged"]) == 0
    assert float(light["mean_residual"]) == pytest.approx(LIGHT, abs=1e-5) and float(light["pct_flagged"]) == 0
    assert len(rows) == 6 and all(r["flagged"] == "no" for r in rows[3:])
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temporary file left
    out = capsys.readouterr().out
    assert "| baseline: global_midgray | 3 | 66.7 % | 100.0 % | 50.0 % | 0.0 % |" in out
    assert "flagged (high)" in out and "flagged (normal)" in out


def test_each_limit_is_an_option(keyed, tmp_path):
    striped(tmp_path / "striped" / "s.png")
    _, payload, rows = run(["--well-exposed", tmp_path / "striped", "--baseline", "mertens"], tmp_path, "default")
    assert rows[0]["flagged"] == "yes" and float(rows[0]["pct_flagged"]) == 40.0  # 40 % of pixels at 0.956
    assert float(rows[0]["pct_over"]) == 20.0 and float(rows[0]["pct_under"]) == 20.0
    assert abs(float(rows[0]["mean_residual"])) < 1e-3 and payload["methods"]["baseline: mertens"]["per_key"] == {}
    _, _, rows = run(
        ["--well-exposed", tmp_path / "striped", "--baseline", "mertens", "--share-limit", "40"], tmp_path, "share"
    )
    assert rows[0]["flagged"] == "no"  # at most 40 %
    _, _, rows = run(
        ["--well-exposed", tmp_path / "striped", "--baseline", "mertens", "--threshold", "0.96"], tmp_path, "threshold"
    )
    assert MERTENS_EXTREME < 0.96 and rows[0]["flagged"] == "no" and float(rows[0]["pct_flagged"]) == 0
    _, _, rows = run(
        ["--well-exposed", keyed, "--baseline", "global_midgray", "--mean-limit", "0.07"], tmp_path, "mean"
    )
    assert {r["file"]: r["flagged"] for r in rows} == {"bright.png": "yes", "grey.png": "no", "light.png": "no"}
    _, _, rows = run(
        ["--well-exposed", keyed, "--baseline", "global_midgray", "--mean-limit", "0.5"], tmp_path, "mean_only"
    )
    assert {r["file"]: r["flagged"] for r in rows}["bright.png"] == "yes"  # still 100 % of its pixels


def test_bad_photos_and_missing_ones_are_named_and_the_rest_measured(keyed, tmp_path, capsys):
    (keyed / "images" / "broken.png").write_bytes(b"not a png")
    with open(keyed / "manifest.csv", "a") as f:
        f.write("gone.png,CC0,low\n")
    code, payload, rows = run(["--well-exposed", keyed, "--baseline", "global_midgray"], tmp_path)
    assert code == 1
    assert sorted(payload["failed"]) == ["broken.png", "gone.png"] and payload["n_samples"] == 5
    assert payload["methods"]["baseline: global_midgray"]["n_images"] == 3 and len(rows) == 3
    err = capsys.readouterr().err
    assert "broken.png" in err and "lists gone.png" in err


@pytest.mark.parametrize("args, message", [(["--data-root", "x", "--csv", "y.csv"], "without --data-root"), ([], None)])
def test_modes_exclude_each_other(keyed, capsys, args, message):
    with pytest.raises(SystemExit) as info:
        evaluate.main((["--well-exposed", str(keyed)] if message else []) + args + ["--baseline", "zero"])
    assert info.value.code == 2
    assert (message or "--well-exposed DIR") in capsys.readouterr().err


def test_a_missing_folder_or_a_manifest_without_file_column_is_one_line(tmp_path, capsys):
    assert evaluate.main(["--well-exposed", str(tmp_path / "nowhere"), "--baseline", "zero"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("evaluate: ") and "nowhere: no such folder" in line
    flat(tmp_path / "f" / "a.png", 128)
    (tmp_path / "f" / "manifest.csv").write_text("name,key\na.png,normal\n")
    assert evaluate.main(["--well-exposed", str(tmp_path / "f"), "--baseline", "zero"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "manifest.csv: no 'file' column" in line


@pytest.mark.parametrize("value", ["-1", "101", "nan"])
def test_share_limit_is_a_percentage(keyed, capsys, value):
    with pytest.raises(SystemExit):
        evaluate.main(["--well-exposed", str(keyed), "--baseline", "zero", "--share-limit", value])
    assert "--share-limit" in capsys.readouterr().err


def test_verdict_counts_pixels_exactly_at_the_limit():
    r = np.zeros((10, 10), np.float32)
    r[0, :] = 0.5  # 10 % of the pixels: at most 10 %, judged well exposed if the mean is within 0.05
    assert well_exposed.verdict(r)["mean_residual"] == pytest.approx(0.05)
    assert not well_exposed.verdict(r)["flagged"]
    r[1, 0] = 0.2  # 11 %
    assert well_exposed.verdict(r, mean_limit=1)["flagged"]


@pytest.mark.parametrize(
    "content, message",
    [
        (
            b"\xef\xbb\xbf file , key\n a.png , night\n",
            None,
        ),  # a byte-order mark and spaces: read as the split lists are
        (b"file,key,file\na.png,night,b.png\n", r"column\(s\) file appear more than once; expected one of each"),
        (b"file,key\n\xff\xfe.png,night\n", r"not a UTF-8 CSV \(.+\); expected a manifest with columns file, key"),
    ],
)
def test_a_manifest_header_is_read_as_a_split_lists_is(tmp_path, content, message):
    (tmp_path / "manifest.csv").write_bytes(content)
    if message is None:
        assert well_exposed.read_manifest(tmp_path / "manifest.csv") == ({"a.png": "night"}, ["a.png"])
        return
    with pytest.raises(well_exposed.FolderError, match=r"manifest\.csv: " + message):
        well_exposed.read_manifest(tmp_path / "manifest.csv")
