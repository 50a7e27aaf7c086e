"""Planning a run before any photo is done: the settings that decide a photo's numbers and files (summary.csv's
settings column), the rows of earlier runs (summary.csv and the parts a killed torchrun run left), and which photos
to do: all, or with --resume those without a matching ok row and every requested file."""

from pieanet.heatmaps.summary import SUMMARY_NAME, content_digest, leftover_parts, read_summary
from pieanet.heatmaps.writing import DEFAULT_JPEG_QUALITY, requested_outputs


def result_settings(args, checkpoint):
    """summary.csv's settings text: the options that change a photo's numbers or files but not their names, the
    checkpoint by the SHA-256 of its content (which also decides the backend: an ONNX file runs in onnxruntime, any
    other in torch), so a copy counts as the same and a retrained file as another. --resume redoes a photo whose row
    has other settings."""
    quality = (args.jpeg_quality or DEFAULT_JPEG_QUALITY) if args.format == "jpg" else "-"
    size = "native" if args.size == 0 else (args.size or "model")  # --size native is 0, no size is None
    settings = {
        "checkpoint": content_digest(checkpoint),
        "size": size,
        "tile": args.tile,
        "threshold": args.threshold,
        "vmax": args.vmax,
        "raw_clipping": "yes" if args.raw_clipping else "no",
        "jpeg_quality": quality,
        "map": args.map,
        "alpha": args.alpha,
    }
    return " ".join(f"{key}={value}" for key, value in settings.items())


def earlier_rows(output, position):
    """(summary.csv's rows, the parts a killed torchrun run left, their rows in the order one process writes them;
    ``position``: {source: index} of this run's photos)."""
    parts = leftover_parts(output)
    carried = sorted(
        (row for part in parts for row in read_summary(part)),
        key=lambda row: position.get(row["source"], len(position)),
    )
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
    done = {
        position[source]
        for source, n in last_ok.items()
        if source in position
        and rows[n]["output"] == stems[position[source]]
        and rows[n]["settings"] == settings
        and all(path.is_file() for path in requested_outputs(args.output / stems[position[source]], args))
        and same_content(paths[position[source]], rows[n]["photo_sha256"])
    }
    kept = [
        row
        for n, row in enumerate(rows)
        if row["source"] not in position or (position[row["source"]] in done and last_ok[row["source"]] == n)
    ]
    return (kept if parts or len(kept) < len(existing) else None), [i for i in everything if i not in done]
