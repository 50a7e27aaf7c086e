"""The shipped checkpoint against stored references, so that the exported .onnx file is not the only one.

Golden maps: tests/data/golden_<sample>.npy holds the map of checkpoints/pieanet_corpus.safetensors on
img_to_pred/<sample>.jpg with the tools' defaults (load_image, predict_residual: working size, guided upsampling),
averaged down to GOLDEN_SIDE x GOLDEN_SIDE cells (float32, 4 kB). tests/data/golden.sha256 records the SHA-256 of the
checkpoint they were made from (`sha256sum -c tests/data/golden.sha256` checks it from the repository root). After the
checkpoint is replaced on purpose, regenerate both (and look at what moved before committing them):

    P_IEA_REGEN_GOLDEN=1 python -m pytest tests/test_golden.py

Tiling: the default tile margin must cover the shipped model's receptive radius, measured here from the gradient,
and tiles at the default margin must stitch to the whole-image map.
"""

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pieanet.models import DEFAULT_CHECKPOINT, contract, load_model
from pieanet.utils.image_io import atomic_write, load_image
from pieanet.models.inference import default_overlap, predict_residual

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
SAMPLES = ("coffee_over", "astronaut_under")  # one mostly over-exposed, one mostly under-exposed
GOLDEN_SIDE = 32
GOLDEN_SHA256 = DATA / "golden.sha256"
# float rounding between machines and thread counts is far below this; a changed shrink filter, guided filter or
# scene sampling moves cells by more
GOLDEN_TOLERANCE = 1e-4
REGENERATE = os.environ.get("P_IEA_REGEN_GOLDEN") == "1"


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def checkpoint_name():
    return DEFAULT_CHECKPOINT.relative_to(ROOT).as_posix()


@pytest.fixture(scope="module")
def shipped():
    return load_model(DEFAULT_CHECKPOINT)


def golden_map(model, sample):
    """The map of ``sample`` with the tools' defaults, each of GOLDEN_SIDE x GOLDEN_SIDE cells the mean of its area."""
    residual = predict_residual(model, load_image(ROOT / "img_to_pred" / f"{sample}.jpg"))
    cells = F.adaptive_avg_pool2d(torch.from_numpy(residual)[None, None].double(), GOLDEN_SIDE)
    return cells[0, 0].numpy().astype(np.float32)


def regenerate(model):
    for sample in SAMPLES:
        with atomic_write(DATA / f"golden_{sample}.npy") as tmp:
            np.save(tmp, golden_map(model, sample))
    with atomic_write(GOLDEN_SHA256) as tmp:
        tmp.write_text(f"{sha256(DEFAULT_CHECKPOINT)}  {checkpoint_name()}\n")


def test_golden_maps_of_the_shipped_checkpoint(shipped):
    if REGENERATE:
        regenerate(shipped)
    recorded, name = GOLDEN_SHA256.read_text().split()
    actual = sha256(DEFAULT_CHECKPOINT)
    if name != checkpoint_name() or recorded != actual:
        pytest.fail(
            f"{checkpoint_name()} (sha256 {actual[:16]}...) is not the checkpoint the golden maps were made "
            f"from ({name}, sha256 {recorded[:16]}...); if it was replaced on purpose, regenerate them: "
            "P_IEA_REGEN_GOLDEN=1 python -m pytest tests/test_golden.py"
        )
    for sample in SAMPLES:
        golden = np.load(DATA / f"golden_{sample}.npy")
        assert golden.shape == (GOLDEN_SIDE, GOLDEN_SIDE) and golden.dtype == np.float32
        got = golden_map(shipped, sample)
        worst = np.abs(got - golden).max()
        assert worst <= GOLDEN_TOLERANCE, (
            f"{sample}: the shipped checkpoint's map moved by up to {worst:.2e} from "
            f"tests/data/golden_{sample}.npy (same checkpoint)"
        )


def test_golden_maps_have_the_samples_signs():
    # an independent check that the stored references are sensible: a photo named over-exposed is mostly r < 0
    assert np.load(DATA / "golden_coffee_over.npy").mean() < -0.05
    assert np.load(DATA / "golden_astronaut_under.npy").mean() > 0.05


def receptive_extent(model, side=576, block=(256, 320)):
    """How far (pixels) beyond an aligned square of outputs the inputs that change them reach, the scene held fixed
    (tiles get the whole photo's scene): the largest nonzero gradient offset of the block's sum, over four sides."""
    multiple = contract.tile_multiple(model)
    assert block[0] % multiple == 0 and (block[1] - block[0]) == multiple
    x = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    scene = model.scene(x).detach() if contract.uses_scene(model) else None
    context = {"scene": scene, "region": (0, 0, side, side)} if scene is not None else {}
    x.requires_grad_(True)
    model(x, **context)[..., block[0] : block[1], block[0] : block[1]].sum().backward()
    reach = x.grad.abs().sum(dim=(0, 1)) > 0
    rows, cols = reach.any(dim=1).nonzero().flatten(), reach.any(dim=0).nonzero().flatten()
    first, last = min(rows[0], cols[0]).item(), max(rows[-1], cols[-1]).item()
    assert first > 0 and last < side - 1, "the reach touches the border: measure on a larger image"
    return max(block[0] - first, last - (block[1] - 1))


def test_default_tile_margin_covers_the_shipped_models_receptive_radius(shipped):
    extent = receptive_extent(shipped)
    # the measurement sees more than one tile multiple (138 px when written)
    assert extent > contract.tile_multiple(shipped)
    margin = default_overlap(shipped)
    assert margin >= extent, f"the default tile margin {margin} px is below the receptive extent {extent} px"


def test_shipped_model_tiled_equals_untiled_at_the_default_margin(shipped):
    image = load_image(ROOT / "img_to_pred" / "rocket_under.jpg")  # 427 x 640: 4 tiles of 576 along the width
    whole = predict_residual(shipped, image, size=0)
    tiled = predict_residual(shipped, image, size=0, tile=576)
    worst = float(np.abs(tiled - whole).max())
    # float rounding only (exactly 0 where it was written; a 128 px margin, below the receptive extent, gives 1.5e-4)
    assert worst <= 1e-5, f"tiles at the default margin differ from the whole-image map by up to {worst:.2e}"
