"""The full-resolution ends of the working-size path (models/inference.py), on the photo as it was read (numpy
H x W x 3, uint8 or float in [0, 1]) and a strip of rows at a time, so a 12 MP photo never exists as a float copy.

* ``shrink_photo``: the photo at the working size, the same numbers as ``inference.shrink`` on the whole float image.
  Antialiased bicubic resizing is separable and torch runs it along the width first, then along the height, keeping
  the intermediate in float32: the width pass of each strip of rows is the whole image's width pass of those rows,
  and the height pass then runs on an H x w image (w the working width), which is small.
* ``guided_upsample_photo``: the guided filter's coefficients (computed at low resolution) brought to full size
  bilinearly and applied to the photo's grey, strip by strip. ``photo_grey`` is where a strip's full-resolution grey
  is made, so whatever else the final map needs from the photo's grey (a bound, a mask) can use the same strip.
* ``GuidedFit``: a and b of one photo, the map not yet made: a caller that runs the network on one thread can make
  the full-size map on another (make_heatmap makes it on the thread that writes the files, which balances the two).

Why strips: converting a 12 MP uint8 photo to float32 allocates 144 MB that the kernel must zero page by page (over
a second on a busy machine); strips of STRIP_ROWS rows reuse one small buffer and stay in the cache.
"""

import numpy as np

from pieanet.utils.exposure import GRAY_WEIGHTS, bound_residual

# Guided filter window radius (pixels at the working resolution) and regularisation (guide in [0, 1]): the smallest
# window keeps the map closest to the full-resolution one at photo edges (a larger radius or eps smooths across them);
# a smaller eps would follow the grey image even in noisy flat regions, where the map should stay smooth. How they
# were chosen: docs/design.md, "Guided upsampling". Here, in a module without torch, so that the torch path
# (models/inference.py) and the torch-free one (models/torch_free.py) take them from one place.
GUIDED_RADIUS = 1
GUIDED_EPS = 1e-4
STRIP_ROWS = 256  # rows per strip: 1 MP of a 4000 px wide photo (4 MB per float plane); 128 to 512 measured alike
LEVELS = np.float32(255.0)  # uint8 levels / LEVELS in float32: the [0, 1] values load_image gives (to_tensor too)


def photo_strips(height, rows=STRIP_ROWS):
    """(start, stop) of the strips of ``rows`` rows covering ``height`` rows."""
    return [(start, min(start + rows, height)) for start in range(0, height, rows)]


def as_unit_float(rows, out):
    """Photo rows (uint8 levels or float in [0, 1]) as float32 in [0, 1], written into ``out`` (same shape)."""
    if rows.dtype == np.uint8:
        return np.divide(rows, LEVELS, out=out)
    out[...] = rows
    return out


def check_photo(photo):
    """The photo as an H x W x 3 numpy array (uint8, or float in [0, 1]); ValueError for any other shape."""
    photo = np.asarray(photo)
    if photo.ndim != 3 or photo.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 RGB image, got shape {photo.shape}")
    if photo.dtype != np.uint8 and photo.dtype != np.float32:
        photo = photo.astype(np.float32)
    return photo


def shrink_photo(photo, size, device="cpu"):
    """1 x 3 x h x w float32 on ``device``: ``photo`` resized to ``size`` (h, w) as inference.shrink resizes it (the
    same float32 numbers), read STRIP_ROWS rows at a time."""
    import torch  # here, not at import: GuidedFit and photo_grey serve the torch-free path too (models/torch_free.py)
    import torch.nn.functional as F

    photo = check_photo(photo)
    height, width = photo.shape[:2]
    low_height, low_width = size
    buffer = np.empty((min(STRIP_ROWS, height), width, 3), dtype=np.float32)
    narrow = torch.empty((1, 3, height, low_width), dtype=torch.float32)
    for start, stop in photo_strips(height):
        rows = torch.from_numpy(as_unit_float(photo[start:stop], buffer[: stop - start])).permute(2, 0, 1)[None]
        narrow[:, :, start:stop] = F.interpolate(
            rows, size=(stop - start, low_width), mode="bicubic", align_corners=False, antialias=True
        )
    low = F.interpolate(narrow, size=(low_height, low_width), mode="bicubic", align_corners=False, antialias=True)
    return low.clamp_(0.0, 1.0).to(device)


def photo_grey(rows):
    """float32 grey of photo rows (uint8 or float in [0, 1]): the numbers gray() gives for the float image (each
    channel's [0, 1] value times its weight in float32, summed in the channels' order)."""
    if rows.dtype != np.uint8:
        rows = rows.astype(np.float32, copy=False)
        return rows[..., 0] * GRAY_WEIGHTS[0] + rows[..., 1] * GRAY_WEIGHTS[1] + rows[..., 2] * GRAY_WEIGHTS[2]
    grey = np.divide(rows[..., 0], LEVELS, dtype=np.float32)
    grey *= np.float32(GRAY_WEIGHTS[0])
    channel = np.empty_like(grey)
    for c in (1, 2):
        np.divide(rows[..., c], LEVELS, out=channel)
        channel *= np.float32(GRAY_WEIGHTS[c])
        grey += channel
    return grey


def guided_upsample_photo(a, b, photo):
    """H x W float32 map a * grey + b bounded to [-grey, 1 - grey] (utils.exposure.bound_residual): the guided
    filter's coefficients ``a`` and ``b`` (h x w numpy, from inference.guided_coefficients) resized bilinearly to the
    photo's size by torch (the numbers of the whole-image filter; two full-size float planes, where the photo itself
    would be three) and applied to the photo's grey STRIP_ROWS rows at a time, in place in the resized a, which
    becomes the map."""
    import torch
    import torch.nn.functional as F

    photo = check_photo(photo)
    height, width = photo.shape[:2]
    a_full, b_full = (
        F.interpolate(
            torch.from_numpy(np.ascontiguousarray(c, dtype=np.float32))[None, None],
            size=(height, width),
            mode="bilinear",
            align_corners=False,
        )[0, 0].numpy()
        for c in (a, b)
    )
    for start, stop in photo_strips(height):
        out = a_full[start:stop]
        grey = photo_grey(photo[start:stop])
        out *= grey
        out += b_full[start:stop]
        bound_residual(out, grey, out=out)  # the definition's bounds, within [-1, 1]
    return a_full


class GuidedFit:
    """One photo's working-size result before its full-size map is made: the guided filter's coefficients ``a`` and
    ``b`` (h x w float32 numpy). ``full_map(photo)`` makes the map (guided_upsample_photo) from the photo it was
    predicted on; when a and b are finite, so is the map (a * grey + b on a grey in [0, 1], clamped)."""

    def __init__(self, a, b):
        self.a, self.b = a, b

    def full_map(self, photo):
        return guided_upsample_photo(self.a, self.b, photo)
