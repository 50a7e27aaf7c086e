"""Exposure fusion (datasets/fusion.py) and the local-ideal simulator (--fusion-strength)."""

import numpy as np
import pytest
from PIL import Image

from pieanet.datasets import fusion, synthetic
from test_synthetic import LEVELS, check_mixed_labels, generate, gray_of_file, photo, read_csv


def test_pyramid_collapses_back_exactly():
    image = np.random.default_rng(0).random((37, 50, 3))
    levels = fusion.levels_for(image.shape)
    assert levels >= 3
    np.testing.assert_allclose(fusion.collapse(fusion.laplacian_pyramid(image, levels)), image, atol=1e-12)


def test_identical_frames_fuse_to_themselves():
    frame = photo(3, 40, 48)
    fused = fusion.exposure_fusion(np.stack([frame, frame, frame]))
    np.testing.assert_allclose(fused * 255.0, frame, atol=1e-6)


def test_weights_favour_the_well_exposed_frame_pixel_by_pixel():
    # Left half: frame 0 is mid-grey, frame 1 blown; right half: the other way round. Textured so contrast is non-zero.
    rng = np.random.default_rng(1)
    tex = 0.04 * rng.standard_normal((32, 32, 3))
    a = np.concatenate([np.full((32, 16, 3), 0.5), np.full((32, 16, 3), 0.98)], axis=1) + tex
    b = np.concatenate([np.full((32, 16, 3), 0.98), np.full((32, 16, 3), 0.5)], axis=1) + tex
    w = fusion.fusion_weights(np.clip(np.stack([a, b]), 0, 1))
    np.testing.assert_allclose(w.sum(axis=0), 1.0, atol=1e-9)
    assert w[0, :, :12].min() > 0.9 and w[1, :, 20:].min() > 0.9


def test_fusion_opens_shadows_and_keeps_highlights():
    """A window (bright) beside a dark room: the fusion of a bracket is brighter than the middle frame in the room
    and darker than the brightest frame at the window, i.e. local, not one global gain."""
    ideal = np.concatenate([np.full((32, 32, 3), 30, np.uint8), np.full((32, 32, 3), 235, np.uint8)], axis=1)
    ideal = np.clip(ideal + np.random.default_rng(2).integers(-6, 7, ideal.shape), 0, 255).astype(np.uint8)
    camera = synthetic.SRGB_CAMERA
    radiance = synthetic.scene_radiance(ideal, camera)
    frames = np.stack([synthetic.render(radiance, ev, camera, None, noisy=False) for ev in (-2, -1, 0, 1, 2)])
    fused = fusion.exposure_fusion(frames) * 255.0
    room, window = (slice(None), slice(4, 28)), (slice(None), slice(36, 60))
    assert fused[room].mean() > ideal[room].mean() + 15
    assert fused[window].mean() < frames[-1][window].mean() - 5


def test_local_ideal_strength_moves_between_the_photo_and_its_fusion():
    ideal = photo(4, 40, 40)
    camera = synthetic.SRGB_CAMERA
    radiance = synthetic.scene_radiance(ideal, camera)
    evs = [-2.0, -1.0, 0.0, 1.0, 2.0]
    assert np.array_equal(synthetic.local_ideal(ideal, radiance, camera, 0.0, evs, 0.0), ideal)
    full = synthetic.local_ideal(ideal, radiance, camera, 0.0, evs, 1.0).astype(float)
    half = synthetic.local_ideal(ideal, radiance, camera, 0.0, evs, 0.5).astype(float)
    np.testing.assert_allclose(half, np.round((ideal + full) / 2), atol=1.01)


@pytest.fixture(scope="module")
def local_set(sources, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "set"
    return generate(
        sources,
        out,
        "--camera",
        "random",
        "--format",
        "camera",
        "--val-scenes",
        "delta",
        "--ideal-grey",
        "0",
        "0",
        "--fusion-strength",
        "0.3",
    )


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    src = tmp_path_factory.mktemp("src")
    for seed, (name, h, w) in enumerate([("alpha", 40, 52), ("beta", 48, 36), ("gamma", 44, 44), ("delta", 36, 36)]):
        Image.fromarray(photo(seed + 1, h, w)).save(src / f"{name}.png")
    return src


def test_local_ideal_labels_are_exact_for_the_saved_files(local_set):
    rows = check_mixed_labels(local_set)
    assert len(rows) == 4 * 2 * len(LEVELS)


def test_local_ideal_differs_from_the_photo_crop(sources, local_set, tmp_path):
    kept = generate(
        sources,
        tmp_path / "kept",
        "--camera",
        "random",
        "--format",
        "camera",
        "--val-scenes",
        "delta",
        "--ideal-grey",
        "0",
        "0",
    )
    refs = sorted((local_set / "refs").iterdir())
    moved = [np.abs(gray_of_file(r) - gray_of_file(kept / "refs" / r.name)).mean() for r in refs]
    assert max(moved) > 0.5  # the fusion changed the ideals ...
    for row in read_csv(kept / "train.csv"):  # ... while the frames, drawn from the same seeds, are the same bytes
        assert (kept / "images" / row["img_id"]).read_bytes() == (local_set / "images" / row["img_id"]).read_bytes()


def test_local_ideal_labels_fall_monotonically_with_ev(sources, tmp_path):
    levels = ["N6", "N4", "N2", "P0", "P2", "P4"]
    out = synthetic.main(
        [
            "--src",
            str(sources),
            "--out",
            str(tmp_path / "ev"),
            "--size",
            "24",
            "--crops-per-image",
            "2",
            "--levels",
            *levels,
            "--workers",
            "1",
            "--camera",
            "srgb",
            "--val-fraction",
            "0",
            "--ideal-grey",
            "0",
            "0",
            "--fusion-strength",
            "0.3",
        ]
    )
    assert out is None
    means = {}
    for row in read_csv(tmp_path / "ev" / "train.csv"):
        label = np.load(tmp_path / "ev" / "labels" / row["img_id"].replace(".png", ".npy"))
        means.setdefault(row["ref_id"], {})[row["level"]] = float(label.mean())
    for ref, by_level in means.items():
        series = [by_level[lv] for lv in levels]
        assert all(a > b for a, b in zip(series, series[1:])), (ref, series)


def test_bad_fusion_options_rejected(sources, tmp_path):
    for extra in (["--fusion-strength", "1.5"], ["--fusion-evs", "-9", "0"]):
        with pytest.raises(SystemExit):
            synthetic.parse_args(["--out", str(tmp_path), *extra])
