"""Compare enhancement methods by the exposure of their outputs, without ground truth.

    python compare_methods.py --inputs out/retinex out/zero_dce out/ours --names Retinex Zero-DCE ours \
        [--reference gt/] [--checkpoint PATH] [--output outputs/compare] [--threshold 0.1] [--max-rows 4]

Each folder holds one method's results under the same file names; names missing from some folders are reported and
the common set is compared. Per method, averaged over images: mean |r|, mean r (> 0 leans under-exposed, < 0 over),
% over- and under-exposed pixels, the holistic score 10 * (1 - mean|r|), and the rank by mean |r| (1 = best exposed).
With --reference (ground-truth images, same names): PSNR and SSIM (pytorch-msssim, RGB, data range 1) per method and
whether the no-reference ranking agrees with the full-reference one (Spearman's rho between the rankings).
Writes comparison.md, comparison.csv and comparison.png (photo above heatmap, one column per method) to --output.
Options and exit codes are those of every tool (utils/cli.py): an image that cannot be read or predicted in some folder
is named on stderr and left out for every method (exit 1); no image in common is exit 1; a bad option, folder or
checkpoint is exit 2 before any work. SSIM needs 11 x 11 pixels: smaller images get no SSIM (n/a).
"""

if __name__ == "__main__":  # first, before the slow imports: Ctrl-C while they run is exit 130, one line
    from pieanet.utils.startup import quiet_interrupts

    quiet_interrupts("compare_methods")
import argparse
import sys
from pathlib import Path

from pieanet import comparison
from pieanet.utils import cli

PROG = comparison.PROG


def parse_args(argv):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--inputs", nargs="+", type=Path, required=True, help="one folder of results per method (required)"
    )
    parser.add_argument("--names", nargs="+", help="method names (default: the folder names)")
    parser.add_argument(
        "--reference",
        type=Path,
        help="folder of ground-truth images with the same file names (default: none, no PSNR/SSIM)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("outputs/compare"),
        help="folder for comparison.md/.csv/.png (default: outputs/compare)",
    )
    parser.add_argument(
        "--max-rows", type=cli.non_negative_int, default=4, help="images shown in the figure (default: 4)"
    )
    parser.add_argument(
        "--vmax",
        type=cli.colour_scale,
        default=1.0,
        metavar="V",
        help="the figure's colour scale: r = +V full blue, -V full red, beyond is clipped; one scale "
        "for every method (default: 1); e.g. 0.3 makes residuals of 0.1-0.2 readable",
    )
    cli.add_common_options(parser)
    return parser, parser.parse_args(argv)


def run(argv):
    parser, args = parse_args(argv)
    names = args.names or [p.name for p in args.inputs]
    if len(names) != len(args.inputs) or len(set(names)) != len(names):
        parser.error("--names needs one distinct name per --inputs folder (folder names must differ otherwise)")
    return comparison.run(args, names)


def main(argv=None):
    return cli.run(PROG, run, argv)


if __name__ == "__main__":
    sys.exit(main())
