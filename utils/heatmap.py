"""Drawing residual maps: blue = under-exposed (r = +1), white = ideal (r = 0), red = over-exposed (r = -1).

The colours are matplotlib's 'bwr' colormap evaluated at (1 - r) / 2.
"""
import numpy as np
from matplotlib import colormaps
from matplotlib.colors import Normalize
from matplotlib.cm import ScalarMappable
from matplotlib.figure import Figure

from pieanet.utils.image_io import atomic_write

CMAP = colormaps["bwr"]


def colorize(residual):
    """uint8 H x W x 3 heatmap of an H x W residual map in [-1, 1] (values outside are clipped)."""
    r = np.clip(np.asarray(residual, dtype=np.float32), -1.0, 1.0)
    return CMAP((1.0 - r) / 2.0, bytes=True)[..., :3]


def overlay(photo, residual, alpha=0.5):
    """uint8 H x W x 3: the heatmap blended over the photo (float in [0, 1] or uint8), ``alpha`` = heatmap weight."""
    photo = np.asarray(photo)
    if photo.dtype == np.uint8:
        photo = photo.astype(np.float32) / 255.0
    if photo.shape[:2] != np.shape(residual):
        raise ValueError(f"photo {photo.shape[:2]} and residual {np.shape(residual)} differ in size")
    blend = (1.0 - alpha) * photo + alpha * (colorize(residual).astype(np.float32) / 255.0)
    return np.round(np.clip(blend, 0.0, 1.0) * 255.0).astype(np.uint8)


def save_colorbar_heatmap(path, residual, title=None, max_side_px=1600, dpi=100):
    """Write a PNG of the heatmap beside a colour bar labelled under / ideal / over (atomically)."""
    heatmap = colorize(residual)
    height, width = heatmap.shape[:2]
    scale = min(1.0, max_side_px / max(height, width)) / dpi
    fig = Figure(figsize=(max(width * scale, 2.0) + 1.4, max(height * scale, 2.0) + (0.4 if title else 0.0)),
                 dpi=dpi, layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(heatmap, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    # bwr_r on [-1, 1] is bwr at (1 - r) / 2, the same colours as colorize
    bar = fig.colorbar(ScalarMappable(norm=Normalize(-1.0, 1.0), cmap=CMAP.reversed()), ax=ax, shrink=0.9)
    bar.set_ticks([1.0, 0.0, -1.0], labels=["under (+1)", "ideal (0)", "over (-1)"])
    bar.set_label("exposure residual r")
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
