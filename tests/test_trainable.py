"""train.trainable (issue 24): a run that trains only the parameters named by prefix, e.g. a scene backbone's projection
and the FiLM layer it feeds, while the rest of a shipped checkpoint stays as it was (models.freeze_except)."""

import pytest
import torch
import yaml
from safetensors.torch import load_file

from pieanet import train_wavelet
from pieanet.models import build_model, freeze_except, save_model
from pieanet.training import config as train_config
from pieanet.utils.config import ConfigError
from tests.test_train import make_dataset, tiny_config

SCENE = {"scene_size": 32, "scene_channels": 4}
PREFIXES = ["scene_branch.out.", "lightness_branch.modulation."]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("iea"), n_train=8)


def test_freeze_except_trains_exactly_the_named_parameters(tiny_model_config):
    model = build_model({**tiny_model_config, **SCENE})
    trained = freeze_except(model, PREFIXES)
    # the names written out by hand from the model's layout: the scene branch's 1x1 output and the FiLM 1x1 conv
    assert trained == [
        "scene_branch.out.weight",
        "scene_branch.out.bias",
        "lightness_branch.modulation.weight",
        "lightness_branch.modulation.bias",
    ]
    for name, parameter in model.named_parameters():
        assert parameter.requires_grad == (name in trained), name
    assert len(list(model.parameters())) > 2 * len(trained)  # the rest exists, frozen


def test_freeze_except_none_leaves_the_model_as_it_is(tiny_model_config):
    model = build_model({**tiny_model_config, **SCENE})
    model.head.requires_grad_(False)
    trained = freeze_except(model, None)
    assert trained == [name for name, _ in model.named_parameters() if not name.startswith("head.")]
    assert all(not p.requires_grad for p in model.head.parameters())


def test_a_prefix_that_names_no_parameter_is_one_line_naming_it(tiny_model_config):
    model = build_model({**tiny_model_config, **SCENE})
    with pytest.raises(ValueError) as caught:
        freeze_except(model, ["scene_branch.out.", "scene_brnch."])
    message = str(caught.value)
    assert "'scene_brnch.'" in message and "names no parameter" in message and "\n" not in message
    assert "lightness_branch" in message and "scene_branch" in message  # the parts there are
    assert all(p.requires_grad for p in model.parameters())  # refused before anything was frozen


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.trainable=[]", "'train.trainable' is []; expected a list of one item or more, each a non-empty string"),
        ("train.trainable=head.", "'train.trainable' is 'head.'; expected a list of one item or more"),
        ("train.trainable=[head., 3]", "'train.trainable' is ['head.', 3]; expected a list"),
        ("train.trainable=['']", "expected a list of one item or more, each a non-empty string or null"),
    ],
)
def test_the_schema_refuses_what_is_not_a_list_of_prefixes(tmp_path, override, message):
    path = tmp_path / "c.yaml"
    path.write_text("")
    with pytest.raises(ConfigError) as caught:
        train_config.load(path, [override])
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_schema_takes_a_list_and_defaults_to_null(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("")
    assert train_config.load(path)["train"]["trainable"] is None
    assert train_config.load(path, ["train.trainable=[head., scene_branch.out.]"])["train"]["trainable"] == [
        "head.",
        "scene_branch.out.",
    ]


def test_a_run_changes_only_the_trainable_weights(tmp_path, tiny_model_config, tiny_data):
    model_config = {**tiny_model_config, **SCENE}
    torch.manual_seed(3)
    start = build_model(model_config)
    start_path = tmp_path / "start.safetensors"
    save_model(start_path, start)
    config = tiny_config(tmp_path, model_config, tiny_data, epochs=1, trainable=PREFIXES)
    text = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**text, "init_from": str(start_path)}))
    assert train_wavelet.main(["--config", str(config), "--device", "cpu", "data.valid_limit=1"]) == 0
    out = tmp_path / "runs" / "tiny"
    trained = load_file(out / "last.safetensors")
    before = start.state_dict()
    for name, value in trained.items():
        if name.startswith(tuple(PREFIXES)):
            assert not torch.equal(value, before[name]), f"{name} did not train"
        else:
            assert torch.equal(value, before[name]), f"{name} changed though frozen"
    log = (out / "train.log").read_text()
    count = sum(before[name].numel() for name in before if name.startswith(tuple(PREFIXES)))
    assert f"{count:,} trained)" in log


def test_a_bad_prefix_stops_the_run_with_one_line(tmp_path, tiny_model_config, tiny_data, capsys):
    config = tiny_config(tmp_path, {**tiny_model_config, **SCENE}, tiny_data, epochs=1)
    assert train_wavelet.main(["--config", str(config), "--device", "cpu", "train.trainable=[nothing.]"]) == 2
    err = capsys.readouterr().err
    (line,) = err.strip().splitlines()
    assert "'nothing.' names no parameter" in line and "Traceback" not in err
