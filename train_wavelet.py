"""Train a residual-map network on an IEA40K-layout dataset.

    python train_wavelet.py --config configs/pieanet.yaml [dotted.key=value ...] [--resume] [--device auto|cpu|cuda]
    torchrun --nproc_per_node 4 train_wavelet.py --config configs/pieanet.yaml      # DistributedDataParallel

Writes <output_dir>/<name>/: config.yaml (the resolved config), train.log, TensorBoard events, last.pt (the whole
training state, for --resume) and best.safetensors (the weights with the lowest validation MAE, for load_model).
--resume continues bit for bit from last.pt: the same batches, augmentations and weights as a run never stopped.
"""
import argparse
import inspect
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Sampler, Subset
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from datasets.iea40k import IEA40KDataset
from models import MODELS, build_model, read_checkpoint, resolve_device, save_model
from utils.config import ConfigError, dump_config, load_config, load_yaml
from utils.heatmap import colorize
from utils.image_io import atomic_write
from utils.metrics import SSIM_CONVENTION, MetricAccumulator

ROOT = Path(__file__).resolve().parent
REFERENCE_CONFIG = ROOT / "configs" / "base.yaml"
LOSSES = {"l1": F.l1_loss, "l2": F.mse_loss, "smooth_l1": F.smooth_l1_loss}
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}
LR_SCHEDULES = ("step", "cosine")


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


def rescale(image, label, scale_range, generator):
    """Image and label resized together by one random factor (bilinear, antialiased when shrinking)."""
    if scale_range is None:
        return image, label
    low, high = scale_range
    factor = low + (high - low) * torch.rand((), generator=generator).item()
    size = [max(8, round(side * factor)) for side in image.shape[-2:]]
    resize = dict(size=size, mode="bilinear", align_corners=False, antialias=factor < 1)
    return F.interpolate(image, **resize).clamp_(0, 1), F.interpolate(label, **resize).clamp_(-1, 1)


def resolve_config(path, overrides=()):
    """The config file with its bases and overrides, every key checked (model keys against the model's arguments)."""
    config = load_config(path, overrides, reference=load_yaml(REFERENCE_CONFIG),
                         open_sections=("model", "data.extra_valid"))
    model = config["model"]
    if model.get("name") not in MODELS:
        raise ConfigError(f"model.name must be one of {sorted(MODELS)}, got {model.get('name')!r}")
    arguments = set(inspect.signature(MODELS[model["name"]]).parameters)
    for key in model:
        if key != "name" and key not in arguments:
            raise ConfigError(f"unknown config key 'model.{key}' for model {model['name']!r}; known keys: "
                              f"{', '.join(sorted(arguments)) or 'none'}")
    for key, choices in (("loss", LOSSES), ("amp", AMP_DTYPES), ("lr_schedule", LR_SCHEDULES)):
        if config["train"][key] not in choices:
            raise ConfigError(f"train.{key} must be one of {sorted(choices)}, got {config['train'][key]!r}")
    for name, spec in (config["data"]["extra_valid"] or {}).items():
        if not isinstance(spec, dict) or set(spec) != {"root", "csv"}:
            raise ConfigError(f"data.extra_valid.{name} must be a mapping with keys root and csv, got {spec!r}")
    scale_range = config["data"]["scale_range"]
    if scale_range is not None and not (isinstance(scale_range, list) and len(scale_range) == 2
                                        and all(isinstance(v, (int, float)) for v in scale_range)
                                        and 0 < scale_range[0] <= scale_range[1]):
        raise ConfigError(f"data.scale_range must be null or [low, high] with 0 < low <= high, got {scale_range!r}")
    if config["name"] is None:
        config["name"] = Path(path).stem
    return config


class ResumableSampler(Sampler):
    """This process's share of a shuffled epoch (DistributedSampler), starting ``skip`` samples in when resuming."""

    def __init__(self, dataset, rank, world_size, seed):
        self.sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                                          drop_last=True)
        self.skip = 0

    def set_epoch(self, epoch, skip=0):
        self.sampler.set_epoch(epoch)
        self.skip = skip

    def __iter__(self):
        return iter(list(self.sampler)[self.skip:])

    def __len__(self):
        return len(self.sampler) - self.skip


def rng_state():
    """Global RNG states as tensors and plain containers, so that torch.load(weights_only=True) reads them."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(path, state):
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


@torch.no_grad()
def validate(model, loader, device, amp_dtype, panels):
    """Every metric of utils.metrics over the validation set, and ``panels`` photo | label | prediction images."""
    model.eval()
    metrics, drawn = MetricAccumulator(), []
    for batch in loader:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            prediction = model(batch["image"].to(device))
        prediction = prediction.float().clamp(-1, 1)[:, 0].cpu().numpy()
        for photo, label, guess, score in zip(batch["image"], batch["residual"][:, 0].numpy(), prediction,
                                              batch["score"].tolist()):
            metrics.add(guess, label, score)
            if len(drawn) < panels:
                photo = (photo.permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
                drawn.append(np.concatenate([photo, colorize(label), colorize(guess)], axis=1))
    return metrics.result(), drawn


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "pieanet.yaml"))
    parser.add_argument("--resume", action="store_true", help="continue from <output_dir>/<name>/last.pt")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("overrides", nargs="*", metavar="dotted.key=value")
    args = parser.parse_args(argv)
    try:
        config = resolve_config(args.config, args.overrides)
    except ConfigError as e:
        sys.exit(f"error: {e}")

    world_size = int(os.environ.get("WORLD_SIZE", 1))
    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    device = resolve_device(args.device)
    if device.type == "cuda" and world_size > 1:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if world_size > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        train(config, device, args.resume, rank, world_size)
    finally:
        if world_size > 1:
            dist.destroy_process_group()


def train(config, device, resume, rank, world_size):
    data, opts = config["data"], config["train"]
    is_main = rank == 0
    out = Path(config["output_dir"]) / config["name"]
    last_path = out / "last.pt"
    if resume and not last_path.is_file():
        sys.exit(f"error: --resume: {last_path} not found; start without --resume")

    def log(message):
        if is_main:
            tqdm.write(message)
            with open(out / "train.log", "a") as f:
                f.write(message + "\n")

    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_write(out / "config.yaml") as tmp:
            tmp.write_text(dump_config(config))
    cuda = device.type == "cuda"
    amp_dtype = AMP_DTYPES[opts["amp"]] if cuda else None
    channels_last = cuda and opts["channels_last"]

    random.seed(config["seed"])
    np.random.seed(config["seed"])
    torch.manual_seed(config["seed"])
    model = build_model(config["model"])
    if config["init_from"]:
        _, weights = read_checkpoint(config["init_from"])
        try:
            model.load_state_dict(weights)
        except RuntimeError as e:
            sys.exit(f"error: init_from {config['init_from']}: weights do not fit model {config['model']} "
                     f"({str(e).splitlines()[0][:160]})")
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    net = DistributedDataParallel(model, device_ids=[device.index] if cuda else None) if world_size > 1 else model
    optimizer = torch.optim.Adam(model.parameters(), lr=opts["lr"], weight_decay=opts["weight_decay"])
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and opts["amp"] == "fp16")
    loss_fn = LOSSES[opts["loss"]]

    dataset_args = dict(images_dir=data["images_dir"], labels_dir=data["labels_dir"], label_scale=data["label_scale"],
                        size=data["size"], seed=config["seed"])
    root = Path(data["root"])
    train_set = IEA40KDataset(root, root / data["train_csv"], crop=data["crop"], augment=data["augment"],
                              **dataset_args)
    sampler = ResumableSampler(train_set, rank, world_size, config["seed"])
    batch_size = opts["batch_size"]
    steps_per_epoch = len(sampler) // batch_size
    if steps_per_epoch == 0:
        sys.exit(f"error: {root / data['train_csv']}: {len(train_set)} training images, fewer than one batch of "
                 f"{batch_size} per process ({world_size} processes)")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(opts, steps_per_epoch))
    ema = (torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(
        opts["ema_decay"]), use_buffers=True) if opts["ema_decay"] > 0 else None)
    scale_generator = torch.Generator().manual_seed(config["seed"])
    # the loader's own generator, so that making an iterator never draws from the global RNG
    loader = DataLoader(train_set, batch_size, sampler=sampler, drop_last=True, num_workers=data["workers"],
                        pin_memory=cuda, generator=torch.Generator())
    valid_loader = None
    if is_main:
        valid_set = IEA40KDataset(root, root / data["valid_csv"], **dataset_args)
        if data["valid_limit"]:
            valid_set = Subset(valid_set, range(0, len(valid_set), math.ceil(len(valid_set) / data["valid_limit"])))
        valid_loader = DataLoader(valid_set, opts["valid_batch_size"], num_workers=data["workers"], pin_memory=cuda)
        extra_loaders = {}
        for name, spec in (data["extra_valid"] or {}).items():
            extra_set = IEA40KDataset(spec["root"], Path(spec["root"]) / spec["csv"], **dataset_args)
            extra_loaders[name] = DataLoader(extra_set, 1, num_workers=data["workers"])

    log(f"{config['name']}: {config['model']} ({sum(p.numel() for p in model.parameters()):,} parameters), "
        f"{len(train_set)} training images, {len(valid_loader.dataset) if is_main else '-'} validation images, "
        f"{steps_per_epoch} steps of {batch_size} x {world_size} per epoch, "
        f"device {device}, amp {amp_dtype or 'none (fp32)'}, loss {opts['loss']}; SSIM is {SSIM_CONVENTION}")
    epoch, step_in_epoch, global_step, best_mae = 0, 0, 0, math.inf
    if resume:
        state = torch.load(last_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        scale_generator.set_state(state["scale_rng"])
        set_rng_state(state["rng"])
        epoch, step_in_epoch, global_step, best_mae = (state["epoch"], state["step_in_epoch"], state["global_step"],
                                                       state["best_mae"])
        log(f"resumed from {last_path}: epoch {epoch + 1}, step {step_in_epoch} of {steps_per_epoch}, "
            f"global step {global_step}")

    def training_state(epoch, step_in_epoch):
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "rng": rng_state(), "scale_rng": scale_generator.get_state(),
                "ema": ema.state_dict() if ema is not None else None, "epoch": epoch, "step_in_epoch": step_in_epoch,
                "global_step": global_step, "best_mae": best_mae, "config": config}

    writer = SummaryWriter(out) if is_main else None
    max_steps = opts["max_steps"]
    while epoch < opts["epochs"] and (max_steps is None or global_step < max_steps):
        train_set.set_epoch(epoch)
        sampler.set_epoch(epoch, skip=step_in_epoch * batch_size)
        net.train()
        started, seen, steps_run, loss_sum = time.perf_counter(), 0, 0, 0.0
        window_start, window_images = started, 0
        progress = tqdm(loader, desc=f"epoch {epoch + 1}/{opts['epochs']}", initial=step_in_epoch,
                        total=steps_per_epoch, disable=not is_main, dynamic_ncols=True)
        for batch in progress:
            image, label = rescale(batch["image"], batch["residual"], data["scale_range"], scale_generator)
            image, label = image.to(device, non_blocking=True), label.to(device, non_blocking=True)
            if channels_last:
                image = image.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                prediction = net(image)
            loss = loss_fn(prediction.float(), label)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            step_in_epoch += 1
            global_step += 1
            seen += len(image) * world_size
            window_images += len(image) * world_size
            steps_run += 1
            loss_value = loss.item()
            loss_sum += loss_value
            if is_main and global_step % opts["log_every_steps"] == 0:
                now = time.perf_counter()
                rate = window_images / (now - window_start)
                window_start, window_images = now, 0
                writer.add_scalar("train/loss", loss_value, global_step)
                writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], global_step)
                writer.add_scalar("train/images_per_s", rate, global_step)
                progress.set_postfix(loss=f"{loss_value:.4f}", img_s=f"{rate:.1f}")
            stop = max_steps is not None and global_step >= max_steps
            if is_main and (stop or opts["save_every_steps"] and global_step % opts["save_every_steps"] == 0):
                save_state(last_path, training_state(epoch, step_in_epoch))
            if stop:
                break
        progress.close()
        if step_in_epoch < steps_per_epoch:  # stopped at max_steps inside the epoch
            log(f"stopped at global step {global_step} (train.max_steps); last.pt saved, continue with --resume")
            break
        elapsed = time.perf_counter() - started
        if is_main:
            judged = ema.module if ema is not None else model
            metrics, panels = validate(judged, valid_loader, device, amp_dtype, opts["panels"])
            improved = metrics["mae"] < best_mae
            if improved:
                best_mae = metrics["mae"]
                save_model(out / "best.safetensors", judged, {"epoch": epoch + 1, "valid_mae": metrics["mae"]})
            for key, value in metrics.items():
                if key != "n_images":
                    writer.add_scalar(f"valid/{key}", value, global_step)
            for i, panel in enumerate(panels):
                writer.add_image(f"valid/{i} photo | label | prediction", panel, global_step, dataformats="HWC")
            log(f"epoch {epoch + 1}: train loss {loss_sum / max(steps_run, 1):.4f}, "
                f"{seen / elapsed:.1f} images/s; valid MAE {metrics['mae']:.4f} RMSE {metrics['rmse']:.4f} "
                f"PSNR {metrics['psnr']:.2f} SSIM {metrics['ssim']:.4f} IoU over/under {metrics['iou_over']:.3f}/"
                f"{metrics['iou_under']:.3f} SRCC {metrics['srcc']:.3f}, lr {optimizer.param_groups[0]['lr']:.3g}"
                + (" -> best.safetensors" if improved else ""))
            for name, extra_loader in extra_loaders.items():
                extra, _ = validate(judged, extra_loader, device, amp_dtype, 0)
                for key, value in extra.items():
                    if key != "n_images":
                        writer.add_scalar(f"{name}/{key}", value, global_step)
                log(f"epoch {epoch + 1} {name}: MAE {extra['mae']:.4f} SSIM {extra['ssim']:.4f} IoU over/under "
                    f"{extra['iou_over']:.3f}/{extra['iou_under']:.3f} SRCC {extra['srcc']:.3f} "
                    f"({extra['n_images']} images)")
            writer.flush()
        if world_size > 1:
            dist.barrier()  # the others wait while rank 0 validates
        epoch, step_in_epoch = epoch + 1, 0
        if is_main:
            save_state(last_path, training_state(epoch, step_in_epoch))
    if writer is not None:
        writer.close()


if __name__ == "__main__":
    main()
