"""The format readers are imported on first use: loading a model, inference and training need neither rawpy nor
pillow-heif, and without them a RAW or HEIC file is a one-line error naming the package while other photos load."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pillow_heif
import pytest
from PIL import Image

from pieanet.utils.image_io import load_image

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
pytestmark = [pytest.mark.slow, pytest.mark.subprocess]  # a new Python importing torch per test


def run_python(code, cwd):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=ENV, timeout=120)


def test_importing_the_models_and_the_tools_imports_no_format_reader(tmp_path):
    done = run_python(
        "import sys; import pieanet, pieanet.models, pieanet.utils.cli, pieanet.make_heatmap, "
        "pieanet.train_wavelet; print(sorted({'rawpy', 'pillow_heif'} & set(sys.modules)))",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_without_rawpy_and_pillow_heif_models_run_and_only_those_formats_fail(tmp_path):
    Image.fromarray(np.full((20, 30, 3), (200, 100, 50), np.uint8)).save(tmp_path / "plain.png")
    for name in ("phone.heic", "camera.dng"):
        (tmp_path / name).write_bytes(b"\0" * 64)
    # None in sys.modules makes `import rawpy` raise ImportError, as if the package were not installed
    done = run_python(
        "import sys; sys.modules['rawpy'] = sys.modules['pillow_heif'] = None\n"
        "import torch, pieanet; torch.set_num_threads(1)\n"
        "import pieanet.train_wavelet\n"
        "from pieanet.utils.image_io import ImageLoadError, load_image\n"
        "print(tuple(pieanet.load()(torch.rand(1, 3, 24, 32)).shape))\n"
        "print(*(255 * load_image('plain.png')[0, 0]).round(3).tolist())\n"
        "for name in ('phone.heic', 'camera.dng'):\n"
        "    try:\n"
        "        load_image(name)\n"
        "    except ImageLoadError as e:\n"
        "        print(e)\n",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    shape, pixel, heic, raw = done.stdout.strip().splitlines()
    assert shape == "(1, 1, 24, 32)"
    assert pixel == "200.0 100.0 50.0"
    assert heic.startswith("phone.heic: ") and "needs pillow-heif" in heic and "pip install pillow-heif" in heic
    assert raw.startswith("camera.dng: ") and "needs rawpy" in raw and "pip install rawpy" in raw


def test_a_heif_photo_under_another_extension_still_loads(tmp_path):
    photo = np.zeros((32, 48, 3), np.uint8)
    photo[:, 24:] = 230
    pillow_heif.from_pillow(Image.fromarray(photo)).save(tmp_path / "phone.jpg", quality=95)
    with open(tmp_path / "phone.jpg", "rb") as f:
        assert f.read(12)[4:8] == b"ftyp"  # an ISO-BMFF (HEIF) container, not a JPEG
    image = load_image(tmp_path / "phone.jpg")
    assert image.shape == (32, 48, 3)
    assert np.abs(image[:, :20] - 0).max() < 0.05 and np.abs(image[:, 28:] - 230 / 255).max() < 0.05
