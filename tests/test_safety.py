"""Issue 18, inputs and outputs: what the tools hand to spreadsheets, markdown, terminals and matplotlib
(utils/safety.py), the cost of an input bounded before work, and one line for every malformed config or rule file."""

import csv
import io
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import train_wavelet
from audits.audit_inputs import one_bit_png  # the hostile-input audit's builder: a 1-bit PNG, side x side
from pieanet import evaluation, runtime
from pieanet.comparison import write_figure, write_tables
from pieanet.training import run as training_run
from pieanet.models import CheckpointError, build_model, check_config, load_model, read_checkpoint, save_model
from pieanet.utils import cli, image_io
from pieanet.utils.config import ConfigError
from pieanet.utils.heatmap import save_colorbar_heatmap
from pieanet.utils.image_io import ImageLoadError, atomic_write, load_image
from pieanet.scoring.rules import RuleError, load_rules
from pieanet.utils.safety import brief, csv_cell, csv_value, md_cell, shown
from pieanet.heatmaps.summary import SUMMARY_FIELDS, read_summary, write_summary

ROOT = Path(__file__).resolve().parents[1]
ESC = "\x1b"


def within(seconds, function, *args):
    """function(*args) run in a thread; fails the test if it has not returned after ``seconds`` (a read that blocks
    forever on a FIFO); returns its result or re-raises its exception."""
    box = {}

    def target():
        try:
            box["value"] = function(*args)
        except BaseException as e:  # noqa: B036 (handed back to the test)
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{function.__name__} still running after {seconds} s"
    if "error" in box:
        raise box["error"]
    return box.get("value")


# ------------------------------------------------------------------------------------------------ 6: CSV, markdown
@pytest.mark.parametrize(
    "text, cell",
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1+2.png", "'+1+2.png"),
        ("-2+3.png", "'-2+3.png"),
        ("@SUM(A1).jpg", "'@SUM(A1).jpg"),
        ("\t=1.png", "'\t=1.png"),
        ("\r=1.png", "'\r=1.png"),
        ("  =1.png", "'  =1.png"),
        ("'quoted.png", "''quoted.png"),
        ("photo.jpg", "photo.jpg"),
        ("-0.25", "-0.25"),
        ("1e-3", "1e-3"),
        ("", ""),
        ("a=b.png", "a=b.png"),
    ],
)
def test_csv_cell_guards_formulas_and_round_trips(text, cell):
    assert csv_cell(text) == cell
    assert csv_value(csv_cell(text)) == text


def test_summary_cells_are_never_formulas_and_resume_reads_them_back(tmp_path):
    row = dict.fromkeys(SUMMARY_FIELDS, "") | {
        "file": '=HYPERLINK("http://evil","x").png',
        "status": "ok",
        "source": "../in/@cmd.png",
        "output": "-x",
        "mean_residual": -0.5,
        "settings": "size=native",
    }
    write_summary(tmp_path / "summary.csv", [row])
    cells = list(csv.reader(io.StringIO((tmp_path / "summary.csv").read_text(encoding="utf-8"))))[1]
    assert [cell for cell in cells if cell[:1] in ("=", "+", "-", "@")] == ["-0.500000"]  # a number stays a number
    (back,) = read_summary(tmp_path / "summary.csv")
    assert (back["file"], back["source"], back["output"]) == (row["file"], row["source"], row["output"])


def comparison(names):
    stats = {"mean_abs_residual": 0.1, "mean_residual": -0.05, "pct_over": 1.0, "pct_under": 2.0, "score": 9.0}
    return {
        "methods": [{"method": name, "n_images": 1, **stats, "rank": i + 1} for i, name in enumerate(names)],
        "names": ["a.png"],
        "missing": {},
        "failed": [],
        "panels": [],
    }


def test_comparison_tables_escape_method_names(tmp_path):
    names = ['=WEBSERVICE("http://x")', "a|b", "m\udcff"]  # a formula, a pipe, a byte that is not UTF-8
    write_tables(comparison(names), tmp_path, 0.1)
    rows = list(csv.reader(io.StringIO((tmp_path / "comparison.csv").read_text(encoding="utf-8"))))[1:]
    assert [row[0] for row in rows] == ['\'=WEBSERVICE("http://x")', "a|b", "m\\xff"]
    table = (tmp_path / "comparison.md").read_text(encoding="utf-8").splitlines()
    header_cells = table[0].replace("\\|", "").count("|")
    for line in table[2:5]:  # every row has as many unescaped pipes as the header
        assert line.replace("\\|", "").count("|") == header_cells, line
    assert "a\\|b" in table[3]


def test_evaluate_markdown_escapes_the_method_name():
    line = evaluation.table_rows({"x|y": {"n_images": 1, **dict.fromkeys(evaluation.TABLE_COLUMNS, 0.5)}})
    assert line.replace("\\|", "").count("|") == evaluation.table_header().splitlines()[0].count("|")


def test_md_cell_by_hand():
    assert md_cell("a|b\\c\nd") == "a\\|b\\\\c\\\\x0ad"


# ------------------------------------------------------------------------------------------------ 7: terminals
def test_shown_escapes_control_characters_by_hand():
    assert shown("a\x1b]0;t\x07b\x9bc\udcff\n.png") == "a\\x1b]0;t\\x07b\\x9bc\\xff\\x0a.png"
    assert shown("plain é.png") == "plain é.png"
    assert ESC not in shown("\x1b[2J\x1b]52;c;aGk=\x07")


def test_progress_and_usage_errors_print_names_escaped(capsys):
    with cli.Progress("tool", 1, show=False) as progress:
        progress.fail(f"evil{ESC}]0;pwned\x07.png", "not a readable image")

    def body(argv):
        raise cli.UsageError(f"in{ESC}[31m/x.png: no such file")

    assert cli.run("tool", body) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert ESC not in err and "\x07" not in err
    assert "evil\\x1b]0;pwned\\x07.png" in err and "in\\x1b[31m/x.png" in err


def test_memory_error_is_one_line(capsys):
    def body(argv):
        raise MemoryError()

    assert cli.run("tool", body) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "out of memory" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------------ 8: cost
def many_scans_jpeg(path, repeats):
    """A 64 x 64 progressive JPEG whose last scan is repeated ``repeats`` times (each repeat decodes again)."""
    buffer = io.BytesIO()
    Image.fromarray((np.indices((64, 64)).sum(0) % 256).astype(np.uint8)).convert("RGB").save(
        buffer, "JPEG", progressive=True, quality=90
    )
    data = buffer.getvalue()
    last = data.rindex(b"\xff\xda")
    path.write_bytes(data[:last] + data[last:-2] * repeats + b"\xff\xd9")
    return path


def test_jpeg_with_too_many_scans_is_refused_before_decoding(tmp_path):
    assert load_image(many_scans_jpeg(tmp_path / "ok.jpg", 2)).shape == (64, 64, 3)
    with pytest.raises(ImageLoadError, match="scans"):
        load_image(many_scans_jpeg(tmp_path / "bomb.jpg", image_io.MAX_JPEG_SCANS + 50))


def test_bytes_read_once_are_judged_and_decoded_as_the_file_would_be(tmp_path):
    """load_image's data: the checks and the decoding use the bytes given, never the file (which may have changed)."""
    ok = many_scans_jpeg(tmp_path / "ok.jpg", 2)
    bomb = many_scans_jpeg(tmp_path / "bomb.jpg", image_io.MAX_JPEG_SCANS + 50)
    elsewhere = tmp_path / "gone.jpg"  # no such file: only its name and extension are used
    assert np.array_equal(load_image(elsewhere, data=ok.read_bytes()), load_image(ok))
    with pytest.raises(ImageLoadError, match=r"gone\.jpg: a JPEG of more than 100 scans"):
        load_image(elsewhere, data=bomb.read_bytes())
    with pytest.raises(ImageLoadError, match=r"gone\.jpg: empty file \(0 bytes\)"):
        load_image(elsewhere, data=b"")
    assert image_io.photo_bytes(ok) == ok.read_bytes()


def test_photo_beyond_the_memory_budget_is_refused_before_decoding(tmp_path, monkeypatch):
    Image.new("RGB", (1000, 500)).save(tmp_path / "p.png")
    # 500,000 pixels at PEAK_BYTES_PER_PIXEL need 20 MB; with 10 MB left the photo is refused, with 40 MB read
    monkeypatch.setattr(image_io, "memory_budget", lambda: 10 * 2**20)
    with pytest.raises(ImageLoadError, match="needs about"):
        load_image(tmp_path / "p.png")
    monkeypatch.setattr(image_io, "memory_budget", lambda: 40 * 2**20)
    assert load_image(tmp_path / "p.png").shape == (500, 1000, 3)


def test_memory_budget_sees_an_address_space_limit():
    code = (
        "import resource; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, resource.RLIM_INFINITY)); "
        "from pieanet.utils.image_io import memory_budget; print(memory_budget())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert 0 < float(out.stdout) < 3 << 30, out.stderr


def test_tiny_png_declaring_14000_squared_is_refused_before_decoding(tmp_path):
    path = one_bit_png(tmp_path / "bomb.png", 14000)
    assert path.stat().st_size < 40_000
    start = time.perf_counter()
    with pytest.raises(ImageLoadError, match="holds only"):
        load_image(path)
    assert time.perf_counter() - start < 2


def test_deflated_checkpoint_zip_is_refused_before_inflating(tmp_path):
    plain = tmp_path / "plain.pth"
    torch.save({"weights": torch.zeros(16 << 20, dtype=torch.uint8)}, plain)  # 16 MB of zeros, stored
    bomb = tmp_path / "bomb.pth"
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as target:
        for entry in source.infolist():
            target.writestr(entry.filename, source.read(entry))
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(CheckpointError, match="before unpacking"):
        read_checkpoint(bomb)
    with pytest.raises(CheckpointError, match="not a P-IEA checkpoint"):  # the stored original is read as before
        read_checkpoint(plain)


def test_activation_cost_measured_for_real_equals_the_meta_devices_count(monkeypatch):
    """activation_cost runs small models for real on two tiny images; the sum of layer outputs it solves for must be
    what the meta device counts at 256 and 512 px (482.5 bytes per pixel and 244 kB fixed for the shipped model)."""
    from pieanet.models import activation_cost, read_checkpoint

    config, _ = read_checkpoint(ROOT / "checkpoints" / "pieanet_corpus.safetensors")
    with torch.device("meta"):
        skeleton = build_model(config)
    real = activation_cost(config, skeleton)
    monkeypatch.setattr(type(skeleton), "native_size", 256, raising=False)  # measured on the meta device instead
    assert real == activation_cost(config, skeleton) == (482.5, 249856.0)
    monkeypatch.setattr("pieanet.models.loading.MAX_ACTIVATION_BYTES_PER_PIXEL", 400)
    with pytest.raises(CheckpointError, match="482 bytes of activations per pixel"):
        load_model(ROOT / "checkpoints" / "pieanet_corpus.safetensors")


def test_recorded_activation_costs_are_the_measured_ones():
    """Issue 25: the shipped checkpoints' activation cost is recorded (no test image runs at start-up); it must be
    what activation_cost measures, and be recorded for exactly the configs shipped."""
    import json

    from pieanet.models import RECORDED_ACTIVATION_COSTS, activation_cost, config_key, read_checkpoint

    shipped = {config_key(read_checkpoint(path)[0]) for path in (ROOT / "checkpoints").glob("*.safetensors")}
    assert set(RECORDED_ACTIVATION_COSTS) == shipped
    for key, recorded in RECORDED_ACTIVATION_COSTS.items():
        config = json.loads(key)
        with torch.device("meta"):
            skeleton = build_model(config)
        assert activation_cost(config, skeleton) == recorded


def test_checkpoint_whose_activations_are_too_costly_is_refused(tmp_path, tiny_model_config):
    scene = build_model({"name": "pieanet", "scene_size": 64})
    scene.config["scene_size"] = 4096  # a stored config that build_model itself would refuse
    save_model(tmp_path / "scene.safetensors", scene)
    with pytest.raises(CheckpointError, match="scene_size = 4096 is out of range"):
        load_model(tmp_path / "scene.safetensors")
    save_model(tmp_path / "ok.safetensors", build_model(tiny_model_config | {"scene_size": 64}))
    assert load_model(tmp_path / "ok.safetensors").config["scene_size"] == 64


# ------------------------------------------------------------------------------------------------ 10: one line
def config_file(tmp_path, text, name="c.yaml", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def base_config(tmp_path, extra=""):
    return config_file(tmp_path, f"base: {ROOT / 'configs' / 'pieanet.yaml'}\n{extra}")


@pytest.mark.parametrize(
    "make, overrides",
    [
        (lambda p: config_file(p, "base: 5\n"), ()),
        (lambda p: config_file(p, 'base: "a\\0b"\n'), ()),
        (lambda p: p, ()),  # a folder
        (lambda p: config_file(p, "name: caf\xe9\n", encoding="latin-1"), ()),
        (lambda p: config_file(p, "a: " + "[" * 20000 + "]" * 20000 + "\n"), ()),
        (lambda p: config_file(p, "seed: " + "9" * 5000 + "\n"), ()),
        (lambda p: base_config(p), ("seed=1180591620717411303424",)),  # 2**70
        (lambda p: base_config(p), ("model=[1]",)),
        (lambda p: base_config(p), ("model.name=[1]",)),
        (lambda p: base_config(p, "model:\n  width: 30\n  heads: 4\n"), ()),
    ],
)
def test_malformed_configs_are_one_config_error(tmp_path, make, overrides):
    with pytest.raises(ConfigError) as caught:
        training_run.resolve_config(make(tmp_path), overrides)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 700


def test_alias_bomb_in_a_config_error_is_formatted_briefly(tmp_path):
    levels = ["&k0 [" + ", ".join(["x"] * 10) + "]"]
    levels += [f"&k{i} [" + ", ".join([f"*k{i - 1}"] * 10) + "]" for i in range(1, 6)]  # 10**6 elements in the last
    path = base_config(tmp_path, f"seed: [{', '.join(levels)}]\n")
    start = time.perf_counter()
    with pytest.raises(ConfigError) as caught:
        training_run.resolve_config(path)
    assert time.perf_counter() - start < 5 and len(str(caught.value)) < 700


def test_brief_is_bounded():
    bomb = ["x"] * 10
    for _ in range(8):
        bomb = [bomb] * 10
    assert len(brief(bomb)) <= 200 and len(brief("y" * 10**6)) <= 200


def test_fifo_as_config_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="FIFO"):
        within(5, training_run.resolve_config, tmp_path / "c.yaml")


@pytest.mark.parametrize(
    "text, where",
    [
        ("criteria:\n- measure: over\n  table:\n  - {score: 1}\nname: !!python/name:os.system\n", "name"),
        ("criteria:\n- measure: over\n  table:\n  - {max: !!float abc, score: 1}\n  - {score: 2}\n", "max"),
        ("criteria:\n- measure: over\n  table:\n  - {score: 1}\nname: !!timestamp 2020-13-45\n", "name"),
        ("criteria:\n- measure: over\n  table:\n  - {score: 1}\nname: !!timestamp 2020-02-30\n", "name"),
        ("criteria:\n- measure: over\n  ? [a, b]\n  : 1\n", "criteria"),
        ("criteria: " + "[" * 20000 + "]" * 20000 + "\n", ""),
    ],
)
def test_malformed_rule_files_are_one_rule_error(tmp_path, text, where):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RuleError) as caught:
        load_rules(path)
    assert "\n" not in str(caught.value) and where in str(caught.value)


def test_rules_from_devices_and_fifos_are_refused_by_type(tmp_path):
    with pytest.raises(RuleError, match="device"):
        within(5, load_rules, "/dev/zero")
    os.mkfifo(tmp_path / "r.yaml")
    with pytest.raises(RuleError, match="FIFO"):
        within(5, load_rules, tmp_path / "r.yaml")


def test_fifo_as_summary_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "summary.csv")
    with pytest.raises(cli.UsageError, match="FIFO"):
        within(5, read_summary, tmp_path / "summary.csv")


def test_model_name_that_is_not_text_is_a_value_error():
    with pytest.raises(ValueError, match="unknown model name"):
        check_config({"name": [1]})
    with pytest.raises(ValueError, match="unknown model name"):
        check_config({"name": {"a": 1}})


def test_heads_that_do_not_divide_the_width_are_refused_when_built(tiny_model_config):
    with pytest.raises(ValueError, match="multiple of heads"):
        build_model(tiny_model_config | {"width": 10, "heads": 4})


def test_a_model_that_outputs_nan_fails_the_photo(tiny_checkpoint):
    model = load_model(tiny_checkpoint)
    model.register_forward_hook(lambda module, inputs, output: output * float("nan"))
    (result,) = runtime.predict(model, [np.full((32, 48, 3), 0.5, np.float32)])
    assert isinstance(result, ValueError) and "non-finite" in str(result)


def test_mathtext_in_names_is_drawn_as_text(tmp_path):
    save_colorbar_heatmap(tmp_path / "c.png", np.zeros((16, 16), np.float32), title="cost$\\frac$_{x")
    result = comparison(["a$\\frac$", "b"])
    result["panels"] = [("cost$\\frac$.png", [(np.zeros((8, 8, 3)), np.zeros((8, 8)))] * 2)]
    write_figure(result, tmp_path / "comparison.png")
    assert Image.open(tmp_path / "c.png").size[0] > 0 and Image.open(tmp_path / "comparison.png").size[0] > 0


def test_a_name_of_243_bytes_gets_a_temporary_name_within_the_limit(tmp_path):
    target = tmp_path / ("é" * 115 + "_exposure.png")  # 243 bytes: the old temporary name had 264
    with atomic_write(target) as tmp:
        assert len(os.fsencode(tmp.name)) < 255
        Image.new("RGB", (4, 4)).save(tmp)
    assert target.is_file()


def test_out_of_memory_in_training_is_one_line(monkeypatch, capsys):
    def train(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(training_run, "train", train)
    assert train_wavelet.main(["--config", str(ROOT / "configs" / "pieanet.yaml"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "out of memory" in err and "Traceback" not in err and err.strip().count("\n") == 0


# the package each script is still importing when the signal comes: make_heatmap and score import no torch at start-up
# (pieanet.runtime imports it where it is used; models/torch_free.py), so numpy's import is their slowest
@pytest.mark.parametrize(
    "script, inside", [("make_heatmap.py", "numpy._"), ("score.py", "numpy._"), ("train_wavelet.py", "torch._")]
)
def test_ctrl_c_during_imports_exits_130_without_a_traceback(script, inside):
    # -X importtime reports each module as its import completes: the first module inside the package reported
    # means the script has started and is in its slow imports
    process = subprocess.Popen(
        [sys.executable, "-X", "importtime", str(ROOT / script), "--help"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = []
    for line in process.stderr:
        seen.append(line)
        if inside in line:  # a module inside the package: the package itself is still importing
            process.send_signal(signal.SIGINT)
            break
    err = "".join(seen) + process.stderr.read()
    process.wait(timeout=60)
    assert process.returncode == 130 and "Traceback" not in err and "interrupted" in err, err[-2000:]


def test_first_line_of_an_error_without_a_message_is_its_type():
    from pieanet.utils.safety import first_line

    assert first_line(ValueError()) == "ValueError"
    assert first_line(RuntimeError("  \n")) == "RuntimeError"
    assert first_line(OSError("disk full\nmore detail"), limit=4) == "disk"
