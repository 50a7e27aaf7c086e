"""Photos that are their own ideal: how often a model cries wolf on well-exposed photos.

A photo is **judged well exposed** when at most ``share_limit`` percent of its pixels have |r| > ``threshold`` and its
mean residual is within ``mean_limit`` of zero (defaults 10 %, 0.1, 0.05); otherwise it is *flagged*. On a folder of
photos that people published as they wanted them (each its own ideal), the false-alarm rate is the percentage of photos
flagged. Used by ``evaluate.py --well-exposed``, ``bench/accuracy.py`` and training's extra validation sets
(``data.extra_valid.<name>: {root: DIR, well_exposed: true}``), so the three report the same numbers.

A folder: its photos are the images directly in ``DIR/images/`` when that folder exists (the development sets' layout),
else those directly in ``DIR``. An optional ``DIR/manifest.csv`` with a ``file`` column (names relative to that photo
folder) and a ``key`` column (e.g. high / normal / low) splits the rate by key; a photo the manifest does not list has
no key, and a listed photo that is missing is reported as failed.
"""

import csv
import io
import math
from pathlib import Path

import numpy as np

from pieanet.utils.errors import EXIT_USAGE, PieaError
from pieanet.utils.exposure import DEFAULT_THRESHOLD, residual_stats
from pieanet.utils.image_io import atomic_write, list_images
from pieanet.utils.safety import csv_records, printable

DEFAULT_SHARE_LIMIT = 10.0  # percent of a photo's pixels that may have |r| > threshold
DEFAULT_MEAN_LIMIT = 0.05  # largest |mean r| of a photo judged well exposed
MANIFEST = "manifest.csv"
CSV_NAME = "well_exposed.csv"
CSV_FIELDS = ["method", "file", "key", "mean_residual", "pct_flagged", "pct_over", "pct_under", "flagged"]


class FolderError(PieaError, ValueError):
    """A folder of well-exposed photos (or its manifest) that cannot be used; the message names the file."""

    exit_code = EXIT_USAGE


def verdict(
    residual, threshold=DEFAULT_THRESHOLD, share_limit=DEFAULT_SHARE_LIMIT, mean_limit=DEFAULT_MEAN_LIMIT, photo=None
):
    """One photo's numbers: mean_residual, pct_flagged (percent of pixels with |r| > threshold), pct_over, pct_under
    and flagged (True when it is not judged well exposed); with ``photo`` also stops (the correction in stops the
    map asks for, utils.exposure.correction_stops)."""
    r = np.asarray(residual)
    stats = residual_stats(r, threshold, photo)
    n_flagged = np.count_nonzero(np.abs(r) > np.float64(threshold))
    found = {
        "mean_residual": stats["mean_residual"],
        "pct_flagged": float(n_flagged * 100.0 / r.size),
        "pct_over": stats["pct_over"],
        "pct_under": stats["pct_under"],
        "flagged": bool(n_flagged * 100.0 > share_limit * r.size or abs(stats["mean_residual"]) > mean_limit),
    }
    if photo is not None:
        found["stops"] = stats["stops"]
    return found


def photo_folder(root):
    """Where a folder's photos are: ``root/images`` when it is a folder, else ``root``."""
    root = Path(root)
    return root / "images" if (root / "images").is_dir() else root


def read_manifest(path):
    """{file name: key} of a manifest (None when it has no key column), and the names in its order."""
    with csv_records(path, "a manifest with columns file, key", FolderError) as reader:
        columns = reader.fieldnames
        if "file" not in columns:
            raise FolderError(
                f"{path}: no 'file' column; expected a CSV with columns file and (optionally) key "
                f"(found: {', '.join(columns) or 'no header'})"
            )
        rows = [((record.get("file") or "").strip(), (record.get("key") or "").strip()) for record in reader]
    has_key = "key" in columns
    return {name: (key if has_key else None) for name, key in rows if name}, [name for name, _ in rows if name]


def list_photos(root):
    """([(path, name, key or None)], [names the manifest lists that are not found]) of a folder; raises FolderError
    when it is missing or holds no photos."""
    root = Path(root)
    if not root.is_dir():
        raise FolderError(f"{root}: no such folder; expected a folder of well-exposed photos")
    folder = photo_folder(root)
    try:
        paths = list_images(folder)
    except OSError as e:
        raise FolderError(f"{folder}: cannot be read ({e.strerror})") from e
    keys, listed = read_manifest(root / MANIFEST) if (root / MANIFEST).is_file() else ({}, [])
    photos = [
        (path, path.relative_to(folder).as_posix(), keys.get(path.relative_to(folder).as_posix())) for path in paths
    ]
    found = {name for _, name, _ in photos}
    missing = [name for name in listed if name not in found]
    if not photos:
        raise FolderError(
            f"{folder}: no images found; expected photos ending in .jpg, .jpeg, .png, .bmp, .tif, .tiff or .webp"
        )
    return photos, missing


def summarise(judged):
    """The false-alarm numbers of [(key or None, verdict)]: n_images, n_flagged, false_alarm_pct (percent of photos
    flagged), median_pct_flagged (the median photo's percent of flagged pixels) and per_key (the same by key, keys
    sorted; photos without a key only count overall)."""

    def numbers(verdicts):
        n_flagged = sum(v["flagged"] for v in verdicts)
        return {
            "n_images": len(verdicts),
            "n_flagged": n_flagged,
            "false_alarm_pct": 100.0 * n_flagged / len(verdicts) if verdicts else float("nan"),
            "median_pct_flagged": float(np.median([v["pct_flagged"] for v in verdicts])) if verdicts else float("nan"),
        }

    result = numbers([v for _, v in judged])
    stops = [v["stops"] for _, v in judged if math.isfinite(v.get("stops", math.nan))]
    if stops:  # what the photos were asked for, in stops: a well-exposed photo should get about 0
        result["mean_stops"], result["median_stops"] = float(np.mean(stops)), float(np.median(stops))
        result["not_ok_pct"] = 100.0 * sum(abs(value) > 1 / 3 for value in stops) / len(stops)  # +/- 1/3 stop
    keys = sorted({key for key, _ in judged if key})
    result["per_key"] = {key: numbers([v for k, v in judged if k == key]) for key in keys}
    return result


def describe(summary):
    """One line: '81.0 % of 42 photos flagged (high 100.0 %, low 100.0 %, normal 71.4 %), median photo 63.2 %
    of pixels flagged'."""
    keys = ", ".join(f"{key} {one['false_alarm_pct']:.1f} %" for key, one in summary["per_key"].items())
    return (
        f"{summary['false_alarm_pct']:.1f} % of {summary['n_images']} photos flagged"
        + (f" ({keys})" if keys else "")
        + f", median photo {summary['median_pct_flagged']:.1f} % of pixels flagged"
    )


def write_csv(path, rows):
    """The per-photo table (CSV_FIELDS; rows are dicts with method, file, key and a verdict's numbers), atomically."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for row in rows:
        writer.writerow(
            [
                row["method"],
                printable(row["file"]),
                row["key"] or "",
                f"{row['mean_residual']:.6f}",
                f"{row['pct_flagged']:.4f}",
                f"{row['pct_over']:.4f}",
                f"{row['pct_under']:.4f}",
                "yes" if row["flagged"] else "no",
            ]
        )
    with atomic_write(path) as tmp:
        Path(tmp).write_text(text.getvalue(), encoding="utf-8")
