"""What score.py computes: a photo's residual map (pieanet.runtime) judged by a rule base (rules.py: the YAML rule
language of configs/rules/, the measures and the score) over the photo's regions (regions.py: faces, bodies, subject,
background, point lights, found without learning). ``run`` is the whole command on score.py's parsed options.
"""

import json

import numpy as np

from pieanet import runtime
from pieanet.scoring.regions import Regions
from pieanet.scoring.rules import RuleBase, explain, load_rules
from pieanet.utils import cli
from pieanet.utils.alpha import judged_photo
from pieanet.utils.safety import shown

PROG = "score"


def score_photo(
    model,
    rules: RuleBase,
    photo: np.ndarray,
    threshold: float | None = None,
    size: int | None = None,
    tile: int | None = cli.DEFAULT_TILE,
) -> dict:
    """The rule base's result (see ``RuleBase.score``) for one photo (H x W x 3 float in [0, 1], or H x W x 4 with
    alpha: its transparent pixels are not judged, utils.alpha)."""
    photo, not_judged = judged_photo(photo)
    residual = runtime.predict(model, [photo], size=size, tile=tile)[0]
    if isinstance(residual, BaseException):
        raise residual
    return rules.score(residual, Regions(photo, residual.shape), photo, threshold, not_judged)


def run(args) -> int:
    """score.py's whole run on its parsed options ``args`` (inputs, rules, json, alpha and the common options); the
    exit code."""
    runtime.setup(args)
    rules = load_rules(args.rules)  # a RuleError ends the run with exit code 2 (utils.errors)
    errors: list[tuple] = []
    files = [path for _, paths in cli.check_inputs(args.inputs, errors=errors) for path in paths]
    model = runtime.open_model(args.checkpoint, args)

    results = []
    with cli.Progress(PROG, len(files)) as progress:
        for folder, reason in errors:
            progress.fail(folder, reason)
        for file in files:
            try:
                photo = runtime.read_image(file, keep_alpha=args.alpha == "judge")
                result = {"file": str(file), **score_photo(model, rules, photo, args.threshold, args.size, args.tile)}
            except (ValueError, RuntimeError, MemoryError) as e:  # ImageLoadError is a ValueError
                progress.fail(file, cli.one_line(e))
                continue
            finally:
                progress.update()
            results.append(result)
            if not args.json:
                print(
                    f"{shown(file)}: {result['score']:.0f}/100 ({rules.name}, {result['combine']} of "
                    f"{len(rules.criteria)} criteria, threshold {result['threshold']:g})",
                    flush=True,
                )
                for line in explain(result):
                    print(f"  {line}")
    if args.json:
        print(json.dumps(results, indent=2))
    return progress.exit_code
