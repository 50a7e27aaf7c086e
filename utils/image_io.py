"""Reading photos and writing results.

``load_image`` turns any photo Pillow reads into float32 RGB in [0, 1] at its displayed orientation:
EXIF rotation applied; 16-bit greyscale scaled by 65535; 16-bit RGB arrives from Pillow as its high byte
(within 1/255 of value / 65535); greyscale, palette, CMYK and YCbCr converted to RGB; an alpha channel
composited over white; only the first frame of a multi-page file. Files above ``MAX_PIXELS`` are refused
before their pixels are decoded. Every failure is an ``ImageLoadError`` whose message names the file.

Every writer goes through ``atomic_write``: a temporary file beside the target, renamed onto it only when
writing succeeded, so a failed run never leaves a partial file.
"""
import os
import secrets
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})

# 200 MP covers every camera sensor on sale (the largest are about 150 MP); a 200 MP photo takes 2.4 GB as
# float32 RGB. Pillow's own bomb check (warning above its limit, error above twice it) is set to the same
# number, so other code reading images in this process keeps a guard.
MAX_PIXELS = 200_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


class ImageLoadError(ValueError):
    """A file that could not be read as a photo; the message names the file and what was expected."""


def list_images(path, recursive=False, exclude=()):
    """The image files at ``path``: the file itself, or a folder's files with an image extension (any case),
    sorted, hidden files skipped; ``recursive`` descends into sub-folders except those in ``exclude``."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    excluded = {Path(p).resolve() for p in exclude}
    found = []
    for folder, subfolders, files in os.walk(path):
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
        return np.repeat(np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)[..., None], 3, axis=2)
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
            with Image.open(path) as img:
                width, height = img.size
                if width * height > MAX_PIXELS:
                    raise ImageLoadError(f"{path}: {width}x{height} is {width * height / 1e6:.0f} MP, above the "
                                         f"{MAX_PIXELS / 1e6:.0f} MP limit; expected a smaller image")
                img.load()
                return _to_rgb_float(ImageOps.exif_transpose(img))
    except ImageLoadError:
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


@contextmanager
def atomic_write(path):
    """Yield a temporary path beside ``path`` (same suffix, so writers pick the right format); it is renamed
    onto ``path`` when the block succeeds and removed when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_image(path, image):
    """Write a uint8 H x W x 3 array as an image (format from the suffix), atomically."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{path}: expected a uint8 H x W x 3 array, got {image.dtype} {image.shape}")
    with atomic_write(path) as tmp:
        Image.fromarray(image).save(tmp, format=Image.registered_extensions()[Path(path).suffix.lower()])
