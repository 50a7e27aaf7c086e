"""The names of the files make_heatmap writes for each photo: the one home of that decision (no torch).

A photo's files are ``<output folder>/<prefix>_<kind>``: the prefix is the photo's sub-folder and stem, made unique
by output_stems (stored in summary.csv's ``output`` column), the kind one of KINDS; the kinds a photo got are stored
in its row's ``output_kinds`` column (kinds_text), which index.html reads (recorded_files) instead of looking for
files. writing.py writes the files, summary.py stores the names, report.py shows them.
"""

import itertools
import os
import posixpath
from collections import Counter

FORMATS = ("png", "jpg")  # --format: the file type of the heatmap and the overlay
# what each file holds (its role): the heatmap, the heatmap over the photo, the heatmap with a colour bar, the map
HEATMAP, OVERLAY, COLORBAR, RESIDUAL = "exposure", "overlay", "colorbar", "residual"
# every kind of file make_heatmap can write for a photo, the name after "<prefix>_"
KINDS = (
    *(f"{HEATMAP}.{ext}" for ext in FORMATS),
    *(f"{OVERLAY}.{ext}" for ext in FORMATS),
    f"{COLORBAR}.png",
    f"{RESIDUAL}.npy",
)


def requested_kinds(file_format="png", overlay=False, colorbar=False, residual=False):
    """The kinds of file make_heatmap writes for each photo under these options, in the order it writes them: the
    heatmap (in ``file_format``), the residual map (.npy), the overlay (in ``file_format``), the colour-bar figure
    (always PNG)."""
    if file_format not in FORMATS:
        raise ValueError(f"file format {file_format!r}; expected one of {', '.join(FORMATS)}")
    return (
        [f"{HEATMAP}.{file_format}"]
        + [f"{RESIDUAL}.npy"] * residual
        + [f"{OVERLAY}.{file_format}"] * overlay
        + [f"{COLORBAR}.png"] * colorbar
    )


def role(kind):
    """What a file of ``kind`` holds: HEATMAP, OVERLAY, COLORBAR or RESIDUAL."""
    return kind.partition(".")[0]


def file_name(prefix, kind):
    """The file of ``kind`` for the output ``prefix`` (text; a prefix with sub-folders gives a relative path)."""
    return f"{prefix}_{kind}"


def output_path(stem, kind):
    """``stem`` (a path: folder and prefix) with the file name of ``kind``."""
    return stem.with_name(file_name(stem.name, kind))


def kinds_text(kinds):
    """summary.csv's output_kinds cell: the kinds, space-separated (a kind holds no space, a prefix may)."""
    return " ".join(kinds)


def recorded_files(row):
    """{role: file name relative to the output folder} of the files a summary.csv row records for its photo: its
    output prefix with each kind in its output_kinds column (tokens that are no kind are ignored). A row written
    before that column (empty there, an output prefix set) has the heatmap and overlay in the format its settings
    name (planning.result_settings: jpeg_quality is '-' for PNG, a number for JPEG); the overlay was optional,
    so such a row's files may be missing. A row without an output prefix (a failed photo) has none."""
    prefix = row.get("output") or ""
    if not prefix:
        return {}
    recorded = (row.get("output_kinds") or "").split()
    if not recorded:
        settings = dict(item.partition("=")[::2] for item in (row.get("settings") or "").split())
        file_format = "png" if settings.get("jpeg_quality", "-") == "-" else "jpg"
        recorded = [f"{HEATMAP}.{file_format}", f"{OVERLAY}.{file_format}"]
    return {role(kind): file_name(prefix, kind) for kind in recorded if kind in KINDS}


def output_stems(files, sources, taken=None, occupied=None):
    """The output prefix of each photo (``files``: summary file names; ``sources``: their source keys), relative to
    the output folder: the sub-folder and stem of its file (sub/a for sub/a.jpg). Where that prefix is also another
    photo's of this run (a.jpg and a.png in one folder, in any letter case), or ``taken`` ({prefix: source} of the
    rows already in the folder's summary) gives it to a photo with another source, or it is not in ``taken`` and
    ``occupied(prefix)`` says files of that prefix are there already (a user's own, which the tool never replaces),
    the photo's extension is added (sub/a_jpg), then a count (sub/a_jpg_2) until the prefix is free, so no photo's
    outputs replace another's or a file the tool did not make. ``occupied`` is asked also where ``taken`` gives the
    prefix to the photo's own source: a line there is no proof that the files are the tool's."""
    taken = {prefix.lower(): source for prefix, source in (taken or {}).items()}
    occupied = occupied or (lambda prefix: False)

    def free(name, source):
        return taken.get(name.lower(), source) == source and not occupied(name)

    plain = [posixpath.splitext(file)[0] for file in files]
    shared = Counter(prefix.lower() for prefix in plain)
    given, stems = set(), []
    for file, source, prefix in zip(files, sources, plain):
        extended = f"{prefix}_{posixpath.splitext(file)[1].lstrip('.').lower()}"
        candidates = itertools.chain(
            [prefix] if shared[prefix.lower()] == 1 else [], [extended], (f"{extended}_{n}" for n in itertools.count(2))
        )
        stem = next(name for name in candidates if name.lower() not in given and free(name, source))
        given.add(stem.lower())
        stems.append(stem)
    return stems


def occupied_prefixes(output, ours=lambda name: False):
    """occupied(prefix) for output_stems: whether a file named like one of the prefix's outputs (any kind, any letter
    case) is in the ``output`` folder (a Path) already and is not one the tool wrote (``ours``(its name relative to
    the folder): ledger.py's record; a file of another letter case is never the tool's). (A prefix whose
    sub-folder is a link is not occupied: no other prefix would be better, and make_heatmap refuses to write through
    the link, so the photo fails with that reason.)"""
    listings = {}

    def occupied(prefix):
        stem = output / prefix
        if stem.parent not in listings:
            try:
                listings[stem.parent] = {name.lower() for name in os.listdir(stem.parent)}
            except OSError:
                listings[stem.parent] = set()
        return any(
            file_name(stem.name, kind).lower() in listings[stem.parent] and not ours(file_name(prefix, kind))
            for kind in KINDS
        )

    return occupied
