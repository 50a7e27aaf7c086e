"""Pixel-level exposure heatmaps for a folder of photos.

    python make_heatmap.py                                # img_to_pred/ -> outputs/, shipped checkpoint
    python make_heatmap.py --input photos --recursive --output results --overlay --colorbar --save-npy
    python make_heatmap.py --checkpoint ../shared/official/wavelet_epoch_2_val_loss0.03022034629540784.pth

Per photo: <stem>_exposure.png (blue = under-exposed, white = ideal, red = over-exposed) at the photo's resolution;
optionally <stem>_residual.npy, <stem>_overlay.png, <stem>_colorbar.png. One summary.csv for the run.
A photo that cannot be read or processed is reported on stderr and in summary.csv; the others go on, and the exit
code is 1. A missing or unusable checkpoint, input or option gives exit code 2.
"""
import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from models import DEFAULT_CHECKPOINT, open_model
from utils.exposure import DEFAULT_THRESHOLD, residual_stats
from utils.heatmap import colorize, overlay, save_colorbar_heatmap
from utils.image_io import ImageLoadError, atomic_write, list_images, load_image, save_image
from utils.inference import predict_batch

ROOT = Path(__file__).resolve().parent
# P-IEANet (width 32) peaks at about 0.23 GB per megapixel in one pass (measured on CPU at 1.5 and 6 MP); a 2048 px
# tile keeps that near 1.3 GB and costs at most (2048 / 1664)^2 = 1.5x the work of one pass for its 192 px margins
DEFAULT_TILE = 2048
SUMMARY_FIELDS = ["file", "width", "height", "mean_residual", "mean_abs_residual", "pct_over", "pct_under", "score",
                  "status", "error"]


def parse_args(argv):
    def positive_int(text):
        value = int(text)
        if value < 1:
            raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
        return value

    def non_negative_int(text):
        value = int(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
        return value

    def threshold(text):
        value = float(text)
        if not 0.0 <= value < 1.0:
            raise argparse.ArgumentTypeError(f"expected a residual threshold in [0, 1), got {text}")
        return value

    p = argparse.ArgumentParser(description="Pixel-level exposure heatmaps (r > 0 under-exposed, r < 0 over-exposed).")
    p.add_argument("--input", type=Path, default=ROOT / "img_to_pred", help="image file or folder (default: img_to_pred/)")
    p.add_argument("--recursive", action="store_true", help="also read sub-folders; outputs keep their structure")
    p.add_argument("--output", type=Path, default=ROOT / "outputs", help="output folder (default: outputs/)")
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT,
                   help="project checkpoint (.safetensors) or the released P-IEANet .pth "
                        "(default: checkpoints/pieanet_synth.safetensors)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto = CUDA when available")
    p.add_argument("--batch-size", type=positive_int, default=1, help="photos of equal size run together")
    p.add_argument("--threshold", type=threshold, default=DEFAULT_THRESHOLD,
                   help="|r| above which a pixel counts as over/under-exposed in summary.csv (default: 0.1)")
    p.add_argument("--size", type=positive_int, help="working resolution (longer side), guided upsampling back")
    p.add_argument("--tile", type=non_negative_int, default=DEFAULT_TILE,
                   help="photos larger than this (px, either side) run in overlapping tiles, which bounds memory and "
                        f"gives the same map as one pass; 0 = always one pass (default: {DEFAULT_TILE})")
    p.add_argument("--save-npy", action="store_true", help="also write <stem>_residual.npy (float32, full size)")
    p.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.png (heatmap over the photo)")
    p.add_argument("--colorbar", action="store_true", help="also write <stem>_colorbar.png (heatmap with colour bar)")
    return p.parse_args(argv)


def output_stems(paths, input_path, output_dir):
    """Output path prefix per photo: output_dir / <sub-folder> / <stem>; photos sharing a stem in one folder
    (a.jpg, a.png) get their extension added (a_jpg, a_png)."""
    base = input_path if input_path.is_dir() else input_path.parent
    stems = [output_dir / path.relative_to(base).parent / path.stem for path in paths]
    counts = {}
    for stem in stems:
        counts[str(stem).lower()] = counts.get(str(stem).lower(), 0) + 1
    return [stem.with_name(f"{stem.name}_{path.suffix.lstrip('.').lower()}") if counts[str(stem).lower()] > 1 else stem
            for stem, path in zip(stems, paths)]


def save_npy(path, residual):
    with atomic_write(path) as tmp:
        np.save(tmp, residual.astype(np.float32))


def write_outputs(stem, image, residual, args):
    """Write every requested file for one photo; if one fails, remove those already written and re-raise."""
    writers = [(f"{stem.name}_exposure.png", lambda p: save_image(p, colorize(residual)))]
    if args.save_npy:
        writers.append((f"{stem.name}_residual.npy", lambda p: save_npy(p, residual)))
    if args.overlay:
        writers.append((f"{stem.name}_overlay.png", lambda p: save_image(p, overlay(image, residual))))
    if args.colorbar:
        writers.append((f"{stem.name}_colorbar.png", lambda p: save_colorbar_heatmap(p, residual, title=stem.name)))
    written = []
    try:
        for name, write in writers:
            write(stem.with_name(name))
            written.append(stem.with_name(name))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise


def predict(model, images, args):
    """Residual maps of a batch; if the batch fails as a whole, each photo is retried alone so that one photo's
    failure (e.g. out of memory) does not take the others with it. Returns a map or an exception per photo."""
    try:
        return predict_batch(model, images, size=args.size, tile=args.tile or None, batch_size=args.batch_size)
    except (RuntimeError, ValueError, MemoryError) as e:
        if len(images) == 1:
            return [e]
    results = []
    for image in images:
        try:
            results.append(predict_batch(model, [image], size=args.size, tile=args.tile or None)[0])
        except (RuntimeError, ValueError, MemoryError) as e:
            results.append(e)
    return results


def one_line(error):
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def load_checked_model(args):
    """The model, or None after printing one sentence on what is wrong with the checkpoint."""
    if args.device == "cuda" and not torch.cuda.is_available():
        print("make_heatmap: --device cuda was asked for but no CUDA device is available; use --device cpu",
              file=sys.stderr)
        return None
    return open_model(args.checkpoint, device=args.device, prog="make_heatmap")


def print_table(rows):
    print(f"{'file':<32} {'size':>11} {'mean r':>8} {'mean|r|':>8} {'%over':>7} {'%under':>7} {'score':>6}  status")
    for row in rows:
        size = f"{row['width']}x{row['height']}" if row["width"] != "" else "-"
        if row["status"] == "ok":
            numbers = (f"{row['mean_residual']:>8.4f} {row['mean_abs_residual']:>8.4f} {row['pct_over']:>7.2f} "
                       f"{row['pct_under']:>7.2f} {row['score']:>6.3f}")
        else:
            numbers = f"{'-':>8} {'-':>8} {'-':>7} {'-':>7} {'-':>6}"
        print(f"{row['file']:<32} {size:>11} {numbers}  {row['status']}")


def write_summary(path, rows):
    with atomic_write(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: f"{v:.6f}" if isinstance(v, float) else v for k, v in row.items()})


def main(argv=None):
    args = parse_args(argv)
    if not args.input.exists():
        print(f"make_heatmap: {args.input}: no such file or folder; expected an image or a folder of images",
              file=sys.stderr)
        return 2
    if args.input.is_dir() and args.input.resolve() == args.output.resolve():
        print(f"make_heatmap: {args.output}: the output folder is the input folder; choose another --output",
              file=sys.stderr)
        return 2
    paths = list_images(args.input, recursive=args.recursive, exclude=[args.output])
    if not paths:
        print(f"make_heatmap: {args.input}: no images found; expected files ending in .jpg, .jpeg, .png, .bmp, "
              f".tif, .tiff or .webp", file=sys.stderr)
        return 2
    model = load_checked_model(args)
    if model is None:
        return 2
    try:
        args.output.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"make_heatmap: {args.output}: cannot create the output folder ({one_line(e)})", file=sys.stderr)
        return 2

    base = args.input if args.input.is_dir() else args.input.parent
    stems = output_stems(paths, args.input, args.output)
    rows = []

    def fail(path, row, reason):
        tqdm.write(f"make_heatmap: {path}: {reason}", file=sys.stderr)
        row.update(status="failed", error=reason)

    with tqdm(total=len(paths), unit="img", desc="make_heatmap", disable=None) as progress:
        for start in range(0, len(paths), args.batch_size):
            batch = []  # (row, stem, image) of the photos that loaded
            for path, stem in zip(paths[start:start + args.batch_size], stems[start:start + args.batch_size]):
                row = dict.fromkeys(SUMMARY_FIELDS, "") | {"file": path.relative_to(base).as_posix()}
                rows.append(row)
                try:
                    image = load_image(path)
                except ImageLoadError as e:
                    fail(path, row, str(e).removeprefix(f"{path}: "))
                    progress.update()
                    continue
                row.update(height=image.shape[0], width=image.shape[1])
                batch.append((row, stem, image))
            residuals = predict(model, [image for _, _, image in batch], args) if batch else []
            for (row, stem, image), residual in zip(batch, residuals):
                path = base / row["file"]
                if isinstance(residual, BaseException):
                    fail(path, row, f"inference failed ({one_line(residual)})")
                else:
                    try:
                        write_outputs(stem, image, residual, args)
                        row.update(residual_stats(residual, args.threshold), status="ok")
                    except (OSError, ValueError, RuntimeError, MemoryError) as e:
                        fail(path, row, f"could not write outputs ({one_line(e)})")
                progress.update()

    print_table(rows)
    try:
        write_summary(args.output / "summary.csv", rows)
    except OSError as e:
        print(f"make_heatmap: {args.output / 'summary.csv'}: could not write ({one_line(e)})", file=sys.stderr)
        return 1
    failed = sum(row["status"] != "ok" for row in rows)
    print(f"{len(rows) - failed} of {len(rows)} images done; heatmaps and summary.csv in {args.output}"
          + (f"; {failed} failed (see stderr)" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
