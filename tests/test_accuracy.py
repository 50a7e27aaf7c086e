"""bench/accuracy.py on three hand-made development sets: flat grey photos whose exact labels and maps are known."""

import importlib.util
import json

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT

spec = importlib.util.spec_from_file_location("accuracy", ROOT / "bench" / "accuracy.py")
accuracy = importlib.util.module_from_spec(spec)
spec.loader.exec_module(accuracy)

GREYS = {"dark": 40, "mid": 100, "bright": 220}  # labels: 128 - grey (a mid-grey ideal), in grey levels


def labelled_set(root, main, over=None, under=None):
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for name, grey in GREYS.items():
        Image.fromarray(np.full((16, 24, 3), grey, np.uint8)).save(root / "images" / f"{name}.png")
        np.save(root / "labels" / f"{name}.npy", np.full((16, 24), 128.0 - grey, np.float32))
    (root / main).write_text(
        "img_id,score\n" + "".join(f"{n}.png,{10 * (1 - abs(128 - g) / 255):.4f}\n" for n, g in GREYS.items())
    )
    if over:
        (root / over).write_text("img_id\nbright.png\n")
    if under:
        (root / under).write_text("img_id\ndark.png\nmid.png\n")
    return root


@pytest.fixture
def sets(tmp_path):
    real = labelled_set(tmp_path / "real", "real.csv", "real_over.csv", "real_under.csv")
    human = labelled_set(tmp_path / "human", "human_ref.csv", "human_ref_over.csv", "human_ref_under.csv")
    expert = labelled_set(tmp_path / "expert", "expert_retouch.csv")
    good = tmp_path / "good"
    (good / "images").mkdir(parents=True)
    for name, grey in (("a.png", 128), ("b.png", 250)):
        Image.fromarray(np.full((16, 24, 3), grey, np.uint8)).save(good / "images" / name)
    (good / "manifest.csv").write_text("file,key\na.png,normal\nb.png,high\n")
    return [
        "--real-brackets",
        str(real),
        "--human-ref",
        str(human),
        "--expert-retouch",
        str(expert),
        "--well-exposed",
        str(good),
    ]


def test_one_table_of_every_set_and_list(sets, tmp_path, capsys):
    code = accuracy.main(
        sets
        + [
            "--baselines",
            "zero",
            "local_midgray",
            "--json",
            str(tmp_path / "a.json"),
            "--markdown",
            str(tmp_path / "a.md"),
        ]
    )
    assert code == 0
    methods = json.loads((tmp_path / "a.json").read_text())["methods"]
    zero = methods["baseline: zero"]
    assert set(accuracy.LABELLED) == {"real_brackets", "human_ref", "expert_retouch"}
    for name, lists in accuracy.LABELLED.items():
        # zero map: MAE = mean |128 - grey| / 255 over the list's photos
        main = zero[name][lists[0]]
        assert main["mae"] == pytest.approx((88 + 28 + 92) / 255 / 3) and main["n_images"] == 3
        if len(lists) == 1:  # expert_retouch: one list
            continue
        over, under = (zero[name][csv_name] for csv_name in lists[1:])
        assert over["mae"] == pytest.approx(92 / 255) and over["n_images"] == 1
        assert under["mae"] == pytest.approx((88 + 28) / 255 / 2) and under["n_images"] == 2
    # local_midgray predicts a flat photo's mid-grey label exactly (up to 8-bit rounding)
    assert methods["baseline: local_midgray"]["human_ref"]["human_ref.csv"]["mae"] < 0.003
    # well_exposed: zero never flags; local_midgray flags the 250-grey photo (r = 0.5 - 250/255 = -0.48)
    assert zero["well_exposed"]["false_alarm_pct"] == 0.0
    local = methods["baseline: local_midgray"]["well_exposed"]
    assert local["false_alarm_pct"] == 50.0 and local["per_key"]["high"]["false_alarm_pct"] == 100.0
    # physics: the 250-grey photo is the only clipped one and it is not a labelled photo; nothing is crushed
    assert zero["real_brackets"]["real.csv"]["clipped_needs_light"] is None
    out = capsys.readouterr().out
    assert out.count("| baseline: ") == 2 and "real_over MAE / SSIM / SRCC" in out
    assert "expert_retouch MAE / SSIM / SRCC" in out and "(real / human / expert)" in out
    assert "| baseline: zero | 0.2719 / " in out and "0.0 % (high 0.0 %, normal 0.0 %)" in out
    assert "| baseline: zero | 0.2719 / " in (tmp_path / "a.md").read_text()


def test_physics_columns_count_clipped_pixels_said_to_need_light(sets, tmp_path):
    # the real set's dark photo becomes black with one pure red pixel (grey 76, its red channel clipped):
    # local_midgray (3 x 3 window at 24 px) gives it r = 0.5 - 0.299/9 = +0.47, "needs light", which cannot be (a
    # clipped channel says nothing of its light), yet within the definition's bounds (r <= 1 - 0.299); the 383 black
    # pixels are crushed, and both methods say they need light (r > 0), which is right
    photo = np.zeros((16, 24, 3), np.uint8)
    photo[8, 12] = (255, 0, 0)
    Image.fromarray(photo).save(f"{sets[1]}/images/dark.png")
    accuracy.main(sets + ["--baselines", "local_midgray", "mertens", "--json", str(tmp_path / "p.json")])
    methods = json.loads((tmp_path / "p.json").read_text())["methods"]
    local, mertens = (methods[f"baseline: {name}"]["real_brackets"] for name in ("local_midgray", "mertens"))
    assert local["real.csv"]["clipped_needs_light"] == 100.0
    assert local["real.csv"]["crushed_needs_dark"] == 0.0 and mertens["real.csv"]["crushed_needs_dark"] == 0.0
    assert local["real_under.csv"]["clipped_needs_light"] == 100.0  # dark.png is in the under list
    assert local["real_over.csv"]["clipped_needs_light"] is None  # bright.png (220) has no clipped pixel
    assert methods["baseline: local_midgray"]["human_ref"]["human_ref.csv"]["clipped_needs_light"] is None
    # a white pixel instead: local_midgray's +0.39 there is beyond the bound (1 - 1 = 0), so the tools give it 0:
    # no method can tell a white pixel to brighten (issue 28), and the worst photo's share says so
    photo[8, 12] = 255
    Image.fromarray(photo).save(f"{sets[1]}/images/dark.png")
    accuracy.main(sets + ["--baselines", "local_midgray", "--json", str(tmp_path / "w.json")])
    local = json.loads((tmp_path / "w.json").read_text())["methods"]["baseline: local_midgray"]["real_brackets"]
    assert local["real.csv"]["clipped_needs_light"] == 0.0 and local["real.csv"]["worst_white_brightened_pct"] == 0.0
    assert local["real.csv"]["worst_out_of_bounds_pct"] == 0.0


def test_worst_photo_and_stops_figures(sets, tmp_path):
    # the zero map on flat photos whose labels ask for 128 - grey levels: its correction is 0 stops on every photo
    # and the labels' are log2(lin(128) / lin(grey)): dark 40 -> +3.57, mid 100 -> +0.80, bright 220 -> -1.85
    accuracy.main(sets + ["--baselines", "zero", "--json", str(tmp_path / "z.json"), "--plain", str(tmp_path / "p")])
    zero = json.loads((tmp_path / "z.json").read_text())["methods"]["baseline: zero"]["real_brackets"]["real.csv"]

    def lin(level):
        v = level / 255
        return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4

    label_stops = [np.log2(lin(128) / lin(grey)) for grey in (40, 100, 220)]
    assert zero["median_stops_error"] == pytest.approx(float(np.median(np.abs(label_stops))), abs=1e-4)
    assert zero["verdict_wrong_pct"] == 100.0  # all three labels are more than 1/3 stop off; zero says ok to each
    assert zero["worst_out_of_bounds_pct"] == 0.0
    text = (tmp_path / "p").read_text()
    assert "100 % of photos" in text and f"{zero['median_stops_error']:.2f} stops" in text


def test_a_missing_set_is_one_line(sets, tmp_path, capsys):
    sets[sets.index("--human-ref") + 1] = str(tmp_path / "nowhere")
    assert accuracy.main(sets + ["--baselines", "zero"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == f"accuracy: {tmp_path / 'nowhere'}: the human_ref development set is not there; give --human-ref DIR"
