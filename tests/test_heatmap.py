"""Colour scales, the |r|-weighted overlay, the colour bar's stated scale and make_heatmap's --vmax / --format."""

import csv

import numpy as np
import pytest
from PIL import Image

from pieanet import make_heatmap
from pieanet.heatmaps import writing
from pieanet.utils.heatmap import VMAX_FLOOR, colorbar_figure, colorize, image_vmax, overlay

BLUE, RED = (0, 0, 255), (255, 0, 0)


# ---- colours ----


def test_colours_at_zero_half_and_full_scale():
    # 'bwr' runs blue (0, 0, 1) -> white at 0.5 -> red (1, 0, 0), read from a 256-entry table at floor(t * 256):
    # r = 0 -> t = 0.5 -> entry 128 = 128/255 of the way, just on the red side: (1, 253/255, 253/255) rounded up
    # to 254; r = +vmax/2 -> t = 0.25 -> entry 64: 2 * 64/255 = 128/255; r = -vmax/2 -> entry 192: 2 - 2 * 192/255
    vmax = 0.25
    r = np.array([[0.0, 0.125, -0.125, 0.25, -0.25, 0.4, -0.9]])
    expected = [(255, 254, 254), (128, 128, 255), (255, 126, 126), BLUE, RED, BLUE, RED]
    assert [tuple(c) for c in colorize(r, vmax)[0]] == expected


def test_default_scale_is_the_absolute_one():
    r = np.random.default_rng(0).uniform(-1, 1, (5, 6)).astype(np.float32)
    np.testing.assert_array_equal(colorize(r), colorize(r, 1.0))
    np.testing.assert_array_equal(colorize(r * 0.3, 0.3), colorize(r))  # stretching = rescaling r


@pytest.mark.parametrize("vmax", [0.0, -0.2, 1.5, float("nan"), float("inf")])
def test_bad_scales_are_refused(vmax):
    with pytest.raises(ValueError, match="vmax"):
        colorize(np.zeros((2, 2)), vmax)


# ---- per-image scale ----


def test_image_vmax_is_the_99th_percentile_of_abs_r():
    # |r| = 0, 0.005, ..., 0.5 (101 values, mixed signs): the 99th percentile is at position 0.99 * 100 = 99 -> 0.495
    magnitudes = np.arange(101) * 0.005
    r = (magnitudes * np.where(np.arange(101) % 2, 1, -1)).reshape(1, 101)
    assert image_vmax(r) == pytest.approx(0.495, abs=1e-6)
    # a few extreme pixels (0.5 % at -1) do not set the scale
    r = np.full((20, 20), 0.2)
    r[0, :2] = -1.0
    assert image_vmax(r) == pytest.approx(0.2, abs=1e-6)


def test_image_vmax_floor_for_a_nearly_ideal_photo():
    r = np.random.default_rng(1).uniform(-0.03, 0.03, (40, 40))
    assert image_vmax(r) == VMAX_FLOOR == 0.1
    assert image_vmax(np.zeros((3, 3))) == VMAX_FLOOR
    assert image_vmax(r, floor=0.01) == pytest.approx(np.percentile(np.abs(r.astype(np.float32)), 99), abs=1e-6)


# ---- overlay ----


def test_overlay_keeps_the_photo_where_r_is_zero_and_reaches_the_opacity_at_vmax():
    photo = np.tile(np.array([102, 150, 206], np.uint8), (1, 7, 1))
    r = np.array([[0.0, 0.125, -0.125, 0.25, -0.25, 0.6, -1.0]])
    # P + a (C - P), rounded: a = 0.6 * min(|r| / 0.25, 1); blue (0, 0, 255) for r > 0, red (255, 0, 0) for r < 0;
    # e.g. a = 0.3, blue: (102 * 0.7, 150 * 0.7, 206 + 0.3 * 49) = (71.4, 105, 220.7)
    expected = [
        (102, 150, 206),
        (71, 105, 221),
        (148, 105, 144),
        (41, 60, 235),
        (194, 60, 82),
        (41, 60, 235),
        (194, 60, 82),
    ]
    out = overlay(photo, r, vmax=0.25, opacity=0.6)
    assert out.dtype == np.uint8 and [tuple(c) for c in out[0]] == expected
    np.testing.assert_array_equal(overlay(photo.astype(np.float32) / 255, r, vmax=0.25, opacity=0.6), out)


def test_overlay_is_exactly_the_photo_wherever_r_is_zero():
    rng = np.random.default_rng(2)
    photo = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    r = rng.uniform(-1, 1, (30, 40))
    r[5:20, 10:30] = 0.0
    out = overlay(photo, r, vmax=0.3)
    np.testing.assert_array_equal(out[5:20, 10:30], photo[5:20, 10:30])
    assert (out[r != 0] != photo[r != 0]).any(axis=-1).mean() > 0.9


def test_overlay_refuses_mismatched_sizes_and_opacities():
    photo = np.zeros((4, 5, 3), np.uint8)
    with pytest.raises(ValueError, match="differ in size"):
        overlay(photo, np.zeros((4, 4)))
    with pytest.raises(ValueError, match="opacity"):
        overlay(photo, np.zeros((4, 5)), opacity=1.5)


# ---- colour bar ----


def bar_texts(fig):
    bar_axis = fig.axes[1]
    return bar_axis.get_ylabel(), [label.get_text() for label in bar_axis.get_yticklabels()]


def test_colorbar_states_the_scale():
    label, ticks = bar_texts(colorbar_figure(np.zeros((10, 12)), vmax=0.3, scale_note="fixed"))
    # then what the view means and what the checkerboard is (issue 28)
    assert label.splitlines()[1:3] == ["scale ±0.3", "(fixed)"] and label.splitlines()[-1] == "chequered: not judged"
    assert sorted(ticks) == sorted(["under (+0.3)", "ideal (0)", "over (-0.3)"])
    label, ticks = bar_texts(colorbar_figure(np.zeros((10, 12))))
    assert "±1" in label and "under (+1)" in ticks


# ---- make_heatmap: --vmax, --format, summary.csv ----


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(3)
    for name in ["a.png", "b.png"]:
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(folder / name)
    (folder / "broken.jpg").write_bytes(b"not an image")
    return folder


def run(photos, out, checkpoint, *options):
    code = make_heatmap.main(
        [
            "--input",
            str(photos),
            "--output",
            str(out),
            "--checkpoint",
            str(checkpoint),
            "--save-npy",
            "--no-report",
            *options,
        ]
    )
    with open(out / "summary.csv", newline="") as f:
        return code, {row["file"]: row for row in csv.DictReader(f)}


@pytest.mark.parametrize("option, expected", [([], 1.0), (["--vmax", "0.3"], 0.3), (["--vmax", "image"], None)])
def test_vmax_is_used_and_written_to_the_summary(photos, tiny_checkpoint, tmp_path, option, expected):
    code, rows = run(photos, tmp_path, tiny_checkpoint, "--overlay", *option)
    assert code == 1 and rows["broken.jpg"]["vmax"] == ""
    for name in ["a", "b"]:
        residual = np.load(tmp_path / f"{name}_residual.npy")
        vmax = image_vmax(residual) if expected is None else expected
        assert float(rows[f"{name}.png"]["vmax"]) == pytest.approx(vmax, abs=1e-6)
        with Image.open(tmp_path / f"{name}_exposure.png") as img:
            # a palette PNG since issue 25: its colours, not its indices, are colorize's
            np.testing.assert_array_equal(np.asarray(img.convert("RGB")), colorize(residual, vmax))
        with Image.open(tmp_path / f"{name}_overlay.png") as img, Image.open(photos / f"{name}.png") as src:
            np.testing.assert_array_equal(np.asarray(img), overlay(np.asarray(src), residual, vmax))


def test_colorbar_gets_the_vmax_of_the_summary(photos, tiny_checkpoint, tmp_path, monkeypatch):
    drawn = {}
    real = writing.save_colorbar_heatmap

    def recording(path, residual, title=None, **options):
        drawn[title] = options
        real(path, residual, title=title, **options)

    monkeypatch.setattr(writing, "save_colorbar_heatmap", recording)
    _, rows = run(photos, tmp_path, tiny_checkpoint, "--colorbar", "--vmax", "image")
    for name in ["a", "b"]:
        assert drawn[name]["vmax"] == pytest.approx(float(rows[f"{name}.png"]["vmax"]), abs=1e-6)
        assert drawn[name]["scale_note"].startswith("per image")
        assert (tmp_path / f"{name}_colorbar.png").is_file()


def test_format_jpg_writes_jpegs_and_no_pngs(photos, tiny_checkpoint, tmp_path):
    code, rows = run(photos, tmp_path, tiny_checkpoint, "--overlay", "--format", "jpg", "--jpeg-quality", "80")
    assert code == 1 and rows["a.png"]["status"] == "ok"
    assert not list(tmp_path.glob("*_exposure.png")) and not list(tmp_path.glob("*_overlay.png"))
    for name in ["a", "b"]:
        residual = np.load(tmp_path / f"{name}_residual.npy")
        for kind, picture in [("exposure", colorize(residual)), ("overlay", None)]:
            path = tmp_path / f"{name}_{kind}.jpg"
            assert path.read_bytes()[:3] == b"\xff\xd8\xff"
            with Image.open(path) as img:
                assert img.format == "JPEG" and img.size == (32, 24)
                decoded = np.asarray(img.convert("RGB"))
            if picture is not None:  # the same pixels as Pillow's own encoding at quality 80, 4:4:4
                reference = tmp_path / "reference.jpg"
                Image.fromarray(picture).save(reference, quality=80, subsampling=0)
                with Image.open(reference) as ref:
                    np.testing.assert_array_equal(decoded, np.asarray(ref))
                reference.unlink()


@pytest.mark.parametrize(
    "options, message",
    [
        (["--vmax", "0"], "expected a number in (0, 1] or 'image'"),
        (["--vmax", "1.5"], "expected a number in (0, 1] or 'image'"),
        (["--vmax", "wide"], "expected a number in (0, 1] or 'image'"),
        (["--format", "gif"], "invalid choice"),
        (["--format", "jpg", "--jpeg-quality", "101"], "expected a JPEG quality from 1 to 100"),
        (["--jpeg-quality", "80"], "--jpeg-quality applies to --format jpg only"),
    ],
)
def test_bad_scale_and_format_options_are_usage_errors(options, message, capsys):
    with pytest.raises(SystemExit) as stop:
        make_heatmap.parse_args(options)
    assert stop.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("vmax", [1.0, 0.3, 0.2417, 0.1])
def test_colorize_gives_matplotlibs_bwr_colours_exactly(vmax):
    from matplotlib import colormaps

    r = np.concatenate(
        [
            np.linspace(-1.2, 1.2, 200_001, dtype=np.float32),
            np.random.default_rng(0).uniform(-1, 1, 100_000).astype(np.float32),
            np.float32([0.0, 1.0, -1.0, vmax, -vmax, np.nextafter(np.float32(vmax), 0)]),
        ]
    )
    expected = colormaps["bwr"](np.clip(1.0 - np.clip(r / np.float32(vmax), -1, 1), 0, 2) / 2.0, bytes=True)[..., :3]
    np.testing.assert_array_equal(colorize(r, vmax), expected)
