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

Every writer goes through ``atomic_write``: a temporary file beside the target, renamed onto it only when
writing succeeded, so a failed run never leaves a partial file.
"""
import os
import re
import secrets
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})

# 200 MP covers every camera sensor on sale (the largest are about 150 MP); a 200 MP photo takes 2.4 GB as
# float32 RGB. Pillow's own bomb check (warning above its limit, error above twice it) is set to the same
# number, so other code reading images in this process keeps a guard.
MAX_PIXELS = 200_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

# The most pixels one byte of each format can encode, generously: measured on constant 8000 x 8000 images, the
# extreme case (progressive JPEG 170 px/byte, 1-bit PNG 2,700, lossless WebP 25,500); deflate itself cannot exceed
# about 1,032:1 on raw bytes (8,256 px/byte for 1-bit pixels). Only files declaring over 16 MP are judged.
MAX_PIXELS_PER_BYTE = {"JPEG": 2_000, "MPO": 2_000, "PNG": 20_000}
DEFAULT_PIXELS_PER_BYTE = 100_000
JUDGED_ABOVE_PIXELS = 16_000_000

ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


class ImageLoadError(ValueError):
    """A file that could not be read as a photo; the message names the file and what was expected."""


def list_images(path, recursive=False, exclude=(), errors=None):
    """The image files at ``path``: the file itself, or a folder's files with an image extension (any case),
    sorted, hidden files skipped; ``recursive`` descends into sub-folders except those in ``exclude``. A folder that
    cannot be read raises OSError, or, when ``errors`` is a list, is appended to it as (folder, reason)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    excluded = {Path(p).resolve() for p in exclude}
    found = []

    def unreadable(error):
        if errors is None:
            raise error
        errors.append((Path(error.filename), f"folder cannot be read ({error.strerror}); its images were skipped"))

    for folder, subfolders, files in os.walk(path, onerror=unreadable):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".")
                               and (Path(folder) / d).resolve() not in excluded) if recursive else []
        found += [Path(folder) / f for f in files
                  if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(found)


def _to_rgb_float(img):
    if img.mode.startswith("I;16") or img.mode == "I":
        grey = np.asarray(img).astype(np.float32) / 65535.0
        return np.repeat(np.clip(grey, 0.0, 1.0)[..., None], 3, axis=2)
    if img.mode == "F":
        grey = np.asarray(img, dtype=np.float32)
        if not np.isfinite(grey).all():
            raise ImageLoadError(f"{np.count_nonzero(~np.isfinite(grey))} pixel(s) are NaN or infinite; expected "
                                 "finite values")
        return np.repeat(np.clip(grey, 0.0, 1.0)[..., None], 3, axis=2)
    if img.mode in ALPHA_MODES or "transparency" in img.info:
        rgba = np.asarray(img.convert("RGBA")).astype(np.float32) / 255.0
        alpha = rgba[..., 3:]
        return rgba[..., :3] * alpha + (1.0 - alpha)  # over white
    rgb = np.asarray(img.convert("RGB")).astype(np.float32)
    rgb /= 255.0
    return rgb


def load_image(path):
    """Float32 H x W x 3 RGB in [0, 1] of the photo at ``path`` (EXIF-rotated, any mode converted)."""
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"{path}: file not found; expected an image file")
    if path.stat().st_size == 0:
        raise ImageLoadError(f"{path}: empty file (0 bytes); expected an image")
    try:
        with warnings.catch_warnings():
            # Pillow warns on stderr about bomb sizes (refused below) and bad metadata (ignored); keep stderr to
            # one line per failed file
            warnings.simplefilter("ignore")
            ImageFile.LOAD_TRUNCATED_IMAGES = False  # a file that ends early is an error (whoever set it)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > MAX_PIXELS:
                    raise ImageLoadError(f"{path}: {width}x{height} is {width * height / 1e6:.0f} MP, above the "
                                         f"{MAX_PIXELS / 1e6:.0f} MP limit; expected a smaller image")
                check_bytes_present(path, img.format, width, height)
                img.load()
                return _to_rgb_float(ImageOps.exif_transpose(img))
    except ImageLoadError as e:
        if not str(e).startswith(f"{path}: "):
            raise ImageLoadError(f"{path}: {e}") from None
        raise
    except Image.DecompressionBombError:
        raise ImageLoadError(f"{path}: more than {2 * MAX_PIXELS / 1e6:.0f} MP, above the {MAX_PIXELS / 1e6:.0f} MP "
                             "limit; expected a smaller image") from None
    except PermissionError:
        raise ImageLoadError(f"{path}: permission denied; expected a readable image file") from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"{path}: not a readable image; expected JPEG, PNG, BMP, TIFF or WebP") from None
    except Exception as e:  # Pillow's decoders raise many types (OSError, SyntaxError, struct.error...) on bad data
        reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise ImageLoadError(f"{path}: corrupt or truncated image ({reason})") from None


def check_bytes_present(path, image_format, width, height):
    """Refuse a file that declares more pixels than its bytes can hold (truncated, or a decompression bomb),
    judged on the file size before anything is decoded."""
    size = path.stat().st_size
    limit = MAX_PIXELS_PER_BYTE.get(image_format, DEFAULT_PIXELS_PER_BYTE)
    if width * height > JUDGED_ABOVE_PIXELS and width * height > size * limit:
        raise ImageLoadError(f"{path}: declares {width}x{height} ({width * height / 1e6:.0f} MP) but holds only "
                             f"{size:,} bytes; truncated or a decompression bomb, expected a complete image")


def _file_mode():
    """The mode a new file gets from open(): 0o666 less the process's umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_write(path):
    """Yield a temporary path beside ``path`` (same suffix, so writers pick the right format); it is renamed
    onto ``path`` (with the mode a new file gets, whatever the writer chose) when the block succeeds and removed
    when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")
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


def save_image(path, image):
    """Write a uint8 H x W x 3 array as an image (format from the suffix), atomically."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{path}: expected a uint8 H x W x 3 array, got {image.dtype} {image.shape}")
    with atomic_write(path) as tmp:
        Image.fromarray(image).save(tmp, format=Image.registered_extensions()[Path(path).suffix.lower()])
