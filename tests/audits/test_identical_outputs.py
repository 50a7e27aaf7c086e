"""The byte-identity check's own logic (tests/audits/identical_outputs.py): what it normalises and what it compares.
Its run over a whole checkout is a command (minutes), not a test."""

import hashlib

from . import identical_outputs


def test_only_the_named_paths_are_normalised(tmp_path):
    checkout, work = tmp_path / "repo", tmp_path / "identical-outputs-x"
    data = f"a,{checkout}/checkpoints/m.safetensors,{work}/out/s.csv,1.25,../../in/p.png\n".encode()
    text, fields = identical_outputs.normalised(data, checkout, work)
    assert text == b"a,<checkout>/checkpoints/m.safetensors,<work>/out/s.csv,1.25,../../in/p.png\n"
    assert fields == ["work", "checkout"]
    assert identical_outputs.normalised(b"0.227188,ok\n", checkout, work) == (b"0.227188,ok\n", [])


def test_manifest_lines_and_compare(tmp_path, capsys):
    work = tmp_path / "work"
    (work / "out" / "sub").mkdir(parents=True)
    (work / "out" / "sub" / "map.npy").write_bytes(b"\x93NUMPY" + bytes(range(10)))
    (work / "out" / "summary.csv").write_text(f"source\n{work}/in/a.png\n", encoding="utf-8")
    lines = identical_outputs.manifest(tmp_path / "repo", work)
    npy, csv = b"\x93NUMPY" + bytes(range(10)), b"source\n<work>/in/a.png\n"  # what is hashed, written out here
    assert lines == [
        identical_outputs.HEADER,
        f"sub/map.npy\t16\t{hashlib.sha256(npy).hexdigest()}\t-",
        f"summary.csv\t23\t{hashlib.sha256(csv).hexdigest()}\twork",
    ]
    first, second = tmp_path / "a.tsv", tmp_path / "b.tsv"
    first.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert identical_outputs.compare(first, first) == 0
    second.write_text(
        "\n".join([lines[0], lines[1].replace("\t16\t", "\t17\t"), "new.png\t1\tab\t-"]) + "\n", encoding="utf-8"
    )
    capsys.readouterr()
    assert identical_outputs.compare(first, second) == 1
    said = capsys.readouterr().out
    assert "differs: sub/map.npy (size 16 -> 17)" in said
    assert f"only in {first}: summary.csv" in said and f"only in {second}: new.png" in said
    assert "0 files identical, 3 differ or are missing" in said
