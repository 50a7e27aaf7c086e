"""The teacher-map cache for distillation (datasets/teacher.py): maps in grey levels, keyed by the teacher file's and
the image's content, deterministic, resumable, refusing a cache of another teacher."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from pieanet.datasets import teacher
from pieanet.datasets.teacher import TeacherCache, TeacherError, fill, image_list, load_teacher
from pieanet.models.official import OfficialPIEANet


@pytest.fixture(scope="module")
def stand_in():
    """The released network's wrapper (OfficialPIEANet: resize to 256 x 256, run, resize back, clip) around a tiny
    random-weight network in place of the released one, whose 79 GFLOP a photo would take seconds each."""
    torch.manual_seed(3)
    model = OfficialPIEANet()
    model.net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(4, 1, 3, padding=1)
    )
    return model.eval()


class Counting(torch.nn.Module):
    """Counts the photos the teacher runs on."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, x):
        self.calls += x.shape[0]
        return self.model(x)


def teacher_file(folder, name="teacher.pth", content=b"weights A"):
    """A stand-in teacher file: the cache only hashes it when the model is passed in."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(content)
    return folder / name


def save_photo(path, seed, height=40, width=56):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def test_a_map_is_the_teachers_r_in_grey_levels_at_the_photos_size(stand_in, tmp_path):
    photo = save_photo(tmp_path / "a.png", seed=1, height=40, width=56)
    cache = TeacherCache(tmp_path / "cache", teacher_file(tmp_path), model=stand_in)
    grey, hit = cache.get(photo)
    assert not hit and grey.dtype == np.float32 and grey.shape == (40, 56)
    with torch.no_grad():  # the wrapper's own resize to 256 and back, by hand
        x = torch.from_numpy(np.asarray(Image.open(photo), np.float32) / 255).permute(2, 0, 1)[None]
        small = torch.nn.functional.interpolate(
            x, size=(256, 256), mode="bilinear", align_corners=False, antialias=True
        )
        r = (
            torch.nn.functional.interpolate(stand_in.net(small), size=(40, 56), mode="bilinear", align_corners=False)
            .clamp(-1, 1)[0, 0]
            .numpy()
        )
    np.testing.assert_allclose(grey, r * 255, atol=1e-3)
    stored = cache.folder / f"{teacher.file_sha256(photo)}.npy"
    np.testing.assert_array_equal(np.load(stored), grey)
    assert sorted(p.name for p in cache.folder.iterdir()) == sorted([stored.name, "teacher.json"])  # no temporaries


def test_maps_are_deterministic_and_batch_independent(stand_in, tmp_path):
    photos = [save_photo(tmp_path / "in" / f"p{i}.png", seed=i) for i in range(3)]
    one = TeacherCache(tmp_path / "one", teacher_file(tmp_path), model=stand_in)
    two = TeacherCache(tmp_path / "two", teacher_file(tmp_path), model=stand_in)
    assert fill(one, photos, workers=1)[:2] == (3, 0)
    assert fill(two, photos[::-1], workers=3)[:2] == (3, 0)  # another order, three at a time
    for photo in photos:
        assert one.path_of(photo).read_bytes() == two.path_of(photo).read_bytes()  # bit for bit


def test_a_cached_map_is_not_computed_again(stand_in, tmp_path):
    photos = [save_photo(tmp_path / "in" / f"p{i}.png", seed=i) for i in range(3)]
    (tmp_path / "in" / "copy.png").write_bytes(photos[0].read_bytes())  # the same bytes under another name
    counting = Counting(stand_in)
    cache = TeacherCache(tmp_path / "cache", teacher_file(tmp_path), model=counting)
    assert fill(cache, photos + [tmp_path / "in" / "copy.png"])[:2] == (3, 1) and counting.calls == 3
    again = TeacherCache(tmp_path / "cache", teacher_file(tmp_path), model=counting)  # a later run
    assert fill(again, photos)[:2] == (0, 3) and counting.calls == 3


def test_a_changed_image_is_computed_again(stand_in, tmp_path):
    photo = save_photo(tmp_path / "a.png", seed=1)
    counting = Counting(stand_in)
    cache = TeacherCache(tmp_path / "cache", teacher_file(tmp_path), model=counting)
    before, _ = cache.get(photo)
    save_photo(photo, seed=2)  # same name, new content
    after, hit = cache.get(photo)
    assert not hit and counting.calls == 2 and not np.array_equal(before, after)


def test_a_cache_of_another_teacher_is_refused(stand_in, tmp_path):
    photo = save_photo(tmp_path / "a.png", seed=1)
    TeacherCache(tmp_path / "cache", teacher_file(tmp_path / "A"), model=stand_in).get(photo)
    other = teacher_file(tmp_path / "B", content=b"weights B")
    with pytest.raises(TeacherError) as error:
        TeacherCache(tmp_path / "cache", other, model=stand_in)
    message = str(error.value)
    assert message.startswith(str(other)) and "teacher.pth" in message and "\n" not in message
    assert "use another --cache" in message


def test_a_checkpoint_that_is_not_the_released_network_is_refused(tiny_checkpoint, tmp_path):
    with pytest.raises(TeacherError, match="expected the released P-IEANet"):
        load_teacher(tiny_checkpoint)
    with pytest.raises(TeacherError):
        TeacherCache(tmp_path / "cache", tiny_checkpoint)
    assert not (tmp_path / "cache" / "teacher.json").exists()  # a refused teacher claims no cache


def test_command_line_over_a_split_list_with_a_bad_image(stand_in, tmp_path, monkeypatch, capsys):
    root = tmp_path / "data"
    for i in range(2):
        save_photo(root / "images" / f"p{i}.png", seed=i)
    (root / "images" / "broken.png").write_bytes(b"not a png")
    with open(root / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows(
            [["img_id", "ref_id", "score"], ["p0.png", "r", "5"], ["broken.png", "r", "5"], ["p1.png", "r", "5"]]
        )
    counting = Counting(stand_in)
    monkeypatch.setattr(teacher, "load_teacher", lambda path: counting)
    argv = [
        "--data-root",
        str(root),
        "--csv",
        "train.csv",
        "--teacher",
        str(teacher_file(tmp_path)),
        "--cache",
        str(tmp_path / "cache"),
        "--workers",
        "2",
    ]
    assert teacher.main(argv) == 1
    out, err = capsys.readouterr()
    assert "2 maps computed, 0 already cached, 1 failed" in out
    assert err.count("broken.png") == 1 and len([line for line in err.splitlines() if "teacher:" in line]) == 1
    assert teacher.main(argv) == 1 and "0 maps computed, 2 already cached, 1 failed" in capsys.readouterr()[0]
    assert counting.calls == 2
    other = teacher_file(tmp_path / "B", content=b"weights B")
    assert teacher.main(argv[:5] + [str(other)] + argv[6:]) == 2
    assert "not the teacher of the cache" in capsys.readouterr()[1]


def test_a_folder_without_a_split_list_covers_its_images(tmp_path):
    paths = [save_photo(tmp_path / name, seed=i) for i, name in enumerate(["b.png", "a.jpg"])]
    assert image_list(tmp_path) == sorted(paths)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TeacherError, match="no image files"):
        image_list(tmp_path / "empty")


def test_the_released_teacher_reproduces_its_reference_output(official_weights, shared_dir, tmp_path):
    reference = np.load(shared_dir / "official" / "official_reference.npz")
    cache = TeacherCache(tmp_path / "cache", official_weights)
    image = reference["test_low_input"].transpose(1, 2, 0)  # 256 x 256: run as it is, no resize
    grey = cache.compute(image)
    np.testing.assert_allclose(grey, reference["test_low_output"] * 255, atol=255 * 1e-4)
    assert grey.mean() > 0  # under-exposed: the map asks for light
