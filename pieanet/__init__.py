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
    """A P-IEANet (project checkpoint, training state or the released .pth) in eval mode on ``device``; None = the
    default checkpoint. The model maps B x 3 x H x W RGB in [0, 1] to B x 1 x H x W residuals."""
    from pieanet.models import DEFAULT_CHECKPOINT, load_model
    return load_model(path or DEFAULT_CHECKPOINT, device=device)
