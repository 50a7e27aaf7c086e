"""The command line shared by make_heatmap.py, score.py, compare_methods.py and evaluate.py.

One place parses and checks the common options (``--checkpoint``, ``--device``, ``--size``, ``--tile``, ``--threads``,
``--threshold``), opens the model, runs every image through the same tiled, bounded-memory inference path and isolates
per-image failures. Exit codes mean the same in every tool:

    0    every input done
    1    some inputs failed; each is named on stderr in one line, ``<tool>: <file>: <reason>``
    2    usage or setup error (bad option value, missing input, unusable checkpoint, output folder that cannot be
         written, --device cuda without CUDA), reported in one line before any work
    130  interrupted (Ctrl-C); what was finished is kept (make_heatmap's summary.csv is written row by row)
    141  the reader of standard output went away (``| head``); no traceback
"""
import argparse
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pieanet.models import (DEFAULT_CHECKPOINT, DEFAULT_ONNX, RELEASED_WORD,  # noqa: F401 (re-exported)
                            CheckpointError, checkpoint_file, load_model, resolve_device)
from pieanet.utils.errors import (EXIT_BROKEN_PIPE, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK,  # noqa: F401 (re-exported)
                                  EXIT_USAGE, UsageError, add_debug_option, exit_status, set_debug)
from pieanet.utils.exposure import DEFAULT_THRESHOLD
from pieanet.utils.heatmap import check_vmax
from pieanet.utils.image_io import MAX_PIXELS, ImageLoadError, list_images, load_image, readable_formats
from pieanet.utils.inference import default_overlap, predict_batch, round_up
from pieanet.utils.safety import first_line, shown
from pieanet.utils.startup import interrupts_raise

# A native-resolution pass needs memory in proportion to the pixel count (docs/design.md, "Memory"), so large photos
# run in tiles: 2048 px bounds the peak at that of a 4 MP photo, and its 192 px margins cost at most
# (2048 / 1664)^2 = 1.5x the work of one pass
DEFAULT_TILE = 2048
# --size below this is refused for any model (a map of a few pixels says nothing about a photo); P-IEANet's own
# minimum is higher (minimum_size)
MIN_WORKING_SIZE = 16
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


def add_common_options(parser, checkpoints="one", tile=DEFAULT_TILE, threshold_default=DEFAULT_THRESHOLD,
                       threshold_help="the default"):
    """The options every tool shares, with their defaults stated in --help.

    checkpoints: "one" (``--checkpoint PATH``, default the shipped checkpoint), "many" (``--checkpoint PATH ...``,
    default none) or None (the tool takes its checkpoints otherwise, e.g. as positional arguments).
    threshold_default None means the tool picks (``threshold_help`` says how).
    """
    if checkpoints == "one":
        parser.add_argument("--checkpoint", type=Path, metavar="PATH",
                            help="project checkpoint (.safetensors), training state (last.pt), the released "
                                 "P-IEANet .pth ('released': the file $P_IEA_RELEASED_WEIGHTS names) or an ONNX file "
                                 "from export.py (default: "
                                 f"checkpoints/{DEFAULT_CHECKPOINT.name}, or checkpoints/{DEFAULT_ONNX.name} with "
                                 "--backend onnxruntime)")
        parser.add_argument("--backend", choices=BACKENDS, default="auto",
                            help="what runs the network: torch, or onnxruntime on an ONNX file (the same maps within "
                                 "1e-4, several times faster on CPU); auto = onnxruntime for a .onnx checkpoint, "
                                 "else torch (default: auto)")
    elif checkpoints == "many":
        parser.add_argument("--checkpoint", "--compare", type=Path, nargs="+", metavar="PATH",
                            help="project checkpoint(s) (.safetensors), training state(s) and/or the released "
                                 "P-IEANet .pth ('released': the file $P_IEA_RELEASED_WEIGHTS names) (default: "
                                 f"checkpoints/{DEFAULT_CHECKPOINT.name} unless only --baseline is given)")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="where the model runs; auto = CUDA when available, else CPU (default: auto)")
    parser.add_argument("--size", type=working_size, metavar="N",
                        help="working resolution: predict at longer side N, guided upsampling back to full size; "
                             "'native' = the image's own resolution (default: the model's working_size if its config "
                             "has one, else native)")
    parser.add_argument("--tile", type=non_negative_int, default=tile, metavar="N",
                        help="images larger than N px on a side run in overlapping tiles: bounded memory, the same "
                             f"map as one pass; 0 = always one pass (default: {tile})")
    parser.add_argument("--threads", type=positive_int, metavar="N",
                        help="torch CPU threads (default: torch's choice)")
    default_text = f"{threshold_default:g}" if threshold_default is not None else threshold_help
    parser.add_argument("--threshold", type=threshold, default=threshold_default, metavar="T",
                        help=f"|r| above which a pixel counts as over- or under-exposed (default: {default_text})")
    add_debug_option(parser)


# ------------------------------------------------------------------------------------------------ setup checks
def setup(args):
    """Check the device and apply --threads; raises UsageError. Keeps the --device value as ``args.device_asked``:
    the tools replace args.device with the resolved device (under torchrun, the process's own GPU), and open_model
    needs to know whether CUDA was asked for or chosen automatically."""
    args.device_asked = args.device
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA device is available; use --device cpu or auto")
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)


def model_file(path, args):
    """The file open_model(path, args) loads: ``path``; for ``released`` (when no such file exists) the released
    weights that the environment variable P_IEA_RELEASED_WEIGHTS names; for None the shipped checkpoint (its ONNX
    export with --backend onnxruntime). Raises UsageError."""
    if path is not None:
        try:
            return checkpoint_file(path)
        except CheckpointError as e:
            raise UsageError(str(e)) from None
    return DEFAULT_ONNX if getattr(args, "backend", "auto") == "onnxruntime" else DEFAULT_CHECKPOINT


def open_model(path, args):
    """The model at ``path`` (None: the shipped checkpoint, see model_file) on args.device, checked against
    args.tile; raises UsageError."""
    backend = getattr(args, "backend", "auto")
    path = model_file(path, args)
    is_onnx = Path(path).suffix.lower() == ".onnx"
    if backend == "torch" and is_onnx:
        raise UsageError(f"{path}: an ONNX file runs with --backend onnxruntime (or auto)")
    if backend == "onnxruntime" and not is_onnx:
        raise UsageError(f"{path}: --backend onnxruntime runs an ONNX file; make one with `python export.py "
                         f"--checkpoint {path} --format onnx --output {Path(path).with_suffix('.onnx').name}`")
    try:
        model = load_model(path, device=args.device,
                           explicit_device=getattr(args, "device_asked", args.device) != "auto")
    except CheckpointError as e:
        raise UsageError(str(e)) from None
    check_tile(model, args.tile)
    check_size(model, getattr(args, "size", None))
    return model


def is_global(model):
    """True when a model's output at a pixel may depend on the whole image (tiling would change its map)."""
    radius = getattr(model, "receptive_radius", None)
    return radius is not None and not math.isfinite(radius)


def tile_for(model, tile):
    """The tile size to use for ``model``: None for one pass (no tile asked, a model that resizes to its own
    native size, or one whose receptive field is the whole image)."""
    if not tile or getattr(model, "native_size", None) or is_global(model):
        return None
    return tile


def minimum_tile(model):
    """The smallest tile that leaves room for one tile multiple inside the model's context margins."""
    multiple = getattr(model, "tile_multiple", 1)
    return 2 * round_up(default_overlap(model), multiple) + multiple


def check_tile(model, tile):
    if tile_for(model, tile) is not None and tile < minimum_tile(model):
        raise UsageError(f"--tile {tile} is below this model's minimum of {minimum_tile(model)} px (its context "
                         f"margin on each side plus one tile step); use --tile {minimum_tile(model)} or more, or "
                         "--tile 0 for one pass")


def minimum_size(model):
    """The smallest working size (--size) worth running ``model`` at: its tile multiple (P-IEANet: 8 x window, the
    span of one attention window at its coarsest level; below it the photo is mostly padding), at least
    MIN_WORKING_SIZE."""
    return max(getattr(model, "tile_multiple", 1), MIN_WORKING_SIZE)


def check_size(model, size):
    """Refuse a --size (not native, 0) below what ``model`` can use; a model that resizes to its own fixed size
    ignores --size."""
    if size and not getattr(model, "native_size", None) and size < minimum_size(model):
        raise UsageError(f"--size {size} is below this model's minimum working size of {minimum_size(model)} px; use "
                         f"--size {minimum_size(model)} or more, or --size native")


def writable_folder(path, what="output folder"):
    """Create ``path`` if needed and prove it can be written (a temporary file); raises UsageError."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-", suffix=".tmp"):
            pass
    except OSError as e:
        raise UsageError(f"{path}: cannot write to the {what} ({e.strerror or one_line(e)}); choose another") from None
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
            raise UsageError(f"{source}: cannot be read ({e.strerror or one_line(e)})") from None
        if errors is not None:
            errors += unreadable
        if not paths and not unreadable:
            below = len(list_images(source, recursive=True, exclude=exclude, errors=[])) if recursive is False else 0
            if below:
                raise UsageError(f"{source}: no images in the folder itself, {below} in its sub-folders; add "
                                 "--recursive to read them")
            raise UsageError(f"{source}: no images found; expected files ending in {readable_formats()}")
        found.append((source, paths))
    return found


# ------------------------------------------------------------------------------------------------ per-image work
def one_line(error):
    return first_line(error, 200)


def read_image(path, raw_clipping=False, data=None):
    """load_image (``data``: the file's bytes, already read), with the message's leading file name removed (the
    caller names the file)."""
    try:
        return load_image(path, raw_clipping, data)
    except ImageLoadError as e:
        raise ImageLoadError(str(e).removeprefix(f"{path}: ")) from None


def check_work(model, shape, size=None):
    """Refuse an image whose padded working area would exceed MAX_PIXELS (a 1 x N strip is padded to the model's
    tile multiple on both sides), so degenerate shapes cost at most what the largest accepted photo does."""
    height, width = shape[:2]
    size = (getattr(model, "working_size", None) if size is None else size) or None  # as predict_tensor does
    if size is not None and max(height, width) > size:
        scale = size / max(height, width)
        height, width = max(1, round(height * scale)), max(1, round(width * scale))
    multiple = 1 if getattr(model, "native_size", None) else getattr(model, "tile_multiple", 1)
    work = round_up(height, multiple) * round_up(width, multiple)
    if work > MAX_PIXELS:
        raise ValueError(f"{shape[1]}x{shape[0]} is padded to {work / 1e6:.0f} MP of work for this model (tile "
                         f"multiple {multiple}), above the {MAX_PIXELS / 1e6:.0f} MP limit")


def predict(model, images, size=None, tile=None, batch_size=1):
    """Residual maps of ``images`` through the tiled, bounded-memory path; a batch that fails as a whole is
    retried one image at a time, so one image's failure (out of memory, a bad shape) does not take the others
    with it. A map holding NaN or infinite values (a broken model, an ONNX file that outputs NaN) is that image's
    failure, never a row of nan numbers. Returns a map (H x W float32) or the exception, per image."""
    return [finite(result) for result in _predict(model, images, size, tile, batch_size)]


def finite(result):
    """``result`` (a map or an exception), or a ValueError when the map is not finite everywhere."""
    if isinstance(result, BaseException) or np.isfinite(result).all():
        return result
    bad = np.count_nonzero(~np.isfinite(result))
    return ValueError(f"the model gave {bad:,} non-finite value(s) (NaN or infinite) of {result.size:,}; expected a "
                      "finite residual map (is the checkpoint damaged?)")


def _predict(model, images, size, tile, batch_size):
    tile = tile_for(model, tile)
    checked = []
    for image in images:
        try:
            check_work(model, image.shape, size)
            checked.append(None)
        except ValueError as e:
            checked.append(e)
    good = [image for image, error in zip(images, checked) if error is None]
    try:
        maps = iter(predict_batch(model, good, size=size, tile=tile, batch_size=batch_size) if good else [])
        return [error if error is not None else next(maps) for error in checked]
    except (RuntimeError, ValueError, MemoryError) as e:
        if len(images) == 1:
            return [e]
    results = []
    for image, error in zip(images, checked):
        if error is not None:
            results.append(error)
            continue
        try:
            results.append(predict_batch(model, [image], size=size, tile=tile)[0])
        except (RuntimeError, ValueError, MemoryError) as e:
            results.append(e)
    return results


class Progress:
    """A progress bar on stderr (shown on a terminal unless ``show`` is false: the other processes of a torchrun
    run) and one-line failure reports that do not break it."""

    def __init__(self, prog, total, unit="img", show=True):
        self.prog, self.failed = prog, []
        self.bar = tqdm(total=total, unit=unit, desc=prog, file=sys.stderr, disable=None if show else True,
                        leave=False)

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
ADVICE = {"memory": "try a smaller --tile or --size, or fewer photos per --batch-size",
          "interrupted": "the results finished so far are kept"}


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
