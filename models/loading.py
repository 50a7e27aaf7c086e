"""One way to build and load a model: ``build_model(config)``, ``load_model(path)``, ``save_model(path, model)``.

A project checkpoint is a ``.safetensors`` file whose metadata carries the model config (JSON), so it rebuilds itself
and loads without executing pickled code. ``load_model`` also reads a training state (``last.pt``: a dict with
``model`` and ``config``, via ``torch.load(weights_only=True)``) and the released P-IEANet ``.pth`` (a plain
state_dict), telling them apart by their contents, not by their names.

Every checkpoint is checked before it is trusted: nothing pickled is executed (a training state holding other Python
objects is refused, and no message ever suggests loading it unsafely); the config is type- and range-checked and the
model is first built on the meta device (no memory) and compared, parameter count and tensor shapes, with the stored
weights before any real tensor is allocated; weights that are not floating point or hold NaN/inf are refused.
"""

import inspect
import json
import math
import os
import pickle
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from pieanet.models import contract
from pieanet.models.baselines import BASELINES
from pieanet.models.official import OfficialPIEANet
from pieanet.models.onnx_model import OnnxModel
from pieanet.models.pieanet import PIEANet
from pieanet.utils.errors import EXIT_USAGE, PieaError
from pieanet.utils.image_io import atomic_write
from pieanet.utils.shipped import DEFAULT_CHECKPOINT, DEFAULT_ONNX  # noqa: F401 (part of this package's API)
from pieanet.utils.safety import brief, first_line

# every model by config name: P-IEANet, the released network and the classical baselines (models/baselines.py)
MODELS = {"pieanet": PIEANet, "official": OfficialPIEANet, **BASELINES}
CHECKPOINT_FORMAT = "p-iea/1"
RELEASED_KEY = "ffa_group.pre.0.weight"  # present in the released state_dict
# The paper's released weights are not shipped: `--checkpoint PATH`, or `--checkpoint released` with the environment
# variable P_IEA_RELEASED_WEIGHTS naming the file (released_weights)
RELEASED_NAME = "wavelet_epoch_2_val_loss0.03022034629540784.pth"
RELEASED_SOURCE = "github.com/woshidandan/Pixel-level-No-reference-Image-Exposure-Assessment"
RELEASED_ENV = "P_IEA_RELEASED_WEIGHTS"
RELEASED_WORD = "released"  # the --checkpoint value that means the file P_IEA_RELEASED_WEIGHTS names


# A checkpoint's model may not exceed this many parameters (P-IEANet: 94,812; the released network: 624,263); a small
# file declaring a huge config is refused before anything is allocated
MAX_PARAMETERS = 50_000_000
# ranges of integer config values; a key not listed takes INT_RANGE
INT_RANGES = {
    "width": (1, 1024),
    "heads": (1, 64),
    "window": (1, 64),
    "context": (1, 255),
    "bands": (1, 256),
    "lightness_blocks": (1, 64),
    "attention_layers": (1, 64),
    "working_size": (1, 16384),
    "scene_size": (0, 1024),
}  # 1024: a 64 MB scene, so that measuring a model's cost for real stays cheap
INT_RANGE = (0, 4096)
# A checkpoint's model may not cost more than this in activations, judged (activation_cost) as the sum of every
# layer's output for one image: a part that grows with the pixels (P-IEANet: 482 bytes per pixel;
# 12 kB with width 1024) and a fixed part (its scene branch at scene_size 64: 2 MB, at 4096: 1 GB; the released
# network, which works at 256 x 256 whatever the photo: 442 MB). The real peak is a few times the fixed part (a
# scene_size of 4096 took 4 GB for a 96 x 64 photo), so these keep a model within a few GB per tile.
MAX_ACTIVATION_BYTES_PER_PIXEL = 4096
MAX_ACTIVATION_BYTES_FIXED = 512 * 2**20
# a torch.save zip holds its tensors stored (not deflated): what it declares unpacked may not exceed the largest
# model's weights plus room for the rest of a training state, nor the file's own size more than this ratio
MAX_CHECKPOINT_UNPACKED = MAX_PARAMETERS * 8 + (64 << 20)
MAX_UNPACK_RATIO = 4


class CheckpointError(PieaError, ValueError):
    """A checkpoint that is missing or is not one of the formats load_model reads."""

    exit_code = EXIT_USAGE


def released_weights():
    """The released P-IEANet weights: the file the environment variable P_IEA_RELEASED_WEIGHTS names. Raises
    CheckpointError when it is not set."""
    value = os.environ.get(RELEASED_ENV, "").strip()
    if not value:
        raise CheckpointError(
            f"{RELEASED_WORD}: set the environment variable {RELEASED_ENV} to the released "
            f"P-IEANet weights ({RELEASED_NAME}, from {RELEASED_SOURCE}), or give its path to "
            "--checkpoint"
        )
    return Path(value).expanduser()


def checkpoint_file(path):
    """The file a checkpoint name stands for: ``path`` itself; for the word ``released`` (when no such file exists)
    the released weights (released_weights). Raises CheckpointError."""
    if str(path) == RELEASED_WORD and not Path(path).exists():
        return released_weights()
    return path


def check_config(config, where="model config"):
    """Refuse a config whose name, keys, types or ranges cannot make a model (ValueError naming the key); this
    runs before anything is built."""
    if not isinstance(config, dict):
        raise ValueError(f"{where} is a {type(config).__name__}, expected a mapping of model options")
    name = config.get("name", "pieanet")
    if not isinstance(name, str) or name not in MODELS:
        raise ValueError(f"{where}: unknown model name {brief(name)}; expected one of {sorted(MODELS)}")
    parameters = inspect.signature(MODELS[name].__init__).parameters
    for key, value in config.items():
        if key == "name":
            continue
        if not isinstance(key, str) or key not in parameters or key == "self":
            raise ValueError(
                f"{where}: unknown key {brief(key)} for model {name!r}; expected one of "
                f"{', '.join(k for k in parameters if k != 'self')}"
            )
        default = parameters[key].default
        if default is None and value is None:
            continue
        if default is None and key in INT_RANGES:  # an optional integer (e.g. working_size)
            default = 0
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{where}: {key} = {brief(value)} must be true or false")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{where}: {key} = {brief(value)} must be an integer")
            low, high = INT_RANGES.get(key, INT_RANGE)
            if not low <= value <= high:
                raise ValueError(f"{where}: {key} = {value} is out of range; expected {low} to {high}")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{where}: {key} = {brief(value)} must be a finite number")
        elif isinstance(default, str) and not isinstance(value, str):
            raise ValueError(f"{where}: {key} = {brief(value)} must be a string")
    return config


def build_model(config):
    """A model from its config dict, e.g. ``{"name": "pieanet", "width": 32}`` or ``{"name": "official"}``."""
    config = dict(check_config(config))
    name = config.pop("name", "pieanet")
    if name not in MODELS:
        raise ValueError(f"unknown model name {name!r}; expected one of {sorted(MODELS)}")
    return MODELS[name](**config)


def start_weights(model, weights=None):
    """The weights a training run starts from: a scene backbone's ImageNet weights (PIEANet.load_pretrained), then
    ``weights`` (init_from's state dict) over them. ``weights`` may lack exactly the pretrained parts (a checkpoint
    made before the model had them: they keep their ImageNet / zero start, so the run starts where that checkpoint
    was); any other difference raises RuntimeError as load_state_dict does. BackboneWeightsError when the ImageNet
    weights cannot be read."""
    parts = model.pretrained_parts() if isinstance(model, PIEANet) else ()
    if parts:
        model.load_pretrained()
    if weights is None:
        return model
    missing = set(model.state_dict()) - set(weights)
    optional = bool(parts) and all(key.startswith(parts) for key in missing)
    model.load_state_dict(weights, strict=not (missing and optional))
    return model


def freeze_except(model, prefixes):
    """Train only the parameters of ``model`` whose state-dict names start with one of ``prefixes`` (train.trainable):
    those get requires_grad True, every other parameter False (a part the model freezes itself, such as a scene
    backbone, is trained only when a prefix names it). ``prefixes`` None leaves the model as it is. Returns the names
    of the trainable parameters; ValueError (one line) for a prefix that names no parameter."""
    if prefixes is None:
        return [name for name, p in model.named_parameters() if p.requires_grad]
    names = [name for name, _ in model.named_parameters()]
    for prefix in prefixes:
        if not any(name.startswith(prefix) for name in names):
            parts = sorted({name.split(".")[0] for name in names})
            raise ValueError(
                f"train.trainable: {brief(prefix)} names no parameter of the model; its parameters "
                f"start with {', '.join(parts)} (e.g. {names[0]})"
            )
    trained = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith(tuple(prefixes)))
        if parameter.requires_grad:
            trained.append(name)
    return trained


def resolve_device(device="auto"):
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def save_model(path, model, metadata=None):
    """Write a project checkpoint (weights + config) atomically: a temporary file in the same folder, then a rename."""
    model = contract.unwrap(model)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header = {"format": CHECKPOINT_FORMAT, "config": json.dumps(model.config)}
    header.update({k: str(v) for k, v in (metadata or {}).items()})
    with atomic_write(path) as tmp:
        save_file(state, str(tmp), metadata=header)


PICKLE_REFUSED = (
    "refused: it holds Python objects other than tensors and plain containers, which could run code when loaded"
)


def load_torch_state(path, expected):
    """torch.load(``path``, weights_only=True) on the CPU: the one place a pickle-based file (a training state, the
    released .pth) is read. A file holding other Python objects raises CheckpointError with the project's own message
    (torch's suggests retrying with weights_only=False, which would run the file's code); ``expected`` ends it. Other
    errors propagate."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # no cause chained: torch's advice is never shown, not even under --debug
        raise CheckpointError(f"{path}: {PICKLE_REFUSED}; expected {expected}") from None
    except Exception as e:
        if "weights_only" in str(e):  # any other type carrying torch's advice
            raise CheckpointError(f"{path}: {PICKLE_REFUSED}; expected {expected}") from None
        raise


def read_checkpoint(path):
    """(config, state_dict) of any checkpoint load_model accepts."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: checkpoint not found; expected a project checkpoint (.safetensors) or the "
            "released P-IEANet .pth; make the default one with `python train_wavelet.py --config "
            "configs/pieanet_corpus.yaml` (see checkpoints/README.md) or use the released weights "
            f"({RELEASED_NAME}, from {RELEASED_SOURCE})"
        )
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"  # torch.save's format
    if is_zip:
        check_unpacked_size(path)
    try:
        if not is_zip:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
            if metadata.get("format") != CHECKPOINT_FORMAT:
                raise CheckpointError(f"{path}: a safetensors file without a P-IEA model config in its metadata")
            config = json.loads(metadata["config"])
            return config, load_file(str(path))
        state = load_torch_state(
            path, "a project checkpoint (.safetensors), a training state (last.pt) or the released P-IEANet .pth"
        )
    except CheckpointError:
        raise
    except MemoryError as e:
        raise CheckpointError(
            f"{path}: too large to load (out of memory); expected a checkpoint of at most {MAX_PARAMETERS:,} parameters"
        ) from e
    except (SafetensorError, RuntimeError, OSError, ValueError, KeyError, EOFError, TypeError) as e:
        raise CheckpointError(
            f"{path}: unreadable checkpoint ({first_line(e, 120)}); expected a project "
            "checkpoint (.safetensors) or the released P-IEANet .pth"
        ) from e
    if isinstance(state, dict) and "model" in state and "config" in state:
        config = state["config"]
        if not isinstance(config, dict) or not isinstance(state["model"], dict):
            raise CheckpointError(
                f"{path}: a training state whose config is a {type(config).__name__} and weights a "
                f"{type(state['model']).__name__}; expected mappings"
            )
        return config.get("model", config), state["model"]
    if isinstance(state, dict) and RELEASED_KEY in state:
        return {"name": "official"}, {f"net.{k}": v for k, v in state.items()}
    raise CheckpointError(
        f"{path}: not a P-IEA checkpoint; expected a project checkpoint (.safetensors), a training "
        "state (last.pt) or the released P-IEANet state_dict"
    )


def check_unpacked_size(path):
    """Refuse, before anything is inflated, a torch.save zip that declares more unpacked bytes than any accepted
    checkpoint holds or far more than its own size (a deflated entry: a zip bomb). Raises CheckpointError."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise CheckpointError(
            f"{path}: unreadable checkpoint (a damaged zip: {str(e)[:120]}); expected a project "
            "checkpoint (.safetensors) or the released P-IEANet .pth"
        ) from e
    unpacked = sum(entry.file_size for entry in entries)
    limit = min(MAX_CHECKPOINT_UNPACKED, MAX_UNPACK_RATIO * Path(path).stat().st_size + (1 << 20))
    if unpacked > limit:
        raise CheckpointError(
            f"{path}: refused before unpacking: it declares {unpacked:,} bytes unpacked from "
            f"{Path(path).stat().st_size:,} (at most {limit:,} for a checkpoint this size; "
            "torch.save stores tensors uncompressed); expected a checkpoint of at most "
            f"{MAX_PARAMETERS:,} parameters"
        )


def activation_cost(config, skeleton):
    """(bytes per pixel, fixed bytes) of one image through the model of ``config``: the sum of every layer's output
    at two sizes, solved for the part that grows with the pixels and the part that does not. A model that works at its
    own fixed size (``native_size``: the released network, 79 GFLOP an image) is measured on the meta device
    (``skeleton``: nothing allocated, nothing computed); any other runs for real on two tiny images, which after
    check_config's ranges costs milliseconds, where the meta device's first elementwise op on strided views imports
    torch's compiler stack (about a second of every tool's start-up)."""
    sides = (256, 512) if contract.native_size(skeleton) else (64, 128)
    model = skeleton if sides[0] == 256 else build_model(config).eval()
    device = "meta" if model is skeleton else "cpu"
    totals = []
    for side in sides:
        total = [0]

        def add(module, inputs, output):
            if isinstance(output, torch.Tensor):
                total[0] += output.numel() * output.element_size()

        hooks = [m.register_forward_hook(add) for m in model.modules() if not list(m.children())]
        try:
            with torch.no_grad():
                model(torch.zeros(1, 3, side, side, device=device))
        finally:
            for hook in hooks:
                hook.remove()
        totals.append(total[0])
    small, large = sides[0] ** 2, sides[1] ** 2
    per_pixel = max(0.0, (totals[1] - totals[0]) / (large - small))
    return per_pixel, max(0.0, totals[0] - per_pixel * small)


def config_key(config):
    """A model config as one text, the same for equal configs (keys sorted)."""
    return json.dumps(config, sort_keys=True)


# activation_cost of the shipped checkpoints' config (checkpoints/pieanet_corpus*.safetensors), measured once and
# recorded, so opening the shipped model runs no test image through it (a second of every tool's start-up on a busy
# machine: each new input shape's first convolutions are slow); tests/test_safety.py measures it again
# (stage 4 runs at working_size 512, the older files at 256: the same network, the same cost)
SHIPPED_NETWORK = {
    "name": "pieanet",
    "width": 32,
    "lightness_blocks": 3,
    "attention_layers": 2,
    "heads": 4,
    "window": 8,
    "context": 15,
    "bands": 8,
    "use_dwt": True,
    "use_lightness": True,
    "use_structure": True,
    "scene_size": 64,
    "scene_channels": 16,
}
RECORDED_ACTIVATION_COSTS = {
    config_key({**SHIPPED_NETWORK, "working_size": size}): (482.5, 249856.0) for size in (256, 512)
}


def check_activations(path, config, skeleton):
    """Refuse a config whose activations exceed MAX_ACTIVATION_BYTES_PER_PIXEL or _FIXED (recorded for the shipped
    config, else measured: activation_cost); raises CheckpointError."""
    try:
        recorded = RECORDED_ACTIVATION_COSTS.get(config_key(config))
        per_pixel, fixed = recorded if recorded is not None else activation_cost(config, skeleton)
    except (RuntimeError, ValueError, TypeError, NotImplementedError, AssertionError, IndexError) as e:
        raise CheckpointError(
            f"{path}: unusable model config {brief(config)} (it fails on a test image: {first_line(e, 120)})"
        ) from e
    if per_pixel > MAX_ACTIVATION_BYTES_PER_PIXEL or fixed > MAX_ACTIVATION_BYTES_FIXED:
        raise CheckpointError(
            f"{path}: its config {brief(config)} costs {per_pixel:,.0f} bytes of activations per "
            f"pixel plus {fixed / 2**20:,.0f} MB per image, above the limits of "
            f"{MAX_ACTIVATION_BYTES_PER_PIXEL:,} bytes and {MAX_ACTIVATION_BYTES_FIXED / 2**20:.0f} "
            "MB"
        )


def check_weights(path, config, state):
    """Build the model on the meta device (nothing allocated) and compare it with the stored weights: parameter
    count, names, shapes, floating-point types and finite values. Raises CheckpointError."""
    try:
        check_config(config)
        with torch.device("meta"):
            skeleton = build_model(config)
    except (TypeError, ValueError, AssertionError, RuntimeError, ZeroDivisionError) as e:
        raise CheckpointError(f"{path}: unusable model config ({first_line(e)})") from e
    count = sum(p.numel() for p in skeleton.parameters())
    if count > MAX_PARAMETERS:
        raise CheckpointError(
            f"{path}: its config {brief(config)} makes a model of {count:,} parameters, above the "
            f"{MAX_PARAMETERS:,} limit"
        )
    expected = skeleton.state_dict()
    if not isinstance(state, dict) or set(state) != set(expected):
        names = set(state) if isinstance(state, dict) else set()
        odd = sorted(names ^ set(expected))
        raise CheckpointError(
            f"{path}: weights do not fit the model config {config} ({len(odd)} tensor name(s) differ, e.g. {odd[:2]})"
        )
    for key, want in expected.items():
        got = state[key]
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(want.shape):
            raise CheckpointError(
                f"{path}: weights do not fit the model config {config} ({key}: "
                f"{tuple(getattr(got, 'shape', ()))}, expected {tuple(want.shape)})"
            )
        if want.is_floating_point():
            if not got.is_floating_point():
                raise CheckpointError(f"{path}: {key} is {got.dtype}; expected floating-point weights")
            if not bool(torch.isfinite(got).all()):
                raise CheckpointError(f"{path}: {key} holds NaN or infinite values; expected finite weights")
    check_activations(path, config, skeleton)  # last: the weights fit this config, now what running it costs


def load_model(path, device="cpu", explicit_device=True):
    """The model stored at ``path``, in eval mode on ``device`` ("auto", "cpu", "cuda", ...). An ``.onnx`` file
    (export.py) runs in onnxruntime (models/onnx_model.py), where a CUDA device chosen automatically (``device``
    "auto", or ``explicit_device=False`` for one resolved from "auto" elsewhere, e.g. torchrun's cuda:LOCAL_RANK)
    falls back to the CPU when onnxruntime has no CUDA provider; a CUDA device asked for explicitly is then an
    error."""
    if Path(path).suffix.lower() == ".onnx":
        if not Path(path).is_file():
            raise CheckpointError(f"{path}: no such file")
        try:
            return OnnxModel(
                path, device=resolve_device(device), explicit_device=explicit_device and device not in (None, "auto")
            ).eval()
        except ValueError as e:
            raise CheckpointError(str(e)) from e
    config, state = read_checkpoint(path)
    check_weights(path, config, state)
    try:
        model = build_model(config)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: weights do not fit the model config {config} ({first_line(e)})") from e
    return model.to(resolve_device(device)).eval()
