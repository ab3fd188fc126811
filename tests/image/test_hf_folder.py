"""The checks shared by the Hugging Face folder families name the folder, file and key at fault."""

from __future__ import annotations

import json

import pytest

from mmaccel.image.hf_folder import checked_config, hf_config, load_complete

EXPECTED = "config.json with model_type 'demo'"


def _folder(tmp_path, config):
    (tmp_path / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    return tmp_path


def test_a_complete_config_is_returned(tmp_path):
    config = {"model_type": "demo", "vq_config": {"n": 1}}
    folder = _folder(tmp_path, config)
    assert checked_config(folder, "demo", "Demo", EXPECTED, required=("vq_config",)) == config
    assert hf_config(folder) == config


def test_missing_folder_and_config_are_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder not found: .*nope"):
        checked_config(tmp_path / "nope", "demo", "Demo", EXPECTED)
    with pytest.raises(FileNotFoundError, match=f"has no config.json; Demo needs {EXPECTED}"):
        checked_config(tmp_path, "demo", "Demo", EXPECTED)
    assert hf_config(tmp_path) is None and hf_config(tmp_path / "nope") is None


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_an_unreadable_config_names_the_file(tmp_path, text):
    with pytest.raises(ValueError, match=r"config.json is not a readable JSON object; Demo needs"):
        checked_config(_folder(tmp_path, text), "demo", "Demo", EXPECTED)


def test_a_foreign_model_type_is_named_with_the_conversion_of_an_original_release(tmp_path):
    folder = _folder(tmp_path, {"model_type": "llama"})
    with pytest.raises(ValueError, match=r"config.json: model_type is 'llama', not 'demo'$"):
        checked_config(folder, "demo", "Demo", EXPECTED, originals={"Demo": "org/Demo-hf"})
    _folder(tmp_path, {"model_type": "Demo"})
    with pytest.raises(ValueError, match=r"not 'demo' \(.*transformers conversion, e.g. org/Demo-hf\)"):
        checked_config(folder, "demo", "Demo", EXPECTED, originals={"Demo": "org/Demo-hf"})


@pytest.mark.parametrize("value", [None, {}])
def test_a_missing_or_empty_required_key_is_named(tmp_path, value):
    config = {"model_type": "demo", "text_config": {"n": 1}}
    if value is not None:
        config["vq_config"] = value
    with pytest.raises(ValueError, match=r"config.json has no 'vq_config': not a transformers Demo checkpoint"):
        checked_config(_folder(tmp_path, config), "demo", "Demo", EXPECTED, required=("text_config", "vq_config"))


class _Loader:
    """Stands for a transformers model class: from_pretrained reports the given missing keys."""

    def __init__(self, missing):
        self.missing = missing

    def from_pretrained(self, folder, dtype, output_loading_info):
        assert dtype == "auto" and output_loading_info
        return "model", {"missing_keys": set(self.missing)}


def test_missing_weights_fail_unless_allowed(tmp_path):
    assert load_complete(_Loader(["lm_head.weight"]), tmp_path, "Demo", may_miss=("lm_head.weight",)) == "model"
    with pytest.raises(ValueError, match=r"lacks 2 Demo weights the config needs, e.g. \['a.weight', 'b.weight'\]"):
        load_complete(_Loader(["b.weight", "a.weight", "lm_head.weight"]), tmp_path, "Demo", ("lm_head.weight",))
