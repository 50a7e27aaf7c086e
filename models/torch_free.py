"""The shipped model's working-size path without torch: the network in onnxruntime, the rest in numpy and Pillow.

``import torch`` costs about 1.5 s of CPU before a photo is read, three times what decoding a 12 MP JPEG and writing
its heatmap cost together (bench/main_job.py), so the command line runs the shipped network this way when nothing
asks for torch (pieanet.runtime.torch_free decides). The numbers are those of models/inference.py's working-size path
to float rounding (tests/test_torch_free.py: maps within 1e-5 of the torch path on the sample photos and a 12 MP photo):

* ``shrink``: antialiased bicubic, as torch's ``interpolate(..., antialias=True)``, by Pillow's resampling of 32-bit
  float images, which uses the same kernel (a = -0.5), support and normalisation; width first, then height, as torch.
  Pillow converts a uint8 channel to float itself (in its own buffers, faster than numpy's fresh arrays) and the
  shrink is linear, so each channel is resized in levels and divided by 255 at the working size.
* ``guided_coefficients``: the fast guided filter's a and b at the working size (inference.guided_coefficients), with
  box means that average the pixels that exist at the borders (torch's avg_pool2d with count_include_pad=False).
* ``NumpyGuidedFit.full_map``: a and b brought to full size bilinearly (torch's align_corners=False sampling), width
  first, then height a strip of rows at a time, applied to the photo's grey and bounded (full_size.photo_grey,
  utils.exposure.bound_residual): no full-size plane but the map itself.

What runs here: the shipped ONNX file (checkpoints/pieanet_corpus.onnx), whose metadata carries the model's contract
(export.py, CONTRACT_KEY), on the CPU, at the working size or at a photo's own size when it is smaller. Tiles, native
size, other files and CUDA go through torch.
"""

import json
import math

import numpy as np
from PIL import Image

from pieanet.models import contract
from pieanet.models.full_size import GUIDED_EPS, GUIDED_RADIUS, STRIP_ROWS, GuidedFit, photo_grey, photo_strips
from pieanet.utils.exposure import bound_residual, gray
from pieanet.utils.image_io import FLOAT_RANGE_SLACK
from pieanet.utils.safety import first_line

CONFIG_KEY, CONTRACT_KEY = contract.ONNX_CONFIG_KEY, contract.ONNX_CONTRACT_KEY
LEVELS = np.float32(255.0)


class TorchFreeModel:
    """An exported P-IEANet in an onnxruntime session on the CPU, declaring models/contract.py's properties from the
    file's metadata. ``threads``: onnxruntime's intra-op threads (None: its default, one per core)."""

    def __init__(self, path, threads=None):
        import onnxruntime  # here: only a run that uses it pays for the import

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        # no busy-waiting between operators: the thread that writes the previous photo's files shares the cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            metadata = self.session.get_modelmeta().custom_metadata_map
            self.config = json.loads(metadata[CONFIG_KEY])
            declared = json.loads(metadata[CONTRACT_KEY])
        except KeyError as e:
            raise ValueError(
                f"{path}: an ONNX file without the P-IEA model contract in its metadata; re-export it with export.py"
            ) from e
        except Exception as e:  # onnxruntime's own exception types for unreadable files
            raise ValueError(f"{path}: not a readable ONNX model ({first_line(e)})") from e
        radius = declared.get("receptive_radius")
        self.receptive_radius = math.inf if radius is None else radius
        self.working_size = declared.get("working_size")
        self.tile_multiple = declared.get("tile_multiple", 1)
        self.native_size = declared.get("native_size")
        self.uses_scene = False
        self.path = str(path)

    def run(self, x):
        """The network's N x 1 x h x w residual of x (N x 3 x h x w float32 in [0, 1])."""
        try:
            (residual,) = self.session.run(["residual"], {"image": np.ascontiguousarray(x, dtype=np.float32)})
        except Exception as e:  # onnxruntime's own types: one photo's failure (pieanet.runtime.predict)
            raise RuntimeError(f"onnxruntime: {first_line(e, 200)}") from e
        return residual


def unit_planes(photo):
    """3 x H x W float32 in [0, 1] of a photo (uint8, or float in [0, 1]), as inference.to_tensor gives it."""
    if photo.dtype == np.uint8:
        return np.divide(photo.transpose(2, 0, 1), LEVELS, dtype=np.float32)
    return np.ascontiguousarray(photo.transpose(2, 0, 1), dtype=np.float32)


def check_grey(grey):
    """ValueError when a photo's grey holds NaN / inf or leaves [0, 1] by more than FLOAT_RANGE_SLACK (the check
    inference.check_photo_grey makes on the torch path)."""
    low, high = float(np.min(grey)), float(np.max(grey))
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("the photo holds NaN or infinite values; expected finite float pixels in [0, 1]")
    if low < -FLOAT_RANGE_SLACK or high > 1.0 + FLOAT_RANGE_SLACK:
        raise ValueError(f"the photo's grey runs from {low:g} to {high:g}; expected float pixels in [0, 1]")


def shrink(photo, size):
    """3 x h x w float32 in [0, 1]: ``photo`` (H x W x 3, uint8 or float in [0, 1]) resized to ``size`` (h, w) as
    inference.shrink resizes it (antialiased bicubic, clamped)."""
    height, width = size
    planes = []
    for c in range(3):
        channel = np.ascontiguousarray(photo[..., c])
        if channel.dtype == np.uint8:
            image, scale = Image.fromarray(channel).convert("F"), LEVELS
        else:
            image, scale = Image.fromarray(channel.astype(np.float32, copy=False)), None
        narrow = image.resize((width, image.height), Image.Resampling.BICUBIC)
        del image
        low = np.asarray(narrow.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)
        planes.append(low / scale if scale is not None else low)
    return np.clip(np.stack(planes), 0.0, 1.0)


def box_mean_rows(x, radius):
    """Mean of x (2-D float32) over 2 * radius + 1 rows centred on each row; at the borders over the rows that exist.
    In float32, each sum taken from the first row of the window down, then divided by the count, as torch's
    avg_pool2d does on the CPU (the same numbers: the guided filter divides by a local variance, which magnifies any
    difference in these means)."""
    length = x.shape[0]
    sums = np.zeros_like(x)
    counts = np.zeros(length, dtype=np.float32)
    for shift in range(-radius, radius + 1):  # row i + shift added to row i
        low, high = max(0, -shift), min(length, length - shift)
        sums[low:high] += x[low + shift : high + shift]
        counts[low:high] += 1
    return sums / counts[:, None]


def box_mean(x, window):
    """Mean of the 2-D array x over a window x window square centred on each pixel (window odd); at the borders the
    mean of the pixels that exist (models.filters.box_mean: down the columns first, then along the rows)."""
    x = box_mean_rows(x, window // 2)
    return np.ascontiguousarray(box_mean_rows(np.ascontiguousarray(x.T), window // 2).T)


def guided_coefficients(residual, guide, radius=GUIDED_RADIUS, eps=GUIDED_EPS):
    """inference.guided_coefficients on 2-D arrays: (a, b), each averaged over the window."""
    radius = min(radius, (min(guide.shape) - 1) // 2)
    if radius < 1:
        return np.zeros_like(residual), residual
    window = 2 * radius + 1
    mean_i, mean_p = box_mean(guide, window), box_mean(residual, window)
    cov_ip = box_mean(guide * residual, window) - mean_i * mean_p
    var_i = box_mean(guide * guide, window) - mean_i * mean_i
    a = cov_ip / (var_i + np.float32(eps))
    b = mean_p - a * mean_i
    return box_mean(a, window), box_mean(b, window)


def bilinear_taps(low, high):
    """(first index, second index, first weight, second weight) of each of ``high`` output samples of a linear
    resize from ``low`` samples, as torch computes them for align_corners=False: source = scale * (i + 0.5) - 0.5 in
    float32 with one rounding (the compiled code fuses the multiply and add), at least 0; the second index stays
    inside. Exact in float64, then rounded once to float32, gives the same taps (tests/test_torch_free.py)."""
    scale = np.float64(np.float32(low) / np.float32(high))
    source = np.maximum((scale * (np.arange(high, dtype=np.float64) + 0.5) - 0.5).astype(np.float32), np.float32(0))
    first = np.minimum(source.astype(np.int64), low - 1)
    second = np.minimum(first + 1, low - 1)
    weight = np.clip(source - first.astype(np.float32), 0, 1).astype(np.float32)
    return first, second, (np.float32(1.0) - weight), weight


class NumpyGuidedFit(GuidedFit):
    """A GuidedFit whose full-size map is made with numpy (no torch), strip by strip."""

    def full_map(self, photo):
        height, width = photo.shape[:2]
        col0, col1, wc0, wc1 = bilinear_taps(self.a.shape[1], width)
        row0, row1, wr0, wr1 = bilinear_taps(self.a.shape[0], height)
        wide_a = self.a[:, col0] * wc0 + self.a[:, col1] * wc1  # h x W: the width pass, small
        wide_b = self.b[:, col0] * wc0 + self.b[:, col1] * wc1
        out = np.empty((height, width), dtype=np.float32)
        for start, stop in photo_strips(height, STRIP_ROWS):
            rows = slice(start, stop)
            top, bottom = wr0[rows, None], wr1[rows, None]
            strip = out[rows]
            np.multiply(wide_a[row0[rows]], top, out=strip)
            strip += wide_a[row1[rows]] * bottom
            grey = photo_grey(photo[rows])
            strip *= grey
            strip += wide_b[row0[rows]] * top
            strip += wide_b[row1[rows]] * bottom
            bound_residual(strip, grey, out=strip)
        return out


def predict(model, photo, size=None, deferred=False):
    """The bounded residual map (H x W float32) of one photo (H x W x 3, uint8 or float in [0, 1]) at the working
    size ``size`` (None: the model's), or its NumpyGuidedFit when ``deferred`` and the photo is shrunk."""
    photo = np.asarray(photo)
    if photo.ndim != 3 or photo.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 RGB image, got shape {photo.shape}")
    if photo.dtype != np.uint8 and photo.dtype != np.float32:
        photo = photo.astype(np.float32)
    low_size = contract.working_shape(model, photo.shape, size)
    if low_size == photo.shape[:2]:  # a photo no larger than the working size: the network sees it as it is
        planes = unit_planes(photo)
        grey = gray(np.moveaxis(planes, 0, -1))
        check_grey(grey)
        residual = model.run(planes[None])[0, 0].astype(np.float32, copy=False)
        return bound_residual(residual, grey, out=residual)
    if photo.dtype != np.uint8:
        check_grey(photo_grey(photo))
    planes = shrink(photo, low_size)
    residual = model.run(planes[None])[0, 0].astype(np.float32, copy=False)
    fit = NumpyGuidedFit(*guided_coefficients(residual, gray(np.moveaxis(planes, 0, -1))))
    return fit if deferred else fit.full_map(photo)
