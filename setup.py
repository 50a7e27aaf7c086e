"""The build steps pyproject.toml cannot state, from the one list of the package's members (pieanet/members.py): the
folders of the checkout become subpackages (models/ -> pieanet.models, configs/rules/ -> pieanet.configs.rules) and
the tools at its root become modules of the package (make_heatmap.py -> pieanet.make_heatmap), as pieanet/__init__.py
makes them in a checkout, beside the library's own subpackages in pieanet/ (pieanet/training/), which are found, not
listed. Only those: a .py file dropped at the root is not swept into the wheel. Everything else about
the package (metadata, dependencies, package data) is in pyproject.toml."""

import ast
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def members():
    """(FOLDERS, TOOLS) of pieanet/members.py, read as literals (the build does not import the package)."""
    found = {}
    for node in ast.parse((ROOT / "pieanet" / "members.py").read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            found[node.targets[0].id] = ast.literal_eval(node.value)
    return found["FOLDERS"], found["TOOLS"]


FOLDERS, TOOLS = members()


class BuildPy(build_py):
    def find_package_modules(self, package, package_dir):
        modules = super().find_package_modules(package, package_dir)
        if package == "pieanet":
            modules += [(package, name, f"{name}.py") for name in TOOLS]
        return modules


if __name__ == "__main__":
    setup(
        cmdclass={"build_py": BuildPy},
        # pieanet/ and its own sub-packages (pieanet/heatmaps/, pieanet/training/, ...), then the members the build
        # copies in
        packages=[*find_packages(include=["pieanet", "pieanet.*"]), *(f"pieanet.{name}" for name in FOLDERS)],
        package_dir={"pieanet": "pieanet", **{f"pieanet.{name}": name.replace(".", "/") for name in FOLDERS}},
    )
