"""What the tools hand to a spreadsheet, a markdown viewer, a terminal or matplotlib, and how they read small text
files: one home for each rule (docs/safety.md, "Inputs and outputs").

Output encoding
    ``csv_cell`` / ``csv_value``: a text cell that a spreadsheet would run as a formula (first character ``=``,
    ``+``, ``-``, ``@``, a tab or a carriage return, also after leading spaces) gets a leading apostrophe, the
    convention spreadsheets show as text; a cell that already starts with an apostrophe gets one more, so reading
    back (``csv_value``: one leading apostrophe removed) gives exactly the text written. Plain numbers (``-0.25``)
    stay numbers.
    ``md_cell``: a markdown table cell (``|``, backslashes and line breaks escaped).
    ``shown``: text for a terminal: control characters (C0, DEL, C1: escape sequences, bells, line breaks) and bytes
    of a file name that are not UTF-8 become visible escapes (``\\x1b``), so a file name cannot set a window title,
    colours or the clipboard.
    ``printable``: valid UTF-8 text of a file name (undecodable bytes as ``\\xNN``), for files the tools write.
    ``brief``: a bounded ``repr`` for error messages (a YAML alias bomb formats in microseconds).
    Matplotlib text is never parsed as mathtext: the figures pass ``parse_math=False`` (``MATPLOTLIB_TEXT``).

Bounded reading
    ``read_text``: a small text file (config, rule file) read only if it is a regular file (a FIFO, device or
    folder is refused by type before anything is read) and at most ``limit`` bytes, as UTF-8; raises ``TextFileError``
    with one line naming the file.
    ``csv_records``: a user's CSV table (an IEA40K split list, a well-exposed manifest) as a csv.DictReader, its
    header read one way for every such file.
"""

import csv
import os
import re
import reprlib
import stat
from contextlib import contextmanager

from pieanet.utils.errors import EXIT_USAGE, PieaError

FORMULA_START = frozenset("=+-@\t\r")
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
MATPLOTLIB_TEXT = {"parse_math": False}  # keyword arguments of every title and label drawn from a file name
TEXT_LIMIT = 1 << 20  # a config or rule file is a few kB; 1 MiB is far beyond any real one


def csv_cell(value):
    """``value`` as a CSV cell that no spreadsheet runs as a formula (module docstring); non-text values as they
    are."""
    if not isinstance(value, str) or not value or NUMBER.fullmatch(value):
        return value
    first = value.lstrip(" ")[:1]
    if value[0] == "'" or value[0] in FORMULA_START or first in FORMULA_START:
        return "'" + value
    return value


def csv_value(cell):
    """The text that csv_cell turned into ``cell``."""
    return cell[1:] if cell.startswith("'") else cell


def md_cell(text):
    """``text`` inside a markdown table cell: one line, ``|`` and backslashes escaped."""
    text = shown(str(text)).replace("\\", "\\\\").replace("|", "\\|")
    return text


def printable(text):
    """``text`` as valid UTF-8 text: bytes of a file name that are not UTF-8 (which Python holds as surrogate
    escapes) become the four characters \\xNN."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that stands for no byte (not from a file name)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _escape(match):
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shown(text):
    """``text`` (a message, a file name) safe to print on a terminal: control characters escaped (module
    docstring)."""
    return CONTROL.sub(_escape, printable(str(text)))


_BRIEF = reprlib.Repr()
_BRIEF.maxlevel, _BRIEF.maxdict, _BRIEF.maxlist, _BRIEF.maxtuple = 3, 6, 6, 6
_BRIEF.maxstring, _BRIEF.maxother, _BRIEF.maxlong = 80, 80, 40


def brief(value):
    """A repr of ``value`` of at most about 200 characters, whatever its size or depth."""
    try:
        text = _BRIEF.repr(value)
    except (RecursionError, ValueError, TypeError):
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 200 else text[:197] + "..."


class TextFileError(PieaError, ValueError):
    """A text file that cannot be read: not a regular file, too large, not UTF-8, unreadable. Names the file."""

    exit_code = EXIT_USAGE


def own_text(error, empty=None):
    """The whole text of an exception's message, stripped: rawpy's bytes decoded; for an error re-raised from a
    DataLoader worker (torch puts the worker's traceback in front of the message), the message it had in the worker.
    When there is none: ``empty``, or the type's name (an empty ValueError() must not end in IndexError)."""
    raw = error.args[0] if getattr(error, "args", None) else None
    text = (raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(error)).strip()
    if text.startswith("Caught ") and "\nOriginal Traceback" in text:  # torch._utils.ExceptionWrapper.reraise
        kind = type(error)
        name = (
            kind.__qualname__
            if kind.__module__ in ("__main__", "builtins")
            else f"{kind.__module__}.{kind.__qualname__}"
        )  # as the traceback module writes it
        _, found, after = text.rpartition(f"\n{name}: ")
        text = after.strip() if found else text.splitlines()[-1].strip()
    return text or (type(error).__name__ if empty is None else empty)


def first_line(error, limit=160, empty=None):
    """The first line of an exception's own message (own_text), at most ``limit`` characters (None: the whole
    line); when the message is empty, ``empty`` or its type's name. The one helper for an error quoted inside another
    message."""
    return (own_text(error, empty).splitlines() or [""])[0][:limit]


def read_text(path, what="file", limit=TEXT_LIMIT):
    """The UTF-8 text of the regular file ``path`` (at most ``limit`` bytes); raises TextFileError. Opened without
    blocking, so a FIFO is refused by its type instead of waiting for a writer."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except (OSError, ValueError) as e:  # ValueError: a path with a NUL byte
        reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise TextFileError(f"{shown(path)}: cannot read the {what} ({reason})") from e
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = (
            "a folder"
            if stat.S_ISDIR(mode)
            else "a FIFO"
            if stat.S_ISFIFO(mode)
            else "a device"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "not a regular file"
        )
        raise TextFileError(f"{shown(path)}: {kind}; expected the {what} as a regular file")
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise TextFileError(f"{shown(path)}: larger than {limit:,} bytes; expected a {what} of a few kB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TextFileError(
            f"{shown(path)}: not UTF-8 text (byte {e.start}); expected the {what} saved as UTF-8"
        ) from e


@contextmanager
def csv_records(path, expected, error=ValueError):
    """A csv.DictReader over the CSV file at ``path``: UTF-8 with or without a byte-order mark (as spreadsheets save
    it), spaces after a comma and around a column name ignored, each column named once. A file that cannot be
    read, text that is not UTF-8 CSV (also further down, as the caller reads the rows) and a repeated column raise
    ``error`` with one line naming the file, ``expected`` saying what it should be."""
    try:
        f = open(path, newline="", encoding="utf-8-sig")
    except OSError as e:
        raise error(f"{path}: cannot be read ({e.strerror})") from e
    with f:
        try:
            reader = csv.DictReader(f, skipinitialspace=True)
            columns = [(c or "").strip() for c in reader.fieldnames or []]
            repeated = sorted({c for c in columns if columns.count(c) > 1})
            if repeated:
                raise error(f"{path}: column(s) {', '.join(repeated)} appear more than once; expected one of each")
            reader.fieldnames = columns
            yield reader
        except (UnicodeDecodeError, csv.Error) as e:
            raise error(f"{path}: not a UTF-8 CSV ({str(e)[:120]}); expected {expected}") from e


def regular_or_absent(path, what="file"):
    """Raise TextFileError when ``path`` exists but is not a regular file (a FIFO would block a reader, a device
    never ends); a missing path passes."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise TextFileError(f"{shown(path)}: cannot use it as the {what} ({e.strerror or type(e).__name__})") from e
    if not stat.S_ISREG(mode):
        raise TextFileError(f"{shown(path)}: not a regular file (a FIFO, device or folder); expected the {what}")
