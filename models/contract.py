"""What a residual model offers the code that runs it, declared in one place.

A residual model is an ``nn.Module`` mapping B x 3 x H x W RGB in [0, 1] to B x 1 x H x W residuals in [-1, 1]. It may
declare these attributes; a model that does not takes the default in DEFAULTS:

    working_size      the longer side (px) the tools run it at by default: larger photos are shrunk to it and the map is
                      brought back with guided upsampling (models.inference). None: native resolution.
    tile_multiple     padding and tile origins on multiples of it (P-IEANet: 8 x window). 1.
    receptive_radius  pixels of context each output pixel depends on; math.inf: the whole image (never tiled).
                      Undeclared: OVERLAP_IN_MULTIPLES tile multiples (P-IEANet: 192 px against a measured radius of
                      about 145 px; tests/test_contract.py measures it).
    native_size       the model resizes every photo to this size itself (the released network): called on the whole
                      image, --size and --tile do not apply. None.
    uses_scene        the model judges the whole photo once (``model.scene(x)``) and takes that view with each tile
                      (``model(tile, scene=..., region=...)``). False.
    config            the dict that rebuilds it (models.build_model). {}.

Every other module reads these through the functions below (never ``getattr`` on a model), and the decisions that
follow from them live here too: whether a photo runs in tiles (``tile_for``), the tile margin (``default_overlap``) and
the shape the network works at (``working_shape``, ``scaled_shape``).
"""

import math
from collections.abc import Sequence
from typing import Any

# a residual model: a torch nn.Module, models/onnx_model.OnnxModel or models/torch_free.TorchFreeModel; the contract
# reads only the attributes below, so any object is one (an undeclared property takes its default)
Model = Any

# what a model that does not declare a property gets; receptive_radius None: OVERLAP_IN_MULTIPLES tile multiples,
# config None: {} (receptive_radius(), config())
DEFAULTS = {
    "working_size": None,
    "tile_multiple": 1,
    "receptive_radius": None,
    "native_size": None,
    "uses_scene": False,
    "config": None,
}
OVERLAP_IN_MULTIPLES = 3
# --size below this is refused for any model (a map of a few pixels says nothing about a photo); P-IEANet's own
# minimum is higher (minimum_size)
MIN_WORKING_SIZE = 16


def unwrap(model: Model) -> Model:
    """The model itself, out of a DistributedDataParallel (or DataParallel) wrapper."""
    return getattr(model, "module", model)


def _declared(model: Model, name: str) -> Any:
    return getattr(model, name, DEFAULTS[name])


# ------------------------------------------------------------------------------------------------ properties
def working_size(model: Model) -> int | None:
    return _declared(model, "working_size")


def tile_multiple(model: Model) -> int:
    return _declared(model, "tile_multiple")


def receptive_radius(model: Model) -> float:
    """Pixels of context an output pixel depends on (math.inf: the whole image)."""
    radius = _declared(model, "receptive_radius")
    return OVERLAP_IN_MULTIPLES * tile_multiple(model) if radius is None else radius


def native_size(model: Model) -> int | None:
    return _declared(model, "native_size")


def uses_scene(model: Model) -> bool:
    return bool(_declared(model, "uses_scene"))


def config(model: Model) -> dict:
    return _declared(model, "config") or {}


# ------------------------------------------------------------------------------------------------ decisions
def round_up(value: float, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def is_global(model: Model) -> bool:
    """True when a model's output at a pixel may depend on the whole image (tiling would change its map)."""
    return not math.isfinite(receptive_radius(model))


def tile_for(model: Model, tile: int | None) -> int | None:
    """The tile size to use for ``model``: None for one pass (no tile asked, a model that resizes to its own
    native size, or one whose receptive field is the whole image). The one place that decides whether to tile."""
    if not tile or native_size(model) or is_global(model):
        return None
    return tile


def default_overlap(model: Model) -> int:
    """The margin of context around each tile: the receptive radius in whole pixels (0 for a global model, which is
    never tiled)."""
    radius = receptive_radius(model)
    return int(radius) if math.isfinite(radius) else 0


def minimum_tile(model: Model) -> int:
    """The smallest tile that leaves room for one tile multiple inside the model's context margins."""
    multiple = tile_multiple(model)
    return 2 * round_up(default_overlap(model), multiple) + multiple


def minimum_size(model: Model) -> int:
    """The smallest working size (--size) worth running ``model`` at: its tile multiple (P-IEANet: 8 x window, the
    span of one attention window at its coarsest level; below it the photo is mostly padding), at least
    MIN_WORKING_SIZE."""
    return max(tile_multiple(model), MIN_WORKING_SIZE)


def scaled_shape(height: int, width: int, longer: int) -> tuple[int, int]:
    """(h, w) of a height x width image resized so that its longer side is ``longer`` (each side at least 1, rounding
    half to even)."""
    scale = longer / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def working_side(model: Model, size: int | None = None) -> int | None:
    """The longer side the network runs at: ``size`` (0 = native) or, when None, the model's working_size; None for
    native resolution."""
    return (working_size(model) if size is None else size) or None


def working_shape(model: Model, shape: Sequence[int], size: int | None = None) -> tuple[int, int]:
    """(h, w) at which ``model`` sees an image of ``shape`` (h, w, ...) run at ``size`` (working_side): shrunk when
    its longer side is above the working side, else its own; a model with a native_size is called on the image as
    it is (it resizes inside)."""
    height, width = shape[:2]
    side = working_side(model, size)
    if native_size(model) or side is None or max(height, width) <= side:
        return height, width
    return scaled_shape(height, width, side)


def padding_multiple(model: Model) -> int:
    """What the model pads its input to a multiple of: its tile multiple (1 for a model with a native_size, which
    resizes instead)."""
    return 1 if native_size(model) else tile_multiple(model)


def padded_shape(model: Model, shape: Sequence[int]) -> tuple[int, int]:
    """(h, w) of an image of ``shape`` as the model pads it (padding_multiple)."""
    multiple = padding_multiple(model)
    return round_up(shape[0], multiple), round_up(shape[1], multiple)


def scene_context(model: Model, x: Any) -> dict:
    """The keyword arguments every tile of photo ``x`` is called with: the whole photo's scene for a model that
    judges it, else none."""
    return {"scene": model.scene(x)} if uses_scene(model) else {}


# where an exported ONNX file (export.py) carries the model's config (JSON, models.build_model's) and the properties
# above as its graph has them (JSON; receptive_radius null: the whole image): models/onnx_model.py and
# models/torch_free.py read them from the file's metadata
ONNX_CONFIG_KEY = "p_iea.config"
ONNX_CONTRACT_KEY = "p_iea.contract"
