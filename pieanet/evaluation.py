"""What evaluate.py computes: maps of checkpoints and baselines scored against the labels of a dataset in the IEA40K
layout (measure_rows, accumulate, evaluate), or judged on photos that are each their own ideal (judge_photos,
summarise_photos), and the tables and JSON the tool writes. The functions take plain arguments (a LabelledData, a
Criterion, size / tile); train_wavelet.py's extra validation sets and bench/accuracy.py call them, so their numbers
are the tool's. ``run`` is the whole command on evaluate.py's parsed options (their meaning: evaluate.py --help).
"""

import contextlib
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from pieanet import runtime
from pieanet.datasets.iea40k import read_label, read_split
from pieanet.models.baselines import BASELINES, build_baseline
from pieanet.utils import cli, distributed, well_exposed
from pieanet.utils.exposure import DEFAULT_THRESHOLD
from pieanet.utils.image_io import atomic_write
from pieanet.utils.metrics import METRICS, SSIM_CONVENTION, MetricAccumulator, measure, photo_numbers, physics_counts
from pieanet.utils.safety import md_cell

PROG = "evaluate"
LEVEL_IN_NAME = re.compile(r"_([NP]\d)(?=\.[^.]+$|$)")
TABLE_COLUMNS = {
    "mae": "MAE",
    "rmse": "RMSE",
    "psnr": "PSNR",
    "ssim": "SSIM",
    "iou_over": "IoU over",
    "iou_under": "IoU under",
    "f1_over": "F1 over",
    "f1_under": "F1 under",
    "srcc": "SRCC",
    "plcc": "PLCC",
}


def sample_level(row):
    if row.level:
        return row.level
    match = LEVEL_IN_NAME.search(row.img_id)
    return match.group(1) if match else None


def sample_score(row):
    return row.score if math.isfinite(row.score) else None


def resize_map(residual, shape):
    if residual.shape == tuple(shape):
        return residual
    t = torch.from_numpy(residual)[None, None]
    antialias = shape[0] < residual.shape[0] or shape[1] < residual.shape[1]
    return F.interpolate(t, size=tuple(shape), mode="bilinear", align_corners=False, antialias=antialias)[0, 0].numpy()


@dataclass(frozen=True)
class LabelledData:
    """A dataset in the IEA40K layout: photos at <root>/<images_dir>/<img_id>, labels at
    <root>/<labels_dir>/<img_id stem>.npy in grey levels, divided by ``label_scale``."""

    root: Path
    images_dir: str = "images"
    labels_dir: str = "labels"
    label_scale: float = 255.0


@dataclass(frozen=True)
class Criterion:
    """When a photo that is its own ideal is flagged (well_exposed.verdict): more than ``share_limit`` percent of its
    pixels with |r| above ``threshold``, or its mean residual further than ``mean_limit`` from 0."""

    threshold: float = DEFAULT_THRESHOLD
    share_limit: float = well_exposed.DEFAULT_SHARE_LIMIT
    mean_limit: float = well_exposed.DEFAULT_MEAN_LIMIT

    def as_dict(self) -> dict:
        """The criterion as the JSON outputs record it."""
        return {"threshold": self.threshold, "share_limit_pct": self.share_limit, "mean_limit": self.mean_limit}

    def describe(self) -> str:
        return (
            f"a photo is flagged when more than {self.share_limit:g} % of its pixels have |r| > "
            f"{self.threshold:g} or |mean r| > {self.mean_limit:g}"
        )


def method_name(path, model):
    return "P-IEANet, released weights" if model.config.get("name") == "official" else Path(path).stem


def load_methods(args) -> list:
    """[(name, model)] of every --checkpoint and --baseline of ``args`` (the parsed options: checkpoint, baseline,
    and the model options runtime.open_model reads); raises UsageError."""
    # no --checkpoint: the shipped checkpoint, as every other tool, unless only baselines are asked for
    paths = args.checkpoint or ([] if args.baseline else [None])
    methods = [
        (method_name(runtime.model_file(path, args), model), model)
        for path, model in ((path, runtime.open_model(path, args)) for path in paths)
    ]
    seen: dict[str, int] = {}
    for i, (name, model) in enumerate(methods):  # two runs' best.safetensors must not merge into one row
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            methods[i] = (f"{name} #{seen[name]}", model)
    names = args.baseline or []
    if "all" in names:
        names = list(BASELINES)
    for name in names:
        if name not in BASELINES:
            raise cli.UsageError(f"unknown baseline {name!r}; expected one of: all, {', '.join(BASELINES)}")
        methods.append((f"baseline: {name}", build_baseline(name).to(runtime.resolve_device(args.device))))
    return methods


def progress_or_own(progress, total):
    """A context for ``progress``: the caller's cli.Progress as it is (its owner closes it), or, when None, a new one
    of ``total`` steps that the block closes."""
    return contextlib.nullcontext(progress) if progress is not None else cli.Progress(PROG, total)


def measure_rows(
    methods: list,
    rows: list,
    data: LabelledData,
    threshold: float = DEFAULT_THRESHOLD,
    size: int | None = None,
    tile: int | None = None,
    progress=None,
    group: distributed.Group = distributed.Group(),
) -> list:
    """[{method: metrics.measure result} or None (the sample failed)] for every row of ``data``'s CSV, in row order,
    predicted with ``size`` / ``tile`` (runtime.predict) and counted with ``threshold``; each failure is named in one
    line through ``progress`` (a cli.Progress). With several processes (``group``), each measures its shard of the
    rows and every process gets all of them. The photo goes with each measurement (physics)."""
    # (row index, {method: metrics.measure result}, or None for a sample that failed)
    measured: list[tuple[int, dict | None]] = []
    with progress_or_own(progress, len(group.shard(rows))) as progress:
        for index in group.shard(range(len(rows))):
            row = rows[index]
            try:
                image, maps, label = predict_sample(methods, data, row, size, tile)
            except ValueError as e:  # ImageLoadError and DatasetError are ValueErrors; the message names the file
                progress.report(f"skipped {row.img_id}: {cli.one_line(e)}")
                measured.append((index, None))
            else:
                score = sample_score(row)
                found = {}
                for name, residual in maps.items():
                    found[name] = measure(resize_map(residual, label.shape), label, threshold, score)
                    found[name]["physics"] = physics_counts(image, residual)  # on the photo's own pixels
                    found[name]["photo"] = photo_numbers(image, residual, resize_map(label, residual.shape))
                measured.append((index, found))
            progress.update()
    return [found for _, found in sorted(item for shard in group.gather(measured) for item in shard)]


def accumulate(methods, rows, measured, threshold, keep=None):
    """({method: metrics dict with per_level}, img_ids of the samples that failed) of measure_rows' results; only the
    rows whose img_id is in ``keep`` when it is given (a subset of the same samples, measured once)."""
    overall = {name: MetricAccumulator(threshold) for name, _ in methods}
    per_level = {name: {} for name, _ in methods}
    failed = []
    for row, found in zip(rows, measured):
        if keep is not None and row.img_id not in keep:
            continue
        if found is None:
            failed.append(row.img_id)
            continue
        level = sample_level(row)
        for name, one in found.items():
            overall[name].add_measured(one)
            if level is not None:
                per_level[name].setdefault(level, MetricAccumulator(threshold)).add_measured(one)
    results = {}
    for name, _ in methods:
        result = overall[name].result()
        result["per_level"] = {level: acc.result() for level, acc in sorted(per_level[name].items())}
        results[name] = result
    return results, failed


def evaluate(
    methods: list,
    rows: list,
    data: LabelledData,
    threshold: float = DEFAULT_THRESHOLD,
    size: int | None = None,
    tile: int | None = None,
    progress=None,
    group: distributed.Group = distributed.Group(),
) -> tuple[dict, list]:
    """({method: metrics dict}, img_ids of the samples that failed): measure_rows then accumulate. With several
    processes, every process gets the results of all of them, added up in row order: the numbers one process
    gives."""
    return accumulate(
        methods, rows, measure_rows(methods, rows, data, threshold, size, tile, progress, group), threshold
    )


def predict_sample(methods, data, row, size=None, tile=None):
    """(photo, {method: map at the photo's resolution}, label) of one CSV row of ``data`` (a LabelledData); raises
    ValueError naming the file."""
    root = Path(data.root)
    image_path = root / data.images_dir / row.img_id
    try:
        image = runtime.read_image(image_path)
    except ValueError as e:
        raise ValueError(f"{image_path}: {e}") from e
    label = read_label(root / data.labels_dir / (Path(row.img_id).stem + ".npy"), data.label_scale)
    maps = {}
    for name, model in methods:
        (residual,) = runtime.predict(model, [image], size=size, tile=tile)
        if isinstance(residual, BaseException):
            raise ValueError(f"{image_path}: {name}: inference failed ({cli.one_line(residual)})")
        maps[name] = residual
    return image, maps, label


# ------------------------------------------------------------------------------------------------ well-exposed photos
def judge_photos(
    methods: list,
    photos: list,
    criterion: Criterion = Criterion(),
    size: int | None = None,
    tile: int | None = None,
    progress=None,
    group: distributed.Group = distributed.Group(),
) -> list:
    """[{method: well_exposed.verdict} or None (the photo failed)] for every (path, name, key) of ``photos``, in
    order, judged by ``criterion`` on the tools' default path (runtime.predict with ``size`` / ``tile``); each
    failure is named through ``progress``.
    With several processes, each judges its shard and every process gets all of them."""
    judged: list[tuple[int, dict | None]] = []
    with progress_or_own(progress, len(group.shard(photos))) as progress:
        for index in group.shard(range(len(photos))):
            path, name, _ = photos[index]
            found: dict | None = None
            try:
                image = runtime.read_image(path)
                found = {}
                for method, model in methods:
                    (residual,) = runtime.predict(model, [image], size=size, tile=tile)
                    if isinstance(residual, BaseException):
                        raise ValueError(f"{method}: inference failed ({cli.one_line(residual)})")
                    found[method] = well_exposed.verdict(
                        residual, criterion.threshold, criterion.share_limit, criterion.mean_limit, photo=image
                    )
            except ValueError as e:
                progress.report(f"skipped {path}: {cli.one_line(e)}")
                found = None
            judged.append((index, found))
            progress.update()
    return [found for _, found in sorted(item for shard in group.gather(judged) for item in shard)]


def summarise_photos(methods, photos, judged):
    """({method: well_exposed.summarise result}, [per-photo CSV rows], names of the photos that failed)."""
    results, rows = {}, []
    for method, _ in methods:
        pairs = []
        for (_, name, key), found in zip(photos, judged):
            if found is not None:
                pairs.append((key, found[method]))
                rows.append({"method": method, "file": name, "key": key, **found[method]})
        results[method] = well_exposed.summarise(pairs)
    return results, rows, [name for (_, name, _), found in zip(photos, judged) if found is None]


def json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def format_value(value):
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


def table_header(columns=None):
    """A markdown table's header: Method, n and the given cells (default: the labelled metrics with their arrows)."""
    arrow = {"lower": "↓", "higher": "↑"}
    if columns is None:
        columns = [f"{label} {arrow[METRICS[name][0]]}" for name, label in TABLE_COLUMNS.items()]
    cells = ["Method", "n"] + list(columns)
    return "| " + " | ".join(cells) + " |\n" + "|" + "---|" * len(cells) + "\n"


def table_rows(results):
    return "".join(
        "| " + " | ".join([md_cell(name), str(r["n_images"])] + [format_value(r[c]) for c in TABLE_COLUMNS]) + " |\n"
        for name, r in results.items()
    )


def format_pct(value):
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.1f} %"


def well_exposed_table(results):
    """(header, rows) of the well-exposed mode: photos flagged overall and per key, the median photo's flagged
    pixels."""
    keys = sorted({key for r in results.values() for key in r["per_key"]})
    header = table_header(["flagged ↓"] + [f"flagged ({key}) ↓" for key in keys] + ["median flagged pixels ↓"])
    rows = "".join(
        "| "
        + " | ".join(
            [md_cell(name), str(r["n_images"]), format_pct(r["false_alarm_pct"])]
            + [format_pct(r["per_key"][key]["false_alarm_pct"]) if key in r["per_key"] else "n/a" for key in keys]
            + [format_pct(r["median_pct_flagged"])]
        )
        + " |\n"
        for name, r in results.items()
    )
    return header, rows


def append_markdown(path, header, rows, caption):
    """Append rows to a markdown table, starting the table (caption + header) when the file does not have one."""
    path = Path(path)
    existing = path.read_text(encoding="utf-8", errors="surrogateescape") if path.is_file() else ""
    header = table_header()
    text = existing
    if header not in existing:
        text += ("\n" if existing and not existing.endswith("\n\n") else "") + caption + "\n\n" + header
    text += rows
    with atomic_write(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8", errors="surrogateescape")


def write_json(path, payload):
    with atomic_write(path) as tmp:
        Path(tmp).write_text(json.dumps(json_safe(payload), indent=2) + "\n")


def run(args) -> int:
    """evaluate.py's whole run on its parsed options ``args`` (labelled mode, or --well-exposed); the exit code."""
    runtime.setup(args)
    if args.well_exposed is not None:
        return run_well_exposed(args)
    csv_path = Path(args.csv) if Path(args.csv).is_file() else args.data_root / args.csv
    rows = read_split(csv_path, required=("img_id",))[: args.limit]  # a DatasetError: exit code 2
    with distributed.process_group(runtime.resolve_device(args.device)) as group:
        args.device = str(group.device)  # under torchrun with CUDA: this process's own GPU
        methods = load_methods(args)
        for path in (args.json, args.markdown):
            if path is not None:
                cli.writable_folder(path.parent, "folder of " + path.name)
        with cli.Progress(PROG, len(group.shard(rows)), show=group.is_main) as progress:
            data = LabelledData(args.data_root, args.images_dir, args.labels_dir, args.label_scale)
            results, failed = evaluate(methods, rows, data, args.threshold, args.size, args.tile, progress, group)
    if not group.is_main:
        return cli.EXIT_OK  # rank 0 reports for every process
    print(table_header() + table_rows(results), end="")
    print(f"SSIM: {SSIM_CONVENTION}")
    if failed:
        print(f"{len(failed)} of {len(rows)} samples skipped (named on stderr)")
    if args.json:
        write_json(
            args.json,
            {
                "methods": results,
                "n_samples": len(rows),
                "n_failed": len(failed),
                "failed": failed,
                "ssim_convention": SSIM_CONVENTION,
            },
        )
    if args.markdown:
        options = "".join(f", --{k} {getattr(args, k)}" for k in ("size", "tile") if getattr(args, k))
        append_markdown(
            args.markdown,
            table_header(),
            table_rows(results),
            f"Evaluated on `{csv_path}` ({len(rows)} samples{options}).",
        )
    return cli.EXIT_FAILED if failed else cli.EXIT_OK


def run_well_exposed(args) -> int:
    """--well-exposed DIR: false alarms on photos that are their own ideal."""
    criterion = Criterion(args.threshold, args.share_limit, args.mean_limit)
    photos, missing = well_exposed.list_photos(args.well_exposed)  # a FolderError: exit code 2
    photos = photos[: args.limit]
    with distributed.process_group(runtime.resolve_device(args.device)) as group:
        args.device = str(group.device)
        methods = load_methods(args)
        cli.writable_folder(args.output)
        for path in (args.json, args.markdown):
            if path is not None:
                cli.writable_folder(path.parent, "folder of " + path.name)
        with cli.Progress(PROG, len(group.shard(photos)), show=group.is_main) as progress:
            judged = judge_photos(methods, photos, criterion, args.size, args.tile, progress, group)
    if not group.is_main:
        return cli.EXIT_OK
    results, csv_rows, failed = summarise_photos(methods, photos, judged)
    for name in missing:
        print(
            f"{PROG}: {args.well_exposed / well_exposed.MANIFEST}: lists {name}, which is not in "
            f"{well_exposed.photo_folder(args.well_exposed)}",
            file=sys.stderr,
        )
    failed += missing
    header, rows = well_exposed_table(results)
    print(header + rows, end="")
    print(f"Criterion: {criterion.describe()}.")
    csv_path = args.output / well_exposed.CSV_NAME
    well_exposed.write_csv(csv_path, csv_rows)
    print(f"Per-photo verdicts: {csv_path}")
    if failed:
        print(f"{len(failed)} of {len(photos) + len(missing)} photos skipped (named on stderr)")
    if args.json:
        write_json(
            args.json,
            {
                "methods": results,
                "n_samples": len(photos) + len(missing),
                "n_failed": len(failed),
                "failed": failed,
                "criterion": criterion.as_dict(),
            },
        )
    if args.markdown:
        options = "".join(f", --{k} {getattr(args, k)}" for k in ("size", "tile") if getattr(args, k))
        append_markdown(
            args.markdown,
            header,
            rows,
            f"Well-exposed photos in `{args.well_exposed}` ({len(photos)} photos{options}); {criterion.describe()}.",
        )
    return cli.EXIT_FAILED if failed else cli.EXIT_OK
