"""A training run: the config resolved and checked, the network and data built, epoch by epoch of optimizer steps,
validation (and the extra validation sets, measured as evaluate.py measures them: pieanet.evaluation), the weights
saved with how they were made (state.provenance), last.pt for --resume (state.py). ``command`` is train_wavelet.py's
whole run; ``train`` one run of a resolved config on a device.
"""

import contextlib
import math
import random
import time
from pathlib import Path

import numpy as np
import pytorch_msssim
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from pieanet import evaluation
from pieanet.datasets.iea40k import DatasetError, IEA40KDataset, read_split
from pieanet.models import (
    CheckpointError,
    build_model,
    check_activations,
    check_config,
    freeze_except,
    load_torch_state,
    read_checkpoint,
    resolve_device,
    save_model,
    start_weights,
)
from pieanet.models.efficientnet_lite import BackboneWeightsError
from pieanet.training import config as train_config
from pieanet.training.errors import SetupError, TrainingError
from pieanet.training.sampler import ResumableSampler
from pieanet.training.state import (
    COUNTERS,
    config_changes,
    experiment_folder,
    make_folder,
    provenance,
    rng_state,
    save_state,
    set_rng_state,
)
from pieanet.utils import cli, distributed, errors, folders, well_exposed
from pieanet.utils.config import ConfigError, shipped_file, shipped_names
from pieanet.utils.exposure import DEFAULT_THRESHOLD, bound_residual, gray
from pieanet.utils.heatmap import colorize
from pieanet.utils.metrics import SSIM_CONVENTION, SSIM_DATA_RANGE, MetricAccumulator
from pieanet.utils.safety import first_line, own_text, shown
from pieanet.utils.startup import interrupts_raise

PROG = "train_wavelet"  # the name its messages carry
# the schema (pieanet.training.config) names the choices; these map them to what they mean
LOSSES = {"l1": F.l1_loss, "l2": F.mse_loss, "smooth_l1": F.smooth_l1_loss}
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}


def lr_factor(opts, steps_per_epoch):
    """The learning rate's multiplier at each optimizer step: linear warm-up, then step decay or a cosine down to
    lr_gamma."""
    total = opts["epochs"] * steps_per_epoch

    def factor(step):
        if step < opts["warmup_steps"]:
            return (step + 1) / opts["warmup_steps"]
        if opts["lr_schedule"] == "step":
            return opts["lr_gamma"] ** (step // (opts["lr_step_epochs"] * steps_per_epoch))
        progress = min(1.0, (step - opts["warmup_steps"]) / max(1, total - opts["warmup_steps"]))
        return opts["lr_gamma"] + (1 - opts["lr_gamma"]) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def rescale(image, maps, scale_range, generator):
    """Image and residual maps (label, teacher map) resized together by one random factor (bilinear, antialiased
    when shrinking). Returns (image, maps)."""
    if scale_range is None:
        return image, maps
    low, high = scale_range
    factor = low + (high - low) * torch.rand((), generator=generator).item()
    size = [max(8, round(side * factor)) for side in image.shape[-2:]]
    resize = dict(size=size, mode="bilinear", align_corners=False, antialias=factor < 1)
    return (
        F.interpolate(image, **resize).clamp_(0, 1),
        [F.interpolate(residual, **resize).clamp_(-1, 1) for residual in maps],
    )


def bounded_prediction(prediction, image):
    """The prediction within the definition's bounds for ``image`` (utils.exposure.bound_residual), so the loss
    judges the maps the tools give; the gradient passes straight through the clamp, so a pixel beyond a bound is
    still pulled towards its label (a plain clamp would give it no gradient at all)."""
    bounded = bound_residual(prediction, gray(image))
    return prediction + (bounded - prediction).detach()


def teacher_l1(prediction, teacher, has_teacher):
    """Mean absolute difference to the teacher map over the photos that have one (0 when none in the batch)."""
    weight = has_teacher.to(prediction.dtype).view(-1, 1, 1, 1)
    count = weight.sum() * prediction[0].numel()
    return ((prediction - teacher).abs() * weight).sum() / count.clamp(min=1)


def teacher_dssim(prediction, teacher, has_teacher):
    """1 - SSIM(prediction, teacher map), SSIM as utils.metrics measures it, averaged over the photos that have a map
    (0 when none in the batch): the teacher's structure, which an L1 term alone leaves blurred."""
    weight = has_teacher.to(prediction.dtype)
    per_photo = pytorch_msssim.ssim(prediction, teacher, data_range=SSIM_DATA_RANGE, size_average=False)
    return ((1 - per_photo) * weight).sum() / weight.sum().clamp(min=1)


def distils(opts):
    """Whether the run learns from teacher maps (either teacher term weighted)."""
    return opts["teacher_weight"] > 0 or opts["teacher_ssim_weight"] > 0


def resolve_config(path, overrides=()):
    """The config file (a path, or a shipped config by name: utils.config.shipped_file) with its bases and overrides,
    every key checked: against the schema (pieanet.training.config), the model section by models.check_config and by
    building the model on the meta device (what it is built from and what it costs)."""
    found = shipped_file(path)
    if found is None:
        raise ConfigError(
            f"{path}: config file not found; expected a YAML file or the name of a shipped config ({shipped_names()})"
        )
    config = train_config.load(found, overrides)
    model = config["model"]
    try:
        check_config(model, where="model")
        with torch.device("meta"):
            skeleton = build_model(model)
        check_activations("model", model, skeleton)
    except (ValueError, TypeError, AssertionError, RuntimeError, ZeroDivisionError) as e:  # CheckpointError too
        raise ConfigError(first_line(e, None)) from e
    for weight in ("teacher_weight", "teacher_ssim_weight"):
        if config["train"][weight] > 0 and config["data"]["teacher_dir"] is None:
            raise ConfigError(
                f"{found}: train.{weight} is {config['train'][weight]:g} but "
                "data.teacher_dir is null; expected a teacher-map cache (python -m pieanet.datasets.teacher)"
            )
    return config


@torch.no_grad()
def validate(model, loader, device, amp_dtype, panels):
    """Every metric of utils.metrics over the validation set, and ``panels`` photo | label | prediction images."""
    model.eval()
    metrics, drawn = MetricAccumulator(), []
    for batch in loader:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            prediction = model(batch["image"].to(device))
        prediction = bound_residual(prediction.float(), gray(batch["image"].to(device)))[:, 0].cpu().numpy()
        for photo, label, guess, score in zip(
            batch["image"], batch["residual"][:, 0].numpy(), prediction, batch["score"].tolist()
        ):
            metrics.add(guess, label, score)
            if len(drawn) < panels:
                photo = (photo.permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
                drawn.append(np.concatenate([photo, colorize(label), colorize(guess)], axis=1))
    return metrics.result(), drawn


def check_device(name):
    try:
        device = resolve_device(name)
    except RuntimeError as e:
        raise ConfigError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available; use --device cpu or auto")
    return device


# what the user can do next, per kind of ending (utils.errors.outcome)
RESUME = "continue from the last saved state with --resume"
ADVICE = {"memory": f"lower train.batch_size or data.crop, then {RESUME}", "interrupted": RESUME, "os": RESUME}
# a run stopped before its first last.pt has nothing to resume from: the way out is a fresh start in its folder
RESTART = "no training state was saved yet (no last.pt); start it again with --overwrite"
NO_STATE_ADVICE = {
    "memory": f"lower train.batch_size or data.crop, then {RESTART}",
    "interrupted": RESTART,
    "os": RESTART,
}


def advice_for(config):
    """ADVICE where the run folder of ``config`` (None: not known yet) holds a last.pt to resume from, else
    NO_STATE_ADVICE: each ending's next step leads somewhere."""
    if config is None:
        return ADVICE
    try:
        saved = (Path(config["output_dir"]) / config["name"] / "last.pt").is_file()
    except (KeyError, TypeError, OSError):
        return ADVICE
    return ADVICE if saved else NO_STATE_ADVICE


def command(parse_args) -> int:
    """train_wavelet.py's whole run: ``parse_args()`` (the tool's parsed command line: config, overrides, device,
    resume, overwrite; called here so that Ctrl-C while it runs ends the same way), the config resolved, the run
    trained. Exit codes and the one line per ending: utils.errors (0 done, 1 training failed, 2 usage or setup error,
    130 interrupted); the full traceback under --debug or $P_IEA_DEBUG."""
    interrupts_raise()
    errors.set_debug(False)  # until this command's --debug
    config = None
    try:
        try:
            args = parse_args()
            config = resolve_config(args.config, args.overrides)
            device = check_device(args.device)
        except KeyboardInterrupt as e:
            return errors.exit_status(PROG, e, {"interrupted": "nothing was done"})
        try:
            with distributed.process_group(device) as group:
                train(config, group.device, args.resume, group.rank, group.world_size, overwrite=args.overwrite)
        except SystemExit as e:  # cli.refused_together, already reported; returned so the run's objects (and the
            return int(e.code or 0)  # threads they hold) go here, not at interpreter exit (a C++ abort under torchrun)
        return errors.EXIT_OK
    except (Exception, KeyboardInterrupt) as e:  # what errors.outcome does not know is re-raised (a bug)
        return errors.exit_status(PROG, e, advice_for(config))
    finally:
        errors.set_debug(False)


def build_network(config, device, world_size):
    """(model, the module to call: DDP-wrapped when distributed), weights from init_from if set."""
    model = build_model(config["model"])
    try:
        start_weights(model)  # a scene backbone's ImageNet weights
    except BackboneWeightsError as e:
        raise SetupError(f"model.scene_backbone: {e}") from None
    if config["init_from"]:
        try:
            _, weights = read_checkpoint(config["init_from"])
            start_weights(model, weights)
        except CheckpointError as e:
            raise SetupError(f"init_from: {e}") from e
        except RuntimeError as e:
            raise SetupError(
                f"init_from {config['init_from']}: weights do not fit model {config['model']} ({first_line(e)})"
            ) from e
    try:
        freeze_except(model, config["train"]["trainable"])  # before DDP, which registers what needs a gradient
    except ValueError as e:
        raise SetupError(str(e)) from None
    cuda = device.type == "cuda"
    channels_last = cuda and config["train"]["channels_last"]
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    net = DistributedDataParallel(model, device_ids=[device.index] if cuda else None) if world_size > 1 else model
    return model, net


def build_data(config, rank, world_size, is_main, cuda):
    """The training set, its sampler and loader, steps per epoch, (main process) the validation loaders, and the
    split files read, [(role, path)] (the checkpoints' data_manifest_sha256).
    CSV names are given as configured: the dataset looks for them as paths, then under data.root."""
    data, opts = config["data"], config["train"]
    dataset_args = dict(
        images_dir=data["images_dir"],
        labels_dir=data["labels_dir"],
        label_scale=data["label_scale"],
        size=data["size"],
        seed=config["seed"],
    )
    root = Path(data["root"])
    # a DatasetError here (exit code 2) stops the run before it starts
    teacher_dir = data["teacher_dir"] if distils(opts) else None  # hashing the photos costs seconds
    train_set = IEA40KDataset(
        root, data["train_csv"], crop=data["crop"], augment=data["augment"], teacher_dir=teacher_dir, **dataset_args
    )
    if teacher_dir is not None and train_set.teacher_count == 0:
        raise SetupError(
            f"{teacher_dir}: no teacher map of any of the {len(train_set)} photos of {train_set.csv}; "
            "expected the cache python -m pieanet.datasets.teacher made for them (the teacher terms, "
            "train.teacher_weight and train.teacher_ssim_weight, need maps)"
        )
    sampler = ResumableSampler(train_set, rank, world_size, config["seed"])
    steps_per_epoch = len(sampler) // opts["batch_size"]
    if steps_per_epoch == 0:
        raise SetupError(
            f"{train_set.csv}: {len(train_set)} training images, fewer than one batch of "
            f"{opts['batch_size']} per process ({world_size} processes)"
        )
    # the loader's own generator, so that making an iterator never draws from the global RNG
    loader = DataLoader(
        train_set,
        opts["batch_size"],
        sampler=sampler,
        drop_last=True,
        num_workers=data["workers"],
        pin_memory=cuda,
        generator=torch.Generator(),
    )
    valid_loader, extras = None, {}
    if is_main:
        valid_set = IEA40KDataset(root, data["valid_csv"], **dataset_args)
        measured = valid_set
        if data["valid_limit"]:
            measured = Subset(valid_set, range(0, len(valid_set), math.ceil(len(valid_set) / data["valid_limit"])))
        valid_loader = DataLoader(measured, opts["valid_batch_size"], num_workers=data["workers"], pin_memory=cuda)
        extras = extra_sets(data)
    split_files = [("train", train_set.csv)] + ([("valid", valid_set.csv)] if is_main else [])
    return train_set, sampler, loader, steps_per_epoch, valid_loader, extras, split_files


def extra_sets(data):
    """{name: (spec, what to measure)} of data.extra_valid: the rows of a labelled set, the photos of a well-exposed
    folder. Both are measured as evaluate.py does (validate_extra). Raises DatasetError naming the file."""
    sets = {}
    for name, spec in (data["extra_valid"] or {}).items():
        root = Path(spec["root"])
        if not root.is_dir():
            raise DatasetError(f"{root}: data.extra_valid.{name}: no such folder")
        if spec.get("well_exposed"):
            try:
                photos, missing = well_exposed.list_photos(root)
            except well_exposed.FolderError as e:
                raise DatasetError(f"data.extra_valid.{name}: {e}") from e
            if missing:
                raise DatasetError(
                    f"{root / well_exposed.MANIFEST}: lists {missing[0]}, which is not in "
                    f"{well_exposed.photo_folder(root)} (data.extra_valid.{name})"
                )
            sets[name] = (spec, photos)
        else:
            csv_path = Path(spec["csv"]) if Path(spec["csv"]).is_file() else root / spec["csv"]
            sets[name] = (spec, read_split(csv_path, required=("img_id",)))
    return sets


def validate_extra(model, name, spec, items, data):
    """(metrics, log text) of one extra validation set, measured with pieanet.evaluation (evaluate.py's functions)
    on the tools' default path (the model's working size, guided upsampling): the numbers evaluate.py and
    bench/accuracy.py give. Photos that fail are named on stderr and left out."""
    model.eval()
    methods = [(name, model)]
    with cli.Progress(PROG, len(items), show=False) as progress:
        if spec.get("well_exposed"):
            judged = evaluation.judge_photos(methods, items, evaluation.Criterion(), progress=progress)
            result = evaluation.summarise_photos(methods, items, judged)[0][name]
            return result, well_exposed.describe(result)
        labelled = evaluation.LabelledData(
            Path(spec["root"]), data["images_dir"], data["labels_dir"], data["label_scale"]
        )
        measured = evaluation.measure_rows(methods, items, labelled, DEFAULT_THRESHOLD, progress=progress)
    result = evaluation.accumulate(methods, items, measured, DEFAULT_THRESHOLD)[0][name]
    return result, (
        f"MAE {result['mae']:.4f} SSIM {result['ssim']:.4f} IoU over/under {result['iou_over']:.3f}/"
        f"{result['iou_under']:.3f} SRCC {result['srcc']:.3f}, clipped -> more light "
        f"{result['clipped_needs_light']:.1f} %, crushed -> less light "
        f"{result['crushed_needs_dark']:.1f} % "
        f"({result['n_images']} images)"
    )


def scalars(result, prefix=""):
    """(tag, value) of every number of an evaluate.py result, nested sections (per_key, per_level) as tag paths."""
    for key, value in result.items():
        if isinstance(value, dict):
            yield from scalars(value, f"{prefix}{key}/")
        elif key not in ("n_images", "n_flagged") and isinstance(value, (int, float)) and not isinstance(value, bool):
            yield f"{prefix}{key}", value


class Run:
    """One training run's objects and counters; train() calls its steps in order."""

    def __init__(self, config, device, rank, world_size, out):
        self.config, self.device, self.rank, self.world_size, self.out = config, device, rank, world_size, out
        self.data, self.opts = config["data"], config["train"]
        self.is_main = rank == 0
        self.cuda = device.type == "cuda"
        self.amp_dtype = AMP_DTYPES[self.opts["amp"]] if self.cuda else None
        self.channels_last = self.cuda and self.opts["channels_last"]
        self.last_path = out / "last.pt"
        self.epoch, self.step_in_epoch, self.global_step, self.best_mae = 0, 0, 0, math.inf
        self.writer = None

    def log(self, message):
        if self.is_main:
            tqdm.write(message)
            with open(folders.open_append(self.out / "train.log"), "a") as f:  # never through a planted link
                f.write(message + "\n")

    def build(self):
        """Model, optimizer and data, in the order that fixes the random streams (a resumed run depends on it)."""
        config, opts = self.config, self.opts
        random.seed(config["seed"])
        np.random.seed(config["seed"])
        torch.manual_seed(config["seed"])
        self.model, self.net = build_network(config, self.device, self.world_size)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=opts["lr"], weight_decay=opts["weight_decay"])
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.cuda and opts["amp"] == "fp16")
        self.loss_fn = LOSSES[opts["loss"]]
        (
            self.train_set,
            self.sampler,
            self.loader,
            self.steps_per_epoch,
            self.valid_loader,
            self.extras,
            split_files,
        ) = build_data(config, self.rank, self.world_size, self.is_main, self.cuda)
        self.provenance = provenance(config, split_files) if self.is_main else {}  # the main process saves weights
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(opts, self.steps_per_epoch))
        self.ema = (
            torch.optim.swa_utils.AveragedModel(
                self.model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(opts["ema_decay"]), use_buffers=True
            )
            if opts["ema_decay"] > 0
            else None
        )
        self.scale_generator = torch.Generator().manual_seed(config["seed"])

    def describe(self):
        config, ssim_weight, teacher_weight = self.config, self.opts["ssim_weight"], self.opts["teacher_weight"]
        loss = self.opts["loss"] + (f" + {ssim_weight} x (1 - SSIM)" if ssim_weight else "")
        if distils(self.opts):
            terms = [f"{teacher_weight} x L1"] if teacher_weight else []
            if self.opts["teacher_ssim_weight"]:
                terms.append(f"{self.opts['teacher_ssim_weight']} x (1 - SSIM)")
            loss += (
                f" + {' + '.join(terms)} to the teacher maps of {shown(self.data['teacher_dir'])} (found for "
                f"{self.train_set.teacher_count} of the {len(self.train_set)} training images)"
            )
        self.log(
            f"{config['name']}: {config['model']} ({sum(p.numel() for p in self.model.parameters()):,} "
            f"parameters, {sum(p.numel() for p in self.model.parameters() if p.requires_grad):,} trained), "
            f"{len(self.train_set)} training images, "
            f"{len(self.valid_loader.dataset) if self.is_main else '-'} validation images, "
            f"{self.steps_per_epoch} steps of {self.opts['batch_size']} x {self.world_size} per epoch, "
            f"device {self.device}, amp {self.amp_dtype or 'none (fp32)'}, loss {loss}; "
            f"SSIM is {SSIM_CONVENTION}"
        )

    def restore(self):
        """Continue from last.pt; settings that differ from the saved run's are reported (the saved optimizer and
        scheduler settings are kept). Nothing is written here: returns the lines to log once the resume is accepted,
        so a refused resume leaves the run folder as it was. Raises SetupError in one line (a file holding other
        Python objects than tensors and containers, missing or mistyped counters included)."""
        try:
            state = load_torch_state(self.last_path, "a training state written by train_wavelet.py")
        except CheckpointError as e:
            raise SetupError(f"--resume: {e}") from e
        except (RuntimeError, ValueError, TypeError, EOFError, OSError, AttributeError) as e:
            raise SetupError(f"--resume: {self.last_path}: unreadable training state ({first_line(e)})") from e
        if not isinstance(state, dict):
            raise SetupError(
                f"--resume: {self.last_path} holds a {type(state).__name__}; expected a training state "
                "written by train_wavelet.py"
            )
        for key in COUNTERS + ("best_mae",):
            value = state.get(key)
            ok = (
                isinstance(value, int) and value >= 0
                if key in COUNTERS
                else isinstance(value, (int, float)) and not math.isnan(value)
            )
            if isinstance(value, bool) or not ok:
                raise SetupError(
                    f"--resume: {self.last_path}: counter {key} is "
                    + ("missing" if key not in state else f"{type(value).__name__} {str(value)[:40]}")
                    + ("; expected an integer >= 0" if key in COUNTERS else "; expected a number")
                )
        if not isinstance(state.get("config"), dict):  # the run's config travels with its weights (load_model)
            raise SetupError(
                f"--resume: {self.last_path}: its config is "
                + ("missing" if "config" not in state else f"a {type(state['config']).__name__}")
                + "; expected a training state written by train_wavelet.py"
            )
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            if self.ema is not None:
                if state.get("ema") is None:
                    raise KeyError("ema (train.ema_decay was 0 in the saved run)")
                self.ema.load_state_dict(state["ema"])
            self.scale_generator.set_state(state["scale_rng"])
            set_rng_state(state["rng"])
        except (RuntimeError, KeyError, ValueError, TypeError, EOFError, OSError, AttributeError, IndexError) as e:
            raise SetupError(f"--resume: {self.last_path} does not fit this config ({first_line(e)})") from e
        self.epoch, self.step_in_epoch, self.global_step, self.best_mae = (
            state["epoch"],
            state["step_in_epoch"],
            state["global_step"],
            state["best_mae"],
        )
        notes = [
            f"resumed from {self.last_path}: epoch {self.epoch + 1}, step {self.step_in_epoch} of "
            f"{self.steps_per_epoch}, global step {self.global_step}"
        ]
        saved = state.get("config")
        changes = config_changes(saved if isinstance(saved, dict) else {}, self.config)
        if changes:
            notes.append(
                f"resume: the config differs from the saved run's ({len(changes)}): {'; '.join(changes)}; the "
                "saved optimizer and scheduler settings are kept, and the run is no longer bit-exact with one "
                "never stopped unless only train.max_steps changed"
            )
        return notes

    def training_state(self):
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "scale_rng": self.scale_generator.get_state(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "best_mae": self.best_mae,
            "config": self.config,
        }

    def step(self, batch):
        """One optimizer step; returns the loss (a non-finite loss stops the run before the weights are touched)."""
        image = batch["image"].to(self.device, non_blocking=True)
        label = batch["residual"].to(self.device, non_blocking=True)
        maps = [label] + ([batch["teacher"].to(self.device, non_blocking=True)] if distils(self.opts) else [])
        image, (label, *teacher) = rescale(image, maps, self.data["scale_range"], self.scale_generator)  # on the device
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            prediction = self.net(image)
        prediction = bounded_prediction(prediction.float(), image)
        loss = self.loss_fn(prediction, label)
        if self.opts["ssim_weight"] > 0:
            loss = loss + self.opts["ssim_weight"] * (
                1 - pytorch_msssim.ssim(prediction.float(), label, data_range=SSIM_DATA_RANGE, size_average=True)
            )
        if teacher:
            has_teacher = batch["has_teacher"].to(self.device)
            if self.opts["teacher_weight"]:
                loss = loss + self.opts["teacher_weight"] * teacher_l1(prediction, teacher[0], has_teacher)
            if self.opts["teacher_ssim_weight"]:
                loss = loss + self.opts["teacher_ssim_weight"] * teacher_dssim(prediction, teacher[0], has_teacher)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise TrainingError(
                f"the training loss is {loss_value} at global step {self.global_step + 1} (epoch "
                f"{self.epoch + 1}); stopped before it reached the weights; {self.last_path} holds the "
                "last saved state (check the data and train.lr)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.step_in_epoch += 1
        self.global_step += 1
        return loss_value, len(image)

    def train_epoch(self):
        """The rest of the current epoch (or up to train.max_steps). Returns (finished, images seen, mean loss)."""
        opts, max_steps = self.opts, self.opts["max_steps"]
        self.train_set.set_epoch(self.epoch)
        self.sampler.set_epoch(self.epoch, skip=self.step_in_epoch * opts["batch_size"])
        self.net.train()
        seen, steps_run, loss_sum = 0, 0, 0.0
        window_start, window_images = time.perf_counter(), 0
        progress = tqdm(
            self.loader,
            desc=f"epoch {self.epoch + 1}/{opts['epochs']}",
            initial=self.step_in_epoch,
            total=self.steps_per_epoch,
            disable=not self.is_main,
            dynamic_ncols=True,
        )
        for batch in progress:
            loss_value, images = self.step(batch)
            seen += images * self.world_size
            window_images += images * self.world_size
            steps_run += 1
            loss_sum += loss_value
            if self.is_main and self.global_step % opts["log_every_steps"] == 0:
                now = time.perf_counter()
                rate = window_images / (now - window_start)
                window_start, window_images = now, 0
                self.writer.add_scalar("train/loss", loss_value, self.global_step)
                self.writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], self.global_step)
                self.writer.add_scalar("train/images_per_s", rate, self.global_step)
                progress.set_postfix(loss=f"{loss_value:.4f}", img_s=f"{rate:.1f}")
            stop = max_steps is not None and self.global_step >= max_steps
            if self.is_main and (stop or opts["save_every_steps"] and self.global_step % opts["save_every_steps"] == 0):
                save_state(self.last_path, self.training_state())
            if stop:
                break
        progress.close()
        return self.step_in_epoch >= self.steps_per_epoch, seen, loss_sum / max(steps_run, 1)

    def end_epoch(self, seen, mean_loss, elapsed):
        """Validate (EMA weights if kept), save last.safetensors, and best.safetensors when the validation MAE
        improves; log."""
        epoch, writer = self.epoch, self.writer
        judged = self.ema.module if self.ema is not None else self.model
        metrics, panels = validate(judged, self.valid_loader, self.device, self.amp_dtype, self.opts["panels"])
        improved = metrics["mae"] < self.best_mae
        made = {"epoch": epoch + 1, "valid_mae": metrics["mae"], **self.provenance}
        save_model(self.out / "last.safetensors", judged, made)
        if improved:
            self.best_mae = metrics["mae"]
            save_model(self.out / "best.safetensors", judged, made)
        for key, value in metrics.items():
            if key != "n_images":
                writer.add_scalar(f"valid/{key}", value, self.global_step)
        for i, panel in enumerate(panels):
            writer.add_image(f"valid/{i} photo | label | prediction", panel, self.global_step, dataformats="HWC")
        self.log(
            f"epoch {epoch + 1}: train loss {mean_loss:.4f}, "
            f"{seen / elapsed:.1f} images/s; valid MAE {metrics['mae']:.4f} RMSE {metrics['rmse']:.4f} "
            f"PSNR {metrics['psnr']:.2f} SSIM {metrics['ssim']:.4f} IoU over/under {metrics['iou_over']:.3f}/"
            f"{metrics['iou_under']:.3f} SRCC {metrics['srcc']:.3f}, lr "
            f"{self.optimizer.param_groups[0]['lr']:.3g}" + (" -> best.safetensors" if improved else "")
        )
        for name, (spec, items) in self.extras.items():
            extra, text = validate_extra(judged, name, spec, items, self.data)
            for tag, value in scalars({k: v for k, v in extra.items() if k != "per_level"}):
                writer.add_scalar(f"{name}/{tag}", value, self.global_step)
            self.log(f"epoch {epoch + 1} {name}: {text}")
        writer.flush()


def train(
    config: dict, device: torch.device, resume: bool, rank: int, world_size: int, overwrite: bool = False
) -> None:
    """Check the folder, build everything (no folder is made before that succeeds), then run epoch by epoch."""
    out = experiment_folder(config, resume, overwrite)
    run = Run(config, device, rank, world_size, out)
    run.build()
    if run.is_main:
        out.mkdir(parents=True, exist_ok=True)
    group = distributed.Group(rank, world_size, device)
    with contextlib.ExitStack() as held:
        with cli.refused_together(PROG, group):  # a busy folder under torchrun: one line (rank 0), every rank exits 2
            held.enter_context(folders.locked(out, group))  # one run per folder; ranks share it
        if run.is_main:  # again, under the lock: a run that finished meanwhile counts (the other ranks would see the
            experiment_folder(config, resume, overwrite)  # files rank 0 starts writing below and refuse their own run)
        # last.pt read under the lock (another run may have written it meanwhile), accepted or refused before
        # anything is written to the folder
        notes = run.restore() if resume else []
        if run.is_main:
            orphans = make_folder(out, config, overwrite)
            if orphans:
                run.log(f"removed {len(orphans)} temporary file(s) left by a killed run: {', '.join(orphans)}")
        run.describe()
        for note in notes:
            run.log(note)
        run_epochs(run, world_size)


def run_epochs(run, world_size):
    """Epoch by epoch until train.epochs or train.max_steps, saving last.pt after each."""
    out = run.out
    run.writer = SummaryWriter(out) if run.is_main else None
    max_steps = run.opts["max_steps"]
    try:
        while run.epoch < run.opts["epochs"] and (max_steps is None or run.global_step < max_steps):
            started = time.perf_counter()
            finished, seen, mean_loss = run.train_epoch()
            if not finished:  # stopped at max_steps inside the epoch
                run.log(
                    f"stopped at global step {run.global_step} (train.max_steps); last.pt saved, continue with --resume"
                )
                break
            elapsed = time.perf_counter() - started
            if run.is_main:
                run.end_epoch(seen, mean_loss, elapsed)
            if world_size > 1:
                dist.barrier()  # the others wait while rank 0 validates
            run.epoch, run.step_in_epoch = run.epoch + 1, 0
            if run.is_main:
                save_state(run.last_path, run.training_state())
    except DatasetError as e:  # bad data met during an epoch: a run that had to stop (exit 1), not a refused start
        raise TrainingError(own_text(e)) from e
    finally:
        if run.writer is not None:
            run.writer.close()
