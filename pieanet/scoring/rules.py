"""Rule bases: YAML files that turn a residual map into a 0-100 score with an explanation.

The language is documented in configs/rules/README.md. ``load_rules(path)`` checks a file against it and raises
``RuleError("<file>:<line>: <key>: <what is wrong>")``; ``RuleBase.score(residual, regions)`` returns the score, the
table row each criterion matched and the measured values.
"""

from dataclasses import dataclass
from pathlib import Path

from collections.abc import Callable

import numpy as np
import yaml
from yaml.constructor import SafeConstructor

from pieanet.utils.config import CONFIGS, shipped_file, shipped_names
from pieanet.utils.errors import EXIT_USAGE, PieaError
from pieanet.utils.exposure import DEFAULT_THRESHOLD, GREY_BLOWN_FROM, GREY_CRUSHED_UP_TO, correction_stops, gray
from pieanet.scoring.regions import REGION_NAMES
from pieanet.utils.safety import TextFileError, brief, first_line, read_text

RULES_DIR = CONFIGS / "rules"


def _fraction(mask):
    return float(mask.mean()) if mask.size else 0.0


def _clipped(pixels):
    luma = gray(pixels)
    return _fraction((luma <= GREY_CRUSHED_UP_TO) | (luma >= GREY_BLOWN_FROM))


def _stops(r, pixels):
    """The region's correction in stops (correction_stops); 0 when none of its pixels is unclipped."""
    return float(np.nan_to_num(correction_stops(pixels, r)))


# the correction in stops the map implies for a region (_stops), when it asks for more light, for less, either way:
# measure name -> function of that correction (RuleBase.score computes it once per region for all three)
FROM_STOPS: dict[str, Callable[[float], float]] = {
    "stops_under": lambda stops: max(0.0, stops),
    "stops_over": lambda stops: max(0.0, -stops),
    "stops_off": abs,
}
# measure name -> (function of (r, photo pixels (N x 3), threshold) over the region's pixels, is it a fraction of
# pixels); only the measures in NEEDS_PHOTO read the photo
MEASURES: dict[str, tuple[Callable[..., float], bool]] = {
    "over": (lambda r, p, t: _fraction(r < -t), True),
    "under": (lambda r, p, t: _fraction(r > t), True),
    "misexposed": (lambda r, p, t: _fraction(np.abs(r) > t), True),
    "clipped": (lambda r, p, t: _clipped(p), True),
    "mean_abs": (lambda r, p, t: float(np.abs(r).mean()), False),
    "mean_over": (lambda r, p, t: float(np.clip(-r, 0, None).mean()), False),
    "mean_under": (lambda r, p, t: float(np.clip(r, 0, None).mean()), False),
    "std": (lambda r, p, t: float(r.std()), False),
    **{name: (lambda r, p, t, of=of: of(_stops(r, p)), False) for name, of in FROM_STOPS.items()},
}
NEEDS_PHOTO = frozenset({"clipped", "stops_under", "stops_over", "stops_off"})
COMBINE = ("min", "weighted_mean")
TOP_KEYS = {"name", "description", "threshold", "combine", "criteria"}
CRITERION_KEYS = {"name", "region", "measure", "table", "weight", "if_empty"}


class RuleError(PieaError, ValueError):
    """A rule file that does not follow the rule language."""

    exit_code = EXIT_USAGE


@dataclass
class Row:
    max: float | None  # None: the catch-all last row
    score: float


@dataclass
class Criterion:
    name: str
    region: str
    measure: str
    table: list
    weight: float = 1.0
    if_empty: str = "skip"

    def match(self, value):
        """(index, row) of the first row whose max the value does not exceed."""
        for i, row in enumerate(self.table):
            if row.max is None or value <= row.max:
                return i, row
        raise AssertionError("the last row always matches")  # load_rules guarantees a catch-all row


@dataclass
class RuleBase:
    name: str
    description: str
    criteria: list
    combine: str = "min"
    threshold: float = DEFAULT_THRESHOLD
    source: str = ""

    def score(self, residual, regions, photo=None, threshold=None, not_judged=None):
        """Score a residual map (H x W). ``regions`` is a ``pieanet.scoring.regions.Regions`` of the photo; ``photo``
        (H x W x 3, same size) is needed only by the measures in NEEDS_PHOTO; ``not_judged`` (H x W bool, or None)
        pixels are left out of every region (transparent ones, utils/alpha.py). Returns a dict: score, combine,
        criteria (per criterion: region, measure, value, region_fraction, row, row_max, score, or skipped with a
        reason)."""
        t = self.threshold if threshold is None else threshold
        results, stops = [], {}  # stops: {region: its correction}, shared by the region's stops_* criteria
        for c in self.criteria:
            region = c.region
            mask = judged(regions.mask(region), not_judged)
            if not mask.any() and c.if_empty != "skip":
                region, mask = c.if_empty, judged(regions.mask(c.if_empty), not_judged)
            result = {"name": c.name, "region": region, "measure": c.measure, "region_fraction": _fraction(mask)}
            if not mask.any():
                results.append({**result, "skipped": f"no {c.region} found"})
                continue
            if c.measure in NEEDS_PHOTO and photo is None:
                raise ValueError(f"rule {self.name!r}: the {c.measure!r} measure needs the photo")
            function, _ = MEASURES[c.measure]
            whole = mask.all()  # the whole map as it is: no copy (a 12 MP photo's pixels take 0.1 s a selection)
            pixels = None if c.measure not in NEEDS_PHOTO else photo if whole else photo[mask]
            if c.measure in FROM_STOPS:
                if region not in stops:
                    stops[region] = _stops(residual if whole else residual[mask], pixels)
                value = FROM_STOPS[c.measure](stops[region])
            else:
                value = function(residual if whole else residual[mask], pixels, t)
            index, row = c.match(value)
            results.append(
                {**result, "value": value, "row": index + 1, "row_max": row.max, "score": row.score, "weight": c.weight}
            )
        scored = [r for r in results if "score" in r]
        if not scored:
            total = 100.0
        elif self.combine == "min":
            total = min(r["score"] for r in scored)
        else:
            total = sum(r["score"] * r["weight"] for r in scored) / sum(r["weight"] for r in scored)
        return {"rules": self.name, "score": float(total), "combine": self.combine, "threshold": t, "criteria": results}


def judged(mask, not_judged):
    """A region's mask less the pixels not judged (None: all judged)."""
    return mask if not_judged is None else mask & ~not_judged


def explain(result):
    """Human-readable lines: one per criterion, the measured value and the row it matched."""
    lines = []
    for c in result["criteria"]:
        head = f"{c['name']}: {c['measure']} in {c['region']}"
        if "skipped" in c:
            lines.append(f"{head}: skipped ({c['skipped']})")
            continue
        value, bound = format_value(c["measure"], c["value"]), c["row_max"]
        row = "otherwise" if bound is None else f"<= {format_value(c['measure'], bound)}"
        lines.append(f"{head} = {value} -> row {c['row']} ({row}) -> {c['score']:g}")
    return lines


def format_value(measure, value):
    if measure.startswith("stops"):
        return f"{value:.2f} stops"
    return f"{100 * value:.1f} %" if MEASURES[measure][1] else f"{value:.3f}"


def resolve_rules(name_or_path):
    """A rule file path from a shipped rule name (``landscape``) or a path."""
    path = shipped_file(name_or_path, RULES_DIR)
    if path is not None:
        return path
    if Path(name_or_path).suffix in (".yaml", ".yml"):
        return Path(name_or_path)  # reading it names the missing file
    shipped = shipped_names(RULES_DIR)
    raise RuleError(
        f"{name_or_path}: no such rule file and not a shipped rule name; expected a .yaml path or one of {shipped}"
    )


def load_rules(name_or_path):
    """Read and check a rule file; a mistake raises RuleError naming the file, the line and the key."""
    path = resolve_rules(name_or_path)
    try:  # a regular file of at most 1 MiB: a FIFO or /dev/zero is refused before anything is read
        text = read_text(path, "rule file")
    except TextFileError as e:
        raise RuleError(str(e)) from e
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise RuleError(f"{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from e
    except RecursionError:
        # no cause chained: a RecursionError's thousand frames say nothing more
        raise RuleError(f"{path}: nested too deeply to read; expected a rule file of a few levels") from None
    if root is None:
        raise RuleError(f"{path}:1: the file is empty; expected a mapping with a 'criteria' list")
    top = _Node(root, str(path), "").mapping(TOP_KEYS, required={"criteria"})
    criteria_node = top["criteria"]
    items = criteria_node.sequence()
    if not items:
        criteria_node.fail("needs at least one criterion")
    criteria = [_criterion(item) for item in items]
    combine = top["combine"].choice(COMBINE) if "combine" in top else "min"
    threshold = top["threshold"].number(low=0.0, high=1.0) if "threshold" in top else DEFAULT_THRESHOLD
    return RuleBase(
        name=top["name"].string() if "name" in top else path.stem,
        description=top["description"].string() if "description" in top else "",
        criteria=criteria,
        combine=combine,
        threshold=threshold,
        source=str(path),
    )


def _criterion(node):
    keys = node.mapping(CRITERION_KEYS, required={"measure", "table"})
    region = keys["region"].choice(REGION_NAMES) if "region" in keys else "all"
    measure = keys["measure"].choice(MEASURES)
    rows = keys["table"].sequence()
    if not rows:
        keys["table"].fail("needs at least one row")
    table = []
    for i, row_node in enumerate(rows):
        row = row_node.mapping({"max", "score"}, required={"score"})
        bound = row["max"].number() if "max" in row else None
        last = i == len(rows) - 1
        if bound is None and not last:
            row_node.fail("only the last row may leave out 'max' (it catches every larger value)")
        if bound is not None and last:
            row_node.fail("the last row must leave out 'max' so that every value matches a row")
        if bound is not None and table and table[-1].max is not None and bound <= table[-1].max:
            row["max"].fail(f"rows must be in increasing order of 'max' ({bound:g} after {table[-1].max:g})")
        table.append(Row(bound, row["score"].number(low=0.0, high=100.0)))
    if_empty = keys["if_empty"].choice(("skip",) + REGION_NAMES) if "if_empty" in keys else "skip"
    weight = keys["weight"].number(low=0.0) if "weight" in keys else 1.0
    if weight == 0:
        keys["weight"].fail("must be above 0 (remove the criterion to ignore it)")
    return Criterion(
        name=keys["name"].string() if "name" in keys else f"{measure} in {region}",
        region=region,
        measure=measure,
        table=table,
        weight=weight,
        if_empty=if_empty,
    )


class _Node:
    """A YAML node with its file, line and key path, for error messages."""

    def __init__(self, node, file, path):
        self.node, self.file, self.path = node, file, path

    def fail(self, message):
        line = self.node.start_mark.line + 1
        raise RuleError(f"{self.file}:{line}: {self.path or 'top level'}: {message}")

    def mapping(self, allowed, required=()):
        if not isinstance(self.node, yaml.MappingNode):
            self.fail(f"expected a mapping with keys {', '.join(sorted(allowed))}")
        children = {}
        for key_node, value_node in self.node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                _Node(key_node, self.file, self.path).fail("expected a key (text), got a list or mapping")
            key = key_node.value
            child = _Node(value_node, self.file, f"{self.path}.{key}" if self.path else key)
            if key not in allowed:
                _Node(key_node, self.file, child.path).fail(
                    f"unknown key; expected one of {', '.join(sorted(allowed))}"
                )
            if key in children:
                _Node(key_node, self.file, child.path).fail("duplicate key")
            children[key] = child
        missing = sorted(set(required) - set(children))
        if missing:
            self.fail(f"missing key '{missing[0]}'")
        return children

    def sequence(self):
        if not isinstance(self.node, yaml.SequenceNode):
            self.fail("expected a list")
        return [_Node(item, self.file, f"{self.path}[{i}]") for i, item in enumerate(self.node.value)]

    def scalar(self):
        if not isinstance(self.node, yaml.ScalarNode):
            self.fail("expected a single value")
        try:  # a tag the safe loader refuses (!!python/name:) or cannot convert (!!float abc, a bad !!timestamp)
            return SafeConstructor().construct_object(self.node)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError, KeyError) as e:
            problem = getattr(e, "problem", None) or first_line(e, None)
            self.fail(f"cannot read the value {brief(self.node.value)} ({self.node.tag}: {brief(problem)})")

    def number(self, low=None, high=None):
        value = self.scalar()
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            self.fail(f"expected a number, got {brief(self.node.value)}")
        if (low is not None and value < low) or (high is not None and value > high):
            self.fail(
                f"{value:g} is outside [{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
            )
        return float(value)

    def string(self):
        value = self.scalar()
        if not isinstance(value, str):
            self.fail(f"expected text, got {brief(self.node.value)}")
        return value

    def choice(self, options):
        value = self.scalar()
        if not isinstance(value, str) or value not in options:
            self.fail(f"unknown value {brief(value)}; expected one of {', '.join(options)}")
        return value
