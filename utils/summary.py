"""make_heatmap's summary.csv: its columns, how it is read, and how each photo's output files are named.

Shared by make_heatmap.py, which writes the file, and utils/report.py, which builds index.html from it. A photo is
known by its ``source`` (its path relative to the output folder), so photos of different --input folders that share a
relative ``file`` name are told apart. Its outputs are ``<output folder>/<output>_exposure.png`` etc., with ``output``
the prefix output_stems chose when the photo was done, stored in its row; the report reads it from there.
"""
import csv
import itertools
import os
import posixpath
from collections import Counter
from pathlib import Path

SUMMARY_NAME = "summary.csv"
SUMMARY_FIELDS = ["file", "width", "height", "mean_residual", "mean_abs_residual", "pct_over", "pct_under", "score",
                  "vmax", "pct_raw_clipped", "status", "error", "source", "output", "settings"]


class UnreadableSummary(Exception):
    """A summary file that cannot be read as CSV text; the message names the file."""


def printable(text):
    """``text`` as valid UTF-8 text: bytes of a file name that are not UTF-8 (which Python holds as surrogate
    escapes) become the four characters \\xNN, so summary.csv and index.html stay readable by every tool."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that stands for no byte (not from a file name)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def photo_keys(path, base, output_dir):
    """(file, source) of the photo at ``path``: its path relative to the input folder ``base`` (summary.csv's file
    column) and relative to the output folder (its source column; absolute where there is no relative path, as
    between drives on Windows), both printable POSIX text."""
    try:
        source = os.path.relpath(os.path.abspath(path), os.path.abspath(output_dir))
    except ValueError:
        source = os.path.abspath(path)
    return printable(Path(path).relative_to(base).as_posix()), printable(Path(source).as_posix())


def output_stems(files, sources, taken=None):
    """The output prefix of each photo (``files``: summary file names; ``sources``: their source keys), relative to
    the output folder: the sub-folder and stem of its file (sub/a for sub/a.jpg). Where that prefix is also another
    photo's of this run (a.jpg and a.png in one folder, in any letter case) or ``taken`` ({prefix: source} of the
    rows already in the folder's summary) gives it to a photo with another source, the photo's extension is added
    (sub/a_jpg), then a count (sub/a_jpg_2) until the prefix is free, so no photo's outputs replace another's."""
    taken = {prefix.lower(): source for prefix, source in (taken or {}).items()}
    plain = [posixpath.splitext(file)[0] for file in files]
    shared = Counter(prefix.lower() for prefix in plain)
    given, stems = set(), []
    for file, source, prefix in zip(files, sources, plain):
        extended = f"{prefix}_{posixpath.splitext(file)[1].lstrip('.').lower()}"
        candidates = itertools.chain([prefix] if shared[prefix.lower()] == 1 else [], [extended],
                                     (f"{extended}_{n}" for n in itertools.count(2)))
        stem = next(name for name in candidates
                    if name.lower() not in given and taken.get(name.lower(), source) == source)
        given.add(stem.lower())
        stems.append(stem)
    return stems


def taken_stems(rows):
    """{output prefix: source} of the rows whose photo wrote outputs (the later row where two name one prefix)."""
    return {row["output"]: row["source"] for row in rows if row.get("output")}


def read_table(path, missing_ok=False):
    """(column names, rows as {column: text}) of a summary file, in file order; a row with another number of cells
    than the header (one cut short by a kill) is left out. A missing file is ([], []) with ``missing_ok``. Raises
    UnreadableSummary."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            return header, [dict(zip(header, values)) for values in reader if len(values) == len(header)]
    except FileNotFoundError:
        if missing_ok:
            return [], []
        raise UnreadableSummary(f"{path}: cannot read it as a summary (no such file)") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        reason = getattr(e, "strerror", None) or (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UnreadableSummary(f"{path}: cannot read it as a summary ({reason})") from None
