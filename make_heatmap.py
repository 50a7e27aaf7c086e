"""Pixel-level exposure heatmaps for a folder of photos.

    python make_heatmap.py                                # img_to_pred/ -> outputs/, shipped checkpoint
    python make_heatmap.py --input photos --recursive --output results --overlay --colorbar --save-npy
    P_IEA_RELEASED_WEIGHTS=wavelet_epoch_2_val_loss0.03022034629540784.pth python make_heatmap.py --checkpoint released

Per photo: <stem>_exposure.png (blue = under-exposed, white = ideal, red = over-exposed) at the photo's resolution;
optionally <stem>_residual.npy, <stem>_overlay.png, <stem>_colorbar.png. One summary.csv for the run. The maps obey
the definition's bounds (models/inference.py); --map stops draws the correction per pixel in stops instead of r;
transparent pixels are not judged (utils/alpha.py; --alpha composite judges the photo over white). Inputs: --input
and paths after the options, several of each. <stem> is the photo's sub-folder and name without extension, made
unique (utils/outputs.py, output_stems) against the other photos of the run and the photos of earlier runs in
summary.csv, and stored in the photo's row (column output; the kinds of file written in column output_kinds). A file
in --output is the tool's only when its size and content are those the folder's ledger recorded as the tool wrote it
(utils/ledger.py; a planted line proves nothing): a user's file with an output's name is never removed or replaced
(the photo gets another prefix), nothing is written or removed through a symbolic link, and a user's index.html
stops the run before any work (docs/safety.md, "Files and folders"). One run at a time per output folder: a second
one stops with one line (exit 2).
--vmax sets the colour scale (1, the default, is the same for every photo; 'image' stretches each photo), --format jpg
writes the heatmap and overlay as JPEG.
A photo that cannot be read or processed is reported on stderr and in summary.csv; the others go on, and the exit
code is 1. A missing or unusable checkpoint, input, output folder or option gives exit code 2 before any work
(exit codes: utils/cli.py). summary.csv is appended to as each photo completes, so an interrupted run keeps the rows
it finished; a second run into the same folder first drops the earlier rows of the photos it does again (and says how
many), so each photo keeps one row, and adds its rows below those of the other photos.

Several processes (one per GPU or CPU socket, any number of nodes; utils/distributed.py):
    torchrun --nproc-per-node 4 make_heatmap.py --input photos --output results
Each process takes every 4th batch of the sorted photos and appends its rows to summary.rank<k>.csv; at the end rank 0
adds them to summary.csv in the order one process would have written them, removes the parts, prints the one table
and exits 1 if a photo failed on any process. The outputs are those of one process. Parts a killed run left are
taken into summary.csv by the next run. With several nodes, --output must be a folder every node sees.

--resume skips a photo when summary.csv (or a part a killed torchrun run left) has a row with status ok for it, made
under the output name, for the photo's current content (column photo_sha256) and with the result-affecting settings
(column settings: the checkpoint's content, which also decides the backend, --size, --tile, --threshold, --vmax,
--raw-clipping, --jpeg-quality, --map, --alpha) this run would use, and
every file the current options ask for exists (so adding --overlay redoes every photo without one); the others are
done again, each photo keeps one row, and temporary files of killed processes are removed. Outputs are written
atomically and a photo's row comes after its files, so a killed run resumed this way writes the same files and rows
as one uninterrupted run (with --batch-size 1; larger batches may group the remaining photos differently).
"""
if __name__ == "__main__":  # first, before the slow imports: Ctrl-C while they run is exit 130, one line
    from pieanet.utils.startup import passive_waits, quiet_interrupts
    quiet_interrupts("make_heatmap")
    passive_waits()  # before torch starts its threads
import argparse
import contextlib
import math
import sys
from pathlib import Path

import numpy as np

from pieanet import runtime
from pieanet.utils import cli, distributed, folders, outputs, report
from pieanet.utils.alpha import judged_photo
from pieanet.utils.heatmap import (MAX_STOPS_VMAX, STOPS_VMAX, STOPS_VMAX_FLOOR, VIEWS, VMAX_FLOOR, VMAX_PERCENTILE,
                                   draw_heatmap, draw_overlay, image_stops_vmax, image_vmax, save_colorbar_heatmap,
                                   save_heatmap_png)
from pieanet.utils.exposure import bound_residual, residual_stats, stops_map
from pieanet.models.full_size import photo_grey  # uint8 or float photo: grey in [0, 1]
from pieanet.utils.errors import EXIT_INTERRUPTED
from pieanet.utils.safety import shown
from pieanet.utils.shipped import trust_statement
from pieanet.utils.image_io import ImageLoadError, atomic_write, photo_bytes, remove_orphan_temporaries, save_image
from pieanet.utils.ledger import OutputLedger, ledger, note_output, tidy_ledger
from pieanet.utils.overlap import in_order
from pieanet.utils.outputs import occupied_prefixes, output_path, output_stems
from pieanet.utils.summary import (SUMMARY_FIELDS, SUMMARY_NAME, SummaryError, SummaryLog, check_bookkeeping_files,
                                   content_digest, leftover_parts, merge_parts, part_path, photo_keys, read_summary,
                                   taken_stems, write_summary)

PROG = "make_heatmap"
ROOT = Path(__file__).resolve().parent
WORK = ROOT if (ROOT / "img_to_pred").is_dir() else Path()  # a checkout's folders; the current one when installed
DEFAULT_JPEG_QUALITY = 90
RAW_CLIPPED_MARGIN = 1e-6  # --raw-clipping: clipped pixels get r <= -threshold - this, strictly over the threshold
# threads that read and predict the next batches while the main thread writes files (bench/speed.py, README "Speed")
PREPARE_WORKERS = 1


def parse_args(argv):
    p = cli.Parser(prog=PROG, description="Pixel-level exposure heatmaps (r > 0 under-exposed, r < 0 over-exposed).")
    p.add_argument("photos", type=Path, nargs="*", metavar="PATH",
                   help="image files or folders, as --input (both may be given)")
    p.add_argument("--input", type=Path, nargs="+", action="extend", default=[], metavar="PATH",
                   help="image files or folders, one or more, the option repeatable (default: img_to_pred/ when "
                        "no PATH is given)")
    p.add_argument("--recursive", action="store_true", help="also read sub-folders; outputs keep their structure")
    p.add_argument("--output", type=Path, default=WORK / "outputs", action=cli.Once,
                   help="output folder (default: outputs/)")
    p.add_argument("--batch-size", type=cli.positive_int, default=1,
                   help="photos of equal size run together (default: 1)")
    p.add_argument("--resume", action="store_true",
                   help="skip the photos already done in --output: a row with status ok in summary.csv (or in a "
                        "summary.rank<k>.csv a killed torchrun run left) made under the output name, for the photo's "
                        "current content and with the "
                        "settings this run would use (the checkpoint's content, --size, --tile, --threshold, --vmax, "
                        "--raw-clipping, --jpeg-quality, --map, --alpha), and every file the current options ask for "
                        "present; the others are (re)done and their old rows dropped, so each photo keeps one row")
    cli.add_common_options(p)
    p.add_argument("--save-npy", action="store_true", help="also write <stem>_residual.npy (float32, full size)")
    p.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.png (heatmap over the photo)")
    p.add_argument("--colorbar", action="store_true", help="also write <stem>_colorbar.png (heatmap with colour bar)")
    p.add_argument("--raw-clipping", action="store_true",
                   help="camera RAW files: judge clipping on the raw data too. Pixels with a photosite at the "
                        "sensor's white level among their 3 x 3 neighbourhood count as over-exposed (r lowered to "
                        "just below -threshold, so they are in pct_over and red in the map) and their share goes "
                        "into summary.csv's pct_raw_clipped (empty for other files)")
    p.add_argument("--no-report", action="store_true", help="do not write index.html (a page with every photo's "
                                                            "numbers, heatmap and overlay, built from summary.csv)")
    p.add_argument("--vmax", type=colour_scale, metavar="V|image",
                   help="colour scale: r = +V is full blue, -V full red, beyond is clipped; 1 keeps one absolute "
                        f"scale for every photo, so maps compare across photos (default: 1; with --map stops V is in "
                        f"stops, up to {MAX_STOPS_VMAX:g}, default {STOPS_VMAX:g}); e.g. 0.3 makes typical "
                        f"residuals of 0.1-0.2 readable; 'image' = per photo, the {VMAX_PERCENTILE:g}th percentile "
                        f"of |r| but at least {VMAX_FLOOR:g} (colours then only compare within a photo)")
    p.add_argument("--map", choices=VIEWS, default="residual",
                   help="what the heatmap, overlay and colour bar draw: 'residual', r itself (grey levels / 255, "
                        "the definition; a global error shows most in bright areas), or 'stops', the correction per "
                        "pixel in stops (log2 of the linear-light ratio, the quantity of the stops column; a global "
                        "error is one flat colour; clipped and crushed pixels, whose light cannot be measured, are "
                        "chequered). --vmax is then in stops (default: residual)")
    cli.add_alpha_option(p)
    p.add_argument("--format", choices=["png", "jpg"], default="png",
                   help="file type of the heatmap and overlay (default: png; jpg is several times smaller)")
    p.add_argument("--jpeg-quality", type=jpeg_quality, metavar="Q",
                   help=f"JPEG quality 1-100 with --format jpg (default: {DEFAULT_JPEG_QUALITY})")
    args = p.parse_args(argv)
    if args.jpeg_quality is not None and args.format != "jpg":
        p.error("--jpeg-quality applies to --format jpg only")
    args.inputs = args.input + args.photos
    if args.vmax is None:
        args.vmax = STOPS_VMAX if args.map == "stops" else 1.0
    elif args.vmax != "image" and args.map == "residual" and args.vmax > 1.0:
        p.error(f"argument --vmax: expected a number in (0, 1] or 'image', got {args.vmax:g} (a scale in stops "
                "goes with --map stops)")
    return args


def colour_scale(text):
    """--vmax: a positive number (at most 1 for the residual view, MAX_STOPS_VMAX for the stops view; parse_args
    checks which) or 'image' (a per-photo stretch)."""
    if text.strip().lower() == "image":
        return "image"
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 < value <= MAX_STOPS_VMAX:  # NaN too
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1] or 'image' (with --map stops: stops, up to "
                                         f"{MAX_STOPS_VMAX:g}), got {text!r}")
    return value


def jpeg_quality(text):
    value = cli.positive_int(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"expected a JPEG quality from 1 to 100, got {text}")
    return value


def result_settings(args, checkpoint):
    """summary.csv's settings text: the options that change a photo's numbers or files but not their names, the
    checkpoint by the SHA-256 of its content (which also decides the backend: an ONNX file runs in onnxruntime, any
    other in torch), so a copy counts as the same and a retrained file as another. --resume redoes a photo whose row
    has other settings."""
    quality = (args.jpeg_quality or DEFAULT_JPEG_QUALITY) if args.format == "jpg" else "-"
    size = "native" if args.size == 0 else (args.size or "model")  # --size native is 0, no size is None
    settings = {"checkpoint": content_digest(checkpoint), "size": size,
                "tile": args.tile, "threshold": args.threshold, "vmax": args.vmax,
                "raw_clipping": "yes" if args.raw_clipping else "no", "jpeg_quality": quality, "map": args.map,
                "alpha": args.alpha}
    return " ".join(f"{key}={value}" for key, value in settings.items())


def save_npy(path, residual):
    with atomic_write(path) as tmp:
        np.save(tmp, residual.astype(np.float32))


def colour_scale_of(values, spec, view="residual"):
    """(vmax, how it was chosen) for --vmax ``spec``: a number, or 'image' (the per-photo stretch); ``values``: the
    residual map, or the stops map for the stops view."""
    if spec != "image":
        return spec, "fixed"
    if view == "stops":
        vmax = image_stops_vmax(values)
        return vmax, ("per image, floor" if vmax == STOPS_VMAX_FLOOR else f"per image, p{VMAX_PERCENTILE:g} of |stops|")
    vmax = image_vmax(values)
    return vmax, ("per image, floor" if vmax == VMAX_FLOOR else f"per image, p{VMAX_PERCENTILE:g} of |r|")


def drawn_values(image, residual, view):
    """What the drawings of ``view`` show: the residual itself, or its stops map (utils.exposure.stops_map)."""
    return stops_map(image, residual) if view == "stops" else residual


def write_outputs(stem, image, residual, args, owned=False, proof=None, not_judged=None):
    """Write every requested file for one photo; if one fails, remove those already written and re-raise. When the
    prefix is ``owned`` (summary.csv records it as this photo's output), its files that this run does not ask for (an
    overlay of an earlier run with other settings) are removed, so the folder holds only outputs of the photo's latest
    row. A file is replaced or removed only when ``proof`` (utils/ledger.py, OutputLedger; None: the folder's) shows
    the tool wrote it (its recorded size and content hash); a user's file is never touched, whatever a line in the
    ledger or summary says. Every path is checked to lie in --output with no symbolic link on the way
    (folders.inside). ``not_judged``: the photo's pixels drawn as not judged. Returns the paths written, their kinds
    (utils/outputs.py) and the colour scale (vmax) used."""
    proof = OutputLedger(args.output) if proof is None else proof
    values = drawn_values(image, residual, args.map)
    vmax, scale_note = colour_scale_of(values if not_judged is None else values[~not_judged], args.vmax, args.map)
    writers = output_writers(stem, image, residual, vmax, scale_note, args, not_judged, values)
    kinds, written = requested_kinds(args), []
    try:
        for kind in kinds:
            with proof.writing(folders.inside(args.output, output_path(stem, kind))) as tmp:
                writers[outputs.role(kind)](tmp)
            written.append(output_path(stem, kind))
    except BaseException:
        remove(written)
        raise
    if owned:
        remove([path for path in set(output_path(stem, kind) for kind in outputs.KINDS) - set(written)
                if proof.owns(folders.inside(args.output, path))])
    return written, kinds, vmax


def output_writers(stem, image, residual, vmax, scale_note, args, not_judged=None, values=None):
    """{role (utils/outputs.py): writer of that file, given its path}; which files are written is requested_kinds'.
    The drawings show --map's view (``values``: drawn_values, when the caller has them), with the pixels
    ``not_judged`` chequered; the .npy holds the residual."""
    options = {}
    if args.format == "jpg":  # chroma at full resolution (4:4:4): the colour is the content of a heatmap
        options = {"quality": args.jpeg_quality or DEFAULT_JPEG_QUALITY, "subsampling": 0}
    values = drawn_values(image, residual, args.map) if values is None else values
    view = args.map
    palette = not options and view == "residual" and not_judged is None  # PNG: an 8-bit palette, the same colours
    return {outputs.HEATMAP: (lambda p: save_heatmap_png(p, residual, vmax)) if palette else
            (lambda p: save_image(p, draw_heatmap(values, vmax, view, not_judged), **options)),
            outputs.RESIDUAL: lambda p: save_npy(p, residual),
            outputs.OVERLAY: lambda p: save_image(p, draw_overlay(image, values, vmax, view, not_judged), **options),
            outputs.COLORBAR: lambda p: save_colorbar_heatmap(p, values, title=stem.name, vmax=vmax,
                                                              scale_note=scale_note, view=view,
                                                              not_judged=not_judged)}


def requested_kinds(args):
    """The kinds of file the options ask for, per photo, in the order they are written."""
    return outputs.requested_kinds(args.format, overlay=args.overlay, colorbar=args.colorbar, residual=args.save_npy)


def requested_outputs(stem, args):
    """The files write_outputs writes for ``stem`` under the current options."""
    return [output_path(stem, kind) for kind in requested_kinds(args)]


def remove(paths):
    for path in paths:
        path.unlink(missing_ok=True)


def print_table(rows):
    """The run's rows as a table on stdout; the file and size columns as wide as their longest entry."""
    sizes = [f"{row['width']}x{row['height']}" if row["width"] != "" else "-" for row in rows]
    name_width = max([32] + [len(shown(row["file"])) for row in rows])
    size_width = max([11] + [len(size) for size in sizes])
    print(f"{'file':<{name_width}} {'size':>{size_width}} {'mean r':>8} {'mean|r|':>8} {'%over':>7} {'%under':>7} "
          f"{'score':>6} {'stops':>6}  status")
    for row, size in zip(rows, sizes):
        if row["status"] == "ok":
            numbers = (f"{row['mean_residual']:>8.4f} {row['mean_abs_residual']:>8.4f} {row['pct_over']:>7.2f} "
                       f"{row['pct_under']:>7.2f} {row['score']:>6.3f} {row['stops']:>+6.2f}")
        else:
            numbers = f"{'-':>8} {'-':>8} {'-':>7} {'-':>7} {'-':>6} {'-':>6}"
        print(f"{shown(row['file']):<{name_width}} {size:>{size_width}} {numbers}  {row['status']}")


def mark_raw_clipping(row, residual, clipped, threshold, image):
    """--raw-clipping on a RAW photo (``clipped`` its mask, None for other files): the clipped pixels' share into
    the row's pct_raw_clipped, and their residual lowered in place to just below -threshold (over-exposed), never
    below -grey of ``image`` (the definition's bound, utils.exposure.bound_residual)."""
    if clipped is None:
        return
    row["pct_raw_clipped"] = 100.0 * np.count_nonzero(clipped) / clipped.size
    np.minimum(residual, np.float32(-threshold - RAW_CLIPPED_MARGIN), out=residual, where=clipped)
    bound_residual(residual, photo_grey(image), out=residual)  # a dark pixel cannot be told to lose more than its grey


def process(photos, model, args, settings, summary, progress, owned=frozenset(), proof=None, rows=None):
    """Every photo ((path, file, source, output prefix)), batch by batch: one row each, appended to ``summary``
    (summary.csv, or this process's part under torchrun) as soon as the photo is finished, and to ``rows`` (the list
    returned; the caller's, so the rows finished before a Ctrl-C are still in its hands). ``owned``: the prefixes
    summary.csv records as their photo's; ``proof``: the files the tool can prove it wrote (write_outputs). The next
    batches are read and predicted at the working size (prepare_batch) on PREPARE_WORKERS threads while this one
    makes the current batch's full-size maps and writes their files, numbers and rows, in the photos' order (on a
    12 MP photo the two halves cost about the same)."""
    rows = [] if rows is None else rows
    proof = OutputLedger(args.output) if proof is None else proof

    def finish(path, row, reason=None):
        if reason is not None:
            progress.fail(path, reason)
            row.update(status="failed", error=reason)
        summary.add(row)
        rows.append(row)
        progress.update()

    batches = [photos[start:start + args.batch_size] for start in range(0, len(photos), args.batch_size)]
    for unreadable, batch in in_order(lambda photos: prepare_batch(photos, model, args, settings), batches,
                                      workers=PREPARE_WORKERS, ahead=PREPARE_WORKERS):
        for path, row, reason in unreadable:
            finish(path, row, reason)
        for path, row, prefix, image, clipped, unjudged, residual in batch:
            try:  # the full-size step of the working-size path, here: it balances the two threads' work
                residual = runtime.full_map(residual, image)
            except (RuntimeError, ValueError, MemoryError) as e:
                residual = e
            if isinstance(residual, BaseException):
                finish(path, row, f"inference failed ({cli.one_line(residual)})")
                continue
            mark_raw_clipping(row, residual, clipped, args.threshold, image)
            try:
                note_output(args.output, prefix, row["source"])  # recorded before its files: a kill leaves them
                written, kinds, vmax = write_outputs(args.output / prefix, image, residual, args, prefix in owned,
                                                     proof, unjudged)
            except (OSError, ValueError, RuntimeError, MemoryError) as e:
                finish(path, row, f"could not write outputs ({cli.one_line(e)})")
                continue
            try:
                row.update(residual_stats(residual, args.threshold, image, unjudged), vmax=vmax, status="ok",
                           output=prefix, output_kinds=outputs.kinds_text(kinds))
                finish(path, row)
            except BaseException:  # e.g. Ctrl-C: no photo has outputs without its summary row
                remove(written)
                raise
    return rows


def prepare_batch(photos, model, args, settings):
    """One batch's reading and prediction, safe on a worker thread (it writes nothing): each photo read once (its
    hash is that of the bytes decoded), decoded (uint8 where its levels are 8-bit) and its map predicted. Returns
    ([(path, row, reason)] of the photos that could not be read, in their order; [(path, row, prefix, image, mask of
    the RAW photo's clipped pixels with --raw-clipping or None, mask of its pixels not judged (utils/alpha.py) or
    None, map (on the working-size path its GuidedFit, made into the map by the caller: runtime.full_map) or the
    exception)] of the others)."""
    unreadable, loaded = [], []
    for path, file, source, prefix in photos:
        row = dict.fromkeys(SUMMARY_FIELDS, "") | {"file": file, "source": source, "settings": settings}
        try:
            try:  # read once: the hash is that of the bytes decoded (a later change is redone)
                data = photo_bytes(path)
                row["photo_sha256"] = content_digest(path, data)
            except OSError as e:
                raise ImageLoadError(f"cannot be read ({e.strerror or cli.one_line(e)})") from e
            image = runtime.read_image(path, args.raw_clipping, data, keep_uint8=True, keep_alpha=args.alpha == "judge")
            image, clipped = image if args.raw_clipping else (image, None)
            image, not_judged = judged_photo(image)  # transparent pixels: utils/alpha.py
        except ImageLoadError as e:
            unreadable.append((path, row, str(e)))
            continue
        row.update(height=image.shape[0], width=image.shape[1])
        loaded.append((path, row, prefix, image, clipped, not_judged))
    residuals = runtime.predict(model, [image for *_, image, _, _ in loaded], args.size, args.tile, args.batch_size,
                                deferred=True)
    return unreadable, [(*photo, residual) for photo, residual in zip(loaded, residuals)]


def earlier_rows(output, position):
    """(summary.csv's rows, the parts a killed torchrun run left, their rows in the order one process writes them;
    ``position``: {source: index} of this run's photos)."""
    parts = leftover_parts(output)
    carried = sorted((row for part in parts for row in read_summary(part)),
                     key=lambda row: position.get(row["source"], len(position)))
    return read_summary(output / SUMMARY_NAME), parts, carried


def same_content(path, recorded):
    """Whether the photo at ``path`` still has the content its row recorded (a row without one: unknown, so no)."""
    try:
        return bool(recorded) and content_digest(path) == recorded
    except OSError:
        return False


def plan_run(args, earlier, position, stems, settings, paths):
    """(the rows summary.csv is to hold before any photo is done, None to leave it as it is; the indices of the
    photos to do). ``earlier``: earlier_rows; the rows of parts a killed torchrun run left are taken into
    summary.csv. With --resume a photo (at ``paths``) is skipped when its last ok row names the output prefix it gets
    now (``stems``), this run's ``settings`` and the photo's current content (photo_sha256: a photo replaced by another,
    of any size, is redone), and every file the current options ask for exists; a skipped photo
    keeps that row and a photo to redo loses its old rows, so no photo of the input ends up with two."""
    existing, parts, carried = earlier
    everything = list(range(len(stems)))
    rows = existing + carried
    if not args.resume:  # every photo is done again: its earlier rows give way to the new one
        kept = [row for row in rows if row["source"] not in position]
        return (kept if parts or len(kept) < len(existing) else None), everything
    # an ok row of an older summary without the stops column is redone, so every row the run leaves has them
    last_ok = {row["source"]: n for n, row in enumerate(rows) if row["status"] == "ok" and row["stops"] != ""}
    done = {position[source] for source, n in last_ok.items()
            if source in position and rows[n]["output"] == stems[position[source]] and rows[n]["settings"] == settings
            and all(path.is_file() for path in requested_outputs(args.output / stems[position[source]], args))
            and same_content(paths[position[source]], rows[n]["photo_sha256"])}
    kept = [row for n, row in enumerate(rows)
            if row["source"] not in position or (position[row["source"]] in done and last_ok[row["source"]] == n)]
    return (kept if parts or len(kept) < len(existing) else None), [i for i in everything if i not in done]


def make_heatmaps(paths, bases, model, args, settings, group, folder_errors):
    """This process's share of the photos: whole batches, every world_size-th one, so each batch is the one a single
    process would run. Each process appends its rows to its own part (one process: to summary.csv itself); rank 0
    merges them. Returns, on rank 0, (every process's rows in the order of summary.csv, photos skipped by
    --resume, failed count, summary errors); None on the other ranks."""
    keys = [photo_keys(path, base, args.output) for path, base in zip(paths, bases)]  # base: the photo's input
    files, sources = [file for file, _ in keys], [source for _, source in keys]
    position = {source: index for index, source in enumerate(sources)}
    check_bookkeeping_files(args.output)  # summary, parts, ledger, lock: regular files or the run is refused
    earlier = earlier_rows(args.output, position)  # also checks summary.csv's columns before any work
    taken = ledger(args.output) | taken_stems(earlier[0] + earlier[2])
    proof = OutputLedger(args.output)
    stems = output_stems(files, sources, taken, occupied_prefixes(args.output, proof.recorded_size))
    owned = {stem for stem, source in zip(stems, sources) if taken.get(stem) == source}
    start_rows, todo = plan_run(args, earlier, position, stems, settings, paths)
    replaced = 0 if start_rows is None else len(earlier[0]) + len(earlier[2]) - len(start_rows)
    group.barrier()  # every process has read the summaries before rank 0 changes them
    if group.is_main:
        if start_rows is not None:
            write_summary(args.output / SUMMARY_NAME, start_rows)
            remove(leftover_parts(args.output))
        if args.resume:  # a killed run's temporary files: outputs, and summary.csv's and index.html's
            for folder in sorted({args.output} | {(args.output / stem).parent for stem in stems}):
                with contextlib.suppress(OSError):  # a sub-folder that is a link: nothing removed through it
                    remove_orphan_temporaries(folders.inside(args.output, folder))
    group.barrier()
    batches = [todo[start:start + args.batch_size] for start in range(0, len(todo), args.batch_size)]
    mine = [index for batch in group.shard(batches) for index in batch]
    summary = SummaryLog(part_path(args.output, group.rank) if group.distributed else args.output / SUMMARY_NAME)
    rows, error, interrupted, progress = [], None, False, None
    try:
        with cli.Progress(PROG, len(mine), show=group.is_main) as progress:
            for folder, reason in folder_errors if group.is_main else []:
                progress.fail(folder, reason)
            photos = [(paths[i], files[i], sources[i], stems[i]) for i in mine]
            process(photos, model, args, settings, summary, progress, owned, proof, rows)
    except SummaryError as e:
        error = str(e)
    except KeyboardInterrupt:  # one process: the table and report of what it finished, then exit 130
        if group.distributed or progress is None:
            raise
        interrupted = True
    finally:
        summary.close()
        for note in summary.notes:
            print(f"{PROG}: {shown(note)}", file=sys.stderr)
    shards = group.gather((rows, len(progress.failed), error))
    if not group.is_main:
        return None
    batch_of = {sources[index]: n // args.batch_size for n, index in enumerate(todo)}

    def order(row):
        return batch_of.get(row["source"], len(batches))

    if group.distributed:
        merge_parts(args.output, group.world_size, order)
    untidy = tidy_ledger(args.output)
    if untidy:
        print(f"{PROG}: {untidy}", file=sys.stderr)
    return (sorted((row for shard_rows, _, _ in shards for row in shard_rows), key=order), len(paths) - len(todo),
            sum(failed for _, failed, _ in shards), [error for _, _, error in shards if error], replaced, interrupted)


def input_sources(args):
    """The inputs to read: --input's and the positional paths, or img_to_pred/ when none is given (its absence is
    one line naming --input)."""
    if args.inputs:
        return args.inputs
    default = WORK / "img_to_pred"
    if not default.exists():
        raise cli.UsageError(f"no photos given and no {default.name}/ folder here; name them with --input PATH (files "
                             "or folders, several allowed) or as paths after the options")
    return [default]


def run(argv):
    args = parse_args(argv)
    runtime.setup(args, torch_free_ok=True)
    sources = input_sources(args)
    bases = [source if source.is_dir() else source.parent for source in sources]
    for source, base in zip(sources, bases):
        if args.output.exists() and base.resolve() == args.output.resolve():
            raise cli.UsageError(f"{args.output}: the output folder is the input " + ("folder" if source.is_dir() else
                                 "photo's folder") + "; choose another --output")
    cli.check_path_room(args.output)  # before anything reads or writes in it
    if not args.no_report:
        report.check_replaceable(args.output)  # a ReportError: exit 2; checked again before writing, under the lock
    errors = []
    found = cli.check_inputs(sources, recursive=args.recursive, exclude=[args.output], errors=errors)
    paths, photo_bases, seen = [], [], set()
    for base, (_, listed) in zip(bases, found):
        for path in listed:  # a photo named by two inputs (a file and its folder) is done once
            if path.resolve() not in seen:
                seen.add(path.resolve())
                paths.append(path)
                photo_bases.append(base)
    base = bases[0]  # the report's fallback for rows of summaries older than the source column
    with contextlib.ExitStack() as held:
        with distributed.process_group(runtime.resolve_device(args.device, args)) as group:
            args.device = str(group.device)  # under torchrun with CUDA: this process's own GPU
            # the file that runs: the settings and the report name it
            args.checkpoint = runtime.model_file(args.checkpoint, args)
            model = runtime.open_model(args.checkpoint, args)
            settings = result_settings(args, args.checkpoint)
            cli.writable_folder(args.output)
            # one run per folder: rank 0 locks it for the whole run (report included); the ranks of this run share it
            with cli.refused_together(PROG, group):  # a busy folder: one line (rank 0), every rank exits 2
                held.enter_context(folders.locked(args.output, group))
            done = make_heatmaps(paths, photo_bases, model, args, settings, group, errors)
        if not group.is_main:
            return cli.EXIT_OK  # rank 0 reports for every process
        return finish_run(args, base, done)


def finish_run(args, base, done):
    """Rank 0, still holding the folder's lock: print the table and write the report."""
    rows, skipped, failed, summary_errors, replaced, interrupted = done
    for error in summary_errors:
        print(f"{PROG}: {shown(error)}", file=sys.stderr)
    if summary_errors:
        return cli.EXIT_FAILED
    if rows or not skipped:
        print_table(rows)
        trust = trust_statement(args.checkpoint)
        if trust:
            print(f"How far to trust these maps: {trust}")
        print(f"{len(rows) - sum(r['status'] != 'ok' for r in rows)} of {len(rows)} images done; heatmaps and "
              f"summary.csv in {shown(args.output)}"
              + (f"; {skipped} already done, skipped (--resume)" if skipped else "")
              + (f"; {replaced} row(s) of earlier runs for these photos replaced" if replaced > 0 else "")
              + (f"; {failed} failed (see stderr)" if failed else ""))
    else:
        print(f"nothing to do: {skipped} already done, skipped (--resume), every image of the input; heatmaps and "
              f"summary.csv in {shown(args.output)}")
    # written by rank 0 after the merge: the report shows every process's rows
    if not args.no_report:
        try:
            page = report.write_report(args.output, args.output / SUMMARY_NAME, base, args.threshold,
                                       args.checkpoint)
        except report.ReportError as e:
            print(f"{PROG}: {shown(e)}", file=sys.stderr)
            return cli.EXIT_FAILED
        print(f"report: {shown(page)}")
    if interrupted:
        print(f"{PROG}: interrupted; the {len(rows)} photo(s) finished are in summary.csv and the report; --resume "
              "does the rest", file=sys.stderr)
        return EXIT_INTERRUPTED
    return cli.EXIT_FAILED if failed else cli.EXIT_OK


def main(argv=None):
    return cli.run(PROG, run, argv)


if __name__ == "__main__":
    sys.exit(main())
