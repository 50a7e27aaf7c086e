"""datasets/merge.py: IEA40K-layout datasets merged by links and concatenated split lists, read back as one."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pieanet.datasets import merge
from pieanet.datasets.iea40k import DatasetError, IEA40KDataset


def make_set(root, grey, names=("a_N1", "b_P1"), valid=True):
    """A tiny IEA40K-layout set whose photos are flat ``grey`` and labels ``128 - grey``."""
    for folder in ("images", "labels", "refs"):
        (root / folder).mkdir(parents=True)
    lines = ["img_id,ref_id,score,level"]
    for name in names:
        Image.fromarray(np.full((8, 8, 3), grey, np.uint8)).save(root / "images" / f"{name}.png")
        np.save(root / "labels" / f"{name}.npy", np.full((8, 8), 128.0 - grey, np.float32))
        Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(root / "refs" / f"{name[0]}.png")
        lines.append(f"{name}.png,{name[0]}.png,7.123456789,{name[-2:]}")
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    (root / "valid.csv").write_text("\n".join(lines[:2] if valid else lines[:1]) + "\n")
    return root


def test_two_sets_with_colliding_names_merge_under_a_prefix(tmp_path):
    one, two = make_set(tmp_path / "one", 40), make_set(tmp_path / "two", 200, valid=False)
    assert merge.main(["--out", str(tmp_path / "both"), str(one), f"k_={two}"]) == 0
    both = IEA40KDataset(tmp_path / "both", "train.csv", refs_dir="refs")
    assert [row.img_id for row in both.rows] == ["a_N1.png", "b_P1.png", "k_a_N1.png", "k_b_P1.png"]
    assert [row.score for row in both.rows] == [7.123456789] * 4  # scores kept to the last digit
    for i, grey in enumerate((40, 40, 200, 200)):
        item = both[i]
        assert item["image"].mul(255).round().eq(grey).all()
        assert item["residual"].mul(255).sub(128 - grey).abs().max() < 1e-4
    assert [row.img_id for row in IEA40KDataset(tmp_path / "both", "valid.csv").rows] == ["a_N1.png"]  # two has none
    link = tmp_path / "both" / "images" / "k_a_N1.png"
    assert link.is_symlink() and not link.readlink().is_absolute()


def test_collisions_missing_files_and_an_existing_folder_are_refused_before_anything_is_made(tmp_path, capsys):
    one, two = make_set(tmp_path / "one", 40), make_set(tmp_path / "two", 200)
    with pytest.raises(DatasetError, match=r"would both be images/a_N1\.png; give one source a prefix"):
        merge.merge(tmp_path / "out", [("", one), ("", two)])
    (two / "labels" / "b_P1.npy").unlink()
    with pytest.raises(DatasetError, match=r"train\.csv line 3: .*b_P1\.npy not found"):
        merge.merge(tmp_path / "out", [("", one), ("x_", two)])
    assert not (tmp_path / "out").exists()
    (one / "train.csv").write_text("img_id,ref_id,score\n../escape.png,a.png,5\n")
    with pytest.raises(DatasetError, match=r"line 2: '\.\./escape\.png' is not a name inside"):
        merge.merge(tmp_path / "out", [("", one)])
    (one / "train.csv").write_text("img_id,ref_id\na_N1.png,a.png\n")
    with pytest.raises(DatasetError, match="missing column"):
        merge.merge(tmp_path / "out", [("", one)])
    assert not (tmp_path / "out").exists()
    (tmp_path / "taken").mkdir()
    assert merge.main(["--out", str(tmp_path / "taken"), str(one)]) == 2
    assert "already exists" in capsys.readouterr().err and not any((tmp_path / "taken").iterdir())


@pytest.mark.parametrize("prefix", ["../../escaped_", "{absolute}/absolute_", "x" * 250])
def test_a_prefix_that_leads_out_of_out_or_is_too_long_is_refused_and_nothing_is_made(prefix, tmp_path, capsys):
    """Issue 27: the prefix is part of every merged name, so it is checked like the names of the split lists."""
    one = make_set(tmp_path / "one", 40)
    out = tmp_path / "a" / "deep" / "both"
    before = sorted(tmp_path.rglob("*"))
    prefix = prefix.format(absolute=tmp_path)
    assert merge.main(["--out", str(out), f"{prefix}={one}"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert sorted(tmp_path.rglob("*")) == before  # nothing made, inside or outside --out


def test_a_failure_while_building_leaves_nothing_behind(tmp_path, capsys, monkeypatch):
    one = make_set(tmp_path / "one", 40)
    out = tmp_path / "deep" / "both"
    calls = []
    real = Path.symlink_to

    def full_disk_on_the_third(self, target, *rest):
        calls.append(target)
        if len(calls) == 3:
            raise OSError(28, "No space left on device", str(self))
        return real(self, target, *rest)

    monkeypatch.setattr(Path, "symlink_to", full_disk_on_the_third)
    assert merge.main(["--out", str(out), str(one)]) == 2
    assert "nothing was left behind" in capsys.readouterr().err
    assert not (tmp_path / "deep").exists()
    monkeypatch.undo()
    assert merge.main(["--out", str(out), str(one)]) == 0  # a re-run is not refused
