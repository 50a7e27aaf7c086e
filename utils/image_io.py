"""Reading photos and writing results.

``load_image`` turns any photo Pillow reads into float32 RGB in [0, 1] at its displayed orientation:
EXIF rotation applied; 16-bit greyscale scaled by 65535; 16-bit RGB arrives from Pillow as its high byte
(within 1/255 of value / 65535); greyscale, palette, CMYK and YCbCr converted to RGB; an alpha channel
composited over white; only the first frame of a multi-page file. Every failure is an ``ImageLoadError`` whose
message names the file. Checks at the boundary, before any pixel is decoded: the declared size (above ``MAX_PIXELS``
is refused) and the bytes actually present (a file declaring far more pixels than its bytes can encode, such as a
truncated JPEG that declares 14000 x 14000, is refused; see ``MAX_PIXELS_PER_BYTE``); Pillow's truncated-image
tolerance is always off, so a file that ends early is an error, never a half-grey photo; after decoding, float
images with NaN or infinite values are refused.

Phone formats: HEIC / HEIF through pillow-heif's Pillow opener (registered when the first photo is opened), read
like any Pillow image (8 bits per channel, primary image only). Their rotation and mirroring are the container's
(irot / imir, applied by libheif); the EXIF orientation, which HEIF readers must ignore, is not applied a second
time. AVIF is read by Pillow's own plugin where Pillow was built with it (``.avif`` is listed only then).

Camera RAW files (``RAW_EXTENSIONS``; LibRaw tells the formats apart by content) are developed by rawpy / LibRaw
with one fixed rendering, so the exposure the camera recorded is what gets assessed: the camera's white balance
(as shot; LibRaw's daylight balance when the file has none), no automatic brightening (``no_auto_bright``, and
``adjust_maximum_thr=0`` so the white point is the file's white level, never the brightest pixel), highlights
clipped, AHD demosaicing, sRGB primaries with the sRGB curve (gamma 2.4, toe slope 12.92), 8 bits per channel, full
size, turned to the camera's recorded orientation. The size check uses the raw dimensions LibRaw reads from the
header, before any pixel is unpacked. ``load_image(path, raw_clipping=True)`` also returns which pixels of that
rendering come from photosites at the sensor's white level (``raw_clipping_mask``).

Every writer goes through ``atomic_write``: a temporary file beside the target, renamed onto it only when
writing succeeded, so a failed run never leaves a partial file.
"""

import hashlib
import io
import os
import re
import secrets
import sys
import tempfile
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError, features

from pieanet.utils.errors import EXIT_USAGE, PieaError
from pieanet.utils.safety import first_line

RAW_EXTENSIONS = frozenset(
    {
        ".dng",
        ".cr2",
        ".cr3",
        ".crw",
        ".nef",
        ".nrw",
        ".arw",
        ".srf",
        ".sr2",
        ".raf",
        ".orf",
        ".rw2",
        ".rwl",
        ".pef",
        ".srw",
        ".3fr",
        ".iiq",
        ".erf",
        ".kdc",
        ".dcr",
        ".mrw",
        ".mos",
    }
)
PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".heic", ".heif") + (
    (".avif",) if features.check("avif") else ()
)  # in the order messages list them
IMAGE_EXTENSIONS = frozenset(PHOTO_EXTENSIONS) | RAW_EXTENSIONS
HEIF_EXTENSIONS = frozenset({".heic", ".heif"})
# The Pillow decoders a photo may reach, and the only ones: every Image.open of the project names them (open_photo),
# so a file whose content is another format (PostScript named .jpg, which Pillow's EPS plugin would hand to
# Ghostscript, an external program) is refused in one line instead of being decoded. MPO (a camera's JPEG) comes
# through the JPEG decoder.
PHOTO_FORMATS = ("JPEG", "MPO", "PNG", "BMP", "TIFF", "WEBP", "HEIF") + (("AVIF",) if features.check("avif") else ())
# a float photo may exceed [0, 1] by this much (rounding in the program that wrote it) and is then clipped; further
# out it is refused, never clipped silently
FLOAT_RANGE_SLACK = 1e-4


def readable_formats():
    """What list_images picks and load_image reads, for every message that names it (one list)."""
    return f"{', '.join(PHOTO_EXTENSIONS)} or camera RAW ({', '.join(sorted(RAW_EXTENSIONS))})"


def _raw_rendering(rawpy):
    """The one rendering of a RAW file (module docstring) as rawpy's postprocess options; gamma (2.4, 12.92) is
    LibRaw's sRGB curve."""
    return dict(
        use_camera_wb=True,
        use_auto_wb=False,
        no_auto_bright=True,
        adjust_maximum_thr=0.0,
        bright=1.0,
        highlight_mode=rawpy.HighlightMode.Clip,
        demosaic_algorithm=rawpy.DemosaicAlgorithm.AHD,
        output_color=rawpy.ColorSpace.sRGB,
        gamma=(2.4, 12.92),
        output_bps=8,
        half_size=False,
    )


def _missing(path, package, what):
    return ImageLoadError(
        f"{path}: reading {what} needs {package}, which is not installed; pip install {package} "
        "(it is in requirements.txt)"
    )


def _register_heif_opener(path, data=None):
    """Register pillow-heif's Pillow opener before the first photo that may be HEIF is opened (also one whose
    extension hides that it is HEIF: may_be_heif). Imported here, not with this module, so loading a model or
    training needs no pillow-heif (and a folder of JPEGs does not wait for it); without it only a .heic / .heif file
    is an error."""
    global _HEIF_MISSING
    if "HEIF" in Image.OPEN or not may_be_heif(path, data):  # once per process, also under two module names
        return
    if not _HEIF_MISSING:
        try:
            import pillow_heif
        except ImportError:
            _HEIF_MISSING = True  # a failed import is not cached by Python: not tried again for every photo
        else:
            pillow_heif.register_heif_opener()
            return
    if path.suffix.lower() in HEIF_EXTENSIONS:
        raise _missing(path, "pillow-heif", "HEIC/HEIF photos")


_HEIF_MISSING = False
HEIF_BOX_TYPE = (4, b"ftyp")  # HEIF is an ISO base media file: its first box, at byte 4, is 'ftyp'


def may_be_heif(path, data=None):
    """Whether the photo at ``path`` (its bytes ``data`` when read already) may be HEIF: a HEIF extension, or bytes
    that start as an ISO base media file (HEIF_BOX_TYPE). Any other file cannot be, whatever its name."""
    if path.suffix.lower() in HEIF_EXTENSIONS:
        return True
    offset, box = HEIF_BOX_TYPE
    if data is None:
        try:
            with open(path, "rb") as f:
                data = f.read(offset + len(box))
        except OSError:
            return True  # opening it will say why it cannot be read
    return data[offset : offset + len(box)] == box


# 200 MP covers every camera sensor on sale (the largest are about 150 MP); a 200 MP photo takes 2.4 GB as
# float32 RGB. Pillow's own bomb check (warning above its limit, error above twice it) is set to the same
# number, so other code reading images in this process keeps a guard.
MAX_PIXELS = 200_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

# The most pixels one byte of each format can encode, generously: measured on constant 8000 x 8000 images, the
# extreme case (progressive JPEG 170 px/byte, 1-bit PNG 2,700, lossless WebP 25,500); deflate itself cannot exceed
# about 1,032:1 on raw bytes (8,256 px/byte for 1-bit pixels). Only files declaring over 16 MP are judged.
# HEIF (HEVC) measured the same way: 3,900 px/byte at 16 MP, quality 0; AVIF (AV1) reaches 64,000 at 64 MP and grows
# with the size (about 1 kB whatever the size), so its decoder, which refuses truncated data, is its real guard. RAW:
# the JPEG figure, as lossy DNG holds JPEG data (lossless raw codecs compress far less).
# PNG: a 1-bit PNG near deflate's limit (a 24 kB file of 14000 x 14000) is no photo; 4,000 is 1.5 x the constant case.
MAX_PIXELS_PER_BYTE = {"JPEG": 2_000, "MPO": 2_000, "PNG": 4_000, "HEIF": 50_000, "AVIF": 1_000_000, "RAW": 2_000}
DEFAULT_PIXELS_PER_BYTE = 100_000
JUDGED_ABOVE_PIXELS = 16_000_000

# A JPEG decodes every scan over the whole image: a progressive file has about 10 (Pillow, libjpeg, mozjpeg write
# 10 or fewer; an EXIF thumbnail adds one), a crafted one thousands (0.66 MB with 20,000 scans took 41 s). Counted
# on the file's bytes before decoding (SOS markers; a 0xFF byte inside entropy-coded data is always followed by 0x00
# or a restart marker, so only true scan starts, and those of embedded thumbnails, are counted).
MAX_JPEG_SCANS = 100

# photo_bytes: a photo file up to this size is read into memory once, for its hash and its decoding (a 200 MP TIFF of
# 8-bit RGB, uncompressed, is 0.6 GB)
READ_ONCE_BYTES = 1 << 30

# The real peak of make_heatmap's default path (decode, float image, model at its working size, guided upsampling
# to full size, colour map, PNG): 40 bytes per pixel above about 0.3 GB for the process (measured with
# /usr/bin/time on 6 and 24 MP photos, docs/safety.md); since issue 25 (uint8 photo, strips) 12 for one 12 MP photo
# and 25 for a folder, 40 kept as the budget. A photo whose pixels times this exceed the memory the process can
# still get (memory_budget) is refused before it is decoded.
PEAK_BYTES_PER_PIXEL = 40

ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


class ImageLoadError(PieaError, ValueError):
    """A file that could not be read as a photo; the message names the file and what was expected."""

    exit_code = EXIT_USAGE


def list_images(path, recursive=False, exclude=(), errors=None):
    """The image files at ``path``: the file itself, or a folder's files with an image extension (any case),
    sorted, hidden files skipped; ``recursive`` descends into sub-folders except those in ``exclude`` (never into a link
    to a folder). A folder that cannot be read raises OSError, or, when ``errors`` is a list, is appended to it as
    (folder, reason), as is, with ``recursive``, a link to a folder that was skipped."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    excluded = {identity for identity in map(_folder_identity, exclude) if identity}
    found = []

    def unreadable(error):
        if errors is None:
            raise error
        errors.append((Path(error.filename), f"folder cannot be read ({error.strerror}); its images were skipped"))

    for folder, subfolders, files in walk_folders(path, unreadable):
        if recursive and errors is not None:  # os.walk lists a link to a folder but never enters it: said, not silent
            errors += [
                (
                    Path(folder) / d,
                    "a symbolic link to a folder; skipped, its images were not read (give its "
                    "target as --input to read them)",
                )
                for d in sorted(subfolders)
                if not d.startswith(".")
                and (Path(folder) / d).is_symlink()
                and not (excluded and _folder_identity(Path(folder) / d) in excluded)
            ]
        subfolders[:] = (
            sorted(
                d
                for d in subfolders
                if not d.startswith(".") and not (excluded and _folder_identity(Path(folder) / d) in excluded)
            )
            if recursive
            else []
        )
        found += [
            Path(folder) / f for f in files if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS
        ]
    return sorted(found)


def open_photo(source):
    """Pillow's Image.open of ``source`` (a path or a binary file) with only the PHOTO_FORMATS decoders: the one way
    the project opens an image file. Raises UnidentifiedImageError for any other content."""
    Image.init()  # Pillow's plugins registered, so the list below names only those it has (HEIF once registered)
    return Image.open(source, formats=[name for name in PHOTO_FORMATS if name in Image.OPEN])


def check_sample_depth(img):
    """Refuse integer samples wider than 16 bits (a 32-bit TIFF): Pillow gives them as mode I, and no scale of
    them is known (dividing by 65535 would clip most of them to white)."""
    bits = img.tag_v2.get(258) if img.format == "TIFF" and hasattr(img, "tag_v2") else None
    bits = bits[0] if isinstance(bits, tuple) and bits else bits
    if img.mode == "I" and (img.format != "PNG") and bits != 16:
        raise ImageLoadError(
            f"{bits or 32}-bit integer samples ({img.format}); expected 8 or 16 bits per sample "
            "(32-bit integer data has no known white level, so it is not guessed)"
        )


def float_photo(values):
    """``values`` (a float array) as a photo in [0, 1]: refused in one line when a value is NaN or infinite or lies
    outside [0, 1] by more than FLOAT_RANGE_SLACK (a float TIFF in 0..255 would otherwise read as white)."""
    if not np.isfinite(values).all():
        raise ImageLoadError(
            f"{np.count_nonzero(~np.isfinite(values))} pixel(s) are NaN or infinite; expected finite values"
        )
    low, high = float(values.min()), float(values.max())
    if low < -FLOAT_RANGE_SLACK or high > 1.0 + FLOAT_RANGE_SLACK:
        raise ImageLoadError(
            f"float values from {low:g} to {high:g}; expected float pixels in [0, 1] (they are not rescaled or clipped)"
        )
    return np.clip(values, 0.0, 1.0)


def photo_array(array):
    """An H x W x 3 RGB array given to the Python API as float32 in [0, 1], or ValueError in one line for what the
    model cannot judge: uint8 is divided by 255 and uint16 by 65535; float must be finite and in [0, 1] (clipped
    within FLOAT_RANGE_SLACK of it); bool, complex, other integer types and objects are refused, never guessed."""
    array = np.asarray(array)
    if array.ndim != 3 or array.shape[2] != 3 or array.size == 0:
        raise ValueError(f"expected an H x W x 3 RGB array (at least one pixel), got shape {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / np.float32(255)
    if array.dtype == np.uint16:
        return array.astype(np.float32) / np.float32(65535)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"a {array.dtype} array; expected uint8 (0-255), uint16 (0-65535) or float in [0, 1]")
    try:
        return float_photo(array.astype(np.float32))
    except ImageLoadError as e:
        raise ValueError(f"{e} (a {array.dtype} array)") from None


def _folder_identity(path):
    """(device, inode) of the folder at ``path`` (None when there is none): an excluded folder is known by it, not by
    resolving its path (resolving every sub-folder of a tree 1,200 levels deep took minutes)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def walk_folders(top, onerror):
    """os.walk(top, onerror=onerror) (top-down, links to folders listed but not entered, ``subfolders`` pruned in
    place) without recursion: os.walk before Python 3.12 recurses once per level, so a folder about 1,000 levels deep
    was a RecursionError and no photo ran."""
    stack = [os.fspath(top)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = list(listing)
        except OSError as e:
            onerror(e)
            continue
        subfolders, files = [], []
        for entry in entries:
            try:
                is_folder = entry.is_dir()
            except OSError:
                is_folder = False
            (subfolders if is_folder else files).append(entry.name)
        yield folder, subfolders, files
        stack += [
            os.path.join(folder, name)
            for name in reversed(subfolders)
            if not os.path.islink(os.path.join(folder, name))
        ]


def rgb_levels(img):
    """The levels of a loaded RGB image as a read-only uint8 H x W x 3 array, as np.asarray(img) gives them, in one
    pass of Pillow's raw packer into one buffer of the image's size. np.asarray goes through Image.tobytes, which packs
    64 KB at a time and joins the pieces (copying everything twice): 0.08-0.10 s against 0.04-0.06 s on a 12 MP photo
    on the busy development machine, a third of the decode. A Pillow without the packer's entry point
    (Image._getencoder) gets np.asarray."""
    width, height = img.size
    size = width * height * 3
    getencoder = getattr(Image, "_getencoder", None)
    if img.mode != "RGB" or not size or getencoder is None:
        return np.asarray(img)
    encoder = getencoder("RGB", "raw", "RGB")
    try:
        encoder.setimage(img.im, (0, 0, width, height))
        _, status, data = encoder.encode(size)
    finally:
        encoder.cleanup()
    if status != 1 or len(data) != size:  # not done in one buffer (never for raw RGB): the public way
        return np.asarray(img)
    return np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)


def _to_rgb_float(img, keep_uint8=False, keep_alpha=False):
    """Float32 H x W x 3 in [0, 1] (``keep_uint8``: uint8 where the levels are 8-bit); an image with transparency
    composited over white, or with ``keep_alpha`` kept as H x W x 4 (straight colour and alpha: utils.alpha judges
    it)."""
    if img.mode.startswith("I;16") or img.mode == "I":
        grey = np.asarray(img).astype(np.float32) / 65535.0
        return np.repeat(np.clip(grey, 0.0, 1.0)[..., None], 3, axis=2)
    if img.mode == "F":
        grey = float_photo(np.asarray(img, dtype=np.float32))
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode in ALPHA_MODES or "transparency" in img.info:
        rgba = np.asarray(img.convert("RGBA")).astype(np.float32) / 255.0
        if keep_alpha:
            return rgba
        alpha = rgba[..., 3:]
        return rgba[..., :3] * alpha + (1.0 - alpha)  # over white
    rgb = rgb_levels(img if img.mode == "RGB" else img.convert("RGB"))
    if keep_uint8:  # 8-bit levels as they are: a float copy of a 12 MP photo costs 144 MB and, on a busy day, seconds
        return rgb
    rgb = rgb.astype(np.float32)
    rgb /= 255.0
    return rgb


def load_image(path, raw_clipping=False, data=None, keep_uint8=False, keep_alpha=False):
    """Float32 H x W x 3 RGB in [0, 1] of the photo at ``path`` (EXIF-rotated, any mode converted; a camera RAW file
    developed as the module docstring says). With ``raw_clipping``: (image, mask), the mask being a RAW file's
    ``raw_clipping_mask`` (H x W bool) and None for every other format. ``data``: the file's bytes when the caller
    has read them already (photo_bytes); they are decoded and the file is not read again (``path`` then names it
    in messages and gives its extension). ``keep_uint8``: a photo of 8-bit levels without transparency (JPEG, most
    PNGs, RAW as developed here) comes back as uint8 H x W x 3, those levels; any other stays float32 (its
    float32 image is that uint8 / 255). A photo with transparency is composited over white, or with ``keep_alpha``
    returned as float32 H x W x 4 (RGB and alpha; utils.alpha.judged_photo)."""
    path = Path(path)
    if data is None and not path.is_file():
        raise ImageLoadError(f"{path}: file not found; expected an image file")
    size = path.stat().st_size if data is None else len(data)
    if size == 0:
        raise ImageLoadError(f"{path}: empty file (0 bytes); expected an image")
    if path.suffix.lower() in RAW_EXTENSIONS:
        image, clipped = _load_raw(path, raw_clipping, data, keep_uint8)
    else:
        image, clipped = _load_with_pillow(path, data, keep_uint8, keep_alpha), None
    return (image, clipped) if raw_clipping else image


def photo_bytes(path):
    """The bytes of the file at ``path`` when it holds at most READ_ONCE_BYTES, else None. A caller that hashes a
    photo and decodes it gives these bytes to both (load_image's ``data``), so the file is read once and the hash is
    that of the bytes decoded; a larger file (no photo needs that many) is read from disk by each step instead of
    held in memory. Raises OSError."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size > READ_ONCE_BYTES:
            return None
        return f.read()


_TRUNCATION_SWITCH = threading.Lock()


def _load_with_pillow(path, data=None, keep_uint8=False, keep_alpha=False):
    try:
        with warnings.catch_warnings():
            # Pillow warns on stderr about bomb sizes (refused below) and bad metadata (ignored); keep stderr to
            # one line per failed file
            warnings.simplefilter("ignore")
            _register_heif_opener(path, data)
            with open_photo(path if data is None else io.BytesIO(data)) as img:
                check_declared_size(path, img.format, *img.size, size=None if data is None else len(data))
                check_sample_depth(img)
                if img.format in ("JPEG", "MPO"):
                    check_jpeg_scans(path, data)
                # a file that ends early is an error here, whatever the caller set Pillow's global switch to; the
                # lock keeps another thread from restoring the caller's value while this one decodes
                with _TRUNCATION_SWITCH:
                    load_truncated, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
                    try:
                        img.load()
                    finally:
                        ImageFile.LOAD_TRUNCATED_IMAGES = load_truncated
                ImageOps.exif_transpose(img, in_place=True)  # no copy of a photo that needs no turn
                return _to_rgb_float(img, keep_uint8, keep_alpha)
    except ImageLoadError as e:
        raise _named(path, e)
    except Image.DecompressionBombError as e:
        raise ImageLoadError(
            f"{path}: more than {2 * MAX_PIXELS / 1e6:.0f} MP, above the {MAX_PIXELS / 1e6:.0f} MP "
            "limit; expected a smaller image"
        ) from e
    except PermissionError as e:
        raise ImageLoadError(f"{path}: permission denied; expected a readable image file") from e
    except MemoryError as e:
        raise ImageLoadError(f"{path}: out of memory while decoding; expected a smaller image") from e
    except UnidentifiedImageError as e:
        raise ImageLoadError(
            f"{path}: not a readable image; expected JPEG, PNG, BMP, TIFF, WebP, HEIC/HEIF"
            f"{', AVIF' if '.avif' in IMAGE_EXTENSIONS else ''} or a camera RAW file"
        ) from e
    except Exception as e:  # Pillow's decoders raise many types (OSError, SyntaxError, struct.error...) on bad data
        raise ImageLoadError(f"{path}: corrupt or truncated image ({first_line(e)})") from e


def _named(path, error):
    """``error`` (an ImageLoadError) with its message led by the file's name: itself, or a new one caused by it."""
    if str(error).startswith(f"{path}: "):
        return error
    named = ImageLoadError(f"{path}: {error}")
    named.__cause__ = error
    return named


def _load_raw(path, raw_clipping, data=None, keep_uint8=False):
    """The RAW file (or its bytes, ``data``) developed with _raw_rendering, and its raw_clipping_mask when asked
    for."""
    try:
        import rawpy  # here, not with this module: loading a model or training needs no rawpy
    except ImportError as e:
        raise _missing(path, "rawpy", "camera RAW files") from e
    libraw_said = []
    try:
        with _stderr_captured(libraw_said), rawpy.imread(str(path) if data is None else io.BytesIO(data)) as raw:
            check_declared_size(
                path, "RAW", raw.sizes.raw_width, raw.sizes.raw_height, size=None if data is None else len(data)
            )
            rgb = raw.postprocess(**_raw_rendering(rawpy))
            clipped = raw_clipping_mask(raw, rgb.shape[:2]) if raw_clipping else None
    except ImageLoadError as e:
        raise _named(path, e)
    except rawpy.LibRawFileUnsupportedError as e:
        raise ImageLoadError(
            f"{path}: not a camera RAW file LibRaw can read; expected a RAW photo, as the extension {path.suffix} says"
        ) from e
    except (rawpy.LibRawIOError, rawpy.LibRawDataError) as e:
        # LibRaw leads its line with the file's name, or "unknown file" for bytes in memory
        said = libraw_said[0].removeprefix(f"{path}: " if data is None else "unknown file: ") if libraw_said else ""
        said = f"; LibRaw: {said}" if said else ""
        raise ImageLoadError(f"{path}: corrupt or truncated RAW file ({first_line(e)}{said})") from e
    except (rawpy.LibRawError, OSError, RuntimeError, MemoryError, NotImplementedError) as e:
        raise ImageLoadError(f"{path}: RAW decoding failed ({first_line(e)}); expected a camera RAW file") from e
    return (rgb if keep_uint8 else rgb.astype(np.float32) / np.float32(255.0)), clipped


@contextmanager
def _stderr_captured(said):
    """Route the process's stderr (file descriptor 2) to a temporary file for the block and append what was written
    to ``said``: LibRaw prints some decoding errors there itself (rawpy offers no hook), and a failed file gets one
    line, ours, which quotes it."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            said.append(" ".join(captured.read().decode("utf-8", "replace").split())[:160])


def raw_clipping_mask(raw, shape):
    """H x W bool (``shape``: the rendered image's, after rotation) of an open rawpy file: True where a raw channel
    of the pixel reached its white level, in the visible raw area. Behind a colour filter array each photosite
    records one channel (the CFA pattern) and demosaicing draws a pixel's colours from its 3 x 3 neighbourhood, so
    any photosite there counts; raw data with every channel at every pixel (linear DNG) counts the pixel's own. White
    levels are LibRaw's, absolute (black level included): per channel where the file gives them and they lie above
    that channel's black level and at most the overall white level, else the overall white level."""
    visible = raw.raw_image_visible
    overall = raw.white_level
    per_channel = raw.camera_white_level_per_channel or [overall] * 4
    white = np.array(
        [
            level if black < level <= overall else overall
            for level, black in zip(per_channel, raw.black_level_per_channel)
        ]
    )
    if visible.ndim == 2:  # a colour filter array; LibRaw's index 6 (no filter: monochrome) takes the overall level
        level_of_colour = np.full(256, overall, dtype=visible.dtype)
        level_of_colour[:4] = white
        reached = visible >= level_of_colour[raw.raw_colors_visible]
        rows_grown = reached.copy()
        rows_grown[1:] |= reached[:-1]
        rows_grown[:-1] |= reached[1:]
        mask = rows_grown.copy()
        mask[:, 1:] |= rows_grown[:, :-1]
        mask[:, :-1] |= rows_grown[:, 1:]
    else:  # a 4th channel may be blank (zeros)
        mask = (visible >= white[: visible.shape[2]]).any(axis=2)
    # LibRaw's flip: bit 2 mirrors the rows, bit 1 the columns, bit 4 transposes (in that order)
    flip = raw.sizes.flip
    mask = mask[::-1] if flip & 2 else mask
    mask = mask[:, ::-1] if flip & 1 else mask
    mask = mask.T if flip & 4 else mask
    if mask.shape != tuple(shape):  # non-square photosites: the rendering is stretched along one axis
        stretch = (shape[0] / mask.shape[0]) / (shape[1] / mask.shape[1])
        if abs(stretch - 1.0) < 0.01 or not any(
            abs(stretch / a - 1.0) < 0.02 for a in (raw.sizes.pixel_aspect, 1.0 / raw.sizes.pixel_aspect)
        ):
            raise ImageLoadError(
                f"the raw data ({mask.shape[1]}x{mask.shape[0]} photosites) cannot be aligned "
                f"with its {shape[1]}x{shape[0]} rendering for --raw-clipping; expected a sensor "
                "with a rectangular photosite grid"
            )
        rows = np.arange(shape[0]) * mask.shape[0] // shape[0]
        columns = np.arange(shape[1]) * mask.shape[1] // shape[1]
        mask = mask[rows][:, columns]
    return np.ascontiguousarray(mask)


def check_declared_size(path, image_format, width, height, size=None):
    """Refuse, before decoding, a photo above MAX_PIXELS, one declaring more pixels than its bytes (``size`` of
    them; None: the file's size) can hold, or one whose processing would need more memory than the process can get
    (memory_budget)."""
    if width * height > MAX_PIXELS:
        raise ImageLoadError(
            f"{path}: {width}x{height} is {width * height / 1e6:.0f} MP, above the "
            f"{MAX_PIXELS / 1e6:.0f} MP limit; expected a smaller image"
        )
    check_bytes_present(path, image_format, width, height, size)
    need, budget = width * height * PEAK_BYTES_PER_PIXEL, memory_budget()
    if need > budget:
        raise ImageLoadError(
            f"{path}: {width}x{height} needs about {need / 2**30:.1f} GB to process "
            f"({PEAK_BYTES_PER_PIXEL} bytes per pixel), more than the {max(budget, 0) / 2**30:.1f} GB "
            "this process can still use; expected a smaller image (or more free memory)"
        )


def memory_budget():
    """Bytes this process can still allocate: the least of the free room under its address-space and data limits
    (setrlimit), its cgroup's memory.max and the system's MemAvailable; those it cannot read do not count."""
    room = []
    status = _proc_numbers("/proc/self/status", ("VmSize:", "VmData:"))
    try:
        import resource

        for limit, used in ((resource.RLIMIT_AS, "VmSize:"), (resource.RLIMIT_DATA, "VmData:")):
            soft = resource.getrlimit(limit)[0]
            if soft != resource.RLIM_INFINITY and used in status:
                room.append(soft - status[used])
    except (ImportError, OSError, ValueError):
        pass
    try:
        maximum = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if maximum.isdigit():
            room.append(int(maximum) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    available = _proc_numbers("/proc/meminfo", ("MemAvailable:",))
    if "MemAvailable:" in available:
        room.append(available["MemAvailable:"])
    return min(room) if room else float("inf")


def _proc_numbers(path, keys):
    """{key: bytes} of the kB lines ``keys`` of a /proc file ({} where there is none)."""
    found = {}
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            for line in f:
                parts = line.split()
                if parts and parts[0] in keys:
                    found[parts[0]] = int(parts[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return found


def check_jpeg_scans(path, data=None):
    """Refuse a JPEG with more than MAX_JPEG_SCANS scans (start-of-scan markers), counted before decoding in its
    bytes: ``data`` when given, else the file's."""
    scans, tail = 0, b""
    with open(path, "rb") if data is None else io.BytesIO(data) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            scans += (tail + block).count(b"\xff\xda")
            tail = block[-1:]
            if scans > MAX_JPEG_SCANS:
                raise ImageLoadError(
                    f"{path}: a JPEG of more than {MAX_JPEG_SCANS} scans (each decodes the whole "
                    f"image again); expected a photo of at most {MAX_JPEG_SCANS}"
                )


def check_bytes_present(path, image_format, width, height, size=None):
    """Refuse a file that declares more pixels than its bytes can hold (truncated, or a decompression bomb),
    judged on its size (``size``; None: the file's) before anything is decoded."""
    size = path.stat().st_size if size is None else size
    limit = MAX_PIXELS_PER_BYTE.get(image_format, DEFAULT_PIXELS_PER_BYTE)
    if width * height > JUDGED_ABOVE_PIXELS and width * height > size * limit:
        raise ImageLoadError(
            f"{path}: declares {width}x{height} ({width * height / 1e6:.0f} MP) but holds only "
            f"{size:,} bytes; truncated or a decompression bomb, expected a complete image"
        )


def _file_mode():
    """The mode a new file gets from open(): 0o666 less the process's umask. Read from /proc where the kernel shows
    it: os.umask can only read the mask by setting it, and a file another thread creates in between would get 0o666."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            mask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0)
        os.umask(mask)
    return 0o666 & ~mask


TEMPORARY_STEM = 32  # characters of the target's stem in its temporary name (at most 128 bytes of UTF-8)


def file_sha256(path):
    """The SHA-256 of a file's bytes (hex), read in 1 MB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def atomic_write(path):
    """Yield a temporary path beside ``path`` (same suffix, so writers pick the right format); it is renamed
    onto ``path`` (with the mode a new file gets, whatever the writer chose) when the block succeeds and removed
    when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the stem is cut short: a target name near the 255-byte limit still gets a temporary name within it
    tmp = path.with_name(f".{path.stem[:TEMPORARY_STEM]}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix[:16]}")
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, _file_mode())  # some writers (safetensors) create their files 0600
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


TEMPORARY_NAME = re.compile(r"^\..+\.(\d+)-[0-9a-f]{8}\.tmp")  # what atomic_write names its temporary files


def process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_orphan_temporaries(folder):
    """Remove the temporary files atomic_write left in ``folder`` when its process was killed (kill -9): those whose
    process no longer runs. Returns the paths removed."""
    removed = []
    for path in sorted(Path(folder).glob(".*.tmp*")):
        match = TEMPORARY_NAME.match(path.name)
        if match and path.is_file() and not process_alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def save_image(path, image, **options):
    """Write a uint8 H x W x 3 array as an image (format from the suffix), atomically; ``options`` go to Pillow's
    save (e.g. quality=90 for JPEG)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{path}: expected a uint8 H x W x 3 array, got {image.dtype} {image.shape}")
    with atomic_write(path) as tmp:
        Image.fromarray(image).save(tmp, format=Image.registered_extensions()[Path(path).suffix.lower()], **options)


def save_palette_image(path, index, palette, compress_level=None):
    """Write a uint8 H x W array of indices into ``palette`` (uint8 N x 3, N <= 256) as an 8-bit palette PNG,
    atomically: lossless against the table, one byte a pixel to compress instead of three."""
    index, palette = np.asarray(index), np.asarray(palette)
    if index.dtype != np.uint8 or index.ndim != 2:
        raise ValueError(f"{path}: expected a uint8 H x W array of palette indices, got {index.dtype} {index.shape}")
    if palette.dtype != np.uint8 or palette.ndim != 2 or palette.shape[1] != 3 or len(palette) > 256:
        raise ValueError(f"{path}: expected a uint8 palette of at most 256 RGB entries, got {palette.shape}")
    image = Image.frombuffer("P", index.shape[::-1], np.ascontiguousarray(index), "raw", "P", 0, 1)
    image.putpalette(palette.tobytes(), rawmode="RGB")
    options = {} if compress_level is None else {"compress_level": compress_level}
    with atomic_write(path) as tmp:  # PNG named, not looked up: Pillow's lookup imports every plugin first
        image.save(tmp, format="PNG", **options)
