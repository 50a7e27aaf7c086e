"""Issue 18, files and folders: the tools never delete or overwrite a file they did not make, never write or delete
outside the output (or experiment) folder, run one at a time per folder, isolate every backend's failure to its photo,
refuse a tampered training state in their own words, leave a run folder untouched by a refused resume, and --resume
redoes a photo whose content changed. Each test sets up what a user (or someone planting links) would and checks the
files on disk afterwards."""

import fcntl
import os
import shutil

import pytest
import torch
from PIL import Image

from pieanet import compare_methods
from pieanet import make_heatmap
from pieanet import train_wavelet
from pieanet.heatmaps.summary import read_summary
from test_train import make_dataset, tiny_config
from conftest import save_photo

KINDS = ("exposure.png", "overlay.png", "colorbar.png", "residual.npy")


def heatmap(argv, capsys):
    code = make_heatmap.main([str(a) for a in argv] + ["--threads", "1"])
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(folder):
    """{relative path: bytes} of every file under ``folder`` (links not followed)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def hold_lock(folder):
    """Lock ``folder`` as another run would (flock on its lock file); returns the open file (closing releases)."""
    f = open(folder / ".pieanet.lock", "w")
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return f


# ------------------------------------------------------------------------------------------------ 1 ownership
def test_a_users_files_with_an_output_name_are_never_removed_or_overwritten(tiny_checkpoint, tmp_path, capsys):
    photos = tmp_path / "in"
    save_photo(photos / "photo.jpg", 1)
    out = tmp_path / "out"
    out.mkdir()
    mine = {
        "photo_overlay.png": b"my own overlay",
        "photo_residual.npy": b"my own numbers",
        "photo_exposure.png": b"my own exposure map",
    }
    for name, data in mine.items():
        (out / name).write_bytes(data)
    code, _, err = heatmap(["--input", photos, "--output", out, "--checkpoint", tiny_checkpoint, "--no-report"], capsys)
    assert code == 0, err
    assert {name: (out / name).read_bytes() for name in mine} == mine
    (row,) = read_summary(out / "summary.csv")
    assert row["output"] == "photo_jpg" and (out / "photo_jpg_exposure.png").is_file()
    # the tool's own files (recorded in summary.csv) are still replaced and cleaned up by a later run
    code, _, err = heatmap(
        ["--input", photos, "--output", out, "--checkpoint", tiny_checkpoint, "--no-report", "--overlay"], capsys
    )
    assert code == 0, err
    assert (out / "photo_jpg_overlay.png").is_file() and {n: (out / n).read_bytes() for n in mine} == mine


def test_a_single_photo_whose_folder_is_the_output_is_refused(tiny_checkpoint, tmp_path, capsys):
    photos = tmp_path / "photos"
    save_photo(photos / "beach.png", 2)
    (photos / "beach_exposure.png").write_bytes(b"the user's own")
    before = snapshot(photos)
    code, _, err = heatmap(
        ["--input", photos / "beach.png", "--output", photos, "--checkpoint", tiny_checkpoint], capsys
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and "input photo's folder" in err
    assert snapshot(photos) == before


def test_a_users_index_html_is_never_replaced_but_the_tools_own_is(tiny_checkpoint, tmp_path, capsys):
    photos = tmp_path / "in"
    save_photo(photos / "a.png", 3)
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.html").write_text("<html>my site</html>")
    code, _, err = heatmap(["--input", photos, "--output", out, "--checkpoint", tiny_checkpoint], capsys)
    assert code == 2 and "index.html" in err and len(err.strip().splitlines()) == 1
    assert (out / "index.html").read_text() == "<html>my site</html>" and not (out / "summary.csv").exists()
    (out / "index.html").unlink()
    assert heatmap(["--input", photos, "--output", out, "--checkpoint", tiny_checkpoint], capsys)[0] == 0
    first = (out / "index.html").read_bytes()
    save_photo(photos / "b.png", 4)
    assert heatmap(["--input", photos, "--output", out, "--checkpoint", tiny_checkpoint], capsys)[0] == 0
    assert (out / "index.html").read_bytes() != first and b"b.png" in (out / "index.html").read_bytes()


# ------------------------------------------------------------------------------------------------ 2 containment
def test_a_linked_sub_folder_in_the_output_is_never_written_or_cleaned_through(tiny_checkpoint, tmp_path, capsys):
    photos = tmp_path / "in"
    save_photo(photos / "a.png", 5)
    save_photo(photos / "sub" / "b.png", 6)
    victim = tmp_path / "victim"
    victim.mkdir()
    for kind in KINDS:
        (victim / f"b_{kind}").write_bytes(b"victim " + kind.encode())
    before = snapshot(victim)
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to(victim, target_is_directory=True)
    code, _, err = heatmap(
        [
            "--input",
            photos,
            "--recursive",
            "--output",
            out,
            "--checkpoint",
            tiny_checkpoint,
            "--overlay",
            "--colorbar",
            "--save-npy",
            "--no-report",
        ],
        capsys,
    )
    assert code == 1 and "symbolic link" in err
    assert snapshot(victim) == before  # nothing removed, replaced or added there
    rows = {row["file"]: row for row in read_summary(out / "summary.csv")}
    assert rows["a.png"]["status"] == "ok" and rows["sub/b.png"]["status"] == "failed"


def test_a_planted_summary_link_is_refused_not_followed(tiny_checkpoint, tmp_path, capsys):
    photos = tmp_path / "in"
    save_photo(photos / "a.png", 7)
    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / "elsewhere.csv"
    (out / "summary.csv").symlink_to(target)  # dangling: O_CREAT would make it
    code, _, err = heatmap(["--input", photos, "--output", out, "--checkpoint", tiny_checkpoint, "--no-report"], capsys)
    assert code == 2 and "symbolic link" in err and not target.exists()


def test_recursive_reports_a_linked_sub_folder_it_skips(tiny_checkpoint, tmp_path, capsys):
    photos = tmp_path / "in"
    save_photo(photos / "a.png", 8)
    save_photo(tmp_path / "other" / "c.png", 9)
    (photos / "linked").symlink_to(tmp_path / "other", target_is_directory=True)
    code, _, err = heatmap(
        [
            "--input",
            photos,
            "--recursive",
            "--output",
            tmp_path / "out",
            "--checkpoint",
            tiny_checkpoint,
            "--no-report",
        ],
        capsys,
    )
    assert code == 1 and f"{photos / 'linked'}: a symbolic link to a folder; skipped" in err


def test_a_planted_train_log_link_is_refused(tmp_path, tiny_model_config, train_data, capsys):
    config = tiny_config(tmp_path, tiny_model_config, train_data, epochs=1)
    out = tmp_path / "runs" / "tiny"
    out.mkdir(parents=True)
    target = tmp_path / "elsewhere.log"
    (out / "train.log").symlink_to(target)
    assert train_wavelet.main(["--config", str(config), "--device", "cpu", "train.max_steps=1"]) == 2
    assert "symbolic link" in capsys.readouterr().err and not target.exists()


# ------------------------------------------------------------------------------------------------ 3 one run per folder
def test_a_second_run_into_a_locked_output_folder_stops_in_one_line(tiny_checkpoint, tmp_path, capsys):
    photos = tmp_path / "in"
    save_photo(photos / "a.png", 10)
    out = tmp_path / "out"
    out.mkdir()
    lock = hold_lock(out)
    try:
        code, _, err = heatmap(["--input", photos, "--output", out, "--checkpoint", tiny_checkpoint], capsys)
    finally:
        lock.close()
    assert code == 2 and err.strip().endswith("choose another folder") and "another run is using" in err
    assert sorted(p.name for p in out.iterdir()) == [".pieanet.lock"]  # nothing written
    assert heatmap(["--input", photos, "--output", out, "--checkpoint", tiny_checkpoint], capsys)[0] == 0
    assert not (out / ".pieanet.lock").exists()  # released and removed


def test_a_second_training_run_under_one_name_stops_in_one_line(tmp_path, tiny_model_config, train_data, capsys):
    config = tiny_config(tmp_path, tiny_model_config, train_data, epochs=1)
    out = tmp_path / "runs" / "tiny"
    out.mkdir(parents=True)
    lock = hold_lock(out)
    try:
        code = train_wavelet.main(["--config", str(config), "--device", "cpu", "train.max_steps=1"])
    finally:
        lock.close()
    assert code == 2 and "another run is using this folder" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [".pieanet.lock"]


# ------------------------------------------------------------------------------------------------ 4 backends
def test_an_onnxruntime_error_is_one_photos_failure(tmp_path, capsys, monkeypatch):
    onnxruntime = pytest.importorskip("onnxruntime")
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    real_run = onnxruntime.InferenceSession.run

    def run(self, outputs, feed, *rest):
        if feed["image"].shape[-1] == 48:
            raise Fail("Failed to allocate memory for requested buffer of size 123456789")
        return real_run(self, outputs, feed, *rest)

    monkeypatch.setattr(onnxruntime.InferenceSession, "run", run)
    photos = tmp_path / "in"
    save_photo(photos / "a.png", 11)
    save_photo(photos / "b.png", 12, width=48)
    save_photo(photos / "c.png", 13)
    out = tmp_path / "out"
    code, _, err = heatmap(["--input", photos, "--output", out, "--backend", "onnxruntime", "--no-report"], capsys)
    assert code == 1
    assert err.strip() == (
        f"make_heatmap: {photos / 'b.png'}: inference failed (onnxruntime: Failed to allocate "
        "memory for requested buffer of size 123456789)"
    )
    status = {row["file"]: row["status"] for row in read_summary(out / "summary.csv")}
    assert status == {"a.png": "ok", "b.png": "failed", "c.png": "ok"}


# ------------------------------------------------------------------------------------------------ 5, 9 training state
@pytest.fixture(scope="module")
def train_data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("iea"), n_train=8)


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory, tiny_model_config, train_data):
    """(config, run folder) of a run stopped after one step (last.pt saved), kept as a template."""
    root = tmp_path_factory.mktemp("stopped")
    config = tiny_config(root, tiny_model_config, train_data, epochs=1)
    assert train_wavelet.main(["--config", str(config), "--device", "cpu", "train.max_steps=1"]) == 0
    return config, root / "runs" / "tiny"


def copy_run(stopped_run, tmp_path, tiny_model_config, train_data, **train):
    config = tiny_config(tmp_path, tiny_model_config, train_data, epochs=1, **train)
    out = tmp_path / "runs" / "tiny"
    shutil.copytree(stopped_run[1], out)
    return config, out


def resume(config, *overrides):
    return train_wavelet.main(["--config", str(config), "--device", "cpu", "--resume", *overrides])


def test_a_tampered_last_pt_is_refused_in_the_projects_words(
    stopped_run, tmp_path, tiny_model_config, train_data, capsys
):
    import argparse

    config, out = copy_run(stopped_run, tmp_path, tiny_model_config, train_data)
    torch.save({"model": argparse.Namespace(payload="os.system")}, out / "last.pt")  # not a tensor or container
    assert resume(config) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "refused" in err and "weights_only" not in err


@pytest.mark.parametrize(
    "change, says",
    [
        (lambda state: state.pop("global_step"), "counter global_step is missing"),
        (lambda state: state.update(epoch="1"), "counter epoch is str 1; expected an integer >= 0"),
        (lambda state: state.update(best_mae=None), "counter best_mae is NoneType None; expected a number"),
        (lambda state: state.update(config=[1]), "its config is a list; expected a training state"),
    ],
)
def test_missing_or_mistyped_counters_in_last_pt_are_one_line(
    stopped_run, tmp_path, tiny_model_config, train_data, capsys, change, says
):
    config, out = copy_run(stopped_run, tmp_path, tiny_model_config, train_data)
    state = torch.load(out / "last.pt", weights_only=True)
    change(state)
    torch.save(state, out / "last.pt")
    assert resume(config) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and says in err


def test_a_refused_resume_leaves_the_run_folder_untouched(stopped_run, tmp_path, tiny_model_config, train_data, capsys):
    config, out = copy_run(stopped_run, tmp_path, tiny_model_config, train_data)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir() if p.is_file()}
    assert resume(config, "model.width=16") == 2
    assert "does not fit this config" in capsys.readouterr().err
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir() if p.is_file()} == before


def test_last_safetensors_is_a_run_file_and_overwrite_removes_every_weight_file(
    stopped_run, tmp_path, tiny_model_config, train_data, capsys
):
    config = tiny_config(tmp_path, tiny_model_config, train_data, epochs=1)
    out = tmp_path / "runs" / "tiny"
    out.mkdir(parents=True)
    (out / "last.safetensors").write_bytes(b"weights trained for a week")
    assert train_wavelet.main(["--config", str(config), "--device", "cpu", "train.max_steps=1"]) == 2
    assert "last.safetensors" in capsys.readouterr().err
    assert (out / "last.safetensors").read_bytes() == b"weights trained for a week"
    (out / "best.safetensors").write_bytes(b"old best")
    assert train_wavelet.main(["--config", str(config), "--device", "cpu", "--overwrite", "train.max_steps=1"]) == 0
    # stopped inside the first epoch, so this run wrote no weights file of its own: the old ones are gone
    assert not (out / "last.safetensors").exists() and not (out / "best.safetensors").exists()


# ------------------------------------------------------------------------------------------------ 11 folder semantics
@pytest.mark.parametrize("height, width", [(40, 48), (24, 32)])
def test_resume_redoes_a_photo_replaced_by_another(tiny_checkpoint, tmp_path, capsys, height, width):
    photos = tmp_path / "in"
    save_photo(photos / "a.png", 14)
    save_photo(photos / "b.png", 15)
    out = tmp_path / "out"
    argv = ["--input", photos, "--output", out, "--checkpoint", tiny_checkpoint, "--no-report"]
    assert heatmap(argv, capsys)[0] == 0
    b_map = (out / "b_exposure.png").read_bytes()
    save_photo(photos / "a.png", 16, height=height, width=width)  # same name, other photo (other size or not)
    code, stdout, err = heatmap(argv + ["--resume"], capsys)
    assert code == 0, err
    assert "1 already done, skipped" in stdout
    rows = {row["file"]: row for row in read_summary(out / "summary.csv")}
    assert len(rows) == 2 and (rows["a.png"]["width"], rows["a.png"]["height"]) == (str(width), str(height))
    with Image.open(out / "a_exposure.png") as im:
        assert im.size == (width, height)
    assert (out / "b_exposure.png").read_bytes() == b_map


def test_compare_methods_refuses_an_output_in_a_method_folder(tmp_path, capsys):
    for method in ("m1", "m2"):
        save_photo(tmp_path / method / "x.png", 17)
    for output in (tmp_path / "m1", tmp_path / "m2" / "report"):
        before = snapshot(tmp_path)
        code = compare_methods.main(
            ["--inputs", str(tmp_path / "m1"), str(tmp_path / "m2"), "--output", str(output), "--threads", "1"]
        )
        err = capsys.readouterr().err
        assert code == 2 and "output folder is (or is inside) the input folder" in err
        assert snapshot(tmp_path) == before and not (tmp_path / "m2" / "report").exists()


# ------------------------------------------------------------------------------------------------ the lock itself
class FakeGroup:
    """A torchrun rank as folders.locked sees it: its rank and what gather returns (every rank's value)."""

    def __init__(self, rank, others):
        self.rank, self.others = rank, others

    @property
    def is_main(self):
        return self.rank == 0

    def gather(self, value):
        return [value] + self.others if self.is_main else self.others[: self.rank] + [value] + self.others[self.rank :]


def test_ranks_of_one_run_share_the_lock_and_all_stop_when_another_run_holds_it(tmp_path):
    from pieanet.utils import folders

    with folders.locked(tmp_path, FakeGroup(0, [None])):
        assert (tmp_path / ".pieanet.lock").exists()
        with folders.locked(tmp_path, FakeGroup(1, [None])):  # rank 1 of the same run takes no lock of its own
            pass
        with pytest.raises(folders.FolderBusy, match="another run is using this folder"):
            with folders.locked(tmp_path):  # another run
                pass
    busy = f"{tmp_path}: another run is using this folder"
    with pytest.raises(folders.FolderBusy, match="another run"):  # rank 1 learns rank 0 could not lock
        with folders.locked(tmp_path, FakeGroup(1, [busy])):
            pass
    assert not (tmp_path / ".pieanet.lock").exists()


class RankAtBarrier:
    """A torchrun rank as cli.refused_together sees it; records what stderr held when the barrier was reached."""

    def __init__(self, rank, capsys):
        self.rank, self.capsys, self.seen_at_barrier = rank, capsys, None

    distributed = True

    @property
    def is_main(self):
        return self.rank == 0

    def barrier(self):
        self.seen_at_barrier = self.capsys.readouterr().err


@pytest.mark.parametrize("rank", [0, 1])
def test_a_refusal_every_rank_shares_is_printed_by_rank_0_before_all_exit_2(rank, tmp_path, capsys):
    """Issue 27: under torchrun, a busy folder was printed once per rank; rank 0's line must be out before the
    barrier (torchrun stops the other ranks as soon as one exits)."""
    from pieanet.utils import cli, folders

    group = RankAtBarrier(rank, capsys)
    with pytest.raises(SystemExit) as stopped:
        with cli.refused_together("make_heatmap", group):
            raise folders.FolderBusy(f"{tmp_path}: another run is using this folder")
    assert stopped.value.code == 2
    lines = [line for line in group.seen_at_barrier.splitlines() if line]
    assert lines == ([f"make_heatmap: {tmp_path}: another run is using this folder"] if rank == 0 else [])
    assert capsys.readouterr().err == ""


class OneProcess:
    distributed, is_main = False, True


def test_one_process_keeps_its_refusal_as_an_error(tmp_path):
    from pieanet.utils import cli, folders

    with pytest.raises(folders.FolderBusy):
        with cli.refused_together("make_heatmap", OneProcess()):
            raise folders.FolderBusy(f"{tmp_path}: another run is using this folder")


def test_without_fcntl_or_msvcrt_an_exclusive_lock_file_does_the_same(tmp_path, monkeypatch):
    from pieanet.utils import folders

    monkeypatch.setattr(folders, "fcntl", None)
    monkeypatch.setattr(folders, "msvcrt", None)
    with folders.FolderLock(tmp_path):
        with pytest.raises(folders.FolderBusy):
            folders.FolderLock(tmp_path).acquire()
    assert not (tmp_path / ".pieanet.lock").exists()
    with folders.FolderLock(tmp_path):  # free again
        pass
    (tmp_path / ".pieanet.lock").write_text("999999999")  # a killed run's, whose process is gone
    with folders.FolderLock(tmp_path):
        assert (tmp_path / ".pieanet.lock").read_text() == str(os.getpid())
