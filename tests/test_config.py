"""YAML configs: inheritance, dotted overrides, unknown keys; every shipped config resolves and builds its model.
The schema itself (types, ranges, defaults, base.yaml): tests/test_config_schema.py."""

import json
import math
import re
from pathlib import Path

import pytest
import yaml

from pieanet.models import build_model, read_checkpoint
from pieanet.training.run import resolve_config
from pieanet.utils.config import ConfigError, load_yaml
from pieanet.training.config import load

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


def test_overrides_parse_values_as_yaml(tmp_path):
    path = write(
        tmp_path / "c.yaml", "train: {lr: 2.0e-3, max_steps: 5}\ndata: {extra_valid: {a: {root: r, csv: c}}}\n"
    )
    result = load(
        path,
        [
            "train.lr=1e-4",
            "model.use_dwt=false",
            "train.amp=none",
            "train.max_steps=12",
            "data.scale_range=[0.5, 2]",
            "data.extra_valid={}",
            "data={crop: null}",
        ],
    )
    assert (result["train"]["lr"], result["train"]["amp"], result["train"]["max_steps"]) == (1e-4, "none", 12)
    assert result["model"] == {"name": "pieanet", "use_dwt": False}
    assert result["data"]["scale_range"] == [0.5, 2]
    assert result["data"]["extra_valid"] == {}  # a mapping-valued key is replaced, not merged
    assert result["data"]["crop"] is None and result["data"]["workers"] == 2  # a section sets the keys it names
    for bad in [
        "train.lr",
        "=3",
        "train..lr=1",
        "nothing.here=1",
        "train.lr.deeper=1",
        "train.extra=[1, 2]",
        "base=other.yaml",
        "data.extra_valid.nope.root=x",
    ]:
        with pytest.raises(ConfigError, match="^override "):
            load(path, [bad])


def test_unknown_keys_are_rejected_by_name_with_the_file_that_sets_them(tmp_path):
    base = write(tmp_path / "parent.yaml", "train: {lrr: 3.0}\n")
    child = write(tmp_path / "child.yaml", "base: parent.yaml\ntrain: {lr: 1.0}\n")
    with pytest.raises(ConfigError) as caught:
        load(child)
    assert str(caught.value) == f"{base}: unknown config key 'train.lrr'; did you mean 'train.lr'?"
    with pytest.raises(
        ConfigError,
        match=r"c.yaml: unknown config key 'zzz'; known keys: data, init_from, model, "
        r"name, output_dir, seed, train$",
    ):
        load(write(tmp_path / "c.yaml", "zzz: 1\n"))
    with pytest.raises(ConfigError, match="'train' must be a section"):
        load(write(tmp_path / "d.yaml", "train: 3\n"))
    with pytest.raises(
        ConfigError,
        match="override 'train.warmup=5': unknown config key 'train.warmup'; did you mean 'train.warmup_steps'",
    ):
        load(write(tmp_path / "e.yaml", ""), ["train.warmup=5"])


def test_train_wavelet_checks_model_keys_against_the_model(tmp_path):
    with pytest.raises(ConfigError, match="model: unknown key 'widht' for model 'pieanet'"):
        resolve_config(CONFIGS / "pieanet.yaml", ["model.widht=16"])
    with pytest.raises(ConfigError, match="model: unknown key 'width' for model 'official'"):
        resolve_config(CONFIGS / "official.yaml", ["model.width=16"])
    with pytest.raises(ConfigError, match="'train.loss' is 'l3'; expected one of l1, l2, smooth_l1"):
        resolve_config(CONFIGS / "pieanet.yaml", ["train.loss=l3"])
    with pytest.raises(ConfigError, match="unknown config key 'data.csv'"):
        resolve_config(CONFIGS / "pieanet.yaml", ["data.csv=x.csv"])


# what each shipped config resolved to before the config schema existed (train_wavelet.resolve_config at commit
# f43843a), compared as canonical JSON: an int that became a float (0 -> 0.0) or a key that appeared or vanished fails
RECORDED = json.loads((Path(__file__).parent / "data" / "resolved_configs.json").read_text())


# the candidates that were run and not shipped: their configs live in docs/experiments.md, not in configs/
HISTORY = CONFIGS.parent / "docs" / "experiments.md"


def history_configs():
    """{name: YAML text} of the config blocks of docs/experiments.md (a `### name` heading over a yaml block)."""
    return dict(re.findall(r"^### (\w+)\n\n```yaml\n(.*?)^```", HISTORY.read_text(), flags=re.M | re.S))


def test_every_config_run_is_either_shipped_or_in_the_history():
    shipped, history = {path.stem for path in CONFIGS.glob("*.yaml")}, set(history_configs())
    assert len(history) == 34 and not shipped & history  # 34: issue 24 fourth session: pieanet_s4_a to pieanet_s4_e
    assert sorted(RECORDED) == sorted(shipped | history)


def test_history_configs_resolve_to_what_was_run(tmp_path):
    """Each candidate's block, saved beside the shipped configs as docs/experiments.md says, resolves to what the run
    used (its `base:` renamed with the shipped configs it names)."""
    folder = tmp_path / "configs"
    folder.mkdir()
    for path in CONFIGS.glob("*.yaml"):
        (folder / path.name).write_bytes(path.read_bytes())
    for name, text in history_configs().items():
        write(folder / f"{name}.yaml", text)
    for name in history_configs():
        config = resolve_config(folder / f"{name}.yaml")
        assert json.dumps(config, sort_keys=True) == json.dumps(RECORDED[name], sort_keys=True), name


def test_the_shipped_checkpoint_is_named_after_its_config():
    """configs/pieanet_corpus.yaml makes checkpoints/pieanet_corpus.safetensors: stage 4 from stage 3's file
    (pieanet_corpus_stage3.yaml), made from stage 2's (pieanet_corpus_v3.yaml), made from stage 1's
    (pieanet_corpus_v2.yaml), made from stage 0's (pieanet_corpus_v1.yaml)."""
    names = ("pieanet_corpus", "pieanet_corpus_stage3", "pieanet_corpus_v3", "pieanet_corpus_v2", "pieanet_corpus_v1")
    chain = {name: resolve_config(CONFIGS / f"{name}.yaml") for name in names}
    for name, parent in zip(names, names[1:]):
        assert chain[name]["init_from"] == f"checkpoints/{parent}.safetensors"
        assert (CONFIGS.parent / chain[name]["init_from"]).is_file()
    assert chain["pieanet_corpus_v1"]["init_from"] is None
    for name in names[:2]:
        assert (
            f"cp experiments/{name}/last.safetensors checkpoints/{name}.safetensors"
            in (CONFIGS / f"{name}.yaml").read_text()
        )
    shipped, _ = read_checkpoint(CONFIGS.parent / "checkpoints" / "pieanet_corpus.safetensors")
    assert {key: shipped[key] for key in chain["pieanet_corpus"]["model"]} == chain["pieanet_corpus"]["model"]


def test_the_shipped_checkpoint_records_the_config_it_was_trained_with():
    """Its metadata's training config is configs/pieanet_corpus.yaml resolved (the run that made it), so the recipe in
    the file and in the repository cannot drift apart."""
    from safetensors import safe_open

    with safe_open(str(CONFIGS.parent / "checkpoints" / "pieanet_corpus.safetensors"), "pt") as f:
        recorded = json.loads(f.metadata()["train_config"])
    assert json.dumps(recorded, sort_keys=True) == json.dumps(
        resolve_config(CONFIGS / "pieanet_corpus.yaml"), sort_keys=True
    )


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_resolves_unchanged_and_builds(path):
    config = resolve_config(path)
    assert json.dumps(config, sort_keys=True) == json.dumps(RECORDED[path.stem], sort_keys=True)
    assert config["name"] == path.stem
    model = build_model(config["model"])
    assert model.config["name"] == config["model"]["name"]
    assert yaml.safe_load(yaml.safe_dump(config)) == config  # what is saved as config.yaml reads back the same


def test_paper_recipe_and_ablation_switches():
    paper = resolve_config(CONFIGS / "pieanet.yaml")
    assert (
        paper["train"]["lr"],
        paper["train"]["lr_step_epochs"],
        paper["train"]["lr_gamma"],
        paper["train"]["loss"],
    ) == (3e-5, 10, 0.1, "l1")
    assert paper["data"]["train_csv"] == "train_256_2ev.csv"
    for part in ("dwt", "structure", "lightness"):
        ablation = resolve_config(CONFIGS / f"ablation_no_{part}.yaml")
        assert ablation["model"] == {**paper["model"], f"use_{part}": False}
    assert resolve_config(CONFIGS / "loss_l2.yaml")["train"]["loss"] == "l2"
    assert resolve_config(CONFIGS / "loss_smooth_l1.yaml")["train"]["loss"] == "smooth_l1"


def test_checkpoints_readme_states_what_the_shipped_file_records():
    """checkpoints/README.md's figures about the file itself come from the file: its metadata and parameter count."""
    from safetensors import safe_open

    readme = (CONFIGS.parent / "checkpoints" / "README.md").read_text()
    with safe_open(str(CONFIGS.parent / "checkpoints" / "pieanet_corpus.safetensors"), "pt") as f:
        metadata = f.metadata()
        parameters = sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys())
    assert sorted(metadata) == [
        "commit",
        "config",
        "data_manifest_sha256",
        "epoch",
        "format",
        "train_config",
        "valid_mae",
    ]
    flat = " ".join(readme.split())
    assert f"`format` {metadata['format']}" in flat
    assert f"`epoch` {metadata['epoch']} and `valid_mae` {float(metadata['valid_mae']):.4f}" in flat
    assert (
        f"`commit` {metadata['commit'][:7]}" in flat
        and f"`data_manifest_sha256` {metadata['data_manifest_sha256'][:16]}" in flat
    )
    assert f"{parameters:,} parameters" in flat
