"""Speed, memory and cost of the project model against the released P-IEANet, measured in one run on one machine.

    python bench/speed.py [--smoke] [--json OUT] [--threads N] [--checkpoint PATH] [--onnx PATH] [--released PATH]

* throughput: images/s for batched inference at 256 x 256 (what the released network was built for), for the project
  checkpoint in torch and its ONNX export in onnxruntime, and the released network;
* latency and peak memory at 1920 x 1080 and 4000 x 3000, each case in a fresh process whose peak resident set size
  (getrusage ru_maxrss: torch's native allocations included) is read by a small intermediate process (see MEASURE).
  The project model runs on the tools' default path (its working size), at native resolution untiled and in tiles,
  and at working size 1024 (see models/inference.py), both backends where they differ; the released network resizes
  to 256 x 256 itself. A case is timed once, after a small warm-up call;
* end to end: make_heatmap.py with default options on one 4000 x 3000 JPEG (a sample photo enlarged), the whole
  process (start-up, decoding, inference, writing), per backend, against the cost of the same pixels as 256 x 256
  batches of the same network, and against the floor of any tool that writes a heatmap of the photo: a fresh Python
  process that decodes the same JPEG and writes it as one PNG (Pillow's defaults, as make_heatmap.py writes);
* cost: GFLOP per 256 x 256 image (torch.utils.flop_counter on meta tensors: shapes only, nothing computed) and
  parameter counts;
* the main job (``--main-job``, instead of the above): make_heatmap.py on a folder of 12 MP JPEGs and on one photo,
  default options (torch-free), --backend torch and --size native, against the I/O reference (decode each JPEG, write
  one channel as a palette PNG at zlib level 1), alternating, with ratios, photos/s and peak memory: bench/main_job.py,
  which takes the options after --main-job.
Models: the project checkpoint (default checkpoints/pieanet_corpus.safetensors) or, when it is missing, the default
config with random weights; its ONNX file (default checkpoints/pieanet_corpus.onnx; skipped when it or onnxruntime is
missing); the released weights from ../shared or, when absent, the released architecture with random weights. Speed
does not depend on the weights. --smoke checks the script in seconds: a tiny project config at tiny sizes without
warm-up, the released network's cost counted but not run, and one end-to-end run without its batch comparison.
"""

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from pieanet.models import (
    DEFAULT_CHECKPOINT,
    DEFAULT_ONNX,
    RELEASED_ENV,
    RELEASED_NAME,
    build_model,  # noqa: E402
    load_model,
)
from pieanet.utils import cli  # noqa: E402
from pieanet.utils.image_io import atomic_write, open_photo  # noqa: E402
from pieanet.models.inference import predict_residual  # noqa: E402

# a development tool of the checkout: $P_IEA_RELEASED_WEIGHTS, else the project's reference data beside the checkout
RELEASED_WEIGHTS = Path(os.environ.get(RELEASED_ENV) or ROOT.parent / "shared" / "official" / RELEASED_NAME)
SMOKE_CONFIG = {"name": "pieanet", "width": 8, "lightness_blocks": 1, "attention_layers": 1, "heads": 2, "window": 4}

FULL = {
    "batch": {"project": 8, "project-onnx": 8, "released": 2},
    "batches": {"project": 4, "project-onnx": 4, "released": 1},
    "warm_up": True,
    "end_to_end": (3000, 4000),
    "cases": [  # (model, height, width, mode, options)
        ("project", 1080, 1920, "default (working size)", {}),
        ("project-onnx", 1080, 1920, "default (working size)", {}),
        ("project", 1080, 1920, "native untiled", {"size": 0}),
        ("project-onnx", 1080, 1920, "native untiled", {"size": 0}),
        ("project", 1080, 1920, "native tiled", {"size": 0, "tile": 1024}),
        ("project", 1080, 1920, "working", {"size": 1024}),
        ("project", 3000, 4000, "default (working size)", {}),
        ("project-onnx", 3000, 4000, "default (working size)", {}),
        ("project", 3000, 4000, "native untiled", {"size": 0}),
        ("project-onnx", 3000, 4000, "native untiled", {"size": 0}),
        ("project", 3000, 4000, "native tiled", {"size": 0, "tile": 2048}),
        ("project", 3000, 4000, "working", {"size": 1024}),
        ("released", 1080, 1920, "resize to 256", {}),
        ("released", 3000, 4000, "resize to 256", {}),
    ],
}
SMOKE = {
    "batch": {"project": 2, "released": 1},
    "batches": {"project": 1, "released": 0},
    "warm_up": False,
    "end_to_end": (96, 160),
    "cases": [
        ("project", 96, 160, "native tiled", {"size": 0, "tile": 128, "overlap": 32}),
        ("project", 96, 160, "working", {"size": 64}),
    ],
}
KINDS = ("project", "project-onnx", "released")
SAMPLE_PHOTO = ROOT / "img_to_pred" / "chelsea.jpg"  # enlarged to the end-to-end size: a real photo's content


def model_spec(kind, args):
    """How to rebuild a model in a subprocess, and a sentence saying what it is (None: not available here)."""
    if kind == "project-onnx":
        if args.smoke or not Path(args.onnx).is_file():
            return None, f"not measured ({'--smoke' if args.smoke else f'{args.onnx} not found'})"
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return None, "not measured (onnxruntime is not installed)"
        return {"path": str(args.onnx)}, f"{args.onnx} in onnxruntime (CPU)"
    if kind == "project":
        if args.smoke:
            return {"config": SMOKE_CONFIG}, "tiny project config, random init (--smoke)"
        if Path(args.checkpoint).is_file():
            return {"path": str(args.checkpoint)}, f"project checkpoint {args.checkpoint}"
        return {"config": {"name": "pieanet"}}, f"default project config, random init ({args.checkpoint} not found)"
    if Path(args.released).is_file():
        return {"path": str(args.released)}, f"released weights {args.released}"
    return {"config": {"name": "official"}}, f"released architecture, random init ({args.released} not found)"


def make_model(spec):
    if "path" in spec:
        return load_model(spec["path"])
    torch.manual_seed(0)
    return build_model(spec["config"]).eval()


def gflop_per_image(model, size=256):
    if not list(model.parameters()):  # onnxruntime runs it: the same network as the torch checkpoint
        return None
    meta = copy.deepcopy(model).to("meta")
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        meta(torch.empty(1, 3, size, size, device="meta"))
    return counter.get_total_flops() / 1e9


def throughput(model, batch, batches, warm_up, size=256):
    if batches == 0:
        return None
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        if warm_up:
            model(x[:1])
        start = time.perf_counter()
        for _ in range(batches):
            model(x)
        elapsed = time.perf_counter() - start
    return batch * batches / elapsed


def run_case(case):
    """In a fresh process: time one prediction (after a warm-up on a small crop)."""
    torch.set_num_threads(case["threads"])
    model = make_model(case["spec"])
    image = np.random.default_rng(0).random((case["height"], case["width"], 3), dtype=np.float32)
    predict_residual(model, image[:64, :64], **case["options"])  # warm-up
    start = time.perf_counter()
    residual = predict_residual(model, image, **case["options"])
    seconds = time.perf_counter() - start
    assert residual.shape == image.shape[:2]
    print(json.dumps({"seconds": seconds}))


# Runs the command given as its arguments and prints its wall time, exit code, output and peak RSS. A process's peak
# RSS (ru_maxrss) survives fork and exec, so a child started straight from this large process would report this
# process's size; started from this small one, RUSAGE_CHILDREN is the command's own.
MEASURE = (
    "import json, resource, subprocess, sys, time; start = time.perf_counter(); "
    "done = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
    "print(json.dumps({'seconds': time.perf_counter() - start, 'code': done.returncode, 'stdout': done.stdout, "
    "'stderr': done.stderr, 'peak_rss_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))"
)


def run_measured(command):
    """Run ``command`` in a fresh process: {seconds, code, stdout, stderr, peak_rss_mb}."""
    done = subprocess.run([sys.executable, "-c", MEASURE, *map(str, command)], capture_output=True, text=True, cwd=ROOT)
    return json.loads(done.stdout)


def failure(result):
    return (result["stderr"].strip().splitlines() or ["no output"])[-1]


def measure_case(kind, height, width, mode, options, spec, threads):
    case = {"spec": spec, "height": height, "width": width, "options": options, "threads": threads}
    result = run_measured([sys.executable, __file__, "--case", json.dumps(case)])
    row = {"model": kind, "size": f"{width}x{height}", "mode": mode, "options": options}
    if result["code"] != 0:
        return {**row, "error": failure(result)}
    return {**row, **json.loads(result["stdout"].strip().splitlines()[-1]), "peak_rss_mb": result["peak_rss_mb"]}


# The floor of the end-to-end figure: decode the JPEG and write one PNG of its size, nothing else.
DECODE_WRITE = (
    "import sys; from PIL import Image; Image.open(sys.argv[1], formats=['JPEG']).convert('RGB').save(sys.argv[2])"
)


def end_to_end(height, width, threads, checkpoint, backend):
    """make_heatmap.py with default options on one height x width JPEG, as a user runs it: seconds of the whole
    process from start-up to exit, its peak RSS, and the seconds of DECODE_WRITE on the same JPEG just before."""
    with tempfile.TemporaryDirectory() as folder:
        photo = Path(folder) / "photo.jpg"
        with open_photo(SAMPLE_PHOTO) as sample:
            sample.convert("RGB").resize((width, height), Image.LANCZOS).save(photo, quality=92)
        floor = run_measured([sys.executable, "-c", DECODE_WRITE, photo, Path(folder) / "decoded.png"])
        command = [
            sys.executable,
            ROOT / "make_heatmap.py",
            "--input",
            photo,
            "--output",
            Path(folder) / "out",
            "--threads",
            threads,
            "--backend",
            backend,
        ] + (["--checkpoint", checkpoint] if checkpoint else [])
        result = run_measured(command)
    if result["code"] != 0:
        return {"error": failure(result)}
    if floor["code"] != 0:
        return {"error": f"decoding and writing the photo failed: {failure(floor)}"}
    return {
        "seconds": result["seconds"],
        "peak_rss_mb": result["peak_rss_mb"],
        "decode_write_seconds": floor["seconds"],
        "vs_decode_write": result["seconds"] / floor["seconds"],
    }


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny model and sizes, seconds")
    p.add_argument("--json", help="write all measurements here (default: not written)")
    p.add_argument(
        "--threads",
        type=cli.positive_int,
        default=torch.get_num_threads(),
        help="torch CPU threads (default: torch's choice)",
    )
    p.add_argument(
        "--checkpoint",
        default=DEFAULT_CHECKPOINT,
        help="project checkpoint (default: checkpoints/pieanet_corpus.safetensors)",
    )
    p.add_argument(
        "--onnx",
        default=DEFAULT_ONNX,
        help="the project network exported by export.py (default: checkpoints/pieanet_corpus.onnx)",
    )
    p.add_argument(
        "--released",
        default=RELEASED_WEIGHTS,
        help="released P-IEANet .pth (default: $P_IEA_RELEASED_WEIGHTS, else ../shared/official/)",
    )
    p.add_argument("--case", help=argparse.SUPPRESS)  # internal: one latency case in this process
    p.add_argument(
        "--main-job",
        action="store_true",
        help="first option only: run bench/main_job.py with the options that follow (see above)",
    )
    return p.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--main-job"]:  # bench/main_job.py, in its own process (it times fresh processes itself)
        return subprocess.call([sys.executable, str(ROOT / "bench" / "main_job.py"), *argv[1:]])
    args = parse_args(argv)
    if args.case:
        return run_case(json.loads(args.case))
    torch.set_num_threads(args.threads)
    plan = SMOKE if args.smoke else FULL
    report = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "threads": args.threads,
            "torch": torch.__version__,
            "smoke": args.smoke,
        },
        "models": {},
    }
    specs = {}
    for kind in KINDS:
        spec, description = model_spec(kind, args)
        specs[kind] = spec
        print(f"{kind}: {description}", flush=True)
        if spec is None:
            continue
        model = make_model(spec)
        report["models"][kind] = {
            "what": description,
            "parameters": sum(p.numel() for p in model.parameters()) or None,
            "gflop_per_256": gflop_per_image(model),
            "batch": plan["batch"][kind],
            "images_per_s_256": throughput(model, plan["batch"][kind], plan["batches"][kind], plan["warm_up"]),
        }
    project, released = report["models"]["project"], report["models"]["released"]
    report["ratios"] = {
        "throughput_256": released["images_per_s_256"] and project["images_per_s_256"] / released["images_per_s_256"],
        "gflop_256": released["gflop_per_256"] / project["gflop_per_256"],
        "parameters": released["parameters"] / project["parameters"],
    }
    report["latency"] = [
        measure_case(kind, h, w, mode, options, specs[kind], args.threads)
        for kind, h, w, mode, options in plan["cases"]
        if specs[kind] is not None
    ]
    height, width = plan["end_to_end"]
    report["end_to_end"] = []
    for kind, backend in (("project", "torch"), ("project-onnx", "onnxruntime")):
        if specs[kind] is None:
            continue
        row = {
            "backend": backend,
            "size": f"{width}x{height}",
            **end_to_end(height, width, args.threads, specs[kind].get("path"), backend),
        }
        rate = report["models"][kind]["images_per_s_256"]
        # the same pixels as 256 x 256 batches of the same network (not in --smoke: its rate is a tiny model's)
        if rate and "seconds" in row and not args.smoke:
            row["batch_seconds"] = height * width / 256**2 / rate
            row["ratio"] = row["seconds"] / row["batch_seconds"]
        report["end_to_end"].append(row)

    print(f"\n{'model':<13} {'params':>9} {'GFLOP/256px':>12} {'img/s @256':>11}")
    for kind, m in report["models"].items():
        speed = "not run" if m["images_per_s_256"] is None else f"{m['images_per_s_256']:.2f}"
        params = "-" if m["parameters"] is None else f"{m['parameters']:,}"
        flops = "-" if m["gflop_per_256"] is None else f"{m['gflop_per_256']:.3f}"
        print(f"{kind:<13} {params:>9} {flops:>12} {speed:>11}")
    ratios = report["ratios"]
    speedup = "not run" if ratios["throughput_256"] is None else f"x{ratios['throughput_256']:.1f}"
    print(
        f"project / released: throughput {speedup}, fewer FLOPs x{ratios['gflop_256']:.1f}, "
        f"fewer parameters x{ratios['parameters']:.1f}"
    )
    print(f"\n{'model':<13} {'size':<10} {'mode':<28} {'seconds':>8} {'peak RSS MB':>12}")
    for row in report["latency"]:
        mode = " ".join([row["mode"]] + [f"{k}={v}" for k, v in row["options"].items()])
        if "error" in row:
            print(f"{row['model']:<13} {row['size']:<10} {mode:<28} failed: {row['error']}")
        else:
            print(f"{row['model']:<13} {row['size']:<10} {mode:<28} {row['seconds']:>8.2f} {row['peak_rss_mb']:>12.0f}")
    print(
        "\nmake_heatmap.py, default options, one JPEG, whole process (batch cost: the same pixels as 256 x 256 "
        "batches; decode+PNG: a process that decodes the JPEG and writes it as one PNG)"
    )
    print(
        f"{'backend':<12} {'size':<10} {'seconds':>8} {'batch cost s':>13} {'ratio':>6} {'decode+PNG s':>13} "
        f"{'ratio':>6} {'peak RSS MB':>12}"
    )
    for row in report["end_to_end"]:
        if "error" in row:
            print(f"{row['backend']:<12} {row['size']:<10} failed: {row['error']}")
            continue
        batch = f"{row['batch_seconds']:>13.2f} {row['ratio']:>6.2f}" if "ratio" in row else f"{'-':>13} {'-':>6}"
        print(
            f"{row['backend']:<12} {row['size']:<10} {row['seconds']:>8.2f} {batch} "
            f"{row['decode_write_seconds']:>13.2f} {row['vs_decode_write']:>6.2f} {row['peak_rss_mb']:>12.0f}"
        )
    print(f"({args.threads} threads; timings on a shared machine are noisy)")
    if args.json:
        with atomic_write(args.json) as tmp:
            Path(tmp).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
