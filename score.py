"""Rule-based exposure score (0-100) with an explanation, for a genre of photo.

    python score.py --rules landscape img_to_pred/
    python score.py --rules configs/rules/portrait.yaml photo.jpg --json

P-IEANet predicts the residual map; a rule base (configs/rules/<name>.yaml, language in configs/rules/README.md)
turns the fractions of over- and under-exposed pixels, globally and inside regions (faces, subject, background,
point lights; pieanet/scoring/regions.py), into a score (pieanet/scoring/). Each criterion prints the value it measured
and the table row it matched.
Options and exit codes are those of every tool (utils/cli.py): a photo that cannot be read or scored is named on
stderr and the others go on (exit 1); a bad option, input, rule file or checkpoint is exit 2 before any work.
"""

if __name__ == "__main__":  # first, before the slow imports: Ctrl-C while they run is exit 130, one line
    from pieanet.utils.startup import quiet_interrupts

    quiet_interrupts("score")
import argparse
import sys

from pieanet import scoring
from pieanet.utils import cli

PROG = scoring.PROG


def parse_args(argv):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", help="image files or folders")
    parser.add_argument(
        "--rules",
        required=True,
        help="a shipped rule name (landscape, portrait, street, night, ecommerce) or a rule file (required)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    cli.add_alpha_option(parser)
    cli.add_common_options(parser, threshold_default=None, threshold_help="the rule file's, else 0.1")
    return parser.parse_args(argv)


def run(argv):
    return scoring.run(parse_args(argv))


def main(argv=None):
    return cli.run(PROG, run, argv)


if __name__ == "__main__":
    sys.exit(main())
