"""Export a P-IEANet checkpoint to ONNX and check the file against torch in the same command.

    python export.py --format onnx --output outputs/pieanet.onnx                      # the shipped checkpoint
    python export.py --checkpoint experiments/run/best.safetensors --format onnx --output outputs/run.onnx --opset 18 \
        --check-sizes 256x256 301x199 1024x768

The ONNX model has one input ``image`` (N x 3 x H x W float32 RGB in [0, 1]) and one output ``residual``
(N x 1 x H x W float32 in [-1, 1]; r > 0 under-exposed, r < 0 over-exposed), with dynamic N, H and W. It is made with
torch's dynamo exporter (``torch.onnx.export(..., dynamo=True)``, the default in torch 2.13; the TorchScript exporter
is deprecated) at opset 18 by default: the opset at which the exporter's op library (onnxscript's torchlib) is
written, so no version conversion is involved, and one that onnxruntime's CPU provider runs in full from release
1.14 on (also in its mobile builds). Every node of the graph is a standard ONNX op (Conv, MatMul,
LayerNormalization, Resize, AveragePool, Pad, ...).

The file is written to a temporary name beside ``--output``; it is loaded in onnxruntime (CPU) and run on random
photos at every ``--check-sizes`` size (default 256x256 and 301x199, the second with a batch of 2), and renamed onto
``--output`` only if the largest |onnx - torch| is within 1e-4 at every size. So a failed export or check leaves no
file (an earlier file at ``--output`` is left as it was).

P-IEANet's scene branch (config ``scene_size`` > 0) shrinks the whole photo to a size computed from its shape
(``F.interpolate(..., antialias=True)``) and samples it with ``F.grid_sample``; ``torch.export`` cannot trace that
size arithmetic with dynamic H and W. ``SceneExport`` computes the same numbers with fixed-size tensors: the resize as
two weight matrices holding torch's antialiased-bilinear weights (which, with a magnification, are plain bilinear
weights: torch's ``antialias=scale < 1`` choice needs no branch), the thumbnail zero-padded to ``scene_size`` with the
encoder's convolutions masked to the valid part, and the sampling as two bilinear matrices (torch's CPU antialiased
resize gives a one-pixel-wide output the first row's value in every row; that is reproduced too). The in-command
check compares against the unmodified model, so any difference shows.

The released network (``name: official``) is refused: it only works at 256 x 256 and resizes every photo to that
inside its wrapper, so an ONNX file of it would not be the dynamic-size model this tool promises.

Exit codes as in every tool (utils/cli.py): 0 written and checked, 1 the export or the check failed (no file written),
2 usage or setup error (bad option, unusable checkpoint, missing onnx/onnxruntime/onnxscript), 130 interrupted.
"""
if __name__ == "__main__":  # first, before the slow imports: Ctrl-C while they run is exit 130, one line
    from pieanet.utils.startup import quiet_interrupts
    quiet_interrupts("export")
import argparse
import json
import logging
import re
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from pieanet.models import DEFAULT_CHECKPOINT, load_model
from pieanet.models.pieanet import LightnessBranch, PIEANet
from pieanet.utils import cli
from pieanet.utils.safety import first_line, shown
from pieanet.utils.cli import EXIT_FAILED, EXIT_OK, UsageError
from pieanet.utils.errors import PieaError, add_debug_option
from pieanet.utils.image_io import atomic_write

PROG = "export"
FORMATS = ("onnx",)
DEFAULT_OPSET = 18
MIN_OPSET = 18  # torch.onnx translates at opset 18 (its TORCHLIB_OPSET); lower would mean a down-conversion
DEFAULT_CHECK_SIZES = ((256, 256), (301, 199))
TOLERANCE = 1e-4
# the example the graph is traced with: batch 2 and a size unlike the check sizes, so nothing is specialised to them
TRACE_SHAPE = (2, 3, 160, 224)
# an installed copy has no requirements file: the packages by name first
INSTALL = ("pip install onnx onnxruntime onnxscript (in the P-IEA checkout: pip install -r requirements-export.txt, "
           "or pip install '.[export]' for the package)")


class CheckFailed(PieaError):
    """The exported file does not reproduce torch; exit code 1."""
    exit_code = EXIT_FAILED


# ------------------------------------------------------------------------------------------------ scene branch
def resize_weights(length, target, index, rows):
    """rows x length matrix whose row i < target holds the weights torch's antialiased bilinear resize
    (``F.interpolate(mode="bilinear", align_corners=False, antialias=True)``) gives output pixel i of a resize from
    ``length`` to ``target`` pixels; rows >= target are zero. length, target: 0-d float64 tensors; index:
    arange(length) as float32 (its size carries the dynamic length).

    With a magnification (target >= length) the filter's support is one input pixel and these are exactly the
    weights of the plain bilinear resize (edges clamped), which is what torch uses there (antialias=False)."""
    ratio = length.float() / target.float()
    support = torch.clamp(ratio, min=1.0)
    i = torch.arange(rows, dtype=torch.float32, device=index.device)
    center = ratio * (i + 0.5)
    weights = torch.clamp(1.0 - ((index[None, :] - center[:, None] + 0.5) / support).abs(), min=0.0)
    valid = (i < target.float()).to(weights.dtype)[:, None]
    weights = weights * valid  # rows past the thumbnail: no weight (their centres may lie outside the image)
    return weights / torch.clamp(weights.sum(dim=1, keepdim=True), min=1e-30)


def sample_weights(positions, valid, columns):
    """len(positions) x columns matrix of the 1-D bilinear weights ``F.grid_sample(..., mode="bilinear",
    padding_mode="border", align_corners=False)`` uses at normalised ``positions`` on an axis of ``valid`` cells
    (a 0-d tensor) stored in the first cells of ``columns``."""
    valid = valid.to(positions.dtype)
    pixel = ((positions + 1) * valid - 1) / 2
    pixel = torch.minimum(torch.clamp(pixel, min=0.0), valid - 1)
    low = torch.floor(pixel)
    frac = pixel - low
    cells = torch.arange(columns, dtype=positions.dtype, device=positions.device)[None, :]
    return ((cells == low[:, None]).to(positions.dtype) * (1 - frac)[:, None]
            + (cells == low[:, None] + 1).to(positions.dtype) * frac[:, None])


def conv_length(conv, length, axis):
    """Output length of ``conv`` along ``axis`` (0 rows, 1 columns) for an input of ``length`` (0-d tensor)."""
    k, s, p, d = conv.kernel_size[axis], conv.stride[axis], conv.padding[axis], conv.dilation[axis]
    return torch.floor((length + 2 * p - d * (k - 1) - 1) / s) + 1


def axis_mask(length, valid, dtype):
    return (torch.arange(length, dtype=torch.float64, device=valid.device) < valid).to(dtype)


class SceneExport(nn.Module):
    """PIEANet.forward for export, with the scene branch computed from fixed-size tensors (see the module doc); the
    other branches are the model's own modules, called exactly as PIEANet.forward calls them."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.size = model.scene_branch.size

    def scene_thumbnail(self, x):
        """The scene branch's thumbnail, zero-padded to size x size, and its valid height and width (0-d float64)."""
        height = torch.scalar_tensor(x.shape[-2], dtype=torch.float64, device=x.device)
        width = torch.scalar_tensor(x.shape[-1], dtype=torch.float64, device=x.device)
        # SceneBranch: scale = size / max(h, w); (max(1, round(h * scale)), max(1, round(w * scale))), in float64
        # like Python's float arithmetic; torch.round and Python's round both round half to even
        scale = self.size / torch.maximum(height, width)
        thumb_h = torch.clamp(torch.round(height * scale), min=1.0)
        thumb_w = torch.clamp(torch.round(width * scale), min=1.0)
        rows = resize_weights(height, thumb_h, torch.arange(x.shape[-2], dtype=torch.float32, device=x.device),
                               self.size)
        cols = resize_weights(width, thumb_w, torch.arange(x.shape[-1], dtype=torch.float32, device=x.device),
                               self.size)
        # torch's CPU antialiased resize (torch 2.13) gives every row of a one-pixel-wide output the value of its
        # first row; the scene branch meets that with photos more than about 2 * scene_size times taller than wide.
        # Reproduced here, so the exported model gives torch's numbers for every shape.
        first_row_only = (scale < 1) & (thumb_w == 1)
        valid_rows = (torch.arange(self.size, dtype=torch.float64, device=x.device) < thumb_h).to(rows.dtype)
        rows = torch.where(first_row_only, rows[:1] * valid_rows[:, None], rows)
        # torch resizes along the width first, then the height
        thumb = torch.matmul(rows, torch.matmul(x, cols.transpose(0, 1)))
        return thumb, thumb_h, thumb_w

    def scene_features(self, x):
        branch = self.model.scene_branch
        thumb, valid_h, valid_w = self.scene_thumbnail(x)
        luminance = torch.log(thumb.mul(thumb.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, True)
                              + 1e-3)
        y = torch.cat([thumb, luminance], dim=1)
        for layer in branch.encoder:
            if isinstance(layer, nn.Conv2d):
                # zeros outside the valid part stand in for the conv's zero padding at the thumbnail's true border
                y = (y * axis_mask(y.shape[-2], valid_h, y.dtype)[:, None]
                     * axis_mask(y.shape[-1], valid_w, y.dtype)[None, :])
                valid_h, valid_w = conv_length(layer, valid_h, 0), conv_length(layer, valid_w, 1)
            y = layer(y)
        mask = axis_mask(y.shape[-2], valid_h, y.dtype)[:, None] * axis_mask(y.shape[-1], valid_w, y.dtype)[None, :]
        mean = (y * mask).sum(dim=(2, 3), keepdim=True) / (valid_h * valid_w).to(y.dtype)
        scene = branch.out(torch.cat([y, mean.expand_as(y)], dim=1))
        return scene * mask, valid_h, valid_w

    def forward(self, x):
        model = self.model
        height, width = x.shape[-2:]
        m = model.tile_multiple
        scene, valid_h, valid_w = self.scene_features(x)
        # sample_scene(scene, (0, 0, height, width), (padded_h // 4, padded_w // 4), 4) as two bilinear matrices
        padded = (height + -height % m, width + -width % m)
        rows = (torch.arange(padded[0] // 4, dtype=scene.dtype, device=x.device) + 0.5) * 4 / height * 2 - 1
        cols = (torch.arange(padded[1] // 4, dtype=scene.dtype, device=x.device) + 0.5) * 4 / width * 2 - 1
        lightness_input = torch.matmul(torch.matmul(sample_weights(rows, valid_h, scene.shape[-2]), scene),
                                       sample_weights(cols, valid_w, scene.shape[-1]).transpose(0, 1))
        x = F.pad(x, (0, -width % m, 0, -height % m), mode="replicate")
        low, high = model.split(x)
        lightness = model.lightness_branch(low, lightness_input)
        bands = model.merge(lightness, model.structure_branch(high))
        return torch.tanh(model.head(bands))[..., :height, :width]


def exportable(model):
    """The module to trace: the model itself, or SceneExport for a P-IEANet with a scene branch."""
    if getattr(model, "native_size", None):
        raise UsageError(f"the released network ({type(model).__name__}) works only at {model.native_size} x "
                         f"{model.native_size} and resizes photos inside its wrapper; export a P-IEANet checkpoint "
                         "(any size) instead")
    if not isinstance(model, PIEANet):
        raise UsageError(f"{type(model).__name__} is not a P-IEANet; only P-IEANet checkpoints can be exported")
    if model.scene_branch is not None and isinstance(model.lightness_branch, LightnessBranch):
        return SceneExport(model).eval()
    return model


# ------------------------------------------------------------------------------------------------ export and check
def import_onnx_tools():
    """(onnx, onnxruntime), or UsageError naming what is missing and how to install it."""
    missing = []
    modules = {}
    for name in ("onnx", "onnxruntime", "onnxscript"):
        try:
            modules[name] = __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise UsageError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed; ONNX export "
                         f"needs onnx, onnxruntime and onnxscript: {INSTALL}")
    return modules["onnx"], modules["onnxruntime"]


def export_onnx(model, path, opset=DEFAULT_OPSET):
    """Write ``model`` (N x 3 x H x W -> N x 1 x H x W, dynamic N, H, W) to ``path`` as one self-contained ONNX file."""
    from torch.export import Dim

    module = exportable(model)
    example = torch.rand(*TRACE_SHAPE, generator=torch.Generator().manual_seed(0))
    # Dim.DYNAMIC: named Dims with ranges make torch.export derive inconsistent ranges for the padded sizes
    dims = {0: Dim.DYNAMIC, 2: Dim.DYNAMIC, 3: Dim.DYNAMIC}
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # e.g. "torchvision is not installed. Skipping ..."
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (example,), dynamo=True, opset_version=opset, input_names=["image"],
                                    output_names=["residual"], dynamic_shapes={"x": dims}, verbose=False,
                                    report=False)
    import onnx_ir as ir  # installed with onnxscript

    graph = program.model.graph
    # readable names for the dynamic axes (the exporter's are s0, s53, ...; every dim of the output is the input's)
    graph.inputs[0].shape = ir.Shape(["batch", 3, "height", "width"])
    graph.outputs[0].shape = ir.Shape(["batch", 1, "height", "width"])
    for node in graph.all_nodes():
        node.metadata_props.clear()  # the exporter's per-node stack traces: half the file's size
    config = getattr(model, "config", {})
    program.model.metadata_props.update({
        "p_iea.config": json.dumps(config),
        "p_iea.working_size": str(config.get("working_size") or ""),
        "p_iea.input": "image: N x 3 x H x W float32 RGB in [0, 1]",
        "p_iea.output": "residual: N x 1 x H x W float32 in [-1, 1]; > 0 under-exposed, < 0 over-exposed",
    })
    program.save(str(path), external_data=False)


def check_onnx(model, path, sizes, ort, tolerance=TOLERANCE, out=None):
    """Run the ONNX file in onnxruntime (CPU) and the torch model on the same random photos at each (h, w) of
    ``sizes`` (the second and later with a batch of 2); raise CheckFailed if any |difference| exceeds ``tolerance``.
    Returns [(h, w, batch, max_difference)]."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(1)
    results = []
    for n, (h, w) in enumerate(sizes):
        batch = 1 if n == 0 else 2
        x = torch.rand(batch, 3, h, w, generator=generator)
        with torch.inference_mode():
            expected = model(x).numpy()
        got = session.run(["residual"], {"image": x.numpy()})[0]
        if got.shape != expected.shape:
            raise CheckFailed(f"{h}x{w}: onnxruntime gave shape {got.shape}, torch {expected.shape}")
        difference = float(abs(got - expected).max())
        results.append((h, w, batch, difference))
        verdict = "ok" if difference <= tolerance else f"ABOVE {tolerance:g}"
        print(f"{PROG}: check {h}x{w} (batch {batch}): max |onnxruntime - torch| = {difference:.2e} ({verdict})",
              file=out or sys.stdout, flush=True)
        if not difference <= tolerance:  # NaN fails too
            raise CheckFailed(f"{h}x{w}: max |onnxruntime - torch| = {difference:.3g} is above {tolerance:g}")
    return results


# ------------------------------------------------------------------------------------------------ command line
def size_pair(text):
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or not 1 <= int(match[1]) <= 16384 or not 1 <= int(match[2]) <= 16384:
        raise argparse.ArgumentTypeError(f"expected HxW with sides from 1 to 16384, e.g. 301x199; got {text!r}")
    return int(match[1]), int(match[2])


def opset_number(text):
    try:
        value = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from e
    if value < MIN_OPSET:
        raise argparse.ArgumentTypeError(f"opset {value} is below {MIN_OPSET}, the opset torch's exporter translates "
                                         "at (a lower one would need a down-conversion)")
    return value


def build_parser():
    p = cli.Parser(prog=PROG, description="Export a P-IEANet checkpoint to ONNX (dynamic batch, height and width) and "
                                      "check it against torch with onnxruntime.")
    p.add_argument("--checkpoint", type=Path, metavar="PATH",
                   help=f"project checkpoint (.safetensors) or training state (last.pt) (default: "
                        f"checkpoints/{DEFAULT_CHECKPOINT.name})")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="export format (default: onnx)")
    p.add_argument("--output", type=Path, required=True, metavar="FILE",
                   help="file to write, e.g. outputs/pieanet.onnx")
    p.add_argument("--opset", type=opset_number, default=DEFAULT_OPSET, metavar="N",
                   help=f"ONNX opset (default: {DEFAULT_OPSET}, see the module doc)")
    p.add_argument("--check-sizes", type=size_pair, nargs="+", metavar="HxW",
                   default=list(DEFAULT_CHECK_SIZES),
                   help="sizes at which onnxruntime is compared with torch (default: 256x256 301x199)")
    add_debug_option(p)
    return p


def run(argv=None):
    args = build_parser().parse_args(argv)
    output = args.output
    if output.is_dir():
        raise UsageError(f"--output {output} is a folder; give a file name such as {output / 'pieanet.onnx'}")
    parent = output.parent if str(output.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise UsageError(f"--output {output}: {parent} is not a folder")
    onnx, ort = import_onnx_tools()
    checkpoint = DEFAULT_CHECKPOINT if args.checkpoint is None else args.checkpoint
    model = load_model(checkpoint, device="cpu")  # a CheckpointError: exit code 2
    exportable(model)  # refuses what cannot be exported, before any work
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--output {output}: cannot make its folder ({e.strerror})") from e
    print(f"{PROG}: exporting {shown(checkpoint)} to ONNX (opset {args.opset}, dynamic batch, height and width)",
          flush=True)
    start = time.perf_counter()
    try:
        with atomic_write(output) as tmp:
            try:
                export_onnx(model, tmp, opset=args.opset)
                onnx.checker.check_model(str(tmp))
            except (KeyboardInterrupt, CheckFailed):
                raise
            except Exception as e:  # the exporter's errors are many and long: one line, from the root cause
                root = e
                while root.__cause__ is not None:
                    root = root.__cause__
                raise CheckFailed(f"the ONNX export failed: {type(root).__name__}: {first_line(root, 200, '')}") from e
            check_onnx(model, tmp, args.check_sizes, ort, tolerance=TOLERANCE)
    except CheckFailed as e:  # exit code 1 (utils.errors), the file named
        raise CheckFailed(f"{e}; nothing written to {output}") from e
    except OSError as e:  # shown by utils.errors as '<output>: cannot write (<reason>); nothing written', exit code 1
        raise OSError(e.errno, f"cannot write ({e.strerror or e}); nothing written", str(output)) from e
    size = output.stat().st_size
    print(f"{PROG}: wrote {shown(output)} ({size / 1e6:.2f} MB, {time.perf_counter() - start:.0f} s); input 'image' "
          f"N x 3 x H x W float32 RGB in [0, 1], output 'residual' N x 1 x H x W (> 0 under-exposed)")
    return EXIT_OK


def main(argv=None):
    return cli.run(PROG, run, argv)


if __name__ == "__main__":
    sys.exit(main())
