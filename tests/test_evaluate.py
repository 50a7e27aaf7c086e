import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pieanet import evaluate, evaluation
from conftest import flat_iea_dataset

LEVELS = ["N1", "P0", "P1"]


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """Three readable samples (a flat grey photo each, label = its exact mid-grey residual), one corrupt image and one
    missing label."""
    return flat_iea_dataset(tmp_path_factory.mktemp("tiny_iea"), (60, 128, 200), LEVELS)


def test_end_to_end_json_and_bad_samples(tiny_dataset, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    code = evaluate.main(
        [
            "--data-root",
            str(tiny_dataset),
            "--csv",
            "valid.csv",
            "--checkpoint",
            str(tiny_checkpoint),
            "--json",
            str(out),
        ]
    )
    assert code == 1  # some samples failed
    payload = json.loads(out.read_text())
    assert payload["n_samples"] == 5 and payload["n_failed"] == 2
    assert sorted(payload["failed"]) == ["bad_P2.png", "nolabel_N2.png"]
    (result,) = payload["methods"].values()
    for key in [
        "n_images",
        "mae",
        "rmse",
        "psnr",
        "ssim",
        "iou_over",
        "iou_under",
        "srcc",
        "plcc",
        "per_level",
        "f1_over",
        "f1_under",
    ]:
        assert key in result
    assert result["n_images"] == 3
    assert sorted(result["per_level"]) == sorted(LEVELS)  # levels from the file names
    assert all(level["n_images"] == 1 for level in result["per_level"].values())
    err = capsys.readouterr().err
    assert "bad_P2.png" in err and "nolabel_N2.npy: label not found" in err


def test_a_perfect_baseline_scores_perfectly(tiny_dataset, tmp_path):
    # the photos are flat, so the labels are exactly 0.5 - grey: local_midgray predicts them up to 8-bit rounding
    out = tmp_path / "m.json"
    evaluate.main(
        [
            "--data-root",
            str(tiny_dataset),
            "--csv",
            "valid.csv",
            "--baseline",
            "local_midgray",
            "zero",
            "--json",
            str(out),
        ]
    )
    methods = json.loads(out.read_text())["methods"]
    exact = methods["baseline: local_midgray"]
    assert exact["mae"] < 0.003 and exact["iou_over"] == 1.0 and exact["iou_under"] == 1.0
    assert exact["srcc"] == pytest.approx(1.0)
    zero = methods["baseline: zero"]
    # |128 - grey| / 255 for grey 60, 128, 200, averaged over the three images
    assert zero["mae"] == pytest.approx((68 + 0 + 72) / 255 / 3, abs=1e-6)
    assert zero["iou_over"] == 0.0 and zero["srcc"] is None  # a constant score has no rank correlation


def test_markdown_table_is_started_once_then_appended(tiny_dataset, tmp_path):
    md = tmp_path / "results.md"
    args = ["--data-root", str(tiny_dataset), "--csv", "valid.csv", "--markdown", str(md)]
    evaluate.main(args + ["--baselines", "all"])
    evaluate.main(args + ["--baseline", "mertens"])
    text = md.read_text()
    assert text.count("| Method |") == 1
    assert text.count("| baseline: mertens |") == 2
    assert len([line for line in text.splitlines() if line.startswith("| baseline")]) == 6


def test_missing_checkpoint_is_one_sentence(tiny_dataset, tmp_path, capsys):
    assert (
        evaluate.main(
            ["--data-root", str(tiny_dataset), "--csv", "valid.csv", "--checkpoint", str(tmp_path / "none.safetensors")]
        )
        == 2
    )
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("evaluate: ") and "checkpoint not found" in line


def test_json_layout_is_the_same_for_one_and_several_methods(tiny_dataset, tmp_path):
    layouts = []
    for methods in (["zero"], ["zero", "mertens"]):
        out = tmp_path / f"{len(methods)}.json"
        evaluate.main(
            ["--data-root", str(tiny_dataset), "--csv", "valid.csv", "--baseline", *methods, "--json", str(out)]
        )
        payload = json.loads(out.read_text())
        layouts.append((sorted(payload), sorted(next(iter(payload["methods"].values())))))
        assert len(payload["methods"]) == len(methods)
    assert layouts[0] == layouts[1]


def test_a_csv_with_a_byte_order_mark_is_read(tiny_dataset, tmp_path):
    (tiny_dataset / "bom.csv").write_bytes(b"\xef\xbb\xbf" + (tiny_dataset / "valid.csv").read_bytes())
    out = tmp_path / "bom.json"
    assert (
        evaluate.main(["--data-root", str(tiny_dataset), "--csv", "bom.csv", "--baseline", "zero", "--json", str(out)])
        == 1
    )  # the two bad samples of the fixture
    assert json.loads(out.read_text())["methods"]["baseline: zero"]["n_images"] == 3


def test_maps_are_resized_to_the_label(tmp_path):
    # labels at half the photo's resolution: the map must be brought to the label's size, not the other way round
    root = tmp_path / "half"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    Image.fromarray(np.full((48, 64, 3), 60, np.uint8)).save(root / "images" / "a.png")
    np.save(root / "labels" / "a.npy", np.full((24, 32), 68.0, np.float32))
    (root / "list.csv").write_text("img_id\na.png\n")
    out = tmp_path / "half.json"
    assert (
        evaluate.main(
            ["--data-root", str(root), "--csv", "list.csv", "--baseline", "local_midgray", "--json", str(out)]
        )
        == 0
    )
    result = json.loads(out.read_text())["methods"]["baseline: local_midgray"]
    assert result["n_images"] == 1 and result["mae"] < 0.003


@pytest.mark.parametrize("scale", ["-255", "0", "nan"])
def test_label_scale_must_be_positive(tiny_dataset, capsys, scale):
    with pytest.raises(SystemExit) as info:
        evaluate.main(
            ["--data-root", str(tiny_dataset), "--csv", "valid.csv", "--baseline", "zero", "--label-scale", scale]
        )
    assert info.value.code == 2 and "--label-scale" in capsys.readouterr().err


def test_an_unreadable_label_is_named_with_the_training_reader(tiny_dataset, tmp_path, capsys):
    np.save(tiny_dataset / "labels" / "s0_N1.npy", np.full((24, 32), 999.0, np.float32))  # beyond +-255
    try:
        assert evaluate.main(["--data-root", str(tiny_dataset), "--csv", "valid.csv", "--baseline", "zero"]) == 1
        assert "s0_N1.npy: label reaches 999" in capsys.readouterr().err
    finally:
        np.save(tiny_dataset / "labels" / "s0_N1.npy", np.full((24, 32), 128.0 - 60, np.float32))


def test_checkpoints_sharing_a_name_get_their_own_rows(tmp_path, tiny_checkpoint):
    import shutil
    from pieanet import evaluate

    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        shutil.copy(tiny_checkpoint, tmp_path / run / "best.safetensors")
    args = evaluate.parse_args(
        [
            "--data-root",
            str(tmp_path),
            "--csv",
            "x.csv",
            "--checkpoint",
            str(tmp_path / "a" / "best.safetensors"),
            str(tmp_path / "b" / "best.safetensors"),
        ]
    )
    assert [name for name, _ in evaluation.load_methods(args)] == ["best", "best #2"]


@pytest.mark.parametrize(
    "function, what",
    [(evaluation.measure_rows, evaluation.LabelledData(Path("."))), (evaluation.judge_photos, evaluation.Criterion())],
)
def test_a_progress_bar_made_here_is_closed_and_one_passed_in_is_not(function, what, monkeypatch):
    made = []

    class Recorded(evaluation.cli.Progress):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.closed = False
            made.append(self)

        def close(self):
            self.closed = True
            super().close()

    monkeypatch.setattr(evaluation.cli, "Progress", Recorded)
    assert function([], [], what) == []
    assert len(made) == 1 and made[0].closed  # none passed in: made, and closed when done
    mine = Recorded("test", 0)
    assert function([], [], what, progress=mine) == [] and len(made) == 2 and not mine.closed  # its owner closes it
    mine.close()
