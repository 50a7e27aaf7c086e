"""The networks, their contract and their loading: ``build_model(config)``, ``load_model(path)``, ``save_model(path,
model)`` and the checkpoint checks live in models/loading.py and are taken from here (``from pieanet.models import
load_model``) when first asked for. Why not at import: they need torch (1.5 s of CPU), and the command line's torch-free
path (models/torch_free.py) imports this package for models/contract.py alone."""

import importlib
import importlib.util
from typing import TYPE_CHECKING

from pieanet.utils.shipped import DEFAULT_CHECKPOINT, DEFAULT_ONNX  # noqa: F401 (part of this package's API)

if TYPE_CHECKING:  # what a static checker sees: the names of models/loading.py, so a misspelt one is still an error
    from pieanet.models.loading import *  # noqa: F401, F403
else:  # at run time: models/loading.py is imported when one of its names is first asked for

    def __getattr__(name):
        # a submodule (pieanet.models.contract) is imported as one; any other name is models/loading.py's
        if name.startswith("__") or importlib.util.find_spec(f"{__name__}.{name}") is not None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        loading = importlib.import_module(f"{__name__}.loading")
        try:
            return getattr(loading, name)
        except AttributeError:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
