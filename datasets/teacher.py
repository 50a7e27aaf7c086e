"""Teacher maps for distillation: the released P-IEANet's residual maps of many photos, computed once and cached.

    python -m datasets.teacher --data-root DIR --csv train.csv --teacher PTH --cache DIR [--workers N]
    python -m datasets.teacher --data-root photos/ --teacher PTH --cache DIR        # every image in the folder

The photos: ``<data-root>/<images-dir>/<img_id>`` for each row of an IEA40K-layout split list (``--csv``), or every
image file in ``--data-root`` (``--recursive``: and its sub-folders) without ``--csv``. The teacher: the released
network's ``.pth`` (models/official.py), passed in by the caller; any other checkpoint is refused.

Each map is ``<cache>/<sha256 of the image file>.npy``: float32, H x W at the photo's own size, in grey levels and
the labels' convention (labels/*.npy: gray(ideal) - gray(test), > 0 under-exposed), i.e. the teacher's r times 255.
``<cache>/teacher.json`` names the teacher, by the SHA-256 of its file: a cache holds one teacher's maps, and a run
with another teacher file into it is refused (one line naming both files). So a map is keyed by the teacher's and the
image's content: a re-encoded or edited photo gets a new map, a renamed or copied one finds its map. A photo decodes
as everywhere else in the project (utils/image_io.load_image: EXIF-rotated, RGB in [0, 1]).

Size: the released network runs only at 256 x 256, so OfficialPIEANet resizes the photo to 256 x 256 (bilinear with
antialiasing; the aspect ratio is not kept, as the released code does) and the map back to the photo's size (bilinear,
align_corners=False), clipped to [-1, 1]. A 256 x 256 photo is not resized at all.

Deterministic: each photo runs on its own (a batch of one; the released code mixed the images of a batch, and
OfficialPIEANet's batch independence is not relied on), with one torch thread per worker, so the same bytes give the
same map bit for bit whatever ``--workers`` and the order. ``--workers N`` runs N photos at a time in threads (torch
releases the GIL while it computes). Maps already in the cache are skipped (resumable); each is written atomically
(a temporary file renamed), so a killed run leaves no partial map. A photo that cannot be read is named on stderr
and the others go on (exit 1); a bad option, teacher or cache is exit 2 before any work.
"""

import argparse
import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from pieanet.datasets.iea40k import DatasetError, read_split, teacher_map_name
from pieanet.models import CheckpointError, build_model, check_weights, read_checkpoint
from pieanet.utils import cli
from pieanet.utils.errors import EXIT_USAGE, PieaError
from pieanet.utils.image_io import (
    ImageLoadError,
    atomic_write,
    file_sha256,
    list_images,
    load_image,
    remove_orphan_temporaries,
)
from pieanet.utils.arrays import read_npy
from pieanet.utils.safety import brief, first_line

PROG = "teacher"
IDENTITY = "teacher.json"
GREY_LEVELS = 255.0  # the teacher's r in [-1, 1] times this: the labels' grey levels


class TeacherError(PieaError, ValueError):
    """A teacher file or a cache that cannot be used; the one-line message names the file."""

    exit_code = EXIT_USAGE


def load_teacher(path):
    """The released P-IEANet at ``path`` (eval mode, CPU); anything else raises TeacherError naming the file."""
    try:
        config, state = read_checkpoint(path)
        if config.get("name") != "official":
            raise TeacherError(
                f"{path}: a {config.get('name', 'unknown')!r} checkpoint; expected the released "
                "P-IEANet .pth as teacher"
            )
        check_weights(path, config, state)
        model = build_model(config)
        model.load_state_dict(state, strict=True)
    except CheckpointError as e:
        raise TeacherError(str(e)) from e
    return model.eval()


class TeacherCache:
    """The maps of one teacher in a folder. ``teacher``: the teacher's file (its SHA-256 is the cache's key);
    ``model``: the network to run (default: load_teacher(teacher); tests pass a small stand-in). Opening a cache
    made with another teacher file raises TeacherError."""

    def __init__(self, folder, teacher, model=None):
        self.folder, self.teacher = Path(folder), Path(teacher)
        if not self.teacher.is_file():
            raise TeacherError(f"{self.teacher}: teacher file not found; expected the released P-IEANet .pth")
        self.teacher_sha256 = file_sha256(self.teacher)
        self.model = load_teacher(self.teacher) if model is None else model.eval()  # a bad file claims no cache
        self._claim()
        self.calls = 0  # photos run through the teacher by this object (the cache hits are not counted)
        self._lock = threading.Lock()

    def _claim(self):
        """Check ``teacher.json`` against this teacher, or write it into a new or empty cache."""
        identity = self.folder / IDENTITY
        if self.folder.exists() and not self.folder.is_dir():
            raise TeacherError(f"{self.folder}: not a folder; expected a cache folder for teacher maps")
        if identity.is_file():
            try:
                recorded = json.loads(identity.read_text(encoding="utf-8"))
                sha, name = recorded["teacher_sha256"], recorded.get("teacher_file", "?")
                if not isinstance(sha, str) or not isinstance(name, str):
                    raise TypeError(f"teacher_sha256 {brief(sha)} and teacher_file {brief(name)}: expected text")
            except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
                raise TeacherError(
                    f"{identity}: unreadable cache identity ({first_line(e, 200)}); expected the "
                    "teacher.json this tool writes"
                ) from e
            if sha != self.teacher_sha256:
                raise TeacherError(
                    f"{self.teacher}: not the teacher of the cache {self.folder} (its maps are of "
                    f"{name}, sha256:{sha[:16]}; this file is sha256:{self.teacher_sha256[:16]}); "
                    "use another --cache"
                )
            return
        if self.folder.is_dir() and any(self.folder.glob("*.npy")):
            raise TeacherError(
                f"{self.folder}: holds maps but no {IDENTITY}; expected a cache this tool made, or an empty folder"
            )
        with atomic_write(identity) as tmp:
            tmp.write_text(
                json.dumps(
                    {
                        "teacher_sha256": self.teacher_sha256,
                        "teacher_file": self.teacher.name,
                        "units": "grey levels, gray(ideal) - gray(test), like labels/*.npy",
                        "size": "run at 256 x 256, resized back to the photo's size",
                    },
                    indent=1,
                )
                + "\n",
                encoding="utf-8",
            )

    def path_of(self, image_path):
        """Where the map of the image file at ``image_path`` is (or goes): named by its content."""
        return self.folder / teacher_map_name(image_path)

    def compute(self, image):
        """The teacher's map of ``image`` (H x W x 3 float in [0, 1]) in grey levels, float32 H x W: the photo alone,
        no gradient."""
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
            residual = self.model(x)[0, 0].numpy()
        with self._lock:
            self.calls += 1
        return residual.astype(np.float32) * np.float32(GREY_LEVELS)

    def get(self, image_path):
        """The map of the image at ``image_path`` (float32 H x W, grey levels) and whether it came from the cache;
        computed and written (atomically) when missing. Raises ImageLoadError for an unreadable image."""
        target = self.path_of(image_path)
        if target.is_file():
            return read_npy(target), True  # ArrayFileError (a ValueError): one line for that photo
        grey = self.compute(load_image(image_path))
        with atomic_write(target) as tmp:
            np.save(tmp, grey)
        return grey, False


def image_list(data_root, csv=None, images_dir="images", recursive=False):
    """The image paths a run covers: ``<data_root>/<images_dir>/<img_id>`` per row of the split list ``csv`` (a
    path, or a name under ``data_root``), else every image file in ``data_root``. Raises TeacherError."""
    data_root = Path(data_root)
    if not data_root.is_dir():
        raise TeacherError(
            f"{data_root}: no such folder; expected --data-root to be a folder of images or an IEA40K-layout folder"
        )
    if csv is None:
        paths = list_images(data_root, recursive=recursive)
        if not paths:
            raise TeacherError(f"{data_root}: no image files found; expected photos or --csv with a split list")
        return paths
    csv_path = Path(csv) if Path(csv).is_file() else data_root / csv
    try:
        rows = read_split(csv_path, required=("img_id",))
    except DatasetError as e:
        raise TeacherError(str(e)) from e
    return [data_root / images_dir / row.img_id for row in rows]


def fill(cache, paths, workers=1, progress=None):
    """Make sure every image in ``paths`` has its map in ``cache``: ``workers`` photos at a time. Returns
    (computed, cached, [(path, reason)] of the photos that failed)."""
    counts, failed = {"computed": 0, "cached": 0}, []

    def one(path):
        try:
            _, hit = cache.get(path)
            return path, ("cached" if hit else "computed"), None
        except ImageLoadError as e:
            return path, None, str(e).removeprefix(f"{path}: ")
        except (OSError, RuntimeError, ValueError, MemoryError) as e:
            return path, None, first_line(e, 200)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for path, kind, reason in pool.map(one, paths):
            if reason is not None:
                failed.append((path, reason))
                if progress is not None:
                    progress.fail(path, reason)
            else:
                counts[kind] += 1
            if progress is not None:
                progress.update()
    return counts["computed"], counts["cached"], failed


def parse_args(argv):
    p = argparse.ArgumentParser(prog=f"python -m datasets.{PROG}", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data-root", type=Path, required=True, help="an IEA40K-layout folder (with --csv) or a folder of images"
    )
    p.add_argument(
        "--csv",
        help="split list (img_id column) under --data-root or a path; without it, every image file in --data-root",
    )
    p.add_argument(
        "--images-dir", default="images", help="with --csv: the images' folder under --data-root (default: images)"
    )
    p.add_argument("--recursive", action="store_true", help="without --csv: also the sub-folders' images")
    p.add_argument("--teacher", type=Path, required=True, help="the released P-IEANet .pth")
    p.add_argument("--cache", type=Path, required=True, help="the cache folder (made if missing; one teacher each)")
    p.add_argument(
        "--workers", type=cli.positive_int, default=1, help="photos run at a time, one torch thread each (default: 1)"
    )
    return p.parse_args(argv)


def run(argv):
    args = parse_args(argv)
    torch.set_num_threads(1)  # one thread per photo: the same map whatever --workers (module docstring)
    paths = image_list(args.data_root, args.csv, args.images_dir, args.recursive)  # TeacherError: exit code 2
    cache = TeacherCache(args.cache, args.teacher)
    remove_orphan_temporaries(cache.folder)  # maps a killed run was writing
    with cli.Progress(PROG, len(paths)) as progress:
        computed, cached, failed = fill(cache, paths, args.workers, progress)
    print(
        f"{computed} maps computed, {cached} already cached, {len(failed)} failed; cache {cache.folder} (teacher "
        f"{cache.teacher.name}, sha256:{cache.teacher_sha256[:16]})"
    )
    return progress.exit_code


def main(argv=None):
    return cli.run(PROG, run, argv)


if __name__ == "__main__":
    sys.exit(main())
