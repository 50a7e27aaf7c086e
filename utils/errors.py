"""One error path for every tool: the project's base error, the exit codes, and the one function that turns an
exception into an exit code and one line (docs/design.md, "Exit codes").

Every error the project raises on purpose derives from ``PieaError`` and carries its exit code as the class
attribute ``exit_code``: 2 for a refusal before any work (a bad option, input, config, checkpoint or folder), 1 for
work that failed. A module raises its own error (``CheckpointError``, ``DatasetError`` ...) with its cause chained
(``raise ... from e``); nothing on the way up translates it into another type only to change the code or the message.

At the top, ``cli.run`` (make_heatmap, evaluate, compare_methods, score, export) and ``train_wavelet.main`` end in
``exit_status``, which prints one line ``<prog>: <message>`` on stderr and returns the exit code (``outcome`` is the
mapping itself). With ``--debug`` (every tool has it) or ``P_IEA_DEBUG=1`` in the environment, the full traceback,
chained cause included, is printed before that line: what a bug report needs. An exception that is none of the
kinds below is a bug: it propagates as Python's own traceback (exit 1), as it always did.

Exit codes, the same in every tool (this table is their one home; docs/design.md shows it to users, checked by
tests/test_errors.py):

    0    done: every input
    1    failed: some inputs failed, each named on stderr in one line (<tool>: <file>: <reason>); a run that had
         to stop; an output that could not be written; memory exhausted
    2    usage or setup error (bad option value, missing input, unusable config or checkpoint, output folder that
         cannot be written, --device cuda without CUDA), reported in one line before any work
    130  interrupted (Ctrl-C); what was finished is kept (make_heatmap's summary.csv is written row by row)
    141  the reader of standard output went away (| head); nothing printed, no traceback

This module imports nothing slow (no torch) and, at load time, nothing of the project: utils.safety's
TextFileError derives from PieaError, so safety's helpers are imported where they are used.
"""

import argparse
import os
import sys
import traceback

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 0, 1, 2, 130, 141
DEBUG_VARIABLE = "P_IEA_DEBUG"
DETAIL_LIMIT = 200  # characters of an out-of-memory or OS error's own text shown in its line


class PieaError(Exception):
    """An error the project raises on purpose: its message is one sentence that names the file or option and what
    was expected; ``exit_code`` says how the tool ends (class attribute; subclasses set their own)."""

    exit_code = EXIT_FAILED


class UsageError(PieaError):
    """A bad option value, input or setup, found before any work: one sentence, exit code 2."""

    exit_code = EXIT_USAGE


# ------------------------------------------------------------------------------------------------ the debug switch
_debug_option = False  # set by --debug while a tool runs (exit_status's caller resets it)


class _DebugSwitch(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        set_debug(True)
        setattr(namespace, self.dest, True)


def add_debug_option(parser):
    """``--debug`` on ``parser``: a failure prints its full traceback (with the chained cause) before its line."""
    parser.add_argument(
        "--debug",
        action=_DebugSwitch,
        nargs=0,
        default=False,
        help=f"on failure, print the full traceback with its cause (also: {DEBUG_VARIABLE}=1)",
    )


def set_debug(on):
    global _debug_option
    _debug_option = bool(on)


def debugging():
    """True under --debug or with $P_IEA_DEBUG set to anything but empty, 0, false, no or off."""
    value = os.environ.get(DEBUG_VARIABLE, "").strip().lower()
    return _debug_option or value not in ("", "0", "false", "no", "off")


# ------------------------------------------------------------------------------------------------ the mapping
def out_of_memory(error):
    """MemoryError, or torch's OutOfMemoryError (a RuntimeError on the GPU), told by type without importing torch."""
    return isinstance(error, MemoryError) or any(
        cls.__name__ == "OutOfMemoryError" and cls.__module__.startswith("torch") for cls in type(error).__mro__
    )


def outcome(error, advice=None):
    """(exit code, one line) for ``error``; the line is None where nothing is to be said (a closed output pipe),
    and the whole result None for an exception that is none of these kinds (a bug: let its traceback through).

    ``advice``: {"memory" | "interrupted" | "os": text} appended to that kind's line after "; " (what the tool's
    user can do next). The line is terminal-safe (safety.shown) and has no program name."""
    from pieanet.utils.safety import first_line, own_text, shown

    advice = advice or {}

    def advised(line, kind):
        return f"{line}; {advice[kind]}" if advice.get(kind) else line

    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED, advised("interrupted", "interrupted")
    if isinstance(error, BrokenPipeError):
        return EXIT_BROKEN_PIPE, None
    if out_of_memory(error):
        text = own_text(error, empty="")
        detail = f" ({shown(first_line(error, DETAIL_LIMIT))})" if text else ""
        return EXIT_FAILED, advised(f"out of memory{detail}", "memory")
    if isinstance(error, OSError):  # an output that could not be written (full disk, ...); OutsideFolder too
        name = getattr(error, "filename", None)
        line = f"{shown(name) + ': ' if name else ''}{shown(error.strerror or first_line(error, DETAIL_LIMIT))}"
        return getattr(error, "exit_code", EXIT_FAILED), advised(line, "os")
    if isinstance(error, PieaError):
        return error.exit_code, shown(own_text(error))
    return None


def exit_status(prog, error, advice=None):
    """Report ``error`` on stderr as ``<prog>: <line>`` (after its full traceback under --debug or $P_IEA_DEBUG)
    and return its exit code; re-raise an error that ``outcome`` does not know (a bug keeps its traceback)."""
    result = outcome(error, advice)
    if result is None:
        raise error
    code, line = result
    if debugging():
        traceback.print_exception(error, file=sys.stderr)
    if isinstance(error, BrokenPipeError):
        # the reader (e.g. `head`) has gone: silence stdout so the interpreter's final flush does not fail again
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
    if line is not None:
        lead = "\n" if isinstance(error, KeyboardInterrupt) else ""  # after the ^C the terminal shows
        print(f"{lead}{prog}: {line}", file=sys.stderr)
    return code


__all__ = [
    "PieaError",
    "UsageError",
    "EXIT_OK",
    "EXIT_FAILED",
    "EXIT_USAGE",
    "EXIT_INTERRUPTED",
    "EXIT_BROKEN_PIPE",
    "outcome",
    "exit_status",
    "add_debug_option",
    "debugging",
    "set_debug",
]
