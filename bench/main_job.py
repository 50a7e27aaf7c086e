"""The main job against its I/O, in one run: make_heatmap.py on a folder of 12 MP JPEGs and on one of them, against
the least work that yields a full-size heatmap file of each photo.

    python bench/main_job.py [--photos DIR] [--count 8] [--rounds 3] [--threads 2] [--before PATH] [--json OUT]
    python bench/speed.py --main-job [the same options]

I/O reference (IO_REFERENCE): a fresh Python process that decodes each JPEG in full, takes one 8-bit channel and
writes it as a 256-colour palette PNG at zlib level 1. Cases, each a fresh process timed from start to exit (wall,
CPU = user + system, peak RSS of the process: getrusage of a small intermediate process, as bench/speed.py does):
the reference and make_heatmap.py with default options on the folder (--threads, as given), the same for one photo
(start-up included), and make_heatmap.py with --backend torch (the torch path; the default runs the shipped network
in onnxruntime without importing torch, as --backend onnxruntime does) on the folder and with --size native (tiled
full resolution, the slow path) on NATIVE_PHOTOS photos, once (and, with --before, another checkout's make_heatmap.py
on the folder, once). The folder cases alternate round by round (reference, then make_heatmap, ...), and each ratio
(wall and CPU) is taken within a round, then the median over rounds, so a machine that other work slows down slows
both sides; on a machine busier than its cores, each process gets about one core's share per runnable thread, and
the CPU ratio says more than the wall ratio. --photos: a folder of JPEGs (default: COUNT photos of 4000 x 3000 made
here from img_to_pred/ samples, enlarged with seeded noise, in a temporary folder). The load average (/proc/loadavg)
before and after is printed: on a shared machine, say how quiet it was.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted((ROOT / "img_to_pred").glob("*.jpg"))
PHOTO_SIZE = (4000, 3000)  # width, height: 12 MP
NATIVE_PHOTOS = 2
BASE_MEMORY_MB = 0.3 * 1000  # the memory bound: 30 bytes per pixel of the largest photo above 0.3 GB
# Decode each JPEG in full, take one 8-bit channel, write it as a 256-colour palette PNG at zlib level 1: the least
# work any tool does that reads the photos and writes a full-size heatmap file of each.
IO_REFERENCE = (
    "import sys; from pathlib import Path; from PIL import Image\n"
    "source, out = Path(sys.argv[1]), Path(sys.argv[2]); out.mkdir(exist_ok=True)\n"
    "for path in sorted(source.glob('*.jpg')) if source.is_dir() else [source]:\n"
    "    with Image.open(path, formats=['JPEG']) as photo:\n"
    "        channel = photo.convert('RGB').getchannel(0)\n"
    "    index = Image.frombytes('P', channel.size, channel.tobytes())\n"
    "    index.putpalette(bytes(range(256)) * 3)\n"
    "    index.save(out / (path.stem + '.png'), compress_level=1)\n"
)
# as bench/speed.py's MEASURE, with the CPU seconds of the command
MEASURE = (
    "import json, resource, subprocess, sys, time; start = time.perf_counter(); "
    "done = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
    "used = resource.getrusage(resource.RUSAGE_CHILDREN); "
    "print(json.dumps({'seconds': time.perf_counter() - start, 'code': done.returncode, "
    "'stderr': done.stderr[-2000:], 'cpu_seconds': used.ru_utime + used.ru_stime, "
    "'peak_rss_mb': used.ru_maxrss / 1024}))"
)


def make_photos(folder, count, size=PHOTO_SIZE, seed=25):
    """``count`` JPEGs of ``size`` (quality 90) in ``folder``: the sample photos enlarged (bicubic), every other
    one mirrored, with Gaussian noise (sigma 6 levels) so they compress like camera photos, not smooth upscales."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        with Image.open(SAMPLES[n % len(SAMPLES)], formats=["JPEG", "PNG"]) as sample:
            photo = sample.convert("RGB").resize(size, Image.BICUBIC)
        if n // len(SAMPLES) % 2:
            photo = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        pixels = np.asarray(photo, dtype=np.float32) + rng.normal(0.0, 6.0, (size[1], size[0], 3)).astype(np.float32)
        Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8)).save(folder / f"photo_{n:02d}.jpg", quality=90)
    return folder


def run_measured(command):
    """``command`` in a fresh process: {seconds, code, stderr, cpu_seconds, peak_rss_mb}."""
    done = subprocess.run([sys.executable, "-c", MEASURE, *map(str, command)], capture_output=True, text=True, cwd=ROOT)
    return json.loads(done.stdout)


def reference(source, out):
    return [sys.executable, "-c", IO_REFERENCE, source, out]


def main_job(source, out, threads, *options, script=ROOT / "make_heatmap.py"):
    return [sys.executable, script, "--input", source, "--output", out, "--threads", threads, *options]


def load_average():
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def timed_rounds(cases, rounds, scratch):
    """{case: [result per round]}: every case of ``cases`` ({name: command maker(out folder)}) once per round, in
    order, each into a fresh output folder."""
    results = {name: [] for name in cases}
    for round_ in range(rounds):
        for name, command in cases.items():
            out = scratch / f"{name}-{round_}"
            result = run_measured(command(out))
            shutil.rmtree(out, ignore_errors=True)
            if result["code"] != 0:
                raise SystemExit(f"{name} failed (exit {result['code']}): {result['stderr'].strip()[-500:]}")
            results[name].append(result)
            print(
                f"round {round_ + 1} {name:<22} {result['seconds']:7.2f} s wall {result['cpu_seconds']:7.2f} s CPU "
                f"{result['peak_rss_mb']:6.0f} MB  (load {load_average()})",
                flush=True,
            )
    return results


def summary_row(name, results, photos, pixels, against=None):
    """Medians over rounds; ``against``: the reference's results, round by round, for the ratio."""
    row = {
        "case": name,
        "photos": photos,
        "rounds": len(results),
        "seconds": statistics.median(r["seconds"] for r in results),
        "cpu_seconds": statistics.median(r["cpu_seconds"] for r in results),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
    }
    row["photos_per_s"] = photos / row["seconds"]
    row["bytes_per_pixel_above_0.3GB"] = max(0.0, (row["peak_rss_mb"] - BASE_MEMORY_MB) * 1e6 / pixels)
    if against is not None:  # wall and CPU, each the median of the rounds' ratios
        row["ratio"] = statistics.median(r["seconds"] / a["seconds"] for r, a in zip(results, against))
        row["cpu_ratio"] = statistics.median(r["cpu_seconds"] / a["cpu_seconds"] for r, a in zip(results, against))
    return row


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=Path, help="folder of JPEGs (default: --count 12 MP JPEGs made here)")
    p.add_argument("--count", type=int, default=8, help="photos to make when --photos is not given (default: 8)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of the folder cases (default: 3)")
    p.add_argument("--threads", type=int, default=2, help="make_heatmap.py --threads (default: 2)")
    p.add_argument("--json", type=Path, help="write the figures here too")
    p.add_argument("--smoke", action="store_true", help="2 photos of 400 x 300, 1 round, no native or torch case")
    p.add_argument(
        "--before",
        type=Path,
        help="also time this make_heatmap.py once on the folder (e.g. the base commit's, from `git worktree add`)",
    )
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="main_job_") as scratch:
        scratch = Path(scratch)
        size = (400, 300) if args.smoke else PHOTO_SIZE
        photos = args.photos or make_photos(scratch / "photos", 2 if args.smoke else args.count, size)
        files = sorted(photos.glob("*.jpg"))
        if not files:
            raise SystemExit(f"{photos}: no .jpg photo")
        from PIL import Image

        sizes = []
        for path in files:
            with Image.open(path, formats=["JPEG"]) as photo:
                sizes.append(photo.size[0] * photo.size[1])
        single, native = scratch / "single", scratch / "native"
        single.mkdir()
        native.mkdir()
        shutil.copy(files[0], single)
        for path in files[:NATIVE_PHOTOS]:
            shutil.copy(path, native)
        before = load_average()
        print(f"{len(files)} photos in {photos}, largest {max(sizes) / 1e6:.1f} MP; load average before: {before}")
        folder_cases = {
            "io reference": lambda out: reference(photos, out),
            "make_heatmap": lambda out: main_job(photos, out, args.threads),
            "io reference, 1 photo": lambda out: reference(single, out),
            "make_heatmap, 1 photo": lambda out: main_job(single, out, args.threads),
        }
        results = timed_rounds(folder_cases, 1 if args.smoke else args.rounds, scratch)
        once = (
            {}
            if args.smoke
            else {
                # the torch path (the default runs the network in onnxruntime without torch: models/torch_free.py)
                "make_heatmap --backend torch": lambda out: main_job(photos, out, args.threads, "--backend", "torch"),
                **(
                    {"make_heatmap before": lambda out: main_job(photos, out, args.threads, script=args.before)}
                    if args.before
                    else {}
                ),
                "io reference, native set": lambda out: reference(native, out),
                "make_heatmap --size native": lambda out: main_job(native, out, args.threads, "--size", "native"),
            }
        )
        results |= timed_rounds(once, 1, scratch)
        after = load_average()
    reference_of = {
        "make_heatmap": "io reference",
        "make_heatmap, 1 photo": "io reference, 1 photo",
        "make_heatmap before": "io reference",
        "make_heatmap --backend torch": "io reference",
        "make_heatmap --size native": "io reference, native set",
    }
    counts = {
        "io reference, 1 photo": 1,
        "make_heatmap, 1 photo": 1,
        "io reference, native set": NATIVE_PHOTOS,
        "make_heatmap --size native": NATIVE_PHOTOS,
    }
    rows = []
    for name, runs in results.items():
        against = results.get(reference_of.get(name))
        if name in ("make_heatmap --backend torch", "make_heatmap before"):  # one run: against the reference's median
            against = [{key: statistics.median(r[key] for r in against) for key in ("seconds", "cpu_seconds")}]
        rows.append(summary_row(name, runs, counts.get(name, len(files)), max(sizes), against))
    print(
        f"\nmake_heatmap.py against the I/O reference (decode, one channel, palette PNG at zlib level 1); "
        f"{args.threads} threads; medians; load average before {before}, after {after}"
    )
    print(
        f"{'case':<28} {'photos':>6} {'rounds':>6} {'wall s':>7} {'CPU s':>7} {'photos/s':>8} {'ratio':>6} "
        f"{'CPU ratio':>9} {'peak MB':>8} {'B/px>0.3GB':>10}"
    )
    for row in rows:
        ratio = f"{row['ratio']:6.2f} {row['cpu_ratio']:9.2f}" if "ratio" in row else f"{'-':>6} {'-':>9}"
        print(
            f"{row['case']:<28} {row['photos']:>6} {row['rounds']:>6} {row['seconds']:7.2f} "
            f"{row['cpu_seconds']:7.2f} {row['photos_per_s']:8.2f} {ratio} {row['peak_rss_mb']:8.0f} "
            f"{row['bytes_per_pixel_above_0.3GB']:10.1f}"
        )
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"rows": rows, "load_before": before, "load_after": after, "threads": args.threads}, indent=2)
            + "\n"
        )


if __name__ == "__main__":
    main()
