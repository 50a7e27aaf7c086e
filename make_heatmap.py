"""Pixel-level exposure heatmaps for a folder of photos.

    python make_heatmap.py                                # img_to_pred/ -> outputs/, shipped checkpoint
    python make_heatmap.py --input photos --recursive --output results --overlay --colorbar --save-npy
    python make_heatmap.py --checkpoint ../shared/official/wavelet_epoch_2_val_loss0.03022034629540784.pth

Per photo: <stem>_exposure.png (blue = under-exposed, white = ideal, red = over-exposed) at the photo's resolution;
optionally <stem>_residual.npy, <stem>_overlay.png, <stem>_colorbar.png. One summary.csv for the run.
A photo that cannot be read or processed is reported on stderr and in summary.csv; the others go on, and the exit
code is 1. A missing or unusable checkpoint, input, output folder or option gives exit code 2 before any work
(exit codes: utils/cli.py). summary.csv is appended to as each photo completes, so an interrupted run keeps the rows
it finished and a second run into the same folder adds its rows below the first run's.
"""
import argparse
import csv
import io
import os
import sys
from pathlib import Path

import numpy as np

from pieanet.utils import cli
from pieanet.utils.heatmap import colorize, overlay, save_colorbar_heatmap
from pieanet.utils.exposure import residual_stats
from pieanet.utils.image_io import ImageLoadError, atomic_write, save_image

PROG = "make_heatmap"
ROOT = Path(__file__).resolve().parent
WORK = ROOT if (ROOT / "img_to_pred").is_dir() else Path()  # a checkout's folders; the current one when installed
SUMMARY_FIELDS = ["file", "width", "height", "mean_residual", "mean_abs_residual", "pct_over", "pct_under", "score",
                  "status", "error"]


def parse_args(argv):
    p = argparse.ArgumentParser(prog=PROG, description="Pixel-level exposure heatmaps (r > 0 under-exposed, "
                                                       "r < 0 over-exposed).")
    p.add_argument("--input", type=Path, default=WORK / "img_to_pred", help="image file or folder (default: img_to_pred/)")
    p.add_argument("--recursive", action="store_true", help="also read sub-folders; outputs keep their structure")
    p.add_argument("--output", type=Path, default=WORK / "outputs", help="output folder (default: outputs/)")
    p.add_argument("--batch-size", type=cli.positive_int, default=1, help="photos of equal size run together (default: 1)")
    cli.add_common_options(p)
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
        remove(written)
        raise
    return written


def remove(paths):
    for path in paths:
        path.unlink(missing_ok=True)


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


class SummaryError(Exception):
    """summary.csv could not be written: the run stops (exit 1)."""


class SummaryLog:
    """summary.csv, appended to one complete row at a time, so an interrupted run keeps what it finished and runs
    into the same folder keep each other's rows. A row that cannot be written whole (a full disk) is cut back off,
    so the file never ends in half a row. A summary.csv with other columns is a setup error."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            if self.path.is_file() and self.path.stat().st_size > 0:
                with open(self.path, newline="", encoding="utf-8") as f:
                    header = next(csv.reader(f), [])
                if header != SUMMARY_FIELDS:
                    raise cli.UsageError(f"{self.path}: an existing summary.csv with other columns "
                                         f"({', '.join(header)[:120]}); move it away or choose another --output")
                self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            else:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
                self._write(SUMMARY_FIELDS)
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise cli.UsageError(f"{self.path}: cannot use it as the summary ({cli.one_line(e)}); move it away or "
                                 "choose another --output") from None

    def _write(self, values):
        line = io.StringIO()
        csv.writer(line).writerow(values)
        data = line.getvalue().encode("utf-8")
        start = os.lseek(self.fd, 0, os.SEEK_END)
        try:
            written = 0
            while written < len(data):
                written += os.write(self.fd, data[written:])
        except BaseException:
            os.ftruncate(self.fd, start)
            raise

    def add(self, row):
        try:
            self._write([f"{v:.6f}" if isinstance(v, float) else v for v in (row[k] for k in SUMMARY_FIELDS)])
        except OSError as e:
            raise SummaryError(f"{self.path}: could not append a row ({e.strerror or cli.one_line(e)}); stopped, "
                               "the rows before it are kept") from None

    def close(self):
        os.close(self.fd)


def process(paths, stems, base, model, args, summary, progress):
    """Every photo, batch by batch: one row each, appended to summary.csv as soon as the photo is finished."""
    rows = []

    def finish(row, reason=None):
        if reason is not None:
            progress.fail(base / row["file"], reason)
            row.update(status="failed", error=reason)
        summary.add(row)
        rows.append(row)
        progress.update()

    for start in range(0, len(paths), args.batch_size):
        batch = []  # (row, stem, image) of the photos that loaded
        for path, stem in zip(paths[start:start + args.batch_size], stems[start:start + args.batch_size]):
            row = dict.fromkeys(SUMMARY_FIELDS, "") | {"file": path.relative_to(base).as_posix()}
            try:
                image = cli.read_image(path)
            except ImageLoadError as e:
                finish(row, str(e))
                continue
            row.update(height=image.shape[0], width=image.shape[1])
            batch.append((row, stem, image))
        residuals = cli.predict(model, [image for _, _, image in batch], args.size, args.tile, args.batch_size)
        for (row, stem, image), residual in zip(batch, residuals):
            if isinstance(residual, BaseException):
                finish(row, f"inference failed ({cli.one_line(residual)})")
                continue
            try:
                written = write_outputs(stem, image, residual, args)
            except (OSError, ValueError, RuntimeError, MemoryError) as e:
                finish(row, f"could not write outputs ({cli.one_line(e)})")
                continue
            try:
                row.update(residual_stats(residual, args.threshold), status="ok")
                finish(row)
            except BaseException:  # e.g. Ctrl-C: no photo has outputs without its summary row
                remove(written)
                raise
    return rows


def run(argv):
    args = parse_args(argv)
    cli.setup(args)
    if args.input.is_dir() and args.output.exists() and args.input.resolve() == args.output.resolve():
        raise cli.UsageError(f"{args.output}: the output folder is the input folder; choose another --output")
    errors = []
    (_, paths), = cli.check_inputs([args.input], recursive=args.recursive, exclude=[args.output], errors=errors)
    model = cli.open_model(args.checkpoint, args)
    cli.writable_folder(args.output)
    summary = SummaryLog(args.output / "summary.csv")
    base = args.input if args.input.is_dir() else args.input.parent
    try:
        with cli.Progress(PROG, len(paths)) as progress:
            for folder, reason in errors:
                progress.fail(folder, reason)
            rows = process(paths, output_stems(paths, args.input, args.output), base, model, args, summary, progress)
    except SummaryError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return cli.EXIT_FAILED
    finally:
        summary.close()
    print_table(rows)
    failed = len(progress.failed)
    print(f"{len(rows) - sum(r['status'] != 'ok' for r in rows)} of {len(rows)} images done; heatmaps and summary.csv "
          f"in {args.output}" + (f"; {failed} failed (see stderr)" if failed else ""))
    return progress.exit_code


def main(argv=None):
    return cli.run(PROG, run, argv)


if __name__ == "__main__":
    sys.exit(main())
