"""Reading the maps: one photo drawn with each colour scale of make_heatmap.py, and how upstream drew its figures.

    python bench/reading_the_maps.py [--photo img_to_pred/coffee_over.jpg] [--figure docs/reading_the_maps.png]
                                     [--shared ../shared]

Writes a figure of six panels: the photo; its heatmap at the fixed scale ±1 (the default), at --vmax 0.3 and at
--vmax image; the --overlay at --vmax 0.3; and the same map drawn the way the upstream repository drew its published
heatmaps. The residual is the shipped checkpoint's (CPU, its working size).

The upstream drawing is measured, not assumed: for each photo in <shared>/official/ the published heatmap's colours
are read back as positions t in 'bwr' and fitted against the released network's output for that photo
(official_reference.npz, the same network and photo). The fit gives the colour scale upstream used; the script prints
it. Upstream's photos and heatmaps are only read, never drawn into the figure (their README asks that they are not
copied into this repository).
"""

import argparse
import sys
from pathlib import Path

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pieanet import runtime  # noqa: E402
from pieanet.models import load_model  # noqa: E402
from pieanet.utils.heatmap import CMAP, colorize, image_vmax, overlay  # noqa: E402
from pieanet.utils.image_io import atomic_write, load_image, open_photo  # noqa: E402


def upstream_scale(shared):
    """Per upstream photo: (r drawn white, r drawn full blue, r drawn full red, fit correlation, the output's min and
    max). Upstream's colour at r is bwr at a + b r; a pixel of the published PNG gives t back exactly ('bwr' is
    (2t, 2t, 1) below the middle and (1, 2 - 2t, 2 - 2t) above it)."""
    reference = np.load(shared / "official" / "official_reference.npz")
    scales = {}
    for name in ["test_low", "test1_high"]:
        with open_photo(shared / "official" / f"{name}_exposure.png") as img:
            published = np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0
            size = img.size
        t = np.where(published[..., 2] >= published[..., 0], published[..., 0] / 2, 1 - published[..., 2] / 2)
        output = reference[f"{name}_output"]
        resized = np.asarray(Image.fromarray(output).resize(size, Image.BILINEAR), dtype=np.float64)
        slope, offset = np.polyfit(resized.ravel(), t.ravel(), 1)
        correlation = np.corrcoef(resized.ravel(), t.ravel())[0, 1]
        scales[name] = (
            (0.5 - offset) / slope,
            -offset / slope,
            (1 - offset) / slope,
            correlation,
            float(output.min()),
            float(output.max()),
        )
    return scales


def heatmap_panel(ax, picture, title, norm):
    """A panel with a colour bar below it, ticked at both ends and the middle of ``norm``."""
    ax.imshow(picture, interpolation="antialiased")
    ax.set_title(title, fontsize=7)
    ax.set_axis_off()
    colorbar = ax.figure.colorbar(
        ScalarMappable(norm=norm, cmap=CMAP.reversed()), ax=ax, orientation="horizontal", fraction=0.06, pad=0.03
    )
    colorbar.set_ticks([norm.vmin, (norm.vmin + norm.vmax) / 2, norm.vmax])
    colorbar.ax.xaxis.set_major_formatter("{x:+.2f}")
    colorbar.ax.tick_params(labelsize=6)


def draw(photo_path, residual, figure_path):
    with open_photo(photo_path) as opened:
        photo = np.asarray(opened.convert("RGB"))
    per_image = image_vmax(residual)
    low, high = float(residual.min()), float(residual.max())
    fig = Figure(figsize=(7.2, 4.3), dpi=100, layout="constrained")
    axes = fig.subplots(2, 3)
    axes[0, 0].imshow(photo)
    axes[0, 0].set_title(f"{photo_path.name}: mean r {residual.mean():+.3f}", fontsize=7)
    axes[0, 0].set_axis_off()
    heatmap_panel(axes[0, 1], colorize(residual), "default: fixed ±1, comparable across photos", Normalize(-1, 1))
    heatmap_panel(axes[0, 2], colorize(residual, 0.3), "--vmax 0.3 (fixed stretch)", Normalize(-0.3, 0.3))
    heatmap_panel(
        axes[1, 0],
        colorize(residual, per_image),
        f"--vmax image (±{per_image:.3f}, p99 of |r|)",
        Normalize(-per_image, per_image),
    )
    heatmap_panel(axes[1, 1], overlay(photo, residual, 0.3), "--overlay --vmax 0.3", Normalize(-0.3, 0.3))
    # upstream: matplotlib's bwr_r from the map's own minimum to its maximum, so white is the middle of that range
    upstream = CMAP((high - residual) / (high - low), bytes=True)[..., :3]
    heatmap_panel(
        axes[1, 2], upstream, f"upstream's way: min..max, white at r = {(low + high) / 2:+.2f}", Normalize(low, high)
    )
    with atomic_write(figure_path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--photo",
        type=Path,
        default=ROOT / "img_to_pred" / "coffee_over.jpg",
        help="the photo to draw (default: img_to_pred/coffee_over.jpg)",
    )
    p.add_argument(
        "--figure",
        type=Path,
        default=ROOT / "docs" / "reading_the_maps.png",
        help="where the figure goes (default: docs/reading_the_maps.png)",
    )
    p.add_argument(
        "--shared",
        type=Path,
        default=ROOT.parent / "shared",
        help="the reference data with official/ (default: ../shared)",
    )
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if (args.shared / "official" / "official_reference.npz").is_file():
        for name, (white, blue, red, correlation, low, high) in upstream_scale(args.shared).items():
            print(
                f"upstream {name}_exposure.png: white at r = {white:+.3f}, full blue at {blue:+.3f}, full red at "
                f"{red:+.3f} (fit correlation {correlation:.3f}); the released output spans {low:+.3f}..{high:+.3f}"
            )
    else:
        print(f"{args.shared / 'official'}: not found; the upstream colour scale is not measured")
    model = load_model(runtime.DEFAULT_CHECKPOINT)
    residual = runtime.predict(model, [load_image(args.photo)])[0]
    draw(args.photo, residual, args.figure)
    print(
        f"{args.figure}: {args.figure.stat().st_size / 1000:.0f} kB; {args.photo.name}: mean |r| "
        f"{np.abs(residual).mean():.3f}, p99 of |r| {image_vmax(residual):.3f}, r from {residual.min():+.3f} "
        f"to {residual.max():+.3f}"
    )


if __name__ == "__main__":
    main()
