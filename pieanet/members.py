"""What the package ``pieanet`` is made of: the one list, read by pieanet/__init__.py (a checkout), setup.py (the
build: the wheel and ``pip install .``) and the tests that check the two give the same modules.

A checkout keeps these members where users know them, beside pieanet/ (``models/``, ``make_heatmap.py``); the build
copies them into the package (``pieanet/models/``, ``pieanet/make_heatmap.py``). Nothing else of the checkout
(``bench/``, ``tests/``, ``examples/``, ``setup.py``, a stray ``.py`` file at the root) is part of the package. The
library's own modules and subpackages live inside pieanet/ itself (``pieanet/evaluation.py``, ``pieanet/training/``)
in both, so they need no entry here (setup.py finds the subpackages).
"""

# folders of the checkout that are pieanet.<name> (a dotted name is a folder inside one: configs/rules)
FOLDERS = ("models", "utils", "datasets", "configs", "configs.rules", "checkpoints")
# the command-line tools at the checkout's root: <name>.py is pieanet.<name>
TOOLS = ("make_heatmap", "train_wavelet", "evaluate", "score", "compare_methods", "export")
