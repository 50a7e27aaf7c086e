"""YAML configs with inheritance, dotted command-line overrides and a schema.

A config file may name a parent with ``base: other.yaml`` (a path relative to the file); parents are read recursively
and deep-merged, the child winning key by key. Overrides look like ``train.lr=1e-4`` or ``model.use_dwt=false``; the
value is parsed as YAML (safe loader; ``1e-4`` is a float).

A schema is a dataclass whose fields are the config's keys (``key``: default, doc line, range, choices) and whose
dataclass-typed fields are its sections (``section``); the field's annotation is the value's type (``int``,
``float``, ``bool``, ``str``, ``X | None``, ``Literal[...]``, ``tuple[float, float]``, ``list[str]`` (one item or
more), ``dict[str, Form]`` where a Form is a dataclass of required keys, ``dict`` for a section another module
checks). ``load_config`` checks every
file of a ``base:`` chain and every override against it where it is written (so an error names the file or the
override), fills the defaults for what no file sets, and returns a plain dict; ``schema_yaml`` writes the defaults and
doc lines as a YAML file. The training config's schema is ``utils.train_config.TrainConfig``.
"""

import copy
import dataclasses
import difflib
import math
import re
import types
import typing
from pathlib import Path

import yaml

from pieanet.utils.errors import EXIT_USAGE, PieaError
from pieanet.utils.safety import TextFileError, brief, first_line, read_text


class Loader(yaml.SafeLoader):
    """yaml.SafeLoader that also reads exponent floats without a dot (``1e-4``), which YAML 1.1 leaves as strings."""


Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


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


def load_yaml(path, check=None, _chain=()):
    """The config at ``path`` with its ``base:`` chain resolved (the ``base`` key itself is dropped). ``check(part,
    path)``, when given, is called with each file's own keys before they are merged."""
    try:
        path = Path(path).resolve()
        found = path.exists()
    except (OSError, ValueError) as e:  # a NUL byte, a name too long
        raise ConfigError(f"{brief(str(path))}: not a usable config path ({e})") from e
    if path in _chain:
        raise ConfigError(f"{path}: circular 'base:' chain ({' -> '.join(p.name for p in (*_chain, path))})")
    if not found:
        raise ConfigError(f"{path}: config file not found" + (f" (named as base by {_chain[-1]})" if _chain else ""))
    try:
        config = yaml.load(read_text(path, "config file"), Loader) or {}
    except TextFileError as e:
        raise ConfigError(str(e)) from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({first_line(e)})") from e
    except RecursionError:  # its thousands of frames would bury the message under --debug: no cause kept
        raise ConfigError(f"{path}: nested too deeply to read; expected a config of a few levels") from None
    except (ValueError, TypeError, OverflowError) as e:  # a value the constructors refuse (an int of 5000 digits)
        raise ConfigError(f"{path}: a value cannot be read ({first_line(e, 120)})") from e
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    base = config.pop("base", None)
    if base is not None and (not isinstance(base, str) or not base.strip()):
        raise ConfigError(f"{path}: 'base' is {brief(base)}; expected the path of a parent config file (text)")
    if check is not None:
        check(config, path)
    if base is None:
        return config
    return deep_merge(load_yaml(path.parent / base, check, (*_chain, path)), config)


def parse_override(text):
    """``"train.lr=1e-4"`` -> (["train", "lr"], 0.0001)."""
    key, sep, value = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {brief(text)}: expected dotted.key=value, e.g. train.lr=1e-4")
    try:
        return key.split("."), yaml.load(value, Loader)
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as e:
        raise ConfigError(f"override {brief(text)}: the value is not valid YAML") from e
    except RecursionError:  # as in load_yaml: no cause kept
        raise ConfigError(f"override {brief(text)}: the value is not valid YAML") from None


def dump_config(config):
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


# ------------------------------------------------------------------ schemas
def key(
    default=dataclasses.MISSING,
    doc="",
    *,
    low=None,
    high=None,
    low_open=False,
    high_open=False,
    choices=None,
    rule=None,
    loader=False,
):
    """A schema field: its ``default`` (none: the key is required, in a Form), a ``doc`` line, the range of a number
    ([low, high]; ``low_open``/``high_open`` leave an end out; a list's items each), the ``choices`` of a string,
    ``rule(value)``: a further check of a value of the right type, returning what was expected or None; ``loader``:
    a key the file loader consumes (``base``), never part of the resolved config."""
    meta = dict(
        doc=doc, low=low, high=high, low_open=low_open, high_open=high_open, choices=choices, rule=rule, loader=loader
    )
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(schema, doc=""):
    """A schema field holding a section: a mapping whose own keys ``schema`` (a dataclass) declares."""
    return dataclasses.field(default_factory=schema, metadata=dict(doc=doc, section=True))


def is_section(field):
    return field.metadata.get("section", False)


def schema_fields(schema):
    """{key: field} of a schema (a dataclass)."""
    return {field.name: field for field in dataclasses.fields(schema)}


def defaults(schema):
    """The resolved config of a file that sets nothing: every default, sections as nested dicts."""
    values = {}
    for name, field in schema_fields(schema).items():
        if is_section(field):
            values[name] = defaults(field.type)
        elif not field.metadata.get("loader"):
            values[name] = field.default_factory() if field.default is dataclasses.MISSING else field.default
    return values


def _optional(annotation):
    """(the type, whether null is allowed) of ``X | None``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(args) < len(typing.get_args(annotation)):
            return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), True
    return annotation, False


def _bounds(meta):
    low, high = meta.get("low"), meta.get("high")
    if low is not None and high is not None:
        return f" in {'(' if meta['low_open'] else '['}{low}, {high}{')' if meta['high_open'] else ']'}"
    if low is not None:
        return f" {'>' if meta['low_open'] else '>='} {low}"
    if high is not None:
        return f" {'<' if meta['high_open'] else '<='} {high}"
    return ""


def expected(annotation, meta=None):
    """What a value of this type (and ``meta``'s range or choices) is, in words: 'an integer >= 1 or null'."""
    meta = meta or {}
    annotation, null = _optional(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is bool:
        words = "true or false"
    elif annotation is int:
        words = "an integer" + _bounds(meta)
    elif annotation is float:
        words = "a finite number" + _bounds(meta)
    elif annotation is str:
        words = f"one of {', '.join(meta['choices'])}" if meta.get("choices") else "a non-empty string"
    elif origin is typing.Literal:
        words = " or ".join(yaml.safe_dump(arg, default_flow_style=True).removesuffix("\n...\n") for arg in args)
    elif origin is tuple:
        words = f"a list of {len(args)} items, each {expected(args[0], meta)}"
    elif origin is list:
        words = f"a list of one item or more, each {expected(args[0], meta)}"
    elif origin is dict:
        words = f"a mapping of names to {expected(args[1])}"
    elif origin in (typing.Union, types.UnionType):
        words = " or ".join(expected(arg) for arg in args)
    elif dataclasses.is_dataclass(annotation):  # a Form: exactly its keys, Literal ones shown with their value
        keys = [
            f"{f.name}: {expected(f.type)}" if typing.get_origin(f.type) is typing.Literal else f.name
            for f in dataclasses.fields(annotation)
        ]
        words = "{" + ", ".join(keys) + "}" + (f" ({annotation.__doc__.strip()})" if annotation.__doc__ else "")
    elif annotation is dict:
        words = "a mapping"
    else:
        raise TypeError(f"schema type {annotation!r} is not one utils.config checks")
    return words + (" or null" if null else "")


def _finite(value):
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond any float: no count or rate is that large
        return False


def _fits(value, annotation, meta):
    annotation, null = _optional(annotation)
    if value is None:
        return null
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation in (int, float):
        if (
            isinstance(value, bool)
            or not isinstance(value, int if annotation is int else (int, float))
            or not _finite(value)
        ):
            return False
        low, high = meta.get("low"), meta.get("high")
        return not (
            (low is not None and (value <= low if meta["low_open"] else value < low))
            or (high is not None and (value >= high if meta["high_open"] else value > high))
        )
    if annotation is str:
        return isinstance(value, str) and bool(value.strip()) and (not meta.get("choices") or value in meta["choices"])
    if origin is typing.Literal:
        return any(value is arg or (type(value) is type(arg) and value == arg) for arg in args)
    if origin is tuple:
        return (
            isinstance(value, list) and len(value) == len(args) and all(_fits(v, a, meta) for v, a in zip(value, args))
        )
    if origin is list:
        return isinstance(value, list) and len(value) > 0 and all(_fits(v, args[0], meta) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            isinstance(k, str) and k.strip() and _fits(v, args[1], {}) for k, v in value.items()
        )
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg, meta) for arg in args)
    if dataclasses.is_dataclass(annotation):
        fields = schema_fields(annotation)
        return (
            isinstance(value, dict)
            and set(value) == set(fields)
            and all(_fits(value[k], f.type, f.metadata) for k, f in fields.items())
        )
    return isinstance(value, dict)  # a section another module checks


def check_value(value, field, dotted, where):
    """Raise ConfigError if ``value`` is not what ``field`` declares; in a mapping of names to forms, the entry that
    is not is named."""
    meta = field.metadata
    annotation = _optional(field.type)[0]
    if (
        typing.get_origin(annotation) is dict
        and isinstance(value, dict)
        and all(isinstance(name, str) and name.strip() for name in value)
    ):
        form = typing.get_args(annotation)[1]
        for name, entry in value.items():
            if not _fits(entry, form, {}):
                raise ConfigError(
                    f"{where}: config key {dotted + '.' + name!r} is {brief(entry)}; expected {expected(form)}"
                )
    problem = None if _fits(value, field.type, meta) else f"expected {expected(field.type, meta)}"
    if problem is None and value is not None and meta.get("rule"):
        problem = meta["rule"](value)
    if problem:
        raise ConfigError(f"{where}: config key {dotted!r} is {brief(value)}; {problem}")


def unknown_key(dotted, known, where):
    """A ConfigError naming an unknown key, with the nearest known one when there is one."""
    prefix, _, name = dotted.rpartition(".")
    near = difflib.get_close_matches(str(name), known, n=1)
    hint = (
        f"did you mean {(prefix + '.' if prefix else '') + near[0]!r}?"
        if near
        else f"known keys{' in ' + prefix if prefix else ''}: {', '.join(known)}"
    )
    return ConfigError(f"{where}: unknown config key {dotted!r}; {hint}")


def check_part(part, schema, where, resolved=None, prefix=""):
    """Raise ConfigError naming (with ``where``: the file or override) the first key of ``part`` that ``schema``
    lacks, or the first value it refuses; ``part`` may set any subset of the keys. Values are taken from
    ``resolved`` when given (an override below a mapping-valued key is checked by the mapping it makes)."""
    fields = schema_fields(schema)
    for name, value in part.items():
        dotted = f"{prefix}{name}"
        field = fields.get(name)
        if field is None or field.metadata.get("loader"):
            if field is not None:  # base: only in a file
                raise ConfigError(f"{where}: {dotted!r} can only be set in a config file")
            raise unknown_key(dotted, sorted(n for n, f in fields.items() if not f.metadata.get("loader")), where)
        if is_section(field):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: config key {dotted!r} must be a section (a mapping), got {brief(value)}")
            check_part(value, field.type, where, resolved[name] if resolved is not None else None, f"{dotted}.")
        else:
            check_value(resolved[name] if resolved is not None else value, field, dotted, where)


def apply_override(config, text, schema):
    """A new config with the override ``dotted.key=value`` set and checked against ``schema``: a key replaces its
    value (a mapping-valued key too: ``data.extra_valid={}`` empties it); a section sets the keys it names."""
    keys, value = parse_override(text)
    where = f"override {brief(text)}"
    config = copy.deepcopy(config)
    node, fields = config, schema_fields(schema)
    for i, name in enumerate(keys[:-1]):
        dotted = ".".join(keys[: i + 1])
        if fields is not None and name not in fields:
            raise unknown_key(dotted, sorted(n for n, f in fields.items() if not f.metadata.get("loader")), where)
        if name not in node:
            raise ConfigError(f"{where}: unknown config key {dotted!r}")
        if not isinstance(node[name], dict):
            raise ConfigError(f"{where}: {dotted} is not a section of the config")
        fields = schema_fields(fields[name].type) if fields is not None and is_section(fields[name]) else None
        node = node[name]
    if isinstance(value, dict) and fields is not None and keys[-1] in fields and is_section(fields[keys[-1]]):
        node[keys[-1]] = deep_merge(node[keys[-1]], value)
    else:
        node[keys[-1]] = value
    part = value  # the override as a one-key config, checked against the values it leaves
    for name in reversed(keys):
        part = {name: part}
    check_part(part, schema, where, resolved=config)
    return config


def load_config(path, schema, overrides=()):
    """The config at ``path`` (``base:`` chain resolved, every file checked against ``schema``), with the schema's
    defaults for what no file sets and ``overrides`` applied: a plain dict of every key."""
    config = load_yaml(path, check=lambda part, where: check_part(part, schema, where))
    config = deep_merge(defaults(schema), config)
    for text in overrides:
        config = apply_override(config, text, schema)
    return config


def schema_yaml(schema, header="", width=120, column=23):
    """A YAML file of ``schema``'s defaults, each key with its doc line as a comment (wrapped at ``width``)."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]

    def scalar(value):
        return yaml.safe_dump(value, default_flow_style=True, width=1 << 16).removesuffix("\n...\n").strip()

    def emit(text, doc):
        if not doc:
            lines.append(text)
            return
        words, first = doc.split(), True
        while words:
            start = text if first else ""
            pad = max(column, len(start) + 1)
            line = start.ljust(pad) + "#"
            while words and (len(line) + 1 + len(words[0]) <= width or line.endswith("#")):
                line += " " + words.pop(0)
            lines.append(line)
            first = False

    def walk(schema, indent):
        for name, field in schema_fields(schema).items():
            doc = field.metadata.get("doc", "")
            if is_section(field):
                lines.append("")
                emit(f"{indent}{name}:", doc)
                walk(field.type, indent + "  ")
            elif field.metadata.get("loader"):  # not a value: shown as a comment
                emit(f"{indent}# {name}:", doc)
            else:
                value = field.default_factory() if field.default is dataclasses.MISSING else field.default
                if isinstance(value, dict) and value:
                    lines.append("")
                    emit(f"{indent}{name}:", doc)
                    for k, v in value.items():
                        lines.append(f"{indent}  {k}: {scalar(v)}")
                else:
                    emit(f"{indent}{name}: {scalar(value)}", doc)

    walk(schema, "")
    return "\n".join(lines) + "\n"
