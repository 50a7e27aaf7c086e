"""Hostile cases for the files and folders the tools touch (issue 18, classes 1-5, 9 and 11), against any checkout.

    python -m tests.audits.audit_files --repo PATH [--classes 1,2,3] [--timeout 180] [--json results.json]

(from the root of the checkout that holds this file; PATH, the audited checkout, may be another one)

Every case sets up, in a fresh temporary folder, what a user (or someone planting links) could leave there, runs the
checkout's own scripts as subprocesses (python PATH/make_heatmap.py ...; nothing of this checkout is imported), each
under a timeout, and judges the result from the files on disk and the output:

    clean     the expected safe behaviour (done, or refused in one line), nothing lost, nothing written outside
    bad       a traceback, a hang (timeout), a silent skip, a wrong result, or one of the two below
    security  something written, replaced or removed outside the output (or experiment) folder, or torch's advice to
              load a file with weights_only=False
    data lost a user's file removed or changed, or finished results lost (rows of another run)

Classes: 1 ownership (files the tool did not make), 2 containment (links), 3 one run per folder (concurrent runs),
4 backend failures (onnxruntime), 5 pickle-based files (tampered last.pt), 9 training folders, 11 folder semantics
(--resume after a photo changed, compare_methods' output folder). Prints one line per case and the table by class.
"""

import argparse
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

TINY = {"name": "pieanet", "width": 8, "lightness_blocks": 1, "attention_layers": 1, "heads": 2, "window": 4}
KINDS = ("exposure.png", "exposure.jpg", "overlay.png", "overlay.jpg", "colorbar.png", "residual.npy")
TRACEBACK = "Traceback (most recent call last)"
UNSAFE = ("weights_only=False", "weights_only` set to `False`", "weights_only set to False")  # torch's advice


def unsafe(text):
    """Whether ``text`` advises loading with weights_only=False (which runs a stranger's code)."""
    return any(advice in text for advice in UNSAFE)


class Audit:
    def __init__(self, repo, timeout, classes, quick=False, minimal=False):
        self.repo, self.timeout, self.classes, self.quick = Path(repo).resolve(), timeout, classes, quick or minimal
        self.minimal = minimal  # one or two cases of each kind: for a loaded machine
        self.results = []  # (class, case, verdict, flags, note)
        self.work = Path(tempfile.mkdtemp(prefix="audit-files-"))
        self.env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1")

    # ---------------------------------------------------------------------------------------------- running
    def script(self, name, *args, cwd=None, background=False):
        argv = [sys.executable, str(self.repo / name), *map(str, args)]
        if name == "make_heatmap.py" or name == "compare_methods.py":
            argv += ["--threads", "1"]
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
                timeout=self.timeout,
            )
            return done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired:
            return None, "", "timeout"

    def heatmap(self, *args, **kw):
        return self.script("make_heatmap.py", *args, "--checkpoint", self.tiny, **kw)

    def record(self, cls, case, problems, note=""):
        """problems: a set of 'bad', 'security', 'lost' (empty: clean)."""
        cls = int(cls)
        verdict = "clean" if not problems else "+".join(sorted(problems))
        self.results.append(
            {"class": cls, "case": case, "verdict": verdict, "problems": sorted(problems), "note": note[:200]}
        )
        print(f"[{cls:>2}] {verdict:<18} {case}" + (f"  ({note[:140]})" if problems and note else ""), flush=True)

    def fresh(self, name):
        folder = self.work / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return folder

    # ---------------------------------------------------------------------------------------------- fixtures
    def setup(self):
        self.tiny = self.work / "tiny.safetensors"
        code = (
            "import sys, torch; sys.path.insert(0, sys.argv[1]); from pieanet.models import build_model, "
            f"save_model; torch.manual_seed(0); save_model(sys.argv[2], build_model({TINY!r}))"
        )
        subprocess.run([sys.executable, "-c", code, str(self.repo), str(self.tiny)], check=True, env=self.env)
        self.data = make_dataset(self.work / "iea")
        self.template = None

    def train_config(self, folder, **train):
        import yaml

        config = {
            "base": str(self.repo / "configs" / "base.yaml"),
            "name": "tiny",
            "output_dir": str(folder / "runs"),
            "model": dict(TINY),
            "data": {
                "root": str(self.data),
                "train_csv": "train.csv",
                "valid_csv": "valid.csv",
                "crop": 32,
                "workers": 0,
                "valid_limit": 1,
            },
            "train": {"batch_size": 2, "lr": 1e-3, "log_every_steps": 1, "panels": 0, "epochs": 1, **train},
        }
        path = folder / "tiny.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def train(self, config, *args, background=False):
        return self.script("train_wavelet.py", "--config", config, "--device", "cpu", *args, background=background)

    def stopped_run(self, folder):
        """(config, run folder): a copy of a run stopped after one step (last.pt saved)."""
        if self.template is None:
            base = self.fresh("template")
            config = self.train_config(base)
            code, _, err = self.train(config, "train.max_steps=1")
            if code != 0:
                raise SystemExit(f"the template training run failed: {err[-400:]}")
            self.template = base / "runs" / "tiny"
        config = self.train_config(folder)
        shutil.copytree(self.template, folder / "runs" / "tiny")
        return config, folder / "runs" / "tiny"

    # ---------------------------------------------------------------------------------------------- 1 ownership
    def class_1(self):
        option_sets = {
            "default": [],
            "all outputs": ["--overlay", "--colorbar", "--save-npy"],
            "jpg": ["--format", "jpg", "--overlay"],
        }
        for label, options in option_sets.items():
            folder = self.fresh(f"own-{label.replace(' ', '-')}")
            photos, out = folder / "in", folder / "out"
            out.mkdir()
            for n, kind in enumerate(KINDS):  # one photo per kind, beside a user's file of that output name
                save_photo(photos / f"p{n}.jpg", n)
                (out / f"p{n}_{kind}").write_bytes(f"user's own {kind}".encode())
            (out / "notes_exposure.png").write_bytes(b"user's own, no photo of that name")
            before = snapshot(out)
            code, _, err = self.heatmap("--input", photos, "--output", out, "--no-report", *options)
            for name, data in before.items():
                problems = set()
                now = out / name
                if not now.is_file() or now.read_bytes() != data:
                    problems |= {"bad", "lost"}
                if TRACEBACK in err or code not in (0, 1, 2):
                    problems.add("bad")
                self.record(
                    1,
                    f"user's {name} beside the photo's outputs ({label})",
                    problems,
                    "removed" if not now.exists() else "overwritten" if problems else "",
                )
        # a single photo whose folder is the output folder, spelled several ways
        for spelling in ("photos", "photos/.", "photos/../photos", "link-to-photos", "./photos/"):
            for options in ([], ["--overlay", "--format", "jpg"])[: 1 if self.quick else 2]:
                folder = self.fresh("single")
                photos = folder / "photos"
                save_photo(photos / "beach.png", 1)
                for kind in ("exposure.png", "exposure.jpg", "overlay.png", "overlay.jpg"):
                    (photos / f"beach_{kind}").write_bytes(f"user's {kind}".encode())
                (folder / "link-to-photos").symlink_to(photos, target_is_directory=True)
                before = snapshot(photos)
                code, _, err = self.heatmap("--input", photos / "beach.png", "--output", spelling, *options, cwd=folder)
                problems = set()
                changed = [n for n, d in before.items() if not (photos / n).is_file() or (photos / n).read_bytes() != d]
                if changed:
                    problems |= {"bad", "lost"}
                if TRACEBACK in err or code is None:
                    problems.add("bad")
                self.record(
                    1,
                    f"--input photos/beach.png --output {spelling} {' '.join(options)}".strip(),
                    problems,
                    f"changed {changed}",
                )

    def class_1b(self):
        """Class 1 continued: index.html, a user's files in a sub-folder and added after a first run."""
        pages = {
            "a user's page": b"<html><body>my photo site</body></html>",
            "an empty index.html": b"",
            "a page titled like the report": b"<html><head><title>Exposure heatmaps: out</title></head></html>",
        }
        for label, data in pages.items():
            folder = self.fresh("page")
            save_photo(folder / "in" / "a.png", 2)
            (folder / "out").mkdir()
            (folder / "out" / "index.html").write_bytes(data)
            code, _, err = self.heatmap("--input", folder / "in", "--output", folder / "out")
            problems = set()
            if (folder / "out" / "index.html").read_bytes() != data:
                problems |= {"bad", "lost"}
            if TRACEBACK in err or code is None:
                problems.add("bad")
            self.record(1, f"{label} in the output folder", problems, "replaced")
        folder = self.fresh("page-own")
        save_photo(folder / "in" / "a.png", 2)
        self.heatmap("--input", folder / "in", "--output", folder / "out")
        save_photo(folder / "in" / "b.png", 3)
        code, _, err = self.heatmap("--input", folder / "in", "--output", folder / "out")
        page = (folder / "out" / "index.html").read_bytes() if (folder / "out" / "index.html").exists() else b""
        self.record(
            1,
            "the tool's own index.html is updated by the next run",
            set() if code == 0 and b"b.png" in page else {"bad"},
            err.strip()[-200:],
        )
        # a user's file in a sub-folder of the output (--recursive), and one added after a first run
        folder = self.fresh("own-sub")
        save_photo(folder / "in" / "sub" / "b.png", 4)
        (folder / "out" / "sub").mkdir(parents=True)
        (folder / "out" / "sub" / "b_overlay.png").write_bytes(b"user's overlay")
        (folder / "out" / "sub" / "b_exposure.png").write_bytes(b"user's map")
        code, _, err = self.heatmap("--input", folder / "in", "--recursive", "--output", folder / "out", "--no-report")
        for name, data in (("b_overlay.png", b"user's overlay"), ("b_exposure.png", b"user's map")):
            p = folder / "out" / "sub" / name
            self.record(
                1,
                f"user's sub/{name} with --recursive",
                set() if p.is_file() and p.read_bytes() == data and TRACEBACK not in err else {"bad", "lost"},
            )
        folder = self.fresh("own-later")
        save_photo(folder / "in" / "a.png", 5)
        self.heatmap("--input", folder / "in", "--output", folder / "out", "--no-report")
        save_photo(folder / "in" / "b.png", 6)
        (folder / "out" / "b_residual.npy").write_bytes(b"user's numbers")
        (folder / "out" / "b_colorbar.png").write_bytes(b"user's colour bar")
        code, _, err = self.heatmap("--input", folder / "in", "--output", folder / "out", "--no-report", "--resume")
        for name in ("b_residual.npy", "b_colorbar.png"):
            p = folder / "out" / name
            self.record(
                1,
                f"user's {name} added after a first run, then --resume",
                set() if p.is_file() and p.read_bytes().startswith(b"user's") else {"bad", "lost"},
            )

    # ---------------------------------------------------------------------------------------------- 2 containment
    def class_2(self):
        folder = self.fresh("link-sub")
        save_photo(folder / "in" / "a.png", 1)
        save_photo(folder / "in" / "sub" / "b.png", 2)
        victim = folder / "victim"
        victim.mkdir()
        for kind in KINDS:
            (victim / f"b_{kind}").write_bytes(f"victim {kind}".encode())
        (victim / ".b.99999999-deadbeef.tmp.png").write_bytes(b"victim's dot file named like a temporary")
        before = snapshot(victim)
        (folder / "out").mkdir()
        (folder / "out" / "sub").symlink_to(victim, target_is_directory=True)
        code, _, err = self.heatmap(
            "--input",
            folder / "in",
            "--recursive",
            "--output",
            folder / "out",
            "--overlay",
            "--colorbar",
            "--save-npy",
            "--no-report",
            "--resume",
        )
        for name, data in before.items():
            p = victim / name
            gone = not p.is_file() or p.read_bytes() != data
            self.record(
                2,
                f"out/sub -> victim folder: victim's {name}",
                {"bad", "security", "lost"} if gone else set() if TRACEBACK not in err else {"bad"},
            )
        added = sorted(set(os.listdir(victim)) - set(before))
        self.record(
            2,
            "out/sub -> victim folder: nothing new written there",
            {"bad", "security"} if added else set(),
            f"wrote {added}",
        )
        for label, target_exists in (("dangling", False), ("to a user's file", True))[: 1 if self.minimal else 2]:
            folder = self.fresh("link-summary")
            save_photo(folder / "in" / "a.png", 3)
            (folder / "out").mkdir()
            target = folder / "elsewhere.csv"
            if target_exists:
                target.write_text("user,data\n1,2\n")
            (folder / "out" / "summary.csv").symlink_to(target)
            code, _, err = self.heatmap("--input", folder / "in", "--output", folder / "out", "--no-report")
            wrote = target.exists() != target_exists or (target_exists and target.read_text() != "user,data\n1,2\n")
            problems = {"bad", "security"} | ({"lost"} if target_exists else set()) if wrote else set()
            if TRACEBACK in err or code is None:
                problems.add("bad")
            self.record(2, f"out/summary.csv a link {label}", problems, err.strip()[-160:])
        for name in ("index.html", "a_exposure.png", "a_overlay.png")[: 0 if self.minimal else 3]:
            folder = self.fresh("link-file")
            save_photo(folder / "in" / "a.png", 4)
            (folder / "out").mkdir()
            victim = folder / "victim.bin"
            victim.write_bytes(b"victim")
            (folder / "out" / name).symlink_to(victim)
            code, _, err = self.heatmap("--input", folder / "in", "--output", folder / "out")
            problems = set()
            if victim.read_bytes() != b"victim":
                problems |= {"bad", "security", "lost"}
            if not (folder / "out" / name).is_symlink():
                problems |= {"bad", "lost"}  # the user's link itself replaced or removed
            if TRACEBACK in err or code is None:
                problems.add("bad")
            self.record(2, f"out/{name} a link to a file outside", problems)
        if self.minimal:
            folder = self.fresh("link-log")
            config = self.train_config(folder)
            out = folder / "runs" / "tiny"
            out.mkdir(parents=True)
            (out / "train.log").symlink_to(folder / "elsewhere.log")
            code, _, err = self.train(config, "train.max_steps=1")
            wrote = (folder / "elsewhere.log").exists()
            self.record(
                2,
                "experiments/<name>/train.log a dangling link",
                ({"bad", "security"} if wrote else set()) | ({"bad"} if TRACEBACK in err or code is None else set()),
                err.strip()[-160:],
            )
            return
        folder = self.fresh("link-dangling-sub")
        save_photo(folder / "in" / "sub" / "b.png", 5)
        (folder / "out").mkdir()
        (folder / "out" / "sub").symlink_to(folder / "nowhere", target_is_directory=True)
        code, _, err = self.heatmap("--input", folder / "in", "--recursive", "--output", folder / "out", "--no-report")
        problems = {"bad", "security"} if (folder / "nowhere").exists() else set()
        if TRACEBACK in err or code is None:
            problems.add("bad")
        self.record(2, "out/sub a dangling link", problems, err.strip()[-160:])
        for label, target_exists in (("dangling", False), ("to a user's file", True)):
            folder = self.fresh("link-log")
            config = self.train_config(folder)
            out = folder / "runs" / "tiny"
            out.mkdir(parents=True)
            target = folder / "elsewhere.log"
            if target_exists:
                target.write_text("user's log\n")
            (out / "train.log").symlink_to(target)
            code, _, err = self.train(config, "train.max_steps=1")
            wrote = target.exists() != target_exists or (target_exists and target.read_text() != "user's log\n")
            problems = ({"bad", "security"} | ({"lost"} if target_exists else set())) if wrote else set()
            if TRACEBACK in err or code is None:
                problems.add("bad")
            self.record(2, f"experiments/<name>/train.log a link {label}", problems, err.strip()[-160:])
        folder = self.fresh("link-config")
        config = self.train_config(folder)
        out = folder / "runs" / "tiny"
        out.mkdir(parents=True)
        (folder / "victim.yaml").write_text("user: 1\n")
        (out / "config.yaml").symlink_to(folder / "victim.yaml")
        code, _, err = self.train(config, "train.max_steps=1")
        problems = {"bad", "security", "lost"} if (folder / "victim.yaml").read_text() != "user: 1\n" else set()
        if TRACEBACK in err or code is None:
            problems.add("bad")
        self.record(2, "experiments/<name>/config.yaml a link to a user's file", problems)

    # ---------------------------------------------------------------------------------------------- 3 concurrency
    def class_3(self):
        for label, extra in (
            ("plain", []),
            ("--resume", ["--resume"]),
            ("--batch-size 2", ["--batch-size", "2"]),
            ("with report", []),
        )[: 2 if self.quick else 4]:
            folder = self.fresh("two-runs")
            for run, (h, w) in (("A", (24, 32)), ("B", (40, 48))):
                for n in range(4):
                    save_photo(folder / run / f"p{n}.png", n + (10 if run == "B" else 0), h, w)
            out = folder / "out"
            report = [] if label == "with report" else ["--no-report"]
            runs = [
                self.script(
                    "make_heatmap.py",
                    "--input",
                    folder / run,
                    "--output",
                    out,
                    "--checkpoint",
                    self.tiny,
                    *report,
                    *extra,
                    background=True,
                )
                for run in ("A", "B")
            ]
            outcomes = [finish(p, self.timeout) for p in runs]
            self.record(
                3,
                f"two make_heatmap runs into one folder at once ({label})",
                judge_shared_folder(out, outcomes, expected=8),
            )
        if self.minimal:
            return
        folder = self.fresh("resume-during")
        for n in range(10):
            save_photo(folder / "A" / f"a{n}.png", n)
        save_photo(folder / "B" / "b0.png", 50)
        out = folder / "out"
        first = self.script(
            "make_heatmap.py",
            "--input",
            folder / "A",
            "--output",
            out,
            "--checkpoint",
            self.tiny,
            "--no-report",
            background=True,
        )
        time.sleep(1.0)
        second = self.script(
            "make_heatmap.py",
            "--input",
            folder / "B",
            "--output",
            out,
            "--checkpoint",
            self.tiny,
            "--no-report",
            "--resume",
            background=True,
        )
        outcomes = [finish(first, self.timeout), finish(second, self.timeout)]
        self.record(3, "a --resume run started during another run's appends", judge_shared_folder(out, outcomes, 11))
        folder = self.fresh("two-trainings")
        config = self.train_config(folder)
        runs = [self.train(config, "train.max_steps=2", background=True) for _ in range(2)]
        outcomes = [finish(p, self.timeout) for p in runs]
        log = folder / "runs" / "tiny" / "train.log"
        headers = log.read_text().count("parameters),") if log.exists() else 0
        problems = set()
        codes = sorted(code for code, _, _ in outcomes)
        if any(TRACEBACK in err or code is None for code, _, err in outcomes):
            problems.add("bad")
        if codes == [0, 0] or headers > 1:
            problems |= {"bad", "lost"}  # both ran in one folder: shared config, last.pt, one interleaved log
        elif codes != [0, 2] or not any(
            "another run" in err or "already holds a run" in err for code, _, err in outcomes if code == 2
        ):
            problems.add("bad")
        self.record(3, "two train_wavelet starts under one name at once", problems, f"exit codes {codes}")

    # ---------------------------------------------------------------------------------------------- 4 onnxruntime
    def class_4(self):
        import onnx

        model = onnx.load(str(self.repo / "checkpoints" / "pieanet_corpus.onnx"))
        variants = {
            "H and W fixed at 64": (None, 64, 64),
            "batch fixed at 1": (1, None, None),
            "W fixed at 64": (None, None, 64),
        }
        if self.minimal:
            variants = {"H and W fixed at 64": (None, 64, 64)}
        for label, dims in variants.items():
            fixed = onnx.ModelProto()
            fixed.CopyFrom(model)
            shape = fixed.graph.input[0].type.tensor_type.shape
            for axis, value in zip((0, 2, 3), dims):
                if value is not None:
                    shape.dim[axis].ClearField("dim_param")
                    shape.dim[axis].dim_value = value
            path = self.work / f"fixed-{len(dims)}-{label.replace(' ', '_')}.onnx"
            onnx.save(fixed, str(path))
            orders = (
                ("batch of 1", ["--batch-size", "1"]),
                ("batch of 2", ["--batch-size", "2"]),
                ("then --resume", ["--resume"]),
            )
            if self.minimal:
                orders = orders[1:2]
            chosen = orders[:1] if self.quick and "batch" not in label else orders[:2] if self.quick else orders
            for order, options in chosen:
                folder = self.fresh("onnx")
                for n, (h, w) in enumerate(((64, 64), (64, 128), (64, 64), (128, 64))):
                    save_photo(folder / "in" / f"p{n}.png", n, h, w)
                out = folder / "out"
                if order == "then --resume":
                    self.script(
                        "make_heatmap.py",
                        "--input",
                        folder / "in",
                        "--output",
                        out,
                        "--checkpoint",
                        path,
                        "--no-report",
                    )
                code, _, err = self.script(
                    "make_heatmap.py",
                    "--input",
                    folder / "in",
                    "--output",
                    out,
                    "--checkpoint",
                    path,
                    "--no-report",
                    *options,
                )
                rows = read_rows(out / "summary.csv")
                problems = set()
                if TRACEBACK in err or code is None or code == 2:
                    problems.add("bad")
                if {r["file"] for r in rows} != {f"p{n}.png" for n in range(4)}:
                    problems.add("bad")  # a photo never got its row: the run ended with the error
                self.record(4, f"ONNX with {label}: {order}", problems, err.strip()[-160:])

    # ---------------------------------------------------------------------------------------------- 5 pickles
    def class_5(self):
        import torch

        cases = {
            "a Namespace object inside": lambda s: {**s, "model": argparse.Namespace(x=1)},
            "a pickle calling os.system": None,
            "a pickle with a GLOBAL of builtins.eval": "eval",
            "an empty file": b"",
            "a truncated zip": "truncate",
            "a list instead of a dict": lambda s: [1, 2, 3],
            "no model weights": lambda s: {k: v for k, v in s.items() if k != "model"},
            "rng state a string": lambda s: {**s, "rng": "abc"},
            "scale_rng a list": lambda s: {**s, "scale_rng": [1, 2]},
            "config a list": lambda s: {**s, "config": [1]},
        }
        for key in ("epoch", "step_in_epoch", "global_step", "best_mae"):
            cases[f"counter {key} missing"] = (lambda k: lambda s: {n: v for n, v in s.items() if n != k})(key)
        for key, value in (
            ("epoch", "1"),
            ("global_step", 1.5),
            ("step_in_epoch", None),
            ("best_mae", "x"),
            ("epoch", -3),
            ("global_step", [1]),
            ("best_mae", None),
        ):
            cases[f"counter {key} = {value!r}"] = (lambda k, v: lambda s: {**s, k: v})(key, value)
        if self.quick:  # every kind of tampering once, the counters two of each
            keep = {
                "a Namespace object inside",
                "a pickle calling os.system",
                "a pickle with a GLOBAL of builtins.eval",
                "an empty file",
                "a truncated zip",
                "a list instead of a dict",
                "no model weights",
                "rng state a string",
                "counter epoch missing",
                "counter best_mae missing",
                "counter epoch = '1'",
                "counter global_step = 1.5",
                "counter best_mae = None",
                "counter epoch = -3",
            }
            if self.minimal:
                keep = {
                    "a Namespace object inside",
                    "a pickle calling os.system",
                    "counter epoch missing",
                    "counter global_step = 1.5",
                }
            cases = {k: v for k, v in cases.items() if k in keep}
        for label, change in cases.items():
            folder = self.fresh("pickle")
            config, out = self.stopped_run(folder)
            last = out / "last.pt"
            if change is None or change == "eval":
                write_malicious_pickle(last, folder / "pwned", "eval" if change == "eval" else "system")
            elif isinstance(change, bytes):
                last.write_bytes(change)
            elif change == "truncate":
                last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
            else:
                state = torch.load(last, weights_only=True)
                torch.save(change(state), last)
            code, _, err = self.train(config, "--resume")
            problems = set()
            if (folder / "pwned").exists() or unsafe(err):
                problems |= {"bad", "security"}
            if TRACEBACK in err or code != 2 or len(err.strip().splitlines()) != 1:
                problems.add("bad")
            self.record(5, f"last.pt: {label} (train_wavelet --resume)", problems, err.strip()[-200:])
        tools = (
            ("make_heatmap.py", ["--input", "in", "--output", "out", "--no-report"]),
            ("score.py", ["in"]),
            ("export.py", ["--output", "x.onnx"]),
        )
        for tool, args in tools[: 0 if self.minimal else 3]:
            folder = self.fresh("pickle-tools")
            save_photo(folder / "in" / "a.png", 1)
            write_malicious_pickle(folder / "evil.pt", folder / "pwned", "system")
            code, _, err = self.script(tool, *args, "--checkpoint", folder / "evil.pt", cwd=folder)
            problems = set()
            if (folder / "pwned").exists() or unsafe(err):
                problems |= {"bad", "security"}
            if TRACEBACK in err or code != 2:
                problems.add("bad")
            self.record(5, f"{tool} --checkpoint a pickle calling os.system", problems, err.strip()[-160:])

    # ---------------------------------------------------------------------------------------------- 9 training folders
    def class_9(self):
        for override in ("model.width=16", "model.heads=3", "model.lightness_blocks=2")[
            : 1 if self.minimal else 2 if self.quick else 3
        ]:
            folder = self.fresh("refused-resume")
            config, out = self.stopped_run(folder)
            before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir() if p.is_file()}
            code, _, err = self.train(config, "--resume", override)
            after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir() if p.is_file()}
            problems = set()
            if code == 0:
                problems.add("bad")  # accepted a resume that does not fit
            if code != 0 and after != before:
                problems |= {"bad"} | (
                    {"lost"}
                    if before.keys() - after.keys() or any(after.get(k, (None,))[0] != v[0] for k, v in before.items())
                    else set()
                )
            if TRACEBACK in err:
                problems.add("bad")
            changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
            self.record(
                9, f"refused --resume {override} leaves the run folder untouched", problems, f"changed {changed}"
            )
        folder = self.fresh("weights-only")
        config = self.train_config(folder)
        out = folder / "runs" / "tiny"
        out.mkdir(parents=True)
        (out / "last.safetensors").write_bytes(b"weights trained for a week")
        code, _, err = self.train(config, "train.max_steps=1")
        self.record(
            9,
            "a folder holding only last.safetensors is not started over",
            set()
            if (out / "last.safetensors").read_bytes() == b"weights trained for a week" and code == 2
            else {"bad", "lost"},
        )
        for names in (("last.safetensors", "best.safetensors", "last.pt"), ("last.safetensors",))[
            : 1 if self.quick else 2
        ]:
            folder = self.fresh("overwrite")
            config = self.train_config(folder)
            out = folder / "runs" / "tiny"
            out.mkdir(parents=True)
            for name in names:
                (out / name).write_bytes(b"old weights")
            code, _, err = self.train(config, "--overwrite", "train.max_steps=1")
            stale = [n for n in names if (out / n).exists() and (out / n).read_bytes() == b"old weights"]
            self.record(
                9,
                f"--overwrite removes every earlier weight file ({', '.join(names)})",
                {"bad"} if stale or code != 0 else set(),
                f"kept {stale}; {err.strip()[-120:]}",
            )
        if self.minimal:
            return
        folder = self.fresh("truncated-resume")
        config, out = self.stopped_run(folder)
        (out / "last.pt").write_bytes((out / "last.pt").read_bytes()[:1000])
        before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
        code, _, err = self.train(config, "--resume")
        after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
        self.record(
            9,
            "a refused resume of a truncated last.pt leaves the folder untouched",
            set() if code == 2 and after == before and TRACEBACK not in err else {"bad"},
        )

    # ---------------------------------------------------------------------------------------------- 11 semantics
    def class_11(self):
        changes = {
            "a bigger photo": (40, 48, 9),
            "a smaller photo": (16, 16, 9),
            "same size, other content": (24, 32, 9),
            "the same bytes rewritten": None,
            "same size, one pixel changed": "pixel",
        }
        if self.quick:
            kept = ("a bigger photo", "same size, one pixel changed", "the same bytes rewritten")
            changes = {k: v for k, v in changes.items() if k in kept[: 1 if self.minimal else 3]}
        for label, change in changes.items():
            folder = self.fresh("resume-changed")
            save_photo(folder / "in" / "a.png", 1)
            save_photo(folder / "in" / "b.png", 2)
            out = folder / "out"
            self.heatmap("--input", folder / "in", "--output", out, "--no-report")
            a = folder / "in" / "a.png"
            if change is None:
                a.write_bytes(a.read_bytes())
            elif change == "pixel":
                pixels = np.array(Image.open(a, formats=["PNG", "JPEG"]))
                pixels[0, 0] = 255 - pixels[0, 0]
                Image.fromarray(pixels).save(a)
            else:
                save_photo(a, change[2], change[0], change[1])
            expected_redo = change is not None
            old_map = (out / "a_exposure.png").read_bytes()
            code, stdout, err = self.heatmap("--input", folder / "in", "--output", out, "--no-report", "--resume")
            rows = [r for r in read_rows(out / "summary.csv") if r["file"] == "a.png"]
            problems = set()
            if TRACEBACK in err or code != 0 or len(rows) != 1:
                problems.add("bad")
            if expected_redo:
                with Image.open(a, formats=["PNG", "JPEG"]) as im:
                    size = im.size
                if (rows and (rows[0]["width"], rows[0]["height"]) != tuple(map(str, size))) or (
                    out / "a_exposure.png"
                ).read_bytes() == old_map:
                    problems.add("bad")  # the old row and map kept for another photo
            elif "2 already done" not in stdout:
                problems.add("bad")  # redone although nothing changed
            self.record(11, f"--resume after a.png was replaced by {label}", problems, stdout.strip()[-120:])
        outputs = (
            ("= a method folder", "m1"),
            ("inside a method folder", "m2/report"),
            ("inside the reference folder", "ref/x"),
            ("= the reference folder", "ref"),
            ("a method folder spelled m1/.", "m1/."),
        )
        for label, output in outputs[: 1 if self.minimal else 3 if self.quick else 5]:
            folder = self.fresh("compare")
            for method in ("m1", "m2", "ref"):
                save_photo(folder / method / "x.png", 1)
            before = snapshot(folder)
            code, _, err = self.script(
                "compare_methods.py",
                "--inputs",
                "m1",
                "m2",
                "--reference",
                "ref",
                "--output",
                output,
                "--checkpoint",
                self.tiny,
                cwd=folder,
            )
            problems = set()
            if snapshot(folder) != before or code != 2:
                problems.add("bad")
            if TRACEBACK in err:
                problems.add("bad")
            self.record(11, f"compare_methods --output {label}", problems, f"exit {code}")
        if not self.minimal:  # the working case beside the refusals
            folder = self.fresh("compare-ok")
            for method in ("m1", "m2"):
                save_photo(folder / method / "x.png", 1)
            code, _, err = self.script(
                "compare_methods.py",
                "--inputs",
                "m1",
                "m2",
                "--output",
                "report",
                "--checkpoint",
                self.tiny,
                cwd=folder,
            )
            self.record(
                11,
                "compare_methods --output beside the method folders still works",
                set() if code == 0 and (folder / "report" / "comparison.csv").exists() else {"bad"},
            )
        for depth in ("linked", "sub/linked")[: 1 if self.quick else 2]:
            folder = self.fresh("recursive-link")
            save_photo(folder / "in" / "a.png", 1)
            save_photo(folder / "other" / "c.png", 2)
            (folder / "in" / depth).parent.mkdir(parents=True, exist_ok=True)
            (folder / "in" / depth).symlink_to(folder / "other", target_is_directory=True)
            code, _, err = self.heatmap(
                "--input", folder / "in", "--recursive", "--output", folder / "out", "--no-report"
            )
            said = "linked" in err and ("link" in err.lower())
            self.record(
                11,
                f"--recursive with a linked sub-folder in/{depth}",
                set() if said and TRACEBACK not in err else {"bad"},
                "skipped without a word",
            )

    def run(self):
        self.setup()
        try:
            for cls in self.classes:
                started = time.perf_counter()
                getattr(self, f"class_{cls}")()
                print(f"-- class {cls}: {time.perf_counter() - started:.0f} s", flush=True)
        finally:
            shutil.rmtree(self.work, ignore_errors=True)
        return self.results


# ---------------------------------------------------------------------------------------------------- helpers
def save_photo(path, seed, height=24, width=32):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def snapshot(folder):
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def read_rows(path):
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def finish(process, timeout):
    try:
        out, err = process.communicate(timeout=timeout)
        return process.returncode, out, err
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return None, "", "timeout"


def judge_shared_folder(out, outcomes, expected):
    """Two runs into ``out``: clean when every photo of a run that finished (exit 0) has exactly one row whose
    heatmap exists and has the row's size, and a run that did not finish was refused in one line (exit 2)."""
    problems = set()
    if any(code is None or TRACEBACK in err for code, _, err in outcomes):
        problems.add("bad")
    finished = sum(code == 0 for code, _, _ in outcomes)
    refused = [err for code, _, err in outcomes if code == 2]
    if refused and not all(len(e.strip().splitlines()) == 1 for e in refused):
        problems.add("bad")
    rows = read_rows(out / "summary.csv")
    if finished == len(outcomes):
        wanted = expected
    else:
        wanted = None
    if wanted is not None and len(rows) != wanted:
        problems |= {"bad", "lost"}
    outputs = [r["output"] for r in rows if r.get("status") == "ok"]
    if len(set(outputs)) != len(outputs):
        problems |= {"bad", "lost"}  # two rows point at one set of files: one run's results replaced the other's
    for row in rows:
        if row.get("status") != "ok":
            continue
        path = out / f"{row['output']}_exposure.png"
        try:
            with Image.open(path, formats=["PNG", "JPEG"]) as im:
                if im.size != (int(row["width"]), int(row["height"])):
                    problems |= {"bad", "lost"}
        except (OSError, ValueError):
            problems |= {"bad", "lost"}
    return problems


def write_malicious_pickle(path, marker, kind):
    """A torch-style zip whose data.pkl calls os.system (or builtins.eval) to create ``marker`` when unpickled
    without weights_only: what a stranger's last.pt could hold."""
    import zipfile

    if kind == "system":
        payload = b"cos\nsystem\n(V" + f"touch {marker}".encode() + b"\ntR."
    else:
        payload = b"cbuiltins\neval\n(V" + f"open({str(marker)!r}, 'w')".encode() + b"\ntR."
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/version", "3\n")
        z.writestr("archive/byteorder", "little")
    Path(path).write_bytes(buffer.getvalue())


def make_dataset(root):
    """A tiny IEA40K-layout dataset: 8 training and 2 validation photos of 40 x 40 with their labels."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for split, count in (("train", 8), ("valid", 2)):
        lines = ["img_id,ref_id,score,level"]
        for i in range(count):
            ideal = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
            gain = rng.uniform(0.3, 1.7)
            photo = np.clip(ideal * gain, 0, 255).astype(np.uint8)
            level = "N1" if gain < 1 else "P1"
            name = f"{split}{i:02d}_{level}.png"
            Image.fromarray(photo).save(root / "images" / name)
            weights = np.array([0.299, 0.587, 0.114], np.float32)
            label = ideal.astype(np.float32) @ weights - photo.astype(np.float32) @ weights
            np.save(root / "labels" / f"{Path(name).stem}.npy", label.astype(np.float32))
            lines.append(f"{name},{split}{i:02d}.png,{10 * (1 - np.abs(label / 255).mean()):.4f},{level}")
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def table(results, order=None):
    """The markdown table of ``results`` by class (``order``: the classes' order; default sorted), and all of them."""
    found = {r["class"] for r in results}
    classes = [c for c in order if c in found] if order else sorted(found)
    lines = ["| class | tried | clean | bad | security | data lost |", "|---|---|---|---|---|---|"]
    for cls in classes + ["all"]:
        rs = [r for r in results if cls == "all" or r["class"] == cls]
        lines.append(
            f"| {cls} | {len(rs)} | {sum(r['verdict'] == 'clean' for r in rs)} | "
            f"{sum('bad' in r['problems'] for r in rs)} | {sum('security' in r['problems'] for r in rs)} | "
            f"{sum('lost' in r['problems'] for r in rs)} |"
        )
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--repo",
        type=Path,
        default=Path(__file__).resolve().parents[2],
        help="the checkout to audit (default: this one)",
    )
    p.add_argument(
        "--classes",
        default="1,1b,2,3,4,5,9,11",
        help="comma-separated classes (default: all; 1b is the rest of class 1: pages, sub-folders)",
    )
    p.add_argument("--quick", action="store_true", help="fewer variants of the costly cases (about half the runs)")
    p.add_argument("--minimal", action="store_true", help="one or two cases of each kind (a loaded machine)")
    p.add_argument("--timeout", type=float, default=180, help="seconds per tool run (default: 180)")
    p.add_argument("--json", type=Path, help="also write every case's result here")
    args = p.parse_args(argv)
    results = Audit(args.repo, args.timeout, args.classes.split(","), args.quick, args.minimal).run()
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
