"""Score predicted residual maps against the labels of a dataset in the IEA40K layout.

    python evaluate.py --data-root data/synthetic --csv valid.csv --checkpoint checkpoints/pieanet_synth.safetensors
    python evaluate.py --data-root data/synthetic --csv valid.csv --baseline mertens --json mertens.json
    python evaluate.py --data-root data/synthetic --csv valid.csv --compare checkpoints/pieanet_synth.safetensors \\
        ../shared/official/wavelet_epoch_2_val_loss0.03022034629540784.pth --baselines all --markdown results.md

Layout: <data-root>/<csv> with columns img_id (and optionally score, level), images at <images-dir>/<img_id>, labels at
<labels-dir>/<img_id stem>.npy in grey levels (divided by --label-scale). Predictions are made at the image's
resolution (or with --size / --tile, see utils/inference.py) and resized to the label's resolution before scoring.
Metric conventions: utils/metrics.py. A sample whose image or label cannot be read is named on stderr and skipped.
"""
import argparse
import csv
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from models import CheckpointError, load_model, resolve_device
from utils.baselines import BASELINES, build_baseline
from utils.image_io import ImageLoadError, atomic_write, load_image
from utils.inference import predict_residual
from utils.metrics import METRICS, SSIM_CONVENTION, MetricAccumulator

LEVEL_IN_NAME = re.compile(r"_([NP]\d)(?=\.[^.]+$|$)")
TABLE_COLUMNS = {"mae": "MAE", "rmse": "RMSE", "psnr": "PSNR", "ssim": "SSIM", "iou_over": "IoU over",
                 "iou_under": "IoU under", "f1_over": "F1 over", "f1_under": "F1 under", "srcc": "SRCC", "plcc": "PLCC"}


class SampleError(ValueError):
    """A sample (image or label) that cannot be scored; the message names the file."""


def read_rows(csv_path):
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "img_id" not in reader.fieldnames:
            raise SystemExit(f"error: {csv_path}: expected a CSV with an img_id column, got columns "
                             f"{reader.fieldnames}")
        return list(reader)


def sample_level(row):
    if row.get("level"):
        return row["level"]
    match = LEVEL_IN_NAME.search(row["img_id"])
    return match.group(1) if match else None


def sample_score(row):
    try:
        return float(row["score"])
    except (KeyError, TypeError, ValueError):
        return None


def load_label(path, label_scale):
    if not path.is_file():
        raise SampleError(f"{path}: label not found; expected a .npy residual map")
    try:
        label = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise SampleError(f"{path}: unreadable label ({str(e).splitlines()[0][:120]}); expected a .npy array") from None
    label = np.squeeze(label)
    if label.ndim != 2 or min(label.shape) < 3 or not np.issubdtype(label.dtype, np.number):
        raise SampleError(f"{path}: label of shape {label.shape} and type {label.dtype}; expected a numeric "
                          "H x W map (at least 3 x 3)")
    label = label.astype(np.float32) / label_scale
    if not np.all(np.isfinite(label)):
        raise SampleError(f"{path}: label contains NaN or infinity")
    return label


def resize_map(residual, shape):
    if residual.shape == tuple(shape):
        return residual
    t = torch.from_numpy(residual)[None, None]
    antialias = shape[0] < residual.shape[0] or shape[1] < residual.shape[1]
    return F.interpolate(t, size=tuple(shape), mode="bilinear", align_corners=False, antialias=antialias)[0, 0].numpy()


def method_name(path, model):
    return "P-IEANet, released weights" if model.config.get("name") == "official" else Path(path).stem


def load_methods(args, device):
    methods = []
    for path in args.checkpoint or []:
        try:
            model = load_model(path, device=device)
        except CheckpointError as e:
            raise SystemExit(f"error: {e}") from None
        methods.append((method_name(path, model), model))
    names = args.baseline or []
    if "all" in names:
        names = list(BASELINES)
    for name in names:
        if name not in BASELINES:
            raise SystemExit(f"error: unknown baseline {name!r}; expected one of: all, {', '.join(BASELINES)}")
        methods.append((f"baseline: {name}", build_baseline(name).to(device)))
    if not methods:
        raise SystemExit("error: nothing to evaluate; give --checkpoint PATH [PATH ...] and/or --baseline NAME")
    return methods


def evaluate(methods, rows, args):
    """{method: metrics dict}, and the names of the samples that failed."""
    root = Path(args.data_root)
    overall = {name: MetricAccumulator(args.threshold) for name, _ in methods}
    per_level = {name: {} for name, _ in methods}
    failed = []
    for row in tqdm(rows, desc="evaluating", unit="img", file=sys.stderr):
        image_path = root / args.images_dir / row["img_id"]
        label_path = root / args.labels_dir / (Path(row["img_id"]).stem + ".npy")
        try:
            image = load_image(image_path)
            label = load_label(label_path, args.label_scale)
        except (ImageLoadError, SampleError) as e:
            tqdm.write(f"skipped: {e}", file=sys.stderr)
            failed.append(row["img_id"])
            continue
        level, score = sample_level(row), sample_score(row)
        for name, model in methods:
            residual = resize_map(predict_residual(model, image, size=args.size, tile=args.tile,
                                                   overlap=args.overlap), label.shape)
            overall[name].add(residual, label, score)
            if level is not None:
                per_level[name].setdefault(level, MetricAccumulator(args.threshold)).add(residual, label, score)
    results = {}
    for name, _ in methods:
        result = overall[name].result()
        result["per_level"] = {level: acc.result() for level, acc in sorted(per_level[name].items())}
        result["n_failed"] = len(failed)
        result["failed"] = failed
        result["ssim_convention"] = SSIM_CONVENTION
        results[name] = result
    return results


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
    return "".join("| " + " | ".join([name, str(r["n_images"])] + [format_value(r[c]) for c in TABLE_COLUMNS]) + " |\n"
                   for name, r in results.items())


def append_markdown(path, results, caption):
    """Append rows to a markdown table, starting the table (caption + header) when the file does not have one."""
    path = Path(path)
    existing = path.read_text() if path.is_file() else ""
    header = table_header()
    text = existing
    if header not in existing:
        text += ("\n" if existing and not existing.endswith("\n\n") else "") + caption + "\n\n" + header
    text += table_rows(results)
    with atomic_write(path) as tmp:
        Path(tmp).write_text(text)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", required=True, help="dataset folder")
    p.add_argument("--csv", required=True, help="split list, relative to --data-root or a path")
    p.add_argument("--images-dir", default="images")
    p.add_argument("--labels-dir", default="labels")
    p.add_argument("--label-scale", type=float, default=255.0, help="labels are divided by this (grey levels: 255)")
    p.add_argument("--checkpoint", "--compare", nargs="+", metavar="PATH",
                   help="project checkpoint(s) (.safetensors) and/or the released P-IEANet .pth")
    p.add_argument("--baseline", "--baselines", nargs="+", metavar="NAME",
                   help=f"classical baseline(s): all, {', '.join(BASELINES)}")
    p.add_argument("--size", type=int, help="working resolution (longer side), guided upsampling to full size")
    p.add_argument("--tile", type=int, help="native-resolution tiles of this size")
    p.add_argument("--overlap", type=int, help="tile margin in pixels (default: the model's receptive radius)")
    p.add_argument("--threshold", type=float, default=0.1, help="|r| above which a pixel is over/under-exposed")
    p.add_argument("--limit", type=int, help="only the first N rows of the CSV")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", help="write the metrics as JSON here")
    p.add_argument("--markdown", help="append one table row per method to this markdown file")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    csv_path = Path(args.csv) if Path(args.csv).is_file() else Path(args.data_root) / args.csv
    if not csv_path.is_file():
        raise SystemExit(f"error: {args.csv}: CSV not found (looked at {csv_path}); expected a split list")
    rows = read_rows(csv_path)[:args.limit]
    methods = load_methods(args, resolve_device(args.device))
    results = evaluate(methods, rows, args)
    if all(r["n_images"] == 0 for r in results.values()):
        raise SystemExit(f"error: none of the {len(rows)} samples in {csv_path} could be read")
    print(table_header() + table_rows(results), end="")
    print(f"SSIM: {SSIM_CONVENTION}")
    failed = next(iter(results.values()))["n_failed"]
    if failed:
        print(f"{failed} of {len(rows)} samples skipped (named on stderr)")
    if args.json:
        payload = next(iter(results.values())) if len(results) == 1 else {"methods": results}
        with atomic_write(args.json) as tmp:
            Path(tmp).write_text(json.dumps(json_safe(payload), indent=2) + "\n")
    if args.markdown:
        options = "".join(f", --{k} {getattr(args, k)}" for k in ("size", "tile") if getattr(args, k))
        append_markdown(args.markdown, results, f"Evaluated on `{csv_path}` ({len(rows)} samples{options}).")


if __name__ == "__main__":
    main()
