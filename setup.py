"""The one build step pyproject.toml cannot state: the flat scripts at the checkout's root (make_heatmap.py,
train_wavelet.py, ...) become modules of the package, pieanet.make_heatmap and so on, as pieanet/__init__.py makes
them in a checkout. The folders (models/ -> pieanet.models, ...) are mapped by pyproject.toml's package-dir;
everything else about the package is there too."""
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def flat_scripts():
    """Every .py file at the checkout's root but this one."""
    return sorted(path.name for path in ROOT.glob("*.py") if path.name != "setup.py")


class BuildPy(build_py):
    def find_package_modules(self, package, package_dir):
        modules = super().find_package_modules(package, package_dir)
        if package == "pieanet":
            modules += [(package, Path(name).stem, name) for name in flat_scripts()]
        return modules


if __name__ == "__main__":
    setup(cmdclass={"build_py": BuildPy})
