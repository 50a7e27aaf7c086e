"""The schema of a train_wavelet.py config: every key with its type, range or choices, default and meaning.

This is the one definition: ``load`` fills the defaults from it and checks each file and override against it
(utils.config), and configs/base.yaml, the annotated list of every key the shipped configs inherit, is written from
it (tests/test_config_schema.py checks that the committed file is up to date):

    python -m pieanet.training.config --write      # rewrite configs/base.yaml after changing a key here

The keys inside ``model`` are not declared here (only the section and its default name): they are the model
constructor's arguments, checked by models.check_config, the check that also guards the config stored in every
checkpoint, so each model key's type and range has one home; train_wavelet.resolve_config calls it on the resolved
section.
"""

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pieanet.utils.config import CONFIGS, check_part, key, load_config, schema_yaml, section

LOSSES = ("l1", "l2", "smooth_l1")  # train_wavelet.LOSSES maps each to its function
AMP = ("bf16", "fp16", "none")  # train_wavelet.AMP_DTYPES
LR_SCHEDULES = ("step", "cosine")
BASE_FILE = CONFIGS / "base.yaml"
BASE_HEADER = """\
Every key train_wavelet.py knows, with the paper's training recipe (Adam, lr 3e-5, StepLR x0.1 every 10 epochs,
L1 loss). Other configs name this file (or a child of it) with `base: <parent.yaml>` (a path relative to the file)
and change what differs; a key that is not here is rejected. The `model` section is checked against the model's own
arguments (models.check_config).
Written by `python -m pieanet.training.config --write` from pieanet/training/config.py: edit the schema there, not
this file."""


def folder_name(name):
    if Path(name).is_absolute() or ".." in Path(name).parts:
        return "expected a folder name under output_dir (no absolute path, no '..')"
    return None


def low_high(pair):
    return None if pair[0] <= pair[1] else "expected [low, high] with low <= high"


@dataclass
class LabelledSet:
    """labelled data, measured for MAE, SSIM, SRCC and the physics checks"""

    root: str = key(doc="an IEA40K-layout folder")
    csv: str = key(doc="its split list: a path, or a file name in root")


@dataclass
class WellExposedSet:
    """a folder of well-exposed photos: the share flagged, per key"""

    root: str = key(doc="the folder (utils.well_exposed layout)")
    well_exposed: Literal[True] = key(doc="marks the form")


@dataclass
class Data:
    root: str = key("data/IEA40K", "an IEA40K-layout folder: <root>/<csv>, <root>/images/, <root>/labels/*.npy")
    train_csv: str = key("train_256_2ev.csv")
    valid_csv: str = key("valid_256_2ev.csv")
    images_dir: str = key("images")
    labels_dir: str = key("labels")
    label_scale: float = key(
        255.0, "labels are stored in grey levels; residual = label / label_scale", low=0, low_open=True
    )
    size: int | None = key(None, "resize (longer side) before cropping; null = as stored", low=1)
    crop: int | None = key(256, "random training crop; null = whole images (then they must all share one size)", low=1)
    augment: bool = key(True, "random crops and flips, the same on photo and label")
    valid_limit: int | None = key(
        None, "validate on at most this many images: every k-th row of valid_csv, k = ceil(rows / limit)", low=1
    )
    scale_range: tuple[float, float] | None = key(
        None,
        "[low, high]: each training batch resized by a random factor in this range (labels too: resizing is "
        "linear, so the label stays exact), so that the model sees detail at many scales",
        low=0,
        low_open=True,
        rule=low_high,
    )
    extra_valid: dict[str, LabelledSet | WellExposedSet] | None = key(
        {},
        "more validation sets, reported every epoch (log + TensorBoard) but not used to pick best.safetensors, "
        "measured as evaluate.py does (the model's working size, guided upsampling): {name: {root: <IEA40K-layout "
        "folder>, csv: <split list>}} (MAE, SSIM, SRCC, physics) or {name: {root: <folder of well-exposed "
        "photos>, well_exposed: true}} (photos flagged, per key)",
    )
    teacher_dir: str | None = key(
        None,
        "a teacher-map cache (python -m pieanet.datasets.teacher; a path, not under "
        "root): the maps of the "
        "training photos found there are a second target (train.teacher_weight); "
        "the photos without one learn from their label only",
    )
    workers: int = key(2, "DataLoader worker processes", low=0, high=256)


@dataclass
class Train:
    epochs: int = key(30, low=1)
    batch_size: int = key(8, "per process", low=1)
    valid_batch_size: int = key(1, "raise only when every validation image has the same size", low=1)
    lr: float = key(3.0e-5, low=0, low_open=True)
    weight_decay: float = key(0.0, low=0)
    lr_schedule: str = key(
        "step",
        "step: multiply by lr_gamma every lr_step_epochs epochs | cosine: down to lr * lr_gamma",
        choices=LR_SCHEDULES,
    )
    lr_step_epochs: int = key(10, low=1)
    lr_gamma: float = key(0.1, low=0, high=1)
    warmup_steps: int = key(0, "linear warm-up from 0 over this many optimizer steps", low=0)
    trainable: list[str] | None = key(
        None,
        "train only the parameters whose names start with one of these prefixes (e.g. "
        "[scene_branch.backbone_out., lightness_branch.modulation.]); every other parameter is frozen, and a "
        "prefix that names none is an error (models.freeze_except); null = every parameter the model itself "
        "leaves trainable",
    )
    ema_decay: float = key(
        0.0,
        "> 0: validate and save an exponential moving average of the weights (e.g. 0.999)",
        low=0,
        high=1,
        high_open=True,
    )
    loss: str = key("l1", "l1 | l2 | smooth_l1 (the paper's Table 6)", choices=LOSSES)
    ssim_weight: float = key(
        0.0, "> 0: add ssim_weight * (1 - SSIM(prediction, label)), SSIM as utils.metrics measures it", low=0
    )
    teacher_weight: float = key(
        0.0,
        "> 0: add teacher_weight * L1(prediction, teacher map) over the photos of "
        "the batch that have a map in data.teacher_dir (distillation)",
        low=0,
    )
    teacher_ssim_weight: float = key(
        0.0,
        "> 0: add teacher_ssim_weight * (1 - SSIM(prediction, teacher map)) over the same photos (the teacher's "
        "structure, which the L1 term alone leaves blurred)",
        low=0,
    )
    amp: str = key("bf16", "bf16 | fp16 | none; CUDA only (CPU always trains in fp32)", choices=AMP)
    channels_last: bool = key(True, "CUDA only")
    max_steps: int | None = key(
        None, "stop (after saving last.pt) once this many optimizer steps are done; resume goes on from there", low=1
    )
    save_every_steps: int = key(0, "also write last.pt every N steps (0 = only at the end of each epoch)", low=0)
    log_every_steps: int = key(50, "TensorBoard scalars for the training loss, learning rate and images/s", low=1)
    panels: int = key(4, "validation images drawn into TensorBoard (photo | label heatmap | predicted heatmap)", low=0)


@dataclass
class TrainConfig:
    base: str | None = key(
        None,
        "a parent config (a path relative to this file), read first; this file's keys win, sections merge key by key",
        loader=True,
    )
    name: str | None = key(
        None, "experiment name: outputs go to <output_dir>/<name>/; null = the config file's name", rule=folder_name
    )
    output_dir: str = key("experiments")
    seed: int = key(0, low=0, high=2**32 - 1)
    init_from: str | None = key(
        None, "start from these weights (a project .safetensors or the released .pth); the model must fit them"
    )
    model: dict = key(
        {"name": "pieanet"},
        "the model's name and constructor arguments (models.MODELS; checked by models.check_config)",
    )
    data: Data = section(Data)
    train: Train = section(Train)


def load(path, overrides=()):
    """The resolved training config of the file ``path`` with ``overrides``: every key of TrainConfig, checked, with
    ``name`` defaulting to the file's name. Raises ConfigError (one line naming the file or override)."""
    config = load_config(path, TrainConfig, overrides)
    if config["name"] is None:
        config["name"] = Path(path).stem
        check_part({"name": config["name"]}, TrainConfig, path)
    return config


def base_yaml():
    """The text of configs/base.yaml: every default of TrainConfig with its doc line."""
    return schema_yaml(TrainConfig, BASE_HEADER)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m pieanet.training.config",
        description="Print configs/base.yaml as the schema writes it, or rewrite it.",
    )
    parser.add_argument("--write", action="store_true", help=f"replace {BASE_FILE} (atomically)")
    args = parser.parse_args(argv)
    if not args.write:
        sys.stdout.write(base_yaml())
        return 0
    from pieanet.utils.image_io import atomic_write

    with atomic_write(BASE_FILE) as tmp:
        tmp.write_text(base_yaml())
    print(f"wrote {BASE_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
