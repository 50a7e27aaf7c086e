"""How far apart the development sets' references are: what their labels themselves say, before any model runs.

    python bench/references.py [--real-brackets DIR] [--human-ref DIR] [--well-exposed DIR] [--json OUT]

For each labelled set (real_brackets real.csv: the ideal is a bracket frame picked by a mid-grey rule; human_ref
human_ref.csv: the fusion people rated best):
* how many of its frames are judged well exposed by their own label (utils/well_exposed.verdict on the label);
* the label's mean residual as a function of the frame's mean grey: the decreasing least-squares fit (isotonic
  regression) of (mean grey, mean label) over the frames, where it crosses zero, the share of the mean label's
  variance the fit explains (in sample: a decreasing fit of n points is flexible) and, without any fit, the Spearman
  rank correlation of mean grey and mean label;
* carried to the well_exposed photos (their own ideals): the mean residual the fit gives each photo from its mean grey,
  and the percentage of photos whose |mean r| exceeds well_exposed's mean limit, overall and per key. Any method whose
  mean residual follows that set's labels as a function of brightness flags at least that many published photos (the
  mean test alone; the pixel-share test can only add more).
Needs scipy (requirements-train.txt). Data roots default to ../shared/<set> beside the checkout.
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from scipy.optimize import isotonic_regression  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from pieanet.datasets.iea40k import label_name, read_label, read_split  # noqa: E402
from pieanet.utils import well_exposed  # noqa: E402
from pieanet.utils.exposure import gray  # noqa: E402
from pieanet.utils.image_io import atomic_write, load_image  # noqa: E402
from pieanet.utils.safety import shown  # noqa: E402

SHARED = ROOT.parent / "shared"
LABELLED = {"real_brackets": "real.csv", "human_ref": "human_ref.csv"}


def mean_grey(path):
    """The photo's mean grey level, 0..255 (gray of utils.exposure on the decoded photo)."""
    return float(gray(load_image(path) * 255.0).mean())


def brightness_curve(greys, means):
    """The decreasing least-squares fit of ``means`` against ``greys``, as a function of a mean grey (flat beyond the
    data's ends, linear between its points), and the share of the variance of ``means`` it explains."""
    order = np.argsort(greys)
    x, y = np.asarray(greys, np.float64)[order], np.asarray(means, np.float64)[order]
    fit = isotonic_regression(y, increasing=False).x
    explained = 1.0 - np.sum((y - fit) ** 2) / np.sum((y - y.mean()) ** 2)
    return (lambda g: np.interp(g, x, fit)), float(explained)


def zero_crossing(curve, low=0.0, high=255.0):
    """The lowest mean grey where the decreasing ``curve`` reaches zero or below (None if it never does)."""
    grid = np.linspace(low, high, 2551)
    below = np.nonzero(curve(grid) <= 0)[0]
    return float(grid[below[0]]) if below.size else None


def labelled_set(root, csv_name):
    """[(mean grey, label mean, label verdict)] of the set's rows."""
    rows = []
    for row in read_split(root / csv_name, required=("img_id",)):
        label = read_label(root / "labels" / label_name(row.img_id))
        rows.append((mean_grey(root / "images" / row.img_id), float(label.mean()), well_exposed.verdict(label)))
    return rows


def flagged_by_curve(curve, photos, mean_limit=well_exposed.DEFAULT_MEAN_LIMIT):
    """{key: percent of photos whose curve mean exceeds mean_limit}, "all" included."""
    keys = {"all": [abs(curve(g)) > mean_limit for _, g, _ in photos]}
    for key in sorted({k for _, _, k in photos if k}):
        keys[key] = [abs(curve(g)) > mean_limit for _, g, k in photos if k == key]
    return {key: 100.0 * float(np.mean(v)) for key, v in keys.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in (*LABELLED, "well_exposed"):
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=Path,
            default=SHARED / name,
            help=f"the {name} development set (default: ../shared/{name})",
        )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    for name in (*LABELLED, "well_exposed"):
        if not getattr(args, name).is_dir():
            parser.error(shown(f"{getattr(args, name)}: not found; expected the {name} development set"))
    listed, _ = well_exposed.list_photos(args.well_exposed)
    photos = [(name, mean_grey(path), key) for path, name, key in listed]
    report = {"well_exposed_photos": len(photos)}
    for name, csv_name in LABELLED.items():
        rows = labelled_set(getattr(args, name), csv_name)
        greys, means = [r[0] for r in rows], [r[1] for r in rows]
        curve, explained = brightness_curve(greys, means)
        report[name] = {
            "frames": len(rows),
            "judged_well_exposed_by_label": sum(not r[2]["flagged"] for r in rows),
            "variance_explained_by_mean_grey": explained,
            "zero_crossing_grey": zero_crossing(curve),
            "spearman_mean_grey_vs_mean_label": float(spearmanr(greys, means).statistic),
            "well_exposed_flagged_pct": flagged_by_curve(curve, photos),
        }
    for name in LABELLED:
        r = report[name]
        crossing = "never" if r["zero_crossing_grey"] is None else f"{r['zero_crossing_grey']:.0f}"
        print(
            f"{name}: {r['judged_well_exposed_by_label']} of {r['frames']} frames judged well exposed by their own "
            f"label; rank correlation of mean grey and mean label {r['spearman_mean_grey_vs_mean_label']:+.3f}; a "
            f"decreasing fit explains {100 * r['variance_explained_by_mean_grey']:.1f} % of the mean label's "
            f"variance and crosses zero at mean grey {crossing}"
        )
        print(
            shown(
                "  that fit flags of well_exposed's photos: "
                + ", ".join(f"{key} {pct:.1f} %" for key, pct in r["well_exposed_flagged_pct"].items())
            )
        )
    if args.json:
        with atomic_write(args.json) as tmp:
            Path(tmp).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
