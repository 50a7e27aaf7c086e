"""Pixel-level exposure heatmaps for a folder of photos.

    python make_heatmap.py                                # img_to_pred/ -> outputs/, shipped checkpoint
    python make_heatmap.py --input photos --recursive --output results --overlay --colorbar --save-npy
    P_IEA_RELEASED_WEIGHTS=wavelet_epoch_2_val_loss0.03022034629540784.pth python make_heatmap.py --checkpoint released
    torchrun --nproc-per-node 4 make_heatmap.py --input photos --output results   # several processes, any nodes

Per photo: <stem>_exposure.png (blue = under-exposed, white = ideal, red = over-exposed) at full size; optionally
<stem>_residual.npy, <stem>_overlay.png, <stem>_colorbar.png; one summary.csv and index.html per run. A photo that
fails is one line and a row, the others go on (exit 1); a bad checkpoint, input, folder or option is exit 2 before any
work. This file parses the command line; the run is the library's (pieanet/heatmaps/: what a run promises).
"""

if __name__ == "__main__":  # first, before the slow imports: Ctrl-C while they run is exit 130, one line
    from pieanet.utils.startup import passive_waits, quiet_interrupts

    quiet_interrupts("make_heatmap")
    passive_waits()  # before torch starts its threads
import sys
from pathlib import Path

from pieanet.heatmaps.run import PROG, make_heatmaps
from pieanet.heatmaps.writing import DEFAULT_JPEG_QUALITY, jpeg_quality_option, vmax_option
from pieanet.utils import cli
from pieanet.utils.heatmap import MAX_STOPS_VMAX, STOPS_VMAX, VIEWS, VMAX_FLOOR, VMAX_PERCENTILE

ROOT = Path(__file__).resolve().parent
WORK = ROOT if (ROOT / "img_to_pred").is_dir() else Path()  # a checkout's folders; the current one when installed


def parse_args(argv):
    p = cli.Parser(prog=PROG, description="Pixel-level exposure heatmaps (r > 0 under-exposed, r < 0 over-exposed).")
    p.add_argument(
        "photos", type=Path, nargs="*", metavar="PATH", help="image files or folders, as --input (both may be given)"
    )
    p.add_argument(
        "--input",
        type=Path,
        nargs="+",
        action="extend",
        default=[],
        metavar="PATH",
        help="image files or folders, one or more, the option repeatable (default: img_to_pred/ when no PATH is given)",
    )
    p.add_argument("--recursive", action="store_true", help="also read sub-folders; outputs keep their structure")
    p.add_argument(
        "--output", type=Path, default=WORK / "outputs", action=cli.Once, help="output folder (default: outputs/)"
    )
    p.add_argument(
        "--batch-size", type=cli.positive_int, default=1, help="photos of equal size run together (default: 1)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="skip the photos already done in --output: a row with status ok in summary.csv (or in a "
        "summary.rank<k>.csv a killed torchrun run left) made under the output name, for the photo's "
        "current content and with the "
        "settings this run would use (the checkpoint's content, --size, --tile, --threshold, --vmax, "
        "--raw-clipping, --jpeg-quality, --map, --alpha), and every file the current options ask for "
        "present; the others are (re)done and their old rows dropped, so each photo keeps one row",
    )
    cli.add_common_options(p)
    p.add_argument("--save-npy", action="store_true", help="also write <stem>_residual.npy (float32, full size)")
    p.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.png (heatmap over the photo)")
    p.add_argument("--colorbar", action="store_true", help="also write <stem>_colorbar.png (heatmap with colour bar)")
    p.add_argument(
        "--raw-clipping",
        action="store_true",
        help="camera RAW files: judge clipping on the raw data too. Pixels with a photosite at the "
        "sensor's white level among their 3 x 3 neighbourhood count as over-exposed (r lowered to "
        "just below -threshold, so they are in pct_over and red in the map) and their share goes "
        "into summary.csv's pct_raw_clipped (empty for other files)",
    )
    p.add_argument(
        "--no-report",
        action="store_true",
        help="do not write index.html (a page with every photo's numbers, heatmap and overlay, built from summary.csv)",
    )
    p.add_argument(
        "--vmax",
        type=vmax_option,
        metavar="V|image",
        help="colour scale: r = +V is full blue, -V full red, beyond is clipped; 1 keeps one absolute "
        f"scale for every photo, so maps compare across photos (default: 1; with --map stops V is in "
        f"stops, up to {MAX_STOPS_VMAX:g}, default {STOPS_VMAX:g}); e.g. 0.3 makes typical "
        f"residuals of 0.1-0.2 readable; 'image' = per photo, the {VMAX_PERCENTILE:g}th percentile "
        f"of |r| but at least {VMAX_FLOOR:g} (colours then only compare within a photo)",
    )
    p.add_argument(
        "--map",
        choices=VIEWS,
        default="residual",
        help="what the heatmap, overlay and colour bar draw: 'residual', r itself (grey levels / 255, "
        "the definition; a global error shows most in bright areas), or 'stops', the correction per "
        "pixel in stops (log2 of the linear-light ratio, the quantity of the stops column; a global "
        "error is one flat colour; clipped and crushed pixels, whose light cannot be measured, are "
        "chequered). --vmax is then in stops (default: residual)",
    )
    cli.add_alpha_option(p)
    p.add_argument(
        "--format",
        choices=["png", "jpg"],
        default="png",
        help="file type of the heatmap and overlay (default: png; jpg is several times smaller)",
    )
    p.add_argument(
        "--jpeg-quality",
        type=jpeg_quality_option,
        metavar="Q",
        help=f"JPEG quality 1-100 with --format jpg (default: {DEFAULT_JPEG_QUALITY})",
    )
    args = p.parse_args(argv)
    if args.jpeg_quality is not None and args.format != "jpg":
        p.error("--jpeg-quality applies to --format jpg only")
    args.inputs = args.input + args.photos
    if args.vmax is None:
        args.vmax = STOPS_VMAX if args.map == "stops" else 1.0
    elif args.vmax != "image" and args.map == "residual" and args.vmax > 1.0:
        p.error(
            f"argument --vmax: expected a number in (0, 1] or 'image', got {args.vmax:g} (a scale in stops "
            "goes with --map stops)"
        )
    return args


def run(argv):
    return make_heatmaps(parse_args(argv), default_input=WORK / "img_to_pred")


def main(argv: "list[str] | None" = None) -> int:
    return cli.run(PROG, run, argv)


if __name__ == "__main__":
    sys.exit(main())
