"""`pip install .` into a fresh virtual environment: the commands and the Python API work from another folder, the
package data is installed, and the only top-level name installed is `pieanet`."""

import csv
import os
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.subprocess]
# copied when git cannot list the checkout's files: everything but these
NOT_COPIED = (
    ".git",
    ".venv",
    "venv",
    "data",
    "experiments",
    "outputs",
    "runs",
    "build",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".benchmarks",
)


def is_environment(folder):
    return (folder / "pyvenv.cfg").is_file()


def checkout_files():
    """The checkout's files relative to ROOT, as git sees them: tracked ones and untracked ones it does not ignore;
    None without git, or when ROOT is not a git checkout of its own (e.g. inside another repository that ignores it).
    Files inside a virtual environment (a folder holding pyvenv.cfg) are left out."""
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    if Path(top).resolve() != ROOT:
        return None
    files = [Path(name) for name in os.fsdecode(listed).split("\0") if name]
    environments = {name.parent for name in files if name.name == "pyvenv.cfg" and name.parent != Path(".")}
    return [name for name in files if not environments.intersection(name.parents)]


def copy_checkout(target):
    files = checkout_files()
    if files is None:
        by_name = shutil.ignore_patterns(*NOT_COPIED)
        shutil.copytree(
            ROOT,
            target,
            ignore=lambda folder, names: (
                set(by_name(folder, names)) | {name for name in names if is_environment(Path(folder) / name)}
            ),
        )
        return
    for name in files:
        source, copy = ROOT / name, target / name
        if not source.is_file():
            continue  # deleted in the working tree, not yet in a commit
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, copy)


def see_running_site_packages(env_dir):
    """Make the venv at env_dir import what this interpreter imports (torch, setuptools, ...) after its own
    packages. ``system_site_packages`` would not do: it shows the base interpreter's site-packages, and when the
    tests run inside a virtual environment the packages are in that environment's, not there. addsitedir also
    reads those folders' .pth files, as this interpreter did."""
    folders = [folder for folder in site.getsitepackages() if os.path.isdir(folder)]
    if site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
        folders.append(site.getusersitepackages())
    (site_packages(env_dir) / "_running_interpreter.pth").write_text(
        "import site; " + "; ".join(f"site.addsitedir({folder!r})" for folder in folders) + "\n"
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    env_dir, source = tmp_path_factory.mktemp("venv"), tmp_path_factory.mktemp("src") / "p-iea"
    # a copy, so the build's own folders (build/, *.egg-info) never land in the checkout
    copy_checkout(source)
    # torch, the other requirements and setuptools come from this interpreter: nothing is downloaded
    venv.create(env_dir, with_pip=False)
    see_running_site_packages(env_dir)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            env_dir / "bin" / "python",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            str(source),
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.fail(f"pip install . failed: {done.stderr[-2000:]}")
    return env_dir


def site_packages(env_dir):
    return next((env_dir / "lib").glob("python3*/site-packages"))


def test_only_pieanet_is_a_new_top_level_name(installed):
    record = next(site_packages(installed).glob("p_iea-*.dist-info")) / "RECORD"
    top = {line.split("/")[0].split(",")[0] for line in record.read_text().splitlines()}
    assert {name for name in top if not name.endswith(".dist-info") and name != "__pycache__"} <= {"pieanet", "..", ""}
    assert "pieanet" in top
    for name in ("models", "utils", "datasets", "make_heatmap", "evaluate"):
        assert not (site_packages(installed) / name).exists(), name


def test_python_api_and_heatmap_command_work_from_another_folder(installed, tmp_path):
    photo = (np.linspace(0, 255, 64 * 48 * 3) % 256).astype(np.uint8).reshape(48, 64, 3)
    Image.fromarray(photo).save(tmp_path / "p.png")
    python = installed / "bin" / "python"
    api = subprocess.run(
        [
            python,
            "-c",
            "import pieanet, torch; m = pieanet.load(); "
            "print(tuple(m(torch.rand(1, 3, 40, 56)).shape), pieanet.__file__)",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert api.returncode == 0, api.stderr
    assert api.stdout.startswith("(1, 1, 40, 56)") and str(site_packages(installed)) in api.stdout
    done = subprocess.run(
        [installed / "bin" / "p-iea-heatmap", "--input", "p.png", "--output", "out"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "p_exposure.png").is_file() and (tmp_path / "out" / "summary.csv").is_file()


def test_default_folders_of_the_installed_command_are_the_current_folder(installed, tmp_path):
    (tmp_path / "img_to_pred").mkdir()
    Image.fromarray(np.full((32, 32, 3), 120, np.uint8)).save(tmp_path / "img_to_pred" / "grey.png")
    done = subprocess.run([installed / "bin" / "p-iea-heatmap"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "outputs" / "grey_exposure.png").is_file()


@pytest.mark.parametrize(
    "name",
    [
        "checkpoints/pieanet_corpus.safetensors",
        "checkpoints/pieanet_corpus.onnx",
        "configs/base.yaml",
        "configs/pieanet_synth.yaml",
        "configs/rules/portrait.yaml",
        "configs/rules/README.md",
        "datasets/photo_manifest.tsv",
        "make_heatmap.py",
    ],
)
def test_package_data_is_installed(installed, name):
    assert (site_packages(installed) / "pieanet" / name).read_bytes() == (ROOT / name).read_bytes()


def test_installed_copy_finds_its_configs_by_name_and_its_photo_manifest(installed, tmp_path):
    python = installed / "bin" / "python"
    configs = subprocess.run(
        [
            python,
            "-c",
            "from pieanet.training.run import resolve_config as r; "
            "a, b = r('pieanet_synth'), r('configs/pieanet_synth.yaml'); "
            "print(a == b, a['train']['epochs'])",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert configs.returncode == 0, configs.stderr
    assert configs.stdout.split() == ["True", "12"]
    assert (
        subprocess.run(
            [installed / "bin" / "p-iea-train", "--config", "pieanet_synth", "--help"],
            capture_output=True,
            cwd=tmp_path,
        ).returncode
        == 0
    )
    manifest = subprocess.run(
        [python, "-c", "from pieanet.datasets import photos; print(len(photos.load_manifest()) > 0)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert manifest.returncode == 0 and manifest.stdout.strip() == "True", manifest.stderr
    assert (
        subprocess.run(
            [python, "-m", "pieanet.datasets.photos", "--help"], capture_output=True, cwd=tmp_path
        ).returncode
        == 0
    )


def read_summary(folder):
    with open(folder / "summary.csv", newline="") as f:
        return {row["file"]: row for row in csv.DictReader(f)}


def test_installed_heatmap_command_runs_the_onnx_backend(installed, tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install onnxruntime)")
    rng = np.random.default_rng(3)
    Image.fromarray((rng.random((48, 64, 3)) * 120).astype(np.uint8)).save(tmp_path / "dark.png")
    for backend in ("torch", "onnxruntime"):
        done = subprocess.run(
            [
                installed / "bin" / "p-iea-heatmap",
                "--input",
                "dark.png",
                "--output",
                backend,
                "--backend",
                backend,
                "--threads",
                "1",
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
    by_torch, by_onnx = read_summary(tmp_path / "torch")["dark.png"], read_summary(tmp_path / "onnxruntime")["dark.png"]
    assert float(by_torch["mean_residual"]) > 0  # a dark photo: under-exposed
    assert float(by_onnx["mean_residual"]) == pytest.approx(float(by_torch["mean_residual"]), abs=1e-4)
    assert (tmp_path / "onnxruntime" / "dark_exposure.png").is_file()


def test_a_command_whose_extra_is_missing_says_how_to_install_it(installed, tmp_path):
    # None in sys.modules makes `import yaml` fail as if PyYAML (the 'train' extra) were not installed
    done = subprocess.run(
        [
            installed / "bin" / "python",
            "-c",
            "import sys; sys.modules['yaml'] = None; "
            "sys.argv = ['p-iea-train']; from pieanet.commands import train; train()",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    message = done.stderr.strip()
    assert len(message.splitlines()) == 1 and "needs yaml" in message
    assert "pip install '.[train]' in the P-IEA checkout" in message and "'pyyaml>=6.0'" in message
    assert "p-iea[" not in message  # p-iea is not on PyPI
