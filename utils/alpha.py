"""Photos with transparency: what is judged, and what the model is shown.

A cut-out (a product or portrait with an alpha mask) has pixels that are not part of the photo. Composited over white
(``--alpha composite``, the tools' behaviour before issue 28), the white background is judged as a blown-out area and
pulls the verdict on the subject itself: a white surround makes the model read the whole photo as brighter. With
``--alpha judge`` (the default of make_heatmap and score.py):

* a pixel whose alpha is below ALPHA_JUDGED_FROM is *not judged*: it is left out of every statistic of the summary
  (mean r, shares over / under, score, stops), of every rule of a rule base, and drawn as a grey checkerboard;
* the model is shown the photo's own colours where the file keeps them under the transparent pixels (a mask laid
  over a photo: the same subject without the alpha channel, whose verdict it then is); where the file keeps one flat
  colour there (what cut-out tools write: black or white), that colour is no part of any photo, and the model is
  shown the subject over a neutral fill instead, the mean colour of the judged pixels, so the background adds no
  light or darkness of its own to the scene it judges. Composited over white, a cut-out's subject reads 0.26-0.52
  mean r darker than in its photo (the 4 sample photos cut out with an ellipse); over the neutral fill 0.01-0.08
  (tests/test_alpha.py).
"""

import numpy as np

from pieanet.utils.image_io import ImageLoadError

ALPHA_MODES = ("judge", "composite")
# below this opacity a pixel is more background than photo: what the model would say of it is said of the background
ALPHA_JUDGED_FROM = 0.5
FLAT_SPREAD = 0.5 / 255  # the fully transparent pixels of a cut-out hold one colour: none of the photo is left there


def judged_photo(image):
    """(the H x W x 3 photo the model is shown, the H x W bool mask of pixels not judged, or None when every pixel is)
    of ``image``: H x W x 3 (returned as it is) or H x W x 4 with straight (not premultiplied) alpha, as
    utils.image_io.load_image(keep_alpha=True) gives it (the module's docstring says what the model is shown).
    Raises ImageLoadError when no pixel is opaque enough."""
    image = np.asarray(image)
    if image.shape[-1] == 3:
        return image, None
    rgb, alpha = image[..., :3].astype(np.float32), image[..., 3].astype(np.float32)
    not_judged = alpha < ALPHA_JUDGED_FROM
    if not_judged.all():
        raise ImageLoadError(
            f"every pixel is (nearly) transparent (alpha below {ALPHA_JUDGED_FROM:g}); nothing to "
            "judge (--alpha composite judges it over white)"
        )
    if not not_judged.any() or not flat(rgb[alpha == 0]):
        return rgb, (not_judged if not_judged.any() else None)  # the colours the file keeps: the photo's own
    weight = np.where(not_judged, 0.0, alpha).astype(np.float64)
    fill = (rgb * weight[..., None]).sum(axis=(0, 1)) / weight.sum()
    shown = rgb * alpha[..., None] + fill.astype(np.float32) * (1.0 - alpha[..., None])
    return np.clip(shown, 0.0, 1.0, out=shown), (not_judged if not_judged.any() else None)


def flat(colours):
    """Whether N x 3 colours (in [0, 1]) are one colour to within half an 8-bit level (none: flat too)."""
    return colours.size == 0 or bool((np.ptp(colours, axis=0) <= FLAT_SPREAD).all())
