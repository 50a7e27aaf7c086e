"""Does a frozen P-IEANet help train an exposure corrector? A tiny Zero-DCE-style curve enhancer trained three ways:

    baseline   the usual no-reference Zero-DCE losses: exposure control, spatial consistency, illumination smoothness
    with       those losses + 50 x ExposureLoss (models/losses.py)
    alone      ExposureLoss only

    python examples/train_enhancer.py [--judge checkpoints/pieanet_corpus.safetensors] [--steps 300]

Data: crops of the photos that ship with scikit-image / matplotlib, re-exposed in linear light by
datasets.synthetic.expose (global -3..+2 EV, gradients, spotlights). The held-out scenes are different source photos
from the training scenes. Printed: MAE (RGB, [0, 1]) of each enhancer's output to the ideal image on the held-out
images, next to the MAE of the untouched inputs. Seeds are fixed; about 1-2 minutes on one CPU core.

The enhancer applies one curve to all three channels. With Zero-DCE's per-channel curves the enhancer learns colour
casts that the judge, which sees only luma, does not penalise: a learned loss is a target for adversarial solutions,
so give the trained model no more freedom than the task needs.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pieanet.datasets.synthetic import default_scenes, expose, load_source, random_crop  # noqa: E402
from pieanet.models import CheckpointError, load_model  # noqa: E402
from pieanet.models.losses import ExposureLoss  # noqa: E402

DEFAULT_JUDGE = Path(__file__).resolve().parents[1] / "checkpoints" / "pieanet_corpus.safetensors"
HELD_OUT = ("coffee", "hopper")
LEVELS = ("N3", "N2", "N1", "P1", "P2", "GRAD", "SPOT")


class CurveEnhancer(nn.Module):
    """Zero-DCE's light-enhancement curve LE(x) = x + a * x * (1 - x), applied ``iterations`` times with a in [-1, 1]
    (a < 0 darkens, so over-exposure is corrected too), one a for the three channels (exposure, not colour). The
    curve parameters are estimated from a 1/``scale`` copy and averaged over a ``grid`` x ``grid`` layout of cells,
    then upsampled smoothly: a few smooth corrections per image instead of Zero-DCE's per-pixel maps."""

    def __init__(self, width=12, iterations=8, scale=4, grid=2):
        super().__init__()
        self.iterations, self.scale, self.grid = iterations, scale, grid
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=2, dilation=2),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.Conv2d(width, iterations, 1), nn.Tanh())

    def forward(self, x):
        features = self.features(F.avg_pool2d(x, self.scale, ceil_mode=True))
        curves = self.head(F.adaptive_avg_pool2d(features, self.grid))
        curves = F.interpolate(curves, size=x.shape[-2:], mode="bilinear", align_corners=False)
        for a in curves.chunk(self.iterations, dim=1):
            x = x + a * x * (1 - x)
        return x, curves


def exposure_control(y, level=0.6, patch=16):
    """Zero-DCE L_exp: distance of 16 x 16 patch means of the brightness from a well-exposedness level."""
    return (F.avg_pool2d(y.mean(1, keepdim=True), patch) - level).abs().mean()


def spatial_consistency(x, y, patch=4):
    """Zero-DCE L_spa: differences between neighbouring 4 x 4 region means should survive enhancement."""
    kernels = torch.tensor(
        [
            [[0, 0, 0], [-1, 1, 0], [0, 0, 0]],
            [[0, 0, 0], [0, 1, -1], [0, 0, 0]],
            [[0, -1, 0], [0, 1, 0], [0, 0, 0]],
            [[0, 0, 0], [0, 1, 0], [0, -1, 0]],
        ],
        dtype=x.dtype,
        device=x.device,
    )[:, None]
    dx = F.conv2d(F.avg_pool2d(x.mean(1, keepdim=True), patch), kernels, padding=1)
    dy = F.conv2d(F.avg_pool2d(y.mean(1, keepdim=True), patch), kernels, padding=1)
    return (dx - dy).square().sum(1).mean()


def illumination_smoothness(curves):
    """Zero-DCE L_tvA: total variation of the curve parameter maps."""
    return (curves[..., 1:, :] - curves[..., :-1, :]).square().mean() + (
        curves[..., :, 1:] - curves[..., :, :-1]
    ).square().mean()


def zero_dce_loss(x, y, curves, level=0.6):
    # Zero-DCE's published weights for these three terms
    return spatial_consistency(x, y) + 10 * exposure_control(y, level) + 200 * illumination_smoothness(curves)


def make_pairs(scenes, count, size, seed):
    """(inputs, ideals): ``count`` re-exposed crops of the given scenes as N x 3 x size x size tensors in [0, 1]."""
    rng = np.random.default_rng(seed)
    photos = [load_source(path) for paths, _ in scenes for path in paths]
    inputs, ideals = [], []
    for i in range(count):
        ideal = random_crop(photos[i % len(photos)], size, rng)
        inputs.append(expose(ideal, LEVELS[rng.integers(len(LEVELS))], rng))
        ideals.append(ideal)

    def as_tensor(images):
        return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0

    return as_tensor(inputs), as_tensor(ideals)


def train(variant, judge, inputs, steps, batch_size, exposure_weight, level, seed):
    torch.manual_seed(seed)
    enhancer = CurveEnhancer()
    optimizer = torch.optim.Adam(enhancer.parameters(), lr=3e-3)
    order = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = inputs[torch.randint(len(inputs), (batch_size,), generator=order)]
        y, curves = enhancer(x)
        if variant == "baseline":
            loss = zero_dce_loss(x, y, curves, level)
        elif variant == "with":
            loss = zero_dce_loss(x, y, curves, level) + exposure_weight * judge(y)
        else:
            loss = judge(y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return enhancer.eval()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--judge", type=Path, default=DEFAULT_JUDGE, help="P-IEANet weights for ExposureLoss")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--exposure-weight", type=float, default=50.0, help="ExposureLoss weight in 'with'")
    parser.add_argument(
        "--exposure-level",
        type=float,
        default=0.6,
        help="Zero-DCE's well-exposedness level E for the exposure control loss (paper: 0.6)",
    )
    parser.add_argument("--train-crops", type=int, default=384)
    parser.add_argument("--test-crops", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (its batches are tiny; 1 avoids contention on a busy CPU)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    if not args.judge.is_file():
        print(
            f"train_enhancer: the judge checkpoint {args.judge} is missing; train it with `python train_wavelet.py "
            "--config configs/pieanet_corpus.yaml` or pass --judge PATH",
            file=sys.stderr,
        )
        return 2
    try:
        judge = ExposureLoss(load_model(args.judge))
    except CheckpointError as e:
        print(f"train_enhancer: {e}", file=sys.stderr)
        return 2
    scenes = default_scenes()
    held_out = [scenes[name] for name in HELD_OUT if name in scenes]
    training = [paths for name, paths in scenes.items() if name not in HELD_OUT]
    if not held_out or not training:
        print(
            f"train_enhancer: need photos of the held-out scenes {HELD_OUT} and of at least one other scene "
            "(scikit-image and matplotlib sample data)",
            file=sys.stderr,
        )
        return 2
    train_inputs, _ = make_pairs(training, args.train_crops, 64, args.seed)
    test_inputs, test_ideals = make_pairs(held_out, args.test_crops, 128, args.seed + 1)
    print(
        f"training on {len(train_inputs)} crops of {len(training)} scenes, testing on {len(test_inputs)} held-out "
        f"images (128 x 128) of {len(held_out)} other scenes ({', '.join(n for n in HELD_OUT if n in scenes)})"
    )

    def mae(images):
        return float((images - test_ideals).abs().mean())

    print(f"{'inputs, not enhanced':>24}: held-out MAE to ideal {mae(test_inputs):.4f}")
    for variant in ("baseline", "with", "alone"):
        start = time.time()
        enhancer = train(
            variant,
            judge,
            train_inputs,
            args.steps,
            args.batch_size,
            args.exposure_weight,
            args.exposure_level,
            args.seed,
        )
        with torch.no_grad():
            enhanced, _ = enhancer(test_inputs)
        print(
            f"{variant:>24}: held-out MAE to ideal {mae(enhanced):.4f}  ({time.time() - start:.0f} s, "
            f"{sum(p.numel() for p in enhancer.parameters())} parameters)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
