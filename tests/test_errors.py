"""One error path (utils/errors.py): every project error carries its exit code, one function maps an exception to
(exit code, one line), --debug / P_IEA_DEBUG=1 show the traceback with its cause, and the summary and report
modules load without the command line or torch."""

import ast
import errno
import importlib
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch._utils import ExceptionWrapper

from pieanet.utils import errors
from pieanet.utils.errors import PieaError, outcome
from pieanet.utils.safety import first_line

ROOT = Path(__file__).resolve().parents[1]
# (module, class, exit code, the other base that existing `except` clauses rely on)
PROJECT_ERRORS = [
    ("pieanet.utils.errors", "UsageError", 2, None),
    ("pieanet.utils.cli", "UsageError", 2, None),
    ("pieanet.models.loading", "CheckpointError", 2, ValueError),
    ("pieanet.models.efficientnet_lite", "BackboneWeightsError", 2, ValueError),
    ("pieanet.datasets.iea40k", "DatasetError", 2, ValueError),
    ("pieanet.datasets.teacher", "TeacherError", 2, ValueError),
    ("pieanet.utils.image_io", "ImageLoadError", 2, ValueError),
    ("pieanet.utils.safety", "TextFileError", 2, ValueError),
    ("pieanet.utils.config", "ConfigError", 2, ValueError),
    ("pieanet.scoring.rules", "RuleError", 2, ValueError),
    ("pieanet.utils.well_exposed", "FolderError", 2, ValueError),
    ("pieanet.heatmaps.summary", "UnreadableSummary", 2, None),
    ("pieanet.heatmaps.summary", "SummaryError", 1, None),
    ("pieanet.heatmaps.report", "ReportError", 2, None),
    ("pieanet.utils.folders", "FolderBusy", 2, None),
    ("pieanet.utils.folders", "OutsideFolder", 1, OSError),
    ("pieanet.utils.folders", "WrongFileType", 2, None),
    ("pieanet.utils.arrays", "ArrayFileError", 2, ValueError),
    ("pieanet.training.errors", "SetupError", 2, None),
    ("pieanet.training.errors", "TrainingError", 1, None),
    ("pieanet.exporting", "CheckFailed", 1, None),
]
HINTS = {"memory": "try less", "interrupted": "kept", "os": "resume"}


@pytest.mark.parametrize("module, name, code, other", PROJECT_ERRORS)
def test_each_project_error_derives_from_the_base_with_its_exit_code(module, name, code, other):
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, PieaError) and cls.exit_code == code
    if other is not None:
        assert issubclass(cls, other)


def test_every_error_class_of_the_project_is_listed():
    """A new exception class in the tools, pieanet/, models, datasets or utils (read from the source) must be listed
    above, so it is checked against the base."""
    listed = {(module, name) for module, name, _, _ in PROJECT_ERRORS} | {("pieanet.utils.errors", "PieaError")}
    found = set()
    sources = [
        *ROOT.glob("*.py"),
        *ROOT.glob("utils/*.py"),
        *ROOT.glob("models/*.py"),
        *ROOT.glob("datasets/*.py"),
        *ROOT.glob("pieanet/**/*.py"),
    ]
    for path in sources:
        parts = path.relative_to(ROOT).with_suffix("").parts
        module = ".".join(parts if parts[0] == "pieanet" else ("pieanet", *parts)).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            bases = [ast.unparse(base).rsplit(".", 1)[-1] for base in getattr(node, "bases", [])]
            if isinstance(node, ast.ClassDef) and any(
                base.endswith(("Error", "Exception", "Busy", "Failed")) for base in bases
            ):
                found.add((module, node.name))
    assert found - listed == set()
    assert {(module, name) for module, name in listed if module != "pieanet.utils.cli"} <= found


def test_the_cli_usage_error_is_the_one_in_errors():
    from pieanet.utils import cli

    assert cli.UsageError is errors.UsageError and cli.EXIT_USAGE == errors.EXIT_USAGE == 2


@pytest.mark.parametrize(
    "error, expected",
    [
        (errors.UsageError("--size 3: below 16"), (2, "--size 3: below 16")),
        (PieaError("stopped"), (1, "stopped")),
        # the whole message, control characters (a file name's line break, an escape sequence) made visible
        (errors.UsageError("a\nb.png: \x1b[31mred"), (2, "a\\x0ab.png: \\x1b[31mred")),
        (KeyboardInterrupt(), (130, "interrupted; kept")),
        (BrokenPipeError(errno.EPIPE, "Broken pipe"), (141, None)),
        (MemoryError(), (1, "out of memory; try less")),
        (MemoryError("cannot allocate 8 GB"), (1, "out of memory (cannot allocate 8 GB); try less")),
        (
            torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
            (1, "out of memory (CUDA out of memory. Tried to allocate 20.00 GiB); try less"),
        ),
        (
            OSError(errno.ENOSPC, "No space left on device", "out/a.png"),
            (1, "out/a.png: No space left on device; resume"),
        ),
        (OSError("disk gone"), (1, "disk gone; resume")),
    ],
)
def test_outcome_maps_each_kind_to_its_code_and_one_line(error, expected):
    assert outcome(error, HINTS) == expected


def test_outcome_of_the_other_errors():
    from pieanet.utils.folders import OutsideFolder

    outside = OutsideFolder(errno.EXDEV, "outside the output folder", "out/../x.png")
    assert outcome(outside) == (1, "out/../x.png: outside the output folder")  # an OSError, shown as one
    assert outcome(ValueError("a bug")) is None  # not a project error: a bug keeps its traceback
    assert outcome(MemoryError()) == (1, "out of memory")  # no advice given: none added


def worker_error(error):
    """``error`` as a DataLoader worker hands it to the main process: the worker's traceback before its message."""
    try:
        raise error
    except type(error):
        wrapper = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(type(error)) as caught:
        wrapper.reraise()
    return caught.value


def test_an_error_from_a_dataloader_worker_is_its_own_message():
    from pieanet.datasets.iea40k import DatasetError

    message = "train.csv:3: b.png: label not found; expected a .npy residual map"
    error = worker_error(DatasetError(message))
    assert str(error).startswith("Caught DatasetError in DataLoader worker process 0.")
    assert first_line(error) == message  # not the torch header, not the "pieanet.datasets...: " prefix
    assert outcome(error) == (2, message)
    assert first_line(worker_error(RuntimeError("two\nlines"))) == "two"


def test_bad_data_met_during_an_epoch_stops_the_run_with_exit_1(tmp_path, capsys, monkeypatch):
    """A DatasetError while training (a worker's, wrapped by torch) is a run that had to stop: TrainingError, exit 1,
    its own message, the DatasetError kept as the cause."""
    from pieanet import train_wavelet
    from pieanet.datasets.iea40k import DatasetError
    from pieanet.training import run as training_run

    message = "train.csv:7: c.png: corrupt or truncated image (broken data stream)"
    wrapped = worker_error(DatasetError(message))

    def train_epoch():
        raise wrapped

    run = SimpleNamespace(
        out=tmp_path,
        is_main=False,
        opts={"epochs": 2, "max_steps": None},
        epoch=0,
        global_step=0,
        train_epoch=train_epoch,
    )
    with pytest.raises(training_run.TrainingError) as caught:
        training_run.run_epochs(run, 1)
    assert str(caught.value) == message and caught.value.__cause__ is wrapped

    def train(*args, **kwargs):
        training_run.run_epochs(run, 1)

    monkeypatch.setattr(training_run, "train", train)
    monkeypatch.delenv(errors.DEBUG_VARIABLE, raising=False)
    assert train_wavelet.main(["--device", "cpu"]) == 1
    assert capsys.readouterr().err == f"train_wavelet: {message}\n"


def bad_rules(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("criteria:\n  - measure: [unclosed\n")
    photo = tmp_path / "p.png"
    photo.write_bytes(b"")  # never read: the rule file is refused first
    return ["--rules", str(path), str(photo), "--device", "cpu"]


def test_default_is_one_line_and_debug_shows_the_cause(tmp_path, capsys, monkeypatch):
    """score.py with a rule file that is not YAML: exit 2 and one line; with --debug or P_IEA_DEBUG=1 the traceback
    first, with the YAML error that caused the RuleError."""
    from pieanet import score

    monkeypatch.delenv(errors.DEBUG_VARIABLE, raising=False)
    assert score.main(bad_rules(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"score: {tmp_path / 'rules.yaml'}:") and "not valid YAML" in err
    for argv, env in ((["--debug"], None), ([], "1")):
        if env:
            monkeypatch.setenv(errors.DEBUG_VARIABLE, env)
        assert score.main(bad_rules(tmp_path) + argv) == 2
        debug = capsys.readouterr().err
        assert debug.startswith("Traceback (most recent call last):")
        assert "yaml.parser.ParserError" in debug and "direct cause of the following exception" in debug
        assert "pieanet.scoring.rules.RuleError" in debug and debug.endswith(err)  # the same line, last
    monkeypatch.setenv(errors.DEBUG_VARIABLE, "0")
    assert score.main(bad_rules(tmp_path)) == 2 and capsys.readouterr().err == err
    assert not errors.debugging()  # --debug lasts for its own command only


def test_debug_in_training_shows_the_cause(capsys, monkeypatch):
    from pieanet import train_wavelet

    monkeypatch.delenv(errors.DEBUG_VARIABLE, raising=False)
    assert train_wavelet.main(["--device", "nowhere"]) == 2
    err = capsys.readouterr().err
    assert err == "train_wavelet: --device 'nowhere': expected auto, cpu, cuda or cuda:N\n"
    assert train_wavelet.main(["--device", "nowhere", "--debug"]) == 2
    debug = capsys.readouterr().err
    assert "RuntimeError" in debug and "direct cause" in debug and debug.endswith(err)


def test_debug_on_export_shows_the_checkpoint_error_cause(tmp_path, capsys, monkeypatch):
    """export.py on a damaged checkpoint: the CheckpointError (exit 2) is no longer re-made as a UsageError without
    its cause."""
    pytest.importorskip("onnxruntime")
    from pieanet import export

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    argv = ["--checkpoint", str(bad), "--output", str(tmp_path / "m.onnx")]
    monkeypatch.delenv(errors.DEBUG_VARIABLE, raising=False)
    assert export.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"export: {bad}: unreadable checkpoint")
    assert export.main(argv + ["--debug"]) == 2
    debug = capsys.readouterr().err
    assert "direct cause" in debug and "CheckpointError" in debug and debug.endswith(err)
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.subprocess
def test_debug_flag_from_the_shell(tmp_path):
    """The real command line: one line by default, the traceback with its cause under --debug; exit 2 both."""
    command = [sys.executable, str(ROOT / "score.py")] + bad_rules(tmp_path)
    env = {k: v for k, v in __import__("os").environ.items() if k != errors.DEBUG_VARIABLE}
    plain = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    debug = subprocess.run(command + ["--debug"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert plain.returncode == debug.returncode == 2
    assert plain.stderr.count("\n") == 1 and "Traceback" not in plain.stderr
    assert "Traceback" in debug.stderr and "yaml.parser.ParserError" in debug.stderr
    assert debug.stderr.endswith(plain.stderr)


def test_every_tool_has_the_debug_option(capsys):
    from pieanet import compare_methods, evaluate, export, make_heatmap, score, train_wavelet

    for tool in (make_heatmap, evaluate, compare_methods, score, export, train_wavelet):
        with pytest.raises(SystemExit):
            tool.main(["--help"])
        assert "--debug" in capsys.readouterr().out, tool.__name__


def test_a_bug_keeps_its_traceback(capsys):
    """An exception that is no project error, OS error, memory or Ctrl-C is a bug: cli.run lets it through (Python
    prints its traceback, exit 1) and prints no line of its own."""
    from pieanet.utils import cli

    def body(argv):
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError, match="a bug"):
        cli.run("tool", body, [])
    assert capsys.readouterr().err == ""


def exit_code_table(lines):
    """{code: meaning} of a table whose rows start with an exit code (continuation lines joined), Markdown's or the
    docstring's, without Markdown's backticks and escapes."""
    table, code = {}, None
    for line in lines:
        cells = (
            [cell.strip() for cell in line.strip().strip("|").split("|", 1)]
            if line.lstrip().startswith("|")
            else line.strip().split(None, 1)
        )
        if cells and cells[0].isdigit():
            code, table[int(cells[0])] = int(cells[0]), cells[1] if len(cells) > 1 else ""
        elif code is not None and line.startswith("         "):
            table[code] += " " + line.strip()
        else:
            code = None
    return {key: value.replace("`", "").replace("\\|", "|") for key, value in table.items()}


def test_the_exit_code_table_has_one_home_and_the_docs_show_it():
    """utils/errors.py holds the table and the constants; docs/design.md shows the same rows; the other modules
    refer to it instead of repeating it."""
    home = exit_code_table(errors.__doc__.splitlines())
    codes = {errors.EXIT_OK, errors.EXIT_FAILED, errors.EXIT_USAGE, errors.EXIT_INTERRUPTED, errors.EXIT_BROKEN_PIPE}
    assert set(home) == codes == {0, 1, 2, 130, 141}
    design = (ROOT / "docs" / "design.md").read_text().split("## Exit codes", 1)[1].splitlines()
    assert exit_code_table(line for line in design if line.startswith("|")) == home
    from pieanet.utils import cli, startup

    assert startup.EXIT_INTERRUPTED is errors.EXIT_INTERRUPTED and "141" not in cli.__doc__
