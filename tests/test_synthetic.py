import csv

import numpy as np
import pytest
from PIL import Image

from datasets import synthetic
from datasets.iea40k import IEA40KDataset

LEVELS = ["N2", "P0", "P1", "GRAD", "SKY", "SPOT", "FIELD"]


def photo(seed, h, w):
    """A smooth colourful test photo with some texture, mid-tones to highlights."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([0.5 + 0.3 * np.sin(6 * x + seed), 0.4 + 0.3 * y, 0.6 - 0.3 * x * y], axis=-1)
    return np.clip(np.round((base + 0.05 * rng.standard_normal((h, w, 3))) * 255), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    src = tmp_path_factory.mktemp("src")
    Image.fromarray(photo(1, 40, 52)).save(src / "alpha.png")
    Image.fromarray(photo(2, 48, 36)).save(src / "beta shot.jpg", quality=95)
    (src / "gamma").mkdir()  # two views of one scene
    Image.fromarray(photo(3, 44, 44)).save(src / "gamma" / "left.png")
    Image.fromarray(photo(4, 44, 44)).save(src / "gamma" / "right.png")
    Image.fromarray(photo(5, 36, 36)).save(src / "delta.png")
    (src / "broken.png").write_bytes(b"not an image")
    return src


def generate(sources, out, *extra):
    synthetic.main(["--src", str(sources), "--out", str(out), "--size", "24", "--crops-per-image", "2",
                    "--levels", *LEVELS, "--workers", "1", *extra])
    return out


@pytest.fixture(scope="module")
def png_set(sources, tmp_path_factory):
    return generate(sources, tmp_path_factory.mktemp("png") / "set", "--val-scenes", "delta")


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def gray_of_file(path):
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def check_labels(root, fmt):
    rows = read_csv(root / "train.csv") + read_csv(root / "valid.csv")
    assert rows and all(r["img_id"].endswith(f"_{r['level']}.{fmt}") for r in rows)
    for row in rows:
        label = np.load(root / "labels" / row["img_id"].replace(f".{fmt}", ".npy"))
        assert label.dtype == np.float32 and label.shape == (24, 24)
        truth = gray_of_file(root / "refs" / row["ref_id"]) - gray_of_file(root / "images" / row["img_id"])
        np.testing.assert_allclose(label, truth, atol=1e-4)
        assert float(row["score"]) == pytest.approx(10 * (1 - np.abs(truth / 255).mean()), abs=1e-5)
    return rows


def test_png_labels_are_the_exact_residual_of_the_saved_files(png_set):
    rows = check_labels(png_set, "png")
    assert list(rows[0]) == ["img_id", "ref_id", "score", "level"]
    assert len(rows) == 4 * 2 * len(LEVELS)  # four usable scenes (the broken file is skipped)
    mean = {lv: np.mean([np.load(png_set / "labels" / r["img_id"].replace(".png", ".npy")).mean()
                         for r in rows if r["level"] == lv]) for lv in LEVELS}
    assert mean["N2"] > 20 and mean["P1"] < -10 and abs(mean["P0"]) < 1.0  # darker = positive = under-exposed


def test_jpeg_labels_come_from_the_compressed_file(sources, tmp_path):
    root = generate(sources, tmp_path / "jpg", "--format", "jpg", "--quality", "60", "--levels", "P0")
    rows = check_labels(root, "jpg")
    # at P0 the test image is the ideal plus sensor noise; JPEG at quality 60 adds visible error on top
    assert max(np.abs(np.load(root / "labels" / r["img_id"].replace(".jpg", ".npy"))).max() for r in rows) > 5
    assert all(Image.open(root / "images" / r["img_id"]).format == "JPEG" for r in rows)
    assert all(Image.open(root / "refs" / r["ref_id"]).format == "PNG" for r in rows)


def test_scenes_held_out_whole(png_set, sources, tmp_path):
    def scenes(rows):
        return {r["ref_id"].rsplit("_", 1)[0] for r in rows}

    assert scenes(read_csv(png_set / "valid.csv")) == {"delta"}
    assert scenes(read_csv(png_set / "train.csv")) == {"alpha", "beta-shot", "gamma"}
    root = generate(sources, tmp_path / "frac", "--val-fraction", "0.5", "--levels", "N1")
    train, valid = scenes(read_csv(root / "train.csv")), scenes(read_csv(root / "valid.csv"))
    assert len(valid) == 2 and not train & valid and train | valid == {"alpha", "beta-shot", "gamma", "delta"}
    readme = (root / "README.md").read_text()
    assert "--val-fraction 0.5" in readme and f"held-out scenes {', '.join(sorted(valid))}" in readme


def test_output_is_an_iea40k_dataset(png_set):
    ds = IEA40KDataset(png_set, "train.csv", refs_dir="refs")
    item = ds[0]
    assert item["image"].shape == (3, 24, 24) and item["ref"].shape == (3, 24, 24)


def test_same_seed_same_bytes(sources, png_set, tmp_path):
    again = generate(sources, tmp_path / "again", "--val-scenes", "delta", "--workers", "2")
    other = generate(sources, tmp_path / "other", "--val-scenes", "delta", "--seed", "1")
    files = sorted(p.relative_to(png_set) for p in png_set.rglob("*") if p.is_file() and p.name != "README.md")
    assert len(files) == 2 + 4 * 2 * (2 * len(LEVELS) + 1)
    assert sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file() and p.name != "README.md") == files
    assert all((png_set / f).read_bytes() == (again / f).read_bytes() for f in files)
    assert not any((png_set / f).read_bytes() == (other / f).read_bytes() for f in files if f.parts[0] == "images")


def test_broken_source_is_skipped_with_its_name(sources, png_set, capsys, tmp_path):
    generate(sources, tmp_path / "again", "--levels", "N1")
    assert "broken.png" in capsys.readouterr().err


def test_unknown_level_and_scene_rejected(sources, tmp_path):
    with pytest.raises(SystemExit):
        generate(sources, tmp_path / "bad", "--levels", "N2", "X7")
    with pytest.raises(SystemExit, match="--val-scenes \\['nope'\\] not among the scenes"):
        generate(sources, tmp_path / "bad", "--val-scenes", "nope")
    with pytest.raises(SystemExit, match="nowhere: source not found"):
        generate(tmp_path / "nowhere", tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_srgb_transfer_functions():
    # IEC 61966-2-1 reference points
    np.testing.assert_allclose(synthetic.srgb_to_linear(np.array([0.0, 0.04045, 0.5, 1.0])),
                               [0.0, 0.04045 / 12.92, 0.214041140, 1.0], rtol=1e-6)
    v = np.linspace(0, 1, 1001)
    np.testing.assert_allclose(synthetic.linear_to_srgb(synthetic.srgb_to_linear(v)), v, atol=1e-12)


def test_global_exposure_is_a_gain_in_linear_light():
    ideal = np.full((64, 64, 3), 128, np.uint8)
    rng = np.random.default_rng(0)
    for level, ev in [("N2", -2), ("N1", -1), ("P1", 1)]:
        assert synthetic.level_ev(level) == ev
        expected = synthetic.linear_to_srgb(synthetic.srgb_to_linear(128 / 255) * 2.0 ** ev) * 255
        out = synthetic.expose(ideal, level, rng).astype(np.float64)
        assert abs(out.mean() - expected) < 0.5 and out.std() > 0.2  # the right mean, plus sensor noise
    assert (synthetic.expose(np.full((8, 8, 3), 200, np.uint8), "P4", rng) == 255).all()  # clipped highlights


def test_dark_exposures_are_noisier_once_brightened():
    ideal = np.full((96, 96, 3), 150, np.uint8)
    noise = {}
    for level in ("P0", "N3"):
        out = synthetic.srgb_to_linear(synthetic.expose(ideal, level, np.random.default_rng(7)) / 255.0)
        noise[level] = out.std() / out.mean()  # relative noise, what brightening back to the ideal shows
    assert noise["N3"] > 2 * noise["P0"]


@pytest.mark.parametrize("level", synthetic.SPATIAL_LEVELS)
def test_spatial_fields_vary_within_four_ev(level):
    for seed in range(5):
        field = synthetic.ev_field(level, 32, 40, np.random.default_rng(seed))
        assert field.shape == (32, 40) and field.min() >= -4 and field.max() <= 4
        assert field.max() - field.min() > 0.5


def test_sky_is_brighter_above_the_horizon():
    for seed in range(5):
        field = synthetic.ev_field("SKY", 64, 64, np.random.default_rng(seed))
        assert field[:8].mean() > 0 > field[-8:].mean()


def test_default_sources_are_real_photos():
    scenes = synthetic.default_scenes()
    if "astronaut" not in scenes:
        pytest.skip("scikit-image sample photos not installed")
    assert len(scenes["motorcycle"][0]) == 2  # the stereo pair is one scene
    assert not any("hubble" in str(p) for paths, _ in scenes.values() for p in paths)
    assert all(credits for _, credits in scenes.values())
