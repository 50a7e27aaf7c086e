"""P-IEA as a Python package: ``import pieanet; model = pieanet.load()``.

One package, two places its members live (the list: pieanet/members.py). Installed (``pip install .``), the flat
folders and scripts of the checkout are built into this folder (``pieanet/models/``, ``pieanet/make_heatmap.py``;
setup.py). In a checkout they stay where users know them, beside this folder (``models/``, ``make_heatmap.py``), and
the finder below imports exactly those members from there, so ``pieanet.models`` is ``models/`` and
``pieanet.make_heatmap`` is ``make_heatmap.py``: no links (a checkout made without symlinks, e.g. by Git for Windows,
or a zip runs as it is), no top-level name but ``pieanet``, and nothing else of the checkout (``pieanet.bench``,
``pieanet.tests``, ``pieanet.setup``) importable, as when installed.
"""

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pieanet.members import FOLDERS, TOOLS

if TYPE_CHECKING:  # the hints only: importing torch and numpy here would slow every `import pieanet`
    import numpy as np
    import torch

_HERE = Path(__file__).resolve().parent
_CHECKOUT = _HERE.parent


class CheckoutMembers(importlib.abc.MetaPathFinder):
    """Finds ``pieanet.<member>`` beside pieanet/ in a checkout, for the members of pieanet/members.py only; their
    own submodules (``pieanet.models.inference``) are then found in the member's folder as usual."""

    def __init__(self, checkout):
        self.checkout = Path(checkout)

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.partition(".")
        if package != __name__ or not name or "." in name:
            return None
        if name in TOOLS:
            return importlib.util.spec_from_file_location(fullname, self.checkout / f"{name}.py")
        if name not in FOLDERS:
            return None
        folder = self.checkout / name
        if (folder / "__init__.py").is_file():
            return importlib.util.spec_from_file_location(
                fullname, folder / "__init__.py", submodule_search_locations=[str(folder)]
            )
        spec = importlib.machinery.ModuleSpec(fullname, None, is_package=True)  # a data folder: a namespace
        spec.submodule_search_locations = [str(folder)]
        return spec


# a checkout: the members are not in this folder but beside it (an installed copy holds pieanet/models/ itself)
if (
    not (_HERE / "models").is_dir()
    and (_CHECKOUT / "models" / "__init__.py").is_file()
    and (_CHECKOUT / "make_heatmap.py").is_file()
    and not any(isinstance(finder, CheckoutMembers) for finder in sys.meta_path)
):
    sys.meta_path.append(CheckoutMembers(_CHECKOUT))


def load(path: "str | Path | None" = None, device: "str | torch.device" = "cpu") -> "torch.nn.Module":
    """A P-IEANet (project checkpoint, training state, the released .pth or ``"released"``: the file
    $P_IEA_RELEASED_WEIGHTS names) in eval mode on ``device``; None = the default checkpoint. The model maps
    B x 3 x H x W RGB in [0, 1] to B x 1 x H x W residuals; call it under ``torch.no_grad()`` (or use ``predict``),
    or autograd keeps every activation (about twice the memory)."""
    from pieanet.models import DEFAULT_CHECKPOINT, checkpoint_file, load_model

    return load_model(checkpoint_file(path or DEFAULT_CHECKPOINT), device=device)


def predict(
    photo: "str | Path | np.ndarray",
    model: "torch.nn.Module | None" = None,
    size: int | None = None,
    tile: int | None = None,
) -> "np.ndarray":
    """The residual map of one photo as the tools compute it (in torch; make_heatmap's torch-free default gives the
    same map within 1e-4, models/torch_free.py): H x W float32 at the photo's resolution, r > 0
    under-exposed, each pixel within [-grey, 1 - grey] of the photo's grey (0..1): the ideal's grey lies in [0, 1].
    ``photo``: a file (read as make_heatmap reads it: EXIF rotation, HEIC, RAW) or an H x W x 3 RGB array: uint8
    (0-255), uint16 (divided by 65535) or finite float in [0, 1]; anything else (NaN or
    infinite pixels, floats outside [0, 1], bool, complex, other integer types) is a ValueError, never a map
    computed from input outside that contract; ``model``: from ``load`` (None: the shipped checkpoint).
    No gradients; at the model's working size with guided upsampling (``size``: another longer side, 0 = native)
    and in tiles of ``tile`` px when given (models.inference.predict_residual)."""
    from pieanet.utils.image_io import load_image, photo_array
    from pieanet.models.inference import predict_residual

    image = load_image(photo) if isinstance(photo, (str, Path)) else photo_array(photo)
    return predict_residual(load() if model is None else model, image, size=size, tile=tile)
