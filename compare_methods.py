"""Compare enhancement methods by the exposure of their outputs, without ground truth.

    python compare_methods.py --inputs out/retinex out/zero_dce out/ours --names Retinex Zero-DCE ours \
        [--reference gt/] [--checkpoint PATH] [--output outputs/compare] [--threshold 0.1] [--max-rows 4]

Each folder holds one method's results under the same file names; names missing from some folders are reported and
the common set is compared. Per method, averaged over images: mean |r|, mean r (> 0 leans under-exposed, < 0 over),
% over- and under-exposed pixels, the holistic score 10 * (1 - mean|r|), and the rank by mean |r| (1 = best exposed).
With --reference (ground-truth images, same names): PSNR and SSIM (pytorch-msssim, RGB, data range 1) per method and
whether the no-reference ranking agrees with the full-reference one (Spearman's rho between the rankings).
Writes comparison.md, comparison.csv and comparison.png (photo above heatmap, one column per method) to --output.
"""
import argparse
import csv
import math
import sys
from pathlib import Path

import numpy as np
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from pytorch_msssim import ssim
from scipy.stats import rankdata, spearmanr

from models import DEFAULT_CHECKPOINT, open_model
from utils.exposure import DEFAULT_THRESHOLD, residual_stats
from utils.heatmap import CMAP, colorize
from utils.image_io import ImageLoadError, atomic_write, list_images, load_image
from utils.inference import predict_residual

FIGURE_SIDE = 256  # longer side of each figure panel in pixels
COLUMNS = [("mean_abs_residual", r"mean \|r\|"), ("mean_residual", "mean r"), ("pct_over", "% over"),
           ("pct_under", "% under"), ("score", "score"), ("rank", "rank")]
REFERENCE_COLUMNS = [("psnr", "PSNR (dB)"), ("ssim", "SSIM"), ("reference_rank", "rank by PSNR")]


def common_names(folders):
    """(sorted file names present in every folder, {method: names missing from its folder})."""
    listed = {method: {p.name for p in list_images(folder)} for method, folder in folders.items()}
    everywhere = set.intersection(*listed.values())
    union = set.union(*listed.values())
    return sorted(everywhere), {m: sorted(union - names) for m, names in listed.items() if union - names}


def psnr(image, reference):
    mse = float(np.mean((image.astype(np.float64) - reference) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def rgb_ssim(image, reference):
    to_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float()
    return float(ssim(to_tensor(image), to_tensor(reference), data_range=1.0))


def thumbnail(array, side=FIGURE_SIDE):
    step = max(1, math.ceil(max(array.shape[:2]) / side))
    return array[::step, ::step]


def compare(model, folders, reference=None, threshold=DEFAULT_THRESHOLD, max_rows=4, size=None, tile=None,
            report=lambda message: print(message, file=sys.stderr)):
    """Score each method's outputs with ``model`` (anything ``predict_residual`` runs).

    folders: {method name: folder}. Returns a dict: ``methods`` (a row of averaged numbers per method, ranked),
    ``names`` (the images compared), ``missing`` and ``failed`` (what was left out and why), ``panels`` (photo and
    residual thumbnails of the first ``max_rows`` images for the figure) and, with a reference folder, ``agreement``.
    Unreadable images are reported through ``report`` and leave their name out for every method.
    """
    names, missing = common_names(folders)
    for method, left_out in missing.items():
        report(f"compare_methods: {len(left_out)} image(s) missing from {method} ({folders[method]}): "
               f"{', '.join(left_out[:5])}{' ...' if len(left_out) > 5 else ''}; comparing the common set")
    per_image = {method: [] for method in folders}
    panels, compared, failed = [], [], []
    for name in names:
        try:
            photos = {method: load_image(Path(folder) / name) for method, folder in folders.items()}
            truth = load_image(Path(reference) / name) if reference is not None else None
        except (ImageLoadError, FileNotFoundError) as e:
            report(f"compare_methods: {e}; {name} left out for every method")
            failed.append(name)
            continue
        if truth is not None and any(p.shape != truth.shape for p in photos.values()):
            report(f"compare_methods: {name}: size differs from the reference {truth.shape[1]}x{truth.shape[0]}; "
                   "left out for every method")
            failed.append(name)
            continue
        row = []
        for method, photo in photos.items():
            residual = predict_residual(model, photo, size=size, tile=tile)
            stats = residual_stats(residual, threshold)
            if truth is not None:
                stats.update(psnr=psnr(photo, truth), ssim=rgb_ssim(photo, truth))
            per_image[method].append(stats)
            row.append((thumbnail(photo), thumbnail(residual)))
        if len(panels) < max_rows:
            panels.append((name, row))
        compared.append(name)

    methods = []
    for method in folders:
        images = per_image[method]
        keys = images[0].keys() if images else [k for k, _ in COLUMNS[:-1]]
        methods.append({"method": method, "n_images": len(images),
                        **{k: float(np.mean([s[k] for s in images])) if images else math.nan for k in keys}})
    for row, rank in zip(methods, rankdata([m["mean_abs_residual"] for m in methods], method="min")):
        row["rank"] = int(rank)
    result = {"methods": methods, "names": compared, "missing": missing, "failed": failed, "panels": panels}
    if reference is not None and compared:
        for row, rank in zip(methods, rankdata([-m["psnr"] for m in methods], method="min")):
            row["reference_rank"] = int(rank)
        ranks = ([m["rank"] for m in methods], [m["reference_rank"] for m in methods])
        varied = len(methods) > 1 and min(len(set(r)) for r in ranks) > 1  # Spearman is undefined for ties only
        rho = spearmanr(*ranks).statistic if varied else math.nan
        result["agreement"] = {"spearman": float(rho), "same_order": ranks[0] == ranks[1]}
    return result


def format_cell(key, value):
    if isinstance(value, int):
        return str(value)
    if key in ("pct_over", "pct_under", "psnr"):
        return f"{value:.2f}"
    if key == "score":
        return f"{value:.3f}"
    return f"{value:.4f}"


def write_tables(result, output, threshold):
    columns = COLUMNS + (REFERENCE_COLUMNS if "agreement" in result else [])
    with atomic_write(output / "comparison.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "n_images"] + [key for key, _ in columns])
        for m in result["methods"]:
            writer.writerow([m["method"], m["n_images"]] + [m[key] for key, _ in columns])
    lines = [f"| method | images | {' | '.join(title for _, title in columns)} |",
             "|---" * (len(columns) + 2) + "|"]
    for m in sorted(result["methods"], key=lambda m: m["rank"]):
        cells = [format_cell(key, m[key]) for key, _ in columns]
        lines.append(f"| {m['method']} | {m['n_images']} | {' | '.join(cells)} |")
    lines += ["", f"{len(result['names'])} images compared; |r| > {threshold:g} counts as over-/under-exposed; "
                  "rank by mean |r| (lower is better); mean r > 0 leans under-exposed, < 0 over-exposed."]
    if "agreement" in result:
        a = result["agreement"]
        verdict = "agree" if a["same_order"] else "disagree"
        lines.append(f"Rankings by mean |r| and by PSNR {verdict} (Spearman rho = {a['spearman']:.3f}).")
    with atomic_write(output / "comparison.md") as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")
    return lines


def write_figure(result, path):
    """One row pair per image (photo above its heatmap), one column per method, one colour bar."""
    panels, methods = result["panels"], [m["method"] for m in result["methods"]]
    if not panels:
        return
    aspect = panels[0][1][0][0].shape[0] / panels[0][1][0][0].shape[1]
    fig = Figure(figsize=(2.4 * len(methods) + 1.0, 4.8 * aspect * len(panels) + 0.6), layout="constrained")
    axes = fig.subplots(2 * len(panels), len(methods), squeeze=False)
    for i, (name, row) in enumerate(panels):
        for j, (photo, residual) in enumerate(row):
            axes[2 * i, j].imshow(photo)
            axes[2 * i + 1, j].imshow(colorize(residual))
            if i == 0:
                axes[0, j].set_title(methods[j])
        axes[2 * i, 0].set_ylabel(name, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    # colorize shows r at (1 - r) / 2 of 'bwr', i.e. the reversed colormap over r in [-1, 1]
    bar = fig.colorbar(ScalarMappable(Normalize(-1, 1), CMAP.reversed()), ax=axes, shrink=0.6, ticks=[-1, 0, 1])
    bar.ax.set_yticklabels(["-1 over", "0 ideal", "+1 under"])
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", nargs="+", required=True, help="one folder of results per method")
    parser.add_argument("--names", nargs="+", help="method names (default: the folder names)")
    parser.add_argument("--reference", help="folder of ground-truth images with the same file names")
    parser.add_argument("--checkpoint", help="P-IEANet weights (default checkpoints/pieanet_synth.safetensors)")
    parser.add_argument("--output", default="outputs/compare", help="folder for comparison.md/.csv/.png")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--max-rows", type=int, default=4, help="images shown in the figure")
    parser.add_argument("--size", type=int, help="working resolution (longer side) for large images")
    parser.add_argument("--tile", type=int, help="native-resolution inference in tiles of this size")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    names = args.names or [Path(p).name for p in args.inputs]
    if len(names) != len(args.inputs) or len(set(names)) != len(names):
        parser.error("--names needs one distinct name per --inputs folder (folder names must differ otherwise)")
    for folder in args.inputs + ([args.reference] if args.reference else []):
        if not Path(folder).is_dir():
            print(f"compare_methods: {folder}: no such folder; expected a folder of images", file=sys.stderr)
            return 2
    model = open_model(args.checkpoint or DEFAULT_CHECKPOINT, args.device, prog="compare_methods")
    if model is None:
        return 2
    result = compare(model, dict(zip(names, args.inputs)), args.reference, args.threshold, args.max_rows,
                     args.size, args.tile)
    if not result["names"]:
        print("compare_methods: no image is readable in every folder; nothing to compare", file=sys.stderr)
        return 1
    output = Path(args.output)
    print("\n".join(write_tables(result, output, args.threshold)))
    write_figure(result, output / "comparison.png")
    print(f"wrote {output / 'comparison.md'}, comparison.csv, comparison.png")
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
