"""One photo's files: the heatmap, overlay and colour bar (--map's view at --vmax's colour scale) and the residual
.npy that the options ask for, each written atomically and only over a file the tool can prove it wrote (ledger.py);
their names are outputs.py's; and the values the command line accepts for --vmax and --jpeg-quality."""

import argparse
import math

import numpy as np

from pieanet.heatmaps import outputs
from pieanet.heatmaps.ledger import OutputLedger
from pieanet.heatmaps.outputs import output_path
from pieanet.utils import cli, folders
from pieanet.utils.exposure import stops_map
from pieanet.utils.heatmap import (
    MAX_STOPS_VMAX,
    STOPS_VMAX_FLOOR,
    VMAX_FLOOR,
    VMAX_PERCENTILE,
    draw_heatmap,
    draw_overlay,
    image_stops_vmax,
    image_vmax,
    save_colorbar_heatmap,
    save_heatmap_png,
)
from pieanet.utils.image_io import atomic_write, save_image

DEFAULT_JPEG_QUALITY = 90


def save_npy(path, residual):
    with atomic_write(path) as tmp:
        np.save(tmp, residual.astype(np.float32))


def colour_scale_of(values, spec, view="residual"):
    """(vmax, how it was chosen) for --vmax ``spec``: a number, or 'image' (the per-photo stretch); ``values``: the
    residual map, or the stops map for the stops view."""
    if spec != "image":
        return spec, "fixed"
    if view == "stops":
        vmax = image_stops_vmax(values)
        return vmax, ("per image, floor" if vmax == STOPS_VMAX_FLOOR else f"per image, p{VMAX_PERCENTILE:g} of |stops|")
    vmax = image_vmax(values)
    return vmax, ("per image, floor" if vmax == VMAX_FLOOR else f"per image, p{VMAX_PERCENTILE:g} of |r|")


def drawn_values(image, residual, view):
    """What the drawings of ``view`` show: the residual itself, or its stops map (utils.exposure.stops_map)."""
    return stops_map(image, residual) if view == "stops" else residual


def write_outputs(stem, image, residual, args, owned=False, proof=None, not_judged=None):
    """Write every requested file for one photo; if one fails, remove those already written and re-raise. When the
    prefix is ``owned`` (summary.csv records it as this photo's output), its files that this run does not ask for (an
    overlay of an earlier run with other settings) are removed, so the folder holds only outputs of the photo's latest
    row. A file is replaced or removed only when ``proof`` (ledger.py, OutputLedger; None: the folder's) shows
    the tool wrote it (its recorded size and content hash); a user's file is never touched, whatever a line in the
    ledger or summary says. Every path is checked to lie in --output with no symbolic link on the way
    (folders.inside). ``not_judged``: the photo's pixels drawn as not judged. Returns the paths written, their kinds
    (outputs.py) and the colour scale (vmax) used."""
    proof = OutputLedger(args.output) if proof is None else proof
    values = drawn_values(image, residual, args.map)
    vmax, scale_note = colour_scale_of(values if not_judged is None else values[~not_judged], args.vmax, args.map)
    writers = output_writers(stem, image, residual, vmax, scale_note, args, not_judged, values)
    kinds, written = requested_kinds(args), []
    try:
        for kind in kinds:
            with proof.writing(folders.inside(args.output, output_path(stem, kind))) as tmp:
                writers[outputs.role(kind)](tmp)
            written.append(output_path(stem, kind))
    except BaseException:
        remove(written)
        raise
    if owned:
        remove(
            [
                path
                for path in set(output_path(stem, kind) for kind in outputs.KINDS) - set(written)
                if proof.owns(folders.inside(args.output, path))
            ]
        )
    return written, kinds, vmax


def output_writers(stem, image, residual, vmax, scale_note, args, not_judged=None, values=None):
    """{role (outputs.py): writer of that file, given its path}; which files are written is requested_kinds'.
    The drawings show --map's view (``values``: drawn_values, when the caller has them), with the pixels
    ``not_judged`` chequered; the .npy holds the residual."""
    options = {}
    if args.format == "jpg":  # chroma at full resolution (4:4:4): the colour is the content of a heatmap
        options = {"quality": args.jpeg_quality or DEFAULT_JPEG_QUALITY, "subsampling": 0}
    values = drawn_values(image, residual, args.map) if values is None else values
    view = args.map
    palette = not options and view == "residual" and not_judged is None  # PNG: an 8-bit palette, the same colours
    return {
        outputs.HEATMAP: (lambda p: save_heatmap_png(p, residual, vmax))
        if palette
        else (lambda p: save_image(p, draw_heatmap(values, vmax, view, not_judged), **options)),
        outputs.RESIDUAL: lambda p: save_npy(p, residual),
        outputs.OVERLAY: lambda p: save_image(p, draw_overlay(image, values, vmax, view, not_judged), **options),
        outputs.COLORBAR: lambda p: save_colorbar_heatmap(
            p, values, title=stem.name, vmax=vmax, scale_note=scale_note, view=view, not_judged=not_judged
        ),
    }


def requested_kinds(args):
    """The kinds of file the options ask for, per photo, in the order they are written."""
    return outputs.requested_kinds(args.format, overlay=args.overlay, colorbar=args.colorbar, residual=args.save_npy)


def requested_outputs(stem, args):
    """The files write_outputs writes for ``stem`` under the current options."""
    return [output_path(stem, kind) for kind in requested_kinds(args)]


def remove(paths):
    for path in paths:
        path.unlink(missing_ok=True)


# ---- the values of make_heatmap's --vmax and --jpeg-quality (argparse types)
def vmax_option(text):
    """--vmax: a positive number (at most 1 for the residual view, MAX_STOPS_VMAX for the stops view; parse_args
    checks which) or 'image' (a per-photo stretch)."""
    if text.strip().lower() == "image":
        return "image"
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 < value <= MAX_STOPS_VMAX:  # NaN too
        raise argparse.ArgumentTypeError(
            f"expected a number in (0, 1] or 'image' (with --map stops: stops, up to {MAX_STOPS_VMAX:g}), got {text!r}"
        )
    return value


def jpeg_quality_option(text):
    value = cli.positive_int(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"expected a JPEG quality from 1 to 100, got {text}")
    return value
