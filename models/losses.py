"""A differentiable exposure loss: a frozen P-IEANet judges an enhancer's output, pixel by pixel.

    # any model: B x 3 x H x W -> B x 1 x H x W
    loss = ExposureLoss(load_model("checkpoints/pieanet_corpus.safetensors"))
    total = other_losses + 0.5 * loss(enhancer(x))

The loss network is frozen three ways:
- its parameters have ``requires_grad=False``, so gradients reach the input and never the weights;
- it stays in eval mode when the enclosing model calls ``.train()``;
- it is kept outside the module tree, so when the loss is registered as a submodule of the model being trained
  (``enhancer.loss = ExposureLoss(...)``), ``enhancer.parameters()`` -- and so the optimizer built from it --,
  ``enhancer.state_dict()`` (the enhancer's checkpoints) and DistributedDataParallel's parameter broadcast never see
  the frozen weights. Registering it as an ordinary child would put them in all three: a frozen parameter in an
  optimizer is harmless for Adam (no gradient, no step) but weight decay in some optimizers and every saved checkpoint
  would carry megabytes that do not belong to the enhancer.
``.to()``, ``.cuda()``, ``.half()`` on the loss or on the enclosing model still move the network (``_apply`` is
forwarded). ``loss.net`` is the network itself.
"""

import torch
import torch.nn as nn

from pieanet.models.onnx_model import OnnxModel

KINDS = ("abs", "squared")
REDUCTIONS = ("mean", "sum", "none")


class ExposureLoss(nn.Module):
    """Penalty on the residual a frozen P-IEANet predicts for ``x`` (B x 3 x H x W RGB in [0, 1]).

    kind: "abs" (|r|, default) or "squared" (r^2). Pixels the network calls under-exposed (r > 0) are weighted by
    ``under_weight``, over-exposed ones (r < 0) by ``over_weight``. ``mask`` (B x 1 x H x W, or broadcastable) weights
    pixels; with reduction "mean" the result is divided by the mask's sum, so it stays a per-pixel average.
    reduction: "mean" (scalar), "sum" (scalar) or "none" (the B x 1 x H x W penalty map).
    """

    def __init__(self, net, kind="abs", reduction="mean", under_weight=1.0, over_weight=1.0):
        """net: the judge, an ``nn.Module`` mapping RGB to a residual map (e.g. ``models.load_model(path)``)."""
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be a model (nn.Module), e.g. models.load_model(path); got {type(net).__name__}")
        if isinstance(net, OnnxModel):
            raise TypeError(
                f"net is the ONNX model {net.path}, which runs in onnxruntime and passes no gradient to "
                "the enhancer; load the torch checkpoint instead, e.g. "
                "load_model('checkpoints/pieanet_corpus.safetensors')"
            )
        self.__dict__["net"] = net.eval().requires_grad_(False)  # bypasses nn.Module registration (see above)
        self.kind, self.reduction = kind, reduction
        self.under_weight, self.over_weight = float(under_weight), float(over_weight)

    def train(self, mode=True):
        super().train(mode)
        self.net.eval()  # the judge's normalisation/dropout never switch to training behaviour
        return self

    def _apply(self, fn, recurse=True):
        self.net._apply(fn, recurse)
        return super()._apply(fn, recurse)

    def residual(self, x):
        """The frozen network's residual map for x, differentiable with respect to x."""
        return self.net(x)

    def forward(self, x, mask=None):
        r = self.residual(x).float()
        penalty = r.abs() if self.kind == "abs" else r.square()
        if self.under_weight != 1.0 or self.over_weight != 1.0:
            penalty = penalty * torch.where(r > 0, self.under_weight, self.over_weight)
        if mask is not None:
            mask = mask.to(penalty.dtype)
            penalty = penalty * mask
        if self.reduction == "none":
            return penalty
        if self.reduction == "sum":
            return penalty.sum()
        if mask is None:
            return penalty.mean()
        return penalty.sum() / mask.expand_as(penalty).sum().clamp_min(1e-8)

    def extra_repr(self):
        return (
            f"kind={self.kind}, reduction={self.reduction}, under_weight={self.under_weight}, "
            f"over_weight={self.over_weight}"
        )
