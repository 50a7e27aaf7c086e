import numpy as np
import pytest
import torch

from pieanet.models import CheckpointError, build_model, load_model, save_model
from pieanet.models.haar import haar_dwt, haar_idwt
from pieanet.models.official import OfficialPIEANet

pywt = pytest.importorskip("pywt")


@pytest.mark.parametrize("size", [(8, 8), (16, 10), (7, 9), (1, 1), (5, 4), (3, 1)])
def test_haar_matches_pywavelets(size):
    x = np.random.default_rng(0).random((2, 3, *size), dtype=np.float32)
    low, high = haar_dwt(torch.from_numpy(x))
    expected_low, details = pywt.dwt2(x, "haar")  # mode 'symmetric'
    np.testing.assert_allclose(low.numpy(), expected_low, atol=1e-5)
    for band, expected in zip(high.chunk(3, dim=1), details):
        np.testing.assert_allclose(band.numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("size", [(8, 8), (7, 9), (1, 1), (33, 2)])
def test_haar_round_trip_is_exact(size):
    x = torch.rand(2, 4, *size, dtype=torch.float64)
    low, high = haar_dwt(x)
    assert torch.allclose(haar_idwt(low, high, size=size), x, atol=1e-12)


def test_haar_is_orthonormal():
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    low, high = haar_dwt(x)
    assert torch.isclose(low.square().sum() + high.square().sum(), x.square().sum())


def test_pieanet_budget():
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model({"name": "pieanet"}).eval()
    assert sum(p.numel() for p in model.parameters()) <= 3_000_000
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.rand(1, 3, 256, 256))
    assert counter.get_total_flops() <= 5e9


@pytest.mark.parametrize("switches", [{}, {"use_dwt": False}, {"use_lightness": False}, {"use_structure": False}])
@pytest.mark.parametrize("batch,size", [(1, (1, 1)), (1, (37, 53)), (3, (64, 30))])
def test_pieanet_shape_dtype_range(tiny_model_config, switches, batch, size):
    torch.manual_seed(0)
    model = build_model({**tiny_model_config, **switches}).eval()
    with torch.no_grad():
        out = model(torch.rand(batch, 3, *size))
    assert out.shape == (batch, 1, *size) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.abs().max() <= 1


def test_pieanet_batch_members_are_independent(tiny_model_config):
    torch.manual_seed(0)
    model = build_model(tiny_model_config).eval()
    x = torch.rand(4, 3, 48, 40)
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(4)])
        changed = x.clone()
        changed[0] = 1 - changed[0]
        others = model(changed)[1:]
    assert torch.allclose(together, alone, atol=1e-6)
    assert torch.allclose(others, together[1:], atol=1e-6)


def test_pieanet_gradients_reach_every_parameter(tiny_model_config):
    model = build_model(tiny_model_config)
    model(torch.rand(2, 3, 32, 32)).abs().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_project_checkpoint_round_trip(tmp_path, tiny_model_config):
    model = build_model(tiny_model_config).eval()
    save_model(tmp_path / "m.safetensors", model)
    loaded = load_model(tmp_path / "m.safetensors")
    assert loaded.config == model.config and not loaded.training
    x = torch.rand(1, 3, 20, 30)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary left behind


def test_training_state_loads(tmp_path, tiny_model_config):
    model = build_model(tiny_model_config)
    torch.save({"model": model.state_dict(), "config": {"model": tiny_model_config}, "epoch": 3}, tmp_path / "last.pt")
    assert load_model(tmp_path / "last.pt").config == model.config


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", None])
def test_bad_checkpoints_give_one_sentence(tmp_path, content):
    path = tmp_path / "bad.pth"
    if content is None:
        torch.save({"weight": torch.zeros(1)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match="bad.pth: .*expected"):
        load_model(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing.safetensors")


def test_mismatched_weights_are_reported(tmp_path, tiny_model_config):
    save_model(tmp_path / "small.safetensors", build_model(tiny_model_config))
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    with safe_open(str(tmp_path / "small.safetensors"), framework="pt") as f:
        metadata = f.metadata()
    metadata["config"] = metadata["config"].replace('"width": 8', '"width": 16')
    save_file(load_file(str(tmp_path / "small.safetensors")), str(tmp_path / "wrong.safetensors"), metadata=metadata)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(tmp_path / "wrong.safetensors")


@pytest.fixture(scope="module")
def released(official_weights):
    return load_model(official_weights)


@pytest.mark.slow
def test_released_weights_reproduce_reference(released, shared_dir):
    reference = np.load(shared_dir / "official" / "official_reference.npz")
    names = ["test1_high", "test_low"]
    x = torch.stack([torch.from_numpy(reference[f"{n}_input"]) for n in names])
    with torch.no_grad():
        together = released(x)
        alone = torch.cat([released(x[i : i + 1]) for i in range(2)])  # batch of one works
    for i, name in enumerate(names):
        assert np.abs(together[i, 0].numpy() - reference[f"{name}_output"]).max() <= 1e-4
    assert torch.allclose(alone, together, atol=1e-5)  # no cross-batch attention


def test_released_weights_sign_on_real_photos(released, shared_dir):
    from PIL import Image

    means = {}
    for name in ["test_low", "test1_high"]:
        photo = np.asarray(Image.open(shared_dir / "official" / f"{name}.jpg").convert("RGB"), dtype=np.float32) / 255
        with torch.no_grad():
            residual = released(torch.from_numpy(photo).permute(2, 0, 1)[None])
        assert residual.shape[-2:] == photo.shape[:2]
        means[name] = residual.mean().item()
    assert means["test_low"] > 0 > means["test1_high"]


def test_released_architecture_loads_strictly(official_weights):
    state = torch.load(official_weights, map_location="cpu", weights_only=True)
    model = OfficialPIEANet()
    model.load_released_state_dict(state)  # strict
    assert sum(v.numel() for v in state.values()) == 624_263


# ------------------------------------------------------------------ checkpoints that must be refused (issue 9)
def write_checkpoint(path, config, state):
    import json

    from safetensors.torch import save_file

    save_file(state, str(path), metadata={"format": "p-iea/1", "config": json.dumps(config)})
    return path


def tiny_state(config):
    torch.manual_seed(0)
    return {k: v.clone() for k, v in build_model(config).state_dict().items()}


@pytest.mark.parametrize(
    "damage, message",
    [("nan", "NaN or infinite"), ("inf", "NaN or infinite"), ("int", "expected floating-point weights")],
)
def test_non_finite_or_integer_weights_are_refused(tmp_path, tiny_model_config, damage, message):
    state = tiny_state(tiny_model_config)
    key = next(k for k, v in state.items() if v.is_floating_point())
    if damage == "int":
        state = {k: v.round().to(torch.int32) if v.is_floating_point() else v for k, v in state.items()}
    else:
        state[key].view(-1)[0] = float(damage)
    path = write_checkpoint(tmp_path / "bad.safetensors", tiny_model_config, state)
    with pytest.raises(CheckpointError, match=message) as info:
        load_model(path)
    assert str(info.value).startswith(str(path))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"width": 6000}, "out of range"),
        ({"window": 0}, "out of range"),
        ({"width": "abc"}, "must be an integer"),
        ({"use_dwt": "maybe"}, "true or false"),
        ({"colour": 3}, "unknown key"),
        ({"name": "resnet"}, "unknown model"),
        ({"width": 1000}, "tensor name|weights do not fit|parameters"),
        ({"working_size": -5}, "out of range"),
        ({"working_size": "big"}, "must be an integer"),
    ],
)
def test_bad_configs_are_refused_before_anything_is_allocated(tmp_path, tiny_model_config, change, message):
    import time

    path = write_checkpoint(
        tmp_path / "c.safetensors", dict(tiny_model_config, **change), tiny_state(tiny_model_config)
    )
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=message):
        load_model(path)
    assert time.perf_counter() - start < 5  # a 6000-wide P-IEANet took 80 s and 11 GB before it was refused


@pytest.mark.parametrize("config", ["not a dict", [1, 2], None])
def test_training_state_with_a_bad_config_is_refused(tmp_path, tiny_model_config, config):
    path = tmp_path / "last.pt"
    torch.save({"model": tiny_state(tiny_model_config), "config": config}, path)
    with pytest.raises(CheckpointError, match="config is a"):
        load_model(path)


class Hostile:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_hostile_pickle_is_refused_without_suggesting_unsafe_loading(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"model": Hostile(), "config": {}}, path)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    message = str(info.value)
    assert "refused" in message and "weights_only" not in message and "\n" not in message
    assert "this must never run" not in capsys.readouterr().out


def test_saved_checkpoints_are_readable_like_any_new_file(tmp_path, tiny_model_config):
    import os

    save_model(tmp_path / "m.safetensors", build_model(tiny_model_config))  # safetensors itself writes 0600
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "m.safetensors").stat().st_mode & 0o777 == 0o666 & ~mask
