"""Processing the photos of a run: each batch read and predicted at the working size on a worker thread
(prepare_batch; overlap.py) while the main thread makes the full-size maps, writes each photo's files (writing.py),
numbers and summary row in the photos' order; a photo that fails is one row with status failed, the others go on."""

import numpy as np

from pieanet import runtime
from pieanet.heatmaps import outputs
from pieanet.heatmaps.ledger import OutputLedger, note_output
from pieanet.heatmaps.overlap import in_order
from pieanet.heatmaps.summary import SUMMARY_FIELDS, content_digest
from pieanet.heatmaps.writing import remove, write_outputs
from pieanet.models.full_size import photo_grey  # uint8 or float photo: grey in [0, 1]
from pieanet.utils import cli
from pieanet.utils.alpha import judged_photo
from pieanet.utils.exposure import bound_residual, residual_stats
from pieanet.utils.image_io import ImageLoadError, photo_bytes

RAW_CLIPPED_MARGIN = 1e-6  # --raw-clipping: clipped pixels get r <= -threshold - this, strictly over the threshold
# threads that read and predict the next batches while the main thread writes files (bench/speed.py, README "Speed")
PREPARE_WORKERS = 1


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

    batches = [photos[start : start + args.batch_size] for start in range(0, len(photos), args.batch_size)]
    for unreadable, batch in in_order(
        lambda photos: prepare_batch(photos, model, args, settings),
        batches,
        workers=PREPARE_WORKERS,
        ahead=PREPARE_WORKERS,
    ):
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
                written, kinds, vmax = write_outputs(
                    args.output / prefix, image, residual, args, prefix in owned, proof, unjudged
                )
            except (OSError, ValueError, RuntimeError, MemoryError) as e:
                finish(path, row, f"could not write outputs ({cli.one_line(e)})")
                continue
            try:
                row.update(
                    residual_stats(residual, args.threshold, image, unjudged),
                    vmax=vmax,
                    status="ok",
                    output=prefix,
                    output_kinds=outputs.kinds_text(kinds),
                )
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
    residuals = runtime.predict(
        model, [image for *_, image, _, _ in loaded], args.size, args.tile, args.batch_size, deferred=True
    )
    return unreadable, [(*photo, residual) for photo, residual in zip(loaded, residuals)]
