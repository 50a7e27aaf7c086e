"""The tools' runtime: open the model the command line names and run photos through it, one photo's failure never
taking the others with it.

Layers, each importing only from those below it (tests/test_layers.py; docs/design.md, "Layers"):
    tools          make_heatmap.py, score.py, evaluate.py, compare_methods.py, export.py, train_wavelet.py
    runtime        this module: the command line's options -> a model (UsageError), per-photo prediction
    models         the networks, their contract (models/contract.py), loading, inference (tiles, working size)
    utils          the command line (utils/cli.py), files, images, exposure conventions, summary and report

torch is imported by the functions that use it: a run of the shipped model on the CPU does without it (torch_free).
"""

import argparse
import importlib.util
import os
import sys
from glob import glob
from pathlib import Path
from typing import Any

import numpy as np

from pieanet.models import DEFAULT_CHECKPOINT, DEFAULT_ONNX, contract
from pieanet.models.full_size import GuidedFit
from pieanet.utils import distributed
from pieanet.utils.errors import UsageError
from pieanet.utils.image_io import MAX_PIXELS, ImageLoadError, load_image


# ------------------------------------------------------------------------------------------------ setup
def setup(args: argparse.Namespace, torch_free_ok: bool = False) -> None:
    """Check the device and apply --threads; raises UsageError. Keeps the --device value as ``args.device_asked``:
    the tools replace args.device with the resolved device (under torchrun, the process's own GPU), and open_model
    needs to know whether CUDA was asked for or chosen automatically. ``torch_free_ok``: the tool can take the
    torch-free model (make_heatmap); ``args.torch_free`` then says whether this run does (torch_free)."""
    args.device_asked = args.device
    args.torch_free = torch_free_ok and torch_free(args)
    if args.torch_free:
        return
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA device is available; use --device cpu or auto")
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)


def torch_free(args: argparse.Namespace) -> bool:
    """Whether a run with these options can run the network without torch (models/torch_free.py: the shipped ONNX
    file in onnxruntime, numpy around it, the same maps to float rounding): the shipped model (no --checkpoint),
    --backend auto or onnxruntime, on the CPU (--device cpu, or auto where no GPU may be visible), at a working size
    (not --size native, which runs the torch path's tiles), in one process (not under torchrun), with onnxruntime
    installed. Anything else runs as before, through torch."""
    return (
        getattr(args, "checkpoint", None) is None
        and getattr(args, "backend", "auto") in ("auto", "onnxruntime")
        and (args.device == "cpu" or (args.device == "auto" and not gpu_may_be_visible()))
        and getattr(args, "size", None) != 0
        and distributed.from_environment()[1] == 1
        and DEFAULT_ONNX.is_file()
        and importlib.util.find_spec("onnxruntime") is not None
    )


def gpu_may_be_visible() -> bool:
    """Whether torch could find a GPU here (what --device auto would then choose), told without importing torch:
    CUDA_VISIBLE_DEVICES empty or -1 hides every device; else the NVIDIA or AMD (ROCm) driver's device files on
    Linux, the CUDA driver library on Windows; macOS has no CUDA. A false yes only costs the torch start-up."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    if sys.platform.startswith("linux"):
        return bool(glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/kfd"))
    if sys.platform == "win32":
        return Path(os.environ.get("SystemRoot", r"C:\Windows"), "System32", "nvcuda.dll").exists()
    return False


def resolve_device(device: str, args: argparse.Namespace | None = None) -> Any:
    """The device --device names ("auto": CUDA when available), a torch.device; "cpu" for a torch-free run."""
    if args is not None and getattr(args, "torch_free", False):
        return "cpu"
    from pieanet.models import resolve_device as resolve

    return resolve(device)


def model_file(path: str | Path | None, args: argparse.Namespace) -> Path:
    """The file open_model(path, args) loads: ``path``; for ``released`` (when no such file exists) the released
    weights that the environment variable P_IEA_RELEASED_WEIGHTS names; for None the shipped checkpoint (its ONNX
    export with --backend onnxruntime or on the torch-free path). Raises models.CheckpointError (exit code 2, as a
    UsageError)."""
    if path is not None:
        from pieanet.models import checkpoint_file

        return checkpoint_file(path)
    torch_free_run = getattr(args, "torch_free", False)
    return DEFAULT_ONNX if torch_free_run or getattr(args, "backend", "auto") == "onnxruntime" else DEFAULT_CHECKPOINT


def open_model(path: str | Path | None, args: argparse.Namespace) -> Any:
    """The model at ``path`` (None: the shipped checkpoint, see model_file) on args.device, checked against
    args.tile; raises UsageError or CheckpointError."""
    if getattr(args, "torch_free", False) and path in (None, DEFAULT_ONNX):
        from pieanet.models.torch_free import TorchFreeModel

        try:
            model = TorchFreeModel(DEFAULT_ONNX, threads=getattr(args, "threads", None))
        except ValueError as e:
            raise UsageError(str(e)) from e
        check_size(model, getattr(args, "size", None))
        return model
    from pieanet.models import load_model

    backend = getattr(args, "backend", "auto")
    path = model_file(path, args)
    is_onnx = Path(path).suffix.lower() == ".onnx"
    if backend == "torch" and is_onnx:
        raise UsageError(f"{path}: an ONNX file runs with --backend onnxruntime (or auto)")
    if backend == "onnxruntime" and not is_onnx:
        raise UsageError(
            f"{path}: --backend onnxruntime runs an ONNX file; make one with `python export.py "
            f"--checkpoint {path} --format onnx --output {Path(path).with_suffix('.onnx').name}`"
        )
    model = load_model(path, device=args.device, explicit_device=getattr(args, "device_asked", args.device) != "auto")
    check_tile(model, args.tile)
    check_size(model, getattr(args, "size", None))
    return model


def check_tile(model, tile):
    """Refuse a --tile (when the model is tiled at all: contract.tile_for) below the model's minimum_tile."""
    minimum = contract.minimum_tile(model)
    if contract.tile_for(model, tile) is not None and tile < minimum:
        raise UsageError(
            f"--tile {tile} is below this model's minimum of {minimum} px (its context margin on each "
            f"side plus one tile step); use --tile {minimum} or more, or --tile 0 for one pass"
        )


def check_size(model, size):
    """Refuse a --size (not native, 0) below what ``model`` can use; a model that resizes to its own fixed size
    ignores --size."""
    minimum = contract.minimum_size(model)
    if size and not contract.native_size(model) and size < minimum:
        raise UsageError(
            f"--size {size} is below this model's minimum working size of {minimum} px; use "
            f"--size {minimum} or more, or --size native"
        )


# ------------------------------------------------------------------------------------------------ per-image work
def read_image(
    path: str | Path,
    raw_clipping: bool = False,
    data: bytes | None = None,
    keep_uint8: bool = False,
    keep_alpha: bool = False,
) -> np.ndarray:
    """load_image (``data``: the file's bytes, already read; ``keep_uint8``: 8-bit photos as uint8; ``keep_alpha``:
    H x W x 4 for a photo with transparency, see utils.alpha), with the message's leading file name removed (the
    caller names the file)."""
    try:
        return load_image(path, raw_clipping, data, keep_uint8=keep_uint8, keep_alpha=keep_alpha)
    except ImageLoadError as e:
        raise ImageLoadError(str(e).removeprefix(f"{path}: ")) from e


def check_work(model, shape, size=None):
    """Refuse an image whose padded working area would exceed MAX_PIXELS (a 1 x N strip is padded to the model's
    tile multiple on both sides), so degenerate shapes cost at most what the largest accepted photo does."""
    padded = contract.padded_shape(model, contract.working_shape(model, shape, size))
    work = padded[0] * padded[1]
    if work > MAX_PIXELS:
        raise ValueError(
            f"{shape[1]}x{shape[0]} is padded to {work / 1e6:.0f} MP of work for this model (tile "
            f"multiple {contract.padding_multiple(model)}), above the {MAX_PIXELS / 1e6:.0f} MP limit"
        )


def predict(
    model: Any,
    images: list[np.ndarray],
    size: int | None = None,
    tile: int | None = None,
    batch_size: int = 1,
    deferred: bool = False,
) -> list:
    """Residual maps of ``images`` through the tiled, bounded-memory path; a batch that fails as a whole is
    retried one image at a time, so one image's failure (out of memory, a bad shape) does not take the others
    with it. A map holding NaN or infinite values (a broken model, an ONNX file that outputs NaN) is that image's
    failure, never a row of nan numbers. Returns a map (H x W float32) or the exception, per image; ``deferred``: a
    photo on the working-size path gets its full_size.GuidedFit instead of its map (checked finite the same way),
    which full_map turns into the map on whatever thread calls it."""
    return [finite(result) for result in _predict(model, images, size, tile, batch_size, deferred)]


def is_torch_free(model):
    """Whether ``model`` is models/torch_free.py's (only a torch-free run made one, so the module is loaded then)."""
    module = sys.modules.get("pieanet.models.torch_free")
    return module is not None and isinstance(model, module.TorchFreeModel)


def full_map(result: Any, image: np.ndarray) -> np.ndarray:
    """The map of a predict result for ``image`` (made here when predict deferred it; otherwise ``result``)."""
    return result.full_map(image) if isinstance(result, GuidedFit) else result


def finite(result):
    """``result`` (a map, a GuidedFit or an exception), or a ValueError when the map is not finite everywhere."""
    if isinstance(result, GuidedFit):  # its working-size coefficients, of which the map is made
        values = np.concatenate([result.a.ravel(), result.b.ravel()])
        where = " at the working size"
    else:
        values, where = result, ""
    if isinstance(result, BaseException) or np.isfinite(values).all():
        return result
    bad = np.count_nonzero(~np.isfinite(values))
    return ValueError(
        f"the model gave {bad:,} non-finite value(s) (NaN or infinite) of {values.size:,}{where}; "
        "expected a finite residual map (is the checkpoint damaged?)"
    )


def _predict(model, images, size, tile, batch_size, deferred=False):
    if is_torch_free(model):
        from pieanet.models import torch_free as path

        def predict_batch(model, images, size=None, tile=None, batch_size=1, deferred=False):
            return [path.predict(model, image, size, deferred) for image in images]
    else:
        from pieanet.models.inference import predict_batch
    tile = contract.tile_for(model, tile)
    checked = []
    for image in images:
        try:
            check_work(model, image.shape, size)
            checked.append(None)
        except ValueError as e:
            checked.append(e)
    good = [image for image, error in zip(images, checked) if error is None]
    try:
        maps = iter(
            predict_batch(model, good, size=size, tile=tile, batch_size=batch_size, deferred=deferred) if good else []
        )
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
            results.append(predict_batch(model, [image], size=size, tile=tile, deferred=deferred)[0])
        except (RuntimeError, ValueError, MemoryError) as e:
            results.append(e)
    return results
