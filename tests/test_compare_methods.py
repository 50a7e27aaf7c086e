import csv
import math

import numpy as np
import pytest
import torch.nn as nn
from PIL import Image

from pieanet import compare_methods, comparison
from pieanet.utils.exposure import gray


class MidGray(nn.Module):
    """A judge that is right by construction on these images, whose ideal is mid-grey: r = 0.5 - gray."""

    tile_multiple = 1
    native_size = None

    def forward(self, x):
        return (0.5 - gray(x)).clamp(-1, 1)


def save(folder, name, image):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)).save(folder / name)


@pytest.fixture()
def methods(tmp_path):
    """Ideal images near mid-grey and three 'methods': nearly ideal, too dark, too bright."""
    rng = np.random.default_rng(0)
    folders = {m: tmp_path / m for m in ("dark", "good", "bright")}
    for i in range(3):
        ideal = 0.5 + 0.05 * rng.standard_normal((40, 48, 1)).repeat(3, axis=2)
        save(tmp_path / "reference", f"{i}.png", ideal)
        save(folders["good"], f"{i}.png", ideal + 0.01)
        save(folders["dark"], f"{i}.png", ideal * 0.4)
        save(folders["bright"], f"{i}.png", ideal * 1.6)
    save(folders["good"], "only_here.png", np.full((40, 48, 3), 0.5))
    return tmp_path, folders


def test_ranks_better_method_first_and_reports_missing(methods):
    root, folders = methods
    messages = []
    result = comparison.compare(MidGray(), folders, report=messages.append)
    rows = {m["method"]: m for m in result["methods"]}
    assert rows["good"]["rank"] == 1 and rows["good"]["mean_abs_residual"] < 0.06
    assert rows["dark"]["mean_residual"] > 0.2 and rows["dark"]["pct_under"] > 90  # under-exposed: r > 0
    assert rows["bright"]["mean_residual"] < -0.2 and rows["bright"]["pct_over"] > 90
    assert result["names"] == ["0.png", "1.png", "2.png"] and all(m["n_images"] == 3 for m in rows.values())
    assert result["missing"] == {"dark": ["only_here.png"], "bright": ["only_here.png"]}
    assert len(messages) == 2 and all("only_here.png" in m for m in messages)
    assert "psnr" not in rows["good"] and "agreement" not in result


def test_reference_rankings_agree(methods):
    root, folders = methods
    result = comparison.compare(MidGray(), folders, reference=root / "reference", report=lambda m: None)
    rows = {m["method"]: m for m in result["methods"]}
    assert rows["good"]["reference_rank"] == 1 and rows["good"]["psnr"] > 35 and rows["good"]["ssim"] > 0.95
    assert result["agreement"]["same_order"] and result["agreement"]["spearman"] == pytest.approx(1.0)


def test_psnr_and_ssim_by_hand():
    reference = np.full((32, 32, 3), 0.5, np.float32)
    assert comparison.psnr(reference + 0.1, reference) == pytest.approx(20.0)
    assert math.isinf(comparison.psnr(reference, reference))
    assert comparison.rgb_ssim(reference, reference) == pytest.approx(1.0)


def test_unreadable_image_left_out_everywhere(methods):
    root, folders = methods
    (folders["dark"] / "1.png").write_bytes(b"broken")
    messages = []
    result = comparison.compare(MidGray(), folders, report=messages.append)
    assert result["failed"] == ["1.png"] and result["names"] == ["0.png", "2.png"]
    assert any("1.png" in m for m in messages)


def test_command_writes_tables_and_figure(methods, tiny_checkpoint, capsys):
    root, folders = methods
    out = root / "out"
    code = compare_methods.main(
        [
            "--inputs",
            *map(str, folders.values()),
            "--names",
            "D",
            "G",
            "B",
            "--reference",
            str(root / "reference"),
            "--checkpoint",
            str(tiny_checkpoint),
            "--output",
            str(out),
            "--max-rows",
            "2",
        ]
    )
    assert code == 0
    with open(out / "comparison.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["D", "G", "B"] and {"psnr", "ssim", "rank"} <= set(rows[0])
    assert "Spearman" in (out / "comparison.md").read_text()
    assert Image.open(out / "comparison.png").size[0] > 300
    assert sorted(p.name for p in out.iterdir()) == ["comparison.csv", "comparison.md", "comparison.png"]
    assert compare_methods.main(["--inputs", str(root / "nowhere"), "--checkpoint", str(tiny_checkpoint)]) == 2


def test_folders_with_no_common_name_is_one_line_and_exit_1(tmp_path, tiny_checkpoint, capsys):
    save(tmp_path / "A", "a.png", np.full((8, 8, 3), 0.5))
    save(tmp_path / "B", "b.png", np.full((8, 8, 3), 0.5))
    code = compare_methods.main(
        [
            "--inputs",
            str(tmp_path / "A"),
            str(tmp_path / "B"),
            "--checkpoint",
            str(tiny_checkpoint),
            "--output",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "nothing to compare" in err and "Traceback" not in err


def test_one_pixel_high_images_with_a_reference(tmp_path, tiny_checkpoint, capsys):
    strip = np.random.default_rng(0).random((1, 300, 3))
    for folder, gain in (("A", 0.5), ("B", 1.0), ("ref", 0.9)):
        save(tmp_path / folder, "s.png", strip * gain)
    code = compare_methods.main(
        [
            "--inputs",
            str(tmp_path / "A"),
            str(tmp_path / "B"),
            "--reference",
            str(tmp_path / "ref"),
            "--checkpoint",
            str(tiny_checkpoint),
            "--output",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    with open(tmp_path / "out" / "comparison.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["ssim"] for r in rows] == ["nan", "nan"] and all(float(r["psnr"]) > 0 for r in rows)
    assert "n/a" in (tmp_path / "out" / "comparison.md").read_text()
