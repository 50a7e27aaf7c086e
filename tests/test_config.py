"""YAML configs: inheritance, dotted overrides, unknown keys; every shipped config resolves and builds its model."""
import json
from pathlib import Path

import pytest
import yaml

from pieanet.models import build_model
from pieanet.train_wavelet import resolve_config
from pieanet.utils.config import ConfigError, apply_overrides, check_keys, load_config, load_yaml

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_inheritance_is_recursive_relative_to_the_file_and_deep_merges(tmp_path):
    write(tmp_path / "root.yaml", "a: 1\nsection: {x: 1, y: 2, inner: {p: 1, q: 2}}\nlist: [1, 2]\n")
    write(tmp_path / "mid" / "mid.yaml", "base: ../root.yaml\nsection: {y: 20, inner: {q: 30}}\nlist: [3]\n")
    child = write(tmp_path / "mid" / "deeper" / "child.yaml", "base: ../mid.yaml\na: 5\nsection: {x: null}\n")
    assert load_yaml(child) == {"a": 5, "section": {"x": None, "y": 20, "inner": {"p": 1, "q": 30}}, "list": [3]}


def test_circular_and_missing_bases_are_named(tmp_path):
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_yaml(tmp_path / "a.yaml")
    write(tmp_path / "c.yaml", "base: gone.yaml\n")
    with pytest.raises(ConfigError, match="gone.yaml: config file not found"):
        load_yaml(tmp_path / "c.yaml")


def test_overrides_parse_values_as_yaml():
    config = {"train": {"lr": 3e-5, "amp": "bf16", "max_steps": None}, "model": {"use_dwt": True}}
    result = apply_overrides(config, ["train.lr=1e-4", "model.use_dwt=false", "train.amp=none", "train.max_steps=12",
                                      "train.extra=[1, 2]"])
    assert result == {"train": {"lr": 1e-4, "amp": "none", "max_steps": 12, "extra": [1, 2]},
                      "model": {"use_dwt": False}}
    assert config["train"]["lr"] == 3e-5  # the input is left alone
    for bad in ["train.lr", "=3", "train..lr=1", "nothing.here=1", "train.lr.deeper=1"]:
        with pytest.raises(ConfigError):
            apply_overrides(config, [bad])


def test_unknown_keys_are_rejected_by_name(tmp_path):
    reference = {"a": 1, "train": {"lr": 1.0, "epochs": 2}, "model": {"name": "x"}}
    check_keys({"a": 2, "train": {"lr": 3.0}, "model": {"anything": 1}}, reference, open_sections=("model",))
    with pytest.raises(ConfigError, match="unknown config key 'train.lrr'.*epochs, lr"):
        check_keys({"train": {"lrr": 3.0}}, reference)
    with pytest.raises(ConfigError, match="'train' must be a section"):
        check_keys({"train": 3}, reference)
    path = write(tmp_path / "c.yaml", "train: {lr: 2}\n")
    with pytest.raises(ConfigError, match="unknown config key 'train.warmup'"):
        load_config(path, ["train.warmup=5"], reference=reference)


def test_train_wavelet_checks_model_keys_against_the_model(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'model.widht'"):
        resolve_config(CONFIGS / "pieanet.yaml", ["model.widht=16"])
    with pytest.raises(ConfigError, match="unknown config key 'model.width' for model 'official'"):
        resolve_config(CONFIGS / "official.yaml", ["model.width=16"])
    with pytest.raises(ConfigError, match="train.loss must be one of"):
        resolve_config(CONFIGS / "pieanet.yaml", ["train.loss=l3"])
    with pytest.raises(ConfigError, match="unknown config key 'data.csv'"):
        resolve_config(CONFIGS / "pieanet.yaml", ["data.csv=x.csv"])


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_resolves_and_builds(path):
    config = resolve_config(path)
    assert config["name"] == path.stem
    model = build_model(config["model"])
    assert model.config["name"] == config["model"]["name"]
    assert yaml.safe_load(yaml.safe_dump(config)) == config  # what is saved as config.yaml reads back the same


def test_paper_recipe_and_ablation_switches():
    paper = resolve_config(CONFIGS / "pieanet.yaml")
    assert (paper["train"]["lr"], paper["train"]["lr_step_epochs"], paper["train"]["lr_gamma"],
            paper["train"]["loss"]) == (3e-5, 10, 0.1, "l1")
    assert paper["data"]["train_csv"] == "train_256_2ev.csv"
    for part in ("dwt", "structure", "lightness"):
        ablation = resolve_config(CONFIGS / f"ablation_no_{part}.yaml")
        assert ablation["model"] == {**paper["model"], f"use_{part}": False}
    assert resolve_config(CONFIGS / "loss_l2.yaml")["train"]["loss"] == "l2"
    assert resolve_config(CONFIGS / "loss_smooth_l1.yaml")["train"]["loss"] == "smooth_l1"


def test_every_shipped_config_resolves_to_its_recorded_values():
    """tests/data/resolved_configs.json holds what each shipped config resolved to before the config schema existed
    (train_wavelet.resolve_config at commit f43843a); compared as canonical JSON, so an int that became a float
    (0 -> 0.0) or a key that appeared or vanished fails too."""
    recorded = json.loads((Path(__file__).parent / "data" / "resolved_configs.json").read_text())
    assert sorted(recorded) == sorted(path.stem for path in CONFIGS.glob("*.yaml"))
    for stem, values in recorded.items():
        resolved = resolve_config(CONFIGS / f"{stem}.yaml")
        assert json.dumps(resolved, sort_keys=True) == json.dumps(values, sort_keys=True), stem
