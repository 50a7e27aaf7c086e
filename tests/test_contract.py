"""models/contract.py: what a residual model declares, the defaults, and the decisions taken from them (tile or not,
the tile margin, the working shape), against hand-computed cases and a measurement of the shipped model."""

import ast
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from pieanet.models import DEFAULT_CHECKPOINT, DEFAULT_ONNX, build_model, contract, load_model
from pieanet.models.filters import box_mean

ROOT = Path(__file__).resolve().parents[1]
PROPERTIES = ("working_size", "tile_multiple", "receptive_radius", "native_size", "uses_scene")


def test_a_model_that_declares_nothing_takes_the_defaults():
    model = nn.Identity()
    assert contract.working_size(model) is None and contract.native_size(model) is None
    assert contract.tile_multiple(model) == 1 and contract.uses_scene(model) is False and contract.config(model) == {}
    assert contract.receptive_radius(model) == 3  # OVERLAP_IN_MULTIPLES tile multiples of 1
    assert contract.tile_for(model, 512) == 512 and contract.default_overlap(model) == 3
    assert contract.minimum_tile(model) == 2 * 3 + 1 and contract.minimum_size(model) == 16  # MIN_WORKING_SIZE


@pytest.mark.parametrize(
    "window, multiple, margin, minimum_tile, minimum_size",
    [
        (8, 64, 192, 2 * 192 + 64, 64),  # the shipped configuration
        (2, 16, 48, 2 * 48 + 16, 16),  # a small window: the margin scales with the tile multiple
        (3, 24, 72, 2 * 72 + 24, 24),
    ],
)
def test_pieanet_declarations(window, multiple, margin, minimum_tile, minimum_size):
    model = build_model({"name": "pieanet", "width": 8, "heads": 2, "window": window, "working_size": 300})
    assert contract.tile_multiple(model) == multiple and contract.working_size(model) == 300
    assert contract.default_overlap(model) == margin and contract.minimum_tile(model) == minimum_tile
    assert contract.minimum_size(model) == minimum_size
    assert contract.tile_for(model, 1024) == 1024 and contract.tile_for(model, 0) is None
    assert contract.tile_for(model, None) is None


def test_tile_or_not():
    # per-pixel and patch baselines tile with no margin; whole-image ones and the released network never tile
    for name, tiled in (
        ("zero", True),
        ("mertens", True),
        ("zero_dce", True),
        ("global_midgray", False),
        ("local_midgray", False),
    ):
        model = build_model({"name": name})
        assert (contract.tile_for(model, 256) == 256) is tiled, name
        assert contract.is_global(model) is not tiled, name
        assert contract.default_overlap(model) == 0, name
    assert contract.tile_multiple(build_model({"name": "zero_dce"})) == 16
    with torch.device("meta"):
        released = build_model({"name": "official"})
    assert contract.native_size(released) == 256 and contract.tile_for(released, 4096) is None


def test_scaled_shape_by_hand():
    # (height, width, longer side) -> (h, w); rounding half to even: 5 * 4 / 8 = 2.5 -> 2
    cases = {
        (427, 640, 256): (171, 256),  # 427 * 0.4 = 170.8
        (5, 8, 4): (2, 4),
        (3, 4, 2): (2, 2),
        (4, 1, 2): (2, 1),  # 1 * 0.5 = 0.5 -> 0 -> at least 1
        (30, 20, 64): (64, 43),  # magnified: 20 * 64 / 30 = 42.67
        (1, 1000, 64): (1, 64),
    }
    for (height, width, longer), expected in cases.items():
        assert contract.scaled_shape(height, width, longer) == expected


def test_working_shape():
    model = build_model({"name": "pieanet", "width": 8, "heads": 2, "working_size": 256})
    assert contract.working_shape(model, (427, 640, 3)) == (171, 256)  # the model's working size
    assert contract.working_shape(model, (427, 640), size=0) == (427, 640)  # native
    assert contract.working_shape(model, (427, 640), size=1000) == (427, 640)  # never enlarged
    assert contract.working_shape(model, (200, 100)) == (200, 100)
    assert contract.padded_shape(model, (171, 256)) == (192, 256) and contract.padded_shape(model, (1, 1)) == (64, 64)
    with torch.device("meta"):
        released = build_model({"name": "official"})
    assert contract.working_shape(released, (427, 640), size=100) == (427, 640)  # it resizes inside
    assert contract.padded_shape(released, (427, 641)) == (427, 641)


def test_unwrap():
    model = nn.Conv2d(3, 1, 1)
    assert contract.unwrap(nn.DataParallel(model)) is model and contract.unwrap(model) is model


@pytest.mark.export
def test_the_onnx_model_declares_a_whole_image_field_when_its_graph_has_a_scene_branch():
    pytest.importorskip("onnxruntime")
    onnx_model, torch_model = load_model(DEFAULT_ONNX), load_model(DEFAULT_CHECKPOINT)
    assert contract.uses_scene(torch_model) and not contract.is_global(torch_model)  # tiles get the scene
    assert contract.is_global(onnx_model) and not contract.uses_scene(onnx_model)  # the graph takes no scene
    assert contract.tile_for(onnx_model, 512) is None and contract.tile_for(torch_model, 512) == 512
    assert contract.working_size(onnx_model) == contract.working_size(torch_model) == 512


def measured_radius(model, side=384):
    """The farthest (Chebyshev distance, px) an output changes when one input pixel changes, the scene held fixed
    (tiles get the whole photo's scene): a pixel at the first and one at the last position of a tile multiple (an
    attention window of P-IEANet) near the centre."""
    x = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    multiple = contract.tile_multiple(model)
    context = {"region": (0, 0, side, side), **contract.scene_context(model, x)} if contract.uses_scene(model) else {}
    with torch.no_grad():
        base, reach = model(x, **context)[0, 0], 0
        for offset in (0, multiple - 1):
            y = x0 = (side // 2 - offset) // multiple * multiple + offset  # near the centre
            changed = x.clone()
            changed[..., y, x0] = 1 - changed[..., y, x0]
            rows, cols = (model(changed, **context)[0, 0] != base).nonzero(as_tuple=True)
            assert len(rows) and rows.min() > 0 and cols.min() > 0 and max(rows.max(), cols.max()) < side - 1, (
                "the change reaches the border: measure on a larger image"
            )
            reach = max(reach, int((rows - y).abs().max()), int((cols - x0).abs().max()))
    return reach


def test_the_declared_receptive_radius_covers_the_shipped_models_measured_one():
    model = load_model(DEFAULT_CHECKPOINT)
    radius = measured_radius(model)
    # the measurement sees past one attention window (138 px when written), and the declared radius covers it
    assert contract.tile_multiple(model) < radius <= contract.receptive_radius(model)
    assert contract.default_overlap(model) >= radius


def test_a_measured_radius_beyond_the_declared_one_would_be_seen():
    # the measurement is not blind: a model whose context is wider than the default (a mean over 201 x 201 pixels)
    class Wide(nn.Module):
        def forward(self, x):
            return box_mean(x.mean(dim=1, keepdim=True), 201)

    assert measured_radius(Wide(), side=256) == 100 > contract.receptive_radius(Wide())


def property_lookups(path):
    """(line, text) of each getattr on a model property, and each read of one as an attribute of anything but
    ``self``, in ``path`` (hasattr, which checks that a model declares one, is not a lookup)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in PROPERTIES + ("module",)
            and ast.unparse(node.args[0]) != "args"
        ):
            found.append((node.lineno, ast.unparse(node)))
        elif (
            isinstance(node, ast.Attribute)
            and node.attr in PROPERTIES
            and isinstance(node.ctx, ast.Load)
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cli", "contract"))
        ):
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_only_the_contract_reads_a_models_properties():
    files = [path for path in ROOT.rglob("*.py") if ".git" not in path.parts and path.name != "contract.py"]
    found = [f"{path.relative_to(ROOT)}:{line}: {text}" for path in files for line, text in property_lookups(path)]
    assert not found, "read model properties through models.contract:\n" + "\n".join(found)
    assert property_lookups(ROOT / "models" / "contract.py")  # the check sees them where they are
