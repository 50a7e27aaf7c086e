"""make_heatmap's summary.csv: its columns, how it is read and written (appended to row by row, per process under
torchrun, merged).

Shared by the run (run.py and processing.py), which writes the file, and report.py, which builds index.html from it.
A photo is known by its ``source`` (its path relative to the output folder), so photos of different --input folders
that share a relative ``file`` name are told apart. Its outputs are named by outputs.py: the prefix output_stems
chose when the photo was done is stored in its row's ``output`` column, the kinds of file written in
``output_kinds``; the report reads them from there.
"""

import csv
import hashlib
import io
import os
import re
from pathlib import Path

from pieanet.utils.errors import EXIT_FAILED, EXIT_USAGE, PieaError, UsageError
from pieanet.utils.folders import LOCK_NAME, NOFOLLOW, check_bookkeeping, open_append
from pieanet.heatmaps.ledger import LEDGER_NAME
from pieanet.utils.image_io import atomic_write, file_sha256
from pieanet.utils.safety import TextFileError, csv_cell, csv_value, first_line, printable, regular_or_absent

SUMMARY_NAME = "summary.csv"
PART_NAME = re.compile(r"summary\.rank(\d+)\.csv")  # one process's rows while a torchrun run works
SUMMARY_FIELDS = [
    "file",
    "width",
    "height",
    "mean_residual",
    "mean_abs_residual",
    "pct_over",
    "pct_under",
    "score",
    "stops",
    "vmax",
    "pct_raw_clipped",
    "status",
    "error",
    "source",
    "output",
    "settings",
    "photo_sha256",
    "output_kinds",
]
# the columns of earlier summary.csv files: before the stops column, before photo_sha256 (the photo's content, which
# --resume compares), and before output_kinds (the files written, outputs.py). Read with the missing cells
# empty (so --resume redoes those photos: their rows lack the stops, or their content is unknown; the report finds an
# old row's files by its settings, outputs.recorded_files), and rewritten with every column before the first row is
# appended.
EARLIER_FIELDS = [
    [field for field in SUMMARY_FIELDS if field not in ("stops", "photo_sha256", "output_kinds")],
    SUMMARY_FIELDS[:-2],
    SUMMARY_FIELDS[:-1],
]


class UnreadableSummary(PieaError):
    """A summary file that cannot be read as CSV text; the message names the file."""

    exit_code = EXIT_USAGE


def photo_keys(path, base, output_dir):
    """(file, source) of the photo at ``path``: its path relative to the input folder ``base`` (summary.csv's file
    column) and relative to the output folder (its source column; absolute where there is no relative path, as
    between drives on Windows), both printable POSIX text."""
    try:
        source = os.path.relpath(os.path.abspath(path), os.path.abspath(output_dir))
    except ValueError:
        source = os.path.abspath(path)
    return printable(Path(path).relative_to(base).as_posix()), printable(Path(source).as_posix())


def content_digest(path, data=None):
    """ "sha256:" and the first 16 hex digits of the SHA-256 of the file's content: ``data`` (its bytes, already
    read) when given, else the file at ``path`` read in 1 MiB blocks."""
    return f"sha256:{(file_sha256(path) if data is None else hashlib.sha256(data).hexdigest())[:16]}"


def taken_stems(rows):
    """{output prefix: source} of the rows whose photo wrote outputs (the later row where two name one prefix)."""
    return {row["output"]: row["source"] for row in rows if row.get("output")}


def read_table(path, missing_ok=False):
    """(column names, rows as {column: text}) of a summary file, in file order; a row with another number of cells
    than the header (one cut short by a kill) is left out. A missing file is ([], []) with ``missing_ok``. Cells
    are the text that was written (csv_value undoes csv_cell's formula guard). A FIFO or device is refused by its
    type before it is opened. Raises UnreadableSummary."""
    try:
        regular_or_absent(path, "summary")
        with open(os.open(path, os.O_RDONLY | NOFOLLOW), newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            return header, [
                dict(zip(header, map(csv_value, values))) for values in reader if len(values) == len(header)
            ]
    except TextFileError as e:
        raise UnreadableSummary(str(e)) from e
    except FileNotFoundError as e:
        if missing_ok:
            return [], []
        raise UnreadableSummary(f"{path}: cannot read it as a summary (no such file)") from e
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        reason = getattr(e, "strerror", None) or first_line(e, 200)
        raise UnreadableSummary(f"{path}: cannot read it as a summary ({reason})") from e


class SummaryError(PieaError):
    """summary.csv could not be written: the run stops (exit 1)."""

    exit_code = EXIT_FAILED


def check_header(path, header):
    if header != SUMMARY_FIELDS and header not in EARLIER_FIELDS:
        raise UsageError(
            f"{path}: an existing summary.csv with other columns ({', '.join(header)[:120]}); move "
            "it away or choose another --output"
        )


def summary_values(row):
    """The cells of ``row`` as summary.csv holds them: floats to 6 decimals, text as valid UTF-8 (printable) that no
    spreadsheet runs as a formula (csv_cell; read_table reads it back unchanged)."""
    return [
        f"{v:.6f}" if isinstance(v, float) else csv_cell(printable(v)) if isinstance(v, str) else v
        for v in (row.get(k, "") for k in SUMMARY_FIELDS)
    ]


def read_summary(path):
    """The rows of a summary file as dicts of text ([] when there is none); a row cut short by a kill is left out.
    A file with other columns is a UsageError, as for SummaryLog."""
    try:
        header, rows = read_table(path, missing_ok=True)
    except UnreadableSummary as e:
        raise UsageError(f"{e}; move it away or choose another --output") from e
    if header:
        check_header(path, header)
    return [dict.fromkeys(SUMMARY_FIELDS, "") | row for row in rows]


def write_summary(path, rows):
    """Replace the summary at ``path`` by ``rows``, atomically: a kill leaves the old file or the new one."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(SUMMARY_FIELDS)
    writer.writerows(summary_values(row) for row in rows)
    with atomic_write(path) as tmp:
        Path(tmp).write_bytes(text.getvalue().encode("utf-8"))


def part_path(output, rank):
    return output / f"summary.rank{rank}.csv"


def leftover_parts(output):
    """The per-process summaries in ``output`` that a killed torchrun run did not merge, in rank order."""
    ranks = sorted(int(match.group(1)) for match in map(PART_NAME.fullmatch, os.listdir(output)) if match)
    return [part_path(output, rank) for rank in ranks]


def check_bookkeeping_files(output):
    """Refuse the run (folders.WrongFileType, exit 2) when the summary, a part, the ledger or the lock file in
    ``output`` is there but no regular file (a link, FIFO, folder...), or the ledger is another user's."""
    for name in (SUMMARY_NAME, LOCK_NAME, *(n for n in os.listdir(output) if PART_NAME.fullmatch(n))):
        check_bookkeeping(Path(output) / name, "summary" if name != LOCK_NAME else "lock file")
    check_bookkeeping(Path(output) / LEDGER_NAME, "record of its outputs", own=True)


class SummaryLog:
    """summary.csv, appended to one complete row at a time, so an interrupted run keeps what it finished and runs
    into the same folder keep each other's rows. A row that cannot be written whole (a full disk) is cut back off,
    so the file never ends in half a row. A summary.csv with other columns is a setup error; one of an earlier
    version (EARLIER_FIELDS) is first rewritten with today's columns, its rows' new cells empty.

    The file appended to is watched: when the name no longer leads to it, or its size is not the one this run left
    (another program, an editor saving, replaced or truncated it), the whole summary is rewritten from the run's
    own records (the rows it found and those it added) before the next row, and ``notes`` says so; no row is lost
    to a write into a file nobody sees any more."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            regular_or_absent(self.path, "summary")
            if not self.path.is_symlink() and self.path.is_file() and self.path.stat().st_size > 0:
                with open(os.open(self.path, os.O_RDONLY | NOFOLLOW), newline="", encoding="utf-8") as f:
                    header = next(csv.reader(f), [])
                check_header(self.path, header)
                if header != SUMMARY_FIELDS:  # an earlier version's columns: rewritten with every column first
                    write_summary(self.path, read_summary(self.path))
                self.fd = open_append(self.path, create=False)
            else:
                self.fd = open_append(self.path)
                os.ftruncate(self.fd, 0)
                self._write(SUMMARY_FIELDS)
            self.rows = read_summary(self.path)  # the run's records, to rewrite the file from if it is replaced
        except (OSError, UnicodeDecodeError, csv.Error, TextFileError) as e:
            reason = "a symbolic link" if self.path.is_symlink() else first_line(e, 200)
            raise UsageError(
                f"{self.path}: cannot use it as the summary ({reason}); move it away or choose another --output"
            ) from e
        self.notes = []
        self._remember()

    def _remember(self):
        """Note the identity and size of the file as this run left it."""
        st = os.fstat(self.fd)
        self.left = (st.st_dev, st.st_ino, st.st_size)

    def replaced(self):
        """Whether the file at the summary's name is not the one this run appends to, or not as this run left it."""
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except OSError:
            return True
        return (st.st_dev, st.st_ino, st.st_size) != self.left

    def restore(self):
        """Rewrite the whole summary from the run's records (atomically) and append to the new file from now on."""
        write_summary(self.path, self.rows)
        fd = open_append(self.path, create=False)
        os.close(self.fd)
        self.fd = fd
        self._remember()
        self.notes.append(
            f"{self.path}: replaced or truncated by another program during the run; rewritten whole "
            f"from this run's records ({len(self.rows)} rows), nothing lost"
        )

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
            if self.replaced():
                self.restore()
            self._write(summary_values(row))
            self.rows.append(row)
            self._remember()
        except OSError as e:
            raise SummaryError(
                f"{self.path}: could not append a row ({e.strerror or first_line(e, 200)}); stopped, "
                "the rows before it are kept"
            ) from e

    def close(self):
        """Stop appending; a summary replaced after the last row is rewritten first."""
        try:
            if self.replaced():
                self.restore()
        except OSError as e:
            raise SummaryError(
                f"{self.path}: replaced during the run and could not be rewritten ({e.strerror or first_line(e, 200)})"
            ) from e
        finally:
            os.close(self.fd)


def merge_parts(output, world_size, order):
    """Append every process's rows to summary.csv, sorted by ``order`` (the order one process writes them in), in
    one atomic replacement, then remove the parts; a run killed before that leaves the parts to the next run."""
    parts = [part_path(output, rank) for rank in range(world_size)]
    rows = sorted((row for part in parts for row in read_summary(part)), key=order)
    write_summary(output / SUMMARY_NAME, read_summary(output / SUMMARY_NAME) + rows)
    for part in parts:
        part.unlink(missing_ok=True)
