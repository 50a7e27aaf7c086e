"""Phone and camera formats: HEIC/HEIF through pillow-heif, camera RAW through rawpy, --raw-clipping.

The RAW files are minimal uncompressed DNGs written here by hand (``write_dng``), so every expected value is
computed from the numbers put into the file: the linear scene level, the black and white levels, the white balance.
"""

import csv
import struct

import numpy as np
import pillow_heif
import pytest
from PIL import Image, features

from pieanet import make_heatmap
from pieanet.utils.image_io import IMAGE_EXTENSIONS, ImageLoadError, list_images, load_image

BLACK, WHITE = 64, 4095
AS_SHOT_NEUTRAL = (0.5, 1.0, 0.8)  # the camera's red and blue read 0.5x and 0.8x green on a grey subject
# XYZ (D65) -> linear sRGB: as the DNG ColorMatrix1 it makes the camera's channels linear sRGB
XYZ_TO_SRGB = np.linalg.inv(
    np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]])
)
BYTE, ASCII, SHORT, LONG, RATIONAL, SRATIONAL = 1, 2, 3, 4, 5, 10
TIFF_PACKING = {BYTE: "B", SHORT: "H", LONG: "I", RATIONAL: "I", SRATIONAL: "i"}


def write_dng(path, raw, orientation=1, neutral=AS_SHOT_NEUTRAL, black=BLACK, white=WHITE, declared=None):
    """A minimal uncompressed DNG: one little-endian TIFF IFD holding ``raw`` (H x W uint16) as an RGGB mosaic;
    ``declared`` (width, height) puts another size in the header than the pixels that follow."""
    width, height = declared or raw.shape[::-1]
    pixels = raw.astype("<u2").tobytes()

    def fractions(values):
        return [part for v in values for part in (round(v * 1_000_000), 1_000_000)]

    entries = [  # (tag, type, values), in ascending tag order as TIFF requires
        (254, LONG, [0]),
        (256, LONG, [width]),
        (257, LONG, [height]),
        (258, SHORT, [16]),
        (259, SHORT, [1]),
        (262, SHORT, [32803]),
        (271, ASCII, b"Test\0"),
        (272, ASCII, b"Mosaic\0"),
        (273, LONG, [0]),
        (274, SHORT, [orientation]),
        (277, SHORT, [1]),
        (278, LONG, [height]),
        (279, LONG, [len(pixels)]),
        (284, SHORT, [1]),
        (33421, SHORT, [2, 2]),
        (33422, BYTE, [0, 1, 1, 2]),
        (50706, BYTE, [1, 4, 0, 0]),
        (50707, BYTE, [1, 1, 0, 0]),
        (50708, ASCII, b"Test Mosaic\0"),
        (50710, BYTE, [0, 1, 2]),
        (50711, SHORT, [1]),
        (50714, LONG, [black]),
        (50717, LONG, [white]),
        (50721, SRATIONAL, fractions(XYZ_TO_SRGB.ravel())),
        (50728, RATIONAL, fractions(neutral)),
        (50778, SHORT, [21]),  # CalibrationIlluminant1: D65
    ]
    ifd_size = 2 + 12 * len(entries) + 4
    values_at = 8 + ifd_size
    fields, values = [], b""
    for tag, kind, items in entries:
        if kind == ASCII:
            payload, count = items, len(items)
        else:
            payload = struct.pack(f"<{len(items)}{TIFF_PACKING[kind]}", *items)
            count = len(items) // 2 if kind in (RATIONAL, SRATIONAL) else len(items)
        if len(payload) <= 4:
            fields.append((tag, kind, count, payload.ljust(4, b"\0")))
        else:
            fields.append((tag, kind, count, struct.pack("<I", values_at + len(values))))
            values += payload + b"\0" * (len(payload) % 2)
    pixels_at = values_at + len(values)
    fields = [(t, k, c, struct.pack("<I", pixels_at) if t == 273 else f) for t, k, c, f in fields]
    ifd = (
        struct.pack("<H", len(fields))
        + b"".join(struct.pack("<HHI", *head) + f for *head, f in fields)
        + struct.pack("<I", 0)
    )
    path.write_bytes(b"II*\0" + struct.pack("<I", 8) + ifd + values + pixels)


def rggb(height, width):
    """The channel (0 red, 1 green, 2 blue) of each photosite of an RGGB mosaic."""
    channel = np.ones((height, width), dtype=int)
    channel[0::2, 0::2] = 0
    channel[1::2, 1::2] = 2
    return channel


def grey_scene(level, height=32, width=48):
    """Raw values of a grey subject at linear ``level`` (1 = the white level) as the camera records it: each
    channel scaled by the as-shot neutral, on top of the black level."""
    gain = np.array(AS_SHOT_NEUTRAL)[rggb(height, width)]
    return np.round(BLACK + level * gain * (WHITE - BLACK)).astype(np.uint16)


def srgb_8bit(linear):
    """The sRGB transfer function, in 8-bit steps."""
    encoded = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * np.power(linear, 1 / 2.4) - 0.055)
    return 255.0 * encoded


def grown(mask):
    """Hand-written 3 x 3 dilation (any of the 9 neighbours)."""
    padded = np.pad(mask, 1)
    height, width = mask.shape
    return np.any([padded[dy : dy + height, dx : dx + width] for dy in range(3) for dx in range(3)], axis=0)


def smooth_photo(height=48, width=64):
    y, x = np.mgrid[0:height, 0:width]
    return np.dstack([40 + 3 * x, 30 + 4 * y, 200 - 2 * x - y]).astype(np.uint8)


# ---- HEIC / HEIF ----


def test_heic_and_heif_are_read_close_to_what_was_encoded(tmp_path):
    photo = smooth_photo()
    pillow_heif.from_pillow(Image.fromarray(photo)).save(tmp_path / "phone.heic", quality=95)
    pillow_heif.from_pillow(Image.fromarray(photo)).save(tmp_path / "phone.HEIF", quality=95)
    assert {".heic", ".heif"} <= IMAGE_EXTENSIONS
    assert [p.name for p in list_images(tmp_path)] == ["phone.HEIF", "phone.heic"]
    for name in ["phone.heic", "phone.HEIF"]:
        image = load_image(tmp_path / name)
        assert image.dtype == np.float32 and image.shape == photo.shape
        error = np.abs(image * 255 - photo)
        assert error.mean() < 1.5 and error.max() < 8  # HEVC is lossy, 4:2:0 chroma


def test_heic_orientation_is_honoured(tmp_path):
    photo = np.zeros((32, 48, 3), np.uint8)
    photo[:16, :24] = (230, 30, 30)  # red top-left quarter
    photo[16:, 24:] = (30, 30, 230)  # blue bottom-right quarter
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    Image.fromarray(photo).save(tmp_path / "portrait.heic", exif=exif.tobytes(), quality=95)
    image = load_image(tmp_path / "portrait.heic")
    expected = np.rot90(photo, k=-1)  # clockwise: the red quarter goes to the top right
    assert image.shape == expected.shape == (48, 32, 3)
    assert np.abs(image * 255 - expected).mean() < 3


def test_broken_heic_is_one_clear_error(tmp_path):
    pillow_heif.from_pillow(Image.fromarray(smooth_photo())).save(tmp_path / "full.heic", quality=90)
    data = (tmp_path / "full.heic").read_bytes()
    (tmp_path / "half.heic").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.heic").write_text("not a photo\n")
    with pytest.raises(ImageLoadError, match=r"half\.heic: corrupt or truncated image \(.+\)$"):
        load_image(tmp_path / "half.heic")
    with pytest.raises(ImageLoadError, match=r"text\.heic: not a readable image; expected .*HEIC/HEIF"):
        load_image(tmp_path / "text.heic")


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow was built without AVIF")
def test_avif_is_read_where_pillow_can(tmp_path):
    photo = smooth_photo()
    Image.fromarray(photo).save(tmp_path / "web.avif", quality=95)
    assert ".avif" in IMAGE_EXTENSIONS
    assert np.abs(load_image(tmp_path / "web.avif") * 255 - photo).mean() < 2


# ---- camera RAW ----


def test_flat_raw_renders_the_recorded_exposure_in_srgb(tmp_path):
    """Grey subjects at several exposures: the camera's white balance makes them neutral, the brightness is the
    recorded one through the sRGB curve (no brightening, even for a dark field or one just below white)."""
    rendered = []
    for level in [0.05, 0.18, 0.5, 0.8]:
        write_dng(tmp_path / "flat.dng", grey_scene(level))
        image = load_image(tmp_path / "flat.dng")
        assert image.shape == (32, 48, 3) and image.dtype == np.float32
        np.testing.assert_allclose(image * 255, srgb_8bit(level), atol=1.0)
        rendered.append(image.mean())
    assert rendered == sorted(rendered) and rendered[0] < 0.3  # brighter fields render brighter; dark stays dark


def test_raw_orientation_and_clipping_mask_follow_the_rendering(tmp_path):
    raw = grey_scene(0.3)
    raw[10:18, 20:32] = WHITE  # every photosite of the patch at the white level
    photosites = np.zeros(raw.shape, bool)
    photosites[10:18, 20:32] = True
    for orientation, turn in [(1, 0), (3, 2), (6, -1), (8, 1)]:  # TIFF orientation -> np.rot90 turns to display
        write_dng(tmp_path / "patch.dng", raw, orientation=orientation)
        image, clipped = load_image(tmp_path / "patch.dng", raw_clipping=True)
        expected = np.rot90(grown(photosites), k=turn)
        assert image.shape[:2] == clipped.shape == expected.shape
        np.testing.assert_array_equal(clipped, expected)
        assert np.count_nonzero(clipped) == 10 * 14  # 8 x 12 photosites and a pixel's ring around them
        inside = np.zeros(raw.shape, bool)
        inside[11:17, 21:31] = True  # the patch less its edge, where demosaicing mixes in the grey around it
        assert (image[np.rot90(inside, k=turn)] * 255 >= 254).all()  # the patch renders white where it lies


def test_any_raw_channel_at_white_counts_as_clipped(tmp_path):
    raw = grey_scene(0.3)
    red_sites = np.zeros(raw.shape, bool)
    red_sites[10:18, 20:32] = rggb(*raw.shape)[10:18, 20:32] == 0
    raw[red_sites] = WHITE  # only the red photosites of the patch are saturated
    write_dng(tmp_path / "red.dng", raw)
    _, clipped = load_image(tmp_path / "red.dng", raw_clipping=True)
    np.testing.assert_array_equal(clipped, grown(red_sites))
    assert np.count_nonzero(clipped) == 9 * 13  # red sites on rows 10-16 and columns 20-30, grown by one
    raw[red_sites] = WHITE - 1  # one step below the white level is not clipped
    write_dng(tmp_path / "red.dng", raw)
    assert not load_image(tmp_path / "red.dng", raw_clipping=True)[1].any()


def test_other_formats_have_no_raw_clipping_mask(tmp_path):
    Image.fromarray(smooth_photo()).save(tmp_path / "a.png")
    image, clipped = load_image(tmp_path / "a.png", raw_clipping=True)
    assert clipped is None and image.shape == (48, 64, 3)


def test_broken_raw_files_are_one_clear_error(tmp_path, capfd):
    write_dng(tmp_path / "good.dng", grey_scene(0.3))
    (tmp_path / "cut.dng").write_bytes((tmp_path / "good.dng").read_bytes()[:-1500])
    Image.fromarray(smooth_photo()).save(tmp_path / "jpeg.dng", format="JPEG")
    expected = {
        "cut.dng": r"cut\.dng: corrupt or truncated RAW file \(.+\)$",
        "jpeg.dng": r"jpeg\.dng: not a camera RAW file LibRaw can read; expected a RAW photo",
    }
    for name, message in expected.items():
        with pytest.raises(ImageLoadError, match=message):
            load_image(tmp_path / name)
    assert capfd.readouterr().err == ""  # what LibRaw prints itself is in the message, not on stderr


def test_a_raw_file_read_once_gives_what_the_file_gives(tmp_path, capfd):
    """make_heatmap decodes the bytes it hashed (load_image's data): the same image, mask and messages."""
    raw = grey_scene(0.3)
    raw[10:18, 20:32] = WHITE
    write_dng(tmp_path / "good.dng", raw)
    (tmp_path / "cut.dng").write_bytes((tmp_path / "good.dng").read_bytes()[:-1500])
    write_dng(tmp_path / "hollow.dng", grey_scene(0.3), declared=(6000, 4000))
    image, clipped = load_image(tmp_path / "good.dng", raw_clipping=True)
    again, clipped_again = load_image(tmp_path / "good.dng", True, (tmp_path / "good.dng").read_bytes())
    assert np.array_equal(image, again) and np.array_equal(clipped, clipped_again) and clipped.any()
    for name in ("cut.dng", "hollow.dng"):
        with pytest.raises(ImageLoadError) as from_file:
            load_image(tmp_path / name)
        with pytest.raises(ImageLoadError) as from_bytes:
            load_image(tmp_path / name, data=(tmp_path / name).read_bytes())
        assert str(from_bytes.value) == str(from_file.value)
    assert capfd.readouterr().err == ""


def test_raw_size_checks_come_before_decoding(tmp_path):
    write_dng(tmp_path / "huge.dng", grey_scene(0.3), declared=(20000, 20000))
    write_dng(tmp_path / "hollow.dng", grey_scene(0.3), declared=(6000, 4000))  # 24 MP in 3 kB
    with pytest.raises(ImageLoadError, match=r"huge\.dng: 20000x20000 is 400 MP, above the 200 MP limit"):
        load_image(tmp_path / "huge.dng")
    with pytest.raises(ImageLoadError, match=r"hollow\.dng: declares 6000x4000 \(24 MP\) but holds only"):
        load_image(tmp_path / "hollow.dng")


# ---- make_heatmap on a mixed folder ----


def read_summary(folder):
    with open(folder / "summary.csv", newline="") as f:
        return {row["file"]: row for row in csv.DictReader(f)}


def test_mixed_folder_with_raw_clipping(tiny_checkpoint, tmp_path, capfd):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(smooth_photo(32, 48)).save(src / "camera.jpg")
    pillow_heif.from_pillow(Image.fromarray(smooth_photo(32, 48))).save(src / "phone.heic", quality=90)
    heic = (src / "phone.heic").read_bytes()
    (src / "broken.heic").write_bytes(heic[:-50])  # the end of the coded image is missing
    raw = grey_scene(0.3)
    raw[10:18, 20:32] = WHITE
    write_dng(src / "sensor.dng", raw)
    (src / "cut.dng").write_bytes((src / "sensor.dng").read_bytes()[:-1500])
    clipped = grown(np.pad(np.ones((8, 12), bool), ((10, 14), (20, 16))))
    threshold = 0.1

    runs = {}
    for name, options in [("plain", []), ("raw", ["--raw-clipping"])]:
        out = tmp_path / name
        code = make_heatmap.main(
            [
                str(a)
                for a in [
                    "--input",
                    src,
                    "--output",
                    out,
                    "--checkpoint",
                    tiny_checkpoint,
                    "--save-npy",
                    "--no-report",
                    "--threshold",
                    threshold,
                    *options,
                ]
            ]
        )
        err = capfd.readouterr().err
        assert code == 1
        lines = err.strip().splitlines()
        assert len(lines) == 2 and "Traceback" not in err, err
        assert any(
            line.startswith(f"make_heatmap: {src / 'broken.heic'}: corrupt or truncated image") for line in lines
        )
        assert any(line.startswith(f"make_heatmap: {src / 'cut.dng'}: corrupt or truncated RAW file") for line in lines)
        summary = read_summary(out)
        assert {f: r["status"] for f, r in summary.items()} == {
            "broken.heic": "failed",
            "camera.jpg": "ok",
            "cut.dng": "failed",
            "phone.heic": "ok",
            "sensor.dng": "ok",
        }
        for stem in ["camera", "phone", "sensor"]:
            assert (out / f"{stem}_exposure.png").is_file()
        assert not list(out.glob("broken_*")) and not list(out.glob("cut_*"))
        runs[name] = (summary, {stem: np.load(out / f"{stem}_residual.npy") for stem in ["camera", "phone", "sensor"]})

    (plain, plain_maps), (marked, marked_maps) = runs["plain"], runs["raw"]
    assert all(row["pct_raw_clipped"] == "" for row in plain.values())
    assert [f for f, row in marked.items() if row["pct_raw_clipped"] != ""] == ["sensor.dng"]
    share = 100.0 * np.count_nonzero(clipped) / clipped.size  # 140 of 1536 pixels
    assert float(marked["sensor.dng"]["pct_raw_clipped"]) == pytest.approx(share, abs=1e-6)
    # the clipped pixels, and only they, are lowered to just below -threshold: they count in pct_over
    before, after = plain_maps["sensor"], marked_maps["sensor"]
    np.testing.assert_array_equal(after[~clipped], before[~clipped])
    np.testing.assert_array_equal(after[clipped], np.minimum(before[clipped], np.float32(-threshold - 1e-6)))
    over = 100.0 * np.count_nonzero(after < -threshold) / after.size
    assert float(marked["sensor.dng"]["pct_over"]) == pytest.approx(over, abs=1e-6) and over >= share
    for stem in ["camera", "phone"]:
        np.testing.assert_array_equal(marked_maps[stem], plain_maps[stem])
