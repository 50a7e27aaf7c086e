import csv

import numpy as np
import pytest
from PIL import Image

from pieanet.datasets import synthetic
from pieanet.datasets.iea40k import IEA40KDataset

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
    synthetic.main(
        [
            "--src",
            str(sources),
            "--out",
            str(out),
            "--size",
            "24",
            "--crops-per-image",
            "2",
            "--levels",
            *LEVELS,
            "--workers",
            "1",
            "--camera",
            "srgb",
            *extra,
        ]
    )
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
    mean = {
        lv: np.mean(
            [np.load(png_set / "labels" / r["img_id"].replace(".png", ".npy")).mean() for r in rows if r["level"] == lv]
        )
        for lv in LEVELS
    }
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
    np.testing.assert_allclose(
        synthetic.srgb_to_linear(np.array([0.0, 0.04045, 0.5, 1.0])),
        [0.0, 0.04045 / 12.92, 0.214041140, 1.0],
        rtol=1e-6,
    )
    v = np.linspace(0, 1, 1001)
    np.testing.assert_allclose(synthetic.linear_to_srgb(synthetic.srgb_to_linear(v)), v, atol=1e-12)


def test_global_exposure_is_a_gain_in_linear_light():
    ideal = np.full((64, 64, 3), 128, np.uint8)
    rng = np.random.default_rng(0)
    for level, ev in [("N2", -2), ("N1", -1), ("P1", 1)]:
        assert synthetic.level_ev(level) == ev
        expected = synthetic.linear_to_srgb(synthetic.srgb_to_linear(128 / 255) * 2.0**ev) * 255
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


# --- the camera model behind --camera random: tone curve with a shoulder, headroom, per-channel clipping, noise ---


def quiet(camera, **changes):
    """The camera without noise, exposure jitter or white-balance drift (and any other changes)."""
    return {**camera, "full_well": 1e15, "read_noise": 0.0, "ev_jitter": 0.0, "wb_jitter": 0.0, **changes}


def cameras(count=20):
    """Seeded random cameras: some with a hard clip, most with a soft shoulder."""
    cams = [synthetic.random_camera(np.random.default_rng(seed)) for seed in range(count)]
    assert {c["knee"] == 1.0 for c in cams} == {True, False}
    return cams


def all_values():
    """A 16 x 16 x 3 ideal holding every 8-bit value in every channel, channels shuffled against each other."""
    rng = np.random.default_rng(0)
    return np.stack([rng.permutation(256).reshape(16, 16) for _ in range(3)], axis=-1).astype(np.uint8)


def shot(ideal, ev, camera, seed=0):
    return synthetic.render(synthetic.scene_radiance(ideal, camera), ev, camera, np.random.default_rng(seed))


def test_brighter_with_every_step_of_ev():
    ideal = np.concatenate([photo(6, 16, 16), all_values()], axis=0)
    evs = np.arange(-4.0, 4.01, 0.5)
    for camera in cameras(8):
        frames = np.stack([shot(ideal, ev, quiet(camera)).astype(np.int64) for ev in evs])
        means = frames.mean(axis=(1, 2, 3))
        assert np.all(np.diff(means) > 0.5), (camera, means)
        assert np.all(np.diff(frames, axis=0) >= 0)  # no pixel and no channel ever gets darker with more light


def test_every_camera_renders_the_ideal_back_at_zero_ev():
    ideal = np.concatenate([all_values(), photo(7, 16, 16)], axis=0)
    for seed, camera in enumerate(cameras()):
        camera = quiet(camera, blown_stops=0.0)
        np.testing.assert_array_equal(shot(ideal, 0.0, camera), ideal)
        np.testing.assert_array_equal(synthetic.expose(ideal, "P0", np.random.default_rng(seed), camera), ideal)


def test_channels_clip_one_by_one():
    red = np.zeros((4, 4, 3), np.uint8)
    red[...] = (230, 40, 30)
    evs = np.arange(2.0, 12.01, 0.5)
    for camera in [synthetic.SRGB_CAMERA] + cameras(6):
        camera = quiet(camera, desaturate=0.0, blown_stops=0.0)
        frames = np.stack([shot(red, ev, camera)[0, 0].astype(int) for ev in evs])
        assert (frames[:, 0] == 255).all()  # red is blown from +2 EV on ...
        assert frames[0, 1] < 200 and frames[0, 2] < 200  # ... while green and blue are not
        for channel in (1, 2):  # they keep rising with EV until they clip too
            values = frames[:, channel]
            rising = values < 255
            assert np.all(np.diff(values[rising]) > 0) and values[-1] == 255
            assert np.all(values[~rising] == 255) and rising[: np.argmin(rising)].all()


def test_clipped_highlights_pulled_to_neutral():
    patch = np.zeros((4, 4, 3), np.uint8)
    patch[...] = (200, 100, 20)
    for camera in [synthetic.SRGB_CAMERA] + cameras(6):  # +4 EV: red far beyond the sensor's saturation
        neutral = shot(patch, 4.0, quiet(camera, desaturate=1.0, blown_stops=0.0))[0, 0].astype(int)
        hued = shot(patch, 4.0, quiet(camera, desaturate=0.0, blown_stops=0.0))[0, 0].astype(int)
        half = shot(patch, 4.0, quiet(camera, desaturate=0.5, blown_stops=0.0))[0, 0].astype(int)
        assert neutral.max() - neutral.min() <= 2, (camera, neutral)
        assert hued.max() - hued.min() >= 40, (camera, hued)  # the clipped channels' hue shift stays
        assert neutral.max() - neutral.min() < half.max() - half.min() < hued.max() - hued.min()
        # the pull only starts once a channel clips: just below saturation the hue is the same for both settings
        below = shot(patch, -1.0, quiet(camera, desaturate=1.0, blown_stops=0.0))
        np.testing.assert_array_equal(below, shot(patch, -1.0, quiet(camera, desaturate=0.0, blown_stops=0.0)))


@pytest.mark.parametrize("knee,slope", [(0.35, 4.0), (0.5, 1.6), (0.9, 1.5), (0.6, 2.7), (1.0, 1.0), (0.7, 1.0)])
def test_shoulder_is_smooth_monotone_and_invertible(knee, slope):
    top = knee + (1 - knee) * slope  # the sensor's saturation
    x = np.linspace(0.0, top, 4001)
    y = synthetic.shoulder(x, knee, slope)
    back = synthetic.shoulder_inverse(y, knee, slope)
    np.testing.assert_allclose(back[x < 0.99 * top], x[x < 0.99 * top], atol=1e-9)
    np.testing.assert_allclose(back, x, atol=1e-5)  # the curve is flat at the top: float precision only
    v = np.linspace(0.0, 1.0, 4001)
    np.testing.assert_allclose(
        synthetic.shoulder(synthetic.shoulder_inverse(v, knee, slope), knee, slope), v, atol=1e-12
    )
    np.testing.assert_allclose(y[x <= knee], x[x <= knee], atol=0)  # identity below the knee
    assert y[-1] == pytest.approx(1.0) and synthetic.shoulder_inverse(1.0, knee, slope) == pytest.approx(top)
    assert np.all(np.diff(y) >= 0) and np.all(np.diff(y[x < 0.999 * top]) > 0)
    assert np.all(synthetic.shoulder(np.array([top + 1e-3, 2 * top, 100.0]), knee, slope) == 1.0)  # clipped
    if knee < 1:  # C1 at the knee: value and slope match (slope 1 on both sides)
        h = 1e-7
        right = (synthetic.shoulder(knee + h, knee, slope) - knee) / h
        assert right == pytest.approx(1.0, abs=1e-5)
        assert synthetic.shoulder(knee, knee, slope) == pytest.approx(knee)


def test_blown_regions_of_the_ideal_get_headroom():
    sky = np.full((32, 32, 3), 120, np.uint8)
    sky[:12] = 255  # a sky clipped in the ideal
    for camera in cameras(6):
        flat = shot(sky, -2.0, quiet(camera, blown_stops=0.0)).astype(float)
        boosted = shot(sky, -2.0, quiet(camera, blown_stops=1.5)).astype(float)
        assert boosted[:8].mean() > flat[:8].mean() + 20  # the sky was brighter than white: it stays bright
        assert boosted[:8].max() < 255
        np.testing.assert_array_equal(boosted[12:], flat[12:])  # the ground is untouched, right up to the sky


def test_headroom_leaves_every_unclipped_value_exact_at_zero_ev():
    ideal = all_values()
    for camera in cameras(6):
        frame = shot(ideal, 0.0, quiet(camera, blown_stops=5.0))
        unclipped = ideal.max(axis=2) < 250
        np.testing.assert_array_equal(frame[unclipped], ideal[unclipped])
        assert (frame[ideal.max(axis=2) == 255].max(axis=1) == 255).all()


def test_the_ideal_is_re_exposed_by_the_rule_of_real_brackets():
    dark = photo(8, 32, 32) // 3
    for camera in [synthetic.SRGB_CAMERA] + cameras(6):
        camera = quiet(camera)
        ev = synthetic.ideal_ev(dark, camera, target_grey=118.0)
        assert ev > 0  # a dark photo is brightened towards the target grey
        grey = {e: synthetic.gray(shot(dark, e, camera).astype(float)).mean() for e in synthetic.IDEAL_EVS}
        nearest = min((abs(g - 118.0), e) for e, g in grey.items())[1]
        assert ev == nearest or grey[ev] < 118.0  # nearest the target unless brightening would clip too much
        # a photo already at the target stays as it is, and the clip tolerance stops brightening into a blown frame
        assert synthetic.ideal_ev(np.full((16, 16, 3), 127, np.uint8), synthetic.SRGB_CAMERA, 127.0) == 0.0
        bright = np.full((16, 16, 3), 200, np.uint8)
        srgb = quiet(synthetic.SRGB_CAMERA)
        ev = synthetic.ideal_ev(bright, srgb, 254.0, clip_tolerance=0.0)
        assert shot(bright, ev, srgb).max() < 254 <= shot(bright, ev + 0.25, srgb).max()


def test_relative_noise_grows_as_exposure_drops():
    patch = np.full((64, 64, 3), 150, np.uint8)
    for camera in [synthetic.SRGB_CAMERA] + cameras(6):
        camera = {**camera, "wb_jitter": 0.0}
        relative = {ev: shot(patch, ev, camera, seed=3).astype(float) for ev in (0.0, -4.0)}
        relative = {ev: frame.std() / frame.mean() for ev, frame in relative.items()}
        assert relative[-4.0] > 2 * relative[0.0] > 0, (camera, relative)


# --- the generator with --camera random: exact labels of mixed JPEG/PNG frames, determinism, corpus folders ---


def generate_random(sources, out, *extra):
    return generate(sources, out, "--camera", "random", "--format", "camera", "--val-scenes", "delta", *extra)


def check_mixed_labels(root):
    rows = read_csv(root / "train.csv") + read_csv(root / "valid.csv")
    for row in rows:
        stem, ext = row["img_id"].rsplit(".", 1)
        assert ext in ("jpg", "png") and stem.endswith(f"_{row['level']}")
        with Image.open(root / "images" / row["img_id"]) as saved:
            assert saved.format == {"jpg": "JPEG", "png": "PNG"}[ext]
        label = np.load(root / "labels" / f"{stem}.npy")
        truth = gray_of_file(root / "refs" / row["ref_id"]) - gray_of_file(root / "images" / row["img_id"])
        assert label.dtype == np.float32 and label.shape == (24, 24)
        np.testing.assert_allclose(label, truth, atol=1e-4)
        assert float(row["score"]) == pytest.approx(10 * (1 - np.abs(truth / 255).mean()), abs=1e-5)
    return rows


@pytest.fixture(scope="module")
def random_set(sources, tmp_path_factory):
    return generate_random(sources, tmp_path_factory.mktemp("random") / "set")


def test_random_camera_labels_are_exact_for_jpeg_and_png_frames(random_set):
    rows = check_mixed_labels(random_set)
    assert len(rows) == 4 * 2 * len(LEVELS)
    assert {r["img_id"].rsplit(".", 1)[1] for r in rows} == {"jpg", "png"}
    readme = (random_set / "README.md").read_text()
    assert "camera random" in readme and "format camera" in readme


def test_random_camera_same_seed_same_bytes(sources, random_set, tmp_path):
    again = generate_random(sources, tmp_path / "again", "--workers", "2")
    other = generate_random(sources, tmp_path / "other", "--seed", "1")

    def files(root):
        return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())

    assert files(again) == files(random_set)
    for f in files(random_set):
        if f.name == "README.md":  # identical up to the output folder named in the command line
            text = [(root / f).read_text().replace(str(root), "OUT") for root in (random_set, again)]
            assert text[0].replace(" --workers 2", "") == text[1].replace(" --workers 2", "")
        else:
            assert (random_set / f).read_bytes() == (again / f).read_bytes(), f
    assert read_csv(random_set / "train.csv") == read_csv(again / "train.csv")
    ours = {p.stem: p.read_bytes() for p in (random_set / "images").iterdir()}
    theirs = {p.stem: p.read_bytes() for p in (other / "images").iterdir()}
    assert not any(ours[k] == theirs.get(k) for k in ours)


def flat_photo(colour, h=40, w=48):
    rng = np.random.default_rng(sum(colour))
    base = np.array(colour, float) + 6 * rng.standard_normal((h, w, 3))
    return np.clip(np.round(base), 0, 255).astype(np.uint8)


COLOURS = {
    "pkga/a.png": (200, 60, 60),
    "pkga/b.png": (60, 200, 60),
    "pkga/c.png": (60, 60, 200),
    "pkgb/d.png": (150, 150, 60),
    "pkgb/e.png": (60, 150, 150),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A photo corpus as datasets.photos writes it: one sub-folder per package and photos.csv with the licences."""
    root = tmp_path_factory.mktemp("corpus")
    rows = []
    for i, (file, colour) in enumerate(COLOURS.items()):
        (root / file).parent.mkdir(exist_ok=True)
        Image.fromarray(flat_photo(colour)).save(root / file)
        if file != "pkgb/e.png":  # one photo the listing does not know
            package = file.split("/")[0]
            rows.append(
                {
                    "file": file,
                    "package": package,
                    "version": f"1.{i}",
                    "member": f"/usr/share/{file}",
                    "license": f"Licence-{i}",
                    "width": 48,
                    "height": 40,
                    "sha256": "0" * 64,
                }
            )
    with open(root / "photos.csv", "w", newline="") as f:
        writer = csv.DictWriter(
            f, ["file", "package", "version", "member", "license", "width", "height", "sha256"], lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(rows)
    return root


def closest_photo(ref):
    mean = np.asarray(Image.open(ref), float).reshape(-1, 3).mean(axis=0)
    return min(COLOURS, key=lambda f: np.abs(np.array(COLOURS[f]) - mean).sum())


def test_crops_per_photo_capped_per_scene(corpus, tmp_path):
    out = tmp_path / "set"
    synthetic.main(
        [
            "--src",
            str(corpus),
            "--out",
            str(out),
            "--size",
            "16",
            "--crops-per-photo",
            "2",
            "--max-crops-per-scene",
            "5",
            "--levels",
            "N1",
            "P1",
            "--workers",
            "1",
            "--val-scenes",
            "pkgb",
            "--grey-fraction",
            "0",
            "--camera",
            "srgb",
        ]
    )
    refs = sorted(p.name for p in (out / "refs").iterdir())
    assert refs == [f"pkga_{i:03d}.png" for i in range(5)] + [f"pkgb_{i:03d}.png" for i in range(4)]
    assert len(read_csv(out / "train.csv")) == 5 * 2 and len(read_csv(out / "valid.csv")) == 4 * 2
    used = [closest_photo(out / "refs" / r) for r in refs]
    assert used[:5] == ["pkga/a.png", "pkga/b.png", "pkga/c.png", "pkga/a.png", "pkga/b.png"]
    assert used[5:] == ["pkgb/d.png", "pkgb/e.png"] * 2  # every photo of an uncapped package twice
    readme = (out / "README.md").read_text()
    assert "5 crops" not in readme and "9 crops" in readme
    for i, file in enumerate(f for f in COLOURS if f != "pkgb/e.png"):
        split = "valid" if file.startswith("pkgb") else "train"
        assert f"- {file.split('/')[0]} ({split}): {file.split('/')[0]} `/usr/share/{file}`: Licence-{i}" in readme
    assert f"`{corpus / 'pkgb' / 'e.png'}`: user-supplied; licence not recorded" in readme


def test_levels_per_crop_draws_distinct_levels(corpus, tmp_path):
    out = tmp_path / "set"
    synthetic.main(
        [
            "--src",
            str(corpus),
            "--out",
            str(out),
            "--size",
            "16",
            "--crops-per-image",
            "6",
            "--levels",
            *LEVELS,
            "--levels-per-crop",
            "3",
            "--workers",
            "1",
            "--val-scenes",
            "pkgb",
        ]
    )
    rows = read_csv(out / "train.csv") + read_csv(out / "valid.csv")
    per_crop = {}
    for row in rows:
        per_crop.setdefault(row["ref_id"], []).append(row["level"])
    assert len(per_crop) == 12 and all(len(set(v)) == len(v) == 3 for v in per_crop.values())
    assert len({tuple(v) for v in per_crop.values()}) > 1  # drawn per crop, not fixed
    assert all(v == [lv for lv in LEVELS if lv in v] for v in per_crop.values())  # in the --levels order
    with pytest.raises(SystemExit):
        synthetic.main(
            ["--src", str(corpus), "--out", str(tmp_path / "bad"), "--levels", "N1", "P1", "--levels-per-crop", "3"]
        )


# --- bench/simulator_stats.py: the measures it compares simulated and real frames with ---


def simulator_stats():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "simulator_stats.py"
    spec = importlib.util.spec_from_file_location("simulator_stats", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_simulator_stats_measures():
    stats = simulator_stats()
    rgb = np.full((10, 10, 3), 100, np.uint8)
    rgb[0] = 255  # 10 white pixels: blown, bright, neutral
    rgb[1] = (255, 120, 120)  # 10 blown red pixels, grey 158: not bright
    rgb[2] = (250, 200, 200)  # 10 blown pinkish pixels, grey 214.95: bright, (max - min) / max = 0.2
    rgb[3] = (4, 2, 0)  # 10 crushed blacks
    assert stats.blown_share(rgb) == pytest.approx(0.3) and stats.black_share(rgb) == pytest.approx(0.1)
    assert stats.highlight_saturation(rgb) == pytest.approx(0.1)
    assert np.isnan(stats.highlight_saturation(np.full((10, 10, 3), 150, np.uint8)))
    flat = np.full((8, 8, 3), 100, np.uint8)
    a, b = stats.frame_stats(flat), stats.frame_stats(flat + 10)
    assert a["hist"].sum() == pytest.approx(1.0) and a["mean_grey"] == pytest.approx(100)
    assert stats.distance(flat + 10, flat, b, a) == pytest.approx({"label_error": 10.0, "hist_emd": 10.0})
    ideal = photo(8, 32, 32)
    camera = quiet(synthetic.random_camera(np.random.default_rng(2)))
    radiance = synthetic.scene_radiance(ideal, camera)
    target = stats.gray(shot(ideal, 1.3, camera)[::4, ::4].astype(float)).mean()
    assert stats.ev_for_mean(radiance, camera, target, 0.5) == pytest.approx(1.3, abs=0.02)


def test_simulator_stats_runs_on_a_tiny_bracket(tmp_path, capsys):
    data = tmp_path / "brackets"
    for sub in ("images", "refs", "labels"):
        (data / sub).mkdir(parents=True)
    rows = {"over": [], "under": []}
    provenance = []
    for i, ev in enumerate([1.5, -2.0]):
        ideal = photo(10 + i, 24, 32)
        test = synthetic.render(
            synthetic.scene_radiance(ideal, synthetic.SRGB_CAMERA), ev, synthetic.SRGB_CAMERA, np.random.default_rng(i)
        )
        name = f"s{i}_{'P' if ev > 0 else 'N'}2.png"
        Image.fromarray(ideal).save(data / "refs" / f"s{i}_ideal.png")
        Image.fromarray(test).save(data / "images" / name)
        np.save(
            data / "labels" / name.replace(".png", ".npy"),
            (synthetic.gray(ideal.astype(float)) - synthetic.gray(test.astype(float))).astype(np.float32),
        )
        rows["over" if ev > 0 else "under"].append([name, f"s{i}_ideal.png", "8.0", f"x_{name[3:5]}"])
        provenance.append([name, f"{ev:+.2f}"])
    for side, side_rows in rows.items():
        with open(data / f"real_{side}.csv", "w", newline="") as f:
            csv.writer(f).writerows([["img_id", "ref_id", "score", "level"]] + side_rows)
    with open(data / "provenance.csv", "w", newline="") as f:
        csv.writer(f).writerows([["img_id", "ev_estimate"]] + provenance)
    figure = tmp_path / "fig.png"
    simulator_stats().main(
        ["--data", str(data), "--cameras", "2", "--scale", "1", "--figure", str(figure), "--set", "desaturate=0"]
    )
    out = capsys.readouterr().out
    assert "**Over-exposed frames**: 1 real pairs" in out and "**Under-exposed frames**: 1 real pairs" in out
    assert "| label error" in out and "{'desaturate': 0.0}" in out
    assert Image.open(figure).format == "PNG"


def test_black_point_crushes_the_shadows_of_a_dark_frame():
    ideal = np.concatenate([photo(8, 16, 16), all_values()], axis=0)
    base = quiet(synthetic.SRGB_CAMERA)
    dark = shot(ideal, -6.0, base)
    crushed = shot(ideal, -6.0, {**base, "black": 0.04})
    assert (crushed == 0).mean() > (dark == 0).mean() + 0.2
    assert np.array_equal(shot(ideal, 0.0, {**base, "black": 0.04}), ideal)  # still exact at 0 EV
    assert any(c["black"] > 0 for c in cameras()) and any(c["black"] == 0 for c in cameras())


def test_always_levels_are_in_every_crop(corpus, tmp_path):
    synthetic.main(
        [
            "--src",
            str(corpus),
            "--out",
            str(tmp_path / "a"),
            "--size",
            "16",
            "--crops-per-image",
            "3",
            "--levels",
            "N2",
            "P0",
            "P1",
            "P2",
            "--levels-per-crop",
            "2",
            "--always-levels",
            "P0",
            "--workers",
            "1",
            "--camera",
            "srgb",
            "--val-fraction",
            "0",
        ]
    )
    per_ref = {}
    for row in read_csv(tmp_path / "a" / "train.csv"):
        per_ref.setdefault(row["ref_id"], []).append(row["level"])
    assert per_ref and all(len(v) == 2 and "P0" in v for v in per_ref.values())
    assert len({lv for v in per_ref.values() for lv in v}) > 2  # the other level is still drawn
    with pytest.raises(SystemExit):
        synthetic.parse_args(["--out", str(tmp_path), "--levels", "N1", "P1", "--always-levels", "P0"])


def test_lamps_stay_bright_in_a_dark_frame_and_clip_in_the_ideal():
    ideal = photo(9, 48, 48)
    camera = quiet(synthetic.SRGB_CAMERA)
    radiance = synthetic.scene_radiance(ideal, camera)
    lit = synthetic.add_lamps(radiance, camera, np.random.default_rng(3), count=2)
    lamp = lit.max(axis=2) > 16 * radiance.max()  # the lamps' cores: at least 4 stops above the photo's white
    assert 0 < lamp.mean() < 0.2
    at_ideal = synthetic.render(lit, 0.0, camera, None, noisy=False)
    dark = synthetic.render(lit, -6.0, camera, None, noisy=False)
    assert (at_ideal[lamp] == 255).all()  # blown in the ideal
    assert (at_ideal[~lamp] == 255).all(axis=1).mean() < 0.05  # their glow lights the photo, it does not blow it
    assert dark[lamp].max(axis=1).min() > 120  # lamps 4+ stops above white keep their light 6 stops under
    assert np.median(dark[~lamp]) < 40  # while the rest of the frame falls to near black
    untouched = ~lamp & (lit.max(axis=2) == radiance.max(axis=2))  # beyond every glow, the photo is unchanged
    assert np.array_equal(at_ideal[untouched], ideal[untouched])


def assert_same_files(made, reference):
    """``made`` holds exactly the images, labels and refs of ``reference``, byte for byte."""
    for sub in ("images", "labels", "refs"):
        assert sorted(p.name for p in (made / sub).iterdir()) == sorted(p.name for p in (reference / sub).iterdir())
        for path in sorted((reference / sub).iterdir()):
            assert (made / sub / path.name).read_bytes() == path.read_bytes()


def test_lamp_fraction_labels_exact_and_no_lamps_keeps_old_bytes(sources, png_set, tmp_path):
    lit = generate(sources, tmp_path / "lit", "--val-scenes", "delta", "--lamp-fraction", "1")
    check_labels(lit, "png")
    refs = sorted((lit / "refs").iterdir())
    assert any((np.asarray(Image.open(p)) == 255).all(axis=2).any() for p in refs)  # lamps blown in the ideals
    # --lamp-fraction 0 draws nothing more from the random stream: the same bytes as before the option existed
    assert_same_files(generate(sources, tmp_path / "plain", "--val-scenes", "delta", "--lamp-fraction", "0"), png_set)


def test_rule_on_photo_keeps_a_crop_of_its_shadows_dark(tmp_path):
    half = np.full((64, 64, 3), 40, np.uint8)
    source = np.concatenate([half, half + 160], axis=1)  # a dark and a bright half: the whole photo is mid grey
    source = np.clip(source.astype(int) + np.random.default_rng(0).integers(-6, 7, source.shape), 0, 255)
    (tmp_path / "src").mkdir()
    Image.fromarray(source.astype(np.uint8)).save(tmp_path / "src" / "halves.png")
    means = {}
    for rule in ("crop", "photo"):
        out = tmp_path / rule
        synthetic.main(
            [
                "--src",
                str(tmp_path / "src"),
                "--out",
                str(out),
                "--size",
                "24",
                "--crops-per-image",
                "24",
                "--levels",
                "N1",
                "P0",
                "--workers",
                "1",
                "--camera",
                "srgb",
                "--val-fraction",
                "0",
                "--ideal-grey",
                "120",
                "120",
                "--grey-fraction",
                "0",
                "--rule-on",
                rule,
            ]
        )
        check_labels(out, "png")
        means[rule] = [gray_of_file(p).mean() for p in sorted((out / "refs").iterdir())]
    # judged on the whole photo (mid grey, so left as it is) a crop of the dark half stays dark in its ideal ...
    assert min(means["photo"]) < 60 and max(means["photo"]) > 180
    # ... judged on its own every crop is pulled towards the target grey
    assert min(means["crop"]) > 80 and max(means["crop"]) < 160


def test_keep_frames_are_the_crop_as_published_labelled_by_its_own_bytes(sources, png_set, tmp_path):
    kept = generate(
        sources,
        tmp_path / "kept",
        "--val-scenes",
        "delta",
        "--keep-fraction",
        "1",
        "--ideal-grey",
        "200",
        "200",
        "--format",
        "jpg",
    )
    check_labels(kept, "jpg")
    rows = read_csv(kept / "train.csv") + read_csv(kept / "valid.csv")
    keep = [r for r in rows if r["level"] == synthetic.KEEP]
    assert len(keep) == len({r["ref_id"] for r in rows if r["level"] != synthetic.KEEP})  # one per crop
    for row in keep:
        ref = kept / "refs" / row["ref_id"]
        assert row["ref_id"] == row["img_id"].replace(".jpg", ".png") and ref.is_file()
        label = np.load(kept / "labels" / row["img_id"].replace(".jpg", ".npy"))
        # its own ideal: the only residual is the JPEG's, against the crop as published (not re-exposed to grey 200)
        assert np.abs(label).mean() < 3 and gray_of_file(ref).mean() < 170
        bracket_ref = kept / "refs" / (row["ref_id"].rsplit("_", 1)[0] + ".png")
        assert gray_of_file(bracket_ref).mean() > gray_of_file(ref).mean() + 20  # the bracket's ideal was re-exposed
    # --keep-fraction 0 draws nothing more from the random stream: the same bytes as before the option existed
    assert_same_files(generate(sources, tmp_path / "plain", "--val-scenes", "delta", "--keep-fraction", "0"), png_set)


def test_lamp_frames_under_gives_crops_with_lamps_no_over_exposed_frame(sources, tmp_path):
    lit = generate(sources, tmp_path / "lit", "--val-scenes", "delta", "--lamp-fraction", "1", "--lamp-frames", "under")
    check_labels(lit, "png")
    levels = {r["level"] for r in read_csv(lit / "train.csv") + read_csv(lit / "valid.csv")}
    assert levels == {"N2", "P0"}  # of LEVELS, the global ones at or under 0 EV


def test_finished_crops_are_their_own_ideal_at_their_own_key(tmp_path):
    """--finished-fraction 1: every bracket's ideal is the crop as published, however dark (no re-exposure to the
    rule's grey), the crop itself is among its frames labelled exactly 0, and every other frame is measured against
    it."""
    rng = np.random.default_rng(3)
    dark = np.clip(35 + 25 * photo(7, 40, 40).astype(int) / 255 + rng.integers(-4, 5, (40, 40, 3)), 0, 255)
    (tmp_path / "src").mkdir()
    Image.fromarray(dark.astype(np.uint8)).save(tmp_path / "src" / "night.png")
    source_grey = gray_of_file(tmp_path / "src" / "night.png").mean()
    assert source_grey < 60

    def make(out, *extra):
        synthetic.main(
            [
                "--src",
                str(tmp_path / "src"),
                "--out",
                str(out),
                "--size",
                "24",
                "--crops-per-image",
                "4",
                "--levels",
                "N1",
                "P1",
                "--workers",
                "1",
                "--camera",
                "srgb",
                "--val-fraction",
                "0",
                "--grey-fraction",
                "0",
                "--ideal-grey",
                "120",
                "120",
                *extra,
            ]
        )
        return read_csv(out / "train.csv")

    rows = make(tmp_path / "finished", "--finished-fraction", "1")
    check_labels(tmp_path / "finished", "png")
    keep = [r for r in rows if r["level"] == synthetic.KEEP]
    assert len(keep) == 4 and {r["ref_id"] for r in keep} == {r["ref_id"] for r in rows}  # one per crop, same ideal
    for row in keep:
        ref = np.asarray(Image.open(tmp_path / "finished" / "refs" / row["ref_id"]).convert("RGB"))
        # the ideal is a (resized) crop of the photo at its own key, not re-exposed towards grey 120
        assert abs(gray_of_file(tmp_path / "finished" / "refs" / row["ref_id"]).mean() - source_grey) < 8
        assert np.array_equal(np.asarray(Image.open(tmp_path / "finished" / "images" / row["img_id"])), ref)
        assert not np.load(tmp_path / "finished" / "labels" / row["img_id"].replace(".png", ".npy")).any()
    under = [
        np.load(tmp_path / "finished" / "labels" / r["img_id"].replace(".png", ".npy")).mean()
        for r in rows
        if r["level"] == "N1"
    ]
    assert under and min(under) > 5  # a frame a stop under the finished crop needs light back
    # the rule (without the option) re-exposes the same dark crops towards grey 120
    plain = make(tmp_path / "plain")
    assert all(r["level"] != synthetic.KEEP for r in plain)
    assert min(gray_of_file(tmp_path / "plain" / "refs" / r["ref_id"]).mean() for r in plain) > 90
