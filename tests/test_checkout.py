"""The checkout as Git for Windows and Windows' zip extractors leave it: no symlink is tracked, a clone made with
core.symlinks=false and a `git archive` zip unpacked with Python's zipfile run the main job and collect the suite,
and each file of the package is one module under one name. The clone and the zip hold the committed HEAD."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLAT_SCRIPTS = sorted(path.name for path in ROOT.glob("*.py") if path.name != "setup.py")


def git(*args, cwd=ROOT, **kwargs):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=True, **kwargs)


@pytest.fixture(scope="module")
def head():
    """The commit a clone would get; skipped outside a git checkout of its own (e.g. an unpacked archive)."""
    try:
        top = git("rev-parse", "--show-toplevel", text=True).stdout.strip()
        commit = git("rev-parse", "HEAD", text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (or git is not installed)")
    if Path(top).resolve() != ROOT:
        pytest.skip(f"{ROOT} is not the top of its own git checkout")
    return commit


def python(*args, cwd):
    """``python ARGS`` in ``cwd`` as a user would run it there: nothing of this checkout on the path."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, env=env)


def test_no_symlink_is_tracked(head):
    listed = git("ls-files", "-s", "-z").stdout.split(b"\0")
    assert [entry for entry in listed if entry.startswith(b"120000")] == []


def test_each_file_is_reached_by_one_path():
    """What ruff, mypy and other tools walking the checkout see: no .py file under two paths (links)."""
    seen = {}
    for folder, folders, files in os.walk(ROOT, followlinks=True):
        folders[:] = [
            name
            for name in folders
            if not name.startswith(".")
            and name not in ("__pycache__", "build")
            and not (Path(folder) / name / "pyvenv.cfg").exists()
        ]
        for name in files:
            if name.endswith(".py"):
                seen.setdefault(os.path.realpath(Path(folder) / name), []).append(Path(folder, name))
    assert {path: paths for path, paths in seen.items() if len(paths) > 1} == {}


def test_flat_scripts_load_each_module_under_one_name():
    """`python make_heatmap.py` and the other scripts import the project as pieanet.*: no module is loaded twice
    (as models.x and pieanet.models.x) and no top-level models / utils / datasets is made."""
    code = (
        "import runpy, sys\n"
        f"for script in {FLAT_SCRIPTS!r}:\n"
        "    sys.argv = [script, '--help']\n"
        "    try:\n"
        "        runpy.run_path(script, run_name='__main__')\n"
        "    except SystemExit:\n"
        "        pass\n"
        "files = {}\n"
        "for name, module in list(sys.modules.items()):\n"
        f"    if str(getattr(module, '__file__', None)).startswith({str(ROOT)!r}):\n"
        "        files.setdefault(module.__file__, []).append(name)\n"
        "print('TWICE', sorted(names for names in files.values() if len(names) > 1), file=sys.stderr)\n"
        "print('TOP', sorted(n for n in sys.modules if n.split('.')[0] in "
        "('models', 'utils', 'datasets', 'configs', 'checkpoints')), file=sys.stderr)\n"
        "print('PIEANET', sorted(n for n in sys.modules if n.startswith('pieanet.'))[:3], file=sys.stderr)\n"
    )
    done = python("-c", f"import sys; sys.path.insert(0, {str(ROOT)!r})\n" + code, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = dict(
        line.split(" ", 1) for line in done.stderr.splitlines() if line.split(" ")[0] in ("TWICE", "TOP", "PIEANET")
    )
    assert lines["TWICE"] == "[]" and lines["TOP"] == "[]"
    assert lines["PIEANET"] != "[]"


def run_main_job(folder):
    """`python make_heatmap.py` in ``folder`` (a copy of the project): every sample photo gets its heatmap."""
    photos = sorted(path.stem for path in (folder / "img_to_pred").glob("*.jpg"))
    assert photos, "no sample photos in img_to_pred/"
    done = python("make_heatmap.py", "--threads", "1", cwd=folder)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(path.name for path in (folder / "outputs").glob("*_exposure.png")) == [
        f"{stem}_exposure.png" for stem in photos
    ]


@pytest.mark.slow
def test_clone_without_symlinks_runs_the_main_job_and_collects_the_suite(head, tmp_path):
    clone = tmp_path / "clone"
    git("-c", "core.symlinks=false", "clone", "-q", "--no-hardlinks", str(ROOT), str(clone))
    git("checkout", "-q", head, cwd=clone)
    run_main_job(clone)
    collected = python("-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", cwd=clone)
    assert collected.returncode == 0, collected.stdout[-2000:] + collected.stderr[-2000:]
    assert " collected" in collected.stdout or "tests collected" in collected.stdout


@pytest.mark.slow
def test_git_archive_zip_unpacked_by_zipfile_runs_the_main_job(head, tmp_path):
    archive = tmp_path / "p-iea.zip"
    git("archive", "--format", "zip", "--prefix", "p-iea/", "-o", str(archive), head)
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(tmp_path)  # as Windows' extractors do: a link would become a small text file
    run_main_job(tmp_path / "p-iea")
