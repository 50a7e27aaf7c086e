"""Train a residual-map network on an IEA40K-layout dataset.

    python train_wavelet.py --config configs/pieanet.yaml [dotted.key=value ...] [--resume] [--device auto|cpu|cuda]
    torchrun --nproc_per_node 4 train_wavelet.py --config configs/pieanet.yaml      # DistributedDataParallel

Writes <output_dir>/<name>/: config.yaml (the resolved config), train.log, TensorBoard events, last.pt (the whole
training state, for --resume), best.safetensors (the weights with the lowest validation MAE, for load_model) and
last.safetensors (the latest epoch's weights, for load_model).
--resume continues bit for bit from last.pt: the same batches, augmentations and weights as a run never stopped;
settings that differ from the saved run's are reported. An existing run is never overwritten: without --resume or
--overwrite, a folder that already holds one is refused. The whole config (keys, types, ranges, the model's arguments)
is checked before any data is read or any folder is made; temporary files left by a killed run are removed.
Exit codes: 0 done, 1 training failed (bad data found during an epoch, a non-finite loss), 2 usage or setup error
(config, data, checkpoint, experiment folder), 130 interrupted (continue with --resume).
"""

if __name__ == "__main__":  # first, before the slow imports: Ctrl-C while they run is exit 130, one line
    from pieanet.utils.startup import quiet_interrupts

    quiet_interrupts("train_wavelet")
import argparse
import sys
from pathlib import Path

from pieanet.training.run import PROG, command
from pieanet.utils import errors

ROOT = Path(__file__).resolve().parent


def parse_args(argv):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config",
        default=str(ROOT / "configs" / "pieanet.yaml"),
        help="YAML config: a path, or a shipped config by name, e.g. pieanet_synth (default: configs/pieanet.yaml)",
    )
    parser.add_argument("--resume", action="store_true", help="continue from <output_dir>/<name>/last.pt")
    parser.add_argument(
        "--overwrite", action="store_true", help="start again in a folder that already holds a run, replacing its files"
    )
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ... (default: auto)"
    )
    parser.add_argument("overrides", nargs="*", metavar="dotted.key=value")
    errors.add_debug_option(parser)
    args = parser.parse_args(argv)
    if args.resume and args.overwrite:
        parser.error("--resume and --overwrite exclude each other")
    return args


def main(argv=None):
    """The run (pieanet.training.run.command) on this command line; its exit code."""
    return command(lambda: parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
