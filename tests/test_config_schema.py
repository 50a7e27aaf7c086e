"""The training config's one schema (pieanet.training.config.TrainConfig): defaults, types and ranges, unknown keys with
the file that sets them, configs without `base:`, and configs/base.yaml written from it."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pieanet import train_wavelet
from pieanet.training import config as train_config
from pieanet.training import run as training_run
from pieanet.utils.config import ConfigError, load_yaml

ROOT = Path(__file__).resolve().parents[1]
# what configs/base.yaml resolved to before the schema existed (tests/data/resolved_configs.json): the defaults
RECORDED_BASE = json.loads((ROOT / "tests" / "data" / "resolved_configs.json").read_text())["base"]


def write(path, text):
    path.write_text(text)
    return path


def as_json(config):
    return json.dumps(config, sort_keys=True)


def test_base_yaml_is_written_from_the_schema_and_up_to_date():
    """configs/base.yaml is the output of `python -m pieanet.training.config --write`; after a change to the
    schema, run that command."""
    assert (ROOT / "configs" / "base.yaml").read_text() == train_config.base_yaml()
    assert as_json(load_yaml(ROOT / "configs" / "base.yaml")) == as_json({**RECORDED_BASE, "name": None})


def test_the_write_command_replaces_the_file(tmp_path, monkeypatch, capsys):
    target = write(tmp_path / "base.yaml", "stale\n")
    monkeypatch.setattr(train_config, "BASE_FILE", target)
    assert train_config.main(["--write"]) == 0
    assert target.read_text() == train_config.base_yaml() and list(tmp_path.iterdir()) == [target]
    with pytest.raises(SystemExit):
        train_config.main(["--bogus"])
    assert train_config.main([]) == 0 and capsys.readouterr().out.endswith(train_config.base_yaml())


def test_a_config_without_base_takes_the_schemas_defaults(tmp_path):
    assert as_json(training_run.resolve_config(write(tmp_path / "empty.yaml", ""))) == as_json(
        {**RECORDED_BASE, "name": "empty"}
    )
    path = write(tmp_path / "mine.yaml", "train: {epochs: 2}\nmodel: {width: 16}\n")
    expected = copy.deepcopy(RECORDED_BASE)
    expected["name"], expected["train"]["epochs"], expected["model"]["width"] = "mine", 2, 16
    assert as_json(training_run.resolve_config(path, ["data.crop=64"])) == as_json(
        {**expected, "data": {**expected["data"], "crop": 64}}
    )


def test_unknown_key_is_one_line_naming_file_key_and_nearest_key_exit_2(tmp_path, capsys):
    bad = write(tmp_path / "bad.yaml", "train:\n  epoch: 3\n")
    assert train_wavelet.main(["--config", str(bad), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err == f"train_wavelet: {bad}: unknown config key 'train.epoch'; did you mean 'train.epochs'?\n"
    assert not (tmp_path / "experiments").exists()


@pytest.mark.subprocess
def test_unknown_key_through_the_real_command_line(tmp_path):
    bad = write(tmp_path / "bad.yaml", f"base: {ROOT / 'configs' / 'pieanet.yaml'}\ndata:\n  extra_vaild: {{}}\n")
    done = subprocess.run(
        [sys.executable, str(ROOT / "train_wavelet.py"), "--config", str(bad), "--device", "cpu"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        f"train_wavelet: {bad}: unknown config key 'data.extra_vaild'; did you mean 'data.extra_valid'?\n"
    )
    assert list(tmp_path.iterdir()) == [bad]


@pytest.mark.parametrize(
    "override, message",
    [
        # integers: bool, float and text are not integers; ranges are inclusive
        ("train.epochs=true", "'train.epochs' is True; expected an integer >= 1"),
        ("train.epochs=2.0", "'train.epochs' is 2.0; expected an integer >= 1"),
        ("seed=4294967296", "'seed' is 4294967296; expected an integer in [0, 4294967295]"),
        ("data.workers=257", "'data.workers' is 257; expected an integer in [0, 256]"),
        ("data.size=0", "'data.size' is 0; expected an integer >= 1 or null"),
        ("train.max_steps=[1]", "'train.max_steps' is [1]; expected an integer >= 1 or null"),
        # numbers: finite, open and closed ends
        ("train.lr=0", "'train.lr' is 0; expected a finite number > 0"),
        ("train.lr=.inf", "'train.lr' is inf; expected a finite number > 0"),
        ("train.lr=1" + "0" * 400, "expected a finite number > 0"),  # an int beyond any float
        ("train.lr_gamma=1.5", "'train.lr_gamma' is 1.5; expected a finite number in [0, 1]"),
        ("train.ema_decay=1.0", "'train.ema_decay' is 1.0; expected a finite number in [0, 1)"),
        ("train.weight_decay=-0.1", "'train.weight_decay' is -0.1; expected a finite number >= 0"),
        ("data.label_scale=false", "'data.label_scale' is False; expected a finite number > 0"),
        # booleans, text, choices
        ("data.augment=1", "'data.augment' is 1; expected true or false"),
        ("output_dir=''", "'output_dir' is ''; expected a non-empty string"),
        ("init_from=5", "'init_from' is 5; expected a non-empty string or null"),
        ("train.amp=fp32", "'train.amp' is 'fp32'; expected one of bf16, fp16, none"),
        ("train.lr_schedule=null", "'train.lr_schedule' is None; expected one of step, cosine"),
        # a pair, its items' range and its rule
        (
            "data.scale_range=[0.5]",
            "'data.scale_range' is [0.5]; expected a list of 2 items, each a finite number > 0 or null",
        ),
        ("data.scale_range=[0, 1]", "'data.scale_range' is [0, 1]; expected a list of 2 items"),
        ("data.scale_range=[2, 1]", "'data.scale_range' is [2, 1]; expected [low, high] with low <= high"),
        # named validation sets: one of two exact forms
        ("data.extra_valid={v: {root: r, csv: c, extra: 1}}", "'data.extra_valid.v' is {"),
        ("data.extra_valid={v: {root: r, well_exposed: 1}}", "'data.extra_valid.v' is {"),
        ("data.extra_valid={v: {root: '', csv: c}}", "'data.extra_valid.v' is {"),
        ("data.extra_valid=[a]", "'data.extra_valid' is ['a']; expected a mapping of names to {root, csv}"),
        ("name=/abs", "'name' is '/abs'; expected a folder name under output_dir"),
    ],
)
def test_wrong_types_and_ranges_are_one_line_naming_the_override(tmp_path, override, message):
    path = write(tmp_path / "c.yaml", "")
    with pytest.raises(ConfigError) as caught:
        train_config.load(path, [override])
    assert str(caught.value).startswith("override ") and message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "override",
    [
        "train.epochs=1",
        "seed=4294967295",
        "data.workers=0",
        "data.size=null",
        "train.lr=1",
        "train.lr_gamma=0",
        "train.lr_gamma=1",
        "train.ema_decay=0.9999",
        "data.label_scale=1",
        "data.scale_range=[1, 1]",
        "data.scale_range=null",
        "data.extra_valid=null",
        "data.extra_valid={v: {root: r, well_exposed: true}}",
        "name=sub/run",
    ],
)
def test_values_at_the_edges_are_accepted(tmp_path, override):
    key, _, text = override.partition("=")
    config = train_config.load(write(tmp_path / "c.yaml", ""), [override])
    node = config
    for part in key.split("."):
        node = node[part]
    assert json.dumps(node) == json.dumps(load_yaml(write(tmp_path / "v.yaml", f"v: {text}\n"))["v"])


def test_a_bad_value_is_named_with_the_file_of_the_chain_that_sets_it(tmp_path):
    parent = write(tmp_path / "parent.yaml", "train: {lr: fast}\n")
    child = write(tmp_path / "child.yaml", "base: parent.yaml\ntrain: {epochs: 2}\n")
    with pytest.raises(ConfigError) as caught:
        train_config.load(child)
    assert str(caught.value) == f"{parent}: config key 'train.lr' is 'fast'; expected a finite number > 0"


def test_a_name_from_the_file_is_checked_too(tmp_path):
    with pytest.raises(ConfigError, match=r"'name' is '\.\.'; expected a folder name"):
        train_config.load(write(tmp_path / "...yaml", ""))


def test_the_schemas_choices_are_the_ones_training_knows():
    assert tuple(training_run.LOSSES) == train_config.LOSSES
    assert tuple(training_run.AMP_DTYPES) == train_config.AMP
