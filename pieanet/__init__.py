"""P-IEA as a Python package: ``import pieanet; model = pieanet.load()``.

One package, two places its members live. Installed (``pip install .``), the flat folders and scripts of the checkout
are built into this folder (``pieanet/models/``, ``pieanet/make_heatmap.py``; the mapping is pyproject.toml's
``package-dir`` and setup.py). In a checkout they stay where users know them, beside this folder (``models/``,
``make_heatmap.py``), and the lines below add the checkout's root to this package's search path, so
``pieanet.models`` is ``models/`` and ``pieanet.make_heatmap`` is ``make_heatmap.py``: no links (a checkout made
without symlinks, e.g. by Git for Windows, or a zip runs as it is) and no top-level name but ``pieanet``.
"""
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_CHECKOUT = _HERE.parent
# a checkout: the members are not in this folder but beside it (an installed copy holds pieanet/models/ itself)
if not (_HERE / "models").is_dir() and (_CHECKOUT / "models" / "__init__.py").is_file() \
        and (_CHECKOUT / "make_heatmap.py").is_file():
    __path__.append(str(_CHECKOUT))  # noqa: F821 (a package's search path, set by the import system)


def load(path=None, device="cpu"):
    """A P-IEANet (project checkpoint, training state, the released .pth or ``"released"``: the file
    $P_IEA_RELEASED_WEIGHTS names) in eval mode on ``device``; None = the default checkpoint. The model maps B x 3 x H x W RGB in [0, 1] to B x 1 x H x W residuals; call it under
    ``torch.no_grad()`` (or use ``predict``), or autograd keeps every activation (about twice the memory)."""
    from pieanet.models import DEFAULT_CHECKPOINT, checkpoint_file, load_model
    return load_model(checkpoint_file(path or DEFAULT_CHECKPOINT), device=device)


def predict(photo, model=None, size=None, tile=None):
    """The residual map of one photo as the tools compute it: H x W float32 at the photo's resolution,
    r > 0 under-exposed, each pixel within [-grey, 1 - grey] of the photo's grey (0..1): the ideal's grey lies in
    [0, 1]. ``photo``: a file (read as make_heatmap reads it: EXIF rotation, HEIC, RAW) or an
    H x W x 3 RGB array (uint8, or float in [0, 1]); ``model``: from ``load`` (None: the shipped checkpoint).
    No gradients; at the model's working size with guided upsampling (``size``: another longer side, 0 = native)
    and in tiles of ``tile`` px when given (models.inference.predict_residual)."""
    import numpy as np

    from pieanet.utils.image_io import load_image
    from pieanet.models.inference import predict_residual

    if isinstance(photo, (str, Path)):
        image = load_image(photo)
    else:
        image = np.asarray(photo)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an H x W x 3 RGB array, got shape {image.shape}")
        image = image.astype(np.float32) / 255 if image.dtype == np.uint8 else image.astype(np.float32)
    return predict_residual(load() if model is None else model, image, size=size, tile=tile)
