"""make_heatmap.py and evaluate.py under torchrun (2 CPU processes, gloo) against one process, and
make_heatmap --resume after a run killed with SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pieanet import evaluate
from pieanet import make_heatmap
from pieanet.heatmaps.summary import read_summary, write_summary
from conftest import flat_iea_dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def one_thread():
    """Both sides of a comparison run torch on one thread (torchrun's processes get OMP_NUM_THREADS=1)."""
    threads = torch.get_num_threads()
    yield ["--threads", "1"]
    torch.set_num_threads(threads)


def torchrun_command(script, argv, log_dir):
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "--redirects",
        "3",
        "--log-dir",
        str(log_dir),
        str(ROOT / script),
        *map(str, argv),
    ]


def torchrun(script, argv, log_dir):
    """Run ``script`` as 2 processes; (exit code, {rank: (stdout, stderr)})."""
    done = subprocess.run(
        torchrun_command(script, argv, log_dir),
        cwd=ROOT,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=240,
    )
    logs = {
        rank: tuple(
            next(log_dir.glob(f"*/attempt_0/{rank}/{stream}.log")).read_text() for stream in ("stdout", "stderr")
        )
        for rank in (0, 1)
    }
    return done.returncode, logs


def save_photos(folder, names, height=48, width=64):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(folder / name)
    return folder


def files_of(folder):
    """{relative name: bytes}; index.html names its own path, which is replaced by a placeholder (the folders
    compared share their name, which it shows as its title)."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes().replace(str(folder).encode(), b"<out>")
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def summary_rows(folder):
    return sorted(tuple(row.values()) for row in read_summary(folder / "summary.csv"))


@pytest.mark.slow
@pytest.mark.subprocess
def test_two_processes_write_what_one_process_writes(tiny_checkpoint, tmp_path, capsys, one_thread):
    # with --batch-size 2 the batches are (p0, p1) on rank 0, (p1b, p2) on rank 1, ...: the bad photo is rank 1's
    photos = save_photos(tmp_path / "photos", [f"p{i}.png" for i in range(7)])
    (photos / "p1b.png").write_bytes(b"not a png")
    options = [
        "--input",
        photos,
        "--checkpoint",
        tiny_checkpoint,
        "--batch-size",
        "2",
        "--overlay",
        "--save-npy",
        *one_thread,
    ]
    one, two = tmp_path / "one" / "out", tmp_path / "two" / "out"
    code = make_heatmap.main([str(a) for a in options + ["--output", one]])
    one_out = capsys.readouterr().out
    two_code, logs = torchrun("make_heatmap.py", options + ["--output", two], tmp_path / "logs")
    assert code == 1 and two_code != 0  # the failure on rank 1 makes rank 0 exit 1
    assert "p1b.png" in logs[1][1] and "p1b.png" not in logs[0][1]  # rank 1 read it and reported it
    assert logs[1][0] == ""  # only rank 0 prints
    assert logs[0][0].replace(str(two), "<out>") == one_out.replace(str(one), "<out>")
    assert "1 failed" in one_out and len(summary_rows(one)) == 8
    assert (two / "summary.csv").read_bytes() == (one / "summary.csv").read_bytes()
    assert files_of(two) == files_of(one)  # every heatmap, overlay, .npy and index.html


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_busy_folder_under_torchrun_is_one_line_and_every_rank_exits_2(tiny_checkpoint, tmp_path):
    """Issue 27: the refusal printed once (rank 0), every rank's exit code 2 in torchrun's report; torchrun itself
    turns any failed worker into its own report and exit 1, which no worker can change (docs/safety.md)."""
    from pieanet.utils.folders import FolderLock

    photos, out, logs = save_photos(tmp_path / "photos", ["a.png"]), tmp_path / "out", tmp_path / "logs"
    out.mkdir()
    (out / "mine.txt").write_text("the user's")
    with FolderLock(out):  # another run holds the folder
        done = subprocess.run(
            torchrun_command(
                "make_heatmap.py",
                ["--input", photos, "--checkpoint", tiny_checkpoint, "--output", out, "--threads", "1"],
                logs,
            ),
            cwd=ROOT,
            env=dict(os.environ, OMP_NUM_THREADS="1"),
            capture_output=True,
            text=True,
            timeout=240,
        )
    ranks = {
        rank: "".join(
            next(logs.glob(f"*/attempt_0/{rank}/{stream}.log")).read_text() for stream in ("stdout", "stderr")
        )
        for rank in (0, 1)
    }
    assert ranks[0].count("another run is using this folder") == 1 and len(ranks[0].strip().splitlines()) == 1
    assert ranks[1].strip() == ""  # rank 1 says nothing
    assert done.returncode == 1  # torchrun's own code for failed workers
    root_cause = done.stderr.split("Root Cause")[1]
    assert "exitcode  : 2 " in root_cause and "Traceback" not in ranks[0] + ranks[1]
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]  # nothing written, the holder's lock removed


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_busy_experiment_folder_under_torchrun_is_one_line_and_every_rank_exits_2(tmp_path):
    """The same for train_wavelet (issue 27): before, each rank printed the refusal."""
    from conftest import TINY_MODEL_CONFIG
    from pieanet.utils.folders import FolderLock
    from test_train import make_dataset, tiny_config

    config = tiny_config(tmp_path, dict(TINY_MODEL_CONFIG), make_dataset(tmp_path / "iea", n_train=4), epochs=1)
    out, logs = tmp_path / "runs" / "tiny", tmp_path / "logs"
    out.mkdir(parents=True)
    with FolderLock(out):
        done = subprocess.run(
            torchrun_command("train_wavelet.py", ["--config", config, "--device", "cpu"], logs),
            cwd=ROOT,
            env=dict(os.environ, OMP_NUM_THREADS="1"),
            capture_output=True,
            text=True,
            timeout=240,
        )
    ranks = {
        rank: "".join(
            next(logs.glob(f"*/attempt_0/{rank}/{stream}.log")).read_text() for stream in ("stdout", "stderr")
        )
        for rank in (0, 1)
    }
    assert [line for line in ranks[0].splitlines() if line.strip()] == [
        f"train_wavelet: {out}: another run is using this folder (it holds .pieanet.lock); wait for it to finish or "
        "choose another folder"
    ]
    assert ranks[1].strip() == "" and done.returncode == 1  # torchrun's own code for failed workers
    assert "exitcode  : 2 " in done.stderr.split("Root Cause")[1] and "exitcode  : -6" not in done.stderr
    assert list(out.iterdir()) == []


def iea40k_dataset(root):
    """Six flat grey photos with their exact labels and scores, one corrupt image and one sample without a label."""
    return flat_iea_dataset(root, (40, 70, 110, 140, 180, 220), ["N1", "P0", "P1"])


@pytest.mark.slow
@pytest.mark.subprocess
def test_evaluate_with_two_processes_reports_the_numbers_of_one(tiny_checkpoint, tmp_path, capsys, one_thread):
    data = iea40k_dataset(tmp_path / "data")
    options = [
        "--data-root",
        data,
        "--csv",
        "valid.csv",
        "--checkpoint",
        tiny_checkpoint,
        "--baseline",
        "zero",
        *one_thread,
    ]

    def outputs(name):
        return ["--json", tmp_path / f"{name}.json", "--markdown", tmp_path / f"{name}.md"]

    code = evaluate.main([str(a) for a in options + outputs("one")])
    one_out = capsys.readouterr().out
    two_code, logs = torchrun("evaluate.py", options + outputs("two"), tmp_path / "logs")
    assert code == 1 and two_code != 0  # two samples fail, one in each shard
    assert "bad_P2.png" in logs[0][1] + logs[1][1] and "nolabel_N2.npy" in logs[0][1] + logs[1][1]
    assert logs[0][0] == one_out and logs[1][0] == ""
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert two == one  # every metric to the last bit, failures in CSV order
    assert one["failed"] == ["bad_P2.png", "nolabel_N2.png"] and one["methods"]["baseline: zero"]["n_images"] == 6
    # the zero map: MAE = mean |128 - grey| / 255, a value no shard alone gives
    assert one["methods"]["baseline: zero"]["mae"] == pytest.approx((88 + 58 + 18 + 12 + 52 + 92) / 255 / 6)
    assert (tmp_path / "two.md").read_text() == (tmp_path / "one.md").read_text()


def children(pid):
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def ok_rows(folder, pattern):
    return [row for part in sorted(folder.glob(pattern)) for row in read_summary(part) if row["status"] == "ok"]


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_killed_run_resumed_equals_an_uninterrupted_run(tiny_checkpoint, tmp_path, capsys, one_thread):
    photos = save_photos(tmp_path / "photos", [f"q{i:02d}.png" for i in range(16)], 96, 128)
    options = ["--input", photos, "--checkpoint", tiny_checkpoint, "--overlay", "--colorbar", "--save-npy", *one_thread]
    whole, resumed = tmp_path / "whole" / "out", tmp_path / "resumed" / "out"
    assert make_heatmap.main([str(a) for a in options + ["--output", whole]]) == 0
    agent = subprocess.Popen(
        torchrun_command("make_heatmap.py", options + ["--output", resumed], tmp_path / "logs"),
        cwd=ROOT,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not resumed.is_dir() or len(ok_rows(resumed, "summary.rank*.csv")) < 3:
        assert agent.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.01)
    workers = children(agent.pid)  # torchrun starts them in sessions of their own
    for pid in workers + [agent.pid]:
        os.kill(pid, signal.SIGKILL)
    agent.wait()
    while any(Path(f"/proc/{pid}").exists() for pid in workers):  # until reaped, they count as running
        assert time.monotonic() < deadline, "the killed workers were not reaped"
        time.sleep(0.01)
    done = {Path(row["file"]).stem for row in ok_rows(resumed, "summary.rank*.csv")}
    assert 3 <= len(done) < 16 and not (resumed / "summary.csv").exists()  # killed halfway, before the merge
    finished = [path for path in resumed.iterdir() if path.name.split("_")[0] in done]
    for path in finished:
        os.utime(path, ns=(10**9, 10**9))  # a rewrite would show whatever the clock's granularity

    capsys.readouterr()
    assert make_heatmap.main([str(a) for a in options + ["--output", resumed, "--resume"]]) == 0
    out = capsys.readouterr().out
    assert f"{16 - len(done)} of {16 - len(done)} images done" in out
    assert f"{len(done)} already done, skipped (--resume)" in out
    assert [path.stat().st_mtime_ns for path in finished] == [10**9] * len(finished)
    assert summary_rows(resumed) == summary_rows(whole) and len(summary_rows(whole)) == 16  # one row per photo
    resumed_files, whole_files = files_of(resumed), files_of(whole)
    del resumed_files["summary.csv"], whole_files["summary.csv"]  # compared by rows above: they are in run order
    assert resumed_files == whole_files  # no part, no temporary file left, every output byte-identical


def test_resume_redoes_every_photo_that_is_not_complete(tiny_checkpoint, tmp_path, capsys):
    photos = save_photos(tmp_path / "photos", ["a.png", "b.png", "c.png", "d.png"])
    out = tmp_path / "out"
    argv = [
        str(a)
        for a in ["--input", photos, "--output", out, "--checkpoint", tiny_checkpoint, "--overlay", "--no-report"]
    ]
    assert make_heatmap.main(argv) == 0
    rows = {row["file"]: row for row in read_summary(out / "summary.csv")}
    other = dict(
        rows["a.png"], file="elsewhere/x.png", source="../elsewhere/x.png", output="elsewhere/x"
    )  # a row of another input: kept as it is
    # b's outputs without a row (killed between them and its row), c's overlay missing, d failed earlier
    write_summary(
        out / "summary.csv",
        [other, rows["a.png"], rows["c.png"], dict(rows["d.png"], status="failed", error="earlier")],
    )
    (out / "c_overlay.png").unlink()
    for path in out.glob("*.png"):
        os.utime(path, ns=(10**9, 10**9))
    capsys.readouterr()
    assert make_heatmap.main(argv + ["--resume"]) == 0
    assert "3 of 3 images done" in capsys.readouterr().out
    kept = [path.stat().st_mtime_ns == 10**9 for path in sorted(out.glob("*.png"))]
    assert kept == [True, True] + [False] * 6  # a's heatmap and overlay untouched; b, c, d written again
    after = read_summary(out / "summary.csv")
    assert after[:2] == [other, rows["a.png"]]
    assert sorted(row["file"] for row in after[2:]) == ["b.png", "c.png", "d.png"]
    assert all(row == rows[row["file"]] for row in after[2:])  # the same numbers again, once each
