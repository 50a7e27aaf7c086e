"""Several IEA40K-layout datasets as one, without copying: symbolic links and concatenated split lists.

    python -m pieanet.datasets.merge --out data/corpus13 data/corpus10 keys_=data/corpus_keys2

Each source is a folder in the IEA40K layout (train.csv / valid.csv, images/, labels/, refs/), optionally preceded by
``PREFIX=``: its files appear in the merged folder under that prefix, so two simulator runs whose names collide can be
merged. Writes ``<out>/images|labels|refs/`` of relative symbolic links to the sources' files (a moved checkout keeps
working when the sources move with it) and ``<out>/<split>`` for each split list (``--splits``, default train.csv
valid.csv): the sources' rows in the order given, img_id and ref_id prefixed; a split a source lacks (or holds no rows
of) is skipped for that source. Refused before anything is made: an output folder that exists, a source that is not a
folder, two files that would get one name, a row whose image, label or ref is missing, a merged name (prefix
included) that would lead out of --out (absolute, '..') or is longer than a file name may be. The merged folder is
built under a temporary name beside --out and renamed to it only when complete: a failure leaves nothing behind.
Exit codes: 0 done, 2 refused.
"""

import argparse
import contextlib
import csv
import os
import secrets
import shutil
import sys
from pathlib import Path

from pieanet.datasets.iea40k import DatasetError, label_name, read_split
from pieanet.utils import cli
from pieanet.utils.image_io import atomic_write
from pieanet.utils.safety import shown

PROG = "merge"
FOLDERS = ("images", "labels", "refs")
COLUMNS = ("img_id", "ref_id", "score", "level")


def parse_source(text):
    """'PREFIX=DIR' or 'DIR' -> (prefix, Path); an existing folder whose name holds '=' is a DIR."""
    prefix, sep, folder = text.partition("=")
    return ("", Path(text)) if not sep or Path(text).is_dir() else (prefix, Path(folder))


NAME_MAX = 255  # bytes of one file name on the common file systems (ext4, XFS, APFS, NTFS in UTF-16 units)


def check_name(where, name):
    """A file name from a split list, or a merged name (prefix included), must stay inside its folder (no absolute
    path, no '..') and have no part longer than a file name may be."""
    if not name or Path(name).is_absolute() or Path(name).anchor or ".." in Path(name).parts:
        raise DatasetError(
            f"{where}: {name!r} is not a name inside the dataset's folders; expected a relative path without '..'"
        )
    if any(len(os.fsencode(part)) > NAME_MAX for part in Path(name).parts):
        raise DatasetError(
            f"{where}: {shown(name)[:80]}... has a part longer than {NAME_MAX} bytes; expected a "
            "shorter name (or prefix)"
        )


def plan(sources, splits):
    """({split: [row dicts]}, {(folder, merged name): source file}) of the merge; raises DatasetError naming the
    problem."""
    rows, links = {split: [] for split in splits}, {}
    for prefix, root in sources:
        if not root.is_dir():
            raise DatasetError(f"{root}: not a folder; expected an IEA40K-layout dataset")
        for split in splits:
            if (
                not (root / split).is_file()
                or sum(1 for line in (root / split).read_bytes().splitlines() if line.strip()) < 2
            ):
                continue  # a split this source lacks, or a header without rows
            for row in read_split(root / split, required=("img_id", "ref_id", "score")):
                for name in (row.img_id, row.ref_id):
                    check_name(f"{root / split} line {row.line}", name)
                files = {"images": row.img_id, "labels": label_name(row.img_id), "refs": row.ref_id}
                for folder, name in files.items():
                    check_name(f"{root}: with the prefix {prefix!r}", prefix + name)
                    source = root / folder / name
                    if not source.is_file():
                        raise DatasetError(f"{root / split} line {row.line}: {source} not found")
                    known = links.setdefault((folder, prefix + name), source)
                    if known.resolve() != source.resolve():
                        raise DatasetError(
                            f"{source} and {known} would both be {folder}/{prefix}{name}; give one "
                            "source a prefix (PREFIX=DIR)"
                        )
                rows[split].append(
                    {
                        "img_id": prefix + row.img_id,
                        "ref_id": prefix + row.ref_id,
                        "score": repr(row.score),
                        "level": row.level,
                    }
                )
    return rows, links


def merge(out, sources, splits=("train.csv", "valid.csv")):
    """Write the merged dataset (built beside ``out`` under a temporary name, renamed when complete; removed, with
    any parent folder made for it, on any failure); returns {split: row count}."""
    out = Path(out)
    if out.exists() or out.is_symlink():
        raise DatasetError(f"{out}: already exists; expected a new folder (nothing there is replaced)")
    rows, links = plan(sources, splits)
    made = [parent for parent in reversed(Path(os.path.abspath(out)).parents) if not parent.exists()]
    staging = out.parent / f".{out.name[:32]}.{os.getpid()}-{secrets.token_hex(4)}.merging"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        build(staging, rows, links)
        os.rename(staging, out)
    except BaseException as e:
        shutil.rmtree(staging, ignore_errors=True)
        for parent in reversed(made):
            with contextlib.suppress(OSError):
                parent.rmdir()
        if isinstance(e, OSError):
            raise DatasetError(
                f"{out}: could not be made ({e.strerror or type(e).__name__}: "
                f"{shown(e.filename or '')[:120]}); nothing was left behind"
            ) from e
        raise
    return {split: len(split_rows) for split, split_rows in rows.items()}


def build(out, rows, links):
    """The merged folder's links and split lists, written into the new folder ``out``."""
    for folder in FOLDERS:
        (out / folder).mkdir(parents=True)
    for (folder, name), source in links.items():
        target = out / folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(os.path.relpath(source.resolve(), target.parent.resolve()))
    for split, split_rows in rows.items():
        if not split_rows:
            continue
        with atomic_write(out / split) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(split_rows)


def run(argv):
    parser = argparse.ArgumentParser(prog="python -m pieanet.datasets.merge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="the merged folder (must not exist)")
    parser.add_argument("--splits", nargs="+", default=["train.csv", "valid.csv"], help="split lists to merge")
    parser.add_argument("sources", nargs="+", type=parse_source, help="[PREFIX=]DIR, in order")
    args = parser.parse_args(argv)
    counts = merge(args.out, args.sources, args.splits)
    print(shown(f"{args.out}: " + ", ".join(f"{split} {n} rows" for split, n in counts.items())))
    return 0


def main(argv=None):
    return cli.run(PROG, run, argv)


if __name__ == "__main__":
    sys.exit(main())
