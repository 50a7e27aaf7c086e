import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image

from pieanet.utils import image_io
from pieanet.utils.heatmap import colorize, overlay, save_colorbar_heatmap
from pieanet.utils.image_io import ImageLoadError, atomic_write, list_images, load_image, save_image


def write_png(path, array, bit_depth):
    """A PNG written by hand (Pillow cannot write 16-bit RGB): array H x W (grey) or H x W x 3 (RGB)."""
    height, width = array.shape[:2]
    dtype = ">u2" if bit_depth == 16 else "u1"
    raw = b"".join(b"\x00" + array[y].astype(dtype).tobytes() for y in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    color_type = 2 if array.ndim == 3 else 0
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def rgb_test_pattern(height=6, width=5):
    return (np.arange(height * width * 3).reshape(height, width, 3) * 7 % 256).astype(np.uint8)


# ---- colours ----


def test_colorize_ends_and_middle():
    colours = colorize(np.array([[1.0, 0.0, -1.0]]))[0]
    assert colours.dtype == np.uint8 and colours.shape == (3, 3)
    assert tuple(colours[0]) == (0, 0, 255)  # under-exposed: blue
    assert colours[1].min() >= 250  # ideal: white
    assert tuple(colours[2]) == (255, 0, 0)  # over-exposed: red


def test_colorize_is_bwr_at_one_minus_r_over_two():
    r = np.random.default_rng(0).uniform(-1, 1, size=(7, 9))
    expected = colormaps["bwr"]((1 - r) / 2, bytes=True)[..., :3]
    np.testing.assert_array_equal(colorize(r), expected)
    np.testing.assert_array_equal(colorize(np.full((2, 2), 3.0)), colorize(np.ones((2, 2))))  # clipped


def test_overlay_blends_photo_and_heatmap():
    photo = rgb_test_pattern()
    r = np.random.default_rng(1).uniform(-1, 1, size=photo.shape[:2])
    np.testing.assert_array_equal(overlay(photo, r, opacity=0.0), photo)
    # at full opacity over a white photo the overlay is the heatmap, up to bwr's 256-entry table (more cases:
    # tests/test_heatmap.py)
    white = np.full_like(photo, 255)
    assert np.abs(overlay(white.astype(np.float32) / 255, r, opacity=1.0).astype(int) - colorize(r)).max() <= 3
    with pytest.raises(ValueError):
        overlay(photo, r[:-1])


def test_colorbar_figure_is_written(tmp_path):
    path = tmp_path / "bar.png"
    save_colorbar_heatmap(path, np.linspace(-1, 1, 40 * 30).reshape(30, 40), title="ramp")
    with Image.open(path) as img:
        figure = np.asarray(img.convert("RGB"))
    assert figure.shape[1] > 40
    # both ends of the bar are drawn: pure blue and pure red pixels exist
    assert ((figure == (0, 0, 255)).all(axis=2)).any() and ((figure == (255, 0, 0)).all(axis=2)).any()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bar.png"]


# ---- loading ----


def test_rgb_png_round_trip(tmp_path):
    pattern = rgb_test_pattern()
    save_image(tmp_path / "a.png", pattern)
    image = load_image(tmp_path / "a.png")
    assert image.dtype == np.float32 and image.shape == (6, 5, 3)
    np.testing.assert_allclose(image, pattern / 255.0, atol=1e-7)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "1"])
def test_other_modes_become_rgb_like_pillow_converts_them(tmp_path, mode):
    img = Image.fromarray(rgb_test_pattern()).convert(mode)
    path = tmp_path / ("a.jpg" if mode == "CMYK" else "a.png")
    img.save(path)
    with Image.open(path) as reference:
        expected = np.asarray(reference.convert("RGB")) / 255.0
    np.testing.assert_allclose(load_image(path), expected, atol=1e-6)
    if mode == "L":
        image = load_image(path)
        assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()


def test_16_bit_grey_png_scaled_by_65535(tmp_path):
    values = np.array([[0, 1000, 32768], [40000, 65534, 65535]], dtype=np.uint16)
    write_png(tmp_path / "g16.png", values, 16)
    image = load_image(tmp_path / "g16.png")
    np.testing.assert_allclose(image[..., 1], values / 65535.0, atol=1e-7)
    assert (image[..., 0] == image[..., 2]).all()


def test_16_bit_rgb_png_within_one_grey_level(tmp_path):
    values = (np.random.default_rng(2).integers(0, 65536, size=(4, 3, 3))).astype(np.uint16)
    write_png(tmp_path / "rgb16.png", values, 16)
    np.testing.assert_allclose(load_image(tmp_path / "rgb16.png"), values / 65535.0, atol=1 / 255)


def test_16_bit_rgb_tiff_within_one_grey_level(tmp_path):
    tifffile = pytest.importorskip("tifffile", reason="tifffile (a scikit-image dependency) writes 16-bit RGB TIFF")
    values = (np.random.default_rng(3).integers(0, 65536, size=(4, 3, 3))).astype(np.uint16)
    tifffile.imwrite(tmp_path / "rgb16.tif", values, photometric="rgb")
    np.testing.assert_allclose(load_image(tmp_path / "rgb16.tif"), values / 65535.0, atol=1 / 255)


def test_alpha_is_composited_over_white(tmp_path):
    rgba = np.array([[[255, 0, 0, 0], [255, 0, 0, 255], [0, 0, 0, 51]]], dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    np.testing.assert_allclose(image[0, 0], [1, 1, 1], atol=1e-6)  # transparent -> white
    np.testing.assert_allclose(image[0, 1], [1, 0, 0], atol=1e-6)  # opaque -> its colour
    np.testing.assert_allclose(image[0, 2], [0.8, 0.8, 0.8], atol=1e-6)  # 20 % black over white


def test_exif_rotation_is_applied(tmp_path):
    pixels = np.zeros((2, 4, 3), dtype=np.uint8)
    pixels[0, 0] = 255  # top-left marker
    img = Image.fromarray(pixels)
    exif = img.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    img.save(tmp_path / "r.png", exif=exif)
    image = load_image(tmp_path / "r.png")
    assert image.shape == (4, 2, 3)
    np.testing.assert_array_equal(image, np.rot90(pixels, k=-1) / 255.0)  # marker ends top-right


def test_one_pixel_image(tmp_path):
    Image.new("RGB", (1, 1), (10, 20, 30)).save(tmp_path / "dot.bmp")
    np.testing.assert_allclose(load_image(tmp_path / "dot.bmp")[0, 0], np.array([10, 20, 30]) / 255.0, atol=1e-7)


@pytest.mark.parametrize(
    "name,content,reason",
    [
        ("empty.jpg", b"", "empty file"),
        ("notes.png", b"these are notes, not pixels\n" * 10, "not a readable image"),
        ("noise.tif", bytes(np.random.default_rng(4).integers(0, 256, 3000, dtype=np.uint8)), "not a readable image"),
    ],
)
def test_unreadable_files_raise_one_line_naming_the_file(tmp_path, name, content, reason):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ImageLoadError) as info:
        load_image(tmp_path / name)
    message = str(info.value)
    assert message.startswith(str(tmp_path / name)) and reason in message and "\n" not in message


def test_truncated_jpeg_raises(tmp_path):
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "f.jpg")
    data = (tmp_path / "f.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="truncated"):
        load_image(tmp_path / "t.jpg")


def test_missing_file_raises(tmp_path):
    with pytest.raises(ImageLoadError, match="not found"):
        load_image(tmp_path / "nothing.jpg")


def test_images_above_the_pixel_limit_are_refused_before_decoding(tmp_path, monkeypatch):
    Image.new("RGB", (20, 10)).save(tmp_path / "a.png")
    monkeypatch.setattr(image_io, "MAX_PIXELS", 199)
    with pytest.raises(ImageLoadError, match="20x10 is 0 MP, above the 0 MP limit"):
        load_image(tmp_path / "a.png")
    monkeypatch.setattr(image_io, "MAX_PIXELS", 200)
    assert load_image(tmp_path / "a.png").shape == (10, 20, 3)


# ---- listing and writing ----


def test_list_images(tmp_path):
    for name in ["b.JPG", "a.png", "c.TiFf", "d.webp", "e.jpeg", "f.bmp", "g.tif", "notes.txt", ".hidden.jpg"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "h.png").write_bytes(b"x")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "i_exposure.png").write_bytes(b"x")
    names = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert names == ["a.png", "b.JPG", "c.TiFf", "d.webp", "e.jpeg", "f.bmp", "g.tif"]
    recursive = [
        p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path, recursive=True, exclude=[tmp_path / "out"])
    ]
    assert recursive == names + ["sub/h.png"]
    assert list_images(tmp_path / "notes.txt") == [tmp_path / "notes.txt"]  # a file named explicitly is tried
    with pytest.raises(FileNotFoundError):
        list_images(tmp_path / "missing")


def test_atomic_write_leaves_nothing_on_failure_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "x.npy"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            np.save(tmp, np.zeros(3))
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    np.save(target, np.ones(2))
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == [target]
    np.testing.assert_array_equal(np.load(target), np.ones(2))
    with atomic_write(target) as tmp:
        assert tmp.suffix == ".npy" and tmp.parent == tmp_path
        np.save(tmp, np.arange(4))
    np.testing.assert_array_equal(np.load(target), np.arange(4))
    assert list(tmp_path.iterdir()) == [target]


def test_save_image_rejects_wrong_arrays(tmp_path):
    with pytest.raises(ValueError):
        save_image(tmp_path / "a.png", np.zeros((2, 2, 3), dtype=np.float32))
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ hardened boundary (issue 9)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_float_tiff_with_non_finite_pixels_is_refused(tmp_path, value):
    pixels = np.full((12, 10), 0.5, np.float32)
    pixels[3, 4] = value
    Image.fromarray(pixels, mode="F").save(tmp_path / "f.tif")
    with pytest.raises(ImageLoadError, match="NaN or infinite") as info:
        load_image(tmp_path / "f.tif")
    assert str(info.value).startswith(f"{tmp_path / 'f.tif'}: ") and "\n" not in str(info.value)


def test_finite_float_tiff_still_reads(tmp_path):
    Image.fromarray(np.full((12, 10), 0.25, np.float32), mode="F").save(tmp_path / "f.tif")
    np.testing.assert_allclose(load_image(tmp_path / "f.tif"), 0.25)


def truncated_jpeg_declaring(path, side):
    Image.new("RGB", (64, 64), (120, 120, 120)).save(path, quality=50)
    data = bytearray(path.read_bytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = side.to_bytes(2, "big") + side.to_bytes(2, "big")
    path.write_bytes(bytes(data[:631]))


def test_truncated_jpeg_declaring_a_huge_size_is_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "bomb.jpg"
    truncated_jpeg_declaring(path, 14000)  # 196 MP: under the pixel limit, but only 631 bytes
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded a file that cannot hold its pixels"))
    with pytest.raises(ImageLoadError, match="14000x14000 .* holds only 631 bytes"):
        load_image(path)


def test_truncated_image_tolerance_stays_off(tmp_path, monkeypatch):
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as some other library might set it
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "a.jpg")
    (tmp_path / "t.jpg").write_bytes((tmp_path / "a.jpg").read_bytes()[:700])
    with pytest.raises(ImageLoadError, match="truncated"):
        load_image(tmp_path / "t.jpg")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is left as it was


def test_list_images_reports_unreadable_sub_folders(tmp_path, monkeypatch):
    import os

    (tmp_path / "sub").mkdir()
    Image.new("RGB", (2, 2)).save(tmp_path / "a.png")
    real_scandir = os.scandir

    def scandir(folder):  # root reads every folder, so the failure is simulated (list_images lists with scandir)
        if Path(folder).name == "sub":
            raise PermissionError(13, "Permission denied", folder)
        return real_scandir(folder)

    monkeypatch.setattr(os, "scandir", scandir)
    errors = []
    assert list_images(tmp_path, recursive=True, errors=errors) == [tmp_path / "a.png"]
    assert errors == [(tmp_path / "sub", "folder cannot be read (Permission denied); its images were skipped")]
    with pytest.raises(PermissionError):
        list_images(tmp_path, recursive=True)


def test_atomic_write_gives_the_mode_of_the_current_umask(tmp_path):
    from pieanet.utils.image_io import atomic_write

    previous = os.umask(0o027)
    try:
        with atomic_write(tmp_path / "a.bin") as tmp:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600))  # a writer that makes its file 0600
    finally:
        os.umask(previous)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o640
