"""bench/references.py: what the development sets' labels say as a function of brightness, on hand-computed cases."""

import importlib.util
import json

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT

spec = importlib.util.spec_from_file_location("references", ROOT / "bench" / "references.py")
references = importlib.util.module_from_spec(spec)
spec.loader.exec_module(references)


def test_a_decreasing_curve_is_its_own_fit():
    curve, explained = references.brightness_curve([150, 50, 100], [-0.2, 0.3, 0.1])
    assert explained == pytest.approx(1.0)
    assert curve(125) == pytest.approx(-0.05) and curve(10) == pytest.approx(0.3) and curve(250) == pytest.approx(-0.2)
    assert references.zero_crossing(curve) == pytest.approx(100 + 50 / 3, abs=0.1)  # 0.1 at 100, -0.2 at 150


def test_a_rising_pair_is_pooled_to_its_mean():
    curve, explained = references.brightness_curve([50, 100], [0.1, 0.3])
    assert curve(50) == pytest.approx(0.2) and curve(100) == pytest.approx(0.2) and explained == pytest.approx(0.0)
    assert references.zero_crossing(curve) is None


def test_photos_flagged_by_a_curve_per_key():
    def curve(grey):
        return (120 - grey) / 400  # |r| > 0.05 outside mean greys 100..140

    photos = [("a", 90, "low"), ("b", 110, "normal"), ("c", 130, "normal"), ("d", 150, "high"), ("e", 141, None)]
    assert references.flagged_by_curve(curve, photos) == {"all": 60.0, "high": 100.0, "low": 100.0, "normal": 0.0}


def flat(path, grey, size=(12, 16)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size + (3,), grey, np.uint8)).save(path)


def test_the_command_on_hand_made_sets(tmp_path):
    for name, csv_name in references.LABELLED.items():
        root = tmp_path / name
        (root / "labels").mkdir(parents=True)
        rows = []
        for grey, label in ((40, 80.0), (100, 20.0), (128, 0.0)):  # grey levels: ideal 128 minus the frame
            flat(root / "images" / f"f{grey}.png", grey)
            np.save(root / "labels" / f"f{grey}.npy", np.full((12, 16), label, np.float32))
            rows.append(f"f{grey}.png")
        (root / csv_name).write_text("img_id\n" + "\n".join(rows) + "\n")
    for grey in (60, 124, 200):
        flat(tmp_path / "we" / "images" / f"p{grey}.png", grey)
    (tmp_path / "we" / "manifest.csv").write_text("file,key\np60.png,low\np124.png,normal\np200.png,high\n")
    out = tmp_path / "refs.json"
    assert (
        references.main(
            [
                "--real-brackets",
                str(tmp_path / "real_brackets"),
                "--human-ref",
                str(tmp_path / "human_ref"),
                "--well-exposed",
                str(tmp_path / "we"),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    for name in references.LABELLED:
        r = report[name]
        assert r["frames"] == 3 and r["judged_well_exposed_by_label"] == 1  # the frame at 128, label 0
        assert r["spearman_mean_grey_vs_mean_label"] == pytest.approx(-1.0)
        assert r["zero_crossing_grey"] == pytest.approx(128, abs=0.1)
        # the fit at 60: 80/255 + (20 - 80)/255 * 20/60 = 0.235 (flagged); at 124: 20/255 * 4/28 = 0.011; at 200: 0
        assert r["well_exposed_flagged_pct"] == {
            "all": pytest.approx(100 / 3),
            "high": 0.0,
            "low": 100.0,
            "normal": 0.0,
        }
