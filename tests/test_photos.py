"""datasets/photos.py on a tiny fake .deb built here: plain files, a symlink, a Qt .rcc bundle, an embedded JPEG."""

import csv
import hashlib
import io
import shutil
import struct
import subprocess
import zlib

import numpy as np
import pytest
from PIL import Image

from pieanet.datasets import photos

PACKAGE, VERSION = "fakephotos", "1:1.0-1"
SHARE = "/usr/share/fakephotos"


def image_bytes(size, fmt, seed):
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def rcc_bundle(directory, name, payload):
    """A format-3 Qt resource bundle holding /<directory>/<name>, zlib-compressed (qCompress: length + zlib)."""
    names = b"".join(struct.pack(">HI", len(n), 0) + n.encode("utf-16-be") for n in (directory, name))
    compressed = struct.pack(">I", len(payload)) + zlib.compress(payload)
    data = struct.pack(">I", len(compressed)) + compressed
    mtime = struct.pack(">Q", 0)
    tree = (
        struct.pack(">IHII", 0, 2, 1, 1)
        + mtime  # root: 1 child, starting at node 1
        + struct.pack(">IHII", 0, 2, 1, 2)
        + mtime  # directory: 1 child, node 2
        + struct.pack(">IHHHI", 6 + 2 * len(directory), 1, 0, 0, 0)
        + mtime
    )  # file, zlib, data offset 0
    header_size = 24
    return (
        b"qres"
        + struct.pack(">5I", 3, header_size, header_size + len(tree), header_size + len(tree) + len(data), 0)
        + tree
        + data
        + names
    )


@pytest.fixture(scope="module")
def fake_deb(tmp_path_factory):
    """A cache folder holding fakephotos_1%3a1.0-1_all.deb, a manifest for it, and the expected photo bytes."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb not found (Debian's dpkg is needed to read .deb files)")
    tmp = tmp_path_factory.mktemp("deb")
    root = tmp / "root"
    share = root / SHARE.lstrip("/")
    share.mkdir(parents=True)
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN" / "control").write_text(
        f"Package: {PACKAGE}\nVersion: {VERSION}\nArchitecture: all\n"
        "Maintainer: Test <test@example.org>\nDescription: test photos\n"
    )
    expected = {
        "a.jpg": image_bytes((24, 16), "JPEG", 0),
        "b.png": image_bytes((10, 12), "PNG", 1),
        "bundle_c.png": image_bytes((8, 6), "PNG", 2),
        "theme.jpg": image_bytes((32, 20), "JPEG", 3),
    }
    expected["link.jpg"] = expected["a.jpg"]
    (share / "a.jpg").write_bytes(expected["a.jpg"])
    (share / "b.png").write_bytes(expected["b.png"])
    (share / "link.jpg").symlink_to("a.jpg")
    (share / "bundle.rcc").write_bytes(rcc_bundle("img", "c.png", expected["bundle_c.png"]))
    # a binary file with a small JPEG, the photo, and a truncated JPEG larger than both
    truncated = image_bytes((64, 64), "JPEG", 4)[:-200]
    (share / "theme.edj").write_bytes(
        b"edje\0" + image_bytes((8, 8), "JPEG", 5) + b"\0" * 7 + expected["theme.jpg"] + b"\xff\xd8" + truncated
    )
    cache = tmp / "cache"
    cache.mkdir()
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(cache / f"{PACKAGE}_1%3a1.0-1_all.deb")],
        check=True,
        capture_output=True,
    )
    members = {
        "a.jpg": f"{SHARE}/a.jpg",
        "b.png": f"{SHARE}/b.png",
        "link.jpg": f"{SHARE}/link.jpg",
        "bundle_c.png": f"{SHARE}/bundle.rcc:/img/c.png",
        "theme.jpg": f"{SHARE}/theme.edj#largest-jpeg",
    }
    licenses = {name: f"CC0-1.0 ({name})" for name in members}
    manifest = tmp / "manifest.tsv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["package", "version", "member", "license"])
        for name, member in members.items():
            writer.writerow([PACKAGE, VERSION, member, licenses[name]])
        writer.writerow([PACKAGE, VERSION, f"{SHARE}/missing.jpg", "CC0-1.0"])
    return {"cache": cache, "manifest": manifest, "expected": expected, "members": members, "licenses": licenses}


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_extracts_photos_and_reports_missing_member(fake_deb, tmp_path, capsys):
    out = tmp_path / "photos"
    code = photos.build_photos(out, fake_deb["cache"], manifest=fake_deb["manifest"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"{SHARE}/missing.jpg" in err and "not found in the package" in err and len(err.strip().splitlines()) == 1

    files = snapshot(out)
    assert set(files) == {f"{PACKAGE}/{name}" for name in fake_deb["expected"]} | {"photos.csv"}
    for name, data in fake_deb["expected"].items():
        assert files[f"{PACKAGE}/{name}"] == data, name

    rows = list(csv.DictReader(io.StringIO(files["photos.csv"].decode())))
    assert list(rows[0]) == photos.CSV_COLUMNS
    assert [row["file"] for row in rows] == sorted(f"{PACKAGE}/{name}" for name in fake_deb["expected"])
    for row in rows:
        name = row["file"].split("/")[1]
        data = fake_deb["expected"][name]
        assert row["package"] == PACKAGE and row["version"] == VERSION
        assert row["member"] == fake_deb["members"][name] and row["license"] == fake_deb["licenses"][name]
        assert row["sha256"] == hashlib.sha256(data).hexdigest()
        assert (int(row["width"]), int(row["height"])) == Image.open(io.BytesIO(data)).size

    listed = photos.read_photo_list(out)
    assert [p["path"] for p in listed] == [out.resolve() / row["file"] for row in rows]
    assert all(p["path"].is_absolute() and p["path"].is_file() and isinstance(p["width"], int) for p in listed)

    # again into the same folder and into a fresh one: the same bytes, and no temporary files anywhere
    assert photos.build_photos(out, fake_deb["cache"], manifest=fake_deb["manifest"]) == 1
    fresh = tmp_path / "fresh"
    assert photos.build_photos(fresh, fake_deb["cache"], manifest=fake_deb["manifest"]) == 1
    assert snapshot(out) == files == snapshot(fresh)
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]
    assert not [p for p in fake_deb["cache"].iterdir() if p.suffix != ".deb"]


def test_rerun_skips_photos_already_written(fake_deb, tmp_path):
    manifest = tmp_path / "complete.tsv"
    manifest.write_text(
        "".join(
            line for line in fake_deb["manifest"].read_text().splitlines(keepends=True) if "missing.jpg" not in line
        )
    )
    cache = tmp_path / "cache"
    shutil.copytree(fake_deb["cache"], cache)
    out = tmp_path / "photos"
    assert photos.build_photos(out, cache, manifest=manifest) == 0
    first = snapshot(out)
    for deb in cache.glob("*.deb"):  # a second run must need neither the .deb nor apt-get
        deb.unlink()
    assert photos.build_photos(out, cache, manifest=manifest) == 0
    assert snapshot(out) == first
    (out / PACKAGE / "b.png").write_bytes(b"damaged")  # a file that changed is written again
    shutil.copytree(fake_deb["cache"], cache, dirs_exist_ok=True)
    assert photos.build_photos(out, cache, manifest=manifest, packages={PACKAGE}) == 0
    assert snapshot(out) == first


def test_nothing_fetched_is_exit_code_2(fake_deb, tmp_path, monkeypatch, capsys):
    def offline(package, version, cache):
        raise RuntimeError("apt-get download failed: no network")

    monkeypatch.setattr(photos, "fetch_deb", offline)
    assert photos.build_photos(tmp_path / "photos", tmp_path / "cache", manifest=fake_deb["manifest"]) == 2
    err = capsys.readouterr().err
    assert err.count(PACKAGE) == 1 and "no network" in err


RESERVED = ("mate-backgrounds", "budgie-backgrounds", "wordpress-theme-")  # for measurement only, never trained on


@pytest.mark.parametrize("manifest", [photos.MANIFEST, photos.KEYS_MANIFEST], ids=lambda path: path.name)
def test_photo_names_are_unique_in_the_shipped_manifests(manifest):
    rows = photos.load_manifest(manifest)
    files = {(row["package"], photos.photo_name(row["member"])) for row in rows}
    assert len(files) == len(rows)
    assert {row["package"] for row in rows} >= {"endless-sky-high-dpi", "gcompris-qt-data", "krank"}
    assert all(row["version"] and row["license"] and not row["package"].startswith("pypi:") for row in rows)
    assert not [row for row in rows if row["package"].startswith(RESERVED)]


def test_the_key_photos_are_not_in_the_main_manifest():
    main = {(row["package"], row["member"]) for row in photos.load_manifest()}
    assert not main & {(row["package"], row["member"]) for row in photos.load_manifest(photos.KEYS_MANIFEST)}


def test_another_manifest_is_read_by_the_command_line(fake_deb, tmp_path):
    assert (
        photos.main(
            ["--out", str(tmp_path / "out"), "--cache", str(fake_deb["cache"]), "--manifest", str(fake_deb["manifest"])]
        )
        == 1
    )  # the fake manifest also names a missing member
    assert len(photos.read_photo_list(tmp_path / "out")) == len(fake_deb["members"])
    (tmp_path / "bad.tsv").write_text("package\tmember\nfake\t/a.jpg\n")  # no version column
    for manifest in ("none.tsv", "bad.tsv"):
        with pytest.raises(SystemExit) as exit_info:
            photos.main(["--out", str(tmp_path / "x"), "--manifest", str(tmp_path / manifest)])
        assert exit_info.value.code == 2 and not (tmp_path / "x").exists()


def test_unknown_package_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        photos.main(["--out", str(tmp_path), "--packages", "no-such-package"])
    assert exit_info.value.code == 2
