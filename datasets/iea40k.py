"""IEA40K-layout datasets: a CSV (img_id, ref_id, score[, level, ...]), test images, residual labels, optional refs.

    <images_dir>/<img_id>                         the test photo
    <labels_dir>/<img_id without extension>.npy   residual ideal - test in grey levels (-255..255), / label_scale
    <refs_dir>/<ref_id>                           the ideal photo (optional)
    <teacher_dir>/<sha256 of the test photo>.npy  a teacher's residual map of it (optional; datasets/teacher.py)

Problems are reported as one ``DatasetError`` naming the CSV line and the file: missing columns and missing files
when the dataset is built, unreadable files, shape mismatches and bad label values when an item is read.
Augmentation (resize, crop, flips) moves photo, label, teacher map and ref together; noise touches the photo only. It
is a function of (seed, epoch, index), so a resumed run sees the same batches.
"""

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from pieanet.utils.arrays import ArrayFileError, read_npy
from pieanet.utils.errors import EXIT_USAGE, PieaError
from pieanet.utils.image_io import ImageLoadError, file_sha256, load_image
from pieanet.utils.safety import csv_records

REQUIRED_COLUMNS = ("img_id", "ref_id", "score")
LABEL_RANGE_EPS = 1e-3  # float32 rounding of a residual stored as exactly +-label_scale


class DatasetError(PieaError, ValueError):
    """Bad dataset content; the message names the CSV line and the file."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Row:
    line: int  # line number in the CSV file (the header is line 1)
    img_id: str
    ref_id: str
    score: float
    level: str  # "" when the CSV has no level column


def read_split(csv_path, required=REQUIRED_COLUMNS):
    """The rows of an IEA40K split list (UTF-8, with or without a byte-order mark), checked for the ``required``
    columns and, when ``score`` is required, parseable scores (an optional score that is missing or not a number
    reads as nan)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"{csv_path}: split list not found; expected a CSV with columns {', '.join(required)}")
    with csv_records(csv_path, "a split list", DatasetError) as reader:
        return _read_rows(csv_path, reader, required)


def _read_rows(csv_path, reader, required):
    missing = [c for c in required if c not in reader.fieldnames]
    if missing:
        raise DatasetError(
            f"{csv_path}: missing column(s) {', '.join(missing)}; expected "
            f"{', '.join(required)} (found: {', '.join(reader.fieldnames) or 'no header'})"
        )
    rows = []
    for record in reader:
        line = reader.line_num
        img_id = (record.get("img_id") or "").strip()
        if not img_id:
            raise DatasetError(f"{csv_path} line {line}: empty img_id; expected a test image file name")
        try:
            score = float(record.get("score"))
        except (TypeError, ValueError):
            score = math.nan
        if "score" in required and not math.isfinite(score):
            raise DatasetError(f"{csv_path} line {line} ({img_id}): score {record['score']!r} is not a number")
        rows.append(Row(line, img_id, (record.get("ref_id") or "").strip(), score, (record.get("level") or "").strip()))
    if not rows:
        raise DatasetError(f"{csv_path}: no rows; expected one row per test image")
    return rows


class IEA40KDataset(Dataset):
    """Items: dict(image 3xHxW float32 [0,1], residual 1xHxW float32 [-1,1], score float, name str[, ref 3xHxW]
    [, teacher 1xHxW float32 [-1,1], has_teacher bool]).

    ``size`` resizes so the longer side is ``size`` (keeping the aspect ratio); ``crop`` takes a square crop (random
    when ``augment``, centred otherwise); ``augment`` also flips horizontally and vertically and adds Gaussian noise
    of std ``noise_std`` to the photo only. Paths: ``csv`` as given if it exists, else under ``root``; the folders
    under ``root`` unless absolute.

    ``teacher_dir``: a cache of teacher maps (datasets/teacher.py: ``<sha256 of the image file>.npy`` in grey levels,
    the labels' units and sign), a path as given, not under ``root``: one cache serves many datasets. A photo whose map
    is there gets it as ``teacher`` (scaled like its label) and ``has_teacher`` True; the others get a zero map and
    False, so one batch can mix both. The photos are hashed once, here; ``teacher_count`` is how many have a map.
    """

    def __init__(
        self,
        root,
        csv,
        images_dir="images",
        labels_dir="labels",
        refs_dir=None,
        label_scale=255.0,
        size=None,
        crop=None,
        augment=False,
        allow_label_resize=False,
        seed=0,
        noise_std=0.0,
        teacher_dir=None,
    ):
        root = Path(root)
        self.csv = Path(csv) if Path(csv).is_file() else root / csv
        for name, value, low in (("label_scale", label_scale, None), ("noise_std", noise_std, 0.0)):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or (value <= 0 if low is None else value < low)
            ):
                raise DatasetError(
                    f"{self.csv}: {name} {value!r} must be a {'positive number' if low is None else 'number >= 0'}"
                )
        for name, value in (("size", size), ("crop", crop)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise DatasetError(f"{self.csv}: {name} {value!r} must be a positive integer or None")
        self.images_dir = root / images_dir
        self.labels_dir = root / labels_dir
        self.refs_dir = None if refs_dir is None else root / refs_dir
        self.label_scale = float(label_scale)
        self.size, self.crop, self.augment = size, crop, augment
        self.allow_label_resize, self.seed, self.noise_std = allow_label_resize, seed, noise_std
        self.epoch = 0
        self.rows = read_split(self.csv)
        self._check_files()
        self.teacher_maps = None if teacher_dir is None else self._find_teacher_maps(Path(teacher_dir))

    @property
    def teacher_count(self):
        """How many photos have a teacher map (0 without teacher_dir)."""
        return sum(path is not None for path in self.teacher_maps or ())

    def _find_teacher_maps(self, folder):
        if not folder.is_dir():
            raise DatasetError(f"{self.csv}: teacher_dir {folder} not found; expected a folder of teacher maps")
        have = set(p.name for p in folder.iterdir())
        names = [teacher_map_name(self.images_dir / row.img_id) for row in self.rows]
        return [folder / name if name in have else None for name in names]

    def _paths(self, row):
        paths = {"image": self.images_dir / row.img_id, "label": self.labels_dir / label_name(row.img_id)}
        if self.refs_dir is not None:
            paths["ref"] = self.refs_dir / row.ref_id
        return paths

    def _check_files(self):
        for kind, folder in (("images", self.images_dir), ("labels", self.labels_dir), ("refs", self.refs_dir)):
            if folder is not None and not folder.is_dir():
                raise DatasetError(f"{self.csv}: {kind} folder {folder} not found")
        existing = {}  # one directory listing per folder instead of a stat per file
        missing = []
        for row in self.rows:
            for kind, path in self._paths(row).items():
                if kind == "ref" and not row.ref_id:
                    missing.append((row, kind, path))
                    continue
                folder = path.parent
                if folder not in existing:
                    existing[folder] = set(p.name for p in folder.iterdir()) if folder.is_dir() else set()
                if path.name not in existing[folder]:
                    missing.append((row, kind, path))
        if missing:
            row, kind, path = missing[0]
            more = f" ({len(missing) - 1} more missing files)" if len(missing) > 1 else ""
            what = "empty ref_id" if kind == "ref" and not row.ref_id else f"{kind} file not found: {path}"
            raise DatasetError(f"{self._where(row)}: {what}{more}")

    def _where(self, row):
        return f"{self.csv} line {row.line} ({row.img_id})"

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.rows)

    def _load_label(self, row, path, shape, what="label"):
        try:
            residual = read_label(path, self.label_scale)
        except DatasetError as e:
            raise DatasetError(f"{self._where(row)}: {e}") from e
        if residual.shape != shape:
            message = (
                f"{self._where(row)}: {path}: {what} is {residual.shape[0]}x{residual.shape[1]} but the "
                f"image is {shape[0]}x{shape[1]}"
            )
            if not self.allow_label_resize:
                raise DatasetError(message + "; expected the same size (or set allow_label_resize)")
            warnings.warn(message + "; label resized to the image")
            residual = resize(residual[..., None], shape)[..., 0]
        return residual[..., None]

    def _load_photo(self, row, path):
        try:
            return load_image(path)
        except ImageLoadError as e:
            raise DatasetError(f"{self._where(row)}: {e}") from e

    def __getitem__(self, index):
        row = self.rows[index]
        paths = self._paths(row)
        image = self._load_photo(row, paths["image"])
        shape = image.shape[:2]
        planes = [image, self._load_label(row, paths["label"], shape)]
        teacher = None if self.teacher_maps is None else self.teacher_maps[index]
        if self.teacher_maps is not None:
            planes.append(
                np.zeros(shape + (1,), np.float32)
                if teacher is None
                else self._load_label(row, teacher, shape, "teacher map")
            )
        if "ref" in paths:
            ref = self._load_photo(row, paths["ref"])
            if ref.shape[:2] != shape:
                raise DatasetError(
                    f"{self._where(row)}: {paths['ref']}: ref is {ref.shape[0]}x{ref.shape[1]} but "
                    f"the image is {shape[0]}x{shape[1]}; expected the same size"
                )
            planes.append(ref)
        # photo, label and ref as one H x W x C array, so every geometric step is the same on all of them
        stack = self._geometry(
            row, np.concatenate(planes, axis=2), np.random.default_rng((self.seed, self.epoch, index))
        )
        stack = torch.from_numpy(np.ascontiguousarray(stack.transpose(2, 0, 1)))
        image, residual, rest = stack[:3], stack[3:4], stack[4:]
        if self.augment and self.noise_std > 0:
            rng = np.random.default_rng((self.seed, self.epoch, index, 1))
            noise = rng.normal(0.0, self.noise_std, size=image.shape).astype(np.float32)
            image = (image + torch.from_numpy(noise)).clamp_(0.0, 1.0)
        item = {"image": image, "residual": residual, "score": row.score, "name": row.img_id}
        if self.teacher_maps is not None:
            item["teacher"], item["has_teacher"], rest = rest[:1], teacher is not None, rest[1:]
        if "ref" in paths:
            item["ref"] = rest[:3]
        return item

    def _geometry(self, row, stack, rng):
        h, w = stack.shape[:2]
        if self.size and max(h, w) != self.size:
            scale = self.size / max(h, w)
            h, w = max(1, round(h * scale)), max(1, round(w * scale))
            stack = resize(stack, (h, w))
        if self.crop:
            if h < self.crop or w < self.crop:
                raise DatasetError(
                    f"{self._where(row)}: image is {h}x{w}"
                    f"{' after resizing' if self.size else ''}; expected at least the crop "
                    f"{self.crop}x{self.crop}"
                )
            if self.augment:
                top, left = int(rng.integers(0, h - self.crop + 1)), int(rng.integers(0, w - self.crop + 1))
            else:
                top, left = (h - self.crop) // 2, (w - self.crop) // 2
            stack = stack[top : top + self.crop, left : left + self.crop]
        if self.augment:
            if rng.random() < 0.5:
                stack = stack[:, ::-1]
            if rng.random() < 0.5:
                stack = stack[::-1]
        return stack


def label_name(img_id):
    """The file name of the label of the test image ``img_id`` in the labels folder (the layout above)."""
    return str(Path(img_id).with_suffix(".npy"))


def teacher_map_name(image_path):
    """The file name of a teacher map of the image file at ``image_path`` (datasets/teacher.py writes them): named by
    the image's content, so a renamed or copied photo finds its map and an edited one does not."""
    return f"{file_sha256(image_path)}.npy"


def read_label(path, label_scale=255.0):
    """The residual label at ``path`` (a .npy map in grey levels) as float32 H x W in [-1, 1]: divided by
    ``label_scale``, singleton channel dimensions dropped. The one label reader of training and evaluation; a bad
    label raises DatasetError naming the file (missing, unreadable, not a numeric H x W map, NaN/inf, values beyond
    +-label_scale)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: label not found; expected a .npy residual map")
    try:
        label = read_npy(path)
    except ArrayFileError as e:  # one line naming what the file is, never numpy's unsafe advice
        raise DatasetError(f"{path}: unreadable label ({e.reason}); expected a .npy array") from e
    if label.ndim == 3 and 1 in (label.shape[0], label.shape[-1]):
        label = label.reshape(label.shape[1:] if label.shape[0] == 1 else label.shape[:2])
    if (
        label.ndim != 2
        or min(label.shape) < 1
        or not np.issubdtype(label.dtype, np.number)
        or np.issubdtype(label.dtype, np.complexfloating)
    ):
        raise DatasetError(f"{path}: label is {label.dtype} {label.shape}; expected a numeric H x W array")
    residual = label.astype(np.float32) / np.float32(label_scale)
    if not np.isfinite(residual).all():
        raise DatasetError(f"{path}: label contains NaN or inf")
    peak = float(np.abs(residual).max())
    if peak > 1.0 + LABEL_RANGE_EPS:
        raise DatasetError(
            f"{path}: label reaches {peak * label_scale:g}, beyond +-{label_scale:g} (label_scale); "
            "expected a residual in grey levels"
        )
    return np.clip(residual, -1.0, 1.0)


def resize(array, shape):
    """Bilinear, antialiased resize of an H x W x C float32 array. Its weights are non-negative, so photos stay in
    [0, 1]; and it is linear, so a resized label is still gray(resized ideal) - gray(resized test)."""
    tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))[None]
    tensor = F.interpolate(tensor, size=tuple(shape), mode="bilinear", antialias=True, align_corners=False)
    return tensor[0].permute(1, 2, 0).numpy()
