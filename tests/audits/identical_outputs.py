"""Byte-identity check: every output of a checkout's tools on the sample photos and the development sets, hashed.

    python tests/audits/identical_outputs.py CHECKOUT --manifest before.tsv [--shared DIR] [--keep DIR]
    python tests/audits/identical_outputs.py --compare before.tsv after.tsv

Runs CHECKOUT's own flat scripts as subprocesses (nothing of any checkout is imported here): make_heatmap.py (once
with --backend torch and once with the default backend, both with --overlay --colorbar --save-npy), evaluate.py,
score.py and compare_methods.py, on copies of CHECKOUT/img_to_pred and of the development sets in --shared (default
CHECKOUT/../shared: human_ref, expert_retouch, real_brackets, well_exposed), all inside one temporary work folder that
is the tools' current folder, so every relative path the tools write is the same for any checkout. Writes one manifest
line per output file: relative path, size, SHA-256, the normalised fields. What each command printed on stdout is an
output too (score.py's verdicts are its stdout), saved as <step>.stdout beside its exit code.

Normalised (the only fields that must differ between two checkouts or two runs; in text outputs only: .csv, .md,
.json, .html, .txt, .stdout), each listed in the manifest's last column for the files where it occurred:
    checkout   the checkout's absolute path (index.html names the default checkpoint by it), replaced by <checkout>
    work       the temporary work folder's absolute path, replaced by <work>
Nothing else is normalised: a field that differs between two runs of the same checkout is a finding, not noise.

--compare A B prints every path whose size or hash differs, or that only one manifest has; exit 1 when any does.
Threads: OMP_NUM_THREADS / MKL_NUM_THREADS = --threads (2) for every command, so two runs do the same arithmetic.
"""

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEXT_SUFFIXES = {".csv", ".md", ".json", ".html", ".txt", ".stdout"}
DEV_SETS = ("human_ref", "expert_retouch", "real_brackets", "well_exposed")
RULES = ("landscape", "portrait", "street", "night", "ecommerce")
BASELINES = ("zero", "global_midgray", "local_midgray")
HEADER = "path\tsize\tsha256\tnormalised"


def copy_inputs(checkout: Path, shared: Path, work: Path) -> None:
    """The tools' inputs, copied under work/in (so no tool sees a path outside the work folder)."""
    inputs = work / "in"
    shutil.copytree(checkout / "img_to_pred", inputs / "img_to_pred")
    for name in DEV_SETS:
        if not (shared / name).is_dir():
            raise SystemExit(f"development set not found: {shared / name}")
        shutil.copytree(shared / name, inputs / name)
    # every photo in one tree, for make_heatmap --recursive (test frames only: the references are no photos to judge)
    photos = inputs / "photos"
    shutil.copytree(checkout / "img_to_pred", photos / "img_to_pred")
    for name in DEV_SETS:
        shutil.copytree(shared / name / "images", photos / name)
    # compare_methods needs one folder per method with the same file names: camera render against expert C (FiveK),
    # bracket frame against the fusion people rated best (Waterloo), each reference under its test image's name
    for name, csv_name, methods in (
        ("expert_retouch", "expert_retouch.csv", ("camera", "expert")),
        ("human_ref", "human_ref.csv", ("frame", "fused")),
    ):
        lines = (shared / name / csv_name).read_text(encoding="utf-8").splitlines()[1:]
        for line in lines:
            img_id, ref_id = line.split(",")[:2]
            for method, source in zip(methods, (shared / name / "images" / img_id, shared / name / "refs" / ref_id)):
                target = inputs / "compare" / name / method / img_id
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)


def steps() -> list[tuple[str, str, list[str]]]:
    """(step name, tool, arguments) in run order; every path is relative to the work folder."""
    photo_flags = ["--overlay", "--colorbar", "--save-npy"]
    runs = [
        (
            "heatmap_torch",
            "make_heatmap.py",
            [
                "--input",
                "in/photos",
                "--recursive",
                "--output",
                "out/heatmap_torch",
                "--backend",
                "torch",
                *photo_flags,
            ],
        ),
        (
            "heatmap_default",
            "make_heatmap.py",
            ["--input", "in/photos", "--recursive", "--output", "out/heatmap_default", *photo_flags],
        ),
    ]
    for rule in RULES:
        runs.append((f"score_{rule}", "score.py", ["--rules", rule, "in/img_to_pred"]))
    runs.append(
        (
            "score_landscape_json",
            "score.py",
            ["--rules", "landscape", "--json", "in/img_to_pred", "in/expert_retouch/images"],
        )
    )
    for name, csv_name in (
        ("human_ref", "human_ref.csv"),
        ("expert_retouch", "expert_retouch.csv"),
        ("real_brackets", "real.csv"),
    ):
        runs.append(
            (
                f"evaluate_{name}",
                "evaluate.py",
                [
                    "--data-root",
                    f"in/{name}",
                    "--csv",
                    csv_name,
                    "--baselines",
                    *BASELINES,
                    "--compare",
                    "checkpoints/pieanet_corpus.safetensors",
                    "--json",
                    f"out/evaluate/{name}.json",
                    "--markdown",
                    f"out/evaluate/{name}.md",
                ],
            )
        )
    runs.append(
        (
            "evaluate_well_exposed",
            "evaluate.py",
            [
                "--well-exposed",
                "in/well_exposed",
                "--baselines",
                "global_midgray",
                "--compare",
                "checkpoints/pieanet_corpus.safetensors",
                "--output",
                "out/well_exposed",
                "--json",
                "out/evaluate/well_exposed.json",
            ],
        )
    )
    runs.append(
        (
            "compare_expert_retouch",
            "compare_methods.py",
            [
                "--inputs",
                "in/compare/expert_retouch/camera",
                "in/compare/expert_retouch/expert",
                "--names",
                "camera",
                "expert",
                "--reference",
                "in/compare/expert_retouch/expert",
                "--output",
                "out/compare/expert_retouch",
            ],
        )
    )
    runs.append(
        (
            "compare_human_ref",
            "compare_methods.py",
            [
                "--inputs",
                "in/compare/human_ref/frame",
                "in/compare/human_ref/fused",
                "--output",
                "out/compare/human_ref",
                "--max-rows",
                "6",
            ],
        )
    )
    runs.append(
        (
            "compare_img_to_pred",
            "compare_methods.py",
            ["--inputs", "in/img_to_pred", "--output", "out/compare/img_to_pred"],
        )
    )
    return runs


def run_tools(checkout: Path, work: Path, threads: int) -> list[tuple[str, int, float]]:
    """Runs every step (evaluate.py's checkpoint given as CHECKOUT's shipped file); returns (step, exit code, s)."""
    env = dict(
        os.environ,
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONHASHSEED="0",
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
    )
    env.pop("P_IEA_DEBUG", None)
    (work / "out" / "evaluate").mkdir(parents=True, exist_ok=True)
    done = []
    for name, tool, args in steps():
        args = [str(checkout / a) if a.startswith("checkpoints/") else a for a in args]
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, str(checkout / tool), *args],
            cwd=work,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        seconds = time.perf_counter() - start
        (work / "out" / f"{name}.stdout").write_bytes(result.stdout)
        (work / "log").mkdir(exist_ok=True)
        (work / "log" / f"{name}.stderr").write_bytes(result.stderr)
        (work / "out" / f"{name}.exit").write_text(f"{result.returncode}\n", encoding="utf-8")
        print(f"{name:<26} exit {result.returncode}  {seconds:6.1f} s", flush=True)
        done.append((name, result.returncode, seconds))
    return done


def normalised(data: bytes, checkout: Path, work: Path) -> tuple[bytes, list[str]]:
    """``data`` with the fields that must differ replaced (module docstring); returns it and the fields' names."""
    fields = []
    # the work folder first: it may sit inside the checkout's parent, never the other way round
    for field, path, mark in (("work", work, b"<work>"), ("checkout", checkout, b"<checkout>")):
        for form in {str(path).encode(), str(path.resolve()).encode()}:
            if form in data:
                data = data.replace(form, mark)
                if field not in fields:
                    fields.append(field)
    return data, fields


def manifest(checkout: Path, work: Path) -> list[str]:
    lines = [HEADER]
    for path in sorted(p for p in (work / "out").rglob("*") if p.is_file()):
        data = path.read_bytes()
        fields = []
        if path.suffix in TEXT_SUFFIXES:
            data, fields = normalised(data, checkout, work)
        relative = path.relative_to(work / "out").as_posix()
        lines.append(f"{relative}\t{len(data)}\t{hashlib.sha256(data).hexdigest()}\t{','.join(fields) or '-'}")
    return lines


def compare(first: Path, second: Path) -> int:
    def read(path):
        rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()[1:] if line]
        return {row[0]: tuple(row[1:3]) for row in rows}

    a, b = read(first), read(second)
    differ = 0
    for path in sorted(a.keys() | b.keys()):
        if path not in b:
            print(f"only in {first}: {path}")
        elif path not in a:
            print(f"only in {second}: {path}")
        elif a[path] != b[path]:
            print(f"differs: {path} (size {a[path][0]} -> {b[path][0]})")
        else:
            continue
        differ += 1
    print(
        f"{len(a.keys() & b.keys()) - sum(a[p] != b[p] for p in a.keys() & b.keys())} files identical, "
        f"{differ} differ or are missing"
    )
    return 1 if differ else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkout", nargs="?", help="the checkout whose tools run")
    parser.add_argument("--manifest", help="write the manifest here (TSV)")
    parser.add_argument("--shared", help="the development sets (default: CHECKOUT/../shared)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of every command (default: 2)")
    parser.add_argument("--keep", help="work in this new folder and keep it (default: a temporary folder, removed)")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), help="diff two manifests; exit 1 if they differ")
    args = parser.parse_args(argv)
    if args.compare:
        return compare(Path(args.compare[0]), Path(args.compare[1]))
    if not args.checkout or not args.manifest:
        parser.error("give CHECKOUT and --manifest (or --compare A B)")
    checkout = Path(args.checkout).resolve()
    shared = Path(args.shared).resolve() if args.shared else checkout.parent / "shared"
    if args.keep:
        work = Path(args.keep).resolve()
        work.mkdir(parents=True)  # a new folder: never mixes with (or removes) anything already there
    else:
        work = Path(tempfile.mkdtemp(prefix="identical-outputs-"))
    try:
        start = time.perf_counter()
        copy_inputs(checkout, shared, work)
        done = run_tools(checkout, work, args.threads)
        lines = manifest(checkout, work)
        Path(args.manifest).write_text("\n".join(lines) + "\n", encoding="utf-8")
        failed = [name for name, code, _ in done if code != 0]
        print(
            f"{len(lines) - 1} files in {args.manifest}; {time.perf_counter() - start:.0f} s in all"
            + (f"; non-zero exit: {', '.join(failed)}" if failed else "")
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
