"""Residual maps for photos of any size.

The model's properties (working size, tile multiple, receptive radius, native size, scene) and the decisions that follow
from them (tile or not, the tile margin, the working shape) come from models/contract.py. Two ways to go beyond what
fits in memory at once, with different trade-offs:

* ``tile=N`` -- native resolution, overlapping tiles. Each tile is run with a margin of ``overlap`` pixels of context
  on every side and only its centre is kept. Tile origins sit on multiples of ``model.tile_multiple`` and the margin
  covers the model's receptive radius, so the stitched map equals the whole-image map (to float rounding) with no
  seams. Cost: every pixel of the margins is computed again, about ``(N / (N - 2 * overlap))**2`` times the work.
* ``size=N`` -- working resolution (by default the model's own ``working_size``, if its config has one). The photo
  is shrunk so its longer side is N (``shrink``: antialiased bicubic, the filter of PIL's BICUBIC resize, so a photo
  shrunk here and one saved at N px by another program look alike to the model), the map predicted there, and brought
  back to full size with a guided filter whose guide is the full-resolution grey image, so edges of the map follow
  the photo's edges instead of being blurred. Cost and memory fall with (N / longer side)**2, but detail finer than
  the working resolution is inferred from the photo, not predicted by the model.

Both can be combined (tiles at the working resolution). Models with a ``native_size`` (the released network) resize
to it themselves; they are called on the whole image and ``size`` / ``tile`` do not apply.
"""

import numpy as np
import torch
import torch.nn.functional as F

from pieanet.models import contract
from pieanet.models.contract import default_overlap, round_up  # noqa: F401 (default_overlap: for the callers)
from pieanet.models.full_size import GUIDED_EPS, GUIDED_RADIUS, GuidedFit, shrink_photo
from pieanet.utils.exposure import bound_residual, gray
from pieanet.models.filters import box_mean
from pieanet.utils.image_io import FLOAT_RANGE_SLACK


def model_device(model):
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def tile_spans(length, tile, core, margin):
    """(start, stop, keep_start, keep_stop) along one axis: the input span of each tile and the part of it kept."""
    if length <= tile:
        return [(0, length, 0, length)]
    spans = []
    for keep_start in range(0, length, core):
        keep_stop = min(keep_start + core, length)
        start, stop = max(0, keep_start - margin), min(length, keep_stop + margin)
        spans.append((start, stop, keep_start, keep_stop))
    return spans


def run_tiled(model, x, tile, overlap):
    """Model output for x (B x 3 x H x W) computed tile by tile; each tile keeps only its centre."""
    multiple = contract.tile_multiple(model)
    margin = round_up(overlap, multiple)
    core = (tile - 2 * margin) // multiple * multiple
    if core < multiple:
        raise ValueError(
            f"tile {tile} is too small for an overlap of {margin} px on each side (tile multiple "
            f"{multiple}); use a tile of at least {2 * margin + multiple} or a smaller overlap"
        )
    height, width = x.shape[-2:]
    if height <= tile and width <= tile:
        return model(x)
    # a model that judges the whole scene (P-IEANet's scene branch) sees it once; each tile samples that
    context = contract.scene_context(model, x)
    out = torch.empty(x.shape[0], 1, height, width, dtype=x.dtype, device=x.device)
    for y0, y1, ky0, ky1 in tile_spans(height, tile, core, margin):
        for x0, x1, kx0, kx1 in tile_spans(width, tile, core, margin):
            region = {"region": (y0, x0, height, width)} if context else {}
            piece = model(x[..., y0:y1, x0:x1].contiguous(), **context, **region)
            out[..., ky0:ky1, kx0:kx1] = piece[..., ky0 - y0 : ky1 - y0, kx0 - x0 : kx1 - x0]
    return out


def shrink(x, size):
    """x (B x 3 x H x W in [0, 1]) resized to size (h, w) with antialiased bicubic interpolation, the filter of PIL's
    BICUBIC resize: the model's verdict should not depend on whether a photo was shrunk here or saved at the working
    size by another program, and a softer filter (antialiased bilinear) shifts it."""
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp_(0.0, 1.0)


def guided_coefficients(residual, guide_low, radius=GUIDED_RADIUS, eps=GUIDED_EPS):
    """The fast guided filter's (He & Sun 2015) local fit residual ~ a * guide + b at low resolution, each of a and b
    already averaged over the window: (a, b), B x 1 x h x w like ``residual`` and ``guide_low``. A map too small for
    the window (radius < 1) gets a = 0, b = residual: plain bilinear upsampling."""
    radius = min(radius, (min(guide_low.shape[-2:]) - 1) // 2)
    if radius < 1:
        return torch.zeros_like(residual), residual
    window = 2 * radius + 1
    mean_i, mean_p = box_mean(guide_low, window), box_mean(residual, window)
    cov_ip = box_mean(guide_low * residual, window) - mean_i * mean_p
    var_i = box_mean(guide_low * guide_low, window) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box_mean(a, window), box_mean(b, window)


def guided_upsample(residual, guide_low, guide_full, radius=GUIDED_RADIUS, eps=GUIDED_EPS):
    """Fast guided filter (He & Sun 2015): fit residual ~ a * guide + b locally at low resolution, upsample a and b
    bilinearly and apply them to the full-resolution guide. All tensors B x 1 x h x w / B x 1 x H x W."""
    a, b = guided_coefficients(residual, guide_low, radius, eps)
    size = guide_full.shape[-2:]
    a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
    b = F.interpolate(b, size=size, mode="bilinear", align_corners=False)
    return a.mul_(guide_full).add_(b)


def to_tensor(image, device):
    """H x W x 3 numpy (float in [0, 1], or uint8) -> 1 x 3 x H x W float32 on device."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 RGB image, got shape {image.shape}")
    if image.dtype == np.uint8:
        image = image.astype(np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0).to(device)


def model_dtype(model):
    """The floating dtype of the model's weights (None for a model without torch weights, e.g. onnxruntime's)."""
    for tensor in model.parameters() if isinstance(model, torch.nn.Module) else ():
        if tensor.dtype.is_floating_point:
            return tensor.dtype
    return None


def check_photo_tensor(x, model=None):
    """Refuse, in one line each (TypeError / ValueError), a tensor the model cannot judge as B x 3 x H x W photos in
    [0, 1]: not a tensor, not real floating point (bool, integer and complex are never guessed), not the dtype of
    ``model``'s weights, another shape, no pixel. The values are checked on the grey (check_photo_grey), which every
    path computes anyway."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor (B x 3 x H x W, float in [0, 1]), got {type(x).__name__}")
    if not x.dtype.is_floating_point or x.dtype.is_complex:
        raise TypeError(f"a {x.dtype} tensor; expected float pixels in [0, 1] (photo arrays: pieanet.predict)")
    weights = model_dtype(model) if model is not None else None
    if weights is not None and x.dtype != weights:
        raise TypeError(f"a {x.dtype} tensor for a model with {weights} weights; convert it with .to({weights})")
    if x.dim() != 4 or x.shape[1] != 3 or x.numel() == 0:
        raise ValueError(f"expected a B x 3 x H x W tensor (at least one pixel), got shape {tuple(x.shape)}")


def check_photo_grey(grey):
    """ValueError in one line when the grey of the photos (B x 1 x H x W) holds a NaN or infinite value (any
    channel's shows there) or leaves [0, 1] by more than FLOAT_RANGE_SLACK: a photo in 0..255 or centred on 0 would
    otherwise give a finite nonsense map or an all-NaN one. One pass over a third of the values (about 1 % of
    predict_tensor's time on a 12 MP photo, docs/safety.md); a channel outside [0, 1] whose grey stays in it is not
    seen here."""
    low, high = (float(v) for v in torch.aminmax(grey))
    if not (low == low and high == high and abs(low) != float("inf") and abs(high) != float("inf")):
        raise ValueError("the photo tensor holds NaN or infinite values; expected finite float pixels in [0, 1]")
    if low < -FLOAT_RANGE_SLACK or high > 1.0 + FLOAT_RANGE_SLACK:
        raise ValueError(
            f"the photo tensor's grey runs from {low:g} to {high:g}; expected float pixels in [0, 1] "
            "(they are not rescaled or clipped)"
        )


def predict_tensor(model, x, size=None, tile=None, overlap=None):
    """Residual (B x 1 x H x W, float32) of x (B x 3 x H x W in [0, 1]) under inference_mode, within the definition's
    bounds for x: r in [-grey, 1 - grey] per pixel (utils.exposure.bound_residual; the network's own output is not
    bounded, e.g. the released network's reference outputs are its raw ones).
    size: working resolution (longer side); None = the model's own ``working_size`` (native if it has none);
    0 = native resolution. A tensor outside that contract (dtype, shape, NaN / inf, values outside [0, 1]) is a
    TypeError or ValueError in one line (check_photo_tensor, check_photo_grey), never a silently wrong map."""
    check_photo_tensor(x, model)
    if overlap is None:
        overlap = default_overlap(model)
    tile = contract.tile_for(model, tile)
    height, width = x.shape[-2:]
    low_size = contract.working_shape(model, (height, width), size)
    with torch.inference_mode():
        grey = gray(x)
        check_photo_grey(grey)
        if contract.native_size(model):
            residual = model(x)
        elif low_size != (height, width):
            x_low = shrink(x, low_size)
            residual = run_tiled(model, x_low, tile, overlap) if tile else model(x_low)
            residual = guided_upsample(residual.float(), gray(x_low), grey)
        else:
            residual = run_tiled(model, x, tile, overlap) if tile else model(x)
        # the last step of every backend and path: r within the bounds the definition allows for this photo
        residual = residual.float()
        return bound_residual(residual, grey, out=residual)


def predict_residual(model, image, size=None, tile=None, overlap=None, device=None):
    """Residual map (np.float32 H x W, > 0 under-exposed) of one RGB image (np H x W x 3, uint8 or float in [0, 1]),
    each pixel within [-grey, 1 - grey] of the image's grey (predict_tensor; full_size.guided_upsample_photo).

    size: working resolution (longer side) with guided upsampling back to full size; None = the model's default
    (``working_size`` in its config, native resolution if it has none); 0 = native resolution.
    tile: run at native (or working) resolution in overlapping tiles of this size; overlap: context margin in pixels
    (default: the model's receptive radius, see ``default_overlap``). device: defaults to the model's device.
    """
    return predict_batch(model, [image], size=size, tile=tile, overlap=overlap, device=device)[0]


def predict_batch(model, images, size=None, tile=None, overlap=None, device=None, batch_size=8, deferred=False):
    """predict_residual for a list of images; consecutive images of equal shape are run as one batch. ``deferred``:
    a photo on the working-size path gets its full_size.GuidedFit instead of its map (``fit.full_map(photo)`` makes
    the same map later, on any thread); the others get their maps."""
    device = torch.device(device) if device is not None else model_device(model)
    results, start = [], 0
    while start < len(images):
        stop = start + 1
        shape = np.shape(images[start])
        while stop < len(images) and stop - start < batch_size and np.shape(images[stop]) == shape:
            stop += 1
        results.extend(predict_group(model, images[start:stop], size, tile, overlap, device, deferred))
        start = stop
    return results


def predict_group(model, images, size, tile, overlap, device, deferred=False):
    """The maps (numpy H x W) of images of one shape, run as one batch: on the working-size path straight from the
    photos as read (predict_shrunk; ``deferred``: their GuidedFit), else as one float tensor (predict_tensor)."""
    low_size = contract.working_shape(model, np.shape(images[0]), size)
    if contract.native_size(model) or low_size == tuple(np.shape(images[0])[:2]):
        x = torch.cat([to_tensor(image, device) for image in images])
        return list(predict_tensor(model, x, size=size, tile=tile, overlap=overlap).cpu().numpy()[:, 0])
    if deferred:
        return predict_fits(model, images, low_size, tile, overlap, device)
    return predict_shrunk(model, images, low_size, tile, overlap, device)


def predict_shrunk(model, images, low_size, tile=None, overlap=None, device="cpu"):
    """predict_tensor's working-size path on photos as read (numpy, uint8 or float), with the same numbers: each
    photo shrunk strip by strip (full_size.shrink_photo), the batch run at ``low_size``, and each map brought back
    with the guided filter on its photo's grey, strip by strip (full_size.guided_upsample_photo): no float copy of
    a full-size photo is made."""
    fits = predict_fits(model, images, low_size, tile, overlap, device)
    return [fit.full_map(image) for fit, image in zip(fits, images)]


def predict_fits(model, images, low_size, tile=None, overlap=None, device="cpu"):
    """predict_shrunk up to its full-size step: each photo's full_size.GuidedFit (a and b at ``low_size``)."""
    overlap = default_overlap(model) if overlap is None else overlap
    tile = contract.tile_for(model, tile)
    x_low = torch.cat([shrink_photo(image, low_size, device) for image in images])
    with torch.inference_mode():
        residual = run_tiled(model, x_low, tile, overlap) if tile else model(x_low)
        a, b = guided_coefficients(residual.float(), gray(x_low))
    a, b = a.float().cpu().numpy(), b.float().cpu().numpy()
    return [GuidedFit(a[n, 0], b[n, 0]) for n in range(len(images))]
