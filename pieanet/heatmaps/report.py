"""The report page of make_heatmap: ``<output>/index.html``, one self-contained file (inline style and script; it
fetches nothing but the images it shows, by paths relative to itself).

It is built from summary.csv as it is on disk, so it shows every run into the folder; a photo (its source column) with
several rows shows its last, its heatmap and overlay the files that row records (outputs.py, recorded_files;
nothing is looked for by name). Per photo: its numbers in a table (click a header to sort, click again to reverse)
and the photo beside its heatmap and overlay, loaded lazily and linked to the full files. The view lives in the URL
fragment and is applied on load, so a link reproduces it: ``index.html#sort=pct_over:desc&status=failed`` (sort = a
column key and asc|desc, status = all, ok or failed). ``<body>`` counts the images as they settle: data-images-loaded,
data-images-broken and data-images-pending (0 once every image has loaded or failed; an image the filter hides may
never be fetched).
"""

import html
import math
import os
import stat
from pathlib import Path
from urllib.parse import quote

import numpy as np

from pieanet.utils.errors import EXIT_USAGE, PieaError
from pieanet.utils.heatmap import colorize
from pieanet.utils.folders import NOFOLLOW
from pieanet.utils.image_io import atomic_write
from pieanet.heatmaps.outputs import COLORBAR, HEATMAP, OVERLAY, recorded_files
from pieanet.utils.shipped import trust_statement
from pieanet.utils.safety import printable
from pieanet.heatmaps.summary import UnreadableSummary, read_table

REPORT_NAME = "index.html"
# in every page make_heatmap writes, so it can tell its own index.html from a user's (which it never replaces)
GENERATOR = '<meta name="generator" content="P-IEA make_heatmap">'
# pages of versions before GENERATOR: their <body> tag, found only in the pages they wrote
EARLIER_SIGNATURE = '<body data-images-loaded="0" data-images-broken="0"><h1>Exposure heatmaps: '
LABELS = {
    "file": "file",
    "size": "size (px)",
    "mean_residual": "mean r",
    "mean_abs_residual": "mean |r|",
    "pct_over": "% over",
    "pct_under": "% under",
    "score": "holistic score",
    "stops": "correction (stops)",
    "vmax": "vmax (colour scale)",
    "pct_raw_clipped": "% raw clipped",
    "status": "status",
    "error": "error",
}
DECIMALS = {
    "mean_residual": 4,
    "mean_abs_residual": 4,
    "pct_over": 2,
    "pct_under": 2,
    "score": 3,
    "stops": 2,
    "vmax": 3,
}
BROWSER_FORMATS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".avif"})  # photos shown inline
# make_heatmap's bookkeeping: in summary.csv, not shown
HIDDEN_COLUMNS = frozenset({"source", "output", "settings", "photo_sha256", "output_kinds"})

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fff; }
h1 { font-size: 1.4em; margin: 0 0 .3em; } h2 { font-size: 1em; margin: 0 0 .4em; word-break: break-all; }
[hidden] { display: none !important; }
.legend { display: flex; flex-wrap: wrap; gap: .4em 2em; align-items: center; margin: .8em 0; }
.bar { width: 18em; height: 1em; border: 1px solid #999; }
.bar-labels { display: flex; justify-content: space-between; width: 18em; font-size: .85em; }
.controls button { margin-right: .4em; } .controls button[aria-pressed="true"] { font-weight: bold; }
table { border-collapse: collapse; margin: .8em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: .2em .5em; text-align: left; vertical-align: top; }
th { background: #eee; position: sticky; top: 0; }
th button { font: inherit; font-weight: bold; border: 0; background: none; cursor: pointer; padding: 0; }
th[aria-sort="ascending"] button::after { content: " \\25B2"; }
th[aria-sort="descending"] button::after { content: " \\25BC"; }
td.number { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.failed td, .photo.failed { background: #fde8e8; }
.photo { border-top: 1px solid #ccc; padding: .8em 0; }
.images { display: flex; flex-wrap: wrap; gap: .8em; }
figure { margin: 0; } figcaption { font-size: .85em; color: #555; }
figure img { height: 220px; width: auto; max-width: 100%; border: 1px solid #ddd; display: block; }
.missing, .error { color: #a00; }
"""

SCRIPT = """
"use strict";
(function () {
  // load and error do not bubble; listening in the capture phase from <head> sees every image, however early
  const settled = new Set();
  let loaded = 0, broken = 0;
  function record() {
    const body = document.body;
    if (!body) return;
    body.dataset.imagesLoaded = loaded;
    body.dataset.imagesBroken = broken;
    body.dataset.imagesPending = document.images.length - loaded - broken;
  }
  function settle(event) {
    const img = event.target;
    if (!(img instanceof HTMLImageElement) || settled.has(img)) return;
    settled.add(img);
    if (event.type === "load") loaded++; else { broken++; img.closest("figure").classList.add("missing"); }
    record();
  }
  document.addEventListener("load", settle, true);
  document.addEventListener("error", settle, true);

  document.addEventListener("DOMContentLoaded", function () {
    const table = document.getElementById("summary");
    const tbody = table.tBodies[0];
    const gallery = document.getElementById("gallery");
    const rows = Array.from(tbody.rows);
    const cards = new Map(Array.from(gallery.children).map(card => [card.dataset.index, card]));
    const headers = Array.from(table.tHead.rows[0].cells);
    const filters = Array.from(document.querySelectorAll("button[data-status]"));
    const shownCount = document.getElementById("shown");
    const state = {sort: null, order: "asc", status: "all"};

    function readFragment() {
      const params = new URLSearchParams(location.hash.slice(1));
      const [key, order] = (params.get("sort") || "").split(":");
      state.sort = headers.some(h => h.dataset.key === key) ? key : null;
      state.order = order === "desc" ? "desc" : "asc";
      state.status = params.get("status") || "all";
    }
    function writeFragment() {
      const parts = [];
      if (state.sort) parts.push("sort=" + encodeURIComponent(state.sort) + ":" + state.order);
      if (state.status !== "all") parts.push("status=" + encodeURIComponent(state.status));
      const hash = parts.length ? "#" + parts.join("&") : "";
      if (location.hash !== hash) history.replaceState(null, "", (hash || location.pathname + location.search));
    }
    function value(row, column, type) {
      const raw = row.cells[column].dataset.value;
      if (type === "number") { const v = parseFloat(raw); return Number.isNaN(v) ? null : v; }
      return raw === "" ? null : raw;
    }
    function ordered() {
      const column = headers.findIndex(h => h.dataset.key === state.sort);
      if (column < 0) return rows;
      const type = headers[column].dataset.type, sign = state.order === "desc" ? -1 : 1;
      // empty cells (a failed photo has no numbers) go last either way; ties keep file order
      return rows.map((row, i) => [value(row, column, type), i, row]).sort(function (a, b) {
        if (a[0] === null || b[0] === null) return (a[0] === null) - (b[0] === null) || a[1] - b[1];
        return sign * (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0) || a[1] - b[1];
      }).map(entry => entry[2]);
    }
    function apply() {
      let shown = 0;
      for (const row of ordered()) {
        const card = cards.get(row.dataset.index);
        const visible = state.status === "all" || row.dataset.status === state.status;
        row.hidden = card.hidden = !visible;
        shown += visible;
        tbody.appendChild(row);
        gallery.appendChild(card);
      }
      for (const h of headers) {
        h.setAttribute("aria-sort", h.dataset.key !== state.sort ? "none"
                       : state.order === "desc" ? "descending" : "ascending");
      }
      for (const b of filters) b.setAttribute("aria-pressed", String(b.dataset.status === state.status));
      shownCount.textContent = shown;
      document.body.dataset.sort = state.sort ? state.sort + ":" + state.order : "";
      document.body.dataset.status = state.status;
    }
    for (const h of headers) {
      h.querySelector("button").addEventListener("click", function () {
        if (state.sort === h.dataset.key) state.order = state.order === "asc" ? "desc" : "asc";
        else { state.sort = h.dataset.key; state.order = "asc"; }
        writeFragment();
        apply();
      });
    }
    for (const b of filters) {
      b.addEventListener("click", function () { state.status = b.dataset.status; writeFragment(); apply(); });
    }
    window.addEventListener("hashchange", function () { readFragment(); apply(); });
    readFragment();
    apply();
    record();
  });
})();
"""


class ReportError(PieaError):
    """index.html could not be built or written; the message names the file."""

    exit_code = EXIT_USAGE


def read_summary(path):
    """(column names, rows) of summary.csv, one row per photo (its last), in file order. A photo is its source (the
    same file name may come from several input folders), or its file in a summary without that column."""
    try:
        header, rows = read_table(path)
    except UnreadableSummary as e:
        raise ReportError(str(e)) from e
    if not {"file", "status"} <= set(header):
        raise ReportError(
            f"{path}: expected a make_heatmap summary with 'file' and 'status' columns, "
            f"found {', '.join(header) or 'none'}"
        )
    latest = {row.get("source") or row["file"]: row for row in rows if row["file"]}
    return header, sorted(latest.values(), key=lambda row: (row["file"], row.get("source", "")))


def table_columns(header):
    """Column keys in summary order, width and height shown together as 'size', HIDDEN_COLUMNS left out."""
    keys = []
    for key in header:
        key = "size" if key in ("width", "height") else key
        if key not in keys and key not in HIDDEN_COLUMNS:
            keys.append(key)
    return keys


def number(text):
    try:
        return float(text)
    except ValueError:
        return None


def column_type(key, rows):
    if key == "size":
        return "number"
    if key in ("file", "status", "error"):
        return "text"
    values = [row[key] for row in rows if row.get(key, "") != ""]
    return "number" if values and all(number(v) is not None for v in values) else "text"


def shown_columns(header, rows):
    """table_columns less those empty in every row (e.g. % raw clipped of a run without RAW files); file and status
    always."""
    return [
        key
        for key in table_columns(header)
        if key in ("file", "status") or any(cell(key, "text", row)[0] != "" for row in rows)
    ]


def cell(key, kind, row):
    """(sort value, shown text) of one table cell; the correction in stops with its sign (+ more light)."""
    if key == "size":
        width, height = number(row.get("width", "")), number(row.get("height", ""))
        if width is None or height is None:
            return "", "-"
        return f"{width * height:g}", f"{row['width']}x{row['height']}"
    text = row.get(key, "")
    if kind == "number" and text != "":
        return text, f"{float(text):{'+' if key == 'stops' else ''}.{DECIMALS.get(key, 3)}f}"
    return text, text or ("-" if kind == "number" else "")


def link(target, page_dir):
    """The URL of ``target`` relative to the page's folder (an absolute file URL where no relative path exists)."""
    try:
        relative = os.path.relpath(os.path.abspath(target), os.path.abspath(page_dir))
    except ValueError:  # another drive on Windows
        return Path(os.path.abspath(target)).as_uri()
    return quote(Path(relative).as_posix())


def found_outputs(output_dir, row):
    """{role: path} of the output files ``row`` records (outputs.py) that are in ``output_dir``."""
    paths = {role: output_dir / name for role, name in recorded_files(row).items()}
    return {role: path for role, path in paths.items() if path.is_file()}


def figure(caption, target, page_dir, row, note=None):
    """One image of a photo's card, linked to the full file; only the link (and ``note``) when a note is given, a
    line saying so when the file does not exist."""
    if target is None:
        return f'<figure class="missing"><figcaption>{caption}: not found</figcaption></figure>'
    url = html.escape(link(target, page_dir))
    if note is not None:
        return f'<figure><figcaption><a href="{url}">{caption}</a>{note}</figcaption></figure>'
    width, height = (number(row.get(key, "")) for key in ("width", "height"))
    # the photo's size reserves each image's box before it loads (a lazy image's position depends on the others)
    size = f' width="{width:.0f}" height="{height:.0f}"' if width and height and math.isfinite(width * height) else ""
    alt = html.escape(f"{caption} of {row['file']}")
    return (
        f'<figure><a href="{url}"><img src="{url}" loading="lazy" alt="{alt}"{size}></a>'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def photo_card(index, row, photo, files, page_dir):
    """The photo, its heatmap and its overlay side by side (a failed photo: its error and a link to it); ``files``:
    {role: path} of the outputs the row records that exist (found_outputs)."""
    ok = row["status"] == "ok"
    parts = [
        f'<section class="photo{"" if ok else " failed"}" data-index="{index}">',
        f"<h2>{html.escape(row['file'])}</h2>",
    ]
    if not ok:
        parts.append(f'<p class="error">{html.escape(row["status"])}: {html.escape(row.get("error", ""))}</p>')
        note = ""
    elif photo.suffix.lower() not in BROWSER_FORMATS:
        note = " (not shown: a format browsers do not display)"
    else:
        note = None
    figures = [figure("photo", photo if photo.is_file() else None, page_dir, row, note)]
    if ok:
        figures.append(figure("heatmap", files.get(HEATMAP), page_dir, row))
        if OVERLAY in files:
            figures.append(figure("overlay", files[OVERLAY], page_dir, row))
        if COLORBAR in files:
            figures.append(figure("with colour bar", files[COLORBAR], page_dir, row))
    parts += ['<div class="images">', *figures, "</div></section>"]
    return "".join(parts)


def legend(threshold, checkpoint):
    steps = np.linspace(1.0, -1.0, 9)
    colours = colorize(steps[None, :])[0]
    stops = ", ".join(f"rgb({r},{g},{b}) {100 * i / (len(steps) - 1):g}%" for i, (r, g, b) in enumerate(colours))
    settings = []
    if threshold is not None:
        settings.append(
            f"threshold t = {threshold:g} (% over: share of pixels with r &lt; &minus;t; % under: r &gt; t)"
        )
    if checkpoint is not None:
        settings.append(f"checkpoint: {html.escape(printable(str(checkpoint)))}")
    return (
        '<div class="legend"><div><div class="bar" style="background: linear-gradient(to right, '
        f'{stops})"></div><div class="bar-labels"><span>under (r &gt; 0)</span><span>ideal</span>'
        "<span>over (r &lt; 0)</span></div></div>"
        "<p>r = (grey(ideal) &minus; grey(photo)) / 255 per pixel: blue = under-exposed (r &gt; 0), white = "
        "ideal, red = over-exposed (r &lt; 0); a heatmap's colours are full at |r| = its vmax. "
        "Holistic score = 10 (1 &minus; mean |r|). Correction (stops) = the exposure change the map implies: "
        "the median over unclipped pixels of log<sub>2</sub> of the linear-light ratio of grey + 255 r to grey "
        "(+1 = one stop more light, &minus;1 = one stop less; 0 = as it should be). Two views of the same map "
        "(make_heatmap --map): r in grey levels grows with a pixel's brightness, so one global error looks "
        "strongest in the highlights; --map stops draws the correction per pixel in stops, where it is one flat "
        "colour. A grey checkerboard marks pixels not judged (transparent; in the stops view also clipped or "
        f"crushed).<br>{'<br>'.join(settings)}"
        + (
            "<br>(the settings of the latest run; earlier runs into this folder may have used others)"
            if settings
            else ""
        )
        + "</p></div>"
    )


def render(header, rows, photos, files, page_dir, title, threshold=None, checkpoint=None):
    keys = shown_columns(header, rows)
    types = {key: column_type(key, rows) for key in keys}
    trust = trust_statement(checkpoint)
    failed = sum(row["status"] != "ok" for row in rows)
    head = "".join(
        f'<th data-key="{html.escape(key)}" data-type="{types[key]}" aria-sort="none">'
        f'<button type="button">{html.escape(LABELS.get(key, key))}</button></th>'
        for key in keys
    )
    body = []
    for index, row in enumerate(rows):
        cells = []
        for key in keys:
            value, text = cell(key, types[key], row)
            cells.append(f'<td class="{types[key]}" data-value="{html.escape(value)}">{html.escape(text)}</td>')
        status = html.escape(row["status"])
        marked = "" if status == "ok" else ' class="failed"'
        body.append(f'<tr data-index="{index}" data-status="{status}"{marked}>{"".join(cells)}</tr>')
    cards = "".join(
        photo_card(index, row, photo, found, page_dir)
        for index, (row, photo, found) in enumerate(zip(rows, photos, files))
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">{GENERATOR}'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style><script>{SCRIPT}</script></head>\n"
        f'<body data-images-loaded="0" data-images-broken="0">'
        f"<h1>{html.escape(title)}</h1>"
        + (f'<p class="trust"><strong>How far to trust these maps:</strong> {html.escape(trust)}</p>' if trust else "")
        + f"<p>{len(rows)} photos, {failed} failed (from summary.csv; a photo run more than once shows its latest "
        "row). Click a column header to sort, again to reverse.</p>"
        f"{legend(threshold, checkpoint)}"
        f'<p class="controls">Show: <button type="button" data-status="all">all ({len(rows)})</button>'
        f'<button type="button" data-status="failed">failed only ({failed})</button> '
        f'<span id="shown">{len(rows)}</span> shown</p>'
        f'<table id="summary"><thead><tr>{head}</tr></thead><tbody>\n{chr(10).join(body)}\n</tbody></table>'
        f'<div id="gallery">\n{cards}\n</div></body></html>\n'
    )


def check_replaceable(output_dir):
    """Raise ReportError unless ``output_dir``/index.html is missing or a page make_heatmap wrote (GENERATOR, or an
    earlier version's EARLIER_SIGNATURE): a user's own index.html, or a link in its place, is never replaced."""
    page = Path(output_dir) / REPORT_NAME
    try:
        fd = os.open(page, os.O_RDONLY | NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except (FileNotFoundError, NotADirectoryError):  # no page (an output folder that cannot be is said elsewhere)
        return
    except OSError as e:
        ours = False
        reason = "is a symbolic link" if page.is_symlink() else f"cannot be read ({e.strerror or e})"
    else:
        with open(fd, "rb") as f:
            head = f.read(1 << 18) if stat.S_ISREG(os.fstat(f.fileno()).st_mode) else b""
        ours = GENERATOR.encode() in head or EARLIER_SIGNATURE.encode() in head
        reason = "is not a page make_heatmap wrote"
    if not ours:
        raise ReportError(
            f"{page}: exists and {reason}; it is never replaced: move it away, choose another "
            "--output, or use --no-report"
        )


def write_report(output_dir, summary_csv, input_base, threshold=None, checkpoint=None):
    """Write ``output_dir``/index.html (atomically) from ``summary_csv``: each photo at its source (relative to
    ``output_dir``; in a summary without that column, its file relative to the folder ``input_base``), its outputs
    those the row records; ``threshold`` and ``checkpoint`` are the run's, stated in the legend. Returns its path;
    raises ReportError."""
    output_dir, input_base = Path(output_dir), Path(input_base)
    header, rows = read_summary(summary_csv)
    photos = [output_dir / row["source"] if row.get("source") else input_base / row["file"] for row in rows]
    files = [found_outputs(output_dir, row) for row in rows]
    page = output_dir / REPORT_NAME
    check_replaceable(output_dir)
    text = render(
        header,
        rows,
        photos,
        files,
        output_dir,
        f"Exposure heatmaps: {printable(output_dir.resolve().name)}",
        threshold,
        checkpoint,
    )
    try:
        with atomic_write(page) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as e:
        raise ReportError(f"{page}: could not write the report ({e.strerror or e})") from e
    return page
