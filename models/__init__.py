"""One way to build and load a model: ``build_model(config)``, ``load_model(path)``, ``save_model(path, model)``.

A project checkpoint is a ``.safetensors`` file whose metadata carries the model config (JSON), so it rebuilds itself and
loads without executing pickled code. ``load_model`` also reads a training state (``last.pt``: a dict with ``model`` and
``config``, via ``torch.load(weights_only=True)``) and the released P-IEANet ``.pth`` (a plain state_dict), telling them
apart by their contents, not by their names.
"""
import json
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from models.official import OfficialPIEANet
from models.pieanet import PIEANet
from utils.image_io import atomic_write

MODELS = {"pieanet": PIEANet, "official": OfficialPIEANet}
CHECKPOINT_FORMAT = "p-iea/1"
RELEASED_KEY = "ffa_group.pre.0.weight"  # present in the released state_dict
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "pieanet_synth.safetensors"
RELEASED_WEIGHTS = "../shared/official/wavelet_epoch_2_val_loss0.03022034629540784.pth"


class CheckpointError(ValueError):
    """A checkpoint that is missing or is not one of the formats load_model reads."""


def build_model(config):
    """A model from its config dict, e.g. ``{"name": "pieanet", "width": 32}`` or ``{"name": "official"}``."""
    config = dict(config)
    name = config.pop("name", "pieanet")
    if name not in MODELS:
        raise ValueError(f"unknown model name {name!r}; expected one of {sorted(MODELS)}")
    return MODELS[name](**config)


def resolve_device(device="auto"):
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def save_model(path, model, metadata=None):
    """Write a project checkpoint (weights + config) atomically: a temporary file in the same folder, then a rename."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header = {"format": CHECKPOINT_FORMAT, "config": json.dumps(model.config)}
    header.update({k: str(v) for k, v in (metadata or {}).items()})
    with atomic_write(path) as tmp:
        save_file(state, str(tmp), metadata=header)


def read_checkpoint(path):
    """(config, state_dict) of any checkpoint load_model accepts."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; expected a project checkpoint (.safetensors) or the "
                              "released P-IEANet .pth; make the default one with `python train_wavelet.py --config "
                              f"configs/pieanet_synth.yaml` (see checkpoints/README.md) or use `--checkpoint "
                              f"{RELEASED_WEIGHTS}`")
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"  # torch.save's format
    try:
        if not is_zip:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
            if metadata.get("format") != CHECKPOINT_FORMAT:
                raise CheckpointError(f"{path}: a safetensors file without a P-IEA model config in its metadata")
            return json.loads(metadata["config"]), load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except (SafetensorError, RuntimeError, OSError, ValueError, KeyError, EOFError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint ({str(e).splitlines()[0][:120]}); expected a project "
                              "checkpoint (.safetensors) or the released P-IEANet .pth") from None
    if isinstance(state, dict) and "model" in state and "config" in state:
        config = state["config"]
        return config.get("model", config), state["model"]
    if isinstance(state, dict) and RELEASED_KEY in state:
        return {"name": "official"}, {f"net.{k}": v for k, v in state.items()}
    raise CheckpointError(f"{path}: not a P-IEA checkpoint; expected a project checkpoint (.safetensors), a training "
                          "state (last.pt) or the released P-IEANet state_dict")


def load_model(path, device="cpu"):
    """The model stored at ``path``, in eval mode on ``device`` ("auto", "cpu", "cuda", ...)."""
    config, state = read_checkpoint(path)
    try:
        model = build_model(config)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: weights do not fit the model config {config} "
                              f"({str(e).splitlines()[0][:160]})") from None
    return model.to(resolve_device(device)).eval()


def open_model(path, device="cpu", prog="p-iea"):
    """load_model for command-line tools: the model, or None after one line on stderr naming the file and what was
    expected."""
    try:
        return load_model(path, device=device)
    except CheckpointError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return None
