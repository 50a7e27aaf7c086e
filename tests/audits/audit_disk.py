"""Hostile cases of issue 27 ("trust nothing on disk") in six classes, against any checkout.

    python -m tests.audits.audit_disk --repo PATH [--classes formats,bookkeeping] [--timeout 120] [--json results.json]

(from the root of the checkout that holds this file; PATH, the audited checkout, may be another one)

Classes: resource limits, image formats, signals and concurrency, training inputs, Python API, bookkeeping files.
Like tests/audits/audit_files.py, every case runs the checkout's own scripts as subprocesses (nothing of the checkout is
imported here) in a fresh temporary folder and is judged from the files on disk and the output:

    clean     the promised behaviour: done, or refused in one line (no traceback, no hang), nothing lost
    bad       a traceback, a hang, a refusal of more than one line or with the wrong exit code, a map silently
              computed from input outside the contract, a format decoded that is not promised
    security  an external program started (a `gs` placed first on PATH records every start), a write outside the
              folder, or numpy's / torch's advice to load a file unsafely
    data lost a user's file removed or changed, or summary rows lost

The image-format and API classes judge many cases in one run (one photo or one array each). Prints one line per case
and the table by class.
"""

import argparse
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from .audit_files import TINY, make_dataset, read_rows, save_photo, snapshot, table

TRACEBACK = "Traceback (most recent call last)"
UNSAFE = ("allow_pickle", "weights_only=False", "weights_only` set to `False`", "pickle.load")
POSTSCRIPT = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 24\n0.1 setgray\n0 0 32 24 rectfill\nshowpage\n"
FAKE_GS = '#!/bin/sh\necho "$@" >> "$GS_MARKER"\n[ "$1" = "--version" ] && echo 10.0 && exit 0\nexit 1\n'
CLASSES = {
    "resource": "resource limits",
    "formats": "image formats",
    "signals": "signals and concurrency",
    "training": "training inputs",
    "api": "Python API",
    "bookkeeping": "bookkeeping files",
}


def one_line(err):
    return len([line for line in err.strip().splitlines() if line.strip()]) <= 1 and TRACEBACK not in err


class Audit:
    def __init__(self, repo, timeout, classes, shared=None):
        self.repo, self.timeout, self.classes = Path(repo).resolve(), timeout, classes
        self.shared = Path(shared) if shared else self.repo.parent / "shared"
        self.results = []
        self.work = Path(tempfile.mkdtemp(prefix="audit-disk-"))
        fake = self.work / "fakebin"
        fake.mkdir()
        (fake / "gs").write_text(FAKE_GS)
        (fake / "gs").chmod(0o755)
        self.marker = self.work / "gs-started.txt"
        self.env = dict(
            os.environ,
            PYTHONDONTWRITEBYTECODE="1",
            OMP_NUM_THREADS="1",
            GS_MARKER=str(self.marker),
            PATH=f"{fake}{os.pathsep}{os.environ.get('PATH', '')}",
        )

    # ------------------------------------------------------------------------------------------------ running
    def script(self, name, *args, cwd=None, background=False, timeout=None):
        argv = [sys.executable, str(self.repo / name), *map(str, args)]
        if background:
            return subprocess.Popen(
                argv,
                cwd=cwd or self.work,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
            )
        try:
            done = subprocess.run(
                argv,
                cwd=cwd or self.work,
                env=self.env,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout or self.timeout,
            )
            return done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired:
            return None, "", "timeout"

    def heatmap(self, *args, **kw):
        return self.script("make_heatmap.py", *args, "--checkpoint", self.tiny, "--threads", "1", **kw)

    def record(self, cls, case, problems, note=""):
        if self.marker.exists() and self.marker.read_text().strip():
            problems = set(problems) | {"security"}
            note = f"an external program (gs) was started; {note}"
            self.marker.unlink()
        verdict = "clean" if not problems else "+".join(sorted(problems))
        self.results.append(
            {"class": CLASSES[cls], "case": case, "verdict": verdict, "problems": sorted(problems), "note": note[:300]}
        )
        print(f"[{cls:<11}] {verdict:<18} {case}" + (f"  ({note[:160]})" if problems and note else ""), flush=True)

    def fresh(self, name):
        folder = self.work / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return folder

    def judge_refusal(self, cls, case, code, err, expected=2, kept=None, note=""):
        problems = set()
        if code is None:
            problems.add("bad")
            note = f"hang (no end within {self.timeout:.0f} s)"
        elif code != expected or not one_line(err):
            problems.add("bad")
            note = note or f"exit {code}: {err.strip()[-200:]}"
        if kept is not None and not kept():
            problems.add("lost")
        if any(advice in err for advice in UNSAFE):
            problems.add("security")
        self.record(cls, case, problems, note or err.strip()[-160:])

    def setup(self):
        self.tiny = self.work / "tiny.safetensors"
        code = (
            "import sys, torch; sys.path.insert(0, sys.argv[1]); from pieanet.models import build_model, "
            f"save_model; torch.manual_seed(0); save_model(sys.argv[2], build_model({TINY!r}))"
        )
        subprocess.run([sys.executable, "-c", code, str(self.repo), str(self.tiny)], check=True, env=self.env)

    def run(self):
        self.setup()
        for cls in self.classes:
            getattr(self, f"class_{cls}")()
        return self.results

    # ------------------------------------------------------------------------------------------------ formats
    def class_formats(self):
        folder = self.fresh("formats")
        cases = format_cases(folder / "in")
        code, _, err = self.heatmap(
            "--input", folder / "in", "--output", folder / "out", "--no-report", timeout=max(self.timeout, 600)
        )
        started = self.marker.exists() and self.marker.read_text().strip()
        if self.marker.exists():
            self.marker.unlink()
        rows = {row["file"]: row for row in read_rows(folder / "out" / "summary.csv")}
        for name, (expected, what) in cases.items():
            row = rows.get(name)
            problems, note = set(), ""
            if code is None or TRACEBACK in err:
                problems.add("bad")
                note = "run hung or crashed"
            elif row is None:
                problems.add("bad")
                note = "no row"
            elif row["status"] != expected and not (expected == "any" and "\n" not in row["error"]):
                problems.add("bad")
                note = f"status {row['status']} (expected {expected}): {row['error'][:120] or 'decoded'}"
            elif expected == "ok" and not np.isfinite(float(row["mean_residual"])):
                problems.add("bad")
                note = "non-finite map"
            if what == "postscript" and started:
                problems.add("security")
                note = "gs started by the run of PostScript files; " + note
            self.record("formats", f"{name}: {what}", problems, note)

    # ------------------------------------------------------------------------------------------------ bookkeeping
    def users_folder(self, name):
        folder = self.fresh(name)
        save_photo(folder / "in" / "a.png", 1)
        out = folder / "out"
        out.mkdir()
        for kind, data in (
            ("overlay.png", b"my overlay"),
            ("residual.npy", b"my numbers"),
            ("exposure.png", b"my map"),
        ):
            (out / f"a_{kind}").write_bytes(data)
        return folder, out, snapshot(out)

    def class_bookkeeping(self):
        header = (
            "file,width,height,mean_residual,mean_abs_residual,pct_over,pct_under,score,stops,vmax,"
            "pct_raw_clipped,status,error,source,output,settings,photo_sha256,output_kinds\n"
        )
        row = "a.png,32,24,0,0,0,0,10,0,1,,ok,,../in/a.png,a,,,exposure.png overlay.png residual.npy\n"
        planted = {
            "ledger line a,../in/a.png": {".pieanet-outputs.csv": "a,../in/a.png\n"},
            "ledger line with a made-up hash": {
                ".pieanet-outputs.csv": "a,../in/a.png\na_overlay.png,10,sha256:" + "0" * 64 + "\n"
            },
            "ledger line with the right size, wrong hash": {
                ".pieanet-outputs.csv": "a,../in/a.png\na_exposure.png,6,sha256:" + "1" * 64 + "\n"
            },
            "summary.csv row naming prefix a": {"summary.csv": header + row},
            "ledger and summary planted together": {
                ".pieanet-outputs.csv": "a,../in/a.png\n",
                "summary.csv": header + row,
            },
            "ledger prefix ../escape": {".pieanet-outputs.csv": "../escape/a,../in/a.png\n"},
            "ledger absolute prefix": {".pieanet-outputs.csv": f"{self.work}/victim/a,../in/a.png\n"},
            "ledger not UTF-8": {".pieanet-outputs.csv": None},
            "ledger of 200,000 lines": {
                ".pieanet-outputs.csv": "".join(f"p{i},../in/p{i}.png\n" for i in range(200_000))
            },
        }
        for case, files in planted.items():
            folder, out, before = self.users_folder("planted")
            for name, text in files.items():
                (out / name).write_bytes(b"\xff\xfe\x00garbage" if text is None else text.encode())
            code, _, err = self.heatmap("--input", folder / "in", "--output", out, "--no-report")
            kept = {k: v for k, v in snapshot(out).items() if k in before} == before
            problems = set() if code == 0 and one_line(err) else {"bad"}
            if not kept:
                problems.add("lost")
            self.record(
                "bookkeeping",
                f"planted: {case}",
                problems,
                f"exit {code}; user files kept: {kept}; {err.strip()[-160:]}",
            )
        # a ledger another user wrote proves nothing
        folder, out, before = self.users_folder("foreign")
        (out / ".pieanet-outputs.csv").write_text("a,../in/a.png\n")
        os.chown(out / ".pieanet-outputs.csv", 65534, 65534) if os.geteuid() == 0 else None
        code, _, err = self.heatmap("--input", folder / "in", "--output", out, "--no-report")
        kept = {k: v for k, v in snapshot(out).items() if k in before} == before
        self.record(
            "bookkeeping",
            "planted ledger owned by another user",
            set() if kept and one_line(err) else {"lost"} if not kept else {"bad"},
            f"exit {code}; kept {kept}",
        )
        # wrong types
        for name in (".pieanet-outputs.csv", ".pieanet.lock", "summary.csv", "summary.rank0.csv"):
            for kind in ("fifo", "symlink", "dangling symlink", "folder", "link to /dev/null"):
                if name == "summary.rank0.csv" and kind not in ("fifo", "symlink"):
                    continue
                folder, out, before = self.users_folder("types")
                target = folder / "elsewhere.txt"
                target.write_text("someone's file\n")
                path = out / name
                if kind == "fifo":
                    os.mkfifo(path)
                elif kind == "symlink":
                    path.symlink_to(target)
                elif kind == "dangling symlink":
                    path.symlink_to(folder / "nowhere")
                elif kind == "folder":
                    path.mkdir()
                else:
                    path.symlink_to("/dev/null")
                code, _, err = self.heatmap(
                    "--input", folder / "in", "--output", out, "--no-report", timeout=min(self.timeout, 60)
                )
                self.judge_refusal(
                    "bookkeeping",
                    f"{name} is a {kind}",
                    code,
                    err,
                    kept=lambda: target.read_text() == "someone's file\n" and not (folder / "nowhere").exists(),
                )
        folder, out, before = self.users_folder("index")
        os.mkfifo(out / "index.html")
        code, _, err = self.heatmap("--input", folder / "in", "--output", out, timeout=min(self.timeout, 60))
        self.judge_refusal("bookkeeping", "index.html is a fifo", code, err)

    # ------------------------------------------------------------------------------------------------ signals
    def class_signals(self):
        for change in ("replaced (editor's save)", "truncated", "deleted"):
            folder = self.fresh("swap")
            for i in range(12):
                save_photo(folder / "in" / f"p{i:02d}.png", i, 96, 128)
            out = folder / "out"
            process = self.heatmap("--input", folder / "in", "--output", out, background=True)
            summary = out / "summary.csv"
            deadline = time.time() + self.timeout
            while time.time() < deadline and process.poll() is None and len(read_rows(summary)) < 2:
                time.sleep(0.05)
            if process.poll() is None:
                text = "".join(summary.read_text().splitlines(keepends=True)[:2])
                if change.startswith("replaced"):
                    (out / "saved~").write_text(text)
                    os.replace(out / "saved~", summary)
                elif change == "truncated":
                    summary.write_text(text)
                else:
                    summary.unlink()
            try:
                _, err = process.communicate(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                err = "timeout"
            rows = read_rows(summary)
            page = (out / "index.html").read_text() if (out / "index.html").is_file() else ""
            listed = sum(f"p{i:02d}.png" in page for i in range(12))
            problems = set() if process.returncode == 0 and TRACEBACK not in err else {"bad"}
            if len(rows) < 12 or listed < 12:
                problems.add("lost")
            self.record(
                "signals",
                f"summary.csv {change} during a run",
                problems,
                f"exit {process.returncode}; {len(rows)} of 12 rows, {listed} in index.html; {err.strip()[-160:]}",
            )
        # kills and resume: byte-identical to an uninterrupted run
        reference = self.fresh("reference")
        for i in range(8):
            save_photo(reference / "in" / f"p{i}.png", i, 96, 128)
        code, _, err = self.heatmap("--input", reference / "in", "--output", reference / "out", "--overlay")
        expected = {k: v for k, v in snapshot(reference / "out").items() if k.startswith("p")}
        for sig, delay in ((signal.SIGKILL, 4), (signal.SIGKILL, 6), (signal.SIGINT, 5), (signal.SIGTERM, 5)):
            folder = self.fresh("killed")
            shutil.copytree(reference / "in", folder / "in")
            process = self.heatmap("--input", folder / "in", "--output", folder / "out", "--overlay", background=True)
            time.sleep(delay)
            process.send_signal(sig)
            process.communicate()
            code, _, err = self.heatmap("--input", folder / "in", "--output", folder / "out", "--overlay", "--resume")
            got = {k: v for k, v in snapshot(folder / "out").items() if k.startswith("p")}
            rows = read_rows(folder / "out" / "summary.csv")
            problems = set() if code == 0 and got == expected and len(rows) == 8 else {"bad"}
            self.record(
                "signals",
                f"{signal.Signals(sig).name} after {delay} s, then --resume",
                problems,
                f"exit {code}; identical {got == expected}; {len(rows)} rows; {err.strip()[-160:]}",
            )
        folder = self.fresh("two")
        for i in range(6):
            save_photo(folder / "in" / f"p{i}.png", i, 96, 128)
        first = self.heatmap("--input", folder / "in", "--output", folder / "out", background=True)
        time.sleep(3)
        code, _, err = self.heatmap("--input", folder / "in", "--output", folder / "out")
        first.communicate()
        ok = (code == 2 and one_line(err)) or code == 0
        self.record("signals", "a second run into a busy folder", set() if ok else {"bad"}, f"exit {code}")

    # ------------------------------------------------------------------------------------------------ training
    def class_training(self):
        for kind in (
            "npz",
            "pickle",
            "object array",
            "text",
            "truncated npy",
            "empty",
            "unicode array",
            "complex",
            "3-D",
            "NaN",
            "bool",
            "folder named .npy",
            "fifo named .npy",
        ):
            data = make_dataset(self.fresh("labels") / "iea")
            label = next(data.glob("labels/valid00_*.npy"))
            label.unlink()
            crafted_label(label, kind)
            code, _, err = self.script(
                "evaluate.py",
                "--data-root",
                data,
                "--csv",
                "valid.csv",
                "--checkpoint",
                self.tiny,
                "--threads",
                "1",
                timeout=min(self.timeout, 90),
            )
            lines = [line for line in err.splitlines() if label.stem in line]
            problems = set() if code in (1, 2) and TRACEBACK not in err and len(lines) <= 2 else {"bad"}
            if any(advice in err for advice in UNSAFE):
                problems.add("security")
            self.record("training", f"evaluate: label {kind}", problems, f"exit {code}: {err.strip()[-160:]}")
        data = make_dataset(self.fresh("trainlabel") / "iea")
        label = next(data.glob("labels/train00_*.npy"))
        label.unlink()
        crafted_label(label, "npz")
        config = train_config(self.repo, data, self.work / "trainlabel")
        code, _, err = self.script("train_wavelet.py", "--config", config, "--device", "cpu")
        last = err.strip().splitlines()[-1] if err.strip() else ""  # training logs to stderr before it stops
        problems = set() if code in (1, 2) and TRACEBACK not in err and label.name in last else {"bad"}
        if any(advice in err for advice in UNSAFE):
            problems.add("security")
        self.record("training", "train_wavelet: an .npz label", problems, f"exit {code}: {last[-160:]}")
        teacher = self.shared / "official" / "wavelet_epoch_2_val_loss0.03022034629540784.pth"
        if teacher.is_file():
            for recorded in (
                {"teacher_sha256": 5},
                {"teacher_sha256": None},
                [],
                "text",
                {"teacher_sha256": "ab", "teacher_file": 7},
            ):
                folder = self.fresh("teacher")
                save_photo(folder / "in" / "a.png", 1)
                (folder / "cache").mkdir()
                (folder / "cache" / "teacher.json").write_text(json.dumps(recorded))
                code, _, err = self.script(
                    "datasets/teacher.py",
                    "--data-root",
                    folder / "in",
                    "--teacher",
                    teacher,
                    "--cache",
                    folder / "cache",
                )
                self.judge_refusal("training", f"teacher.json {json.dumps(recorded)}", code, err)
        for prefix in ("../../escaped_", f"{self.work}/absolute_", "x" * 250, "sub/ok_"):
            folder = self.fresh("merge")
            source = make_dataset(folder / "one")
            (source / "refs").mkdir()
            for image in (source / "images").iterdir():  # the ideal of train03_P1.png is train03.png
                shutil.copyfile(image, source / "refs" / (image.name.split("_")[0] + ".png"))
            before = sorted(p for p in self.work.rglob("*") if "merge" not in p.parts)
            code, _, err = self.script("datasets/merge.py", "--out", folder / "deep" / "both", f"{prefix}={source}")
            after = sorted(p for p in self.work.rglob("*") if "merge" not in p.parts)
            leftover = (folder / "deep").exists() and code != 0
            problems = set()
            if prefix == "sub/ok_":
                problems = set() if code == 0 else {"bad"}
            elif code != 2 or not one_line(err) or leftover:
                problems.add("bad")
            if after != before:
                problems.add("security")
            self.record(
                "training",
                f"merge.py prefix {prefix[:20]!r}",
                problems,
                f"exit {code}; left behind {leftover}; outside {after != before}: {err.strip()[-120:]}",
            )
        folder = self.fresh("circle")
        data = make_dataset(folder / "iea")
        config = train_config(self.repo, data, folder)
        process = self.script("train_wavelet.py", "--config", config, "--device", "cpu", background=True)
        run = folder / "runs" / "tiny"
        deadline = time.time() + self.timeout
        while time.time() < deadline and not (run / "train.log").exists() and process.poll() is None:
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, first = process.communicate()
        lines = [first.strip().splitlines()[-1] if first.strip() else ""]
        if not (run / "last.pt").exists():
            lines.append(self.script("train_wavelet.py", "--config", config, "--device", "cpu", "--resume")[2])
            lines.append(self.script("train_wavelet.py", "--config", config, "--device", "cpu")[2])
            circle = not all(
                "--overwrite" in line and "with --resume" not in line and "without --resume" not in line
                for line in lines
            )
            self.record(
                "training",
                "Ctrl-C before the first last.pt, then --resume, then a plain start",
                {"bad"} if circle else set(),
                " | ".join(line.strip()[-90:] for line in lines),
            )

    # ------------------------------------------------------------------------------------------------ API
    def class_api(self):
        code = API_CASES.replace("CHECKPOINT", repr(str(self.tiny)))
        done = subprocess.run(
            [sys.executable, "-c", code, str(self.repo)],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=max(self.timeout, 300),
        )
        try:
            outcomes = json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            self.record("api", "the API cases", {"bad"}, done.stderr[-300:])
            return
        for case, (expected, outcome) in outcomes.items():
            problems = set()
            if outcome["kind"] == "map" and expected == "refused":
                problems.add("bad")
                note = f"a map (mean r {outcome['mean']:+.3f}, finite {outcome['finite']}) instead of a refusal"
            elif outcome["kind"] == "map" and expected == "map-differs" and not outcome["finite"]:
                problems.add("bad")
                note = "a non-finite map"
            elif (
                outcome["kind"] == "map"
                and expected == "map"
                and abs(outcome["mean"] - outcomes["uint8"][1]["mean"]) > 1e-3
            ):
                problems.add("bad")
                note = (
                    f"mean r {outcome['mean']:+.4f}, the same photo as uint8 gives {outcomes['uint8'][1]['mean']:+.4f}"
                )
            elif outcome["kind"] == "error" and (
                expected.startswith("map") or "\n" in outcome["message"] or outcome["type"] not in refusals(case)
            ):
                problems.add("bad")
                note = f"{outcome['type']}: {outcome['message'][:120]}"
            else:
                note = outcome.get("message", "")[:120]
            self.record("api", case, problems, note)

    # ------------------------------------------------------------------------------------------------ resource
    def class_resource(self):
        for depth in (900, 1200, 2000):
            folder = self.fresh("deep")
            deep = folder / "in"
            deep.mkdir()
            save_photo(deep / "top.png", 1)
            for _ in range(depth):
                deep = deep / "d"
                deep.mkdir()
            save_photo(deep / "bottom.png", 2)
            code, out, err = self.heatmap(
                "--input", folder / "in", "--output", folder / "out", "--recursive", "--no-report"
            )
            rows = read_rows(folder / "out" / "summary.csv")
            fine = TRACEBACK not in err and code in (0, 1) and any(r["file"] == "top.png" for r in rows)
            self.record(
                "resource",
                f"--recursive into a folder {depth} levels deep",
                set() if fine else {"bad"},
                f"exit {code}; {len(rows)} rows; {err.strip()[-120:]}",
            )
            remove_deep(folder / "in")
        for length in (3000, 4093):
            folder = self.fresh("long")
            save_photo(folder / "in" / "a.png", 1)
            (folder / "x").mkdir()
            output = "x/../" * ((length - 3) // 5) + "out"
            code, _, err = self.heatmap("--input", "in", "--output", output, cwd=folder)
            fine = (code == 0) if length < 3800 else (code == 2 and one_line(err) and not (folder / "out").exists())
            self.record(
                "resource",
                f"--output of {len(output)} characters",
                set() if fine else {"bad"},
                f"exit {code}: {err.strip()[-100:]}",
            )
        folder = self.fresh("names")
        save_photo(folder / "in" / ("n" * 250 + ".png"), 1)
        save_photo(folder / "in" / ("é" * 125 + ".png"), 2)
        code, _, err = self.heatmap("--input", folder / "in", "--output", folder / "out")
        self.record(
            "resource",
            "photo names of 250 bytes",
            set() if code in (0, 1) and TRACEBACK not in err else {"bad"},
            f"exit {code}",
        )
        folder = self.fresh("strip")
        (folder / "in").mkdir()
        Image.fromarray(np.full((1, 4000, 3), 90, np.uint8)).save(folder / "in" / "strip.png")
        Image.fromarray(np.full((3000, 2, 3), 90, np.uint8)).save(folder / "in" / "column.png")
        code, _, err = self.heatmap("--input", folder / "in", "--output", folder / "out", "--no-report")
        self.record(
            "resource",
            "1 x 4000 and 3000 x 2 photos",
            set() if code in (0, 1) and TRACEBACK not in err else {"bad"},
            f"exit {code}",
        )
        folder = self.fresh("many")
        for i in range(300):
            (folder / "in").mkdir(exist_ok=True)
            (folder / "in" / f"e{i:03d}.png").write_bytes(b"")
        save_photo(folder / "in" / "real.png", 3)
        code, _, err = self.heatmap("--input", folder / "in", "--output", folder / "out", "--no-report")
        rows = read_rows(folder / "out" / "summary.csv")
        self.record(
            "resource",
            "300 empty files and one photo",
            set() if code == 1 and len(rows) == 301 and TRACEBACK not in err else {"bad"},
            f"exit {code}; {len(rows)} rows",
        )


# ---------------------------------------------------------------------------------------------------- cases
def format_cases(folder):
    """Write the photos of the image-format class into ``folder``; returns {file: (expected status, what)}."""
    import tifffile

    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    grey = rgb[..., 0]
    image = Image.fromarray(rgb)
    cases = {}

    def pillow(name, save, expected, what):
        save(folder / name)
        cases[name] = (expected, what)

    for fmt, ext in (("PNG", "png"), ("JPEG", "jpg"), ("BMP", "bmp"), ("TIFF", "tif"), ("WEBP", "webp")):
        pillow(f"plain.{ext}", lambda p, f=fmt: image.save(p, format=f), "ok", f"{fmt} as promised")
    pillow("palette.png", lambda p: image.convert("P").save(p), "ok", "palette PNG")
    pillow("rgba.png", lambda p: image.convert("RGBA").save(p), "ok", "RGBA PNG")
    pillow("la.png", lambda p: image.convert("LA").save(p), "ok", "grey + alpha PNG")
    pillow("grey.jpg", lambda p: image.convert("L").save(p), "ok", "greyscale JPEG")
    pillow("cmyk.jpg", lambda p: image.convert("CMYK").save(p), "ok", "CMYK JPEG")
    pillow("cmyk.tif", lambda p: image.convert("CMYK").save(p), "ok", "CMYK TIFF")
    pillow("onebit.tif", lambda p: image.convert("1").save(p), "ok", "1-bit TIFF")
    pillow("onebit.png", lambda p: image.convert("1").save(p), "ok", "1-bit PNG")
    pillow("progressive.jpg", lambda p: image.save(p, progressive=True), "ok", "progressive JPEG")
    pillow("lzw.tif", lambda p: image.save(p, compression="tiff_lzw"), "ok", "LZW TIFF")
    pillow("lossless.webp", lambda p: image.save(p, lossless=True), "ok", "lossless WebP")
    pillow("pages.tif", lambda p: image.save(p, save_all=True, append_images=[image]), "ok", "two-page TIFF")
    pillow("g16.png", lambda p: Image.fromarray(grey.astype(np.uint16) * 257).save(p), "ok", "16-bit grey PNG")
    pillow("g16.tif", lambda p: tifffile.imwrite(p, grey.astype(np.uint16) * 257), "ok", "16-bit grey TIFF")
    pillow("png_named.jpg", lambda p: image.save(p, format="PNG"), "ok", "PNG content named .jpg (promised)")
    for ext in ("png", "jpg", "tif", "bmp", "webp"):
        pillow(f"postscript.{ext}", lambda p: p.write_bytes(POSTSCRIPT), "failed", "postscript")
    for fmt, ext in (
        ("GIF", "png"),
        ("ICO", "jpg"),
        ("PCX", "bmp"),
        ("PPM", "png"),
        ("TGA", "jpg"),
        ("SGI", "tif"),
        ("IM", "png"),
        ("MSP", "jpg"),
        ("SPIDER", "png"),
        ("QOI", "png"),
        ("DDS", "png"),
        ("BLP", "jpg"),
        ("XBM", "png"),
    ):
        source = image.convert("1") if fmt in ("MSP", "XBM") else image.convert("F") if fmt == "SPIDER" else image
        try:
            pillow(
                f"{fmt.lower()}_named.{ext}",
                lambda p, s=source, f=fmt: p.write_bytes(encoded(s, f)),
                "failed",
                f"{fmt} content (not promised)",
            )
        except (OSError, KeyError, ValueError):
            (folder / f"{fmt.lower()}_named.{ext}").unlink(missing_ok=True)
            cases.pop(f"{fmt.lower()}_named.{ext}", None)
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        pillow(
            f"exif{orientation}.jpg", lambda p, e=exif: image.save(p, exif=e), "ok", f"EXIF orientation {orientation}"
        )
    pillow("icc.jpg", lambda p: image.save(p, icc_profile=b"\0" * 200), "any", "a broken ICC profile")
    pillow(
        "trns.png", lambda p: image.convert("P").save(p, format="PNG", transparency=0), "ok", "palette PNG with tRNS"
    )
    pillow("rgb16.png", lambda p: tifffile_png16(p, rgb), "any", "16-bit RGB PNG (any: read or one line)")
    pillow("rgb16.tif", lambda p: tifffile.imwrite(p, rgb.astype(np.uint16) * 257), "any", "16-bit RGB TIFF")
    pillow(
        "f16.tif",
        lambda p: tifffile.imwrite(p, (rgb[..., 0] / 255).astype(np.float16)),
        "any",
        "float16 TIFF in [0, 1]",
    )
    pillow("frgb.tif", lambda p: tifffile.imwrite(p, rgb.astype(np.float32) / 255), "any", "float RGB TIFF in [0, 1]")
    pillow("frgb255.tif", lambda p: tifffile.imwrite(p, rgb.astype(np.float32)), "failed", "float RGB TIFF in 0..255")
    pillow("tiled.tif", lambda p: tifffile.imwrite(p, rgb, tile=(16, 16)), "any", "tiled TIFF")
    pillow(
        "planar.tif",
        lambda p: tifffile.imwrite(p, np.moveaxis(rgb, 2, 0), planarconfig="separate", photometric="rgb"),
        "any",
        "planar TIFF",
    )
    pillow("sub444.jpg", lambda p: image.save(p, subsampling=0), "ok", "JPEG 4:4:4")
    pillow("palette.bmp", lambda p: image.convert("P").save(p), "ok", "8-bit palette BMP")
    pillow(
        "anim.webp",
        lambda p: image.save(p, save_all=True, append_images=[image.rotate(90)]),
        "ok",
        "animated WebP (first frame)",
    )
    pillow("grey.tif", lambda p: image.convert("L").save(p), "ok", "greyscale TIFF")
    pillow(
        "i16be.tif",
        lambda p: tifffile.imwrite(p, (grey.astype(np.uint16) * 257).astype(">u2")),
        "ok",
        "big-endian 16-bit TIFF",
    )
    pillow(
        "u8_32bit_bits.tif",
        lambda p: tifffile.imwrite(p, grey.astype(np.uint32)),
        "failed",
        "32-bit TIFF holding 0..255",
    )
    for ext in ("jpeg", "tiff", "heic", "avif", "dng"):
        pillow(f"postscript.{ext}", lambda p: p.write_bytes(POSTSCRIPT), "failed", "postscript")
    pillow("postscript_bom.png", lambda p: p.write_bytes(b"\xef\xbb\xbf" + POSTSCRIPT), "failed", "postscript")
    pillow("dos_eps.png", lambda p: p.write_bytes(dos_eps(POSTSCRIPT)), "failed", "postscript")
    pillow("loop.jpg", lambda p: p.write_bytes(POSTSCRIPT.replace(b"showpage", b"{ } loop")), "failed", "postscript")
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
        pillow("phone.heic", lambda p: image.save(p, format="HEIF"), "ok", "HEIC as promised")
        pillow("heic_named.jpg", lambda p: image.save(p, format="HEIF"), "ok", "HEIC content named .jpg (promised)")
    except Exception:
        pass
    unit = rgb[..., 0].astype(np.float32) / 255
    pillow("f01.tif", lambda p: tifffile.imwrite(p, unit), "ok", "float TIFF in [0, 1]")
    pillow(
        "f01_slack.tif",
        lambda p: tifffile.imwrite(p, np.minimum(unit + 1e-6, 1 + 1e-6)),
        "ok",
        "float TIFF 1e-6 above 1 (rounding)",
    )
    pillow("f255.tif", lambda p: tifffile.imwrite(p, unit * 255), "failed", "float TIFF in 0..255")
    pillow("fcentred.tif", lambda p: tifffile.imwrite(p, unit - 0.5), "failed", "float TIFF in -0.5..0.5")
    pillow("fnan.tif", lambda p: tifffile.imwrite(p, np.where(unit > 0.5, np.nan, unit)), "failed", "float NaN")
    pillow("finf.tif", lambda p: tifffile.imwrite(p, np.where(unit > 0.5, np.inf, unit)), "failed", "float inf")
    pillow("f64.tif", lambda p: tifffile.imwrite(p, unit.astype(np.float64) * 255), "failed", "float64 TIFF in 0..255")
    pillow(
        "u32.tif", lambda p: tifffile.imwrite(p, grey.astype(np.uint32) * 16843009), "failed", "32-bit unsigned TIFF"
    )
    pillow("i32.tif", lambda p: tifffile.imwrite(p, grey.astype(np.int32) * 1000), "failed", "32-bit signed TIFF")
    for name, data, what in (
        ("empty.png", b"", "empty file"),
        ("notes.jpg", b"just some notes\n" * 20, "text"),
        ("page.png", b"<html><body>hi</body></html>", "HTML"),
        ("doc.png", b"%PDF-1.4\n%\xe2\xe3\n1 0 obj\n<<>>\nendobj\n", "PDF header"),
        ("vector.png", b'<svg xmlns="http://www.w3.org/2000/svg" width="32" height="24"/>', "SVG"),
        ("archive.jpg", b"PK\x03\x04" + bytes(60), "zip"),
        ("noise.tif", bytes(rng.integers(0, 256, 3000, dtype=np.uint8)), "random bytes"),
    ):
        pillow(name, lambda p, d=data: p.write_bytes(d), "failed", what)
    whole = (folder / "plain.png").read_bytes()
    pillow("truncated.png", lambda p: p.write_bytes(whole[: len(whole) // 2]), "failed", "truncated PNG")
    return cases


def encoded(image, fmt):
    """The bytes of ``image`` in ``fmt``, saved to memory: Pillow's SPIDER writer registers the extension of the file
    it writes as SPIDER's, so saving one to a .png path would make every later .png of this process SPIDER."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def dos_eps(postscript):
    """A DOS EPS binary: the C5D0D3C6 header, then the PostScript section."""
    import struct

    return b"\xc5\xd0\xd3\xc6" + struct.pack("<6I", 30, len(postscript), 0, 0, 0, 0) + b"\xff\xff" + postscript


def tifffile_png16(path, rgb):
    """A 16-bit RGB PNG written without Pillow (which cannot): by hand, zlib and struct."""
    import struct
    import zlib

    rows = b"".join(b"\0" + (rgb.astype(">u2") * 257).tobytes() for rgb in rgb)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", rgb.shape[1], rgb.shape[0], 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    )


def crafted_label(path, kind):
    label = np.zeros((24, 32), np.float32)
    if kind == "npz":
        with open(path, "wb") as f:
            np.savez(f, label=label)
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"label": label.tolist()}))
    elif kind == "object array":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif kind == "text":
        path.write_text("0 0 0\n")
    elif kind == "truncated npy":
        np.save(path, label)
        path.write_bytes(path.read_bytes()[:100])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "unicode array":
        np.save(path, np.array([["a"] * 32] * 24))
    elif kind == "complex":
        np.save(path, label.astype(np.complex64))
    elif kind == "3-D":
        np.save(path, np.zeros((2, 24, 32), np.float32))
    elif kind == "NaN":
        np.save(path, np.full((24, 32), np.nan, np.float32))
    elif kind == "bool":
        np.save(path, np.zeros((24, 32), bool))
    elif kind == "folder named .npy":
        path.mkdir()
    elif kind == "fifo named .npy":
        os.mkfifo(path)


def train_config(repo, data, folder):
    import yaml

    config = {
        "base": str(repo / "configs" / "base.yaml"),
        "name": "tiny",
        "output_dir": str(folder / "runs"),
        "model": dict(TINY),
        "data": {
            "root": str(data),
            "train_csv": "train.csv",
            "valid_csv": "valid.csv",
            "crop": 32,
            "workers": 0,
            "valid_limit": 1,
        },
        "train": {"batch_size": 2, "lr": 1e-3, "log_every_steps": 1, "panels": 0, "epochs": 1},
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def remove_deep(top):
    """Remove a deep tree one level at a time (shutil.rmtree recurses)."""
    deep = top
    while (deep / "d").is_dir():
        deep = deep / "d"
    while True:
        for child in deep.iterdir():
            if not child.is_dir():
                child.unlink()
        deep.rmdir()
        if deep == top:
            return
        deep = deep.parent


API_CASES = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import pieanet
model = pieanet.load(CHECKPOINT)
rng = np.random.default_rng(3)
u8 = rng.integers(1, 255, (24, 32, 3), dtype=np.uint8)
unit = u8 / 255.0
cases = {
    "uint8": ("map", u8), "float64 in [0, 1]": ("map", unit), "float32 in [0, 1]": ("map", unit.astype(np.float32)),
    "float16 in [0, 1]": ("map", unit.astype(np.float16)), "uint16 (x 257)": ("map", u8.astype(np.uint16) * 257),
    "float 1e-6 above 1": ("map", np.clip(unit + 1e-6, 0, None)),
    "Fortran-ordered uint8": ("map", np.asfortranarray(u8)),
    "one NaN pixel": ("refused", np.where(np.arange(32)[None, :, None] == 3, np.nan, unit)),
    "all NaN": ("refused", np.full(unit.shape, np.nan)), "one +inf": ("refused", np.where(unit > 0.99, np.inf, unit)),
    "one -inf": ("refused", np.where(unit < 0.01, -np.inf, unit)), "float in -0.5..0.5": ("refused", unit - 0.5),
    "float32 in 0..255": ("refused", u8.astype(np.float32)), "float64 in 0..255": ("refused", u8.astype(np.float64)),
    "float 1.01 peak": ("refused", unit * 1.01 + 0.01), "int64 0..255": ("refused", u8.astype(np.int64)),
    "int32 0..255": ("refused", u8.astype(np.int32)), "int16": ("refused", u8.astype(np.int16)),
    "int8": ("refused", (u8 // 2).astype(np.int8)), "uint32": ("refused", u8.astype(np.uint32)),
    "uint64": ("refused", u8.astype(np.uint64)), "complex64": ("refused", unit.astype(np.complex64)),
    "complex128": ("refused", unit.astype(np.complex128)), "bool": ("refused", u8 > 128),
    "object array": ("refused", unit.astype(object)), "H x W grey": ("refused", u8[..., 0]),
    "H x W x 4": ("refused", np.dstack([u8, u8[..., :1]])), "H x W x 1": ("refused", u8[..., :1]),
    "nested list of floats": ("map", unit.tolist()), "string array": ("refused", u8.astype(str)),
    "nested list of ints 0..255": ("refused", u8.astype(int).tolist()),
    "negative zero floats": ("map", unit * 1.0 - 0.0),
    "masked array": ("map", np.ma.masked_array(unit, mask=unit > 2)), "read-only uint8": ("map", np.frombuffer(
        u8.tobytes(), np.uint8).reshape(u8.shape)), "non-contiguous uint8": ("map", np.repeat(u8, 2, axis=1)[:, ::2]),
    "float just below 0 (-1e-7)": ("map", np.where(unit == unit.min(), -1e-7, unit)),
    "float -0.01": ("refused", np.where(unit == unit.min(), -0.01, unit)), "longdouble in [0, 1]": ("map",
        unit.astype(np.longdouble)), "uint16 as 0..255": ("map-differs", u8.astype(np.uint16)),
    "datetime64": ("refused", np.zeros(u8.shape, "datetime64[s]")), "0 x 0 x 3": ("refused", np.zeros((0, 0, 3))),
    "one pixel at 1.5": ("refused", np.where(unit == unit.max(), 1.5, unit)),
    "one pixel at 255.0": ("refused", np.where(unit == unit.max(), 255.0, unit)),
    "all black uint8": ("map-differs", np.zeros_like(u8)), "all white float": ("map-differs", np.ones(unit.shape)),
    "1 x 1 x 3 uint8": ("map-differs", u8[:1, :1]),
}
outcomes = {}
for case, (expected, array) in cases.items():
    try:
        residual = pieanet.predict(array, model)
        outcomes[case] = (expected, {"kind": "map", "mean": float(np.nanmean(residual)) if np.isfinite(residual).any()
                                     else float("nan"), "finite": bool(np.isfinite(residual).all())})
    except Exception as e:
        outcomes[case] = (expected, {"kind": "error", "type": type(e).__name__, "message": str(e)})
# the model's direct call (models.inference.predict_tensor): a TypeError or ValueError in one line is a refusal
import torch
from pieanet.models.inference import predict_tensor
x = torch.from_numpy(unit.astype(np.float32)).permute(2, 0, 1)[None].contiguous()
def spot(value, channel=0):
    y = x.clone()
    y[0, channel, 4, 5] = value
    return y
tensors = {
    "float32 in [0, 1]": ("map", x), "float32 5e-5 above 1": ("map", (x + 5e-5).clamp(max=1 + 5e-5)),
    "batch of two": ("map", torch.cat([x, x])), "channels-last": ("map", x.to(memory_format=torch.channels_last)),
    "requires_grad": ("map", x.clone().requires_grad_()), "one NaN in red": ("refused", spot(float("nan"))),
    "one NaN in blue": ("refused", spot(float("nan"), 2)), "one +inf": ("refused", spot(float("inf"), 1)),
    "one -inf": ("refused", spot(-float("inf"))), "all NaN": ("refused", torch.full_like(x, float("nan"))),
    "float32 in 0..255": ("refused", x * 255), "float32 in -0.5..0.5": ("refused", x - 0.5),
    "one pixel at 3.0 in every channel": ("refused", torch.where(x == x.max(), 3.0, x)),
    "float64 in [0, 1]": ("refused", x.double()), "float16 in [0, 1]": ("refused", x.half()),
    "bfloat16 in [0, 1]": ("refused", x.bfloat16()), "uint8 0..255": ("refused", (x * 255).round().byte()),
    "int64 0..255": ("refused", (x * 255).long()), "bool": ("refused", x > 0.5),
    "complex64": ("refused", x.to(torch.complex64)), "3 x H x W": ("refused", x[0]),
    "B x 4 x H x W": ("refused", torch.cat([x, x[:, :1]], 1)), "B x 1 x H x W": ("refused", x[:, :1]),
    "no rows": ("refused", x[:, :, :0]), "numpy array": ("refused", x.numpy()), "nested list": ("refused", x.tolist()),
}
for case, (expected, tensor) in tensors.items():
    try:
        residual = predict_tensor(model, tensor)[0, 0].detach().numpy()
        outcomes["tensor: " + case] = (expected, {"kind": "map", "finite": bool(np.isfinite(residual).all()),
                                                  "mean": float(np.nanmean(residual)) if np.isfinite(residual).any()
                                                  else float("nan")})
    except Exception as e:
        outcomes["tensor: " + case] = (expected, {"kind": "error", "type": type(e).__name__, "message": str(e)})
print(json.dumps(outcomes))
"""


def refusals(case):
    """The exception types that count as the promised refusal: pieanet.predict's ValueError for arrays; for the
    model's direct call (a "tensor: " case) also TypeError for a wrong type or dtype, never a library's own error
    (torch's RuntimeError about a convolution's input) that happens to stop it."""
    return ("ValueError", "TypeError") if case.startswith("tensor: ") else ("ValueError",)


def run_audit(repo, timeout, classes, shared=None):
    """Every case of ``classes`` against the checkout ``repo``, its scratch folder removed after: the results."""
    audit = Audit(repo, timeout, classes, shared)
    try:
        return audit.run()
    finally:
        for deep in audit.work.glob("deep/in"):
            remove_deep(deep)
        shutil.rmtree(audit.work, ignore_errors=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--repo",
        type=Path,
        default=Path(__file__).resolve().parents[2],
        help="the checkout to audit (default: this one)",
    )
    p.add_argument("--classes", default=",".join(CLASSES), help=f"comma-separated, of {', '.join(CLASSES)}")
    p.add_argument("--timeout", type=float, default=120, help="seconds per tool run (default: 120)")
    p.add_argument(
        "--shared",
        type=Path,
        help="the reference data (default: ../shared beside --repo): the released "
        "weights, the teacher of the teacher.json cases",
    )
    p.add_argument("--json", type=Path, help="also write every case's result here")
    args = p.parse_args(argv)
    results = run_audit(args.repo, args.timeout, args.classes.split(","), args.shared)
    print(table(results, list(CLASSES.values())))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
