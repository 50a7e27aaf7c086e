"""Issue 27, the tool's own bookkeeping files: ownership of an output is proven by its recorded size and content hash
(a planted line in .pieanet-outputs.csv or summary.csv proves nothing), ledger entries outside the folder are
refused, the summary, ledger and lock are regular files or the run is refused in one line (exit 2, no hang), and a
summary.csv replaced or truncated during a run is rewritten whole from the run's records."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import save_photo
from pieanet import make_heatmap
from pieanet.heatmaps import processing
from pieanet.heatmaps.summary import read_summary

LEDGER_NAME = ".pieanet-outputs.csv"

ROOT = Path(__file__).resolve().parents[1]
MINE = {"a_overlay.png": b"my own overlay", "a_residual.npy": b"my own numbers", "a_exposure.png": b"my own map"}


def heatmap(argv, capsys):
    code = make_heatmap.main([str(a) for a in argv] + ["--threads", "1"])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def folders(tmp_path):
    save_photo(tmp_path / "in" / "a.png", 1)
    (tmp_path / "out").mkdir()
    return tmp_path / "in", tmp_path / "out"


def users_files(out):
    for name, data in MINE.items():
        (out / name).write_bytes(data)


@pytest.mark.parametrize(
    "planted",
    [
        {LEDGER_NAME: "a,../in/a.png\n"},
        {LEDGER_NAME: "a,../in/a.png\na_overlay.png,14,sha256:" + "0" * 64 + "\n"},  # a made-up record
        {
            "summary.csv": "file,width,height,mean_residual,mean_abs_residual,pct_over,pct_under,score,stops,vmax,"
            "pct_raw_clipped,status,error,source,output,settings,photo_sha256,output_kinds\n"
            "a.png,32,24,0,0,0,0,10,0,1,,ok,,../in/a.png,a,,,exposure.png overlay.png residual.npy\n"
        },
    ],
)
def test_a_planted_line_proves_no_ownership(planted, folders, tiny_checkpoint, capsys):
    photos, out = folders
    users_files(out)
    for name, text in planted.items():
        (out / name).write_text(text)
    code, _, err = heatmap(["--input", photos, "--output", out, "--checkpoint", tiny_checkpoint, "--no-report"], capsys)
    assert code == 0, err
    assert {name: (out / name).read_bytes() for name in MINE} == MINE
    assert (out / "a_png_exposure.png").is_file()


def test_the_tools_own_outputs_are_still_replaced_and_cleaned_up(folders, tiny_checkpoint, capsys):
    photos, out = folders
    argv = ["--input", photos, "--output", out, "--checkpoint", tiny_checkpoint, "--no-report"]
    assert heatmap(argv + ["--overlay", "--save-npy"], capsys)[0] == 0
    assert heatmap(argv, capsys)[0] == 0  # the overlay and map of the first run are the tool's: removed
    from pieanet.heatmaps.ledger import OutputLedger, read_ledger

    assert sorted(p.name for p in out.glob("a_*")) == ["a_exposure.png"]
    _, written = read_ledger(out)
    assert set(written) == {"a_exposure.png"} and OutputLedger(out).owns(out / "a_exposure.png")
    (out / "a_exposure.png").write_bytes(b"edited by the user")  # no longer what the tool wrote
    assert not OutputLedger(out).owns(out / "a_exposure.png")
    assert heatmap(argv + ["--overlay"], capsys)[0] == 0
    assert (out / "a_exposure.png").read_bytes() == b"edited by the user"
    assert (out / "a_png_exposure.png").is_file() and (out / "a_png_overlay.png").is_file()


def test_ledger_entries_outside_the_folder_are_refused(tmp_path):
    from pieanet.heatmaps.ledger import read_ledger

    (tmp_path / LEDGER_NAME).write_text(
        "../escaped,../in/a.png\n/abs/b,../in/b.png\nok,../in/c.png\n../x.png,3,sha256:00\nsub/y.png,3,sha256:11\n"
    )
    entries, written = read_ledger(tmp_path)
    assert entries == {"ok": "../in/c.png"} and written == {"sub/y.png": (3, "sha256:11")}


@pytest.mark.parametrize("name", [LEDGER_NAME, "summary.csv", ".pieanet.lock"])
@pytest.mark.parametrize("kind", ["symlink", "folder"])
def test_a_bookkeeping_file_of_another_type_refuses_the_run(name, kind, folders, tiny_checkpoint, capsys):
    photos, out = folders
    target = out.parent / "elsewhere.csv"
    target.write_text("")
    if kind == "symlink":
        (out / name).symlink_to(target)
    else:
        (out / name).mkdir()
    code, _, err = heatmap(["--input", photos, "--output", out, "--checkpoint", tiny_checkpoint, "--no-report"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and name in err and "Traceback" not in err, err
    assert not list(out.glob("a*")) and target.read_text() == ""


@pytest.mark.subprocess
@pytest.mark.parametrize("name", [LEDGER_NAME, "summary.csv", ".pieanet.lock"])
def test_a_fifo_as_a_bookkeeping_file_is_refused_not_waited_on(name, folders, tiny_checkpoint):
    photos, out = folders
    os.mkfifo(out / name)
    run = subprocess.run(
        [
            sys.executable,
            ROOT / "make_heatmap.py",
            "--input",
            photos,
            "--output",
            out,
            "--checkpoint",
            tiny_checkpoint,
            "--no-report",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "FIFO" in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("change", ["replaced", "truncated"])
def test_a_summary_replaced_during_the_run_keeps_every_row(change, tmp_path, tiny_checkpoint, capsys, monkeypatch):
    for i in range(6):
        save_photo(tmp_path / "in" / f"p{i}.png", seed=i)
    out = tmp_path / "out"
    real, calls = processing.write_outputs, []

    def editor_saves_during_the_fourth(*args):
        calls.append(1)
        if len(calls) == 4:
            summary = out / "summary.csv"
            header_and_first = "".join(summary.read_text().splitlines(keepends=True)[:2])
            if change == "replaced":  # an editor's save: a new file renamed onto the name
                (out / "saved.tmp").write_text(header_and_first)
                os.replace(out / "saved.tmp", summary)
            else:
                summary.write_text(header_and_first)
        return real(*args)

    monkeypatch.setattr(processing, "write_outputs", editor_saves_during_the_fourth)
    code, _, err = heatmap(["--input", tmp_path / "in", "--output", out, "--checkpoint", tiny_checkpoint], capsys)
    assert code == 0, err
    rows = read_summary(out / "summary.csv")
    assert [row["file"] for row in rows] == [f"p{i}.png" for i in range(6)]
    assert "replaced or truncated by another program during the run; rewritten whole" in err
    assert all(f"p{i}.png" in (out / "index.html").read_text() for i in range(6))


def test_an_output_path_with_no_room_for_a_file_name_is_refused_before_any_work(
    folders, tiny_checkpoint, capsys, monkeypatch
):
    photos, out = folders
    monkeypatch.chdir(out.parent)
    (out.parent / "x").mkdir()
    long_output = "x/../" * 818 + "out"  # 4,093 characters: the folder exists, none of its files can
    code, _, err = heatmap(["--input", photos, "--output", long_output, "--checkpoint", tiny_checkpoint], capsys)
    assert code == 2 and "4,096-byte limit" in err and len(err.strip().splitlines()) == 1, err[-300:]
    assert list(out.iterdir()) == []


def test_a_ledger_that_cannot_be_tidied_is_named_and_the_run_still_reports(
    folders, tiny_checkpoint, capsys, monkeypatch
):
    from pieanet.heatmaps import ledger

    photos, out = folders
    real = ledger.atomic_write

    def full_disk(path):
        if path.name == LEDGER_NAME:
            raise OSError(28, "No space left on device")
        return real(path)

    monkeypatch.setattr(ledger, "atomic_write", full_disk)
    code, printed, err = heatmap(["--input", photos, "--output", out, "--checkpoint", tiny_checkpoint], capsys)
    assert code == 0 and f"{LEDGER_NAME}: could not be tidied (No space left on device)" in err
    assert "1 of 1 images done" in printed and (out / "index.html").is_file()
