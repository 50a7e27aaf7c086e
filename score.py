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

from models import CheckpointError, load_model
from utils.image_io import ImageLoadError, list_images, load_image
from utils.inference import predict_residual
from utils.regions import Regions
from utils.rules import RuleError, explain, load_rules

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "pieanet_synth.safetensors"


def score_photo(model, rules, photo, threshold=None, size=None, tile=None):
    """The rule base's result (see ``RuleBase.score``) for one photo (H x W x 3 float in [0, 1])."""
    residual = predict_residual(model, photo, size=size, tile=tile)
    return rules.score(residual, Regions(photo, residual.shape), photo, threshold)


def open_checkpoint(path, device, prog="score"):
    """The model, or None after one sentence on stderr saying what is missing or wrong."""
    if path is None and not DEFAULT_CHECKPOINT.is_file():
        print(f"{prog}: the default checkpoint {DEFAULT_CHECKPOINT} is missing; train it with "
              "`python train_wavelet.py --config configs/pieanet_synth.yaml` or pass --checkpoint "
              "../shared/official/wavelet_epoch_2_val_loss0.03022034629540784.pth", file=sys.stderr)
        return None
    try:
        return load_model(path or DEFAULT_CHECKPOINT, device=device)
    except CheckpointError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return None


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
    model = open_checkpoint(args.checkpoint, args.device)
    if model is None:
        return 2

    failed, results = 0, []
    for source in args.inputs:
        try:
            files = list_images(source)
        except FileNotFoundError as e:
            print(f"score: {e}", file=sys.stderr)
            failed += 1
            continue
        for file in files:
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
