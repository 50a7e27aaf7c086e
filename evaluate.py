"""Score predicted residual maps against the labels of a dataset in the IEA40K layout.

    python evaluate.py --data-root data/synthetic --csv valid.csv --checkpoint checkpoints/pieanet_corpus.safetensors
    python evaluate.py --data-root data/synthetic --csv valid.csv --baseline mertens --json mertens.json
    python evaluate.py --data-root data/synthetic --csv valid.csv --compare checkpoints/pieanet_corpus.safetensors \\
        released --baselines all --markdown results.md     # released: the file $P_IEA_RELEASED_WEIGHTS names

Layout: <data-root>/<csv> with columns img_id (and optionally score, level), images at <images-dir>/<img_id>, labels at
<labels-dir>/<img_id stem>.npy in grey levels (divided by --label-scale). Predictions are made at the image's
resolution (or with --size / --tile, see models/inference.py) and resized to the label's resolution before scoring.
Metric conventions: utils/metrics.py. Labels are read by datasets.iea40k.read_label, the reader training uses.
A sample whose image or label cannot be read or predicted is named on stderr and skipped (exit 1); a bad option, CSV or
checkpoint is exit 2 before any work (exit codes: utils/cli.py). The JSON has the same layout for any number of
methods: {"methods": {name: metrics}, "n_samples", "n_failed", "failed", "ssim_convention"}.

Well-exposed mode (photos without labels, each its own ideal; utils/well_exposed.py, docs/evaluation.md):

    python evaluate.py --well-exposed ../shared/well_exposed --compare checkpoints/pieanet_corpus.safetensors \
        --baselines global_midgray --output outputs/well_exposed --json fa.json

A photo is flagged (not judged well exposed) when more than --share-limit percent (10) of its pixels have |r| above
--threshold (0.1) or its mean residual is further than --mean-limit (0.05) from 0, on the tools' default path (the
model's working size, guided upsampling: what make_heatmap.py shows). Prints the false-alarm rate (percent of photos
flagged), per key when DIR/manifest.csv has file and key columns, and the median photo's share of flagged pixels;
writes <--output>/well_exposed.csv (one row per method and photo) and, if asked, JSON {"methods": {name: {n_images,
n_flagged, false_alarm_pct, median_pct_flagged, per_key}}, "n_samples", "n_failed", "failed", "criterion"}.
Several processes: torchrun --nproc-per-node N evaluate.py ... measures every N-th sample per process (each on its own
GPU with CUDA); rank 0 adds them up in CSV order, so it prints and writes exactly the numbers of one process.
"""

if __name__ == "__main__":  # first, before the slow imports: Ctrl-C while they run is exit 130, one line
    from pieanet.utils.startup import quiet_interrupts

    quiet_interrupts("evaluate")
import argparse
import sys
from pathlib import Path

from pieanet import evaluation
from pieanet.models.baselines import BASELINES
from pieanet.utils import cli, well_exposed

PROG = evaluation.PROG


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, help="dataset folder (labelled mode, required with --csv; default: none)")
    p.add_argument(
        "--csv",
        help="split list, a path or relative to --data-root (labelled mode, required with --data-root; default: none)",
    )
    p.add_argument(
        "--well-exposed",
        type=Path,
        metavar="DIR",
        help="well-exposed mode: DIR (or DIR/images) holds photos that are each their own ideal; reports "
        "the share of photos not judged well exposed (false alarms), per key when DIR/manifest.csv "
        "has file and key columns, and writes a per-photo CSV into --output (default: labelled mode)",
    )
    p.add_argument(
        "--share-limit",
        type=cli.percent,
        default=well_exposed.DEFAULT_SHARE_LIMIT,
        metavar="PCT",
        help="well-exposed mode: a photo is flagged when more than PCT %% of its pixels have |r| above "
        f"--threshold (default: {well_exposed.DEFAULT_SHARE_LIMIT:g})",
    )
    p.add_argument(
        "--mean-limit",
        type=cli.threshold,
        default=well_exposed.DEFAULT_MEAN_LIMIT,
        metavar="M",
        help="well-exposed mode: a photo is also flagged when its mean residual is further than M from 0 "
        f"(default: {well_exposed.DEFAULT_MEAN_LIMIT:g})",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=Path("outputs"),
        metavar="DIR",
        help=f"well-exposed mode: folder of the per-photo table {well_exposed.CSV_NAME} (default: outputs/)",
    )
    p.add_argument("--images-dir", default="images", help="photos under --data-root (default: images)")
    p.add_argument("--labels-dir", default="labels", help="labels under --data-root (default: labels)")
    p.add_argument(
        "--label-scale",
        type=cli.positive_float,
        default=255.0,
        help="labels are divided by this (default: 255, grey levels)",
    )
    p.add_argument(
        "--baseline",
        "--baselines",
        nargs="+",
        metavar="NAME",
        help=f"classical baseline(s): all, {', '.join(BASELINES)} (default: none)",
    )
    p.add_argument(
        "--limit",
        type=cli.positive_int,
        help="only the first N rows of the CSV (well-exposed mode: the first N photos) (default: all)",
    )
    p.add_argument("--json", type=Path, help="write the metrics as JSON here (default: not written)")
    p.add_argument(
        "--markdown", type=Path, help="append one table row per method to this markdown file (default: not written)"
    )
    cli.add_common_options(p, checkpoints="many")
    args = p.parse_args(argv)
    labelled = args.data_root is not None or args.csv is not None
    if args.well_exposed is not None and labelled:
        p.error("--well-exposed DIR measures a folder without labels; give it without --data-root / --csv")
    if args.well_exposed is None and (args.data_root is None or args.csv is None):
        p.error("give --data-root DIR and --csv FILE (labelled data), or --well-exposed DIR (photos without labels)")
    return args


def run(argv=None):
    return evaluation.run(parse_args(argv))


def main(argv=None):
    return cli.run(PROG, run, argv)


if __name__ == "__main__":
    sys.exit(main())
