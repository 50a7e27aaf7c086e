import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from conftest import TINY_MODEL_CONFIG

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.subprocess]


def conv_and_linear_gflop(config, size=256):
    """An independent count, not the code's: 2 x multiply-adds of every convolution and linear layer, from each
    layer's own shapes on the meta device (attention products are left out, so this is a lower bound)."""
    from pieanet.models import build_model

    total = 0

    def conv(module, inputs, output):
        nonlocal total
        kernel = module.weight.shape[2] * module.weight.shape[3]
        if isinstance(module, nn.ConvTranspose2d):  # every input pixel scatters into out_channels x kernel
            total += 2 * inputs[0][0].numel() * module.out_channels // module.groups * kernel
        else:
            total += 2 * output.numel() * module.in_channels // module.groups * kernel

    def linear(module, inputs, output):
        nonlocal total
        total += 2 * output.numel() * module.in_features

    model = build_model(config).eval().to("meta")
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            module.register_forward_hook(conv)
        elif isinstance(module, nn.Linear):
            module.register_forward_hook(linear)
    with torch.no_grad():
        model(torch.empty(1, 3, size, size, device="meta"))
    return total / 1e9


def test_smoke_run_reports_every_measurement(tmp_path):
    out = tmp_path / "speed.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "speed.py"), "--smoke", "--threads", "2", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    project, released = report["models"]["project"], report["models"]["released"]
    assert released["parameters"] == 624_263  # the released architecture, with or without its weights
    assert 78 < released["gflop_per_256"] < 80
    assert project["parameters"] > 0 and 0 < project["gflop_per_256"] < released["gflop_per_256"]
    assert project["images_per_s_256"] > 0 and released["images_per_s_256"] is None  # not run in smoke mode
    # against the independent count: convolutions and linears are 85 % (smoke config) and 99.6 % (released) of all
    low_project, low_released = conv_and_linear_gflop(TINY_MODEL_CONFIG), conv_and_linear_gflop({"name": "official"})
    assert low_project <= project["gflop_per_256"] <= 1.25 * low_project
    assert low_released <= released["gflop_per_256"] <= 1.02 * low_released
    assert low_released / (1.25 * low_project) <= report["ratios"]["gflop_256"] <= 1.02 * low_released / low_project
    assert len(report["latency"]) == 2
    for row in report["latency"]:
        assert "error" not in row, row
        assert row["seconds"] > 0 and row["peak_rss_mb"] > 50
    (end_to_end,) = report[
        "end_to_end"
    ]  # make_heatmap.py as a user runs it (the onnx backend is not run in smoke mode)
    assert "error" not in end_to_end, end_to_end
    assert end_to_end["backend"] == "torch" and end_to_end["size"] == "160x96"
    assert end_to_end["seconds"] > 0 and end_to_end["peak_rss_mb"] > 50 and "ratio" not in end_to_end
    # the floor: decoding the same JPEG and writing one PNG cannot take longer than doing that and running the model
    assert 0 < end_to_end["decode_write_seconds"] < end_to_end["seconds"]
    assert end_to_end["vs_decode_write"] == pytest.approx(end_to_end["seconds"] / end_to_end["decode_write_seconds"])
    assert "project / released" in done.stdout
