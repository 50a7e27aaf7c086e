"""Do the tests catch a broken schedule, EMA, resume order, guided filter, over/under count, scene grid or tile margin?

    python -m tests.audits.mutations    # from the checkout's root; one line per mutation: CAUGHT or MISSED, ...

Each mutation is applied alone to a fresh copy of the committed tree (a temporary `git worktree`, removed after) and
the tests named for it are run there; a mutation they do not turn red is a hole in the suite. Exit code 1 when any is
missed or no longer applies (the code it mutates changed: update the list). Takes about a minute on 2 cores.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TRAIN = "tests/test_train.py::"
# (what breaks, file, exact text, its replacement, the tests that must fail)
MUTATIONS = [
    (
        "warm-up off by one (step / warmup)",
        "pieanet/training/run.py",
        'return (step + 1) / opts["warmup_steps"]',
        'return step / opts["warmup_steps"]',
        [TRAIN + "test_cosine_schedule_hand_computed", TRAIN + "test_step_schedule_hand_computed"],
    ),
    (
        "warm-up off by one (<=)",
        "pieanet/training/run.py",
        'if step < opts["warmup_steps"]:',
        'if step <= opts["warmup_steps"]:',
        [TRAIN + "test_cosine_schedule_hand_computed", TRAIN + "test_step_schedule_hand_computed"],
    ),
    (
        "cosine schedule loses its floor",
        "pieanet/training/run.py",
        'return opts["lr_gamma"] + (1 - opts["lr_gamma"]) * 0.5 * (1 + math.cos(math.pi * progress))',
        "return 0.5 * (1 + math.cos(math.pi * progress))",
        [TRAIN + "test_cosine_schedule_hand_computed"],
    ),
    (
        "EMA weights not used for validation and saving",
        "pieanet/training/run.py",
        "judged = self.ema.module if self.ema is not None else self.model",
        "judged = self.model",
        [TRAIN + "test_steps_use_the_scheduled_lr_and_validation_and_saving_use_the_ema"],
    ),
    (
        "resume under torchrun skips twice the samples",
        "pieanet/training/run.py",
        'skip=self.step_in_epoch * opts["batch_size"])',
        'skip=self.step_in_epoch * opts["batch_size"] * 2)',
        [TRAIN + "test_resume_as_one_of_two_processes_continues_its_sample_order"],
    ),
    (
        "guided-filter radius 1 -> 4",
        "models/full_size.py",
        "GUIDED_RADIUS = 1",
        "GUIDED_RADIUS = 4",
        ["tests/test_inference.py::test_guided_upsample_default_window_hand_computed"],
    ),
    (
        "pct_over and pct_under swapped",
        "utils/exposure.py",
        "over += np.count_nonzero(strip < below)",
        "over += np.count_nonzero(strip > above)",
        ["tests/test_exposure.py::test_residual_stats_tells_over_from_under"],
    ),
    (
        "scene-feature grid shifted by half a cell",
        "models/pieanet.py",
        "rows = (top + (torch.arange(shape[0], device=scene.device, dtype=scene.dtype) + 0.5) * stride)",
        "rows = (top + (torch.arange(shape[0], device=scene.device, dtype=scene.dtype) + 1.0) * stride)",
        ["tests/test_golden.py"],
    ),
    (
        "default tile margin a third of the receptive radius",
        "models/contract.py",
        "return int(radius) if math.isfinite(radius) else 0",
        "return int(radius) // 3 if math.isfinite(radius) else 0",
        ["tests/test_golden.py"],
    ),
]


def run(mutation, workdir):
    name, file, old, new, tests = mutation
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(workdir), "HEAD"], check=True)
    try:
        path = workdir / file
        text = path.read_text(encoding="utf-8")
        if text.count(old) != 1:
            return "GONE", f"{file} holds the text to mutate {text.count(old)} times, expected once"
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
            cwd=workdir,
            capture_output=True,
            text=True,
        )
        lines = done.stdout.strip().splitlines()
        return ("CAUGHT" if done.returncode else "MISSED"), (lines[-1] if lines else done.stderr.strip()[-200:])
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(workdir)], check=True)


def main(argv=None):
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    missed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for mutation in MUTATIONS:
            verdict, outcome = run(mutation, Path(tmp) / "tree")
            missed += verdict != "CAUGHT"
            print(
                f"{verdict:6s} | {mutation[0]} | {' '.join(t.split('/')[-1] for t in mutation[4])} | {outcome}",
                flush=True,
            )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
