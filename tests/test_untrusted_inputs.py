"""Issue 27, files and arrays from anyone: only the promised image formats are decoded (no external program is ever
started), float and 32-bit TIFFs are never clipped silently, crafted .npy / .npz / pickles and teacher.json fields
get one line without numpy's or torch's unsafe advice, and the Python API refuses arrays it cannot judge."""

import ast
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image

from pieanet.utils.image_io import ImageLoadError, load_image

ROOT = Path(__file__).resolve().parents[1]
POSTSCRIPT = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 24\n0 setgray\n0 0 32 24 rectfill\nshowpage\n%%EOF\n"


# ------------------------------------------------------------------------------------------------ decoders
@pytest.mark.parametrize("name", ["dark.png", "holiday.jpg", "scan.tif"])
def test_postscript_under_a_photo_name_is_refused_without_consulting_the_eps_decoder(name, tmp_path, monkeypatch):
    consulted, started = [], []
    factory, accept = Image.OPEN["EPS"]
    monkeypatch.setitem(Image.OPEN, "EPS", (lambda *a: consulted.append(a) or factory(*a), accept))
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: started.append(a))
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", "gs")  # as where Ghostscript is installed
    path = tmp_path / name
    path.write_bytes(POSTSCRIPT)
    with pytest.raises(ImageLoadError, match=f"{name}: not a readable image; expected JPEG"):
        load_image(path)
    assert consulted == [] and started == []


def test_every_image_open_in_the_project_names_its_formats():
    """Image.open without ``formats`` lets Pillow pick any decoder by content (EPS starts Ghostscript)."""
    unnamed = []
    for path in sorted(ROOT.rglob("*.py")):
        if "tests" in path.relative_to(ROOT).parts or ".git" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "open"
                and getattr(node.func.value, "id", None) == "Image"
                and not any(k.arg == "formats" for k in node.keywords)
                and len(node.args) < 3
            ):
                unnamed.append(f"{path.relative_to(ROOT)}:{node.lineno}")
        if "Image.open(sys.argv[1])" in path.read_text(encoding="utf-8"):  # code in a string run by a child
            unnamed.append(f"{path.relative_to(ROOT)} (a command string)")
    assert unnamed == []


# ------------------------------------------------------------------------------------------------ TIFF
def test_a_float_tiff_in_0_255_is_refused_not_read_as_white(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    path = tmp_path / "float255.tif"
    tifffile.imwrite(path, np.linspace(0, 255, 24 * 32, dtype=np.float32).reshape(24, 32))
    with pytest.raises(
        ImageLoadError,
        match=r"float255\.tif: float values from 0 to 255; expected float pixels in "
        r"\[0, 1\]",
    ):
        load_image(path)


def test_a_float_tiff_in_0_1_is_read_as_it_is(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    grey = np.linspace(0, 1, 24 * 32, dtype=np.float32).reshape(24, 32)
    tifffile.imwrite(tmp_path / "float1.tif", grey)
    assert np.array_equal(load_image(tmp_path / "float1.tif"), np.repeat(grey[..., None], 3, axis=2))


@pytest.mark.parametrize("dtype", [np.uint32, np.int32])
def test_a_32_bit_integer_tiff_is_refused_not_divided_by_65535(dtype, tmp_path):
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "deep.tif", np.arange(24 * 32, dtype=dtype).reshape(24, 32) * 1000)
    with pytest.raises(ImageLoadError, match=r"deep\.tif: 32-bit integer samples \(TIFF\); expected 8 or 16 bits"):
        load_image(tmp_path / "deep.tif")


def test_16_bit_greyscale_still_scaled_by_65535(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    grey = (np.arange(24 * 32, dtype=np.uint16) * 80).reshape(24, 32)
    tifffile.imwrite(tmp_path / "g16.tif", grey)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    for name in ("g16.tif", "g16.png"):
        assert np.allclose(load_image(tmp_path / name)[..., 0], grey / 65535.0, atol=1e-6)


# ------------------------------------------------------------------------------------------------ crafted arrays
UNSAFE = ("allow_pickle", "pickle.load", "weights_only")


def crafted(path, kind):
    if kind == "npz":
        with open(path, "wb") as f:
            np.savez(f, label=np.zeros((24, 32), np.float32))
    elif kind == "object array":
        np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    elif kind == "pickle":
        import pickle

        path.write_bytes(pickle.dumps({"label": [1, 2, 3]}))
    elif kind == "text":
        path.write_text("0 1 2\n")
    return path


@pytest.mark.parametrize(
    "kind, said",
    [
        ("npz", "an .npz archive"),
        ("object array", "holds Python objects"),
        ("pickle", "a Python pickle"),
        ("text", "not a .npy array file"),
    ],
)
def test_a_crafted_label_is_one_line_without_numpys_unsafe_advice(kind, said, tmp_path):
    from pieanet.datasets.iea40k import DatasetError, read_label

    path = crafted(tmp_path / "s0_N1.npy", kind)
    with pytest.raises(DatasetError) as raised:
        read_label(path)
    message = str(raised.value)
    assert said in message and "s0_N1.npy" in message and "\n" not in message
    assert not any(advice in message for advice in UNSAFE), message


@pytest.mark.parametrize("kind", ["npz", "object array", "pickle"])
def test_a_crafted_cached_teacher_map_fails_its_photo_in_one_line(kind, tmp_path):
    import torch
    from pieanet.datasets import teacher
    from conftest import save_photo

    photo = save_photo(tmp_path / "in" / "a.png")
    weights = tmp_path / "teacher.pth"
    torch.save({}, weights)
    cache = teacher.TeacherCache(tmp_path / "cache", weights, model=torch.nn.Identity())
    crafted(cache.path_of(photo), kind)
    computed, cached, failed = teacher.fill(cache, [photo])
    ((path, reason),) = failed
    assert path == photo and "\n" not in reason and not any(advice in reason for advice in UNSAFE), reason


@pytest.mark.parametrize(
    "recorded",
    [{"teacher_sha256": 5}, {"teacher_sha256": None}, [], "text", {"teacher_sha256": "ab", "teacher_file": 7}],
)
def test_bad_teacher_json_fields_are_one_line(recorded, tmp_path):
    import torch
    from pieanet.datasets import teacher

    weights = tmp_path / "teacher.pth"
    torch.save({}, weights)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "teacher.json").write_text(json.dumps(recorded))
    with pytest.raises(teacher.TeacherError, match=r"teacher\.json: unreadable cache identity"):
        teacher.TeacherCache(tmp_path / "cache", weights, model=torch.nn.Identity())


# ------------------------------------------------------------------------------------------------ the Python API
@pytest.fixture(scope="module")
def api_model(tiny_checkpoint):
    import pieanet

    return pieanet.load(tiny_checkpoint)


def photo_u8():
    return np.random.default_rng(3).integers(0, 256, (24, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "array, said",
    [
        (lambda p: np.where(np.arange(3) == 0, np.nan, p / 255.0), "NaN or infinite"),
        (lambda p: np.full(p.shape, np.inf), "NaN or infinite"),
        (lambda p: p / 255.0 - 0.5, "float values from -0.5"),
        (lambda p: p.astype(np.float32), "float values from 0 to 255"),
        (lambda p: p.astype(np.int64), "a int64 array; expected uint8"),
        (lambda p: p.astype(np.uint32), "a uint32 array"),
        (lambda p: p.astype(np.complex64) / 255, "a complex64 array"),
        (lambda p: p > 128, "a bool array"),
    ],
)
def test_the_api_refuses_arrays_it_cannot_judge(array, said, api_model):
    import pieanet

    with pytest.raises(ValueError, match=said):
        pieanet.predict(array(photo_u8()), api_model)


def test_the_api_reads_uint16_as_65535ths_and_floats_in_0_1_as_they_are(api_model):
    import pieanet

    photo = photo_u8()
    expected = pieanet.predict(photo, api_model)
    assert np.allclose(pieanet.predict(photo.astype(np.uint16) * 257, api_model), expected, atol=1e-5)
    assert np.allclose(pieanet.predict(photo / 255.0, api_model), expected, atol=1e-5)
    assert np.allclose(pieanet.predict(np.clip(photo / 255.0 + 1e-6, 0, None), api_model), expected, atol=1e-4)


def photo_tensor():
    import torch

    return torch.from_numpy(photo_u8()).permute(2, 0, 1)[None].float() / 255


def with_value(channel, value):
    x = photo_tensor()
    x[0, channel, 5, 7] = value
    return x


@pytest.mark.parametrize(
    "tensor, error, said",
    [
        (lambda: with_value(1, float("nan")), ValueError, "NaN or infinite"),
        (lambda: with_value(2, float("inf")), ValueError, "NaN or infinite"),
        (lambda: with_value(0, -float("inf")), ValueError, "NaN or infinite"),
        (lambda: photo_tensor() * 255, ValueError, r"grey runs from \S+ to 2\d\d"),
        (lambda: photo_tensor() - 0.5, ValueError, r"grey runs from -0\.\d+"),
        (lambda: (photo_tensor() * 255).byte(), TypeError, "a torch.uint8 tensor"),
        (lambda: photo_tensor() > 0.5, TypeError, "a torch.bool tensor"),
        (lambda: photo_tensor().to(__import__("torch").complex64), TypeError, "a torch.complex64 tensor"),
        (lambda: photo_tensor().double(), TypeError, "float64 tensor for a model with torch.float32 weights"),
        (lambda: photo_tensor()[0], ValueError, r"B x 3 x H x W tensor .* shape \(3, 24, 32\)"),
        (lambda: photo_tensor()[:, :2], ValueError, "B x 3 x H x W"),
        (lambda: photo_tensor()[:, :, :0], ValueError, "at least one pixel"),
        (lambda: photo_tensor().numpy(), TypeError, "expected a torch.Tensor"),
    ],
)
def test_the_models_direct_call_refuses_tensors_it_cannot_judge(tensor, error, said, api_model):
    from pieanet.models.inference import predict_tensor

    with pytest.raises(error, match=said):
        predict_tensor(api_model, tensor())


def test_the_models_direct_call_takes_photos_in_0_1_as_pieanet_predict_does(api_model):
    import pieanet
    from pieanet.models.inference import predict_tensor

    expected = pieanet.predict(photo_u8(), api_model)
    assert np.allclose(predict_tensor(api_model, photo_tensor())[0, 0].numpy(), expected, atol=1e-5)
    nudged = (photo_tensor() + 5e-5).clamp(max=1 + 5e-5)  # within FLOAT_RANGE_SLACK of [0, 1]: taken as it is
    assert predict_tensor(api_model, nudged).isfinite().all()


# ------------------------------------------------------------------------------------------------ deep folders
def test_recursive_listing_of_a_folder_1200_levels_deep(tmp_path):
    from pieanet.utils.image_io import list_images
    from conftest import save_photo

    deep = tmp_path / "in"
    deep.mkdir()
    for _ in range(1200):  # one level at a time: pathlib's mkdir(parents=True) recurses too
        deep = deep / "d"
        deep.mkdir()
    save_photo(deep / "bottom.png")
    save_photo(tmp_path / "in" / "top.png")
    errors = []
    try:
        (tmp_path / "out").mkdir()  # excluded, as make_heatmap excludes its output folder (by inode: fast)
        assert list_images(tmp_path / "in", recursive=True, exclude=[tmp_path / "out"], errors=errors) == [
            deep / "bottom.png",
            tmp_path / "in" / "top.png",
        ]
        assert errors == []
    finally:  # removed one level at a time: shutil.rmtree (pytest's clean-up) recurses
        (deep / "bottom.png").unlink()
        while deep != tmp_path / "in":
            deep.rmdir()
            deep = deep.parent
