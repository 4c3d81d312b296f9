"""The Config options every command shares (`onerec.app.cli_options.load_config`)."""

from __future__ import annotations

import pytest

from onerec.app.cli_options import load_config
from onerec.config import Config, ConfigError


def test_the_command_default_preset_applies_only_without_a_file_or_a_preset(tmp_path):
    assert load_config(None, None, None, default_preset="tiny") == Config.from_preset("tiny")
    assert load_config(None, "small", None, default_preset="tiny") == Config.from_preset("small")
    path = tmp_path / "c.yaml"
    Config.from_preset("small").save(path)
    assert load_config(path, None, None, default_preset="tiny") == Config.from_preset("small")


def test_overrides_apply_in_order_and_a_bad_key_is_named():
    cfg = load_config(None, "tiny", ["train.max_steps=3", "train.max_steps=7"])
    assert cfg.train.max_steps == 7
    with pytest.raises(ConfigError, match=r"model\.depth"):
        load_config(None, "tiny", ["model.depth=3"])
