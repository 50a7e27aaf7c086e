"""YAML configs with inheritance and dotted command-line overrides.

A config file may name a parent with ``base: other.yaml`` (a path relative to the file); parents are read recursively
and deep-merged, the child winning key by key. Overrides look like ``train.lr=1e-4`` or ``model.use_dwt=false``; the
value is parsed as YAML (safe loader; ``1e-4`` is a float). ``check_keys`` rejects any key the reference config does not have;
``check_values`` checks each value's type and range against a schema of small checks (``integer``, ``number``, ...).
"""
import copy
import math
import re
from pathlib import Path

import yaml

from pieanet.utils.errors import EXIT_USAGE, PieaError
from pieanet.utils.safety import TextFileError, brief, first_line, read_text


class Loader(yaml.SafeLoader):
    """yaml.SafeLoader that also reads exponent floats without a dot (``1e-4``), which YAML 1.1 leaves as strings."""


Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


# the shipped configs: configs/ of the checkout, or pieanet/configs/ of an installed copy
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


class ConfigError(PieaError, ValueError):
    """A config file or override that cannot be used; the message names the file or key."""
    exit_code = EXIT_USAGE


def shipped_file(name_or_path, folder=CONFIGS):
    """The YAML file ``name_or_path`` means: the path itself when it exists, else the shipped file in ``folder``
    (configs/ or configs/rules/) given by its name (``pieanet_synth``, ``pieanet_synth.yaml``) or by its path in the
    project (``configs/pieanet_synth.yaml``, from any folder: an installed copy's commands find the shipped configs
    by name); None when neither is a file. Any other path that does not exist is not replaced."""
    path = Path(name_or_path)
    if path.exists():
        return path
    in_project = folder.relative_to(folder.parents[1]).as_posix() if folder.name == "rules" else folder.name
    if len(path.parts) > 1 and path.parent.as_posix() != in_project:
        return None
    candidate = folder / (path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml")
    return candidate if candidate.is_file() else None


def shipped_names(folder=CONFIGS):
    """The names of the shipped YAML files in ``folder``, for messages."""
    return ", ".join(sorted(path.stem for path in folder.glob("*.yaml")))


def deep_merge(base, update):
    """A new dict: ``base`` with ``update`` merged in; nested dicts merge, everything else is replaced."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_yaml(path, _chain=()):
    """The config at ``path`` with its ``base:`` chain resolved (the ``base`` key itself is dropped)."""
    try:
        path = Path(path).resolve()
        found = path.exists()
    except (OSError, ValueError) as e:  # a NUL byte, a name too long
        raise ConfigError(f"{brief(str(path))}: not a usable config path ({e})") from None
    if path in _chain:
        raise ConfigError(f"{path}: circular 'base:' chain ({' -> '.join(p.name for p in (*_chain, path))})")
    if not found:
        raise ConfigError(f"{path}: config file not found" + (f" (named as base by {_chain[-1]})" if _chain else ""))
    try:
        config = yaml.load(read_text(path, "config file"), Loader) or {}
    except TextFileError as e:
        raise ConfigError(str(e)) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({first_line(e)})") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to read; expected a config of a few levels") from None
    except (ValueError, TypeError, OverflowError) as e:  # a value the constructors refuse (an int of 5000 digits)
        raise ConfigError(f"{path}: a value cannot be read ({first_line(e, 120)})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    base = config.pop("base", None)
    if base is None:
        return config
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{path}: 'base' is {brief(base)}; expected the path of a parent config file (text)")
    return deep_merge(load_yaml(path.parent / base, (*_chain, path)), config)


def parse_override(text):
    """``"train.lr=1e-4"`` -> (["train", "lr"], 0.0001)."""
    key, sep, value = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {brief(text)}: expected dotted.key=value, e.g. train.lr=1e-4")
    try:
        return key.split("."), yaml.load(value, Loader)
    except (yaml.YAMLError, RecursionError, ValueError, TypeError, OverflowError):
        raise ConfigError(f"override {brief(text)}: the value is not valid YAML") from None


def apply_overrides(config, overrides):
    """A new config with each ``dotted.key=value`` of ``overrides`` set."""
    config = copy.deepcopy(config)
    for text in overrides:
        keys, value = parse_override(text)
        node = config
        for i, key in enumerate(keys[:-1]):
            if key not in node:
                raise ConfigError(f"override {brief(text)}: unknown config key {'.'.join(keys[:i + 1])!r}")
            if not isinstance(node[key], dict):
                raise ConfigError(f"override {brief(text)}: {'.'.join(keys[:i + 1])} is not a section of the config")
            node = node[key]
        node[keys[-1]] = value
    return config


def check_keys(config, reference, open_sections=(), prefix=""):
    """Raise ConfigError naming the first key of ``config`` that ``reference`` lacks, or a value where ``reference``
    has a section. Sections listed in
    ``open_sections`` (dotted names) are not checked here; their owner validates them."""
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if key not in reference:
            known = ", ".join(sorted(reference))
            raise ConfigError(f"unknown config key {dotted!r}; known keys{' in ' + prefix[:-1] if prefix else ''}: "
                              f"{known}")
        if isinstance(reference[key], dict) and not isinstance(value, dict):  # an open section too (model=[1])
            raise ConfigError(f"config key {dotted!r} must be a section (a mapping), got {brief(value)}")
        if dotted in open_sections:
            continue
        if isinstance(reference[key], dict):
            check_keys(value, reference[key], open_sections, f"{dotted}.")


def load_config(path, overrides=(), reference=None, open_sections=()):
    """Resolve ``path`` (inheritance), apply ``overrides``, and check every key against ``reference`` if given."""
    config = apply_overrides(load_yaml(path), overrides)
    if reference is not None:
        check_keys(config, reference, open_sections)
    return config


def dump_config(config):
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


# ------------------------------------------------------------------ value checks
# A schema maps dotted keys to checks; a check returns None for a good value, else what was expected. Every value is
# checked before anything is read or made, so a bad value is one sentence at the start, never a traceback later.
def integer(low=None, high=None, null=False):
    def check(value):
        if value is None and null:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low) \
                or (high is not None and value > high):
            bounds = (f" >= {low}" if high is None else f" in [{low}, {high}]") if low is not None else ""
            return f"expected an integer{bounds}" + (" or null" if null else "")
        return None
    return check


def number(low=None, high=None, above=False, null=False):
    """A finite int or float in [low, high] (``above``: strictly above low)."""
    def check(value):
        if value is None and null:
            return None
        bad = isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
        if not bad and low is not None:
            bad = value <= low if above else value < low
        if not bad and high is not None:
            bad = value > high
        if bad:
            bounds = ""
            if low is not None:
                bounds = f" {'>' if above else '>='} {low}" + (f" and <= {high}" if high is not None else "")
            return f"expected a finite number{bounds}" + (" or null" if null else "")
        return None
    return check


def boolean(value):
    return None if isinstance(value, bool) else "expected true or false"


def text(null=False):
    def check(value):
        if (value is None and null) or (isinstance(value, str) and value.strip()):
            return None
        return "expected a non-empty string" + (" or null" if null else "")
    return check


def choice(options):
    def check(value):
        return None if isinstance(value, str) and value in options else f"expected one of {', '.join(options)}"
    return check


def get_dotted(config, dotted):
    node = config
    for key in dotted.split("."):
        node = node[key]
    return node


def check_values(config, schema):
    """Raise ConfigError naming the first value that its check in ``schema`` ({dotted key: check}) refuses."""
    for dotted, check in schema.items():
        value = get_dotted(config, dotted)
        problem = check(value)
        if problem:
            raise ConfigError(f"config key {dotted!r} is {brief(value)}; {problem}")
