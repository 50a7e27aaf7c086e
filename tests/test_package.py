"""`pip install .` into a fresh virtual environment: the commands and the Python API work from another folder, and
the only top-level name installed is `pieanet`."""
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    env_dir, source = tmp_path_factory.mktemp("venv"), tmp_path_factory.mktemp("src") / "p-iea"
    # a copy, so the build's own folders (build/, *.egg-info) never land in the checkout
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "data", "experiments", "outputs", "runs", "build", "*.egg-info", "__pycache__"))
    # torch, the other requirements and setuptools come from this interpreter: nothing is downloaded
    venv.create(env_dir, system_site_packages=True, with_pip=False)
    done = subprocess.run([sys.executable, "-m", "pip", "--python", env_dir / "bin" / "python", "install", "-q",
                           "--no-deps", "--no-build-isolation", str(source)],
                          capture_output=True, text=True)
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
    api = subprocess.run([python, "-c", "import pieanet, torch; m = pieanet.load(); "
                                        "print(tuple(m(torch.rand(1, 3, 40, 56)).shape), pieanet.__file__)"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert api.returncode == 0, api.stderr
    assert api.stdout.startswith("(1, 1, 40, 56)") and str(site_packages(installed)) in api.stdout
    done = subprocess.run([installed / "bin" / "p-iea-heatmap", "--input", "p.png", "--output", "out"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "p_exposure.png").is_file() and (tmp_path / "out" / "summary.csv").is_file()


def test_default_folders_of_the_installed_command_are_the_current_folder(installed, tmp_path):
    (tmp_path / "img_to_pred").mkdir()
    Image.fromarray(np.full((32, 32, 3), 120, np.uint8)).save(tmp_path / "img_to_pred" / "grey.png")
    done = subprocess.run([installed / "bin" / "p-iea-heatmap"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "outputs" / "grey_exposure.png").is_file()
