import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
OFFICIAL_WEIGHTS = SHARED / "official" / "wavelet_epoch_2_val_loss0.03022034629540784.pth"
# the one tiny P-IEANet of the tests (bench/speed.py and tests/audits/audit_files.py, which cannot import this file,
# keep copies of it)
TINY_MODEL_CONFIG = {
    "name": "pieanet",
    "width": 8,
    "lightness_blocks": 1,
    "attention_layers": 1,
    "heads": 2,
    "window": 4,
}

sys.path.insert(0, str(ROOT))
torch.set_num_threads(2)

# Markers (registered in pyproject.toml) that follow from a fixture: a test that uses one gets them without a
# decorator. Tests that are slow or start processes by themselves carry @pytest.mark.slow / .subprocess.
FIXTURE_MARKERS = {
    "shared_dir": ("shared",),
    "official_weights": ("shared",),  # ../shared
    "browser": ("chromium", "slow"),  # tests/test_report.py: a headless Chromium per test
    "exported": ("slow",),  # tests/test_export.py: an ONNX export of the shipped model
    "installed": ("slow",),  # tests/test_package.py: pip install into a new virtual environment
    "verdict_spread": ("slow",),  # tests/test_scene.py: the shipped model on real photos up to 4000 px
    "fake_deb": ("subprocess",),  # tests/test_photos.py: dpkg-deb builds a package
}


def pytest_collection_modifyitems(items):
    for item in items:
        for fixture in FIXTURE_MARKERS.keys() & set(item.fixturenames):
            for marker in FIXTURE_MARKERS[fixture]:
                item.add_marker(marker)


@pytest.fixture(scope="session")
def shared_dir():
    if not SHARED.is_dir():
        pytest.skip(f"reference data not found at {SHARED} (../shared beside the repo)")
    return SHARED


@pytest.fixture(scope="session")
def official_weights():
    if not OFFICIAL_WEIGHTS.is_file():
        pytest.skip(f"released P-IEANet weights not found at {OFFICIAL_WEIGHTS}")
    return OFFICIAL_WEIGHTS


@pytest.fixture(scope="session")
def tiny_model_config():
    return dict(TINY_MODEL_CONFIG)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A tiny random-init project checkpoint (deterministic weights)."""
    from pieanet.models import build_model, save_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_model(path, build_model(TINY_MODEL_CONFIG))
    return path


def flat_iea_dataset(root, greys, levels):
    """IEA40K-layout data: one flat grey 24 x 32 photo per grey (level names cycled from ``levels``) with its exact
    label (128 - grey, a mid-grey residual in grey levels) and score, then a corrupt image (bad_P2) and a sample
    without a label (nolabel_N2); valid.csv lists them all in that order."""
    import numpy as np
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rows = ["img_id,ref_id,score"]
    for i, grey in enumerate(greys):
        name = f"s{i}_{levels[i % len(levels)]}.png"
        Image.fromarray(np.full((24, 32, 3), grey, np.uint8)).save(root / "images" / name)
        np.save(root / "labels" / f"{Path(name).stem}.npy", np.full((24, 32), 128.0 - grey, np.float32))
        rows.append(f"{name},s{i}.png,{10 * (1 - abs(128 - grey) / 255):.4f}")
    (root / "images" / "bad_P2.png").write_bytes(b"not a png")
    np.save(root / "labels" / "bad_P2.npy", np.zeros((24, 32), np.float32))
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(root / "images" / "nolabel_N2.png")
    rows += ["bad_P2.png,bad.png,5.0", "nolabel_N2.png,nolabel.png,5.0"]
    (root / "valid.csv").write_text("\n".join(rows) + "\n")
    return root


def exit_code(tool, argv):
    """A tool's exit code, whether it returned it or argparse raised SystemExit."""
    try:
        return tool.main([str(a) for a in argv])
    except SystemExit as e:
        return e.code


def save_photo(path, seed=0, height=24, width=32):
    """A random RGB photo (PNG or whatever the suffix says) at ``path``, folders made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path
