"""Console commands of an installed copy (``pip install .``): p-iea-heatmap, p-iea-train, p-iea-evaluate, ...

Each runs the flat script of the same job; a command whose extra is not installed says which one to install."""
import importlib
import sys

EXTRA_FOR = {"make_heatmap": None, "train_wavelet": "train", "evaluate": "train", "score": "train",
             "compare_methods": "train", "export": "export"}


def _run(script):
    try:
        module = importlib.import_module(f"pieanet.{script}")
    except ModuleNotFoundError as e:
        if EXTRA_FOR[script] is None or e.name is None or e.name.split(".")[0] == "pieanet":
            raise
        print(f"p-iea: {script} needs {e.name}, which comes with the '{EXTRA_FOR[script]}' extra: "
              f"pip install 'p-iea[{EXTRA_FOR[script]}]'", file=sys.stderr)
        return 2
    return module.main()


def heatmap():
    sys.exit(_run("make_heatmap"))


def train():
    sys.exit(_run("train_wavelet"))


def evaluate():
    sys.exit(_run("evaluate"))


def score():
    sys.exit(_run("score"))


def compare():
    sys.exit(_run("compare_methods"))


def export():
    sys.exit(_run("export"))
