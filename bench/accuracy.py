"""Accuracy of checkpoints and baselines on the four development sets, in one table.

    python bench/accuracy.py checkpoints/pieanet_corpus.safetensors \\
        ../shared/official/wavelet_epoch_2_val_loss0.03022034629540784.pth --baselines global_midgray local_midgray \\
        [--size N] [--markdown results.md] [--json results.json]

* real_brackets (real.csv, real_over.csv, real_under.csv; the ideal is a bracket frame picked by a mid-grey rule),
  human_ref (human_ref.csv, human_ref_over.csv, human_ref_under.csv; the ideal is the fusion people rated best) and
  expert_retouch (expert_retouch.csv; a camera's rendering against an expert's finish of the same raw, FiveK expert
  C): MAE / SSIM / SRCC as evaluate.py measures them (utils/metrics.py conventions). Each photo is predicted once;
  the over / under lists are subsets of the main list.
* well_exposed: the percentage of photos flagged (not judged well exposed), overall and per key, as
  evaluate.py --well-exposed counts it (utils/well_exposed.py).
* physics, on the labelled sets (their main lists): the percentage of clipped pixels (a channel >= 250) the map
  says need more light (r > +0.05), and of crushed pixels (every channel <= 5) it says need less (r < -0.05), pooled;
  and the worst photo's share of pixels outside the definition's bounds [-grey, 1 - grey] and of white pixels
  (grey >= 254) told to brighten (r > +0.05), as a pooled share hides one photo that fails
  (utils.metrics.photo_numbers).
* in a photographer's words, on the labelled sets' main lists: the median error of the correction in stops (the
  map's correction_stops against the label's), and the percentage of photos whose verdict (under / ok / over at
  +/- 1/3 stop) differs from the label's; on well_exposed, the mean correction the photos are asked for (about 0 for
  a model that follows the photos' own exposure).
--plain writes the README's results sentences from these figures (one command regenerates them).
Every method runs on the tools' default path (its working size, guided upsampling; --size to change it), with
evaluate.py's own functions (pieanet.evaluation). Checkpoints: project .safetensors, .onnx (onnxruntime) or the
released .pth.
Data roots default to ../shared/<set> beside the checkout. Exit codes as evaluate.py (1: some photos failed, each named
on stderr; 2: a bad option, a missing data set or checkpoint, before any work).
"""

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pieanet import evaluation, runtime  # noqa: E402
from pieanet.datasets.iea40k import read_split  # noqa: E402
from pieanet.models.baselines import BASELINES  # noqa: E402
from pieanet.utils import cli, metrics, well_exposed  # noqa: E402
from pieanet.utils.image_io import atomic_write  # noqa: E402

PROG = "accuracy"
SHARED = ROOT.parent / "shared"
LABELLED = {
    "real_brackets": ("real.csv", "real_over.csv", "real_under.csv"),
    "human_ref": ("human_ref.csv", "human_ref_over.csv", "human_ref_under.csv"),
    "expert_retouch": ("expert_retouch.csv",),
}
SHORT = {"real_brackets": "real", "human_ref": "human", "expert_retouch": "expert"}  # the physics columns' parts
CELL = "MAE / SSIM / SRCC"


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "checkpoint",
        type=Path,
        nargs="*",
        metavar="CHECKPOINT",
        help="project checkpoint(s) (.safetensors / .onnx), training state(s) or the released P-IEANet .pth",
    )
    p.add_argument(
        "--baseline",
        "--baselines",
        nargs="+",
        metavar="NAME",
        help=f"classical baseline(s): all, {', '.join(BASELINES)} (default: none)",
    )
    for name in (*LABELLED, "well_exposed"):
        p.add_argument(
            f"--{name.replace('_', '-')}",
            type=Path,
            default=SHARED / name,
            metavar="DIR",
            help=f"the {name} development set (default: ../shared/{name} beside the checkout)",
        )
    p.add_argument(
        "--share-limit",
        type=cli.percent,
        default=well_exposed.DEFAULT_SHARE_LIMIT,
        metavar="PCT",
        help=f"well_exposed: flagged above PCT %% of pixels with |r| > --threshold "
        f"(default: {well_exposed.DEFAULT_SHARE_LIMIT:g})",
    )
    p.add_argument(
        "--mean-limit",
        type=cli.threshold,
        default=well_exposed.DEFAULT_MEAN_LIMIT,
        metavar="M",
        help=f"well_exposed: also flagged when |mean r| > M (default: {well_exposed.DEFAULT_MEAN_LIMIT:g})",
    )
    p.add_argument(
        "--markdown", type=Path, help="write the table (and its caption) to this file (default: not written)"
    )
    p.add_argument("--json", type=Path, help="write every number as JSON here (default: not written)")
    p.add_argument(
        "--plain",
        type=Path,
        metavar="FILE",
        help="write the first checkpoint's figures in plain words here (checkpoints/trust.txt is the "
        "shipped checkpoint's: the table footer of make_heatmap and the top of index.html show it; "
        "default: not written)",
    )
    cli.add_common_options(p, checkpoints=None)
    return p.parse_args(argv)


def check_data(args):
    """Every data root and list exists; raises UsageError naming the first that does not."""
    for name in (*LABELLED, "well_exposed"):
        root = getattr(args, name)
        if not root.is_dir():
            raise cli.UsageError(
                f"{root}: the {name} development set is not there; give --{name.replace('_', '-')} DIR"
            )
    for name, lists in LABELLED.items():
        for csv_name in lists:
            if not (getattr(args, name) / csv_name).is_file():
                raise cli.UsageError(
                    f"{getattr(args, name) / csv_name}: not found; expected the {name} set's {csv_name}"
                )


def criterion(args):
    """The well-exposed verdict's criterion of the command line."""
    return evaluation.Criterion(args.threshold, args.share_limit, args.mean_limit)


def measure_labelled(methods, name, root, args):
    """({csv name: {method: metrics}}, failed img_ids): every photo of the set's lists predicted once."""
    lists = {}
    for csv_name in LABELLED[name]:  # a DatasetError: exit code 2
        lists[csv_name] = read_split(root / csv_name, required=("img_id",))
    rows, seen = [], set()
    for csv_rows in lists.values():
        for row in csv_rows:
            if row.img_id not in seen:
                seen.add(row.img_id)
                rows.append(row)
    with cli.Progress(f"{PROG} {name}", len(rows)) as progress:
        measured = evaluation.measure_rows(
            methods, rows, evaluation.LabelledData(root), args.threshold, args.size, args.tile, progress
        )
    results, failed = {}, set()
    for csv_name, csv_rows in lists.items():
        keep = {row.img_id for row in csv_rows}
        results[csv_name], missed = evaluation.accumulate(methods, rows, measured, args.threshold, keep=keep)
        for method, _ in methods:
            results[csv_name][method].update(
                per_photo(
                    [
                        found[method]["photo"]
                        for row, found in zip(rows, measured)
                        if found is not None and row.img_id in keep
                    ]
                )
            )
        failed.update(missed)
    return results, sorted(failed)


def per_photo(numbers):
    """The worst photo's shares and the stops figures of [utils.metrics.photo_numbers] (one list's photos)."""

    def worst(key):
        values = [n[key] for n in numbers if math.isfinite(n[key])]
        return max(values) if values else float("nan")

    pairs = [
        (n["stops"], n["label_stops"]) for n in numbers if math.isfinite(n["stops"]) and math.isfinite(n["label_stops"])
    ]
    return {
        "worst_out_of_bounds_pct": worst("out_of_bounds_pct"),
        "worst_white_brightened_pct": worst("white_brightened_pct"),
        "median_stops_error": float(statistics.median(abs(p - t) for p, t in pairs)) if pairs else float("nan"),
        "verdict_wrong_pct": (
            100.0 * sum(metrics.verdict(p) != metrics.verdict(t) for p, t in pairs) / len(pairs)
            if pairs
            else float("nan")
        ),
        "mean_label_stops": float(statistics.fmean(t for _, t in pairs)) if pairs else float("nan"),
        "mean_stops": float(statistics.fmean(p for p, _ in pairs)) if pairs else float("nan"),
    }


def measure_well_exposed(methods, root, args):
    photos, missing = well_exposed.list_photos(root)  # a FolderError: exit code 2
    with cli.Progress(f"{PROG} well_exposed", len(photos)) as progress:
        judged = evaluation.judge_photos(methods, photos, criterion(args), args.size, args.tile, progress)
    results, _, failed = evaluation.summarise_photos(methods, photos, judged)
    for name in missing:
        print(f"{PROG}: {root / well_exposed.MANIFEST}: lists {name}, which is not found", file=sys.stderr)
    return results, failed + missing


def number(value, digits):
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def plain_words(found):
    """One method's figures (``results[method]``) as the sentences a user reads (README, make_heatmap's table footer,
    index.html): which definition it follows and how far to trust it."""
    fa = found["well_exposed"]
    real, human, expert = (found[name][lists[0]] for name, lists in LABELLED.items())
    return (
        f"This model reads bracket frames as the released P-IEANet does (it learned from the released network's maps "
        f"of simulated brackets) and finished photos as their own ideal only as far as it has learned to: on "
        f"{fa['n_images']} finished, published photos it asks for {signed(fa.get('mean_stops'))} stops on average "
        f"and calls {number(fa.get('not_ok_pct'), 0)} % of them under- or over-exposed (more than 1/3 stop off). On "
        f"camera bracket frames its verdict (under / ok / over at 1/3 stop) is wrong for "
        f"{number(real['verdict_wrong_pct'], 0)} % of photos (median error {number(real['median_stops_error'], 2)} "
        f"stops), against the fusions people rated best for {number(human['verdict_wrong_pct'], 0)} % "
        f"({number(human['median_stops_error'], 2)} stops), against an expert's finish of camera renders for "
        f"{number(expert['verdict_wrong_pct'], 0)} % ({number(expert['median_stops_error'], 2)} stops): trust its "
        "maps for which regions of a bracket frame or a camera render need light or less, not as a final verdict on "
        "finished photos."
    )


def signed(value, digits=2):
    return "n/a" if value is None or not math.isfinite(value) else f"{value:+.{digits}f}"


def table(results):
    """The markdown table: one row per method."""
    header = ["Method"]
    for name, lists in LABELLED.items():
        header += [f"{Path(csv_name).stem} {CELL}" for csv_name in lists]
    parts = " / ".join(SHORT[name] for name in LABELLED)
    header += [
        "well_exposed flagged ↓ (per key)",
        f"clipped → more light ↓ ({parts})",
        f"crushed → less light ↓ ({parts})",
        f"worst photo: out of bounds / white → more light ↓ ({parts})",
        f"median error, stops ↓ ({parts})",
        f"verdict wrong ↓ ({parts})",
        "well_exposed asked for, stops (mean)",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, found in results.items():
        cells = [method]
        for name, lists in LABELLED.items():
            for csv_name in lists:
                m = found[name][csv_name]
                cells.append(f"{number(m['mae'], 4)} / {number(m['ssim'], 3)} / {number(m['srcc'], 3)}")
        fa = found["well_exposed"]
        keys = ", ".join(f"{key} {evaluation.format_pct(one['false_alarm_pct'])}" for key, one in fa["per_key"].items())
        cells.append(evaluation.format_pct(fa["false_alarm_pct"]) + (f" ({keys})" if keys else ""))
        for metric in ("clipped_needs_light", "crushed_needs_dark"):
            cells.append(
                " / ".join(evaluation.format_pct(found[name][lists[0]][metric]) for name, lists in LABELLED.items())
            )
        main = [found[name][lists[0]] for name, lists in LABELLED.items()]
        cells.append(
            " ; ".join(
                f"{evaluation.format_pct(m['worst_out_of_bounds_pct'])} / "
                f"{evaluation.format_pct(m['worst_white_brightened_pct'])}"
                for m in main
            )
        )
        cells.append(" / ".join(number(m["median_stops_error"], 2) for m in main))
        cells.append(" / ".join(evaluation.format_pct(m["verdict_wrong_pct"]) for m in main))
        cells.append(signed(fa.get("mean_stops")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run(argv=None):
    args = parse_args(argv)
    runtime.setup(args)
    check_data(args)
    args.device = str(runtime.resolve_device(args.device))
    methods = evaluation.load_methods(args)
    for path in (args.json, args.markdown, args.plain):
        if path is not None:
            cli.writable_folder(path.parent, "folder of " + path.name)
    started = time.perf_counter()
    results = {name: {} for name, _ in methods}
    failed = {}
    for name in LABELLED:
        per_list, failed[name] = measure_labelled(methods, name, getattr(args, name), args)
        for method, _ in methods:
            results[method][name] = {csv_name: per_list[csv_name][method] for csv_name in LABELLED[name]}
    per_method, failed["well_exposed"] = measure_well_exposed(methods, args.well_exposed, args)
    for method, _ in methods:
        results[method]["well_exposed"] = per_method[method]
    elapsed = time.perf_counter() - started
    text = table(results)
    size = "the model's working size" if args.size is None else ("native" if args.size == 0 else f"--size {args.size}")
    caption = (
        f"Development sets ({size}, one run, {elapsed:.0f} s): {CELL} per list (SSIM: "
        f"{evaluation.SSIM_CONVENTION}); well_exposed: {criterion(args).describe()}; physics: percent of "
        "clipped pixels (a channel >= 250) with r > +0.05, of crushed pixels (all channels <= 5) with "
        "r < -0.05."
    )
    print(text, end="")
    print(caption)
    n_failed = sum(len(v) for v in failed.values())
    if n_failed:
        print(f"{n_failed} photos skipped (named on stderr)")
    if args.markdown:
        with atomic_write(args.markdown) as tmp:
            Path(tmp).write_text(caption + "\n\n" + text)
    if args.plain:
        with atomic_write(args.plain) as tmp:
            Path(tmp).write_text(plain_words(results[methods[0][0]]) + "\n", encoding="utf-8")
    if args.json:
        evaluation.write_json(
            args.json,
            {
                "methods": results,
                "failed": failed,
                "criterion": criterion(args).as_dict(),
                "size": args.size,
                "seconds": elapsed,
                "ssim_convention": evaluation.SSIM_CONVENTION,
            },
        )
    return cli.EXIT_FAILED if n_failed else cli.EXIT_OK


def main(argv=None):
    return cli.run(PROG, run, argv)


if __name__ == "__main__":
    sys.exit(main())
