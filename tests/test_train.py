"""train_wavelet.py on a tiny dataset fabricated in the IEA40K layout: a run, a resumed run, and torchrun with gloo."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from pieanet import train_wavelet
from pieanet.training import run as training_run
from pieanet.datasets.iea40k import IEA40KDataset
from pieanet.models import load_model
from pieanet.utils.exposure import gray

ROOT = Path(__file__).resolve().parents[1]
SIZE = 40  # images; training crops are 32 x 32, so augmentation (crop offsets, flips) changes every epoch


def make_dataset(root, n_train, n_valid=2):
    """Random photos and their ideal versions; labels = gray(ideal) - gray(photo) in grey levels, as in IEA40K."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for split, count in (("train", n_train), ("valid", n_valid)):
        rows = []
        for i in range(count):
            ideal = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
            gain = rng.uniform(0.3, 1.7)
            photo = np.clip(ideal * gain, 0, 255).astype(np.uint8)
            name = f"{split}{i:02d}_{'N1' if gain < 1 else 'P1'}.png"
            Image.fromarray(photo).save(root / "images" / name)
            label = (gray(ideal.astype(np.float32)) - gray(photo.astype(np.float32))).astype(np.float32)
            np.save(root / "labels" / f"{Path(name).stem}.npy", label)
            rows.append(
                {
                    "img_id": name,
                    "ref_id": f"{split}{i:02d}.png",
                    "score": 10 * (1 - np.abs(label / 255).mean()),
                    "level": name[-6:-4],
                }
            )
        with open(root / f"{split}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["img_id", "ref_id", "score", "level"])
            writer.writeheader()
            writer.writerows(rows)
    return root


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("iea"), n_train=8)


def tiny_config(tmp_path, tiny_model_config, data_root, **train):
    """A config file for a tiny model on the fabricated data; ``train`` sets train.* keys."""
    model = {k: v for k, v in tiny_model_config.items()}
    config = {
        "base": str(ROOT / "configs" / "base.yaml"),
        "name": "tiny",
        "output_dir": str(tmp_path / "runs"),
        "model": model,
        "data": {"root": str(data_root), "train_csv": "train.csv", "valid_csv": "valid.csv", "crop": 32, "workers": 0},
        "train": {"batch_size": 2, "lr": 1e-3, "log_every_steps": 1, "panels": 1, **train},
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run(config_path, *overrides, resume=False, expect=0):
    code = train_wavelet.main(
        ["--config", str(config_path), "--device", "cpu", *(["--resume"] if resume else []), *overrides]
    )
    assert code == expect
    return code


def test_two_steps_make_a_checkpoint_load_model_reads(tmp_path, tiny_model_config, tiny_data):
    config = tiny_config(tmp_path, tiny_model_config, tiny_data, epochs=1, batch_size=4)
    run(config, "data.valid_limit=1")
    out = tmp_path / "runs" / "tiny"
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["global_step"] == 2 and state["epoch"] == 1
    model = load_model(out / "best.safetensors")
    assert model.config == {**model.config, **tiny_model_config}
    for key, value in model.state_dict().items():
        assert torch.equal(value, state["model"][key]), key  # best = the only epoch's weights
    last = load_model(out / "last.safetensors")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in last.state_dict().items())
    residual = model(torch.rand(1, 3, 24, 20))
    assert residual.shape == (1, 1, 24, 20) and residual.abs().max() <= 1
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["batch_size"] == 4
    log = (out / "train.log").read_text()
    assert "1 validation images, 2 steps of 4 x 1 per epoch" in log and "valid MAE" in log and "images/s" in log
    assert list(out.glob("events.out.tfevents.*"))


def test_resume_reproduces_the_uninterrupted_run_exactly(tmp_path, tiny_model_config, tiny_data):
    # 8 images, batch 2: 4 steps per epoch, 2 epochs; StepLR every epoch so the schedule matters too
    settings = dict(epochs=2, lr_step_epochs=1, lr_gamma=0.5)
    whole = tiny_config(tmp_path / "whole", tiny_model_config, tiny_data, **settings)
    run(whole)
    pieces = tiny_config(tmp_path / "pieces", tiny_model_config, tiny_data, **settings)
    run(pieces, "train.max_steps=3")  # stopped inside epoch 1
    state = torch.load(tmp_path / "pieces" / "runs" / "tiny" / "last.pt", weights_only=True)
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (0, 3, 3)
    run(pieces, "train.max_steps=6", resume=True)  # resumed inside epoch 1, stopped inside epoch 2
    run(pieces, resume=True)

    expected = torch.load(tmp_path / "whole" / "runs" / "tiny" / "last.pt", weights_only=True)
    resumed = torch.load(tmp_path / "pieces" / "runs" / "tiny" / "last.pt", weights_only=True)
    assert resumed["global_step"] == expected["global_step"] == 8
    for key, value in expected["model"].items():
        assert torch.equal(resumed["model"][key], value), key
    for (i, a), b in zip(expected["optimizer"]["state"].items(), resumed["optimizer"]["state"].values()):
        assert torch.equal(a["exp_avg_sq"], b["exp_avg_sq"]), i
    assert resumed["scheduler"] == expected["scheduler"]
    assert resumed["best_mae"] == expected["best_mae"]
    a = load_file(tmp_path / "whole" / "runs" / "tiny" / "best.safetensors")
    b = load_file(tmp_path / "pieces" / "runs" / "tiny" / "best.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_without_a_saved_state_says_so(tmp_path, tiny_model_config, tiny_data, capsys):
    config = tiny_config(tmp_path, tiny_model_config, tiny_data, epochs=1)
    run(config, resume=True, expect=2)
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "last.pt not found" in line and not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.subprocess
def test_torchrun_gloo_two_processes_match_one_process_with_the_double_batch(tmp_path, tiny_model_config, tiny_data):
    # DDP averages the gradients of the two processes' batches of 2 (DistributedSampler gives rank r the indices
    # r, r+2, ... of the shuffled epoch): the same update as one process on the 4 images at once.
    ddp = tiny_config(tmp_path / "ddp", tiny_model_config, tiny_data, epochs=1, batch_size=2)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(ROOT / "train_wavelet.py"),
            "--config",
            str(ddp),
            "--device",
            "cpu",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    single = tiny_config(tmp_path / "single", tiny_model_config, tiny_data, epochs=1, batch_size=4)
    run(single)
    out = tmp_path / "ddp" / "runs" / "tiny"
    assert "2 steps of 2 x 2 per epoch" in (out / "train.log").read_text()
    distributed = torch.load(out / "last.pt", weights_only=True)
    reference = torch.load(tmp_path / "single" / "runs" / "tiny" / "last.pt", weights_only=True)
    assert distributed["global_step"] == 2
    for key, value in reference["model"].items():
        torch.testing.assert_close(distributed["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    load_model(out / "best.safetensors")


# ------------------------------------------------------------------ bad configs, data and folders (issue 9)
@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lr=abc", "'train.lr' is 'abc'"),
        ("train.lr_step_epochs=0", "'train.lr_step_epochs' is 0"),
        ("data.valid_limit=-1", "'data.valid_limit' is -1"),
        ("model.use_dwt=maybe", "use_dwt = 'maybe'"),
        ("model.window=0", "window = 0"),
        ("train.batch_size=0", "'train.batch_size' is 0"),
        ("train.ema_decay=1", "ema_decay"),
        ("seed=-1", "'seed' is -1"),
        ("data.workers=two", "'data.workers'"),
        ("data.crop=0", "'data.crop' is 0"),
        ("train.lr=.nan", "'train.lr' is nan"),
        ("name=../x", "'name' is '../x'"),
        ("data.extra_valid={x: {root: a, well_exposed: false}}", "'data.extra_valid.x' is"),
        ("data.extra_valid={x: {root: a, csv: b.csv, well_exposed: true}}", "{root, well_exposed: true}"),
        ("data.extra_valid={x: {csv: b.csv}}", "'data.extra_valid.x' is {'csv': 'b.csv'}; expected {root, csv}"),
        ("train.teacher_weight=-1", "'train.teacher_weight' is -1"),
        ("train.teacher_weight=0.5", "train.teacher_weight is 0.5 but data.teacher_dir is null"),
    ],
)
def test_bad_config_values_are_refused_before_anything_is_made(
    tmp_path, tiny_model_config, tiny_data, capsys, override, message
):
    config = tiny_config(tmp_path, tiny_model_config, tiny_data, epochs=1)
    run(config, override, expect=2)
    err = capsys.readouterr().err
    (line,) = err.strip().splitlines()
    assert message in line and "Traceback" not in err and not (tmp_path / "runs").exists()


def test_bad_data_is_one_line_and_leaves_no_folder(tmp_path, tiny_model_config, tiny_data, capsys, monkeypatch):
    monkeypatch.chdir(tiny_data.parent)  # a relative data.root must not be joined twice
    config = tiny_config(tmp_path, tiny_model_config, tiny_data, epochs=1)
    run(config, f"data.root={tiny_data.name}", "data.train_csv=nope.csv", expect=2)
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"{tiny_data.name}/nope.csv: split list not found" in line
    assert f"{tiny_data.name}/{tiny_data.name}" not in line and not (tmp_path / "runs").exists()


def test_an_existing_run_is_never_overwritten_silently(tmp_path, tiny_model_config, tiny_data, capsys):
    config = tiny_config(tmp_path, tiny_model_config, tiny_data, epochs=1, batch_size=4)
    run(config, "data.valid_limit=1")
    out = tmp_path / "runs" / "tiny"
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    run(config, "data.valid_limit=1", expect=2)
    assert "already holds a run" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    run(config, "data.valid_limit=1", "--overwrite")
    assert (out / "train.log").read_text().count("valid MAE") == 1  # started again, not appended to
    assert len(list(out.glob("events.out.tfevents.*"))) == 1


def test_resume_reports_a_changed_config_and_removes_orphan_temporaries(tmp_path, tiny_model_config, tiny_data):
    config = tiny_config(tmp_path, tiny_model_config, tiny_data, epochs=2, batch_size=4)
    run(config, "train.max_steps=1")
    out = tmp_path / "runs" / "tiny"
    orphan = out / ".last.999999999-0123abcd.tmp.pt"  # what atomic_write leaves behind after kill -9
    orphan.write_bytes(b"half a checkpoint")
    run(config, "train.batch_size=2", resume=True)
    log = (out / "train.log").read_text()
    assert not orphan.exists() and "removed 1 temporary file(s) left by a killed run" in log
    assert "train.batch_size: 4 -> 2" in log and "train.max_steps: 1 -> None" in log


def test_bad_data_met_during_an_epoch_stops_with_one_line(tmp_path, tiny_model_config, tiny_data, capsys):
    bad = make_dataset(tmp_path / "bad", n_train=4)
    np.save(bad / "labels" / "train01_P1.npy", np.full((SIZE, SIZE), np.nan, np.float32))
    np.save(bad / "labels" / "train01_N1.npy", np.full((SIZE, SIZE), np.nan, np.float32))
    config = tiny_config(tmp_path, tiny_model_config, bad, epochs=1, batch_size=4)
    run(config, expect=1)
    err = capsys.readouterr().err
    line = [line for line in err.strip().splitlines() if line.startswith("train_wavelet:")]
    assert len(line) == 1 and "label contains NaN or inf" in line[0] and "Traceback" not in err


def test_a_non_finite_loss_stops_before_the_weights_are_touched(
    tmp_path, tiny_model_config, tiny_data, capsys, monkeypatch
):
    monkeypatch.setitem(training_run.LOSSES, "l1", lambda prediction, label: (prediction - label).abs().mean() / 0)
    config = tiny_config(tmp_path, tiny_model_config, tiny_data, epochs=1, batch_size=4)
    run(config, expect=1)
    assert "the training loss is" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "tiny" / "best.safetensors").exists()


def test_saved_best_checkpoint_is_readable_by_others(tmp_path, tiny_model_config, tiny_data):
    config = tiny_config(tmp_path, tiny_model_config, tiny_data, epochs=1, batch_size=4)
    run(config, "data.valid_limit=1")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "runs" / "tiny" / "best.safetensors").stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_full_disk_while_saving_is_one_line(tmp_path, tiny_model_config, tiny_data, capsys, monkeypatch):
    def full(path, state):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(training_run, "save_state", full)
    config = tiny_config(tmp_path, tiny_model_config, tiny_data, epochs=1, batch_size=4)
    run(config, "data.valid_limit=1", expect=1)
    err = capsys.readouterr().err
    # issue 27: the first last.pt failed, so there is no saved state to continue from: the advice is --overwrite
    assert (
        "last.pt: No space left on device; no training state was saved yet (no last.pt); start it again with "
        "--overwrite"
        in err
        and "Traceback" not in err
    )


def test_ssim_weight_adds_the_ssim_term_to_the_loss(tmp_path, tiny_model_config, tiny_data, monkeypatch):
    calls = []

    def fake_ssim(prediction, label, data_range, size_average):
        calls.append((prediction.shape, label.shape, data_range, size_average))
        return torch.tensor(0.25)

    monkeypatch.setattr(training_run.pytorch_msssim, "ssim", fake_ssim)
    monkeypatch.setitem(training_run.LOSSES, "l1", lambda prediction, label: (prediction * 0).sum() + 0.1)
    for weight, expected in ((0.5, 0.1 + 0.5 * (1 - 0.25)), (0.0, 0.1)):
        calls.clear()
        folder = tmp_path / f"w{weight}"
        run(
            tiny_config(folder, tiny_model_config, tiny_data, epochs=1, batch_size=4, ssim_weight=weight),
            "data.valid_limit=1",
        )
        log = (folder / "runs" / "tiny" / "train.log").read_text()
        assert f"train loss {expected:.4f}" in log
        assert len(calls) == (2 if weight else 0)  # 8 images, batch 4: one call per step
        assert all(c == ((4, 1, 32, 32), (4, 1, 32, 32), 1.0, True) for c in calls)
        assert ("(1 - SSIM)" in log) == bool(weight)


def test_teacher_l1_hand_computed():
    prediction = torch.tensor([[[[0.5, -0.5]]], [[[0.2, 0.2]]], [[[1.0, 1.0]]]])
    teacher = torch.tensor([[[[0.0, 0.0]]], [[[0.9, 0.9]]], [[[0.0, 0.25]]]])
    # photos 1 and 3 have a map: (0.5 + 0.5 + 1.0 + 0.75) / 4 pixels; photo 2 (no map) counts for nothing
    loss = training_run.teacher_l1(prediction, teacher, torch.tensor([True, False, True]))
    assert loss.item() == pytest.approx(2.75 / 4)
    assert training_run.teacher_l1(prediction, teacher, torch.tensor([False] * 3)).item() == 0


def teacher_cache(tmp_path, data_root):
    """A teacher-map cache holding zero maps of every third training photo (3 of the 8), keyed as
    datasets/teacher.py keys them (the SHA-256 of the image file)."""
    from pieanet.utils.image_io import file_sha256

    cache = tmp_path / "cache"
    cache.mkdir()
    with open(data_root / "train.csv", newline="") as f:
        with_maps = [row["img_id"] for row in csv.DictReader(f)][::3]
    for name in with_maps:
        np.save(cache / f"{file_sha256(data_root / 'images' / name)}.npy", np.zeros((SIZE, SIZE), np.float32))
    return cache


def test_teacher_dssim_counts_only_the_photos_with_a_map_and_is_one_minus_the_metrics_ssim():
    from pieanet.utils.metrics import ssim

    g = torch.Generator().manual_seed(0)
    teacher = torch.rand(3, 1, 32, 32, generator=g) * 2 - 1
    prediction = teacher.clone()
    prediction[1] = torch.rand(1, 32, 32, generator=g) * 2 - 1  # far from its map, but it has none
    prediction[2] = teacher[2] * 0.5 + 0.1
    has = torch.tensor([True, False, True])
    # photo 1: identical to its map (SSIM 1, nothing to learn); photo 3: utils.metrics' SSIM of the same pair
    expected = (0 + (1 - ssim(prediction[2, 0].numpy(), teacher[2, 0].numpy()))) / 2
    assert training_run.teacher_dssim(prediction, teacher, has).item() == pytest.approx(expected, abs=1e-6)
    assert training_run.teacher_dssim(prediction, teacher, torch.tensor([True, False, False])).item() == pytest.approx(
        0, abs=1e-6
    )
    assert training_run.teacher_dssim(prediction, teacher, torch.tensor([False] * 3)).item() == 0


def test_teacher_ssim_weight_adds_its_term_and_loads_the_maps_alone(
    tmp_path, tiny_model_config, tiny_data, monkeypatch
):
    cache = teacher_cache(tmp_path, tiny_data)
    calls = []

    def fake_teacher_dssim(prediction, teacher, has_teacher):
        calls.append(int(has_teacher.sum()))
        return torch.tensor(0.3)

    monkeypatch.setattr(training_run, "teacher_dssim", fake_teacher_dssim)
    monkeypatch.setattr(training_run, "teacher_l1", lambda *a: pytest.fail("teacher_weight is 0: no L1 term"))
    monkeypatch.setitem(training_run.LOSSES, "l1", lambda prediction, label: (prediction * 0).sum() + 0.1)
    folder = tmp_path / "run"
    run(
        tiny_config(folder, tiny_model_config, tiny_data, epochs=1, batch_size=4),
        f"data.teacher_dir={cache}",
        "train.teacher_ssim_weight=2",
        "data.valid_limit=1",
    )
    log = (folder / "runs" / "tiny" / "train.log").read_text()
    assert f"train loss {0.1 + 2 * 0.3:.4f}" in log
    assert len(calls) == 2 and sum(calls) == 3  # one call per step; each photo with a map once in the epoch
    assert "2 x (1 - SSIM) to the teacher maps" in log and "found for 3 of the 8 training images" in log


def test_teacher_ssim_weight_without_a_cache_is_refused(tmp_path, tiny_model_config, tiny_data, capsys):
    run(tiny_config(tmp_path, tiny_model_config, tiny_data, epochs=1), "train.teacher_ssim_weight=1", expect=2)
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "train.teacher_ssim_weight is 1 but data.teacher_dir is null" in line


def test_rescale_resizes_the_photo_and_every_map_alike():
    image = torch.rand(2, 3, 32, 40)
    label = torch.rand(2, 1, 32, 40) * 2 - 1
    teacher = -label / 2
    same = training_run.rescale(image, [label, teacher], None, torch.Generator())
    assert same[0] is image and same[1][0] is label and same[1][1] is teacher
    resized, (label2, teacher2) = training_run.rescale(image, [label, teacher], (0.5, 0.5), torch.Generator())
    assert resized.shape == (2, 3, 16, 20) and label2.shape == teacher2.shape == (2, 1, 16, 20)
    assert torch.allclose(teacher2, -label2 / 2, atol=1e-6)  # one resize for all: linear maps keep their relation


def test_a_teacher_cache_without_maps_of_the_training_photos_is_refused(tmp_path, tiny_model_config, tiny_data, capsys):
    (tmp_path / "empty").mkdir()
    run(
        tiny_config(tmp_path, tiny_model_config, tiny_data, epochs=1, teacher_weight=0.5),
        f"data.teacher_dir={tmp_path / 'empty'}",
        expect=2,
    )
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "no teacher map of any of the 8 photos" in line and not (tmp_path / "runs").exists()


def test_teacher_weight_adds_the_teacher_term_over_the_photos_with_a_map(
    tmp_path, tiny_model_config, tiny_data, monkeypatch
):
    cache = teacher_cache(tmp_path, tiny_data)
    calls = []

    def fake_teacher_l1(prediction, teacher, has_teacher):
        calls.append((prediction.shape, teacher.shape, int(has_teacher.sum())))
        return torch.tensor(0.2)

    monkeypatch.setattr(training_run, "teacher_l1", fake_teacher_l1)
    monkeypatch.setitem(training_run.LOSSES, "l1", lambda prediction, label: (prediction * 0).sum() + 0.1)
    for weight, expected in ((0.5, 0.1 + 0.5 * 0.2), (0.0, 0.1)):
        calls.clear()
        folder = tmp_path / f"w{weight}"
        run(
            tiny_config(folder, tiny_model_config, tiny_data, epochs=1, batch_size=4, teacher_weight=weight),
            f"data.teacher_dir={cache}",
            "data.valid_limit=1",
        )
        log = (folder / "runs" / "tiny" / "train.log").read_text()
        assert f"train loss {expected:.4f}" in log
        assert len(calls) == (2 if weight else 0)  # 8 images, batch 4: one call per step
        assert all(c[:2] == ((4, 1, 32, 32), (4, 1, 32, 32)) for c in calls)
        assert sum(c[2] for c in calls) == (3 if weight else 0)  # each photo with a map once in the epoch
        assert ("found for 3 of the 8 training images" in log) == bool(weight)


def test_extra_validation_sets_report_what_evaluate_reports_every_epoch(tmp_path, tiny_model_config, tiny_data):
    """A labelled extra set and a folder of well-exposed photos: each epoch's log line and TensorBoard scalars are
    the numbers evaluate.py gives for the epoch's weights (last.safetensors) on the tools' default path."""
    import json

    import evaluate
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from pieanet.utils import well_exposed

    photos = tmp_path / "photos"
    (photos / "images").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i, (mean, key) in enumerate(((60, "low"), (128, "normal"), (200, "high"), (120, "normal"))):
        pixels = np.clip(rng.normal(mean, 30, (36, 48, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(photos / "images" / f"p{i}.png")
    (photos / "manifest.csv").write_text("file,key\np0.png,low\np1.png,normal\np2.png,high\np3.png,normal\n")
    config = tiny_config(tmp_path, tiny_model_config, tiny_data, epochs=1, batch_size=4)
    run(
        config,
        "model.working_size=32",  # the default path: predicted at 32 px, guided upsampling to 40 / 48 px
        f"data.extra_valid={{brackets: {{root: {tiny_data}, csv: valid.csv}}, good: {{root: {photos}, "
        "well_exposed: true}}",
    )
    out = tmp_path / "runs" / "tiny"
    log = (out / "train.log").read_text()
    checkpoint = out / "last.safetensors"
    assert (
        evaluate.main(
            [
                "--well-exposed",
                str(photos),
                "--checkpoint",
                str(checkpoint),
                "--output",
                str(tmp_path / "we"),
                "--json",
                str(tmp_path / "we.json"),
            ]
        )
        == 0
    )
    (fa,) = json.loads((tmp_path / "we.json").read_text())["methods"].values()
    assert f"epoch 1 good: {well_exposed.describe(fa)}" in log
    assert (
        evaluate.main(
            [
                "--data-root",
                str(tiny_data),
                "--csv",
                "valid.csv",
                "--checkpoint",
                str(checkpoint),
                "--json",
                str(tmp_path / "ev.json"),
            ]
        )
        == 0
    )
    (ev,) = json.loads((tmp_path / "ev.json").read_text())["methods"].values()
    assert f"epoch 1 brackets: MAE {ev['mae']:.4f} SSIM {ev['ssim']:.4f}" in log
    assert f"clipped -> more light {ev['clipped_needs_light']:.1f} %" in log
    events = EventAccumulator(str(out))
    events.Reload()
    scalar = lambda tag: events.Scalars(tag)[-1].value  # noqa: E731
    assert scalar("good/false_alarm_pct") == pytest.approx(fa["false_alarm_pct"])
    assert scalar("good/median_pct_flagged") == pytest.approx(fa["median_pct_flagged"])
    for key in ("high", "low", "normal"):
        assert scalar(f"good/per_key/{key}/false_alarm_pct") == pytest.approx(fa["per_key"][key]["false_alarm_pct"])
    assert scalar("brackets/mae") == pytest.approx(ev["mae"]) and scalar("brackets/ssim") == pytest.approx(ev["ssim"])
    assert "brackets/clipped_needs_light" in events.Tags()["scalars"]


# ------------------------------------------------------------------ behaviour pinned against hand-computed truths
def test_cosine_schedule_hand_computed():
    # 2 epochs of 4 steps, 3 warm-up steps, floor 0.1: linear warm-up 1/3, 2/3, 1 over steps 0..2, then
    # 0.1 + 0.9 * (1 + cos(pi * (step - 3) / 5)) / 2 from 1 at step 3 down to the floor at step 8 and after
    factor = training_run.lr_factor(
        {"epochs": 2, "warmup_steps": 3, "lr_schedule": "cosine", "lr_gamma": 0.1, "lr_step_epochs": 1},
        steps_per_epoch=4,
    )
    expected = {
        0: 1 / 3,
        1: 2 / 3,
        2: 1.0,
        3: 1.0,
        4: 0.91405765,
        5: 0.68905765,
        6: 0.41094235,
        7: 0.18594235,
        8: 0.1,
        20: 0.1,
    }
    assert {step: factor(step) for step in expected} == pytest.approx(expected, rel=1e-7)


def test_step_schedule_hand_computed():
    # 2 warm-up steps, then x 0.5 at every epoch boundary (4 steps), counted from step 0
    factor = training_run.lr_factor(
        {"epochs": 3, "warmup_steps": 2, "lr_schedule": "step", "lr_gamma": 0.5, "lr_step_epochs": 1}, steps_per_epoch=4
    )
    expected = {0: 0.5, 1: 1.0, 2: 1.0, 3: 1.0, 4: 0.5, 7: 0.5, 8: 0.25, 11: 0.25}
    assert {step: factor(step) for step in expected} == pytest.approx(expected, rel=1e-12)


def test_steps_use_the_scheduled_lr_and_validation_and_saving_use_the_ema(
    tmp_path, tiny_model_config, tiny_data, monkeypatch
):
    lrs, raw, judged = [], [], []
    step, validate = training_run.Run.step, training_run.validate

    def recording_step(self, batch):
        lrs.append(self.optimizer.param_groups[0]["lr"])  # the rate this step uses
        result = step(self, batch)
        raw.append({k: v.detach().double().clone() for k, v in self.model.state_dict().items()})
        return result

    def recording_validate(model, *args):
        judged.append({k: v.detach().double().clone() for k, v in model.state_dict().items()})
        return validate(model, *args)

    monkeypatch.setattr(training_run.Run, "step", recording_step)
    monkeypatch.setattr(training_run, "validate", recording_validate)
    config = tiny_config(
        tmp_path,
        tiny_model_config,
        tiny_data,
        epochs=2,
        lr_schedule="cosine",
        warmup_steps=3,
        lr_gamma=0.1,
        ema_decay=0.5,
    )
    run(config, "data.valid_limit=1")
    # 8 images, batch 2: 4 steps per epoch, the schedule of test_cosine_schedule_hand_computed times lr 1e-3
    assert lrs == pytest.approx(
        [1e-3 * f for f in (1 / 3, 2 / 3, 1, 1, 0.91405765, 0.68905765, 0.41094235, 0.18594235)], rel=1e-6
    )
    # the EMA by hand: the first step's weights, then ema = 0.5 * ema + 0.5 * weights after each step
    averages = []
    for weights in raw:
        averages.append(weights if not averages else {k: 0.5 * averages[-1][k] + 0.5 * w for k, w in weights.items()})
    epoch_ends = (averages[3], averages[7])
    # this test can tell the two apart: the average is 100 x the tolerance below away from the raw weights
    assert max(float((averages[7][k] - raw[7][k]).abs().max()) for k in raw[7]) > 1e-4

    def assert_weights(got, expected):
        assert set(got) == set(expected)
        for key, value in expected.items():
            torch.testing.assert_close(got[key].double(), value, atol=1e-6, rtol=0, msg=key)

    assert len(judged) == 2  # one validation per epoch, each of that epoch's average
    for got, expected in zip(judged, epoch_ends):
        assert_weights(got, expected)
    out = tmp_path / "runs" / "tiny"
    assert_weights(load_file(out / "last.safetensors"), epoch_ends[1])
    second_best = any(
        line.startswith("epoch 2:") and line.endswith("-> best.safetensors")
        for line in (out / "train.log").read_text().splitlines()
    )
    assert_weights(load_file(out / "best.safetensors"), epoch_ends[1] if second_best else epoch_ends[0])


def test_resume_as_one_of_two_processes_continues_its_sample_order(tmp_path, tiny_model_config, tiny_data, monkeypatch):
    """Rank 0 of 2 (as under torchrun) run in this process, without DDP's wrapper and barrier (the gradient averaging
    of real processes is tested above): which training images rank 0 loads, step by step. A resumed run must skip
    exactly the samples this process has already used in the epoch (its steps x its batch), no more, no fewer."""
    loaded = []
    getitem, build_network = IEA40KDataset.__getitem__, training_run.build_network

    def recording_getitem(self, index):
        if self.csv.name == "train.csv":
            loaded.append(index)
        return getitem(self, index)

    monkeypatch.setattr(IEA40KDataset, "__getitem__", recording_getitem)
    monkeypatch.setattr(
        training_run, "build_network", lambda config, device, world_size: build_network(config, device, 1)
    )
    monkeypatch.setattr(training_run.dist, "barrier", lambda: None)
    # the folder lock tells every rank whether rank 0 got it: here every rank is this process
    monkeypatch.setattr(
        training_run.dist, "all_gather_object", lambda out, value: out.__setitem__(slice(None), [value] * len(out))
    )

    def train(folder, *overrides, resume=False):
        path = tiny_config(folder, tiny_model_config, tiny_data, epochs=2, batch_size=1)
        config = training_run.resolve_config(path, ["data.valid_limit=1", *overrides])
        training_run.train(config, torch.device("cpu"), resume, rank=0, world_size=2)

    train(tmp_path / "whole")
    whole = list(loaded)
    # DistributedSampler's order by hand: each epoch's permutation of the 8 images (seed 0 + epoch), every second
    # index from rank 0's place: 4 steps of batch 1 per epoch
    expected = []
    for epoch in range(2):
        expected += torch.randperm(8, generator=torch.Generator().manual_seed(epoch)).tolist()[0::2]
    assert whole == expected
    loaded.clear()
    train(tmp_path / "pieces", "train.max_steps=3")  # stopped inside epoch 1
    assert loaded == whole[:3]
    train(tmp_path / "pieces", "train.max_steps=6", resume=True)  # resumed inside epoch 1, stopped inside epoch 2
    train(tmp_path / "pieces", resume=True)
    assert loaded == whole


def test_a_run_stopped_before_its_first_last_pt_is_sent_to_overwrite_every_time(
    tmp_path, tiny_model_config, tiny_data, capsys, monkeypatch
):
    """Issue 27: Ctrl-C, --resume and a plain start each lead to --overwrite, never in a circle."""
    config = tiny_config(tmp_path, tiny_model_config, tiny_data, epochs=1)

    def interrupted_in_the_first_epoch(run, world_size):
        raise KeyboardInterrupt

    monkeypatch.setattr(training_run, "run_epochs", interrupted_in_the_first_epoch)
    run(config, expect=130)
    out = tmp_path / "runs" / "tiny"
    assert (out / "config.yaml").is_file() and not (out / "last.pt").exists()
    lines = [capsys.readouterr().err.strip().splitlines()[-1]]
    monkeypatch.undo()
    run(config, resume=True, expect=2)
    lines.append(capsys.readouterr().err.strip().splitlines()[-1])
    run(config, expect=2)
    lines.append(capsys.readouterr().err.strip().splitlines()[-1])
    for line in lines:
        assert "--overwrite" in line and "with --resume" not in line and "without --resume" not in line, line
    run(config, "--overwrite")
    assert (out / "last.pt").is_file()


def test_a_checkpoint_records_its_config_commit_and_split_files(tmp_path, tiny_model_config, tiny_data):
    """best/last.safetensors record how they were made: the resolved config as sorted JSON (the one config.yaml
    holds), the commit of the checkout (git's own answer, or "unknown" where git has none) and the SHA-256 of the
    train and valid lists, computed here from the files with hashlib."""
    import hashlib
    import json

    from safetensors import safe_open

    config = tiny_config(tmp_path, tiny_model_config, tiny_data, epochs=1, batch_size=4)
    run(config, "data.valid_limit=1")
    out = tmp_path / "runs" / "tiny"
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    manifest = "".join(
        f"{role} {hashlib.sha256((tiny_data / f'{role}.csv').read_bytes()).hexdigest()}\n"
        for role in ("train", "valid")
    )
    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    commit = git.stdout.strip() if git.returncode == 0 else "unknown"
    for name in ("best.safetensors", "last.safetensors"):
        with safe_open(out / name, "pt") as f:
            made = f.metadata()
        assert made["train_config"] == json.dumps(resolved, sort_keys=True)
        assert made["data_manifest_sha256"] == hashlib.sha256(manifest.encode()).hexdigest()
        assert made["commit"] == commit and made["epoch"] == "1"


def test_the_commit_is_read_from_the_git_files(tmp_path):
    """A loose ref, a packed ref, a detached HEAD, a worktree's .git file with its commondir; "unknown" without a git
    folder or with a ref that names no commit."""
    from pieanet.training.state import checkout_commit

    one, two, three = "1" * 40, "2" * 40, "3" * 40
    repo = tmp_path / "repo"
    (repo / ".git" / "refs" / "heads").mkdir(parents=True)
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    assert checkout_commit(repo) == "unknown"  # a branch without a commit yet
    (repo / ".git" / "packed-refs").write_text(f"# pack-refs with: peeled\n{two} refs/heads/main\n")
    assert checkout_commit(repo) == two
    (repo / ".git" / "refs" / "heads" / "main").write_text(one + "\n")
    assert checkout_commit(repo) == one  # a loose ref wins over the packed one
    worktree = tmp_path / "wt"
    (repo / ".git" / "worktrees" / "wt").mkdir(parents=True)
    (repo / ".git" / "worktrees" / "wt" / "HEAD").write_text("ref: refs/heads/main\n")
    (repo / ".git" / "worktrees" / "wt" / "commondir").write_text("../..\n")
    worktree.mkdir()
    (worktree / ".git").write_text(f"gitdir: {repo / '.git' / 'worktrees' / 'wt'}\n")
    assert checkout_commit(worktree) == one
    (repo / ".git" / "worktrees" / "wt" / "HEAD").write_text(three + "\n")
    assert checkout_commit(worktree) == three
    (repo / ".git" / "refs" / "heads" / "main").write_text("not a commit\n")
    assert checkout_commit(repo) == "unknown"
    assert checkout_commit(tmp_path) == "unknown"  # no .git: an installed copy


def test_the_split_hash_follows_the_lists_rows_not_their_place(tmp_path):
    from pieanet.training.state import split_files_sha256

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "train.csv").write_text("img_id\nx.png\n")
        (tmp_path / folder / "valid.csv").write_text("img_id\ny.png\n")
    files = {folder: [(role, tmp_path / folder / f"{role}.csv") for role in ("train", "valid")] for folder in "ab"}
    assert split_files_sha256(files["a"]) == split_files_sha256(files["b"])
    (tmp_path / "b" / "valid.csv").write_text("img_id\nz.png\n")
    assert split_files_sha256(files["a"]) != split_files_sha256(files["b"])
    assert split_files_sha256(files["a"]) != split_files_sha256(files["a"][::-1])  # train and valid are told apart
