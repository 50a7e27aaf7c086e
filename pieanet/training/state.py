"""A run's state on disk: its experiment folder (refused, made, cleared), last.pt (the whole training state, with the
random streams, for a bit-exact --resume) and what a checkpoint records about how it was made (provenance: the
resolved config, the commit of the checkout, a hash of the split files)."""

import hashlib
import json
import random
import re
from pathlib import Path

import numpy as np
import torch

from pieanet.training.errors import SetupError
from pieanet.utils.config import dump_config
from pieanet.utils.image_io import atomic_write, remove_orphan_temporaries

# what makes a folder hold a run; --overwrite removes them all (every weight file a run writes among them)
RUN_FILES = ("config.yaml", "train.log", "last.pt", "best.safetensors", "last.safetensors")
COUNTERS = ("epoch", "step_in_epoch", "global_step")  # last.pt's integer counters (and best_mae, a number)
# the checkout this code runs from (pieanet/training/state.py -> the folder holding pieanet/); installed, a
# site-packages folder without .git, so the commit is "unknown"
CHECKOUT = Path(__file__).resolve().parents[2]
UNKNOWN_COMMIT = "unknown"
OBJECT_ID = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")  # SHA-1 or SHA-256 object names


def rng_state():
    """Global RNG states as tensors and plain containers, so that torch.load(weights_only=True) reads them."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(path, state):
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def experiment_folder(config, resume, overwrite):
    """<output_dir>/<name>, checked (nothing is made here): resume needs last.pt; a folder that holds a run is
    refused unless resuming or overwriting."""
    out = Path(config["output_dir"]) / config["name"]
    last_path = out / "last.pt"
    held = [name for name in RUN_FILES if (out / name).exists()]
    if resume and not last_path.is_file():
        raise SetupError(
            f"--resume: {last_path} not found; "
            + (
                f"the run in {out} stopped before saving its first state, start it again with --overwrite"
                if held
                else "start without --resume"
            )
        )
    linked = [name for name in RUN_FILES if (out / name).is_symlink()]
    if linked:  # a planted link would send config.yaml, train.log or the weights elsewhere
        raise SetupError(
            f"{out}: {', '.join(linked)} is a symbolic link; a run's files are never written through "
            "one: remove it or choose another name"
        )
    if held and not resume and not overwrite:
        raise SetupError(
            f"{out} already holds a run ({', '.join(held)}); "
            + (
                "continue it with --resume, start it again with --overwrite"
                if "last.pt" in held
                else "it saved no training state (no last.pt), so start it again with --overwrite"
            )
            + ", or choose another name"
        )
    return out


def make_folder(out, config, overwrite):
    """Create the experiment folder (after every check has passed), clear a run being overwritten and the
    temporary files of killed processes, and write config.yaml. Returns the names of the orphans removed."""
    out.mkdir(parents=True, exist_ok=True)
    orphans = [p.name for p in remove_orphan_temporaries(out)]
    if overwrite:
        for path in [out / name for name in RUN_FILES] + list(out.glob("events.out.tfevents.*")):
            path.unlink(missing_ok=True)
    with atomic_write(out / "config.yaml") as tmp:
        tmp.write_text(dump_config(config))
    return orphans


def config_changes(saved, current, prefix=""):
    """'key: old -> new' for every value of ``current`` that differs from the ``saved`` config."""
    changes = []
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key, "(absent)"), current.get(key, "(absent)")
        if isinstance(old, dict) and isinstance(new, dict):
            changes += config_changes(old, new, f"{prefix}{key}.")
        elif old != new:
            changes.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return changes


def git_folder(checkout):
    """The git folder of ``checkout`` (.git, or where a worktree's .git file points), or None."""
    dot_git = Path(checkout) / ".git"
    if dot_git.is_dir():
        return dot_git
    if dot_git.is_file():
        text = dot_git.read_text(encoding="utf-8", errors="replace").strip()
        if text.startswith("gitdir:"):
            folder = (Path(checkout) / text.removeprefix("gitdir:").strip()).resolve()
            return folder if folder.is_dir() else None
    return None


def checkout_commit(checkout=CHECKOUT) -> str:
    """The commit checked out in ``checkout``, read from its git files (HEAD, the branch's ref, packed-refs; no
    program is started), or "unknown" outside a git checkout or when the files say nothing readable."""
    try:
        folder = git_folder(checkout)
        if folder is None:
            return UNKNOWN_COMMIT
        head = (folder / "HEAD").read_text(encoding="utf-8").strip()
        if OBJECT_ID.fullmatch(head):  # a detached HEAD
            return head
        if not head.startswith("ref:"):
            return UNKNOWN_COMMIT
        ref = head.removeprefix("ref:").strip()
        common = folder / "commondir"  # a worktree keeps the branches in the main repository's folder
        shared = (folder / common.read_text(encoding="utf-8").strip()).resolve() if common.is_file() else folder
        for base in (folder, shared):
            if (base / ref).is_file():
                value = (base / ref).read_text(encoding="utf-8").strip()
                return value if OBJECT_ID.fullmatch(value) else UNKNOWN_COMMIT
        packed = shared / "packed-refs"
        if packed.is_file():
            for line in packed.read_text(encoding="utf-8").splitlines():
                value, _, name = line.partition(" ")
                if name == ref and OBJECT_ID.fullmatch(value):
                    return value
    except (OSError, UnicodeDecodeError):
        pass
    return UNKNOWN_COMMIT


def split_files_sha256(split_files) -> str:
    """SHA-256 of the manifest of the split files a run read, in order (train, valid): one line per file,
    "<role> <SHA-256 of the file's bytes>", so the hash changes with any row of either list but not with where the
    files lie."""
    manifest = "".join(f"{role} {hashlib.sha256(Path(path).read_bytes()).hexdigest()}\n" for role, path in split_files)
    return hashlib.sha256(manifest.encode("utf-8")).hexdigest()


def provenance(config, split_files) -> dict:
    """What a checkpoint records about how it was made: the resolved training config (sorted JSON), the commit of
    the checkout and the hash of the split files (split_files_sha256 of [(role, path)])."""
    return {
        "train_config": json.dumps(config, sort_keys=True),
        "commit": checkout_commit(),
        "data_manifest_sha256": split_files_sha256(split_files),
    }
