"""What compare_methods.py computes: enhancement methods ranked by the exposure of their outputs, without ground truth
(compare), optionally against reference images (PSNR, SSIM, whether the rankings agree), and the tables and figure
it writes. ``run`` is the whole command on compare_methods.py's parsed options.
"""

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

from pieanet import runtime
from pieanet.utils import cli
from pieanet.utils.exposure import DEFAULT_THRESHOLD, residual_stats
from pieanet.utils.heatmap import CMAP, colorize
from pieanet.utils.image_io import atomic_write, list_images
from pieanet.utils.safety import MATPLOTLIB_TEXT, csv_cell, md_cell, printable, shown

PROG = "compare_methods"
SSIM_WINDOW = 11  # pytorch-msssim's default Gaussian window

FIGURE_SIDE = 256  # longer side of each figure panel in pixels
COLUMNS = [
    ("mean_abs_residual", r"mean \|r\|"),
    ("mean_residual", "mean r"),
    ("pct_over", "% over"),
    ("pct_under", "% under"),
    ("score", "score"),
    ("rank", "rank"),
]
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
    """SSIM of two H x W x 3 images in [0, 1]; nan when a side is shorter than the SSIM window."""
    if min(image.shape[:2]) < SSIM_WINDOW:
        return math.nan

    def to_tensor(array):
        return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None].float()

    return float(ssim(to_tensor(image), to_tensor(reference), data_range=1.0))


def thumbnail(array, side=FIGURE_SIDE):
    step = max(1, math.ceil(max(array.shape[:2]) / side))
    return array[::step, ::step]


def compare(
    model,
    folders: dict,
    reference: Path | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    max_rows: int = 4,
    size: int | None = None,
    tile: int | None = cli.DEFAULT_TILE,
    report=lambda message: print(f"{PROG}: {message}", file=sys.stderr),
    progress=None,
) -> dict:
    """Score each method's outputs with ``model`` (anything ``models.inference.predict_batch`` runs), tile by tile.

    folders: {method name: folder}. Returns a dict: ``methods`` (a row of averaged numbers per method, ranked),
    ``names`` (the images compared), ``missing`` and ``failed`` (what was left out and why), ``panels`` (photo and
    residual thumbnails of the first ``max_rows`` images for the figure) and, with a reference folder, ``agreement``.
    An image that cannot be read or predicted for one method is reported through ``report`` (one line naming the
    file) and its name is left out for every method. ``progress`` (a ``cli.Progress``) is advanced per name.
    """
    names, missing = common_names(folders)
    for method, left_out in missing.items():
        report(
            f"{len(left_out)} image(s) missing from {method} ({folders[method]}): "
            f"{', '.join(left_out[:5])}{' ...' if len(left_out) > 5 else ''}; comparing the common set"
        )
    per_image: dict[str, list] = {method: [] for method in folders}
    panels: list = []
    compared: list = []
    failed: list = []
    for name in names:
        try:
            row = compare_one(model, folders, reference, name, threshold, size, tile)
        except (ValueError, RuntimeError, MemoryError) as e:  # ImageLoadError is a ValueError
            report(f"{cli.one_line(e)}; {name} left out for every method")
            failed.append(name)
        else:
            for method, (stats, panel) in row.items():
                per_image[method].append(stats)
            if len(panels) < max_rows:
                panels.append((name, [panel for _, panel in row.values()]))
            compared.append(name)
        if progress is not None:
            progress.update()
    result = {"methods": average(per_image), "names": compared, "missing": missing, "failed": failed, "panels": panels}
    if reference is not None and compared:
        methods = result["methods"]
        for row, rank in zip(methods, rankdata([-m["psnr"] for m in methods], method="min")):
            row["reference_rank"] = int(rank)
        ranks = ([m["rank"] for m in methods], [m["reference_rank"] for m in methods])
        varied = len(methods) > 1 and min(len(set(r)) for r in ranks) > 1  # Spearman is undefined for ties only
        rho = spearmanr(*ranks).statistic if varied else math.nan
        result["agreement"] = {"spearman": float(rho), "same_order": ranks[0] == ranks[1]}
    return result


def compare_one(model, folders, reference, name, threshold, size, tile):
    """{method: (stats, (photo thumbnail, residual thumbnail))} for one image name; raises with the file named."""
    photos = {}
    for method, folder in folders.items():
        path = Path(folder) / name
        try:
            photos[method] = runtime.read_image(path)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e
    truth = None
    if reference is not None:
        path = Path(reference) / name
        try:
            truth = runtime.read_image(path)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e
        if any(p.shape != truth.shape for p in photos.values()):
            raise ValueError(f"{name}: size differs from the reference {truth.shape[1]}x{truth.shape[0]}")
    row = {}
    for method, photo in photos.items():
        (residual,) = runtime.predict(model, [photo], size=size, tile=tile)
        if isinstance(residual, BaseException):
            raise ValueError(f"{Path(folders[method]) / name}: inference failed ({cli.one_line(residual)})")
        stats = residual_stats(residual, threshold)
        if truth is not None:
            stats.update(psnr=psnr(photo, truth), ssim=rgb_ssim(photo, truth))
        row[method] = (stats, (thumbnail(photo), thumbnail(residual)))
    return row


def average(per_image):
    """One row per method: each number averaged over the images (nan-aware: SSIM may be n/a), ranked by mean |r|
    (1 = best exposed; no rank when nothing was compared)."""
    methods = []
    for method, images in per_image.items():
        keys = images[0].keys() if images else [k for k, _ in COLUMNS[:-1]]
        values = {k: [s[k] for s in images] for k in keys}
        methods.append(
            {
                "method": method,
                "n_images": len(images),
                **{
                    k: float(np.nanmean(v)) if images and not np.isnan(v).all() else math.nan for k, v in values.items()
                },
            }
        )
    if all(m["n_images"] for m in methods):
        for row, rank in zip(methods, rankdata([m["mean_abs_residual"] for m in methods], method="min")):
            row["rank"] = int(rank)
    return methods


def format_cell(key, value):
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "n/a"
    if key in ("pct_over", "pct_under", "psnr"):
        return f"{value:.2f}"
    if key == "score":
        return f"{value:.3f}"
    return f"{value:.4f}"


def write_tables(result, output, threshold):
    columns = COLUMNS + (REFERENCE_COLUMNS if "agreement" in result else [])
    with atomic_write(output / "comparison.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "n_images"] + [key for key, _ in columns])
        for m in result["methods"]:  # a method name is text a spreadsheet must not run (csv_cell)
            writer.writerow([csv_cell(printable(m["method"])), m["n_images"]] + [m[key] for key, _ in columns])
    lines = [f"| method | images | {' | '.join(title for _, title in columns)} |", "|---" * (len(columns) + 2) + "|"]
    for m in sorted(result["methods"], key=lambda m: m["rank"]):
        cells = [format_cell(key, m[key]) for key, _ in columns]
        lines.append(f"| {md_cell(m['method'])} | {m['n_images']} | {' | '.join(cells)} |")
    lines += [
        "",
        f"{len(result['names'])} images compared; |r| > {threshold:g} counts as over-/under-exposed; "
        "rank by mean |r| (lower is better); mean r > 0 leans under-exposed, < 0 over-exposed.",
    ]
    if "agreement" in result:
        a = result["agreement"]
        verdict = "agree" if a["same_order"] else "disagree"
        lines.append(f"Rankings by mean |r| and by PSNR {verdict} (Spearman rho = {a['spearman']:.3f}).")
    with atomic_write(output / "comparison.md") as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lines


def write_figure(result, path, vmax=1.0):
    """One row pair per image (photo above its heatmap), one column per method, one colour bar; r = +vmax is full
    blue, -vmax full red (beyond: clipped)."""
    panels, methods = result["panels"], [m["method"] for m in result["methods"]]
    if not panels:
        return
    aspect = panels[0][1][0][0].shape[0] / panels[0][1][0][0].shape[1]
    fig = Figure(figsize=(2.4 * len(methods) + 1.0, 4.8 * aspect * len(panels) + 0.6), layout="constrained")
    axes = fig.subplots(2 * len(panels), len(methods), squeeze=False)
    for i, (name, row) in enumerate(panels):
        for j, (photo, residual) in enumerate(row):
            axes[2 * i, j].imshow(photo)
            axes[2 * i + 1, j].imshow(colorize(residual, vmax))
            if i == 0:
                axes[0, j].set_title(shown(methods[j]), **MATPLOTLIB_TEXT)
        axes[2 * i, 0].set_ylabel(shown(name), fontsize=8, **MATPLOTLIB_TEXT)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    # colorize shows r at (1 - r / vmax) / 2 of 'bwr', i.e. the reversed colormap over r in [-vmax, vmax]
    bar = fig.colorbar(
        ScalarMappable(Normalize(-vmax, vmax), CMAP.reversed()), ax=axes, shrink=0.6, ticks=[-vmax, 0, vmax]
    )
    bar.ax.set_yticklabels([f"-{vmax:g} over", "0 ideal", f"+{vmax:g} under"])
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def run(args, names: list[str]) -> int:
    """compare_methods.py's whole run on its parsed options ``args``, ``names`` naming the --inputs folders in order;
    the exit code."""
    runtime.setup(args)
    for folder in args.inputs + ([args.reference] if args.reference else []):
        if not folder.is_dir():
            raise cli.UsageError(f"{folder}: no such folder; expected a folder of images")
    cli.check_inputs(args.inputs)  # a folder without images: one line naming the readable formats
    for folder in args.inputs + ([args.reference] if args.reference else []):
        if args.output.resolve() == folder.resolve() or folder.resolve() in args.output.resolve().parents:
            raise cli.UsageError(
                f"{args.output}: the output folder is (or is inside) the input folder {folder}; choose another --output"
            )
    model = runtime.open_model(args.checkpoint, args)
    output = cli.writable_folder(args.output)
    folders = dict(zip(names, args.inputs))
    with cli.Progress(PROG, len(common_names(folders)[0])) as progress:
        result = compare(
            model,
            folders,
            args.reference,
            args.threshold,
            args.max_rows,
            args.size,
            args.tile,
            report=progress.report,
            progress=progress,
        )
    if not result["names"]:
        print(f"{PROG}: no image is readable in every folder; nothing to compare", file=sys.stderr)
        return cli.EXIT_FAILED
    print("\n".join(write_tables(result, output, args.threshold)))
    write_figure(result, output / "comparison.png", args.vmax)
    print(f"wrote {shown(output / 'comparison.md')}, comparison.csv, comparison.png")
    return cli.EXIT_FAILED if result["failed"] else cli.EXIT_OK
