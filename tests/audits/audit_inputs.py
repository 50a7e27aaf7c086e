"""Hostile inputs of issue 18's classes 6, 7, 8 and 10 against a P-IEA checkout; prints a table by class.

    nice -n 15 python -m tests.audits.audit_inputs --repo PATH [--work DIR] [--only 6,7,8,10] [--json out.json]

Every command runs as a child process of PATH's flat scripts, under a CPU-time limit (RLIMIT_CPU, 60 s by default:
fair on a busy machine, where wall time says little), a wall-clock safety net and a memory limit (RLIMIT_AS, 3 GB by
default: the multi-GB cases are bounded so the audit cannot take the machine), with one CPU thread. A run that covers
many cases (one make_heatmap run over 30 hostile file names) judges each case on its own part of the result (its row,
its cells, its name on the terminal); a traceback, a timeout or a kill makes every case of that run bad.

Verdicts per case:
    clean     the expected outcome: done, or refused in one line naming the problem, within the limits
    bad       a traceback, a timeout, a kill, an out-of-memory, a wrong result (a nan score marked ok, a photo failed
              only because of its name, a --resume that does not recognise its own rows)
    security  a spreadsheet formula in a CSV cell the tool wrote, a raw control character (escape sequence) printed
              to the terminal, a markdown table whose rows a name broke apart
    data lost a user's file in the folder removed or rows of summary.csv lost
Classes: 6 output encoding (CSV, markdown), 7 terminal, 8 cost bounded before work, 10 one line for malformed input.
"""

import argparse
import csv
import io
import json
import os
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # tab and newline are a terminal's ordinary text
FORMULA = re.compile(r"^[ ]*[=+\-@\t\r]")
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
RESULTS = []  # (class, case, verdict, note)


def record(klass, case, verdict, note=""):
    RESULTS.append((klass, case, verdict, note))
    print(f"[{klass:>2}] {verdict:<9} {ascii(case)[:70]:<72} {note[:90]}", flush=True)


class Runner:
    def __init__(self, repo, work, memory, timeout, cpu):
        self.repo, self.work, self.memory, self.timeout = Path(repo).resolve(), Path(work), memory, timeout
        self.cpu = cpu
        self.env = dict(
            os.environ,
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            PYTHONDONTWRITEBYTECODE="1",
            MPLBACKEND="Agg",
            PYTHONPATH=str(Path(repo).resolve()),
        )

    def limits(self):
        resource.setrlimit(resource.RLIMIT_AS, (self.memory, self.memory))
        resource.setrlimit(resource.RLIMIT_CPU, (self.cpu, self.cpu + 10))  # CPU seconds: fair on a busy machine
        os.setsid()

    def run(self, script, *args, timeout=None, stdin=None):
        """(exit code or 'timeout', stdout, stderr), both as text with undecodable bytes kept as surrogates."""
        command = [sys.executable, str(self.repo / script), *map(str, args)]
        process = subprocess.Popen(
            command,
            cwd=self.work,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            preexec_fn=self.limits,
        )
        try:
            out, err = process.communicate(timeout=timeout or self.timeout)
            code = process.returncode
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            code = "timeout"
        decode = lambda b: b.decode("utf-8", "surrogateescape")  # noqa: E731
        return code, decode(out), decode(err)


def failure(code, err):
    """Why a run is bad as a whole, or None."""
    if code == "timeout":
        return "timed out"
    if code in (-signal.SIGXCPU, -signal.SIGKILL):
        return "killed at the CPU-time limit"
    if isinstance(code, int) and code < 0:
        return f"killed by signal {-code}"
    if "Traceback (most recent call last)" in err:
        return "traceback: " + (err.strip().splitlines() or ["?"])[-1][:80]
    if "MemoryError" in err and "out of memory" not in err:
        return "MemoryError"
    return None


def one_line_refusal(code, err, expect_codes=(1, 2)):
    """A run that should refuse its input: one of the expected exit codes, no traceback, a message."""
    bad = failure(code, err)
    if bad:
        return "bad", bad
    if code not in expect_codes:
        return "bad", f"exit {code}, expected a refusal ({'/'.join(map(str, expect_codes))})"
    if not err.strip():
        return "bad", "refused without a message"
    return "clean", (err.strip().splitlines() or [""])[-1][:90]


def terminal_raw(text):
    return bool(CONTROL.search(text))


# ------------------------------------------------------------------------------------------------ inputs
def photo(path, size=(96, 64), seed=0):
    rng = np.random.default_rng(seed)
    image = (rng.random((size[1], size[0], 3)) * 200 + 20).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="PNG" if path.suffix.lower() == ".png" else "JPEG")
    return path


def one_bit_png(path, side):
    """A 1-bit PNG of side x side black pixels, compressed as deflate allows (about 1,000:1)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = zlib.compress(b"\0" * ((side + 7) // 8 + 1) * side, 9)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
        + chunk(b"IDAT", raw)
        + chunk(b"IEND", b"")
    )
    return path


def tiny_tiff(path, side):
    Image.new("1", (side, side)).save(path, compression="tiff_adobe_deflate")


def scans_jpeg(path, side, repeats):
    buffer = io.BytesIO()
    Image.fromarray((np.indices((side, side)).sum(0) % 256).astype(np.uint8)).convert("RGB").save(
        buffer, "JPEG", progressive=True, quality=90
    )
    data = buffer.getvalue()
    last = data.rindex(b"\xff\xda")
    path.write_bytes(data[:last] + data[last:-2] * repeats + b"\xff\xd9")


def cell(rows, row, column):
    """``row``'s cell of the named column of a CSV read by csv_cells (its first row is the header); "" if absent."""
    header = rows[0] if rows else []
    index = header.index(column) if column in header else -1
    return row[index] if 0 <= index < len(row) else ""


def csv_cells(path):
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        return list(csv.reader(f))


def formula_cells(rows):
    return [cell for row in rows for cell in row if FORMULA.match(cell) and not NUMBER.fullmatch(cell)]


# ------------------------------------------------------------------------------------------------ class 6
FORMULA_NAMES = [
    "=1+1",
    "+1+2",
    "-2+3",
    "@SUM(1,2)",
    "\t=1+1",
    "\r=1+1",
    " =1+1",
    "'=1+1",
    "''x",
    '=HYPERLINK("http:⁄⁄evil","x")',
    '=IMPORTXML(CONCAT("http:⁄⁄e",A1),"⁄⁄a")',
    "+cmd|' ⁄C calc'!A0",
    "-cmd",
    "@cmd",
    '=WEBSERVICE("x")',
    '=DDE("cmd","⁄C calc","x")',
    "==",
    "=",
    "+",
    "-",
    "@",
    "=-1",
    "+-+",
    "-=",
    "@@",
    "=A1&A2",
    "=1|2",
    "a|b",
    "|",
    "||x",
]


def class6(runner, root):
    folder = root / "c6" / "photos"
    names = {name: f"{name}.png" for name in FORMULA_NAMES}
    for i, file in enumerate(names.values()):
        photo(folder / file, seed=i)
    output = root / "c6" / "out"
    (output).mkdir(parents=True)
    (output / "user_notes.txt").write_text("mine")
    code, out, err = runner.run("make_heatmap.py", "--input", folder, "--output", output)
    bad = failure(code, err)
    rows = csv_cells(output / "summary.csv") if (output / "summary.csv").is_file() else []
    header = rows[0] if rows else []
    # --resume must read every row back as the photo's own: everything skipped, every row kept
    code2, out2, err2 = runner.run("make_heatmap.py", "--input", folder, "--output", output, "--resume")
    bad = bad or failure(code2, err2)
    resumed_all = f"{len(names)} already done" in out2
    rows2 = csv_cells(output / "summary.csv") if (output / "summary.csv").is_file() else []
    for name, file in names.items():
        if bad:
            record(6, f"summary.csv: {name}", "bad", bad)
            continue
        row = next((r for r in rows if r and r[0] in (file, "'" + file)), None)
        if row is None or dict(zip(header, row)).get("status") != "ok":
            record(6, f"summary.csv: {name}", "bad", "no ok row for the photo")
        elif formula_cells([row]):
            record(6, f"summary.csv: {name}", "security", f"formula cell {formula_cells([row])[0][:40]!r}")
        elif not resumed_all:
            record(6, f"summary.csv: {name}", "bad", "--resume did not recognise the rows: " + out2.strip()[-60:])
        elif not (output / "user_notes.txt").is_file() or len(rows2) < len(rows):
            record(6, f"summary.csv: {name}", "data lost", "a user file or summary rows lost")
        else:
            record(6, f"summary.csv: {name}", "clean")

    # comparison.csv / comparison.md: method names
    # the method names are the folders' names (a --names value starting with '-' would be taken for an option)
    methods = FORMULA_NAMES[:12] + ["a|b", "|", "x||y", "[a](javascript:alert(1))|"]
    folders = []
    for i, name in enumerate(methods):
        photo(root / "c6" / "methods" / name / "a.png", seed=i)
        folders.append(root / "c6" / "methods" / name)
    compare_out = root / "c6" / "compare"
    code, out, err = runner.run("compare_methods.py", "--inputs", *folders, "--output", compare_out, "--max-rows", "1")
    bad = failure(code, err)
    cells = csv_cells(compare_out / "comparison.csv") if (compare_out / "comparison.csv").is_file() else []
    md = (
        (compare_out / "comparison.md").read_text(encoding="utf-8", errors="replace").splitlines()
        if (compare_out / "comparison.md").is_file()
        else []
    )
    columns = md[0].replace("\\|", "").count("|") if md else 0
    for name in methods:
        if bad or not cells:
            record(6, f"comparison: {name}", "bad", bad or "no comparison.csv")
            continue
        row = next((r for r in cells[1:] if r and r[0] in (name, "'" + name)), None)
        lines = [line for line in md[2:] if line.startswith("|")]
        broken = [line for line in lines if line.replace("\\|", "").count("|") != columns]
        if row is None:
            record(6, f"comparison: {name}", "bad", "method missing from comparison.csv")
        elif formula_cells([row[:1]]):
            record(6, f"comparison: {name}", "security", f"formula cell {row[0][:40]!r}")
        elif "|" in name and broken:
            record(6, f"comparison: {name}", "security", f"markdown row broken: {broken[0][:50]}")
        else:
            record(6, f"comparison: {name}", "clean")

    # evaluate --markdown with checkpoints named after hostile methods
    data = root / "c6" / "data"
    (data / "labels").mkdir(parents=True)
    photo(data / "images" / "s0.png")
    np.save(data / "labels" / "s0.npy", np.zeros((64, 96), np.float32))
    (data / "valid.csv").write_text("img_id\ns0.png\n")
    checkpoints = []
    for name in ["x|y", "=1+1", "a||b", "@cmd"]:
        target = root / "c6" / "ckpt" / f"{name}.safetensors"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(runner.repo / "checkpoints" / "pieanet_corpus.safetensors", target)
        checkpoints.append((name, target))
    code, out, err = runner.run(
        "evaluate.py",
        "--data-root",
        data,
        "--csv",
        "valid.csv",
        "--markdown",
        root / "c6" / "eval.md",
        "--checkpoint",
        *[p for _, p in checkpoints],
    )
    bad = failure(code, err)
    md = (
        (root / "c6" / "eval.md").read_text(errors="replace").splitlines()
        if (root / "c6" / "eval.md").is_file()
        else []
    )
    header = next((line for line in md if line.startswith("| Method")), "")
    for name, _ in checkpoints:
        line = next(
            (
                line
                for line in md
                if line.startswith("| ")
                and not line.startswith("| Method")
                and name.replace("|", "") in line.replace("\\|", "").replace("|", "")
            ),
            None,
        )
        if bad or line is None:
            record(6, f"evaluate markdown: {name}", "bad", bad or "no row")
        elif line.replace("\\|", "").count("|") != header.count("|"):
            record(6, f"evaluate markdown: {name}", "security", f"markdown row broken: {line[:50]}")
        else:
            record(6, f"evaluate markdown: {name}", "clean")


# ------------------------------------------------------------------------------------------------ class 7
ESCAPE_NAMES = [
    "t\x1b]0;pwned\x07",
    "c\x1b[31mred\x1b[0m",
    "clip\x1b]52;c;ZWNobyBoaQ==\x07",
    "bell\x07",
    "bs\x08\x08\x08x",
    "cr\rover",
    "clear\x1b[2J",
    "csi8\x9b31m",
    "osc8\x1b]8;;http://e\x1b\\l\x1b]8;;\x1b\\",
    "del\x7f",
    "nul\x01soh",
    "vt\x0bff\x0c",
    "esc\x1bc",
    "title2\x1b]2;x\x1b\\",
    "dcs\x1bPq\x1b\\",
    "sgr\x1b[5;7m",
    "cursor\x1b[10A",
    "alt\x1b[?1049h",
    "so\x0e",
    "c1\x85nel",
    "decset\x1b[?25l",
    "tab\t=1",
]


def class7(runner, root):
    folder = root / "c7" / "photos"
    files = {}
    for i, name in enumerate(ESCAPE_NAMES):
        file = folder / f"{name}.png"
        if i % 3 == 2:  # every third one unreadable: its name goes to stderr in a failure line
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_bytes(b"not a png")
        else:
            photo(file, seed=i)
        files[name] = file
    for tool, args in (
        ("make_heatmap.py", ["--input", folder, "--output", root / "c7" / "out"]),
        ("score.py", ["--rules", "landscape", folder]),
    ):
        code, out, err = runner.run(tool, *args)
        bad = failure(code, err)
        for name in ESCAPE_NAMES:
            case = f"{tool}: {name}"
            raw = name in out or name in err
            if bad:
                record(7, case, "bad", bad)
            elif raw and terminal_raw(name):
                record(7, case, "security", "printed raw")
            else:
                record(7, case, "clean")
    # compare_methods names missing images and method names on the terminal
    methods = []
    for i, name in enumerate(ESCAPE_NAMES[:6]):
        photo(root / "c7" / "cm" / f"m{i}" / "a.png")
        photo(root / "c7" / "cm" / f"m{i}" / f"{name}.png")  # present in one folder only: reported as missing
        methods.append(root / "c7" / "cm" / f"m{i}")
    photo(root / "c7" / "cm" / "base" / "a.png")
    code, out, err = runner.run(
        "compare_methods.py",
        "--inputs",
        root / "c7" / "cm" / "base",
        *methods,
        "--names",
        "base",
        *ESCAPE_NAMES[:6],
        "--output",
        root / "c7" / "cmout",
    )
    bad = failure(code, err)
    for name in ESCAPE_NAMES[:6]:
        case = f"compare_methods: {name}"
        if bad:
            record(7, case, "bad", bad)
        elif name in out or name in err:
            record(7, case, "security", "printed raw")
        else:
            record(7, case, "clean")
    # a usage error naming the file
    for name in ESCAPE_NAMES[:4]:
        code, out, err = runner.run(
            "make_heatmap.py", "--input", root / "c7" / f"missing{name}", "--output", root / "c7" / "o2"
        )
        verdict, note = one_line_refusal(code, err, (2,))
        if verdict == "clean" and name in err:
            verdict, note = "security", "printed raw"
        record(7, f"usage error: {name}", verdict, note)


# ------------------------------------------------------------------------------------------------ class 8
def class8(runner, root):
    folder = root / "c8"
    folder.mkdir()
    cases = []
    for side in (9000, 12000, 14000):
        one_bit_png(folder / f"png1bit_{side}.png", side)
        cases.append(
            (
                f"1-bit PNG {side}x{side} ({(folder / f'png1bit_{side}.png').stat().st_size} B)",
                folder / f"png1bit_{side}.png",
            )
        )
    for side in (10000, 14000):
        tiny_tiff(folder / f"tiff_{side}.tif", side)
        cases.append(
            (f"TIFF {side}x{side} ({(folder / f'tiff_{side}.tif').stat().st_size} B)", folder / f"tiff_{side}.tif")
        )
    try:
        Image.new("RGB", (8000, 8000)).save(folder / "avif_8000.avif", quality=0)
        cases.append((f"AVIF 8000x8000 ({(folder / 'avif_8000.avif').stat().st_size} B)", folder / "avif_8000.avif"))
    except (KeyError, OSError, ValueError):
        pass
    for side, repeats in ((512, 300), (1024, 1000), (1024, 3000)):
        path = folder / f"scans_{side}_{repeats}.jpg"
        scans_jpeg(path, side, repeats)
        cases.append((f"progressive JPEG {side}px, {repeats} scans ({path.stat().st_size // 1024} kB)", path))
    Image.new("RGB", (11000, 11000), (120, 120, 120)).save(folder / "flat_121mp.png")
    cases.append(("flat PNG 11000x11000 (121 MP, within 200 MP)", folder / "flat_121mp.png"))
    for name, path in cases:
        start = time.monotonic()
        code, out, err = runner.run(
            "make_heatmap.py", "--input", path, "--output", folder / ("out_" + path.stem), "--no-report"
        )
        seconds = time.monotonic() - start
        bad = failure(code, err)
        if bad:
            record(8, name, "bad", f"{bad} after {seconds:.0f} s")

        else:
            record(8, name, "clean", f"exit {code} in {seconds:.0f} s: " + (err.strip().splitlines() or [""])[-1][:60])

    # checkpoints
    import torch

    sys.path.insert(0, str(runner.repo))
    ckpt = {}
    plain = folder / "zeros.pth"
    for megabytes in (64, 512):
        torch.save({"weights": torch.zeros(megabytes << 20, dtype=torch.uint8)}, plain)
        bomb = folder / f"bomb_{megabytes}.pth"
        import zipfile

        with zipfile.ZipFile(plain) as source, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as target:
            for entry in source.infolist():
                target.writestr(entry.filename, source.read(entry))
        ckpt[f"deflated .pth declaring {megabytes} MB ({bomb.stat().st_size // 1024} kB)"] = bomb
    plain.unlink()
    from safetensors.torch import load_file, save_file

    shipped = runner.repo / "checkpoints" / "pieanet_corpus.safetensors"
    from safetensors import safe_open

    with safe_open(str(shipped), "pt") as f:
        metadata = f.metadata()
    weights = load_file(str(shipped))
    for key, value in (("scene_size", 2048), ("scene_size", 4096), ("window", 64), ("context", 255)):
        config = json.loads(metadata["config"]) | {key: value}
        target = folder / f"{key}_{value}.safetensors"
        save_file(weights, str(target), metadata=metadata | {"config": json.dumps(config)})
        ckpt[f"checkpoint {key}: {value}"] = target
    photo(folder / "small" / "p.png")
    for name, path in ckpt.items():
        start = time.monotonic()
        code, out, err = runner.run(
            "make_heatmap.py",
            "--input",
            folder / "small",
            "--output",
            folder / ("out_" + path.stem),
            "--checkpoint",
            path,
            "--no-report",
        )
        seconds = time.monotonic() - start
        bad = failure(code, err)
        if bad:
            record(8, name, "bad", f"{bad} after {seconds:.0f} s")
        elif code == 0 and ("scene_size: 4096" in name or "bomb" in str(path)):
            record(8, name, "bad", f"accepted (exit 0, {seconds:.0f} s)")
        else:
            record(8, name, "clean", f"exit {code} in {seconds:.0f} s: " + (err.strip().splitlines() or [""])[-1][:60])


# ------------------------------------------------------------------------------------------------ class 10
def bomb_yaml(levels, key="seed"):
    parts = ["&k0 [" + ", ".join(["x"] * 10) + "]"]
    parts += [f"&k{i} [" + ", ".join([f"*k{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return f"{key}: [{', '.join(parts)}]\n"


def class10(runner, root):
    folder = root / "c10"
    folder.mkdir()
    base = runner.repo / "configs" / "pieanet.yaml"
    configs = {
        "base: 5": "base: 5\n",
        "base: [a]": "base: [a]\n",
        "base: {a: 1}": "base: {a: 1}\n",
        "base: null byte": 'base: "a\\0b"\n',
        "Latin-1 text": "name: caf\xe9\n".encode("latin-1"),
        "UTF-16 text": "name: x\n".encode("utf-16"),
        "binary garbage": bytes(range(256)) * 4,
        "20,000-deep list": "a: " + "[" * 20000 + "]" * 20000 + "\n",
        "20,000-deep mapping": "a: " + "{b: " * 20000 + "1" + "}" * 20000 + "\n",
        "5000-digit integer": "seed: " + "9" * 5000 + "\n",
        "top level list": "- 1\n- 2\n",
        "billion laughs 6 levels": f"base: {base}\n" + bomb_yaml(6),
        "billion laughs 8 levels": f"base: {base}\n" + bomb_yaml(8),
        "billion laughs in model": f"base: {base}\n" + bomb_yaml(7, "model"),
        "heads do not divide width": f"base: {base}\nmodel:\n  width: 30\n  heads: 4\n",
        "scene_size 4096": f"base: {base}\nmodel:\n  scene_size: 4096\n",
        "!!python/object/apply": "seed: !!python/object/apply:os.system ['true']\n",
    }
    overrides = {
        "seed=2**70": ["seed=1180591620717411303424"],
        "seed=-1": ["seed=-1"],
        "seed=1e400": ["seed=1e400"],
        "model=[1]": ["model=[1]"],
        "model=5": ["model=5"],
        "model.name=[1]": ["model.name=[1]"],
        "model.name={a: 1}": ["model.name={a: 1}"],
        "train=[]": ["train=[]"],
        "train.loss=[l1]": ["train.loss=[l1]"],
        "data.extra_valid=[1]": ["data.extra_valid=[1]"],
        "override with 20,000-deep value": ["seed=" + "[" * 20000 + "]" * 20000],
    }
    jobs = []
    for name, text in configs.items():
        path = folder / f"config_{len(jobs)}.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        jobs.append((name, ["--config", path]))
    for name, values in overrides.items():
        jobs.append((name, ["--config", base, *values]))
    os.mkfifo(folder / "fifo.yaml")
    jobs += [
        ("config is a FIFO", ["--config", folder / "fifo.yaml"]),
        ("config is /dev/zero", ["--config", "/dev/zero"]),
        ("config is a folder", ["--config", folder]),
    ]
    for name, args in jobs:
        code, out, err = runner.run("train_wavelet.py", *args, timeout=180 if "FIFO" in name else None)
        record(10, f"config: {name}", *one_line_refusal(code, err, (2,)))

    photo(folder / "photo" / "p.png")
    rules = {
        "!!python/name:os.system": "criteria: !!python/name:os.system\n",
        "!!python/object/apply": "criteria: !!python/object/apply:os.system ['true']\n",
        "!!float abc": "criteria:\n- measure: over\n  table:\n  - {max: !!float abc, score: 1}\n  - {score: 2}\n",
        "!!int abc": "criteria:\n- measure: over\n  table:\n  - {max: !!int abc, score: 1}\n  - {score: 2}\n",
        "!!timestamp 2020-13-45": "criteria:\n- measure: over\n  table:\n  - {score: 1}\n"
        "name: !!timestamp 2020-13-45\n",
        "!!timestamp 2020-02-30": "criteria:\n- measure: over\n  table:\n  - {score: 1}\n"
        "name: !!timestamp 2020-02-30\n",
        "!!binary bad": "criteria:\n- measure: over\n  table:\n  - {score: 1}\nname: !!binary '%%%'\n",
        "list as key": "criteria:\n- measure: over\n  ? [a, b]\n  : 1\n",
        "20,000-deep list": "criteria: " + "[" * 20000 + "]" * 20000 + "\n",
        "5000-digit score": "criteria:\n- measure: over\n  table:\n  - {score: " + "9" * 5000 + "}\n",
        "billion laughs": bomb_yaml(8, "description"),
        "Latin-1": "name: caf\xe9\n".encode("latin-1"),
    }
    jobs = []
    for name, text in rules.items():
        path = folder / f"rules_{len(jobs)}.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        jobs.append((name, path))
    os.mkfifo(folder / "fifo_rules.yaml")
    jobs += [
        ("rules is /dev/zero", "/dev/zero"),
        ("rules is a FIFO", folder / "fifo_rules.yaml"),
        ("rules is /dev/urandom", "/dev/urandom"),
    ]
    for name, path in jobs:
        code, out, err = runner.run(
            "score.py", "--rules", path, folder / "photo", timeout=180 if "FIFO" in name else None
        )  # a blocked read uses no CPU
        record(10, f"rules: {name}", *one_line_refusal(code, err, (2,)))

    # summary.csv as a FIFO or a device
    for name, make in (
        ("summary.csv is a FIFO", lambda p: os.mkfifo(p)),
        ("summary.csv is a link to /dev/zero", lambda p: os.symlink("/dev/zero", p)),
    ):
        out_dir = folder / name.replace(" ", "_").replace("/", "_")
        out_dir.mkdir()
        make(out_dir / "summary.csv")
        code, out, err = runner.run("make_heatmap.py", "--input", folder / "photo", "--output", out_dir, timeout=180)
        record(10, name, *one_line_refusal(code, err, (1, 2)))

    # ONNX: a non-string model name in the metadata; a model whose output is NaN
    try:
        import onnx
        from onnx import TensorProto, helper
    except ImportError:
        onnx = None
    if onnx is not None:
        shipped = onnx.load(str(runner.repo / "checkpoints" / "pieanet_corpus.onnx"))
        for name, value in (("name [1]", [1]), ("name {a: 1}", {"a": 1}), ("config a list", None)):
            model = onnx.load(str(runner.repo / "checkpoints" / "pieanet_corpus.onnx"))
            for entry in model.metadata_props:
                if entry.key == "p_iea.config":
                    config = json.loads(entry.value)
                    entry.value = json.dumps([1] if value is None else config | {"name": value})
            path = folder / f"onnx_{len(name)}.onnx"
            onnx.save(model, str(path))
            code, out, err = runner.run(
                "make_heatmap.py",
                "--input",
                folder / "photo",
                "--output",
                folder / f"out_{path.stem}",
                "--checkpoint",
                path,
                "--no-report",
            )
            record(10, f"ONNX metadata {name}", *one_line_refusal(code, err, (2,)))
        config = next(e.value for e in shipped.metadata_props if e.key == "p_iea.config")
        zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
        graph = helper.make_graph(
            [
                helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1], keepdims=1),
                helper.make_node("Mul", ["mean", "zero"], ["z"]),
                helper.make_node("Div", ["z", "z"], ["residual"]),
            ],
            "nan",
            [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["b", 3, "h", "w"])],
            [helper.make_tensor_value_info("residual", TensorProto.FLOAT, ["b", 1, "h", "w"])],
            [zero],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = shipped.ir_version
        helper.set_model_props(model, {"p_iea.config": config})
        onnx.save(model, str(folder / "nan.onnx"))
        code, out, err = runner.run(
            "make_heatmap.py",
            "--input",
            folder / "photo",
            "--output",
            folder / "out_nan",
            "--checkpoint",
            folder / "nan.onnx",
            "--no-report",
        )
        rows = csv_cells(folder / "out_nan" / "summary.csv") if (folder / "out_nan" / "summary.csv").is_file() else []
        bad = failure(code, err)
        if bad:
            record(10, "ONNX model that outputs NaN", "bad", bad)
        elif any(cell(rows, row, "status") == "ok" for row in rows[1:]):
            record(10, "ONNX model that outputs NaN", "bad", "an ok row with score " + cell(rows, rows[1], "score"))
        else:
            record(10, "ONNX model that outputs NaN", "clean", (err.strip().splitlines() or [""])[-1][:80])

    # mathtext and long names: the photo must be done like any other
    names = ["cost$\\frac$", "$x^$", "a$b", "$$", "\\$\\alpha$", "$\\sqrt{$", "x" * 215, "é" * 108, "y" * 225]
    for i, name in enumerate(names):
        photo(folder / "mt" / f"{name}.png", seed=i)
    code, out, err = runner.run(
        "make_heatmap.py", "--input", folder / "mt", "--output", folder / "mt_out", "--colorbar", "--no-report"
    )
    bad = failure(code, err)
    rows = csv_cells(folder / "mt_out" / "summary.csv") if (folder / "mt_out" / "summary.csv").is_file() else []
    for name in names:
        row = next((r for r in rows[1:] if r and r[0].lstrip("'") == f"{name}.png"), None)
        case = f"--colorbar name {name[:30]}{'...' if len(name) > 30 else ''} ({len(name.encode()) + 4} B)"
        if bad:
            record(10, case, "bad", bad)
        elif row is None or cell(rows, row, "status") != "ok":
            record(10, case, "bad", "failed: " + (cell(rows, row, "error")[:70] if row else "no row"))
        else:
            record(10, case, "clean")
    methods = []
    for i in range(3):
        photo(folder / "mtm" / f"m{i}" / "cost$\\frac$.png")
        methods.append(folder / "mtm" / f"m{i}")
    code, out, err = runner.run(
        "compare_methods.py",
        "--inputs",
        *methods,
        "--names",
        "cost$\\frac$",
        "$x^$",
        "a$b",
        "--output",
        folder / "mtm_out",
    )
    clean = code == 0 and not failure(code, err)
    verdict, note = ("clean", "") if clean else ("bad", failure(code, err) or f"exit {code}")
    record(10, "comparison.png with mathtext names", verdict, note)

    # a method folder whose name is not UTF-8
    for raw in (b"m\xff", b"\xc3\x28method"):
        target = os.fsdecode(bytes(folder) + b"/" + raw)
        photo(Path(target) / "a.png")
        photo(folder / "plain" / "a.png")
        code, out, err = runner.run(
            "compare_methods.py", "--inputs", target, folder / "plain", "--output", folder / f"nonutf8_{raw.hex()}"
        )
        bad = failure(code, err)
        record(10, f"method folder {raw!r}", "bad" if bad or code != 0 else "clean", bad or f"exit {code}")

    # Ctrl-C while the tool is still importing
    for script in ("make_heatmap.py", "score.py", "compare_methods.py", "evaluate.py", "export.py", "train_wavelet.py"):
        process = subprocess.Popen(
            [sys.executable, "-X", "importtime", str(runner.repo / script), "--help"],
            cwd=runner.work,
            env=runner.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            preexec_fn=runner.limits,
        )
        seen = []
        for line in process.stderr:
            seen.append(line)
            if "torch._" in line:
                process.send_signal(signal.SIGINT)
                break
        err = "".join(seen) + process.stderr.read()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        code = process.returncode
        if "Traceback" in err:
            record(10, f"Ctrl-C during imports: {script}", "bad", "KeyboardInterrupt traceback")
        elif code != 130:
            record(10, f"Ctrl-C during imports: {script}", "bad", f"exit {code}")
        else:
            record(10, f"Ctrl-C during imports: {script}", "clean")


def table(results):
    counts = defaultdict(lambda: defaultdict(int))
    for klass, _, verdict, _ in results:
        counts[klass]["tried"] += 1
        counts[klass][verdict] += 1
    lines = ["| class | tried | clean | bad | security | data lost |", "|---|---|---|---|---|---|"]
    names = {
        6: "6 output encoding (CSV, markdown)",
        7: "7 terminal escapes",
        8: "8 cost bounded before work",
        10: "10 one line for malformed input",
    }
    total = defaultdict(int)
    for klass in sorted(counts):
        c = counts[klass]
        lines.append(
            f"| {names[klass]} | {c['tried']} | {c['clean']} | {c['bad']} | {c['security']} | {c['data lost']} |"
        )
        for key in ("tried", "clean", "bad", "security", "data lost"):
            total[key] += c[key]
    lines.append(
        f"| all | {total['tried']} | {total['clean']} | {total['bad']} | {total['security']} | {total['data lost']} |"
    )
    return "\n".join(lines)


def run_audit(repo, only=(6, 7, 8, 10), work=None, memory_gb=3.0, timeout=1200, cpu_seconds=60):
    """Every case of the classes ``only`` against the checkout ``repo``: the results recorded by this call, each
    (class, case, verdict, note). ``work``: a scratch folder to keep (default: a temporary one, removed)."""
    start = len(RESULTS)
    scratch = Path(tempfile.mkdtemp(prefix="audit-")) if work is None else Path(work)
    scratch.mkdir(parents=True, exist_ok=True)
    runner = Runner(repo, scratch, int(memory_gb * 2**30), timeout, cpu_seconds)
    classes = {6: class6, 7: class7, 8: class8, 10: class10}
    try:
        for klass in only:
            try:
                classes[klass](runner, scratch)
            except Exception as e:  # the audit itself must go on to the next class
                record(klass, f"audit of class {klass} stopped", "bad", f"{type(e).__name__}: {e}")
    finally:
        if work is None:
            shutil.rmtree(scratch, ignore_errors=True)
    return RESULTS[start:]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repo",
        type=Path,
        default=Path(__file__).resolve().parents[2],
        help="the checkout to audit (default: this one)",
    )
    parser.add_argument("--work", type=Path, help="scratch folder (default: a new temporary one, removed)")
    parser.add_argument("--only", default="6,7,8,10", help="classes to run (default: 6,7,8,10)")
    parser.add_argument("--memory-gb", type=float, default=3.0, help="address-space limit per child (default: 3)")
    parser.add_argument(
        "--cpu-seconds", type=int, default=60, help="CPU-time limit per child (RLIMIT_CPU; default: 60)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=1200,
        help="wall-clock seconds per child, a safety net on a busy machine (default: 1200)",
    )
    parser.add_argument("--json", type=Path, help="write every case and verdict here")
    args = parser.parse_args(argv)
    run_audit(
        args.repo, [int(k) for k in args.only.split(",")], args.work, args.memory_gb, args.timeout, args.cpu_seconds
    )
    print(table(RESULTS))
    if args.json:
        args.json.write_text(
            json.dumps(
                [dict(zip(("class", "case", "verdict", "note"), r)) for r in RESULTS], indent=1, ensure_ascii=True
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
