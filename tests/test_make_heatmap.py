import csv
import hashlib
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pieanet import make_heatmap
from pieanet import runtime
from pieanet.heatmaps import writing
from pieanet.models import load_model
from pieanet.utils.exposure import residual_stats
from pieanet.utils.heatmap import colorize
from pieanet.utils.image_io import load_image

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "img_to_pred"


def run(argv, capsys):
    code = make_heatmap.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def read_summary(folder):
    with open(folder / "summary.csv", newline="") as f:
        return {row["file"]: row for row in csv.DictReader(f)}


def pixel_size(path):
    with Image.open(path) as img:
        return img.size


def write_constant_png(path, width, height, level=128):
    """A valid 8-bit greyscale PNG of any size, compressed row by row without holding the image in memory."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(1)
    row = b"\x00" + bytes([level]) * width
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", data)
        + chunk(b"IEND", b"")
    )


def photo(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def assert_no_temporary_files(folder):
    assert [p for p in folder.rglob("*") if ".tmp" in p.name] == []


def test_sample_photos_end_to_end(tiny_checkpoint, tmp_path, capsys):
    code, out, err = run(
        [
            "--input",
            SAMPLES,
            "--output",
            tmp_path,
            "--checkpoint",
            tiny_checkpoint,
            "--save-npy",
            "--overlay",
            "--colorbar",
            "--threshold",
            "0.05",
        ],
        capsys,
    )
    assert code == 0, err
    samples = sorted(p for p in SAMPLES.iterdir() if p.suffix == ".jpg")
    assert 3 <= len(samples) <= 4 and all(p.stat().st_size < 150_000 for p in samples)
    summary = read_summary(tmp_path)
    assert sorted(summary) == [p.name for p in samples]
    for path in samples:
        width, height = pixel_size(path)
        for kind in ["exposure", "overlay"]:
            assert pixel_size(tmp_path / f"{path.stem}_{kind}.png") == (width, height)
        assert (tmp_path / f"{path.stem}_colorbar.png").is_file()
        residual = np.load(tmp_path / f"{path.stem}_residual.npy")
        assert residual.dtype == np.float32 and residual.shape == (height, width)
        with Image.open(tmp_path / f"{path.stem}_exposure.png") as img:
            assert img.mode == "P"  # issue 25: an 8-bit palette PNG, the same colours
            np.testing.assert_array_equal(np.asarray(img.convert("RGB")), colorize(residual))
        row, stats = summary[path.name], residual_stats(residual, threshold=0.05, photo=load_image(path))
        assert "stops" in stats and f"{stats['stops']:+6.2f}" in out  # in summary.csv and the printed table
        assert (int(row["width"]), int(row["height"]), row["status"], row["error"]) == (width, height, "ok", "")
        for key, value in stats.items():
            assert float(row[key]) == pytest.approx(value, abs=2e-6)
        assert path.name in out  # the table
    assert_no_temporary_files(tmp_path)


def test_heatmap_matches_the_model_run_directly(tiny_checkpoint, tmp_path, capsys):
    Image.fromarray(photo(24, 40)).save(tmp_path / "p.png")
    code, _, err = run(
        ["--input", tmp_path / "p.png", "--output", tmp_path / "out", "--checkpoint", tiny_checkpoint, "--save-npy"],
        capsys,
    )
    assert code == 0, err
    model = load_model(tiny_checkpoint)
    image = load_image(tmp_path / "p.png")
    with torch.no_grad():
        raw = model(torch.from_numpy(image).permute(2, 0, 1)[None])[0, 0].numpy()
    # the tools bound the network's output to what the definition allows (issue 28): r in [-grey, 1 - grey]
    grey = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(np.load(tmp_path / "out" / "p_residual.npy"), np.clip(raw, -grey, 1 - grey), atol=1e-5)


def test_bad_inputs_are_reported_and_the_rest_goes_on(tiny_checkpoint, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(photo(20, 30)).save(src / "good.jpg")
    (src / "empty.png").write_bytes(b"")
    (src / "notes.jpg").write_text("not an image\n")
    Image.fromarray(photo(64, 64, seed=1)).save(src / "full.jpg")
    (src / "truncated.jpg").write_bytes((src / "full.jpg").read_bytes()[:700])
    (src / "full.jpg").unlink()
    write_constant_png(src / "huge.png", 20000, 20000)
    Image.fromarray(np.full((9, 7), 40000, dtype=np.uint16)).save(src / "grey16.png")
    Image.fromarray(photo(9, 7)).convert("L").save(src / "grey.png")
    Image.fromarray(np.dstack([photo(9, 7), np.full((9, 7), 128, np.uint8)]), "RGBA").save(src / "rgba.png")
    Image.fromarray(photo(9, 7)).convert("P").save(src / "palette.bmp")
    Image.fromarray(photo(9, 7)).convert("CMYK").save(src / "cmyk.jpg")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(src / "dot.webp")
    rotated = Image.fromarray(photo(20, 40))
    exif = rotated.getexif()
    exif[0x0112] = 8  # orientation: rotate 90 degrees counter-clockwise to display
    rotated.save(src / "rotated.jpg", exif=exif)

    out = tmp_path / "out"
    code, _, err = run(["--input", src, "--output", out, "--checkpoint", tiny_checkpoint, "--batch-size", "3"], capsys)
    assert code == 1
    failed = {
        "empty.png": "empty file",
        "notes.jpg": "not a readable image",
        "truncated.jpg": "truncated",
        "huge.png": "20000x20000 is 400 MP, above the 200 MP limit",
    }
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == len(failed)
    for name, reason in failed.items():
        assert any(line.startswith(f"make_heatmap: {src / name}: ") and reason in line for line in lines), name
    summary = read_summary(out)
    assert len(summary) == 12
    expected_sizes = {
        "good.jpg": (30, 20),
        "grey16.png": (7, 9),
        "grey.png": (7, 9),
        "rgba.png": (7, 9),
        "palette.bmp": (7, 9),
        "cmyk.jpg": (7, 9),
        "dot.webp": (1, 1),
        "rotated.jpg": (20, 40),
    }
    for name, row in summary.items():
        stem = Path(name).stem
        if name in failed:
            assert row["status"] == "failed" and failed[name] in row["error"]
            assert not list(out.glob(f"{stem}_*"))
        else:
            assert row["status"] == "ok" and (int(row["width"]), int(row["height"])) == expected_sizes[name]
            assert pixel_size(out / f"{stem}_exposure.png") == expected_sizes[name]
    assert_no_temporary_files(out)


def test_a_failed_write_leaves_no_files_for_that_image(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    Image.fromarray(photo(16, 16)).save(tmp_path / "a.png")
    Image.fromarray(photo(16, 16, seed=2)).save(tmp_path / "b.png")

    real_colorbar = writing.save_colorbar_heatmap

    def failing_colorbar(path, residual, title=None, **options):
        if title == "b":
            raise OSError("No space left on device")
        real_colorbar(path, residual, title=title, **options)

    monkeypatch.setattr(writing, "save_colorbar_heatmap", failing_colorbar)
    out = tmp_path / "out"
    code, _, err = run(
        ["--input", tmp_path, "--output", out, "--checkpoint", tiny_checkpoint, "--save-npy", "--colorbar"], capsys
    )
    assert code == 1
    assert err.strip() == f"make_heatmap: {tmp_path / 'b.png'}: could not write outputs (No space left on device)"
    assert sorted(p.name for p in out.iterdir()) == [
        ".pieanet-outputs.csv",
        "a_colorbar.png",
        "a_exposure.png",
        "a_residual.npy",
        "index.html",
        "summary.csv",
    ]
    assert read_summary(out)["b.png"]["status"] == "failed"


def test_each_photo_is_read_once_and_its_hash_is_of_the_bytes_decoded(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    photo = tmp_path / "in" / "a.jpg"
    photo.parent.mkdir()
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(photo, quality=90)
    opened, real_open = [], open

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, Path)) and Path(file).name == photo.name:
            opened.append(file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", counting_open)
    code, _, err = run(
        [
            "--input",
            photo.parent,
            "--output",
            tmp_path / "out",
            "--checkpoint",
            tiny_checkpoint,
            "--no-report",
            "--threads",
            "1",
        ],
        capsys,
    )
    monkeypatch.undo()
    assert code == 0, err
    assert len(opened) == 1  # not once for the hash, once for the scan count and once to decode
    digest = hashlib.sha256(photo.read_bytes()).hexdigest()[:16]
    assert read_summary(tmp_path / "out")["a.jpg"]["photo_sha256"] == f"sha256:{digest}"


def test_recursive_keeps_folders_and_skips_the_output_folder(tiny_checkpoint, tmp_path, capsys):
    (tmp_path / "sub").mkdir()
    Image.fromarray(photo(8, 8)).save(tmp_path / "a.png")
    Image.fromarray(photo(8, 12)).save(tmp_path / "sub" / "a.png")
    Image.fromarray(photo(8, 8)).save(tmp_path / "sub" / "a.JPG")
    out = tmp_path / "results"
    code, _, err = run(["--input", tmp_path, "--recursive", "--output", out, "--checkpoint", tiny_checkpoint], capsys)
    assert code == 0, err
    produced = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert produced == ["a_exposure.png", "sub/a_jpg_exposure.png", "sub/a_png_exposure.png"]
    assert pixel_size(out / "sub" / "a_png_exposure.png") == (12, 8)
    # a second run must not read the first run's heatmaps back as photos
    code, _, err = run(["--input", tmp_path, "--recursive", "--output", out, "--checkpoint", tiny_checkpoint], capsys)
    assert code == 0, err
    assert sorted(read_summary(out)) == ["a.png", "sub/a.JPG", "sub/a.png"]


def test_working_resolution_and_tiles_keep_the_full_size(tiny_checkpoint, tmp_path, capsys):
    Image.fromarray(photo(40, 600)).save(tmp_path / "p.png")
    for option in [["--size", "32"], ["--tile", "512"]]:  # tiny model: 96 px margins, so 2 tiles of 512
        out = tmp_path / option[0].strip("-")
        code, _, err = run(
            ["--input", tmp_path / "p.png", "--output", out, "--checkpoint", tiny_checkpoint, "--save-npy", *option],
            capsys,
        )
        assert code == 0, err
        assert np.load(out / "p_residual.npy").shape == (40, 600)
        assert pixel_size(out / "p_exposure.png") == (600, 40)


def test_missing_default_checkpoint_says_how_to_get_one(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runtime, "DEFAULT_CHECKPOINT", tmp_path / "pieanet_corpus.safetensors")
    monkeypatch.setattr(runtime, "DEFAULT_ONNX", tmp_path / "pieanet_corpus.onnx")  # no torch-free path without it
    code, out, err = run(["--input", SAMPLES, "--output", tmp_path / "out"], capsys)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert str(tmp_path / "pieanet_corpus.safetensors") in line and "train_wavelet.py --config" in line
    assert "wavelet_epoch_2" in line and not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04 broken zip"])
def test_unusable_checkpoint_is_one_sentence_and_exit_2(tmp_path, capsys, content):
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(content)
    code, _, err = run(["--input", SAMPLES, "--output", tmp_path / "out", "--checkpoint", checkpoint], capsys)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith(f"make_heatmap: {checkpoint}: ") and "Traceback" not in err


def test_usage_errors_exit_2(tiny_checkpoint, tmp_path, capsys):
    code, _, err = run(["--input", tmp_path / "missing", "--checkpoint", tiny_checkpoint], capsys)
    assert code == 2 and "no such file or folder" in err
    code, _, err = run(["--input", tmp_path, "--output", tmp_path / "out", "--checkpoint", tiny_checkpoint], capsys)
    assert code == 2 and "no images found" in err
    code, _, err = run(["--input", tmp_path, "--output", tmp_path, "--checkpoint", tiny_checkpoint], capsys)
    assert code == 2 and "output folder is the input folder" in err
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    code, _, err = run(
        ["--input", tmp_path, "--output", tmp_path / "a.png" / "out", "--checkpoint", tiny_checkpoint], capsys
    )
    assert code == 2 and "cannot write to the output folder" in err
    if not torch.cuda.is_available():
        code, _, err = run(
            ["--input", tmp_path, "--output", tmp_path / "out", "--checkpoint", tiny_checkpoint, "--device", "cuda"],
            capsys,
        )
        assert code == 2 and "no CUDA device" in err
    with pytest.raises(SystemExit) as info:
        make_heatmap.main(["--threshold", "1.5"])
    assert info.value.code == 2


@pytest.mark.slow
@pytest.mark.subprocess
def test_command_line_exit_code_and_clean_stderr(tiny_checkpoint, tmp_path):
    Image.new("RGB", (6, 5), (90, 90, 90)).save(tmp_path / "ok.png")
    (tmp_path / "bad.tif").write_bytes(b"II*\x00garbage")
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "make_heatmap.py"),
            "--input",
            str(tmp_path),
            "--output",
            str(tmp_path / "out"),
            "--checkpoint",
            str(tiny_checkpoint),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().startswith(f"make_heatmap: {tmp_path / 'bad.tif'}: ")
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert (tmp_path / "out" / "ok_exposure.png").is_file() and not list((tmp_path / "out").glob("bad*"))


@pytest.mark.slow
def test_released_weights_see_under_and_over_exposure(official_weights, shared_dir, tmp_path, capsys):
    photos = [shared_dir / "official" / name for name in ["test_low.jpg", "test1_high.jpg"]]
    if not all(p.is_file() for p in photos):
        pytest.skip(f"reference photos test_low.jpg / test1_high.jpg not found in {shared_dir / 'official'}")
    src = tmp_path / "in"
    src.mkdir()
    for p in photos:
        (src / p.name).symlink_to(p)
    code, _, err = run(
        ["--input", src, "--output", tmp_path / "out", "--checkpoint", official_weights, "--batch-size", "2"], capsys
    )
    assert code == 0, err
    summary = read_summary(tmp_path / "out")
    assert float(summary["test_low.jpg"]["mean_residual"]) > 0.2  # under-exposed (reference output: +0.334)
    assert float(summary["test1_high.jpg"]["mean_residual"]) < -0.2  # over-exposed (reference output: -0.245)
    assert pixel_size(tmp_path / "out" / "test_low_exposure.png") == pixel_size(photos[0])
