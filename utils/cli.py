"""The command line shared by make_heatmap.py, score.py, compare_methods.py and evaluate.py.

One place parses and checks the common options (``--checkpoint``, ``--device``, ``--size``, ``--tile``, ``--threads``,
``--threshold``) and the inputs and outputs, shows progress and one-line failures, and turns the ways a tool ends into
exit codes. Opening the model and running images through it is the runtime's job (pieanet/runtime.py), which sits
above this module: nothing here imports the models or torch. Exit codes mean the same in every tool: the table is in
utils/errors.py.
"""

import argparse
import math
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from pieanet.utils.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,  # noqa: F401 (re-exported)
    PieaError,
    add_debug_option,
    exit_status,
    set_debug,
)
from pieanet.utils.exposure import DEFAULT_THRESHOLD
from pieanet.utils.heatmap import check_vmax
from pieanet.utils.image_io import list_images, readable_formats
from pieanet.utils.safety import first_line, shown
from pieanet.utils.shipped import DEFAULT_CHECKPOINT, DEFAULT_ONNX
from pieanet.utils.startup import interrupts_raise

# A native-resolution pass needs memory in proportion to the pixel count (docs/design.md, "Memory"), so large photos
# run in tiles: 2048 px bounds the peak at that of a 4 MP photo, and its 192 px margins cost at most
# (2048 / 1664)^2 = 1.5x the work of one pass
DEFAULT_TILE = 2048
DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("auto", "torch", "onnxruntime")


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (``<prog>: <what> (see --help)``), exit code 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see --help)\n")


class Once(argparse.Action):
    """An option that may be given once: a second ``--input`` is refused rather than silently replacing the first."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = getattr(namespace, self.dest, self.default)
        if given is not self.default:  # set already by an earlier occurrence (a converted value, never the default)
            parser.error(f"{option_string} given twice ({given}, then {values}); it takes one value")
        setattr(namespace, self.dest, values)


# ------------------------------------------------------------------------------------------------ option types
def _parse(text, kind):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")


def positive_int(text):
    value = _parse(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def non_negative_int(text):
    value = _parse(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def threshold(text):
    value = _parse(text, float)
    if not 0.0 <= value < 1.0:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"expected a residual threshold in [0, 1), got {text}")
    return value


def working_size(text):
    """--size: a positive integer (longer side in px) or 'native' (0: the image's own resolution)."""
    if text.strip().lower() == "native":
        return 0
    value = _parse(text, int) if text.strip().lstrip("+-").isdigit() else None
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'native', got {text}")
    return value


def colour_scale(text):
    """--vmax: a residual in (0, 1] drawn at full colour (utils.heatmap.check_vmax)."""
    try:
        return check_vmax(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None


def positive_float(text):
    value = _parse(text, float)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number above 0, got {text}")
    return value


def percent(text):
    """--share-limit: a percentage in [0, 100]."""
    try:
        value = float(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from e
    if not 0.0 <= value <= 100.0:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"expected a percentage in [0, 100], got {text}")
    return value


def add_alpha_option(parser):
    """--alpha, for the tools that judge a user's photos (make_heatmap, score): what transparent pixels are."""
    parser.add_argument(
        "--alpha",
        choices=("judge", "composite"),
        default="judge",
        help="photos with transparency: 'judge' leaves (nearly) transparent pixels out of every "
        "number, score and rule and draws them as a grey checkerboard, the model seeing the "
        "subject over a neutral fill; 'composite' judges the photo composited over white, "
        "background included (default: judge)",
    )


def add_common_options(
    parser, checkpoints="one", tile=DEFAULT_TILE, threshold_default=DEFAULT_THRESHOLD, threshold_help="the default"
):
    """The options every tool shares, with their defaults stated in --help.

    checkpoints: "one" (``--checkpoint PATH``, default the shipped checkpoint), "many" (``--checkpoint PATH ...``,
    default none) or None (the tool takes its checkpoints otherwise, e.g. as positional arguments).
    threshold_default None means the tool picks (``threshold_help`` says how).
    """
    if checkpoints == "one":
        parser.add_argument(
            "--checkpoint",
            type=Path,
            metavar="PATH",
            help="project checkpoint (.safetensors), training state (last.pt), the released "
            "P-IEANet .pth ('released': the file $P_IEA_RELEASED_WEIGHTS names) or an ONNX file "
            "from export.py (default: "
            f"checkpoints/{DEFAULT_CHECKPOINT.name}, or checkpoints/{DEFAULT_ONNX.name} with "
            "--backend onnxruntime)",
        )
        parser.add_argument(
            "--backend",
            choices=BACKENDS,
            default="auto",
            help="what runs the network: torch, or onnxruntime on an ONNX file (the same maps within "
            "1e-4, several times faster on CPU); auto = onnxruntime for a .onnx checkpoint, "
            "else torch (default: auto)",
        )
    elif checkpoints == "many":
        parser.add_argument(
            "--checkpoint",
            "--compare",
            type=Path,
            nargs="+",
            metavar="PATH",
            help="project checkpoint(s) (.safetensors), training state(s) and/or the released "
            "P-IEANet .pth ('released': the file $P_IEA_RELEASED_WEIGHTS names) (default: "
            f"checkpoints/{DEFAULT_CHECKPOINT.name} unless only --baseline is given)",
        )
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="where the model runs; auto = CUDA when available, else CPU (default: auto)",
    )
    parser.add_argument(
        "--size",
        type=working_size,
        metavar="N",
        help="working resolution: predict at longer side N, guided upsampling back to full size; "
        "'native' = the image's own resolution (default: the model's working_size if its config "
        "has one, else native)",
    )
    parser.add_argument(
        "--tile",
        type=non_negative_int,
        default=tile,
        metavar="N",
        help="images larger than N px on a side run in overlapping tiles: bounded memory, the same "
        f"map as one pass; 0 = always one pass (default: {tile})",
    )
    parser.add_argument("--threads", type=positive_int, metavar="N", help="torch CPU threads (default: torch's choice)")
    default_text = f"{threshold_default:g}" if threshold_default is not None else threshold_help
    parser.add_argument(
        "--threshold",
        type=threshold,
        default=threshold_default,
        metavar="T",
        help=f"|r| above which a pixel counts as over- or under-exposed (default: {default_text})",
    )
    add_debug_option(parser)


# ------------------------------------------------------------------------------------------------ inputs and outputs
PATH_MAX = 4096  # bytes of a whole path the system takes (Linux; macOS takes 1024, where the system says so itself)
NAME_MAX = 255  # bytes of one file name


def check_path_room(path, what="output folder"):
    """Refuse a folder whose path, with one file name (up to NAME_MAX bytes) under it, would be longer than the system
    takes: its files would fail one by one after the work (the report last), not before it."""
    length = len(os.fsencode(str(path)))
    if length + 1 + NAME_MAX > PATH_MAX:
        from pieanet.utils.safety import shown

        raise UsageError(
            f"{shown(str(path)[:60])}...: the {what}'s path is {length:,} bytes; with a file name in it "
            f"that is more than the system's {PATH_MAX:,}-byte limit; give a shorter path"
        )


def writable_folder(path, what="output folder"):
    """Create ``path`` if needed and prove it can be written (a temporary file); raises UsageError."""
    path = Path(path)
    check_path_room(path, what)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-", suffix=".tmp"):
            pass
    except OSError as e:
        raise UsageError(f"{path}: cannot write to the {what} ({e.strerror or one_line(e)}); choose another") from e
    return path


def check_inputs(sources, recursive=None, exclude=(), errors=None):
    """The image files under each source (file or folder); a missing source or one without images is a
    UsageError (naming the readable formats, and suggesting --recursive when only sub-folders hold images and the
    tool has the option: ``recursive`` False; None = it has not). Returns [(source, [paths])]. Sub-folders that
    cannot be read are appended to ``errors`` as (folder, reason), for the caller to report as failed inputs."""
    found = []
    for source in map(Path, sources):
        if not source.exists():
            raise UsageError(f"{source}: no such file or folder; expected an image or a folder of images")
        unreadable = []
        try:
            paths = list_images(source, recursive=bool(recursive), exclude=exclude, errors=unreadable)
        except OSError as e:
            raise UsageError(f"{source}: cannot be read ({e.strerror or one_line(e)})") from e
        if errors is not None:
            errors += unreadable
        if not paths and not unreadable:
            below = len(list_images(source, recursive=True, exclude=exclude, errors=[])) if recursive is False else 0
            if below:
                raise UsageError(
                    f"{source}: no images in the folder itself, {below} in its sub-folders; add "
                    "--recursive to read them"
                )
            raise UsageError(f"{source}: no images found; expected files ending in {readable_formats()}")
        found.append((source, paths))
    return found


# ------------------------------------------------------------------------------------------------ messages and progress
def one_line(error):
    return first_line(error, 200)


class Progress:
    """A progress bar on stderr (shown on a terminal unless ``show`` is false: the other processes of a torchrun
    run) and one-line failure reports that do not break it."""

    def __init__(self, prog, total, unit="img", show=True):
        self.prog, self.failed = prog, []
        self.bar = tqdm(total=total, unit=unit, desc=prog, file=sys.stderr, disable=None if show else True, leave=False)

    def fail(self, name, reason):
        self.failed.append(str(name))
        self.report(f"{name}: {reason}")

    def report(self, message):
        tqdm.write(f"{self.prog}: {shown(message)}", file=sys.stderr)  # a file name's escape codes stay visible

    def update(self, n=1):
        self.bar.update(n)

    def close(self):
        self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def exit_code(self):
        return EXIT_FAILED if self.failed else EXIT_OK


# ------------------------------------------------------------------------------------------------ entry point
ADVICE = {
    "memory": "try a smaller --tile or --size, or fewer photos per --batch-size",
    "interrupted": "the results finished so far are kept",
}


@contextmanager
def refused_together(prog, group):
    """Under torchrun (``group``: a utils.distributed.Group), a project error that every rank raises alike before any
    work (the folder held by another run) is one line, printed by rank 0 only, and every rank then exits with its
    code (SystemExit) once all have got there: rank 0's line is out before torchrun stops the others. torchrun
    itself still reports the failed ranks (their exit code, 2) and exits 1 (docs/safety.md). One process: re-raised."""
    try:
        yield
    except PieaError as e:
        if not group.distributed:
            raise
        code = exit_status(prog, e, ADVICE) if group.is_main else e.exit_code
        sys.stderr.flush()
        group.barrier()
        raise SystemExit(code) from None


def run(prog, body, argv=None):
    """Call ``body(argv)`` and turn the ways a command line ends into one line and an exit code (utils.errors: a
    project error -> its exit_code, e.g. UsageError -> 2; Ctrl-C -> 130, a closed output pipe -> 141, an output that
    cannot be written (OSError) -> 1, memory exhausted outside a photo's own work -> 1); a traceback only under
    --debug or $P_IEA_DEBUG. Messages are printed through safety.shown: a file name's control characters never reach
    the terminal raw."""
    interrupts_raise()
    set_debug(False)  # until this command's --debug
    try:
        return body(argv)
    except (Exception, KeyboardInterrupt) as e:  # what errors.outcome does not know is re-raised (a bug)
        return exit_status(prog, e, ADVICE)
    finally:
        set_debug(False)
