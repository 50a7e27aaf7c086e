"""Rule-based exposure score (0-100) with an explanation, for a genre of photo.

    python score.py --rules landscape img_to_pred/
    python score.py --rules configs/rules/portrait.yaml photo.jpg --json

P-IEANet predicts the residual map; a rule base (configs/rules/<name>.yaml, language in configs/rules/README.md)
turns the fractions of over- and under-exposed pixels, globally and inside regions (faces, subject, background,
point lights; utils/regions.py), into a score. Each criterion prints the value it measured and the table row it matched.
Options and exit codes are those of every tool (utils/cli.py): a photo that cannot be read or scored is named on
stderr and the others go on (exit 1); a bad option, input, rule file or checkpoint is exit 2 before any work.
"""
if __name__ == "__main__":  # first, before the slow imports: Ctrl-C while they run is exit 130, one line
    from pieanet.utils.startup import quiet_interrupts
    quiet_interrupts("score")
import argparse
import json
import sys

from pieanet import runtime
from pieanet.utils import cli
from pieanet.utils.alpha import judged_photo
from pieanet.utils.safety import shown
from pieanet.utils.regions import Regions
from pieanet.utils.rules import explain, load_rules

PROG = "score"


def score_photo(model, rules, photo, threshold=None, size=None, tile=cli.DEFAULT_TILE):
    """The rule base's result (see ``RuleBase.score``) for one photo (H x W x 3 float in [0, 1], or H x W x 4 with
    alpha: its transparent pixels are not judged, utils.alpha)."""
    photo, not_judged = judged_photo(photo)
    residual = runtime.predict(model, [photo], size=size, tile=tile)[0]
    if isinstance(residual, BaseException):
        raise residual
    return rules.score(residual, Regions(photo, residual.shape), photo, threshold, not_judged)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", help="image files or folders")
    parser.add_argument("--rules", required=True, help="a shipped rule name (landscape, portrait, street, night, "
                                                       "ecommerce) or a rule file (required)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    cli.add_alpha_option(parser)
    cli.add_common_options(parser, threshold_default=None, threshold_help="the rule file's, else 0.1")
    return parser.parse_args(argv)


def run(argv):
    args = parse_args(argv)
    runtime.setup(args)
    rules = load_rules(args.rules)  # a RuleError ends the run with exit code 2 (utils.errors)
    errors = []
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
                print(f"{shown(file)}: {result['score']:.0f}/100 ({rules.name}, {result['combine']} of "
                      f"{len(rules.criteria)} criteria, threshold {result['threshold']:g})", flush=True)
                for line in explain(result):
                    print(f"  {line}")
    if args.json:
        print(json.dumps(results, indent=2))
    return progress.exit_code


def main(argv=None):
    return cli.run(PROG, run, argv)


if __name__ == "__main__":
    sys.exit(main())
