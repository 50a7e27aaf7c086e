"""Semantic regions of a photo for rule-based scoring: boolean H x W masks found without learning.

    faces       frontal faces, scikit-image's LBP cascade (ships with scikit-image, works offline)
    bodies      a box below each face: 3 face widths wide, down to 7 face heights below the chin (or the image edge)
    people      faces and bodies
    subject     the people when a face is found, else the salient object: colour distance from the border colour
                (plus spectral-residual saliency unless the border is a plain backdrop), weighted by a centre
                prior, Otsu-thresholded, largest component, holes filled; the centre half when that fails
    background  everything outside the subject
    lights      point light sources (small connected blobs of near-white pixels, each at most 0.5 % of the image)
                and a halo around each, where glare shows
    all         every pixel

Detection runs on a copy of the photo whose longer side is at most ANALYSIS_SIZE; masks are returned at any shape.
"""

from functools import cache, cached_property

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import data as skimage_data
from skimage.feature import Cascade
from skimage.filters import threshold_otsu

from pieanet.utils.exposure import gray

REGION_NAMES = ("all", "faces", "bodies", "people", "subject", "background", "lights")
ANALYSIS_SIZE = 512
NEAR_WHITE = 0.95  # gray level of a light source's core
MAX_LIGHT_AREA = 0.005  # a point light covers at most this fraction of the image
HALO_RADIUS = 0.02  # halo around a light, fraction of the image diagonal
UNIFORM_BORDER = 0.05  # border colour std below which the background is a plain backdrop (product shots)
MIN_SUBJECT_AREA, MAX_SUBJECT_AREA = 0.02, 0.8  # outside these fractions the saliency map is not trusted


def _downscale(photo, size=ANALYSIS_SIZE):
    h, w = photo.shape[:2]
    scale = min(1.0, size / max(h, w))
    small = Image.fromarray(np.clip(photo * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if scale < 1.0:
        small = small.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def resize_mask(mask, shape):
    """Nearest-neighbour resize of a boolean mask."""
    if mask.shape == tuple(shape):
        return mask
    rows = (np.arange(shape[0]) * mask.shape[0] // shape[0]).clip(0, mask.shape[0] - 1)
    cols = (np.arange(shape[1]) * mask.shape[1] // shape[1]).clip(0, mask.shape[1] - 1)
    return mask[rows][:, cols]


def box_mask(shape, boxes):
    mask = np.zeros(shape, dtype=bool)
    for top, left, height, width in boxes:
        mask[max(0, top) : max(0, top + height), max(0, left) : max(0, left + width)] = True
    return mask


@cache
def _face_cascade():
    """scikit-image's LBP frontal-face cascade, read from its XML file once per process (on first use)."""
    return Cascade(skimage_data.lbp_frontal_face_cascade_filename())


def detect_faces(photo):
    """Frontal faces as (top, left, height, width) boxes in the coordinates of ``photo`` (H x W x 3 in [0, 1])."""
    small = _downscale(photo)
    side = min(small.shape[:2])
    if side < 24:
        return []
    found = _face_cascade().detect_multi_scale(
        img=small,
        scale_factor=1.2,
        step_ratio=1.2,
        min_size=(side // 10, side // 10),
        max_size=(side, side),
        min_neighbor_number=4,
    )
    scale = photo.shape[0] / small.shape[0]
    return [tuple(round(d[k] * scale) for k in ("r", "c", "height", "width")) for d in found]


def body_boxes(faces, shape):
    """A box for the body under each face box (top, left, height, width), clipped to ``shape``."""
    boxes = []
    for top, left, height, width in faces:
        chin = top + height
        body_left = max(0, left - width)
        boxes.append(
            (chin, body_left, min(shape[0], chin + 7 * height) - chin, min(shape[1], left + 2 * width) - body_left)
        )
    return boxes


def spectral_residual_saliency(luma, size=64):
    """Hou & Zhang (2007): the log spectrum minus its local mean, transformed back, as an H x W map in [0, 1]."""
    small = np.asarray(Image.fromarray(luma.astype(np.float32)).resize((size, size), Image.BILINEAR))
    spectrum = np.fft.fft2(small)
    log_amplitude = np.log(np.abs(spectrum) + 1e-8)
    residual = log_amplitude - ndimage.uniform_filter(log_amplitude, 3, mode="nearest")
    saliency = np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(spectrum)))) ** 2
    saliency = ndimage.gaussian_filter(saliency, 2.5)
    saliency = np.asarray(Image.fromarray(saliency.astype(np.float32)).resize(luma.shape[::-1], Image.BILINEAR))
    return _normalise(saliency)


def _normalise(x):
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)


def salient_subject(photo):
    """Mask of the main object of ``photo`` (at its own resolution, meant for the analysis-size copy)."""
    h, w = photo.shape[:2]
    border = np.concatenate([photo[0], photo[-1], photo[:, 0], photo[:, -1]])
    colour_distance = _normalise(np.linalg.norm(photo - np.median(border, axis=0), axis=2))
    y, x = np.mgrid[0:h, 0:w]
    centre_prior = np.exp(-(((y - h / 2) / (0.35 * h)) ** 2 + ((x - w / 2) / (0.35 * w)) ** 2) / 2)
    if np.std(border, axis=0).max() < UNIFORM_BORDER:  # a plain backdrop: colour alone outlines the object
        saliency = colour_distance * centre_prior
    else:
        saliency = (spectral_residual_saliency(gray(photo)) + colour_distance) * centre_prior
    mask = saliency > threshold_otsu(saliency) if np.ptp(saliency) > 0 else np.zeros((h, w), bool)
    labels, n = ndimage.label(mask)
    if n:
        mask = labels == 1 + np.argmax(ndimage.sum_labels(mask, labels, range(1, n + 1)))
        mask = ndimage.binary_fill_holes(mask)
    if not MIN_SUBJECT_AREA <= mask.mean() <= MAX_SUBJECT_AREA:
        mask = box_mask((h, w), [(h // 4, w // 4, h // 2, w // 2)])  # fall back to the centre half
    return mask


def point_lights(photo):
    """Light sources of ``photo`` grown by a halo (mask), and how many were found. A light source is a small blob of
    near-white pixels standing out against a darker surround (its halo's mean gray below 0.5)."""
    h, w = photo.shape[:2]
    luma = gray(photo)
    labels, n = ndimage.label(luma >= NEAR_WHITE)
    if not n:
        return np.zeros((h, w), bool), 0
    areas = ndimage.sum_labels(np.ones((h, w)), labels, range(1, n + 1))
    small = np.flatnonzero(areas <= MAX_LIGHT_AREA * h * w) + 1
    labels[~np.isin(labels, small)] = 0
    if not small.size:
        return np.zeros((h, w), bool), 0
    distance, (rows, cols) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
    nearest = labels[rows, cols]  # every pixel takes the label of the closest blob
    halo = distance <= max(1, round(HALO_RADIUS * np.hypot(h, w)))
    surround = ndimage.mean(luma, np.where(halo & (distance > 0), nearest, 0), small)
    lights = small[np.nan_to_num(surround, nan=1.0) < 0.5]
    return halo & np.isin(nearest, lights), len(lights)


class Regions:
    """The region masks of one photo, each computed on first use, returned at ``shape`` (default: the photo's)."""

    def __init__(self, photo, shape=None):
        self.shape = tuple(shape or photo.shape[:2])
        self.small = _downscale(photo)
        self._masks = {}
        self.n_lights = None

    def mask(self, name):
        if name not in REGION_NAMES:
            raise ValueError(f"unknown region {name!r}; expected one of {', '.join(REGION_NAMES)}")
        if name == "all":
            return np.ones(self.shape, bool)
        return resize_mask(self._small_mask(name), self.shape)

    @cached_property
    def faces(self):
        """Face boxes in the analysis copy's coordinates."""
        return detect_faces(self.small)

    def _small_mask(self, name):
        if name not in self._masks:
            shape = self.small.shape[:2]
            if name == "faces":
                mask = box_mask(shape, self.faces)
            elif name == "bodies":
                mask = box_mask(shape, body_boxes(self.faces, shape))
            elif name == "people":
                mask = self._small_mask("faces") | self._small_mask("bodies")
            elif name == "subject":
                mask = self._small_mask("people") if self.faces else salient_subject(self.small)
            elif name == "background":
                mask = ~self._small_mask("subject")
            else:
                mask, self.n_lights = point_lights(self.small)
            self._masks[name] = mask
        return self._masks[name]
