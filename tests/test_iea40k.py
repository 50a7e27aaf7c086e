import csv
import re

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from pieanet.datasets.iea40k import DatasetError, IEA40KDataset, read_split

H, W = 20, 28


def position_image(h=H, w=W):
    """R = row / (h - 1), G = column / (w - 1), B = 0.5 as uint8: every pixel says where it came from."""
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([y / (h - 1), x / (w - 1), np.full((h, w), 0.5)], axis=-1)
    return np.round(rgb * 255).astype(np.uint8)


def make_dataset(root, n=3, h=H, w=W):
    """A small IEA40K-layout dataset whose label is (R - G) / 2 of its own image, in grey levels."""
    for sub in ("images", "labels", "refs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        rgb = position_image(h, w)
        Image.fromarray(rgb).save(root / "images" / f"s{i}_N1.png")
        Image.fromarray(rgb[..., ::-1].copy()).save(root / "refs" / f"s{i}.png")  # ref = image with R, B swapped
        label = (rgb[..., 0].astype(np.float32) - rgb[..., 1].astype(np.float32)) / 2
        np.save(root / "labels" / f"s{i}_N1.npy", label)
        rows.append({"img_id": f"s{i}_N1.png", "ref_id": f"s{i}.png", "score": 5.0 + i, "level": "N1"})
    write_rows(root / "train.csv", rows)
    return root


def write_rows(path, rows, columns=("img_id", "ref_id", "score", "level")):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def data_root(tmp_path):
    return make_dataset(tmp_path / "iea")


def check_follows(item):
    """The label (and ref) must have moved exactly like the photo: residual == (R - G) / 2 of the item's photo."""
    image, residual = item["image"].double(), item["residual"][0].double()
    assert torch.allclose(residual, (image[0] - image[1]) / 2, atol=1e-5)
    if "ref" in item:
        assert torch.allclose(item["ref"], item["image"].flip(0))


def test_real_split_lists_parse(shared_dir):
    folder = shared_dir / "iea40k"
    counts = {"train_256.csv": 36972, "train_256_2ev.csv": 20540, "valid_256_2ev.csv": 4375}
    scenes = {}
    for name, count in counts.items():
        if not (folder / name).is_file():
            pytest.skip(f"{folder / name} not found")
        rows = read_split(folder / name)
        assert len(rows) == count
        assert rows[0].line == 2 and rows[0].level == ""
        assert all(0.0 <= r.score <= 10.0 for r in rows)
        assert all(r.img_id.endswith(".png") and r.ref_id.endswith(".png") for r in rows)
        scenes[name] = {r.ref_id for r in rows}
    first = read_split(folder / "train_256.csv")[0]
    assert (first.img_id, first.ref_id, first.score) == ("a0001-jmac_DSC1459_N1.png", "a0001-jmac_DSC1459.png", 7.25)
    assert len(scenes["train_256.csv"]) == 4108 and len(scenes["valid_256_2ev.csv"]) == 875
    assert not scenes["train_256.csv"] & scenes["valid_256_2ev.csv"]
    levels = {re.search(r"_([NP]\d)\.png$", r.img_id).group(1) for r in read_split(folder / "train_256.csv")}
    assert levels == {"N4", "N3", "N2", "N1", "P0", "P1", "P2", "P3", "P4"}


def test_real_split_list_without_files_names_first_row(shared_dir, tmp_path):
    csv_path = shared_dir / "iea40k" / "valid_256_2ev.csv"
    if not csv_path.is_file():
        pytest.skip(f"{csv_path} not found")
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    with pytest.raises(
        DatasetError,
        match=r"valid_256_2ev\.csv line 2 \(a4124-20080709_at_10h04m23__MG_4561_N1\.png\)"
        r": image file not found: .*images.*_N1\.png \(8749 more missing",
    ):
        IEA40KDataset(tmp_path, csv_path)


def test_items_match_the_files(data_root):
    ds = IEA40KDataset(data_root, "train.csv", refs_dir="refs")
    assert len(ds) == 3
    item = ds[1]
    assert item["name"] == "s1_N1.png" and item["score"] == 6.0
    rgb = position_image()
    assert torch.equal(item["image"], torch.from_numpy(rgb.astype(np.float32) / 255).permute(2, 0, 1))
    expected = (rgb[..., 0].astype(np.float32) - rgb[..., 1]) / 2 / 255
    assert torch.allclose(item["residual"][0], torch.from_numpy(expected), atol=1e-7)
    assert item["image"].dtype == item["residual"].dtype == torch.float32
    check_follows(item)
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch["image"].shape == (2, 3, H, W) and batch["residual"].shape == (2, 1, H, W)


def test_csv_path_relative_to_root_or_as_given(data_root, monkeypatch):
    monkeypatch.chdir(data_root.parent)
    assert len(IEA40KDataset("iea", "iea/train.csv")) == 3
    assert len(IEA40KDataset("iea", "train.csv")) == 3


@pytest.mark.parametrize("columns, missing", [(("img_id", "score"), "ref_id"), (("ref_id", "level"), "img_id, score")])
def test_missing_columns(data_root, columns, missing):
    rows = [{"img_id": "s0_N1.png", "ref_id": "s0.png", "score": 1, "level": "N1"}]
    write_rows(data_root / "bad.csv", rows, columns)
    with pytest.raises(DatasetError, match=rf"bad\.csv: missing column\(s\) {missing}"):
        IEA40KDataset(data_root, "bad.csv")


def test_bad_score_names_line(data_root):
    rows = [
        {"img_id": "s0_N1.png", "ref_id": "s0.png", "score": 1},
        {"img_id": "s1_N1.png", "ref_id": "s1.png", "score": "high"},
    ]
    write_rows(data_root / "bad.csv", rows)
    with pytest.raises(DatasetError, match=r"bad\.csv line 3 \(s1_N1\.png\): score 'high' is not a number"):
        IEA40KDataset(data_root, "bad.csv")


def test_empty_split(data_root):
    write_rows(data_root / "empty.csv", [])
    with pytest.raises(DatasetError, match="no rows"):
        IEA40KDataset(data_root, "empty.csv")


@pytest.mark.parametrize(
    "victim, kind", [("images/s1_N1.png", "image"), ("labels/s1_N1.npy", "label"), ("refs/s1.png", "ref")]
)
def test_missing_file_names_line_and_file(data_root, victim, kind):
    (data_root / victim).unlink()
    with pytest.raises(
        DatasetError,
        match=rf"train\.csv line 3 \(s1_N1\.png\): {kind} file not found: "
        rf".*{re.escape(victim.split('/')[1])}$",
    ):
        IEA40KDataset(data_root, "train.csv", refs_dir="refs")


def test_missing_folder(data_root):
    with pytest.raises(DatasetError, match=r"labels folder .*gt not found"):
        IEA40KDataset(data_root, "train.csv", labels_dir="gt")


def label_error(data_root, label, **kwargs):
    np.save(data_root / "labels" / "s2_N1.npy", label)
    ds = IEA40KDataset(data_root, "train.csv", **kwargs)
    ds[0]  # the other rows are unaffected
    return ds


@pytest.mark.parametrize(
    "value, message",
    [(np.nan, "contains NaN or inf"), (np.inf, "contains NaN or inf"), (-300.0, "reaches 300, beyond \\+-255")],
)
def test_bad_label_values(data_root, value, message):
    label = np.zeros((H, W), np.float32)
    label[3, 4] = value
    ds = label_error(data_root, label)
    with pytest.raises(DatasetError, match=rf"train\.csv line 4 \(s2_N1\.png\): .*s2_N1\.npy: label {message}"):
        ds[2]


def test_label_scale(data_root):
    np.save(data_root / "labels" / "s2_N1.npy", np.full((H, W), 0.5, np.float32))  # a residual stored as a fraction
    ds = IEA40KDataset(data_root, "train.csv", label_scale=1.0)
    assert torch.all(ds[2]["residual"] == 0.5)
    with pytest.raises(DatasetError, match=r"line 2 \(s0_N1\.png\): .*label reaches 127\.5, beyond \+-1 "):
        ds[0]  # grey levels read with the wrong scale
    with pytest.raises(DatasetError, match="label_scale"):
        IEA40KDataset(data_root, "train.csv", label_scale=0)


def test_label_at_full_scale_accepted(data_root):
    label = np.full((H, W), 255.0, np.float32)
    assert torch.all(label_error(data_root, label)[2]["residual"] == 1.0)


def test_label_shape_mismatch(data_root):
    label = np.full((H // 2, W // 2), 51.0, np.float32)
    with pytest.raises(
        DatasetError,
        match=rf"line 4 \(s2_N1\.png\): .*s2_N1\.npy: label is {H // 2}x{W // 2} but "
        rf"the image is {H}x{W}",
    ):
        label_error(data_root, label)[2]
    with pytest.warns(UserWarning, match=r"s2_N1\.npy: label is .* resized to the image"):
        residual = label_error(data_root, label, allow_label_resize=True)[2]["residual"]
    assert residual.shape == (1, H, W) and torch.allclose(residual, torch.tensor(0.2))


def test_label_with_channel_axis_and_bad_rank(data_root):
    label = np.full((H, W, 1), 25.5, np.float32)
    assert torch.allclose(label_error(data_root, label)[2]["residual"], torch.tensor(0.1))
    with pytest.raises(DatasetError, match=r"s2_N1\.npy: label is float32 \(2, 20, 28\); expected a numeric H x W"):
        label_error(data_root, np.zeros((2, H, W), np.float32))[2]


def test_corrupt_files(data_root):
    (data_root / "labels" / "s2_N1.npy").write_bytes(b"not numpy")
    (data_root / "images" / "s1_N1.png").write_bytes(b"\x89PNG truncated")
    ds = IEA40KDataset(data_root, "train.csv")
    with pytest.raises(DatasetError, match=r"line 4 \(s2_N1\.png\): .*s2_N1\.npy: unreadable label"):
        ds[2]
    with pytest.raises(DatasetError, match=r"line 3 \(s1_N1\.png\): .*s1_N1\.png: not a readable image"):
        ds[1]


def test_ref_shape_mismatch(data_root):
    Image.fromarray(position_image(H, W + 2)).save(data_root / "refs" / "s0.png")
    with pytest.raises(DatasetError, match=r"line 2 \(s0_N1\.png\): .*s0\.png: ref is 20x30 but the image is 20x28"):
        IEA40KDataset(data_root, "train.csv", refs_dir="refs")[0]


def test_geometric_augmentation_moves_label_and_ref_with_photo(data_root):
    ds = IEA40KDataset(data_root, "train.csv", refs_dir="refs", crop=12, augment=True, seed=3)
    corners = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            assert item["image"].shape == (3, 12, 12) and item["residual"].shape == (1, 12, 12)
            check_follows(item)
            r, g = item["image"][0], item["image"][1]
            corners.add(
                (bool(r[-1, 0] > r[0, 0]), bool(g[0, -1] > g[0, 0]), round(float(r[0, 0]), 3), round(float(g[0, 0]), 3))
            )
    flips = {c[:2] for c in corners}
    assert flips == {(True, True), (True, False), (False, True), (False, False)}  # both flips, both ways
    assert len({c[2:] for c in corners}) > 4  # crops at many places


def test_teacher_maps_follow_the_photo_and_are_found_by_content(data_root):
    """A teacher map is keyed by the photo's bytes (datasets/teacher.py) and moves with photo, label and ref; a photo
    without a map gets zeros and has_teacher False."""
    from pieanet.utils.image_io import file_sha256

    rgb = position_image()
    rgb[..., 2] = 7  # s1 differs from s0 and s2 (which share bytes, hence a map) only in blue: R - G is unchanged
    Image.fromarray(rgb).save(data_root / "images" / "s1_N1.png")
    Image.fromarray(rgb[..., ::-1].copy()).save(data_root / "refs" / "s1.png")
    cache = data_root / "cache"
    cache.mkdir()
    label = np.load(data_root / "labels" / "s0_N1.npy")
    np.save(cache / f"{file_sha256(data_root / 'images' / 's0_N1.png')}.npy", -label / 2)  # teacher = -label / 2
    ds = IEA40KDataset(data_root, "train.csv", refs_dir="refs", crop=12, augment=True, seed=5, teacher_dir=cache)
    assert ds.teacher_count == 2 and [p is not None for p in ds.teacher_maps] == [True, False, True]
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            check_follows(item)
            assert item["teacher"].shape == (1, 12, 12) and item["has_teacher"] == (i != 1)
            expected = -item["residual"] / 2 if i != 1 else torch.zeros(1, 12, 12)
            assert torch.allclose(item["teacher"], expected, atol=1e-6)
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["has_teacher"].tolist() == [True, False, True]
    assert "teacher" not in IEA40KDataset(data_root, "train.csv")[0]  # without teacher_dir, as before


def test_teacher_map_problems_name_the_file(data_root):
    with pytest.raises(DatasetError, match=r"train\.csv: teacher_dir .*nowhere not found"):
        IEA40KDataset(data_root, "train.csv", teacher_dir=data_root / "nowhere")
    (data_root / "cache").mkdir()
    from pieanet.utils.image_io import file_sha256

    bad = data_root / "cache" / f"{file_sha256(data_root / 'images' / 's0_N1.png')}.npy"
    np.save(bad, np.zeros((H, W + 1), np.float32))
    with pytest.raises(
        DatasetError,
        match=rf"line 2 \(s0_N1\.png\): .*{bad.name}: teacher map is 20x29 but the "
        r"image is 20x28",
    ):
        IEA40KDataset(data_root, "train.csv", teacher_dir=data_root / "cache")[0]


def test_resize_longer_side_keeps_label_consistent(data_root):
    ds = IEA40KDataset(data_root, "train.csv", refs_dir="refs", size=14)
    item = ds[0]
    assert item["image"].shape == (3, 10, 14) and item["residual"].shape == (1, 10, 14)
    check_follows(item)
    assert item["image"].min() >= 0 and item["image"].max() <= 1
    up = IEA40KDataset(data_root, "train.csv", size=56, crop=32, augment=True)[0]
    assert up["image"].shape == (3, 32, 32)
    check_follows(up)


def test_centre_crop_without_augment(data_root):
    item = IEA40KDataset(data_root, "train.csv", crop=8)[0]
    full = IEA40KDataset(data_root, "train.csv")[0]
    top, left = (H - 8) // 2, (W - 8) // 2
    assert torch.equal(item["image"], full["image"][:, top : top + 8, left : left + 8])
    assert torch.equal(item["residual"], full["residual"][:, top : top + 8, left : left + 8])


@pytest.mark.parametrize("kwargs", [{"size": 0}, {"crop": [8, 8]}, {"crop": 2.5}])
def test_bad_size_or_crop(data_root, kwargs):
    with pytest.raises(DatasetError, match=f"{next(iter(kwargs))} .* must be a positive integer or None"):
        IEA40KDataset(data_root, "train.csv", **kwargs)


def test_crop_larger_than_image(data_root):
    with pytest.raises(DatasetError, match=r"line 2 \(s0_N1\.png\): image is 20x28; expected at least the crop 24x24"):
        IEA40KDataset(data_root, "train.csv", crop=24)[0]


def test_photometric_noise_leaves_label_alone(data_root):
    clean = IEA40KDataset(data_root, "train.csv", crop=12, augment=True, seed=5)
    noisy = IEA40KDataset(data_root, "train.csv", crop=12, augment=True, seed=5, noise_std=0.05)
    for i in range(len(clean)):
        a, b = clean[i], noisy[i]
        assert torch.equal(a["residual"], b["residual"])
        difference = (b["image"] - a["image"]).abs()
        assert difference.max() > 0.02 and 0.02 < difference.mean() < 0.06
        assert b["image"].min() >= 0 and b["image"].max() <= 1
    # without augment there is no noise
    assert torch.equal(
        IEA40KDataset(data_root, "train.csv", noise_std=0.05)[0]["image"],
        IEA40KDataset(data_root, "train.csv")[0]["image"],
    )


def test_augmentation_is_a_function_of_seed_epoch_index(data_root):
    def crops(seed, epoch):
        ds = IEA40KDataset(data_root, "train.csv", crop=10, augment=True, seed=seed, noise_std=0.01)
        ds.set_epoch(epoch)
        return [ds[i]["image"] for i in (2, 0, 1, 2)]  # any order, repeated reads

    first = crops(0, 1)
    assert all(torch.equal(a, b) for a, b in zip(first, crops(0, 1)))
    assert torch.equal(first[0], first[3])
    assert not all(torch.equal(a, b) for a, b in zip(first, crops(0, 2)))
    assert not all(torch.equal(a, b) for a, b in zip(first, crops(1, 1)))


# ------------------------------------------------------------------ bad datasets: one DatasetError, never a traceback
@pytest.mark.parametrize(
    "content, message",
    [
        (b"\xff\xfe\x00\x01garbage\n", "not a UTF-8 CSV"),
        (b"img_id,ref_id,score,score\na.png,a.png,5,6\n", "appear more than once"),
    ],
)
def test_unreadable_split_lists_are_one_dataset_error(tmp_path, content, message):
    (tmp_path / "list.csv").write_bytes(content)
    with pytest.raises(DatasetError, match=message):
        read_split(tmp_path / "list.csv")


def test_a_split_list_for_evaluation_needs_only_img_id(tmp_path):
    (tmp_path / "list.csv").write_bytes(b"\xef\xbb\xbfimg_id\na.png\n")  # with a byte-order mark
    (row,) = read_split(tmp_path / "list.csv", required=("img_id",))
    assert row.img_id == "a.png" and np.isnan(row.score)


@pytest.mark.parametrize(
    "label, message",
    [
        (np.zeros((0, 0), np.float32), "expected a numeric H x W array"),
        (np.zeros((H, W), np.complex64), "expected a numeric H x W array"),
        (np.full((H, W), np.nan, np.float32), "NaN or inf"),
        (np.full((H, W), 300, np.float32), "beyond"),
    ],
)
def test_bad_labels_are_one_dataset_error_from_the_shared_reader(data_root, label, message):
    from pieanet.datasets.iea40k import read_label

    np.save(data_root / "labels" / "s0_N1.npy", label)
    with pytest.raises(DatasetError, match=message) as info:
        read_label(data_root / "labels" / "s0_N1.npy")
    assert str(info.value).startswith(str(data_root / "labels" / "s0_N1.npy"))
    with pytest.raises(DatasetError, match=message):
        IEA40KDataset(data_root, "train.csv")[0]


@pytest.mark.parametrize(
    "option", [{"label_scale": "abc"}, {"noise_std": "abc"}, {"noise_std": -1.0}, {"label_scale": float("inf")}]
)
def test_bad_dataset_options_are_one_dataset_error(data_root, option):
    with pytest.raises(DatasetError, match="must be a"):
        IEA40KDataset(data_root, "train.csv", **option)


def test_a_nan_image_is_one_dataset_error(data_root):
    Image.fromarray(np.full((H, W), np.nan, np.float32), mode="F").save(data_root / "images" / "n.tif")
    np.save(data_root / "labels" / "n.npy", np.zeros((H, W), np.float32))
    write_rows(data_root / "n.csv", [{"img_id": "n.tif", "ref_id": "s0.png", "score": 5}])
    with pytest.raises(DatasetError, match="NaN or infinite"):
        IEA40KDataset(data_root, "n.csv")[0]
