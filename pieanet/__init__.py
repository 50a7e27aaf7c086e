"""P-IEA as a Python package: ``import pieanet; model = pieanet.load()``.

In a checkout the members of this package are links to the flat folders and scripts beside it (``pieanet.models`` is
``models/``, ``pieanet.make_heatmap`` is ``make_heatmap.py``); ``pip install .`` copies the same files into
``pieanet/``, so an installed copy adds no top-level name but ``pieanet`` (no ``models``, ``utils`` or ``datasets``
to shadow other packages).
"""


def load(path=None, device="cpu"):
    """A P-IEANet (project checkpoint, training state or the released .pth) in eval mode on ``device``; None = the
    default checkpoint. The model maps B x 3 x H x W RGB in [0, 1] to B x 1 x H x W residuals."""
    from pieanet.models import DEFAULT_CHECKPOINT, load_model
    return load_model(path or DEFAULT_CHECKPOINT, device=device)
