"""Synthetic IEA data: re-expose well-exposed photos in linear light and record the exact residual.

    python -m pieanet.datasets.synthetic --out data/synthetic   # default photos shipped in installed packages
    python -m pieanet.datasets.synthetic --src my_photos/ --out data/mine --format jpg

Writes the IEA40K layout: train.csv / valid.csv (img_id, ref_id, score, level), images/, labels/ (float32 .npy
residual in grey levels, ideal minus test), refs/ (the 8-bit ideal), README.md. Every source photo (or every
sub-folder of --src, for several photos of one scene) is one scene; whole scenes are held out for validation.
"""

import argparse
import csv
import io
import os
import re
import shlex
import sys
import time
import zlib
from functools import lru_cache
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import zoom
from tqdm import tqdm

from pieanet.datasets.fusion import exposure_fusion
from pieanet.utils.exposure import gray, linear_to_srgb, srgb_to_linear
from pieanet.utils.image_io import IMAGE_EXTENSIONS, atomic_write, load_image, open_photo, readable_formats

KEEP = "KEEP"  # the level of --keep-fraction's frames: the crop as published, its own ideal
GLOBAL_LEVELS = ["N4", "N3", "N2", "N1", "P0", "P1", "P2", "P3", "P4"]
SPATIAL_LEVELS = ["GRAD", "SPOT", "SKY", "FIELD"]
DEFAULT_LEVELS = GLOBAL_LEVELS + SPATIAL_LEVELS
GLOBAL_LEVEL = re.compile(r"^([NP])(\d+(?:\.\d+)?)$")
CSV_COLUMNS = ["img_id", "ref_id", "score", "level"]

# Real photographs that ship inside installed packages: (package, path inside it, scene, credit and licence).
DEFAULT_SOURCES = [
    (
        "skimage",
        "data/astronaut.png",
        "astronaut",
        "Eileen Collins, NASA Great Images database; no known copyright restrictions, public domain",
    ),
    ("skimage", "data/coffee.png", "coffee", "Rachel Michetti, courtesy of Pikolo Espresso Bar; CC0"),
    ("skimage", "data/chelsea.png", "chelsea", "Stefan van der Walt; CC0"),
    ("skimage", "data/rocket.jpg", "rocket", "SpaceX (DSCOVR launch on Falcon 9); released into the public domain"),
    (
        "skimage",
        "data/motorcycle_left.png",
        "motorcycle",
        "Middlebury 2014 stereo benchmark (Scharstein et al.), left view; no licence stated by scikit-image",
    ),
    (
        "skimage",
        "data/motorcycle_right.png",
        "motorcycle",
        "Middlebury 2014 stereo benchmark (Scharstein et al.), right view; no licence stated by scikit-image",
    ),
    (
        "matplotlib",
        "mpl-data/sample_data/grace_hopper.jpg",
        "hopper",
        "Grace Hopper, official U.S. Navy photograph; public domain (U.S. government work); no licence stated by "
        "matplotlib",
    ),
    (
        "sklearn",
        "datasets/images/china.jpg",
        "china",
        "Flickr user danielbuechele (photo 6061409035); CC BY 2.0, per scikit-learn's images/README.txt",
    ),
    (
        "sklearn",
        "datasets/images/flower.jpg",
        "flower",
        "Flickr user vultilion (photo 6056698931); CC BY 2.0, per scikit-learn's images/README.txt",
    ),
]
# Left out on purpose: skimage's hubble_deep_field (astronomical, almost all black sky, no "ideal" everyday
# exposure) and retina (fundus photo); the other skimage images are grey, synthetic or microscopy.


def level_ev(level):
    """EV of a global level name (N2 -> -2.0, P1 -> +1.0); None for a spatial level."""
    match = GLOBAL_LEVEL.match(level)
    if match:
        return (-1.0 if match.group(1) == "N" else 1.0) * float(match.group(2))
    if level in SPATIAL_LEVELS:
        return None
    raise ValueError(f"unknown exposure level {level!r}: expected N<k>/P<k> (EV) or one of {SPATIAL_LEVELS}")


def ev_field(level, h, w, rng):
    """Per-pixel exposure change in EV (h x w float64) for one level name."""
    ev = level_ev(level)
    if ev is not None:
        return np.full((h, w), ev)
    y, x = np.mgrid[0:h, 0:w]
    y = (y + 0.5) / h - 0.5
    x = (x + 0.5) / w - 0.5
    if level == "GRAD":  # linear ramp between two exposures along a random direction
        angle = rng.uniform(0, 2 * np.pi)
        t = np.clip((x * np.cos(angle) + y * np.sin(angle)) / 0.7 + 0.5, 0, 1)
        start = rng.uniform(-3.5, 1.0)
        end = np.clip(start + rng.choice([-1, 1]) * rng.uniform(1.5, 4.5), -4, 4)
        field = start + (end - start) * t
    elif level == "SPOT":  # spotlight on a dark frame, or a bright frame with a vignette
        cy, cx = rng.uniform(-0.3, 0.3, size=2)
        sigma = rng.uniform(0.12, 0.4)
        bump = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2))
        if rng.random() < 0.5:
            field = rng.uniform(-4.0, -1.0) + rng.uniform(1.5, 4.5) * bump
        else:
            field = rng.uniform(0.5, 3.0) - rng.uniform(1.5, 4.0) * (1 - bump)
    elif level == "SKY":  # over-exposed top (sky) above an under-exposed bottom (ground), soft tilted horizon
        horizon = rng.uniform(-0.25, 0.25) + np.tan(rng.uniform(-0.25, 0.25)) * x
        t = 1 / (1 + np.exp(-(horizon - y) / rng.uniform(0.02, 0.1)))
        field = rng.uniform(-3.5, -0.5) + (rng.uniform(0.5, 3.5) - rng.uniform(-3.5, -0.5)) * t
    else:  # FIELD: smooth random exposure field, bicubic upsampling of a coarse Gaussian grid
        cells = int(rng.integers(2, 6))
        coarse = rng.normal(size=(cells + 1, cells + 1))
        smooth = zoom(coarse, (h / (cells + 1), w / (cells + 1)), order=3, mode="nearest", grid_mode=True)[:h, :w]
        smooth = (smooth - smooth.mean()) / (smooth.std() + 1e-8)
        field = rng.uniform(-1.5, 1.5) + rng.uniform(0.7, 2.0) * smooth
    return np.clip(field, -4.0, 4.0)


def shoulder(x, knee, slope):
    """Camera highlight roll-off in linear light: identity up to ``knee``, then 1 - (1 - t)^slope up to the sensor's
    saturation ``knee + (1 - knee) * slope``, which maps to 1 (C1 at the knee; slope 1 is a hard clip at 1)."""
    top = knee + (1.0 - knee) * slope
    t = np.clip((x - knee) / max(top - knee, 1e-12), 0.0, 1.0)
    return np.where(x <= knee, x, knee + (1.0 - knee) * (1.0 - (1.0 - t) ** slope))


def shoulder_inverse(y, knee, slope):
    t = 1.0 - (1.0 - np.clip((y - knee) / max(1.0 - knee, 1e-12), 0.0, 1.0)) ** (1.0 / slope)
    return np.where(y <= knee, y, knee + (1.0 - knee) * slope * t)


def random_camera(rng):
    """One camera's rendering, shared by every frame of a bracket: tone curve (toe via a display power, shoulder
    knee and slope: highlight headroom up to knee + (1 - knee) * slope times the ideal's white), how strongly clipped
    highlights are pulled to neutral, how many stops brighter than white the regions blown in the ideal were, and the
    sensor's noise."""
    hard_clip = rng.random() < 0.2
    return {
        "knee": 1.0 if hard_clip else float(rng.uniform(0.35, 0.9)),
        "slope": 1.0 if hard_clip else float(rng.uniform(1.5, 4.0)),
        "contrast": float(rng.uniform(0.85, 1.2)),
        "desaturate": float(rng.uniform(0.0, 0.6)),
        "blown_stops": float(rng.uniform(0.0, 6.0)),  # lamps, sun and sky: up to 64x the sensor's white
        "full_well": float(np.exp(rng.uniform(np.log(3000), np.log(30000)))),
        "read_noise": float(rng.uniform(2.0, 8.0)),
        "ev_jitter": 0.35,  # a bracket's steps are not exact stops
        "wb_jitter": 0.01,  # auto white balance drifting between frames
        # half the cameras set a black point (up to 5 % of the display range): real JPEG curves crush the last
        # shadows, so a frame 5-7 stops under comes out mostly black, not grey with noise
        "black": float(rng.uniform(0.0, 0.05)) if rng.random() < 0.5 else 0.0,
    }


def scene_radiance(ideal_u8, camera):
    """Linear scene light behind an 8-bit ideal as this camera would have rendered it (the inverse of its tone curve),
    with regions blown in the ideal extended above the sensor's range: a clipped sky or lamp was brighter than white,
    so it stays bright in darker frames of the bracket. Only pixels at 250 and above get the extra light (fully at
    255), so everything below renders back unchanged."""
    black = camera.get("black", 0.0)
    display = (black + (1.0 - black) * (ideal_u8 / 255.0)) ** (1.0 / camera["contrast"])
    radiance = shoulder_inverse(srgb_to_linear(display), camera["knee"], camera["slope"])
    blown = np.clip((ideal_u8.max(axis=2, keepdims=True) - 250.0) / 5.0, 0.0, 1.0)
    return radiance * (1.0 + (2.0 ** camera["blown_stops"] - 1.0) * blown)


def add_lamps(radiance, camera, rng, count=None):
    """Light sources in the scene: 1-5 small discs 4 to 9 stops brighter than the sensor's white, each with a soft glow
    on its surroundings. Real dark frames of interiors and night scenes keep their lamps and windows bright while the
    rest falls to black; without such sources in the corpus a bright spot in a dark frame reads as a low-key photo."""
    h, w = radiance.shape[:2]
    saturation = camera["knee"] + (1.0 - camera["knee"]) * camera["slope"]
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    light = np.zeros((h, w, 3))
    for _ in range(int(rng.integers(1, 6)) if count is None else count):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        radius = float(np.exp(rng.uniform(np.log(1.5), np.log(max(2.0, 0.06 * min(h, w))))))
        distance = np.hypot(y - cy, x - cx)
        core = np.clip(radius + 0.5 - distance, 0.0, 1.0)  # a disc with a one-pixel soft edge
        # the light it casts: at most about half the sensor's white next to it, whatever the lamp's own brightness
        glow = rng.uniform(0.05, 0.5) * np.exp(-0.5 * (distance / (radius * rng.uniform(3.0, 10.0))) ** 2)
        colour = np.array([1.0, rng.uniform(0.75, 1.0), rng.uniform(0.45, 1.0)])  # white to warm
        light += (core * 2.0 ** rng.uniform(4.0, 9.0) + glow)[..., None] * colour * saturation
    return radiance + light


def render(radiance, ev, camera, rng, noisy=True):
    """One frame: exposure gain (ev: scalar or H x W field), white-balance drift, shot + read noise (both left out
    with ``noisy=False``), per-channel sensor saturation, neutral pull of clipped highlights, the tone curve, 8-bit."""
    knee, slope = camera["knee"], camera["slope"]
    saturation = knee + (1.0 - knee) * slope
    gain = np.asarray(2.0 ** np.asarray(ev, dtype=np.float64))
    signal = radiance * (gain[..., None] if gain.ndim else gain)
    if noisy:
        signal = signal * np.exp(rng.normal(0.0, camera["wb_jitter"], size=3))
        # noise in units of the saturation level: a dark capture has few electrons, so its noise shows once rendered
        electrons = np.minimum(signal, saturation) / saturation * camera["full_well"]
        sigma = np.sqrt(electrons + camera["read_noise"] ** 2) / camera["full_well"] * saturation
        signal = signal + sigma * rng.standard_normal(size=signal.shape)
    peak = signal.max(axis=2, keepdims=True)
    clipped = np.clip(signal, 0.0, saturation)
    # channels clip one by one (a hue shift); cameras pull such highlights towards neutral
    pull = camera["desaturate"] * np.clip((peak - saturation) / (0.5 * saturation), 0.0, 1.0)
    clipped = clipped + pull * (clipped.max(axis=2, keepdims=True) - clipped)
    display = linear_to_srgb(shoulder(clipped, knee, slope)) ** camera["contrast"]
    black = camera.get("black", 0.0)
    if black:
        display = np.clip((display - black) / (1.0 - black), 0.0, 1.0)
    return np.clip(np.round(display * 255.0), 0, 255).astype(np.uint8)


SRGB_CAMERA = {
    "knee": 1.0,
    "slope": 1.0,
    "contrast": 1.0,
    "desaturate": 0.0,
    "blown_stops": 0.0,
    "full_well": 10000.0,
    "read_noise": 4.0,
    "ev_jitter": 0.0,
    "wb_jitter": 0.0,
}


def exposure_field(level, shape, rng, camera, ev=0.0):
    """Per-pixel EV of one frame: ``ev`` plus the level's field, shifted by the camera's EV jitter (a bracket's steps
    are not exact stops)."""
    return ev + ev_field(level, *shape, rng) + rng.uniform(-camera["ev_jitter"], camera["ev_jitter"])


def expose(ideal_u8, level, rng, camera=SRGB_CAMERA, ev=0.0):
    """Re-expose an 8-bit sRGB photo to one level (N<k>/P<k> or a spatial field), ``ev`` stops from the photo itself,
    through a camera model (default: the sRGB curve with a hard clip and exact stops). Any camera renders the photo
    back exactly at 0 EV without noise, jitter and blown-region headroom."""
    field = exposure_field(level, ideal_u8.shape[:2], rng, camera, ev)
    return render(scene_radiance(ideal_u8, camera), field, camera, rng)


IDEAL_EVS = np.arange(-2.0, 3.01, 0.25)


def ideal_ev(photo_u8, camera, target_grey, clip_tolerance=0.1):
    """The stops by which to re-expose a photo so that it becomes its bracket's ideal, by the rule real brackets use:
    among the exposures that clip at most ``clip_tolerance`` (a share of pixels) more than the least clipped one, the
    one whose mean grey is nearest ``target_grey`` (0-255). Judged on a 64 px thumbnail, without noise."""
    step = max(1, max(photo_u8.shape[:2]) // 64)
    radiance = scene_radiance(photo_u8[::step, ::step], camera)
    greys, clipped = [], []
    for ev in IDEAL_EVS:
        frame = render(radiance, ev, camera, None, noisy=False)
        greys.append(gray(frame.astype(np.float64)).mean())
        clipped.append((frame.max(axis=2) >= 254).mean())
    clipped = np.asarray(clipped)
    allowed = clipped <= clipped.min() + clip_tolerance
    distance = np.where(allowed, np.abs(np.asarray(greys) - target_grey), np.inf)
    return float(IDEAL_EVS[int(np.argmin(distance))])


def local_ideal(ideal_u8, radiance, camera, ev0, evs, strength):
    """The ideal moved ``strength`` (0..1) of the way towards the exposure fusion of its own bracket (frames at
    ``ev0 + evs`` stops, noise-free, from the scene light with its highlight headroom): shadows opened and
    highlights brought back locally, as observers' favourite fusions and IEA40K's experts do, while the photo keeps
    its key (strength 1 would pull every photo towards a mid grey, and flag every published high- or low-key photo)."""
    frames = np.stack([render(radiance, ev0 + ev, camera, None, noisy=False) for ev in evs])
    fused = exposure_fusion(frames) * 255.0
    moved = ideal_u8 + strength * (fused - ideal_u8)
    return np.clip(np.round(moved), 0, 255).astype(np.uint8)


def encode(image_u8, fmt, quality):
    buffer = io.BytesIO()
    if fmt == "jpg":
        Image.fromarray(image_u8).save(buffer, format="JPEG", quality=quality)
    else:
        Image.fromarray(image_u8).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def write_atomic(path, data):
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)


def save_npy_atomic(path, array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    write_atomic(path, buffer.getvalue())


def load_source(path, max_side=None):
    """A source photo as uint8 H x W x 3 (EXIF-rotated), shrunk to a longer side of at most ``max_side``;
    ImageLoadError naming the file when it cannot be read."""
    photo = np.round(load_image(path) * 255.0).astype(np.uint8)
    if max_side and max(photo.shape[:2]) > max_side:
        scale = max_side / max(photo.shape[:2])
        size = (max(1, round(photo.shape[1] * scale)), max(1, round(photo.shape[0] * scale)))
        photo = np.asarray(Image.fromarray(photo).resize(size, Image.LANCZOS))
    return photo


@lru_cache(maxsize=4)
def cached_source(path, max_side=None):
    """load_source, kept per worker process (a scene made of one photo is decoded once)."""
    photo = load_source(path, max_side)
    photo.setflags(write=False)
    return photo


def random_crop(photo, size, rng):
    """A square crop at a random scale and position, resized to size x size, randomly mirrored."""
    h, w = photo.shape[:2]
    short = min(h, w)
    side = int(round(np.exp(rng.uniform(np.log(min(short, 0.75 * size)), np.log(short)))))
    top = int(rng.integers(0, h - side + 1))
    left = int(rng.integers(0, w - side + 1))
    crop = Image.fromarray(photo[top : top + side, left : left + side]).resize((size, size), Image.LANCZOS)
    crop = np.asarray(crop)
    return crop[:, ::-1].copy() if rng.random() < 0.5 else crop


def task_seed(seed, scene, crop_index):
    return np.random.SeedSequence([seed, zlib.crc32(scene.encode()), crop_index])


def make_crop(task):
    """Write one ideal crop and its exposure variants (one camera for the bracket); return the CSV rows."""
    scene, paths, crop_index, cfg = task
    rng = np.random.default_rng(task_seed(cfg["seed"], scene, crop_index))
    source = cached_source(paths[crop_index % len(paths)], cfg["max_side"])
    ideal = random_crop(source, cfg["size"], rng)
    if rng.random() < cfg["grey_fraction"]:  # a black-and-white photo has the same exposure as its colour original
        ideal = np.repeat(np.round(gray(ideal.astype(np.float64))).astype(np.uint8)[..., None], 3, axis=2)
    published = ideal
    camera = random_camera(rng) if cfg["camera"] == "random" else SRGB_CAMERA
    radiance = scene_radiance(ideal, camera)  # every frame of the bracket, and the re-exposed ideal, render this
    # a finished crop is its bracket's ideal as published, at its own key (no rule, no fusion, no lamps: an expert
    # has nothing left to add); drawn only when asked for, so that corpora made without it keep their bytes
    finished = bool(cfg.get("finished_fraction")) and rng.random() < cfg["finished_fraction"]
    # drawn only when asked for, so that corpora made without lamps keep their random stream (and their bytes)
    lamps = not finished and bool(cfg.get("lamp_fraction")) and rng.random() < cfg["lamp_fraction"]
    if lamps:
        radiance = add_lamps(radiance, camera, rng)
    ev0 = 0.0
    if cfg["ideal_grey"] and not finished:  # the crop re-exposed by the rule real brackets pick their ideal with
        # judged on the crop, or on the whole photo as real brackets are (a crop of its shadows then stays dark)
        judged = source if cfg.get("rule_on") == "photo" else ideal
        ev0 = ideal_ev(judged, camera, rng.uniform(*cfg["ideal_grey"]))
    if ev0 or lamps:
        ideal = render(radiance, ev0, camera, rng, noisy=False)
    if cfg.get("fusion_strength") and not finished:
        ideal = local_ideal(ideal, radiance, camera, ev0, cfg["fusion_evs"], cfg["fusion_strength"])
    levels = cfg["levels"]
    if lamps and cfg.get("lamp_frames") == "under":
        # a light source is blown in the ideal, so an over-exposed frame would teach that a blown region needs no
        # less light, while the blown windows of a real over-exposed frame were not blown in its ideal
        levels = [lv for lv in levels if lv not in SPATIAL_LEVELS and level_ev(lv) <= 0]
    if cfg["levels_per_crop"]:
        always = [lv for lv in levels if lv in cfg.get("always_levels", ())]
        drawn = [lv for lv in levels if lv not in always]
        count = max(0, cfg["levels_per_crop"] - len(always))
        levels = always + [drawn[i] for i in sorted(rng.choice(len(drawn), min(count, len(drawn)), replace=False))]
    out = Path(cfg["out"])
    stem = f"{scene}_{crop_index:03d}"
    ref_id = f"{stem}.png"
    write_atomic(out / "refs" / ref_id, encode(ideal, "png", None))
    ideal_gray = gray(ideal.astype(np.float64))
    rows = [
        save_frame(
            render(radiance, exposure_field(level, radiance.shape[:2], rng, camera, ev0), camera, rng),
            ideal_gray,
            ref_id,
            f"{stem}_{level}",
            level,
            cfg,
            rng,
        )
        for level in levels
    ]
    # drawn last and only when asked for, so that corpora made without it keep their random stream (and their bytes)
    if finished:  # the finished crop itself among its frames: 0 EV labelled 0 (but for a JPEG's own error)
        rows.append(save_frame(published, ideal_gray, ref_id, f"{stem}_{KEEP}", KEEP, cfg, rng))
    elif cfg.get("keep_fraction") and rng.random() < cfg["keep_fraction"]:
        # the crop as published is its own ideal, whatever its key: a well-exposed photo needs no correction
        keep_ref = f"{stem}_{KEEP}.png"
        write_atomic(out / "refs" / keep_ref, encode(published, "png", None))
        rows.append(
            save_frame(published, gray(published.astype(np.float64)), keep_ref, f"{stem}_{KEEP}", KEEP, cfg, rng)
        )
    return rows


def save_frame(test, ideal_gray, ref_id, stem, level, cfg, rng):
    """Write one test frame (8-bit RGB) and its exact label against the ideal's grey (float64); return its CSV row."""
    out = Path(cfg["out"])
    fmt, quality = cfg["format"], cfg["quality"]
    if fmt == "camera":  # in-camera JPEG at a random quality, or a lossless frame
        fmt, quality = ("jpg", int(rng.integers(75, 98))) if rng.random() < 0.7 else ("png", None)
    data = encode(test, fmt, quality)
    img_id = f"{stem}.{fmt}"
    with open_photo(io.BytesIO(data)) as saved:  # the label must describe the bytes on disk, after compression
        saved_rgb = np.asarray(saved.convert("RGB"), dtype=np.float64)
    label = (ideal_gray - gray(saved_rgb)).astype(np.float32)
    save_npy_atomic(out / "labels" / f"{stem}.npy", label)
    write_atomic(out / "images" / img_id, data)
    score = 10.0 * (1.0 - float(np.abs(label.astype(np.float64) / 255.0).mean()))
    return {"img_id": img_id, "ref_id": ref_id, "score": f"{score:.6f}", "level": level}


def package_dir(name):
    try:
        module = __import__(name)
    except ImportError:
        return None
    return Path(module.__file__).parent


def default_scenes():
    """{scene: ([photo paths], [credits])} from the photos shipped inside installed packages."""
    scenes = {}
    for package, rel, scene, credit in DEFAULT_SOURCES:
        base = package_dir(package)
        if base is not None and (base / rel).is_file():
            paths, credits = scenes.setdefault(scene, ([], []))
            paths.append(base / rel)
            credits.append(f"`{package}/{rel}`: {credit}")
    return scenes


def chosen_scenes(scenes, names):
    """The ``names`` of ``scenes`` (all when None); raises ValueError naming one that is not there."""
    if names is None:
        return scenes
    missing = [name for name in names if name not in scenes]
    if missing:
        raise ValueError(
            f"--scenes {' '.join(missing)}: not among the default scenes found here "
            f"({', '.join(sorted(scenes)) or 'none'})"
        )
    return {name: scenes[name] for name in names}


def scene_name(path):
    return re.sub(r"[^A-Za-z0-9-]+", "-", path.name if path.is_dir() else path.stem).strip("-") or "scene"


def corpus_credits(folder):
    """{photo path: credit} from a photo corpus's photos.csv (datasets.photos), empty when there is none."""
    listing = Path(folder) / "photos.csv"
    if not listing.is_file():
        return {}
    with open(listing, newline="", encoding="utf-8") as f:
        return {
            Path(folder) / row["file"]: f"{row['package']} `{row['member']}`: {row['license']}"
            for row in csv.DictReader(f)
        }


def source_scenes(sources):
    """Scenes from --src: an image file is a scene; in a folder, each image and each sub-folder is a scene (a photo
    corpus made by datasets.photos has one sub-folder per source package, so a package is held out whole)."""
    scenes = {}
    credits = {}

    def add(name, paths):
        if not paths:
            return
        if name in scenes:
            raise ValueError(f"two sources map to the scene name {name!r} ({paths[0]} and {scenes[name][0][0]})")
        scenes[name] = (paths, [credits.get(p, f"`{p}`: user-supplied; licence not recorded") for p in paths])

    for src in map(Path, sources):
        if src.is_file():
            add(scene_name(src), [src])
        elif src.is_dir():
            credits.update(corpus_credits(src))
            for entry in sorted(e for e in src.iterdir() if not e.name.startswith(".")):
                if entry.is_dir():
                    add(
                        scene_name(entry),
                        sorted(
                            p
                            for p in entry.iterdir()
                            if not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
                        ),
                    )
                elif entry.suffix.lower() in IMAGE_EXTENSIONS:
                    add(scene_name(entry), [entry])
        else:
            raise ValueError(f"{src}: source not found (expected an image file or a folder of photos)")
    return scenes


def check_sources(scenes):
    """Drop unreadable photos (one line each) and scenes left empty."""
    usable = {}
    for name, (paths, credits) in scenes.items():
        good = []
        for path in paths:
            try:
                load_source(path)
                good.append(path)
            except ValueError as err:
                print(f"skipped: {err}", file=sys.stderr)
        if good:
            usable[name] = (good, credits)
    return usable


def split_scenes(names, val_scenes, val_fraction, seed):
    names = sorted(names)
    if val_scenes:
        unknown = sorted(set(val_scenes) - set(names))
        if unknown:
            raise ValueError(f"--val-scenes {unknown} not among the scenes {names}")
        valid = sorted(set(val_scenes))
    else:
        count = int(round(val_fraction * len(names)))
        if val_fraction > 0 and len(names) > 1:
            count = min(max(count, 1), len(names) - 1)
        order = np.random.default_rng(seed).permutation(len(names))
        valid = sorted(names[i] for i in order[:count])
    return [n for n in names if n not in valid], valid


def write_csv(path, rows):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, buffer.getvalue().encode())


def write_readme(out, command, cfg, scenes, train, valid, counts, level_means):
    lines = [
        "# Synthetic IEA dataset",
        "",
        f"Made by `{command}` (seed {cfg['seed']}, {cfg['size']}x{cfg['size']} crops, "
        f"{sum(cfg['crops'].values())} crops, format {cfg['format']}"
        + (f", JPEG quality {cfg['quality']}" if cfg["format"] == "jpg" else "")
        + f", camera {cfg['camera']}, levels per crop {cfg['levels_per_crop'] or 'all'}).",
        "",
        f"- train: {counts['train']} images from scenes {', '.join(train)}",
        f"- valid: {counts['valid']} images from held-out scenes {', '.join(valid) or '(none)'}",
        f"- levels: {' '.join(cfg['levels'])}",
        "",
        "Layout as IEA40K: `train.csv`/`valid.csv` (img_id, ref_id, score, level), `images/<img_id>`, "
        "`labels/<img_id stem>.npy` (float32 residual in grey levels, ideal minus test, -255..255; "
        "divide by 255), `refs/<ref_id>` (the 8-bit ideal, PNG).",
        "",
        "How a test image is made from its ideal crop (`--camera random`): draw a camera (tone curve = sRGB with a "
        "display power 0.85..1.2 for the toe and a highlight shoulder: knee 0.35..0.9, headroom up to 2.95x white; "
        "20 % of cameras clip hard); invert its curve to get scene light, giving regions blown in the ideal up to "
        "3x more light; multiply by 2^EV (global levels N4..P4 = -4..+4 EV, +-0.35 EV jitter; GRAD linear ramp, "
        "SPOT spotlight or vignette, SKY bright top over dark bottom, FIELD smooth random field); white-balance "
        "drift; shot + read noise (full well 3000..30000 e-, read noise 2..8 e-); clip each channel at the sensor's "
        "saturation and pull clipped highlights towards neutral; the camera's tone curve; 8 bit; in-camera JPEG "
        "(`--format camera`). At 0 EV without noise, jitter and headroom the camera renders the ideal back exactly. "
        "The label is "
        "gray(ideal) - gray(test as read back from disk), gray = 0.299 R + 0.587 G + 0.114 B; "
        "score = 10 * (1 - mean|label / 255|).",
        "",
        "Mean score per level (train): " + ", ".join(f"{k} {v:.2f}" for k, v in level_means.items()),
        "",
        "## Sources",
        "",
    ]
    for name in sorted(scenes):
        split = "valid" if name in valid else "train"
        for credit in scenes[name][1]:
            lines.append(f"- {name} ({split}): {credit}")
    write_atomic(out / "README.md", ("\n".join(lines) + "\n").encode())


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", nargs="+", help="photo files or folders (default: photos shipped in installed packages)")
    p.add_argument("--out", required=True, help="output dataset folder")
    p.add_argument(
        "--scenes",
        nargs="+",
        metavar="SCENE",
        help="without --src: only these of the default scenes (e.g. motorcycle hopper: none of the "
        "sample photos of img_to_pred/, which are astronaut, coffee, chelsea and rocket)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    p.add_argument("--size", type=int, default=256, help="side of the square crops")
    p.add_argument(
        "--max-side", type=int, help="shrink source photos to this longer side before cropping (default: as they are)"
    )
    p.add_argument(
        "--crops-per-image", type=int, default=48, help="crops per scene (default: 48); see --crops-per-photo"
    )
    p.add_argument(
        "--crops-per-photo",
        type=int,
        help="instead: this many crops per photo of a scene, at most --max-crops-per-scene (a corpus "
        "package with many photos is capped so that it does not dominate)",
    )
    p.add_argument("--max-crops-per-scene", type=int, default=10**9, help="cap for --crops-per-photo")
    p.add_argument(
        "--levels-per-crop",
        type=int,
        help="expose each crop to this many levels drawn at random (default: every level)",
    )
    p.add_argument(
        "--camera",
        choices=["random", "srgb"],
        default="random",
        help="random: a camera model per crop (tone curve with toe and shoulder, highlight headroom, "
        "neutral pull of clipped highlights, noise, EV and white-balance jitter); srgb: the sRGB curve "
        "with a hard clip and exact stops (default: random)",
    )
    p.add_argument(
        "--ideal-grey",
        type=float,
        nargs=2,
        default=[100.0, 145.0],
        metavar=("LOW", "HIGH"),
        help="re-expose each crop to become its bracket's ideal by the rule of real brackets: the least "
        "clipped exposure whose mean grey is nearest a target drawn from LOW..HIGH (default: 100 145; "
        "0 0 keeps the crop as it is)",
    )
    p.add_argument(
        "--rule-on",
        choices=["crop", "photo"],
        default="crop",
        help="what --ideal-grey's rule judges: each crop on its own, or the whole photo it comes from (as "
        "real brackets pick a whole frame: a crop of a well-exposed photo's shadows stays dark in its "
        "ideal; default: crop)",
    )
    p.add_argument(
        "--fusion-strength",
        type=float,
        default=0.0,
        help="local ideal: move each ideal this far (0..1) towards the exposure fusion of its own bracket "
        "(default: 0, the ideal as the rule above leaves it)",
    )
    p.add_argument(
        "--fusion-evs",
        type=float,
        nargs="+",
        default=[-2.0, -1.0, 0.0, 1.0, 2.0],
        metavar="EV",
        help="the bracket fused for --fusion-strength, in stops from the ideal (default: -2 -1 0 1 2)",
    )
    p.add_argument(
        "--lamp-fraction",
        type=float,
        default=0.0,
        help="share of crops given light sources 4-9 stops above white (clipped in the ideal, still bright "
        "in frames 5-7 stops under; default: 0)",
    )
    p.add_argument(
        "--lamp-frames",
        choices=["all", "under"],
        default="all",
        help="the frames of a crop with lamps: drawn from every level, or only from the global levels at "
        "or under 0 EV (default: all)",
    )
    p.add_argument(
        "--keep-fraction",
        type=float,
        default=0.0,
        help=f"share of crops that also get a {KEEP} frame: the crop as published, its own ideal (label 0 "
        "but for JPEG), whatever its key, so that well-exposed bright and dark photos are among the "
        "samples (default: 0)",
    )
    p.add_argument(
        "--finished-fraction",
        type=float,
        default=0.0,
        help=f"share of crops that are finished photos: the bracket's ideal is the crop as published, at "
        f"its own key (no --ideal-grey rule, fusion or lamps), and the crop itself is among its frames "
        f"({KEEP}, labelled 0 but for JPEG) (default: 0)",
    )
    p.add_argument(
        "--grey-fraction", type=float, default=0.05, help="share of crops turned black-and-white (default: 0.05)"
    )
    p.add_argument(
        "--levels",
        nargs="+",
        default=DEFAULT_LEVELS,
        help="exposure levels: N<k>/P<k> (-k/+k EV) and spatial GRAD SPOT SKY FIELD",
    )
    p.add_argument(
        "--always-levels",
        nargs="+",
        default=[],
        metavar="LEVEL",
        help="levels every crop gets, the rest drawn by --levels-per-crop (e.g. P0: the photo as it "
        "is, so that well-exposed frames are not rare among the samples)",
    )
    p.add_argument("--val-fraction", type=float, default=0.2, help="fraction of scenes held out for validation")
    p.add_argument("--val-scenes", nargs="+", help="hold out exactly these scenes (overrides --val-fraction)")
    p.add_argument(
        "--format",
        choices=["png", "jpg", "camera"],
        default="png",
        help="camera: per frame, an in-camera JPEG at quality 75..97 (70 %%) or PNG (default: png)",
    )
    p.add_argument("--quality", type=int, default=92, help="JPEG quality")
    args = p.parse_args(argv)
    for level in args.levels:
        try:
            level_ev(level)
        except ValueError as err:
            p.error(str(err))
    if args.size < 8 or (args.max_side or 8) < 8 or args.crops_per_image < 1 or args.workers < 1:
        p.error("--size and --max-side must be >= 8, --crops-per-image and --workers >= 1")
    if not 0.0 <= args.ideal_grey[0] <= args.ideal_grey[1] <= 255.0:
        p.error("--ideal-grey must be LOW HIGH with 0 <= LOW <= HIGH <= 255")
    if (args.crops_per_photo or 1) < 1 or args.max_crops_per_scene < 1:
        p.error("--crops-per-photo and --max-crops-per-scene must be >= 1")
    if not set(args.always_levels) <= set(args.levels):
        p.error(f"--always-levels {sorted(set(args.always_levels) - set(args.levels))} are not among --levels")
    if args.levels_per_crop is not None and not 1 <= args.levels_per_crop <= len(set(args.levels)):
        p.error(f"--levels-per-crop must be between 1 and the number of levels ({len(set(args.levels))})")
    if not all(
        0.0 <= f <= 1.0 for f in (args.grey_fraction, args.lamp_fraction, args.keep_fraction, args.finished_fraction)
    ):
        p.error("--grey-fraction, --lamp-fraction, --keep-fraction and --finished-fraction must be in [0, 1]")
    if not 0.0 <= args.fusion_strength <= 1.0 or not all(-8.0 <= ev <= 8.0 for ev in args.fusion_evs):
        p.error("--fusion-strength must be in [0, 1] and --fusion-evs within -8..8")
    return args


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    try:
        scenes = check_sources(source_scenes(args.src) if args.src else chosen_scenes(default_scenes(), args.scenes))
        if not scenes:
            raise ValueError(f"no usable source photos; expected files ending in {readable_formats()}")
        train, valid = split_scenes(scenes, args.val_scenes, args.val_fraction, args.seed)
    except ValueError as err:
        sys.exit(f"error: {err}")
    out = Path(args.out)
    for sub in ("images", "labels", "refs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    cfg = {
        "seed": args.seed,
        "size": args.size,
        "levels": list(dict.fromkeys(args.levels)),
        "format": args.format,
        "quality": args.quality,
        "out": str(out),
        "levels_per_crop": args.levels_per_crop,
        "camera": args.camera,
        "grey_fraction": args.grey_fraction,
        "ideal_grey": args.ideal_grey if max(args.ideal_grey) > 0 else None,
        "max_side": args.max_side,
        "fusion_strength": args.fusion_strength,
        "fusion_evs": args.fusion_evs,
        "always_levels": args.always_levels,
        "lamp_fraction": args.lamp_fraction,
        "rule_on": args.rule_on,
        "keep_fraction": args.keep_fraction,
        "finished_fraction": args.finished_fraction,
        "lamp_frames": args.lamp_frames,
    }

    def crops(name):
        if args.crops_per_photo is None:
            return args.crops_per_image
        return min(args.crops_per_photo * len(scenes[name][0]), args.max_crops_per_scene)

    cfg["crops"] = {name: crops(name) for name in sorted(scenes)}
    tasks = [(name, [str(p) for p in scenes[name][0]], i, cfg) for name in sorted(scenes) for i in range(crops(name))]
    rows = {}
    with Pool(args.workers) as pool:
        for task, task_rows in zip(tasks, tqdm(pool.imap(make_crop, tasks), total=len(tasks), desc="crops")):
            rows.setdefault(task[0], []).extend(task_rows)
    splits = {"train": [r for n in train for r in rows[n]], "valid": [r for n in valid for r in rows[n]]}
    for split, split_rows in splits.items():
        write_csv(out / f"{split}.csv", split_rows)
    level_means = {
        lv: float(np.mean([float(r["score"]) for r in splits["train"] if r["level"] == lv]))
        for lv in cfg["levels"] + [KEEP]
        if any(r["level"] == lv for r in splits["train"])
    }
    command = "python -m pieanet.datasets.synthetic " + shlex.join(sys.argv[1:] if argv is None else argv)
    counts = {k: len(v) for k, v in splits.items()}
    write_readme(out, command, cfg, scenes, train, valid, counts, level_means)
    print(
        f"{out}: {counts['train']} train images ({', '.join(train)}), {counts['valid']} valid images "
        f"({', '.join(valid) or 'none'}), {len(tasks)} refs, {args.size}x{args.size} {args.format}, "
        f"{time.time() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
