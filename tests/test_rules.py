import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data

from pieanet import score
from pieanet.scoring.regions import Regions
from pieanet.scoring.rules import MEASURES, RULES_DIR, RuleError, explain, load_rules

SHAPE = (100, 100)
SHIPPED = sorted(RULES_DIR.glob("*.yaml"))


class FixedRegions:
    """Hand-made region masks; the regions not given are empty (background = complement of subject)."""

    def __init__(self, **masks):
        self.masks = masks

    def mask(self, name):
        if name == "all":
            return np.ones(SHAPE, bool)
        if name == "background" and "background" not in self.masks:
            return ~self.mask("subject")
        return self.masks.get(name, np.zeros(SHAPE, bool))


def residual_with(fraction, value, r=None):
    """A residual map whose first ``fraction`` of pixels (row-major) equal ``value``."""
    r = np.zeros(SHAPE, np.float32) if r is None else r
    r.flat[: round(fraction * r.size)] = value
    return r


def quadrant():
    m = np.zeros(SHAPE, bool)
    m[:50, :50] = True
    return m


GREY = np.full(SHAPE + (3,), 128 / 255, np.float32)  # a mid-grey photo for the measures that read the photo


def test_shipped_rule_files_load():
    assert {p.stem for p in SHIPPED} >= {"portrait", "landscape", "street", "night", "ecommerce"}
    for path in SHIPPED:
        rules = load_rules(path.stem)
        assert rules.criteria and rules.source == str(path)


@pytest.mark.parametrize(
    "over, under, expected",
    [(0.0, 0.0, 100), (0.02, 0.0, 100), (0.03, 0.0, 80), (0.0, 0.15, 55), (0.35, 0.0, 45), (0.45, 0.0, 40)],
)
def test_landscape_extent_table(over, under, expected):
    # most pixels keep r = 0, so the median correction is 0 stops and the extent decides
    r = residual_with(over, -0.5)
    r.flat[r.size - round(under * r.size) :] = 0.5  # under-exposed pixels at the other end
    result = load_rules("landscape").score(r, FixedRegions(), GREY)
    assert result["score"] == expected
    highlights = result["criteria"][0]
    assert highlights["value"] == pytest.approx(over)


def test_landscape_explanation_names_row_and_fraction():
    result = load_rules("landscape").score(residual_with(0.03, -0.5), FixedRegions(), GREY)
    assert explain(result)[0] == "highlights: over in all = 3.0 % -> row 2 (<= 5.0 %) -> 80"


def test_threshold_decides_what_counts():
    r = residual_with(0.4, -0.15)
    assert load_rules("landscape").score(r, FixedRegions(), GREY)["score"] == 45
    assert load_rules("landscape").score(r, FixedRegions(), GREY, threshold=0.2)["score"] == 100


def test_portrait_weights_face_over_background():
    face = quadrant()
    r = np.zeros(SHAPE, np.float32)
    r[:5, :50] = 0.4  # 10 % of the face under-exposed -> 75
    r[50:, :] = -0.5  # the background (everything but the face) 2/3 over-exposed -> 65
    result = load_rules("portrait").score(r, FixedRegions(faces=face, subject=face), GREY)
    rows = {c["name"]: c for c in result["criteria"]}
    assert rows["face"]["score"] == 75 and rows["background"]["score"] == 65
    assert rows["face correction"]["value"] == 0.0 and rows["face correction"]["score"] == 100  # the median pixel
    assert "skipped" in rows["body"]  # no body region
    assert result["score"] == pytest.approx((3 * 75 + 3 * 100 + 65) / 7)


def test_portrait_without_a_face_judges_the_subject():
    subject = quadrant()
    r = residual_with(0.02, 0.5)  # first two rows: 100 of the subject's 2500 pixels (4 %) under-exposed -> 90
    result = load_rules("portrait").score(r, FixedRegions(subject=subject), GREY)
    face = result["criteria"][0]
    assert face["region"] == "subject" and face["value"] == pytest.approx(0.04) and face["score"] == 90


def test_street_tolerates_shadows_not_highlights():
    rules = load_rules("street")
    regions = FixedRegions(subject=quadrant())
    shadows = np.zeros(SHAPE, np.float32)
    shadows[60:, :] = 0.5  # 40 % under-exposed, away from the subject
    assert rules.score(shadows, regions, GREY)["score"] == 85
    assert load_rules("landscape").score(shadows, regions, GREY)["score"] == 45
    assert rules.score(-shadows, regions, GREY)["score"] == 45


def test_night_tolerates_darkness_penalises_glare():
    lights = np.zeros(SHAPE, bool)
    lights[10:20, 10:20] = True
    dark = np.zeros(SHAPE, np.float32)
    dark[:70] = 0.5
    dark[lights] = 0.0  # 69 % under-exposed: 80 for night
    rules = load_rules("night")
    assert rules.score(dark, FixedRegions(lights=lights))["score"] == 80
    glare = dark.copy()
    glare[10:20, 10:18] = -0.6  # 80 % of the halo washed out
    result = rules.score(glare, FixedRegions(lights=lights))
    assert result["score"] == 40 and result["criteria"][1]["value"] == pytest.approx(0.8)
    assert "skipped" in rules.score(dark, FixedRegions())["criteria"][1]  # no light sources found


def test_ecommerce_allows_white_background_not_uneven_product():
    product = quadrant()
    r = np.where(product, 0.0, -0.6).astype(np.float32)  # bright white background
    rules = load_rules("ecommerce")
    assert rules.score(r, FixedRegions(subject=product))["score"] == 100
    uneven = r.copy()
    uneven[:50, :25] = 0.08  # half the product a bit dark, half a bit bright: within threshold, std 0.08
    uneven[:50, 25:50] = -0.08
    result = rules.score(uneven, FixedRegions(subject=product))
    assert result["score"] == 85 and result["criteria"][1]["value"] == pytest.approx(0.08)


def test_stops_measures_read_the_correction_the_map_implies():
    # a grey 64 photo whose map raises it to 128: +2.0739 stops (hand-computed in test_exposure.py)
    photo = np.full(SHAPE + (3,), 64 / 255, np.float32)
    r = np.full(SHAPE, 64 / 255, np.float32)
    values = {
        m: MEASURES[m][0](r.ravel(), photo.reshape(-1, 3), 0.1) for m in ("stops_under", "stops_over", "stops_off")
    }
    assert values == pytest.approx({"stops_under": 2.0739, "stops_over": 0.0, "stops_off": 2.0739}, abs=1e-3)
    values = {m: MEASURES[m][0](-r.ravel(), photo.reshape(-1, 3), 0.1) for m in ("stops_under", "stops_over")}
    assert values["stops_under"] == 0.0 and values["stops_over"] > 4  # 64 - 64: clamped at half a code value
    white = np.ones((4, 3), np.float32)  # every pixel clipped: nothing to correct
    assert MEASURES["stops_off"][0](np.full(4, -0.5, np.float32), white, 0.1) == 0.0
    with pytest.raises(ValueError, match="needs the photo"):
        load_rules("landscape").score(r, FixedRegions())


def test_a_map_slightly_off_everywhere_is_not_scored_as_a_disaster():
    # the shipped model flags most pixels of well-exposed photos by a little (|r| just over the 0.1 threshold):
    # a grey 128 photo with r = -0.12 everywhere asks for 128 -> 97.4, log2(lin(97.4) / lin(128)) =
    # log2(0.120614 / 0.215861) = -0.840 stops; every pixel over the threshold
    r = np.full(SHAPE, -0.12, np.float32)
    scores = {
        name: load_rules(name).score(r, FixedRegions(subject=quadrant()), GREY)["score"]
        for name in ("landscape", "street", "portrait")
    }
    # landscape: extent 100 % -> 40, too bright 0.84 stops -> 60; street: highlights 40, too bright 60, subject 40;
    # portrait: face 40 (x3), face correction 60 (x3), background 45 (body: none) -> 345 / 7
    assert scores == pytest.approx({"landscape": 40, "street": 40, "portrait": (3 * 40 + 3 * 60 + 45) / 7})
    # ... while a map asking for over 2 stops less light still scores 10: grey 200 -> 47 is -4.35 stops
    bright = np.full(SHAPE + (3,), 200 / 255, np.float32)
    far = load_rules("landscape").score(np.full(SHAPE, -0.6, np.float32), FixedRegions(), bright)
    assert far["score"] == 10 and far["criteria"][2]["value"] == pytest.approx(4.345, abs=1e-2)


def write(tmp_path, text):
    path = tmp_path / "rule.yaml"
    path.write_text(text)
    return path


GOOD_TABLE = "    table:\n      - {max: 0.1, score: 100}\n      - {score: 0}\n"


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "criteria:\n  - region: all\n    measure: brightness\n" + GOOD_TABLE,
            r":3: criteria\[0\]\.measure: unknown value",
        ),
        (
            "criteria:\n  - measure: over\n    region: sky\n" + GOOD_TABLE,
            r":3: criteria\[0\]\.region: unknown value 'sky'",
        ),
        (
            "criteria:\n  - measure: over\n" + GOOD_TABLE + "    colour: red\n",
            r":6: criteria\[0\]\.colour: unknown key",
        ),
        (
            "criteria:\n  - measure: over\n    table:\n      - {max: 0.2, score: 100}\n      - {max: 0.1, score: 50}\n"
            "      - {score: 0}\n",
            r":5: criteria\[0\]\.table\[1\]\.max: rows must be in increasing order",
        ),
        (
            "criteria:\n  - measure: over\n    table:\n      - {max: 0.1, score: 100}\n",
            r":4: criteria\[0\]\.table\[0\]: the last row must leave out 'max'",
        ),
        (
            "criteria:\n  - measure: over\n    table:\n      - {max: 0.1, score: 150}\n      - {score: 0}\n",
            r":4: criteria\[0\]\.table\[0\]\.score: 150 is outside",
        ),
        (
            "criteria:\n  - measure: over\n    weight: heavy\n" + GOOD_TABLE,
            r":3: criteria\[0\]\.weight: expected a number",
        ),
        ("criteria:\n  - measure: over\n    weight: 0\n" + GOOD_TABLE, r":3: criteria\[0\]\.weight: must be above 0"),
        ("combine: max\ncriteria:\n  - measure: over\n" + GOOD_TABLE, r":1: combine: unknown value 'max'"),
        ("name: x\ncriteria:\n  - region: all\n" + GOOD_TABLE, r":3: criteria\[0\]: missing key 'measure'"),
        ("name: x\n", r":1: top level: missing key 'criteria'"),
        ("criteria: [\n  - a", r":2: not valid YAML"),
    ],
)
def test_malformed_rule_file_names_key_and_line(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(RuleError, match=expected) as error:
        load_rules(path)
    assert str(error.value).startswith(str(path))


def test_unknown_rule_name_lists_shipped():
    with pytest.raises(RuleError, match="landscape"):
        load_rules("no-such-genre")


def test_regions_find_face_lights_and_product():
    astronaut = skimage_data.astronaut().astype(np.float32) / 255
    regions = Regions(astronaut)
    assert len(regions.faces) == 1
    face = regions.mask("faces")
    assert face[100:140, 200:260].all() and not face[400:, :].any()  # Eileen Collins' face, not her suit
    assert regions.mask("people")[300, 230] and regions.mask("subject").sum() == regions.mask("people").sum()

    night = np.full((120, 160, 3), 0.05, np.float32)
    night[30:33, 40:43] = 1.0
    night[80:84, 120:124] = 1.0
    night[100:, :60] = 1.0  # a large bright area is not a point light
    regions = Regions(night)
    lights = regions.mask("lights")
    assert regions.n_lights == 2 and lights[31, 41] and lights[82, 122] and not lights[60, 80]

    product = np.ones((90, 120, 3), np.float32)
    product[30:60, 40:80] = (0.6, 0.2, 0.1)
    subject = Regions(product, shape=(180, 240)).mask("subject")
    assert subject.shape == (180, 240) and subject[60:120, 80:160].all() and subject.mean() == pytest.approx(1 / 9)


def test_score_cli(tiny_checkpoint, tmp_path, capsys):
    Image.fromarray(np.full((48, 64, 3), 200, np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    code = score.main(["--rules", "landscape", str(tmp_path), "--checkpoint", str(tiny_checkpoint), "--json"])
    out, err = capsys.readouterr()
    assert code == 1 and "broken.jpg" in err and len(err.strip().splitlines()) == 1
    (result,) = json.loads(out)
    assert Path(result["file"]).name == "a.png" and 10 <= result["score"] <= 100
    assert [c["name"] for c in result["criteria"]] == ["highlights", "shadows", "too bright", "too dark"]

    assert score.main(["--rules", "night", str(tmp_path / "a.png"), "--checkpoint", str(tiny_checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "a.png: " in out and "/100 (night" in out and "darkness: under in all = " in out

    assert score.main(["--rules", "landscape", str(tmp_path), "--checkpoint", str(tmp_path / "missing.pth")]) == 2
    assert "missing.pth" in capsys.readouterr().err


def test_the_stops_of_a_region_are_computed_once_for_all_its_stops_measures(tmp_path, monkeypatch):
    from pieanet.scoring import rules as rules_module

    (tmp_path / "three.yaml").write_text(
        "name: three\ndescription: every stops measure of one region\ncriteria:\n"
        + "".join(
            f"  - {{name: {m}, region: all, measure: {m}, table: [{{max: 1, score: 100}}, {{score: 0}}]}}\n"
            for m in ("stops_under", "stops_over", "stops_off")
        )
    )
    calls, real = [], rules_module.correction_stops
    monkeypatch.setattr(rules_module, "correction_stops", lambda *a: calls.append(1) or real(*a))
    photo = np.full(SHAPE + (3,), 64 / 255, np.float32)  # raised to 128 by the map: +2.0739 stops (test above)
    residual = np.full(SHAPE, 64 / 255, np.float32)
    result = load_rules(str(tmp_path / "three.yaml")).score(residual, FixedRegions(), photo)
    assert [c["value"] for c in result["criteria"]] == pytest.approx([2.0739, 0.0, 2.0739], abs=1e-3)
    assert len(calls) == 1
