"""Photos with transparency (issue 28, utils/alpha.py): transparent pixels are not judged, the opaque subject's verdict
is that of the same subject without the alpha channel, and --alpha composite keeps the behaviour before (over white).
The cut-outs are a sample photo with an alpha ellipse."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, exit_code
from pieanet import make_heatmap, runtime, score
from pieanet.models import DEFAULT_CHECKPOINT, load_model
from pieanet.utils.alpha import judged_photo
from pieanet.utils.heatmap import NOT_JUDGED_GREYS
from pieanet.utils.image_io import load_image
from pieanet.scoring.regions import Regions
from pieanet.scoring.rules import load_rules

SAMPLE = ROOT / "img_to_pred" / "chelsea.jpg"


def ellipse(height, width):
    yy, xx = np.mgrid[:height, :width]
    return ((yy - height / 2) / (0.4 * height)) ** 2 + ((xx - width / 2) / (0.35 * width)) ** 2 <= 1


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The opaque sample, its cut-out keeping the photo under the mask, its cut-out over flat white (what cut-out
    tools write), and the subject mask."""
    folder = tmp_path_factory.mktemp("alpha")
    rgb = np.asarray(Image.open(SAMPLE).convert("RGB"))
    inside = ellipse(*rgb.shape[:2])
    alpha = np.where(inside, 255, 0).astype(np.uint8)[..., None]
    Image.fromarray(rgb).save(folder / "opaque.png")
    Image.fromarray(np.concatenate([rgb, alpha], axis=2), "RGBA").save(folder / "masked.png")
    white = np.where(inside[..., None], rgb, 255).astype(np.uint8)
    Image.fromarray(np.concatenate([white, alpha], axis=2), "RGBA").save(folder / "cutout.png")
    return folder, inside


def heatmaps(folder, out, *options):
    assert (
        exit_code(
            make_heatmap,
            [
                folder / "opaque.png",
                folder / "masked.png",
                folder / "cutout.png",
                "--output",
                out,
                "--save-npy",
                "--no-report",
                *options,
            ],
        )
        == 0
    )
    with open(out / "summary.csv", newline="", encoding="utf-8") as f:
        rows = {row["file"]: row for row in csv.DictReader(f)}
    return rows, {name: np.load(out / f"{name}_residual.npy") for name in ("opaque", "masked", "cutout")}


@pytest.mark.slow
def test_the_subjects_verdict_and_the_transparent_area_left_out(photos, tmp_path):
    folder, inside = photos
    rows, maps = heatmaps(folder, tmp_path / "out")
    subject = {name: float(residual[inside].mean()) for name, residual in maps.items()}
    # the same subject without the alpha channel: within 0.02 mean r
    assert abs(subject["masked"] - subject["opaque"]) <= 0.02
    # a flat white surround (a cut-out tool's): judged over a neutral fill, far closer than over white
    assert abs(subject["cutout"] - subject["opaque"]) <= 0.1
    for name in ("masked", "cutout"):  # summary.csv: the subject's numbers only
        assert float(rows[f"{name}.png"]["mean_residual"]) == pytest.approx(subject[name], abs=1e-6)
        r = maps[name][inside]
        assert float(rows[f"{name}.png"]["pct_over"]) == pytest.approx(100 * np.mean(r < -0.1), abs=1e-6)
    with Image.open(tmp_path / "out" / "cutout_exposure.png") as img:
        drawn = np.asarray(img.convert("RGB"))
    outside = drawn[~inside]
    assert np.isin(outside, NOT_JUDGED_GREYS).all() and (outside[:, 0] == outside[:, 1]).all()  # grey checkerboard
    # --alpha composite: the photo over white, transparent pixels judged, as before issue 28
    rows, composite = heatmaps(folder, tmp_path / "composite", "--alpha", "composite")
    (over_white,) = runtime.predict(load_model(DEFAULT_CHECKPOINT), [load_image(folder / "cutout.png")])
    # make_heatmap runs the shipped network without torch (models/torch_free.py): the torch path's map to 1e-4
    np.testing.assert_allclose(composite["cutout"], over_white, atol=1e-4)
    assert float(rows["cutout.png"]["mean_residual"]) == pytest.approx(float(over_white.mean()), abs=1e-6)
    assert abs(float(composite["cutout"][inside].mean()) - subject["opaque"]) > 0.2  # what issue 28 reported


@pytest.mark.slow
def test_score_leaves_the_transparent_area_out(photos, capsys):
    folder, inside = photos
    assert exit_code(score, ["--rules", "ecommerce", "--json", folder / "masked.png"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    model, rules = load_model(DEFAULT_CHECKPOINT), load_rules("ecommerce")
    photo = load_image(folder / "opaque.png")
    (residual,) = runtime.predict(model, [photo])
    expected = rules.score(residual, Regions(photo, residual.shape), photo, not_judged=~inside)
    assert result["score"] == expected["score"]
    for got, want in zip(result["criteria"], expected["criteria"]):
        assert got.get("value") == pytest.approx(want.get("value")) and got["region_fraction"] <= inside.mean()


def test_what_the_model_is_shown():
    rgb = np.random.default_rng(0).uniform(0, 1, (6, 8, 3)).astype(np.float32)
    alpha = np.zeros((6, 8), np.float32)
    alpha[1:5, 2:6] = 1.0
    alpha[1, 2] = 0.6  # judged, partly fill
    alpha[4, 5] = 0.4  # not judged
    kept, mask = judged_photo(np.dstack([rgb, alpha]))  # the photo's colours under the mask: shown as they are
    np.testing.assert_array_equal(kept, rgb)
    assert mask.tolist() == (alpha < 0.5).tolist()
    white = np.where((alpha > 0)[..., None], rgb, 1.0)
    shown, mask = judged_photo(np.dstack([white, alpha]))  # one flat colour there: the judged pixels' mean instead
    weight = np.where(alpha >= 0.5, alpha, 0)
    fill = (rgb * weight[..., None]).sum(axis=(0, 1)) / weight.sum()
    np.testing.assert_allclose(shown[0, 0], fill, rtol=1e-5)
    np.testing.assert_allclose(shown[1, 2], 0.6 * rgb[1, 2] + 0.4 * fill, rtol=1e-5)
    np.testing.assert_allclose(shown[2, 3], rgb[2, 3])
    with pytest.raises(ValueError, match="transparent"):
        judged_photo(np.dstack([rgb, np.full((6, 8), 0.2, np.float32)]))
    opaque, mask = judged_photo(np.dstack([rgb, np.ones((6, 8), np.float32)]))
    assert mask is None and np.array_equal(opaque, rgb)
