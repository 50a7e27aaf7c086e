"""Rule-based exposure score (0-100) with an explanation, for a genre of photo.

    python score.py --rules landscape img_to_pred/
    python score.py --rules configs/rules/portrait.yaml photo.jpg --json

P-IEANet predicts the residual map; a rule base (configs/rules/<name>.yaml, language in configs/rules/README.md)
turns the fractions of over- and under-exposed pixels, globally and inside regions (faces, subject, background,
point lights; utils/regions.py), into a score. Each criterion prints the value it measured and the table row it matched.
"""
import argparse
import json
import sys
from pathlib import Path

from models import DEFAULT_CHECKPOINT, open_model
from utils.image_io import ImageLoadError, list_images, load_image
from utils.inference import predict_residual
from utils.regions import Regions
from utils.rules import RuleError, explain, load_rules


def score_photo(model, rules, photo, threshold=None, size=None, tile=None):
    """The rule base's result (see ``RuleBase.score``) for one photo (H x W x 3 float in [0, 1])."""
    residual = predict_residual(model, photo, size=size, tile=tile)
    return rules.score(residual, Regions(photo, residual.shape), photo, threshold)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", help="image files or folders")
    parser.add_argument("--rules", required=True, help="a shipped rule name (landscape, portrait, street, night, "
                                                       "ecommerce) or a rule file")
    parser.add_argument("--checkpoint", help=f"P-IEANet weights (default {DEFAULT_CHECKPOINT.name})")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.add_argument("--threshold", type=float, help="|r| above which a pixel is mis-exposed "
                                                        "(default: the rule file's, else 0.1)")
    parser.add_argument("--size", type=int, help="working resolution (longer side) for large photos")
    parser.add_argument("--tile", type=int, help="native-resolution inference in tiles of this size")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    args = parser.parse_args(argv)

    try:
        rules = load_rules(args.rules)
    except RuleError as e:
        print(f"score: {e}", file=sys.stderr)
        return 2
    model = open_model(args.checkpoint or DEFAULT_CHECKPOINT, args.device, prog="score")
    if model is None:
        return 2

    failed, results = 0, []
    for source in args.inputs:
        # a folder is listed; anything else goes to load_image, which names a missing or unreadable file
        for file in list_images(source) if Path(source).is_dir() else [Path(source)]:
            try:
                photo = load_image(file)
            except ImageLoadError as e:
                print(f"score: {e}", file=sys.stderr)
                failed += 1
                continue
            result = {"file": str(file), **score_photo(model, rules, photo, args.threshold, args.size, args.tile)}
            results.append(result)
            if not args.json:
                print(f"{file}: {result['score']:.0f}/100 ({rules.name}, {result['combine']} of "
                      f"{len(rules.criteria)} criteria, threshold {result['threshold']:g})")
                for line in explain(result):
                    print(f"  {line}")
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
