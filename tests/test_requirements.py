"""One source for dependency versions: each requirements file states exactly what pyproject.toml states for the same
install (requirements.txt: the package's dependencies; -train, -export: the extras of those names; -dev: the 'test'
extra, which takes in the other two), so a version raised in one place and not the other fails here."""

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# requirements file -> what pyproject.toml lists for the same install
SAME_AS = {
    "requirements.txt": ("dependencies", None),
    "requirements-train.txt": ("optional-dependencies", "train"),
    "requirements-export.txt": ("optional-dependencies", "export"),
    "requirements-dev.txt": ("optional-dependencies", "test"),
}


def canonical(text):
    requirement = Requirement(text)
    return re.sub(r"[-_.]+", "-", requirement.name).lower(), str(requirement.specifier)


def from_file(name):
    """{package: specifier} of a requirements file and the files it takes in with -r."""
    found = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            found.update(from_file(line[3:].strip()))
        elif line:
            package, specifier = canonical(line)
            assert package not in found, f"{name}: {package} listed twice"
            found[package] = specifier
    return found


def from_pyproject(key, extra=None, seen=()):
    """{package: specifier} of pyproject.toml's dependencies (extra None) or of one extra, with the extras it takes
    in (p-iea[train,export]) and, for an extra, the package's own dependencies (an extra installs them too)."""
    listed = PROJECT["dependencies"] if extra is None else PROJECT["optional-dependencies"][extra]
    found = {} if extra is None else from_pyproject("dependencies")
    for text in listed:
        requirement = Requirement(text)
        if requirement.name == PROJECT["name"]:
            for inner in sorted(requirement.extras):
                found.update(from_pyproject(key, inner))
        else:
            package, specifier = canonical(text)
            found[package] = specifier
    return found


def test_the_requirements_files_state_what_pyproject_states():
    """Each file, installed over requirements.txt (as `pip install '.[extra]'` installs the extra over the package's
    dependencies), asks for the same packages and versions as its part of pyproject.toml."""
    for name, (key, extra) in SAME_AS.items():
        assert {**from_file("requirements.txt"), **from_file(name)} == from_pyproject(key, extra), name


def test_the_check_sees_a_version_that_differs():
    assert from_file("requirements-train.txt")["scipy"] == from_pyproject("optional-dependencies", "train")["scipy"]
    assert from_file("requirements.txt")["torch"] == "==2.13.0"  # the tested release, pinned in both
    assert canonical("SciPy >= 1.10") != canonical("scipy>=1.12")
