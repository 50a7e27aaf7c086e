"""What export.py does: a P-IEANet checkpoint exported to one self-contained ONNX file (dynamic batch, height and
width; the traced module is the model's own ``traceable_forward``) and checked against torch in onnxruntime before
the file is renamed into place. The choices (dynamo exporter, opset 18, the check sizes and tolerance) are explained
in export.py's help and docs/export.md. ``run`` is the whole command.
"""

import json
import logging
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from pieanet.models import DEFAULT_CHECKPOINT, contract, load_model
from pieanet.models.pieanet import PIEANet
from pieanet.utils.cli import EXIT_FAILED, EXIT_OK, UsageError
from pieanet.utils.errors import PieaError
from pieanet.utils.image_io import atomic_write
from pieanet.utils.safety import first_line, shown

PROG = "export"
FORMATS = ("onnx",)
DEFAULT_OPSET = 18
MIN_OPSET = 18  # torch.onnx translates at opset 18 (its TORCHLIB_OPSET); lower would mean a down-conversion
DEFAULT_CHECK_SIZES = ((256, 256), (301, 199))
TOLERANCE = 1e-4
# the example the graph is traced with: batch 2 and a size unlike the check sizes, so nothing is specialised to them
TRACE_SHAPE = (2, 3, 160, 224)
# an installed copy has no requirements file: the packages by name first
INSTALL = (
    "pip install onnx onnxruntime onnxscript (in the P-IEA checkout: pip install -r requirements-export.txt, "
    "or pip install '.[export]' for the package)"
)


class CheckFailed(PieaError):
    """The exported file does not reproduce torch; exit code 1."""

    exit_code = EXIT_FAILED


# ------------------------------------------------------------------------------------------------ the traced module
class Traceable(nn.Module):
    """The model as torch.export traces it: its own ``traceable_forward`` (models/pieanet.py), the forward pass with
    the scene branch computed from fixed-size tensors."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.traceable_forward(x)


def exportable(model):
    """The module to trace (Traceable), for a P-IEANet; UsageError for any other model."""
    size = contract.native_size(model)
    if size:
        raise UsageError(
            f"the released network ({type(model).__name__}) works only at {size} x {size} and resizes "
            "photos inside its wrapper; export a P-IEANet checkpoint (any size) instead"
        )
    if not isinstance(model, PIEANet):
        raise UsageError(f"{type(model).__name__} is not a P-IEANet; only P-IEANet checkpoints can be exported")
    return Traceable(model).eval()


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
        raise UsageError(
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed; ONNX export "
            f"needs onnx, onnxruntime and onnxscript: {INSTALL}"
        )
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
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=["image"],
            output_names=["residual"],
            dynamic_shapes={"x": dims},
            verbose=False,
            report=False,
        )
    import onnx_ir as ir  # installed with onnxscript

    graph = program.model.graph
    # readable names for the dynamic axes (the exporter's are s0, s53, ...; every dim of the output is the input's)
    graph.inputs[0].shape = ir.Shape(["batch", 3, "height", "width"])
    graph.outputs[0].shape = ir.Shape(["batch", 1, "height", "width"])
    for node in graph.all_nodes():
        node.metadata_props.clear()  # the exporter's per-node stack traces: half the file's size
    config = contract.config(model)
    # the properties models/contract.py reads, as the graph has them (models/onnx_model.py: a model with a scene
    # branch judges its whole input, so its receptive radius is the whole image, JSON null), for the torch-free path
    radius = None if contract.uses_scene(model) or contract.is_global(model) else contract.receptive_radius(model)
    declared = {
        "working_size": contract.working_size(model),
        "tile_multiple": contract.tile_multiple(model),
        "receptive_radius": radius,
        "native_size": contract.native_size(model),
    }
    program.model.metadata_props.update(
        {
            contract.ONNX_CONFIG_KEY: json.dumps(config),
            contract.ONNX_CONTRACT_KEY: json.dumps(declared),
            "p_iea.working_size": str(config.get("working_size") or ""),
            "p_iea.input": "image: N x 3 x H x W float32 RGB in [0, 1]",
            "p_iea.output": "residual: N x 1 x H x W float32 in [-1, 1]; > 0 under-exposed, < 0 over-exposed",
        }
    )
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
        print(
            f"{PROG}: check {h}x{w} (batch {batch}): max |onnxruntime - torch| = {difference:.2e} ({verdict})",
            file=out or sys.stdout,
            flush=True,
        )
        if not difference <= tolerance:  # NaN fails too
            raise CheckFailed(f"{h}x{w}: max |onnxruntime - torch| = {difference:.3g} is above {tolerance:g}")
    return results


def run(checkpoint: Path | None, output: Path, opset: int = DEFAULT_OPSET, check_sizes=DEFAULT_CHECK_SIZES) -> int:
    """export.py's whole run: ``checkpoint`` (None: the shipped one) exported to ONNX at ``opset`` and checked at
    ``check_sizes`` [(h, w)] before it is renamed onto ``output``; the exit code (errors raise: utils.errors)."""
    if output.is_dir():
        raise UsageError(f"--output {output} is a folder; give a file name such as {output / 'pieanet.onnx'}")
    parent = output.parent if str(output.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise UsageError(f"--output {output}: {parent} is not a folder")
    onnx, ort = import_onnx_tools()
    checkpoint = DEFAULT_CHECKPOINT if checkpoint is None else checkpoint
    model = load_model(checkpoint, device="cpu")  # a CheckpointError: exit code 2
    exportable(model)  # refuses what cannot be exported, before any work
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--output {output}: cannot make its folder ({e.strerror})") from e
    print(f"{PROG}: exporting {shown(checkpoint)} to ONNX (opset {opset}, dynamic batch, height and width)", flush=True)
    start = time.perf_counter()
    try:
        with atomic_write(output) as tmp:
            try:
                export_onnx(model, tmp, opset=opset)
                onnx.checker.check_model(str(tmp))
            except (KeyboardInterrupt, CheckFailed):
                raise
            except Exception as e:  # the exporter's errors are many and long: one line, from the root cause
                root: BaseException = e
                while root.__cause__ is not None:
                    root = root.__cause__
                raise CheckFailed(f"the ONNX export failed: {type(root).__name__}: {first_line(root, 200, '')}") from e
            check_onnx(model, tmp, check_sizes, ort, tolerance=TOLERANCE)
    except CheckFailed as e:  # exit code 1 (utils.errors), the file named
        raise CheckFailed(f"{e}; nothing written to {output}") from e
    except OSError as e:  # shown by utils.errors as '<output>: cannot write (<reason>); nothing written', exit code 1
        raise OSError(e.errno, f"cannot write ({e.strerror or e}); nothing written", str(output)) from e
    size = output.stat().st_size
    print(
        f"{PROG}: wrote {shown(output)} ({size / 1e6:.2f} MB, {time.perf_counter() - start:.0f} s); input 'image' "
        f"N x 3 x H x W float32 RGB in [0, 1], output 'residual' N x 1 x H x W (> 0 under-exposed)"
    )
    return EXIT_OK
