"""How real is the exposure simulator? Simulated frames against real bracket frames of the same scenes.

    python bench/simulator_stats.py [--data ../shared/real_brackets] [--cameras 6] [--scale 2] [--figure PATH]
                                    [--set desaturate=0 ...]

For every pair of ../shared/real_brackets (real_over.csv, real_under.csv) the real ideal (refs/) is re-exposed by
datasets/synthetic.py with (a) the old model, SRGB_CAMERA (sRGB curve, hard clip at white, exact stops) and (b) the new
one, --cameras seeded draws of random_camera (tone curve with toe and shoulder, headroom for regions blown in the
ideal, per-channel clipping with a neutral pull, noise, EV and white-balance jitter). Three kinds of simulated frame:

* level frames: P1, P2, P3 (N1..N4 for the under pairs) as synthetic.expose makes them (the level's gain +- the
  camera's EV jitter);
* @EV frames: render() at the real frame's own EV (provenance.csv, ev_estimate), no EV jitter, so that each
  simulated frame can be set against its real twin pixel by pixel (the brackets are registered);
* @mean frames: render() at the EV that gives the real frame's mean grey (bisection), which takes the EV estimate
  (a fit from the pixels, +-0.5 EV) out of the comparison: at equal brightness, is the shape right?

Per frame: blown share (max channel >= 250), highlight saturation (mean (max - min) / max over pixels with grey
>= 200; n/a with fewer than 0.1 % such pixels), mean grey, share of crushed blacks (max channel <= 4), the grey
histogram; per @EV and @mean frame also its distance to the real frame: label error (mean |gray(sim) - gray(real)|, grey
levels: the error the simulated label would have against the real one) and the earth mover's distance between the
two grey histograms (grey levels). Prints markdown tables of the medians and writes a figure (default
docs/simulator_vs_real.png). Frames are box-downscaled by --scale (2: long side 256) to keep the run short.
"""

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pieanet.datasets import synthetic  # noqa: E402
from pieanet.utils.exposure import gray  # noqa: E402
from pieanet.utils.arrays import read_npy  # noqa: E402
from pieanet.utils.image_io import open_photo  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "real_brackets"
DEFAULT_FIGURE = ROOT / "docs" / "simulator_vs_real.png"
OVER_LEVELS = ["P1", "P2", "P3"]
UNDER_LEVELS = ["N1", "N2", "N3", "N4"]
MODELS = ["real", "old", "new"]
LABELS = {"real": "real frames", "old": "old model (SRGB_CAMERA)", "new": "new model (random_camera)"}
COLOURS = {"real": "black", "old": "tab:blue", "new": "tab:orange"}


def blown_share(rgb):
    return float((rgb.max(axis=2) >= 250).mean())


def black_share(rgb):
    return float((rgb.max(axis=2) <= 4).mean())


def highlight_saturation(rgb, min_share=0.001):
    """Mean (max - min) / max over the pixels with grey >= 200; NaN when they are fewer than min_share."""
    rgb = rgb.astype(np.float64)
    bright = gray(rgb) >= 200
    if bright.mean() < min_share:
        return float("nan")
    hi, lo = rgb.max(axis=2)[bright], rgb.min(axis=2)[bright]
    return float(((hi - lo) / hi).mean())


def grey_histogram(rgb):
    levels = np.clip(np.round(gray(rgb.astype(np.float64))), 0, 255).astype(np.int64)
    return np.bincount(levels.ravel(), minlength=256) / levels.size


def frame_stats(rgb):
    return {
        "blown": blown_share(rgb),
        "highlight_sat": highlight_saturation(rgb),
        "mean_grey": float(gray(rgb.astype(np.float64)).mean()),
        "black": black_share(rgb),
        "hist": grey_histogram(rgb),
    }


def distance(sim, real, sim_stats, real_stats):
    """How far a matched simulated frame is from its real twin."""
    label_error = float(np.abs(gray(sim.astype(np.float64)) - gray(real.astype(np.float64))).mean())
    emd = float(np.abs(np.cumsum(sim_stats["hist"]) - np.cumsum(real_stats["hist"])).sum())
    return {"label_error": label_error, "hist_emd": emd}


def load(path, scale):
    with open_photo(path) as image:
        image = image.convert("RGB")
        if scale > 1:
            image = image.reduce(scale)
        return np.asarray(image)


def read_csv(path):
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def check_label(data, row):
    """The real label must be gray(ideal) - gray(test) of the files read here (full resolution)."""
    ideal, test = (
        load(data / sub / row[key], 1).astype(np.float64) for sub, key in (("refs", "ref_id"), ("images", "img_id"))
    )
    label = read_npy(data / "labels" / (Path(row["img_id"]).stem + ".npy"))
    error = float(np.abs(label - (gray(ideal) - gray(test))).max())
    if error > 0.01:
        print(f"warning: {row['img_id']}: label differs from gray(ideal) - gray(test) by {error:.3f}", file=sys.stderr)


def simulate(data, rows, levels, ev_of, cameras, scale, seed, side, overrides=None):
    """Per pair: the real frame's stats, and per model its level frames' and matched frames' stats (overrides: camera
    settings forced on every random_camera draw)."""
    records = []
    for index, row in enumerate(rows):
        check_label(data, row)
        ideal = load(data / "refs" / row["ref_id"], scale)
        real = load(data / "images" / row["img_id"], scale)
        ev = ev_of[row["img_id"]]
        real_stats = frame_stats(real)
        record = {
            "img_id": row["img_id"],
            "ev": ev,
            "level": row["level"].rsplit("_", 1)[-1],
            "real": real_stats,
            "old": {"levels": [], "matched": [], "same_mean": []},
            "new": {"levels": [], "matched": [], "same_mean": []},
        }
        draws = [("old", synthetic.SRGB_CAMERA)] + [
            ("new", {**synthetic.random_camera(np.random.default_rng([seed, side, index, k])), **(overrides or {})})
            for k in range(cameras)
        ]
        for k, (model, camera) in enumerate(draws):
            rng = np.random.default_rng([seed, side, index, k, 1])
            radiance = synthetic.scene_radiance(ideal, camera)
            for level in levels:  # as the generator makes them: global gain of the level +- the camera's EV jitter
                frame = synthetic.render(
                    radiance, synthetic.exposure_field(level, radiance.shape[:2], rng, camera), camera, rng
                )
                record[model]["levels"].append({"level": level, **frame_stats(frame)})
            frame = synthetic.render(radiance, ev, camera, rng)
            stats = frame_stats(frame)
            record[model]["matched"].append({**stats, **distance(frame, real, stats, real_stats)})
            # the same brightness as the real frame: the EV whose frame has the real frame's mean grey
            frame = synthetic.render(radiance, ev_for_mean(radiance, camera, real_stats["mean_grey"], ev), camera, rng)
            stats = frame_stats(frame)
            record[model]["same_mean"].append({**stats, **distance(frame, real, stats, real_stats)})
        records.append(record)
    return records


def ev_for_mean(radiance, camera, target, ev, span=3.0, steps=16):
    """The EV (within ev +- span) at which this camera renders the radiance at mean grey `target`: bisection on a
    noise-free render of every 4th pixel (the mean grey rises monotonically with EV)."""
    sample = radiance[::4, ::4]
    lo, hi = ev - span, ev + span
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        mean = gray(synthetic.render(sample, mid, camera, None, noisy=False).astype(np.float64)).mean()
        lo, hi = (mid, hi) if mean < target else (lo, mid)
    return 0.5 * (lo + hi)


def nanmedian(values):
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmedian(values)) if np.isfinite(values).any() else float("nan")


def per_pair(records, model, key, kind="matched"):
    """One value per pair: the real frame's, or the median over a model's draws (matched EV or same mean grey)."""
    if model == "real":
        return np.array([r["real"][key] for r in records])
    return np.array([nanmedian([m[key] for m in r[model][kind]]) for r in records])


def abs_diff(records, model, key, kind="matched"):
    """Per pair: the median over draws of |simulated - real| for one statistic."""
    return np.array([nanmedian([abs(m[key] - r["real"][key]) for m in r[model][kind]]) for r in records])


STATS = [
    ("blown", "blown share (max channel >= 250), %", 100.0),
    ("highlight_sat", "highlight saturation ((max-min)/max, grey >= 200), %", 100.0),
    ("mean_grey", "mean grey (0..255)", 1.0),
    ("black", "crushed blacks (max channel <= 4), %", 100.0),
]


def fmt(value, digits=1):
    return "n/a" if not np.isfinite(value) else f"{value:.{digits}f}"


def closer(old, new):
    if not (np.isfinite(old) and np.isfinite(new)):
        return "-"
    return "new" if new < old else "old" if old < new else "tie"


def table(records, title, stats, levels):
    """Two markdown tables: medians of the statistics, then the median per-pair distance to the real frames."""
    span = f"{levels[0]}..{levels[-1]}"
    lines = [
        f"**{title}**: {len(records)} real pairs; per pair the old model once, the new one with "
        f"{len(records[0]['new']['matched'])} cameras. @EV: simulated at the real frame's estimated EV; "
        "@mean: at the EV that gives the real frame's mean grey.",
        "",
        f"| median | real | old {span} | new {span} | old @EV | new @EV | old @mean | new @mean |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, name, factor in stats:
        cells = [nanmedian(per_pair(records, "real", key)) * factor]
        cells += [nanmedian([f[key] for r in records for f in r[m]["levels"]]) * factor for m in ("old", "new")]
        cells += [
            nanmedian(per_pair(records, m, key, kind)) * factor
            for kind in ("matched", "same_mean")
            for m in ("old", "new")
        ]
        lines.append(f"| {name} | " + " | ".join(fmt(c) for c in cells) + " |")
    lines += [
        "",
        "| distance to the real frame, median over pairs | old @EV | new @EV | closer @EV | old @mean | "
        "new @mean | closer @mean |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = [(f"abs. error of {name}", key, factor, abs_diff) for key, name, factor in stats]
    rows += [
        ("label error: mean abs. gray(sim) - gray(real), grey levels", "label_error", 1.0, None),
        ("grey-histogram EMD, grey levels", "hist_emd", 1.0, None),
    ]
    for name, key, factor, fn in rows:
        cells = []
        for kind in ("matched", "same_mean"):
            if fn is None:
                pair = {m: per_pair(records, m, key, kind) for m in ("old", "new")}
            else:
                pair = {m: abs_diff(records, m, key, kind) for m in ("old", "new")}
            old, new = nanmedian(pair["old"]) * factor, nanmedian(pair["new"]) * factor
            both = np.isfinite(pair["old"]) & np.isfinite(pair["new"])
            wins = int((pair["new"][both] < pair["old"][both]).sum())
            if key == "mean_grey" and kind == "same_mean":
                cells += ["(0 by construction)", "", ""]
                continue
            cells += [fmt(old), fmt(new), f"{closer(old, new)} ({wins}/{int(both.sum())} pairs new closer)"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(over, under, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13.5, 8.0))
    for ax, key, name in (
        (axes[0, 0], "blown", "blown share (max channel >= 250)"),
        (axes[0, 1], "highlight_sat", "highlight saturation, grey >= 200"),
    ):
        for model in ("old", "new"):
            frames = [f for r in over for f in r[model]["levels"]]
            ax.scatter(
                [f["mean_grey"] for f in frames],
                [f[key] for f in frames],
                s=7 if model == "new" else 14,
                alpha=0.35 if model == "new" else 0.7,
                color=COLOURS[model],
                label=f"{LABELS[model]}, P1..P3",
            )
        ax.scatter(
            [r["real"]["mean_grey"] for r in over],
            [r["real"][key] for r in over],
            s=45,
            marker="D",
            color=COLOURS["real"],
            label="real over-exposed frames",
        )
        ax.set_xlabel("mean grey of the frame")
        ax.set_title(f"{name} vs mean grey", fontsize=10)
    axes[0, 0].legend(fontsize=7.5, loc="upper left")

    ax = axes[0, 2]
    bins = np.arange(257) - 0.5
    chosen = [r for r in over if r["level"] in ("P2", "P3")]
    real_hist = np.mean([r["real"]["hist"] for r in chosen], axis=0)
    ax.stairs(real_hist, bins, color=COLOURS["real"], lw=2, label=f"real ({len(chosen)} frames)")
    for model in ("old", "new"):
        hist = np.mean([m["hist"] for r in chosen for m in r[model]["same_mean"]], axis=0)
        ax.stairs(hist, bins, color=COLOURS[model], lw=1.3, label=f"{model}, same mean grey")
    ax.set_yscale("log")
    ax.set_ylim(1e-4, 1.0)
    ax.set_xlabel("grey level")
    ax.set_title("grey histogram of the P2/P3 pairs\n(simulated at the real frame's mean grey)", fontsize=10)
    ax.legend(fontsize=7.5)

    for ax, key, name in ((axes[1, 0], "blown", "blown share"), (axes[1, 1], "highlight_sat", "highlight saturation")):
        real = per_pair(over, "real", key)
        for model, dx in (("old", -0.004), ("new", 0.004)):
            values = np.array([[m[key] for m in r[model]["same_mean"]] for r in over])
            mid = np.nanmedian(values, axis=1) if np.isfinite(values).any() else values[:, 0]
            ax.vlines(real + dx, np.nanmin(values, axis=1), np.nanmax(values, axis=1), color=COLOURS[model], alpha=0.5)
            ax.scatter(real + dx, mid, color=COLOURS[model], s=22, label=f"{model} (median, range of draws)")
        top = (
            np.nanmax(
                [np.nanmax(real)]
                + [
                    m[key]
                    for r in over
                    for model in ("old", "new")
                    for m in r[model]["same_mean"]
                    if np.isfinite(m[key])
                ]
            )
            * 1.05
        )
        ax.plot([0, top], [0, top], color="grey", lw=0.8, ls="--")
        ax.set_xlabel(f"real over-exposed frame: {name}")
        ax.set_ylabel(f"simulated, same mean grey: {name}")
        ax.set_title(f"{name}: simulated vs real, per over pair", fontsize=10)
    axes[1, 0].legend(fontsize=7.5)

    ax = axes[1, 2]
    for records, marker, side in ((over, "o", "over"), (under, "s", "under")):
        old, new = (per_pair(records, m, "label_error", "same_mean") for m in ("old", "new"))
        ax.scatter(
            old,
            new,
            marker=marker,
            s=26,
            label=f"{side}-exposed pairs",
            color="tab:red" if side == "over" else "tab:green",
        )
    top = (
        max(np.nanmax(per_pair(r, m, "label_error", "same_mean")) for r in (over, under) for m in ("old", "new")) * 1.05
    )
    ax.plot([0, top], [0, top], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("old model: label error vs real frame (grey levels)")
    ax.set_ylabel("new model (median of draws)")
    ax.set_title("mean |gray(sim) - gray(real)|, same mean grey;\nbelow the line: new model closer", fontsize=10)
    ax.legend(fontsize=7.5)
    fig.suptitle(
        "Simulated vs real bracket frames (../shared/real_brackets): the same real ideal re-exposed", fontsize=11
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72)
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the real brackets (IEA40K layout)")
    p.add_argument("--cameras", type=int, default=6, help="random_camera draws per pair (default: 6)")
    p.add_argument("--scale", type=int, default=2, help="box-downscale factor of every frame (default: 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--figure", type=Path, default=DEFAULT_FIGURE)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="force a setting on every random_camera draw, e.g. --set desaturate=0 (repeatable)",
    )
    args = p.parse_args(argv)
    args.overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or key not in synthetic.SRGB_CAMERA:
            p.error(f"--set {item!r}: expected KEY=VALUE with KEY one of {sorted(synthetic.SRGB_CAMERA)}")
        try:
            args.overrides[key] = float(value)
        except ValueError:
            p.error(f"--set {item!r}: {value!r} is not a number")
    if args.cameras < 1 or args.scale < 1:
        p.error("--cameras and --scale must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    data = args.data
    if not (data / "real_over.csv").is_file():
        sys.exit(f"error: {data / 'real_over.csv'} not found (the real brackets live in ../shared/real_brackets)")
    ev_of = {row["img_id"]: float(row["ev_estimate"]) for row in read_csv(data / "provenance.csv")}
    over = simulate(
        data,
        read_csv(data / "real_over.csv"),
        OVER_LEVELS,
        ev_of,
        args.cameras,
        args.scale,
        args.seed,
        0,
        args.overrides,
    )
    under = simulate(
        data,
        read_csv(data / "real_under.csv"),
        UNDER_LEVELS,
        ev_of,
        args.cameras,
        args.scale,
        args.seed,
        1,
        args.overrides,
    )
    if args.overrides:
        print(f"new model: random_camera with {args.overrides}\n")
    print(table(over, "Over-exposed frames", STATS[:3], OVER_LEVELS))
    print()
    print(table(under, "Under-exposed frames", [STATS[2], STATS[3]], UNDER_LEVELS))
    figure(over, under, args.figure)
    print(f"\nfigure: {args.figure} ({args.figure.stat().st_size // 1024} kB); {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
