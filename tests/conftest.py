import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
OFFICIAL_WEIGHTS = SHARED / "official" / "wavelet_epoch_2_val_loss0.03022034629540784.pth"
TINY_MODEL_CONFIG = {"name": "pieanet", "width": 8, "lightness_blocks": 1, "attention_layers": 1, "heads": 2,
                     "window": 4}

sys.path.insert(0, str(ROOT))
torch.set_num_threads(2)


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
