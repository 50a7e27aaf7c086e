"""pieanet/heatmaps/outputs.py, the one home of make_heatmap's output names, and the files each summary.csv row
records."""

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pieanet import make_heatmap
from pieanet.heatmaps import outputs
from pieanet.heatmaps.report import write_report
from conftest import save_photo


def test_the_kinds_the_options_ask_for_in_the_order_they_are_written():
    assert outputs.requested_kinds() == ["exposure.png"]
    assert outputs.requested_kinds("jpg", overlay=True, colorbar=True, residual=True) == [
        "exposure.jpg",
        "residual.npy",
        "overlay.jpg",
        "colorbar.png",
    ]  # the colour-bar figure is always a PNG
    assert set(outputs.KINDS) == {
        "exposure.png",
        "exposure.jpg",
        "overlay.png",
        "overlay.jpg",
        "colorbar.png",
        "residual.npy",
    }
    with pytest.raises(ValueError, match="'tif'; expected one of png, jpg"):
        outputs.requested_kinds("tif")
    assert outputs.file_name("sub/b #1", "overlay.jpg") == "sub/b #1_overlay.jpg"
    assert outputs.output_path(Path("out/sub/a"), "residual.npy") == Path("out/sub/a_residual.npy")


@pytest.mark.parametrize(
    "row, expected",
    [
        (
            {
                "output": "sub/a b",
                "output_kinds": "exposure.jpg residual.npy overlay.jpg",
                "settings": "jpeg_quality=-",
            },
            {"exposure": "sub/a b_exposure.jpg", "residual": "sub/a b_residual.npy", "overlay": "sub/a b_overlay.jpg"},
        ),
        # a row of a summary.csv written before output_kinds: the format its settings name, heatmap and overlay
        (
            {"output": "a", "output_kinds": "", "settings": "checkpoint=sha256:00 size=model jpeg_quality=-"},
            {"exposure": "a_exposure.png", "overlay": "a_overlay.png"},
        ),
        (
            {"output": "a", "settings": "checkpoint=sha256:00 size=model jpeg_quality=85"},
            {"exposure": "a_exposure.jpg", "overlay": "a_overlay.jpg"},
        ),
        ({"output": "", "output_kinds": "", "status": "failed"}, {}),  # a failed photo has no files
        ({"output": "a", "output_kinds": "exposure.png ../../etc/passwd"}, {"exposure": "a_exposure.png"}),
    ],
)
def test_the_files_a_summary_row_records(row, expected):
    assert outputs.recorded_files(row) == expected


def rows_of(folder):
    with open(folder / "summary.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_each_row_records_its_files_and_the_report_shows_those_not_the_newest(tiny_checkpoint, tmp_path):
    save_photo(tmp_path / "in" / "a.png", seed=3)
    out = tmp_path / "out"
    argv = ["--input", tmp_path / "in", "--output", out, "--checkpoint", tiny_checkpoint, "--threads", "1"]
    assert make_heatmap.main([str(a) for a in argv + ["--overlay", "--save-npy"]]) == 0
    (row,) = rows_of(out)
    assert row["output_kinds"] == "exposure.png residual.npy overlay.png"
    assert sorted(p.name for p in out.glob("a_*")) == ["a_exposure.png", "a_overlay.png", "a_residual.npy"]
    # a user's JPEG with an output's name, newer than the run's files: not this row's, so not shown
    (out / "a_exposure.jpg").write_bytes((out / "a_exposure.png").read_bytes())
    os.utime(out / "a_exposure.png", ns=(10**9, 10**9))
    write_report(out, out / "summary.csv", tmp_path / "in")
    page = (out / "index.html").read_text(encoding="utf-8")
    assert 'src="a_exposure.png"' in page and 'src="a_overlay.png"' in page and "a_exposure.jpg" not in page


def test_a_summary_without_output_kinds_still_shows_its_files(tiny_checkpoint, tmp_path):
    save_photo(tmp_path / "in" / "a.png", seed=4)
    out = tmp_path / "out"
    argv = [
        "--input",
        tmp_path / "in",
        "--output",
        out,
        "--checkpoint",
        tiny_checkpoint,
        "--threads",
        "1",
        "--format",
        "jpg",
        "--overlay",
    ]
    assert make_heatmap.main([str(a) for a in argv]) == 0
    rows = rows_of(out)
    fields = [field for field in rows[0] if field != "output_kinds"]
    with open(out / "summary.csv", "w", newline="", encoding="utf-8") as f:  # as an earlier version wrote it
        writer = csv.DictWriter(f, fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    before = (out / "index.html").read_text(encoding="utf-8")
    write_report(out, out / "summary.csv", tmp_path / "in", 0.1, tiny_checkpoint)
    assert (out / "index.html").read_text(encoding="utf-8") == before
    assert 'src="a_exposure.jpg"' in before and 'src="a_overlay.jpg"' in before


def test_only_the_naming_module_spells_output_kinds():
    root = Path(__file__).resolve().parents[1]
    code = [
        path
        for path in [
            root / "make_heatmap.py",
            *sorted((root / "utils").glob("*.py")),
            *sorted((root / "pieanet" / "heatmaps").glob("*.py")),
        ]
        if path.name != "outputs.py"
    ]
    names = re.compile(r"""(?<!<stem>_)(?:exposure|overlay|colorbar|residual)\.(?:png|jpg|npy)\b|["']exposure["']""")
    spelled = {path.name: found for path in code if (found := names.findall(path.read_text(encoding="utf-8")))}
    assert spelled == {}


def test_importing_the_naming_module_loads_no_torch():
    code = "import sys; import pieanet.heatmaps.outputs; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr
