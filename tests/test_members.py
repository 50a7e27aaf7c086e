"""The package is its members (pieanet/members.py) and nothing else: in a checkout (pieanet/__init__.py's finder) and
in what the build puts into the wheel (setup.py) the same pieanet.* modules exist, `pieanet.bench`, `pieanet.tests`
and `pieanet.setup` exist in neither, a stray .py file at the root is not swept in, and the package data is every data
file the package's code names."""

import ast
import importlib.util
import json
import shutil
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

from pieanet.members import FOLDERS, TOOLS
from test_package import NOT_COPIED  # what a copy of the checkout leaves out

ROOT = Path(__file__).resolve().parents[1]
# data files in the members' folders that the package does not ship, and why
NOT_SHIPPED = {
    "checkpoints/pieanet_corpus_v1.safetensors": "stage 0, the input of configs/pieanet_corpus_v2.yaml in a checkout",
    "checkpoints/pieanet_corpus_v2.safetensors": "stage 1, the input of configs/pieanet_corpus_v3.yaml in a checkout",
    "checkpoints/pieanet_corpus_v3.safetensors": "stage 2, the input of configs/pieanet_corpus_stage3.yaml",
    "checkpoints/pieanet_corpus_stage3.safetensors": "stage 3, the input of configs/pieanet_corpus.yaml in a checkout",
    "datasets/teacher_photos_corpus10.csv": "a candidate's photo list (docs/experiments.md), named on its command line",
}
OUTSIDE = ("bench", "tests", "setup", "examples", "docs", "img_to_pred", "pieanet", "stray")


def module_names(top, files):
    """pieanet.* names of ``files`` (paths relative to ``top``) as the old path extension made them: pieanet/x.py,
    x.py and folder/.../x.py each pieanet.<dotted path>."""
    names = set()
    for path in files:
        parts = path.with_suffix("").parts
        parts = parts[1:] if parts[0] == "pieanet" else parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        names.add(".".join(("pieanet", *parts)))
    return names


def python_files(top):
    return sorted(
        path.relative_to(top)
        for path in top.rglob("*.py")
        if not any(part.startswith(".") or part in ("__pycache__", "build") for part in path.relative_to(top).parts)
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(checkout copy with a stray.py at its root, the build's pieanet/ folder): setup.py build_py, as pip runs it
    for the wheel."""
    source, lib = tmp_path_factory.mktemp("src") / "p-iea", tmp_path_factory.mktemp("lib")
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_COPIED))
    (source / "stray.py").write_text("print('a file a user left at the root')\n")
    done = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(lib)],
        cwd=source,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return source, lib / "pieanet"


def test_the_members_are_the_checkouts_folders_and_tools():
    assert sorted(path.stem for path in ROOT.glob("*.py") if path.name != "setup.py") == sorted(TOOLS)
    assert all((ROOT / name.replace(".", "/")).is_dir() for name in FOLDERS)


@pytest.mark.parametrize("name", OUTSIDE)
def test_nothing_but_the_members_is_importable_in_a_checkout(name):
    assert importlib.util.find_spec(f"pieanet.{name}") is None


@pytest.mark.subprocess
def test_checkout_and_wheel_hold_the_same_modules(built):
    source, package = built
    wheel = module_names(package, python_files(package))
    assert {f"pieanet.{name}" for name in TOOLS} | {"pieanet", "pieanet.models.inference"} <= wheel
    # the library's own subpackages (found by setup.py, not listed), every module of pieanet/ among them
    library = module_names(
        ROOT, [path.relative_to(ROOT) for path in (ROOT / "pieanet").rglob("*.py") if "__pycache__" not in path.parts]
    )
    assert {"pieanet.training.run", "pieanet.training.config", "pieanet.scoring.rules"} <= library <= wheel
    assert "pieanet.stray" not in wheel
    assert not any(name.startswith(("pieanet.bench", "pieanet.tests")) for name in wheel)
    # every pieanet.* name the old path extension gave the checkout, looked up by the checkout's own finder
    candidates = sorted(module_names(source, python_files(source)))
    code = (
        "import importlib.util, json, sys\n"
        "found = []\n"
        "for name in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        found += [name] if importlib.util.find_spec(name) else []\n"
        "    except ModuleNotFoundError:\n"
        "        pass\n"
        "print(json.dumps(found))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(candidates)], cwd=source, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert set(json.loads(done.stdout)) == wheel


def strings(package):
    """Every string constant (docstrings too) of the package's modules."""
    found = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.add(node.value)
    return found


@pytest.mark.subprocess
def test_package_data_is_listed_once_and_is_what_the_code_reads(built):
    _, package = built
    shipped = {
        path.relative_to(package).as_posix() for path in package.rglob("*") if path.is_file() and path.suffix != ".py"
    }
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for name, patterns in listed.items():  # each pattern ships something (a misspelt name would ship nothing)
        folder = name.removeprefix("pieanet.").replace(".", "/")
        assert all(any(fnmatch(file, f"{folder}/{pattern}") for file in shipped) for pattern in patterns), name
    tracked = subprocess.run(
        ["git", "ls-files", *(name.replace(".", "/") for name in FOLDERS)], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    data = {name for name in tracked if not name.endswith(".py")} or {
        path.relative_to(ROOT).as_posix()
        for name in FOLDERS
        for path in (ROOT / name.replace(".", "/")).iterdir()
        if path.is_file() and path.suffix != ".py"
    }
    # every data file is either shipped or left out for a reason, and what the code names by file name is shipped
    assert shipped | set(NOT_SHIPPED) == data and not shipped & set(NOT_SHIPPED)
    text = "\n".join(strings(package))
    named = {name for name in data if Path(name).name in text}
    assert {"datasets/photo_manifest_keys.tsv", "checkpoints/pieanet_corpus.safetensors"} <= named
    assert named <= shipped, sorted(named - shipped)
    # the configs (read as a folder by utils/config.py) are all shipped: configs/ holds no candidate
    assert {name for name in data if name.startswith("configs/")} <= shipped


@pytest.mark.subprocess
def test_the_built_package_finds_its_data(built):
    _, package = built
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from pieanet.datasets import photos; "
        "from pieanet.utils import shipped, config; "
        "print(all(p.is_file() for p in (photos.MANIFEST, photos.KEYS_MANIFEST, shipped.DEFAULT_CHECKPOINT, "
        "shipped.DEFAULT_ONNX)), photos.MANIFEST.is_relative_to(sys.argv[1]), config.shipped_names())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(package.parent)], capture_output=True, text=True, cwd=package.parent
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found, inside, names = done.stdout.strip().split(" ", 2)
    assert (found, inside) == ("True", "True")
    assert names == ", ".join(sorted(path.stem for path in (ROOT / "configs").glob("*.yaml")))


@pytest.mark.subprocess
def test_a_type_checker_resolves_every_pieanet_import(built, tmp_path):
    """mypy on the build (where the members are inside the package, as installed) finds every pieanet.* module and
    name the code imports, and the package type-checks: the type hints of the public API (pieanet.load and predict,
    the model contract, the runtime, the tools' library entry points) agree with the code. A planted import of
    pieanet.bench and of a name models/ lacks are the only errors it reports, which shows the check sees them."""
    pytest.importorskip("mypy", reason="mypy is not installed (pip install -r requirements-dev.txt)")
    package = tmp_path / "lib" / "pieanet"
    shutil.copytree(built[1], package)
    (package / "_probe.py").write_text(
        "import pieanet.bench\nfrom pieanet.models import no_such_name\nfrom pieanet.utils import cli\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "-p",
            "pieanet",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        cwd=package.parent,
        capture_output=True,
        text=True,
    )
    assert "error:" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    unresolved = [
        line
        for line in done.stdout.splitlines()
        if "[import-not-found]" in line
        or "[import-untyped]" in line
        or ("[attr-defined]" in line and 'Module "pieanet' in line)
    ]
    assert [line.split(": error")[0] for line in unresolved] == ["pieanet/_probe.py:1", "pieanet/_probe.py:2"], (
        unresolved
    )
    others = [line for line in done.stdout.splitlines() if ": error:" in line and "_probe.py" not in line]
    assert not others, "\n".join(others)
