"""make_heatmap's index.html: read with html.parser, then driven in headless Chromium (skipped without it)."""

import csv
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
from PIL import Image

from pieanet import make_heatmap
from pieanet.heatmaps.report import ReportError, write_report

ODD_NAME = 'x<&"y.png'
PHOTO_SIZES = {"a.png": (40, 60), ODD_NAME: (50, 30), "sub/b #1.jpg": (32, 48), "c.png": (36, 36)}  # (h, w)
WINDOW = (1000, 1400)
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class Page(HTMLParser):
    """What the tests read from the page: the table's columns and rows, the gallery's sections, every img and a."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.body, self.columns, self.rows, self.sections, self.images, self.links = {}, [], [], [], [], []
        self._cell = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body":
            self.body = attrs
        elif tag == "th":
            self.columns.append(attrs["data-key"])
        elif tag == "tr" and "data-index" in attrs:
            self.rows.append({"attrs": attrs, "text": [], "value": []})
        elif tag == "td":
            self.rows[-1]["text"].append("")
            self.rows[-1]["value"].append(attrs["data-value"])
            self._cell = self.rows[-1]
        elif tag == "section":
            self.sections.append(attrs)
        elif tag == "img":
            self.images.append(attrs)
        elif tag == "a":
            self.links.append(attrs)

    def handle_endtag(self, tag):
        if tag == "td":
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"][-1] += data

    def cells(self, row, key):
        """(shown text, sort value) of a row's cell in column ``key``."""
        column = self.columns.index(key)
        return row["text"][column], row["value"][column]

    def files(self, visible_only=False):
        return [self.cells(row, "file")[0] for row in self.rows if not (visible_only and "hidden" in row["attrs"])]


def random_photo(path, height, width, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def report_run(tiny_checkpoint, tmp_path_factory):
    """Two runs into one folder: c.png fails in the first (not an image) and is fixed for the second, broken.jpg
    fails in both. Returns the folders, the page's text and summary.csv's latest row per file."""
    root = tmp_path_factory.mktemp("report")
    photos, out = root / "photos", root / "out"
    for seed, (name, (height, width)) in enumerate(PHOTO_SIZES.items()):
        random_photo(photos / name, height, width, seed)
    (photos / "broken.jpg").write_bytes(b"not a photo")
    (photos / "c.png").write_bytes(b"not a photo either")
    argv = [
        "--input",
        photos,
        "--recursive",
        "--output",
        out,
        "--checkpoint",
        tiny_checkpoint,
        "--overlay",
        "--threads",
        "1",
    ]
    assert make_heatmap.main([str(a) for a in argv]) == 1
    random_photo(photos / "c.png", *PHOTO_SIZES["c.png"], seed=9)
    assert make_heatmap.main([str(a) for a in argv]) == 1
    with open(out / "summary.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    latest = {row["file"]: row for row in rows}
    assert len(rows) == 5 and len(latest) == 5  # the second run replaced the first run's rows (issue 28)
    return {
        "photos": photos,
        "out": out,
        "page": out / "index.html",
        "latest": latest,
        "text": (out / "index.html").read_text(encoding="utf-8"),
    }


def test_one_row_and_one_card_per_photo_the_latest_row_wins(report_run):
    page, latest = Page(report_run["text"]), report_run["latest"]
    assert page.files() == sorted(latest) == sorted(["a.png", ODD_NAME, "sub/b #1.jpg", "c.png", "broken.jpg"])
    assert len(page.sections) == 5
    for row in page.rows:
        file = page.cells(row, "file")[0]
        assert row["attrs"]["data-status"] == page.cells(row, "status")[0] == latest[file]["status"]
        assert ("failed" in row["attrs"].get("class", "")) == (file == "broken.jpg")
        if file == "broken.jpg":
            assert page.cells(row, "error")[0] == latest[file]["error"] != ""
            assert page.cells(row, "pct_over") == ("-", "")
            continue
        height, width = PHOTO_SIZES[file]
        assert page.cells(row, "size") == (f"{width}x{height}", str(width * height))
        for key, decimals in [("mean_residual", 4), ("pct_over", 2), ("pct_under", 2), ("score", 3), ("stops", 2)]:
            text, value = page.cells(row, key)
            assert value == latest[file][key] and text == f"{float(latest[file][key]):.{decimals}f}"


def test_every_image_and_link_is_a_file_beside_the_page(report_run):
    out, photos, text = report_run["out"], report_run["photos"], report_run["text"]
    page = Page(text)
    targets = {}
    for attrs, key in [(a, "src") for a in page.images] + [(a, "href") for a in page.links]:
        url = attrs[key]
        assert not urlsplit(url).scheme, url
        targets.setdefault(key, set()).add(Path(os.path.normpath(out / unquote(url))))
    assert all(path.is_file() for paths in targets.values() for path in paths)
    shown = {photos / name for name in PHOTO_SIZES}
    shown |= {
        out / f"{stem}_{kind}.png" for stem in ["a", 'x<&"y', "sub/b #1", "c"] for kind in ["exposure", "overlay"]
    }
    assert targets["src"] == shown
    assert targets["href"] == shown | {photos / "broken.jpg"}  # a failed photo is linked, not shown
    assert all(img["loading"] == "lazy" for img in page.images)
    assert "http://" not in text.lower() and "https://" not in text.lower()
    assert "<link" not in text and "<script src" not in text


def test_file_names_are_escaped(report_run):
    text = report_run["text"]
    assert 'x<&"y' not in text
    assert "<h2>x&lt;&amp;&quot;y.png</h2>" in text and 'alt="photo of x&lt;&amp;&quot;y.png"' in text
    assert ODD_NAME in Page(text).files()


def test_the_legend_states_the_sign_convention_threshold_and_checkpoint(report_run, tiny_checkpoint):
    text = report_run["text"]
    assert "blue = under-exposed (r &gt; 0), white = ideal, red = over-exposed (r &lt; 0)" in text
    assert "threshold t = 0.1 " in text and f"checkpoint: {tiny_checkpoint}<" in text


def test_a_later_run_in_another_format_shows_its_files(tiny_checkpoint, tmp_path):
    random_photo(tmp_path / "in" / "a.png", 16, 16, seed=0)
    argv = ["--input", tmp_path / "in", "--output", tmp_path / "out", "--checkpoint", tiny_checkpoint, "--overlay"]
    assert make_heatmap.main([str(a) for a in argv]) == 0
    assert make_heatmap.main([str(a) for a in argv + ["--format", "jpg"]]) == 0
    # the first run's files go with its row: the folder holds the outputs of each photo's latest row
    assert sorted(p.name for p in (tmp_path / "out").glob("a_*")) == ["a_exposure.jpg", "a_overlay.jpg"]
    page = Page((tmp_path / "out" / "index.html").read_text(encoding="utf-8"))
    assert page.files() == ["a.png"]
    assert [img["src"] for img in page.images] == ["../in/a.png", "a_exposure.jpg", "a_overlay.jpg"]


def test_no_report_option_and_an_unusable_summary(tiny_checkpoint, tmp_path, capsys):
    random_photo(tmp_path / "in" / "a.png", 16, 16, seed=0)
    argv = ["--input", tmp_path / "in", "--output", tmp_path / "out", "--checkpoint", tiny_checkpoint, "--no-report"]
    assert make_heatmap.main([str(a) for a in argv]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        ".pieanet-outputs.csv",
        "a_exposure.png",
        "summary.csv",
    ]
    (tmp_path / "other.csv").write_text("name,value\na.png,1\n")
    with pytest.raises(ReportError, match=r"other\.csv: expected a make_heatmap summary with 'file' and 'status'"):
        write_report(tmp_path / "out", tmp_path / "other.csv", tmp_path / "in")
    assert not (tmp_path / "out" / "index.html").exists()


# ------------------------------------------------------------------------------------------------ headless Chromium
@pytest.fixture(scope="module")
def browser():
    found = next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)
    if found is None:
        pytest.skip(f"no headless Chromium to drive the page ({', '.join(BROWSERS)} not on PATH)")
    return found


def browse(browser, page, fragment, profile, *options):
    command = [
        browser,
        "--headless",
        "--disable-gpu",
        "--allow-file-access-from-files",
        "--no-first-run",
        "--virtual-time-budget=5000",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--user-data-dir={profile}",
        *options,
        page.as_uri() + fragment,
    ]
    if os.geteuid() == 0:
        command.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_sorting_by_a_number_from_the_fragment(browser, report_run, tmp_path, order):
    latest = report_run["latest"]
    dom = Page(browse(browser, report_run["page"], f"#sort=pct_over:{order}", tmp_path, "--dump-dom"))
    sign = -1 if order == "desc" else 1
    ok = sorted((sign * float(row["pct_over"]), file) for file, row in latest.items() if row["status"] == "ok")
    assert dom.files() == [file for _, file in ok] + ["broken.jpg"]  # no numbers: last either way
    assert len({value for value, _ in ok}) == len(ok)  # the order is decided by the numbers, not by ties
    assert [section["data-index"] for section in dom.sections] == [row["attrs"]["data-index"] for row in dom.rows]
    assert dom.body["data-sort"] == f"pct_over:{order}"


def test_the_failed_filter_hides_ok_photos(browser, report_run, tmp_path):
    dom = Page(browse(browser, report_run["page"], "#status=failed", tmp_path, "--dump-dom"))
    assert dom.files(visible_only=True) == ["broken.jpg"]
    assert len(dom.files()) == 5
    assert [s["data-index"] for s in dom.sections if "hidden" not in s] == [
        row["attrs"]["data-index"] for row in dom.rows if "hidden" not in row["attrs"]
    ]


def test_every_image_loads_and_the_page_renders(browser, report_run, tmp_path):
    dom = Page(browse(browser, report_run["page"], "", tmp_path / "dom", "--dump-dom"))
    assert len(dom.images) == 12  # 4 photos, each with its heatmap and overlay
    assert (dom.body["data-images-loaded"], dom.body["data-images-broken"], dom.body["data-images-pending"]) == (
        "12",
        "0",
        "0",
    )
    shot = tmp_path / "page.png"
    browse(browser, report_run["page"], "", tmp_path / "shot", f"--screenshot={shot}")
    with Image.open(shot) as img:
        assert img.size == WINDOW
        pixels = np.asarray(img.convert("RGB")).reshape(-1, 3).astype(int)
    assert len(np.unique(pixels, axis=0)) > 1000  # the random photos, not a blank page
    red, green, blue = pixels.T
    assert ((blue > 200) & (red < 60) & (green < 60)).any() and ((red > 200) & (blue < 60) & (green < 60)).any()
