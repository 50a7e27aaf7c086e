"""Drawing residual maps: blue = under-exposed (r > 0), white = ideal (r = 0), red = over-exposed (r < 0).

The colours are matplotlib's 'bwr' colormap evaluated at (1 - r / vmax) / 2, clipped at the ends: r = +vmax is pure
blue, -vmax pure red. ``vmax`` is the colour scale:

- 1 (the default): the absolute scale, the same for every photo, so maps of different photos can be compared
  colour for colour; typical residuals of 0.1-0.2 come out pale;
- a fixed smaller value (e.g. 0.3): the same stretch for every photo, residuals beyond it saturate;
- ``image_vmax(residual)``: a per-image stretch, the 99th percentile of |r| but at least ``VMAX_FLOOR`` (so a nearly
  ideal photo is not blown up into noise). Colours then only compare within one photo.

'bwr' is linear from white to each end, so a heatmap pixel is pure blue or red laid over white with opacity
min(|r| / vmax, 1); ``overlay`` lays the same pure colour over the photo instead of white.
"""

import math

import numpy as np

from pieanet.utils.image_io import atomic_write, save_palette_image
from pieanet.utils.safety import MATPLOTLIB_TEXT, shown

COLOURS = 256  # entries of the colour table (matplotlib's default colormap size)
BWR_ANCHORS = ((0.0, 0.0, 1.0), (1.0, 1.0, 1.0), (1.0, 0.0, 0.0))  # 'bwr': blue, white, red at 0, 0.5, 1
# zlib level of the palette PNG heatmap: measured on 12 MP maps (docs/design.md, "Heatmap files"), level 1 writes in a
# third of level 6's time and the files are within a few per cent of its size (a map is smooth: long runs of one index)
HEATMAP_PNG_LEVEL = 1


def linear_colour_table(anchors, n=COLOURS):
    """uint8 n x 3 table of a colormap linear between equally spaced ``anchors`` (RGB in [0, 1]), built as
    matplotlib builds a LinearSegmentedColormap's table and turns it to bytes (tests/test_heatmap.py checks it against
    matplotlib's own 'bwr'): so the tools draw maps without importing matplotlib."""
    points = np.linspace(0.0, 1.0, len(anchors)) * (n - 1)
    at = (n - 1) * np.linspace(0.0, 1.0, n)
    upper = np.searchsorted(points, at)[1:-1]
    distance = (at[1:-1] - points[upper - 1]) / (points[upper] - points[upper - 1])
    colours = np.asarray(anchors, dtype=np.float64)
    table = np.concatenate(
        [colours[:1], distance[:, None] * (colours[upper] - colours[upper - 1]) + colours[upper - 1], colours[-1:]]
    )
    return (np.clip(table, 0.0, 1.0) * 255).astype(np.uint8)


CMAP_TABLE = linear_colour_table(BWR_ANCHORS)  # bwr's 256 entries, uint8 RGB


def __getattr__(name):
    """CMAP, matplotlib's 'bwr' colormap, imported when first asked for (colour bars, figures): maps need only
    CMAP_TABLE."""
    if name == "CMAP":
        from matplotlib import colormaps

        return colormaps["bwr"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


VMAX_PERCENTILE = 99.0
VMAX_FLOOR = 0.1  # the tools' default threshold: a photo whose residuals all stay below it keeps pale colours
OVERLAY_OPACITY = 0.6
OVERLAY_ROWS = 256  # overlay: rows per strip


def check_vmax(vmax):
    if not (isinstance(vmax, (int, float, np.floating)) and math.isfinite(vmax) and 0.0 < vmax <= 1.0):
        raise ValueError(f"vmax: expected a colour scale in (0, 1], got {vmax!r}")
    return float(vmax)


def image_vmax(residual, percentile=VMAX_PERCENTILE, floor=VMAX_FLOOR):
    """Per-image colour scale: the ``percentile``-th percentile of |r| (linear interpolation), at least ``floor``,
    at most 1."""
    top = float(np.percentile(np.abs(np.asarray(residual, dtype=np.float32)), percentile))
    return min(1.0, max(floor, top))


def _scaled(residual, vmax):
    """r / vmax clipped to [-1, 1], float32 (division by 1 is exact, so the default scale colours r itself)."""
    scaled = np.divide(residual, np.float32(check_vmax(vmax)), dtype=np.float32)
    return np.clip(scaled, -1.0, 1.0, out=scaled)


def colorize(residual, vmax=1.0):
    """uint8 H x W x 3 heatmap of an H x W residual map: r = +vmax blue, 0 white, -vmax red (beyond: clipped)."""
    return CMAP_TABLE[colour_index(residual, vmax)]


def colour_index(residual, vmax=1.0):
    """uint8 H x W (any shape): each pixel's entry of CMAP_TABLE (colorize's colours are CMAP_TABLE[colour_index]),
    OVERLAY_ROWS rows at a time, so the float temporaries stay small."""
    residual = np.asarray(residual)
    if residual.ndim < 2:
        return _colour_index_rows(residual, vmax)
    index = np.empty(residual.shape, dtype=np.uint8)
    for start in range(0, residual.shape[0], OVERLAY_ROWS):
        index[start : start + OVERLAY_ROWS] = _colour_index_rows(residual[start : start + OVERLAY_ROWS], vmax)
    return index


def _colour_index_rows(residual, vmax):
    # the colormap's own table indexed as the colormap indexes it (entry int(t * N) of t = (1 - r / vmax) / 2, the
    # top end folded onto the last entry): the same colours as CMAP(t) without the float64 RGBA copy CMAP(t) makes
    # (32 bytes a pixel, eight times the map itself)
    index = _scaled(residual, vmax)  # in place from here
    np.subtract(np.float32(1.0), index, out=index)
    index *= np.float32(COLOURS / 2)
    return np.minimum(index, COLOURS - 1, out=index).astype(np.uint8)


def save_heatmap_png(path, residual, vmax=1.0, compress_level=HEATMAP_PNG_LEVEL):
    """Write colorize's heatmap as an 8-bit palette PNG (CMAP_TABLE as its palette, atomically): the same colours
    as the RGB image, a third of its bytes to compress."""
    save_palette_image(path, colour_index(residual, vmax), CMAP_TABLE, compress_level=compress_level)


def overlay(photo, residual, vmax=1.0, opacity=OVERLAY_OPACITY):
    """uint8 H x W x 3: pure blue (r > 0) or red (r < 0) over the photo (float in [0, 1] or uint8) with opacity
    ``opacity`` * min(|r| / vmax, 1), so where r = 0 the photo is unchanged and at |r| >= vmax the colour has
    opacity ``opacity``. With opacity 1 it is the heatmap with the photo in place of the white. Made OVERLAY_ROWS
    rows at a time: its float temporaries stay small whatever the photo's size."""
    photo = np.asarray(photo)
    if photo.shape[:2] != np.shape(residual):
        raise ValueError(f"photo {photo.shape[:2]} and residual {np.shape(residual)} differ in size")
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity: expected a value in [0, 1], got {opacity!r}")
    residual = np.asarray(residual)
    out = np.empty(photo.shape[:2] + (3,), dtype=np.uint8)
    for start in range(0, photo.shape[0], OVERLAY_ROWS):
        rows = slice(start, start + OVERLAY_ROWS)
        out[rows] = _overlay_rows(photo[rows], residual[rows], vmax, opacity)
    return out


def _overlay_rows(photo, residual, vmax, opacity):
    photo = photo.astype(np.float32) if photo.dtype == np.uint8 else np.asarray(photo, np.float32) * 255.0
    r = _scaled(residual, vmax)
    ends = CMAP_TABLE[[0, -1]].astype(np.float32)  # r = +vmax (blue), r = -vmax (red)
    colour = np.where((r >= 0)[..., None], ends[0], ends[1])
    weight = (np.float32(opacity) * np.abs(r))[..., None]
    return np.round(np.clip(photo + weight * (colour - photo), 0.0, 255.0)).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ views
# The two views (make_heatmap --map): 'residual' draws r (grey levels / 255, the definition's unit), 'stops' draws
# the correction in stops per pixel (utils.exposure.stops_map). For a global exposure error r grows with a pixel's
# brightness (one stop more light adds more grey levels to a bright pixel than to a dark one), so the residual view
# shows the highlights as the most mis-exposed; in the stops view the same error is one flat colour.
VIEWS = ("residual", "stops")
STOPS_VMAX = 2.0  # the stops view's default colour scale: full colour at +/- 2 stops
STOPS_VMAX_FLOOR = 1 / 3  # --vmax image in the stops view: at least a third of a stop
MAX_STOPS_VMAX = 12.0  # about the most one pixel's correction can be (utils.exposure.correction_stops: +/- 12.7)
NOT_JUDGED_GREYS = (200, 232)  # the checkerboard of pixels the map does not judge (transparent, or no light measured)
NOT_JUDGED_SQUARE = 8  # px


def image_stops_vmax(stops, percentile=VMAX_PERCENTILE, floor=STOPS_VMAX_FLOOR):
    """--vmax image in the stops view: the ``percentile``-th percentile of |stops| over the measured pixels, at least
    ``floor`` (a nearly ideal photo is not blown up into noise)."""
    measured = np.abs(stops[np.isfinite(stops)])
    return max(floor, float(np.percentile(measured, percentile))) if measured.size else floor


def view_values(values, vmax, view="residual"):
    """(what colorize and overlay draw at scale 1: the values / vmax in [-1, 1], the mask of pixels with no value).
    ``values``: the residual map, or for the stops view the stops map (NaN where no light can be measured)."""
    if view == "residual":
        return values, None
    unmeasured = ~np.isfinite(values)
    scaled = np.clip(np.nan_to_num(np.asarray(values, np.float32) / np.float32(vmax), nan=0.0), -1.0, 1.0)
    return scaled, (unmeasured if unmeasured.any() else None)


def not_judged_mask(*masks):
    """The union of the masks that are not None (None when all are)."""
    found = [mask for mask in masks if mask is not None]
    return np.logical_or.reduce(found) if found else None


def mark_not_judged(rgb, mask):
    """Paint the pixels of ``mask`` (H x W bool, or None: none) of a uint8 H x W x 3 drawing with a grey checkerboard,
    the usual sign of 'nothing here': transparent pixels, and in the stops view clipped or crushed ones. In place;
    returns ``rgb``."""
    if mask is None:
        return rgb
    rows, cols = np.nonzero(mask)
    light = ((rows // NOT_JUDGED_SQUARE + cols // NOT_JUDGED_SQUARE) % 2).astype(bool)
    rgb[rows, cols] = np.where(light[:, None], NOT_JUDGED_GREYS[1], NOT_JUDGED_GREYS[0]).astype(np.uint8)
    return rgb


def draw_heatmap(values, vmax=1.0, view="residual", not_judged=None):
    """The heatmap of one view (view_values), with the pixels not judged (``not_judged``, and those the view has no
    value for) as a grey checkerboard."""
    scaled, unmeasured = view_values(values, vmax, view)
    heatmap = colorize(scaled, vmax if view == "residual" else 1.0)
    return mark_not_judged(heatmap, not_judged_mask(not_judged, unmeasured))


def draw_overlay(photo, values, vmax=1.0, view="residual", not_judged=None):
    """The overlay of one view over the photo, with the pixels not judged as a grey checkerboard."""
    scaled, unmeasured = view_values(values, vmax, view)
    drawn = overlay(photo, scaled, vmax if view == "residual" else 1.0)
    return mark_not_judged(drawn, not_judged_mask(not_judged, unmeasured))


def colorbar_figure(
    residual, title=None, vmax=1.0, scale_note=None, max_side_px=1600, dpi=100, view="residual", not_judged=None
):
    """A matplotlib Figure: the heatmap beside a colour bar labelled under / ideal / over at ±vmax, whose label
    states the scale (``scale_note`` says where it came from, e.g. 'per image'). ``view`` 'stops': ``residual`` is
    the stops map and vmax in stops (draw_heatmap); ``not_judged``: pixels drawn as a grey checkerboard."""
    from matplotlib import colormaps  # here, not at the top: only colour bars need matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    vmax = check_vmax(vmax) if view == "residual" else float(vmax)
    heatmap = draw_heatmap(residual, vmax, view, not_judged)
    height, width = heatmap.shape[:2]
    scale = min(1.0, max_side_px / max(height, width)) / dpi
    fig = Figure(
        figsize=(max(width * scale, 2.0) + 1.6, max(height * scale, 2.0) + (0.4 if title else 0.0)),
        dpi=dpi,
        layout="constrained",
    )
    ax = fig.add_subplot()
    ax.imshow(heatmap, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(shown(title), fontsize=9, **MATPLOTLIB_TEXT)  # a file name: no mathtext, no control codes
    # bwr_r on [-vmax, vmax] is bwr at (1 - r / vmax) / 2, the same colours as colorize; arrows when values clip
    bar = fig.colorbar(
        ScalarMappable(norm=Normalize(-vmax, vmax), cmap=colormaps["bwr"].reversed()),
        ax=ax,
        shrink=0.9,
        extend="both" if view == "stops" or vmax < 1.0 else "neither",
    )
    if view == "stops":
        bar.set_ticks(
            [vmax, 0.0, -vmax],
            labels=[f"+{vmax:.3g} stops\n(more light)", "ideal (0)", f"-{vmax:.3g} stops\n(less light)"],
        )
        name, reading = "correction in stops (EV)", "one global error:\none flat colour"
    else:
        bar.set_ticks([vmax, 0.0, -vmax], labels=[f"under (+{vmax:.3g})", "ideal (0)", f"over (-{vmax:.3g})"])
        name, reading = "exposure residual r", "grey levels / 255: one global\nerror shows most where bright"
    bar.set_label(
        f"{name}\nscale ±{vmax:.3g}"
        + (f"\n({scale_note})" if scale_note else "")
        + f"\n{reading}\nchequered: not judged",
        fontsize=8,
    )
    return fig


def save_colorbar_heatmap(
    path, residual, title=None, vmax=1.0, scale_note=None, max_side_px=1600, dpi=100, view="residual", not_judged=None
):
    """Write a PNG of ``colorbar_figure`` (atomically)."""
    fig = colorbar_figure(residual, title, vmax, scale_note, max_side_px, dpi, view, not_judged)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
