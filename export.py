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

What is traced is the model's own ``PIEANet.traceable_forward`` (models/pieanet.py): the forward pass with the scene
branch (config ``scene_size`` > 0), whose size arithmetic ``torch.export`` cannot trace with dynamic H and W, computed
from fixed-size tensors. The in-command check compares against the model's ``forward``, so any difference shows.

The released network (``name: official``) is refused: it only works at 256 x 256 and resizes every photo to that
inside its wrapper, so an ONNX file of it would not be the dynamic-size model this tool promises.

Exit codes as in every tool (utils/errors.py); here 1 is an export or a check that failed (no file written) and 2
includes missing onnx/onnxruntime/onnxscript.
"""

if __name__ == "__main__":  # first, before the slow imports: Ctrl-C while they run is exit 130, one line
    from pieanet.utils.startup import quiet_interrupts

    quiet_interrupts("export")
import argparse
import re
import sys
from pathlib import Path

from pieanet import exporting
from pieanet.models import DEFAULT_CHECKPOINT
from pieanet.utils import cli
from pieanet.utils.errors import add_debug_option

PROG = exporting.PROG


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
    if value < exporting.MIN_OPSET:
        raise argparse.ArgumentTypeError(
            f"opset {value} is below {exporting.MIN_OPSET}, the opset torch's exporter "
            "translates at (a lower one would need a down-conversion)"
        )
    return value


def build_parser():
    p = cli.Parser(
        prog=PROG,
        description="Export a P-IEANet checkpoint to ONNX (dynamic batch, height and width) and "
        "check it against torch with onnxruntime.",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        metavar="PATH",
        help=f"project checkpoint (.safetensors) or training state (last.pt) (default: "
        f"checkpoints/{DEFAULT_CHECKPOINT.name})",
    )
    p.add_argument("--format", choices=exporting.FORMATS, default="onnx", help="export format (default: onnx)")
    p.add_argument(
        "--output", type=Path, required=True, metavar="FILE", help="file to write, e.g. outputs/pieanet.onnx"
    )
    p.add_argument(
        "--opset",
        type=opset_number,
        default=exporting.DEFAULT_OPSET,
        metavar="N",
        help=f"ONNX opset (default: {exporting.DEFAULT_OPSET}, see the module doc)",
    )
    p.add_argument(
        "--check-sizes",
        type=size_pair,
        nargs="+",
        metavar="HxW",
        default=list(exporting.DEFAULT_CHECK_SIZES),
        help="sizes at which onnxruntime is compared with torch (default: 256x256 301x199)",
    )
    add_debug_option(p)
    return p


def run(argv=None):
    args = build_parser().parse_args(argv)
    return exporting.run(args.checkpoint, args.output, args.opset, args.check_sizes)


def main(argv=None):
    return cli.run(PROG, run, argv)


if __name__ == "__main__":
    sys.exit(main())
