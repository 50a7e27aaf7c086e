"""Score predicted residual maps against the labels of a dataset in the IEA40K layout.

    python evaluate.py --data-root data/synthetic --csv valid.csv --checkpoint checkpoints/pieanet_corpus.safetensors
    python evaluate.py --data-root data/synthetic --csv valid.csv --baseline mertens --json mertens.json
    python evaluate.py --data-root data/synthetic --csv valid.csv --compare checkpoints/pieanet_corpus.safetensors \\
        ../shared/official/wavelet_epoch_2_val_loss0.03022034629540784.pth --baselines all --markdown results.md

Layout: <data-root>/<csv> with columns img_id (and optionally score, level), images at <images-dir>/<img_id>, labels at
<labels-dir>/<img_id stem>.npy in grey levels (divided by --label-scale). Predictions are made at the image's
resolution (or with --size / --tile, see utils/inference.py) and resized to the label's resolution before scoring.
Metric conventions: utils/metrics.py. Labels are read by datasets.iea40k.read_label, the reader training uses.
A sample whose image or label cannot be read or predicted is named on stderr and skipped (exit 1); a bad option, CSV or
checkpoint is exit 2 before any work (exit codes: utils/cli.py). The JSON has the same layout for any number of
methods: {"methods": {name: metrics}, "n_samples", "n_failed", "failed", "ssim_convention"}.
Several processes: torchrun --nproc-per-node N evaluate.py ... measures every N-th sample per process (each on its own
GPU with CUDA); rank 0 adds them up in CSV order, so it prints and writes exactly the numbers of one process.
"""
if __name__ == "__main__":  # first, before the slow imports: Ctrl-C while they run is exit 130, one line
    from pieanet.utils.startup import quiet_interrupts
    quiet_interrupts("evaluate")
import argparse
import json
import math
import re
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from pieanet.datasets.iea40k import DatasetError, read_label, read_split
from pieanet.utils import cli, distributed
from pieanet.models.baselines import BASELINES, build_baseline
from pieanet.utils.image_io import atomic_write
from pieanet.utils.safety import md_cell
from pieanet.utils.metrics import METRICS, SSIM_CONVENTION, MetricAccumulator, measure

PROG = "evaluate"
LEVEL_IN_NAME = re.compile(r"_([NP]\d)(?=\.[^.]+$|$)")
TABLE_COLUMNS = {"mae": "MAE", "rmse": "RMSE", "psnr": "PSNR", "ssim": "SSIM", "iou_over": "IoU over",
                 "iou_under": "IoU under", "f1_over": "F1 over", "f1_under": "F1 under", "srcc": "SRCC", "plcc": "PLCC"}


def sample_level(row):
    if row.level:
        return row.level
    match = LEVEL_IN_NAME.search(row.img_id)
    return match.group(1) if match else None


def sample_score(row):
    return row.score if math.isfinite(row.score) else None


def resize_map(residual, shape):
    if residual.shape == tuple(shape):
        return residual
    t = torch.from_numpy(residual)[None, None]
    antialias = shape[0] < residual.shape[0] or shape[1] < residual.shape[1]
    return F.interpolate(t, size=tuple(shape), mode="bilinear", align_corners=False, antialias=antialias)[0, 0].numpy()


def method_name(path, model):
    return "P-IEANet, released weights" if model.config.get("name") == "official" else Path(path).stem


def load_methods(args):
    """[(name, model)] of every --checkpoint and --baseline; raises UsageError."""
    methods = [(method_name(path, model), model) for path, model in
               ((path, cli.open_model(path, args)) for path in args.checkpoint or [])]
    seen = {}
    for i, (name, model) in enumerate(methods):  # two runs' best.safetensors must not merge into one row
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            methods[i] = (f"{name} #{seen[name]}", model)
    names = args.baseline or []
    if "all" in names:
        names = list(BASELINES)
    for name in names:
        if name not in BASELINES:
            raise cli.UsageError(f"unknown baseline {name!r}; expected one of: all, {', '.join(BASELINES)}")
        methods.append((f"baseline: {name}", build_baseline(name).to(cli.resolve_device(args.device))))
    if not methods:
        raise cli.UsageError("nothing to evaluate; give --checkpoint PATH [PATH ...] and/or --baseline NAME")
    return methods


def evaluate(methods, rows, args, progress=None, group=distributed.Group()):
    """({method: metrics dict}, img_ids of the samples that failed); each failure is named in one line through
    ``progress`` (a cli.Progress). With several processes (``group``), each measures its shard of the rows and every
    process gets the results of all of them, added up in row order: the numbers one process gives."""
    root = Path(args.data_root)
    progress = progress or cli.Progress(PROG, len(group.shard(rows)))
    measured = []  # (row index, {method: metrics.measure result}, or None for a sample that failed)
    for index in group.shard(range(len(rows))):
        row = rows[index]
        try:
            maps, label = predict_sample(methods, root, row, args)
        except ValueError as e:  # ImageLoadError and DatasetError are ValueErrors; the message names the file
            progress.report(f"skipped {row.img_id}: {cli.one_line(e)}")
            measured.append((index, None))
        else:
            score = sample_score(row)
            measured.append((index, {name: measure(residual, label, args.threshold, score)
                                     for name, residual in maps.items()}))
        progress.update()
    overall = {name: MetricAccumulator(args.threshold) for name, _ in methods}
    per_level = {name: {} for name, _ in methods}
    failed = []
    for index, found in sorted(item for shard in group.gather(measured) for item in shard):
        if found is None:
            failed.append(rows[index].img_id)
            continue
        level = sample_level(rows[index])
        for name, one in found.items():
            overall[name].add_measured(one)
            if level is not None:
                per_level[name].setdefault(level, MetricAccumulator(args.threshold)).add_measured(one)
    results = {}
    for name, _ in methods:
        result = overall[name].result()
        result["per_level"] = {level: acc.result() for level, acc in sorted(per_level[name].items())}
        results[name] = result
    return results, failed


def predict_sample(methods, root, row, args):
    """({method: map resized to the label}, label) of one CSV row; raises ValueError naming the file."""
    image_path = root / args.images_dir / row.img_id
    try:
        image = cli.read_image(image_path)
    except ValueError as e:
        raise ValueError(f"{image_path}: {e}") from None
    label = read_label(root / args.labels_dir / (Path(row.img_id).stem + ".npy"), args.label_scale)
    maps = {}
    for name, model in methods:
        residual, = cli.predict(model, [image], size=args.size, tile=args.tile)
        if isinstance(residual, BaseException):
            raise ValueError(f"{image_path}: {name}: inference failed ({cli.one_line(residual)})")
        maps[name] = resize_map(residual, label.shape)
    return maps, label


def json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def format_value(value):
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


def table_header():
    arrow = {"lower": "↓", "higher": "↑"}
    cells = ["Method", "n"] + [f"{label} {arrow[METRICS[name][0]]}" for name, label in TABLE_COLUMNS.items()]
    return "| " + " | ".join(cells) + " |\n" + "|" + "---|" * len(cells) + "\n"


def table_rows(results):
    return "".join("| " + " | ".join([md_cell(name), str(r["n_images"])] + [format_value(r[c]) for c in TABLE_COLUMNS])
                   + " |\n"
                   for name, r in results.items())


def append_markdown(path, results, caption):
    """Append rows to a markdown table, starting the table (caption + header) when the file does not have one."""
    path = Path(path)
    existing = path.read_text(encoding="utf-8", errors="surrogateescape") if path.is_file() else ""
    header = table_header()
    text = existing
    if header not in existing:
        text += ("\n" if existing and not existing.endswith("\n\n") else "") + caption + "\n\n" + header
    text += table_rows(results)
    with atomic_write(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8", errors="surrogateescape")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, required=True, help="dataset folder (required)")
    p.add_argument("--csv", required=True, help="split list, a path or relative to --data-root (required)")
    p.add_argument("--images-dir", default="images", help="photos under --data-root (default: images)")
    p.add_argument("--labels-dir", default="labels", help="labels under --data-root (default: labels)")
    p.add_argument("--label-scale", type=cli.positive_float, default=255.0,
                   help="labels are divided by this (default: 255, grey levels)")
    p.add_argument("--baseline", "--baselines", nargs="+", metavar="NAME",
                   help=f"classical baseline(s): all, {', '.join(BASELINES)} (default: none)")
    p.add_argument("--limit", type=cli.positive_int, help="only the first N rows of the CSV (default: all)")
    p.add_argument("--json", type=Path, help="write the metrics as JSON here (default: not written)")
    p.add_argument("--markdown", type=Path, help="append one table row per method to this markdown file "
                                                 "(default: not written)")
    cli.add_common_options(p, checkpoints="many")
    return p.parse_args(argv)


def run(argv=None):
    args = parse_args(argv)
    cli.setup(args)
    csv_path = Path(args.csv) if Path(args.csv).is_file() else args.data_root / args.csv
    try:
        rows = read_split(csv_path, required=("img_id",))[:args.limit]
    except DatasetError as e:
        raise cli.UsageError(str(e)) from None
    with distributed.process_group(cli.resolve_device(args.device)) as group:
        args.device = str(group.device)  # under torchrun with CUDA: this process's own GPU
        methods = load_methods(args)
        for path in (args.json, args.markdown):
            if path is not None:
                cli.writable_folder(path.parent, "folder of " + path.name)
        with cli.Progress(PROG, len(group.shard(rows)), show=group.is_main) as progress:
            results, failed = evaluate(methods, rows, args, progress, group)
    if not group.is_main:
        return cli.EXIT_OK  # rank 0 reports for every process
    print(table_header() + table_rows(results), end="")
    print(f"SSIM: {SSIM_CONVENTION}")
    if failed:
        print(f"{len(failed)} of {len(rows)} samples skipped (named on stderr)")
    if args.json:
        payload = {"methods": results, "n_samples": len(rows), "n_failed": len(failed), "failed": failed,
                   "ssim_convention": SSIM_CONVENTION}
        with atomic_write(args.json) as tmp:
            Path(tmp).write_text(json.dumps(json_safe(payload), indent=2) + "\n")
    if args.markdown:
        options = "".join(f", --{k} {getattr(args, k)}" for k in ("size", "tile") if getattr(args, k))
        append_markdown(args.markdown, results, f"Evaluated on `{csv_path}` ({len(rows)} samples{options}).")
    return cli.EXIT_FAILED if failed else cli.EXIT_OK


def main(argv=None):
    return cli.run(PROG, run, argv)


if __name__ == "__main__":
    sys.exit(main())
