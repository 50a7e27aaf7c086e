"""make_heatmap's record of the outputs it wrote (``<output>/.pieanet-outputs.csv``): the only proof that a file in
the output folder is the tool's, checked before any file there is replaced or removed (docs/safety.md, "Files and
folders").

Two kinds of line, appended (O_APPEND, never through a link) as the run goes:

- ``prefix,source``: a photo's output prefix, noted before its files are written; it reserves the prefix for that
  photo (outputs.py, output_stems) but proves nothing about a file, as anyone can write such a line;
- ``file,size,sha256:<hex>``: one output as written (its path relative to the folder, its size and content hash),
  noted before the finished file takes its name. A file there is the tool's only when its size and content are those
  of its latest such line: a planted line cannot make a user's file, which the tool never wrote, match.

Lines naming a path outside the folder (absolute, or with '..') are refused (ignored). The ledger must be a regular
file of the user running the tool (folders.check_bookkeeping), or the run is refused before any work (exit 2).
"""

import csv
import io
import os
from contextlib import contextmanager
from pathlib import Path, PurePosixPath, PureWindowsPath

from pieanet.utils.folders import check_bookkeeping, open_append, open_regular
from pieanet.utils.image_io import atomic_write, file_sha256
from pieanet.utils.safety import shown

LEDGER_NAME = ".pieanet-outputs.csv"


def inside_name(name):
    """Whether ``name`` (a ledger entry) is a relative path that stays in the folder (no '..', not absolute)."""
    paths = [PurePosixPath(name)] + ([PureWindowsPath(name)] if os.name == "nt" else [])
    return bool(name) and not any(path.is_absolute() or path.anchor or ".." in path.parts for path in paths)


def read_ledger(output):
    """({prefix: source}, {file: (size, "sha256:<hex>")}) of the folder's ledger, the later line winning; empty
    without one. Raises folders.WrongFileType for a ledger that is no regular file of this user."""
    path = Path(output) / LEDGER_NAME
    check_bookkeeping(path, "record of its outputs", own=True)
    entries, written = {}, {}
    try:
        with open(open_regular(path, os.O_RDONLY, "record of its outputs"), newline="", encoding="utf-8") as f:
            for values in csv.reader(f):
                if len(values) == 2 and inside_name(values[0]):
                    entries[values[0]] = values[1]
                elif len(values) == 3 and inside_name(values[0]) and values[1].isdigit():
                    written[values[0]] = (int(values[1]), values[2])
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError, csv.Error):  # an unreadable ledger proves nothing
        return {}, {}
    return entries, written


def ledger(output):
    """{prefix: source} of the folder's ledger (the later line where two name one prefix); {} without one."""
    return read_ledger(output)[0]


def _append(output, values):
    line = io.StringIO()
    csv.writer(line).writerow(values)
    fd = open_append(Path(output) / LEDGER_NAME)
    try:
        os.write(fd, line.getvalue().encode("utf-8"))
    finally:
        os.close(fd)


def note_output(output, prefix, source):
    """Append (prefix, source) to the folder's ledger before the photo's files are written (O_NOFOLLOW, O_APPEND)."""
    _append(output, [prefix, source])


class OutputLedger:
    """The files this tool can prove it wrote in ``output``: ``owns`` before a file is replaced or removed,
    ``writing`` to write one (atomically) and record it."""

    def __init__(self, output):
        self.output = Path(output)
        self.written = read_ledger(self.output)[1]

    def name(self, path):
        return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(self.output))).as_posix()

    def recorded_size(self, name):
        """Whether ``name`` (relative to the folder) is a regular file of the size its latest record gives: cheap
        (no hashing), for choosing prefixes; ``owns`` is the proof."""
        try:
            st = os.lstat(self.output / name)
        except OSError:
            return False
        return (
            name in self.written
            and os.path.isfile(self.output / name)
            and not os.path.islink(self.output / name)
            and st.st_size == self.written[name][0]
        )

    def owns(self, path):
        """Whether the file at ``path`` is one this tool wrote: a regular file (not a link) with the size and
        content hash of its latest record."""
        name = self.name(path)
        if not self.recorded_size(name):
            return False
        try:
            return f"sha256:{file_sha256(self.output / name)}" == self.written[name][1]
        except OSError:
            return False

    @contextmanager
    def writing(self, path):
        """A temporary path to write the output ``path`` into; when the block succeeds its size and hash are
        recorded, then it takes the name (atomic_write). Raises FileExistsError, before anything is written, when a
        file the tool cannot prove it wrote is there."""
        if os.path.lexists(path) and not self.owns(path):
            raise FileExistsError(
                f"{self.name(path)} is there and is not a file this tool wrote (its record of "
                "outputs has not its size and content); it is not replaced"
            )
        with atomic_write(path) as target:
            yield target
            size, digest = os.path.getsize(target), file_sha256(target)
            self.written[self.name(path)] = (size, f"sha256:{digest}")
            _append(self.output, [self.name(path), size, f"sha256:{digest}"])


def tidy_ledger(output):
    """Rewrite the ledger sorted, with each prefix once and the latest record of each output still there (so the
    same outputs give the same file). Returns None, or the line to print when it could not be rewritten (a full
    disk): the ledger then stays as it was, which proves the same."""
    entries, written = read_ledger(output)
    if entries or written:
        text = io.StringIO()
        csv.writer(text).writerows(sorted(entries.items()))
        csv.writer(text).writerows(
            [name, size, digest]
            for name, (size, digest) in sorted(written.items())
            if os.path.lexists(Path(output) / name)
        )
        try:
            with atomic_write(Path(output) / LEDGER_NAME) as tmp:
                Path(tmp).write_bytes(text.getvalue().encode("utf-8"))
        except OSError as e:
            return (
                f"{shown(Path(output) / LEDGER_NAME)}: could not be tidied ({e.strerror or type(e).__name__}); "
                "kept as it was (it still records every output)"
            )
    return None
