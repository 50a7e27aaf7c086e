"""Console commands of an installed copy (``pip install .``): p-iea-heatmap, p-iea-train, p-iea-evaluate, ...

Each runs the flat script of the same job; a command whose extra is not installed says what to install: the extra
from the P-IEA checkout (p-iea is not on PyPI) or its packages by name."""

import importlib
import importlib.metadata
import sys


def extra_requirements(extra):
    """The requirements of the package's ``extra`` as the installed copy's metadata lists them (pyproject.toml's
    [project.optional-dependencies]); none where p-iea is not installed."""
    try:
        requirements = importlib.metadata.requires("p-iea") or []
    except importlib.metadata.PackageNotFoundError:
        return []
    marker = f'extra == "{extra}"'
    return [
        requirement.split(";")[0].strip()
        for requirement in requirements
        if requirement.partition(";")[2].strip().replace("'", '"') == marker
    ]


def _run(script, extra, passive=False):
    from pieanet.utils.errors import EXIT_USAGE
    from pieanet.utils.startup import passive_waits, quiet_interrupts

    quiet_interrupts(script)  # Ctrl-C during the slow imports: exit 130, one line
    if passive:  # a tool that overlaps threads: OpenMP threads sleep when idle (startup.passive_waits)
        passive_waits()
    try:
        module = importlib.import_module(f"pieanet.{script}")
    except ModuleNotFoundError as e:
        if extra is None or e.name is None or e.name.split(".")[0] == "pieanet":
            raise
        packages = " ".join(f"'{requirement}'" for requirement in extra_requirements(extra))
        print(
            f"p-iea: {script} needs {e.name}, which comes with the '{extra}' extra: pip install '.[{extra}]' in the "
            f"P-IEA checkout" + (f", or pip install {packages}" if packages else ""),
            file=sys.stderr,
        )
        return EXIT_USAGE
    return module.main()


def _command(script, extra=None, passive=False):
    """A console command (an entry point of pyproject.toml's [project.scripts]) running ``script``, which needs the
    packages of ``extra``."""

    def command():
        sys.exit(_run(script, extra, passive))

    return command


heatmap = _command("make_heatmap", passive=True)
train = _command("train_wavelet", "train")
evaluate = _command("evaluate", "train")
score = _command("score", "train")
compare = _command("compare_methods", "train")
export = _command("export", "export")
