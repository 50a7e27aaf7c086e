"""The released P-IEANet (upstream `wavelet_epoch_2_*.pth`), re-implemented so its weights load with strict keys.

Faithful to the released network's per-image outputs, with its faults fixed:
- a batch of one works (upstream squeezes the batch axis away and has to be fed ``[x, x]``);
- images in a batch are independent: upstream's ``nn.Transformer`` runs with ``batch_first=False`` on a
  ``(B, 16384, 9)`` tensor, i.e. attention across the *batch*. Run per image that is attention over a single token,
  which is what we compute for every image at once by giving the transformer a sequence of length 1;
- any device (upstream calls ``.cuda()`` inside forward).
The network itself only runs at 256 x 256 (a reshape hard-codes 128 x 128 bands), so ``OfficialPIEANet`` resizes the
input to 256 x 256 and the residual map back to the input size.
"""

import math
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

SIZE = 256


def conv3x3(in_channels, out_channels):
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


class CornerConv(nn.Module):
    """Zero-pad left and top by one pixel, then a 2 x 2 convolution: same-size output."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 2)

    def forward(self, x):
        return self.conv(F.pad(x, (1, 0, 1, 0)))


class StridedConv(nn.Module):
    """The learned Haar-like analysis filters (`Low`, `High_1..3`)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 2, stride=2)

    def forward(self, x):
        return self.conv(x)


class ChannelAttention(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.ca = nn.Sequential(
            nn.Conv2d(channels, channels // 8, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // 8, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x):
        return x * self.ca(F.adaptive_avg_pool2d(x, 1))


class PixelAttention(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.pa = nn.Sequential(
            nn.Conv2d(channels, channels // 8, 1), nn.ReLU(inplace=True), nn.Conv2d(channels // 8, 1, 1), nn.Sigmoid()
        )

    def forward(self, x):
        return x * self.pa(x)


class AttentionBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = conv3x3(channels, channels)
        self.conv2 = conv3x3(channels, channels)
        self.calayer = ChannelAttention(channels)
        self.palayer = PixelAttention(channels)

    def forward(self, x):
        y = F.relu(self.conv1(x)) + x
        y = self.palayer(self.calayer(self.conv2(y)))
        return y + x


class Group(nn.Module):
    def __init__(self, channels, blocks=2):
        super().__init__()
        self.gp = nn.Sequential(*[AttentionBlock(channels) for _ in range(blocks)], conv3x3(channels, channels))

    def forward(self, x):
        return self.gp(x) + x


class LightnessPath(nn.Module):
    """`ffa_group`: FFA-Net-style path on the full-resolution RGB image -> B x 1 x 256 x 256."""

    def __init__(self, width=64, groups=3):
        super().__init__()
        self.width, self.groups = width, groups
        self.pre = nn.Sequential(conv3x3(3, width))
        self.g1, self.g2, self.g3 = (Group(width) for _ in range(groups))
        self.ca = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(width * groups, width // 16, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width // 16, width * groups, 1),
            nn.Sigmoid(),
        )
        self.palayer = PixelAttention(width)
        self.post = nn.Sequential(conv3x3(width, width), conv3x3(width, 1))
        self.post_2 = nn.Sequential(conv3x3(3, 1))

    def forward(self, x):
        r1 = self.g1(self.pre(x))
        r2 = self.g2(r1)
        r3 = self.g3(r2)
        weights = self.ca(torch.cat([r1, r2, r3], dim=1)).view(-1, self.groups, self.width, 1, 1)
        y = weights[:, 0] * r1 + weights[:, 1] * r2 + weights[:, 2] * r3
        y = self.post(self.palayer(y))
        return self.post_2(y + x)


class TokenTransformer(nn.Module):
    """`transformer_k`: nn.Transformer over the raw (B, 16384, 9) view of the bands, reduced by a 1x1 conv to 3
    channels."""

    def __init__(self):
        super().__init__()
        with warnings.catch_warnings():  # the nested-tensor fast path does not apply to sequence-first layers
            warnings.simplefilter("ignore", UserWarning)
            self.transformer = nn.Transformer(
                d_model=9, nhead=1, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=16
            )
        self.conv = nn.Conv2d(9, 3, 1)

    def forward(self, h):
        # Upstream feeds (B, 16384, 9) as (sequence, batch, feature). Per image that sequence has length 1.
        tokens = h.reshape(1, -1, 9)
        out = self.transformer(tokens, tokens)
        return self.conv(out.reshape(h.shape))


# (rows, columns) of the shifted crop subtracted from the centre crop, in the released order.
SHIFTS = [
    ((0, -2), (1, -1)),
    ((2, None), (1, -1)),
    ((1, -1), (0, -2)),
    ((1, -1), (2, None)),
    ((0, -2), (0, -2)),
    ((2, None), (0, -2)),
    ((0, -2), (2, None)),
    ((2, None), (2, None)),
]


class StructureEncoder(nn.Module):
    """`encoder`: conv + transformer features of the bands and of their 8 directional differences, summed."""

    def __init__(self):
        super().__init__()
        for k in range(9):
            setattr(self, f"conv{k}", CornerConv(9, 3))
            setattr(self, f"transformer{k}", TokenTransformer())
            setattr(self, f"fusion{k}", CornerConv(6, 3))

    def branch(self, k, h):
        conv, transformer, fusion = (getattr(self, f"{name}{k}") for name in ("conv", "transformer", "fusion"))
        return fusion(torch.cat([conv(h), transformer(h)], dim=1))

    def forward(self, h):
        out = self.branch(0, h)
        centre = h[:, :, 1:-1, 1:-1]
        for k, ((r0, r1), (c0, c1)) in enumerate(SHIFTS, start=1):
            difference = centre - h[:, :, r0:r1, c0:c1]
            out = out + self.branch(k, F.interpolate(difference, size=h.shape[-2:], mode="nearest"))
        return out


class Fusion(nn.Module):
    def __init__(self):
        super().__init__()
        self.blur_conv = nn.Sequential(conv3x3(3, 3), nn.ReLU(inplace=True), conv3x3(3, 1))  # in the weights, unused
        self.tail_conv = nn.Sequential(
            conv3x3(3, 3),
            nn.ReLU(inplace=True),
            conv3x3(3, 6),
            nn.ReLU(inplace=True),
            conv3x3(6, 1),
            nn.ReLU(inplace=True),
        )

    def forward(self, structure, lightness):
        structure = F.interpolate(structure, size=lightness.shape[-2:], mode="bilinear", align_corners=False)
        return self.tail_conv(structure) + lightness


class ReleasedPIEANet(nn.Module):
    """The released network at its only working size: B x 3 x 256 x 256 RGB in [0, 1] -> B x 1 x 256 x 256."""

    def __init__(self):
        super().__init__()
        self.Low = StridedConv()  # in the weights, its output is unused
        self.High_1, self.High_2, self.High_3 = StridedConv(), StridedConv(), StridedConv()
        self.ffa_group = LightnessPath()
        self.encoder = StructureEncoder()
        self.fusion = Fusion()

    def forward(self, x):
        bands = torch.cat([self.High_1(x), self.High_2(x), self.High_3(x)], dim=1)
        return self.fusion(self.encoder(bands), self.ffa_group(x))


class OfficialPIEANet(nn.Module):
    """Any-size wrapper: resize to 256 x 256, run the released network, resize the map back and clip to [-1, 1]."""

    native_size = SIZE
    tile_multiple = 1
    receptive_radius = math.inf  # it sees the whole photo, resized to 256 x 256: never tiled

    def __init__(self):
        super().__init__()
        self.config = {"name": "official"}
        self.net = ReleasedPIEANet()

    def load_released_state_dict(self, state_dict):
        self.net.load_state_dict(state_dict, strict=True)

    def forward(self, x):
        size = x.shape[-2:]
        if tuple(size) != (SIZE, SIZE):
            x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False, antialias=True)
        residual = self.net(x)
        if tuple(size) != (SIZE, SIZE):
            residual = F.interpolate(residual, size=size, mode="bilinear", align_corners=False)
        return residual.clamp(-1, 1)
