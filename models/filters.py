"""Image filters shared by the network (models/pieanet.py), the baselines (models/baselines.py) and guided upsampling
(models/inference.py)."""

import torch.nn.functional as F


def box_mean(x, size):
    """Mean of x (B x C x H x W) over a size x size window centred on each pixel (size odd), separable; at the borders
    the mean of the pixels that exist."""
    x = F.avg_pool2d(x, (size, 1), stride=1, padding=(size // 2, 0), count_include_pad=False)
    return F.avg_pool2d(x, (1, size), stride=1, padding=(0, size // 2), count_include_pad=False)
