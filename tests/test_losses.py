import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from pieanet.models import load_model
from pieanet.utils.exposure import gray
from pieanet.models.losses import ExposureLoss

ROOT = Path(__file__).resolve().parents[1]


class MidGray(nn.Module):
    """A judge whose residual is known by hand: r = 0.5 - gray (it has one parameter so freezing can be checked)."""

    def __init__(self):
        super().__init__()
        self.offset = nn.Parameter(torch.tensor(0.5))
        self.dropout = nn.Dropout(0.5)  # would scramble the residual if the judge left eval mode

    def forward(self, x):
        return self.dropout(self.offset - gray(x))


def constant(value, size=8):
    return torch.full((1, 3, size, size), value)


def test_values_by_hand():
    loss = ExposureLoss(MidGray())
    assert loss(constant(0.3)).item() == pytest.approx(0.2)  # under-exposed, r = +0.2
    assert ExposureLoss(MidGray(), kind="squared")(constant(0.3)).item() == pytest.approx(0.04)
    weighted = ExposureLoss(MidGray(), under_weight=2.0, over_weight=0.5)
    assert weighted(constant(0.3)).item() == pytest.approx(0.4)
    assert weighted(constant(0.8)).item() == pytest.approx(0.15)  # over-exposed, r = -0.3
    x = torch.cat([constant(0.3)[..., :4], constant(0.9)[..., 4:]], dim=-1)  # left r = +0.2, right r = -0.4
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4] = 1
    assert loss(x, mask).item() == pytest.approx(0.2)
    assert loss(x).item() == pytest.approx(0.3)
    assert ExposureLoss(MidGray(), reduction="sum")(x).item() == pytest.approx(0.3 * 64)
    assert ExposureLoss(MidGray(), reduction="none")(x).shape == (1, 1, 8, 8)
    with pytest.raises(ValueError, match="kind"):
        ExposureLoss(MidGray(), kind="cubic")


def test_gradient_reaches_input_not_weights(tiny_checkpoint):
    loss = ExposureLoss(load_model(tiny_checkpoint))
    x = torch.rand(2, 3, 24, 40, requires_grad=True)
    loss(x).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in loss.net.parameters())


def test_frozen_inside_a_model_in_train_mode():
    enhancer = nn.Sequential(nn.Conv2d(3, 3, 1), nn.Sigmoid())
    enhancer.loss = ExposureLoss(MidGray())
    enhancer.train()
    assert enhancer.loss.training and not enhancer.loss.net.training
    # the judge is invisible to the optimizer, the state_dict and DDP: only the conv's weight and bias
    assert len(list(enhancer.parameters())) == 2
    assert not any("offset" in key for key in enhancer.state_dict())
    x = constant(0.3)
    # dropout would make two calls differ if the judge were in training mode
    assert torch.equal(enhancer.loss(enhancer(x)), enhancer.loss(enhancer(x)))
    enhancer.double()  # moving the enclosing model moves the judge
    assert enhancer.loss.net.offset.dtype == torch.float64


def test_autocast_bf16(tiny_checkpoint):
    enhancer = nn.Conv2d(3, 3, 3, padding=1)
    loss = ExposureLoss(load_model(tiny_checkpoint))
    x = torch.rand(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(torch.sigmoid(enhancer(x)))
    value.backward()
    assert value.dtype == torch.float32 and torch.isfinite(value)
    assert torch.isfinite(enhancer.weight.grad).all() and enhancer.weight.grad.abs().sum() > 0


@pytest.mark.slow
def test_train_enhancer_example_runs(tiny_checkpoint, capsys):
    spec = importlib.util.spec_from_file_location("train_enhancer", ROOT / "examples" / "train_enhancer.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    enhancer = example.CurveEnhancer()
    x = torch.rand(2, 3, 20, 28)
    y, curves = enhancer(x)
    assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1 and curves.abs().max() <= 1
    code = example.main(
        ["--judge", str(tiny_checkpoint), "--steps", "2", "--train-crops", "8", "--test-crops", "2", "--threads", "1"]
    )
    out = capsys.readouterr().out
    assert code == 0 and "testing on 2 held-out images" in out
    assert all(f"{variant}: held-out MAE to ideal" in out for variant in ("baseline", "with", "alone"))
    assert example.main(["--judge", str(ROOT / "missing.safetensors")]) == 2


def test_the_loss_takes_a_model_not_a_path(tiny_checkpoint):
    with pytest.raises(TypeError, match="load_model"):
        ExposureLoss(str(tiny_checkpoint))


def test_an_onnx_model_is_refused_as_it_passes_no_gradient():
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    from pieanet.models import DEFAULT_ONNX

    onnx_model = load_model(DEFAULT_ONNX)
    with pytest.raises(TypeError, match=r"pieanet_corpus\.onnx.*no gradient.*load the torch checkpoint"):
        ExposureLoss(onnx_model)
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    with pytest.raises(RuntimeError, match="passes no gradient to its input"):
        onnx_model(x)
    with torch.no_grad():  # no gradient asked for: the ONNX model runs as usual
        assert onnx_model(x).shape == (1, 1, 16, 16)
    assert onnx_model(x.detach()).shape == (1, 1, 16, 16)
